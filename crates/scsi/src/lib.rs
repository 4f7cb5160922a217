//! SCSI block command emulation (SPC-4, SBC-3) over a [`blockdev::BlockDevice`].
//!
//! This crate knows nothing of iSCSI: a transport hands it a CDB, the Data-Out buffers and the
//! identity of the I_T nexus, and gets back a status, sense data and Data-In. Two error levels
//! are kept apart: SCSI outcomes (CHECK CONDITION with sense) are normal [`Response`]s; the
//! transport alone deals with transport failures.
#![warn(missing_docs)]

pub mod bufpool;
mod cdb;
mod cmd;
mod gather;
mod lock;
mod lu;
mod mode;
pub mod opcodes;
mod pr;
pub mod sense;
mod target;
mod vpd;

#[cfg(test)]
mod gather_tests;
#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use self::{
    cmd::copy::LunResolver,
    gather::{Fit, Joined, MAX_RUN_BYTES, WriteRun},
    lu::{LogicalUnit, LuConfig, alua},
    mode::ModeState,
    sense::{Sense, status},
    target::{LunMap, MissingLun},
};

/// The identity of an I_T nexus (SAM-5 section 4.6.3), as iSCSI names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Nexus {
    /// InitiatorName.
    pub initiator_name: String,
    /// ISID of the session.
    pub isid: [u8; 6],
    /// TargetName.
    pub target_name: String,
    /// Target portal group tag of the session.
    pub tpgt: u16,
    /// Relative target port identifier (one per portal group).
    pub relative_port: u16,
    /// [`Nexus::key`], made once (it is looked up by every command).
    key: String,
}

impl Nexus {
    /// The nexus of a session.
    pub fn new(
        initiator_name: impl Into<String>,
        isid: [u8; 6],
        target_name: impl Into<String>,
        tpgt: u16,
        relative_port: u16,
    ) -> Self {
        let mut n = Self {
            initiator_name: initiator_name.into(),
            isid,
            target_name: target_name.into(),
            tpgt,
            relative_port,
            key: String::new(),
        };
        n.key = format!("{}|{}", n.initiator_port(), n.target_port());
        n
    }

    /// The iSCSI initiator port name: `<name>,i,0x<isid>` (RFC 7143 section 4.2.7.1).
    pub fn initiator_port(&self) -> String {
        let isid: String = self.isid.iter().map(|b| format!("{b:02x}")).collect();
        format!("{},i,0x{isid}", self.initiator_name)
    }

    /// The iSCSI target port name: `<name>,t,0x<tpgt>`.
    pub fn target_port(&self) -> String {
        format!("{},t,0x{:04x}", self.target_name, self.tpgt)
    }

    /// A key identifying this I_T nexus.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// One SCSI command as the transport delivers it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The I_T nexus the command arrived on.
    pub nexus: &'a Nexus,
    /// The CDB.
    pub cdb: &'a [u8],
    /// Data-Out, in order (may be shorter than the CDB asks for: the transport's expected
    /// length rules, and only whole blocks present are written).
    pub data_out: &'a [Bytes],
    /// The LUNs this nexus sees (for REPORT LUNS).
    pub luns: &'a [u16],
    /// Set when the task is aborted; long-running commands check it and stop early.
    pub abort: Option<&'a std::sync::atomic::AtomicBool>,
    /// Finds copy targets for EXTENDED COPY (`None`: no copy target can be resolved).
    pub resolver: Option<&'a dyn LunResolver>,
    /// Set by [`LogicalUnit::execute_nowait`]: a read or write that would have to wait
    /// raises the flag instead, and its response is discarded.
    pub(crate) would_block: Option<&'a std::cell::Cell<bool>>,
    /// Set by [`WriteRun::join`]: a plain write is checked but not written; the run
    /// writes its data.
    pub(crate) defer: Option<&'a std::cell::Cell<gather::Deferral>>,
}

impl<'a> Request<'a> {
    /// A command as the transport delivers it.
    pub fn new(
        nexus: &'a Nexus,
        cdb: &'a [u8],
        data_out: &'a [Bytes],
        luns: &'a [u16],
        abort: Option<&'a std::sync::atomic::AtomicBool>,
        resolver: Option<&'a dyn LunResolver>,
    ) -> Self {
        Self {
            nexus,
            cdb,
            data_out,
            luns,
            abort,
            resolver,
            would_block: None,
            defer: None,
        }
    }
}

impl Request<'_> {
    /// Whether the task has been aborted.
    pub fn aborted(&self) -> bool {
        self.abort
            .is_some_and(|a| a.load(std::sync::atomic::Ordering::Acquire))
    }
}

/// The outcome of a command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// SCSI status.
    pub status: u8,
    /// Sense data (for CHECK CONDITION).
    pub sense: Bytes,
    /// Data-In as the command defines it (allocation length applied).
    pub data: Bytes,
    /// For commands with Data-Out: the bytes the CDB asked for.
    pub write_len: u32,
}

impl Response {
    /// GOOD with no data.
    pub fn good() -> Self {
        Self::default()
    }

    /// GOOD with Data-In.
    pub fn data(data: impl Into<Bytes>) -> Self {
        Self {
            data: data.into(),
            ..Self::default()
        }
    }

    /// A status without sense (e.g., RESERVATION CONFLICT).
    pub fn status(status: u8) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    /// CHECK CONDITION.
    pub fn check(sense: Sense, descriptor: bool) -> Self {
        Self {
            status: status::CHECK_CONDITION,
            sense: sense.encode(descriptor),
            ..Self::default()
        }
    }
}
