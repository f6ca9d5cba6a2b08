//! The storage forecast: a least-squares fit of used bytes over time that
//! sees clean-ups for what they are (see [`fit`]), and the days until the
//! available bytes are used up at the fitted growth. Pure maths: no I/O, no
//! clock, no metrics.

/// A fit needs this many samples before it says anything.
const MIN_SAMPLES: usize = 4;

/// The growth fitted over the window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    /// Bytes per second; negative when usage falls.
    pub slope: f64,
    pub samples: usize,
    pub span_seconds: f64,
    /// Drops (clean-ups) that split the series.
    pub deletions: usize,
    /// Grows by more than the noise (slope above twice its standard error).
    pub growing: bool,
}

impl Fit {
    /// Days until `available` bytes are used up at this growth; `None`
    /// unless the usage grows by more than the noise.
    pub fn days_until_full(&self, available: u64) -> Option<f64> {
        if !self.growing {
            return None;
        }
        let days = available as f64 / self.slope / 86_400.0;
        days.is_finite().then_some(days)
    }
}

/// Fits used bytes over time. `points` are (seconds, used bytes), oldest
/// first, at any spacing. `min_drop` is the smallest fall that counts as a
/// clean-up.
///
/// Why not plain least squares: a clean-up (a deletion of many files) in the
/// window would turn the line flat or negative while the disk keeps filling
/// at the same pace from a lower level. So the series is split at sudden
/// drops — falls far outside the step-to-step noise — and one common slope
/// is fitted across the pieces, each with its own level (a fixed-effects
/// regression). Steady shrinking has no sudden drop and stays negative.
/// When clean-ups recur (two or more), the growth between them says little
/// about filling up: the trend of the level each clean-up leaves behind is
/// reported instead (flat when they keep usage in check).
/// Regression on the real timestamps copes with irregular sampling and gaps.
pub fn fit(points: &[(f64, f64)], min_drop: f64) -> Option<Fit> {
    let n = points.len();
    if n < MIN_SAMPLES {
        return None;
    }
    let t0 = points[0].0;
    let span = points[n - 1].0 - t0;
    if span <= 0.0 {
        return None;
    }
    let cuts = deletions(points, min_drop);
    // Segments: [start, end) index ranges between cuts.
    let mut bounds = Vec::with_capacity(cuts.len() + 2);
    bounds.push(0);
    bounds.extend(cuts.iter().copied());
    bounds.push(n);
    let (mut sxx, mut sxy, mut used, mut groups) = (0.0, 0.0, 0usize, 0usize);
    let mut segs = Vec::new();
    for w in bounds.windows(2) {
        let seg = &points[w[0]..w[1]];
        if seg.len() < 2 {
            continue;
        }
        let k = seg.len() as f64;
        let tm = seg.iter().map(|p| p.0 - t0).sum::<f64>() / k;
        let ym = seg.iter().map(|p| p.1).sum::<f64>() / k;
        for p in seg {
            let dt = p.0 - t0 - tm;
            sxx += dt * dt;
            sxy += dt * (p.1 - ym);
        }
        used += seg.len();
        groups += 1;
        segs.push((seg, tm, ym));
    }
    if sxx <= 0.0 {
        return None;
    }
    let mut slope = sxy / sxx;
    let mut sse = 0.0;
    for (seg, tm, ym) in &segs {
        for p in *seg {
            let r = p.1 - ym - slope * (p.0 - t0 - tm);
            sse += r * r;
        }
    }
    let dof = used.saturating_sub(groups + 1);
    let se = if dof > 0 {
        (sse / dof as f64 / sxx).sqrt()
    } else {
        0.0
    };
    let mut growing = slope > 0.0 && slope > 2.0 * se;
    if cuts.len() >= 2 {
        // Recurring clean-ups: what matters is whether the level they leave
        // behind (the first sample after each) rises.
        let floors: Vec<(f64, f64)> = cuts.iter().map(|i| points[*i]).collect();
        slope = plain_slope(&floors);
        growing = slope > 0.0;
    }
    Some(Fit {
        slope,
        samples: n,
        span_seconds: span,
        deletions: cuts.len(),
        growing,
    })
}

/// Indices `i` where the step from `i-1` to `i` is a clean-up: a fall
/// larger than `min_drop` and far (6 robust sigmas) below the usual step
/// at that spacing.
fn deletions(points: &[(f64, f64)], min_drop: f64) -> Vec<usize> {
    let steps: Vec<(usize, f64, f64)> = points
        .windows(2)
        .enumerate()
        .map(|(i, w)| (i + 1, w[1].0 - w[0].0, w[1].1 - w[0].1))
        .collect();
    let rates: Vec<f64> = steps
        .iter()
        .filter(|s| s.1 > 0.0)
        .map(|s| s.2 / s.1)
        .collect();
    let rate = median(rates).unwrap_or(0.0);
    let resid: Vec<f64> = steps.iter().map(|s| s.2 - rate * s.1).collect();
    let mid = median(resid.clone()).unwrap_or(0.0);
    let sigma = 1.4826 * median(resid.iter().map(|r| (r - mid).abs()).collect()).unwrap_or(0.0);
    steps
        .iter()
        .zip(&resid)
        .filter(|((_, _, dy), r)| *dy < -min_drop && **r < mid - 6.0 * sigma)
        .map(|((i, _, _), _)| *i)
        .collect()
}

fn plain_slope(points: &[(f64, f64)]) -> f64 {
    let k = points.len() as f64;
    let tm = points.iter().map(|p| p.0).sum::<f64>() / k;
    let ym = points.iter().map(|p| p.1).sum::<f64>() / k;
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for p in points {
        sxx += (p.0 - tm) * (p.0 - tm);
        sxy += (p.0 - tm) * (p.1 - ym);
    }
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}

/// The median in linear time (a week of samples every check: no sort).
fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let m = v.len() / 2;
    let even = v.len().is_multiple_of(2);
    let (below, mid, _) = v.select_nth_unstable_by(m, f64::total_cmp);
    let mid = *mid;
    if even {
        let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((lower + mid) / 2.0)
    } else {
        Some(mid)
    }
}

/// The smallest fall that counts as a clean-up: 0.1% of the filesystem,
/// at least 1 MiB (a log rotation on a small disk is not a trend break).
pub(super) fn min_drop(size: u64) -> f64 {
    (size as f64 * 0.001).max(1048576.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = 1073741824.0;
    const DAY: f64 = 86_400.0;

    /// Relative error of `got` against `want`.
    fn rel(got: f64, want: f64) -> f64 {
        ((got - want) / want).abs()
    }

    fn series(n: usize, every: f64, mut f: impl FnMut(usize, f64) -> f64) -> Vec<(f64, f64)> {
        (0..n)
            .map(|i| {
                let t = i as f64 * every;
                (t, f(i, t))
            })
            .collect()
    }

    #[test]
    fn exact_linear_growth_within_one_percent() {
        let rate = 2.0 * GIB / DAY;
        let pts = series(7 * 96, 900.0, |_, t| 100.0 * GIB + rate * t);
        let f = fit(&pts, 1048576.0).unwrap();
        assert!(f.growing);
        assert!(rel(f.slope, rate) < 0.01, "{f:?}");
        assert_eq!(f.deletions, 0);
        // 60 GiB free at 2 GiB/day: 30 days.
        let days = 60.0 * GIB / f.slope / DAY;
        assert!(rel(days, 30.0) < 0.01, "{days}");
    }

    #[test]
    fn noisy_growth_within_ten_percent() {
        let rate = 1.0 * GIB / DAY;
        let mut rng = fastrand::Rng::with_seed(7);
        // Noise of ±2 GiB around a line that grows 7 GiB over the window.
        let pts = series(7 * 288, 300.0, |_, t| {
            50.0 * GIB + rate * t + (rng.f64() - 0.5) * 4.0 * GIB
        });
        let f = fit(&pts, 1048576.0).unwrap();
        assert!(f.growing, "{f:?}");
        assert!(rel(f.slope, rate) < 0.10, "{f:?}");
    }

    #[test]
    fn a_deletion_in_the_middle_keeps_the_growth_rate() {
        let rate = 3.0 * GIB / DAY;
        let pts = series(1000, 600.0, |i, t| {
            let base = 200.0 * GIB + rate * t;
            if i >= 500 { base - 150.0 * GIB } else { base }
        });
        let f = fit(&pts, 1048576.0).unwrap();
        assert_eq!(f.deletions, 1);
        assert!(f.growing);
        assert!(rel(f.slope, rate) < 0.01, "{f:?}");
        // A plain fit would have called this shrinking.
        assert!(plain_slope(&pts) < 0.0);
    }

    #[test]
    fn flat_usage_has_no_forecast() {
        let mut rng = fastrand::Rng::with_seed(3);
        let pts = series(500, 60.0, |_, _| 10.0 * GIB + (rng.f64() - 0.5) * 1e6);
        let f = fit(&pts, 1048576.0).unwrap();
        assert!(!f.growing, "{f:?}");
        let exact = series(50, 60.0, |_, _| 10.0 * GIB);
        let f = fit(&exact, 1048576.0).unwrap();
        assert!(!f.growing);
        assert_eq!(f.slope, 0.0);
    }

    #[test]
    fn shrinking_usage_has_no_forecast() {
        let rate = -GIB / DAY;
        let pts = series(500, 600.0, |_, t| 500.0 * GIB + rate * t);
        let f = fit(&pts, 1048576.0).unwrap();
        assert!(!f.growing);
        assert!(rel(f.slope, rate) < 0.01, "{f:?}");
        assert_eq!(f.deletions, 0, "steady shrinking is not a clean-up");
    }

    #[test]
    fn irregular_sampling_and_gaps() {
        let rate = 5.0 * 1048576.0 / 60.0; // 5 MiB a minute
        let mut rng = fastrand::Rng::with_seed(11);
        let mut t = 0.0;
        let mut pts = Vec::new();
        for i in 0..400 {
            // 5 s to 10 min apart, with a 6 h outage in the middle.
            t += 5.0 + rng.f64() * 595.0;
            if i == 200 {
                t += 6.0 * 3600.0;
            }
            pts.push((t, 20.0 * GIB + rate * t));
        }
        let f = fit(&pts, 1048576.0).unwrap();
        assert!(f.growing);
        assert_eq!(f.deletions, 0);
        assert!(rel(f.slope, rate) < 0.01, "{f:?}");
    }

    #[test]
    fn recurring_cleanups_that_keep_usage_flat_are_not_growth() {
        // Grows 10 GiB a day, cleaned back every day: a sawtooth.
        let pts = series(7 * 96, 900.0, |_, t| {
            100.0 * GIB + (t % DAY) / DAY * 10.0 * GIB
        });
        let f = fit(&pts, 1048576.0).unwrap();
        assert!(f.deletions >= 2, "{f:?}");
        assert!(!f.growing, "{f:?}");
    }

    #[test]
    fn too_few_samples_say_nothing() {
        assert_eq!(fit(&[(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)], 1.0), None);
        assert_eq!(fit(&[(5.0, 1.0); 10], 1.0), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
