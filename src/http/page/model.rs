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
    pub rows: Vec<Row>,
    /// The `performance` section of `/api/health`.
    pub performance: Arc<Value>,
    /// The `cache` section of `/api/health`.
    pub cache: Value,
    /// Latency marks of the sparklines (`health.performance`).
    pub slow_ms: f64,
    pub critical_ms: f64,
    pub refresh_s: u32,
}
