//! A group relationship's consistency and members: Activate / Deactivate Consistency, Add
//! and Remove SyncPair, and moving a pair's writes onto its group's journal.

use std::sync::Arc;

use crate::{
    CopyState, Mode, SyncType,
    service::{Catalog, GroupSyncRec, MethodError, ReplicationService},
};

impl ReplicationService {
    /// Activate or Deactivate Consistency of a group relationship (a pair: no effect).
    pub(super) fn set_consistency(
        self: &Arc<Self>,
        cat: &mut Catalog,
        id: u64,
        on: bool,
    ) -> Result<(), MethodError> {
        let Some(g) = cat.group_syncs.get(&id).cloned() else {
            return Ok(());
        };
        if g.consistency == on {
            return Ok(());
        }
        if g.sync_type == SyncType::Mirror && g.mode == Mode::Asynchronous {
            // One ordered journal for the group, or one per pair.
            let shared = on.then(|| {
                self.rt()
                    .journals
                    .entry(id)
                    .or_insert_with(|| self.new_journal())
                    .clone()
            });
            self.with_barrier(cat, &g.members, true, |svc, _, m, _| {
                svc.mirror(m)?.switch_journal(shared.clone());
                Ok(())
            })?;
            if !on {
                self.rt().journals.remove(&id);
            }
        }
        if let Some(g) = cat.group_syncs.get_mut(&id) {
            g.consistency = on;
        }
        Ok(())
    }

    /// AddSyncPair: move pairs into this group relationship (and their elements into its
    /// groups).
    pub(super) fn add_sync_pairs(
        self: &Arc<Self>,
        cat: &mut Catalog,
        id: u64,
        pairs: &[u64],
    ) -> Result<(), MethodError> {
        let g = group_sync(cat, id)?;
        for p in pairs {
            let s = cat
                .syncs
                .get(p)
                .ok_or_else(|| MethodError::invalid("SyncPair", format!("no pair sync:{p}")))?;
            if s.sync_type != g.sync_type || s.mode != g.mode {
                return Err(MethodError::invalid(
                    "SyncPair",
                    format!("sync:{p} is not of the group's SyncType and Mode"),
                ));
            }
            if g.sync_type == SyncType::Mirror && s.state != CopyState::Synchronized {
                return Err(MethodError::invalid(
                    "SyncPair",
                    format!("sync:{p} must be Synchronized to join a mirror group"),
                ));
            }
        }
        for &p in pairs {
            if g.members.contains(&p) {
                continue;
            }
            let old = cat.syncs[&p].group_sync;
            if let Some(o) = old
                && let Some(og) = cat.group_syncs.get_mut(&o)
            {
                og.members.retain(|x| *x != p);
                if og.members.is_empty() {
                    self.drop_group_sync(cat, o);
                }
            }
            let (src, tgt) = set_group_sync(cat, p, Some(id))?;
            let gs = cat
                .group_syncs
                .get_mut(&id)
                .ok_or_else(|| MethodError::failed("the group relationship vanished"))?;
            gs.members.push(p);
            if let Some(sg) = gs.source_group.clone()
                && let Some(grp) = cat.groups.get_mut(&sg)
                && !grp.members.contains(&src)
            {
                grp.members.push(src);
            }
            if let Some(grp) = cat.groups.get_mut(&g.target_group)
                && !grp.members.contains(&tgt)
            {
                grp.members.push(tgt);
            }
        }
        self.rejournal(cat, id)
    }

    /// RemoveSyncPair: pairs leave the group relationship and its groups; they stay
    /// associated.
    pub(super) fn remove_sync_pairs(
        self: &Arc<Self>,
        cat: &mut Catalog,
        id: u64,
        pairs: &[u64],
    ) -> Result<(), MethodError> {
        let g = group_sync(cat, id)?;
        for p in pairs {
            if !g.members.contains(p) {
                return Err(MethodError::invalid(
                    "SyncPair",
                    format!("sync:{p} is not a pair of sync:{id}"),
                ));
            }
        }
        for &p in pairs {
            let (src, tgt) = set_group_sync(cat, p, None)?;
            if let Some(sg) = &g.source_group
                && let Some(grp) = cat.groups.get_mut(sg)
            {
                grp.members.retain(|m| *m != src);
            }
            if let Some(grp) = cat.groups.get_mut(&g.target_group) {
                grp.members.retain(|m| *m != tgt);
            }
            if let Some(gs) = cat.group_syncs.get_mut(&id) {
                gs.members.retain(|m| *m != p);
            }
            if let Ok(mirror) = self.mirror(p) {
                let source = mirror.source();
                let _q = source.quiesce();
                mirror.switch_journal(None);
            }
        }
        if cat
            .group_syncs
            .get(&id)
            .is_some_and(|g| g.members.is_empty())
        {
            self.drop_group_sync(cat, id);
            return Ok(());
        }
        self.rejournal(cat, id)
    }

    /// A group relationship left without pairs goes, with its journal.
    pub(crate) fn drop_group_sync(&self, cat: &mut Catalog, id: u64) {
        cat.group_syncs.remove(&id);
        self.rt().journals.remove(&id);
    }

    /// Put every pair of a consistent asynchronous mirror group on the group's journal.
    fn rejournal(self: &Arc<Self>, cat: &mut Catalog, id: u64) -> Result<(), MethodError> {
        let Some(g) = cat.group_syncs.get(&id).cloned() else {
            return Ok(());
        };
        if g.sync_type != SyncType::Mirror
            || g.mode != Mode::Asynchronous
            || !g.consistency
            || g.members.len() < 2
        {
            return Ok(());
        }
        let j = self
            .rt()
            .journals
            .entry(id)
            .or_insert_with(|| self.new_journal())
            .clone();
        self.with_barrier(cat, &g.members, true, |svc, _, m, _| {
            svc.mirror(m)?.switch_journal(Some(j.clone()));
            Ok(())
        })
    }
}

/// Group relationship `id` (the caller checked that it exists).
fn group_sync(cat: &Catalog, id: u64) -> Result<GroupSyncRec, MethodError> {
    cat.group_syncs.get(&id).cloned().ok_or_else(|| {
        MethodError::invalid(
            "Synchronization",
            format!("no group relationship sync:{id}"),
        )
    })
}

/// Records pair `p`'s group relationship; its source and target volumes.
fn set_group_sync(
    cat: &mut Catalog,
    p: u64,
    group: Option<u64>,
) -> Result<(String, String), MethodError> {
    let s = cat
        .syncs
        .get_mut(&p)
        .ok_or_else(|| MethodError::failed("the pair vanished"))?;
    s.group_sync = group;
    Ok((s.source.clone(), s.target.clone()))
}
