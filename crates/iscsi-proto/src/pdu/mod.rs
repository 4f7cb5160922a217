//! iSCSI PDUs (RFC 7143 section 11): the 48-byte Basic Header Segment, the Additional Header
//! Segments and one typed struct per opcode, parsed and built in both directions.
//!
//! Parsing is two-step, as a framer needs it: [`Bhs::parse`] reads the fixed header (with nom's
//! streaming `take`, so a short buffer is `Incomplete`), the framer checks the AHS and data
//! lengths against the negotiated limits, and only then [`Pdu::parse`] decodes the body.

mod ahs;
mod initiator;
mod target;

use bytes::Bytes;
use nom::{IResult, Parser, bytes::streaming::take};

pub use self::{
    ahs::{Ahs, AhsType},
    initiator::{
        Cdb, DataOut, LoginRequest, LogoutRequest, NopOut, ScsiCommand, SnackRequest,
        TaskMgmtRequest, TextRequest,
    },
    target::{
        AsyncMessage, DataIn, LoginResponse, LogoutResponse, NopIn, R2t, Reject, ScsiResponse,
        TaskMgmtResponse, TextResponse,
    },
};
use crate::error::PduError;

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;

/// The reserved Initiator/Target Task Tag value (RFC 7143 section 11.2.1.7).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// An iSCSI opcode (the low six bits of byte 0). Open: unknown values survive parsing so the
/// target can answer them with a Reject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Opcode(pub u8);

impl Opcode {
    /// NOP-Out (initiator).
    pub const NOP_OUT: Self = Self(0x00);
    /// SCSI Command (initiator).
    pub const SCSI_COMMAND: Self = Self(0x01);
    /// SCSI Task Management Function Request (initiator).
    pub const TASK_MGMT_REQUEST: Self = Self(0x02);
    /// Login Request (initiator).
    pub const LOGIN_REQUEST: Self = Self(0x03);
    /// Text Request (initiator).
    pub const TEXT_REQUEST: Self = Self(0x04);
    /// SCSI Data-Out (initiator).
    pub const DATA_OUT: Self = Self(0x05);
    /// Logout Request (initiator).
    pub const LOGOUT_REQUEST: Self = Self(0x06);
    /// SNACK Request (initiator).
    pub const SNACK_REQUEST: Self = Self(0x10);
    /// NOP-In (target).
    pub const NOP_IN: Self = Self(0x20);
    /// SCSI Response (target).
    pub const SCSI_RESPONSE: Self = Self(0x21);
    /// SCSI Task Management Function Response (target).
    pub const TASK_MGMT_RESPONSE: Self = Self(0x22);
    /// Login Response (target).
    pub const LOGIN_RESPONSE: Self = Self(0x23);
    /// Text Response (target).
    pub const TEXT_RESPONSE: Self = Self(0x24);
    /// SCSI Data-In (target).
    pub const DATA_IN: Self = Self(0x25);
    /// Logout Response (target).
    pub const LOGOUT_RESPONSE: Self = Self(0x26);
    /// Ready To Transfer (target).
    pub const R2T: Self = Self(0x31);
    /// Asynchronous Message (target).
    pub const ASYNC_MESSAGE: Self = Self(0x32);
    /// Reject (target).
    pub const REJECT: Self = Self(0x3f);

    /// Whether this opcode is one an initiator sends.
    pub fn is_initiator(self) -> bool {
        self.0 < 0x20
    }
}

/// The raw 48-byte Basic Header Segment with accessors for the fields every PDU shares.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bhs(pub [u8; BHS_LEN]);

impl Bhs {
    /// Parse a BHS from the front of `input` (streaming: fewer than 48 bytes is `Incomplete`).
    pub fn parse(input: &[u8]) -> IResult<&[u8], Self> {
        let (rest, raw) = take(BHS_LEN).parse(input)?;
        let mut bhs = [0u8; BHS_LEN];
        bhs.copy_from_slice(raw);
        Ok((rest, Self(bhs)))
    }

    /// The opcode.
    pub fn opcode(&self) -> Opcode {
        Opcode(self.0[0] & 0x3f)
    }

    /// The I (immediate delivery) bit.
    pub fn immediate(&self) -> bool {
        self.0[0] & 0x40 != 0
    }

    /// The F (final) bit of byte 1.
    pub fn final_bit(&self) -> bool {
        self.0[1] & 0x80 != 0
    }

    /// TotalAHSLength in bytes.
    pub fn total_ahs_len(&self) -> usize {
        usize::from(self.0[4]) * 4
    }

    /// DataSegmentLength in bytes (without padding).
    pub fn data_segment_len(&self) -> usize {
        (usize::from(self.0[5]) << 16) | (usize::from(self.0[6]) << 8) | usize::from(self.0[7])
    }

    /// The Initiator Task Tag.
    pub fn itt(&self) -> u32 {
        be32(&self.0, 16)
    }

    /// The 8-byte LUN field (bytes 8..16) as a big-endian number.
    pub fn lun(&self) -> u64 {
        u64::from_be_bytes(arr8(&self.0, 8))
    }
}

impl std::fmt::Debug for Bhs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bhs")
            .field("opcode", &self.opcode())
            .field("itt", &format_args!("{:#x}", self.itt()))
            .field("ahs", &self.total_ahs_len())
            .field("dsl", &self.data_segment_len())
            .finish()
    }
}

/// A decoded PDU of any type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pdu {
    /// NOP-Out.
    NopOut(NopOut),
    /// SCSI Command.
    ScsiCommand(ScsiCommand),
    /// Task Management Function Request.
    TaskMgmtRequest(TaskMgmtRequest),
    /// Login Request.
    LoginRequest(LoginRequest),
    /// Text Request.
    TextRequest(TextRequest),
    /// SCSI Data-Out.
    DataOut(DataOut),
    /// Logout Request.
    LogoutRequest(LogoutRequest),
    /// SNACK Request.
    SnackRequest(SnackRequest),
    /// NOP-In.
    NopIn(NopIn),
    /// SCSI Response.
    ScsiResponse(ScsiResponse),
    /// Task Management Function Response.
    TaskMgmtResponse(TaskMgmtResponse),
    /// Login Response.
    LoginResponse(LoginResponse),
    /// Text Response.
    TextResponse(TextResponse),
    /// SCSI Data-In.
    DataIn(DataIn),
    /// Logout Response.
    LogoutResponse(LogoutResponse),
    /// Ready To Transfer.
    R2t(R2t),
    /// Asynchronous Message.
    AsyncMessage(AsyncMessage),
    /// Reject.
    Reject(Reject),
}

impl Pdu {
    /// Decode a PDU from its header, its AHS bytes and its data segment (padding and digests
    /// already removed by the framer).
    pub fn parse(bhs: &Bhs, ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        let ahs = Ahs::parse_all(ahs)?;
        let b = &bhs.0;
        Ok(match bhs.opcode() {
            Opcode::NOP_OUT => Self::NopOut(NopOut::parse(b, data)),
            Opcode::SCSI_COMMAND => Self::ScsiCommand(ScsiCommand::parse(b, &ahs, data)?),
            Opcode::TASK_MGMT_REQUEST => Self::TaskMgmtRequest(TaskMgmtRequest::parse(b)),
            Opcode::LOGIN_REQUEST => Self::LoginRequest(LoginRequest::parse(b, data)),
            Opcode::TEXT_REQUEST => Self::TextRequest(TextRequest::parse(b, data)),
            Opcode::DATA_OUT => Self::DataOut(DataOut::parse(b, data)),
            Opcode::LOGOUT_REQUEST => Self::LogoutRequest(LogoutRequest::parse(b)),
            Opcode::SNACK_REQUEST => Self::SnackRequest(SnackRequest::parse(b)),
            Opcode::NOP_IN => Self::NopIn(NopIn::parse(b, data)),
            Opcode::SCSI_RESPONSE => Self::ScsiResponse(ScsiResponse::parse(b, data)),
            Opcode::TASK_MGMT_RESPONSE => Self::TaskMgmtResponse(TaskMgmtResponse::parse(b)),
            Opcode::LOGIN_RESPONSE => Self::LoginResponse(LoginResponse::parse(b, data)),
            Opcode::TEXT_RESPONSE => Self::TextResponse(TextResponse::parse(b, data)),
            Opcode::DATA_IN => Self::DataIn(DataIn::parse(b, data)),
            Opcode::LOGOUT_RESPONSE => Self::LogoutResponse(LogoutResponse::parse(b)),
            Opcode::R2T => Self::R2t(R2t::parse(b)),
            Opcode::ASYNC_MESSAGE => Self::AsyncMessage(AsyncMessage::parse(b, data)),
            Opcode::REJECT => Self::Reject(Reject::parse(b, data)),
            other => return Err(PduError::UnknownOpcode(other.0)),
        })
    }

    /// The opcode of this PDU.
    pub fn opcode(&self) -> Opcode {
        match self {
            Self::NopOut(_) => Opcode::NOP_OUT,
            Self::ScsiCommand(_) => Opcode::SCSI_COMMAND,
            Self::TaskMgmtRequest(_) => Opcode::TASK_MGMT_REQUEST,
            Self::LoginRequest(_) => Opcode::LOGIN_REQUEST,
            Self::TextRequest(_) => Opcode::TEXT_REQUEST,
            Self::DataOut(_) => Opcode::DATA_OUT,
            Self::LogoutRequest(_) => Opcode::LOGOUT_REQUEST,
            Self::SnackRequest(_) => Opcode::SNACK_REQUEST,
            Self::NopIn(_) => Opcode::NOP_IN,
            Self::ScsiResponse(_) => Opcode::SCSI_RESPONSE,
            Self::TaskMgmtResponse(_) => Opcode::TASK_MGMT_RESPONSE,
            Self::LoginResponse(_) => Opcode::LOGIN_RESPONSE,
            Self::TextResponse(_) => Opcode::TEXT_RESPONSE,
            Self::DataIn(_) => Opcode::DATA_IN,
            Self::LogoutResponse(_) => Opcode::LOGOUT_RESPONSE,
            Self::R2t(_) => Opcode::R2T,
            Self::AsyncMessage(_) => Opcode::ASYNC_MESSAGE,
            Self::Reject(_) => Opcode::REJECT,
        }
    }

    /// Build the BHS (with TotalAHSLength and DataSegmentLength filled in), the AHS bytes and
    /// the data segment (unpadded) of this PDU.
    pub fn encode(&self) -> (Bhs, Bytes, Bytes) {
        let mut b = [0u8; BHS_LEN];
        let empty = Bytes::new();
        let (ahs, data) = match self {
            Self::NopOut(p) => (p.encode(&mut b), p.data.clone()),
            Self::ScsiCommand(p) => (p.encode(&mut b), p.data.clone()),
            Self::TaskMgmtRequest(p) => (p.encode(&mut b), empty),
            Self::LoginRequest(p) => (p.encode(&mut b), p.data.clone()),
            Self::TextRequest(p) => (p.encode(&mut b), p.data.clone()),
            Self::DataOut(p) => (p.encode(&mut b), p.data.clone()),
            Self::LogoutRequest(p) => (p.encode(&mut b), empty),
            Self::SnackRequest(p) => (p.encode(&mut b), empty),
            Self::NopIn(p) => (p.encode(&mut b), p.data.clone()),
            Self::ScsiResponse(p) => (p.encode(&mut b), p.data.clone()),
            Self::TaskMgmtResponse(p) => (p.encode(&mut b), empty),
            Self::LoginResponse(p) => (p.encode(&mut b), p.data.clone()),
            Self::TextResponse(p) => (p.encode(&mut b), p.data.clone()),
            Self::DataIn(p) => (p.encode(&mut b), p.data.clone()),
            Self::LogoutResponse(p) => (p.encode(&mut b), empty),
            Self::R2t(p) => (p.encode(&mut b), empty),
            Self::AsyncMessage(p) => (p.encode(&mut b), p.data.clone()),
            Self::Reject(p) => (p.encode(&mut b), p.data.clone()),
        };
        // AHS is always a multiple of 4 bytes and at most 255 words (checked by Ahs::encode).
        b[4] = (ahs.len() / 4) as u8;
        set_dsl(&mut b, data.len());
        (Bhs(b), ahs, data)
    }
}

// ---- field helpers shared by the PDU modules -------------------------------------------------

/// Read a big-endian u32 at `off` of the header.
pub(crate) fn be32(b: &[u8; BHS_LEN], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Read a big-endian u16 at `off` of the header.
pub(crate) fn be16(b: &[u8; BHS_LEN], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// Copy 8 bytes at `off`.
pub(crate) fn arr8(b: &[u8; BHS_LEN], off: usize) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    a
}

/// Write a big-endian u32 at `off`.
pub(crate) fn put32(b: &mut [u8; BHS_LEN], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// Write a big-endian u16 at `off`.
pub(crate) fn put16(b: &mut [u8; BHS_LEN], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// Write the 24-bit DataSegmentLength. Callers keep data segments below 2^24 bytes (the
/// largest MaxRecvDataSegmentLength is 2^24 - 1).
pub(crate) fn set_dsl(b: &mut [u8; BHS_LEN], len: usize) {
    let len = len.min(0x00ff_ffff) as u32;
    b[5] = (len >> 16) as u8;
    b[6] = (len >> 8) as u8;
    b[7] = len as u8;
}

/// Opcode byte with the immediate bit.
pub(crate) fn op_byte(op: Opcode, immediate: bool) -> u8 {
    op.0 | if immediate { 0x40 } else { 0 }
}

#[cfg(test)]
mod tests;
