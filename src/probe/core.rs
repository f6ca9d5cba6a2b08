//! What every probe kind is made of: the check's outcome and error, the
//! failure reasons, the `Probe` trait the scheduler drives, and what building
//! a probe may use. The kinds import this; the registry of kinds
//! (`probe/mod.rs`) imports the kinds, never the other way round.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

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

/// A check's details, as `/api/health` shows them: a map that probes
/// fill, or JSON already serialized (the http probe writes its own, with no
/// map in between). A component keeps them serialized
/// ([`Details::into_json`]): at 10,000 http components the maps (a
/// `String` and a `Value` per key, a nested map of phases) were 1.45 KiB
/// each, their JSON is 0.25 KiB. The few readers of single values (the
/// status page, alert emails) parse it.
#[derive(Clone, Debug)]
pub enum Details {
    Map(Map<String, Value>),
    /// A JSON object.
    Json(Box<RawValue>),
}

impl Default for Details {
    fn default() -> Self {
        Details::Map(Map::new())
    }
}

impl From<Map<String, Value>> for Details {
    fn from(m: Map<String, Value>) -> Self {
        Details::Map(m)
    }
}

impl Details {
    /// `details`, serialized.
    pub fn json(details: &impl serde::Serialize) -> Details {
        match serde_json::value::to_raw_value(details) {
            Ok(raw) => Details::Json(raw),
            Err(e) => {
                tracing::error!(error = %e, "Cannot serialize a check's details.");
                Details::default()
            }
        }
    }

    /// The map, to add to (parsed when they were serialized).
    pub fn map_mut(&mut self) -> &mut Map<String, Value> {
        if let Details::Json(raw) = self {
            *self = Details::Map(serde_json::from_str(raw.get()).unwrap_or_default());
        }
        match self {
            Details::Map(m) => m,
            Details::Json(_) => unreachable!("made a map just above"),
        }
    }

    /// A copy as a map.
    pub fn map(&self) -> Map<String, Value> {
        match self {
            Details::Map(m) => m.clone(),
            Details::Json(raw) => serde_json::from_str(raw.get()).unwrap_or_default(),
        }
    }

    /// Serialized, as a component keeps them.
    pub fn into_json(self) -> Details {
        match self {
            Details::Map(m) if !m.is_empty() => Details::json(&m),
            d => d,
        }
    }
}

impl serde::Serialize for Details {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Details::Map(m) => m.serialize(s),
            Details::Json(raw) => raw.serialize(s),
        }
    }
}

/// A failed check: a reason for metrics, a message for people (no secrets),
/// and whatever details were gathered before it failed.
#[derive(Clone, Debug)]
pub struct CheckError {
    pub reason: Reason,
    pub message: String,
    pub details: Details,
    /// See [`Outcome::took`].
    pub took: Option<Duration>,
}

impl CheckError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        CheckError {
            reason,
            message: message.into(),
            details: Details::default(),
            took: None,
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
    pub details: Details,
    /// The dependency's own time, when the probe measured it: the check's
    /// duration (`depwatch_check_duration_seconds`, the latency window of
    /// `/api/health`) is then this instead of the time around `check()`.
    /// The http probe reports its request (DNS lookup to the last body
    /// byte), so that the duration is the partner's answer time, without
    /// depwatch judging the body after it.
    pub took: Option<Duration>,
}

impl Outcome {
    pub fn healthy(details: impl Into<Details>) -> Self {
        Outcome {
            level: Status::Healthy,
            why: None,
            details: details.into(),
            took: None,
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

/// The default buckets of `depwatch_check_duration_seconds` (seconds) for
/// dependencies that answer in milliseconds (Redis, MongoDB, local reads):
/// 1 ms to 2.5 s, a factor of 5 apart, the default 5 s timeout above them.
/// Few on purpose: each bucket is a series per component. More with the
/// configuration's `buckets`.
pub const FAST_BUCKETS: &[f64] = &[0.001, 0.005, 0.025, 0.1, 0.5, 2.5];

/// The default buckets for partner APIs over the network (`kind: http`):
/// 2 s is a bound, so the bundle's `PartnerApiSlow` (p95 above 2 s) is
/// exact whatever the answers below it; 5 s (the default timeout) above it
/// gives a slow p95 a value above 2 s (a quantile in the `+Inf` bucket would
/// read as the highest bound). 0.1 and 0.5 s split the usual answers.
/// Four bounds keep an http target at 24 series (README, "Series per
/// component").
pub const API_BUCKETS: &[f64] = &[0.1, 0.5, 2.0, 5.0];

/// A configured probe, driven by the scheduler. Intervals, timeouts and
/// thresholds are the scheduler's; a probe only checks once when asked.
pub trait Probe: Send + Sync {
    fn check(&self) -> BoxFuture<'_, CheckResult>;

    /// The error of a check that the timeout `after` cut (its future has
    /// just been dropped): what it was doing then, for kinds that know.
    fn timed_out(&self, after: Duration) -> CheckError {
        CheckError::new(
            Reason::Timeout,
            format!(
                "no answer within the timeout of {}",
                crate::config::units::format_duration(after)
            ),
        )
    }

    /// Drops the probe's own metric series (the component was removed or
    /// replaced). Called after the component's gate was retired: no write
    /// of the probe's comes after it.
    fn forget(&self) {}

    /// Stops the probe's background work and saves what a restart needs
    /// (log offsets). Called once at shutdown, before state is flushed.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// A series the status page draws for the component, oldest first, at
    /// most `points` long: (unix ms, value). Storage: used bytes over its
    /// forecast window. Reads memory only and never waits (`None` while a
    /// check holds the data, or for kinds that have none).
    fn chart(&self, _points: usize) -> Option<Vec<(i64, f64)>> {
        None
    }
}

/// Where a kind finds its metric families. The registry implements it for
/// each kind's families, so a kind names only its own types.
pub trait FamiliesOf<M> {
    fn families(&self) -> &Arc<M>;
}

/// A probe's event asking for fresh results of other components: a log
/// line matched a rule with `invalidates`. Whoever wires the probes (the
/// app) resolves the targets, drops their cached results and checks them;
/// probes never see the components.
#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    /// The component whose probe saw the event.
    pub from: String,
    /// What saw it (a log rule's metric name).
    pub rule: String,
    /// Component names, or `tag:T`.
    pub targets: Vec<String>,
}

/// Where probes send their [`Trigger`]s.
pub type Triggers = tokio::sync::mpsc::UnboundedSender<Trigger>;

/// What building a probe may use.
pub struct BuildCtx<'a, F: ?Sized> {
    pub name: &'a str,
    /// The kinds' metric families, registered once for the process: a kind
    /// takes its own through [`FamiliesOf`].
    pub metrics: &'a F,
    /// The state store, for probes that keep history across restarts.
    pub store: &'a Arc<crate::store::Store>,
    /// The check's timeout: connecting must give up inside it.
    pub timeout: std::time::Duration,
    /// The component's gate: the probe writes its series inside
    /// `gate.open()`, so none comes back once the component is removed.
    pub gate: &'a crate::metrics::kit::SeriesGate,
    /// Where events that refresh other components go (`None`: nowhere,
    /// as in `replay-log`).
    pub triggers: Option<&'a Triggers>,
}

#[derive(Debug, thiserror::Error)]
// The message may quote a URL from the configuration: never its password.
#[error("probe {name}: {}", crate::util::redact::userinfo(message))]
pub struct BuildError {
    pub name: String,
    pub message: String,
}

/// Label values are the enums' names as `as_str` spells them.
macro_rules! label_value_impl {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )*};
}

label_value_impl!(Status, Reason);

pub(crate) use label_value_impl as label_value;
