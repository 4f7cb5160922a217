//! Disk faults: real EIO (from a FUSE file system that fails on demand,
//! `tests/support/faultfs.py`) and a really full file system (a small tmpfs). Failing I/O
//! gives MEDIUM ERROR or SPACE ALLOCATION FAILED, or breaks the relationship that depends on
//! it; never wrong data; the other LUNs keep being served.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    harness::{IQN, Server},
    initiator::{Initiator, Outcome},
};

const HOST: &str = "iqn.2026-11.test:faults";

/// A mounted faultfs.
struct FaultFs {
    mount: PathBuf,
    backing: PathBuf,
    control: PathBuf,
    child: Child,
}

fn mounted(p: &Path) -> bool {
    let m = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let p = p.display().to_string();
    m.lines()
        .any(|l| l.split_whitespace().nth(1) == Some(p.as_str()))
}

impl FaultFs {
    fn mount(dir: &Path) -> Self {
        let python = Path::new("/usr/bin/python3");
        let ok = Command::new(python)
            .args(["-c", "import fusepy"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "python3-fusepy is not installed: run scripts/install-deps.sh"
        );
        let (backing, mount, control) = (dir.join("backing"), dir.join("mnt"), dir.join("faults"));
        std::fs::create_dir_all(&backing).unwrap();
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::write(&control, "").unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/faultfs.py");
        let child = Command::new(python)
            .arg(script)
            .args([&backing, &mount, &control])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("faultfs.log")).unwrap(),
            ))
            .spawn()
            .expect("start faultfs");
        let t = Instant::now();
        while !mounted(&mount) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "faultfs did not mount"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            mount,
            backing,
            control,
            child,
        }
    }

    /// Replace the fault rules (see faultfs.py).
    fn set(&self, rules: &str) {
        std::fs::write(&self.control, rules).unwrap();
        // The daemon notices by the file's mtime and size.
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lun_id(lun: u16) -> u64 {
    u64::from(lun) << 48
}

fn login(s: &Server, luns: &[u16]) -> Initiator {
    let mut i = Initiator::connect(s.addr());
    assert_eq!(i.login(HOST, IQN, &[]).status_class, 0);
    for &l in luns {
        i.clear_ua(lun_id(l));
    }
    i
}

fn rw(i: &mut Initiator, lun: u16, write: bool, lba: u32, data: &[u8], blocks: u16) -> Outcome {
    let mut cdb = [if write { 0x2a } else { 0x28 }, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    i.scsi(lun_id(lun), &cdb, data, u32::from(blocks) * 512, !write)
}

fn sense(o: &Outcome) -> (u8, u8, u8) {
    let s = &o.sense;
    (
        s.get(2).map_or(0, |k| k & 0x0f),
        s.get(12).copied().unwrap_or(0),
        s.get(13).copied().unwrap_or(0),
    )
}

fn server(lun0_dir: &Path, extra: &str) -> Server {
    Server::start_config(&format!(
        r#"
[[portal]]
address = "127.0.0.1:0"
{extra}
[[target]]
name = "{IQN}"

[[target.lun]]
lun = 0
path = "{}/lun0.img"
size = "16MiB"
name = "faulty"

[[target.lun]]
lun = 1
path = "{{DIR}}/lun1.img"
size = "16MiB"
name = "healthy"
"#,
        lun0_dir.display()
    ))
}

fn healthy_lun_works(i: &mut Initiator, seed: u8) {
    let data = vec![seed; 64 << 10];
    assert_eq!(
        rw(i, 1, true, 1000, &data, 128).status,
        0,
        "the healthy LUN writes"
    );
    assert_eq!(
        rw(i, 1, false, 1000, &[], 128).data,
        data,
        "the healthy LUN reads"
    );
}

#[test]
fn disk_errors_are_medium_errors_and_never_wrong_data() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::mount(dir.path());
    let s = server(&fs.mount, "");
    let mut i = login(&s, &[0, 1]);
    let good: Vec<u8> = (0..64u32 << 10).map(|x| (x % 239) as u8).collect();
    assert_eq!(rw(&mut i, 0, true, 0, &good, 128).status, 0);
    // Reads fail: MEDIUM ERROR, UNRECOVERED READ ERROR; no data is returned as good.
    fs.set("eio read lun0.img\n");
    let r = rw(&mut i, 0, false, 0, &[], 128);
    assert_eq!((r.status, sense(&r)), (2, (3, 0x11, 0)));
    healthy_lun_works(&mut i, 1);
    // Writes fail: MEDIUM ERROR, WRITE ERROR; and so does SYNCHRONIZE CACHE.
    fs.set("eio write lun0.img\n");
    let w = rw(&mut i, 0, true, 0, &vec![0xff; 64 << 10], 128);
    assert_eq!((w.status, sense(&w).0, sense(&w).1), (2, 3, 0x0c));
    let f = i.scsi(0, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0, false);
    assert_eq!(
        (f.status, sense(&f).0),
        (2, 3),
        "a failing flush is reported"
    );
    healthy_lun_works(&mut i, 2);
    // Repaired: what was written before reads back; the failed write left nothing.
    fs.set("");
    assert_eq!(rw(&mut i, 0, false, 0, &[], 128).data, good);
    assert_eq!(
        std::fs::read(fs.backing.join("lun0.img")).unwrap()[..64 << 10],
        good[..]
    );
}

#[test]
fn a_full_file_system_is_space_allocation_failed() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mounting a tmpfs (the test needs root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _u = Unmount(small.clone());
    let s = server(&small, "");
    let mut i = login(&s, &[0, 1]);
    // The 16 MiB sparse image cannot hold more than the 2 MiB the file system has.
    let mut full = None;
    let mut written = Vec::new();
    for k in 0..64u32 {
        let data = vec![(k as u8) | 1; 256 << 10];
        let w = rw(&mut i, 0, true, k * 512, &data, 512);
        if w.status != 0 {
            full = Some(sense(&w));
            break;
        }
        written.push((k, data));
    }
    assert_eq!(
        full,
        Some((7, 0x27, 0x07)),
        "DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT"
    );
    assert!(!written.is_empty());
    healthy_lun_works(&mut i, 3);
    // Everything acknowledged reads back.
    for (k, data) in &written {
        assert_eq!(
            &rw(&mut i, 0, false, k * 512, &[], 512).data,
            data,
            "block {k}"
        );
    }
}

fn copy_state(s: &Server, sync: &str) -> u64 {
    let r = s.admin().call("GetInstance", json!({"Ref": sync})).unwrap();
    r.get("Instance")
        .and_then(|v| v["CopyState"].as_u64())
        .unwrap_or(0)
}

fn wait_state(s: &Server, sync: &str, want: u64) {
    let t = Instant::now();
    while copy_state(s, sync) != want {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{sync} never reached CopyState {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_failing_mirror_target_breaks_the_pair_not_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::mount(dir.path());
    let healthy = tempfile::tempdir().unwrap();
    let pool = format!(
        "\n[[pool]]\nname = \"flaky\"\npath = \"{}/pool\"\n",
        fs.mount.display()
    );
    let s = server(healthy.path(), &pool);
    let mut c = s.admin();
    let r = c
        .call("CreateGroupReplica", json!({"SyncType": 6, "Mode": 2, "SourceElement": "volume:faulty", "RelationshipName": "m", "WaitForCopyState": 4}))
        .unwrap();
    assert!(r.ok(), "{:?}", r.body);
    let gsync = r.str("Synchronization").unwrap().to_owned();
    let g = c.call("GetInstance", json!({"Ref": gsync})).unwrap();
    let pair = g.get("Instance").unwrap()["IronLun_Members"][0]
        .as_str()
        .unwrap()
        .to_owned();
    wait_state(&s, &pair, 4);
    let mut i = login(&s, &[0, 1]);
    fs.set("eio write m_1.img\n");
    // The host's writes keep succeeding; the pair breaks and tracks them.
    let data = vec![0x5a; 128 << 10];
    assert_eq!(rw(&mut i, 0, true, 0, &data, 256).status, 0);
    assert_eq!(rw(&mut i, 0, true, 4096, &data, 256).status, 0);
    wait_state(&s, &pair, 5);
    let inst = c.call("GetInstance", json!({"Ref": pair})).unwrap();
    let dirty = inst.get("Instance").unwrap()["IronLun_DirtyChunks"]
        .as_u64()
        .unwrap();
    assert!(dirty >= 2, "{dirty} chunks tracked");
    healthy_lun_works(&mut i, 4);
    // Repaired: Resync brings the target back, exactly.
    fs.set("");
    let r = c
        .call(
            "ModifyReplicaSynchronization",
            json!({"Operation": 14, "Synchronization": gsync}),
        )
        .unwrap();
    assert!(r.ok(), "{:?}", r.body);
    wait_state(&s, &pair, 4);
    let src = std::fs::read(healthy.path().join("lun0.img")).unwrap();
    let tgt = std::fs::read(fs.backing.join("pool/m_1.img")).unwrap();
    assert!(src == tgt, "the target equals the source after the resync");
}
