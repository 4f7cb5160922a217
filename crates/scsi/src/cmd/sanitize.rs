//! SANITIZE (SBC-3 section 5.27): OVERWRITE and BLOCK ERASE, run in the background at a
//! bounded rate so that a sanitize does not starve other logical units on the same storage.
//! While it runs, commands other than INQUIRY, REPORT LUNS and REQUEST SENSE get NOT READY,
//! SANITIZE IN PROGRESS; it continues across task management and I_T nexus loss.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::{
    LogicalUnit, Request, Response,
    cdb::{CmdResult, be16, gather, invalid_field},
    sense::Sense,
};

const OVERWRITE: u8 = 0x01;
const BLOCK_ERASE: u8 = 0x02;
const EXIT_FAILURE_MODE: u8 = 0x1f;

/// SANITIZE.
pub(crate) fn sanitize(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    let cdb = req.cdb;
    let immed = cdb[1] & 0x80 != 0;
    let sa = cdb[1] & 0x1f;
    let list_len = usize::from(be16(cdb, 7));
    let write_len = list_len as u32;
    if cdb[1] & 0x40 != 0 {
        return Err(invalid_field(1, Some(6)));
    }
    if let Some(i) = (2..7).find(|&i| cdb[i] != 0) {
        return Err(invalid_field(i as u16, None));
    }
    lu.check_writable()?;
    let bs = lu.cfg.block_size as usize;
    let job = match sa {
        OVERWRITE => {
            let p = gather(req.data_out);
            // Parameter list: header (4 bytes) and an initialization pattern of 1 to one
            // block's length.
            if list_len < 5 || list_len > bs + 4 || p.len() < list_len {
                return Err(invalid_field(7, None));
            }
            let count = p[0] & 0x1f;
            let invert = p[0] & 0x80 != 0;
            let pat_len = usize::from(be16(&p, 2));
            if count == 0 || pat_len == 0 || pat_len + 4 != list_len {
                return Err(invalid_field(7, None));
            }
            let pattern = &p[4..4 + pat_len];
            let block: Vec<u8> = pattern.iter().copied().cycle().take(bs).collect();
            Job::Overwrite {
                block,
                passes: count,
                invert,
            }
        }
        BLOCK_ERASE => {
            if list_len != 0 || !lu.cfg.thin {
                return Err(invalid_field(7, None));
            }
            Job::BlockErase
        }
        EXIT_FAILURE_MODE => {
            if list_len != 0 {
                return Err(invalid_field(7, None));
            }
            return Ok(Response {
                write_len,
                ..Response::good()
            });
        }
        _ => return Err(invalid_field(1, Some(4))),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    if lu.sanitizing.swap(true, Ordering::AcqRel) {
        return Err(Sense::SANITIZE_IN_PROGRESS);
    }
    let dev = lu.dev.clone();
    let rate = lu.cfg.sanitize_rate;
    let flag = lu.sanitizing.clone();
    std::thread::Builder::new()
        .name("ironlun-sanitize".into())
        .spawn(move || {
            let r = job.run(&*dev, rate);
            if let Err(e) = &r {
                tracing::error!(error = %e, "sanitize failed");
            }
            flag.store(false, Ordering::Release);
            let _ = tx.send(r.is_ok());
        })
        .map_err(|_| {
            lu.sanitizing.store(false, Ordering::Release);
            Sense::INTERNAL_TARGET_FAILURE
        })?;
    if immed {
        return Ok(Response {
            write_len,
            ..Response::good()
        });
    }
    // Wait for the end, unless the task is aborted (the sanitize itself goes on).
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(true) => {
                return Ok(Response {
                    write_len,
                    ..Response::good()
                });
            }
            Ok(false) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Sense::WRITE_ERROR);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if req.aborted() => {
                return Ok(Response::status(crate::status::TASK_ABORTED));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

enum Job {
    Overwrite {
        block: Vec<u8>,
        passes: u8,
        invert: bool,
    },
    BlockErase,
}

impl Job {
    fn run(&self, dev: &dyn blockdev::BlockDevice, rate: u64) -> blockdev::Result<()> {
        match self {
            Self::BlockErase => dev.discard(0, dev.size()),
            Self::Overwrite {
                block,
                passes,
                invert,
            } => {
                const CHUNK: usize = 1 << 20;
                let size = dev.size();
                for pass in 0..*passes {
                    let flip = *invert && pass % 2 == 1;
                    let b: Vec<u8> = block.iter().map(|x| if flip { !x } else { *x }).collect();
                    let chunk = Bytes::from(b.repeat(CHUNK / b.len().max(1)));
                    let start = Instant::now();
                    let mut off = 0u64;
                    while off < size {
                        let n = (size - off).min(chunk.len() as u64);
                        dev.write_at(&[chunk.slice(..n as usize)], off, false)?;
                        off += n;
                        // Pace to the configured rate.
                        if rate > 0 {
                            let due = Duration::from_secs_f64(off as f64 / rate as f64);
                            if let Some(wait) = due.checked_sub(start.elapsed()) {
                                std::thread::sleep(wait);
                            }
                        }
                    }
                }
                dev.flush()
            }
        }
    }
}
