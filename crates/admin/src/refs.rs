//! References on the wire: `volume:<name>`, `group:<name>`, `sync:<id>`, `job:<id>`,
//! `pool:<name>`, `aspect:<id>`, and the service itself, `service:replication`.

use std::fmt;

/// A reference to an object of the admin protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ref {
    /// A volume (CIM_StorageVolume).
    Volume(String),
    /// A replication group (CIM_ReplicationGroup).
    Group(String),
    /// A relationship: a pair (CIM_StorageSynchronized) or a group relationship
    /// (CIM_GroupSynchronized).
    Sync(u64),
    /// A job (CIM_ConcreteJob).
    Job(u64),
    /// A pool (CIM_StoragePool).
    Pool(String),
    /// A synchronization aspect left by Dissolve (CIM_SynchronizationAspect).
    Aspect(u64),
    /// A remote target (CIM_ServiceAccessPoint).
    AccessPoint(String),
    /// The replication service and its capabilities.
    Service,
}

/// Why a string is not a reference.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a reference (volume:<name>, group:<name>, sync:<id>, job:<id>, pool:<name>, aspect:<id>, accesspoint:<name>)"
)]
pub struct BadRef(pub String);

impl std::str::FromStr for Ref {
    type Err = BadRef;

    fn from_str(s: &str) -> Result<Self, BadRef> {
        let bad = || BadRef(s.to_owned());
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let id = || rest.parse::<u64>().map_err(|_| bad());
        let name = || {
            if rest.is_empty() || rest.len() > 64 {
                Err(bad())
            } else {
                Ok(rest.to_owned())
            }
        };
        Ok(match kind {
            "volume" => Self::Volume(name()?),
            "group" => Self::Group(name()?),
            "sync" => Self::Sync(id()?),
            "job" => Self::Job(id()?),
            "pool" => Self::Pool(name()?),
            "aspect" => Self::Aspect(id()?),
            "accesspoint" => Self::AccessPoint(name()?),
            "service" if rest == "replication" => Self::Service,
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Volume(n) => write!(f, "volume:{n}"),
            Self::Group(n) => write!(f, "group:{n}"),
            Self::Sync(i) => write!(f, "sync:{i}"),
            Self::Job(i) => write!(f, "job:{i}"),
            Self::Pool(n) => write!(f, "pool:{n}"),
            Self::Aspect(i) => write!(f, "aspect:{i}"),
            Self::AccessPoint(n) => write!(f, "accesspoint:{n}"),
            Self::Service => f.write_str("service:replication"),
        }
    }
}

/// `volume:<name>`.
pub fn volume(n: &str) -> String {
    Ref::Volume(n.to_owned()).to_string()
}

/// `group:<name>`.
pub fn group(n: &str) -> String {
    Ref::Group(n.to_owned()).to_string()
}

/// `sync:<id>`.
pub fn sync(i: u64) -> String {
    Ref::Sync(i).to_string()
}

/// `job:<id>`.
pub fn job(i: u64) -> String {
    Ref::Job(i).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        for s in [
            "volume:a-1",
            "group:g",
            "sync:12",
            "job:3",
            "pool:default",
            "aspect:9",
            "accesspoint:dr",
            "service:replication",
        ] {
            assert_eq!(s.parse::<Ref>().unwrap().to_string(), s);
        }
        for s in [
            "a",
            "volume:",
            "sync:x",
            "disk:a",
            "job:-1",
            "service:other",
        ] {
            assert!(s.parse::<Ref>().is_err(), "{s}");
        }
    }
}
