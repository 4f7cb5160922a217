//! Crash safety: `kill -9` of the server under write load, with a synchronous mirror, an
//! asynchronous mirror and a snapshot active, at 20 kill points. After each restart every
//! write acknowledged with FUA is on the source and on the synchronous mirror's target, the
//! asynchronous target is a prefix of the source's writes, the snapshot is unchanged, and
//! every relationship is back. A second test does the same for writes held in memory on a
//! volume with only a snapshot.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use iscsi_proto::pdu::{Pdu, ScsiCommand};
use serde_json::{Value, json};

use crate::{
    harness::{IQN, Server},
    initiator::Initiator,
};

const HOST: &str = "iqn.2026-11.test:crash";
const BLOCKS_PER_ROUND: u32 = 1600;
const ROUNDS: u32 = 20;

fn lun_id(lun: u16) -> u64 {
    u64::from(lun) << 48
}

/// A 512-byte block naming its LUN, round and sequence number.
fn block(lun: u8, round: u32, seq: u32) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0] = 0xa0 | lun;
    b[1..5].copy_from_slice(&round.to_be_bytes());
    b[5..9].copy_from_slice(&seq.to_be_bytes());
    for (k, x) in b[9..].iter_mut().enumerate() {
        *x = (k as u32 ^ seq ^ round) as u8 | 1;
    }
    b
}

/// WRITE(10) of one block; Some(status) when answered, None when the connection died.
fn write_block(i: &mut Initiator, lun: u16, lba: u32, data: &[u8], fua: bool) -> Option<u8> {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x2a;
    cdb[1] = if fua { 0x08 } else { 0 };
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[8] = 1;
    command(i, lun, &cdb, data)
}

/// TEST UNIT READY until no unit attention is left (or the connection died).
fn settle(i: &mut Initiator, lun: u16) -> Option<()> {
    for _ in 0..5 {
        if command(i, lun, &[0u8; 16], &[])? == 0 {
            return Some(());
        }
    }
    Some(())
}

/// One command with its data as immediate data; None when the connection died.
fn command(i: &mut Initiator, lun: u16, cdb: &[u8; 16], data: &[u8]) -> Option<u8> {
    let itt = i.itt();
    let cmd = Pdu::ScsiCommand(ScsiCommand {
        final_bit: true,
        write: !data.is_empty(),
        attr: 1,
        lun: lun_id(lun),
        itt,
        expected_len: data.len() as u32,
        cmd_sn: i.cmd_sn,
        exp_stat_sn: i.exp_stat_sn,
        cdb: iscsi_proto::pdu::Cdb::from_slice(cdb),
        data: Bytes::copy_from_slice(data),
        ..Default::default()
    });
    i.cmd_sn = i.cmd_sn.wrapping_add(1);
    let wire = i.enc.encode(&cmd).to_bytes();
    if std::io::Write::write_all(&mut i.stream, &wire).is_err() {
        return None;
    }
    loop {
        match i.recv_within(Duration::from_secs(5))? {
            Pdu::ScsiResponse(r) if r.itt == itt => return Some(r.status),
            _ => {}
        }
    }
}

fn admin_ok(s: &Server, method: &str, params: Value) -> admin::client::Response {
    let mut c = s.admin();
    let r = c.call(method, params.clone()).expect("admin call");
    assert!(r.ok(), "{method} {params}: {:?}", r.body);
    r
}

fn syncs(s: &Server) -> Vec<Value> {
    let r = admin_ok(
        s,
        "EnumerateInstances",
        json!({"ClassName": "CIM_StorageSynchronized"}),
    );
    r.get("Instances")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn wait_all_synchronized(s: &Server) {
    let t = Instant::now();
    loop {
        let all = syncs(s);
        let ready = all.iter().all(|x| {
            x["CopyState"] == json!(4) && x["IronLun_LagBytes"].as_u64().unwrap_or(0) == 0
        });
        if ready {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "relationships did not recover: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Snapshot volume `src` (as `snap_1`) and expose the snapshot as LUN `lun`.
fn snapshot_src_as(s: &Server, lun: u16) {
    admin_ok(
        s,
        "CreateGroupReplica",
        json!({"SyncType": 7, "SourceElement": "volume:src", "RelationshipName": "snap", "WaitForCopyState": 4}),
    );
    admin_ok(
        s,
        "ExposeVolume",
        json!({"TheElement": "volume:snap_1", "Target": IQN, "Lun": lun}),
    );
}

fn read_file_block(img: &[u8], lba: u32) -> &[u8] {
    let off = lba as usize * 512;
    &img[off..off + 512]
}

/// The configuration of a server whose LUN 0 is volume `src` (32 MiB), then `more`.
fn config(more: &str) -> String {
    format!(
        r#"
[[portal]]
address = "127.0.0.1:0"

[[target]]
name = "{IQN}"

[[target.lun]]
lun = 0
path = "{{DIR}}/lun0.img"
size = "32MiB"
name = "src"
{more}"#
    )
}

#[test]
fn kill_nine_under_load_loses_nothing_acknowledged() {
    let mut s = Server::start_config(&config(
        r#"
[[target.lun]]
lun = 1
path = "{DIR}/lun1.img"
size = "32MiB"
name = "asrc"
"#,
    ));
    // A pattern, a snapshot of it (exposed as LUN 2), then the mirrors.
    {
        let mut i = Initiator::connect(s.addr());
        assert_eq!(i.login(HOST, IQN, &[]).status_class, 0);
        i.clear_ua(0);
        let pattern: Vec<u8> = (0..1u32 << 20).map(|x| (x % 251) as u8).collect();
        assert_eq!(
            i.scsi(
                0,
                &[0x2a, 0, 0, 0, 0, 0, 0, 0x08, 0, 0],
                &pattern,
                1 << 20,
                false
            )
            .status,
            0
        );
    }
    snapshot_src_as(&s, 2);
    let r = admin_ok(
        &s,
        "CreateGroupReplica",
        json!({"SyncType": 6, "Mode": 2, "SourceElement": "volume:src", "RelationshipName": "m"}),
    );
    let _ = r;
    admin_ok(
        &s,
        "CreateGroupReplica",
        json!({"SyncType": 6, "Mode": 3, "SourceElement": "volume:asrc", "RelationshipName": "am"}),
    );
    wait_all_synchronized(&s);
    let relationships: Vec<(Value, Value, Value)> = syncs(&s)
        .iter()
        .map(|x| {
            (
                x["Ref"].clone(),
                x["SyncType"].clone(),
                x["SyncedElement"].clone(),
            )
        })
        .collect();
    assert_eq!(relationships.len(), 3);
    let snapshot_cut: Vec<u8> = (0..1u32 << 20).map(|x| (x % 251) as u8).collect();
    let pool = s.path("data/pool");

    let mut total_acked = 0usize;
    for round in 0..ROUNDS {
        let acked = Arc::new(Mutex::new(Vec::<(u8, u32)>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let addr = s.addr();
        let writer = {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = Initiator::connect(addr);
                if i.login(HOST, IQN, &[]).status_class != 0 {
                    return;
                }
                for lun in [0u16, 1] {
                    if settle(&mut i, lun).is_none() {
                        return;
                    }
                }
                for seq in 0..BLOCKS_PER_ROUND - 100 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let lba = 4096 + round * BLOCKS_PER_ROUND + seq;
                    // LUN 0 with FUA, LUN 1 without (its mirror is asynchronous).
                    match write_block(&mut i, 0, lba, &block(0, round, seq), true) {
                        Some(0) => acked.lock().unwrap().push((0, seq)),
                        Some(_) => continue,
                        None => return,
                    }
                    match write_block(&mut i, 1, lba, &block(1, round, seq), false) {
                        Some(0) => acked.lock().unwrap().push((1, seq)),
                        Some(_) => {}
                        None => return,
                    }
                }
            })
        };
        // The kill comes while writes flow: after the first acknowledgement (login and unit
        // attentions can take a while on a loaded machine), at a delay that varies by round.
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().is_empty() && !writer.is_finished() && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50 + u64::from(round % 5) * 60));
        let pid = s.pid();
        // SAFETY: kill(2) on the server this test started.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
        stop.store(true, Ordering::Relaxed);
        let _ = writer.join();
        let acked = acked.lock().unwrap().clone();
        assert!(
            !acked.is_empty(),
            "round {round}: nothing was written before the kill"
        );
        total_acked += acked.len();

        // What the files hold right after the kill.
        let src = std::fs::read(s.path("lun0.img")).unwrap();
        let sync_target = std::fs::read(pool.join("m_1.img")).unwrap();
        let asrc = std::fs::read(s.path("lun1.img")).unwrap();
        let async_target = std::fs::read(pool.join("am_1.img")).unwrap();
        for &(lun, seq) in &acked {
            let lba = 4096 + round * BLOCKS_PER_ROUND + seq;
            let want = block(lun, round, seq);
            if lun == 0 {
                assert_eq!(
                    read_file_block(&src, lba),
                    &want[..],
                    "round {round}: acknowledged FUA write {seq} missing on the source"
                );
                assert_eq!(
                    read_file_block(&sync_target, lba),
                    &want[..],
                    "round {round}: acknowledged FUA write {seq} missing on the synchronous target"
                );
            } else {
                assert_eq!(
                    read_file_block(&asrc, lba),
                    &want[..],
                    "round {round}: acknowledged write {seq} missing on the source"
                );
            }
        }
        // The asynchronous target holds a prefix of this round's writes, each intact.
        let mut present = (0..BLOCKS_PER_ROUND - 100).map(|seq| {
            let lba = 4096 + round * BLOCKS_PER_ROUND + seq;
            let b = read_file_block(&async_target, lba);
            if b == &block(1, round, seq)[..] {
                true
            } else {
                assert!(
                    b.iter().all(|&x| x == 0),
                    "round {round}: asynchronous block {seq} torn"
                );
                false
            }
        });
        let prefix = present.by_ref().take_while(|&p| p).count();
        assert!(
            present.all(|p| !p),
            "round {round}: the asynchronous target is not a prefix (hole after {prefix})"
        );

        s.restart(false);
        let _ = s.pid();
        // Every relationship is back, and recovers.
        wait_all_synchronized(&s);
        let after: Vec<(Value, Value, Value)> = syncs(&s)
            .iter()
            .map(|x| {
                (
                    x["Ref"].clone(),
                    x["SyncType"].clone(),
                    x["SyncedElement"].clone(),
                )
            })
            .collect();
        assert_eq!(after, relationships, "round {round}: relationships changed");
        // The snapshot still holds the cut.
        let mut i = Initiator::connect(s.addr());
        assert_eq!(i.login(HOST, IQN, &[]).status_class, 0);
        i.clear_ua(lun_id(2));
        let snap = i.scsi(
            lun_id(2),
            &[0x28, 0, 0, 0, 0, 0, 0, 0x08, 0, 0],
            &[],
            1 << 20,
            true,
        );
        assert_eq!(snap.status, 0);
        assert!(
            snap.data == snapshot_cut,
            "round {round}: the snapshot changed"
        );
        // After the recovery the targets equal their sources.
        let pair = |name: &str, target: &str| {
            let a = std::fs::read(s.path(name)).unwrap();
            let b = std::fs::read(pool.join(target)).unwrap();
            assert!(
                a == b,
                "round {round}: {target} differs from {name} after the recovery"
            );
        };
        pair("lun0.img", "m_1.img");
        pair("lun1.img", "am_1.img");
    }
    assert!(
        total_acked > 100,
        "only {total_acked} writes in {ROUNDS} rounds"
    );
}

/// A volume with only a snapshot holds first writes in memory until their chunks are saved
/// (`docs/replication.md`). `kill -9` at different points of a stream of such writes, each
/// tenth one followed by SYNCHRONIZE CACHE: after each restart the snapshot still reads the
/// cut, every write acknowledged before a successful flush is on the source, and every other
/// acknowledged write is either there or not at all.
#[test]
fn kill_nine_with_held_writes_keeps_the_snapshot_and_every_flushed_write() {
    const CHUNK_BLOCKS: u32 = 128;
    const PER_ROUND: u32 = 80;
    const HELD_ROUNDS: u32 = 6;
    let mut s = Server::start_config(&config(""));
    let cut: Vec<u8> = (0..32u32 << 20).map(|x| (x % 249) as u8).collect();
    {
        let mut i = Initiator::connect(s.addr());
        assert_eq!(i.login(HOST, IQN, &[]).status_class, 0);
        i.clear_ua(0);
        for (k, part) in cut.chunks(1 << 20).enumerate() {
            let mut cdb = [0x2a, 0, 0, 0, 0, 0, 0, 0x08, 0, 0];
            cdb[2..6].copy_from_slice(&(k as u32 * 2048).to_be_bytes());
            assert_eq!(i.scsi(0, &cdb, part, 1 << 20, false).status, 0);
        }
    }
    snapshot_src_as(&s, 1);
    let mut flushed_total = 0usize;
    for round in 0..HELD_ROUNDS {
        // (seq, flushed): acknowledged writes, and whether a flush succeeded after them.
        let acked = Arc::new(Mutex::new(Vec::<(u32, bool)>::new()));
        let addr = s.addr();
        let writer = {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let mut i = Initiator::connect(addr);
                if i.login(HOST, IQN, &[]).status_class != 0 || settle(&mut i, 0).is_none() {
                    return;
                }
                for seq in 0..PER_ROUND {
                    // Each write is the first to its chunk since the cut.
                    let lba = (round * PER_ROUND + seq) * CHUNK_BLOCKS + seq % CHUNK_BLOCKS;
                    match write_block(&mut i, 0, lba, &block(0, round, seq), false) {
                        Some(0) => acked.lock().unwrap().push((seq, false)),
                        Some(_) => continue,
                        None => return,
                    }
                    if seq % 10 == 9 {
                        let sync = [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                        match command(&mut i, 0, &sync, &[]) {
                            Some(0) => {
                                for a in acked.lock().unwrap().iter_mut() {
                                    a.1 = true;
                                }
                            }
                            Some(_) => {}
                            None => return,
                        }
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(2 + u64::from(round) * 7));
        // SAFETY: kill(2) on the server this test started.
        unsafe {
            libc::kill(s.pid() as i32, libc::SIGKILL);
        }
        let _ = writer.join();
        let acked = acked.lock().unwrap().clone();
        let src = std::fs::read(s.path("lun0.img")).unwrap();
        for &(seq, flushed) in &acked {
            let lba = (round * PER_ROUND + seq) * CHUNK_BLOCKS + seq % CHUNK_BLOCKS;
            let on_disk = read_file_block(&src, lba);
            let new = block(0, round, seq);
            if flushed {
                flushed_total += 1;
                assert_eq!(on_disk, &new[..], "round {round}: flushed write {seq} lost");
            } else {
                assert!(
                    on_disk == &new[..] || on_disk == read_file_block(&cut, lba),
                    "round {round}: write {seq} is neither there nor absent"
                );
            }
        }
        s.restart(false);
        let mut i = Initiator::connect(s.addr());
        assert_eq!(i.login(HOST, IQN, &[]).status_class, 0);
        i.clear_ua(lun_id(1));
        for k in 0..32u32 {
            let mut cdb = [0x28, 0, 0, 0, 0, 0, 0, 0x08, 0, 0];
            cdb[2..6].copy_from_slice(&(k * 2048).to_be_bytes());
            let r = i.scsi(lun_id(1), &cdb, &[], 1 << 20, true);
            assert_eq!(r.status, 0);
            let want = &cut[(k as usize) << 20..(k as usize + 1) << 20];
            assert!(
                r.data == want,
                "round {round}: the snapshot changed in MiB {k}"
            );
        }
    }
    assert!(flushed_total > 0, "no write was flushed before a kill");
}
