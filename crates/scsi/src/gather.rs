//! Write gathering: WRITE commands to adjacent blocks of one logical unit that arrive
//! together (an initiator streaming a file at queue depth) are each checked and admitted as
//! they come, as usual, and written with one device call when the run ends. Every device
//! call has a fixed cost beside the copy (on ext4 with large folios, a walk over all the
//! buffer heads of each folio it touches), paid once per run instead of once per command.
//!
//! The caller keeps the order of the medium: a run is written before any other command of
//! the connection runs, and it is answered only once it is written (a run that would wait is
//! written whole on an I/O thread). Nothing waits for a run to grow: it holds what arrived in
//! one batch.

use std::{cell::Cell, sync::Arc, sync::atomic::Ordering};

use bytes::Bytes;
use smallvec::SmallVec;

use crate::{
    LogicalUnit, LunMap, Request, Response,
    cmd::io::{available, parse_rw},
};

/// Largest run, in bytes (a run is copied on the caller's thread when it needs no wait).
pub const MAX_RUN_BYTES: u64 = 1 << 20;
/// Largest number of buffers in a run (one device call takes at most `IOV_MAX`, 1024).
const MAX_RUN_BUFS: usize = 256;

/// What the write handler did with a write offered to a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deferral {
    /// Not reached: the command ended before its write (a refusal, a conflict).
    Offered,
    /// Checked and joined: the run writes its data.
    Joined,
    /// Checked, but it must reach stable storage (FUA, write cache off): the usual path
    /// runs it again, whole.
    Refused,
}

/// How a command relates to a run (see [`WriteRun::fit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Not a plain write of whole blocks: it runs the usual way (after the run is written).
    No,
    /// It continues the run.
    Joins,
    /// A plain write that does not continue the run: the run is written first, then it
    /// starts the next.
    AfterRun,
}

/// The result of [`WriteRun::join`].
#[derive(Debug)]
pub enum Joined {
    /// Part of the run, answered when the run is written.
    Yes,
    /// Finished without reaching the medium (a CHECK CONDITION, a reservation conflict).
    Done(Response),
    /// To run the usual way, whole, after the run is written (nothing of it was done).
    No,
}

/// A run of adjacent writes to one logical unit, each with the caller's tag for it (the
/// task it answers).
#[derive(Debug)]
pub struct WriteRun<T> {
    lu: Option<Arc<LogicalUnit>>,
    offset: u64,
    end: u64,
    bufs: SmallVec<[Bytes; 16]>,
    /// Each member's tag and the bytes its CDB asked for.
    members: SmallVec<[(T, u32); 16]>,
}

impl<T> Default for WriteRun<T> {
    fn default() -> Self {
        Self {
            lu: None,
            offset: 0,
            end: 0,
            bufs: SmallVec::new(),
            members: SmallVec::new(),
        }
    }
}

impl<T> Drop for WriteRun<T> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<T> WriteRun<T> {
    /// Whether the run holds no write.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The tags of the writes in the run.
    pub fn tags(&self) -> impl Iterator<Item = &T> {
        self.members.iter().map(|(t, _)| t)
    }

    /// Where a command with this CDB and Data-Out, for `lun` of `map`, stands with this
    /// run. Looks at the CDB alone (no lock, no state): a plain WRITE(10/12/16) without FUA
    /// or protection information, carrying exactly the blocks it names.
    pub fn fit(&self, map: &LunMap, lun: Option<u16>, cdb: &[u8], data: &[Bytes]) -> Fit {
        let Some(lu) = lun.and_then(|l| map.get(l)) else {
            return Fit::No;
        };
        // WRITE(10), WRITE(12), WRITE(16), with the CDB length each needs.
        let need = match cdb.first() {
            Some(0x2a) => 10,
            Some(0xaa) => 12,
            Some(0x8a) => 16,
            _ => return Fit::No,
        };
        if cdb.len() < need {
            return Fit::No;
        }
        let rw = parse_rw(cdb);
        let bs = u64::from(lu.cfg.block_size);
        let len = u64::from(rw.blocks) * bs;
        if rw.fua || rw.protect != 0 || len == 0 || len > MAX_RUN_BYTES {
            return Fit::No;
        }
        if available(data) as u64 != len || data.len() > MAX_RUN_BUFS {
            return Fit::No;
        }
        let Some(run_lu) = &self.lu else {
            return Fit::Joins;
        };
        let offset = rw.lba.saturating_mul(bs);
        if Arc::ptr_eq(run_lu, lu)
            && offset == self.end
            && self.end - self.offset + len <= MAX_RUN_BYTES
            && self.bufs.len() + data.len() <= MAX_RUN_BUFS
        {
            Fit::Joins
        } else {
            Fit::AfterRun
        }
    }

    /// Run a command that [`Self::fit`] found to join the run (on `map`, for `lun`): it is
    /// admitted and checked now, its data waits in the run.
    pub fn join(&mut self, map: &LunMap, lun: Option<u16>, req: &Request<'_>, tag: T) -> Joined {
        let Some(lu) = lun.and_then(|l| map.get(l)) else {
            return Joined::No;
        };
        if self.lu.is_none() {
            // The run counts as a running command from before its first member is admitted
            // until it is written, so that an access state change waits for it.
            lu.running.fetch_add(1, Ordering::AcqRel);
            self.lu = Some(lu.clone());
            let offset = parse_rw(req.cdb)
                .lba
                .saturating_mul(u64::from(lu.cfg.block_size));
            self.offset = offset;
            self.end = offset;
        }
        let deferral = Cell::new(Deferral::Offered);
        let r = lu.execute(&Request {
            defer: Some(&deferral),
            ..*req
        });
        let joined = match deferral.get() {
            Deferral::Joined => {
                self.bufs.extend(req.data_out.iter().cloned());
                self.end += u64::from(r.write_len);
                self.members.push((tag, r.write_len));
                Joined::Yes
            }
            Deferral::Offered => Joined::Done(r),
            Deferral::Refused => Joined::No,
        };
        if self.members.is_empty() {
            self.release();
        }
        joined
    }

    /// Write the run if that needs only memory, answering each member through `done`;
    /// `false` when it would have to wait (the run is kept, for [`Self::write`]).
    pub fn write_nowait(&mut self, done: impl FnMut(T, Response)) -> bool {
        let Some(lu) = self.lu.clone() else {
            return true;
        };
        let len = self.end - self.offset;
        let result = {
            let Some(_lock) = lu.locks.try_shared(self.offset, len) else {
                return false;
            };
            match lu.dev.write_at_nowait(&self.bufs, self.offset, false) {
                Ok(false) => return false,
                Ok(true) => Ok(()),
                Err(e) => Err(e),
            }
        };
        self.answer(&lu, result, done);
        true
    }

    /// Write the run, waiting as needed, answering each member through `done`.
    pub fn write(mut self, done: impl FnMut(T, Response)) {
        let Some(lu) = self.lu.clone() else {
            return;
        };
        let result = {
            let _lock = lu.locks.shared(self.offset, self.end - self.offset);
            lu.dev.write_at(&self.bufs, self.offset, false)
        };
        self.answer(&lu, result, done);
    }

    /// Answer every member with the outcome of the run's write, and empty the run.
    fn answer(
        &mut self,
        lu: &LogicalUnit,
        result: blockdev::Result<()>,
        mut done: impl FnMut(T, Response),
    ) {
        let failed = result
            .err()
            .map(|e| Response::check(lu.io_error(&e, true), lu.descriptor_sense()));
        self.bufs.clear();
        for (tag, write_len) in self.members.drain(..) {
            done(
                tag,
                match &failed {
                    Some(r) => r.clone(),
                    None => Response {
                        write_len,
                        ..Response::good()
                    },
                },
            );
        }
        self.release();
    }

    /// Stop counting as a running command of the logical unit.
    fn release(&mut self) {
        if let Some(lu) = self.lu.take() {
            lu.running.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
