//! Login over TCP: operational keys, failures with their status classes, CHAP, digests and
//! session reinstatement.

use iscsi_proto::{
    chap::{self, ChapAlgorithm},
    pdu::Pdu,
    text::TextKeys,
};

use crate::{
    harness::{IQN, Server},
    initiator::{Initiator, OPERATIONAL},
};

#[test]
fn normal_login_answers_every_key_and_declares_limits() {
    let s = Server::start("");
    let mut i = Initiator::connect(s.addr());
    let r = i.login("iqn.2026-11.test:host", IQN, &[]);
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    assert!(r.transit && r.nsg == 3 && r.tsih != 0);
    let k = TextKeys::parse(&r.data).unwrap();
    for (key, _) in OPERATIONAL
        .iter()
        .filter(|(k, _)| *k != "MaxRecvDataSegmentLength")
    {
        assert!(k.get(key).is_some(), "{key} answered");
    }
    assert_eq!(k.get("TargetPortalGroupTag"), Some("1"));
    assert_eq!(k.get("MaxRecvDataSegmentLength"), Some("262144"));
    assert_eq!(k.get("InitialR2T"), Some("No"));
    assert_eq!(k.get("ImmediateData"), Some("Yes"));
    assert_eq!(
        r.exp_cmd_sn, 0,
        "CmdSN 0 from open-iscsi is accepted as the start"
    );
}

#[test]
fn failures_carry_the_right_status() {
    let s = Server::start("allowed_initiators = [\"iqn.2026-11.test:allowed\"]");
    let cases: [(&str, &str, (u8, u8)); 3] = [
        (
            "iqn.2026-11.test:allowed",
            "iqn.2026-11.io.ironlun:nope",
            (2, 3),
        ),
        ("iqn.2026-11.test:intruder", IQN, (2, 2)),
        ("iqn.2026-11.test:allowed", IQN, (0, 0)),
    ];
    for (init, target, want) in cases {
        let mut i = Initiator::connect(s.addr());
        let r = i.login(init, target, &[]);
        assert_eq!(
            (r.status_class, r.status_detail),
            want,
            "{init} -> {target}"
        );
        if want.0 != 0 {
            assert!(r.data.is_empty());
            assert!(i.closed(), "the target closes after a failed login");
        }
    }
    // Version-min above 0.
    let mut i = Initiator::connect(s.addr());
    let mut req = i.login_request(1, 3, true, &[("InitiatorName", "iqn.2026-11.test:allowed")]);
    req.version_min = 2;
    req.version_max = 2;
    i.send(&Pdu::LoginRequest(req));
    let Pdu::LoginResponse(r) = i.recv() else {
        panic!()
    };
    assert_eq!((r.status_class, r.status_detail), (2, 5));
}

#[test]
fn non_login_pdu_during_login_closes_the_connection() {
    let s = Server::start("");
    let mut i = Initiator::connect(s.addr());
    i.send(&Pdu::NopOut(Default::default()));
    assert!(i.closed());
}

const CHAP_TARGET: &str = r#"chap = [{ user = "alice", secret = "alice-secret-12" }]
mutual_chap = { user = "tgt", secret = "target-secret-34" }"#;

fn chap_login(i: &mut Initiator, alg: &str, secret: &str, mutual: bool) -> (u8, u8) {
    let r = i.login_step(
        0,
        1,
        true,
        &[
            ("InitiatorName", "iqn.2026-11.test:host"),
            ("TargetName", IQN),
            ("SessionType", "Normal"),
            ("AuthMethod", "CHAP,None"),
        ],
    );
    assert_eq!(
        TextKeys::parse(&r.data).unwrap().get("AuthMethod"),
        Some("CHAP")
    );
    let r = i.login_step(0, 1, false, &[("CHAP_A", alg)]);
    if r.status_class != 0 {
        return (r.status_class, r.status_detail);
    }
    let k = TextKeys::parse(&r.data).unwrap();
    let a = ChapAlgorithm::from_code(k.get("CHAP_A").unwrap().parse().unwrap()).unwrap();
    let id: u8 = k.get("CHAP_I").unwrap().parse().unwrap();
    let c = chap::decode_binary(k.get("CHAP_C").unwrap()).unwrap();
    let resp = chap::encode_hex(&a.response(id, secret.as_bytes(), &c));
    let my_challenge = [0x5au8; 16];
    let hex_c = chap::encode_hex(&my_challenge);
    let mut keys = vec![("CHAP_N", "alice"), ("CHAP_R", resp.as_str())];
    if mutual {
        keys.push(("CHAP_I", "9"));
        keys.push(("CHAP_C", hex_c.as_str()));
    }
    let r = i.login_step(0, 1, true, &keys);
    if r.status_class != 0 {
        return (r.status_class, r.status_detail);
    }
    if mutual {
        let k = TextKeys::parse(&r.data).unwrap();
        assert_eq!(k.get("CHAP_N"), Some("tgt"));
        let got = chap::decode_binary(k.get("CHAP_R").unwrap()).unwrap();
        assert_eq!(got, a.response(9, b"target-secret-34", &my_challenge));
    }
    let mut op = vec![];
    op.extend_from_slice(OPERATIONAL);
    let r = i.login_step(1, 3, true, &op);
    i.after_login(&r);
    (r.status_class, r.status_detail)
}

#[test]
fn mutual_chap_with_every_algorithm_and_wrong_secret() {
    let s = Server::start(CHAP_TARGET);
    for alg in ["5", "6", "7", "8", "8,7,6,5"] {
        let mut i = Initiator::connect(s.addr());
        assert_eq!(
            chap_login(&mut i, alg, "alice-secret-12", true),
            (0, 0),
            "CHAP_A={alg}"
        );
        i.clear_ua(0);
    }
    let mut i = Initiator::connect(s.addr());
    assert_eq!(chap_login(&mut i, "5", "wrong-secret", true), (2, 1));
    // Mutual CHAP is configured, so one-way is refused.
    let mut i = Initiator::connect(s.addr());
    assert_eq!(chap_login(&mut i, "5", "alice-secret-12", false), (2, 1));
    // The secret never reaches the log.
    assert!(!s.log().contains("alice-secret-12") && !s.log().contains("target-secret-34"));
}

#[test]
fn crc32c_digests_protect_commands() {
    let s = Server::start("");
    let mut i = Initiator::connect(s.addr());
    let r = i.login(
        "iqn.2026-11.test:host",
        IQN,
        &[
            ("HeaderDigest", "CRC32C,None"),
            ("DataDigest", "CRC32C,None"),
        ],
    );
    let k = TextKeys::parse(&r.data).unwrap();
    assert_eq!(
        (k.get("HeaderDigest"), k.get("DataDigest")),
        (Some("CRC32C"), Some("CRC32C"))
    );
    i.clear_ua(0);
    let data: Vec<u8> = (0..65536u32).map(|x| (x * 7) as u8).collect();
    let w = i.scsi(0, &[0x2a, 0, 0, 0, 0, 8, 0, 0, 128, 0], &data, 65536, false);
    assert_eq!(w.status, 0);
    let r = i.scsi(0, &[0x28, 0, 0, 0, 0, 8, 0, 0, 128, 0], &[], 65536, true);
    assert_eq!(r.data, data);
    // A corrupted data digest: the PDU is rejected (reason 0x02).
    let mut cdb = [0u8; 16];
    cdb[0] = 0x2a;
    cdb[8] = 1;
    let cmd = Pdu::ScsiCommand(iscsi_proto::pdu::ScsiCommand {
        final_bit: true,
        write: true,
        attr: 1,
        itt: 4242,
        expected_len: 512,
        cmd_sn: i.cmd_sn,
        cdb: iscsi_proto::pdu::Cdb::from_slice(&cdb),
        data: bytes::Bytes::from(vec![1u8; 512]),
        ..Default::default()
    });
    let mut wire = i.enc.encode(&cmd).to_bytes().to_vec();
    let n = wire.len();
    wire[n - 1] ^= 0xff;
    i.send_raw(&wire);
    match i.recv() {
        Pdu::Reject(r) => assert_eq!(r.reason, 0x02),
        other => panic!("expected a Reject, got {other:?}"),
    }
}

/// PDUs of 64 KiB and more are received into buffers of their own: with digests, 1 MiB
/// writes come back intact, and a large PDU whose data digest fails is rejected.
#[test]
fn large_pdus_with_digests_and_a_corrupted_one() {
    let s = Server::start("");
    let mut i = Initiator::connect(s.addr());
    let mut keys = OPERATIONAL.to_vec();
    keys.retain(|(k, _)| !k.ends_with("Digest"));
    keys.extend([("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C")]);
    assert_eq!(i.login("iqn.2026-11.test:host", IQN, &keys).status_class, 0);
    i.clear_ua(0);
    assert_eq!(i.max_send, 262_144);
    for round in 0..3u32 {
        // 1 MiB: 256 KiB immediate, then Data-Out PDUs of 256 KiB (first burst and R2Ts).
        let data: Vec<u8> = (0..1u32 << 20)
            .map(|x| (x.wrapping_mul(31) ^ round) as u8)
            .collect();
        let lba = 4096 * round;
        let mut w = [0x2a, 0, 0, 0, 0, 0, 0, 0x08, 0, 0];
        w[2..6].copy_from_slice(&lba.to_be_bytes());
        assert_eq!(i.scsi(0, &w, &data, 1 << 20, false).status, 0);
        let mut r = w;
        r[0] = 0x28;
        assert_eq!(i.scsi(0, &r, &[], 1 << 20, true).data, data);
    }
    // 64 KiB of immediate data with a corrupted data digest.
    let cmd = Pdu::ScsiCommand(iscsi_proto::pdu::ScsiCommand {
        final_bit: true,
        write: true,
        attr: 1,
        itt: 4243,
        expected_len: 65536,
        cmd_sn: i.cmd_sn,
        cdb: iscsi_proto::pdu::Cdb::from_slice(&[
            0x2a, 0, 0, 0, 0, 0, 0, 0, 128, 0, 0, 0, 0, 0, 0, 0,
        ]),
        data: bytes::Bytes::from(vec![5u8; 65536]),
        ..Default::default()
    });
    let mut wire = i.enc.encode(&cmd).to_bytes().to_vec();
    wire[48 + 4 + 1000] ^= 0x01;
    i.send_raw(&wire);
    match i.recv() {
        Pdu::Reject(r) => assert_eq!(r.reason, 0x02),
        other => panic!("expected a Reject, got {other:?}"),
    }
    assert!(i.closed(), "at ErrorRecoveryLevel 0 the connection closes");
}

#[test]
fn session_reinstatement_closes_the_old_session() {
    let s = Server::start("");
    let mut a = Initiator::connect(s.addr());
    assert_eq!(a.login("iqn.2026-11.test:host", IQN, &[]).status_class, 0);
    a.clear_ua(0);
    let mut b = Initiator::connect(s.addr());
    b.isid = a.isid;
    let r = b.login("iqn.2026-11.test:host", IQN, &[]);
    assert_eq!(r.status_class, 0);
    assert!(a.closed(), "the reinstated session's connection is closed");
    b.clear_ua(0);
    // A login naming a TSIH that does not exist.
    let mut c = Initiator::connect(s.addr());
    let mut req = c.login_request(
        1,
        3,
        true,
        &[("InitiatorName", "iqn.2026-11.test:x"), ("TargetName", IQN)],
    );
    req.tsih = 0x7777;
    c.send(&Pdu::LoginRequest(req));
    let Pdu::LoginResponse(r) = c.recv() else {
        panic!()
    };
    assert_eq!((r.status_class, r.status_detail), (2, 0x0a));
}
