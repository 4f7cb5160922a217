//! Framing of PDUs on a byte stream: header and data digests (CRC32C), padding, and the length
//! limits checked before a body is read.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    error::FrameError,
    pdu::{BHS_LEN, Bhs, Pdu},
};

/// Length of a CRC32C digest on the wire.
pub const DIGEST_LEN: usize = 4;

/// The MaxRecvDataSegmentLength in force before one is negotiated, and for every login PDU
/// (RFC 7143 section 13.12).
pub const LOGIN_MAX_DATA_SEGMENT: usize = 8192;

/// Which digests are in force on a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    /// HeaderDigest=CRC32C.
    pub header: bool,
    /// DataDigest=CRC32C.
    pub data: bool,
}

/// One framed PDU as received: header, AHS and data segment (padding and digests stripped;
/// all three share the receive buffer, nothing is copied).
#[derive(Clone, Debug)]
pub struct Frame {
    /// The Basic Header Segment.
    pub bhs: Bhs,
    /// The AHS bytes (TotalAHSLength).
    pub ahs: Bytes,
    /// The data segment without padding.
    pub data: Bytes,
}

impl Frame {
    /// Decode the PDU this frame carries.
    pub fn pdu(&self) -> Result<Pdu, crate::error::PduError> {
        Pdu::parse(&self.bhs, &self.ahs, self.data.clone())
    }
}

/// Cuts PDUs out of a receive buffer.
#[derive(Clone, Copy, Debug)]
pub struct FrameDecoder {
    /// Digests in force.
    pub digests: Digests,
    /// The largest data segment accepted (our declared MaxRecvDataSegmentLength).
    pub max_data_segment: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self {
            digests: Digests::default(),
            max_data_segment: LOGIN_MAX_DATA_SEGMENT,
        }
    }
}

/// What [`FrameDecoder::decode_ready`] found at the front of a buffer.
#[derive(Debug)]
pub enum Ready {
    /// A whole PDU, taken from the buffer.
    Frame(Frame),
    /// Not a whole PDU yet: its total length once its header is in (`None` before).
    Incomplete(Option<usize>),
}

impl FrameDecoder {
    /// Take one PDU from the front of `buf`. `Ok(None)` means more bytes are needed (and
    /// `buf` has been reserved for them). Lengths are checked before the body is awaited.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some((bhs, l)) = self.measure(buf)? else {
            return Ok(None);
        };
        if buf.len() < l.total {
            buf.reserve(l.total - buf.len());
            return Ok(None);
        }
        self.cut(bhs, &l, buf.split_to(l.total).freeze()).map(Some)
    }

    /// [`FrameDecoder::decode`] without reserving room for an incomplete PDU: the caller
    /// decides where its body goes, knowing its length once the header is in.
    pub fn decode_ready(&self, buf: &mut BytesMut) -> Result<Ready, FrameError> {
        match self.measure(buf)? {
            Some((bhs, l)) if buf.len() >= l.total => self
                .cut(bhs, &l, buf.split_to(l.total).freeze())
                .map(Ready::Frame),
            Some((_, l)) => Ok(Ready::Incomplete(Some(l.total))),
            None => Ok(Ready::Incomplete(None)),
        }
    }

    /// The length of the PDU that starts `buf` (header, data segment, padding and digests),
    /// once its BHS is there; its data segment length is checked against the limit.
    pub fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        Ok(self.measure(buf)?.map(|(_, l)| l.total))
    }

    /// Decode exactly one whole PDU (as measured by [`FrameDecoder::frame_len`]), received
    /// into a buffer of its own: its digests are checked, and the frame's parts are slices
    /// of `pdu`.
    pub fn decode_whole(&self, pdu: Bytes) -> Result<Frame, FrameError> {
        let len = pdu.len();
        let Some((bhs, l)) = self.measure(&pdu)? else {
            return Err(FrameError::WrongLength { len, want: 0 });
        };
        if len != l.total {
            return Err(FrameError::WrongLength { len, want: l.total });
        }
        self.cut(bhs, &l, pdu)
    }

    /// The header that starts `buf` and where the parts of its PDU lie, once the BHS is
    /// there; the data segment length is checked against the limit.
    fn measure(&self, buf: &[u8]) -> Result<Option<(Bhs, Lengths)>, FrameError> {
        let Ok((_, bhs)) = Bhs::parse(buf) else {
            return Ok(None);
        };
        let dsl = bhs.data_segment_len();
        if dsl > self.max_data_segment {
            return Err(FrameError::DataSegmentTooLong {
                bhs,
                len: dsl,
                max: self.max_data_segment,
            });
        }
        let l = self.lengths(&bhs);
        Ok(Some((bhs, l)))
    }

    /// One whole PDU (`pdu` is exactly `l.total` bytes): digests checked, parts sliced.
    fn cut(&self, bhs: Bhs, l: &Lengths, pdu: Bytes) -> Result<Frame, FrameError> {
        if l.header_digest {
            let want = crc32c::crc32c(&pdu[..l.header_end]);
            if read_digest(&pdu[l.header_end..l.header_end + 4]) != want {
                return Err(FrameError::HeaderDigest);
            }
        }
        if l.data_digest {
            let end = l.data_start + l.padded;
            let want = crc32c::crc32c(&pdu[l.data_start..end]);
            if read_digest(&pdu[end..]) != want {
                return Err(FrameError::DataDigest { bhs });
            }
        }
        Ok(Frame {
            bhs,
            ahs: pdu.slice(BHS_LEN..l.header_end),
            data: pdu.slice(l.data_start..l.data_start + l.dsl),
        })
    }

    fn lengths(&self, bhs: &Bhs) -> Lengths {
        let header_end = BHS_LEN + bhs.total_ahs_len();
        let dsl = bhs.data_segment_len();
        let header_digest = self.digests.header;
        let data_digest = self.digests.data && dsl > 0;
        let data_start = header_end + if header_digest { DIGEST_LEN } else { 0 };
        let padded = pad_len(dsl) + dsl;
        Lengths {
            header_end,
            header_digest,
            data_start,
            dsl,
            padded,
            data_digest,
            total: data_start + padded + if data_digest { DIGEST_LEN } else { 0 },
        }
    }
}

/// Where the parts of one PDU lie.
struct Lengths {
    /// End of the BHS and AHS.
    header_end: usize,
    header_digest: bool,
    /// Start of the data segment (after the header digest).
    data_start: usize,
    /// Data segment length, unpadded.
    dsl: usize,
    /// Padded data segment length.
    padded: usize,
    data_digest: bool,
    total: usize,
}

/// The CRC32C value goes on the wire least significant byte first (RFC 3720 appendix B.4:
/// 32 zero bytes give the bytes `aa 36 91 8a`).
fn read_digest(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Padding bytes needed after a data segment of `len` bytes.
pub fn pad_len(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// A PDU ready for a vectored write: header (BHS, AHS, header digest), the unpadded data
/// segment, and a trailer (padding and data digest).
#[derive(Clone, Debug, Default)]
pub struct OutFrame {
    /// BHS + AHS + header digest.
    pub header: Bytes,
    /// The data segment.
    pub data: Bytes,
    /// Padding and data digest (may be empty).
    pub trailer: Bytes,
}

impl OutFrame {
    /// Total bytes on the wire.
    pub fn len(&self) -> usize {
        self.header.len() + self.data.len() + self.trailer.len()
    }

    /// Whether the frame is empty (never true for a real PDU).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole frame as one buffer (for tests and the login phase).
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.len());
        b.extend_from_slice(&self.header);
        b.extend_from_slice(&self.data);
        b.extend_from_slice(&self.trailer);
        b.freeze()
    }
}

/// Builds [`OutFrame`]s, carving headers out of one scratch buffer so that sending a PDU does
/// not allocate per PDU.
#[derive(Debug)]
pub struct FrameEncoder {
    /// Digests in force.
    pub digests: Digests,
    scratch: BytesMut,
}

/// Scratch is refilled in chunks of this size; a header takes 48 to about 300 bytes.
const SCRATCH_CHUNK: usize = 64 * 1024;

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new(Digests::default())
    }
}

impl FrameEncoder {
    /// An encoder with the given digests.
    pub fn new(digests: Digests) -> Self {
        Self {
            digests,
            scratch: BytesMut::with_capacity(SCRATCH_CHUNK),
        }
    }

    /// Encode a PDU.
    pub fn encode(&mut self, pdu: &Pdu) -> OutFrame {
        let (bhs, ahs, data) = pdu.encode();
        self.encode_parts(&bhs, &ahs, data)
    }

    /// Encode from an already built header, AHS and data.
    pub fn encode_parts(&mut self, bhs: &Bhs, ahs: &[u8], data: Bytes) -> OutFrame {
        if self.scratch.capacity() < 512 {
            self.scratch.reserve(SCRATCH_CHUNK);
        }
        let start = self.scratch.len();
        self.scratch.put_slice(&bhs.0);
        self.scratch.put_slice(ahs);
        if self.digests.header {
            let crc = crc32c::crc32c(&self.scratch[start..]);
            self.scratch.put_u32_le(crc);
        }
        let header = self.scratch.split().freeze();
        let pad = pad_len(data.len());
        let data_digest = self.digests.data && !data.is_empty();
        let trailer = if pad == 0 && !data_digest {
            Bytes::new()
        } else {
            self.scratch.put_bytes(0, pad);
            if data_digest {
                let crc = crc32c::crc32c_append(crc32c::crc32c(&data), &[0u8; 3][..pad]);
                self.scratch.put_u32_le(crc);
            }
            self.scratch.split().freeze()
        };
        OutFrame {
            header,
            data,
            trailer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{NopOut, ScsiCommand};

    fn nop(data: &'static [u8]) -> Pdu {
        Pdu::NopOut(NopOut {
            immediate: true,
            itt: 7,
            ttt: 0xffff_ffff,
            cmd_sn: 3,
            data: Bytes::from_static(data),
            ..Default::default()
        })
    }

    #[test]
    fn round_trip_with_and_without_digests() {
        for digests in [
            Digests::default(),
            Digests {
                header: true,
                data: false,
            },
            Digests {
                header: true,
                data: true,
            },
            Digests {
                header: false,
                data: true,
            },
        ] {
            let mut enc = FrameEncoder::new(digests);
            let pdu = nop(b"hello");
            let wire = enc.encode(&pdu).to_bytes();
            let expect =
                48 + 8 + if digests.header { 4 } else { 0 } + if digests.data { 4 } else { 0 };
            assert_eq!(wire.len(), expect);
            let dec = FrameDecoder {
                digests,
                max_data_segment: 8192,
            };
            let mut buf = BytesMut::from(&wire[..]);
            let frame = dec.decode(&mut buf).unwrap().unwrap();
            assert!(buf.is_empty());
            assert_eq!(frame.pdu().unwrap(), pdu);
        }
    }

    #[test]
    fn truncated_input_asks_for_more() {
        let mut enc = FrameEncoder::default();
        let wire = enc.encode(&nop(b"0123456789")).to_bytes();
        let dec = FrameDecoder::default();
        for cut in [0, 1, 47, 48, 57, 59] {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert!(
                matches!(dec.decode_ready(&mut buf).unwrap(), Ready::Incomplete(_)),
                "cut at {cut}"
            );
            assert!(dec.decode(&mut buf).unwrap().is_none(), "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
        let mut whole = BytesMut::from(&wire[..]);
        assert!(matches!(
            dec.decode_ready(&mut whole).unwrap(),
            Ready::Frame(_)
        ));
        assert!(whole.is_empty());
    }

    #[test]
    fn oversized_data_segment_is_refused_before_the_body_arrives() {
        let mut hdr = [0u8; 48];
        hdr[0] = 0x01;
        hdr[5] = 0x01; // 65536 bytes
        let mut buf = BytesMut::from(&hdr[..]);
        let dec = FrameDecoder {
            digests: Digests::default(),
            max_data_segment: 8192,
        };
        match dec.decode(&mut buf) {
            Err(FrameError::DataSegmentTooLong {
                len: 65536,
                max: 8192,
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn corrupted_digests_are_detected() {
        let digests = Digests {
            header: true,
            data: true,
        };
        let mut enc = FrameEncoder::new(digests);
        let wire = enc.encode(&nop(b"abcdefg")).to_bytes();
        let dec = FrameDecoder {
            digests,
            max_data_segment: 8192,
        };

        let mut bad_header = BytesMut::from(&wire[..]);
        bad_header[20] ^= 1;
        assert_eq!(
            dec.decode(&mut bad_header).unwrap_err(),
            FrameError::HeaderDigest
        );

        let mut bad_data = BytesMut::from(&wire[..]);
        bad_data[53] ^= 1;
        assert!(matches!(
            dec.decode(&mut bad_data),
            Err(FrameError::DataDigest { .. })
        ));
    }

    #[test]
    fn a_whole_pdu_received_into_its_own_buffer_decodes_alike() {
        let data: Vec<u8> = (0..70_001u32).map(|x| (x % 251) as u8).collect();
        for digests in [
            Digests::default(),
            Digests {
                header: true,
                data: true,
            },
        ] {
            let mut enc = FrameEncoder::new(digests);
            let pdu = Pdu::NopOut(NopOut {
                immediate: true,
                itt: 9,
                ttt: 0xffff_ffff,
                data: Bytes::from(data.clone()),
                ..Default::default()
            });
            let wire = enc.encode(&pdu).to_bytes();
            let dec = FrameDecoder {
                digests,
                max_data_segment: 1 << 20,
            };
            assert_eq!(
                dec.frame_len(&wire[..47]).unwrap(),
                None,
                "no whole BHS yet"
            );
            assert_eq!(dec.frame_len(&wire[..48]).unwrap(), Some(wire.len()));
            let frame = dec.decode_whole(wire.clone()).unwrap();
            assert_eq!(frame.pdu().unwrap(), pdu);
            assert_eq!(
                dec.decode_whole(wire.slice(..wire.len() - 1)).unwrap_err(),
                FrameError::WrongLength {
                    len: wire.len() - 1,
                    want: wire.len()
                }
            );
            if digests.data {
                let mut bad = wire.to_vec();
                bad[100] ^= 1;
                assert!(matches!(
                    dec.decode_whole(Bytes::from(bad)),
                    Err(FrameError::DataDigest { .. })
                ));
            }
        }
        let small = FrameDecoder {
            digests: Digests::default(),
            max_data_segment: 8192,
        };
        let mut enc = FrameEncoder::default();
        let wire = enc
            .encode(&Pdu::NopOut(NopOut {
                data: Bytes::from(data),
                ..Default::default()
            }))
            .to_bytes();
        assert!(matches!(
            small.frame_len(&wire[..48]),
            Err(FrameError::DataSegmentTooLong { len: 70_001, .. })
        ));
    }

    /// RFC 3720 appendix B.4: the CRC32C of 32 zero bytes is sent as `aa 36 91 8a`.
    #[test]
    fn digest_byte_order_matches_rfc_vector() {
        assert_eq!(
            crc32c::crc32c(&[0u8; 32]).to_le_bytes(),
            [0xaa, 0x36, 0x91, 0x8a]
        );
        let mut enc = FrameEncoder::new(Digests {
            header: true,
            data: false,
        });
        let frame = enc.encode_parts(&Bhs([0u8; 48]), &[], Bytes::new());
        assert_eq!(
            &frame.header[48..],
            &crc32c::crc32c(&[0u8; 48]).to_le_bytes()
        );
        let mut enc = FrameEncoder::new(Digests {
            header: false,
            data: true,
        });
        let frame = enc.encode_parts(&Bhs([0u8; 48]), &[], Bytes::from_static(&[0u8; 32]));
        assert_eq!(&frame.trailer[..], &[0xaa, 0x36, 0x91, 0x8a]);
    }

    #[test]
    fn extended_cdb_survives_framing() {
        let mut cdb = vec![0x7f_u8; 32];
        cdb[0] = 0x7f;
        let pdu = Pdu::ScsiCommand(ScsiCommand {
            final_bit: true,
            read: true,
            attr: 1,
            itt: 1,
            expected_len: 512,
            cdb: cdb.into(),
            ..Default::default()
        });
        let mut enc = FrameEncoder::default();
        let wire = enc.encode(&pdu).to_bytes();
        assert_eq!(wire[4], 5); // 17 bytes of AHS (3 + 1 + 16) padded to 20 = 5 words
        let mut buf = BytesMut::from(&wire[..]);
        let frame = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.pdu().unwrap(), pdu);
    }
}
