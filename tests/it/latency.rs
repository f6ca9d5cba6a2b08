//! Latency by category and regressions, end to end: a log rule's
//! `group_by` statistics and histogram against values computed here from
//! the same generated durations, `latency_warn` / `latency_critical` turning
//! the component degraded / unhealthy with the category and how slow, and
//! `depwatch_check_regression` rising when a partner API slows from 5 ms to
//! 50 ms and falling when it recovers.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(30);

/// One generated operation: action, region, duration in ms.
type Op = (&'static str, &'static str, f64);

/// Deterministic durations per action (a small LCG: same run, same data),
/// each ending in .5 ms so that none sits on a bucket bound.
fn operations(n: usize, seed: u64) -> Vec<Op> {
    let mut x = seed;
    let mut next = |range: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % range
    };
    (0..n)
        .map(|_| {
            let (action, base, spread) = match next(3) {
                0 => ("get", 2, 60),
                1 => ("put", 40, 400),
                _ => ("audit", 300, 900),
            };
            let region = if next(2) == 0 { "eu" } else { "us" };
            (action, region, (base + next(spread)) as f64 + 0.5)
        })
        .collect()
}

fn line((action, region, ms): &Op) -> String {
    format!(
        "{}\n",
        json!({"level": "info", "message": "request done", "action": action, "region": region, "duration": ms})
    )
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Nearest-rank quantile, computed here independently of depwatch.
fn nearest_rank(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// What depwatch should show for these durations (ms): count, mean,
/// median, p50/p95/p99, min, max, and the counts per 100 ms bucket.
fn expected(ms: &[f64]) -> Value {
    let width = 100.0;
    let max = ms.iter().copied().fold(0.0, f64::max);
    let n = (max / width).ceil() as usize;
    let mut hist = vec![0u64; n];
    for v in ms {
        hist[((v / width).ceil() as usize).max(1) - 1] += 1;
    }
    json!({
        "count": ms.len(),
        "mean_ms": ms.iter().sum::<f64>() / ms.len() as f64,
        "median_ms": nearest_rank(ms, 0.5),
        "p50_ms": nearest_rank(ms, 0.5),
        "p95_ms": nearest_rank(ms, 0.95),
        "p99_ms": nearest_rank(ms, 0.99),
        "min_ms": ms.iter().copied().fold(f64::INFINITY, f64::min),
        "max_ms": max,
        "histogram": hist.iter().enumerate()
            .map(|(i, c)| json!({ "le_ms": (i + 1) as f64 * width, "count": c }))
            .collect::<Vec<_>>(),
    })
}

/// Compares depwatch's statistics with the expected ones: counts and
/// histogram exactly, the rest within the 0.001 ms rounding of its JSON
/// (the percentiles are exact while a category keeps all its samples).
fn assert_stats(what: &str, got: &Value, want: &Value) {
    for key in ["count", "histogram"] {
        assert_eq!(
            got[key], want[key],
            "{what}: {key}\n got {got}\nwant {want}"
        );
    }
    for key in [
        "mean_ms",
        "median_ms",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "min_ms",
        "max_ms",
    ] {
        let (g, w) = (got[key].as_f64(), want[key].as_f64().unwrap());
        assert!(
            g.is_some_and(|g| (g - w).abs() <= 0.0006),
            "{what}: {key} is {g:?}, expected {w}\n got {got}"
        );
    }
}

fn log_probe(dir: &Path, rules: &str) -> String {
    format!(
        "health: {{ cache_ttl: 100ms }}\nprobes:\n  - name: app-log\n    kind: log\n    interval: 300ms\n    timeout: 200ms\n    jitter: 0s\n    files: [{}/app.log]\n    start_at: beginning\n    poll_interval: 50ms\n    rules:\n{rules}",
        dir.display()
    )
}

async fn wait_matched(dw: &Depwatch, rule: &str, n: usize) -> Value {
    let (_, h) = dw
        .wait_health(&format!("rule {rule} matched {n}"), WAIT, |_, h| {
            h["components"]["app-log"]["details"]["rules"][rule]["matched"] == json!(n)
        })
        .await;
    h["components"]["app-log"]["details"]["rules"][rule].clone()
}

#[tokio::test]
async fn categories_match_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let ops = operations(900, 7);
    append(
        &dir.path().join("app.log"),
        &ops.iter().map(line).collect::<String>(),
    );
    let rules = "      - metric: requests\n        match: { message: request done }\n        duration: { field: duration }\n        group_by: [action]\n        bucket_width: 100ms\n\
                 \x20     - metric: requests_by_region\n        match: { message: request done }\n        duration: { field: duration, buckets: [0.1, 0.5] }\n        group_by: [action, region]\n";
    let dw = Depwatch::start(&log_probe(dir.path(), rules)).await;
    let rule = wait_matched(&dw, "requests", ops.len()).await;
    let cats = &rule["categories"];
    assert_eq!(cats["by"], json!(["action"]), "{cats}");
    let all: Vec<f64> = ops.iter().map(|o| o.2).collect();
    assert_stats("all", &cats["all"], &expected(&all));
    assert_stats("the rule's latency", &rule["latency"], &expected(&all));
    for action in ["get", "put", "audit"] {
        let ms: Vec<f64> = ops.iter().filter(|o| o.0 == action).map(|o| o.2).collect();
        assert!(ms.len() > 200, "{action}: {} operations", ms.len());
        let got = &cats["values"][action];
        assert_stats(action, got, &expected(&ms));
        assert_eq!(got["fields"], json!({ "action": action }));
    }
    assert_eq!(
        cats["values"].as_object().map(|m| m.len()),
        Some(3),
        "{cats}"
    );

    // Two fields: a category per combination, the histogram on the rule's buckets.
    let rule = wait_matched(&dw, "requests_by_region", ops.len()).await;
    let cats = &rule["categories"];
    assert_eq!(cats["by"], json!(["action", "region"]));
    for action in ["get", "put", "audit"] {
        for region in ["eu", "us"] {
            let ms: Vec<f64> = ops
                .iter()
                .filter(|o| o.0 == action && o.1 == region)
                .map(|o| o.2)
                .collect();
            let got = &cats["values"][format!("{action}/{region}")];
            assert_eq!(got["count"], json!(ms.len()), "{action}/{region}: {got}");
            assert_eq!(got["p95_ms"], json!(nearest_rank(&ms, 0.95)));
            let le = |lo: f64, hi: f64| ms.iter().filter(|v| **v > lo && **v <= hi).count();
            assert_eq!(
                got["histogram"],
                json!([
                    { "le_ms": 100.0, "count": le(0.0, 100.0) },
                    { "le_ms": 500.0, "count": le(100.0, 500.0) },
                    { "le_ms": null, "count": le(500.0, f64::INFINITY) },
                ]),
                "{action}/{region}"
            );
            assert_eq!(got["fields"], json!({ "action": action, "region": region }));
        }
    }
}

#[tokio::test]
async fn latency_levels_name_the_category_and_how_slow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    // get is fast; put's p95 is over latency_warn (200ms), under latency_critical (1s).
    let fast: Vec<Op> = (0..40).map(|i| ("get", "eu", 5.5 + i as f64)).collect();
    let slow: Vec<Op> = (0..40)
        .map(|i| ("put", "eu", 150.5 + 5.0 * i as f64))
        .collect();
    append(
        &path,
        &fast.iter().chain(&slow).map(line).collect::<String>(),
    );
    let rules = "      - metric: requests\n        match: { message: request done }\n        duration: { field: duration }\n        group_by: [action]\n        latency_warn: 200ms\n        latency_critical: 1s\n        latency_min_count: 10\n";
    let dw = Depwatch::start(&log_probe(dir.path(), rules)).await;
    let put: Vec<f64> = slow.iter().map(|o| o.2).collect();
    let p95 = nearest_rank(&put, 0.95);
    let (code, h) = dw
        .wait_health("app-log degraded by put", WAIT, |_, h| {
            h["components"]["app-log"]["status"] == "degraded"
        })
        .await;
    assert_eq!(code, 200);
    let error = h["components"]["app-log"]["error"].as_str().unwrap();
    assert_eq!(
        error,
        format!(
            "rule requests action=put: p95 {p95}ms over the last 15m (40 operations) is above latency_warn 200ms"
        ),
        "{h}"
    );
    let m = dw.metrics().await;
    let level = |cat: &str| {
        m.get(
            "depwatch_log_latency_level",
            &[
                ("component", "app-log"),
                ("rule", "requests"),
                ("category", cat),
            ],
        )
    };
    assert_eq!((level("get"), level("put")), (Some(0.0), Some(1.0)));
    let q = m.value(
        "depwatch_log_latency_quantile_seconds",
        &[
            ("component", "app-log"),
            ("rule", "requests"),
            ("category", "put"),
        ],
    );
    assert!((q - p95 / 1000.0).abs() < 1e-9, "{q} vs {p95}ms");

    // audit crosses latency_critical: unhealthy (503), both reasons kept.
    let audit: Vec<Op> = (0..20)
        .map(|i| ("audit", "us", 1500.0 + 10.0 * i as f64))
        .collect();
    append(&path, &audit.iter().map(line).collect::<String>());
    let (code, h) = dw
        .wait_health("app-log unhealthy by audit", WAIT, |_, h| {
            h["components"]["app-log"]["status"] == "unhealthy"
        })
        .await;
    assert_eq!(code, 503, "{h}");
    let error = h["components"]["app-log"]["error"].as_str().unwrap();
    let audit_p95 = nearest_rank(&audit.iter().map(|o| o.2).collect::<Vec<_>>(), 0.95);
    assert!(
        error.contains(&format!(
            "rule requests action=audit: p95 {}s over the last 15m (20 operations) is above latency_critical 1s",
            audit_p95 / 1000.0
        )) && error.contains("action=put: p95"),
        "{error}"
    );
}

/// A partner API answering after `delay_ms`.
async fn slow_partner(delay_ms: Arc<AtomicU64>) -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let d = delay_ms.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(d.load(Ordering::Relaxed))).await;
                axum::Json(json!({"status": "ok"}))
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_metric_rises_and_falls_with_the_partner_latency() {
    let delay = Arc::new(AtomicU64::new(5));
    let (port, task) = slow_partner(delay.clone()).await;
    let yaml = format!(
        "health:\n  cache_ttl: 100ms\n  performance: {{ window: 24, recent: 6 }}\nprobes:\n  - name: satloc\n    kind: http\n    url: http://127.0.0.1:{port}/health\n    interval: 100ms\n    timeout: 90ms\n    jitter: 0s\n"
    );
    let dw = Depwatch::start(&yaml).await;
    let sat = [("component", "satloc")];
    let m = dw
        .wait_metrics("a judgement at 5ms", WAIT, |m| {
            m.get("depwatch_check_baseline_p50_seconds", &sat).is_some()
        })
        .await;
    assert_eq!(m.get("depwatch_check_regression", &sat), Some(0.0));
    let base = m.value("depwatch_check_baseline_p50_seconds", &sat);
    assert!((0.005..0.045).contains(&base), "baseline {base}");

    delay.store(50, Ordering::Relaxed);
    let m = dw
        .wait_metrics("regressed at 50ms", WAIT, |m| {
            m.get("depwatch_check_regression", &sat) == Some(1.0)
        })
        .await;
    let recent = m.value("depwatch_check_recent_p50_seconds", &sat);
    let base = m.value("depwatch_check_baseline_p50_seconds", &sat);
    assert!(recent >= 0.05 && recent >= 2.0 * base, "{recent} vs {base}");
    // The same judgement in /api/health.
    let (_, h) = dw.health("").await;
    let listed = h["performance"]["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["component"] == "satloc");
    let m2 = dw.metrics().await;
    if m2.get("depwatch_check_regression", &sat) == Some(1.0) {
        assert!(listed, "{}", h["performance"]);
    }

    delay.store(5, Ordering::Relaxed);
    dw.wait_metrics("recovered at 5ms", WAIT, |m| {
        m.get("depwatch_check_regression", &sat) == Some(0.0)
            && m.get("depwatch_check_recent_p50_seconds", &sat)
                .unwrap_or(1.0)
                < 0.045
    })
    .await;
    task.abort();
}
