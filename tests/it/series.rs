//! How many series a component costs in `/metrics`: an http target against
//! a real partner API on loopback stays within its budget once every series
//! it will ever have in health exists (the regression medians included),
//! its failure series appear with its first failure, its check duration is
//! the request's own time, and `buckets:` sets the histogram's bounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::support::*;

/// The most series one healthy `kind: http` target (plain http) may have.
const HTTP_BUDGET: usize = 24;

/// Aborts a server task when the test ends.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A partner API on a free loopback port that answers `/health` with the
/// status held in the returned cell.
async fn partner() -> (u16, Arc<AtomicU16>, Task) {
    let status = Arc::new(AtomicU16::new(200));
    let app = Router::new()
        .route(
            "/health",
            get(|State(s): State<Arc<AtomicU16>>| async move {
                let code = StatusCode::from_u16(s.load(Ordering::Relaxed)).unwrap();
                (code, "{\"status\":\"ok\"}")
            }),
        )
        .with_state(status.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (port, status, Task(task))
}

/// The sample lines of `component` in an exposition.
fn series_of<'a>(text: &'a str, component: &str) -> Vec<&'a str> {
    let needle = format!("component=\"{component}\"");
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&needle))
        .collect()
}

/// The `le` bounds of a component's check duration histogram, in order.
fn bounds(m: &Metrics, component: &str) -> Vec<String> {
    series_of(&m.text, component)
        .into_iter()
        .filter(|l| l.starts_with("depwatch_check_duration_seconds_bucket"))
        .filter_map(|l| {
            let rest = &l[l.find("le=\"")? + 4..];
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

#[tokio::test]
async fn an_http_target_stays_within_its_series_budget() {
    let (port, status, _srv) = partner().await;
    // A short regression window, so that its two medians (series a target
    // has for good after 40 checks by default) exist within a second.
    let dw = Depwatch::start(&format!(
        "health:\n  performance: {{ window: 4, recent: 2 }}\n\
         probes:\n\
         \x20 - {{ name: api, kind: http, url: \"http://127.0.0.1:{port}/health\", interval: 200ms, timeout: 150ms, jitter: 0s, failure_threshold: 1 }}\n\
         \x20 - {{ name: tuned, kind: http, url: \"http://127.0.0.1:{port}/health\", interval: 200ms, timeout: 150ms, jitter: 0s, buckets: [0.05, 1] }}\n"
    ))
    .await;
    let api = [("component", "api")];
    let m = dw
        .wait_metrics("the regression medians", Duration::from_secs(20), |m| {
            m.get("depwatch_check_recent_p50_seconds", &api).is_some()
                && m.get("depwatch_check_baseline_p50_seconds", &api).is_some()
        })
        .await;
    let lines = series_of(&m.text, "api");
    assert!(
        lines.len() <= HTTP_BUDGET,
        "{} series for one http target, more than {HTTP_BUDGET}:\n{}",
        lines.len(),
        lines.join("\n")
    );
    // The default buckets of kind http (2 s is PartnerApiSlow's threshold).
    assert_eq!(bounds(&m, "api"), ["0.1", "0.5", "2.0", "5.0", "+Inf"]);
    assert_eq!(bounds(&m, "tuned"), ["0.05", "1.0", "+Inf"]);
    // Retired: the check duration is the same observation.
    assert!(
        !m.text.contains("depwatch_http_duration_seconds"),
        "{}",
        m.text
    );
    // Never failed: no failure series of either family.
    for family in [
        "depwatch_check_failures_total",
        "depwatch_http_request_failures_total",
    ] {
        assert!(m.matching(family, &api).is_empty(), "{}", m.text);
    }

    // The first failure creates its reason's series, in both families.
    status.store(500, Ordering::Relaxed);
    let failed = [("component", "api"), ("kind", "http"), ("reason", "status")];
    let m = dw
        .wait_metrics("the failure series", Duration::from_secs(10), |m| {
            m.get("depwatch_check_failures_total", &failed).is_some()
        })
        .await;
    assert!(
        m.value("depwatch_check_failures_total", &failed) >= 1.0,
        "{}",
        m.text
    );
    assert!(
        m.value(
            "depwatch_http_request_failures_total",
            &[("component", "api"), ("reason", "status"), ("code", "500")]
        ) >= 1.0,
        "{}",
        m.text
    );
    // Only the reason that happened: one series more in each family.
    assert_eq!(
        m.matching("depwatch_check_failures_total", &api).len(),
        1,
        "{}",
        m.text
    );
    assert_eq!(
        series_of(&m.text, "api").len(),
        lines.len() + 2,
        "{}",
        m.text
    );
}

#[tokio::test]
async fn the_http_check_duration_is_the_request() {
    let (port, _status, _srv) = partner().await;
    let dw = Depwatch::start(&format!(
        "health:\n  cache_ttl: 1h\nprobes:\n\
         \x20 - {{ name: api, kind: http, url: \"http://127.0.0.1:{port}/health\", interval: 1h, timeout: 1s, jitter: 0s }}\n"
    ))
    .await;
    let labels = [("component", "api"), ("kind", "http")];
    let m = dw
        .wait_metrics("the first check", Duration::from_secs(15), |m| {
            m.get("depwatch_check_duration_seconds_count", &labels) == Some(1.0)
        })
        .await;
    let (_, h) = dw.health("?component=api").await;
    let c = &h["components"]["api"];
    // /api/health shows both rounded to 0.01 ms.
    let total_ms = c["details"]["phases_ms"]["total"].as_f64().unwrap();
    let response_ms = c["response_time_ms"].as_f64().unwrap();
    assert!((response_ms - total_ms).abs() <= 0.01 + 1e-9, "{c}");
    let sum = m.value("depwatch_check_duration_seconds_sum", &labels);
    assert!(
        (sum * 1000.0 - total_ms).abs() <= 0.005 + 1e-9,
        "histogram sum {sum}s, request {total_ms}ms"
    );
}
