//! One TCP connection: the login phase, then the full feature phase, driving the sans-IO
//! machines of `iscsi-proto` with socket reads, executor completions and a clock.
//!
//! The task owns the protocol state; a writer task owns the socket's write half and sends
//! batches of frames with vectored writes; SCSI commands run on the I/O pool and come back as
//! completions on a channel.

use std::{
    collections::HashMap,
    io::IoSlice,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::{BufMut, BytesMut};
use iscsi_proto::{
    ffp::{self, CloseReason, FfpConfig, Output, ResetEvent, ScsiCompletion, ScsiTask},
    frame::{Digests, Frame, FrameDecoder, FrameEncoder, OutFrame, Ready},
    login::{Login, LoginConfig, LoginOutcome, LoginStep},
    lun::decode_lun,
    negotiate::SessionType,
    pdu::{BHS_LEN, Opcode, Pdu},
};
use scsi::{Fit, Joined, LunMap, Nexus, WriteRun, bufpool};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::mpsc,
};

use crate::{
    registry::{PortalLogin, Registry, Target},
    server::Server,
    sessions::SessionKey,
};

/// Receive buffer growth step.
const READ_CHUNK: usize = 256 * 1024;

/// A PDU at least this long (write data, in practice) is received into a buffer of its own
/// from the I/O buffer pool, straight from the socket: not read into the receive buffer and
/// copied out when the buffer must grow for it, nor into fresh memory the kernel must fault
/// in and clear. The buffer goes back to the pool when the write is done with the data.
const OWN_BUFFER: usize = bufpool::MIN_POOLED;

/// Reads up to this long may run on the connection's task when their data is in memory.
/// Longer ones go to the I/O threads, which copy them while the connection sends earlier
/// Data-In (1 MiB reads inline took 1.4x the time, side by side).
const INLINE_READ_MAX: u32 = 128 * 1024;

/// Writes up to this long may run on the connection's task when they only copy into
/// memory (inline, side by side: 36% less of the target's CPU for 256 KiB writes, 10-13%
/// for 1 MiB ones, on ext4 and tmpfs images; the copy costs less than handing the command
/// to an I/O thread and back).
const INLINE_WRITE_MAX: u32 = 1024 * 1024;

/// How long a closing connection waits for its executing commands.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads in a row that each brought one PDU before a connection polls for the next one.
const POLL_AFTER: u32 = 8;

/// Whether an initiator sends one command at a time (it waits for each answer), told from
/// the reads: [`POLL_AFTER`] in a row that each completed one PDU.
#[derive(Debug, Default)]
struct OneAtATime(u32);

impl OneAtATime {
    /// A read from the socket completed `pdus` PDUs and left a large PDU (one received
    /// into a buffer of its own) in progress or not. A large PDU means a transfer, not a
    /// command waiting for its answer: polling would read its data into the receive buffer,
    /// to be copied into its own buffer again. A read that completed no PDU otherwise (a
    /// command's header that arrived ahead of its data) says nothing: a quarter of QEMU's
    /// 4 KiB writes at depth 1 were read in two parts, header first.
    fn read(&mut self, pdus: usize, large: bool) {
        self.0 = match pdus {
            _ if large => 0,
            0 => self.0,
            1 => self.0.saturating_add(1),
            _ => 0,
        };
    }

    /// Polling found `pdus` PDUs (and left a large one in progress or not): more than one
    /// means the initiator does not wait.
    fn polled(&mut self, pdus: usize, large: bool) {
        if pdus > 1 || large {
            self.0 = 0;
        }
    }

    fn yes(&self) -> bool {
        self.0 >= POLL_AFTER
    }
}

/// Serve one accepted connection until it closes.
pub async fn serve(server: Arc<Server>, stream: TcpStream, group: u16) {
    let peer = stream.peer_addr().ok();
    let local = stream.local_addr().ok();
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Vec<OutFrame>>();
    let (spare_tx, spare_rx) = mpsc::unbounded_channel::<Vec<OutFrame>>();
    let writer = tokio::spawn(writer_task(wr, out_rx, spare_tx));
    let mut c = Conn {
        server,
        rd,
        rbuf: BytesMut::with_capacity(READ_CHUNK),
        large: None,
        header_first: false,
        dec: FrameDecoder::default(),
        enc: FrameEncoder::default(),
        out: out_tx,
        spare: spare_rx,
        group,
        local,
    };
    match c.login().await {
        Ok(Some(session)) => c.full_feature(session).await,
        Ok(None) => {}
        Err(e) => tracing::debug!(?peer, error = %e, "connection closed during login"),
    }
    let Conn { out, .. } = c;
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// Writes batches of frames with vectored writes until the channel closes. Emptied batch
/// vectors go back to the connection through `spare`, so that a batch costs no allocation.
async fn writer_task(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<OutFrame>>,
    spare: mpsc::UnboundedSender<Vec<OutFrame>>,
) {
    let mut frames: Vec<OutFrame> = Vec::new();
    while let Some(mut batch) = rx.recv().await {
        frames.append(&mut batch);
        let _ = spare.send(batch);
        while let Ok(mut more) = rx.try_recv() {
            frames.append(&mut more);
            let _ = spare.send(more);
            if frames.len() > 256 {
                break;
            }
        }
        if let Err(e) = write_frames(&mut wr, &frames).await {
            tracing::debug!(error = %e, "write failed");
            return;
        }
        frames.clear();
    }
    let _ = wr.shutdown().await;
}

async fn write_frames(wr: &mut OwnedWriteHalf, frames: &[OutFrame]) -> std::io::Result<()> {
    // On the stack for the usual handful of frames.
    let mut parts: smallvec::SmallVec<[&[u8]; 24]> = smallvec::SmallVec::new();
    for f in frames {
        for p in [&f.header[..], &f.data[..], &f.trailer[..]] {
            if !p.is_empty() {
                parts.push(p);
            }
        }
    }
    let mut idx = 0;
    let mut off = 0;
    while idx < parts.len() {
        let slices: smallvec::SmallVec<[IoSlice<'_>; 24]> = parts[idx..]
            .iter()
            .take(512)
            .enumerate()
            .map(|(i, p)| IoSlice::new(if i == 0 { &p[off..] } else { p }))
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let left = parts[idx].len() - off;
            if n >= left {
                n -= left;
                idx += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    Ok(())
}

/// A logged-in session's context on this connection.
struct Session {
    outcome: LoginOutcome,
    key: SessionKey,
    id: u64,
    stop: tokio::sync::watch::Receiver<bool>,
    finished: tokio::sync::watch::Sender<bool>,
    target: Option<Arc<Target>>,
    nexus: Arc<Nexus>,
}

struct Conn {
    server: Arc<Server>,
    rd: OwnedReadHalf,
    rbuf: BytesMut,
    /// A large PDU being received into its own buffer: the buffer and how much is in it.
    large: Option<(Vec<u8>, usize)>,
    /// The last PDU was large: read the next one's header alone first, so that a large
    /// body is not read into the receive buffer.
    header_first: bool,
    dec: FrameDecoder,
    enc: FrameEncoder,
    out: mpsc::UnboundedSender<Vec<OutFrame>>,
    /// Batch vectors the writer has emptied, for reuse.
    spare: mpsc::UnboundedReceiver<Vec<OutFrame>>,
    group: u16,
    local: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("connection closed by peer")]
    Eof,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("framing: {0}")]
    Frame(#[from] iscsi_proto::FrameError),
    #[error("login timed out")]
    Timeout,
    #[error("{0}")]
    Protocol(&'static str),
}

impl Conn {
    /// Read until one frame is complete.
    async fn read_frame(&mut self) -> Result<Frame, ConnError> {
        loop {
            if let Some(f) = self.dec.decode(&mut self.rbuf)? {
                return Ok(f);
            }
            room_to_read(&mut self.rbuf);
            if self.rd.read_buf(&mut self.rbuf).await? == 0 {
                return Err(ConnError::Eof);
            }
        }
    }

    fn send(&mut self, pdu: &Pdu) {
        let f = self.enc.encode(pdu);
        let _ = self.out.send(vec![f]);
    }

    /// The login phase. Returns the admitted session, or None when the login failed (the
    /// failure response has been queued).
    async fn login(&mut self) -> Result<Option<Session>, ConnError> {
        let cfg = &self.server.config.server;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(cfg.login_timeout_secs);
        let mut login = Login::new(LoginConfig {
            limits: self.server.limits.clone(),
            portal_group_tag: self.group,
            queue_depth: cfg.queue_depth,
        });
        loop {
            let frame = tokio::time::timeout_at(deadline, self.read_frame())
                .await
                .map_err(|_| ConnError::Timeout)??;
            if frame.bhs.opcode() != Opcode::LOGIN_REQUEST {
                return Err(ConnError::Protocol("non-login PDU during login"));
            }
            let Ok(Pdu::LoginRequest(req)) = frame.pdu() else {
                return Err(ConnError::Protocol("undecodable login request"));
            };
            let ctx = PortalLogin {
                registry: &self.server.registry,
                group: self.group,
            };
            match login.handle(&req, &ctx) {
                LoginStep::Continue(resp) => self.send(&Pdu::LoginResponse(resp)),
                LoginStep::Fail(resp, _) => {
                    self.send(&Pdu::LoginResponse(resp));
                    return Ok(None);
                }
                LoginStep::Complete(mut resp, outcome) => {
                    let admission = match self.server.sessions.admit(&outcome) {
                        Ok(a) => a,
                        Err(status) => {
                            resp.status_class = status.class;
                            resp.status_detail = status.detail;
                            resp.transit = false;
                            resp.nsg = 0;
                            resp.data = bytes::Bytes::new();
                            self.send(&Pdu::LoginResponse(resp));
                            return Ok(None);
                        }
                    };
                    if let Some(mut old) = admission.replaced {
                        // Wait until the reinstated session's commands are drained.
                        let _ = tokio::time::timeout(DRAIN_TIMEOUT, old.wait_for(|d| *d)).await;
                    }
                    resp.tsih = admission.tsih;
                    self.send(&Pdu::LoginResponse(resp));
                    let p = &outcome.params;
                    let digests = Digests {
                        header: p.header_digest,
                        data: p.data_digest,
                    };
                    self.enc.digests = digests;
                    self.dec.digests = digests;
                    self.dec.max_data_segment = p.max_recv_data_segment_length as usize;
                    let target = outcome
                        .target_name
                        .as_deref()
                        .and_then(|n| self.server.registry.target(n).cloned());
                    let nexus = Arc::new(Nexus::new(
                        outcome.initiator_name.clone(),
                        outcome.isid,
                        target.as_ref().map(|t| t.name.clone()).unwrap_or_default(),
                        self.group,
                        self.group,
                    ));
                    tracing::info!(
                        initiator = %outcome.initiator_name,
                        target = outcome.target_name.as_deref().unwrap_or("(discovery)"),
                        tsih = admission.tsih,
                        header_digest = p.header_digest,
                        data_digest = p.data_digest,
                        "login complete"
                    );
                    return Ok(Some(Session {
                        key: SessionKey::of(&outcome),
                        outcome: *outcome,
                        id: admission.id,
                        stop: admission.stop,
                        finished: admission.finished,
                        target,
                        nexus,
                    }));
                }
            }
        }
    }

    /// Hand every whole PDU received to the full feature phase; start receiving a large
    /// PDU into its own buffer once its header is in. Returns how many PDUs were handled.
    fn receive(&mut self, ffp: &mut ffp::Connection, now: Instant) -> usize {
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
    async fn poll_next(
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

    async fn full_feature(&mut self, mut s: Session) {
        let cfg = &self.server.config.server;
        let luns = s
            .target
            .as_ref()
            .map(|t| t.lun_map().luns().to_vec())
            .unwrap_or_default();
        let ffp_cfg = FfpConfig {
            queue_depth: cfg.queue_depth,
            nop_interval: (cfg.nop_interval_secs > 0)
                .then(|| Duration::from_secs(cfg.nop_interval_secs)),
            nop_timeout: Duration::from_secs(cfg.nop_timeout_secs.max(1)),
            luns,
            ..FfpConfig::default()
        };
        let mut ffp = ffp::Connection::new(&s.outcome, ffp_cfg, Instant::now());
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u32, ScsiCompletion)>();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Executing tasks and their abort flags.
        let mut executing: HashMap<u32, Arc<AtomicBool>> = HashMap::new();
        let mut close: Option<CloseReason> = None;
        let mut batch: Vec<OutFrame> = Vec::new();
        // Adjacent writes received together, written with one device call.
        let mut run: WriteRun<u32> = WriteRun::default();
        let poll = Duration::from_micros(cfg.poll_us);
        // Reads in a row that brought exactly one PDU (the initiator waits for each answer).
        let mut one_at_a_time = OneAtATime::default();
        let mut polled = false;
        while close.is_none() {
            if !std::mem::take(&mut polled) {
                tokio::select! {
                    biased;
                    Some((itt, c)) = done_rx.recv() => {
                        executing.remove(&itt);
                        ffp.complete(itt, c);
                        while let Ok((itt, c)) = done_rx.try_recv() {
                            executing.remove(&itt);
                            ffp.complete(itt, c);
                        }
                    }
                    r = read_more(&mut self.rd, &mut self.rbuf, &mut self.large, self.header_first) => {
                        match r {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                        let n = self.receive(&mut ffp, Instant::now());
                        one_at_a_time.read(n, self.large.is_some());
                    }
                    _ = tick.tick() => ffp.handle_tick(Instant::now()),
                    _ = s.stop.changed() => {
                        tracing::info!("session stopped (reinstated or shutting down)");
                        break;
                    }
                }
            }
            loop {
                let Some(o) = ffp.poll_output() else {
                    if run.is_empty() {
                        break;
                    }
                    // Its answers are more output.
                    self.write_run(&mut run, &mut ffp, &mut executing, &done_tx);
                    continue;
                };
                if let Output::Execute(task) = &o
                    && self.gather(&s, task, &mut run, &mut ffp, &mut executing, &done_tx)
                {
                    continue;
                }
                if !matches!(o, Output::Send(_)) {
                    // Nothing else runs before the writes gathered so far are written.
                    self.write_run(&mut run, &mut ffp, &mut executing, &done_tx);
                }
                match o {
                    Output::Send(pdu) => batch.push(self.enc.encode(&pdu)),
                    Output::Execute(task) => {
                        if let Some(c) = self.execute_inline(&s, &task) {
                            ffp.complete(task.itt, c);
                            continue;
                        }
                        let abort = Arc::new(AtomicBool::new(false));
                        executing.insert(task.itt, abort.clone());
                        self.execute(&s, task, abort, done_tx.clone());
                    }
                    Output::Abort { itt } => {
                        if let Some(flag) = executing.get(&itt) {
                            flag.store(true, Ordering::Release);
                        }
                    }
                    Output::Text { itt, keys } => {
                        let answer = self.text_keys(&s, &keys);
                        ffp.text_reply(itt, &answer);
                    }
                    Output::Reset(ev) => self.reset(&s, &ev),
                    Output::Close(reason) => {
                        tracing::debug!(?reason, "closing connection");
                        close = Some(reason);
                    }
                }
            }
            if !batch.is_empty() {
                let spare = self.spare.try_recv().unwrap_or_default();
                if self.out.send(std::mem::replace(&mut batch, spare)).is_err() {
                    break;
                }
            }
            if !poll.is_zero() && one_at_a_time.yes() && executing.is_empty() {
                match self.poll_next(&mut ffp, poll).await {
                    Ok(0) => one_at_a_time.polled(0, self.large.is_some()),
                    Ok(n) => {
                        polled = true;
                        one_at_a_time.polled(n, self.large.is_some());
                    }
                    Err(_) => break,
                }
            }
        }
        // Let executing commands finish before the session is declared gone, so that a
        // reinstated session never races with this one's writes.
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        for flag in executing.values() {
            flag.store(true, Ordering::Release);
        }
        while !executing.is_empty() {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some((itt, _))) => {
                    executing.remove(&itt);
                }
                _ => break,
            }
        }
        if let Some(t) = &s.target {
            for (_, lu) in t.lun_map().iter() {
                lu.nexus_lost(&s.nexus);
            }
        }
        self.server.sessions.remove(&s.key, s.id);
        let _ = s.finished.send(true);
    }

    /// Run a short read or write that needs nothing but memory (data in the page cache, a
    /// write into it) right here, on the connection's task: a round trip through an I/O
    /// thread costs two thread wake-ups, more than the copy.
    fn execute_inline(&self, s: &Session, task: &ScsiTask) -> Option<ScsiCompletion> {
        let max = if task.write {
            INLINE_WRITE_MAX
        } else {
            INLINE_READ_MAX
        };
        if (task.read && task.write) || task.expected_len > max {
            return None;
        }
        let map = s.target.as_ref()?.lun_map();
        let req = task_request(&s.nexus, task, &map, None, &self.server.registry);
        let r = map.execute_nowait(decode_lun(task.lun), &req)?;
        Some(completion(r))
    }

    /// Offer a write to the run of adjacent writes (see [`scsi::WriteRun`]): true when it
    /// was taken (it joined the run, or was answered without reaching the medium), false
    /// when it is to run the usual way.
    fn gather(
        &self,
        s: &Session,
        task: &ScsiTask,
        run: &mut WriteRun<u32>,
        ffp: &mut ffp::Connection,
        executing: &mut HashMap<u32, Arc<AtomicBool>>,
        done: &mpsc::UnboundedSender<(u32, ScsiCompletion)>,
    ) -> bool {
        if !task.write || task.read || task.expected_len > INLINE_WRITE_MAX {
            return false;
        }
        let Some(t) = &s.target else {
            return false;
        };
        let map = t.lun_map();
        let lun = decode_lun(task.lun);
        match run.fit(&map, lun, &task.cdb, &task.data) {
            Fit::No => return false,
            Fit::AfterRun => self.write_run(run, ffp, executing, done),
            Fit::Joins => {}
        }
        let req = task_request(&s.nexus, task, &map, None, &self.server.registry);
        match run.join(&map, lun, &req, task.itt) {
            Joined::Yes => true,
            Joined::Done(r) => {
                ffp.complete(task.itt, completion(r));
                true
            }
            Joined::No => false,
        }
    }

    /// Write the run of gathered writes and answer them: here when that needs only memory,
    /// else on an I/O thread (its tasks count as executing until then).
    fn write_run(
        &self,
        run: &mut WriteRun<u32>,
        ffp: &mut ffp::Connection,
        executing: &mut HashMap<u32, Arc<AtomicBool>>,
        done: &mpsc::UnboundedSender<(u32, ScsiCompletion)>,
    ) {
        if run.write_nowait(|itt, r| ffp.complete(itt, completion(r))) {
            return;
        }
        let abort = Arc::new(AtomicBool::new(false));
        for &itt in run.tags() {
            executing.insert(itt, abort.clone());
        }
        let run = std::mem::take(run);
        let done = done.clone();
        self.server.io.spawn(Box::new(move || {
            run.write(|itt, r| {
                let _ = done.send((itt, completion(r)));
            });
        }));
    }

    fn execute(
        &self,
        s: &Session,
        task: ScsiTask,
        abort: Arc<AtomicBool>,
        done: mpsc::UnboundedSender<(u32, ScsiCompletion)>,
    ) {
        let map: Arc<LunMap> = match &s.target {
            Some(t) => t.lun_map(),
            None => Arc::new(LunMap::new()),
        };
        let nexus = s.nexus.clone();
        let server = self.server.clone();
        self.server.io.spawn(Box::new(move || {
            let req = task_request(&nexus, &task, &map, Some(&abort), &server.registry);
            let r = map.execute(decode_lun(task.lun), &req);
            let _ = done.send((task.itt, completion(r)));
        }));
    }

    /// Answer the Text keys the protocol machine forwards: SendTargets, and the vendor keys
    /// of which only the HA peer protocol's is understood (from a target's replica peers).
    fn text_keys(
        &self,
        s: &Session,
        keys: &iscsi_proto::text::TextKeys,
    ) -> iscsi_proto::text::TextKeys {
        let mut answer = if keys.get("SendTargets").is_some() {
            self.send_targets(s, keys)
        } else {
            iscsi_proto::text::TextKeys::default()
        };
        for (k, v) in keys.iter() {
            if k == "SendTargets" {
                continue;
            }
            let peer = s.target.as_ref().filter(|t| {
                t.replica_peers
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(&s.outcome.initiator_name))
            });
            let value = match peer {
                Some(t) if k == replication::service::peer::PEER_KEY => {
                    let serve = || {
                        self.server
                            .replication
                            .peer_request(&s.outcome.initiator_name, &t.name, v)
                    };
                    // The request may wait for commands to drain: off the async workers.
                    if tokio::runtime::Handle::current().runtime_flavor()
                        == tokio::runtime::RuntimeFlavor::MultiThread
                    {
                        tokio::task::block_in_place(serve)
                    } else {
                        serve()
                    }
                }
                _ => "NotUnderstood".to_owned(),
            };
            answer.push(k, &value);
        }
        answer
    }

    fn send_targets(
        &self,
        s: &Session,
        keys: &iscsi_proto::text::TextKeys,
    ) -> iscsi_proto::text::TextKeys {
        let which = keys.get("SendTargets").unwrap_or("");
        let local = self
            .local
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3260)));
        let session_target = match s.outcome.session_type {
            SessionType::Discovery => None,
            SessionType::Normal => s.outcome.target_name.as_deref(),
        };
        // In a normal session only the session's own target may be listed.
        let which = if session_target.is_some() && which == "All" {
            ""
        } else {
            which
        };
        self.server
            .registry
            .send_targets(which, &s.outcome.initiator_name, session_target, local)
    }

    fn reset(&self, s: &Session, ev: &ResetEvent) {
        let Some(t) = &s.target else { return };
        let map = t.lun_map();
        match ev {
            ResetEvent::LogicalUnit { lun } => {
                if let Some(lu) = map.get(*lun) {
                    tracing::info!(lun, "LOGICAL UNIT RESET");
                    lu.reset();
                }
            }
            ResetEvent::TargetWarm | ResetEvent::TargetCold => {
                tracing::info!(target = %t.name, "TARGET RESET");
                for (_, lu) in map.iter() {
                    lu.reset();
                }
            }
            ResetEvent::TaskSet { .. } => {}
        }
    }
}

/// A task as the SCSI layer takes it, on `map` (whose LUNs REPORT LUNS lists), with the
/// server's registry to resolve EXTENDED COPY targets.
fn task_request<'a>(
    nexus: &'a Nexus,
    task: &'a ScsiTask,
    map: &'a LunMap,
    abort: Option<&'a AtomicBool>,
    registry: &'a Registry,
) -> scsi::Request<'a> {
    scsi::Request::new(
        nexus,
        &task.cdb,
        &task.data,
        map.luns(),
        abort,
        Some(registry),
    )
}

/// The answer to a task from the SCSI layer's response.
fn completion(r: scsi::Response) -> ScsiCompletion {
    ScsiCompletion {
        status: r.status,
        sense: r.sense,
        data: r.data,
        write_len: r.write_len,
    }
}

fn frame_error(ffp: &mut ffp::Connection, e: &iscsi_proto::FrameError) {
    tracing::info!(error = %e, "framing error");
    ffp.handle_frame_error(e);
}

/// Make room in the receive buffer for a read: a read chunk when less than 4 KiB is left.
fn room_to_read(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(READ_CHUNK);
    }
}

/// Make room in `buf`, which holds the start of a PDU of `total` bytes, for the rest of it,
/// and for the reads after it when the buffer must grow anyway: while earlier PDUs' data
/// is still referenced (an asynchronous mirror's journal holds writes until they are
/// shipped), growing by the rest of this PDU alone made a new buffer, of 64 KiB, every 16
/// PDUs of 4 KiB.
fn room_for(buf: &mut BytesMut, total: usize) {
    if buf.capacity() < total {
        buf.reserve((total - buf.len()).max(READ_CHUNK));
    }
}

/// Read what comes next: the rest of a large PDU into its own buffer (never past its end),
/// or into the receive buffer (only a header, right after a large PDU).
async fn read_more(
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
