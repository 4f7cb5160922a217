//! Login sequences as open-iscsi and libiscsi send them (shared/spec/open-iscsi-notes.md).

use super::*;

struct Ctx {
    auth: AuthPolicy,
    discovery: AuthPolicy,
}

impl LoginContext for Ctx {
    fn lookup_target(&self, target: &str, initiator: &str) -> TargetLookup {
        match (target, initiator) {
            ("iqn.t:a", "iqn.i:denied") => TargetLookup::NotAuthorized,
            ("iqn.t:a", _) => TargetLookup::Found {
                alias: Some("disk-a".into()),
                auth: self.auth.clone(),
            },
            _ => TargetLookup::NotFound,
        }
    }
    fn discovery_auth(&self, _initiator: &str) -> AuthPolicy {
        self.discovery.clone()
    }
}

fn open_ctx() -> Ctx {
    Ctx {
        auth: AuthPolicy::default(),
        discovery: AuthPolicy::default(),
    }
}

fn chap_ctx(mutual: bool) -> Ctx {
    let auth = AuthPolicy {
        users: vec![Credential {
            user: "alice".into(),
            secret: Secret::new("alice-secret-1"),
        }],
        mutual: mutual.then(|| Credential {
            user: "target".into(),
            secret: Secret::new("target-secret-2"),
        }),
    };
    Ctx {
        auth: auth.clone(),
        discovery: auth,
    }
}

fn login() -> Login {
    Login::new(LoginConfig {
        limits: TargetLimits::default(),
        portal_group_tag: 1,
        queue_depth: 64,
    })
}

fn req(csg: u8, nsg: u8, transit: bool, keys: &[(&str, &str)]) -> LoginRequest {
    let mut t = TextKeys::default();
    for (k, v) in keys {
        t.push(*k, *v);
    }
    LoginRequest {
        transit,
        csg,
        nsg,
        isid: [0x00, 0x02, 0x3d, 0, 0, 1],
        itt: 1,
        cmd_sn: 0,
        exp_stat_sn: 0,
        data: t.encode(),
        ..Default::default()
    }
}

fn keys(resp: &LoginResponse) -> TextKeys {
    TextKeys::parse(&resp.data).unwrap()
}

const OPERATIONAL: &[(&str, &str)] = &[
    ("HeaderDigest", "None"),
    ("DataDigest", "None"),
    ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "0"),
    ("IFMarker", "No"),
    ("OFMarker", "No"),
    ("ErrorRecoveryLevel", "0"),
    ("InitialR2T", "No"),
    ("ImmediateData", "Yes"),
    ("MaxBurstLength", "16776192"),
    ("FirstBurstLength", "262144"),
    ("MaxOutstandingR2T", "1"),
    ("MaxConnections", "1"),
    ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"),
    ("MaxRecvDataSegmentLength", "262144"),
];

fn identity(target: &str) -> Vec<(&str, &str)> {
    vec![
        ("InitiatorName", "iqn.i:host"),
        ("InitiatorAlias", "(none)"),
        ("TargetName", target),
        ("SessionType", "Normal"),
    ]
}

#[test]
fn open_iscsi_normal_login_without_security_stage() {
    let mut l = login();
    let mut k = identity("iqn.t:a");
    k.extend_from_slice(OPERATIONAL);
    let LoginStep::Complete(resp, outcome) = l.handle(&req(1, 3, true, &k), &open_ctx()) else {
        panic!("login should complete in one step");
    };
    assert!(resp.transit);
    assert_eq!((resp.csg, resp.nsg), (1, 3));
    assert_eq!((resp.status_class, resp.status_detail), (0, 0));
    assert_eq!(resp.exp_cmd_sn, 0);
    assert_eq!(resp.max_cmd_sn, 63);
    let k = keys(&resp);
    assert_eq!(k.get("TargetPortalGroupTag"), Some("1"));
    assert_eq!(k.get("TargetAlias"), Some("disk-a"));
    assert_eq!(k.get("MaxRecvDataSegmentLength"), Some("262144"));
    assert_eq!(k.get("ImmediateData"), Some("Yes"));
    assert_eq!(outcome.target_name.as_deref(), Some("iqn.t:a"));
    assert_eq!(outcome.params.max_xmit_data_segment_length, 262_144);
    assert_eq!(outcome.session_type, SessionType::Normal);
}

#[test]
fn discovery_login() {
    let mut l = login();
    let k = [
        ("InitiatorName", "iqn.i:host"),
        ("SessionType", "Discovery"),
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("MaxRecvDataSegmentLength", "32768"),
    ];
    let LoginStep::Complete(_, outcome) = l.handle(&req(1, 3, true, &k), &open_ctx()) else {
        panic!("discovery login should complete");
    };
    assert_eq!(outcome.session_type, SessionType::Discovery);
    assert_eq!(outcome.target_name, None);
    assert_eq!(outcome.params.max_xmit_data_segment_length, 32768);
}

#[test]
fn security_stage_with_auth_none_then_operational() {
    let mut l = login();
    let mut k = identity("iqn.t:a");
    k.push(("AuthMethod", "None"));
    let LoginStep::Continue(r) = l.handle(&req(0, 1, true, &k), &open_ctx()) else {
        panic!()
    };
    assert!(r.transit);
    assert_eq!(keys(&r).get("AuthMethod"), Some("None"));
    let LoginStep::Complete(r, _) = l.handle(&req(1, 3, true, OPERATIONAL), &open_ctx()) else {
        panic!()
    };
    assert_eq!(r.stat_sn, 1, "each login response takes a StatSN");
    assert_eq!(
        keys(&r).get("TargetPortalGroupTag"),
        None,
        "declared only in the first response"
    );
}

fn failure(step: LoginStep) -> (u8, u8) {
    match step {
        LoginStep::Fail(r, s) => {
            assert_eq!((r.status_class, r.status_detail), (s.class, s.detail));
            (s.class, s.detail)
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn unknown_target_unauthorized_initiator_and_missing_keys() {
    let mut k = identity("iqn.t:nope");
    k.extend_from_slice(OPERATIONAL);
    assert_eq!(
        failure(login().handle(&req(1, 3, true, &k), &open_ctx())),
        (2, 3)
    );

    let k = [("InitiatorName", "iqn.i:denied"), ("TargetName", "iqn.t:a")];
    assert_eq!(
        failure(login().handle(&req(1, 3, true, &k), &open_ctx())),
        (2, 2)
    );

    let k = [("TargetName", "iqn.t:a")];
    assert_eq!(
        failure(login().handle(&req(1, 3, true, &k), &open_ctx())),
        (2, 7)
    );

    let k = [("InitiatorName", "iqn.i:host"), ("SessionType", "Normal")];
    assert_eq!(
        failure(login().handle(&req(1, 3, true, &k), &open_ctx())),
        (2, 7)
    );

    let k = [("InitiatorName", "iqn.i:host"), ("SessionType", "Bogus")];
    assert_eq!(
        failure(login().handle(&req(1, 3, true, &k), &open_ctx())),
        (2, 9)
    );
}

#[test]
fn unsupported_version_and_bad_stages() {
    let mut r = req(1, 3, true, &identity("iqn.t:a"));
    r.version_min = 1;
    r.version_max = 1;
    assert_eq!(failure(login().handle(&r, &open_ctx())), (2, 5));
    assert_eq!(
        failure(login().handle(&req(1, 1, true, &identity("iqn.t:a")), &open_ctx())),
        (2, 0)
    );
    assert_eq!(
        failure(login().handle(&req(1, 2, true, &identity("iqn.t:a")), &open_ctx())),
        (2, 0)
    );
}

/// Run the CHAP exchange as open-iscsi does; returns the final step.
fn chap_login(
    ctx: &Ctx,
    algs: &str,
    secret: &str,
    mutual: Option<(&[u8], &str)>,
) -> (LoginStep, Option<(ChapAlgorithm, Vec<u8>)>) {
    let mut l = login();
    let mut k = identity("iqn.t:a");
    k.push((
        "AuthMethod",
        if mutual.is_some() {
            "CHAP"
        } else {
            "CHAP,None"
        },
    ));
    let LoginStep::Continue(r) = l.handle(&req(0, 1, true, &k), ctx) else {
        panic!()
    };
    assert!(!r.transit);
    assert_eq!(keys(&r).get("AuthMethod"), Some("CHAP"));
    let step = l.handle(&req(0, 1, false, &[("CHAP_A", algs)]), ctx);
    let LoginStep::Continue(r) = step else {
        return (step, None);
    };
    let k = keys(&r);
    let alg = ChapAlgorithm::from_code(k.get("CHAP_A").unwrap().parse().unwrap()).unwrap();
    let id: u8 = k.get("CHAP_I").unwrap().parse().unwrap();
    let challenge = chap::decode_binary(k.get("CHAP_C").unwrap()).unwrap();
    let resp = chap::encode_hex(&alg.response(id, secret.as_bytes(), &challenge));
    let mut k = vec![("CHAP_N", "alice"), ("CHAP_R", resp.as_str())];
    let hex_c;
    if let Some((c, _)) = mutual {
        hex_c = chap::encode_hex(c);
        k.push(("CHAP_I", "77"));
        k.push(("CHAP_C", hex_c.as_str()));
    }
    (l.handle(&req(0, 1, true, &k), ctx), Some((alg, challenge)))
}

#[test]
fn chap_one_way_with_each_algorithm() {
    let ctx = chap_ctx(false);
    for (offer, want) in [
        ("5", 5),
        ("6", 6),
        ("7", 7),
        ("8", 8),
        ("8,7,6,5", 8),
        ("7,5", 7),
    ] {
        let (step, alg) = chap_login(&ctx, offer, "alice-secret-1", None);
        let LoginStep::Continue(r) = step else {
            panic!("CHAP_A={offer}: {step:?}")
        };
        assert!(r.transit, "CHAP_A={offer}");
        assert_eq!((r.csg, r.nsg), (0, 1));
        let (alg, challenge) = alg.unwrap();
        assert_eq!(alg.code(), want);
        assert!(challenge.len() >= alg.digest_len());
    }
}

#[test]
fn chap_wrong_secret_or_user_fails_with_authentication_failure() {
    let ctx = chap_ctx(false);
    let (step, _) = chap_login(&ctx, "5", "wrong", None);
    assert_eq!(failure(step), (2, 1));
    let (step, _) = chap_login(&ctx, "1,2", "alice-secret-1", None);
    assert_eq!(failure(step), (2, 1));
}

#[test]
fn chap_required_but_security_stage_skipped() {
    let mut k = identity("iqn.t:a");
    k.extend_from_slice(OPERATIONAL);
    assert_eq!(
        failure(login().handle(&req(1, 3, true, &k), &chap_ctx(false))),
        (2, 1)
    );
    let mut k = identity("iqn.t:a");
    k.push(("AuthMethod", "None"));
    assert_eq!(
        failure(login().handle(&req(0, 1, true, &k), &chap_ctx(false))),
        (2, 1)
    );
}

#[test]
fn mutual_chap() {
    let ctx = chap_ctx(true);
    let challenge = [9u8; 16];
    let (step, _) = chap_login(&ctx, "7", "alice-secret-1", Some((&challenge, "")));
    let LoginStep::Continue(r) = step else {
        panic!("{step:?}")
    };
    let k = keys(&r);
    assert_eq!(k.get("CHAP_N"), Some("target"));
    let got = chap::decode_binary(k.get("CHAP_R").unwrap()).unwrap();
    assert_eq!(
        got,
        ChapAlgorithm::Sha256.response(77, b"target-secret-2", &challenge)
    );

    // Mutual configured on the target but not asked by the initiator.
    let (step, _) = chap_login(&ctx, "5", "alice-secret-1", None);
    assert_eq!(failure(step), (2, 1));
}

#[test]
fn mutual_chap_refuses_reflected_challenge_and_shared_secret() {
    // Reflection: the initiator sends our own challenge back.
    let ctx = chap_ctx(true);
    let mut l = login();
    let mut k = identity("iqn.t:a");
    k.push(("AuthMethod", "CHAP"));
    l.handle(&req(0, 1, true, &k), &ctx);
    let LoginStep::Continue(r) = l.handle(&req(0, 1, false, &[("CHAP_A", "5")]), &ctx) else {
        panic!()
    };
    let k = keys(&r);
    let id: u8 = k.get("CHAP_I").unwrap().parse().unwrap();
    let c_hex = k.get("CHAP_C").unwrap().to_owned();
    let c = chap::decode_binary(&c_hex).unwrap();
    let resp = chap::encode_hex(&ChapAlgorithm::Md5.response(id, b"alice-secret-1", &c));
    let step = l.handle(
        &req(
            0,
            1,
            true,
            &[
                ("CHAP_N", "alice"),
                ("CHAP_R", &resp),
                ("CHAP_I", "1"),
                ("CHAP_C", &c_hex),
            ],
        ),
        &ctx,
    );
    assert_eq!(failure(step), (2, 1));

    // The same secret configured in both directions.
    let mut same = chap_ctx(true);
    same.auth.mutual = Some(Credential {
        user: "target".into(),
        secret: Secret::new("alice-secret-1"),
    });
    let (step, _) = chap_login(&same, "5", "alice-secret-1", Some((&[5u8; 16], "")));
    assert_eq!(failure(step), (2, 1));
}

#[test]
fn continue_bit_accumulates_text() {
    let mut l = login();
    let mut k = identity("iqn.t:a");
    k.extend_from_slice(OPERATIONAL);
    let full = req(1, 3, true, &k);
    let (a, b) = full.data.split_at(30);
    let mut first = full.clone();
    first.transit = false;
    first.cont = true;
    first.data = Bytes::copy_from_slice(a);
    let LoginStep::Continue(r) = l.handle(&first, &open_ctx()) else {
        panic!()
    };
    assert!(r.data.is_empty() && !r.transit);
    let mut second = full.clone();
    second.data = Bytes::copy_from_slice(b);
    assert!(matches!(
        l.handle(&second, &open_ctx()),
        LoginStep::Complete(..)
    ));
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let ctx = chap_ctx(true);
    let dbg = format!("{:?}", ctx.auth);
    assert!(
        !dbg.contains("alice-secret-1") && !dbg.contains("target-secret-2"),
        "{dbg}"
    );
}

#[test]
fn initiator_names_must_be_iscsi_names() {
    for ok in [
        "iqn.1993-08.org.debian:01:abc",
        "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-ls",
        "eui.02004567A425678D",
        "naa.52004567BA64678D",
        "IQN.2026-11.X:y",
    ] {
        assert!(is_iscsi_name(ok), "{ok}");
    }
    for bad in [
        "",
        "iqn.",
        "not a name",
        "iqn.2026-11.x:a b",
        "host1",
        &format!("iqn.{}", "a".repeat(230)),
    ] {
        assert!(!is_iscsi_name(bad), "{bad}");
    }
}
