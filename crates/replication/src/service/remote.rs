//! Remote mirrors: a mirror whose target is a LUN of another iSCSI target (another ironlun,
//! or any standard target such as tgt), written by ironlun acting as an initiator. The
//! target is named by a service access point (CIM_ServiceAccessPoint: portal, target IQN,
//! LUN, CHAP credentials) registered through the admin socket.
//!
//! A link that breaks moves the pair to Partitioned (16) with change tracking; when the
//! target answers again the pair resynchronizes the changed chunks by itself, or with
//! CopyRecoveryMode Manual (3) waits in Suspended for Resume.

use std::sync::Arc;

use blockdev::BlockDevice;
use initiator::{Config, Credential, RemoteLun};
use serde::{Deserialize, Serialize};

use super::{MethodError, ReplicationService, valid_name};
use crate::volume::Volume;

/// A registered remote target (the secrets are stored in the catalog, mode 0600, and never
/// shown).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPointRec {
    /// Name (`accesspoint:<name>`).
    pub name: String,
    /// Portal, `host:port`.
    pub portal: String,
    /// Target IQN.
    pub target: String,
    /// The LUN a mirror writes to.
    pub lun: u16,
    /// Our InitiatorName towards it (default: the service's).
    pub initiator_name: Option<String>,
    /// CHAP user and secret.
    pub chap: Option<(String, String)>,
    /// The target's mutual CHAP user and secret.
    pub mutual: Option<(String, String)>,
}

impl std::fmt::Debug for AccessPointRec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessPointRec")
            .field("name", &self.name)
            .field("portal", &self.portal)
            .field("target", &self.target)
            .field("lun", &self.lun)
            .field("chap", &self.chap.as_ref().map(|(u, _)| u))
            .field("mutual", &self.mutual.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// The InitiatorName remote mirrors use when the access point names none.
pub const DEFAULT_INITIATOR: &str = "iqn.2026-11.io.ironlun:replication";

fn is_iscsi_name(n: &str) -> bool {
    let lower = n.get(..4).map(str::to_ascii_lowercase);
    n.len() > 4
        && n.len() <= 223
        && matches!(lower.as_deref(), Some("iqn." | "eui." | "naa."))
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".-:".contains(&c))
}

impl AccessPointRec {
    /// The initiator configuration to reach it.
    pub fn config(&self) -> Config {
        let mut c = Config::new(
            &self.portal,
            &self.target,
            self.initiator_name.as_deref().unwrap_or(DEFAULT_INITIATOR),
        );
        // An ISID of its own per access point.
        let h = self
            .name
            .bytes()
            .fold(0u16, |a, b| a.wrapping_mul(31).wrapping_add(u16::from(b)));
        c.isid = [0x80, 0x49, 0x4c, 0x52, (h >> 8) as u8, h as u8];
        c.chap = self.chap.as_ref().map(|(u, s)| Credential {
            user: u.clone(),
            secret: s.as_bytes().to_vec(),
        });
        c.mutual = self.mutual.as_ref().map(|(u, s)| Credential {
            user: u.clone(),
            secret: s.as_bytes().to_vec(),
        });
        c.timeout = std::time::Duration::from_secs(10);
        c
    }

    /// `iscsi://portal/target/lun`.
    pub fn url(&self) -> String {
        format!("iscsi://{}/{}/{}", self.portal, self.target, self.lun)
    }
}

impl ReplicationService {
    /// CreateAccessPoint: register a remote target.
    pub fn create_access_point(&self, rec: AccessPointRec) -> Result<String, MethodError> {
        if !valid_name(&rec.name) {
            return Err(MethodError::invalid(
                "Name",
                "names are 1 to 64 letters, digits, '.', '_' or '-'",
            ));
        }
        if rec
            .portal
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(MethodError::invalid("Portal", "the portal is host:port"));
        }
        if !is_iscsi_name(&rec.target) {
            return Err(MethodError::invalid("Target", "not an iSCSI name"));
        }
        if rec
            .initiator_name
            .as_deref()
            .is_some_and(|n| !is_iscsi_name(n))
        {
            return Err(MethodError::invalid("InitiatorName", "not an iSCSI name"));
        }
        if rec.lun > 16383 {
            return Err(MethodError::invalid("Lun", "LUNs are 0 to 16383"));
        }
        if rec.mutual.is_some() && rec.chap.is_none() {
            return Err(MethodError::invalid(
                "MutualUser",
                "mutual CHAP needs ChapUser and ChapSecret",
            ));
        }
        let mut cat = self.cat();
        if cat.access_points.contains_key(&rec.name) {
            return Err(MethodError::in_use(
                "Name",
                format!("access point {} exists", rec.name),
            ));
        }
        let name = rec.name.clone();
        cat.access_points.insert(name.clone(), rec);
        self.save(&mut cat);
        Ok(name)
    }

    /// DeleteAccessPoint: refused (6) while a relationship uses it.
    pub fn delete_access_point(&self, name: &str) -> Result<(), MethodError> {
        let mut cat = self.cat();
        if !cat.access_points.contains_key(name) {
            return Err(MethodError::invalid(
                "ServiceAccessPoint",
                format!("no access point {name}"),
            ));
        }
        let used = cat.volumes.values().find(|v| matches!(&v.kind, super::VolumeKind::Remote { access_point } if access_point == name));
        if let Some(v) = used {
            return Err(MethodError::in_use(
                "ServiceAccessPoint",
                format!("volume {} is on it", v.name),
            ));
        }
        cat.access_points.remove(name);
        self.save(&mut cat);
        Ok(())
    }

    /// Log in to an access point's target and open its LUN.
    pub(crate) fn open_remote(&self, ap: &AccessPointRec) -> Result<Arc<RemoteLun>, MethodError> {
        RemoteLun::open(ap.config(), ap.lun)
            .map(Arc::new)
            .map_err(|e| MethodError::failed(format!("cannot use {}: {e}", ap.url())))
    }

    /// A remote volume's device without connecting (the size is known from the catalog).
    pub(crate) fn remote_offline(
        &self,
        ap: &AccessPointRec,
        size: u64,
        block_size: u32,
    ) -> Arc<RemoteLun> {
        Arc::new(RemoteLun::offline(ap.config(), ap.lun, size, block_size))
    }

    /// Forget a remote volume (its data stays on the remote target).
    pub(crate) fn forget_remote_volume(&self, cat: &mut super::Catalog, name: &str) {
        cat.volumes.remove(name);
        for g in cat.groups.values_mut() {
            g.members.retain(|m| m != name);
        }
        let mut rt = self.rt();
        rt.volumes.remove(name);
        rt.remotes.remove(name);
    }

    /// Register the volume of a remote target.
    pub(crate) fn add_remote_volume(&self, name: &str, dev: Arc<RemoteLun>) -> Arc<Volume> {
        let vol = Volume::new(name, dev.clone() as Arc<dyn BlockDevice>);
        let mut rt = self.rt();
        rt.volumes.insert(name.to_owned(), vol.clone());
        rt.remotes.insert(name.to_owned(), dev);
        vol
    }
}
