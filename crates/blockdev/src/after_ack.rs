//! Work a write leaves for after it is acknowledged.
//!
//! A caller that answers writes on the thread that made them (an iSCSI connection serving
//! writes that only copy into memory) opens a [`Scope`] around them. A layer below may then
//! leave work that need not delay the answer, such as an asynchronous mirror's copy of the
//! write, with [`defer`]; the caller [`take`]s it when it closes the scope and runs it once
//! the answers are on their way, while the initiator turns them around. Outside a scope
//! [`defer`] declines, and the layer does the work its usual way.
//!
//! Deferred work must be safe to skip or to run late: [`Deferred`] runs what it holds when it
//! is dropped, and whatever the work finishes must be finished by some other means too (an
//! asynchronous mirror's shipper thread ships what a connection did not).

use std::{
    cell::{Cell, RefCell},
    sync::Arc,
};

use smallvec::SmallVec;

/// Work to run after a write is acknowledged.
pub trait AfterAck: Send + Sync {
    /// Run it (once per [`take`], however many writes deferred it).
    fn run(&self);
}

type Work = SmallVec<[Arc<dyn AfterAck>; 2]>;

thread_local! {
    static OPEN: Cell<bool> = const { Cell::new(false) };
    static WORK: RefCell<Work> = const { RefCell::new(SmallVec::new_const()) };
}

/// Writes made on this thread while the scope lives may leave work for after their
/// acknowledgement. Not to be held across an `.await` (the thread serves other tasks then),
/// nor nested (the inner scope's end closes the outer one).
#[derive(Debug)]
pub struct Scope(());

/// Open a scope on this thread (see [`Scope`]).
pub fn scope() -> Scope {
    OPEN.with(|o| o.set(true));
    Scope(())
}

impl Scope {
    /// Close the scope and take the work left in it.
    pub fn take(self) -> Deferred {
        drop(self);
        take()
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        OPEN.with(|o| o.set(false));
    }
}

/// Whether a scope is open on this thread: work left now will run after the answer.
pub fn open() -> bool {
    OPEN.with(Cell::get)
}

/// Leave `work` for after the acknowledgement: true when a scope is open on this thread
/// (the same work left twice runs once), false otherwise (the caller does it its usual way).
pub fn defer(work: &Arc<dyn AfterAck>) -> bool {
    if !open() {
        return false;
    }
    WORK.with(|w| {
        let mut w = w.borrow_mut();
        if !w.iter().any(|x| same(x, work)) {
            w.push(work.clone());
        }
    });
    true
}

fn same(a: &Arc<dyn AfterAck>, b: &Arc<dyn AfterAck>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// Take the work left on this thread.
pub fn take() -> Deferred {
    Deferred(WORK.with(|w| std::mem::take(&mut *w.borrow_mut())))
}

/// Work taken from a scope, run by [`Deferred::run`] or when dropped.
#[must_use = "deferred work runs when dropped: run it after the answers are sent"]
pub struct Deferred(Work);

impl Deferred {
    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Run the work.
    pub fn run(mut self) {
        self.run_all();
    }

    fn run_all(&mut self) {
        for w in self.0.drain(..) {
            w.run();
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        self.run_all();
    }
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Deferred").field(&self.0.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Count(AtomicUsize);

    impl AfterAck for Count {
        fn run(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn work_is_left_only_inside_a_scope_and_runs_once_when_taken() {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        let work: Arc<dyn AfterAck> = c.clone();
        assert!(!open());
        assert!(!defer(&work), "no scope: the caller does the work itself");
        assert!(take().is_empty());

        let s = scope();
        assert!(open());
        assert!(defer(&work));
        assert!(defer(&work));
        let left = s.take();
        assert!(!open(), "taking closes the scope");
        assert!(!left.is_empty());
        assert_eq!(
            c.0.load(Ordering::Relaxed),
            0,
            "nothing runs before it is asked to"
        );
        left.run();
        assert_eq!(c.0.load(Ordering::Relaxed), 1, "left twice, run once");

        // Dropped unrun, it still runs; and a scope is per thread.
        let s = scope();
        assert!(defer(&work));
        std::thread::scope(|t| {
            t.spawn(|| {
                assert!(!open());
                assert!(!defer(&work));
            });
        });
        drop(s.take());
        assert_eq!(c.0.load(Ordering::Relaxed), 2);
        assert!(take().is_empty());
    }
}
