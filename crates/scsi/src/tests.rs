//! Commands against a memory-backed logical unit. Expected bytes are literals from SPC-4 and
//! SBC-3, never built from this crate's own constants.

use std::sync::Arc;

use blockdev::{BlockDevice, MemDevice};
use bytes::Bytes;

use crate::{LogicalUnit, LuConfig, LunMap, Nexus, Request, Response};

const BS: u32 = 512;
const BLOCKS: u64 = 2048;

pub(crate) fn nexus(name: &str) -> Nexus {
    Nexus::new(
        name,
        [0x80, 0, 0, 0, 0, 1],
        "iqn.2026-11.io.ironlun:t",
        1,
        1,
    )
}

pub(crate) fn lu() -> (Arc<LogicalUnit>, Arc<MemDevice>) {
    let dev = Arc::new(MemDevice::new(BLOCKS * u64::from(BS)));
    let mut naa = [0u8; 8];
    naa[0] = 0x30;
    naa[7] = 7;
    let mut cfg = LuConfig::new("SERIAL0001", naa, BS);
    cfg.port_groups = vec![(1, 1)];
    (Arc::new(LogicalUnit::new(cfg, dev.clone())), dev)
}

pub(crate) struct T {
    pub(crate) lu: Arc<LogicalUnit>,
    pub(crate) nexus: Nexus,
}

impl T {
    /// A logical unit whose first-command unit attention has been consumed.
    pub(crate) fn new() -> Self {
        let (lu, _) = lu();
        let t = Self {
            lu,
            nexus: nexus("iqn.i"),
        };
        let r = t.run(&[0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(r.status, 2, "the first command reports POWER ON, RESET");
        assert_eq!((r.sense[2], r.sense[12], r.sense[13]), (0x06, 0x29, 0x00));
        assert_eq!(t.run(&[0, 0, 0, 0, 0, 0], &[]).status, 0);
        t
    }

    pub(crate) fn run(&self, cdb: &[u8], data: &[u8]) -> Response {
        let bufs = if data.is_empty() {
            vec![]
        } else {
            vec![Bytes::copy_from_slice(data)]
        };
        self.lu.execute(&Request {
            nexus: &self.nexus,
            cdb,
            data_out: &bufs,
            luns: &[0, 3],
            abort: None,
            resolver: None,
            would_block: None,
            defer: None,
        })
    }
}

pub(crate) fn sense3(r: &Response) -> (u8, u8, u8) {
    assert_eq!(r.status, 2, "expected CHECK CONDITION, got {r:?}");
    (r.sense[2] & 0x0f, r.sense[12], r.sense[13])
}

pub(crate) fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    [0x2a, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]
}

pub(crate) fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = write10(lba, blocks);
    c[0] = 0x28;
    c
}

#[test]
fn standard_inquiry() {
    let t = T::new();
    let r = t.run(&[0x12, 0, 0, 0, 96, 0], &[]);
    let d = &r.data;
    assert_eq!(d.len(), 96);
    assert_eq!(&d[..8], &[0x00, 0x00, 0x06, 0x12, 91, 0x18, 0x00, 0x02]);
    assert_eq!(&d[8..16], b"IRONLUN ");
    assert_eq!(&d[16..32], b"VIRTUAL-DISK    ");
    assert_eq!(
        &d[58..66],
        &[0x00, 0xa0, 0x04, 0x60, 0x04, 0xc0, 0x09, 0x60]
    );
    // Allocation length truncates.
    assert_eq!(t.run(&[0x12, 0, 0, 0, 5, 0], &[]).data.len(), 5);
    // Page code without EVPD is invalid.
    assert_eq!(
        sense3(&t.run(&[0x12, 0, 0x80, 0, 96, 0], &[])),
        (5, 0x24, 0)
    );
}

#[test]
fn vpd_pages() {
    let t = T::new();
    let r = t.run(&[0x12, 1, 0x00, 0, 255, 0], &[]);
    assert_eq!(
        &r.data[..],
        &[0, 0, 0, 7, 0x00, 0x80, 0x83, 0x86, 0xb0, 0xb1, 0xb2]
    );
    let r = t.run(&[0x12, 1, 0x80, 0, 255, 0], &[]);
    assert_eq!(&r.data[..], b"\x00\x80\x00\x0aSERIAL0001");
    let r = t.run(&[0x12, 1, 0x83, 0, 255, 0], &[]);
    let d = &r.data;
    assert_eq!(&d[..2], &[0, 0x83]);
    // First designator: NAA, binary, LU association, 8 bytes.
    assert_eq!(
        &d[4..16],
        &[0x01, 0x03, 0x00, 0x08, 0x30, 0, 0, 0, 0, 0, 0, 7]
    );
    // Relative target port designator, iSCSI, PIV, target port association.
    let rel = d
        .windows(8)
        .position(|w| w == [0x51, 0x94, 0, 4, 0, 0, 0, 1]);
    assert!(rel.is_some(), "relative port designator present");
    let name = b"iqn.2026-11.io.ironlun:t,t,0x0001\0";
    assert!(
        d.windows(name.len()).any(|w| w == name),
        "target port name present"
    );
    let r = t.run(&[0x12, 1, 0xb0, 0, 255, 0], &[]);
    assert_eq!(&r.data[..4], &[0, 0xb0, 0, 0x3c]);
    // Maximum transfer length: 64 MiB of 512-byte blocks.
    assert_eq!(&r.data[8..12], &131072u32.to_be_bytes());
    let r = t.run(&[0x12, 1, 0xb2, 0, 255, 0], &[]);
    assert_eq!(&r.data[..], &[0, 0xb2, 0, 4, 0, 0xe4, 0x02, 0]);
    assert_eq!(
        sense3(&t.run(&[0x12, 1, 0x99, 0, 255, 0], &[])),
        (5, 0x24, 0)
    );
}

#[test]
fn read_capacity() {
    let t = T::new();
    let r = t.run(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(&r.data[..], &[0, 0, 0x07, 0xff, 0, 0, 0x02, 0x00]);
    let r = t.run(
        &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        &[],
    );
    assert_eq!(
        &r.data[..16],
        &[
            0, 0, 0, 0, 0, 0, 0x07, 0xff, 0, 0, 0x02, 0, 0, 0x00, 0xc0, 0
        ]
    );
}

#[test]
fn write_read_round_trip_and_bounds() {
    let t = T::new();
    let data: Vec<u8> = (0..2048u32).map(|i| (i % 251) as u8).collect();
    let r = t.run(&write10(100, 4), &data);
    assert_eq!((r.status, r.write_len), (0, 2048));
    let r = t.run(&read10(100, 4), &[]);
    assert_eq!(&r.data[..], &data[..]);
    // One block beyond the end.
    assert_eq!(sense3(&t.run(&read10(2047, 2), &[])), (5, 0x21, 0));
    assert_eq!(sense3(&t.run(&write10(2048, 1), &[0; 512])), (5, 0x21, 0));
    // Zero blocks: nothing transferred.
    let r = t.run(&read10(0, 0), &[]);
    assert!(r.status == 0 && r.data.is_empty());
    // RDPROTECT without protection information.
    let mut c = read10(0, 1);
    c[1] = 0x20;
    assert_eq!(sense3(&t.run(&c, &[])), (5, 0x24, 0));
}

/// A device that never has data at hand (as a disk whose cache is cold).
#[derive(Debug)]
struct Cold(MemDevice);

impl BlockDevice for Cold {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> blockdev::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, bufs: &[Bytes], offset: u64, fua: bool) -> blockdev::Result<()> {
        self.0.write_at(bufs, offset, fua)
    }
    fn flush(&self) -> blockdev::Result<()> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> blockdev::Result<()> {
        self.0.discard(offset, len)
    }
}

#[test]
fn nowait_reads_serve_data_at_hand_and_leave_the_rest() {
    let t = T::new();
    let data: Vec<u8> = (0..2048u32).map(|i| (i % 241) as u8).collect();
    t.run(&write10(100, 4), &data);
    let n = &t.nexus;
    let cdb = read10(100, 4);
    let r =
        t.lu.execute_nowait(&Request::new(n, &cdb, &[], &[0], None, None));
    assert_eq!(r.map(|r| (r.status, r.data.to_vec())), Some((0, data)));
    // Errors found before the data are answered too.
    let cdb = read10(2047, 2);
    let r =
        t.lu.execute_nowait(&Request::new(n, &cdb, &[], &[0], None, None));
    assert_eq!(r.as_ref().map(sense3), Some((5, 0x21, 0)));
    // A write into memory is done.
    let cdb = write10(0, 1);
    let bufs = [Bytes::from(vec![9u8; 512])];
    let r =
        t.lu.execute_nowait(&Request::new(n, &cdb, &bufs, &[0], None, None));
    assert_eq!(r.map(|r| (r.status, r.write_len)), Some((0, 512)));
    assert_eq!(t.run(&read10(0, 1), &[]).data.to_vec(), vec![9u8; 512]);
    // GET LBA STATUS of a device whose map is in memory.
    let mut cdb = [0u8; 16];
    cdb[0] = 0x9e;
    cdb[1] = 0x12;
    cdb[13] = 24;
    let r =
        t.lu.execute_nowait(&Request::new(n, &cdb, &[], &[0], None, None));
    let r = r.expect("answered");
    assert_eq!(r.status, 0);
    assert_eq!(
        &r.data[8..16],
        &[0; 8],
        "the first descriptor starts at LBA 0"
    );
    assert_eq!(r.data[20] & 0x0f, 0, "mapped: block 0 was written");
    // Anything but a read or a write is not run at all (here: it would report a change).
    let cdb = [0x1b, 0, 0, 0, 0x02, 0]; // START STOP UNIT, eject
    assert!(
        t.lu.execute_nowait(&Request::new(n, &cdb, &[], &[0], None, None))
            .is_none()
    );
    assert_eq!(t.run(&[0, 0, 0, 0, 0, 0], &[]).status, 0, "not ejected");

    // A cold device: the unit attention is answered (it needs no data), then the read is
    // left to a caller that may wait.
    let mut naa = [0u8; 8];
    naa[0] = 0x30;
    let lu = LogicalUnit::new(
        LuConfig::new("SERIAL0002", naa, BS),
        Arc::new(Cold(MemDevice::new(BLOCKS * u64::from(BS)))),
    );
    let cdb = read10(0, 1);
    let req = Request::new(n, &cdb, &[], &[0], None, None);
    let r = lu.execute_nowait(&req);
    assert_eq!(r.as_ref().map(sense3), Some((6, 0x29, 0)));
    assert!(lu.execute_nowait(&req).is_none());
    let r = lu.execute(&req);
    assert_eq!((r.status, r.data.len()), (0, 512));
    let cdb = write10(1, 1);
    let bufs = [Bytes::from(vec![5u8; 512])];
    assert!(
        lu.execute_nowait(&Request::new(n, &cdb, &bufs, &[0], None, None))
            .is_none()
    );
    let r = lu.execute(&Request::new(n, &read10(1, 1), &[], &[0], None, None));
    assert_eq!(
        r.data.to_vec(),
        vec![0u8; 512],
        "a refused write wrote nothing"
    );
}

#[test]
fn short_data_out_writes_only_whole_blocks_present() {
    let t = T::new();
    t.run(&write10(10, 2), &[b'a'; 1024]);
    let r = t.run(&write10(10, 2), &[b'b'; 512]);
    assert_eq!((r.status, r.write_len), (0, 1024));
    let r = t.run(&read10(10, 2), &[]);
    assert!(r.data[..512].iter().all(|&b| b == b'b'));
    assert!(r.data[512..].iter().all(|&b| b == b'a'));
}

#[test]
fn read6_zero_means_256_blocks() {
    let t = T::new();
    let r = t.run(&[0x08, 0, 0, 0, 0, 0], &[]);
    assert_eq!(r.data.len(), 256 * 512);
}

#[test]
fn unknown_opcode_and_naca() {
    let t = T::new();
    assert_eq!(sense3(&t.run(&[0xc7, 0, 0, 0, 0, 0], &[])), (5, 0x20, 0));
    assert_eq!(sense3(&t.run(&[0x00, 0, 0, 0, 0, 0x04], &[])), (5, 0x24, 0));
}

#[test]
fn verify_compares_data() {
    let t = T::new();
    t.run(&write10(5, 1), &[7; 512]);
    let mut v = [0x2f, 0x02, 0, 0, 0, 5, 0, 0, 1, 0];
    assert_eq!(t.run(&v, &[7; 512]).status, 0);
    let mut other = [7u8; 512];
    other[100] = 8;
    let r = t.run(&v, &other);
    assert_eq!(sense3(&r), (0x0e, 0x1d, 0));
    assert_eq!(
        &r.sense[3..7],
        &100u32.to_be_bytes(),
        "INFORMATION is the miscompare offset"
    );
    v[1] = 0;
    assert_eq!(t.run(&v, &[]).status, 0);
}

#[test]
fn write_same_and_unmap_punch_holes() {
    let (lu, dev) = lu();
    let t = T {
        lu,
        nexus: nexus("iqn.i"),
    };
    t.run(&[0, 0, 0, 0, 0, 0], &[]);
    t.run(&write10(0, 256), &[0xee; 256 * 512]);
    // WRITE SAME(16) with UNMAP and a zero block: deallocated.
    let mut ws = [0u8; 16];
    ws[0] = 0x93;
    ws[1] = 0x08;
    ws[13] = 128;
    assert_eq!(t.run(&ws, &[0; 512]).status, 0);
    let map = dev.allocation(0, 128 * 512).unwrap();
    assert!(map.iter().all(|e| !e.allocated), "{map:?}");
    // WRITE SAME(10) with a pattern.
    let r = t.run(&[0x41, 0, 0, 0, 0, 200, 0, 0, 4, 0], &[0x5a; 512]);
    assert_eq!(r.status, 0);
    let r = t.run(&read10(200, 4), &[]);
    assert!(r.data.iter().all(|&b| b == 0x5a));
    // UNMAP one descriptor.
    let mut param = vec![0, 22, 0, 16, 0, 0, 0, 0];
    param.extend_from_slice(&200u64.to_be_bytes());
    param.extend_from_slice(&4u32.to_be_bytes());
    param.extend_from_slice(&[0; 4]);
    let r = t.run(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &param);
    assert_eq!(r.status, 0);
    let r = t.run(&read10(200, 4), &[]);
    assert!(r.data.iter().all(|&b| b == 0));
    // An UNMAP descriptor beyond the end.
    let mut bad = param.clone();
    bad[8..16].copy_from_slice(&(BLOCKS - 1).to_be_bytes());
    assert_eq!(
        sense3(&t.run(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &bad)),
        (5, 0x21, 0)
    );
    // Zero-length descriptors are fine.
    let zero = vec![0, 6, 0, 0, 0, 0, 0, 0];
    assert_eq!(t.run(&[0x42, 0, 0, 0, 0, 0, 0, 0, 8, 0], &zero).status, 0);
}

#[test]
fn mode_sense() {
    let t = T::new();
    let r = t.run(&[0x1a, 0, 0x3f, 0, 255, 0], &[]);
    let d = &r.data;
    assert_eq!(usize::from(d[0]) + 1, d.len());
    assert_eq!(d[2], 0x10, "DPOFUA, not write protected");
    assert_eq!(d[3], 8, "block descriptor");
    assert_eq!(&d[8..12], &[0, 0, 2, 0]);
    let pages = &d[12..];
    assert_eq!(&pages[..2], &[0x01, 0x0a]);
    assert_eq!(&pages[12..15], &[0x08, 0x12, 0x04], "caching page with WCE");
    assert_eq!(&pages[32..35], &[0x0a, 0x0a, 0x20], "control page, TST=001");
    // Saved values are not supported.
    assert_eq!(
        sense3(&t.run(&[0x1a, 0, 0xc8, 0, 255, 0], &[])),
        (5, 0x39, 0)
    );
    // MODE SENSE(10) of the caching page without block descriptor.
    let r = t.run(&[0x5a, 0x08, 0x08, 0, 0, 0, 0, 0, 255, 0], &[]);
    assert_eq!(&r.data[..8], &[0, 26, 0, 0x10, 0, 0, 0, 0]);
    assert_eq!(&r.data[8..11], &[0x08, 0x12, 0x04]);
}

#[test]
fn unit_attention_per_nexus_and_request_sense() {
    let (lu, _) = lu();
    let a = T {
        lu: lu.clone(),
        nexus: nexus("iqn.a"),
    };
    let b = T {
        lu,
        nexus: nexus("iqn.b"),
    };
    // INQUIRY does not report the unit attention.
    assert_eq!(a.run(&[0x12, 0, 0, 0, 36, 0], &[]).status, 0);
    // REQUEST SENSE reports and clears it, with GOOD status.
    let r = a.run(&[0x03, 0, 0, 0, 18, 0], &[]);
    assert_eq!(
        (r.status, r.data[2], r.data[12], r.data[13]),
        (0, 6, 0x29, 0)
    );
    assert_eq!(a.run(&[0, 0, 0, 0, 0, 0], &[]).status, 0);
    // The other nexus has not been seen yet.
    assert_eq!(b.run(&[0x12, 0, 0, 0, 36, 0], &[]).status, 0);
    // A LUN reset queues BUS DEVICE RESET for every nexus (B still has POWER ON first).
    a.lu.reset();
    assert_eq!(sense3(&a.run(&[0, 0, 0, 0, 0, 0], &[])), (6, 0x29, 3));
    assert_eq!(sense3(&b.run(&[0, 0, 0, 0, 0, 0], &[])), (6, 0x29, 0));
    assert_eq!(sense3(&b.run(&[0, 0, 0, 0, 0, 0], &[])), (6, 0x29, 3));
}

#[test]
fn report_luns_and_missing_lun() {
    let t = T::new();
    let r = t.run(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(
        &r.data[..],
        &[
            0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0
        ][..]
    );
    assert_eq!(
        sense3(&t.run(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0], &[])),
        (5, 0x24, 0)
    );
    let mut map = LunMap::new();
    map.insert(0, t.lu);
    let n = nexus("iqn.i");
    let req = |cdb: &'static [u8]| Request {
        nexus: &n,
        cdb,
        data_out: &[],
        luns: &[0],
        abort: None,
        resolver: None,
        would_block: None,
        defer: None,
    };
    let r = map.execute(Some(5), &req(&[0x12, 0, 0, 0, 36, 0]));
    assert_eq!(r.data[0], 0x7f);
    let r = map.execute(Some(5), &req(&[0x00, 0, 0, 0, 0, 0]));
    assert_eq!(sense3(&r), (5, 0x25, 0));
    let r = map.execute(None, &req(&[0x03, 0, 0, 0, 18, 0]));
    assert_eq!((r.status, r.data[12]), (0, 0x25));
}

#[test]
fn report_supported_opcodes() {
    let t = T::new();
    // All commands.
    let r = t.run(&[0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0], &[]);
    let len = u32::from_be_bytes([r.data[0], r.data[1], r.data[2], r.data[3]]) as usize;
    assert_eq!(len % 8, 0);
    let ops: Vec<u8> = r.data[4..4 + len].chunks(8).map(|c| c[0]).collect();
    assert!(ops.contains(&0x28) && ops.contains(&0x93) && ops.contains(&0x9e));
    // One command: WRITE SAME(16).
    let r = t.run(&[0xa3, 0x0c, 0x01, 0x93, 0, 0, 0, 0, 0, 64, 0, 0], &[]);
    assert_eq!(&r.data[..6], &[0, 0x03, 0, 16, 0x93, 0x09]);
    // One command with timeouts descriptor.
    let r = t.run(&[0xa3, 0x0c, 0x81, 0x28, 0, 0, 0, 0, 0, 64, 0, 0], &[]);
    assert_eq!(r.data[1], 0x83);
    assert_eq!(r.data.len(), 4 + 10 + 12);
    // Unsupported opcode.
    let r = t.run(&[0xa3, 0x0c, 0x01, 0xc7, 0, 0, 0, 0, 0, 64, 0, 0], &[]);
    assert_eq!(&r.data[..], &[0, 0x01, 0, 0]);
    // Option 1 for an opcode with service actions is invalid.
    assert_eq!(
        sense3(&t.run(&[0xa3, 0x0c, 0x01, 0x9e, 0, 0, 0, 0, 0, 64, 0, 0], &[])),
        (5, 0x24, 0)
    );
}

#[test]
fn read_only_lun_refuses_writes() {
    let dev = Arc::new(MemDevice::new(1 << 20));
    let mut cfg = LuConfig::new("RO", [0x30; 8], BS);
    cfg.read_only = true;
    let t = T {
        lu: Arc::new(LogicalUnit::new(cfg, dev)),
        nexus: nexus("iqn.i"),
    };
    t.run(&[0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(sense3(&t.run(&write10(0, 1), &[0; 512])), (7, 0x27, 0));
    let r = t.run(&[0x1a, 0, 0x3f, 0, 255, 0], &[]);
    assert_eq!(r.data[2] & 0x80, 0x80, "WP bit");
}

#[test]
fn get_lba_status_reports_holes() {
    let (lu, _) = lu();
    let t = T {
        lu,
        nexus: nexus("iqn.i"),
    };
    t.run(&[0, 0, 0, 0, 0, 0], &[]);
    // Blocks 256..512 (128 KiB, two 64 KiB allocation chunks) hold data.
    t.run(&write10(256, 256), &[1; 256 * 512]);
    let mut c = [0u8; 16];
    c[0] = 0x9e;
    c[1] = 0x12;
    c[9] = 0;
    c[13] = 255;
    let r = t.run(&c, &[]);
    assert_eq!(r.status, 0);
    let d = &r.data;
    assert_eq!(&d[..4], &[0, 0, 0, 52]);
    assert_eq!(
        &d[8..21],
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1],
        "0..256 deallocated"
    );
    assert_eq!(
        &d[24..37],
        &[0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0],
        "256..512 mapped"
    );
    assert_eq!(
        &d[40..53],
        &[0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 6, 0, 1],
        "512.. deallocated"
    );
    // Starting LBA beyond the end.
    c[2..10].copy_from_slice(&BLOCKS.to_be_bytes());
    assert_eq!(sense3(&t.run(&c, &[])), (5, 0x21, 0));
}

fn prout(sa: u8, ty: u8, key: u64, sa_key: u64, flags: u8) -> (Vec<u8>, Vec<u8>) {
    let cdb = vec![0x5f, sa, ty, 0, 0, 0, 0, 0, 24, 0];
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = flags;
    (cdb, p)
}

#[test]
fn persistent_reservations_between_two_nexuses() {
    let (lu, _) = lu();
    let a = T {
        lu: lu.clone(),
        nexus: nexus("iqn.a"),
    };
    let b = T {
        lu,
        nexus: nexus("iqn.b"),
    };
    a.run(&[0; 6], &[]);
    b.run(&[0; 6], &[]);
    let (c, p) = prout(0, 0, 0, 0xaaaa, 0);
    assert_eq!(a.run(&c, &p).status, 0);
    let (c, p) = prout(0, 0, 0, 0xbbbb, 0);
    assert_eq!(b.run(&c, &p).status, 0);
    // Registering again with a wrong key conflicts.
    let (c, p) = prout(0, 0, 0x1234, 0xcccc, 0);
    assert_eq!(b.run(&c, &p).status, 0x18);
    // A reserves Write Exclusive.
    let (c, p) = prout(1, 1, 0xaaaa, 0, 0);
    assert_eq!(a.run(&c, &p).status, 0);
    // READ KEYS: generation 2, both keys.
    let r = a.run(&[0x5e, 0, 0, 0, 0, 0, 0, 0, 64, 0], &[]);
    assert_eq!(&r.data[..8], &[0, 0, 0, 2, 0, 0, 0, 16]);
    assert_eq!(
        &r.data[8..24],
        &[0, 0, 0, 0, 0, 0, 0xaa, 0xaa, 0, 0, 0, 0, 0, 0, 0xbb, 0xbb]
    );
    // READ RESERVATION: key and type.
    let r = b.run(&[0x5e, 1, 0, 0, 0, 0, 0, 0, 64, 0], &[]);
    assert_eq!(&r.data[8..16], &0xaaaau64.to_be_bytes());
    assert_eq!(r.data[21], 0x01);
    // B may read but not write.
    assert_eq!(b.run(&read10(0, 1), &[]).status, 0);
    assert_eq!(b.run(&write10(0, 1), &[0; 512]).status, 0x18);
    assert_eq!(a.run(&write10(0, 1), &[0; 512]).status, 0);
    // B preempts A: A's registration goes, B holds Exclusive Access, A gets a unit attention.
    let (c, p) = prout(4, 3, 0xbbbb, 0xaaaa, 0);
    assert_eq!(b.run(&c, &p).status, 0);
    assert_eq!(sense3(&a.run(&[0; 6], &[])), (6, 0x2a, 0x05));
    assert_eq!(a.run(&read10(0, 1), &[]).status, 0x18);
    // Releasing with the wrong type is an error.
    let (c, p) = prout(2, 1, 0xbbbb, 0, 0);
    assert_eq!(sense3(&b.run(&c, &p)), (5, 0x26, 0x04));
    let (c, p) = prout(2, 3, 0xbbbb, 0, 0);
    assert_eq!(b.run(&c, &p).status, 0);
    assert_eq!(a.run(&read10(0, 1), &[]).status, 0);
    // A parameter list of the wrong length.
    assert_eq!(
        sense3(&a.run(&[0x5f, 0, 0, 0, 0, 0, 0, 0, 20, 0], &[0; 20])),
        (5, 0x1a, 0)
    );
}

#[test]
fn aptpl_reservations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(1 << 20));
    let mut cfg = LuConfig::new("PR", [0x30; 8], BS);
    cfg.pr_file = Some(dir.path().join("lu.pr"));
    let t = T {
        lu: Arc::new(LogicalUnit::new(cfg.clone(), dev.clone())),
        nexus: nexus("iqn.a"),
    };
    t.run(&[0; 6], &[]);
    let (c, p) = prout(0, 0, 0, 0x77, 0x01);
    assert_eq!(t.run(&c, &p).status, 0);
    let (c, p) = prout(1, 5, 0x77, 0, 0);
    assert_eq!(t.run(&c, &p).status, 0);
    drop(t);
    let t = T {
        lu: Arc::new(LogicalUnit::new(cfg, dev)),
        nexus: nexus("iqn.a"),
    };
    t.run(&[0; 6], &[]);
    let r = t.run(&[0x5e, 1, 0, 0, 0, 0, 0, 0, 64, 0], &[]);
    assert_eq!(&r.data[8..16], &0x77u64.to_be_bytes());
    assert_eq!(r.data[21], 0x05);
}

#[test]
fn spc2_reserve_and_release() {
    let (lu, _) = lu();
    let a = T {
        lu: lu.clone(),
        nexus: nexus("iqn.a"),
    };
    let b = T {
        lu,
        nexus: nexus("iqn.b"),
    };
    a.run(&[0; 6], &[]);
    b.run(&[0; 6], &[]);
    assert_eq!(a.run(&[0x16, 0, 0, 0, 0, 0], &[]).status, 0);
    assert_eq!(b.run(&[0x16, 0, 0, 0, 0, 0], &[]).status, 0x18);
    assert_eq!(b.run(&[0x1a, 0, 0x3f, 0, 255, 0], &[]).status, 0x18);
    assert_eq!(
        b.run(&[0x12, 0, 0, 0, 36, 0], &[]).status,
        0,
        "INQUIRY is allowed"
    );
    assert_eq!(
        b.run(&[0x17, 0, 0, 0, 0, 0], &[]).status,
        0,
        "RELEASE by another is a no-op"
    );
    assert_eq!(b.run(&read10(0, 1), &[]).status, 0x18);
    a.lu.nexus_lost(&a.nexus);
    assert_eq!(
        b.run(&read10(0, 1), &[]).status,
        0,
        "released on I_T nexus loss"
    );
}

#[test]
fn mode_select_sets_swp_and_d_sense() {
    let t = T::new();
    // Control page with SWP and D_SENSE.
    let mut p = vec![0u8, 0, 0, 0];
    p.extend_from_slice(&[0x0a, 0x0a, 0x24, 0, 0x08, 0, 0, 0, 0xff, 0xff, 0, 0]);
    assert_eq!(t.run(&[0x15, 0x10, 0, 0, p.len() as u8, 0], &p).status, 0);
    let r = t.run(&write10(0, 1), &[0; 512]);
    assert_eq!(r.status, 2);
    assert_eq!(
        &r.sense[..4],
        &[0x72, 0x07, 0x27, 0x00],
        "descriptor format, WRITE PROTECTED"
    );
    // A non-changeable bit (QERR) may not change.
    let mut bad = p.clone();
    bad[7] = 0x02;
    assert_eq!(
        t.run(&[0x15, 0x10, 0, 0, bad.len() as u8, 0], &bad).status,
        2
    );
    // Saving pages is not supported.
    let r = t.run(&[0x15, 0x11, 0, 0, p.len() as u8, 0], &p);
    assert_eq!(&r.sense[..4], &[0x72, 0x05, 0x24, 0x00]);
}

/// Records the FUA flag of every write and counts flushes.
#[derive(Debug)]
struct Recording {
    mem: MemDevice,
    fua: std::sync::Mutex<Vec<bool>>,
    flushes: std::sync::atomic::AtomicUsize,
}

impl BlockDevice for Recording {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> blockdev::Result<()> {
        self.mem.read_at(buf, offset)
    }
    fn write_at(&self, bufs: &[Bytes], offset: u64, fua: bool) -> blockdev::Result<()> {
        self.fua.lock().unwrap().push(fua);
        self.mem.write_at(bufs, offset, fua)
    }
    fn write_at_nowait(&self, bufs: &[Bytes], offset: u64, fua: bool) -> blockdev::Result<bool> {
        // As a device on stable storage: a durable write is not done in memory.
        if fua {
            return Ok(false);
        }
        self.write_at(bufs, offset, false)?;
        Ok(true)
    }
    fn flush(&self) -> blockdev::Result<()> {
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> blockdev::Result<()> {
        self.mem.discard(offset, len)
    }
}

#[test]
fn write_cache_off_makes_every_write_durable() {
    let dev = Arc::new(Recording {
        mem: MemDevice::new(BLOCKS * u64::from(BS)),
        fua: Default::default(),
        flushes: Default::default(),
    });
    let mut naa = [0u8; 8];
    naa[0] = 0x30;
    let t = T {
        lu: Arc::new(LogicalUnit::new(
            LuConfig::new("SERIAL0003", naa, BS),
            dev.clone(),
        )),
        nexus: nexus("iqn.i"),
    };
    t.run(&[0, 0, 0, 0, 0, 0], &[]);
    t.run(&write10(0, 1), &[1; 512]);
    let cdb = write10(2, 1);
    let bufs = [Bytes::from(vec![3u8; 512])];
    let n = nexus("iqn.i");
    assert!(
        t.lu.execute_nowait(&Request::new(&n, &cdb, &bufs, &[0], None, None))
            .is_some(),
        "with the write cache on, a write into memory is done"
    );
    dev.fua.lock().unwrap().clear();
    // MODE SENSE(6) of the caching page, then MODE SELECT(6) of it with WCE cleared.
    let r = t.run(&[0x1a, 0x08, 0x08, 0, 255, 0], &[]);
    let page_at = 4 + usize::from(r.data[3]);
    let mut page = r.data[page_at..page_at + 20].to_vec();
    assert_eq!(&page[..3], &[0x08, 0x12, 0x04], "WCE on by default");
    page[0] &= 0x3f;
    page[2] &= !0x04;
    let mut p = vec![0u8, 0, 0, 0];
    p.extend_from_slice(&page);
    assert_eq!(t.run(&[0x15, 0x10, 0, 0, p.len() as u8, 0], &p).status, 0);
    t.run(&write10(1, 1), &[2; 512]);
    assert_eq!(*dev.fua.lock().unwrap(), vec![true]);
    // Nor is a write done in memory only: it goes where waiting is allowed.
    assert!(
        t.lu.execute_nowait(&Request::new(&n, &cdb, &bufs, &[0], None, None))
            .is_none()
    );
    // WRITE SAME ends with a flush.
    let mut ws = [0u8; 10];
    ws[0] = 0x41;
    ws[5] = 10;
    ws[8] = 4;
    let before = dev.flushes.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(t.run(&ws, &[7; 512]).status, 0);
    assert_eq!(
        dev.flushes.load(std::sync::atomic::Ordering::Relaxed),
        before + 1
    );
}

#[test]
fn compare_and_write() {
    let t = T::new();
    t.run(&write10(8, 1), &[b'A'; 512]);
    let mut cdb = [0u8; 16];
    cdb[0] = 0x89;
    cdb[9] = 8;
    cdb[13] = 1;
    let mut data = vec![b'A'; 512];
    data.extend_from_slice(&[b'B'; 512]);
    assert_eq!(t.run(&cdb, &data).status, 0);
    assert!(t.run(&read10(8, 1), &[]).data.iter().all(|&b| b == b'B'));
    // Now the medium holds B: comparing against A miscompares at offset 0.
    let r = t.run(&cdb, &data);
    assert_eq!(sense3(&r), (0x0e, 0x1d, 0));
    assert_eq!(&r.sense[3..7], &[0, 0, 0, 0]);
    assert!(
        t.run(&read10(8, 1), &[]).data.iter().all(|&b| b == b'B'),
        "unchanged"
    );
}

#[test]
fn alua_states_refuse_and_report() {
    let t = T::new();
    // Peer server's port group 2 (relative port 2) exports the same unit.
    t.lu.set_peer_port_groups(vec![(2, 2)]);
    assert_eq!(sense3(&t.run(&[0, 0, 0, 0, 0, 0], &[])), (6, 0x2a, 6));
    assert!(t.lu.set_alua_state(1, crate::alua::STANDBY));
    assert!(
        !t.lu.set_alua_state(2, crate::alua::ACTIVE_OPTIMIZED),
        "the default"
    );
    assert!(!t.lu.set_alua_state(1, crate::alua::STANDBY), "no change");
    assert_eq!(sense3(&t.run(&[0, 0, 0, 0, 0, 0], &[])), (6, 0x2a, 6));
    // Standby: TEST UNIT READY, READ and WRITE give NOT READY, TARGET PORT IN STANDBY STATE.
    assert_eq!(sense3(&t.run(&[0, 0, 0, 0, 0, 0], &[])), (2, 4, 0x0b));
    assert_eq!(sense3(&t.run(&read10(0, 1), &[])), (2, 4, 0x0b));
    assert_eq!(sense3(&t.run(&write10(0, 1), &[0u8; 512])), (2, 4, 0x0b));
    // INQUIRY, READ CAPACITY(10) and (16) and REPORT TARGET PORT GROUPS are served.
    assert_eq!(t.run(&[0x12, 0, 0, 0, 36, 0], &[]).status, 0);
    assert_eq!(t.run(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).status, 0);
    let rc16 = [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
    assert_eq!(t.run(&rc16, &[]).status, 0);
    let r = t.run(&[0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(r.status, 0);
    // Two descriptors of 8 + 4 bytes: group 1 standby with port 1, group 2 active/optimized
    // with port 2.
    assert_eq!(&r.data[0..4], &[0, 0, 0, 24]);
    assert_eq!(r.data[4] & 0x0f, 2);
    assert_eq!(&r.data[6..8], &[0, 1]);
    assert_eq!(r.data[11], 1);
    assert_eq!(&r.data[14..16], &[0, 1]);
    assert_eq!(r.data[16] & 0x0f, 0);
    assert_eq!(&r.data[18..20], &[0, 2]);
    assert_eq!(&r.data[26..28], &[0, 2]);
    // Transitioning refuses everything but the reports, with 02/04/0A (Linux retries it).
    t.lu.set_alua_state(1, crate::alua::TRANSITIONING);
    assert_eq!(sense3(&t.run(&[0, 0, 0, 0, 0, 0], &[])), (6, 0x2a, 6));
    assert_eq!(
        sense3(&t.run(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[])),
        (2, 4, 0x0a)
    );
    assert_eq!(t.run(&[0x12, 0, 0, 0, 36, 0], &[]).status, 0);
    assert!(t.lu.settle(std::time::Duration::from_secs(1)));
    // Back to active/optimized: I/O is served again.
    t.lu.set_alua_state(1, crate::alua::ACTIVE_OPTIMIZED);
    assert_eq!(sense3(&t.run(&[0, 0, 0, 0, 0, 0], &[])), (6, 0x2a, 6));
    assert_eq!(t.run(&write10(0, 1), &[7u8; 512]).status, 0);
    assert_eq!(t.run(&read10(0, 1), &[]).data[..], [7u8; 512][..]);
}
