//! Errors of the protocol crate, sorted by what the peer sees: a Reject PDU, a login failure,
//! or a dropped connection.

use crate::pdu::Bhs;

/// A PDU body that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PduError {
    /// The opcode is not one RFC 7143 defines.
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// The Additional Header Segments are malformed.
    #[error("malformed additional header segment")]
    BadAhs,
}

/// A framing error: the byte stream cannot be trusted past this point, or one PDU must be
/// rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// DataSegmentLength exceeds the negotiated MaxRecvDataSegmentLength.
    #[error("data segment of {len} bytes exceeds the limit of {max}")]
    DataSegmentTooLong {
        /// The offending header.
        bhs: Bhs,
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The header digest does not match: the header cannot be trusted (connection is closed).
    #[error("header digest mismatch")]
    HeaderDigest,
    /// The data digest does not match: the PDU is rejected with reason 0x02.
    #[error("data digest mismatch")]
    DataDigest {
        /// The header of the PDU whose data was corrupted.
        bhs: Bhs,
    },
    /// A buffer handed over as one whole PDU does not hold exactly one (the receiver lost
    /// track of the stream: the connection is closed).
    #[error("a PDU of {want} bytes was received as {len} bytes")]
    WrongLength {
        /// Bytes received.
        len: usize,
        /// Bytes the header announces (0: no whole header).
        want: usize,
    },
}

/// Reject reason codes (RFC 7143 section 11.17.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RejectReason {
    /// Data (payload) digest error.
    DataDigestError = 0x02,
    /// SNACK Reject.
    SnackReject = 0x03,
    /// Protocol Error (e.g., a SNACK for a status that was already acknowledged).
    ProtocolError = 0x04,
    /// Command not supported.
    CommandNotSupported = 0x05,
    /// Immediate command reject: too many immediate commands.
    ImmediateCommandReject = 0x06,
    /// Task in progress.
    TaskInProgress = 0x07,
    /// Invalid data ack.
    InvalidDataAck = 0x08,
    /// Invalid PDU field.
    InvalidPduField = 0x09,
    /// Long op reject: out of resources.
    OutOfResources = 0x0a,
    /// Waiting for Logout.
    WaitingForLogout = 0x0c,
}

/// Login Status-Class and Status-Detail (RFC 7143 section 11.13.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginStatus {
    /// Status-Class.
    pub class: u8,
    /// Status-Detail.
    pub detail: u8,
}

impl LoginStatus {
    /// Success.
    pub const SUCCESS: Self = Self::new(0x00, 0x00);
    /// Target moved temporarily (redirect).
    pub const TARGET_MOVED_TEMPORARILY: Self = Self::new(0x01, 0x01);
    /// Miscellaneous initiator error.
    pub const INITIATOR_ERROR: Self = Self::new(0x02, 0x00);
    /// Authentication failure.
    pub const AUTHENTICATION_FAILURE: Self = Self::new(0x02, 0x01);
    /// Authorization failure: the initiator may not access this target.
    pub const AUTHORIZATION_FAILURE: Self = Self::new(0x02, 0x02);
    /// Target not found.
    pub const TARGET_NOT_FOUND: Self = Self::new(0x02, 0x03);
    /// Target removed.
    pub const TARGET_REMOVED: Self = Self::new(0x02, 0x04);
    /// Unsupported version.
    pub const UNSUPPORTED_VERSION: Self = Self::new(0x02, 0x05);
    /// Too many connections.
    pub const TOO_MANY_CONNECTIONS: Self = Self::new(0x02, 0x06);
    /// Missing parameter.
    pub const MISSING_PARAMETER: Self = Self::new(0x02, 0x07);
    /// Can't include in session.
    pub const CANT_INCLUDE_IN_SESSION: Self = Self::new(0x02, 0x08);
    /// Session type not supported.
    pub const SESSION_TYPE_NOT_SUPPORTED: Self = Self::new(0x02, 0x09);
    /// Session does not exist.
    pub const SESSION_DOES_NOT_EXIST: Self = Self::new(0x02, 0x0a);
    /// Invalid request during login.
    pub const INVALID_DURING_LOGIN: Self = Self::new(0x02, 0x0b);
    /// Target error.
    pub const TARGET_ERROR: Self = Self::new(0x03, 0x00);
    /// Service unavailable.
    pub const SERVICE_UNAVAILABLE: Self = Self::new(0x03, 0x01);
    /// Out of resources.
    pub const OUT_OF_RESOURCES: Self = Self::new(0x03, 0x02);

    /// A status from its class and detail.
    pub const fn new(class: u8, detail: u8) -> Self {
        Self { class, detail }
    }
}

impl std::fmt::Display for LoginStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x}{:02x}", self.class, self.detail)
    }
}
