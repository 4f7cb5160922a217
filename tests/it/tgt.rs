//! tgt (Debian's user-space target) as a peer: a tgtd on its own port and control port,
//! one target with one LUN backed by an image file.

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::harness::{run, tool};

/// A running tgtd; stopped on drop.
pub struct Tgt {
    child: Child,
    ctl: u16,
    pub addr: SocketAddr,
    pub iqn: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Tgt {
    /// Serve `image` as LUN 1 of `iqn` (tgt's LUN 0 is its controller).
    pub fn start(dir: &Path, iqn: &str, image: &Path) -> Self {
        drop(tool("tgtd"));
        let port = free_port();
        let ctl = 2000 + (port % 10_000);
        let child = Command::new("tgtd")
            .args([
                "-f",
                "-C",
                &ctl.to_string(),
                "--iscsi",
                &format!("portal=127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("tgtd.log")).expect("log"),
            ))
            .spawn()
            .expect("start tgtd");
        let me = Self {
            child,
            ctl,
            addr: format!("127.0.0.1:{port}").parse().expect("addr"),
            iqn: iqn.to_owned(),
        };
        let t = Instant::now();
        while !me.adm(&["--op", "show", "--mode", "target"]).0 {
            assert!(t.elapsed() < Duration::from_secs(10), "tgtd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        for args in [
            vec!["--op", "new", "--mode", "target", "--tid", "1", "-T", iqn],
            vec![
                "--op",
                "new",
                "--mode",
                "logicalunit",
                "--tid",
                "1",
                "--lun",
                "1",
                "--bstype",
                "rdwr",
                "-b",
                image.to_str().expect("path"),
            ],
            vec![
                "--op",
                "update",
                "--mode",
                "target",
                "--tid",
                "1",
                "--name",
                "MaxRecvDataSegmentLength",
                "--value",
                "262144",
            ],
            vec![
                "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
            ],
        ] {
            let (ok, out) = me.adm(&args);
            assert!(ok, "tgtadm {args:?}: {out}");
        }
        me
    }

    fn adm(&self, args: &[&str]) -> (bool, String) {
        run(Command::new("tgtadm")
            .args(["-C", &self.ctl.to_string(), "--lld", "iscsi"])
            .args(args))
    }
}

impl Drop for Tgt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
