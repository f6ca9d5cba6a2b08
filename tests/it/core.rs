//! The core exporter end to end: the real binary, its endpoints, the process
//! probe, thresholds, the health cache, reload and shutdown.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

const SECS10: Duration = Duration::from_secs(10);

fn sleeper() -> Proc {
    Proc::spawn("sleep", Command::new("sleep").arg("600"))
}

fn process_probe(name: &str, target: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    kind: process\n    {target}\n    interval: 300ms\n    timeout: 250ms\n    jitter: 0s\n{extra}"
    )
}

#[tokio::test]
async fn metrics_and_health_of_the_process_probe() {
    let dw = Depwatch::start(&format!(
        "probes:\n{}",
        process_probe("self", "self: true", "    memory_degraded_above: 100GiB\n")
    ))
    .await;
    let labels = [("component", "self"), ("kind", "process")];
    dw.wait_metrics("two checks", SECS10, |m| {
        m.get("depwatch_checks_total", &labels).unwrap_or(0.0) >= 2.0
    })
    .await;
    // A health request first, so that the cache counters exist.
    let (code, h) = dw.health("").await;
    let m = dw.metrics().await;

    assert_eq!(code, 200, "{h}");
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert!(h["uptime_seconds"].as_f64().unwrap() > 0.0);
    let c = &h["components"]["self"];
    assert_eq!(c["kind"], "process");
    assert_eq!(c["status"], "healthy");
    assert_eq!(c["critical"], true);
    assert_eq!(c["consecutive_failures"], 0);
    assert!(c["error"].is_null());
    assert_eq!(c["details"]["pid"], dw.proc.pid());
    assert!(c["details"]["resident_memory_bytes"].as_u64().unwrap() > 1_000_000);
    assert!(c["details"]["threads"].as_u64().unwrap() >= 2);
    assert!(c["checked_at"].as_str().unwrap().ends_with('Z'));
    for key in [
        "checks",
        "avg_ms",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "slow",
        "critical",
        "rating",
        "top_slowest",
        "regressions",
    ] {
        assert!(
            !h["performance"][key].is_null(),
            "performance.{key} missing: {h}"
        );
    }
    // The rating depends on the machine's load: only its vocabulary is fixed.
    let rating = h["performance"]["rating"].as_str().unwrap();
    assert!(
        ["EXCELLENT", "GOOD", "SLOW", "CRITICAL"].contains(&rating),
        "{rating}"
    );
    assert!(
        h["performance"]["components"]["self"]["checks"]
            .as_u64()
            .unwrap()
            >= 2
    );
    assert_eq!(h["cache"]["ttl_seconds"], 5.0);

    // General metrics of SPEC.md.
    assert_eq!(m.value("depwatch_up", &labels), 1.0);
    assert_eq!(
        m.value(
            "depwatch_component_status",
            &[
                ("component", "self"),
                ("kind", "process"),
                ("status", "healthy")
            ]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "depwatch_component_status",
            &[
                ("component", "self"),
                ("kind", "process"),
                ("status", "unhealthy")
            ]
        ),
        0.0
    );
    assert!(m.value("depwatch_check_duration_seconds_count", &labels) >= 2.0);
    assert!(
        m.get(
            "depwatch_check_duration_seconds_bucket",
            &[("component", "self"), ("kind", "process"), ("le", "+Inf")]
        )
        .is_some()
    );
    // A component that never failed has no failure series (created by a
    // reason's first failure).
    assert!(
        m.matching("depwatch_check_failures_total", &[("component", "self")])
            .is_empty(),
        "{}",
        m.text
    );
    assert_eq!(
        m.value("depwatch_consecutive_failures", &[("component", "self")]),
        0.0
    );
    let last = m.value(
        "depwatch_last_success_timestamp_seconds",
        &[("component", "self")],
    );
    assert!((last - now()).abs() < 60.0, "{last}");
    assert_eq!(m.value("depwatch_config_last_reload_successful", &[]), 1.0);
    assert!(m.value("depwatch_last_scrape_timestamp_seconds", &[]) > 1.7e9);
    let cache = |r| m.value("depwatch_health_cache_requests_total", &[("result", r)]);
    assert_eq!(cache("hit") + cache("miss"), 1.0);
    let build = m.matching(
        "depwatch_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
    );
    assert_eq!(build.len(), 1, "{}", m.text);
    assert!(build[0].0.contains("revision=\"") && build[0].0.contains("rustc=\""));
    // The watched process's own metrics, and depwatch's standard ones.
    assert!(
        m.value(
            "depwatch_process_resident_memory_bytes",
            &[("component", "self")]
        ) > 1e6
    );
    assert!(
        m.get(
            "depwatch_process_cpu_seconds_total",
            &[("component", "self")]
        )
        .is_some()
    );
    assert!(m.value("depwatch_process_open_fds", &[("component", "self")]) >= 3.0);
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "process_open_fds",
    ] {
        assert!(m.get(name, &[]).is_some(), "{name} missing");
    }
    promtool_check_metrics(&m.text);
    assert!(!m.text.contains("# EOF"));
}

#[tokio::test]
async fn openmetrics_when_asked() {
    let dw = Depwatch::start(&format!(
        "probes:\n{}",
        process_probe("self", "self: true", "")
    ))
    .await;
    dw.wait_metrics("the first check", SECS10, |m| {
        m.get(
            "depwatch_checks_total",
            &[("component", "self"), ("kind", "process")],
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    let r = dw
        .client
        .get(dw.url("/metrics"))
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let body = r.text().await.unwrap();
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("# TYPE depwatch_checks counter"), "{body}");
    let r = dw.client.get(dw.url("/metrics")).send().await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
}

/// The kernel keeps 15 bytes of a process's name: `process_name` written
/// as the program is named (23 letters here) found nothing, forever.
#[tokio::test]
async fn a_process_name_longer_than_the_kernel_keeps_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("a-sleeper-with-long-name");
    std::fs::copy("/bin/sleep", &long).unwrap();
    let p = Proc::spawn("long-named sleep", Command::new(&long).arg("600"));
    let yaml = format!(
        "probes:\n{}{}",
        process_probe("whole", "process_name: \"^a-sleeper-with-long-name$\"", ""),
        // As `ps` shows it: still found.
        process_probe("cut", "process_name: \"^a-sleeper-with-$\"", ""),
    );
    let dw = Depwatch::start(&yaml).await;
    let (_, h) = dw
        .wait_health("both found", SECS10, |_, h| {
            ["whole", "cut"]
                .iter()
                .all(|c| h["components"][c]["status"] == "healthy")
        })
        .await;
    for c in ["whole", "cut"] {
        let d = &h["components"][c]["details"];
        assert_eq!(d["pid"], p.pid(), "{h}");
        assert_eq!(d["process"], "a-sleeper-with-long-name", "{h}");
    }
}

/// An app that crashed leaves its pidfile; the kernel gives its pid to
/// another process later (a cron job, a shell): that one is not the app.
#[tokio::test]
async fn a_pidfile_whose_pid_was_given_again_is_stale_not_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("app.pid");
    let other = sleeper();
    std::fs::write(&pidfile, other.pid().to_string()).unwrap();
    // Written an hour before that process started: by a process long gone.
    let f = std::fs::File::options().write(true).open(&pidfile).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    drop(f);
    let yaml = format!(
        "probes:\n{}",
        process_probe("app", &format!("pidfile: {}", pidfile.display()), "")
    );
    let dw = Depwatch::start(&yaml).await;
    let (_, h) = dw
        .wait_health("stale", SECS10, |_, h| {
            h["components"]["app"]["status"] == "unhealthy"
        })
        .await;
    let error = h["components"]["app"]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("is stale: pid {} is `sleep`", other.pid()))
            && error.contains("the pid was given again"),
        "{error}"
    );
    assert_eq!(h["components"]["app"]["reason"], "not_found");
    // The app writes its pidfile again (it started): healthy.
    std::fs::write(&pidfile, other.pid().to_string()).unwrap();
    dw.wait_health("healthy", SECS10, |_, h| {
        h["components"]["app"]["status"] == "healthy"
    })
    .await;
}

#[tokio::test]
async fn killed_process_turns_unhealthy_after_the_threshold() {
    let mut crit = sleeper();
    let mut soft = sleeper();
    let yaml = format!(
        "probes:\n{}{}",
        process_probe("crit", &format!("pid: {}", crit.pid()), ""),
        process_probe(
            "soft",
            &format!("pid: {}", soft.pid()),
            "    critical: false\n"
        ),
    );
    let dw = Depwatch::start(&yaml).await;
    dw.wait_health("healthy", SECS10, |code, h| {
        code == 200 && h["status"] == "healthy"
    })
    .await;

    // A non-critical component can only degrade the verdict.
    soft.kill();
    let (code, h) = dw
        .wait_health("soft unhealthy", SECS10, |_, h| {
            h["components"]["soft"]["status"] == "unhealthy"
        })
        .await;
    assert_eq!(code, 200);
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["components"]["soft"]["reason"], "not_found");
    assert!(
        h["components"]["soft"]["consecutive_failures"]
            .as_u64()
            .unwrap()
            >= 3
    );

    // A critical one makes it unhealthy, with 503, after failure_threshold checks.
    crit.kill();
    let m = dw
        .wait_metrics("crit down", SECS10, |m| {
            m.get("depwatch_up", &[("component", "crit"), ("kind", "process")]) == Some(0.0)
        })
        .await;
    let failures = m.value("depwatch_consecutive_failures", &[("component", "crit")]);
    let status_unhealthy = m.value(
        "depwatch_component_status",
        &[
            ("component", "crit"),
            ("kind", "process"),
            ("status", "unhealthy"),
        ],
    );
    if failures < 3.0 {
        assert_eq!(status_unhealthy, 0.0, "unhealthy after {failures} failures");
    }
    let (code, h) = dw
        .wait_health("crit unhealthy", SECS10, |_, h| {
            h["components"]["crit"]["status"] == "unhealthy"
        })
        .await;
    assert_eq!(code, 503);
    assert_eq!(h["status"], "unhealthy");
    assert!(
        h["components"]["crit"]["error"]
            .as_str()
            .unwrap()
            .contains("is not running")
    );
    let m = dw.metrics().await;
    assert!(
        m.value(
            "depwatch_check_failures_total",
            &[
                ("component", "crit"),
                ("kind", "process"),
                ("reason", "not_found")
            ]
        ) >= 3.0
    );
    assert!(m.value("depwatch_consecutive_failures", &[("component", "crit")]) >= 3.0);
    // Narrowed to the healthy... no: to the dead component: 503 as well; unknown: 404.
    let (code, one) = dw.health("?component=crit").await;
    assert_eq!(
        (code, one["components"].as_object().unwrap().len()),
        (503, 1)
    );
    let (code, _) = dw.health("?component=nope").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn pidfile_restart_is_noticed_and_dead_pid_is_not_found() {
    let mut first = sleeper();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("app.pid");
    std::fs::write(&pidfile, format!("{}\n", first.pid())).unwrap();
    let yaml = format!(
        "probes:\n{}",
        process_probe(
            "app",
            &format!("pidfile: {}", pidfile.display()),
            "    failure_threshold: 1\n"
        )
    );
    let dw = Depwatch::start(&yaml).await;
    let labels = [("component", "app")];
    dw.wait_metrics("first check", SECS10, |m| {
        m.get("depwatch_process_restarts_total", &labels) == Some(0.0)
    })
    .await;

    // The pidfile points at a dead pid: not_found.
    first.kill();
    dw.wait_health("not_found", SECS10, |code, h| {
        code == 503 && h["components"]["app"]["reason"] == "not_found"
    })
    .await;

    // A new process (new pid and start time) behind the same pidfile: a restart.
    let second = sleeper();
    std::fs::write(&pidfile, format!("{}\n", second.pid())).unwrap();
    let m = dw
        .wait_metrics("restart seen", SECS10, |m| {
            m.get("depwatch_process_restarts_total", &labels) == Some(1.0)
        })
        .await;
    assert_eq!(
        m.value("depwatch_up", &[("component", "app"), ("kind", "process")]),
        1.0
    );
    let (_code, h) = dw
        .wait_health("healthy again", SECS10, |code, _| code == 200)
        .await;
    assert_eq!(
        h["components"]["app"]["details"]["pid"],
        second.pid(),
        "{h}"
    );
    assert!(dw.log().contains("Watched process restarted."));
}

#[tokio::test]
async fn health_flood_does_not_multiply_checks() {
    // Scheduled checks every 10 minutes: every other check is a cache miss.
    let yaml = "health:\n  cache_ttl: 1s\nprobes:\n  - name: a\n    kind: process\n    self: true\n    interval: 10m\n    jitter: 0s\n  - name: b\n    kind: process\n    self: true\n    interval: 10m\n    jitter: 0s\n";
    let dw = Depwatch::start(yaml).await;
    let checks = |m: &Metrics, c: &str| {
        m.get(
            "depwatch_checks_total",
            &[("component", c), ("kind", "process")],
        )
        .unwrap_or(0.0)
    };
    let before = dw
        .wait_metrics("first round", SECS10, |m| {
            checks(m, "a") >= 1.0 && checks(m, "b") >= 1.0
        })
        .await;
    let started = Instant::now();
    let mut requests = 0u64;
    while started.elapsed() < Duration::from_millis(3500) {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (c, url) = (dw.client.clone(), dw.url("/api/health"));
            set.spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) });
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap().unwrap(), 200);
            requests += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = dw.metrics().await;
    // At most one check per component per TTL (plus the one in flight at each edge).
    let allowed = (elapsed / 1.0).ceil() + 1.0;
    for c in ["a", "b"] {
        let ran = checks(&after, c) - checks(&before, c);
        assert!(
            ran >= 1.0 && ran <= allowed,
            "component {c}: {ran} checks for {requests} requests in {elapsed:.1}s"
        );
    }
    let hits = after.value("depwatch_health_cache_requests_total", &[("result", "hit")]);
    let misses = after.value(
        "depwatch_health_cache_requests_total",
        &[("result", "miss")],
    );
    assert_eq!(
        hits + misses,
        (requests * 2) as f64,
        "two components per request"
    );
    assert!(hits > misses * 5.0, "hits {hits} misses {misses}");
    let (_, h) = dw.health("").await;
    assert!(h["cache"]["hit_rate"].as_f64().unwrap() > 0.8, "{h}");
}

#[tokio::test]
async fn admin_endpoints_need_the_token() {
    let token = "test-admin-token-0123456789";
    let yaml = format!(
        "health:\n  cache_ttl: 1h\nauth:\n  admin_token: ${{DW_ADMIN}}\nprobes:\n  - name: self\n    kind: process\n    self: true\n    interval: 1h\n    jitter: 0s\n{}",
        "# No scheduled check between invalidation and the next request.\n"
    );
    let dw = Depwatch::start_with_env(&yaml, &[("DW_ADMIN", token)]).await;
    assert_eq!(dw.post("/api/admin/cache/invalidate", None).await.0, 401);
    assert_eq!(
        dw.post("/api/admin/cache/invalidate", Some("wrong"))
            .await
            .0,
        401
    );
    assert_eq!(dw.post("/-/reload", None).await.0, 401);
    dw.wait_health("a cached result", SECS10, |_, h| h["cache"]["entries"] == 1)
        .await;
    let (code, body) = dw.post("/api/admin/cache/invalidate", Some(token)).await;
    assert_eq!(
        (code, body.as_str()),
        (
            200,
            r#"{"invalidated":1,"components":["self"],"selected":["self"]}"#
        )
    );
    let (_, h) = dw.health("").await;
    assert!(h["cache"]["misses"].as_u64().unwrap() >= 1);
    let (code, body) = dw
        .post("/api/admin/cache/invalidate?component=nope", Some(token))
        .await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = dw.post("/api/admin/probes/self/run", Some(token)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""status":"healthy""#), "{body}");
    assert_eq!(
        dw.post("/api/admin/probes/nope/run", Some(token)).await.0,
        404
    );
    // The token appears nowhere.
    dw.assert_never_shown(&[token]).await;
}

#[tokio::test]
async fn admin_bearer_scheme_is_case_insensitive() {
    let token = "test-admin-token-0123456789";
    let yaml = format!(
        "auth:\n  admin_token: {token}\nprobes:\n{}",
        process_probe("self", "self: true", "")
    );
    let dw = Depwatch::start(&yaml).await;
    let post = |auth: String| {
        let req = dw
            .client
            .post(dw.url("/api/admin/cache/invalidate"))
            .header("authorization", auth);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    // RFC 7235: the scheme is case-insensitive.
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        assert_eq!(post(format!("{scheme} {token}")).await, 200, "{scheme}");
    }
    assert_eq!(post(format!("bearer {token}x")).await, 401);
    assert_eq!(post(format!("Basic {token}")).await, 401);
    assert_eq!(post(format!("bearer{token}")).await, 401);
}

#[tokio::test]
async fn admin_endpoints_are_off_without_a_token() {
    let dw = Depwatch::start(&format!(
        "probes:\n{}",
        process_probe("self", "self: true", "")
    ))
    .await;
    let (code, body) = dw
        .post("/api/admin/cache/invalidate", Some("anything"))
        .await;
    assert_eq!(code, 403);
    assert!(body.contains("set auth.admin_token"), "{body}");
}

#[tokio::test]
async fn reload_keeps_the_old_config_when_the_new_one_is_broken() {
    let good = format!("probes:\n{}", process_probe("first", "self: true", ""));
    let dw = Depwatch::start(&good).await;
    dw.wait_metrics("first checked", SECS10, |m| {
        m.get(
            "depwatch_up",
            &[("component", "first"), ("kind", "process")],
        )
        .is_some()
    })
    .await;

    dw.rewrite_config("probes:\n  - name: second\n    kind: process\n    self: yes please\n");
    let (code, body) = dw.post("/-/reload", None).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("probes[0].self: expected true or false"),
        "{body}"
    );
    let m = dw.metrics().await;
    assert_eq!(m.value("depwatch_config_last_reload_successful", &[]), 0.0);
    let (code, h) = dw.health("").await;
    assert_eq!(code, 200);
    assert!(
        h["components"]["first"].is_object() && h["components"]["second"].is_null(),
        "{h}"
    );
    assert!(dw.log().contains("Configuration reload refused"));

    // A valid file, by SIGHUP this time: the new probe replaces the old one.
    dw.rewrite_config(&format!(
        "probes:\n{}",
        process_probe("second", "self: true", "")
    ));
    dw.proc.signal("HUP");
    let m = dw
        .wait_metrics("second checked", SECS10, |m| {
            m.get(
                "depwatch_up",
                &[("component", "second"), ("kind", "process")],
            )
            .is_some()
        })
        .await;
    assert_eq!(m.value("depwatch_config_last_reload_successful", &[]), 1.0);
    assert!(
        m.get(
            "depwatch_up",
            &[("component", "first"), ("kind", "process")]
        )
        .is_none(),
        "removed component still exported"
    );
    assert!(
        m.get(
            "depwatch_process_resident_memory_bytes",
            &[("component", "first")]
        )
        .is_none()
    );
    let (_, h) = dw.health("").await;
    assert!(
        h["components"]["first"].is_null() && h["components"]["second"].is_object(),
        "{h}"
    );
}

/// SIGTERM, then the exit status (within 10 s).
async fn terminate(dw: &mut Depwatch) -> std::process::ExitStatus {
    dw.proc.signal("TERM");
    let started = Instant::now();
    loop {
        if let Some(s) = dw.proc.child.try_wait().unwrap() {
            return s;
        }
        assert!(
            started.elapsed() < SECS10,
            "still running 10s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let mut dw = Depwatch::start(&format!(
        "probes:\n{}",
        process_probe("self", "self: true", "")
    ))
    .await;
    let status = terminate(&mut dw).await;
    assert!(status.success(), "{status:?}");
    assert!(dw.log().contains("Stopped."));
}

/// A check that waits on a partner that never answers holds a stop for the
/// grace period: the log says so while it waits, and that it was cut.
#[tokio::test]
async fn sigterm_names_the_checks_it_waits_for() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let partner = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
            let _ = seen_tx.send(());
        }
    });
    let mut dw = Depwatch::start(&format!(
        "probes:\n  - name: mute\n    kind: http\n    url: http://{addr}/\n    interval: 60s\n    timeout: 30s\n    jitter: 0s\n"
    ))
    .await;
    tokio::time::timeout(SECS10, seen.recv())
        .await
        .expect("the check connects");
    let started = Instant::now();
    let status = terminate(&mut dw).await;
    partner.abort();
    let log = dw.log();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(started.elapsed() >= Duration::from_secs(4), "{log}");
    let waiting = log
        .lines()
        .find(|l| l.contains("Waiting for the checks in flight to end (at most 5s)."))
        .unwrap_or_else(|| panic!("no line says what the stop waits for:\n{log}"));
    assert!(waiting.contains("checks=1"), "{waiting}");
    let cut = log
        .lines()
        .find(|l| l.contains("Checks still in flight after 5s were stopped"))
        .unwrap_or_else(|| panic!("no line says the check was cut:\n{log}"));
    assert!(cut.contains("checks=1"), "{cut}");
    assert!(log.contains("Stopped."), "{log}");
}

#[tokio::test]
async fn builtin_default_runs_without_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_depwatch"))
        .arg("--version")
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.starts_with(&format!("depwatch {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    // The default listens on 127.0.0.1:9877: only run it when that port is free.
    if std::net::TcpListener::bind("127.0.0.1:9877").is_err() {
        panic!("127.0.0.1:9877 is taken: stop whatever listens there to run this test");
    }
    let _p = Proc::spawn(
        "depwatch",
        Command::new(env!("CARGO_BIN_EXE_depwatch"))
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let client = crate::support::http_client().build().unwrap();
    let body = wait_for("the default instance", SECS10, || async {
        let r = client
            .get("http://127.0.0.1:9877/api/health")
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        (v["components"]["depwatch"]["status"] == "healthy"
            && v["components"]["working-dir"]["status"].is_string())
        .then_some(v)
    })
    .await;
    // The working directory's disk is the machine's: healthy below 80%
    // used; on a fuller disk (a CI runner's) it is degraded, and says why.
    let disk = &body["components"]["working-dir"];
    let used = disk["details"]["used_percent"].as_f64().unwrap_or(0.0);
    let share = |used: &str, total: &str| {
        let (u, t) = (
            disk["details"][used].as_f64(),
            disk["details"][total].as_f64(),
        );
        u.zip(t)
            .filter(|(_, t)| *t > 0.0)
            .map_or(0.0, |(u, t)| 100.0 * u / t)
    };
    let inodes = share("inodes_used", "inodes");
    if used < 80.0 && inodes < 80.0 {
        assert_eq!(body["status"], "healthy", "{body}");
    } else {
        assert_ne!(disk["status"], "healthy", "{disk}");
        assert_eq!(body["status"], disk["status"], "{body}");
        assert!(
            disk["error"].as_str().is_some_and(|e| e.contains('%')),
            "{disk}"
        );
    }
    assert!(dir.path().join("depwatch-data").is_dir());
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn json_logs_carry_fields() {
    let dw = Depwatch::start_with(
        &format!("probes:\n{}", process_probe("self", "self: true", "")),
        &[],
        &["--log-format", "json"],
    )
    .await;
    dw.wait_metrics("a check", SECS10, |m| {
        m.get("depwatch_up", &[("component", "self"), ("kind", "process")])
            .is_some()
    })
    .await;
    let log = dw.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let started = lines
        .iter()
        .find(|l| l["message"] == "depwatch started.")
        .expect("a start line");
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["listen"], format!("127.0.0.1:{}", dw.port));
    let changed = lines
        .iter()
        .find(|l| l["message"] == "Component state changed.")
        .expect("a state line");
    assert_eq!(
        (changed["component"].as_str(), changed["status"].as_str()),
        (Some("self"), Some("healthy"))
    );
}

/// `/api/health` is written as it is sent, in pieces: a large answer
/// arrives whole, valid, its fields in their order, each component once.
#[tokio::test]
async fn a_large_health_answer_is_streamed_whole_and_in_order() {
    let mut yaml =
        String::from("defaults:\n  interval: 1h\n  jitter: 0s\n  timeout: 2s\nprobes:\n");
    for i in 0..400 {
        // Port 1: refused at once.
        yaml.push_str(&format!(
            "  - {{ name: p{i:03}.x, kind: http, critical: false, url: \"http://127.0.0.1:1/x\" }}\n"
        ));
    }
    let dw = Depwatch::start(&yaml).await;
    let r = dw.client.get(dw.url("/api/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Sent as it is written: no length known beforehand.
    assert_eq!(
        r.headers().get("transfer-encoding").map(|v| v.as_bytes()),
        Some(&b"chunked"[..]),
        "{:?}",
        r.headers()
    );
    let body = r.text().await.unwrap();
    assert!(body.len() > 3 * 64 * 1024, "{} bytes", body.len());
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e})"));
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "status",
            "timestamp",
            "uptime_seconds",
            "version",
            "components",
            "performance",
            "state_store",
            "cache",
            "alerting"
        ]
    );
    let components = v["components"].as_object().unwrap();
    assert_eq!(components.len(), 400);
    assert_eq!(components["p000.x"]["kind"], "http");
    assert_eq!(components["p399.x"]["reason"], "connect");
    let cache = v["cache"].as_object().unwrap();
    let ck: Vec<&str> = cache.keys().map(String::as_str).collect();
    assert_eq!(
        ck,
        [
            "hits",
            "misses",
            "hit_rate",
            "entries",
            "valid",
            "expired",
            "ttl_seconds",
            "components"
        ]
    );
    assert_eq!(cache["components"].as_object().unwrap().len(), 400);
    let p123 = &cache["components"]["p123.x"];
    assert_eq!(
        p123["hits"].as_u64().unwrap() + p123["misses"].as_u64().unwrap(),
        1,
        "{p123}"
    );
    // One component: small, the same shape.
    let (code, one) = dw.health("?component=p007.x").await;
    assert_eq!(code, 200);
    assert_eq!(one["components"].as_object().unwrap().len(), 1);
    assert_eq!(one["cache"]["components"].as_object().unwrap().len(), 400);
}

#[tokio::test]
async fn logs_that_do_not_go_to_a_terminal_are_plain_text() {
    // The daemon's stderr is a file here, as under systemd or docker: no
    // colour codes in it, its fields readable as written.
    let dw = Depwatch::start(&format!(
        "probes:\n{}",
        process_probe("self", "self: true", "")
    ))
    .await;
    let log = wait_for("the first state change logged", SECS10, || async {
        let log = dw.log();
        log.contains("Component state changed").then_some(log)
    })
    .await;
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    assert!(
        log.contains(r#"component="self" kind="process" status="healthy""#),
        "{log}"
    );
}
