//! REPORT SUPPORTED OPERATION CODES (SPC-4 section 6.35), from the command table.

use crate::{
    LogicalUnit, Request, Response,
    cdb::{CmdResult, be16, be32, invalid_field, truncate},
    opcodes::{Command, commands, opcode_has_service_action},
};

fn timeouts(c: &Command) -> [u8; 12] {
    let mut t = [0u8; 12];
    t[1] = 0x0a;
    t[4..8].copy_from_slice(&c.timeout.to_be_bytes());
    t[8..12].copy_from_slice(&c.timeout.to_be_bytes());
    t
}

/// REPORT SUPPORTED OPERATION CODES.
pub(crate) fn report_supported_opcodes(
    _lu: &LogicalUnit,
    req: &Request<'_>,
) -> CmdResult<Response> {
    let cdb = req.cdb;
    let rctd = cdb[2] & 0x80 != 0;
    let options = cdb[2] & 0x07;
    let opcode = cdb[3];
    let sa = be16(cdb, 4);
    let alloc = be32(cdb, 6) as usize;
    let d = match options {
        0 => {
            let mut d = vec![0u8; 4];
            for c in commands() {
                d.push(c.opcode);
                d.push(0);
                d.extend_from_slice(&u16::from(c.service_action.unwrap_or(0)).to_be_bytes());
                d.push(0);
                d.push(if rctd { 0x02 } else { 0 } | u8::from(c.service_action.is_some()));
                d.extend_from_slice(&u16::from(c.cdb_len).to_be_bytes());
                if rctd {
                    d.extend_from_slice(&timeouts(c));
                }
            }
            let len = (d.len() - 4) as u32;
            d[0..4].copy_from_slice(&len.to_be_bytes());
            d
        }
        1..=3 => {
            let with_sa = opcode_has_service_action(opcode);
            match options {
                1 if with_sa => return Err(invalid_field(2, None)),
                2 if !with_sa => return Err(invalid_field(2, None)),
                _ => {}
            }
            let found = commands().iter().find(|c| {
                c.opcode == opcode && (!with_sa || c.service_action.map(u16::from) == Some(sa))
            });
            one_command(found, rctd)
        }
        _ => return Err(invalid_field(2, Some(0))),
    };
    Ok(Response::data(truncate(d, alloc)))
}

fn one_command(c: Option<&Command>, rctd: bool) -> Vec<u8> {
    let Some(c) = c else {
        // SUPPORT = 001b: not supported.
        return vec![0, 0x01, 0, 0];
    };
    let mut d = vec![0u8, if rctd { 0x80 } else { 0 } | 0x03];
    d.extend_from_slice(&u16::from(c.cdb_len).to_be_bytes());
    d.extend_from_slice(c.usage);
    if rctd {
        d.extend_from_slice(&timeouts(c));
    }
    d
}
