//! Background work of relationships as jobs: spawning them, a relationship's copy toward
//! Synchronized (mirror resync, clone copy), and how copies yield to host I/O.

use std::{sync::Arc, time::Duration};

use super::{ReplicationService, jobs::now, modify::Work};
use crate::{
    types::{CopyState, JobState, ProgressStatus, SyncType},
    volume::Volume,
};

impl ReplicationService {
    /// Whether a job ends (successfully or not) within `wait`.
    pub(crate) fn job_finishes(&self, job: u64, wait: Duration) -> bool {
        self.jobs
            .wait(job, wait)
            .is_some_and(|i| i.state != JobState::Running)
    }

    /// Resume a relationship's interrupted copy after a restart.
    pub(crate) fn resume_copy(self: &Arc<Self>, id: u64) {
        self.spawn_copy_job(
            &format!("sync:{id} copy"),
            "Recovery",
            vec![id],
            vec![format!("sync:{id}")],
        );
    }

    /// Run the copies of relationships in a job; returns the job id.
    pub(crate) fn spawn_copy_job(
        self: &Arc<Self>,
        name: &str,
        method: &str,
        ids: Vec<u64>,
        refs: Vec<String>,
    ) -> u64 {
        let job = {
            let mut cat = self.cat();
            for id in &ids {
                if let Some(s) = cat.syncs.get_mut(id) {
                    s.progress = ProgressStatus::Resyncing;
                }
            }
            cat.alloc_id()
        };
        let gens: Vec<(u64, u64)> = ids.iter().map(|&i| (i, self.start_gen(i))).collect();
        self.spawn_job(job, name, method, gens, refs, Work::Copy);
        job
    }

    /// Run `work` for relationships (with their copy generations) as job `job`.
    pub(crate) fn spawn_job(
        self: &Arc<Self>,
        job: u64,
        name: &str,
        method: &str,
        gens: Vec<(u64, u64)>,
        refs: Vec<String>,
        work: Work,
    ) {
        self.jobs.start(job, name, method, refs);
        let all = gens.clone();
        if work == Work::Restore {
            let mut rt = self.rt();
            for (id, _) in &gens {
                rt.restoring.insert(*id, job);
            }
        }
        let me = self.clone();
        let run = move || {
            let n = gens.len() as u64;
            let mut result = Ok(());
            for (k, (id, generation)) in gens.iter().enumerate() {
                let progress = |done: u64, total: u64| {
                    let pct = (k as u64 * 100 + done * 100 / total.max(1)) / n;
                    me.jobs.progress(job, pct as u16);
                };
                let r = match work {
                    Work::Copy => me.run_copy(*id, *generation, &progress),
                    Work::Restore => me.run_restore_job(*id, *generation, &progress).map(|_| ()),
                };
                me.end_copy(*id, *generation);
                if let Err(e) = r {
                    result = Err(e);
                    if work == Work::Copy {
                        break;
                    }
                }
            }
            if work == Work::Restore {
                let mut rt = me.rt();
                for (id, _) in &gens {
                    rt.restoring.remove(id);
                }
            }
            let mut cat = me.cat();
            me.save(&mut cat);
            drop(cat);
            me.jobs.finish(job, result);
        };
        if std::thread::Builder::new()
            .name(format!("job-{job}"))
            .spawn(run)
            .is_err()
        {
            for (id, g) in all {
                self.end_copy(id, g);
                self.rt().restoring.remove(&id);
            }
            self.jobs
                .finish(job, Err("could not start a thread".into()));
        }
    }

    /// One relationship's copy toward Synchronized.
    fn run_copy(
        &self,
        id: u64,
        generation: u64,
        progress: &dyn Fn(u64, u64),
    ) -> Result<(), String> {
        let cancel = || self.current_gen(id) != generation || self.is_stopping();
        let priority = self
            .cat()
            .syncs
            .get(&id)
            .map(|s| s.copy_priority)
            .unwrap_or(0);
        let (mirror, clone) = {
            let rt = self.rt();
            (rt.mirrors.get(&id).cloned(), rt.clones.get(&id).cloned())
        };
        let source = mirror.as_ref().map(|m| m.source());
        let yielding = |done, total| {
            progress(done, total);
            if let Some(s) = &source {
                yield_to_host(s, priority);
            }
        };
        let stopped = || {
            if self.is_stopping() {
                "the server is stopping; the copy resumes at the next start".to_owned()
            } else {
                "the copy was stopped by another operation".to_owned()
            }
        };
        if let Some(m) = mirror {
            let n = m
                .resync(&yielding, &cancel)
                .map_err(|e| format!("copy failed: {e}"))?;
            if m.state() != CopyState::Synchronized {
                return Err(stopped());
            }
            // The copy's result is durable at once (a crash now resyncs only the log).
            m.save_bitmaps()
                .map_err(|e| format!("saving the mirror bitmaps: {e}"))?;
            self.set_synced(id, n);
        } else if let Some(c) = clone {
            let origin = self.volume(
                &self
                    .cat()
                    .syncs
                    .get(&id)
                    .map(|s| s.source.clone())
                    .unwrap_or_default(),
            );
            let yielding = |done, total| {
                progress(done, total);
                if let Some(s) = &origin {
                    yield_to_host(s, priority);
                }
            };
            let n = c
                .run_copy(&yielding, &cancel)
                .map_err(|e| format!("copy failed: {e}"))?;
            if c.phase() != crate::clone::Phase::Complete {
                return Err(stopped());
            }
            self.set_synced(id, n);
        }
        Ok(())
    }

    pub(crate) fn set_synced(&self, id: u64, chunks: u64) {
        let mut cat = self.cat();
        if let Some(s) = cat.syncs.get_mut(&id) {
            if s.sync_type == SyncType::Clone && matches!(s.state, CopyState::Unsynchronized) {
                s.state = CopyState::Synchronized;
            }
            s.synced = Some(now());
            s.progress = ProgressStatus::Completed;
            s.last_copy_chunks = chunks;
        }
        self.save(&mut cat);
    }
}

/// Background copies yield to host I/O according to CopyPriority.
pub(crate) fn yield_to_host(source: &Volume, priority: u16) {
    let pause = match priority {
        1 => Duration::from_millis(2),
        0 | 2 => Duration::from_micros(200),
        _ => return,
    };
    if source.busy(Duration::from_millis(20)) {
        std::thread::sleep(pause);
    }
}
