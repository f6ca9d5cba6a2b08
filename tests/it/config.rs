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
