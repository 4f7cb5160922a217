//! The ironlun server: configuration, targets, sessions and connections, wiring the sans-IO
//! protocol crate to tokio sockets and the SCSI emulation to the I/O threads.

pub mod admin;
pub mod cli;
pub mod config;
pub mod conn;
pub mod io_pool;
pub mod net_threads;
pub mod registry;
pub mod server;
pub mod sessions;
