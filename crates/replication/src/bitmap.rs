//! Chunk bitmaps (which chunks are dirty or copied) and the append-only chunk logs that
//! make such sets durable without rewriting a whole bitmap per write.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::Path,
};

use crate::reclog::RecordLog;

/// Replication granularity: dirty tracking, copy-on-write and copies work in chunks.
pub const CHUNK: u64 = 64 * 1024;

/// The chunks covering `[offset, offset + len)`.
pub fn chunks(offset: u64, len: u64) -> std::ops::RangeInclusive<u64> {
    let first = offset / CHUNK;
    let last = (offset + len.max(1) - 1) / CHUNK;
    first..=last
}

/// A set of chunks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    len: u64,
    count: u64,
}

impl Bitmap {
    /// An empty bitmap for `len` chunks.
    pub fn new(len: u64) -> Self {
        Self {
            words: vec![0; len.div_ceil(64) as usize],
            len,
            count: 0,
        }
    }

    /// A full bitmap (every chunk set).
    pub fn full(len: u64) -> Self {
        let mut b = Self::new(len);
        b.set_range(0, len);
        b
    }

    /// Number of chunks covered.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no chunk is set.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of chunks set.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether chunk `c` is set.
    pub fn get(&self, c: u64) -> bool {
        c < self.len && self.words[(c / 64) as usize] & (1 << (c % 64)) != 0
    }

    /// Set chunk `c`; returns whether it was newly set.
    pub fn set(&mut self, c: u64) -> bool {
        if c >= self.len {
            return false;
        }
        let w = &mut self.words[(c / 64) as usize];
        let bit = 1 << (c % 64);
        let new = *w & bit == 0;
        *w |= bit;
        self.count += u64::from(new);
        new
    }

    /// Clear chunk `c`.
    pub fn clear(&mut self, c: u64) {
        if c < self.len {
            let w = &mut self.words[(c / 64) as usize];
            let bit = 1 << (c % 64);
            if *w & bit != 0 {
                *w &= !bit;
                self.count -= 1;
            }
        }
    }

    /// Set chunks `[from, to)`.
    pub fn set_range(&mut self, from: u64, to: u64) {
        for c in from..to.min(self.len) {
            self.set(c);
        }
    }

    /// Add every chunk of `other`.
    pub fn union(&mut self, other: &Self) {
        for c in other.iter() {
            self.set(c);
        }
    }

    /// Remove every chunk.
    pub fn clear_all(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
        self.count = 0;
    }

    /// The set chunks, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let base = i as u64 * 64;
            (0..64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| base + b)
        })
    }

    /// The first set chunk at or after `from`.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        let mut c = from;
        while c < self.len {
            let w = self.words[(c / 64) as usize] >> (c % 64);
            if w != 0 {
                return Some(c + u64::from(w.trailing_zeros()));
            }
            c = (c / 64 + 1) * 64;
        }
        None
    }

    /// Serialize: chunk count (8 bytes LE) then the words.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + self.words.len() * 8);
        v.extend_from_slice(&self.len.to_le_bytes());
        for w in &self.words {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v
    }

    /// Deserialize (`None` when malformed).
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let len = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
        let n = len.div_ceil(64) as usize;
        if b.len() != 8 + n * 8 {
            return None;
        }
        let words: Vec<u64> = b[8..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let count = words.iter().map(|w| u64::from(w.count_ones())).sum();
        Some(Self { words, len, count })
    }

    /// Save durably (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        write_atomic(path, &self.to_bytes())
    }

    /// Load a saved bitmap; a missing file is `Ok(None)`.
    pub fn load(path: &Path) -> std::io::Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(b) => Self::from_bytes(&b).map(Some).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is corrupt", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Write a file durably: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    // A temporary name of its own: `x.oos` and `x.tdirty` must not share `x.tmp`.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{seq}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    {
        // Owner only: the catalog holds the access points' CHAP secrets.
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?
        };
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// An append-only log of chunk numbers (8 bytes each), the durable form of a growing chunk
/// set (clone "copied" maps, restore progress): a [`RecordLog`] of chunk numbers.
#[derive(Debug)]
pub struct ChunkLog {
    log: RecordLog,
}

impl ChunkLog {
    /// Open (creating) a log and return it with the chunks it holds.
    pub fn open(path: &Path, chunks: u64) -> std::io::Result<(Self, Bitmap)> {
        let (log, buf) = RecordLog::open(path, 0, 8)?;
        let mut set = Bitmap::new(chunks);
        for c in decode(&buf) {
            set.set(c);
        }
        Ok((Self { log }, set))
    }

    /// Append chunk numbers (not yet durable). Returns the commit generation to wait for.
    pub fn append(&self, cs: &[u64]) -> std::io::Result<u64> {
        self.log.append(&encode(cs.iter().copied()))
    }

    /// Make every append up to generation `gen` durable, after `before` (e.g. syncing the
    /// data the records describe). Concurrent callers share one sync.
    pub fn sync(
        &self,
        generation: u64,
        before: &dyn Fn() -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        self.log.sync(generation, before)
    }

    /// The generation of the last append.
    pub fn appended(&self) -> u64 {
        self.log.appended()
    }

    /// Rewrite the log to hold exactly `set` (compaction).
    pub fn rewrite(&self, set: &Bitmap) -> std::io::Result<()> {
        self.log.rewrite(&encode(set.iter()))
    }

    /// Remove the log file.
    pub fn remove(&self) {
        self.log.remove();
    }
}

/// Numbers as little-endian 8-byte records.
pub(crate) fn encode(ns: impl Iterator<Item = u64>) -> Vec<u8> {
    ns.flat_map(u64::to_le_bytes).collect()
}

/// Little-endian 8-byte records as numbers (a short tail is ignored).
pub(crate) fn decode(b: &[u8]) -> impl Iterator<Item = u64> + '_ {
    b.chunks_exact(8)
        .map(|r| u64::from_le_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_operations() {
        let mut b = Bitmap::new(200);
        assert!(b.set(3) && !b.set(3));
        b.set_range(60, 70);
        assert_eq!(b.count(), 11);
        assert_eq!(b.next_set(4), Some(60));
        assert_eq!(b.next_set(70), None);
        b.clear(65);
        assert!(!b.get(65));
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            vec![3, 60, 61, 62, 63, 64, 66, 67, 68, 69]
        );
        let back = Bitmap::from_bytes(&b.to_bytes()).unwrap();
        assert_eq!(back, b);
        assert!(Bitmap::from_bytes(&[1, 2, 3]).is_none());
        assert!(!b.set(500));
        assert_eq!(chunks(0, 1), 0..=0);
        assert_eq!(chunks(CHUNK - 1, 2), 0..=1);
        assert_eq!(Bitmap::full(130).count(), 130);
    }

    #[test]
    fn chunk_log_survives_reopen_and_torn_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        {
            let (log, set) = ChunkLog::open(&p, 100).unwrap();
            assert!(set.is_empty());
            let g = log.append(&[5, 7]).unwrap();
            log.sync(g, &|| Ok(())).unwrap();
            log.append(&[9]).unwrap();
        }
        // A torn record at the end.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        drop(f);
        let (log, set) = ChunkLog::open(&p, 100).unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![5, 7, 9]);
        let mut s = Bitmap::new(100);
        s.set(1);
        log.rewrite(&s).unwrap();
        drop(log);
        let (_, set) = ChunkLog::open(&p, 100).unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![1]);
    }
}
