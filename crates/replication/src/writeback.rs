//! Held writes: a volume's write-back cache for host writes whose preparation would wait on
//! a durable commit (a snapshot's first write to a chunk must make the old chunk durable
//! before the new data may reach the origin).
//!
//! Such a write is acknowledged once it is held here, in the order it arrived; a worker then
//! prepares every held write together (one copy-on-write commit for the whole batch) and
//! applies them in order. Until a write is applied, reads of the volume see it on top of
//! the origin, and later writes that overlap it are held behind it. This is the target's
//! volatile write cache in the sense of SBC-3: SYNCHRONIZE CACHE, a point-in-time cut and
//! shutdown wait for every held write; a FUA write, or any write while the LUN's write
//! cache is off, is never held. A held write that later fails is reported by the next
//! SYNCHRONIZE CACHE, as a disk reports a deferred error.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use blockdev::{BlockError, BlockErrorKind};
use bytes::{Bytes, BytesMut};

use crate::bitmap::chunks;

/// Bytes of held data per volume; a write beyond it takes the direct path.
pub const HOLD_MAX: usize = 64 << 20;

/// How long an idle worker waits for more writes before it exits.
const IDLE: Duration = Duration::from_millis(100);

/// One held write: its data is a copy, so that it pins no receive buffer.
#[derive(Debug)]
pub struct Held {
    /// Byte offset.
    pub offset: u64,
    /// The data.
    pub data: Bytes,
}

impl Held {
    fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }

    /// Lay this write over `buf`, which holds `[offset, offset + buf.len())`.
    pub fn overlay(&self, buf: &mut [u8], offset: u64) {
        let start = self.offset.max(offset);
        let end = self.end().min(offset + buf.len() as u64);
        if start >= end {
            return;
        }
        let (from, to) = ((start - self.offset) as usize, (end - self.offset) as usize);
        let at = (start - offset) as usize;
        buf[at..at + (to - from)].copy_from_slice(&self.data[from..to]);
    }
}

#[derive(Debug, Default)]
struct State {
    /// In arrival order; the worker removes from the front once applied.
    queue: VecDeque<Arc<Held>>,
    /// Held writes per chunk they touch.
    chunks: HashMap<u64, u32>,
    bytes: usize,
    /// A worker is running (or being started).
    worker: bool,
    /// The worker waits for writes: the next hold wakes it.
    worker_waiting: bool,
    /// The first held write that failed since the last flush.
    failed: Option<(BlockErrorKind, String)>,
    /// Threads other than the worker waiting for held writes to be applied: applying one
    /// wakes them only when there are some (a wake-up is a system call even with nobody
    /// waiting).
    waiters: usize,
}

/// The held writes of one volume.
#[derive(Debug)]
pub struct WriteBack {
    state: Mutex<State>,
    cv: Condvar,
    /// Number of held writes (read without the lock on every I/O).
    held: AtomicUsize,
    /// How long an idle worker waits before it exits.
    idle: Duration,
}

impl Default for WriteBack {
    fn default() -> Self {
        Self::with_idle(IDLE)
    }
}

/// The outcome of [`WriteBack::hold`].
#[derive(Debug, PartialEq, Eq)]
pub enum Hold {
    /// Held; a worker must be started.
    StartWorker,
    /// Held; the running worker will apply it.
    Held,
    /// No room: the write must take the direct path.
    Full,
    /// Not held: no hook wanted it and it touches no held write.
    NotNeeded,
}

impl WriteBack {
    /// Held writes whose idle worker exits after `idle`.
    pub fn with_idle(idle: Duration) -> Self {
        Self {
            state: Mutex::default(),
            cv: Condvar::new(),
            held: AtomicUsize::new(0),
            idle,
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait<'a>(&self, mut g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        g.waiters += 1;
        let mut g = self
            .cv
            .wait(g)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.waiters -= 1;
        g
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.load(Ordering::Acquire) == 0
    }

    /// Whether a held write touches a chunk of `[offset, offset + len)`.
    pub fn overlaps(&self, offset: u64, len: u64) -> bool {
        if self.is_empty() {
            return false;
        }
        let st = self.st();
        touches(&st, offset, len)
    }

    /// Hold a copy of a write, when `wanted` or when it touches a chunk of a held write
    /// (it must then go after that write).
    pub fn hold(&self, bufs: &[Bytes], offset: u64, wanted: bool) -> Hold {
        if !wanted && self.is_empty() {
            return Hold::NotNeeded;
        }
        let len = blockdev::total_len(bufs) as usize;
        let mut st = self.st();
        if !wanted && !touches(&st, offset, len as u64) {
            return Hold::NotNeeded;
        }
        if st.bytes + len > HOLD_MAX {
            return Hold::Full;
        }
        let mut data = BytesMut::with_capacity(len);
        for b in bufs {
            data.extend_from_slice(b);
        }
        for c in chunks(offset, len as u64) {
            *st.chunks.entry(c).or_default() += 1;
        }
        st.bytes += len;
        st.queue.push_back(Arc::new(Held {
            offset,
            data: data.freeze(),
        }));
        self.held.fetch_add(1, Ordering::Release);
        if st.worker {
            if st.worker_waiting {
                st.worker_waiting = false;
                self.cv.notify_all();
            }
            Hold::Held
        } else {
            st.worker = true;
            Hold::StartWorker
        }
    }

    /// The held writes that overlap `[offset, offset + len)`, in order. Take them before
    /// reading the origin and lay them over what was read: a write applied in between is
    /// then laid over its own data.
    pub fn overlapping(&self, offset: u64, len: u64) -> Vec<Arc<Held>> {
        if self.is_empty() {
            return Vec::new();
        }
        let st = self.st();
        if !touches(&st, offset, len) {
            return Vec::new();
        }
        let end = offset + len;
        st.queue
            .iter()
            .filter(|h| h.offset < end && offset < h.end())
            .cloned()
            .collect()
    }

    /// Wait until no held write touches a chunk of `[offset, offset + len)`.
    pub fn wait_clear(&self, offset: u64, len: u64) {
        if self.is_empty() {
            return;
        }
        let mut st = self.st();
        while touches(&st, offset, len) {
            st = self.wait(st);
        }
    }

    /// Wait until every held write is applied.
    pub fn drain(&self) {
        if self.is_empty() {
            return;
        }
        let mut st = self.st();
        while !st.queue.is_empty() {
            st = self.wait(st);
        }
    }

    /// The failure of a held write since the last call, if one failed.
    pub fn take_failure(&self) -> Option<BlockError> {
        self.st()
            .failed
            .take()
            .map(|(kind, what)| BlockError::new(kind, format!("an earlier held write: {what}")))
    }

    /// The worker's next batch: every write held now, still held (and visible to reads)
    /// until [`WriteBack::applied`]. Empty when nothing arrived for a while; the worker must
    /// then exit.
    pub fn batch(&self) -> Vec<Arc<Held>> {
        let mut st = self.st();
        if st.queue.is_empty() {
            st.worker_waiting = true;
            st = self
                .cv
                .wait_timeout(st, self.idle)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            st.worker_waiting = false;
        }
        if st.queue.is_empty() {
            st.worker = false;
            return Vec::new();
        }
        st.queue.iter().cloned().collect()
    }

    /// The write at the front has been applied (`outcome`).
    pub fn applied(&self, outcome: blockdev::Result<()>) {
        let mut st = self.st();
        let Some(h) = st.queue.pop_front() else {
            return;
        };
        if let Err(e) = outcome {
            tracing::error!(offset = h.offset, len = h.data.len(), error = %e, "a held write failed");
            st.failed.get_or_insert_with(|| (e.kind, e.to_string()));
        }
        for c in chunks(h.offset, h.data.len() as u64) {
            if let Some(n) = st.chunks.get_mut(&c) {
                *n -= 1;
                if *n == 0 {
                    st.chunks.remove(&c);
                }
            }
        }
        st.bytes -= h.data.len();
        self.held.fetch_sub(1, Ordering::Release);
        if st.waiters > 0 {
            self.cv.notify_all();
        }
    }

    /// The worker could not be started: it is not running.
    pub fn worker_gone(&self) {
        self.st().worker = false;
    }
}

fn touches(st: &State, offset: u64, len: u64) -> bool {
    let range = chunks(offset, len);
    if range.end() - range.start() < st.chunks.len() as u64 {
        range.into_iter().any(|c| st.chunks.contains_key(&c))
    } else {
        st.chunks.keys().any(|c| range.contains(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_writes_overlay_reads_in_order_and_clear_once_applied() {
        let wb = WriteBack::default();
        assert_eq!(
            wb.hold(&[Bytes::from_static(b"aaaa")], 10, true),
            Hold::StartWorker
        );
        assert_eq!(
            wb.hold(
                &[Bytes::from_static(b"bb"), Bytes::from_static(b"cc")],
                12,
                false
            ),
            Hold::Held,
            "a write that touches a held write's chunk is held behind it"
        );
        assert_eq!(
            wb.hold(&[Bytes::from_static(b"dd")], 1 << 20, false),
            Hold::NotNeeded
        );
        assert!(wb.overlaps(0, 1));
        assert!(!wb.overlaps(1 << 20, 512));
        let mut buf = [b'.'; 12];
        for h in wb.overlapping(6, 12) {
            h.overlay(&mut buf, 6);
        }
        assert_eq!(&buf, b"....aabbcc..");
        assert_eq!(wb.batch().len(), 2);
        wb.applied(Ok(()));
        wb.applied(Err(BlockError::new(BlockErrorKind::Io, "disk")));
        assert!(wb.is_empty() && !wb.overlaps(0, 1));
        let e = wb.take_failure().expect("the failure is reported once");
        assert_eq!(e.kind, BlockErrorKind::Io);
        assert!(wb.take_failure().is_none());
        // Nothing held: the worker is told to exit after the idle wait.
        assert!(wb.batch().is_empty());
        assert_eq!(
            wb.hold(&[Bytes::from_static(b"x")], 0, false),
            Hold::NotNeeded
        );
        assert_eq!(
            wb.hold(&[Bytes::from_static(b"x")], 0, true),
            Hold::StartWorker
        );
    }

    #[test]
    fn a_hold_wakes_the_waiting_worker() {
        let wb = Arc::new(WriteBack::with_idle(Duration::from_secs(30)));
        assert_eq!(
            wb.hold(&[Bytes::from_static(b"a")], 0, true),
            Hold::StartWorker
        );
        assert_eq!(wb.batch().len(), 1);
        wb.applied(Ok(()));
        let worker = {
            let wb = wb.clone();
            std::thread::spawn(move || {
                let t = std::time::Instant::now();
                (wb.batch().len(), t.elapsed())
            })
        };
        while !wb.st().worker_waiting {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(wb.hold(&[Bytes::from_static(b"b")], 0, true), Hold::Held);
        let (n, waited) = worker.join().unwrap();
        assert_eq!(n, 1);
        assert!(
            waited < Duration::from_secs(20),
            "woken by the hold, not by the 30 s idle timeout ({waited:?})"
        );
    }

    #[test]
    fn writers_waiting_for_held_writes_are_woken_as_they_are_applied() {
        let wb = Arc::new(WriteBack::default());
        assert_eq!(
            wb.hold(&[Bytes::from_static(b"a")], 0, true),
            Hold::StartWorker
        );
        assert_eq!(
            wb.hold(&[Bytes::from(vec![1u8; 512])], 1 << 20, true),
            Hold::Held
        );
        let waiting = |f: fn(&WriteBack)| {
            let wb = wb.clone();
            std::thread::spawn(move || f(&wb))
        };
        let clear = waiting(|wb| wb.wait_clear(0, 1));
        let drain = waiting(WriteBack::drain);
        while wb.st().waiters < 2 {
            std::thread::yield_now();
        }
        assert_eq!(wb.batch().len(), 2);
        wb.applied(Ok(()));
        clear.join().unwrap();
        assert!(!drain.is_finished(), "one write is still held");
        wb.applied(Ok(()));
        drain.join().unwrap();
        assert_eq!(wb.st().waiters, 0);
    }

    #[test]
    fn a_full_cache_refuses() {
        let wb = WriteBack::default();
        let big = Bytes::from(vec![0u8; HOLD_MAX]);
        assert_eq!(wb.hold(&[big], 0, true), Hold::StartWorker);
        assert_eq!(wb.hold(&[Bytes::from_static(b"x")], 0, true), Hold::Full);
    }
}
