//! The TOML configuration: portals, targets, LUNs, CHAP users and initiator allow-lists.
//! Unknown fields are rejected with a message naming them.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use serde::Deserialize;

/// The configuration used when none is given: one target with a 1 GiB sparse LUN on
/// 127.0.0.1:3260 and the admin socket under `./ironlun-data/`.
pub const DEFAULT_CONFIG: &str = r#"
[server]
data_dir = "./ironlun-data"

[[portal]]
address = "127.0.0.1:3260"
group = 1

[[target]]
name = "iqn.2026-11.io.ironlun:default"
alias = "ironlun-default"

[[target.lun]]
lun = 0
path = "./ironlun-data/default-lun0.img"
size = "1GiB"
"#;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Server-wide settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Listening portals.
    #[serde(default, rename = "portal")]
    pub portals: Vec<PortalConfig>,
    /// Discovery session settings.
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    /// Targets.
    #[serde(default, rename = "target")]
    pub targets: Vec<TargetConfig>,
    /// Pools replica images are allocated from (default: one pool `default` in
    /// `<data_dir>/pool`).
    #[serde(default, rename = "pool")]
    pub pools: Vec<PoolConfig>,
    /// The admin socket.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Replication settings.
    #[serde(default)]
    pub replication: ReplicationConfig,
}

/// A pool of replica images: a directory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Name (`pool:<name>` on the admin socket).
    pub name: String,
    /// Directory of the images.
    pub path: PathBuf,
    /// Bytes copy-on-write snapshot stores may use (default: unlimited); a snapshot that
    /// would exceed it becomes Broken.
    pub limit: Option<Size>,
}

/// The admin socket.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the admin socket.
    pub enabled: bool,
    /// Socket path (default: `<data_dir>/admin.sock`).
    pub socket: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: None,
        }
    }
}

/// Replication settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// How long a method waits for its work before it answers 4096 (Job Started) with a
    /// job to poll, in milliseconds.
    pub job_wait_ms: u64,
    /// Bytes an asynchronous mirror (or consistent group) may lag behind its source before
    /// it falls back to change tracking and resynchronizes.
    pub async_max_lag: Size,
    /// How long Split waits for an asynchronous target to catch up before it answers 3
    /// (Timeout), in milliseconds; a consistent group's Failover waits this long (at most
    /// 30 s) before it fails over at the point the targets reached.
    pub drain_timeout_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            job_wait_ms: 2000,
            async_max_lag: Size(64 << 20),
            drain_timeout_ms: 60_000,
        }
    }
}

/// Server-wide settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Directory for images, state and the admin socket.
    pub data_dir: PathBuf,
    /// CmdSN window per session.
    pub queue_depth: u32,
    /// Threads executing disk I/O.
    pub io_threads: usize,
    /// Threads serving connections, each connection on one of them (0: one per CPU, at
    /// most 4).
    pub net_threads: usize,
    /// Seconds of initiator silence before the target sends a NOP-In ping (0: never).
    pub nop_interval_secs: u64,
    /// Seconds to wait for a ping's answer before dropping the connection.
    pub nop_timeout_secs: u64,
    /// Seconds a login may take before the connection is dropped.
    pub login_timeout_secs: u64,
    /// MaxRecvDataSegmentLength the target declares.
    pub max_recv_data_segment_length: u32,
    /// Largest FirstBurstLength accepted.
    pub first_burst_length: u32,
    /// Largest MaxBurstLength accepted.
    pub max_burst_length: u32,
    /// Largest MaxOutstandingR2T accepted.
    pub max_outstanding_r2t: u32,
    /// The target's InitialR2T.
    pub initial_r2t: bool,
    /// The target's ImmediateData.
    pub immediate_data: bool,
    /// Digest policy: "allow", "require" or "refuse".
    pub digests: String,
    /// Largest number of simultaneous connections.
    pub max_connections: usize,
    /// SANITIZE OVERWRITE pace in MiB/s, so that it does not starve other I/O (0: unpaced).
    pub sanitize_rate_mib_s: u64,
    /// Microseconds a connection that sees one command at a time keeps reading its socket
    /// for the next command before it sleeps (0: never; see the README's speed section).
    pub poll_us: u64,
}

impl ServerConfig {
    /// How many network threads to start: `net_threads`, or one per CPU (at most 4).
    pub fn net_threads(&self) -> usize {
        match self.net_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
            n => n,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./ironlun-data"),
            queue_depth: 128,
            io_threads: 4,
            net_threads: 0,
            nop_interval_secs: 10,
            nop_timeout_secs: 15,
            login_timeout_secs: 15,
            max_recv_data_segment_length: 262_144,
            first_burst_length: 262_144,
            max_burst_length: 16_776_192,
            max_outstanding_r2t: 8,
            initial_r2t: false,
            immediate_data: true,
            digests: "allow".into(),
            max_connections: 1024,
            sanitize_rate_mib_s: 256,
            poll_us: 50,
        }
    }
}

/// One listening portal.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// Address to listen on (`0.0.0.0:3260` answers SendTargets with the address the
    /// connection came in on).
    pub address: SocketAddr,
    /// Target portal group tag.
    #[serde(default = "one")]
    pub group: u16,
}

fn one() -> u16 {
    1
}

/// A CHAP user name and secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChapConfig {
    /// CHAP_N.
    pub user: String,
    /// The secret (12 to 16 characters or more is recommended by RFC 7143).
    pub secret: String,
}

impl std::fmt::Debug for ChapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapConfig")
            .field("user", &self.user)
            .field("secret", &"***")
            .finish()
    }
}

/// Discovery session settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Initiator credentials required for discovery (empty: none).
    #[serde(default)]
    pub chap: Vec<ChapConfig>,
    /// The target's credential for mutual CHAP in discovery.
    pub mutual_chap: Option<ChapConfig>,
}

/// One target.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The IQN.
    pub name: String,
    /// TargetAlias.
    pub alias: Option<String>,
    /// Portal groups the target is reachable through (default: all).
    #[serde(default)]
    pub portal_groups: Vec<u16>,
    /// Initiator names allowed to log in and to see the target in discovery (empty: any).
    #[serde(default)]
    pub allowed_initiators: Vec<String>,
    /// Initiator names of peer ironlun servers that may hold HA relationships with this
    /// target (the peer protocol, docs/ha.md); other initiators' peer requests are not
    /// understood.
    #[serde(default)]
    pub replica_peers: Vec<String>,
    /// Initiator credentials; when set, CHAP is required.
    #[serde(default)]
    pub chap: Vec<ChapConfig>,
    /// The target's credential for mutual CHAP.
    pub mutual_chap: Option<ChapConfig>,
    /// Logical units.
    #[serde(default, rename = "lun")]
    pub luns: Vec<LunConfig>,
}

/// One logical unit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LunConfig {
    /// LUN number (0 to 16383).
    pub lun: u16,
    /// Image file or block device.
    pub path: PathBuf,
    /// Size of a sparse image created when the file is missing (bytes, or "1GiB", "512M").
    pub size: Option<Size>,
    /// Logical block size: 512 or 4096.
    #[serde(default = "default_block_size")]
    pub block_size: u32,
    /// Serve read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Unit serial number (default: derived from target and LUN).
    pub serial: Option<String>,
    /// Report thin provisioning (default: true for image files).
    pub thin: Option<bool>,
    /// A removable medium that START STOP UNIT can eject and load.
    #[serde(default)]
    pub removable: bool,
    /// Physical block size to report (default: the logical block size), e.g. 4096 on a
    /// 512-byte LUN so that initiators align to 4 KiB.
    pub physical_block_size: Option<u32>,
    /// Volume name on the admin socket (`volume:<name>`); default `<iqn suffix>-lun<N>`,
    /// e.g. `default-lun0` for LUN 0 of `iqn.2026-11.io.ironlun:default`.
    pub name: Option<String>,
}

impl LunConfig {
    /// The volume name of this LUN.
    pub fn volume_name(&self, target: &str) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let suffix = target.rsplit(':').next().unwrap_or(target);
        let clean: String = suffix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(56)
            .collect();
        format!("{clean}-lun{}", self.lun)
    }
}

impl Config {
    /// The admin socket path.
    pub fn admin_socket(&self) -> PathBuf {
        self.admin
            .socket
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("admin.sock"))
    }

    /// The pools, with the default when none is configured.
    pub fn pools(&self) -> Vec<PoolConfig> {
        if self.pools.is_empty() {
            vec![PoolConfig {
                name: "default".into(),
                path: self.server.data_dir.join("pool"),
                limit: None,
            }]
        } else {
            self.pools.clone()
        }
    }
}

fn default_block_size() -> u32 {
    512
}

/// A size in bytes, written as a number or with a unit suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Self(n)),
            Raw::S(s) => parse_size(&s).map(Self).map_err(serde::de::Error::custom),
        }
    }
}

/// Parse "1GiB", "512M", "4096", "2T" (binary units).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().with_context(|| format!("invalid size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => bail!("unknown size unit {other:?} in {s:?}"),
    };
    n.checked_mul(mult)
        .with_context(|| format!("size {s:?} overflows"))
}

impl Config {
    /// Parse and validate a configuration text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let c: Self = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        c.validate()?;
        Ok(c)
    }

    /// Load a file, warning when it holds CHAP secrets others can read.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let c = Self::parse(&text).with_context(|| format!("in {}", path.display()))?;
        if c.has_secrets() {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "the configuration holds CHAP secrets and is readable by other users; \
                     chmod 600 it"
                );
            }
        }
        Ok(c)
    }

    /// The embedded default configuration.
    pub fn default_config() -> Self {
        // The embedded text is a constant checked by a unit test.
        Self::parse(DEFAULT_CONFIG).unwrap_or_else(|e| panic!("embedded config: {e}"))
    }

    fn has_secrets(&self) -> bool {
        !self.discovery.chap.is_empty()
            || self
                .targets
                .iter()
                .any(|t| !t.chap.is_empty() || t.mutual_chap.is_some())
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.portals.is_empty() {
            bail!("at least one [[portal]] is required");
        }
        let s = &self.server;
        if !["allow", "require", "refuse"].contains(&s.digests.as_str()) {
            bail!("server.digests must be \"allow\", \"require\" or \"refuse\"");
        }
        if !(512..=16_777_215).contains(&s.max_recv_data_segment_length) {
            bail!("server.max_recv_data_segment_length must be 512 to 16777215");
        }
        if s.queue_depth == 0 || s.queue_depth > 4096 {
            bail!("server.queue_depth must be 1 to 4096");
        }
        if s.io_threads == 0 {
            bail!("server.io_threads must be at least 1");
        }
        if s.net_threads > 64 {
            bail!("server.net_threads must be 0 (one per CPU) to 64");
        }
        if s.poll_us > 10_000 {
            bail!("server.poll_us must be 0 to 10000 (microseconds)");
        }
        let groups: Vec<u16> = self.portals.iter().map(|p| p.group).collect();
        let mut names = std::collections::HashSet::new();
        for t in &self.targets {
            if !valid_iqn(&t.name) {
                bail!(
                    "target name {:?} is not a valid iqn./eui./naa. name",
                    t.name
                );
            }
            if !names.insert(t.name.to_ascii_lowercase()) {
                bail!("target {} is defined twice", t.name);
            }
            for g in &t.portal_groups {
                if !groups.contains(g) {
                    bail!(
                        "target {} names portal group {g}, which no portal has",
                        t.name
                    );
                }
            }
            check_chap(&t.name, &t.chap, t.mutual_chap.as_ref())?;
            let mut luns = std::collections::HashSet::new();
            for l in &t.luns {
                if l.lun > 16383 {
                    bail!("target {}: LUN {} is above 16383", t.name, l.lun);
                }
                if !luns.insert(l.lun) {
                    bail!("target {}: LUN {} is defined twice", t.name, l.lun);
                }
                if l.block_size != 512 && l.block_size != 4096 {
                    bail!(
                        "target {} LUN {}: block_size must be 512 or 4096",
                        t.name,
                        l.lun
                    );
                }
                if let Some(p) = l.physical_block_size
                    && (p < l.block_size
                        || !(p / l.block_size).is_power_of_two()
                        || p % l.block_size != 0)
                {
                    bail!(
                        "target {} LUN {}: physical_block_size must be a power-of-two multiple of the block size",
                        t.name,
                        l.lun
                    );
                }
                if let Some(Size(sz)) = l.size
                    && (sz == 0 || sz % u64::from(l.block_size) != 0)
                {
                    bail!(
                        "target {} LUN {}: size must be a non-zero multiple of the block size",
                        t.name,
                        l.lun
                    );
                }
            }
        }
        check_chap(
            "discovery",
            &self.discovery.chap,
            self.discovery.mutual_chap.as_ref(),
        )?;
        let mut volumes = std::collections::HashSet::new();
        for t in &self.targets {
            for l in &t.luns {
                let n = l.volume_name(&t.name);
                if !replication::service::valid_name(&n) {
                    bail!(
                        "target {} LUN {}: volume name {n:?} must be 1 to 64 letters, digits, '.', '_' or '-'",
                        t.name,
                        l.lun
                    );
                }
                if !volumes.insert(n.clone()) {
                    bail!("volume name {n:?} is used by two LUNs; set `name` on one of them");
                }
            }
        }
        let mut pools = std::collections::HashSet::new();
        for p in &self.pools {
            if !replication::service::valid_name(&p.name) {
                bail!(
                    "pool name {:?} must be 1 to 64 letters, digits, '.', '_' or '-'",
                    p.name
                );
            }
            if !pools.insert(p.name.clone()) {
                bail!("pool {} is defined twice", p.name);
            }
        }
        Ok(())
    }
}

fn check_chap(what: &str, users: &[ChapConfig], mutual: Option<&ChapConfig>) -> anyhow::Result<()> {
    if mutual.is_some() && users.is_empty() {
        bail!("{what}: mutual_chap needs at least one chap user");
    }
    for u in users.iter().chain(mutual) {
        if u.user.is_empty() || u.secret.is_empty() {
            bail!("{what}: CHAP user names and secrets must not be empty");
        }
        if let Some(m) = mutual
            && u.secret == m.secret
            && !std::ptr::eq(u, m)
        {
            // RFC 7143 section 12.1.3: the same secret must not be used in both directions.
            bail!("{what}: the mutual CHAP secret must differ from the initiator secrets");
        }
    }
    Ok(())
}

/// iSCSI names (RFC 7143 section 4.2.7): iqn., eui. or naa. forms, lower case allowed only.
pub fn valid_iqn(name: &str) -> bool {
    let ok_chars = name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b".-:".contains(&c));
    ok_chars
        && name.len() <= 223
        && (name.starts_with("iqn.") || name.starts_with("eui.") || name.starts_with("naa."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let c = Config::default_config();
        assert_eq!(c.targets[0].name, "iqn.2026-11.io.ironlun:default");
        assert_eq!(c.targets[0].luns[0].size, Some(Size(1 << 30)));
        assert_eq!(c.portals[0].address.to_string(), "127.0.0.1:3260");
    }

    #[test]
    fn unknown_fields_are_named() {
        let text = DEFAULT_CONFIG.replace("alias =", "bogus_field = 1\nalias =");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("bogus_field"), "{err}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert!(parse_size("1X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn validation_errors() {
        let bad = [
            (
                "name = \"iqn.2026-11.io.ironlun:default\"",
                "name = \"bad name\"",
            ),
            ("lun = 0", "lun = 20000"),
            ("size = \"1GiB\"", "size = 1000"),
            ("[server]", "[server]\npoll_us = 20000"),
            ("[server]", "[server]\nnet_threads = 65"),
        ];
        for (from, to) in bad {
            assert!(
                Config::parse(&DEFAULT_CONFIG.replace(from, to)).is_err(),
                "{to}"
            );
        }
        let same_secret = format!(
            "{DEFAULT_CONFIG}chap = [{{ user = \"a\", secret = \"s1\" }}]\n\
             mutual_chap = {{ user = \"t\", secret = \"s1\" }}\n"
        );
        // Keys after [[target.lun]] belong to the LUN table, so put them on the target.
        let same_secret = same_secret.replace(
            "alias = \"ironlun-default\"",
            "alias = \"ironlun-default\"\nchap = [{ user = \"a\", secret = \"s1\" }]\nmutual_chap = { user = \"t\", secret = \"s1\" }",
        );
        let cut = same_secret.rfind("chap = [").unwrap_or(0);
        let err = Config::parse(&same_secret[..cut]).unwrap_err().to_string();
        assert!(err.contains("mutual"), "{err}");
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let c = ChapConfig {
            user: "u".into(),
            secret: "hunter2-secret".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
