//! `kind: redis` against a real `redis-server`: cache counters, BullMQ and
//! Bull queues laid out exactly as those libraries write them, list / zset /
//! stream queues, discovery, one round trip per check, outage and recovery,
//! authentication, and secrets kept out of everything depwatch shows.

use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::support::*;

/// A redis-server on a free loopback port, killed by PID on drop.
pub struct RedisServer {
    pub proc: Proc,
    pub port: u16,
    pass: Option<String>,
    /// Its working directory: a replica writes the RDB of its sync there,
    /// and a server started where one lies loads it.
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start(pass: Option<&str>) -> RedisServer {
        Self::start_on(free_port(), pass)
    }

    pub fn start_on(port: u16, pass: Option<&str>) -> RedisServer {
        Self::start_with(port, pass, &[])
    }

    /// With more `redis-server` arguments.
    pub fn start_with(port: u16, pass: Option<&str>, more: &[&str]) -> RedisServer {
        let bin = require("redis-server", "apt-get install redis-server");
        let dir = tempfile::tempdir().expect("a directory for redis-server");
        let mut cmd = Command::new(bin);
        cmd.current_dir(dir.path());
        cmd.args([
            "--dir",
            dir.path().to_str().expect("a UTF-8 temporary path"),
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        if let Some(p) = pass {
            cmd.args(["--requirepass", p]);
        }
        cmd.args(more);
        cmd.stdout(std::process::Stdio::null());
        let mut proc = Proc::spawn("redis-server", &mut cmd);
        wait_listening(&mut proc, port, Duration::from_secs(10));
        RedisServer {
            proc,
            port,
            pass: pass.map(str::to_string),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        match &self.pass {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    pub async fn conn(&self) -> ::redis::aio::MultiplexedConnection {
        let client = ::redis::Client::open(self.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }
}

pub async fn cmd(c: &mut ::redis::aio::MultiplexedConnection, args: &[&str]) -> ::redis::Value {
    let mut k = ::redis::cmd(args[0]);
    for a in &args[1..] {
        k.arg(*a);
    }
    k.query_async(c)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A job hash as BullMQ and Bull write it (`timestamp`, `processedOn` in ms).
pub async fn job(
    c: &mut ::redis::aio::MultiplexedConnection,
    base: &str,
    id: &str,
    created_ago_s: i64,
    processed_ago_s: Option<i64>,
) {
    let ts = (now_ms() - created_ago_s * 1000).to_string();
    let mut args = vec![
        "HSET".to_string(),
        format!("{base}:{id}"),
        "name".into(),
        "sync".into(),
        "data".into(),
        "{}".into(),
        "opts".into(),
        "{}".into(),
        "timestamp".into(),
        ts,
        "delay".into(),
        "0".into(),
        "priority".into(),
        "0".into(),
    ];
    if let Some(p) = processed_ago_s {
        args.push("processedOn".into());
        args.push((now_ms() - p * 1000).to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    cmd(c, &refs).await;
}

/// A BullMQ queue `base` (its meta hash) with a hash for each of `jobs`:
/// (id, created seconds ago).
async fn bullmq_jobs(
    server: &RedisServer,
    c: &mut ::redis::aio::MultiplexedConnection,
    base: &str,
    jobs: &[(&str, i64)],
) {
    make_bullmq_queue(&server.url(), base);
    for (id, ago) in jobs {
        job(c, base, id, *ago, None).await;
    }
}

/// Makes the BullMQ queue `key` (`PREFIX:NAME`) exist as the service's
/// `Queue` does when it starts: its meta hash. Blocking (between a Redis
/// start and a check); a queue without it is reported as not existing.
pub fn make_bullmq_queue(url: &str, key: &str) {
    let mut c = ::redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("connect to the test redis");
    ::redis::cmd("HSET")
        .arg(format!("{key}:meta"))
        .arg("opts.maxLenEvents")
        .arg(10_000)
        .arg("version")
        .arg("bullmq:5.0.0")
        .query::<()>(&mut c)
        .expect("create the queue's meta hash");
}

/// A BullMQ queue `bull:bmq`: jobs in every state, with known ages and locks.
async fn bullmq_fixture(c: &mut ::redis::aio::MultiplexedConnection) {
    let b = "bull:bmq";
    cmd(
        c,
        &["HSET", &format!("{b}:meta"), "opts.maxLenEvents", "10000"],
    )
    .await;
    cmd(c, &["SET", &format!("{b}:id"), "10"]).await;
    // wait: producers LPUSH, so job 1 (the oldest, 120 s) is at the right end.
    job(c, b, "1", 120, None).await;
    job(c, b, "2", 60, None).await;
    cmd(c, &["LPUSH", &format!("{b}:wait"), "1", "2"]).await;
    // active: 3 has run for 300 s and holds its lock; 4's lock expired.
    job(c, b, "3", 400, Some(300)).await;
    job(c, b, "4", 20, Some(10)).await;
    cmd(c, &["LPUSH", &format!("{b}:active"), "3", "4"]).await;
    cmd(
        c,
        &["SET", &format!("{b}:3:lock"), "token-3", "PX", "600000"],
    )
    .await;
    // delayed (score = timestamp * 0x1000), prioritized, waiting-children.
    job(c, b, "5", 5, None).await;
    let delayed_score = ((now_ms() + 60_000) * 4096).to_string();
    cmd(c, &["ZADD", &format!("{b}:delayed"), &delayed_score, "5"]).await;
    job(c, b, "6", 30, None).await;
    cmd(c, &["ZADD", &format!("{b}:prioritized"), "8589934593", "6"]).await;
    job(c, b, "7", 5, None).await;
    cmd(c, &["ZADD", &format!("{b}:waiting-children"), "0", "7"]).await;
    for id in ["8", "9"] {
        job(c, b, id, 500, Some(450)).await;
        cmd(
            c,
            &["ZADD", &format!("{b}:completed"), &now_ms().to_string(), id],
        )
        .await;
    }
    job(c, b, "10", 500, Some(450)).await;
    cmd(
        c,
        &["ZADD", &format!("{b}:failed"), &now_ms().to_string(), "10"],
    )
    .await;
}

/// A paused Bull (v3) queue `bull:b3`: `meta-paused` set, the waiting jobs
/// renamed into `paused`, one active job with its lock.
async fn bull_fixture(c: &mut ::redis::aio::MultiplexedConnection) {
    let b = "bull:b3";
    cmd(c, &["SET", &format!("{b}:id"), "3"]).await;
    cmd(c, &["SET", &format!("{b}:meta-paused"), "1"]).await;
    job(c, b, "1", 90, None).await;
    job(c, b, "2", 10, None).await;
    cmd(c, &["LPUSH", &format!("{b}:paused"), "1", "2"]).await;
    job(c, b, "3", 50, Some(40)).await;
    cmd(c, &["LPUSH", &format!("{b}:active"), "3"]).await;
    cmd(c, &["SET", &format!("{b}:3:lock"), "token", "PX", "600000"]).await;
}

fn q(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.value(name, labels)
}

#[tokio::test]
async fn redis_cache_counters_and_queues() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    bullmq_fixture(&mut c).await;
    bull_fixture(&mut c).await;
    cmd(&mut c, &["LPUSH", "emails", "a", "b", "c"]).await;
    cmd(&mut c, &["ZADD", "retry", "1", "x", "2", "y"]).await;
    for i in 0..5 {
        cmd(&mut c, &["XADD", "events", "*", "n", &i.to_string()]).await;
    }
    cmd(&mut c, &["XGROUP", "CREATE", "events", "g1", "0"]).await;
    cmd(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "g1",
            "c1",
            "COUNT",
            "2",
            "STREAMS",
            "events",
            ">",
        ],
    )
    .await;
    for qn in ["alpha", "beta", "gamma"] {
        cmd(
            &mut c,
            &["HSET", &format!("disc:{qn}:meta"), "opts.maxLenEvents", "1"],
        )
        .await;
    }
    cmd(&mut c, &["SET", "cached", "v"]).await;
    let dbsize: i64 = ::redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();

    let yaml = format!(
        r#"probes:
  - name: jobs
    kind: redis
    url: {url}
    interval: 300ms
    timeout: 250ms
    jitter: 0s
    hit_rate_degraded_below: 0.5
    hit_rate_min_lookups: 10
    queues:
      - {{ name: bmq, type: bullmq, prefix: bull, stuck_after: 1h }}
      - {{ name: b3, type: bull, prefix: bull }}
      - {{ name: emails, type: list, key: emails, degraded_above: 2 }}
      - {{ name: retry, type: zset, key: retry, state: delayed }}
      - {{ name: events, type: stream, key: events }}
      - {{ type: bullmq, prefix: disc, discover: true, max_queues: 2 }}
      - {{ name: wrongtype, type: list, key: cached }}
      - {{ name: bmq-typo, type: bullmq, prefix: bull }}
      - {{ name: b3-typo, type: bull, prefix: bul }}
"#,
        url = server.url()
    );
    let dw = Depwatch::start(&yaml).await;
    let m = dw
        .wait_metrics("queue metrics", Duration::from_secs(15), |m| {
            m.get(
                "depwatch_queue_jobs",
                &[
                    ("component", "jobs"),
                    ("queue", "bmq"),
                    ("state", "waiting"),
                ],
            )
            .is_some()
        })
        .await;
    let jobs = |queue: &str, state: &str| {
        q(
            &m,
            "depwatch_queue_jobs",
            &[("component", "jobs"), ("queue", queue), ("state", state)],
        )
    };
    // BullMQ: every state.
    assert_eq!(jobs("bmq", "waiting"), 2.0);
    assert_eq!(jobs("bmq", "active"), 2.0);
    assert_eq!(jobs("bmq", "delayed"), 1.0);
    assert_eq!(jobs("bmq", "prioritized"), 1.0);
    assert_eq!(jobs("bmq", "waiting-children"), 1.0);
    assert_eq!(jobs("bmq", "completed"), 2.0);
    assert_eq!(jobs("bmq", "failed"), 1.0);
    assert_eq!(jobs("bmq", "paused"), 0.0);
    let ql = [("component", "jobs"), ("queue", "bmq")];
    let wait_age = q(&m, "depwatch_queue_oldest_waiting_age_seconds", &ql);
    assert!((119.0..=130.0).contains(&wait_age), "{wait_age}");
    let active_age = q(&m, "depwatch_queue_oldest_active_age_seconds", &ql);
    assert!((299.0..=310.0).contains(&active_age), "{active_age}");
    assert_eq!(q(&m, "depwatch_queue_stalled_jobs", &ql), 1.0);
    assert_eq!(q(&m, "depwatch_queue_paused", &ql), 0.0);
    // Bull 3, paused: its waiting jobs are paused, not waiting.
    assert_eq!(jobs("b3", "waiting"), 0.0);
    assert_eq!(jobs("b3", "paused"), 2.0);
    assert_eq!(jobs("b3", "active"), 1.0);
    let bl = [("component", "jobs"), ("queue", "b3")];
    assert_eq!(q(&m, "depwatch_queue_paused", &bl), 1.0);
    assert_eq!(q(&m, "depwatch_queue_stalled_jobs", &bl), 0.0);
    let b3_wait = q(&m, "depwatch_queue_oldest_waiting_age_seconds", &bl);
    assert!((89.0..=100.0).contains(&b3_wait), "{b3_wait}");
    assert!(
        m.get(
            "depwatch_queue_jobs",
            &[
                ("component", "jobs"),
                ("queue", "b3"),
                ("state", "prioritized")
            ]
        )
        .is_none()
    );
    // list, zset (as delayed), stream (lag waiting, pending active).
    assert_eq!(jobs("emails", "waiting"), 3.0);
    assert_eq!(jobs("retry", "delayed"), 2.0);
    assert_eq!(jobs("events", "waiting"), 3.0);
    assert_eq!(jobs("events", "active"), 2.0);
    let el = [("component", "jobs"), ("queue", "events")];
    assert_eq!(q(&m, "depwatch_redis_stream_length", &el), 5.0);
    let gl = [("component", "jobs"), ("queue", "events"), ("group", "g1")];
    assert_eq!(q(&m, "depwatch_redis_stream_group_pending", &gl), 2.0);
    assert_eq!(q(&m, "depwatch_redis_stream_group_lag", &gl), 3.0);
    // Discovery: sorted, bounded by max_queues.
    assert_eq!(jobs("alpha", "waiting"), 0.0);
    assert_eq!(jobs("beta", "waiting"), 0.0);
    assert!(
        m.matching("depwatch_queue_jobs", &[("queue", "gamma")])
            .is_empty()
    );
    // INFO: keys per db, memory.
    assert_eq!(
        q(
            &m,
            "depwatch_redis_keys",
            &[("component", "jobs"), ("db", "db0")]
        ),
        dbsize as f64
    );
    assert!(
        q(
            &m,
            "depwatch_redis_memory_used_bytes",
            &[("component", "jobs")]
        ) > 0.0
    );
    promtool_check_metrics(&m.text);

    let (_, h) = dw.health("").await;
    let jobs_h = &h["components"]["jobs"];
    // emails is above its depth limit: degraded, with the reason.
    assert_eq!(jobs_h["status"], "degraded", "{jobs_h}");
    let err = jobs_h["error"].as_str().unwrap();
    assert!(
        err.contains("queue emails: 3 jobs waiting, above 2"),
        "{err}"
    );
    assert!(
        err.contains("more than 2 bullmq queues under prefix `disc`"),
        "{err}"
    );
    // A key of another type: that queue is reported, the others still read.
    assert!(
        err.contains(
            "queue wrongtype: cannot read it: key cached is a string where a list queue needs a list"
        ),
        "{err}"
    );
    // A queue without the key every queue of its layout has (a typo in its
    // name or prefix): reported, and no series of zeros for it.
    assert!(
        err.contains("queue bmq-typo: no such BullMQ queue: bull:bmq-typo:meta does not exist"),
        "{err}"
    );
    assert!(
        err.contains("queue b3-typo: no such Bull queue: bul:b3-typo:id does not exist"),
        "{err}"
    );
    assert!(
        !m.text.contains("queue=\"bmq-typo\""),
        "series for a queue that does not exist"
    );
    let qd = &jobs_h["details"]["queues"]["bmq"];
    assert_eq!(qd["waiting"], 2);
    assert_eq!(qd["stalled"], 1);
    assert_eq!(
        jobs_h["details"]["queues"]["events"]["groups"]["g1"]["lag"],
        3
    );
    // Not enough lookups yet: the hit rate is not judged.
    assert!(!err.contains("hit rate"), "{err}");

    // Cache lookups move the counters; depwatch's own queue reads stay out
    // of the hit rate it judges.
    let hits0 = q(
        &m,
        "depwatch_redis_keyspace_hits_total",
        &[("component", "jobs")],
    );
    let misses0 = q(
        &m,
        "depwatch_redis_keyspace_misses_total",
        &[("component", "jobs")],
    );
    // A first batch of hits closes the window that began at the server's
    // start (the fixture's own reads are in it).
    let mut p = ::redis::pipe();
    for _ in 0..20 {
        p.cmd("GET").arg("cached");
    }
    let _: Vec<Option<String>> = p.query_async(&mut c).await.unwrap();
    dw.wait_health("a good hit rate", Duration::from_secs(10), |_, h| {
        h["components"]["jobs"]["details"]["hit_rate"]
            .as_f64()
            .is_some_and(|r| r > 0.5)
    })
    .await;
    // One pipeline: the lookups land between two checks, in one window.
    let mut p = ::redis::pipe();
    for _ in 0..4 {
        p.cmd("GET").arg("cached");
    }
    for i in 0..30 {
        p.cmd("GET").arg(format!("missing-{i}"));
    }
    let _: Vec<Option<String>> = p.query_async(&mut c).await.unwrap();
    let m = dw
        .wait_metrics("hits and misses", Duration::from_secs(10), |m| {
            m.get(
                "depwatch_redis_keyspace_misses_total",
                &[("component", "jobs")],
            )
            .is_some_and(|v| v >= misses0 + 30.0)
        })
        .await;
    assert!(
        q(
            &m,
            "depwatch_redis_keyspace_hits_total",
            &[("component", "jobs")]
        ) >= hits0 + 24.0
    );
    let (_, h) = dw
        .wait_health("the hit rate judged", Duration::from_secs(10), |_, h| {
            h["components"]["jobs"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("cache hit rate"))
        })
        .await;
    let rate = h["components"]["jobs"]["details"]["hit_rate"]
        .as_f64()
        .unwrap();
    // Only the test's lookups count: depwatch's own queue reads are left out.
    assert!(
        (rate - 4.0 / 34.0).abs() < 0.03,
        "hit rate {rate}: {}",
        h["components"]["jobs"]["details"]
    );

    // A queue deleted from Redis: discovery keeps the bound, the list is 0.
    cmd(&mut c, &["DEL", "emails"]).await;
    dw.wait_metrics("emails emptied", Duration::from_secs(10), |m| {
        m.get(
            "depwatch_queue_jobs",
            &[
                ("component", "jobs"),
                ("queue", "emails"),
                ("state", "waiting"),
            ],
        ) == Some(0.0)
    })
    .await;
}

/// `INFO stats` `total_reads_processed`: read events, one per request burst.
async fn reads(c: &mut ::redis::aio::MultiplexedConnection) -> (i64, i64) {
    let info: String = ::redis::cmd("INFO")
        .arg("all")
        .query_async(c)
        .await
        .unwrap();
    let get = |k: &str| -> i64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    };
    let evalsha = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|v| v.split(',').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    (get("total_reads_processed"), evalsha)
}

#[tokio::test]
async fn redis_one_round_trip_per_check() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    let mut queues = String::new();
    for i in 0..20 {
        let b = format!("bull:q{i}");
        cmd(
            &mut c,
            &["HSET", &format!("{b}:meta"), "opts.maxLenEvents", "10000"],
        )
        .await;
        job(&mut c, &b, "1", 10, None).await;
        cmd(&mut c, &["LPUSH", &format!("{b}:wait"), "1"]).await;
        queues.push_str(&format!("      - {{ name: q{i}, type: bullmq }}\n"));
    }
    let token = "admin-token-123456";
    let yaml = format!(
        "auth:\n  admin_token: {token}\nprobes:\n  - name: jobs\n    kind: redis\n    url: {}\n    interval: 1h\n    timeout: 5s\n    queues:\n{queues}",
        server.url()
    );
    let dw = Depwatch::start(&yaml).await;
    // The first check connects (HELLO, CLIENT SETINFO…); measure the next ones.
    let (code, body) = dw.post("/api/admin/probes/jobs/run", Some(token)).await;
    assert_eq!(code, 200, "{body}");
    for _ in 0..3 {
        let (r0, e0) = reads(&mut c).await;
        let (code, body) = dw.post("/api/admin/probes/jobs/run", Some(token)).await;
        assert_eq!(code, 200, "{body}");
        let (r1, e1) = reads(&mut c).await;
        // One read for depwatch's whole check, one for our own INFO.
        assert_eq!(r1 - r0, 2, "round trips of one check (plus our INFO)");
        assert_eq!(e1 - e0, 20, "one script call per queue");
    }
    let m = dw.metrics().await;
    assert_eq!(
        m.value(
            "depwatch_queue_jobs",
            &[("component", "jobs"), ("queue", "q7"), ("state", "waiting")]
        ),
        1.0
    );
}

#[tokio::test]
async fn redis_outage_fails_with_connect_and_recovers() {
    let mut server = RedisServer::start(None);
    let port = server.port;
    let yaml = format!(
        "probes:\n  - name: cache\n    kind: redis\n    url: {}\n    interval: 200ms\n    timeout: 150ms\n    jitter: 0s\n    failure_threshold: 3\n",
        server.url()
    );
    let dw = Depwatch::start(&yaml).await;
    dw.wait_health("healthy", Duration::from_secs(10), |code, h| {
        code == 200 && h["components"]["cache"]["status"] == "healthy"
    })
    .await;
    server.proc.kill();
    let (code, h) = dw
        .wait_health(
            "unhealthy after the threshold",
            Duration::from_secs(10),
            |code, _| code == 503,
        )
        .await;
    assert_eq!(code, 503);
    let c = &h["components"]["cache"];
    assert_eq!(c["status"], "unhealthy");
    assert_eq!(c["reason"], "connect", "{c}");
    assert!(c["consecutive_failures"].as_u64().unwrap() >= 3);
    let m = dw.metrics().await;
    assert_eq!(
        m.value("depwatch_up", &[("component", "cache"), ("kind", "redis")]),
        0.0
    );
    assert!(
        m.value(
            "depwatch_check_failures_total",
            &[
                ("component", "cache"),
                ("kind", "redis"),
                ("reason", "connect")
            ]
        ) >= 3.0
    );
    // Same port again: depwatch reconnects by itself.
    let _server = RedisServer::start_on(port, None);
    dw.wait_health("recovered", Duration::from_secs(10), |code, h| {
        code == 200 && h["components"]["cache"]["status"] == "healthy"
    })
    .await;
    let m = dw.metrics().await;
    assert_eq!(
        m.value("depwatch_up", &[("component", "cache"), ("kind", "redis")]),
        1.0
    );
}

/// A redis probe of `server` named `name`, checked every `interval`, with
/// `extra` lines of configuration.
fn probe_of(server: &RedisServer, name: &str, interval: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    kind: redis\n    url: {}\n    interval: {interval}\n    timeout: 150ms\n    jitter: 0s\n{extra}",
        server.url()
    )
}

/// depwatch with one probe of `server`, `cache`, once it is healthy.
async fn watch_healthy(server: &RedisServer) -> Depwatch {
    let dw = Depwatch::start(&format!(
        "probes:\n{}",
        probe_of(server, "cache", "200ms", "")
    ))
    .await;
    wait_status(&dw, "cache", "healthy").await;
    dw
}

/// Component `name`'s status in a health answer.
fn status_of(h: &serde_json::Value, name: &str) -> String {
    h["components"][name]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Component `name`'s error in a health answer ("" without one).
fn error_of(h: &serde_json::Value, name: &str) -> String {
    h["components"][name]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits (10 s at most) for component `name` to be `status`; the answer.
async fn wait_status(dw: &Depwatch, name: &str, status: &str) -> serde_json::Value {
    let what = format!("{name} {status}");
    dw.wait_health(&what, Duration::from_secs(10), |_, h| {
        status_of(h, name) == status
    })
    .await
    .1
}

/// A Redis at `maxmemory` under `noeviction` refuses writes (a queue takes
/// no new job): degraded, saying so. Under an eviction policy a full cache
/// is as it should be, unless `memory_degraded_above` says otherwise.
#[tokio::test]
async fn a_full_redis_that_refuses_writes_is_degraded() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    let big = "x".repeat(10_000);
    for i in 0..300 {
        cmd(&mut c, &["SET", &format!("k{i}"), &big]).await;
    }
    cmd(&mut c, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]).await;
    cmd(&mut c, &["CONFIG", "SET", "maxmemory", "1mb"]).await;
    let refused = ::redis::cmd("SET")
        .arg("one-more")
        .arg("x")
        .query_async::<()>(&mut c)
        .await
        .expect_err("a full Redis under noeviction refuses writes");
    assert!(refused.to_string().contains("OOM"), "{refused}");
    let yaml = format!(
        "probes:\n{}{}",
        probe_of(&server, "plain", "200ms", ""),
        probe_of(
            &server,
            "watched",
            "200ms",
            "    memory_degraded_above: 0.5\n"
        )
    );
    let dw = Depwatch::start(&yaml).await;
    wait_status(&dw, "plain", "degraded").await;
    let h = wait_status(&dw, "watched", "degraded").await;
    for name in ["plain", "watched"] {
        let error = error_of(&h, name);
        assert!(
            error.starts_with("memory full: ")
                && error
                    .contains("under maxmemory-policy noeviction, so Redis refuses writes (OOM)")
                && error.contains("of maxmemory 1.00M"),
            "{error}"
        );
        let details = &h["components"][name]["details"];
        assert_eq!(details["maxmemory_policy"], "noeviction", "{details}");
        assert_eq!(details["maxmemory_bytes"], 1_048_576, "{details}");
    }

    // An eviction policy: Redis makes room by itself (on the next command).
    cmd(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    )
    .await;
    let h = wait_status(&dw, "plain", "healthy").await;
    assert_eq!(
        h["components"]["plain"]["details"]["maxmemory_policy"],
        "allkeys-lru"
    );
    assert_eq!(status_of(&h, "watched"), "degraded", "{h}");
    let error = error_of(&h, "watched");
    assert!(
        error.starts_with("memory ")
            && error.contains("% of maxmemory (")
            && error.contains("above 50.0% (maxmemory-policy allkeys-lru)"),
        "{error}"
    );

    // Room again: healthy.
    cmd(&mut c, &["CONFIG", "SET", "maxmemory", "0"]).await;
    wait_status(&dw, "watched", "healthy").await;
}

/// A Redis that holds queues and evicts any key (`allkeys-*`) can drop
/// jobs: evictions there degrade the component for the check that saw them;
/// the same evictions on a Redis that is only a cache are its job.
#[tokio::test]
async fn evictions_where_queues_live_are_degraded() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    let yaml = format!(
        "probes:\n{}{}",
        probe_of(&server, "cache", "1s", ""),
        probe_of(
            &server,
            "jobs",
            "1s",
            "    queues:\n      - { name: mail, type: list, key: mail }\n"
        )
    );
    let dw = Depwatch::start(&yaml).await;
    // Checked once (the eviction count noted): the details are there.
    dw.wait_health("both healthy", Duration::from_secs(10), |_, h| {
        ["cache", "jobs"].iter().all(|n| {
            status_of(h, n) == "healthy"
                && h["components"][*n]["details"]["rejected_connections"].is_number()
        })
    })
    .await;
    let big = "x".repeat(10_000);
    for i in 0..300 {
        cmd(&mut c, &["SET", &format!("k{i}"), &big]).await;
    }
    cmd(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    )
    .await;
    cmd(&mut c, &["CONFIG", "SET", "maxmemory", "1mb"]).await;
    // The next command makes room.
    cmd(&mut c, &["PING"]).await;
    let h = wait_status(&dw, "jobs", "degraded").await;
    let error = error_of(&h, "jobs");
    assert!(
        error.starts_with("Redis evicted ")
            && error.contains("keys since the last check under maxmemory-policy allkeys-lru: queue keys can be among them"),
        "{error}"
    );
    assert_eq!(status_of(&h, "cache"), "healthy", "{h}");
    // Told once.
    wait_status(&dw, "jobs", "healthy").await;
}

/// A failed save (Redis then refuses writes with MISCONF under its
/// defaults) and a replica cut off from its master are degraded, saying
/// which; both clear when Redis recovers.
#[tokio::test]
async fn a_failed_save_and_a_replica_without_its_master_are_degraded() {
    // `dir` where no file can be made, and changeable at run time.
    let server = RedisServer::start_with(
        free_port(),
        None,
        &["--dir", "/proc", "--enable-protected-configs", "yes"],
    );
    let mut c = server.conn().await;
    let dw = watch_healthy(&server).await;

    cmd(&mut c, &["BGSAVE"]).await;
    let error = error_of(&wait_status(&dw, "cache", "degraded").await, "cache");
    assert!(
        error.starts_with("the last RDB save failed (rdb_last_bgsave_status:err)")
            && error.contains("refuses writes (MISCONF)"),
        "{error}"
    );
    let dir = tempfile::tempdir().unwrap();
    cmd(
        &mut c,
        &["CONFIG", "SET", "dir", dir.path().to_str().unwrap()],
    )
    .await;
    cmd(&mut c, &["BGSAVE"]).await;
    wait_status(&dw, "cache", "healthy").await;

    let gone = free_port();
    cmd(&mut c, &["REPLICAOF", "127.0.0.1", &gone.to_string()]).await;
    let h = wait_status(&dw, "cache", "degraded").await;
    let error = error_of(&h, "cache");
    assert!(
        error.starts_with(&format!(
            "replica of 127.0.0.1:{gone} with its link to the master down"
        )) && error.contains("it serves the data of its last sync"),
        "{error}"
    );
    assert_eq!(h["components"]["cache"]["details"]["role"], "slave");
    cmd(&mut c, &["REPLICAOF", "NO", "ONE"]).await;
    wait_status(&dw, "cache", "healthy").await;
}

/// A Redis at `maxclients` refuses the service's new connections while
/// depwatch's own, kept open, reads fine: degraded while it lasts, and for
/// the check after connections were refused.
#[tokio::test]
async fn a_redis_at_maxclients_is_degraded() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    let dw = watch_healthy(&server).await;
    // depwatch's connection and this one: no room for a third.
    cmd(&mut c, &["CONFIG", "SET", "maxclients", "2"]).await;
    let h = wait_status(&dw, "cache", "degraded").await;
    assert!(
        error_of(&h, "cache").starts_with(
            "at maxclients: 2 clients connected of 2, so Redis refuses new connections"
        ),
        "{h}"
    );
    assert_eq!(h["components"]["cache"]["details"]["maxclients"], 2);
    // A third client is refused; the next check tells it, once.
    let third = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    let refused = match third {
        Ok(mut t) => ::redis::cmd("PING")
            .query_async::<String>(&mut t)
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client past maxclients");
    let h = dw
        .wait_health("the refusal told", Duration::from_secs(10), |_, h| {
            error_of(h, "cache").contains("; it refused 1 connection since the last check")
        })
        .await
        .1;
    assert_eq!(status_of(&h, "cache"), "degraded");
    cmd(&mut c, &["CONFIG", "SET", "maxclients", "100"]).await;
    wait_status(&dw, "cache", "healthy").await;
}

/// Pointed at the wrong port, the check says what it met in one line: a
/// server that is not Redis (here depwatch's own HTTP port), or a plain
/// Redis asked for TLS (`rediss://`), which never answers the handshake.
#[tokio::test]
async fn redis_at_the_wrong_port_says_what_it_met() {
    let server = RedisServer::start(None);
    let http = free_port();
    let yaml = format!(
        "listen: 127.0.0.1:{http}\nprobes:\n  - {{ name: not-redis, kind: redis, url: \"redis://127.0.0.1:{http}/0\", interval: 1s, timeout: 800ms }}\n  - {{ name: not-tls, kind: redis, url: \"rediss://127.0.0.1:{}/0\", interval: 1s, timeout: 800ms }}\n",
        server.port
    );
    let dw = Depwatch::start(&yaml).await;
    let (_, h) = dw
        .wait_health("both checked", Duration::from_secs(10), |_, h| {
            ["not-redis", "not-tls"]
                .iter()
                .all(|n| h["components"][n]["error"].is_string())
        })
        .await;
    let c = &h["components"]["not-redis"];
    assert_eq!(c["reason"], "bad_response", "{c}");
    let error = c["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "redis://127.0.0.1:{http}/0 does not answer in the Redis protocol (is it a Redis port?): "
        )),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error:?}");
    let c = &h["components"]["not-tls"];
    assert_eq!(c["reason"], "connect", "{c}");
    assert_eq!(
        c["error"],
        format!(
            "connecting to rediss://127.0.0.1:{}/0 timed out after 600ms (a server that does not speak TLS on its port never answers the handshake: is it rediss:// or redis://?)",
            server.port
        ),
        "{c}"
    );
}

#[tokio::test]
async fn redis_auth_and_secrets_never_shown() {
    let secret = "Sup3rSecretPw";
    let server = RedisServer::start(Some(secret));
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("redis.pw");
    std::fs::write(&pwfile, format!("{secret}\n")).unwrap();
    let yaml = format!(
        r#"probes:
  - name: good-url
    kind: redis
    url: redis://:{secret}@127.0.0.1:{port}/0
    interval: 300ms
    timeout: 250ms
  - name: good-file
    kind: redis
    url: redis://127.0.0.1:{port}/0
    password_file: {pwfile}
    interval: 300ms
    timeout: 250ms
  - name: wrong
    kind: redis
    url: redis://:not-{secret}@127.0.0.1:{port}/0
    interval: 300ms
    timeout: 250ms
  - name: missing
    kind: redis
    url: redis://127.0.0.1:{port}/0
    interval: 300ms
    timeout: 250ms
"#,
        port = server.port,
        pwfile = pwfile.display()
    );
    let dw = Depwatch::start(&yaml).await;
    let (_, h) = dw
        .wait_health("every probe checked", Duration::from_secs(10), |_, h| {
            ["good-url", "good-file", "wrong", "missing"]
                .iter()
                .all(|n| !h["components"][n]["checked_at"].is_null())
        })
        .await;
    assert_eq!(h["components"]["good-url"]["status"], "healthy", "{h}");
    assert_eq!(h["components"]["good-file"]["status"], "healthy", "{h}");
    assert_eq!(h["components"]["wrong"]["reason"], "auth", "{h}");
    assert_eq!(h["components"]["missing"]["reason"], "auth", "{h}");
    let m = dw.metrics().await;
    assert!(
        m.value(
            "depwatch_check_failures_total",
            &[
                ("component", "wrong"),
                ("kind", "redis"),
                ("reason", "auth")
            ]
        ) >= 1.0
    );
    dw.assert_never_shown(&[secret]).await;
}

const SCRIPT_HINT: &str = "(each queue is read by one read-only script: the user needs +evalsha +script|load and the read commands it runs, +@read)";

/// Least-privilege ACL users, as managed Redis and careful operators make
/// them: one without INFO still gets its queues read (degraded, named, no
/// cache numbers); one without the scripting commands is told which to
/// grant.
#[tokio::test]
async fn redis_acl_users_without_info_or_scripts() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    make_bullmq_queue(&server.url(), "bull:q1");
    cmd(&mut c, &["RPUSH", "bull:q1:wait", "1", "2", "3"]).await;
    for (user, rules) in [
        (
            "no-info",
            &["+@read", "+ping", "+evalsha", "+script|load", "-info"][..],
        ),
        ("no-scripts", &["+@read", "+ping", "+info"][..]),
        (
            "no-reads",
            &["+ping", "+info", "+evalsha", "+script|load"][..],
        ),
    ] {
        let mut args = vec!["ACL", "SETUSER", user, "on", ">pw", "~*", "-@all"];
        args.extend_from_slice(rules);
        cmd(&mut c, &args).await;
    }
    let mut yaml = String::from("probes:\n");
    for user in ["no-info", "no-scripts", "no-reads"] {
        yaml.push_str(&format!(
            "  - name: {user}\n    kind: redis\n    url: redis://{user}:pw@127.0.0.1:{}/0\n    interval: 300ms\n    timeout: 250ms\n    queues: [ {{ name: q1, type: bullmq }} ]\n",
            server.port
        ));
    }
    let dw = Depwatch::start(&yaml).await;
    let (_, h) = dw
        .wait_health("both checked", Duration::from_secs(10), |_, h| {
            ["no-info", "no-scripts", "no-reads"]
                .iter()
                .all(|n| !h["components"][n]["checked_at"].is_null())
        })
        .await;
    let no_info = &h["components"]["no-info"];
    assert_eq!(no_info["status"], "degraded", "{no_info}");
    assert_eq!(
        no_info["error"],
        "INFO is not permitted for this Redis user: no memory, clients, keys or hit rate \
         (grant it with ACL SETUSER NAME +info)",
        "{no_info}"
    );
    assert_eq!(
        no_info["details"]["queues"]["q1"]["waiting"], 3,
        "{no_info}"
    );
    for user in ["no-scripts", "no-reads"] {
        let c = &h["components"][user];
        assert_eq!(c["status"], "degraded", "{c}");
        let err = c["error"].as_str().unwrap();
        assert!(
            err.starts_with("queue q1: cannot read it: ") && err.ends_with(SCRIPT_HINT),
            "{err}"
        );
    }
    let m = dw.metrics().await;
    let q = [
        ("component", "no-info"),
        ("queue", "q1"),
        ("state", "waiting"),
    ];
    assert_eq!(m.value("depwatch_queue_jobs", &q), 3.0);
    assert!(
        m.matching(
            "depwatch_redis_memory_used_bytes",
            &[("component", "no-info")]
        )
        .is_empty()
    );
    assert!(
        !m.matching(
            "depwatch_redis_memory_used_bytes",
            &[("component", "no-scripts")]
        )
        .is_empty()
    );
}

#[tokio::test]
async fn redis_config_errors_name_the_key() {
    let (dir, _, path) = write_config(
        r#"probes:
  - name: bad
    kind: redis
    url: http://:hunter2hunter2@example.com
    hit_rate_degraded_below: 2
    memory_degraded_above: 90
    queues:
      - { type: bullmq }
      - { type: list }
      - { name: x, type: zset, key: z, state: sleeping }
      - { name: y, type: kafka, key: k }
      - { name: z, type: list, key: z, stuck_after: 10m }
      - { name: w, type: list, key: w, groups: [g] }
"#,
    );
    let (code, out) = check_config(&path, &[]);
    assert_eq!(code, 64, "{out}");
    for want in [
        "probes[0].url: unsupported URL `http://:***@example.com`",
        "probes[0].hit_rate_degraded_below: hit_rate_degraded_below 2 is not a ratio",
        "probes[0].memory_degraded_above: memory_degraded_above 90 is not a share of maxmemory (write a number above 0 and at most 1, e.g. 0.9)",
        "probes[0].queues[0]: a queue needs a `name` (or `discover: true`)",
        "probes[0].queues[1]: a list queue needs a `key`",
        "probes[0].queues[2].state: unknown state `sleeping`",
        "probes[0].queues[3].type: unknown queue type `kafka`",
        "probes[0].queues[4].stuck_after: `stuck_after` does not apply to list queues: their items carry no time (remove it and watch the depth with degraded_above / unhealthy_above)",
        "probes[0].queues[5].groups: `groups` does not apply to list queues (consumer groups belong to streams: remove the key)",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
    assert!(!out.contains("hunter2hunter2"), "{out}");
    drop(dir);
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl CLI.
pub fn tls_certs(dir: &std::path::Path) {
    let openssl = require("openssl", "apt-get install openssl");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=depwatch test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

#[tokio::test]
async fn rediss_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    tls_certs(dir.path());
    let port = free_port();
    let bin = require("redis-server", "apt-get install redis-server");
    let d = dir.path();
    let mut cmd = Command::new(bin);
    cmd.args([
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .args([
        "--save",
        "",
        "--appendonly",
        "no",
        "--tls-auth-clients",
        "no",
    ])
    .arg("--tls-cert-file")
    .arg(d.join("server.pem"))
    .arg("--tls-key-file")
    .arg(d.join("server.key"))
    .arg("--tls-ca-cert-file")
    .arg(d.join("ca.pem"))
    .stdout(std::process::Stdio::null());
    let mut server = Proc::spawn("redis-server (tls)", &mut cmd);
    wait_listening(&mut server, port, Duration::from_secs(10));
    let yaml = format!(
        "probes:\n  - name: trusted\n    kind: redis\n    url: rediss://127.0.0.1:{port}/0\n    tls_ca_file: {ca}\n    interval: 500ms\n    timeout: 400ms\n  - name: untrusted\n    kind: redis\n    url: rediss://127.0.0.1:{port}/0\n    interval: 500ms\n    timeout: 400ms\n",
        ca = d.join("ca.pem").display()
    );
    let dw = Depwatch::start(&yaml).await;
    let (_, h) = dw
        .wait_health("both checked", Duration::from_secs(15), |_, h| {
            h["components"]["trusted"]["status"] == "healthy"
                && !h["components"]["untrusted"]["checked_at"].is_null()
        })
        .await;
    assert_eq!(h["components"]["untrusted"]["reason"], "tls", "{h}");
}

/// Waits until every component in `names` has been checked; the answer.
/// depwatch with one probe of `server`, `jobs` (every 300 ms), reading
/// `queues` (the YAML lines of its `queues:`), once it has checked: the
/// daemon and its `/api/health`.
async fn queues_checked(server: &RedisServer, queues: &str) -> (Depwatch, serde_json::Value) {
    let yaml = format!(
        "probes:\n{}",
        probe_of(server, "jobs", "300ms", &format!("    queues:\n{queues}"))
    );
    let dw = Depwatch::start(&yaml).await;
    let h = all_checked(&dw, &["jobs"]).await;
    (dw, h)
}

async fn all_checked(dw: &Depwatch, names: &[&str]) -> serde_json::Value {
    dw.wait_health("every probe checked", Duration::from_secs(10), |_, h| {
        names
            .iter()
            .all(|n| !h["components"][n]["checked_at"].is_null())
    })
    .await
    .1
}

/// Keys that exist with another type (another program's key of the same
/// name), a stream that does not exist, and ACL users that may not read the
/// queue's keys or load the script: each queue's message names the key at
/// fault and the fix, instead of a line number of the script or an empty
/// stream.
#[tokio::test]
async fn queue_keys_that_cannot_be_read_name_the_key_and_the_fix() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    cmd(&mut c, &["SET", "cached", "v"]).await;
    cmd(&mut c, &["RPUSH", "a-list", "x", "y"]).await;
    make_bullmq_queue(&server.url(), "bull:clash");
    cmd(&mut c, &["SET", "bull:clash:wait", "not a list"]).await;
    make_bullmq_queue(&server.url(), "bull:q1");
    cmd(&mut c, &["RPUSH", "bull:q1:wait", "1"]).await;
    cmd(
        &mut c,
        &[
            "ACL",
            "SETUSER",
            "elsewhere",
            "on",
            ">pw",
            "~other:*",
            "+@all",
        ],
    )
    .await;
    let mut yaml = String::from("probes:\n");
    yaml.push_str(&probe_of(
        &server,
        "jobs",
        "300ms",
        "    queues:\n      - { name: strings, type: list, key: cached }\n      - { name: events, type: stream, key: a-list }\n      - { name: clash, type: bullmq }\n      - { name: typo, type: stream, key: evnets }\n      - { name: fine, type: list, key: a-list }\n",
    ));
    yaml.push_str(&format!(
        "  - name: elsewhere\n    kind: redis\n    url: redis://elsewhere:pw@127.0.0.1:{}/0\n    interval: 300ms\n    timeout: 250ms\n    queues: [ {{ name: q1, type: bullmq }}, {{ name: mail, type: list, key: mail }} ]\n",
        server.port
    ));
    // A user that may run the script but not load it, on a server where
    // nobody else loads it: NOSCRIPT is what Redis answers.
    let bare = RedisServer::start(None);
    let mut b = bare.conn().await;
    make_bullmq_queue(&bare.url(), "bull:q1");
    cmd(
        &mut b,
        &[
            "ACL", "SETUSER", "no-load", "on", ">pw", "~*", "-@all", "+@read", "+ping", "+info",
            "+evalsha",
        ],
    )
    .await;
    yaml.push_str(&format!(
        "  - name: no-load\n    kind: redis\n    url: redis://no-load:pw@127.0.0.1:{}/0\n    interval: 300ms\n    timeout: 250ms\n    queues: [ {{ name: q1, type: bullmq }} ]\n",
        bare.port
    ));
    let dw = Depwatch::start(&yaml).await;
    let h = all_checked(&dw, &["jobs", "elsewhere", "no-load"]).await;
    assert_eq!(status_of(&h, "jobs"), "degraded", "{h}");
    let err = error_of(&h, "jobs");
    for want in [
        "queue strings: cannot read it: key cached is a string where a list queue needs a list (check the queue's key and type: it names a key of something else)",
        "queue events: cannot read it: key a-list is a list where a stream queue needs a stream (check the queue's key and type",
        "queue clash: cannot read it: key bull:clash:wait is a string where the bullmq queue keeps a list (check the queue's prefix and name",
        "queue typo: no such stream: evnets does not exist (a stream stays when emptied, and XGROUP CREATE … MKSTREAM makes one; check the queue's key)",
    ] {
        assert!(err.contains(want), "missing `{want}` in: {err}");
    }
    assert!(!err.contains("user_script"), "{err}");
    assert_eq!(
        h["components"]["jobs"]["details"]["queues"]["fine"]["waiting"],
        2
    );
    let m = dw.metrics().await;
    assert!(
        m.matching("depwatch_queue_jobs", &[("queue", "events")])
            .is_empty(),
        "a list read as an empty stream"
    );
    let err = error_of(&h, "elsewhere");
    for want in [
        "queue q1: cannot read it: this Redis user may not read bull:q1:meta (grant read access to the queue's keys: ACL SETUSER USER %R~bull:q1:*)",
        "queue mail: cannot read it: this Redis user may not read mail (grant read access to the queue's keys: ACL SETUSER USER %R~mail)",
    ] {
        assert!(err.contains(want), "missing `{want}` in: {err}");
    }
    let err = error_of(&h, "no-load");
    assert!(
        err.starts_with(
            "queue q1: cannot read it: NOSCRIPT: the script is not loaded, and loading it failed: "
        ) && err.contains("'script|load'")
            && err.ends_with(SCRIPT_HINT),
        "{err}"
    );
    dw.assert_never_shown(&["pw@"]).await;
}

/// Adds the entry `n: N` to stream `key`; its id.
async fn xadd(c: &mut ::redis::aio::MultiplexedConnection, key: &str, n: i32) -> String {
    ::redis::cmd("XADD")
        .arg(key)
        .arg("*")
        .arg("n")
        .arg(n)
        .query_async(c)
        .await
        .unwrap()
}

/// Streams whose consumer groups Redis gives no lag for (an entry deleted
/// in the middle, a group set to an arbitrary ID), or more lag than the
/// stream holds (trimmed before the group read it): waiting is what the
/// stream still holds after each group's last delivered entry.
#[tokio::test]
async fn stream_lag_after_deletes_and_trims() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    let mut ids = Vec::new();
    for key in ["deleted", "trimmed"] {
        for i in 0..6 {
            let id = xadd(&mut c, key, i).await;
            if key == "deleted" {
                ids.push(id);
            }
        }
        cmd(&mut c, &["XGROUP", "CREATE", key, "g", "0"]).await;
        cmd(
            &mut c,
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "COUNT",
                "2",
                "STREAMS",
                key,
                ">",
            ],
        )
        .await;
    }
    // Four undelivered; one of them deleted: Redis no longer knows the lag.
    cmd(&mut c, &["XDEL", "deleted", &ids[4]]).await;
    // A group that starts after the fourth entry: two after it, one deleted.
    cmd(&mut c, &["XGROUP", "CREATE", "deleted", "late", &ids[3]]).await;
    // Four undelivered, but only the newest entry is still there.
    cmd(&mut c, &["XTRIM", "trimmed", "MAXLEN", "1"]).await;
    let (dw, h) = queues_checked(&server, "      - { name: deleted, type: stream, key: deleted }\n      - { name: trimmed, type: stream, key: trimmed }\n").await;
    let q = &h["components"]["jobs"]["details"]["queues"];
    assert_eq!(q["deleted"]["groups"]["g"]["lag"], 3, "{q}");
    assert_eq!(q["deleted"]["groups"]["g"]["lag_counted"], true, "{q}");
    assert_eq!(q["deleted"]["groups"]["late"]["lag"], 1, "{q}");
    assert_eq!(q["deleted"]["waiting"], 4, "{q}");
    assert_eq!(q["trimmed"]["groups"]["g"]["lag"], 1, "{q}");
    assert_eq!(q["trimmed"]["waiting"], 1, "{q}");
    let m = dw.metrics().await;
    assert_eq!(
        m.value(
            "depwatch_redis_stream_group_lag",
            &[("component", "jobs"), ("queue", "deleted"), ("group", "g")]
        ),
        3.0
    );
    assert_eq!(
        m.value(
            "depwatch_queue_jobs",
            &[
                ("component", "jobs"),
                ("queue", "trimmed"),
                ("state", "waiting")
            ]
        ),
        1.0
    );
}

/// A stream with more consumer groups than depwatch shows (50): the first
/// 50 by name get series, each with its lag counted by the script where
/// Redis has none (an entry deleted in the middle); the rest get none.
#[tokio::test]
async fn a_stream_shows_at_most_fifty_consumer_groups() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(xadd(&mut c, "many", i).await);
    }
    for g in 0..52 {
        cmd(
            &mut c,
            &["XGROUP", "CREATE", "many", &format!("g{g:02}"), "0"],
        )
        .await;
    }
    cmd(&mut c, &["XDEL", "many", &ids[1]]).await;
    let (dw, h) =
        queues_checked(&server, "      - { name: many, type: stream, key: many }\n").await;
    let groups = &h["components"]["jobs"]["details"]["queues"]["many"]["groups"];
    let shown = groups.as_object().unwrap();
    assert_eq!(shown.len(), 50, "{groups}");
    assert_eq!(groups["g49"]["lag"], 3, "{groups}");
    assert_eq!(groups["g49"]["lag_counted"], true, "{groups}");
    assert!(groups.get("g50").is_none(), "{groups}");
    let m = dw.metrics().await;
    let lags = m.matching("depwatch_redis_stream_group_lag", &[("queue", "many")]);
    assert_eq!(lags.len(), 50, "{lags:?}");
    assert!(lags.iter().all(|(_, v)| *v == 3.0), "{lags:?}");
}

/// The oldest waiting job where it hides: a low priority starved behind
/// newer high-priority jobs, a delayed (repeatable) job long past its time
/// that no worker promotes, and a wait list whose oldest entry has lost its
/// job hash. Each is the age that `stuck_after` judges.
#[tokio::test]
async fn the_oldest_waiting_job_behind_priorities_delays_and_lost_hashes() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    // Prioritized: score = priority * 2^32 + a counter.
    let b = "bull:prio";
    bullmq_jobs(&server, &mut c, b, &[("1", 600), ("2", 10), ("3", 5)]).await;
    let score = |prio: u64, n: u64| (prio * (1 << 32) + n).to_string();
    cmd(
        &mut c,
        &[
            "ZADD",
            &format!("{b}:prioritized"),
            &score(5, 1),
            "1",
            &score(1, 2),
            "2",
            &score(1, 3),
            "3",
        ],
    )
    .await;
    // Delayed: score = due time (ms) * 0x1000 + a counter; due 15 min ago.
    let b = "bull:cron";
    bullmq_jobs(&server, &mut c, b, &[("1", 3600), ("2", 60)]).await;
    let due = |ago_s: i64| ((now_ms() - ago_s * 1000) * 4096).to_string();
    cmd(
        &mut c,
        &[
            "ZADD",
            &format!("{b}:delayed"),
            &due(900),
            "1",
            &due(-600),
            "2",
        ],
    )
    .await;
    // Wait: job 1 (120 s) next to the right end, whose hash is gone.
    let b = "bull:lost";
    bullmq_jobs(&server, &mut c, b, &[("1", 120), ("2", 30)]).await;
    cmd(&mut c, &["LPUSH", &format!("{b}:wait"), "gone", "1", "2"]).await;
    // LIFO jobs are pushed to the right end, where workers take: the oldest
    // (400 s) starves at the left end.
    let b = "bull:lifo";
    bullmq_jobs(&server, &mut c, b, &[("1", 400), ("2", 200), ("3", 10)]).await;
    cmd(&mut c, &["RPUSH", &format!("{b}:wait"), "1", "2", "3"]).await;
    let (_dw, h) = queues_checked(&server, "      - { name: prio, type: bullmq, stuck_after: 5m }\n      - { name: cron, type: bullmq, stuck_after: 5m }\n      - { name: lost, type: bullmq }\n      - { name: lifo, type: bullmq }\n").await;
    let q = &h["components"]["jobs"]["details"]["queues"];
    let age = |name: &str| q[name]["oldest_waiting_age_seconds"].as_f64().unwrap();
    assert!((599.0..=630.0).contains(&age("prio")), "{q}");
    assert!((899.0..=930.0).contains(&age("cron")), "{q}");
    assert!((119.0..=150.0).contains(&age("lost")), "{q}");
    assert!((399.0..=430.0).contains(&age("lifo")), "{q}");
    assert_eq!(q["cron"]["delayed"], 2, "{q}");
    assert_eq!(q["cron"]["delayed_due"], 1, "{q}");
    let err = error_of(&h, "jobs");
    assert!(
        err.contains("queue prio: oldest waiting job is 10m")
            && err.contains("queue cron: oldest waiting job is 15m"),
        "{err}"
    );
}

/// BullMQ 5 pauses a queue with `meta.paused` and may leave its jobs in
/// `wait` (not `paused`): they are paused, not a backlog, and not stuck,
/// prioritized ones included. A `SCRIPT FLUSH` between checks does not stop
/// the queues from being read.
#[tokio::test]
async fn a_paused_bullmq_queue_and_a_flushed_script_cache() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    let b = "bull:held";
    make_bullmq_queue(&server.url(), b);
    cmd(&mut c, &["HSET", &format!("{b}:meta"), "paused", "1"]).await;
    job(&mut c, b, "1", 900, None).await;
    job(&mut c, b, "2", 600, None).await;
    job(&mut c, b, "3", 600, None).await;
    cmd(&mut c, &["LPUSH", &format!("{b}:wait"), "1", "2"]).await;
    cmd(
        &mut c,
        &["ZADD", &format!("{b}:prioritized"), "4294967297", "3"],
    )
    .await;
    cmd(&mut c, &["RPUSH", "mail", "a"]).await;
    let yaml = format!(
        "probes:\n{}",
        probe_of(
            &server,
            "jobs",
            "200ms",
            "    queues:\n      - { name: held, type: bullmq, degraded_above: 0, stuck_after: 5m }\n      - { name: mail, type: list, key: mail }\n"
        )
    );
    let dw = Depwatch::start(&yaml).await;
    let h = wait_status(&dw, "jobs", "healthy").await;
    let q = &h["components"]["jobs"]["details"]["queues"]["held"];
    assert_eq!(q["paused"], true, "{q}");
    assert_eq!(q["waiting"], 0, "{q}");
    assert_eq!(
        dw.metrics().await.value(
            "depwatch_queue_jobs",
            &[
                ("component", "jobs"),
                ("queue", "held"),
                ("state", "paused")
            ]
        ),
        2.0
    );
    assert_eq!(q["prioritized"], 1, "{q}");
    cmd(&mut c, &["SCRIPT", "FLUSH"]).await;
    cmd(&mut c, &["RPUSH", "mail", "b"]).await;
    let (_, h) = dw
        .wait_health(
            "mail read after the flush",
            Duration::from_secs(10),
            |_, h| h["components"]["jobs"]["details"]["queues"]["mail"]["waiting"] == 2,
        )
        .await;
    assert_eq!(status_of(&h, "jobs"), "healthy", "{h}");
}

/// A stream whose consumers stopped: the first entry a group has not been
/// given is as old as its ID says, and the entry a consumer took and never
/// acknowledged has been with it for as long as XPENDING's idle time.
/// `stuck_after` judges both, as for BullMQ.
#[tokio::test]
async fn stream_ages_come_from_entry_ids_and_pending_idle_time() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    let now = now_ms();
    let id = |ago_s: i64| format!("{}-0", now - ago_s * 1000);
    for (i, ago) in [900, 800, 700].into_iter().enumerate() {
        cmd(&mut c, &["XADD", "events", &id(ago), "n", &i.to_string()]).await;
    }
    cmd(&mut c, &["XGROUP", "CREATE", "events", "g", "0"]).await;
    cmd(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            "events",
            ">",
        ],
    )
    .await;
    // Delivered 400 s ago: XCLAIM sets the idle time an entry has had.
    let first = id(900);
    cmd(
        &mut c,
        &["XCLAIM", "events", "g", "c", "0", &first, "IDLE", "400000"],
    )
    .await;
    let (dw, h) = queues_checked(
        &server,
        "      - { name: events, type: stream, key: events, stuck_after: 5m }\n",
    )
    .await;
    let q = &h["components"]["jobs"]["details"]["queues"]["events"];
    let waited = q["oldest_waiting_age_seconds"].as_f64().unwrap();
    assert!((799.0..=830.0).contains(&waited), "{q}");
    let running = q["oldest_active_age_seconds"].as_f64().unwrap();
    assert!((399.0..=430.0).contains(&running), "{q}");
    let err = error_of(&h, "jobs");
    assert!(
        err.contains("queue events: oldest waiting job is 80")
            && err.contains("queue events: oldest active job has run for 40"),
        "{err}"
    );
    let m = dw.metrics().await;
    let l = [("component", "jobs"), ("queue", "events")];
    assert!(m.value("depwatch_queue_oldest_active_age_seconds", &l) >= 399.0);
}

/// Bull 3 and BullMQ share a prefix during a migration, and both keep an
/// `:id` counter: a queue given the other library's type is told so (read
/// as Bull, a BullMQ queue would lose its prioritized jobs), and Bull's
/// discovery leaves BullMQ's queues out.
#[tokio::test]
async fn bull_and_bullmq_queues_are_told_apart() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    make_bullmq_queue(&server.url(), "bull:mq");
    cmd(&mut c, &["SET", "bull:mq:id", "7"]).await;
    job(&mut c, "bull:mq", "7", 30, None).await;
    cmd(&mut c, &["ZADD", "bull:mq:prioritized", "4294967303", "7"]).await;
    cmd(&mut c, &["SET", "bull:b3:id", "1"]).await;
    job(&mut c, "bull:b3", "1", 30, None).await;
    cmd(&mut c, &["LPUSH", "bull:b3:wait", "1"]).await;
    let yaml = format!(
        "probes:\n{}{}",
        probe_of(
            &server,
            "jobs",
            "300ms",
            "    queues:\n      - { name: mq, type: bull }\n      - { name: b3, type: bullmq }\n"
        ),
        probe_of(
            &server,
            "found",
            "300ms",
            "    queues:\n      - { type: bull, discover: true }\n"
        )
    );
    let dw = Depwatch::start(&yaml).await;
    let h = all_checked(&dw, &["jobs", "found"]).await;
    let err = error_of(&h, "jobs");
    for want in [
        "queue mq: bull:mq:meta is BullMQ's (opts.maxLenEvents or a bullmq version in it): read as Bull, its prioritized and waiting-children jobs would be missed (write `type: bullmq`)",
        "queue b3: no such BullMQ queue: bull:b3:meta does not exist, but bull:b3:id does: a Bull (v3) queue (write `type: bull`)",
    ] {
        assert!(err.contains(want), "missing `{want}` in: {err}");
    }
    let found = &h["components"]["found"]["details"]["queues"];
    assert_eq!(found["b3"]["waiting"], 1, "{found}");
    assert!(found.get("mq").is_none(), "{found}");
    let m = dw.metrics().await;
    assert!(
        m.matching("depwatch_queue_jobs", &[("component", "jobs")])
            .is_empty()
    );
}

/// A stream deleted and made again by a producer's XADD has lost its
/// consumer groups: the consumers get NOGROUP while entries pile up. With
/// the groups named in `groups:`, the missing one is told, with the fix.
#[tokio::test]
async fn a_stream_without_its_consumer_group_is_told() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    cmd(
        &mut c,
        &["XGROUP", "CREATE", "orders", "billing", "$", "MKSTREAM"],
    )
    .await;
    cmd(&mut c, &["XADD", "orders", "*", "n", "1"]).await;
    let yaml = format!(
        "probes:\n{}",
        probe_of(
            &server,
            "jobs",
            "200ms",
            "    queues:\n      - { name: orders, type: stream, key: orders, groups: [billing] }\n"
        )
    );
    let dw = Depwatch::start(&yaml).await;
    wait_status(&dw, "jobs", "healthy").await;
    cmd(&mut c, &["DEL", "orders"]).await;
    cmd(&mut c, &["XADD", "orders", "*", "n", "2"]).await;
    let h = wait_status(&dw, "jobs", "degraded").await;
    assert_eq!(
        error_of(&h, "jobs"),
        "queue orders: consumer group billing does not exist on stream orders (its consumers get NOGROUP: create it with XGROUP CREATE orders billing $ MKSTREAM, or check the group's name)"
    );
    assert_eq!(
        h["components"]["jobs"]["details"]["queues"]["orders"]["waiting"],
        1
    );
    // Deleted for good: told, and none of its series stays behind.
    cmd(&mut c, &["DEL", "orders"]).await;
    dw.wait_health(
        "the stream told missing",
        Duration::from_secs(10),
        |_, h| {
            error_of(h, "jobs").starts_with("queue orders: no such stream: orders does not exist")
        },
    )
    .await;
    let m = dw.metrics().await;
    for family in ["depwatch_redis_stream_length", "depwatch_queue_jobs"] {
        assert!(
            m.matching(family, &[("queue", "orders")]).is_empty(),
            "{family}: {}",
            m.text
        );
    }
}

/// Redis restarted between two checks (an upgrade, a failover to the same
/// address): it answers again by the next check, so that check succeeds on
/// a new connection instead of failing on the one the restart closed.
#[tokio::test]
async fn a_redis_restarted_between_checks_is_read_on_a_new_connection() {
    let mut server = RedisServer::start(None);
    let port = server.port;
    make_bullmq_queue(&server.url(), "bull:q1");
    let token = "admin-token-123456";
    let yaml = format!(
        "auth:\n  admin_token: {token}\nprobes:\n  - name: jobs\n    kind: redis\n    url: {}\n    interval: 1h\n    timeout: 5s\n    queues: [ {{ name: q1, type: bullmq }} ]\n",
        server.url()
    );
    let dw = Depwatch::start(&yaml).await;
    let (code, body) = dw.post("/api/admin/probes/jobs/run", Some(token)).await;
    assert_eq!(code, 200, "{body}");
    wait_status(&dw, "jobs", "healthy").await;
    server.proc.kill();
    let server = RedisServer::start_on(port, None);
    make_bullmq_queue(&server.url(), "bull:q1");
    let (code, body) = dw.post("/api/admin/probes/jobs/run", Some(token)).await;
    assert_eq!(code, 200, "{body}");
    let (_, h) = dw.health("").await;
    let jobs = &h["components"]["jobs"];
    assert_eq!(jobs["status"], "healthy", "{jobs}");
    assert_eq!(jobs["consecutive_failures"], 0, "{jobs}");
    let m = dw.metrics().await;
    assert!(
        m.matching("depwatch_check_failures_total", &[("component", "jobs")])
            .iter()
            .all(|(_, v)| *v == 0.0),
        "{}",
        m.text
    );
}

/// Names as real deployments write them: a hash-tagged prefix (Redis
/// Cluster style, `{bull}`), spaces, non-ASCII, glob characters. Configured
/// and discovered queues are read, and their names are the label values.
#[tokio::test]
async fn queue_names_with_hash_tags_spaces_and_unicode() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    for (key, n) in [
        ("{bull}:sync orders", 2),
        ("{bull}:courriels-été", 1),
        ("{bull}:a*b[1]", 3),
    ] {
        make_bullmq_queue(&server.url(), key);
        for i in 0..n {
            let id = i.to_string();
            job(&mut c, key, &id, 5, None).await;
            cmd(&mut c, &["LPUSH", &format!("{key}:wait"), &id]).await;
        }
    }
    cmd(&mut c, &["RPUSH", "jobs:{mail} été", "x"]).await;
    let yaml = format!(
        "probes:\n{}{}",
        probe_of(
            &server,
            "jobs",
            "300ms",
            "    queues:\n      - { name: \"sync orders\", type: bullmq, prefix: \"{bull}\" }\n      - { name: mail, type: list, key: \"jobs:{mail} été\" }\n"
        ),
        probe_of(
            &server,
            "found",
            "300ms",
            "    queues:\n      - { type: bullmq, prefix: \"{bull}\", discover: true }\n"
        )
    );
    let dw = Depwatch::start(&yaml).await;
    let h = all_checked(&dw, &["jobs", "found"]).await;
    assert_eq!(status_of(&h, "jobs"), "healthy", "{h}");
    let q = &h["components"]["jobs"]["details"]["queues"];
    assert_eq!(q["sync orders"]["waiting"], 2, "{q}");
    assert_eq!(q["mail"]["waiting"], 1, "{q}");
    let found = &h["components"]["found"]["details"]["queues"];
    assert_eq!(found["courriels-été"]["waiting"], 1, "{found}");
    assert_eq!(found["a*b[1]"]["waiting"], 3, "{found}");
    assert_eq!(found["sync orders"]["waiting"], 2, "{found}");
    let m = dw.metrics().await;
    assert_eq!(
        m.value(
            "depwatch_queue_jobs",
            &[
                ("component", "found"),
                ("queue", "courriels-été"),
                ("state", "waiting")
            ]
        ),
        1.0
    );
    promtool_check_metrics(&m.text);
}

/// Queues read from a read-only replica (the usual place for a monitor):
/// the script only reads, so the replica runs it, and the numbers are the
/// master's.
#[tokio::test]
async fn queues_are_read_from_a_read_only_replica() {
    let master = RedisServer::start_with(free_port(), None, &["--repl-diskless-sync-delay", "0"]);
    make_bullmq_queue(&master.url(), "bull:q1");
    let mut m = master.conn().await;
    job(&mut m, "bull:q1", "1", 60, None).await;
    cmd(&mut m, &["LPUSH", "bull:q1:wait", "1"]).await;
    let port = master.port.to_string();
    let replica = RedisServer::start_with(
        free_port(),
        None,
        &[
            "--replicaof",
            "127.0.0.1",
            &port,
            "--replica-read-only",
            "yes",
        ],
    );
    let yaml = format!(
        "probes:\n{}",
        probe_of(
            &replica,
            "jobs",
            "200ms",
            "    queues: [ { name: q1, type: bullmq, stuck_after: 1h } ]\n"
        )
    );
    let dw = Depwatch::start(&yaml).await;
    let (_, h) = dw
        .wait_health(
            "the replica synced and read",
            Duration::from_secs(10),
            |_, h| h["components"]["jobs"]["details"]["queues"]["q1"]["waiting"] == 1,
        )
        .await;
    assert_eq!(status_of(&h, "jobs"), "healthy", "{h}");
    assert_eq!(h["components"]["jobs"]["details"]["role"], "slave", "{h}");
}

/// A BullMQ queue whose workers are rate limited (`rateLimit(ms)` after a
/// partner's 429 writes MAX_SAFE_INTEGER into `:limiter`; a global limit
/// keeps its `max` in `meta`): the old waiting job is still judged, and the
/// message says why the jobs wait and for how long.
#[tokio::test]
async fn a_rate_limited_bullmq_queue_says_so() {
    let server = RedisServer::start(None);
    let mut c = server.conn().await;
    for b in ["bull:throttled", "bull:global", "bull:under"] {
        bullmq_jobs(&server, &mut c, b, &[("1", 1200)]).await;
        cmd(&mut c, &["LPUSH", &format!("{b}:wait"), "1"]).await;
    }
    cmd(
        &mut c,
        &[
            "SET",
            "bull:throttled:limiter",
            "9007199254740991",
            "PX",
            "600000",
        ],
    )
    .await;
    for b in ["bull:global", "bull:under"] {
        cmd(
            &mut c,
            &[
                "HSET",
                &format!("{b}:meta"),
                "max",
                "5",
                "duration",
                "60000",
            ],
        )
        .await;
    }
    cmd(&mut c, &["SET", "bull:global:limiter", "5", "PX", "60000"]).await;
    cmd(&mut c, &["SET", "bull:under:limiter", "2", "PX", "60000"]).await;
    let (_dw, h) = queues_checked(&server, "      - { name: throttled, type: bullmq, stuck_after: 10m }\n      - { name: global, type: bullmq }\n      - { name: under, type: bullmq }\n").await;
    assert_eq!(status_of(&h, "jobs"), "degraded", "{h}");
    let err = error_of(&h, "jobs");
    assert!(
        err.contains("queue throttled: oldest waiting job is 20m old, stuck after 10m")
            && err.contains("queue throttled: rate limited for another 10m (BullMQ's limiter): its workers take no job until then"),
        "{err}"
    );
    assert!(
        err.contains("queue global: rate limited for another 1m"),
        "{err}"
    );
    assert!(!err.contains("queue under"), "{err}");
    let q = &h["components"]["jobs"]["details"]["queues"];
    let secs = q["throttled"]["rate_limited_for_seconds"].as_f64().unwrap();
    assert!((590.0..=600.0).contains(&secs), "{q}");
    assert!(q["under"].get("rate_limited_for_seconds").is_none(), "{q}");
}
