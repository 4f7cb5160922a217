//! Serial number arithmetic (RFC 1982) for CmdSN, StatSN, DataSN and R2TSN, which wrap at 2^32.

/// `a < b` in serial number arithmetic.
pub fn sn_lt(a: u32, b: u32) -> bool {
    a != b && (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in serial number arithmetic.
pub fn sn_le(a: u32, b: u32) -> bool {
    a == b || sn_lt(a, b)
}

/// Whether `sn` lies in the window `[lo, hi]`.
pub fn sn_in_window(sn: u32, lo: u32, hi: u32) -> bool {
    sn_le(lo, sn) && sn_le(sn, hi)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn wrap_around() {
        assert!(sn_lt(0xffff_fffe, 1));
        assert!(!sn_lt(1, 0xffff_fffe));
        assert!(sn_in_window(0, 0xffff_fff0, 5));
        assert!(!sn_in_window(6, 0xffff_fff0, 5));
        assert!(sn_le(7, 7));
        assert!(!sn_lt(7, 7));
    }

    proptest! {
        #[test]
        fn window_of_any_base(base: u32, depth in 1u32..1024, off in 0u32..2048) {
            let hi = base.wrapping_add(depth - 1);
            let sn = base.wrapping_add(off);
            prop_assert_eq!(sn_in_window(sn, base, hi), off < depth);
            prop_assert!(!sn_in_window(base.wrapping_sub(1), base, hi));
        }
    }
}
