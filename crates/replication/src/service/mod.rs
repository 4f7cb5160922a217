//! The replication service: volumes, replication groups, relationships and jobs, their
//! persistence (`state.json`, bitmaps, logs) and their recovery after a restart or a crash.
//! The admin socket drives it through [`ReplicationService::create_group_replica`] and
//! [`ReplicationService::modify_replica_synchronization`].
//!
//! Durability (what is made durable when):
//! - the catalog (volumes, groups, relationships, CopyStates) is written atomically
//!   (temporary file, fsync, rename) on every change;
//! - a snapshot's saved chunk and its log record are durable before the origin write that
//!   triggered the copy is issued; a clone's copied chunks likewise;
//! - a mirror's dirty bitmaps are saved every two seconds, at state changes, before an
//!   activity-log extent is evicted, and at shutdown; every written extent is in the
//!   source's activity log, durably, before the write is issued; so after a crash the chunks
//!   that may differ are the saved bitmaps plus the logged extents, and only those are
//!   resynchronized.

pub mod catalog;
mod copying;
mod create;
mod elements;
pub mod jobs;
mod modify;
pub mod peer;
mod remote;
mod restore;
pub mod settings;
mod startup;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use blockdev::BlockDevice;

pub use self::{
    catalog::{
        AspectRec, Catalog, Exposure, GroupRec, GroupSyncRec, SyncRec, VolumeKind, VolumeRec,
    },
    create::{CreateGroupReplica, CreateOutcome},
    jobs::{JobInfo, Jobs},
    modify::{ModifyOutcome, ModifyReplicaSynchronization},
    remote::{AccessPointRec, DEFAULT_INITIATOR},
    settings::ReplicationSettings,
};
use crate::{
    al::{AL_CAPACITY, ActivityLog},
    clone::{Clone, Phase},
    journal::ASYNC_MIRROR_MAX_LAG_BYTES,
    mirror::{JournalGroup, Mirror},
    pool::Pool,
    snapshot::Snapshot,
    types::{CopyState, ProgressStatus, ReturnCode, SyncType},
    volume::Volume,
};

/// A pool of the configuration.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Name (`pool:<name>`).
    pub name: String,
    /// Directory.
    pub dir: PathBuf,
    /// Bytes copy-on-write stores may use (0: unlimited).
    pub limit: u64,
}

/// Settings of the service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Where `replication/` (catalog, bitmaps, activity logs) lives.
    pub data_dir: PathBuf,
    /// Pools; the first is the default.
    pub pools: Vec<PoolConfig>,
    /// How long a method waits for its work before answering 4096 (Job Started).
    pub quick_wait: Duration,
    /// Bytes an asynchronous mirror (or consistent group) may lag before it falls back to
    /// change tracking and resynchronizes (0: [`ASYNC_MIRROR_MAX_LAG_BYTES`]).
    pub async_max_lag: u64,
    /// How long Split waits for an asynchronous target to catch up before it answers 3
    /// (Timeout).
    pub drain_timeout: Duration,
}

impl ServiceConfig {
    /// Defaults under `data_dir`: one pool `default` in `<data_dir>/pool`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            pools: vec![PoolConfig {
                name: "default".into(),
                dir: data_dir.join("pool"),
                limit: 0,
            }],
            quick_wait: Duration::from_secs(2),
            async_max_lag: 0,
            drain_timeout: Duration::from_secs(60),
        }
    }
}

/// A method's failure: a return code, a message and the parameter at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodError {
    /// The return value (never 0 or 4096).
    pub code: ReturnCode,
    /// What went wrong.
    pub message: String,
    /// The parameter it concerns.
    pub parameter: Option<String>,
}

impl MethodError {
    fn new(code: ReturnCode, parameter: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            parameter: parameter.map(str::to_owned),
        }
    }

    /// 5 Invalid Parameter.
    pub fn invalid(parameter: &str, message: impl Into<String>) -> Self {
        Self::new(ReturnCode::InvalidParameter, Some(parameter), message)
    }

    /// 1 Not Supported.
    pub fn not_supported(parameter: &str, message: impl Into<String>) -> Self {
        Self::new(ReturnCode::NotSupported, Some(parameter), message)
    }

    /// 6 In Use.
    pub fn in_use(parameter: &str, message: impl Into<String>) -> Self {
        Self::new(ReturnCode::InUse, Some(parameter), message)
    }

    /// 4 Failed.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ReturnCode::Failed, None, message)
    }

    /// 3 Timeout.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ReturnCode::Timeout, None, message)
    }
}

/// Runtime objects of the relationships.
#[derive(Debug, Default)]
pub(crate) struct Runtime {
    pub(crate) volumes: HashMap<String, Arc<Volume>>,
    pub(crate) snapshots: HashMap<u64, Arc<Snapshot>>,
    pub(crate) clones: HashMap<u64, Arc<Clone>>,
    pub(crate) mirrors: HashMap<u64, Arc<Mirror>>,
    pub(crate) als: HashMap<String, Arc<ActivityLog>>,
    /// Copy generations: bumped to stop a relationship's running copy.
    pub(crate) gens: HashMap<u64, u64>,
    /// Relationships with a job running, and the job's generation.
    pub(crate) running: HashMap<u64, u64>,
    /// Journals shared by consistent asynchronous group mirrors.
    pub(crate) journals: HashMap<u64, Arc<JournalGroup>>,
    /// Pairs being restored, with the job doing it.
    pub(crate) restoring: HashMap<u64, u64>,
    /// The restore sources installed on source volumes.
    pub(crate) restore_sources: HashMap<u64, Arc<restore::DurableRestore>>,
    /// The devices of remote volumes, by volume name.
    pub(crate) remotes: HashMap<String, Arc<initiator::RemoteLun>>,
    /// The change maps of this server's secondary HA copies, by relationship.
    pub(crate) peer_tracks: HashMap<u64, Arc<peer::PeerTrack>>,
}

/// A volume to export, as the server needs it.
#[derive(Debug)]
pub struct ExposedVolume {
    /// Volume name.
    pub name: String,
    /// The device to serve.
    pub device: Arc<dyn BlockDevice>,
    /// Where.
    pub exposure: Exposure,
    /// Stable identity.
    pub uid: u64,
    /// Block size.
    pub block_size: u32,
    /// The SCSI identity to export it with, when not its own (an HA pair's secondary).
    pub identity: Option<peer::Identity>,
}

/// The replication service.
#[derive(Debug)]
pub struct ReplicationService {
    cfg: ServiceConfig,
    dir: PathBuf,
    cat: Mutex<Catalog>,
    rt: Mutex<Runtime>,
    pools: BTreeMap<String, Arc<Pool>>,
    /// Jobs.
    pub jobs: Jobs,
    stopping: AtomicBool,
    /// Held by the background flusher for each round of its work (saving state, starting
    /// automatic resyncs) and by [`ReplicationService::shutdown`] while it sets `stopping`:
    /// once that is set, no such round is under way or starts.
    background: Mutex<()>,
    /// Serializes the methods that change relationships (taken before the catalog).
    ops: Mutex<()>,
    /// A simulated crash happened: nothing more is written.
    crashed: AtomicBool,
    /// The server exporting the volumes (HA pairs).
    ha: std::sync::OnceLock<Arc<dyn peer::HaHost>>,
}

/// Volume names: letters, digits, `.`, `_` and `-`, 1 to 64 characters.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

impl ReplicationService {
    /// Load the catalog and create the pools.
    pub fn open(cfg: ServiceConfig) -> std::io::Result<Arc<Self>> {
        let dir = cfg.data_dir.join("replication");
        std::fs::create_dir_all(&dir)?;
        let cat = Catalog::load(&dir.join("state.json"))?;
        let mut pools = BTreeMap::new();
        for p in &cfg.pools {
            pools.insert(
                p.name.clone(),
                Arc::new(Pool::new(&p.name, &p.dir, p.limit)?),
            );
        }
        Ok(Arc::new(Self {
            cfg,
            dir,
            cat: Mutex::new(cat),
            rt: Mutex::new(Runtime::default()),
            pools,
            jobs: Jobs::default(),
            stopping: AtomicBool::new(false),
            background: Mutex::new(()),
            ops: Mutex::new(()),
            crashed: AtomicBool::new(false),
            ha: std::sync::OnceLock::new(),
        }))
    }

    pub(crate) fn cat(&self) -> MutexGuard<'_, Catalog> {
        self.cat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn ops(&self) -> MutexGuard<'_, ()> {
        self.ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn rt(&self) -> MutexGuard<'_, Runtime> {
        self.rt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Save the catalog (after refreshing live states).
    pub(crate) fn save(&self, cat: &mut Catalog) {
        if self.crashed.load(Ordering::Relaxed) {
            return;
        }
        self.refresh(cat);
        if let Err(e) = cat.save(&self.dir.join("state.json")) {
            tracing::error!(error = %e, "saving the replication catalog failed");
        }
    }

    pub(crate) fn pool(&self, name: Option<&str>) -> Option<Arc<Pool>> {
        match name {
            Some(n) => self.pools.get(n).cloned(),
            None => self
                .cfg
                .pools
                .first()
                .and_then(|p| self.pools.get(&p.name))
                .cloned(),
        }
    }

    /// Pools with their limits and use.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.pools.values().cloned().collect()
    }

    pub(crate) fn quick_wait(&self) -> Duration {
        self.cfg.quick_wait
    }

    /// How long Split waits for asynchronous targets.
    pub(crate) fn drain_timeout(&self) -> Duration {
        self.cfg.drain_timeout
    }

    /// The asynchronous lag bound.
    pub(crate) fn max_lag(&self) -> u64 {
        if self.cfg.async_max_lag == 0 {
            ASYNC_MIRROR_MAX_LAG_BYTES
        } else {
            self.cfg.async_max_lag
        }
    }

    /// A new journal group with the configured bound.
    pub(crate) fn new_journal(&self) -> Arc<JournalGroup> {
        JournalGroup::new(self.max_lag())
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Register a volume of the configuration file (its LUN's image) and get the volume
    /// that serves it.
    pub fn register_configured(
        &self,
        name: &str,
        dev: Arc<dyn BlockDevice>,
        path: &Path,
        block_size: u32,
        uid: u64,
    ) -> Arc<Volume> {
        let vol = Volume::new(name, dev.clone());
        let mut cat = self.cat();
        let rec = cat
            .volumes
            .entry(name.to_owned())
            .or_insert_with(|| VolumeRec {
                name: name.to_owned(),
                path: path.display().to_string(),
                size: dev.size(),
                block_size,
                pool: None,
                kind: VolumeKind::Configured,
                exposures: Vec::new(),
                uid,
                identity: None,
            });
        rec.size = dev.size();
        rec.path = path.display().to_string();
        self.rt().volumes.insert(name.to_owned(), vol.clone());
        vol
    }

    pub(crate) fn bitmap_paths(&self, id: u64) -> (PathBuf, PathBuf) {
        (
            self.path(&format!("sync-{id}.oos")),
            self.path(&format!("sync-{id}.tdirty")),
        )
    }

    /// The activity log of a source volume (opened once).
    pub(crate) fn activity_log(&self, volume: &str) -> std::io::Result<Arc<ActivityLog>> {
        if let Some(al) = self.rt().als.get(volume) {
            return Ok(al.clone());
        }
        let (al, _) = ActivityLog::open(&self.path(&format!("{volume}.al")), AL_CAPACITY)?;
        let al = Arc::new(al);
        self.rt().als.insert(volume.to_owned(), al.clone());
        Ok(al)
    }

    /// Persist bitmaps and refreshed states.
    pub fn flush_state(&self) {
        if self.crashed.load(Ordering::Relaxed) {
            return;
        }
        let mirrors: Vec<Arc<Mirror>> = self.rt().mirrors.values().cloned().collect();
        for m in mirrors {
            if let Err(e) = m.save_bitmaps() {
                tracing::error!(sync = m.id, error = %e, "saving mirror bitmaps failed");
            }
        }
        let mut cat = self.cat();
        let before = cat.clone();
        self.refresh(&mut cat);
        if *cat != before {
            self.save(&mut cat);
        }
    }

    /// Asynchronous pairs whose journal overflowed (and pairs a restart left mid-copy)
    /// are Unsynchronized with no copy running: resynchronize them, or with
    /// CopyRecoveryMode Manual (3) suspend them until Resume.
    pub fn auto_resync(self: &Arc<Self>) {
        // Partitioned pairs whose remote target answers again (probed without the
        // methods' lock: a login may take its timeout).
        let partitioned: Vec<(u64, Arc<initiator::RemoteLun>)> = {
            let cat = self.cat();
            let rt = self.rt();
            rt.mirrors
                .iter()
                .filter(|(id, m)| {
                    m.state() == CopyState::Partitioned && !rt.running.contains_key(id)
                })
                .filter_map(|(id, _)| {
                    let target = &cat.syncs.get(id)?.target;
                    Some((*id, rt.remotes.get(target)?.clone()))
                })
                .collect()
        };
        let back: Vec<u64> = partitioned
            .into_iter()
            .filter(|(_, r)| r.reachable())
            .map(|(id, _)| id)
            .collect();
        let _ops = self.ops();
        for id in back {
            let Some(m) = self.rt().mirrors.get(&id).cloned() else {
                continue;
            };
            if m.state() != CopyState::Partitioned {
                continue;
            }
            // An HA peer that was promoted while apart fences this side instead.
            if !self.ha_reconnected(id) {
                continue;
            }
            let manual = self
                .cat()
                .syncs
                .get(&id)
                .is_some_and(|s| s.recovery_mode == 3);
            if manual {
                tracing::info!(
                    sync = id,
                    "the remote target is back: suspended until Resume (CopyRecoveryMode manual)"
                );
                m.stop_following(CopyState::Suspended);
                let mut cat = self.cat();
                self.save(&mut cat);
            } else {
                tracing::info!(
                    sync = id,
                    "the remote target is back: resynchronizing the changed chunks"
                );
                self.resume_copy(id);
            }
        }
        let todo: Vec<(u64, u16)> = {
            let cat = self.cat();
            let rt = self.rt();
            rt.mirrors
                .iter()
                .filter(|(id, m)| {
                    m.state() == CopyState::Unsynchronized
                        && !rt.running.contains_key(id)
                        && !rt.restoring.contains_key(id)
                })
                .filter_map(|(id, _)| cat.syncs.get(id).map(|s| (*id, s.recovery_mode)))
                .collect()
        };
        for (id, mode) in todo {
            if mode == 3 {
                if let Some(m) = self.rt().mirrors.get(&id).cloned() {
                    m.stop_following(CopyState::Suspended);
                }
                let mut cat = self.cat();
                self.save(&mut cat);
            } else {
                tracing::info!(sync = id, "resynchronizing a pair that fell behind");
                self.resume_copy(id);
            }
        }
    }

    /// For tests: stop as a `kill -9` would, as far as this process can: background work
    /// stops and nothing more is persisted (no bitmaps, no catalog, activity logs kept), so
    /// the next [`ReplicationService::open`] and [`ReplicationService::start`] recover.
    #[doc(hidden)]
    pub fn simulate_crash(&self) {
        self.crashed.store(true, Ordering::SeqCst);
        self.stopping.store(true, Ordering::SeqCst);
        let mirrors: Vec<Arc<Mirror>> = self.rt().mirrors.values().cloned().collect();
        for m in &mirrors {
            m.crash();
        }
        self.wait_jobs(Duration::from_secs(30));
    }

    /// Wait (up to `timeout` in all) until no job runs.
    fn wait_jobs(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        for j in self.jobs.list() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            self.jobs.wait(j.id, left);
        }
    }

    /// Stop cleanly: cancel copies and wait for them (up to 30 s), save bitmaps, clear
    /// activity logs, mark the catalog. Nothing is written after it returns.
    pub fn shutdown(&self) {
        if self.crashed.load(Ordering::SeqCst) {
            return; // a simulated crash persists nothing more
        }
        {
            let _quiet = self
                .background
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.stopping.store(true, Ordering::SeqCst);
        }
        let mirrors: Vec<Arc<Mirror>> = self.rt().mirrors.values().cloned().collect();
        for m in &mirrors {
            m.shutdown();
        }
        // Copies and restores see `stopping` at their next chunk and end, recording where
        // they stopped (they resume at the next start), and a job waiting for a journal
        // to drain sees it stopped, before the state below is saved.
        self.wait_jobs(Duration::from_secs(30));
        let mut ok = true;
        for m in &mirrors {
            ok &= m.save_bitmaps().is_ok();
        }
        let clones: Vec<Arc<Clone>> = self.rt().clones.values().cloned().collect();
        for c in clones {
            ok &= c.sync().is_ok();
        }
        if ok {
            for al in self.rt().als.values() {
                let _ = al.clear();
            }
        }
        let mut cat = self.cat();
        self.refresh(&mut cat);
        cat.clean = ok;
        if let Err(e) = cat.save(&self.dir.join("state.json")) {
            tracing::error!(error = %e, "saving the replication catalog failed");
        }
    }

    /// Bring the recorded CopyStates and progress up to date with the runtime objects.
    pub(crate) fn refresh(&self, cat: &mut Catalog) {
        let rt = self.rt();
        for s in cat.syncs.values_mut() {
            let (state, percent) = live_state(&rt, s);
            s.state = state;
            s.percent = percent;
            if state == s.requested {
                s.requested = CopyState::NotApplicable;
            }
            if s.restoring {
                s.progress = ProgressStatus::Restoring;
            } else if !rt.running.contains_key(&s.id) {
                s.progress = modify::resting_progress(state);
            }
            if let Some(m) = rt.mirrors.get(&s.id) {
                s.last_copy_chunks = m.last_copy_chunks.load(Ordering::Relaxed);
            }
        }
    }

    /// The volume serving a name.
    pub fn volume(&self, name: &str) -> Option<Arc<Volume>> {
        self.rt().volumes.get(name).cloned()
    }

    /// A snapshot target is writable while some exposure of it is read-write.
    pub(crate) fn update_writable(&self, cat: &Catalog, volume: &str) {
        let Some(rec) = cat.volumes.get(volume) else {
            return;
        };
        let VolumeKind::Replica { sync } = rec.kind else {
            return;
        };
        if let Some(snap) = self.rt().snapshots.get(&sync) {
            snap.set_writable(rec.exposures.iter().any(|e| !e.read_only));
        }
    }

    /// Every exported volume.
    pub fn exposures(&self) -> Vec<ExposedVolume> {
        let cat = self.cat();
        let rt = self.rt();
        let mut v = Vec::new();
        for rec in cat.volumes.values() {
            let Some(vol) = rt.volumes.get(&rec.name) else {
                continue;
            };
            for e in &rec.exposures {
                v.push(ExposedVolume {
                    name: rec.name.clone(),
                    device: vol.clone(),
                    exposure: e.clone(),
                    uid: rec.uid,
                    identity: rec.identity.clone(),
                    block_size: rec.block_size,
                });
            }
        }
        v
    }

    /// A snapshot of the catalog with live states.
    pub fn catalog(&self) -> Catalog {
        let mut cat = self.cat().clone();
        self.refresh(&mut cat);
        cat
    }

    /// Live details of a mirror: (dirty source chunks, dirty target chunks, lag bytes, lag
    /// seconds).
    pub fn mirror_detail(&self, id: u64) -> Option<(u64, u64, u64, f64)> {
        let m = self.rt().mirrors.get(&id).cloned()?;
        let (a, b) = m.dirty();
        let (lb, ls) = m.lag();
        Some((a, b, lb, ls.as_secs_f64()))
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// A new copy generation for a relationship: the running copy (if any) stops.
    pub(crate) fn cancel_copy(&self, id: u64) -> u64 {
        let mut rt = self.rt();
        let g = rt.gens.entry(id).or_insert(0);
        *g += 1;
        *g
    }

    /// A new copy generation for a job about to run (the previous one stops); the pair
    /// shows as busy until [`ReplicationService::end_copy`].
    pub(crate) fn start_gen(&self, id: u64) -> u64 {
        let g = self.cancel_copy(id);
        self.rt().running.insert(id, g);
        g
    }

    pub(crate) fn current_gen(&self, id: u64) -> u64 {
        self.rt().gens.get(&id).copied().unwrap_or(0)
    }

    pub(crate) fn end_copy(&self, id: u64, generation: u64) {
        let mut rt = self.rt();
        if rt.running.get(&id) == Some(&generation) {
            rt.running.remove(&id);
        }
    }
}

/// The live CopyState and PercentSynced of a relationship.
pub(crate) fn live_state(rt: &Runtime, s: &SyncRec) -> (CopyState, u16) {
    match s.sync_type {
        SyncType::Mirror => match rt.mirrors.get(&s.id) {
            Some(m) => {
                let st = m.state();
                let (dirty, _) = m.dirty();
                let total = m.source().chunk_count().max(1);
                let pct = if st == CopyState::Synchronized {
                    100
                } else {
                    (100 - dirty * 100 / total) as u16
                };
                (st, pct)
            }
            None => (s.state, s.percent),
        },
        SyncType::Snapshot => match rt.snapshots.get(&s.id) {
            Some(snap) if snap.broken().is_some() => (CopyState::Broken, 0),
            Some(_) if s.state == CopyState::Inactive => (CopyState::Inactive, 100),
            Some(snap) if snap.written() => (CopyState::Skewed, 100),
            Some(_) => (s.state, 100),
            None => (s.state, s.percent),
        },
        SyncType::Clone => match rt.clones.get(&s.id) {
            Some(c) => {
                let (done, total) = c.progress();
                let pct = (done * 100 / total.max(1)) as u16;
                match c.phase() {
                    Phase::Broken => (CopyState::Broken, pct),
                    Phase::Aborted => (CopyState::Aborted, pct),
                    Phase::Copying => (s.state, pct),
                    Phase::Complete if c.written() && s.state == CopyState::Synchronized => {
                        (CopyState::Skewed, 100)
                    }
                    Phase::Complete if matches!(s.state, CopyState::Unsynchronized) => {
                        (CopyState::Synchronized, 100)
                    }
                    Phase::Complete => (s.state, 100),
                }
            }
            None => (s.state, s.percent),
        },
    }
}

/// A stable-enough unique id for a new volume.
pub(crate) fn new_uid(name: &str, salt: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    salt.hash(&mut h);
    jobs::now().hash(&mut h);
    std::process::id().hash(&mut h);
    h.finish()
}
