//! A logical unit: configuration, shared state (mode pages, unit attentions per I_T nexus)
//! and command dispatch.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use blockdev::{BlockDevice, BlockErrorKind};

use crate::{Nexus, Request, Response, cdb::CmdResult, mode::ModeState, opcodes, sense::Sense};

/// Static description of a logical unit.
#[derive(Clone, Debug)]
pub struct LuConfig {
    /// Logical block size in bytes (512 or 4096).
    pub block_size: u32,
    /// Refuse writes (DATA PROTECT).
    pub read_only: bool,
    /// T10 vendor identification (8 characters).
    pub vendor: String,
    /// Product identification (16 characters).
    pub product: String,
    /// Product revision level (4 characters).
    pub revision: String,
    /// Unit serial number (VPD page 0x80).
    pub serial: String,
    /// NAA locally assigned designator (type 3h, VPD page 0x83), stable across restarts.
    pub naa: [u8; 8],
    /// Report thin provisioning (LBPME, UNMAP, WRITE SAME with UNMAP).
    pub thin: bool,
    /// Largest transfer per command, in blocks (Block Limits VPD).
    pub max_transfer_blocks: u32,
    /// Target port group of each relative port, for VPD 0x83 and REPORT TARGET PORT GROUPS.
    pub port_groups: Vec<(u16, u16)>,
    /// Where persistent reservations are kept when APTPL is set (`None`: not persisted).
    pub pr_file: Option<PathBuf>,
    /// SANITIZE OVERWRITE pace in bytes per second (0: unpaced).
    pub sanitize_rate: u64,
    /// Removable medium (RMB): START STOP UNIT can eject and load it, PREVENT ALLOW MEDIUM
    /// REMOVAL can forbid that.
    pub removable: bool,
    /// Physical block size reported by READ CAPACITY(16) (a multiple of `block_size`).
    pub physical_block_size: u32,
}

impl LuConfig {
    /// A configuration with ironlun's identification strings.
    pub fn new(serial: impl Into<String>, naa: [u8; 8], block_size: u32) -> Self {
        Self {
            block_size,
            read_only: false,
            vendor: "IRONLUN".into(),
            product: "VIRTUAL-DISK".into(),
            revision: "0001".into(),
            serial: serial.into(),
            naa,
            thin: true,
            max_transfer_blocks: (64 << 20) / block_size,
            port_groups: Vec::new(),
            pr_file: None,
            sanitize_rate: 256 << 20,
            removable: false,
            physical_block_size: block_size,
        }
    }
}

/// State of one I_T nexus at this logical unit.
#[derive(Debug, Default)]
pub(crate) struct NexusState {
    /// Pending unit attentions, oldest first.
    pub(crate) ua: VecDeque<Sense>,
    /// PREVENT ALLOW MEDIUM REMOVAL state.
    pub(crate) prevent: bool,
}

/// Mutable logical unit state.
#[derive(Debug, Default)]
pub(crate) struct LuState {
    pub(crate) mode: ModeState,
    pub(crate) nexuses: HashMap<String, NexusState>,
    /// The removable medium has been ejected.
    pub(crate) ejected: bool,
    /// Persistent reservations.
    pub(crate) pr: crate::pr::PrState,
    /// The I_T nexus holding an SPC-2 reservation.
    pub(crate) spc2_holder: Option<String>,
    /// Asymmetric access state per target port group (absent: active/optimized).
    pub(crate) alua: HashMap<u16, u8>,
    /// The (relative port, target port group) pairs of the peer server that exports the
    /// same logical unit (an HA pair), reported by REPORT TARGET PORT GROUPS.
    pub(crate) peer_groups: Vec<(u16, u16)>,
    /// The initiators of the peer server (its replication sessions), and whether they may
    /// use this unit whatever the access state of their port group (while this server
    /// holds the secondary copy); otherwise they are refused as in standby.
    pub(crate) peer_initiators: (Vec<String>, bool),
    /// Results of EXTENDED COPY commands, for RECEIVE COPY RESULTS.
    pub(crate) copies: Vec<crate::cmd::copy::CopyResult>,
}

/// Largest number of unit attentions queued per I_T nexus; older ones are dropped.
const MAX_QUEUED_UA: usize = 16;

/// A logical unit backed by a block device.
#[derive(Debug)]
pub struct LogicalUnit {
    pub(crate) cfg: LuConfig,
    pub(crate) dev: Arc<dyn BlockDevice>,
    state: Mutex<LuState>,
    pub(crate) locks: crate::lock::RangeLocks,
    pub(crate) sanitizing: Arc<AtomicBool>,
    /// Commands admitted and still running (an access state change waits for them).
    pub(crate) running: AtomicUsize,
}

/// Asymmetric access states (SPC-4 section 6.37, table 272).
pub mod alua {
    /// Active/optimized.
    pub const ACTIVE_OPTIMIZED: u8 = 0x0;
    /// Active/non-optimized.
    pub const ACTIVE_NON_OPTIMIZED: u8 = 0x1;
    /// Standby.
    pub const STANDBY: u8 = 0x2;
    /// Unavailable.
    pub const UNAVAILABLE: u8 = 0x3;
    /// Offline.
    pub const OFFLINE: u8 = 0xe;
    /// Transitioning between states.
    pub const TRANSITIONING: u8 = 0xf;
}

/// Whether a command may run in an asymmetric access state (SPC-4 section 5.15.2.4; like
/// LIO, READ CAPACITY is allowed in standby so that a host can size a standby path), and
/// the sense data when it may not.
fn alua_refusal(state: u8, cdb: &[u8]) -> Option<Sense> {
    let op = cdb.first().copied().unwrap_or(0);
    let sa = cdb.get(1).map_or(0, |b| b & 0x1f);
    // INQUIRY, REPORT LUNS, REQUEST SENSE, READ/WRITE BUFFER, MAINTENANCE IN (REPORT TARGET
    // PORT GROUPS and the other reports) and MAINTENANCE OUT.
    let always = matches!(op, 0x12 | 0xa0 | 0x03 | 0x3c | 0x3b | 0xa3 | 0xa4);
    match state {
        alua::ACTIVE_OPTIMIZED | alua::ACTIVE_NON_OPTIMIZED => None,
        alua::STANDBY => {
            let allowed = always
                || matches!(
                    op,
                    // LOG SELECT/SENSE, MODE SELECT/SENSE, RECEIVE/SEND DIAGNOSTIC,
                    // READ CAPACITY(10), PERSISTENT RESERVE IN/OUT.
                    0x4c | 0x4d | 0x15 | 0x55 | 0x1a | 0x5a | 0x1c | 0x1d | 0x25 | 0x5e | 0x5f
                )
                || (op == 0x9e && sa == 0x10);
            (!allowed).then_some(Sense::STANDBY)
        }
        alua::UNAVAILABLE => (!always).then_some(Sense::UNAVAILABLE),
        alua::TRANSITIONING => (!always).then_some(Sense::ALUA_TRANSITIONING),
        _ => (!always).then_some(Sense::OFFLINE),
    }
}

/// Counts a running command until dropped.
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

impl LogicalUnit {
    /// A logical unit over `dev`, with its persisted reservations loaded.
    pub fn new(cfg: LuConfig, dev: Arc<dyn BlockDevice>) -> Self {
        let pr = cfg
            .pr_file
            .as_ref()
            .map(crate::pr::load)
            .unwrap_or_default();
        Self {
            cfg,
            dev,
            state: Mutex::new(LuState {
                pr,
                ..LuState::default()
            }),
            locks: crate::lock::RangeLocks::default(),
            sanitizing: Arc::new(AtomicBool::new(false)),
            running: AtomicUsize::new(0),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LuConfig {
        &self.cfg
    }

    /// The backing device.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.dev
    }

    /// Capacity in logical blocks.
    pub fn blocks(&self) -> u64 {
        self.dev.size() / u64::from(self.cfg.block_size)
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, LuState> {
        // A poisoned lock means a handler panicked; its state is still the last consistent
        // one because every handler updates it in one step.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether sense data goes out in descriptor format (control mode page D_SENSE).
    pub fn descriptor_sense(&self) -> bool {
        self.state().mode.d_sense
    }

    /// Queue a unit attention for every I_T nexus (or all but `except`).
    pub fn unit_attention_all(&self, sense: Sense, except: Option<&Nexus>) {
        let except = except.map(Nexus::key);
        let mut st = self.state();
        for (k, n) in st.nexuses.iter_mut() {
            if Some(k.as_str()) != except {
                push_ua(n, sense);
            }
        }
    }

    /// The I_T nexus is gone (session closed): forget its state.
    pub fn nexus_lost(&self, nexus: &Nexus) {
        let key = nexus.key();
        let mut st = self.state();
        st.nexuses.remove(key);
        if st.spc2_holder.as_deref() == Some(key) {
            st.spc2_holder = None;
        }
    }

    /// Set the asymmetric access state of a target port group (ALUA), queueing ASYMMETRIC
    /// ACCESS STATE CHANGED for every I_T nexus. Returns whether the state changed; commands
    /// admitted under the old state may still be running (see [`LogicalUnit::settle`]).
    pub fn set_alua_state(&self, group: u16, state: u8) -> bool {
        let mut st = self.state();
        if st.alua.get(&group).copied().unwrap_or(0) == state {
            return false;
        }
        st.alua.insert(group, state);
        for n in st.nexuses.values_mut() {
            push_ua(n, Sense::ASYMMETRIC_ACCESS_STATE_CHANGED);
        }
        true
    }

    /// Wait until no command admitted before now is running (after an access state change,
    /// so that nothing admitted under the old state is still in flight); false on timeout.
    pub fn settle(&self, timeout: std::time::Duration) -> bool {
        // Commands are admitted under the state lock: taking it orders this wait after every
        // admission made under the old state.
        drop(self.state());
        let deadline = std::time::Instant::now() + timeout;
        while self.running.load(Ordering::Acquire) > 0 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }

    /// The port groups of the peer server exporting the same logical unit (HA pairs), as
    /// (relative target port, target port group) pairs.
    pub fn set_peer_port_groups(&self, groups: Vec<(u16, u16)>) {
        let mut st = self.state();
        if st.peer_groups == groups {
            return;
        }
        st.peer_groups = groups;
        for n in st.nexuses.values_mut() {
            push_ua(n, Sense::ASYMMETRIC_ACCESS_STATE_CHANGED);
        }
    }

    /// The initiators of the peer server of an HA pair, and whether they may use the unit
    /// now (they replicate to it while this server is secondary).
    pub fn set_peer_initiators(&self, initiators: Vec<String>, allowed: bool) {
        self.state().peer_initiators = (initiators, allowed);
    }

    /// Every target port group: this server's, then the peer's, each with its ports.
    pub(crate) fn target_port_groups(&self) -> Vec<(u16, u8, Vec<u16>)> {
        let st = self.state();
        let mut all: Vec<(u16, u16)> = self.cfg.port_groups.clone();
        all.extend(st.peer_groups.iter().copied());
        let mut groups: Vec<u16> = all.iter().map(|(_, g)| *g).collect();
        groups.sort_unstable();
        groups.dedup();
        groups
            .into_iter()
            .map(|g| {
                let ports = all
                    .iter()
                    .filter(|(_, x)| *x == g)
                    .map(|(p, _)| *p)
                    .collect();
                (g, st.alua.get(&g).copied().unwrap_or(0), ports)
            })
            .collect()
    }

    /// The asymmetric access state of a target port group.
    pub fn alua_state(&self, group: u16) -> u8 {
        self.state().alua.get(&group).copied().unwrap_or(0)
    }

    /// Whether a SANITIZE is running.
    pub fn sanitizing(&self) -> bool {
        self.sanitizing.load(Ordering::Acquire)
    }

    /// LOGICAL UNIT RESET (SAM-5 section 6.3.3): PREVENT state cleared and a BUS DEVICE
    /// RESET unit attention for every I_T nexus, the requester's included.
    pub fn reset(&self) {
        let mut st = self.state();
        st.spc2_holder = None;
        for n in st.nexuses.values_mut() {
            n.prevent = false;
            push_ua(n, Sense::BUS_DEVICE_RESET);
        }
    }

    /// Execute one command.
    pub fn execute(&self, req: &Request<'_>) -> Response {
        let d_sense = self.descriptor_sense();
        match self.run(req) {
            Ok(r) => r,
            Err(sense) => Response::check(sense, d_sense),
        }
    }

    /// Execute a READ, WRITE or GET LBA STATUS only if it can be done in memory (data in
    /// the cache, a write into the cache, an allocation map held in memory), without
    /// waiting for the medium (the caller is an event loop).
    /// `None`: another command, or one that would have to wait; it is to be run with
    /// [`Self::execute`] then (a write refused part way is written again, whole).
    pub fn execute_nowait(&self, req: &Request<'_>) -> Option<Response> {
        let get_lba_status = req.cdb.len() >= 2 && req.cdb[0] == 0x9e && req.cdb[1] & 0x1f == 0x12;
        if !get_lba_status
            && !matches!(
                req.cdb.first(),
                Some(0x08 | 0x28 | 0xa8 | 0x88 | 0x0a | 0x2a | 0xaa | 0x8a)
            )
        {
            return None;
        }
        let blocked = std::cell::Cell::new(false);
        let r = self.execute(&Request {
            would_block: Some(&blocked),
            ..*req
        });
        (!blocked.get()).then_some(r)
    }

    fn run(&self, req: &Request<'_>) -> CmdResult<Response> {
        let cdb = req.cdb;
        let Some(&opcode) = cdb.first() else {
            return Err(Sense::INVALID_OPCODE);
        };
        let cmd = match opcodes::lookup(opcode, cdb) {
            opcodes::Lookup::Found(c) => c,
            opcodes::Lookup::BadServiceAction => {
                return Err(crate::cdb::invalid_field(1, Some(4)));
            }
            opcodes::Lookup::Unknown => return Err(Sense::INVALID_OPCODE),
        };
        if cdb.len() < usize::from(cmd.cdb_len) {
            return Err(Sense::INVALID_OPCODE);
        }
        // NACA (control byte bit 2) is not supported.
        if cdb[usize::from(cmd.cdb_len) - 1] & 0x04 != 0 {
            return Err(crate::cdb::invalid_field(
                u16::from(cmd.cdb_len) - 1,
                Some(2),
            ));
        }
        let _admitted = self.admit(req.nexus, cdb)?;
        if self.sanitizing() && !matches!(opcode, 0x12 | 0xa0 | 0x03) {
            return Err(Sense::SANITIZE_IN_PROGRESS);
        }
        if let Some(conflict) = self.check_reservation(req.nexus, cdb) {
            return Ok(conflict);
        }
        (cmd.handler)(self, req)
    }

    /// Admit a command: report (and clear) a pending unit attention, except for the
    /// commands SPC-4 section 5.14 exempts (a nexus seen for the first time gets POWER ON,
    /// RESET), then refuse it if the asymmetric access state of the nexus's target port
    /// group does not allow it. An admitted command counts as running until the guard drops.
    fn admit(&self, nexus: &Nexus, cdb: &[u8]) -> CmdResult<Admitted<'_>> {
        let opcode = cdb.first().copied().unwrap_or(0);
        let mut st = self.state();
        // INQUIRY, REPORT LUNS and REQUEST SENSE do not report unit attentions.
        let reports_ua = !matches!(opcode, 0x12 | 0xa0 | 0x03);
        let ua = match st.nexuses.get_mut(nexus.key()) {
            Some(n) => reports_ua.then(|| n.ua.pop_front()).flatten(),
            None => {
                let mut n = NexusState::default();
                if !reports_ua {
                    n.ua.push_back(Sense::POWER_ON_RESET);
                }
                st.nexuses.insert(nexus.key().to_owned(), n);
                reports_ua.then_some(Sense::POWER_ON_RESET)
            }
        };
        if let Some(ua) = ua {
            return Err(ua);
        }
        let (peers, peer_allowed) = &st.peer_initiators;
        if peers
            .iter()
            .any(|p| p.eq_ignore_ascii_case(&nexus.initiator_name))
        {
            if !peer_allowed && alua_refusal(alua::STANDBY, cdb).is_some() {
                return Err(Sense::STANDBY);
            }
        } else if !st.alua.is_empty() {
            let state = st.alua.get(&nexus.tpgt).copied().unwrap_or(0);
            if let Some(sense) = alua_refusal(state, cdb) {
                return Err(sense);
            }
        }
        self.running.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted(&self.running))
    }

    /// Take the oldest pending unit attention of a nexus (REQUEST SENSE).
    pub(crate) fn take_unit_attention(&self, nexus: &Nexus) -> Option<Sense> {
        self.state()
            .nexuses
            .get_mut(nexus.key())
            .and_then(|n| n.ua.pop_front())
    }

    /// Map a block device error to sense data.
    pub(crate) fn io_error(&self, e: &blockdev::BlockError, write: bool) -> Sense {
        tracing::warn!(error = %e, "block device error");
        match e.kind {
            BlockErrorKind::OutOfBounds => Sense::LBA_OUT_OF_RANGE,
            BlockErrorKind::NoSpace => Sense::SPACE_ALLOCATION_FAILED,
            BlockErrorKind::ReadOnly => Sense::WRITE_PROTECTED,
            BlockErrorKind::Unsupported => Sense::INVALID_OPCODE,
            _ if write => Sense::WRITE_ERROR,
            _ => Sense::UNRECOVERED_READ_ERROR,
        }
    }

    /// Whether the write cache is off (caching mode page WCE=0): every write is then on
    /// stable storage before it completes (SBC-3 section 6.4.6), as with FUA.
    pub(crate) fn write_through(&self) -> bool {
        !self.state().mode.wce
    }

    /// Check that writes are allowed (read-only LUN, SWP).
    pub(crate) fn check_writable(&self) -> CmdResult<()> {
        if self.cfg.read_only || self.state().mode.swp {
            return Err(Sense::WRITE_PROTECTED);
        }
        Ok(())
    }

    /// Check an LBA range against the capacity.
    pub(crate) fn check_lba(&self, lba: u64, blocks: u64) -> CmdResult<()> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.blocks() => Ok(()),
            _ => Err(Sense::LBA_OUT_OF_RANGE),
        }
    }

    /// Check the unit is started and its medium loaded (START STOP UNIT).
    pub(crate) fn check_ready(&self) -> CmdResult<()> {
        let st = self.state();
        if st.ejected {
            return Err(Sense::MEDIUM_NOT_PRESENT_TRAY_OPEN);
        }
        Ok(())
    }
}

/// Queue a unit attention, without duplicates, dropping the oldest beyond the bound.
pub(crate) fn push_ua(n: &mut NexusState, sense: Sense) {
    if n.ua.contains(&sense) {
        return;
    }
    if n.ua.len() >= MAX_QUEUED_UA {
        n.ua.pop_front();
    }
    n.ua.push_back(sense);
}
