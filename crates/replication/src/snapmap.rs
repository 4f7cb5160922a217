//! Where a snapshot keeps what it saved: the map from origin blocks to slots of its store,
//! and the log that makes the map durable.
//!
//! A snapshot saves the origin in blocks of [`block_size`] bytes (4 KiB for origins up to
//! 256 GiB), so that a small first write copies a small block. Saved blocks are appended to
//! the store one after the other (slot 0, 1, 2, ...): a batch of scattered first writes is
//! saved with sequential store writes, as dm-snapshot's exception store does. Snapshots made
//! by earlier versions saved 64 KiB chunks at their own offset in the store; their chunk log
//! is converted on open into a map of that layout ("identity": slot = block).
//!
//! The log is a 24-byte header (magic, block size, flags) followed by 16-byte records
//! (block, slot), little-endian.

use std::path::Path;

use crate::{
    bitmap::{Bitmap, CHUNK, ChunkLog, decode, encode},
    reclog::RecordLog,
};

/// The smallest (and usual) snapshot block.
pub const MIN_BLOCK: u64 = 4096;

/// Origins with more blocks than this get larger blocks (the map's memory stays bounded).
const MAX_BLOCKS: u64 = 1 << 26;

/// Slots are numbered below this (an entry is a `u32` with a flag bit).
const MAX_SLOTS: u64 = (1 << 31) - 1;

const MAGIC: &[u8; 8] = b"ILSNAP01";
const HEADER: usize = 24;
const REC: usize = 16;
/// Header flag: the identity layout of earlier versions (block `b` in slot `b`).
const IDENTITY: u64 = 1;

/// Entries per map page (pages are allocated where blocks are saved).
const PAGE: usize = 1024;
/// Entry flag: copied into its slot, not yet durable.
const PENDING: u32 = 1 << 31;

/// The block size of a snapshot of an origin of `size` bytes: 4 KiB, doubled while the
/// origin has more than 2^26 blocks, at most a replication chunk.
pub fn block_size(size: u64) -> u64 {
    let mut b = MIN_BLOCK;
    while b < CHUNK && size.div_ceil(b) > MAX_BLOCKS {
        b *= 2;
    }
    b
}

/// The size a snapshot store needs for an origin of `size` bytes (every slot whole).
pub fn store_size(size: u64) -> u64 {
    size.next_multiple_of(CHUNK)
}

/// The state of one origin block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Not saved.
    Free,
    /// Copied into this slot under the chunk lock; its record is not durable yet.
    Pending(u64),
    /// Saved durably in this slot.
    Saved(u64),
}

/// Which origin blocks a snapshot saved, and in which store slots.
#[derive(Debug)]
pub struct SlotMap {
    block: u64,
    blocks: u64,
    identity: bool,
    pages: Vec<Option<Box<[u32; PAGE]>>>,
    /// The next free slot (append layout).
    next: u64,
    saved: u64,
}

impl SlotMap {
    fn new(block: u64, blocks: u64, identity: bool) -> Self {
        Self {
            block,
            blocks,
            identity,
            pages: (0..blocks.div_ceil(PAGE as u64)).map(|_| None).collect(),
            next: 0,
            saved: 0,
        }
    }

    /// Block size in bytes.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// Number of blocks saved durably.
    pub fn saved(&self) -> u64 {
        self.saved
    }

    /// The state of block `b`.
    pub fn get(&self, b: u64) -> Slot {
        let Some(Some(page)) = self.pages.get((b / PAGE as u64) as usize) else {
            return Slot::Free;
        };
        match page[(b % PAGE as u64) as usize] {
            0 => Slot::Free,
            e if e & PENDING != 0 => Slot::Pending(u64::from(e & !PENDING) - 1),
            e => Slot::Saved(u64::from(e) - 1),
        }
    }

    fn put(&mut self, b: u64, e: u32) {
        if let Some(page) = self.pages.get_mut((b / PAGE as u64) as usize) {
            page.get_or_insert_with(|| Box::new([0; PAGE]))[(b % PAGE as u64) as usize] = e;
        }
    }

    /// Give the free blocks `first..first + n` consecutive slots, pending; returns the
    /// first slot (`None`: the store is full, which a consistent map never is).
    pub fn alloc(&mut self, first: u64, n: u64) -> Option<u64> {
        let slot = if self.identity { first } else { self.next };
        if first + n > self.blocks || slot + n > self.blocks {
            return None;
        }
        if !self.identity {
            self.next += n;
        }
        for k in 0..n {
            self.put(first + k, (slot + k + 1) as u32 | PENDING);
        }
        Some(slot)
    }

    /// Block `b` is saved durably in `slot`.
    pub fn save(&mut self, b: u64, slot: u64) {
        if b >= self.blocks || slot >= self.blocks {
            return;
        }
        if !matches!(self.get(b), Slot::Saved(_)) {
            self.saved += 1;
        }
        self.put(b, (slot + 1) as u32);
        if !self.identity {
            self.next = self.next.max(slot + 1);
        }
    }

    /// A pending block whose copy or commit failed is free again. False when the block was
    /// not pending (another saver committed it meanwhile: it stays saved).
    pub fn forget(&mut self, b: u64) -> bool {
        let pending = matches!(self.get(b), Slot::Pending(_));
        if pending {
            self.put(b, 0);
        }
        pending
    }

    /// The replication chunks holding a saved block.
    pub fn saved_chunks(&self, chunks: u64) -> Bitmap {
        let mut set = Bitmap::new(chunks);
        for (i, page) in self.pages.iter().enumerate() {
            let Some(page) = page else { continue };
            for (k, &e) in page.iter().enumerate() {
                if e != 0 && e & PENDING == 0 {
                    set.set((i * PAGE + k) as u64 * self.block / CHUNK);
                }
            }
        }
        set
    }
}

/// The durable form of a [`SlotMap`].
#[derive(Debug)]
pub struct MapLog {
    log: RecordLog,
}

fn header(block: u64, flags: u64) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&block.to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    h
}

fn corrupt(path: &Path, what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

impl MapLog {
    /// Open (creating) the map at `path` of a snapshot of an origin of `size` bytes. When
    /// there is no map yet but an earlier version's chunk log at `legacy`, the log is
    /// converted (the map is written durably before the chunk log is removed).
    pub fn open(path: &Path, legacy: &Path, size: u64) -> std::io::Result<(Self, SlotMap)> {
        if !path.exists() && legacy.exists() {
            let (_, chunks) = ChunkLog::open(legacy, size.div_ceil(CHUNK))?;
            let mut v = header(CHUNK, IDENTITY);
            v.extend(encode(chunks.iter().flat_map(|c| [c, c])));
            crate::bitmap::write_atomic(path, &v)?;
        }
        if legacy.exists() {
            // Converted (now, or before a crash that came before the removal).
            std::fs::remove_file(legacy)?;
        }
        let (log, buf) = RecordLog::open(path, HEADER, REC)?;
        if buf.is_empty() {
            let block = block_size(size);
            log.rewrite(&header(block, 0))?;
            return Ok((
                Self { log },
                SlotMap::new(block, size.div_ceil(block), false),
            ));
        }
        let word = |i: usize| decode(&buf[i * 8..i * 8 + 8]).next().unwrap_or(0);
        if buf.len() < HEADER || &buf[..8] != MAGIC {
            return Err(corrupt(path, "not a snapshot map"));
        }
        let (block, flags) = (word(1), word(2));
        if !block.is_power_of_two() || !(MIN_BLOCK..=CHUNK).contains(&block) {
            return Err(corrupt(path, "bad block size"));
        }
        let blocks = size.div_ceil(block);
        if blocks > MAX_SLOTS {
            return Err(corrupt(path, "origin too large for its block size"));
        }
        let mut map = SlotMap::new(block, blocks, flags & IDENTITY != 0);
        let mut recs = decode(&buf[HEADER..]);
        while let (Some(b), Some(slot)) = (recs.next(), recs.next()) {
            if b >= blocks || slot >= blocks {
                return Err(corrupt(path, "record out of range"));
            }
            // A block is recorded again when a second saver committed its pending copy:
            // the same slot.
            if map.get(b) == Slot::Free {
                map.save(b, slot);
            }
        }
        Ok((Self { log }, map))
    }

    /// Append records of saved blocks, (block, slot) each; returns the generation to sync.
    pub fn append(&self, saved: &[(u64, u64)]) -> std::io::Result<u64> {
        self.log
            .append(&encode(saved.iter().flat_map(|&(b, s)| [b, s])))
    }

    /// Make the appends up to `generation` durable.
    pub fn sync(&self, generation: u64) -> std::io::Result<()> {
        self.log.sync(generation, &|| Ok(()))
    }

    /// Start over empty (a new point in time), in the current layout, and return the new
    /// map.
    pub fn reset(&self, size: u64) -> std::io::Result<SlotMap> {
        let block = block_size(size);
        self.log.rewrite(&header(block, 0))?;
        Ok(SlotMap::new(block, size.div_ceil(block), false))
    }

    /// Remove the log file.
    pub fn remove(&self) {
        self.log.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_grow_with_the_origin_up_to_a_chunk() {
        assert_eq!(block_size(1 << 30), 4096);
        assert_eq!(block_size(256 << 30), 4096);
        assert_eq!(block_size(1 << 40), 16384);
        assert_eq!(block_size(1 << 50), CHUNK);
        assert_eq!(store_size(CHUNK + 512), 2 * CHUNK);
    }

    #[test]
    fn slots_are_appended_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (p, legacy) = (dir.path().join("s.map"), dir.path().join("s.log"));
        let size = 1 << 20;
        {
            let (log, mut map) = MapLog::open(&p, &legacy, size).unwrap();
            assert_eq!(map.block(), 4096);
            assert_eq!(map.alloc(100, 2), Some(0));
            assert_eq!(map.alloc(7, 1), Some(2));
            assert_eq!(map.get(101), Slot::Pending(1));
            for (b, s) in [(100, 0), (101, 1), (7, 2)] {
                map.save(b, s);
            }
            assert_eq!((map.get(7), map.saved()), (Slot::Saved(2), 3));
            let g = log.append(&[(100, 0), (101, 1), (7, 2), (7, 2)]).unwrap();
            log.sync(g).unwrap();
            assert_eq!(map.saved_chunks(16).iter().collect::<Vec<_>>(), vec![0, 6]);
        }
        let (log, mut map) = MapLog::open(&p, &legacy, size).unwrap();
        assert_eq!(
            (map.get(100), map.get(7), map.saved()),
            (Slot::Saved(0), Slot::Saved(2), 3)
        );
        assert_eq!(
            map.alloc(5, 1),
            Some(3),
            "allocation goes on after the last slot"
        );
        assert!(map.forget(5));
        assert_eq!(map.get(5), Slot::Free);
        assert!(!map.forget(7), "a saved block is not forgotten");
        assert_eq!(map.get(7), Slot::Saved(2));
        let map = log.reset(size).unwrap();
        assert_eq!(map.saved(), 0);
        drop(log);
        assert_eq!(MapLog::open(&p, &legacy, size).unwrap().1.saved(), 0);
    }

    #[test]
    fn an_earlier_chunk_log_is_converted_to_the_identity_layout() {
        let dir = tempfile::tempdir().unwrap();
        let (p, legacy) = (dir.path().join("s.map"), dir.path().join("s.log"));
        let size = 8 * CHUNK;
        {
            let (log, _) = ChunkLog::open(&legacy, 8).unwrap();
            let g = log.append(&[2, 5]).unwrap();
            log.sync(g, &|| Ok(())).unwrap();
        }
        let (_, mut map) = MapLog::open(&p, &legacy, size).unwrap();
        assert!(!legacy.exists());
        assert_eq!(map.block(), CHUNK);
        assert_eq!(
            (map.get(2), map.get(5), map.saved()),
            (Slot::Saved(2), Slot::Saved(5), 2)
        );
        assert_eq!(map.alloc(3, 2), Some(3), "a chunk goes to its own offset");
        let junk = dir.path().join("junk.map");
        std::fs::write(&junk, b"not a map at all, really").unwrap();
        assert!(MapLog::open(&junk, &legacy, size).is_err());
    }
}
