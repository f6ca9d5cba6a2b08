//! `cargo bench`: the pieces of depwatch that run on every check or scrape,
//! timed directly (no framework: a warm-up, then the mean of N runs).
//!
//! - the storage forecast fit over a full default window (a week at 15 s);
//! - the state store: a week of samples queued, committed, loaded back;
//! - `/metrics` encoding with 200 components, OpenMetrics and 0.0.4 text,
//!   and with the general series of 10,000, then gzip;
//! - the performance summary over 200 windows of 200 latencies;
//! - the status page (`GET /`) of 20 components of four kinds, each with a
//!   full sparkline, queues, a storage history, log rules (and its weight);
//! - an http probe's `expect:` judging a 600-byte JSON answer by two
//!   pointers, beside what it replaced (the answer parsed into a `Value`).

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use depwatch::config::PerfConfig;
use depwatch::metrics::{ComponentKind, Metrics};
use depwatch::perf::{self, Window};
use depwatch::probe::Kind;
use depwatch::probe::storage::fit;
use depwatch::store::{StorageSample, Store};
use depwatch::util::time::unix_ms;

fn time<T>(name: &str, runs: u32, mut f: impl FnMut() -> T) -> Duration {
    for _ in 0..runs.div_ceil(10) {
        black_box(f());
    }
    let started = Instant::now();
    for _ in 0..runs {
        black_box(f());
    }
    let each = started.elapsed() / runs;
    println!("{name:<52} {each:>12.2?} per run ({runs} runs)");
    each
}

fn bench_fit() {
    const GIB: f64 = 1073741824.0;
    let mut rng = fastrand::Rng::with_seed(5);
    let rate = GIB / 86_400.0;
    let n = 7 * 86_400 / 15;
    let pts: Vec<(f64, f64)> = (0..n)
        .map(|i| {
            let t = i as f64 * 15.0;
            let base = 100.0 * GIB + rate * t + (rng.f64() - 0.5) * 1e7;
            (t, if i > 20_000 { base - 20.0 * GIB } else { base })
        })
        .collect();
    time(
        &format!("storage fit, {n} samples with a clean-up"),
        50,
        || fit(&pts, 1048576.0),
    );
}

fn bench_store(rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open the store");
    let t0 = unix_ms(SystemTime::now()) - 8 * 86_400_000;
    let n = 40_320i64;
    let started = Instant::now();
    for i in 0..n {
        let used = i as u64;
        store.storage_append(
            "disk",
            "/",
            StorageSample {
                at_ms: t0 + i * 15_000,
                used,
                size: 1 << 40,
                available: (1 << 40) - used,
            },
        );
    }
    let queued = started.elapsed();
    rt.block_on(store.flush()).expect("flush");
    let total = started.elapsed();
    println!(
        "{:<52} {:>12.2?} per write queued, {:.0} writes/s committed",
        format!("state store, {n} samples (a week at 15 s)"),
        queued / n as u32,
        n as f64 / total.as_secs_f64()
    );
    time("state store, load a week of history", 10, || {
        rt.block_on(store.storage_history("disk", "/", 0))
            .map(|h| h.len())
    });
}

fn bench_metrics() {
    let m = Metrics::new();
    let buckets: std::sync::Arc<[f64]> = Kind::Http.buckets().into();
    for i in 0..200 {
        let l = ComponentKind {
            component: format!("component-{i}").into(),
            kind: Kind::Http,
        };
        m.checks.get_or_create(&l).inc();
        m.up.get_or_create(&l).set(1);
        m.check_duration.observe(&l, &buckets, 0.01);
    }
    let bytes = m.encode_openmetrics().len();
    time(
        &format!("/metrics OpenMetrics, 200 components ({bytes} B)"),
        200,
        || m.encode_openmetrics(),
    );
    time("/metrics 0.0.4 text, 200 components", 200, || {
        m.encode_text()
    });
}

/// The general families of 10,000 http components (what a check writes,
/// without the http probe's own), encoded, then compressed as a scrape
/// that asks for gzip gets it.
fn bench_metrics_10k() {
    use depwatch::metrics::ComponentStatus;
    use depwatch::metrics::exposition::Deflated;
    use depwatch::metrics::kit::ComponentOnly;
    use depwatch::probe::Status;
    let m = Metrics::new();
    let buckets: std::sync::Arc<[f64]> = Kind::Http.buckets().into();
    for i in 0..10_000 {
        let l = ComponentKind {
            component: format!("p{i:04}").into(),
            kind: Kind::Http,
        };
        let only = ComponentOnly {
            component: l.component.clone(),
        };
        m.checks.get_or_create(&l).inc();
        m.up.get_or_create(&l).set(1);
        for status in Status::ALL {
            m.status
                .get_or_create(&ComponentStatus {
                    component: l.component.clone(),
                    kind: Kind::Http,
                    status,
                })
                .set(i64::from(status == Status::Healthy));
        }
        m.consecutive_failures.get_or_create(&only).set(0);
        m.last_success
            .get_or_create(&only)
            .set(1.764e9 + f64::from(i));
        m.regression.get_or_create(&only).set(0);
        m.baseline_p50.get_or_create(&only).set(0.000_512);
        m.recent_p50.get_or_create(&only).set(0.000_498);
        m.check_duration
            .observe(&l, &buckets, 0.000_4 + f64::from(i % 7) * 1e-4);
    }
    let body = m.encode_openmetrics();
    let lines = body.lines().count();
    time(
        &format!("/metrics OpenMetrics, 10k components ({lines} lines)"),
        20,
        || m.encode_openmetrics(),
    );
    time("/metrics 0.0.4 text, 10k components", 20, || {
        m.encode_text()
    });
    let gz = Deflated::new(body.as_bytes()).compressed_len();
    time(
        &format!("gzip of it ({} B → {gz} B)", body.len()),
        20,
        || Deflated::new(body.as_bytes()),
    );
}

fn bench_perf() {
    let cfg = PerfConfig::default();
    let mut rng = fastrand::Rng::with_seed(7);
    let windows: Vec<Window> = (0..200)
        .map(|_| {
            let mut w = Window::default();
            for _ in 0..cfg.window {
                w.push(
                    Duration::from_micros(rng.u64(200..20_000)),
                    SystemTime::now(),
                    &cfg,
                );
            }
            w
        })
        .collect();
    time("performance summary, 200 windows x 200 checks", 100, || {
        perf::stats(windows.iter(), &cfg)
    });
}

/// A probe answering fixed details (or failing), for the page benchmark.
struct Canned {
    details: serde_json::Value,
    fail: bool,
    chart: Option<Vec<(i64, f64)>>,
}

impl depwatch::probe::Probe for Canned {
    fn check(&self) -> depwatch::probe::BoxFuture<'_, depwatch::probe::CheckResult> {
        let details = match &self.details {
            serde_json::Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        let fail = self.fail;
        Box::pin(async move {
            if fail {
                let mut e = depwatch::probe::CheckError::new(
                    depwatch::probe::Reason::Connect,
                    "Connection refused (os error 111)",
                );
                e.details = details.into();
                Err(e)
            } else {
                Ok(depwatch::probe::Outcome::healthy(details))
            }
        })
    }

    fn chart(&self, _points: usize) -> Option<Vec<(i64, f64)>> {
        self.chart.clone()
    }
}

/// 20 components (5 each of redis with queues, storage, http, log), each
/// checked 200 times, as the page shows them.
fn page_of_20(rt: &tokio::runtime::Runtime) -> depwatch::http::page::Page {
    use depwatch::http::page::{Page, Row};
    use serde_json::json;
    let mut yaml = String::from("probes:\n");
    for i in 0..5 {
        yaml.push_str(&format!(
            "  - {{ name: jobs-{i}, kind: redis, url: \"redis://127.0.0.1:6379/0\" }}\n  - {{ name: disk-{i}, kind: storage, path: . }}\n  - {{ name: partner-api-{i}, kind: http, url: \"https://partner{i}.example/health\" }}\n  - name: app-log-{i}\n    kind: log\n    files: [/var/log/app.log]\n    rules: [ {{ metric: sync_ops, duration: {{ field: duration }} }} ]\n"
        ));
    }
    let config =
        depwatch::config::from_str(&yaml, "bench", None, std::path::Path::new("."), &|_| None)
            .expect("the bench configuration");
    let metrics = std::sync::Arc::new(Metrics::new());
    let now = unix_ms(SystemTime::now());
    let mut rows = Vec::new();
    for (i, p) in config.probes.iter().enumerate() {
        let (details, chart) = match p.kind() {
            Kind::Redis => (
                json!({ "redis_version": "7.2.4", "used_memory_bytes": 73_400_320u64, "maxmemory_bytes": 268_435_456u64,
                    "evicted_keys": 12, "keys": { "db0": 18_204 }, "hit_rate": 0.9166, "connected_clients": 14,
                    "queues": { "partner-sync": { "waiting": 1204, "active": 3, "delayed": 12, "failed": 7, "completed": 9120,
                        "paused": false, "oldest_waiting_age_seconds": 95.2, "oldest_active_age_seconds": 31.0, "stalled": 0 },
                        "emails": { "waiting": 0, "active": 1, "delayed": 0, "failed": 0, "completed": 412, "stalled": 0 } } }),
                None,
            ),
            Kind::Storage => (
                json!({ "path": "/var/lib/app", "size_bytes": 536_870_912_000u64, "used_bytes": 402_653_184_000u64,
                    "available_bytes": 134_217_728_000u64, "used_percent": 75.0, "inodes": 33_554_432, "inodes_used": 1_204_332,
                    "forecast": { "window": "7d", "samples": 40320, "growth_bytes_per_second": 15_000.0,
                        "growth_per_day": "1.2 GiB", "days_until_full": 103.5, "trend": "growing" } }),
                Some(
                    (0..96)
                        .map(|k| (now - (96 - k) * 6_300_000, 4.0e11 + k as f64 * 9.4e7))
                        .collect(),
                ),
            ),
            Kind::Http => (
                json!({ "url": "https://partner.example/health", "status_code": 200, "body_bytes": 512, "redirects": 0,
                    "tls_version": "TLSv1.3", "cert_expires_in_days": 83.6,
                    "phases_ms": { "dns": 0.4, "connect": 1.1, "tls": 6.2, "first_byte": 41.0, "transfer": 0.3, "total": 49.0 } }),
                None,
            ),
            _ => (
                json!({ "lines": { "matched": 120_440, "unmatched": 5210, "invalid": 3 },
                    "files": [ { "path": "/var/log/app/app.log", "offset": 48_213_330, "size": 48_213_330, "lag_bytes": 0, "rotated": false } ],
                    "rules": { "sync_operations": { "matched": 120_440, "last_match": "2026-11-21T10:29:58Z",
                        "latency": { "window_seconds": 900, "count": 1804, "mean_ms": 1840.2, "min_ms": 12.0, "max_ms": 97535.5,
                            "p50_ms": 1104.0, "p95_ms": 6020.0, "p99_ms": 31250.0,
                            "histogram": (1..=12).map(|b| json!({ "le_ms": b as f64 * 500.0, "count": 200 / b })).collect::<Vec<_>>() },
                        "slowest": (0..5).map(|k| json!({ "ms": 97535.5 - k as f64 * 1000.0, "at": "2026-11-21T10:21:07Z",
                            "fields": { "operation": "field_sync", "status": "success", "user_id": format!("u-14{k}") } })).collect::<Vec<_>>() } } }),
                None,
            ),
        };
        let c = std::sync::Arc::new(depwatch::component::Component::new(
            p.clone(),
            std::sync::Arc::new(Canned {
                details,
                fail: i % 7 == 3,
                chart,
            }),
            metrics.clone(),
            config.health.performance.clone(),
            depwatch::metrics::kit::SeriesGate::default(),
        ));
        for _ in 0..config.health.performance.window {
            rt.block_on(c.run_check(tokio::time::Instant::now()));
        }
        rows.push(Row::of(&c));
    }
    let mut counts = [0; 4];
    for r in &rows {
        counts[match r.latest.status {
            Some(depwatch::probe::Status::Healthy) => 0,
            Some(depwatch::probe::Status::Degraded) => 1,
            Some(depwatch::probe::Status::Unhealthy) => 2,
            None => 3,
        }] += 1;
    }
    Page {
        total: rows.len(),
        counts,
        chips: Vec::new(),
        shown: depwatch::http::page::Shown::All,
        now: SystemTime::now(),
        version: depwatch::util::build::VERSION,
        uptime_s: 86_400.0,
        verdict: depwatch::probe::Status::Degraded,
        since_ms: Some(now - 600_000),
        alerting: json!({ "mode": "fallback", "pipeline": "ok", "reasons": [], "last_scrape": "2026-11-21T10:29:55Z",
            "last_heartbeat": "2026-11-21T10:29:40Z", "open_incidents": [], "last_email": null, "firing": [] }),
        rows,
        performance: std::sync::Arc::new(
            json!({ "checks": 4000, "avg_ms": 3.2, "p50_ms": 1.8, "p95_ms": 9.7, "p99_ms": 41.0,
            "slow": 2, "critical": 0, "rating": "EXCELLENT", "regressions": [],
            "top_slowest": [ { "component": "partner-api-1", "ms": 812.0, "at": "…" } ] }),
        ),
        cache: json!({ "hits": 9120, "misses": 830, "hit_rate": 0.9166, "entries": 18, "ttl_seconds": 5 }),
        slow_ms: 100.0,
        critical_ms: 500.0,
        refresh_s: 15,
    }
}

fn bench_page(rt: &tokio::runtime::Runtime) {
    let page = page_of_20(rt);
    let html = depwatch::http::page::render(&page);
    if let Ok(path) = std::env::var("DEPWATCH_BENCH_PAGE") {
        std::fs::write(path, &html).expect("write the page");
    }
    println!(
        "{:<52} {:>12} bytes",
        "status page weight, 20 components",
        html.len()
    );
    time("status page render, 20 components", 2000, || {
        depwatch::http::page::render(&page)
    });
    let components: Vec<_> = page.rows.iter().map(|r| r.component.clone()).collect();
    time(
        "status page rows read + render, 20 components",
        2000,
        || {
            let rows = components
                .iter()
                .map(depwatch::http::page::Row::of)
                .collect();
            let p = depwatch::http::page::Page {
                rows,
                alerting: page.alerting.clone(),
                cache: page.cache.clone(),
                performance: page.performance.clone(),
                ..page_shell(&page)
            };
            depwatch::http::page::render(&p)
        },
    );
}

/// The page's scalar fields (the rest is filled in by the caller).
fn page_shell(p: &depwatch::http::page::Page) -> depwatch::http::page::Page {
    depwatch::http::page::Page {
        now: p.now,
        version: p.version,
        uptime_s: p.uptime_s,
        verdict: p.verdict,
        since_ms: p.since_ms,
        alerting: serde_json::Value::Null,
        rows: Vec::new(),
        chips: Vec::new(),
        shown: p.shown.clone(),
        total: p.total,
        counts: p.counts,
        performance: p.performance.clone(),
        cache: serde_json::Value::Null,
        slow_ms: p.slow_ms,
        critical_ms: p.critical_ms,
        refresh_s: p.refresh_s,
    }
}

fn bench_expect() {
    use depwatch::probe::http::Expect;
    use serde_json::{Value, json};
    let body = json!({
        "status": "ok",
        "version": "4.12.1",
        "uptime_seconds": 1_234_567,
        "checks": {
            "database": { "status": "ok", "latency_ms": 3.2, "pool": { "idle": 7, "busy": 3 } },
            "cache": { "status": "ok", "latency_ms": 0.4, "hit_rate": 0.93 },
            "queue": { "status": "ok", "depth": 12, "workers": [1, 2, 3, 4, 5, 6, 7, 8] },
        },
        "build": { "commit": "0123456789abcdef0123456789abcdef01234567", "date": "2026-12-06T06:00:00Z" },
        "notes": "x".repeat(250),
    })
    .to_string()
    .into_bytes();
    let answer = depwatch::net::Answer {
        status: hyper::StatusCode::OK,
        headers: hyper::HeaderMap::new(),
        body,
    };
    let expect = Expect {
        status: vec![depwatch::probe::http::expect::StatusPat::Class(2)],
        body_contains: vec![],
        body_regex: vec![],
        body_json: vec![
            ("/status".into(), json!("ok")),
            ("/checks/database/status".into(), json!("ok")),
        ],
        body_json_exists: vec![],
        headers: vec![],
    };
    assert!(expect.judge(&answer).is_ok());
    let bytes = answer.body.len();
    let now = time(
        &format!("expect: 2 pointers in {bytes} B of JSON"),
        200_000,
        || expect.judge(&answer).is_ok(),
    );
    let before = time("expect: the same by a Value tree (before)", 200_000, || {
        let v: Value = serde_json::from_slice(&answer.body).unwrap();
        v.pointer("/status") == Some(&json!("ok"))
            && v.pointer("/checks/database/status") == Some(&json!("ok"))
    });
    println!(
        "{:<52} {:>12.2}x",
        "expect: Value tree / now",
        before.as_secs_f64() / now.as_secs_f64()
    );
}

fn main() {
    // `cargo bench -- <filter>` passes extra arguments; run everything unless one names a part.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if wants("fit") {
        bench_fit();
    }
    if wants("store") {
        bench_store(&rt);
    }
    if wants("metrics") {
        bench_metrics();
        bench_metrics_10k();
    }
    if wants("perf") {
        bench_perf();
    }
    if wants("page") {
        bench_page(&rt);
    }
    if wants("expect") {
        bench_expect();
    }
}
