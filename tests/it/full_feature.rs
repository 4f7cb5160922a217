//! Full feature phase over TCP: data on disk, R2T, residuals, NOP, task management, logout,
//! rejects.

use std::collections::HashMap;

use bytes::Bytes;
use iscsi_proto::pdu::{
    Cdb, LogoutRequest, NopOut, Pdu, RESERVED_TAG, ScsiCommand, TaskMgmtRequest,
};

use crate::{
    harness::{IQN, Server},
    initiator::Initiator,
};

fn logged_in(s: &Server) -> Initiator {
    let mut i = Initiator::connect(s.addr());
    assert_eq!(i.login("iqn.2026-11.test:host", IQN, &[]).status_class, 0);
    i.clear_ua(0);
    i
}

#[test]
fn writes_reach_the_image_file() {
    let s = Server::start("");
    let mut i = logged_in(&s);
    // 1 MiB at LBA 2048: immediate data, unsolicited Data-Out and R2T-solicited data.
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|x| (x.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let w = i.scsi(
        0,
        &[0x2a, 0, 0, 0, 0x08, 0, 0, 0x08, 0, 0],
        &data,
        1 << 20,
        false,
    );
    assert_eq!(w.status, 0);
    let sync = i.scsi(0, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0, false);
    assert_eq!(sync.status, 0);
    let img = std::fs::read(s.path("lun0.img")).unwrap();
    assert_eq!(&img[2048 * 512..2048 * 512 + (1 << 20)], &data[..]);
    let r = i.scsi(
        0,
        &[0x28, 0, 0, 0, 0x08, 0, 0, 0x08, 0, 0],
        &[],
        1 << 20,
        true,
    );
    assert_eq!(r.data, data);
}

/// A READ(10) or WRITE(10) of 4 KiB blocks (8 sectors each) at 4 KiB block `at`, with its
/// data as immediate data, numbered in the initiator's sequence.
fn rw10(i: &mut Initiator, at: u32, data: Option<&[u8]>, blocks: u16) -> (u32, Vec<u8>) {
    let itt = i.itt();
    let lba = (at * 8).to_be_bytes();
    let n = (blocks * 8).to_be_bytes();
    let op = if data.is_some() { 0x2a } else { 0x28 };
    let cdb = [op, 0, lba[0], lba[1], lba[2], lba[3], 0, n[0], n[1], 0];
    let pdu = Pdu::ScsiCommand(ScsiCommand {
        final_bit: true,
        read: data.is_none(),
        write: data.is_some(),
        attr: 1,
        lun: 0,
        itt,
        expected_len: u32::from(blocks) * 4096,
        cmd_sn: i.cmd_sn,
        exp_stat_sn: i.exp_stat_sn,
        cdb: Cdb::from_slice(&cdb),
        data: data.map(Bytes::copy_from_slice).unwrap_or_default(),
        ..Default::default()
    });
    i.cmd_sn = i.cmd_sn.wrapping_add(1);
    (itt, i.enc.encode(&pdu).to_bytes().to_vec())
}

/// Writes to adjacent blocks sent together are gathered into one write by the target; what
/// arrives after them in the same burst (a read of them, a second write of a block) must
/// still see them done first, and every write gets its own answer.
#[test]
fn adjacent_writes_sent_together_are_all_done_before_what_follows_them() {
    let s = Server::start("");
    let mut i = logged_in(&s);
    let block = |seed: u32| -> Vec<u8> {
        (0..4096u32)
            .map(|x| (x.wrapping_mul(2_654_435_761) >> 24) as u8 ^ seed as u8)
            .collect()
    };
    let mut burst = Vec::new();
    let mut writes = Vec::new();
    // 24 adjacent 4 KiB writes at 4 KiB block 100, in one send.
    for k in 0..24 {
        let (itt, b) = rw10(&mut i, 100 + k, Some(&block(k)), 1);
        writes.push(itt);
        burst.extend(b);
    }
    let (read1, b) = rw10(&mut i, 100, None, 24);
    burst.extend(b);
    // Block 101 again, then block 102 again (adjacent to it), then a read of all.
    for (k, seed) in [(101, 201), (102, 202)] {
        let (itt, b) = rw10(&mut i, k, Some(&block(seed)), 1);
        writes.push(itt);
        burst.extend(b);
    }
    let (read2, b) = rw10(&mut i, 100, None, 24);
    burst.extend(b);
    i.send_raw(&burst);

    let mut status = HashMap::new();
    let mut read_data: HashMap<u32, Vec<u8>> = HashMap::new();
    while status.len() < writes.len() + 2 {
        match i.recv() {
            Pdu::ScsiResponse(r) => {
                i.exp_stat_sn = r.stat_sn.wrapping_add(1);
                status.insert(r.itt, r.status);
            }
            Pdu::DataIn(d) => {
                let buf = read_data.entry(d.itt).or_default();
                assert_eq!(d.buffer_offset as usize, buf.len(), "Data-In in order");
                buf.extend_from_slice(&d.data);
                if let Some(st) = d.status {
                    status.insert(d.itt, st);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for itt in &writes {
        assert_eq!(status.get(itt), Some(&0), "write {itt} answered GOOD");
    }
    assert_eq!((status[&read1], status[&read2]), (0, 0));
    let first: Vec<u8> = (0..24).flat_map(block).collect();
    assert!(read_data[&read1] == first, "the read sees all 24 writes");
    let mut last = first;
    last[4096..8192].copy_from_slice(&block(201));
    last[8192..12288].copy_from_slice(&block(202));
    assert!(
        read_data[&read2] == last,
        "the rewrites land after the first writes"
    );
    let sync = i.scsi(0, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0, false);
    assert_eq!(sync.status, 0);
    let img = std::fs::read(s.path("lun0.img")).unwrap();
    assert!(img[100 * 4096..124 * 4096] == last[..], "on disk");
}

#[test]
fn residuals_and_sense() {
    let s = Server::start("");
    let mut i = logged_in(&s);
    let r = i.scsi(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[], 1024, true);
    assert_eq!(
        (r.status, r.data.len(), r.residual),
        (0, 512, (true, false, 512))
    );
    let r = i.scsi(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0], &[], 512, true);
    assert_eq!(
        (r.status, r.data.len(), r.residual),
        (0, 512, (false, true, 512))
    );
    // Beyond the end of the 64 MiB LUN.
    let r = i.scsi(0, &[0x28, 0, 0, 0x02, 0, 0, 0, 0, 1, 0], &[], 512, true);
    assert_eq!((r.status, r.sense[2] & 0xf, r.sense[12]), (2, 5, 0x21));
    // Unknown opcode.
    let r = i.scsi(0, &[0xc7, 0, 0, 0, 0, 0], &[], 0, false);
    assert_eq!((r.status, r.sense[12]), (2, 0x20));
    // A LUN that does not exist.
    let r = i.scsi(0x0005_0000_0000_0000, &[0, 0, 0, 0, 0, 0], &[], 0, false);
    assert_eq!((r.status, r.sense[12]), (2, 0x25));
}

#[test]
fn nop_out_ping_is_answered() {
    let s = Server::start("");
    let mut i = logged_in(&s);
    i.send(&Pdu::NopOut(NopOut {
        immediate: true,
        itt: 77,
        ttt: RESERVED_TAG,
        cmd_sn: i.cmd_sn,
        exp_stat_sn: i.exp_stat_sn,
        data: Bytes::from_static(b"are you there"),
        ..Default::default()
    }));
    let Pdu::NopIn(n) = i.recv() else { panic!() };
    assert_eq!(
        (n.itt, n.ttt, &n.data[..]),
        (77, RESERVED_TAG, &b"are you there"[..])
    );
}

#[test]
fn lun_reset_then_unit_attention() {
    let s = Server::start("");
    let mut i = logged_in(&s);
    i.send(&Pdu::TaskMgmtRequest(TaskMgmtRequest {
        immediate: true,
        function: 5,
        lun: 0,
        itt: 99,
        referenced_task_tag: RESERVED_TAG,
        cmd_sn: i.cmd_sn,
        exp_stat_sn: i.exp_stat_sn,
        ..Default::default()
    }));
    let Pdu::TaskMgmtResponse(r) = i.recv() else {
        panic!()
    };
    assert_eq!((r.itt, r.response), (99, 0));
    let t = i.scsi(0, &[0; 6], &[], 0, false);
    assert_eq!(
        (t.status, t.sense[2] & 0xf, t.sense[12], t.sense[13]),
        (2, 6, 0x29, 0x03)
    );
}

/// An ABORT TASK for a write the target already answered: the task does not exist
/// (libiscsi's iSCSITMF.AbortTaskSimpleAsync fails on "function complete" after a GOOD).
/// Then one for a CmdSN never sent but inside the window: function complete, and the
/// window moves past it so the next command runs.
#[test]
fn abort_task_after_the_answer_and_before_the_command() {
    let s = Server::start("");
    let mut i = logged_in(&s);
    let write10 = [0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0];
    let cmd_sn = i.cmd_sn;
    let t = i.scsi(0, &write10, &[0x5a; 4096], 4096, false);
    assert_eq!(t.status, 0);
    let written = i.itt() - 1;
    let abort = |i: &mut Initiator, itt, referenced, ref_cmd_sn| {
        let tmf = TaskMgmtRequest {
            immediate: true,
            function: 1,
            itt,
            referenced_task_tag: referenced,
            cmd_sn: i.cmd_sn,
            ref_cmd_sn,
            exp_stat_sn: i.exp_stat_sn,
            ..Default::default()
        };
        i.send(&Pdu::TaskMgmtRequest(tmf));
        let Pdu::TaskMgmtResponse(r) = i.recv() else {
            panic!("expected a TMF response")
        };
        (r.itt, r.response, r.exp_cmd_sn)
    };
    assert_eq!(abort(&mut i, 900, written, cmd_sn), (900, 1, i.cmd_sn));

    // The initiator "lost" a command: its CmdSN counts as received after the abort.
    let lost = i.cmd_sn;
    i.cmd_sn = i.cmd_sn.wrapping_add(1);
    let lost_itt = i.itt();
    let after = abort(&mut i, 901, lost_itt, lost);
    assert_eq!(after, (901, 0, i.cmd_sn));
    let t = i.scsi(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], &[], 4096, true);
    assert_eq!((t.status, &t.data[..]), (0, &[0x5a; 4096][..]));
}

#[test]
fn logout_closes_the_session() {
    let s = Server::start("");
    let mut i = logged_in(&s);
    i.send(&Pdu::LogoutRequest(LogoutRequest {
        immediate: true,
        reason: 0,
        itt: 5,
        cmd_sn: i.cmd_sn,
        exp_stat_sn: i.exp_stat_sn,
        ..Default::default()
    }));
    let Pdu::LogoutResponse(r) = i.recv() else {
        panic!()
    };
    assert_eq!((r.itt, r.response), (5, 0));
    assert!(i.closed());
}

#[test]
fn unknown_opcode_is_rejected_and_oversized_segment_closes() {
    let s = Server::start("");
    let mut i = logged_in(&s);
    let mut hdr = [0u8; 48];
    hdr[0] = 0x1c;
    hdr[1] = 0x80;
    hdr[16..20].copy_from_slice(&0x1234u32.to_be_bytes());
    i.send_raw(&hdr);
    let Pdu::Reject(r) = i.recv() else { panic!() };
    assert_eq!(r.reason, 0x05);
    assert_eq!(&r.data[..], &hdr[..]);
    // The connection still works.
    assert_eq!(i.scsi(0, &[0; 6], &[], 0, false).status, 0);
    // A data segment above the declared 262144 bytes.
    let mut hdr = [0u8; 48];
    hdr[0] = 0x01;
    hdr[1] = 0xa0;
    hdr[5] = 0x10; // 1 MiB
    i.send_raw(&hdr);
    match i.try_recv() {
        Some(Pdu::Reject(r)) => {
            assert_eq!(r.reason, 0x04);
            assert!(i.closed());
        }
        None => {}
        Some(other) => panic!("unexpected {other:?}"),
    }
}

/// The NAA designator of a LUN, from VPD page 0x83.
fn naa(i: &mut Initiator, lun: u64) -> Vec<u8> {
    let r = i.scsi(lun, &[0x12, 1, 0x83, 0, 255, 0], &[], 255, true);
    let d = &r.data;
    let mut pos = 4;
    while pos + 4 <= d.len() {
        let len = usize::from(d[pos + 3]);
        if d[pos + 1] & 0x0f == 3 {
            return d[pos + 4..pos + 4 + len].to_vec();
        }
        pos += 4 + len;
    }
    panic!("no NAA designator");
}

#[test]
fn extended_copy_between_luns() {
    let s = Server::start_config(&format!(
        r#"
[[portal]]
address = "127.0.0.1:0"

[[target]]
name = "{IQN}"

[[target.lun]]
lun = 0
path = "{{DIR}}/a.img"
size = "8MiB"

[[target.lun]]
lun = 1
path = "{{DIR}}/b.img"
size = "8MiB"
"#
    ));
    let mut i = logged_in(&s);
    i.clear_ua(1 << 48);
    let data: Vec<u8> = (0..256 * 512u32).map(|x| (x % 253) as u8).collect();
    assert_eq!(
        i.scsi(
            0,
            &[0x2a, 0, 0, 0, 0, 16, 0, 1, 0, 0],
            &data,
            data.len() as u32,
            false
        )
        .status,
        0
    );
    let (a, b) = (naa(&mut i, 0), naa(&mut i, 1 << 48));
    assert_ne!(a, b);
    // Two identification target descriptors and one block-to-block segment: 256 blocks from
    // LUN 0 LBA 16 to LUN 1 LBA 100.
    let mut p = vec![0u8; 16];
    p[0] = 7;
    p[3] = 64;
    p[11] = 28;
    for id in [&a, &b] {
        let mut t = vec![0u8; 32];
        t[0] = 0xe4;
        t[4] = 0x01;
        t[5] = 0x03;
        t[7] = id.len() as u8;
        t[8..8 + id.len()].copy_from_slice(id);
        t[30] = 0x02; // block length 512
        p.extend_from_slice(&t);
    }
    let mut seg = vec![0u8; 28];
    seg[0] = 0x02;
    seg[3] = 24;
    seg[7] = 1; // destination: descriptor 1
    seg[10..12].copy_from_slice(&256u16.to_be_bytes());
    seg[12..20].copy_from_slice(&16u64.to_be_bytes());
    seg[20..28].copy_from_slice(&100u64.to_be_bytes());
    p.extend_from_slice(&seg);
    let mut cdb = [0u8; 16];
    cdb[0] = 0x83;
    cdb[10..14].copy_from_slice(&(p.len() as u32).to_be_bytes());
    let r = i.scsi(0, &cdb, &p, p.len() as u32, false);
    assert_eq!(r.status, 0, "{:?}", r.sense);
    let back = i.scsi(
        1 << 48,
        &[0x28, 0, 0, 0, 0, 100, 0, 1, 0, 0],
        &[],
        data.len() as u32,
        true,
    );
    assert_eq!(back.data, data);
    let img = std::fs::read(s.path("b.img")).unwrap();
    assert_eq!(&img[100 * 512..356 * 512], &data[..], "bytes on disk");
    // RECEIVE COPY RESULTS (COPY STATUS) of list 7: completed, 1 segment, all bytes.
    let mut rcr = [0u8; 16];
    rcr[0] = 0x84;
    rcr[2] = 7;
    rcr[13] = 64;
    let st = i.scsi(0, &rcr, &[], 64, true);
    assert_eq!(&st.data[4..7], &[1, 0, 1]);
    assert_eq!(&st.data[8..12], &(256u32 * 512).to_be_bytes());
}
