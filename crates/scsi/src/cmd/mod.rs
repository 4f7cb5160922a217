//! Command handlers, by family.

pub(crate) mod io;
pub(crate) mod misc;
pub(crate) mod rsoc;
