//! Round trips for every PDU type, and golden PDUs captured from real initiators.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::{PduError, frame::FrameDecoder, text::TextKeys};

fn rt(pdu: Pdu) {
    let (bhs, ahs, data) = pdu.encode();
    assert_eq!(bhs.opcode(), pdu.opcode());
    assert_eq!(bhs.data_segment_len(), data.len());
    assert_eq!(bhs.total_ahs_len(), ahs.len());
    let back = Pdu::parse(&bhs, &ahs, data).unwrap();
    assert_eq!(back, pdu);
}

#[test]
fn rt_nop_out() {
    rt(Pdu::NopOut(NopOut {
        immediate: true,
        lun: 0x0001_0000_0000_0000,
        itt: 0x11,
        ttt: RESERVED_TAG,
        cmd_sn: 5,
        exp_stat_sn: 9,
        data: Bytes::from_static(b"ping"),
    }));
}

#[test]
fn rt_scsi_command() {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x2a;
    cdb[8] = 8;
    rt(Pdu::ScsiCommand(ScsiCommand {
        immediate: false,
        final_bit: false,
        read: false,
        write: true,
        attr: 1,
        lun: 0,
        itt: 0xdead_beef,
        expected_len: 4096,
        cmd_sn: 100,
        exp_stat_sn: 7,
        cdb: Cdb::from_slice(&cdb),
        bidi_read_len: None,
        data: Bytes::from(vec![0xa5; 1024]),
    }));
}

#[test]
fn rt_scsi_command_with_extended_cdb_and_bidi() {
    rt(Pdu::ScsiCommand(ScsiCommand {
        final_bit: true,
        read: true,
        write: true,
        attr: 2,
        itt: 3,
        expected_len: 512,
        cdb: (0u8..32).collect(),
        bidi_read_len: Some(1024),
        ..Default::default()
    }));
}

#[test]
fn rt_task_mgmt() {
    rt(Pdu::TaskMgmtRequest(TaskMgmtRequest {
        immediate: true,
        function: 1,
        lun: 0x0002_0000_0000_0000,
        itt: 9,
        referenced_task_tag: 4,
        cmd_sn: 10,
        exp_stat_sn: 11,
        ref_cmd_sn: 8,
        exp_data_sn: 0,
    }));
    rt(Pdu::TaskMgmtResponse(TaskMgmtResponse {
        response: 5,
        itt: 9,
        stat_sn: 1,
        exp_cmd_sn: 2,
        max_cmd_sn: 3,
    }));
}

#[test]
fn rt_login() {
    let mut t = TextKeys::default();
    t.push("InitiatorName", "iqn.a");
    rt(Pdu::LoginRequest(LoginRequest {
        transit: true,
        cont: false,
        csg: 1,
        nsg: 3,
        version_max: 0,
        version_min: 0,
        isid: [0x80, 1, 2, 3, 4, 5],
        tsih: 0,
        itt: 1,
        cid: 2,
        cmd_sn: 0,
        exp_stat_sn: 0,
        data: t.encode(),
    }));
    rt(Pdu::LoginResponse(LoginResponse {
        transit: true,
        cont: false,
        csg: 1,
        nsg: 3,
        version_max: 0,
        version_active: 0,
        isid: [0x80, 1, 2, 3, 4, 5],
        tsih: 0x1234,
        itt: 1,
        stat_sn: 77,
        exp_cmd_sn: 1,
        max_cmd_sn: 64,
        status_class: 2,
        status_detail: 1,
        data: Bytes::new(),
    }));
}

#[test]
fn rt_text() {
    rt(Pdu::TextRequest(TextRequest {
        immediate: true,
        final_bit: true,
        cont: false,
        lun: 0,
        itt: 5,
        ttt: RESERVED_TAG,
        cmd_sn: 1,
        exp_stat_sn: 2,
        data: Bytes::from_static(b"SendTargets=All\0"),
    }));
    rt(Pdu::TextResponse(TextResponse {
        final_bit: false,
        cont: true,
        lun: 0,
        itt: 5,
        ttt: 44,
        stat_sn: 3,
        exp_cmd_sn: 2,
        max_cmd_sn: 65,
        data: Bytes::from_static(b"TargetName=iqn.x\0"),
    }));
}

#[test]
fn rt_data() {
    rt(Pdu::DataOut(DataOut {
        final_bit: true,
        lun: 0,
        itt: 6,
        ttt: 12,
        exp_stat_sn: 4,
        data_sn: 2,
        buffer_offset: 8192,
        data: Bytes::from(vec![7; 4096]),
    }));
    rt(Pdu::DataIn(DataIn {
        final_bit: true,
        ack: false,
        overflow: false,
        underflow: true,
        status: Some(0),
        lun: 0,
        itt: 6,
        ttt: RESERVED_TAG,
        stat_sn: 10,
        exp_cmd_sn: 11,
        max_cmd_sn: 74,
        data_sn: 3,
        buffer_offset: 12288,
        residual: 512,
        data: Bytes::from(vec![1; 100]),
    }));
    rt(Pdu::DataIn(DataIn {
        status: None,
        data: Bytes::from_static(b"x"),
        ..Default::default()
    }));
}

#[test]
fn rt_logout() {
    rt(Pdu::LogoutRequest(LogoutRequest {
        immediate: true,
        reason: 0,
        itt: 8,
        cid: 1,
        cmd_sn: 20,
        exp_stat_sn: 30,
    }));
    rt(Pdu::LogoutResponse(LogoutResponse {
        response: 0,
        itt: 8,
        stat_sn: 30,
        exp_cmd_sn: 21,
        max_cmd_sn: 84,
        time2wait: 2,
        time2retain: 0,
    }));
}

#[test]
fn rt_snack_r2t_async_reject_nop_in_response() {
    rt(Pdu::SnackRequest(SnackRequest {
        snack_type: 1,
        lun: 0,
        itt: 2,
        ttt: 3,
        exp_stat_sn: 4,
        beg_run: 5,
        run_length: 6,
    }));
    rt(Pdu::R2t(R2t {
        lun: 0,
        itt: 2,
        ttt: 99,
        stat_sn: 5,
        exp_cmd_sn: 6,
        max_cmd_sn: 70,
        r2t_sn: 1,
        buffer_offset: 262_144,
        desired_len: 262_144,
    }));
    rt(Pdu::AsyncMessage(AsyncMessage {
        lun: 0,
        stat_sn: 1,
        exp_cmd_sn: 2,
        max_cmd_sn: 3,
        event: 1,
        vcode: 0,
        param1: 0,
        param2: 2,
        param3: 0,
        data: Bytes::new(),
    }));
    rt(Pdu::Reject(Reject {
        reason: 4,
        stat_sn: 1,
        exp_cmd_sn: 2,
        max_cmd_sn: 3,
        data_sn: 0,
        data: Bytes::from(vec![0x3f; 48]),
    }));
    rt(Pdu::NopIn(NopIn {
        lun: 0,
        itt: RESERVED_TAG,
        ttt: 17,
        stat_sn: 1,
        exp_cmd_sn: 2,
        max_cmd_sn: 3,
        data: Bytes::new(),
    }));
    rt(Pdu::ScsiResponse(ScsiResponse {
        bidi_overflow: true,
        bidi_underflow: false,
        overflow: false,
        underflow: true,
        response: 0,
        status: 2,
        itt: 1,
        snack_tag: 0,
        stat_sn: 2,
        exp_cmd_sn: 3,
        max_cmd_sn: 4,
        exp_data_sn: 0,
        bidi_residual: 7,
        residual: 512,
        data: Bytes::from_static(&[0, 4, 0x70, 0, 5, 0]),
    }));
}

#[test]
fn unknown_opcode_is_an_error_not_a_panic() {
    let mut b = [0u8; 48];
    b[0] = 0x1c;
    assert_eq!(
        Pdu::parse(&Bhs(b), &[], Bytes::new()),
        Err(PduError::UnknownOpcode(0x1c))
    );
}

#[test]
fn sense_accessor() {
    let r = ScsiResponse {
        data: Bytes::from_static(&[0, 3, 0x70, 0, 5]),
        ..Default::default()
    };
    assert_eq!(r.sense(), Some(&[0x70, 0, 5][..]));
    let r = ScsiResponse {
        data: Bytes::from_static(&[0, 9, 0x70]),
        ..Default::default()
    };
    assert_eq!(r.sense(), None);
}

/// Decode a fixture captured on the wire, check it, and re-encode it byte for byte.
fn golden(name: &str) -> (LoginRequest, TextKeys) {
    let path = format!(
        "{}/../../tests/fixtures/pdus/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let hex_text = std::fs::read_to_string(&path).unwrap();
    let wire = hex::decode(hex_text.trim()).unwrap();
    let mut buf = BytesMut::from(&wire[..]);
    let frame = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty(), "{name}: trailing bytes");
    let pdu = frame.pdu().unwrap();
    let (bhs, _, data) = pdu.encode();
    assert_eq!(bhs.0[..], wire[..48], "{name}: BHS re-encodes identically");
    assert_eq!(data, frame.data);
    let Pdu::LoginRequest(l) = pdu else {
        panic!("{name}: not a login request")
    };
    let keys = TextKeys::parse(&l.data).unwrap();
    (l, keys)
}

#[test]
fn golden_libiscsi_normal_login() {
    let (l, k) = golden("libiscsi-login-normal.hex");
    assert!(l.transit);
    assert_eq!((l.csg, l.nsg), (1, 3));
    assert_eq!(l.isid[0] & 0xc0, 0x80, "libiscsi uses a random ISID");
    assert_eq!(l.tsih, 0);
    assert_eq!(k.get("SessionType"), Some("Normal"));
    assert_eq!(k.get("HeaderDigest"), Some("None,CRC32C"));
    assert_eq!(k.get("MaxRecvDataSegmentLength"), Some("262144"));
    assert_eq!(k.get("AuthMethod"), None);
}

#[test]
fn golden_libiscsi_discovery_login() {
    let (l, k) = golden("libiscsi-login-discovery.hex");
    assert_eq!((l.csg, l.nsg, l.transit), (1, 3, true));
    assert_eq!(k.get("SessionType"), Some("Discovery"));
    assert_eq!(k.get("TargetName"), None);
}

#[test]
fn golden_libiscsi_chap_login() {
    let (l, k) = golden("libiscsi-login-chap.hex");
    assert_eq!((l.csg, l.nsg, l.transit), (0, 1, true));
    assert_eq!(k.get("AuthMethod"), Some("CHAP,None"));
}
