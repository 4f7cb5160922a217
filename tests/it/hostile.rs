//! Hostile clients over TCP: every malformed or out-of-order thing a client can send gets
//! its RFC 7143 answer or a closed connection, and every other session keeps working.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use bytes::Bytes;
use iscsi_proto::pdu::{DataOut, NopOut, Pdu, RESERVED_TAG, ScsiCommand};

use crate::{
    harness::{IQN, Server},
    initiator::Initiator,
};

const HOST: &str = "iqn.2026-11.test:host";
/// Another initiator (the same name and ISID would reinstate HOST's session).
const OTHER: &str = "iqn.2026-11.test:other";

fn server() -> Server {
    Server::start_config(&format!(
        r#"
[server]
data_dir = "{{DIR}}/data"
login_timeout_secs = 2
queue_depth = 8

[[portal]]
address = "127.0.0.1:0"

[[target]]
name = "{IQN}"

[[target.lun]]
lun = 0
path = "{{DIR}}/lun0.img"
size = "64MiB"
"#
    ))
}

fn logged_in(s: &Server) -> Initiator {
    logged_in_as(s, HOST)
}

fn logged_in_as(s: &Server, name: &str) -> Initiator {
    let mut i = Initiator::connect(s.addr());
    assert_eq!(i.login(name, IQN, &[]).status_class, 0);
    i.clear_ua(0);
    i
}

/// A healthy session: a write and a read back of its own pattern.
fn still_works(i: &mut Initiator, seed: u8) {
    let data = vec![seed; 4096];
    let lba = u32::from(seed) * 8;
    let mut cdb = [0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0];
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    assert_eq!(i.scsi(0, &cdb, &data, 4096, false).status, 0, "write");
    cdb[0] = 0x28;
    assert_eq!(i.scsi(0, &cdb, &[], 4096, true).data, data, "read back");
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0)
}

/// Whether the peer closed within `t` (reads and discards whatever comes first).
fn closes_within(stream: &mut TcpStream, t: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < t {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn truncated_and_oversized_pdus() {
    let s = server();
    let mut good = logged_in(&s);
    // Half a header, then the client goes away.
    let mut t = TcpStream::connect(s.addr()).unwrap();
    t.write_all(&[0x43, 0x87, 0, 0, 0, 0]).unwrap();
    drop(t);
    // A login PDU announcing more data than it sends, then silence: the login timeout.
    let mut t = TcpStream::connect(s.addr()).unwrap();
    let mut hdr = [0u8; 48];
    hdr[0] = 0x43;
    hdr[1] = 0x87;
    hdr[7] = 100;
    t.write_all(&hdr).unwrap();
    assert!(
        closes_within(&mut t, Duration::from_secs(5)),
        "a stalled login is dropped"
    );
    // A login data segment above the 8192 bytes allowed before negotiation.
    let mut i = Initiator::connect(s.addr());
    let mut req = i.login_request(1, 3, true, &[("InitiatorName", HOST), ("TargetName", IQN)]);
    let mut big = req.data.to_vec();
    big.resize(20_000, b'A');
    req.data = Bytes::from(big);
    i.send(&Pdu::LoginRequest(req));
    assert!(
        i.closed(),
        "an oversized login segment closes the connection"
    );
    still_works(&mut good, 1);
}

#[test]
fn login_out_of_order_and_bad_keys() {
    let s = Server::start(r#"chap = [{ user = "u", secret = "secret-of-u-123" }]"#);
    // CHAP is required: straight to the operational stage is an authentication failure.
    let mut i = Initiator::connect(s.addr());
    let r = i.login(HOST, IQN, &[]);
    assert_eq!((r.status_class, r.status_detail), (2, 1));
    assert!(i.closed());
    // A reserved stage (CSG 2).
    let mut i = Initiator::connect(s.addr());
    let r = i.login_step(2, 3, true, &[("InitiatorName", HOST), ("TargetName", IQN)]);
    assert_eq!(r.status_class, 2, "reserved stage: initiator error");
    // A key offered twice with different values.
    let s = server();
    let mut good = logged_in(&s);
    let mut i = Initiator::connect(s.addr());
    let r = i.login_step(
        1,
        3,
        true,
        &[
            ("InitiatorName", HOST),
            ("TargetName", IQN),
            ("SessionType", "Normal"),
            ("MaxBurstLength", "65536"),
            ("MaxBurstLength", "262144"),
        ],
    );
    assert_eq!(
        r.status_class, 2,
        "a key negotiated twice is an initiator error"
    );
    // An oversized key value: answered Reject or refused, never accepted as is.
    let mut i = Initiator::connect(s.addr());
    let long = "x".repeat(4000);
    let r = i.login_step(
        1,
        3,
        true,
        &[
            ("InitiatorName", OTHER),
            ("TargetName", IQN),
            ("SessionType", "Normal"),
            ("X-Vendor-Key", &long),
        ],
    );
    if r.status_class == 0 {
        let keys = iscsi_proto::text::TextKeys::parse(&r.data).unwrap();
        assert_ne!(keys.get("X-Vendor-Key"), Some(long.as_str()));
    }
    // A name that is not an iSCSI name.
    let mut i = Initiator::connect(s.addr());
    let r = i.login_step(
        1,
        3,
        true,
        &[("InitiatorName", "not a name"), ("TargetName", IQN)],
    );
    assert_eq!(r.status_class, 2);
    still_works(&mut good, 2);
}

#[test]
fn wrong_header_digest_closes_only_that_connection() {
    let s = server();
    let mut good = logged_in(&s);
    let mut i = Initiator::connect(s.addr());
    let r = i.login(
        OTHER,
        IQN,
        &[("HeaderDigest", "CRC32C"), ("DataDigest", "None")],
    );
    assert_eq!(r.status_class, 0);
    i.clear_ua(0);
    let mut wire = i
        .enc
        .encode(&Pdu::NopOut(NopOut {
            itt: 77,
            ttt: RESERVED_TAG,
            cmd_sn: i.cmd_sn,
            immediate: true,
            ..Default::default()
        }))
        .to_bytes()
        .to_vec();
    wire[49] ^= 0x55; // inside the header digest
    i.send_raw(&wire);
    assert!(
        i.closed(),
        "a header that fails its digest cannot be trusted: the connection closes"
    );
    still_works(&mut good, 3);
}

#[test]
fn cmdsn_outside_the_window_and_unknown_transfer_tags() {
    let s = server();
    let mut i = logged_in(&s);
    // MaxCmdSN from the last response: a command beyond it is dropped (no answer).
    let r = i.scsi(0, &[0; 6], &[], 0, false);
    assert_eq!(r.status, 0);
    let itt = i.itt();
    let far = ScsiCommand {
        final_bit: true,
        attr: 1,
        itt,
        cmd_sn: i.cmd_sn.wrapping_add(1000),
        exp_stat_sn: i.exp_stat_sn,
        cdb: iscsi_proto::pdu::Cdb::from_slice(&[0u8; 16]),
        ..Default::default()
    };
    i.send(&Pdu::ScsiCommand(far));
    assert!(
        i.recv_within(Duration::from_millis(500)).is_none(),
        "a command outside the CmdSN window gets no answer"
    );
    still_works(&mut i, 4);
    // Data-Out for a transfer the target never asked for: Reject, Invalid PDU Field.
    i.send(&Pdu::DataOut(DataOut {
        final_bit: true,
        itt: 0xdead,
        ttt: 0x1234,
        data: Bytes::from(vec![0u8; 512]),
        exp_stat_sn: i.exp_stat_sn,
        ..Default::default()
    }));
    match i.recv() {
        Pdu::Reject(r) => assert_eq!(r.reason, 0x09),
        other => panic!("expected a Reject, got {other:?}"),
    }
    still_works(&mut i, 5);
}

#[test]
fn commands_beyond_max_cmdsn_are_not_executed() {
    let s = server();
    let mut i = logged_in(&s);
    // queue_depth = 8: eight writes in the window, then eight beyond it, all sent at once
    // (one write to the socket, so that the target reads them before any completes and
    // widens the window).
    let start = i.cmd_sn;
    let mut itts = Vec::new();
    let mut wire = Vec::new();
    for k in 0..16u32 {
        let itt = i.itt();
        itts.push(itt);
        let mut cdb = [0u8; 16];
        cdb[0] = 0x2a;
        cdb[2..6].copy_from_slice(&(10_000 + k).to_be_bytes());
        cdb[8] = 1;
        let cmd = Pdu::ScsiCommand(ScsiCommand {
            final_bit: true,
            write: true,
            attr: 1,
            itt,
            expected_len: 512,
            cmd_sn: start.wrapping_add(k),
            exp_stat_sn: i.exp_stat_sn,
            cdb: iscsi_proto::pdu::Cdb::from_slice(&cdb),
            data: Bytes::from(vec![0xee; 512]),
            ..Default::default()
        });
        wire.extend_from_slice(&i.enc.encode(&cmd).to_bytes());
    }
    i.send_raw(&wire);
    let mut answered = 0;
    let mut max_cmd_sn = 0;
    while let Some(p) = i.recv_within(Duration::from_millis(700)) {
        if let Pdu::ScsiResponse(r) = p {
            answered += 1;
            max_cmd_sn = r.max_cmd_sn;
        }
    }
    assert!(
        (8..16).contains(&answered),
        "the window's commands run, not all ({answered})"
    );
    let _ = max_cmd_sn;
    // Exactly the answered commands were executed: the others wrote nothing.
    let mut cdb = [0x28, 0, 0, 0, 0x27, 0x10, 0, 0, 16, 0];
    cdb[2..6].copy_from_slice(&10_000u32.to_be_bytes());
    let i2 = &mut logged_in_as(&s, OTHER);
    let r = i2.scsi(0, &cdb, &[], 16 * 512, true);
    let written = r.data.chunks(512).filter(|b| b[0] == 0xee).count();
    assert_eq!(
        written, answered,
        "a command dropped outside the window must not run"
    );
}

#[test]
fn a_thousand_dropped_connections_leave_nothing_behind() {
    let s = server();
    let pid = s.pid();
    let mut good = logged_in(&s);
    still_works(&mut good, 6);
    let (rss0, fds0) = (rss_kib(pid), open_fds(pid));
    for k in 0..1000u32 {
        let mut t = TcpStream::connect(s.addr()).unwrap();
        match k % 3 {
            0 => {}
            1 => {
                let _ = t.write_all(&[0x43; 30]);
            }
            _ => {
                let mut i = Initiator::connect(s.addr());
                let _ = i.login(OTHER, IQN, &[]);
            }
        }
    }
    // Give the server a moment to notice the closes.
    let t = Instant::now();
    while open_fds(pid) > fds0 + 2 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        open_fds(pid) <= fds0 + 2,
        "descriptors leaked: {} then {}",
        fds0,
        open_fds(pid)
    );
    let rss1 = rss_kib(pid);
    assert!(
        rss1 < rss0 + 16 * 1024,
        "RSS grew from {rss0} KiB to {rss1} KiB"
    );
    still_works(&mut good, 7);
}

/// NOP-Out pings are answered within a second while eight sessions run heavy I/O.
#[test]
fn pings_are_answered_under_load() {
    let s = server();
    let addr = s.addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Collected: every worker must be running before the pings start.
    #[allow(clippy::needless_collect)]
    let workers: Vec<_> = (0..8u32)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = Initiator::connect(addr);
                assert_eq!(i.login(&format!("{HOST}{w}"), IQN, &[]).status_class, 0);
                i.clear_ua(0);
                let data = vec![w as u8; 256 << 10];
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let lba = w * 4096 + (n % 8) * 512;
                    let mut cdb = [0x2a, 0, 0, 0, 0, 0, 0, 0x02, 0, 0];
                    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
                    assert_eq!(i.scsi(0, &cdb, &data, 256 << 10, false).status, 0);
                    cdb[0] = 0x28;
                    assert_eq!(i.scsi(0, &cdb, &[], 256 << 10, true).status, 0);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut p = logged_in(&s);
    std::thread::sleep(Duration::from_millis(300));
    let mut worst = Duration::ZERO;
    for k in 0..15u32 {
        let t = Instant::now();
        p.send(&Pdu::NopOut(NopOut {
            itt: 1000 + k,
            ttt: RESERVED_TAG,
            cmd_sn: p.cmd_sn,
            exp_stat_sn: p.exp_stat_sn,
            immediate: true,
            data: Bytes::from_static(b"ping"),
            ..Default::default()
        }));
        loop {
            match p.recv() {
                Pdu::NopIn(n) if n.itt == 1000 + k => {
                    assert_eq!(&n.data[..], b"ping");
                    break;
                }
                _ => {}
            }
        }
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(150));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let done: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(done > 8, "the load ran ({done} write+read pairs)");
    assert!(
        worst < Duration::from_secs(1),
        "slowest ping answer: {worst:?}"
    );
}
