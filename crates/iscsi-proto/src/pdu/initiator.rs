//! PDUs sent by the initiator (RFC 7143 sections 11.1 to 11.16, initiator side).

use bytes::Bytes;

use super::{Ahs, BHS_LEN, Opcode, arr8, be16, be32, op_byte, put16, put32};
use crate::error::PduError;

/// NOP-Out (RFC 7143 section 11.18).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NopOut {
    /// I bit.
    pub immediate: bool,
    /// LUN field.
    pub lun: u64,
    /// Initiator Task Tag (0xffffffff when answering a target ping).
    pub itt: u32,
    /// Target Transfer Tag (copied from a NOP-In ping, else 0xffffffff).
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// Ping data.
    pub data: Bytes,
}

impl NopOut {
    pub(super) fn parse(b: &[u8; BHS_LEN], data: Bytes) -> Self {
        Self {
            immediate: b[0] & 0x40 != 0,
            lun: u64::from_be_bytes(arr8(b, 8)),
            itt: be32(b, 16),
            ttt: be32(b, 20),
            cmd_sn: be32(b, 24),
            exp_stat_sn: be32(b, 28),
            data,
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = op_byte(Opcode::NOP_OUT, self.immediate);
        b[1] = 0x80;
        b[8..16].copy_from_slice(&self.lun.to_be_bytes());
        put32(b, 16, self.itt);
        put32(b, 20, self.ttt);
        put32(b, 24, self.cmd_sn);
        put32(b, 28, self.exp_stat_sn);
        Bytes::new()
    }
}

/// A CDB: 16 bytes held inline (no allocation per command), longer ones (an extended-CDB
/// AHS) on the heap.
pub type Cdb = smallvec::SmallVec<[u8; 16]>;

/// SCSI Command (RFC 7143 section 11.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScsiCommand {
    /// I bit.
    pub immediate: bool,
    /// F bit: no unsolicited Data-Out PDUs follow.
    pub final_bit: bool,
    /// R bit: data is expected from the target.
    pub read: bool,
    /// W bit: data is expected from the initiator.
    pub write: bool,
    /// ATTR: task attribute (0 untagged, 1 simple, 2 ordered, 3 head of queue, 4 ACA).
    pub attr: u8,
    /// LUN field.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Expected Data Transfer Length.
    pub expected_len: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// The whole CDB: the 16 header bytes plus any extended-CDB AHS bytes.
    pub cdb: Cdb,
    /// Bidirectional read expected length, from the AHS.
    pub bidi_read_len: Option<u32>,
    /// Immediate data.
    pub data: Bytes,
}

impl ScsiCommand {
    pub(super) fn parse(b: &[u8; BHS_LEN], ahs: &[Ahs], data: Bytes) -> Result<Self, PduError> {
        let mut bidi_read_len = None;
        let mut ext: Option<&Bytes> = None;
        for a in ahs {
            match a {
                Ahs::ExtendedCdb(e) => {
                    if ext.is_some() {
                        return Err(PduError::BadAhs);
                    }
                    ext = Some(e);
                }
                Ahs::BidiReadLength(l) => bidi_read_len = Some(*l),
            }
        }
        let mut cdb = Cdb::from_slice(&b[32..48]);
        if let Some(e) = ext {
            cdb.extend_from_slice(e);
        }
        Ok(Self {
            immediate: b[0] & 0x40 != 0,
            final_bit: b[1] & 0x80 != 0,
            read: b[1] & 0x40 != 0,
            write: b[1] & 0x20 != 0,
            attr: b[1] & 0x07,
            lun: u64::from_be_bytes(arr8(b, 8)),
            itt: be32(b, 16),
            expected_len: be32(b, 20),
            cmd_sn: be32(b, 24),
            exp_stat_sn: be32(b, 28),
            cdb,
            bidi_read_len,
            data,
        })
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = op_byte(Opcode::SCSI_COMMAND, self.immediate);
        b[1] = (if self.final_bit { 0x80 } else { 0 })
            | (if self.read { 0x40 } else { 0 })
            | (if self.write { 0x20 } else { 0 })
            | (self.attr & 0x07);
        b[8..16].copy_from_slice(&self.lun.to_be_bytes());
        put32(b, 16, self.itt);
        put32(b, 20, self.expected_len);
        put32(b, 24, self.cmd_sn);
        put32(b, 28, self.exp_stat_sn);
        let n = self.cdb.len().min(16);
        b[32..32 + n].copy_from_slice(&self.cdb[..n]);
        let mut ahs = Vec::new();
        if self.cdb.len() > 16 {
            ahs.push(Ahs::ExtendedCdb(Bytes::copy_from_slice(&self.cdb[16..])));
        }
        if let Some(l) = self.bidi_read_len {
            ahs.push(Ahs::BidiReadLength(l));
        }
        if ahs.is_empty() {
            Bytes::new()
        } else {
            Ahs::encode_all(&ahs)
        }
    }
}

/// Task Management Function Request (RFC 7143 section 11.5).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    /// I bit.
    pub immediate: bool,
    /// Function code (1 ABORT TASK ... 8 TASK REASSIGN).
    pub function: u8,
    /// LUN field.
    pub lun: u64,
    /// Initiator Task Tag of this request.
    pub itt: u32,
    /// Referenced Task Tag (ABORT TASK).
    pub referenced_task_tag: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// RefCmdSN.
    pub ref_cmd_sn: u32,
    /// ExpDataSN.
    pub exp_data_sn: u32,
}

impl TaskMgmtRequest {
    pub(super) fn parse(b: &[u8; BHS_LEN]) -> Self {
        Self {
            immediate: b[0] & 0x40 != 0,
            function: b[1] & 0x7f,
            lun: u64::from_be_bytes(arr8(b, 8)),
            itt: be32(b, 16),
            referenced_task_tag: be32(b, 20),
            cmd_sn: be32(b, 24),
            exp_stat_sn: be32(b, 28),
            ref_cmd_sn: be32(b, 32),
            exp_data_sn: be32(b, 36),
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = op_byte(Opcode::TASK_MGMT_REQUEST, self.immediate);
        b[1] = 0x80 | (self.function & 0x7f);
        b[8..16].copy_from_slice(&self.lun.to_be_bytes());
        put32(b, 16, self.itt);
        put32(b, 20, self.referenced_task_tag);
        put32(b, 24, self.cmd_sn);
        put32(b, 28, self.exp_stat_sn);
        put32(b, 32, self.ref_cmd_sn);
        put32(b, 36, self.exp_data_sn);
        Bytes::new()
    }
}

/// Login Request (RFC 7143 section 11.12).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoginRequest {
    /// T bit: the initiator is ready to move to `nsg`.
    pub transit: bool,
    /// C bit: the text is continued in the next PDU.
    pub cont: bool,
    /// Current stage (0 security, 1 operational).
    pub csg: u8,
    /// Next stage (1 operational, 3 full feature), valid when `transit`.
    pub nsg: u8,
    /// Version-max.
    pub version_max: u8,
    /// Version-min.
    pub version_min: u8,
    /// Initiator Session ID.
    pub isid: [u8; 6],
    /// Target Session Identifying Handle (0 for a new session).
    pub tsih: u16,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Connection ID.
    pub cid: u16,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// Text key=value pairs.
    pub data: Bytes,
}

impl LoginRequest {
    pub(super) fn parse(b: &[u8; BHS_LEN], data: Bytes) -> Self {
        let mut isid = [0u8; 6];
        isid.copy_from_slice(&b[8..14]);
        Self {
            transit: b[1] & 0x80 != 0,
            cont: b[1] & 0x40 != 0,
            csg: (b[1] >> 2) & 0x03,
            nsg: b[1] & 0x03,
            version_max: b[2],
            version_min: b[3],
            isid,
            tsih: be16(b, 14),
            itt: be32(b, 16),
            cid: be16(b, 20),
            cmd_sn: be32(b, 24),
            exp_stat_sn: be32(b, 28),
            data,
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = op_byte(Opcode::LOGIN_REQUEST, true);
        b[1] = (if self.transit { 0x80 } else { 0 })
            | (if self.cont { 0x40 } else { 0 })
            | ((self.csg & 3) << 2)
            | (self.nsg & 3);
        b[2] = self.version_max;
        b[3] = self.version_min;
        b[8..14].copy_from_slice(&self.isid);
        put16(b, 14, self.tsih);
        put32(b, 16, self.itt);
        put16(b, 20, self.cid);
        put32(b, 24, self.cmd_sn);
        put32(b, 28, self.exp_stat_sn);
        Bytes::new()
    }
}

/// Text Request (RFC 7143 section 11.10).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextRequest {
    /// I bit.
    pub immediate: bool,
    /// F bit.
    pub final_bit: bool,
    /// C bit.
    pub cont: bool,
    /// LUN field.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag (0xffffffff to start a new exchange).
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// Text key=value pairs.
    pub data: Bytes,
}

impl TextRequest {
    pub(super) fn parse(b: &[u8; BHS_LEN], data: Bytes) -> Self {
        Self {
            immediate: b[0] & 0x40 != 0,
            final_bit: b[1] & 0x80 != 0,
            cont: b[1] & 0x40 != 0,
            lun: u64::from_be_bytes(arr8(b, 8)),
            itt: be32(b, 16),
            ttt: be32(b, 20),
            cmd_sn: be32(b, 24),
            exp_stat_sn: be32(b, 28),
            data,
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = op_byte(Opcode::TEXT_REQUEST, self.immediate);
        b[1] = (if self.final_bit { 0x80 } else { 0 }) | (if self.cont { 0x40 } else { 0 });
        b[8..16].copy_from_slice(&self.lun.to_be_bytes());
        put32(b, 16, self.itt);
        put32(b, 20, self.ttt);
        put32(b, 24, self.cmd_sn);
        put32(b, 28, self.exp_stat_sn);
        Bytes::new()
    }
}

/// SCSI Data-Out (RFC 7143 section 11.7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataOut {
    /// F bit: last PDU of this sequence.
    pub final_bit: bool,
    /// LUN field.
    pub lun: u64,
    /// Initiator Task Tag of the command.
    pub itt: u32,
    /// Target Transfer Tag (from the R2T, or 0xffffffff for unsolicited data).
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// DataSN within the sequence.
    pub data_sn: u32,
    /// Offset of this data in the command's buffer.
    pub buffer_offset: u32,
    /// The data.
    pub data: Bytes,
}

impl DataOut {
    pub(super) fn parse(b: &[u8; BHS_LEN], data: Bytes) -> Self {
        Self {
            final_bit: b[1] & 0x80 != 0,
            lun: u64::from_be_bytes(arr8(b, 8)),
            itt: be32(b, 16),
            ttt: be32(b, 20),
            exp_stat_sn: be32(b, 28),
            data_sn: be32(b, 36),
            buffer_offset: be32(b, 40),
            data,
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = Opcode::DATA_OUT.0;
        b[1] = if self.final_bit { 0x80 } else { 0 };
        b[8..16].copy_from_slice(&self.lun.to_be_bytes());
        put32(b, 16, self.itt);
        put32(b, 20, self.ttt);
        put32(b, 28, self.exp_stat_sn);
        put32(b, 36, self.data_sn);
        put32(b, 40, self.buffer_offset);
        Bytes::new()
    }
}

/// Logout Request (RFC 7143 section 11.14).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogoutRequest {
    /// I bit.
    pub immediate: bool,
    /// Reason code: 0 close session, 1 close connection, 2 remove connection for recovery.
    pub reason: u8,
    /// Initiator Task Tag.
    pub itt: u32,
    /// CID of the connection to close (reasons 1 and 2).
    pub cid: u16,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

impl LogoutRequest {
    pub(super) fn parse(b: &[u8; BHS_LEN]) -> Self {
        Self {
            immediate: b[0] & 0x40 != 0,
            reason: b[1] & 0x7f,
            itt: be32(b, 16),
            cid: be16(b, 20),
            cmd_sn: be32(b, 24),
            exp_stat_sn: be32(b, 28),
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = op_byte(Opcode::LOGOUT_REQUEST, self.immediate);
        b[1] = 0x80 | (self.reason & 0x7f);
        put32(b, 16, self.itt);
        put16(b, 20, self.cid);
        put32(b, 24, self.cmd_sn);
        put32(b, 28, self.exp_stat_sn);
        Bytes::new()
    }
}

/// SNACK Request (RFC 7143 section 11.16).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnackRequest {
    /// Type: 0 Data/R2T, 1 Status, 2 DataACK, 3 R-Data.
    pub snack_type: u8,
    /// LUN field.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag or SNACK Tag.
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// BegRun.
    pub beg_run: u32,
    /// RunLength.
    pub run_length: u32,
}

impl SnackRequest {
    pub(super) fn parse(b: &[u8; BHS_LEN]) -> Self {
        Self {
            snack_type: b[1] & 0x0f,
            lun: u64::from_be_bytes(arr8(b, 8)),
            itt: be32(b, 16),
            ttt: be32(b, 20),
            exp_stat_sn: be32(b, 28),
            beg_run: be32(b, 40),
            run_length: be32(b, 44),
        }
    }

    pub(super) fn encode(&self, b: &mut [u8; BHS_LEN]) -> Bytes {
        b[0] = Opcode::SNACK_REQUEST.0;
        b[1] = 0x80 | (self.snack_type & 0x0f);
        b[8..16].copy_from_slice(&self.lun.to_be_bytes());
        put32(b, 16, self.itt);
        put32(b, 20, self.ttt);
        put32(b, 28, self.exp_stat_sn);
        put32(b, 40, self.beg_run);
        put32(b, 44, self.run_length);
        Bytes::new()
    }
}
