//! Reuse of large I/O buffers. A read of [`MIN_POOLED`] bytes or more takes a buffer of its
//! exact size from here, and the buffer comes back when the last Data-In PDU holding it has
//! been sent (it is the owner of the response's `Bytes`). A fresh buffer per command costs a
//! memset and, for sizes the allocator maps, page faults on every use: about a fifth of the
//! target's CPU time in a 1 MiB read benchmark on a RAM-backed LUN. The connection receives
//! large PDUs (write data) into buffers from here too; they come back when the write is done
//! with the data.
//!
//! A reused buffer holds the data of an earlier use (of any LUN or connection) until it is
//! filled: by the device's `read_at`, which fills the whole buffer or fails, or by the
//! socket; a buffer not filled goes back to the pool unseen.
//!
//! A smaller read ([`ReadBuf`]) is cut, zeroed, from a per-thread [`Arena`] of
//! `ARENA`-byte chunks shared by reference count: slicing it into Data-In PDUs and freeing
//! it allocate nothing, and once every read cut from a chunk has been sent, the chunk is
//! reused whole. A fresh buffer per small read cost two allocations (the buffer, and the
//! shared handle its first slice made).

use std::{
    cell::RefCell,
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use blockdev::Arena;
use bytes::{Bytes, BytesMut};

/// Reads smaller than this are cut from the thread's arena.
pub const MIN_POOLED: usize = 64 * 1024;
/// Idle buffers kept, in bytes, over all sizes.
const MAX_IDLE: usize = 32 << 20;
/// The size of a thread's arena for small reads (four of the largest).
const ARENA: usize = 4 * MIN_POOLED;
/// Used-up arenas a thread keeps for reuse, oldest first, besides the one it cuts from:
/// enough for 32 reads of 32 KiB in flight.
const SPENT: usize = 4;

thread_local! {
    static SMALL: RefCell<Arena> = RefCell::new(Arena::new(ARENA, SPENT));
}

/// A zeroed buffer of `len` (< [`MIN_POOLED`]) bytes, cut from the thread's arena.
fn small(len: usize) -> BytesMut {
    SMALL.with_borrow_mut(|a| {
        let current = a.room(len);
        current.resize(len, 0);
        current.split_to(len)
    })
}

/// A buffer to read a command's Data-In into: from the pool for large reads, from the
/// thread's arena for small ones.
pub struct ReadBuf(Kind);

enum Kind {
    Small(BytesMut),
    Large(Vec<u8>),
}

impl ReadBuf {
    /// A buffer of `len` bytes, to be filled whole.
    pub fn new(len: usize) -> Self {
        if len >= MIN_POOLED {
            Self(Kind::Large(take(len)))
        } else {
            Self(Kind::Small(small(len)))
        }
    }

    /// The filled buffer as the response's data.
    pub fn freeze(self) -> Bytes {
        match self.0 {
            Kind::Small(b) => b.freeze(),
            Kind::Large(v) => freeze(v),
        }
    }

    /// A buffer that was not filled goes back (a failed read).
    pub fn put_back(self) {
        if let Kind::Large(v) = self.0 {
            put_back(v);
        }
    }
}

impl std::ops::Deref for ReadBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Kind::Small(b) => b,
            Kind::Large(v) => v,
        }
    }
}

impl std::ops::DerefMut for ReadBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            Kind::Small(b) => b,
            Kind::Large(v) => v,
        }
    }
}

#[derive(Default)]
struct Pool {
    idle: HashMap<usize, Vec<Vec<u8>>>,
    bytes: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn pool() -> MutexGuard<'static, Option<Pool>> {
    POOL.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A buffer of `len` bytes to read into (its contents are to be overwritten): from the pool
/// for [`MIN_POOLED`] bytes or more, else a fresh zeroed one.
pub fn take(len: usize) -> Vec<u8> {
    if len >= MIN_POOLED
        && let Some(p) = pool().as_mut()
        && let Some(v) = p.idle.get_mut(&len).and_then(Vec::pop)
    {
        p.bytes -= len;
        return v;
    }
    vec![0; len]
}

fn give_back(v: Vec<u8>) {
    let len = v.len();
    let mut g = pool();
    let p = g.get_or_insert_with(Pool::default);
    if p.bytes + len <= MAX_IDLE {
        p.bytes += len;
        p.idle.entry(len).or_default().push(v);
    }
}

/// Returns its buffer to the pool when the last `Bytes` referring to it is dropped.
struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.0));
    }
}

/// The filled buffer as the response's data.
pub fn freeze(v: Vec<u8>) -> Bytes {
    if v.len() >= MIN_POOLED {
        Bytes::from_owner(Pooled(v))
    } else {
        Bytes::from(v)
    }
}

/// A buffer that was not used goes back (a failed read).
pub fn put_back(v: Vec<u8>) {
    if v.len() >= MIN_POOLED {
        give_back(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_the_last_reference_drops() {
        let len = MIN_POOLED * 3 + 512;
        let mut v = take(len);
        v.fill(7);
        let ptr = v.as_ptr();
        let b = freeze(v);
        let part = b.slice(10..20);
        drop(b);
        // Still referenced by the slice: not reusable yet.
        let other = take(len);
        assert_ne!(other.as_ptr(), ptr);
        put_back(other);
        drop(part);
        // Back in the pool now (the pool holds two of this size; one of them is it).
        let a = take(len);
        let c = take(len);
        assert!(a.as_ptr() == ptr || c.as_ptr() == ptr);
        assert_eq!(a.len(), len);
        // Small buffers are not pooled.
        assert!(take(512).iter().all(|&x| x == 0));
    }

    #[test]
    fn an_arena_is_reused_only_once_nothing_cut_from_it_is_held() {
        // One read held across many arenas' worth of others: its bytes never change.
        let mut held = ReadBuf::new(4096);
        held.fill(0xa5);
        let held = held.freeze();
        for round in 0..3u8 {
            let mut batch = Vec::new();
            for k in 0..(ARENA / 8192) * (SPENT + 2) {
                let mut b = ReadBuf::new(8192);
                assert!(b.iter().all(|&x| x == 0), "cut zeroed");
                b.fill(round ^ k as u8);
                batch.push(b.freeze());
            }
            for (k, b) in batch.iter().enumerate() {
                assert!(
                    b.iter().all(|&x| x == round ^ k as u8),
                    "round {round} read {k}"
                );
            }
            assert!(
                held.iter().all(|&x| x == 0xa5),
                "round {round}: held read intact"
            );
        }
        // (That arenas are reused at all is `crates/scsi/tests/allocations.rs`.)
    }
}
