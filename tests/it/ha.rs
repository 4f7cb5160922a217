//! HA pairs: two ironlun servers on two loopback addresses, a remote mirror between them
//! that both know, one SCSI identity with ALUA, planned Failover and Failback, and the split
//! brain after an unplanned failover, compared with a model at every step.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{
    harness::{IQN, Server},
    initiator::Initiator,
    replication::{instance, lun_id, ok, pattern, read, sense, write, write_ok},
};

const MIRROR_INITIATOR: &str = "iqn.2026-11.test:mirror";
const SIZE: usize = 16 << 20;

/// B's initiator towards A (after Reverse Roles).
const MIRROR_INITIATOR_B: &str = "iqn.2026-11.test:mirror-b";

/// Server A: portal group 1 on 127.0.0.1, LUN 0 the source; B may become its source too.
fn server_a() -> Server {
    Server::start_config(&format!(
        r#"
[[portal]]
address = "127.0.0.1:0"
group = 1

[[target]]
name = "{IQN}"
replica_peers = ["{MIRROR_INITIATOR_B}"]

[[target.lun]]
lun = 0
path = "{{DIR}}/lun0.img"
size = "16MiB"
"#
    ))
}

/// Server B: portal group 2 on 127.0.0.2, the same target name, A's mirror initiator as
/// its replica peer, and a volume exposed as LUN 0 to hold the copy.
fn server_b() -> Server {
    server_b_on(0)
}

/// A free TCP port on 127.0.0.2 (so that B keeps its address across restarts).
fn free_port_b() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    l.local_addr().expect("addr").port()
}

fn server_b_on(port: u16) -> Server {
    let s = Server::start_config(&format!(
        r#"
[[portal]]
address = "127.0.0.2:{port}"
group = 2

[[target]]
name = "{IQN}"
replica_peers = ["{MIRROR_INITIATOR}"]
"#
    ));
    let mut c = s.admin();
    ok(
        &mut c,
        "CreateVolume",
        json!({"ElementName": "copy", "Size": SIZE}),
    );
    ok(
        &mut c,
        "ExposeVolume",
        json!({"TheElement": "volume:copy", "Target": IQN, "Lun": 0}),
    );
    s
}

fn host(s: &Server, name: &str) -> Initiator {
    let mut i = Initiator::connect(s.addr());
    assert_eq!(i.login(name, IQN, &[]).status_class, 0);
    i
}

/// TEST UNIT READY until it answers something other than a unit attention.
fn tur(i: &mut Initiator) -> (u8, (u8, u8, u8)) {
    for _ in 0..8 {
        let o = i.scsi(lun_id(0), &[0, 0, 0, 0, 0, 0], &[], 0, false);
        if o.status == 0 {
            return (0, (0, 0, 0));
        }
        let s = sense(&o);
        if s.0 != 6 {
            return (o.status, s);
        }
    }
    panic!("unit attentions do not stop");
}

/// The NAA designator of VPD page 0x83.
fn naa(i: &mut Initiator) -> Vec<u8> {
    let o = i.scsi(lun_id(0), &[0x12, 1, 0x83, 0, 255, 0], &[], 255, true);
    assert_eq!(o.status, 0);
    let d = &o.data;
    let mut p = 4;
    while p + 4 <= d.len() {
        let len = d[p + 3] as usize;
        if d[p + 1] & 0x0f == 3 {
            return d[p + 4..p + 4 + len].to_vec();
        }
        p += 4 + len;
    }
    panic!("no NAA designator in {d:02x?}");
}

/// REPORT TARGET PORT GROUPS: (group, state) pairs.
fn rtpg(i: &mut Initiator) -> Vec<(u16, u8)> {
    let cdb = [0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0];
    let mut o = i.scsi(lun_id(0), &cdb, &[], 1024, true);
    // ASYMMETRIC ACCESS STATE CHANGED first, as Linux's ALUA handler sees it.
    while o.status == 2 && sense(&o).0 == 6 {
        o = i.scsi(lun_id(0), &cdb, &[], 1024, true);
    }
    assert_eq!(o.status, 0, "RTPG: {:02x?}", o.sense);
    let d = &o.data;
    let mut out = Vec::new();
    let mut p = 4;
    while p + 8 <= d.len() {
        let ports = d[p + 7] as usize;
        out.push((u16::from_be_bytes([d[p + 2], d[p + 3]]), d[p] & 0x0f));
        p += 8 + 4 * ports;
    }
    out
}

fn wait_state(c: &mut admin::client::Client, sync: &str, want: u64) -> Value {
    let t = Instant::now();
    loop {
        let i = instance(c, sync);
        if i["CopyState"].as_u64() == Some(want) {
            return i;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{sync} stuck in {i}, waiting for CopyState {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn modify(c: &mut admin::client::Client, op: u16, sync: &str) -> Value {
    let r = ok(
        c,
        "ModifyReplicaSynchronization",
        json!({"Operation": op, "Synchronization": sync}),
    );
    Value::Object(r.body)
}

fn image(c: &mut admin::client::Client, volume: &str) -> Vec<u8> {
    let path = instance(c, volume)["IronLun_Path"]
        .as_str()
        .expect("path")
        .to_owned();
    let mut b = std::fs::read(path).expect("image");
    b.resize(SIZE, 0);
    b
}

fn put(model: &mut [u8], lba: u32, data: &[u8]) {
    let at = lba as usize * 512;
    model[at..at + data.len()].copy_from_slice(data);
}

/// Create the HA pair from A through `portal` (B directly or a proxy); returns A's pair and
/// B's relationship.
fn pair(a: &Server, portal: &str, mode: u16) -> (String, String) {
    let mut c = a.admin();
    ok(
        &mut c,
        "CreateAccessPoint",
        json!({"Name": "b", "Portal": portal, "Target": IQN, "Lun": 0, "InitiatorName": MIRROR_INITIATOR}),
    );
    let r = ok(
        &mut c,
        "CreateGroupReplica",
        json!({"SyncType": 6, "Mode": mode, "SourceElement": "volume:test-lun0", "TargetAccessPoint": "accesspoint:b", "RelationshipName": "ha", "WaitForCopyState": 4}),
    );
    let gsync = r.str("Synchronization").unwrap().to_owned();
    let p = crate::replication::pairs(&mut c, &gsync).remove(0);
    let inst = wait_state(&mut c, &p, 4);
    let remote = inst["IronLun_PeerSynchronization"]
        .as_str()
        .unwrap_or_else(|| panic!("the peer does not know the pair: {inst}"))
        .to_owned();
    (p, remote)
}

/// Drain an asynchronous pair.
fn caught_up(c: &mut admin::client::Client, p: &str) {
    let t = Instant::now();
    while instance(c, p)["IronLun_LagBytes"].as_u64().unwrap_or(0) > 0 {
        assert!(t.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ha_pair_one_identity_planned_failover_and_failback() {
    for mode in [2u16, 3] {
        let b = server_b();
        let a = server_a();
        let mut model = vec![0u8; SIZE];
        let mut ha = host(&a, "iqn.2026-11.test:host");
        ha.clear_ua(lun_id(0));
        let base = pattern(1 << 20, 3);
        write_ok(&mut ha, 0, 0, &base);
        put(&mut model, 0, &base);
        let (p, remote) = pair(&a, &b.addr().to_string(), mode);
        ha.clear_ua(lun_id(0));
        let mut ca = a.admin();
        let mut cb = b.admin();
        // B knows the relationship: its CIM instance names A's.
        let binst = instance(&mut cb, &remote);
        assert_eq!(binst["IronLun_Role"], json!("secondary"), "{binst}");
        assert_eq!(binst["IronLun_PeerSynchronization"], json!(p));
        assert_eq!(binst["SyncedElement"], json!("volume:copy"));
        assert_eq!(
            image(&mut cb, "volume:copy"),
            model,
            "mode {mode}: the initial copy"
        );

        // One identity, ALUA: A active/optimized, B standby.
        let mut hb = host(&b, "iqn.2026-11.test:host");
        assert_eq!(naa(&mut ha), naa(&mut hb), "one VPD 0x83 designator");
        assert_eq!(tur(&mut hb), (2, (2, 4, 0x0b)), "B's port is standby");
        assert_eq!(
            sense(&write(&mut hb, 0, 0, &[9u8; 512])),
            (2, 4, 0x0b),
            "B refuses host writes"
        );
        assert_eq!(rtpg(&mut ha), vec![(1, 0), (2, 2)]);
        assert_eq!(rtpg(&mut hb), vec![(1, 0), (2, 2)]);
        // Writes on A reach B.
        for k in 0..6u32 {
            let d = pattern(64 << 10, 10 + k as u8);
            write_ok(&mut ha, 0, 2048 + k * 1000, &d);
            put(&mut model, 2048 + k * 1000, &d);
        }
        caught_up(&mut ca, &p);
        assert!(
            image(&mut cb, "volume:copy") == model,
            "mode {mode}: B follows A"
        );

        // Planned failover: B active, A standby.
        modify(&mut ca, 10, &p);
        assert_eq!(instance(&mut ca, &p)["CopyState"], json!(10));
        assert_eq!(instance(&mut ca, &p)["IronLun_PeerPrimary"], json!(true));
        assert_eq!(instance(&mut cb, &remote)["IronLun_Role"], json!("primary"));
        assert_eq!(tur(&mut ha), (2, (2, 4, 0x0b)), "A's port is standby now");
        assert_eq!(tur(&mut hb), (0, (0, 0, 0)), "B's port is active");
        assert_eq!(rtpg(&mut hb), vec![(1, 2), (2, 0)]);
        // Writes on the new primary (5 chunks), read back there.
        for (k, lba) in [0u32, 4096, 8960, 19_968, 29_952].into_iter().enumerate() {
            let d = pattern(64 << 10, 50 + k as u8);
            write_ok(&mut hb, 0, lba, &d);
            put(&mut model, lba, &d);
        }
        assert_eq!(read(&mut hb, 0, 8960, 128), model[8960 * 512..9088 * 512]);
        assert_eq!(
            instance(&mut cb, &remote)["IronLun_DirtyChunks"],
            json!(5),
            "B tracked the chunks it changed"
        );

        // Failback: B's changes come back to A, A is primary again and B follows.
        modify(&mut ca, 11, &p);
        let inst = wait_state(&mut ca, &p, 4);
        assert_eq!(inst["IronLun_PeerPrimary"], json!(false));
        assert_eq!(
            inst["IronLun_ChunksCopied"],
            json!(5),
            "only B's changed chunks"
        );
        assert_eq!(tur(&mut ha), (0, (0, 0, 0)));
        assert_eq!(tur(&mut hb), (2, (2, 4, 0x0b)));
        assert!(
            image(&mut ca, "volume:test-lun0") == model,
            "mode {mode}: A has B's writes"
        );
        let d = pattern(64 << 10, 99);
        write_ok(&mut ha, 0, 100, &d);
        put(&mut model, 100, &d);
        caught_up(&mut ca, &p);
        assert!(
            image(&mut cb, "volume:copy") == model,
            "mode {mode}: B follows A again"
        );
        assert_eq!(instance(&mut cb, &remote)["IronLun_DirtyChunks"], json!(0));
    }
}

/// The link is cut, A keeps writing, B is failed over by hand (A is presumed lost) and
/// written too: when the link returns A learns of B's newer generation, stops serving
/// writes and reports the split brain. Failback on A keeps B's data; Resync keeps A's.
#[test]
fn ha_split_brain_is_detected_and_resolved_either_way() {
    for keep_b in [true, false] {
        let b = server_b();
        let proxy = crate::proxy::Proxy::start(b.addr());
        let a = server_a();
        let mut ha = host(&a, "iqn.2026-11.test:host");
        ha.clear_ua(lun_id(0));
        write_ok(&mut ha, 0, 0, &pattern(1 << 20, 1));
        let (p, remote) = pair(&a, &proxy.addr.to_string(), 2);
        ha.clear_ua(lun_id(0));
        let mut ca = a.admin();
        let mut cb = b.admin();
        proxy.cut();
        // A writes while apart (its pair goes Partitioned, tracking).
        write_ok(&mut ha, 0, 5120, &pattern(64 << 10, 7));
        wait_state(&mut ca, &p, 16);
        // Unplanned failover on B, and writes there.
        modify(&mut cb, 10, &remote);
        let mut hb = host(&b, "iqn.2026-11.test:host");
        assert_eq!(tur(&mut hb), (0, (0, 0, 0)));
        write_ok(&mut hb, 0, 8192, &pattern(64 << 10, 8));
        assert_eq!(instance(&mut cb, &remote)["IronLun_Generation"], json!(2));
        proxy.restore();
        // A probes the peer, sees generation 2 and its own writes: split brain, fenced.
        let inst = wait_state(&mut ca, &p, 5);
        assert_eq!(inst["IronLun_SplitBrain"], json!(true), "{inst}");
        assert_eq!(inst["IronLun_Generation"], json!(2));
        assert_eq!(tur(&mut ha), (2, (2, 4, 0x0b)), "A refuses its old role");
        let model = if keep_b {
            // Failback: B's data wins everywhere.
            let m = image(&mut cb, "volume:copy");
            modify(&mut ca, 11, &p);
            m
        } else {
            // Resync: A's data wins everywhere.
            let m = image(&mut ca, "volume:test-lun0");
            modify(&mut ca, 14, &p);
            m
        };
        let inst = wait_state(&mut ca, &p, 4);
        assert_eq!(inst["IronLun_SplitBrain"], json!(false));
        assert!(
            image(&mut ca, "volume:test-lun0") == model,
            "A holds the winner's data"
        );
        assert!(
            image(&mut cb, "volume:copy") == model,
            "B holds the winner's data"
        );
        assert_eq!(tur(&mut ha), (0, (0, 0, 0)));
        assert_eq!(tur(&mut hb), (2, (2, 4, 0x0b)));
    }
}

/// Roles, identities, access states and the secondary's change map survive restarts of
/// both servers (`kill -9` of the old primary, a clean stop of the new one); Failback
/// afterwards brings back exactly what changed.
#[test]
fn ha_roles_survive_restarts() {
    let mut b = server_b_on(free_port_b());
    let mut a = server_a();
    let mut model = vec![0u8; SIZE];
    let mut ha = host(&a, "iqn.2026-11.test:host");
    ha.clear_ua(lun_id(0));
    let base = pattern(2 << 20, 5);
    write_ok(&mut ha, 0, 0, &base);
    put(&mut model, 0, &base);
    let (p, remote) = pair(&a, &b.addr().to_string(), 2);
    modify(&mut a.admin(), 10, &p);
    let mut hb = host(&b, "iqn.2026-11.test:host");
    let d = pattern(128 << 10, 6);
    assert_eq!(tur(&mut hb), (0, (0, 0, 0)));
    write_ok(&mut hb, 0, 1024, &d);
    put(&mut model, 1024, &d);
    let id_before = naa(&mut hb);
    // The old primary dies and comes back: still fenced.
    drop(ha);
    a.restart(true);
    let mut ha = host(&a, "iqn.2026-11.test:host");
    assert_eq!(
        tur(&mut ha),
        (2, (2, 4, 0x0b)),
        "A stays standby after a restart"
    );
    assert_eq!(rtpg(&mut ha), vec![(1, 2), (2, 0)]);
    let mut ca = a.admin();
    assert_eq!(instance(&mut ca, &p)["CopyState"], json!(10));
    // The new primary restarts: still primary, same identity, its changes still tracked.
    drop(hb);
    b.restart(false);
    let mut hb = host(&b, "iqn.2026-11.test:host");
    assert_eq!(
        tur(&mut hb),
        (0, (0, 0, 0)),
        "B stays primary after a restart"
    );
    assert_eq!(naa(&mut hb), id_before);
    let mut cb = b.admin();
    assert_eq!(instance(&mut cb, &remote)["IronLun_DirtyChunks"], json!(2));
    let d = pattern(64 << 10, 7);
    write_ok(&mut hb, 0, 8192, &d);
    put(&mut model, 8192, &d);
    // Failback after all that.
    modify(&mut ca, 11, &p);
    let inst = wait_state(&mut ca, &p, 4);
    assert_eq!(inst["IronLun_ChunksCopied"], json!(3));
    assert!(
        image(&mut ca, "volume:test-lun0") == model,
        "A has every write of B"
    );
    assert_eq!(tur(&mut ha), (0, (0, 0, 0)));
    assert_eq!(tur(&mut hb), (2, (2, 4, 0x0b)));
}

/// Reverse Roles after a planned Failover: B becomes the source of the relationship and A
/// its secondary copy; only the chunks B changed are copied; B's writes then reach A.
#[test]
fn ha_reverse_roles_makes_the_peer_the_source() {
    let b = server_b();
    let a = server_a();
    let mut model = vec![0u8; SIZE];
    let mut ha = host(&a, "iqn.2026-11.test:host");
    ha.clear_ua(lun_id(0));
    let base = pattern(1 << 20, 21);
    write_ok(&mut ha, 0, 0, &base);
    put(&mut model, 0, &base);
    let (p, remote) = pair(&a, &b.addr().to_string(), 2);
    let mut ca = a.admin();
    let mut cb = b.admin();
    // B can reach A's LUN with its own initiator.
    ok(
        &mut cb,
        "CreateAccessPoint",
        json!({"Name": "a", "Portal": a.addr().to_string(), "Target": IQN, "Lun": 0, "InitiatorName": MIRROR_INITIATOR_B}),
    );
    modify(&mut ca, 10, &p);
    let mut hb = host(&b, "iqn.2026-11.test:host");
    assert_eq!(tur(&mut hb), (0, (0, 0, 0)));
    for (k, lba) in [128u32, 4096, 16_384].into_iter().enumerate() {
        let d = pattern(64 << 10, 30 + k as u8);
        write_ok(&mut hb, 0, lba, &d);
        put(&mut model, lba, &d);
    }
    // Reverse: A keeps a secondary's record, B holds the source.
    let out = modify(&mut ca, 20, &p);
    let a_rec = out["UpdatedSynchronization"]
        .as_str()
        .expect("the new reference")
        .to_owned();
    let arec = instance(&mut ca, &a_rec);
    assert_eq!(arec["IronLun_Role"], json!("secondary"), "{arec}");
    assert_eq!(arec["SyncedElement"], json!("volume:test-lun0"));
    let b_pair = arec["IronLun_PeerSynchronization"]
        .as_str()
        .expect("B's relationship")
        .to_owned();
    assert_ne!(
        ca.call("GetInstance", json!({"Ref": p})).unwrap().code,
        0,
        "A's old relationship is gone"
    );
    let binst = wait_state(&mut cb, &b_pair, 4);
    assert_eq!(binst["SystemElement"], json!("volume:copy"));
    assert_eq!(
        binst["IronLun_ChunksCopied"],
        json!(3),
        "only B's changes: {binst}"
    );
    assert!(
        image(&mut ca, "volume:test-lun0") == model,
        "A has B's writes"
    );
    assert_ne!(
        cb.call("GetInstance", json!({"Ref": remote})).unwrap().code,
        0,
        "B's secondary record is gone: B holds the source's relationship"
    );
    // B is the primary and its writes reach A; A refuses hosts.
    let d = pattern(64 << 10, 40);
    write_ok(&mut hb, 0, 8192, &d);
    put(&mut model, 8192, &d);
    assert!(
        image(&mut ca, "volume:test-lun0") == model,
        "B's new writes reach A"
    );
    assert_eq!(tur(&mut ha), (2, (2, 4, 0x0b)));
    assert_eq!(rtpg(&mut hb), vec![(1, 2), (2, 0)]);
    // And the roles move back the same way, now driven from B.
    modify(&mut cb, 10, &b_pair);
    assert_eq!(tur(&mut ha), (0, (0, 0, 0)));
    assert_eq!(tur(&mut hb), (2, (2, 4, 0x0b)));
    let d = pattern(64 << 10, 41);
    write_ok(&mut ha, 0, 256, &d);
    put(&mut model, 256, &d);
    modify(&mut cb, 11, &b_pair);
    wait_state(&mut cb, &b_pair, 4);
    assert!(
        image(&mut cb, "volume:copy") == model,
        "B has A's writes after Failback"
    );
}

/// The link of an asynchronous HA pair is cut during writes: A keeps serving and tracks,
/// B stays standby, and when the link returns A checks B's role and resynchronizes exactly
/// the changed chunks; the lag is reported in bytes and seconds.
#[test]
fn ha_link_cut_resyncs_only_changed_chunks() {
    let b = server_b();
    let proxy = crate::proxy::Proxy::start(b.addr());
    let a = server_a();
    let mut model = vec![0u8; SIZE];
    let mut ha = host(&a, "iqn.2026-11.test:host");
    ha.clear_ua(lun_id(0));
    let base = pattern(2 << 20, 61);
    write_ok(&mut ha, 0, 0, &base);
    put(&mut model, 0, &base);
    let (p, remote) = pair(&a, &proxy.addr.to_string(), 3);
    ha.clear_ua(lun_id(0));
    let mut ca = a.admin();
    let mut cb = b.admin();
    let inst = instance(&mut ca, &p);
    assert!(inst["IronLun_LagBytes"].is_u64() && inst["IronLun_LagSeconds"].is_number());
    proxy.cut();
    for (k, lba) in [0u32, 1024, 10_240, 20_480].into_iter().enumerate() {
        let d = pattern(64 << 10, 70 + k as u8);
        write_ok(&mut ha, 0, lba, &d);
        put(&mut model, lba, &d);
    }
    wait_state(&mut ca, &p, 16);
    let dirty = instance(&mut ca, &p)["IronLun_DirtyChunks"]
        .as_u64()
        .unwrap();
    assert_eq!(dirty, 4, "the four chunks written while apart");
    assert_eq!(
        instance(&mut cb, &remote)["IronLun_Role"],
        json!("secondary")
    );
    proxy.restore();
    let inst = wait_state(&mut ca, &p, 4);
    assert_eq!(
        inst["IronLun_ChunksCopied"],
        json!(4),
        "only the changed chunks"
    );
    assert_eq!(inst["IronLun_SplitBrain"], json!(false));
    caught_up(&mut ca, &p);
    assert!(
        image(&mut cb, "volume:copy") == model,
        "B equals A after the resync"
    );
    assert_eq!(tur(&mut ha), (0, (0, 0, 0)));
}

/// The peer protocol answers only the target's replica peers; anything else is not
/// understood, and a malformed request gets an error answer, never a dropped connection.
#[test]
fn ha_peer_protocol_answers_only_replica_peers() {
    use iscsi_proto::text::TextKeys;
    let b = server_b();
    let ask = |initiator: &str, value: &str| {
        let cfg = initiator::Config::new(&b.addr().to_string(), IQN, initiator);
        let s = initiator::Session::login(&cfg).expect("login");
        let mut keys = TextKeys::default();
        keys.push("X-io.ironlun.Peer", value);
        keys.push("X-com.example.Other", "1");
        let answer = s.text(&keys).expect("text");
        (
            answer
                .get("X-io.ironlun.Peer")
                .unwrap_or_default()
                .to_owned(),
            answer
                .get("X-com.example.Other")
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let hello = r#"{"op": "Hello", "system": "x"}"#;
    assert_eq!(
        ask("iqn.2026-11.test:host", hello),
        ("NotUnderstood".into(), "NotUnderstood".into())
    );
    let (reply, other) = ask(MIRROR_INITIATOR, hello);
    let v: Value = serde_json::from_str(&reply).expect("JSON");
    assert!(v["system"].as_str().is_some_and(|s| s.len() == 16), "{v}");
    assert_eq!(v["groups"], json!([[2, 2]]));
    assert_eq!(other, "NotUnderstood");
    let (reply, _) = ask(MIRROR_INITIATOR, "{not json");
    let v: Value = serde_json::from_str(&reply).expect("JSON");
    assert!(v["error"].as_str().is_some(), "{v}");
    let (reply, _) = ask(
        MIRROR_INITIATOR,
        r#"{"op": "Promote", "remote": 99, "generation": 9}"#,
    );
    let v: Value = serde_json::from_str(&reply).expect("JSON");
    assert!(
        v["error"].as_str().unwrap().contains("no HA relationship"),
        "{v}"
    );
}
