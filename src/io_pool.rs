//! Threads that execute SCSI commands, so that disk I/O never blocks the async runtime.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crossbeam_channel::{Receiver, Sender};

/// A unit of blocking work.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed pool of I/O threads fed by one queue.
#[derive(Debug)]
pub struct IoPool {
    tx: Sender<Job>,
    threads: Vec<JoinHandle<()>>,
    /// Jobs queued so far (the trimmer's idleness test).
    queued: Arc<AtomicU64>,
}

/// How often the trimmer looks for an idle server.
const TRIM_CHECK: Duration = Duration::from_secs(5);

/// Give the allocator's free memory back to the system once the server has been idle for a
/// whole [`TRIM_CHECK`] period: glibc keeps what a burst of large I/O freed in its heaps, so
/// an idle server would otherwise hold the high-water mark of its past load. Never while
/// commands run (trimming takes the allocator's locks).
fn trimmer(queued: std::sync::Weak<AtomicU64>) {
    let mut last = u64::MAX;
    let mut trimmed = true;
    while let Some(q) = queued.upgrade() {
        let now = q.load(Ordering::Relaxed);
        drop(q);
        if now != last {
            last = now;
            trimmed = false;
        } else if !trimmed {
            // SAFETY: malloc_trim has no preconditions.
            unsafe {
                libc::malloc_trim(0);
            }
            trimmed = true;
        }
        std::thread::sleep(TRIM_CHECK);
    }
}

impl IoPool {
    /// Start `n` threads.
    pub fn new(n: usize) -> std::io::Result<Self> {
        let (tx, rx): (Sender<Job>, Receiver<Job>) = crossbeam_channel::unbounded();
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rx = rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ironlun-io-{i}"))
                    .spawn(move || {
                        while let Ok(job) = rx.recv() {
                            job();
                        }
                    })?,
            );
        }
        let queued = Arc::new(AtomicU64::new(0));
        let weak = Arc::downgrade(&queued);
        std::thread::Builder::new()
            .name("ironlun-trim".into())
            .spawn(move || trimmer(weak))?;
        Ok(Self {
            tx,
            threads,
            queued,
        })
    }

    /// Queue a job. Jobs queued after shutdown are dropped.
    pub fn spawn(&self, job: Job) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(job).is_err() {
            tracing::error!("I/O pool is gone; job dropped");
        }
    }

    /// Number of threads.
    pub fn size(&self) -> usize {
        self.threads.len()
    }
}
