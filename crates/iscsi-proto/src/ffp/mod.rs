//! The full feature phase of one connection (RFC 7143 sections 3 and 4, ErrorRecoveryLevel 0,
//! one connection per session), without I/O.
//!
//! Input arrives through `handle_*` methods (PDUs, executor completions, text answers, clock
//! ticks); output is drained with [`Connection::poll_output`]: PDUs to send, SCSI tasks to
//! execute, events for the server, and a close request. The machine keeps the CmdSN window,
//! StatSN, R2T and Data-Out accounting, Data-In segmentation, task-attribute ordering, task
//! management and target-initiated NOP-In pings.

mod respond;
mod task;
mod tmf;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use bytes::Bytes;

use self::{
    task::{R2tSeq, Task, TaskState},
    tmf::PendingTmf,
};
use crate::{
    error::{FrameError, RejectReason},
    frame::Frame,
    login::LoginOutcome,
    negotiate::{Params, SessionType},
    pdu::{
        Bhs, DataOut, LogoutRequest, LogoutResponse, NopIn, NopOut, Pdu, R2t, RESERVED_TAG, Reject,
        ScsiCommand, TextRequest, TextResponse,
    },
    serial::sn_in_window,
    text::{MAX_TEXT_LEN, TextKeys},
};

/// Settings of the full feature phase that do not come from negotiation.
#[derive(Clone, Debug)]
pub struct FfpConfig {
    /// CmdSN window: commands the session may have outstanding.
    pub queue_depth: u32,
    /// Send a NOP-In ping after this much silence from the initiator (`None`: never).
    pub nop_interval: Option<Duration>,
    /// Close the connection when a ping is not answered within this time.
    pub nop_timeout: Duration,
    /// Write data the connection may buffer before it stops issuing R2Ts (but for the
    /// oldest task waiting for data while none executes, which may then hold up to
    /// `max_write_len` more).
    pub write_buffer_budget: usize,
    /// Largest Expected Data Transfer Length accepted for a write.
    pub max_write_len: u32,
    /// LUN numbers of the target (for task management's "LUN does not exist").
    pub luns: Vec<u16>,
}

impl Default for FfpConfig {
    fn default() -> Self {
        Self {
            queue_depth: 128,
            nop_interval: Some(Duration::from_secs(10)),
            nop_timeout: Duration::from_secs(15),
            write_buffer_budget: 64 << 20,
            max_write_len: 64 << 20,
            luns: vec![0],
        }
    }
}

/// A command's Data-Out: a few buffers (one per Data-Out PDU, or the immediate data) held
/// without an allocation.
pub type Data = smallvec::SmallVec<[Bytes; 4]>;

/// A SCSI command ready to execute, with its Data-Out in offset order.
#[derive(Clone, Debug)]
pub struct ScsiTask {
    /// Initiator Task Tag (the key for [`Connection::complete`]).
    pub itt: u32,
    /// The LUN field.
    pub lun: u64,
    /// The CDB.
    pub cdb: crate::pdu::Cdb,
    /// Task attribute.
    pub attr: u8,
    /// Expected Data Transfer Length.
    pub expected_len: u32,
    /// R bit.
    pub read: bool,
    /// W bit.
    pub write: bool,
    /// Data-Out, contiguous from offset 0.
    pub data: Data,
}

/// The result of executing a [`ScsiTask`].
#[derive(Clone, Debug, Default)]
pub struct ScsiCompletion {
    /// SCSI status.
    pub status: u8,
    /// Sense data (empty if none).
    pub sense: Bytes,
    /// Data-In as the command produced it (the transport trims it to the EDTL).
    pub data: Bytes,
    /// For writes: the bytes the command wanted (for the residual). Ignored for reads.
    pub write_len: u32,
}

/// A task management event the server must act on beyond this connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetEvent {
    /// ABORT TASK SET or CLEAR TASK SET on a LUN (this I_T nexus only).
    TaskSet {
        /// LUN number.
        lun: u16,
    },
    /// LOGICAL UNIT RESET.
    LogicalUnit {
        /// LUN number.
        lun: u16,
    },
    /// TARGET WARM RESET.
    TargetWarm,
    /// TARGET COLD RESET (the connection closes after the response).
    TargetCold,
}

/// Why the machine wants the connection closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// After a Logout Response.
    Logout,
    /// A protocol violation the connection cannot survive.
    ProtocolError(&'static str),
    /// A header digest error: the stream cannot be trusted.
    HeaderDigest,
    /// The initiator did not answer a NOP-In ping.
    PingTimeout,
    /// After a TARGET COLD RESET response.
    TargetReset,
}

/// Output of the machine.
#[derive(Clone, Debug)]
pub enum Output {
    /// Send a PDU.
    Send(Pdu),
    /// Execute a SCSI task; answer with [`Connection::complete`].
    Execute(ScsiTask),
    /// A text request (e.g., SendTargets); answer with [`Connection::text_reply`].
    Text {
        /// ITT of the request.
        itt: u32,
        /// The request's keys.
        keys: TextKeys,
    },
    /// A reset the server applies to logical-unit state and other sessions.
    Reset(ResetEvent),
    /// Close the connection once everything queued before this has been sent.
    Close(CloseReason),
    /// An executing task was aborted: a long-running command may stop early. Its
    /// completion is still awaited (and its status discarded).
    Abort {
        /// ITT of the task.
        itt: u32,
    },
}

/// The full feature phase of one connection.
#[derive(Debug)]
pub struct Connection {
    params: Params,
    session_type: SessionType,
    config: FfpConfig,
    stat_sn: u32,
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    /// Non-immediate commands that arrived ahead of ExpCmdSN, with their own headers (a
    /// Reject of one echoes its header, not the one that let it through).
    held: HashMap<u32, (Pdu, Bhs)>,
    /// CmdSNs inside the window that an ABORT TASK named before their command arrived:
    /// considered received (RFC 7143 section 11.5.1), so ExpCmdSN moves past them and the
    /// command, should it still come, is dropped.
    skipped: HashSet<u32>,
    tasks: HashMap<u32, Task>,
    /// Delivered, unfinished tasks in delivery order (for task attributes).
    order: VecDeque<u32>,
    next_seq: u64,
    next_ttt: u32,
    buffered: usize,
    outputs: VecDeque<Output>,
    aborted: VecDeque<u32>,
    pending_tmfs: Vec<PendingTmf>,
    pending_logout: Option<LogoutRequest>,
    text_in: Option<(u32, u32, Vec<u8>)>,
    text_out: Option<(u32, u32, Bytes)>,
    last_rx: Instant,
    ping: Option<(u32, Instant)>,
    closing: bool,
}

impl Connection {
    /// Enter the full feature phase after a successful login.
    pub fn new(outcome: &LoginOutcome, config: FfpConfig, now: Instant) -> Self {
        let depth = config.queue_depth.max(1);
        Self {
            params: outcome.params.clone(),
            session_type: outcome.session_type,
            stat_sn: outcome.stat_sn,
            exp_cmd_sn: outcome.exp_cmd_sn,
            max_cmd_sn: outcome.exp_cmd_sn.wrapping_add(depth - 1),
            config,
            held: HashMap::new(),
            skipped: HashSet::new(),
            tasks: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            next_ttt: 1,
            buffered: 0,
            outputs: VecDeque::new(),
            aborted: VecDeque::new(),
            pending_tmfs: Vec::new(),
            pending_logout: None,
            text_in: None,
            text_out: None,
            last_rx: now,
            ping: None,
            closing: false,
        }
    }

    /// The negotiated parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Number of tasks not yet completed.
    pub fn active_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Update the set of LUNs (after a LUN is added or removed).
    pub fn set_luns(&mut self, luns: Vec<u16>) {
        self.config.luns = luns;
    }

    /// Handle a framing error reported by the decoder.
    pub fn handle_frame_error(&mut self, err: &FrameError) {
        match err {
            FrameError::HeaderDigest => self.close(CloseReason::HeaderDigest),
            FrameError::DataDigest { bhs } => {
                // RFC 7143 section 7.8: discard the PDU and reject it. At ERL 0 the command it
                // belongs to cannot complete, so the connection is closed after the Reject.
                self.reject(bhs, RejectReason::DataDigestError);
                self.close(CloseReason::ProtocolError("data digest error"));
            }
            FrameError::DataSegmentTooLong { bhs, .. } => {
                self.reject(bhs, RejectReason::ProtocolError);
                self.close(CloseReason::ProtocolError("data segment too long"));
            }
            FrameError::WrongLength { .. } => {
                self.close(CloseReason::ProtocolError("PDU boundary lost"));
            }
        }
    }

    /// Handle one received PDU.
    pub fn handle_frame(&mut self, frame: &Frame, now: Instant) {
        self.last_rx = now;
        if self.closing {
            return;
        }
        let pdu = match frame.pdu() {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable PDU");
                self.reject(&frame.bhs, RejectReason::CommandNotSupported);
                return;
            }
        };
        self.handle_pdu(pdu, &frame.bhs);
    }

    fn handle_pdu(&mut self, pdu: Pdu, bhs: &Bhs) {
        match pdu {
            Pdu::DataOut(d) => self.data_out(&d, bhs),
            Pdu::NopOut(ref n) if n.itt == RESERVED_TAG => {
                // An answer to our ping (or an unsolicited "I am alive"): no response.
                if self.ping.is_some_and(|(ttt, _)| ttt == n.ttt) {
                    self.ping = None;
                }
            }
            Pdu::SnackRequest(_) => self.reject(bhs, RejectReason::SnackReject),
            Pdu::ScsiCommand(_)
            | Pdu::NopOut(_)
            | Pdu::TaskMgmtRequest(_)
            | Pdu::TextRequest(_)
            | Pdu::LogoutRequest(_) => self.ordered_command(pdu, bhs),
            Pdu::LoginRequest(_) => {
                self.reject(bhs, RejectReason::ProtocolError);
                self.close(CloseReason::ProtocolError(
                    "login request in full feature phase",
                ));
            }
            _ => self.reject(bhs, RejectReason::ProtocolError),
        }
    }

    /// Apply CmdSN ordering (RFC 7143 section 4.2.2.1): immediate commands go at once,
    /// others in CmdSN order; commands outside the window are silently ignored.
    fn ordered_command(&mut self, pdu: Pdu, bhs: &Bhs) {
        let (cmd_sn, immediate) = match &pdu {
            Pdu::ScsiCommand(c) => (c.cmd_sn, c.immediate),
            Pdu::NopOut(n) => (n.cmd_sn, n.immediate),
            Pdu::TaskMgmtRequest(t) => (t.cmd_sn, t.immediate),
            Pdu::TextRequest(t) => (t.cmd_sn, t.immediate),
            Pdu::LogoutRequest(l) => (l.cmd_sn, l.immediate),
            _ => return,
        };
        if immediate {
            self.deliver(pdu, bhs, true);
            return;
        }
        if !sn_in_window(cmd_sn, self.exp_cmd_sn, self.max_cmd_sn) {
            tracing::debug!(
                cmd_sn,
                exp = self.exp_cmd_sn,
                max = self.max_cmd_sn,
                "CmdSN outside the window: ignored"
            );
            return;
        }
        if self.skipped.contains(&cmd_sn) {
            tracing::debug!(cmd_sn, "command aborted before it arrived: dropped");
            if let Pdu::ScsiCommand(c) = &pdu {
                self.remember_aborted(c.itt);
            }
            return;
        }
        if cmd_sn != self.exp_cmd_sn {
            if let Pdu::ScsiCommand(c) = &pdu {
                // Register the task now so that its unsolicited data can arrive.
                if !self.accept_task(c.clone(), bhs) {
                    return;
                }
            }
            self.held.insert(cmd_sn, (pdu, *bhs));
            return;
        }
        self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        self.deliver(pdu, bhs, false);
        self.deliver_held();
    }

    /// Deliver the held commands that ExpCmdSN has reached, stepping over skipped CmdSNs.
    pub(super) fn deliver_held(&mut self) {
        loop {
            if let Some((next, bhs)) = self.held.remove(&self.exp_cmd_sn) {
                self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
                self.deliver(next, &bhs, false);
            } else if self.skipped.remove(&self.exp_cmd_sn) {
                // The aborted command's slot is free again.
                self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
                self.window_advance();
            } else {
                break;
            }
        }
    }

    fn deliver(&mut self, pdu: Pdu, bhs: &Bhs, immediate: bool) {
        match pdu {
            Pdu::ScsiCommand(c) => {
                let itt = c.itt;
                if !self.tasks.contains_key(&itt) && !self.accept_task(c, bhs) {
                    if !immediate {
                        self.window_advance();
                    }
                    return;
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                if let Some(t) = self.tasks.get_mut(&itt) {
                    t.delivered = true;
                    t.seq = seq;
                    self.order.push_back(itt);
                }
                self.issue_r2ts();
                self.progress(itt);
            }
            Pdu::NopOut(n) => self.nop_out(n, immediate),
            Pdu::TaskMgmtRequest(t) => self.task_mgmt(t, immediate),
            Pdu::TextRequest(t) => self.text_request(t, bhs, immediate),
            Pdu::LogoutRequest(l) => self.logout(l, immediate),
            _ => {}
        }
    }

    /// Register a task; false if it was rejected.
    fn accept_task(&mut self, cmd: ScsiCommand, bhs: &Bhs) -> bool {
        if self.session_type == SessionType::Discovery {
            self.reject(bhs, RejectReason::ProtocolError);
            return false;
        }
        if self.tasks.contains_key(&cmd.itt) {
            self.reject(bhs, RejectReason::TaskInProgress);
            return false;
        }
        let p = &self.params;
        let first_burst = (!p.initial_r2t).then_some(p.first_burst_length);
        let task = Task::new(
            cmd,
            p.immediate_data,
            first_burst,
            self.config.max_write_len,
        );
        self.buffered += task.reserved;
        self.tasks.insert(task.cmd.itt, task);
        true
    }

    fn data_out(&mut self, d: &DataOut, bhs: &Bhs) {
        let Some(task) = self.tasks.get_mut(&d.itt) else {
            if !self.aborted.contains(&d.itt) {
                self.reject(bhs, RejectReason::InvalidPduField);
            }
            return;
        };
        let before = task.reserved;
        if task.state != TaskState::Receiving || task.data_out(d).is_err() {
            self.reject(bhs, RejectReason::InvalidPduField);
            return;
        }
        self.buffered += task.reserved - before;
        let itt = d.itt;
        self.issue_r2ts();
        self.progress(itt);
    }

    /// Issue R2Ts for delivered tasks while MaxOutstandingR2T and the buffer budget allow.
    fn issue_r2ts(&mut self) {
        let max_out = self.params.max_outstanding_r2t.max(1) as usize;
        let burst = self.params.max_burst_length.max(512);
        let mut order: Vec<u32> = self
            .order
            .iter()
            .copied()
            .filter(|itt| {
                self.tasks
                    .get(itt)
                    .is_some_and(|t| t.next_r2t_offset < t.edtl())
            })
            .collect();
        order.truncate(64);
        // Called for every Data-Out and every completion: most calls (reads, writes whose
        // data came unsolicited) have no task to ask for data and stop here.
        if order.is_empty() {
            return;
        }
        // Over the budget, tasks wait for executing ones to free what they hold. When none
        // is executing, the oldest task still to be asked for data is asked all the same:
        // it will complete and free its buffers. Otherwise tasks that each held part of
        // their data could fill the budget and wait for each other forever (32 writes of
        // 4 MiB at once did).
        let executing = self.tasks.values().any(|t| t.state == TaskState::Executing);
        for (k, itt) in order.into_iter().enumerate() {
            loop {
                let budget_left = self
                    .config
                    .write_buffer_budget
                    .saturating_sub(self.buffered);
                let ttt = self.next_ttt;
                let Some(t) = self.tasks.get_mut(&itt) else {
                    break;
                };
                if t.r2ts.len() >= max_out || t.next_r2t_offset >= t.edtl() || t.aborted {
                    break;
                }
                let len = burst.min(t.edtl() - t.next_r2t_offset);
                if (len as usize) > budget_left && (k > 0 || executing) {
                    return;
                }
                self.next_ttt = match self.next_ttt.wrapping_add(1) {
                    RESERVED_TAG => 1,
                    n => n,
                };
                let r2t = R2t {
                    lun: t.cmd.lun,
                    itt,
                    ttt,
                    stat_sn: self.stat_sn,
                    exp_cmd_sn: self.exp_cmd_sn,
                    max_cmd_sn: self.max_cmd_sn,
                    r2t_sn: t.r2t_sn,
                    buffer_offset: t.next_r2t_offset,
                    desired_len: len,
                };
                t.r2ts.push(R2tSeq {
                    ttt,
                    offset: t.next_r2t_offset,
                    len,
                    received: 0,
                    next_data_sn: 0,
                });
                t.r2t_sn = t.r2t_sn.wrapping_add(1);
                t.next_r2t_offset += len;
                t.reserved += len as usize;
                self.buffered += len as usize;
                self.outputs.push_back(Output::Send(Pdu::R2t(r2t)));
            }
        }
    }

    /// Move a task forward: data complete -> ready -> (ordering allows) executing.
    fn progress(&mut self, itt: u32) {
        let Some(t) = self.tasks.get_mut(&itt) else {
            return;
        };
        if t.delivered && t.state == TaskState::Receiving && t.data_complete() {
            t.state = TaskState::Ready;
        }
        self.schedule();
    }

    /// Start every ready task its task attribute allows (SAM-5 section 8.6: SIMPLE after
    /// earlier ORDERED tasks, ORDERED after all earlier tasks, HEAD OF QUEUE at once).
    fn schedule(&mut self) {
        let mut ordered_ahead = false;
        let mut anything_ahead = false;
        let mut start: smallvec::SmallVec<[u32; 8]> = smallvec::SmallVec::new();
        for &itt in &self.order {
            let Some(t) = self.tasks.get(&itt) else {
                continue;
            };
            let attr = t.cmd.attr;
            let may_start = match attr {
                3 => true,
                2 => !anything_ahead,
                _ => !ordered_ahead,
            };
            if t.state == TaskState::Ready && may_start {
                start.push(itt);
            }
            if attr == 2 {
                ordered_ahead = true;
            }
            if attr != 3 {
                anything_ahead = true;
            }
        }
        for itt in start {
            self.start(itt);
        }
    }

    fn start(&mut self, itt: u32) {
        let Some(t) = self.tasks.get_mut(&itt) else {
            return;
        };
        if let Some(fault) = t.fault {
            let sense = fault.sense();
            self.finish_with_check_condition(itt, sense);
            return;
        }
        let Some(data) = t.take_data() else {
            let sense = task::DataFault::SequenceError.sense();
            self.finish_with_check_condition(itt, sense);
            return;
        };
        t.state = TaskState::Executing;
        let c = &t.cmd;
        self.outputs.push_back(Output::Execute(ScsiTask {
            itt,
            lun: c.lun,
            cdb: c.cdb.clone(),
            attr: c.attr,
            expected_len: c.expected_len,
            read: c.read,
            write: c.write,
            data,
        }));
    }

    fn finish_with_check_condition(&mut self, itt: u32, sense: Bytes) {
        if let Some(t) = self.tasks.get_mut(&itt) {
            t.state = TaskState::Executing;
        }
        self.complete(
            itt,
            ScsiCompletion {
                status: 0x02,
                sense,
                ..Default::default()
            },
        );
    }

    /// Remove a finished task and account for it.
    fn retire(&mut self, itt: u32) -> Option<Task> {
        let t = self.tasks.remove(&itt)?;
        self.buffered = self.buffered.saturating_sub(t.reserved);
        self.order.retain(|&i| i != itt);
        if !t.cmd.immediate {
            self.window_advance();
        }
        Some(t)
    }

    /// One more command slot: MaxCmdSN moves forward as commands complete.
    fn window_advance(&mut self) {
        self.max_cmd_sn = self.max_cmd_sn.wrapping_add(1);
    }

    fn nop_out(&mut self, n: NopOut, immediate: bool) {
        let max = self.params.max_xmit_data_segment_length as usize;
        let data = if n.data.len() > max {
            n.data.slice(..max)
        } else {
            n.data
        };
        if !immediate {
            self.window_advance();
        }
        let stat_sn = self.next_stat_sn();
        self.outputs.push_back(Output::Send(Pdu::NopIn(NopIn {
            lun: n.lun,
            itt: n.itt,
            ttt: RESERVED_TAG,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
            data,
        })));
    }

    fn text_request(&mut self, t: TextRequest, bhs: &Bhs, immediate: bool) {
        if !immediate {
            self.window_advance();
        }
        // The initiator asks for the next part of a long answer.
        if t.ttt != RESERVED_TAG {
            match self.text_out.take() {
                Some((itt, ttt, rest)) if itt == t.itt && ttt == t.ttt => {
                    self.send_text(itt, t.lun, rest);
                }
                _ => self.reject(bhs, RejectReason::InvalidPduField),
            }
            return;
        }
        self.text_out = None;
        let mut buf = match self.text_in.take() {
            Some((itt, _, buf)) if itt == t.itt => buf,
            _ => Vec::new(),
        };
        if buf.len() + t.data.len() > MAX_TEXT_LEN {
            self.reject(bhs, RejectReason::ProtocolError);
            return;
        }
        buf.extend_from_slice(&t.data);
        if t.cont {
            let ttt = self.alloc_ttt();
            self.text_in = Some((t.itt, ttt, buf));
            let stat_sn = self.next_stat_sn();
            self.outputs
                .push_back(Output::Send(Pdu::TextResponse(TextResponse {
                    final_bit: false,
                    cont: false,
                    lun: t.lun,
                    itt: t.itt,
                    ttt,
                    stat_sn,
                    exp_cmd_sn: self.exp_cmd_sn,
                    max_cmd_sn: self.max_cmd_sn,
                    data: Bytes::new(),
                })));
            return;
        }
        match TextKeys::parse(&buf) {
            Ok(keys) => {
                let mut answer = TextKeys::default();
                let mut forward = TextKeys::default();
                for (k, v) in keys.iter() {
                    match k {
                        // SendTargets and vendor-specific keys (RFC 7143 section 13.5.4)
                        // are answered by the server.
                        "SendTargets" => forward.push(k, v),
                        _ if k.starts_with("X-") => forward.push(k, v),
                        "MaxRecvDataSegmentLength" => {
                            match crate::negotiate::numeric(v, 512, 16_777_215) {
                                Some(n) => self.params.max_xmit_data_segment_length = n,
                                None => answer.push(k, "Reject"),
                            }
                        }
                        _ if crate::negotiate::LOGIN_KEYS.contains(&k) => answer.push(k, "Reject"),
                        _ => answer.push(k, "NotUnderstood"),
                    }
                }
                if forward.is_empty() {
                    self.send_text(t.itt, t.lun, answer.encode());
                } else {
                    self.text_out = Some((t.itt, RESERVED_TAG, answer.encode()));
                    self.outputs.push_back(Output::Text {
                        itt: t.itt,
                        keys: forward,
                    });
                }
            }
            Err(_) => self.reject(bhs, RejectReason::ProtocolError),
        }
    }

    /// Answer a forwarded text request (e.g., the SendTargets list).
    pub fn text_reply(&mut self, itt: u32, keys: &TextKeys) {
        let mut data = match self.text_out.take() {
            Some((i, RESERVED_TAG, pre)) if i == itt => pre.to_vec(),
            _ => Vec::new(),
        };
        data.extend_from_slice(&keys.encode());
        self.send_text(itt, 0, Bytes::from(data));
    }

    /// Send a text answer, split into MaxRecvDataSegmentLength pieces (C bit and TTT).
    fn send_text(&mut self, itt: u32, lun: u64, data: Bytes) {
        let max = self.params.max_xmit_data_segment_length as usize;
        let (now, rest) = if data.len() > max {
            (data.slice(..max), Some(data.slice(max..)))
        } else {
            (data, None)
        };
        let ttt = if rest.is_some() {
            self.alloc_ttt()
        } else {
            RESERVED_TAG
        };
        let stat_sn = self.next_stat_sn();
        self.outputs
            .push_back(Output::Send(Pdu::TextResponse(TextResponse {
                final_bit: rest.is_none(),
                cont: rest.is_some(),
                lun,
                itt,
                ttt,
                stat_sn,
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn,
                data: now,
            })));
        if let Some(rest) = rest {
            self.text_out = Some((itt, ttt, rest));
        }
    }

    fn logout(&mut self, l: LogoutRequest, immediate: bool) {
        if !immediate {
            self.window_advance();
        }
        // Tasks still waiting for data will never get it.
        let waiting: Vec<u32> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.state != TaskState::Executing)
            .map(|(&i, _)| i)
            .collect();
        for itt in waiting {
            self.abort_task(itt);
        }
        self.pending_logout = Some(l);
        self.try_finish_logout();
    }

    fn try_finish_logout(&mut self) {
        if !self.tasks.is_empty() {
            return;
        }
        let Some(l) = self.pending_logout.take() else {
            return;
        };
        let response = match l.reason {
            0 | 1 => 0,
            // Removing a connection for recovery needs ERL 2.
            _ => 2,
        };
        let stat_sn = self.next_stat_sn();
        self.outputs
            .push_back(Output::Send(Pdu::LogoutResponse(LogoutResponse {
                response,
                itt: l.itt,
                stat_sn,
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn,
                time2wait: 0,
                time2retain: 0,
            })));
        if response == 0 {
            self.close(CloseReason::Logout);
        }
    }

    /// A clock tick: send a NOP-In ping after silence, close when a ping goes unanswered.
    pub fn handle_tick(&mut self, now: Instant) {
        if self.closing {
            return;
        }
        if let Some((_, sent)) = self.ping {
            if now.duration_since(sent) >= self.config.nop_timeout {
                tracing::warn!("NOP-In ping not answered: closing the connection");
                self.close(CloseReason::PingTimeout);
            }
            return;
        }
        let Some(interval) = self.config.nop_interval else {
            return;
        };
        if now.duration_since(self.last_rx) >= interval {
            let ttt = self.alloc_ttt();
            self.ping = Some((ttt, now));
            self.outputs.push_back(Output::Send(Pdu::NopIn(NopIn {
                lun: 0,
                itt: RESERVED_TAG,
                ttt,
                stat_sn: self.stat_sn,
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn,
                data: Bytes::new(),
            })));
        }
    }

    fn alloc_ttt(&mut self) -> u32 {
        let ttt = self.next_ttt;
        self.next_ttt = match self.next_ttt.wrapping_add(1) {
            RESERVED_TAG => 1,
            n => n,
        };
        ttt
    }

    fn next_stat_sn(&mut self) -> u32 {
        let s = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        s
    }

    fn reject(&mut self, bhs: &Bhs, reason: RejectReason) {
        tracing::debug!(?reason, opcode = bhs.opcode().0, itt = bhs.itt(), "reject");
        let stat_sn = self.next_stat_sn();
        self.outputs.push_back(Output::Send(Pdu::Reject(Reject {
            reason: reason as u8,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
            data_sn: 0,
            data: Bytes::copy_from_slice(&bhs.0),
        })));
    }

    fn close(&mut self, reason: CloseReason) {
        if !self.closing {
            self.closing = true;
            self.outputs.push_back(Output::Close(reason));
        }
    }
}

#[cfg(test)]
mod tests;
