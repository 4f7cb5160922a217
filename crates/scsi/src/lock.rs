//! Range locks: commands that read, modify and write (COMPARE AND WRITE, ORWRITE, WRITE
//! ATOMIC) hold their blocks exclusively; plain writes hold theirs shared, so they never
//! interleave with an atomic command on the same blocks.

use blockdev::stripes::{ExclusiveStripes, SharedStripes, StripedLocks};

/// Bytes covered by one stripe.
const STRIPE_BYTES: u64 = 1 << 20;
/// Number of stripes (ranges map onto them modulo this).
const STRIPES: usize = 64;

/// Striped reader-writer locks over a device's byte range.
#[derive(Debug)]
pub(crate) struct RangeLocks {
    stripes: StripedLocks,
}

impl Default for RangeLocks {
    fn default() -> Self {
        Self {
            stripes: StripedLocks::new(STRIPES),
        }
    }
}

fn units(offset: u64, len: u64) -> (u64, u64) {
    (
        offset / STRIPE_BYTES,
        (offset + len.max(1) - 1) / STRIPE_BYTES,
    )
}

impl RangeLocks {
    /// Lock a range shared (plain writes).
    pub(crate) fn shared(&self, offset: u64, len: u64) -> SharedStripes<'_> {
        let (a, b) = units(offset, len);
        self.stripes.shared(a, b)
    }

    /// Lock a range shared unless part of it is held exclusively now.
    pub(crate) fn try_shared(&self, offset: u64, len: u64) -> Option<SharedStripes<'_>> {
        let (a, b) = units(offset, len);
        self.stripes.try_shared(a, b)
    }

    /// Lock a range exclusively (read-modify-write commands).
    pub(crate) fn exclusive(&self, offset: u64, len: u64) -> ExclusiveStripes<'_> {
        let (a, b) = units(offset, len);
        self.stripes.exclusive(a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_to_stripes() {
        assert_eq!(units(0, 4096), (0, 0));
        assert_eq!(units(STRIPE_BYTES - 1, 2), (0, 1));
        assert_eq!(units(63 * STRIPE_BYTES, 2 * STRIPE_BYTES), (63, 64));
        assert_eq!(units(0, 0), (0, 0));
    }
}
