//! What this binary is: its version, the revision it was built from and the
//! compiler (set by build.rs).

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("DEPWATCH_REVISION");
pub const RUSTC: &str = env!("DEPWATCH_RUSTC");
