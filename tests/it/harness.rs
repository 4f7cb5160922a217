//! Start an ironlun server on free loopback ports with a generated configuration.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// A running server; killed on drop.
pub struct Server {
    child: Child,
    /// Temporary directory holding the config, images and logs.
    pub dir: tempfile::TempDir,
    /// Bound portal addresses, in configuration order.
    pub portals: Vec<SocketAddr>,
    /// The admin socket, when the server has one.
    admin: Option<PathBuf>,
    /// Its log filter.
    filter: String,
}

/// The default test target.
pub const IQN: &str = "iqn.2026-11.io.ironlun:test";

impl Server {
    /// A server with one target (`IQN`) holding LUN 0 of 64 MiB, plus extra TOML
    /// appended to the target table (`{DIR}` is replaced by the temp dir).
    pub fn start(target_extra: &str) -> Self {
        Self::start_sized(target_extra, "64MiB")
    }

    /// [`Server::start`] with LUN 0 of `size` (a configuration size, e.g. "256MiB").
    pub fn start_sized(target_extra: &str, size: &str) -> Self {
        Self::start_config(&format!(
            r#"
[[portal]]
address = "127.0.0.1:0"
group = 1

[[target]]
name = "{IQN}"
{target_extra}

[[target.lun]]
lun = 0
path = "{{DIR}}/lun0.img"
size = "{size}"
"#
        ))
    }

    /// A server from a whole configuration (`{DIR}` is replaced by the temp dir; a [server]
    /// table with data_dir is added when missing).
    pub fn start_config(config: &str) -> Self {
        Self::start_config_logging(
            config,
            &std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()),
        )
    }

    /// [`Server::start_config`] with its log filter (`RUST_LOG`) set to `filter`.
    pub fn start_config_logging(config: &str, filter: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let mut text = config.replace("{DIR}", &d);
        if !text.contains("[server]") {
            text = format!("[server]\ndata_dir = \"{d}/data\"\n{text}");
        }
        let cfg = dir.path().join("ironlun.toml");
        std::fs::write(&cfg, text).expect("write config");
        let (child, portals, admin) = spawn(dir.path(), &cfg, filter);
        Self {
            child,
            dir,
            portals,
            admin,
            filter: filter.to_owned(),
        }
    }

    /// Stop the server (SIGTERM and wait, or with `kill`, SIGKILL) and start it again on
    /// the same configuration and files. Portals listening on port 0 get new ports.
    pub fn restart(&mut self, kill: bool) {
        if kill {
            let _ = self.child.kill();
        } else {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
        }
        let _ = self.child.wait();
        let (child, portals, admin) = spawn(self.dir.path(), &self.config_path(), &self.filter);
        self.child = child;
        self.portals = portals;
        self.admin = admin;
    }

    /// A connection to the admin socket.
    pub fn admin(&self) -> admin::client::Client {
        let path = self.admin.as_ref().expect("the server has an admin socket");
        admin::client::Client::connect(path).expect("connect to the admin socket")
    }

    /// The admin socket path.
    pub fn admin_path(&self) -> PathBuf {
        self.admin.clone().expect("the server has an admin socket")
    }

    /// The first portal.
    pub fn addr(&self) -> SocketAddr {
        self.portals[0]
    }

    /// A path inside the server's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The configuration file the server was started with.
    pub fn config_path(&self) -> PathBuf {
        self.path("ironlun.toml")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run an external tool; panics with a clear message when it is not installed.
pub fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: run scripts/test.sh, which installs the test dependencies"
    );
    Command::new(name)
}

/// Run a command and return (success, stdout + stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run command");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// Start `ironlun serve -c cfg` in `dir` and wait until it is ready; returns the child, its
/// portals and its admin socket.
fn spawn(
    dir: &std::path::Path,
    cfg: &std::path::Path,
    filter: &str,
) -> (Child, Vec<SocketAddr>, Option<PathBuf>) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ironlun"))
        .args(["serve", "-c"])
        .arg(cfg)
        .env("RUST_LOG", filter)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn ironlun");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut portals = Vec::new();
    let mut admin = None;
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.starts_with("ironlun: listening on ") => {
                let addr = line["ironlun: listening on ".len()..]
                    .split_whitespace()
                    .next()
                    .and_then(|a| a.parse().ok())
                    .expect("address in listening line");
                portals.push(addr);
            }
            Ok(line) if line.starts_with("ironlun: admin socket ") => {
                admin = Some(PathBuf::from(&line["ironlun: admin socket ".len()..]));
            }
            Ok(line) if line == "ironlun: ready" => break,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                panic!("server did not become ready; log:\n{log}");
            }
        }
    }
    (child, portals, admin)
}
