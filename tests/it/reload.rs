//! Reloads that change the components: what a removed component leaves
//! behind (its series, its tasks) while its checks are still in flight.

use std::time::Duration;

use crate::support::*;

const SECS20: Duration = Duration::from_secs(20);

/// `n` process probes of generation `generation` (names `p<i>-<generation>`),
/// checked often so that a reload always finds some of them in flight.
fn renamed_probes(n: usize, generation: usize) -> String {
    let mut y = String::from("probes:\n");
    for i in 0..n {
        y.push_str(&format!(
            "  - name: p{i}-{generation}\n    kind: process\n    self: true\n    interval: 100ms\n    timeout: 90ms\n    jitter: 90ms\n"
        ));
    }
    y
}

/// Rewrites the configuration to `generation`, sends SIGHUP and waits until
/// the health answer knows the new names (the reload completed).
async fn reload_to(dw: &Depwatch, n: usize, generation: usize) {
    reload_with(dw, &renamed_probes(n, generation), n, generation).await;
}

/// [`reload_to`] with any configuration of `n` probes named `p<i>-<generation>`.
async fn reload_with(dw: &Depwatch, yaml: &str, n: usize, generation: usize) {
    dw.rewrite_config(yaml);
    dw.proc.signal("HUP");
    let probe = format!("/api/health?component=p{}-{generation}", n - 1);
    wait_for("the reload to complete", SECS20, || async {
        (dw.get(&probe).await.0 != 404).then_some(())
    })
    .await;
}

/// The series of `/metrics` whose component label belongs to a generation
/// other than `current`.
fn stale_series(m: &Metrics, current: usize) -> Vec<String> {
    let suffix = format!("-{current}\"");
    m.text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.contains("component=\"p") && !l.contains(&suffix))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn renaming_reloads_leave_no_series_of_removed_components() {
    const N: usize = 200;
    const RELOADS: usize = 30;
    let dw = Depwatch::start(&renamed_probes(N, 0)).await;
    for generation in 1..=RELOADS {
        reload_to(&dw, N, generation).await;
    }
    // Every component of the last generation checked 4 times (at least
    // 300ms after the last reload): a check of an older one that was in
    // flight at its reload has ended (timeout 90ms), so whatever it could
    // still write is written.
    let last = format!("-{RELOADS}\"");
    let m = dw
        .wait_metrics("the last generation checked 4 times", SECS20, |m| {
            let counts: Vec<f64> = m
                .text
                .lines()
                .filter(|l| l.starts_with("depwatch_checks_total{") && l.contains(&last))
                .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                .collect();
            counts.len() == N && counts.iter().all(|c| *c >= 4.0)
        })
        .await;
    let stale = stale_series(&m, RELOADS);
    assert!(
        stale.is_empty(),
        "{} series of removed components remain, e.g.:\n{}",
        stale.len(),
        stale[..stale.len().min(20)].join("\n")
    );
}

/// A field of /proc/PID/status (`Threads`, `VmRSS`...).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in:\n{status}"))
}

#[tokio::test]
async fn renaming_reloads_do_not_grow_threads() {
    const N: usize = 300;
    const RELOADS: usize = 40;
    let dw = Depwatch::start(&renamed_probes(N, 0)).await;
    // Each reload starts N components whose first checks all fall within
    // their jitter: a burst of samples on the blocking pool every time.
    for generation in 1..=RELOADS {
        reload_to(&dw, N, generation).await;
    }
    let threads = proc_status(dw.proc.pid(), "Threads");
    let cores = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2) as u64;
    // tokio's workers (one per core), the process samplers (one per core,
    // at least two), the main thread, the checks' thread, the state store's
    // writer, and a few of tokio's blocking pool (opening the store). Not
    // per probe, not per reload: before the samplers, every burst of first
    // checks left blocking threads behind (39 here on 2 cores).
    let bound = 2 * cores + 5;
    assert!(
        threads <= bound,
        "{threads} threads after {RELOADS} reloads of {N} probes (bound {bound})"
    );
}

/// `n` log probes of generation `generation`, all tailing `file`.
fn renamed_log_probes(n: usize, generation: usize, file: &std::path::Path) -> String {
    let mut y = String::from("probes:\n");
    for i in 0..n {
        y.push_str(&format!(
            "  - name: p{i}-{generation}\n    kind: log\n    files: [{}]\n    poll_interval: 10ms\n    interval: 1s\n    timeout: 900ms\n    rules:\n      - metric: hits\n",
            file.display()
        ));
    }
    y
}

#[tokio::test]
async fn renaming_reloads_of_log_probes_do_not_grow_threads() {
    const N: usize = 200;
    const WARM_UP: usize = 5;
    const RELOADS: usize = 30;
    let logs = tempfile::tempdir().unwrap();
    let file = logs.path().join("app.log");
    std::fs::write(&file, "{\"msg\":\"hello\"}\n".repeat(1000)).unwrap();
    let dw = Depwatch::start(&renamed_log_probes(N, 0, &file)).await;
    let mut warm = 0;
    for generation in 1..=WARM_UP + RELOADS {
        reload_with(
            &dw,
            &renamed_log_probes(N, generation, &file),
            N,
            generation,
        )
        .await;
        if generation == WARM_UP {
            warm = proc_status(dw.proc.pid(), "Threads");
        }
    }
    let threads = proc_status(dw.proc.pid(), "Threads");
    let cores = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2) as u64;
    // tokio's workers and the file pollers (one per core each), the main
    // thread, the state store's writer, and a few of tokio's blocking pool
    // (opening the store, offset loads one at a time). Not per probe, not
    // per reload: polls on the blocking pool left 217 threads here.
    let bound = 2 * cores + 6;
    assert!(
        threads <= bound,
        "{threads} threads after {} reloads of {N} log probes (bound {bound}; {warm} after {WARM_UP})",
        WARM_UP + RELOADS
    );
}
