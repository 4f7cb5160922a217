//! Text key segments (key=value\0...) and the negotiation result functions.
//!
//! Input: byte 0 picks the target's limits, the session type and the digest policy; the rest
//! is a text segment. What parses must encode and parse back to itself; every pair is then
//! offered to a negotiator, whose answers must themselves be valid text, and the value
//! helpers (numbers, binary values, CHAP algorithm lists) run on every value.
#![no_main]

use iscsi_proto::{
    chap,
    negotiate::{self, DigestPolicy, Negotiator, SessionType, TargetLimits},
    text::{MAX_KEY_LEN, MAX_TEXT_LEN, MAX_VALUE_LEN, TextKeys},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, text)) = data.split_first() else {
        return;
    };
    let Ok(keys) = TextKeys::parse(text) else {
        return;
    };
    assert!(text.len() <= MAX_TEXT_LEN);
    for (k, v) in keys.iter() {
        assert!(!k.is_empty() && k.len() <= MAX_KEY_LEN && !k.contains(['=', '\0']));
        assert!(v.len() <= MAX_VALUE_LEN && !v.contains('\0'));
    }
    let encoded = keys.encode();
    assert_eq!(
        TextKeys::parse(&encoded).expect("encoded text parses"),
        keys,
        "text round trip"
    );

    let mut limits = TargetLimits {
        digest_policy: match cfg & 3 {
            1 => DigestPolicy::Require,
            2 => DigestPolicy::Refuse,
            _ => DigestPolicy::Allow,
        },
        initial_r2t: cfg & 4 != 0,
        immediate_data: cfg & 8 == 0,
        ..TargetLimits::default()
    };
    if cfg & 0x10 != 0 {
        limits.max_burst_length = 512;
        limits.first_burst_length = 65_536;
        limits.max_outstanding_r2t = 1;
        limits.default_time2retain = 20;
    }
    let session = if cfg & 0x20 != 0 {
        SessionType::Discovery
    } else {
        SessionType::Normal
    };
    let mut n = Negotiator::new(limits.clone(), session);
    let mut answer = TextKeys::default();
    let mut failed = false;
    for (k, v) in keys.iter() {
        if n.offer(k, v, &mut answer).is_err() {
            failed = true;
            break;
        }
        // The value helpers never panic, and numbers stay within their range.
        if let Some(x) = negotiate::numeric(v, 512, 16_777_215) {
            assert!((512..=16_777_215).contains(&x));
        }
        let _ = chap::decode_binary(v);
        let _ = chap::select_algorithm(v);
    }
    // Answers are text the initiator can parse.
    let wire = answer.encode();
    if wire.len() <= MAX_TEXT_LEN {
        assert_eq!(
            TextKeys::parse(&wire).expect("the negotiator's answer parses"),
            answer
        );
    }
    if !failed && let Ok(p) = n.finish() {
        assert!(p.max_burst_length <= limits.max_burst_length.max(262_144));
        assert!(p.max_outstanding_r2t <= limits.max_outstanding_r2t.max(1));
        assert!(p.max_xmit_data_segment_length >= 512);
        assert!(p.max_xmit_data_segment_length <= 16_777_215);
        assert_eq!(
            p.max_recv_data_segment_length,
            limits.max_recv_data_segment_length
        );
        assert_eq!(p.error_recovery_level, 0);
        if session == SessionType::Normal && (!p.initial_r2t || p.immediate_data) {
            assert!(p.first_burst_length <= p.max_burst_length);
        }
        if limits.digest_policy == DigestPolicy::Refuse {
            assert!(!p.header_digest && !p.data_digest);
        }
    }
});
