//! The activity log of a source volume (DRBD's design): a persistent set of the extents
//! written recently. An extent enters the log, durably, before the first write to it is
//! issued; so after a crash the regions that may differ between a source and its mirrors are
//! within the logged extents, and only those are resynchronized, not the whole volume.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::Mutex,
};

/// Size of an activity-log extent.
pub const AL_EXTENT: u64 = 4 << 20;

/// Default number of hot extents: 4 GiB of recently written data.
pub const AL_CAPACITY: usize = 1024;

#[derive(Debug)]
struct State {
    /// Extent -> last use generation.
    extents: HashMap<u64, u64>,
    generation: u64,
}

impl State {
    /// Mark extents as just used; whether one of them was not logged yet.
    fn use_extents(&mut self, range: std::ops::RangeInclusive<u64>) -> bool {
        let mut new = false;
        for e in range {
            self.generation += 1;
            new |= self.extents.insert(e, self.generation).is_none();
        }
        new
    }
}

/// The extents covering `[offset, offset + len)`.
fn extents_of(offset: u64, len: u64) -> std::ops::RangeInclusive<u64> {
    offset / AL_EXTENT..=(offset + len.max(1) - 1) / AL_EXTENT
}

/// A volume's activity log.
#[derive(Debug)]
pub struct ActivityLog {
    path: PathBuf,
    file: Mutex<File>,
    state: Mutex<State>,
    capacity: usize,
}

impl ActivityLog {
    /// Open (creating) the log; returns it with the extents recorded by the last run.
    pub fn open(path: &Path, capacity: usize) -> std::io::Result<(Self, Vec<u64>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let previous: Vec<u64> = buf
            .chunks_exact(8)
            .map(|r| u64::from_le_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]))
            .collect();
        let extents = previous
            .iter()
            .enumerate()
            .map(|(i, &e)| (e, i as u64))
            .collect();
        let log = Self {
            path: path.to_owned(),
            file: Mutex::new(file),
            state: Mutex::new(State {
                extents,
                generation: previous.len() as u64,
            }),
            capacity: capacity.max(1),
        };
        Ok((log, previous))
    }

    /// [`ActivityLog::touch`] only if every extent of the range is active already (no
    /// record to write): `false`, and nothing changed, otherwise.
    pub fn touch_if_active(&self, offset: u64, len: u64) -> bool {
        let range = extents_of(offset, len);
        let mut st = self.st();
        if !range.clone().all(|e| st.extents.contains_key(&e)) {
            return false;
        }
        st.use_extents(range);
        true
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Make sure the extents of `[offset, offset + len)` are logged. A new extent is written
    /// durably before this returns; when the log is full the least recently used extent is
    /// evicted, after `before_evict` (which persists dirty bitmaps covering it) succeeds.
    pub fn touch(
        &self,
        offset: u64,
        len: u64,
        before_evict: &dyn Fn() -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut st = self.st();
        if !st.use_extents(extents_of(offset, len)) {
            return Ok(());
        }
        if st.extents.len() > self.capacity {
            before_evict()?;
            while st.extents.len() > self.capacity {
                let Some((&oldest, _)) = st.extents.iter().min_by_key(|(_, g)| **g) else {
                    break;
                };
                st.extents.remove(&oldest);
            }
        }
        let mut rec = Vec::with_capacity(st.extents.len() * 8);
        for e in st.extents.keys() {
            rec.extend_from_slice(&e.to_le_bytes());
        }
        let mut f = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&rec)?;
        f.set_len(rec.len() as u64)?;
        f.sync_data()
    }

    /// The logged extents.
    pub fn extents(&self) -> Vec<u64> {
        self.st().extents.keys().copied().collect()
    }

    /// Forget every extent (after a clean shutdown with every bitmap persisted).
    pub fn clear(&self) -> std::io::Result<()> {
        self.st().extents.clear();
        let f = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.set_len(0)?;
        f.sync_data()
    }

    /// Remove the log file.
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The chunk range an extent covers.
pub fn extent_chunks(e: u64) -> std::ops::Range<u64> {
    let per = AL_EXTENT / crate::bitmap::CHUNK;
    e * per..(e + 1) * per
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_survive_and_evict() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.al");
        let evicted = std::sync::atomic::AtomicUsize::new(0);
        {
            let (al, prev) = ActivityLog::open(&p, 2).unwrap();
            assert!(prev.is_empty());
            al.touch(0, 10, &|| Ok(())).unwrap();
            al.touch(AL_EXTENT * 5, 10, &|| Ok(())).unwrap();
            al.touch(0, 10, &|| Ok(())).unwrap();
            al.touch(AL_EXTENT * 9, 10, &|| {
                evicted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(evicted.into_inner(), 1);
        let (_, mut prev) = ActivityLog::open(&p, 2).unwrap();
        prev.sort();
        assert_eq!(prev, vec![0, 9], "extent 5 was least recently used");
        assert_eq!(extent_chunks(1), 64..128);
    }
}
