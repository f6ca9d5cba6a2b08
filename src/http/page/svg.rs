//! Inline SVG of the status page: the latency sparkline of a component's
//! recent checks (slow and critical checks marked), the storage history with
//! its fitted trend, and a latency histogram as small bars. Each drawing has
//! `role="img"` and a label that says in words what it shows.

use std::fmt::Write;

use super::text::{Esc, bytes, ms};

/// Drawings use integer coordinates in tenths of a pixel (short to write,
/// quick to format); strokes do not scale (`vector-effect` in the CSS).
const S: f64 = 10.0;

/// A coordinate in tenths of a pixel.
fn c(v: f64) -> i64 {
    (v * S).round() as i64
}

/// A line through `points` (tenths of a pixel) as a path: the first point,
/// then steps relative to the one before (shorter than absolute points).
fn line_path(out: &mut String, points: impl Iterator<Item = (i64, i64)>) {
    out.push_str(r#"<path d=""#);
    let mut prev: Option<(i64, i64)> = None;
    for (x, y) in points {
        let _ = match prev {
            None => write!(out, "M{x},{y}l"),
            Some((px, py)) => write!(out, "{},{} ", x - px, y - py),
        };
        prev = Some((x, y));
    }
    out.push_str(r#""/>"#);
}

/// The sparkline of recent check latencies (ms, oldest first); checks above
/// `slow` are marked amber, above `critical` red.
pub fn sparkline(out: &mut String, latencies: &[f64], slow: f64, critical: f64) {
    const W: f64 = 120.0;
    const H: f64 = 28.0;
    if latencies.is_empty() {
        out.push_str(r#"<span class="mut">no checks yet</span>"#);
        return;
    }
    let max = latencies.iter().copied().fold(0.0, f64::max).max(1e-3);
    let min = latencies.iter().copied().fold(f64::INFINITY, f64::min);
    let n_slow = latencies
        .iter()
        .filter(|v| **v > slow && **v <= critical)
        .count();
    let n_crit = latencies.iter().filter(|v| **v > critical).count();
    let step = if latencies.len() > 1 {
        (W - 4.0) / (latencies.len() - 1) as f64
    } else {
        0.0
    };
    let y = |v: f64| H - 3.0 - (v / max) * (H - 6.0);
    let _ = write!(
        out,
        r#"<svg class="spark" viewBox="0 0 {vw} {vh}" width="{W}" height="{H}" role="img" aria-label="latency of the last {n} checks: {lo} to {hi}, {n_slow} slow, {n_crit} critical">"#,
        vw = c(W),
        vh = c(H),
        n = latencies.len(),
        lo = ms(min),
        hi = ms(max),
    );
    if slow < max {
        let _ = write!(
            out,
            r#"<line class="lim" x1="0" x2="{w}" y1="{y}" y2="{y}"/>"#,
            w = c(W),
            y = c(y(slow))
        );
    }
    line_path(
        out,
        latencies
            .iter()
            .enumerate()
            .map(|(i, v)| (c(2.0 + i as f64 * step), c(y(*v)))),
    );
    for (i, v) in latencies.iter().enumerate() {
        let class = if *v > critical {
            "crit"
        } else if *v > slow {
            "slow"
        } else {
            continue;
        };
        let _ = write!(
            out,
            r#"<circle class="{class}" cx="{}" cy="{}" r="24"/>"#,
            c(2.0 + i as f64 * step),
            c(y(*v))
        );
    }
    out.push_str("</svg>");
}

/// The used bytes over time with the fitted trend through the latest point
/// (`slope` bytes per second), and the size as the top line when in range.
pub fn history(out: &mut String, points: &[(i64, f64)], slope: Option<f64>, size: Option<f64>) {
    const W: f64 = 240.0;
    const H: f64 = 64.0;
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return;
    };
    if points.len() < 2 {
        return;
    }
    let t0 = first.0 as f64;
    let span = ((last.0 - first.0) as f64).max(1.0);
    let trend_at = |t: f64| slope.map(|s| last.1 + s * (t - last.0 as f64) / 1000.0);
    let mut lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    if let Some(v) = trend_at(t0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi - lo < 1.0 {
        hi += 1.0;
        lo -= 1.0;
    }
    let pad = (hi - lo) * 0.08;
    let (lo, hi) = (lo - pad, hi + pad);
    let x = |t: f64| 2.0 + (t - t0) / span * (W - 4.0);
    let y = |v: f64| H - 2.0 - (v - lo) / (hi - lo) * (H - 4.0);
    let _ = write!(
        out,
        r#"<svg class="hist" viewBox="0 0 {vw} {vh}" width="{W}" height="{H}" role="img" aria-label="used space over the last {span}: {a} to {b}{trend}">"#,
        vw = c(W),
        vh = c(H),
        span = super::text::age(span / 1000.0),
        a = bytes(first.1),
        b = bytes(last.1),
        trend = match slope {
            Some(s) => format!(", trend {}/day", bytes(s * 86_400.0)),
            None => String::new(),
        },
    );
    if let Some(size) = size.filter(|s| *s <= hi) {
        let _ = write!(
            out,
            r#"<line class="lim" x1="0" x2="{w}" y1="{v}" y2="{v}"/>"#,
            w = c(W),
            v = c(y(size))
        );
    }
    line_path(out, points.iter().map(|(t, v)| (c(x(*t as f64)), c(y(*v)))));
    if let (Some(a), Some(b)) = (trend_at(t0), trend_at(last.0 as f64)) {
        let _ = write!(
            out,
            r#"<line class="trend" x1="{}" y1="{}" x2="{}" y2="{}"/>"#,
            c(x(t0)),
            c(y(a)),
            c(x(last.0 as f64)),
            c(y(b))
        );
    }
    out.push_str("</svg>");
}

/// A latency histogram as small bars: `(upper bound in ms or None for the
/// rest, count)` per bucket, in order.
pub fn histogram(out: &mut String, buckets: &[(Option<f64>, u64)]) {
    const BAR: f64 = 8.0;
    const H: f64 = 32.0;
    if buckets.is_empty() {
        return;
    }
    let max = buckets.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let w = buckets.len() as f64 * (BAR + 2.0);
    let mut label = String::from("latency histogram: ");
    for (i, (le, n)) in buckets.iter().enumerate() {
        if i > 0 {
            label.push_str(", ");
        }
        match le {
            Some(le) => {
                let _ = write!(label, "{n} up to {}", ms(*le));
            }
            None => {
                let _ = write!(label, "{n} slower");
            }
        }
    }
    let _ = write!(
        out,
        r#"<svg class="bars" viewBox="0 0 {w} {H}" width="{w}" height="{H}" role="img" aria-label="{}">"#,
        Esc(&label)
    );
    for (i, (_, n)) in buckets.iter().enumerate() {
        let h = if *n == 0 {
            0.0
        } else {
            (*n as f64 / max * (H - 2.0)).max(1.5)
        };
        let _ = write!(
            out,
            r#"<rect x="{:.1}" y="{:.1}" width="{BAR}" height="{h:.1}"/>"#,
            i as f64 * (BAR + 2.0),
            H - h
        );
    }
    out.push_str("</svg>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sparkline_marks_slow_and_critical_checks() {
        let mut s = String::new();
        sparkline(&mut s, &[1.0, 150.0, 2.0, 900.0], 100.0, 500.0);
        assert_eq!(s.matches(r#"class="slow""#).count(), 1, "{s}");
        assert_eq!(s.matches(r#"class="crit""#).count(), 1, "{s}");
        assert!(s.contains("1 slow, 1 critical"), "{s}");
        assert!(s.ends_with("</svg>"));
    }

    #[test]
    fn the_history_draws_the_trend_through_the_latest_point() {
        let mut s = String::new();
        let pts = [(0, 100.0), (60_000, 160.0), (120_000, 220.0)];
        history(&mut s, &pts, Some(1.0), None);
        assert!(s.contains(r#"class="trend""#), "{s}");
        // The trend ends where the series ends (the last point, at x 238).
        let trend = s.split(r#"class="trend""#).nth(1).unwrap();
        assert!(trend.contains(r#"x2="2380""#), "{s}");
        let y2: i64 = trend
            .split(r#"y2=""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let d = s
            .split(r#"<path d="M"#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let (start, steps) = d.split_once('l').unwrap();
        let (mut x, mut y) = start
            .split_once(',')
            .map(|(a, b)| (a.parse::<i64>().unwrap(), b.parse::<i64>().unwrap()))
            .unwrap();
        for st in steps.split_whitespace() {
            let (dx, dy) = st.split_once(',').unwrap();
            x += dx.parse::<i64>().unwrap();
            y += dy.parse::<i64>().unwrap();
        }
        assert_eq!((x, y), (2380, y2), "{s}");
    }

    #[test]
    fn histogram_labels_say_the_counts() {
        let mut s = String::new();
        histogram(&mut s, &[(Some(100.0), 3), (Some(500.0), 0), (None, 1)]);
        assert!(
            s.contains("3 up to 100 ms, 0 up to 500 ms, 1 slower"),
            "{s}"
        );
        assert_eq!(s.matches("<rect").count(), 3);
    }
}
