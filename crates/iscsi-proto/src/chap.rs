//! CHAP (RFC 1994 as used by RFC 7143 section 12.1.3) with MD5, SHA1, SHA-256 and SHA3-256
//! (the CHAP_A values 5, 6, 7 and 8 that open-iscsi and LIO offer).

use base64::Engine as _;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use sha3::Sha3_256;

/// A CHAP hash algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChapAlgorithm {
    /// CHAP_A=5.
    Md5,
    /// CHAP_A=6.
    Sha1,
    /// CHAP_A=7.
    Sha256,
    /// CHAP_A=8.
    Sha3_256,
}

impl ChapAlgorithm {
    /// Every algorithm, strongest first: the target picks the first the initiator offers.
    pub const ALL: [Self; 4] = [Self::Sha3_256, Self::Sha256, Self::Sha1, Self::Md5];

    /// The algorithm for a CHAP_A value.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            5 => Some(Self::Md5),
            6 => Some(Self::Sha1),
            7 => Some(Self::Sha256),
            8 => Some(Self::Sha3_256),
            _ => None,
        }
    }

    /// The CHAP_A value.
    pub fn code(self) -> u32 {
        match self {
            Self::Md5 => 5,
            Self::Sha1 => 6,
            Self::Sha256 => 7,
            Self::Sha3_256 => 8,
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Md5 => 16,
            Self::Sha1 => 20,
            Self::Sha256 | Self::Sha3_256 => 32,
        }
    }

    /// The CHAP response `H(identifier || secret || challenge)`.
    pub fn response(self, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
        fn run<D: Digest>(id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
            let mut d = D::new();
            d.update([id]);
            d.update(secret);
            d.update(challenge);
            d.finalize().to_vec()
        }
        match self {
            Self::Md5 => run::<Md5>(id, secret, challenge),
            Self::Sha1 => run::<Sha1>(id, secret, challenge),
            Self::Sha256 => run::<Sha256>(id, secret, challenge),
            Self::Sha3_256 => run::<Sha3_256>(id, secret, challenge),
        }
    }
}

/// Pick the algorithm from a CHAP_A list: the first value the initiator lists that we support
/// (the initiator orders its list by preference).
pub fn select_algorithm(offer: &str) -> Option<ChapAlgorithm> {
    offer
        .split(',')
        .filter_map(|v| crate::negotiate::numeric(v.trim(), 0, 255))
        .find_map(ChapAlgorithm::from_code)
}

/// Decode a binary value: `0x` hex or `0b` base64 (RFC 7143 section 6.1).
pub fn decode_binary(v: &str) -> Option<Vec<u8>> {
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        let h = if h.len() % 2 == 1 {
            format!("0{h}")
        } else {
            h.to_owned()
        };
        hex::decode(h).ok()
    } else if let Some(b) = v.strip_prefix("0b").or_else(|| v.strip_prefix("0B")) {
        base64::engine::general_purpose::STANDARD.decode(b).ok()
    } else {
        None
    }
}

/// Encode a binary value as `0x` hex.
pub fn encode_hex(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

/// Constant-time comparison of two byte strings (of public length).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random challenge of `len` bytes. Falls back to a time-seeded value only if the
/// operating system's generator fails, which `getrandom` reports instead of blocking.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    if getrandom::fill(&mut v).is_err() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let h = Sha256::digest(seed.to_le_bytes());
        for (i, b) in v.iter_mut().enumerate() {
            *b = h[i % h.len()];
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `H(0x01 || "secret" || 00 01 .. 0f)` for each algorithm, computed independently with
    /// Python's hashlib.
    #[test]
    fn responses_match_reference_values() {
        let challenge: Vec<u8> = (0u8..16).collect();
        let cases = [
            (ChapAlgorithm::Md5, "740e86463bda3a4d7017d6e0fba0699d"),
            (
                ChapAlgorithm::Sha1,
                "3890198f5112376188a9742805758384545583a6",
            ),
            (
                ChapAlgorithm::Sha256,
                "28b96c916cf784528bbfaa6ad7e012cab293437604aae8d66a3295b319132cef",
            ),
            (
                ChapAlgorithm::Sha3_256,
                "bdceca071be509f41acf88309bb6d12e51526c23a2d18f22c2bb8ed199c36fd8",
            ),
        ];
        for (alg, want) in cases {
            assert_eq!(
                hex::encode(alg.response(1, b"secret", &challenge)),
                want,
                "{alg:?}"
            );
        }
    }

    #[test]
    fn digest_lengths() {
        for a in ChapAlgorithm::ALL {
            assert_eq!(a.response(7, b"s", b"c").len(), a.digest_len());
            assert_eq!(ChapAlgorithm::from_code(a.code()), Some(a));
        }
    }

    #[test]
    fn selection_follows_the_initiators_order() {
        assert_eq!(select_algorithm("8,7,6,5"), Some(ChapAlgorithm::Sha3_256));
        assert_eq!(select_algorithm("5"), Some(ChapAlgorithm::Md5));
        assert_eq!(select_algorithm("7,5"), Some(ChapAlgorithm::Sha256));
        assert_eq!(select_algorithm("99,6"), Some(ChapAlgorithm::Sha1));
        assert_eq!(select_algorithm("1,2"), None);
        assert_eq!(select_algorithm("x"), None);
    }

    #[test]
    fn binary_values() {
        assert_eq!(decode_binary("0x0a0B"), Some(vec![10, 11]));
        assert_eq!(decode_binary("0xabc"), Some(vec![0x0a, 0xbc]));
        assert_eq!(decode_binary("0bAQID"), Some(vec![1, 2, 3]));
        assert_eq!(decode_binary("1234"), None);
        assert_eq!(decode_binary("0xzz"), None);
        assert_eq!(encode_hex(&[1, 0xff]), "0x01ff");
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
