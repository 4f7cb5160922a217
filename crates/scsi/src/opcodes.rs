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
pub(crate) fn lookup(opcode: u8, cdb: &[u8]) -> Lookup {
    let sa = if has_service_action(opcode) {
        cdb.get(1).map(|b| b & 0x1f)
    } else {
        None
    };
    let mut known = false;
    for c in COMMANDS.iter().filter(|c| c.opcode == opcode) {
        known = true;
        if sa.is_none() || c.service_action == sa {
            return Lookup::Found(c);
        }
    }
    if known {
        Lookup::BadServiceAction
    } else {
        Lookup::Unknown
    }
}

/// The result of looking up a CDB.
pub(crate) enum Lookup {
    /// A supported command.
    Found(&'static Command),
    /// A supported opcode with a service action that is not (INVALID FIELD IN CDB).
    BadServiceAction,
    /// An opcode that is not supported (INVALID COMMAND OPERATION CODE).
    Unknown,
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
    c!(0x15, None, "MODE SELECT(6)", 10, crate::mode::mode_select6, [0x15, 0x11, 0, 0, FF, 0]),
    c!(0x16, None, "RESERVE(6)", 10, crate::pr::reserve, [0x16, 0, 0, 0, 0, 0]),
    c!(0x17, None, "RELEASE(6)", 10, crate::pr::release, [0x17, 0, 0, 0, 0, 0]),
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
    c!(0x37, None, "READ DEFECT DATA(10)", 10, cmd::misc::read_defect_data, [0x37, 0, 0x1f, 0, 0, 0, 0, FF, FF, 0]),
    c!(0x41, None, "WRITE SAME(10)", 120, cmd::io::write_same, [0x41, 0x08, FF, FF, FF, FF, 0x1f, FF, FF, 0]),
    c!(0x42, None, "UNMAP", 120, cmd::io::unmap, [0x42, 0, 0, 0, 0, 0, 0x1f, FF, FF, 0]),
    c!(0x48, Some(0x01), "SANITIZE OVERWRITE", 3600, cmd::sanitize::sanitize, [0x48, 0x81, 0, 0, 0, 0, 0, FF, FF, 0]),
    c!(0x48, Some(0x02), "SANITIZE BLOCK ERASE", 600, cmd::sanitize::sanitize, [0x48, 0x82, 0, 0, 0, 0, 0, FF, FF, 0]),
    c!(0x48, Some(0x1f), "SANITIZE EXIT FAILURE MODE", 10, cmd::sanitize::sanitize, [0x48, 0x9f, 0, 0, 0, 0, 0, FF, FF, 0]),
    c!(0x55, None, "MODE SELECT(10)", 10, crate::mode::mode_select10, [0x55, 0x11, 0, 0, 0, 0, 0, FF, FF, 0]),
    c!(0x56, None, "RESERVE(10)", 10, crate::pr::reserve, [0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    c!(0x57, None, "RELEASE(10)", 10, crate::pr::release, [0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    c!(0x5a, None, "MODE SENSE(10)", 10, crate::mode::mode_sense10, [0x5a, 0x18, FF, FF, 0, 0, 0, FF, FF, 0]),
    c!(0x5e, Some(0x00), "PERSISTENT RESERVE IN (READ KEYS)", 10, crate::pr::pr_in, [0x5e, 0x00, 0, 0, 0, 0, 0, FF, FF, 0]),
    c!(0x5e, Some(0x01), "PERSISTENT RESERVE IN (READ RESERVATION)", 10, crate::pr::pr_in, [0x5e, 0x01, 0, 0, 0, 0, 0, FF, FF, 0]),
    c!(0x5e, Some(0x02), "PERSISTENT RESERVE IN (REPORT CAPABILITIES)", 10, crate::pr::pr_in, [0x5e, 0x02, 0, 0, 0, 0, 0, FF, FF, 0]),
    c!(0x5e, Some(0x03), "PERSISTENT RESERVE IN (READ FULL STATUS)", 10, crate::pr::pr_in, [0x5e, 0x03, 0, 0, 0, 0, 0, FF, FF, 0]),
    c!(0x5f, Some(0x00), "PERSISTENT RESERVE OUT (REGISTER)", 10, crate::pr::pr_out, [0x5f, 0x00, 0xff, 0, 0, FF, FF, FF, FF, 0]),
    c!(0x5f, Some(0x01), "PERSISTENT RESERVE OUT (RESERVE)", 10, crate::pr::pr_out, [0x5f, 0x01, 0xff, 0, 0, FF, FF, FF, FF, 0]),
    c!(0x5f, Some(0x02), "PERSISTENT RESERVE OUT (RELEASE)", 10, crate::pr::pr_out, [0x5f, 0x02, 0xff, 0, 0, FF, FF, FF, FF, 0]),
    c!(0x5f, Some(0x03), "PERSISTENT RESERVE OUT (CLEAR)", 10, crate::pr::pr_out, [0x5f, 0x03, 0xff, 0, 0, FF, FF, FF, FF, 0]),
    c!(0x5f, Some(0x04), "PERSISTENT RESERVE OUT (PREEMPT)", 10, crate::pr::pr_out, [0x5f, 0x04, 0xff, 0, 0, FF, FF, FF, FF, 0]),
    c!(0x5f, Some(0x05), "PERSISTENT RESERVE OUT (PREEMPT AND ABORT)", 10, crate::pr::pr_out, [0x5f, 0x05, 0xff, 0, 0, FF, FF, FF, FF, 0]),
    c!(0x5f, Some(0x06), "PERSISTENT RESERVE OUT (REGISTER AND IGNORE EXISTING KEY)", 10, crate::pr::pr_out, [0x5f, 0x06, 0xff, 0, 0, FF, FF, FF, FF, 0]),
    c!(0x5f, Some(0x07), "PERSISTENT RESERVE OUT (REGISTER AND MOVE)", 10, crate::pr::pr_out, [0x5f, 0x07, 0xff, 0, 0, FF, FF, FF, FF, 0]),
    c!(0x83, Some(0x00), "EXTENDED COPY(LID1)", 600, cmd::copy::extended_copy, [0x83, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0]),
    c!(0x84, Some(0x00), "RECEIVE COPY RESULTS (COPY STATUS)", 10, cmd::copy::receive_copy_results, [0x84, 0x00, FF, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0]),
    c!(0x84, Some(0x03), "RECEIVE COPY RESULTS (OPERATING PARAMETERS)", 10, cmd::copy::receive_copy_results, [0x84, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0]),
    c!(0x88, None, "READ(16)", 60, cmd::io::read, [0x88, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0x89, None, "COMPARE AND WRITE", 60, cmd::atomic::compare_and_write, [0x89, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0, 0, FF, 0x1f, 0]),
    c!(0x8a, None, "WRITE(16)", 60, cmd::io::write, [0x8a, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0x8b, None, "ORWRITE(16)", 60, cmd::atomic::orwrite, [0x8b, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0x8e, None, "WRITE AND VERIFY(16)", 60, cmd::io::write_verify, [0x8e, 0x12, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0x8f, None, "VERIFY(16)", 60, cmd::io::verify, [0x8f, 0x16, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0x90, None, "PRE-FETCH(16)", 60, cmd::io::prefetch, [0x90, 0x02, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0x91, None, "SYNCHRONIZE CACHE(16)", 60, cmd::io::sync_cache, [0x91, 0x02, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0x93, None, "WRITE SAME(16)", 120, cmd::io::write_same, [0x93, 0x09, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0x9c, None, "WRITE ATOMIC(16)", 60, cmd::atomic::write_atomic, [0x9c, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0, FF, FF, 0x1f, 0]),
    c!(0x9e, Some(0x10), "READ CAPACITY(16)", 10, cmd::misc::read_capacity16, [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0]),
    c!(0x9e, Some(0x12), "GET LBA STATUS", 60, cmd::misc::get_lba_status, [0x9e, 0x12, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
    c!(0xa0, None, "REPORT LUNS", 10, cmd::misc::report_luns, [0xa0, 0, FF, 0, 0, 0, FF, FF, FF, FF, 0, 0]),
    c!(0xa3, Some(0x0a), "REPORT TARGET PORT GROUPS", 10, cmd::misc::report_target_port_groups, [0xa3, 0xea, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0]),
    c!(0xa3, Some(0x0c), "REPORT SUPPORTED OPERATION CODES", 10, cmd::rsoc::report_supported_opcodes, [0xa3, 0x0c, 0x87, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
    c!(0xa8, None, "READ(12)", 60, cmd::io::read, [0xa8, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0xaa, None, "WRITE(12)", 60, cmd::io::write, [0xaa, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0xae, None, "WRITE AND VERIFY(12)", 60, cmd::io::write_verify, [0xae, 0x12, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0xaf, None, "VERIFY(12)", 60, cmd::io::verify, [0xaf, 0x16, FF, FF, FF, FF, FF, FF, FF, FF, 0x1f, 0]),
    c!(0xb7, None, "READ DEFECT DATA(12)", 10, cmd::misc::read_defect_data, [0xb7, 0x1f, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0]),
];
