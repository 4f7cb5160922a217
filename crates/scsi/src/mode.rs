//! Mode parameters (SPC-4 section 7.5, SBC-3 section 6.4): MODE SENSE(6) and (10) with the
//! read-write error recovery, caching, control and informational exceptions pages.

use crate::{
    LogicalUnit, Request, Response,
    cdb::{CmdResult, be16, invalid_field, truncate},
    sense::Sense,
};

/// The changeable mode parameters of a logical unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeState {
    /// Caching page WCE: write cache enabled (Linux then sends SYNCHRONIZE CACHE).
    pub wce: bool,
    /// Control page D_SENSE: descriptor-format sense data.
    pub d_sense: bool,
    /// Control page SWP: software write protect.
    pub swp: bool,
}

impl Default for ModeState {
    fn default() -> Self {
        Self {
            wce: true,
            d_sense: false,
            swp: false,
        }
    }
}

/// Page control values.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pc {
    Current,
    Changeable,
    Default,
}

/// Pages in the order MODE SENSE returns them for 0x3f.
pub(crate) const PAGES: &[u8] = &[0x01, 0x08, 0x0a, 0x1c];

fn page(code: u8, pc: Pc, st: &ModeState) -> Vec<u8> {
    let cur = matches!(pc, Pc::Current);
    match code {
        // Read-Write Error Recovery: AWRE, ARRE not changeable.
        0x01 => {
            let mut p = vec![0x01, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            if pc != Pc::Changeable {
                p[2] = 0xc0; // AWRE, ARRE
            }
            p
        }
        // Caching: WCE changeable.
        0x08 => {
            let mut p = vec![0u8; 20];
            p[0] = 0x08;
            p[1] = 0x12;
            p[2] = match pc {
                Pc::Changeable => 0x04,
                Pc::Current => u8::from(st.wce) << 2,
                Pc::Default => 0x04,
            };
            p
        }
        // Control: TST=001 (task set per I_T nexus), QERR=00, D_SENSE and SWP changeable.
        0x0a => {
            let mut p = vec![0u8; 12];
            p[0] = 0x0a;
            p[1] = 0x0a;
            match pc {
                Pc::Changeable => {
                    p[2] = 0x04;
                    p[4] = 0x08;
                }
                _ => {
                    p[2] = 0x20 | if cur && st.d_sense { 0x04 } else { 0 };
                    p[4] = if cur && st.swp { 0x08 } else { 0 };
                    // Busy timeout period: unlimited; extended self-test time: 0.
                    p[8] = 0xff;
                    p[9] = 0xff;
                }
            }
            p
        }
        // Informational Exceptions Control: nothing reported, nothing changeable.
        0x1c => vec![0x1c, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        _ => Vec::new(),
    }
}

/// Build the pages for a MODE SENSE request.
fn pages(lu: &LogicalUnit, cdb: &[u8]) -> CmdResult<Vec<u8>> {
    let pc = match cdb[2] >> 6 {
        0 => Pc::Current,
        1 => Pc::Changeable,
        2 => Pc::Default,
        _ => return Err(Sense::SAVING_PARAMETERS_NOT_SUPPORTED),
    };
    let code = cdb[2] & 0x3f;
    let sub = cdb[3];
    let st = lu.state().mode.clone();
    let mut out = Vec::new();
    match (code, sub) {
        (0x3f, 0x00 | 0xff) => {
            for &p in PAGES {
                out.extend_from_slice(&page(p, pc, &st));
            }
        }
        (c, 0x00) if PAGES.contains(&c) => out = page(c, pc, &st),
        _ => return Err(invalid_field(2, None)),
    }
    Ok(out)
}

/// Device-specific parameter: WP when write protected, DPOFUA.
fn device_specific(lu: &LogicalUnit) -> u8 {
    let wp = lu.cfg.read_only || lu.state().mode.swp;
    (if wp { 0x80 } else { 0 }) | 0x10
}

/// MODE SENSE(6).
pub(crate) fn mode_sense6(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let cdb = req.cdb;
    let dbd = cdb[1] & 0x08 != 0;
    let body = pages(lu, cdb)?;
    let mut d = vec![0u8; 4];
    d[2] = device_specific(lu);
    if !dbd {
        d[3] = 8;
        let blocks = lu.blocks().min(0xff_ffff) as u32;
        d.extend_from_slice(&blocks.to_be_bytes());
        d.extend_from_slice(&lu.cfg.block_size.to_be_bytes());
        // Density code 0 in the first byte of the block count field.
        d[4] = 0;
    }
    d.extend_from_slice(&body);
    d[0] = (d.len() - 1).min(255) as u8;
    Ok(Response::data(truncate(d, usize::from(cdb[4]))))
}

/// MODE SENSE(10).
pub(crate) fn mode_sense10(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let cdb = req.cdb;
    let dbd = cdb[1] & 0x08 != 0;
    let llbaa = cdb[1] & 0x10 != 0;
    let body = pages(lu, cdb)?;
    let mut d = vec![0u8; 8];
    d[3] = device_specific(lu);
    if !dbd {
        if llbaa {
            d[4] = 0x01;
            d[7] = 16;
            d.extend_from_slice(&lu.blocks().to_be_bytes());
            d.extend_from_slice(&[0, 0, 0, 0]);
            d.extend_from_slice(&lu.cfg.block_size.to_be_bytes());
        } else {
            d[7] = 8;
            let blocks = lu.blocks().min(0xffff_ffff) as u32;
            d.extend_from_slice(&blocks.to_be_bytes());
            d.extend_from_slice(&lu.cfg.block_size.to_be_bytes());
        }
    }
    d.extend_from_slice(&body);
    let len = (d.len() - 2) as u16;
    d[0..2].copy_from_slice(&len.to_be_bytes());
    Ok(Response::data(truncate(d, usize::from(be16(cdb, 7)))))
}

/// Changeable bits of a page, as MODE SENSE reports them with PC=01b.
fn changeable(code: u8) -> Vec<u8> {
    page(code, Pc::Changeable, &ModeState::default())
}

/// Apply a MODE SELECT parameter list (header length `hdr`): only changeable bits may differ
/// from the current values.
fn select(lu: &LogicalUnit, req: &Request<'_>, list_len: usize, ten: bool) -> CmdResult<Response> {
    let cdb = req.cdb;
    let write_len = list_len as u32;
    if cdb[1] & 0x01 != 0 {
        // SP: saved pages are not supported.
        return Err(invalid_field(1, Some(0)));
    }
    let data = crate::cdb::gather(req.data_out);
    if data.len() < list_len {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    }
    let p = &data[..list_len];
    let hdr = if ten { 8 } else { 4 };
    if p.is_empty() {
        return Ok(Response {
            write_len,
            ..Response::good()
        });
    }
    if p.len() < hdr {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    }
    let bd_len = if ten {
        usize::from(be16(p, 6))
    } else {
        usize::from(p[3])
    };
    let mut pos = hdr;
    if bd_len > 0 {
        if bd_len != 8 && bd_len != 16 || p.len() < hdr + bd_len {
            return Err(crate::cdb::invalid_param(
                if ten { 6 } else { 3 } as u16,
                None,
            ));
        }
        let len_at = hdr + bd_len - 4;
        let block_len = crate::cdb::be32(p, len_at) & 0x00ff_ffff;
        if block_len != 0 && block_len != lu.cfg.block_size {
            return Err(crate::cdb::invalid_param(len_at as u16, None));
        }
        pos += bd_len;
    }
    let mut new = lu.state().mode.clone();
    while pos < p.len() {
        if p.len() < pos + 2 {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
        }
        let code = p[pos] & 0x3f;
        if p[pos] & 0x40 != 0 {
            return Err(crate::cdb::invalid_param(pos as u16, Some(6)));
        }
        let len = usize::from(p[pos + 1]) + 2;
        if !PAGES.contains(&code) {
            return Err(crate::cdb::invalid_param(pos as u16, None));
        }
        let cur = page(code, Pc::Current, &new);
        if len != cur.len() || p.len() < pos + len {
            return Err(crate::cdb::invalid_param(pos as u16 + 1, None));
        }
        let mask = changeable(code);
        let given = &p[pos..pos + len];
        for i in 2..len {
            if (given[i] ^ cur[i]) & !mask[i] != 0 {
                return Err(crate::cdb::invalid_param((pos + i) as u16, None));
            }
        }
        match code {
            0x08 => new.wce = given[2] & 0x04 != 0,
            0x0a => {
                new.d_sense = given[2] & 0x04 != 0;
                new.swp = given[4] & 0x08 != 0;
            }
            _ => {}
        }
        pos += len;
    }
    let changed = {
        let mut st = lu.state();
        let changed = st.mode != new;
        st.mode = new;
        changed
    };
    if changed {
        lu.unit_attention_all(Sense::MODE_PARAMETERS_CHANGED, Some(req.nexus));
    }
    Ok(Response {
        write_len,
        ..Response::good()
    })
}

/// MODE SELECT(6).
pub(crate) fn mode_select6(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    lu.check_ready()?;
    select(lu, req, usize::from(req.cdb[4]), false)
}

/// MODE SELECT(10).
pub(crate) fn mode_select10(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    lu.check_ready()?;
    select(lu, req, usize::from(be16(req.cdb, 7)), true)
}
