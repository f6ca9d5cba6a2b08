//! Inline SVG of the status page: the latency sparkline of a component's
//! recent checks (slow and critical checks marked), the storage history with
//! its fitted trend, and a latency histogram as small bars. Each drawing has
//! `role="img"` and a label that says in words what it shows.

use std::fmt::Write;

use super::text::{Esc, bytes, ms};

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
        r#"<svg class="spark" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="latency of the last {n} checks: {lo} to {hi}, {n_slow} slow, {n_crit} critical">"#,
        n = latencies.len(),
        lo = ms(min),
        hi = ms(max),
    );
    if slow < max {
        let _ = write!(
            out,
            r#"<line class="lim" x1="0" x2="{W}" y1="{y:.1}" y2="{y:.1}"/>"#,
            y = y(slow)
        );
    }
    out.push_str(r#"<polyline points=""#);
    for (i, v) in latencies.iter().enumerate() {
        let _ = write!(out, "{:.1},{:.1} ", 2.0 + i as f64 * step, y(*v));
    }
    out.push_str(r#""/>"#);
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
            r#"<circle class="{class}" cx="{:.1}" cy="{:.1}" r="2.4"/>"#,
            2.0 + i as f64 * step,
            y(*v)
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
        r#"<svg class="hist" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="used space over the last {span}: {a} to {b}{trend}">"#,
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
            r#"<line class="lim" x1="0" x2="{W}" y1="{v:.1}" y2="{v:.1}"/>"#,
            v = y(size)
        );
    }
    out.push_str(r#"<polyline points=""#);
    for (t, v) in points {
        let _ = write!(out, "{:.1},{:.1} ", x(*t as f64), y(*v));
    }
    out.push_str(r#""/>"#);
    if let (Some(a), Some(b)) = (trend_at(t0), trend_at(last.0 as f64)) {
        let _ = write!(
            out,
            r#"<line class="trend" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/>"#,
            x(t0),
            y(a),
            x(last.0 as f64),
            y(b)
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
        let y2 = trend
            .split(r#"y2=""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(trend.contains(r#"x2="238.0""#), "{s}");
        assert!(s.contains(&format!("238.0,{y2} ")), "{s}");
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
