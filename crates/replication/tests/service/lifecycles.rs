//! Each kind of relationship through its life: snapshots, clones, synchronous and
//! asynchronous mirrors, and the operations that move them (fracture, resync, restore,
//! failover, failback, reverse, suspend, split, dissolve).

use super::*;

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
    let gid = out.synchronization.unwrap();
    let id = rig.pairs(gid)[0];
    // The copy may end between any two looks (the pair is Synchronized a moment before its
    // job is Completed: looking at the pair, then at the job, failed once on a loaded
    // machine), so one look at the pair: copying, or done.
    let s = rig.sync(id);
    assert!(
        matches!(
            (s.state, s.progress),
            (CopyState::Unsynchronized, ProgressStatus::Synchronizing)
                | (CopyState::Synchronized, _)
        ),
        "clone during the copy: {:?} {:?}",
        s.state,
        s.progress
    );
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
    assert!(rig.start_modify(PREPARE, gid).is_ok());
    let out = rig.start_modify(ACTIVATE, gid).unwrap();
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
