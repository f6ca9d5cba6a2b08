//! Small helpers every floor of the house uses: clocks and time formats,
//! poison-tolerant locks, redaction, short text. They import nothing of the
//! crate, so any module may import them without a circle.
//!
//! Where a new helper goes: here when two or more modules of different
//! floors need it and it knows nothing of depwatch's types; otherwise beside
//! its one user.

pub mod build;
pub mod html;
pub mod json;
pub mod pool;
pub mod redact;
pub mod sync;
pub mod text;
pub mod time;
