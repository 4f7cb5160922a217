//! The per-I/O paths of a file device and of striped locks allocate nothing: a write of a
//! few buffers (one per Data-Out PDU) and the locks of a range within a few stripes. Counted
//! by a global allocator that counts the allocations of the thread that asks it to.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
};

use blockdev::{BlockDevice, FileDevice, stripes::StripedLocks};
use bytes::Bytes;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator also runs while thread locals are torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocations made by this thread while `f` runs.
fn allocations(f: impl FnOnce()) -> u64 {
    COUNT.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    COUNT.with(Cell::get)
}

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
