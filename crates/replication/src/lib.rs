//! Replication in the write path: synchronous and asynchronous mirrors, copy-on-write
//! snapshots and clones, per volume and per consistency group.
//!
//! Layout:
//! - [`types`] and [`table`]: the SMI-S vocabulary and the state machine as one table,
//!   decided without I/O;
//! - [`volume`]: the volume a LUN serves; every write passes through the hooks of its
//!   relationships;
//! - [`snapshot`], [`clone`], [`mirror`]: the relationships and their replica devices;
//! - [`service`]: the replication service (volumes, groups, relationships, jobs,
//!   persistence) that the admin socket drives.
//!
//! This crate knows nothing of SCSI or iSCSI; it sits on [`blockdev::BlockDevice`] and is
//! itself a `BlockDevice` to the layer above.
#![warn(missing_docs)]

pub mod al;
pub mod bitmap;
pub mod clone;
pub mod journal;
pub mod locks;
pub mod mirror;
pub mod pool;
pub mod reclog;
mod sched;
pub mod service;
pub mod snapmap;
pub mod snapshot;
pub mod table;
pub mod testing;
pub mod types;
pub mod volume;
pub mod writeback;

#[cfg(test)]
mod mirror_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod writeback_tests;

pub use self::{
    types::{CopyState, Mode, Operation, ProgressStatus, ReturnCode, SyncType},
    volume::Volume,
};
