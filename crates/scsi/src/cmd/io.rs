//! Medium access: READ, WRITE, WRITE AND VERIFY, VERIFY (6/10/12/16 as defined), WRITE SAME,
//! UNMAP, PRE-FETCH and SYNCHRONIZE CACHE (SBC-3 section 5).

use bytes::Bytes;

use crate::{
    LogicalUnit, Request, Response,
    cdb::{CmdResult, be16, be24, be32, be64, gather, invalid_field, invalid_param},
    gather::Deferral,
    sense::Sense,
    vpd::{MAX_UNMAP_DESCRIPTORS, max_unmap_blocks},
};

/// The addressing fields of a read/write-type CDB.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rw {
    pub(crate) lba: u64,
    pub(crate) blocks: u32,
    pub(crate) fua: bool,
    /// RDPROTECT / WRPROTECT / VRPROTECT (no protection information is supported).
    pub(crate) protect: u8,
}

/// Parse LBA, transfer length and flags by CDB size.
pub(crate) fn parse_rw(cdb: &[u8]) -> Rw {
    match cdb[0] >> 5 {
        // 6-byte: 21-bit LBA, 0 blocks means 256.
        0 => Rw {
            lba: u64::from(be24(cdb, 1) & 0x1f_ffff),
            blocks: if cdb[4] == 0 { 256 } else { u32::from(cdb[4]) },
            fua: false,
            protect: 0,
        },
        1 | 2 => Rw {
            lba: u64::from(be32(cdb, 2)),
            blocks: u32::from(be16(cdb, 7)),
            fua: cdb[1] & 0x08 != 0,
            protect: cdb[1] >> 5,
        },
        5 => Rw {
            lba: u64::from(be32(cdb, 2)),
            blocks: be32(cdb, 6),
            fua: cdb[1] & 0x08 != 0,
            protect: cdb[1] >> 5,
        },
        _ => Rw {
            lba: be64(cdb, 2),
            blocks: be32(cdb, 10),
            fua: cdb[1] & 0x08 != 0,
            protect: cdb[1] >> 5,
        },
    }
}

/// Common checks: protection field, transfer length limit, range.
fn check_rw(lu: &LogicalUnit, rw: &Rw, max_blocks: u32) -> CmdResult<()> {
    if rw.protect != 0 {
        return Err(invalid_field(1, Some(7)));
    }
    lu.check_lba(rw.lba, u64::from(rw.blocks))?;
    if rw.blocks > max_blocks {
        return Err(invalid_field(
            if rw.lba > 0xffff_ffff { 10 } else { 7 },
            None,
        ));
    }
    Ok(())
}

/// The first `len` bytes of a buffer list, without copying.
pub(crate) fn prefix(bufs: &[Bytes], len: usize) -> smallvec::SmallVec<[Bytes; 4]> {
    let mut out = smallvec::SmallVec::new();
    let mut left = len;
    for b in bufs {
        if left == 0 {
            break;
        }
        let n = left.min(b.len());
        out.push(b.slice(..n));
        left -= n;
    }
    out
}

/// The first `len` of the `have` bytes of the Data-Out: the Data-Out itself when that is
/// all of it (the usual write), else a [`prefix`] of it.
fn data_prefix(bufs: &[Bytes], have: usize, len: usize) -> std::borrow::Cow<'_, [Bytes]> {
    if have == len {
        std::borrow::Cow::Borrowed(bufs)
    } else {
        std::borrow::Cow::Owned(prefix(bufs, len).into_vec())
    }
}

/// Bytes of Data-Out available.
pub(crate) fn available(bufs: &[Bytes]) -> usize {
    bufs.iter().map(Bytes::len).sum()
}

/// Read `blocks` blocks at `lba` into a new buffer.
pub(crate) fn read_blocks(lu: &LogicalUnit, lba: u64, blocks: u64) -> CmdResult<Bytes> {
    let bs = u64::from(lu.cfg.block_size);
    let mut buf = crate::bufpool::ReadBuf::new((blocks * bs) as usize);
    match lu.dev.read_at(&mut buf, lba * bs) {
        Ok(()) => Ok(buf.freeze()),
        Err(e) => {
            buf.put_back();
            Err(lu.io_error(&e, false))
        }
    }
}

/// Read `blocks` blocks at `lba` only if they are in memory (`None`: they are not).
fn read_blocks_nowait(lu: &LogicalUnit, lba: u64, blocks: u64) -> CmdResult<Option<Bytes>> {
    let bs = u64::from(lu.cfg.block_size);
    let mut buf = crate::bufpool::ReadBuf::new((blocks * bs) as usize);
    match lu.dev.read_at_nowait(&mut buf, lba * bs) {
        Ok(true) => Ok(Some(buf.freeze())),
        Ok(false) => {
            buf.put_back();
            Ok(None)
        }
        Err(e) => {
            buf.put_back();
            Err(lu.io_error(&e, false))
        }
    }
}

/// READ(6/10/12/16).
pub(crate) fn read(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    lu.check_ready()?;
    let rw = parse_rw(req.cdb);
    check_rw(lu, &rw, lu.cfg.max_transfer_blocks)?;
    if rw.blocks == 0 {
        return Ok(Response::good());
    }
    let blocks = u64::from(rw.blocks);
    if let Some(blocked) = req.would_block {
        return match read_blocks_nowait(lu, rw.lba, blocks)? {
            Some(data) => Ok(Response::data(data)),
            None => {
                blocked.set(true);
                Ok(Response::good())
            }
        };
    }
    Ok(Response::data(read_blocks(lu, rw.lba, blocks)?))
}

/// Write the whole blocks present in the Data-Out (at most `blocks`).
fn write_blocks(lu: &LogicalUnit, req: &Request<'_>, rw: &Rw) -> CmdResult<()> {
    let bs = lu.cfg.block_size as usize;
    let have = available(req.data_out);
    let present = (have / bs).min(rw.blocks as usize);
    if present == 0 {
        return Ok(());
    }
    let bufs = data_prefix(req.data_out, have, present * bs);
    let offset = rw.lba * bs as u64;
    let _lock = lu.locks.shared(offset, (present * bs) as u64);
    lu.dev
        .write_at(&bufs, offset, rw.fua)
        .map_err(|e| lu.io_error(&e, true))
}

/// [`write_blocks`] only as a copy into memory: `false` when it would have to wait.
fn write_blocks_nowait(lu: &LogicalUnit, req: &Request<'_>, rw: &Rw) -> CmdResult<bool> {
    let bs = lu.cfg.block_size as usize;
    let have = available(req.data_out);
    let present = (have / bs).min(rw.blocks as usize);
    if present == 0 {
        return Ok(true);
    }
    let bufs = data_prefix(req.data_out, have, present * bs);
    let offset = rw.lba * bs as u64;
    let Some(_lock) = lu.locks.try_shared(offset, (present * bs) as u64) else {
        return Ok(false);
    };
    lu.dev
        .write_at_nowait(&bufs, offset, rw.fua)
        .map_err(|e| lu.io_error(&e, true))
}

/// WRITE(6/10/12/16).
pub(crate) fn write(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    lu.check_ready()?;
    let mut rw = parse_rw(req.cdb);
    rw.fua |= lu.write_through();
    let write_len = rw.blocks.saturating_mul(lu.cfg.block_size);
    lu.check_writable()?;
    check_rw(lu, &rw, lu.cfg.max_transfer_blocks)?;
    if let Some(defer) = req.defer {
        // Offered to a run of adjacent writes (`WriteRun`), which writes the data; a write
        // that must reach stable storage goes the usual way.
        defer.set(if rw.fua {
            Deferral::Refused
        } else {
            Deferral::Joined
        });
        return Ok(Response {
            write_len,
            ..Response::good()
        });
    }
    match req.would_block {
        Some(blocked) if !write_blocks_nowait(lu, req, &rw)? => {
            blocked.set(true);
            return Ok(Response::good());
        }
        Some(_) => {}
        None => write_blocks(lu, req, &rw)?,
    }
    Ok(Response {
        write_len,
        ..Response::good()
    })
}

/// WRITE AND VERIFY(10/12/16): the data is written and then compared with what the medium
/// returns (BYTCHK=1), so a device that drops writes is caught.
pub(crate) fn write_verify(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    lu.check_ready()?;
    let mut rw = parse_rw(req.cdb);
    rw.fua = true;
    let write_len = rw.blocks.saturating_mul(lu.cfg.block_size);
    lu.check_writable()?;
    check_rw(lu, &rw, lu.cfg.max_transfer_blocks)?;
    write_blocks(lu, req, &rw)?;
    if req.cdb[1] & 0x02 != 0 {
        let bs = lu.cfg.block_size as usize;
        let present = (available(req.data_out) / bs).min(rw.blocks as usize);
        let on_disk = read_blocks(lu, rw.lba, present as u64)?;
        let sent = gather(&prefix(req.data_out, present * bs));
        if let Some(pos) = on_disk.iter().zip(&sent).position(|(a, b)| a != b) {
            return Err(Sense::MISCOMPARE_DURING_VERIFY.with_information(pos as u64));
        }
    }
    Ok(Response {
        write_len,
        ..Response::good()
    })
}

/// VERIFY(10/12/16): BYTCHK 0 checks the range, 1 compares the Data-Out, 3 compares one
/// block of Data-Out against every block.
pub(crate) fn verify(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    lu.check_ready()?;
    let rw = parse_rw(req.cdb);
    let bytchk = (req.cdb[1] >> 1) & 0x03;
    let bs = lu.cfg.block_size;
    let write_len = match bytchk {
        0 => 0,
        1 => rw.blocks.saturating_mul(bs),
        3 => bs,
        _ => return Err(invalid_field(1, Some(2))),
    };
    check_rw(lu, &rw, lu.cfg.max_transfer_blocks)?;
    if bytchk == 0 || rw.blocks == 0 {
        return Ok(Response {
            write_len,
            ..Response::good()
        });
    }
    let expected: Vec<u8> = match bytchk {
        1 => gather(req.data_out),
        _ => {
            let one = gather(&prefix(req.data_out, bs as usize));
            one.iter()
                .copied()
                .cycle()
                .take(one.len() * rw.blocks as usize)
                .collect()
        }
    };
    // Only the blocks fully present are compared (a short EDTL is a residual, not an error).
    let present = (expected.len() / bs as usize).min(rw.blocks as usize);
    let on_disk = read_blocks(lu, rw.lba, present as u64)?;
    if let Some(pos) = on_disk.iter().zip(&expected).position(|(a, b)| a != b) {
        return Err(Sense::MISCOMPARE_DURING_VERIFY.with_information(pos as u64));
    }
    Ok(Response {
        write_len,
        ..Response::good()
    })
}

/// PRE-FETCH(10/16): the range is checked; the page cache does the rest.
pub(crate) fn prefetch(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    lu.check_ready()?;
    let (lba, blocks) = lba_and_count(req.cdb);
    lu.check_lba(lba, blocks)?;
    Ok(Response::good())
}

/// SYNCHRONIZE CACHE(10/16): everything written is made durable (fdatasync).
pub(crate) fn sync_cache(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    lu.check_ready()?;
    let (lba, blocks) = lba_and_count(req.cdb);
    lu.check_lba(lba, blocks)?;
    lu.dev.flush().map_err(|e| lu.io_error(&e, true))?;
    Ok(Response::good())
}

fn lba_and_count(cdb: &[u8]) -> (u64, u64) {
    if cdb[0] >> 5 == 4 {
        (be64(cdb, 2), u64::from(be32(cdb, 10)))
    } else {
        (u64::from(be32(cdb, 2)), u64::from(be16(cdb, 7)))
    }
}

/// WRITE SAME(10/16), with UNMAP (and NDOB for the 16-byte form).
pub(crate) fn write_same(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    lu.check_ready()?;
    let cdb = req.cdb;
    let sixteen = cdb[0] == 0x93;
    let unmap = cdb[1] & 0x08 != 0;
    let anchor = cdb[1] & 0x10 != 0;
    let ndob = sixteen && cdb[1] & 0x01 != 0;
    let bs = lu.cfg.block_size;
    let write_len = if ndob { 0 } else { bs };
    lu.check_writable()?;
    if cdb[1] & 0xe0 != 0 {
        return Err(invalid_field(1, Some(7)));
    }
    if cdb[1] & 0x06 != 0 {
        // PBDATA and LBDATA are not supported.
        return Err(invalid_field(1, Some(2)));
    }
    if anchor || (unmap && !lu.cfg.thin) {
        return Err(invalid_field(1, Some(if anchor { 4 } else { 3 })));
    }
    let (lba, count) = lba_and_count(cdb);
    // NUMBER OF LOGICAL BLOCKS 0 (WSNZ=0): through the last block.
    let blocks = if count == 0 {
        lu.blocks().saturating_sub(lba)
    } else {
        count
    };
    lu.check_lba(lba, blocks)?;
    if blocks > u64::from(max_unmap_blocks(lu)) {
        return Err(invalid_field(if sixteen { 10 } else { 7 }, None));
    }
    let block: Bytes = if ndob {
        Bytes::from(vec![0u8; bs as usize])
    } else {
        // Exactly one logical block of Data-Out.
        if available(req.data_out) != bs as usize {
            return Err(Sense::INVALID_FIELD_IN_CDB);
        }
        Bytes::from(gather(req.data_out))
    };
    let offset = lba * u64::from(bs);
    let len = blocks * u64::from(bs);
    let zero = block.iter().all(|&b| b == 0);
    let _lock = lu.locks.shared(offset, len);
    // With UNMAP the range is deallocated (LBPRZ: it reads back as zeroes) whatever the data.
    let r = if unmap {
        lu.dev.discard(offset, len)
    } else if zero {
        lu.dev.write_zeroes(offset, len, false)
    } else {
        fill(lu, offset, len, &block)
    };
    r.map_err(|e| lu.io_error(&e, true))?;
    if lu.write_through() {
        lu.dev.flush().map_err(|e| lu.io_error(&e, true))?;
    }
    Ok(Response {
        write_len,
        ..Response::good()
    })
}

/// Write `block` repeatedly over `[offset, offset + len)`.
fn fill(lu: &LogicalUnit, offset: u64, len: u64, block: &[u8]) -> blockdev::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let per = CHUNK / block.len() as u64;
    let pattern = Bytes::from(block.repeat(per.max(1) as usize));
    let mut done = 0;
    while done < len {
        let n = (len - done).min(pattern.len() as u64);
        lu.dev
            .write_at(&[pattern.slice(..n as usize)], offset + done, false)?;
        done += n;
    }
    Ok(())
}

/// UNMAP (SBC-3 section 5.28).
pub(crate) fn unmap(lu: &LogicalUnit, req: &Request<'_>) -> CmdResult<Response> {
    lu.check_ready()?;
    if !lu.cfg.thin {
        return Err(Sense::INVALID_OPCODE);
    }
    lu.check_writable()?;
    let cdb = req.cdb;
    if cdb[1] & 0x01 != 0 {
        return Err(invalid_field(1, Some(0)));
    }
    let list_len = usize::from(be16(cdb, 7));
    let write_len = u32::from(be16(cdb, 7));
    let data = gather(req.data_out);
    let data = &data[..data.len().min(list_len)];
    if data.is_empty() {
        return Ok(Response {
            write_len,
            ..Response::good()
        });
    }
    if data.len() < 8 {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    }
    let desc_len = usize::from(be16(data, 2));
    let descs = &data[8..];
    let n = desc_len.min(descs.len()) / 16;
    if n as u32 > MAX_UNMAP_DESCRIPTORS {
        return Err(invalid_param(2, None));
    }
    let max = u64::from(max_unmap_blocks(lu));
    let mut ranges = Vec::with_capacity(n);
    for i in 0..n {
        let d = &descs[i * 16..i * 16 + 16];
        let lba = be64(d, 0);
        let count = u64::from(be32(d, 8));
        lu.check_lba(lba, count)?;
        if count > max {
            return Err(invalid_param((8 + i * 16 + 8) as u16, None));
        }
        ranges.push((lba, count));
    }
    let bs = u64::from(lu.cfg.block_size);
    for (lba, count) in ranges {
        let _lock = lu.locks.shared(lba * bs, count * bs);
        lu.dev
            .discard(lba * bs, count * bs)
            .map_err(|e| lu.io_error(&e, true))?;
    }
    Ok(Response {
        write_len,
        ..Response::good()
    })
}
