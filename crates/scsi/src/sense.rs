//! Sense data (SPC-4 section 4.5): keys, additional sense codes, fixed and descriptor formats.

use bytes::Bytes;

/// SCSI status codes (SAM-5 section 5.3).
pub mod status {
    /// GOOD.
    pub const GOOD: u8 = 0x00;
    /// CHECK CONDITION.
    pub const CHECK_CONDITION: u8 = 0x02;
    /// CONDITION MET.
    pub const CONDITION_MET: u8 = 0x04;
    /// BUSY.
    pub const BUSY: u8 = 0x08;
    /// RESERVATION CONFLICT.
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    /// TASK SET FULL.
    pub const TASK_SET_FULL: u8 = 0x28;
    /// TASK ABORTED.
    pub const TASK_ABORTED: u8 = 0x40;
}

/// Sense keys (SPC-4 table 48).
pub mod key {
    /// NO SENSE.
    pub const NO_SENSE: u8 = 0x0;
    /// NOT READY.
    pub const NOT_READY: u8 = 0x2;
    /// MEDIUM ERROR.
    pub const MEDIUM_ERROR: u8 = 0x3;
    /// HARDWARE ERROR.
    pub const HARDWARE_ERROR: u8 = 0x4;
    /// ILLEGAL REQUEST.
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    /// UNIT ATTENTION.
    pub const UNIT_ATTENTION: u8 = 0x6;
    /// DATA PROTECT.
    pub const DATA_PROTECT: u8 = 0x7;
    /// COPY ABORTED.
    pub const COPY_ABORTED: u8 = 0xa;
    /// ABORTED COMMAND.
    pub const ABORTED_COMMAND: u8 = 0xb;
    /// MISCOMPARE.
    pub const MISCOMPARE: u8 = 0xe;
}

/// A sense key with its additional sense code and qualifier, plus the optional INFORMATION
/// field and sense-key-specific field pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    /// Sense key.
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
    /// INFORMATION field (e.g., the miscompare offset).
    pub information: Option<u64>,
    /// Field pointer: (C/D: true for CDB, byte, bit) for ILLEGAL REQUEST.
    pub field: Option<(bool, u16, Option<u8>)>,
}

macro_rules! senses {
    ($($(#[$m:meta])* $name:ident = ($k:expr, $asc:expr, $ascq:expr);)*) => {
        impl Sense {
            $($(#[$m])* pub const $name: Self = Self::new($k, $asc, $ascq);)*
        }
    };
}

senses! {
    /// NO SENSE, no additional information.
    NO_SENSE = (key::NO_SENSE, 0x00, 0x00);
    /// INVALID COMMAND OPERATION CODE.
    INVALID_OPCODE = (key::ILLEGAL_REQUEST, 0x20, 0x00);
    /// LOGICAL BLOCK ADDRESS OUT OF RANGE.
    LBA_OUT_OF_RANGE = (key::ILLEGAL_REQUEST, 0x21, 0x00);
    /// INVALID FIELD IN CDB.
    INVALID_FIELD_IN_CDB = (key::ILLEGAL_REQUEST, 0x24, 0x00);
    /// LOGICAL UNIT NOT SUPPORTED (25/00; note 21/00 is LBA OUT OF RANGE).
    LUN_NOT_SUPPORTED = (key::ILLEGAL_REQUEST, 0x25, 0x00);
    /// INVALID FIELD IN PARAMETER LIST.
    INVALID_FIELD_IN_PARAMETER_LIST = (key::ILLEGAL_REQUEST, 0x26, 0x00);
    /// PARAMETER LIST LENGTH ERROR.
    PARAMETER_LIST_LENGTH_ERROR = (key::ILLEGAL_REQUEST, 0x1a, 0x00);
    /// SAVING PARAMETERS NOT SUPPORTED.
    SAVING_PARAMETERS_NOT_SUPPORTED = (key::ILLEGAL_REQUEST, 0x39, 0x00);
    /// INVALID RELEASE OF PERSISTENT RESERVATION.
    INVALID_RELEASE_OF_PR = (key::ILLEGAL_REQUEST, 0x26, 0x04);
    /// INSUFFICIENT REGISTRATION RESOURCES.
    INSUFFICIENT_REGISTRATION_RESOURCES = (key::ILLEGAL_REQUEST, 0x55, 0x04);
    /// MEDIUM REMOVAL PREVENTED.
    MEDIUM_REMOVAL_PREVENTED = (key::ILLEGAL_REQUEST, 0x53, 0x02);
    /// WRITE PROTECTED.
    WRITE_PROTECTED = (key::DATA_PROTECT, 0x27, 0x00);
    /// SPACE ALLOCATION FAILED WRITE PROTECT.
    SPACE_ALLOCATION_FAILED = (key::DATA_PROTECT, 0x27, 0x07);
    /// UNRECOVERED READ ERROR.
    UNRECOVERED_READ_ERROR = (key::MEDIUM_ERROR, 0x11, 0x00);
    /// WRITE ERROR.
    WRITE_ERROR = (key::MEDIUM_ERROR, 0x0c, 0x00);
    /// MISCOMPARE DURING VERIFY OPERATION.
    MISCOMPARE_DURING_VERIFY = (key::MISCOMPARE, 0x1d, 0x00);
    /// POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.
    POWER_ON_RESET = (key::UNIT_ATTENTION, 0x29, 0x00);
    /// BUS DEVICE RESET FUNCTION OCCURRED (a LOGICAL UNIT RESET).
    BUS_DEVICE_RESET = (key::UNIT_ATTENTION, 0x29, 0x03);
    /// I_T NEXUS LOSS OCCURRED.
    IT_NEXUS_LOSS = (key::UNIT_ATTENTION, 0x29, 0x07);
    /// MODE PARAMETERS CHANGED.
    MODE_PARAMETERS_CHANGED = (key::UNIT_ATTENTION, 0x2a, 0x01);
    /// RESERVATIONS PREEMPTED.
    RESERVATIONS_PREEMPTED = (key::UNIT_ATTENTION, 0x2a, 0x03);
    /// RESERVATIONS RELEASED.
    RESERVATIONS_RELEASED = (key::UNIT_ATTENTION, 0x2a, 0x04);
    /// REGISTRATIONS PREEMPTED.
    REGISTRATIONS_PREEMPTED = (key::UNIT_ATTENTION, 0x2a, 0x05);
    /// ASYMMETRIC ACCESS STATE CHANGED.
    ASYMMETRIC_ACCESS_STATE_CHANGED = (key::UNIT_ATTENTION, 0x2a, 0x06);
    /// CAPACITY DATA HAS CHANGED.
    CAPACITY_DATA_CHANGED = (key::UNIT_ATTENTION, 0x2a, 0x09);
    /// REPORTED LUNS DATA HAS CHANGED.
    REPORTED_LUNS_DATA_CHANGED = (key::UNIT_ATTENTION, 0x3f, 0x0e);
    /// COMMANDS CLEARED BY ANOTHER INITIATOR.
    COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = (key::UNIT_ATTENTION, 0x2f, 0x00);
    /// LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS.
    SANITIZE_IN_PROGRESS = (key::NOT_READY, 0x04, 0x1b);
    /// LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED (stopped unit).
    NOT_READY_INITIALIZING_COMMAND_REQUIRED = (key::NOT_READY, 0x04, 0x02);
    /// MEDIUM NOT PRESENT - TRAY OPEN.
    MEDIUM_NOT_PRESENT_TRAY_OPEN = (key::NOT_READY, 0x3a, 0x02);
    /// LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE.
    STANDBY = (key::NOT_READY, 0x04, 0x0b);
    /// LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE.
    UNAVAILABLE = (key::NOT_READY, 0x04, 0x0c);
    /// LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION.
    ALUA_TRANSITIONING = (key::NOT_READY, 0x04, 0x0a);
    /// LOGICAL UNIT NOT READY, OFFLINE.
    OFFLINE = (key::NOT_READY, 0x04, 0x12);
    /// INTERNAL TARGET FAILURE.
    INTERNAL_TARGET_FAILURE = (key::HARDWARE_ERROR, 0x44, 0x00);
    /// COPY TARGET DEVICE NOT REACHABLE.
    COPY_TARGET_NOT_REACHABLE = (key::COPY_ABORTED, 0x0d, 0x02);
    /// UNREACHABLE COPY TARGET.
    UNREACHABLE_COPY_TARGET = (key::COPY_ABORTED, 0x08, 0x04);
    /// TOO MANY TARGET DESCRIPTORS.
    TOO_MANY_TARGET_DESCRIPTORS = (key::ILLEGAL_REQUEST, 0x26, 0x06);
    /// TOO MANY SEGMENT DESCRIPTORS.
    TOO_MANY_SEGMENT_DESCRIPTORS = (key::ILLEGAL_REQUEST, 0x26, 0x08);
    /// UNSUPPORTED TARGET DESCRIPTOR TYPE CODE.
    UNSUPPORTED_TARGET_DESCRIPTOR = (key::ILLEGAL_REQUEST, 0x26, 0x07);
    /// UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE.
    UNSUPPORTED_SEGMENT_DESCRIPTOR = (key::ILLEGAL_REQUEST, 0x26, 0x09);
    /// INVALID FIELD IN COMMAND INFORMATION UNIT.
    INVALID_FIELD_IN_INFORMATION_UNIT = (key::ILLEGAL_REQUEST, 0x0e, 0x03);
}

impl Sense {
    /// A sense triple.
    pub const fn new(key: u8, asc: u8, ascq: u8) -> Self {
        Self {
            key,
            asc,
            ascq,
            information: None,
            field: None,
        }
    }

    /// With the INFORMATION field set.
    pub const fn with_information(mut self, info: u64) -> Self {
        self.information = Some(info);
        self
    }

    /// With a field pointer into the CDB (`cdb = true`) or parameter list.
    pub const fn with_field(mut self, cdb: bool, byte: u16, bit: Option<u8>) -> Self {
        self.field = Some((cdb, byte, bit));
        self
    }

    /// Encode in fixed (0x70) or descriptor (0x72) format.
    pub fn encode(&self, descriptor: bool) -> Bytes {
        if descriptor {
            self.descriptor_format()
        } else {
            self.fixed_format()
        }
    }

    fn sense_key_specific(&self) -> Option<[u8; 3]> {
        let (cdb, byte, bit) = self.field?;
        let mut b0 = 0x80 | if cdb { 0x40 } else { 0 };
        if let Some(bit) = bit {
            b0 |= 0x08 | (bit & 7);
        }
        Some([b0, (byte >> 8) as u8, byte as u8])
    }

    fn fixed_format(&self) -> Bytes {
        let mut s = vec![0u8; 18];
        s[0] = 0x70;
        s[2] = self.key & 0x0f;
        if let Some(info) = self.information {
            s[0] |= 0x80;
            s[3..7].copy_from_slice(&(info as u32).to_be_bytes());
        }
        s[7] = 10;
        s[12] = self.asc;
        s[13] = self.ascq;
        if let Some(sks) = self.sense_key_specific() {
            s[15..18].copy_from_slice(&sks);
        }
        Bytes::from(s)
    }

    fn descriptor_format(&self) -> Bytes {
        let mut s = vec![0x72, self.key & 0x0f, self.asc, self.ascq, 0, 0, 0, 0];
        if let Some(info) = self.information {
            s.extend_from_slice(&[0x00, 0x0a, 0x80, 0x00]);
            s.extend_from_slice(&info.to_be_bytes());
        }
        if let Some(sks) = self.sense_key_specific() {
            s.extend_from_slice(&[0x02, 0x06, 0x00, 0x00]);
            s.extend_from_slice(&sks);
            s.push(0);
        }
        s[7] = (s.len() - 8) as u8;
        Bytes::from(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_bytes() {
        let s = Sense::LBA_OUT_OF_RANGE.encode(false);
        assert_eq!(
            &s[..],
            &[
                0x70, 0, 0x05, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x21, 0x00, 0, 0, 0, 0
            ]
        );
        let s = Sense::MISCOMPARE_DURING_VERIFY
            .with_information(0x1234)
            .encode(false);
        assert_eq!(&s[..8], &[0xf0, 0, 0x0e, 0, 0, 0x12, 0x34, 0x0a]);
        assert_eq!((s[12], s[13]), (0x1d, 0x00));
        let s = Sense::INVALID_FIELD_IN_CDB
            .with_field(true, 2, Some(3))
            .encode(false);
        assert_eq!(&s[15..18], &[0xcb, 0x00, 0x02]);
    }

    #[test]
    fn descriptor_format_bytes() {
        let s = Sense::LUN_NOT_SUPPORTED.encode(true);
        assert_eq!(&s[..], &[0x72, 0x05, 0x25, 0x00, 0, 0, 0, 0]);
        let s = Sense::MISCOMPARE_DURING_VERIFY
            .with_information(7)
            .encode(true);
        assert_eq!(
            &s[..],
            &[
                0x72, 0x0e, 0x1d, 0, 0, 0, 0, 12, 0, 0x0a, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 7
            ]
        );
    }
}
