//! A fault-injecting block device for tests: I/O errors, a full disk and latency on demand,
//! and torn writes at a simulated crash; and a mirror between two volumes, set up as a new
//! pair is.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use blockdev::{BlockDevice, BlockError, BlockErrorKind, Extent};
use bytes::Bytes;

use crate::{
    bitmap::{Bitmap, CHUNK},
    mirror::Mirror,
    types::{CopyState, Mode},
    volume::Volume,
};

/// A mirror (relationship `id`) from `src` to `tgt`, attached to the source and not yet
/// synchronized: every chunk is still to be copied (`resync` copies them).
pub fn new_mirror(id: u64, src: &Arc<Volume>, tgt: &Arc<Volume>, mode: Mode) -> Arc<Mirror> {
    let chunks = src.size().div_ceil(CHUNK);
    let m = Mirror::new(
        id,
        src.clone(),
        tgt.clone(),
        mode,
        CopyState::Unsynchronized,
        Bitmap::full(chunks),
        Bitmap::new(chunks),
        None,
    );
    m.attach();
    m
}

/// Wraps a device and fails or delays its operations when told to.
#[derive(Debug)]
pub struct FaultyDevice {
    inner: Arc<dyn BlockDevice>,
    /// Fail every read with EIO.
    pub fail_reads: AtomicBool,
    /// Fail every write with EIO.
    pub fail_writes: AtomicBool,
    /// Fail writes with ENOSPC.
    pub full: AtomicBool,
    /// Microseconds added to every write.
    pub latency_us: AtomicU64,
    /// After this many more writes, a "crash": the next write is torn (only its first half
    /// lands) and every later write is dropped. `u64::MAX`: never.
    pub crash_after: AtomicU64,
    crashed: AtomicBool,
    /// Data writes (`write_at` calls) begun so far.
    pub writes: AtomicU64,
    /// Say the device is remote ([`BlockDevice::remote`]).
    pub remote: AtomicBool,
}

impl FaultyDevice {
    /// A well-behaved wrapper.
    pub fn new(inner: Arc<dyn BlockDevice>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            fail_reads: AtomicBool::new(false),
            fail_writes: AtomicBool::new(false),
            full: AtomicBool::new(false),
            latency_us: AtomicU64::new(0),
            crash_after: AtomicU64::new(u64::MAX),
            crashed: AtomicBool::new(false),
            writes: AtomicU64::new(0),
            remote: AtomicBool::new(false),
        })
    }

    /// Whether a simulated crash has happened.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::Acquire)
    }

    fn check_write(&self) -> blockdev::Result<()> {
        if self.fail_writes.load(Ordering::Relaxed) {
            return Err(BlockError::io(
                std::io::Error::from_raw_os_error(libc::EIO),
                "injected",
            ));
        }
        if self.full.load(Ordering::Relaxed) {
            return Err(BlockError::new(
                BlockErrorKind::NoSpace,
                "injected: disk full",
            ));
        }
        let us = self.latency_us.load(Ordering::Relaxed);
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
        Ok(())
    }
}

impl BlockDevice for FaultyDevice {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> blockdev::Result<()> {
        if self.fail_reads.load(Ordering::Relaxed) {
            return Err(BlockError::io(
                std::io::Error::from_raw_os_error(libc::EIO),
                "injected",
            ));
        }
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, bufs: &[Bytes], offset: u64, fua: bool) -> blockdev::Result<()> {
        self.writes.fetch_add(1, Ordering::AcqRel);
        self.check_write()?;
        if self.crashed() {
            return Ok(());
        }
        let left = self.crash_after.load(Ordering::Acquire);
        if left != u64::MAX {
            if left == 0 {
                self.crashed.store(true, Ordering::Release);
                let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
                let half = joined.len() / 2;
                return self
                    .inner
                    .write_at(&[Bytes::from(joined[..half].to_vec())], offset, fua);
            }
            self.crash_after.store(left - 1, Ordering::Release);
        }
        self.inner.write_at(bufs, offset, fua)
    }

    fn flush(&self) -> blockdev::Result<()> {
        self.check_write()?;
        self.inner.flush()
    }

    fn discard(&self, offset: u64, len: u64) -> blockdev::Result<()> {
        self.check_write()?;
        if self.crashed() {
            return Ok(());
        }
        self.inner.discard(offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> blockdev::Result<()> {
        self.check_write()?;
        if self.crashed() {
            return Ok(());
        }
        self.inner.write_zeroes(offset, len, fua)
    }

    fn allocation(&self, offset: u64, len: u64) -> blockdev::Result<Vec<Extent>> {
        self.inner.allocation(offset, len)
    }

    fn thin(&self) -> bool {
        self.inner.thin()
    }

    fn remote(&self) -> bool {
        self.remote.load(Ordering::Relaxed)
    }
}
