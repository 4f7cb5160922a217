//! Field extraction from CDBs.

use crate::sense::Sense;

/// Result of command handlers: `Err` is a CHECK CONDITION.
pub(crate) type CmdResult<T> = Result<T, Sense>;

pub(crate) fn be16(c: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([c[o], c[o + 1]])
}

pub(crate) fn be24(c: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([0, c[o], c[o + 1], c[o + 2]])
}

pub(crate) fn be32(c: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]])
}

pub(crate) fn be64(c: &[u8], o: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&c[o..o + 8]);
    u64::from_be_bytes(b)
}

/// INVALID FIELD IN CDB pointing at `byte` (and `bit`).
pub(crate) fn invalid_field(byte: u16, bit: Option<u8>) -> Sense {
    Sense::INVALID_FIELD_IN_CDB.with_field(true, byte, bit)
}

/// INVALID FIELD IN PARAMETER LIST pointing at `byte`.
pub(crate) fn invalid_param(byte: u16, bit: Option<u8>) -> Sense {
    Sense::INVALID_FIELD_IN_PARAMETER_LIST.with_field(false, byte, bit)
}

/// Apply an allocation length to Data-In.
pub(crate) fn truncate(mut v: Vec<u8>, alloc: usize) -> Vec<u8> {
    v.truncate(alloc);
    v
}

/// Concatenate Data-Out buffers.
pub(crate) fn gather(data: &[bytes::Bytes]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.iter().map(|b| b.len()).sum());
    for b in data {
        v.extend_from_slice(b);
    }
    v
}
