//! `router()` in process (no binary, no port): the health cache and its TTL
//! on a paused clock, `?component=`, the admin endpoints' 401/403/404,
//! a bad query's 400, `/metrics` content negotiation and `/healthz`, each
//! with [`FakeProbe`]s that count their checks.

use std::time::Duration;

use depwatch::probe::{CheckError, Reason};

use crate::support::*;

const TOKEN: &str = "router-test-token-0123456789";

/// Two components, `a` and `b`, never scheduled here; the cache keeps a
/// result for 5s.
fn yaml(extra: &str) -> String {
    format!(
        "health:\n  cache_ttl: 5s\n{extra}probes:\n  - name: a\n    kind: process\n    self: true\n  - name: b\n    kind: process\n    self: true\n    critical: false\n"
    )
}

fn with_token() -> String {
    yaml(&format!("auth:\n  admin_token: {TOKEN}\n"))
}

fn checks(app: &App) -> (usize, usize) {
    (app.probe("a").checks(), app.probe("b").checks())
}

#[tokio::test(start_paused = true)]
async fn health_is_served_from_the_cache_until_the_ttl_passes() {
    let app = App::new(&yaml(""));
    let (code, h) = app.health("").await;
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["status"], "healthy", "{h}");
    assert_eq!(checks(&app), (1, 1), "a miss checks each component once");
    assert_eq!(
        (&h["cache"]["hits"], &h["cache"]["misses"]),
        (&0.into(), &2.into())
    );

    // Within the TTL: answered from the cache, no check.
    tokio::time::advance(Duration::from_millis(4999)).await;
    let (_, h) = app.health("").await;
    assert_eq!(checks(&app), (1, 1), "{h}");
    assert_eq!(
        (&h["cache"]["hits"], &h["cache"]["misses"]),
        (&2.into(), &2.into())
    );
    assert_eq!(h["cache"]["entries"], 2, "{h}");
    assert_eq!(h["cache"]["ttl_seconds"], 5.0, "{h}");

    // At the TTL: a miss, checked again.
    tokio::time::advance(Duration::from_millis(1)).await;
    let (_, h) = app.health("").await;
    assert_eq!(checks(&app), (2, 2), "{h}");
    assert_eq!(h["cache"]["misses"], 4, "{h}");
}

#[tokio::test(start_paused = true)]
async fn invalidation_makes_the_next_request_check() {
    let app = App::new(&with_token());
    // A second apart (well within the TTL): on a paused clock a result
    // finished at the very instant of the next request is fresh anyway.
    let second = Duration::from_secs(1);
    app.health("").await;
    tokio::time::advance(second).await;
    app.health("").await;
    assert_eq!(checks(&app), (1, 1));

    let r = app
        .post("/api/admin/cache/invalidate?component=a", Some(TOKEN))
        .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            200,
            r#"{"invalidated":1,"components":["a"],"selected":["a"]}"#
        )
    );
    tokio::time::advance(second).await;
    app.health("").await;
    assert_eq!(checks(&app), (2, 1), "only `a` was invalidated");

    let r = app.post("/api/admin/cache/invalidate", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["invalidated"], 2, "{}", r.body);
    assert_eq!(r.json()["components"], serde_json::json!(["a", "b"]));
    tokio::time::advance(second).await;
    app.health("").await;
    assert_eq!(checks(&app), (3, 2));
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_share_one_check() {
    let app = App::new(&yaml(""));
    app.probe("a").delay(Duration::from_millis(300));
    let answers = futures_util::future::join_all((0..8).map(|_| app.health("?component=a"))).await;
    assert!(answers.iter().all(|(code, _)| *code == 200), "{answers:?}");
    assert_eq!(checks(&app), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn component_query_narrows_to_one_and_unknown_is_404() {
    let app = App::new(&yaml(""));
    let (code, h) = app.health("?component=b").await;
    assert_eq!(code, 200, "{h}");
    let names: Vec<&String> = h["components"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["b"], "{h}");
    assert_eq!(checks(&app), (0, 1), "only `b` is checked");

    let (code, h) = app.health("?component=nope").await;
    assert_eq!(code, 404, "{h}");
    assert_eq!(h["error"], "no component named `nope`");
    assert_eq!(checks(&app), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_failing_critical_component_is_503_with_its_reason() {
    let app = App::new(&yaml("defaults:\n  failure_threshold: 1\n"));
    app.probe("a")
        .answer(Err(CheckError::new(Reason::Connect, "connection refused")));
    let (code, h) = app.health("").await;
    assert_eq!(code, 503, "{h}");
    assert_eq!(h["status"], "unhealthy");
    let a = &h["components"]["a"];
    assert_eq!(
        (&a["status"], &a["reason"], &a["error"]),
        (
            &"unhealthy".into(),
            &"connect".into(),
            &"connection refused".into()
        ),
        "{h}"
    );
    // The non-critical one only degrades the verdict.
    let (code, h) = app.health("?component=b").await;
    assert_eq!((code, &h["status"]), (200, &"healthy".into()), "{h}");
}

#[tokio::test]
async fn admin_endpoints_answer_401_without_the_right_token() {
    let app = App::new(&with_token());
    for (path, token) in [
        ("/api/admin/cache/invalidate", None),
        ("/api/admin/cache/invalidate", Some("wrong")),
        ("/api/admin/probes/a/run", None),
        ("/api/admin/probes/a/run", Some(&TOKEN[1..])),
        ("/-/reload", None),
        ("/-/reload", Some("wrong")),
    ] {
        let r = app.post(path, token).await;
        assert_eq!(r.status, 401, "{path} {token:?}: {}", r.body);
        assert_eq!(r.header("www-authenticate"), "Bearer", "{path}");
        assert_eq!(
            r.json()["error"],
            "a valid admin bearer token is required",
            "{path}"
        );
    }
    assert_eq!(checks(&app), (0, 0), "nothing ran");
    // The right token runs the check now; an unknown probe is 404.
    let r = app.post("/api/admin/probes/a/run", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["result"]["status"], "healthy", "{}", r.body);
    assert_eq!(checks(&app), (1, 0));
    let r = app.post("/api/admin/probes/nope/run", Some(TOKEN)).await;
    assert_eq!(r.status, 404, "{}", r.body);
    // A name that is not UTF-8 once decoded: 400, in JSON.
    let r = app.post("/api/admin/probes/%FF/run", Some(TOKEN)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.header("content-type"), "application/json", "{}", r.body);
    let r = app
        .post("/api/admin/cache/invalidate?component=nope", Some(TOKEN))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
}

#[tokio::test]
async fn admin_endpoints_are_403_without_a_configured_token() {
    let app = App::new(&yaml(""));
    let r = app
        .post("/api/admin/cache/invalidate", Some("anything"))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("set auth.admin_token"), "{}", r.body);
}

/// The API's error text of an answer (`{"error": "…"}`).
fn error_of(r: &Answer) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn bad_queries_are_400() {
    let app = App::new(&yaml(""));
    // `/probe` without a target: refused before any check.
    let r = app.get("/probe").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(error_of(&r).contains("missing `target`"), "{}", r.body);
    let r = app.get("/probe?target=nobody").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("unknown target `nobody`"), "{}", r.body);
    // A query string that does not fit the handler's parameters: JSON,
    // as every other error of the API.
    let r = app.get("/api/health?component=a&component=b").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.header("content-type"), "application/json", "{}", r.body);
    assert!(
        error_of(&r).contains("duplicate field `component`"),
        "{}",
        r.body
    );
    let r = app.get("/probe?target=a&target=b").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.header("content-type"), "application/json", "{}", r.body);
    assert_eq!(checks(&app), (0, 0));
}

#[tokio::test]
async fn metrics_speak_openmetrics_when_asked_and_0_0_4_otherwise() {
    let app = App::new(&yaml(""));
    app.health("").await;

    let r = app
        .request(
            "GET",
            "/metrics",
            &[(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
    assert!(
        r.body
            .contains("depwatch_checks_total{component=\"a\",kind=\"process\"} 1"),
        "{}",
        r.body
    );

    for accept in [None, Some("text/plain;version=0.0.4"), Some("*/*")] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("accept", *a)).collect();
        let r = app.request("GET", "/metrics", &headers).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            "text/plain; version=0.0.4; charset=utf-8",
            "{accept:?}"
        );
        assert!(!r.body.contains("# EOF"), "{accept:?}");
        let m = Metrics::parse(&r.body);
        assert_eq!(
            m.value("depwatch_up", &[("component", "b"), ("kind", "process")]),
            1.0
        );
    }
}

#[tokio::test]
async fn healthz_and_unknown_paths() {
    let app = App::new(&yaml(""));
    // Also under the names the Prometheus tools answer to.
    for path in ["/healthz", "/-/healthy", "/-/ready"] {
        let r = app.get(path).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{path}");
    }
    assert_eq!(checks(&app), (0, 0), "/healthz checks nothing");
    let r = app.get("/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no such endpoint");
}

/// The status page and `/api/health` (whole or `?component=`) are gzip
/// when the client asks, plain when it does not (load balancers, curl),
/// and say `Vary: Accept-Encoding` either way; HEAD and short answers go
/// plain.
#[tokio::test]
async fn page_and_health_are_gzip_when_asked() {
    use std::io::Read;
    let app = App::new(&yaml(""));
    let send = |method: &'static str, path: &'static str, gzip: bool| {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        if gzip {
            req = req.header("Accept-Encoding", "br, gzip");
        }
        app.send_raw(req.body(axum::body::Body::empty()).unwrap())
    };
    let gunzip = |b: &[u8]| {
        let mut out = String::new();
        flate2::read::GzDecoder::new(b)
            .read_to_string(&mut out)
            .expect("a whole gzip member");
        out
    };
    for path in ["/", "/api/health", "/api/health?component=a"] {
        let (code, h, gz) = send("GET", path, true).await;
        assert_eq!(code, 200, "{path}");
        assert_eq!(h["content-encoding"], "gzip", "{path}");
        assert!(h.get("content-length").is_none(), "{path}: {h:?}");
        assert!(
            h.get_all("vary").iter().any(|v| v == "Accept-Encoding"),
            "{path}: {h:?}"
        );
        let text = gunzip(&gz);
        let (_, h2, plain) = send("GET", path, false).await;
        assert!(h2.get("content-encoding").is_none(), "{path}");
        assert!(
            h2.get_all("vary").iter().any(|v| v == "Accept-Encoding"),
            "{path}: {h2:?}"
        );
        let plain = String::from_utf8(plain).unwrap();
        if path == "/" {
            assert!(text.starts_with("<!DOCTYPE html>"), "{}", &text[..100]);
            assert!(text.contains("</html>"));
        } else {
            // The same answer, but for the clock and the cache's counts.
            let (a, b): (serde_json::Value, serde_json::Value) = (
                serde_json::from_str(&text).unwrap(),
                serde_json::from_str(&plain).unwrap(),
            );
            assert_eq!(a["components"], b["components"], "{path}");
            assert_eq!(a["status"], b["status"], "{path}");
        }
    }
    let (_, h, body) = send("HEAD", "/", true).await;
    assert!(h.get("content-encoding").is_none(), "{h:?}");
    assert!(body.is_empty());
    // An error is a few bytes: plain.
    let (code, h, body) = send("GET", "/api/health?component=nope", true).await;
    assert_eq!(code, 404);
    assert!(h.get("content-encoding").is_none(), "{h:?}");
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("no component named")
    );
}
