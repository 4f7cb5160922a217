//! One SCSI task of a connection: its Data-Out assembly (immediate data, unsolicited Data-Out,
//! solicited data per R2T) and its execution state.

use bytes::Bytes;

use crate::pdu::{DataOut, RESERVED_TAG, ScsiCommand};

/// Why a task's data phase failed; each maps to the sense RFC 7143 section 11.4.7.2 gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DataFault {
    /// Unsolicited data the negotiation does not allow, or beyond FirstBurstLength.
    UnexpectedUnsolicited,
    /// A Data-Out PDU out of place: wrong DataSN, offset or length.
    SequenceError,
    /// The command asks for more data than the target accepts in one command.
    TooLong,
}

impl DataFault {
    /// Fixed-format sense: ABORTED COMMAND with the iSCSI ASC/ASCQ.
    pub(crate) fn sense(self) -> Bytes {
        let (asc, ascq) = match self {
            Self::UnexpectedUnsolicited => (0x0c, 0x0c),
            Self::SequenceError => (0x0c, 0x0d),
            Self::TooLong => (0x55, 0x00),
        };
        let key = if self == Self::TooLong { 0x05 } else { 0x0b };
        let mut s = vec![0u8; 18];
        s[0] = 0x70;
        s[2] = key;
        s[7] = 10;
        s[12] = asc;
        s[13] = ascq;
        Bytes::from(s)
    }
}

/// Where a task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TaskState {
    /// Accepted; Data-Out (or CmdSN order) still outstanding.
    Receiving,
    /// All data present; waiting for task-attribute ordering.
    Ready,
    /// Handed to the executor.
    Executing,
}

/// One outstanding R2T.
#[derive(Clone, Debug)]
pub(crate) struct R2tSeq {
    pub(crate) ttt: u32,
    pub(crate) offset: u32,
    pub(crate) len: u32,
    pub(crate) received: u32,
    pub(crate) next_data_sn: u32,
}

/// A task and its data.
#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) cmd: ScsiCommand,
    pub(crate) delivered: bool,
    pub(crate) state: TaskState,
    pub(crate) aborted: bool,
    /// Delivery order, for task attributes.
    pub(crate) seq: u64,
    /// Data-Out chunks with their buffer offsets.
    pub(crate) chunks: smallvec::SmallVec<[(u32, Bytes); 4]>,
    /// Bytes received so far (each byte once: sequences are checked for order).
    pub(crate) received: u32,
    /// End of the unsolicited data (immediate data plus unsolicited Data-Out).
    pub(crate) unsolicited_end: u32,
    pub(crate) unsolicited_received: u32,
    pub(crate) unsolicited_data_sn: u32,
    pub(crate) unsolicited_done: bool,
    /// Next offset to ask for with an R2T.
    pub(crate) next_r2t_offset: u32,
    pub(crate) r2t_sn: u32,
    pub(crate) r2ts: Vec<R2tSeq>,
    /// A data-phase error: the task completes with CHECK CONDITION once its data stops.
    pub(crate) fault: Option<DataFault>,
    /// Bytes this task holds against the connection's write budget.
    pub(crate) reserved: usize,
}

impl Task {
    /// A new task for a command, with its immediate data. `first_burst` is the negotiated
    /// FirstBurstLength, or `None` when unsolicited Data-Out is not allowed (InitialR2T=Yes).
    pub(crate) fn new(
        cmd: ScsiCommand,
        immediate_allowed: bool,
        first_burst: Option<u32>,
        max_len: u32,
    ) -> Self {
        let edtl = if cmd.write { cmd.expected_len } else { 0 };
        let imm = u32::try_from(cmd.data.len()).unwrap_or(u32::MAX);
        let unsolicited_limit = first_burst.map_or(imm, |fb| fb.min(edtl).max(imm));
        let unsolicited_end = if cmd.final_bit {
            imm
        } else {
            unsolicited_limit
        };
        let mut fault = None;
        let bad_immediate = imm > 0 && (!immediate_allowed || !cmd.write || imm > edtl);
        let beyond_first_burst = first_burst.is_some_and(|fb| imm > fb);
        // Unsolicited Data-Out announced while InitialR2T=Yes.
        let unsolicited_forbidden = !cmd.final_bit && first_burst.is_none();
        if bad_immediate || beyond_first_burst || unsolicited_forbidden {
            fault = Some(DataFault::UnexpectedUnsolicited);
        } else if edtl > max_len {
            fault = Some(DataFault::TooLong);
        }
        let mut chunks = smallvec::SmallVec::new();
        if imm > 0 && fault.is_none() {
            chunks.push((0, cmd.data.clone()));
        }
        let received = if fault.is_none() { imm } else { 0 };
        Self {
            delivered: false,
            state: TaskState::Receiving,
            aborted: false,
            seq: 0,
            chunks,
            received,
            unsolicited_end,
            unsolicited_received: imm,
            unsolicited_data_sn: 0,
            unsolicited_done: cmd.final_bit || unsolicited_end <= imm,
            next_r2t_offset: if fault.is_some() {
                edtl
            } else {
                unsolicited_end
            },
            r2t_sn: 0,
            r2ts: Vec::new(),
            fault,
            reserved: received as usize,
            cmd,
        }
    }

    /// Bytes the initiator will write in all.
    pub(crate) fn edtl(&self) -> u32 {
        if self.cmd.write {
            self.cmd.expected_len
        } else {
            0
        }
    }

    /// Whether every byte of data has arrived (or the data phase has ended in a fault).
    pub(crate) fn data_complete(&self) -> bool {
        if self.fault.is_some() {
            return self.unsolicited_done && self.r2ts.is_empty();
        }
        self.unsolicited_done && self.r2ts.is_empty() && self.next_r2t_offset >= self.edtl()
    }

    /// Accept one Data-Out PDU. Returns an error for a PDU the target must reject (it does
    /// not belong to any open sequence of this task).
    pub(crate) fn data_out(&mut self, d: &DataOut) -> Result<(), ()> {
        let len = u32::try_from(d.data.len()).unwrap_or(u32::MAX);
        if d.ttt == RESERVED_TAG {
            if self.unsolicited_done {
                self.fault.get_or_insert(DataFault::UnexpectedUnsolicited);
                return Ok(());
            }
            let end = d.buffer_offset.saturating_add(len);
            let ok = d.data_sn == self.unsolicited_data_sn
                && d.buffer_offset == self.unsolicited_received
                && end <= self.unsolicited_end
                && (!d.final_bit || end == self.unsolicited_end);
            self.unsolicited_data_sn = self.unsolicited_data_sn.wrapping_add(1);
            self.unsolicited_received = self.unsolicited_received.saturating_add(len);
            if d.final_bit || self.unsolicited_received >= self.unsolicited_end {
                self.unsolicited_done = true;
            }
            if !ok {
                self.fault.get_or_insert(DataFault::SequenceError);
            } else if self.fault.is_none() {
                self.chunks.push((d.buffer_offset, d.data.clone()));
                self.received += len;
                self.reserved += len as usize;
            }
            return Ok(());
        }
        let Some(pos) = self.r2ts.iter().position(|r| r.ttt == d.ttt) else {
            return Err(());
        };
        let r = &mut self.r2ts[pos];
        let end = r.received.saturating_add(len);
        // A final PDU that leaves part of the R2T unsent is a sequence error too.
        let ok = d.data_sn == r.next_data_sn
            && d.buffer_offset == r.offset + r.received
            && end <= r.len
            && (!d.final_bit || end == r.len);
        r.next_data_sn = r.next_data_sn.wrapping_add(1);
        r.received = r.received.saturating_add(len);
        let done = d.final_bit || r.received >= r.len;
        if done {
            self.r2ts.remove(pos);
        }
        if !ok {
            self.fault.get_or_insert(DataFault::SequenceError);
        } else if self.fault.is_none() {
            self.chunks.push((d.buffer_offset, d.data.clone()));
            self.received += len;
        }
        Ok(())
    }

    /// The data in offset order, if it covers `[0, received)` without holes.
    pub(crate) fn take_data(&mut self) -> Option<super::Data> {
        self.chunks.sort_by_key(|(o, _)| *o);
        let mut next = 0u32;
        let mut out = super::Data::with_capacity(self.chunks.len());
        for (off, b) in self.chunks.drain(..) {
            if off != next {
                return None;
            }
            next += u32::try_from(b.len()).ok()?;
            out.push(b);
        }
        (next == self.received).then_some(out)
    }
}
