//! Write barriers and chunk locks of a volume.
//!
//! * The gate: every write holds it shared for its whole duration; taking it exclusively
//!   waits for in-flight writes to drain and holds new ones back. A point in time (snapshot,
//!   clone, split) is cut while every member of a group holds its gate exclusively.
//! * Chunk locks: a host write holds its chunks shared; a copy of a chunk (copy-on-write,
//!   background copy, restore) holds it exclusively, so that a copy never interleaves with a
//!   write to the same chunk.
//! * Range locks: while a volume has relationships, overlapping writes run one after the
//!   other, so that the source and every copy of it (a mirror target, a journal) apply
//!   them in the same order. Writes that do not overlap run concurrently.

use std::sync::{Condvar, Mutex};

use blockdev::stripes::{ExclusiveStripes, SharedStripes, StripedLocks};

/// Number of lock stripes; chunk `c` maps to stripe `c % STRIPES`.
const STRIPES: usize = 256;

/// Striped chunk locks.
#[derive(Debug)]
pub struct ChunkLocks {
    stripes: StripedLocks,
}

/// Held shared chunk locks.
pub type SharedChunks<'a> = SharedStripes<'a>;

/// Held exclusive chunk locks.
pub type ExclusiveChunks<'a> = ExclusiveStripes<'a>;

impl Default for ChunkLocks {
    fn default() -> Self {
        Self {
            stripes: StripedLocks::new(STRIPES),
        }
    }
}

impl ChunkLocks {
    /// Lock chunks `first..=last` shared.
    pub fn shared(&self, first: u64, last: u64) -> SharedChunks<'_> {
        self.stripes.shared(first, last)
    }

    /// Lock chunks `first..=last` shared unless one is held exclusively now.
    pub fn try_shared(&self, first: u64, last: u64) -> Option<SharedChunks<'_>> {
        self.stripes.try_shared(first, last)
    }

    /// Lock chunks `first..=last` exclusively.
    pub fn exclusive(&self, first: u64, last: u64) -> ExclusiveChunks<'_> {
        self.stripes.exclusive(first, last)
    }
}

/// Byte-range locks: a holder excludes every overlapping range.
#[derive(Debug, Default)]
pub struct RangeLocks {
    held: Mutex<Held>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct Held {
    ranges: Vec<(u64, u64)>,
    /// Threads waiting for a range: a release wakes them only when there are some (a
    /// wake-up is a system call even with nobody waiting, and every replicated write
    /// releases a range).
    waiters: usize,
}

impl Held {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.ranges.iter().any(|&(s, e)| s < end && start < e)
    }
}

/// A held byte range.
#[derive(Debug)]
pub struct RangeGuard<'a> {
    locks: &'a RangeLocks,
    range: (u64, u64),
}

impl RangeLocks {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lock `[start, end)`, waiting for overlapping holders.
    pub fn lock(&self, start: u64, end: u64) -> RangeGuard<'_> {
        let end = end.max(start + 1);
        let mut held = self.held();
        while held.overlaps(start, end) {
            held.waiters += 1;
            held = self
                .cv
                .wait(held)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            held.waiters -= 1;
        }
        held.ranges.push((start, end));
        RangeGuard {
            locks: self,
            range: (start, end),
        }
    }

    /// Lock `[start, end)` unless an overlapping range is held now.
    pub fn try_lock(&self, start: u64, end: u64) -> Option<RangeGuard<'_>> {
        let end = end.max(start + 1);
        let mut held = self.held();
        if held.overlaps(start, end) {
            return None;
        }
        held.ranges.push((start, end));
        Some(RangeGuard {
            locks: self,
            range: (start, end),
        })
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held();
        if let Some(i) = held.ranges.iter().position(|r| *r == self.range) {
            held.ranges.swap_remove(i);
        }
        let wake = held.waiters > 0;
        drop(held);
        if wake {
            self.locks.cv.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_ranges_wait_and_others_do_not() {
        let l = std::sync::Arc::new(RangeLocks::default());
        let a = l.lock(0, 4096);
        let _b = l.lock(4096, 8192);
        let l2 = l.clone();
        let t = std::thread::spawn(move || {
            let _c = l2.lock(1000, 2000);
        });
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(!t.is_finished(), "an overlapping range waits");
        assert!(l.try_lock(4000, 5000).is_none());
        assert!(l.try_lock(8192, 9000).is_some());
        drop(a);
        t.join().unwrap();
    }

    #[test]
    fn every_waiter_is_woken_when_the_range_they_wait_for_is_released() {
        let l = std::sync::Arc::new(RangeLocks::default());
        let a = l.lock(0, 8192);
        let waiters: Vec<_> = [(0, 4096), (4096, 8192), (1000, 5000)]
            .into_iter()
            .map(|(s, e)| {
                let l = l.clone();
                std::thread::spawn(move || drop(l.lock(s, e)))
            })
            .collect();
        while l.held().waiters < 3 {
            std::thread::yield_now();
        }
        drop(a);
        for t in waiters {
            t.join().unwrap();
        }
        assert_eq!(l.held().waiters, 0);
        assert!(l.held().ranges.is_empty());
    }
}
