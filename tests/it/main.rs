//! Integration tests of the ironlun binary on loopback: raw PDUs from a test initiator, and
//! real peers (libiscsi's tools, qemu-img).

// Test modules share helpers with `pub`; nothing here is a public API.
#![allow(unreachable_pub)]

mod harness;
mod initiator;

mod admin_socket;
mod crash;
mod discovery;
mod faults;
mod full_feature;
mod guest;
mod ha;
mod hostile;
mod libiscsi;
mod login;
mod proxy;
mod qemu;
mod remote;
mod replication;
mod security;
mod soak;
mod tgt;
