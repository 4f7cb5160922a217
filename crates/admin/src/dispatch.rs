//! Requests to methods of the replication service, and their responses.

use std::sync::Arc;

use replication::{
    CopyState, Mode, Operation, ReturnCode, SyncType,
    service::{
        CreateGroupReplica, ExposedVolume, MethodError, ModifyReplicaSynchronization,
        ReplicationService, ReplicationSettings, VolumeKind,
    },
    table,
    types::{from_replication_type, replication_type},
};
use serde_json::{Map, Value, json};

use crate::{MAX_REQUEST_BYTES, PROTOCOL_VERSION, instances, params::Params, refs, refs::Ref};

/// What the server exports: the admin socket changes its LUNs live.
pub trait Exports: Send + Sync + std::fmt::Debug {
    /// Whether a target exists (iSCSI names compare case-insensitively).
    fn has_target(&self, iqn: &str) -> bool;
    /// LUN numbers in use on a target.
    fn luns_in_use(&self, iqn: &str) -> Vec<u16>;
    /// Export a volume now.
    fn expose(&self, v: &ExposedVolume) -> Result<(), String>;
    /// Stop exporting a LUN.
    fn hide(&self, iqn: &str, lun: u16);
}

/// Serves admin requests against a replication service.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    svc: Arc<ReplicationService>,
    exports: Arc<dyn Exports>,
}

type Outs = Map<String, Value>;

fn outs(pairs: &[(&str, Value)]) -> Outs {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn opt_ref(r: Option<String>) -> Value {
    r.map_or(Value::Null, Value::String)
}

/// The methods, with their parameters.
pub const METHODS: &[(&str, &[&str])] = &[
    (
        "CreateGroupReplica",
        &[
            "RelationshipName",
            "SyncType",
            "Mode",
            "SourceGroup",
            "SourceElement",
            "SourceAccessPoint",
            "TargetGroup",
            "TargetElementCount",
            "TargetAccessPoint",
            "Consistency",
            "ReplicationSettingData",
            "TargetSettingGoal",
            "TargetPool",
            "WaitForCopyState",
            "ConnectivityCollection",
            "Collections",
        ],
    ),
    (
        "ModifyReplicaSynchronization",
        &[
            "Operation",
            "Synchronization",
            "ReplicationSettingData",
            "SyncPair",
            "Force",
            "WaitForCopyState",
        ],
    ),
    (
        "CreateGroup",
        &[
            "GroupName",
            "Members",
            "Persistent",
            "DeleteOnEmptyElement",
            "DeleteOnUnassociated",
            "ServiceAccessPoint",
            "ReplicationSettingData",
        ],
    ),
    (
        "DeleteGroup",
        &[
            "ReplicationGroup",
            "ServiceAccessPoint",
            "RemoveElements",
            "ReplicationSettingData",
        ],
    ),
    (
        "AddMembers",
        &[
            "Members",
            "ReplicationGroup",
            "ServiceAccessPoint",
            "ReplicationSettingData",
        ],
    ),
    (
        "RemoveMembers",
        &[
            "Members",
            "DeleteOnEmptyElement",
            "ReplicationGroup",
            "ServiceAccessPoint",
            "ReplicationSettingData",
        ],
    ),
    ("CreateVolume", &["ElementName", "Size", "Pool"]),
    (
        "CreateAccessPoint",
        &[
            "Name",
            "Portal",
            "Target",
            "Lun",
            "InitiatorName",
            "ChapUser",
            "ChapSecret",
            "MutualUser",
            "MutualSecret",
        ],
    ),
    ("DeleteAccessPoint", &["ServiceAccessPoint"]),
    ("DeleteVolume", &["TheElement"]),
    ("ExposeVolume", &["TheElement", "Target", "Lun", "ReadOnly"]),
    ("HideVolume", &["TheElement", "Target"]),
    ("GetInstance", &["Ref"]),
    ("EnumerateInstances", &["ClassName"]),
    ("GetSupportedOperations", &["ReplicationType", "CopyState"]),
    ("GetSupportedCopyStates", &["ReplicationType", "Operation"]),
    (
        "GetSupportedWaitForCopyStates",
        &["ReplicationType", "MethodName", "Operation"],
    ),
    ("GetSupportedFeatures", &["ReplicationType"]),
    ("GetSupportedGroupFeatures", &["ReplicationType"]),
    (
        "ConvertSyncTypeToReplicationType",
        &["SyncType", "Mode", "LocalOrRemote"],
    ),
    ("GetVersion", &[]),
];

/// A response for an error outside any method (bad JSON, unknown method).
fn failure(id: Value, code: ReturnCode, message: &str, parameter: Option<&str>) -> Value {
    let mut err = Map::new();
    err.insert("Message".into(), Value::String(message.to_owned()));
    if let Some(p) = parameter {
        err.insert("Parameter".into(), Value::String(p.to_owned()));
    }
    json!({"id": id, "ReturnValue": u32::from(code), "Error": Value::Object(err)})
}

impl Dispatcher {
    /// A dispatcher for `svc`, applying exports through `exports`.
    pub fn new(svc: Arc<ReplicationService>, exports: Arc<dyn Exports>) -> Self {
        Self { svc, exports }
    }

    /// The response to an oversized request.
    pub fn too_large() -> Value {
        failure(
            Value::Null,
            ReturnCode::InvalidParameter,
            &format!("request larger than {MAX_REQUEST_BYTES} bytes; it was discarded"),
            None,
        )
    }

    /// Handle one request line; the result is the response object.
    pub fn handle_line(&self, line: &[u8]) -> Value {
        let v: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                return failure(
                    Value::Null,
                    ReturnCode::InvalidParameter,
                    &format!("malformed JSON: {e}"),
                    None,
                );
            }
        };
        let Value::Object(req) = v else {
            return failure(
                Value::Null,
                ReturnCode::InvalidParameter,
                "a request is a JSON object",
                None,
            );
        };
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        let method = match req.get("method") {
            Some(Value::String(m)) => m.as_str(),
            _ => {
                return failure(
                    id,
                    ReturnCode::InvalidParameter,
                    "\"method\" must be a string",
                    Some("method"),
                );
            }
        };
        let empty = Map::new();
        let params = match req.get("params") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(p)) => p,
            Some(_) => {
                return failure(
                    id,
                    ReturnCode::InvalidParameter,
                    "\"params\" must be an object",
                    Some("params"),
                );
            }
        };
        let Some((name, known)) = METHODS.iter().find(|(n, _)| *n == method) else {
            let names: Vec<&str> = METHODS.iter().map(|(n, _)| *n).collect();
            return failure(
                id,
                ReturnCode::NotSupported,
                &format!(
                    "unknown method {method:?}; the methods are {}",
                    names.join(", ")
                ),
                Some("method"),
            );
        };
        let result = Params::new(params, known).and_then(|p| self.call(name, &p));
        let mut resp = Map::new();
        resp.insert("id".into(), id);
        match result {
            Ok((code, o)) => {
                resp.insert("ReturnValue".into(), json!(u32::from(code)));
                resp.extend(o);
            }
            Err(e) => {
                tracing::debug!(method, code = ?e.code, message = %e.message, "admin method refused");
                resp.insert("ReturnValue".into(), json!(u32::from(e.code)));
                let mut err = Map::new();
                err.insert("Message".into(), Value::String(e.message));
                if let Some(p) = e.parameter {
                    err.insert("Parameter".into(), Value::String(p));
                }
                resp.insert("Error".into(), Value::Object(err));
            }
        }
        Value::Object(resp)
    }

    fn call(&self, method: &str, p: &Params<'_>) -> Result<(ReturnCode, Outs), MethodError> {
        let ok = |o: Outs| Ok((ReturnCode::Completed, o));
        match method {
            "CreateGroupReplica" => self.create_group_replica(p),
            "ModifyReplicaSynchronization" => self.modify(p),
            "CreateGroup" => {
                not_supported_if_set(p, "ServiceAccessPoint", "remote groups are not supported")?;
                if p.bool("Persistent")? == Some(false) {
                    return Err(MethodError::not_supported(
                        "Persistent",
                        "groups are always persistent",
                    ));
                }
                for f in ["DeleteOnEmptyElement", "DeleteOnUnassociated"] {
                    if p.bool(f)? == Some(true) {
                        return Err(MethodError::not_supported(
                            f,
                            format!("{f} is not supported"),
                        ));
                    }
                }
                settings(p)?;
                let members = volumes(p, "Members")?.unwrap_or_default();
                let name = self.svc.create_group(p.string("GroupName")?, &members)?;
                ok(outs(&[("ReplicationGroup", json!(refs::group(&name)))]))
            }
            "DeleteGroup" => {
                not_supported_if_set(p, "ServiceAccessPoint", "remote groups are not supported")?;
                settings(p)?;
                self.svc.delete_group(
                    &p.req_group("ReplicationGroup")?,
                    p.bool("RemoveElements")?.unwrap_or(false),
                )?;
                ok(Outs::new())
            }
            "AddMembers" => {
                not_supported_if_set(p, "ServiceAccessPoint", "remote groups are not supported")?;
                settings(p)?;
                let members = required(volumes(p, "Members")?, "Members")?;
                self.svc
                    .add_members(&p.req_group("ReplicationGroup")?, &members)?;
                ok(Outs::new())
            }
            "RemoveMembers" => {
                not_supported_if_set(p, "ServiceAccessPoint", "remote groups are not supported")?;
                settings(p)?;
                let members = required(volumes(p, "Members")?, "Members")?;
                let del = p.bool("DeleteOnEmptyElement")?.unwrap_or(false);
                self.svc
                    .remove_members(&p.req_group("ReplicationGroup")?, &members, del)?;
                ok(Outs::new())
            }
            "CreateVolume" => {
                let name = p.req_string("ElementName")?;
                let size = p
                    .uint("Size", u64::MAX)?
                    .ok_or_else(|| MethodError::invalid("Size", "Size is required"))?;
                let v = self
                    .svc
                    .create_volume(name, size, p.pool("Pool")?.as_deref())?;
                ok(outs(&[("TheElement", json!(refs::volume(&v)))]))
            }
            "CreateAccessPoint" => {
                let pair = |u: &str, s: &str| -> Result<Option<(String, String)>, MethodError> {
                    match (p.string(u)?, p.string(s)?) {
                        (None, None) => Ok(None),
                        (Some(u), Some(s)) => Ok(Some((u.to_owned(), s.to_owned()))),
                        _ => Err(MethodError::invalid(u, format!("{u} and {s} go together"))),
                    }
                };
                let rec = replication::service::AccessPointRec {
                    name: p.req_string("Name")?.to_owned(),
                    portal: p.req_string("Portal")?.to_owned(),
                    target: p.req_string("Target")?.to_owned(),
                    lun: p.uint("Lun", 16383)?.unwrap_or(0) as u16,
                    initiator_name: p.string("InitiatorName")?.map(str::to_owned),
                    chap: pair("ChapUser", "ChapSecret")?,
                    mutual: pair("MutualUser", "MutualSecret")?,
                };
                let name = self.svc.create_access_point(rec)?;
                ok(outs(&[(
                    "ServiceAccessPoint",
                    json!(Ref::AccessPoint(name).to_string()),
                )]))
            }
            "DeleteAccessPoint" => {
                let name = p
                    .typed_ref("ServiceAccessPoint", "accesspoint", |r| match r {
                        Ref::AccessPoint(n) => Some(n),
                        _ => None,
                    })?
                    .ok_or_else(|| {
                        MethodError::invalid("ServiceAccessPoint", "ServiceAccessPoint is required")
                    })?;
                self.svc.delete_access_point(&name)?;
                ok(Outs::new())
            }
            "DeleteVolume" => {
                self.svc.delete_volume(&p.req_volume("TheElement")?)?;
                ok(Outs::new())
            }
            "ExposeVolume" => self.expose(p),
            "HideVolume" => {
                let name = p.req_volume("TheElement")?;
                let target = p.req_string("Target")?;
                let e = self.svc.hide(&name, target)?;
                self.exports.hide(&e.target, e.lun);
                ok(outs(&[("Lun", json!(e.lun))]))
            }
            "GetInstance" => {
                let r = p
                    .reference("Ref")?
                    .ok_or_else(|| MethodError::invalid("Ref", "Ref is required"))?;
                let inst = self
                    .instance(&r)
                    .ok_or_else(|| MethodError::invalid("Ref", format!("no object {r}")))?;
                ok(outs(&[("Instance", inst)]))
            }
            "EnumerateInstances" => {
                let class = p.req_string("ClassName")?;
                let list = self.enumerate(class).ok_or_else(|| {
                    MethodError::invalid(
                        "ClassName",
                        format!(
                            "unknown class {class}; the classes are {}",
                            instances::CLASSES.join(", ")
                        ),
                    )
                })?;
                ok(outs(&[("Instances", Value::Array(list))]))
            }
            "GetSupportedOperations" => {
                let (s, _) = replication_type_param(p)?;
                let state = p
                    .u16("CopyState")?
                    .map(|c| copy_state(c, "CopyState"))
                    .transpose()?;
                let list = table::supported_operations(s, state);
                ok(outs(&[
                    (
                        "SupportedOperations",
                        json!(list.iter().map(|(o, _)| *o).collect::<Vec<Operation>>()),
                    ),
                    (
                        "RequiresForce",
                        json!(list.iter().map(|(_, f)| *f).collect::<Vec<bool>>()),
                    ),
                    (
                        "UpdatesSynchronizedPath",
                        json!(
                            list.iter()
                                .map(|(o, _)| *o == Operation::ReverseRoles)
                                .collect::<Vec<bool>>()
                        ),
                    ),
                ]))
            }
            "GetSupportedCopyStates" => {
                let (s, _) = replication_type_param(p)?;
                let op = p.u16("Operation")?.map(operation).transpose()?;
                let states = table::supported_copy_states(s, op);
                let accessible: Vec<bool> = states.iter().map(|c| host_accessible(s, *c)).collect();
                ok(outs(&[
                    ("SupportedCopyStates", json!(states)),
                    ("HostAccessible", json!(accessible)),
                ]))
            }
            "GetSupportedWaitForCopyStates" => {
                let (s, _) = replication_type_param(p)?;
                let states: Vec<CopyState> = match p.u16("MethodName")? {
                    Some(3) => table::create_wait_states(s).to_vec(),
                    Some(4) => {
                        let op =
                            p.u16("Operation")?
                                .map(operation)
                                .transpose()?
                                .ok_or_else(|| {
                                    MethodError::invalid(
                                        "Operation",
                                        "Operation is required for MethodName 4",
                                    )
                                })?;
                        let t = table::TABLE
                            .iter()
                            .find(|t| t.op == op && t.sync == s)
                            .ok_or_else(|| {
                                MethodError::not_supported(
                                    "Operation",
                                    format!("{op:?} is not supported for {s:?}"),
                                )
                            })?;
                        table::wait_states(t)
                    }
                    Some(m) => {
                        return Err(MethodError::not_supported(
                            "MethodName",
                            format!(
                                "MethodName {m}: only 3 (CreateGroupReplica) and 4 (ModifyReplicaSynchronization) are implemented"
                            ),
                        ));
                    }
                    None => {
                        return Err(MethodError::invalid("MethodName", "MethodName is required"));
                    }
                };
                ok(outs(&[("SupportedStates", json!(states))]))
            }
            "GetSupportedFeatures" => {
                let (s, _) = replication_type_param(p)?;
                ok(outs(&[("Features", json!(instances::features(s)))]))
            }
            "GetSupportedGroupFeatures" => {
                replication_type_param(p)?;
                ok(outs(&[("GroupFeatures", json!(instances::GROUP_FEATURES))]))
            }
            "ConvertSyncTypeToReplicationType" => {
                let s = sync_type(p.u16("SyncType")?)?;
                let m = match p.u16("Mode")? {
                    None => Mode::Synchronous,
                    Some(n) => Mode::from_code(n).ok_or_else(|| {
                        MethodError::invalid("Mode", format!("Mode {n} is not 2 or 3"))
                    })?,
                };
                let remote = match p.u16("LocalOrRemote")? {
                    None | Some(2) => false,
                    Some(3) => true,
                    Some(n) => {
                        return Err(MethodError::invalid(
                            "LocalOrRemote",
                            format!("{n} is not 2 (Local) or 3 (Remote)"),
                        ));
                    }
                };
                ok(outs(&[(
                    "ReplicationType",
                    json!(replication_type(s, m, remote)),
                )]))
            }
            "GetVersion" => ok(outs(&[
                ("ProtocolVersion", json!(PROTOCOL_VERSION)),
                (
                    "ServerVersion",
                    json!(concat!("ironlun ", env!("CARGO_PKG_VERSION"))),
                ),
            ])),
            _ => Err(MethodError::not_supported(
                "method",
                format!("unknown method {method}"),
            )),
        }
    }

    fn create_group_replica(&self, p: &Params<'_>) -> Result<(ReturnCode, Outs), MethodError> {
        not_supported_if_set(
            p,
            "ConnectivityCollection",
            "remote replication collections are not supported",
        )?;
        not_supported_if_set(
            p,
            "Collections",
            "adding targets to collections is not supported",
        )?;
        let access = |name: &str| -> Result<Option<String>, MethodError> {
            Ok(p.raw(name)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        };
        let req = CreateGroupReplica {
            relationship_name: p.string("RelationshipName")?.map(str::to_owned),
            sync_type: p.u16("SyncType")?,
            mode: p.u16("Mode")?,
            source_group: p.group("SourceGroup")?,
            source_element: p.volume("SourceElement")?,
            source_access_point: access("SourceAccessPoint")?,
            target_group: p.group("TargetGroup")?,
            target_element_count: p.uint("TargetElementCount", u64::MAX)?,
            target_access_point: p.typed_ref("TargetAccessPoint", "accesspoint", |r| match r {
                Ref::AccessPoint(n) => Some(n),
                _ => None,
            })?,
            consistency: p.u16("Consistency")?,
            settings: settings(p)?,
            target_setting_goal: access("TargetSettingGoal")?,
            target_pool: p.pool("TargetPool")?,
            wait_for_copy_state: p.u16("WaitForCopyState")?,
        };
        let out = self.svc.create_group_replica(req)?;
        Ok((
            out.code,
            outs(&[
                ("Job", opt_ref(out.job.map(refs::job))),
                (
                    "Synchronization",
                    opt_ref(out.synchronization.map(refs::sync)),
                ),
                (
                    "TargetGroup",
                    opt_ref(out.target_group.as_deref().map(refs::group)),
                ),
            ]),
        ))
    }

    fn modify(&self, p: &Params<'_>) -> Result<(ReturnCode, Outs), MethodError> {
        let pairs = p.ref_list("SyncPair", "sync", |r| match r {
            Ref::Sync(i) => Some(i),
            _ => None,
        })?;
        let req = ModifyReplicaSynchronization {
            operation: p.u16("Operation")?,
            synchronization: p.sync("Synchronization")?,
            settings: settings(p)?,
            sync_pairs: pairs,
            force: p.bool("Force")?,
            wait_for_copy_state: p.u16("WaitForCopyState")?,
        };
        let out = self.svc.modify_replica_synchronization(req)?;
        Ok((
            out.code,
            outs(&[
                ("Job", opt_ref(out.job.map(refs::job))),
                (
                    "SettingsState",
                    opt_ref(out.settings_state.map(|a| Ref::Aspect(a).to_string())),
                ),
                (
                    "UpdatedSynchronization",
                    opt_ref(out.updated_synchronization.map(refs::sync)),
                ),
            ]),
        ))
    }

    fn expose(&self, p: &Params<'_>) -> Result<(ReturnCode, Outs), MethodError> {
        let name = p.req_volume("TheElement")?;
        let target = p.req_string("Target")?;
        if !self.exports.has_target(target) {
            return Err(MethodError::invalid(
                "Target",
                format!("no target {target}"),
            ));
        }
        let cat = self.svc.catalog();
        let rec = cat
            .volumes
            .get(&name)
            .ok_or_else(|| MethodError::invalid("TheElement", format!("no volume {name}")))?;
        // Snapshots are exported read-only unless asked otherwise.
        let is_snapshot = matches!(rec.kind, VolumeKind::Replica { sync }
            if cat.syncs.get(&sync).is_some_and(|s| s.sync_type == SyncType::Snapshot));
        let read_only = p.bool("ReadOnly")?.unwrap_or(is_snapshot);
        let used = self.exports.luns_in_use(target);
        let lun = match p.uint("Lun", 16383)? {
            Some(l) => {
                let l = l as u16;
                if used.contains(&l) {
                    return Err(MethodError::in_use(
                        "Lun",
                        format!("LUN {l} of {target} is in use"),
                    ));
                }
                l
            }
            None => (0..=16383u16)
                .find(|l| !used.contains(l))
                .ok_or_else(|| MethodError::in_use("Lun", format!("{target} has no free LUN")))?,
        };
        drop(cat);
        let e = self.svc.expose(&name, target, lun, read_only)?;
        let exposed = self
            .svc
            .exposures()
            .into_iter()
            .find(|x| x.name == name && x.exposure == e);
        let applied = match &exposed {
            Some(x) => self.exports.expose(x),
            None => Err("the volume is not open".to_owned()),
        };
        if let Err(why) = applied {
            let _ = self.svc.hide(&name, target);
            return Err(MethodError::failed(format!(
                "exporting {name} as LUN {lun} of {target}: {why}"
            )));
        }
        Ok((
            ReturnCode::Completed,
            outs(&[("Lun", json!(lun)), ("ReadOnly", json!(read_only))]),
        ))
    }

    fn instance(&self, r: &Ref) -> Option<Value> {
        let cat = self.svc.catalog();
        match r {
            Ref::Volume(n) => cat.volumes.get(n).map(|v| instances::volume(v, &cat)),
            Ref::Group(n) => cat
                .groups
                .get(n)
                .map(|g| instances::group(&g.name, &g.members)),
            Ref::Sync(i) => match (cat.syncs.get(i), cat.group_syncs.get(i)) {
                (Some(s), _) => Some(instances::pair(s, &self.svc)),
                (_, Some(g)) => Some(instances::group_sync(g, &cat)),
                _ => cat
                    .peers
                    .get(i)
                    .map(|p| instances::peer_pair(p, self.svc.peer_dirty_chunks(p.id))),
            },
            Ref::Job(i) => self.svc.jobs.get(*i).map(|j| instances::job(&j)),
            Ref::Pool(n) => self
                .svc
                .pools()
                .iter()
                .find(|p| p.name == *n)
                .map(|p| instances::pool(p)),
            Ref::Aspect(i) => cat.aspects.get(i).map(instances::aspect),
            Ref::AccessPoint(n) => cat.access_points.get(n).map(instances::access_point),
            Ref::Service => Some(instances::capabilities()),
        }
    }

    fn enumerate(&self, class: &str) -> Option<Vec<Value>> {
        let cat = self.svc.catalog();
        Some(match class {
            "CIM_StorageVolume" => cat
                .volumes
                .values()
                .map(|v| instances::volume(v, &cat))
                .collect(),
            "CIM_ReplicationGroup" => cat
                .groups
                .values()
                .map(|g| instances::group(&g.name, &g.members))
                .collect(),
            "CIM_StorageSynchronized" => cat
                .syncs
                .values()
                .map(|s| instances::pair(s, &self.svc))
                .chain(
                    cat.peers
                        .values()
                        .map(|p| instances::peer_pair(p, self.svc.peer_dirty_chunks(p.id))),
                )
                .collect(),
            "CIM_GroupSynchronized" => cat
                .group_syncs
                .values()
                .map(|g| instances::group_sync(g, &cat))
                .collect(),
            "CIM_ConcreteJob" => self.svc.jobs.list().iter().map(instances::job).collect(),
            "CIM_StoragePool" => self
                .svc
                .pools()
                .iter()
                .map(|p| instances::pool(p))
                .collect(),
            "CIM_SynchronizationAspect" => cat.aspects.values().map(instances::aspect).collect(),
            "CIM_ServiceAccessPoint" => cat
                .access_points
                .values()
                .map(instances::access_point)
                .collect(),
            "CIM_ReplicationServiceCapabilities" => vec![instances::capabilities()],
            _ => return None,
        })
    }
}

fn not_supported_if_set(p: &Params<'_>, name: &str, why: &str) -> Result<(), MethodError> {
    if p.has(name) {
        Err(MethodError::not_supported(name, why))
    } else {
        Ok(())
    }
}

fn required<T>(v: Option<T>, name: &str) -> Result<T, MethodError> {
    v.ok_or_else(|| MethodError::invalid(name, format!("{name} is required")))
}

fn volumes(p: &Params<'_>, name: &str) -> Result<Option<Vec<String>>, MethodError> {
    p.ref_list(name, "volume", |r| match r {
        Ref::Volume(n) => Some(n),
        _ => None,
    })
}

fn settings(p: &Params<'_>) -> Result<ReplicationSettings, MethodError> {
    match p.raw("ReplicationSettingData") {
        None => Ok(ReplicationSettings::default()),
        Some(v) => ReplicationSettings::from_json(v)
            .map_err(|e| MethodError::invalid("ReplicationSettingData", e.0)),
    }
}

fn sync_type(n: Option<u16>) -> Result<SyncType, MethodError> {
    let n = n.ok_or_else(|| MethodError::invalid("SyncType", "SyncType is required"))?;
    SyncType::from_code(n)
        .ok_or_else(|| MethodError::invalid("SyncType", format!("SyncType {n} is not 6, 7 or 8")))
}

fn copy_state(n: u16, name: &str) -> Result<CopyState, MethodError> {
    CopyState::from_code(n)
        .ok_or_else(|| MethodError::invalid(name, format!("{n} is not a CopyState")))
}

fn operation(n: u16) -> Result<Operation, MethodError> {
    Operation::from_code(n)
        .ok_or_else(|| MethodError::invalid("Operation", format!("{n} is not an Operation")))
}

/// The (SyncType, Mode) of a supported ReplicationType: 5 outside the ValueMap, 1 for one
/// that is not implemented.
fn replication_type_param(p: &Params<'_>) -> Result<(SyncType, Mode), MethodError> {
    let rt = p
        .u16("ReplicationType")?
        .ok_or_else(|| MethodError::invalid("ReplicationType", "ReplicationType is required"))?;
    if !(2..=25).contains(&rt) {
        return Err(MethodError::invalid(
            "ReplicationType",
            format!("{rt} is outside the ValueMap 2..25"),
        ));
    }
    match from_replication_type(rt) {
        Some((s, m, r)) if instances::supported_types().contains(&(s, m, r)) => Ok((s, m)),
        _ => Err(MethodError::not_supported(
            "ReplicationType",
            format!("ReplicationType {rt} is not implemented; see SupportedReplicationTypes"),
        )),
    }
}

/// Whether hosts may use the target in a CopyState (GetSupportedCopyStates HostAccessible).
fn host_accessible(s: SyncType, c: CopyState) -> bool {
    match s {
        SyncType::Snapshot => !matches!(c, CopyState::Broken | CopyState::Inactive),
        SyncType::Clone => !matches!(c, CopyState::Broken | CopyState::Aborted),
        SyncType::Mirror => true,
    }
}
