//! ModifyReplicaSynchronization (shared/spec/ModifyReplicaSynchronization.txt and
//! smis-replication.md sections 1.2 and 5.2): every operation validated against the one
//! transition table of [`crate::table`], applied to a pair or atomically to every pair of a
//! group relationship, with the copies and restores that follow run as jobs.

use std::{sync::Arc, time::Duration};

mod membership;
mod restoring;

use super::{AspectRec, Catalog, MethodError, ReplicationService, ReplicationSettings, jobs::now};
use crate::{
    mirror::Mirror,
    table::{self, Outcome, Refusal, Transition},
    types::{CopyState, JobState, Mode, Operation, ProgressStatus, ReturnCode, SyncType},
    volume::Volume,
};

/// ModifyReplicaSynchronization's input parameters, references resolved to ids (`None`:
/// NULL).
#[derive(Clone, Debug, Default)]
pub struct ModifyReplicaSynchronization {
    /// Operation (required).
    pub operation: Option<u16>,
    /// Synchronization: a pair (`CIM_StorageSynchronized`) or a group relationship
    /// (`CIM_GroupSynchronized`), by id (required).
    pub synchronization: Option<u64>,
    /// ReplicationSettingData.
    pub settings: ReplicationSettings,
    /// SyncPair[]: pairs, by id (AddSyncPair and RemoveSyncPair only).
    pub sync_pairs: Option<Vec<u64>>,
    /// Force.
    pub force: Option<bool>,
    /// WaitForCopyState.
    pub wait_for_copy_state: Option<u16>,
}

/// ModifyReplicaSynchronization's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModifyOutcome {
    /// 0 or 4096.
    pub code: ReturnCode,
    /// The job, when work continues.
    pub job: Option<u64>,
    /// SettingsState: the synchronization aspect Dissolve leaves (`aspect:<id>`).
    pub settings_state: Option<u64>,
    /// UpdatedSynchronization: the relationship whose keys changed (Reverse Roles).
    pub updated_synchronization: Option<u64>,
}

/// What a job does for each of its relationships.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Work {
    /// Copy toward Synchronized (initial copy, resync, resume, activate).
    Copy,
    /// Bring the source back from the replica (Restore from Replica, Failback).
    Restore,
}

/// Time an asynchronous journal may take to drain before a failover or detach goes ahead
/// without the unapplied tail.
const DRAIN_BEFORE_FAILOVER: Duration = Duration::from_secs(30);

/// Operations that change one pair's state apart from its group's other pairs (refused on
/// a pair of a consistent group unless Force).
fn breaks_group_consistency(op: Operation) -> bool {
    !matches!(
        op,
        Operation::ActivateConsistency | Operation::DeactivateConsistency
    )
}

/// The ProgressStatus of a pair at rest in `state`.
pub(crate) fn resting_progress(state: CopyState) -> ProgressStatus {
    match state {
        CopyState::Inactive | CopyState::Suspended | CopyState::Prepared => ProgressStatus::Dormant,
        CopyState::Unsynchronized => ProgressStatus::Pending,
        _ => ProgressStatus::Completed,
    }
}

fn refusal(op: Operation, id: u64, sync: SyncType, r: Refusal) -> MethodError {
    match r {
        Refusal::NotSupported => MethodError::not_supported(
            "Operation",
            format!(
                "{op:?} ({}) is not supported for SyncType {sync:?} ({})",
                op as u16, sync as u16
            ),
        ),
        Refusal::InvalidState(s) => {
            let ok: Vec<String> = table::supported_copy_states(sync, Some(op))
                .iter()
                .map(|s| format!("{s:?}"))
                .collect();
            MethodError::invalid(
                "Operation",
                format!(
                    "{op:?} is not valid for sync:{id} in CopyState {s:?} ({}); it is accepted in {}",
                    s as u16,
                    ok.join(", ")
                ),
            )
        }
        Refusal::NeedsForce(s) => MethodError::invalid(
            "Force",
            format!(
                "{op:?} of sync:{id} in CopyState {s:?} may leave the target inconsistent: pass Force=true"
            ),
        ),
    }
}

impl ReplicationService {
    /// ModifyReplicaSynchronization.
    pub fn modify_replica_synchronization(
        self: &Arc<Self>,
        p: ModifyReplicaSynchronization,
    ) -> Result<ModifyOutcome, MethodError> {
        let code = p
            .operation
            .ok_or_else(|| MethodError::invalid("Operation", "Operation is required"))?;
        let op = match Operation::from_code(code) {
            Some(op) => op,
            None if code == 25 => {
                return Err(MethodError::not_supported(
                    "Operation",
                    "Reset To Adaptive (25) is not supported: Mode 4 is not implemented",
                ));
            }
            None => {
                return Err(MethodError::invalid(
                    "Operation",
                    format!("Operation {code} is outside the ValueMap 2..24"),
                ));
            }
        };
        let id = p.synchronization.ok_or_else(|| {
            MethodError::invalid("Synchronization", "Synchronization is required")
        })?;
        let force = p.force.unwrap_or(false);

        let ops = self.ops();
        let mut cat = self.cat();
        // The secondary side of an HA pair.
        if cat.peers.contains_key(&id) {
            drop(cat);
            self.peer_modify(op, id)?;
            return Ok(ModifyOutcome {
                code: ReturnCode::Completed,
                job: None,
                settings_state: None,
                updated_synchronization: None,
            });
        }
        self.refresh(&mut cat);
        let group = cat.group_syncs.contains_key(&id);
        if !group && !cat.syncs.contains_key(&id) {
            return Err(MethodError::invalid(
                "Synchronization",
                format!("no relationship sync:{id}"),
            ));
        }
        let pair_op = matches!(op, Operation::AddSyncPair | Operation::RemoveSyncPair);
        if pair_op {
            if !group {
                return Err(MethodError::invalid(
                    "Synchronization",
                    "AddSyncPair and RemoveSyncPair operate on a group relationship (CIM_GroupSynchronized)",
                ));
            }
            if p.sync_pairs.as_ref().is_none_or(Vec::is_empty) {
                return Err(MethodError::invalid(
                    "SyncPair",
                    "SyncPair is required for AddSyncPair and RemoveSyncPair",
                ));
            }
        } else if p.sync_pairs.is_some() {
            return Err(MethodError::invalid(
                "SyncPair",
                "SyncPair applies to AddSyncPair and RemoveSyncPair only",
            ));
        }
        let (sync_type, members) = match cat.group_syncs.get(&id) {
            Some(g) => (g.sync_type, g.members.clone()),
            None => (cat.syncs[&id].sync_type, vec![id]),
        };
        // The table decides, for every pair.
        let mut transition: Option<&'static Transition> = None;
        if members.is_empty() {
            if !matches!(
                op,
                Operation::AddSyncPair
                    | Operation::ActivateConsistency
                    | Operation::DeactivateConsistency
            ) {
                return Err(MethodError::invalid(
                    "Synchronization",
                    format!("sync:{id} has no pairs"),
                ));
            }
            if table::supported_operations(sync_type, None)
                .iter()
                .all(|(o, _)| *o != op)
            {
                return Err(refusal(op, id, sync_type, Refusal::NotSupported));
            }
        }
        // AddSyncPair and RemoveSyncPair are decided by the pairs they move.
        let checked = if pair_op {
            p.sync_pairs.clone().unwrap_or_default()
        } else {
            members.clone()
        };
        for m in &checked {
            let s = cat
                .syncs
                .get(m)
                .ok_or_else(|| MethodError::invalid("SyncPair", format!("no pair sync:{m}")))?;
            if s.sync_type != sync_type {
                return Err(MethodError::invalid(
                    "SyncPair",
                    format!("sync:{m} is not a {sync_type:?}"),
                ));
            }
            // A split brain is resolved by Failback (the peer's data wins) or by Resync
            // (this side's).
            let split = s.peer.as_ref().is_some_and(|l| l.split_brain);
            let state = if split && op == Operation::Failback {
                CopyState::Failedover
            } else if s.peer.is_some()
                && op == Operation::ReverseRoles
                && s.state == CopyState::Failedover
            {
                // An HA pair reverses after a Failover (feature 32): checked as a split
                // pair, whose target is the writable side too.
                CopyState::Split
            } else {
                s.state
            };
            match table::check(op, s.sync_type, state, force) {
                Ok(t) => transition = Some(t),
                Err(r) => return Err(refusal(op, *m, s.sync_type, r)),
            }
            if let Some(job) = self.rt().restoring.get(m) {
                return Err(MethodError::in_use(
                    "Synchronization",
                    format!("sync:{m} is being restored by job:{job}"),
                ));
            }
        }
        if !group && breaks_group_consistency(op) && !force {
            let g = cat.syncs[&id]
                .group_sync
                .and_then(|g| cat.group_syncs.get(&g));
            if let Some(g) = g.filter(|g| g.consistency && g.members.len() > 1) {
                return Err(MethodError::invalid(
                    "Force",
                    format!(
                        "sync:{id} belongs to the consistent group relationship sync:{} ({}): operate on the group, or pass Force=true to break its consistency",
                        g.id, g.name
                    ),
                ));
            }
        }
        let wait = match p.wait_for_copy_state {
            None | Some(15) => None,
            Some(n) => {
                let s = CopyState::from_code(n).ok_or_else(|| {
                    MethodError::invalid("WaitForCopyState", format!("{n} is not a CopyState"))
                })?;
                let mut allowed = transition.map(table::wait_states).unwrap_or_default();
                if op == Operation::RestoreFromReplica {
                    // Restored (18, CIM 2.41) is reached when the restore completes.
                    allowed.push(CopyState::Restored);
                }
                if !allowed.contains(&s) {
                    return Err(MethodError::invalid(
                        "WaitForCopyState",
                        format!("{op:?} cannot be waited on for CopyState {s:?} ({n})"),
                    ));
                }
                Some(s)
            }
        };
        // Settings that belong to the pairs.
        for m in &members {
            let s = cat
                .syncs
                .get_mut(m)
                .ok_or_else(|| MethodError::failed("a member relationship vanished"))?;
            if let Some(cp) = p.settings.copy_priority {
                s.copy_priority = cp;
            }
            if let Some(rm) = p.settings.copy_recovery_mode {
                s.recovery_mode = if rm == 3 { 3 } else { 2 };
            }
            if let Some(t) = transition {
                s.requested = match t.to {
                    Outcome::State(st) => st,
                    Outcome::CopyThenSynchronized => CopyState::Synchronized,
                    _ => CopyState::NotApplicable,
                };
            }
        }
        let consistent = group && cat.group_syncs[&id].consistency && members.len() > 1;
        let mut out = ModifyOutcome {
            code: ReturnCode::Completed,
            job: None,
            settings_state: None,
            updated_synchronization: None,
        };
        let r = self.apply(&mut cat, op, id, &members, consistent, &p, &mut out);
        for m in &members {
            if let Some(mirror) = self.rt().mirrors.get(m).cloned()
                && let Err(e) = mirror.save_bitmaps()
            {
                tracing::error!(sync = m, error = %e, "saving mirror bitmaps failed");
            }
        }
        self.save(&mut cat);
        drop(cat);
        drop(ops);
        r?;
        if let Some(j) = out.job {
            if wait == Some(CopyState::Unsynchronized) {
                // Reached as the copy starts; the copy goes on.
                out.job = None;
                return Ok(out);
            }
            if self.job_finishes(j, self.quick_wait()) {
                if let Some(info) = self.jobs.get(j)
                    && info.state == JobState::Exception
                {
                    return Err(MethodError::failed(info.error.unwrap_or_default()));
                }
                out.job = None;
            } else {
                out.code = ReturnCode::JobStarted;
            }
        }
        Ok(out)
    }

    /// Carry out a validated operation.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        self: &Arc<Self>,
        cat: &mut Catalog,
        op: Operation,
        id: u64,
        members: &[u64],
        consistent: bool,
        p: &ModifyReplicaSynchronization,
        out: &mut ModifyOutcome,
    ) -> Result<(), MethodError> {
        use Operation::*;
        let t = now();
        // HA pairs: the peer takes part in role changes.
        let peered: Vec<u64> = members
            .iter()
            .copied()
            .filter(|m| cat.syncs.get(m).is_some_and(|s| s.peer.is_some()))
            .collect();
        if !peered.is_empty() {
            match op {
                Failover => {
                    if peered.len() != members.len() {
                        return Err(MethodError::not_supported(
                            "Synchronization",
                            "Failover of a group that mixes HA pairs and other pairs",
                        ));
                    }
                    for &m in members {
                        self.cancel_copy(m);
                        self.ha_failover(cat, m)?;
                    }
                    return Ok(());
                }
                Failback | ResyncReplica | Resume | Activate => {
                    for &m in &peered {
                        let back = cat.syncs[&m]
                            .peer
                            .as_ref()
                            .is_some_and(|l| l.peer_primary || l.split_brain);
                        if back {
                            self.ha_take_back(cat, m)?;
                        }
                    }
                }
                Detach | Dissolve | ReturnToResourcePool => {
                    for &m in &peered {
                        self.ha_detach(cat, m);
                    }
                }
                ReverseRoles => {
                    if peered.len() != 1 || members.len() != 1 {
                        return Err(MethodError::not_supported(
                            "Synchronization",
                            "Reverse Roles of an HA pair operates on one pair",
                        ));
                    }
                    out.updated_synchronization = Some(self.ha_reverse(cat, peered[0])?);
                    return Ok(());
                }
                _ => {}
            }
        }
        match op {
            ActivateConsistency | DeactivateConsistency => {
                self.set_consistency(cat, id, op == ActivateConsistency)
            }
            AddSyncPair => {
                self.add_sync_pairs(cat, id, p.sync_pairs.as_deref().unwrap_or_default())
            }
            RemoveSyncPair => {
                self.remove_sync_pairs(cat, id, p.sync_pairs.as_deref().unwrap_or_default())
            }
            Abort | Deactivate | Suspend | Fracture | Split | Prepare | Unprepare | Failover => {
                let state = match op {
                    Abort => CopyState::Aborted,
                    Deactivate => CopyState::Inactive,
                    Suspend => CopyState::Suspended,
                    Fracture => CopyState::Fractured,
                    Split => CopyState::Split,
                    Failover => CopyState::Failedover,
                    _ => CopyState::Prepared,
                };
                // Running copies stop first.
                for m in members {
                    self.cancel_copy(*m);
                }
                let cut =
                    consistent && matches!(op, Fracture | Split | Failover | Suspend | Deactivate);
                if op == Split {
                    // A split needs the targets caught up; if they cannot be within the
                    // drain timeout, nothing is done (3 Timeout).
                    let timeout = self.drain_timeout();
                    self.with_barrier(cat, members, cut, |svc, _, m, _| {
                        if svc.mirror(m)?.drain(timeout) {
                            Ok(())
                        } else {
                            Err(MethodError::timeout(format!(
                                "the asynchronous target of sync:{m} did not catch up within {} s; nothing was split",
                                timeout.as_secs_f64()
                            )))
                        }
                    })?;
                }
                if op == Failover && cut {
                    // Every target catches up as far as it can first; what is left after
                    // the drain time stays behind the cut below, for all of them alike.
                    let timeout = self.drain_timeout().min(DRAIN_BEFORE_FAILOVER);
                    self.with_barrier(cat, members, cut, |svc, _, m, _| {
                        if let Ok(mirror) = svc.mirror(m) {
                            mirror.drain(timeout);
                        }
                        Ok(())
                    })?;
                }
                // Pairs that stop without draining leave a group journal one by one: the
                // journal ships nothing meanwhile, so no target moves past the cut (a
                // Split has drained it: nothing is left to ship).
                let held: Vec<_> = if cut && op != Split {
                    members
                        .iter()
                        .filter_map(|&m| self.mirror(m).ok()?.hold_journal())
                        .collect()
                } else {
                    Vec::new()
                };
                let stopped = self.with_barrier(cat, members, cut, |svc, cat, m, locked| {
                    svc.stop_flow(cat, m, op, state, locked)
                });
                for j in held {
                    j.release();
                }
                stopped?;
                for m in members {
                    if let Some(s) = cat.syncs.get_mut(m) {
                        match op {
                            Deactivate => s.deactivated = Some(t),
                            Suspend | Fracture | Split => s.suspended = Some(t),
                            _ => {}
                        }
                    }
                }
                Ok(())
            }
            Activate | ResyncReplica | Resume => {
                let mut copies = Vec::new();
                // Snapshots and clones take a new point in time at one barrier.
                self.with_barrier(cat, members, consistent, |svc, cat, m, _| {
                    let s = cat
                        .syncs
                        .get_mut(&m)
                        .ok_or_else(|| MethodError::failed("a member relationship vanished"))?;
                    match s.sync_type {
                        SyncType::Snapshot => {
                            svc.snapshot(m)?.retake().map_err(|e| {
                                MethodError::failed(format!("taking the new point in time: {e}"))
                            })?;
                            s.state = CopyState::Synchronized;
                            s.activated = Some(t);
                            s.synced = Some(t);
                        }
                        SyncType::Clone => {
                            let c = svc.clone_pair(m)?;
                            if op == ResyncReplica {
                                c.retake().map_err(|e| {
                                    MethodError::failed(format!(
                                        "taking the new point in time: {e}"
                                    ))
                                })?;
                            }
                            s.state = CopyState::Unsynchronized;
                            s.activated = Some(t);
                            copies.push(m);
                        }
                        SyncType::Mirror => {
                            s.activated = Some(t);
                            copies.push(m);
                        }
                    }
                    Ok(())
                })?;
                if !copies.is_empty() {
                    let during = if op == ResyncReplica {
                        ProgressStatus::Resyncing
                    } else {
                        ProgressStatus::Synchronizing
                    };
                    for m in &copies {
                        if let Some(s) = cat.syncs.get_mut(m) {
                            s.progress = during;
                        }
                    }
                    let gens = copies.iter().map(|&m| (m, self.start_gen(m))).collect();
                    out.job = Some(self.start_job(cat, id, op, gens, Work::Copy));
                }
                Ok(())
            }
            RestoreFromReplica | Failback => {
                let mut gens = Vec::new();
                let mut failure = None;
                for &m in members {
                    let g = self.start_gen(m);
                    match self.begin_restore(cat, m, false) {
                        Ok(()) => gens.push((m, g)),
                        Err(e) => {
                            self.end_copy(m, g);
                            failure = Some(e);
                            break;
                        }
                    }
                }
                // Restores that began go on (their sources already read as the replica).
                if !gens.is_empty() {
                    out.job = Some(self.start_job(cat, id, op, gens, Work::Restore));
                }
                failure.map_or(Ok(()), Err)
            }
            ResetToSync | ResetToAsync => {
                let mode = if op == ResetToSync {
                    Mode::Synchronous
                } else {
                    Mode::Asynchronous
                };
                let shared = (consistent && mode == Mode::Asynchronous).then(|| {
                    self.rt()
                        .journals
                        .entry(id)
                        .or_insert_with(|| self.new_journal())
                        .clone()
                });
                self.with_barrier(cat, members, true, |svc, cat, m, locked| {
                    let mirror = svc.mirror(m)?;
                    if let Some(j) = &shared {
                        mirror.set_group_journal(j.clone());
                    }
                    if locked {
                        mirror.set_mode_locked(mode);
                    } else {
                        mirror.set_mode(mode);
                    }
                    if let Some(s) = cat.syncs.get_mut(&m) {
                        s.mode = mode;
                    }
                    Ok(())
                })?;
                if let Some(g) = cat.group_syncs.get_mut(&id) {
                    g.mode = mode;
                }
                if mode == Mode::Synchronous {
                    self.rt().journals.remove(&id);
                }
                Ok(())
            }
            ReverseRoles => {
                for &m in members {
                    let mirror = self.mirror(m)?;
                    mirror.reverse();
                    let s = cat
                        .syncs
                        .get_mut(&m)
                        .ok_or_else(|| MethodError::failed("a member relationship vanished"))?;
                    std::mem::swap(&mut s.source, &mut s.target);
                }
                if let Some(g) = cat.group_syncs.get_mut(&id) {
                    let src = g.source_group.clone();
                    if let Some(src) = src {
                        g.source_group = Some(std::mem::replace(&mut g.target_group, src));
                    }
                }
                out.updated_synchronization = Some(id);
                Ok(())
            }
            Detach | Dissolve | ReturnToResourcePool => {
                if op == ReturnToResourcePool {
                    for m in members {
                        let target = &cat.syncs[m].target;
                        if let Some(e) = cat.volumes.get(target).and_then(|v| v.exposures.first()) {
                            return Err(MethodError::in_use(
                                "Synchronization",
                                format!(
                                    "{target} is exposed as LUN {} of {}: hide it first",
                                    e.lun, e.target
                                ),
                            ));
                        }
                    }
                }
                let target_group = cat
                    .group_syncs
                    .get(&id)
                    .map(|g| (g.target_group.clone(), g.name.clone()));
                for &m in members {
                    if let Some(mirror) = self.rt().mirrors.get(&m).cloned() {
                        mirror.drain(DRAIN_BEFORE_FAILOVER);
                    }
                    if op == Dissolve {
                        let s = &cat.syncs[&m];
                        let aspect = AspectRec {
                            id: cat.next_id.max(1),
                            source: s.source.clone(),
                            target: s.target.clone(),
                            sync_type: s.sync_type,
                            point_in_time: s.synced,
                            consistency: s
                                .group_sync
                                .and_then(|g| cat.group_syncs.get(&g))
                                .is_some_and(|g| g.consistency),
                        };
                        let aid = cat.alloc_id();
                        cat.aspects.insert(aid, AspectRec { id: aid, ..aspect });
                        out.settings_state = Some(aid);
                    }
                    self.remove_pair(cat, m, op == ReturnToResourcePool)?;
                }
                // A target group made for the relationship goes when it is left empty.
                if let Some((tg, name)) = target_group
                    && tg == name
                    && cat.groups.get(&tg).is_some_and(|g| g.members.is_empty())
                {
                    cat.groups.remove(&tg);
                }
                Ok(())
            }
        }
    }

    /// Run the work of an operation on pairs as a job; returns the job id.
    fn start_job(
        self: &Arc<Self>,
        cat: &mut Catalog,
        id: u64,
        op: Operation,
        gens: Vec<(u64, u64)>,
        work: Work,
    ) -> u64 {
        let refs = gens.iter().map(|(m, _)| format!("sync:{m}")).collect();
        let job = cat.alloc_id();
        let name = format!("sync:{id} {op:?}");
        self.spawn_job(job, &name, "ModifyReplicaSynchronization", gens, refs, work);
        job
    }

    pub(crate) fn mirror(&self, id: u64) -> Result<Arc<Mirror>, MethodError> {
        self.rt()
            .mirrors
            .get(&id)
            .cloned()
            .ok_or_else(|| MethodError::failed(format!("mirror sync:{id} is not open")))
    }

    pub(crate) fn snapshot(&self, id: u64) -> Result<Arc<crate::snapshot::Snapshot>, MethodError> {
        self.rt()
            .snapshots
            .get(&id)
            .cloned()
            .ok_or_else(|| MethodError::failed(format!("snapshot sync:{id} is not open")))
    }

    pub(crate) fn clone_pair(&self, id: u64) -> Result<Arc<crate::clone::Clone>, MethodError> {
        self.rt()
            .clones
            .get(&id)
            .cloned()
            .ok_or_else(|| MethodError::failed(format!("clone sync:{id} is not open")))
    }

    /// Run `f` for every member; with `together`, every member's source is quiescent for
    /// the whole run (one write barrier for the group), and `f` is told so.
    fn with_barrier(
        self: &Arc<Self>,
        cat: &mut Catalog,
        members: &[u64],
        together: bool,
        mut f: impl FnMut(&Arc<Self>, &mut Catalog, u64, bool) -> Result<(), MethodError>,
    ) -> Result<(), MethodError> {
        let sources: Vec<Arc<Volume>> = if together {
            let mut names: Vec<String> = members
                .iter()
                .filter_map(|m| cat.syncs.get(m).map(|s| s.source.clone()))
                .collect();
            names.sort();
            names.dedup();
            let rt = self.rt();
            names
                .iter()
                .filter_map(|n| rt.volumes.get(n).cloned())
                .collect()
        } else {
            Vec::new()
        };
        let _guards: Vec<_> = sources.iter().map(|v| v.quiesce()).collect();
        for &m in members {
            f(self, cat, m, together)?;
        }
        Ok(())
    }

    /// Stop a pair's data flow (Abort, Deactivate, Suspend, Fracture, Split, Prepare,
    /// Failover); `locked`: its source is already quiescent.
    fn stop_flow(
        &self,
        cat: &mut Catalog,
        m: u64,
        op: Operation,
        state: CopyState,
        locked: bool,
    ) -> Result<(), MethodError> {
        let s = cat
            .syncs
            .get_mut(&m)
            .ok_or_else(|| MethodError::failed("a member relationship vanished"))?;
        match s.sync_type {
            SyncType::Mirror => {
                let mirror = self.mirror(m)?;
                match op {
                    Operation::Split if locked => mirror.split_locked(),
                    Operation::Split => mirror.split(),
                    Operation::Prepare | Operation::Unprepare => mirror.prepare(),
                    Operation::Failover => {
                        // A group's targets have drained already (and their journal is
                        // held now): see the caller.
                        if !locked {
                            mirror.drain(DRAIN_BEFORE_FAILOVER);
                        }
                        mirror.failover();
                    }
                    _ => mirror.stop_following(state),
                }
                s.state = mirror.state();
            }
            SyncType::Clone => {
                let c = self.clone_pair(m)?;
                if op == Operation::Abort {
                    c.abort();
                }
                s.state = state;
            }
            SyncType::Snapshot => {
                let snap = self.snapshot(m)?;
                if op == Operation::Deactivate {
                    snap.deactivate()
                        .map_err(|e| MethodError::failed(format!("deactivating: {e}")))?;
                }
                s.state = state;
            }
        }
        s.progress = resting_progress(s.state);
        Ok(())
    }
}
