//! Additional Header Segments (RFC 7143 section 11.2.2).

use bytes::{BufMut, Bytes, BytesMut};
use nom::{
    IResult, Parser,
    bytes::complete::take,
    number::complete::{be_u8, be_u16},
};

use crate::error::PduError;

/// AHS types defined by RFC 7143.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AhsType {
    /// Extended CDB (type 1): the bytes of a CDB beyond the first 16.
    ExtendedCdb,
    /// Bidirectional Read Expected Data Transfer Length (type 2).
    BidiReadLength,
}

/// One decoded AHS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ahs {
    /// Extended CDB bytes (CDB bytes 16 and up).
    ExtendedCdb(Bytes),
    /// Expected read length of a bidirectional command.
    BidiReadLength(u32),
}

impl Ahs {
    /// Parse every AHS in `input` (TotalAHSLength bytes).
    pub fn parse_all(mut input: &[u8]) -> Result<Vec<Self>, PduError> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let (rest, ahs) = parse_one(input).map_err(|_| PduError::BadAhs)?;
            out.push(ahs);
            input = rest;
        }
        Ok(out)
    }

    /// Encode a list of AHS, each padded to a 4-byte boundary.
    pub fn encode_all(list: &[Self]) -> Bytes {
        let mut buf = BytesMut::new();
        for ahs in list {
            match ahs {
                Self::ExtendedCdb(cdb) => {
                    // AHSLength counts the reserved byte plus the CDB bytes.
                    buf.put_u16((cdb.len() + 1) as u16);
                    buf.put_u8(1);
                    buf.put_u8(0);
                    buf.put_slice(cdb);
                    pad4(&mut buf);
                }
                Self::BidiReadLength(len) => {
                    buf.put_u16(5);
                    buf.put_u8(2);
                    buf.put_u8(0);
                    buf.put_u32(*len);
                    pad4(&mut buf);
                }
            }
        }
        buf.freeze()
    }
}

fn pad4(buf: &mut BytesMut) {
    while !buf.len().is_multiple_of(4) {
        buf.put_u8(0);
    }
}

fn parse_one(input: &[u8]) -> IResult<&[u8], Ahs> {
    let (input, (len, kind)) = (be_u16, be_u8).parse(input)?;
    let len = usize::from(len);
    let (input, body) = take(len).parse(input)?;
    // Padding to the next 4-byte boundary (3 header bytes + body).
    let pad = (4 - (3 + len) % 4) % 4;
    let (input, _) = take(pad.min(input.len())).parse(input)?;
    let ahs = match kind {
        1 if len >= 1 => Ahs::ExtendedCdb(Bytes::copy_from_slice(&body[1..])),
        2 if len == 5 => {
            Ahs::BidiReadLength(u32::from_be_bytes([body[1], body[2], body[3], body[4]]))
        }
        _ => {
            return Err(nom::Err::Error(nom::error::Error::new(
                input,
                nom::error::ErrorKind::Verify,
            )));
        }
    };
    Ok((input, ahs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_cdb_round_trip() {
        let list = vec![Ahs::ExtendedCdb(Bytes::from_static(&[
            1, 2, 3, 4, 5, 6, 7, 8,
        ]))];
        let enc = Ahs::encode_all(&list);
        assert_eq!(enc.len() % 4, 0);
        assert_eq!(&enc[..4], &[0x00, 0x09, 0x01, 0x00]);
        assert_eq!(Ahs::parse_all(&enc).unwrap(), list);
    }

    #[test]
    fn bidi_round_trip() {
        let list = vec![Ahs::BidiReadLength(0x1234_5678)];
        let enc = Ahs::encode_all(&list);
        assert_eq!(&enc[..], &[0, 5, 2, 0, 0x12, 0x34, 0x56, 0x78]);
        assert_eq!(Ahs::parse_all(&enc).unwrap(), list);
    }

    #[test]
    fn truncated_ahs_is_an_error() {
        assert_eq!(Ahs::parse_all(&[0, 9, 1, 0, 1]), Err(PduError::BadAhs));
        assert_eq!(
            Ahs::parse_all(&[0, 4, 7, 0, 1, 2, 3, 4]),
            Err(PduError::BadAhs)
        );
    }
}
