//! Replication end to end: a running server, I/O through iSCSI, the relationships driven
//! through the admin socket, replicas read back as LUNs.

use std::time::{Duration, Instant};

use admin::client::{Client, Response};
use serde_json::{Value, json};

use crate::{
    harness::{IQN, Server, run, tool},
    initiator::Initiator,
};

const HOST: &str = "iqn.2026-11.test:host";

/// A target with `n` LUNs of `size` each, volumes `test-lun0`, `test-lun1`, ...
pub fn server(n: u16, size: &str, extra: &str) -> Server {
    let mut cfg = format!(
        r#"
[[portal]]
address = "127.0.0.1:0"
{extra}
[[target]]
name = "{IQN}"
"#
    );
    for l in 0..n {
        cfg.push_str(&format!(
            "\n[[target.lun]]\nlun = {l}\npath = \"{{DIR}}/lun{l}.img\"\nsize = \"{size}\"\n"
        ));
    }
    Server::start_config(&cfg)
}

pub fn lun_id(lun: u16) -> u64 {
    u64::from(lun) << 48
}

pub fn login(s: &Server) -> Initiator {
    let mut i = Initiator::connect(s.addr());
    assert_eq!(i.login(HOST, IQN, &[]).status_class, 0);
    i.clear_ua(0);
    i
}

/// Clear pending unit attentions of a LUN (power on, REPORTED LUNS DATA HAS CHANGED).
pub fn settle(i: &mut Initiator, lun: u16) {
    i.clear_ua(lun_id(lun));
}

pub fn write(i: &mut Initiator, lun: u16, lba: u32, data: &[u8]) -> crate::initiator::Outcome {
    let blocks = (data.len() / 512) as u16;
    let mut cdb = [0x2a, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    i.scsi(lun_id(lun), &cdb, data, data.len() as u32, false)
}

pub fn write_ok(i: &mut Initiator, lun: u16, lba: u32, data: &[u8]) {
    let o = write(i, lun, lba, data);
    assert_eq!(
        o.status, 0,
        "WRITE LUN {lun} LBA {lba}: sense {:02x?}",
        o.sense
    );
}

pub fn read(i: &mut Initiator, lun: u16, lba: u32, blocks: u16) -> Vec<u8> {
    let mut cdb = [0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    let o = i.scsi(lun_id(lun), &cdb, &[], u32::from(blocks) * 512, true);
    assert_eq!(
        o.status, 0,
        "READ LUN {lun} LBA {lba}: sense {:02x?}",
        o.sense
    );
    o.data
}

/// Sense key, ASC and ASCQ of fixed-format sense data.
pub fn sense(o: &crate::initiator::Outcome) -> (u8, u8, u8) {
    let s = &o.sense;
    (
        s.get(2).map_or(0, |k| k & 0x0f),
        s.get(12).copied().unwrap_or(0),
        s.get(13).copied().unwrap_or(0),
    )
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|x| (x as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Call a method that must succeed; a job is followed to JobState 7.
pub fn ok(c: &mut Client, method: &str, params: Value) -> Response {
    let r = c.call(method, params.clone()).expect("admin call");
    assert!(r.ok(), "{method} {params}: {:?}", r.body);
    if r.code == 4096 {
        let job = r.str("Job").expect("a job with 4096").to_owned();
        wait_job(c, &job);
    }
    r
}

pub fn wait_job(c: &mut Client, job: &str) -> Value {
    let t = Instant::now();
    loop {
        let r = c.call("GetInstance", json!({"Ref": job})).expect("job");
        let inst = r.get("Instance").cloned().expect("job instance");
        match inst["JobState"].as_u64() {
            Some(7) => {
                assert_eq!(inst["OperationalStatus"], json!([2, 17]));
                return inst;
            }
            Some(10) => panic!("{job} failed: {inst}"),
            _ => {}
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{job} did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn instance(c: &mut Client, r: &str) -> Value {
    let resp = c
        .call("GetInstance", json!({"Ref": r}))
        .expect("GetInstance");
    assert_eq!(resp.code, 0, "{r}: {:?}", resp.body);
    resp.get("Instance").cloned().expect("instance")
}

/// The pairs of a group relationship.
pub fn pairs(c: &mut Client, gsync: &str) -> Vec<String> {
    instance(c, gsync)["IronLun_Members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect()
}

pub fn copy_state(c: &mut Client, sync: &str) -> u64 {
    instance(c, sync)["CopyState"].as_u64().expect("CopyState")
}

/// Expose a volume on the test target; returns its LUN.
pub fn expose(c: &mut Client, volume: &str, read_only: Option<bool>) -> u16 {
    let mut p = json!({"TheElement": format!("volume:{volume}"), "Target": IQN});
    if let Some(ro) = read_only {
        p["ReadOnly"] = json!(ro);
    }
    ok(c, "ExposeVolume", p)
        .get("Lun")
        .and_then(Value::as_u64)
        .expect("Lun") as u16
}

#[test]
fn snapshot_keeps_the_cut_and_returns_its_space() {
    let s = server(1, "64MiB", "");
    let mut i = login(&s);
    let mut c = s.admin();
    let before = pattern(1 << 20, 1);
    write_ok(&mut i, 0, 0, &before);
    let r = ok(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 7, "SourceElement": "volume:test-lun0", "RelationshipName": "snap", "WaitForCopyState": 4}),
    );
    assert_eq!(r.code, 0);
    assert_eq!(r.str("TargetGroup"), Some("group:snap"));
    let gsync = r
        .str("Synchronization")
        .expect("Synchronization")
        .to_owned();
    let pair = pairs(&mut c, &gsync).remove(0);
    assert_eq!(copy_state(&mut c, &pair), 4);
    // Keep writing after the cut. These first writes to their chunks are held in the
    // volume's write cache until their chunks are saved: read back at once, on disk after
    // SYNCHRONIZE CACHE.
    let after = pattern(512 << 10, 2);
    write_ok(&mut i, 0, 0, &after);
    assert_eq!(&read(&mut i, 0, 0, 1024)[..], &after[..]);
    let f = i.scsi(0, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0, false);
    assert_eq!(f.status, 0, "SYNCHRONIZE CACHE");
    let image = std::fs::read(s.path("lun0.img")).unwrap();
    assert_eq!(
        &image[..512 << 10],
        &after[..],
        "bytes on disk after the flush"
    );
    // The snapshot as a LUN (read-only by default): the data at the cut.
    let lun = expose(&mut c, "snap_1", None);
    assert_eq!(lun, 1);
    // LUN 0 reports the inventory change once.
    let o = i.scsi(0, &[0; 6], &[], 0, false);
    assert_eq!(
        (o.status, sense(&o)),
        (2, (6, 0x3f, 0x0e)),
        "REPORTED LUNS DATA HAS CHANGED"
    );
    settle(&mut i, 1);
    assert_eq!(read(&mut i, 1, 0, 2048), before);
    assert_eq!(&read(&mut i, 0, 0, 1024)[..], &after[..]);
    let w = write(&mut i, 1, 0, &[0u8; 512]);
    assert_eq!(
        (w.status, sense(&w)),
        (2, (7, 0x27, 0)),
        "a read-only snapshot refuses writes"
    );
    let used = instance(&mut c, "pool:default")["IronLun_SnapshotSpaceUsed"]
        .as_u64()
        .unwrap();
    assert_eq!(used, 8 * (64 << 10), "eight 64 KiB chunks were preserved");
    // Return To ResourcePool: In Use while exposed, then the space goes back.
    let r = c
        .call(
            "ModifyReplicaSynchronization",
            json!({"Operation": 19, "Synchronization": gsync}),
        )
        .unwrap();
    assert_eq!(r.code, 6, "{:?}", r.body);
    ok(
        &mut c,
        "HideVolume",
        json!({"TheElement": "volume:snap_1", "Target": IQN}),
    );
    ok(
        &mut c,
        "ModifyReplicaSynchronization",
        json!({"Operation": 19, "Synchronization": gsync, "WaitForCopyState": 15}),
    );
    assert_eq!(
        instance(&mut c, "pool:default")["IronLun_SnapshotSpaceUsed"],
        json!(0)
    );
    assert!(!s.path("data/pool/snap_1.cow").exists());
    assert_eq!(c.call("GetInstance", json!({"Ref": pair})).unwrap().code, 5);
}

#[test]
fn snapshot_of_data_written_by_qemu_img() {
    let s = server(1, "64MiB", "");
    let mut c = s.admin();
    let url = format!("iscsi://{}/{IQN}/0", s.addr());
    let first = s.path("first.raw");
    let second = s.path("second.raw");
    std::fs::write(&first, pattern(8 << 20, 7)).unwrap();
    std::fs::write(&second, pattern(4 << 20, 9)).unwrap();
    let convert = |src: &std::path::Path| {
        let (ok, out) = run(tool("qemu-img")
            .args(["convert", "-n", "-f", "raw", "-O", "raw"])
            .arg(src)
            .arg(&url));
        assert!(ok, "qemu-img convert: {out}");
    };
    convert(&first);
    ok(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 7, "SourceElement": "volume:test-lun0", "RelationshipName": "q", "WaitForCopyState": 4}),
    );
    convert(&second);
    let lun = expose(&mut c, "q_1", None);
    let out = s.path("snap.raw");
    let snap_url = format!("iscsi://{}/{IQN}/{lun}", s.addr());
    let (okk, msg) = run(tool("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(&snap_url)
        .arg(&out));
    assert!(okk, "qemu-img read: {msg}");
    let snap = std::fs::read(&out).unwrap();
    assert_eq!(
        &snap[..8 << 20],
        &pattern(8 << 20, 7)[..],
        "the snapshot is the image at the cut"
    );
    assert!(snap[8 << 20..].iter().all(|&b| b == 0));
}

#[test]
fn sync_mirror_target_equals_source_after_every_write() {
    let s = server(1, "32MiB", "");
    let mut i = login(&s);
    let mut c = s.admin();
    write_ok(&mut i, 0, 0, &pattern(4 << 20, 3));
    let r = ok(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 6, "Mode": 2, "SourceElement": "volume:test-lun0", "RelationshipName": "m", "WaitForCopyState": 4}),
    );
    let gsync = r.str("Synchronization").unwrap().to_owned();
    let pair = pairs(&mut c, &gsync).remove(0);
    assert_eq!(copy_state(&mut c, &pair), 4);
    let lun = expose(&mut c, "m_1", Some(false));
    settle(&mut i, 0);
    settle(&mut i, lun);
    for k in 0..12u32 {
        let lba = (k * 7919) % 60_000;
        write_ok(&mut i, 0, lba, &pattern(64 << 10, k as u8));
        assert_eq!(
            read(&mut i, lun, lba, 128),
            read(&mut i, 0, lba, 128),
            "after write {k}"
        );
    }
    // The target refuses host writes while it follows: DATA PROTECT, WRITE PROTECTED.
    let w = write(&mut i, lun, 0, &[0u8; 512]);
    assert_eq!((w.status, sense(&w)), (2, (7, 0x27, 0)));
    // Fracture; both sides change; Resync copies exactly the changed chunks.
    ok(
        &mut c,
        "ModifyReplicaSynchronization",
        json!({"Operation": 12, "Synchronization": gsync, "WaitForCopyState": 6}),
    );
    assert_eq!(copy_state(&mut c, &pair), 6);
    write_ok(&mut i, lun, 2048, &pattern(128 << 10, 40)); // target: chunks 16, 17
    write_ok(&mut i, 0, 10_240, &pattern(64 << 10, 41)); // source: chunk 80
    let inst = instance(&mut c, &pair);
    assert_eq!(
        (
            inst["IronLun_DirtyChunks"].as_u64(),
            inst["IronLun_TargetDirtyChunks"].as_u64()
        ),
        (Some(1), Some(2))
    );
    ok(
        &mut c,
        "ModifyReplicaSynchronization",
        json!({"Operation": 14, "Synchronization": gsync, "WaitForCopyState": 4}),
    );
    let inst = instance(&mut c, &pair);
    assert_eq!(inst["CopyState"], json!(4));
    assert_eq!(
        inst["IronLun_ChunksCopied"],
        json!(3),
        "only the three dirty chunks were copied"
    );
    assert_eq!(read(&mut i, lun, 0, 65_535), read(&mut i, 0, 0, 65_535));
}

#[test]
fn clone_waits_for_synchronized_then_detaches() {
    let s = server(1, "32MiB", "");
    let mut i = login(&s);
    let mut c = s.admin();
    let data = pattern(8 << 20, 5);
    write_ok(&mut i, 0, 0, &data);
    let r = ok(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 8, "SourceElement": "volume:test-lun0", "RelationshipName": "c", "WaitForCopyState": 4}),
    );
    let gsync = r.str("Synchronization").unwrap().to_owned();
    let pair = pairs(&mut c, &gsync).remove(0);
    let inst = instance(&mut c, &pair);
    assert_eq!(
        (inst["CopyState"].as_u64(), inst["PercentSynced"].as_u64()),
        (Some(4), Some(100))
    );
    ok(
        &mut c,
        "ModifyReplicaSynchronization",
        json!({"Operation": 8, "Synchronization": gsync}),
    );
    assert_eq!(
        c.call("GetInstance", json!({"Ref": pair})).unwrap().code,
        5,
        "the association is gone"
    );
    write_ok(&mut i, 0, 0, &pattern(1 << 20, 6));
    let lun = expose(&mut c, "c_1", None);
    settle(&mut i, lun);
    assert_eq!(
        read(&mut i, lun, 0, 16_384),
        data,
        "the detached clone keeps the point in time"
    );
    assert_eq!(
        instance(&mut c, "volume:c_1")["IronLun_Kind"],
        json!("Independent")
    );
}

#[test]
fn failover_then_failback_through_iscsi() {
    let s = server(1, "16MiB", "");
    let mut i = login(&s);
    let mut c = s.admin();
    write_ok(&mut i, 0, 0, &pattern(1 << 20, 1));
    let r = ok(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 6, "SourceElement": "volume:test-lun0", "RelationshipName": "f", "WaitForCopyState": 4}),
    );
    let gsync = r.str("Synchronization").unwrap().to_owned();
    let pair = pairs(&mut c, &gsync).remove(0);
    let lun = expose(&mut c, "f_1", Some(false));
    settle(&mut i, 0);
    settle(&mut i, lun);
    ok(
        &mut c,
        "ModifyReplicaSynchronization",
        json!({"Operation": 10, "Synchronization": gsync, "WaitForCopyState": 10}),
    );
    assert_eq!(copy_state(&mut c, &pair), 10);
    // The old source is fenced; the target takes the writes.
    let w = write(&mut i, 0, 0, &[1u8; 512]);
    assert_eq!((w.status, sense(&w).0), (2, 7));
    let new = pattern(256 << 10, 77);
    write_ok(&mut i, lun, 100, &new);
    ok(
        &mut c,
        "ModifyReplicaSynchronization",
        json!({"Operation": 11, "Synchronization": gsync, "WaitForCopyState": 4}),
    );
    assert_eq!(copy_state(&mut c, &pair), 4);
    assert_eq!(
        read(&mut i, 0, 100, 512),
        new,
        "the failed-over writes came back"
    );
    write_ok(&mut i, 0, 0, &[2u8; 512]);
    assert_eq!(read(&mut i, lun, 0, 1), vec![2u8; 512]);
}

#[test]
fn restore_from_a_snapshot_through_iscsi() {
    let s = server(1, "16MiB", "");
    let mut i = login(&s);
    let mut c = s.admin();
    let cut = pattern(2 << 20, 8);
    write_ok(&mut i, 0, 0, &cut);
    let r = ok(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 7, "SourceElement": "volume:test-lun0", "RelationshipName": "r"}),
    );
    let gsync = r.str("Synchronization").unwrap().to_owned();
    write_ok(&mut i, 0, 0, &pattern(2 << 20, 9));
    let r = ok(
        &mut c,
        "ModifyReplicaSynchronization",
        json!({"Operation": 15, "Synchronization": gsync, "WaitForCopyState": 4}),
    );
    assert!(r.code == 0 || r.code == 4096);
    assert_eq!(read(&mut i, 0, 0, 4096), cut);
    let pair = pairs(&mut c, &gsync).remove(0);
    assert_eq!(instance(&mut c, &pair)["IronLun_ChunksCopied"], json!(32));
}

/// Dependent writes (LUN 0, then LUN 1) from one session while a consistent group
/// snapshot is taken: the snapshot of LUN 1 never holds a write whose LUN 0 half is
/// missing.
#[test]
fn group_snapshot_cuts_every_member_at_one_point() {
    let s = server(2, "16MiB", "");
    let mut c = s.admin();
    ok(
        &mut c,
        "CreateGroup",
        json!({"GroupName": "g", "Members": ["volume:test-lun0", "volume:test-lun1"]}),
    );
    let addr = s.addr();
    let writer = std::thread::spawn(move || {
        let mut i = Initiator::connect(addr);
        assert_eq!(i.login(HOST, IQN, &[]).status_class, 0);
        i.clear_ua(0);
        i.clear_ua(lun_id(1));
        for k in 0..200u32 {
            let v = vec![(k % 250 + 1) as u8; 512];
            write_ok(&mut i, 0, k * 128, &v);
            write_ok(&mut i, 1, k * 128, &v);
        }
    });
    std::thread::sleep(Duration::from_millis(30));
    let r = ok(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 7, "SourceGroup": "group:g", "RelationshipName": "cg", "Consistency": 3}),
    );
    writer.join().unwrap();
    let gsync = r.str("Synchronization").unwrap().to_owned();
    let g = instance(&mut c, &gsync);
    assert_eq!(
        (g["ConsistencyEnabled"].as_bool(), g["CopyState"].as_u64()),
        (Some(true), Some(4))
    );
    let mut i = login(&s);
    let (la, lb) = (expose(&mut c, "cg_1", None), expose(&mut c, "cg_2", None));
    settle(&mut i, la);
    settle(&mut i, lb);
    let count = |i: &mut Initiator, lun| {
        (0..200u32)
            .take_while(|k| read(i, lun, k * 128, 1)[0] != 0)
            .count()
    };
    let (na, nb) = (count(&mut i, la), count(&mut i, lb));
    assert!(
        nb <= na && na <= nb + 1,
        "cut at LUN 0 after {na} writes, LUN 1 after {nb}"
    );
}

#[test]
fn created_and_exposed_volumes_survive_a_restart() {
    let mut s = server(1, "8MiB", "");
    let mut c = s.admin();
    ok(
        &mut c,
        "CreateVolume",
        json!({"ElementName": "extra", "Size": 4 << 20}),
    );
    let lun = expose(&mut c, "extra", None);
    let mut i = login(&s);
    settle(&mut i, lun);
    let data = pattern(1 << 20, 4);
    write_ok(&mut i, lun, 0, &data);
    drop(i);
    drop(c);
    s.restart(false);
    let mut i = login(&s);
    settle(&mut i, lun);
    assert_eq!(read(&mut i, lun, 0, 2048), data);
    // And after a kill -9.
    s.restart(true);
    let mut i = login(&s);
    settle(&mut i, lun);
    assert_eq!(read(&mut i, lun, 0, 2048), data);
    let v = instance(&mut s.admin(), "volume:extra");
    assert_eq!(v["IronLun_Exposures"][0]["Lun"], json!(lun));
}

/// A synchronous mirror survives `kill -9` of the server: the pair resynchronizes the
/// activity log's extents only, and the target equals the source.
#[test]
fn mirror_after_kill_resyncs_only_the_activity_log() {
    let mut s = server(1, "64MiB", "");
    let mut c = s.admin();
    let r = ok(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 6, "SourceElement": "volume:test-lun0", "RelationshipName": "k", "WaitForCopyState": 4}),
    );
    let gsync = r.str("Synchronization").unwrap().to_owned();
    let pair = pairs(&mut c, &gsync).remove(0);
    let mut i = login(&s);
    write_ok(&mut i, 0, 20_000, &pattern(256 << 10, 3));
    drop(i);
    drop(c);
    s.restart(true);
    let mut c = s.admin();
    let t = Instant::now();
    while copy_state(&mut c, &pair) != 4 {
        assert!(t.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(20));
    }
    let copied = instance(&mut c, &pair)["IronLun_ChunksCopied"]
        .as_u64()
        .unwrap();
    assert!(
        copied > 0 && copied <= 64,
        "{copied} chunks resynchronized; the whole volume is 1024"
    );
    let lun = expose(&mut c, "k_1", None);
    let mut i = login(&s);
    settle(&mut i, lun);
    assert_eq!(
        read(&mut i, lun, 19_968, 1024),
        read(&mut i, 0, 19_968, 1024)
    );
}

/// The target benchmark's quick mode (ironlun against tgt), so that the script cannot rot.
#[test]
fn bench_quick_mode_runs() {
    drop(tool("qemu-img"));
    drop(tool("tgtd"));
    drop(tool("iperf3"));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench.sh");
    let (ok, out) = run(std::process::Command::new("bash")
        .arg(script)
        .args(["--quick", "--no-replication"])
        .env("IRONLUN_BIN", env!("CARGO_BIN_EXE_ironlun")));
    assert!(ok, "{out}");
    for row in [
        "4k read qd1",
        "4k write qd32",
        "1M write qd32 RAM",
        "iscsi-perf 4k read qd32",
        "convert",
        "limits: loopback TCP",
        "RSS idle",
    ] {
        assert!(out.contains(row), "no {row} row in:\n{out}");
    }
}

/// The replication benchmark's quick mode, so that the script cannot rot.
#[test]
fn bench_replication_quick_mode_runs() {
    drop(tool("qemu-img"));
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench-replication.sh");
    let (ok, out) = run(std::process::Command::new("bash")
        .arg(script)
        .arg("--quick")
        .env("IRONLUN_BIN", env!("CARGO_BIN_EXE_ironlun")));
    assert!(ok, "{out}");
    for row in [
        "sync mirror",
        "async mirror",
        "snapshot first",
        "snapshot over",
    ] {
        assert!(out.contains(row), "no {row} row in:\n{out}");
    }
}
