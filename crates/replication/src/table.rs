//! The state machine of ModifyReplicaSynchronization in one table
//! (shared/spec/smis-replication.md section 5.2): for each operation and SyncType, the
//! CopyStates it is accepted in, its ProgressStatus while it runs, and where it ends.
//!
//! ```text
//!  create ──► Unsynchronized(3) ──copy──► Synchronized(4) ◄──────────────┐
//!                  │  ▲                       │  │   │   │               │
//!            Abort │  │Resync/Activate  Split │  │   │   └─Suspend─► Suspended(9)─Resume─┘
//!                  ▼  │                       ▼  │   └─Failover─► Failedover(10)─Failback─┘
//!             Aborted(12)                 Split(7)/Fractured(6) ─Resync/Restore─► (copy) ─► 4
//!  any ──I/O error or no space──► Broken(5) ──Resync──► (copy) ──► 4
//!  Detach / Dissolve / ReturnToResourcePool ──► association deleted
//! ```
//!
//! The same table answers validation, `GetSupportedOperations` and
//! `GetSupportedCopyStates`, so what is advertised is what is enforced.

use crate::types::{CopyState, Operation, ProgressStatus, SyncType};

use CopyState::*;

/// Where an operation leaves the association.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Directly this CopyState.
    State(CopyState),
    /// A copy runs (CopyState Unsynchronized), then Synchronized.
    CopyThenSynchronized,
    /// The CopyState does not change (mode and consistency changes).
    Unchanged,
    /// The association is deleted; the target stays as an independent volume.
    Deleted,
    /// The association and the target volume are deleted (space returned to the pool).
    DeletedWithTarget,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Transition {
    /// The operation.
    pub op: Operation,
    /// The SyncType it applies to.
    pub sync: SyncType,
    /// States the operation is accepted in.
    pub from: &'static [CopyState],
    /// Of those, states where it needs `Force` (it may leave an inconsistent target).
    pub force: &'static [CopyState],
    /// ProgressStatus while it runs.
    pub during: ProgressStatus,
    /// The result.
    pub to: Outcome,
}

/// Why an operation is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The operation does not apply to this SyncType (return 1).
    NotSupported,
    /// Not valid in the current CopyState (return 5, naming the state).
    InvalidState(CopyState),
    /// Valid only with Force in this state (return 5).
    NeedsForce(CopyState),
}

const STABLE: &[CopyState] = &[
    Synchronized,
    Fractured,
    Split,
    Inactive,
    Suspended,
    Broken,
    Aborted,
    Skewed,
    Prepared,
];

/// The table.
pub static TABLE: &[Transition] = rows::TABLE;

mod rows {
    use super::{CopyState::*, Outcome, Transition};
    use crate::types::{Operation, ProgressStatus, SyncType};
    use Outcome::{CopyThenSynchronized as CopySync, Deleted, DeletedWithTarget, State, Unchanged};

    macro_rules! t {
        ($op:ident, $sync:ident, [$($from:ident),*], [$($force:ident),*], $during:ident, $to:expr) => {
            Transition {
                op: Operation::$op,
                sync: SyncType::$sync,
                from: &[$($from),*],
                force: &[$($force),*],
                during: ProgressStatus::$during,
                to: $to,
            }
        };
    }

    #[rustfmt::skip]
pub(super) static TABLE: &[Transition] = &[
    // ---- Mirror ----
    t!(Abort, Mirror, [Unsynchronized, Initialized, Prepared], [], Aborting, State(Aborted)),
    t!(ActivateConsistency, Mirror, [Initialized, Unsynchronized, Synchronized, Fractured, Split, Inactive, Suspended, Failedover, Prepared, Broken, Aborted], [], Completed, Unchanged),
    t!(DeactivateConsistency, Mirror, [Initialized, Unsynchronized, Synchronized, Fractured, Split, Inactive, Suspended, Failedover, Prepared, Broken, Aborted], [], Completed, Unchanged),
    t!(Activate, Mirror, [Inactive, Prepared, Initialized], [], Synchronizing, CopySync),
    t!(Deactivate, Mirror, [Unsynchronized, Synchronized], [], Dormant, State(Inactive)),
    t!(Detach, Mirror, [Synchronized, Fractured, Split, Suspended, Failedover, Broken, Inactive, Aborted, Prepared, Partitioned], [Synchronized, Suspended, Failedover, Broken, Inactive, Aborted, Prepared, Partitioned], Detaching, Deleted),
    t!(Dissolve, Mirror, [Synchronized, Fractured, Split, Suspended, Inactive, Broken, Aborted, Partitioned], [], Terminating, Deleted),
    t!(Failover, Mirror, [Synchronized, Suspended, Fractured, Split, Broken, Partitioned], [], FailingOver, State(Failedover)),
    t!(Failback, Mirror, [Failedover], [], FailingBack, CopySync),
    t!(Fracture, Mirror, [Synchronized, Suspended, Unsynchronized, Partitioned], [Unsynchronized], Fracturing, State(Fractured)),
    t!(ResyncReplica, Mirror, [Fractured, Split, Broken, Aborted, Suspended, Skewed, Inactive, Partitioned], [], Resyncing, CopySync),
    t!(RestoreFromReplica, Mirror, [Fractured, Split], [], Restoring, CopySync),
    t!(Resume, Mirror, [Suspended], [], Resyncing, CopySync),
    t!(ResetToSync, Mirror, [Unsynchronized, Synchronized], [], Synchronizing, Unchanged),
    t!(ResetToAsync, Mirror, [Unsynchronized, Synchronized], [], Completed, Unchanged),
    t!(ReverseRoles, Mirror, [Synchronized, Fractured, Split], [], Completed, Unchanged),
    t!(Split, Mirror, [Synchronized], [], Splitting, State(Split)),
    t!(Suspend, Mirror, [Unsynchronized, Synchronized, Partitioned], [], Suspending, State(Suspended)),
    t!(Prepare, Mirror, [Synchronized, Fractured, Split, Inactive, Aborted, Broken], [], Preparing, State(Prepared)),
    t!(Unprepare, Mirror, [Synchronized, Fractured, Split, Inactive, Aborted, Broken], [], Preparing, State(Prepared)),
    t!(AddSyncPair, Mirror, [Synchronized], [], Completed, Unchanged),
    t!(RemoveSyncPair, Mirror, [Initialized, Unsynchronized, Synchronized, Fractured, Split, Inactive, Suspended, Failedover, Prepared, Broken, Aborted, Partitioned], [], Completed, Unchanged),
    // ---- Snapshot ----
    t!(Activate, Snapshot, [Inactive, Prepared], [], Completed, State(Synchronized)),
    t!(ActivateConsistency, Snapshot, [Synchronized, Inactive, Skewed, Broken], [], Completed, Unchanged),
    t!(DeactivateConsistency, Snapshot, [Synchronized, Inactive, Skewed, Broken], [], Completed, Unchanged),
    t!(Deactivate, Snapshot, [Synchronized, Skewed], [], Dormant, State(Inactive)),
    t!(ResyncReplica, Snapshot, [Synchronized, Inactive, Skewed, Broken], [], Completed, State(Synchronized)),
    t!(RestoreFromReplica, Snapshot, [Synchronized, Skewed], [], Restoring, CopySync),
    t!(ReturnToResourcePool, Snapshot, [Synchronized, Inactive, Skewed, Broken, Prepared], [], Terminating, DeletedWithTarget),
    t!(AddSyncPair, Snapshot, [Synchronized, Inactive, Skewed, Broken], [], Completed, Unchanged),
    t!(RemoveSyncPair, Snapshot, [Synchronized, Inactive, Skewed, Broken], [], Completed, Unchanged),
    // ---- Clone ----
    t!(Abort, Clone, [Unsynchronized, Initialized, Prepared, Suspended], [], Aborting, State(Aborted)),
    t!(ActivateConsistency, Clone, [Unsynchronized, Synchronized, Suspended, Inactive, Fractured, Broken, Aborted], [], Completed, Unchanged),
    t!(DeactivateConsistency, Clone, [Unsynchronized, Synchronized, Suspended, Inactive, Fractured, Broken, Aborted], [], Completed, Unchanged),
    t!(Activate, Clone, [Inactive, Prepared, Initialized], [], Synchronizing, CopySync),
    t!(Deactivate, Clone, [Unsynchronized], [], Dormant, State(Inactive)),
    t!(Detach, Clone, [Synchronized, Fractured, Unsynchronized, Suspended, Inactive, Aborted, Broken], [Unsynchronized, Suspended, Inactive, Aborted, Broken], Detaching, Deleted),
    t!(Dissolve, Clone, [Synchronized, Fractured], [], Terminating, Deleted),
    t!(Fracture, Clone, [Synchronized], [], Fracturing, State(Fractured)),
    t!(ResyncReplica, Clone, [Synchronized, Fractured, Aborted, Broken, Skewed], [], Resyncing, CopySync),
    t!(RestoreFromReplica, Clone, [Synchronized, Fractured, Skewed], [], Restoring, CopySync),
    t!(Resume, Clone, [Suspended], [], Synchronizing, CopySync),
    t!(Suspend, Clone, [Unsynchronized], [], Suspending, State(Suspended)),
    t!(AddSyncPair, Clone, [Unsynchronized, Synchronized, Suspended, Inactive, Fractured, Broken, Aborted, Skewed], [], Completed, Unchanged),
    t!(RemoveSyncPair, Clone, [Unsynchronized, Synchronized, Suspended, Inactive, Fractured, Broken, Aborted, Skewed], [], Completed, Unchanged),
];
}

/// Look up and validate an operation.
pub fn check(
    op: Operation,
    sync: SyncType,
    state: CopyState,
    force: bool,
) -> Result<&'static Transition, Refusal> {
    let t = TABLE
        .iter()
        .find(|t| t.op == op && t.sync == sync)
        .ok_or(Refusal::NotSupported)?;
    if !t.from.contains(&state) {
        return Err(Refusal::InvalidState(state));
    }
    if t.force.contains(&state) && !force {
        return Err(Refusal::NeedsForce(state));
    }
    Ok(t)
}

/// Operations supported for a SyncType, optionally only those accepted in `state`
/// (`GetSupportedOperations`), with whether they require Force there.
pub fn supported_operations(sync: SyncType, state: Option<CopyState>) -> Vec<(Operation, bool)> {
    TABLE
        .iter()
        .filter(|t| t.sync == sync && state.is_none_or(|s| t.from.contains(&s)))
        .map(|t| (t.op, state.is_some_and(|s| t.force.contains(&s))))
        .collect()
}

/// CopyStates a SyncType can be in, optionally only those `op` is accepted from
/// (`GetSupportedCopyStates`).
pub fn supported_copy_states(sync: SyncType, op: Option<Operation>) -> Vec<CopyState> {
    let mut v: Vec<CopyState> = match op {
        Some(op) => TABLE
            .iter()
            .filter(|t| t.sync == sync && t.op == op)
            .flat_map(|t| t.from.iter().copied())
            .collect(),
        None => {
            let mut v: Vec<CopyState> = STABLE.to_vec();
            v.extend([Unsynchronized, Failedover]);
            if sync == SyncType::Mirror {
                v.push(Partitioned);
            }
            if sync == SyncType::Snapshot {
                v.retain(|s| matches!(s, Synchronized | Inactive | Skewed | Broken | Prepared));
            }
            v
        }
    };
    v.sort();
    v.dedup();
    v
}

/// WaitForCopyState values accepted for CreateGroupReplica of a SyncType.
pub fn create_wait_states(sync: SyncType) -> &'static [CopyState] {
    match sync {
        SyncType::Snapshot => &[Synchronized],
        SyncType::Clone | SyncType::Mirror => &[Unsynchronized, Synchronized],
    }
}

/// WaitForCopyState values an operation can produce (NULL and Not Applicable are always
/// accepted).
pub fn wait_states(t: &Transition) -> Vec<CopyState> {
    match t.to {
        Outcome::State(s) => vec![s],
        Outcome::CopyThenSynchronized => vec![Unsynchronized, Synchronized],
        Outcome::Unchanged => t.from.to_vec(),
        Outcome::Deleted | Outcome::DeletedWithTarget => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_and_sync_type_appears_once() {
        for (i, a) in TABLE.iter().enumerate() {
            for b in &TABLE[i + 1..] {
                assert!(
                    !(a.op == b.op && a.sync == b.sync),
                    "{:?} {:?} twice",
                    a.op,
                    a.sync
                );
            }
            for f in a.force {
                assert!(
                    a.from.contains(f),
                    "{:?}: force states are accepted states",
                    a.op
                );
            }
        }
    }

    #[test]
    fn validation() {
        use Operation::*;
        assert!(check(Fracture, SyncType::Mirror, Synchronized, false).is_ok());
        assert_eq!(
            check(Fracture, SyncType::Mirror, Fractured, false).unwrap_err(),
            Refusal::InvalidState(Fractured)
        );
        assert_eq!(
            check(Fracture, SyncType::Mirror, Unsynchronized, false).unwrap_err(),
            Refusal::NeedsForce(Unsynchronized)
        );
        assert!(check(Fracture, SyncType::Mirror, Unsynchronized, true).is_ok());
        assert_eq!(
            check(Failover, SyncType::Snapshot, Synchronized, false).unwrap_err(),
            Refusal::NotSupported
        );
        assert_eq!(
            check(
                ReturnToResourcePool,
                SyncType::Snapshot,
                Synchronized,
                false
            )
            .unwrap()
            .to,
            Outcome::DeletedWithTarget
        );
        assert_eq!(
            check(Detach, SyncType::Clone, Synchronized, false)
                .unwrap()
                .to,
            Outcome::Deleted
        );
        assert_eq!(
            check(Detach, SyncType::Clone, Unsynchronized, false).unwrap_err(),
            Refusal::NeedsForce(Unsynchronized)
        );
    }

    #[test]
    fn capability_queries_come_from_the_table() {
        let ops = supported_operations(SyncType::Snapshot, None);
        assert!(
            ops.iter()
                .any(|(o, _)| *o == Operation::ReturnToResourcePool)
        );
        assert!(!ops.iter().any(|(o, _)| *o == Operation::Failover));
        let in_failover = supported_operations(SyncType::Mirror, Some(Failedover));
        assert_eq!(
            in_failover,
            vec![
                (Operation::ActivateConsistency, false),
                (Operation::DeactivateConsistency, false),
                (Operation::Detach, true),
                (Operation::Failback, false),
                (Operation::RemoveSyncPair, false),
            ]
        );
        assert_eq!(
            supported_copy_states(SyncType::Mirror, Some(Operation::Split)),
            vec![Synchronized]
        );
    }
}
