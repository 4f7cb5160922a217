//! The per-command path of the full feature phase allocates nothing in steady state: a
//! 4 KiB WRITE with immediate data is decoded, becomes a task, is completed and its SCSI
//! Response encoded, with no heap allocation per command (buffers grow in chunks, so a
//! few allocations are amortized over many commands). Counted by
//! `tests/support/counting_alloc.rs`.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use iscsi_proto::{
    ffp::{Connection, FfpConfig, Output, ScsiCompletion},
    frame::{FrameDecoder, FrameEncoder},
    login::LoginOutcome,
    negotiate::{Params, SessionType},
    pdu::{Cdb, Pdu, ScsiCommand},
};

#[path = "../../../tests/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, allocations};

#[global_allocator]
static ALLOC: Counting = Counting;

fn connection() -> Connection {
    let params = Params {
        immediate_data: true,
        initial_r2t: false,
        max_recv_data_segment_length: 262_144,
        ..Params::default()
    };
    let outcome = LoginOutcome {
        initiator_name: "iqn.2026-11.test:i".into(),
        initiator_alias: None,
        target_name: Some("iqn.2026-11.test:t".into()),
        session_type: SessionType::Normal,
        isid: [0; 6],
        tsih: 1,
        cid: 0,
        params,
        exp_cmd_sn: 0,
        stat_sn: 0,
        chap_user: None,
    };
    let cfg = FfpConfig {
        queue_depth: 64,
        luns: vec![0],
        ..FfpConfig::default()
    };
    Connection::new(&outcome, cfg, Instant::now())
}

/// `n` WRITE(10) commands of 4 KiB with immediate data, on the wire, from `cmd_sn`.
fn writes(cmd_sn: u32, n: u32) -> BytesMut {
    let mut enc = FrameEncoder::default();
    let mut wire = BytesMut::new();
    for k in 0..n {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x2a;
        cdb[8] = 8;
        let pdu = Pdu::ScsiCommand(ScsiCommand {
            final_bit: true,
            write: true,
            attr: 1,
            itt: cmd_sn + k,
            expected_len: 4096,
            cmd_sn: cmd_sn + k,
            cdb: Cdb::from_slice(&cdb),
            data: Bytes::from(vec![0x5a; 4096]),
            ..Default::default()
        });
        wire.extend_from_slice(&enc.encode(&pdu).to_bytes());
    }
    wire
}

/// Run every command of `wire` through the connection as the server does, 32 at a time:
/// decode, execute (complete at once), encode each response.
fn run(c: &mut Connection, dec: &FrameDecoder, enc: &mut FrameEncoder, wire: &mut BytesMut) -> u32 {
    let mut responses = 0;
    let mut done: Vec<u32> = Vec::with_capacity(64);
    let now = Instant::now();
    loop {
        let mut frames = 0;
        while frames < 32 {
            match dec.decode(wire) {
                Ok(Some(f)) => c.handle_frame(&f, now),
                Ok(None) => break,
                Err(e) => panic!("{e:?}"),
            }
            frames += 1;
        }
        if frames == 0 {
            return responses;
        }
        while let Some(o) = c.poll_output() {
            match o {
                Output::Execute(t) => done.push(t.itt),
                Output::Send(p) => {
                    let _frame = enc.encode(&p);
                    responses += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
            for itt in done.drain(..) {
                c.complete(
                    itt,
                    ScsiCompletion {
                        write_len: 4096,
                        ..Default::default()
                    },
                );
            }
        }
    }
}

#[test]
fn a_write_command_allocates_nothing_in_steady_state() {
    const N: u32 = 2000;
    let mut c = connection();
    let dec = FrameDecoder {
        max_data_segment: 262_144,
        ..Default::default()
    };
    let mut enc = FrameEncoder::default();
    // Warm up: maps, queues and the encoder's buffer reach their working size.
    let mut warm = writes(0, 256);
    assert_eq!(run(&mut c, &dec, &mut enc, &mut warm), 256);
    let mut wire = writes(256, N);
    let mut responses = 0;
    let n = allocations(|| responses = run(&mut c, &dec, &mut enc, &mut wire));
    assert_eq!(responses, N, "every command answered");
    assert!(
        n * 20 <= u64::from(N),
        "{n} allocations for {N} commands: more than one per 20 commands"
    );
}
