//! Copy-on-write snapshots (SyncType 7), after dm-snapshot: on the first write to a block
//! after the cut, the old block is saved to the snapshot's store and recorded in its map,
//! durably, before the new data reaches the origin. Saved blocks are appended to the store
//! one after the other ([`crate::snapmap`]), so that a batch of scattered first writes is
//! saved with sequential store writes. Snapshot reads come from the store for saved blocks
//! and from the origin for the rest. When the pool runs out of space the snapshot becomes
//! Broken and the origin's writes go on unaffected.

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use blockdev::{BlockDevice, BlockError, BlockErrorKind, DIRECT_ALIGN, Extent};
use bytes::Bytes;

use crate::{
    bitmap::CHUNK,
    pool::Pool,
    snapmap::{MapLog, Slot, SlotMap},
    volume::{Defer, DeviceRestore, RestoreSource, Volume, Write, WriteHook, read_only},
};

/// Bytes of consecutive blocks copied with one store write at most.
const RUN_BYTES: u64 = 2 << 20;

/// Runs at least this long are written past the page cache (saved blocks are rarely read);
/// shorter ones go through it, and the commit's fdatasync writes them out together.
const DIRECT_MIN: usize = 64 << 10;

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
    log: MapLog,
    map: RwLock<SlotMap>,
    pool: Arc<Pool>,
    state: Mutex<State>,
    size: u64,
    /// Whether hosts may write to the snapshot (it is exported read-write).
    writable: std::sync::atomic::AtomicBool,
}

/// A piece of a read or write within one chunk: `len` bytes at `at` in the caller's
/// buffer, in the store at `store` when saved, else at the same offset in the origin.
#[derive(Debug)]
struct Piece {
    at: usize,
    len: usize,
    store: Option<u64>,
}

impl Snapshot {
    /// Create or reopen a snapshot whose store and map are at the given paths (the map is
    /// `log_path` with the extension `map`; an earlier version's chunk log at `log_path` is
    /// converted). A reopened snapshot's saved blocks are charged to the pool again. The
    /// store must be [`crate::snapmap::store_size`] of the origin's size.
    pub fn open(
        origin: &Arc<Volume>,
        store: Arc<dyn BlockDevice>,
        log_path: &std::path::Path,
        pool: Arc<Pool>,
        writable: bool,
    ) -> std::io::Result<Arc<Self>> {
        let size = origin.size();
        if store.size() < crate::snapmap::store_size(size) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "the snapshot store holds {} bytes, {} needed",
                    store.size(),
                    crate::snapmap::store_size(size)
                ),
            ));
        }
        let (log, map) = MapLog::open(&log_path.with_extension("map"), log_path, size)?;
        pool.reserve(map.saved() * map.block());
        Ok(Arc::new(Self {
            origin: Arc::downgrade(origin),
            store,
            log,
            map: RwLock::new(map),
            pool,
            state: Mutex::new(State::default()),
            size,
            writable: std::sync::atomic::AtomicBool::new(writable),
        }))
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn map(&self) -> RwLockReadGuard<'_, SlotMap> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn map_mut(&self) -> RwLockWriteGuard<'_, SlotMap> {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Number of origin blocks saved in the store.
    pub fn saved_blocks(&self) -> u64 {
        self.map().saved()
    }

    /// The snapshot's block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.map().block()
    }

    /// The blocks of `[offset, offset + len)` not saved yet.
    fn unsaved(&self, offset: u64, len: u64) -> Vec<u64> {
        let m = self.map();
        let (first, last) = blocks(offset, len, m.block());
        (first..=last)
            .filter(|&b| !matches!(m.get(b), Slot::Saved(_)))
            .collect()
    }

    /// Whether every block of `[offset, offset + len)` is saved.
    fn all_saved(&self, offset: u64, len: u64) -> bool {
        let m = self.map();
        let (first, last) = blocks(offset, len, m.block());
        (first..=last).all(|b| matches!(m.get(b), Slot::Saved(_)))
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

    /// Whether the snapshot saves nothing (broken or deactivated).
    fn idle(&self) -> bool {
        let st = self.st();
        st.broken.is_some() || st.inactive
    }

    /// Save the origin blocks `bs` (sorted, distinct) that are not saved yet, with one
    /// commit for all of them. Each run of consecutive blocks is copied into new slots under
    /// its chunks' exclusive lock (`locked`: the caller holds every one of them already),
    /// so no write reaches a block while it is copied: held writes wait for the batch,
    /// others save for themselves. A block another saver copied but has not committed yet
    /// is committed here too (its data is in the store, its record may be written twice).
    fn save(&self, origin: &Volume, bs: &[u64], locked: bool) -> Result<(), Broken> {
        let block = self.block_size();
        let per_run = (RUN_BYTES / block) as usize;
        let mut commit = Vec::new();
        let mut mine = Vec::new();
        let mut buf = Vec::new();
        let mut saved = Ok(());
        for run in runs(bs, per_run) {
            let _l = (!locked).then(|| lock_blocks(origin, run, block));
            saved = self.copy_run(origin, run, &mut commit, &mut mine, &mut buf);
            if saved.is_err() {
                break;
            }
        }
        if saved.is_ok() && !commit.is_empty() {
            saved = self.commit(&commit);
        }
        if let Err(e) = saved {
            // A block of ours that another saver committed meanwhile stays saved, and
            // charged.
            let mut m = self.map_mut();
            let forgotten = mine.iter().filter(|&&b| m.forget(b)).count();
            self.pool.release(forgotten as u64 * block);
            return Err(e);
        }
        // A block is marked saved only under its exclusive lock: a read that found it
        // unsaved (and reads the origin under the shared lock) ends before the mark, and so
        // before any write that the mark lets through reaches the origin.
        commit.sort_unstable();
        let done: Vec<u64> = commit.iter().map(|&(b, _)| b).collect();
        let mut at = 0;
        for run in runs(&done, per_run) {
            let _l = (!locked).then(|| lock_blocks(origin, run, block));
            let mut m = self.map_mut();
            for &(b, slot) in &commit[at..at + run.len()] {
                m.save(b, slot);
            }
            at += run.len();
        }
        Ok(())
    }

    /// Copy the blocks of `run` that nobody saved into new slots (the caller holds the run's
    /// chunk locks); note what must be committed in `commit` and the blocks this call
    /// allocated in `mine`.
    fn copy_run(
        &self,
        origin: &Volume,
        run: &[u64],
        commit: &mut Vec<(u64, u64)>,
        mine: &mut Vec<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<(), Broken> {
        // (first block, count, first slot) of each sub-run this call allocated.
        let mut copies: Vec<(u64, u64, u64)> = Vec::new();
        let mut m = self.map_mut();
        let block = m.block();
        let mut i = 0;
        let mut allocated = Ok(());
        while i < run.len() {
            match m.get(run[i]) {
                Slot::Saved(_) => i += 1,
                Slot::Pending(slot) => {
                    commit.push((run[i], slot));
                    i += 1;
                }
                Slot::Free => {
                    let first = run[i];
                    let mut n = 1;
                    while i + n < run.len() && m.get(run[i + n]) == Slot::Free {
                        n += 1;
                    }
                    if !self.pool.reserve(n as u64 * block) {
                        allocated = Err(Broken::NoSpace);
                        break;
                    }
                    let Some(slot) = m.alloc(first, n as u64) else {
                        self.pool.release(n as u64 * block);
                        allocated = Err(Broken::Io("the snapshot store is full".into()));
                        break;
                    };
                    copies.push((first, n as u64, slot));
                    i += n;
                }
            }
        }
        drop(m);
        let mut copied = allocated;
        for &(first, n, slot) in &copies {
            copied = copied.and_then(|()| self.copy(origin, block, (first, n, slot), buf));
        }
        if copied.is_err() {
            // Still under the lock: nobody saw a pending block of this run without its data.
            let mut m = self.map_mut();
            for &(first, n, _) in &copies {
                for b in first..first + n {
                    m.forget(b);
                }
                self.pool.release(n * block);
            }
            return copied;
        }
        for (first, n, slot) in copies {
            for k in 0..n {
                commit.push((first + k, slot + k));
                mine.push(first + k);
            }
        }
        Ok(())
    }

    /// Copy `n` origin blocks of `block` bytes from `first` into the store from `slot`
    /// (not yet durable). A block past the origin's end is padded with zeroes. A long run
    /// goes through `buf`, aligned for `O_DIRECT`; a short one is read straight into the
    /// buffer the store write takes.
    fn copy(
        &self,
        origin: &Volume,
        block: u64,
        (first, n, slot): (u64, u64, u64),
        buf: &mut Vec<u8>,
    ) -> Result<(), Broken> {
        let io = |e: BlockError| Broken::Io(e.to_string());
        let off = first * block;
        let len = (n * block) as usize;
        let valid = (len as u64).min(self.size - off) as usize;
        if len < DIRECT_MIN {
            let mut data = vec![0u8; len];
            origin.base().read_at(&mut data[..valid], off).map_err(io)?;
            return self
                .store
                .write_at(&[Bytes::from(data)], slot * block, false)
                .map_err(io);
        }
        if buf.len() < len + DIRECT_ALIGN {
            buf.resize(len + DIRECT_ALIGN, 0);
        }
        let at = buf.as_ptr().align_offset(DIRECT_ALIGN);
        let data = &mut buf[at..at + len];
        origin.base().read_at(&mut data[..valid], off).map_err(io)?;
        data[valid..].fill(0);
        self.store.write_uncached_at(data, slot * block).map_err(io)
    }

    /// Make copied blocks durable: the saved data first, then their records, so that no
    /// record can outlive the data it names; the origin changes after that. Concurrent
    /// commits share the log's sync.
    fn commit(&self, saved: &[(u64, u64)]) -> Result<(), Broken> {
        let io = |e: std::io::Error| Broken::Io(e.to_string());
        self.store.flush().map_err(|e| Broken::Io(e.to_string()))?;
        let g = self.log.append(saved).map_err(io)?;
        self.log.sync(g).map_err(io)
    }

    /// Save the blocks of `[offset, offset + len)` (the caller holds their chunks
    /// exclusively).
    fn save_range(&self, origin: &Volume, offset: u64, len: u64) -> Result<(), Broken> {
        let bs = self.unsaved(offset, len);
        if bs.is_empty() {
            return Ok(());
        }
        self.save(origin, &bs, true)
    }

    /// Where the bytes `[pos, pos + len)` of one chunk are: the store for saved blocks, the
    /// origin for the rest, in pieces that each take one I/O.
    fn pieces(&self, pos: u64, len: usize) -> Vec<Piece> {
        let m = self.map();
        let block = m.block();
        let mut out: Vec<Piece> = Vec::new();
        let mut done = 0usize;
        while done < len {
            let p = pos + done as u64;
            let b = p / block;
            let n = ((block - p % block) as usize).min(len - done);
            let store = match m.get(b) {
                Slot::Saved(slot) => Some(slot * block + p % block),
                _ => None,
            };
            match out.last_mut() {
                Some(last)
                    if match (last.store, store) {
                        (None, None) => true,
                        (Some(a), Some(s)) => a + last.len as u64 == s,
                        _ => false,
                    } =>
                {
                    last.len += n;
                }
                _ => out.push(Piece {
                    at: done,
                    len: n,
                    store,
                }),
            }
            done += n;
        }
        out
    }

    /// Read the point in time at `pos` (within one chunk, whose lock the caller holds).
    fn read_chunk_part(&self, origin: &Volume, buf: &mut [u8], pos: u64) -> blockdev::Result<()> {
        for p in self.pieces(pos, buf.len()) {
            let part = &mut buf[p.at..p.at + p.len];
            match p.store {
                Some(at) => self.store.read_at(part, at)?,
                None => origin.base().read_at(part, pos + p.at as u64)?,
            }
        }
        Ok(())
    }

    /// Where the origin byte at `offset` is saved in the store, if it is.
    #[cfg(test)]
    pub(crate) fn store_offset(&self, offset: u64) -> Option<u64> {
        self.pieces(offset, 1).first().and_then(|p| p.store)
    }

    /// Take a new point in time: forget every saved block (the origin must be quiescent).
    pub fn retake(&self) -> std::io::Result<()> {
        let mut m = self.map_mut();
        self.pool.release(m.saved() * m.block());
        *m = self.log.reset(self.size)?;
        let _ = self.store.discard(0, self.store.size());
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
        let m = self.map();
        self.pool.release(m.saved() * m.block());
        self.log.remove();
        let _ = std::fs::remove_file(store_path);
    }

    /// A restore source bringing the origin back to this snapshot: the chunks holding saved
    /// blocks are exactly those changed since the cut; each is read as the snapshot sees it.
    pub fn restore_source(self: &Arc<Self>) -> Arc<dyn RestoreSource> {
        let chunks = self.size.div_ceil(CHUNK);
        let pending = self.map().saved_chunks(chunks);
        let snap = self.clone();
        Arc::new(DeviceRestore::reading(
            Box::new(move |buf, off| {
                let origin = snap.origin()?;
                snap.read_chunk_part(&origin, buf, off)
            }),
            pending,
        ))
    }

    fn origin(&self) -> blockdev::Result<Arc<Volume>> {
        self.origin
            .upgrade()
            .ok_or_else(|| BlockError::new(BlockErrorKind::Io, "snapshot origin is gone"))
    }

    /// The snapshot as a block device.
    pub fn view(self: &Arc<Self>) -> Arc<dyn BlockDevice> {
        Arc::new(SnapshotView { snap: self.clone() })
    }
}

/// The first and last blocks of `[offset, offset + len)`.
fn blocks(offset: u64, len: u64, block: u64) -> (u64, u64) {
    (offset / block, (offset + len.max(1) - 1) / block)
}

/// Lock the chunks of a run of blocks exclusively.
fn lock_blocks<'a>(
    origin: &'a Volume,
    run: &[u64],
    block: u64,
) -> crate::locks::ExclusiveChunks<'a> {
    let (first, last) = (run[0], run[run.len() - 1]);
    origin.lock_chunks(first * block / CHUNK, last * block / CHUNK)
}

/// Sorted block numbers as runs of consecutive blocks, at most `max` blocks each.
fn runs(bs: &[u64], max: usize) -> impl Iterator<Item = &[u64]> {
    let mut rest = bs;
    std::iter::from_fn(move || {
        let first = *rest.first()?;
        let n = rest
            .iter()
            .take(max.max(1))
            .enumerate()
            .take_while(|&(k, &b)| b == first + k as u64)
            .count();
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

impl WriteHook for Snapshot {
    fn prepare(&self, vol: &Volume, w: &Write<'_>) -> blockdev::Result<()> {
        if self.idle() {
            return Ok(());
        }
        let bs = self.unsaved(w.offset, w.len);
        if bs.is_empty() {
            return Ok(());
        }
        let range = w.chunks();
        let _l = (!w.locked).then(|| vol.lock_chunks(*range.start(), *range.end()));
        if let Err(e) = self.save(vol, &bs, true) {
            tracing::warn!(origin = %vol.name, error = ?e, "snapshot broken");
            self.st().broken = Some(e);
        }
        Ok(())
    }

    fn prepare_nowait(&self, _vol: &Volume, w: &Write<'_>) -> bool {
        // Nothing to do when every block was saved already (or the snapshot is idle).
        self.idle() || self.all_saved(w.offset, w.len)
    }

    fn start_nowait(&self, _vol: &Volume, _w: &Write<'_>) -> Option<bool> {
        None
    }

    fn defer(&self, vol: &Volume, w: &Write<'_>) -> Defer {
        // A first write to a block is held, so that its copy-on-write commit is shared with
        // every other first write held meanwhile.
        if self.prepare_nowait(vol, w) {
            Defer::Allow
        } else {
            Defer::Want
        }
    }

    fn prepare_batch(&self, vol: &Volume, writes: &[Write<'_>]) {
        if self.idle() {
            return;
        }
        let mut bs: Vec<u64> = writes
            .iter()
            .flat_map(|w| self.unsaved(w.offset, w.len))
            .collect();
        bs.sort_unstable();
        bs.dedup();
        if let Err(e) = self.save(vol, &bs, false) {
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

impl BlockDevice for SnapshotView {
    fn size(&self) -> u64 {
        self.snap.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> blockdev::Result<()> {
        blockdev::check_range(self.snap.size, offset, buf.len() as u64)?;
        if self.snap.broken().is_some() {
            return Err(BlockError::new(BlockErrorKind::Io, "snapshot is broken"));
        }
        let origin = self.snap.origin()?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let c = pos / CHUNK;
            let n = (CHUNK - pos % CHUNK).min((buf.len() - done) as u64) as usize;
            // Shared: a copy-on-write of this chunk cannot interleave with the read.
            let _l = origin.lock_chunks_shared(c, c);
            self.snap
                .read_chunk_part(&origin, &mut buf[done..done + n], pos)?;
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
        let origin = self.snap.origin()?;
        let range = crate::bitmap::chunks(offset, len);
        let _l = origin.lock_chunks(*range.start(), *range.end());
        self.snap.save_range(&origin, offset, len).map_err(|e| {
            self.snap.st().broken = Some(e.clone());
            BlockError::new(BlockErrorKind::NoSpace, format!("{e:?}"))
        })?;
        self.snap.st().written = true;
        // Every block is saved now: the data goes to their slots.
        for p in self.snap.pieces(offset, len as usize) {
            let Some(at) = p.store else {
                return Err(BlockError::new(
                    BlockErrorKind::Io,
                    "a saved block has no slot",
                ));
            };
            self.snap
                .store
                .write_at(&slice(bufs, p.at, p.len), at, fua)?;
        }
        Ok(())
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

/// Bytes `[at, at + len)` of the concatenation of `bufs`, without copying.
fn slice(bufs: &[Bytes], at: usize, len: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let (mut skip, mut left) = (at, len);
    for b in bufs {
        if left == 0 {
            break;
        }
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        let n = (b.len() - skip).min(left);
        out.push(b.slice(skip..skip + n));
        skip = 0;
        left -= n;
    }
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    #[test]
    fn runs_split_at_gaps_and_at_the_run_limit() {
        const MAX: usize = 32;
        let bs: Vec<u64> = [1, 2, 3, 7, 9, 10]
            .into_iter()
            .chain(100..100 + MAX as u64 + 2)
            .collect();
        let runs: Vec<(u64, usize)> = super::runs(&bs, MAX).map(|r| (r[0], r.len())).collect();
        assert_eq!(
            runs,
            vec![(1, 3), (7, 1), (9, 2), (100, MAX), (100 + MAX as u64, 2)]
        );
        assert_eq!(super::runs(&[], MAX).count(), 0);
    }

    #[test]
    fn slices_cross_buffer_boundaries_without_copying() {
        let bufs = [Bytes::from_static(b"abc"), Bytes::from_static(b"defgh")];
        let got: Vec<u8> = super::slice(&bufs, 2, 4).concat();
        assert_eq!(got, b"cdef");
        assert_eq!(super::slice(&bufs, 3, 5).concat(), b"defgh");
        assert!(super::slice(&bufs, 8, 0).is_empty());
    }
}
