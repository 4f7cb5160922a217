//! CreateGroupReplica (shared/spec/CreateGroupReplica.txt and
//! smis-replication.md section 1.1): making and removing pairs; the copy jobs that follow
//! are in `copying.rs`.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use blockdev::{BlockDevice, FileDevice};

use super::{
    GroupRec, GroupSyncRec, MethodError, ReplicationService, ReplicationSettings, SyncRec,
    VolumeKind, VolumeRec, jobs::now, modify::Work, new_uid, valid_name,
};
use crate::{
    bitmap::Bitmap,
    clone::Clone,
    mirror::Mirror,
    snapshot::Snapshot,
    table,
    types::{CopyState, JobState, Mode, ProgressStatus, ReturnCode, SyncType},
    volume::Volume,
};

/// CreateGroupReplica's input parameters, references already resolved to names (`None`:
/// NULL).
#[derive(Clone, Debug, Default)]
pub struct CreateGroupReplica {
    /// RelationshipName.
    pub relationship_name: Option<String>,
    /// SyncType (required).
    pub sync_type: Option<u16>,
    /// Mode.
    pub mode: Option<u16>,
    /// SourceGroup (group name).
    pub source_group: Option<String>,
    /// SourceElement (volume name).
    pub source_element: Option<String>,
    /// SourceAccessPoint.
    pub source_access_point: Option<String>,
    /// TargetGroup (group name).
    pub target_group: Option<String>,
    /// TargetElementCount.
    pub target_element_count: Option<u64>,
    /// TargetAccessPoint.
    pub target_access_point: Option<String>,
    /// Consistency: 2 none, 3 sequential.
    pub consistency: Option<u16>,
    /// ReplicationSettingData.
    pub settings: ReplicationSettings,
    /// TargetSettingGoal.
    pub target_setting_goal: Option<String>,
    /// TargetPool (pool name).
    pub target_pool: Option<String>,
    /// WaitForCopyState.
    pub wait_for_copy_state: Option<u16>,
}

/// CreateGroupReplica's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateOutcome {
    /// 0 or 4096.
    pub code: ReturnCode,
    /// The job, when work continues.
    pub job: Option<u64>,
    /// The group relationship (`sync:<id>`).
    pub synchronization: Option<u64>,
    /// The target group.
    pub target_group: Option<String>,
}

/// Default consistency when NULL: sequential for groups (every group snapshot, clone and
/// split is cut at one barrier).
const DEFAULT_CONSISTENCY: u16 = 3;

impl ReplicationService {
    /// CreateGroupReplica.
    pub fn create_group_replica(
        self: &Arc<Self>,
        p: CreateGroupReplica,
    ) -> Result<CreateOutcome, MethodError> {
        let sync_type = match p.sync_type {
            None => return Err(MethodError::invalid("SyncType", "SyncType is required")),
            Some(n) => SyncType::from_code(n).ok_or_else(|| {
                MethodError::invalid(
                    "SyncType",
                    format!("SyncType {n} is not 6 (Mirror), 7 (Snapshot) or 8 (Clone)"),
                )
            })?,
        };
        let mode = match (p.mode, sync_type) {
            (None, SyncType::Mirror) => Mode::Synchronous,
            (None, _) => Mode::Synchronous,
            (Some(n), s) => match Mode::from_code(n) {
                Some(Mode::Asynchronous) if s != SyncType::Mirror => {
                    return Err(MethodError::invalid(
                        "Mode",
                        "only mirrors are asynchronous",
                    ));
                }
                Some(m) => m,
                None => {
                    return Err(MethodError::invalid(
                        "Mode",
                        format!("Mode {n} is not 2 or 3"),
                    ));
                }
            },
        };
        if p.source_access_point.is_some() {
            return Err(MethodError::not_supported(
                "SourceAccessPoint",
                "remote sources are not supported",
            ));
        }
        if p.target_access_point.is_some() {
            if sync_type != SyncType::Mirror {
                return Err(MethodError::not_supported(
                    "TargetAccessPoint",
                    "only mirrors have remote targets; snapshots and clones are local",
                ));
            }
            if p.source_group.is_some()
                || p.target_group.is_some()
                || p.target_element_count.is_some_and(|n| n != 1)
            {
                return Err(MethodError::invalid(
                    "TargetAccessPoint",
                    "a remote mirror has one SourceElement and one target: the access point's LUN",
                ));
            }
            if p.target_pool.is_some() {
                return Err(MethodError::invalid(
                    "TargetPool",
                    "a remote mirror's target is the access point's LUN, not a pool volume",
                ));
            }
        }
        let sources: Vec<String> = match (&p.source_group, &p.source_element) {
            (Some(_), Some(_)) => {
                return Err(MethodError::invalid(
                    "SourceGroup",
                    "SourceGroup and SourceElement are mutually exclusive",
                ));
            }
            (None, None) => {
                return Err(MethodError::invalid(
                    "SourceElement",
                    "SourceGroup or SourceElement is required",
                ));
            }
            (Some(g), None) => {
                let cat = self.cat();
                let g = cat
                    .groups
                    .get(g)
                    .ok_or_else(|| MethodError::invalid("SourceGroup", "no such group"))?;
                if g.members.is_empty() {
                    return Err(MethodError::invalid(
                        "SourceGroup",
                        "the source group is empty",
                    ));
                }
                g.members.clone()
            }
            (None, Some(v)) => vec![v.clone()],
        };
        if p.target_group.is_some() && p.target_element_count.is_some() {
            return Err(MethodError::invalid(
                "TargetElementCount",
                "TargetGroup and TargetElementCount are mutually exclusive",
            ));
        }
        if p.target_element_count.is_some() && p.source_group.is_some() {
            return Err(MethodError::invalid(
                "TargetElementCount",
                "TargetElementCount applies to a SourceElement only",
            ));
        }
        let count = p.target_element_count.unwrap_or(1);
        if count == 0 || count > 64 {
            return Err(MethodError::invalid(
                "TargetElementCount",
                "TargetElementCount must be 1 to 64",
            ));
        }
        let consistency = match p.consistency {
            None => DEFAULT_CONSISTENCY,
            Some(c @ (2 | 3)) => c,
            Some(c) => {
                return Err(MethodError::invalid(
                    "Consistency",
                    format!("Consistency {c} is not 2 or 3"),
                ));
            }
        } == 3
            || p.settings.consistent_point_in_time == Some(true);
        let wait = match p.wait_for_copy_state {
            None | Some(15) => None,
            Some(n) => {
                let s = CopyState::from_code(n).ok_or_else(|| {
                    MethodError::invalid("WaitForCopyState", format!("{n} is not a CopyState"))
                })?;
                if !table::create_wait_states(sync_type).contains(&s) {
                    return Err(MethodError::invalid(
                        "WaitForCopyState",
                        format!("{s:?} cannot be waited for when creating this SyncType"),
                    ));
                }
                Some(s)
            }
        };
        let pool = self
            .pool(p.target_pool.as_deref())
            .ok_or_else(|| MethodError::invalid("TargetPool", "no such pool"))?;

        let ops = self.ops();
        let mut cat = self.cat();
        // Sources exist and can be replicated.
        for s in &sources {
            let rec = cat
                .volumes
                .get(s)
                .ok_or_else(|| MethodError::invalid("SourceElement", format!("no volume {s}")))?;
            let _ = rec;
            if let Some(r) = cat.syncs.values().find(|r| {
                r.target == *s
                    && (r.sync_type != SyncType::Clone || r.state != CopyState::Synchronized)
            }) {
                return Err(MethodError::in_use(
                    "SourceElement",
                    format!("{s} is itself the target of sync:{}", r.id),
                ));
            }
            if !self.rt().volumes.contains_key(s) {
                return Err(MethodError::failed(format!("volume {s} is not open")));
            }
        }
        let rel_name = match &p.relationship_name {
            Some(n) if !valid_name(n) => {
                return Err(MethodError::invalid(
                    "RelationshipName",
                    "names are 1 to 64 letters, digits, '.', '_' or '-'",
                ));
            }
            Some(n) => n.clone(),
            None => format!("rel{}", cat.next_id),
        };
        // Pairs (source, existing target or None to create).
        let mut pairs: Vec<(String, Option<String>)> = Vec::new();
        let target_group = match &p.target_group {
            Some(tg) => {
                let g = cat
                    .groups
                    .get(tg)
                    .ok_or_else(|| MethodError::invalid("TargetGroup", "no such group"))?;
                if g.members.is_empty() {
                    sources.iter().for_each(|s| pairs.push((s.clone(), None)));
                } else {
                    if p.target_pool.is_some() || p.target_setting_goal.is_some() {
                        return Err(MethodError::invalid(
                            if p.target_pool.is_some() {
                                "TargetPool"
                            } else {
                                "TargetSettingGoal"
                            },
                            "TargetPool and TargetSettingGoal must be NULL when the target group holds targets",
                        ));
                    }
                    if g.members.len() != sources.len() {
                        return Err(MethodError::invalid(
                            "TargetGroup",
                            format!(
                                "the target group has {} elements for {} sources (UnequalGroupsAction: return an error)",
                                g.members.len(),
                                sources.len()
                            ),
                        ));
                    }
                    for (s, t) in sources.iter().zip(&g.members) {
                        pairs.push((s.clone(), Some(t.clone())));
                    }
                }
                tg.clone()
            }
            None => {
                for s in &sources {
                    for _ in 0..count {
                        pairs.push((s.clone(), None));
                    }
                }
                if cat.groups.contains_key(&rel_name) {
                    return Err(MethodError::in_use(
                        "RelationshipName",
                        format!("a group named {rel_name} exists"),
                    ));
                }
                rel_name.clone()
            }
        };
        // Existing targets: same size, not otherwise in use.
        for (s, t) in &pairs {
            if let Some(t) = t {
                let (ss, ts) = (
                    cat.volumes[s].size,
                    cat.volumes.get(t).map(|r| r.size).unwrap_or(0),
                );
                if ss != ts {
                    return Err(MethodError::invalid(
                        "TargetGroup",
                        format!("{t} is not the size of {s}"),
                    ));
                }
                if cat.syncs.values().any(|r| r.source == *t || r.target == *t) {
                    return Err(MethodError::in_use(
                        "TargetGroup",
                        format!("{t} is in another relationship"),
                    ));
                }
                if sync_type == SyncType::Snapshot {
                    return Err(MethodError::invalid(
                        "TargetGroup",
                        "snapshot targets are always created in the pool",
                    ));
                }
                if let Some(r) = cat.volumes.get(t)
                    && sync_type == SyncType::Clone
                    && (r.kind == VolumeKind::Configured || !r.exposures.is_empty())
                {
                    return Err(MethodError::in_use(
                        "TargetGroup",
                        format!(
                            "{t} is exported as a LUN; a clone target must not be in use while the clone is made"
                        ),
                    ));
                }
            }
        }
        // Names of new targets: <RelationshipName>_n.
        let mut n = 0;
        let mut named = Vec::new();
        for (s, t) in &pairs {
            let t = match t {
                Some(t) => t.clone(),
                None => {
                    n += 1;
                    let name = format!("{rel_name}_{n}");
                    if cat.volumes.contains_key(&name) {
                        return Err(MethodError::in_use(
                            "RelationshipName",
                            format!("volume {name} exists"),
                        ));
                    }
                    name
                }
            };
            named.push((s.clone(), t, pairs.iter().any(|(_, x)| x.is_none())));
        }

        // A remote mirror's target: the access point's LUN, logged in to now.
        let remote_target = match &p.target_access_point {
            Some(ap_name) => {
                let ap = cat.access_points.get(ap_name).cloned().ok_or_else(|| {
                    MethodError::invalid("TargetAccessPoint", format!("no access point {ap_name}"))
                })?;
                let (s, t, _) = &named[0];
                let src = cat.volumes[s].clone();
                let dev = self.open_remote(&ap)?;
                if dev.size() < src.size {
                    return Err(MethodError::invalid(
                        "TargetAccessPoint",
                        format!(
                            "{} holds {} bytes, less than the {} of {s}",
                            ap.url(),
                            dev.size(),
                            src.size
                        ),
                    ));
                }
                if dev.block_size() != src.block_size {
                    return Err(MethodError::invalid(
                        "TargetAccessPoint",
                        format!(
                            "{} has {}-byte blocks, {s} {}-byte",
                            ap.url(),
                            dev.block_size(),
                            src.block_size
                        ),
                    ));
                }
                cat.volumes.insert(
                    t.clone(),
                    VolumeRec {
                        name: t.clone(),
                        path: ap.url(),
                        size: src.size,
                        block_size: src.block_size,
                        pool: None,
                        kind: VolumeKind::Remote {
                            access_point: ap_name.clone(),
                        },
                        exposures: Vec::new(),
                        uid: new_uid(t, 0),
                        identity: None,
                    },
                );
                self.add_remote_volume(t, dev);
                Some(t.clone())
            }
            None => None,
        };

        // Create everything. Sources are quiesced together so that every member is cut at
        // one write barrier (snapshots and clones; mirrors need no point in time).
        let gid = cat.alloc_id();
        let mut members = Vec::new();
        let mut created_targets = Vec::new();
        let source_vols: Vec<Arc<Volume>> = {
            let mut v: Vec<String> = sources;
            v.sort();
            v.dedup();
            let rt = self.rt();
            v.iter()
                .filter_map(|s| rt.volumes.get(s).cloned())
                .collect()
        };
        let journal = (sync_type == SyncType::Mirror
            && mode == Mode::Asynchronous
            && consistency
            && named.len() > 1)
            .then(|| self.new_journal());
        if let Some(j) = &journal {
            self.rt().journals.insert(gid, j.clone());
        }
        let guards: Vec<_> = if consistency && sync_type != SyncType::Mirror {
            source_vols.iter().map(|v| v.quiesce()).collect()
        } else {
            Vec::new()
        };
        let mut failure = None;
        for (s, t, _) in &named {
            let id = cat.alloc_id();
            match self.make_pair(&mut cat, id, gid, sync_type, mode, s, t, &pool, &p.settings) {
                Ok(created) => {
                    if created || remote_target.as_ref() == Some(t) {
                        created_targets.push(t.clone());
                    }
                    members.push(id);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(guards);
        // An ironlun peer learns the relationship (HA pair).
        if failure.is_none()
            && remote_target.is_some()
            && let Some(&m) = members.first()
            && let Err(e) = self.attach_peer(&mut cat, m)
        {
            failure = Some(e);
        }
        if let Some(e) = failure {
            // Undo what was made.
            for id in members {
                let _ = self.remove_pair(&mut cat, id, true);
            }
            if let Some(t) = &remote_target {
                self.forget_remote_volume(&mut cat, t);
            }
            self.rt().journals.remove(&gid);
            self.save(&mut cat);
            return Err(e);
        }
        if !cat.groups.contains_key(&target_group) {
            cat.groups.insert(
                target_group.clone(),
                GroupRec {
                    name: target_group.clone(),
                    members: created_targets,
                },
            );
        } else if let Some(g) = cat.groups.get_mut(&target_group) {
            for t in created_targets {
                if !g.members.contains(&t) {
                    g.members.push(t);
                }
            }
        }
        cat.group_syncs.insert(
            gid,
            GroupSyncRec {
                id: gid,
                name: rel_name.clone(),
                sync_type,
                mode,
                source_group: p.source_group,
                target_group: target_group.clone(),
                consistency,
                members: members.clone(),
                established: now(),
            },
        );
        // Mirrors start journaling through the group journal once synchronized.
        if let Some(j) = journal {
            for id in &members {
                if let Some(m) = self.rt().mirrors.get(id).cloned() {
                    m.set_group_journal(j.clone());
                }
            }
        }
        let needs_copy = matches!(sync_type, SyncType::Mirror | SyncType::Clone);
        // The copy's generation exists before the catalog is saved, so the pairs show as
        // Synchronizing from the start.
        let job = needs_copy.then(|| {
            (
                cat.alloc_id(),
                members
                    .iter()
                    .map(|&m| (m, self.start_gen(m)))
                    .collect::<Vec<_>>(),
            )
        });
        self.save(&mut cat);
        drop(cat);
        drop(ops);
        let job = job.map(|(job, gens)| {
            let refs = members.iter().map(|m| format!("sync:{m}")).collect();
            self.spawn_job(
                job,
                &format!("{rel_name} initial copy"),
                "CreateGroupReplica",
                gens,
                refs,
                Work::Copy,
            );
            job
        });
        let target_group = Some(target_group);
        let done = |code, job| {
            Ok(CreateOutcome {
                code,
                job,
                synchronization: Some(gid),
                target_group: target_group.clone(),
            })
        };
        match (job, wait) {
            // Unsynchronized is reached as soon as the copy runs: the method is complete,
            // the copy goes on (CopyState and PercentSynced show it).
            (Some(_), Some(CopyState::Unsynchronized)) | (None, _) => {
                done(ReturnCode::Completed, None)
            }
            (Some(j), _) if !self.job_finishes(j, self.quick_wait()) => {
                done(ReturnCode::JobStarted, Some(j))
            }
            (Some(j), _) => match self.jobs.get(j) {
                Some(info) if info.state == JobState::Exception => {
                    Err(MethodError::failed(info.error.unwrap_or_default()))
                }
                _ => done(ReturnCode::Completed, None),
            },
        }
    }

    /// Create one pair (and its target, when it does not exist). Returns whether the
    /// target was created.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn make_pair(
        self: &Arc<Self>,
        cat: &mut super::Catalog,
        id: u64,
        gid: u64,
        sync_type: SyncType,
        mode: Mode,
        source: &str,
        target: &str,
        pool: &Arc<crate::pool::Pool>,
        settings: &ReplicationSettings,
    ) -> Result<bool, MethodError> {
        let src_rec = cat.volumes[source].clone();
        let src_vol = self
            .rt()
            .volumes
            .get(source)
            .cloned()
            .ok_or_else(|| MethodError::failed("source not open"))?;
        let exists = cat.volumes.contains_key(target);
        let path = match &cat.volumes.get(target) {
            Some(r) => r.path.clone(),
            None => {
                let ext = if sync_type == SyncType::Snapshot {
                    "cow"
                } else {
                    "img"
                };
                pool.path(&format!("{target}.{ext}")).display().to_string()
            }
        };
        let (state, percent) = match sync_type {
            SyncType::Snapshot => (CopyState::Synchronized, 100),
            _ => (CopyState::Unsynchronized, 0),
        };
        let t = now();
        match sync_type {
            SyncType::Snapshot => {
                let store = open_new(Path::new(&path), crate::snapmap::store_size(src_rec.size))?;
                let snap = Snapshot::open(
                    &src_vol,
                    store,
                    &PathBuf::from(format!("{path}.log")),
                    pool.clone(),
                    false,
                )
                .map_err(|e| MethodError::failed(format!("creating the snapshot store: {e}")))?;
                src_vol.add_hook(snap.clone());
                let mut rt = self.rt();
                rt.volumes
                    .insert(target.to_owned(), Volume::new(target, snap.view()));
                rt.snapshots.insert(id, snap);
            }
            SyncType::Clone => {
                let dev = if exists {
                    self.rt()
                        .volumes
                        .get(target)
                        .map(|v| v.base().clone())
                        .ok_or_else(|| MethodError::failed("target not open"))?
                } else {
                    open_new(Path::new(&path), src_rec.size)?
                };
                let clone =
                    Clone::open(&src_vol, dev, &PathBuf::from(format!("{path}.log")), false)
                        .map_err(|e| MethodError::failed(format!("creating the clone: {e}")))?;
                src_vol.add_hook(clone.clone());
                let mut rt = self.rt();
                rt.volumes
                    .insert(target.to_owned(), Volume::new(target, clone.view()));
                rt.clones.insert(id, clone);
            }
            SyncType::Mirror => {
                let tvol = if exists {
                    self.rt()
                        .volumes
                        .get(target)
                        .cloned()
                        .ok_or_else(|| MethodError::failed("target not open"))?
                } else {
                    let v = Volume::new(target, open_new(Path::new(&path), src_rec.size)?);
                    self.rt().volumes.insert(target.to_owned(), v.clone());
                    v
                };
                let n = src_vol.chunk_count();
                let al = self
                    .activity_log(source)
                    .map_err(|e| MethodError::failed(format!("activity log: {e}")))?;
                let m = Mirror::new(
                    id,
                    src_vol,
                    tvol,
                    mode,
                    CopyState::Unsynchronized,
                    Bitmap::full(n),
                    Bitmap::new(n),
                    Some(self.bitmap_paths(id)),
                );
                let tal = self
                    .activity_log(target)
                    .map_err(|e| MethodError::failed(format!("activity log: {e}")))?;
                m.set_activity_logs(Some(al), Some(tal));
                m.set_max_lag(self.max_lag());
                m.attach();
                let _ = m.save_bitmaps();
                self.rt().mirrors.insert(id, m);
            }
        }
        if !exists {
            cat.volumes.insert(
                target.to_owned(),
                VolumeRec {
                    name: target.to_owned(),
                    path,
                    size: src_rec.size,
                    block_size: src_rec.block_size,
                    pool: Some(pool.name.clone()),
                    kind: VolumeKind::Replica { sync: id },
                    exposures: Vec::new(),
                    uid: new_uid(target, id),
                    identity: None,
                },
            );
        } else if let Some(r) = cat.volumes.get_mut(target)
            && !matches!(r.kind, VolumeKind::Configured | VolumeKind::Remote { .. })
        {
            r.kind = VolumeKind::Replica { sync: id };
        }
        cat.syncs.insert(
            id,
            SyncRec {
                id,
                sync_type,
                mode,
                source: source.to_owned(),
                target: target.to_owned(),
                state,
                requested: CopyState::NotApplicable,
                progress: if state == CopyState::Synchronized {
                    ProgressStatus::Completed
                } else {
                    ProgressStatus::Synchronizing
                },
                percent,
                group_sync: Some(gid),
                established: t,
                synced: (state == CopyState::Synchronized).then_some(t),
                activated: Some(t),
                copy_priority: settings.copy_priority.unwrap_or(0),
                recovery_mode: match settings.copy_recovery_mode {
                    Some(3) => 3,
                    _ => 2,
                },
                last_copy_chunks: 0,
                restoring: false,
                deactivated: None,
                suspended: None,
                peer: None,
            },
        );
        Ok(!exists)
    }

    /// Remove a pair's runtime objects and records (`delete_target`: its target volume too).
    pub(crate) fn remove_pair(
        &self,
        cat: &mut super::Catalog,
        id: u64,
        delete_target: bool,
    ) -> Result<(), MethodError> {
        let Some(s) = cat.syncs.remove(&id) else {
            return Ok(());
        };
        self.cancel_copy(id);
        let (source, snap, clone, mirror) = {
            let mut rt = self.rt();
            let source = rt.volumes.get(&s.source).cloned();
            (
                source,
                rt.snapshots.remove(&id),
                rt.clones.remove(&id),
                rt.mirrors.remove(&id),
            )
        };
        if let Some(snap) = snap {
            if let Some(src) = &source {
                // Held writes that would copy into the snapshot are applied first.
                let _q = src.quiesce();
                let h: Arc<dyn crate::volume::WriteHook> = snap.clone();
                src.remove_hook(&h);
            }
            if delete_target && let Some(rec) = cat.volumes.get(&s.target) {
                snap.destroy(Path::new(&rec.path));
            }
        }
        if let Some(c) = clone {
            if let Some(src) = &source {
                let h: Arc<dyn crate::volume::WriteHook> = c.clone();
                src.remove_hook(&h);
            }
            c.detach();
        }
        if let Some(m) = mirror {
            m.detach();
            m.shutdown();
            let (a, b) = self.bitmap_paths(id);
            let _ = std::fs::remove_file(a);
            let _ = std::fs::remove_file(b);
        }
        if delete_target {
            self.rt().volumes.remove(&s.target);
            self.rt().remotes.remove(&s.target);
            if let Some(rec) = cat.volumes.remove(&s.target) {
                let _ = std::fs::remove_file(&rec.path);
                let _ = std::fs::remove_file(format!("{}.log", rec.path));
            }
            for g in cat.groups.values_mut() {
                g.members.retain(|m| *m != s.target);
            }
        } else if cat
            .volumes
            .get(&s.target)
            .is_some_and(|r| matches!(r.kind, VolumeKind::Remote { .. }))
        {
            // The data stays on the remote target; the reference to it goes.
            self.forget_remote_volume(cat, &s.target);
        } else if let Some(r) = cat.volumes.get_mut(&s.target)
            && r.kind != VolumeKind::Configured
        {
            r.kind = VolumeKind::Independent;
        }
        if let Some(gid) = s.group_sync
            && let Some(g) = cat.group_syncs.get_mut(&gid)
        {
            g.members.retain(|m| *m != id);
            if g.members.is_empty() {
                self.drop_group_sync(cat, gid);
            }
        }
        Ok(())
    }
}

/// Create a sparse image file for a new volume.
pub(super) fn open_new(path: &Path, size: u64) -> Result<Arc<dyn BlockDevice>, MethodError> {
    if path.exists() {
        return Err(MethodError::in_use(
            "ElementName",
            format!("{} exists", path.display()),
        ));
    }
    FileDevice::open(path, Some(size), false)
        .map(|d| Arc::new(d) as Arc<dyn BlockDevice>)
        .map_err(|e| MethodError::failed(format!("creating {}: {e}", path.display())))
}
