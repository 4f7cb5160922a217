//! The admin socket's contract: framing, bad input, permissions, every parameter rule and
//! return code of the two SMI-S methods, the group and volume methods, and the CLI.

use std::{os::unix::fs::PermissionsExt, process::Command, time::Duration};

use admin::client::{Client, Response};
use serde_json::{Value, json};

use crate::harness::{IQN, Server, run};

fn server() -> Server {
    Server::start_config(&format!(
        r#"
[[portal]]
address = "127.0.0.1:0"

[replication]
job_wait_ms = 50

[[target]]
name = "{IQN}"

[[target.lun]]
lun = 0
path = "{{DIR}}/lun0.img"
size = "16MiB"

[[target.lun]]
lun = 1
path = "{{DIR}}/lun1.img"
size = "16MiB"

[[target.lun]]
lun = 2
path = "{{DIR}}/lun2.img"
size = "8MiB"
"#
    ))
}

fn call(c: &mut Client, method: &str, params: Value) -> Response {
    c.call(method, params).expect("admin call")
}

/// The call must fail with `code`, naming `parameter`.
#[track_caller]
fn refused(
    c: &mut Client,
    method: &str,
    params: Value,
    code: u32,
    parameter: Option<&str>,
) -> String {
    let r = call(c, method, params.clone());
    assert_eq!(r.code, code, "{method} {params}: {:?}", r.body);
    let (msg, p) = r
        .error()
        .unwrap_or_else(|| panic!("{method}: no Error in {:?}", r.body));
    assert_eq!(p.as_deref(), parameter, "{method} {params}: {msg}");
    msg
}

fn wait_job(c: &mut Client, r: &Response) {
    if r.code != 4096 {
        return;
    }
    let job = r.str("Job").expect("job").to_owned();
    for _ in 0..2000 {
        let i = call(c, "GetInstance", json!({"Ref": job}));
        match i.get("Instance").and_then(|v| v["JobState"].as_u64()) {
            Some(7) => return,
            Some(10) => panic!("{job} failed: {:?}", i.body),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    panic!("{job} did not finish");
}

#[test]
fn framing_and_bad_input_keep_the_connection_and_server_up() {
    let s = server();
    let mode = std::fs::metadata(s.admin_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let mut c = s.admin();
    // Malformed JSON, a non-object, a missing method, bad params.
    for (line, param) in [
        (&b"{not json\n"[..], None),
        (b"[1, 2]\n", None),
        (b"{\"id\": 5}\n", Some("method")),
        (
            b"{\"id\": 6, \"method\": \"GetVersion\", \"params\": 3}\n",
            Some("params"),
        ),
    ] {
        let r = c.raw(line).unwrap();
        assert_eq!(r.code, 5, "{}", String::from_utf8_lossy(line));
        assert_eq!(r.error().unwrap().1.as_deref(), param);
    }
    // The id comes back.
    let r = c
        .raw(b"{\"id\": \"abc\", \"method\": \"GetVersion\"}\n")
        .unwrap();
    assert_eq!((r.code, r.body["id"].clone()), (0, json!("abc")));
    assert_eq!(r.str("ProtocolVersion"), Some(admin::PROTOCOL_VERSION));
    // Unknown methods: 1 Not Supported.
    refused(&mut c, "Frobnicate", json!({}), 1, Some("method"));
    // Wrong types name the parameter.
    refused(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": "seven"}),
        5,
        Some("SyncType"),
    );
    refused(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 70000}),
        5,
        Some("SyncType"),
    );
    refused(
        &mut c,
        "ModifyReplicaSynchronization",
        json!({"Operation": 12, "Force": "yes"}),
        5,
        Some("Force"),
    );
    refused(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 7, "SourceElement": "lun0"}),
        5,
        Some("SourceElement"),
    );
    refused(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 7, "SourceElement": "group:g"}),
        5,
        Some("SourceElement"),
    );
    refused(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 7, "Bogus": 1}),
        5,
        Some("Bogus"),
    );
    // An oversized request: an error, the rest of the line discarded, the next one served.
    let mut big = b"{\"id\": 1, \"method\": \"GetVersion\", \"params\": {\"x\": \"".to_vec();
    big.extend(std::iter::repeat_n(b'a', admin::MAX_REQUEST_BYTES + 10));
    big.extend_from_slice(b"\"}}\n");
    let r = c.raw(&big).unwrap();
    assert_eq!(r.code, 5);
    assert!(r.error().unwrap().0.contains("larger"));
    let r = call(&mut c, "GetVersion", json!({}));
    assert_eq!(r.code, 0);
    // Pipelined requests are answered in order.
    let r = c
        .raw(b"{\"id\":1,\"method\":\"GetVersion\"}\n{\"id\":2,\"method\":\"GetVersion\"}\n")
        .unwrap();
    assert_eq!(r.body["id"], json!(1));
    let r = c.raw(b"").unwrap();
    assert_eq!(r.body["id"], json!(2));
    // A dropped connection does not hurt the server.
    drop(c);
    let mut c2 = s.admin();
    assert_eq!(call(&mut c2, "GetVersion", json!({})).code, 0);
}

#[test]
fn other_users_are_refused() {
    let s = server();
    let path = s.admin_path();
    // Let anyone reach the socket file: the SO_PEERCRED check still refuses them.
    for d in [s.dir.path().to_owned(), path.parent().unwrap().to_owned()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, out) = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_ironlun"))
        .args(["admin", "--json", "--socket"])
        .arg(&path)
        .arg("version"));
    assert!(!ok, "{out}");
    assert!(out.contains("access denied"), "{out}");
    // Root still gets in.
    assert_eq!(call(&mut s.admin(), "GetVersion", json!({})).code, 0);
}

#[test]
fn create_group_replica_rules_and_return_codes() {
    let s = server();
    let mut c = s.admin();
    let m = "CreateGroupReplica";
    let lun0 = "volume:test-lun0";
    refused(
        &mut c,
        m,
        json!({"SourceElement": lun0}),
        5,
        Some("SyncType"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 9, "SourceElement": lun0}),
        5,
        Some("SyncType"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 7, "Mode": 4, "SourceElement": lun0}),
        5,
        Some("Mode"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 7, "Mode": 3, "SourceElement": lun0}),
        5,
        Some("Mode"),
    );
    refused(&mut c, m, json!({"SyncType": 7}), 5, Some("SourceElement"));
    call(
        &mut c,
        "CreateGroup",
        json!({"GroupName": "src", "Members": [lun0, "volume:test-lun1"]}),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 7, "SourceElement": lun0, "SourceGroup": "group:src"}),
        5,
        Some("SourceGroup"),
    );
    call(&mut c, "CreateGroup", json!({"GroupName": "empty"}));
    refused(
        &mut c,
        m,
        json!({"SyncType": 7, "SourceElement": lun0, "TargetGroup": "group:empty", "TargetElementCount": 2}),
        5,
        Some("TargetElementCount"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 7, "SourceGroup": "group:src", "TargetElementCount": 2}),
        5,
        Some("TargetElementCount"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 8, "SourceElement": lun0, "TargetElementCount": 0}),
        5,
        Some("TargetElementCount"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 7, "SourceElement": lun0, "Consistency": 4}),
        5,
        Some("Consistency"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 7, "SourceElement": lun0, "WaitForCopyState": 6}),
        5,
        Some("WaitForCopyState"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 7, "SourceElement": lun0, "TargetPool": "pool:nope"}),
        5,
        Some("TargetPool"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 7, "SourceElement": lun0, "ReplicationSettingData": {"CopyPriority": 9}}),
        5,
        Some("ReplicationSettingData"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 7, "SourceElement": lun0, "RelationshipName": "bad name"}),
        5,
        Some("RelationshipName"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 7, "SourceElement": "volume:nope"}),
        5,
        Some("SourceElement"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 6, "SourceElement": lun0, "TargetAccessPoint": "remote"}),
        5,
        Some("TargetAccessPoint"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 6, "SourceElement": lun0, "TargetAccessPoint": "accesspoint:nope"}),
        5,
        Some("TargetAccessPoint"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 7, "SourceElement": lun0, "TargetAccessPoint": "accesspoint:nope"}),
        1,
        Some("TargetAccessPoint"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 6, "SourceElement": lun0, "SourceAccessPoint": "remote"}),
        1,
        Some("SourceAccessPoint"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 6, "SourceElement": lun0, "Collections": ["x"]}),
        1,
        Some("Collections"),
    );
    // Existing targets: of the same size, with TargetPool and TargetSettingGoal NULL.
    call(
        &mut c,
        "CreateGroup",
        json!({"GroupName": "small", "Members": ["volume:test-lun2"]}),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 6, "SourceElement": lun0, "TargetGroup": "group:small"}),
        5,
        Some("TargetGroup"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 6, "SourceElement": lun0, "TargetGroup": "group:small", "TargetPool": "pool:default"}),
        5,
        Some("TargetPool"),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 6, "SourceElement": lun0, "TargetGroup": "group:small", "TargetSettingGoal": "x"}),
        5,
        Some("TargetSettingGoal"),
    );
    call(
        &mut c,
        "CreateGroup",
        json!({"GroupName": "one", "Members": ["volume:test-lun1"]}),
    );
    refused(
        &mut c,
        m,
        json!({"SyncType": 6, "SourceGroup": "group:src", "TargetGroup": "group:one"}),
        5,
        Some("TargetGroup"),
    );
    // Accepted: targets named <RelationshipName>_n from 1, one-to-many, in a new group.
    let r = call(
        &mut c,
        m,
        json!({"SyncType": 7, "SourceElement": lun0, "RelationshipName": "fan", "TargetElementCount": 3, "ReplicationSettingData": "<INSTANCE CLASSNAME=\"CIM_ReplicationSettingData\"><PROPERTY NAME=\"ConsistentPointInTime\" TYPE=\"boolean\"><VALUE>true</VALUE></PROPERTY></INSTANCE>"}),
    );
    assert_eq!(r.code, 0, "{:?}", r.body);
    assert_eq!(r.str("TargetGroup"), Some("group:fan"));
    let g = call(&mut c, "GetInstance", json!({"Ref": "group:fan"}));
    assert_eq!(
        g.get("Instance").unwrap()["Members"],
        json!(["volume:fan_1", "volume:fan_2", "volume:fan_3"])
    );
    // The same RelationshipName again: its group exists (6).
    refused(
        &mut c,
        m,
        json!({"SyncType": 7, "SourceElement": lun0, "RelationshipName": "fan"}),
        6,
        Some("RelationshipName"),
    );
    // A snapshot is not a source for a mirror: 6.
    refused(
        &mut c,
        m,
        json!({"SyncType": 6, "SourceElement": "volume:fan_1"}),
        6,
        Some("SourceElement"),
    );
    // 4096 and a job: a mirror's initial copy (the server answers after 50 ms).
    let r = call(
        &mut c,
        m,
        json!({"SyncType": 6, "SourceGroup": "group:src", "RelationshipName": "mir"}),
    );
    assert!(r.code == 4096 || r.code == 0, "{:?}", r.body);
    if r.code == 4096 {
        assert!(r.str("Job").unwrap().starts_with("job:"));
        assert!(r.str("Synchronization").unwrap().starts_with("sync:"));
    }
    wait_job(&mut c, &r);
    // 4 Failed: a volume the filesystem cannot hold.
    refused(
        &mut c,
        "CreateVolume",
        json!({"ElementName": "huge", "Size": 1u64 << 63}),
        4,
        None,
    );
}

#[test]
fn modify_rules_and_return_codes() {
    let s = server();
    let mut c = s.admin();
    let m = "ModifyReplicaSynchronization";
    let snap = call(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 7, "SourceElement": "volume:test-lun0", "RelationshipName": "s"}),
    );
    let snap = snap.str("Synchronization").unwrap().to_owned();
    let r = call(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 6, "Mode": 3, "SourceElement": "volume:test-lun1", "RelationshipName": "am", "WaitForCopyState": 4}),
    );
    wait_job(&mut c, &r);
    let mirror = r.str("Synchronization").unwrap().to_owned();
    refused(
        &mut c,
        m,
        json!({"Synchronization": snap}),
        5,
        Some("Operation"),
    );
    refused(
        &mut c,
        m,
        json!({"Operation": 12}),
        5,
        Some("Synchronization"),
    );
    refused(
        &mut c,
        m,
        json!({"Operation": 12, "Synchronization": "sync:999"}),
        5,
        Some("Synchronization"),
    );
    refused(
        &mut c,
        m,
        json!({"Operation": 99, "Synchronization": snap}),
        5,
        Some("Operation"),
    );
    refused(
        &mut c,
        m,
        json!({"Operation": 25, "Synchronization": snap}),
        1,
        Some("Operation"),
    );
    // Not for this SyncType: 1. Not in this CopyState: 5, naming the state.
    refused(
        &mut c,
        m,
        json!({"Operation": 10, "Synchronization": snap}),
        1,
        Some("Operation"),
    );
    let msg = refused(
        &mut c,
        m,
        json!({"Operation": 16, "Synchronization": mirror}),
        5,
        Some("Operation"),
    );
    assert!(msg.contains("Synchronized"), "{msg}");
    refused(
        &mut c,
        m,
        json!({"Operation": 8, "Synchronization": mirror}),
        5,
        Some("Force"),
    );
    refused(
        &mut c,
        m,
        json!({"Operation": 12, "Synchronization": mirror, "SyncPair": [mirror]}),
        5,
        Some("SyncPair"),
    );
    refused(
        &mut c,
        m,
        json!({"Operation": 5, "Synchronization": mirror}),
        5,
        Some("SyncPair"),
    );
    refused(
        &mut c,
        m,
        json!({"Operation": 12, "Synchronization": mirror, "WaitForCopyState": 7}),
        5,
        Some("WaitForCopyState"),
    );
    // 3 Timeout (Split of an asynchronous target that cannot catch up) is shown with a
    // slow target device in crates/replication/tests/service.rs.
    // 6 In Use: Return To ResourcePool of an exposed snapshot.
    call(
        &mut c,
        "ExposeVolume",
        json!({"TheElement": "volume:s_1", "Target": IQN}),
    );
    refused(
        &mut c,
        m,
        json!({"Operation": 19, "Synchronization": snap}),
        6,
        Some("Synchronization"),
    );
    // Accepted, with WaitForCopyState 15 (Not Applicable) as Fujitsu's driver sends it.
    call(
        &mut c,
        "HideVolume",
        json!({"TheElement": "volume:s_1", "Target": IQN}),
    );
    let r = call(
        &mut c,
        m,
        json!({"Operation": 19, "Synchronization": snap, "WaitForCopyState": 15, "Force": true}),
    );
    assert_eq!(r.code, 0, "{:?}", r.body);
    assert!(r.get("Job").is_none() && r.body.contains_key("SettingsState"));
    // Capabilities answer from the same table.
    let ops = call(
        &mut c,
        "GetSupportedOperations",
        json!({"ReplicationType": 6}),
    );
    assert_eq!(
        ops.get("SupportedOperations"),
        Some(&json!([4, 3, 6, 7, 14, 15, 19, 5, 13]))
    );
    let ops = call(
        &mut c,
        "GetSupportedOperations",
        json!({"ReplicationType": 2, "CopyState": 10}),
    );
    assert_eq!(
        ops.get("SupportedOperations"),
        Some(&json!([3, 6, 8, 11, 13]))
    );
    assert_eq!(
        ops.get("RequiresForce"),
        Some(&json!([false, false, true, false, false]))
    );
    refused(
        &mut c,
        "GetSupportedOperations",
        json!({"ReplicationType": 8}),
        1,
        Some("ReplicationType"),
    );
    refused(
        &mut c,
        "GetSupportedOperations",
        json!({"ReplicationType": 40}),
        5,
        Some("ReplicationType"),
    );
    let w = call(
        &mut c,
        "GetSupportedWaitForCopyStates",
        json!({"ReplicationType": 6, "MethodName": 3}),
    );
    assert_eq!(w.get("SupportedStates"), Some(&json!([4])));
    let caps = call(&mut c, "GetInstance", json!({"Ref": "service:replication"}));
    assert_eq!(
        caps.get("Instance").unwrap()["SupportedReplicationTypes"],
        json!([2, 3, 4, 5, 6, 10])
    );
}

#[test]
fn group_and_volume_methods() {
    let s = server();
    let mut c = s.admin();
    let r = call(
        &mut c,
        "CreateGroup",
        json!({"Members": ["volume:test-lun0"]}),
    );
    assert_eq!(r.code, 0);
    let named = r.str("ReplicationGroup").unwrap().to_owned();
    assert!(named.starts_with("group:group"), "{named}");
    refused(
        &mut c,
        "CreateGroup",
        json!({"GroupName": "g", "Members": ["volume:x"]}),
        5,
        Some("Members"),
    );
    refused(
        &mut c,
        "CreateGroup",
        json!({"GroupName": "g", "Persistent": false}),
        1,
        Some("Persistent"),
    );
    call(
        &mut c,
        "CreateGroup",
        json!({"GroupName": "g", "Members": ["volume:test-lun0"]}),
    );
    refused(
        &mut c,
        "CreateGroup",
        json!({"GroupName": "g"}),
        6,
        Some("GroupName"),
    );
    refused(
        &mut c,
        "AddMembers",
        json!({"ReplicationGroup": "group:nope", "Members": ["volume:test-lun1"]}),
        7,
        Some("ReplicationGroup"),
    );
    assert_eq!(
        call(
            &mut c,
            "AddMembers",
            json!({"ReplicationGroup": "group:g", "Members": ["volume:test-lun1"]})
        )
        .code,
        0
    );
    refused(
        &mut c,
        "RemoveMembers",
        json!({"ReplicationGroup": "group:nope", "Members": ["volume:test-lun1"]}),
        7,
        Some("ReplicationGroup"),
    );
    refused(
        &mut c,
        "RemoveMembers",
        json!({"ReplicationGroup": "group:g", "Members": ["volume:test-lun2"]}),
        8,
        Some("Members"),
    );
    // A group in a relationship: DeleteGroup 7, RemoveMembers 6.
    let r = call(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 7, "SourceGroup": "group:g", "RelationshipName": "gs"}),
    );
    assert_eq!(r.code, 0);
    refused(
        &mut c,
        "DeleteGroup",
        json!({"ReplicationGroup": "group:g"}),
        7,
        Some("ReplicationGroup"),
    );
    refused(
        &mut c,
        "RemoveMembers",
        json!({"ReplicationGroup": "group:g", "Members": ["volume:test-lun1"]}),
        6,
        Some("Members"),
    );
    let gsync = r.str("Synchronization").unwrap().to_owned();
    assert_eq!(
        call(
            &mut c,
            "ModifyReplicaSynchronization",
            json!({"Operation": 19, "Synchronization": gsync})
        )
        .code,
        0
    );
    refused(
        &mut c,
        "DeleteGroup",
        json!({"ReplicationGroup": "group:g"}),
        6,
        Some("RemoveElements"),
    );
    assert_eq!(
        call(
            &mut c,
            "DeleteGroup",
            json!({"ReplicationGroup": "group:g", "RemoveElements": true})
        )
        .code,
        0
    );
    // Volumes.
    refused(
        &mut c,
        "CreateVolume",
        json!({"ElementName": "v", "Size": 1000}),
        5,
        Some("Size"),
    );
    refused(
        &mut c,
        "CreateVolume",
        json!({"ElementName": "v"}),
        5,
        Some("Size"),
    );
    refused(
        &mut c,
        "CreateVolume",
        json!({"ElementName": "v", "Size": 1048576, "Pool": "pool:nope"}),
        5,
        Some("Pool"),
    );
    let r = call(
        &mut c,
        "CreateVolume",
        json!({"ElementName": "v", "Size": 1048576}),
    );
    assert_eq!(r.str("TheElement"), Some("volume:v"));
    refused(
        &mut c,
        "CreateVolume",
        json!({"ElementName": "v", "Size": 1048576}),
        6,
        Some("ElementName"),
    );
    refused(
        &mut c,
        "ExposeVolume",
        json!({"TheElement": "volume:v", "Target": "iqn.2026-11.test:none"}),
        5,
        Some("Target"),
    );
    refused(
        &mut c,
        "ExposeVolume",
        json!({"TheElement": "volume:v", "Target": IQN, "Lun": 0}),
        6,
        Some("Lun"),
    );
    refused(
        &mut c,
        "ExposeVolume",
        json!({"TheElement": "volume:v", "Target": IQN, "Lun": 20000}),
        5,
        Some("Lun"),
    );
    let r = call(
        &mut c,
        "ExposeVolume",
        json!({"TheElement": "volume:v", "Target": IQN}),
    );
    assert_eq!((r.code, r.get("Lun").cloned()), (0, Some(json!(3))));
    refused(
        &mut c,
        "DeleteVolume",
        json!({"TheElement": "volume:v"}),
        6,
        Some("TheElement"),
    );
    refused(
        &mut c,
        "HideVolume",
        json!({"TheElement": "volume:v", "Target": "iqn.2026-11.test:none"}),
        5,
        Some("Target"),
    );
    assert_eq!(
        call(
            &mut c,
            "HideVolume",
            json!({"TheElement": "volume:v", "Target": IQN})
        )
        .code,
        0
    );
    assert_eq!(
        call(&mut c, "DeleteVolume", json!({"TheElement": "volume:v"})).code,
        0
    );
    refused(
        &mut c,
        "DeleteVolume",
        json!({"TheElement": "volume:test-lun0"}),
        6,
        Some("TheElement"),
    );
    // Enumerations.
    for class in admin::instances::CLASSES {
        let r = call(&mut c, "EnumerateInstances", json!({"ClassName": class}));
        assert_eq!(r.code, 0, "{class}");
        for i in r.get("Instances").and_then(Value::as_array).unwrap() {
            assert_eq!(i["ClassName"], json!(class));
        }
    }
    refused(
        &mut c,
        "EnumerateInstances",
        json!({"ClassName": "CIM_Nope"}),
        5,
        Some("ClassName"),
    );
    refused(
        &mut c,
        "GetInstance",
        json!({"Ref": "volume:nope"}),
        5,
        Some("Ref"),
    );
    refused(
        &mut c,
        "GetInstance",
        json!({"Ref": "nope"}),
        5,
        Some("Ref"),
    );
}

#[test]
fn cli_snapshot_list_modify_and_json() {
    let s = server();
    let sock = s.admin_path();
    let cli = |args: &[&str]| -> (bool, String) {
        run(Command::new(env!("CARGO_BIN_EXE_ironlun"))
            .arg("admin")
            .arg("--socket")
            .arg(&sock)
            .args(args))
    };
    let (ok, out) = cli(&["snapshot", "test-lun0", "--name", "nightly", "--wait"]);
    assert!(ok, "{out}");
    assert!(out.contains("Synchronization: sync:"), "{out}");
    let (ok, out) = cli(&["list", "syncs"]);
    assert!(
        ok && out.contains("volume:nightly_1") && out.contains("Synchronized"),
        "{out}"
    );
    let (ok, out) = cli(&[
        "replicate",
        "--source",
        "test-lun1",
        "--sync-type",
        "mirror",
        "--mode",
        "async",
        "--name",
        "am",
        "--wait",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&[
        "--json",
        "call",
        "EnumerateInstances",
        r#"{"ClassName": "CIM_GroupSynchronized"}"#,
    ]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let am = v["Instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["RelationshipName"] == json!("am"))
        .expect("the mirror's group relationship")["Ref"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, out) = cli(&["modify", &am, "fracture", "--wait-for", "fractured"]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["modify", &am, "fracture"]);
    assert!(
        !ok && out.contains("(Invalid Parameter)") && out.contains("Fractured"),
        "{out}"
    );
    let (ok, out) = cli(&["modify", &am, "resync", "--wait"]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["--json", "show", &am]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Instance"]["CopyState"], json!(4));
    let (ok, out) = cli(&["list", "jobs"]);
    assert!(ok && out.contains("Completed"), "{out}");
    let (ok, out) = cli(&["capabilities"]);
    assert!(ok && out.contains("ReturnToResourcePool"), "{out}");
    // A missing socket: exit 2 and a clear message.
    let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_ironlun")).args([
        "admin",
        "--socket",
        "/nonexistent/admin.sock",
        "version",
    ]));
    assert!(!ok && out.contains("cannot connect"), "{out}");
}
