//! The scheduling class of a thread that works behind the host's writes (an asynchronous
//! mirror's shipper): Linux's `SCHED_IDLE` while its work can wait, so that it runs on CPU
//! time the host's I/O leaves over instead of preempting the threads that serve it, and the
//! normal class when its work is urgent.
//!
//! Leaving `SCHED_IDLE` takes `CAP_SYS_NICE` (or an `RLIMIT_NICE` of 20): a thread that could
//! not come back must never go there, since an idle-class thread on busy CPUs gets almost
//! nothing.

/// A thread that moves between `SCHED_IDLE` and the normal class (moved by itself or by
/// another thread of this process).
#[derive(Debug)]
pub(crate) struct Background {
    tid: libc::pid_t,
    /// It may go to `SCHED_IDLE`: it could come back.
    allowed: bool,
    idle: bool,
}

impl Background {
    /// The calling thread, in the normal class.
    pub(crate) fn this_thread() -> Self {
        Self {
            // SAFETY: gettid takes no argument and cannot fail.
            tid: unsafe { libc::gettid() },
            allowed: may_leave_idle(),
            idle: false,
        }
    }

    /// Whether the thread runs in `SCHED_IDLE` now.
    pub(crate) fn idle(&self) -> bool {
        self.idle
    }

    /// Move the thread to `SCHED_IDLE` (`idle`) or to the normal class. It only goes to
    /// `SCHED_IDLE` where it could come back; after a refusal it is not sent there again,
    /// and the first refusal alone is logged (a move back out of `SCHED_IDLE` is still
    /// tried at every call, silently).
    pub(crate) fn set(&mut self, idle: bool) {
        if idle == self.idle || (idle && !self.allowed) {
            return;
        }
        let policy = if idle {
            libc::SCHED_IDLE
        } else {
            libc::SCHED_OTHER
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid `sched_param` that outlives the call, which only reads
        // it; a thread id that no longer exists gives ESRCH.
        let r = unsafe { libc::sched_setscheduler(self.tid, policy, &param) };
        if r == 0 {
            self.idle = idle;
            return;
        }
        if self.allowed {
            tracing::warn!(
                tid = self.tid,
                error = %std::io::Error::last_os_error(),
                to = if idle { "SCHED_IDLE" } else { "SCHED_OTHER" },
                "a background thread's scheduling class could not be changed"
            );
        }
        self.allowed = false;
    }
}

/// The capability number of `CAP_SYS_NICE`.
const CAP_SYS_NICE: u32 = 23;

/// Whether this process could move a thread from `SCHED_IDLE` back to `SCHED_OTHER` at nice
/// 0: `CAP_SYS_NICE` in the calling thread's effective set, or a soft `RLIMIT_NICE` of at
/// least 20.
pub(crate) fn may_leave_idle() -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid `rlimit` the call writes to.
    if unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut lim) } == 0 && lim.rlim_cur >= 20 {
        return true;
    }
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| effective_caps(&s))
        .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0)
}

/// The `CapEff` mask of a `/proc/*/status` text.
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// The scheduling policy of thread `tid` of this process (`None` when it is gone).
#[cfg(test)]
pub(crate) fn policy(tid: libc::pid_t) -> Option<i32> {
    // SAFETY: the call takes no pointer; a thread gone gives -1.
    let p = unsafe { libc::sched_getscheduler(tid) };
    (p >= 0).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_capabilities_are_read_from_a_status_text() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapEff:\t0000000000800000\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(1 << CAP_SYS_NICE));
        assert_eq!(effective_caps("Name:\tx\n"), None);
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
    }

    #[test]
    fn a_thread_goes_idle_and_back_only_where_it_may_come_back() {
        std::thread::spawn(|| {
            let mut b = Background::this_thread();
            assert_eq!(policy(0), Some(libc::SCHED_OTHER));
            b.set(true);
            if may_leave_idle() {
                assert!(b.idle());
                assert_eq!(policy(0), Some(libc::SCHED_IDLE));
                b.set(false);
                assert!(!b.idle());
                assert_eq!(policy(0), Some(libc::SCHED_OTHER));
            } else {
                assert!(!b.idle());
                assert_eq!(
                    policy(0),
                    Some(libc::SCHED_OTHER),
                    "no way back: never there"
                );
            }
        })
        .join()
        .unwrap();
    }
}
