//! The persisted catalog of the replication service: volumes, groups, relationships and
//! group relationships, written atomically to `state.json` on every change.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::types::{CopyState, Mode, ProgressStatus, SyncType};

/// What a volume is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum VolumeKind {
    /// A volume from the configuration file (its image belongs to the configuration).
    Configured,
    /// A volume created through the admin socket.
    Created,
    /// The target of a relationship.
    Replica {
        /// The relationship.
        sync: u64,
    },
    /// A former replica, independent since Detach or Dissolve.
    Independent,
    /// A LUN of a remote target (a remote mirror's target), reached through an access point.
    Remote {
        /// The access point.
        access_point: String,
    },
}

/// How a volume is exported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    /// Target IQN.
    pub target: String,
    /// LUN number.
    pub lun: u16,
    /// Read-only export.
    pub read_only: bool,
}

/// A volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRec {
    /// Name.
    pub name: String,
    /// Image path (for snapshots, the copy-on-write store).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Logical block size.
    pub block_size: u32,
    /// Pool it was allocated from.
    pub pool: Option<String>,
    /// What it is.
    pub kind: VolumeKind,
    /// Where it is exported.
    #[serde(default)]
    pub exposures: Vec<Exposure>,
    /// Stable 64-bit identity (NAA designator).
    pub uid: u64,
    /// The SCSI identity it is exported with when it is not its own: the secondary copy of
    /// an HA pair carries the primary's NAA designator and serial number.
    #[serde(default)]
    pub identity: Option<super::peer::Identity>,
}

/// A replication group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRec {
    /// Name.
    pub name: String,
    /// Member volumes, in order.
    pub members: Vec<String>,
}

/// A relationship between a source volume and a target volume (CIM_StorageSynchronized).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRec {
    /// Id (`sync:<id>`).
    pub id: u64,
    /// SyncType.
    pub sync_type: SyncType,
    /// Mode.
    pub mode: Mode,
    /// Source volume.
    pub source: String,
    /// Target volume.
    pub target: String,
    /// CopyState.
    pub state: CopyState,
    /// RequestedCopyState (15 when reached).
    pub requested: CopyState,
    /// ProgressStatus.
    pub progress: ProgressStatus,
    /// PercentSynced.
    pub percent: u16,
    /// The group relationship it belongs to.
    pub group_sync: Option<u64>,
    /// WhenEstablished (seconds since the epoch).
    pub established: u64,
    /// WhenSynced / point in time (seconds since the epoch).
    pub synced: Option<u64>,
    /// WhenActivated.
    pub activated: Option<u64>,
    /// CopyPriority (0 not managed, 1 low, 2 same, 3 high, 4 urgent).
    pub copy_priority: u16,
    /// CopyRecoveryMode (2 automatic, 3 manual).
    pub recovery_mode: u16,
    /// Chunks copied by the last copy of this relationship.
    #[serde(default)]
    pub last_copy_chunks: u64,
    /// A Restore (or Failback) is in progress and resumes after a restart.
    #[serde(default)]
    pub restoring: bool,
    /// WhenDeactivated.
    #[serde(default)]
    pub deactivated: Option<u64>,
    /// WhenSuspended (also set by Fracture and Split).
    #[serde(default)]
    pub suspended: Option<u64>,
    /// The target is on a peer ironlun server that knows the relationship (an HA pair).
    #[serde(default)]
    pub peer: Option<super::peer::PeerLink>,
}

/// What Dissolve leaves behind (CIM_SynchronizationAspect, reached from the source through
/// CIM_SettingsDefineState): the source, the point in time and the former target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AspectRec {
    /// Id (`aspect:<id>`).
    pub id: u64,
    /// The source element (the SettingsDefineState's ManagedElement).
    pub source: String,
    /// The former target.
    pub target: String,
    /// SyncType of the dissolved relationship.
    pub sync_type: SyncType,
    /// WhenPointInTime (seconds since the epoch).
    pub point_in_time: Option<u64>,
    /// ConsistencyEnabled of its group relationship.
    pub consistency: bool,
}

/// A relationship between a source group and a target group (CIM_GroupSynchronized).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSyncRec {
    /// Id (`sync:<id>`).
    pub id: u64,
    /// RelationshipName.
    pub name: String,
    /// SyncType.
    pub sync_type: SyncType,
    /// Mode.
    pub mode: Mode,
    /// Source group (`None` for a source element with several targets).
    pub source_group: Option<String>,
    /// Target group.
    pub target_group: String,
    /// ConsistencyEnabled.
    pub consistency: bool,
    /// Member relationships.
    pub members: Vec<u64>,
    /// WhenEstablished.
    pub established: u64,
}

/// The whole catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Format version of this file.
    pub version: u32,
    /// Volumes.
    pub volumes: BTreeMap<String, VolumeRec>,
    /// Groups.
    pub groups: BTreeMap<String, GroupRec>,
    /// Relationships.
    pub syncs: BTreeMap<u64, SyncRec>,
    /// Group relationships.
    pub group_syncs: BTreeMap<u64, GroupSyncRec>,
    /// Synchronization aspects left by Dissolve.
    #[serde(default)]
    pub aspects: BTreeMap<u64, AspectRec>,
    /// Remote targets (service access points).
    #[serde(default)]
    pub access_points: BTreeMap<String, super::remote::AccessPointRec>,
    /// Relationships whose source is on a peer ironlun server and whose target is here (the
    /// secondary side of an HA pair).
    #[serde(default)]
    pub peers: BTreeMap<u64, super::peer::PeerRec>,
    /// This server's identity among HA peers (made once).
    #[serde(default)]
    pub system_id: String,
    /// Next id for relationships, groups and jobs.
    pub next_id: u64,
    /// The last run stopped cleanly (bitmaps saved, activity logs cleared).
    pub clean: bool,
}

/// Current format version of `state.json`.
pub const CATALOG_VERSION: u32 = 1;

impl Catalog {
    /// Load, or an empty catalog when the file is missing.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                version: CATALOG_VERSION,
                next_id: 1,
                clean: true,
                ..Self::default()
            }),
            Err(e) => Err(e),
        }
    }

    /// Save atomically and durably.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let data = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::bitmap::write_atomic(path, &data)
    }

    /// A fresh id.
    pub fn alloc_id(&mut self) -> u64 {
        let id = self.next_id.max(1);
        self.next_id = id + 1;
        id
    }
}
