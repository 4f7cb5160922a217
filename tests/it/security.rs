//! Security: secrets stay out of logs, CHAP refuses reflection, the configuration's
//! secrets are guarded. (The admin socket's SO_PEERCRED check is in admin_socket.rs, the
//! discovery allow-lists in discovery.rs.)

use iscsi_proto::{
    chap::{self, ChapAlgorithm},
    text::TextKeys,
};

use crate::{
    harness::{IQN, Server},
    initiator::{Initiator, OPERATIONAL},
};

const INIT_SECRET: &str = "init-secret-5x7";
const TARGET_SECRET: &str = "target-secret-9q2";
const DISCOVERY_SECRET: &str = "disc-secret-4k8";

fn server(filter: &str) -> Server {
    Server::start_config_logging(
        &format!(
            r#"
[[portal]]
address = "127.0.0.1:0"

[discovery]
chap = [{{ user = "disc", secret = "{DISCOVERY_SECRET}" }}]

[[target]]
name = "{IQN}"
chap = [{{ user = "alice", secret = "{INIT_SECRET}" }}]
mutual_chap = {{ user = "tgt", secret = "{TARGET_SECRET}" }}

[[target.lun]]
lun = 0
path = "{{DIR}}/lun0.img"
size = "16MiB"
"#
        ),
        filter,
    )
}

/// Makes the initiator's CHAP challenge from the target's.
type Challenge<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;

/// A CHAP login: `secret` answers the target's challenge; `challenge` (when mutual) is
/// ours, `None` for one-way. Returns the final status.
fn chap(
    i: &mut Initiator,
    session: &str,
    user: &str,
    secret: &str,
    challenge: Option<Challenge<'_>>,
) -> (u8, u8) {
    let mut first = vec![
        ("InitiatorName", "iqn.2026-11.test:host"),
        ("SessionType", session),
        ("AuthMethod", "CHAP"),
    ];
    if session == "Normal" {
        first.push(("TargetName", IQN));
    }
    let r = i.login_step(0, 1, false, &first);
    if r.status_class != 0 {
        return (r.status_class, r.status_detail);
    }
    let r = i.login_step(0, 1, false, &[("CHAP_A", "7")]);
    if r.status_class != 0 {
        return (r.status_class, r.status_detail);
    }
    let k = TextKeys::parse(&r.data).unwrap();
    let a = ChapAlgorithm::from_code(k.get("CHAP_A").unwrap().parse().unwrap()).unwrap();
    let id: u8 = k.get("CHAP_I").unwrap().parse().unwrap();
    let c = chap::decode_binary(k.get("CHAP_C").unwrap()).unwrap();
    let resp = chap::encode_hex(&a.response(id, secret.as_bytes(), &c));
    let mut keys = vec![("CHAP_N", user.to_owned()), ("CHAP_R", resp)];
    if let Some(pick) = challenge {
        keys.push(("CHAP_I", "3".to_owned()));
        keys.push(("CHAP_C", chap::encode_hex(&pick(&c))));
    }
    let keys: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = i.login_step(0, 1, true, &keys);
    if r.status_class != 0 {
        return (r.status_class, r.status_detail);
    }
    let r = i.login_step(1, 3, true, OPERATIONAL);
    (r.status_class, r.status_detail)
}

#[test]
fn secrets_never_reach_the_log_even_at_trace_level() {
    let s = server("trace");
    let fresh = |_: &[u8]| vec![0x42u8; 32];
    // A mutual CHAP login, a wrong secret, a discovery login, a wrong discovery secret.
    let mut i = Initiator::connect(s.addr());
    assert_eq!(
        chap(&mut i, "Normal", "alice", INIT_SECRET, Some(&fresh)),
        (0, 0)
    );
    let mut i = Initiator::connect(s.addr());
    assert_eq!(
        chap(&mut i, "Normal", "alice", "wrong-secret-000", Some(&fresh)),
        (2, 1)
    );
    let mut i = Initiator::connect(s.addr());
    assert_eq!(
        chap(&mut i, "Discovery", "disc", DISCOVERY_SECRET, None),
        (0, 0)
    );
    let mut i = Initiator::connect(s.addr());
    assert_eq!(chap(&mut i, "Discovery", "disc", INIT_SECRET, None), (2, 1));
    let log = s.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log is verbose"
    );
    for secret in [INIT_SECRET, TARGET_SECRET, DISCOVERY_SECRET] {
        assert!(!log.contains(secret), "{secret} is in the log");
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(
            !log.to_ascii_lowercase().contains(&hex),
            "{secret} is in the log in hex"
        );
    }
}

#[test]
fn mutual_chap_refuses_a_reflected_challenge() {
    let s = server("info");
    // The initiator sends back the target's own challenge: answering it would hand out a
    // response an attacker can replay (RFC 7143 section 12.1.3).
    let reflect = |c: &[u8]| c.to_vec();
    let mut i = Initiator::connect(s.addr());
    assert_eq!(
        chap(&mut i, "Normal", "alice", INIT_SECRET, Some(&reflect)),
        (2, 1)
    );
    assert!(i.closed());
    // An honest mutual login still works.
    let fresh = |_: &[u8]| vec![0x17u8; 32];
    let mut i = Initiator::connect(s.addr());
    assert_eq!(
        chap(&mut i, "Normal", "alice", INIT_SECRET, Some(&fresh)),
        (0, 0)
    );
}

#[test]
fn readable_secrets_are_warned_about_at_start() {
    let s = server("info");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(s.config_path()).unwrap().permissions(),
    );
    assert_ne!(
        mode & 0o077,
        0,
        "the test writes the config readable by others"
    );
    assert!(
        s.log().contains("readable by other users"),
        "no warning in:\n{}",
        s.log()
    );
}
