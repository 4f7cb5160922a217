//! A replication service over image files in a temporary directory, with configured
//! volumes behind fault-injecting devices; it can be stopped cleanly or "crash", and be
//! opened again on the same files.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use blockdev::{BlockDevice, FileDevice};
use bytes::Bytes;
use replication::{
    CopyState, ReturnCode,
    service::{
        CreateGroupReplica, CreateOutcome, MethodError, ModifyOutcome,
        ModifyReplicaSynchronization, ReplicationService, ServiceConfig, SyncRec,
    },
    testing::FaultyDevice,
    types::JobState,
};

/// 64 KiB, the replication chunk.
pub(crate) const CHUNK: u64 = 64 << 10;

/// A service and its configured volumes. Dropping it stops the service cleanly before its
/// directory is removed (the service's background work would otherwise write into the
/// directory while it is being removed, and leave it behind).
pub(crate) struct Rig {
    pub(crate) svc: Arc<ReplicationService>,
    pub(crate) vols: Vec<(String, u64)>,
    pub(crate) faulty: BTreeMap<String, Arc<FaultyDevice>>,
    pub(crate) cfg: ServiceConfig,
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.svc.shutdown();
    }
}

impl Rig {
    /// Configured volumes `(name, size)`.
    pub(crate) fn new(vols: &[(&str, u64)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = ServiceConfig::new(&dir.path().join("data"));
        cfg.quick_wait = Duration::from_millis(20);
        let vols: Vec<(String, u64)> = vols.iter().map(|(n, s)| (n.to_string(), *s)).collect();
        let (svc, faulty) = Self::open(dir.path(), &cfg, &vols);
        Self {
            svc,
            vols,
            faulty,
            cfg,
            dir,
        }
    }

    fn open(
        dir: &Path,
        cfg: &ServiceConfig,
        vols: &[(String, u64)],
    ) -> (Arc<ReplicationService>, BTreeMap<String, Arc<FaultyDevice>>) {
        let svc = ReplicationService::open(cfg.clone()).expect("open service");
        let mut faulty = BTreeMap::new();
        for (i, (name, size)) in vols.iter().enumerate() {
            let path = image_path(dir, name);
            let dev = FileDevice::open(&path, Some(*size), false).expect("image");
            let f = FaultyDevice::new(Arc::new(dev));
            svc.register_configured(name, f.clone(), &path, 512, 0x1000 + i as u64);
            faulty.insert(name.clone(), f);
        }
        svc.start().expect("start service");
        (svc, faulty)
    }

    /// Stop cleanly and open again.
    pub(crate) fn restart(&mut self) {
        self.svc.shutdown();
        let (svc, faulty) = Self::open(self.dir.path(), &self.cfg, &self.vols);
        self.svc = svc;
        self.faulty = faulty;
    }

    /// Die without stopping (no bitmaps, catalog or activity-log cleanup), then open again.
    pub(crate) fn crash_and_reopen(&mut self) {
        self.svc.simulate_crash();
        let (svc, faulty) = Self::open(self.dir.path(), &self.cfg, &self.vols);
        self.svc = svc;
        self.faulty = faulty;
    }

    pub(crate) fn dev(&self, name: &str) -> Arc<dyn BlockDevice> {
        self.svc
            .volume(name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    }

    pub(crate) fn write(&self, name: &str, offset: u64, len: usize, byte: u8) {
        self.dev(name)
            .write_at(&[Bytes::from(vec![byte; len])], offset, false)
            .unwrap_or_else(|e| panic!("write {name}@{offset}: {e}"));
    }

    pub(crate) fn read_all(&self, name: &str) -> Vec<u8> {
        read_all(&*self.dev(name))
    }

    pub(crate) fn sync(&self, id: u64) -> SyncRec {
        self.svc
            .catalog()
            .syncs
            .get(&id)
            .cloned()
            .unwrap_or_else(|| panic!("no sync:{id}"))
    }

    pub(crate) fn state(&self, id: u64) -> CopyState {
        self.sync(id).state
    }

    /// The pairs of a group relationship.
    pub(crate) fn pairs(&self, gid: u64) -> Vec<u64> {
        self.svc.catalog().group_syncs[&gid].members.clone()
    }

    /// Create and wait for the job (if any); returns the group relationship.
    pub(crate) fn create(&self, p: CreateGroupReplica) -> u64 {
        let out = self
            .svc
            .create_group_replica(p)
            .unwrap_or_else(|e| panic!("create: {e:?}"));
        self.finish(out.code, out.job);
        out.synchronization.expect("synchronization")
    }

    pub(crate) fn try_create(&self, p: CreateGroupReplica) -> Result<CreateOutcome, MethodError> {
        self.svc.create_group_replica(p)
    }

    /// Modify and wait for the job (if any).
    pub(crate) fn modify(&self, op: u16, id: u64) -> ModifyOutcome {
        self.modify_with(ModifyReplicaSynchronization {
            operation: Some(op),
            synchronization: Some(id),
            ..Default::default()
        })
    }

    pub(crate) fn modify_with(&self, p: ModifyReplicaSynchronization) -> ModifyOutcome {
        let out = self
            .svc
            .modify_replica_synchronization(p.clone())
            .unwrap_or_else(|e| {
                panic!(
                    "modify {:?} sync:{:?}: {e:?}",
                    p.operation, p.synchronization
                )
            });
        self.finish(out.code, out.job);
        out
    }

    /// Send `op` on `id` without waiting for a job it starts.
    pub(crate) fn start_modify(&self, op: u16, id: u64) -> Result<ModifyOutcome, MethodError> {
        self.svc
            .modify_replica_synchronization(ModifyReplicaSynchronization {
                operation: Some(op),
                synchronization: Some(id),
                ..Default::default()
            })
    }

    pub(crate) fn try_modify(
        &self,
        op: u16,
        id: u64,
        force: bool,
    ) -> Result<ModifyOutcome, MethodError> {
        self.svc
            .modify_replica_synchronization(ModifyReplicaSynchronization {
                operation: Some(op),
                synchronization: Some(id),
                force: Some(force),
                ..Default::default()
            })
    }

    pub(crate) fn finish(&self, code: ReturnCode, job: Option<u64>) {
        match code {
            ReturnCode::Completed => assert!(job.is_none()),
            ReturnCode::JobStarted => {
                let j = job.expect("a job with 4096");
                self.wait_job(j);
            }
            c => panic!("unexpected return {c:?}"),
        }
    }

    pub(crate) fn wait_job(&self, j: u64) {
        let info = self
            .svc
            .jobs
            .wait(j, Duration::from_secs(120))
            .expect("job exists");
        assert_eq!(info.state, JobState::Completed, "job {j}: {:?}", info.error);
    }

    /// Wait until no job runs.
    pub(crate) fn idle(&self) {
        for j in self.svc.jobs.list() {
            self.svc.jobs.wait(j.id, Duration::from_secs(120));
        }
    }

    /// Wait until `f` holds (polling), up to 60 s.
    pub(crate) fn eventually(&self, what: &str, f: impl Fn() -> bool) {
        let t = std::time::Instant::now();
        while !f() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

pub(crate) fn image_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("images").join(format!("{name}.img"))
}

pub(crate) fn read_all(d: &dyn BlockDevice) -> Vec<u8> {
    let mut b = vec![0u8; d.size() as usize];
    d.read_at(&mut b, 0).expect("read");
    b
}

/// CreateGroupReplica of one element.
pub(crate) fn replica(sync_type: u16, source: &str, name: &str) -> CreateGroupReplica {
    CreateGroupReplica {
        relationship_name: Some(name.into()),
        sync_type: Some(sync_type),
        source_element: Some(source.into()),
        ..Default::default()
    }
}

/// Assert two images are equal; on failure name the differing chunks, not the bytes.
#[track_caller]
pub(crate) fn assert_same(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: sizes differ");
    let d = diff_chunks(a, b);
    assert!(d.is_empty(), "{what}: chunks {d:?} differ");
}

/// Where two images differ, as chunk numbers.
pub(crate) fn diff_chunks(a: &[u8], b: &[u8]) -> Vec<u64> {
    a.chunks(CHUNK as usize)
        .zip(b.chunks(CHUNK as usize))
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, _)| i as u64)
        .collect()
}
