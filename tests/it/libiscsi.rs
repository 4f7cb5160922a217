//! libiscsi's command-line tools against the server: iscsi-ls, iscsi-inq,
//! iscsi-readcapacity16, with and without CHAP, with header digests.

use crate::harness::{IQN, Server, run, tool};

#[test]
fn iscsi_ls_lists_targets_and_luns() {
    let s = Server::start_config(&format!(
        r#"
[[portal]]
address = "127.0.0.1:0"

[[target]]
name = "{IQN}"

[[target.lun]]
lun = 0
path = "{{DIR}}/a.img"
size = "64MiB"

[[target.lun]]
lun = 3
path = "{{DIR}}/b.img"
size = "16MiB"
read_only = true
"#
    ));
    let (ok, out) = run(tool("iscsi-ls")
        .args(["-i", "iqn.2026-11.test:ls", "-s"])
        .arg(format!("iscsi://{}", s.addr())));
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("Target:{IQN} Portal:{},1", s.addr())),
        "{out}"
    );
    assert!(
        out.contains("Lun:0    Type:DIRECT_ACCESS (Size:63M)"),
        "{out}"
    );
    assert!(
        out.contains("Lun:3    Type:DIRECT_ACCESS (Size:15M)"),
        "{out}"
    );
}

#[test]
fn iscsi_inq_and_readcapacity16() {
    let s = Server::start("");
    let url = format!("iscsi://{}/{IQN}/0", s.addr());
    let (ok, out) = run(tool("iscsi-inq")
        .args(["-i", "iqn.2026-11.test:inq"])
        .arg(&url));
    assert!(ok, "{out}");
    assert!(
        out.contains("Vendor:IRONLUN") && out.contains("Product:VIRTUAL-DISK"),
        "{out}"
    );
    let (ok, out) = run(tool("iscsi-inq")
        .args(["-i", "iqn.2026-11.test:inq", "-e", "1", "-c", "131"])
        .arg(&url));
    assert!(ok, "{out}");
    assert!(out.contains("Designator Type:(3) NAA"), "{out}");
    let (ok, out) = run(tool("iscsi-readcapacity16")
        .args(["-i", "iqn.2026-11.test:rc"])
        .arg(&url));
    assert!(ok, "{out}");
    assert!(out.contains("Total size:67108864"), "{out}");
    assert!(out.contains("LBPME:1"), "{out}");
}

#[test]
fn chap_through_libiscsi() {
    let s = Server::start(r#"chap = [{ user = "alice", secret = "alice-secret-12" }]"#);
    let ok_url = format!("iscsi://alice%alice-secret-12@{}/{IQN}/0", s.addr());
    let bad_url = format!("iscsi://alice%wrong-secret@{}/{IQN}/0", s.addr());
    let none_url = format!("iscsi://{}/{IQN}/0", s.addr());
    let (ok, out) = run(tool("iscsi-inq")
        .args(["-i", "iqn.2026-11.test:chap"])
        .arg(&ok_url));
    assert!(ok, "{out}");
    assert!(out.contains("Vendor:IRONLUN"));
    let (ok, out) = run(tool("iscsi-inq")
        .args(["-i", "iqn.2026-11.test:chap"])
        .arg(&bad_url));
    assert!(!ok, "a wrong secret must fail: {out}");
    let (ok, _) = run(tool("iscsi-inq")
        .args(["-i", "iqn.2026-11.test:chap"])
        .arg(&none_url));
    assert!(!ok, "no credentials must fail");
    assert!(s.log().contains("login refused"));
    assert!(!s.log().contains("alice-secret-12"));
}

#[test]
fn mutual_chap_through_libiscsi() {
    let s = Server::start(
        r#"chap = [{ user = "alice", secret = "alice-secret-12" }]
mutual_chap = { user = "tgt", secret = "target-secret-34" }"#,
    );
    let url = |tsecret: &str| {
        format!(
            "iscsi://alice%alice-secret-12@{}/{IQN}/0?target_user=tgt&target_password={tsecret}",
            s.addr()
        )
    };
    let (ok, out) = run(tool("iscsi-inq")
        .args(["-i", "iqn.2026-11.test:m"])
        .arg(url("target-secret-34")));
    assert!(ok, "{out}");
    let (ok, _) = run(tool("iscsi-inq")
        .args(["-i", "iqn.2026-11.test:m"])
        .arg(url("not-the-secret")));
    assert!(
        !ok,
        "the initiator must refuse a target that answers with another secret"
    );
}
