//! One distinctive secret in every secret-bearing field, and everything
//! depwatch shows scanned for all of them: `/metrics`, `/api/health` (whole
//! and summary), the page, the log at debug level, `check-config` for the
//! configuration made invalid next to each secret, and the error messages
//! of the checks that fail because of those very secrets.

use std::time::Duration;

use crate::support::*;

/// (where, secret): each appears nowhere but in the configuration.
const SECRETS: &[(&str, &str)] = &[
    ("redis url password", "RedisPw-7f3a91"),
    ("redis url wrong password", "RedisWrong-2c88e0"),
    ("mongodb uri password", "MongoPw-a41d07"),
    ("http header", "HdrKey-5be2c4"),
    ("http basic auth password", "BasicPw-09d1fa"),
    ("http bearer token", "Bearer-6e7c22aa"),
    ("smtp password", "SmtpPw-c0ffee11"),
    ("admin token", "AdminTok-31337beef"),
    ("read bearer token", "ReadTok-feedface0042"),
    ("basic auth user password", "UserPw-8842aa"),
    ("coordination password", "CoordPw-77e1d3"),
];

fn secret(name: &str) -> &'static str {
    SECRETS.iter().find(|(n, _)| *n == name).unwrap().1
}

fn assert_clean(what: &str, text: &str, hash: &str) {
    for (name, s) in SECRETS {
        assert!(
            !text.contains(s),
            "the {name} ({s}) leaked into {what}:\n{text}"
        );
    }
    assert!(!text.contains(hash), "the bcrypt hash leaked into {what}");
}

fn config(redis: u16, partner: u16, dead: u16, hash: &str) -> String {
    let s = secret;
    format!(
        r#"auth:
  admin_token: {admin}
  bearer_tokens: [{read}]
web:
  basic_auth_users:
    alice: "{hash}"
access:
  health: summary
  page: summary
alerting:
  mode: always
  group_wait: 0s
  coordination: redis://:{coord}@127.0.0.1:{dead}/0
  coordination_lease: 1s
  email:
    smtp: smtp://127.0.0.1:{dead}
    starttls: never
    username: depwatch
    password: {smtp}
    from: depwatch@example.com
    to: [oncall@example.com]
    timeout: 1s
probes:
  - name: cache
    kind: redis
    url: redis://:{redis_pw}@127.0.0.1:{redis}/0
    interval: 300ms
    timeout: 250ms
  - name: cache-wrong
    kind: redis
    url: redis://:{redis_wrong}@127.0.0.1:{redis}/0
    interval: 300ms
    timeout: 250ms
    failure_threshold: 1
  - name: orders-db
    kind: mongodb
    uri: mongodb://app:{mongo}@127.0.0.1:{dead}/app?serverSelectionTimeoutMS=200
    interval: 500ms
    timeout: 400ms
    failure_threshold: 1
  - name: partner
    kind: http
    url: http://127.0.0.1:{partner}/secure
    headers: {{ X-Api-Key: "{hdr}" }}
    basic_auth: {{ username: depwatch, password: "{basic}" }}
    interval: 300ms
    timeout: 250ms
    failure_threshold: 1
  - name: partner-bearer
    kind: http
    url: http://127.0.0.1:{partner}/secure
    bearer_token: "{bearer}"
    interval: 300ms
    timeout: 250ms
    failure_threshold: 1
"#,
        admin = s("admin token"),
        read = s("read bearer token"),
        coord = s("coordination password"),
        smtp = s("smtp password"),
        redis_pw = s("redis url password"),
        redis_wrong = s("redis url wrong password"),
        mongo = s("mongodb uri password"),
        hdr = s("http header"),
        basic = s("http basic auth password"),
        bearer = s("http bearer token"),
    )
}

/// A partner that refuses every request (401) and echoes nothing back.
async fn refusing_partner() -> (u16, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().route(
        "/secure",
        axum::routing::get(|| async { (axum::http::StatusCode::UNAUTHORIZED, "no") }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (
        port,
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        }),
    )
}

#[tokio::test]
async fn no_secret_reaches_metrics_health_page_logs_or_errors() {
    let redis = crate::redis::RedisServer::start(Some(secret("redis url password")));
    let (partner, task) = refusing_partner().await;
    let dead = free_port();
    let hash = bcrypt::hash(secret("basic auth user password"), 4).unwrap();
    let yaml = config(redis.port, partner, dead, &hash);
    let dw = Depwatch::start(&yaml).await;
    let user = ("alice", secret("basic auth user password"));
    let c = http_client()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Every failing check has failed at least once, with its error text.
    let full = wait_for(
        "every failing check reported",
        Duration::from_secs(30),
        || async {
            let r = c
                .get(dw.url("/api/health"))
                .basic_auth(user.0, Some(user.1))
                .send()
                .await
                .ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            let comps = v["components"].as_object()?;
            let failed = ["cache-wrong", "orders-db", "partner", "partner-bearer"]
                .iter()
                .all(|n| comps.get(*n).is_some_and(|c| c["error"].is_string()));
            let email = v["alerting"]["last_error"].is_object();
            let coord = v["alerting"]["sender"]["error"].is_string();
            (failed && email && coord && comps["cache"]["status"] == "healthy").then_some(v)
        },
    )
    .await;
    let health = full.to_string();
    assert_clean("/api/health (authenticated)", &health, &hash);
    // The errors are there, and say what went wrong without the secret.
    assert!(health.contains("127.0.0.1"), "{health}");
    for path in ["/api/health", "/", "/api/health?component=cache"] {
        let anon = c
            .get(dw.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_clean(&format!("{path} (anonymous)"), &anon, &hash);
        let authed = c
            .get(dw.url(path))
            .basic_auth(user.0, Some(user.1))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_clean(&format!("{path} (authenticated)"), &authed, &hash);
    }
    let metrics = c
        .get(dw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_clean("/metrics", &metrics, &hash);
    let probe = c
        .get(dw.url("/probe?target=partner"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_clean("/probe", &probe, &hash);
    // A wrong admin token and a wrong password: refused without an echo.
    for r in [
        c.post(dw.url("/api/admin/cache/invalidate"))
            .bearer_auth("not-the-admin-token")
            .send()
            .await
            .unwrap(),
        c.get(dw.url("/api/health"))
            .basic_auth("alice", Some("UserPw-wrong"))
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(r.status(), 401);
        assert_clean("a refusal", &r.text().await.unwrap(), &hash);
    }
    // The event stream's snapshot (every component's JSON, the pipeline).
    let mut stream = c.get(dw.url("/api/events")).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let mut events = String::new();
    while !events.contains("event: verdict") {
        match tokio::time::timeout(Duration::from_secs(5), stream.chunk()).await {
            Ok(Ok(Some(b))) => events.push_str(&String::from_utf8_lossy(&b)),
            _ => break,
        }
    }
    assert!(events.contains("cache-wrong"), "{events}");
    assert_clean("/api/events", &events, &hash);
    // The log at debug level, after all of that.
    assert_clean("the debug log", &dw.log(), &hash);
    task.abort();
}

#[test]
fn check_config_shows_no_secret_when_the_configuration_is_wrong_next_to_it() {
    let hash = bcrypt::hash(secret("basic auth user password"), 4).unwrap();
    let good = config(6379, 8080, 9, &hash);
    // Each variant breaks the line right after (or holding) a secret.
    let variants: Vec<(&str, String)> = vec![
        ("unknown key beside the admin token", good.replace("  bearer_tokens:", "  admin_tokn: x\n  bearer_tokens:")),
        ("short bearer token", good.replace(secret("read bearer token"), "short")),
        ("bad port in the redis url", good.replace("@127.0.0.1:6379/0\n    interval: 300ms\n    timeout: 250ms\n  - name: cache-wrong", "@127.0.0.1:99999/0\n    interval: 300ms\n    timeout: 250ms\n  - name: cache-wrong")),
        ("unknown key beside the mongodb uri", good.replace("    interval: 500ms", "    intervl: 500ms")),
        ("unknown key beside the http header", good.replace("    basic_auth:", "    basic_auht:")),
        ("bad scheme of the coordination", good.replace("  coordination: redis://", "  coordination: http://")),
        ("unknown key beside the smtp password", good.replace("    from: depwatch@example.com", "    frm: depwatch@example.com")),
        ("a password where a hash belongs", good.replace(&hash, secret("basic auth user password"))),
        ("a mongodb uri without a host", good.replace("@127.0.0.1:9/app", "@/app")),
    ];
    for (what, yaml) in variants {
        let (_dir, _, path) = write_config(&yaml);
        let (code, out) = check_config(&path, &[]);
        assert_eq!(code, 64, "{what}: expected a refusal:\n{out}");
        assert_clean(&format!("check-config ({what})"), &out, &hash);
    }
}
