//! HA pairs: a remote mirror between two ironlun servers that both know the relationship.
//! This module holds the records, the wire messages and the access states; `primary`
//! is the managing side, `secondary` the side that holds the copy.
//!
//! The server holding the source (the managing side, A) talks to the server holding the
//! target (B) over the iSCSI session its mirror already uses: Text requests in the full
//! feature phase carrying one vendor key, [`PEER_KEY`], whose value is a JSON
//! [`PeerRequest`]; B answers with the same key and a JSON [`PeerReply`]. A target answers
//! only the initiators its configuration lists as `replica_peers`; any other target (tgt)
//! answers NotUnderstood, and the mirror stays a one-way remote mirror.
//!
//! Both servers export the volume under one SCSI identity (A's NAA designator and serial
//! number) with ALUA: the primary's port groups active/optimized, the secondary's standby.
//! The secondary's LU admits the primary's replication initiator whatever its state, and
//! only while it is secondary. Roles move by planned Failover and Failback (run on A), by
//! an unplanned Failover run on B when A is lost, and generation numbers (as DRBD's)
//! decide which side is newer when the link returns: a side that learns that the peer was
//! promoted past it stops serving writes, and if both were written the pair is Broken with
//! `split_brain` set until an administrator picks the winner (Failback: the peer's data;
//! Resync: this side's).

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use blockdev::BlockError;
use serde::{Deserialize, Serialize};

use super::{
    Catalog, ExposedVolume, GroupRec, GroupSyncRec, MethodError, ReplicationService, SyncRec,
    VolumeKind, VolumeRec, jobs::now, new_uid, remote, settings,
};

mod primary;
mod secondary;
use crate::{
    bitmap::Bitmap,
    types::{CopyState, Mode},
    volume::{Volume, Write, WriteHook},
};

/// The Text key of the peer protocol.
pub const PEER_KEY: &str = "X-io.ironlun.Peer";

/// Asymmetric access states (SPC-4 table 272) as the service sets them.
pub mod state {
    /// Active/optimized.
    pub const ACTIVE: u8 = 0x0;
    /// Standby.
    pub const STANDBY: u8 = 0x2;
    /// Unavailable.
    pub const UNAVAILABLE: u8 = 0x3;
    /// Transitioning.
    pub const TRANSITIONING: u8 = 0xf;
}

/// How long a role change waits for host commands admitted under the old state.
const SETTLE: Duration = Duration::from_secs(10);

/// A SCSI identity: NAA designator and unit serial number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// NAA IEEE Registered designator (8 bytes).
    pub naa: [u8; 8],
    /// Unit serial number.
    pub serial: String,
}

/// The access a volume's logical units give, set on every LU that serves it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// State of this server's port groups.
    pub own: u8,
    /// State of the peer's port groups.
    pub peer: u8,
    /// The peer's (relative port, port group) pairs.
    pub peer_groups: Vec<(u16, u16)>,
    /// The peer's replication initiators.
    pub peer_initiators: Vec<String>,
    /// Whether they may write (this server is secondary).
    pub peer_writes: bool,
}

/// What the service needs from the server for HA pairs.
pub trait HaHost: Send + Sync + std::fmt::Debug {
    /// The SCSI identity a volume is exported with.
    fn identity(&self, volume: &str) -> Option<Identity>;
    /// The portal group tags of a target.
    fn portal_groups(&self, target: &str) -> Vec<u16>;
    /// Export a volume now.
    fn expose(&self, v: &ExposedVolume) -> Result<(), String>;
    /// Stop exporting a LUN.
    fn hide(&self, target: &str, lun: u16);
    /// The (target, LUN) pairs exporting a volume.
    fn places(&self, volume: &str) -> Vec<(String, u16)>;
    /// Set the access of every logical unit serving a volume.
    fn set_access(&self, volume: &str, access: &Access);
    /// Wait until no command admitted under the previous access is running.
    fn settle(&self, volume: &str, timeout: Duration) -> bool;
}

/// The managing side's view of an HA pair (in the relationship's record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLink {
    /// The peer's system id.
    pub system: String,
    /// The peer's id of the relationship.
    pub remote: u64,
    /// The peer's (relative port, port group) pairs.
    pub groups: Vec<(u16, u16)>,
    /// The generation of the current roles.
    pub generation: u64,
    /// The peer holds the primary copy (after a Failover).
    pub peer_primary: bool,
    /// Both sides were written while apart.
    #[serde(default)]
    pub split_brain: bool,
}

/// The secondary side of an HA pair: a relationship whose source is on the peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRec {
    /// Id (`sync:<id>` on this server).
    pub id: u64,
    /// The local volume holding the copy.
    pub volume: String,
    /// Where the peer writes it.
    pub target: String,
    /// LUN.
    pub lun: u16,
    /// The source server's system id.
    pub source_system: String,
    /// The source volume's name there.
    pub source_volume: String,
    /// The relationship's id there.
    pub source_sync: u64,
    /// Mode.
    pub mode: Mode,
    /// The source server's replication initiator.
    pub initiator: String,
    /// The source server's (relative port, port group) pairs.
    pub groups: Vec<(u16, u16)>,
    /// The generation of the current roles.
    pub generation: u64,
    /// This copy is the primary (after a Failover).
    pub primary: bool,
    /// WhenEstablished.
    pub established: u64,
}

/// A request of the peer protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum PeerRequest {
    /// Who are you.
    Hello {
        /// The sender's system id.
        system: String,
    },
    /// The LUN this session writes is the target of a relationship: take the source's
    /// identity and become its standby copy.
    Attach {
        /// The source server.
        system: String,
        /// Its relationship id.
        sync: u64,
        /// Its source volume.
        volume: String,
        /// The target's LUN (on the session's target).
        lun: u16,
        /// The source's size.
        size: u64,
        /// Its block size.
        block_size: u32,
        /// Its SCSI identity.
        identity: Identity,
        /// Mode.
        mode: Mode,
        /// Its (relative port, port group) pairs.
        groups: Vec<(u16, u16)>,
        /// Generation.
        generation: u64,
    },
    /// The copy's role and changes.
    State {
        /// The relationship (the peer's id).
        remote: u64,
    },
    /// Become primary.
    Promote {
        /// The relationship.
        remote: u64,
        /// The new generation.
        generation: u64,
    },
    /// Become secondary again (hosts' commands drain first).
    Demote {
        /// The relationship.
        remote: u64,
        /// The generation.
        generation: u64,
    },
    /// Chunks written while primary, from chunk `from`.
    Dirty {
        /// The relationship.
        remote: u64,
        /// First chunk.
        from: u64,
    },
    /// The source has recorded the changes: forget them.
    Clean {
        /// The relationship.
        remote: u64,
    },
    /// Reverse Roles: this (primary) copy becomes the source of a mirror to the sender's
    /// volume, which becomes the secondary. With `check`, only say whether it can (and with
    /// which initiator it will write).
    Reverse {
        /// The relationship.
        remote: u64,
        /// Only check.
        check: bool,
        /// The sender's target and LUN exporting its volume.
        target: String,
        /// LUN.
        lun: u16,
        /// The sender's system id.
        system: String,
        /// Its (relative port, port group) pairs.
        groups: Vec<(u16, u16)>,
        /// The generation.
        generation: u64,
        /// Chunk ranges the sender changed that this copy lacks.
        ranges: Vec<(u64, u64)>,
        /// The sender lost track: copy everything.
        full: bool,
        /// The sender's id of the relationship it keeps as the secondary.
        peer_id: u64,
    },
    /// The relationship ends: the copy becomes an independent volume with its own identity.
    Detach {
        /// The relationship.
        remote: u64,
    },
}

/// The answer to a [`PeerRequest`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PeerReply {
    /// Why the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The answering system.
    #[serde(default)]
    pub system: String,
    /// The relationship's id there.
    #[serde(default)]
    pub remote: u64,
    /// Its (relative port, port group) pairs.
    #[serde(default)]
    pub groups: Vec<(u16, u16)>,
    /// Generation.
    #[serde(default)]
    pub generation: u64,
    /// It holds the primary copy.
    #[serde(default)]
    pub primary: bool,
    /// Chunks written while primary.
    #[serde(default)]
    pub dirty_chunks: u64,
    /// Chunk ranges (first, last) written while primary.
    #[serde(default)]
    pub ranges: Vec<(u64, u64)>,
    /// The next chunk to ask for, if more ranges remain.
    #[serde(default)]
    pub next: Option<u64>,
    /// The initiator name it writes to its peer with (Reverse).
    #[serde(default)]
    pub initiator: String,
    /// The volume holding its copy.
    #[serde(default)]
    pub volume: String,
}

/// Ranges per Dirty page (each at most ~44 bytes of JSON: well under the 8 KiB value).
const RANGES_PER_PAGE: usize = 150;

/// Records the chunks written to a secondary copy while it is primary, durably before the
/// write is issued (the first write to a chunk saves the bitmap).
#[derive(Debug)]
pub(crate) struct PeerTrack {
    primary: AtomicBool,
    dirty: Mutex<Bitmap>,
    path: PathBuf,
}

impl PeerTrack {
    fn open(path: PathBuf, chunks: u64, primary: bool) -> std::io::Result<Arc<Self>> {
        let dirty = Bitmap::load(&path)?
            .filter(|b| b.len() == chunks)
            .unwrap_or_else(|| Bitmap::new(chunks));
        Ok(Arc::new(Self {
            primary: AtomicBool::new(primary),
            dirty: Mutex::new(dirty),
            path,
        }))
    }

    fn bitmap(&self) -> std::sync::MutexGuard<'_, Bitmap> {
        self.dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn clear(&self) -> std::io::Result<()> {
        let mut b = self.bitmap();
        b.clear_all();
        b.save(&self.path)
    }
}

impl WriteHook for PeerTrack {
    fn prepare(&self, vol: &Volume, w: &Write<'_>) -> blockdev::Result<()> {
        if !self.primary.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut b = self.bitmap();
        let mut new = false;
        for c in w.chunks() {
            new |= b.set(c);
        }
        if new {
            b.save(&self.path)
                .map_err(|e| BlockError::io(e, format!("change map of {}", vol.name)))?;
        }
        Ok(())
    }
}

fn ranges(b: &Bitmap, from: u64) -> (Vec<(u64, u64)>, Option<u64>) {
    let mut out = Vec::new();
    let mut c = from;
    while let Some(first) = b.next_set(c) {
        if out.len() == RANGES_PER_PAGE {
            return (out, Some(first));
        }
        let mut last = first;
        while last + 1 < b.len() && b.get(last + 1) {
            last += 1;
        }
        out.push((first, last));
        c = last + 1;
    }
    (out, None)
}

/// A relationship and, for an HA pair, its link to the peer.
fn ha_pair(cat: &Catalog, id: u64) -> Result<Option<(SyncRec, PeerLink)>, MethodError> {
    let s = cat
        .syncs
        .get(&id)
        .ok_or_else(|| MethodError::failed("no such pair"))?;
    Ok(s.peer.clone().map(|l| (s.clone(), l)))
}

/// Active/optimized or standby.
fn state_of(active: bool) -> u8 {
    if active {
        state::ACTIVE
    } else {
        state::STANDBY
    }
}

fn reply_error(msg: impl Into<String>) -> PeerReply {
    PeerReply {
        error: Some(msg.into()),
        ..PeerReply::default()
    }
}

impl ReplicationService {
    /// Connect the service to the server that exports its volumes, and give every volume of
    /// an HA pair its access (at start, once the LUNs exist).
    pub fn set_ha_host(self: &Arc<Self>, host: Arc<dyn HaHost>) {
        let _ = self.ha.set(host);
        let cat = self.cat();
        for p in cat.peers.values() {
            self.apply_secondary_access(p);
        }
        for s in cat.syncs.values() {
            if let Some(l) = &s.peer {
                self.apply_primary_access(&s.source, l);
            }
        }
    }

    fn host(&self) -> Option<&Arc<dyn HaHost>> {
        self.ha.get()
    }

    /// This server's system id (made once, persisted).
    pub(crate) fn system_id(&self, cat: &mut Catalog) -> String {
        if cat.system_id.is_empty() {
            cat.system_id = format!("{:016x}", new_uid("system", 0));
            self.save(cat);
        }
        cat.system_id.clone()
    }

    /// Access of the source side's LUs (the managing side).
    fn apply_primary_access(&self, volume: &str, l: &PeerLink) {
        let Some(host) = self.host() else { return };
        let fenced = l.peer_primary || l.split_brain;
        host.set_access(
            volume,
            &Access {
                own: state_of(!fenced),
                peer: state_of(l.peer_primary),
                peer_groups: l.groups.clone(),
                peer_initiators: Vec::new(),
                peer_writes: false,
            },
        );
    }

    /// Access of the secondary side's LUs.
    fn apply_secondary_access(&self, p: &PeerRec) {
        let Some(host) = self.host() else { return };
        host.set_access(
            &p.volume,
            &Access {
                own: state_of(p.primary),
                peer: state_of(!p.primary),
                peer_groups: p.groups.clone(),
                peer_initiators: vec![p.initiator.clone()],
                peer_writes: !p.primary,
            },
        );
    }

    /// Re-open the change maps of the secondary copies (at start).
    pub(crate) fn reopen_peers(&self, cat: &Catalog) {
        for p in cat.peers.values() {
            if let Err(e) = self.install_track(p) {
                tracing::error!(sync = p.id, error = %e, "HA copy: change map unusable");
            }
        }
    }

    fn install_track(&self, p: &PeerRec) -> Result<Arc<PeerTrack>, String> {
        let vol = self
            .volume(&p.volume)
            .ok_or_else(|| format!("volume {} is not open", p.volume))?;
        let track = PeerTrack::open(
            self.path(&format!("peer-{}.dirty", p.id)),
            vol.chunk_count(),
            p.primary,
        )
        .map_err(|e| format!("change map: {e}"))?;
        vol.add_hook(track.clone());
        self.rt().peer_tracks.insert(p.id, track.clone());
        Ok(track)
    }

    /// Chunks a secondary copy has changed while primary.
    pub fn peer_dirty_chunks(&self, id: u64) -> Option<u64> {
        self.track(id).map(|t| t.bitmap().count())
    }

    fn track(&self, id: u64) -> Option<Arc<PeerTrack>> {
        self.rt().peer_tracks.get(&id).cloned()
    }

    /// Make a secondary copy primary (its writes tracked) or secondary again, at a
    /// generation at least `generation`, with the access that goes with it; persisted.
    fn set_role(&self, cat: &mut Catalog, p: &mut PeerRec, primary: bool, generation: u64) {
        if let Some(t) = self.track(p.id) {
            t.primary.store(primary, Ordering::Release);
        }
        p.primary = primary;
        p.generation = p.generation.max(generation);
        self.apply_secondary_access(p);
        cat.peers.insert(p.id, p.clone());
        self.save(cat);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_ranges_page() {
        let mut b = Bitmap::new(10_000);
        for c in (0..10_000).step_by(3) {
            b.set(c);
        }
        b.set_range(9_990, 10_000);
        let mut all = Bitmap::new(10_000);
        let mut from = 0;
        let mut pages = 0;
        loop {
            let (r, next) = ranges(&b, from);
            assert!(r.len() <= RANGES_PER_PAGE);
            for (f, l) in r {
                all.set_range(f, l + 1);
            }
            pages += 1;
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
        assert!(pages > 10);
        assert_eq!(all.count(), b.count());
        assert!((0..10_000).all(|c| all.get(c) == b.get(c)));
        let reply = PeerReply {
            ranges: ranges(&b, 0).0,
            ..PeerReply::default()
        };
        assert!(serde_json::to_string(&reply).unwrap().len() < 8192);
    }
}
