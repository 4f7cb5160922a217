//! Instances as clients see them, with CIM property names: CIM_StorageVolume,
//! CIM_ReplicationGroup, CIM_StorageSynchronized, CIM_GroupSynchronized,
//! CIM_ConcreteJob, CIM_StoragePool, CIM_SynchronizationAspect and
//! CIM_ReplicationServiceCapabilities. Every instance carries `Ref` (its reference) and
//! `ClassName`. Properties that are not CIM's carry the `IronLun_` prefix.

use replication::{
    CopyState, Mode, Operation, ProgressStatus, SyncType,
    service::{Catalog, GroupSyncRec, ReplicationService, SyncRec, VolumeKind, VolumeRec},
    table,
    types::{JobState, copy_type, replication_type, sync_state},
};
use serde_json::{Value, json};

use crate::refs;

/// The classes `EnumerateInstances` knows.
pub const CLASSES: &[&str] = &[
    "CIM_StorageVolume",
    "CIM_ServiceAccessPoint",
    "CIM_ReplicationGroup",
    "CIM_StorageSynchronized",
    "CIM_GroupSynchronized",
    "CIM_ConcreteJob",
    "CIM_StoragePool",
    "CIM_SynchronizationAspect",
    "CIM_ReplicationServiceCapabilities",
];

/// A CIM datetime (`yyyymmddhhmmss.mmmmmm+000`, UTC) from seconds since the epoch.
pub fn cim_datetime(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}.000000+000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn when(t: Option<u64>) -> Value {
    t.map_or(Value::Null, |t| Value::String(cim_datetime(t)))
}

/// CIM_StorageVolume.
pub fn volume(v: &VolumeRec, cat: &Catalog) -> Value {
    let kind = match v.kind {
        VolumeKind::Configured => "Configured",
        VolumeKind::Created => "Created",
        VolumeKind::Replica { .. } => "Replica",
        VolumeKind::Independent => "Independent",
        VolumeKind::Remote { .. } => "Remote",
    };
    let replica_of = cat
        .syncs
        .values()
        .find(|s| s.target == v.name)
        .map(|s| refs::sync(s.id));
    let naa = format!(
        "{:016X}",
        (v.uid & 0x0fff_ffff_ffff_ffff) | 0x3000_0000_0000_0000
    );
    json!({
        "Ref": refs::volume(&v.name),
        "ClassName": "CIM_StorageVolume",
        "DeviceID": v.name,
        "ElementName": v.name,
        "Name": naa,
        "NameFormat": 2,
        "BlockSize": v.block_size,
        "NumberOfBlocks": v.size / u64::from(v.block_size.max(1)),
        "ConsumableBlocks": v.size / u64::from(v.block_size.max(1)),
        "Pool": v.pool.as_deref().map(|p| format!("pool:{p}")),
        "IronLun_Kind": kind,
        "IronLun_Path": v.path,
        "IronLun_ReplicaOf": replica_of,
        "IronLun_Exposures": v.exposures.iter().map(|e| json!({
            "Target": e.target, "Lun": e.lun, "ReadOnly": e.read_only,
        })).collect::<Vec<_>>(),
    })
}

/// CIM_ReplicationGroup.
pub fn group(name: &str, members: &[String]) -> Value {
    json!({
        "Ref": refs::group(name),
        "ClassName": "CIM_ReplicationGroup",
        "InstanceID": format!("ironlun:group:{name}"),
        "ElementName": name,
        "Persistent": true,
        "DeleteOnEmptyElement": false,
        "DeleteOnUnassociated": false,
        "Members": members.iter().map(|m| refs::volume(m)).collect::<Vec<_>>(),
    })
}

fn copy_methodology(s: SyncType) -> u16 {
    match s {
        SyncType::Snapshot => 6,
        SyncType::Clone => 9,
        SyncType::Mirror => 4,
    }
}

/// CIM_StorageSynchronized.
pub fn pair(s: &SyncRec, svc: &ReplicationService) -> Value {
    let detail = svc.mirror_detail(s.id);
    let rpo = match (s.mode, detail) {
        (Mode::Asynchronous, Some((_, _, _, secs))) => Some(interval(secs as u64)),
        (Mode::Synchronous, _) if s.sync_type == SyncType::Mirror => Some(interval(0)),
        _ => None,
    };
    json!({
        "Ref": refs::sync(s.id),
        "ClassName": "CIM_StorageSynchronized",
        "SystemElement": refs::volume(&s.source),
        "SyncedElement": refs::volume(&s.target),
        "SyncType": s.sync_type,
        "Mode": s.mode,
        "CopyState": s.state,
        "RequestedCopyState": s.requested,
        "ProgressStatus": s.progress,
        "PercentSynced": s.percent,
        "SyncMaintained": true,
        "CopyType": copy_type(s.sync_type, s.mode),
        "SyncState": sync_state(s.sync_type, s.state),
        "ReplicaType": if s.sync_type == SyncType::Snapshot { 4 } else { 2 },
        "CopyMethodology": copy_methodology(s.sync_type),
        "CopyPriority": s.copy_priority,
        "CopyRecoveryMode": s.recovery_mode,
        "FailedCopyStopsHostIO": false,
        "WhenEstablished": when(Some(s.established)),
        "WhenSynced": when(s.synced),
        "WhenActivated": when(s.activated),
        "WhenDeactivated": when(s.deactivated),
        "WhenSuspended": when(s.suspended),
        "RPO": rpo,
        "IronLun_GroupSynchronized": s.group_sync.map(refs::sync),
        "IronLun_ChunksCopied": s.last_copy_chunks,
        "IronLun_DirtyChunks": detail.map(|d| d.0),
        "IronLun_TargetDirtyChunks": detail.map(|d| d.1),
        "IronLun_LagBytes": detail.map(|d| d.2),
        "IronLun_LagSeconds": detail.map(|d| d.3),
        "IronLun_PeerSystem": s.peer.as_ref().map(|l| l.system.clone()),
        "IronLun_PeerSynchronization": s.peer.as_ref().map(|l| refs::sync(l.remote)),
        "IronLun_Generation": s.peer.as_ref().map(|l| l.generation),
        "IronLun_PeerPrimary": s.peer.as_ref().map(|l| l.peer_primary),
        "IronLun_SplitBrain": s.peer.as_ref().map(|l| l.split_brain),
    })
}

/// The secondary side of an HA pair: the relationship as this server knows it (its source
/// is on the peer, whose instance carries the copy progress).
pub fn peer_pair(p: &replication::service::peer::PeerRec, dirty: Option<u64>) -> Value {
    json!({
        "Ref": refs::sync(p.id),
        "ClassName": "CIM_StorageSynchronized",
        "SystemElement": format!("remote:{}/{}", p.source_system, refs::volume(&p.source_volume)),
        "SyncedElement": refs::volume(&p.volume),
        "SyncType": SyncType::Mirror,
        "Mode": p.mode,
        "CopyState": if p.primary { CopyState::Failedover } else { CopyState::Synchronized },
        "RequestedCopyState": CopyState::NotApplicable,
        "ProgressStatus": ProgressStatus::Completed,
        "SyncMaintained": true,
        "CopyType": copy_type(SyncType::Mirror, p.mode),
        "ReplicaType": 2,
        "CopyMethodology": copy_methodology(SyncType::Mirror),
        "WhenEstablished": when(Some(p.established)),
        "IronLun_Role": if p.primary { "primary" } else { "secondary" },
        "IronLun_PeerSystem": p.source_system,
        "IronLun_PeerSynchronization": refs::sync(p.source_sync),
        "IronLun_Generation": p.generation,
        "IronLun_Target": p.target,
        "IronLun_Lun": p.lun,
        "IronLun_DirtyChunks": dirty,
    })
}

/// A CIM interval (`ddddddddhhmmss.mmmmmm:000`).
pub fn interval(secs: u64) -> String {
    format!(
        "{:08}{:02}{:02}{:02}.000000:000",
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The CopyState and ProgressStatus of a group relationship: the members' common value, or
/// 14 Mixed; and the mean PercentSynced.
pub fn group_state(g: &GroupSyncRec, cat: &Catalog) -> (CopyState, ProgressStatus, u16) {
    let members: Vec<&SyncRec> = g.members.iter().filter_map(|m| cat.syncs.get(m)).collect();
    let Some(first) = members.first() else {
        return (CopyState::NotApplicable, ProgressStatus::NotApplicable, 0);
    };
    let state = if members.iter().all(|m| m.state == first.state) {
        first.state
    } else {
        CopyState::Mixed
    };
    let progress = if members.iter().all(|m| m.progress == first.progress) {
        first.progress
    } else {
        ProgressStatus::Mixed
    };
    let pct = members.iter().map(|m| u64::from(m.percent)).sum::<u64>() / members.len() as u64;
    (state, progress, pct as u16)
}

/// CIM_GroupSynchronized.
pub fn group_sync(g: &GroupSyncRec, cat: &Catalog) -> Value {
    let (state, progress, pct) = group_state(g, cat);
    let system = match &g.source_group {
        Some(sg) => refs::group(sg),
        None => g
            .members
            .first()
            .and_then(|m| cat.syncs.get(m))
            .map_or_else(String::new, |s| refs::volume(&s.source)),
    };
    json!({
        "Ref": refs::sync(g.id),
        "ClassName": "CIM_GroupSynchronized",
        "SystemElement": system,
        "SyncedElement": refs::group(&g.target_group),
        "RelationshipName": g.name,
        "SyncType": g.sync_type,
        "Mode": g.mode,
        "CopyState": state,
        "ProgressStatus": progress,
        "PercentSynced": pct,
        "SyncMaintained": true,
        "WhenEstablished": when(Some(g.established)),
        "ConsistencyEnabled": g.consistency,
        "ConsistencyType": 2,
        "ConsistencyState": if g.consistency { 3 } else { 2 },
        "ConsistencyStatus": if !g.consistency { 4 } else if state == CopyState::Unsynchronized { 3 } else { 2 },
        "IronLun_Members": g.members.iter().map(|m| refs::sync(*m)).collect::<Vec<_>>(),
    })
}

/// CIM_ConcreteJob.
pub fn job(j: &replication::service::JobInfo) -> Value {
    let status: Vec<u16> = match j.state {
        JobState::Completed => vec![2, 17],
        JobState::Exception => vec![6, 17],
        JobState::Terminated => vec![10],
        _ => vec![2],
    };
    json!({
        "Ref": refs::job(j.id),
        "ClassName": "CIM_ConcreteJob",
        "InstanceID": format!("ironlun:job:{}", j.id),
        "Name": j.name,
        "MethodName": j.method,
        "JobState": j.state,
        "PercentComplete": j.percent,
        "OperationalStatus": status,
        "ErrorCode": if j.state == JobState::Exception { 4 } else { 0 },
        "ErrorDescription": j.error,
        "TimeSubmitted": when(Some(j.submitted)),
        "TimeOfLastStateChange": when(Some(j.finished.unwrap_or(j.submitted))),
        "TimeBeforeRemoval": interval(replication::service::jobs::TIME_BEFORE_REMOVAL.as_secs()),
        "DeleteOnCompletion": false,
        "IronLun_AffectedElements": j.affected,
    })
}

/// CIM_StoragePool.
pub fn pool(p: &replication::pool::Pool) -> Value {
    let used = p.used();
    json!({
        "Ref": format!("pool:{}", p.name),
        "ClassName": "CIM_StoragePool",
        "InstanceID": format!("ironlun:pool:{}", p.name),
        "ElementName": p.name,
        "PoolID": p.name,
        "TotalManagedSpace": (p.limit > 0).then_some(p.limit),
        "RemainingManagedSpace": (p.limit > 0).then(|| p.limit.saturating_sub(used)),
        "IronLun_SnapshotSpaceUsed": used,
        "IronLun_Path": p.dir.display().to_string(),
    })
}

/// CIM_SynchronizationAspect.
pub fn aspect(a: &replication::service::AspectRec) -> Value {
    json!({
        "Ref": format!("aspect:{}", a.id),
        "ClassName": "CIM_SynchronizationAspect",
        "InstanceID": format!("ironlun:aspect:{}", a.id),
        "SyncType": a.sync_type,
        "WhenPointInTime": when(a.point_in_time),
        "ConsistencyEnabled": a.consistency,
        "ConsistencyType": 2,
        "CopyStatus": 4,
        "CopyMethodology": copy_methodology(a.sync_type),
        "IronLun_SourceElement": refs::volume(&a.source),
        "IronLun_FormerTarget": refs::volume(&a.target),
    })
}

/// The (SyncType, Mode, remote) kinds ironlun implements.
pub fn supported_types() -> Vec<(SyncType, Mode, bool)> {
    vec![
        (SyncType::Mirror, Mode::Synchronous, false),
        (SyncType::Mirror, Mode::Asynchronous, false),
        (SyncType::Mirror, Mode::Synchronous, true),
        (SyncType::Mirror, Mode::Asynchronous, true),
        (SyncType::Snapshot, Mode::Synchronous, false),
        (SyncType::Clone, Mode::Synchronous, false),
    ]
}

/// CIM_ServiceAccessPoint (no secrets).
pub fn access_point(a: &replication::service::AccessPointRec) -> Value {
    json!({
        "Ref": format!("accesspoint:{}", a.name),
        "ClassName": "CIM_ServiceAccessPoint",
        "Name": a.name,
        "ElementName": a.name,
        "IronLun_Portal": a.portal,
        "IronLun_Target": a.target,
        "IronLun_Lun": a.lun,
        "IronLun_InitiatorName": a.initiator_name.as_deref().unwrap_or(replication::service::DEFAULT_INITIATOR),
        "IronLun_ChapUser": a.chap.as_ref().map(|(u, _)| u),
        "IronLun_MutualUser": a.mutual.as_ref().map(|(u, _)| u),
    })
}

/// Element features (GetSupportedFeatures) of a SyncType.
pub fn features(s: SyncType) -> Vec<u16> {
    // 2 replication groups, 7 the service suspends source I/O for a consistent point in
    // time, 8 and 11 targets from any of several pools, 24 adjustable CopyPriority, 45
    // SynchronizationAspect (Dissolve).
    let mut f = vec![2, 7, 8, 11, 24, 45];
    match s {
        // 16 a snapshot stays associated to its source.
        SyncType::Snapshot => f.push(16),
        // 52 Reverse Roles does not change CopyState.
        SyncType::Mirror => f.push(52),
        SyncType::Clone => {}
    }
    f.sort_unstable();
    f
}

/// Group features (GetSupportedGroupFeatures).
pub const GROUP_FEATURES: &[u16] = &[2, 3, 5, 14, 15, 23, 56, 63];

/// CIM_ReplicationServiceCapabilities: what is implemented, from the transition table.
pub fn capabilities() -> Value {
    let types: Vec<Value> = supported_types()
        .into_iter()
        .map(|(s, m, remote)| {
            let ops: Vec<Value> = table::supported_operations(s, None)
                .into_iter()
                .filter(|(o, _)| {
                    s == SyncType::Mirror
                        || !matches!(o, Operation::ResetToAsync | Operation::ResetToSync)
                })
                .map(|(o, _)| json!(o))
                .collect();
            json!({
                "ReplicationType": replication_type(s, m, remote),
                "SyncType": s,
                "Mode": m,
                "SupportedOperations": ops,
                "SupportedCopyStates": table::supported_copy_states(s, None),
                "CreateGroupReplicaWaitForCopyStates": table::create_wait_states(s),
                "Features": features(s),
                "DefaultConsistency": 2,
            })
        })
        .collect();
    json!({
        "Ref": "service:replication",
        "ClassName": "CIM_ReplicationServiceCapabilities",
        "InstanceID": "ironlun:replication-capabilities",
        "ElementName": "ironlun replication",
        "SupportedReplicationTypes": supported_types().into_iter().map(|(s, m, r)| replication_type(s, m, r)).collect::<Vec<_>>(),
        "SupportedStorageObjects": [2],
        // 3 CreateGroupReplica, 5 ModifyReplicaSynchronization (may return a job); 12..15
        // the group methods (never do).
        "SupportedSynchronousActions": [3, 5, 12, 13, 14, 15],
        "SupportedAsynchronousActions": [3, 5],
        "SupportedConsistency": [2],
        "GroupFeatures": GROUP_FEATURES,
        "ReplicationTypes": types,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes() {
        assert_eq!(cim_datetime(0), "19700101000000.000000+000");
        assert_eq!(cim_datetime(1_795_269_546), "20261121135906.000000+000");
        assert_eq!(cim_datetime(951_782_400), "20000229000000.000000+000");
        assert_eq!(interval(23 * 60), "00000000002300.000000:000");
    }
}
