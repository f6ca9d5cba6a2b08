//! The status page (`GET /`) in a real headless Chromium against a real
//! depwatch watching a real redis-server (a BullMQ-layout queue) and a disk:
//! rows and numbers, live updates over `/api/events` when redis-server dies
//! and comes back (no reload), axe-core's accessibility rules in light and
//! dark, one column on a phone, and screenshots of both states under
//! `target/test-output/page/`. Also: the page is valid HTML (html5lib,
//! strict) and escapes what comes from outside (partner answers, log fields).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use serde_json::json;

use crate::redis::{RedisServer, cmd, job};
use crate::support::*;

/// Where screenshots go: `<target>/test-output/page/`.
fn output_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("test-output").join("page");
    std::fs::create_dir_all(&dir).expect("create the screenshot folder");
    dir
}

/// `tests/browser` with its npm packages installed (`./scripts/test` runs
/// `npm ci` there).
fn browser_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir()
            && dir.join("node_modules/axe-core").is_dir(),
        "tests/browser has no node_modules: run `npm ci --prefix tests/browser` (./scripts/test does)"
    );
    dir
}

async fn bullmq_queue(c: &mut ::redis::aio::MultiplexedConnection) {
    let b = "bull:payments";
    cmd(
        c,
        &["HSET", &format!("{b}:meta"), "opts.maxLenEvents", "10000"],
    )
    .await;
    for (id, age) in [("1", 150), ("2", 90), ("3", 30)] {
        job(c, b, id, age, None).await;
    }
    cmd(c, &["LPUSH", &format!("{b}:wait"), "1", "2", "3"]).await;
    job(c, b, "4", 40, Some(20)).await;
    cmd(c, &["LPUSH", &format!("{b}:active"), "4"]).await;
}

/// Reads the node script's lines until one starts with `want`.
fn expect_line(lines: &mut impl Iterator<Item = std::io::Result<String>>, want: &str) -> String {
    for line in lines.by_ref() {
        let line = line.expect("read the browser script");
        eprintln!("browser: {line}");
        assert!(!line.starts_with("FAIL"), "in the browser: {line}");
        if line.starts_with(want) {
            return line;
        }
    }
    panic!("the browser script ended before `{want}`");
}

/// Runs `script` (in `tests/browser`) against the page of `dw`, which
/// says when to kill the Redis `server`; once the page showed the failure,
/// Redis is started again on its port (`revived` runs against it) and the
/// page must show the recovery. The two times the script printed, and the
/// new server.
async fn kill_and_revive_in_the_browser(
    script: &str,
    dw: &Depwatch,
    expect: serde_json::Value,
    mut server: RedisServer,
    revived: impl FnOnce(&RedisServer) + Send + 'static,
) -> (String, String, RedisServer) {
    let chromium = require("chromium", "apt-get install chromium");
    let node = require("node", "apt-get install nodejs npm");
    let port = server.port;
    let mut child = Command::new(node)
        .arg(script)
        .current_dir(browser_dir())
        .env("DEPWATCH_URL", dw.url("/"))
        .env("OUT", output_dir())
        .env("CHROMIUM", &chromium)
        .env("EXPECT", expect.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start node");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let result = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        expect_line(&mut lines, "ready-to-kill");
        server.proc.kill();
        writeln!(stdin, "killed").unwrap();
        let took = expect_line(&mut lines, "unhealthy");
        expect_line(&mut lines, "shots-taken");
        let server = RedisServer::start_on(port, None);
        revived(&server);
        writeln!(stdin, "restarted").unwrap();
        let back = expect_line(&mut lines, "healthy");
        expect_line(&mut lines, "done");
        (took, back, server)
    })
    .await;
    let status = child.wait().expect("node exit");
    let result = result.expect("the browser run");
    assert!(status.success(), "node: {status}");
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_in_chromium_turns_a_row_unhealthy_live_and_back() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    bullmq_queue(&mut c).await;
    let data = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"probes:
  - name: jobs-redis
    kind: redis
    url: {url}
    interval: 500ms
    timeout: 300ms
    jitter: 0s
    failure_threshold: 1
    queues:
      - {{ name: payments, type: bullmq, prefix: bull }}
  - name: data-disk
    kind: storage
    path: {disk}
    interval: 500ms
    timeout: 400ms
    jitter: 0s
"#,
        url = server.url(),
        disk = data.path().display(),
    );
    let dw = Depwatch::start(&yaml).await;
    dw.wait_health("both checked", Duration::from_secs(10), |code, h| {
        code == 200
            && h["components"]["jobs-redis"]["status"] == "healthy"
            && h["components"]["data-disk"]["details"]["forecast"]["samples"]
                .as_u64()
                .is_some_and(|n| n >= 2)
    })
    .await;

    let (took, back, _server) = kill_and_revive_in_the_browser(
        "page.mjs",
        &dw,
        json!({ "queue": "payments", "waiting": 3, "storage": "data-disk", "redis": "jobs-redis" }),
        server,
        // The service makes its queue again once Redis is back (a Redis
        // without it reports the queue as not existing).
        |server| crate::redis::make_bullmq_queue(&server.url(), "bull:payments"),
    )
    .await;
    eprintln!("row unhealthy after {took}, healthy again after {back}");
    let out = output_dir();
    for state in ["healthy", "failing"] {
        for scheme in ["light", "dark"] {
            for size in ["desktop", "phone"] {
                let p = out.join(format!("{state}-{scheme}-{size}.png"));
                let len = std::fs::metadata(&p).map_or(0, |m| m.len());
                assert!(len > 10_000, "{} is {len} bytes", p.display());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn past_fifty_components_the_page_names_the_healthy_and_shows_a_failing_one_live() {
    let server = RedisServer::start(None);
    let mut yaml = format!(
        "probes:
  - name: jobs-redis
    kind: redis
    url: {}
    interval: 500ms
    timeout: 300ms
    jitter: 0s
    failure_threshold: 1
",
        server.url()
    );
    for i in 1..=59 {
        yaml.push_str(&format!(
            "  - {{ name: app-{i:02}, kind: process, self: true, interval: 1s, timeout: 500ms }}\n"
        ));
    }
    let dw = Depwatch::start(&yaml).await;
    dw.wait_health("all 60 healthy", Duration::from_secs(15), |code, h| {
        code == 200
            && h["components"]
                .as_object()
                .is_some_and(|c| c.len() == 60 && c.values().all(|v| v["status"] == "healthy"))
    })
    .await;
    // Named only, a page of a few KB; `?all` is every row.
    let (code, page) = dw.get("/").await;
    assert_eq!(code, 200);
    assert_valid_html(&page);
    assert_eq!(page.matches("<li class=\"chip s-healthy\"").count(), 60);
    assert!(!page.contains("<article"));
    let (_, all) = dw.get("/?all").await;
    assert_valid_html(&all);
    assert_eq!(all.matches("<article").count(), 60);
    assert!(
        page.len() * 4 < all.len(),
        "{} vs {}",
        page.len(),
        all.len()
    );
    let (_, none) = dw.get("/?component=%3Cnope%3E").await;
    assert!(none.contains("No component is named <code>&lt;nope&gt;</code>"));

    let (took, back, _server) = kill_and_revive_in_the_browser(
        "compact.mjs",
        &dw,
        json!({ "redis": "jobs-redis", "total": 60 }),
        server,
        |_| {},
    )
    .await;
    eprintln!("row in full after {took}, named only again after {back}");
}

const PLANT: &str = r#"<script>alert(1)</script>"><img src=x onerror=alert(2)>"#;

/// A partner whose answers carry markup: `/status` answers a JSON status
/// that the probe quotes in its error.
async fn hostile_partner() -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let app = Router::new().route(
        "/status",
        get(|| async { axum::Json(json!({ "status": PLANT })) }),
    );
    (
        port,
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        }),
    )
}

/// html5lib (strict) parses the page without an error.
fn assert_valid_html(html: &str) {
    let venv = std::env::var("DEPWATCH_TEST_VENV").unwrap_or_else(|_| ".venv".into());
    let python = Path::new(&venv).join("bin/python");
    assert!(
        python.exists(),
        "no {}: run ./scripts/test (it creates the venv with html5lib)",
        python.display()
    );
    let mut p = Command::new(python)
        .args([
            "-c",
            "import sys, html5lib\n\
             p = html5lib.HTMLParser(strict=True)\n\
             try:\n    p.parse(sys.stdin.buffer.read())\n\
             except Exception as e:\n    print('invalid:', e, p.errors[:5]); sys.exit(1)\n\
             print('valid')",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    p.stdin.take().unwrap().write_all(html.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_is_valid_html_and_escapes_partner_answers_and_log_fields() {
    let (port, _partner) = hostile_partner().await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    let line = json!({ "msg": "op done", "status": PLANT, "duration": 900, "user": PLANT });
    std::fs::write(&log, format!("{line}\n{line}\n")).unwrap();
    let yaml = format!(
        r#"probes:
  - name: partner
    kind: http
    url: http://127.0.0.1:{port}/status
    interval: 500ms
    timeout: 400ms
    expect: {{ body_json: {{ "/status": "ok" }} }}
  - name: app-log
    kind: log
    files: [{log}]
    start_at: beginning
    poll_interval: 100ms
    interval: 500ms
    timeout: 400ms
    rules:
      - metric: ops
        match: {{ msg: "op done" }}
        labels: [status]
        duration: {{ field: duration, unit: ms }}
        slow_above: 10ms
        fields: [user]
"#,
        log = log.display()
    );
    let dw = Depwatch::start(&yaml).await;
    dw.wait_health(
        "the hostile texts arrived",
        Duration::from_secs(10),
        |_, h| {
            h["components"]["partner"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("onerror"))
                && h["components"]["app-log"]["details"]["rules"]["ops"]["slowest"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty())
        },
    )
    .await;
    let (code, html) = dw.get("/").await;
    assert_eq!(code, 200);
    assert_valid_html(&html);
    // The planted markup is text: our one script, no image, no handler.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(!html.contains("<img"), "{html}");
    // Shown as text: the partner's error (row and JSON) and the log field
    // (slowest operations and JSON), quotes escaped as well.
    let shown = html.matches("&lt;img src=x onerror=alert(2)&gt;").count();
    assert!(shown >= 4, "{shown} escaped copies in {html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;"),
        "{html}"
    );
    assert!(html.len() < 100 * 1024, "{} bytes", html.len());
}
