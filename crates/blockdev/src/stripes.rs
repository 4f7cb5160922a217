//! Striped reader-writer locks over numbered units (blocks, chunks, megabytes): unit `u`
//! maps to stripe `u % n`. Ranges lock their stripes in ascending order, so that two
//! holders of several stripes cannot deadlock.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Striped locks.
#[derive(Debug)]
pub struct StripedLocks {
    stripes: Vec<RwLock<()>>,
}

/// Held shared stripes (released on drop).
#[derive(Debug)]
pub struct SharedStripes<'a> {
    _g: Vec<RwLockReadGuard<'a, ()>>,
}

/// Held exclusive stripes (released on drop).
#[derive(Debug)]
pub struct ExclusiveStripes<'a> {
    _g: Vec<RwLockWriteGuard<'a, ()>>,
}

impl StripedLocks {
    /// `n` stripes (at least one).
    pub fn new(n: usize) -> Self {
        Self {
            stripes: (0..n.max(1)).map(|_| RwLock::new(())).collect(),
        }
    }

    fn indexes(&self, first: u64, last: u64) -> Vec<usize> {
        let n = self.stripes.len() as u64;
        if last.saturating_sub(first) + 1 >= n {
            return (0..n as usize).collect();
        }
        let mut v: Vec<usize> = (first..=last).map(|u| (u % n) as usize).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Lock units `first..=last` shared.
    pub fn shared(&self, first: u64, last: u64) -> SharedStripes<'_> {
        SharedStripes {
            _g: self
                .indexes(first, last)
                .into_iter()
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
        let mut g = Vec::new();
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
                .into_iter()
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
        assert_eq!(l.indexes(0, 0), vec![0]);
        assert_eq!(l.indexes(63, 64), vec![0, 63]);
        assert_eq!(l.indexes(0, 1 << 40).len(), 64);
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
