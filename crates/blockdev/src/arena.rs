//! An arena of I/O buffers for small pieces of data that are held for a while: pieces are
//! cut from a chunk and shared by reference count, and a used-up chunk is reused whole
//! once nothing cut from it is referenced any more. Cutting and freeing pieces allocate
//! nothing, and the memory they use is the same few chunks over and over (warm in the CPU's
//! caches) rather than fresh memory each time.
//!
//! Used for small reads' data (until it is sent) and for an asynchronous mirror's journal
//! (small writes' data, until it is shipped).

use std::collections::VecDeque;

use bytes::BytesMut;

/// An arena (see the module's documentation).
#[derive(Debug)]
pub struct Arena {
    /// Bytes per chunk.
    chunk: usize,
    /// Used-up chunks kept in line for reuse, besides the one cut from.
    keep: usize,
    /// The chunk cut from (none before the first piece).
    current: Option<BytesMut>,
    /// Used-up chunks, oldest first.
    spent: VecDeque<BytesMut>,
}

impl Arena {
    /// An arena of `chunk`-byte chunks that keeps up to `keep` used-up chunks waiting for
    /// reuse. Nothing is allocated before the first piece.
    pub fn new(chunk: usize, keep: usize) -> Self {
        Self {
            chunk,
            keep,
            current: None,
            spent: VecDeque::new(),
        }
    }

    /// The chunk to cut the next piece from, empty and with room for at least `len` bytes:
    /// the caller fills it (`resize`, `extend_from_slice`) and cuts the piece off (`split`,
    /// `split_to`). When the current chunk has no room left it waits in line; the oldest
    /// one in line is taken back whole once nothing cut from it is referenced, else a new
    /// chunk is made, and a chunk pushed out of the line is freed with its last piece.
    pub fn room(&mut self, len: usize) -> &mut BytesMut {
        let size = self.chunk.max(len);
        let current = match self.current.take() {
            Some(c) if c.capacity() - c.len() >= len => c,
            used => {
                self.spent.extend(used);
                match self.spent.pop_front() {
                    Some(mut oldest) => {
                        if oldest.is_empty() && oldest.try_reclaim(size) {
                            oldest
                        } else {
                            if self.spent.len() < self.keep {
                                self.spent.push_front(oldest);
                            }
                            BytesMut::with_capacity(size)
                        }
                    }
                    None => BytesMut::with_capacity(size),
                }
            }
        };
        self.current.insert(current)
    }

    /// Let go of every chunk (an arena not used for a while): pieces still referenced keep
    /// their memory until dropped; the next piece starts a new chunk.
    pub fn clear(&mut self) {
        self.current = None;
        self.spent.clear();
    }

    /// Chunks held: the one cut from and those in line.
    pub fn chunks(&self) -> usize {
        usize::from(self.current.is_some()) + self.spent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cut a piece of `len` bytes of `fill` from `a`.
    fn cut(a: &mut Arena, len: usize, fill: u8) -> bytes::Bytes {
        let c = a.room(len);
        c.resize(len, fill);
        c.split().freeze()
    }

    #[test]
    fn a_chunk_is_reused_once_nothing_cut_from_it_is_held() {
        let mut a = Arena::new(4096, 2);
        let first: Vec<_> = (0..4).map(|k| cut(&mut a, 1024, k)).collect();
        let chunk = first[0].as_ptr();
        // The first chunk is used up and still referenced: the next piece is elsewhere.
        let held = cut(&mut a, 1024, 9);
        assert_ne!(held.as_ptr(), chunk);
        for (k, p) in first.iter().enumerate() {
            assert!(p.iter().all(|&x| x == k as u8), "piece {k} intact");
        }
        drop(first);
        // Fill the second chunk: the first is free now and comes back whole.
        let _rest: Vec<_> = (0..3).map(|_| cut(&mut a, 1024, 7)).collect();
        let again = cut(&mut a, 1024, 8);
        assert_eq!(again.as_ptr(), chunk);
        assert!(held.iter().all(|&x| x == 9), "a held piece never changes");
    }

    #[test]
    fn chunks_pushed_out_of_line_are_freed_with_their_last_piece() {
        let mut a = Arena::new(1024, 1);
        // Every piece held: each takes a chunk of its own, and the line stays at one.
        let held: Vec<_> = (0..5u8).map(|k| cut(&mut a, 1024, k)).collect();
        assert!(a.spent.len() <= 1);
        for (k, p) in held.iter().enumerate() {
            assert!(p.iter().all(|&x| x == k as u8), "piece {k} intact");
        }
        // A piece larger than a chunk gets a chunk of its size.
        assert_eq!(cut(&mut a, 3000, 1).len(), 3000);
        a.clear();
        assert_eq!(a.chunks(), 0);
        assert!(
            held.iter()
                .enumerate()
                .all(|(k, p)| p.iter().all(|&x| x == k as u8))
        );
    }
}
