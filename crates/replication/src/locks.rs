//! Write barriers and chunk locks of a volume.
//!
//! * The gate: every write holds it shared for its whole duration; taking it exclusively
//!   waits for in-flight writes to drain and holds new ones back. A point in time (snapshot,
//!   clone, split) is cut while every member of a group holds its gate exclusively.
//! * Chunk locks: a host write holds its chunks shared; a copy of a chunk (copy-on-write,
//!   background copy, restore) holds it exclusively, so that a copy never interleaves with a
//!   write to the same chunk.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Number of lock stripes; chunk `c` maps to stripe `c % STRIPES`.
const STRIPES: u64 = 256;

/// Striped chunk locks.
#[derive(Debug)]
pub struct ChunkLocks {
    stripes: Vec<RwLock<()>>,
}

/// Held shared chunk locks.
pub struct SharedChunks<'a> {
    _g: Vec<RwLockReadGuard<'a, ()>>,
}

/// Held exclusive chunk locks.
pub struct ExclusiveChunks<'a> {
    _g: Vec<RwLockWriteGuard<'a, ()>>,
}

impl Default for ChunkLocks {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
        }
    }
}

impl ChunkLocks {
    fn stripes(first: u64, last: u64) -> Vec<usize> {
        if last - first + 1 >= STRIPES {
            return (0..STRIPES as usize).collect();
        }
        let mut v: Vec<usize> = (first..=last).map(|c| (c % STRIPES) as usize).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Lock chunks `first..=last` shared.
    pub fn shared(&self, first: u64, last: u64) -> SharedChunks<'_> {
        SharedChunks {
            _g: Self::stripes(first, last)
                .into_iter()
                .map(|i| {
                    self.stripes[i]
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                })
                .collect(),
        }
    }

    /// Lock chunks `first..=last` exclusively.
    pub fn exclusive(&self, first: u64, last: u64) -> ExclusiveChunks<'_> {
        ExclusiveChunks {
            _g: Self::stripes(first, last)
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
