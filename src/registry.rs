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

use replication::service::{
    ExposedVolume,
    peer::{Access, HaHost, Identity},
};

use crate::config::{ChapConfig, Config, LunConfig, PortalConfig, ServerConfig, TargetConfig};

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
    /// Initiators of peer servers that may use the HA peer protocol.
    pub replica_peers: Vec<String>,
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
    /// Server settings (for logical units built later).
    server: ServerConfig,
    /// Portal group tags.
    groups: Vec<u16>,
    /// The (target, LUN) pairs serving each volume.
    by_volume: RwLock<std::collections::HashMap<String, Vec<(String, u16)>>>,
}

/// (relative target port, target port group) pairs of a target.
fn port_groups_of(groups: &[u16], target_groups: &[u16]) -> Vec<(u16, u16)> {
    groups
        .iter()
        .filter(|g| target_groups.is_empty() || target_groups.contains(g))
        .map(|&g| (g, g))
        .collect()
}

/// The LUN inventory of a target changed: every other LUN reports it to its I_T nexuses.
fn announce_change(t: &Target, changed: u16) {
    for (l, lu) in t.lun_map().iter() {
        if l != changed {
            lu.unit_attention_all(scsi::Sense::REPORTED_LUNS_DATA_CHANGED, None);
        }
    }
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

/// Open a configured LUN's backing store (creating a sparse image when it is missing).
pub fn open_device(target: &TargetConfig, l: &LunConfig) -> anyhow::Result<FileDevice> {
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
    Ok(dev)
}

/// The stable 64-bit identity of a configured LUN's volume (its NAA designator).
pub fn configured_uid(target: &TargetConfig, l: &LunConfig) -> u64 {
    u64::from_be_bytes(lun_identity(&target.name, l.lun, l.serial.as_deref()).0)
}

/// What a logical unit is built from.
#[derive(Debug)]
struct LuSpec {
    naa: [u8; 8],
    serial: String,
    block_size: u32,
    physical_block_size: u32,
    read_only: bool,
    removable: bool,
    thin: Option<bool>,
}

/// The NAA designator (type 3, locally assigned) of a volume identity.
fn naa_of(uid: u64) -> [u8; 8] {
    let mut naa = uid.to_be_bytes();
    naa[0] = 0x30 | (naa[0] & 0x0f);
    naa
}

fn build_lu(
    server: &ServerConfig,
    spec: LuSpec,
    dev: Arc<dyn BlockDevice>,
    port_groups: &[(u16, u16)],
) -> anyhow::Result<LogicalUnit> {
    let mut cfg = LuConfig::new(spec.serial, spec.naa, spec.block_size);
    cfg.read_only = spec.read_only;
    cfg.removable = spec.removable;
    cfg.physical_block_size = spec.physical_block_size;
    cfg.thin = spec.thin.unwrap_or_else(|| dev.thin());
    cfg.port_groups = port_groups.to_vec();
    cfg.sanitize_rate = server.sanitize_rate_mib_s << 20;
    let pr_dir = server.data_dir.join("reservations");
    std::fs::create_dir_all(&pr_dir).with_context(|| format!("creating {}", pr_dir.display()))?;
    let naa_hex: String = spec.naa.iter().map(|b| format!("{b:02x}")).collect();
    cfg.pr_file = Some(pr_dir.join(format!("{naa_hex}.pr")));
    Ok(LogicalUnit::new(cfg, dev))
}

impl Registry {
    /// Build the registry over the volumes of the replication service: every configured
    /// LUN is served by its volume (`volume_of`), so that its writes pass through the
    /// replication layer.
    pub fn from_config(
        c: &Config,
        volume_of: &dyn Fn(&str) -> Option<Arc<dyn BlockDevice>>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&c.server.data_dir)
            .with_context(|| format!("creating {}", c.server.data_dir.display()))?;
        // Relative target port identifier = portal group tag; target port group = the same.
        let mut groups: Vec<u16> = c.portals.iter().map(|p| p.group).collect();
        groups.sort_unstable();
        groups.dedup();
        let mut targets = Vec::new();
        let mut by_volume: std::collections::HashMap<String, Vec<(String, u16)>> =
            std::collections::HashMap::new();
        for t in &c.targets {
            let port_groups = port_groups_of(&groups, &t.portal_groups);
            let mut map = LunMap::new();
            for l in &t.luns {
                let name = l.volume_name(&t.name);
                let dev = volume_of(&name).with_context(|| {
                    format!("target {} LUN {}: volume {name} is not open", t.name, l.lun)
                })?;
                by_volume
                    .entry(name.clone())
                    .or_default()
                    .push((t.name.clone(), l.lun));
                let (naa, serial) = lun_identity(&t.name, l.lun, l.serial.as_deref());
                let spec = LuSpec {
                    naa,
                    serial,
                    block_size: l.block_size,
                    physical_block_size: l.physical_block_size.unwrap_or(l.block_size),
                    read_only: l.read_only,
                    removable: l.removable,
                    thin: l.thin,
                };
                map.insert(
                    l.lun,
                    Arc::new(build_lu(&c.server, spec, dev, &port_groups)?),
                );
            }
            targets.push(Arc::new(Target {
                name: t.name.clone(),
                alias: t.alias.clone(),
                portal_groups: t.portal_groups.clone(),
                allowed: t.allowed_initiators.clone(),
                replica_peers: t.replica_peers.clone(),
                auth: policy(&t.chap, t.mutual_chap.as_ref()),
                luns: RwLock::new(Arc::new(map)),
            }));
        }
        Ok(Self {
            targets,
            portals: RwLock::new(c.portals.clone()),
            discovery_auth: policy(&c.discovery.chap, c.discovery.mutual_chap.as_ref()),
            server: c.server.clone(),
            groups,
            by_volume: RwLock::new(by_volume),
        })
    }

    /// Export a volume of the replication service as a LUN now (ExposeVolume, and the
    /// recorded exposures at start). Hosts see REPORTED LUNS DATA HAS CHANGED.
    pub fn expose_volume(&self, v: &ExposedVolume) -> anyhow::Result<()> {
        let t = self
            .target(&v.exposure.target)
            .with_context(|| format!("no target {}", v.exposure.target))?;
        let lun = v.exposure.lun;
        let (naa, serial) = match &v.identity {
            Some(id) => (id.naa, id.serial.clone()),
            None => (naa_of(v.uid), format!("{:016X}", v.uid)),
        };
        let spec = LuSpec {
            naa,
            serial,
            block_size: v.block_size,
            physical_block_size: v.block_size,
            read_only: v.exposure.read_only,
            removable: false,
            thin: None,
        };
        let lu = Arc::new(build_lu(
            &self.server,
            spec,
            v.device.clone(),
            &port_groups_of(&self.groups, &t.portal_groups),
        )?);
        let mut luns = t
            .luns
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if luns.get(lun).is_some() {
            anyhow::bail!("LUN {lun} of {} is in use", t.name);
        }
        let mut map = (**luns).clone();
        map.insert(lun, lu);
        *luns = Arc::new(map);
        drop(luns);
        self.by_volume_mut()
            .entry(v.name.clone())
            .or_default()
            .push((t.name.clone(), lun));
        announce_change(t, lun);
        tracing::info!(target = %t.name, lun, volume = %v.name, read_only = v.exposure.read_only, "volume exposed");
        Ok(())
    }

    /// Stop exporting a LUN (HideVolume).
    pub fn hide_lun(&self, target: &str, lun: u16) {
        let Some(t) = self.target(target) else { return };
        let mut luns = t
            .luns
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut map = (**luns).clone();
        if map.remove(lun).is_some() {
            *luns = Arc::new(map);
            drop(luns);
            for v in self.by_volume_mut().values_mut() {
                v.retain(|(x, l)| !(x.eq_ignore_ascii_case(&t.name) && *l == lun));
            }
            announce_change(t, lun);
            tracing::info!(target = %t.name, lun, "LUN hidden");
        }
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

impl admin::Exports for Registry {
    fn has_target(&self, iqn: &str) -> bool {
        self.target(iqn).is_some()
    }

    fn luns_in_use(&self, iqn: &str) -> Vec<u16> {
        self.target(iqn)
            .map(|t| t.lun_map().luns().to_vec())
            .unwrap_or_default()
    }

    fn expose(&self, v: &ExposedVolume) -> Result<(), String> {
        self.expose_volume(v).map_err(|e| format!("{e:#}"))
    }

    fn hide(&self, iqn: &str, lun: u16) {
        self.hide_lun(iqn, lun);
    }
}

impl Registry {
    fn by_volume_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, std::collections::HashMap<String, Vec<(String, u16)>>>
    {
        self.by_volume
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The logical units serving a volume, with their targets.
    fn units_of(&self, volume: &str) -> Vec<(Arc<Target>, Arc<LogicalUnit>)> {
        let places = self
            .by_volume
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(volume)
            .cloned()
            .unwrap_or_default();
        places
            .iter()
            .filter_map(|(t, l)| {
                let t = self.target(t)?;
                let lu = t.lun_map().get(*l)?.clone();
                Some((t.clone(), lu))
            })
            .collect()
    }
}

impl HaHost for Registry {
    fn identity(&self, volume: &str) -> Option<Identity> {
        let (_, lu) = self.units_of(volume).into_iter().next()?;
        let c = lu.config();
        Some(Identity {
            naa: c.naa,
            serial: c.serial.clone(),
        })
    }

    fn portal_groups(&self, target: &str) -> Vec<u16> {
        self.target(target)
            .map(|t| {
                port_groups_of(&self.groups, &t.portal_groups)
                    .into_iter()
                    .map(|(_, g)| g)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn expose(&self, v: &ExposedVolume) -> Result<(), String> {
        self.expose_volume(v).map_err(|e| format!("{e:#}"))
    }

    fn hide(&self, target: &str, lun: u16) {
        self.hide_lun(target, lun);
    }

    fn places(&self, volume: &str) -> Vec<(String, u16)> {
        self.units_of(volume)
            .into_iter()
            .filter_map(|(t, lu)| {
                t.lun_map()
                    .iter()
                    .find(|(_, x)| Arc::ptr_eq(x, &lu))
                    .map(|(l, _)| (t.name.clone(), l))
            })
            .collect()
    }

    fn set_access(&self, volume: &str, access: &Access) {
        for (t, lu) in self.units_of(volume) {
            lu.set_peer_initiators(access.peer_initiators.clone(), access.peer_writes);
            lu.set_peer_port_groups(access.peer_groups.clone());
            for (_, g) in &access.peer_groups {
                lu.set_alua_state(*g, access.peer);
            }
            for (_, g) in port_groups_of(&self.groups, &t.portal_groups) {
                lu.set_alua_state(g, access.own);
            }
            tracing::info!(target = %t.name, volume, own = access.own, peer = access.peer, "asymmetric access state");
        }
    }

    fn settle(&self, volume: &str, timeout: std::time::Duration) -> bool {
        self.units_of(volume)
            .iter()
            .all(|(_, lu)| lu.settle(timeout))
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
