//! Who may use what, against the real binary: every endpoint group with no,
//! wrong and right credentials (basic auth with bcrypt, bearer tokens, the
//! admin token), the anonymous summary views, failed logins limited per
//! client address (clients bound to 127.0.0.2 and 127.0.0.1), and the
//! exporter-toolkit web configuration file. TLS and abuse are in
//! `security_tls.rs`.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::support::*;

pub const USER: &str = "alice";
pub const PASS: &str = "alice-pass-7Hq2";
pub const TOKEN: &str = "read-token-0123456789abcdef";
pub const ADMIN: &str = "admin-token-fedcba9876543210";

/// A bcrypt hash at the lowest cost (the tests' speed; production hashes
/// are cost 10 or more and work the same).
pub fn hash(p: &str) -> String {
    bcrypt::hash(p, 4).unwrap()
}

pub fn credentials_yaml() -> String {
    format!(
        "auth:\n  admin_token: {ADMIN}\n  bearer_tokens: [{TOKEN}]\nweb:\n  basic_auth_users:\n    {USER}: \"{}\"\n",
        hash(PASS)
    )
}

const SELF_PROBE: &str = "probes:\n  - name: self\n    kind: process\n    self: true\n";

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

fn client_from(ip: IpAddr) -> reqwest::Client {
    crate::support::http_client()
        .local_address(ip)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn send(
    c: &reqwest::Client,
    dw: &Depwatch,
    method: Method,
    path: &str,
    auth: Auth<'_>,
    body: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut r = c.request(method, dw.url(path));
    r = match auth {
        Auth::None => r,
        Auth::Basic(u, p) => r.basic_auth(u, Some(p)),
        Auth::Bearer(t) => r.bearer_auth(t),
    };
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = r.send().await.expect("request");
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    (code, headers, resp.text().await.unwrap_or_default())
}

const WEBHOOK: &str =
    r#"{"version":"4","status":"firing","receiver":"depwatch","groupKey":"{}","alerts":[]}"#;

#[tokio::test]
async fn every_group_refuses_missing_and_wrong_credentials_and_takes_right_ones() {
    let yaml = format!(
        "{}access:\n  metrics: authenticated\n  probe: authenticated\n  health: authenticated\n  page: authenticated\n  webhook: authenticated\n{SELF_PROBE}",
        credentials_yaml()
    );
    let dw = Depwatch::start(&yaml).await;
    let c = client_from([127, 0, 0, 1].into());
    let cases: &[(&str, Method, &str, Option<&str>)] = &[
        ("metrics", Method::GET, "/metrics", None),
        ("probe", Method::GET, "/probe?target=self", None),
        ("health", Method::GET, "/api/health", None),
        ("page", Method::GET, "/", None),
        (
            "webhook",
            Method::POST,
            "/api/alertmanager/webhook",
            Some(WEBHOOK),
        ),
    ];
    for (i, (group, method, path, body)) in cases.iter().enumerate() {
        // One address per group: their wrong guesses add up to no block.
        let c = client_from([127, 0, 1, i as u8 + 1].into());
        let (code, h, text) = send(&c, &dw, method.clone(), path, Auth::None, *body).await;
        assert_eq!(code, 401, "{group} without credentials: {text}");
        let challenges: Vec<_> = h.get_all("www-authenticate").iter().collect();
        assert!(
            challenges
                .iter()
                .any(|v| v.to_str().unwrap().starts_with("Basic realm=\"depwatch\"")),
            "{group}: {challenges:?}"
        );
        for wrong in [
            Auth::Basic(USER, "wrong"),
            Auth::Basic("mallory", PASS),
            Auth::Bearer("not-the-token-0000000000"),
        ] {
            let (code, _, text) = send(&c, &dw, method.clone(), path, wrong, *body).await;
            assert_eq!(code, 401, "{group} with wrong credentials: {text}");
            assert!(!text.contains(PASS) && !text.contains("mallory"), "{text}");
        }
        for right in [
            Auth::Basic(USER, PASS),
            Auth::Bearer(TOKEN),
            Auth::Bearer(ADMIN),
        ] {
            let (code, _, text) = send(&c, &dw, method.clone(), path, right, *body).await;
            assert_eq!(code, 200, "{group} with right credentials: {text}");
        }
    }
    // /healthz stays open: it is the liveness check of the process.
    for path in ["/healthz", "/-/healthy", "/-/ready"] {
        assert_eq!(
            send(&c, &dw, Method::GET, path, Auth::None, None).await.0,
            200,
            "{path}"
        );
    }

    // Admin: the admin token only (a read token or a user is not enough).
    let c = client_from([127, 0, 2, 1].into());
    let path = "/api/admin/cache/invalidate";
    for wrong in [Auth::None, Auth::Bearer(TOKEN), Auth::Basic(USER, PASS)] {
        let (code, _, text) = send(&c, &dw, Method::POST, path, wrong, None).await;
        assert_eq!(code, 401, "{text}");
    }
    let (code, _, text) = send(&c, &dw, Method::POST, path, Auth::Bearer(ADMIN), None).await;
    assert_eq!(code, 200, "{text}");

    // Every refusal counted by group: 1 missing + 3 wrong for each.
    let (_, _, text) = send(&c, &dw, Method::GET, "/metrics", Auth::Bearer(TOKEN), None).await;
    let m = Metrics::parse(&text);
    for group in ["metrics", "probe", "health", "page", "webhook"] {
        assert_eq!(
            m.value("depwatch_http_auth_failures_total", &[("group", group)]),
            4.0,
            "{group}"
        );
    }
    assert_eq!(
        m.value("depwatch_http_auth_failures_total", &[("group", "admin")]),
        3.0
    );
    assert_eq!(
        m.value("depwatch_http_auth_failures_total", &[("group", "events")]),
        0.0
    );
}

#[tokio::test]
async fn the_defaults_keep_every_group_but_admin_public() {
    let dw = Depwatch::start(SELF_PROBE).await;
    let c = client_from([127, 0, 0, 1].into());
    for path in ["/metrics", "/api/health", "/", "/probe?target=self"] {
        assert_eq!(
            send(&c, &dw, Method::GET, path, Auth::None, None).await.0,
            200,
            "{path}"
        );
    }
    // No admin token configured: reload answers (no file to reload: 409 or
    // the like, never 401), cache invalidation says admin is disabled.
    let (code, _, text) = send(
        &c,
        &dw,
        Method::POST,
        "/api/admin/cache/invalidate",
        Auth::None,
        None,
    )
    .await;
    assert_eq!(code, 403, "{text}");
}

#[tokio::test]
async fn summary_views_give_anonymous_clients_the_verdict_only() {
    let dead = free_port();
    let yaml = format!(
        "{}access:\n  health: summary\n  page: summary\nprobes:\n  - name: secret-orders-db\n    kind: redis\n    url: redis://127.0.0.1:{dead}/0\n    interval: 200ms\n    timeout: 150ms\n    failure_threshold: 1\n",
        credentials_yaml()
    );
    let dw = Depwatch::start(&yaml).await;
    let c = client_from([127, 0, 0, 1].into());
    // Anonymous: the verdict and a timestamp, with the same 503.
    let anon = wait_for(
        "the anonymous verdict unhealthy",
        Duration::from_secs(20),
        || async {
            let (code, _, text) = send(&c, &dw, Method::GET, "/api/health", Auth::None, None).await;
            (code == 503).then_some(text)
        },
    )
    .await;
    let v: Value = serde_json::from_str(&anon).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["status", "timestamp"], "{v}");
    assert_eq!(v["status"], "unhealthy");
    assert!(!anon.contains("secret-orders-db"));
    // ?component= works anonymously too, still the verdict only.
    let (code, _, text) = send(
        &c,
        &dw,
        Method::GET,
        "/api/health?component=secret-orders-db",
        Auth::None,
        None,
    )
    .await;
    assert_eq!(code, 503, "{text}");
    assert!(!text.contains("components"), "{text}");
    // Authenticated: the whole answer, same code.
    let (code, _, text) = send(
        &c,
        &dw,
        Method::GET,
        "/api/health",
        Auth::Basic(USER, PASS),
        None,
    )
    .await;
    assert_eq!(code, 503);
    assert!(text.contains("\"secret-orders-db\""), "{text}");
    // The page: the verdict in words, no component, a way to sign in.
    let (code, _, html) = send(&c, &dw, Method::GET, "/", Auth::None, None).await;
    assert_eq!(code, 503);
    assert!(
        html.contains("unhealthy") && !html.contains("secret-orders-db"),
        "{html}"
    );
    let (code, h, _) = send(&c, &dw, Method::GET, "/?login", Auth::None, None).await;
    assert_eq!(code, 401);
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let (code, _, html) = send(&c, &dw, Method::GET, "/", Auth::Basic(USER, PASS), None).await;
    assert_eq!(code, 200, "the full page answers 200 whatever the verdict");
    assert!(html.contains("secret-orders-db"));
    // /probe (public here) in words: no more than /api/health shows the
    // same client.
    let debug = "/probe?target=secret-orders-db&debug=true";
    let (code, _, text) = send(&c, &dw, Method::GET, debug, Auth::None, None).await;
    assert_eq!(code, 200, "{text}");
    let report = text.split("\n\nMetrics").next().unwrap_or_default();
    assert!(report.contains(": failed\n"), "{text}");
    assert!(report.contains("access.health: summary"), "{text}");
    assert!(
        !report.contains("\"details\"") && !report.contains("\"error\""),
        "{text}"
    );
    let (_, _, text) = send(&c, &dw, Method::GET, debug, Auth::Basic(USER, PASS), None).await;
    assert!(text.contains("\"status\": \"unhealthy\""), "{text}");
    assert!(text.contains("\"error\": "), "{text}");
    // Wrong credentials are refused, not downgraded to the summary.
    let (code, _, _) = send(
        &c,
        &dw,
        Method::GET,
        "/api/health",
        Auth::Basic(USER, "nope"),
        None,
    )
    .await;
    assert_eq!(code, 401);
}

#[tokio::test]
async fn failed_logins_block_that_address_only_and_spare_the_scraper() {
    let yaml = format!(
        "{}access:\n  metrics: authenticated\n{SELF_PROBE}",
        credentials_yaml()
    );
    let dw = Depwatch::start(&yaml).await;
    let attacker = client_from([127, 0, 0, 2].into());
    let scraper = client_from([127, 0, 0, 1].into());
    for i in 0..10 {
        let (code, _, _) = send(
            &attacker,
            &dw,
            Method::GET,
            "/metrics",
            Auth::Basic(USER, &format!("guess-{i}")),
            None,
        )
        .await;
        assert_eq!(code, 401, "guess {i}");
    }
    // Blocked now, even with the right password (no more guesses checked).
    let (code, h, text) = send(
        &attacker,
        &dw,
        Method::GET,
        "/metrics",
        Auth::Basic(USER, PASS),
        None,
    )
    .await;
    assert_eq!(code, 429, "{text}");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The scraper from another address is not affected.
    let (code, _, text) = send(
        &scraper,
        &dw,
        Method::GET,
        "/metrics",
        Auth::Basic(USER, PASS),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let m = Metrics::parse(&text);
    assert_eq!(
        m.value("depwatch_http_auth_failures_total", &[("group", "metrics")]),
        10.0
    );
    assert_eq!(
        m.value(
            "depwatch_http_requests_limited_total",
            &[("reason", "login_failures")]
        ),
        1.0
    );
    assert!(dw.log().contains("Too many failed logins from one address"));
    assert!(dw.log().contains("127.0.0.2"));
    assert!(!dw.log().contains("guess-"), "a password reached the log");
}

#[tokio::test]
async fn the_exporter_toolkit_web_config_file_is_taken_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    // As a Prometheus exporter's web.yml is written (headers included).
    std::fs::write(
        &web,
        format!(
            "basic_auth_users:\n  {USER}: {}\nhttp_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n    Content-Security-Policy: \"default-src 'self'\"\n",
            hash(PASS)
        ),
    )
    .unwrap();
    let yaml = format!("access:\n  metrics: authenticated\n{SELF_PROBE}");
    let dw = Depwatch::start_with(&yaml, &[], &["--web.config.file", web.to_str().unwrap()]).await;
    let c = client_from([127, 0, 0, 1].into());
    assert_eq!(
        send(&c, &dw, Method::GET, "/metrics", Auth::None, None)
            .await
            .0,
        401
    );
    let (code, h, _) = send(
        &c,
        &dw,
        Method::GET,
        "/metrics",
        Auth::Basic(USER, PASS),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(h["x-frame-options"], "deny");
    assert_eq!(h["content-security-policy"], "default-src 'self'");

    // Mistakes in it are reported with file, line and key, like the main file.
    std::fs::write(
        &web,
        format!(
            "basic_auth_users:\n  {USER}: {PASS}\ntls_server_config:\n  cert_file: missing.pem\n  key_file: missing.key\n  min_version: TLS10\nhttp_server_config:\n  headers:\n    Server: nginx\nbasic_auth_user: {{}}\n"
        ),
    )
    .unwrap();
    let cfg = dw.dir.path().join("depwatch.yml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_depwatch"))
        .args([
            "check-config",
            "--config",
            cfg.to_str().unwrap(),
            "--web.config.file",
            web.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    let w = web.display();
    for want in [
        format!(
            "{w}:2:3: basic_auth_users.{USER}: the password of user `{USER}` is not a bcrypt hash"
        ),
        format!("{w}:4:3: tls_server_config.cert_file: cannot read"),
        format!("{w}:5:3: tls_server_config.key_file: cannot read"),
        format!("{w}:6:3: tls_server_config.min_version: TLS10 is not offered"),
        format!("{w}:9:5: http_server_config.headers.Server: header `Server` cannot be set here"),
        format!(
            "{w}:10:1: basic_auth_user: unknown key `basic_auth_user` (did you mean `basic_auth_users`?)"
        ),
    ] {
        assert!(err.contains(&want), "missing `{want}` in:\n{err}");
    }
    assert!(!err.contains(PASS), "the password was printed:\n{err}");
}

#[tokio::test]
async fn check_config_warns_about_a_public_probe_endpoint() {
    let yaml = format!(
        "modules:\n  partner:\n    allowed_targets: [\"https://*.partner.example/*\"]\n{SELF_PROBE}"
    );
    let (_dir, _, path) = write_config(&yaml);
    let (code, out) = check_config(&path, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: /probe is public"), "{out}");
    let yaml = format!(
        "{}access:\n  probe: authenticated\n{}",
        credentials_yaml(),
        &yaml
    );
    let (_dir, _, path) = write_config(&yaml);
    let (code, out) = check_config(&path, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("warning"), "{out}");
}

#[tokio::test]
async fn probe_fetches_only_allowed_http_urls() {
    let yaml = format!(
        "modules:\n  partner:\n    allowed_targets: [\"http://127.0.0.1:*/*\"]\n{SELF_PROBE}"
    );
    let dw = Depwatch::start(&yaml).await;
    for target in [
        "ftp://127.0.0.1:21/x",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1.evil.example:80/x",
    ] {
        let url = reqwest::Url::parse_with_params(
            &dw.url("/probe"),
            &[("module", "partner"), ("target", target)],
        )
        .unwrap();
        let r = dw.client.get(url).send().await.unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(code, 400, "{target}: {text}");
    }
    // A configured probe by name needs no allow-list; an unknown name is refused.
    assert_eq!(dw.get("/probe?target=self").await.0, 200);
    assert_eq!(dw.get("/probe?target=nobody").await.0, 400);
}
