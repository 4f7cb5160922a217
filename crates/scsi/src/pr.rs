//! Reservations: SPC-4 persistent reservations (PERSISTENT RESERVE IN and OUT, every type,
//! persisted when APTPL is set) and SPC-2 RESERVE/RELEASE, with the access checks every
//! other command goes through.

use std::path::PathBuf;

use crate::{
    LogicalUnit, Nexus, Request, Response,
    cdb::{CmdResult, be16, be32, be64, gather, invalid_field, invalid_param, truncate},
    sense::{Sense, status},
};

/// Reservation types (SPC-4 table 170).
pub(crate) mod ty {
    pub(crate) const WRITE_EXCLUSIVE: u8 = 1;
    pub(crate) const EXCLUSIVE_ACCESS: u8 = 3;
    pub(crate) const WRITE_EXCLUSIVE_RO: u8 = 5;
    pub(crate) const EXCLUSIVE_ACCESS_RO: u8 = 6;
    pub(crate) const WRITE_EXCLUSIVE_AR: u8 = 7;
    pub(crate) const EXCLUSIVE_ACCESS_AR: u8 = 8;
}

fn valid_type(t: u8) -> bool {
    matches!(t, 1 | 3 | 5 | 6 | 7 | 8)
}

fn all_registrants(t: u8) -> bool {
    matches!(t, ty::WRITE_EXCLUSIVE_AR | ty::EXCLUSIVE_ACCESS_AR)
}

fn registrants_only(t: u8) -> bool {
    matches!(t, ty::WRITE_EXCLUSIVE_RO | ty::EXCLUSIVE_ACCESS_RO)
}

fn exclusive_access(t: u8) -> bool {
    matches!(
        t,
        ty::EXCLUSIVE_ACCESS | ty::EXCLUSIVE_ACCESS_RO | ty::EXCLUSIVE_ACCESS_AR
    )
}

/// An I_T nexus as persistent reservations name it: initiator port and relative target
/// port (`None`: every target port, ALL_TG_PT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Registration {
    pub(crate) initiator: String,
    pub(crate) port: Option<u16>,
    pub(crate) key: u64,
}

impl Registration {
    fn matches(&self, n: &Nexus) -> bool {
        self.initiator == n.initiator_port() && self.port.is_none_or(|p| p == n.relative_port)
    }
}

/// The persistent reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reservation {
    pub(crate) ty: u8,
    /// The holder (initiator port, relative port); `None` for all-registrants types.
    pub(crate) holder: Option<(String, u16)>,
}

/// Persistent reservation state of a logical unit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PrState {
    pub(crate) generation: u32,
    pub(crate) regs: Vec<Registration>,
    pub(crate) res: Option<Reservation>,
    pub(crate) aptpl: bool,
}

/// Largest number of registrations per logical unit.
const MAX_REGISTRATIONS: usize = 256;

impl PrState {
    fn reg(&self, n: &Nexus) -> Option<&Registration> {
        self.regs.iter().find(|r| r.matches(n))
    }

    fn is_holder(&self, n: &Nexus) -> bool {
        match &self.res {
            Some(Reservation {
                holder: Some((i, p)),
                ..
            }) => *i == n.initiator_port() && *p == n.relative_port,
            Some(Reservation { holder: None, .. }) => self.reg(n).is_some(),
            None => false,
        }
    }

    /// Serialize for APTPL (one line per item).
    fn to_text(&self) -> String {
        let mut s = format!("generation {}\n", self.generation);
        for r in &self.regs {
            let port = r.port.map_or_else(|| "*".to_owned(), |p| p.to_string());
            s.push_str(&format!("reg {:016x} {port} {}\n", r.key, r.initiator));
        }
        if let Some(res) = &self.res {
            match &res.holder {
                Some((i, p)) => s.push_str(&format!("res {} {p} {i}\n", res.ty)),
                None => s.push_str(&format!("res {} * *\n", res.ty)),
            }
        }
        s
    }

    fn from_text(text: &str) -> Option<Self> {
        let mut st = Self {
            aptpl: true,
            ..Self::default()
        };
        for line in text.lines() {
            let mut f = line.splitn(4, ' ');
            match f.next()? {
                "generation" => st.generation = f.next()?.parse().ok()?,
                "reg" => {
                    let key = u64::from_str_radix(f.next()?, 16).ok()?;
                    let port = match f.next()? {
                        "*" => None,
                        p => Some(p.parse().ok()?),
                    };
                    st.regs.push(Registration {
                        initiator: f.next()?.to_owned(),
                        port,
                        key,
                    });
                }
                "res" => {
                    let ty: u8 = f.next()?.parse().ok()?;
                    let holder = match (f.next()?, f.next()?) {
                        ("*", _) => None,
                        (p, i) => Some((i.to_owned(), p.parse().ok()?)),
                    };
                    st.res = Some(Reservation { ty, holder });
                }
                _ => return None,
            }
        }
        Some(st)
    }
}

/// Load persisted reservations (APTPL) from `path`.
pub(crate) fn load(path: &PathBuf) -> PrState {
    match std::fs::read_to_string(path) {
        Ok(t) => PrState::from_text(&t).unwrap_or_else(|| {
            tracing::error!(path = %path.display(), "unreadable reservation state ignored");
            PrState::default()
        }),
        Err(_) => PrState::default(),
    }
}

/// Commands allowed whatever the reservation (SPC-4 table 63, SBC-3 table 13).
fn always_allowed(opcode: u8, cdb: &[u8]) -> bool {
    match opcode {
        0x00 | 0x03 | 0x12 | 0x25 | 0x4d | 0x5e | 0xa0 | 0xa3 => true,
        0x9e => cdb[1] & 0x1f == 0x10, // READ CAPACITY(16)
        _ => false,
    }
}

/// Commands that only read: allowed under Write Exclusive types.
fn reads_only(opcode: u8, cdb: &[u8]) -> bool {
    match opcode {
        0x08 | 0x28 | 0xa8 | 0x88 | 0x2f | 0xaf | 0x8f | 0x34 | 0x90 | 0x1a | 0x5a | 0x37
        | 0xb7 | 0x84 | 0x1e => true,
        0x9e => cdb[1] & 0x1f == 0x12, // GET LBA STATUS
        _ => false,
    }
}

impl LogicalUnit {
    /// Check a command against the reservations held on this logical unit.
    pub(crate) fn check_reservation(&self, nexus: &Nexus, cdb: &[u8]) -> Option<Response> {
        let opcode = cdb[0];
        let st = self.state();
        // SPC-2 reservation.
        if let Some(holder) = &st.spc2_holder {
            if *holder != nexus.key()
                && !matches!(opcode, 0x12 | 0xa0 | 0x03 | 0x17 | 0x57 | 0x5e | 0xa3)
            {
                return Some(Response::status(status::RESERVATION_CONFLICT));
            }
            return None;
        }
        let pr = &st.pr;
        let Some(res) = &pr.res else {
            return None;
        };
        if always_allowed(opcode, cdb) || opcode == 0x5f {
            return None;
        }
        // SPC-2 RESERVE and RELEASE conflict with a persistent reservation.
        if matches!(opcode, 0x16 | 0x17 | 0x56 | 0x57) {
            return Some(Response::status(status::RESERVATION_CONFLICT));
        }
        let allowed = match res.ty {
            ty::WRITE_EXCLUSIVE | ty::EXCLUSIVE_ACCESS => pr.is_holder(nexus),
            _ => pr.reg(nexus).is_some(),
        };
        if allowed || (!exclusive_access(res.ty) && reads_only(opcode, cdb)) {
            return None;
        }
        Some(Response::status(status::RESERVATION_CONFLICT))
    }

    fn persist(&self, pr: &PrState) {
        let Some(path) = &self.cfg.pr_file else {
            return;
        };
        let r = if pr.aptpl && !pr.regs.is_empty() {
            write_atomic(path, pr.to_text().as_bytes())
        } else {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        };
        if let Err(e) = r {
            tracing::error!(path = %path.display(), error = %e, "persisting reservations failed");
        }
    }
}

/// Write a file durably: temporary file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &PathBuf, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// RESERVE(6)/(10): SPC-2 reservation of the whole logical unit.
pub(crate) fn reserve(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let cdb = req.cdb;
    // Third-party and extent reservations are not supported.
    if cdb[1] & 0x13 != 0 {
        return Err(invalid_field(1, None));
    }
    let mut st = lu.state();
    // SPC-2 reservations conflict with persistent reservations and registrations.
    if st.pr.res.is_some() || !st.pr.regs.is_empty() {
        return Ok(Response::status(status::RESERVATION_CONFLICT));
    }
    match &st.spc2_holder {
        Some(h) if *h != req.nexus.key() => Ok(Response::status(status::RESERVATION_CONFLICT)),
        _ => {
            st.spc2_holder = Some(req.nexus.key().to_owned());
            Ok(Response::good())
        }
    }
}

/// RELEASE(6)/(10): releases the holder's SPC-2 reservation; a no-op for anyone else.
pub(crate) fn release(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    if req.cdb[1] & 0x13 != 0 {
        return Err(invalid_field(1, None));
    }
    let mut st = lu.state();
    if st.spc2_holder.as_deref() == Some(req.nexus.key()) {
        st.spc2_holder = None;
    }
    Ok(Response::good())
}

/// PERSISTENT RESERVE IN (SPC-4 section 6.13).
pub(crate) fn pr_in(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let cdb = req.cdb;
    let alloc = usize::from(be16(cdb, 7));
    let st = lu.state();
    let pr = &st.pr;
    let mut d = Vec::new();
    match cdb[1] & 0x1f {
        // READ KEYS
        0 => {
            d.extend_from_slice(&pr.generation.to_be_bytes());
            d.extend_from_slice(&((pr.regs.len() * 8) as u32).to_be_bytes());
            for r in &pr.regs {
                d.extend_from_slice(&r.key.to_be_bytes());
            }
        }
        // READ RESERVATION
        1 => {
            d.extend_from_slice(&pr.generation.to_be_bytes());
            match &pr.res {
                None => d.extend_from_slice(&0u32.to_be_bytes()),
                Some(res) => {
                    d.extend_from_slice(&16u32.to_be_bytes());
                    let key = match &res.holder {
                        Some((i, p)) => pr
                            .regs
                            .iter()
                            .find(|r| r.initiator == *i && r.port.is_none_or(|x| x == *p))
                            .map_or(0, |r| r.key),
                        None => 0,
                    };
                    d.extend_from_slice(&key.to_be_bytes());
                    d.extend_from_slice(&[0; 4]);
                    d.push(0);
                    d.push(res.ty & 0x0f);
                    d.extend_from_slice(&[0; 2]);
                }
            }
        }
        // REPORT CAPABILITIES
        2 => {
            d = vec![
                0,
                8,
                0x04 | 0x01,
                0x80 | u8::from(pr.aptpl),
                0x80 | 0x40 | 0x20 | 0x08 | 0x02,
                0x01,
                0,
                0,
            ];
            // CRH=0; ATP_C (ALL_TG_PT) and PTPL_C (persist through power loss) supported;
            // TMV: the type mask below is valid.
        }
        // READ FULL STATUS
        3 => {
            d.extend_from_slice(&pr.generation.to_be_bytes());
            d.extend_from_slice(&[0; 4]);
            for r in &pr.regs {
                let holder = match &pr.res {
                    Some(Reservation {
                        holder: Some((i, p)),
                        ..
                    }) => *i == r.initiator && r.port.is_none_or(|x| x == *p),
                    Some(Reservation { holder: None, .. }) => true,
                    None => false,
                };
                d.extend_from_slice(&r.key.to_be_bytes());
                d.extend_from_slice(&[0; 4]);
                d.push(if r.port.is_none() { 0x02 } else { 0 } | u8::from(holder));
                d.push(if holder {
                    pr.res.as_ref().map_or(0, |x| x.ty & 0x0f)
                } else {
                    0
                });
                d.extend_from_slice(&[0; 4]);
                d.extend_from_slice(&r.port.unwrap_or(0).to_be_bytes());
                let tid = transport_id(&r.initiator);
                d.extend_from_slice(&(tid.len() as u32).to_be_bytes());
                d.extend_from_slice(&tid);
            }
            let len = (d.len() - 8) as u32;
            d[4..8].copy_from_slice(&len.to_be_bytes());
        }
        _ => return Err(invalid_field(1, Some(4))),
    }
    Ok(Response::data(truncate(d, alloc)))
}

/// An iSCSI TransportID with ISID (SPC-4 section 7.6.4.6): format 01b, protocol 5.
fn transport_id(initiator_port: &str) -> Vec<u8> {
    let mut name = initiator_port.as_bytes().to_vec();
    name.push(0);
    while !name.len().is_multiple_of(4) {
        name.push(0);
    }
    let mut t = vec![0x45, 0];
    t.extend_from_slice(&(name.len() as u16).to_be_bytes());
    t.extend_from_slice(&name);
    t
}

/// Parse an iSCSI TransportID into an initiator port name (format 01b with ISID, or 00b
/// name only, which names every port of the initiator).
fn parse_transport_id(b: &[u8]) -> Option<String> {
    if b.len() < 4 || b[0] & 0x0f != 5 {
        return None;
    }
    let len = usize::from(be16(b, 2));
    let body = b.get(4..4 + len)?;
    let end = body.iter().position(|&c| c == 0).unwrap_or(body.len());
    let s = std::str::from_utf8(&body[..end]).ok()?;
    match b[0] >> 6 {
        0 => Some(s.to_owned()),
        1 => {
            // "<name>,i,0x<isid>": name and ISID may also be NUL-separated.
            let rest = &body[end..];
            if s.contains(",i,0x") {
                Some(s.to_owned())
            } else {
                let isid_end = rest
                    .iter()
                    .skip(1)
                    .position(|&c| c == 0)
                    .map_or(rest.len(), |p| p + 1);
                let isid = std::str::from_utf8(rest.get(1..isid_end)?).ok()?;
                Some(format!("{s},i,{isid}"))
            }
        }
        _ => None,
    }
}

/// PERSISTENT RESERVE OUT (SPC-4 section 6.14).
pub(crate) fn pr_out(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let cdb = req.cdb;
    let sa = cdb[1] & 0x1f;
    let scope = cdb[2] >> 4;
    let rtype = cdb[2] & 0x0f;
    let list_len = be32(cdb, 5) as usize;
    let write_len = list_len as u32;
    let data = gather(req.data_out);
    if data.len() < list_len {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    }
    let p = &data[..list_len];
    if sa > 7 {
        return Err(invalid_field(1, Some(4)));
    }
    if sa != 7 && list_len != 24 {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    }
    if sa == 7 && list_len < 24 {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    }
    let key = be64(p, 0);
    let sa_key = be64(p, 8);
    if matches!(sa, 1 | 2 | 4 | 5) {
        if scope != 0 {
            return Err(invalid_field(2, Some(7)));
        }
        if !valid_type(rtype) {
            return Err(invalid_field(2, Some(3)));
        }
    }
    let (spec_i_pt, all_tg_pt, aptpl) = if sa == 7 {
        (false, false, p[17] & 0x01 != 0)
    } else {
        (p[20] & 0x08 != 0, p[20] & 0x04 != 0, p[20] & 0x01 != 0)
    };
    if spec_i_pt {
        // SIP_C is 0 in REPORT CAPABILITIES.
        return Err(invalid_param(20, Some(3)));
    }
    let n = req.nexus;
    let conflict = Ok(Response {
        write_len,
        ..Response::status(status::RESERVATION_CONFLICT)
    });
    let good = Ok(Response {
        write_len,
        ..Response::good()
    });
    let mut st = lu.state();
    if st.spc2_holder.as_ref().is_some_and(|h| *h != n.key()) {
        return conflict;
    }
    let mut ua_targets: Vec<(String, Sense)> = Vec::new();
    let pr = &mut st.pr;
    let registered = pr.reg(n).cloned();
    match sa {
        // REGISTER, REGISTER AND IGNORE EXISTING KEY
        0 | 6 => {
            match registered {
                None => {
                    if sa == 0 && key != 0 {
                        return conflict;
                    }
                    if sa_key == 0 {
                        return good;
                    }
                    if pr.regs.len() >= MAX_REGISTRATIONS {
                        return Err(Sense::INSUFFICIENT_REGISTRATION_RESOURCES);
                    }
                    pr.regs.push(Registration {
                        initiator: n.initiator_port(),
                        port: (!all_tg_pt).then_some(n.relative_port),
                        key: sa_key,
                    });
                }
                Some(r) => {
                    if sa == 0 && key != r.key {
                        return conflict;
                    }
                    if sa_key == 0 {
                        unregister(pr, n, &mut ua_targets);
                    } else if let Some(reg) = pr.regs.iter_mut().find(|x| x.matches(n)) {
                        reg.key = sa_key;
                    }
                }
            }
            pr.aptpl = aptpl;
            pr.generation = pr.generation.wrapping_add(1);
        }
        // RESERVE
        1 => {
            let Some(r) = registered else { return conflict };
            if r.key != key {
                return conflict;
            }
            match &pr.res {
                Some(res) => {
                    if !pr.is_holder(n) || res.ty != rtype {
                        return conflict;
                    }
                }
                None => {
                    let holder =
                        (!all_registrants(rtype)).then(|| (n.initiator_port(), n.relative_port));
                    pr.res = Some(Reservation { ty: rtype, holder });
                }
            }
        }
        // RELEASE
        2 => {
            let Some(r) = registered else { return conflict };
            if r.key != key {
                return conflict;
            }
            let Some(res) = pr.res.clone() else {
                return good;
            };
            if !pr.is_holder(n) {
                return good;
            }
            if res.ty != rtype {
                return Err(Sense::INVALID_RELEASE_OF_PR);
            }
            pr.res = None;
            if registrants_only(res.ty) || all_registrants(res.ty) {
                for other in pr.regs.iter().filter(|x| !x.matches(n)) {
                    ua_targets.push((other.initiator.clone(), Sense::RESERVATIONS_RELEASED));
                }
            }
        }
        // CLEAR
        3 => {
            let Some(r) = registered else { return conflict };
            if r.key != key {
                return conflict;
            }
            for other in pr.regs.iter().filter(|x| !x.matches(n)) {
                ua_targets.push((other.initiator.clone(), Sense::RESERVATIONS_PREEMPTED));
            }
            pr.regs.clear();
            pr.res = None;
            pr.generation = pr.generation.wrapping_add(1);
        }
        // PREEMPT, PREEMPT AND ABORT
        4 | 5 => {
            let Some(r) = registered else { return conflict };
            if r.key != key {
                return conflict;
            }
            let res = pr.res.clone();
            match res {
                Some(res) if all_registrants(res.ty) => {
                    if sa_key == 0 {
                        // Preempt every other registrant and take a new reservation.
                        for other in pr.regs.iter().filter(|x| !x.matches(n)) {
                            ua_targets
                                .push((other.initiator.clone(), Sense::REGISTRATIONS_PREEMPTED));
                        }
                        pr.regs.retain(|x| x.matches(n));
                        let holder = (!all_registrants(rtype))
                            .then(|| (n.initiator_port(), n.relative_port));
                        pr.res = Some(Reservation { ty: rtype, holder });
                    } else if !remove_key(pr, n, sa_key, &mut ua_targets) {
                        return conflict;
                    }
                }
                Some(res) => {
                    let holder_key = res.holder.as_ref().and_then(|(i, p)| {
                        pr.regs
                            .iter()
                            .find(|x| x.initiator == *i && x.port.is_none_or(|q| q == *p))
                            .map(|x| x.key)
                    });
                    if sa_key == 0 {
                        return Err(invalid_param(8, None));
                    }
                    if holder_key == Some(sa_key) {
                        remove_key(pr, n, sa_key, &mut ua_targets);
                        pr.res = Some(Reservation {
                            ty: rtype,
                            holder: (!all_registrants(rtype))
                                .then(|| (n.initiator_port(), n.relative_port)),
                        });
                        if res.ty != rtype {
                            for other in pr.regs.iter().filter(|x| !x.matches(n)) {
                                ua_targets
                                    .push((other.initiator.clone(), Sense::RESERVATIONS_RELEASED));
                            }
                        }
                    } else if !remove_key(pr, n, sa_key, &mut ua_targets) {
                        return conflict;
                    }
                }
                None => {
                    if sa_key == 0 {
                        return Err(invalid_param(8, None));
                    }
                    if !remove_key(pr, n, sa_key, &mut ua_targets) {
                        return conflict;
                    }
                }
            }
            pr.generation = pr.generation.wrapping_add(1);
        }
        // REGISTER AND MOVE
        _ => {
            let Some(r) = registered else { return conflict };
            if r.key != key {
                return conflict;
            }
            let unreg = p[17] & 0x02 != 0;
            let rel_port = be16(p, 18);
            let tid_len = be32(p, 20) as usize;
            let Some(tid) = p.get(24..24 + tid_len) else {
                return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
            };
            let Some(dest) = parse_transport_id(tid) else {
                return Err(invalid_param(24, None));
            };
            let res = match &pr.res {
                Some(res) if !all_registrants(res.ty) && pr.is_holder(n) => res.clone(),
                _ => return conflict,
            };
            if sa_key == 0 || (dest == n.initiator_port() && rel_port == n.relative_port) {
                return Err(invalid_param(8, None));
            }
            match pr
                .regs
                .iter_mut()
                .find(|x| x.initiator == dest && x.port.is_none_or(|q| q == rel_port))
            {
                Some(x) => x.key = sa_key,
                None => pr.regs.push(Registration {
                    initiator: dest.clone(),
                    port: Some(rel_port),
                    key: sa_key,
                }),
            }
            pr.res = Some(Reservation {
                ty: res.ty,
                holder: Some((dest, rel_port)),
            });
            if unreg {
                pr.regs.retain(|x| !x.matches(n));
            }
            pr.aptpl = aptpl;
            pr.generation = pr.generation.wrapping_add(1);
        }
    }
    let snapshot = pr.clone();
    // Unit attentions go to every nexus of the affected initiator ports.
    for (k, ns) in st.nexuses.iter_mut() {
        for (init, sense) in &ua_targets {
            if k.starts_with(&format!("{init}|")) {
                crate::lu::push_ua(ns, *sense);
            }
        }
    }
    drop(st);
    lu.persist(&snapshot);
    good
}

/// Unregister the nexus; releases a reservation it held alone.
fn unregister(pr: &mut PrState, n: &Nexus, ua: &mut Vec<(String, Sense)>) {
    let holder = pr.is_holder(n);
    pr.regs.retain(|x| !x.matches(n));
    if let Some(res) = pr.res.clone() {
        let release = if all_registrants(res.ty) {
            pr.regs.is_empty()
        } else {
            holder
        };
        if release {
            pr.res = None;
            if registrants_only(res.ty) {
                for other in &pr.regs {
                    ua.push((other.initiator.clone(), Sense::RESERVATIONS_RELEASED));
                }
            }
        }
    }
}

/// Remove every registration with `key` but the requester's; false when none matched.
fn remove_key(pr: &mut PrState, n: &Nexus, key: u64, ua: &mut Vec<(String, Sense)>) -> bool {
    let before = pr.regs.len();
    let mut removed = Vec::new();
    pr.regs.retain(|x| {
        let drop = x.key == key && !x.matches(n);
        if drop {
            removed.push(x.initiator.clone());
        }
        !drop
    });
    for i in removed {
        ua.push((i, Sense::REGISTRATIONS_PREEMPTED));
    }
    before != pr.regs.len() || pr.regs.iter().any(|x| x.key == key && x.matches(n))
}
