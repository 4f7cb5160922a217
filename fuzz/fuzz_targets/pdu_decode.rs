//! PDU decoding: arbitrary bytes through the framer (with and without header and data
//! digests, under a MaxRecvDataSegmentLength taken from the input) and the PDU parser.
//! Every PDU that decodes is encoded again, framed again and decoded again, and must come
//! back equal; feeding the same bytes in pieces must give the same PDUs as feeding them
//! whole, and so must measuring each PDU and decoding it from a buffer of its own (as the
//! server receives large PDUs).
//!
//! Input: byte 0 selects the digests (bits 0-1), the data segment limit (bits 2-4; 7 means
//! "the next three bytes, big-endian") and how the stream is cut for the piecewise feed
//! (bits 5-7). The rest is the byte stream.
#![no_main]

use bytes::BytesMut;
use iscsi_proto::{
    FrameError,
    frame::{Digests, FrameDecoder, FrameEncoder},
    pdu::{BHS_LEN, Bhs, Pdu},
};
use libfuzzer_sys::fuzz_target;

/// At most this many PDUs are taken from one input.
const MAX_PDUS: usize = 64;

const LIMITS: [usize; 7] = [0, 1, 48, 512, 8192, 65_536, 262_144];

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, mut rest)) = data.split_first() else {
        return;
    };
    let digests = Digests {
        header: cfg & 1 != 0,
        data: cfg & 2 != 0,
    };
    let sel = usize::from((cfg >> 2) & 7);
    let max_data_segment = match LIMITS.get(sel) {
        Some(&l) => l,
        None => {
            if rest.len() < 3 {
                return;
            }
            let l =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            rest = &rest[3..];
            l
        }
    };
    let dec = FrameDecoder {
        digests,
        max_data_segment,
    };

    // Whole: every PDU the stream holds, up to the first framing error.
    let whole = decode_all(&dec, rest);

    // Piecewise: the same bytes arriving in pieces of a size taken from the input.
    let step = 1 + usize::from(cfg >> 5) * 7;
    let mut buf = BytesMut::new();
    let mut pieces = Vec::new();
    let mut fed = 0;
    'feed: while fed < rest.len() {
        let n = step.min(rest.len() - fed);
        buf.extend_from_slice(&rest[fed..fed + n]);
        fed += n;
        loop {
            if pieces.len() >= MAX_PDUS {
                break 'feed;
            }
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(f)) => pieces.push(Ok((f.bhs, f.ahs, f.data))),
                Ok(None) => {
                    assert_eq!(buf.len(), before, "an incomplete PDU consumed bytes");
                    break;
                }
                Err(e) => {
                    pieces.push(Err(e));
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(
        whole, pieces,
        "piecewise decoding differs from whole decoding"
    );

    // Each PDU measured by its header, then decoded from a buffer of its own.
    let mut own = Vec::new();
    let mut at = 0;
    while own.len() < MAX_PDUS {
        match dec.frame_len(&rest[at..]) {
            Ok(Some(total)) if rest.len() - at >= total => {
                let pdu = bytes::Bytes::copy_from_slice(&rest[at..at + total]);
                at += total;
                match dec.decode_whole(pdu) {
                    Ok(f) => own.push(Ok((f.bhs, f.ahs, f.data))),
                    Err(e) => {
                        own.push(Err(e));
                        break;
                    }
                }
            }
            Ok(_) => break,
            Err(e) => {
                own.push(Err(e));
                break;
            }
        }
    }
    assert_eq!(
        whole, own,
        "decoding from buffers of their own differs from whole decoding"
    );

    for item in &whole {
        let Ok((bhs, ahs, data)) = item else {
            continue;
        };
        // The framer's length checks.
        assert_eq!(bhs.total_ahs_len(), ahs.len());
        assert_eq!(bhs.data_segment_len(), data.len());
        assert!(data.len() <= max_data_segment);
        let Ok(pdu) = Pdu::parse(bhs, ahs, data.clone()) else {
            continue;
        };
        assert_eq!(pdu.opcode(), bhs.opcode());
        round_trip(&pdu, digests, max_data_segment);
    }

    // The parser on its own, without the framer: header, then everything else as AHS or
    // data.
    if rest.len() >= BHS_LEN {
        let (h, tail) = rest.split_at(BHS_LEN);
        let Ok((_, bhs)) = Bhs::parse(h) else {
            panic!("a 48-byte header did not parse");
        };
        let cut = bhs.total_ahs_len().min(tail.len());
        let (ahs, body) = tail.split_at(cut);
        if let Ok(pdu) = Pdu::parse(&bhs, ahs, bytes::Bytes::copy_from_slice(body)) {
            // Data segments beyond 2^24 - 1 bytes cannot be framed.
            if body.len() < 1 << 24 {
                round_trip(&pdu, digests, usize::MAX);
            }
        }
    }
});

type Decoded = Result<(Bhs, bytes::Bytes, bytes::Bytes), FrameError>;

fn decode_all(dec: &FrameDecoder, input: &[u8]) -> Vec<Decoded> {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while out.len() < MAX_PDUS {
        match dec.decode(&mut buf) {
            Ok(Some(f)) => out.push(Ok((f.bhs, f.ahs, f.data))),
            Ok(None) => break,
            Err(e) => {
                out.push(Err(e));
                break;
            }
        }
    }
    out
}

/// Encode, frame, decode and parse again: the same PDU must come back.
fn round_trip(pdu: &Pdu, digests: Digests, max_data_segment: usize) {
    let (bhs, ahs, data) = pdu.encode();
    let again = Pdu::parse(&bhs, &ahs, data.clone()).expect("an encoded PDU parses");
    assert_eq!(&again, pdu, "encode/parse round trip");

    let wire = FrameEncoder::new(digests).encode(pdu).to_bytes();
    let dec = FrameDecoder {
        digests,
        max_data_segment: max_data_segment.max(data.len()),
    };
    let mut buf = BytesMut::from(&wire[..]);
    let frame = dec
        .decode(&mut buf)
        .expect("an encoded PDU frames")
        .expect("an encoded PDU is complete");
    assert!(buf.is_empty(), "trailing bytes after an encoded PDU");
    assert_eq!(frame.bhs, bhs);
    let back = frame.pdu().expect("a framed PDU parses");
    assert_eq!(&back, pdu, "frame round trip");
}
