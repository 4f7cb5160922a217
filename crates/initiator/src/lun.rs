//! A LUN of a remote target as a [`BlockDevice`]: READ(16), WRITE(16) with FUA,
//! SYNCHRONIZE CACHE(16), WRITE SAME(16) and UNMAP over a [`Session`], which is opened again
//! when it breaks. While the target cannot be reached every operation fails with
//! [`BlockErrorKind::Unreachable`], so a mirror can tell a lost link from a failing disk.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use blockdev::{BlockDevice, BlockError, BlockErrorKind};
use bytes::{BufMut, Bytes, BytesMut};

use crate::session::{Config, Error, Response, Session};

/// Largest transfer of one command.
const MAX_TRANSFER: u64 = 8 << 20;

/// A remote LUN.
#[derive(Debug)]
pub struct RemoteLun {
    cfg: Config,
    lun: u64,
    size: u64,
    block_size: u32,
    unmap: bool,
    link: Mutex<Link>,
}

#[derive(Debug)]
struct Link {
    session: Option<Session>,
    last_attempt: Option<Instant>,
}

/// Wait between reconnection attempts.
const RETRY: Duration = Duration::from_millis(500);

fn lun_field(lun: u16) -> u64 {
    if lun < 256 {
        u64::from(lun) << 48
    } else {
        (0x4000 | u64::from(lun)) << 48
    }
}

fn unreachable(e: &Error) -> BlockError {
    BlockError::new(BlockErrorKind::Unreachable, format!("remote LUN: {e}"))
}

fn check(r: Response, what: &str) -> blockdev::Result<Response> {
    if r.status == 0 {
        return Ok(r);
    }
    let (key, asc, ascq) = r.sense_code();
    let kind = match (key, asc, ascq) {
        (0x07, 0x27, 0x07) => BlockErrorKind::NoSpace,
        (0x07, _, _) => BlockErrorKind::ReadOnly,
        (0x05, 0x21, _) => BlockErrorKind::OutOfBounds,
        (0x05, 0x20 | 0x24, _) => BlockErrorKind::Unsupported,
        // NOT READY (standby, transitioning, not ready): the copy is not reachable now.
        (0x02, _, _) => BlockErrorKind::Unreachable,
        _ => BlockErrorKind::Io,
    };
    Err(BlockError::new(
        kind,
        format!(
            "remote {what}: status {} sense {key:02x}/{asc:02x}/{ascq:02x}",
            r.status
        ),
    ))
}

impl RemoteLun {
    /// Log in and learn the LUN's size.
    pub fn open(cfg: Config, lun: u16) -> Result<Self, Error> {
        let session = Session::login(&cfg)?;
        let mut me = Self {
            cfg,
            lun: lun_field(lun),
            size: 0,
            block_size: 512,
            unmap: false,
            link: Mutex::new(Link {
                session: Some(session),
                last_attempt: None,
            }),
        };
        let cap = me.command_raw(
            &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
            Bytes::new(),
            32,
        )?;
        if cap.status != 0 || cap.data.len() < 16 {
            return Err(Error::Protocol(format!(
                "READ CAPACITY(16) failed: status {} sense {:?}",
                cap.status,
                cap.sense_code()
            )));
        }
        let last = u64::from_be_bytes(cap.data[0..8].try_into().unwrap_or_default());
        let bs = u32::from_be_bytes(cap.data[8..12].try_into().unwrap_or_default());
        me.block_size = bs.max(512);
        me.size = (last + 1) * u64::from(me.block_size);
        me.unmap = cap.data.get(14).is_some_and(|b| b & 0x80 != 0);
        Ok(me)
    }

    /// A remote LUN whose size is already known, not connected yet: the first operation
    /// logs in (after a restart, while the remote target may still be unreachable).
    pub fn offline(cfg: Config, lun: u16, size: u64, block_size: u32) -> Self {
        Self {
            cfg,
            lun: lun_field(lun),
            size,
            block_size: block_size.max(512),
            unmap: false,
            link: Mutex::new(Link {
                session: None,
                last_attempt: None,
            }),
        }
    }

    /// The logical block size.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The session to use, opening a new one when the last broke (at most every
    /// `RETRY`).
    pub fn session(&self) -> Result<Session, Error> {
        let mut l = self
            .link
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = &l.session
            && s.is_alive()
        {
            return Ok(s.clone());
        }
        if l.last_attempt.is_some_and(|t| t.elapsed() < RETRY) {
            return Err(Error::Disconnected(format!(
                "{} is unreachable",
                self.cfg.portal
            )));
        }
        l.last_attempt = Some(Instant::now());
        let s = Session::login(&self.cfg)?;
        tracing::info!(portal = %self.cfg.portal, target = %self.cfg.target, "reconnected to the remote target");
        l.session = Some(s.clone());
        Ok(s)
    }

    /// Whether the remote target answers now (a new login if the last session broke).
    pub fn reachable(&self) -> bool {
        self.session().is_ok()
    }

    /// A command, retried through unit attentions (a new session starts with one).
    fn command_raw(&self, cdb: &[u8], data: Bytes, data_in: u32) -> Result<Response, Error> {
        let s = self.session()?;
        let mut r = s.command(self.lun, cdb, data.clone(), data_in)?;
        for _ in 0..4 {
            if r.status == 2 && r.sense_code().0 == 0x06 {
                r = s.command(self.lun, cdb, data.clone(), data_in)?;
            } else {
                break;
            }
        }
        Ok(r)
    }

    fn command(
        &self,
        cdb: &[u8],
        data: Bytes,
        data_in: u32,
        what: &str,
    ) -> blockdev::Result<Response> {
        check(
            self.command_raw(cdb, data, data_in)
                .map_err(|e| unreachable(&e))?,
            what,
        )
    }

    fn cdb16(op: u8, lba: u64, blocks: u32, flags: u8) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0] = op;
        c[1] = flags;
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[10..14].copy_from_slice(&blocks.to_be_bytes());
        c
    }

    fn blocks(&self, offset: u64, len: u64) -> blockdev::Result<(u64, u32)> {
        let bs = u64::from(self.block_size);
        if !offset.is_multiple_of(bs) || !len.is_multiple_of(bs) {
            return Err(BlockError::new(
                BlockErrorKind::Unsupported,
                "remote I/O must be block aligned",
            ));
        }
        Ok((offset / bs, (len / bs) as u32))
    }
}

impl BlockDevice for RemoteLun {
    fn size(&self) -> u64 {
        self.size
    }

    fn remote(&self) -> bool {
        true
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> blockdev::Result<()> {
        blockdev::check_range(self.size, offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let n = (buf.len() - done).min(MAX_TRANSFER as usize);
            let (lba, blocks) = self.blocks(offset + done as u64, n as u64)?;
            let r = self.command(
                &Self::cdb16(0x88, lba, blocks, 0),
                Bytes::new(),
                n as u32,
                "READ",
            )?;
            if r.data.len() != n {
                return Err(BlockError::new(
                    BlockErrorKind::Io,
                    format!("remote READ returned {} of {n} bytes", r.data.len()),
                ));
            }
            buf[done..done + n].copy_from_slice(&r.data);
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, bufs: &[Bytes], offset: u64, fua: bool) -> blockdev::Result<()> {
        let len = blockdev::total_len(bufs);
        blockdev::check_range(self.size, offset, len)?;
        let data = match bufs {
            [one] => one.clone(),
            _ => {
                let mut b = BytesMut::with_capacity(len as usize);
                for x in bufs {
                    b.put_slice(x);
                }
                b.freeze()
            }
        };
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(MAX_TRANSFER);
            let (lba, blocks) = self.blocks(offset + done, n)?;
            let part = data.slice(done as usize..(done + n) as usize);
            self.command(
                &Self::cdb16(0x8a, lba, blocks, if fua { 0x08 } else { 0 }),
                part,
                0,
                "WRITE",
            )?;
            done += n;
        }
        Ok(())
    }

    fn flush(&self) -> blockdev::Result<()> {
        self.command(
            &Self::cdb16(0x91, 0, 0, 0),
            Bytes::new(),
            0,
            "SYNCHRONIZE CACHE",
        )
        .map(|_| ())
    }

    fn discard(&self, offset: u64, len: u64) -> blockdev::Result<()> {
        blockdev::check_range(self.size, offset, len)?;
        if !self.unmap {
            return self.write_zeroes(offset, len, false);
        }
        let (lba, blocks) = self.blocks(offset, len)?;
        let mut p = vec![0u8; 24];
        p[0..2].copy_from_slice(&22u16.to_be_bytes());
        p[2..4].copy_from_slice(&16u16.to_be_bytes());
        p[8..16].copy_from_slice(&lba.to_be_bytes());
        p[16..20].copy_from_slice(&blocks.to_be_bytes());
        let mut cdb = [0u8; 10];
        cdb[0] = 0x42;
        cdb[7..9].copy_from_slice(&24u16.to_be_bytes());
        self.command(&cdb, Bytes::from(p), 0, "UNMAP").map(|_| ())
    }

    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> blockdev::Result<()> {
        blockdev::check_range(self.size, offset, len)?;
        let (lba, blocks) = self.blocks(offset, len)?;
        let zero = Bytes::from(vec![0u8; self.block_size as usize]);
        let r = self.command(&Self::cdb16(0x93, lba, blocks, 0), zero, 0, "WRITE SAME");
        match r {
            Err(e) if e.kind == BlockErrorKind::Unsupported => {
                let chunk = Bytes::from(vec![0u8; 1 << 20]);
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(1 << 20);
                    self.write_at(&[chunk.slice(..n as usize)], offset + done, false)?;
                    done += n;
                }
                if fua { self.flush() } else { Ok(()) }
            }
            Err(e) => Err(e),
            Ok(_) if fua => self.flush(),
            Ok(_) => Ok(()),
        }
    }
}
