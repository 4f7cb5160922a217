//! A resource pool: a directory holding replica images and copy-on-write stores, with a
//! space limit that snapshot stores are charged against.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// A pool of space for replicas.
#[derive(Debug)]
pub struct Pool {
    /// Pool name (`pool:<name>` in the admin protocol).
    pub name: String,
    /// Directory of its files.
    pub dir: PathBuf,
    /// Bytes that copy-on-write stores may use (0: unlimited).
    pub limit: u64,
    used: AtomicU64,
}

impl Pool {
    /// A pool in `dir`, created if missing.
    pub fn new(name: &str, dir: &Path, limit: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            name: name.to_owned(),
            dir: dir.to_owned(),
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Reserve `bytes`; false when the pool is full.
    pub fn reserve(&self, bytes: u64) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            if self.limit > 0 && cur + bytes > self.limit {
                return false;
            }
            match self.used.compare_exchange_weak(
                cur,
                cur + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }

    /// Return `bytes` to the pool.
    pub fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Bytes in use by copy-on-write stores.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// A path for a file of this pool.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_respect_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pool::new("p", dir.path(), 100).unwrap();
        assert!(p.reserve(60));
        assert!(!p.reserve(50));
        p.release(60);
        assert!(p.reserve(100));
        assert_eq!(p.used(), 100);
        let unlimited = Pool::new("u", dir.path(), 0).unwrap();
        assert!(unlimited.reserve(u64::MAX / 2));
    }
}
