//! LUN field encoding (SAM-5 section 4.7): single-level peripheral and flat space addressing.

/// Decode the 8-byte LUN field of a PDU into a LUN number. Returns `None` for hierarchical,
/// extended or logical-unit addressing we do not serve.
pub fn decode_lun(field: u64) -> Option<u16> {
    let b = field.to_be_bytes();
    if b[2..].iter().any(|&x| x != 0) {
        return None;
    }
    match b[0] >> 6 {
        // Peripheral device addressing, bus 0.
        0b00 if b[0] == 0 => Some(u16::from(b[1])),
        // Flat space addressing.
        0b01 => Some((u16::from(b[0] & 0x3f) << 8) | u16::from(b[1])),
        _ => None,
    }
}

/// Encode a LUN number as REPORT LUNS and PDUs carry it: peripheral addressing below 256,
/// flat space addressing from 256 to 16383.
pub fn encode_lun(lun: u16) -> u64 {
    let b0 = if lun < 256 {
        0
    } else {
        0x40 | ((lun >> 8) as u8 & 0x3f)
    };
    u64::from_be_bytes([b0, lun as u8, 0, 0, 0, 0, 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sam5_encodings() {
        assert_eq!(encode_lun(0), 0);
        assert_eq!(encode_lun(1).to_be_bytes(), [0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode_lun(255).to_be_bytes(), [0, 0xff, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            encode_lun(256).to_be_bytes(),
            [0x41, 0x00, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            encode_lun(0x3fff).to_be_bytes(),
            [0x7f, 0xff, 0, 0, 0, 0, 0, 0]
        );
        for l in [0u16, 1, 7, 255, 256, 1000, 16383] {
            assert_eq!(decode_lun(encode_lun(l)), Some(l));
        }
        // Flat addressing of a small LUN is accepted too.
        assert_eq!(
            decode_lun(u64::from_be_bytes([0x40, 5, 0, 0, 0, 0, 0, 0])),
            Some(5)
        );
        // Second level or bus != 0: not served.
        assert_eq!(
            decode_lun(u64::from_be_bytes([0, 1, 0, 2, 0, 0, 0, 0])),
            None
        );
        assert_eq!(
            decode_lun(u64::from_be_bytes([0x01, 1, 0, 0, 0, 0, 0, 0])),
            None
        );
        assert_eq!(
            decode_lun(u64::from_be_bytes([0x80, 1, 0, 0, 0, 0, 0, 0])),
            None
        );
    }
}
