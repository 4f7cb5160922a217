//! The ironlun admin protocol (docs/admin-protocol.md): one JSON object per line in each
//! direction over a local Unix socket. A request names a method and its parameters,
//! spelled as in the SMI-S documents (`CreateGroupReplica`, `ModifyReplicaSynchronization`
//! of `CIM_ReplicationService`) or as ironlun's volume methods; the response carries
//! `ReturnValue`, the method's out parameters and, on failure, an `Error` naming the
//! parameter at fault.
//!
//! This crate is sans-IO on the server side ([`Dispatcher::handle_line`] turns a request
//! line into a response object) and holds the blocking [`client::Client`] the CLI uses.
#![warn(missing_docs)]

pub mod client;
mod dispatch;
pub mod instances;
mod params;
pub mod refs;

pub use self::{
    dispatch::{Dispatcher, Exports, METHODS},
    refs::Ref,
};

/// The protocol version (`GetVersion`); the major number changes only with incompatible
/// changes.
pub const PROTOCOL_VERSION: &str = "1.0";

/// The largest request line accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
