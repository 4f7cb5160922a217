//! Striped reader-writer locks over numbered units (blocks, chunks, megabytes): unit `u`
//! maps to stripe `u % n`. Ranges lock their stripes in ascending order, so that two
//! holders of several stripes cannot deadlock.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use smallvec::SmallVec;

/// Guards held without a heap allocation: a range within one or a few stripes (every I/O
/// of up to this many units) locks with no allocation.
type Guards<G> = SmallVec<[G; 4]>;

/// Striped locks.
#[derive(Debug)]
pub struct StripedLocks {
    stripes: Vec<RwLock<()>>,
}

/// Held shared stripes (released on drop).
#[derive(Debug)]
pub struct SharedStripes<'a> {
    _g: Guards<RwLockReadGuard<'a, ()>>,
}

/// Held exclusive stripes (released on drop).
#[derive(Debug)]
pub struct ExclusiveStripes<'a> {
    _g: Guards<RwLockWriteGuard<'a, ()>>,
}

impl StripedLocks {
    /// `n` stripes (at least one).
    pub fn new(n: usize) -> Self {
        Self {
            stripes: (0..n.max(1)).map(|_| RwLock::new(())).collect(),
        }
    }

    /// The stripes of units `first..=last`, ascending, each once: every stripe, or one
    /// run, or two when the range wraps past the last stripe.
    fn indexes(&self, first: u64, last: u64) -> impl Iterator<Item = usize> {
        let n = self.stripes.len() as u64;
        let (a, b) = ((first % n) as usize, (last % n) as usize);
        let (low, high) = if last.saturating_sub(first) + 1 >= n {
            (0..0, 0..n as usize)
        } else if a <= b {
            (0..0, a..b + 1)
        } else {
            (0..b + 1, a..n as usize)
        };
        low.chain(high)
    }

    /// Lock units `first..=last` shared.
    pub fn shared(&self, first: u64, last: u64) -> SharedStripes<'_> {
        SharedStripes {
            _g: self
                .indexes(first, last)
                .map(|i| {
                    self.stripes[i]
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                })
                .collect(),
        }
    }

    /// Lock units `first..=last` shared if no stripe is held exclusively now (`None`: one
    /// is, and nothing is held).
    pub fn try_shared(&self, first: u64, last: u64) -> Option<SharedStripes<'_>> {
        let mut g = Guards::new();
        for i in self.indexes(first, last) {
            match self.stripes[i].try_read() {
                Ok(r) => g.push(r),
                Err(std::sync::TryLockError::Poisoned(p)) => g.push(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => return None,
            }
        }
        Some(SharedStripes { _g: g })
    }

    /// Lock units `first..=last` exclusively.
    pub fn exclusive(&self, first: u64, last: u64) -> ExclusiveStripes<'_> {
        ExclusiveStripes {
            _g: self
                .indexes(first, last)
                .map(|i| {
                    self.stripes[i]
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_map_onto_sorted_stripes() {
        let l = StripedLocks::new(64);
        let ix = |a, b| l.indexes(a, b).collect::<Vec<_>>();
        assert_eq!(ix(0, 0), vec![0]);
        assert_eq!(ix(63, 64), vec![0, 63]);
        assert_eq!(ix(62, 66), vec![0, 1, 2, 62, 63]);
        assert_eq!(ix(130, 131), vec![2, 3]);
        assert_eq!(ix(0, 63), (0..64).collect::<Vec<_>>());
        assert_eq!(ix(5, 1 << 40), (0..64).collect::<Vec<_>>());
        // An exclusive holder keeps out a shared one on the same stripe only.
        let x = l.exclusive(5, 5);
        drop(l.shared(6, 6));
        assert!(l.try_shared(4, 6).is_none());
        assert!(l.try_shared(6, 7).is_some());
        drop(x);
        let s = l.try_shared(4, 6);
        assert!(s.is_some());
        assert!(l.try_shared(5, 5).is_some(), "shared holders share");
    }
}
