//! Rolling windows of check latencies: percentiles, slow and critical
//! counts, a rating, the slowest recent checks, and regression detection
//! (the recent median against the older part of the window).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::PerfConfig;

/// One check's latency and when it ended: 8 bytes, since every component
/// keeps a window of them (10,000 components × 200 samples is 16 MB; with
/// f64 and SystemTime it was three times that).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Microseconds, up to 71 minutes (longer checks count as that long):
    /// exact in the milliseconds the JSON shows with two decimals.
    us: u32,
    /// Unix seconds (the JSON shows seconds).
    at: u32,
}

impl Sample {
    pub fn new(d: Duration, at: SystemTime) -> Sample {
        let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Sample {
            us: u32::try_from(d.as_micros()).unwrap_or(u32::MAX),
            at: u32::try_from(secs).unwrap_or(u32::MAX),
        }
    }

    pub fn ms(&self) -> f64 {
        f64::from(self.us) / 1000.0
    }

    pub fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::from(self.at))
    }
}

/// The last `window` check latencies of one component.
#[derive(Clone, Debug, Default)]
pub struct Window {
    samples: VecDeque<Sample>,
    /// Checks over the slow / critical thresholds since start.
    pub slow: u64,
    pub critical: u64,
    pub total: u64,
    /// The regression judgement after the latest sample (see [`Window::judge`]):
    /// `/api/health` and the `depwatch_check_*` gauges read this one.
    judgement: Option<Judgement>,
}

/// The recent median against the baseline median of one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judgement {
    pub baseline_ms: f64,
    pub recent_ms: f64,
    /// The recent median is at least `regression_factor` times the baseline.
    pub regressed: bool,
}

impl Window {
    pub fn push(&mut self, d: Duration, at: SystemTime, cfg: &PerfConfig) {
        if d > cfg.critical_above {
            self.critical += 1;
        } else if d > cfg.slow_above {
            self.slow += 1;
        }
        self.total += 1;
        let (len, cap) = (self.samples.len(), self.samples.capacity());
        if len == cap && cap * 2 > cfg.window {
            // The last growth: to the window exactly, not the next power
            // of two (a young window stays small).
            self.samples
                .reserve_exact(cfg.window.saturating_sub(len).max(1));
        }
        while self.samples.len() >= cfg.window.max(1) {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample::new(d, at));
        self.judgement = self.judge(cfg);
    }

    /// The judgement made after the latest sample; `None` until the window
    /// holds a full recent part and a baseline at least as long.
    pub fn judgement(&self) -> Option<Judgement> {
        self.judgement
    }

    /// `Some((baseline_median, recent_median))` when the latest judgement
    /// found a regression.
    pub fn regression(&self) -> Option<(f64, f64)> {
        self.judgement
            .filter(|j| j.regressed)
            .map(|j| (j.baseline_ms, j.recent_ms))
    }

    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    /// Compares the recent median with the baseline (the older part of the
    /// window): regressed when it is at least `regression_factor` times the
    /// baseline. Needs a full recent part and a baseline at least as long.
    fn judge(&self, cfg: &PerfConfig) -> Option<Judgement> {
        let n = self.samples.len();
        if n < cfg.recent * 2 {
            return None;
        }
        let mut base: Vec<f64> = self
            .samples
            .iter()
            .take(n - cfg.recent)
            .map(Sample::ms)
            .collect();
        let mut recent: Vec<f64> = self
            .samples
            .iter()
            .skip(n - cfg.recent)
            .map(Sample::ms)
            .collect();
        let b = percentile(&mut base, 50.0)?;
        let r = percentile(&mut recent, 50.0)?;
        // A baseline of (almost) zero would flag any noise: require 0.1 ms.
        Some(Judgement {
            baseline_ms: b,
            recent_ms: r,
            regressed: r >= b.max(0.1) * cfg.regression_factor,
        })
    }
}

/// Nearest-rank percentile of unsorted values (sorted in place).
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Rating {
    #[serde(rename = "EXCELLENT")]
    Excellent,
    #[serde(rename = "GOOD")]
    Good,
    #[serde(rename = "SLOW")]
    Slow,
    #[serde(rename = "CRITICAL")]
    Critical,
}

/// Rates a latency (the p95 of a window): EXCELLENT under `excellent_below`,
/// GOOD up to `slow_above`, SLOW up to `critical_above`, CRITICAL beyond.
pub fn rate(ms: f64, cfg: &PerfConfig) -> Rating {
    let ms_of = |d: Duration| d.as_secs_f64() * 1000.0;
    if ms < ms_of(cfg.excellent_below) {
        Rating::Excellent
    } else if ms <= ms_of(cfg.slow_above) {
        Rating::Good
    } else if ms <= ms_of(cfg.critical_above) {
        Rating::Slow
    } else {
        Rating::Critical
    }
}

/// Summary statistics of a set of windows.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Stats {
    pub checks: u64,
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub slow: u64,
    pub critical: u64,
    pub rating: Rating,
}

pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

pub fn stats<'a>(windows: impl Iterator<Item = &'a Window>, cfg: &PerfConfig) -> Option<Stats> {
    let mut all = Vec::new();
    let (mut checks, mut slow, mut critical) = (0, 0, 0);
    for w in windows {
        all.extend(w.samples.iter().map(Sample::ms));
        checks += w.total;
        slow += w.slow;
        critical += w.critical;
    }
    stats_of(&mut all, checks, slow, critical, cfg)
}

/// [`stats`] of latencies already gathered (reordered in place).
pub fn stats_of(
    all: &mut [f64],
    checks: u64,
    slow: u64,
    critical: u64,
    cfg: &PerfConfig,
) -> Option<Stats> {
    if all.is_empty() {
        return None;
    }
    let avg = all.iter().sum::<f64>() / all.len() as f64;
    let [p50, p95, p99] = percentiles(all, [50.0, 95.0, 99.0]);
    Some(Stats {
        checks,
        avg_ms: round2(avg),
        p50_ms: round2(p50),
        p95_ms: round2(p95),
        p99_ms: round2(p99),
        slow,
        critical,
        rating: rate(p95, cfg),
    })
}

/// Nearest-rank percentiles (ascending `ps`) of non-empty values, by
/// selection instead of a sort: linear in the number of values, which
/// matters across 10,000 windows. The values are reordered in place.
pub fn percentiles<const N: usize>(values: &mut [f64], ps: [f64; N]) -> [f64; N] {
    let n = values.len();
    let mut done = 0; // values[..done] hold the ranks already selected, in order
    ps.map(|p| {
        let k = (((p / 100.0) * n as f64).ceil() as usize).clamp(1, n) - 1;
        if k >= done {
            values[done..].select_nth_unstable_by(k - done, f64::total_cmp);
            done = k + 1;
        }
        values[k]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PerfConfig {
        PerfConfig {
            window: 40,
            recent: 10,
            ..PerfConfig::default()
        }
    }

    fn window(ms: &[f64]) -> Window {
        let mut w = Window::default();
        for m in ms {
            w.push(
                Duration::from_secs_f64(m / 1000.0),
                SystemTime::now(),
                &cfg(),
            );
        }
        w
    }

    #[test]
    fn percentiles_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(50.0));
        assert_eq!(percentile(&mut v, 95.0), Some(95.0));
        assert_eq!(percentile(&mut v, 99.0), Some(99.0));
        assert_eq!(percentile(&mut [7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn selected_percentiles_equal_sorted_ones() {
        let mut rng = fastrand::Rng::with_seed(7);
        for n in [1, 2, 3, 99, 100, 101, 1000, 4099] {
            let values: Vec<f64> = (0..n).map(|_| (rng.f64() * 50.0).round()).collect();
            let mut selected = values.clone();
            let got = percentiles(&mut selected, [50.0, 95.0, 99.0]);
            let want = [50.0, 95.0, 99.0].map(|p| percentile(&mut values.clone(), p).unwrap());
            assert_eq!(got, want, "n = {n}");
            let mut same = values.clone();
            assert_eq!(percentiles(&mut same, [99.0, 99.0]), [want[2], want[2]]);
        }
    }

    #[test]
    fn ratings_follow_thresholds() {
        let c = PerfConfig::default();
        assert_eq!(rate(3.0, &c), Rating::Excellent);
        assert_eq!(rate(10.0, &c), Rating::Good);
        assert_eq!(rate(100.0, &c), Rating::Good);
        assert_eq!(rate(101.0, &c), Rating::Slow);
        assert_eq!(rate(501.0, &c), Rating::Critical);
    }

    #[test]
    fn slow_and_critical_are_counted() {
        let w = window(&[5.0, 150.0, 600.0, 90.0]);
        assert_eq!((w.slow, w.critical, w.total), (1, 1, 4));
        let s = stats([&w].into_iter(), &cfg()).unwrap();
        assert_eq!(s.checks, 4);
        assert_eq!(s.p50_ms, 90.0);
        assert_eq!(s.rating, Rating::Critical);
    }

    #[test]
    fn window_is_bounded() {
        let w = window(&[1.0; 100]);
        assert_eq!(w.samples().count(), 40);
        assert_eq!(w.total, 100);
        // 8 bytes a sample, the window's worth and no more.
        assert_eq!(std::mem::size_of::<Sample>(), 8);
        assert!(w.samples.capacity() < 48, "{}", w.samples.capacity());
        assert!(window(&[1.0; 3]).samples.capacity() <= 8);
        let s = Sample::new(Duration::from_micros(3_900), SystemTime::UNIX_EPOCH);
        assert_eq!((s.ms(), s.at()), (3.9, SystemTime::UNIX_EPOCH));
        let long = Sample::new(Duration::from_secs(100_000), SystemTime::now());
        assert_eq!(long.ms(), f64::from(u32::MAX) / 1000.0);
    }

    #[test]
    fn regression_needs_doubling() {
        let mut ms = vec![2.0; 30];
        ms.extend([3.9; 10]);
        assert_eq!(window(&ms).regression(), None);
        assert_eq!(
            window(&ms).judgement(),
            Some(Judgement {
                baseline_ms: 2.0,
                recent_ms: 3.9,
                regressed: false
            })
        );
        let mut ms = vec![2.0; 30];
        ms.extend([5.0; 10]);
        assert_eq!(window(&ms).regression(), Some((2.0, 5.0)));
        // Recovered: the recent part is fast again.
        ms.extend([2.0; 10]);
        assert_eq!(window(&ms).regression(), None);
        // Too few samples to judge.
        assert_eq!(window(&[1.0, 1.0, 9.0]).judgement(), None);
    }
}
