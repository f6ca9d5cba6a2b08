//! The log line engine: any line against rules that use every field type
//! (labels, durations in each unit and Go's syntax, values, timestamps).
//! A line is invalid exactly when serde_json does not take it for one
//! object, bytes that are not UTF-8 read as U+FFFD (the engine scans lines
//! with its own validating pass).
#![no_main]
use std::sync::OnceLock;

use depwatch::probe::ProbeSpec;
use depwatch::probe::log::Spec;
use depwatch::probe::log::rules::{Engine, LineKind};
use libfuzzer_sys::fuzz_target;

const YAML: &str = r#"
probes:
  - name: app
    kind: log
    files: [/nonexistent/app.log]
    time_field: ts
    rules:
      - metric: requests
        match: { msg: request, status: [200, "503"], http.route: { regex: "^/o" } }
        labels: [status, { name: route, field: http.route }]
        max_label_values: 20
        duration: { field: latency, unit: ms }
        slow_above: 1s
        fields: [user]
      - metric: jobs
        match: { event: done, error: { exists: false } }
        duration: { field: took, unit: s }
      - metric: bytes
        match: { kind: io }
        value: { field: size, type: counter }
      - metric: depth
        match: { msg: queue depth }
        value: { field: depth, type: gauge }
      - metric: errors
        match: { level: error }
"#;

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let c =
            depwatch::config::from_str(YAML, "fuzz", None, std::path::Path::new("."), &|_| None)
                .expect("the fuzz configuration is valid");
        match &c.probes[0].spec {
            ProbeSpec::Log(s) => s.clone(),
            _ => unreachable!(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let mut e = Engine::new(spec());
    let now = std::time::Instant::now().into();
    for line in data.split(|b| *b == b'\n') {
        let kind = e.line(line, now, 1.7e9);
        // Bytes that are not UTF-8 read as U+FFFD: valid inside a string,
        // not elsewhere.
        let t = String::from_utf8_lossy(line);
        let object = t.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{')
            && serde_json::from_str::<serde::de::IgnoredAny>(&t).is_ok();
        assert_eq!(kind == LineKind::Invalid, !object, "{:?}", String::from_utf8_lossy(line));
    }
});
