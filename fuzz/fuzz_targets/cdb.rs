//! SCSI command execution: arbitrary CDBs and Data-Out on two logical units (512-byte and
//! 4096-byte blocks) over small memory devices, through `LunMap::execute`, as three I_T
//! nexuses (two initiators, one of them with two sessions), with an EXTENDED COPY resolver
//! that finds both units by their NAA or T10 designators.
//!
//! Input: a sequence of commands separated by the four bytes `FE 4E 58 54` ("\xfeNXT"),
//! the first of which is followed by a selector byte (the first command uses selector 0):
//! - selector bits 0-1: the nexus (0-2; 3 is nexus 0 again);
//! - bits 2-3: the LUN (0, 1, 5 which does not exist, or an invalid LUN address);
//! - bits 4-6: the CDB length (0: the command's own length from the opcode table, or 16
//!   for unknown opcodes; 1: 6; 2: 10; 3: 12; 4: 16; 5: 32; 6: the whole command; 7: the
//!   iSCSI way: at least 16 bytes, zero-padded);
//! - bit 7: Data-Out split into two buffers.
//!
//! A command is its CDB (the opcode is its first byte), then its Data-Out.
#![no_main]

use std::sync::Arc;

use blockdev::MemDevice;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use scsi::{LogicalUnit, LuConfig, LunMap, LunResolver, Nexus, Request, status};

const SEPARATOR: &[u8] = b"\xfeNXT";
const MAX_COMMANDS: usize = 16;

#[derive(Debug)]
struct Resolver(Vec<Arc<LogicalUnit>>);

impl LunResolver for Resolver {
    fn resolve(&self, designator_type: u8, value: &[u8]) -> Option<Arc<LogicalUnit>> {
        self.0
            .iter()
            .find(|lu| {
                let c = lu.config();
                match designator_type {
                    3 => value == c.naa,
                    1 => {
                        let mut t10 = format!("{:<8}", c.vendor).into_bytes();
                        t10.truncate(8);
                        t10.extend(c.serial.bytes());
                        value == t10.as_slice()
                    }
                    _ => false,
                }
            })
            .cloned()
    }
}

fn lu(serial: &str, naa_last: u8, block_size: u32, blocks: u64, thin: bool) -> Arc<LogicalUnit> {
    let dev = Arc::new(MemDevice::new(blocks * u64::from(block_size)));
    let mut naa = [0u8; 8];
    naa[0] = 0x30;
    naa[7] = naa_last;
    let mut cfg = LuConfig::new(serial, naa, block_size);
    cfg.port_groups = vec![(1, 1), (2, 2)];
    cfg.thin = thin;
    cfg.sanitize_rate = 0;
    cfg.max_transfer_blocks = 64;
    cfg.removable = naa_last == 2;
    Arc::new(LogicalUnit::new(cfg, dev))
}

fn nexus(name: &str, isid_last: u8) -> Nexus {
    Nexus::new(
        name,
        [0x80, 0, 0, 0, 0, isid_last],
        "iqn.2026-11.io.ironlun:fuzz",
        1,
        1,
    )
}

/// Split `data` at every separator.
fn commands(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < MAX_COMMANDS {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + SEPARATOR.len()..];
            }
            None => {
                out.push(rest);
                break;
            }
        }
    }
    out
}

fn natural_len(opcode: u8) -> usize {
    scsi::opcodes::commands()
        .iter()
        .find(|c| c.opcode == opcode)
        .map_or(16, |c| usize::from(c.cdb_len))
}

fuzz_target!(|data: &[u8]| {
    let lu0 = lu("FUZZ0000", 1, 512, 64, true);
    let lu1 = lu("FUZZ0001", 2, 4096, 16, false);
    let mut map = LunMap::new();
    map.insert(0, lu0.clone());
    map.insert(1, lu1.clone());
    let resolver = Resolver(vec![lu0, lu1]);
    let nexuses = [
        nexus("iqn.2026-11.test:a", 1),
        nexus("iqn.2026-11.test:b", 1),
        nexus("iqn.2026-11.test:a", 2),
    ];
    // Consume the POWER ON unit attention of every nexus.
    for n in &nexuses {
        for lun in [0, 1] {
            let req = Request::new(
                n,
                &[0, 0, 0, 0, 0, 0],
                &[],
                map.luns(),
                None,
                Some(&resolver),
            );
            map.execute(Some(lun), &req);
        }
    }

    for (i, cmd) in commands(data).into_iter().enumerate() {
        let (sel, body) = match (i, cmd.split_first()) {
            (0, _) => (0, cmd),
            (_, Some((&s, b))) => (s, b),
            (_, None) => continue,
        };
        let Some(&opcode) = body.first() else {
            continue;
        };
        let nexus = &nexuses[usize::from(sel & 3) % nexuses.len()];
        let lun = match (sel >> 2) & 3 {
            0 => Some(0),
            1 => Some(1),
            2 => Some(5),
            _ => None,
        };
        let want = match (sel >> 4) & 7 {
            0 => natural_len(opcode),
            1 => 6,
            2 => 10,
            3 => 12,
            4 => 16,
            5 => 32,
            6 => body.len(),
            _ => natural_len(opcode).max(16),
        };
        let n = want.min(body.len());
        let mut cdb = body[..n].to_vec();
        if (sel >> 4) & 7 == 7 {
            cdb.resize(want, 0);
        }
        let payload = &body[n..];
        let bufs: Vec<Bytes> = if payload.is_empty() {
            Vec::new()
        } else if sel & 0x80 != 0 {
            let (a, b) = payload.split_at(payload.len() / 2);
            vec![Bytes::copy_from_slice(a), Bytes::copy_from_slice(b)]
        } else {
            vec![Bytes::copy_from_slice(payload)]
        };
        let req = Request::new(nexus, &cdb, &bufs, map.luns(), None, Some(&resolver));
        let r = map.execute(lun, &req);
        if r.status == status::CHECK_CONDITION {
            assert!(!r.sense.is_empty(), "CHECK CONDITION without sense data");
        } else {
            assert!(r.sense.is_empty(), "sense data with status {:#x}", r.status);
        }
    }
});
