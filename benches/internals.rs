//! `cargo bench`: the pieces of depwatch that run on every check or scrape,
//! timed directly (no framework: a warm-up, then the mean of N runs).
//!
//! - the storage forecast fit over a full default window (a week at 15 s);
//! - the state store: a week of samples queued, committed, loaded back;
//! - `/metrics` encoding with 200 components, OpenMetrics and 0.0.4 text;
//! - the performance summary over 200 windows of 200 latencies.

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
    for i in 0..200 {
        let l = ComponentKind {
            component: format!("component-{i}"),
            kind: Kind::Http,
        };
        m.checks.get_or_create(&l).inc();
        m.up.get_or_create(&l).set(1);
        m.check_duration.get_or_create(&l).observe(0.01);
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
    }
    if wants("perf") {
        bench_perf();
    }
}
