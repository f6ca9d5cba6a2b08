//! Configuration errors: every problem of a file, each with its file,
//! line, column, key path and a hint. The cases run through the loader in
//! process (one table); a few run `depwatch check-config` and the daemon
//! for the exit code and what reaches stdout and stderr.

use std::path::Path;
use std::time::{Duration, Instant};

use depwatch::config::{self, ConfigError};

use crate::support::*;

/// Runs check-config on `yaml` and returns (exit code, the problem lines
/// with the file name replaced by `F`, the whole output).
fn check(yaml: &str, env: &[(&str, &str)]) -> (i32, Vec<String>, String) {
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
    (code, lines, out)
}

/// Loads `src` in process as the file `F` (relative paths against `base`),
/// with `env` as the whole environment: Ok, or the problem lines.
fn load(src: &str, env: &[(&str, &str)], base: &Path) -> Result<config::Config, Vec<String>> {
    let env = |k: &str| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string())
    };
    config::from_str(src, "F", None, base, &env).map_err(|e| match e {
        ConfigError::Invalid { rendered } => rendered,
        other => panic!("not a list of problems: {other}"),
    })
}

/// Whether `line` is `want`, where `…` in `want` stands for any text.
fn matches(want: &str, line: &str) -> bool {
    let mut parts = want.split('…');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let mut parts = parts.peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

const PROBE: &str = "probes:\n  - name: me\n    kind: process\n    self: true\n";

/// Nine levels of ten aliases: a billion strings once expanded.
fn alias_bomb() -> String {
    let mut yaml = String::from("x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        let refs = vec![format!("*x{}", i - 1); 10].join(", ");
        yaml.push_str(&format!("x{i}: &x{i} [{refs}]\n"));
    }
    yaml
}

/// A row of the table: what, the YAML, the environment, the problems.
type Case = (
    &'static str,
    String,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

/// Each bad configuration and every problem it reports, in order (`F` is
/// the file; `…` any text, where the full line would list every kind).
#[test]
fn bad_configurations_report_every_problem_with_a_position() {
    let cases: Vec<Case> = vec![
        (
            "unknown top-level key suggests the right one",
            format!("listen: 127.0.0.1:9\nstate_dri: /tmp\n{PROBE}"),
            &[],
            &["F:2:1: state_dri: unknown key `state_dri` (did you mean `state_dir`?)"],
        ),
        (
            "unknown probe key",
            format!("{PROBE}    colour: red\n"),
            &[],
            &[
                "F:5:5: probes[0].colour: unknown key `colour` (known keys: buckets, critical, failure_threshold, interval, jitter, kind, memory_degraded_above, memory_unhealthy_above, name, pid, pidfile, process_name, self, success_threshold, tags, timeout)",
            ],
        ),
        (
            "log rule keys that need a duration, a bad invalidates target",
            format!(
                "{PROBE}    tags: [partners]\n  - name: app-log\n    kind: log\n    files: [/tmp/x.log]\n    rules:\n      - metric: syncs\n        invalidates: [mee, \"tag:partner\", \"tag:\", me, \"tag:partners\"]\n        latency_quantile: 0.99\n        group_by: [action]\n        latency_warn: 1s\n"
            ),
            &[],
            &[
                "F:11:43: probes[1].rules[0].invalidates[2]: invalid target `tag:` (a probe name, or tag:NAME for every probe with that tag)",
                "F:13:9: probes[1].rules[0].group_by: group_by needs a duration (add duration: { field: ... } to the rule)",
                "F:14:9: probes[1].rules[0].latency_warn: latency_warn needs a duration (add duration: { field: ... } to the rule)",
            ],
        ),
        (
            "invalidates names checked against every probe and tag",
            format!(
                "{PROBE}    tags: [partners, bad tag]\n  - name: app-log\n    kind: log\n    files: [/tmp/x.log]\n    rules:\n      - metric: syncs\n        invalidates: [mee, \"tag:partner\", me, \"tag:partners\"]\n        duration: {{ field: d }}\n        group_by: [action]\n        latency_warn: 1s\n"
            ),
            &[],
            &[
                "F:5:22: probes[0].tags[1]: invalid tag `bad tag` (use 1 to 64 letters, digits, '-', '_' or '.')",
                "F:11:23: probes[1].rules[0].invalidates[0]: no probe named `mee` (did you mean `me`? (or tag:NAME for a tag))",
                "F:11:28: probes[1].rules[0].invalidates[1]: no probe has the tag `partner` (did you mean `partners`?)",
            ],
        ),
        (
            "events: stream cap and heartbeat out of range, unknown key",
            format!("events:\n  max_streams: 0\n  heartbeat: 10m\n  max_stream: 5\n{PROBE}"),
            &[],
            &[
                "F:2:3: events.max_streams: max_streams 0 is out of range (use 1 to 4096: each open status page holds one stream)",
                "F:3:3: events.heartbeat: heartbeat 10m is out of range (use 1s to 5m: proxies close streams idle for about a minute)",
                "F:4:3: events.max_stream: unknown key `max_stream` (did you mean `max_streams`?)",
            ],
        ),
        (
            "histogram buckets: out of order, not positive, not numbers, too many, none",
            format!(
                "defaults:\n  buckets: [0.1, 2, 1, 1, -3, inf]\n{PROBE}    buckets: []\n  - name: other\n    kind: process\n    self: true\n    buckets: [0.5, 0s]\n  - name: many\n    kind: process\n    self: true\n    buckets: [{}]\n",
                (1..=41)
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &[],
            &[
                "F:2:21: defaults.buckets[2]: bucket `1` is not above the one before it (`2`) (list the bounds in increasing order, each once)",
                "F:2:24: defaults.buckets[3]: bucket `1` is not above the one before it (`1`) (list the bounds in increasing order, each once)",
                "F:2:27: defaults.buckets[4]: bucket `-3` is not a positive number of seconds (upper bounds in seconds, e.g. [0.1, 0.5, 2, 5] (+Inf is always added))",
                "F:2:31: defaults.buckets[5]: bucket `inf` is not a positive number of seconds (upper bounds in seconds, e.g. [0.1, 0.5, 2, 5] (+Inf is always added))",
                "F:7:5: probes[0].buckets: no buckets (list at least one: upper bounds in seconds, e.g. [0.1, 0.5, 2, 5] (+Inf is always added))",
                "F:11:20: probes[1].buckets[1]: expected a number, found `0s`",
                "F:15:5: probes[2].buckets: 41 buckets, more than 40 (each bucket is one more series per component: keep the bounds your alerts and dashboards use)",
            ],
        ),
        (
            "unknown kind",
            "probes:\n  - name: db\n    kind: oracle\n".into(),
            &[],
            &["F:3:5: probes[0].kind: unknown kind `oracle` (known kinds: …process…"],
        ),
        (
            "duplicate probe names",
            format!("{PROBE}  - name: me\n    kind: process\n    pid: 1\n"),
            &[],
            &[
                "F:5:5: probes[1].name: duplicate probe name `me` (already used at line 2; probe names must be unique)",
            ],
        ),
        (
            "timeout not below interval",
            format!("{PROBE}    interval: 5s\n    timeout: 10s\n"),
            &[],
            &[
                "F:6:5: probes[0].timeout: timeout 10s is not shorter than interval 5s (a check must end before the next one starts: lower timeout or raise interval)",
            ],
        ),
        (
            "a slow limit a check can never reach",
            "probes:\n  - name: api\n    kind: http\n    url: http://127.0.0.1:1/\n    timeout: 2s\n    slow_above: 2s\n  - name: api2\n    kind: http\n    url: http://127.0.0.1:1/\n    slow_above: 10s\n".into(),
            &[],
            &[
                "F:6:5: probes[0].slow_above: slow_above 2s is not shorter than timeout 2s (a check is cut at its timeout, so it could never be slow: lower slow_above or raise timeout)",
                "F:10:5: probes[1].slow_above: slow_above 10s is not shorter than timeout 5s (the built-in default) (a check is cut at its timeout, so it could never be slow: lower slow_above or raise timeout)",
            ],
        ),
        (
            "what a shell would expand is named, not read as a directory `~`",
            "state_dir: ~/dw\nprobes:\n  - name: a\n    kind: log\n    files: [~/app.log, \"$LOGS/*.log\", \"${HOME}/x.log\"]\n    rules: [{ metric: m, match: { level: info } }]\n  - name: b\n    kind: storage\n    path: ~bob/data\n  - name: c\n    kind: process\n    pidfile: $RUN/app.pid\n".into(),
            &[("HOME", "/home/u")],
            &[
                "F:1:1: state_dir: `~` is not expanded: paths are read as written, not by a shell (write the full path, e.g. /home/USER/dw)",
                "F:5:13: probes[0].files[0]: `~` is not expanded: paths are read as written, not by a shell (write the full path, e.g. /home/USER/app.log)",
                "F:5:24: probes[0].files[1]: `$LOGS` is not substituted: only `${NAME}` is (write ${LOGS}/*.log)",
                "F:9:5: probes[1].path: `~bob` is not expanded: paths are read as written, not by a shell (write the full path, e.g. /home/bob/data)",
                "F:12:5: probes[2].pidfile: `$RUN` is not substituted: only `${NAME}` is (write ${RUN}/app.pid)",
            ],
        ),
        (
            "names other tools use are pointed to the names used here",
            "probes:\n  - name: a\n    kind: log\n    paths: [./a.log]\n  - name: b\n    kind: http\n    url: http://127.0.0.1:1/\n    conditions: [\"[STATUS] == 200\"]\n  - name: c\n    kind: disk\n".into(),
            &[],
            &[
                "F:2:5: probes[0].files: missing required key `files`",
                "F:2:5: probes[0].rules: missing required key `rules`",
                "F:4:5: probes[0].paths: unknown key `paths` (did you mean `files`?)",
                "F:8:5: probes[1].conditions: unknown key `conditions` (did you mean `expect`?)",
                "F:10:5: probes[2].kind: unknown kind `disk` (did you mean `storage`?)",
            ],
        ),
        (
            "a bad value in defaults is reported once, at defaults",
            "defaults:\n  interval: 1s\n  jitter: 2s\n  failure_threshold: 0\nprobes:\n  - name: a\n    kind: process\n    self: true\n  - name: b\n    kind: process\n    self: true\n  - name: c\n    kind: process\n    self: true\n    interval: 30s\n    timeout: 10s\n".into(),
            &[],
            &[
                "F:3:3: defaults.jitter: jitter 2s is not shorter than interval 1s (defaults.interval) (a tenth of the interval spreads the load)",
                "F:4:3: defaults.failure_threshold: failure_threshold 0 is out of range (use 1 to 100 consecutive checks)",
            ],
        ),
        (
            "an inherited value that does not fit a probe's own is reported at the probe",
            "defaults:\n  timeout: 10s\nprobes:\n  - name: a\n    kind: process\n    self: true\n    interval: 5s\n  - name: b\n    kind: process\n    self: true\n".into(),
            &[],
            &[
                "F:7:5: probes[0].interval: timeout 10s (defaults.timeout) is not shorter than interval 5s (a check must end before the next one starts: lower timeout or raise interval)",
            ],
        ),
        (
            "HA coordination: scheme, lease range, instance name",
            format!(
                "{PROBE}alerting:\n  coordination: http://127.0.0.1:6379\n  coordination_lease: 500ms\n  instance: a b\n"
            ),
            &[],
            &[
                "F:6:3: alerting.coordination: coordination must be a redis:// or rediss:// URL (e.g. redis://127.0.0.1:6379/0)",
                "F:7:3: alerting.coordination_lease: coordination_lease 500ms is out of range (use 1s to 10m)",
                "F:8:3: alerting.instance: instance must be 1 to 100 characters without spaces (e.g. orders-api-1; the default is HOST:PORT)",
            ],
        ),
        (
            "HA coordination keys without coordination",
            format!("{PROBE}alerting:\n  coordination_group: orders\n"),
            &[],
            &[
                "F:6:3: alerting.coordination_group: coordination_group is set but coordination is not (add coordination: redis://HOST:6379/0, or remove this key)",
            ],
        ),
        (
            "duration without unit",
            format!("{PROBE}    interval: 30\n"),
            &[],
            &[
                "F:5:15: probes[0].interval: duration `30` has no unit (write it like 500ms, 15s, 5m, 1h30m or 7d)",
            ],
        ),
        (
            "size with unknown unit",
            format!("{PROBE}    memory_degraded_above: 3 gigs\n"),
            &[],
            &[
                "F:5:28: probes[0].memory_degraded_above: unknown unit `gigs` in size `3 gigs` (write it like 512MiB, 1GiB or 10GB)",
            ],
        ),
        (
            "threshold out of range",
            format!("{PROBE}    failure_threshold: 0\n"),
            &[],
            &[
                "F:5:5: probes[0].failure_threshold: failure_threshold 0 is out of range (use 1 to 100 consecutive checks)",
            ],
        ),
        (
            "wrong type",
            format!("{PROBE}    critical: maybe\n"),
            &[],
            &["F:5:15: probes[0].critical: expected true or false, found `maybe`"],
        ),
        (
            "unset environment variable",
            format!("auth:\n  admin_token: ${{DW_TEST_UNSET_TOKEN}}\n{PROBE}"),
            &[],
            &[
                "F:2:16: auth.admin_token: environment variable `DW_TEST_UNSET_TOKEN` is not set (export DW_TEST_UNSET_TOKEN=... before starting depwatch)",
            ],
        ),
        (
            // A bad value from the environment is reported without its text: it may be a secret.
            "a bad value from the environment is not echoed",
            format!("{PROBE}    pid: ${{DW_TEST_PID}}\n"),
            &[("DW_TEST_PID", "s3cr3t")],
            &[
                "F:5:10: probes[0].pid: expected a non-negative integer, found a value from the environment",
            ],
        ),
        (
            "missing required key",
            "probes:\n  - kind: process\n    self: true\n".into(),
            &[],
            &["F:2:5: probes[0].name: missing required key `name`"],
        ),
        (
            "process needs exactly one target",
            format!("{PROBE}    pid: 1\n"),
            &[],
            &[
                "F:2:5: probes[0]: more than one way to find the process (set exactly one of `self: true`, `pid`, `pidfile` or `process_name`)",
            ],
        ),
        (
            "invalid regex",
            "probes:\n  - name: app\n    kind: process\n    process_name: \"([a-z\"\n".into(),
            &[],
            &[
                "F:4:5: probes[0].process_name: invalid regex: unclosed character class (process_name is a regular expression, e.g. ^myapp$)",
            ],
        ),
        (
            "YAML syntax error has a position",
            "probes:\n  - name: [unclosed\n    kind: process\n".into(),
            &[],
            &["F:…invalid YAML…"],
        ),
        (
            "secret file that cannot be read",
            format!("auth:\n  admin_token_file: ./does-not-exist\n{PROBE}"),
            &[],
            &[
                "F:2:3: auth.admin_token_file: cannot read secret file ./does-not-exist: No such file or directory (os error 2) (check the path and that depwatch may read it)",
            ],
        ),
        (
            // /dev/zero never ends: the read must.
            "secret file without an end",
            format!("auth:\n  admin_token_file: /dev/zero\n{PROBE}"),
            &[],
            &[
                "F:2:3: auth.admin_token_file: cannot read secret file /dev/zero: larger than 64 KiB (check the path and that depwatch may read it)",
            ],
        ),
        (
            "duplicate key in a probe",
            format!("{PROBE}    self: false\n"),
            &[],
            &["F:5:5: probes[0].self: duplicate key `self` (already set at line 4; keep one)"],
        ),
        (
            "out-of-range durations and sizes",
            format!(
                "health: {{cache_ttl: 18446744073709551616s}}\n{PROBE}    interval: 9999999999999999d\n    memory_degraded_above: 99999999999999999999TB\n"
            ),
            &[],
            &[
                "F:1:21: health.cache_ttl: duration `18446744073709551616s` is out of range (at most 366d) (write it like 500ms, 15s, 5m, 1h30m or 7d)",
                "F:6:15: probes[0].interval: duration `9999999999999999d` is out of range (at most 366d) (write it like 500ms, 15s, 5m, 1h30m or 7d)",
                "F:7:28: probes[0].memory_degraded_above: size `99999999999999999999TB` is out of range (at most 1PiB) (write it like 512MiB, 1GiB or 10GB)",
            ],
        ),
        (
            // Within the parser's range but not sane for the key.
            "durations too long for their key",
            format!("health: {{cache_ttl: 2h}}\n{PROBE}    interval: 2d\n"),
            &[],
            &[
                "F:1:10: health.cache_ttl: cache_ttl 2h is longer than 1h (a stale verdict keeps a dead dependency in rotation: use 1s to 1m)",
                "F:6:5: probes[0].interval: interval 2d is longer than 1d (a dependency checked less than daily is not watched: use 15s to 1h)",
            ],
        ),
        (
            "an alias bomb is refused with a position",
            format!("{}{PROBE}", alias_bomb()),
            &[],
            &["F:6:…aliases expand the document past 16 MiB…"],
        ),
        (
            "documents after the first are refused, not ignored",
            format!("{PROBE}---\nprobes:\n  - name: other\n    kind: process\n    pid: 1\n"),
            &[],
            &[
                "F:5:1: a second YAML document starts here; depwatch reads one document per file (remove this `---` (and what follows) or merge it into the first document)",
            ],
        ),
    ];
    let base = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    for (what, yaml, env, want) in &cases {
        let started = Instant::now();
        let got = match load(yaml, env, base.path()) {
            Ok(_) => vec!["(loaded without a problem)".to_string()],
            Err(lines) => lines,
        };
        // An alias bomb especially: far below the seconds and gigabytes an
        // unbounded expansion takes.
        let took = started.elapsed();
        let ok = got.len() == want.len() && want.iter().zip(&got).all(|(w, g)| matches(w, g));
        // No value from the environment in any problem: it may be a secret.
        let echoed = env.iter().any(|(_, v)| got.iter().any(|l| l.contains(v)));
        if !ok || echoed || took > Duration::from_secs(10) {
            failed.push(format!(
                "{what} ({took:?}):\n  want: {want:#?}\n  got:  {got:#?}\n  for:\n{yaml}"
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn good_configurations_load() {
    let base = tempfile::tempdir().unwrap();
    for (what, yaml, env) in [
        ("a plain file", PROBE.to_string(), &[][..]),
        ("a byte order mark", format!("\u{feff}{PROBE}"), &[]),
        (
            "a value from the environment",
            format!("listen: ${{DW_TEST_LISTEN}}\n{PROBE}"),
            &[("DW_TEST_LISTEN", "127.0.0.1:9")],
        ),
    ] {
        let c = load(&yaml, env, base.path()).unwrap_or_else(|e| panic!("{what}: {e:#?}"));
        assert_eq!(c.probes.len(), 1, "{what}");
    }
}

/// Many probes alike share a template: a YAML anchor on an `x-` extension
/// field (ignored, as in Compose files) merged with `<<`, each probe's own
/// keys winning; a bad value in the template is reported at its line, once
/// for each probe that merges it.
#[test]
fn probes_share_a_template_through_an_anchor_and_merge_keys() {
    let base = tempfile::tempdir().unwrap();
    let yaml = concat!(
        "x-partner: &partner\n",
        "  kind: http\n",
        "  interval: 10s\n",
        "  timeout: 2s\n",
        "  tags: [partners]\n",
        "x-slow: &slow { timeout: 8s }\n",
        "probes:\n",
        "  - <<: *partner\n",
        "    name: billing\n",
        "    url: http://127.0.0.1:1/health\n",
        "  - { <<: [*slow, *partner], name: ledger, url: \"http://127.0.0.1:1/\", interval: 30s }\n",
    );
    let c = load(yaml, &[], base.path()).unwrap_or_else(|e| panic!("{e:#?}"));
    let got: Vec<_> = c
        .probes
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.kind(),
                p.interval.as_secs(),
                p.timeout.as_secs(),
                p.tags.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "billing",
                depwatch::probe::Kind::Http,
                10,
                2,
                vec!["partners".to_string()]
            ),
            (
                "ledger",
                depwatch::probe::Kind::Http,
                30,
                8,
                vec!["partners".to_string()]
            ),
        ]
    );

    let bad = yaml.replace("  timeout: 2s\n", "  timeout: 2 seconds\n");
    let problems = load(&bad, &[], base.path()).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("F:4:12: probes[0].timeout: "),
        "{problems:#?}"
    );
    // Not an extension field: still an unknown key.
    let problems = load(&format!("y-partner: 1\n{PROBE}"), &[], base.path()).unwrap_err();
    assert!(
        problems[0].contains("unknown key `y-partner`"),
        "{problems:#?}"
    );
}

/// The built-in timeout (5 s) fits a shorter interval, as Prometheus
/// caps its default scrape timeout: `interval: 1s` alone is valid; a
/// timeout written anywhere is taken as written and checked.
#[test]
fn the_builtin_timeout_fits_a_short_interval() {
    let base = tempfile::tempdir().unwrap();
    let timeouts = |yaml: &str| -> Vec<Duration> {
        let c = load(yaml, &[], base.path()).unwrap_or_else(|e| panic!("{e:#?}"));
        c.probes.iter().map(|p| p.timeout).collect()
    };
    let two = "probes:\n  - { name: a, kind: process, self: true, interval: 1s }\n  - { name: b, kind: process, self: true }\n";
    assert_eq!(
        timeouts(two),
        [Duration::from_millis(800), Duration::from_secs(5)]
    );
    assert_eq!(
        timeouts(&format!("defaults: {{ interval: 2s }}\n{two}")),
        [Duration::from_millis(800), Duration::from_millis(1600)]
    );
    // Only a shorter interval changes it.
    assert_eq!(
        timeouts("probes:\n  - { name: a, kind: process, self: true, interval: 6s }\n"),
        [Duration::from_secs(5)]
    );
    let problems = load(
        "probes:\n  - { name: a, kind: process, self: true, interval: 1s, timeout: 5s }\n",
        &[],
        base.path(),
    )
    .unwrap_err();
    assert!(
        problems[0].contains("timeout 5s is not shorter than interval 1s"),
        "{problems:#?}"
    );
    // A problem with the fitted value says where it came from.
    let problems = load(
        "probes:\n  - { name: a, kind: http, url: \"http://127.0.0.1:1/\", interval: 1s, slow_above: 900ms }\n",
        &[],
        base.path(),
    )
    .unwrap_err();
    assert!(
        problems[0].contains(
            "slow_above 900ms is not shorter than timeout 800ms (the built-in default: 4/5 of the interval)"
        ),
        "{problems:#?}"
    );
}

/// A probe's check duration buckets: its own, else `defaults.buckets`, else
/// its kind's (partner APIs and millisecond dependencies differ).
#[test]
fn check_duration_buckets_come_from_the_probe_the_defaults_or_the_kind() {
    let base = tempfile::tempdir().unwrap();
    let probes = "probes:\n  - { name: api, kind: http, url: \"http://127.0.0.1:1/\" }\n  - { name: me, kind: process, self: true }\n  - { name: own, kind: process, self: true, buckets: [0.01, 1] }\n";
    let of = |c: &config::Config| -> Vec<Vec<f64>> {
        c.probes.iter().map(|p| p.buckets.to_vec()).collect()
    };
    let c = load(probes, &[], base.path()).unwrap();
    assert_eq!(
        of(&c),
        [
            vec![0.1, 0.5, 2.0, 5.0],
            vec![0.001, 0.005, 0.025, 0.1, 0.5, 2.5],
            vec![0.01, 1.0],
        ]
    );
    let c = load(
        &format!("defaults:\n  buckets: [0.25, 1, 4]\n{probes}"),
        &[],
        base.path(),
    )
    .unwrap();
    assert_eq!(
        of(&c),
        [vec![0.25, 1.0, 4.0], vec![0.25, 1.0, 4.0], vec![0.01, 1.0]]
    );
}

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
    let (code, lines, out) = check(yaml, &[]);
    assert_eq!(code, 64);
    assert_eq!(
        lines,
        vec![
            "F:1:1: listen: invalid listen address `127.0.0.1:99999` (write IP:PORT, e.g. 127.0.0.1:9877, [::1]:9877, or :9877 for every interface)",
            "F:3:3: health.cache_tll: unknown key `cache_tll` (did you mean `cache_ttl`?)",
            "F:5:13: defaults.interval: duration `10` has no unit (write it like 500ms, 15s, 5m, 1h30m or 7d)",
            "F:11:5: probes[0].timeout: timeout 5s is not shorter than interval 5s (a check must end before the next one starts: lower timeout or raise interval)",
            "F:12:5: probes[1].name: duplicate probe name `app` (already used at line 7; probe names must be unique)",
            "F:13:5: probes[1].kind: unknown kind `proces` (did you mean `process`?)",
            "F:17:5: probes[2].failure_threshold: failure_threshold 0 is out of range (use 1 to 100 consecutive checks)",
            "F:18:5: probes[2].memory_degraded_above: memory_degraded_above is not below memory_unhealthy_above (degraded is the earlier warning: make it the lower limit)",
        ]
    );
    assert!(out.ends_with("8 problem(s) found.\n"), "{out}");
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

/// `config::load_file` in process: the problems of a file that `from_str`
/// never sees (its size, its encoding), named by its path.
fn load_file(path: &Path) -> String {
    match config::load_file(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_file_that_is_not_utf8_is_refused_at_the_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dw.yml");
    let mut bytes = PROBE.as_bytes().to_vec();
    bytes.extend_from_slice(b"    jitter: 1\xffs\n");
    std::fs::write(&path, bytes).unwrap();
    let out = load_file(&path);
    assert!(
        out.contains(&format!(
            "{}:5:14: the file is not valid UTF-8 (byte 0xff at offset 67) (save the file as UTF-8)",
            path.display()
        )),
        "{out}"
    );
}

#[test]
fn an_oversized_config_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yml");
    let mut text = String::from(PROBE);
    text.push_str(&"# padding\n".repeat(900_000));
    std::fs::write(&path, text).unwrap();
    let out = load_file(&path);
    assert!(
        out.contains("the file is larger than 8 MiB, the limit for a configuration"),
        "{out}"
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
    let base = tempfile::tempdir().unwrap();
    let out = match load(yaml, &env, base.path()) {
        Ok(_) => panic!("loaded"),
        Err(lines) => lines.join("\n"),
    };
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
    let bomb = alias_bomb();
    for (what, yaml) in [
        (
            "an out-of-range interval",
            format!("{PROBE}    interval: 18446744073709551616s\n"),
        ),
        (
            "an out-of-range stuck_after",
            format!(
                "{PROBE}  - name: q\n    kind: redis\n    url: redis://127.0.0.1:1\n    queues:\n      - {{type: bullmq, name: jobs, stuck_after: 9999999999999999d}}\n"
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
