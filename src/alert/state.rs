//! [`Alerting`]: the alerting state the HTTP handlers read and the tasks
//! write — the pipeline's verdict and reasons, Alertmanager's health, the
//! alerts it notified, open incidents, the last email and error, the outbox.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{Value, json};

use super::metrics::AlertMetrics;
use super::{config, email, render};

/// One reason the pipeline is down.
#[derive(Clone, Debug, PartialEq)]
pub struct Reason {
    /// `scrape`, `alertmanager` or `heartbeat`.
    pub check: &'static str,
    pub message: String,
    pub since_ms: i64,
}

/// Alertmanager's health as last checked.
#[derive(Clone, Debug, Default)]
pub struct AmState {
    pub healthy: Option<bool>,
    pub failures: u32,
    pub first_failure_ms: Option<i64>,
    pub error: Option<String>,
    pub checked_ms: Option<i64>,
}

/// An alert Alertmanager notified us of (not the Watchdog).
#[derive(Clone, Debug)]
pub struct FiringAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub received_ms: i64,
    /// When a notification last carried it (monotonic: it expires by
    /// `alerting.firing_expiry` after this).
    pub seen: tokio::time::Instant,
}

#[derive(Default)]
pub struct Inner {
    pub configured: bool,
    pub mode: Option<config::Mode>,
    pub pipeline: &'static str,
    pub reasons: Vec<Reason>,
    pub last_heartbeat_ms: Option<i64>,
    pub last_scrape_ms: Option<i64>,
    pub am: AmState,
    pub open: Vec<Value>,
    pub last_email: Option<Value>,
    pub last_error: Option<Value>,
    pub queued: usize,
    /// Held back by `max_per_hour` since the last email queued.
    pub held_back: u64,
    pub held_back_total: u64,
    /// fingerprint → alert.
    pub firing: BTreeMap<String, FiringAlert>,
    pub webhook_posts: u64,
}

/// The alerting state shared by the tasks and the HTTP handlers.
pub struct Alerting {
    pub metrics: AlertMetrics,
    pub inner: Mutex<Inner>,
    pub started_ms: i64,
    pub host: String,
    /// The HA sender election (`alerting.coordination`).
    pub coord: super::coord::Coord,
    outbox: tokio::sync::mpsc::UnboundedSender<email::Outgoing>,
    outbox_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<email::Outgoing>>>,
    /// When the emails of the last hour were queued, for `max_per_hour`
    /// (ms on the engine's monotonic clock, `incident::Now::mono`).
    pub recent: Mutex<VecDeque<i64>>,
}

/// The most alerts kept from Alertmanager's notifications.
pub const MAX_FIRING: usize = 1000;

impl Alerting {
    pub fn new(metrics: AlertMetrics) -> Alerting {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Alerting {
            metrics,
            inner: Mutex::new(Inner {
                pipeline: "unknown",
                ..Default::default()
            }),
            started_ms: render::now_ms(),
            host: email::host_name(),
            coord: super::coord::Coord::new(),
            outbox: tx,
            outbox_rx: Mutex::new(Some(rx)),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `alerting` section of `/api/health`, written after what `out`
    /// holds (straight from the state: no `Value` tree per request).
    pub fn write_health(&self, out: &mut Vec<u8>) {
        self.with_health(|v| crate::util::json::write_or_null(out, v, "the alerting section"))
    }

    /// [`Alerting::write_health`] as a `Value` (the status page reads it).
    pub fn health_json(&self) -> Value {
        self.with_health(|v| serde_json::to_value(v).unwrap_or(Value::Null))
    }

    fn with_health<R>(&self, f: impl FnOnce(&HealthView<'_>) -> R) -> R {
        let i = self.lock();
        let sender = i.configured.then(|| self.coord.health_json());
        f(&HealthView::of(&i, sender))
    }

    /// The pipeline as the status page and its `pipeline` events show it.
    pub fn pipeline_json(&self) -> Value {
        let i = self.lock();
        json!({
            "configured": i.configured,
            "mode": i.mode.map(config::Mode::as_str),
            "pipeline": i.pipeline,
            "reasons": reasons(&i.reasons),
            "last_scrape": i.last_scrape_ms.map(at),
            "last_heartbeat": i.last_heartbeat_ms.map(at),
            "last_email": i.last_email,
            "firing": i.firing.len(),
        })
    }

    /// The open incidents (as `/api/health` lists them).
    pub fn open_incidents(&self) -> Vec<Value> {
        self.lock().open.clone()
    }

    /// Hands a stored email to the sender task.
    pub fn enqueue(&self, e: email::Outgoing) {
        let _ = self.outbox.send(e);
    }

    pub(super) fn take_outbox(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<email::Outgoing>> {
        self.outbox_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// A time in ms since the epoch as RFC 3339.
fn at(ms: i64) -> String {
    crate::util::time::rfc3339_ms(ms)
}

/// The `alerting` section of `/api/health`, in its order.
#[derive(Serialize)]
struct HealthView<'a> {
    mode: Option<&'static str>,
    pipeline: &'static str,
    reasons: Vec<ReasonView<'a>>,
    last_scrape: Option<String>,
    last_heartbeat: Option<String>,
    /// Null when alerting is not configured.
    alertmanager: Option<AmView<'a>>,
    open_incidents: &'a [Value],
    last_email: &'a Option<Value>,
    last_error: &'a Option<Value>,
    queued_emails: usize,
    held_back: u64,
    firing: Vec<FiringView<'a>>,
    sender: Option<Value>,
}

#[derive(Serialize)]
struct ReasonView<'a> {
    check: &'static str,
    message: &'a str,
    since: String,
}

#[derive(Serialize)]
struct AmView<'a> {
    healthy: Option<bool>,
    consecutive_failures: u32,
    error: Option<&'a str>,
    checked_at: Option<String>,
}

#[derive(Serialize)]
struct FiringView<'a> {
    alertname: Option<&'a String>,
    severity: Option<&'a String>,
    component: Option<&'a String>,
    summary: Option<&'a String>,
    runbook_url: Option<&'a String>,
    starts_at: &'a str,
    /// When a notification of Alertmanager last carried it.
    last_notified: String,
    labels: &'a BTreeMap<String, String>,
}

impl<'a> HealthView<'a> {
    fn of(i: &'a Inner, sender: Option<Value>) -> HealthView<'a> {
        HealthView {
            mode: i.mode.map(config::Mode::as_str),
            pipeline: i.pipeline,
            reasons: reasons(&i.reasons),
            last_scrape: i.last_scrape_ms.map(at),
            last_heartbeat: i.last_heartbeat_ms.map(at),
            alertmanager: i.configured.then(|| AmView {
                healthy: i.am.healthy,
                consecutive_failures: i.am.failures,
                error: i.am.error.as_deref(),
                checked_at: i.am.checked_ms.map(at),
            }),
            open_incidents: &i.open,
            last_email: &i.last_email,
            last_error: &i.last_error,
            queued_emails: i.queued,
            held_back: i.held_back_total,
            firing: i
                .firing
                .values()
                .map(|a| FiringView {
                    alertname: a.labels.get("alertname"),
                    severity: a.labels.get("severity"),
                    component: a.labels.get("component"),
                    summary: a.annotations.get("summary"),
                    runbook_url: a.annotations.get("runbook_url"),
                    starts_at: &a.starts_at,
                    last_notified: at(a.received_ms),
                    labels: &a.labels,
                })
                .collect(),
            sender,
        }
    }
}

/// Why the pipeline is down, as `/api/health` and the page show it.
fn reasons(reasons: &[Reason]) -> Vec<ReasonView<'_>> {
    reasons
        .iter()
        .map(|r| ReasonView {
            check: r.check,
            message: &r.message,
            since: at(r.since_ms),
        })
        .collect()
}
