//! The real-initiator tier: a small Linux guest (Debian's kernel and open-iscsi, booted under
//! `qemu-system-x86_64 -accel tcg` by `scripts/guest/run.sh`) logs in to ironlun through QEMU
//! user networking (the host's loopback is 10.0.2.2 in the guest) and runs one scenario of
//! `scripts/guest/scenarios/`. Each test starts its own server.
//!
//! TCG guests are CPU bound: the tests take a lock file so that only one guest runs at a time,
//! even under `cargo test` (nextest also puts them in the `guest` test group of
//! `.config/nextest.toml`, one thread). Console logs go to `target/tmp/guest-logs/<name>.log`,
//! the server's log to `<name>.server.log` next to them.

use std::{
    fmt::Write as _,
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    harness::{Server, run, tool},
    initiator::Initiator,
    replication::{instance, ok, pairs},
};

const PREFIX: &str = "iqn.2026-11.io.ironlun";
const CHAP_USER: &str = "guest-user";
const CHAP_SECRET: &str = "guest-secret-0123";
const MUTUAL_USER: &str = "target-user";
const MUTUAL_SECRET: &str = "target-secret-4567";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn log_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest-logs");
    fs::create_dir_all(&d).expect("create guest log dir");
    d
}

/// One guest at a time, across threads and processes (an exclusive flock).
fn guest_lock() -> fs::File {
    let f = fs::File::create(log_dir().join(".guest.lock")).expect("guest lock file");
    f.lock().expect("lock guest lock file");
    f
}

/// A configuration with one portal and one target with one LUN.
fn one_target(port: u16, iqn: &str, size: &str, target_extra: &str) -> String {
    format!(
        r#"
[[portal]]
address = "127.0.0.1:{port}"
group = 1

[[target]]
name = "{iqn}"
{target_extra}

[[target.lun]]
lun = 0
path = "{{DIR}}/lun0.img"
size = "{size}"
"#
    )
}

/// A port that was free a moment ago (for a server that must come back on the same port).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Run `scenario` in the guest against `server` with `VAR=VALUE` arguments, and panic with the
/// guest's console and the server log unless it passes. Returns the console output.
fn guest(
    server: &Server,
    scenario: &str,
    name: &str,
    vars: &[(&str, &str)],
    hook: Option<&Path>,
) -> String {
    guest_env(server, scenario, name, vars, hook, &[])
}

/// [`guest`] with extra environment variables for run.sh (e.g. `GUEST_TIMEOUT`).
fn guest_env(
    server: &Server,
    scenario: &str,
    name: &str,
    vars: &[(&str, &str)],
    hook: Option<&Path>,
    env: &[(&str, &str)],
) -> String {
    // Fails clearly when QEMU is missing.
    drop(tool("qemu-system-x86_64"));
    let _lock = guest_lock();
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/guest/run.sh"))
        .arg(repo().join("scripts/guest/scenarios").join(scenario))
        .arg(format!("SCENARIO_NAME={name}"))
        .arg(format!("TARGET_PORTAL=10.0.2.2:{}", server.addr().port()))
        .args(vars.iter().map(|(k, v)| format!("{k}={v}")))
        .env("GUEST_LOG_DIR", log_dir())
        .envs(env.iter().copied());
    if let Some(h) = hook {
        cmd.env("GUEST_HOST_HOOK", h);
    }
    let t0 = Instant::now();
    let (ok, out) = run(&mut cmd);
    let secs = t0.elapsed().as_secs();
    let verdict = out
        .lines()
        .rev()
        .find(|l| l.starts_with("PASS ") || l.starts_with("FAIL "))
        .unwrap_or("(no PASS/FAIL line)");
    let log = server.log();
    let saved = log_dir().join(format!("{name}.server.log"));
    let _ = fs::write(&saved, &log);
    if !ok || verdict != format!("PASS {name}") {
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(150)..].join("\n");
        panic!(
            "guest scenario {name}: {verdict} after {secs}s\n\
             ---------- guest output\n{out}\n\
             ---------- server log (last 150 lines; all of it in {})\n{tail}",
            saved.display()
        );
    }
    // The scenario's own lines (its numbers), without the boot noise.
    let mut summary = String::new();
    let mut inside = false;
    for l in out.lines() {
        if l.starts_with("[init] running scenario") {
            inside = true;
        } else if l.starts_with("SCENARIO-EXIT") {
            inside = false;
        } else if inside || l.starts_with("[host-hook]") || l.starts_with("[guest-run]") {
            let _ = writeln!(summary, "{l}");
        }
    }
    println!("{summary}{verdict} in {secs}s");
    out
}

/// Scenario 1: mkfs.ext4, 256 MiB of files with checksums, logout, login, verify, e2fsck.
#[test]
fn fs_roundtrip() {
    let iqn = format!("{PREFIX}:guest.plain");
    let s = Server::start_config(&one_target(0, &iqn, "512MiB", ""));
    guest(
        &s,
        "fs-roundtrip.sh",
        "fs-roundtrip",
        &[
            ("TARGET_IQN", &iqn),
            ("FS_FILES", "64"),
            ("FS_FILE_MB", "4"),
        ],
        None,
    );
}

/// Scenario 2a: the same with HeaderDigest=CRC32C and DataDigest=CRC32C.
#[test]
fn fs_digest() {
    let iqn = format!("{PREFIX}:guest.digest");
    let s = Server::start_config(&one_target(0, &iqn, "512MiB", ""));
    guest(
        &s,
        "fs-roundtrip.sh",
        "fs-digest",
        &[("TARGET_IQN", &iqn), ("DIGEST", "crc32c")],
        None,
    );
    let digests = s
        .log()
        .lines()
        .filter(|l| {
            l.contains("login complete")
                && l.contains("guest.digest")
                && l.contains("header_digest=true data_digest=true")
        })
        .count();
    assert_eq!(
        digests, 2,
        "both logins with CRC32C header and data digests in the server log"
    );
}

fn chap_users() -> String {
    format!(r#"chap = [{{ user = "{CHAP_USER}", secret = "{CHAP_SECRET}" }}]"#)
}

fn mutual() -> String {
    format!(r#"mutual_chap = {{ user = "{MUTUAL_USER}", secret = "{MUTUAL_SECRET}" }}"#)
}

/// Scenario 2b: one-way CHAP (64 MiB of files). open-iscsi offers every algorithm it has,
/// strongest first.
#[test]
fn fs_chap_one_way() {
    let iqn = format!("{PREFIX}:guest.chap");
    let s = Server::start_config(&one_target(0, &iqn, "512MiB", &chap_users()));
    guest(
        &s,
        "fs-roundtrip.sh",
        "fs-chap",
        &[
            ("TARGET_IQN", &iqn),
            ("AUTH", "chap"),
            ("CHAP_USER", CHAP_USER),
            ("CHAP_SECRET", CHAP_SECRET),
            ("CHAP_ALGS", "SHA3-256,SHA256,SHA1,MD5"),
            ("FS_FILES", "16"),
        ],
        None,
    );
}

/// Scenario 2c: mutual CHAP (64 MiB of files), with open-iscsi's default algorithm (MD5).
#[test]
fn fs_chap_mutual() {
    let iqn = format!("{PREFIX}:guest.mutual");
    let extra = format!("{}\n{}", chap_users(), mutual());
    let s = Server::start_config(&one_target(0, &iqn, "512MiB", &extra));
    guest(
        &s,
        "fs-roundtrip.sh",
        "fs-mutual",
        &[
            ("TARGET_IQN", &iqn),
            ("AUTH", "mutual"),
            ("CHAP_USER", CHAP_USER),
            ("CHAP_SECRET", CHAP_SECRET),
            ("MUTUAL_USER", MUTUAL_USER),
            ("MUTUAL_SECRET", MUTUAL_SECRET),
            ("FS_FILES", "16"),
        ],
        None,
    );
}

/// Scenario 3: logins with a wrong CHAP secret (to the one-way target through a second iface,
/// and to the mutual target) fail with an authentication failure while the first session keeps
/// reading and writing.
#[test]
fn chap_wrong_secret() {
    let chap = format!("{PREFIX}:guest.chap");
    let mutual_iqn = format!("{PREFIX}:guest.mutual");
    let s = Server::start_config(&format!(
        r#"
[[portal]]
address = "127.0.0.1:0"

[[target]]
name = "{chap}"
{users}

[[target.lun]]
lun = 0
path = "{{DIR}}/chap.img"
size = "256MiB"

[[target]]
name = "{mutual_iqn}"
{users}
{mutual}

[[target.lun]]
lun = 0
path = "{{DIR}}/mutual.img"
size = "256MiB"
"#,
        users = chap_users(),
        mutual = mutual(),
    ));
    guest(
        &s,
        "chap-wrong.sh",
        "chap-wrong",
        &[
            ("TARGET_IQN", &chap),
            ("CHAP_USER", CHAP_USER),
            ("CHAP_SECRET", CHAP_SECRET),
            ("WRONG_IQN", &format!("{chap} {mutual_iqn}")),
        ],
        None,
    );
    // The server's side of the two refusals: status 0201 (authentication failure).
    let log = s.log();
    let refused = log
        .lines()
        .filter(|l| l.contains("login refused") && l.contains("status=0201"))
        .count();
    assert_eq!(
        refused, 2,
        "two logins refused with 0201 in the server log:\n{log}"
    );
}

/// VPD page 0x83 (Device Identification) of a LUN, as the server returns it to an INQUIRY
/// from the host (the test initiator, through the same portal as the guest).
fn vpd_83(s: &Server, iqn: &str, lun: u16) -> Vec<u8> {
    let mut i = Initiator::connect(s.addr());
    let r = i.login("iqn.2026-11.test:guest-vpd", iqn, &[]);
    assert_eq!(r.status_class, 0, "login to {iqn} for INQUIRY");
    let o = i.scsi(
        u64::from(lun) << 48,
        &[0x12, 1, 0x83, 1, 0, 0],
        &[],
        256,
        true,
    );
    assert_eq!(o.status, 0, "INQUIRY VPD 0x83 of {iqn} LUN {lun}: {o:?}");
    assert_eq!(o.data[1], 0x83, "{o:?}");
    let len = 4 + usize::from(u16::from_be_bytes([o.data[2], o.data[3]]));
    assert_eq!(o.data.len(), len, "a whole VPD 0x83 page in 256 bytes");
    o.data
}

/// The identifier Linux derives from a VPD 0x83 page (`/sys/block/sdX/device/wwid`, the
/// `scsi_vpd_lun_id()` of drivers/scsi/scsi_lib.c since 5.11): among the designators associated
/// with the logical unit, the highest priority wins (SCSI name string 9, NAA 6h 8, EUI-64 16-byte
/// 7 and 12-byte 6, NAA 5h 5, NAA 4h 4, EUI-64 8-byte 3, NAA 3h and T10 vendor ID 1), the
/// longer one among equals.
fn kernel_wwid(page: &[u8]) -> String {
    fn prio(d: &[u8]) -> u8 {
        if d[1] & 0x30 != 0 || d[3] == 0 {
            return 0;
        }
        match (d[1] & 0xf, d[4] >> 4, d[3]) {
            (8, _, _) => 9,
            (3, 6, _) => 8,
            (2, _, 16) => 7,
            (2, _, 12) => 6,
            (3, 5, _) => 5,
            (3, 4, _) => 4,
            (2, _, 8) => 3,
            (3, 3, _) | (1, _, _) => 1,
            _ => 0,
        }
    }
    let hex = |b: &[u8]| hex::encode(b);
    let (mut cur_prio, mut cur_size, mut id) = (0u8, 0usize, String::new());
    let mut d = &page[4..];
    while d.len() >= 4 && d.len() >= 4 + usize::from(d[3]) {
        let (len, p) = (usize::from(d[3]), prio(d));
        let v = &d[4..4 + len];
        // The T10 vendor ID and the SCSI name string also give way to a longer designator.
        let shorter = matches!(d[1] & 0xf, 1 | 8) && cur_size > len;
        if p != 0 && cur_prio <= p && !shorter {
            (cur_prio, cur_size) = (p, len);
            id = match d[1] & 0xf {
                1 => format!(
                    "t10.{}",
                    v.iter()
                        .map(|&c| {
                            if (0x20..0x7f).contains(&c) {
                                char::from(c).to_string()
                            } else {
                                format!("\\{c:03o}")
                            }
                        })
                        .collect::<String>()
                ),
                2 => format!("eui.{}", hex(v)),
                3 => format!("naa.{}", hex(v)),
                _ => String::from_utf8_lossy(v).trim_end_matches('\0').to_owned(),
            };
        }
        d = &d[4 + len..];
    }
    id
}

/// The LUN's size in bytes, from READ CAPACITY(16) (libiscsi's iscsi-readcapacity16).
fn size_of(s: &Server, iqn: &str, lun: u16) -> u64 {
    let url = format!("iscsi://{}/{iqn}/{lun}", s.addr());
    let (ok, out) = run(tool("iscsi-readcapacity16")
        .args(["-i", "iqn.2026-11.test:guest-size"])
        .arg(&url));
    assert!(ok, "{out}");
    out.lines()
        .find_map(|l| l.strip_prefix("Total size:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no size in iscsi-readcapacity16 {url}:\n{out}"))
}

/// Scenario 4: two LUNs on one target (one of them with 4 KiB blocks) and a second target;
/// every disk must appear in the guest with the size and wwid that ironlun reports.
#[test]
fn multi_lun_identifiers() {
    let a = format!("{PREFIX}:guest.multi-a");
    let b = format!("{PREFIX}:guest.multi-b");
    let s = Server::start_config(&format!(
        r#"
[[portal]]
address = "127.0.0.1:0"

[[target]]
name = "{a}"

[[target.lun]]
lun = 0
path = "{{DIR}}/a0.img"
size = "512MiB"

[[target.lun]]
lun = 1
path = "{{DIR}}/a1.img"
size = "256MiB"
block_size = 4096

[[target]]
name = "{b}"

[[target.lun]]
lun = 0
path = "{{DIR}}/b0.img"
size = "128MiB"
"#
    ));
    let luns = [
        (&a, 0, 512u64 << 20),
        (&a, 1, 256 << 20),
        (&b, 0, 128 << 20),
    ];
    let mut expect = Vec::new();
    let mut pages = Vec::new();
    for (iqn, lun, configured) in luns {
        let size = size_of(&s, iqn, lun);
        assert_eq!(size, configured, "{iqn} LUN {lun}: READ CAPACITY size");
        let page = vpd_83(&s, iqn, lun);
        let wwid = kernel_wwid(&page);
        assert!(
            !wwid.is_empty(),
            "no LU designator in {}",
            hex::encode(&page)
        );
        expect.push(format!("{iqn},{lun},{size},{wwid}"));
        pages.push((iqn, lun, hex::encode(&page)));
    }
    // multi-lun.sh compares the size and wwid of every disk and rejects duplicate wwids.
    let out = guest(
        &s,
        "multi-lun.sh",
        "multi-lun",
        &[
            ("TARGET_IQNS", &format!("{a} {b}")),
            ("EXPECT_DISKS", &expect.join(";")),
        ],
        None,
    );
    // The whole VPD page the kernel read (sysfs vpd_pg83) is the page the host got.
    for (iqn, lun, page) in pages {
        let seen = out
            .lines()
            .skip_while(|l| !l.starts_with(&format!("DISK target={iqn} lun={lun} ")))
            .nth(1)
            .and_then(|l| l.trim().strip_prefix("vpd_pg83="))
            .unwrap_or_else(|| panic!("the guest printed no vpd_pg83 for {iqn} LUN {lun}"));
        assert_eq!(
            seen, page,
            "{iqn} LUN {lun}: VPD 0x83 in the guest and on the host"
        );
    }
}

/// Kills the restarted server (not a child of the test) when the test ends.
struct Restarted {
    pid_file: PathBuf,
    config: PathBuf,
    first: u32,
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let Ok(pid) = fs::read_to_string(&self.pid_file) else {
            return;
        };
        let pid = pid.trim();
        if pid == self.first.to_string() {
            return; // the harness kills its own child
        }
        let ours = fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*self.config.to_string_lossy()));
        if ours {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

/// Scenario 5: ironlun is killed with SIGKILL while the guest writes, and restarted with the
/// same configuration on the same port; open-iscsi reconnects and the data verifies.
#[test]
fn kill_restart() {
    let iqn = format!("{PREFIX}:guest.kill");
    let port = free_port();
    let s = Server::start_config(&one_target(port, &iqn, "512MiB", ""));
    assert_eq!(s.addr().port(), port);
    let pid_file = s.path("ironlun.pid");
    fs::write(&pid_file, s.pid().to_string()).expect("write pid file");
    let _restarted = Restarted {
        pid_file: pid_file.clone(),
        config: s.config_path(),
        first: s.pid(),
    };
    let hook = s.path("host-hook.sh");
    fs::write(
        &hook,
        format!(
            r#"#!/usr/bin/env bash
# run.sh's host hook for kill-restart: kill -9 ironlun, start it again on the same
# configuration (same port, same images), wait until it is ready.
set -u
[[ $1 == kill-restart ]] || {{ echo "unknown host action '$1'"; exit 3; }}
bin='{bin}'; cfg='{cfg}'; pidf='{pidf}'; out='{out}'; log='{log}'
pid=$(cat "$pidf")
gone() {{ local st; st=$(awk '{{print $3}}' "/proc/$1/stat" 2>/dev/null); [[ -z $st || $st == Z ]]; }}
echo "kill -9 ironlun pid $pid"
kill -9 "$pid" || exit 4
for _ in $(seq 300); do gone "$pid" && break; sleep 0.1; done
gone "$pid" || {{ echo "ironlun $pid still running 30 s after SIGKILL"; exit 4; }}
sleep 2
: > "$out"
echo "---- restart after kill -9" >> "$log"
RUST_LOG=${{RUST_LOG:-debug}} setsid "$bin" serve -c "$cfg" </dev/null >"$out" 2>>"$log" &
new=$!
echo "$new" > "$pidf"
for _ in $(seq 300); do
  if grep -qx 'ironlun: ready' "$out"; then echo "ironlun restarted as pid $new"; exit 0; fi
  gone "$new" && break
  sleep 0.1
done
echo "the restarted ironlun did not become ready:"; cat "$out"; tail -20 "$log"
exit 5
"#,
            bin = env!("CARGO_BIN_EXE_ironlun"),
            cfg = s.config_path().display(),
            pidf = pid_file.display(),
            out = s.path("restart.out").display(),
            log = s.path("server.log").display(),
        ),
    )
    .expect("write hook");
    let (ok, out) = run(Command::new("chmod").arg("+x").arg(&hook));
    assert!(ok, "{out}");
    guest(
        &s,
        "kill-restart.sh",
        "kill-restart",
        &[("TARGET_IQN", &iqn), ("REPLACEMENT_TIMEOUT", "60")],
        Some(&hook),
    );
    let pid: u32 = fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert_ne!(pid, s.pid(), "the hook did not restart ironlun");
}

/// Scenario 6: fio with O_DIRECT on the raw disk, verified writes; prints the numbers.
#[test]
fn fio_verify() {
    let iqn = format!("{PREFIX}:guest.fio");
    let s = Server::start_config(&one_target(0, &iqn, "512MiB", ""));
    guest(&s, "fio.sh", "fio", &[("TARGET_IQN", &iqn)], None);
}

/// Saves a server's log next to the guest logs when dropped, and prints its tail when the test
/// is failing (`guest` does that for the server it is given).
struct SaveLog<'a> {
    server: &'a Server,
    path: PathBuf,
}

impl Drop for SaveLog<'_> {
    fn drop(&mut self) {
        let log = self.server.log();
        let _ = fs::write(&self.path, &log);
        if std::thread::panicking() {
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "---------- {} (last 80 lines)\n{}",
                self.path.display(),
                lines[lines.len().saturating_sub(80)..].join("\n")
            );
        }
    }
}

/// The image file of a volume, read through its `IronLun_Path`, as `size` bytes
/// (a sparse file may be shorter than the volume: the rest reads as zeros).
fn volume_image(c: &mut admin::client::Client, volume: &str, size: u64) -> Vec<u8> {
    let path = instance(c, volume)["IronLun_Path"]
        .as_str()
        .unwrap_or_else(|| panic!("{volume} has no IronLun_Path"))
        .to_owned();
    let mut image = fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    image.resize(usize::try_from(size).expect("size"), 0);
    image
}

/// Scenario 7: dm-multipath over an HA pair. A (portal group 1, LUN 0 the source) and B
/// (portal group 2, a volume holding the synchronous mirror) export one LUN with one identity;
/// the guest logs in to both, multipathd makes one map of two paths (A active/optimized, B
/// standby), and a planned Failover in the middle of a copy onto ext4 on the map, then a
/// Failback, must not cost the filesystem an I/O error or a byte (see
/// `scripts/guest/scenarios/multipath-failover.sh`). The host hook drives both on A's admin
/// socket with `ironlun admin modify`.
#[test]
fn multipath_failover() {
    const MIRROR: &str = "iqn.2026-11.test:mirror";
    const SIZE: u64 = 256 << 20;
    let iqn = format!("{PREFIX}:guest.mpath");
    // The volume of A's configured LUN 0 is named <target suffix>-lun0.
    let source = "volume:guest.mpath-lun0";
    // Both servers on 127.0.0.1 (the only host address the guest reaches), in two portal groups.
    let b = Server::start_config(&format!(
        r#"
[[portal]]
address = "127.0.0.1:0"
group = 2

[[target]]
name = "{iqn}"
replica_peers = ["{MIRROR}"]
"#
    ));
    let _b_log = SaveLog {
        server: &b,
        path: log_dir().join("multipath-failover.b.server.log"),
    };
    let mut cb = b.admin();
    ok(
        &mut cb,
        "CreateVolume",
        json!({"ElementName": "copy", "Size": SIZE}),
    );
    ok(
        &mut cb,
        "ExposeVolume",
        json!({"TheElement": "volume:copy", "Target": iqn, "Lun": 0}),
    );
    let a = Server::start_config(&one_target(0, &iqn, "256MiB", ""));
    let mut ca = a.admin();
    ok(
        &mut ca,
        "CreateAccessPoint",
        json!({"Name": "b", "Portal": b.addr().to_string(), "Target": iqn, "Lun": 0, "InitiatorName": MIRROR}),
    );
    let r = ok(
        &mut ca,
        "CreateGroupReplica",
        json!({"SyncType": 6, "Mode": 2, "SourceElement": source, "TargetAccessPoint": "accesspoint:b", "RelationshipName": "ha", "WaitForCopyState": 4}),
    );
    let gsync = r
        .str("Synchronization")
        .expect("Synchronization")
        .to_owned();
    let pair = pairs(&mut ca, &gsync).remove(0);
    let t = Instant::now();
    while instance(&mut ca, &pair)["CopyState"] != json!(4) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{pair} not synchronized: {}",
            instance(&mut ca, &pair)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let hook = a.path("host-hook.sh");
    fs::write(
        &hook,
        format!(
            r#"#!/usr/bin/env bash
# run.sh's host hook for multipath-failover: planned Failover / Failback of the HA pair,
# on A's admin socket; exits 0 once the pair is Failed Over (10) / Synchronized (4) again.
set -u
adm() {{ '{bin}' admin --socket '{sock}' "$@"; }}
state() {{ adm --json show '{pair}' | tr -d ' \n' | grep -o '"CopyState":[0-9]*' | cut -d: -f2; }}
case $1 in
  failover) adm modify '{pair}' failover || exit 4; want=10 ;;
  failback) adm modify '{pair}' failback --wait || exit 4; want=4 ;;
  *) echo "unknown host action '$1'"; exit 3 ;;
esac
for _ in $(seq 1200); do
  s=$(state)
  if [[ $s == "$want" ]]; then echo "$1: {pair} CopyState $s"; exit 0; fi
  sleep 0.1
done
echo "$1: {pair} CopyState $(state), expected $want"
exit 5
"#,
            bin = env!("CARGO_BIN_EXE_ironlun"),
            sock = a.admin_path().display(),
        ),
    )
    .expect("write hook");
    let (done, out) = run(Command::new("chmod").arg("+x").arg(&hook));
    assert!(done, "{out}");
    guest_env(
        &a,
        "multipath-failover.sh",
        "multipath-failover",
        &[
            ("TARGET_IQN", &iqn),
            ("TARGET_PORTAL_B", &format!("10.0.2.2:{}", b.addr().port())),
            ("MP_FILES", "64"),
            ("MP_FILE_MB", "2"),
        ],
        Some(&hook),
        &[("GUEST_TIMEOUT", "420"), ("GUEST_HOOK_TIMEOUT", "150")],
    );
    // A is the primary again, B its synchronous mirror: the two images are identical.
    let inst = instance(&mut ca, &pair);
    assert_eq!(inst["CopyState"], json!(4), "{inst}");
    assert_eq!(inst["IronLun_PeerPrimary"], json!(false), "{inst}");
    let log = a.log();
    for event in [
        "HA pair: planned failover to the peer",
        "HA pair: the peer is secondary again",
    ] {
        assert!(log.contains(event), "no '{event}' in A's log");
    }
    assert!(
        volume_image(&mut ca, source, SIZE) == volume_image(&mut cb, "volume:copy", SIZE),
        "A's and B's images differ after the failback"
    );
}

/// The port of the kernel's designator choice, on hand-made pages.
#[test]
fn kernel_wwid_rules() {
    let page = |ds: &[&[u8]]| {
        let body: Vec<u8> = ds.concat();
        let mut p = vec![0, 0x83, 0, body.len() as u8];
        p.extend(body);
        p
    };
    let naa3: &[u8] = &[1, 3, 0, 8, 0x31, 2, 3, 4, 5, 6, 7, 8];
    let naa6: &[u8] = &[
        1, 3, 0, 16, 0x60, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    ];
    let t10: &[u8] = &[
        2, 1, 0, 10, b'I', b'R', b'O', b'N', b'L', b'U', b'N', b' ', b'4', b'2',
    ];
    let port: &[u8] = &[0x51, 0x94, 0, 4, 0, 0, 0, 1];
    assert_eq!(kernel_wwid(&page(&[naa3, t10, port])), "t10.IRONLUN 42");
    // NAA does not give way to a longer designator of the same priority: the order matters.
    assert_eq!(kernel_wwid(&page(&[t10, naa3])), "naa.3102030405060708");
    assert_eq!(
        kernel_wwid(&page(&[t10, naa6, naa3])),
        "naa.600102030405060708090a0b0c0d0e0f"
    );
    assert_eq!(kernel_wwid(&page(&[naa3, port])), "naa.3102030405060708");
}
