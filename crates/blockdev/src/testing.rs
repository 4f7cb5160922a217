//! A conformance battery every [`BlockDevice`] implementation runs (openraft's storage
//! `Suite` pattern): each test states one property of the trait's contract. Compiled for
//! tests only (`#[cfg(test)] mod testing` in lib.rs): its `unwrap`s are test assertions.

use bytes::Bytes;

use crate::{BlockDevice, BlockErrorKind};

/// The battery.
pub(crate) struct Suite;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

impl Suite {
    /// Run every test against devices made by `make(size)`.
    pub(crate) fn run(make: impl Fn(u64) -> Box<dyn BlockDevice>) {
        Self::new_device_reads_zeroes(&*make(1 << 20));
        Self::write_then_read(&*make(1 << 20));
        Self::vectored_write_is_concatenated(&*make(1 << 20));
        Self::out_of_bounds_is_refused(&*make(1 << 20));
        Self::discard_reads_back_zeroes(&*make(4 << 20));
        Self::write_zeroes(&*make(1 << 20));
        Self::allocation_map_covers_the_range(&*make(4 << 20));
        Self::flush_and_fua_succeed(&*make(1 << 20));
    }

    fn new_device_reads_zeroes(d: &dyn BlockDevice) {
        let mut buf = vec![1u8; 8192];
        d.read_at(&mut buf, 4096).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }

    fn write_then_read(d: &dyn BlockDevice) {
        let data = pattern(70_000, 3);
        d.write_at(&[Bytes::from(data.clone())], 12_345, false)
            .unwrap();
        let mut buf = vec![0u8; data.len()];
        d.read_at(&mut buf, 12_345).unwrap();
        assert_eq!(buf, data);
        let mut edge = vec![0u8; 10];
        d.read_at(&mut edge, 12_340).unwrap();
        assert_eq!(&edge[..5], &[0; 5]);
        assert_eq!(&edge[5..], &data[..5]);
        // A read that does not wait returns the same bytes, or says it would have to wait.
        let mut now = vec![0u8; data.len()];
        if d.read_at_nowait(&mut now, 12_345).unwrap() {
            assert_eq!(now, data);
        }
        assert_eq!(
            d.read_at_nowait(&mut now, d.size() - 100).unwrap_err().kind,
            BlockErrorKind::OutOfBounds
        );
        // A write that does not wait lands whole, or says it would have to wait.
        let more = pattern(9000, 7);
        if d.write_at_nowait(&[Bytes::from(more.clone())], 200_000, false)
            .unwrap()
        {
            let mut buf = vec![0u8; more.len()];
            d.read_at(&mut buf, 200_000).unwrap();
            assert_eq!(buf, more);
        }
        let err = d
            .write_at_nowait(&[Bytes::from(vec![0u8; 512])], d.size(), false)
            .unwrap_err();
        assert_eq!(err.kind, BlockErrorKind::OutOfBounds);
    }

    fn vectored_write_is_concatenated(d: &dyn BlockDevice) {
        let parts: Vec<Bytes> = (0..5u8)
            .map(|i| Bytes::from(pattern(1000 + usize::from(i) * 7, i)))
            .collect();
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        d.write_at(&parts, 100_000, false).unwrap();
        let mut buf = vec![0u8; joined.len()];
        d.read_at(&mut buf, 100_000).unwrap();
        assert_eq!(buf, joined);
    }

    fn out_of_bounds_is_refused(d: &dyn BlockDevice) {
        let size = d.size();
        let mut buf = vec![0u8; 512];
        assert_eq!(
            d.read_at(&mut buf, size - 256).unwrap_err().kind,
            BlockErrorKind::OutOfBounds
        );
        let err = d
            .write_at(&[Bytes::from(vec![0u8; 512])], size, false)
            .unwrap_err();
        assert_eq!(err.kind, BlockErrorKind::OutOfBounds);
        assert_eq!(
            d.discard(u64::MAX - 1, 4).unwrap_err().kind,
            BlockErrorKind::OutOfBounds
        );
        d.read_at(&mut buf, size - 512).unwrap();
    }

    fn discard_reads_back_zeroes(d: &dyn BlockDevice) {
        d.write_at(&[Bytes::from(vec![0xaa; 3 << 20])], 0, false)
            .unwrap();
        d.discard(4096, 2 << 20).unwrap();
        let mut buf = vec![1u8; 3 << 20];
        d.read_at(&mut buf, 0).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0xaa));
        assert!(buf[4096..4096 + (2 << 20)].iter().all(|&b| b == 0));
        assert!(buf[4096 + (2 << 20)..].iter().all(|&b| b == 0xaa));
    }

    fn write_zeroes(d: &dyn BlockDevice) {
        d.write_at(&[Bytes::from(vec![0x55; 8192])], 0, false)
            .unwrap();
        d.write_zeroes(512, 4096, false).unwrap();
        let mut buf = vec![1u8; 8192];
        d.read_at(&mut buf, 0).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 0x55));
        assert!(buf[512..4608].iter().all(|&b| b == 0));
        assert!(buf[4608..].iter().all(|&b| b == 0x55));
    }

    fn allocation_map_covers_the_range(d: &dyn BlockDevice) {
        d.write_at(&[Bytes::from(vec![1u8; 1 << 20])], 1 << 20, false)
            .unwrap();
        let map = d.allocation(0, d.size()).unwrap();
        let mut pos = 0;
        for e in &map {
            assert_eq!(e.offset, pos, "extents are contiguous");
            assert!(e.len > 0);
            pos += e.len;
        }
        assert_eq!(pos, d.size());
        assert!(
            map.iter()
                .any(|e| e.allocated && e.offset <= 1 << 20 && e.offset + e.len >= 2 << 20)
        );
    }

    fn flush_and_fua_succeed(d: &dyn BlockDevice) {
        d.write_at(&[Bytes::from(vec![7u8; 4096])], 0, true)
            .unwrap();
        d.flush().unwrap();
        let mut buf = vec![0u8; 4096];
        d.read_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&b| b == 7));
    }
}
