//! TEST UNIT READY, REQUEST SENSE, START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL,
//! READ CAPACITY (10) and (16), REPORT LUNS.

use crate::{
    LogicalUnit, Request, Response,
    cdb::{CmdResult, be32, invalid_field, truncate},
    sense::Sense,
};

/// TEST UNIT READY.
pub(crate) fn test_unit_ready(lu: &LogicalUnit, _req: &Request<'_>) -> CmdResult<Response> {
    lu.check_ready()?;
    Ok(Response::good())
}

/// REQUEST SENSE: reports (and clears) a pending unit attention, else the unit's state.
pub(crate) fn request_sense(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let desc = req.cdb[1] & 0x01 != 0;
    let alloc = usize::from(req.cdb[4]);
    let sense = match lu.take_unit_attention(req.nexus) {
        Some(ua) => ua,
        None if lu.sanitizing() => Sense::SANITIZE_IN_PROGRESS,
        None if lu.state().ejected => Sense::MEDIUM_NOT_PRESENT_TRAY_OPEN,
        None => Sense::NO_SENSE,
    };
    Ok(Response::data(truncate(sense.encode(desc).to_vec(), alloc)))
}

/// START STOP UNIT (SBC-3 section 5.25).
pub(crate) fn start_stop_unit(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let cdb = req.cdb;
    let power_condition = cdb[4] >> 4;
    let loej = cdb[4] & 0x02 != 0;
    let start = cdb[4] & 0x01 != 0;
    if power_condition != 0 {
        // Power conditions are accepted and have no effect on a virtual disk.
        return Ok(Response::good());
    }
    let mut st = lu.state();
    if loej && lu.cfg.removable {
        // Ejecting or loading the medium is refused while PREVENT is in effect on any nexus.
        if st.nexuses.values().any(|n| n.prevent) {
            return Err(Sense::MEDIUM_REMOVAL_PREVENTED);
        }
        st.ejected = !start;
    }
    // Without LOEJ, START and STOP have no effect: a virtual disk needs no spin-up, and the
    // medium stays accessible (libiscsi StartStopUnit.NoLoej, as tgt and LIO behave).
    Ok(Response::good())
}

/// PREVENT ALLOW MEDIUM REMOVAL.
pub(crate) fn prevent_allow(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let prevent = req.cdb[4] & 0x03;
    if prevent > 1 {
        return Err(invalid_field(4, Some(0)));
    }
    let key = req.nexus.key();
    let mut st = lu.state();
    st.nexuses.entry(key.to_owned()).or_default().prevent = prevent == 1;
    Ok(Response::good())
}

/// READ CAPACITY(10).
pub(crate) fn read_capacity10(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let pmi = req.cdb[8] & 0x01 != 0;
    if !pmi && be32(req.cdb, 2) != 0 {
        return Err(invalid_field(2, None));
    }
    let last = lu.blocks().saturating_sub(1).min(0xffff_ffff) as u32;
    let mut d = Vec::with_capacity(8);
    d.extend_from_slice(&last.to_be_bytes());
    d.extend_from_slice(&lu.cfg.block_size.to_be_bytes());
    Ok(Response::data(d))
}

/// READ CAPACITY(16).
pub(crate) fn read_capacity16(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let alloc = be32(req.cdb, 10) as usize;
    let mut d = vec![0u8; 32];
    d[0..8].copy_from_slice(&lu.blocks().saturating_sub(1).to_be_bytes());
    d[8..12].copy_from_slice(&lu.cfg.block_size.to_be_bytes());
    // Logical blocks per physical block exponent.
    d[13] = (lu.cfg.physical_block_size / lu.cfg.block_size)
        .max(1)
        .trailing_zeros() as u8;
    if lu.cfg.thin {
        d[14] = 0x80 | 0x40; // LBPME, LBPRZ
    }
    Ok(Response::data(truncate(d, alloc)))
}

/// REPORT LUNS (SPC-4 section 6.33), with SAM-5 single-level LUN encoding.
pub(crate) fn report_luns(_lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    report_luns_for(req)
}

/// REPORT LUNS for any nexus, also through a missing LUN.
pub(crate) fn report_luns_for(req: &Request<'_>) -> CmdResult<Response> {
    let cdb = req.cdb;
    let select = cdb[2];
    if !matches!(select, 0x00..=0x02 | 0x10..=0x12) {
        return Err(invalid_field(2, None));
    }
    let alloc = be32(cdb, 6) as usize;
    if alloc < 16 {
        return Err(invalid_field(6, None));
    }
    // Select 0x01 (well-known LUNs only) reports none: ironlun has no well-known LUNs.
    let luns: Vec<u16> = if select == 0x01 || select == 0x11 {
        Vec::new()
    } else {
        req.luns.to_vec()
    };
    let mut d = vec![0u8; 8];
    d[0..4].copy_from_slice(&((luns.len() * 8) as u32).to_be_bytes());
    for l in luns {
        let b0 = if l < 256 {
            0
        } else {
            0x40 | ((l >> 8) as u8 & 0x3f)
        };
        d.extend_from_slice(&[b0, l as u8, 0, 0, 0, 0, 0, 0]);
    }
    Ok(Response::data(truncate(d, alloc)))
}

/// GET LBA STATUS (SBC-3 section 5.16): mapped and deallocated extents from the starting
/// LBA, read from the device's allocation map (holes of a sparse image are deallocated).
pub(crate) fn get_lba_status(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let cdb = req.cdb;
    let start = crate::cdb::be64(cdb, 2);
    let alloc = be32(cdb, 10) as usize;
    let blocks = lu.blocks();
    if start >= blocks {
        return Err(Sense::LBA_OUT_OF_RANGE);
    }
    let bs = u64::from(lu.cfg.block_size);
    let max_desc = (alloc.saturating_sub(8) / 16).clamp(1, 1024);
    let mut descs: Vec<(u64, u64, bool)> = Vec::new();
    let mut pos = start;
    const WINDOW: u64 = 1 << 30;
    while pos < blocks && descs.len() <= max_desc {
        let end = (pos + WINDOW / bs).min(blocks);
        let (off, len) = (pos * bs, (end - pos) * bs);
        let map = match req.would_block {
            None => lu.dev.allocation(off, len),
            Some(blocked) => match lu.dev.allocation_nowait(off, len) {
                Ok(Some(map)) => Ok(map),
                Ok(None) => {
                    blocked.set(true);
                    return Ok(Response::good());
                }
                Err(e) => Err(e),
            },
        }
        .map_err(|e| lu.io_error(&e, false))?;
        for e in map {
            // Whole blocks: a block partly holding data is mapped.
            let first = e.offset / bs;
            let last = (e.offset + e.len).div_ceil(bs);
            let (first, last) = if e.allocated {
                (first, last)
            } else {
                (e.offset.div_ceil(bs), (e.offset + e.len) / bs)
            };
            if last <= first {
                continue;
            }
            match descs.last_mut() {
                Some((l, n, m)) if *m == e.allocated && *l + *n >= first => {
                    *n = last.max(*l + *n) - *l;
                }
                Some((l, n, _)) if *l + *n > first => {
                    // Overlap from a partial block already counted as mapped.
                    let from = *l + *n;
                    if last > from {
                        descs.push((from, last - from, e.allocated));
                    }
                }
                _ => descs.push((first, last - first, e.allocated)),
            }
        }
        pos = end;
    }
    descs.truncate(max_desc);
    let mut d = vec![0u8; 8];
    for (lba, n, mapped) in &descs {
        d.extend_from_slice(&lba.to_be_bytes());
        d.extend_from_slice(&((*n).min(u64::from(u32::MAX)) as u32).to_be_bytes());
        d.push(if *mapped { 0 } else { 1 });
        d.extend_from_slice(&[0, 0, 0]);
    }
    let len = (d.len() - 4) as u32;
    d[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(Response::data(truncate(d, alloc)))
}

/// READ DEFECT DATA(10) and (12): a virtual disk has no defects; the list is empty.
pub(crate) fn read_defect_data(_lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let cdb = req.cdb;
    if cdb[0] == 0x37 {
        let flags = cdb[2] & 0x1f;
        let alloc = usize::from(crate::cdb::be16(cdb, 7));
        Ok(Response::data(truncate(vec![0, flags, 0, 0], alloc)))
    } else {
        let flags = cdb[1] & 0x1f;
        let alloc = be32(cdb, 6) as usize;
        Ok(Response::data(truncate(
            vec![0, flags, 0, 0, 0, 0, 0, 0],
            alloc,
        )))
    }
}

/// REPORT TARGET PORT GROUPS (SPC-4 section 6.36): one group per portal group, each with its
/// asymmetric access state and its relative target ports.
pub(crate) fn report_target_port_groups(
    lu: &LogicalUnit,
    req: &Request<'_>,
) -> CmdResult<Response> {
    let cdb = req.cdb;
    let extended = (cdb[1] >> 5) == 0x01;
    let alloc = be32(cdb, 6) as usize;
    // Extended header: format 001b, implicit transition time 0.
    let mut d = if extended {
        vec![0, 0, 0, 0, 0x10, 0, 0, 0]
    } else {
        vec![0; 4]
    };
    for (g, state, ports) in lu.target_port_groups() {
        // PREF=0 and the state; supported: T_SUP, O_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP.
        d.extend_from_slice(&[state & 0x0f, 0x80 | 0x40 | 0x08 | 0x04 | 0x02 | 0x01]);
        d.extend_from_slice(&g.to_be_bytes());
        // Status code 02h: implicit change of state by the target.
        d.extend_from_slice(&[0, 0x02, 0, ports.len() as u8]);
        for p in ports {
            d.extend_from_slice(&[0, 0]);
            d.extend_from_slice(&p.to_be_bytes());
        }
    }
    let len = (d.len() - 4) as u32;
    d[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(Response::data(truncate(d, alloc)))
}
