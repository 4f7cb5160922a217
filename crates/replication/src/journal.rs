//! The ordered, bounded journal of an asynchronous mirror (or of a consistency group of
//! them): writes are appended after they complete on the source and before they are
//! acknowledged, so the journal order respects every dependency between writes; a shipper
//! applies entries to the targets strictly in order, so each target is always a
//! crash-consistent prefix of its source (of the whole group, for a group journal).

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use blockdev::Arena;
use bytes::Bytes;

use crate::sched::Background;

/// Default bound on the bytes an asynchronous mirror may lag behind its source. Past it, the
/// pair falls back to dirty-chunk tracking and resynchronizes (crucible's
/// `IO_OUTSTANDING_MAX_BYTES` plays the same role).
pub const ASYNC_MIRROR_MAX_LAG_BYTES: u64 = 64 << 20;

/// A write's data: its Data-Out buffers (up to four held inline, so that journaling a
/// write and handing it to the shipper allocate nothing).
pub type Data = smallvec::SmallVec<[Bytes; 4]>;

/// What an entry does to the target.
#[derive(Clone, Debug)]
pub enum EntryKind {
    /// Data.
    Data(Data),
    /// Deallocate.
    Discard,
    /// Zeroes.
    Zeroes,
}

/// One journaled write.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Position in the journal.
    pub seq: u64,
    /// The mirror (member of a group journal) it belongs to.
    pub mirror: u64,
    /// Byte offset.
    pub offset: u64,
    /// Length.
    pub len: u64,
    /// Contents.
    pub kind: EntryKind,
    /// When it was appended.
    pub at: Instant,
}

#[derive(Debug, Default)]
struct State {
    entries: VecDeque<Entry>,
    bytes: u64,
    next_seq: u64,
    /// Entries handed to the shipper but not yet applied.
    in_flight: usize,
    /// The shipper waits for an entry: the next push wakes it.
    shipper_waiting: bool,
    /// Holds in force (a consistent cut): nothing is handed to the shipper.
    holds: usize,
    /// Writes going straight to their targets ([`Journal::through`]).
    through: usize,
    /// When the shipper last took a batch.
    last_batch: Option<Instant>,
    /// How long the shipper lets writes gather (see [`gather_period`]); `None`: the
    /// shortest, until a rate is known.
    period: Option<Duration>,
    /// Threads other than the shipper waiting on the condition variable (a hold, a take, a
    /// drain): applying a batch wakes them only when there are some, since a wake-up is a
    /// system call even with nobody waiting.
    waiters: usize,
    /// The shipper's thread, while one ships (see [`Journal::shipper`]).
    shipper: Option<Background>,
    closed: bool,
}

impl State {
    /// Hand the first entries, up to about `max_bytes` (one at least), to a shipper:
    /// appended to `out` and counted in flight. Returns their bytes.
    fn hand_out(&mut self, max_bytes: u64, out: &mut Vec<Entry>) -> u64 {
        let mut bytes = 0;
        for e in &self.entries {
            if !out.is_empty() && bytes >= max_bytes {
                break;
            }
            bytes += size_of(e);
            out.push(e.clone());
        }
        self.in_flight = out.len();
        bytes
    }
}

/// A journal.
#[derive(Debug)]
pub struct Journal {
    state: Mutex<State>,
    cv: Condvar,
    max_bytes: u64,
    /// Where small writes' data is copied (see [`Journal::keep`]).
    arena: Mutex<Arena>,
}

/// Writes smaller than this are copied into the journal's arena (see [`Journal::keep`]);
/// larger ones arrive in buffers of their own, which the journal holds as they are.
const COPY_BELOW: u64 = 64 << 10;
/// The journal's arena is made of chunks of this many bytes, and keeps enough of them in
/// line for a quarter of the journal's bound: what the journal holds while its shipper
/// waits for idle CPU time (see [`Journal::shipper`]). With a line of 2 MiB the source
/// still faulted in fresh memory hundreds of times per 20000 writes at depth 1. A journal
/// idle for the shipper's wait (nothing written for 200 ms) lets the arena go.
const ARENA_CHUNK: usize = 1 << 20;

/// How long the shipper, woken by a write to an empty journal, lets more writes gather
/// before it ships, at the least: a busy source wakes it at most this often instead of once
/// per write (a thread wake-up costs about as much CPU as a small write here), and a run of
/// adjacent writes reaches the target as one vectored write. Slower sources gather longer
/// (see `gather_period`).
pub const SHIP_GATHER: Duration = Duration::from_millis(1);

/// The shipper gathers about this much data per batch, as long as that takes no more than
/// [`GATHER_STRETCH`] gather periods.
const BATCH_TARGET: u64 = 512 << 10;

/// The longest gather, in gather periods.
const GATHER_STRETCH: u32 = 10;

/// How long to gather the next batch, given that the last one held `bytes` and was taken
/// `since` after the one before: the time [`BATCH_TARGET`] takes to come at that rate,
/// between `gather` and [`GATHER_STRETCH`] times it. A source written one command at a
/// time (20000 4 KiB writes a second here) is shipped every 6-7 ms, not every millisecond:
/// side by side, 20 rounds of 20000 depth-1 writes each, a 10 ms period instead of 1 ms
/// took the asynchronous source from 1.20x to 1.09x the plain LUN's time and its extra CPU
/// from 17.5 to 6.5 ticks (medians), while busier sources, shipped in batches of a
/// millisecond, did worse with 10 ms (a quarter-full journal ships in the normal class).
fn gather_period(bytes: u64, since: Duration, gather: Duration) -> Duration {
    let longest = gather * GATHER_STRETCH;
    if bytes == 0 {
        return longest;
    }
    since
        .mul_f64(BATCH_TARGET as f64 / bytes as f64)
        .clamp(gather, longest)
}

/// At most this many bytes of data are shipped as one batch.
const BATCH_BYTES: u64 = 8 << 20;

/// The journal is full: the caller falls back to dirty tracking.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

impl Journal {
    /// An empty journal bounded to `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            max_bytes,
            arena: Mutex::new(Arena::new(
                ARENA_CHUNK,
                (max_bytes / 4 / ARENA_CHUNK as u64).max(2) as usize,
            )),
        }
    }

    fn arena(&self) -> std::sync::MutexGuard<'_, Arena> {
        self.arena
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A write's data as the journal keeps it until shipped. A small write's data is a
    /// slice of its connection's receive buffer, shared with the PDUs around it: held, it
    /// keeps the whole buffer (256 KiB) from being reused, so the journal's memory was up
    /// to 64 times what it counts, and the connection received into fresh memory (3000-8000
    /// page faults per 20000-40000 writes) while the journal was not empty. It is copied
    /// into the journal's arena instead, whose chunks are reused as batches are shipped.
    /// The copy costs no time that shows: side by side, 24 rounds of 20000 4 KiB writes at
    /// depth 1, the asynchronous source's time over the plain LUN's was the same as the
    /// binary before (median of the per-round quotients 1.00). Larger writes come in
    /// buffers of their own (from the I/O buffer pool), held as they are.
    pub fn keep(&self, bufs: &[Bytes]) -> Data {
        let len: usize = bufs.iter().map(Bytes::len).sum();
        if len as u64 >= COPY_BELOW {
            return bufs.iter().cloned().collect();
        }
        let mut arena = self.arena();
        let chunk = arena.room(len);
        for b in bufs {
            chunk.extend_from_slice(b);
        }
        smallvec::smallvec![chunk.split().freeze()]
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Append a write.
    pub fn push(
        &self,
        mirror: u64,
        offset: u64,
        len: u64,
        kind: EntryKind,
    ) -> Result<u64, Overflow> {
        self.append(mirror, offset, len, kind, true)
    }

    /// Append a write; `wake`: wake a waiting shipper for it. Not woken, the shipper leaves
    /// it to its writer, which ships it itself once it has acknowledged it
    /// ([`Journal::take_now`]), or finds it at its next wake-up.
    pub fn append(
        &self,
        mirror: u64,
        offset: u64,
        len: u64,
        kind: EntryKind,
        wake: bool,
    ) -> Result<u64, Overflow> {
        let mut st = self.st();
        let size = kind_size(&kind, len);
        if st.bytes + size > self.max_bytes {
            return Err(Overflow);
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.bytes += size;
        st.entries.push_back(Entry {
            seq,
            mirror,
            offset,
            len,
            kind,
            at: Instant::now(),
        });
        if st.bytes >= self.max_bytes / 4
            && let Some(s) = st.shipper.as_mut()
        {
            s.set(false);
        }
        if wake && st.shipper_waiting {
            st.shipper_waiting = false;
            self.cv.notify_all();
        }
        Ok(seq)
    }

    /// The calling thread ships this journal until the returned guard drops. While shipping
    /// can wait (under a quarter of the bound, nobody waiting for the journal), it runs in
    /// `SCHED_IDLE` where it may come back (`crate::sched`): on CPU time the host's I/O
    /// leaves over, without preempting the threads that serve it. It returns to the normal
    /// class as soon as the journal is a quarter full or a thread waits for it (a drain, a
    /// hold, a take), and goes back once a batch is taken with under an eighth in the
    /// journal and nobody waiting. On two busy cores its wake-ups had preempted the
    /// connection's thread 370-490 times per 40000 4 KiB writes at depth 32.
    pub fn shipper(&self) -> ShipperThread<'_> {
        self.st().shipper = Some(Background::this_thread());
        ShipperThread(self)
    }

    /// Whether shipping is urgent (see [`Journal::shipper`]); `normal`: the shipper is in
    /// the normal class now.
    fn urgent(&self, st: &State, normal: bool) -> bool {
        let at = if normal {
            self.max_bytes / 8
        } else {
            self.max_bytes / 4
        };
        st.waiters > 0 || st.bytes >= at
    }

    /// The next entries in order, appended to `out` (waits up to `timeout` for the first).
    /// Unless the journal is a quarter full, writes gather first: for `gather` when it had
    /// to wait, else until `gather` has passed since the previous batch was taken, so that
    /// a steady stream of writes is shipped a batch per `gather` (adjacent writes as one
    /// vectored write), not an entry or two at a time, each costing the locks, wake-ups
    /// and a system call. False on timeout or close. The entries stay in the journal,
    /// counted, until [`Journal::applied`].
    pub fn next_batch(&self, timeout: Duration, gather: Duration, out: &mut Vec<Entry>) -> bool {
        let mut st = self.st();
        let deadline = Instant::now() + timeout;
        let mut waited = false;
        let mut gathered = false;
        loop {
            if st.closed {
                return false;
            }
            if st.holds == 0 && st.in_flight == 0 && !st.entries.is_empty() {
                let period = st.period.unwrap_or(gather).max(gather);
                let pause = if gathered || gather.is_zero() || st.bytes >= self.max_bytes / 4 {
                    Duration::ZERO
                } else if waited {
                    period
                } else {
                    st.last_batch
                        .map_or(Duration::ZERO, |t| period.saturating_sub(t.elapsed()))
                };
                if pause.is_zero() {
                    break;
                }
                drop(st);
                std::thread::sleep(pause);
                st = self.st();
                gathered = true;
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                // Idle: the arena lets its memory go.
                let idle = st.entries.is_empty();
                drop(st);
                if idle {
                    self.arena().clear();
                }
                return false;
            }
            waited = true;
            st.shipper_waiting = true;
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            st.shipper_waiting = false;
        }
        let bytes = st.hand_out(BATCH_BYTES, out);
        let now = Instant::now();
        if let Some(t) = st.last_batch {
            st.period = Some(gather_period(bytes, now - t, gather));
        }
        st.last_batch = Some(now);
        let normal = !st.shipper.as_ref().is_some_and(Background::idle);
        let background = !self.urgent(&st, normal);
        if let Some(s) = st.shipper.as_mut() {
            s.set(background);
        }
        true
    }

    /// The entries a writer ships itself, right after acknowledging its writes (appended
    /// without waking the shipper, [`Journal::append`]): the first entries, in order, up to
    /// about `max_bytes`, appended to `out` and counted as in flight until
    /// [`Journal::applied`], as a batch of the shipper's. None (false) while a batch is in
    /// flight, a hold is in force, or the journal is closed or empty: the entries are then
    /// the shipper's.
    pub fn take_now(&self, max_bytes: u64, out: &mut Vec<Entry>) -> bool {
        let mut st = self.st();
        if st.closed || st.holds > 0 || st.in_flight > 0 || st.entries.is_empty() {
            return false;
        }
        st.hand_out(max_bytes, out);
        true
    }

    /// The first `n` entries returned by `next_batch` (or `take_now`) have been applied to
    /// their targets; the rest (if any) are given back and come first in the next batch.
    /// Entries left in the journal wake a waiting shipper: a writer that shipped its own
    /// may leave some, pushed meanwhile or not applied.
    pub fn applied(&self, n: usize) {
        let mut st = self.st();
        for _ in 0..n.min(st.in_flight) {
            if let Some(e) = st.entries.pop_front() {
                st.bytes -= size_of(&e);
            }
        }
        st.in_flight = 0;
        let wake = st.shipper_waiting && !st.entries.is_empty();
        if wake {
            st.shipper_waiting = false;
        }
        if st.waiters > 0 || wake {
            self.cv.notify_all();
        }
    }

    /// Wait on the condition variable as a thread other than the shipper.
    fn wait<'a>(
        &self,
        mut st: std::sync::MutexGuard<'a, State>,
        timeout: Option<Duration>,
    ) -> std::sync::MutexGuard<'a, State> {
        st.waiters += 1;
        // Somebody waits for the shipper: it ships in the normal class.
        if let Some(s) = st.shipper.as_mut() {
            s.set(false);
        }
        let mut st = match timeout {
            Some(t) => {
                self.cv
                    .wait_timeout(st, t)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0
            }
            None => self
                .cv
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        };
        st.waiters -= 1;
        st
    }

    /// Hand nothing more to the shipper until [`Journal::release`], once the batch in
    /// flight and the writes going straight to their targets ([`Journal::through`]) are
    /// applied: the members of a consistent group leave the journal one by one at a cut,
    /// and no target may move past the cut meanwhile.
    pub fn hold(&self) {
        let mut st = self.st();
        st.holds += 1;
        while (st.in_flight > 0 || st.through > 0) && !st.closed {
            st = self.wait(st, None);
        }
    }

    /// End a [`Journal::hold`].
    pub fn release(&self) {
        let mut st = self.st();
        st.holds = st.holds.saturating_sub(1);
        self.cv.notify_all();
    }

    /// Leave to the caller a write it may apply to its target itself, at once, instead of
    /// appending it: only when nothing in the journal is waiting to be applied (so the
    /// targets have every write acknowledged before this one, and apply it in order) and
    /// no hold is in force (so no target moves past a cut). `None` otherwise. The journal
    /// counts the write until the returned guard drops, and a hold waits for it.
    pub fn through(self: &Arc<Self>) -> Option<Through> {
        let mut st = self.st();
        if !st.entries.is_empty() || st.holds > 0 || st.closed {
            return None;
        }
        st.through += 1;
        Some(Through(self.clone()))
    }

    /// Whether nothing is waiting to be applied.
    pub fn is_empty(&self) -> bool {
        self.st().entries.is_empty()
    }

    /// The byte ranges of `mirror`'s entries not yet applied (for persistence: they are
    /// chunks the target may lack).
    pub fn pending_ranges(&self, mirror: u64) -> Vec<(u64, u64)> {
        self.st()
            .entries
            .iter()
            .filter(|e| e.mirror == mirror)
            .map(|e| (e.offset, e.len))
            .collect()
    }

    /// Remove and return every entry of `mirror` (the pair stops journaling), waiting for an
    /// in-flight entry to finish first.
    pub fn take(&self, mirror: u64) -> Vec<Entry> {
        let mut st = self.st();
        while st.in_flight > 0 && !st.closed {
            st = self.wait(st, None);
        }
        let (mine, rest): (Vec<Entry>, Vec<Entry>) =
            st.entries.drain(..).partition(|e| e.mirror == mirror);
        st.entries = rest.into();
        st.bytes = st.entries.iter().map(size_of).sum();
        self.cv.notify_all();
        mine
    }

    /// Wait until every entry appended so far is applied (or `timeout`). True when drained.
    pub fn drain(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.st();
        let target = st.next_seq;
        loop {
            let pending = st.entries.front().is_some_and(|e| e.seq < target);
            if !pending {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || st.closed {
                return false;
            }
            st = self.wait(st, Some(deadline - now));
        }
    }

    /// Current lag: bytes not yet applied, and the age of the oldest entry.
    pub fn lag(&self) -> (u64, Duration) {
        let st = self.st();
        (
            st.bytes,
            st.entries
                .front()
                .map(|e| e.at.elapsed())
                .unwrap_or_default(),
        )
    }

    /// Stop: the shipper exits.
    pub fn close(&self) {
        self.st().closed = true;
        self.cv.notify_all();
    }

    /// Whether the journal was closed.
    pub fn closed(&self) -> bool {
        self.st().closed
    }
}

/// A write going straight to its target ([`Journal::through`]), counted until dropped.
#[derive(Debug)]
pub struct Through(Arc<Journal>);

impl Drop for Through {
    fn drop(&mut self) {
        let mut st = self.0.st();
        st.through -= 1;
        if st.waiters > 0 {
            self.0.cv.notify_all();
        }
    }
}

/// The shipper's registration ([`Journal::shipper`]), dropped when it stops shipping.
#[derive(Debug)]
pub struct ShipperThread<'a>(&'a Journal);

impl Drop for ShipperThread<'_> {
    fn drop(&mut self) {
        self.0.st().shipper = None;
    }
}

/// What an entry counts against the journal's bound: its data, or a nominal 64 bytes.
fn kind_size(kind: &EntryKind, len: u64) -> u64 {
    match kind {
        EntryKind::Data(_) => len,
        _ => 64,
    }
}

fn size_of(e: &Entry) -> u64 {
    kind_size(&e.kind, e.len)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use super::*;

    /// A write may go straight to its target only while nothing waits in the journal and no
    /// hold is in force, and a hold waits for such writes to end.
    #[test]
    fn writes_go_straight_only_past_an_empty_unheld_journal() {
        let j = Arc::new(Journal::new(1 << 20));
        let first = j.through().expect("an empty journal");
        let second = j.through().expect("several at once");
        // A hold waits for both.
        let released = AtomicBool::new(false);
        std::thread::scope(|s| {
            let hold = s.spawn(|| {
                j.hold();
                released.load(Ordering::Acquire)
            });
            std::thread::sleep(Duration::from_millis(30));
            drop(first);
            std::thread::sleep(Duration::from_millis(30));
            assert!(!hold.is_finished(), "a hold waits for every straight write");
            released.store(true, Ordering::Release);
            drop(second);
            assert!(
                hold.join().unwrap(),
                "the hold began after the last one ended"
            );
        });
        assert!(j.through().is_none(), "not while held");
        j.release();
        j.push(1, 0, 4096, EntryKind::Zeroes).unwrap();
        assert!(j.through().is_none(), "not past an entry waiting");
        let mut batch = Vec::new();
        assert!(j.next_batch(Duration::from_millis(10), Duration::ZERO, &mut batch));
        assert!(j.through().is_none(), "not past an entry being applied");
        j.applied(batch.len());
        assert!(j.is_empty());
        assert!(j.through().is_some(), "empty again");
        j.close();
        assert!(j.through().is_none(), "not once closed");
    }

    /// A writer that ships its own acknowledged writes takes them as the shipper takes a
    /// batch: in order, up to its bound, counted in flight (so nobody else takes a batch
    /// meanwhile), never during a hold; what it does not apply stays first, and wakes a
    /// waiting shipper.
    #[test]
    fn a_writer_takes_its_acknowledged_writes_as_a_batch() {
        let j = Arc::new(Journal::new(1 << 20));
        let mut out = Vec::new();
        assert!(!j.take_now(1 << 20, &mut out), "nothing to take");
        for i in 0..3 {
            j.append(1, i * 4096, 4096, data(4096), false).unwrap();
        }
        assert!(j.take_now(4096, &mut out));
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), [0]);
        let mut other = Vec::new();
        assert!(
            !j.take_now(1 << 20, &mut other),
            "one batch in flight at a time"
        );
        assert!(!j.next_batch(Duration::ZERO, Duration::ZERO, &mut other));
        j.applied(0);
        out.clear();
        assert!(
            j.take_now(1 << 20, &mut out),
            "given back, it comes first again"
        );
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2]);
        j.applied(1);
        assert_eq!(j.lag().0, 2 * 4096, "what was not applied stays");

        j.hold();
        assert!(!j.take_now(1 << 20, &mut other), "not during a hold");
        j.release();

        // A shipper waiting while a writer ships is woken for what the writer leaves.
        out.clear();
        assert!(j.take_now(4096, &mut out));
        let shipper = {
            let j = j.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let mut batch = Vec::new();
                let got = j.next_batch(Duration::from_secs(60), Duration::ZERO, &mut batch);
                (got, t.elapsed(), batch.len())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        j.applied(1);
        let (got, waited, n) = shipper.join().unwrap();
        assert!(got && n == 1, "the shipper takes what is left");
        assert!(
            waited < Duration::from_secs(30),
            "woken, not timed out: {waited:?}"
        );
    }

    #[test]
    fn order_bound_and_take() {
        let j = Journal::new(100);
        assert_eq!(
            j.push(
                1,
                0,
                40,
                EntryKind::Data(smallvec::smallvec![Bytes::from(vec![0; 40])])
            ),
            Ok(0)
        );
        assert_eq!(
            j.push(
                2,
                0,
                40,
                EntryKind::Data(smallvec::smallvec![Bytes::from(vec![0; 40])])
            ),
            Ok(1)
        );
        assert_eq!(
            j.push(1, 0, 40, EntryKind::Data(Data::new())),
            Err(Overflow)
        );
        let mut batch = Vec::new();
        assert!(j.next_batch(Duration::from_millis(10), Duration::ZERO, &mut batch));
        let seqs: Vec<_> = batch.iter().map(|e| (e.seq, e.mirror)).collect();
        assert_eq!(seqs, [(0, 1), (1, 2)], "every waiting entry, in order");
        let mut again = Vec::new();
        assert!(
            !j.next_batch(Duration::from_millis(10), Duration::ZERO, &mut again),
            "one batch in flight at a time"
        );
        j.applied(1);
        assert_eq!(j.lag().0, 40, "the entry not applied is given back");
        j.hold();
        assert!(
            !j.next_batch(Duration::from_millis(10), Duration::ZERO, &mut again),
            "nothing is handed out while held"
        );
        j.release();
        assert!(j.next_batch(Duration::from_millis(10), Duration::ZERO, &mut again));
        assert_eq!(again.len(), 1);
        j.applied(0);
        assert_eq!(j.take(2).len(), 1);
        assert!(j.drain(Duration::from_millis(10)));
        assert_eq!(j.lag().0, 0);
    }

    fn data(n: usize) -> EntryKind {
        EntryKind::Data(smallvec::smallvec![Bytes::from(vec![7; n])])
    }

    /// A buffer that tells when it is freed.
    struct Watched(Vec<u8>, Arc<AtomicBool>);

    impl AsRef<[u8]> for Watched {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            self.1.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn small_writes_do_not_hold_the_buffers_they_came_in() {
        let j = Journal::new(64 << 20);
        // A connection's receive buffer, with a 4 KiB write's data in it.
        let freed = Arc::new(AtomicBool::new(false));
        let received = Bytes::from_owner(Watched(
            (0..256 << 10).map(|i| (i % 251) as u8).collect(),
            freed.clone(),
        ));
        let kept = j.keep(&[received.slice(4096..6144), received.slice(6144..8192)]);
        let want = received[4096..8192].to_vec();
        j.push(1, 0, 4096, EntryKind::Data(kept)).unwrap();
        drop(received);
        assert!(
            freed.load(Ordering::SeqCst),
            "the journal holds the whole receive buffer"
        );
        let mut batch = Vec::new();
        assert!(j.next_batch(Duration::from_secs(1), Duration::ZERO, &mut batch));
        let EntryKind::Data(d) = &batch[0].kind else {
            panic!("not data")
        };
        assert_eq!(d.concat(), want);
        j.applied(1);
        batch.clear();
        // A large write's data, in a buffer of its own, is held as it is.
        let own = Bytes::from(vec![5u8; COPY_BELOW as usize]);
        assert_eq!(j.keep(std::slice::from_ref(&own))[0].as_ptr(), own.as_ptr());
        // Idle, the journal lets its arena go.
        assert_eq!(j.arena().chunks(), 1);
        assert!(!j.next_batch(Duration::from_millis(1), Duration::ZERO, &mut batch));
        assert_eq!(j.arena().chunks(), 0);
    }

    /// The shipper ships in `SCHED_IDLE` (where it may come back) while the journal is short
    /// and nobody waits for it; in the normal class from a quarter full down to an eighth,
    /// and while a drain waits.
    #[test]
    fn the_shipper_runs_in_the_background_until_shipping_is_urgent() {
        use crate::sched::{may_leave_idle, policy};
        let background = if may_leave_idle() {
            libc::SCHED_IDLE
        } else {
            libc::SCHED_OTHER
        };
        let j = Journal::new(1 << 20);
        let take = |batch: &mut Vec<Entry>| {
            batch.clear();
            assert!(j.next_batch(Duration::from_secs(1), Duration::ZERO, batch));
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                let _shipping = j.shipper();
                let mut batch = Vec::new();
                j.push(1, 0, 4096, data(4096)).unwrap();
                take(&mut batch);
                assert_eq!(policy(0), Some(background), "a short journal");
                j.applied(batch.len());

                j.push(1, 0, 200 << 10, data(200 << 10)).unwrap();
                take(&mut batch);
                assert_eq!(policy(0), Some(background), "under a quarter");
                j.push(1, 0, 56 << 10, data(56 << 10)).unwrap();
                assert_eq!(policy(0), Some(libc::SCHED_OTHER), "a quarter: at once");
                j.applied(1);
                take(&mut batch);
                assert_eq!(policy(0), Some(background), "56 KiB left: under an eighth");
                j.applied(batch.len());

                j.push(1, 0, 4096, data(4096)).unwrap();
                take(&mut batch);
                assert_eq!(policy(0), Some(background));
                std::thread::scope(|s| {
                    let drain = s.spawn(|| j.drain(Duration::from_secs(10)));
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while policy(0) != Some(libc::SCHED_OTHER) {
                        assert!(
                            Instant::now() < deadline,
                            "a waiting drain: the normal class"
                        );
                        std::thread::yield_now();
                    }
                    j.applied(batch.len());
                    assert!(drain.join().unwrap());
                });
                j.push(1, 0, 4096, data(4096)).unwrap();
                take(&mut batch);
                assert_eq!(policy(0), Some(background), "nobody waits any more");
                j.applied(batch.len());
            });
        });
    }

    #[test]
    fn a_busy_journal_is_shipped_a_batch_per_gather_period() {
        let j = Journal::new(1 << 20);
        let gather = Duration::from_millis(60);
        j.push(1, 0, 512, data(512)).unwrap();
        let mut first = Vec::new();
        let t = Instant::now();
        assert!(j.next_batch(Duration::from_secs(5), gather, &mut first));
        assert!(t.elapsed() < gather, "the first batch goes at once");
        j.applied(first.len());
        j.push(1, 512, 512, data(512)).unwrap();
        let mut second = Vec::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(gather / 3);
                j.push(1, 1024, 512, data(512)).unwrap();
            });
            assert!(j.next_batch(Duration::from_secs(5), gather, &mut second));
        });
        assert!(
            t.elapsed() >= gather,
            "the next batch waits for the gather period ({:?})",
            t.elapsed()
        );
        assert_eq!(
            second.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [512, 1024],
            "what arrived meanwhile ships with it"
        );
        j.applied(second.len());
        // 1 KiB in a gather period is a slow source: the next batch gathers longer.
        j.push(1, 1536, 512, data(512)).unwrap();
        let mut third = Vec::new();
        let t = Instant::now();
        assert!(j.next_batch(Duration::from_secs(5), gather, &mut third));
        assert!(
            t.elapsed() >= gather * 2,
            "a slow source gathers longer ({:?})",
            t.elapsed()
        );
        j.applied(third.len());
        // A quarter-full journal does not wait.
        j.push(1, 0, 256 << 10, data(256 << 10)).unwrap();
        let mut fourth = Vec::new();
        let t = Instant::now();
        assert!(j.next_batch(Duration::from_secs(5), gather, &mut fourth));
        assert!(t.elapsed() < gather, "{:?}", t.elapsed());
    }

    #[test]
    fn the_gather_period_follows_the_write_rate() {
        let ms = Duration::from_millis;
        // 512 KiB a millisecond or faster: the shortest period.
        assert_eq!(gather_period(512 << 10, ms(1), ms(1)), ms(1));
        assert_eq!(gather_period(8 << 20, ms(1), ms(1)), ms(1));
        // 80 KiB a millisecond (one 4 KiB write every 50 µs): 6.4 ms.
        assert_eq!(
            gather_period(80 << 10, ms(1), ms(1)),
            Duration::from_micros(6400)
        );
        // Slower, or nothing: at most ten periods.
        assert_eq!(gather_period(4096, ms(1), ms(1)), ms(10));
        assert_eq!(gather_period(0, ms(1), ms(1)), ms(10));
    }
}
