//! A write to a replicated volume allocates nothing per write on the host's path: the
//! volume's hooks are taken by reference count, the per-hook results and an asynchronous
//! mirror's journal entry are held inline. Writes of 4 KiB in two buffers to the source of
//! a synchronous and of an asynchronous mirror, done in memory (`write_at_nowait`, as the
//! connection's task does them). Counted by `tests/support/counting_alloc.rs` (this
//! thread's allocations only: the asynchronous mirror's shipper runs on its own).

use std::sync::Arc;

use blockdev::{BlockDevice, MemDevice};
use bytes::Bytes;
use replication::{
    bitmap::CHUNK,
    mirror::Mirror,
    testing::new_mirror,
    types::{CopyState, Mode},
    volume::Volume,
};

#[path = "../../../tests/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, allocations};

#[global_allocator]
static ALLOC: Counting = Counting;

const CHUNKS: u64 = 64;
const SIZE: u64 = CHUNKS * CHUNK;

fn mirrored(mode: Mode) -> (Arc<Volume>, Arc<Volume>, Arc<Mirror>) {
    let src = Volume::new("src", Arc::new(MemDevice::new(SIZE)));
    // Written whole (and so copied whole), so that no write below allocates the memory
    // device's storage.
    src.write_at(&[Bytes::from(vec![1; SIZE as usize])], 0, false)
        .unwrap();
    let tgt = Volume::new("tgt", Arc::new(MemDevice::new(SIZE)));
    let m = new_mirror(1, &src, &tgt, mode);
    m.resync(&|_, _| {}, &|| false).unwrap();
    assert_eq!(m.state(), CopyState::Synchronized);
    (src, tgt, m)
}

/// `n` writes of 4 KiB (two 2 KiB buffers) at consecutive offsets from `first`, each done
/// in memory; returns how many were.
fn writes(src: &Volume, first: u64, n: u64, bufs: &[Bytes]) -> u64 {
    (0..n)
        .filter(|i| {
            let off = (first + i) * 4096 % SIZE;
            src.write_at_nowait(bufs, off, false).unwrap()
        })
        .count() as u64
}

#[test]
fn a_mirrored_write_allocates_nothing() {
    let bufs = [Bytes::from(vec![0x5a; 2048]), Bytes::from(vec![0xa5; 2048])];
    for mode in [Mode::Synchronous, Mode::Asynchronous] {
        let (src, tgt, m) = mirrored(mode);
        writes(&src, 0, 64, &bufs);
        let mut done = 0;
        let n = allocations(|| done = writes(&src, 64, 1000, &bufs));
        assert_eq!(done, 1000, "{mode:?}: every write done in memory");
        assert!(n * 20 <= 1000, "{mode:?}: {n} allocations for 1000 writes");
        m.split();
        let mut back = vec![0u8; 4096];
        tgt.base().read_at(&mut back, 1063 * 4096 % SIZE).unwrap();
        assert_eq!(
            &back[..2048],
            &[0x5a; 2048][..],
            "{mode:?}: the target has the data"
        );
        assert_eq!(&back[2048..], &[0xa5; 2048][..], "{mode:?}");
    }
}
