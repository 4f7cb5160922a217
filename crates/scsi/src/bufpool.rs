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

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use bytes::Bytes;

/// Reads smaller than this get a fresh zeroed buffer.
pub const MIN_POOLED: usize = 64 * 1024;
/// Idle buffers kept, in bytes, over all sizes.
const MAX_IDLE: usize = 32 << 20;

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

/// A buffer of `len` bytes to read into (its contents are to be overwritten).
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
}
