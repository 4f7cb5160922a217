//! An append-only log of fixed-size records with group commit: the durable form of the
//! replication layer's growing sets (chunk logs, snapshot maps, restore progress). Appends
//! are cheap; `sync` makes every earlier append durable, and concurrent callers share one
//! fdatasync.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::{Condvar, Mutex},
};

/// A log file of `header` bytes followed by records of `rec` bytes.
#[derive(Debug)]
pub struct RecordLog {
    path: PathBuf,
    file: Mutex<File>,
    commit: Mutex<Commit>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct Commit {
    appended: u64,
    synced: u64,
    syncing: bool,
}

impl RecordLog {
    /// Open (creating) a log of `header` bytes and `rec`-byte records, and return it with
    /// its contents: the header (when the file holds one) and every whole record. A torn
    /// last record (a crash mid-append) is cut off.
    pub fn open(path: &Path, header: usize, rec: usize) -> std::io::Result<(Self, Vec<u8>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let whole = if buf.len() < header {
            buf.len()
        } else {
            header + (buf.len() - header) / rec * rec
        };
        if whole != buf.len() {
            file.set_len(whole as u64)?;
            buf.truncate(whole);
        }
        let log = Self {
            path: path.to_owned(),
            file: Mutex::new(file),
            commit: Mutex::new(Commit::default()),
            cv: Condvar::new(),
        };
        Ok((log, buf))
    }

    /// Append bytes (whole records; not yet durable). Returns the commit generation to
    /// wait for.
    pub fn append(&self, bytes: &[u8]) -> std::io::Result<u64> {
        let mut f = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.write_all(bytes)?;
        let mut c = self
            .commit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.appended += 1;
        Ok(c.appended)
    }

    /// Make every append up to generation `gen` durable, after `before` (e.g. syncing the
    /// data the records describe). Concurrent callers share one sync.
    pub fn sync(
        &self,
        generation: u64,
        before: &dyn Fn() -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut c = self
            .commit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if c.synced >= generation {
                return Ok(());
            }
            if !c.syncing {
                break;
            }
            c = self
                .cv
                .wait(c)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        c.syncing = true;
        let target = c.appended;
        drop(c);
        let r = before().and_then(|()| {
            let f = self
                .file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f.sync_data()
        });
        let mut c = self
            .commit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.syncing = false;
        if r.is_ok() {
            c.synced = c.synced.max(target);
        }
        self.cv.notify_all();
        r
    }

    /// The generation of the last append.
    pub fn appended(&self) -> u64 {
        self.commit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .appended
    }

    /// Replace the whole log durably with `contents` (compaction, a new header).
    pub fn rewrite(&self, contents: &[u8]) -> std::io::Result<()> {
        crate::bitmap::write_atomic(&self.path, contents)?;
        let f = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)?;
        *self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = f;
        Ok(())
    }

    /// Remove the log file.
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_record_is_cut_and_the_header_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        {
            let (log, got) = RecordLog::open(&p, 4, 3).unwrap();
            assert!(got.is_empty());
            log.append(b"HEAD").unwrap();
            let g = log.append(b"abcdef").unwrap();
            log.sync(g, &|| Ok(())).unwrap();
            log.append(b"gh").unwrap();
        }
        let (log, got) = RecordLog::open(&p, 4, 3).unwrap();
        assert_eq!(got, b"HEADabcdef");
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            10,
            "the torn record is cut off"
        );
        log.rewrite(b"NEW!xyz").unwrap();
        log.append(b"123").unwrap();
        drop(log);
        assert_eq!(RecordLog::open(&p, 4, 3).unwrap().1, b"NEW!xyz123");
        // A file shorter than its header is returned as it is (the caller decides).
        std::fs::write(&p, b"HE").unwrap();
        assert_eq!(RecordLog::open(&p, 4, 3).unwrap().1, b"HE");
    }
}
