//! Range locks: commands that read, modify and write (COMPARE AND WRITE, ORWRITE, WRITE
//! ATOMIC) hold their blocks exclusively; plain writes hold theirs shared, so they never
//! interleave with an atomic command on the same blocks.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Bytes covered by one stripe.
const STRIPE_BYTES: u64 = 1 << 20;
/// Number of stripes (ranges map onto them modulo this).
const STRIPES: usize = 64;

/// Striped reader-writer locks over a device's byte range.
#[derive(Debug)]
pub(crate) struct RangeLocks {
    stripes: Vec<RwLock<()>>,
}

/// Held shared locks (released on drop).
pub(crate) struct Shared<'a> {
    _guards: Vec<RwLockReadGuard<'a, ()>>,
}

/// Held exclusive locks (released on drop).
pub(crate) struct Exclusive<'a> {
    _guards: Vec<RwLockWriteGuard<'a, ()>>,
}

impl Default for RangeLocks {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
        }
    }
}

impl RangeLocks {
    /// Stripe indexes covering `[offset, offset + len)`, ascending (a fixed order prevents
    /// deadlock between commands locking several stripes).
    fn indexes(offset: u64, len: u64) -> Vec<usize> {
        let first = offset / STRIPE_BYTES;
        let last = (offset + len.max(1) - 1) / STRIPE_BYTES;
        if last - first + 1 >= STRIPES as u64 {
            return (0..STRIPES).collect();
        }
        let mut v: Vec<usize> = (first..=last)
            .map(|s| (s % STRIPES as u64) as usize)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Lock a range shared (plain writes).
    pub(crate) fn shared(&self, offset: u64, len: u64) -> Shared<'_> {
        Shared {
            _guards: Self::indexes(offset, len)
                .into_iter()
                .map(|i| {
                    self.stripes[i]
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                })
                .collect(),
        }
    }

    /// Lock a range exclusively (read-modify-write commands).
    pub(crate) fn exclusive(&self, offset: u64, len: u64) -> Exclusive<'_> {
        Exclusive {
            _guards: Self::indexes(offset, len)
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
    fn stripe_indexes() {
        assert_eq!(RangeLocks::indexes(0, 4096), vec![0]);
        assert_eq!(RangeLocks::indexes(STRIPE_BYTES - 1, 2), vec![0, 1]);
        assert_eq!(
            RangeLocks::indexes(63 * STRIPE_BYTES, 2 * STRIPE_BYTES),
            vec![0, 63]
        );
        assert_eq!(RangeLocks::indexes(0, 1 << 40).len(), STRIPES);
    }
}
