//! Sans-IO iSCSI (RFC 7143) for the target side, and the codec an initiator needs too.
//!
//! This crate contains no networking code and reads no clock: every function that depends on
//! time takes `now`. It knows nothing of SCSI beyond carrying CDBs, data and sense bytes, and
//! nothing of tokio. The server feeds it bytes and events and performs what it outputs.
//!
//! - [`pdu`]: every PDU type, parsed (nom) and built;
//! - [`frame`]: framing with CRC32C digests and length limits;
//! - [`text`], [`negotiate`]: key=value text and the negotiation result functions;
//! - [`chap`], [`login`]: the login phase with CHAP;
//! - [`ffp`]: the full feature phase of a connection.
#![warn(missing_docs)]

pub mod chap;
pub mod error;
pub mod ffp;
pub mod frame;
pub mod login;
pub mod lun;
pub mod negotiate;
pub mod pdu;
pub mod serial;
pub mod text;

pub use error::{FrameError, LoginStatus, PduError, RejectReason};
