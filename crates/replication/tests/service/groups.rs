//! Consistency groups: one barrier for a group snapshot, one journal and one cut for an
//! asynchronous mirror group (fracture, failover).

use super::*;

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
