//! Clones (SyncType 8): a full, independent copy made by a background copy while the origin
//! stays online. Until a chunk has been copied, the first origin write to it copies the old
//! data into the clone first (copy-before-write), so the clone is the point in time of its
//! creation. Copied chunks are recorded durably before an origin write relies on them.
//! Once complete (Synchronized) the clone tracks origin changes so that Resync (a new point
//! in time) and Restore copy only the changed chunks; Detach makes it independent.

use std::sync::{Arc, Mutex, RwLock, Weak};

use blockdev::{BlockDevice, BlockError, BlockErrorKind, Extent};
use bytes::{Bytes, BytesMut};

use crate::{
    bitmap::{Bitmap, CHUNK, ChunkLog},
    volume::{RestoreSource, Volume, Write, WriteHook},
};

/// Where a clone is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Copying (or paused) toward a complete point-in-time copy.
    Copying,
    /// Copy stopped by Abort: the clone is incomplete.
    Aborted,
    /// Complete: a full copy of the point in time.
    Complete,
    /// A write to the clone or the copy failed.
    Broken,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Origin chunks changed since the point in time (after completion).
    origin_dirty: Bitmap,
    /// Clone chunks written by hosts.
    clone_dirty: Bitmap,
    /// Copied chunks not yet durable in the log.
    unsynced: usize,
}

/// A clone of an origin volume into a target device.
#[derive(Debug)]
pub struct Clone {
    origin: Weak<Volume>,
    target: Arc<dyn BlockDevice>,
    log: ChunkLog,
    copied: RwLock<Bitmap>,
    state: Mutex<State>,
    size: u64,
    /// Detached: the target is an independent volume; its view no longer looks at the
    /// origin.
    detached: std::sync::atomic::AtomicBool,
}

/// Copied chunks made durable together by the background copy.
const SYNC_EVERY: usize = 64;

impl Clone {
    /// Create or reopen a clone; `complete` tells a reopened clone it had finished.
    pub fn open(
        origin: &Arc<Volume>,
        target: Arc<dyn BlockDevice>,
        log_path: &std::path::Path,
        complete: bool,
    ) -> std::io::Result<Arc<Self>> {
        let n = origin.chunk_count();
        let (log, copied) = ChunkLog::open(log_path, n)?;
        let phase = if complete {
            Phase::Complete
        } else {
            Phase::Copying
        };
        Ok(Arc::new(Self {
            origin: Arc::downgrade(origin),
            target,
            log,
            copied: RwLock::new(copied),
            state: Mutex::new(State {
                phase,
                origin_dirty: Bitmap::new(n),
                clone_dirty: Bitmap::new(n),
                unsynced: 0,
            }),
            size: origin.size(),
            detached: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_copied(&self, c: u64) -> bool {
        self.copied
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(c)
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.st().phase
    }

    /// (copied, total) chunks.
    pub fn progress(&self) -> (u64, u64) {
        let c = self
            .copied
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (c.count(), c.len())
    }

    /// Whether hosts wrote to the clone.
    pub fn written(&self) -> bool {
        !self.st().clone_dirty.is_empty()
    }

    /// Origin chunks changed since the point in time (complete clones).
    pub fn origin_dirty(&self) -> Bitmap {
        self.st().origin_dirty.clone()
    }

    /// Mark origin chunks dirty (recovery after a crash).
    pub fn mark_origin_dirty(&self, b: &Bitmap) {
        self.st().origin_dirty.union(b);
    }

    /// The target device (for Detach).
    pub fn target(&self) -> &Arc<dyn BlockDevice> {
        &self.target
    }

    fn chunk_len(&self, c: u64) -> usize {
        CHUNK.min(self.size - c * CHUNK) as usize
    }

    /// Copy chunk `c` from the origin's storage into the clone (chunk lock held by caller).
    fn copy_chunk(&self, origin: &Volume, c: u64) -> blockdev::Result<bool> {
        if self.is_copied(c) {
            return Ok(false);
        }
        let mut buf = BytesMut::zeroed(self.chunk_len(c));
        origin.base().read_at(&mut buf, c * CHUNK)?;
        self.target.write_at(&[buf.freeze()], c * CHUNK, false)?;
        self.log
            .append(&[c])
            .map_err(|e| BlockError::io(e, "clone log"))?;
        self.copied
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .set(c);
        self.st().unsynced += 1;
        Ok(true)
    }

    /// Make every copied chunk durable (target data, then the log).
    pub fn sync(&self) -> blockdev::Result<()> {
        let g = self.log.appended();
        self.log
            .sync(g, &|| self.target.flush().map_err(std::io::Error::other))
            .map_err(|e| BlockError::io(e, "clone log sync"))?;
        self.st().unsynced = 0;
        Ok(())
    }

    /// Run the background copy until complete, paused or aborted. `progress` gets
    /// (copied, total); `cancel` stops early. Returns the chunks copied by this run.
    pub fn run_copy(
        &self,
        progress: &dyn Fn(u64, u64),
        cancel: &dyn Fn() -> bool,
    ) -> blockdev::Result<u64> {
        let origin = self
            .origin
            .upgrade()
            .ok_or_else(|| BlockError::new(BlockErrorKind::Io, "clone origin is gone"))?;
        let total = origin.chunk_count();
        let mut copied = 0u64;
        let mut since_sync = 0;
        let mut c = 0;
        loop {
            let next = {
                let b = self
                    .copied
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                (c..total).find(|&x| !b.get(x))
            };
            let Some(n) = next else { break };
            if cancel() || self.phase() != Phase::Copying {
                self.sync()?;
                return Ok(copied);
            }
            {
                let _l = origin.lock_chunks(n, n);
                if self.copy_chunk(&origin, n)? {
                    copied += 1;
                    since_sync += 1;
                }
            }
            if since_sync >= SYNC_EVERY {
                self.sync()?;
                since_sync = 0;
            }
            progress(self.progress().0, total);
            c = n + 1;
        }
        self.sync()?;
        let mut st = self.st();
        if st.phase == Phase::Copying {
            st.phase = Phase::Complete;
        }
        Ok(copied)
    }

    /// Stop the copy (Abort).
    pub fn abort(&self) {
        self.st().phase = Phase::Aborted;
    }

    /// Take a new point in time: chunks changed on either side since the last one are to be
    /// copied again (the origin must be quiescent). Returns how many.
    pub fn retake(&self) -> std::io::Result<u64> {
        let mut st = self.st();
        let mut stale = st.origin_dirty.clone();
        stale.union(&st.clone_dirty);
        let mut copied = self
            .copied
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if st.phase != Phase::Complete {
            // An incomplete clone restarts from scratch.
            stale = Bitmap::full(copied.len());
        }
        for c in stale.iter() {
            copied.clear(c);
        }
        self.log.rewrite(&copied)?;
        st.origin_dirty.clear_all();
        st.clone_dirty.clear_all();
        st.phase = Phase::Copying;
        Ok(stale.count())
    }

    /// A restore source copying the clone back over the origin's changed chunks.
    pub fn restore_source(self: &Arc<Self>) -> Arc<dyn RestoreSource> {
        let mut pending = {
            let st = self.st();
            let mut p = st.origin_dirty.clone();
            p.union(&st.clone_dirty);
            p
        };
        // Never restore a chunk the clone does not hold.
        let copied = self
            .copied
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for c in pending.clone().iter() {
            if !copied.get(c) {
                pending.clear(c);
            }
        }
        Arc::new(crate::volume::DeviceRestore::new(
            self.target.clone(),
            pending,
        ))
    }

    /// After a restore: origin and clone are equal again.
    pub fn restored(&self) {
        let mut st = self.st();
        st.origin_dirty.clear_all();
        st.clone_dirty.clear_all();
    }

    /// The clone as a block device.
    pub fn view(self: &Arc<Self>) -> Arc<dyn BlockDevice> {
        Arc::new(CloneView {
            clone: self.clone(),
        })
    }

    /// Delete the log (Detach keeps the target data).
    pub fn forget(&self) {
        self.log.remove();
    }

    /// Detach: the target becomes independent (chunks never copied read as the target
    /// holds them), and the log is deleted.
    pub fn detach(&self) {
        self.detached
            .store(true, std::sync::atomic::Ordering::Release);
        self.forget();
    }

    fn is_detached(&self) -> bool {
        self.detached.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl WriteHook for Clone {
    fn prepare(&self, vol: &Volume, w: &Write<'_>) -> blockdev::Result<()> {
        match self.phase() {
            Phase::Copying => {
                // The origin changes after the point in time: a later Resync or Restore
                // must know.
                let mut st = self.st();
                for c in w.chunks() {
                    st.origin_dirty.set(c);
                }
            }
            Phase::Complete => {
                let mut st = self.st();
                for c in w.chunks() {
                    st.origin_dirty.set(c);
                }
                return Ok(());
            }
            Phase::Aborted | Phase::Broken => return Ok(()),
        }
        let mut need_sync = self.st().unsynced > 0;
        for c in w.chunks() {
            if self.is_copied(c) {
                continue;
            }
            let _l = (!w.locked).then(|| vol.lock_chunks(c, c));
            match self.copy_chunk(vol, c) {
                Ok(_) => need_sync = true,
                Err(e) => {
                    tracing::warn!(origin = %vol.name, error = %e, "clone broken");
                    self.st().phase = Phase::Broken;
                    return Ok(());
                }
            }
        }
        // Copied chunks the origin write now overwrites must be durable first.
        if need_sync && let Err(e) = self.sync() {
            tracing::warn!(origin = %vol.name, error = %e, "clone broken");
            self.st().phase = Phase::Broken;
        }
        Ok(())
    }
}

/// A clone seen as a block device: copied chunks from the clone, the rest from the origin
/// (unchanged since the point in time, or it would have been copied).
#[derive(Debug)]
struct CloneView {
    clone: Arc<Clone>,
}

impl BlockDevice for CloneView {
    fn size(&self) -> u64 {
        self.clone.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> blockdev::Result<()> {
        blockdev::check_range(self.clone.size, offset, buf.len() as u64)?;
        let origin = self.clone.origin.upgrade();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let c = pos / CHUNK;
            let n = (CHUNK - pos % CHUNK).min((buf.len() - done) as u64) as usize;
            let part = &mut buf[done..done + n];
            match &origin {
                Some(o) if self.clone.phase() != Phase::Complete && !self.clone.is_detached() => {
                    let _l = o.lock_chunks_shared(c, c);
                    if self.clone.is_copied(c) {
                        self.clone.target.read_at(part, pos)?;
                    } else {
                        o.base().read_at(part, pos)?;
                    }
                }
                _ => self.clone.target.read_at(part, pos)?,
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, bufs: &[Bytes], offset: u64, fua: bool) -> blockdev::Result<()> {
        let len = blockdev::total_len(bufs);
        blockdev::check_range(self.clone.size, offset, len)?;
        let range = crate::bitmap::chunks(offset, len);
        if self.clone.phase() != Phase::Complete && !self.clone.is_detached() {
            let origin = self
                .clone
                .origin
                .upgrade()
                .ok_or_else(|| BlockError::new(BlockErrorKind::Io, "clone origin is gone"))?;
            let _l = origin.lock_chunks(*range.start(), *range.end());
            for c in range.clone() {
                self.clone.copy_chunk(&origin, c)?;
            }
            self.clone.sync()?;
        }
        {
            let mut st = self.clone.st();
            for c in range {
                st.clone_dirty.set(c);
            }
        }
        self.clone.target.write_at(bufs, offset, fua)
    }

    fn flush(&self) -> blockdev::Result<()> {
        self.clone.target.flush()
    }

    fn discard(&self, offset: u64, len: u64) -> blockdev::Result<()> {
        self.write_zeroes(offset, len, false)
    }

    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> blockdev::Result<()> {
        self.write_at(&[Bytes::from(vec![0u8; len as usize])], offset, fua)
    }

    fn allocation(&self, offset: u64, len: u64) -> blockdev::Result<Vec<Extent>> {
        Ok(vec![Extent {
            offset,
            len,
            allocated: true,
        }])
    }
}
