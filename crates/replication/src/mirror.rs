//! Mirrors (SyncType 6): a full copy of a source volume on a target volume, kept in step
//! synchronously (Mode 2: a write is acknowledged when source and target have it, the
//! target write running concurrently with the source write) or asynchronously (Mode 3: an
//! ordered, bounded journal ships writes in order, so the target is always a prefix of the
//! source). Whenever the target cannot follow (fractured, split, suspended, broken,
//! journal overflow) the changed chunks are tracked in a dirty bitmap, so that Resync and
//! Restore copy only those. The source's activity log bounds what may differ after a crash.

use std::{
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use blockdev::{BlockDevice, BlockError, BlockErrorKind};
use bytes::BytesMut;
use crossbeam_channel::{Sender, unbounded};

mod hooks;

use self::hooks::{ship, target_writer};
use crate::{
    al::{ActivityLog, extent_chunks},
    bitmap::{Bitmap, CHUNK},
    journal::{ASYNC_MIRROR_MAX_LAG_BYTES, EntryKind, Journal},
    types::{CopyState, Mode},
    volume::{RestoreSource, Volume, Write, WriteHook},
};

/// A mirror's mutable state.
#[derive(Debug)]
struct State {
    state: CopyState,
    mode: Mode,
    /// Chunks the target may lack (source written while the target could not follow).
    out_of_sync: Bitmap,
    /// Chunks written on the target (fractured, failed over).
    target_dirty: Bitmap,
    /// Asynchronous writes go to the journal (false while a resync runs).
    journaling: bool,
    /// A restore runs: writes are forwarded synchronously whatever the mode.
    restoring: bool,
}

impl State {
    /// Whether writes are forwarded to the target before they are acknowledged.
    fn forwards(&self) -> bool {
        matches!(
            self.state,
            CopyState::Synchronized | CopyState::Unsynchronized
        ) && (self.mode == Mode::Synchronous || self.restoring)
    }

    /// Whether writes go to the asynchronous journal.
    fn journals(&self) -> bool {
        self.state == CopyState::Synchronized && self.mode == Mode::Asynchronous && self.journaling
    }

    /// Track `len` bytes at `offset` as possibly different on the target.
    fn mark(&mut self, offset: u64, len: u64) {
        for c in crate::bitmap::chunks(offset, len) {
            self.out_of_sync.set(c);
        }
    }
}

/// A write the target writer applies, owned.
#[derive(Debug)]
struct TargetWrite {
    kind: EntryKind,
    offset: u64,
    len: u64,
    fua: bool,
}

type TargetJob = (TargetWrite, Sender<blockdev::Result<()>>);

/// Threads applying a synchronous mirror's target writes.
const TARGET_WRITERS: usize = 4;

/// A mirror between two volumes.
#[derive(Debug)]
pub struct Mirror {
    /// Relationship id.
    pub id: u64,
    source: RwLock<Arc<Volume>>,
    target: RwLock<Arc<Volume>>,
    st: Mutex<State>,
    journal: RwLock<Option<Arc<JournalGroup>>>,
    /// The group journal to join when the pair starts following (consistent groups).
    group_journal: Mutex<Option<Arc<JournalGroup>>>,
    al: RwLock<Option<Arc<ActivityLog>>>,
    target_al: RwLock<Option<Arc<ActivityLog>>>,
    writer: Sender<TargetJob>,
    /// Chunks copied by the most recent copy (initial sync, resync, restore).
    pub last_copy_chunks: AtomicU64,
    stopping: AtomicBool,
    crashed: AtomicBool,
    saving: Mutex<()>,
    /// Bound of a journal of its own.
    max_lag: AtomicU64,
    /// Until when (`crate::volume::micros_now`) an asynchronous pair's writes go to its
    /// journal even when it is empty (see `Mirror::start_through`); 0: never set.
    through_off: Arc<AtomicU64>,
    /// Persist bitmaps here (`None`: not persisted).
    bitmap_paths: Option<(std::path::PathBuf, std::path::PathBuf)>,
    guard: Mutex<Option<Arc<dyn WriteHook>>>,
}

/// A journal and the mirrors that share it (one per asynchronous pair, or one per
/// consistent group), with the single shipper that applies it in order.
#[derive(Debug)]
pub struct JournalGroup {
    /// The journal.
    pub journal: Arc<Journal>,
    members: Mutex<std::collections::HashMap<u64, std::sync::Weak<Mirror>>>,
    shipper: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The batch a writer ships after acknowledging its writes (`ship_acknowledged`),
    /// kept to reuse its memory.
    acked: Mutex<Vec<crate::journal::Entry>>,
}

impl JournalGroup {
    /// A new journal group bounded to `max_bytes`.
    pub fn new(max_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            journal: Arc::new(Journal::new(max_bytes)),
            members: Mutex::new(std::collections::HashMap::new()),
            shipper: Mutex::new(None),
            acked: Mutex::new(Vec::new()),
        })
    }

    fn join(self: &Arc<Self>, m: &Arc<Mirror>) {
        self.members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(m.id, Arc::downgrade(m));
        let mut sh = self
            .shipper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sh.is_none() {
            let g = self.clone();
            *sh = std::thread::Builder::new()
                .name(format!("journal-{}", m.id))
                .spawn(move || ship(g))
                .ok();
        }
    }

    /// Remove a member; returns its unapplied entries. The last member stops the shipper.
    fn leave(&self, id: u64) -> Vec<crate::journal::Entry> {
        // Entries first: once the member is gone, the shipper drops what is left of it.
        let entries = self.journal.take(id);
        let empty = {
            let mut m = self
                .members
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            m.remove(&id);
            m.is_empty()
        };
        if empty {
            self.journal.close();
            let h = self
                .shipper
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(h) = h
                && h.thread().id() != std::thread::current().id()
            {
                let _ = h.join();
            }
        }
        entries
    }

    fn member(&self, id: u64) -> Option<Arc<Mirror>> {
        self.members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .and_then(std::sync::Weak::upgrade)
    }
}

/// The hook a mirror puts on its target volume: it refuses host writes while the target is
/// a follower, and tracks them when it may be written.
#[derive(Debug)]
pub struct TargetGuard(pub Arc<Mirror>);

impl Mirror {
    /// A mirror from `source` to `target` in `state` (a new pair starts Unsynchronized with
    /// every chunk to copy; a reopened pair passes its persisted state and bitmaps).
    pub fn new(
        id: u64,
        source: Arc<Volume>,
        target: Arc<Volume>,
        mode: Mode,
        state: CopyState,
        out_of_sync: Bitmap,
        target_dirty: Bitmap,
        bitmap_paths: Option<(std::path::PathBuf, std::path::PathBuf)>,
    ) -> Arc<Self> {
        let (tx, rx) = unbounded::<TargetJob>();
        let m = Arc::new(Self {
            id,
            source: RwLock::new(source),
            target: RwLock::new(target),
            st: Mutex::new(State {
                state,
                mode,
                out_of_sync,
                target_dirty,
                journaling: false,
                restoring: false,
            }),
            journal: RwLock::new(None),
            group_journal: Mutex::new(None),
            al: RwLock::new(None),
            target_al: RwLock::new(None),
            writer: tx,
            last_copy_chunks: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
            saving: Mutex::new(()),
            max_lag: AtomicU64::new(ASYNC_MIRROR_MAX_LAG_BYTES),
            through_off: Arc::new(AtomicU64::new(0)),
            bitmap_paths,
            guard: Mutex::new(None),
        });
        // Target writes of concurrent host writes run concurrently (overlapping writes never
        // are: the source volume orders them).
        for k in 0..TARGET_WRITERS {
            let (weak, rx) = (Arc::downgrade(&m), rx.clone());
            let _ = std::thread::Builder::new()
                .name(format!("mirror-{id}-w{k}"))
                .spawn(move || target_writer(weak, rx));
        }
        m
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.st
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The source volume.
    pub fn source(&self) -> Arc<Volume> {
        self.source
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The target volume.
    pub fn target(&self) -> Arc<Volume> {
        self.target
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// CopyState.
    pub fn state(&self) -> CopyState {
        self.st().state
    }

    /// Set the CopyState.
    pub fn set_state(&self, s: CopyState) {
        self.st().state = s;
    }

    /// Mode.
    pub fn mode(&self) -> Mode {
        self.st().mode
    }

    /// Chunks to copy (source side) and chunks written on the target.
    pub fn dirty(&self) -> (u64, u64) {
        let st = self.st();
        (st.out_of_sync.count(), st.target_dirty.count())
    }

    /// Bitmaps (for persistence).
    pub fn bitmaps(&self) -> (Bitmap, Bitmap) {
        let st = self.st();
        (st.out_of_sync.clone(), st.target_dirty.clone())
    }

    /// Asynchronous lag: bytes and seconds behind.
    pub fn lag(&self) -> (u64, Duration) {
        match &*self
            .journal
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some(g) => g.journal.lag(),
            None => (0, Duration::ZERO),
        }
    }

    /// Bound the bytes a journal of its own may hold (default
    /// [`ASYNC_MIRROR_MAX_LAG_BYTES`]).
    pub fn set_max_lag(&self, bytes: u64) {
        self.max_lag.store(bytes, Ordering::Relaxed);
    }

    /// Share a group journal (consistent asynchronous groups): the pair joins it when it
    /// starts following.
    pub fn set_group_journal(&self, g: Arc<JournalGroup>) {
        *self
            .group_journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(g);
    }

    /// Hold the pair's asynchronous journal (see [`Journal::hold`]); the journal, to
    /// release it.
    pub fn hold_journal(&self) -> Option<Arc<Journal>> {
        let j = self.current_journal()?;
        j.hold();
        Some(j)
    }

    fn current_journal(&self) -> Option<Arc<Journal>> {
        self.journal
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|g| g.journal.clone())
    }

    fn current_group(&self) -> Option<Arc<JournalGroup>> {
        self.journal
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Use these activity logs: the source's (writes the target may lack after a crash)
    /// and the target's (host writes to a fractured or failed-over target).
    pub fn set_activity_logs(
        &self,
        source: Option<Arc<ActivityLog>>,
        target: Option<Arc<ActivityLog>>,
    ) {
        *self
            .al
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = source;
        *self
            .target_al
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = target;
    }

    /// Mark the chunks of activity-log extents as possibly different (crash recovery).
    pub fn recover_extents(&self, extents: &[u64]) {
        let mut st = self.st();
        for &e in extents {
            for c in extent_chunks(e) {
                st.out_of_sync.set(c);
            }
        }
    }

    /// Persist the dirty bitmaps.
    pub fn save_bitmaps(&self) -> std::io::Result<()> {
        let Some((a, b)) = &self.bitmap_paths else {
            return Ok(());
        };
        if self.crashed.load(Ordering::Relaxed) {
            return Ok(());
        }
        // One save at a time, each of the state at its own moment: a slower, older save
        // must not land after a newer one.
        let _one = self
            .saving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut oos, td) = self.bitmaps();
        // Journaled writes not yet applied are chunks the target may lack after a crash.
        if let Some(j) = self.current_journal() {
            for (off, len) in j.pending_ranges(self.id) {
                for c in crate::bitmap::chunks(off, len) {
                    oos.set(c);
                }
            }
        }
        oos.save(a)?;
        td.save(b)
    }

    /// Attach the hooks to the volumes.
    pub fn attach(self: &Arc<Self>) {
        self.source().add_hook(self.clone());
        let guard: Arc<dyn WriteHook> = Arc::new(TargetGuard(self.clone()));
        self.target().add_hook(guard.clone());
        *self
            .guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(guard);
    }

    /// Remove the hooks (Detach, Dissolve, before Reverse Roles).
    pub fn detach(self: &Arc<Self>) {
        let me: Arc<dyn WriteHook> = self.clone();
        self.source().remove_hook(&me);
        if let Some(g) = self
            .guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            self.target().remove_hook(&g);
        }
        self.stop_journal();
    }

    /// Stop journaling; unapplied entries become dirty chunks.
    fn stop_journal(&self) {
        // No more pushes first (a host write pushes under the state lock while
        // `journaling`), then take the entries pushed so far.
        self.st().journaling = false;
        let g = self
            .journal
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(g) = g {
            let entries = g.leave(self.id);
            let mut st = self.st();
            for e in entries {
                st.mark(e.offset, e.len);
            }
        }
    }

    /// Start journaling (into the group journal when the pair has one).
    fn start_journal(self: &Arc<Self>) {
        let g = self
            .group_journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| JournalGroup::new(self.max_lag.load(Ordering::Relaxed)));
        // A member before the first push: the shipper drops entries of non-members.
        g.join(self);
        *self
            .journal
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(g);
        self.st().journaling = true;
    }

    /// Change the mode (Reset To Sync / Reset To Async), with the source quiescent and the
    /// journal drained so that no older journaled write lands after a newer direct one.
    pub fn set_mode(self: &Arc<Self>, mode: Mode) {
        let source = self.source();
        let _q = source.quiesce();
        self.set_mode_locked(mode);
    }

    /// [`Mirror::set_mode`] with the source (or the whole group) already quiescent.
    pub fn set_mode_locked(self: &Arc<Self>, mode: Mode) {
        if mode == Mode::Synchronous {
            if let Some(j) = self.current_journal() {
                j.drain(Duration::from_secs(600));
            }
            self.stop_journal();
        }
        let mut st = self.st();
        st.mode = mode;
        let following = matches!(st.state, CopyState::Synchronized);
        drop(st);
        if mode == Mode::Asynchronous && following {
            self.start_journal();
        }
    }

    /// Fracture (or suspend, deactivate): the target stops following; changes are tracked.
    pub fn stop_following(&self, state: CopyState) {
        self.stop_journal();
        self.st().state = state;
    }

    /// Split: quiesce the source, drain an asynchronous journal, then stop following.
    pub fn split(self: &Arc<Self>) {
        let source = self.source();
        let _q = source.quiesce();
        self.split_locked();
    }

    /// [`Mirror::split`] with the source (or the whole group) already quiescent.
    pub fn split_locked(&self) {
        self.drain(Duration::from_secs(600));
        self.stop_following(CopyState::Split);
    }

    /// Wait until the asynchronous journal is applied (or `timeout`); true when it is.
    pub fn drain(&self, timeout: Duration) -> bool {
        match self.current_journal() {
            Some(j) => j.drain(timeout),
            None => true,
        }
    }

    /// Move to another journal group (`None`: a journal of its own), draining the current
    /// one first. The source (or the whole group) must be quiescent.
    pub fn switch_journal(self: &Arc<Self>, g: Option<Arc<JournalGroup>>) {
        self.drain(Duration::from_secs(600));
        let was = self.st().journaling;
        self.stop_journal();
        *self
            .group_journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = g;
        if was {
            self.start_journal();
        }
    }

    /// Throw the tracking away (Prepare): a later activation copies everything.
    pub fn prepare(&self) {
        self.stop_journal();
        let mut st = self.st();
        let n = st.out_of_sync.len();
        st.out_of_sync = Bitmap::full(n);
        st.target_dirty.clear_all();
        st.state = CopyState::Prepared;
    }

    /// Failover: the target becomes the primary, read-write; the source is fenced.
    pub fn failover(&self) {
        self.stop_journal();
        self.st().state = CopyState::Failedover;
    }

    /// Copy source to target until they are equal, then follow (initial sync, resync,
    /// resume, activate). Chunks dirty on either side are copied; target changes are
    /// discarded. Returns the chunks copied.
    pub fn resync(
        self: &Arc<Self>,
        progress: &dyn Fn(u64, u64),
        cancel: &dyn Fn() -> bool,
    ) -> blockdev::Result<u64> {
        {
            let mut st = self.st();
            let td = st.target_dirty.clone();
            st.out_of_sync.union(&td);
            st.target_dirty.clear_all();
            st.state = CopyState::Unsynchronized;
            st.journaling = false;
        }
        let source = self.source();
        let target = self.target();
        let total = self.dirty().0;
        let mut copied = 0u64;
        loop {
            let next = self.st().out_of_sync.next_set(0);
            let Some(c) = next else {
                // Converged: switch to following under quiescence, unless writes slipped in.
                let _q = source.quiesce();
                if cancel() || self.state() != CopyState::Unsynchronized {
                    break;
                }
                if !self.st().out_of_sync.is_empty() {
                    continue;
                }
                let mode = self.mode();
                self.st().state = CopyState::Synchronized;
                if mode == Mode::Asynchronous {
                    self.stop_journal();
                    self.start_journal();
                }
                break;
            };
            if cancel() || self.stopping.load(Ordering::Relaxed) {
                break;
            }
            {
                let _l = source.lock_chunks(c, c);
                // The target's lock too: a fracture may make the target writable at any
                // moment, and a host write there must never be overwritten by the copy.
                let _t = target.lock_chunks(c, c);
                if cancel() || self.state() != CopyState::Unsynchronized {
                    break;
                }
                if self.st().out_of_sync.get(c) {
                    if let Err(e) = copy_chunk(&**source.base(), &**target.base(), c) {
                        self.st().state = failed_state(&e);
                        return Err(e);
                    }
                    self.st().out_of_sync.clear(c);
                    copied += 1;
                }
            }
            progress(copied, total.max(copied));
        }
        self.last_copy_chunks.store(copied, Ordering::Relaxed);
        Ok(copied)
    }

    /// Copy the target back over the source's changed chunks (Restore, Failback), through
    /// the source's restore path so that reads of pending chunks already see the target and
    /// other snapshots of the source still preserve their data. Returns the chunks copied.
    pub fn restore_to_source(
        self: &Arc<Self>,
        progress: &dyn Fn(u64, u64),
        cancel: &dyn Fn() -> bool,
    ) -> blockdev::Result<u64> {
        let src = self.restore_source();
        let source = self.source();
        source.set_restore(Some(src.clone()));
        self.restore_begin();
        let r = crate::volume::run_restore(&source, &*src, progress, cancel);
        source.set_restore(None);
        let n = r.inspect_err(|_| self.restore_failed())?;
        if src.remaining() > 0 {
            return Ok(n);
        }
        self.restore_done(n);
        Ok(n)
    }

    /// What a restore brings back: the chunks changed on either side (the bitmaps stay set
    /// until [`Mirror::restore_done`], so a restore interrupted by a crash can resume).
    pub fn restore_source(&self) -> Arc<dyn RestoreSource> {
        let pending = {
            let st = self.st();
            let mut p = st.out_of_sync.clone();
            p.union(&st.target_dirty);
            p
        };
        Arc::new(crate::volume::DeviceRestore::new(
            self.target().base().clone(),
            pending,
        ))
    }

    /// A restore starts: the source is the primary again (its writes restore first) and
    /// the target is held read-only.
    pub fn restore_begin(&self) {
        self.stop_journal();
        let mut st = self.st();
        st.state = CopyState::Unsynchronized;
        // Every write during the restore (restored chunks and host writes) reaches the
        // target synchronously, whatever the mode: when it ends both sides are equal.
        st.restoring = true;
    }

    /// A restore failed: the pair is broken (a Resync or another Restore repairs it).
    pub fn restore_failed(&self) {
        let mut st = self.st();
        st.restoring = false;
        st.state = CopyState::Broken;
    }

    /// A restore of `n` chunks completed: source and target are equal.
    pub fn restore_done(self: &Arc<Self>, n: u64) {
        let mut st = self.st();
        st.out_of_sync.clear_all();
        st.target_dirty.clear_all();
        st.state = CopyState::Synchronized;
        st.restoring = false;
        let mode = st.mode;
        drop(st);
        if mode == Mode::Asynchronous {
            self.start_journal();
        }
        self.last_copy_chunks.store(n, Ordering::Relaxed);
    }

    /// Failback: hold the target's writes, copy back what changed while failed over, and
    /// make the source the primary again.
    pub fn failback(self: &Arc<Self>, progress: &dyn Fn(u64, u64)) -> blockdev::Result<u64> {
        let target = self.target();
        let _q = target.quiesce();
        self.restore_to_source(progress, &|| false)
    }

    /// Replace the chunks to copy (a new pair whose target already holds all but these; call
    /// with the source quiesced).
    pub fn set_out_of_sync(&self, chunks: Bitmap) {
        self.st().out_of_sync = chunks;
    }

    /// Record chunks as changed on the target (written on an HA peer while it was primary).
    pub fn add_target_dirty(&self, chunks: &Bitmap) {
        self.st().target_dirty.union(chunks);
    }

    /// Swap source and target (the bitmaps swap with them).
    pub fn reverse(self: &Arc<Self>) {
        self.detach();
        {
            let mut s = self
                .source
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut t = self
                .target
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::swap(&mut *s, &mut *t);
            let mut st = self.st();
            let st = &mut *st;
            std::mem::swap(&mut st.out_of_sync, &mut st.target_dirty);
            let mut a = self
                .al
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut b = self
                .target_al
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::swap(&mut *a, &mut *b);
        }
        self.attach();
        if self.state() == CopyState::Synchronized && self.mode() == Mode::Asynchronous {
            self.start_journal();
        }
    }

    /// For tests: stop the background work and never persist again (a simulated crash:
    /// unapplied journal entries are lost with the process).
    pub fn crash(self: &Arc<Self>) {
        self.stopping.store(true, Ordering::Relaxed);
        self.crashed.store(true, Ordering::Relaxed);
        self.stop_journal();
    }

    /// Stop the background work for good.
    pub fn shutdown(self: &Arc<Self>) {
        self.stopping.store(true, Ordering::Relaxed);
        self.stop_journal();
    }

    /// Begin journaling now (a reopened asynchronous pair that is Synchronized).
    pub fn resume_journal(self: &Arc<Self>) {
        self.start_journal();
    }

    fn mark(&self, w: &Write<'_>) {
        self.st().mark(w.offset, w.len);
    }

    /// Applies journal entries to the target: one entry, or a run of adjacent data writes
    /// as one vectored write. True when applied. With `nowait`, only if that needs nothing
    /// but memory (`write_at_nowait`; a discard or zeroes never): false, with nothing
    /// applied, otherwise.
    fn apply_entries(&self, run: &[crate::journal::Entry], nowait: bool) -> blockdev::Result<bool> {
        let target = self.target();
        let dev = target.base();
        let write = |bufs: &[bytes::Bytes], offset| {
            if nowait {
                dev.write_at_nowait(bufs, offset, false)
            } else {
                dev.write_at(bufs, offset, false).map(|()| true)
            }
        };
        match run {
            [e] => match &e.kind {
                EntryKind::Data(b) => write(b, e.offset),
                _ if nowait => Ok(false),
                EntryKind::Discard => dev.discard(e.offset, e.len).map(|()| true),
                EntryKind::Zeroes => dev.write_zeroes(e.offset, e.len, false).map(|()| true),
            },
            [first, ..] => {
                let bufs: Vec<bytes::Bytes> = run
                    .iter()
                    .flat_map(|e| match &e.kind {
                        EntryKind::Data(b) => b.as_slice(),
                        _ => &[],
                    })
                    .cloned()
                    .collect();
                write(&bufs, first.offset)
            }
            [] => Ok(true),
        }
    }
}

/// Where a pair goes when its target fails: Partitioned (16) when the target cannot be
/// reached (a remote target's link), Broken (5) when it answers with an error.
fn failed_state(e: &BlockError) -> CopyState {
    if e.kind == BlockErrorKind::Unreachable {
        CopyState::Partitioned
    } else {
        CopyState::Broken
    }
}

fn copy_chunk(from: &dyn BlockDevice, to: &dyn BlockDevice, c: u64) -> blockdev::Result<()> {
    let len = CHUNK.min(from.size() - c * CHUNK) as usize;
    let mut buf = BytesMut::zeroed(len);
    from.read_at(&mut buf, c * CHUNK)?;
    to.write_at(&[buf.freeze()], c * CHUNK, false)
}
