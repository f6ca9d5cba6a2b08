//! Per-rule latency analytics for `/api/health`: count, mean, min and max
//! over a time window (exact, kept per time slot), percentiles over the most
//! recent samples of that window (exact over at most `MAX_SAMPLES`), and the
//! slowest recent operations above a rule's `slow_above`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// Percentiles are computed over at most this many recent samples: enough
/// for a stable p99, bounded in memory (16 bytes each) whatever the log rate.
pub const MAX_SAMPLES: usize = 8192;
/// The window is kept in this many slots (count/sum/min/max each).
const SLOTS: u32 = 60;

#[derive(Clone, Copy, Debug)]
struct Slot {
    start: Instant,
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
}

impl Latency {
    pub fn new(window: Duration) -> Self {
        Latency {
            window,
            slot_len: (window / SLOTS).max(Duration::from_millis(10)),
            slots: VecDeque::new(),
            samples: VecDeque::new(),
        }
    }

    pub fn observe(&mut self, now: Instant, secs: f64) {
        match self.slots.back_mut() {
            Some(s) if now.saturating_duration_since(s.start) < self.slot_len => {
                s.count += 1;
                s.sum += secs;
                s.min = s.min.min(secs);
                s.max = s.max.max(secs);
            }
            _ => self.slots.push_back(Slot {
                start: now,
                count: 1,
                sum: secs,
                min: secs,
                max: secs,
            }),
        }
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now, secs));
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        let Some(cut) = now.checked_sub(self.window) else {
            return;
        };
        while self
            .slots
            .front()
            .is_some_and(|s| s.start + self.slot_len <= cut)
        {
            self.slots.pop_front();
        }
        while self.samples.front().is_some_and(|(t, _)| *t < cut) {
            self.samples.pop_front();
        }
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
        for (key, q) in [("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)] {
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
