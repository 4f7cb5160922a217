//! The soak test (`scripts/soak.sh`; ignored in the normal run): mixed I/O from several
//! sessions, each verifying what it reads against what it wrote, while snapshots are taken
//! and returned to the pool and a mirror is fractured and resynchronized every few seconds;
//! then a full verification. Prints operations, errors (must be zero) and the server's RSS
//! over time. `SOAK_SECONDS` sets the duration (default 60).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    harness::{IQN, Server},
    initiator::Initiator,
};

const SESSIONS: u32 = 6;
/// Blocks (4 KiB) each session owns.
const REGION: u32 = 4096;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The content of block `b` at `version`.
fn content(b: u32, version: u32) -> Vec<u8> {
    let mut v = vec![0u8; 4096];
    let mut x = u64::from(b) << 32 | u64::from(version) | 1;
    for c in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    v
}

fn io(i: &mut Initiator, write: bool, block: u32, blocks: u16, data: &[u8]) -> (u8, Vec<u8>) {
    let mut cdb = [if write { 0x2a } else { 0x28 }, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[2..6].copy_from_slice(&(block * 8).to_be_bytes());
    cdb[7..9].copy_from_slice(&(blocks * 8).to_be_bytes());
    let o = i.scsi(0, &cdb, data, u32::from(blocks) * 4096, !write);
    (o.status, o.data)
}

#[test]
#[ignore = "long; run by scripts/soak.sh"]
fn soak() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let size_mib = (SESSIONS * REGION * 4096) >> 20;
    let s = Server::start_config_logging(
        &format!(
            r#"
[[portal]]
address = "127.0.0.1:0"

[[target]]
name = "{IQN}"

[[target.lun]]
lun = 0
path = "{{DIR}}/lun0.img"
size = "{size_mib}MiB"
name = "soak"
"#
        ),
        "warn",
    );
    let pid = s.pid();
    let mut admin = s.admin();
    let call = |c: &mut admin::client::Client, m: &str, p: Value| -> admin::client::Response {
        let r = c.call(m, p.clone()).expect("admin call");
        assert!(r.ok(), "{m} {p}: {:?}", r.body);
        r
    };
    let mirror = call(
        &mut admin,
        "CreateGroupReplica",
        json!({"SyncType": 6, "Mode": 2, "SourceElement": "volume:soak", "RelationshipName": "sm", "WaitForCopyState": 4}),
    );
    let mirror = mirror.str("Synchronization").unwrap().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let addr = s.addr();
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|n| {
            let (stop, ops, errors) = (stop.clone(), ops.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut i = Initiator::connect(addr);
                assert_eq!(
                    i.login(&format!("iqn.2026-11.test:soak{n}"), IQN, &[])
                        .status_class,
                    0
                );
                i.clear_ua(0);
                let base = n * REGION;
                let mut versions: HashMap<u32, u32> = HashMap::new();
                let mut x = 0x9e37_79b9u32.wrapping_mul(n + 1);
                let mut rnd = move || {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x
                };
                while !stop.load(Ordering::Relaxed) {
                    let b = base + rnd() % (REGION - 16);
                    let len = 1 + (rnd() % 16) as u16;
                    if rnd() % 3 == 0 {
                        // Read and verify a run.
                        let (st, data) = io(&mut i, false, b, len, &[]);
                        if st != 0 {
                            errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        for k in 0..u32::from(len) {
                            let want = content(b + k, versions.get(&(b + k)).copied().unwrap_or(0));
                            let got = &data[k as usize * 4096..(k as usize + 1) * 4096];
                            let zero =
                                !versions.contains_key(&(b + k)) && got.iter().all(|&z| z == 0);
                            if got != &want[..] && !zero {
                                eprintln!("soak: session {n}: block {} differs", b + k);
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    } else {
                        let mut data = Vec::with_capacity(usize::from(len) * 4096);
                        let mut next = Vec::new();
                        for k in 0..u32::from(len) {
                            let v = versions.get(&(b + k)).copied().unwrap_or(0) + 1;
                            data.extend_from_slice(&content(b + k, v));
                            next.push((b + k, v));
                        }
                        if io(&mut i, true, b, len, &data).0 != 0 {
                            errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        versions.extend(next);
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
                // Full verification of the region.
                for b in (base..base + REGION).step_by(64) {
                    let (st, data) = io(&mut i, false, b, 64, &[]);
                    assert_eq!(st, 0);
                    for k in 0..64u32 {
                        let got = &data[k as usize * 4096..(k as usize + 1) * 4096];
                        match versions.get(&(b + k)) {
                            Some(&v) => {
                                if got != &content(b + k, v)[..] {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            None => {
                                if got.iter().any(|&z| z != 0) {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                }
            })
        })
        .collect();

    // Replication churn: snapshots taken and returned, the mirror fractured and resynced.
    let start = Instant::now();
    let mut snaps: Vec<String> = Vec::new();
    let (mut taken, mut deleted, mut cycles, mut k) = (0u64, 0u64, 0u64, 0u64);
    let mut last_report = Instant::now();
    println!(
        "soak: {SESSIONS} sessions, {seconds} s; time, ops, errors, snapshots taken/deleted, mirror cycles, RSS KiB"
    );
    while start.elapsed() < Duration::from_secs(seconds) {
        k += 1;
        let r = call(
            &mut admin,
            "CreateGroupReplica",
            json!({"SyncType": 7, "SourceElement": "volume:soak", "RelationshipName": format!("snap{k}")}),
        );
        snaps.push(r.str("Synchronization").unwrap().to_owned());
        taken += 1;
        if snaps.len() > 3 {
            let old = snaps.remove(0);
            call(
                &mut admin,
                "ModifyReplicaSynchronization",
                json!({"Operation": 19, "Synchronization": old}),
            );
            deleted += 1;
        }
        std::thread::sleep(Duration::from_millis(1500));
        call(
            &mut admin,
            "ModifyReplicaSynchronization",
            json!({"Operation": 12, "Synchronization": mirror}),
        );
        std::thread::sleep(Duration::from_millis(1500));
        let r = call(
            &mut admin,
            "ModifyReplicaSynchronization",
            json!({"Operation": 14, "Synchronization": mirror}),
        );
        if r.code == 4096 {
            let job = r.str("Job").unwrap().to_owned();
            loop {
                let j = admin.call("GetInstance", json!({"Ref": job})).unwrap();
                match j.get("Instance").and_then(|v| v["JobState"].as_u64()) {
                    Some(7) => break,
                    Some(10) => panic!("resync failed: {:?}", j.body),
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        cycles += 1;
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "soak: {:>5} s {:>9} ops {:>3} errors {:>4}/{:<4} snapshots {:>4} mirror cycles {:>8} KiB",
                start.elapsed().as_secs(),
                ops.load(Ordering::Relaxed),
                errors.load(Ordering::Relaxed),
                taken,
                deleted,
                cycles,
                rss_kib(pid)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in sessions {
        t.join().unwrap();
    }
    // The mirror's target equals the source once synchronized.
    let src = std::fs::read(s.path("lun0.img")).unwrap();
    let tgt = std::fs::read(s.path("data/pool/sm_1.img")).unwrap();
    let mirror_ok = src == tgt;
    let total_errors = errors.load(Ordering::Relaxed) + u64::from(!mirror_ok);
    println!(
        "soak: done: {} s, {} ops, {} errors, {taken} snapshots taken, {deleted} deleted, {cycles} fracture/resync cycles, final RSS {} KiB, mirror target {}",
        start.elapsed().as_secs(),
        ops.load(Ordering::Relaxed),
        total_errors,
        rss_kib(pid),
        if mirror_ok { "equal" } else { "DIFFERENT" }
    );
    assert_eq!(total_errors, 0);
}
