//! The key-negotiation tables: each result function with the values open-iscsi and libiscsi
//! send (see shared/spec/open-iscsi-notes.md).

use super::*;

fn negotiate(limits: TargetLimits, t: SessionType, offer: &[(&str, &str)]) -> (TextKeys, Params) {
    let mut n = Negotiator::new(limits, t);
    let mut answer = TextKeys::default();
    for (k, v) in offer {
        n.offer(k, v, &mut answer).unwrap();
    }
    let params = n.finish().unwrap();
    (answer, params)
}

const OPEN_ISCSI_NORMAL: &[(&str, &str)] = &[
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

#[test]
fn open_iscsi_normal_login() {
    let (answer, p) = negotiate(
        TargetLimits::default(),
        SessionType::Normal,
        OPEN_ISCSI_NORMAL,
    );
    let expect: Vec<(&str, &str)> = vec![
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
    ];
    assert_eq!(answer.iter().collect::<Vec<_>>(), expect);
    assert_eq!(p.max_xmit_data_segment_length, 262_144);
    assert!(!p.initial_r2t);
    assert!(p.immediate_data);
}

#[test]
fn result_functions() {
    let limits = TargetLimits {
        max_burst_length: 1 << 20,
        first_burst_length: 65536,
        max_outstanding_r2t: 4,
        initial_r2t: true,
        immediate_data: false,
        default_time2wait: 5,
        default_time2retain: 10,
        ..TargetLimits::default()
    };
    let (a, p) = negotiate(
        limits,
        SessionType::Normal,
        &[
            ("InitialR2T", "No"),           // OR with our Yes -> Yes
            ("ImmediateData", "Yes"),       // AND with our No -> No
            ("MaxBurstLength", "16776192"), // min -> 1 MiB
            ("FirstBurstLength", "262144"), // min -> 65536
            ("MaxOutstandingR2T", "16"),    // min -> 4
            ("DefaultTime2Wait", "2"),      // max -> 5
            ("DefaultTime2Retain", "20"),   // min -> 10
            ("ErrorRecoveryLevel", "2"),    // min -> 0
            ("MaxConnections", "8"),        // min -> 1
        ],
    );
    assert_eq!(a.get("InitialR2T"), Some("Yes"));
    assert_eq!(a.get("ImmediateData"), Some("No"));
    assert_eq!(a.get("MaxBurstLength"), Some("1048576"));
    assert_eq!(a.get("FirstBurstLength"), Some("65536"));
    assert_eq!(a.get("MaxOutstandingR2T"), Some("4"));
    assert_eq!(a.get("DefaultTime2Wait"), Some("5"));
    assert_eq!(a.get("DefaultTime2Retain"), Some("10"));
    assert_eq!(a.get("ErrorRecoveryLevel"), Some("0"));
    assert_eq!(a.get("MaxConnections"), Some("1"));
    assert_eq!(
        (
            p.max_burst_length,
            p.first_burst_length,
            p.max_outstanding_r2t
        ),
        (1 << 20, 65536, 4)
    );
}

#[test]
fn digests_take_the_initiators_first_acceptable_choice() {
    let (a, p) = negotiate(
        TargetLimits::default(),
        SessionType::Normal,
        &[
            ("HeaderDigest", "CRC32C,None"),
            ("DataDigest", "None,CRC32C"),
        ],
    );
    assert_eq!(a.get("HeaderDigest"), Some("CRC32C"));
    assert_eq!(a.get("DataDigest"), Some("None"));
    assert!(p.header_digest && !p.data_digest);

    let required = TargetLimits {
        digest_policy: DigestPolicy::Require,
        ..TargetLimits::default()
    };
    let (a, p) = negotiate(
        required,
        SessionType::Normal,
        &[("HeaderDigest", "None,CRC32C")],
    );
    assert_eq!(a.get("HeaderDigest"), Some("CRC32C"));
    assert!(p.header_digest);

    let refused = TargetLimits {
        digest_policy: DigestPolicy::Refuse,
        ..TargetLimits::default()
    };
    let mut n = Negotiator::new(refused, SessionType::Normal);
    let err = n
        .offer("DataDigest", "CRC32C", &mut TextKeys::default())
        .unwrap_err();
    assert_eq!(err, NegotiationError::NoCommonValue("DataDigest".into()));
}

#[test]
fn unknown_invalid_and_irrelevant_keys() {
    let (a, _) = negotiate(
        TargetLimits::default(),
        SessionType::Normal,
        &[
            ("X-com.example.Foo", "1"),
            ("MaxBurstLength", "100"),     // below 512: Reject
            ("InitialR2T", "Maybe"),       // not a boolean: Reject
            ("MaxConnections", "0x10000"), // above 65535: Reject
            ("DefaultTime2Wait", "0x3"),   // hex accepted
            ("IFMarkInt", "2048~8192"),
            ("ErrorRecoveryLevel", "NotUnderstood"), // an answer, not an offer
        ],
    );
    assert_eq!(
        a.iter().collect::<Vec<_>>(),
        vec![
            ("X-com.example.Foo", "NotUnderstood"),
            ("MaxBurstLength", "Reject"),
            ("InitialR2T", "Reject"),
            ("MaxConnections", "Reject"),
            ("DefaultTime2Wait", "3"),
            ("IFMarkInt", "Irrelevant"),
        ]
    );
}

#[test]
fn discovery_session_marks_session_keys_irrelevant() {
    let (a, p) = negotiate(
        TargetLimits::default(),
        SessionType::Discovery,
        &[
            ("MaxBurstLength", "262144"),
            ("ImmediateData", "Yes"),
            ("MaxRecvDataSegmentLength", "32768"),
        ],
    );
    assert_eq!(a.get("MaxBurstLength"), Some("Irrelevant"));
    assert_eq!(a.get("ImmediateData"), Some("Irrelevant"));
    assert_eq!(a.get("MaxRecvDataSegmentLength"), None);
    assert_eq!(p.max_xmit_data_segment_length, 32768);
}

#[test]
fn renegotiation_with_a_different_value_fails() {
    let mut n = Negotiator::new(TargetLimits::default(), SessionType::Normal);
    let mut a = TextKeys::default();
    n.offer("MaxBurstLength", "65536", &mut a).unwrap();
    n.offer("MaxBurstLength", "65536", &mut a).unwrap();
    assert_eq!(
        n.offer("MaxBurstLength", "131072", &mut a),
        Err(NegotiationError::Renegotiated("MaxBurstLength".into()))
    );
}

#[test]
fn first_burst_above_max_burst_fails() {
    let mut n = Negotiator::new(TargetLimits::default(), SessionType::Normal);
    let mut a = TextKeys::default();
    n.offer("MaxBurstLength", "65536", &mut a).unwrap();
    n.offer("FirstBurstLength", "262144", &mut a).unwrap();
    assert_eq!(n.finish(), Err(NegotiationError::FirstBurstExceedsMaxBurst));
}

#[test]
fn numeric_parsing() {
    assert_eq!(numeric("8192", 512, 16_777_215), Some(8192));
    assert_eq!(numeric("0x2000", 512, 16_777_215), Some(8192));
    assert_eq!(numeric("511", 512, 16_777_215), None);
    assert_eq!(numeric("", 0, 10), None);
    assert_eq!(numeric("+5", 0, 10), None);
    assert_eq!(numeric("99999999999999999999", 0, u32::MAX), None);
}
