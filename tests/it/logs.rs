//! `kind: log` end to end: real files written while the real depwatch tails
//! them — line shapes and exact sums, every rotation form, a restart in the
//! middle of a file, a line split across writes, garbage, label overflow,
//! latency details and `stuck_after`, and `depwatch replay-log`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);

/// A log probe over `dir/*.log` with the rules given (YAML, indented for a rule list).
fn config(dir: &Path, extra: &str, rules: &str) -> String {
    format!(
        "health: {{ cache_ttl: 100ms }}\nprobes:\n  - name: app-log\n    kind: log\n    interval: 300ms\n    timeout: 200ms\n    jitter: 0s\n    files: [{}/*.log]\n    poll_interval: 50ms\n{extra}    rules:\n{rules}",
        dir.display()
    )
}

const SYNC_RULE: &str = "      - metric: sync_operations\n        match: { message: \"Sync operation completed\" }\n        labels: [status]\n        duration: { field: duration }\n";

fn sync(status: &str, duration: &str) -> String {
    format!(
        "{{\"ts\":\"2026-11-21T10:00:00Z\",\"level\":\"info\",\"message\":\"Sync operation completed\",\"operation\":\"job_upload\",\"status\":\"{status}\",\"duration\":{duration}}}\n"
    )
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn lines(n: usize, status: &str) -> String {
    (0..n)
        .map(|i| sync(status, &format!("{}", 10 + i)))
        .collect()
}

async fn wait_total(dw: &Depwatch, status: &str, want: f64) -> Metrics {
    dw.wait_metrics(
        &format!("sync_operations{{status={status}}} = {want}"),
        WAIT,
        |m| {
            m.get(
                "depwatch_log_sync_operations_total",
                &[("component", "app-log"), ("status", status)],
            ) == Some(want)
        },
    )
    .await
}

/// Waits until the tailer has seen the file: with `start_at: end`, lines
/// written before that would (rightly) be skipped.
async fn watching(dw: &Depwatch) {
    dw.wait_metrics("the file is watched", WAIT, |m| {
        m.get("depwatch_log_files", &[("component", "app-log")]) == Some(1.0)
    })
    .await;
}

fn lines_total(m: &Metrics, result: &str) -> f64 {
    m.get(
        "depwatch_log_lines_total",
        &[("component", "app-log"), ("result", result)],
    )
    .unwrap_or(0.0)
}

/// A JSON line no rule of these tests matches (counted `unmatched`).
const SENTINEL: &str = "{\"message\":\"sentinel\"}\n";

/// Proves that nothing more is counted without waiting on the clock:
/// appends `line` to `path` and waits until it is counted as `result`. The
/// tailer reads a file in order and every file on each poll, so by then a
/// poll after everything before it has run, and what it counted shows.
async fn settled(dw: &Depwatch, path: &Path, line: &str, result: &str) -> Metrics {
    let before = lines_total(&dw.metrics().await, result);
    append(path, line);
    dw.wait_metrics(&format!("the sentinel line ({result})"), WAIT, |m| {
        lines_total(m, result) == before + 1.0
    })
    .await
}

struct LogDir {
    dir: tempfile::TempDir,
}

impl LogDir {
    fn new() -> Self {
        LogDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[tokio::test]
async fn log_counts_and_histogram_sums_for_every_shape() {
    let logs = LogDir::new();
    let app = logs.file("app.log");
    // Written before start: read because of start_at: beginning.
    append(&app, &sync("success", "1500"));
    append(&app, &sync("success", "\"1m37.535505102s\""));
    let rules = format!(
        "{SYNC_RULE}      - metric: stage_seconds\n        match: {{ stage: [extract, load], job.kind: {{ regex: '^nightly' }}, error: {{ exists: false }} }}\n        labels: [stage, {{ name: kind, field: job.kind }}]\n        duration: {{ field: took, unit: s, buckets: [1, 5, 10] }}\n        value: {{ field: rows, type: counter }}\n      - metric: queue\n        match: {{ msg: depth }}\n        value: {{ field: depth }}\n"
    );
    let dw = Depwatch::start(&config(logs.path(), "    start_at: beginning\n", &rules)).await;
    wait_total(&dw, "success", 2.0).await;
    append(&app, &sync("success", "\"250ms\""));
    append(&app, &sync("failure", "\"2h0m0.5s\""));
    append(&app, &sync("failure", "12.5"));
    append(
        &app,
        concat!(
            "{\"stage\":\"extract\",\"job\":{\"kind\":\"nightly-full\"},\"took\":2.5,\"rows\":100}\n",
            "{\"stage\":\"load\",\"job\":{\"kind\":\"nightly-full\"},\"took\":\"7s\",\"rows\":50}\n",
            "{\"stage\":\"load\",\"job\":{\"kind\":\"nightly-full\"},\"took\":1,\"rows\":1,\"error\":\"disk full\"}\n",
            "{\"stage\":\"transform\",\"job\":{\"kind\":\"nightly-full\"},\"took\":1,\"rows\":1}\n",
            "{\"stage\":\"load\",\"job\":{\"kind\":\"hourly\"},\"took\":1,\"rows\":1}\n",
            "{\"msg\":\"depth\",\"depth\":42}\n",
            "{\"msg\":\"depth\",\"depth\":17}\n",
            "{\"unrelated\":true}\n",
        ),
    );
    let m = wait_total(&dw, "failure", 2.0).await;
    let m = if lines_total(&m, "unmatched") < 4.0 {
        dw.wait_metrics("all lines", WAIT, |m| lines_total(m, "unmatched") == 4.0)
            .await
    } else {
        m
    };
    let ok = [("component", "app-log"), ("status", "success")];
    let failed = [("component", "app-log"), ("status", "failure")];
    assert_eq!(m.value("depwatch_log_sync_operations_total", &ok), 3.0);
    let sum = m.value("depwatch_log_sync_operations_duration_seconds_sum", &ok);
    assert!((sum - (1.5 + 97.535505102 + 0.25)).abs() < 1e-9, "{sum}");
    let sum = m.value("depwatch_log_sync_operations_duration_seconds_sum", &failed);
    assert!((sum - (7200.5 + 0.0125)).abs() < 1e-9, "{sum}");
    assert_eq!(
        m.value(
            "depwatch_log_sync_operations_duration_seconds_bucket",
            &[
                ("component", "app-log"),
                ("status", "success"),
                ("le", "1.0")
            ]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "depwatch_log_sync_operations_duration_seconds_bucket",
            &[
                ("component", "app-log"),
                ("status", "failure"),
                ("le", "+Inf")
            ]
        ),
        2.0
    );
    let extract = [
        ("component", "app-log"),
        ("stage", "extract"),
        ("kind", "nightly-full"),
    ];
    let load = [
        ("component", "app-log"),
        ("stage", "load"),
        ("kind", "nightly-full"),
    ];
    assert_eq!(m.value("depwatch_log_stage_seconds_total", &extract), 1.0);
    assert_eq!(m.value("depwatch_log_stage_seconds_total", &load), 1.0);
    assert_eq!(
        m.value("depwatch_log_stage_seconds_duration_seconds_sum", &load),
        7.0
    );
    assert_eq!(
        m.value("depwatch_log_stage_seconds_rows_total", &extract),
        100.0
    );
    assert_eq!(
        m.value("depwatch_log_queue_depth", &[("component", "app-log")]),
        17.0
    );
    assert_eq!(lines_total(&m, "matched"), 9.0);
    assert_eq!(lines_total(&m, "unmatched"), 4.0);
    assert_eq!(lines_total(&m, "invalid"), 0.0);
    promtool_check_metrics(&m.text);
    // The multi-target endpoint answers the same series for this component.
    let (code, body) = dw.get("/probe?target=app-log").await;
    assert_eq!(code, 200, "{body}");
    let p = Metrics::parse(&body);
    assert_eq!(p.value("depwatch_log_sync_operations_total", &ok), 3.0);
    assert_eq!(lines_total(&p, "matched"), 9.0);
}

/// Writes `n` lines, waits until they are counted, runs `rotate`, writes
/// `k` lines to the file `rotate` leaves, and checks the exact total.
async fn rotation(
    rotate: impl FnOnce(&Path),
    tail_before: usize,
    after: usize,
    want_rotation: &str,
) {
    let logs = LogDir::new();
    let app = logs.file("app.log");
    std::fs::write(&app, "").unwrap();
    let dw = Depwatch::start(&config(logs.path(), "", SYNC_RULE)).await;
    watching(&dw).await;
    append(&app, &lines(100, "success"));
    wait_total(&dw, "success", 100.0).await;
    // Lines written just before the rotation, not read yet: never lost.
    append(&app, &lines(tail_before, "success"));
    rotate(&app);
    // Different first bytes: a new file, whatever its inode.
    let fresh: String = (0..after)
        .map(|i| sync("failure", &format!("{}", 1000 + i)))
        .collect();
    append(&app, &fresh);
    let m = wait_total(&dw, "failure", after as f64).await;
    let m = if m.get(
        "depwatch_log_sync_operations_total",
        &[("component", "app-log"), ("status", "success")],
    ) != Some((100 + tail_before) as f64)
    {
        wait_total(&dw, "success", (100 + tail_before) as f64).await
    } else {
        m
    };
    assert_eq!(lines_total(&m, "invalid"), 0.0);
    if !want_rotation.is_empty() {
        // Families are updated one after the other: wait, do not sample.
        dw.wait_metrics(want_rotation, WAIT, |m| {
            m.get(want_rotation, &[("component", "app-log")])
                .unwrap_or(0.0)
                >= 1.0
        })
        .await;
    }
    // Stable: nothing is counted twice later.
    let m2 = settled(&dw, &app, SENTINEL, "unmatched").await;
    assert_eq!(
        lines_total(&m2, "matched"),
        (100 + tail_before + after) as f64
    );
}

#[tokio::test]
async fn rotation_rename_and_create() {
    rotation(
        |app| std::fs::rename(app, app.with_extension("log.1")).unwrap(),
        7,
        250,
        "depwatch_log_rotations_total",
    )
    .await;
}

#[tokio::test]
async fn rotation_rename_to_a_name_the_glob_still_matches() {
    // app.log → app.1.log still matches *.log: known by inode, read once.
    rotation(
        |app| std::fs::rename(app, app.with_file_name("app.1.log")).unwrap(),
        7,
        250,
        "depwatch_log_rotations_total",
    )
    .await;
}

#[tokio::test]
async fn rotation_copytruncate() {
    // The copy is taken after every line was read (lines written between
    // copy and truncate are lost by copytruncate itself); the file then
    // grows past its old size before depwatch looks again.
    rotation(
        |app| {
            std::fs::copy(app, app.with_extension("log.1")).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(app)
                .unwrap()
                .set_len(0)
                .unwrap();
        },
        0,
        250,
        "depwatch_log_truncations_total",
    )
    .await;
}

#[tokio::test]
async fn rotation_delete_and_recreate() {
    rotation(|app| std::fs::remove_file(app).unwrap(), 7, 250, "").await;
}

#[tokio::test]
async fn a_line_split_across_two_writes_is_held() {
    let logs = LogDir::new();
    let app = logs.file("app.log");
    std::fs::write(&app, "").unwrap();
    let dw = Depwatch::start(&config(logs.path(), "", SYNC_RULE)).await;
    watching(&dw).await;
    let line = sync("success", "\"1.5s\"");
    let (a, b) = line.split_at(line.len() / 2);
    append(&app, a);
    dw.wait_metrics("the first half read", WAIT, |m| {
        m.get("depwatch_log_read_bytes_total", &[("component", "app-log")]) == Some(a.len() as f64)
    })
    .await;
    // A later poll (it reads the other file) still holds the half line.
    let m = settled(&dw, &logs.file("other.log"), SENTINEL, "unmatched").await;
    assert_eq!(lines_total(&m, "invalid"), 0.0, "half a line is not a line");
    assert_eq!(lines_total(&m, "matched"), 0.0);
    append(&app, b);
    let m = wait_total(&dw, "success", 1.0).await;
    assert_eq!(
        m.value(
            "depwatch_log_sync_operations_duration_seconds_sum",
            &[("component", "app-log"), ("status", "success")]
        ),
        1.5
    );
    assert_eq!(lines_total(&m, "invalid"), 0.0);
}

#[tokio::test]
async fn ten_megabytes_of_garbage_are_counted_not_fatal() {
    let logs = LogDir::new();
    let app = logs.file("app.log");
    std::fs::write(&app, "").unwrap();
    let dw = Depwatch::start(&config(
        logs.path(),
        "    max_line_bytes: 64KiB\n",
        SYNC_RULE,
    ))
    .await;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut garbage_lines = 0;
    let mut written = 0usize;
    let mut buf: Vec<u8> = Vec::new();
    for i in 0..1000 {
        buf.extend_from_slice(sync("success", &i.to_string()).as_bytes());
        // 10 KB of random bytes (no newline): not UTF-8, not JSON.
        for _ in 0..10_000 {
            let b = (next() & 0xff) as u8;
            buf.push(if b == b'\n' { b'x' } else { b });
        }
        buf.push(b'\n');
        garbage_lines += 1;
        if i % 200 == 0 {
            // Over max_line_bytes: skipped whole.
            buf.extend(std::iter::repeat_n(b'{', 100_000));
            buf.push(b'\n');
            garbage_lines += 1;
        }
        if buf.len() > 1 << 20 {
            written += buf.len();
            let mut f = std::fs::OpenOptions::new().append(true).open(&app).unwrap();
            f.write_all(&buf).unwrap();
            buf.clear();
        }
    }
    written += buf.len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&app)
        .unwrap()
        .write_all(&buf)
        .unwrap();
    assert!(written > 10_000_000);
    let m = dw
        .wait_metrics("every line", Duration::from_secs(60), |m| {
            lines_total(m, "matched") + lines_total(m, "invalid") >= (1000 + garbage_lines) as f64
        })
        .await;
    assert_eq!(lines_total(&m, "matched"), 1000.0);
    assert_eq!(lines_total(&m, "invalid"), garbage_lines as f64);
    let (code, h) = dw.health("?component=app-log").await;
    assert_eq!(code, 200, "{h}");
}

#[tokio::test]
async fn label_values_beyond_the_cap_are_other() {
    let logs = LogDir::new();
    let app = logs.file("app.log");
    std::fs::write(&app, "").unwrap();
    let rules = "      - metric: logins\n        match: { event: login }\n        labels: [user]\n        max_label_values: 3\n";
    let dw = Depwatch::start(&config(logs.path(), "", rules)).await;
    watching(&dw).await;
    let text: String = (0..10)
        .map(|i| format!("{{\"event\":\"login\",\"user\":\"user-{i}\"}}\n"))
        .collect();
    append(&app, &text);
    let m = dw
        .wait_metrics("ten logins", WAIT, |m| lines_total(m, "matched") == 10.0)
        .await;
    let series = m.matching("depwatch_log_logins_total", &[("component", "app-log")]);
    assert_eq!(series.len(), 4, "{series:?}");
    assert_eq!(
        m.value(
            "depwatch_log_logins_total",
            &[("component", "app-log"), ("user", "other")]
        ),
        7.0
    );
    assert_eq!(
        m.value(
            "depwatch_log_label_overflows_total",
            &[("component", "app-log"), ("rule", "logins")]
        ),
        7.0
    );
}

#[tokio::test]
async fn restart_in_the_middle_of_a_file_counts_each_line_once() {
    let logs = LogDir::new();
    let state = tempfile::tempdir().unwrap();
    let app = logs.file("app.log");
    std::fs::write(&app, "").unwrap();
    let yaml = format!(
        "state_dir: {}\n{}",
        state.path().display(),
        config(logs.path(), "", SYNC_RULE)
    );
    let mut dw = Depwatch::start(&yaml).await;
    watching(&dw).await;
    append(&app, &lines(100, "success"));
    // Half a line when depwatch stops: read again in full after the restart.
    let half = sync("failure", "5");
    let (a, b) = half.split_at(20);
    append(&app, a);
    wait_total(&dw, "success", 100.0).await;
    dw.proc.signal("TERM");
    wait_for("depwatch to exit", WAIT, || {
        let exited = dw.proc.child.try_wait().unwrap().is_some();
        async move { exited.then_some(()) }
    })
    .await;
    append(&app, b);
    append(&app, &lines(30, "success"));
    let dw2 = Depwatch::start(&yaml).await;
    let m = wait_total(&dw2, "success", 30.0).await;
    let m = if lines_total(&m, "matched") < 31.0 {
        dw2.wait_metrics("31 lines", WAIT, |m| lines_total(m, "matched") == 31.0)
            .await
    } else {
        m
    };
    let m2 = settled(&dw2, &app, SENTINEL, "unmatched").await;
    assert_eq!(lines_total(&m2, "matched"), 31.0, "{}", m.text);
    assert_eq!(lines_total(&m2, "invalid"), 0.0);
    drop(dw);
}

#[tokio::test]
async fn new_files_are_read_whole_and_start_at_end_skips_old_lines() {
    let logs = LogDir::new();
    let app = logs.file("app.log");
    std::fs::write(&app, lines(5, "success")).unwrap();
    let dw = Depwatch::start(&config(logs.path(), "    start_at: end\n", SYNC_RULE)).await;
    watching(&dw).await;
    append(&app, &lines(2, "success"));
    wait_total(&dw, "success", 2.0).await;
    // A file created later is new from its first line.
    std::fs::write(logs.file("worker.log"), lines(3, "success")).unwrap();
    let m = wait_total(&dw, "success", 5.0).await;
    assert_eq!(
        m.value("depwatch_log_files", &[("component", "app-log")]),
        2.0
    );
}

#[tokio::test]
async fn health_shows_latency_slowest_and_stuck_after() {
    let logs = LogDir::new();
    let app = logs.file("app.log");
    std::fs::write(&app, "").unwrap();
    let rules = format!(
        "{SYNC_RULE}        slow_above: 1s\n        top_slowest: 2\n        fields: [operation]\n        stuck_after: 3s\n"
    );
    let dw = Depwatch::start(&config(logs.path(), "    time_field: ts\n", &rules)).await;
    watching(&dw).await;
    let text: String = (1..=100)
        .map(|i| sync("success", &(i * 20).to_string()))
        .collect();
    append(&app, &text);
    let (_, h) = dw
        .wait_health("latency of 100 operations", WAIT, |_, h| {
            h["components"]["app-log"]["details"]["rules"]["sync_operations"]["latency"]["count"]
                == 100
        })
        .await;
    let c = &h["components"]["app-log"];
    let r = &c["details"]["rules"]["sync_operations"];
    assert_eq!(c["status"], "healthy", "{c}");
    assert_eq!(r["matched"], 100);
    let lat = &r["latency"];
    assert_eq!(lat["min_ms"], 20.0);
    assert_eq!(lat["max_ms"], 2000.0);
    assert_eq!(lat["mean_ms"], 1010.0);
    assert_eq!(lat["p50_ms"], 1000.0);
    assert_eq!(lat["p95_ms"], 1900.0);
    assert_eq!(lat["p99_ms"], 1980.0);
    let slow = r["slowest"].as_array().unwrap();
    assert_eq!(slow.len(), 2);
    assert_eq!(slow[0]["ms"], 2000.0);
    assert_eq!(slow[1]["ms"], 1980.0);
    assert_eq!(slow[0]["at"], "2026-11-21T10:00:00Z");
    assert_eq!(slow[0]["fields"]["status"], "success");
    assert_eq!(slow[0]["fields"]["operation"], "job_upload");
    assert_eq!(c["details"]["lines"]["matched"], 100);
    // Nothing more arrives: processing stopped.
    let (_, h) = dw
        .wait_health("stuck_after to degrade", WAIT, |_, h| {
            h["components"]["app-log"]["status"] == "degraded"
        })
        .await;
    let err = h["components"]["app-log"]["error"].as_str().unwrap_or("");
    assert!(
        err.contains("rule sync_operations: no matching line"),
        "{err}"
    );
    // A new line heals it.
    append(&app, &sync("success", "5"));
    dw.wait_health("recovery", WAIT, |_, h| {
        h["components"]["app-log"]["status"] == "healthy"
    })
    .await;
}

/// `depwatch replay-log --config CFG FILE`, run to its end.
fn replay_log(cfg: &Path, file: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_depwatch"))
        .args(["replay-log", "--config"])
        .arg(cfg)
        .arg(file)
        .output()
        .unwrap()
}

#[tokio::test]
async fn replay_log_prints_what_a_log_would_produce() {
    let logs = LogDir::new();
    let app = logs.file("sample.log");
    let mut text = lines(4, "success");
    text.push_str("not json\n");
    text.push_str(&sync("failure", "\"2s\""));
    std::fs::write(&app, &text).unwrap();
    let cfg = logs.file("depwatch.yml");
    std::fs::write(&cfg, config(logs.path(), "", SYNC_RULE)).unwrap();
    let out = replay_log(&cfg, &app);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Metrics::parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(lines_total(&m, "matched"), 5.0);
    assert_eq!(lines_total(&m, "invalid"), 1.0);
    assert_eq!(
        m.value(
            "depwatch_log_sync_operations_duration_seconds_sum",
            &[("component", "app-log"), ("status", "failure")]
        ),
        2.0
    );
    promtool_check_metrics(&m.text);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("note:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A misspelt field matches nothing: the replay says which, and the
    // name the lines have.
    let typo = SYNC_RULE.replace("{ message:", "{ mesage:");
    std::fs::write(&cfg, config(logs.path(), "", &typo)).unwrap();
    let out = replay_log(&cfg, &app);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        "depwatch replay-log: note: rule sync_operations: its match tests `mesage`, which none \
         of the 5 lines read has (a misspelt name matches nothing; did you mean `message`?)"
    );
}

/// A byte that is not UTF-8 inside a string (a Latin-1 name) costs only
/// that character: the operation is counted, the line is told apart in
/// the details; the same byte outside a string is no JSON.
#[tokio::test]
async fn a_latin1_byte_in_a_string_does_not_lose_the_line() {
    let logs = LogDir::new();
    let app = logs.file("app.log");
    std::fs::write(&app, "").unwrap();
    let dw = Depwatch::start(&config(logs.path(), "", SYNC_RULE)).await;
    watching(&dw).await;
    let mut bytes = br#"{"message":"Sync operation completed","user":"Jos"#.to_vec();
    bytes.push(0xe9);
    bytes.extend_from_slice(b"\",\"status\":\"success\",\"duration\":12}\n");
    bytes.extend_from_slice(b"{\"message\":\"Sync operation completed\"} \xe9\n");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&app)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    wait_total(&dw, "success", 1.0).await;
    let (_, h) = dw
        .wait_health("both lines read", WAIT, |_, h| {
            h["components"]["app-log"]["details"]["lines"]["invalid"] == 1
        })
        .await;
    let l = &h["components"]["app-log"]["details"]["lines"];
    assert_eq!(
        (l["matched"].as_u64(), l["not_utf8"].as_u64()),
        (Some(1), Some(1)),
        "{l}"
    );
}

/// A running probe shows a `match:` field no line has in the rule's
/// details (without degrading: a rare event's field may not have come yet).
#[tokio::test]
async fn a_match_field_no_line_has_is_shown_with_the_name_lines_have() {
    let logs = LogDir::new();
    let app = logs.file("app.log");
    std::fs::write(&app, "").unwrap();
    let typo = SYNC_RULE.replace("{ message:", "{ mesage:");
    let dw = Depwatch::start(&config(logs.path(), "", &typo)).await;
    watching(&dw).await;
    append(&app, &lines(6, "success"));
    let (_, h) = dw
        .wait_health("the field told", WAIT, |_, h| {
            h["components"]["app-log"]["details"]["rules"]["sync_operations"]["fields_never_seen"]
                .is_array()
        })
        .await;
    let c = &h["components"]["app-log"];
    assert_eq!(c["status"], "healthy", "{c}");
    assert_eq!(
        c["details"]["rules"]["sync_operations"]["fields_never_seen"],
        serde_json::json!([{ "field": "mesage", "hint": "did you mean `message`?" }]),
        "{c}"
    );
    // After 1,000 lines, logged as a warning, once.
    append(&app, &lines(1000, "success"));
    let told = "rule sync_operations: its match tests `mesage`";
    wait_for("the warning", WAIT, || async {
        dw.log().contains(told).then_some(())
    })
    .await;
    append(&app, &lines(10, "success"));
    dw.wait_health("more lines read", WAIT, |_, h| {
        h["components"]["app-log"]["details"]["lines"]["unmatched"] == 1016
    })
    .await;
    assert_eq!(dw.log().matches(told).count(), 1, "{}", dw.log());
}

#[tokio::test]
async fn bad_rules_are_refused_with_positions() {
    let (dir, _port, path) = write_config(
        "probes:\n  - name: app-log\n    kind: log\n    files: [/tmp/*.log]\n    rules:\n      - metric: sync_total\n        match: { status: { regex: '[' } }\n        labels: [component]\n",
    );
    let (code, out) = check_config(&path, &[]);
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains(":8:9: probes[0].rules[0].metric: metric `sync_total` ends in _total"),
        "{out}"
    );
    assert!(
        out.contains(":9:18: probes[0].rules[0].match.status: invalid regex"),
        "{out}"
    );
    assert!(
        out.contains("probes[0].rules[0].labels[0]: label `component` is reserved"),
        "{out}"
    );
    drop(dir);
}

#[tokio::test]
async fn reload_with_new_rules_resumes_where_the_old_probe_stopped() {
    let logs = LogDir::new();
    let app = logs.file("app.log");
    std::fs::write(&app, "").unwrap();
    let dw = Depwatch::start(&config(logs.path(), "", SYNC_RULE)).await;
    watching(&dw).await;
    append(&app, &lines(10, "success"));
    wait_total(&dw, "success", 10.0).await;
    let rules = format!("{SYNC_RULE}      - metric: all_lines\n");
    dw.rewrite_config(&config(logs.path(), "", &rules));
    let (code, body) = dw.post("/-/reload", None).await;
    assert_eq!(code, 200, "{body}");
    dw.wait_metrics("the new rule", WAIT, |m| {
        m.get("depwatch_log_files", &[("component", "app-log")]) == Some(1.0)
            && m.text.contains("depwatch_log_all_lines")
    })
    .await;
    append(&app, &lines(5, "success"));
    let m = dw
        .wait_metrics("five new lines", WAIT, |m| {
            m.get("depwatch_log_all_lines_total", &[("component", "app-log")]) == Some(5.0)
        })
        .await;
    // `all_lines` matches any JSON line: the sentinel is one that is not JSON.
    let m2 = settled(&dw, &app, "not json\n", "invalid").await;
    // The new probe counts from where the old one stopped: nothing twice.
    assert_eq!(lines_total(&m2, "matched"), 5.0, "{}", m.text);
    assert_eq!(
        m2.value(
            "depwatch_log_sync_operations_total",
            &[("component", "app-log"), ("status", "success")]
        ),
        5.0
    );
}

/// Patterns that match no file make the component degraded, named; one that
/// names a directory (whose files a log probe does not read) says so.
#[tokio::test]
async fn no_file_or_a_directory_is_degraded_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let probe = |name: &str, files: &str| {
        format!(
            "  - name: {name}\n    kind: log\n    interval: 300ms\n    timeout: 200ms\n    jitter: 0s\n    files: [{files}]\n    poll_interval: 50ms\n    rules:\n{SYNC_RULE}"
        )
    };
    let yaml = format!(
        "health: {{ cache_ttl: 100ms }}\nprobes:\n{}{}",
        probe("by-dir", &logs.display().to_string()),
        probe("by-glob", &format!("{}/*.log", logs.display()))
    );
    let dw = Depwatch::start(&yaml).await;
    let (_, h) = dw
        .wait_health("both degraded", WAIT, |_, h| {
            let c = &h["components"];
            c["by-dir"]["status"] == "degraded" && c["by-glob"]["status"] == "degraded"
        })
        .await;
    let d = logs.display();
    assert_eq!(
        h["components"]["by-dir"]["error"],
        format!("no file matches {d} ({d} is a directory: name its files, for example {d}/*.log)"),
        "{h}"
    );
    assert_eq!(
        h["components"]["by-glob"]["error"],
        format!("no file matches {d}/*.log"),
        "{h}"
    );
    append(&logs.join("app.log"), &sync("ok", "12"));
    dw.wait_health("the glob's file found", WAIT, |_, h| {
        h["components"]["by-glob"]["status"] == "healthy"
    })
    .await;
    let (_, h) = dw.health("").await;
    assert_eq!(h["components"]["by-dir"]["status"], "degraded", "{h}");
}

/// A rule whose `duration` or `value` field no matched line has is a typo,
/// not data: the component says which; a field missing from some lines
/// only is data and says nothing, and so is a label field no line has yet
/// (an error code present only on failures).
#[tokio::test]
async fn fields_no_matched_line_has_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let rules = "      - metric: typos\n        match: { message: \"Sync operation completed\" }\n        labels: [statuss]\n        duration: { field: duraton }\n        value: { field: rowz }\n      - metric: fine\n        match: { message: \"Sync operation completed\" }\n        labels: [status]\n        duration: { field: duration }\n";
    let log = dir.path().join("app.log");
    append(&log, "");
    let dw = Depwatch::start(&config(dir.path(), "", rules)).await;
    watching(&dw).await;
    append(&log, &lines(4, "ok"));
    // One line without a duration: data, not configuration.
    append(
        &log,
        "{\"message\":\"Sync operation completed\",\"status\":\"ok\"}\n",
    );
    let (_, h) = dw
        .wait_health("five lines matched", WAIT, |_, h| {
            h["components"]["app-log"]["details"]["rules"]["typos"]["matched"] == 5
        })
        .await;
    let c = &h["components"]["app-log"];
    assert_eq!(c["status"], "degraded", "{c}");
    let err = c["error"].as_str().unwrap();
    for want in [
        "rule typos: none of its 5 matched lines has a duration at `duraton` (set duration.field to the field that holds the time)",
        "rule typos: none of its 5 matched lines has a number at `rowz` (set value.field to the field that holds it)",
    ] {
        assert!(err.contains(want), "{err}");
    }
    assert!(!err.contains("rule fine"), "{err}");
    assert!(!err.contains("statuss"), "{err}");
    assert_eq!(c["details"]["rules"]["fine"]["bad_durations"], 1, "{c}");
}
