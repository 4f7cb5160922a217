//! EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 sections 6.4 and 6.20): block to
//! block copies between logical units of the server, addressed by identification
//! descriptors (the NAA or T10 designators of VPD page 0x83).

use std::sync::Arc;

use bytes::BytesMut;

use crate::{
    LogicalUnit, Request, Response,
    cdb::{CmdResult, be16, be32, be64, gather, invalid_field, truncate},
    sense::Sense,
};

/// Finds logical units of the server by designator, for EXTENDED COPY.
pub trait LunResolver: Send + Sync + std::fmt::Debug {
    /// The logical unit with this designator (designator type and value).
    fn resolve(&self, designator_type: u8, value: &[u8]) -> Option<Arc<LogicalUnit>>;
}

/// Largest number of target descriptors in one EXTENDED COPY.
const MAX_TARGET_DESCRIPTORS: u16 = 8;
/// Largest number of segment descriptors in one EXTENDED COPY.
const MAX_SEGMENT_DESCRIPTORS: u16 = 64;
/// Largest target + segment descriptor list.
const MAX_DESCRIPTOR_LIST: u32 = 16 * 32 + 64 * 28;
/// Largest copy of one segment, in bytes.
const MAX_SEGMENT_BYTES: u32 = 64 << 20;
/// Copy results kept per logical unit.
const HELD_RESULTS: usize = 32;

const IDENTIFICATION_DESCRIPTOR: u8 = 0xe4;
const BLOCK_TO_BLOCK: u8 = 0x02;

/// The result of one copy, kept for RECEIVE COPY RESULTS (COPY STATUS).
#[derive(Clone, Debug)]
pub(crate) struct CopyResult {
    pub(crate) nexus: String,
    pub(crate) list_id: u8,
    /// Copy manager status: 1 completed without error, 2 completed with error.
    pub(crate) status: u8,
    pub(crate) segments: u16,
    pub(crate) bytes: u64,
}

fn aborted(asc: u8, ascq: u8) -> Sense {
    Sense::new(crate::sense::key::COPY_ABORTED, asc, ascq)
}

/// EXTENDED COPY (LID1).
pub(crate) fn extended_copy(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let cdb = req.cdb;
    let list_len = be32(cdb, 10) as usize;
    let write_len = list_len as u32;
    let good = Response {
        write_len,
        ..Response::good()
    };
    if list_len == 0 {
        return Ok(good);
    }
    let p = gather(req.data_out);
    if p.len() < list_len || list_len < 16 {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    }
    let p = &p[..list_len];
    let list_id = p[0];
    let usage = (p[1] >> 3) & 0x03;
    let tgt_len = usize::from(be16(p, 2));
    let seg_len = be32(p, 8) as usize;
    let inline_len = be32(p, 12) as usize;
    if tgt_len + seg_len > MAX_DESCRIPTOR_LIST as usize {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    }
    if 16 + tgt_len + seg_len + inline_len > list_len || tgt_len % 32 != 0 {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    }
    if inline_len != 0 {
        return Err(crate::cdb::invalid_param(12, None));
    }
    if tgt_len / 32 > usize::from(MAX_TARGET_DESCRIPTORS) {
        return Err(Sense::TOO_MANY_TARGET_DESCRIPTORS);
    }
    // Target descriptors.
    let mut targets: Vec<Option<Arc<LogicalUnit>>> = Vec::new();
    for d in p[16..16 + tgt_len].chunks(32) {
        if d[0] != IDENTIFICATION_DESCRIPTOR {
            return Err(Sense::UNSUPPORTED_TARGET_DESCRIPTOR);
        }
        // Peripheral device type 0 (block) only; LU ID TYPE and NUL are ignored (SPC-4).
        if d[1] & 0x1f != 0 {
            return Err(crate::cdb::invalid_param(17, None));
        }
        let desig_type = d[5] & 0x0f;
        let len = usize::from(d[7]).min(20);
        let value = &d[8..8 + len];
        let found = req.resolver.and_then(|r| r.resolve(desig_type, value));
        let block_len = be32(d, 28) & 0x00ff_ffff;
        if let Some(t) = &found
            && block_len != 0
            && block_len != t.cfg.block_size
        {
            return Err(crate::cdb::invalid_param(45, None));
        }
        targets.push(found);
    }
    // Segment descriptors.
    let segs = &p[16 + tgt_len..16 + tgt_len + seg_len];
    let mut parsed = Vec::new();
    let mut pos = 0;
    while pos + 4 <= segs.len() {
        let d = &segs[pos..];
        let len = usize::from(be16(d, 2)) + 4;
        if parsed.len() >= usize::from(MAX_SEGMENT_DESCRIPTORS) {
            return Err(Sense::TOO_MANY_SEGMENT_DESCRIPTORS);
        }
        if d[0] != BLOCK_TO_BLOCK {
            return Err(Sense::UNSUPPORTED_SEGMENT_DESCRIPTOR);
        }
        if len != 28 || d.len() < 28 {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
        }
        parsed.push((
            usize::from(be16(d, 4)),
            usize::from(be16(d, 6)),
            u64::from(be16(d, 10)),
            be64(d, 12),
            be64(d, 20),
        ));
        pos += len;
    }
    let mut done_segments = 0u16;
    let mut bytes = 0u64;
    let mut outcome = Ok(());
    for (si, di, blocks, src_lba, dst_lba) in parsed {
        let r = copy_segment(req, &targets, si, di, blocks, src_lba, dst_lba);
        match r {
            Ok(n) => {
                done_segments += 1;
                bytes += n;
            }
            Err(s) => {
                outcome = Err(s);
                break;
            }
        }
    }
    // LIST ID USAGE 10b and 11b: results are not held.
    if usage < 2 {
        let mut st = lu.state();
        let key = req.nexus.key();
        st.copies
            .retain(|c| !(c.nexus == key && c.list_id == list_id));
        if st.copies.len() >= HELD_RESULTS {
            st.copies.remove(0);
        }
        st.copies.push(CopyResult {
            nexus: key.to_owned(),
            list_id,
            status: if outcome.is_ok() { 1 } else { 2 },
            segments: done_segments,
            bytes,
        });
    }
    outcome.map(|()| good)
}

fn copy_segment(
    req: &Request<'_>,
    targets: &[Option<Arc<LogicalUnit>>],
    si: usize,
    di: usize,
    blocks: u64,
    src_lba: u64,
    dst_lba: u64,
) -> CmdResult<u64> {
    let unreachable = aborted(0x08, 0x04);
    let src = targets
        .get(si)
        .ok_or(unreachable)?
        .as_ref()
        .ok_or_else(|| aborted(0x0d, 0x02))?;
    let dst = targets
        .get(di)
        .ok_or(unreachable)?
        .as_ref()
        .ok_or_else(|| aborted(0x0d, 0x02))?;
    let bs = u64::from(src.cfg.block_size);
    if dst.cfg.block_size != src.cfg.block_size {
        return Err(aborted(0x26, 0x00));
    }
    let out_of_range =
        |l: &LogicalUnit, lba: u64| lba.checked_add(blocks).is_none_or(|e| e > l.blocks());
    // A range beyond either device: COPY ABORTED with no additional sense (the segment
    // descriptor, not a CDB field, is at fault).
    if out_of_range(src, src_lba) || out_of_range(dst, dst_lba) {
        return Err(aborted(0x00, 0x00));
    }
    if blocks * bs > u64::from(MAX_SEGMENT_BYTES) {
        return Err(aborted(0x26, 0x00));
    }
    if dst.cfg.read_only || dst.state().mode.swp {
        return Err(aborted(0x27, 0x00));
    }
    // The destination must be accessible to this I_T nexus under its reservations.
    if dst
        .check_reservation(req.nexus, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .is_some()
        || src
            .check_reservation(req.nexus, &[0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            .is_some()
    {
        return Err(aborted(0x0d, 0x02));
    }
    const CHUNK: u64 = 1 << 20;
    let total = blocks * bs;
    let mut done = 0;
    while done < total {
        if req.aborted() {
            return Err(aborted(0x00, 0x00));
        }
        let n = CHUNK.min(total - done);
        let mut buf = BytesMut::zeroed(n as usize);
        src.dev
            .read_at(&mut buf, src_lba * bs + done)
            .map_err(|_| aborted(0x11, 0x00))?;
        let off = dst_lba * bs + done;
        let _lock = dst.locks.shared(off, n);
        dst.dev
            .write_at(&[buf.freeze()], off, false)
            .map_err(|_| aborted(0x0c, 0x00))?;
        done += n;
    }
    if dst.write_through() {
        dst.dev.flush().map_err(|_| aborted(0x0c, 0x00))?;
    }
    Ok(total)
}

/// RECEIVE COPY RESULTS: COPY STATUS (SA 0) and OPERATING PARAMETERS (SA 3).
pub(crate) fn receive_copy_results(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let cdb = req.cdb;
    let alloc = be32(cdb, 10) as usize;
    let d = match cdb[1] & 0x1f {
        0 => {
            let list_id = cdb[2];
            let key = req.nexus.key();
            let st = lu.state();
            let Some(c) = st
                .copies
                .iter()
                .find(|c| c.nexus == key && c.list_id == list_id)
            else {
                return Err(invalid_field(2, None));
            };
            let mut d = vec![0u8; 12];
            d[0..4].copy_from_slice(&8u32.to_be_bytes());
            d[4] = c.status;
            d[5..7].copy_from_slice(&c.segments.to_be_bytes());
            // Transfer count in bytes (units code 0F1h would be KiB; 0 is bytes in SPC-2 terms,
            // SPC-4 uses the TRANSFER COUNT UNITS codes: 00h = bytes).
            d[7] = 0x00;
            d[8..12].copy_from_slice(&(c.bytes.min(u64::from(u32::MAX)) as u32).to_be_bytes());
            d
        }
        3 => {
            let mut d = vec![0u8; 44];
            d[0..4].copy_from_slice(&40u32.to_be_bytes());
            d[4] = 0x01; // SNLID: list identifiers are supported
            d[8..10].copy_from_slice(&MAX_TARGET_DESCRIPTORS.to_be_bytes());
            d[10..12].copy_from_slice(&MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
            d[12..16].copy_from_slice(&MAX_DESCRIPTOR_LIST.to_be_bytes());
            d[16..20].copy_from_slice(&MAX_SEGMENT_BYTES.to_be_bytes());
            // Inline and held data are not supported (0); one copy at a time per command.
            d[36..38].copy_from_slice(&1u16.to_be_bytes());
            d[38] = 1;
            d[39] = 9; // data segment granularity: 512 bytes (log2)
            d[42] = 2;
            d.extend_from_slice(&[BLOCK_TO_BLOCK, IDENTIFICATION_DESCRIPTOR]);
            let len = (d.len() - 4) as u32;
            d[0..4].copy_from_slice(&len.to_be_bytes());
            d
        }
        _ => return Err(invalid_field(1, Some(4))),
    };
    Ok(Response::data(truncate(d, alloc)))
}
