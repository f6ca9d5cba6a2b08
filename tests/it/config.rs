//! `depwatch check-config`: every problem of a file, each with its file,
//! line, column, key path and a hint, and exit code 64.

use crate::support::*;

/// Runs check-config on `yaml` and returns (exit code, the problem lines
/// with the file name replaced by `F`).
fn check(yaml: &str, env: &[(&str, &str)]) -> (i32, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dw.yml");
    std::fs::write(&path, yaml).unwrap();
    let (code, out) = check_config(&path, env);
    let file = path.display().to_string();
    let lines = out
        .lines()
        .filter(|l| {
            l.strip_prefix(&file).is_some_and(|r| {
                r.starts_with(':') && r[1..].starts_with(|c: char| c.is_ascii_digit())
            })
        })
        .map(|l| l.replacen(&file, "F", 1))
        .collect();
    (code, lines)
}

fn one_problem(yaml: &str, expected: &str) {
    let (code, lines) = check(yaml, &[]);
    assert_eq!(code, 64, "{lines:?}");
    assert_eq!(lines, vec![expected.to_string()], "for:\n{yaml}");
}

const PROBE: &str = "probes:\n  - name: me\n    kind: process\n    self: true\n";

#[test]
fn valid_file_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.yml");
    std::fs::write(&path, PROBE).unwrap();
    let (code, out) = check_config(&path, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid, 1 probe(s)"), "{out}");
}

#[test]
fn unknown_top_level_key_suggests_the_right_one() {
    one_problem(
        &format!("listen: 127.0.0.1:9\nstate_dri: /tmp\n{PROBE}"),
        "F:2:1: state_dri: unknown key `state_dri` (did you mean `state_dir`?)",
    );
}

#[test]
fn unknown_probe_key() {
    one_problem(
        &format!("{PROBE}    colour: red\n"),
        "F:5:5: probes[0].colour: unknown key `colour` (known keys: critical, failure_threshold, interval, jitter, kind, memory_degraded_above, memory_unhealthy_above, name, pid, pidfile, process_name, self, success_threshold, timeout)",
    );
}

#[test]
fn unknown_kind() {
    let (code, lines) = check("probes:\n  - name: db\n    kind: oracle\n", &[]);
    assert_eq!(code, 64);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("F:3:5: probes[0].kind: unknown kind `oracle` (known kinds: "),
        "{lines:?}"
    );
    assert!(lines[0].contains("process"), "{lines:?}");
}

#[test]
fn duplicate_probe_names() {
    one_problem(
        &format!("{PROBE}  - name: me\n    kind: process\n    pid: 1\n"),
        "F:5:5: probes[1].name: duplicate probe name `me` (already used at line 2; probe names must be unique)",
    );
}

#[test]
fn timeout_not_below_interval() {
    one_problem(
        &format!("{PROBE}    interval: 5s\n    timeout: 10s\n"),
        "F:6:5: probes[0].timeout: timeout 10s is not shorter than interval 5s (a check must end before the next one starts: lower timeout or raise interval)",
    );
}

#[test]
fn duration_without_unit() {
    one_problem(
        &format!("{PROBE}    interval: 30\n"),
        "F:5:15: probes[0].interval: duration `30` has no unit (write it like 500ms, 15s, 5m, 1h30m or 7d)",
    );
}

#[test]
fn size_with_unknown_unit() {
    one_problem(
        &format!("{PROBE}    memory_degraded_above: 3 gigs\n"),
        "F:5:28: probes[0].memory_degraded_above: unknown unit `gigs` in size `3 gigs` (write it like 512MiB, 1GiB or 10GB)",
    );
}

#[test]
fn threshold_out_of_range() {
    one_problem(
        &format!("{PROBE}    failure_threshold: 0\n"),
        "F:5:5: probes[0].failure_threshold: failure_threshold 0 is out of range (use 1 to 100 consecutive checks)",
    );
}

#[test]
fn wrong_type() {
    one_problem(
        &format!("{PROBE}    critical: maybe\n"),
        "F:5:15: probes[0].critical: expected true or false, found `maybe`",
    );
}

#[test]
fn unset_environment_variable() {
    let (code, lines) = check(
        &format!("auth:\n  admin_token: ${{DW_TEST_UNSET_TOKEN}}\n{PROBE}"),
        &[],
    );
    assert_eq!(code, 64);
    assert_eq!(
        lines,
        vec![
            "F:2:16: auth.admin_token: environment variable `DW_TEST_UNSET_TOKEN` is not set (export DW_TEST_UNSET_TOKEN=... before starting depwatch)"
        ]
    );
}

#[test]
fn environment_value_is_used_and_never_echoed() {
    let yaml = format!("listen: ${{DW_TEST_LISTEN}}\n{PROBE}");
    let (code, lines) = check(&yaml, &[("DW_TEST_LISTEN", "127.0.0.1:9")]);
    assert_eq!((code, lines.len()), (0, 0));
    // A bad value from the environment is reported without its text: it may be a secret.
    let (code, lines) = check(
        &format!("{PROBE}    pid: ${{DW_TEST_PID}}\n"),
        &[("DW_TEST_PID", "s3cr3t")],
    );
    assert_eq!(code, 64);
    assert_eq!(
        lines,
        vec![
            "F:5:10: probes[0].pid: expected a non-negative integer, found a value from the environment"
        ]
    );
    assert!(!lines.concat().contains("s3cr3t"));
}

#[test]
fn missing_required_key() {
    one_problem(
        "probes:\n  - kind: process\n    self: true\n",
        "F:2:5: probes[0].name: missing required key `name`",
    );
}

#[test]
fn process_needs_exactly_one_target() {
    one_problem(
        &format!("{PROBE}    pid: 1\n"),
        "F:2:5: probes[0]: more than one way to find the process (set exactly one of `self: true`, `pid`, `pidfile` or `process_name`)",
    );
}

#[test]
fn invalid_regex() {
    one_problem(
        "probes:\n  - name: app\n    kind: process\n    process_name: \"([a-z\"\n",
        "F:4:5: probes[0].process_name: invalid regex: unclosed character class (process_name is a regular expression, e.g. ^myapp$)",
    );
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let (code, lines) = check("probes:\n  - name: [unclosed\n    kind: process\n", &[]);
    assert_eq!(code, 64);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("F:"), "{lines:?}");
    assert!(lines[0].contains("invalid YAML"), "{lines:?}");
}

#[test]
fn secret_file_that_cannot_be_read() {
    one_problem(
        &format!("auth:\n  admin_token_file: ./does-not-exist\n{PROBE}"),
        "F:2:3: auth.admin_token_file: cannot read secret file ./does-not-exist: No such file or directory (os error 2) (check the path and that depwatch may read it)",
    );
}

#[test]
fn every_problem_of_a_file_at_once() {
    let yaml = "\
listen: 127.0.0.1:99999
health:
  cache_tll: 5s
defaults:
  interval: 10
probes:
  - name: app
    kind: process
    pid: 12
    interval: 5s
    timeout: 5s
  - name: app
    kind: proces
  - name: other
    kind: process
    self: true
    failure_threshold: 0
    memory_degraded_above: 2GiB
    memory_unhealthy_above: 1GiB
";
    let (code, lines) = check(yaml, &[]);
    assert_eq!(code, 64);
    assert_eq!(
        lines,
        vec![
            "F:1:1: listen: invalid listen address `127.0.0.1:99999` (write HOST:PORT, e.g. 127.0.0.1:9877)",
            "F:3:3: health.cache_tll: unknown key `cache_tll` (did you mean `cache_ttl`?)",
            "F:5:13: defaults.interval: duration `10` has no unit (write it like 500ms, 15s, 5m, 1h30m or 7d)",
            "F:11:5: probes[0].timeout: timeout 5s is not shorter than interval 5s (a check must end before the next one starts: lower timeout or raise interval)",
            "F:12:5: probes[1].name: duplicate probe name `app` (already used at line 7; probe names must be unique)",
            "F:13:5: probes[1].kind: unknown kind `proces` (did you mean `process`?)",
            "F:17:5: probes[2].failure_threshold: failure_threshold 0 is out of range (use 1 to 100 consecutive checks)",
            "F:18:5: probes[2].memory_degraded_above: memory_degraded_above is not below memory_unhealthy_above (degraded is the earlier warning: make it the lower limit)",
        ]
    );
}

#[test]
fn a_bad_config_does_not_start_depwatch() {
    let (dir, _port, path) = write_config("probes:\n  - name: x\n    kind: nope\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_depwatch"))
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("probes[0].kind: unknown kind `nope`"), "{err}");
    assert!(
        err.contains("depwatch did not start: 1 problem(s)"),
        "{err}"
    );
}

#[test]
fn duplicate_key_in_a_probe() {
    one_problem(
        &format!("{PROBE}    self: false\n"),
        "F:5:5: probes[0].self: duplicate key `self` (already set at line 4; keep one)",
    );
}

#[test]
fn out_of_range_durations_and_sizes_are_refused_with_a_position() {
    let (code, lines) = check(
        &format!(
            "health: {{cache_ttl: 18446744073709551616s}}\n{PROBE}    interval: 9999999999999999d\n    memory_degraded_above: 99999999999999999999TB\n"
        ),
        &[],
    );
    assert_eq!(code, 64, "{lines:?}");
    assert_eq!(
        lines,
        vec![
            "F:1:21: health.cache_ttl: duration `18446744073709551616s` is out of range (at most 366d) (write it like 500ms, 15s, 5m, 1h30m or 7d)",
            "F:6:15: probes[0].interval: duration `9999999999999999d` is out of range (at most 366d) (write it like 500ms, 15s, 5m, 1h30m or 7d)",
            "F:7:28: probes[0].memory_degraded_above: size `99999999999999999999TB` is out of range (at most 1PiB) (write it like 512MiB, 1GiB or 10GB)",
        ]
    );
    // Within the parser's range but not sane for the key.
    let (code, lines) = check(
        &format!("health: {{cache_ttl: 2h}}\n{PROBE}    interval: 2d\n"),
        &[],
    );
    assert_eq!(code, 64, "{lines:?}");
    assert_eq!(
        lines,
        vec![
            "F:1:10: health.cache_ttl: cache_ttl 2h is longer than 1h (a stale verdict keeps a dead dependency in rotation: use 1s to 1m)",
            "F:6:5: probes[0].interval: interval 2d is longer than 1d (a dependency checked less than daily is not watched: use 15s to 1h)",
        ]
    );
}

#[test]
fn an_alias_bomb_is_refused_quickly_with_a_position() {
    // Nine levels of ten: a billion strings once expanded.
    let mut yaml = String::from("x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        let refs = vec![format!("*x{}", i - 1); 10].join(", ");
        yaml.push_str(&format!("x{i}: &x{i} [{refs}]\n"));
    }
    yaml.push_str(PROBE);
    let started = std::time::Instant::now();
    let (code, lines) = check(&yaml, &[]);
    assert_eq!(code, 64, "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("F:6:")
            && lines[0].contains("aliases expand the document past 16 MiB"),
        "{lines:?}"
    );
    // Far below the seconds and gigabytes an unbounded expansion takes.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn documents_after_the_first_are_refused_not_ignored() {
    one_problem(
        &format!("{PROBE}---\nprobes:\n  - name: other\n    kind: process\n    pid: 1\n"),
        "F:5:1: a second YAML document starts here; depwatch reads one document per file (remove this `---` (and what follows) or merge it into the first document)",
    );
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let (code, lines) = check(&format!("\u{feff}{PROBE}"), &[]);
    assert_eq!((code, lines), (0, vec![]));
}

#[test]
fn a_file_that_is_not_utf8_is_refused_at_the_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dw.yml");
    let mut bytes = PROBE.as_bytes().to_vec();
    bytes.extend_from_slice(b"    jitter: 1\xffs\n");
    std::fs::write(&path, bytes).unwrap();
    let (code, out) = check_config(&path, &[]);
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains(&format!(
            "{}:5:14: the file is not valid UTF-8 (byte 0xff at offset 67) (save the file as UTF-8)",
            path.display()
        )),
        "{out}"
    );
}

#[test]
fn oversized_config_and_secret_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yml");
    let mut text = String::from(PROBE);
    text.push_str(&"# padding\n".repeat(900_000));
    std::fs::write(&path, text).unwrap();
    let (code, out) = check_config(&path, &[]);
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains("the file is larger than 8 MiB, the limit for a configuration"),
        "{out}"
    );
    // /dev/zero never ends: the read must.
    let (code, lines) = check(
        &format!("auth:\n  admin_token_file: /dev/zero\n{PROBE}"),
        &[],
    );
    assert_eq!(code, 64);
    assert_eq!(
        lines,
        vec![
            "F:2:3: auth.admin_token_file: cannot read secret file /dev/zero: larger than 64 KiB (check the path and that depwatch may read it)"
        ]
    );
}

#[test]
fn values_from_the_environment_are_never_echoed_in_any_error() {
    const SECRET: &str = "RTypoPwSECRET";
    let redis_url = format!("rediss//:{SECRET}@host:6379");
    let mongo_uri = format!("user:{SECRET}@db.internal:27017");
    let bad = format!("x/{SECRET}");
    let yaml = "listen: ${DW_T_BAD}\n\
        health: {cache_ttl: \"${DW_T_BAD}\"}\n\
        probes:\n\
        \x20 - name: ${DW_T_BAD}\n    kind: process\n    self: true\n\
        \x20 - name: k\n    kind: ${DW_T_BAD}\n\
        \x20 - name: r\n    kind: redis\n    url: ${DW_T_REDIS}\n\
        \x20 - name: m\n    kind: mongodb\n    uri: ${DW_T_MONGO}\n\
        \x20 - name: h\n    kind: http\n    url: http://127.0.0.1:1/\n    expect: {status: [\"${DW_T_BAD}\"], max_body_bytes: \"${DW_T_BAD}\"}\n";
    let env = [
        ("DW_T_BAD", bad.as_str()),
        ("DW_T_REDIS", redis_url.as_str()),
        ("DW_T_MONGO", mongo_uri.as_str()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dw.yml");
    std::fs::write(&path, yaml).unwrap();
    let (code, out) = check_config(&path, &env);
    assert_eq!(code, 64, "{out}");
    assert!(!out.contains(SECRET), "a secret was printed:\n{out}");
    for key in [
        "listen",
        "health.cache_ttl",
        "probes[0].name",
        "probes[1].kind",
        "probes[2].url",
        "probes[3].uri",
        "probes[4].expect.max_body_bytes",
        "probes[4].expect.status[0]",
    ] {
        assert!(
            out.contains(&format!(": {key}: ")),
            "no problem at {key}:\n{out}"
        );
    }

    // The same URLs, valid enough to pass the checks, in the start-up error.
    let yaml = "probes:\n  - name: r\n    kind: redis\n    url: ${DW_T_REDIS}\n";
    let (dir, _port, path) = write_config(yaml);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_depwatch"))
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .envs(env)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(!text.contains(SECRET), "a secret was printed:\n{text}");
}

/// The peak resident memory of a process, from /proc (kB).
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn hostile_reloads_keep_the_daemon_and_its_configuration() {
    let dw = Depwatch::start(PROBE).await;
    let within = std::time::Duration::from_secs(10);
    dw.wait_metrics("the first check", within, |m| {
        m.get("depwatch_up", &[("component", "me"), ("kind", "process")])
            .is_some()
    })
    .await;
    let mut bomb = String::from("x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        let refs = vec![format!("*x{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("x{i}: &x{i} [{refs}]\n"));
    }
    for (what, yaml) in [
        (
            "an out-of-range interval",
            format!("{PROBE}    interval: 18446744073709551616s\n"),
        ),
        (
            "an out-of-range stuck_after",
            format!(
                "{PROBE}  - name: q\n    kind: redis\n    url: redis://127.0.0.1:1\n    queues:\n      - {{type: list, key: jobs, stuck_after: 9999999999999999d}}\n"
            ),
        ),
        ("an alias bomb", format!("{bomb}{PROBE}")),
        ("a second document", format!("{PROBE}---\nprobes: []\n")),
    ] {
        dw.rewrite_config(&yaml);
        dw.proc.signal("HUP");
        // The refusal is logged; the daemon still answers with the old probe.
        wait_for(what, within, || async {
            (dw.log().matches("Configuration reload refused").count() > 0).then_some(())
        })
        .await;
        let (code, body) = dw.post("/-/reload", None).await;
        assert_eq!(code, 400, "{what}: {body}");
        let (code, h) = dw.health("").await;
        assert_eq!(code, 200, "{what}: {h}");
        assert!(h["components"]["me"].is_object(), "{what}: {h}");
    }
    let m = dw.metrics().await;
    assert_eq!(m.value("depwatch_config_last_reload_successful", &[]), 0.0);
    // Refused before any expansion: nowhere near the gigabytes a bomb takes.
    let peak = peak_rss_kb(dw.proc.pid());
    assert!(peak > 0 && peak < 200_000, "peak RSS {peak} kB");
}
