//! The alerting bundle end to end: the repository's `alerts.yml`,
//! `prometheus/prometheus.yml` and `prometheus/alertmanager.yml` loaded into
//! a real Prometheus and a real Alertmanager, scraping the real depwatch,
//! notifying a webhook receiver this test runs ([`Stack`]). depwatch watches
//! a real [`World`]: redis-server with a BullMQ queue, SecantusDB, a partner
//! API and a TLS server, a capacity API, and a JSON log a "worker" writes.
//! Each fault is its own test on its own stack: the fault makes the matching
//! alert fire in Prometheus and arrive at the receiver through the route of
//! its severity; removing it resolves the alert in both.
//!
//! Test-only rewrites, so that a run takes seconds instead of the real
//! windows (the rules' logic, labels and annotations are unchanged):
//! - `alerts.yml`: every `for:` becomes [`FAST_FOR`] and every range window
//!   (`[5m]`, `[15m]`) becomes [`FAST_RANGE`]; Prometheus scrapes and
//!   evaluates every second.
//! - `prometheus.yml`: every job scrapes every second and targets the
//!   test's processes (relabelling unchanged).
//! - `alertmanager.yml`: `group_wait`/`group_interval` become 1s and each
//!   receiver (same names, so routing and inhibition are the file's own)
//!   becomes a webhook to the test's receiver.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use regex::Regex;
use serde_json::{Value, json};

use crate::support::*;

const FAST_FOR: &str = "2s";
const FAST_RANGE: &str = "10s";
/// How long any one step (alert firing, notification, resolution) may take.
const STEP: Duration = Duration::from_secs(60);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `alerts.yml` with short `for:` durations and range windows.
pub fn fast_rules() -> String {
    let text = std::fs::read_to_string(repo("alerts.yml")).expect("read alerts.yml");
    let for_re = Regex::new(r"(?m)^(\s+for:\s*)\S+").unwrap();
    let range_re = Regex::new(r"\[\d+[smhdwy]\]").unwrap();
    let text = for_re.replace_all(&text, format!("${{1}}{FAST_FOR}"));
    range_re
        .replace_all(&text, format!("[{FAST_RANGE}]"))
        .into_owned()
}

/// `prometheus/alertmanager.yml` with 1s grouping and every receiver turned
/// into a webhook to `url`.
pub fn fast_alertmanager(url: &str) -> String {
    let text = std::fs::read_to_string(repo("prometheus/alertmanager.yml"))
        .expect("read prometheus/alertmanager.yml");
    let (head, receivers) = text
        .split_once("\nreceivers:")
        .expect("alertmanager.yml has a receivers: section");
    let names: Vec<String> = Regex::new(r"(?m)^  - name: (\S+)")
        .unwrap()
        .captures_iter(receivers)
        .map(|c| c[1].to_string())
        .collect();
    assert!(!names.is_empty(), "no receivers in alertmanager.yml");
    let head = Regex::new(r"(group_wait|group_interval):\s*\S+")
        .unwrap()
        .replace_all(head, "$1: 1s");
    let mut out = format!("{head}\nreceivers:\n");
    for n in names {
        out.push_str(&format!(
            "  - name: {n}\n    webhook_configs:\n      - url: {url}\n        send_resolved: true\n"
        ));
    }
    out
}

/// `prometheus/prometheus.yml` pointed at the test's processes: 1s scrape
/// and evaluation for every job, the jobs' targets replaced (the `depwatch-probe` job's
/// by `probe_targets`), the relabelling kept as it is in the file.
pub fn fast_prometheus(dw: &str, am: &str, prom: &str, probe_targets: &[String]) -> String {
    use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};
    let text = std::fs::read_to_string(repo("prometheus/prometheus.yml"))
        .expect("read prometheus/prometheus.yml");
    let mut doc = YamlLoader::load_from_str(&text)
        .expect("prometheus.yml is YAML")
        .remove(0);
    let s = |v: &str| Yaml::String(v.to_string());
    let list = |v: &[String]| Yaml::Array(v.iter().map(|t| s(t)).collect());
    doc["global"]["scrape_interval"] = s("1s");
    doc["global"]["scrape_timeout"] = s("900ms");
    doc["global"]["evaluation_interval"] = s("1s");
    doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = list(&[am.into()]);
    let Yaml::Array(jobs) = &mut doc["scrape_configs"] else {
        panic!("prometheus.yml: scrape_configs is not a list");
    };
    for job in jobs {
        let name = job["job_name"].as_str().unwrap_or("").to_string();
        // The global 1s interval and timeout apply to every job.
        if let Some(h) = job.as_mut_hash() {
            h.remove(&s("scrape_interval"));
            h.remove(&s("scrape_timeout"));
        }
        let targets = match name.as_str() {
            "depwatch" => vec![dw.to_string()],
            "depwatch-probe" => {
                let Yaml::Array(relabels) = &mut job["relabel_configs"] else {
                    panic!("depwatch-probe has no relabel_configs");
                };
                let to_depwatch = relabels
                    .iter_mut()
                    .find(|r| r["target_label"].as_str() == Some("__address__"))
                    .expect("depwatch-probe sends the scrape to depwatch");
                to_depwatch["replacement"] = s(dw);
                probe_targets.to_vec()
            }
            "prometheus" => vec![prom.to_string()],
            "alertmanager" => vec![am.to_string()],
            other => panic!("prometheus.yml: job `{other}` is new: give it a target in this test"),
        };
        job["static_configs"][0]["targets"] = list(&targets);
    }
    let mut out = String::new();
    YamlEmitter::new(&mut out).dump(&doc).unwrap();
    out
}

/// Notifications received from Alertmanager (webhook payloads), in order.
#[derive(Clone, Default)]
pub struct Inbox(Arc<Mutex<Vec<Value>>>);

impl Inbox {
    pub fn all(&self) -> Vec<Value> {
        self.0.lock().unwrap().clone()
    }
}

async fn hook(State(inbox): State<Inbox>, Json(body): Json<Value>) -> &'static str {
    inbox.0.lock().unwrap().push(body);
    "ok"
}

/// Starts the webhook receiver on a free loopback port: (inbox, URL).
async fn start_receiver() -> (Inbox, String) {
    let inbox = Inbox::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (inbox, format!("http://127.0.0.1:{port}/hook"))
}

/// Whether `alert` (an object with `labels`) has every label of `want`.
fn has_labels(alert: &Value, want: &[(&str, &str)]) -> bool {
    want.iter()
        .all(|(k, v)| alert["labels"][*k].as_str() == Some(*v))
}

/// depwatch, Prometheus, Alertmanager and the webhook receiver.
pub struct Stack {
    pub dw: Option<Depwatch>,
    dw_yaml: String,
    pub dir: tempfile::TempDir,
    prom: Proc,
    pub prom_port: u16,
    am: Proc,
    pub am_port: u16,
    pub inbox: Inbox,
    pub client: reqwest::Client,
}

impl Stack {
    /// Starts everything; `probes` is depwatch's `probes:` list (YAML lines,
    /// indented by two spaces), `extra` more top-level configuration, and
    /// `probe_targets` the URLs of Prometheus' `depwatch-probe` job.
    pub async fn start(probes: &str, extra: &str, probe_targets: &[String]) -> Stack {
        let prometheus = require("prometheus", "apt-get install prometheus");
        let alertmanager = require(
            "prometheus-alertmanager",
            "apt-get install prometheus-alertmanager",
        );
        let dir = tempfile::tempdir().unwrap();
        let client = crate::support::http_client()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let (inbox, hook_url) = start_receiver().await;

        // depwatch on port 0; a restart comes back on the port it got.
        let dw_yaml = format!(
            "state_dir: {}\n{extra}probes:\n{probes}",
            dir.path().join("dw-state").display()
        );
        let dw = Depwatch::start(&dw_yaml).await;
        let dw_port = dw.port;
        let dw_yaml = format!("listen: 127.0.0.1:{dw_port}\n{dw_yaml}");

        // Alertmanager (no clustering: it would bind every interface).
        let am_port = free_port();
        let am_cfg = dir.path().join("alertmanager.yml");
        std::fs::write(&am_cfg, fast_alertmanager(&hook_url)).unwrap();
        let am_log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let am = Proc::spawn(
            "alertmanager",
            Command::new(alertmanager)
                .arg(format!("--config.file={}", am_cfg.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("am").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
                .arg("--cluster.listen-address=")
                .stdout(Stdio::null())
                .stderr(am_log),
        );

        // Prometheus: the repository's rules (fast copy), 1s everything.
        let prom_port = free_port();
        std::fs::write(dir.path().join("alerts.yml"), fast_rules()).unwrap();
        let prom_cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &prom_cfg,
            fast_prometheus(
                &format!("127.0.0.1:{dw_port}"),
                &format!("127.0.0.1:{am_port}"),
                &format!("127.0.0.1:{prom_port}"),
                probe_targets,
            ),
        )
        .unwrap();
        let prom = spawn_prometheus(&prometheus, dir.path(), &prom_cfg, prom_port);

        let stack = Stack {
            dw: Some(dw),
            dw_yaml,
            dir,
            prom,
            prom_port,
            am,
            am_port,
            inbox,
            client,
        };
        for (what, url) in [
            (
                "Alertmanager",
                format!("http://127.0.0.1:{am_port}/-/ready"),
            ),
            (
                "Prometheus",
                format!("http://127.0.0.1:{prom_port}/-/ready"),
            ),
        ] {
            stack
                .wait(&format!("{what} to be ready"), || async {
                    let r = stack.client.get(&url).send().await.ok()?;
                    r.status().is_success().then_some(())
                })
                .await;
        }
        stack
            .wait("Prometheus to scrape depwatch", || async {
                let r = stack.query("up{job=\"depwatch\"} == 1").await;
                (!r.is_empty()).then_some(())
            })
            .await;
        stack
    }

    /// Polls `f` until it answers, failing with the stack's state after [`STEP`].
    pub async fn wait<T, F, Fut>(&self, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {STEP:?} waiting for {what}\n{}",
                    self.report().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What the stack looks like, for failure messages: alerts and
    /// notifications one per line, the ends of the logs.
    async fn report(&self) -> String {
        let labels = |a: &Value| {
            let mut l: Vec<String> = a["labels"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            l.sort();
            l.join(",")
        };
        let alerts: Vec<String> = self
            .prom_alerts()
            .await
            .iter()
            .map(|a| format!("  {} {}", a["state"], labels(a)))
            .collect();
        let notes: Vec<String> = self
            .inbox
            .all()
            .iter()
            .flat_map(|n| {
                n["alerts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |a| format!("  to {} {} {}", n["receiver"], a["status"], labels(&a)))
            })
            .collect();
        let tail = |text: String| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        let file =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "Prometheus alerts:\n{}\nnotifications:\n{}\ndepwatch log:\n{}\nprometheus log:\n{}\nalertmanager log:\n{}",
            alerts.join("\n"),
            notes.join("\n"),
            tail(self.dw.as_ref().map(|d| d.log()).unwrap_or_default()),
            tail(file("prometheus.log")),
            tail(file("alertmanager.log")),
        )
    }

    async fn prom_get(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let url = reqwest::Url::parse_with_params(
            &format!("http://127.0.0.1:{}{path}", self.prom_port),
            query,
        )
        .ok()?;
        let r = self.client.get(url).send().await.ok()?;
        r.json::<Value>().await.ok()
    }

    /// An instant query's result vector (empty on error).
    pub async fn query(&self, q: &str) -> Vec<Value> {
        self.try_query(q).await.unwrap_or_default()
    }

    /// An instant query's result vector, or the error Prometheus gave.
    pub async fn try_query(&self, q: &str) -> Result<Vec<Value>, String> {
        let v = self
            .prom_get("/api/v1/query", &[("query", q)])
            .await
            .ok_or("no answer from Prometheus")?;
        if v["status"] != "success" {
            return Err(v.to_string());
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Alertmanager's alerts (active, suppressed).
    pub async fn am_alerts(&self) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/api/v2/alerts", self.am_port);
        match self.client.get(url).send().await {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Prometheus' active alerts (pending and firing).
    pub async fn prom_alerts(&self) -> Vec<Value> {
        self.prom_get("/api/v1/alerts", &[])
            .await
            .and_then(|v| v["data"]["alerts"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Waits until Prometheus has `alertname` firing with `labels`.
    pub async fn wait_firing(&self, alertname: &str, labels: &[(&str, &str)]) -> Value {
        let mut want = vec![("alertname", alertname)];
        want.extend_from_slice(labels);
        self.wait(
            &format!("{alertname} {labels:?} firing in Prometheus"),
            || async {
                self.prom_alerts()
                    .await
                    .into_iter()
                    .find(|a| a["state"] == "firing" && has_labels(a, &want))
            },
        )
        .await
    }

    /// Waits until Prometheus no longer has `alertname` with `labels`.
    pub async fn wait_gone(&self, alertname: &str, labels: &[(&str, &str)]) {
        let mut want = vec![("alertname", alertname)];
        want.extend_from_slice(labels);
        self.wait(
            &format!("{alertname} {labels:?} gone from Prometheus"),
            || async {
                let alerts = self.prom_alerts().await;
                (!alerts.iter().any(|a| has_labels(a, &want))).then_some(())
            },
        )
        .await
    }

    /// Waits until a notification with `status` (firing, resolved) for
    /// `alertname` with `labels` has arrived; returns (payload, alert).
    pub async fn wait_notified(
        &self,
        status: &str,
        alertname: &str,
        labels: &[(&str, &str)],
    ) -> (Value, Value) {
        let mut want = vec![("alertname", alertname)];
        want.extend_from_slice(labels);
        self.wait(
            &format!("a {status} notification of {alertname} {labels:?}"),
            || async {
                self.inbox.all().into_iter().find_map(|n| {
                    let a = n["alerts"]
                        .as_array()?
                        .iter()
                        .find(|a| a["status"] == status && has_labels(a, &want))?
                        .clone();
                    Some((n, a))
                })
            },
        )
        .await
    }

    /// The first half of a fault: `alertname` with `labels` fires in
    /// Prometheus with its severity, summary, description and runbook
    /// section, and arrives at the receiver through the route of its
    /// priority (critical alerts page, warning ones do not).
    pub async fn expect_firing(&self, alertname: &str, labels: &[(&str, &str)], severity: &str) {
        let alert = self.wait_firing(alertname, labels).await;
        assert_eq!(alert["labels"]["severity"], severity, "{alert}");
        let ann = &alert["annotations"];
        for key in ["summary", "description"] {
            let text = ann[key].as_str().unwrap_or("");
            assert!(
                !text.is_empty() && !text.contains("<no value>"),
                "{key}: {alert}"
            );
        }
        let anchor = alertname.to_lowercase();
        assert_eq!(
            ann["runbook_url"],
            format!("docs/runbook.md#{anchor}"),
            "{alert}"
        );
        let runbook = std::fs::read_to_string(repo("docs/runbook.md")).unwrap();
        assert!(
            runbook
                .lines()
                .any(|l| l.starts_with("## ") && l[3..].trim().to_lowercase() == anchor),
            "docs/runbook.md has no `## {alertname}` section"
        );
        let (note, _) = self.wait_notified("firing", alertname, labels).await;
        // Routed by priority: P0/P1 page, P2 ticket, P3 digest.
        let receiver = match alert["labels"]["priority"].as_str() {
            Some("P0" | "P1") => "oncall-page",
            Some("P2") => "oncall-ticket",
            Some("P3") => "oncall-digest",
            other => panic!("{alertname}: no priority P0-P3 ({other:?}): {alert}"),
        };
        let paged = receiver == "oncall-page";
        assert_eq!(paged, severity == "critical", "{alert}");
        assert_eq!(note["receiver"], receiver, "{note}");
    }

    /// The second half, once the fault is removed: the alert leaves
    /// Prometheus and a resolved notification arrives.
    pub async fn expect_resolved(&self, alertname: &str, labels: &[(&str, &str)]) {
        self.wait_gone(alertname, labels).await;
        self.wait_notified("resolved", alertname, labels).await;
    }

    /// Stops depwatch (SIGKILL, as a crash).
    pub fn stop_depwatch(&mut self) {
        if let Some(mut dw) = self.dw.take() {
            dw.proc.kill();
        }
    }

    /// Starts depwatch again with the same configuration and port.
    pub async fn restart_depwatch(&mut self) {
        self.stop_depwatch();
        self.dw = Some(Depwatch::start(&self.dw_yaml).await);
    }

    pub fn dw_instance(&self) -> String {
        let port = self.dw.as_ref().map(|d| d.port).expect("depwatch running");
        format!("127.0.0.1:{port}")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.prom.kill();
        self.am.kill();
    }
}

fn sleeper() -> Proc {
    Proc::spawn("sleep", Command::new("sleep").arg("600"))
}

/// A process probe on a pidfile, fast enough for the test.
fn process_probe(name: &str, pidfile: &Path) -> String {
    format!(
        "  - name: {name}\n    kind: process\n    pidfile: {}\n    interval: 300ms\n    timeout: 250ms\n    jitter: 0s\n    failure_threshold: 2\n",
        pidfile.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_process_dies_then_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("app.pid");
    let mut app = sleeper();
    std::fs::write(&pidfile, app.pid().to_string()).unwrap();
    let stack = Stack::start(&process_probe("app", &pidfile), "", &[]).await;
    let instance = stack.dw_instance();
    let labels = [
        ("component", "app"),
        ("kind", "process"),
        ("instance", instance.as_str()),
        ("job", "depwatch"),
    ];

    app.kill();
    stack
        .expect_firing("ComponentUnhealthy", &labels, "critical")
        .await;
    let _app = sleeper();
    std::fs::write(&pidfile, _app.pid().to_string()).unwrap();
    stack.expect_resolved("ComponentUnhealthy", &labels).await;

    // The description carries the failure count from the template's query.
    let (_, alert) = stack
        .wait_notified("firing", "ComponentUnhealthy", &labels)
        .await;
    let desc = alert["annotations"]["description"].as_str().unwrap();
    assert!(
        Regex::new(r"\(\d+ failed checks in a row\)")
            .unwrap()
            .is_match(desc),
        "{desc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depwatch_stops_then_comes_back() {
    let mut stack = Stack::start(
        "  - name: self\n    kind: process\n    self: true\n",
        "",
        &[],
    )
    .await;
    let instance = stack.dw_instance();
    let labels = [("job", "depwatch"), ("instance", instance.as_str())];
    stack.stop_depwatch();
    stack
        .expect_firing("DepwatchDown", &labels, "critical")
        .await;
    stack.restart_depwatch().await;
    stack.expect_resolved("DepwatchDown", &labels).await;
}

/// Alertmanager's own configuration: while DepwatchDown fires for an
/// instance, that instance's component alerts are inhibited (not sent),
/// and other instances' are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_inhibits_component_alerts_while_depwatch_is_down() {
    let stack = Stack::start(
        "  - name: self\n    kind: process\n    self: true\n",
        "",
        &[],
    )
    .await;
    let alert = |name: &str, instance: &str, component: Option<&str>| {
        let mut labels = json!({
            "alertname": name, "severity": "critical", "job": "depwatch", "instance": instance,
        });
        if let Some(c) = component {
            labels["component"] = json!(c);
        }
        json!({ "labels": labels, "annotations": { "summary": name } })
    };
    let body = json!([
        alert("DepwatchDown", "dw-a:9877", None),
        alert("ComponentUnhealthy", "dw-a:9877", Some("orders-db")),
        alert("ComponentUnhealthy", "dw-b:9877", Some("orders-db")),
    ]);
    let url = format!("http://127.0.0.1:{}/api/v2/alerts", stack.am_port);
    let r = stack.client.post(&url).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    stack
        .wait_notified("firing", "ComponentUnhealthy", &[("instance", "dw-b:9877")])
        .await;
    stack
        .wait_notified("firing", "DepwatchDown", &[("instance", "dw-a:9877")])
        .await;
    let am = stack.am_alerts().await;
    let inhibited = am
        .iter()
        .find(|a| {
            a["labels"]["instance"] == "dw-a:9877"
                && a["labels"]["alertname"] == "ComponentUnhealthy"
        })
        .unwrap_or_else(|| panic!("{am:?}"));
    assert_eq!(inhibited["status"]["state"], "suppressed", "{inhibited}");
    assert!(
        !inhibited["status"]["inhibitedBy"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{inhibited}"
    );
    assert!(
        !stack.inbox.all().iter().any(|n| n["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["instance"] == "dw-a:9877"
                && a["labels"]["alertname"] == "ComponentUnhealthy")),
        "an inhibited alert was sent: {:?}",
        stack.inbox.all()
    );
}

// ---------------------------------------------------------------- the watched world

/// Aborts a task when dropped.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The partner API's behaviour.
const OK: u8 = 0;
const FAILING: u8 = 1;
/// Every fourth request fails: an error ratio of 25% while no two
/// consecutive checks fail (the API is never "down").
const FLAKY: u8 = 2;

#[derive(Clone, Default)]
struct PartnerState {
    mode: Arc<AtomicU8>,
    counts: Arc<[AtomicU64; 2]>,
    disk: Arc<Mutex<Disk>>,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// A volume behind a capacity API (depwatch's storage `source: http`):
/// `used` grows at `rate` bytes per second from `used0` at `since`.
struct Disk {
    total: f64,
    used0: f64,
    rate: f64,
    since: Instant,
}

impl Default for Disk {
    fn default() -> Self {
        // Half full, growing 10 KiB/s: about 60 days left, no alert.
        Disk {
            total: 100.0 * GIB,
            used0: 50.0 * GIB,
            rate: 10.0 * 1024.0,
            since: Instant::now(),
        }
    }
}

impl Disk {
    fn used(&self) -> f64 {
        self.used0 + self.rate * self.since.elapsed().as_secs_f64()
    }

    /// Changes the growth from now on, without a jump in `used`.
    fn set_rate(&mut self, rate: f64) {
        self.used0 = self.used();
        self.since = Instant::now();
        self.rate = rate;
    }
}

fn answer(s: &PartnerState, route: usize) -> (axum::http::StatusCode, Json<Value>) {
    let n = s.counts[route].fetch_add(1, Ordering::Relaxed);
    let fail = match s.mode.load(Ordering::Relaxed) {
        FAILING => true,
        FLAKY => n % 4 == 3,
        _ => false,
    };
    if fail {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"status": "error"})),
        )
    } else {
        (axum::http::StatusCode::OK, Json(json!({"status": "ok"})))
    }
}

/// A partner API on loopback: `/health` for the scheduled probe, `/status`
/// for Prometheus' `/probe` job (separate counters, so that FLAKY stays
/// regular for each).
async fn start_partner() -> (PartnerState, u16, Task) {
    let state = PartnerState::default();
    let app = Router::new()
        .route(
            "/health",
            get(|State(s): State<PartnerState>| async move { answer(&s, 0) }),
        )
        .route(
            "/status",
            get(|State(s): State<PartnerState>| async move { answer(&s, 1) }),
        )
        .route(
            "/capacity",
            get(|State(s): State<PartnerState>| async move {
                let d = s.disk.lock().unwrap();
                let used = d.used().round();
                Json(json!({ "total": d.total, "used": used, "available": d.total - used }))
            }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (state, port, Task(task))
}

fn start_redis(port: u16) -> Proc {
    let bin = require("redis-server", "apt-get install redis-server");
    let mut p = Proc::spawn(
        "redis-server",
        Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--maxmemory", "256mb"])
            .stdout(Stdio::null()),
    );
    wait_listening(&mut p, port, Duration::from_secs(10));
    // The service's BullMQ queue exists from its start.
    crate::redis::make_bullmq_queue(&format!("redis://127.0.0.1:{port}/0"), "bull:partner-sync");
    p
}

fn start_mongodb(port: u16) -> Proc {
    let bin = require(
        "secantusd-py",
        "./scripts/test (creates .venv with SecantusDB)",
    );
    let mut p = Proc::spawn(
        "secantusd-py",
        Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--storage-path", ":memory:", "--log-level", "WARNING"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_listening(&mut p, port, Duration::from_secs(30));
    p
}

/// A TLS server (Python's http.server behind ssl) with a self-signed
/// certificate valid for 30 days, made by openssl.
fn start_tls(dir: &Path, port: u16) -> Proc {
    let openssl = require("openssl", "apt-get install openssl");
    let python = require("python3", "apt-get install python3");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let out = Command::new(openssl)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "ok\n").unwrap();
    let script = "import http.server, ssl, sys\n\
        s = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)\n\
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
        c.load_cert_chain(sys.argv[2], sys.argv[3])\n\
        s.socket = c.wrap_socket(s.socket, server_side=True)\n\
        s.serve_forever()\n";
    let mut p = Proc::spawn(
        "python3 https",
        Command::new(python)
            .args(["-c", script, &port.to_string()])
            .arg(&cert)
            .arg(&key)
            .current_dir(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_listening(&mut p, port, Duration::from_secs(10));
    p
}

/// The service depwatch watches: a partner API (plain and TLS), Redis with a
/// BullMQ queue, MongoDB (SecantusDB), and a JSON log that a "worker" writes
/// sync completions to while `processing` is on.
struct World {
    _dir: tempfile::TempDir,
    partner: PartnerState,
    partner_port: u16,
    _partner_task: Task,
    redis: Option<Proc>,
    redis_port: u16,
    _mongo: Proc,
    mongo_port: u16,
    _tls: Proc,
    tls_port: u16,
    log: PathBuf,
    processing: Arc<AtomicBool>,
    _writer: Task,
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let (partner, partner_port, partner_task) = start_partner().await;
        let redis_port = free_port();
        let redis = start_redis(redis_port);
        let mongo_port = free_port();
        let mongo = start_mongodb(mongo_port);
        let tls_port = free_port();
        let tls = start_tls(dir.path(), tls_port);
        let log = dir.path().join("app.log");
        std::fs::write(&log, "").unwrap();
        let processing = Arc::new(AtomicBool::new(true));
        let writer = {
            let (log, processing) = (log.clone(), processing.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    if processing.load(Ordering::Relaxed) {
                        n += 1;
                        // One in twenty fails (below SyncFailureRateHigh's
                        // 10%); durations 50..250 ms.
                        let status = if n.is_multiple_of(20) {
                            "error"
                        } else {
                            "success"
                        };
                        let line = json!({
                            "level": "info", "message": "Sync operation completed",
                            "operation": "partner_sync", "status": status, "duration": 50 + (n % 5) * 50,
                        });
                        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
                        writeln!(f, "{line}").unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        World {
            _dir: dir,
            partner,
            partner_port,
            _partner_task: partner_task,
            redis: Some(redis),
            redis_port,
            _mongo: mongo,
            mongo_port,
            _tls: tls,
            tls_port,
            log,
            processing,
            _writer: Task(writer),
        }
    }

    /// depwatch's probes for this world.
    fn probes(&self) -> String {
        let fast =
            "    interval: 500ms\n    timeout: 400ms\n    jitter: 0s\n    failure_threshold: 2\n";
        format!(
            "  - name: satloc\n    kind: http\n    url: http://127.0.0.1:{p}/health\n    expect: {{ status: [200], body_json: {{ \"/status\": \"ok\" }} }}\n{fast}\
             \x20 - name: maps\n    kind: http\n    url: https://127.0.0.1:{t}/\n    insecure_skip_verify: true\n{fast}\
             \x20 - name: jobs\n    kind: redis\n    url: redis://127.0.0.1:{r}/0\n    queues:\n      - {{ name: partner-sync, type: bullmq, prefix: bull, degraded_above: 1000, stuck_after: 30m }}\n{fast}\
             \x20 - name: orders-db\n    kind: mongodb\n    uri: mongodb://127.0.0.1:{m}/?directConnection=true\n    interval: 1s\n    timeout: 900ms\n    jitter: 0s\n\
             \x20 - name: app-log\n    kind: log\n    files: [{log}]\n    format: json\n    start_at: beginning\n    rules:\n      - metric: sync_operations\n        match: {{ message: \"Sync operation completed\" }}\n        labels: [operation, status]\n        duration: {{ field: duration }}\n{fast}\
             \x20 - name: app\n    kind: process\n    self: true\n{fast}\
             \x20 - name: data-disk\n    kind: storage\n    source: http\n    url: http://127.0.0.1:{p}/capacity\n    pointers: {{ total: /total, used: /used, available: /available }}\n    forecast_window: 60s\n{fast}",
            p = self.partner_port,
            t = self.tls_port,
            r = self.redis_port,
            m = self.mongo_port,
            log = self.log.display(),
        )
    }

    /// Top-level configuration: the module Prometheus' `/probe` job uses.
    fn extra(&self) -> String {
        format!(
            "modules:\n  partner_2xx:\n    timeout: 800ms\n    allowed_targets: [\"http://127.0.0.1:{}/*\"]\n",
            self.partner_port
        )
    }

    /// The URL Prometheus' `depwatch-probe` job checks through depwatch.
    fn probe_target(&self) -> String {
        format!("http://127.0.0.1:{}/status", self.partner_port)
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.partner.disk.lock().unwrap()
    }

    fn set_partner(&self, mode: u8) {
        self.partner.mode.store(mode, Ordering::Relaxed);
    }

    async fn redis(&self) -> ::redis::aio::MultiplexedConnection {
        ::redis::Client::open(format!("redis://127.0.0.1:{}/0", self.redis_port))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn redis_cmd(&self, args: &[String]) -> ::redis::Value {
        let mut c = self.redis().await;
        let mut k = ::redis::cmd(&args[0]);
        for a in &args[1..] {
            k.arg(a);
        }
        k.query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", &args[..args.len().min(3)]))
    }

    /// Adds `n` waiting jobs to the BullMQ queue `bull:partner-sync` (the
    /// oldest created `age_s` ago), the way producers do: a job hash, then
    /// LPUSH of the id onto the wait list.
    async fn push_jobs(&self, first_id: u64, n: u64, age_s: u64) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for id in first_id..first_id + n.min(5) {
            self.redis_cmd(&[
                "HSET".into(),
                format!("bull:partner-sync:{id}"),
                "name".into(),
                "sync".into(),
                "data".into(),
                "{}".into(),
                "timestamp".into(),
                (now - age_s * 1000).to_string(),
            ])
            .await;
        }
        let mut push = vec!["LPUSH".to_string(), "bull:partner-sync:wait".to_string()];
        push.extend((first_id..first_id + n).map(|i| i.to_string()));
        self.redis_cmd(&push).await;
    }

    async fn clear_waiting(&self) {
        self.redis_cmd(&["DEL".into(), "bull:partner-sync:wait".into()])
            .await;
    }

    fn kill_redis(&mut self) {
        if let Some(mut p) = self.redis.take() {
            p.kill();
        }
    }

    fn restart_redis(&mut self) {
        self.kill_redis();
        self.redis = Some(start_redis(self.redis_port));
    }
}

/// A world and the stack watching it, started together.
async fn world_and_stack() -> (World, Stack) {
    let world = World::start().await;
    let stack = Stack::start(&world.probes(), &world.extra(), &[world.probe_target()]).await;
    (world, stack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_api_starts_failing() {
    let (world, stack) = world_and_stack().await;
    let dw = stack.dw_instance();
    let scheduled = [
        ("component", "satloc"),
        ("kind", "http"),
        ("job", "depwatch"),
        ("instance", dw.as_str()),
    ];
    let target = world.probe_target();
    let probed = [
        ("component", "partner_2xx"),
        ("job", "depwatch-probe"),
        ("instance", target.as_str()),
    ];

    world.set_partner(FAILING);
    stack
        .expect_firing("PartnerApiDown", &scheduled, "critical")
        .await;
    // The /probe job sees it too, as its own target (relabelled instance).
    stack
        .expect_firing("PartnerApiDown", &probed, "critical")
        .await;
    // The error ratio alert fires as well, and Alertmanager holds it back:
    // the API being down says it all (inhibition by component).
    let ratio = [("component", "satloc"), ("instance", dw.as_str())];
    stack.wait_firing("PartnerApiErrorRateHigh", &ratio).await;
    stack
        .wait(
            "PartnerApiErrorRateHigh suppressed in Alertmanager",
            || async {
                let all = stack.am_alerts().await;
                all.into_iter().find(|a| {
                    has_labels(a, &[("alertname", "PartnerApiErrorRateHigh")])
                        && a["status"]["state"] == "suppressed"
                })
            },
        )
        .await;

    world.set_partner(OK);
    stack.expect_resolved("PartnerApiDown", &scheduled).await;
    stack.expect_resolved("PartnerApiDown", &probed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_api_turns_flaky() {
    let (world, stack) = world_and_stack().await;
    let dw = stack.dw_instance();
    let labels = [
        ("component", "satloc"),
        ("job", "depwatch"),
        ("instance", dw.as_str()),
    ];
    world.set_partner(FLAKY);
    stack
        .expect_firing("PartnerApiErrorRateHigh", &labels, "warning")
        .await;
    world.set_partner(OK);
    stack
        .expect_resolved("PartnerApiErrorRateHigh", &labels)
        .await;
    // Never down: no check failed twice in a row.
    assert!(
        !stack
            .inbox
            .all()
            .iter()
            .any(|n| n["commonLabels"]["alertname"] == "PartnerApiDown"),
        "{:?}",
        stack.inbox.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_backs_up() {
    let (world, stack) = world_and_stack().await;
    let dw = stack.dw_instance();
    let labels = [
        ("component", "jobs"),
        ("queue", "partner-sync"),
        ("state", "waiting"),
        ("instance", dw.as_str()),
    ];
    world.push_jobs(1, 1500, 60).await;
    stack
        .expect_firing("QueueDepthHigh", &labels, "warning")
        .await;
    let (_, alert) = stack
        .wait_notified("firing", "QueueDepthHigh", &labels)
        .await;
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert_eq!(summary, "Queue partner-sync has 1500 waiting jobs");
    world.clear_waiting().await;
    stack.expect_resolved("QueueDepthHigh", &labels).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_stops() {
    let (world, stack) = world_and_stack().await;
    let dw = stack.dw_instance();
    let labels = [("job", "depwatch"), ("instance", dw.as_str())];
    world.push_jobs(1, 5, 10).await;
    // Work waits and completions flow: quiet.
    stack
        .wait("sync completions in Prometheus", || async {
            let r = stack
                .query("sum(increase(depwatch_log_sync_operations_total[10s])) > 0")
                .await;
            (!r.is_empty()).then_some(())
        })
        .await;

    world.processing.store(false, Ordering::Relaxed);
    stack
        .expect_firing("ProcessingStuck", &labels, "critical")
        .await;
    let (_, alert) = stack
        .wait_notified("firing", "ProcessingStuck", &labels)
        .await;
    let desc = alert["annotations"]["description"].as_str().unwrap();
    assert!(desc.contains("while 5 jobs are waiting"), "{desc}");

    world.processing.store(true, Ordering::Relaxed);
    stack.expect_resolved("ProcessingStuck", &labels).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dies() {
    let (mut world, stack) = world_and_stack().await;
    let dw = stack.dw_instance();
    let labels = [
        ("component", "jobs"),
        ("kind", "redis"),
        ("job", "depwatch"),
        ("instance", dw.as_str()),
    ];
    world.kill_redis();
    stack
        .expect_firing("ComponentUnhealthy", &labels, "critical")
        .await;
    world.restart_redis();
    stack.expect_resolved("ComponentUnhealthy", &labels).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_fills_up() {
    let (world, stack) = world_and_stack().await;
    let dw = stack.dw_instance();
    let labels = [
        ("component", "data-disk"),
        ("path", "/capacity"),
        ("job", "depwatch"),
        ("instance", dw.as_str()),
    ];
    // 10 MiB/s into the 50 GiB left: full in well under a day.
    world.disk().set_rate(10.0 * 1024.0 * 1024.0);
    stack
        .expect_firing("StorageFillingUpFast", &labels, "critical")
        .await;
    // The fix: grow the volume to 100 TiB (months left at this pace).
    world.disk().total = 100.0 * 1024.0 * GIB;
    stack.expect_resolved("StorageFillingUpFast", &labels).await;
}

/// Grafana's variables as the test fills them: every component, and the
/// rate interval Grafana would pick for a 1s scrape interval.
fn fill_variables(expr: &str) -> String {
    expr.replace("$component", ".*")
        .replace("${component}", ".*")
        .replace("$__rate_interval", "15s")
        .replace("${__rate_interval}", "15s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_returns_data() {
    let (world, stack) = world_and_stack().await;
    // Something in every row: failures among requests, waiting and active
    // jobs, cache hits and misses.
    world.set_partner(FLAKY);
    world.push_jobs(1, 5, 30).await;
    world
        .redis_cmd(&[
            "LPUSH".into(),
            "bull:partner-sync:active".into(),
            "1".into(),
        ])
        .await;
    world
        .redis_cmd(&["SET".into(), "cached".into(), "1".into()])
        .await;
    let traffic = {
        let port = world.redis_port;
        Task(tokio::spawn(async move {
            let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            loop {
                for key in ["cached", "cached", "cached", "absent"] {
                    let _: Result<Option<String>, _> =
                        ::redis::cmd("GET").arg(key).query_async(&mut c).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }))
    };

    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("grafana/dashboards/depwatch.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or("");
            queries.push((
                format!("{} / {}", p["title"].as_str().unwrap_or("?"), t["refId"]),
                fill_variables(expr),
            ));
        }
    }
    assert!(queries.len() > 20, "{queries:?}");
    let deadline = Instant::now() + STEP;
    loop {
        let mut empty = Vec::new();
        for (what, q) in &queries {
            match stack.try_query(q).await {
                Ok(r) if !r.is_empty() => {}
                Ok(_) => empty.push(format!("{what}: no data: {q}")),
                Err(e) => panic!("{what}: {q}: {e}"),
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dashboard queries without data after {STEP:?}:\n{}\n{}",
            empty.join("\n"),
            stack.report().await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(traffic);
}

/// The configuration docker-compose.yml mounts into depwatch's container is
/// one depwatch accepts.
#[test]
fn compose_configuration_is_valid() {
    let (code, out) = check_config(&repo("deploy/depwatch.compose.yml"), &[]);
    assert_eq!(code, 0, "{out}");
}

/// Starts Prometheus with `config` on `port`, its data and log in `dir`,
/// resending alerts every second (so that tests need not wait a minute).
pub(crate) fn spawn_prometheus(
    prometheus: &std::path::Path,
    dir: &std::path::Path,
    config: &std::path::Path,
    port: u16,
) -> Proc {
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    Proc::spawn(
        "prometheus",
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--rules.alert.resend-delay=1s")
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log),
    )
}
