//! The target-side login state machine driven by a sequence of Login Requests built from the
//! input, under an authentication policy the input picks (none, one-way CHAP, mutual CHAP).
//! Every request must get a response; a failure ends the login (the server closes the
//! connection) and so does completion (full feature phase). A login to a target or a
//! discovery session that requires CHAP must never complete without an authenticated CHAP
//! user, and every response must be a PDU that encodes and decodes.
//!
//! Input:
//! - byte 0: bits 0-1 the target's policy (0 none, 1 one-way CHAP, 2 mutual CHAP, 3 mutual
//!   CHAP with the target secret equal to the initiator's, which must never authenticate),
//!   bit 2 discovery requires CHAP too, bits 3-4 the digest policy, bit 5 small limits;
//! - then records, each starting with a tag byte:
//!   - tag & 3 == 0: a wire PDU: two bytes of length (big-endian), then that many bytes
//!     framed with the login framer (no digests, 8192-byte data segments). PDUs other than
//!     Login Requests are skipped (the connection code rejects them);
//!   - otherwise a request built field by field: a flags byte (bit 0 T, bit 1 C, bits 2-3
//!     CSG, bits 4-5 NSG, bit 6 append a correct CHAP_N/CHAP_R answering the last challenge
//!     (and CHAP_I/CHAP_C for mutual CHAP), bit 7 change ISID/TSIH/CID/version), two
//!     bytes of text length and the text (key=value\0...).
#![no_main]

use bytes::{Bytes, BytesMut};
use iscsi_proto::{
    chap::{self, ChapAlgorithm},
    frame::{FrameDecoder, FrameEncoder, LOGIN_MAX_DATA_SEGMENT},
    login::{
        AuthPolicy, Credential, Login, LoginConfig, LoginContext, LoginStep, Secret, TargetLookup,
    },
    negotiate::{DigestPolicy, SessionType, TargetLimits},
    pdu::{LoginRequest, LoginResponse, Pdu},
    text::TextKeys,
};
use libfuzzer_sys::fuzz_target;

const MAX_REQUESTS: usize = 32;
const USER: &str = "alice";
const USER_SECRET: &[u8] = b"alice-secret-0001";
const TARGET_USER: &str = "iqn.t:target";
const TARGET_SECRET: &[u8] = b"target-secret-0002";

struct Ctx {
    target: AuthPolicy,
    discovery: AuthPolicy,
}

impl LoginContext for Ctx {
    fn lookup_target(&self, target: &str, initiator: &str) -> TargetLookup {
        if target.contains("missing") {
            TargetLookup::NotFound
        } else if initiator.contains("denied") {
            TargetLookup::NotAuthorized
        } else {
            TargetLookup::Found {
                alias: target.contains("alias").then(|| "disk-a".to_owned()),
                auth: self.target.clone(),
            }
        }
    }

    fn discovery_auth(&self, _initiator: &str) -> AuthPolicy {
        self.discovery.clone()
    }
}

fn policy(sel: u8) -> AuthPolicy {
    let user = Credential {
        user: USER.into(),
        secret: Secret::new(USER_SECRET),
    };
    match sel & 3 {
        0 => AuthPolicy::default(),
        1 => AuthPolicy {
            users: vec![user],
            mutual: None,
        },
        2 => AuthPolicy {
            users: vec![user],
            mutual: Some(Credential {
                user: TARGET_USER.into(),
                secret: Secret::new(TARGET_SECRET),
            }),
        },
        _ => AuthPolicy {
            users: vec![user],
            mutual: Some(Credential {
                user: TARGET_USER.into(),
                secret: Secret::new(USER_SECRET),
            }),
        },
    }
}

/// A cursor over the input.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<usize> {
        Some((usize::from(self.byte()?) << 8) | usize::from(self.byte()?))
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// The last CHAP challenge the target sent.
#[derive(Default)]
struct Challenge {
    alg: Option<ChapAlgorithm>,
    id: Option<u8>,
    challenge: Option<Vec<u8>>,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(cfg) = input.byte() else {
        return;
    };
    let target_policy = policy(cfg);
    let discovery_policy = if cfg & 4 != 0 {
        target_policy.clone()
    } else {
        AuthPolicy::default()
    };
    let mut limits = TargetLimits {
        digest_policy: match (cfg >> 3) & 3 {
            1 => DigestPolicy::Require,
            2 => DigestPolicy::Refuse,
            _ => DigestPolicy::Allow,
        },
        ..TargetLimits::default()
    };
    if cfg & 0x20 != 0 {
        limits.max_recv_data_segment_length = 512;
        limits.max_burst_length = 512;
        limits.first_burst_length = 512;
        limits.max_outstanding_r2t = 1;
        limits.initial_r2t = true;
        limits.immediate_data = false;
    }
    let ctx = Ctx {
        target: target_policy,
        discovery: discovery_policy,
    };
    let mut login = Login::new(LoginConfig {
        limits,
        portal_group_tag: 1,
        queue_depth: u32::from(cfg >> 6),
    });

    // Built requests carry the ISID, TSIH, CID and ITT of the previous request.
    let mut base = LoginRequest {
        isid: [0x80, 0x12, 0x34, 0x56, 0x78, 0x9a],
        itt: 1,
        ..Default::default()
    };
    let mut challenge = Challenge::default();
    let mut requests = 0;
    while requests < MAX_REQUESTS {
        let Some(tag) = input.byte() else {
            break;
        };
        let req = if tag & 3 == 0 {
            let Some(len) = input.u16() else {
                break;
            };
            let wire = input.take(len);
            let mut buf = BytesMut::from(wire);
            let Ok(Some(frame)) = FrameDecoder::default().decode(&mut buf) else {
                continue;
            };
            let Ok(Pdu::LoginRequest(req)) = frame.pdu() else {
                continue;
            };
            req
        } else {
            let Some(flags) = input.byte() else {
                break;
            };
            let Some(len) = input.u16() else {
                break;
            };
            let mut text = input.take(len).to_vec();
            if flags & 0x40 != 0 {
                answer_challenge(&challenge, cfg, &mut text);
            }
            let mut req = LoginRequest {
                transit: flags & 1 != 0,
                cont: flags & 2 != 0,
                csg: (flags >> 2) & 3,
                nsg: (flags >> 4) & 3,
                cmd_sn: requests as u32,
                data: Bytes::from(text),
                ..base.clone()
            };
            if flags & 0x80 != 0 {
                let b = input.byte().unwrap_or(0);
                match b & 3 {
                    0 => req.isid[5] ^= b,
                    1 => req.tsih = u16::from(b),
                    2 => req.cid = u16::from(b),
                    _ => {
                        req.version_max = b >> 2;
                        req.version_min = b >> 4;
                    }
                }
            }
            req
        };
        requests += 1;
        base.isid = req.isid;
        base.tsih = req.tsih;
        base.cid = req.cid;
        base.itt = req.itt;
        let step = login.handle(&req, &ctx);
        match step {
            LoginStep::Continue(resp) => {
                check_response(&resp, &req);
                assert_eq!(resp.status_class, 0, "a continued login succeeds");
                if let Ok(keys) = TextKeys::parse(&resp.data) {
                    note_challenge(&keys, &mut challenge);
                }
            }
            LoginStep::Fail(resp, status) => {
                check_response(&resp, &req);
                assert_ne!(status.class, 0, "a failed login has a failure status");
                assert_eq!(
                    (resp.status_class, resp.status_detail),
                    (status.class, status.detail)
                );
                assert!(!resp.transit);
                return;
            }
            LoginStep::Complete(resp, outcome) => {
                check_response(&resp, &req);
                assert_eq!(resp.status_class, 0);
                assert!(
                    resp.transit && resp.nsg == 3,
                    "completion moves to full feature phase"
                );
                let required = match outcome.session_type {
                    SessionType::Normal => ctx.target.required(),
                    SessionType::Discovery => ctx.discovery.required(),
                };
                if required {
                    assert_eq!(
                        outcome.chap_user.as_deref(),
                        Some(USER),
                        "a login that requires CHAP completed without it"
                    );
                    assert!(
                        cfg & 3 != 3,
                        "mutual CHAP with one secret both ways completed"
                    );
                }
                if outcome.session_type == SessionType::Normal {
                    assert!(
                        outcome.target_name.is_some(),
                        "a normal session names its target"
                    );
                }
                let p = &outcome.params;
                assert!(p.max_xmit_data_segment_length >= 512);
                assert!(p.max_connections == 1);
                if outcome.session_type == SessionType::Normal
                    && (!p.initial_r2t || p.immediate_data)
                {
                    assert!(p.first_burst_length <= p.max_burst_length);
                }
                return;
            }
        }
    }
});

/// A response must encode, fit the login data segment limit and decode to itself.
fn check_response(resp: &LoginResponse, req: &LoginRequest) {
    assert_eq!(resp.itt, req.itt);
    assert!(
        resp.data.len() <= LOGIN_MAX_DATA_SEGMENT,
        "a login response of {} bytes exceeds the login data segment limit",
        resp.data.len()
    );
    if !resp.data.is_empty() {
        TextKeys::parse(&resp.data).expect("the target's own text parses");
    }
    let pdu = Pdu::LoginResponse(resp.clone());
    let wire = FrameEncoder::default().encode(&pdu).to_bytes();
    let mut buf = BytesMut::from(&wire[..]);
    let frame = FrameDecoder::default()
        .decode(&mut buf)
        .expect("a login response frames")
        .expect("a login response is complete");
    assert_eq!(frame.pdu().expect("a login response parses"), pdu);
}

fn note_challenge(keys: &TextKeys, c: &mut Challenge) {
    if let Some(a) = keys.get("CHAP_A").and_then(|v| v.parse::<u32>().ok()) {
        c.alg = ChapAlgorithm::from_code(a);
    }
    if let Some(i) = keys.get("CHAP_I").and_then(|v| v.parse::<u8>().ok()) {
        c.id = Some(i);
    }
    if let Some(ch) = keys.get("CHAP_C").and_then(chap::decode_binary) {
        c.challenge = Some(ch);
    }
}

/// Append the CHAP answer a legitimate initiator would send.
fn answer_challenge(c: &Challenge, cfg: u8, text: &mut Vec<u8>) {
    let (Some(alg), Some(id), Some(ch)) = (c.alg, c.id, c.challenge.as_ref()) else {
        return;
    };
    let r = alg.response(id, USER_SECRET, ch);
    if !text.is_empty() && text.last() != Some(&0) {
        text.push(0);
    }
    text.extend_from_slice(format!("CHAP_N={USER}\0CHAP_R={}\0", chap::encode_hex(&r)).as_bytes());
    if cfg & 3 >= 2 {
        text.extend_from_slice(b"CHAP_I=77\0CHAP_C=0x0123456789abcdef0123456789abcdef\0");
    }
}
