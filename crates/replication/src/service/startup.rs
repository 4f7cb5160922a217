//! Starting the service: every volume and relationship of the catalog is opened again,
//! state left by an unclean stop is recovered, and interrupted copies resume.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use blockdev::{BlockDevice, FileDevice};

use super::{Catalog, ReplicationService, SyncRec, VolumeKind, modify};
use crate::{
    bitmap::Bitmap,
    clone::Clone,
    mirror::Mirror,
    snapshot::Snapshot,
    types::{CopyState, Mode, SyncType},
    volume::Volume,
};

impl ReplicationService {
    /// Open every volume and relationship of the catalog, recover from an unclean stop, and
    /// resume interrupted copies.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let mut cat = self.cat();
        let unclean = !cat.clean;
        if unclean {
            tracing::warn!("the last run did not stop cleanly: recovering replication state");
        }
        // Volumes that are not configured LUNs: created volumes and replicas with files.
        let mut missing = Vec::new();
        for rec in cat.volumes.values() {
            if self.rt().volumes.contains_key(&rec.name) {
                continue;
            }
            if rec.kind == VolumeKind::Configured {
                missing.push(rec.name.clone());
                continue;
            }
            let opened_with_relationship = matches!(rec.kind, VolumeKind::Replica { sync }
                if cat.syncs.get(&sync).is_some_and(|s| s.sync_type != SyncType::Mirror));
            if opened_with_relationship {
                continue;
            }
            if let VolumeKind::Remote { access_point } = &rec.kind {
                match cat.access_points.get(access_point) {
                    Some(ap) => {
                        let dev = self.remote_offline(ap, rec.size, rec.block_size);
                        self.add_remote_volume(&rec.name, dev);
                    }
                    None => {
                        tracing::error!(volume = %rec.name, %access_point, "the access point of a remote volume is gone")
                    }
                }
                continue;
            }
            match FileDevice::open(Path::new(&rec.path), Some(rec.size), false) {
                Ok(d) => {
                    let dev: Arc<dyn BlockDevice> = Arc::new(d);
                    self.rt()
                        .volumes
                        .insert(rec.name.clone(), Volume::new(&rec.name, dev));
                }
                Err(e) => tracing::error!(volume = %rec.name, error = %e, "volume image unusable"),
            }
        }
        for name in missing {
            tracing::warn!(volume = %name, "a configured volume is no longer in the configuration; forgetting it");
            cat.volumes.remove(&name);
        }
        self.reopen_peers(&cat);
        let syncs: Vec<SyncRec> = cat.syncs.values().cloned().collect();
        let mut resume = Vec::new();
        let mut restores = Vec::new();
        for s in syncs {
            match self.reopen(&mut cat, &s, unclean) {
                Ok(_) if s.restoring => restores.push(s.id),
                Ok(true) => resume.push(s.id),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(sync = s.id, error = %e, "relationship unusable: broken");
                    if let Some(r) = cat.syncs.get_mut(&s.id) {
                        r.state = CopyState::Broken;
                    }
                }
            }
        }
        // Interrupted restores are installed again before any host I/O, then resume.
        let mut restore_gens = Vec::new();
        for id in restores {
            match self.begin_restore(&mut cat, id, true) {
                Ok(()) => restore_gens.push((id, self.start_gen(id))),
                Err(e) => {
                    tracing::error!(sync = id, error = %e.message, "cannot resume the restore: broken");
                    if let Some(r) = cat.syncs.get_mut(&id) {
                        r.state = CopyState::Broken;
                    }
                }
            }
        }
        let restore_job = (!restore_gens.is_empty()).then(|| cat.alloc_id());
        cat.clean = false;
        self.save(&mut cat);
        drop(cat);
        for id in resume {
            self.resume_copy(id);
        }
        if let Some(job) = restore_job {
            let refs = restore_gens
                .iter()
                .map(|(id, _)| format!("sync:{id}"))
                .collect();
            self.spawn_job(
                job,
                "restore resumed after restart",
                "Recovery",
                restore_gens,
                refs,
                modify::Work::Restore,
            );
        }
        let me = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("replication-flusher".into())
            .spawn(move || {
                while let Some(s) = me.upgrade() {
                    {
                        let _round = s
                            .background
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if s.stopping.load(Ordering::SeqCst) {
                            return;
                        }
                        s.flush_state();
                        s.auto_resync();
                    }
                    drop(s);
                    std::thread::sleep(Duration::from_secs(2));
                }
            })?;
        Ok(())
    }

    /// Rebuild one relationship's runtime objects. Returns whether a copy must resume.
    fn reopen(
        self: &Arc<Self>,
        cat: &mut Catalog,
        s: &SyncRec,
        unclean: bool,
    ) -> std::io::Result<bool> {
        let source = self.rt().volumes.get(&s.source).cloned().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("source volume {} is gone", s.source),
            )
        })?;
        let trec = cat.volumes.get(&s.target).cloned().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("target volume {} is gone", s.target),
            )
        })?;
        match s.sync_type {
            SyncType::Snapshot => {
                let pool = self
                    .pool(trec.pool.as_deref())
                    .ok_or_else(|| std::io::Error::other("pool is gone"))?;
                // Stores of earlier versions may be a little smaller: grown to size.
                let store = FileDevice::open(
                    Path::new(&trec.path),
                    Some(crate::snapmap::store_size(trec.size)),
                    false,
                )
                .map_err(std::io::Error::other)?;
                let writable = trec.exposures.iter().any(|e| !e.read_only);
                let snap = Snapshot::open(
                    &source,
                    Arc::new(store),
                    &PathBuf::from(format!("{}.log", trec.path)),
                    pool,
                    writable,
                )?;
                if s.state == CopyState::Broken {
                    snap.set_broken(crate::snapshot::Broken::Io(
                        "broken before the restart".into(),
                    ));
                }
                source.add_hook(snap.clone());
                let vol = Volume::new(&trec.name, snap.view());
                let mut rt = self.rt();
                rt.volumes.insert(trec.name, vol);
                rt.snapshots.insert(s.id, snap);
                Ok(false)
            }
            SyncType::Clone => {
                // A configured (or created) volume is already open: clone into its device.
                let open = self.rt().volumes.get(&trec.name).map(|v| v.base().clone());
                let target: Arc<dyn BlockDevice> = match open {
                    Some(d) => d,
                    None => Arc::new(
                        FileDevice::open(Path::new(&trec.path), Some(trec.size), false)
                            .map_err(std::io::Error::other)?,
                    ),
                };
                let copying = !s.restoring
                    && matches!(s.state, CopyState::Unsynchronized | CopyState::Initialized);
                let complete = !copying
                    && !matches!(
                        s.state,
                        CopyState::Aborted | CopyState::Suspended | CopyState::Inactive
                    );
                let clone = Clone::open(
                    &source,
                    target,
                    &PathBuf::from(format!("{}.log", trec.path)),
                    complete,
                )?;
                if unclean && complete {
                    // Origin changes since the point in time are unknown: resync copies all.
                    clone.mark_origin_dirty(&Bitmap::full(source.chunk_count()));
                }
                if s.state == CopyState::Aborted {
                    clone.abort();
                }
                source.add_hook(clone.clone());
                let vol = Volume::new(&trec.name, clone.view());
                let mut rt = self.rt();
                rt.volumes.insert(trec.name, vol);
                rt.clones.insert(s.id, clone);
                Ok(copying)
            }
            SyncType::Mirror => {
                let target = self
                    .rt()
                    .volumes
                    .get(&trec.name)
                    .cloned()
                    .ok_or_else(|| std::io::Error::other("target volume not open"))?;
                let n = source.chunk_count();
                let (p_oos, p_td) = self.bitmap_paths(s.id);
                let mut oos = Bitmap::load(&p_oos)?.unwrap_or_else(|| Bitmap::new(n));
                let td = Bitmap::load(&p_td)?.unwrap_or_else(|| Bitmap::new(n));
                let mut td = td;
                let al = self.activity_log(&source.name)?;
                let tal = self.activity_log(&trec.name)?;
                if unclean {
                    // What the logs held may differ between the sides.
                    for (log, map) in [(&al, &mut oos), (&tal, &mut td)] {
                        for e in log.extents() {
                            for c in crate::al::extent_chunks(e) {
                                map.set(c);
                            }
                        }
                    }
                }
                let mut state = s.state;
                let copying = match state {
                    CopyState::Unsynchronized => true,
                    CopyState::Synchronized if !oos.is_empty() => {
                        state = CopyState::Unsynchronized;
                        true
                    }
                    _ => false,
                };
                let m = Mirror::new(
                    s.id,
                    source,
                    target,
                    s.mode,
                    state,
                    oos,
                    td,
                    Some((p_oos, p_td)),
                );
                m.set_activity_logs(Some(al), Some(tal));
                m.set_max_lag(self.max_lag());
                m.attach();
                let shared = s.group_sync.filter(|g| {
                    cat.group_syncs.get(g).is_some_and(|g| {
                        g.consistency && g.mode == Mode::Asynchronous && g.members.len() > 1
                    })
                });
                if let Some(g) = shared {
                    let j = self
                        .rt()
                        .journals
                        .entry(g)
                        .or_insert_with(|| self.new_journal())
                        .clone();
                    m.set_group_journal(j);
                }
                if !copying && state == CopyState::Synchronized && s.mode == Mode::Asynchronous {
                    m.resume_journal();
                }
                self.rt().mirrors.insert(s.id, m);
                Ok(copying)
            }
        }
    }
}
