//! A sparse in-memory device (RAM LUNs and tests).

use std::{collections::BTreeMap, sync::RwLock};

use bytes::Bytes;

use crate::{BlockDevice, BlockError, BlockErrorKind, Extent, Result, check_range, total_len};

/// Allocation granularity of [`MemDevice`].
const CHUNK: u64 = 64 * 1024;

/// A sparse device held in memory, allocated in 64 KiB chunks.
#[derive(Debug)]
pub struct MemDevice {
    size: u64,
    chunks: RwLock<BTreeMap<u64, Box<[u8]>>>,
}

impl MemDevice {
    /// A zeroed device of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            chunks: RwLock::new(BTreeMap::new()),
        }
    }

    fn poisoned() -> BlockError {
        BlockError::new(BlockErrorKind::Io, "memory device lock poisoned")
    }
}

/// Copy `[offset, offset + buf.len())` out of the chunk map (holes read as zeroes).
fn copy_out(chunks: &BTreeMap<u64, Box<[u8]>>, buf: &mut [u8], offset: u64) {
    let mut done = 0usize;
    while done < buf.len() {
        let pos = offset + done as u64;
        let (c, within) = (pos / CHUNK, (pos % CHUNK) as usize);
        let n = (CHUNK as usize - within).min(buf.len() - done);
        match chunks.get(&c) {
            Some(data) => buf[done..done + n].copy_from_slice(&data[within..within + n]),
            None => buf[done..done + n].fill(0),
        }
        done += n;
    }
}

/// Copy `bufs` into the chunk map at `offset`, allocating chunks as needed.
fn copy_in(chunks: &mut BTreeMap<u64, Box<[u8]>>, bufs: &[Bytes], offset: u64) {
    let mut pos = offset;
    for b in bufs {
        let mut done = 0usize;
        while done < b.len() {
            let (c, within) = (pos / CHUNK, (pos % CHUNK) as usize);
            let n = (CHUNK as usize - within).min(b.len() - done);
            let chunk = chunks
                .entry(c)
                .or_insert_with(|| vec![0u8; CHUNK as usize].into_boxed_slice());
            chunk[within..within + n].copy_from_slice(&b[done..done + n]);
            done += n;
            pos += n as u64;
        }
    }
}

/// The allocation map of `[offset, offset + len)` in 64 KiB chunks.
fn map_of(chunks: &BTreeMap<u64, Box<[u8]>>, offset: u64, len: u64) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::new();
    let end = offset + len;
    let mut pos = offset;
    while pos < end {
        let c = pos / CHUNK;
        let n = (CHUNK - pos % CHUNK).min(end - pos);
        let allocated = chunks.contains_key(&c);
        match out.last_mut() {
            Some(last) if last.allocated == allocated => last.len += n,
            _ => out.push(Extent {
                offset: pos,
                len: n,
                allocated,
            }),
        }
        pos += n;
    }
    out
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let chunks = self.chunks.read().map_err(|_| Self::poisoned())?;
        copy_out(&chunks, buf, offset);
        Ok(())
    }

    fn read_at_nowait(&self, buf: &mut [u8], offset: u64) -> Result<bool> {
        // Memory never waits for a disk; a writer holding the lock is waited for elsewhere.
        check_range(self.size, offset, buf.len() as u64)?;
        let Ok(chunks) = self.chunks.try_read() else {
            return Ok(false);
        };
        copy_out(&chunks, buf, offset);
        Ok(true)
    }

    fn write_at_nowait(&self, bufs: &[Bytes], offset: u64, _fua: bool) -> Result<bool> {
        check_range(self.size, offset, total_len(bufs))?;
        let Ok(mut chunks) = self.chunks.try_write() else {
            return Ok(false);
        };
        copy_in(&mut chunks, bufs, offset);
        Ok(true)
    }

    fn write_at(&self, bufs: &[Bytes], offset: u64, _fua: bool) -> Result<()> {
        check_range(self.size, offset, total_len(bufs))?;
        let mut chunks = self.chunks.write().map_err(|_| Self::poisoned())?;
        copy_in(&mut chunks, bufs, offset);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        check_range(self.size, offset, len)?;
        let mut chunks = self.chunks.write().map_err(|_| Self::poisoned())?;
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let (c, within) = (pos / CHUNK, pos % CHUNK);
            let n = (CHUNK - within).min(end - pos);
            if n == CHUNK {
                chunks.remove(&c);
            } else if let Some(chunk) = chunks.get_mut(&c) {
                chunk[within as usize..(within + n) as usize].fill(0);
            }
            pos += n;
        }
        Ok(())
    }

    fn allocation_nowait(&self, offset: u64, len: u64) -> Result<Option<Vec<Extent>>> {
        check_range(self.size, offset, len)?;
        let Ok(chunks) = self.chunks.try_read() else {
            return Ok(None);
        };
        Ok(Some(map_of(&chunks, offset, len)))
    }

    fn allocation(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size, offset, len)?;
        let chunks = self.chunks.read().map_err(|_| Self::poisoned())?;
        Ok(map_of(&chunks, offset, len))
    }

    fn thin(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Suite;

    #[test]
    fn conformance_suite() {
        Suite::run(|size| Box::new(MemDevice::new(size)));
    }
}
