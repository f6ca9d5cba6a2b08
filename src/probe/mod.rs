//! The probe framework: what a check returns, how a probe is built from its
//! configuration, and the list of kinds. One file per kind beside this one;
//! adding a kind touches that file and the `kinds!` list below.

pub mod http;
pub mod log;
pub mod mongodb;
pub mod process;
pub mod queue;
pub mod redis;
pub mod storage;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};

use crate::config::check::Checker;
use crate::config::yaml::Node;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A component's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Healthy, Status::Degraded, Status::Unhealthy];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// Why a check failed: a bounded set, used as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Timeout,
    Connect,
    Dns,
    Tls,
    Auth,
    BadResponse,
    Status,
    Expectation,
    BodyTooLarge,
    NotFound,
    Io,
    Internal,
    /// A redirect to a URL the probe may not follow (another scheme than
    /// http(s), or outside a `/probe` module's `allowed_targets`).
    RedirectRefused,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::Timeout,
        Reason::Connect,
        Reason::Dns,
        Reason::Tls,
        Reason::Auth,
        Reason::BadResponse,
        Reason::Status,
        Reason::Expectation,
        Reason::BodyTooLarge,
        Reason::NotFound,
        Reason::Io,
        Reason::Internal,
        Reason::RedirectRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Connect => "connect",
            Reason::Dns => "dns",
            Reason::Tls => "tls",
            Reason::Auth => "auth",
            Reason::BadResponse => "bad_response",
            Reason::Status => "status",
            Reason::Expectation => "expectation",
            Reason::BodyTooLarge => "body_too_large",
            Reason::NotFound => "not_found",
            Reason::Io => "io",
            Reason::Internal => "internal",
            Reason::RedirectRefused => "redirect_refused",
        }
    }
}

/// A failed check: a reason for metrics, a message for people (no secrets),
/// and whatever details were gathered before it failed.
#[derive(Clone, Debug)]
pub struct CheckError {
    pub reason: Reason,
    pub message: String,
    pub details: Map<String, Value>,
}

impl CheckError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        CheckError {
            reason,
            message: message.into(),
            details: Map::new(),
        }
    }
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message)
    }
}

/// A check that worked. Its values may still cross a threshold: `level`
/// says so, and `why` says which (shown as the component's `error`).
#[derive(Clone, Debug)]
pub struct Outcome {
    pub level: Status,
    pub why: Option<String>,
    pub details: Map<String, Value>,
}

impl Outcome {
    pub fn healthy(details: Map<String, Value>) -> Self {
        Outcome {
            level: Status::Healthy,
            why: None,
            details,
        }
    }

    /// Raises the level to `level` (never lowers it), keeping every reason.
    pub fn raise(&mut self, level: Status, why: impl Into<String>) {
        let why = why.into();
        if level > self.level {
            self.level = level;
        }
        self.why = Some(match self.why.take() {
            Some(prev) => format!("{prev}; {why}"),
            None => why,
        });
    }
}

pub type CheckResult = Result<Outcome, CheckError>;

/// A configured probe, driven by the scheduler. Intervals, timeouts and
/// thresholds are the scheduler's; a probe only checks once when asked.
pub trait Probe: Send + Sync {
    fn check(&self) -> BoxFuture<'_, CheckResult>;

    /// Drops the probe's own metric series (the component was removed or
    /// replaced). Called after the component's gate was retired: no write
    /// of the probe's comes after it.
    fn forget(&self) {}

    /// Stops the probe's background work and saves what a restart needs
    /// (log offsets). Called once at shutdown, before state is flushed.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Kind-specific metric families, registered once for the whole process and
/// shared by all probes of a kind, across reloads.
pub struct KindMetrics {
    pub http: Arc<http::Metrics>,
    pub process: Arc<process::Metrics>,
    pub log: Arc<log::Metrics>,
    pub storage: Arc<storage::Metrics>,
    pub redis: Arc<redis::Metrics>,
    pub mongodb: Arc<mongodb::Metrics>,
    /// Queue families shared by the kinds that watch job queues.
    pub queue: Arc<queue::Metrics>,
}

impl KindMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        KindMetrics {
            http: Arc::new(http::Metrics::register(registry)),
            process: Arc::new(process::Metrics::register(registry)),
            log: Arc::new(log::Metrics::register(registry)),
            storage: Arc::new(storage::Metrics::register(registry)),
            redis: Arc::new(redis::Metrics::register(registry)),
            mongodb: Arc::new(mongodb::Metrics::register(registry)),
            queue: Arc::new(queue::Metrics::register(registry)),
        }
    }
}

/// What building a probe may use.
pub struct BuildCtx<'a> {
    pub name: &'a str,
    pub metrics: &'a KindMetrics,
    /// The state store, for probes that keep history across restarts.
    pub store: &'a Arc<crate::store::Store>,
    /// The check's timeout: connecting must give up inside it.
    pub timeout: std::time::Duration,
    /// The component's gate: the probe writes its series inside
    /// `gate.open()`, so none comes back once the component is removed.
    pub gate: &'a crate::metrics::kit::SeriesGate,
}

#[derive(Debug, thiserror::Error)]
// The message may quote a URL from the configuration: never its password.
#[error("probe {name}: {}", crate::util::redact::userinfo(message))]
pub struct BuildError {
    pub name: String,
    pub message: String,
}

macro_rules! kinds {
    ($($variant:ident => $module:ident, $name:literal;)*) => {
        /// The kind of a probe.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kind { $($variant,)* }

        /// The configuration of one probe's own keys.
        #[derive(Clone, Debug, PartialEq)]
        pub enum ProbeSpec { $($variant($module::Spec),)* }

        pub const KIND_NAMES: &[&str] = &[$($name,)*];

        impl Kind {
            pub fn from_name(s: &str) -> Option<Kind> {
                match s { $($name => Some(Kind::$variant),)* _ => None }
            }
            pub fn as_str(self) -> &'static str {
                match self { $(Kind::$variant => $name,)* }
            }
            /// The failure reasons a kind reports (their counters start at 0).
            pub fn reasons(self) -> &'static [Reason] {
                match self { $(Kind::$variant => $module::REASONS,)* }
            }
        }

        impl ProbeSpec {
            pub fn kind(&self) -> Kind {
                match self { $(ProbeSpec::$variant(_) => Kind::$variant,)* }
            }
        }

        /// Parses the kind's own keys of a probe (stage one and two).
        pub fn parse_spec(kind: Kind, node: &Node, path: &str, checker: &Checker, also: &[&'static str]) -> Option<ProbeSpec> {
            match kind { $(Kind::$variant => $module::Spec::parse(node, path, checker, also).map(ProbeSpec::$variant),)* }
        }

        /// Builds the probe of a validated configuration.
        pub fn build(spec: &ProbeSpec, ctx: &BuildCtx) -> Result<Arc<dyn Probe>, BuildError> {
            match spec { $(ProbeSpec::$variant(s) => Ok(Arc::new($module::build(s, ctx)?)),)* }
        }
    };
}

kinds! {
    Http => http, "http";
    Process => process, "process";
    Log => log, "log";
    Storage => storage, "storage";
    Redis => redis, "redis";
    Mongodb => mongodb, "mongodb";
}

/// Label values are the enums' names as `as_str` spells them.
macro_rules! label_value {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )*};
}

label_value!(Status, Reason, Kind);
