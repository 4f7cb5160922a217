//! The logical units of one target, and the answers for a LUN that does not exist.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    LogicalUnit, Request, Response, cdb::truncate, cmd::misc::report_luns_for, sense::Sense,
};

/// The LUNs of a target.
#[derive(Clone, Debug, Default)]
pub struct LunMap {
    luns: BTreeMap<u16, Arc<LogicalUnit>>,
    list: Vec<u16>,
}

/// Answers for commands addressed to a LUN that does not exist (SPC-4 section 6.6.2 and
/// SAM-5 section 5.9.3).
#[derive(Clone, Copy, Debug)]
pub struct MissingLun;

impl LunMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace a LUN.
    pub fn insert(&mut self, lun: u16, lu: Arc<LogicalUnit>) {
        self.luns.insert(lun, lu);
        self.list = self.luns.keys().copied().collect();
    }

    /// Remove a LUN.
    pub fn remove(&mut self, lun: u16) -> Option<Arc<LogicalUnit>> {
        let lu = self.luns.remove(&lun);
        self.list = self.luns.keys().copied().collect();
        lu
    }

    /// The logical unit of a LUN.
    pub fn get(&self, lun: u16) -> Option<&Arc<LogicalUnit>> {
        self.luns.get(&lun)
    }

    /// LUN numbers, ascending.
    pub fn luns(&self) -> &[u16] {
        &self.list
    }

    /// Iterate over the logical units.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &Arc<LogicalUnit>)> {
        self.luns.iter().map(|(&l, lu)| (l, lu))
    }

    /// [`LogicalUnit::execute_nowait`] on a LUN (`None` also for an address that is not a
    /// valid LUN).
    pub fn execute_nowait(&self, lun: Option<u16>, req: &Request<'_>) -> Option<Response> {
        self.luns.get(&lun?)?.execute_nowait(req)
    }

    /// Execute a command on a LUN (`None`: an address that is not a valid LUN).
    pub fn execute(&self, lun: Option<u16>, req: &Request<'_>) -> Response {
        match lun.and_then(|l| self.luns.get(&l)) {
            Some(lu) => lu.execute(req),
            None => MissingLun.execute(req),
        }
    }
}

impl MissingLun {
    /// INQUIRY answers with peripheral qualifier 011b, REPORT LUNS and REQUEST SENSE work,
    /// anything else is LOGICAL UNIT NOT SUPPORTED.
    pub fn execute(&self, req: &Request<'_>) -> Response {
        let cdb = req.cdb;
        match cdb.first() {
            Some(0x12) if cdb.len() >= 6 => {
                let mut d = vec![0u8; 36];
                d[0] = 0x7f;
                d[2] = 0x06;
                d[3] = 0x12;
                d[4] = 31;
                let alloc = usize::from(u16::from_be_bytes([cdb[3], cdb[4]]));
                Response::data(truncate(d, alloc))
            }
            Some(0xa0) if cdb.len() >= 12 => {
                report_luns_for(req).unwrap_or_else(|s| Response::check(s, false))
            }
            Some(0x03) if cdb.len() >= 6 => {
                let desc = cdb[1] & 0x01 != 0;
                let s = Sense::LUN_NOT_SUPPORTED.encode(desc).to_vec();
                Response::data(truncate(s, usize::from(cdb[4])))
            }
            _ => Response::check(Sense::LUN_NOT_SUPPORTED, false),
        }
    }
}
