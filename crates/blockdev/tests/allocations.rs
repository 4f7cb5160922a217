//! The per-I/O paths of a file device and of striped locks allocate nothing: a write of a
//! few buffers (one per Data-Out PDU) and the locks of a range within a few stripes. Counted
//! by `tests/support/counting_alloc.rs`.

use blockdev::{BlockDevice, FileDevice, stripes::StripedLocks};
use bytes::Bytes;

#[path = "../../../tests/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, allocations};

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn writes_and_range_locks_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dev = FileDevice::open(&dir.path().join("img"), Some(1 << 20), false).unwrap();
    let pieces: Vec<Bytes> = (0..4u8).map(|k| Bytes::from(vec![k; 1024])).collect();
    let locks = StripedLocks::new(256);
    let n = allocations(|| {
        for i in 0..100u64 {
            let _s = locks.shared(i + 10, i + 11);
            let _t = locks.try_shared(i + 300, i + 302).expect("free");
            // Stripes 255, 0 and 1: the range wraps past the last stripe.
            drop(locks.exclusive(1279, 1281));
            dev.write_at(&pieces, i * 4096, false).unwrap();
        }
    });
    assert_eq!(n, 0, "allocations for 100 writes and lockings");
    let mut back = vec![0u8; 4096];
    dev.read_at(&mut back, 99 * 4096).unwrap();
    assert_eq!(&back[3072..], &[3u8; 1024][..]);
}
