//! What `ironlun admin` prints: responses, tables of instances, single instances and the
//! service's capabilities, in readable form.

use admin::client::Response;
use replication::{CopyState, Mode, Operation, ProgressStatus, SyncType, types::JobState};
use serde_json::{Map, Value, json};

use super::ListWhat;

/// Print a response: the out parameters, or the error. Returns the exit code.
pub(super) fn report(r: &Response, json: bool) -> u8 {
    if json {
        println!("{}", Value::Object(r.body.clone()));
        return if r.ok() { 0 } else { 1 };
    }
    if let Some((msg, param)) = r.error() {
        eprintln!(
            "error: {} ({}){}: {msg}",
            r.code,
            return_name(r.code),
            param.map(|p| format!(" [{p}]")).unwrap_or_default()
        );
        return 1;
    }
    let mut shown = false;
    for (k, v) in &r.body {
        if k == "id" || k == "ReturnValue" || v.is_null() {
            continue;
        }
        println!("{k}: {}", plain(v));
        shown = true;
    }
    if !shown || r.code == 4096 {
        println!("{} ({})", return_name(r.code), r.code);
    }
    0
}

fn return_name(code: u32) -> &'static str {
    match code {
        0 => "Completed",
        1 => "Not Supported",
        2 => "Unspecified Error",
        3 => "Timeout",
        4 => "Failed",
        5 => "Invalid Parameter",
        6 => "In Use",
        7 | 8 => "method-specific error",
        4096 => "Job Started",
        _ => "unknown",
    }
}

pub(super) fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(plain).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn name_of<T: std::fmt::Debug>(v: Option<&Value>, from: fn(u16) -> Option<T>) -> String {
    match v.and_then(Value::as_u64) {
        Some(n) => match from(n as u16) {
            Some(x) => format!("{x:?}"),
            None => n.to_string(),
        },
        None => "-".into(),
    }
}

fn s<'a>(m: &'a Value, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or("-")
}

pub(super) fn print_table(what: ListWhat, list: &[Value]) {
    let rows: Vec<Vec<String>> = match what {
        ListWhat::Volumes => {
            let mut rows = vec![vec![
                "VOLUME".into(),
                "SIZE".into(),
                "KIND".into(),
                "REPLICA OF".into(),
                "EXPOSED".into(),
            ]];
            for v in list {
                let size = v.get("NumberOfBlocks").and_then(Value::as_u64).unwrap_or(0)
                    * v.get("BlockSize").and_then(Value::as_u64).unwrap_or(0);
                let exposed: Vec<String> = v
                    .get("IronLun_Exposures")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|e| {
                                format!(
                                    "{}/{}{}",
                                    s(e, "Target"),
                                    e["Lun"],
                                    if e["ReadOnly"] == json!(true) {
                                        " ro"
                                    } else {
                                        ""
                                    }
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                rows.push(vec![
                    s(v, "ElementName").into(),
                    human(size),
                    s(v, "IronLun_Kind").into(),
                    s(v, "IronLun_ReplicaOf").into(),
                    exposed.join(" "),
                ]);
            }
            rows
        }
        ListWhat::Groups => {
            let mut rows = vec![vec!["GROUP".into(), "MEMBERS".into()]];
            for g in list {
                rows.push(vec![s(g, "ElementName").into(), plain(&g["Members"])]);
            }
            rows
        }
        ListWhat::Syncs => {
            let mut rows = vec![vec![
                "SYNC".into(),
                "TYPE".into(),
                "MODE".into(),
                "SOURCE".into(),
                "TARGET".into(),
                "STATE".into(),
                "PROGRESS".into(),
                "%".into(),
            ]];
            for x in list {
                rows.push(vec![
                    s(x, "Ref").into(),
                    name_of(x.get("SyncType"), SyncType::from_code),
                    name_of(x.get("Mode"), Mode::from_code),
                    s(x, "SystemElement").into(),
                    s(x, "SyncedElement").into(),
                    name_of(x.get("CopyState"), CopyState::from_code),
                    name_of(x.get("ProgressStatus"), ProgressStatus::from_code),
                    x.get("PercentSynced").map(plain).unwrap_or_default(),
                ]);
            }
            rows
        }
        ListWhat::GroupSyncs => {
            let mut rows = vec![vec![
                "SYNC".into(),
                "NAME".into(),
                "TYPE".into(),
                "SOURCE".into(),
                "TARGET".into(),
                "STATE".into(),
                "CONSISTENT".into(),
                "PAIRS".into(),
            ]];
            for x in list {
                rows.push(vec![
                    s(x, "Ref").into(),
                    s(x, "RelationshipName").into(),
                    name_of(x.get("SyncType"), SyncType::from_code),
                    s(x, "SystemElement").into(),
                    s(x, "SyncedElement").into(),
                    name_of(x.get("CopyState"), CopyState::from_code),
                    plain(&x["ConsistencyEnabled"]),
                    plain(&x["IronLun_Members"]),
                ]);
            }
            rows
        }
        ListWhat::Jobs => {
            let mut rows = vec![vec![
                "JOB".into(),
                "NAME".into(),
                "STATE".into(),
                "%".into(),
                "ERROR".into(),
            ]];
            for j in list {
                rows.push(vec![
                    s(j, "Ref").into(),
                    s(j, "Name").into(),
                    name_of(j.get("JobState"), JobState::from_code),
                    plain(&j["PercentComplete"]),
                    j.get("ErrorDescription")
                        .filter(|v| !v.is_null())
                        .map(plain)
                        .unwrap_or_default(),
                ]);
            }
            rows
        }
        ListWhat::Pools => {
            let mut rows = vec![vec![
                "POOL".into(),
                "PATH".into(),
                "SNAPSHOT SPACE".into(),
                "LIMIT".into(),
            ]];
            for p in list {
                rows.push(vec![
                    s(p, "ElementName").into(),
                    s(p, "IronLun_Path").into(),
                    human(p["IronLun_SnapshotSpaceUsed"].as_u64().unwrap_or(0)),
                    p["TotalManagedSpace"]
                        .as_u64()
                        .map_or_else(|| "unlimited".into(), human),
                ]);
            }
            rows
        }
        ListWhat::Aspects => {
            let mut rows = vec![vec![
                "ASPECT".into(),
                "SOURCE".into(),
                "FORMER TARGET".into(),
                "POINT IN TIME".into(),
            ]];
            for a in list {
                rows.push(vec![
                    s(a, "Ref").into(),
                    s(a, "IronLun_SourceElement").into(),
                    s(a, "IronLun_FormerTarget").into(),
                    s(a, "WhenPointInTime").into(),
                ]);
            }
            rows
        }
    };
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

pub(super) fn human(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

pub(super) fn print_instance(m: &Map<String, Value>) {
    let width = m.keys().map(String::len).max().unwrap_or(0);
    for (k, v) in m {
        if v.is_null() {
            continue;
        }
        let shown = match (k.as_str(), v.as_u64()) {
            ("CopyState" | "RequestedCopyState", Some(n)) => {
                format!("{n} ({})", name_of(Some(v), CopyState::from_code))
            }
            ("ProgressStatus", Some(n)) => {
                format!("{n} ({})", name_of(Some(v), ProgressStatus::from_code))
            }
            ("SyncType", Some(n)) => format!("{n} ({})", name_of(Some(v), SyncType::from_code)),
            ("Mode", Some(n)) => format!("{n} ({})", name_of(Some(v), Mode::from_code)),
            ("JobState", Some(n)) => format!("{n} ({})", name_of(Some(v), JobState::from_code)),
            _ => match v {
                Value::Array(a) if a.iter().any(Value::is_object) => {
                    serde_json::to_string(v).unwrap_or_default()
                }
                _ => plain(v),
            },
        };
        println!("{k:<width$}  {shown}");
    }
}

pub(super) fn print_capabilities(m: &Map<String, Value>) {
    println!(
        "replication types: {}",
        plain(&m["SupportedReplicationTypes"])
    );
    println!("group features:    {}", plain(&m["GroupFeatures"]));
    for t in m
        .get("ReplicationTypes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ops: Vec<String> = t["SupportedOperations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| name_of(Some(o), Operation::from_code))
            .collect();
        println!(
            "\nReplicationType {} ({} {}):",
            t["ReplicationType"],
            name_of(t.get("SyncType"), SyncType::from_code),
            name_of(t.get("Mode"), Mode::from_code)
        );
        println!("  operations:  {}", ops.join(", "));
        let states: Vec<String> = t["SupportedCopyStates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| name_of(Some(c), CopyState::from_code))
            .collect();
        println!("  copy states: {}", states.join(", "));
        println!("  features:    {}", plain(&t["Features"]));
    }
}
