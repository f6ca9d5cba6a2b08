//! Test support: start the real depwatch binary on a loopback port with a
//! configuration, talk to it over HTTP, parse what it exposes, and find the
//! real servers the tests need (failing with the install command when one is
//! missing, never skipping). For tests without the binary: [`App`], the
//! router and state in process with [`FakeProbe`]s.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use depwatch::component::Component;
use depwatch::component::Components;
use depwatch::http::shared::{ReloadReply, Shared};
use depwatch::probe::{BoxFuture, CheckResult, Outcome, Probe};
use depwatch::store::Store;
use serde_json::Value;

/// A free TCP port on 127.0.0.1 (bound and released), for partner servers
/// that need their port before they start. depwatch itself binds port 0.
/// A reqwest client builder. reqwest's rustls (for the TLS tests) needs a
/// crypto provider chosen before any client is built: ring, as depwatch.
pub fn http_client() -> reqwest::ClientBuilder {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// The path of a program the tests need; panics with the install command
/// when it is missing.
pub fn require(program: &str, install: &str) -> PathBuf {
    if let Some(venv) = std::env::var_os("DEPWATCH_TEST_VENV") {
        let p = Path::new(&venv).join("bin").join(program);
        if p.exists() {
            return p;
        }
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(program);
    if venv.exists() {
        return venv;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
    {
        let p = dir.join(program);
        if p.exists() {
            return p;
        }
    }
    panic!("`{program}` is not installed: run ./scripts/test (or: {install})");
}

/// Waits until `proc` accepts connections on 127.0.0.1:`port`; fails at
/// once when it exits first, and after `timeout` otherwise.
pub fn wait_listening(proc: &mut Proc, port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = proc.child.try_wait().expect("wait for a child") {
            panic!("{} exited ({status}) before listening on {port}", proc.name);
        }
        assert!(
            Instant::now() < deadline,
            "{} did not listen on {port} within {timeout:?}",
            proc.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed by PID when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by PID (`kill -s SIG PID`).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -s {sig} {} failed", self.pid());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running depwatch with its own directory, port and log file.
pub struct Depwatch {
    pub proc: Proc,
    /// The port it listens on (read from what it printed).
    pub port: u16,
    /// The `listen` value of its configuration file (`127.0.0.1:0` unless
    /// the test chose one).
    listen: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub client: reqwest::Client,
    /// It serves TLS (`web.tls_server_config`): `client` cannot talk to it.
    pub tls: bool,
}

/// Writes `yaml` (with `listen: 127.0.0.1:0` and `state_dir` filled in
/// when absent) to a fresh directory and returns (dir, the `listen` value
/// written, config path).
pub fn write_config(yaml: &str) -> (tempfile::TempDir, String, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    // A `listen:` of the caller's (a restart on the same port) is kept.
    let given = yaml
        .lines()
        .find_map(|l| l.strip_prefix("listen:").map(|v| v.trim().to_string()));
    let listen = given.clone().unwrap_or_else(|| "127.0.0.1:0".into());
    let mut text = String::new();
    if given.is_none() {
        text.push_str(&format!("listen: {listen}\n"));
    }
    if !yaml.contains("state_dir:") {
        text.push_str(&format!(
            "state_dir: {}\n",
            dir.path().join("state").display()
        ));
    }
    text.push_str(yaml);
    let path = dir.path().join("depwatch.yml");
    std::fs::write(&path, text).expect("write config");
    (dir, listen, path)
}

/// The port of depwatch's start-up line `  metrics      http://ADDR/metrics`.
/// (port, whether it serves TLS).
fn printed_port(line: &str) -> Option<(u16, bool)> {
    let url = line.trim_start().strip_prefix("metrics")?.trim();
    let (addr, tls) = match url.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => (url.strip_prefix("http://")?, false),
    };
    let addr = addr.strip_suffix("/metrics")?;
    addr.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| (a.port(), tls))
}

impl Depwatch {
    /// Starts depwatch with `yaml` (on port 0 unless it has a `listen:`),
    /// reads the address it prints, and waits until it answers `/healthz`.
    pub async fn start(yaml: &str) -> Depwatch {
        Self::start_with_env(yaml, &[]).await
    }

    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Depwatch {
        Self::start_with(yaml, env, &[]).await
    }

    /// Starts depwatch with extra command-line arguments and environment.
    pub async fn start_with(yaml: &str, env: &[(&str, &str)], args: &[&str]) -> Depwatch {
        Self::start_wrapped(yaml, env, args, &[]).await
    }

    /// Starts depwatch with its open-file limit (soft and hard) set to
    /// `nofile`, as `ulimit -n` in its shell would.
    pub async fn start_with_fd_limit(yaml: &str, nofile: u32) -> Depwatch {
        let script = format!("ulimit -n {nofile} && exec \"$0\" \"$@\"");
        Self::start_wrapped(yaml, &[], &[], &["sh", "-c", &script]).await
    }

    /// Starts depwatch through `wrapper` (a program and its arguments, to
    /// which depwatch's path and arguments are appended), which must end by
    /// exec'ing it: the PID stays depwatch's.
    pub async fn start_wrapped(
        yaml: &str,
        env: &[(&str, &str)],
        args: &[&str],
        wrapper: &[&str],
    ) -> Depwatch {
        let (dir, listen, config_path) = write_config(yaml);
        let log_path = dir.path().join("depwatch.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let bin = env!("CARGO_BIN_EXE_depwatch");
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(args)
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(log);
        cmd.env("DEPWATCH_LOG", "debug,hyper=info,mongodb=info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn("depwatch", &mut cmd);
        let (port, tls) = Self::listening_port(&mut proc, &log_path).await;
        let client = crate::support::http_client()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let dw = Depwatch {
            proc,
            port,
            listen,
            dir,
            config_path,
            log_path,
            client,
            tls,
        };
        if tls {
            // Bound before it printed; the test's own client speaks TLS.
            return dw;
        }
        // Bound before it printed the address: answers from the first try.
        let url = dw.url("/healthz");
        wait_for(
            "depwatch to answer /healthz",
            Duration::from_secs(20),
            || async {
                let r = dw.client.get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            },
        )
        .await;
        dw
    }

    /// Reads depwatch's stdout until it prints where it listens (it binds
    /// first), failing with its output and log when it exits first or
    /// prints nothing within 20s. A thread keeps draining stdout afterwards.
    async fn listening_port(proc: &mut Proc, log_path: &Path) -> (u16, bool) {
        let stdout = proc.child.stdout.take().expect("piped stdout");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let timeout = Duration::from_secs(20);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut printed = String::new();
        loop {
            let line = tokio::time::timeout_at(deadline, rx.recv()).await;
            let why = match line {
                Ok(Some(line)) => match printed_port(&line) {
                    Some(found) => return found,
                    None => {
                        printed.push_str(&line);
                        printed.push('\n');
                        continue;
                    }
                },
                Ok(None) => {
                    let status = proc.child.wait().expect("wait for depwatch");
                    format!("depwatch exited ({status}) before listening")
                }
                Err(_) => format!("depwatch printed no listen address within {timeout:?}"),
            };
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            panic!("{why}\n--- stdout\n{printed}--- log\n{log}");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.client.get(self.url(path)).send().await.expect("GET");
        let code = r.status().as_u16();
        (code, r.text().await.unwrap_or_default())
    }

    pub async fn post(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = self.client.post(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("POST");
        let code = r.status().as_u16();
        (code, r.text().await.unwrap_or_default())
    }

    /// `/api/health` (or `/api/health?...`) as (status code, JSON).
    pub async fn health(&self, query: &str) -> (u16, Value) {
        let (code, body) = self.get(&format!("/api/health{query}")).await;
        (
            code,
            serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("health is not JSON ({e}): {body}")),
        )
    }

    /// `/metrics` with basic auth (an `access.metrics: authenticated` run).
    pub async fn metrics_as(&self, user: &str, pass: &str) -> Metrics {
        let r = self
            .client
            .get(self.url("/metrics"))
            .basic_auth(user, Some(pass))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(r.status(), 200);
        Metrics::parse(&r.text().await.unwrap())
    }

    pub async fn metrics(&self) -> Metrics {
        let (code, body) = self.get("/metrics").await;
        assert_eq!(code, 200, "{body}");
        Metrics::parse(&body)
    }

    /// Waits until `f` holds for the metrics.
    pub async fn wait_metrics(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        wait_for(what, timeout, || async {
            let m = self.metrics().await;
            f(&m).then_some(m)
        })
        .await
    }

    /// Waits until `f` holds for the health JSON.
    pub async fn wait_health(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(u16, &Value) -> bool,
    ) -> (u16, Value) {
        wait_for(what, timeout, || async {
            let (code, v) = self.health("").await;
            f(code, &v).then_some((code, v))
        })
        .await
    }

    /// Asserts that none of `secrets` shows in what a user or a scraper can
    /// see: `/metrics`, `/api/health`, the status page and the log.
    pub async fn assert_never_shown(&self, secrets: &[&str]) {
        let surfaces = [
            ("/metrics", self.get("/metrics").await.1),
            ("/api/health", self.get("/api/health").await.1),
            ("the status page", self.get("/").await.1),
            ("the log", self.log()),
        ];
        for (what, text) in surfaces {
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "`{secret}` appears in {what}:\n{text}"
                );
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Rewrites the configuration file in place (for reload tests), with the
    /// `listen` line it started with.
    pub fn rewrite_config(&self, yaml: &str) {
        let mut text = format!(
            "listen: {}\nstate_dir: {}\n",
            self.listen,
            self.dir.path().join("state").display()
        );
        text.push_str(yaml);
        let mut f = std::fs::File::create(&self.config_path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }
}

/// Parsed Prometheus text exposition: series (name plus sorted labels) → value.
#[derive(Debug, Default)]
pub struct Metrics {
    pub text: String,
    pub series: HashMap<String, f64>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut series = HashMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (key, value) = match line.rfind('}') {
                Some(i) => (&line[..=i], line[i + 1..].trim()),
                None => line
                    .split_once(' ')
                    .map(|(k, v)| (k, v.trim()))
                    .unwrap_or((line, "")),
            };
            let value = value.split_whitespace().next().unwrap_or("");
            let v = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad sample line: {line}")),
            };
            series.insert(normalize(key), v);
        }
        Metrics {
            text: text.to_string(),
            series,
        }
    }

    /// The value of `name` with exactly `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.series.get(&key(name, labels)).copied()
    }

    /// Like `get`, panicking with the exposition when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {}\n{}", key(name, labels), self.text))
    }

    /// Every series of `name` whose labels include `labels`.
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(&str, f64)> {
        self.series
            .iter()
            .filter(|(k, _)| {
                let base = k.split('{').next().unwrap_or("");
                base == name
                    && labels
                        .iter()
                        .all(|(l, v)| k.contains(&format!("{l}=\"{v}\"")))
            })
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    l.sort();
    format!("{name}{{{}}}", l.join(","))
}

fn normalize(series: &str) -> String {
    let Some(open) = series.find('{') else {
        return series.to_string();
    };
    let name = &series[..open];
    let inner = &series[open + 1..series.len() - 1];
    let mut labels = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let mut esc = false;
    for ch in inner.chars() {
        if esc {
            cur.push(ch);
            esc = false;
            continue;
        }
        match ch {
            '\\' => {
                esc = true;
                cur.push(ch);
            }
            '"' => {
                in_q = !in_q;
                cur.push(ch);
            }
            ',' if !in_q => labels.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        labels.push(cur);
    }
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

/// Runs `promtool check metrics` on an exposition; panics with its output on failure.
pub fn promtool_check_metrics(text: &str) {
    promtool_check_metrics_allowing(text, &[]);
}

/// Like [`promtool_check_metrics`], but the complaints listed in `allowed`
/// (whole lines of promtool's output) do not fail the test; anything else does.
pub fn promtool_check_metrics_allowing(text: &str, allowed: &[&str]) {
    let promtool = require("promtool", "apt-get install prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = msg.lines().filter(|l| !l.trim().is_empty()).collect();
    let other = lines.iter().filter(|l| !allowed.contains(l)).count();
    assert!(
        other == 0 && (out.status.success() || !lines.is_empty()),
        "promtool check metrics:\n{msg}\n---\n{text}"
    );
}

/// Runs `depwatch check-config` on a file: (exit code, stdout + stderr).
pub fn check_config(path: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_depwatch"));
    cmd.arg("check-config").arg("--config").arg(path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run depwatch check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

// ---- In process: the router and the scheduler, without the binary

/// A probe for in-process tests: counts its checks, notes when each started
/// (on tokio's clock), takes `delay` (tokio time: a paused test skips it)
/// and answers what the test set (healthy at first).
pub struct FakeProbe {
    checks: AtomicUsize,
    started: Mutex<Vec<tokio::time::Instant>>,
    answer: Mutex<CheckResult>,
    delay: Mutex<Duration>,
}

impl FakeProbe {
    pub fn new() -> Arc<FakeProbe> {
        Arc::new(FakeProbe {
            checks: AtomicUsize::new(0),
            started: Mutex::new(Vec::new()),
            answer: Mutex::new(Ok(Outcome::healthy(serde_json::Map::new()))),
            delay: Mutex::new(Duration::ZERO),
        })
    }

    /// How many checks started so far.
    pub fn checks(&self) -> usize {
        self.checks.load(Ordering::SeqCst)
    }

    /// When each check started.
    pub fn started(&self) -> Vec<tokio::time::Instant> {
        self.started.lock().unwrap().clone()
    }

    /// What the next checks answer.
    pub fn answer(&self, result: CheckResult) {
        *self.answer.lock().unwrap() = result;
    }

    /// How long the next checks take.
    pub fn delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }
}

impl Probe for FakeProbe {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(async move {
            self.checks.fetch_add(1, Ordering::SeqCst);
            self.started
                .lock()
                .unwrap()
                .push(tokio::time::Instant::now());
            let delay = *self.delay.lock().unwrap();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            self.answer.lock().unwrap().clone()
        })
    }
}

/// depwatch's state and router in process: the configuration `yaml`, each
/// of its probes replaced by a [`FakeProbe`] of the same name, a fresh state
/// store, no server and no port. Requests go through `oneshot`.
pub struct App {
    pub shared: Arc<Shared>,
    probes: HashMap<String, Arc<FakeProbe>>,
    /// Nobody applies reloads; kept so that `/-/reload` finds the channel open.
    _reload_rx: tokio::sync::mpsc::Receiver<ReloadReply>,
    _dir: tempfile::TempDir,
}

/// An answer of the in-process router.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl App {
    pub fn new(yaml: &str) -> App {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = depwatch::config::from_str(yaml, "test.yml", None, dir.path(), &|_| None)
            .unwrap_or_else(|e| panic!("invalid test configuration:\n{e}"));
        let metrics = Arc::new(depwatch::metrics::Metrics::new());
        let store = Arc::new(Store::open(&dir.path().join("state")).expect("state store"));
        let mut probes = HashMap::new();
        let components = config
            .probes
            .iter()
            .map(|p| {
                let fake = FakeProbe::new();
                probes.insert(p.name.clone(), fake.clone());
                Arc::new(Component::new(
                    p.clone(),
                    fake,
                    metrics.clone(),
                    config.health.performance.clone(),
                    depwatch::metrics::kit::SeriesGate::default(),
                ))
            })
            .collect();
        let runtime = Arc::new(Components::new(config, components));
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        App {
            shared: Arc::new(Shared::new(metrics, runtime, store, reload_tx)),
            probes,
            _reload_rx: reload_rx,
            _dir: dir,
        }
    }

    /// The fake behind component `name`.
    pub fn probe(&self, name: &str) -> &FakeProbe {
        self.probes
            .get(name)
            .unwrap_or_else(|| panic!("no probe named {name}"))
    }

    /// The components, for the scheduler.
    pub fn components(&self) -> Vec<Arc<Component>> {
        self.shared.current().components.clone()
    }

    /// Sends one request through a fresh `router()`.
    pub async fn send(&self, req: axum::http::Request<axum::body::Body>) -> Answer {
        let (status, headers, body) = self.send_raw(req).await;
        Answer {
            status,
            headers,
            body: String::from_utf8(body).expect("a UTF-8 body"),
        }
    }

    /// [`App::send`] with the body as bytes (a compressed answer).
    pub async fn send_raw(
        &self,
        req: axum::http::Request<axum::body::Body>,
    ) -> (u16, axum::http::HeaderMap, Vec<u8>) {
        use tower::ServiceExt;
        let resp = depwatch::http::router(self.shared.clone())
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("read the body");
        (status, headers, body.to_vec())
    }

    /// `method path` with `headers` (name, value).
    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(axum::body::Body::empty()).unwrap())
            .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.request("GET", path, &[]).await
    }

    /// A POST, with `Authorization: Bearer token` when a token is given.
    pub async fn post(&self, path: &str, token: Option<&str>) -> Answer {
        match token {
            Some(t) => {
                let auth = format!("Bearer {t}");
                self.request("POST", path, &[("authorization", &auth)])
                    .await
            }
            None => self.request("POST", path, &[]).await,
        }
    }

    /// `/api/health` (or `/api/health?...`) as (status code, JSON).
    pub async fn health(&self, query: &str) -> (u16, Value) {
        let a = self.get(&format!("/api/health{query}")).await;
        (a.status, a.json())
    }
}

/// Runs depwatch on `config` from `dir`, which must refuse to start: its
/// stderr.
pub fn refused(dir: &Path, config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_depwatch"))
        .arg("--config")
        .arg(config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run depwatch");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    err
}
