//! HA pairs: a remote mirror between two ironlun servers that both know the relationship.
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

use super::{ExposedVolume, MethodError, ReplicationService, jobs::now};
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
fn ha_pair(
    cat: &super::Catalog,
    id: u64,
) -> Result<Option<(super::SyncRec, PeerLink)>, MethodError> {
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
    pub(crate) fn system_id(&self, cat: &mut super::Catalog) -> String {
        if cat.system_id.is_empty() {
            cat.system_id = format!("{:016x}", super::new_uid("system", 0));
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
    pub(crate) fn reopen_peers(&self, cat: &super::Catalog) {
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
    fn set_role(&self, cat: &mut super::Catalog, p: &mut PeerRec, primary: bool, generation: u64) {
        if let Some(t) = self.track(p.id) {
            t.primary.store(primary, Ordering::Release);
        }
        p.primary = primary;
        p.generation = p.generation.max(generation);
        self.apply_secondary_access(p);
        cat.peers.insert(p.id, p.clone());
        self.save(cat);
    }

    /// Serve one request of the peer protocol from `initiator` on `target` (the server has
    /// checked that the initiator is one of the target's replica peers).
    pub fn peer_request(self: &Arc<Self>, initiator: &str, target: &str, text: &str) -> String {
        let mut resume = None;
        let reply = match serde_json::from_str::<PeerRequest>(text) {
            Ok(req) => self.serve_peer(initiator, target, req, &mut resume),
            Err(e) => reply_error(format!("not a peer request: {e}")),
        };
        // A reversed pair copies what differs (after the locks are released).
        if let Some(id) = resume {
            self.resume_copy(id);
        }
        serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into())
    }

    fn serve_peer(
        self: &Arc<Self>,
        initiator: &str,
        target: &str,
        req: PeerRequest,
        resume: &mut Option<u64>,
    ) -> PeerReply {
        let Some(host) = self.host().cloned() else {
            return reply_error("this server does not export volumes");
        };
        let _ops = self.ops();
        let mut cat = self.cat();
        let system = self.system_id(&mut cat);
        let groups: Vec<(u16, u16)> = host
            .portal_groups(target)
            .into_iter()
            .map(|g| (g, g))
            .collect();
        let base = PeerReply {
            system,
            groups: groups.clone(),
            ..PeerReply::default()
        };
        let remote = match &req {
            PeerRequest::Hello { .. } => return base,
            PeerRequest::Attach { .. } => 0,
            PeerRequest::State { remote }
            | PeerRequest::Promote { remote, .. }
            | PeerRequest::Demote { remote, .. }
            | PeerRequest::Dirty { remote, .. }
            | PeerRequest::Clean { remote }
            | PeerRequest::Reverse { remote, .. }
            | PeerRequest::Detach { remote } => *remote,
        };
        let rec = match &req {
            PeerRequest::Attach { .. } => None,
            _ => match cat.peers.get(&remote) {
                Some(p) if p.target.eq_ignore_ascii_case(target) => Some(p.clone()),
                _ => return reply_error(format!("no HA relationship sync:{remote} on {target}")),
            },
        };
        let answer = |p: &PeerRec, dirty: u64| PeerReply {
            remote: p.id,
            generation: p.generation,
            primary: p.primary,
            dirty_chunks: dirty,
            ..base.clone()
        };
        match req {
            PeerRequest::Hello { .. } => base,
            PeerRequest::Attach {
                system: src_system,
                sync,
                volume,
                lun,
                size,
                block_size,
                identity,
                mode,
                groups: src_groups,
                generation,
            } => {
                if src_groups
                    .iter()
                    .any(|(_, g)| groups.iter().any(|(_, x)| x == g))
                {
                    return reply_error(
                        "the two servers' portal group tags overlap: give each server its own",
                    );
                }
                // Attached already (a retry): the same answer.
                if let Some(p) = cat.peers.values().find(|p| {
                    p.source_system == src_system
                        && p.source_sync == sync
                        && p.target.eq_ignore_ascii_case(target)
                        && p.lun == lun
                }) {
                    return answer(p, 0);
                }
                let Some(vrec) = cat
                    .volumes
                    .values()
                    .find(|v| {
                        v.exposures
                            .iter()
                            .any(|e| e.target.eq_ignore_ascii_case(target) && e.lun == lun)
                    })
                    .cloned()
                else {
                    return reply_error(format!("no volume is exposed as LUN {lun} of {target}"));
                };
                if cat
                    .syncs
                    .values()
                    .any(|s| s.source == vrec.name || s.target == vrec.name)
                    || cat.peers.values().any(|p| p.volume == vrec.name)
                {
                    return reply_error(format!("{} is in another relationship", vrec.name));
                }
                if vrec.size < size || vrec.block_size != block_size {
                    return reply_error(format!(
                        "{} has {} bytes of {}-byte blocks; the source {} of {}",
                        vrec.name, vrec.size, vrec.block_size, size, block_size
                    ));
                }
                let Some(vol) = self.volume(&vrec.name) else {
                    return reply_error(format!("{} is not open", vrec.name));
                };
                let id = cat.alloc_id();
                let p = PeerRec {
                    id,
                    volume: vrec.name.clone(),
                    target: target.to_owned(),
                    lun,
                    source_system: src_system,
                    source_volume: volume,
                    source_sync: sync,
                    mode,
                    initiator: initiator.to_owned(),
                    groups: src_groups,
                    generation,
                    primary: false,
                    established: now(),
                };
                // Export under the source's identity, standby, the peer admitted.
                for e in &vrec.exposures {
                    host.hide(&e.target, e.lun);
                }
                let mut exported = Ok(());
                for e in &vrec.exposures {
                    exported = exported.and_then(|()| {
                        host.expose(&ExposedVolume {
                            name: vrec.name.clone(),
                            device: vol.clone(),
                            exposure: e.clone(),
                            uid: vrec.uid,
                            block_size: vrec.block_size,
                            identity: Some(identity.clone()),
                        })
                    });
                }
                if let Err(e) = exported {
                    return reply_error(format!("exporting {}: {e}", vrec.name));
                }
                if let Some(v) = cat.volumes.get_mut(&vrec.name) {
                    v.identity = Some(identity);
                }
                if let Err(e) = self.install_track(&p) {
                    return reply_error(e);
                }
                self.apply_secondary_access(&p);
                cat.peers.insert(id, p.clone());
                self.save(&mut cat);
                tracing::info!(sync = id, volume = %p.volume, source = %p.source_volume, "HA pair: this server holds the secondary copy");
                answer(&p, 0)
            }
            PeerRequest::State { .. } => {
                let Some(p) = rec else {
                    return reply_error("no such relationship");
                };
                let dirty = self.track(p.id).map_or(0, |t| t.bitmap().count());
                answer(&p, dirty)
            }
            PeerRequest::Promote { generation, .. } => {
                let Some(mut p) = rec else {
                    return reply_error("no such relationship");
                };
                self.set_role(&mut cat, &mut p, true, generation);
                tracing::info!(
                    sync = p.id,
                    generation = p.generation,
                    "HA pair: promoted to primary"
                );
                answer(&p, 0)
            }
            PeerRequest::Demote { generation, .. } => {
                let Some(mut p) = rec else {
                    return reply_error("no such relationship");
                };
                if p.primary {
                    // Hosts' commands drain before the peer may write again.
                    host.set_access(
                        &p.volume,
                        &Access {
                            own: state::TRANSITIONING,
                            peer: state::TRANSITIONING,
                            peer_groups: p.groups.clone(),
                            peer_initiators: vec![p.initiator.clone()],
                            peer_writes: false,
                        },
                    );
                    if !host.settle(&p.volume, SETTLE) {
                        tracing::warn!(
                            sync = p.id,
                            "HA pair: host commands still running after the demotion wait"
                        );
                    }
                }
                self.set_role(&mut cat, &mut p, false, generation);
                let dirty = self.track(p.id).map_or(0, |t| t.bitmap().count());
                tracing::info!(sync = p.id, dirty, "HA pair: demoted to secondary");
                answer(&p, dirty)
            }
            PeerRequest::Dirty { from, .. } => {
                let Some(p) = rec else {
                    return reply_error("no such relationship");
                };
                let (r, next) = self
                    .track(p.id)
                    .map_or((Vec::new(), None), |t| ranges(&t.bitmap(), from));
                PeerReply {
                    ranges: r,
                    next,
                    ..answer(&p, 0)
                }
            }
            PeerRequest::Clean { .. } => {
                let Some(p) = rec else {
                    return reply_error("no such relationship");
                };
                if p.primary {
                    return reply_error("the copy is primary: demote it first");
                }
                if let Some(t) = self.track(p.id)
                    && let Err(e) = t.clear()
                {
                    return reply_error(format!("clearing the change map: {e}"));
                }
                answer(&p, 0)
            }
            PeerRequest::Reverse {
                check,
                target: peer_target,
                lun,
                system: peer_system,
                groups: peer_groups,
                generation,
                ranges,
                full,
                peer_id,
                ..
            } => {
                let Some(p) = rec else {
                    return reply_error("no such relationship");
                };
                if !p.primary {
                    return reply_error("Reverse Roles needs this copy primary (after a Failover)");
                }
                let Some(ap) = cat
                    .access_points
                    .values()
                    .find(|a| a.target.eq_ignore_ascii_case(&peer_target) && a.lun == lun)
                    .cloned()
                else {
                    return reply_error(format!(
                        "no access point to LUN {lun} of {peer_target} here: create one first"
                    ));
                };
                let writer = ap
                    .initiator_name
                    .clone()
                    .unwrap_or_else(|| super::remote::DEFAULT_INITIATOR.to_owned());
                if check {
                    return PeerReply {
                        initiator: writer,
                        volume: p.volume.clone(),
                        ..answer(&p, 0)
                    };
                }
                match self.reverse_here(
                    &mut cat,
                    &p,
                    &ap,
                    peer_system,
                    peer_groups,
                    generation,
                    &ranges,
                    full,
                    peer_id,
                ) {
                    Ok(id) => {
                        *resume = Some(id);
                        PeerReply {
                            remote: id,
                            initiator: writer,
                            volume: p.volume.clone(),
                            ..base
                        }
                    }
                    Err(e) => reply_error(e.message),
                }
            }
            PeerRequest::Detach { .. } => {
                let Some(p) = rec else {
                    return reply_error("no such relationship");
                };
                self.detach_peer(&mut cat, &p);
                self.save(&mut cat);
                PeerReply {
                    remote: p.id,
                    ..base
                }
            }
        }
    }

    /// End the secondary side of a pair: the volume keeps its data and gets its own
    /// identity back, fully accessible.
    pub(crate) fn detach_peer(&self, cat: &mut super::Catalog, p: &PeerRec) {
        cat.peers.remove(&p.id);
        if let Some(t) = self.rt().peer_tracks.remove(&p.id)
            && let Some(vol) = self.volume(&p.volume)
        {
            let hook: Arc<dyn WriteHook> = t;
            vol.remove_hook(&hook);
        }
        let _ = std::fs::remove_file(self.path(&format!("peer-{}.dirty", p.id)));
        let Some(host) = self.host() else { return };
        host.set_access(&p.volume, &Access::default());
        if let (Some(v), Some(vol)) = (cat.volumes.get_mut(&p.volume), self.volume(&p.volume)) {
            v.identity = None;
            for e in &v.exposures {
                host.hide(&e.target, e.lun);
                if let Err(err) = host.expose(&ExposedVolume {
                    name: v.name.clone(),
                    device: vol.clone(),
                    exposure: e.clone(),
                    uid: v.uid,
                    block_size: v.block_size,
                    identity: None,
                }) {
                    tracing::error!(volume = %v.name, error = %err, "re-exporting a detached HA copy");
                }
            }
        }
        tracing::info!(sync = p.id, volume = %p.volume, "HA pair detached: the copy is independent");
    }

    /// Send a request to the peer of relationship `id` (over the mirror's session).
    pub(crate) fn peer_call(&self, target: &str, req: &PeerRequest) -> Result<PeerReply, String> {
        let dev = self
            .rt()
            .remotes
            .get(target)
            .cloned()
            .ok_or_else(|| format!("{target} is not a remote volume"))?;
        let session = dev
            .session()
            .map_err(|e| format!("peer unreachable: {e}"))?;
        let mut keys = iscsi_proto::text::TextKeys::default();
        keys.push(
            PEER_KEY,
            &serde_json::to_string(req).map_err(|e| e.to_string())?,
        );
        let answer = session
            .text(&keys)
            .map_err(|e| format!("peer request failed: {e}"))?;
        let v = answer
            .get(PEER_KEY)
            .ok_or_else(|| "the peer does not speak the ironlun peer protocol".to_owned())?;
        if v == "NotUnderstood" {
            return Err(
                "the peer does not accept peer requests from this initiator (replica_peers)".into(),
            );
        }
        let r: PeerReply = serde_json::from_str(v).map_err(|e| format!("bad peer reply: {e}"))?;
        match r.error {
            Some(e) => Err(format!("the peer refused: {e}")),
            None => Ok(r),
        }
    }

    /// After a remote mirror to an ironlun peer was made: attach the peer (both servers know
    /// the pair, one identity, ALUA). A peer that does not speak the protocol leaves a
    /// one-way remote mirror.
    pub(crate) fn attach_peer(&self, cat: &mut super::Catalog, id: u64) -> Result<(), MethodError> {
        let Some(s) = cat.syncs.get(&id).cloned() else {
            return Ok(());
        };
        let Some(host) = self.host().cloned() else {
            return Ok(());
        };
        let system = self.system_id(cat);
        match self.peer_call(
            &s.target,
            &PeerRequest::Hello {
                system: system.clone(),
            },
        ) {
            Ok(_) => {}
            Err(e) => {
                tracing::info!(sync = id, reason = %e, "remote mirror target is not an ironlun HA peer: one-way mirror");
                return Ok(());
            }
        }
        let src = cat
            .volumes
            .get(&s.source)
            .cloned()
            .ok_or_else(|| MethodError::failed("source volume vanished"))?;
        let ap = match &cat.volumes.get(&s.target).map(|v| v.kind.clone()) {
            Some(super::VolumeKind::Remote { access_point }) => cat
                .access_points
                .get(access_point)
                .cloned()
                .ok_or_else(|| MethodError::failed("access point vanished"))?,
            _ => return Ok(()),
        };
        let Some(identity) = host.identity(&s.source) else {
            tracing::info!(sync = id, source = %s.source, "the source is not exported: a one-way remote mirror, not an HA pair");
            return Ok(());
        };
        let exposure_target = src
            .exposures
            .first()
            .map(|e| e.target.clone())
            .unwrap_or_else(|| ap.target.clone());
        let groups = host
            .portal_groups(&exposure_target)
            .into_iter()
            .map(|g| (g, g))
            .collect();
        let r = self
            .peer_call(
                &s.target,
                &PeerRequest::Attach {
                    system,
                    sync: id,
                    volume: s.source.clone(),
                    lun: ap.lun,
                    size: src.size,
                    block_size: src.block_size,
                    identity,
                    mode: s.mode,
                    groups,
                    generation: 1,
                },
            )
            .map_err(|e| MethodError::failed(format!("attaching the HA peer: {e}")))?;
        let link = PeerLink {
            system: r.system,
            remote: r.remote,
            groups: r.groups,
            generation: 1,
            peer_primary: false,
            split_brain: false,
        };
        self.apply_primary_access(&s.source, &link);
        if let Some(rec) = cat.syncs.get_mut(&id) {
            rec.peer = Some(link);
        }
        Ok(())
    }

    /// The peer's chunks written while it was primary.
    fn peer_dirty(&self, target: &str, remote: u64, chunks: u64) -> Result<Bitmap, String> {
        let mut b = Bitmap::new(chunks);
        let mut from = 0;
        loop {
            let r = self.peer_call(target, &PeerRequest::Dirty { remote, from })?;
            for (f, l) in r.ranges {
                if f > l || l >= chunks {
                    return Err(format!("the peer reported chunks {f}..{l} of {chunks}"));
                }
                b.set_range(f, l + 1);
            }
            match r.next {
                Some(n) if n > from => from = n,
                Some(_) => return Err("the peer's change map does not advance".into()),
                None => return Ok(b),
            }
        }
    }

    /// Planned Failover of an HA pair (on the managing side): hosts' commands here drain,
    /// the mirror drains, the peer is promoted, this side becomes standby.
    pub(crate) fn ha_failover(&self, cat: &mut super::Catalog, id: u64) -> Result<(), MethodError> {
        let Some((s, mut link)) = ha_pair(cat, id)? else {
            return Ok(());
        };
        let host = self
            .host()
            .cloned()
            .ok_or_else(|| MethodError::failed("no server"))?;
        let st = self
            .peer_call(
                &s.target,
                &PeerRequest::State {
                    remote: link.remote,
                },
            )
            .map_err(|e| {
                MethodError::failed(format!(
                    "{e}; for an unplanned failover run Failover on the peer's relationship"
                ))
            })?;
        if st.primary {
            return Err(MethodError::failed("the peer is primary already"));
        }
        let mirror = self.mirror(id)?;
        host.set_access(
            &s.source,
            &Access {
                own: state::TRANSITIONING,
                peer: state::TRANSITIONING,
                peer_groups: link.groups.clone(),
                ..Access::default()
            },
        );
        host.settle(&s.source, SETTLE);
        let drained = mirror.drain(self.drain_timeout());
        let state = mirror.state();
        let in_sync = drained && matches!(state, CopyState::Synchronized);
        if !in_sync {
            self.apply_primary_access(&s.source, &link);
            return Err(MethodError::failed(format!(
                "the peer's copy is not synchronized (CopyState {}): nothing was changed",
                state as u16
            )));
        }
        mirror.failover();
        let generation = link.generation.max(st.generation) + 1;
        if let Err(e) = self.peer_call(
            &s.target,
            &PeerRequest::Promote {
                remote: link.remote,
                generation,
            },
        ) {
            // Nothing changed on the peer: this side serves again and the mirror catches up.
            self.apply_primary_access(&s.source, &link);
            mirror.stop_following(CopyState::Unsynchronized);
            return Err(MethodError::failed(format!(
                "promoting the peer: {e}; the mirror resynchronizes"
            )));
        }
        link.generation = generation;
        link.peer_primary = true;
        self.apply_primary_access(&s.source, &link);
        if let Some(r) = cat.syncs.get_mut(&id) {
            r.peer = Some(link);
            r.state = CopyState::Failedover;
        }
        self.save(cat);
        tracing::info!(
            sync = id,
            generation,
            "HA pair: planned failover to the peer"
        );
        Ok(())
    }

    /// Before a Failback (the peer's data wins) or a Resync (this side's data wins) of an
    /// HA pair whose peer was primary: demote the peer, record what it changed as changed on
    /// both sides, and serve here again. The caller's restore or copy then moves the data.
    pub(crate) fn ha_take_back(
        &self,
        cat: &mut super::Catalog,
        id: u64,
    ) -> Result<(), MethodError> {
        let Some((s, mut link)) = ha_pair(cat, id)? else {
            return Ok(());
        };
        let mirror = self.mirror(id)?;
        let r = self
            .peer_call(
                &s.target,
                &PeerRequest::Demote {
                    remote: link.remote,
                    generation: link.generation,
                },
            )
            .map_err(|e| MethodError::failed(format!("demoting the peer: {e}")))?;
        let chunks = mirror.source().chunk_count();
        let dirty = self
            .peer_dirty(&s.target, link.remote, chunks)
            .map_err(|e| MethodError::failed(format!("reading the peer's changes: {e}")))?;
        mirror.add_target_dirty(&dirty);
        mirror
            .save_bitmaps()
            .map_err(|e| MethodError::failed(format!("saving the mirror bitmaps: {e}")))?;
        self.peer_call(
            &s.target,
            &PeerRequest::Clean {
                remote: link.remote,
            },
        )
        .map_err(|e| MethodError::failed(format!("clearing the peer's change map: {e}")))?;
        link.generation = link.generation.max(r.generation);
        link.peer_primary = false;
        link.split_brain = false;
        self.apply_primary_access(&s.source, &link);
        if let Some(rec) = cat.syncs.get_mut(&id) {
            rec.peer = Some(link);
        }
        tracing::info!(
            sync = id,
            chunks = dirty.count(),
            "HA pair: the peer is secondary again"
        );
        Ok(())
    }

    /// The link to an HA peer works again: if the peer was promoted past this side, stop
    /// serving writes here (and if both were written, mark the split brain). Returns whether
    /// the pair may resynchronize by itself.
    pub(crate) fn ha_reconnected(&self, id: u64) -> bool {
        let (s, link) = {
            let cat = self.cat();
            match cat.syncs.get(&id) {
                Some(s) => match &s.peer {
                    Some(l) => (s.clone(), l.clone()),
                    None => return true,
                },
                None => return false,
            }
        };
        let st = match self.peer_call(
            &s.target,
            &PeerRequest::State {
                remote: link.remote,
            },
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(sync = id, error = %e, "HA peer answers iSCSI but not its state");
                return false;
            }
        };
        if !st.primary || st.generation <= link.generation && !link.peer_primary {
            return !link.split_brain;
        }
        let Ok(mirror) = self.mirror(id) else {
            return false;
        };
        let written_here = mirror.dirty().0 > 0;
        let split = written_here && st.dirty_chunks > 0;
        let mut link = link;
        link.generation = st.generation;
        link.peer_primary = true;
        link.split_brain = split;
        self.apply_primary_access(&s.source, &link);
        mirror.stop_following(if split {
            CopyState::Broken
        } else {
            CopyState::Failedover
        });
        let mut cat = self.cat();
        if let Some(r) = cat.syncs.get_mut(&id) {
            r.peer = Some(link);
        }
        self.save(&mut cat);
        if split {
            tracing::error!(
                sync = id,
                "HA pair: split brain (both sides were written): Failback keeps the peer's data, Resync this side's"
            );
        } else {
            tracing::warn!(
                sync = id,
                "HA pair: the peer was promoted while apart; this side stops serving writes"
            );
        }
        false
    }

    /// Reverse Roles on the secondary side that is primary: make this copy the source of a
    /// mirror to the peer's volume, copying only the chunks either side changed. Returns the
    /// new relationship.
    #[allow(clippy::too_many_arguments)]
    fn reverse_here(
        self: &Arc<Self>,
        cat: &mut super::Catalog,
        p: &PeerRec,
        ap: &super::remote::AccessPointRec,
        peer_system: String,
        peer_groups: Vec<(u16, u16)>,
        generation: u64,
        ranges: &[(u64, u64)],
        full: bool,
        peer_id: u64,
    ) -> Result<u64, MethodError> {
        let vol = self
            .volume(&p.volume)
            .ok_or_else(|| MethodError::failed("volume not open"))?;
        let vrec = cat
            .volumes
            .get(&p.volume)
            .cloned()
            .ok_or_else(|| MethodError::failed("volume vanished"))?;
        let dev = self.open_remote(ap)?;
        if blockdev::BlockDevice::size(&*dev) < vrec.size || dev.block_size() != vrec.block_size {
            return Err(MethodError::failed(format!(
                "{} does not match {} in size or block size",
                ap.url(),
                p.volume
            )));
        }
        let mut tname = format!("{}-peer", p.volume);
        let mut n = 1;
        while cat.volumes.contains_key(&tname) {
            n += 1;
            tname = format!("{}-peer{n}", p.volume);
        }
        let pool = self
            .pool(None)
            .ok_or_else(|| MethodError::failed("no pool"))?;
        // What differs: this copy's changes since it became primary and the peer's.
        let chunks = vol.chunk_count();
        let mut differ = if full {
            Bitmap::full(chunks)
        } else {
            let mut b = self
                .track(p.id)
                .map_or_else(|| Bitmap::full(chunks), |t| t.bitmap().clone());
            for &(f, l) in ranges {
                b.set_range(f, l.saturating_add(1));
            }
            b
        };
        if self.track(p.id).is_none() {
            differ = Bitmap::full(chunks);
        }
        cat.volumes.insert(
            tname.clone(),
            super::VolumeRec {
                name: tname.clone(),
                path: ap.url(),
                size: vrec.size,
                block_size: vrec.block_size,
                pool: None,
                kind: super::VolumeKind::Remote {
                    access_point: ap.name.clone(),
                },
                exposures: Vec::new(),
                uid: super::new_uid(&tname, 0),
                identity: None,
            },
        );
        self.add_remote_volume(&tname, dev);
        let gid = cat.alloc_id();
        let id = cat.alloc_id();
        {
            // No host write slips between the new pair's full bitmap and the real one.
            let _q = vol.quiesce();
            if let Err(e) = self.make_pair(
                cat,
                id,
                gid,
                crate::types::SyncType::Mirror,
                p.mode,
                &p.volume,
                &tname,
                &pool,
                &super::settings::ReplicationSettings::default(),
            ) {
                self.forget_remote_volume(cat, &tname);
                return Err(e);
            }
            if let Ok(m) = self.mirror(id) {
                m.set_out_of_sync(differ);
            }
            // This copy stops being the secondary.
            cat.peers.remove(&p.id);
            if let Some(t) = self.rt().peer_tracks.remove(&p.id) {
                let hook: Arc<dyn WriteHook> = t;
                vol.remove_hook(&hook);
            }
        }
        let _ = std::fs::remove_file(self.path(&format!("peer-{}.dirty", p.id)));
        let name = format!("{}-reversed", p.volume);
        cat.groups.insert(
            tname.clone(),
            super::GroupRec {
                name: tname.clone(),
                members: vec![tname.clone()],
            },
        );
        cat.group_syncs.insert(
            gid,
            super::GroupSyncRec {
                id: gid,
                name,
                sync_type: crate::types::SyncType::Mirror,
                mode: p.mode,
                source_group: None,
                target_group: tname.clone(),
                consistency: false,
                members: vec![id],
                established: now(),
            },
        );
        let link = PeerLink {
            system: peer_system,
            remote: peer_id,
            groups: peer_groups,
            generation,
            peer_primary: false,
            split_brain: false,
        };
        self.apply_primary_access(&p.volume, &link);
        if let Some(s) = cat.syncs.get_mut(&id) {
            s.peer = Some(link);
        }
        self.save(cat);
        tracing::info!(sync = id, source = %p.volume, "HA pair reversed: this server holds the source");
        Ok(id)
    }

    /// Reverse Roles of an HA pair whose peer is primary (after a Failover): the peer
    /// becomes the source of the relationship and this side its secondary copy, and only the
    /// chunks either side changed are copied. Returns the new relationship (on this side,
    /// the secondary's record).
    pub(crate) fn ha_reverse(&self, cat: &mut super::Catalog, id: u64) -> Result<u64, MethodError> {
        let (s, link) = ha_pair(cat, id)?.ok_or_else(|| MethodError::failed("not an HA pair"))?;
        if !link.peer_primary || link.split_brain {
            return Err(MethodError::failed(
                "Reverse Roles of an HA pair follows a Failover (the peer primary, no split brain)",
            ));
        }
        let host = self
            .host()
            .cloned()
            .ok_or_else(|| MethodError::failed("no server"))?;
        let (target, lun) = host
            .places(&s.source)
            .into_iter()
            .next()
            .ok_or_else(|| MethodError::failed(format!("{} is not exported here", s.source)))?;
        let mirror = self.mirror(id)?;
        let (mine, _) = mirror.bitmaps();
        let (ranges, more) = ranges(&mine, 0);
        let full = more.is_some();
        let system = self.system_id(cat);
        let req = |check: bool, peer_id: u64| PeerRequest::Reverse {
            remote: link.remote,
            check,
            target: target.clone(),
            lun,
            system: system.clone(),
            groups: host
                .portal_groups(&target)
                .into_iter()
                .map(|g| (g, g))
                .collect(),
            generation: link.generation,
            ranges: if full { Vec::new() } else { ranges.clone() },
            full,
            peer_id,
        };
        let check = self
            .peer_call(&s.target, &req(true, 0))
            .map_err(|e| MethodError::failed(format!("Reverse Roles: {e}")))?;
        // This side becomes the secondary: it admits the peer's writer from now on.
        let pid = cat.alloc_id();
        let mut p = PeerRec {
            id: pid,
            volume: s.source.clone(),
            target: target.clone(),
            lun,
            source_system: link.system.clone(),
            source_volume: check.volume.clone(),
            source_sync: 0,
            mode: s.mode,
            initiator: check.initiator,
            groups: link.groups.clone(),
            generation: link.generation,
            primary: false,
            established: now(),
        };
        // The peer's writer is admitted before it starts copying.
        if let Err(e) = self.install_track(&p) {
            return Err(MethodError::failed(format!("HA copy: {e}")));
        }
        self.apply_secondary_access(&p);
        // The failed-over pair here refuses writes to its source: it lets go of the volume
        // before the peer starts copying to it.
        mirror.detach();
        let r = match self.peer_call(&s.target, &req(false, pid)) {
            Ok(r) => r,
            Err(e) => {
                mirror.attach();
                // Nothing changed on the peer: back to the failed-over pair.
                if let Some(t) = self.rt().peer_tracks.remove(&pid)
                    && let Some(vol) = self.volume(&p.volume)
                {
                    let hook: Arc<dyn WriteHook> = t;
                    vol.remove_hook(&hook);
                }
                let _ = std::fs::remove_file(self.path(&format!("peer-{pid}.dirty")));
                self.apply_primary_access(&s.source, &link);
                return Err(MethodError::failed(format!("Reverse Roles: {e}")));
            }
        };
        p.source_sync = r.remote;
        self.finish_reverse(cat, id, p);
        Ok(pid)
    }

    /// The managing side's part of Reverse Roles once the peer holds the source.
    fn finish_reverse(&self, cat: &mut super::Catalog, id: u64, p: PeerRec) {
        let gid = cat.syncs.get(&id).and_then(|s| s.group_sync);
        if let Err(e) = self.remove_pair(cat, id, false) {
            tracing::error!(sync = id, error = %e.message, "removing the reversed pair");
        }
        if let Some(gid) = gid {
            let empty = cat.group_syncs.get_mut(&gid).is_some_and(|g| {
                g.members.retain(|m| *m != id);
                g.members.is_empty()
            });
            if empty
                && let Some(g) = cat.group_syncs.remove(&gid)
                && cat
                    .groups
                    .get(&g.target_group)
                    .is_some_and(|t| t.members.is_empty())
            {
                cat.groups.remove(&g.target_group);
            }
        }
        cat.peers.insert(p.id, p);
        self.save(cat);
    }

    /// End an HA pair on the managing side (Detach, Return To ResourcePool): tell the peer.
    pub(crate) fn ha_detach(&self, cat: &super::Catalog, id: u64) {
        let Some(s) = cat.syncs.get(&id) else { return };
        let Some(link) = &s.peer else { return };
        if let Err(e) = self.peer_call(
            &s.target,
            &PeerRequest::Detach {
                remote: link.remote,
            },
        ) {
            tracing::warn!(sync = id, error = %e, "the HA peer was not told of the detach");
        }
        if let Some(host) = self.host() {
            host.set_access(&s.source, &Access::default());
        }
    }

    /// Operations on the secondary side of an HA pair: an unplanned Failover (the source
    /// server is lost) and Detach.
    pub(crate) fn peer_modify(
        &self,
        op: crate::types::Operation,
        id: u64,
    ) -> Result<(), MethodError> {
        use crate::types::Operation;
        let mut cat = self.cat();
        let mut p = cat
            .peers
            .get(&id)
            .cloned()
            .ok_or_else(|| MethodError::invalid("Synchronization", "no such relationship"))?;
        match op {
            Operation::Failover => {
                if p.primary {
                    return Err(MethodError::failed("this copy is primary already"));
                }
                let generation = p.generation + 1;
                self.set_role(&mut cat, &mut p, true, generation);
                tracing::warn!(
                    sync = id,
                    generation = p.generation,
                    "HA pair: unplanned failover, this copy is primary"
                );
                Ok(())
            }
            Operation::Detach => {
                self.detach_peer(&mut cat, &p);
                self.save(&mut cat);
                Ok(())
            }
            _ => Err(MethodError::not_supported(
                "Operation",
                "this server holds the secondary copy: run the operation on the source's server (here only Failover and Detach)",
            )),
        }
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
