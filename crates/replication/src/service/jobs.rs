//! Jobs (CIM_ConcreteJob): background work with progress, polled until JobState 7
//! (Completed) or 10 (Exception), kept for five minutes after it ends.

use std::{
    collections::BTreeMap,
    sync::{Condvar, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::types::JobState;

/// How long a finished job stays queryable (CIM_Job.TimeBeforeRemoval default).
pub const TIME_BEFORE_REMOVAL: Duration = Duration::from_secs(300);

/// A job as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    /// Id (`job:<id>`).
    pub id: u64,
    /// Name.
    pub name: String,
    /// The method that started it.
    pub method: String,
    /// JobState.
    pub state: JobState,
    /// PercentComplete.
    pub percent: u16,
    /// ErrorDescription, when it failed.
    pub error: Option<String>,
    /// TimeSubmitted (seconds since the epoch).
    pub submitted: u64,
    /// When it ended.
    pub finished: Option<u64>,
    /// References of the elements it affects.
    pub affected: Vec<String>,
}

#[derive(Debug)]
struct Entry {
    info: JobInfo,
    ended: Option<Instant>,
}

/// The job table.
#[derive(Debug, Default)]
pub struct Jobs {
    map: Mutex<BTreeMap<u64, Entry>>,
    cv: Condvar,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Jobs {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Register a running job.
    pub fn start(&self, id: u64, name: &str, method: &str, affected: Vec<String>) {
        let mut m = self.map();
        m.retain(|_, e| e.ended.is_none_or(|t| t.elapsed() < TIME_BEFORE_REMOVAL));
        m.insert(
            id,
            Entry {
                info: JobInfo {
                    id,
                    name: name.to_owned(),
                    method: method.to_owned(),
                    state: JobState::Running,
                    percent: 0,
                    error: None,
                    submitted: now(),
                    finished: None,
                    affected,
                },
                ended: None,
            },
        );
    }

    /// Update progress.
    pub fn progress(&self, id: u64, percent: u16) {
        if let Some(e) = self.map().get_mut(&id) {
            e.info.percent = percent.min(100);
        }
    }

    /// End a job.
    pub fn finish(&self, id: u64, result: Result<(), String>) {
        let mut m = self.map();
        if let Some(e) = m.get_mut(&id) {
            match result {
                Ok(()) => {
                    e.info.state = JobState::Completed;
                    e.info.percent = 100;
                }
                Err(msg) => {
                    e.info.state = JobState::Exception;
                    e.info.error = Some(msg);
                }
            }
            e.info.finished = Some(now());
            e.ended = Some(Instant::now());
        }
        self.cv.notify_all();
    }

    /// A job.
    pub fn get(&self, id: u64) -> Option<JobInfo> {
        self.map().get(&id).map(|e| e.info.clone())
    }

    /// Every job.
    pub fn list(&self) -> Vec<JobInfo> {
        self.map().values().map(|e| e.info.clone()).collect()
    }

    /// Wait until a job ends or `timeout` passes; returns its info.
    pub fn wait(&self, id: u64, timeout: Duration) -> Option<JobInfo> {
        let deadline = Instant::now() + timeout;
        let mut m = self.map();
        loop {
            let info = m.get(&id)?.info.clone();
            if info.state != JobState::Running {
                return Some(info);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Some(info);
            }
            m = self
                .cv
                .wait_timeout(m, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle() {
        let j = Jobs::default();
        j.start(7, "clone", "CreateGroupReplica", vec!["sync:3".into()]);
        j.progress(7, 40);
        assert_eq!(j.get(7).unwrap().percent, 40);
        assert_eq!(
            j.wait(7, Duration::from_millis(20)).unwrap().state,
            JobState::Running
        );
        j.finish(7, Err("disk full".into()));
        let i = j.get(7).unwrap();
        assert_eq!(
            (i.state, i.error.as_deref()),
            (JobState::Exception, Some("disk full"))
        );
        assert!(j.get(8).is_none());
    }
}
