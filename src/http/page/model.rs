//! What the status page shows, read at one moment: a [`Page`] of [`Row`]s.
//! Plain data, so that tests and benchmarks can render any state.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;

use crate::component::{Component, Latest};
use crate::probe::Status;

/// Checks drawn in a sparkline (the newest of the latency window).
pub const SPARK_POINTS: usize = 60;
/// Points of a storage history chart.
pub const CHART_POINTS: usize = 96;

/// One component as the page shows it.
pub struct Row {
    pub component: Arc<Component>,
    pub latest: Arc<Latest>,
    /// The newest check latencies (ms), oldest first.
    pub latencies: Vec<f64>,
    /// The probe's series (storage: used bytes over time).
    pub chart: Option<Vec<(i64, f64)>>,
}

impl Row {
    pub fn of(c: &Arc<Component>) -> Row {
        let w = c.perf();
        let n = w.samples().count();
        Row {
            component: c.clone(),
            latest: c.latest(),
            latencies: w
                .samples()
                .skip(n.saturating_sub(SPARK_POINTS))
                .map(crate::perf::Sample::ms)
                .collect(),
            chart: c.probe.chart(CHART_POINTS),
        }
    }
}

/// Up to this many components, the page shows every one in full.
pub const FULL_UP_TO: usize = 50;
/// Past [`FULL_UP_TO`] components, at most this many in full: those not
/// healthy, in the configuration's order.
pub const FULL_AT_MOST: usize = 100;

/// A component the page names only, with its state (past [`FULL_UP_TO`]
/// components: the healthy ones, and those not healthy past
/// [`FULL_AT_MOST`]). At 10,000 components every one in full would be a
/// page of 15 MB, fetched again every 10 s by each open tab.
pub struct Chip {
    pub component: Arc<Component>,
    pub status: Option<Status>,
}

/// Which components the page shows in full (`GET /`, `/?all`,
/// `/?component=NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shown {
    /// Every component (up to [`FULL_UP_TO`] of them, or `?all`).
    All,
    /// Those not healthy in full, the rest as [`Chip`]s.
    Compact,
    /// The one named (`?component=NAME`).
    One(String),
}

impl Shown {
    /// From the page's query string: `all` (any value) or `component=NAME`.
    pub fn of_query(query: Option<&str>) -> Option<Shown> {
        let mut shown = None;
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "all" => shown = Some(Shown::All),
                "component" => return Some(Shown::One(v.into_owned())),
                _ => {}
            }
        }
        shown
    }
}

/// Everything the page shows, read at one moment.
pub struct Page {
    pub now: SystemTime,
    pub version: &'static str,
    pub uptime_s: f64,
    pub verdict: Status,
    /// Since when the verdict holds (unix ms).
    pub since_ms: Option<i64>,
    /// The `alerting` section of `/api/health`.
    pub alerting: Value,
    /// The components shown in full.
    pub rows: Vec<Row>,
    /// The components named only.
    pub chips: Vec<Chip>,
    pub shown: Shown,
    /// Components configured.
    pub total: usize,
    /// Of every component configured: healthy, degraded, unhealthy, not
    /// checked yet.
    pub counts: [usize; 4],
    /// The `performance` section of `/api/health`.
    pub performance: Arc<Value>,
    /// The `cache` section of `/api/health`.
    pub cache: Value,
    /// Latency marks of the sparklines (`health.performance`).
    pub slow_ms: f64,
    pub critical_ms: f64,
    pub refresh_s: u32,
}
