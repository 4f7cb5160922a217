//! Virtual disks: the [`BlockDevice`] trait and its backends.
//!
//! A block device is a byte-addressed store of a fixed size with positional, thread-safe I/O
//! (`&self` methods, callable from many threads at once). It knows nothing of SCSI, iSCSI or
//! replication; those layers sit above it. Calls block: callers keep them off async runtimes.
//!
//! Ordering and durability contract: writes that have returned are visible to every later
//! read. They are durable (on stable storage) only after [`BlockDevice::flush`] returns, or
//! when they were issued with `fua`. No ordering is promised between writes in flight at
//! the same time.
#![warn(missing_docs)]

pub mod after_ack;
mod arena;
mod error;
mod file;
mod mem;
pub mod stripes;
#[cfg(test)]
mod testing;

use bytes::Bytes;

pub use self::{
    arena::Arena,
    error::{BlockError, BlockErrorKind},
    file::{DIRECT_ALIGN, FileDevice},
    mem::MemDevice,
};

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, BlockError>;

/// One extent of an allocation map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Whether the range holds data (false: a hole that reads as zeroes).
    pub allocated: bool,
}

/// A virtual disk.
pub trait BlockDevice: Send + Sync + std::fmt::Debug {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Fill `buf` from `offset`. Reading past the end is an `OutOfBounds` error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// Like [`BlockDevice::read_at`], but only if the data is in memory: never waits for a
    /// disk or a peer. `Ok(false)` (and `buf` unspecified) when it would have to; the caller
    /// then reads with `read_at` where waiting is allowed. The default never tries.
    fn read_at_nowait(&self, buf: &mut [u8], offset: u64) -> Result<bool> {
        let _ = (buf, offset);
        Ok(false)
    }

    /// Write the concatenation of `bufs` at `offset`. With `fua` the data is durable when
    /// the call returns.
    fn write_at(&self, bufs: &[Bytes], offset: u64, fua: bool) -> Result<()>;

    /// Like [`BlockDevice::write_at`], but only as a copy into memory (a cache), never
    /// waiting for a disk, a peer or a lock held for long. `Ok(false)`: it would have to;
    /// part of the range may have been written then, and the caller writes the whole range
    /// with `write_at` where waiting is allowed (a device on stable storage refuses `fua`).
    /// The default never tries.
    fn write_at_nowait(&self, bufs: &[Bytes], offset: u64, fua: bool) -> Result<bool> {
        let _ = (bufs, offset, fua);
        Ok(false)
    }

    /// Whether the device is reached over a network (a remote LUN): its writes may wait on
    /// a peer and the link to it. The default: a local device.
    fn remote(&self) -> bool {
        false
    }

    /// Write `buf` at `offset`, data that is rarely read back (a snapshot's saved chunks):
    /// past the page cache where the device can, otherwise as [`BlockDevice::write_at`].
    /// Durable only after [`BlockDevice::flush`].
    fn write_uncached_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.write_at(&[Bytes::copy_from_slice(buf)], offset, false)
    }

    /// Make every completed write durable.
    fn flush(&self) -> Result<()>;

    /// Deallocate a range; it reads back as zeroes afterwards.
    fn discard(&self, offset: u64, len: u64) -> Result<()>;

    /// Write zeroes to a range, keeping it allocated.
    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zero = Bytes::from(vec![0u8; CHUNK.min(len.max(1)) as usize]);
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done);
            self.write_at(&[zero.slice(..n as usize)], offset + done, false)?;
            done += n;
        }
        if fua { self.flush() } else { Ok(()) }
    }

    /// The allocation map of `[offset, offset + len)`, as a list of extents in order that
    /// covers the range exactly.
    fn allocation(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        Ok(vec![Extent {
            offset,
            len,
            allocated: true,
        }])
    }

    /// [`BlockDevice::allocation`] only if the map is in memory (never read from a disk):
    /// `None` when it may not be. The default never tries.
    fn allocation_nowait(&self, offset: u64, len: u64) -> Result<Option<Vec<Extent>>> {
        let _ = (offset, len);
        Ok(None)
    }

    /// Whether `discard` really deallocates (thin provisioning).
    fn thin(&self) -> bool {
        false
    }
}

/// Check that `[offset, offset + len)` lies within a device of `size` bytes.
pub fn check_range(size: u64, offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BlockError::new(
            BlockErrorKind::OutOfBounds,
            format!("{offset}+{len} > {size}"),
        )),
    }
}

/// Total length of a list of buffers.
pub fn total_len(bufs: &[Bytes]) -> u64 {
    bufs.iter().map(|b| b.len() as u64).sum()
}
