//! QEMU's iscsi:// driver (libiscsi) writes and reads a 64 MiB random image.

use std::io::Read;

use crate::harness::{IQN, Server, run, tool};

fn md5(path: &std::path::Path) -> String {
    let (ok, out) = run(tool("md5sum").arg(path));
    assert!(ok, "{out}");
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

#[test]
fn qemu_img_convert_round_trip() {
    let s = Server::start("");
    let src = s.path("random.img");
    let mut data = vec![0u8; 64 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    std::fs::write(&src, &data).unwrap();
    let url = format!("iscsi://{}/{IQN}/0", s.addr());
    let (ok, out) = run(tool("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(&url));
    assert!(ok, "qemu-img convert to iscsi: {out}");
    // Read back with HeaderDigest=CRC32C (QEMU's header-digest option).
    let back = s.path("back.img");
    let opts = format!(
        "driver=iscsi,transport=tcp,portal={},target={IQN},lun=0,header-digest=crc32c",
        s.addr()
    );
    let (ok, out) = run(tool("qemu-img")
        .args(["convert", "--image-opts", &opts, "-O", "raw"])
        .arg(&back));
    assert!(ok, "qemu-img convert from iscsi: {out}");
    assert!(
        s.log().contains("header_digest=true"),
        "CRC32C header digest negotiated"
    );
    assert!(!out.contains("failed"), "{out}");
    let want = md5(&src);
    assert_eq!(md5(&back), want);
    assert_eq!(md5(&s.path("lun0.img")), want, "bytes on disk");
}

/// 32 writes of 4 MiB at once: more data than a connection buffers (64 MiB) before it
/// stops asking for more, each write asked for a few R2Ts at a time. Every write completes
/// (they had filled the buffer budget and waited for each other forever) and every byte
/// is on disk.
#[test]
fn qemu_img_bench_four_mib_writes_at_depth_32() {
    let s = Server::start_sized("", "256MiB");
    let url = format!("iscsi://{}/{IQN}/0", s.addr());
    let (ok, out) = run(tool("timeout").args([
        "120",
        "qemu-img",
        "bench",
        "-f",
        "raw",
        "-w",
        "--pattern=165",
        "-c",
        "64",
        "-d",
        "32",
        "-s",
        "4M",
        &url,
    ]));
    assert!(ok, "qemu-img bench: {out}");
    assert!(out.contains("Run completed"), "{out}");
    let disk = std::fs::read(s.path("lun0.img")).unwrap();
    assert_eq!(disk.len(), 256 << 20);
    let wrong = disk.iter().position(|&b| b != 165);
    assert_eq!(wrong, None, "every byte written with the pattern");
}
