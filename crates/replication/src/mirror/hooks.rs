//! A mirror's part in its source's write path: the hooks (prepare, start, finish) of the
//! source and the guard of the target, the threads that apply synchronous target writes,
//! and the thread that ships an asynchronous journal.

use std::{
    sync::{Arc, RwLock, atomic::Ordering},
    time::Duration,
};

use blockdev::{BlockError, BlockErrorKind};
use crossbeam_channel::{Receiver, bounded};

use super::{JournalGroup, Mirror, TargetGuard, TargetJob, TargetWrite, failed_state};
use crate::{
    al::ActivityLog,
    journal::{Entry, EntryKind, SHIP_GATHER},
    types::{CopyState, Mode},
    volume::{Pending, Volume, Write, WriteHook, WriteKind, read_only},
};

/// Applies target writes concurrently with the source write: a synchronous pair's, and an
/// asynchronous pair's large writes that go straight to the target (`Mirror::start_through`).
pub(super) fn target_writer(mirror: std::sync::Weak<Mirror>, rx: Receiver<TargetJob>) {
    while let Ok((w, reply)) = rx.recv() {
        let Some(m) = mirror.upgrade() else { return };
        let target = m.target();
        let dev = target.base();
        let r = match &w.kind {
            EntryKind::Data(b) => dev.write_at(b, w.offset, w.fua),
            EntryKind::Discard => dev.discard(w.offset, w.len),
            EntryKind::Zeroes => dev.write_zeroes(w.offset, w.len, w.fua),
        };
        let _ = reply.send(r);
    }
}

/// Applies a journal's entries in order, each to its mirror's target, a batch at a time: a
/// run of adjacent data writes of one mirror goes to its target as one vectored write.
/// While shipping can wait it runs in `SCHED_IDLE` ([`crate::journal::Journal::shipper`]).
pub(super) fn ship(g: Arc<JournalGroup>) {
    let journal = g.journal.clone();
    let mut batch = Vec::new();
    let _shipping = journal.shipper();
    loop {
        batch.clear();
        if !journal.next_batch(Duration::from_millis(200), SHIP_GATHER, &mut batch) {
            if journal.closed() {
                return;
            }
            continue;
        }
        let (done, failed) = apply_batch(&g, &batch, false);
        journal.applied(done);
        if let Some((m, err)) = failed {
            leave_journal(&g, &m, &err);
        }
    }
}

/// Applies a batch taken from `g`'s journal in order, a run of adjacent entries at a time
/// (`nowait`: as far as that needs nothing but memory). Returns how many entries were
/// applied, and the pair whose target failed, if one did (its entry is the next).
fn apply_batch(
    g: &JournalGroup,
    batch: &[Entry],
    nowait: bool,
) -> (usize, Option<(Arc<Mirror>, BlockError)>) {
    let mut done = 0;
    while done < batch.len() {
        let run = &batch[done..done + adjacent_run(&batch[done..])];
        let Some(m) = g.member(run[0].mirror) else {
            // The pair left the journal: its entries were taken; drop stragglers.
            done += run.len();
            continue;
        };
        match m.apply_entries(run, nowait) {
            Ok(true) => done += run.len(),
            Ok(false) => break,
            Err(err) => return (done, Some((m, err))),
        }
    }
    (done, None)
}

/// A writer ships at most about this much of the journal itself after acknowledging its
/// writes (`ship_acknowledged`); the shipper thread ships what is left.
const ACKED_BYTES: u64 = 256 << 10;

impl blockdev::after_ack::AfterAck for JournalGroup {
    fn run(&self) {
        self.ship_acknowledged();
    }
}

impl JournalGroup {
    /// Ship, on the writer's thread, the writes it has just acknowledged
    /// ([`blockdev::after_ack`]), with what else leads the journal, while the target takes
    /// them in memory. Copied into the target before the source write, on the host's path
    /// (`copy_through`), an asynchronous pair's 4 KiB writes at depth 1 took 1.11x the
    /// time of the same writes without a mirror; made after the answer is sent, the copy
    /// overlaps the initiator's turnaround, and they took 1.00x (40 rounds side by side,
    /// medians). What is not shipped here (a batch in flight, a hold, a target that would
    /// wait or fails) is the shipper thread's, woken by
    /// [`crate::journal::Journal::applied`] for what is left.
    fn ship_acknowledged(&self) {
        // Another writer ships: what it leaves wakes the shipper.
        let Ok(mut batch) = self.acked.try_lock() else {
            return;
        };
        batch.clear();
        if self.journal.take_now(ACKED_BYTES, &mut batch) {
            // A failed target is left to the shipper, which meets the error again.
            let (done, _) = apply_batch(self, &batch, true);
            self.journal.applied(done);
        }
        batch.clear();
    }
}

/// A pair whose asynchronous target failed leaves its journal: its entries not yet applied
/// become out-of-sync chunks, resynchronized later.
fn leave_journal(g: &JournalGroup, m: &Mirror, err: &BlockError) {
    tracing::warn!(mirror = m.id, error = %err, "asynchronous target failed: tracking changes");
    // No more pushes first (see `finish`), then take what was pushed; the pair shows
    // broken once every unshipped write is tracked.
    m.st().journaling = false;
    g.members
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&m.id);
    *m.journal
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    let entries = g.journal.take(m.id);
    let mut st = m.st();
    st.state = failed_state(err);
    for x in entries {
        st.mark(x.offset, x.len);
    }
}

/// The length of the run of entries at the start of `entries` that can go to the target as
/// one write: data of one mirror, each starting where the previous ends, at most 4 MiB.
fn adjacent_run(entries: &[Entry]) -> usize {
    let [first, rest @ ..] = entries else {
        return 0;
    };
    if !matches!(first.kind, EntryKind::Data(_)) {
        return 1;
    }
    let mut end = first.offset + first.len;
    let mut n = 1;
    for e in rest {
        if e.mirror != first.mirror
            || e.offset != end
            || !matches!(e.kind, EntryKind::Data(_))
            || end - first.offset + e.len > RUN_BYTES
        {
            break;
        }
        end += e.len;
        n += 1;
    }
    n
}

/// The most bytes one vectored write to an asynchronous target carries.
const RUN_BYTES: u64 = 4 << 20;

/// A synchronous mirror's target write of at least this many bytes goes to a writer thread,
/// in parallel with the source write, rather than being copied before it on the host's
/// path; so does an asynchronous mirror's, while its journal is empty
/// (`Mirror::start_through`).
const PARALLEL_COPY: u64 = 256 << 10;

/// A write gone straight to an asynchronous pair's target that kept the host waiting this
/// much longer than the source write did marks the target as slow: the pair's writes are
/// all journaled again for [`THROUGH_OFF`]. On two cores busy with 1 MiB writes at depth 32,
/// 1% of them waited over 5 ms for the target's copy and none over 20 ms; a disk that
/// throttles its writer pauses it for 10-200 ms.
const THROUGH_SLOW: Duration = Duration::from_millis(20);

/// How long an asynchronous pair journals every write after a slow or failed straight
/// write, in microseconds.
const THROUGH_OFF: u64 = 1_000_000;

impl Mirror {
    /// Whether `w` is a large write that may go straight to an asynchronous pair's target
    /// (`start_through`), the pair's state aside: data, 256 KiB or more, and the target
    /// open to straight writes (`open_target`).
    fn through_allowed(&self, w: &Write<'_>) -> bool {
        matches!(w.kind, WriteKind::Data(_))
            && w.len >= PARALLEL_COPY
            && self.open_target().is_some()
    }

    /// The target, if it may take an asynchronous pair's writes straight: local, and not
    /// slow lately.
    fn open_target(&self) -> Option<Arc<Volume>> {
        if crate::volume::micros_now() < self.through_off.load(Ordering::Relaxed) {
            return None;
        }
        let target = self.target();
        (!target.base().remote()).then_some(target)
    }

    /// Whether a small write of an asynchronous pair, made where its writer answers it and
    /// then runs what it left for after the answer ([`blockdev::after_ack`]), may be left so:
    /// journaled, and shipped by its writer after the answer
    /// (`JournalGroup::ship_acknowledged`) rather than copied before the source write
    /// (`copy_through`). `ships_after_ack` adds the target's part.
    fn after_ack_candidate(&self, w: &Write<'_>) -> bool {
        matches!(w.kind, WriteKind::Data(_)) && w.len < PARALLEL_COPY && blockdev::after_ack::open()
    }

    /// [`Mirror::after_ack_candidate`], with a target that takes writes straight
    /// (`open_target`).
    fn ships_after_ack(&self, w: &Write<'_>) -> bool {
        self.after_ack_candidate(w) && self.open_target().is_some()
    }

    /// Copy a small write of an asynchronous pair straight into its target, on the host's
    /// path before the source write, as a synchronous pair's small writes are, while the
    /// journal is empty and if the copy needs nothing but memory (`write_at_nowait`): true
    /// when done; it is then not journaled.
    fn copy_through(&self, w: &Write<'_>) -> bool {
        let WriteKind::Data(b) = w.kind else {
            return false;
        };
        if w.len >= PARALLEL_COPY {
            return false;
        }
        let Some(target) = self.open_target() else {
            return false;
        };
        let Some(_through) = self.current_journal().and_then(|j| j.through()) else {
            return false;
        };
        matches!(target.base().write_at_nowait(b, w.offset, false), Ok(true))
    }

    /// Start an asynchronous pair's large write on its target, on a writer thread in
    /// parallel with the source write, while the journal has nothing to ship
    /// ([`crate::journal::Journal::through`]). Shipped later, a large write costs a second
    /// pass over its data while the host's writes keep both cores busy: 1 MiB writes at
    /// depth 32 took 1.17x the time of the same LUN without a mirror (median of 30
    /// rounds), and a synchronous mirror's parallel copy 1.04x.
    ///
    /// The host then waits for the target's copy as for a synchronous mirror's, so only a
    /// local target is written so, and only while it keeps up: a straight write that kept
    /// the host waiting [`THROUGH_SLOW`] longer than the source write, or that failed,
    /// sends the pair's writes to the journal for [`THROUGH_OFF`] (a failed one is
    /// journaled too, and the shipper meets the target's error as for any write). `None`:
    /// journal this write.
    fn start_through(&self, w: &Write<'_>) -> Option<Pending> {
        if !self.through_allowed(w) {
            return None;
        }
        let WriteKind::Data(b) = w.kind else {
            return None;
        };
        let through = self.current_journal()?.through()?;
        let job = TargetWrite {
            kind: EntryKind::Data(b.iter().cloned().collect()),
            offset: w.offset,
            len: w.len,
            fua: false,
        };
        let (tx, rx) = bounded(1);
        self.writer.send((job, tx)).ok()?;
        let off = self.through_off.clone();
        Some(Pending::new(move || {
            // The source write is done: what follows is what the target adds.
            let waited = std::time::Instant::now();
            let r = rx
                .recv()
                .unwrap_or_else(|_| Err(BlockError::new(BlockErrorKind::Io, "mirror writer gone")));
            let slow = waited.elapsed();
            if r.is_err() || slow >= THROUGH_SLOW {
                off.store(crate::volume::micros_now() + THROUGH_OFF, Ordering::Relaxed);
                tracing::debug!(
                    waited_us = slow.as_micros() as u64,
                    failed = r.is_err(),
                    "asynchronous target slow or failing: its large writes are journaled for a while"
                );
            }
            drop(through);
            r
        }))
    }

    /// Record `w`'s extent in activity log `al` (the source's or the target's), if the
    /// pair keeps one, before the write is issued.
    fn log_extent(
        &self,
        al: &RwLock<Option<Arc<ActivityLog>>>,
        vol: &Volume,
        w: &Write<'_>,
    ) -> blockdev::Result<()> {
        let al = al
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(al) = al {
            al.touch(w.offset, w.len, &|| self.save_bitmaps())
                .map_err(|e| BlockError::io(e, format!("activity log of {}", vol.name)))?;
        }
        Ok(())
    }
}

impl WriteHook for Mirror {
    fn prepare(&self, vol: &Volume, w: &Write<'_>) -> blockdev::Result<()> {
        if self.state() == CopyState::Failedover {
            // Split-brain safety: the old primary is fenced while the target is primary.
            return Err(read_only("source is fenced: the mirror has failed over"));
        }
        self.log_extent(&self.al, vol, w)
    }

    fn prepare_nowait(&self, _vol: &Volume, w: &Write<'_>) -> bool {
        let (state, forwards, journals) = {
            let st = self.st();
            (st.state, st.forwards(), st.journals())
        };
        // A large write to a pair that follows copies to the target on a writer thread, in
        // parallel with the source write (`start`), which cannot be waited for here: it
        // takes the path that may wait before anything is locked or logged. So does one
        // that may go straight to an asynchronous pair's target (`start_through`).
        if state == CopyState::Failedover
            || (forwards && matches!(w.kind, WriteKind::Data(_)) && w.len >= PARALLEL_COPY)
            || (journals
                && self.through_allowed(w)
                && self.current_journal().is_some_and(|j| j.is_empty()))
        {
            return false;
        }
        let al = self
            .al
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        al.is_none_or(|al| al.touch_if_active(w.offset, w.len))
    }

    fn start_nowait(&self, _vol: &Volume, w: &Write<'_>) -> Option<bool> {
        let (forwards, journals) = {
            let st = self.st();
            (st.forwards(), st.journals())
        };
        if !forwards {
            // Journaled and shipped after the answer (`ships_after_ack`), or copied now.
            if !journals || self.after_ack_candidate(w) {
                return None;
            }
            return self.copy_through(w).then_some(true);
        }
        match w.kind {
            WriteKind::Data(b) => Some(matches!(
                self.target().base().write_at_nowait(b, w.offset, w.fua),
                Ok(true)
            )),
            _ => Some(false),
        }
    }

    fn start(&self, _vol: &Volume, w: &Write<'_>) -> Option<Pending> {
        let (forwards, journals) = {
            let st = self.st();
            (st.forwards(), st.journals())
        };
        if !forwards {
            if !journals {
                return None;
            }
            if w.len < PARALLEL_COPY {
                return self.copy_through(w).then(|| Pending::new(|| Ok(())));
            }
            return self.start_through(w);
        }
        // A small target write that is a copy into memory (a local image's page cache)
        // costs less than the hand-off to a writer thread: done here, before the source
        // write. A large one is worth the hand-off: both copies then run at once.
        if let WriteKind::Data(b) = w.kind
            && w.len < PARALLEL_COPY
        {
            match self.target().base().write_at_nowait(b, w.offset, w.fua) {
                Ok(true) => return Some(Pending::new(|| Ok(()))),
                Ok(false) => {}
                Err(e) => return Some(Pending::new(move || Err(e))),
            }
        }
        let kind = match w.kind {
            WriteKind::Data(b) => EntryKind::Data(b.iter().cloned().collect()),
            WriteKind::Discard => EntryKind::Discard,
            WriteKind::Zeroes => EntryKind::Zeroes,
        };
        let job = TargetWrite {
            kind,
            offset: w.offset,
            len: w.len,
            fua: w.fua,
        };
        let (tx, rx) = bounded(1);
        if self.writer.send((job, tx)).is_err() {
            return Some(Pending::new(|| {
                Err(BlockError::new(BlockErrorKind::Io, "mirror writer gone"))
            }));
        }
        Some(Pending::new(move || {
            rx.recv()
                .unwrap_or_else(|_| Err(BlockError::new(BlockErrorKind::Io, "mirror writer gone")))
        }))
    }

    fn finish(
        &self,
        vol: &Volume,
        w: &Write<'_>,
        source_ok: bool,
        copy: Option<blockdev::Result<()>>,
    ) {
        let (state, mode, journaling, forwards) = {
            let st = self.st();
            (st.state, st.mode, st.journaling, st.forwards())
        };
        if !source_ok {
            // The target may or may not have it: resync the chunks to be sure.
            self.mark(w);
            return;
        }
        match (state, mode) {
            _ if forwards => {
                if let Some(Err(e)) = copy {
                    tracing::warn!(source = %vol.name, error = %e, "mirror target failed: tracking changes");
                    self.mark(w);
                    self.st().state = failed_state(&e);
                }
            }
            // Gone straight to the target (`start_through`).
            (CopyState::Synchronized, Mode::Asynchronous)
                if journaling && matches!(copy, Some(Ok(()))) => {}
            (CopyState::Synchronized, Mode::Asynchronous) if journaling => {
                let kind = match w.kind {
                    // Copied, when small, into whichever journal is current: that is only
                    // where its memory comes from; the push below is to the journal current
                    // under the pair's lock.
                    WriteKind::Data(b) => EntryKind::Data(match self.current_journal() {
                        Some(j) => j.keep(b),
                        None => b.iter().cloned().collect(),
                    }),
                    WriteKind::Discard => EntryKind::Discard,
                    WriteKind::Zeroes => EntryKind::Zeroes,
                };
                // Pushed under the pair's state lock: a pair leaving its journal clears
                // `journaling` under that lock before it takes its entries, so an entry is
                // either taken (and tracked) or never pushed (and tracked here).
                let after_ack = self.ships_after_ack(w);
                let mut st = self.st();
                if !st.journaling {
                    st.mark(w.offset, w.len);
                    return;
                }
                let g = self.current_group();
                let pushed = g
                    .as_ref()
                    .map(|g| g.journal.append(self.id, w.offset, w.len, kind, !after_ack));
                if let (Some(Ok(_)), Some(g)) = (&pushed, g)
                    && after_ack
                {
                    let g: Arc<dyn blockdev::after_ack::AfterAck> = g;
                    blockdev::after_ack::defer(&g);
                }
                if !matches!(pushed, Some(Ok(_))) {
                    // Journal full: fall back to tracking; the service resynchronizes.
                    tracing::info!(source = %vol.name, "asynchronous journal full: tracking changes");
                    st.journaling = false;
                    st.state = CopyState::Unsynchronized;
                    st.mark(w.offset, w.len);
                    drop(st);
                    self.stop_journal();
                }
            }
            _ => self.mark(w),
        }
    }

    fn flush(&self) -> blockdev::Result<()> {
        let follows = self.st().forwards();
        if follows {
            // SYNCHRONIZE CACHE reaches the target at the same durability.
            if let Err(e) = self.target().base().flush() {
                self.st().state = failed_state(&e);
                tracing::warn!(error = %e, "mirror target flush failed: pair broken");
            }
        }
        Ok(())
    }
}

impl WriteHook for TargetGuard {
    fn prepare(&self, vol: &Volume, w: &Write<'_>) -> blockdev::Result<()> {
        match self.0.state() {
            CopyState::Fractured
            | CopyState::Split
            | CopyState::Failedover
            | CopyState::Broken
            | CopyState::Aborted
            | CopyState::Inactive
            | CopyState::Suspended
            | CopyState::Prepared => {
                // The write is in the target's activity log before it is issued, so a
                // crash cannot lose its tracking.
                self.0.log_extent(&self.0.target_al, vol, w)?;
                Ok(())
            }
            _ => Err(read_only(
                "mirror target is read-only while it follows its source",
            )),
        }
    }

    fn finish(
        &self,
        _vol: &Volume,
        w: &Write<'_>,
        source_ok: bool,
        _copy: Option<blockdev::Result<()>>,
    ) {
        if source_ok {
            let mut st = self.0.st();
            for c in w.chunks() {
                st.target_dirty.set(c);
            }
        }
    }
}
