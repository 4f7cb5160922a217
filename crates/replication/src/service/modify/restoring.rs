//! Restore (Operation 9 and the restore half of Failback): installing a restore of a pair's
//! source from its replica, and the job that brings the chunks back.

use std::sync::Arc;

use crate::{
    CopyState, ProgressStatus, SyncType,
    service::{Catalog, MethodError, ReplicationService, jobs::now, restore::DurableRestore},
    volume::RestoreSource,
};

impl ReplicationService {
    /// Install a restore of pair `m`'s source from its replica: from now on the source
    /// reads as the replica; the job brings the chunks back. `resumed`: after a restart.
    pub(crate) fn begin_restore(
        &self,
        cat: &mut Catalog,
        m: u64,
        resumed: bool,
    ) -> Result<(), MethodError> {
        let s = cat
            .syncs
            .get(&m)
            .cloned()
            .ok_or_else(|| MethodError::failed("no such pair"))?;
        let source = self
            .volume(&s.source)
            .ok_or_else(|| MethodError::failed("source volume not open"))?;
        // For a snapshot or a clone, the chunks to bring back are taken with the source
        // quiescent (held writes applied, so that every chunk they changed is known), and it
        // stays so until the restore is installed.
        let mut quiet = None;
        let inner: Arc<dyn RestoreSource> = match s.sync_type {
            SyncType::Mirror => {
                let mirror = self.mirror(m)?;
                let target = mirror.target();
                // In-flight target writes finish; the restore fences the target.
                let _t = target.quiesce();
                let _s = source.quiesce();
                mirror.restore_begin();
                mirror
                    .save_bitmaps()
                    .map_err(|e| MethodError::failed(format!("saving the mirror bitmaps: {e}")))?;
                mirror.restore_source()
            }
            SyncType::Snapshot => {
                let snap = self.snapshot(m)?;
                quiet = Some(source.quiesce());
                snap.restore_source()
            }
            SyncType::Clone => {
                let c = self.clone_pair(m)?;
                quiet = Some(source.quiesce());
                if resumed {
                    // What changed since the point in time is not known after a restart.
                    c.mark_origin_dirty(&crate::bitmap::Bitmap::full(source.chunk_count()));
                }
                c.restore_source()
            }
        };
        let src = DurableRestore::open(
            inner,
            &self.path(&format!("sync-{m}.restore")),
            source.chunk_count(),
            source.base().clone(),
        )
        .map_err(|e| MethodError::failed(format!("restore log: {e}")))?;
        {
            let _q = quiet.take().unwrap_or_else(|| source.quiesce());
            source.set_restore(Some(src.clone()));
        }
        self.rt().restore_sources.insert(m, src);
        if let Some(r) = cat.syncs.get_mut(&m) {
            r.restoring = true;
            r.progress = ProgressStatus::Restoring;
        }
        // The restore is recorded before any chunk is brought back.
        self.save(cat);
        Ok(())
    }

    /// The background part of a restore; returns the chunks restored.
    pub(crate) fn run_restore_job(
        &self,
        m: u64,
        generation: u64,
        progress: &dyn Fn(u64, u64),
    ) -> Result<u64, String> {
        let cancel = || self.current_gen(m) != generation || self.is_stopping();
        let (s, src) = {
            let cat = self.cat();
            let s = cat
                .syncs
                .get(&m)
                .cloned()
                .ok_or("the relationship is gone")?;
            (
                s,
                self.rt()
                    .restore_sources
                    .get(&m)
                    .cloned()
                    .ok_or("no restore installed")?,
            )
        };
        let source = self.volume(&s.source).ok_or("source volume not open")?;
        let priority = s.copy_priority;
        let yielding = |done, total| {
            progress(done, total);
            crate::service::copying::yield_to_host(&source, priority);
        };
        let r = crate::volume::run_restore(&source, &*src, &yielding, &cancel)
            .and_then(|n| src.sync().map(|()| n));
        let n = match r {
            Ok(n) => n,
            Err(e) => {
                // The source keeps reading through the restore: nothing is lost, and a
                // restart resumes it. The pair is broken meanwhile.
                if let Some(mirror) = self.rt().mirrors.get(&m).cloned() {
                    mirror.restore_failed();
                }
                return Err(format!("restore failed: {e}"));
            }
        };
        if src.remaining() > 0 {
            return Err(if self.is_stopping() {
                "the server is stopping; the restore resumes at the next start".into()
            } else {
                "the restore was interrupted".into()
            });
        }
        // Complete: the source is itself again.
        match s.sync_type {
            SyncType::Mirror => {
                if let Some(mirror) = self.rt().mirrors.get(&m).cloned() {
                    mirror.restore_done(n);
                    let _ = mirror.save_bitmaps();
                }
            }
            SyncType::Clone => {
                if let Some(c) = self.rt().clones.get(&m).cloned() {
                    c.restored();
                }
            }
            SyncType::Snapshot => {}
        }
        {
            let _q = source.quiesce();
            source.set_restore(None);
        }
        src.remove();
        self.rt().restore_sources.remove(&m);
        let mut cat = self.cat();
        if let Some(r) = cat.syncs.get_mut(&m) {
            r.restoring = false;
            r.last_copy_chunks = n;
            r.synced = Some(now());
            if r.sync_type == SyncType::Clone {
                r.state = CopyState::Synchronized;
            }
            r.progress = ProgressStatus::Completed;
        }
        self.save(&mut cat);
        Ok(n)
    }
}
