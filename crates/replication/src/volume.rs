//! A volume: the block device a LUN serves, with every write passing through the hooks of
//! the replication relationships attached to it.
//!
//! Write path, in order:
//! 1. the gate is entered shared (a point-in-time cut waits for in-flight writes);
//! 2. a restore in progress brings the written chunks back first;
//! 3. each hook prepares: copy-on-write of old data, activity log, or a refusal (a mirror
//!    target that is not writable);
//! 4. the chunks are locked shared; hooks start their own copies of the write (a synchronous
//!    mirror's target write runs concurrently with the source write); the source is written;
//! 5. each hook finishes with the outcome: an asynchronous journal append, dirty tracking,
//!    or a broken pair when its target failed. A hook never fails the source write.

use std::{
    ops::RangeInclusive,
    sync::{Arc, RwLock, Weak},
};

use blockdev::{BlockDevice, BlockError, BlockErrorKind, Extent};
use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use crate::{
    bitmap::{CHUNK, chunks},
    locks::{ChunkLocks, ExclusiveChunks},
    writeback::{Hold, WriteBack},
};

/// What a write does.
#[derive(Clone, Copy, Debug)]
pub enum WriteKind<'a> {
    /// Data.
    Data(&'a [Bytes]),
    /// Deallocation (reads back zeroes).
    Discard,
    /// Zeroes, kept allocated.
    Zeroes,
}

/// One write as the hooks see it.
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    /// What is written.
    pub kind: WriteKind<'a>,
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Forced unit access.
    pub fua: bool,
    /// The writer already holds the chunks exclusively (a restore bringing a chunk back):
    /// hooks must not lock them again.
    pub locked: bool,
}

impl Write<'_> {
    /// The chunks the write touches.
    pub fn chunks(&self) -> RangeInclusive<u64> {
        chunks(self.offset, self.len)
    }

    /// Apply this write to another device (a mirror target).
    pub fn apply_to(&self, dev: &dyn BlockDevice) -> blockdev::Result<()> {
        match self.kind {
            WriteKind::Data(b) => dev.write_at(b, self.offset, self.fua),
            WriteKind::Discard => dev.discard(self.offset, self.len),
            WriteKind::Zeroes => dev.write_zeroes(self.offset, self.len, self.fua),
        }
    }
}

/// A write started by a hook, to be awaited after the source write.
pub struct Pending(Box<dyn FnOnce() -> blockdev::Result<()> + Send>);

impl Pending {
    /// Wrap a waiter.
    pub fn new(f: impl FnOnce() -> blockdev::Result<()> + Send + 'static) -> Self {
        Self(Box::new(f))
    }

    /// Wait for the outcome.
    pub fn wait(self) -> blockdev::Result<()> {
        (self.0)()
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

/// A replication relationship's part in a volume's write path.
pub trait WriteHook: Send + Sync + std::fmt::Debug {
    /// Before the write, without chunk locks held: copy-on-write and metadata. An error
    /// refuses the write (only for guards of volumes that are not writable).
    fn prepare(&self, vol: &Volume, w: &Write<'_>) -> blockdev::Result<()>;

    /// With the chunks locked: start this relationship's copy of the write, which runs
    /// concurrently with the source write.
    fn start(&self, _vol: &Volume, _w: &Write<'_>) -> Option<Pending> {
        None
    }

    /// [`WriteHook::prepare`] for a write that must not wait: done, and `true`, only if it
    /// needs nothing but memory (no chunk to copy first, no log record to write); `false`
    /// with nothing done otherwise. The default never tries.
    fn prepare_nowait(&self, _vol: &Volume, _w: &Write<'_>) -> bool {
        false
    }

    /// [`WriteHook::start`] for a write that must not wait, done before the source write:
    /// `None` when this hook copies nothing, `Some(true)` when its copy is done,
    /// `Some(false)` when the copy would have to wait (part of it may have been done; the
    /// whole write is then done again where waiting is allowed). The default never tries.
    fn start_nowait(&self, _vol: &Volume, _w: &Write<'_>) -> Option<bool> {
        Some(false)
    }

    /// After the source write (`source_ok`) and this hook's own copy (`copy`).
    fn finish(
        &self,
        _vol: &Volume,
        _w: &Write<'_>,
        _source_ok: bool,
        _copy: Option<blockdev::Result<()>>,
    ) {
    }

    /// SYNCHRONIZE CACHE: make the relationship's copies durable too.
    fn flush(&self) -> blockdev::Result<()> {
        Ok(())
    }

    /// Whether a host write may be held in the volume's write-back cache
    /// ([`crate::writeback`]) and applied later. The default refuses: a hook that may
    /// refuse a write, or that must see it at once, never lets it be held.
    fn defer(&self, _vol: &Volume, _w: &Write<'_>) -> Defer {
        Defer::Refuse
    }

    /// Before a batch of held writes is applied (each then goes through
    /// [`WriteHook::prepare`] as usual): the part of their preparation that a batch can
    /// share, such as one durable commit for every chunk they copy.
    fn prepare_batch(&self, _vol: &Volume, _writes: &[Write<'_>]) {}
}

/// A hook's answer to [`WriteHook::defer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defer {
    /// The write must be applied now.
    Refuse,
    /// The write may be held.
    Allow,
    /// Holding the write saves a wait (its preparation commits something durably).
    Want,
}

/// Reads of chunks that are being restored come from elsewhere until restored.
pub trait RestoreSource: Send + Sync + std::fmt::Debug {
    /// Whether chunk `c` still has to be brought back.
    fn pending(&self, c: u64) -> bool;
    /// Read the restore data of chunk `c` (a whole chunk, clipped at the device end).
    fn read_chunk(&self, c: u64, buf: &mut [u8]) -> blockdev::Result<()>;
    /// Chunk `c` has been written back to the volume.
    fn restored(&self, c: u64) -> blockdev::Result<()>;
    /// The first pending chunk at or after `from`.
    fn next_pending(&self, from: u64) -> Option<u64>;
    /// Number of chunks still pending.
    fn remaining(&self) -> u64;
    /// A host write to chunk `c` (already restored) is about to be issued: whatever records
    /// the restore of `c` must be durable first.
    fn settle(&self, _c: u64) -> blockdev::Result<()> {
        Ok(())
    }
}

/// The common restore source: chunks of `pending` are read from a device at their own
/// offset (a clone, a mirror target), or by a function (a snapshot's point in time).
pub struct DeviceRestore {
    read: ReadAt,
    pending: std::sync::Mutex<crate::bitmap::Bitmap>,
}

/// Reads `buf.len()` bytes at an offset.
pub type ReadAt = Box<dyn Fn(&mut [u8], u64) -> blockdev::Result<()> + Send + Sync>;

impl std::fmt::Debug for DeviceRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceRestore")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl DeviceRestore {
    /// Restore the chunks of `pending` from `from`.
    pub fn new(from: Arc<dyn BlockDevice>, pending: crate::bitmap::Bitmap) -> Self {
        Self::reading(Box::new(move |buf, off| from.read_at(buf, off)), pending)
    }

    /// Restore the chunks of `pending` with what `read` reads at their offset. The volume
    /// holds a chunk's lock exclusively while `read` reads it.
    pub fn reading(read: ReadAt, pending: crate::bitmap::Bitmap) -> Self {
        Self {
            read,
            pending: std::sync::Mutex::new(pending),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, crate::bitmap::Bitmap> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl RestoreSource for DeviceRestore {
    fn pending(&self, c: u64) -> bool {
        self.map().get(c)
    }

    fn read_chunk(&self, c: u64, buf: &mut [u8]) -> blockdev::Result<()> {
        (self.read)(buf, c * CHUNK)
    }

    fn restored(&self, c: u64) -> blockdev::Result<()> {
        self.map().clear(c);
        Ok(())
    }

    fn next_pending(&self, from: u64) -> Option<u64> {
        self.map().next_set(from)
    }

    fn remaining(&self) -> u64 {
        self.map().count()
    }
}

/// Bring every pending chunk back (the background part of a restore), reporting progress
/// as (done, total) and stopping early when `cancel` says so. Returns the chunks restored.
pub fn run_restore(
    vol: &Volume,
    src: &dyn RestoreSource,
    progress: &dyn Fn(u64, u64),
    cancel: &dyn Fn() -> bool,
) -> blockdev::Result<u64> {
    let total = src.remaining();
    let mut done = 0;
    let mut from = 0;
    while let Some(c) = src.next_pending(from) {
        if cancel() {
            break;
        }
        vol.restore_chunk(src, c)?;
        done += 1;
        from = c + 1;
        progress(done, total);
    }
    // Chunks that became pending again before `from` are none: pending only shrinks.
    Ok(done)
}

/// A volume.
#[derive(Debug)]
pub struct Volume {
    /// Name (`volume:<name>`).
    pub name: String,
    base: Arc<dyn BlockDevice>,
    gate: RwLock<()>,
    locks: ChunkLocks,
    ranges: crate::locks::RangeLocks,
    /// Replaced whole when a hook comes or goes, so that a write takes them with a
    /// reference count, not a copy.
    hooks: RwLock<Arc<[Arc<dyn WriteHook>]>>,
    restore: RwLock<Option<Arc<dyn RestoreSource>>>,
    /// Microseconds since `EPOCH` of the last host write (0: none yet).
    last_write: std::sync::atomic::AtomicU64,
    /// Host writes acknowledged but not yet applied ([`crate::writeback`]).
    held: WriteBack,
    /// This volume, for the thread that applies held writes.
    me: Weak<Self>,
}

/// Reference point for write timestamps.
static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Microseconds since [`EPOCH`] (set by the first call).
pub(crate) fn micros_now() -> u64 {
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u64
}

impl Volume {
    /// A volume over its storage.
    pub fn new(name: &str, base: Arc<dyn BlockDevice>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            name: name.to_owned(),
            base,
            gate: RwLock::new(()),
            locks: ChunkLocks::default(),
            ranges: crate::locks::RangeLocks::default(),
            hooks: RwLock::new(Arc::new([])),
            restore: RwLock::new(None),
            last_write: std::sync::atomic::AtomicU64::new(0),
            held: WriteBack::default(),
            me: me.clone(),
        })
    }

    /// The underlying storage (reads and writes that bypass replication: copies made by the
    /// replication layer itself).
    pub fn base(&self) -> &Arc<dyn BlockDevice> {
        &self.base
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u64 {
        self.base.size().div_ceil(CHUNK)
    }

    /// Attach a hook.
    pub fn add_hook(&self, h: Arc<dyn WriteHook>) {
        let mut hooks = self
            .hooks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *hooks = hooks.iter().cloned().chain([h]).collect();
    }

    /// Detach a hook (compared by address).
    pub fn remove_hook(&self, h: &Arc<dyn WriteHook>) {
        let mut hooks = self
            .hooks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *hooks = hooks
            .iter()
            .filter(|x| !Arc::ptr_eq(x, h))
            .cloned()
            .collect();
    }

    /// Hold every write back and wait for in-flight writes, held ones included: the volume
    /// is quiescent while the guard lives.
    pub fn quiesce(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        let g = self
            .gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.held.drain();
        g
    }

    /// Wait until every held write is applied to the volume and its relationships.
    pub fn drain_held(&self) {
        self.held.drain();
    }

    /// Lock chunks exclusively (copies made by the replication layer).
    pub fn lock_chunks(&self, first: u64, last: u64) -> ExclusiveChunks<'_> {
        self.locks.exclusive(first, last)
    }

    /// Start restoring from `src`: reads of pending chunks are redirected and writes bring
    /// their chunks back first.
    pub fn set_restore(&self, src: Option<Arc<dyn RestoreSource>>) {
        *self
            .restore
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = src;
    }

    /// Bring chunk `c` back from the restore source if it is still pending.
    pub fn restore_chunk(&self, src: &dyn RestoreSource, c: u64) -> blockdev::Result<()> {
        let _l = self.locks.exclusive(c, c);
        if !src.pending(c) {
            return Ok(());
        }
        let off = c * CHUNK;
        let len = CHUNK.min(self.base.size() - off) as usize;
        let mut buf = BytesMut::zeroed(len);
        src.read_chunk(c, &mut buf)?;
        // The write goes through the other hooks (copy-on-write for other snapshots).
        self.write_internal(&[buf.freeze()], off, false, true)?;
        src.restored(c)
    }

    fn restore_source(&self) -> Option<Arc<dyn RestoreSource>> {
        self.restore
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn hooks(&self) -> Arc<[Arc<dyn WriteHook>]> {
        self.hooks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn write_op(&self, w: &Write<'_>) -> blockdev::Result<()> {
        self.write_with(w, &self.hooks())
    }

    /// A write through `hooks` (the volume's hooks, taken once by the caller).
    fn write_with(&self, w: &Write<'_>, hooks: &[Arc<dyn WriteHook>]) -> blockdev::Result<()> {
        // With relationships, overlapping writes are applied in one order everywhere.
        let _order =
            (!w.locked && !hooks.is_empty()).then(|| self.ranges.lock(w.offset, w.offset + w.len));
        for h in hooks {
            h.prepare(self, w)?;
        }
        let range = w.chunks();
        let _locks = (!w.locked).then(|| self.locks.shared(*range.start(), *range.end()));
        let pending: SmallVec<[Option<Pending>; 4]> =
            hooks.iter().map(|h| h.start(self, w)).collect();
        let r = w.apply_to(&*self.base);
        for (h, p) in hooks.iter().zip(pending) {
            let copy = p.map(Pending::wait);
            h.finish(self, w, r.is_ok(), copy);
        }
        r
    }

    /// A write from inside the replication layer that still goes through the hooks
    /// (`chunk_locked`: the caller holds the chunk locks exclusively).
    fn write_internal(
        &self,
        bufs: &[Bytes],
        offset: u64,
        fua: bool,
        chunk_locked: bool,
    ) -> blockdev::Result<()> {
        let len = blockdev::total_len(bufs);
        self.write_op(&Write {
            kind: WriteKind::Data(bufs),
            offset,
            len,
            fua,
            locked: chunk_locked,
        })
    }

    /// Whether hosts wrote within `within` (background copies yield to them).
    pub fn busy(&self, within: std::time::Duration) -> bool {
        let last = self.last_write.load(std::sync::atomic::Ordering::Relaxed);
        last != 0 && micros_now().saturating_sub(last) < within.as_micros() as u64
    }

    fn host_write(&self, w: Write<'_>) -> blockdev::Result<()> {
        blockdev::check_range(self.base.size(), w.offset, w.len)?;
        self.last_write
            .store(micros_now().max(1), std::sync::atomic::Ordering::Relaxed);
        let _gate = self
            .gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let hooks = self.hooks();
        if self.try_hold(&w, &hooks) {
            return Ok(());
        }
        // A write that is not held goes after the held writes it overlaps.
        self.held.wait_clear(w.offset, w.len);
        self.apply(&w, &hooks)
    }

    /// A write past the gate: a restore in progress brings its chunks back first.
    fn apply(&self, w: &Write<'_>, hooks: &[Arc<dyn WriteHook>]) -> blockdev::Result<()> {
        if let Some(src) = self.restore_source() {
            for c in w.chunks() {
                self.restore_chunk(&*src, c)?;
                src.settle(c)?;
            }
        }
        self.write_with(w, hooks)
    }

    /// Hold a host write in the write-back cache when a hook wants it held (or it overlaps
    /// a held write) and none refuses. Returns whether it was held (and so is done).
    fn try_hold(&self, w: &Write<'_>, hooks: &[Arc<dyn WriteHook>]) -> bool {
        let WriteKind::Data(bufs) = w.kind else {
            return false;
        };
        if w.fua || w.locked || (hooks.is_empty() && self.held.is_empty()) {
            return false;
        }
        let mut want = false;
        for h in hooks {
            match h.defer(self, w) {
                Defer::Refuse => return false,
                Defer::Want => want = true,
                Defer::Allow => {}
            }
        }
        if !want && self.held.is_empty() || self.restore_source().is_some() {
            return false;
        }
        match self.held.hold(bufs, w.offset, want) {
            Hold::Full | Hold::NotNeeded => false,
            Hold::Held => true,
            Hold::StartWorker => {
                self.start_worker();
                true
            }
        }
    }

    fn start_worker(&self) {
        let Some(vol) = self.me.upgrade() else {
            // Only while the volume is being dropped, when nobody can write to it.
            self.held.worker_gone();
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("held-writes".into())
            .spawn(move || vol.apply_held());
        if let Err(e) = spawned {
            tracing::warn!(volume = %self.name, error = %e, "no thread for held writes; applying them here");
            self.apply_held();
        }
    }

    /// The worker: apply held writes in order, a batch at a time, each batch prepared
    /// together first (one copy-on-write commit for all of its chunks).
    fn apply_held(&self) {
        loop {
            let batch = self.held.batch();
            if batch.is_empty() {
                return;
            }
            let writes: Vec<Write<'_>> = batch
                .iter()
                .map(|h| Write {
                    kind: WriteKind::Data(std::slice::from_ref(&h.data)),
                    offset: h.offset,
                    len: h.data.len() as u64,
                    fua: false,
                    locked: false,
                })
                .collect();
            let hooks = self.hooks();
            for h in hooks.iter() {
                h.prepare_batch(self, &writes);
            }
            for w in &writes {
                self.held.applied(self.apply(w, &hooks));
            }
        }
    }

    /// Lock chunks shared (reads that must not interleave with a copy-on-write).
    pub fn lock_chunks_shared(&self, first: u64, last: u64) -> crate::locks::SharedChunks<'_> {
        self.locks.shared(first, last)
    }

    /// Read what has been applied (the origin, or the restore source for chunks still
    /// being restored), without the held writes.
    fn read_applied(&self, buf: &mut [u8], offset: u64) -> blockdev::Result<()> {
        let Some(src) = self.restore_source() else {
            return self.base.read_at(buf, offset);
        };
        blockdev::check_range(self.base.size(), offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let c = pos / CHUNK;
            let within = (pos % CHUNK) as usize;
            let n = (CHUNK as usize - within).min(buf.len() - done);
            let _l = self.locks.shared(c, c);
            if src.pending(c) {
                let len = CHUNK.min(self.base.size() - c * CHUNK) as usize;
                let mut chunk = vec![0u8; len];
                src.read_chunk(c, &mut chunk)?;
                buf[done..done + n].copy_from_slice(&chunk[within..within + n]);
            } else {
                self.base.read_at(&mut buf[done..done + n], pos)?;
            }
            done += n;
        }
        Ok(())
    }
}

impl BlockDevice for Volume {
    fn size(&self) -> u64 {
        self.base.size()
    }

    fn remote(&self) -> bool {
        self.base.remote()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> blockdev::Result<()> {
        blockdev::check_range(self.base.size(), offset, buf.len() as u64)?;
        let held = self.held.overlapping(offset, buf.len() as u64);
        self.read_applied(buf, offset)?;
        for h in &held {
            h.overlay(buf, offset);
        }
        Ok(())
    }

    fn read_at_nowait(&self, buf: &mut [u8], offset: u64) -> blockdev::Result<bool> {
        // While a restore fetches chunks from elsewhere, reads take the slow path.
        if self.restore_source().is_some() {
            return Ok(false);
        }
        blockdev::check_range(self.base.size(), offset, buf.len() as u64)?;
        let held = self.held.overlapping(offset, buf.len() as u64);
        if !self.base.read_at_nowait(buf, offset)? {
            return Ok(false);
        }
        for h in &held {
            h.overlay(buf, offset);
        }
        Ok(true)
    }

    fn write_at_nowait(&self, bufs: &[Bytes], offset: u64, fua: bool) -> blockdev::Result<bool> {
        // The write path above, where every step must be done in memory or not at all.
        let len = blockdev::total_len(bufs);
        blockdev::check_range(self.base.size(), offset, len)?;
        let _gate = match self.gate.try_read() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(false),
        };
        if self.restore_source().is_some() {
            return Ok(false);
        }
        let w = Write {
            kind: WriteKind::Data(bufs),
            offset,
            len,
            fua,
            locked: false,
        };
        let hooks = self.hooks();
        if self.try_hold(&w, &hooks) {
            self.last_write
                .store(micros_now().max(1), std::sync::atomic::Ordering::Relaxed);
            return Ok(true);
        }
        if self.held.overlaps(offset, len) {
            // It must wait for the held writes it overlaps.
            return Ok(false);
        }
        let _order = if hooks.is_empty() {
            None
        } else {
            match self.ranges.try_lock(offset, offset + len) {
                Some(g) => Some(g),
                None => return Ok(false),
            }
        };
        // Each hook's preparation needs only memory, or the write goes where it may wait.
        // A hook prepared without waiting has only touched in-memory state (the order of
        // activity log extents), which the retry touches again.
        if !hooks.iter().all(|h| h.prepare_nowait(self, &w)) {
            return Ok(false);
        }
        let range = w.chunks();
        let Some(_locks) = self.locks.try_shared(*range.start(), *range.end()) else {
            return Ok(false);
        };
        let mut copies: SmallVec<[_; 4]> = SmallVec::new();
        for h in hooks.iter() {
            match h.start_nowait(self, &w) {
                Some(false) => return Ok(false),
                started => copies.push(started.map(|_| Ok(()))),
            }
        }
        self.last_write
            .store(micros_now().max(1), std::sync::atomic::Ordering::Relaxed);
        if !self.base.write_at_nowait(bufs, offset, fua)? {
            return Ok(false);
        }
        for (h, copy) in hooks.iter().zip(copies) {
            h.finish(self, &w, true, copy);
        }
        Ok(true)
    }

    fn write_at(&self, bufs: &[Bytes], offset: u64, fua: bool) -> blockdev::Result<()> {
        let len = blockdev::total_len(bufs);
        self.host_write(Write {
            kind: WriteKind::Data(bufs),
            offset,
            len,
            fua,
            locked: false,
        })
    }

    fn flush(&self) -> blockdev::Result<()> {
        // Held writes are in the cache this flush empties; one that failed fails the flush.
        self.held.drain();
        if let Some(e) = self.held.take_failure() {
            return Err(e);
        }
        self.base.flush()?;
        for h in self.hooks().iter() {
            h.flush()?;
        }
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> blockdev::Result<()> {
        self.host_write(Write {
            kind: WriteKind::Discard,
            offset,
            len,
            fua: false,
            locked: false,
        })
    }

    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> blockdev::Result<()> {
        self.host_write(Write {
            kind: WriteKind::Zeroes,
            offset,
            len,
            fua,
            locked: false,
        })
    }

    fn allocation(&self, offset: u64, len: u64) -> blockdev::Result<Vec<Extent>> {
        // A held write to a hole must not be reported as a hole (an initiator would skip
        // reading it): the map is taken once the writes it covers are applied.
        self.held
            .wait_clear(offset, len.min(self.base.size().saturating_sub(offset)));
        self.base.allocation(offset, len)
    }

    fn allocation_nowait(&self, offset: u64, len: u64) -> blockdev::Result<Option<Vec<Extent>>> {
        if self
            .held
            .overlaps(offset, len.min(self.base.size().saturating_sub(offset)))
        {
            return Ok(None);
        }
        self.base.allocation_nowait(offset, len)
    }

    fn thin(&self) -> bool {
        self.base.thin()
    }
}

/// The error a guard returns for a volume that may not be written now.
pub fn read_only(what: &str) -> BlockError {
    BlockError::new(BlockErrorKind::ReadOnly, what.to_owned())
}
