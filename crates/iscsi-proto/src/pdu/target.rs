//! PDUs sent by the target (RFC 7143 section 11, target side).

use bytes::Bytes;

use super::{BHS_LEN, Opcode, RESERVED_TAG, arr8, be16, be32, put16, put32};

/// NOP-In (RFC 7143 section 11.19).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NopIn {
    /// LUN field.
    pub lun: u64,
    /// Initiator Task Tag (0xffffffff for a target-initiated ping).
    pub itt: u32,
    /// Target Transfer Tag (a real tag when the target wants an answer).
    pub ttt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Ping data.
    pub data: Bytes,
}

impl NopIn {
    pub(super) fn parse(b: &[u8; BHS_LEN], data: Bytes) -> Self {
        Self {
            lun: u64::from_be_bytes(arr8(b, 8)),
            itt: be32(b, 16),
            ttt: be32(b, 20),
            stat_sn: be32(b, 24),
            exp_cmd_sn: be32(b, 28),
            max_cmd_sn: be32(b, 32),
            data,
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = Opcode::NOP_IN.0;
        b[1] = 0x80;
        b[8..16].copy_from_slice(&self.lun.to_be_bytes());
        put32(b, 16, self.itt);
        put32(b, 20, self.ttt);
        put32(b, 24, self.stat_sn);
        put32(b, 28, self.exp_cmd_sn);
        put32(b, 32, self.max_cmd_sn);
        Bytes::new()
    }
}

/// SCSI Response (RFC 7143 section 11.4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScsiResponse {
    /// o bit: bidirectional read residual overflow.
    pub bidi_overflow: bool,
    /// u bit: bidirectional read residual underflow.
    pub bidi_underflow: bool,
    /// O bit: residual overflow.
    pub overflow: bool,
    /// U bit: residual underflow.
    pub underflow: bool,
    /// iSCSI service response (0 command completed at target).
    pub response: u8,
    /// SCSI status.
    pub status: u8,
    /// Initiator Task Tag.
    pub itt: u32,
    /// SNACK Tag.
    pub snack_tag: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// ExpDataSN: number of Data-In PDUs sent for the command.
    pub exp_data_sn: u32,
    /// Bidirectional read residual count.
    pub bidi_residual: u32,
    /// Residual count.
    pub residual: u32,
    /// Data segment: 2-byte SenseLength, sense data, response data.
    pub data: Bytes,
}

impl ScsiResponse {
    pub(super) fn parse(b: &[u8; BHS_LEN], data: Bytes) -> Self {
        Self {
            bidi_overflow: b[1] & 0x10 != 0,
            bidi_underflow: b[1] & 0x08 != 0,
            overflow: b[1] & 0x04 != 0,
            underflow: b[1] & 0x02 != 0,
            response: b[2],
            status: b[3],
            itt: be32(b, 16),
            snack_tag: be32(b, 20),
            stat_sn: be32(b, 24),
            exp_cmd_sn: be32(b, 28),
            max_cmd_sn: be32(b, 32),
            exp_data_sn: be32(b, 36),
            bidi_residual: be32(b, 40),
            residual: be32(b, 44),
            data,
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = Opcode::SCSI_RESPONSE.0;
        b[1] = 0x80
            | (if self.bidi_overflow { 0x10 } else { 0 })
            | (if self.bidi_underflow { 0x08 } else { 0 })
            | (if self.overflow { 0x04 } else { 0 })
            | (if self.underflow { 0x02 } else { 0 });
        b[2] = self.response;
        b[3] = self.status;
        put32(b, 16, self.itt);
        put32(b, 20, self.snack_tag);
        put32(b, 24, self.stat_sn);
        put32(b, 28, self.exp_cmd_sn);
        put32(b, 32, self.max_cmd_sn);
        put32(b, 36, self.exp_data_sn);
        put32(b, 40, self.bidi_residual);
        put32(b, 44, self.residual);
        Bytes::new()
    }

    /// The sense data carried in the data segment, if any.
    pub fn sense(&self) -> Option<&[u8]> {
        if self.data.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([self.data[0], self.data[1]]));
        self.data.get(2..2 + len).filter(|s| !s.is_empty())
    }
}

/// Task Management Function Response (RFC 7143 section 11.6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    /// Response code (0 function complete, 1 task does not exist, ...).
    pub response: u8,
    /// Initiator Task Tag of the request.
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
}

impl TaskMgmtResponse {
    pub(super) fn parse(b: &[u8; BHS_LEN]) -> Self {
        Self {
            response: b[2],
            itt: be32(b, 16),
            stat_sn: be32(b, 24),
            exp_cmd_sn: be32(b, 28),
            max_cmd_sn: be32(b, 32),
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = Opcode::TASK_MGMT_RESPONSE.0;
        b[1] = 0x80;
        b[2] = self.response;
        put32(b, 16, self.itt);
        put32(b, 24, self.stat_sn);
        put32(b, 28, self.exp_cmd_sn);
        put32(b, 32, self.max_cmd_sn);
        Bytes::new()
    }
}

/// Login Response (RFC 7143 section 11.13).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoginResponse {
    /// T bit.
    pub transit: bool,
    /// C bit.
    pub cont: bool,
    /// Current stage.
    pub csg: u8,
    /// Next stage.
    pub nsg: u8,
    /// Version-max.
    pub version_max: u8,
    /// Version-active.
    pub version_active: u8,
    /// Initiator Session ID (echoed).
    pub isid: [u8; 6],
    /// TSIH (set in the final response of a leading login).
    pub tsih: u16,
    /// Initiator Task Tag (echoed).
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Status-Class.
    pub status_class: u8,
    /// Status-Detail.
    pub status_detail: u8,
    /// Text key=value pairs.
    pub data: Bytes,
}

impl LoginResponse {
    pub(super) fn parse(b: &[u8; BHS_LEN], data: Bytes) -> Self {
        let mut isid = [0u8; 6];
        isid.copy_from_slice(&b[8..14]);
        Self {
            transit: b[1] & 0x80 != 0,
            cont: b[1] & 0x40 != 0,
            csg: (b[1] >> 2) & 0x03,
            nsg: b[1] & 0x03,
            version_max: b[2],
            version_active: b[3],
            isid,
            tsih: be16(b, 14),
            itt: be32(b, 16),
            stat_sn: be32(b, 24),
            exp_cmd_sn: be32(b, 28),
            max_cmd_sn: be32(b, 32),
            status_class: b[36],
            status_detail: b[37],
            data,
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = Opcode::LOGIN_RESPONSE.0;
        b[1] = (if self.transit { 0x80 } else { 0 })
            | (if self.cont { 0x40 } else { 0 })
            | ((self.csg & 3) << 2)
            | (self.nsg & 3);
        b[2] = self.version_max;
        b[3] = self.version_active;
        b[8..14].copy_from_slice(&self.isid);
        put16(b, 14, self.tsih);
        put32(b, 16, self.itt);
        put32(b, 24, self.stat_sn);
        put32(b, 28, self.exp_cmd_sn);
        put32(b, 32, self.max_cmd_sn);
        b[36] = self.status_class;
        b[37] = self.status_detail;
        Bytes::new()
    }
}

/// Text Response (RFC 7143 section 11.11).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextResponse {
    /// F bit.
    pub final_bit: bool,
    /// C bit.
    pub cont: bool,
    /// LUN field.
    pub lun: u64,
    /// Initiator Task Tag (echoed).
    pub itt: u32,
    /// Target Transfer Tag (0xffffffff when the exchange is complete).
    pub ttt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Text key=value pairs.
    pub data: Bytes,
}

impl TextResponse {
    pub(super) fn parse(b: &[u8; BHS_LEN], data: Bytes) -> Self {
        Self {
            final_bit: b[1] & 0x80 != 0,
            cont: b[1] & 0x40 != 0,
            lun: u64::from_be_bytes(arr8(b, 8)),
            itt: be32(b, 16),
            ttt: be32(b, 20),
            stat_sn: be32(b, 24),
            exp_cmd_sn: be32(b, 28),
            max_cmd_sn: be32(b, 32),
            data,
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = Opcode::TEXT_RESPONSE.0;
        b[1] = (if self.final_bit { 0x80 } else { 0 }) | (if self.cont { 0x40 } else { 0 });
        b[8..16].copy_from_slice(&self.lun.to_be_bytes());
        put32(b, 16, self.itt);
        put32(b, 20, self.ttt);
        put32(b, 24, self.stat_sn);
        put32(b, 28, self.exp_cmd_sn);
        put32(b, 32, self.max_cmd_sn);
        Bytes::new()
    }
}

/// SCSI Data-In (RFC 7143 section 11.7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataIn {
    /// F bit.
    pub final_bit: bool,
    /// A bit (acknowledge request, ERL > 0 only).
    pub ack: bool,
    /// O bit (valid with S).
    pub overflow: bool,
    /// U bit (valid with S).
    pub underflow: bool,
    /// The S bit and the status: `Some(status)` when this PDU carries the command's status.
    pub status: Option<u8>,
    /// LUN field.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag.
    pub ttt: u32,
    /// StatSN (valid with S).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN.
    pub data_sn: u32,
    /// Buffer offset.
    pub buffer_offset: u32,
    /// Residual count (valid with S).
    pub residual: u32,
    /// The data.
    pub data: Bytes,
}

impl DataIn {
    pub(super) fn parse(b: &[u8; BHS_LEN], data: Bytes) -> Self {
        Self {
            final_bit: b[1] & 0x80 != 0,
            ack: b[1] & 0x40 != 0,
            overflow: b[1] & 0x04 != 0,
            underflow: b[1] & 0x02 != 0,
            status: (b[1] & 0x01 != 0).then_some(b[3]),
            lun: u64::from_be_bytes(arr8(b, 8)),
            itt: be32(b, 16),
            ttt: be32(b, 20),
            stat_sn: be32(b, 24),
            exp_cmd_sn: be32(b, 28),
            max_cmd_sn: be32(b, 32),
            data_sn: be32(b, 36),
            buffer_offset: be32(b, 40),
            residual: be32(b, 44),
            data,
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = Opcode::DATA_IN.0;
        b[1] = (if self.final_bit { 0x80 } else { 0 })
            | (if self.ack { 0x40 } else { 0 })
            | (if self.overflow { 0x04 } else { 0 })
            | (if self.underflow { 0x02 } else { 0 })
            | (if self.status.is_some() { 0x01 } else { 0 });
        b[3] = self.status.unwrap_or(0);
        b[8..16].copy_from_slice(&self.lun.to_be_bytes());
        put32(b, 16, self.itt);
        put32(b, 20, self.ttt);
        put32(b, 24, self.stat_sn);
        put32(b, 28, self.exp_cmd_sn);
        put32(b, 32, self.max_cmd_sn);
        put32(b, 36, self.data_sn);
        put32(b, 40, self.buffer_offset);
        put32(b, 44, self.residual);
        Bytes::new()
    }
}

/// Logout Response (RFC 7143 section 11.15).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogoutResponse {
    /// Response: 0 closed successfully, 1 CID not found, 2 recovery not supported, 3 cleanup
    /// failed.
    pub response: u8,
    /// Initiator Task Tag.
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Time2Wait.
    pub time2wait: u16,
    /// Time2Retain.
    pub time2retain: u16,
}

impl LogoutResponse {
    pub(super) fn parse(b: &[u8; BHS_LEN]) -> Self {
        Self {
            response: b[2],
            itt: be32(b, 16),
            stat_sn: be32(b, 24),
            exp_cmd_sn: be32(b, 28),
            max_cmd_sn: be32(b, 32),
            time2wait: be16(b, 40),
            time2retain: be16(b, 42),
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = Opcode::LOGOUT_RESPONSE.0;
        b[1] = 0x80;
        b[2] = self.response;
        put32(b, 16, self.itt);
        put32(b, 24, self.stat_sn);
        put32(b, 28, self.exp_cmd_sn);
        put32(b, 32, self.max_cmd_sn);
        put16(b, 40, self.time2wait);
        put16(b, 42, self.time2retain);
        Bytes::new()
    }
}

/// Ready To Transfer (RFC 7143 section 11.8).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct R2t {
    /// LUN field.
    pub lun: u64,
    /// Initiator Task Tag of the command.
    pub itt: u32,
    /// Target Transfer Tag the Data-Out PDUs must carry.
    pub ttt: u32,
    /// StatSN (next StatSN, not advanced).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// R2TSN.
    pub r2t_sn: u32,
    /// Buffer offset requested.
    pub buffer_offset: u32,
    /// Desired Data Transfer Length.
    pub desired_len: u32,
}

impl R2t {
    pub(super) fn parse(b: &[u8; BHS_LEN]) -> Self {
        Self {
            lun: u64::from_be_bytes(arr8(b, 8)),
            itt: be32(b, 16),
            ttt: be32(b, 20),
            stat_sn: be32(b, 24),
            exp_cmd_sn: be32(b, 28),
            max_cmd_sn: be32(b, 32),
            r2t_sn: be32(b, 36),
            buffer_offset: be32(b, 40),
            desired_len: be32(b, 44),
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = Opcode::R2T.0;
        b[1] = 0x80;
        b[8..16].copy_from_slice(&self.lun.to_be_bytes());
        put32(b, 16, self.itt);
        put32(b, 20, self.ttt);
        put32(b, 24, self.stat_sn);
        put32(b, 28, self.exp_cmd_sn);
        put32(b, 32, self.max_cmd_sn);
        put32(b, 36, self.r2t_sn);
        put32(b, 40, self.buffer_offset);
        put32(b, 44, self.desired_len);
        Bytes::new()
    }
}

/// Asynchronous Message (RFC 7143 section 11.9).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AsyncMessage {
    /// LUN field.
    pub lun: u64,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// AsyncEvent (0 SCSI event, 1 logout request, 2 connection drop, 3 session drop,
    /// 4 negotiation request, 5 task termination).
    pub event: u8,
    /// AsyncVCode.
    pub vcode: u8,
    /// Parameter1.
    pub param1: u16,
    /// Parameter2.
    pub param2: u16,
    /// Parameter3.
    pub param3: u16,
    /// Sense data or iSCSI event data.
    pub data: Bytes,
}

impl AsyncMessage {
    pub(super) fn parse(b: &[u8; BHS_LEN], data: Bytes) -> Self {
        Self {
            lun: u64::from_be_bytes(arr8(b, 8)),
            stat_sn: be32(b, 24),
            exp_cmd_sn: be32(b, 28),
            max_cmd_sn: be32(b, 32),
            event: b[36],
            vcode: b[37],
            param1: be16(b, 38),
            param2: be16(b, 40),
            param3: be16(b, 42),
            data,
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = Opcode::ASYNC_MESSAGE.0;
        b[1] = 0x80;
        b[8..16].copy_from_slice(&self.lun.to_be_bytes());
        put32(b, 16, RESERVED_TAG);
        put32(b, 24, self.stat_sn);
        put32(b, 28, self.exp_cmd_sn);
        put32(b, 32, self.max_cmd_sn);
        b[36] = self.event;
        b[37] = self.vcode;
        put16(b, 38, self.param1);
        put16(b, 40, self.param2);
        put16(b, 42, self.param3);
        Bytes::new()
    }
}

/// Reject (RFC 7143 section 11.17). The data segment is the header of the rejected PDU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reject {
    /// Reason code (see [`crate::RejectReason`]).
    pub reason: u8,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN/R2TSN (for SNACK rejects).
    pub data_sn: u32,
    /// The complete header of the rejected PDU.
    pub data: Bytes,
}

impl Reject {
    pub(super) fn parse(b: &[u8; BHS_LEN], data: Bytes) -> Self {
        Self {
            reason: b[2],
            stat_sn: be32(b, 24),
            exp_cmd_sn: be32(b, 28),
            max_cmd_sn: be32(b, 32),
            data_sn: be32(b, 36),
            data,
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = Opcode::REJECT.0;
        b[1] = 0x80;
        b[2] = self.reason;
        put32(b, 16, RESERVED_TAG);
        put32(b, 24, self.stat_sn);
        put32(b, 28, self.exp_cmd_sn);
        put32(b, 32, self.max_cmd_sn);
        put32(b, 36, self.data_sn);
        Bytes::new()
    }
}
