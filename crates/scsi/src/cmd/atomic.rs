//! Read-modify-write commands, atomic against concurrent writes to the same blocks:
//! COMPARE AND WRITE (SBC-3 section 5.2), ORWRITE(16) (section 5.9) and WRITE ATOMIC(16)
//! (SBC-4 section 5.48).

use bytes::Bytes;

use super::io::{available, prefix, read_blocks};
use crate::{
    LogicalUnit, Request, Response,
    cdb::{CmdResult, be16, be32, be64, gather, invalid_field},
    sense::Sense,
    vpd::{MAX_COMPARE_AND_WRITE_BLOCKS, max_atomic_blocks},
};

/// COMPARE AND WRITE: compares the first half of the Data-Out with the medium and, when
/// equal, writes the second half; a miscompare reports the offset of the first differing
/// byte in INFORMATION.
pub(crate) fn compare_and_write(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    lu.check_ready()?;
    let cdb = req.cdb;
    let bs = lu.cfg.block_size;
    let blocks = u32::from(cdb[13]);
    let write_len = 2 * blocks * bs;
    lu.check_writable()?;
    if cdb[1] & 0xe0 != 0 {
        return Err(invalid_field(1, Some(7)));
    }
    let lba = be64(cdb, 2);
    if blocks > u32::from(MAX_COMPARE_AND_WRITE_BLOCKS) {
        return Err(invalid_field(13, None));
    }
    lu.check_lba(lba, u64::from(blocks))?;
    // The Data-Out must be exactly the verify and write data.
    if available(req.data_out) != write_len as usize {
        return Err(invalid_field(13, None));
    }
    if blocks == 0 {
        return Ok(Response {
            write_len,
            ..Response::good()
        });
    }
    let data = gather(req.data_out);
    let half = (blocks * bs) as usize;
    let (verify, write) = data.split_at(half);
    let offset = lba * u64::from(bs);
    let _lock = lu.locks.exclusive(offset, half as u64);
    let current = read_blocks(lu, lba, u64::from(blocks))?;
    if let Some(pos) = current.iter().zip(verify).position(|(a, b)| a != b) {
        return Err(Sense::MISCOMPARE_DURING_VERIFY.with_information(pos as u64));
    }
    lu.dev
        .write_at(
            &[Bytes::copy_from_slice(write)],
            offset,
            cdb[1] & 0x08 != 0 || lu.write_through(),
        )
        .map_err(|e| lu.io_error(&e, true))?;
    Ok(Response {
        write_len,
        ..Response::good()
    })
}

/// ORWRITE(16): the medium becomes the bitwise OR of itself and the Data-Out.
pub(crate) fn orwrite(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    lu.check_ready()?;
    let cdb = req.cdb;
    let bs = lu.cfg.block_size;
    let lba = be64(cdb, 2);
    let blocks = be32(cdb, 10);
    let write_len = blocks.saturating_mul(bs);
    lu.check_writable()?;
    if cdb[1] & 0xe0 != 0 {
        return Err(invalid_field(1, Some(7)));
    }
    lu.check_lba(lba, u64::from(blocks))?;
    if blocks > lu.cfg.max_transfer_blocks {
        return Err(invalid_field(10, None));
    }
    let present = (available(req.data_out) / bs as usize).min(blocks as usize);
    if present == 0 {
        return Ok(Response {
            write_len,
            ..Response::good()
        });
    }
    let offset = lba * u64::from(bs);
    let len = (present * bs as usize) as u64;
    let _lock = lu.locks.exclusive(offset, len);
    let mut current = read_blocks(lu, lba, present as u64)?.to_vec();
    let data = gather(&prefix(req.data_out, len as usize));
    for (c, d) in current.iter_mut().zip(&data) {
        *c |= d;
    }
    lu.dev
        .write_at(
            &[Bytes::from(current)],
            offset,
            cdb[1] & 0x08 != 0 || lu.write_through(),
        )
        .map_err(|e| lu.io_error(&e, true))?;
    Ok(Response {
        write_len,
        ..Response::good()
    })
}

/// WRITE ATOMIC(16): all of the blocks or none, no other write interleaved.
pub(crate) fn write_atomic(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    lu.check_ready()?;
    let cdb = req.cdb;
    let bs = lu.cfg.block_size;
    let lba = be64(cdb, 2);
    let blocks = u32::from(be16(cdb, 12));
    let write_len = blocks * bs;
    lu.check_writable()?;
    if cdb[1] & 0xe0 != 0 {
        return Err(invalid_field(1, Some(7)));
    }
    lu.check_lba(lba, u64::from(blocks))?;
    if blocks > max_atomic_blocks(bs) {
        return Err(invalid_field(12, None));
    }
    if blocks == 0 {
        return Ok(Response {
            write_len,
            ..Response::good()
        });
    }
    // All or nothing: a short Data-Out writes nothing.
    if available(req.data_out) < write_len as usize {
        return Err(Sense::INVALID_FIELD_IN_CDB);
    }
    let offset = lba * u64::from(bs);
    let _lock = lu.locks.exclusive(offset, u64::from(write_len));
    let bufs = prefix(req.data_out, write_len as usize);
    lu.dev
        .write_at(&bufs, offset, cdb[1] & 0x08 != 0 || lu.write_through())
        .map_err(|e| lu.io_error(&e, true))?;
    Ok(Response {
        write_len,
        ..Response::good()
    })
}
