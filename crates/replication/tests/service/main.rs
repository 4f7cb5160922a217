//! The replication service through its two methods: lifecycles, refusals with their return
//! codes, consistency groups, restarts and crashes (a module each).

#[path = "../common/mod.rs"]
mod common;

mod groups;
mod lifecycles;
mod refusals;
mod restarts;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::*;
use replication::{
    CopyState, ReturnCode,
    service::{CreateGroupReplica, ModifyReplicaSynchronization, ReplicationSettings},
    types::ProgressStatus,
};

const MIB: u64 = 1 << 20;

/// A mirror of `source` into the existing (configured, fault-injecting) volume `target`;
/// returns the group relationship and the pair.
fn mirror_into(rig: &Rig, source: &str, target: &str, mode: u16) -> (u64, u64) {
    let group = format!("{target}-g");
    rig.svc
        .create_group(Some(&group), &[target.into()])
        .unwrap();
    let gid = rig.create(CreateGroupReplica {
        sync_type: Some(6),
        mode: Some(mode),
        source_element: Some(source.into()),
        target_group: Some(group),
        ..Default::default()
    });
    (gid, rig.pairs(gid)[0])
}

// Operation numbers (smis-replication.md 2.4).
const ABORT: u16 = 2;
const ACTIVATE_CONSISTENCY: u16 = 3;
const ADD_SYNC_PAIR: u16 = 5;
const DEACTIVATE: u16 = 7;
const DETACH: u16 = 8;
const DISSOLVE: u16 = 9;
const FAILOVER: u16 = 10;
const FAILBACK: u16 = 11;
const FRACTURE: u16 = 12;
const REMOVE_SYNC_PAIR: u16 = 13;
const RESYNC: u16 = 14;
const RESTORE: u16 = 15;
const RESUME: u16 = 16;
const RESET_TO_SYNC: u16 = 17;
const RESET_TO_ASYNC: u16 = 18;
const RETURN_TO_POOL: u16 = 19;
const REVERSE: u16 = 20;
const SPLIT: u16 = 21;
const SUSPEND: u16 = 22;
const ACTIVATE: u16 = 4;
const PREPARE: u16 = 24;
