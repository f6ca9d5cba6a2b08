//! Scaling out on the engines users already run: the shipped
//! `prometheus/sharding/prometheus.yml` (file SD + `hashmod`) loaded into a
//! real Prometheus over three real depwatch instances and 300 targets of one
//! local server, which counts who asked for what; and real HAProxy health
//! checks against depwatch's `/api/health` (`deploy/haproxy.cfg`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::routing::get;
use serde_json::Value;

use crate::support::*;

const TARGETS: usize = 300;
const SHARDS: usize = 3;
const WAIT: Duration = Duration::from_secs(60);

/// path number → the shards (from the module's `X-Shard` header) that asked.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<BTreeMap<usize, BTreeMap<String, u32>>>>);

struct Task(tokio::task::JoinHandle<()>);
impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn start_targets() -> (Seen, u16, Task) {
    let seen = Seen::default();
    let app = Router::new()
        .route(
            "/t/{n}",
            get(
                |State(s): State<Seen>, UrlPath(n): UrlPath<usize>, h: HeaderMap| async move {
                    let shard = h
                        .get("x-shard")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    *s.0.lock()
                        .unwrap()
                        .entry(n)
                        .or_default()
                        .entry(shard)
                        .or_default() += 1;
                    "ok"
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (seen, port, Task(task))
}

fn shard_config(n: usize) -> String {
    format!(
        "modules:
  partner_2xx:
    allowed_targets: [\"http://127.0.0.1:*/t/*\"]
    timeout: 2s
    headers: {{ X-Shard: \"{n}\" }}
    expect: {{ status: [\"2xx\"] }}
probes:
  - name: self
    kind: process
    self: true
"
    )
}

/// The shipped sharding config with the test's addresses, target files and
/// a 1 s scrape interval; nothing else changed.
fn sharding_prometheus(ports: &[u16], sd_dir: &Path) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus/sharding/prometheus.yml"),
    )
    .expect("read prometheus/sharding/prometheus.yml");
    let mut text = text
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("scrape_timeout: 10s", "scrape_timeout: 900ms")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace("refresh_interval: 1m", "refresh_interval: 1s")
        .replace(
            "/etc/prometheus/targets/*.yml",
            &format!("{}/*.yml", sd_dir.display()),
        );
    for (i, p) in ports.iter().enumerate() {
        text = text.replace(&format!("depwatch-{i}:9877"), &format!("127.0.0.1:{p}"));
    }
    assert!(!text.contains(":9877"), "an unreplaced address:\n{text}");
    text
}

async fn query(port: u16, q: &str) -> Vec<Value> {
    let url = reqwest::Url::parse_with_params(
        &format!("http://127.0.0.1:{port}/api/v1/query"),
        &[("query", q)],
    )
    .unwrap();
    let Ok(r) = crate::support::http_client()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
    else {
        return vec![];
    };
    let v: Value = r.json().await.unwrap_or_default();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// `count(...)` as a number (0 when the vector is empty).
async fn count(port: u16, q: &str) -> usize {
    query(port, &format!("count({q})"))
        .await
        .first()
        .and_then(|s| s["value"][1].as_str().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[tokio::test]
async fn hashmod_sharding_probes_every_target_once_and_a_dead_shard_loses_only_its_own() {
    let prometheus = require("prometheus", "apt-get install prometheus");
    // The shipped depwatch side of the example is valid as it stands.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus/sharding/depwatch.yml");
    let (code, out) = check_config(&shipped, &[]);
    assert_eq!(code, 0, "{out}");
    let (seen, target_port, _server) = start_targets().await;
    let mut shards = Vec::new();
    for n in 0..SHARDS {
        shards.push(Depwatch::start(&shard_config(n)).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("targets");
    std::fs::create_dir(&sd).unwrap();
    let mut list = String::from("- targets:\n");
    for i in 0..TARGETS {
        list.push_str(&format!("    - http://127.0.0.1:{target_port}/t/{i}\n"));
    }
    list.push_str("  labels:\n    team: integrations\n");
    std::fs::write(sd.join("partners.yml"), list).unwrap();
    let ports: Vec<u16> = shards.iter().map(|d| d.port).collect();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, sharding_prometheus(&ports, &sd)).unwrap();
    let prom_port = free_port();
    let mut prom = crate::bundle::spawn_prometheus(&prometheus, dir.path(), &config, prom_port);
    wait_listening(&mut prom, prom_port, Duration::from_secs(30));

    // Every target up and successful, each in exactly one shard's job.
    wait_for("300 probe targets up", WAIT, || async {
        (count(prom_port, r#"up{job=~"depwatch-probe-.*"} == 1"#).await == TARGETS).then_some(())
    })
    .await;
    wait_for("300 successful probes", WAIT, || async {
        (count(prom_port, "depwatch_probe_success == 1").await == TARGETS).then_some(())
    })
    .await;
    assert_eq!(
        count(
            prom_port,
            r#"count by (instance) (up{job=~"depwatch-probe-.*"}) > 1"#
        )
        .await,
        0,
        "a target is in more than one shard"
    );
    let per_job: BTreeMap<String, usize> = query(
        prom_port,
        r#"count by (job) (up{job=~"depwatch-probe-.*"})"#,
    )
    .await
    .iter()
    .map(|s| {
        (
            s["metric"]["job"].as_str().unwrap().to_string(),
            s["value"][1].as_str().unwrap().parse().unwrap(),
        )
    })
    .collect();
    assert_eq!(per_job.len(), SHARDS, "{per_job:?}");
    for (job, n) in &per_job {
        assert!(
            *n > TARGETS / SHARDS / 2,
            "{job} got only {n} targets: {per_job:?}"
        );
    }
    // Counted on the target server: every path asked for, each by one shard only.
    let snapshot = wait_for("every path probed", WAIT, || async {
        let s = seen.0.lock().unwrap().clone();
        (s.len() == TARGETS).then_some(s)
    })
    .await;
    for (path, by) in &snapshot {
        assert_eq!(by.len(), 1, "/t/{path} was probed by shards {by:?}");
    }
    // The shard that asked is the one Prometheus assigned.
    let assigned: BTreeMap<String, String> = query(prom_port, r#"up{job=~"depwatch-probe-.*"}"#)
        .await
        .iter()
        .map(|s| {
            (
                s["metric"]["instance"].as_str().unwrap().to_string(),
                s["metric"]["shard"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (path, by) in &snapshot {
        let url = format!("http://127.0.0.1:{target_port}/t/{path}");
        assert_eq!(
            by.keys().next(),
            assigned.get(&url),
            "{url} probed by the wrong shard"
        );
    }

    // Kill shard 1: its targets (only) go down; nothing else goes missing.
    let dead: BTreeSet<String> = assigned
        .iter()
        .filter(|(_, s)| *s == "1")
        .map(|(u, _)| u.clone())
        .collect();
    shards[1].proc.signal("KILL");
    let _ = shards[1].proc.child.wait();
    wait_for("shard 1's targets down", WAIT, || async {
        (count(prom_port, r#"up{job="depwatch-probe-1"} == 0"#).await == dead.len()).then_some(())
    })
    .await;
    // A few more rounds for the others, then nothing else may be down.
    let before: u32 = seen
        .0
        .lock()
        .unwrap()
        .values()
        .flat_map(|b| b.values())
        .sum();
    wait_for("two more rounds of the live shards", WAIT, || async {
        let now: u32 = seen
            .0
            .lock()
            .unwrap()
            .values()
            .flat_map(|b| b.values())
            .sum();
        (now as usize >= before as usize + 2 * (TARGETS - dead.len())).then_some(())
    })
    .await;
    let down: BTreeSet<String> = query(prom_port, r#"up{job=~"depwatch-probe-.*"} == 0"#)
        .await
        .iter()
        .map(|s| s["metric"]["instance"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(down, dead, "targets of live shards went down");
    assert_eq!(
        count(prom_port, "depwatch_probe_success == 1").await,
        TARGETS - dead.len()
    );
    println!(
        "targets per shard: {per_job:?}; shard 1 killed: {} targets down, {} still probed",
        dead.len(),
        TARGETS - dead.len()
    );
}

/// A service instance: answers its own name on `/`.
async fn start_app(name: &'static str) -> (u16, Task) {
    let app = Router::new().route("/", get(move || async move { name }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, Task(task))
}

/// The shipped `deploy/haproxy.cfg` with the test's addresses and a faster
/// check interval; nothing else changed.
fn haproxy_config(front: u16, apps: [(u16, u16); 2]) -> String {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy.cfg"))
            .expect("read deploy/haproxy.cfg");
    let mut text = text
        .replace("bind :80", &format!("bind 127.0.0.1:{front}"))
        .replace("inter 2s", "inter 200ms");
    for (i, (app, dw)) in apps.iter().enumerate() {
        text = text.replace(
            &format!("10.0.0.1{}:8080 check port 9877", i + 1),
            &format!("127.0.0.1:{app} check port {dw}"),
        );
    }
    assert!(!text.contains("10.0.0."), "an unreplaced address:\n{text}");
    text
}

/// Who answers 30 requests in a row through the balancer.
async fn served_by(front: u16) -> BTreeSet<String> {
    let client = crate::support::http_client().build().unwrap();
    let mut by = BTreeSet::new();
    for _ in 0..30 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{front}/"))
            .send()
            .await
            && r.status().is_success()
        {
            by.insert(r.text().await.unwrap_or_default());
        }
    }
    by
}

/// The guarding depwatch: its health is `summary` (HAProxy checks it
/// anonymously and gets the verdict only, with the same 200/503).
fn guard(redis_port: u16, degraded_by: Option<u16>) -> String {
    let mut y = format!(
        "{}access:\n  health: summary\nhealth:\n  cache_ttl: 100ms\nprobes:\n  - name: sessions\n    kind: redis\n    url: redis://127.0.0.1:{redis_port}/0\n    interval: 200ms\n    timeout: 150ms\n    failure_threshold: 1\n",
        crate::security::credentials_yaml()
    );
    if let Some(dead) = degraded_by {
        y.push_str(&format!(
            "  - name: recommendations\n    kind: redis\n    critical: false\n    url: redis://127.0.0.1:{dead}/0\n    interval: 200ms\n    timeout: 150ms\n    failure_threshold: 1\n"
        ));
    }
    y
}

#[tokio::test]
async fn haproxy_takes_an_unhealthy_instance_out_and_keeps_a_degraded_one_in() {
    let haproxy = require("haproxy", "apt-get install haproxy");
    let (app1, _a1) = start_app("app-1").await;
    let (app2, _a2) = start_app("app-2").await;
    let redis1_port = free_port();
    let redis1 = crate::redis::RedisServer::start_on(redis1_port, None);
    let redis2 = crate::redis::RedisServer::start(None);
    // app-1's depwatch is healthy; app-2's is degraded all along (a
    // non-critical dependency is down).
    let dw1 = Depwatch::start(&guard(redis1_port, None)).await;
    let dw2 = Depwatch::start(&guard(redis2.port, Some(free_port()))).await;
    dw1.wait_health("app-1 healthy", WAIT, |c, v| {
        c == 200 && v["status"] == "healthy"
    })
    .await;
    let (_, summary) = dw2
        .wait_health("app-2 degraded", WAIT, |c, v| {
            c == 200 && v["status"] == "degraded"
        })
        .await;
    // What HAProxy reads: the anonymous summary, nothing of the components.
    assert_eq!(summary.as_object().unwrap().len(), 2, "{summary}");

    let dir = tempfile::tempdir().unwrap();
    let front = free_port();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        haproxy_config(front, [(app1, dw1.port), (app2, dw2.port)]),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
    let mut ha = Proc::spawn(
        "haproxy",
        std::process::Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    wait_listening(&mut ha, front, Duration::from_secs(10));

    let both: BTreeSet<String> = ["app-1".to_string(), "app-2".to_string()].into();
    wait_for(
        "both instances in rotation (degraded stays in)",
        WAIT,
        || async { (served_by(front).await == both).then_some(()) },
    )
    .await;

    // app-1's critical dependency dies: 503 from its depwatch, out of rotation.
    drop(redis1);
    dw1.wait_health("app-1 unhealthy", WAIT, |c, _| c == 503)
        .await;
    let only2: BTreeSet<String> = ["app-2".to_string()].into();
    wait_for("app-1 out of rotation", WAIT, || async {
        (served_by(front).await == only2).then_some(())
    })
    .await;
    // And it stays out while unhealthy: 90 requests more, all to app-2.
    for _ in 0..3 {
        assert_eq!(served_by(front).await, only2);
    }

    // Back: healthy again, back in rotation.
    let _redis1 = crate::redis::RedisServer::start_on(redis1_port, None);
    dw1.wait_health("app-1 healthy again", WAIT, |c, _| c == 200)
        .await;
    wait_for("app-1 back in rotation", WAIT, || async {
        (served_by(front).await == both).then_some(())
    })
    .await;
}
