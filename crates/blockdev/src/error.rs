//! The error type of block devices.

/// A classification callers match on (the SCSI layer maps each kind to a sense code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockErrorKind {
    /// The device reported an I/O error.
    Io,
    /// The range lies outside the device.
    OutOfBounds,
    /// The backing store is full.
    NoSpace,
    /// The operation is not supported by this device.
    Unsupported,
    /// The device is read-only.
    ReadOnly,
    /// The device cannot be reached now (a remote target whose link is down).
    Unreachable,
}

/// A block device error: a kind, a context string and the underlying OS error, if any.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {context}")]
pub struct BlockError {
    /// What went wrong.
    pub kind: BlockErrorKind,
    /// Where (path, offset, operation).
    pub context: String,
    /// The OS error.
    #[source]
    pub source: Option<std::io::Error>,
}

impl BlockError {
    /// An error without an OS cause.
    pub fn new(kind: BlockErrorKind, context: impl Into<String>) -> Self {
        Self {
            kind,
            context: context.into(),
            source: None,
        }
    }

    /// Wrap an OS error, classifying ENOSPC and EROFS.
    pub fn io(err: std::io::Error, context: impl Into<String>) -> Self {
        let kind = match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => BlockErrorKind::NoSpace,
            Some(libc::EROFS) => BlockErrorKind::ReadOnly,
            Some(libc::EOPNOTSUPP) => BlockErrorKind::Unsupported,
            _ => BlockErrorKind::Io,
        };
        Self {
            kind,
            context: context.into(),
            source: Some(err),
        }
    }
}
