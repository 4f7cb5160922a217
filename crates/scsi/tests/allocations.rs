//! A read allocates nothing per command in steady state: READ(10) of 4 KiB and of 32 KiB
//! from a memory-backed logical unit, its data sliced into Data-In PDUs as the transport
//! does and dropped once sent. Counted by `tests/support/counting_alloc.rs`.

use std::sync::Arc;

use blockdev::{BlockDevice, MemDevice};
use bytes::Bytes;
use scsi::{LogicalUnit, LuConfig, Nexus, Request};

#[path = "../../../tests/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, allocations};

#[global_allocator]
static ALLOC: Counting = Counting;

const BS: u64 = 512;

fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    [0x28, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]
}

/// `n` reads of `blocks` blocks, 32 in flight at a time: their data is held until the
/// batch's Data-In is "sent" (sliced into 8 KiB PDUs, each checked and dropped). Returns
/// the bytes read.
fn reads(lu: &LogicalUnit, nexus: &Nexus, n: u32, blocks: u16) -> usize {
    let mut held: Vec<(u64, Bytes)> = Vec::with_capacity(32);
    let mut bytes = 0;
    for k in 0..n {
        let lba = k % 1024 * u32::from(blocks);
        let r = lu.execute(&Request::new(
            nexus,
            &read10(lba, blocks),
            &[],
            &[0],
            None,
            None,
        ));
        assert_eq!(r.status, 0, "{r:?}");
        held.push((u64::from(lba), r.data));
        if held.len() < 32 && k + 1 < n {
            continue;
        }
        for (lba, d) in held.drain(..) {
            let d = d.slice(..d.len());
            let mut off = 0;
            while off < d.len() {
                let end = (off + 8192).min(d.len());
                let pdu = d.slice(off..end);
                // Block b holds b % 251 in every byte.
                assert_eq!(u64::from(pdu[0]), (lba + off as u64 / BS) % 251);
                assert_eq!(
                    u64::from(pdu[pdu.len() - 1]),
                    (lba + (end as u64 - 1) / BS) % 251
                );
                bytes += pdu.len();
                off = end;
            }
        }
    }
    bytes
}

#[test]
fn a_read_command_allocates_nothing_in_steady_state() {
    let dev = Arc::new(MemDevice::new(1024 * 64 * BS));
    for lba in 0..1024 * 64 {
        let block = Bytes::from(vec![(lba % 251) as u8; BS as usize]);
        dev.write_at(&[block], lba * BS, false).unwrap();
    }
    let cfg = LuConfig::new("SERIAL0001", [0x30, 0, 0, 0, 0, 0, 0, 7], 512);
    let lu = LogicalUnit::new(cfg, dev);
    let nexus = Nexus::new("iqn.i", [0x80, 0, 0, 0, 0, 1], "iqn.t", 1, 1);
    // The first command reports POWER ON, RESET; the next ones warm the arena up.
    let first = lu.execute(&Request::new(&nexus, &[0; 6], &[], &[0], None, None));
    assert_eq!(first.status, 2);
    reads(&lu, &nexus, 256, 8);
    reads(&lu, &nexus, 256, 64);
    for (blocks, n) in [(8u16, 2000u32), (64, 1000)] {
        let mut bytes = 0;
        let allocs = allocations(|| bytes = reads(&lu, &nexus, n, blocks));
        assert_eq!(bytes, n as usize * usize::from(blocks) * BS as usize);
        assert!(
            allocs * 20 <= u64::from(n),
            "{allocs} allocations for {n} reads of {blocks} blocks: more than one per 20"
        );
    }
}
