//! `ironlun admin ...`: the admin socket from the command line, with readable output or
//! `--json` (the raw response).

use std::{path::PathBuf, time::Duration};

use admin::client::{Client, Response};
use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use replication::{CopyState, Mode, Operation, SyncType, types::JobState};
use serde_json::{Map, Value, json};

mod output;

use self::output::{plain, print_capabilities, print_instance, print_table, report};

/// Options of `ironlun admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The admin socket (default: from --config, else $IRONLUN_ADMIN_SOCKET, else
    /// ./ironlun-data/admin.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// The server's configuration file (to find its admin socket).
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Print the raw JSON response.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Call any method: `call CreateGroupReplica '{"SyncType": 7, ...}'`.
    Call {
        /// Method name.
        method: String,
        /// Parameters, a JSON object.
        params: Option<String>,
    },
    /// Protocol and server version.
    Version,
    /// List objects.
    List {
        /// What to list.
        what: ListWhat,
    },
    /// Show one object by reference (volume:x, group:x, sync:N, job:N, pool:x, aspect:N,
    /// service:replication).
    Show {
        /// The reference.
        reference: String,
    },
    /// Volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Export a volume as a LUN of a target.
    Expose {
        /// Volume name.
        volume: String,
        /// Target IQN.
        target: String,
        /// LUN (default: the lowest free one).
        #[arg(long)]
        lun: Option<u16>,
        /// Read-only (the default for snapshots).
        #[arg(long, conflicts_with = "read_write")]
        read_only: bool,
        /// Read-write (also for a snapshot).
        #[arg(long)]
        read_write: bool,
    },
    /// Stop exporting a volume through a target.
    Hide {
        /// Volume name.
        volume: String,
        /// Target IQN.
        target: String,
    },
    /// Replication groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Take a snapshot of a volume or a group (CreateGroupReplica, SyncType 7).
    Snapshot(Quick),
    /// Clone a volume or a group (CreateGroupReplica, SyncType 8).
    Clone(Quick),
    /// CreateGroupReplica with every option.
    Replicate(Replicate),
    /// ModifyReplicaSynchronization: `modify sync:3 fracture`.
    Modify {
        /// The relationship (sync:N or N).
        sync: String,
        /// Operation: abort, activate, deactivate, detach, dissolve, failover, failback,
        /// fracture, resync, restore, resume, reset-to-sync, reset-to-async,
        /// return-to-pool, reverse, split, suspend, prepare, unprepare,
        /// activate-consistency, deactivate-consistency, add-pair, remove-pair, or a
        /// number.
        operation: String,
        /// Force an operation that may leave targets inconsistent.
        #[arg(long)]
        force: bool,
        /// WaitForCopyState (a name like synchronized or a number).
        #[arg(long)]
        wait_for: Option<String>,
        /// SyncPair (add-pair, remove-pair), repeatable.
        #[arg(long = "pair")]
        pairs: Vec<String>,
        /// Wait for the job to finish, with progress.
        #[arg(long)]
        wait: bool,
    },
    /// Show a job; with --watch, follow it to the end with a progress bar.
    Job {
        /// Job id (job:N or N).
        id: String,
        /// Follow it.
        #[arg(long)]
        watch: bool,
    },
    /// What the replication service implements.
    Capabilities,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ListWhat {
    Volumes,
    Groups,
    Syncs,
    GroupSyncs,
    Jobs,
    Pools,
    Aspects,
}

#[derive(Debug, Subcommand)]
enum VolumeCommand {
    /// Create a sparse volume in a pool.
    Create {
        /// Name.
        name: String,
        /// Size: bytes, or with a unit (512M, 10GiB).
        size: String,
        /// Pool (default: the first).
        #[arg(long)]
        pool: Option<String>,
    },
    /// Delete a volume (not exposed, not in a relationship).
    Delete {
        /// Name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Create a group of volumes (order is kept).
    Create {
        /// Name.
        name: String,
        /// Member volumes.
        members: Vec<String>,
    },
    /// Delete a group.
    Delete {
        /// Name.
        name: String,
        /// Delete it even if it has members (the volumes stay).
        #[arg(long)]
        remove_elements: bool,
    },
    /// Add volumes.
    Add {
        /// Group.
        name: String,
        /// Volumes.
        members: Vec<String>,
    },
    /// Remove volumes.
    Remove {
        /// Group.
        name: String,
        /// Volumes.
        members: Vec<String>,
        /// Delete the group if it is left empty.
        #[arg(long)]
        delete_on_empty: bool,
    },
}

/// Snapshot or clone of a volume or a group.
#[derive(Debug, Args)]
struct Quick {
    /// Source volume.
    #[arg(required_unless_present = "group", conflicts_with = "group")]
    volume: Option<String>,
    /// Source group instead of a volume.
    #[arg(long)]
    group: Option<String>,
    /// RelationshipName (targets are named <name>_1, <name>_2, ...).
    #[arg(long)]
    name: Option<String>,
    /// Target pool.
    #[arg(long)]
    pool: Option<String>,
    /// Wait until Synchronized.
    #[arg(long)]
    wait: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SyncTypeArg {
    Mirror,
    Snapshot,
    Clone,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Sync,
    Async,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ConsistencyArg {
    None,
    Sequential,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PriorityArg {
    Low,
    Same,
    High,
    Urgent,
}

/// CreateGroupReplica.
#[derive(Debug, Args)]
struct Replicate {
    /// SourceElement (a volume).
    #[arg(
        long,
        required_unless_present = "source_group",
        conflicts_with = "source_group"
    )]
    source: Option<String>,
    /// SourceGroup.
    #[arg(long)]
    source_group: Option<String>,
    /// SyncType.
    #[arg(long)]
    sync_type: SyncTypeArg,
    /// Mode.
    #[arg(long)]
    mode: Option<ModeArg>,
    /// RelationshipName.
    #[arg(long)]
    name: Option<String>,
    /// TargetGroup (existing targets, or an empty group to put new targets in).
    #[arg(long)]
    target_group: Option<String>,
    /// TargetElementCount (targets per source volume).
    #[arg(long)]
    count: Option<u64>,
    /// Consistency (default: sequential).
    #[arg(long)]
    consistency: Option<ConsistencyArg>,
    /// TargetPool.
    #[arg(long)]
    pool: Option<String>,
    /// CopyPriority of the background copy.
    #[arg(long)]
    priority: Option<PriorityArg>,
    /// WaitForCopyState (a name or a number).
    #[arg(long)]
    wait_for: Option<String>,
    /// Wait for the job to finish, with progress.
    #[arg(long)]
    wait: bool,
}

fn socket_path(a: &AdminArgs) -> anyhow::Result<PathBuf> {
    if let Some(s) = &a.socket {
        return Ok(s.clone());
    }
    if let Some(c) = &a.config {
        return Ok(crate::config::Config::load(c)?.admin_socket());
    }
    if let Some(s) = std::env::var_os("IRONLUN_ADMIN_SOCKET") {
        return Ok(PathBuf::from(s));
    }
    Ok(crate::config::Config::default_config().admin_socket())
}

/// Run `ironlun admin`; returns the process exit code (0 success, 1 the method failed, 2
/// the server could not be reached or answered nonsense).
pub fn run(a: AdminArgs) -> anyhow::Result<u8> {
    let path = socket_path(&a)?;
    let mut c = Client::connect(&path)?;
    let json = a.json;
    let call = |c: &mut Client, method: &str, params: Value| -> anyhow::Result<Response> {
        Ok(c.call(method, params)?)
    };
    let r = match a.command {
        AdminCommand::Call { method, params } => {
            let params: Value = match params {
                Some(p) => serde_json::from_str(&p).context("the parameters are not JSON")?,
                None => json!({}),
            };
            let r = call(&mut c, &method, params)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&Value::Object(r.body.clone()))?
            );
            return Ok(if r.ok() { 0 } else { 1 });
        }
        AdminCommand::Version => {
            let r = call(&mut c, "GetVersion", json!({}))?;
            if !json && r.ok() {
                println!(
                    "{} (admin protocol {})",
                    r.str("ServerVersion").unwrap_or("?"),
                    r.str("ProtocolVersion").unwrap_or("?")
                );
                return Ok(0);
            }
            r
        }
        AdminCommand::List { what } => {
            let class = match what {
                ListWhat::Volumes => "CIM_StorageVolume",
                ListWhat::Groups => "CIM_ReplicationGroup",
                ListWhat::Syncs => "CIM_StorageSynchronized",
                ListWhat::GroupSyncs => "CIM_GroupSynchronized",
                ListWhat::Jobs => "CIM_ConcreteJob",
                ListWhat::Pools => "CIM_StoragePool",
                ListWhat::Aspects => "CIM_SynchronizationAspect",
            };
            let r = call(&mut c, "EnumerateInstances", json!({"ClassName": class}))?;
            if !json && r.ok() {
                let list = r
                    .get("Instances")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                print_table(what, &list);
                return Ok(0);
            }
            r
        }
        AdminCommand::Show { reference } => {
            let r = call(&mut c, "GetInstance", json!({"Ref": reference}))?;
            if !json && r.ok() {
                if let Some(Value::Object(m)) = r.get("Instance") {
                    print_instance(m);
                }
                return Ok(0);
            }
            r
        }
        AdminCommand::Volume(VolumeCommand::Create { name, size, pool }) => {
            let size = crate::config::parse_size(&size)?;
            let mut p = json!({"ElementName": name, "Size": size});
            if let Some(pool) = pool {
                p["Pool"] = json!(format!("pool:{pool}"));
            }
            call(&mut c, "CreateVolume", p)?
        }
        AdminCommand::Volume(VolumeCommand::Delete { name }) => {
            call(&mut c, "DeleteVolume", json!({"TheElement": vref(&name)}))?
        }
        AdminCommand::Expose {
            volume,
            target,
            lun,
            read_only,
            read_write,
        } => {
            let mut p = json!({"TheElement": vref(&volume), "Target": target});
            if let Some(l) = lun {
                p["Lun"] = json!(l);
            }
            if read_only || read_write {
                p["ReadOnly"] = json!(read_only);
            }
            call(&mut c, "ExposeVolume", p)?
        }
        AdminCommand::Hide { volume, target } => call(
            &mut c,
            "HideVolume",
            json!({"TheElement": vref(&volume), "Target": target}),
        )?,
        AdminCommand::Group(g) => match g {
            GroupCommand::Create { name, members } => call(
                &mut c,
                "CreateGroup",
                json!({"GroupName": name, "Members": members.iter().map(|m| vref(m)).collect::<Vec<_>>()}),
            )?,
            GroupCommand::Delete {
                name,
                remove_elements,
            } => call(
                &mut c,
                "DeleteGroup",
                json!({"ReplicationGroup": gref(&name), "RemoveElements": remove_elements}),
            )?,
            GroupCommand::Add { name, members } => call(
                &mut c,
                "AddMembers",
                json!({"ReplicationGroup": gref(&name), "Members": members.iter().map(|m| vref(m)).collect::<Vec<_>>()}),
            )?,
            GroupCommand::Remove {
                name,
                members,
                delete_on_empty,
            } => call(
                &mut c,
                "RemoveMembers",
                json!({
                    "ReplicationGroup": gref(&name),
                    "Members": members.iter().map(|m| vref(m)).collect::<Vec<_>>(),
                    "DeleteOnEmptyElement": delete_on_empty,
                }),
            )?,
        },
        AdminCommand::Snapshot(q) => quick(&mut c, SyncType::Snapshot, q, json)?,
        AdminCommand::Clone(q) => quick(&mut c, SyncType::Clone, q, json)?,
        AdminCommand::Replicate(r) => replicate(&mut c, r, json)?,
        AdminCommand::Modify {
            sync,
            operation,
            force,
            wait_for,
            pairs,
            wait,
        } => {
            let op = parse_operation(&operation)?;
            let mut p = json!({"Operation": op, "Synchronization": sref(&sync)});
            if force {
                p["Force"] = json!(true);
            }
            if let Some(w) = wait_for {
                p["WaitForCopyState"] = json!(parse_copy_state(&w)?);
            }
            if !pairs.is_empty() {
                p["SyncPair"] = json!(pairs.iter().map(|s| sref(s)).collect::<Vec<_>>());
            }
            let r = call(&mut c, "ModifyReplicaSynchronization", p)?;
            finish(&mut c, r, wait, json)?
        }
        AdminCommand::Job { id, watch } => {
            let jref = if id.starts_with("job:") {
                id
            } else {
                format!("job:{id}")
            };
            if watch {
                return watch_job(&mut c, &jref, json);
            }
            let r = call(&mut c, "GetInstance", json!({"Ref": jref}))?;
            if !json && r.ok() {
                if let Some(Value::Object(m)) = r.get("Instance") {
                    print_instance(m);
                }
                return Ok(0);
            }
            r
        }
        AdminCommand::Capabilities => {
            let r = call(&mut c, "GetInstance", json!({"Ref": "service:replication"}))?;
            if !json && r.ok() {
                if let Some(Value::Object(m)) = r.get("Instance") {
                    print_capabilities(m);
                }
                return Ok(0);
            }
            r
        }
    };
    Ok(report(&r, json))
}

fn vref(n: &str) -> String {
    if n.starts_with("volume:") {
        n.to_owned()
    } else {
        format!("volume:{n}")
    }
}

fn gref(n: &str) -> String {
    if n.starts_with("group:") {
        n.to_owned()
    } else {
        format!("group:{n}")
    }
}

fn sref(n: &str) -> String {
    if n.starts_with("sync:") {
        n.to_owned()
    } else {
        format!("sync:{n}")
    }
}

fn quick(c: &mut Client, s: SyncType, q: Quick, json: bool) -> anyhow::Result<Response> {
    let mut p = Map::new();
    p.insert("SyncType".into(), json!(s));
    if let Some(v) = &q.volume {
        p.insert("SourceElement".into(), json!(vref(v)));
    }
    if let Some(g) = &q.group {
        p.insert("SourceGroup".into(), json!(gref(g)));
    }
    if let Some(n) = &q.name {
        p.insert("RelationshipName".into(), json!(n));
    }
    if let Some(pool) = &q.pool {
        p.insert("TargetPool".into(), json!(format!("pool:{pool}")));
    }
    if q.wait {
        p.insert("WaitForCopyState".into(), json!(CopyState::Synchronized));
    }
    let r = c.call("CreateGroupReplica", Value::Object(p))?;
    finish(c, r, q.wait, json)
}

fn replicate(c: &mut Client, r: Replicate, json: bool) -> anyhow::Result<Response> {
    let mut p = Map::new();
    let s = match r.sync_type {
        SyncTypeArg::Mirror => SyncType::Mirror,
        SyncTypeArg::Snapshot => SyncType::Snapshot,
        SyncTypeArg::Clone => SyncType::Clone,
    };
    p.insert("SyncType".into(), json!(s));
    if let Some(m) = r.mode {
        p.insert(
            "Mode".into(),
            json!(match m {
                ModeArg::Sync => Mode::Synchronous,
                ModeArg::Async => Mode::Asynchronous,
            }),
        );
    }
    if let Some(v) = &r.source {
        p.insert("SourceElement".into(), json!(vref(v)));
    }
    if let Some(g) = &r.source_group {
        p.insert("SourceGroup".into(), json!(gref(g)));
    }
    if let Some(n) = &r.name {
        p.insert("RelationshipName".into(), json!(n));
    }
    if let Some(g) = &r.target_group {
        p.insert("TargetGroup".into(), json!(gref(g)));
    }
    if let Some(n) = r.count {
        p.insert("TargetElementCount".into(), json!(n));
    }
    if let Some(cons) = r.consistency {
        p.insert(
            "Consistency".into(),
            json!(match cons {
                ConsistencyArg::None => 2,
                ConsistencyArg::Sequential => 3,
            }),
        );
    }
    if let Some(pool) = &r.pool {
        p.insert("TargetPool".into(), json!(format!("pool:{pool}")));
    }
    if let Some(pr) = r.priority {
        let v = match pr {
            PriorityArg::Low => 1,
            PriorityArg::Same => 2,
            PriorityArg::High => 3,
            PriorityArg::Urgent => 4,
        };
        p.insert("ReplicationSettingData".into(), json!({"CopyPriority": v}));
    }
    if let Some(w) = &r.wait_for {
        p.insert("WaitForCopyState".into(), json!(parse_copy_state(w)?));
    }
    let resp = c.call("CreateGroupReplica", Value::Object(p))?;
    finish(c, resp, r.wait, json)
}

/// With `wait`, follow a started job to its end before reporting.
fn finish(c: &mut Client, r: Response, wait: bool, json: bool) -> anyhow::Result<Response> {
    if wait
        && r.code == 4096
        && let Some(j) = r.str("Job").map(str::to_owned)
    {
        if !json {
            for (k, v) in &r.body {
                if !matches!(k.as_str(), "id" | "ReturnValue" | "Job") && !v.is_null() {
                    println!("{k}: {}", plain(v));
                }
            }
        }
        let code = watch_job(c, &j, json)?;
        if code != 0 {
            bail!("{j} failed");
        }
        return Ok(Response {
            code: 0,
            body: Map::new(),
        });
    }
    Ok(r)
}

/// Follow a job until JobState 7 or 10, with a progress bar on a terminal.
fn watch_job(c: &mut Client, jref: &str, json: bool) -> anyhow::Result<u8> {
    let bar = (!json && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let b = indicatif::ProgressBar::new(100);
        b.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos:>3}% {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b.set_prefix(jref.to_owned());
        b
    });
    loop {
        let r = c.call("GetInstance", json!({"Ref": jref}))?;
        let Some(Value::Object(inst)) = r.get("Instance").cloned() else {
            report(&r, json);
            return Ok(1);
        };
        let state = inst.get("JobState").and_then(Value::as_u64).unwrap_or(0) as u16;
        let pct = inst
            .get("PercentComplete")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if let Some(b) = &bar {
            b.set_position(pct);
            b.set_message(
                inst.get("Name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            );
        }
        if state == JobState::Completed as u16 || state == JobState::Exception as u16 {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            if json {
                println!("{}", Value::Object(inst));
            } else {
                print_instance(&inst);
            }
            return Ok(if state == JobState::Completed as u16 {
                0
            } else {
                1
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Operation names (and numbers).
pub fn parse_operation(s: &str) -> anyhow::Result<u16> {
    if let Ok(n) = s.parse::<u16>() {
        return Ok(n);
    }
    let op = match s.to_ascii_lowercase().replace('_', "-").as_str() {
        "abort" => Operation::Abort,
        "activate-consistency" => Operation::ActivateConsistency,
        "activate" => Operation::Activate,
        "add-pair" | "add-sync-pair" => Operation::AddSyncPair,
        "deactivate-consistency" => Operation::DeactivateConsistency,
        "deactivate" => Operation::Deactivate,
        "detach" => Operation::Detach,
        "dissolve" => Operation::Dissolve,
        "failover" => Operation::Failover,
        "failback" => Operation::Failback,
        "fracture" => Operation::Fracture,
        "remove-pair" | "remove-sync-pair" => Operation::RemoveSyncPair,
        "resync" | "resync-replica" => Operation::ResyncReplica,
        "restore" | "restore-from-replica" => Operation::RestoreFromReplica,
        "resume" => Operation::Resume,
        "reset-to-sync" => Operation::ResetToSync,
        "reset-to-async" => Operation::ResetToAsync,
        "return-to-pool" | "return-to-resource-pool" | "delete" => Operation::ReturnToResourcePool,
        "reverse" | "reverse-roles" => Operation::ReverseRoles,
        "split" => Operation::Split,
        "suspend" => Operation::Suspend,
        "unprepare" => Operation::Unprepare,
        "prepare" => Operation::Prepare,
        other => bail!("unknown operation {other:?}"),
    };
    Ok(op as u16)
}

/// CopyState names (and numbers).
pub fn parse_copy_state(s: &str) -> anyhow::Result<u16> {
    if let Ok(n) = s.parse::<u16>() {
        return Ok(n);
    }
    let want = s.to_ascii_lowercase().replace(['-', '_'], "");
    (2..=18u16)
        .find(|&n| {
            CopyState::from_code(n).is_some_and(|c| format!("{c:?}").to_ascii_lowercase() == want)
        })
        .with_context(|| format!("unknown CopyState {s:?}"))
}
