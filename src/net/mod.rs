//! Talking to other services over the network, shared by the probes that
//! do (`http`, storage's `source: http`) so that no probe is another's
//! library: the HTTP client (`client`), where its requests go (`target`),
//! its TLS trust and identity (`tls`), what a check's connection measured
//! and read (`wire`), the inflation of compressed answers (`coding`), and
//! the certificate reader that tells when a peer's
//! certificate expires (`cert`).

pub mod cert;
pub mod client;
mod coding;
pub mod connect;
pub mod error;
pub mod lookup;
pub mod target;
pub mod tls;
mod wire;

pub use client::{Answer, Client, Proxy, Request, Timings, basic_auth};
pub use error::NetError;
pub use target::{Target, TargetPattern};
pub use tls::Identity;
