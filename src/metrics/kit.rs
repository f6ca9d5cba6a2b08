//! The building blocks of metric families that every probe kind uses: a
//! float gauge, a counter set from elsewhere, a histogram family whose
//! series have their own buckets, the per-component label set, label values
//! made safe, and the gate that keeps a removed component's series removed.
//! Nothing here knows the probe kinds.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::util::sync::{read, write};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentOnly {
    pub component: String,
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

/// A histogram family whose series each have their own buckets (a
/// component's, from its kind or its configuration). prometheus-client's
/// `Family` makes every series with one constructor that cannot see the
/// labels; this one takes the buckets at the first observation. It encodes
/// exactly as a `Family<S, Histogram>` does: one `encode_family` per series.
#[derive(Debug)]
pub struct Histograms<S> {
    series: Arc<RwLock<HashMap<S, Bucketed>>>,
}

/// A series of [`Histograms`]: the buckets it was made with, and itself.
type Bucketed = (Arc<[f64]>, Histogram);

impl<S> Clone for Histograms<S> {
    fn clone(&self) -> Self {
        Histograms {
            series: self.series.clone(),
        }
    }
}

impl<S> Default for Histograms<S> {
    fn default() -> Self {
        Histograms {
            series: Arc::default(),
        }
    }
}

impl<S: Clone + Hash + Eq> Histograms<S> {
    /// Observes `v` in the series `labels`, made with `buckets` when it
    /// does not exist. A series made with other buckets (a reload changed
    /// them) starts over with the new ones: Prometheus reads that as a
    /// counter reset, as after a restart.
    pub fn observe(&self, labels: &S, buckets: &Arc<[f64]>, v: f64) {
        if let Some((b, h)) = read(&self.series).get(labels)
            && **b == **buckets
        {
            h.observe(v);
            return;
        }
        let mut w = write(&self.series);
        let (b, h) = w
            .entry(labels.clone())
            .or_insert_with(|| (buckets.clone(), Histogram::new(buckets.iter().copied())));
        if **b != **buckets {
            *b = buckets.clone();
            *h = Histogram::new(buckets.iter().copied());
        }
        h.observe(v);
    }

    /// Drops the series `labels`; whether it existed.
    pub fn remove(&self, labels: &S) -> bool {
        write(&self.series).remove(labels).is_some()
    }
}

impl<S> TypedMetric for Histograms<S> {
    const TYPE: MetricType = MetricType::Histogram;
}

impl<S: EncodeLabelSet + std::fmt::Debug + Send + Sync> EncodeMetric for Histograms<S> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, (_, h)) in read(&self.series).iter() {
            h.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }

    fn is_empty(&self) -> bool {
        read(&self.series).is_empty()
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
    fn histograms_encode_as_a_family_does() {
        use prometheus_client::metrics::family::Family;
        use prometheus_client::registry::Registry;
        let buckets: Arc<[f64]> = Arc::from([0.1, 1.0].as_slice());
        let family = Family::<ComponentOnly, Histogram, _>::new_with_constructor(|| {
            Histogram::new([0.1, 1.0])
        });
        let ours = Histograms::<ComponentOnly>::default();
        let l = ComponentOnly {
            component: "a".into(),
        };
        for v in [0.05, 0.5, 3.0] {
            family.get_or_create(&l).observe(v);
            ours.observe(&l, &buckets, v);
        }
        let text = |m: Box<dyn FnOnce(&mut Registry)>| {
            let mut r = Registry::default();
            m(&mut r);
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
            out
        };
        let a = text(Box::new(move |r| r.register("d_seconds", "D", family)));
        let b = text(Box::new({
            let ours = ours.clone();
            move |r| r.register("d_seconds", "D", ours)
        }));
        assert_eq!(a, b);
        assert!(
            b.contains("d_seconds_bucket{le=\"1.0\",component=\"a\"} 2"),
            "{b}"
        );

        // Other buckets (a reload changed them): the series starts over.
        let more: Arc<[f64]> = Arc::from([0.1, 1.0, 5.0].as_slice());
        ours.observe(&l, &more, 3.0);
        let c = text(Box::new({
            let ours = ours.clone();
            move |r| r.register("d_seconds", "D", ours)
        }));
        assert!(c.contains("d_seconds_count{component=\"a\"} 1"), "{c}");
        assert!(
            c.contains("d_seconds_bucket{le=\"5.0\",component=\"a\"} 1"),
            "{c}"
        );
        assert!(ours.remove(&l));
        assert!(ours.is_empty());
    }

    #[test]
    fn label_values_lose_control_characters() {
        assert_eq!(label_safe("a\0b\nc"), "a\u{FFFD}b\u{FFFD}c");
        assert!(matches!(
            label_safe("plain λ"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
