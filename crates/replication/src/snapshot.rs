//! Copy-on-write snapshots (SyncType 7), after dm-snapshot: on the first write to a chunk
//! after the cut, the old chunk is saved to the snapshot's store (a sparse file of the
//! origin's size, chunk `c` at offset `c * CHUNK`) and recorded in its log, durably, before
//! the new data reaches the origin. Snapshot reads come from the store for saved chunks and
//! from the origin for the rest. When the pool runs out of space the snapshot becomes Broken
//! and the origin's writes go on unaffected.

use std::sync::{Arc, Mutex, RwLock, Weak};

use blockdev::{BlockDevice, BlockError, BlockErrorKind, DIRECT_ALIGN, Extent};
use bytes::Bytes;

use crate::{
    bitmap::{Bitmap, CHUNK, ChunkLog},
    pool::Pool,
    volume::{Defer, RestoreSource, Volume, Write, WriteHook, read_only},
};

/// Chunks copied with one store write at most (consecutive chunks of a batch).
const RUN: usize = 32;

/// Why a snapshot stopped preserving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Broken {
    /// The pool is full.
    NoSpace,
    /// The store failed.
    Io(String),
}

#[derive(Debug, Default)]
struct State {
    broken: Option<Broken>,
    inactive: bool,
    /// The snapshot itself has been written (Skewed).
    written: bool,
}

/// A snapshot of an origin volume.
#[derive(Debug)]
pub struct Snapshot {
    origin: Weak<Volume>,
    store: Arc<dyn BlockDevice>,
    log: ChunkLog,
    preserved: RwLock<Bitmap>,
    pool: Arc<Pool>,
    state: Mutex<State>,
    size: u64,
    /// Whether hosts may write to the snapshot (it is exported read-write).
    writable: std::sync::atomic::AtomicBool,
}

impl Snapshot {
    /// Create or reopen a snapshot whose store and log are at the given paths. A reopened
    /// snapshot's saved chunks are charged to the pool again.
    pub fn open(
        origin: &Arc<Volume>,
        store: Arc<dyn BlockDevice>,
        log_path: &std::path::Path,
        pool: Arc<Pool>,
        writable: bool,
    ) -> std::io::Result<Arc<Self>> {
        let (log, preserved) = ChunkLog::open(log_path, origin.chunk_count())?;
        pool.reserve(preserved.count() * CHUNK);
        Ok(Arc::new(Self {
            origin: Arc::downgrade(origin),
            store,
            log,
            preserved: RwLock::new(preserved),
            pool,
            state: Mutex::new(State::default()),
            size: origin.size(),
            writable: std::sync::atomic::AtomicBool::new(writable),
        }))
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_preserved(&self, c: u64) -> bool {
        self.preserved
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(c)
    }

    /// Number of chunks saved in the store.
    pub fn preserved_chunks(&self) -> u64 {
        self.preserved
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .count()
    }

    /// Why the snapshot is broken, if it is.
    pub fn broken(&self) -> Option<Broken> {
        self.st().broken.clone()
    }

    /// Whether hosts have written to the snapshot.
    pub fn written(&self) -> bool {
        self.st().written
    }

    /// Whether the snapshot is deactivated.
    pub fn inactive(&self) -> bool {
        self.st().inactive
    }

    /// Allow or refuse host writes (a snapshot exported read-write is writable; a written
    /// snapshot reports Skewed).
    pub fn set_writable(&self, writable: bool) {
        self.writable
            .store(writable, std::sync::atomic::Ordering::Release);
    }

    /// Mark the snapshot broken (e.g. after a restart found its store unusable).
    pub fn set_broken(&self, why: Broken) {
        self.st().broken = Some(why);
    }

    /// Save chunk `c` of the origin. The caller holds the origin's chunk lock exclusively.
    fn preserve(&self, origin: &Volume, c: u64) -> Result<(), Broken> {
        if self.is_preserved(c) {
            return Ok(());
        }
        if !self.pool.reserve(CHUNK) {
            return Err(Broken::NoSpace);
        }
        let mut buf = Vec::new();
        let saved = self
            .copy_run(origin, c, 1, &mut buf)
            .and_then(|()| self.commit(&[c]));
        self.settle(&[c], saved)
    }

    /// Save every chunk of `cs` not saved yet, with one commit for all of them (a batch of
    /// held writes). Each chunk is locked while it is copied; until the commit no write
    /// reaches them (held writes wait for the batch, other writes preserve for themselves).
    /// Consecutive chunks are copied with one store write (`cs` is sorted).
    fn preserve_many(&self, origin: &Volume, cs: &[u64]) -> Result<(), Broken> {
        let mut copied = Vec::with_capacity(cs.len());
        let mut saved = Ok(());
        let mut buf = Vec::new();
        for run in runs(cs) {
            if saved.is_err() {
                break;
            }
            let (first, last) = (run[0], run[run.len() - 1]);
            let _l = origin.lock_chunks(first, last);
            // The chunks of the run that nobody saved meanwhile, as runs again.
            let mut c = first;
            while c <= last && saved.is_ok() {
                if self.is_preserved(c) {
                    c += 1;
                    continue;
                }
                let start = c;
                while c <= last && !self.is_preserved(c) {
                    c += 1;
                }
                saved = self.reserve(start, c - start, &mut copied);
                if saved.is_ok() {
                    saved = self.copy_run(origin, start, c - start, &mut buf);
                }
            }
        }
        if copied.is_empty() {
            return saved;
        }
        let saved = saved.and_then(|()| self.commit(&copied));
        if saved.is_err() {
            return self.settle(&copied, saved);
        }
        // A chunk is marked saved only under its exclusive lock, as `preserve` does: a read
        // that found it unsaved (and reads the origin under the shared lock) ends before the
        // mark, and so before any write that the mark lets through reaches the origin.
        for run in runs(&copied) {
            let _l = origin.lock_chunks(run[0], run[run.len() - 1]);
            self.settle(run, Ok(()))?;
        }
        Ok(())
    }

    /// Charge `n` chunks from `first` to the pool, noting each one charged in `copied`.
    fn reserve(&self, first: u64, n: u64, copied: &mut Vec<u64>) -> Result<(), Broken> {
        for c in first..first + n {
            if !self.pool.reserve(CHUNK) {
                return Err(Broken::NoSpace);
            }
            copied.push(c);
        }
        Ok(())
    }

    /// Copy `n` chunks of the origin from chunk `first` into the store (not yet durable),
    /// through `buf`. The store is written past the page cache: saved chunks are rarely
    /// read, and filling new cache pages costs more than the disk write.
    fn copy_run(
        &self,
        origin: &Volume,
        first: u64,
        n: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), Broken> {
        let io = |e: BlockError| Broken::Io(e.to_string());
        let off = first * CHUNK;
        let len = (n * CHUNK).min(self.size - off) as usize;
        if buf.len() < len + DIRECT_ALIGN {
            buf.resize(len + DIRECT_ALIGN, 0);
        }
        let at = buf.as_ptr().align_offset(DIRECT_ALIGN);
        let data = &mut buf[at..at + len];
        origin.base().read_at(data, off).map_err(io)?;
        self.store.write_uncached_at(data, off).map_err(io)
    }

    /// Make copied chunks durable: the saved data, then their records, before the origin
    /// changes. Concurrent commits share the syncs.
    fn commit(&self, cs: &[u64]) -> Result<(), Broken> {
        let io = |e: std::io::Error| Broken::Io(e.to_string());
        let g = self.log.append(cs).map_err(io)?;
        self.log
            .sync(g, &|| self.store.flush().map_err(std::io::Error::other))
            .map_err(io)
    }

    /// Mark committed chunks saved, or give their space back. A chunk saved twice (by two
    /// writers at once) is charged once.
    fn settle(&self, cs: &[u64], saved: Result<(), Broken>) -> Result<(), Broken> {
        if saved.is_err() {
            self.pool.release(CHUNK * cs.len() as u64);
            return saved;
        }
        let mut p = self
            .preserved
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for &c in cs {
            if p.get(c) {
                self.pool.release(CHUNK);
            } else {
                p.set(c);
            }
        }
        Ok(())
    }

    /// Take a new point in time: forget every saved chunk (the origin must be quiescent).
    pub fn retake(&self) -> std::io::Result<()> {
        let mut p = self
            .preserved
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.pool.release(p.count() * CHUNK);
        p.clear_all();
        self.log.rewrite(&p)?;
        let _ = self.store.discard(0, self.size);
        let mut st = self.st();
        st.broken = None;
        st.written = false;
        st.inactive = false;
        Ok(())
    }

    /// Deactivate: stop preserving and drop what was saved (SMI-S Deactivate discards the
    /// snapshot's data).
    pub fn deactivate(&self) -> std::io::Result<()> {
        self.retake()?;
        self.st().inactive = true;
        Ok(())
    }

    /// Delete the snapshot's files and return its space.
    pub fn destroy(&self, store_path: &std::path::Path) {
        let p = self
            .preserved
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.pool.release(p.count() * CHUNK);
        self.log.remove();
        let _ = std::fs::remove_file(store_path);
    }

    /// A restore source bringing the origin back to this snapshot: the saved chunks are
    /// exactly those changed since the cut.
    pub fn restore_source(self: &Arc<Self>) -> Arc<dyn RestoreSource> {
        let pending = self
            .preserved
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Arc::new(crate::volume::DeviceRestore::new(
            self.store.clone(),
            pending,
        ))
    }

    /// The snapshot as a block device.
    pub fn view(self: &Arc<Self>) -> Arc<dyn BlockDevice> {
        Arc::new(SnapshotView { snap: self.clone() })
    }
}

/// Sorted chunk numbers as runs of consecutive chunks, at most `RUN` chunks each.
fn runs(cs: &[u64]) -> impl Iterator<Item = &[u64]> {
    let mut rest = cs;
    std::iter::from_fn(move || {
        let first = *rest.first()?;
        let n = rest
            .iter()
            .take(RUN)
            .enumerate()
            .take_while(|&(k, &c)| c == first + k as u64)
            .count();
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

impl WriteHook for Snapshot {
    fn prepare(&self, vol: &Volume, w: &Write<'_>) -> blockdev::Result<()> {
        {
            let st = self.st();
            if st.broken.is_some() || st.inactive {
                return Ok(());
            }
        }
        for c in w.chunks() {
            if self.is_preserved(c) {
                continue;
            }
            let _l = (!w.locked).then(|| vol.lock_chunks(c, c));
            if let Err(e) = self.preserve(vol, c) {
                tracing::warn!(origin = %vol.name, error = ?e, "snapshot broken");
                self.st().broken = Some(e);
                return Ok(());
            }
        }
        Ok(())
    }

    fn prepare_nowait(&self, _vol: &Volume, w: &Write<'_>) -> bool {
        // Nothing to do when every chunk was preserved already (or the snapshot is idle).
        {
            let st = self.st();
            if st.broken.is_some() || st.inactive {
                return true;
            }
        }
        w.chunks().all(|c| self.is_preserved(c))
    }

    fn start_nowait(&self, _vol: &Volume, _w: &Write<'_>) -> Option<bool> {
        None
    }

    fn defer(&self, _vol: &Volume, w: &Write<'_>) -> Defer {
        // A first write to a chunk is held, so that its copy-on-write commit is shared with
        // every other first write held meanwhile.
        if self.prepare_nowait(_vol, w) {
            Defer::Allow
        } else {
            Defer::Want
        }
    }

    fn prepare_batch(&self, vol: &Volume, writes: &[Write<'_>]) {
        {
            let st = self.st();
            if st.broken.is_some() || st.inactive {
                return;
            }
        }
        let mut cs: Vec<u64> = writes
            .iter()
            .flat_map(Write::chunks)
            .filter(|&c| !self.is_preserved(c))
            .collect();
        cs.sort_unstable();
        cs.dedup();
        if let Err(e) = self.preserve_many(vol, &cs) {
            tracing::warn!(origin = %vol.name, error = ?e, "snapshot broken");
            self.st().broken = Some(e);
        }
    }

    fn flush(&self) -> blockdev::Result<()> {
        Ok(())
    }
}

/// A snapshot seen as a block device.
#[derive(Debug)]
struct SnapshotView {
    snap: Arc<Snapshot>,
}

impl SnapshotView {
    fn origin(&self) -> blockdev::Result<Arc<Volume>> {
        self.snap
            .origin
            .upgrade()
            .ok_or_else(|| BlockError::new(BlockErrorKind::Io, "snapshot origin is gone"))
    }
}

impl BlockDevice for SnapshotView {
    fn size(&self) -> u64 {
        self.snap.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> blockdev::Result<()> {
        blockdev::check_range(self.snap.size, offset, buf.len() as u64)?;
        if self.snap.broken().is_some() {
            return Err(BlockError::new(BlockErrorKind::Io, "snapshot is broken"));
        }
        let origin = self.origin()?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let c = pos / CHUNK;
            let n = (CHUNK - pos % CHUNK).min((buf.len() - done) as u64) as usize;
            let part = &mut buf[done..done + n];
            // Shared: a copy-on-write of this chunk cannot interleave with the read.
            let _l = origin.lock_chunks_shared(c, c);
            if self.snap.is_preserved(c) {
                self.snap.store.read_at(part, pos)?;
            } else {
                origin.base().read_at(part, pos)?;
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, bufs: &[Bytes], offset: u64, fua: bool) -> blockdev::Result<()> {
        if !self
            .snap
            .writable
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(read_only("snapshot is read-only"));
        }
        let len = blockdev::total_len(bufs);
        blockdev::check_range(self.snap.size, offset, len)?;
        let origin = self.origin()?;
        let range = crate::bitmap::chunks(offset, len);
        let _l = origin.lock_chunks(*range.start(), *range.end());
        for c in range {
            self.snap.preserve(&origin, c).map_err(|e| {
                self.snap.st().broken = Some(e.clone());
                BlockError::new(BlockErrorKind::NoSpace, format!("{e:?}"))
            })?;
        }
        self.snap.st().written = true;
        self.snap.store.write_at(bufs, offset, fua)
    }

    fn flush(&self) -> blockdev::Result<()> {
        self.snap.store.flush()
    }

    fn discard(&self, offset: u64, len: u64) -> blockdev::Result<()> {
        self.write_zeroes(offset, len, false)
    }

    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> blockdev::Result<()> {
        let zero = Bytes::from(vec![0u8; len as usize]);
        self.write_at(&[zero], offset, fua)
    }

    fn allocation(&self, offset: u64, len: u64) -> blockdev::Result<Vec<Extent>> {
        Ok(vec![Extent {
            offset,
            len,
            allocated: true,
        }])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_split_at_gaps_and_at_the_run_limit() {
        let cs: Vec<u64> = [1, 2, 3, 7, 9, 10]
            .into_iter()
            .chain(100..100 + super::RUN as u64 + 2)
            .collect();
        let runs: Vec<(u64, usize)> = super::runs(&cs).map(|r| (r[0], r.len())).collect();
        assert_eq!(
            runs,
            vec![
                (1, 3),
                (7, 1),
                (9, 2),
                (100, super::RUN),
                (100 + super::RUN as u64, 2)
            ]
        );
        assert_eq!(super::runs(&[]).count(), 0);
    }
}
