//! `kind: mongodb` against SecantusDB (the MongoDB wire protocol, started on
//! a free loopback port): counts, aggregates with labels, oldest-document
//! ages, ratio thresholds, queues kept in a collection, authentication,
//! a blocked command, a killed server and its recovery, and the URI's
//! password kept out of everything depwatch shows.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ::mongodb::bson::{DateTime, Document, doc};

use crate::support::*;

const INSTALL: &str = ".venv/bin/pip install -r scripts/requirements-test.txt";

/// A SecantusDB server, killed by PID on drop.
struct MongoServer {
    proc: Proc,
    port: u16,
}

impl MongoServer {
    fn start(port: u16, storage: Option<&Path>, flags: &[&str]) -> MongoServer {
        let bin = require("secantusd-py", INSTALL);
        let mut cmd = Command::new(bin);
        let storage = storage.map_or(":memory:".to_string(), |p| p.display().to_string());
        cmd.args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--storage-path",
            &storage,
            "--log-level",
            "WARNING",
        ])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut proc = Proc::spawn("secantusd-py", &mut cmd);
        wait_listening(&mut proc, port, Duration::from_secs(30));
        MongoServer { proc, port }
    }

    async fn client(&self, auth: &str) -> ::mongodb::Client {
        ::mongodb::Client::with_uri_str(format!(
            "mongodb://{auth}127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=5000",
            self.port
        ))
        .await
        .unwrap()
    }
}

fn ago(secs: i64) -> DateTime {
    DateTime::from_millis(DateTime::now().timestamp_millis() - secs * 1000)
}

async fn insert(c: &::mongodb::Client, coll: &str, docs: Vec<Document>) {
    c.database("app")
        .collection::<Document>(coll)
        .insert_many(docs)
        .await
        .unwrap();
}

#[tokio::test]
async fn mongodb_queries_queues_and_ratio() {
    let server = MongoServer::start(free_port(), None, &[]);
    let c = server.client("").await;
    let mut users = Vec::new();
    for (status, n) in [("error", 3), ("active", 4), ("disabled", 1)] {
        for i in 0..n {
            users.push(doc! { "syncStatus": status, "n": i, "createdAt": ago(3600) });
        }
    }
    insert(&c, "partner_system_users", users).await;
    let mut jobs = vec![
        doc! { "status": "pending", "createdAt": ago(100) },
        doc! { "status": "pending", "createdAt": ago(50) },
        doc! { "status": "processing", "createdAt": ago(700), "startedAt": ago(600) },
        doc! { "status": "failed", "createdAt": ago(900) },
    ];
    for _ in 0..3 {
        jobs.push(doc! { "status": "done", "createdAt": ago(1000), "startedAt": ago(990) });
    }
    insert(&c, "jobs", jobs).await;

    let yaml = format!(
        r#"probes:
  - name: orders-db
    kind: mongodb
    uri: mongodb://127.0.0.1:{port}/app?directConnection=true
    interval: 500ms
    timeout: 400ms
    jitter: 0s
    queries:
      - name: partner_users_in_error
        collection: partner_system_users
        count: {{ syncStatus: error }}
        degraded_above: 10
        degraded_above_ratio: {{ of: active_users, ratio: 0.5 }}
      - name: active_users
        collection: partner_system_users
        count: {{ syncStatus: active }}
      - name: created_since_2020
        collection: partner_system_users
        count: {{ createdAt: {{ $gte: {{ $date: "2020-01-01T00:00:00Z" }} }} }}
      - name: users_by_status
        collection: partner_system_users
        aggregate:
          - {{ $group: {{ _id: "$syncStatus", n: {{ $sum: 1 }} }} }}
          - {{ $sort: {{ n: -1 }} }}
        value: n
        labels: [_id]
        max_series: 2
      - name: stuck_processing_seconds
        collection: jobs
        oldest: {{ filter: {{ status: processing }}, field: startedAt }}
    queues:
      - name: jobs
        collection: jobs
        status_field: status
        waiting: [pending]
        active: [processing]
        failed: [failed]
        completed: [done]
        timestamp_field: createdAt
        active_timestamp_field: startedAt
        stuck_after: 5m
"#,
        port = server.port
    );
    let dw = Depwatch::start(&yaml).await;
    let m = dw
        .wait_metrics("query values", Duration::from_secs(20), |m| {
            m.get(
                "depwatch_mongodb_query_value",
                &[("component", "orders-db"), ("query", "active_users")],
            )
            .is_some()
        })
        .await;
    let v = |q: &str| {
        m.value(
            "depwatch_mongodb_query_value",
            &[("component", "orders-db"), ("query", q)],
        )
    };
    assert_eq!(v("partner_users_in_error"), 3.0);
    assert_eq!(v("active_users"), 4.0);
    assert_eq!(v("created_since_2020"), 8.0);
    let age = v("stuck_processing_seconds");
    assert!((599.0..=620.0).contains(&age), "{age}");
    // The aggregate: one series per result document, capped, overflow counted.
    let by = |s: &str| {
        m.value(
            "depwatch_mongodb_query_value",
            &[
                ("component", "orders-db"),
                ("query", "users_by_status"),
                ("_id", s),
            ],
        )
    };
    assert_eq!(by("active"), 4.0);
    assert_eq!(by("error"), 3.0);
    assert!(
        m.matching(
            "depwatch_mongodb_query_value",
            &[("query", "users_by_status"), ("_id", "disabled")]
        )
        .is_empty()
    );
    assert_eq!(
        m.value(
            "depwatch_mongodb_query_dropped_series",
            &[("component", "orders-db"), ("query", "users_by_status")]
        ),
        1.0
    );
    // The queue, with the same families as Redis queues.
    let jobs = |state: &str| {
        m.value(
            "depwatch_queue_jobs",
            &[
                ("component", "orders-db"),
                ("queue", "jobs"),
                ("state", state),
            ],
        )
    };
    assert_eq!(jobs("waiting"), 2.0);
    assert_eq!(jobs("active"), 1.0);
    assert_eq!(jobs("failed"), 1.0);
    assert_eq!(jobs("completed"), 3.0);
    let ql = [("component", "orders-db"), ("queue", "jobs")];
    let w = m.value("depwatch_queue_oldest_waiting_age_seconds", &ql);
    assert!((99.0..=120.0).contains(&w), "{w}");
    let a = m.value("depwatch_queue_oldest_active_age_seconds", &ql);
    assert!((599.0..=620.0).contains(&a), "{a}");
    assert!(
        m.value(
            "depwatch_mongodb_ping_seconds",
            &[("component", "orders-db")]
        ) > 0.0
    );
    promtool_check_metrics(&m.text);

    // 3 users in error is above half of the 4 active ones: degraded, and the
    // job running for 10 minutes is stuck.
    let (code, h) = dw.health("").await;
    assert_eq!(code, 200);
    let c0 = &h["components"]["orders-db"];
    assert_eq!(c0["status"], "degraded", "{c0}");
    let err = c0["error"].as_str().unwrap();
    assert!(
        err.contains("partner_users_in_error is 3, above 0.5 × active_users (4)"),
        "{err}"
    );
    assert!(
        err.contains("queue jobs: oldest active job has run for"),
        "{err}"
    );
    assert_eq!(c0["details"]["partner_users_in_error"], 3.0);
    assert_eq!(c0["details"]["queues"]["jobs"]["waiting"], 2);
    assert_eq!(c0["details"]["users_by_status"][0]["_id"], "active");

    // Fewer errors: the ratio no longer trips.
    c.database("app")
        .collection::<Document>("partner_system_users")
        .delete_many(doc! { "syncStatus": "error", "n": { "$gte": 1 } })
        .await
        .unwrap();
    dw.wait_health("the ratio cleared", Duration::from_secs(10), |_, h| {
        h["components"]["orders-db"]["error"]
            .as_str()
            .is_some_and(|e| !e.contains("partner_users_in_error"))
    })
    .await;
}

/// MongoDB answers a count or an aggregation on a collection it has never
/// seen as on an empty one: a typo in a collection or database name read
/// as a healthy zero. Where a result is empty, depwatch asks whether the
/// collection exists; where the server will not say, it does not guess.
#[tokio::test]
async fn mongodb_collection_that_does_not_exist_is_named_not_zero() {
    let server = MongoServer::start(free_port(), None, &["--enable-test-commands"]);
    let c = server.client("").await;
    insert(&c, "users", vec![doc! { "syncStatus": "active" }]).await;
    insert(&c, "jobs", vec![doc! { "status": "done" }]).await;
    let yaml = db_probe(
        server.port,
        r#"    queries:
      - { name: in_error, collection: users, count: { syncStatus: error }, degraded_above: 10 }
      - { name: typo, collection: user, count: { syncStatus: error }, degraded_above: 10 }
      - { name: other_db, database: ap, collection: users, count: {} }
      - name: by_status
        collection: usr
        aggregate: [ { $group: { _id: "$syncStatus", n: { $sum: 1 } } } ]
        value: n
        labels: [_id]
    queues:
      - { name: jobs, collection: jobs, status_field: status, waiting: [pending], completed: [gone] }
      - { name: jobz, collection: jobz, status_field: status, waiting: [pending] }
"#,
    );
    let dw = Depwatch::start(&yaml).await;
    let (_, h) = dw
        .wait_health(
            "the missing collections named",
            Duration::from_secs(20),
            |_, h| {
                h["components"]["db"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("jobz"))
            },
        )
        .await;
    let db = &h["components"]["db"];
    assert_eq!(db["status"], "degraded", "{db}");
    let err = db["error"].as_str().unwrap();
    for (what, name, ns) in [
        ("query", "typo", "app.user"),
        ("query", "other_db", "ap.users"),
        ("query", "by_status", "app.usr"),
        ("queue", "jobz", "app.jobz"),
    ] {
        assert!(
            err.contains(&format!(
                "{what} {name}: collection {ns} does not exist (check the {what}'s database and collection"
            )),
            "{err}"
        );
    }
    // Empty results of collections that exist are zeros, not errors.
    assert!(
        !err.contains("in_error") && !err.contains("queue jobs:"),
        "{err}"
    );
    assert_eq!(db["details"]["in_error"], 0.0, "{db}");
    assert!(db["details"].get("typo").is_none(), "{db}");
    assert!(db["details"]["queues"].get("jobz").is_none(), "{db}");
    // No series for what does not exist: a zero would be read as healthy.
    let m = dw.metrics().await;
    assert_eq!(value_of(&m, "in_error"), Some(0.0));
    assert_eq!(value_of(&m, "typo"), None);
    assert_eq!(value_of(&m, "other_db"), None);
    assert!(
        m.matching("depwatch_mongodb_query_value", &[("query", "by_status")])
            .is_empty()
    );
    assert!(
        m.matching("depwatch_queue_jobs", &[("queue", "jobz")])
            .is_empty()
    );
    assert_eq!(
        m.get(
            "depwatch_queue_jobs",
            &[("component", "db"), ("queue", "jobs"), ("state", "waiting")]
        ),
        Some(0.0)
    );

    // Once the collections are made, their numbers are there.
    insert(&c, "user", vec![doc! { "syncStatus": "active" }]).await;
    insert(&c, "usr", vec![doc! { "syncStatus": "active" }]).await;
    insert(&c, "jobz", vec![doc! { "status": "done" }]).await;
    c.database("ap")
        .collection::<Document>("users")
        .insert_one(doc! { "x": 1 })
        .await
        .unwrap();
    dw.wait_health(
        "healthy once they exist",
        Duration::from_secs(20),
        |_, h| h["components"]["db"]["status"] == "healthy",
    )
    .await;
    let m = dw.metrics().await;
    assert_eq!(value_of(&m, "typo"), Some(0.0));
    assert_eq!(value_of(&m, "other_db"), Some(1.0));

    // A server that will not list collections (a user without the
    // privilege): an empty result is not called missing on a guess.
    c.database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": { "failCommands": ["listCollections"], "errorCode": 13 },
        })
        .await
        .unwrap();
    c.database("app")
        .collection::<Document>("user")
        .drop()
        .await
        .unwrap();
    let checks = |m: &Metrics| {
        m.value(
            "depwatch_checks_total",
            &[("component", "db"), ("kind", "mongodb")],
        )
    };
    let before = checks(&dw.metrics().await);
    dw.wait_metrics("two checks after the drop", Duration::from_secs(10), |m| {
        checks(m) >= before + 2.0
    })
    .await;
    let (_, h) = dw.health("").await;
    assert_eq!(h["components"]["db"]["status"], "healthy", "{h}");
    assert_eq!(value_of(&dw.metrics().await, "typo"), Some(0.0));
}

/// A query the server refuses (a bad operator or stage) is that query's
/// failure: named, degraded, no series, while the other queries are read;
/// a database-level error (shutting down) still fails the check.
#[tokio::test]
async fn a_query_the_server_refuses_is_named_and_the_others_still_read() {
    let server = MongoServer::start(free_port(), None, &["--enable-test-commands"]);
    let c = server.client("").await;
    insert(&c, "users", vec![doc! { "a": 1 }, doc! { "a": 2 }]).await;
    let yaml = db_probe(
        server.port,
        r#"    failure_threshold: 1
    queries:
      - { name: good, collection: users, count: {} }
      - { name: bad_operator, collection: users, count: { a: { $foo: 1 } } }
      - { name: bad_stage, collection: users, aggregate: [ { $nosuchstage: {} } ], value: n }
      - name: wrong_value
        collection: users
        aggregate: [ { $group: { _id: null, n: { $sum: 1 } } } ]
        value: count
"#,
    );
    let dw = Depwatch::start(&yaml).await;
    let (_, h) = dw
        .wait_health("both named", Duration::from_secs(20), |_, h| {
            h["components"]["db"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("bad_stage"))
        })
        .await;
    let db = &h["components"]["db"];
    assert_eq!(db["status"], "degraded", "{db}");
    assert!(db["reason"].is_null(), "{db}");
    let err = db["error"].as_str().unwrap();
    assert!(err.contains("query bad_operator: "), "{err}");
    assert!(err.contains("$foo"), "{err}");
    assert!(err.contains("query bad_stage: "), "{err}");
    assert!(
        err.contains("query wrong_value: a result document has no number at `count` (its fields: _id, n; set `value:` to the field the pipeline computes)"),
        "{err}"
    );
    assert_eq!(db["details"]["good"], 2.0, "{db}");
    let m = dw.metrics().await;
    assert_eq!(value_of(&m, "good"), Some(2.0));
    assert_eq!(value_of(&m, "bad_operator"), None);
    assert_eq!(value_of(&m, "bad_stage"), None);
    assert_eq!(value_of(&m, "wrong_value"), None);

    // The database itself failing is the check's failure.
    c.database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": { "failCommands": ["aggregate"], "errorCode": 91 },
        })
        .await
        .unwrap();
    dw.wait_health("the check failed", Duration::from_secs(20), |_, h| {
        h["components"]["db"]["status"] == "unhealthy"
    })
    .await;
}

/// One MongoDB probe `db` of database `app` on `port`, checked every
/// 400 ms, with `rest` (its queries and queues, indented for the probe).
fn db_probe(port: u16, rest: &str) -> String {
    format!(
        "probes:\n  - name: db\n    kind: mongodb\n    uri: mongodb://127.0.0.1:{port}/app?directConnection=true\n    interval: 400ms\n    timeout: 350ms\n    jitter: 0s\n{rest}"
    )
}

fn value_of(m: &Metrics, query: &str) -> Option<f64> {
    m.get(
        "depwatch_mongodb_query_value",
        &[("component", "db"), ("query", query)],
    )
}

#[tokio::test]
async fn mongodb_auth_failure_and_secrets_never_shown() {
    let secret = "Mongo-S3cret-Pw";
    let storage = tempfile::tempdir().unwrap();
    let port = free_port();
    {
        // Users are created without --auth, then the server restarts with it.
        let mut open = MongoServer::start(port, Some(storage.path()), &["--sync-on-commit"]);
        let c = open.client("").await;
        c.database("admin")
            .run_command(doc! { "createUser": "app", "pwd": secret, "roles": ["root"] })
            .await
            .unwrap();
        drop(c);
        // A clean stop, so that the user is on disk for the restart.
        open.proc.signal("TERM");
        let _ = open.proc.child.wait();
    }
    let server = MongoServer::start(port, Some(storage.path()), &["--auth"]);
    let c = server.client(&format!("app:{secret}@")).await;
    insert(&c, "users", vec![doc! { "x": 1 }, doc! { "x": 2 }]).await;
    let pwfile = storage.path().join("mongo.pw");
    std::fs::write(&pwfile, format!("{secret}\n")).unwrap();
    let yaml = format!(
        r#"probes:
  - name: good
    kind: mongodb
    uri: mongodb://app:{secret}@127.0.0.1:{port}/app?authSource=admin&directConnection=true
    interval: 2s
    timeout: 1500ms
    queries:
      - {{ name: users, collection: users, count: {{}} }}
  - name: good-file
    kind: mongodb
    uri: mongodb://app@127.0.0.1:{port}/app?authSource=admin&directConnection=true
    password_file: {pwfile}
    interval: 2s
    timeout: 1500ms
  - name: wrong
    kind: mongodb
    uri: mongodb://app:not-the-password@127.0.0.1:{port}/app?authSource=admin&directConnection=true
    interval: 2s
    timeout: 1500ms
"#,
        pwfile = pwfile.display()
    );
    let dw = Depwatch::start(&yaml).await;
    // SCRAM's key derivation is slow in debug builds: the first checks may
    // time out; the driver caches the derived key afterwards.
    let (_, h) = dw
        .wait_health("every probe settled", Duration::from_secs(30), |_, h| {
            let c = &h["components"];
            c["good"]["status"] == "healthy"
                && c["good-file"]["status"] == "healthy"
                && c["wrong"]["reason"] == "auth"
        })
        .await;
    assert_eq!(h["components"]["good"]["status"], "healthy", "{h}");
    assert_eq!(h["components"]["good"]["details"]["users"], 2.0, "{h}");
    assert_eq!(h["components"]["good-file"]["status"], "healthy", "{h}");
    assert_eq!(h["components"]["wrong"]["reason"], "auth", "{h}");
    let m = dw.metrics().await;
    assert!(
        m.value(
            "depwatch_check_failures_total",
            &[
                ("component", "wrong"),
                ("kind", "mongodb"),
                ("reason", "auth")
            ]
        ) >= 1.0
    );
    dw.assert_never_shown(&[secret, "not-the-password"]).await;
}

#[tokio::test]
async fn mongodb_blocked_command_times_out_and_outage_recovers() {
    let port = free_port();
    let mut server = MongoServer::start(port, None, &["--enable-test-commands"]);
    let yaml = format!(
        "probes:\n  - name: db\n    kind: mongodb\n    uri: mongodb://127.0.0.1:{port}/app?directConnection=true\n    interval: 600ms\n    timeout: 500ms\n    jitter: 0s\n    failure_threshold: 2\n"
    );
    let dw = Depwatch::start(&yaml).await;
    dw.wait_health("healthy", Duration::from_secs(20), |code, h| {
        code == 200 && h["components"]["db"]["status"] == "healthy"
    })
    .await;

    // A fail point that holds every ping for 3 s: the check gives up at its timeout.
    let c = server.client("").await;
    c.database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": { "failCommands": ["ping"], "blockConnection": true, "blockTimeMS": 3000 },
        })
        .await
        .unwrap();
    let (_, h) = dw
        .wait_health("a timeout", Duration::from_secs(20), |_, h| {
            h["components"]["db"]["reason"] == "timeout"
        })
        .await;
    assert!(
        h["components"]["db"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no answer within the timeout")),
        "{h}"
    );
    c.database("admin")
        .run_command(doc! { "configureFailPoint": "failCommand", "mode": "off" })
        .await
        .unwrap();
    dw.wait_health("healthy again", Duration::from_secs(20), |_, h| {
        h["components"]["db"]["status"] == "healthy"
    })
    .await;
    drop(c);

    server.proc.kill();
    let (code, h) = dw
        .wait_health("unhealthy: connect", Duration::from_secs(20), |code, h| {
            code == 503 && h["components"]["db"]["reason"] == "connect"
        })
        .await;
    assert_eq!(code, 503);
    assert_eq!(h["components"]["db"]["status"], "unhealthy");
    // The driver's topology dump boiled down to the server and its error.
    let error = h["components"]["db"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("(127.0.0.1:{}: ", server.port)) && !error.contains("Topology"),
        "{error}"
    );
    let (code, _) = dw.get("/metrics").await;
    assert_eq!(code, 200);
    let m = dw.metrics().await;
    assert!(
        m.value(
            "depwatch_check_failures_total",
            &[
                ("component", "db"),
                ("kind", "mongodb"),
                ("reason", "connect")
            ]
        ) >= 1.0,
        "{:?}\n{h}",
        m.matching("depwatch_check_failures_total", &[("component", "db")])
    );
    assert!(
        m.value(
            "depwatch_check_failures_total",
            &[
                ("component", "db"),
                ("kind", "mongodb"),
                ("reason", "timeout")
            ]
        ) >= 1.0
    );

    let _server = MongoServer::start(port, None, &[]);
    dw.wait_health("recovered", Duration::from_secs(30), |code, h| {
        code == 200 && h["components"]["db"]["status"] == "healthy"
    })
    .await;
}

#[tokio::test]
async fn mongodb_config_errors_name_the_key() {
    let (dir, _, path) = write_config(
        r#"probes:
  - name: db
    kind: mongodb
    uri: mongodb://app:hunter2hunter2@127.0.0.1:1/?badOption=zz&w=nope
    queries:
      - { name: a, collection: c }
      - { name: b, collection: c, count: {}, degraded_above_ratio: { of: zz, ratio: 0.5 } }
      - { name: c, collection: c, aggregate: [ { $match: {} } ] }
    queues:
      - { name: q, collection: c, status_field: s }
"#,
    );
    let (code, out) = check_config(&path, &[]);
    assert_eq!(code, 64, "{out}");
    for want in [
        "probes[0].uri: invalid MongoDB URI `mongodb://app:***@127.0.0.1:1/?badOption=zz&w=nope`",
        "probes[0].queries[0]: a query needs exactly one of `count`, `aggregate` or `oldest`",
        "probes[0].queries[1].degraded_above_ratio.of: no query named `zz`",
        "probes[0].queries[2]: an aggregate query needs `value`",
        "probes[0].queues[0]: no status values",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
    assert!(!out.contains("hunter2hunter2"), "{out}");
    drop(dir);
}

#[tokio::test]
async fn mongodb_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    crate::redis::tls_certs(dir.path());
    let d = dir.path();
    let (cert, key, ca) = (d.join("server.pem"), d.join("server.key"), d.join("ca.pem"));
    let port = free_port();
    let _server = MongoServer::start(
        port,
        None,
        &[
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
        ],
    );
    let yaml = format!(
        r#"probes:
  - name: trusted
    kind: mongodb
    uri: mongodb://127.0.0.1:{port}/app?tls=true&tlsCAFile={ca}&directConnection=true
    interval: 1s
    timeout: 800ms
  - name: untrusted
    kind: mongodb
    uri: mongodb://127.0.0.1:{port}/app?tls=true&directConnection=true
    interval: 1s
    timeout: 800ms
"#,
        ca = ca.display()
    );
    let dw = Depwatch::start(&yaml).await;
    let (_, h) = dw
        .wait_health("both checked", Duration::from_secs(20), |_, h| {
            h["components"]["trusted"]["status"] == "healthy"
                && !h["components"]["untrusted"]["reason"].is_null()
        })
        .await;
    assert_eq!(h["components"]["untrusted"]["reason"], "tls", "{h}");
}
