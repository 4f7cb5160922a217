//! Sparse image files and block devices, with positional I/O (pread/pwritev), fdatasync
//! durability, hole punching and SEEK_DATA/SEEK_HOLE allocation maps.

use std::{
    fs::{File, OpenOptions},
    os::{
        fd::AsRawFd,
        unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    sync::{
        OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::{BlockDevice, BlockError, BlockErrorKind, Extent, Result, check_range, total_len};

/// A raw image file (sparse when the filesystem allows) or a block device.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    path: PathBuf,
    size: u64,
    is_block_device: bool,
    /// On tmpfs: reads are memory copies (tmpfs refuses RWF_NOWAIT, but never waits).
    in_memory: bool,
    /// Whether the kernel takes RWF_NOWAIT on writes to this file (cleared on EOPNOTSUPP).
    write_nowait: AtomicBool,
    /// Writes that must not wait are refused until then (see [`SlowWrites`]).
    slow: SlowWrites,
    /// The file opened with `O_DIRECT` for [`BlockDevice::write_uncached_at`], once asked
    /// for (`None`: the filesystem refuses it).
    direct: OnceLock<Option<File>>,
}

/// Alignment of buffers, offsets and lengths written with `O_DIRECT`.
pub const DIRECT_ALIGN: usize = 4096;

/// A buffered write slower than this waited for something: dirty page throttling, reclaim,
/// or the thread was preempted (on two busy cores, a few milliseconds now and then).
const SLOW_WRITE: Duration = Duration::from_millis(2);
/// Time a caller that must not wait may lose to slow writes per [`SLOW_WINDOW_US`] before
/// such writes are refused: 1% of it. A throttled disk (pauses of 10-200 ms) is over it at
/// once; a preempted thread's few milliseconds every few seconds are not, and refusing then
/// would cost far more than it saves (each refused write takes two thread wake-ups).
const SLOW_BUDGET_US: u64 = 10_000;
/// The window slow writes are counted in, in microseconds.
const SLOW_WINDOW_US: u64 = 1_000_000;
/// A refusal ends early once the writes made meanwhile where waiting is allowed (the I/O
/// threads) have all been fast for this long, in microseconds...
const CALM_US: u64 = 1_000_000;
/// ...and were at least this many (a throttled writer is paused every 10-200 ms, so a
/// second of writes without a pause means the throttling is over).
const CALM_WRITES: u64 = 16;

/// Where the kernel cannot say whether a buffered write would wait (ext4 and tmpfs refuse
/// RWF_NOWAIT for buffered writes), a write that must not wait is tried as a plain buffered
/// write, which is a copy into the page cache unless the kernel throttles dirty pages or
/// reclaims memory. Its time is watched: once writes slower than [`SLOW_WRITE`] have taken
/// more than [`SLOW_BUDGET_US`] within a second, such writes are refused for a second, two
/// after the next time, up to a minute, so a throttled disk costs a caller that must not
/// wait one budget per period at most. Meanwhile the writes made where waiting is allowed
/// are timed too: a second of them without a slow one ends the refusal early (a burst that
/// the kernel throttled is over), the period still doubling if slow writes come back.
#[derive(Debug, Default)]
struct SlowWrites {
    /// Microseconds since `epoch` until which writes are refused.
    until: AtomicU64,
    /// Refusals in a row (each doubles the period).
    streak: AtomicU64,
    /// Start of the current counting window, in microseconds since `epoch`.
    window: AtomicU64,
    /// Microseconds spent in slow writes within the window.
    spent: AtomicU64,
    /// While refusing: since when the writes allowed to wait have been fast, and how many.
    calm_since: AtomicU64,
    calm_writes: AtomicU64,
    epoch: OnceLock<Instant>,
}

impl SlowWrites {
    fn now(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_micros() as u64
    }

    fn refusing(&self) -> bool {
        // No clock read while no write has ever been slow.
        let until = self.until.load(Ordering::Relaxed);
        until != 0 && self.now() < until
    }

    /// Record how long a write to `path` took.
    fn took(&self, d: Duration, path: &Path) {
        if d < SLOW_WRITE {
            return;
        }
        let now = self.now();
        let us = d.as_micros() as u64;
        // Concurrent writers may race on the window's start: the count is approximate.
        let spent = if now.saturating_sub(self.window.load(Ordering::Relaxed)) >= SLOW_WINDOW_US {
            self.window.store(now, Ordering::Relaxed);
            self.spent.store(us, Ordering::Relaxed);
            us
        } else {
            self.spent.fetch_add(us, Ordering::Relaxed) + us
        };
        if spent < SLOW_BUDGET_US {
            tracing::trace!(path = %path.display(), took_us = us, spent_us = spent, "slow buffered write");
            return;
        }
        self.spent.store(0, Ordering::Relaxed);
        // A minute after the last refusal ended, the periods start over.
        let quiet = now.saturating_sub(self.until.load(Ordering::Relaxed)) > 60_000_000;
        let streak = if quiet {
            self.streak.store(1, Ordering::Relaxed);
            1
        } else {
            (self.streak.fetch_add(1, Ordering::Relaxed) + 1).min(7)
        };
        let period = 1_000_000u64 << (streak - 1);
        self.calm_since.store(now, Ordering::Relaxed);
        self.calm_writes.store(0, Ordering::Relaxed);
        self.until.store(now + period, Ordering::Relaxed);
        tracing::debug!(
            path = %path.display(),
            took_us = us,
            spent_us = spent,
            refuse_s = period / 1_000_000,
            "slow buffered writes: writes that must not wait go to the I/O threads for a while"
        );
    }

    /// While refusing: record how long a write allowed to wait took (one that would
    /// otherwise have been tried without waiting), and end the refusal after a calm second.
    fn waited(&self, d: Duration, path: &Path) {
        let now = self.now();
        if d >= SLOW_WRITE {
            self.calm_since.store(now, Ordering::Relaxed);
            self.calm_writes.store(0, Ordering::Relaxed);
            return;
        }
        let writes = self.calm_writes.fetch_add(1, Ordering::Relaxed) + 1;
        let calm = now.saturating_sub(self.calm_since.load(Ordering::Relaxed));
        if calm >= CALM_US && writes >= CALM_WRITES {
            // Ended now, not forgotten: slow writes within a minute double the period.
            self.until.store(now.max(1), Ordering::Relaxed);
            tracing::debug!(
                path = %path.display(),
                calm_us = calm,
                writes,
                "buffered writes are fast again: writes that must not wait are tried again"
            );
        }
    }
}

/// Largest write timed while refusing: the size of the writes tried without waiting (a
/// larger one may take over [`SLOW_WRITE`] for its copy alone).
const PROBE_MAX: u64 = 1 << 20;

/// `statfs` magic of tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// iovecs per pwritev call (Linux's IOV_MAX).
const IOV_MAX: usize = 1024;

impl FileDevice {
    /// Open an image file or block device. A missing file is created sparse with
    /// `create_size` bytes; an existing file smaller than `create_size` is grown.
    pub fn open(path: &Path, create_size: Option<u64>, read_only: bool) -> Result<Self> {
        let ctx = || path.display().to_string();
        let exists = path.exists();
        if !exists && create_size.is_none() {
            return Err(BlockError::new(
                BlockErrorKind::Io,
                format!("{} does not exist", ctx()),
            ));
        }
        if !exists && let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| BlockError::io(e, ctx()))?;
        }
        if let (false, Some(size)) = (exists, create_size) {
            // A missing image is created sparse, even for a read-only LUN (it reads zeroes).
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| BlockError::io(e, ctx()))?;
            f.set_len(size).map_err(|e| BlockError::io(e, ctx()))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| BlockError::io(e, ctx()))?;
        let meta = file.metadata().map_err(|e| BlockError::io(e, ctx()))?;
        let is_block_device = meta.file_type().is_block_device();
        let size = if is_block_device {
            // SAFETY: lseek on a valid, owned descriptor has no memory effects.
            let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
            if end < 0 {
                return Err(BlockError::io(std::io::Error::last_os_error(), ctx()));
            }
            end as u64
        } else {
            let mut size = meta.len();
            if let Some(want) = create_size
                && want > size
            {
                if read_only {
                    return Err(BlockError::new(
                        BlockErrorKind::ReadOnly,
                        format!("{} is smaller than its configured size", ctx()),
                    ));
                }
                file.set_len(want).map_err(|e| BlockError::io(e, ctx()))?;
                size = want;
            }
            size
        };
        let in_memory = !is_block_device && fs_type(&file) == Some(TMPFS_MAGIC);
        Ok(Self {
            file,
            path: path.to_owned(),
            size,
            is_block_device,
            in_memory,
            write_nowait: AtomicBool::new(true),
            slow: SlowWrites::default(),
            direct: OnceLock::new(),
        })
    }

    /// The path this device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// The `O_DIRECT` descriptor, opened on first use; `None` on tmpfs, for a read-only
    /// device, or where the filesystem refuses `O_DIRECT`.
    fn direct(&self) -> Option<&File> {
        self.direct
            .get_or_init(|| {
                if self.in_memory {
                    return None;
                }
                OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&self.path)
                    .inspect_err(|e| {
                        tracing::debug!(path = %self.path.display(), error = %e, "no O_DIRECT");
                    })
                    .ok()
            })
            .as_ref()
    }

    /// One `pwritev2` of up to [`IOV_MAX`] buffers from `bufs`, the first from `start`:
    /// bytes written, or -1 with the error in `errno`.
    fn pwritev2(&self, bufs: &[Bytes], start: usize, offset: u64, flags: i32) -> isize {
        // Write data arrives in a few pieces (one per Data-Out PDU): no allocation for up
        // to eight.
        let iov: smallvec::SmallVec<[libc::iovec; 8]> = bufs
            .iter()
            .take(IOV_MAX)
            .enumerate()
            .map(|(i, b)| {
                let s = if i == 0 { &b[start..] } else { &b[..] };
                libc::iovec {
                    iov_base: s.as_ptr() as *mut libc::c_void,
                    iov_len: s.len(),
                }
            })
            .collect();
        // SAFETY: every iovec points into a live `Bytes` borrowed for this call, and the
        // kernel only reads from them.
        unsafe {
            libc::pwritev2(
                self.fd(),
                iov.as_ptr(),
                iov.len() as i32,
                offset as i64,
                flags,
            )
        }
    }

    fn pwritev_all(&self, bufs: &[Bytes], mut offset: u64, fua: bool) -> Result<()> {
        // Slices still to write: (buffer index, start within it).
        let mut idx = 0;
        let mut start = 0usize;
        let mut use_dsync = fua;
        while idx < bufs.len() {
            let flags = if use_dsync { libc::RWF_DSYNC } else { 0 };
            let n = self.pwritev2(&bufs[idx..], start, offset, flags);
            if n < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) if use_dsync => {
                        // No RWF_DSYNC: write normally, then fdatasync below.
                        use_dsync = false;
                        continue;
                    }
                    _ => {
                        return Err(BlockError::io(
                            err,
                            format!("write {}@{offset}", self.path.display()),
                        ));
                    }
                }
            }
            if n == 0 {
                return Err(BlockError::new(BlockErrorKind::Io, "pwritev wrote nothing"));
            }
            let mut n = n as usize;
            offset += n as u64;
            while n > 0 && idx < bufs.len() {
                let left = bufs[idx].len() - start;
                if n >= left {
                    n -= left;
                    idx += 1;
                    start = 0;
                } else {
                    start += n;
                    n = 0;
                }
            }
            while idx < bufs.len() && bufs[idx].len() == start {
                idx += 1;
                start = 0;
            }
        }
        if fua && !use_dsync {
            self.flush()?;
        }
        Ok(())
    }
}

impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| BlockError::io(e, format!("read {}@{offset}", self.path.display())))
    }

    fn read_at_nowait(&self, buf: &mut [u8], offset: u64) -> Result<bool> {
        check_range(self.size, offset, buf.len() as u64)?;
        if self.in_memory {
            self.read_at(buf, offset)?;
            return Ok(true);
        }
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: the iovec points into `buf`, exclusively borrowed for this call.
        let n = unsafe { libc::preadv2(self.fd(), &iov, 1, offset as i64, libc::RWF_NOWAIT) };
        // Short (part of the range is not cached), EAGAIN, or no RWF_NOWAIT here: not now.
        // The caller reads the whole range again where waiting is allowed.
        Ok(n >= 0 && n as usize == buf.len())
    }

    fn write_at_nowait(&self, bufs: &[Bytes], offset: u64, fua: bool) -> Result<bool> {
        check_range(self.size, offset, total_len(bufs))?;
        if fua || bufs.len() > IOV_MAX || self.slow.refusing() {
            return Ok(false);
        }
        if self.write_nowait.load(Ordering::Relaxed) {
            // `bufs` fits one call (checked above).
            let n = self.pwritev2(bufs, 0, offset, libc::RWF_NOWAIT);
            if n >= 0 {
                // Short: the rest would wait; the caller writes it all again.
                return Ok(n as u64 == total_len(bufs));
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EOPNOTSUPP) => self.write_nowait.store(false, Ordering::Relaxed),
                _ => return Ok(false),
            }
        }
        let t0 = Instant::now();
        self.pwritev_all(bufs, offset, false)?;
        self.slow.took(t0.elapsed(), &self.path);
        Ok(true)
    }

    fn write_at(&self, bufs: &[Bytes], offset: u64, fua: bool) -> Result<()> {
        let len = total_len(bufs);
        check_range(self.size, offset, len)?;
        // While writes that must not wait are refused, those of them that came here are
        // timed, to see when the refusal can end.
        let timed = (!fua && len <= PROBE_MAX && self.slow.refusing()).then(Instant::now);
        self.pwritev_all(bufs, offset, fua)?;
        if let Some(t0) = timed {
            self.slow.waited(t0.elapsed(), &self.path);
        }
        Ok(())
    }

    fn write_uncached_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let ctx = || format!("write {} at {offset}", self.path.display());
        let aligned = buf.as_ptr().align_offset(DIRECT_ALIGN) == 0
            && buf.len().is_multiple_of(DIRECT_ALIGN)
            && offset.is_multiple_of(DIRECT_ALIGN as u64);
        if aligned && let Some(f) = self.direct() {
            match f.write_all_at(buf, offset) {
                Ok(()) => return Ok(()),
                // Alignment the device does not take: the page cache does.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(BlockError::io(e, ctx())),
            }
        }
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| BlockError::io(e, ctx()))
    }

    fn flush(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| BlockError::io(e, format!("fdatasync {}", self.path.display())))
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        check_range(self.size, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate on a valid descriptor has no memory effects.
        let r = unsafe { libc::fallocate(self.fd(), mode, offset as i64, len as i64) };
        if r == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => self.write_zeroes(offset, len, false),
            _ => Err(BlockError::io(
                err,
                format!("punch hole {}@{offset}", self.path.display()),
            )),
        }
    }

    fn allocation(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size, offset, len)?;
        let end = offset + len;
        // On tmpfs, SEEK_HOLE walks the file's pages up to the next hole (a whole 1 GiB file:
        // milliseconds), and tmpfs counts data pages only: a file whose pages cover its size
        // has no hole.
        let full = self.in_memory
            && self
                .file
                .metadata()
                .is_ok_and(|m| m.blocks().saturating_mul(512) >= self.size);
        if self.is_block_device || len == 0 || full {
            return Ok(vec![Extent {
                offset,
                len,
                allocated: true,
            }]);
        }
        let seek = |pos: u64, whence: i32| -> Result<Option<u64>> {
            // SAFETY: lseek on a valid descriptor has no memory effects.
            let r = unsafe { libc::lseek(self.fd(), pos as i64, whence) };
            if r >= 0 {
                return Ok(Some(r as u64));
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                // No data at or after pos.
                Some(libc::ENXIO) => Ok(None),
                _ => Err(BlockError::io(err, "lseek")),
            }
        };
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let data = seek(pos, libc::SEEK_DATA)?.unwrap_or(end).min(end);
            if data > pos {
                out.push(Extent {
                    offset: pos,
                    len: data - pos,
                    allocated: false,
                });
                pos = data;
                continue;
            }
            let hole = seek(pos, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
            let hole = hole.max(pos + 1).min(end);
            out.push(Extent {
                offset: pos,
                len: hole - pos,
                allocated: true,
            });
            pos = hole;
        }
        Ok(out)
    }

    fn allocation_nowait(&self, offset: u64, len: u64) -> Result<Option<Vec<Extent>>> {
        // A tmpfs file's map is its page cache; elsewhere SEEK_DATA may read extent blocks.
        if self.in_memory {
            return self.allocation(offset, len).map(Some);
        }
        Ok(None)
    }

    fn thin(&self) -> bool {
        !self.is_block_device
    }
}

/// The file system type (`statfs` magic) a file lives on.
#[allow(clippy::useless_conversion)] // f_type is not i64 on every architecture
fn fs_type(file: &File) -> Option<i64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the struct on success; it is read only then.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) };
    // SAFETY: rc == 0 means the kernel filled it.
    (rc == 0).then(|| i64::from(unsafe { st.assume_init() }.f_type))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Suite;

    #[test]
    fn conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        Suite::run(|size| {
            let p = dir.path().join(format!("img-{size}-{}", rand_suffix()));
            Box::new(FileDevice::open(&p, Some(size), false).unwrap())
        });
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    /// A temporary directory on disk and one on tmpfs (where there is /dev/shm).
    fn places() -> (tempfile::TempDir, Option<tempfile::TempDir>) {
        let shm = Path::new("/dev/shm");
        (
            tempfile::tempdir().unwrap(),
            shm.is_dir().then(|| tempfile::tempdir_in(shm).unwrap()),
        )
    }

    #[test]
    fn nowait_reads_return_the_data_or_nothing() {
        let (dir, shm_dir) = places();
        for place in std::iter::once(&dir).chain(&shm_dir).map(|d| d.path()) {
            let d = FileDevice::open(&place.join("a.img"), Some(1 << 20), false).unwrap();
            let data: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
            d.write_at(&[Bytes::from(data.clone())], 4096, false)
                .unwrap();
            let mut buf = vec![0u8; 8192];
            // Just written, so in the page cache: served, unless the kernel cannot say.
            if d.read_at_nowait(&mut buf, 4096).unwrap() {
                assert_eq!(buf, data);
            }
            let e = d.read_at_nowait(&mut buf, (1 << 20) - 4096).unwrap_err();
            assert_eq!(e.kind, BlockErrorKind::OutOfBounds);
        }
        // On tmpfs every read is at hand.
        if let Some(sd) = &shm_dir {
            let d = FileDevice::open(&sd.path().join("a.img"), None, true).unwrap();
            let mut buf = vec![1u8; 4096];
            assert!(d.read_at_nowait(&mut buf, 0).unwrap());
            assert_eq!(buf, vec![0u8; 4096]);
        }
    }

    #[test]
    fn writes_that_must_not_wait_back_off_once_slow_ones_take_over_a_budget() {
        let dir = tempfile::tempdir().unwrap();
        let d = FileDevice::open(&dir.path().join("a.img"), Some(1 << 20), false).unwrap();
        let b = [Bytes::from(vec![7u8; 4096])];
        // FUA waits for the disk: always refused.
        assert!(!d.write_at_nowait(&b, 0, true).unwrap());
        assert!(d.write_at_nowait(&b, 0, false).unwrap());
        let mut buf = vec![0u8; 4096];
        d.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, vec![7u8; 4096]);
        // A fast write changes nothing, nor does one slow write (a preempted thread)...
        d.slow.took(Duration::from_micros(100), Path::new("t"));
        d.slow.took(Duration::from_millis(5), Path::new("t"));
        assert!(!d.slow.refusing());
        // ...but more than 10 ms lost to slow writes within a second refuses such writes
        // for a second...
        d.slow.took(Duration::from_millis(6), Path::new("t"));
        assert!(d.slow.refusing());
        let b2 = [Bytes::from(vec![8u8; 4096])];
        assert!(!d.write_at_nowait(&b2, 0, false).unwrap());
        d.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, vec![7u8; 4096], "a refused write writes nothing");
        let first = d.slow.until.load(Ordering::Relaxed) - d.slow.now();
        assert!(first <= 1_000_000 && first > 900_000, "{first}");
        // ...the count starts over, and each further time doubles the period, up to 64 s.
        d.slow.took(Duration::from_millis(5), Path::new("t"));
        let unchanged = d.slow.until.load(Ordering::Relaxed) - d.slow.now();
        assert!(unchanged <= first, "{unchanged}");
        d.slow.took(Duration::from_millis(20), Path::new("t"));
        let second = d.slow.until.load(Ordering::Relaxed) - d.slow.now();
        assert!(second > 1_900_000 && second <= 2_000_000, "{second}");
        for _ in 0..10 {
            d.slow.took(Duration::from_millis(20), Path::new("t"));
        }
        let longest = d.slow.until.load(Ordering::Relaxed) - d.slow.now();
        assert!(longest > 63_000_000 && longest <= 64_000_000, "{longest}");
        // Slow writes a window apart do not add up.
        let e = SlowWrites::default();
        e.epoch
            .set(Instant::now() - Duration::from_secs(5))
            .unwrap();
        e.took(Duration::from_millis(8), Path::new("t"));
        e.window.store(e.now() - SLOW_WINDOW_US, Ordering::Relaxed);
        e.took(Duration::from_millis(8), Path::new("t"));
        assert!(!e.refusing());
        e.took(Duration::from_millis(3), Path::new("t"));
        assert!(e.refusing(), "8 + 3 ms within the second window");
    }

    #[test]
    fn a_refusal_ends_once_writes_allowed_to_wait_have_been_fast_for_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let d = FileDevice::open(&dir.path().join("a.img"), Some(1 << 20), false).unwrap();
        let slow = &d.slow;
        slow.epoch
            .set(Instant::now() - Duration::from_secs(5))
            .unwrap();
        slow.took(Duration::from_millis(20), Path::new("t"));
        slow.took(Duration::from_millis(20), Path::new("t"));
        assert!(slow.refusing(), "refused for 2 s");
        let fast = Duration::from_micros(100);
        // Writes made where waiting is allowed are timed: fast ones, but not a second yet.
        for _ in 0..CALM_WRITES {
            slow.waited(fast, Path::new("t"));
        }
        assert!(slow.refusing());
        // A second later, but a slow one came meanwhile: the calm starts over.
        slow.calm_since.fetch_sub(CALM_US, Ordering::Relaxed);
        slow.waited(Duration::from_millis(3), Path::new("t"));
        slow.waited(fast, Path::new("t"));
        assert!(slow.refusing());
        // A second of fast writes, but too few of them to tell.
        slow.calm_since.fetch_sub(CALM_US, Ordering::Relaxed);
        slow.waited(fast, Path::new("t"));
        assert!(slow.refusing());
        // Enough of them: the refusal ends.
        for _ in 0..CALM_WRITES {
            slow.waited(fast, Path::new("t"));
        }
        assert!(!slow.refusing());
        let b = [Bytes::from(vec![3u8; 4096])];
        assert!(
            d.write_at_nowait(&b, 0, false).unwrap(),
            "tried in memory again"
        );
        // The refusal ended early, not forgotten: the next one lasts twice as long (4 s)...
        slow.took(Duration::from_millis(20), Path::new("t"));
        let period = slow.until.load(Ordering::Relaxed) - slow.now();
        assert!(period > 3_900_000 && period <= 4_000_000, "{period}");
        // ...and the device's writes that may wait are what is timed: a plain one is
        // counted (fast) or starts the calm over (slow), a FUA one (a flush's time) is not,
        // nor is any write once writes are no longer refused.
        slow.calm_writes.store(5, Ordering::Relaxed);
        d.write_at(&b, 0, false).unwrap();
        let n = slow.calm_writes.load(Ordering::Relaxed);
        assert!(n == 6 || n == 0, "{n}");
        slow.calm_writes.store(5, Ordering::Relaxed);
        d.write_at(&b, 0, true).unwrap();
        assert_eq!(slow.calm_writes.load(Ordering::Relaxed), 5);
        slow.until.store(1, Ordering::Relaxed);
        d.write_at(&b, 0, false).unwrap();
        assert_eq!(slow.calm_writes.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn a_full_tmpfs_file_has_no_hole_and_a_sparse_one_has_them() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        let d = FileDevice::open(&dir.path().join("a.img"), Some(4 << 20), false).unwrap();
        d.write_at(&[Bytes::from(vec![1u8; 1 << 20])], 1 << 20, false)
            .unwrap();
        let map = d.allocation(0, 4 << 20).unwrap();
        assert_eq!(
            map.iter()
                .map(|e| (e.offset, e.len, e.allocated))
                .collect::<Vec<_>>(),
            vec![
                (0, 1 << 20, false),
                (1 << 20, 1 << 20, true),
                (2 << 20, 2 << 20, false)
            ]
        );
        d.write_at(&[Bytes::from(vec![2u8; 4 << 20])], 0, false)
            .unwrap();
        let map = d.allocation(4096, (4 << 20) - 8192).unwrap();
        assert_eq!(
            map,
            vec![Extent {
                offset: 4096,
                len: (4 << 20) - 8192,
                allocated: true
            }]
        );
        assert_eq!(
            d.allocation_nowait(0, 4096).unwrap().map(|m| m.len()),
            Some(1)
        );
    }

    #[test]
    fn created_sparse_and_grown() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/disk.img");
        let d = FileDevice::open(&p, Some(1 << 30), false).unwrap();
        assert_eq!(d.size(), 1 << 30);
        let meta = std::fs::metadata(&p).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < 1 << 20, "a new image is sparse");
        drop(d);
        let d = FileDevice::open(&p, Some(2 << 30), false).unwrap();
        assert_eq!(d.size(), 2 << 30);
        drop(d);
        let d = FileDevice::open(&p, None, true).unwrap();
        assert_eq!(d.size(), 2 << 30);
        assert!(FileDevice::open(&dir.path().join("missing"), None, false).is_err());
    }

    #[test]
    fn holes_are_reported_and_punched() {
        let dir = tempfile::tempdir().unwrap();
        let d = FileDevice::open(&dir.path().join("a.img"), Some(16 << 20), false).unwrap();
        d.write_at(&[Bytes::from(vec![1u8; 1 << 20])], 4 << 20, false)
            .unwrap();
        let map = d.allocation(0, 16 << 20).unwrap();
        assert_eq!(
            map,
            vec![
                Extent {
                    offset: 0,
                    len: 4 << 20,
                    allocated: false
                },
                Extent {
                    offset: 4 << 20,
                    len: 1 << 20,
                    allocated: true
                },
                Extent {
                    offset: 5 << 20,
                    len: 11 << 20,
                    allocated: false
                },
            ]
        );
        d.discard(4 << 20, 1 << 20).unwrap();
        assert!(
            d.allocation(0, 16 << 20)
                .unwrap()
                .iter()
                .all(|e| !e.allocated)
        );
        let mut buf = vec![9u8; 4096];
        d.read_at(&mut buf, 4 << 20).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn uncached_writes_land_aligned_or_not_and_reads_see_them() {
        let (dir, shm_dir) = places();
        for place in std::iter::once(&dir).chain(&shm_dir).map(|d| d.path()) {
            let d = FileDevice::open(&place.join("a.img"), Some(1 << 20), false).unwrap();
            // Cached first, so that the uncached write must replace what the cache holds.
            d.write_at(&[Bytes::from(vec![7u8; 1 << 16])], 0, false)
                .unwrap();
            let mut raw = vec![0u8; (1 << 16) + DIRECT_ALIGN];
            let at = raw.as_ptr().align_offset(DIRECT_ALIGN);
            let aligned = &mut raw[at..at + (1 << 16)];
            for (i, b) in aligned.iter_mut().enumerate() {
                *b = (i % 251) as u8;
            }
            d.write_uncached_at(aligned, 0).unwrap();
            let mut back = vec![0u8; 1 << 16];
            d.read_at(&mut back, 0).unwrap();
            assert_eq!(&back[..], &aligned[..], "{}", place.display());
            // Unaligned offset and length: through the page cache.
            d.write_uncached_at(&aligned[1..1001], 4097).unwrap();
            d.read_at(&mut back[..1000], 4097).unwrap();
            assert_eq!(&back[..1000], &aligned[1..1001]);
            d.flush().unwrap();
            let e = d.write_uncached_at(&aligned[..4096], 1 << 20).unwrap_err();
            assert_eq!(e.kind, BlockErrorKind::OutOfBounds);
        }
    }
}
