//! The configuration of a log probe: raw serde structs for its keys (a
//! rule's `match:` tests and `labels:` are read in `conditions.rs`, so that
//! a wrong shape is reported at its line), then the semantic checks — metric
//! and label names, regexes, buckets, group_by and latency levels, and
//! family names that would clash.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

pub use super::conditions::{Pattern, Scalar, Test};
use super::conditions::{RawLabel, RawTest};
use crate::config::check::Checker;
use crate::config::units::{Dur, Size};
use crate::config::yaml::Node;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    files: Vec<String>,
    format: Option<String>,
    start_at: Option<StartAt>,
    max_line_bytes: Option<Size>,
    poll_interval: Option<Dur>,
    time_field: Option<String>,
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    metric: String,
    help: Option<String>,
    #[serde(rename = "match", default)]
    matches: BTreeMap<String, RawTest>,
    #[serde(default)]
    labels: Vec<RawLabel>,
    max_label_values: Option<usize>,
    duration: Option<RawDuration>,
    value: Option<RawValueSpec>,
    slow_above: Option<Dur>,
    top_slowest: Option<usize>,
    stats_window: Option<Dur>,
    #[serde(default)]
    fields: Vec<String>,
    stuck_after: Option<Dur>,
    #[serde(default)]
    group_by: Vec<RawLabel>,
    bucket_width: Option<Dur>,
    latency_warn: Option<Dur>,
    latency_critical: Option<Dur>,
    latency_quantile: Option<f64>,
    latency_min_count: Option<u64>,
    #[serde(default)]
    invalidates: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDuration {
    field: String,
    unit: Option<DurUnit>,
    buckets: Option<Vec<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValueSpec {
    field: String,
    #[serde(rename = "type")]
    kind: Option<ValueKind>,
    name: Option<String>,
}

/// Where to start in a file seen for the first time (no checkpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    End,
    Beginning,
}

/// The unit of a numeric duration field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurUnit {
    Ns,
    Us,
    Ms,
    S,
}

impl DurUnit {
    pub fn seconds(self) -> f64 {
        match self {
            DurUnit::Ns => 1e-9,
            DurUnit::Us => 1e-6,
            DurUnit::Ms => 1e-3,
            DurUnit::S => 1.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    Gauge,
    Counter,
}

/// The validated configuration of a log probe.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub files: Vec<String>,
    pub start_at: StartAt,
    pub max_line_bytes: usize,
    pub poll_interval: Duration,
    pub time_field: Option<String>,
    pub rules: Vec<RuleSpec>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RuleSpec {
    pub metric: String,
    pub help: String,
    pub matches: Vec<(String, Test)>,
    /// (label name, field path)
    pub labels: Vec<(String, String)>,
    pub max_label_values: usize,
    pub duration: Option<DurationSpec>,
    pub value: Option<ValueSpec>,
    pub slow_above: Option<Duration>,
    pub top_slowest: usize,
    pub stats_window: Duration,
    pub fields: Vec<String>,
    pub stuck_after: Option<Duration>,
    /// Per-category latency statistics: (name, field path), capped like labels.
    pub group_by: Vec<(String, String)>,
    /// The width of the latency histogram's buckets in `/api/health`;
    /// `None`: the duration's `buckets`.
    pub bucket_width: Option<Duration>,
    pub levels: Option<LatencyLevels>,
    /// Components (or `tag:T`) whose cached results a matching line drops.
    pub invalidates: Vec<String>,
}

/// `latency_warn` / `latency_critical` on a quantile over the rule's window.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyLevels {
    pub warn: Option<Duration>,
    pub critical: Option<Duration>,
    pub quantile: f64,
    /// Fewer operations than this in the window are not judged.
    pub min_count: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DurationSpec {
    pub field: String,
    pub unit: DurUnit,
    pub buckets: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValueSpec {
    pub field: String,
    pub kind: ValueKind,
    /// The metric is `depwatch_log_<rule>_<name>`.
    pub name: String,
}

/// Buckets for operations from milliseconds to many minutes (partner syncs
/// take over a minute).
pub const DEFAULT_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Families of the probe kind itself (after `depwatch_log_`): rule metrics
/// may not take these names.
const RESERVED: &[&str] = &[
    "lines",
    "read_bytes",
    "rotations",
    "truncations",
    "files",
    "rule_last_match_timestamp_seconds",
    "label_overflows",
    "latency_level",
    "latency_quantile_seconds",
];

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

/// A field path as a label or metric name: `user.id` → `user_id`.
fn sanitize(path: &str) -> String {
    path.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn regex_problem(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or("").trim().to_string();
    format!("invalid regex: {last}")
}

impl Spec {
    pub fn parse(node: &Node, path: &str, c: &Checker, also: &[&'static str]) -> Option<Spec> {
        let raw: Raw = c.parse_kind(node, path, also)?;
        let mut ok = true;
        let mut bad = |p: String, msg: String, hint: &str| {
            c.problem(&p, msg, hint);
            ok = false;
        };
        if raw.files.is_empty() {
            bad(
                format!("{path}.files"),
                "no files to read".into(),
                "e.g. files: [/var/log/app/*.log]",
            );
        }
        let mut files = Vec::new();
        for (i, f) in raw.files.iter().enumerate() {
            let p = c
                .path(&format!("{path}.files[{i}]"), f)
                .display()
                .to_string();
            if let Err(e) = glob::Pattern::new(&p) {
                bad(
                    format!("{path}.files[{i}]"),
                    format!("invalid pattern `{f}`: {}", e.msg),
                    "globs use *, ? and [...]",
                );
            }
            files.push(p);
        }
        if let Some(fmt) = raw.format.as_deref().filter(|f| *f != "json") {
            bad(
                format!("{path}.format"),
                format!("unsupported format `{fmt}`"),
                "only json (one JSON object per line) is read",
            );
        }
        let max_line_bytes = raw.max_line_bytes.map_or(256 * 1024, |s| s.0);
        if !(1024..=64 * 1024 * 1024).contains(&max_line_bytes) {
            bad(
                format!("{path}.max_line_bytes"),
                format!("max_line_bytes {max_line_bytes} is out of range"),
                "use 1KiB to 64MiB",
            );
        }
        let poll_interval = raw
            .poll_interval
            .map_or(Duration::from_millis(250), |d| d.0);
        if poll_interval < Duration::from_millis(10) || poll_interval > Duration::from_secs(60) {
            bad(
                format!("{path}.poll_interval"),
                "poll_interval is out of range".into(),
                "use 10ms to 1m (default 250ms)",
            );
        }
        if raw.rules.is_empty() {
            bad(
                format!("{path}.rules"),
                "no rules".into(),
                "add a rule: - metric: name, match: {...}",
            );
        }
        let mut names: HashMap<String, String> = HashMap::new();
        let mut rules = Vec::new();
        for (i, r) in raw.rules.into_iter().enumerate() {
            let at = format!("{path}.rules[{i}]");
            if let Some(rule) = parse_rule(r, &at, c, &mut names) {
                rules.push(rule);
            } else {
                ok = false;
            }
        }
        ok.then_some(Spec {
            files,
            start_at: raw.start_at.unwrap_or(StartAt::End),
            max_line_bytes: max_line_bytes as usize,
            poll_interval,
            time_field: raw.time_field,
            rules,
        })
    }

    /// The `invalidates` targets of the rules, with their key paths below
    /// the probe (`rules[0].invalidates[1]`).
    pub fn invalidates(&self) -> Vec<(String, String)> {
        self.rules
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                r.invalidates
                    .iter()
                    .enumerate()
                    .map(move |(j, t)| (format!("rules[{i}].invalidates[{j}]"), t.clone()))
            })
            .collect()
    }

    /// Every metric family the rules add (after `depwatch_log_`), with its type.
    pub fn families(&self) -> Vec<(String, FamilyType)> {
        self.rules.iter().flat_map(RuleSpec::families).collect()
    }
}

impl RuleSpec {
    pub fn families(&self) -> Vec<(String, FamilyType)> {
        let mut out = vec![(self.metric.clone(), FamilyType::Counter)];
        if self.duration.is_some() {
            out.push((
                format!("{}_duration_seconds", self.metric),
                FamilyType::Histogram,
            ));
        }
        if let Some(v) = &self.value {
            let t = match v.kind {
                ValueKind::Gauge => FamilyType::Gauge,
                ValueKind::Counter => FamilyType::Counter,
            };
            out.push((format!("{}_{}", self.metric, v.name), t));
        }
        out
    }
}

fn parse_rule(
    r: RawRule,
    at: &str,
    c: &Checker,
    names: &mut HashMap<String, String>,
) -> Option<RuleSpec> {
    let mut ok = true;
    let mut bad = |p: String, msg: String, hint: &str| {
        c.problem(&p, msg, hint);
        ok = false;
    };
    let metric = r.metric.clone();
    if !is_metric_name(&metric) {
        bad(
            format!("{at}.metric"),
            format!("invalid metric name `{metric}`"),
            "use lowercase letters, digits and _, e.g. sync_operations",
        );
    } else if metric.ends_with("_total") {
        bad(
            format!("{at}.metric"),
            format!("metric `{metric}` ends in _total"),
            "depwatch adds _total to counters: drop it",
        );
    }
    let mut matches = Vec::new();
    for (field, t) in r.matches {
        let fp = format!("{at}.match.{field}");
        let test = match t {
            RawTest::Equals(s) => Test::Equals(Scalar::new(s)),
            RawTest::OneOf(list) => {
                if list.is_empty() {
                    bad(
                        fp.clone(),
                        "an empty list matches nothing".into(),
                        "list the accepted values",
                    );
                }
                Test::OneOf(list.into_iter().map(Scalar::new).collect())
            }
            RawTest::Regex(re) => match Regex::new(&re) {
                Ok(re) => Test::Regex(Pattern(re)),
                Err(e) => {
                    bad(
                        fp.clone(),
                        regex_problem(&e),
                        "the value is a regular expression, e.g. ^sync",
                    );
                    continue;
                }
            },
            RawTest::Exists(b) => Test::Exists(b),
        };
        if field.is_empty() || field.split('.').any(str::is_empty) {
            bad(
                fp,
                format!("invalid field path `{field}`"),
                "fields are names, nested ones joined by dots: user.id",
            );
        }
        matches.push((field, test));
    }
    // Cheap tests first: a regex only runs on lines that passed the rest.
    matches.sort_by_key(|(_, t)| matches!(t, Test::Regex(_)));
    let mut labels = Vec::new();
    for (i, l) in r.labels.into_iter().enumerate() {
        let name = l.name.unwrap_or_else(|| sanitize(&l.field));
        let lp = format!("{at}.labels[{i}]");
        if !is_label_name(&name) {
            bad(
                lp,
                format!("invalid label name `{name}`"),
                "letters, digits and _; set { name, field } to rename",
            );
        } else if name == "component" || (name == "le" && r.duration.is_some()) {
            bad(
                lp,
                format!("label `{name}` is reserved"),
                "rename it with { name: other_name, field: ... }",
            );
        } else if labels.iter().any(|(n, _)| *n == name) {
            bad(lp, format!("duplicate label `{name}`"), "each label once");
        } else {
            labels.push((name, l.field));
        }
    }
    let mut group_by: Vec<(String, String)> = Vec::new();
    for (i, l) in r.group_by.into_iter().enumerate() {
        let name = l.name.unwrap_or_else(|| sanitize(&l.field));
        let gp = format!("{at}.group_by[{i}]");
        if !is_label_name(&name) {
            bad(
                gp,
                format!("invalid category name `{name}`"),
                "letters, digits and _; set { name, field } to rename",
            );
        } else if group_by.iter().any(|(n, _)| *n == name) {
            bad(
                gp,
                format!("duplicate category `{name}`"),
                "each field once",
            );
        } else {
            group_by.push((name, l.field));
        }
    }
    if group_by.len() > 4 {
        bad(
            format!("{at}.group_by"),
            format!("{} fields to group by", group_by.len()),
            "use at most 4 fields: every combination is a category",
        );
    }
    let max_label_values = r.max_label_values.unwrap_or(100);
    if !(1..=10_000).contains(&max_label_values) {
        bad(
            format!("{at}.max_label_values"),
            format!("max_label_values {max_label_values} is out of range"),
            "use 1 to 10000; values beyond it are counted as `other`",
        );
    }
    let duration = r.duration.map(|d| {
        let buckets = d.buckets.unwrap_or_else(|| DEFAULT_BUCKETS.to_vec());
        if buckets.is_empty()
            || buckets.iter().any(|b| !b.is_finite() || *b <= 0.0)
            || buckets.windows(2).any(|w| w[0] >= w[1])
        {
            bad(
                format!("{at}.duration.buckets"),
                "buckets must be positive and increasing".into(),
                "seconds, e.g. [0.1, 0.5, 1, 5, 30]",
            );
        }
        DurationSpec {
            field: d.field,
            unit: d.unit.unwrap_or(DurUnit::Ms),
            buckets,
        }
    });
    let value = r.value.map(|v| {
        let name = v
            .name
            .unwrap_or_else(|| sanitize(v.field.rsplit('.').next().unwrap_or("")));
        if !is_metric_name(&name) {
            bad(
                format!("{at}.value.name"),
                format!("invalid metric name `{name}`"),
                "lowercase letters, digits and _",
            );
        }
        ValueSpec {
            field: v.field,
            kind: v.kind.unwrap_or(ValueKind::Gauge),
            name,
        }
    });
    if r.slow_above.is_some() && duration.is_none() {
        bad(
            format!("{at}.slow_above"),
            "slow_above needs a duration".into(),
            "add duration: { field: ... } to the rule",
        );
    }
    let top_slowest = r.top_slowest.unwrap_or(5);
    if !(1..=100).contains(&top_slowest) {
        bad(
            format!("{at}.top_slowest"),
            format!("top_slowest {top_slowest} is out of range"),
            "use 1 to 100",
        );
    }
    let stats_window = r.stats_window.map_or(Duration::from_secs(900), |d| d.0);
    if stats_window < Duration::from_secs(1) {
        bad(
            format!("{at}.stats_window"),
            "stats_window is shorter than 1s".into(),
            "e.g. 15m",
        );
    } else if stats_window > Duration::from_secs(7 * 86_400) {
        bad(
            format!("{at}.stats_window"),
            "stats_window is longer than 7d".into(),
            "percentiles keep the latest 8192 samples anyway: e.g. 15m",
        );
    }
    if r.stuck_after.is_some_and(|d| d.0 < Duration::from_secs(1)) {
        bad(
            format!("{at}.stuck_after"),
            "stuck_after is shorter than 1s".into(),
            "e.g. 30m",
        );
    }
    let needs_duration = |key: &str, bad: &mut dyn FnMut(String, String, &str)| {
        bad(
            format!("{at}.{key}"),
            format!("{key} needs a duration"),
            "add duration: { field: ... } to the rule",
        );
    };
    if duration.is_none() {
        for (key, set) in [
            ("group_by", !group_by.is_empty()),
            ("bucket_width", r.bucket_width.is_some()),
            ("latency_warn", r.latency_warn.is_some()),
            ("latency_critical", r.latency_critical.is_some()),
        ] {
            if set {
                needs_duration(key, &mut bad);
            }
        }
    }
    if r.bucket_width
        .is_some_and(|d| d.0 < Duration::from_micros(1))
    {
        bad(
            format!("{at}.bucket_width"),
            "bucket_width is shorter than 1us".into(),
            "e.g. 100ms",
        );
    }
    let quantile = r.latency_quantile.unwrap_or(0.95);
    if !(quantile > 0.0 && quantile <= 1.0) {
        bad(
            format!("{at}.latency_quantile"),
            format!("latency_quantile {quantile} is out of range"),
            "a fraction above 0 and at most 1, e.g. 0.95 or 0.99",
        );
    }
    if let (Some(w), Some(c)) = (r.latency_warn, r.latency_critical)
        && c.0 <= w.0
    {
        bad(
            format!("{at}.latency_critical"),
            "latency_critical is not above latency_warn".into(),
            "e.g. latency_warn: 500ms, latency_critical: 2s",
        );
    }
    let levels =
        (r.latency_warn.is_some() || r.latency_critical.is_some()).then(|| LatencyLevels {
            warn: r.latency_warn.map(|d| d.0),
            critical: r.latency_critical.map(|d| d.0),
            quantile,
            min_count: r.latency_min_count.unwrap_or(20).max(1),
        });
    if levels.is_none() && (r.latency_quantile.is_some() || r.latency_min_count.is_some()) {
        let key = if r.latency_quantile.is_some() {
            "latency_quantile"
        } else {
            "latency_min_count"
        };
        bad(
            format!("{at}.{key}"),
            format!("{key} without latency_warn or latency_critical"),
            "set latency_warn: 500ms (or latency_critical)",
        );
    }
    for (i, target) in r.invalidates.iter().enumerate() {
        let tag = target.strip_prefix("tag:");
        if target.is_empty() || tag.is_some_and(str::is_empty) {
            bad(
                format!("{at}.invalidates[{i}]"),
                format!("invalid target `{target}`"),
                "a probe name, or tag:NAME for every probe with that tag",
            );
        }
    }
    let spec = RuleSpec {
        group_by,
        bucket_width: r.bucket_width.map(|d| d.0),
        levels,
        invalidates: r.invalidates,
        help: r
            .help
            .unwrap_or_else(|| format!("Log lines matching rule {metric}.")),
        metric,
        matches,
        labels,
        max_label_values,
        duration,
        value,
        slow_above: r.slow_above.map(|d| d.0),
        top_slowest,
        stats_window,
        fields: r.fields,
        stuck_after: r.stuck_after.map(|d| d.0),
    };
    for (family, _) in spec.families() {
        if RESERVED.contains(&family.as_str()) {
            bad(
                format!("{at}.metric"),
                format!("depwatch_log_{family} is one of depwatch's own metrics"),
                "choose another metric name",
            );
        } else if let Some(prev) = names.insert(family.clone(), at.to_string()) {
            bad(
                format!("{at}.metric"),
                format!("depwatch_log_{family} is also made by {prev}"),
                "metric names must be unique within a probe",
            );
        }
    }
    ok.then_some(spec)
}

/// The type of a rule's metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyType {
    Counter,
    Gauge,
    Histogram,
}

impl FamilyType {
    pub fn metric_type(self) -> prometheus_client::metrics::MetricType {
        use prometheus_client::metrics::MetricType;
        match self {
            FamilyType::Counter => MetricType::Counter,
            FamilyType::Gauge => MetricType::Gauge,
            FamilyType::Histogram => MetricType::Histogram,
        }
    }
}
