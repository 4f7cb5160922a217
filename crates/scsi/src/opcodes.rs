//! The table of supported commands: dispatch, CDB usage data and timeouts for REPORT
//! SUPPORTED OPERATION CODES (SPC-4 section 6.35).

use crate::{LogicalUnit, Request, Response, cdb::CmdResult, cmd};

/// A command handler.
pub(crate) type Handler = fn(&LogicalUnit, &Request<'_>) -> CmdResult<Response>;

/// One supported command.
#[derive(Clone, Copy)]
pub struct Command {
    /// Operation code.
    pub opcode: u8,
    /// Service action, for opcodes that have one.
    pub service_action: Option<u8>,
    /// CDB length.
    pub cdb_len: u8,
    /// CDB usage data: per byte, the bits the command uses.
    pub usage: &'static [u8],
    /// Name, for logs.
    pub name: &'static str,
    /// Recommended timeout in seconds (timeouts descriptor).
    pub timeout: u32,
    pub(crate) handler: Handler,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:#04x})", self.name, self.opcode)
    }
}

/// Opcodes whose CDB byte 1 (bits 0-4) carries a service action.
fn has_service_action(opcode: u8) -> bool {
    matches!(opcode, 0x48 | 0x5e | 0x5f | 0x83 | 0x84 | 0x9e | 0xa3)
}

/// Find the command for a CDB.
pub(crate) fn lookup(opcode: u8, cdb: &[u8]) -> Option<&'static Command> {
    let sa = if has_service_action(opcode) {
        Some(cdb.get(1)? & 0x1f)
    } else {
        None
    };
    COMMANDS
        .iter()
        .find(|c| c.opcode == opcode && (sa.is_none() || c.service_action == sa))
}

/// Every supported command, in opcode order.
pub fn commands() -> &'static [Command] {
    COMMANDS
}

/// Whether an opcode is one of the table's commands whose entry differs by service action.
pub fn opcode_has_service_action(opcode: u8) -> bool {
    has_service_action(opcode)
}

macro_rules! c {
    ($op:expr, $sa:expr, $name:expr, $t:expr, $h:path, [$($u:expr),* $(,)?]) => {
        Command {
            opcode: $op,
            service_action: $sa,
            cdb_len: [$($u),*].len() as u8,
            usage: &[$($u),*],
            name: $name,
            timeout: $t,
            handler: $h,
        }
    };
}

const FF: u8 = 0xff;

#[rustfmt::skip]
static COMMANDS: &[Command] = &[
    c!(0x00, None, "TEST UNIT READY", 10, cmd::misc::test_unit_ready, [0x00, 0, 0, 0, 0, 0]),
    c!(0x03, None, "REQUEST SENSE", 10, cmd::misc::request_sense, [0x03, 0x01, 0, 0, FF, 0]),
    c!(0x08, None, "READ(6)", 60, cmd::io::read, [0x08, 0x1f, FF, FF, FF, 0]),
    c!(0x0a, None, "WRITE(6)", 60, cmd::io::write, [0x0a, 0x1f, FF, FF, FF, 0]),
    c!(0x12, None, "INQUIRY", 10, crate::vpd::inquiry, [0x12, 0x01, FF, FF, FF, 0]),
    c!(0x1a, None, "MODE SENSE(6)", 10, crate::mode::mode_sense6, [0x1a, 0x08, FF, FF, FF, 0]),
    c!(0x1b, None, "START STOP UNIT", 60, cmd::misc::start_stop_unit, [0x1b, 0x01, 0, 0x0f, 0xf7, 0]),
    c!(0x1e, None, "PREVENT ALLOW MEDIUM REMOVAL", 10, cmd::misc::prevent_allow, [0x1e, 0, 0, 0, 0x03, 0]),
    c!(0x25, None, "READ CAPACITY(10)", 10, cmd::misc::read_capacity10, [0x25, 0, FF, FF, FF, FF, 0, 0, 0x01, 0]),
    c!(0x28, None, "READ(10)", 60, cmd::io::read, [0x28, 0x18, FF, FF, FF, FF, 0x1f, FF, FF, 0]),
    c!(0x2a, None, "WRITE(10)", 60, cmd::io::write, [0x2a, 0x18, FF, FF, FF, FF, 0x1f, FF, FF, 0]),
    c!(0x2e, None, "WRITE AND VERIFY(10)", 60, cmd::io::write_verify, [0x2e, 0x12, FF, FF, FF, FF, 0x1f, FF, FF, 0]),
    c!(0x2f, None, "VERIFY(10)", 60, cmd::io::verify, [0x2f, 0x16, FF, FF, FF, FF, 0x1f, FF, FF, 0]),
    c!(0x34, None, "PRE-FETCH(10)", 60, cmd::io::prefetch, [0x34, 0x02, FF, FF, FF, FF, 0x1f, FF, FF, 0]),
    c!(0x35, None, "SYNCHRONIZE CACHE(10)", 60, cmd::io::sync_cache, [0x35, 0x02, FF, FF, FF, FF, 0x1f, FF, FF, 0]),
    c!(0x41, None, "WRITE SAME(10)", 120, cmd::io::write_same, [0x41, 0x08, FF, FF, FF, FF, 0x1f, FF, FF, 0]),
    c!(0x42, None, "UNMAP", 120, cmd::io::unmap, [0x42, 0, 0, 0, 0, 0, 0x1f, FF, FF, 0]),
    c!(0x5a, None, "MODE SENSE(10)", 10, crate::mode::mode_sense10, [0x5a, 0x18, FF, FF, 0, 0, 0, FF, FF, 0]),
    c!(0x88, None, "READ(16)", 60, cmd::io::read, [0x88, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0x8a, None, "WRITE(16)", 60, cmd::io::write, [0x8a, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0x8e, None, "WRITE AND VERIFY(16)", 60, cmd::io::write_verify, [0x8e, 0x12, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0x8f, None, "VERIFY(16)", 60, cmd::io::verify, [0x8f, 0x16, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0x90, None, "PRE-FETCH(16)", 60, cmd::io::prefetch, [0x90, 0x02, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0x91, None, "SYNCHRONIZE CACHE(16)", 60, cmd::io::sync_cache, [0x91, 0x02, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0x93, None, "WRITE SAME(16)", 120, cmd::io::write_same, [0x93, 0x09, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0x9e, Some(0x10), "READ CAPACITY(16)", 10, cmd::misc::read_capacity16, [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0]),
    c!(0x9e, Some(0x12), "GET LBA STATUS", 60, cmd::misc::get_lba_status, [0x9e, 0x12, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
    c!(0xa0, None, "REPORT LUNS", 10, cmd::misc::report_luns, [0xa0, 0, FF, 0, 0, 0, FF, FF, FF, FF, 0, 0]),
    c!(0xa3, Some(0x0c), "REPORT SUPPORTED OPERATION CODES", 10, cmd::rsoc::report_supported_opcodes, [0xa3, 0x0c, 0x87, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
    c!(0xa8, None, "READ(12)", 60, cmd::io::read, [0xa8, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0xaa, None, "WRITE(12)", 60, cmd::io::write, [0xaa, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0xae, None, "WRITE AND VERIFY(12)", 60, cmd::io::write_verify, [0xae, 0x12, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0xaf, None, "VERIFY(12)", 60, cmd::io::verify, [0xaf, 0x16, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
];
