//! `kind: http` and `/probe` end to end: the real depwatch against small
//! partner APIs started here on loopback (axum, plain and TLS with rcgen
//! certificates), a socket that accepts and never answers, and a closed port.
//! Each case asserts the exact failure reason, the counters and the verdict.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

use crate::support::*;

/// Aborts a server task when the test ends.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn partner_routes() -> Router {
    Router::new()
        .route(
            "/ok",
            get(|| async { axum::Json(json!({"status": "ok", "version": "1.2.3"})) }),
        )
        .route(
            "/error",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, "no such thing") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route(
            "/sluggish",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                axum::Json(json!({"status": "ok"}))
            }),
        )
        .route(
            "/loop",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) }),
        )
        .route(
            "/big",
            get(|| async { "x".repeat(2 * 1024 * 1024).into_response() }),
        )
        .route(
            "/auth",
            get(|h: axum::http::HeaderMap| async move {
                // depwatch:s3cret
                match h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
                    Some("Basic ZGVwd2F0Y2g6czNjcmV0") => (StatusCode::OK, "welcome"),
                    _ => (StatusCode::UNAUTHORIZED, "who are you"),
                }
            }),
        )
        .route(
            "/degraded",
            get(|| async { axum::Json(json!({"status": "degraded"})) }),
        )
        // Compressed although nobody asked (CDNs, frameworks that always do).
        .route(
            "/gzip",
            get(|| async { coded("gzip", gzip(br#"{"status":"ok"}"#)) }),
        )
        .route(
            "/deflate",
            get(|| async { coded("deflate", zlib(br#"{"status":"ok"}"#)) }),
        )
        .route(
            "/bomb",
            get(|| async {
                coded(
                    "gzip",
                    BOMB.get_or_init(|| gzip(&vec![b' '; 2 << 20])).clone(),
                )
            }),
        )
        .route(
            "/large-gzip",
            get(|| async { coded("gzip", LARGE.get_or_init(large_json).clone()) }),
        )
        .route(
            "/corrupt",
            get(|| async { coded("gzip", b"\x1f\x8bnot really gzip".to_vec()) }),
        )
        .route(
            "/brotli",
            get(|| async { coded("br", vec![0x8b, 0x07, 0x80]) }),
        )
}

/// 2 MiB of spaces in a few kilobytes, made once (before the check that reads it).
static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// A gzip JSON answer past the sizes the checks thread inflates (128 KiB)
/// and judges (256 KiB) itself, made once.
static LARGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

fn large_json() -> Vec<u8> {
    // Digits that do not repeat: about 2.3 bits each once compressed.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let pad: String = (0..1_200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'0' + (x % 10) as u8)
        })
        .collect();
    let body = gzip(format!(r#"{{"status":"ok","pad":"{pad}"}}"#).as_bytes());
    assert!(body.len() > 128 << 10, "{} bytes compressed", body.len());
    body
}

fn coded(coding: &'static str, body: Vec<u8>) -> axum::response::Response {
    (
        [
            (header::CONTENT_ENCODING, coding),
            (header::CONTENT_TYPE, "application/json"),
        ],
        body,
    )
        .into_response()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zlib(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// The partner API over plain HTTP on a free loopback port.
async fn partner() -> (u16, Task) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, partner_routes()).await;
    });
    (port, Task(task))
}

/// A socket that accepts connections and never answers.
async fn black_hole() -> (u16, Task) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (port, Task(task))
}

/// A self-signed certificate for localhost and 127.0.0.1, valid until
/// `not_after`, as (PEM, DER, key DER).
fn certificate(
    not_after: time::OffsetDateTime,
) -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut p = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    p.subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    p.not_after = not_after;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    (
        cert.pem(),
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// The partner API over TLS with the given certificate.
/// A TLS partner whose certificate is valid until `not_after`, and the
/// `ca_file: ...` line that makes depwatch trust it (the file lives as long as
/// the returned directory).
async fn trusted_tls_partner(
    not_after: time::OffsetDateTime,
) -> (u16, Task, tempfile::TempDir, String) {
    let (pem, der, key) = certificate(not_after);
    let (port, srv) = tls_partner(der, key).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("partner-ca.pem");
    std::fs::write(&ca, pem).unwrap();
    (port, srv, dir, format!("ca_file: {}", ca.display()))
}

async fn tls_partner(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> (u16, Task) {
    tls_partner_with(cert, key, None).await
}

/// The partner API over TLS; with `client_ca`, it requires a client
/// certificate issued by that CA (mutual TLS).
async fn tls_partner_with(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<CertificateDer<'static>>,
) -> (u16, Task) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).unwrap();
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap(),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(vec![cert], key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let routes = partner_routes();
        while let Ok((tcp, _)) = l.accept().await {
            let (acceptor, routes) = (acceptor.clone(), routes.clone());
            tokio::spawn(async move {
                // A refused handshake (expired certificate) ends here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tls),
                        hyper_util::service::TowerToHyperService::new(routes),
                    )
                    .await;
            });
        }
    });
    (port, Task(task))
}

fn days_from_now(days: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(days)
}

/// One http probe named `partner` that checks once (interval 1h) and turns
/// unhealthy at the first failure; the health cache never expires so that
/// reading `/api/health` does not check again.
fn one_probe(url: &str, extra: &str) -> String {
    let mut y = format!(
        "health:\n  cache_ttl: 1h\nprobes:\n  - name: partner\n    kind: http\n    url: {url}\n    interval: 1h\n    timeout: 1s\n    jitter: 0s\n    failure_threshold: 1\n"
    );
    for line in extra.lines() {
        y.push_str("    ");
        y.push_str(line);
        y.push('\n');
    }
    y
}

const P: (&str, &str) = ("component", "partner");

/// Starts depwatch with one probe, waits for its first check, and returns
/// (depwatch, metrics, health of the component).
async fn check_once(url: &str, extra: &str) -> (Depwatch, Metrics, Value) {
    let dw = Depwatch::start(&one_probe(url, extra)).await;
    let m = dw
        // Counted, not only made: a check's series are made at 0 before
        // its gauges are set, and counted after them.
        .wait_metrics("the first check", Duration::from_secs(15), |m| {
            m.get("depwatch_checks_total", &[P, ("kind", "http")])
                .is_some_and(|n| n >= 1.0)
        })
        .await;
    let (_, h) = dw.health("").await;
    let c = h["components"]["partner"].clone();
    (dw, m, c)
}

/// Asserts one failed check with `reason` and `code`, counted everywhere,
/// and an unhealthy verdict.
fn assert_failed(m: &Metrics, c: &Value, reason: &str, code: &str) {
    assert_eq!(m.value("depwatch_http_requests_total", &[P]), 1.0);
    assert_eq!(
        m.value(
            "depwatch_http_request_failures_total",
            &[P, ("reason", reason), ("code", code)]
        ),
        1.0
    );
    let all_failures: f64 = m
        .matching("depwatch_http_request_failures_total", &[P])
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(all_failures, 1.0, "{}", m.text);
    assert_eq!(
        m.value(
            "depwatch_check_failures_total",
            &[P, ("kind", "http"), ("reason", reason)]
        ),
        1.0
    );
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 0.0);
    assert_eq!(
        m.value(
            "depwatch_check_duration_seconds_count",
            &[P, ("kind", "http")]
        ),
        1.0,
        "{}",
        m.text
    );
    assert!(
        m.get("depwatch_http_duration_seconds_count", &[P])
            .is_none(),
        "retired in favour of depwatch_check_duration_seconds{{kind=\"http\"}}"
    );
    assert_eq!(c["status"], "unhealthy", "{c}");
    assert_eq!(c["reason"], reason, "{c}");
}

#[tokio::test]
async fn json_200_is_healthy_with_phase_timings() {
    let (port, _srv) = partner().await;
    let (_dw, m, c) = check_once(
        &format!("http://localhost:{port}/ok"),
        "expect:\n  status: [200]\n  body_json: { \"/status\": \"ok\" }\n  body_json_exists: [\"/version\"]\n  headers: { content-type: application/json }",
    )
    .await;
    assert_eq!(m.value("depwatch_http_requests_total", &[P]), 1.0);
    assert!(
        m.matching("depwatch_http_request_failures_total", &[P])
            .is_empty(),
        "{}",
        m.text
    );
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 1.0);
    assert_eq!(m.value("depwatch_http_status_code", &[P]), 200.0);
    assert_eq!(c["status"], "healthy", "{c}");
    assert_eq!(c["details"]["status_code"], 200);
    for phase in ["dns", "connect", "tls", "first_byte", "transfer", "total"] {
        assert!(c["details"]["phases_ms"][phase].is_number(), "{phase}: {c}");
    }
    assert!(c["details"]["phases_ms"]["connect"].as_f64().unwrap() > 0.0);
    promtool_check_metrics(&m.text);
}

#[tokio::test]
async fn status_500_fails_with_status_reason() {
    let (port, _srv) = partner().await;
    let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/error"), "").await;
    assert_failed(&m, &c, "status", "500");
    assert_eq!(c["error"], "status 500, expected 2xx");
}

#[tokio::test]
async fn status_404_fails_unless_expected() {
    let (port, _srv) = partner().await;
    let (_dw, m, c) = check_once(
        &format!("http://127.0.0.1:{port}/missing"),
        "expect: { status: [200, \"3xx\"] }",
    )
    .await;
    assert_failed(&m, &c, "status", "404");
    assert_eq!(c["error"], "status 404, expected 200 or 3xx");

    let (_dw, m, c) = check_once(
        &format!("http://127.0.0.1:{port}/missing"),
        "expect: { status: [\"4xx\"] }",
    )
    .await;
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 1.0);
    assert_eq!(c["status"], "healthy");
}

#[tokio::test]
async fn slow_answer_is_cut_at_the_timeout() {
    let (port, _srv) = partner().await;
    let started = Instant::now();
    let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/slow"), "").await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_failed(&m, &c, "timeout", "none");
}

#[tokio::test]
async fn slow_above_degrades_without_failing() {
    let (port, _srv) = partner().await;
    let (_dw, m, c) = check_once(
        &format!("http://127.0.0.1:{port}/sluggish"),
        "slow_above: 100ms",
    )
    .await;
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 1.0);
    assert!(
        m.matching("depwatch_http_request_failures_total", &[P])
            .is_empty()
    );
    assert_eq!(c["status"], "degraded", "{c}");
    assert!(
        c["error"].as_str().unwrap().contains("slower than 100ms"),
        "{c}"
    );
}

/// A socket that accepts and never reads nor answers: the timeout names
/// the phase (the request sent, no answer), for a GET as for a POST whose
/// body fills the socket buffers.
#[tokio::test]
async fn a_socket_that_never_answers_times_out() {
    let (port, _hole) = black_hole().await;
    let body = "x".repeat(6 << 20);
    for extra in [String::new(), format!("method: POST\nbody: '{body}'")] {
        let started = Instant::now();
        let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/hole"), &extra).await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_failed(&m, &c, "timeout", "none");
        assert_eq!(
            c["error"],
            format!(
                "http://127.0.0.1:{port}/hole: no answer within the timeout of 1s after the request \
                 (the partner took the connection but did not answer: raise timeout if it is only slow)"
            )
        );
        assert_eq!(c["details"]["url"], format!("http://127.0.0.1:{port}/hole"));
    }
    // Over https, the handshake is what never ends.
    let (_dw, m, c) = check_once(&format!("https://127.0.0.1:{port}/hole"), "").await;
    assert_failed(&m, &c, "timeout", "none");
    assert_eq!(
        c["error"],
        format!(
            "https://127.0.0.1:{port}/hole: the TLS handshake did not end within the timeout of 1s \
             (does this port speak TLS? is the partner overloaded?)"
        )
    );
    assert!(
        m.value(
            "depwatch_http_phase_duration_seconds",
            &[P, ("phase", "tls")]
        ) > 0.5,
        "{}",
        m.text
    );
}

/// A partner that sends its answer's head, then its body one byte at a
/// time, for ever (slowloris); with `head`, the head itself one header
/// line at a time, for ever.
async fn trickling_partner(head: bool) -> (u16, Task) {
    use tokio::io::AsyncWriteExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if read_head(&mut s).await.is_none() {
                    return;
                }
                let (first, then): (&[u8], &[u8]) = if head {
                    (b"HTTP/1.1 200 OK\r\n", b"x-more: y\r\n")
                } else {
                    (b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n", b"x")
                };
                if s.write_all(first).await.is_err() {
                    return;
                }
                while s.write_all(then).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
    });
    (port, Task(task))
}

/// A head that never ends is cut at the timeout too, which says that the
/// answer had begun.
#[tokio::test]
async fn a_head_that_trickles_for_ever_is_cut_at_the_timeout_which_says_so() {
    let (port, _srv) = trickling_partner(true).await;
    let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/feed"), "").await;
    assert_failed(&m, &c, "timeout", "none");
    let error = c["error"].as_str().unwrap_or_default();
    let want = format!(
        "http://127.0.0.1:{port}/feed: the answer's head was still arriving at the timeout of 1s ("
    );
    assert!(error.starts_with(&want), "{error}");
    assert!(
        error.ends_with(
            " bytes so far: the partner sends it slowly; raise timeout if that is normal)"
        ),
        "{error}"
    );
}

/// The timeout bounds the whole exchange, the body included, and says
/// where it cut: the phase, the URL (without its query), what had arrived.
#[tokio::test]
async fn a_body_that_trickles_for_ever_is_cut_at_the_timeout_which_says_so() {
    let (port, _srv) = trickling_partner(false).await;
    let started = Instant::now();
    let (dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/feed?key=querysecret"), "").await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_failed(&m, &c, "timeout", "200");
    let error = c["error"].as_str().unwrap_or_default();
    let want = format!(
        "http://127.0.0.1:{port}/feed?…: the body was still arriving at the timeout of 1s (status 200, "
    );
    assert!(error.starts_with(&want), "{error}");
    assert!(
        error.ends_with(
            " bytes so far: the partner sends it slowly; raise timeout if that is normal)"
        ),
        "{error}"
    );
    let details = &c["details"];
    assert_eq!(details["status_code"], 200, "{c}");
    assert!(details["body_bytes"].as_u64().unwrap_or(0) > 0, "{c}");
    // The time went into the transfer, and the phase gauge says so.
    assert!(
        details["phases_ms"]["transfer"].as_f64().unwrap_or(0.0) > 500.0,
        "{c}"
    );
    assert!(
        m.value(
            "depwatch_http_phase_duration_seconds",
            &[P, ("phase", "transfer")]
        ) > 0.5,
        "{}",
        m.text
    );
    dw.assert_never_shown(&["querysecret"]).await;
}

#[tokio::test]
async fn closed_port_fails_with_connect() {
    let port = free_port();
    let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/"), "").await;
    assert_failed(&m, &c, "connect", "none");
    assert!(
        c["error"].as_str().unwrap().contains("cannot connect"),
        "{c}"
    );
}

#[tokio::test]
async fn unknown_host_fails_with_dns() {
    // `.invalid` never resolves (RFC 6761).
    let (_dw, m, c) = check_once("http://partner.does-not-exist.invalid/health", "").await;
    assert_failed(&m, &c, "dns", "none");
    assert!(
        c["error"]
            .as_str()
            .unwrap()
            .starts_with("cannot resolve partner.does-not-exist.invalid"),
        "{c}"
    );
}

#[tokio::test]
async fn redirect_loop_stops_at_the_limit() {
    let (port, _srv) = partner().await;
    let (_dw, m, c) =
        check_once(&format!("http://127.0.0.1:{port}/loop"), "max_redirects: 3").await;
    assert_failed(&m, &c, "status", "302");
    assert_eq!(c["details"]["redirects"], 3, "{c}");
    assert!(
        c["error"]
            .as_str()
            .unwrap()
            .starts_with("more than 3 redirects"),
        "{c}"
    );
}

#[tokio::test]
async fn oversized_body_is_not_read() {
    let (port, _srv) = partner().await;
    let (_dw, m, c) = check_once(
        &format!("http://127.0.0.1:{port}/big"),
        "expect: { max_body_bytes: 64KiB }",
    )
    .await;
    assert_failed(&m, &c, "body_too_large", "200");
    assert_eq!(c["details"]["body_bytes"], 0, "{c}");
}

/// A Content-Length that no body follows (the answer to HEAD, a 304)
/// tells the size of what a GET would have had: it is not too large.
#[tokio::test]
async fn a_content_length_without_a_body_is_not_too_large() {
    let (port, _srv) = partner().await;
    let (_dw, _m, c) = check_once(&format!("http://127.0.0.1:{port}/big"), "method: HEAD").await;
    assert_eq!(c["status"], "healthy", "{c}");
    let (port, _srv) =
        raw_partner(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5000000\r\n\r\n").await;
    let (_dw, _m, c) = check_once(
        &format!("http://127.0.0.1:{port}/"),
        "follow_redirects: false\nexpect: { status: [304] }",
    )
    .await;
    assert_eq!(c["status"], "healthy", "{c}");
}

/// A partner that compresses unasked: gzip and deflate are read as meant
/// (within max_body_bytes once inflated); what does not inflate, or a
/// coding depwatch does not decode, is named.
#[tokio::test]
async fn compressed_answers_nobody_asked_for() {
    let (port, _srv) = partner().await;
    let json_ok = "expect: { body_json: { \"/status\": \"ok\" } }";
    for path in ["gzip", "deflate"] {
        let (_dw, _m, c) = check_once(&format!("http://127.0.0.1:{port}/{path}"), json_ok).await;
        assert_eq!(c["status"], "healthy", "{path}: {c}");
    }
    // Inflated and judged on a blocking thread, as meant.
    LARGE.get_or_init(large_json);
    let (_dw, _m, c) = check_once(
        &format!("http://127.0.0.1:{port}/large-gzip"),
        "expect: { body_json: { \"/status\": \"ok\" }, max_body_bytes: 2MiB }",
    )
    .await;
    assert_eq!(c["status"], "healthy", "{c}");
    let (_dw, m, c) = check_once(
        &format!("http://127.0.0.1:{port}/large-gzip"),
        "expect: { body_json: { \"/status\": \"degraded\" }, max_body_bytes: 2MiB }",
    )
    .await;
    assert_failed(&m, &c, "expectation", "200");
    assert_eq!(c["error"], "JSON /status is \"ok\", expected \"degraded\"");
    BOMB.get_or_init(|| gzip(&vec![b' '; 2 << 20]));
    let (_dw, m, c) = check_once(
        &format!("http://127.0.0.1:{port}/bomb"),
        "expect: { max_body_bytes: 1MiB }",
    )
    .await;
    assert_failed(&m, &c, "body_too_large", "200");
    let error = |c: &Value| c["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error(&c).starts_with(
            "the body is larger than max_body_bytes (1048576 bytes) once inflated (Content-Encoding: gzip, "
        ),
        "{c}"
    );
    let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/corrupt"), json_ok).await;
    assert_failed(&m, &c, "bad_response", "200");
    assert!(
        error(&c).starts_with("the body says Content-Encoding: gzip but does not inflate: "),
        "{c}"
    );
    let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/brotli"), json_ok).await;
    assert_failed(&m, &c, "expectation", "200");
    assert!(
        error(&c).ends_with("(Content-Encoding: br, which depwatch does not decode)"),
        "{c}"
    );
}

#[tokio::test]
async fn json_pointer_mismatch_is_an_expectation_failure() {
    let (port, _srv) = partner().await;
    let (_dw, m, c) = check_once(
        &format!("http://127.0.0.1:{port}/degraded"),
        "expect: { body_json: { \"/status\": \"ok\" } }",
    )
    .await;
    assert_failed(&m, &c, "expectation", "200");
    assert_eq!(c["error"], "JSON /status is \"degraded\", expected \"ok\"");
}

/// A body that starts with a UTF-8 byte order mark (as .NET and Windows
/// tools write it) is read as browsers read it, without the mark.
#[tokio::test]
async fn a_body_with_a_byte_order_mark_is_read_without_it() {
    let (port, _srv) = raw_partner(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: 18\r\n\r\n\xef\xbb\xbf{\"status\":\"ok\"}",
    )
    .await;
    let (_dw, _m, c) = check_once(
        &format!("http://127.0.0.1:{port}/"),
        "expect: { body_json: { \"/status\": \"ok\" }, body_regex: '^\\{\"status\"' }",
    )
    .await;
    assert_eq!(c["status"], "healthy", "{c}");
    assert_eq!(c["details"]["body_bytes"], 18, "{c}");
}

/// An empty body where JSON is expected (a 200 with `Content-Type:
/// application/json` and nothing in it) says so, not a parser's EOF.
#[tokio::test]
async fn an_empty_body_where_json_is_expected_says_so() {
    let (port, _srv) = raw_partner(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    let (_dw, m, c) = check_once(
        &format!("http://127.0.0.1:{port}/"),
        "expect: { body_json: { \"/status\": \"ok\" } }",
    )
    .await;
    assert_failed(&m, &c, "expectation", "200");
    assert_eq!(
        c["error"],
        "the body is empty, expected JSON (status 200: is this the right URL and method?)"
    );
}

/// A JSON answer nested 10,000 deep is read without overflowing a stack,
/// and a value nested too deeply to build is never taken for `null`.
#[tokio::test]
async fn a_json_body_nested_10000_deep_is_judged_honestly() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let body = format!(r#"{{"status":"ok","error":{deep}}}"#);
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let (port, _srv) = raw_partner(answer.into_bytes().leak()).await;
    let url = format!("http://127.0.0.1:{port}/");
    let (_dw, _m, c) = check_once(
        &url,
        "expect: { body_json: { \"/status\": \"ok\" }, body_json_exists: [\"/error/0/0\"] }",
    )
    .await;
    assert_eq!(c["status"], "healthy", "{c}");
    let (_dw, m, c) = check_once(&url, "expect: { body_json: { \"/error\": null } }").await;
    assert_failed(&m, &c, "expectation", "200");
    assert_eq!(
        c["error"],
        format!(
            "JSON /error is {}… (nested too deeply to compare), expected null",
            "[".repeat(80)
        )
    );
}

#[tokio::test]
async fn self_signed_tls_trusted_through_ca_file() {
    let not_after = days_from_now(90);
    let (port, _srv, _ca_dir, trust) = trusted_tls_partner(not_after).await;
    let (_dw, m, c) = check_once(&format!("https://localhost:{port}/ok"), &trust).await;
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 1.0, "{c}");
    assert_eq!(c["status"], "healthy", "{c}");
    assert_eq!(
        m.value("depwatch_http_tls_cert_expiry_timestamp_seconds", &[P]),
        not_after.unix_timestamp() as f64
    );
    assert!(c["details"]["phases_ms"]["tls"].as_f64().unwrap() > 0.0);
    assert!(c["details"]["tls_version"].is_string(), "{c}");

    // Without ca_file the system roots do not know this certificate.
    let (_dw, m, c) = check_once(&format!("https://localhost:{port}/ok"), "").await;
    assert_failed(&m, &c, "tls", "none");

    // Unless verification is explicitly skipped; the expiry is still read.
    let (_dw, m, c) = check_once(
        &format!("https://localhost:{port}/ok"),
        "insecure_skip_verify: true",
    )
    .await;
    assert_eq!(c["status"], "healthy", "{c}");
    assert_eq!(
        m.value("depwatch_http_tls_cert_expiry_timestamp_seconds", &[P]),
        not_after.unix_timestamp() as f64
    );
}

#[tokio::test]
async fn expired_certificate_fails_with_tls_and_shows_when() {
    let not_after = days_from_now(-2);
    let (port, _srv, _ca_dir, trust) = trusted_tls_partner(not_after).await;
    let (_dw, m, c) = check_once(&format!("https://127.0.0.1:{port}/ok"), &trust).await;
    assert_failed(&m, &c, "tls", "none");
    assert!(c["error"].as_str().unwrap().contains("xpired"), "{c}");
    assert_eq!(
        m.value("depwatch_http_tls_cert_expiry_timestamp_seconds", &[P]),
        not_after.unix_timestamp() as f64
    );

    // Skipping verification does not hide an expired certificate: the
    // check works, the component is unhealthy.
    let (_dw, m, c) = check_once(
        &format!("https://127.0.0.1:{port}/ok"),
        "insecure_skip_verify: true",
    )
    .await;
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 1.0, "{c}");
    assert_eq!(c["status"], "unhealthy", "{c}");
    assert_eq!(c["error"], "the certificate has expired", "{c}");
}

#[tokio::test]
async fn certificate_expiring_in_3_days_degrades() {
    let not_after = days_from_now(3);
    let (port, _srv, _ca_dir, trust) = trusted_tls_partner(not_after).await;
    let (_dw, m, c) = check_once(&format!("https://localhost:{port}/ok"), &trust).await;
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 1.0);
    assert!(
        m.matching("depwatch_http_request_failures_total", &[P])
            .is_empty()
    );
    assert_eq!(c["status"], "degraded", "{c}");
    assert!(
        c["error"]
            .as_str()
            .unwrap()
            .starts_with("the certificate expires in 3.0 days")
            || c["error"]
                .as_str()
                .unwrap()
                .starts_with("the certificate expires in 2.9 days"),
        "{c}"
    );
    assert_eq!(
        m.value("depwatch_http_tls_cert_expiry_timestamp_seconds", &[P]),
        not_after.unix_timestamp() as f64
    );

    // Past cert_expiry_critical it is unhealthy, still without failing.
    let (_dw, m, c) = check_once(
        &format!("https://localhost:{port}/ok"),
        &format!("{trust}\ncert_expiry_critical: 7d\ncert_expiry_warn: 30d"),
    )
    .await;
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 1.0);
    assert_eq!(c["status"], "unhealthy", "{c}");
}

#[tokio::test]
async fn secrets_stay_out_of_metrics_health_and_logs() {
    let (port, _srv) = partner().await;
    let (dw, m, c) = check_once(
        &format!("http://127.0.0.1:{port}/error?api_key=querysecret"),
        "bearer_token: tokensecret\nheaders: { X-Api-Key: headersecret }",
    )
    .await;
    assert!(
        m.text.contains("depwatch_http_requests_total"),
        "{}",
        m.text
    );
    assert_eq!(c["kind"], "http");
    dw.assert_never_shown(&["querysecret", "tokensecret", "headersecret"])
        .await;
}

#[test]
fn config_errors_name_the_key() {
    let (dir, _, path) = write_config(
        "probes:\n  - name: p\n    kind: http\n    url: ftp://x\n    expect: { status: [\"9xx\"], max_body_bytes: 0 }\n    bearer_token: a\n    basic_auth: { username: u, password: p }\n    follow_redirects: false\n    follow_redirects_with_credentials: true\n  - name: q\n    kind: http\n    url: http://127.0.0.1:1/\n    expect: { max_body_bytes: 1GiB }\nmodules:\n  open:\n    method: GET\n",
    );
    let (code, out) = check_config(&path, &[]);
    drop(dir);
    assert_eq!(code, 64, "{out}");
    for want in [
        "probes[0].url: invalid url: unsupported scheme `ftp`",
        "probes[0].expect.status[0]: `9xx` is not a status code or class",
        "probes[0].expect.max_body_bytes: max_body_bytes must be above zero",
        "probes[1].expect.max_body_bytes: max_body_bytes is 1073741824 bytes, above the most depwatch reads (64 MiB)",
        "probes[0].basic_auth: both bearer_token and basic_auth are set",
        "probes[0].follow_redirects_with_credentials: follow_redirects_with_credentials is set but follow_redirects is false",
        "modules.open: missing required key `allowed_targets`",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
}

#[tokio::test]
async fn basic_auth_from_a_password_file() {
    let (port, _srv) = partner().await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let (_dw, m, c) = check_once(
        &format!("http://127.0.0.1:{port}/auth"),
        &format!(
            "basic_auth: {{ username: depwatch, password_file: {} }}",
            pw.display()
        ),
    )
    .await;
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 1.0, "{c}");

    let (_dw, m, c) = check_once(
        &format!("http://127.0.0.1:{port}/auth"),
        "basic_auth: { username: depwatch, password: wrong }",
    )
    .await;
    assert_failed(&m, &c, "status", "401");
}

#[tokio::test]
async fn client_certificate_for_mutual_tls() {
    // A client CA and a client certificate it issued.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client = rcgen::CertificateParams::new(vec!["depwatch".into()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let (pem, der, key) = certificate(days_from_now(90));
    let (port, _srv) = tls_partner_with(der, key, Some(ca.der().clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ca_file = write("server-ca.pem", pem);
    let cert_file = write("client.pem", client.pem());
    let key_file = write("client-key.pem", client_key.serialize_pem());
    let (_dw, m, c) = check_once(
        &format!("https://localhost:{port}/ok"),
        &format!("ca_file: {ca_file}\ncert_file: {cert_file}\nkey_file: {key_file}"),
    )
    .await;
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 1.0, "{c}");

    // Without the client certificate the server refuses.
    let (_dw, m, c) = check_once(
        &format!("https://localhost:{port}/ok"),
        &format!("ca_file: {ca_file}"),
    )
    .await;
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 0.0, "{c}");
    assert!(
        ["tls", "connect", "bad_response"].contains(&c["reason"].as_str().unwrap()),
        "{c}"
    );
}

/// tinyproxy on a free loopback port, with Basic proxy credentials.
fn tinyproxy(dir: &std::path::Path) -> (u16, Proc) {
    let bin = require("tinyproxy", "apt-get install tinyproxy");
    let port = free_port();
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nBasicAuth depwatch pr0xy\nMaxClients 20\nLogLevel Warning\nPidFile \"{}\"\n",
            dir.join("tinyproxy.pid").display()
        ),
    )
    .unwrap();
    let mut proc = Proc::spawn(
        "tinyproxy",
        std::process::Command::new(bin)
            .args(["-d", "-c"])
            .arg(&conf),
    );
    wait_listening(&mut proc, port, Duration::from_secs(10));
    (port, proc)
}

#[tokio::test]
async fn proxy_for_http_and_connect_for_https() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy_port, _proxy) = tinyproxy(dir.path());
    let (port, _srv) = partner().await;
    let proxy = format!("proxy: http://depwatch:pr0xy@127.0.0.1:{proxy_port}");
    let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/ok"), &proxy).await;
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 1.0, "{c}");

    let (pem, der, key) = certificate(days_from_now(90));
    let (tport, _tls) = tls_partner(der, key).await;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let (_dw, m, c) = check_once(
        &format!("https://localhost:{tport}/ok"),
        &format!("{proxy}\nca_file: {}", ca.display()),
    )
    .await;
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 1.0, "{c}");
    assert!(c["details"]["phases_ms"]["tls"].as_f64().unwrap() > 0.0);

    // Wrong proxy credentials: tinyproxy answers 401 (the status of the
    // answer, as a client sees it) or refuses CONNECT.
    let bad = format!("proxy: http://depwatch:nope@127.0.0.1:{proxy_port}");
    let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/ok"), &bad).await;
    assert_failed(&m, &c, "status", "401");
    let (dw, m, c) = check_once(
        &format!("https://localhost:{tport}/ok"),
        &format!("{bad}\nca_file: {}", ca.display()),
    )
    .await;
    assert_failed(&m, &c, "connect", "none");
    assert!(!dw.log().contains("nope"));
}

#[tokio::test]
async fn a_hung_partner_does_not_slow_the_others() {
    let (hole, _hole) = black_hole().await;
    let (port, _srv) = partner().await;
    let dw = Depwatch::start(&format!(
        "probes:\n  - name: hung\n    kind: http\n    url: http://127.0.0.1:{hole}/\n    interval: 10s\n    timeout: 8s\n    jitter: 0s\n  - name: fine\n    kind: http\n    url: http://127.0.0.1:{port}/ok\n    interval: 200ms\n    timeout: 100ms\n    jitter: 0s\n"
    ))
    .await;
    // Five checks of `fine` while `hung` waits for its first answer.
    let m = dw
        .wait_metrics("five checks of fine", Duration::from_secs(6), |m| {
            m.get("depwatch_http_requests_total", &[("component", "fine")])
                .is_some_and(|v| v >= 5.0)
        })
        .await;
    assert!(
        m.get("depwatch_http_requests_total", &[("component", "hung")])
            .is_none(),
        "{}",
        m.text
    );
}

/// Reads a request head (up to its blank line); `None` when the client
/// closed or failed before it ended (what was read is lost).
async fn read_head(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// A partner that answers one request per connection as HTTP/1.0 servers
/// and nginx after `Connection: close` do: the answer, then its own close.
/// It hands each request head it read to the test.
async fn closing_partner() -> (u16, Task, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::AsyncWriteExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let head = read_head(&mut s).await.unwrap_or_default();
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            let body = r#"{"status":"ok"}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
            // Closed here, by the server, first.
            drop(s);
        }
    });
    (port, Task(task), rx)
}

/// A partner that answers every request with `answer`, as written, then
/// closes.
async fn raw_partner(answer: &'static [u8]) -> (u16, Task) {
    use tokio::io::AsyncWriteExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            if read_head(&mut s).await.is_some() {
                let _ = s.write_all(answer).await;
            }
        }
    });
    (port, Task(task))
}

/// `https://` to a port that speaks plain HTTP (a common slip) says so.
#[tokio::test]
async fn https_to_a_plain_http_port_says_so() {
    let (port, _srv) = partner().await;
    let (_dw, m, c) = check_once(&format!("https://127.0.0.1:{port}/ok"), "").await;
    assert_failed(&m, &c, "tls", "none");
    let error = c["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "answered in plain text, not TLS: does this port take http:// rather than https://?"
        ),
        "{error}"
    );
}

/// `http://` to a port that speaks TLS (the reverse slip) says so.
#[tokio::test]
async fn http_to_a_tls_port_says_so() {
    let (port, _srv, _dir, _) = trusted_tls_partner(days_from_now(30)).await;
    let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/ok"), "").await;
    let error = c["error"].as_str().unwrap_or_default();
    assert!(error.contains("does this port take https://"), "{error}");
    assert_failed(&m, &c, "bad_response", "none");
}

/// A broken answer names its specific cause (which hyper keeps under a
/// general message), not only "error reading a body from connection".
#[tokio::test]
async fn a_broken_answer_names_its_cause() {
    for (answer, cause) in [
        (
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n"[..],
            "the body from 127.0.0.1:PORT broke off: error reading a body from connection: Invalid chunk size line",
        ),
        (
            &b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{}"[..],
            "the body from 127.0.0.1:PORT broke off: error reading a body from connection: end of file before message length reached",
        ),
    ] {
        let (port, _srv) = raw_partner(answer).await;
        let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/"), "").await;
        assert_failed(&m, &c, "bad_response", "200");
        let want = cause.replace("PORT", &port.to_string());
        let error = c["error"].as_str().unwrap_or_default();
        assert!(error.starts_with(&want), "{error}\nwanted: {want}");
    }
}

/// An answer with more headers than hyper's default of 100 (many
/// `Set-Cookie` or `Link` lines), which browsers and curl read, is read;
/// thousands of them fail, saying what the limit is.
#[tokio::test]
async fn answers_with_many_headers() {
    let answer = |n: usize| -> &'static [u8] {
        let headers: String = (0..n).map(|i| format!("x-h{i}: v\r\n")).collect();
        format!("HTTP/1.1 200 OK\r\n{headers}content-length: 2\r\n\r\nok")
            .into_bytes()
            .leak()
    };
    let (port, _srv) = raw_partner(answer(150)).await;
    let (_dw, _m, c) = check_once(&format!("http://127.0.0.1:{port}/"), "").await;
    assert_eq!(c["status"], "healthy", "{c}");

    let (port, _srv) = raw_partner(answer(5000)).await;
    let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/"), "").await;
    assert_failed(&m, &c, "bad_response", "none");
    assert_eq!(
        c["error"],
        format!(
            "no valid answer from 127.0.0.1:{port}: message head is too large \
             (depwatch reads at most 1000 headers, about 400 KiB in all: \
             does the partner, or a proxy before it, add headers in a loop?)"
        )
    );
}

/// Informational answers before the answer (`100 Continue`, a few `103
/// Early Hints`) are skipped; a partner that sends them in a loop fails the
/// check at once, rather than keeping it (and the checks thread) busy past
/// its timeout.
#[tokio::test]
async fn informational_answers_are_skipped_and_a_flood_of_them_is_cut() {
    use tokio::io::AsyncWriteExt;
    let hint = b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n";
    let few = [
        &b"HTTP/1.1 100 Continue\r\n\r\n"[..],
        &hint.repeat(5),
        b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}",
    ]
    .concat();
    let (port, _srv) = raw_partner(few.leak()).await;
    let (_dw, _m, c) = check_once(
        &format!("http://127.0.0.1:{port}/"),
        "expect: { body_json: { \"/status\": \"ok\" } }",
    )
    .await;
    assert_eq!(c["status"], "healthy", "{c}");

    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let _flood = Task(tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if read_head(&mut s).await.is_some() {
                    let hints = hint.repeat(100);
                    while s.write_all(&hints).await.is_ok() {}
                }
            });
        }
    }));
    let started = Instant::now();
    let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/"), "").await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_failed(&m, &c, "bad_response", "none");
    assert_eq!(
        c["error"],
        format!(
            "no valid answer from 127.0.0.1:{port}: more than 32 informational (1xx) answers came \
             before it (the partner sends 100 Continue or 103 Early Hints in a loop)"
        )
    );
}

/// A partner that takes the connection and ends it without answering, with
/// a reset at once or a close after reading the request: the error says
/// what happened and what to look at.
#[tokio::test]
async fn a_partner_that_ends_the_connection_without_answering() {
    let hint = "(the partner ended the connection without answering: is it overloaded or \
                restarting, or does it, or a proxy or firewall before it, refuse this client?)";
    for (reset, reason, cause) in [
        (
            true,
            "connect",
            "connection error: Connection reset by peer (os error 104)",
        ),
        (
            false,
            "bad_response",
            "connection closed before message completed",
        ),
    ] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let _srv = Task(tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                if reset {
                    let _ = s.set_zero_linger();
                } else {
                    read_head(&mut s).await;
                }
                drop(s);
            }
        }));
        let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/"), "").await;
        assert_failed(&m, &c, reason, "none");
        let error = c["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with(&format!("no valid answer from 127.0.0.1:{port}: "))
                && error.contains(cause)
                && error.ends_with(hint),
            "{error}"
        );
    }
}

#[tokio::test]
async fn checks_ask_the_server_to_close_and_a_server_close_is_no_failure() {
    // One request per connection, said so: the server may close first.
    let (port, _srv, mut heads) = closing_partner().await;
    let (_dw, m, c) = check_once(
        &format!("http://127.0.0.1:{port}/status"),
        "expect: { body_json: { \"/status\": \"ok\" } }",
    )
    .await;
    assert_eq!(c["status"], "healthy", "{c}");
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 1.0);
    let head = heads.recv().await.expect("the request head");
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("get /status http/1.1\r\n"), "{head}");
    assert!(lower.contains("\r\nconnection: close\r\n"), "{head}");
}

/// A check ends its connection with a reset once it has the answer (as
/// HAProxy's health checks do): the partner keeps no TIME_WAIT socket per
/// check, and a server that keeps the connection open is not left waiting.
#[tokio::test]
async fn a_check_ends_its_connection_with_a_reset_once_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let _srv = Task(tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                if read_head(&mut s).await.is_none() {
                    return;
                }
                let mut buf = [0u8; 1024];
                let body = r#"{"status":"ok"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(answer.as_bytes()).await.unwrap();
                // Kept open: how does the client end it?
                let end = match s.read(&mut buf).await {
                    Ok(0) => "an orderly close".to_string(),
                    Ok(n) => format!("{n} more bytes"),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        "a reset".to_string()
                    }
                    Err(e) => format!("error {e}"),
                };
                let _ = tx.send(end);
            });
        }
    }));
    let (_dw, _, c) = check_once(
        &format!("http://127.0.0.1:{port}/status"),
        "expect: { body_json: { \"/status\": \"ok\" } }",
    )
    .await;
    assert_eq!(c["status"], "healthy", "{c}");
    let end = tokio::time::timeout(Duration::from_secs(10), ended.recv())
        .await
        .expect("the check ends its connection")
        .unwrap();
    assert_eq!(end, "a reset");
}

// ----------------------------------------------------------------- /probe --

const PROBE_CONFIG: &str = "modules:\n  partner_2xx:\n    allowed_targets: [\"http://127.0.0.1:*/*\"]\n    timeout: 10s\n    expect: { body_json: { \"/status\": \"ok\" } }\n";

async fn probe_dw(partner_port: u16) -> Depwatch {
    Depwatch::start(&format!(
        "{PROBE_CONFIG}health:\n  cache_ttl: 1h\nprobes:\n  - name: self\n    kind: process\n    self: true\n  - name: partner\n    kind: http\n    url: http://127.0.0.1:{partner_port}/ok\n    interval: 1h\n    jitter: 0s\n"
    ))
    .await
}

async fn get_probe(
    dw: &Depwatch,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> (u16, String) {
    let qs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let mut req = dw.client.get(dw.url(&format!("/probe?{}", qs.join("&"))));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("GET /probe");
    let code = r.status().as_u16();
    (code, r.text().await.unwrap())
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn probe_module_success_answers_only_that_check() {
    let (port, _srv) = partner().await;
    let dw = probe_dw(port).await;
    let target = format!("http://127.0.0.1:{port}/ok");
    let (code, body) = get_probe(&dw, &[("target", &target), ("module", "partner_2xx")], &[]).await;
    assert_eq!(code, 200, "{body}");
    let m = Metrics::parse(&body);
    let c = ("component", "partner_2xx");
    assert_eq!(m.value("depwatch_probe_success", &[c]), 1.0);
    assert_eq!(m.value("depwatch_http_requests_total", &[c]), 1.0);
    assert_eq!(m.value("depwatch_http_status_code", &[c]), 200.0);
    assert!(m.value("depwatch_probe_duration_seconds", &[c]) > 0.0);
    assert!(!body.contains("depwatch_build_info"), "{body}");
    assert!(!body.contains("\"self\""), "{body}");
    promtool_check_metrics(&body);

    // A fresh registry per request: the counter does not accumulate.
    let (_, again) = get_probe(&dw, &[("target", &target), ("module", "partner_2xx")], &[]).await;
    assert_eq!(
        Metrics::parse(&again).value("depwatch_http_requests_total", &[c]),
        1.0
    );

    // A target without a scheme is http://, as blackbox_exporter reads it
    // (Prometheus configs written for it list bare host:port targets).
    let bare = format!("127.0.0.1:{port}/ok");
    let (code, body) = get_probe(&dw, &[("target", &bare), ("module", "partner_2xx")], &[]).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        Metrics::parse(&body).value("depwatch_probe_success", &[c]),
        1.0
    );

    // OpenMetrics when asked for.
    let (_, om) = get_probe(
        &dw,
        &[("target", &target), ("module", "partner_2xx")],
        &[("accept", "application/openmetrics-text; version=1.0.0")],
    )
    .await;
    assert!(om.ends_with("# EOF\n"), "{om}");
}

#[tokio::test]
async fn probe_module_failure_reports_reason() {
    let (port, _srv) = partner().await;
    let dw = probe_dw(port).await;
    let c = ("component", "partner_2xx");
    for (path, reason, code) in [
        ("/error", "status", "500"),
        ("/degraded", "expectation", "200"),
    ] {
        let target = format!("http://127.0.0.1:{port}{path}");
        let (status, body) =
            get_probe(&dw, &[("target", &target), ("module", "partner_2xx")], &[]).await;
        assert_eq!(status, 200, "{body}");
        let m = Metrics::parse(&body);
        assert_eq!(m.value("depwatch_probe_success", &[c]), 0.0);
        assert_eq!(
            m.value(
                "depwatch_http_request_failures_total",
                &[c, ("reason", reason), ("code", code)]
            ),
            1.0
        );
    }
}

#[tokio::test]
async fn probe_configured_target_by_name() {
    let (port, _srv) = partner().await;
    let dw = probe_dw(port).await;
    let (code, body) = get_probe(&dw, &[("target", "partner")], &[]).await;
    assert_eq!(code, 200, "{body}");
    let m = Metrics::parse(&body);
    assert_eq!(m.value("depwatch_probe_success", &[P]), 1.0);
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 1.0);
    assert!(m.get("depwatch_http_requests_total", &[P]).is_some());
    assert!(!body.contains("component=\"self\""), "{body}");
    promtool_check_metrics(&body);
}

/// `debug=true` (blackbox_exporter's): the result in words, then the metrics
/// that would have been returned; for a module and for a configured probe.
#[tokio::test]
async fn probe_debug_says_what_the_check_came_to() {
    let (port, _srv) = partner().await;
    let dw = probe_dw(port).await;
    // The module's check of `target`, in words.
    let debug = |target: String| {
        let dw = &dw;
        async move {
            get_probe(
                dw,
                &[
                    ("target", target.as_str()),
                    ("module", "partner_2xx"),
                    ("debug", "true"),
                ],
                &[],
            )
            .await
        }
    };

    let ok = format!("http://127.0.0.1:{port}/ok");
    let (code, body) = debug(ok.clone()).await;
    assert_eq!(code, 200, "{body}");
    let head = body.lines().next().unwrap_or_default();
    assert!(
        head.starts_with(&format!("Probe of {ok} with module `partner_2xx` (")),
        "{body}"
    );
    assert!(head.ends_with(": healthy"), "{body}");
    assert!(body.contains("\"status_code\": 200"), "{body}");
    let (report, metrics) = body
        .split_once("\n\nMetrics that would have been returned:\n")
        .expect("the metrics after the report");
    assert!(!report.contains("depwatch_probe_success"), "{report}");
    assert_eq!(
        Metrics::parse(metrics).value("depwatch_probe_success", &[("component", "partner_2xx")]),
        1.0
    );
    assert!(!metrics.contains("# EOF"), "text format: {metrics}");

    let error = format!("http://127.0.0.1:{port}/error");
    let (_, body) = debug(error.clone()).await;
    assert!(
        body.lines()
            .next()
            .unwrap_or_default()
            .ends_with(": failed"),
        "{body}"
    );
    assert!(body.contains("\nwhy: status: "), "{body}");
    assert!(body.contains("500"), "{body}");

    // A port nothing listens on: the connection error in words.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!(
        "http://127.0.0.1:{}/ok",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let (_, body) = debug(dead.clone()).await;
    assert!(body.contains("\nwhy: connect: "), "{body}");

    // Without debug, nothing but the metrics.
    let (_, plain) = get_probe(
        &dw,
        &[("target", ok.as_str()), ("module", "partner_2xx")],
        &[],
    )
    .await;
    assert!(plain.starts_with('#'), "{plain}");

    // A configured probe: its view as /api/health shows it.
    let (code, body) = get_probe(&dw, &[("target", "partner"), ("debug", "1")], &[]).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("Probe `partner` (kind http)"), "{body}");
    assert!(body.contains(": success\n"), "{body}");
    assert!(body.contains("\"status\": \"healthy\""), "{body}");
    assert!(
        body.contains("depwatch_probe_success{component=\"partner\"} 1"),
        "{body}"
    );
}

#[tokio::test]
async fn probe_refuses_bad_requests_with_400() {
    let (port, _srv) = partner().await;
    let dw = probe_dw(port).await;
    let ok_target = format!("http://127.0.0.1:{port}/ok");
    for (query, why) in [
        (vec![], "missing `target`"),
        (vec![("target", "")], "missing `target`"),
        (
            vec![("target", ok_target.as_str()), ("module", "nope")],
            "unknown module `nope`; known: partner_2xx",
        ),
        (
            vec![
                ("target", "http://10.1.2.3/admin"),
                ("module", "partner_2xx"),
            ],
            "target http://10.1.2.3/admin is not allowed by module `partner_2xx`",
        ),
        (
            vec![
                ("target", "https://127.0.0.1:8443/"),
                ("module", "partner_2xx"),
            ],
            "is not allowed by module",
        ),
        (
            vec![("target", "ftp://127.0.0.1/"), ("module", "partner_2xx")],
            "invalid target",
        ),
        // Read as http://10.1.2.3:9100/: allowed_targets still decide.
        (
            vec![("target", "10.1.2.3:9100"), ("module", "partner_2xx")],
            "target http://10.1.2.3:9100/ is not allowed by module `partner_2xx`",
        ),
        (vec![("target", "nobody")], "unknown target `nobody`"),
        (
            vec![("target", ok_target.as_str())],
            "a URL target needs a module",
        ),
    ] {
        let (code, body) = get_probe(&dw, &query, &[]).await;
        assert_eq!(code, 400, "{query:?}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"].as_str().unwrap().contains(why),
            "{query:?}: {body}"
        );
    }
}

#[tokio::test]
async fn probe_honours_the_scrape_timeout_header() {
    let (port, _hole) = black_hole().await;
    let (pport, _srv) = partner().await;
    let dw = probe_dw(pport).await;
    let target = format!("http://127.0.0.1:{port}/");
    let started = Instant::now();
    let (code, body) = get_probe(
        &dw,
        &[("target", &target), ("module", "partner_2xx")],
        &[("X-Prometheus-Scrape-Timeout-Seconds", "1.5")],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(code, 200, "{body}");
    // 1.5s minus the 0.5s offset; the module's own timeout is 10s.
    assert!(took >= Duration::from_millis(900), "{took:?}");
    // Far below the module's 10s: the header bounded the check (with room
    // for a loaded machine).
    assert!(took < Duration::from_secs(5), "{took:?}");
    let m = Metrics::parse(&body);
    let c = ("component", "partner_2xx");
    assert_eq!(m.value("depwatch_probe_success", &[c]), 0.0);
    assert_eq!(
        m.value(
            "depwatch_http_request_failures_total",
            &[c, ("reason", "timeout"), ("code", "none")]
        ),
        1.0
    );
    // In words: where the check was when the timeout cut it.
    let (_, body) = get_probe(
        &dw,
        &[
            ("target", &target),
            ("module", "partner_2xx"),
            ("debug", "true"),
        ],
        &[("X-Prometheus-Scrape-Timeout-Seconds", "1.5")],
    )
    .await;
    assert!(
        body.contains(&format!(
            "\nwhy: timeout: {target}: no answer within the timeout of 1s after the request ("
        )),
        "{body}"
    );
    assert!(body.contains(&format!("\"url\": \"{target}\"")), "{body}");
}

#[tokio::test]
async fn probe_modules_follow_a_reload() {
    let (port, _srv) = partner().await;
    let dw = probe_dw(port).await;
    let target = format!("http://127.0.0.1:{port}/missing");
    let (code, _) = get_probe(&dw, &[("target", &target), ("module", "accept_404")], &[]).await;
    assert_eq!(code, 400);
    dw.rewrite_config(
        "modules:\n  accept_404:\n    allowed_targets: [\"http://127.0.0.1:*/missing\"]\n    expect: { status: [404] }\nprobes:\n  - name: self\n    kind: process\n    self: true\n",
    );
    let (code, body) = dw.post("/-/reload", None).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = get_probe(&dw, &[("target", &target), ("module", "accept_404")], &[]).await;
    assert_eq!(code, 200, "{body}");
    let m = Metrics::parse(&body);
    assert_eq!(
        m.value("depwatch_probe_success", &[("component", "accept_404")]),
        1.0
    );
    // The old module is gone.
    let (code, _) = get_probe(
        &dw,
        &[
            ("target", &format!("http://127.0.0.1:{port}/ok")),
            ("module", "partner_2xx"),
        ],
        &[],
    )
    .await;
    assert_eq!(code, 400);
}

/// What a recording partner saw: (path, request headers) per request.
#[derive(Clone, Default)]
struct Seen(Arc<std::sync::Mutex<Vec<(String, axum::http::HeaderMap)>>>);

impl Seen {
    fn hits(&self, path: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .count()
    }

    /// The value of `header` in each request to `path`.
    fn header(&self, path: &str, header: &str) -> Vec<Option<String>> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, h)| {
                h.get(header)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .collect()
    }
}

/// A partner that records every request. `/redirect` answers 302 to
/// `location`, `/file` 302 to `file:///etc/passwd`; any other path answers
/// `{"status": "ok"}`.
async fn recording_partner(location: Option<String>) -> (u16, Task, Seen) {
    let seen = Seen::default();
    let s = seen.clone();
    let app = Router::new().fallback(move |uri: axum::http::Uri, h: axum::http::HeaderMap| {
        let (s, location) = (s.clone(), location.clone());
        async move {
            s.0.lock().unwrap().push((uri.path().to_string(), h));
            match (uri.path(), location) {
                ("/redirect", Some(l)) => {
                    (StatusCode::FOUND, [(header::LOCATION, l)]).into_response()
                }
                ("/file", _) => (
                    StatusCode::FOUND,
                    [(header::LOCATION, "file:///etc/passwd".to_string())],
                )
                    .into_response(),
                _ => axum::Json(json!({"status": "ok"})).into_response(),
            }
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (port, Task(task), seen)
}

#[tokio::test]
async fn probe_module_refuses_a_redirect_outside_its_allowed_targets() {
    // The internal service: reachable as `localhost`, which the module's
    // allow-list (127.0.0.1 only) does not cover.
    let (internal, _int, internal_seen) = recording_partner(None).await;
    let (port, _srv, _) =
        recording_partner(Some(format!("http://localhost:{internal}/INTERNAL"))).await;
    let dw = probe_dw(port).await;
    let c = ("component", "partner_2xx");
    for path in ["/redirect", "/file"] {
        let target = format!("http://127.0.0.1:{port}{path}");
        let (code, body) =
            get_probe(&dw, &[("target", &target), ("module", "partner_2xx")], &[]).await;
        assert_eq!(code, 200, "{body}");
        let m = Metrics::parse(&body);
        assert_eq!(
            m.value("depwatch_probe_success", &[c]),
            0.0,
            "{path}: {body}"
        );
        assert_eq!(
            m.value(
                "depwatch_http_request_failures_total",
                &[c, ("reason", "redirect_refused"), ("code", "302")]
            ),
            1.0,
            "{path}: {body}"
        );
    }
    assert_eq!(
        internal_seen.hits("/INTERNAL"),
        0,
        "the refused hop was sent"
    );
}

#[tokio::test]
async fn a_redirect_to_a_file_url_is_refused() {
    let (port, _srv, seen) = recording_partner(None).await;
    let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/file"), "").await;
    assert_failed(&m, &c, "redirect_refused", "302");
    assert!(c["error"].as_str().unwrap().contains("`file:`"), "{c}");
    // Nothing was asked of the partner after its redirect.
    assert_eq!(seen.0.lock().unwrap().len(), 1);
}

/// A `Location` as many servers write it, in UTF-8 rather than
/// percent-encoded, is followed as browsers do; one that is not text at all
/// is a bad answer that says so, not a 3xx taken for the answer.
#[tokio::test]
async fn a_redirect_to_a_location_in_utf8_is_followed() {
    use tokio::io::AsyncWriteExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let _srv = Task(tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let Some(head) = read_head(&mut s).await else {
                continue;
            };
            let answer: &[u8] = if head.starts_with(b"GET /caf%C3%A9 ") {
                b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}"
            } else if head.starts_with(b"GET /latin1 ") {
                b"HTTP/1.1 302 Found\r\nlocation: /caf\xe9\r\ncontent-length: 0\r\n\r\n"
            } else {
                b"HTTP/1.1 302 Found\r\nlocation: /caf\xc3\xa9\r\ncontent-length: 0\r\n\r\n"
            };
            let _ = s.write_all(answer).await;
        }
    }));
    let (_dw, _m, c) = check_once(
        &format!("http://127.0.0.1:{port}/start"),
        "expect: { body_json: { \"/status\": \"ok\" } }",
    )
    .await;
    assert_eq!(c["status"], "healthy", "{c}");
    assert_eq!(c["details"]["redirects"], 1, "{c}");
    assert_eq!(
        c["details"]["url"],
        format!("http://127.0.0.1:{port}/caf%C3%A9")
    );

    let (_dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/latin1"), "").await;
    assert_failed(&m, &c, "bad_response", "302");
    assert_eq!(
        c["error"],
        format!(
            "bad redirect from http://127.0.0.1:{port}/latin1: the Location header is not UTF-8 text \
             (the partner's redirect is broken; or set follow_redirects: false and expect the 302)"
        )
    );
}

/// A failure after a redirect says how the check came to an address the
/// configuration never named.
#[tokio::test]
async fn a_failure_after_a_redirect_names_where_it_was_sent() {
    let closed = free_port();
    let answer = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{closed}/v2/health?token=querysecret\r\ncontent-length: 0\r\n\r\n"
    );
    let (port, _srv) = raw_partner(answer.into_bytes().leak()).await;
    let (dw, m, c) = check_once(&format!("http://127.0.0.1:{port}/health"), "").await;
    // The 307 was not the failed hop's answer: there was none.
    assert_failed(&m, &c, "connect", "none");
    assert_eq!(m.value("depwatch_http_status_code", &[P]), 0.0);
    let error = c["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "after 1 redirect from http://127.0.0.1:{port}/health to http://127.0.0.1:{closed}/v2/health?…: cannot connect to 127.0.0.1:{closed}: "
        )),
        "{error}"
    );
    dw.assert_never_shown(&["querysecret"]).await;
}

#[tokio::test]
async fn configured_headers_do_not_follow_a_cross_origin_redirect() {
    let (other, _o, other_seen) = recording_partner(None).await;
    let (port, _srv, seen) =
        recording_partner(Some(format!("http://127.0.0.1:{other}/landing"))).await;
    let url = format!("http://127.0.0.1:{port}/redirect");
    let creds = "headers: { X-Api-Key: keysecret }\nbearer_token: tokensecret";
    let (_dw, m, c) = check_once(&url, creds).await;
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 1.0, "{c}");
    // The configured origin got them, the other origin (another port) none.
    assert_eq!(
        seen.header("/redirect", "x-api-key"),
        [Some("keysecret".into())]
    );
    assert_eq!(other_seen.header("/landing", "x-api-key"), [None]);
    assert_eq!(other_seen.header("/landing", "authorization"), [None]);

    // Opted in: they follow.
    let (_dw, m, c) = check_once(
        &url,
        &format!("{creds}\nfollow_redirects_with_credentials: true"),
    )
    .await;
    assert_eq!(m.value("depwatch_up", &[P, ("kind", "http")]), 1.0, "{c}");
    assert_eq!(
        other_seen.header("/landing", "x-api-key"),
        [None, Some("keysecret".into())]
    );
    assert_eq!(
        other_seen.header("/landing", "authorization"),
        [None, Some("Bearer tokensecret".into())]
    );
}

#[tokio::test]
async fn probe_by_name_reuses_the_cached_result() {
    let (port, _srv, seen) = recording_partner(None).await;
    let dw = Depwatch::start(&format!(
        "health:\n  cache_ttl: 1s\nprobes:\n  - name: partner\n    kind: http\n    url: http://127.0.0.1:{port}/count\n    interval: 1h\n    jitter: 0s\n"
    ))
    .await;
    wait_for("the first check", Duration::from_secs(10), || async {
        (seen.hits("/count") >= 1).then_some(())
    })
    .await;
    let before = seen.hits("/count");
    let started = Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (c, url) = (dw.client.clone(), dw.url("/probe?target=partner"));
            set.spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) });
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap().unwrap(), 200);
            requests += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let checks = seen.hits("/count") - before;
    // At most one check per cache_ttl (plus one in flight at each edge).
    assert!(
        checks as f64 <= elapsed.ceil() + 1.0,
        "{checks} checks for {requests} /probe requests in {elapsed:.1}s"
    );
    // The answer still reports the component.
    let (code, body) = get_probe(&dw, &[("target", "partner")], &[]).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        Metrics::parse(&body).value("depwatch_probe_success", &[P]),
        1.0
    );
}
