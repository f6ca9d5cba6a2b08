//! The building blocks of metric families that every probe kind uses: a
//! float gauge, a counter set from elsewhere, the per-component label set,
//! label values made safe, and the gate that keeps a removed component's series removed.
//! Nothing here knows the probe kinds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentOnly {
    pub component: Arc<str>,
}

/// A float gauge.
pub type GaugeF = Gauge<f64, AtomicU64>;

/// A counter whose value is read from elsewhere (a process's CPU time, a
/// Redis INFO field): set, not incremented. A lower value is a reset, which
/// Prometheus' `rate()` handles.
#[derive(Clone, Debug, Default)]
pub struct AbsCounter(Arc<AtomicU64>);

impl AbsCounter {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

impl TypedMetric for AbsCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for AbsCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Keeps the series of a removed component removed.
///
/// Every write of a component's series (the general families in
/// `Component::record`, a probe's own families in its check) happens inside
/// [`SeriesGate::open`]. A reload that removes or replaces the component
/// [`retire`](SeriesGate::retire)s its gate and only then drops the series.
/// Retiring waits for a write in progress, and no write starts after it, so
/// a check still in flight cannot re-create a series: an aborted task being
/// polled on another worker, blocking work that outlives its future, a
/// future's `Drop` that records a timeout.
#[derive(Clone, Debug, Default)]
pub struct SeriesGate(Arc<RwLock<bool>>);

/// Held while a component's series are written: the gate cannot be retired
/// meanwhile. Sync code only (it is not `Send`); never open a gate twice on
/// one thread (a waiting `retire` would deadlock the second `open`).
pub struct SeriesWrite<'a> {
    _held: RwLockReadGuard<'a, bool>,
}

impl SeriesGate {
    /// `Some` while the component is live.
    pub fn open(&self) -> Option<SeriesWrite<'_>> {
        // A poisoned lock: a writer panicked; the flag is still a plain bool.
        let g = self.0.read().unwrap_or_else(|e| e.into_inner());
        (!*g).then_some(SeriesWrite { _held: g })
    }

    /// Closes the gate for good, once the write in progress (if any) ended.
    pub fn retire(&self) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = true;
    }

    pub fn is_retired(&self) -> bool {
        *self.0.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `c` may not appear raw in a label value: control characters
/// (NUL, CR, ESC, DEL, C1...). prometheus-client escapes only `\`, `"` and
/// newline, so anything else reaches scrapers (and `grep`, terminals, log
/// shippers) as it is.
pub(super) fn unsafe_in_label(c: char) -> bool {
    c.is_control()
}

/// `value` fit for a label: each control character (newline and tab too)
/// becomes U+FFFD. For values from data (log fields), applied before they
/// are counted, so that values differing only there share one series.
pub fn label_safe(value: &str) -> std::borrow::Cow<'_, str> {
    if value.chars().any(unsafe_in_label) {
        value
            .chars()
            .map(|c| if unsafe_in_label(c) { '\u{FFFD}' } else { c })
            .collect::<String>()
            .into()
    } else {
        value.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_lose_control_characters() {
        assert_eq!(label_safe("a\0b\nc"), "a\u{FFFD}b\u{FFFD}c");
        assert!(matches!(
            label_safe("plain λ"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
