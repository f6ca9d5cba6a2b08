//! The email fallback and the pipeline watchdog against real servers: an
//! SMTP server (aiosmtpd, `tests/support/smtp_server.py`: with and without
//! AUTH, STARTTLS on a test certificate, every message saved whole),
//! redis-server, Prometheus and Alertmanager. Intervals are short. The
//! sending itself (retries, refusals, `max_per_hour`, TLS and AUTH) is
//! tested in `sending.rs`, with the helpers here.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

pub const INSTALL: &str = ".venv/bin/pip install -r scripts/requirements-test.txt";
pub const WAIT: Duration = Duration::from_secs(30);

/// The SMTP server of a test, killed on drop.
pub struct Smtp {
    proc: Option<Proc>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
}

/// One received message: its decoded view and its raw bytes.
#[derive(Debug, Clone)]
pub struct Mail {
    pub view: Value,
    pub raw: String,
}

impl Mail {
    pub fn header(&self, name: &str) -> String {
        self.view["headers"][name.to_lowercase()]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
    pub fn subject(&self) -> String {
        self.header("subject")
    }
    pub fn kind(&self) -> String {
        self.header("x-depwatch-kind")
    }
    pub fn text(&self) -> &str {
        self.view["text"].as_str().unwrap_or("")
    }
}

impl Smtp {
    pub fn start(args: &[&str]) -> Smtp {
        let mut s = Smtp {
            proc: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        s.restart();
        s
    }

    /// A port with no server (yet): [`Smtp::restart`] starts it.
    pub fn stopped(args: &[&str]) -> Smtp {
        Smtp {
            proc: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn restart(&mut self) {
        let python = require("python3", INSTALL);
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
        let mut cmd = Command::new(python);
        cmd.arg(script)
            .args(["--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut p = Proc::spawn("smtp_server.py", &mut cmd);
        let mut out = std::io::BufReader::new(p.child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(
            line.trim(),
            "READY",
            "the SMTP server did not start (is aiosmtpd installed? {INSTALL})"
        );
        self.proc = Some(p);
    }

    pub fn mails(&self) -> Vec<Mail> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| Mail {
                view: serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap(),
                raw: std::fs::read_to_string(p.with_extension("eml")).unwrap_or_default(),
            })
            .collect()
    }

    pub fn of_kind(&self, kind: &str) -> Vec<Mail> {
        self.mails()
            .into_iter()
            .filter(|m| m.kind() == kind)
            .collect()
    }

    pub async fn wait_kind(&self, kind: &str, n: usize) -> Vec<Mail> {
        wait_for(&format!("{n} `{kind}` email(s)"), WAIT, || async {
            let m = self.of_kind(kind);
            (m.len() >= n).then_some(m)
        })
        .await
    }

    pub fn auth_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("auth.log")).unwrap_or_default()
    }
}

pub fn alerting(smtp_port: u16, extra: &str, email_extra: &str) -> String {
    format!(
        "alerting:
  check_interval: 200ms
  group_wait: 0s
{extra}  email:
    smtp: smtp://127.0.0.1:{smtp_port}
    from: depwatch@example.com
    to: [oncall@example.com]
    timeout: 3s
{email_extra}"
    )
}

/// `depwatch send-test-email --config cfg`: its exit code and what it
/// printed (stdout, then stderr).
pub fn send_test_email(cfg: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_depwatch"))
        .args(["send-test-email", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

pub const SELF_PROBE: &str = "probes:
  - name: self
    kind: process
    self: true
    interval: 500ms
    timeout: 400ms
";

pub fn redis_probe(port: u16) -> String {
    format!(
        "  - name: jobs
    kind: redis
    url: redis://127.0.0.1:{port}/0
    interval: 200ms
    timeout: 150ms
    failure_threshold: 1
"
    )
}

pub async fn alerting_health(dw: &Depwatch) -> Value {
    dw.health("").await.1["alerting"].clone()
}

pub async fn wait_alerting(dw: &Depwatch, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, WAIT, || async {
        let a = alerting_health(dw).await;
        f(&a).then_some(a)
    })
    .await
}

#[tokio::test]
async fn no_scrape_sends_a_watchdog_email_and_a_scrape_resolves_it() {
    let smtp = Smtp::start(&[]);
    let yaml = format!(
        "{}{SELF_PROBE}",
        alerting(
            smtp.port,
            "  scrape_watchdog: 2s\n",
            "    starttls: never\n"
        )
    );
    let dw = Depwatch::start(&yaml).await;
    let a = wait_alerting(&dw, "the pipeline down", |a| a["pipeline"] == "down").await;
    assert_eq!(a["mode"], "fallback");
    assert_eq!(a["reasons"][0]["check"], "scrape", "{a}");
    let w = smtp.wait_kind("watchdog", 1).await.remove(0);
    assert!(
        w.subject()
            .starts_with("[CRITICAL] alerting pipeline down — depwatch on "),
        "{}",
        w.subject()
    );
    assert!(
        w.text().contains("no scrape of /metrics for 2s"),
        "{}",
        w.text()
    );
    assert!(w.view["html"].as_str().unwrap().contains("<html>"));
    let watchdog_id = w.header("message-id");
    assert!(watchdog_id.starts_with("<depwatch."), "{watchdog_id}");

    // A scrape: the pipeline is back, one resolved email in the same thread.
    let m = dw.metrics().await;
    assert_eq!(m.value("depwatch_alert_pipeline_up", &[]), 0.0);
    let r = smtp.wait_kind("resolved", 1).await.remove(0);
    assert!(
        r.subject().starts_with("[RESOLVED] alerting pipeline back"),
        "{}",
        r.subject()
    );
    assert_eq!(r.header("in-reply-to"), watchdog_id);
    assert_eq!(r.header("references"), watchdog_id);
    let m = dw.metrics().await;
    assert_eq!(m.value("depwatch_alert_pipeline_up", &[]), 1.0);
    assert_eq!(
        m.value("depwatch_alert_emails_total", &[("kind", "watchdog")]),
        1.0
    );
    assert_eq!(
        m.value("depwatch_alert_emails_total", &[("kind", "resolved")]),
        1.0
    );
    assert_eq!(
        m.value(
            "depwatch_alert_email_failures_total",
            &[("kind", "watchdog")]
        ),
        0.0
    );
    assert_eq!(smtp.mails().len(), 2);
    let a = alerting_health(&dw).await;
    assert_eq!(a["pipeline"], "ok");
    assert!(
        a["last_email"]["reply"]
            .as_str()
            .unwrap()
            .starts_with("250"),
        "{a}"
    );
    assert!(a["last_scrape"].is_string(), "{a}");
    // The whole message, for the record.
    println!("---- a resolved email as received ----\n{}", r.raw);
}

#[tokio::test]
async fn redis_outage_during_a_pipeline_outage_fires_reminds_resolves_and_survives_a_restart() {
    let redis_port = free_port();
    let redis = crate::redis::RedisServer::start_on(redis_port, None);
    let smtp = Smtp::start(&[]);
    let dw_port = free_port();
    let state = tempfile::tempdir().unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:{dw_port}\nstate_dir: {}\n{}{SELF_PROBE}{}",
        state.path().display(),
        alerting(
            smtp.port,
            "  scrape_watchdog: 1s\n",
            "    starttls: never\n    repeat_interval: 3s\n"
        ),
        redis_probe(redis_port)
    );
    let mut dw = Depwatch::start(&yaml).await;
    smtp.wait_kind("watchdog", 1).await;
    wait_alerting(&dw, "jobs healthy", |_| true).await;
    drop(redis);
    let firing = smtp.wait_kind("firing", 1).await.remove(0);
    assert_eq!(
        firing.subject(),
        format!("[CRITICAL] jobs unhealthy — depwatch on {}", hostname())
    );
    let text = firing.text();
    for want in [
        "jobs",
        "redis, critical",
        "Reason",
        "connect",
        "Runbook",
        "docs/runbook.md#componentunhealthy",
        "Other components",
        "self",
        "Alerting pipeline",
        "down",
        "no scrape",
    ] {
        assert!(text.contains(want), "`{want}` missing:\n{text}");
    }
    let root = firing.header("message-id");
    let reminder = smtp.wait_kind("reminder", 1).await.remove(0);
    assert_eq!(
        reminder.subject(),
        format!(
            "[CRITICAL] jobs still unhealthy — depwatch on {}",
            hostname()
        )
    );
    assert_eq!(reminder.header("in-reply-to"), root);
    assert_eq!(reminder.header("references"), root);

    // SIGKILL mid-incident, then start again on the same state.
    dw.proc.signal("KILL");
    let _ = dw.proc.child.wait();
    let reminders_before = smtp.of_kind("reminder").len();
    dw = Depwatch::start(&yaml).await;
    let a = wait_alerting(&dw, "the incident restored", |a| {
        a["open_incidents"].as_array().is_some_and(|l| {
            l.iter()
                .any(|i| i["components"] == serde_json::json!(["jobs"]))
        })
    })
    .await;
    // The pipeline incident stays open through the start's grace period.
    assert!(
        a["open_incidents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["scope"] == "pipeline"),
        "{a}"
    );

    // Redis back: one resolved email, threaded under the first firing one.
    let _redis = crate::redis::RedisServer::start_on(redis_port, None);
    let resolved = wait_for("the resolved email of jobs", WAIT, || async {
        smtp.of_kind("resolved")
            .into_iter()
            .find(|m| m.subject().contains("jobs recovered"))
    })
    .await;
    assert_eq!(resolved.header("in-reply-to"), root);
    assert_eq!(
        smtp.of_kind("firing").len(),
        1,
        "a restart resent the firing email"
    );
    assert_eq!(
        smtp.of_kind("watchdog").len(),
        1,
        "a restart resent the watchdog email"
    );
    assert!(smtp.of_kind("reminder").len() >= reminders_before);
    println!("---- a firing email as received ----\n{}", firing.raw);
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// Scrapes depwatch every 200 ms, as a Prometheus would, until dropped.
pub struct Scraper(tokio::task::JoinHandle<()>);

impl Scraper {
    pub fn start(url: String) -> Scraper {
        Scraper(tokio::spawn(async move {
            let c = crate::support::http_client().build().unwrap();
            loop {
                let _ = c.get(&url).send().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }))
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test]
async fn mode_always_emails_with_a_healthy_pipeline_and_fallback_does_not() {
    let smtp = Smtp::start(&[]);
    let dead = free_port();
    let token = "admin-token-123";
    let mk = |mode: &str| {
        format!(
            "auth:\n  admin_token: {token}\n{}{SELF_PROBE}{}",
            alerting(
                smtp.port,
                &format!("  mode: {mode}\n  scrape_watchdog: 5s\n"),
                "    starttls: never\n"
            ),
            redis_probe(dead)
        )
    };
    // fallback: the pipeline is fine (scraped), the incident is not emailed.
    let dw = Depwatch::start(&mk("fallback")).await;
    let _scraper = Scraper::start(dw.url("/metrics"));
    let a = wait_alerting(&dw, "an incident of jobs", |a| {
        a["open_incidents"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    })
    .await;
    assert_eq!(a["pipeline"], "ok", "{a}");
    assert_eq!(a["open_incidents"][0]["emailed"], false, "{a}");
    // Something that does arrive, after the incident: the test email.
    let (code, body) = dw.post("/api/admin/alerts/test", Some(token)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"reply\":\"250"), "{body}");
    let test = smtp.wait_kind("test", 1).await.remove(0);
    assert!(test.subject().starts_with("[TEST] "), "{}", test.subject());
    assert!(smtp.of_kind("firing").is_empty());
    let m = dw.metrics().await;
    assert_eq!(m.value("depwatch_alert_incidents_open", &[]), 1.0);
    assert_eq!(
        m.value("depwatch_alert_emails_total", &[("kind", "test")]),
        1.0
    );
    drop(dw);

    // always: the same incident is emailed although the pipeline is fine.
    let dw = Depwatch::start(&mk("always")).await;
    let _scraper2 = Scraper::start(dw.url("/metrics"));
    let f = smtp.wait_kind("firing", 1).await.remove(0);
    assert!(f.text().contains("mode: always"), "{}", f.text());
    assert_eq!(alerting_health(&dw).await["pipeline"], "ok");
    // The admin endpoint needs the token.
    assert_eq!(dw.post("/api/admin/alerts/test", None).await.0, 401);
}

#[tokio::test]
async fn malformed_webhook_payloads_are_refused_without_a_state_change() {
    let token = "admin-token-123";
    let dw = Depwatch::start(&format!(
        "auth:\n  admin_token: {token}\nalerting:\n  heartbeat_timeout: 1h\n  scrape_watchdog: 1h\n{SELF_PROBE}"
    ))
    .await;
    let url = dw.url("/api/alertmanager/webhook");
    let post = |body: Vec<u8>, auth: bool| {
        let mut r = dw.client.post(&url).body(body);
        if auth {
            r = r.bearer_auth(token);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let good = serde_json::json!({
        "version": "4", "status": "firing", "receiver": "depwatch", "groupKey": "{}",
        "alerts": [{"status": "firing", "labels": {"alertname": "Watchdog"}, "annotations": {},
                    "startsAt": "2026-11-28T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "w"}]
    });
    assert_eq!(post(good.to_string().into_bytes(), false).await, 401);
    assert_eq!(post(b"not json".to_vec(), true).await, 400);
    let mut v3 = good.clone();
    v3["version"] = "3".into();
    assert_eq!(post(v3.to_string().into_bytes(), true).await, 400);
    // 10 MB: refused with 413 once the cap (1 MiB) is read. Raw TCP: the
    // server answers and closes while a client would still be writing.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", dw.port))
            .await
            .unwrap();
        let head = format!(
            "POST /api/alertmanager/webhook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            10 << 20
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        for _ in 0..40 {
            if tcp.write_all(&vec![b' '; 64 << 10]).await.is_err() {
                break;
            }
        }
        let mut buf = vec![0u8; 512];
        let n = tcp.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    let a = alerting_health(&dw).await;
    assert!(a["last_heartbeat"].is_null(), "{a}");
    assert_eq!(a["firing"], serde_json::json!([]));
    // A good one is the heartbeat; another alert is listed.
    let mut two = good.clone();
    two["alerts"].as_array_mut().unwrap().push(serde_json::json!({
        "status": "firing", "labels": {"alertname": "ComponentUnhealthy", "component": "jobs", "severity": "critical"},
        "annotations": {"summary": "jobs is unhealthy", "runbook_url": "docs/runbook.md#componentunhealthy"},
        "startsAt": "2026-11-28T00:00:00Z", "fingerprint": "c1"
    }));
    assert_eq!(post(two.to_string().into_bytes(), true).await, 200);
    let a = alerting_health(&dw).await;
    assert!(a["last_heartbeat"].is_string(), "{a}");
    assert_eq!(a["firing"][0]["alertname"], "ComponentUnhealthy", "{a}");
    let (_, page) = dw.get("/").await;
    assert!(
        page.contains("ComponentUnhealthy"),
        "the status page lists Alertmanager's alerts"
    );
}

#[tokio::test]
async fn an_alert_alertmanager_stops_notifying_leaves_the_firing_list_after_firing_expiry() {
    // A route without `send_resolved`: a resolved alert is simply not
    // notified again. `stale` is notified once; `live` keeps being
    // notified (Alertmanager's repeat_interval): only `stale` expires.
    let dw = Depwatch::start(&format!(
        "alerting:\n  heartbeat_timeout: 1h\n  scrape_watchdog: 1h\n  firing_expiry: 2s\n{SELF_PROBE}"
    ))
    .await;
    let url = dw.url("/api/alertmanager/webhook");
    let body = |name: &str| {
        serde_json::json!({
            "version": "4", "status": "firing", "receiver": "depwatch", "groupKey": name,
            "alerts": [{"status": "firing", "labels": {"alertname": name}, "annotations": {},
                        "startsAt": "2026-11-28T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                        "fingerprint": name}]
        })
        .to_string()
    };
    let post = |name: &str| dw.client.post(&url).body(body(name)).send();
    assert_eq!(post("stale").await.unwrap().status(), 200);
    let names = |a: &Value| {
        let mut n: Vec<String> = a["firing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["alertname"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    let started = std::time::Instant::now();
    let shown_both = std::cell::Cell::new(false);
    let a = wait_for("the stale alert to expire", WAIT, || async {
        let _ = post("live").await;
        let a = alerting_health(&dw).await;
        if names(&a) == ["live", "stale"] {
            shown_both.set(true);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        (names(&a) == ["live"]).then_some(a)
    })
    .await;
    assert!(shown_both.get(), "both were listed first");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(a["firing"][0]["last_notified"].is_string(), "{a}");
    assert!(
        dw.log().contains("Alert dropped from alerting.firing"),
        "{}",
        dw.log()
    );
}

#[tokio::test]
async fn a_webhook_post_without_the_token_is_refused_and_counted() {
    // An Alertmanager without `http_config.authorization`: every heartbeat
    // is refused, and the operator's sign of it is this counter.
    let token = "admin-token-123";
    let dw = Depwatch::start(&format!(
        "auth:\n  admin_token: {token}\nalerting:\n  heartbeat_timeout: 1h\n  scrape_watchdog: 1h\n{SELF_PROBE}"
    ))
    .await;
    let body = serde_json::json!({
        "version": "4", "status": "firing", "receiver": "depwatch", "groupKey": "{}",
        "alerts": [{"status": "firing", "labels": {"alertname": "Watchdog"}, "annotations": {},
                    "startsAt": "2026-11-28T00:00:00Z", "fingerprint": "w"}]
    })
    .to_string();
    let url = dw.url("/api/alertmanager/webhook");
    let post = |auth: Option<&'static str>| {
        let mut r = dw.client.post(&url).body(body.clone());
        if let Some(t) = auth {
            r = r.bearer_auth(t);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let failures =
        |m: &Metrics| m.value("depwatch_http_auth_failures_total", &[("group", "webhook")]);
    assert_eq!(failures(&dw.metrics().await), 0.0);
    assert_eq!(post(None).await, 401);
    assert_eq!(
        failures(&dw.metrics().await),
        1.0,
        "a missing token is not counted"
    );
    assert_eq!(post(Some("wrong-token")).await, 401);
    assert_eq!(
        failures(&dw.metrics().await),
        2.0,
        "a wrong token is not counted"
    );
    assert_eq!(post(Some(token)).await, 200);
    assert_eq!(failures(&dw.metrics().await), 2.0);
    assert!(alerting_health(&dw).await["last_heartbeat"].is_string());
}

/// A real Alertmanager on a free port with `config`, killed on drop.
fn alertmanager(dir: &std::path::Path, port: u16, config: &str) -> Proc {
    let bin = require(
        "prometheus-alertmanager",
        "apt-get install prometheus-alertmanager",
    );
    let cfg = dir.join("alertmanager.yml");
    std::fs::write(&cfg, config).unwrap();
    let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
    let mut p = Proc::spawn(
        "alertmanager",
        Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.join("am").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log),
    );
    wait_listening(&mut p, port, WAIT);
    p
}

#[tokio::test]
async fn alertmanager_killed_is_named_in_a_watchdog_email() {
    let smtp = Smtp::start(&[]);
    let am_dir = tempfile::tempdir().unwrap();
    let am_port = free_port();
    let mut am = alertmanager(
        am_dir.path(),
        am_port,
        "route: { receiver: none }\nreceivers: [{ name: none }]\n",
    );
    let yaml = format!(
        "{}{SELF_PROBE}",
        alerting(
            smtp.port,
            &format!(
                "  alertmanager_url: http://127.0.0.1:{am_port}\n  failure_threshold: 2\n  scrape_watchdog: 1h\n  heartbeat_timeout: 1h\n"
            ),
            "    starttls: never\n"
        )
    );
    let dw = Depwatch::start(&yaml).await;
    wait_alerting(&dw, "Alertmanager healthy", |a| {
        a["alertmanager"]["healthy"] == true
    })
    .await;
    assert_eq!(alerting_health(&dw).await["pipeline"], "ok");
    am.kill();
    let w = smtp.wait_kind("watchdog", 1).await.remove(0);
    let text = w.text();
    assert!(
        text.contains(&format!(
            "Alertmanager at http://127.0.0.1:{am_port} is unhealthy"
        )),
        "{text}"
    );
    let a = alerting_health(&dw).await;
    assert_eq!(a["reasons"][0]["check"], "alertmanager", "{a}");
}

/// `prometheus/alertmanager.yml` as shipped, with depwatch's address and 1s timings.
fn bundle_alertmanager(dw_port: u16) -> String {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prometheus/alertmanager.yml"),
    )
    .unwrap();
    assert!(text.contains("http://depwatch:9877/api/alertmanager/webhook"));
    let text = text.replace(
        "http://depwatch:9877",
        &format!("http://127.0.0.1:{dw_port}"),
    );
    regex::Regex::new(r"(group_wait|group_interval|repeat_interval):\s*\S+")
        .unwrap()
        .replace_all(&text, "$1: 1s")
        .into_owned()
}

#[tokio::test]
async fn the_bundle_routes_the_watchdog_heartbeat_and_stopping_prometheus_breaks_it() {
    let smtp = Smtp::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (am_port, prom_port, dw_port) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "listen: 127.0.0.1:{dw_port}\n{}{SELF_PROBE}",
        alerting(
            smtp.port,
            &format!(
                "  alertmanager_url: http://127.0.0.1:{am_port}\n  scrape_watchdog: 30s\n  heartbeat_timeout: 4s\n"
            ),
            "    starttls: never\n"
        )
    );
    let dw = Depwatch::start(&yaml).await;
    let _am = alertmanager(dir.path(), am_port, &bundle_alertmanager(dw_port));
    let prometheus = require("prometheus", "apt-get install prometheus");
    std::fs::write(dir.path().join("alerts.yml"), crate::bundle::fast_rules()).unwrap();
    let prom_cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        crate::bundle::fast_prometheus(
            &format!("127.0.0.1:{dw_port}"),
            &format!("127.0.0.1:{am_port}"),
            &format!("127.0.0.1:{prom_port}"),
            &[],
        ),
    )
    .unwrap();
    let mut prom = crate::bundle::spawn_prometheus(&prometheus, dir.path(), &prom_cfg, prom_port);
    // The heartbeat arrives through rules → Prometheus → Alertmanager → webhook.
    let a = wait_for(
        "the Watchdog heartbeat and a scrape",
        Duration::from_secs(60),
        || async {
            let a = alerting_health(&dw).await;
            (a["last_heartbeat"].is_string() && a["last_scrape"].is_string()).then_some(a)
        },
    )
    .await;
    assert_eq!(
        a["firing"],
        serde_json::json!([]),
        "Watchdog is the heartbeat, not a listed alert: {a}"
    );
    let a = wait_alerting(&dw, "the pipeline ok", |a| a["pipeline"] == "ok").await;
    assert!(a["reasons"].as_array().unwrap().is_empty(), "{a}");
    let m = dw.metrics().await;
    assert_eq!(m.value("depwatch_alert_pipeline_up", &[]), 1.0);
    // A slow start of Prometheus (longer than 4s) is an outage too: then its
    // watchdog email has its resolution once everything is seen working.
    let before = smtp.of_kind("watchdog").len();
    if before > 0 {
        smtp.wait_kind("resolved", before).await;
    }

    // Prometheus stops: no heartbeat → a watchdog email. Alertmanager holds
    // the Watchdog alert valid for up to 4 × the resend delay (1s) after
    // Prometheus's last send and may notify it until then; the email follows
    // heartbeat_timeout (4s) after the last notification, plus one check.
    // Measured 6.0s on a quiet machine, 7.1s under the whole suite; the
    // scrape watchdog (30s) is far slower, so this still proves the path.
    let stopped = std::time::Instant::now();
    prom.kill();
    let w = smtp.wait_kind("watchdog", before + 1).await.remove(before);
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(4 + 4 + 2),
        "watchdog email after {took:?}"
    );
    assert!(
        w.text()
            .contains("no Watchdog notification from Alertmanager for 4s"),
        "{}",
        w.text()
    );
}
