//! Receiving: the receive buffer, large PDUs into buffers of their own, and polling for
//! the next command of an initiator that sends one at a time.

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use iscsi_proto::{ffp, frame::Ready, pdu::BHS_LEN};
use scsi::bufpool;
use tokio::{io::AsyncReadExt, net::tcp::OwnedReadHalf};

use super::{Conn, ConnError, frame_error};

/// Receive buffer growth step.
pub(super) const READ_CHUNK: usize = 256 * 1024;

/// A PDU at least this long (write data, in practice) is received into a buffer of its own
/// from the I/O buffer pool, straight from the socket: not read into the receive buffer and
/// copied out when the buffer must grow for it, nor into fresh memory the kernel must fault
/// in and clear. The buffer goes back to the pool when the write is done with the data.
const OWN_BUFFER: usize = bufpool::MIN_POOLED;

/// Reads in a row that each brought one PDU before a connection polls for the next one.
const POLL_AFTER: u32 = 8;

/// Whether an initiator sends one command at a time (it waits for each answer), told from
/// the reads: [`POLL_AFTER`] in a row that each completed one PDU.
#[derive(Debug, Default)]
pub(super) struct OneAtATime(u32);

impl OneAtATime {
    /// A read from the socket completed `pdus` PDUs and left a large PDU (one received
    /// into a buffer of its own) in progress or not. A large PDU means a transfer, not a
    /// command waiting for its answer: polling would read its data into the receive buffer,
    /// to be copied into its own buffer again. A read that completed no PDU otherwise (a
    /// command's header that arrived ahead of its data) says nothing: a quarter of QEMU's
    /// 4 KiB writes at depth 1 were read in two parts, header first.
    pub(super) fn read(&mut self, pdus: usize, large: bool) {
        self.0 = match pdus {
            _ if large => 0,
            0 => self.0,
            1 => self.0.saturating_add(1),
            _ => 0,
        };
    }

    /// Polling found `pdus` PDUs (and left a large one in progress or not): more than one
    /// means the initiator does not wait.
    pub(super) fn polled(&mut self, pdus: usize, large: bool) {
        if pdus > 1 || large {
            self.0 = 0;
        }
    }

    pub(super) fn yes(&self) -> bool {
        self.0 >= POLL_AFTER
    }
}

impl Conn {
    /// Hand every whole PDU received to the full feature phase; start receiving a large
    /// PDU into its own buffer once its header is in. Returns how many PDUs were handled.
    pub(super) fn receive(&mut self, ffp: &mut ffp::Connection, now: Instant) -> usize {
        let mut handled = 0;
        if let Some((own, filled)) = self.large.take() {
            if filled < own.len() {
                self.large = Some((own, filled));
                return 0;
            }
            self.header_first = true;
            match self.dec.decode_whole(bufpool::freeze(own)) {
                Ok(frame) => ffp.handle_frame(&frame, now),
                Err(e) => {
                    frame_error(ffp, &e);
                    return 0;
                }
            }
            handled += 1;
        }
        let total = loop {
            match self.dec.decode_ready(&mut self.rbuf) {
                Ok(Ready::Frame(frame)) => {
                    self.header_first = false;
                    ffp.handle_frame(&frame, now);
                    handled += 1;
                }
                Ok(Ready::Incomplete(total)) => break total,
                Err(e) => {
                    frame_error(ffp, &e);
                    return handled;
                }
            }
        };
        // An incomplete PDU: a large one goes on into a buffer of its own, a small one here.
        if let Some(total) = total {
            let have = self.rbuf.len();
            if total >= OWN_BUFFER && have < total {
                let mut own = bufpool::take(total);
                own[..have].copy_from_slice(&self.rbuf);
                self.rbuf.clear();
                self.large = Some((own, have));
            } else {
                room_for(&mut self.rbuf, total);
            }
        }
        handled
    }

    /// A connection whose initiator sends one command at a time (it waits for each answer):
    /// keep looking for the next command for up to `budget` before the task sleeps, yielding
    /// to the runtime in between (the writer task sends the answer meanwhile), so that the
    /// command is picked up without a wake-up through the kernel's scheduler (on a virtual
    /// machine an idle vCPU halts, and waking it costs more than the command). Part of a PDU
    /// (an initiator may send a command's header ahead of its data) keeps the polling on for
    /// the rest. Returns how many PDUs were received and handled, `Err` when the connection
    /// is gone.
    pub(super) async fn poll_next(
        &mut self,
        ffp: &mut ffp::Connection,
        budget: Duration,
    ) -> Result<usize, ConnError> {
        if self.large.is_some() {
            return Ok(0);
        }
        let until = Instant::now() + budget;
        loop {
            tokio::task::yield_now().await;
            room_to_read(&mut self.rbuf);
            match self.rd.try_read_buf(&mut self.rbuf) {
                Ok(0) => return Err(ConnError::Eof),
                Ok(_) => {
                    let n = self.receive(ffp, Instant::now());
                    // A large PDU goes on into its own buffer, through `read_more`.
                    if n > 0 || self.large.is_some() {
                        return Ok(n);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= until {
                return Ok(0);
            }
        }
    }
}

/// Make room in the receive buffer for a read: a read chunk when less than 4 KiB is left.
pub(super) fn room_to_read(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(READ_CHUNK);
    }
}

/// Make room in `buf`, which holds the start of a PDU of `total` bytes, for the rest of it,
/// and for the reads after it when the buffer must grow anyway: while earlier PDUs' data
/// is still referenced (writes in progress, or held in a volume's write cache until a
/// snapshot has saved their chunks), growing by the rest of this PDU alone made a new
/// buffer, of 64 KiB, every 16 PDUs of 4 KiB.
fn room_for(buf: &mut BytesMut, total: usize) {
    if buf.capacity() < total {
        buf.reserve((total - buf.len()).max(READ_CHUNK));
    }
}

/// Read what comes next: the rest of a large PDU into its own buffer (never past its end),
/// or into the receive buffer (only a header, right after a large PDU).
pub(super) async fn read_more(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    large: &mut Option<(Vec<u8>, usize)>,
    header_first: bool,
) -> std::io::Result<usize> {
    if let Some((own, filled)) = large {
        let n = rd.read(&mut own[*filled..]).await?;
        *filled += n;
        return Ok(n);
    }
    room_to_read(buf);
    if header_first && buf.is_empty() {
        return rd.read_buf(&mut (&mut *buf).limit(BHS_LEN)).await;
    }
    rd.read_buf(buf).await
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use bytes::BytesMut;

    use super::{OneAtATime, POLL_AFTER, READ_CHUNK, room_for, room_to_read};

    /// 4 KiB writes arrive in reads that end inside a PDU while the last 200 PDUs are still
    /// referenced (as by an asynchronous mirror's journal): the receive buffer is replaced
    /// about once per `READ_CHUNK` of data, not once every few PDUs.
    #[test]
    fn a_read_that_completes_no_pdu_keeps_a_one_at_a_time_initiator_polled() {
        let mut p = OneAtATime::default();
        for _ in 0..POLL_AFTER {
            assert!(!p.yes());
            p.read(1, false);
        }
        assert!(p.yes());
        // A write's header read ahead of its data, then the data.
        p.read(0, false);
        assert!(p.yes(), "a read of part of a small PDU changes nothing");
        p.read(1, false);
        p.polled(1, false);
        p.polled(0, false);
        assert!(p.yes());
        // Two PDUs in one read, or found by one poll: the initiator does not wait.
        p.read(2, false);
        assert!(!p.yes());
        for _ in 0..POLL_AFTER {
            p.read(1, false);
        }
        p.polled(3, false);
        assert!(!p.yes());
        // A large PDU (its header read alone, its data into its own buffer) is a transfer:
        // one large write after another, each completed by one read, is never polled for.
        for _ in 0..POLL_AFTER * 2 {
            p.read(0, true);
            p.read(1, false);
        }
        assert!(!p.yes());
        for _ in 0..POLL_AFTER {
            p.read(1, false);
        }
        p.polled(0, true);
        assert!(!p.yes(), "a poll that started a large PDU");
    }

    #[test]
    fn the_receive_buffer_grows_a_read_chunk_at_a_time_while_pdus_are_held() {
        const PDU: usize = 48 + 4096;
        const N: usize = 2000;
        let stream: Vec<u8> = (0..PDU * N).map(|i| (i % 253) as u8).collect();
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut held = VecDeque::new();
        let (mut sent, mut moves) = (0, 0);
        let mut reserve = |buf: &mut BytesMut, f: &dyn Fn(&mut BytesMut)| {
            let before = buf.as_ptr();
            f(buf);
            moves += usize::from(buf.as_ptr() != before);
        };
        let mut k = 0;
        while k < N {
            // What the connection does: a read (which fills the buffer: the initiator keeps
            // 32 commands in flight), every whole PDU handed on, room for a partial one.
            reserve(&mut buf, &room_to_read);
            let n = (stream.len() - sent).min(buf.capacity() - buf.len());
            buf.extend_from_slice(&stream[sent..sent + n]);
            sent += n;
            while buf.len() >= PDU {
                let pdu = buf.split_to(PDU).freeze();
                assert_eq!(pdu[0], ((k * PDU) % 253) as u8, "PDU {k} intact");
                held.push_back(pdu);
                if held.len() > 200 {
                    held.pop_front();
                }
                k += 1;
            }
            if !buf.is_empty() {
                reserve(&mut buf, &|b| room_for(b, PDU));
            }
        }
        let chunks = PDU * N / READ_CHUNK;
        assert!(
            moves <= chunks + 2,
            "{moves} new buffers for {chunks} read chunks of data"
        );
    }
}
