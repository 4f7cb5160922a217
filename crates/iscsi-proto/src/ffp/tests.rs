//! The full feature phase driven PDU by PDU, asserting the exact outputs.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::{
    frame::FrameEncoder,
    negotiate::Params,
    pdu::{DataIn, LoginRequest, SnackRequest, TaskMgmtRequest, TaskMgmtResponse},
};

fn outcome(params: Params) -> LoginOutcome {
    LoginOutcome {
        initiator_name: "iqn.i".into(),
        initiator_alias: None,
        target_name: Some("iqn.t".into()),
        session_type: SessionType::Normal,
        isid: [0; 6],
        tsih: 0,
        cid: 0,
        params,
        exp_cmd_sn: 10,
        stat_sn: 100,
        chap_user: None,
    }
}

fn params() -> Params {
    Params {
        initial_r2t: false,
        immediate_data: true,
        first_burst_length: 8192,
        max_burst_length: 16384,
        max_xmit_data_segment_length: 4096,
        max_recv_data_segment_length: 262_144,
        max_outstanding_r2t: 2,
        ..Params::default()
    }
}

struct H {
    c: Connection,
    now: Instant,
}

impl H {
    fn new(p: Params, depth: u32) -> Self {
        Self::with_config(
            p,
            FfpConfig {
                queue_depth: depth,
                luns: vec![0, 1],
                ..FfpConfig::default()
            },
        )
    }

    fn with_config(p: Params, cfg: FfpConfig) -> Self {
        let now = Instant::now();
        Self {
            c: Connection::new(&outcome(p), cfg, now),
            now,
        }
    }

    fn send(&mut self, pdu: Pdu) {
        let mut enc = FrameEncoder::default();
        let wire = enc.encode(&pdu).to_bytes();
        let mut buf = bytes::BytesMut::from(&wire[..]);
        let frame = crate::frame::FrameDecoder {
            max_data_segment: 1 << 20,
            ..Default::default()
        }
        .decode(&mut buf)
        .unwrap()
        .unwrap();
        self.c.handle_frame(&frame, self.now);
    }

    fn out(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.c.poll_output()).collect()
    }
}

fn read10(itt: u32, cmd_sn: u32, blocks: u8, edtl: u32) -> Pdu {
    let mut cdb = vec![0u8; 16];
    cdb[0] = 0x28;
    cdb[8] = blocks;
    Pdu::ScsiCommand(ScsiCommand {
        final_bit: true,
        read: true,
        attr: 1,
        itt,
        expected_len: edtl,
        cmd_sn,
        cdb: cdb.into(),
        ..Default::default()
    })
}

fn write10(itt: u32, cmd_sn: u32, edtl: u32, imm: usize, final_bit: bool) -> Pdu {
    let mut cdb = vec![0u8; 16];
    cdb[0] = 0x2a;
    Pdu::ScsiCommand(ScsiCommand {
        final_bit,
        write: true,
        attr: 1,
        itt,
        expected_len: edtl,
        cmd_sn,
        cdb: cdb.into(),
        data: Bytes::from(vec![0xab; imm]),
        ..Default::default()
    })
}

fn data_out(itt: u32, ttt: u32, data_sn: u32, offset: u32, len: usize, final_bit: bool) -> Pdu {
    Pdu::DataOut(DataOut {
        final_bit,
        itt,
        ttt,
        data_sn,
        buffer_offset: offset,
        data: Bytes::from(vec![(offset / 512) as u8; len]),
        ..Default::default()
    })
}

fn executes(out: &[Output]) -> Vec<&ScsiTask> {
    out.iter()
        .filter_map(|o| {
            if let Output::Execute(t) = o {
                Some(t)
            } else {
                None
            }
        })
        .collect()
}

fn sent(out: &[Output]) -> Vec<&Pdu> {
    out.iter()
        .filter_map(|o| {
            if let Output::Send(p) = o {
                Some(p)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn read_is_split_into_data_in_with_status_in_the_last() {
    let mut h = H::new(params(), 32);
    h.send(read10(1, 10, 20, 10240));
    let out = h.out();
    assert_eq!(executes(&out).len(), 1);
    h.c.complete(
        1,
        ScsiCompletion {
            data: Bytes::from(vec![1u8; 10240]),
            ..Default::default()
        },
    );
    let out = h.out();
    let ins: Vec<&DataIn> = sent(&out)
        .into_iter()
        .map(|p| {
            if let Pdu::DataIn(d) = p {
                d
            } else {
                panic!("{p:?}")
            }
        })
        .collect();
    assert_eq!(ins.len(), 3, "4096 + 4096 + 2048");
    assert_eq!(
        ins.iter().map(|d| d.data.len()).collect::<Vec<_>>(),
        vec![4096, 4096, 2048]
    );
    assert_eq!(
        ins.iter().map(|d| d.buffer_offset).collect::<Vec<_>>(),
        vec![0, 4096, 8192]
    );
    assert_eq!(
        ins.iter().map(|d| d.data_sn).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(ins[2].status, Some(0));
    assert!(ins[0].status.is_none() && ins[1].status.is_none());
    assert_eq!(ins[2].stat_sn, 100);
    assert_eq!(ins[2].exp_cmd_sn, 11);
    assert_eq!(
        ins[2].max_cmd_sn,
        10 + 31 + 1,
        "the window opens by one as the command completes"
    );
    assert!(!ins[2].underflow && !ins[2].overflow);
}

#[test]
fn read_residuals() {
    let mut h = H::new(params(), 32);
    // EDTL larger than what the command returns: underflow.
    h.send(read10(1, 10, 1, 1024));
    h.out();
    h.c.complete(
        1,
        ScsiCompletion {
            data: Bytes::from(vec![0u8; 512]),
            ..Default::default()
        },
    );
    let out = h.out();
    let Pdu::DataIn(d) = sent(&out)[0] else {
        panic!()
    };
    assert!(d.underflow && d.residual == 512 && d.data.len() == 512);
    // EDTL smaller: overflow, data trimmed.
    h.send(read10(2, 11, 2, 512));
    h.out();
    h.c.complete(
        2,
        ScsiCompletion {
            data: Bytes::from(vec![0u8; 1024]),
            ..Default::default()
        },
    );
    let out = h.out();
    let Pdu::DataIn(d) = sent(&out)[0] else {
        panic!()
    };
    assert!(d.overflow && d.residual == 512 && d.data.len() == 512);
}

#[test]
fn check_condition_goes_in_a_scsi_response_with_sense() {
    let mut h = H::new(params(), 32);
    h.send(read10(1, 10, 1, 512));
    h.out();
    let sense = Bytes::from_static(&[0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0, 0, 0, 0, 0]);
    h.c.complete(
        1,
        ScsiCompletion {
            status: 2,
            sense: sense.clone(),
            ..Default::default()
        },
    );
    let out = h.out();
    let [Pdu::ScsiResponse(r)] = sent(&out)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(r.status, 2);
    assert_eq!(r.sense(), Some(&sense[..]));
    assert!(r.underflow && r.residual == 512);
}

#[test]
fn write_with_immediate_unsolicited_and_solicited_data() {
    let mut h = H::new(params(), 32);
    // 40 KiB write: 2 KiB immediate, unsolicited up to FirstBurst 8 KiB, then R2Ts of 16 KiB.
    h.send(write10(1, 10, 40960, 2048, false));
    let out = h.out();
    let r2ts: Vec<&R2t> = sent(&out)
        .into_iter()
        .map(|p| if let Pdu::R2t(r) = p { r } else { panic!() })
        .collect();
    assert_eq!(r2ts.len(), 2, "MaxOutstandingR2T=2");
    assert_eq!(
        (r2ts[0].buffer_offset, r2ts[0].desired_len, r2ts[0].r2t_sn),
        (8192, 16384, 0)
    );
    assert_eq!(
        (r2ts[1].buffer_offset, r2ts[1].desired_len, r2ts[1].r2t_sn),
        (24576, 16384, 1)
    );
    let (t0, t1) = (r2ts[0].ttt, r2ts[1].ttt);
    h.send(data_out(1, RESERVED_TAG, 0, 2048, 4096, false));
    h.send(data_out(1, RESERVED_TAG, 1, 6144, 2048, true));
    h.send(data_out(1, t0, 0, 8192, 4096, false));
    h.send(data_out(1, t0, 1, 12288, 4096, false));
    h.send(data_out(1, t0, 2, 16384, 8192, true));
    assert!(h.out().is_empty(), "no execution before all data");
    h.send(data_out(1, t1, 0, 24576, 16384, true));
    let out = h.out();
    let ex = executes(&out);
    assert_eq!(ex.len(), 1);
    let total: usize = ex[0].data.iter().map(Bytes::len).sum();
    assert_eq!(total, 40960);
    h.c.complete(
        1,
        ScsiCompletion {
            write_len: 40960,
            ..Default::default()
        },
    );
    let out = h.out();
    let [Pdu::ScsiResponse(r)] = sent(&out)[..] else {
        panic!()
    };
    assert_eq!((r.status, r.residual, r.exp_data_sn), (0, 0, 2));
}

#[test]
fn wrong_data_sn_fails_the_command() {
    let mut h = H::new(
        Params {
            initial_r2t: true,
            immediate_data: false,
            ..params()
        },
        32,
    );
    h.send(write10(1, 10, 1024, 0, true));
    let out = h.out();
    let [Pdu::R2t(r)] = sent(&out)[..] else {
        panic!()
    };
    let ttt = r.ttt;
    h.send(data_out(1, ttt, 0, 0, 512, false));
    h.send(data_out(1, ttt, 0, 512, 512, true));
    let out = h.out();
    assert!(executes(&out).is_empty());
    let [Pdu::ScsiResponse(r)] = sent(&out)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(r.status, 2);
    assert_eq!(
        r.sense().map(|s| (s[2], s[12], s[13])),
        Some((0x0b, 0x0c, 0x0d))
    );
}

#[test]
fn unknown_data_out_is_rejected() {
    let mut h = H::new(params(), 32);
    h.send(data_out(77, 5, 0, 0, 512, true));
    let out = h.out();
    let [Pdu::Reject(r)] = sent(&out)[..] else {
        panic!()
    };
    assert_eq!(r.reason, 0x09);
    assert_eq!(&r.data[16..20], &77u32.to_be_bytes());
}

/// A command that waited for an earlier CmdSN and is rejected when it runs echoes its own
/// header in the Reject, not the header of the PDU that let it through.
#[test]
fn a_held_command_rejected_when_it_runs_echoes_its_own_header() {
    let mut h = H::new(params(), 32);
    // A Text continuation (CmdSN 11) for an answer that does not exist: rejected when run.
    h.send(Pdu::TextRequest(TextRequest {
        final_bit: true,
        itt: 7,
        ttt: 0x55,
        cmd_sn: 11,
        ..Default::default()
    }));
    assert!(h.out().is_empty(), "held for CmdSN 10");
    h.send(Pdu::NopOut(NopOut {
        itt: 9,
        ttt: RESERVED_TAG,
        cmd_sn: 10,
        ..Default::default()
    }));
    let out = h.out();
    let rejects: Vec<&Reject> = sent(&out)
        .into_iter()
        .filter_map(|p| match p {
            Pdu::Reject(r) => Some(r),
            _ => None,
        })
        .collect();
    let [r] = rejects[..] else {
        panic!("one Reject expected: {out:?}")
    };
    assert_eq!(r.reason, 0x09, "invalid PDU field");
    assert_eq!(r.data[0] & 0x3f, 0x04, "the Text Request's opcode");
    assert_eq!(
        &r.data[16..20],
        &7u32.to_be_bytes(),
        "the Text Request's ITT"
    );
    assert_eq!(
        &r.data[24..28],
        &11u32.to_be_bytes(),
        "the Text Request's CmdSN"
    );
}

#[test]
fn cmdsn_window_and_ordering() {
    let mut h = H::new(params(), 4);
    // Too high (MaxCmdSN is 13) and too low: silently ignored.
    h.send(read10(1, 14, 1, 512));
    h.send(read10(2, 9, 1, 512));
    assert!(h.out().is_empty());
    // Out of order within the window: held until the gap fills.
    h.send(read10(3, 11, 1, 512));
    assert!(h.out().is_empty());
    h.send(read10(4, 10, 1, 512));
    let out = h.out();
    assert_eq!(
        executes(&out).iter().map(|t| t.itt).collect::<Vec<_>>(),
        vec![4, 3]
    );
    // Immediate commands bypass the order and do not consume CmdSN.
    let Pdu::ScsiCommand(mut imm) = read10(5, 12, 1, 512) else {
        unreachable!()
    };
    imm.immediate = true;
    h.send(Pdu::ScsiCommand(imm));
    assert_eq!(executes(&h.out()).len(), 1);
    h.send(read10(6, 12, 1, 512));
    assert_eq!(executes(&h.out()).len(), 1);
}

#[test]
fn ordered_task_waits_for_earlier_and_blocks_later() {
    let mut h = H::new(params(), 32);
    h.send(read10(1, 10, 1, 512));
    let Pdu::ScsiCommand(mut ord) = read10(2, 11, 1, 512) else {
        unreachable!()
    };
    ord.attr = 2;
    h.send(Pdu::ScsiCommand(ord));
    h.send(read10(3, 12, 1, 512));
    let Pdu::ScsiCommand(mut hoq) = read10(4, 13, 1, 512) else {
        unreachable!()
    };
    hoq.attr = 3;
    h.send(Pdu::ScsiCommand(hoq));
    let started: Vec<u32> = executes(&h.out()).iter().map(|t| t.itt).collect();
    assert_eq!(started, vec![1, 4]);
    h.c.complete(1, ScsiCompletion::default());
    let started: Vec<u32> = executes(&h.out()).iter().map(|t| t.itt).collect();
    assert_eq!(started, vec![2]);
    h.c.complete(2, ScsiCompletion::default());
    let started: Vec<u32> = executes(&h.out()).iter().map(|t| t.itt).collect();
    assert_eq!(started, vec![3]);
}

#[test]
fn abort_task_waits_for_the_executing_task() {
    let mut h = H::new(params(), 32);
    h.send(read10(1, 10, 1, 512));
    h.out();
    h.send(abort(50, 1, 11, 10));
    assert!(sent(&h.out()).is_empty(), "response waits for the task");
    h.c.complete(
        1,
        ScsiCompletion {
            data: Bytes::from(vec![0; 512]),
            ..Default::default()
        },
    );
    let out = h.out();
    let [Pdu::TaskMgmtResponse(r)] = sent(&out)[..] else {
        panic!("{out:?}")
    };
    assert_eq!((r.itt, r.response), (50, 0));
}

fn abort(itt: u32, referenced: u32, cmd_sn: u32, ref_cmd_sn: u32) -> Pdu {
    Pdu::TaskMgmtRequest(TaskMgmtRequest {
        immediate: true,
        function: 1,
        itt,
        referenced_task_tag: referenced,
        cmd_sn,
        ref_cmd_sn,
        ..Default::default()
    })
}

fn tmf_response(out: &[Output]) -> Option<&TaskMgmtResponse> {
    sent(out).into_iter().find_map(|p| match p {
        Pdu::TaskMgmtResponse(r) => Some(r),
        _ => None,
    })
}

/// libiscsi's AbortTaskSimpleAsync: a command that completed before the ABORT TASK came
/// was answered with GOOD, so the abort must say the task does not exist, not "complete".
#[test]
fn abort_of_a_completed_task_says_it_does_not_exist() {
    let mut h = H::new(params(), 32);
    h.send(read10(1, 10, 1, 512));
    h.out();
    h.c.complete(
        1,
        ScsiCompletion {
            data: Bytes::from(vec![0; 512]),
            ..Default::default()
        },
    );
    assert!(!sent(&h.out()).is_empty(), "the read is answered");
    h.send(abort(50, 1, 11, 10));
    let out = h.out();
    let r = tmf_response(&out).expect("a TMF response");
    assert_eq!((r.itt, r.response), (50, 1), "task does not exist");
}

/// RFC 7143 section 11.5.1: an ABORT TASK naming a CmdSN in the window whose command has not
/// arrived completes, the CmdSN counts as received (the commands held behind it run and the
/// window slides), and the command is dropped if it comes after all.
#[test]
fn abort_of_a_command_not_yet_arrived_frees_its_cmdsn() {
    let mut h = H::new(params(), 32);
    // CmdSN 11 arrives ahead of 10 and waits for it.
    h.send(read10(2, 11, 1, 512));
    assert!(executes(&h.out()).is_empty());
    h.send(abort(50, 1, 12, 10));
    let out = h.out();
    let itts: Vec<u32> = executes(&out).iter().map(|t| t.itt).collect();
    assert_eq!(
        itts,
        vec![2],
        "the held command runs once 10 counts as received"
    );
    let r = tmf_response(&out).expect("a TMF response");
    assert_eq!((r.itt, r.response), (50, 0));
    assert_eq!((r.exp_cmd_sn, r.max_cmd_sn), (12, 42));
    // The aborted command arrives late: it is outside the window now and never runs.
    h.send(read10(1, 10, 1, 512));
    assert!(h.out().is_empty());

    // A skipped CmdSN ahead of ExpCmdSN: its command is dropped when it comes, and
    // ExpCmdSN steps over it once the command before it arrives.
    h.send(abort(51, 3, 14, 13));
    let r = tmf_response(&h.out()).map(|r| r.response);
    assert_eq!(r, Some(0));
    h.send(read10(3, 13, 1, 512));
    assert!(h.out().is_empty(), "the aborted command is dropped");
    h.send(read10(4, 12, 1, 512));
    let out = h.out();
    let itts: Vec<u32> = executes(&out).iter().map(|t| t.itt).collect();
    assert_eq!(itts, vec![4]);
    h.send(read10(5, 14, 1, 512));
    let out = h.out();
    let itts: Vec<u32> = executes(&out).iter().map(|t| t.itt).collect();
    assert_eq!(itts, vec![5], "ExpCmdSN stepped over 13");
}

#[test]
fn task_management_responses() {
    let mut h = H::new(params(), 32);
    let tmf = |function, lun: u64, itt| {
        Pdu::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function,
            lun,
            itt,
            referenced_task_tag: 999,
            cmd_sn: 10,
            ref_cmd_sn: 40,
            ..Default::default()
        })
    };
    let mut responses = Vec::new();
    for (f, lun) in [
        (1, 0),
        (1, 7 << 48),
        (2, 0),
        (3, 0),
        (5, 0),
        (6, 0),
        (8, 0),
        (99, 0),
    ] {
        h.send(tmf(f, lun, f as u32));
        for p in sent(&h.out()) {
            if let Pdu::TaskMgmtResponse(r) = p {
                responses.push((f, r.response));
            }
        }
    }
    assert_eq!(
        responses,
        vec![
            (1, 1),
            (1, 2),
            (2, 0),
            (3, 5),
            (5, 0),
            (6, 0),
            (8, 4),
            (99, 5)
        ]
    );
}

#[test]
fn nop_out_ping_and_target_ping_timeout() {
    let mut h = H::new(params(), 32);
    h.send(Pdu::NopOut(NopOut {
        immediate: true,
        itt: 9,
        ttt: RESERVED_TAG,
        cmd_sn: 10,
        data: Bytes::from_static(b"abc"),
        ..Default::default()
    }));
    let out = h.out();
    let [Pdu::NopIn(n)] = sent(&out)[..] else {
        panic!()
    };
    assert_eq!(
        (n.itt, n.ttt, n.stat_sn, &n.data[..]),
        (9, RESERVED_TAG, 100, &b"abc"[..])
    );

    h.now += Duration::from_secs(11);
    h.c.handle_tick(h.now);
    let out = h.out();
    let [Pdu::NopIn(ping)] = sent(&out)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(ping.itt, RESERVED_TAG);
    assert_eq!(ping.stat_sn, 101, "a ping does not advance StatSN");
    h.now += Duration::from_secs(16);
    h.c.handle_tick(h.now);
    assert!(matches!(
        h.out()[..],
        [Output::Close(CloseReason::PingTimeout)]
    ));
}

#[test]
fn answered_ping_keeps_the_connection() {
    let mut h = H::new(params(), 32);
    h.now += Duration::from_secs(11);
    h.c.handle_tick(h.now);
    let out = h.out();
    let [Pdu::NopIn(ping)] = sent(&out)[..] else {
        panic!()
    };
    let ttt = ping.ttt;
    h.send(Pdu::NopOut(NopOut {
        immediate: true,
        itt: RESERVED_TAG,
        ttt,
        ..Default::default()
    }));
    h.now += Duration::from_secs(16);
    h.c.handle_tick(h.now);
    assert!(h.out().iter().all(|o| !matches!(o, Output::Close(_))));
}

#[test]
fn long_text_answer_is_continued() {
    let mut p = params();
    p.max_xmit_data_segment_length = 512;
    let mut h = H::new(p, 32);
    h.send(Pdu::TextRequest(TextRequest {
        immediate: true,
        final_bit: true,
        itt: 3,
        ttt: RESERVED_TAG,
        cmd_sn: 10,
        data: Bytes::from_static(b"SendTargets=All\0"),
        ..Default::default()
    }));
    let out = h.out();
    assert!(matches!(&out[..], [Output::Text { itt: 3, .. }]));
    let mut answer = TextKeys::default();
    for i in 0..20 {
        answer.push(
            "TargetName",
            format!("iqn.2026-11.io.ironlun:target-number-{i}"),
        );
        answer.push("TargetAddress", "127.0.0.1:3260,1");
    }
    h.c.text_reply(3, &answer);
    let mut got = Vec::new();
    loop {
        let out = h.out();
        let [Pdu::TextResponse(r)] = sent(&out)[..] else {
            panic!("{out:?}")
        };
        got.extend_from_slice(&r.data);
        if r.final_bit {
            assert_eq!(r.ttt, RESERVED_TAG);
            break;
        }
        assert!(r.cont && r.data.len() == 512);
        h.send(Pdu::TextRequest(TextRequest {
            immediate: true,
            final_bit: true,
            itt: 3,
            ttt: r.ttt,
            ..Default::default()
        }));
    }
    assert_eq!(TextKeys::parse(&got).unwrap(), answer);
}

#[test]
fn logout_waits_for_executing_tasks_then_closes() {
    let mut h = H::new(params(), 32);
    h.send(read10(1, 10, 1, 512));
    h.out();
    h.send(Pdu::LogoutRequest(LogoutRequest {
        immediate: true,
        reason: 0,
        itt: 8,
        cmd_sn: 11,
        ..Default::default()
    }));
    assert!(h.out().is_empty());
    h.c.complete(
        1,
        ScsiCompletion {
            data: Bytes::from(vec![0; 512]),
            ..Default::default()
        },
    );
    let out = h.out();
    assert!(
        matches!(&out[..], [Output::Send(Pdu::DataIn(_)), Output::Send(Pdu::LogoutResponse(l)), Output::Close(CloseReason::Logout)] if l.response == 0)
    );
}

#[test]
fn login_pdu_and_snack_in_full_feature_phase() {
    let mut h = H::new(params(), 32);
    h.send(Pdu::SnackRequest(SnackRequest::default()));
    let out = h.out();
    assert!(matches!(&out[..], [Output::Send(Pdu::Reject(r))] if r.reason == 0x03));
    h.send(Pdu::LoginRequest(LoginRequest::default()));
    let out = h.out();
    assert!(
        matches!(&out[..], [Output::Send(Pdu::Reject(r)), Output::Close(_)] if r.reason == 0x04)
    );
}

#[test]
fn immediate_data_beyond_first_burst_is_an_error() {
    let mut h = H::new(params(), 32);
    h.send(write10(1, 10, 16384, 12288, true));
    let out = h.out();
    let [Pdu::ScsiResponse(r)] = sent(&out)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        r.sense().map(|s| (s[2], s[12], s[13])),
        Some((0x0b, 0x0c, 0x0c))
    );
}

/// More large writes at once than the write buffer budget holds, each asked for its data
/// a few R2Ts at a time: every one completes (tasks that each held part of their data had
/// filled the budget and waited for each other forever), and what the connection buffers
/// stays within the budget, plus the immediate data (which the initiator sends unasked),
/// plus one task's data.
#[test]
fn writes_beyond_the_buffer_budget_all_complete() {
    const N: u32 = 12;
    const EDTL: u32 = 64 * 1024;
    const IMM: usize = 8192;
    const BUDGET: usize = 96 * 1024;
    let mut h = H::with_config(
        params(),
        FfpConfig {
            queue_depth: 64,
            write_buffer_budget: BUDGET,
            luns: vec![0],
            ..FfpConfig::default()
        },
    );
    // Bytes each task has been sent or asked for, until its response.
    let mut held: HashMap<u32, usize> = HashMap::new();
    for i in 0..N {
        h.send(write10(i + 1, 10 + i, EDTL, IMM, true));
        held.insert(i + 1, IMM);
    }
    let mut responses = 0;
    let mut peak = 0;
    for _ in 0..10_000 {
        let out = h.out();
        if out.is_empty() {
            break;
        }
        for o in out {
            match o {
                Output::Send(Pdu::R2t(r)) => {
                    *held.entry(r.itt).or_default() += r.desired_len as usize;
                    peak = peak.max(held.values().sum::<usize>());
                    h.send(data_out(
                        r.itt,
                        r.ttt,
                        0,
                        r.buffer_offset,
                        r.desired_len as usize,
                        true,
                    ));
                }
                Output::Execute(t) => {
                    let len: usize = t.data.iter().map(Bytes::len).sum();
                    assert_eq!(len, EDTL as usize, "task {} has all its data", t.itt);
                    h.c.complete(
                        t.itt,
                        ScsiCompletion {
                            write_len: EDTL,
                            ..Default::default()
                        },
                    );
                }
                Output::Send(Pdu::ScsiResponse(r)) => {
                    assert_eq!((r.status, r.residual), (0, 0));
                    held.remove(&r.itt);
                    responses += 1;
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
    }
    assert_eq!(responses, N, "every write answered");
    assert!(
        peak <= BUDGET + N as usize * IMM + EDTL as usize,
        "{peak} bytes buffered at most, budget {BUDGET}"
    );
}
