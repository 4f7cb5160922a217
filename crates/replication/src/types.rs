//! The SMI-S replication vocabulary with its exact wire numbers
//! (shared/spec/smis-replication.md section 2): SyncType, Mode, CopyState, Operation,
//! ProgressStatus, ReplicationType, CopyType, SyncState and job states.

use serde::{Deserialize, Serialize};

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $n:expr,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(into = "u16", try_from = "u16")]
        pub enum $name { $($(#[$vm])* $v = $n,)* }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [Self] = &[$(Self::$v,)*];

            /// The wire value.
            pub fn code(self) -> u16 {
                self as u16
            }

            /// The value for a wire number, if defined.
            pub fn from_code(n: u16) -> Option<Self> {
                match n { $($n => Some(Self::$v),)* _ => None }
            }
        }

        impl From<$name> for u16 {
            fn from(v: $name) -> u16 {
                v as u16
            }
        }

        impl TryFrom<u16> for $name {
            type Error = String;
            fn try_from(n: u16) -> Result<Self, String> {
                Self::from_code(n).ok_or_else(|| format!("{} has no value {n}", stringify!($name)))
            }
        }
    };
}

wire_enum! {
    /// `SyncType` (section 2.1).
    SyncType {
        /// Mirror: a full copy kept in sync.
        Mirror = 6,
        /// Snapshot: a point-in-time virtual copy (copy-on-write).
        Snapshot = 7,
        /// Clone: a point-in-time full copy.
        Clone = 8,
    }
}

wire_enum! {
    /// `Mode` (section 2.2).
    Mode {
        /// Acknowledged when source and target have the write.
        Synchronous = 2,
        /// Acknowledged after the source; the target follows in order.
        Asynchronous = 3,
    }
}

wire_enum! {
    /// `CopyState` (section 2.5).
    CopyState {
        /// Associated, no data flow yet.
        Initialized = 2,
        /// A copy is in progress.
        Unsynchronized = 3,
        /// The target is a copy of the source (or of the PIT).
        Synchronized = 4,
        /// Non-functional: I/O errors or no space.
        Broken = 5,
        /// Target split from the source.
        Fractured = 6,
        /// Target split with consistency guaranteed.
        Split = 7,
        /// Data flow stopped.
        Inactive = 8,
        /// Data flow stopped; writes held (tracked) until Resume.
        Suspended = 9,
        /// The target is in use as the source.
        Failedover = 10,
        /// Initialization done, data flow not started.
        Prepared = 11,
        /// Aborted; Resync restarts it.
        Aborted = 12,
        /// The target was modified and no longer matches.
        Skewed = 13,
        /// Group only: members differ.
        Mixed = 14,
        /// Not applicable.
        NotApplicable = 15,
        /// State unknown (connection problem).
        Partitioned = 16,
        /// State unknown after reconnect.
        Invalid = 17,
        /// The source was restored from the target.
        Restored = 18,
    }
}

wire_enum! {
    /// `Operation` of ModifyReplicaSynchronization (section 2.4).
    Operation {
        /// Abort a copy.
        Abort = 2,
        /// Enable consistency.
        ActivateConsistency = 3,
        /// Activate an inactive or prepared association.
        Activate = 4,
        /// Add pairs to the groups.
        AddSyncPair = 5,
        /// Disable consistency.
        DeactivateConsistency = 6,
        /// Stop the data flow.
        Deactivate = 7,
        /// Forget the association; both become independent.
        Detach = 8,
        /// Dissolve; the target remains.
        Dissolve = 9,
        /// Use the target as the source.
        Failover = 10,
        /// Undo a failover.
        Failback = 11,
        /// Suspend with change tracking.
        Fracture = 12,
        /// Remove pairs from the groups.
        RemoveSyncPair = 13,
        /// Re-establish synchronization.
        ResyncReplica = 14,
        /// Renew the source from the replica.
        RestoreFromReplica = 15,
        /// Continue a suspended copy.
        Resume = 16,
        /// Mode to synchronous.
        ResetToSync = 17,
        /// Mode to asynchronous.
        ResetToAsync = 18,
        /// Delete a snapshot and return its space.
        ReturnToResourcePool = 19,
        /// Swap source and target.
        ReverseRoles = 20,
        /// Fracture at a consistent point.
        Split = 21,
        /// Stop the copy; track writes.
        Suspend = 22,
        /// Reinitialize (deprecated alias of Prepare).
        Unprepare = 23,
        /// Reinitialize, ending in Prepared.
        Prepare = 24,
    }
}

wire_enum! {
    /// `ProgressStatus` (section 2.6).
    ProgressStatus {
        /// Unknown.
        Unknown = 0,
        /// Completed, data flow idle.
        Completed = 2,
        /// Inactive, suspended or quiesced.
        Dormant = 3,
        /// Initializing.
        Initializing = 4,
        /// Preparing.
        Preparing = 5,
        /// Synchronizing.
        Synchronizing = 6,
        /// Resyncing.
        Resyncing = 7,
        /// Restoring.
        Restoring = 8,
        /// Fracturing.
        Fracturing = 9,
        /// Splitting.
        Splitting = 10,
        /// Failing over.
        FailingOver = 11,
        /// Failing back.
        FailingBack = 12,
        /// Aborting.
        Aborting = 13,
        /// Group members differ.
        Mixed = 14,
        /// Not applicable.
        NotApplicable = 15,
        /// Suspending.
        Suspending = 16,
        /// Flow stopped momentarily.
        Pending = 20,
        /// Detaching.
        Detaching = 21,
        /// Terminating.
        Terminating = 23,
    }
}

wire_enum! {
    /// `JobState` of CIM_ConcreteJob (section 2.13).
    JobState {
        /// New.
        New = 2,
        /// Starting.
        Starting = 3,
        /// Running.
        Running = 4,
        /// Completed.
        Completed = 7,
        /// Terminated.
        Terminated = 8,
        /// Exception.
        Exception = 10,
    }
}

wire_enum! {
    /// `CopyType` of CIM_StorageSynchronized (section 2.8).
    CopyType {
        /// Asynchronous mirror.
        Async = 2,
        /// Synchronous mirror.
        Sync = 3,
        /// Unsynchronized, associated (snapshot, associated clone).
        UnSyncAssoc = 4,
        /// Unsynchronized, unassociated (independent clone).
        UnSyncUnAssoc = 5,
    }
}

wire_enum! {
    /// Legacy `SyncState` of CIM_StorageSynchronized (section 2.7), derived from CopyState.
    SyncState {
        /// Unknown.
        Unknown = 0,
        /// Initialized.
        Initialized = 2,
        /// Prepared.
        Prepared = 4,
        /// Resync in progress.
        ResyncInProgress = 5,
        /// Synchronized.
        Synchronized = 6,
        /// Restore in progress.
        RestoreInProgress = 10,
        /// Idle (a snapshot's normal state).
        Idle = 11,
        /// Broken.
        Broken = 12,
        /// Fractured.
        Fractured = 13,
        /// Frozen.
        Frozen = 14,
        /// Copy in progress.
        CopyInProgress = 15,
    }
}

/// Return values of the replication methods (section 1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u32")]
pub enum ReturnCode {
    /// Completed with no error.
    Completed = 0,
    /// Not supported.
    NotSupported = 1,
    /// Unknown / unspecified error.
    Unknown = 2,
    /// Timeout.
    Timeout = 3,
    /// Failed.
    Failed = 4,
    /// Invalid parameter.
    InvalidParameter = 5,
    /// In use.
    InUse = 6,
    /// Method-specific 7 of the group methods: DeleteGroup "One or more elements in a
    /// replication relationship", AddMembers and RemoveMembers "Group does not exist".
    GroupMethod7 = 7,
    /// Method-specific 8: RemoveMembers "Member not in group".
    GroupMethod8 = 8,
    /// Method parameters checked - job started.
    JobStarted = 4096,
}

impl From<ReturnCode> for u32 {
    fn from(r: ReturnCode) -> Self {
        r as Self
    }
}

/// `ReplicationType` (section 2.10): `2 + 4 (SyncType - 6) + 2 remote + (Mode - 2)`.
pub fn replication_type(sync: SyncType, mode: Mode, remote: bool) -> u16 {
    2 + 4 * (sync.code() - 6) + 2 * u16::from(remote) + (mode.code() - 2)
}

/// The inverse of [`replication_type`].
pub fn from_replication_type(rt: u16) -> Option<(SyncType, Mode, bool)> {
    if !(2..=13).contains(&rt) {
        return None;
    }
    let x = rt - 2;
    let sync = SyncType::from_code(6 + x / 4)?;
    let remote = (x % 4) / 2 == 1;
    let mode = Mode::from_code(2 + x % 2)?;
    Some((sync, mode, remote))
}

/// The CopyType of a relationship.
pub fn copy_type(sync: SyncType, mode: Mode) -> CopyType {
    match (sync, mode) {
        (SyncType::Mirror, Mode::Synchronous) => CopyType::Sync,
        (SyncType::Mirror, Mode::Asynchronous) => CopyType::Async,
        _ => CopyType::UnSyncAssoc,
    }
}

/// The legacy SyncState matching a CopyState.
pub fn sync_state(sync: SyncType, state: CopyState) -> SyncState {
    match (sync, state) {
        (SyncType::Snapshot, CopyState::Synchronized) => SyncState::Idle,
        (SyncType::Clone, CopyState::Unsynchronized) => SyncState::CopyInProgress,
        (_, CopyState::Synchronized) => SyncState::Synchronized,
        (_, CopyState::Unsynchronized) => SyncState::ResyncInProgress,
        (_, CopyState::Initialized) => SyncState::Initialized,
        (_, CopyState::Prepared) => SyncState::Prepared,
        (_, CopyState::Broken) => SyncState::Broken,
        (_, CopyState::Fractured | CopyState::Split) => SyncState::Fractured,
        (_, CopyState::Inactive | CopyState::Suspended) => SyncState::Frozen,
        _ => SyncState::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_numbers() {
        assert_eq!(SyncType::Snapshot.code(), 7);
        assert_eq!(CopyState::Failedover.code(), 10);
        assert_eq!(Operation::ReturnToResourcePool.code(), 19);
        assert_eq!(Operation::from_code(26), None);
        assert_eq!(ProgressStatus::Detaching.code(), 21);
        assert_eq!(u32::from(ReturnCode::JobStarted), 4096);
        assert_eq!(serde_json::to_string(&CopyState::Split).unwrap(), "7");
        assert_eq!(
            serde_json::from_str::<Mode>("3").unwrap(),
            Mode::Asynchronous
        );
        assert!(serde_json::from_str::<Mode>("4").is_err());
    }

    #[test]
    fn replication_type_closed_form() {
        assert_eq!(
            replication_type(SyncType::Mirror, Mode::Synchronous, false),
            2
        );
        assert_eq!(
            replication_type(SyncType::Mirror, Mode::Asynchronous, true),
            5
        );
        assert_eq!(
            replication_type(SyncType::Snapshot, Mode::Synchronous, false),
            6
        );
        assert_eq!(
            replication_type(SyncType::Clone, Mode::Asynchronous, false),
            11
        );
        for rt in 2..=13 {
            let (s, m, r) = from_replication_type(rt).unwrap();
            assert_eq!(replication_type(s, m, r), rt);
        }
        assert_eq!(from_replication_type(14), None);
    }
}
