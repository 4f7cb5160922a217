//! The ordered, bounded journal of an asynchronous mirror (or of a consistency group of
//! them): writes are appended after they complete on the source and before they are
//! acknowledged, so the journal order respects every dependency between writes; a shipper
//! applies entries to the targets strictly in order, so each target is always a
//! crash-consistent prefix of its source (of the whole group, for a group journal).

use std::{
    collections::VecDeque,
    sync::{Condvar, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;

/// Default bound on the bytes an asynchronous mirror may lag behind its source. Past it, the
/// pair falls back to dirty-chunk tracking and resynchronizes (crucible's
/// `IO_OUTSTANDING_MAX_BYTES` plays the same role).
pub const ASYNC_MIRROR_MAX_LAG_BYTES: u64 = 64 << 20;

/// What an entry does to the target.
#[derive(Clone, Debug)]
pub enum EntryKind {
    /// Data.
    Data(Vec<Bytes>),
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
    closed: bool,
}

/// A journal.
#[derive(Debug)]
pub struct Journal {
    state: Mutex<State>,
    cv: Condvar,
    max_bytes: u64,
}

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
        }
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
        let mut st = self.st();
        let size = match &kind {
            EntryKind::Data(_) => len,
            _ => 64,
        };
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
        self.cv.notify_all();
        Ok(seq)
    }

    /// The next entry in order (waits up to `timeout`); `None` on timeout or close. The
    /// entry stays counted until [`Journal::applied`].
    pub fn next(&self, timeout: Duration) -> Option<Entry> {
        let mut st = self.st();
        let deadline = Instant::now() + timeout;
        loop {
            if st.closed {
                return None;
            }
            if st.in_flight == 0
                && let Some(e) = st.entries.front().cloned()
            {
                st.in_flight = 1;
                return Some(e);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// The entry returned by `next` has been applied to its target.
    pub fn applied(&self) {
        let mut st = self.st();
        if let Some(e) = st.entries.pop_front() {
            st.bytes -= match e.kind {
                EntryKind::Data(_) => e.len,
                _ => 64,
            };
        }
        st.in_flight = 0;
        self.cv.notify_all();
    }

    /// The entry returned by `next` could not be applied: give it back (it stays first).
    pub fn retry_later(&self) {
        self.st().in_flight = 0;
        self.cv.notify_all();
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
            st = self
                .cv
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let (mine, rest): (Vec<Entry>, Vec<Entry>) =
            st.entries.drain(..).partition(|e| e.mirror == mirror);
        st.entries = rest.into();
        st.bytes = st
            .entries
            .iter()
            .map(|e| {
                if matches!(e.kind, EntryKind::Data(_)) {
                    e.len
                } else {
                    64
                }
            })
            .sum();
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
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_bound_and_take() {
        let j = Journal::new(100);
        assert_eq!(
            j.push(1, 0, 40, EntryKind::Data(vec![Bytes::from(vec![0; 40])])),
            Ok(0)
        );
        assert_eq!(
            j.push(2, 0, 40, EntryKind::Data(vec![Bytes::from(vec![0; 40])])),
            Ok(1)
        );
        assert_eq!(j.push(1, 0, 40, EntryKind::Data(vec![])), Err(Overflow));
        let e = j.next(Duration::from_millis(10)).unwrap();
        assert_eq!((e.seq, e.mirror), (0, 1));
        assert!(
            j.next(Duration::from_millis(10)).is_none(),
            "one entry in flight at a time"
        );
        j.applied();
        assert_eq!(j.lag().0, 40);
        assert_eq!(j.take(2).len(), 1);
        assert!(j.drain(Duration::from_millis(10)));
        assert_eq!(j.lag().0, 0);
    }
}
