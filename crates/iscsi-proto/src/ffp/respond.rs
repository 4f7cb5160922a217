//! Completing a task: Data-In segmentation with status in the final PDU (phase collapse),
//! residual overflow and underflow, and the SCSI Response.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Connection, Output, ScsiCompletion};
use crate::pdu::{DataIn, Pdu, RESERVED_TAG, ScsiResponse};

/// SCSI status GOOD.
const GOOD: u8 = 0x00;

/// Residual of a transfer: (underflow, overflow, count).
fn residual(expected: u32, actual: u32) -> (bool, bool, u32) {
    match actual.cmp(&expected) {
        std::cmp::Ordering::Less => (true, false, expected - actual),
        std::cmp::Ordering::Greater => (false, true, actual - expected),
        std::cmp::Ordering::Equal => (false, false, 0),
    }
}

impl Connection {
    /// The executor finished a task.
    pub fn complete(&mut self, itt: u32, c: ScsiCompletion) {
        let Some(task) = self.retire(itt) else { return };
        if !task.aborted {
            self.respond(&task.cmd, task.r2t_sn, c);
        }
        self.flush_tmfs();
        self.try_finish_logout();
        self.issue_r2ts();
        self.schedule();
    }

    fn respond(&mut self, cmd: &crate::pdu::ScsiCommand, r2t_count: u32, c: ScsiCompletion) {
        let edtl = cmd.expected_len;
        let produced = u32::try_from(c.data.len()).unwrap_or(u32::MAX);
        let (under, over, count) = if cmd.read {
            residual(edtl, produced)
        } else if cmd.write {
            residual(edtl, c.write_len)
        } else if produced > 0 {
            // Data without the R bit is never sent.
            (false, true, produced)
        } else {
            residual(edtl, 0)
        };
        let data = if cmd.read {
            c.data.slice(..produced.min(edtl) as usize)
        } else {
            Bytes::new()
        };
        let collapse = c.status == GOOD && c.sense.is_empty() && !data.is_empty();

        let max = (self.params.max_xmit_data_segment_length as usize).max(512);
        let burst = (self.params.max_burst_length as usize).max(max);
        let mut data_sn = 0u32;
        let mut offset = 0usize;
        while offset < data.len() {
            let len = max.min(data.len() - offset).min(burst - offset % burst);
            let end = offset + len;
            let last = end == data.len();
            let status = (last && collapse).then_some(c.status);
            let stat_sn = if status.is_some() {
                self.next_stat_sn()
            } else {
                self.stat_sn
            };
            self.outputs.push_back(Output::Send(Pdu::DataIn(DataIn {
                final_bit: last || end.is_multiple_of(burst),
                ack: false,
                overflow: status.is_some() && over,
                underflow: status.is_some() && under,
                status,
                lun: cmd.lun,
                itt: cmd.itt,
                ttt: RESERVED_TAG,
                stat_sn,
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn,
                data_sn,
                buffer_offset: offset as u32,
                residual: if status.is_some() { count } else { 0 },
                data: data.slice(offset..end),
            })));
            data_sn = data_sn.wrapping_add(1);
            offset = end;
        }
        if collapse {
            return;
        }
        let payload = if c.sense.is_empty() {
            Bytes::new()
        } else {
            let mut b = BytesMut::with_capacity(2 + c.sense.len());
            b.put_u16(c.sense.len() as u16);
            b.put_slice(&c.sense);
            b.freeze()
        };
        let stat_sn = self.next_stat_sn();
        self.outputs
            .push_back(Output::Send(Pdu::ScsiResponse(ScsiResponse {
                bidi_overflow: false,
                bidi_underflow: false,
                overflow: over,
                underflow: under,
                response: 0,
                status: c.status,
                itt: cmd.itt,
                snack_tag: 0,
                stat_sn,
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn,
                exp_data_sn: if cmd.read { data_sn } else { r2t_count },
                bidi_residual: 0,
                residual: count,
                data: payload,
            })));
    }
}
