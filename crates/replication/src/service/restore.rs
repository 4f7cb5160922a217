//! Restores that survive a crash. A restore makes the source read as the replica at once
//! and brings chunks back in the background; a host write to a chunk first restores it.
//! If the server dies half way, the restore must resume without restoring again a chunk a
//! host has since overwritten (that would lose an acknowledged write). So every restored
//! chunk is recorded in a log (`sync-<id>.restore`), and the record is durable, after the
//! restored data, before any host write to that chunk is issued.

use std::{
    path::Path,
    sync::{Arc, RwLock},
};

use blockdev::{BlockDevice, BlockError};

use crate::{
    bitmap::{Bitmap, ChunkLog},
    volume::RestoreSource,
};

/// Restored chunks made durable together by the background restore.
const SYNC_EVERY: u64 = 64;

/// A restore source whose progress is logged durably.
#[derive(Debug)]
pub(crate) struct DurableRestore {
    inner: Arc<dyn RestoreSource>,
    log: ChunkLog,
    done: RwLock<Bitmap>,
    /// The volume's storage (flushed before a record is made durable).
    dev: Arc<dyn BlockDevice>,
}

impl DurableRestore {
    /// Wrap `inner`; chunks already in the log at `path` (a resumed restore) are skipped.
    pub(crate) fn open(
        inner: Arc<dyn RestoreSource>,
        path: &Path,
        chunks: u64,
        dev: Arc<dyn BlockDevice>,
    ) -> std::io::Result<Arc<Self>> {
        let (log, done) = ChunkLog::open(path, chunks)?;
        for c in done.iter() {
            // Restored before the restart: not again.
            inner.restored(c).map_err(std::io::Error::other)?;
        }
        Ok(Arc::new(Self {
            inner,
            log,
            done: RwLock::new(done),
            dev,
        }))
    }

    fn is_done(&self, c: u64) -> bool {
        self.done
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(c)
    }

    /// Make every record durable.
    pub(crate) fn sync(&self) -> blockdev::Result<()> {
        let g = self.log.appended();
        self.log
            .sync(g, &|| self.dev.flush().map_err(std::io::Error::other))
            .map_err(|e| BlockError::io(e, "restore log"))
    }

    /// The restore finished: the log is no longer needed.
    pub(crate) fn remove(&self) {
        self.log.remove();
    }
}

impl RestoreSource for DurableRestore {
    fn pending(&self, c: u64) -> bool {
        !self.is_done(c) && self.inner.pending(c)
    }

    fn read_chunk(&self, c: u64, buf: &mut [u8]) -> blockdev::Result<()> {
        self.inner.read_chunk(c, buf)
    }

    fn restored(&self, c: u64) -> blockdev::Result<()> {
        self.inner.restored(c)?;
        let n = {
            let mut d = self
                .done
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            d.set(c);
            d.count()
        };
        self.log
            .append(&[c])
            .map_err(|e| BlockError::io(e, "restore log"))?;
        if n % SYNC_EVERY == 0 {
            self.sync()?;
        }
        Ok(())
    }

    fn next_pending(&self, from: u64) -> Option<u64> {
        self.inner.next_pending(from)
    }

    fn remaining(&self) -> u64 {
        self.inner.remaining()
    }

    fn settle(&self, c: u64) -> blockdev::Result<()> {
        if self.is_done(c) { self.sync() } else { Ok(()) }
    }
}
