//! Network threads: one single-threaded runtime per thread, each serving the connections
//! given to it. A connection's tasks (its protocol loop and its writer) all run on one
//! thread, so an answer made by the connection is sent without waking another thread.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread::JoinHandle,
};

use tokio::{runtime::Handle, sync::oneshot};

/// One network thread: its runtime's handle and how many connections it serves.
#[derive(Debug)]
struct NetThread {
    handle: Handle,
    serving: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The network threads.
#[derive(Debug)]
pub struct NetThreads {
    threads: Vec<NetThread>,
    next: AtomicUsize,
}

impl NetThread {
    fn load(&self) -> usize {
        self.serving.load(Ordering::Relaxed)
    }
}

/// Counts a connection against its thread while it lives.
struct Serving(Arc<AtomicUsize>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl NetThreads {
    /// Start `n` threads (at least one).
    pub fn new(n: usize) -> std::io::Result<Self> {
        let mut threads = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("ironlun-net-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(rt.handle().clone()));
                    // Runs the connections' tasks until the threads are stopped; tasks
                    // still running then are dropped with the runtime.
                    let _ = rt.block_on(stopped);
                })?;
            let handle = ready_rx
                .recv()
                .map_err(|_| std::io::Error::other("network thread exited at start"))??;
            threads.push(NetThread {
                handle,
                serving: Arc::default(),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Self {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// Run a connection's future on the thread that serves the fewest connections (the
    /// next one in turn among equals).
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.threads.len();
        let t = (0..n)
            .map(|k| &self.threads[(start + k) % n])
            .min_by_key(|t| t.load())
            .unwrap_or(&self.threads[0]);
        t.serving.fetch_add(1, Ordering::Relaxed);
        let serving = Serving(t.serving.clone());
        t.handle.spawn(async move {
            let _serving = serving;
            fut.await;
        });
    }

    /// Number of threads.
    pub fn size(&self) -> usize {
        self.threads.len()
    }
}

impl Drop for NetThreads {
    fn drop(&mut self) {
        for t in &mut self.threads {
            drop(t.stop.take());
        }
        // The last connection to end may drop the threads from one of them: that one
        // stops once the connection's task returns, and cannot wait for itself.
        let here = std::thread::current().id();
        for t in &mut self.threads {
            if let Some(j) = t.thread.take().filter(|j| j.thread().id() != here) {
                let _ = j.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    use super::NetThreads;

    fn this_thread() -> String {
        std::thread::current().name().unwrap_or("").to_owned()
    }

    /// Connections go to the thread serving the fewest, and a connection's own tasks run
    /// on its thread.
    #[test]
    fn connections_spread_over_the_threads_and_their_tasks_stay_on_theirs() {
        let net = NetThreads::new(2).unwrap();
        assert_eq!(net.size(), 2);
        let (tx, rx) = mpsc::channel();
        let mut release = Vec::new();
        for _ in 0..4 {
            let (go, wait) = tokio::sync::oneshot::channel::<()>();
            release.push(go);
            let tx = tx.clone();
            net.spawn(async move {
                let outer = this_thread();
                let inner = tokio::spawn(async { this_thread() }).await.unwrap();
                tx.send((outer, inner)).unwrap();
                let _ = wait.await;
            });
        }
        let mut on = std::collections::HashMap::<String, usize>::new();
        for _ in 0..4 {
            let (outer, inner) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert!(outer.starts_with("ironlun-net-"), "{outer}");
            assert_eq!(inner, outer, "a connection's task runs on its thread");
            *on.entry(outer).or_default() += 1;
        }
        assert_eq!(on.values().copied().collect::<Vec<_>>(), [2, 2], "{on:?}");
        // Both connections of thread 0 (the first and the third) end: the next two go there.
        drop(release.remove(0));
        drop(release.remove(1));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while net.threads.iter().map(|t| t.load()).collect::<Vec<_>>() != [0, 2] {
            assert!(std::time::Instant::now() < deadline, "connections ended");
            std::thread::sleep(Duration::from_millis(5));
        }
        for _ in 0..2 {
            let tx = tx.clone();
            net.spawn(async move {
                tx.send((this_thread(), String::new())).unwrap();
                std::future::pending::<()>().await;
            });
        }
        for _ in 0..2 {
            let (on, _) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(on, "ironlun-net-0");
        }
    }

    /// The threads dropped from one of them (by the last connection holding them) stop
    /// without waiting for themselves.
    #[test]
    fn threads_dropped_from_one_of_them_stop() {
        let net = std::sync::Arc::new(NetThreads::new(2).unwrap());
        let (tx, rx) = mpsc::channel();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let last = net.clone();
        net.spawn(async move {
            let _ = wait.await;
            drop(last);
            tx.send(this_thread()).unwrap();
        });
        drop(net);
        go.send(()).unwrap();
        let on = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(on.starts_with("ironlun-net-"), "{on}");
    }

    /// Dropping the threads stops them, with connections still running on them.
    #[test]
    fn dropped_threads_stop_with_their_connections() {
        let net = NetThreads::new(1).unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        net.spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(net);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)),
            Err(mpsc::RecvTimeoutError::Disconnected),
            "the connection's future was dropped"
        );
    }
}
