//! depwatch as a library: everything the `depwatch` binary (src/main.rs) is
//! made of, exposed so that benchmarks (`benches/`) can measure the pieces
//! directly. The binary is the product; this API is not a stable interface.
#![forbid(unsafe_code)]

pub mod alert;
pub mod app;
pub mod component;
pub mod config;
pub mod events;
pub mod http;
pub mod metrics;
pub mod net;
pub mod perf;
pub mod probe;
pub mod procfs;
pub mod refresh;
pub mod scheduler;
pub mod store;
pub mod util;
