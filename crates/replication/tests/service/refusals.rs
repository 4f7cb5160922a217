//! Operations the state machine forbids, refused with the right return code and reason.

use super::*;

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
