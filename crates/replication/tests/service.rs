//! The replication service through its two methods: lifecycles, refusals with their return
//! codes, consistency groups, restarts and crashes.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::*;
use replication::{
    CopyState, ReturnCode,
    service::{CreateGroupReplica, ModifyReplicaSynchronization, ReplicationSettings},
    types::ProgressStatus,
};

const MIB: u64 = 1 << 20;

/// A mirror of `source` into the existing (configured, fault-injecting) volume `target`;
/// returns the group relationship and the pair.
fn mirror_into(rig: &Rig, source: &str, target: &str, mode: u16) -> (u64, u64) {
    let group = format!("{target}-g");
    rig.svc
        .create_group(Some(&group), &[target.into()])
        .unwrap();
    let gid = rig.create(CreateGroupReplica {
        sync_type: Some(6),
        mode: Some(mode),
        source_element: Some(source.into()),
        target_group: Some(group),
        ..Default::default()
    });
    (gid, rig.pairs(gid)[0])
}

// Operation numbers (smis-replication.md 2.4).
const ABORT: u16 = 2;
const ACTIVATE_CONSISTENCY: u16 = 3;
const ADD_SYNC_PAIR: u16 = 5;
const DEACTIVATE: u16 = 7;
const DETACH: u16 = 8;
const DISSOLVE: u16 = 9;
const FAILOVER: u16 = 10;
const FAILBACK: u16 = 11;
const FRACTURE: u16 = 12;
const REMOVE_SYNC_PAIR: u16 = 13;
const RESYNC: u16 = 14;
const RESTORE: u16 = 15;
const RESUME: u16 = 16;
const RESET_TO_SYNC: u16 = 17;
const RESET_TO_ASYNC: u16 = 18;
const RETURN_TO_POOL: u16 = 19;
const REVERSE: u16 = 20;
const SPLIT: u16 = 21;
const SUSPEND: u16 = 22;
const ACTIVATE: u16 = 4;

#[test]
fn snapshot_keeps_the_point_in_time_and_returns_its_space() {
    let rig = Rig::new(&[("a", 4 * MIB)]);
    rig.write("a", 0, (4 * MIB) as usize, 1);
    let before = rig.read_all("a");
    let mut p = replica(7, "a", "snap");
    p.wait_for_copy_state = Some(4);
    let out = rig.try_create(p).unwrap();
    assert_eq!((out.code, out.job), (ReturnCode::Completed, None));
    let gid = out.synchronization.unwrap();
    let id = rig.pairs(gid)[0];
    assert_eq!(out.target_group.as_deref(), Some("snap"));
    assert_eq!(rig.sync(id).target, "snap_1");
    assert_eq!(rig.state(id), CopyState::Synchronized);
    // Overwrite three chunks: the snapshot still reads the cut.
    rig.write("a", 0, 3 * CHUNK as usize, 2);
    assert_same(&rig.read_all("snap_1"), &before, "images");
    assert_eq!(diff_chunks(&rig.read_all("a"), &before), vec![0, 1, 2]);
    // The writes were held (the volume's write cache) until their chunks were saved; a
    // flush applies them.
    rig.dev("a").flush().unwrap();
    let pool = rig.svc.pools()[0].clone();
    assert_eq!(pool.used(), 3 * CHUNK);
    let cow = pool.path("snap_1.cow");
    assert!(cow.exists());
    // Snapshots are read-only unless exported read-write.
    assert!(
        rig.dev("snap_1")
            .write_at(&[bytes::Bytes::from(vec![0u8; 512])], 0, false)
            .is_err()
    );

    // Return To ResourcePool: refused while exposed, then deletes it and frees the space.
    rig.svc
        .expose("snap_1", "iqn.2026-11.test:t", 1, true)
        .unwrap();
    let e = rig.try_modify(RETURN_TO_POOL, gid, false).unwrap_err();
    assert_eq!(e.code, ReturnCode::InUse);
    rig.svc.hide("snap_1", "iqn.2026-11.test:t").unwrap();
    rig.modify(RETURN_TO_POOL, gid);
    assert!(rig.svc.volume("snap_1").is_none());
    assert!(!cow.exists());
    assert_eq!(pool.used(), 0);
    let cat = rig.svc.catalog();
    assert!(cat.syncs.is_empty() && cat.group_syncs.is_empty() && !cat.groups.contains_key("snap"));
    // Writes no longer pay for copy-on-write.
    rig.write("a", 0, CHUNK as usize, 3);
    assert_eq!(pool.used(), 0);
}

#[test]
fn writable_snapshot_reports_skewed_and_restore_reverts_the_source() {
    let rig = Rig::new(&[("a", 2 * MIB)]);
    rig.write("a", 0, (2 * MIB) as usize, 1);
    let cut = rig.read_all("a");
    let gid = rig.create(replica(7, "a", "s"));
    let id = rig.pairs(gid)[0];
    rig.write("a", 5 * CHUNK, 2 * CHUNK as usize, 9);
    // Exported read-write: hosts may write it, and it is Skewed from then on.
    rig.svc
        .expose("s_1", "iqn.2026-11.test:t", 0, false)
        .unwrap();
    // Across four snapshot blocks, the first and last in part; the source then
    // overwrites some of them (saved already: the snapshot keeps its own writes).
    rig.write("s_1", 20 * CHUNK + 4000, 9000, 7);
    assert_eq!(rig.state(id), CopyState::Skewed);
    rig.write("a", 20 * CHUNK, 8192, 3);
    let mut want = cut;
    want[(20 * CHUNK) as usize + 4000..(20 * CHUNK) as usize + 13000].fill(7);
    assert_same(&rig.read_all("s_1"), &want, "images");
    // Restore: the source reads as the snapshot (with its writes).
    rig.modify(RESTORE, gid);
    assert_same(&rig.read_all("a"), &want, "images");
    assert!(!rig.sync(id).restoring);
}

#[test]
fn clone_copies_in_the_background_then_detaches() {
    let rig = Rig::new(&[("a", 8 * MIB), ("c_1", 8 * MIB)]);
    rig.write("a", 0, (8 * MIB) as usize, 1);
    let cut = rig.read_all("a");
    // A configured volume (a LUN in the server) cannot be a clone target.
    rig.svc.create_group(Some("c"), &["c_1".into()]).unwrap();
    let into_lun = CreateGroupReplica {
        sync_type: Some(8),
        source_element: Some("a".into()),
        target_group: Some("c".into()),
        ..Default::default()
    };
    assert_eq!(
        rig.try_create(into_lun).unwrap_err().code,
        ReturnCode::InUse
    );
    // The host keeps writing the origin while the clone is copied (at low priority, so
    // the copy yields to it and is still running while the origin changes).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (a, stop) = (rig.dev("a"), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let v = bytes::Bytes::from(vec![0xC0; 4096]);
                a.write_at(&[v], (i * 7 * CHUNK) % (8 * MIB), false)
                    .unwrap();
                i += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    let mut p = replica(8, "a", "c2");
    p.settings = ReplicationSettings {
        copy_priority: Some(1),
        ..Default::default()
    };
    let out = rig.try_create(p).unwrap();
    assert_eq!(out.code, ReturnCode::JobStarted);
    let job = out.job.unwrap();
    let gid = out.synchronization.unwrap();
    let id = rig.pairs(gid)[0];
    let running = || rig.svc.jobs.get(job).unwrap().state == replication::types::JobState::Running;
    let (s, r) = (rig.sync(id), running());
    if r {
        assert_eq!(
            (s.state, s.progress),
            (CopyState::Unsynchronized, ProgressStatus::Synchronizing)
        );
    }
    // Changing the origin during the copy does not change the clone.
    assert_same(&rig.read_all("c2_1"), &cut, "clone during the copy");
    rig.finish(out.code, out.job);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_same(&rig.read_all("c2_1"), &cut, "clone after the copy");
    assert_eq!(rig.state(id), CopyState::Synchronized);
    assert_eq!(rig.sync(id).percent, 100);
    // Detach before Synchronized needs Force; after, it is the normal end of a clone.
    rig.modify(DETACH, gid);
    assert!(rig.svc.catalog().syncs.is_empty());
    rig.write("a", 0, CHUNK as usize, 0xEE);
    assert_same(&rig.read_all("c2_1"), &cut, "detached clone");
    // It stays an independent volume across a restart.
    let mut rig = rig;
    rig.restart();
    assert_same(
        &rig.read_all("c2_1"),
        &cut,
        "detached clone after a restart",
    );
}

#[test]
fn clone_resync_copies_only_changed_chunks_and_restore_brings_them_back() {
    let rig = Rig::new(&[("a", 4 * MIB)]);
    rig.write("a", 0, (4 * MIB) as usize, 1);
    let gid = rig.create(replica(8, "a", "c"));
    let id = rig.pairs(gid)[0];
    assert_eq!(rig.sync(id).last_copy_chunks, 64);
    rig.write("a", 3 * CHUNK, 2 * CHUNK as usize, 2);
    rig.modify(RESYNC, gid);
    assert_eq!(rig.sync(id).last_copy_chunks, 2);
    assert_same(&rig.read_all("c_1"), &rig.read_all("a"), "images");
    let pit = rig.read_all("c_1");
    rig.write("a", 10 * CHUNK, 3 * CHUNK as usize, 3);
    rig.modify(RESTORE, gid);
    assert_eq!(rig.sync(id).last_copy_chunks, 3);
    assert_same(&rig.read_all("a"), &pit, "images");
}

#[test]
fn sync_mirror_follows_every_write_and_counts_resync_and_restore() {
    let rig = Rig::new(&[("a", 4 * MIB)]);
    rig.write("a", 0, (4 * MIB) as usize, 1);
    let mut p = replica(6, "a", "m");
    p.mode = Some(2);
    let gid = rig.create(p);
    let id = rig.pairs(gid)[0];
    assert_eq!(rig.state(id), CopyState::Synchronized);
    assert_eq!(rig.sync(id).last_copy_chunks, 64);
    for i in 0..20u64 {
        rig.write("a", (i * 104_729) % (4 * MIB - 8192), 8192, i as u8);
        assert_same(
            &rig.read_all("m_1"),
            &rig.read_all("a"),
            &format!("after write {i}"),
        );
    }
    // The target refuses host writes while it follows.
    assert!(
        rig.dev("m_1")
            .write_at(&[bytes::Bytes::from(vec![0u8; 512])], 0, false)
            .is_err()
    );

    rig.modify(FRACTURE, gid);
    assert_eq!(rig.state(id), CopyState::Fractured);
    rig.write("a", 0, 3 * CHUNK as usize, 0xA);
    rig.write("m_1", 40 * CHUNK, 2 * CHUNK as usize, 0xB);
    rig.modify(RESYNC, gid);
    assert_eq!(rig.state(id), CopyState::Synchronized);
    assert_eq!(
        rig.sync(id).last_copy_chunks,
        5,
        "the union of both sides' changes"
    );
    assert_same(&rig.read_all("m_1"), &rig.read_all("a"), "images");

    rig.modify(SPLIT, gid);
    assert_eq!(rig.state(id), CopyState::Split);
    rig.write("m_1", 7 * CHUNK, 2 * CHUNK as usize, 0xD);
    let want = rig.read_all("m_1");
    rig.modify(RESTORE, gid);
    assert_eq!(rig.sync(id).last_copy_chunks, 2);
    assert_same(&rig.read_all("a"), &want, "images");
    assert_eq!(rig.state(id), CopyState::Synchronized);
    rig.write("a", 0, 512, 0x11);
    assert_same(&rig.read_all("m_1"), &rig.read_all("a"), "images");
}

#[test]
fn failing_target_breaks_the_pair_not_the_host_io() {
    let rig = Rig::new(&[("a", 2 * MIB), ("t", 2 * MIB)]);
    let (gid, id) = mirror_into(&rig, "a", "t", 2);
    assert_eq!(rig.sync(id).target, "t");
    rig.faulty["t"].fail_writes.store(true, Ordering::Relaxed);
    rig.write("a", 0, 2 * CHUNK as usize, 5);
    assert_eq!(rig.state(id), CopyState::Broken);
    rig.write("a", 10 * CHUNK, 512, 6);
    let (dirty, _, _, _) = rig.svc.mirror_detail(id).unwrap();
    assert_eq!(dirty, 3);
    // Repaired: Resync copies the tracked chunks only.
    rig.faulty["t"].fail_writes.store(false, Ordering::Relaxed);
    rig.modify(RESYNC, gid);
    assert_eq!(rig.sync(id).last_copy_chunks, 3);
    assert_same(&rig.read_all("t"), &rig.read_all("a"), "images");
}

#[test]
fn async_mirror_drains_in_order_and_switches_modes() {
    let rig = Rig::new(&[("a", 4 * MIB)]);
    let mut p = replica(6, "a", "am");
    p.mode = Some(3);
    let gid = rig.create(p);
    let id = rig.pairs(gid)[0];
    assert_eq!(rig.sync(id).mode, replication::Mode::Asynchronous);
    for i in 0..64u64 {
        rig.write("a", i * CHUNK, CHUNK as usize, i as u8);
    }
    rig.eventually("the journal to drain", || {
        rig.svc.mirror_detail(id).unwrap().2 == 0
    });
    assert_same(&rig.read_all("am_1"), &rig.read_all("a"), "images");
    // Reset To Sync drains and switches; every write is then on both before the ack.
    rig.modify(RESET_TO_SYNC, gid);
    assert_eq!(rig.sync(id).mode, replication::Mode::Synchronous);
    rig.write("a", 0, 4096, 0x42);
    assert_same(&rig.read_all("am_1"), &rig.read_all("a"), "images");
    rig.modify(RESET_TO_ASYNC, gid);
    assert_eq!(rig.sync(id).mode, replication::Mode::Asynchronous);
}

#[test]
fn async_overflow_falls_back_to_tracking_and_resyncs() {
    let dir_rig = {
        let mut rig = Rig::new(&[("a", 4 * MIB), ("t", 4 * MIB)]);
        rig.cfg.async_max_lag = 256 << 10;
        rig.restart();
        rig
    };
    let rig = dir_rig;
    let (_, id) = mirror_into(&rig, "a", "t", 3);
    // A slow target: the journal (256 KiB) overflows.
    rig.faulty["t"].latency_us.store(50_000, Ordering::Relaxed);
    for i in 0..16u64 {
        rig.write("a", i * CHUNK, CHUNK as usize, 0x30 + i as u8);
    }
    rig.faulty["t"].latency_us.store(0, Ordering::Relaxed);
    // The service notices and resynchronizes by itself.
    rig.eventually("the pair to resynchronize", || {
        rig.state(id) == CopyState::Synchronized && rig.svc.mirror_detail(id).unwrap().2 == 0
    });
    rig.idle();
    assert_same(&rig.read_all("t"), &rig.read_all("a"), "images");
}

#[test]
fn failover_fences_the_source_and_failback_copies_back() {
    let rig = Rig::new(&[("a", 2 * MIB)]);
    rig.write("a", 0, (2 * MIB) as usize, 1);
    let gid = rig.create(replica(6, "a", "m"));
    let id = rig.pairs(gid)[0];
    rig.modify(FAILOVER, gid);
    assert_eq!(rig.state(id), CopyState::Failedover);
    assert!(
        rig.dev("a")
            .write_at(&[bytes::Bytes::from(vec![0u8; 512])], 0, false)
            .is_err()
    );
    rig.write("m_1", 3 * CHUNK, 4096, 0x77);
    let want = rig.read_all("m_1");
    rig.modify(FAILBACK, gid);
    assert_eq!(rig.state(id), CopyState::Synchronized);
    assert_eq!(rig.sync(id).last_copy_chunks, 1);
    assert_same(&rig.read_all("a"), &want, "images");
    rig.write("a", 0, 512, 0x55);
    assert_same(&rig.read_all("m_1"), &rig.read_all("a"), "images");
}

#[test]
fn reverse_roles_swaps_source_and_target() {
    let rig = Rig::new(&[("a", 2 * MIB)]);
    let gid = rig.create(replica(6, "a", "m"));
    let id = rig.pairs(gid)[0];
    rig.modify(FRACTURE, gid);
    let out = rig.modify(REVERSE, gid);
    assert_eq!(out.updated_synchronization, Some(gid));
    let s = rig.sync(id);
    assert_eq!((s.source.as_str(), s.target.as_str()), ("m_1", "a"));
    assert_eq!(s.state, CopyState::Fractured);
    rig.write("m_1", 0, 4096, 9);
    rig.modify(RESYNC, gid);
    assert_same(&rig.read_all("a"), &rig.read_all("m_1"), "images");
    assert!(
        rig.dev("a")
            .write_at(&[bytes::Bytes::from(vec![0u8; 512])], 0, false)
            .is_err()
    );
}

#[test]
fn suspend_resume_deactivate_activate_abort() {
    let rig = Rig::new(&[("a", 2 * MIB)]);
    let gid = rig.create(replica(6, "a", "m"));
    let id = rig.pairs(gid)[0];
    rig.modify(SUSPEND, gid);
    assert_eq!(rig.state(id), CopyState::Suspended);
    assert_eq!(rig.sync(id).progress, ProgressStatus::Dormant);
    rig.write("a", CHUNK, 512, 1);
    rig.modify(RESUME, gid);
    assert_eq!(rig.state(id), CopyState::Synchronized);
    assert_eq!(rig.sync(id).last_copy_chunks, 1);
    rig.modify(DEACTIVATE, gid);
    assert_eq!(rig.state(id), CopyState::Inactive);
    rig.write("a", 2 * CHUNK, 512, 1);
    rig.modify(ACTIVATE, gid);
    assert_eq!(rig.state(id), CopyState::Synchronized);
    assert_same(&rig.read_all("m_1"), &rig.read_all("a"), "images");
    // Prepare forgets the tracking: the next activation copies everything.
    rig.modify(24, gid);
    assert_eq!(rig.state(id), CopyState::Prepared);
    rig.modify(ACTIVATE, gid);
    assert_eq!(rig.sync(id).last_copy_chunks, 32);
    // Abort stops a copy: restart it with Resync.
    rig.faulty["a"].latency_us.store(2000, Ordering::Relaxed);
    let out = rig
        .svc
        .modify_replica_synchronization(ModifyReplicaSynchronization {
            operation: Some(24),
            synchronization: Some(gid),
            ..Default::default()
        });
    assert!(out.is_ok());
    let out = rig
        .svc
        .modify_replica_synchronization(ModifyReplicaSynchronization {
            operation: Some(ACTIVATE),
            synchronization: Some(gid),
            ..Default::default()
        });
    let out = out.unwrap();
    if out.code == ReturnCode::JobStarted {
        match rig.try_modify(ABORT, gid, false) {
            Ok(_) => {
                assert_eq!(rig.state(id), CopyState::Aborted);
                let info = rig
                    .svc
                    .jobs
                    .wait(out.job.unwrap(), Duration::from_secs(30))
                    .unwrap();
                assert_eq!(info.state, replication::types::JobState::Exception);
            }
            // On a loaded machine the copy may finish before the Abort arrives.
            Err(e) => assert_eq!(rig.state(id), CopyState::Synchronized, "{e:?}"),
        }
    }
    rig.faulty["a"].latency_us.store(0, Ordering::Relaxed);
    rig.idle();
    if rig.state(id) != CopyState::Synchronized {
        rig.modify(RESYNC, gid);
    }
    assert_eq!(rig.state(id), CopyState::Synchronized);
    assert_same(&rig.read_all("m_1"), &rig.read_all("a"), "images");
}

#[test]
fn refusals_carry_the_right_return_code_and_reason() {
    let rig = Rig::new(&[("a", 2 * MIB), ("b", 2 * MIB)]);
    let snap = rig.create(replica(7, "a", "s"));
    let mirror = rig.create(replica(6, "b", "m"));
    // Not in the table for this SyncType: 1.
    let e = rig.try_modify(FAILOVER, snap, false).unwrap_err();
    assert_eq!(e.code, ReturnCode::NotSupported);
    assert!(e.message.contains("Failover"), "{}", e.message);
    // Not valid in this CopyState: 5, naming the state.
    let e = rig.try_modify(RESUME, mirror, false).unwrap_err();
    assert_eq!(e.code, ReturnCode::InvalidParameter);
    assert!(e.message.contains("Synchronized"), "{}", e.message);
    // Detach of a following mirror needs Force.
    let e = rig.try_modify(DETACH, mirror, false).unwrap_err();
    assert_eq!(
        (e.code, e.parameter.as_deref()),
        (ReturnCode::InvalidParameter, Some("Force"))
    );
    // Outside the ValueMap / reserved.
    assert_eq!(
        rig.try_modify(99, mirror, false).unwrap_err().code,
        ReturnCode::InvalidParameter
    );
    assert_eq!(
        rig.try_modify(25, mirror, false).unwrap_err().code,
        ReturnCode::NotSupported
    );
    assert_eq!(
        rig.try_modify(FRACTURE, 9999, false)
            .unwrap_err()
            .parameter
            .as_deref(),
        Some("Synchronization")
    );
    // SyncPair only with Add/RemoveSyncPair; those need a group relationship and pairs.
    let e = rig
        .svc
        .modify_replica_synchronization(ModifyReplicaSynchronization {
            operation: Some(FRACTURE),
            synchronization: Some(mirror),
            sync_pairs: Some(vec![1]),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(e.parameter.as_deref(), Some("SyncPair"));
    assert_eq!(
        rig.try_modify(ADD_SYNC_PAIR, mirror, false)
            .unwrap_err()
            .parameter
            .as_deref(),
        Some("SyncPair")
    );
    // WaitForCopyState must be reachable by the operation.
    let e = rig
        .svc
        .modify_replica_synchronization(ModifyReplicaSynchronization {
            operation: Some(FRACTURE),
            synchronization: Some(mirror),
            wait_for_copy_state: Some(7),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(e.parameter.as_deref(), Some("WaitForCopyState"));
    // CreateGroupReplica's rules.
    let bad = |p: CreateGroupReplica| rig.try_create(p).unwrap_err();
    assert_eq!(
        bad(CreateGroupReplica::default()).parameter.as_deref(),
        Some("SyncType")
    );
    let e = bad(CreateGroupReplica {
        sync_type: Some(5),
        source_element: Some("a".into()),
        ..Default::default()
    });
    assert_eq!(e.code, ReturnCode::InvalidParameter);
    let e = bad(CreateGroupReplica {
        sync_type: Some(7),
        ..Default::default()
    });
    assert_eq!(e.parameter.as_deref(), Some("SourceElement"));
    let e = bad(CreateGroupReplica {
        sync_type: Some(7),
        source_element: Some("a".into()),
        source_group: Some("g".into()),
        ..Default::default()
    });
    assert_eq!(e.parameter.as_deref(), Some("SourceGroup"));
    let e = bad(CreateGroupReplica {
        sync_type: Some(7),
        source_element: Some("a".into()),
        target_group: Some("g".into()),
        target_element_count: Some(2),
        ..Default::default()
    });
    assert_eq!(e.parameter.as_deref(), Some("TargetElementCount"));
    let e = bad(CreateGroupReplica {
        sync_type: Some(7),
        mode: Some(3),
        source_element: Some("a".into()),
        ..Default::default()
    });
    assert_eq!(e.parameter.as_deref(), Some("Mode"));
    let e = bad(CreateGroupReplica {
        sync_type: Some(7),
        source_element: Some("a".into()),
        wait_for_copy_state: Some(3),
        ..Default::default()
    });
    assert_eq!(e.parameter.as_deref(), Some("WaitForCopyState"));
    // A mirror target cannot be the source of a new relationship: 6.
    let e = bad(replica(7, "m_1", "x"));
    assert_eq!(e.code, ReturnCode::InUse);
    // Nothing of the refused calls was left behind.
    let cat = rig.svc.catalog();
    assert_eq!((cat.syncs.len(), cat.group_syncs.len()), (2, 2));
}

#[test]
fn one_source_to_many_targets_and_dissolve_leaves_an_aspect() {
    let rig = Rig::new(&[("a", 2 * MIB)]);
    rig.write("a", 0, (2 * MIB) as usize, 4);
    let mut p = replica(8, "a", "many");
    p.target_element_count = Some(3);
    let gid = rig.create(p);
    let pairs = rig.pairs(gid);
    assert_eq!(pairs.len(), 3);
    let cat = rig.svc.catalog();
    assert_eq!(
        cat.groups["many"].members,
        vec!["many_1", "many_2", "many_3"]
    );
    for n in ["many_1", "many_2", "many_3"] {
        assert_same(&rig.read_all(n), &rig.read_all("a"), n);
    }
    let out = rig.modify(DISSOLVE, gid);
    let aspect = out.settings_state.expect("SettingsState");
    let cat = rig.svc.catalog();
    assert_eq!(cat.aspects[&aspect].source, "a");
    assert!(cat.syncs.is_empty());
    assert!(rig.svc.volume("many_2").is_some());
}

/// Writes go to A, then (after A's write completed) to B: a dependent pair. A consistent
/// group snapshot taken meanwhile never holds B's write without A's.
#[test]
fn group_snapshot_cuts_every_member_at_one_barrier() {
    let rig = Rig::new(&[("a", 4 * MIB), ("b", 4 * MIB)]);
    rig.svc
        .create_group(Some("g"), &["a".into(), "b".into()])
        .unwrap();
    let a = rig.dev("a");
    let b = rig.dev("b");
    let stop = Arc::new(AtomicBool::new(false));
    let n = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, n) = (stop.clone(), n.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 64 {
                let v = bytes::Bytes::from(vec![1 + i as u8; 512]);
                a.write_at(std::slice::from_ref(&v), i * CHUNK, false)
                    .unwrap();
                b.write_at(&[v], i * CHUNK, false).unwrap();
                i += 1;
                n.store(i, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };
    rig.eventually("some writes", || n.load(Ordering::Relaxed) > 4);
    let gid = rig.create(CreateGroupReplica {
        relationship_name: Some("cg".into()),
        sync_type: Some(7),
        source_group: Some("g".into()),
        consistency: Some(3),
        ..Default::default()
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let written = |img: Vec<u8>| -> u64 {
        (0..64)
            .take_while(|i| img[(*i * CHUNK) as usize] != 0)
            .count() as u64
    };
    let (sa, sb) = (written(rig.read_all("cg_1")), written(rig.read_all("cg_2")));
    assert!(
        sb <= sa,
        "B has {sb} writes, A only {sa}: the cut is not consistent"
    );
    assert!(
        sa <= sb + 1,
        "at most A's write of the pair in flight at the cut"
    );
    assert_eq!(rig.pairs(gid).len(), 2);
    assert!(rig.svc.catalog().group_syncs[&gid].consistency);
}

/// A consistent asynchronous mirror group `name` of volumes a and b, with 48 writes queued
/// in its one journal in the order a0 b0 a1 b1 ...; returns the group relationship.
fn async_group_with_backlog(rig: &Rig, name: &str) -> u64 {
    rig.svc
        .create_group(Some("g"), &["a".into(), "b".into()])
        .unwrap();
    let gid = rig.create(CreateGroupReplica {
        relationship_name: Some(name.into()),
        sync_type: Some(6),
        mode: Some(3),
        source_group: Some("g".into()),
        consistency: Some(3),
        ..Default::default()
    });
    let (a, b) = (rig.dev("a"), rig.dev("b"));
    for i in 0..48u64 {
        let v = bytes::Bytes::from(vec![1 + i as u8; 512]);
        a.write_at(std::slice::from_ref(&v), i * CHUNK, false)
            .unwrap();
        b.write_at(&[v], i * CHUNK, false).unwrap();
    }
    gid
}

/// The targets of `async_group_with_backlog`'s group stopped at one point of its journal:
/// B holds at most A's writes, A at most one more.
fn assert_one_cut(rig: &Rig, name: &str) {
    let written = |img: Vec<u8>| -> u64 {
        (0..48)
            .take_while(|i| img[(*i * CHUNK) as usize] != 0)
            .count() as u64
    };
    let ta = written(rig.read_all(&format!("{name}_1")));
    let tb = written(rig.read_all(&format!("{name}_2")));
    assert!(
        tb <= ta && ta <= tb + 1,
        "target A has {ta} writes, target B {tb}"
    );
}

/// A consistent asynchronous mirror group ships both volumes through one journal: after a
/// group fracture the targets never hold B's write without A's.
#[test]
fn consistent_async_group_fractures_at_one_cut() {
    let rig = Rig::new(&[("a", 4 * MIB), ("b", 4 * MIB)]);
    let gid = async_group_with_backlog(&rig, "ag");
    let targets = ["ag_1", "ag_2"];
    rig.modify(FRACTURE, gid);
    assert_one_cut(&rig, "ag");
    // Resync brings both up to date.
    rig.modify(RESYNC, gid);
    assert_same(&rig.read_all(targets[0]), &rig.read_all("a"), "target a");
    assert_same(&rig.read_all(targets[1]), &rig.read_all("b"), "target b");
    // One pair alone may only be fractured with Force.
    let pair = rig.pairs(gid)[0];
    let e = rig.try_modify(FRACTURE, pair, false).unwrap_err();
    assert_eq!(e.parameter.as_deref(), Some("Force"));
    rig.try_modify(FRACTURE, pair, true).unwrap();
    // RemoveSyncPair takes it out of the group; AddSyncPair needs it Synchronized again.
    rig.modify_with(ModifyReplicaSynchronization {
        operation: Some(REMOVE_SYNC_PAIR),
        synchronization: Some(gid),
        sync_pairs: Some(vec![pair]),
        ..Default::default()
    });
    assert_eq!(rig.pairs(gid).len(), 1);
    assert_eq!(rig.sync(pair).group_sync, None);
    rig.modify(RESYNC, pair);
    rig.modify_with(ModifyReplicaSynchronization {
        operation: Some(ADD_SYNC_PAIR),
        synchronization: Some(gid),
        sync_pairs: Some(vec![pair]),
        ..Default::default()
    });
    assert_eq!(rig.pairs(gid).len(), 2);
    rig.modify(ACTIVATE_CONSISTENCY, gid);
}

#[test]
fn relationships_survive_a_clean_restart() {
    let mut rig = Rig::new(&[("a", 2 * MIB), ("b", 2 * MIB)]);
    rig.write("a", 0, (2 * MIB) as usize, 1);
    rig.write("b", 0, (2 * MIB) as usize, 2);
    let snap = rig.create(replica(7, "a", "s"));
    let mirror = rig.create(replica(6, "b", "m"));
    let clone = rig.create(replica(8, "a", "c"));
    let cut = rig.read_all("s_1");
    rig.write("a", 0, CHUNK as usize, 9);
    rig.modify(FRACTURE, mirror);
    rig.write("b", 5 * CHUNK, 512, 3);
    let before = rig.svc.catalog();
    rig.restart();
    let after = rig.svc.catalog();
    for (id, s) in &before.syncs {
        assert_eq!(
            (after.syncs[id].state, &after.syncs[id].target),
            (s.state, &s.target),
            "sync:{id}"
        );
    }
    let _ = (snap, clone);
    assert_same(&rig.read_all("s_1"), &cut, "images");
    assert_same(&rig.read_all("c_1"), &cut, "images");
    // The fracture's tracking survived: Resync copies just the one chunk.
    rig.modify(RESYNC, mirror);
    let m = rig.pairs(mirror)[0];
    assert_eq!(rig.sync(m).last_copy_chunks, 1);
    assert_same(&rig.read_all("m_1"), &rig.read_all("b"), "images");
}

/// After a crash a synchronous mirror resynchronizes the activity log's extents, not the
/// whole volume.
#[test]
fn crash_resyncs_only_the_activity_log() {
    let mut rig = Rig::new(&[("a", 64 * MIB)]);
    let gid = rig.create(replica(6, "a", "m"));
    let id = rig.pairs(gid)[0];
    assert_eq!(rig.sync(id).last_copy_chunks, 1024);
    rig.write("a", 9 * MIB, 8192, 7);
    rig.crash_and_reopen();
    rig.idle();
    rig.eventually("the resync", || rig.state(id) == CopyState::Synchronized);
    let n = rig.sync(id).last_copy_chunks;
    assert!(
        n > 0 && n <= 64,
        "resynced {n} chunks; one 4 MiB extent is 64"
    );
    assert_same(&rig.read_all("m_1"), &rig.read_all("a"), "images");
}

/// Volume `a` (8 MiB of 1s), its snapshot (group relationship returned), `a` rewritten
/// with 2s, then a slow source (5 ms per write) and a Restore from the snapshot started:
/// (the rig, the group relationship, the snapshot's image, the restore's job).
fn slow_restore() -> (Rig, u64, Vec<u8>, u64) {
    let rig = Rig::new(&[("a", 8 * MIB)]);
    rig.write("a", 0, (8 * MIB) as usize, 1);
    let gid = rig.create(replica(7, "a", "s"));
    let cut = rig.read_all("s_1");
    rig.write("a", 0, (8 * MIB) as usize, 2);
    rig.faulty["a"].latency_us.store(5_000, Ordering::Relaxed);
    let out = rig
        .svc
        .modify_replica_synchronization(ModifyReplicaSynchronization {
            operation: Some(RESTORE),
            synchronization: Some(gid),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(out.code, ReturnCode::JobStarted);
    let job = out.job.expect("a job");
    (rig, gid, cut, job)
}

/// A restore interrupted by a crash resumes, and a host write made after a chunk was
/// restored is not undone by it.
#[test]
fn restore_resumes_after_a_crash_without_undoing_host_writes() {
    let (mut rig, gid, cut, _) = slow_restore();
    // The source reads as the snapshot at once.
    assert_same(&rig.read_all("a"), &cut, "images");
    // A host write to the last chunk restores it first, then lands.
    rig.write("a", 127 * CHUNK, 512, 0x99);
    let mut want = cut;
    want[(127 * CHUNK) as usize..(127 * CHUNK) as usize + 512].fill(0x99);
    rig.faulty["a"].latency_us.store(0, Ordering::Relaxed);
    rig.crash_and_reopen();
    let id = rig.pairs(gid)[0];
    assert!(rig.sync(id).restoring || rig.read_all("a") == want);
    assert_same(&rig.read_all("a"), &want, "images");
    rig.idle();
    rig.eventually("the restore to finish", || !rig.sync(id).restoring);
    assert_same(&rig.read_all("a"), &want, "images");
}

/// A clean stop waits for a running restore to stop at a chunk and record where it stopped,
/// so that nothing is written after the stop; the restore resumes at the next start.
#[test]
fn a_clean_stop_waits_for_a_running_restore_which_resumes_at_the_next_start() {
    // The restore (128 chunks at 5 ms or more each) outlasts the stop.
    let (mut rig, gid, cut, job) = slow_restore();
    rig.svc.shutdown();
    let info = rig.svc.jobs.get(job).expect("the job");
    assert_eq!(
        info.state,
        replication::types::JobState::Exception,
        "the restore job when the stop returned: {info:?}"
    );
    assert!(
        info.error
            .as_deref()
            .is_some_and(|e| e.contains("stopping")),
        "{info:?}"
    );
    rig.faulty["a"].latency_us.store(0, Ordering::Relaxed);
    rig.restart();
    rig.idle();
    let id = rig.pairs(gid)[0];
    rig.eventually("the restore to finish", || !rig.sync(id).restoring);
    assert_same(&rig.read_all("a"), &cut, "images");
}

/// A consistent Failover of an asynchronous group whose targets cannot drain in time: every
/// target stops at one point of the shared journal (none gets ahead of another while the
/// pairs leave it one by one), and what was not shipped stays tracked for the failback.
#[test]
fn consistent_async_group_fails_over_at_one_cut() {
    let mut rig = Rig::new(&[("a", 4 * MIB), ("b", 4 * MIB)]);
    rig.cfg.drain_timeout = Duration::ZERO;
    rig.restart();
    let gid = async_group_with_backlog(&rig, "fg");
    rig.modify(FAILOVER, gid);
    assert_one_cut(&rig, "fg");
    for id in rig.pairs(gid) {
        assert_eq!(rig.state(id), CopyState::Failedover);
    }
}

/// Split needs an asynchronous target caught up; one that cannot catch up within the drain
/// timeout makes Split answer 3 (Timeout) and change nothing.
#[test]
fn split_times_out_when_the_target_cannot_catch_up() {
    let mut rig = Rig::new(&[("a", 4 * MIB), ("t", 4 * MIB)]);
    rig.cfg.drain_timeout = Duration::from_millis(50);
    rig.restart();
    let (gid, id) = mirror_into(&rig, "a", "t", 3);
    rig.faulty["t"].latency_us.store(100_000, Ordering::Relaxed);
    for i in 0..8u64 {
        rig.write("a", i * CHUNK, CHUNK as usize, 0x50 + i as u8);
    }
    let e = rig.try_modify(SPLIT, gid, false).unwrap_err();
    assert_eq!(e.code, ReturnCode::Timeout, "{e:?}");
    assert_eq!(rig.state(id), CopyState::Synchronized, "nothing was split");
    rig.faulty["t"].latency_us.store(0, Ordering::Relaxed);
    // The target write in flight when Split gave up still takes its 100 ms: a Split within
    // that time times out again (and changes nothing), one after it splits.
    rig.eventually("Split once the target caught up", || {
        match rig.try_modify(SPLIT, gid, false) {
            Ok(out) => {
                rig.finish(out.code, out.job);
                true
            }
            Err(e) => {
                assert_eq!(e.code, ReturnCode::Timeout, "{e:?}");
                assert_eq!(rig.state(id), CopyState::Synchronized, "nothing was split");
                false
            }
        }
    });
    assert_eq!(rig.state(id), CopyState::Split);
    assert_same(&rig.read_all("t"), &rig.read_all("a"), "split target");
}
