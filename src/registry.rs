//! The targets the server exports: their LUNs, access control, authentication, and the
//! answers to SendTargets.

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
};

use anyhow::Context;
use blockdev::{BlockDevice, FileDevice};
use iscsi_proto::login::{AuthPolicy, Credential, LoginContext, Secret, TargetLookup};
use scsi::{LogicalUnit, LuConfig, LunMap};
use sha2::{Digest, Sha256};

use crate::config::{ChapConfig, Config, LunConfig, PortalConfig, TargetConfig};

/// One exported target.
#[derive(Debug)]
pub struct Target {
    /// IQN.
    pub name: String,
    /// TargetAlias.
    pub alias: Option<String>,
    /// Portal groups it is reachable through (empty: all).
    pub portal_groups: Vec<u16>,
    /// Allowed initiator names (empty: any).
    pub allowed: Vec<String>,
    /// Authentication.
    pub auth: AuthPolicy,
    /// LUNs; replaced as a whole when LUNs are added or removed.
    pub luns: RwLock<Arc<LunMap>>,
}

impl Target {
    /// Whether an initiator may use (and discover) this target.
    pub fn admits(&self, initiator: &str) -> bool {
        self.allowed.is_empty()
            || self
                .allowed
                .iter()
                .any(|a| a.eq_ignore_ascii_case(initiator))
    }

    /// Whether the target is reachable through a portal group.
    pub fn in_group(&self, group: u16) -> bool {
        self.portal_groups.is_empty() || self.portal_groups.contains(&group)
    }

    /// The current LUN map.
    pub fn lun_map(&self) -> Arc<LunMap> {
        self.luns
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// All targets and portals.
#[derive(Debug)]
pub struct Registry {
    /// Targets by name.
    pub targets: Vec<Arc<Target>>,
    /// Portals (with their actual bound addresses once listening).
    pub portals: RwLock<Vec<PortalConfig>>,
    /// Discovery authentication.
    pub discovery_auth: AuthPolicy,
}

fn policy(users: &[ChapConfig], mutual: Option<&ChapConfig>) -> AuthPolicy {
    let cred = |c: &ChapConfig| Credential {
        user: c.user.clone(),
        secret: Secret::new(c.secret.as_bytes()),
    };
    AuthPolicy {
        users: users.iter().map(cred).collect(),
        mutual: mutual.map(cred),
    }
}

/// A stable 64-bit identity for a LUN: the NAA (type 3, locally assigned) designator and the
/// default serial number derive from it.
pub fn lun_identity(target: &str, lun: u16, serial: Option<&str>) -> ([u8; 8], String) {
    let mut h = Sha256::new();
    h.update(target.to_ascii_lowercase().as_bytes());
    h.update(lun.to_be_bytes());
    if let Some(s) = serial {
        h.update(s.as_bytes());
    }
    let d = h.finalize();
    let mut naa = [0u8; 8];
    naa.copy_from_slice(&d[..8]);
    naa[0] = 0x30 | (naa[0] & 0x0f);
    let serial = serial.map_or_else(|| hex_upper(&d[8..16]), str::to_owned);
    (naa, serial)
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// Open a LUN's backing store and build its logical unit.
pub fn open_lun(
    server: &crate::config::ServerConfig,
    target: &TargetConfig,
    l: &LunConfig,
    port_groups: &[(u16, u16)],
) -> anyhow::Result<LogicalUnit> {
    let dev = FileDevice::open(&l.path, l.size.map(|s| s.0), l.read_only)
        .with_context(|| format!("target {} LUN {}: {}", target.name, l.lun, l.path.display()))?;
    if dev.size() % u64::from(l.block_size) != 0 {
        anyhow::bail!(
            "target {} LUN {}: {} is not a multiple of the block size",
            target.name,
            l.lun,
            l.path.display()
        );
    }
    let (naa, serial) = lun_identity(&target.name, l.lun, l.serial.as_deref());
    let mut cfg = LuConfig::new(serial, naa, l.block_size);
    cfg.read_only = l.read_only;
    cfg.removable = l.removable;
    cfg.physical_block_size = l.physical_block_size.unwrap_or(l.block_size);
    cfg.thin = l.thin.unwrap_or_else(|| dev.thin());
    cfg.port_groups = port_groups.to_vec();
    cfg.sanitize_rate = server.sanitize_rate_mib_s << 20;
    let pr_dir = server.data_dir.join("reservations");
    std::fs::create_dir_all(&pr_dir).with_context(|| format!("creating {}", pr_dir.display()))?;
    let naa_hex: String = naa.iter().map(|b| format!("{b:02x}")).collect();
    cfg.pr_file = Some(pr_dir.join(format!("{naa_hex}.pr")));
    Ok(LogicalUnit::new(cfg, Arc::new(dev) as Arc<dyn BlockDevice>))
}

impl Registry {
    /// Build the registry, opening (and creating) every LUN's backing store.
    pub fn from_config(c: &Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&c.server.data_dir)
            .with_context(|| format!("creating {}", c.server.data_dir.display()))?;
        // Relative target port identifier = portal group tag; target port group = the same.
        let mut groups: Vec<u16> = c.portals.iter().map(|p| p.group).collect();
        groups.sort_unstable();
        groups.dedup();
        let mut targets = Vec::new();
        for t in &c.targets {
            let port_groups: Vec<(u16, u16)> = groups
                .iter()
                .filter(|g| t.portal_groups.is_empty() || t.portal_groups.contains(g))
                .map(|&g| (g, g))
                .collect();
            let mut map = LunMap::new();
            for l in &t.luns {
                map.insert(l.lun, Arc::new(open_lun(&c.server, t, l, &port_groups)?));
            }
            targets.push(Arc::new(Target {
                name: t.name.clone(),
                alias: t.alias.clone(),
                portal_groups: t.portal_groups.clone(),
                allowed: t.allowed_initiators.clone(),
                auth: policy(&t.chap, t.mutual_chap.as_ref()),
                luns: RwLock::new(Arc::new(map)),
            }));
        }
        Ok(Self {
            targets,
            portals: RwLock::new(c.portals.clone()),
            discovery_auth: policy(&c.discovery.chap, c.discovery.mutual_chap.as_ref()),
        })
    }

    /// Find a target by name (iSCSI names compare case-insensitively).
    pub fn target(&self, name: &str) -> Option<&Arc<Target>> {
        self.targets
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }

    /// The SendTargets answer (RFC 7143 appendix C): each permitted target with the portals
    /// of its groups. A wildcard portal is reported with `local`, the address this connection
    /// came in on.
    pub fn send_targets(
        &self,
        which: &str,
        initiator: &str,
        session_target: Option<&str>,
        local: SocketAddr,
    ) -> iscsi_proto::text::TextKeys {
        let mut out = iscsi_proto::text::TextKeys::default();
        let portals = self
            .portals
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for t in &self.targets {
            let wanted = match which {
                "All" => session_target.is_none(),
                "" => session_target.is_some_and(|s| s.eq_ignore_ascii_case(&t.name)),
                name => name.eq_ignore_ascii_case(&t.name),
            };
            if !wanted || !t.admits(initiator) {
                continue;
            }
            out.push("TargetName", t.name.clone());
            for p in portals.iter().filter(|p| t.in_group(p.group)) {
                let addr = if p.address.ip().is_unspecified() {
                    SocketAddr::new(local.ip(), p.address.port())
                } else {
                    p.address
                };
                out.push("TargetAddress", format!("{addr},{}", p.group));
            }
        }
        out
    }

    /// Record the address a portal actually listens on (port 0 in the config).
    pub fn set_bound(&self, index: usize, addr: SocketAddr) {
        let mut p = self
            .portals
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = p.get_mut(index) {
            p.address = addr;
        }
    }
}

impl scsi::LunResolver for Registry {
    fn resolve(&self, designator_type: u8, value: &[u8]) -> Option<Arc<LogicalUnit>> {
        for t in &self.targets {
            for (_, lu) in t.lun_map().iter() {
                let c = lu.config();
                let hit = match designator_type {
                    3 => value == c.naa,
                    1 => {
                        let mut t10 = format!("{:<8}", c.vendor).into_bytes();
                        t10.truncate(8);
                        t10.extend(c.serial.bytes());
                        value == t10.as_slice()
                    }
                    _ => false,
                };
                if hit {
                    return Some(lu.clone());
                }
            }
        }
        None
    }
}

/// The login context of one portal.
pub struct PortalLogin<'a> {
    /// The registry.
    pub registry: &'a Registry,
    /// The portal group of the connection.
    pub group: u16,
}

impl LoginContext for PortalLogin<'_> {
    fn lookup_target(&self, target: &str, initiator: &str) -> TargetLookup {
        match self.registry.target(target) {
            Some(t) if t.in_group(self.group) => {
                if t.admits(initiator) {
                    TargetLookup::Found {
                        alias: t.alias.clone(),
                        auth: t.auth.clone(),
                    }
                } else {
                    TargetLookup::NotAuthorized
                }
            }
            _ => TargetLookup::NotFound,
        }
    }

    fn discovery_auth(&self, _initiator: &str) -> AuthPolicy {
        self.registry.discovery_auth.clone()
    }
}
