//! Discovery sessions: SendTargets with portals and tags, allow-lists, wildcard portals.

use iscsi_proto::{
    pdu::{Pdu, RESERVED_TAG, TextRequest},
    text::TextKeys,
};

use crate::{harness::Server, initiator::Initiator};

fn discover(addr: std::net::SocketAddr, initiator: &str, what: &str) -> TextKeys {
    let mut i = Initiator::connect(addr);
    let r = i.login_step(
        1,
        3,
        true,
        &[
            ("InitiatorName", initiator),
            ("SessionType", "Discovery"),
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxRecvDataSegmentLength", "32768"),
        ],
    );
    assert_eq!(r.status_class, 0);
    i.after_login(&r);
    i.send(&Pdu::TextRequest(TextRequest {
        immediate: true,
        final_bit: true,
        itt: 7,
        ttt: RESERVED_TAG,
        cmd_sn: i.cmd_sn,
        exp_stat_sn: i.exp_stat_sn,
        data: format!("SendTargets={what}\0").into_bytes().into(),
        ..Default::default()
    }));
    let Pdu::TextResponse(t) = i.recv() else {
        panic!("expected a text response")
    };
    assert!(t.final_bit);
    TextKeys::parse(&t.data).unwrap()
}

const TWO_TARGETS: &str = r#"
[[portal]]
address = "127.0.0.1:0"
group = 1

[[portal]]
address = "127.0.0.1:0"
group = 2

[[target]]
name = "iqn.2026-11.io.ironlun:open"

[[target.lun]]
lun = 0
path = "{DIR}/a.img"
size = "1MiB"

[[target]]
name = "iqn.2026-11.io.ironlun:private"
allowed_initiators = ["iqn.2026-11.test:vip"]
portal_groups = [2]

[[target.lun]]
lun = 0
path = "{DIR}/b.img"
size = "1MiB"
"#;

#[test]
fn send_targets_lists_permitted_targets_with_their_portals() {
    let s = Server::start_config(TWO_TARGETS);
    let (p1, p2) = (s.portals[0], s.portals[1]);
    let k = discover(p1, "iqn.2026-11.test:vip", "All");
    let got: Vec<(&str, &str)> = k.iter().collect();
    assert_eq!(
        got,
        vec![
            ("TargetName", "iqn.2026-11.io.ironlun:open"),
            ("TargetAddress", format!("{p1},1").as_str()),
            ("TargetAddress", format!("{p2},2").as_str()),
            ("TargetName", "iqn.2026-11.io.ironlun:private"),
            ("TargetAddress", format!("{p2},2").as_str()),
        ]
    );
    // Someone else does not see the private target, even by name.
    let k = discover(p1, "iqn.2026-11.test:other", "All");
    assert_eq!(k.iter().filter(|(k, _)| *k == "TargetName").count(), 1);
    let k = discover(
        p1,
        "iqn.2026-11.test:other",
        "iqn.2026-11.io.ironlun:private",
    );
    assert!(k.is_empty());
    let k = discover(p1, "iqn.2026-11.test:vip", "iqn.2026-11.io.ironlun:private");
    assert_eq!(k.get("TargetName"), Some("iqn.2026-11.io.ironlun:private"));
}

#[test]
fn private_target_is_not_reachable_through_another_portal_group() {
    let s = Server::start_config(TWO_TARGETS);
    let mut i = Initiator::connect(s.portals[0]);
    let r = i.login(
        "iqn.2026-11.test:vip",
        "iqn.2026-11.io.ironlun:private",
        &[],
    );
    assert_eq!((r.status_class, r.status_detail), (2, 3));
    let mut i = Initiator::connect(s.portals[1]);
    assert_eq!(
        i.login(
            "iqn.2026-11.test:vip",
            "iqn.2026-11.io.ironlun:private",
            &[]
        )
        .status_class,
        0
    );
}

#[test]
fn wildcard_portal_answers_with_the_local_address() {
    let s = Server::start_config(
        r#"
[[portal]]
address = "0.0.0.0:0"

[[target]]
name = "iqn.2026-11.io.ironlun:any"

[[target.lun]]
lun = 0
path = "{DIR}/a.img"
size = "1MiB"
"#,
    );
    let port = s.addr().port();
    let k = discover(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "iqn.2026-11.test:x",
        "All",
    );
    assert_eq!(
        k.get("TargetAddress"),
        Some(format!("127.0.0.1:{port},1").as_str())
    );
}
