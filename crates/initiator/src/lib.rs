//! A blocking iSCSI initiator built on the sans-IO protocol crate: ironlun uses it to write
//! to a remote mirror target (another ironlun, or any standard iSCSI target such as tgt).
//!
//! - [`Session`]: login (CHAP one-way or mutual, digests), then SCSI commands from many
//!   threads over one connection, with R2T, immediate and unsolicited data, NOP pings and
//!   Text requests;
//! - [`RemoteLun`]: a LUN of that target as a [`blockdev::BlockDevice`], reconnecting when
//!   the link comes back.
#![warn(missing_docs)]

mod login;
mod lun;
mod session;

pub use self::{
    lun::RemoteLun,
    session::{Config, Credential, Error, Negotiated, Response, Session},
};
