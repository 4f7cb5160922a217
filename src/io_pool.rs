//! Threads that execute SCSI commands, so that disk I/O never blocks the async runtime.

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

/// A unit of blocking work.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed pool of I/O threads fed by one queue.
#[derive(Debug)]
pub struct IoPool {
    tx: Sender<Job>,
    threads: Vec<JoinHandle<()>>,
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
        Ok(Self { tx, threads })
    }

    /// Queue a job. Jobs queued after shutdown are dropped.
    pub fn spawn(&self, job: Job) {
        if self.tx.send(job).is_err() {
            tracing::error!("I/O pool is gone; job dropped");
        }
    }

    /// Number of threads.
    pub fn size(&self) -> usize {
        self.threads.len()
    }
}
