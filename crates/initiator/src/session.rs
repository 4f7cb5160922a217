//! One iSCSI session over one TCP connection: the login (with CHAP, one-way or mutual),
//! then SCSI commands from any number of threads, multiplexed by Initiator Task Tag. A
//! reader thread takes every PDU the target sends: Data-In and responses complete their
//! commands, R2Ts are answered with Data-Out, pings with NOP-Out.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use iscsi_proto::{
    frame::{Digests, FrameDecoder, FrameEncoder},
    pdu::{DataOut, LogoutRequest, NopOut, Pdu, RESERVED_TAG, ScsiCommand, TextRequest},
    serial::sn_lt,
    text::TextKeys,
};

use crate::login::{Exchange, LoginConn, negotiated};

/// A CHAP user name and secret.
#[derive(Clone)]
pub struct Credential {
    /// CHAP_N.
    pub user: String,
    /// The secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("user", &self.user)
            .field("secret", &"***")
            .finish()
    }
}

/// Where and how to log in.
#[derive(Clone, Debug)]
pub struct Config {
    /// The target portal, `host:port`.
    pub portal: String,
    /// The target's IQN.
    pub target: String,
    /// Our InitiatorName.
    pub initiator_name: String,
    /// ISID (its last bytes tell sessions of one initiator apart).
    pub isid: [u8; 6],
    /// Our CHAP credential (CHAP required when set).
    pub chap: Option<Credential>,
    /// The target's credential for mutual CHAP.
    pub mutual: Option<Credential>,
    /// Ask for CRC32C header and data digests.
    pub digests: bool,
    /// Connect, login and command timeout.
    pub timeout: Duration,
}

impl Config {
    /// A configuration without CHAP or digests.
    pub fn new(portal: &str, target: &str, initiator_name: &str) -> Self {
        Self {
            portal: portal.to_owned(),
            target: target.to_owned(),
            initiator_name: initiator_name.to_owned(),
            isid: [0x80, 0x49, 0x52, 0x4c, 0x00, 0x01],
            chap: None,
            mutual: None,
            digests: false,
            timeout: Duration::from_secs(15),
        }
    }
}

/// Why a session or a command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The target could not be reached or the connection broke.
    #[error("{0}")]
    Disconnected(String),
    /// The target refused the login (status class and detail).
    #[error("login refused: status 0x{0:02x}{1:02x}")]
    LoginRefused(u8, u8),
    /// Authentication failed on our side (the target's mutual CHAP answer was wrong).
    #[error("authentication: {0}")]
    Auth(String),
    /// The target broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// A SCSI command's outcome.
#[derive(Clone, Debug, Default)]
pub struct Response {
    /// SCSI status (0 GOOD, 2 CHECK CONDITION, ...).
    pub status: u8,
    /// Sense data (without the length prefix).
    pub sense: Vec<u8>,
    /// Data-In.
    pub data: Vec<u8>,
}

impl Response {
    /// Sense key, ASC and ASCQ (fixed or descriptor format).
    pub fn sense_code(&self) -> (u8, u8, u8) {
        let s = &self.sense;
        match s.first().map(|b| b & 0x7f) {
            Some(0x72 | 0x73) => (
                s.get(1).map_or(0, |k| k & 0xf),
                s.get(2).copied().unwrap_or(0),
                s.get(3).copied().unwrap_or(0),
            ),
            _ => (
                s.get(2).map_or(0, |k| k & 0xf),
                s.get(12).copied().unwrap_or(0),
                s.get(13).copied().unwrap_or(0),
            ),
        }
    }
}

/// Parameters settled by the login.
#[derive(Clone, Copy, Debug)]
pub struct Negotiated {
    /// The target's MaxRecvDataSegmentLength: the largest data segment we may send.
    pub max_send: usize,
    /// FirstBurstLength.
    pub first_burst: usize,
    /// MaxBurstLength.
    pub max_burst: usize,
    /// ImmediateData.
    pub immediate_data: bool,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// Digests in force.
    pub digests: Digests,
    /// TSIH.
    pub tsih: u16,
}

/// What we declare we can receive.
const MAX_RECV: usize = 262_144;

#[derive(Debug)]
enum Waiting {
    Command {
        data: Vec<u8>,
        out: Bytes,
        response: Option<Result<Response, Error>>,
    },
    Text {
        response: Option<Result<TextKeys, Error>>,
    },
}

#[derive(Debug)]
struct State {
    /// The next CmdSN to put on the wire.
    cmd_sn: u32,
    /// CmdSNs reserved inside the window but not yet sent.
    reserved: u32,
    max_cmd_sn: u32,
    exp_stat_sn: u32,
    next_itt: u32,
    pending: HashMap<u32, Waiting>,
    dead: Option<Error>,
}

#[derive(Debug)]
struct Inner {
    writer: Mutex<(TcpStream, FrameEncoder)>,
    state: Mutex<State>,
    cv: Condvar,
    params: Negotiated,
    timeout: Duration,
    peer: SocketAddr,
}

/// A logged-in session. Clones share it.
#[derive(Clone, Debug)]
pub struct Session {
    inner: Arc<Inner>,
}

pub(crate) fn io_err(e: std::io::Error) -> Error {
    Error::Disconnected(e.to_string())
}

impl Session {
    /// Connect and log in.
    pub fn login(cfg: &Config) -> Result<Self, Error> {
        let addr = cfg
            .portal
            .to_socket_addrs()
            .map_err(io_err)?
            .next()
            .ok_or_else(|| Error::Disconnected(format!("{} does not resolve", cfg.portal)))?;
        let stream = TcpStream::connect_timeout(&addr, cfg.timeout).map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        stream.set_read_timeout(Some(cfg.timeout)).map_err(io_err)?;
        let mut c = LoginConn {
            stream,
            buf: BytesMut::new(),
            dec: FrameDecoder {
                digests: Digests::default(),
                max_data_segment: MAX_RECV,
            },
            enc: FrameEncoder::default(),
        };
        let mut exchange = Exchange {
            cfg,
            cmd_sn: 0,
            exp_stat_sn: 0,
            tsih: 0,
        };
        if cfg.chap.is_some() {
            exchange.security(&mut c)?;
        }
        let (keys, resp) = exchange.operational(&mut c)?;
        let params = negotiated(&keys, resp.tsih)?;
        c.stream.set_read_timeout(None).map_err(io_err)?;
        let reader = c.stream.try_clone().map_err(io_err)?;
        let mut enc = c.enc;
        enc.digests = params.digests;
        let dec = FrameDecoder {
            digests: params.digests,
            max_data_segment: MAX_RECV,
        };
        let inner = Arc::new(Inner {
            writer: Mutex::new((c.stream, enc)),
            state: Mutex::new(State {
                cmd_sn: resp.exp_cmd_sn,
                reserved: 0,
                max_cmd_sn: resp.max_cmd_sn,
                exp_stat_sn: resp.stat_sn.wrapping_add(1),
                next_itt: 0x100,
                pending: HashMap::new(),
                dead: None,
            }),
            cv: Condvar::new(),
            params,
            timeout: cfg.timeout,
            peer: addr,
        });
        let weak = Arc::downgrade(&inner);
        let buf = c.buf;
        std::thread::Builder::new()
            .name(format!("iscsi-{addr}"))
            .spawn(move || read_loop(weak, reader, dec, buf))
            .map_err(io_err)?;
        Ok(Self { inner })
    }

    /// The negotiated parameters.
    pub fn params(&self) -> Negotiated {
        self.inner.params
    }

    /// The target portal.
    pub fn peer(&self) -> SocketAddr {
        self.inner.peer
    }

    /// Whether the connection still works.
    pub fn is_alive(&self) -> bool {
        self.inner.st().dead.is_none()
    }

    /// Run a SCSI command: `data_out` is written, up to `data_in_len` bytes are read.
    pub fn command(
        &self,
        lun: u64,
        cdb: &[u8],
        data_out: Bytes,
        data_in_len: u32,
    ) -> Result<Response, Error> {
        let inner = &*self.inner;
        let p = inner.params;
        let itt = inner.slot(Waiting::Command {
            data: Vec::new(),
            out: data_out.clone(),
            response: None,
        })?;
        let imm = if p.immediate_data {
            data_out.len().min(p.first_burst).min(p.max_send)
        } else {
            0
        };
        let unsolicited = if p.initial_r2t {
            imm
        } else {
            data_out.len().min(p.first_burst)
        };
        let mut c = [0u8; 16];
        let n = cdb.len().min(16);
        c[..n].copy_from_slice(&cdb[..n]);
        let cdb = iscsi_proto::pdu::Cdb::from_slice(if cdb.len() > 16 { cdb } else { &c });
        inner.send_command(|cmd_sn, exp_stat_sn| {
            let cmd = ScsiCommand {
                final_bit: imm == unsolicited,
                read: data_in_len > 0,
                write: !data_out.is_empty(),
                attr: 1,
                lun,
                itt,
                expected_len: if data_out.is_empty() {
                    data_in_len
                } else {
                    data_out.len() as u32
                },
                cmd_sn,
                exp_stat_sn,
                cdb,
                data: data_out.slice(..imm),
                ..Default::default()
            };
            let mut frames = vec![Pdu::ScsiCommand(cmd)];
            frames.extend(data_outs(
                itt,
                RESERVED_TAG,
                &data_out,
                imm,
                unsolicited,
                p.max_send,
                exp_stat_sn,
            ));
            frames
        })?;
        match inner.wait(itt)? {
            Waiting::Command {
                response: Some(r), ..
            } => r,
            _ => Err(Error::Protocol("no response".into())),
        }
    }

    /// A Text request in the full feature phase (vendor keys); returns the answer.
    pub fn text(&self, keys: &TextKeys) -> Result<TextKeys, Error> {
        let inner = &*self.inner;
        let itt = inner.slot(Waiting::Text { response: None })?;
        let data = keys.encode();
        inner.send_command(|cmd_sn, exp_stat_sn| {
            vec![Pdu::TextRequest(TextRequest {
                final_bit: true,
                itt,
                ttt: RESERVED_TAG,
                cmd_sn,
                exp_stat_sn,
                data,
                ..Default::default()
            })]
        })?;
        match inner.wait(itt)? {
            Waiting::Text { response: Some(r) } => r,
            _ => Err(Error::Protocol("no text response".into())),
        }
    }

    /// Log out (best effort) and close.
    pub fn logout(&self) {
        let inner = &*self.inner;
        if let Ok(itt) = inner.slot(Waiting::Text { response: None }) {
            let _ = inner.send_command(|cmd_sn, exp_stat_sn| {
                vec![Pdu::LogoutRequest(LogoutRequest {
                    immediate: true,
                    itt,
                    cmd_sn,
                    exp_stat_sn,
                    ..Default::default()
                })]
            });
            let _ = inner.wait_for(itt, Duration::from_secs(2));
        }
        inner.kill(Error::Disconnected("logged out".into()));
    }
}

/// Write the parts of a frame with vectored writes until all are out.
fn write_frame(stream: &mut TcpStream, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut idx = 0;
    let mut off = 0;
    while idx < parts.len() {
        let slices: Vec<std::io::IoSlice<'_>> = parts[idx..]
            .iter()
            .enumerate()
            .map(|(k, p)| std::io::IoSlice::new(if k == 0 { &p[off..] } else { p }))
            .collect();
        let mut n = match stream.write_vectored(&slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while idx < parts.len() && n >= parts[idx].len() - off {
            n -= parts[idx].len() - off;
            idx += 1;
            off = 0;
        }
        off += n;
    }
    Ok(())
}

/// Data-Out PDUs for `[from, to)` of `data`, each at most `max` bytes.
fn data_outs(
    itt: u32,
    ttt: u32,
    data: &Bytes,
    from: usize,
    to: usize,
    max: usize,
    exp_stat_sn: u32,
) -> Vec<Pdu> {
    let mut v = Vec::new();
    let mut off = from;
    let mut sn = 0;
    while off < to {
        let n = (to - off).min(max.max(512));
        v.push(Pdu::DataOut(DataOut {
            final_bit: off + n == to,
            itt,
            ttt,
            data_sn: sn,
            buffer_offset: off as u32,
            data: data.slice(off..off + n),
            exp_stat_sn,
            ..Default::default()
        }));
        sn += 1;
        off += n;
    }
    v
}

impl Inner {
    fn st(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserve a task tag and a place inside the target's CmdSN window.
    fn slot(&self, w: Waiting) -> Result<u32, Error> {
        let deadline = Instant::now() + self.timeout;
        let mut st = self.st();
        loop {
            if let Some(e) = &st.dead {
                return Err(e.clone());
            }
            if !sn_lt(st.max_cmd_sn, st.cmd_sn.wrapping_add(st.reserved)) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(self.timeout));
            }
            st = self
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        st.next_itt = st.next_itt.wrapping_add(1).max(0x100);
        let itt = st.next_itt;
        st.reserved += 1;
        st.pending.insert(itt, w);
        Ok(itt)
    }

    /// Send a command reserved with [`Inner::slot`]: its CmdSN is assigned under the
    /// writer's lock, so commands reach the wire in CmdSN order.
    fn send_command(&self, build: impl FnOnce(u32, u32) -> Vec<Pdu>) -> Result<(), Error> {
        let mut w = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (cmd_sn, exp_stat_sn) = {
            let mut st = self.st();
            let sn = st.cmd_sn;
            st.cmd_sn = sn.wrapping_add(1);
            st.reserved = st.reserved.saturating_sub(1);
            (sn, st.exp_stat_sn)
        };
        let pdus = build(cmd_sn, exp_stat_sn);
        self.write_locked(&mut w, &pdus)
    }

    /// Send PDUs that carry no CmdSN of their own (Data-Out, NOP-Out answers).
    fn send_all(&self, pdus: &[Pdu]) -> Result<(), Error> {
        let mut w = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.write_locked(&mut w, pdus)
    }

    fn write_locked(
        &self,
        w: &mut MutexGuard<'_, (TcpStream, FrameEncoder)>,
        pdus: &[Pdu],
    ) -> Result<(), Error> {
        let (stream, enc) = &mut **w;
        for p in pdus {
            let f = enc.encode(p);
            if let Err(e) = write_frame(stream, &[&f.header, &f.data, &f.trailer]) {
                self.mark_dead(io_err(e));
                return Err(self
                    .st()
                    .dead
                    .clone()
                    .unwrap_or_else(|| Error::Disconnected("write failed".into())));
            }
        }
        Ok(())
    }

    fn wait(&self, itt: u32) -> Result<Waiting, Error> {
        self.wait_for(itt, self.timeout)
    }

    fn wait_for(&self, itt: u32, timeout: Duration) -> Result<Waiting, Error> {
        let deadline = Instant::now() + timeout;
        let mut st = self.st();
        loop {
            let done = match st.pending.get(&itt) {
                Some(Waiting::Command { response, .. }) => response.is_some(),
                Some(Waiting::Text { response }) => response.is_some(),
                None => {
                    return Err(st
                        .dead
                        .clone()
                        .unwrap_or_else(|| Error::Protocol("task vanished".into())));
                }
            };
            if done {
                return st
                    .pending
                    .remove(&itt)
                    .ok_or_else(|| Error::Protocol("task vanished".into()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                st.pending.remove(&itt);
                drop(st);
                // A command that never completes cannot be retried safely on this
                // connection: drop it, the caller reconnects.
                self.kill(Error::Timeout(timeout));
                return Err(Error::Timeout(timeout));
            }
            st = self
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// The connection is gone: fail everything pending and close it.
    fn kill(&self, e: Error) {
        self.mark_dead(e);
        let w = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = w.0.shutdown(std::net::Shutdown::Both);
    }

    fn mark_dead(&self, e: Error) {
        let mut st = self.st();
        if st.dead.is_none() {
            st.dead = Some(e.clone());
        }
        for w in st.pending.values_mut() {
            match w {
                Waiting::Command { response, .. } if response.is_none() => {
                    *response = Some(Err(e.clone()))
                }
                Waiting::Text { response } if response.is_none() => {
                    *response = Some(Err(e.clone()))
                }
                _ => {}
            }
        }
        drop(st);
        self.cv.notify_all();
    }

    fn window(&self, exp_cmd_sn: u32, max_cmd_sn: u32, stat_sn: Option<u32>) {
        let mut st = self.st();
        if !sn_lt(max_cmd_sn, exp_cmd_sn.wrapping_sub(1)) && sn_lt(st.max_cmd_sn, max_cmd_sn) {
            st.max_cmd_sn = max_cmd_sn;
        }
        if let Some(s) = stat_sn
            && !sn_lt(s, st.exp_stat_sn)
        {
            st.exp_stat_sn = s.wrapping_add(1);
        }
    }

    fn complete(&self, itt: u32, f: impl FnOnce(&mut Waiting)) {
        let mut st = self.st();
        if let Some(w) = st.pending.get_mut(&itt) {
            f(w);
        }
        drop(st);
        self.cv.notify_all();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The reader thread holds the other half; closing ends it.
        let w = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = w.0.shutdown(std::net::Shutdown::Both);
    }
}

fn read_loop(
    inner: std::sync::Weak<Inner>,
    mut stream: TcpStream,
    dec: FrameDecoder,
    mut buf: BytesMut,
) {
    let mut tmp = vec![0u8; 256 << 10];
    loop {
        loop {
            let frame = match dec.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    if let Some(i) = inner.upgrade() {
                        i.kill(Error::Protocol(e.to_string()));
                    }
                    return;
                }
            };
            let Some(i) = inner.upgrade() else { return };
            match frame.pdu() {
                Ok(p) => handle(&i, p),
                Err(e) => {
                    i.kill(Error::Protocol(e.to_string()));
                    return;
                }
            }
        }
        match stream.read(&mut tmp) {
            Ok(0) | Err(_) => {
                if let Some(i) = inner.upgrade() {
                    i.kill(Error::Disconnected(
                        "the target closed the connection".into(),
                    ));
                }
                return;
            }
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
        if inner.strong_count() == 0 {
            return;
        }
    }
}

fn handle(i: &Inner, p: Pdu) {
    match p {
        Pdu::DataIn(d) => {
            if d.status.is_some() {
                i.window(d.exp_cmd_sn, d.max_cmd_sn, Some(d.stat_sn));
            } else {
                i.window(d.exp_cmd_sn, d.max_cmd_sn, None);
            }
            i.complete(d.itt, |w| {
                if let Waiting::Command { data, response, .. } = w {
                    let off = d.buffer_offset as usize;
                    if data.len() < off + d.data.len() {
                        data.resize(off + d.data.len(), 0);
                    }
                    data[off..off + d.data.len()].copy_from_slice(&d.data);
                    if let Some(status) = d.status {
                        *response = Some(Ok(Response {
                            status,
                            sense: Vec::new(),
                            data: std::mem::take(data),
                        }));
                    }
                }
            });
        }
        Pdu::ScsiResponse(r) => {
            i.window(r.exp_cmd_sn, r.max_cmd_sn, Some(r.stat_sn));
            let sense = r.sense().map(<[u8]>::to_vec).unwrap_or_default();
            i.complete(r.itt, |w| {
                if let Waiting::Command { data, response, .. } = w {
                    *response = Some(if r.response != 0 {
                        Err(Error::Protocol(format!(
                            "iSCSI response 0x{:02x}",
                            r.response
                        )))
                    } else {
                        Ok(Response {
                            status: r.status,
                            sense,
                            data: std::mem::take(data),
                        })
                    });
                }
            });
        }
        Pdu::R2t(r) => {
            i.window(r.exp_cmd_sn, r.max_cmd_sn, None);
            let out = match i.st().pending.get(&r.itt) {
                Some(Waiting::Command { out, .. }) => Some(out.clone()),
                _ => None,
            };
            if let Some(out) = out {
                let from = r.buffer_offset as usize;
                let to = (from + r.desired_len as usize).min(out.len());
                let exp = i.st().exp_stat_sn;
                let pdus = data_outs(r.itt, r.ttt, &out, from, to, i.params.max_send, exp);
                let _ = i.send_all(&pdus);
            }
        }
        Pdu::NopIn(n) => {
            i.window(n.exp_cmd_sn, n.max_cmd_sn, None);
            if n.ttt != RESERVED_TAG {
                // A ping from the target: answer it (immediate, not advancing CmdSN).
                let cmd_sn = i.st().cmd_sn;
                let exp = i.st().exp_stat_sn;
                let out = NopOut {
                    immediate: true,
                    lun: n.lun,
                    itt: RESERVED_TAG,
                    ttt: n.ttt,
                    cmd_sn,
                    exp_stat_sn: exp,
                    data: n.data,
                };
                let _ = i.send_all(&[Pdu::NopOut(out)]);
            }
        }
        Pdu::TextResponse(t) => {
            i.window(t.exp_cmd_sn, t.max_cmd_sn, Some(t.stat_sn));
            i.complete(t.itt, |w| {
                if let Waiting::Text { response } = w {
                    *response =
                        Some(TextKeys::parse(&t.data).map_err(|e| Error::Protocol(e.to_string())));
                }
            });
        }
        Pdu::Reject(r) => {
            i.window(r.exp_cmd_sn, r.max_cmd_sn, Some(r.stat_sn));
            if r.data.len() >= 20 {
                let itt = u32::from_be_bytes([r.data[16], r.data[17], r.data[18], r.data[19]]);
                let e = Error::Protocol(format!(
                    "the target rejected a PDU (reason 0x{:02x})",
                    r.reason
                ));
                i.complete(itt, |w| match w {
                    Waiting::Command { response, .. } => *response = Some(Err(e.clone())),
                    Waiting::Text { response } => *response = Some(Err(e.clone())),
                });
            }
        }
        Pdu::LogoutResponse(l) => {
            i.complete(l.itt, |w| {
                if let Waiting::Text { response } = w {
                    *response = Some(Ok(TextKeys::default()));
                }
            });
        }
        Pdu::AsyncMessage(a) => {
            i.window(a.exp_cmd_sn, a.max_cmd_sn, Some(a.stat_sn));
            if matches!(a.event, 1..=3) {
                i.kill(Error::Disconnected(format!(
                    "the target asked to end the session (event {})",
                    a.event
                )));
            }
        }
        _ => {}
    }
}
