//! The text format of Login and Text PDUs (RFC 7143 section 6.1): `key=value` pairs, each
//! terminated by a NUL byte.

use bytes::{BufMut, Bytes, BytesMut};
use nom::{
    IResult, Parser,
    bytes::complete::{tag, take_till, take_while},
};

/// Longest key name accepted (RFC 7143 section 6.1: 63 bytes).
pub const MAX_KEY_LEN: usize = 63;

/// Longest value accepted. Standard values are at most 255 bytes, binary values (CHAP
/// challenges and responses) are bounded by the 8192-byte login data segment anyway; this
/// bound keeps a multi-PDU (Continue) text from growing without limit.
pub const MAX_VALUE_LEN: usize = 8192;

/// Longest accumulated text of a multi-PDU login or text request.
pub const MAX_TEXT_LEN: usize = 64 * 1024;

/// A malformed text segment.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    /// A pair has no `=`.
    #[error("key without '=': {0:?}")]
    MissingEquals(String),
    /// The key is empty, too long, or has characters RFC 7143 does not allow.
    #[error("invalid key name {0:?}")]
    BadKey(String),
    /// The value is longer than [`MAX_VALUE_LEN`].
    #[error("value of key {0} is too long")]
    ValueTooLong(String),
    /// The text is not UTF-8.
    #[error("text is not UTF-8")]
    NotUtf8,
    /// The accumulated text exceeds [`MAX_TEXT_LEN`].
    #[error("text exceeds {MAX_TEXT_LEN} bytes")]
    TooLong,
}

/// An ordered list of key=value pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextKeys(pub Vec<(String, String)>);

impl TextKeys {
    /// Parse a complete text segment. Trailing NUL padding is ignored and the last pair may
    /// lack its NUL.
    pub fn parse(data: &[u8]) -> Result<Self, TextError> {
        if data.len() > MAX_TEXT_LEN {
            return Err(TextError::TooLong);
        }
        let text = std::str::from_utf8(data).map_err(|_| TextError::NotUtf8)?;
        let mut input = text;
        let mut out = Vec::new();
        loop {
            let (rest, _) = nul_run(input).map_err(|_| TextError::NotUtf8)?;
            if rest.is_empty() {
                break;
            }
            let (rest, pair) = pair(rest).map_err(|_| TextError::NotUtf8)?;
            let Some((key, value)) = pair.split_once('=') else {
                return Err(TextError::MissingEquals(truncate(pair)));
            };
            if !valid_key(key) {
                return Err(TextError::BadKey(truncate(key)));
            }
            if value.len() > MAX_VALUE_LEN {
                return Err(TextError::ValueTooLong(key.to_owned()));
            }
            out.push((key.to_owned(), value.to_owned()));
            input = rest;
        }
        Ok(Self(out))
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Append a pair.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.push((key.into(), value.into()));
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterate over the pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Encode as a text segment.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        for (k, v) in &self.0 {
            b.put_slice(k.as_bytes());
            b.put_u8(b'=');
            b.put_slice(v.as_bytes());
            b.put_u8(0);
        }
        b.freeze()
    }
}

fn nul_run(i: &str) -> IResult<&str, &str> {
    take_while(|c| c == '\0').parse(i)
}

fn pair(i: &str) -> IResult<&str, &str> {
    let (i, p) = take_till(|c| c == '\0').parse(i)?;
    let (i, _) = nom::combinator::opt(tag("\0")).parse(i)?;
    Ok((i, p))
}

/// Key names: letters, digits and `.-+@_` (RFC 7143 section 6.1), 1 to 63 bytes.
fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KEY_LEN
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".-+@_#".contains(&c))
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_ignores_padding() {
        let t = TextKeys::parse(b"InitiatorName=iqn.x\0SessionType=Normal\0\0\0").unwrap();
        assert_eq!(t.get("InitiatorName"), Some("iqn.x"));
        assert_eq!(t.get("SessionType"), Some("Normal"));
        assert_eq!(t.0.len(), 2);
    }

    #[test]
    fn last_pair_may_lack_nul_and_values_may_contain_equals() {
        let t = TextKeys::parse(b"A=b=c").unwrap();
        assert_eq!(t.get("A"), Some("b=c"));
    }

    #[test]
    fn rejects_malformed_text() {
        assert!(matches!(
            TextKeys::parse(b"novalue\0"),
            Err(TextError::MissingEquals(_))
        ));
        assert!(matches!(
            TextKeys::parse(b"=x\0"),
            Err(TextError::BadKey(_))
        ));
        assert!(matches!(
            TextKeys::parse(b"a b=x\0"),
            Err(TextError::BadKey(_))
        ));
        let long_key = format!("{}=1\0", "k".repeat(64));
        assert!(matches!(
            TextKeys::parse(long_key.as_bytes()),
            Err(TextError::BadKey(_))
        ));
        let long_val = format!("K={}\0", "v".repeat(MAX_VALUE_LEN + 1));
        assert!(matches!(
            TextKeys::parse(long_val.as_bytes()),
            Err(TextError::ValueTooLong(_))
        ));
        assert_eq!(
            TextKeys::parse(&[b'K', b'=', 0xff, 0]),
            Err(TextError::NotUtf8)
        );
    }

    #[test]
    fn encode_round_trip() {
        let mut t = TextKeys::default();
        t.push("TargetName", "iqn.2026-11.io.ironlun:a");
        t.push("TargetAddress", "127.0.0.1:3260,1");
        assert_eq!(
            &t.encode()[..],
            b"TargetName=iqn.2026-11.io.ironlun:a\0TargetAddress=127.0.0.1:3260,1\0"
        );
        assert_eq!(TextKeys::parse(&t.encode()).unwrap(), t);
    }
}
