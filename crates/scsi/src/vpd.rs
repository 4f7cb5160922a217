//! INQUIRY: standard data and the vital product data pages 00, 80, 83, 86, B0, B1, B2.

use crate::{
    LogicalUnit, Request, Response,
    cdb::{CmdResult, be16, invalid_field, truncate},
};

/// VPD pages served, ascending.
const PAGES: &[u8] = &[0x00, 0x80, 0x83, 0x86, 0xb0, 0xb1, 0xb2];

/// Version descriptors: SAM-5, SPC-4, SBC-3, iSCSI (no version claimed).
const VERSION_DESCRIPTORS: [u16; 4] = [0x00a0, 0x0460, 0x04c0, 0x0960];

/// INQUIRY (SPC-4 section 6.6).
pub(crate) fn inquiry(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let cdb = req.cdb;
    let evpd = cdb[1] & 0x01 != 0;
    if cdb[1] & 0xfe != 0 {
        return Err(invalid_field(1, None));
    }
    let page = cdb[2];
    let alloc = usize::from(be16(cdb, 3));
    let data = if evpd {
        vpd_page(lu, req, page)?
    } else {
        if page != 0 {
            return Err(invalid_field(2, None));
        }
        standard(lu)
    };
    Ok(Response::data(truncate(data, alloc)))
}

/// Standard INQUIRY data, 96 bytes.
pub(crate) fn standard(lu: &LogicalUnit) -> Vec<u8> {
    let c = &lu.cfg;
    let mut d = vec![0u8; 96];
    d[0] = 0x00; // connected, direct access block device
    d[1] = if c.removable { 0x80 } else { 0 }; // RMB
    d[2] = 0x06; // SPC-4
    d[3] = 0x12; // HISUP, response data format 2
    d[4] = (d.len() - 5) as u8;
    // TPGS: implicit ALUA; 3PC: EXTENDED COPY.
    d[5] = if c.port_groups.is_empty() { 0 } else { 0x10 } | 0x08;
    d[7] = 0x02; // CMDQUE
    put_ascii(&mut d[8..16], &c.vendor);
    put_ascii(&mut d[16..32], &c.product);
    put_ascii(&mut d[32..36], &c.revision);
    for (i, v) in VERSION_DESCRIPTORS.iter().enumerate() {
        d[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
    }
    d
}

/// Space-padded ASCII.
fn put_ascii(dst: &mut [u8], s: &str) {
    dst.fill(b' ');
    for (d, c) in dst
        .iter_mut()
        .zip(s.bytes().filter(|c| (0x20..0x7f).contains(c)))
    {
        *d = c;
    }
}

fn page_header(page: u8, body: Vec<u8>) -> Vec<u8> {
    let mut d = vec![0x00, page];
    d.extend_from_slice(&(body.len() as u16).to_be_bytes());
    d.extend_from_slice(&body);
    d
}

fn vpd_page(lu: &LogicalUnit, req: &Request<'_>, page: u8) -> CmdResult<Vec<u8>> {
    let c = &lu.cfg;
    let body = match page {
        0x00 => PAGES.to_vec(),
        0x80 => c
            .serial
            .bytes()
            .filter(|b| (0x20..0x7f).contains(b))
            .collect(),
        0x83 => device_identification(lu, req),
        0x86 => {
            // Extended INQUIRY data: HEADSUP, ORDSUP, SIMPSUP; V_SUP (volatile cache).
            let mut b = vec![0u8; 60];
            b[1] = 0x07;
            b[2] = 0x01;
            b
        }
        0xb0 => block_limits(lu),
        0xb1 => {
            // Block Device Characteristics: non-rotating medium; WABEREQ=01b (reads after a
            // SANITIZE BLOCK ERASE succeed and return zeroes).
            let mut b = vec![0u8; 60];
            b[1] = 0x01;
            b[3] = 0x40;
            b
        }
        0xb2 => {
            // Logical Block Provisioning: LBPU, LBPWS, LBPWS10, LBPRZ; thin provisioned.
            let mut b = vec![0u8; 4];
            if c.thin {
                b[1] = 0x80 | 0x40 | 0x20 | 0x04;
                b[2] = 0x02;
            }
            b
        }
        _ => return Err(invalid_field(2, None)),
    };
    Ok(page_header(page, body))
}

/// Maximum blocks in one UNMAP descriptor set and per WRITE SAME: 1 GiB worth.
pub(crate) fn max_unmap_blocks(lu: &LogicalUnit) -> u32 {
    ((1u32 << 30) / lu.cfg.block_size).min(1 << 20)
}

/// Maximum UNMAP block descriptors per command.
pub(crate) const MAX_UNMAP_DESCRIPTORS: u32 = 256;

/// Maximum blocks of COMPARE AND WRITE.
pub(crate) const MAX_COMPARE_AND_WRITE_BLOCKS: u8 = 255;

/// Maximum blocks of WRITE ATOMIC(16): 1 MiB.
pub(crate) fn max_atomic_blocks(block_size: u32) -> u32 {
    (1024 * 1024) / block_size
}

fn block_limits(lu: &LogicalUnit) -> Vec<u8> {
    let c = &lu.cfg;
    let mut b = vec![0u8; 60];
    b[1] = MAX_COMPARE_AND_WRITE_BLOCKS;
    // Optimal transfer length granularity: 4 KiB.
    let gran = (4096 / c.block_size).max(1) as u16;
    b[2..4].copy_from_slice(&gran.to_be_bytes());
    b[4..8].copy_from_slice(&c.max_transfer_blocks.to_be_bytes());
    // Optimal transfer length: 1 MiB.
    b[8..12].copy_from_slice(&((1u32 << 20) / c.block_size).to_be_bytes());
    b[12..16].copy_from_slice(&c.max_transfer_blocks.to_be_bytes());
    if c.thin {
        b[16..20].copy_from_slice(&max_unmap_blocks(lu).to_be_bytes());
        b[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
        b[24..28].copy_from_slice(&u32::from(gran).to_be_bytes());
        b[28] = 0x80; // UGAVALID, alignment 0
    }
    b[32..40].copy_from_slice(&u64::from(max_unmap_blocks(lu)).to_be_bytes());
    // Atomic writes: maximum length, alignment 1, granularity 1 (SBC-4).
    b[40..44].copy_from_slice(&max_atomic_blocks(c.block_size).to_be_bytes());
    b[44..48].copy_from_slice(&1u32.to_be_bytes());
    b[48..52].copy_from_slice(&1u32.to_be_bytes());
    b
}

/// Device Identification (VPD 0x83): the logical unit's NAA and T10 vendor designators, the
/// relative target port, the target port group and port name, and the target device name.
fn device_identification(lu: &LogicalUnit, req: &Request<'_>) -> Vec<u8> {
    let c = &lu.cfg;
    let mut d = Vec::new();
    let mut designator = |code_set: u8, piv_assoc_type: u8, value: &[u8]| {
        d.push(code_set);
        d.push(piv_assoc_type);
        d.push(0);
        d.push(value.len() as u8);
        d.extend_from_slice(value);
    };
    // NAA (locally assigned), binary, associated with the logical unit.
    designator(0x01, 0x03, &c.naa);
    // T10 vendor ID based: vendor (8 bytes) + serial.
    let mut t10 = vec![b' '; 8];
    put_ascii(&mut t10, &c.vendor);
    t10.extend(c.serial.bytes().filter(|b| (0x20..0x7f).contains(b)));
    designator(0x02, 0x01, &t10);
    let n = req.nexus;
    // iSCSI protocol identifier 5, PIV, associated with the target port.
    let mut rel = [0u8; 4];
    rel[2..4].copy_from_slice(&n.relative_port.to_be_bytes());
    designator(0x51, 0x94, &rel);
    if let Some(&(_, group)) = c.port_groups.iter().find(|(p, _)| *p == n.relative_port) {
        let mut g = [0u8; 4];
        g[2..4].copy_from_slice(&group.to_be_bytes());
        designator(0x51, 0x95, &g);
    }
    designator(0x53, 0x98, &scsi_name(&n.target_port()));
    // SCSI target device name, associated with the target device.
    designator(0x53, 0xa8, &scsi_name(&n.target_name));
    d
}

/// A SCSI name string: UTF-8, NUL terminated, padded to a multiple of 4 bytes.
fn scsi_name(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}
