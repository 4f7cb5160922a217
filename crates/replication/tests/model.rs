//! Model-based test of the replication layer: random writes, snapshots (single and group),
//! clones, fractures, splits, resyncs, restores, failovers, failbacks, mode changes and
//! simulated crashes, applied to the service and to an in-memory model; after every step
//! every readable image (sources, snapshots, clones, mirror targets) is compared with the
//! model byte for byte. Operations the model says are invalid in the current state must be
//! refused by the service (return 1 or 5), and the valid ones accepted.
//!
//! `PROPTEST_CASES` sets the number of cases (default 64).

mod common;

use std::{collections::BTreeMap, sync::atomic::Ordering, time::Duration};

use common::*;
use proptest::prelude::*;
use replication::{
    CopyState, Mode, ReturnCode,
    service::{CreateGroupReplica, ModifyReplicaSynchronization},
};

const CHUNKS: u64 = 16;
const SIZE: u64 = CHUNKS * CHUNK;
const SOURCES: [&str; 2] = ["a", "b"];

#[derive(Clone, Debug)]
enum Op {
    /// Write `len` sectors at `sector` of source `vol` (or of its mirror's target when the
    /// mirror is failed over, since the source is then fenced).
    Write {
        vol: usize,
        sector: u64,
        len: u64,
        byte: u8,
    },
    /// Write a mirror's target (refused unless it is fractured, split or failed over).
    WriteTarget {
        m: usize,
        sector: u64,
        len: u64,
        byte: u8,
    },
    Snapshot {
        vol: usize,
    },
    GroupSnapshot,
    DropSnapshot {
        i: usize,
    },
    RestoreSnapshot {
        i: usize,
    },
    ResyncSnapshot {
        i: usize,
    },
    Clone {
        vol: usize,
    },
    DetachClone,
    RestoreClone,
    ResyncClone,
    Fracture {
        m: usize,
    },
    Split {
        m: usize,
    },
    Resync {
        m: usize,
    },
    Restore {
        m: usize,
    },
    Failover {
        m: usize,
    },
    Failback {
        m: usize,
    },
    SetMode {
        m: usize,
        sync: bool,
    },
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let sector = 0..SIZE / 512;
    prop_oneof![
        8 => (0..2usize, sector.clone(), 1..300u64, any::<u8>())
            .prop_map(|(vol, sector, len, byte)| Op::Write { vol, sector, len, byte }),
        2 => (0..2usize, sector, 1..300u64, any::<u8>())
            .prop_map(|(m, sector, len, byte)| Op::WriteTarget { m, sector, len, byte }),
        2 => (0..2usize).prop_map(|vol| Op::Snapshot { vol }),
        1 => Just(Op::GroupSnapshot),
        1 => (0..4usize).prop_map(|i| Op::DropSnapshot { i }),
        1 => (0..4usize).prop_map(|i| Op::RestoreSnapshot { i }),
        1 => (0..4usize).prop_map(|i| Op::ResyncSnapshot { i }),
        1 => (0..2usize).prop_map(|vol| Op::Clone { vol }),
        1 => Just(Op::DetachClone),
        1 => Just(Op::RestoreClone),
        1 => Just(Op::ResyncClone),
        2 => (0..2usize).prop_map(|m| Op::Fracture { m }),
        1 => (0..2usize).prop_map(|m| Op::Split { m }),
        2 => (0..2usize).prop_map(|m| Op::Resync { m }),
        1 => (0..2usize).prop_map(|m| Op::Restore { m }),
        1 => (0..2usize).prop_map(|m| Op::Failover { m }),
        1 => (0..2usize).prop_map(|m| Op::Failback { m }),
        1 => (0..2usize, any::<bool>()).prop_map(|(m, sync)| Op::SetMode { m, sync }),
        1 => Just(Op::Crash),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MState {
    Following,
    Fractured,
    Split,
    Failedover,
}

#[derive(Debug)]
struct MirrorModel {
    gid: u64,
    id: u64,
    source: usize,
    target: String,
    state: MState,
    mode: Mode,
    /// The target's expected contents when it does not follow (`None`: not known exactly,
    /// an asynchronous fracture cuts at whatever had been shipped).
    target_img: Option<Vec<u8>>,
}

#[derive(Debug)]
struct SnapModel {
    gid: u64,
    /// (target, source index, image).
    members: Vec<(String, usize, Vec<u8>)>,
}

#[derive(Debug)]
struct CloneModel {
    gid: u64,
    target: String,
    source: usize,
    img: Vec<u8>,
}

struct World {
    rig: Rig,
    src: [Vec<u8>; 2],
    mirrors: Vec<MirrorModel>,
    snaps: Vec<SnapModel>,
    clone: Option<CloneModel>,
    /// Detached clones: independent volumes that must never change.
    independent: BTreeMap<String, Vec<u8>>,
    n: u32,
}

const OP_FRACTURE: u16 = 12;
const OP_SPLIT: u16 = 21;
const OP_RESYNC: u16 = 14;
const OP_RESTORE: u16 = 15;
const OP_FAILOVER: u16 = 10;
const OP_FAILBACK: u16 = 11;
const OP_DETACH: u16 = 8;
const OP_RTRP: u16 = 19;

fn fill(img: &mut [u8], sector: u64, len: u64, byte: u8) -> (u64, usize) {
    let off = sector * 512;
    let len = (len * 512).min(SIZE - off);
    img[off as usize..(off + len) as usize].fill(byte);
    (off, len as usize)
}

impl World {
    fn new() -> Self {
        let rig = Rig::new(&[("a", SIZE), ("b", SIZE)]);
        rig.svc
            .create_group(Some("g"), &["a".into(), "b".into()])
            .unwrap();
        let mut mirrors = Vec::new();
        for (i, (name, mode)) in [("ma", 2u16), ("mb", 3u16)].into_iter().enumerate() {
            let mut p = replica(6, SOURCES[i], name);
            p.mode = Some(mode);
            let gid = rig.create(p);
            mirrors.push(MirrorModel {
                gid,
                id: rig.pairs(gid)[0],
                source: i,
                target: format!("{name}_1"),
                state: MState::Following,
                mode: if mode == 2 {
                    Mode::Synchronous
                } else {
                    Mode::Asynchronous
                },
                target_img: None,
            });
        }
        Self {
            rig,
            src: [vec![0; SIZE as usize], vec![0; SIZE as usize]],
            mirrors,
            snaps: Vec::new(),
            clone: None,
            independent: BTreeMap::new(),
            n: 0,
        }
    }

    fn fenced(&self, vol: usize) -> bool {
        self.mirrors
            .iter()
            .any(|m| m.source == vol && m.state == MState::Failedover)
    }

    /// Call a method the model says is `valid`; a refusal must be 1 or 5.
    fn call(&self, op: u16, id: u64, valid: bool, force: bool) -> bool {
        let r = self
            .rig
            .svc
            .modify_replica_synchronization(ModifyReplicaSynchronization {
                operation: Some(op),
                synchronization: Some(id),
                force: Some(force),
                ..Default::default()
            });
        match (r, valid) {
            (Ok(out), true) => {
                self.rig.finish(out.code, out.job);
                true
            }
            (Ok(_), false) => {
                panic!("operation {op} on sync:{id} accepted; the model says invalid")
            }
            (Err(e), true) => panic!("operation {op} on sync:{id} refused: {e:?}"),
            (Err(e), false) => {
                assert!(
                    matches!(
                        e.code,
                        ReturnCode::InvalidParameter | ReturnCode::NotSupported
                    ),
                    "refusal of {op}: {e:?}"
                );
                false
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        self.n += 1;
        match *op {
            Op::Write {
                vol,
                sector,
                len,
                byte,
            } => {
                if self.fenced(vol) {
                    // The fenced source refuses; the host writes the failed-over target.
                    let (off, l) = fill(&mut vec![0; SIZE as usize], sector, len, byte);
                    let r = self.rig.dev(SOURCES[vol]).write_at(
                        &[bytes::Bytes::from(vec![byte; l])],
                        off,
                        false,
                    );
                    assert!(r.is_err(), "a fenced source accepted a write");
                    let m = self
                        .mirrors
                        .iter_mut()
                        .find(|m| m.source == vol)
                        .expect("mirror");
                    let img = m.target_img.as_mut().expect("failed-over target image");
                    fill(img, sector, len, byte);
                    self.rig.write(&m.target, off, l, byte);
                } else {
                    let (off, l) = fill(&mut self.src[vol], sector, len, byte);
                    self.rig.write(SOURCES[vol], off, l, byte);
                }
            }
            Op::WriteTarget {
                m,
                sector,
                len,
                byte,
            } => {
                let mm = &mut self.mirrors[m];
                let mut scratch = vec![0; SIZE as usize];
                let (off, l) = fill(&mut scratch, sector, len, byte);
                let r = self.rig.dev(&mm.target).write_at(
                    &[bytes::Bytes::from(vec![byte; l])],
                    off,
                    false,
                );
                match mm.state {
                    MState::Following => assert!(r.is_err(), "a following target accepted a write"),
                    _ => {
                        r.expect("write to a detached target");
                        if let Some(img) = mm.target_img.as_mut() {
                            fill(img, sector, len, byte);
                        }
                    }
                }
            }
            Op::Snapshot { vol } => {
                if self.snaps.len() >= 3 {
                    return;
                }
                let name = format!("s{}", self.n);
                let gid = self.rig.create(replica(7, SOURCES[vol], &name));
                self.snaps.push(SnapModel {
                    gid,
                    members: vec![(format!("{name}_1"), vol, self.src[vol].clone())],
                });
            }
            Op::GroupSnapshot => {
                if self.snaps.len() >= 3 {
                    return;
                }
                let name = format!("gs{}", self.n);
                let gid = self.rig.create(CreateGroupReplica {
                    relationship_name: Some(name.clone()),
                    sync_type: Some(7),
                    source_group: Some("g".into()),
                    ..Default::default()
                });
                let members = (0..2)
                    .map(|v| (format!("{name}_{}", v + 1), v, self.src[v].clone()))
                    .collect();
                self.snaps.push(SnapModel { gid, members });
            }
            Op::DropSnapshot { i } => {
                if i < self.snaps.len() {
                    let s = self.snaps.remove(i);
                    self.call(OP_RTRP, s.gid, true, false);
                    for (t, _, _) in &s.members {
                        assert!(self.rig.svc.volume(t).is_none(), "{t} still exists");
                    }
                }
            }
            Op::RestoreSnapshot { i } => {
                if let Some(s) = self.snaps.get(i) {
                    if s.members.iter().any(|(_, v, _)| self.fenced(*v)) {
                        return;
                    }
                    self.call(OP_RESTORE, s.gid, true, false);
                    for (_, v, img) in &s.members {
                        self.src[*v] = img.clone();
                    }
                }
            }
            Op::ResyncSnapshot { i } => {
                if i < self.snaps.len() {
                    self.call(OP_RESYNC, self.snaps[i].gid, true, false);
                    let s = &mut self.snaps[i];
                    for (_, v, img) in &mut s.members {
                        *img = self.src[*v].clone();
                    }
                }
            }
            Op::Clone { vol } => {
                if self.clone.is_some() {
                    return;
                }
                let name = format!("c{}", self.n);
                // The copy runs in the background: later steps write while it copies.
                let out = self
                    .rig
                    .try_create(replica(8, SOURCES[vol], &name))
                    .expect("clone");
                let gid = out.synchronization.expect("synchronization");
                self.clone = Some(CloneModel {
                    gid,
                    target: format!("{name}_1"),
                    source: vol,
                    img: self.src[vol].clone(),
                });
            }
            Op::DetachClone | Op::RestoreClone | Op::ResyncClone => {
                let Some(c) = &self.clone else { return };
                let (gid, vol) = (c.gid, c.source);
                self.rig.idle();
                match op {
                    Op::DetachClone => {
                        self.call(OP_DETACH, gid, true, false);
                        let c = self.clone.take().expect("clone");
                        self.independent.insert(c.target, c.img);
                    }
                    Op::RestoreClone => {
                        if self.fenced(vol) {
                            return;
                        }
                        self.call(OP_RESTORE, gid, true, false);
                        self.src[vol] = self.clone.as_ref().expect("clone").img.clone();
                    }
                    _ => {
                        self.call(OP_RESYNC, gid, true, false);
                        self.clone.as_mut().expect("clone").img = self.src[vol].clone();
                    }
                }
            }
            Op::Fracture { m } | Op::Split { m } => {
                let split = matches!(op, Op::Split { .. });
                let mm = &self.mirrors[m];
                let valid = mm.state == MState::Following;
                let code = if split { OP_SPLIT } else { OP_FRACTURE };
                if self.call(code, mm.gid, valid, false) {
                    let exact = split || mm.mode == Mode::Synchronous;
                    let img = exact.then(|| self.src[mm.source].clone());
                    let mm = &mut self.mirrors[m];
                    mm.state = if split {
                        MState::Split
                    } else {
                        MState::Fractured
                    };
                    mm.target_img = img;
                }
            }
            Op::Resync { m } => {
                let mm = &self.mirrors[m];
                let valid = matches!(mm.state, MState::Fractured | MState::Split);
                if self.call(OP_RESYNC, mm.gid, valid, false) {
                    let mm = &mut self.mirrors[m];
                    mm.state = MState::Following;
                    mm.target_img = None;
                }
            }
            Op::Restore { m } => {
                let mm = &self.mirrors[m];
                let valid = matches!(mm.state, MState::Fractured | MState::Split);
                let before = valid.then(|| self.rig.read_all(&mm.target));
                if self.call(OP_RESTORE, mm.gid, valid, false) {
                    let img = before.expect("target image");
                    if let Some(want) = &mm.target_img {
                        assert_same(&img, want, "target before the restore");
                    }
                    let src = mm.source;
                    self.src[src] = img;
                    let mm = &mut self.mirrors[m];
                    mm.state = MState::Following;
                    mm.target_img = None;
                }
            }
            Op::Failover { m } => {
                let mm = &self.mirrors[m];
                let valid = mm.state != MState::Failedover;
                let before = mm.target_img.clone();
                if self.call(OP_FAILOVER, mm.gid, valid, false) {
                    let img = match (mm.state, before) {
                        // Following: the journal drains first, the target is the source.
                        (MState::Following, _) => self.src[mm.source].clone(),
                        (_, Some(img)) => img,
                        (_, None) => self.rig.read_all(&mm.target),
                    };
                    let mm = &mut self.mirrors[m];
                    mm.state = MState::Failedover;
                    mm.target_img = Some(img);
                }
            }
            Op::Failback { m } => {
                let mm = &self.mirrors[m];
                let valid = mm.state == MState::Failedover;
                if self.call(OP_FAILBACK, mm.gid, valid, false) {
                    let img = mm.target_img.clone().expect("failed-over image");
                    let src = mm.source;
                    self.src[src] = img;
                    let mm = &mut self.mirrors[m];
                    mm.state = MState::Following;
                    mm.target_img = None;
                }
            }
            Op::SetMode { m, sync } => {
                let mm = &self.mirrors[m];
                let valid = mm.state == MState::Following;
                if self.call(if sync { 17 } else { 18 }, mm.gid, valid, false) {
                    self.mirrors[m].mode = if sync {
                        Mode::Synchronous
                    } else {
                        Mode::Asynchronous
                    };
                }
            }
            Op::Crash => {
                self.rig.crash_and_reopen();
                self.rig.idle();
            }
        }
    }

    fn check(&self, step: &str) {
        let rig = &self.rig;
        for (i, s) in SOURCES.iter().enumerate() {
            assert_same(
                &rig.read_all(s),
                &self.src[i],
                &format!("{step}: source {s}"),
            );
        }
        for s in &self.snaps {
            for (t, _, img) in &s.members {
                assert_same(&rig.read_all(t), img, &format!("{step}: snapshot {t}"));
            }
        }
        if let Some(c) = &self.clone {
            assert_same(
                &rig.read_all(&c.target),
                &c.img,
                &format!("{step}: clone {}", c.target),
            );
        }
        for (t, img) in &self.independent {
            assert_same(
                &rig.read_all(t),
                img,
                &format!("{step}: detached clone {t}"),
            );
        }
        for m in &self.mirrors {
            let want_state = match m.state {
                MState::Following => CopyState::Synchronized,
                MState::Fractured => CopyState::Fractured,
                MState::Split => CopyState::Split,
                MState::Failedover => CopyState::Failedover,
            };
            if m.state == MState::Following {
                // After a crash the pair resynchronizes; asynchronous pairs drain.
                rig.eventually("the mirror to follow and drain", || {
                    rig.state(m.id) == CopyState::Synchronized
                        && rig.svc.mirror_detail(m.id).is_some_and(|d| d.2 == 0)
                });
                assert_same(
                    &rig.read_all(&m.target),
                    &self.src[m.source],
                    &format!("{step}: mirror {}", m.target),
                );
            } else if let Some(img) = &m.target_img {
                assert_same(
                    &rig.read_all(&m.target),
                    img,
                    &format!("{step}: mirror target {}", m.target),
                );
            }
            assert_eq!(
                rig.state(m.id),
                want_state,
                "{step}: CopyState of {}",
                m.target
            );
            assert_eq!(rig.sync(m.id).mode, m.mode, "{step}: Mode of {}", m.target);
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn replication_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let mut w = World::new();
        // Host I/O with a little latency, so background work interleaves with it.
        for f in w.rig.faulty.values() {
            f.latency_us.store(50, Ordering::Relaxed);
        }
        w.check("start");
        for (i, op) in ops.iter().enumerate() {
            w.apply(op);
            if matches!(op, Op::Crash) {
                for f in w.rig.faulty.values() {
                    f.latency_us.store(50, Ordering::Relaxed);
                }
            }
            w.check(&format!("step {i} {op:?}"));
        }
        w.rig.idle();
        w.check("end");
        let _ = Duration::ZERO;
    }
}
