//! Command handlers, by family.

pub(crate) mod atomic;
pub(crate) mod copy;
pub(crate) mod io;
pub(crate) mod misc;
pub(crate) mod rsoc;
pub(crate) mod sanitize;
