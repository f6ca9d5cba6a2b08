//! What is known of a request's client, for the access check (`access.rs`):
//! its address and TLS certificate (put on every request by `serve.rs`),
//! what it may see (set by the check), and the counts of refusals. Apart
//! from `access.rs` so that the server and the metrics registry can name
//! these without importing the handlers' shared state.

use std::net::SocketAddr;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::config::web::Group;

/// The client's address, set by the server on every request.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// What a handler may show: set by [`guard`] on every request it lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Viewer {
    /// No credentials, on a public group.
    Anonymous,
    Authenticated,
}

/// What the TLS handshake established about the client, for the access
/// check: set on every request of a TLS connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientCert {
    /// A certificate chained to `client_ca_file` (and, when configured,
    /// carrying an allowed SAN).
    pub verified: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    reason: &'static str,
}

/// `depwatch_http_auth_failures_total{group}` and
/// `depwatch_http_requests_limited_total{reason}`.
#[derive(Clone, Default)]
pub struct AccessMetrics {
    failures: Family<GroupLabel, Counter>,
    limited: Family<LimitLabel, Counter>,
}

impl AccessMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = AccessMetrics::default();
        for g in Group::ALL {
            let _ = m.failures.get_or_create(&GroupLabel { group: g.as_str() });
        }
        for reason in ["login_failures", "rate_limit", "probe_concurrency"] {
            let _ = m.limited.get_or_create(&LimitLabel { reason });
        }
        r.register(
            "http_auth_failures",
            "Requests refused for wrong or missing credentials, by endpoint group",
            m.failures.clone(),
        );
        r.register(
            "http_requests_limited",
            "Requests refused with 429: an address after too many failed logins, the rate_limit, the /probe concurrency cap",
            m.limited.clone(),
        );
        m
    }

    /// A request refused for missing or wrong credentials.
    pub fn refused(&self, group: Group) {
        self.failures
            .get_or_create(&GroupLabel {
                group: group.as_str(),
            })
            .inc();
        crate::metrics::snapshot::changed();
    }

    pub fn limited(&self, reason: &'static str) {
        self.limited.get_or_create(&LimitLabel { reason }).inc();
        crate::metrics::snapshot::changed();
    }
}
