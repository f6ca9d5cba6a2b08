//! Cache invalidation by tag and by event, end to end: a log line of a rule
//! with `invalidates` drops the named component's cached result and checks
//! it now (debounced per `cache_ttl`), `?tag=` on the admin endpoints
//! drops or runs every tagged component, a reload drops what it changed,
//! and the `cache` section of `/api/health` counts it all.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::redis::RedisServer;
use crate::support::*;

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "refresh-admin-token";

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn checks(m: &Metrics, component: &str) -> f64 {
    m.matching("depwatch_checks_total", &[("component", component)])
        .iter()
        .map(|(_, v)| v)
        .sum()
}

fn invalidations(m: &Metrics, cause: &str) -> f64 {
    m.value(
        "depwatch_health_cache_invalidations_total",
        &[("cause", cause)],
    )
}

/// Waits until the log probe counted `n` matching lines.
async fn wait_lines(dw: &Depwatch, n: f64) {
    dw.wait_metrics(&format!("{n} matched log lines"), WAIT, |m| {
        m.get(
            "depwatch_log_lines_total",
            &[("component", "app-log"), ("result", "matched")],
        ) == Some(n)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_line_refreshes_the_named_component() {
    let redis = RedisServer::start(None);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let ttl = Duration::from_secs(3);
    let yaml = format!(
        "health: {{ cache_ttl: 3s }}\nprobes:\n  - name: jobs\n    kind: redis\n    url: {}\n    interval: 1h\n    jitter: 0s\n    tags: [partners]\n\
         \x20 - name: app-log\n    kind: log\n    files: [{}]\n    poll_interval: 50ms\n    interval: 1h\n    jitter: 0s\n    rules:\n      - metric: syncs\n        match: {{ message: Sync operation completed }}\n        invalidates: [jobs]\n",
        redis.url(),
        log.display()
    );
    let dw = Depwatch::start(&yaml).await;
    let m = dw
        .wait_metrics("the first check of jobs", WAIT, |m| {
            checks(m, "jobs") == 1.0
        })
        .await;
    assert_eq!(invalidations(&m, "event"), 0.0);
    // The tailer is at the end of the file once it reports the file.
    dw.wait_metrics("the log file opened", WAIT, |m| {
        m.get("depwatch_log_files", &[("component", "app-log")]) == Some(1.0)
    })
    .await;

    let started = Instant::now();
    append(
        &log,
        "{\"message\":\"Sync operation completed\",\"partner\":\"lotw\"}\n",
    );
    let m = dw
        .wait_metrics("jobs checked again after the sync line", WAIT, |m| {
            checks(m, "jobs") == 2.0
        })
        .await;
    assert_eq!(invalidations(&m, "event"), 1.0);
    // The first health request after the sync sees the fresh result: a hit.
    let (code, h) = dw.health("?component=jobs").await;
    assert_eq!(code, 200, "{h}");
    assert_eq!(
        h["cache"]["components"]["jobs"],
        json!({"hits": 1, "misses": 0}),
        "{h}"
    );
    assert_eq!(checks(&dw.metrics().await, "jobs"), 2.0);

    // Two more syncs inside the TTL: one refresh at its end, not two.
    append(
        &log,
        "{\"message\":\"Sync operation completed\",\"partner\":\"dcl\"}\n",
    );
    wait_lines(&dw, 2.0).await;
    append(
        &log,
        "{\"message\":\"Sync operation completed\",\"partner\":\"qrz\"}\n",
    );
    wait_lines(&dw, 3.0).await;
    let m = dw
        .wait_metrics("the debounced refresh", WAIT, |m| checks(m, "jobs") == 3.0)
        .await;
    // At most one event refresh per TTL since the first line.
    let allowed = 1.0 + (started.elapsed().as_secs_f64() / ttl.as_secs_f64()).floor();
    let events = invalidations(&m, "event");
    assert!(
        (2.0..=allowed).contains(&events),
        "{events} event invalidations in {:?} (ttl {ttl:?})",
        started.elapsed()
    );
    let (_, h) = dw.health("").await;
    assert!(
        h["cache"]["valid"].as_u64().is_some() && h["cache"]["expired"].as_u64().is_some(),
        "{h}"
    );
}

fn process(name: &str, tags: &str) -> String {
    format!(
        "  - name: {name}\n    kind: process\n    self: true\n    interval: 1h\n    jitter: 0s\n{tags}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_select_what_admin_requests_drop_and_run() {
    let probes = format!(
        "{}{}{}",
        process("billing-api", "    tags: [partners, billing]\n"),
        process("maps-api", "    tags: [partners]\n"),
        process("self", "")
    );
    let yaml =
        format!("health: {{ cache_ttl: 1m }}\nauth: {{ admin_token: {TOKEN} }}\nprobes:\n{probes}");
    let dw = Depwatch::start(&yaml).await;
    dw.wait_metrics("every first check", WAIT, |m| {
        ["billing-api", "maps-api", "self"]
            .iter()
            .all(|c| checks(m, c) == 1.0)
    })
    .await;
    let (_, h) = dw.health("").await;
    assert_eq!(h["cache"]["valid"], 3, "{h}");
    assert_eq!(h["cache"]["expired"], 0, "{h}");

    let (code, body) = dw
        .post("/api/admin/cache/invalidate?tag=partners", Some(TOKEN))
        .await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["invalidated"], 2, "{v}");
    assert_eq!(v["components"], json!(["billing-api", "maps-api"]), "{v}");
    let m = dw.metrics().await;
    assert_eq!(invalidations(&m, "admin"), 2.0);

    // The tagged ones are misses (checked anew), the other a hit.
    let (_, h) = dw.health("").await;
    let cache = &h["cache"];
    assert_eq!(
        cache["components"]["billing-api"],
        json!({"hits": 1, "misses": 1}),
        "{cache}"
    );
    assert_eq!(
        cache["components"]["self"],
        json!({"hits": 2, "misses": 0}),
        "{cache}"
    );
    assert_eq!(cache["valid"], 3, "{cache}");
    let m = dw.metrics().await;
    assert_eq!(
        (
            checks(&m, "billing-api"),
            checks(&m, "maps-api"),
            checks(&m, "self")
        ),
        (2.0, 2.0, 1.0)
    );

    // Run the tagged ones now.
    let (code, body) = dw
        .post("/api/admin/probes/run?tag=billing", Some(TOKEN))
        .await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ran"], 1, "{v}");
    assert_eq!(v["results"]["billing-api"]["status"], "healthy", "{v}");
    let m = dw.metrics().await;
    assert_eq!(
        (checks(&m, "billing-api"), checks(&m, "maps-api")),
        (3.0, 2.0)
    );

    // Mistakes answer with the reason.
    for (path, token, want) in [
        ("/api/admin/cache/invalidate?tag=nobody", Some(TOKEN), 404),
        ("/api/admin/probes/run?tag=nobody", Some(TOKEN), 404),
        (
            "/api/admin/cache/invalidate?tag=partners&component=self",
            Some(TOKEN),
            400,
        ),
        ("/api/admin/cache/invalidate?tag=partners", None, 401),
        (
            "/api/admin/probes/run?tag=partners",
            Some("wrong-token-x"),
            401,
        ),
    ] {
        let (code, body) = dw.post(path, token).await;
        assert_eq!(code, want, "{path}: {body}");
    }
    // None given: all of them.
    let (_, body) = dw.post("/api/admin/cache/invalidate", Some(TOKEN)).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["invalidated"], 3, "{v}");
    let (_, h) = dw.health("").await;
    assert_eq!(h["cache"]["valid"], 3, "{h}");

    // A reload that changes one component drops its cached result.
    let before = checks(&dw.metrics().await, "maps-api");
    dw.rewrite_config(&yaml.replace(
        "    tags: [partners]\n",
        "    tags: [partners]\n    critical: false\n",
    ));
    let (code, body) = dw.post("/-/reload", Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    let m = dw.metrics().await;
    assert_eq!(invalidations(&m, "reload"), 1.0);
    // Its old result is not served: it is checked anew under the new
    // configuration (by its new schedule or the next health request).
    dw.wait_metrics("maps-api checked after the reload", WAIT, |m| {
        checks(m, "maps-api") > before
    })
    .await;
    let (_, h) = dw.health("?component=maps-api").await;
    assert_eq!(h["components"]["maps-api"]["critical"], false, "{h}");
    assert_eq!(invalidations(&dw.metrics().await, "admin"), 5.0);
}
