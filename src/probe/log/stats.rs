//! Per-rule latency analytics for `/api/health`: count, mean, min and max
//! over a time window (exact, kept per time slot), percentiles and the
//! latency histogram over the most recent samples of that window (exact
//! over at most `MAX_SAMPLES` for a rule, `GROUP_SAMPLES` for one category
//! of its `group_by`), and the slowest recent operations above a rule's
//! `slow_above`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// Percentiles are computed over at most this many recent samples: enough
/// for a stable p99, bounded in memory (16 bytes each) whatever the log rate.
pub const MAX_SAMPLES: usize = 8192;
/// The same for each category of a rule's `group_by` (up to
/// `max_label_values` categories per field).
pub const GROUP_SAMPLES: usize = 2048;
/// A `bucket_width` histogram shows at most this many buckets; slower
/// operations are counted in the last (+Inf) one.
pub const MAX_WIDTH_BUCKETS: usize = 200;
/// The window is kept in this many slots (count/sum/min/max each).
const SLOTS: u32 = 60;

#[derive(Clone, Copy, Debug)]
struct Slot {
    /// When the slot's first sample came plus the slot length: samples
    /// before it go in this slot (an Instant comparison per line, not a
    /// subtraction).
    end: Instant,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

/// Latency statistics of one rule over a sliding window.
#[derive(Debug)]
pub struct Latency {
    window: Duration,
    slot_len: Duration,
    slots: VecDeque<Slot>,
    samples: VecDeque<(Instant, f64)>,
    cap: usize,
}

/// How the latency histogram of `/api/health` is cut.
#[derive(Clone, Debug, PartialEq)]
pub enum Bins {
    /// Buckets of this many seconds each (`bucket_width`).
    Width(f64),
    /// The rule's duration buckets (upper bounds in seconds).
    Bounds(Vec<f64>),
}

impl Latency {
    pub fn new(window: Duration) -> Self {
        Self::with_cap(window, MAX_SAMPLES)
    }

    /// Keeps at most `cap` samples for percentiles.
    pub fn with_cap(window: Duration, cap: usize) -> Self {
        Latency {
            window,
            slot_len: (window / SLOTS).max(Duration::from_millis(10)),
            slots: VecDeque::new(),
            samples: VecDeque::new(),
            cap,
        }
    }

    pub fn observe(&mut self, now: Instant, secs: f64) {
        match self.slots.back_mut() {
            Some(s) if now < s.end => {
                s.count += 1;
                s.sum += secs;
                s.min = s.min.min(secs);
                s.max = s.max.max(secs);
            }
            _ => {
                self.slots.push_back(Slot {
                    end: now + self.slot_len,
                    count: 1,
                    sum: secs,
                    min: secs,
                    max: secs,
                });
                // Once per slot, not per line: the samples are capped
                // anyway, and every reader expires first.
                self.expire(now);
            }
        }
        if self.samples.len() >= self.cap {
            self.samples.pop_front();
        }
        self.samples.push_back((now, secs));
    }

    fn expire(&mut self, now: Instant) {
        let Some(cut) = now.checked_sub(self.window) else {
            return;
        };
        while self.slots.front().is_some_and(|s| s.end <= cut) {
            self.slots.pop_front();
        }
        while self.samples.front().is_some_and(|(t, _)| *t < cut) {
            self.samples.pop_front();
        }
    }

    /// Operations in the window (exact).
    pub fn count(&mut self, now: Instant) -> u64 {
        self.expire(now);
        self.slots.iter().map(|s| s.count).sum()
    }

    /// The `q` quantile (0..=1, nearest rank) of the kept samples, seconds.
    pub fn quantile(&mut self, now: Instant, q: f64) -> Option<f64> {
        self.expire(now);
        let mut values: Vec<f64> = self.samples.iter().map(|(_, v)| *v).collect();
        percentile(&mut values, q)
    }

    /// The summary with a latency histogram of the kept samples.
    pub fn summary_with(&mut self, now: Instant, bins: Option<&Bins>) -> Value {
        let mut v = self.summary(now);
        if let (Some(bins), Value::Object(m)) = (bins, &mut v) {
            m.insert("histogram".into(), self.histogram(bins));
        }
        v
    }

    /// Counts of the kept samples per bucket (not cumulative): each bucket
    /// counts the samples above the previous bound and at most its own
    /// `le_ms`; the last one (`le_ms: null`) the rest. Trailing empty
    /// buckets of a `bucket_width` histogram are left out.
    fn histogram(&self, bins: &Bins) -> Value {
        let bounds: Vec<f64> = match bins {
            Bins::Bounds(b) => b.clone(),
            Bins::Width(w) => {
                let max = self.samples.iter().map(|(_, v)| *v).fold(0.0, f64::max);
                let n = ((max / w).ceil() as usize).clamp(1, MAX_WIDTH_BUCKETS);
                (1..=n).map(|i| i as f64 * w).collect()
            }
        };
        let mut counts = vec![0u64; bounds.len() + 1];
        for (_, v) in &self.samples {
            counts[bounds.partition_point(|b| b < v)] += 1;
        }
        if matches!(bins, Bins::Width(_)) && counts.last() == Some(&0) {
            counts.pop();
        }
        let ms = |s: f64| round3(s * 1000.0);
        Value::Array(
            counts
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let le = bounds.get(i).map_or(Value::Null, |b| json!(ms(*b)));
                    json!({ "le_ms": le, "count": n })
                })
                .collect(),
        )
    }

    /// The statistics as shown in the component's details (milliseconds).
    pub fn summary(&mut self, now: Instant) -> Value {
        self.expire(now);
        let count: u64 = self.slots.iter().map(|s| s.count).sum();
        let mut out = Map::new();
        out.insert("window_seconds".into(), json!(self.window.as_secs_f64()));
        out.insert("count".into(), json!(count));
        if count == 0 {
            return Value::Object(out);
        }
        let sum: f64 = self.slots.iter().map(|s| s.sum).sum();
        let min = self
            .slots
            .iter()
            .map(|s| s.min)
            .fold(f64::INFINITY, f64::min);
        let max = self.slots.iter().map(|s| s.max).fold(0.0, f64::max);
        let mut values: Vec<f64> = self.samples.iter().map(|(_, v)| *v).collect();
        let ms = |s: f64| round3(s * 1000.0);
        out.insert("mean_ms".into(), json!(ms(sum / count as f64)));
        out.insert("min_ms".into(), json!(ms(min)));
        out.insert("max_ms".into(), json!(ms(max)));
        for (key, q) in [
            ("median_ms", 0.50),
            ("p50_ms", 0.50),
            ("p95_ms", 0.95),
            ("p99_ms", 0.99),
        ] {
            if let Some(v) = percentile(&mut values, q) {
                out.insert(key.into(), json!(ms(v)));
            }
        }
        if (values.len() as u64) < count {
            out.insert("percentile_samples".into(), json!(values.len()));
        }
        Value::Object(out)
    }
}

/// The nearest-rank percentile (the smallest value with at least `q` of the
/// values at or below it). Reorders `values`.
pub fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    let (_, v, _) = values.select_nth_unstable_by(rank - 1, f64::total_cmp);
    Some(*v)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// One slow operation: when, how long, and the rule's fields.
#[derive(Clone, Debug)]
pub struct SlowOp {
    pub seen: Instant,
    pub at: String,
    pub secs: f64,
    pub fields: Map<String, Value>,
}

/// The slow operations of a window; the top N are shown. Slow operations
/// are the exception, so keeping all of a window (bounded) is cheap.
#[derive(Debug)]
pub struct Slowest {
    window: Duration,
    top: usize,
    ops: VecDeque<SlowOp>,
}

/// At most this many slow operations are kept per rule.
const MAX_SLOW: usize = 1024;

impl Slowest {
    pub fn new(window: Duration, top: usize) -> Self {
        Slowest {
            window,
            top,
            ops: VecDeque::new(),
        }
    }

    pub fn push(&mut self, op: SlowOp) {
        if self.ops.len() == MAX_SLOW {
            // Keep the slowest: drop the fastest kept one.
            if let Some((i, _)) = self
                .ops
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.secs.total_cmp(&b.1.secs))
            {
                if self.ops[i].secs >= op.secs {
                    return;
                }
                self.ops.remove(i);
            }
        }
        self.ops.push_back(op);
    }

    pub fn summary(&mut self, now: Instant) -> Value {
        if let Some(cut) = now.checked_sub(self.window) {
            self.ops.retain(|o| o.seen >= cut);
        }
        let mut top: Vec<&SlowOp> = self.ops.iter().collect();
        top.sort_by(|a, b| b.secs.total_cmp(&a.secs));
        top.truncate(self.top);
        Value::Array(
            top.into_iter()
                .map(|o| {
                    json!({
                        "ms": round3(o.secs * 1000.0),
                        "at": o.at,
                        "fields": o.fields,
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(values: &[f64], q: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    proptest! {
        /// Percentiles agree with a sorted reference.
        #[test]
        fn percentiles_match_sorted(values in prop::collection::vec(0.0f64..1e6, 1..500), q in 0.0f64..=1.0) {
            let mut v = values.clone();
            prop_assert_eq!(percentile(&mut v, q), Some(reference(&values, q)));
        }
    }

    #[test]
    fn summary_over_window() {
        let t0 = Instant::now();
        let mut l = Latency::new(Duration::from_secs(60));
        for i in 1..=100 {
            l.observe(t0, f64::from(i) / 1000.0);
        }
        let s = l.summary(t0);
        assert_eq!(s["count"], 100);
        assert_eq!(s["min_ms"], 1.0);
        assert_eq!(s["max_ms"], 100.0);
        assert_eq!(s["mean_ms"], 50.5);
        assert_eq!(s["p50_ms"], 50.0);
        assert_eq!(s["p95_ms"], 95.0);
        assert_eq!(s["p99_ms"], 99.0);
        // Everything leaves the window.
        let s = l.summary(t0 + Duration::from_secs(200));
        assert_eq!(s["count"], 0);
    }

    #[test]
    fn histograms_by_width_and_bounds() {
        let t0 = Instant::now();
        let mut l = Latency::with_cap(Duration::from_secs(60), 4);
        for ms in [5.0, 100.0, 150.0, 999.0, 1000.0, 250.0] {
            l.observe(t0, ms / 1000.0);
        }
        // Only the latest 4 samples are kept: 150, 999, 1000, 250.
        let s = l.summary_with(t0, Some(&Bins::Width(0.5)));
        assert_eq!(s["count"], 6);
        assert_eq!(s["percentile_samples"], 4);
        assert_eq!(
            s["histogram"],
            json!([{ "le_ms": 500.0, "count": 2 }, { "le_ms": 1000.0, "count": 2 }])
        );
        let s = l.summary_with(t0, Some(&Bins::Bounds(vec![0.2, 0.5])));
        assert_eq!(
            s["histogram"],
            json!([
                { "le_ms": 200.0, "count": 1 },
                { "le_ms": 500.0, "count": 1 },
                { "le_ms": null, "count": 2 }
            ])
        );
        assert_eq!(l.quantile(t0, 0.5), Some(0.25));
        assert_eq!(s["median_ms"], s["p50_ms"]);
    }

    #[test]
    fn slowest_keeps_the_top() {
        let t0 = Instant::now();
        let mut s = Slowest::new(Duration::from_secs(60), 2);
        for secs in [3.0, 9.0, 1.0, 7.0] {
            s.push(SlowOp {
                seen: t0,
                at: "t".into(),
                secs,
                fields: Map::new(),
            });
        }
        let v = s.summary(t0);
        assert_eq!(v[0]["ms"], 9000.0);
        assert_eq!(v[1]["ms"], 7000.0);
        assert_eq!(v.as_array().map(Vec::len), Some(2));
    }
}
