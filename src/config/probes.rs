//! The `probes:` list and the `modules:` templates: each probe's common keys
//! (name, critical, scheduling, thresholds, tags) with its kind's own keys
//! parsed by the kind's `Spec::parse`, and each `/probe` module as an http
//! probe without a URL plus its `allowed_targets`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::check::Checker;
use super::suggest::suggest;
use super::units::{self, Dur};
use super::yaml::{self, Node};
use super::{MAX_BUCKETS, MAX_INTERVAL, MIN_INTERVAL, ProbeConfig, RawDefaults};
use super::{de, refs};
use crate::net::TargetPattern;
use crate::probe::http::Module;
use crate::probe::{self, Kind};

/// The keys every probe has, whatever its kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommon {
    name: String,
    #[serde(default = "yes")]
    critical: bool,
    interval: Option<Dur>,
    timeout: Option<Dur>,
    jitter: Option<Dur>,
    failure_threshold: Option<u32>,
    success_threshold: Option<u32>,
    #[serde(default)]
    tags: Vec<String>,
    buckets: Option<Vec<f64>>,
}

/// A module's own keys; the rest are http probe keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModule {
    timeout: Option<Dur>,
    allowed_targets: Option<Vec<String>>,
}

const MODULE_KEYS: &[&str] = &["timeout", "allowed_targets"];

fn yes() -> bool {
    true
}

/// Where a probe's scheduling value comes from.
#[derive(Clone, Copy)]
enum Source {
    Probe,
    Defaults,
    BuiltIn,
    /// The built-in timeout made to fit a short interval (4/5 of it).
    Fitted,
}

impl Source {
    fn of<T, U>(own: &Option<T>, default: &Option<U>) -> Source {
        match (own, default) {
            (Some(_), _) => Source::Probe,
            (None, Some(_)) => Source::Defaults,
            (None, None) => Source::BuiltIn,
        }
    }

    /// The key path of the value: the probe's own, else the defaults'. A
    /// value the probe does not set is reported where it is set, once at
    /// `defaults.KEY`, not once per probe that inherits it (10,000 probes
    /// would print 10,000 lines for one bad line). A built-in default is
    /// never wrong on its own: it stays with the probe.
    fn key(self, probe: &str, key: &str) -> String {
        match self {
            Source::Defaults => format!("defaults.{key}"),
            Source::Probe | Source::BuiltIn | Source::Fitted => format!("{probe}.{key}"),
        }
    }

    /// Words after an inherited value in a problem reported elsewhere.
    fn note(self, key: &str, at: &str) -> String {
        match self {
            Source::Probe => String::new(),
            Source::Defaults if at == format!("defaults.{key}") => String::new(),
            Source::Defaults => format!(" (defaults.{key})"),
            Source::BuiltIn => " (the built-in default)".into(),
            Source::Fitted => " (the built-in default: 4/5 of the interval)".into(),
        }
    }
}

impl Checker<'_> {
    /// A probe's `key` (its timeout or jitter) is not shorter than its
    /// interval: reported at that key, unless the probe's own interval or a
    /// built-in value makes the pair wrong, then at the interval.
    fn not_below_interval(
        &self,
        path: &str,
        (key, value, source): (&str, Duration, Source),
        (interval, s_interval): (Duration, Source),
        hint: &str,
    ) {
        let at = match (source, s_interval) {
            (Source::BuiltIn, _) | (Source::Defaults, Source::Probe) => {
                s_interval.key(path, "interval")
            }
            _ => source.key(path, key),
        };
        self.problem(
            &at,
            format!(
                "{key} {}{} is not shorter than interval {}{}",
                units::format_duration(value),
                source.note(key, &at),
                units::format_duration(interval),
                s_interval.note("interval", &at),
            ),
            hint,
        );
    }

    pub(super) fn probes(&self, defaults: &RawDefaults) -> Vec<Arc<ProbeConfig>> {
        let Some(list) = self.root.get("probes") else {
            self.problem(
                "probes",
                "no probes configured",
                "add at least one probe under `probes:`",
            );
            return Vec::new();
        };
        let yaml::Value::Seq(items) = &list.value else {
            if !matches!(list.value, yaml::Value::Null) {
                self.problem(
                    "probes",
                    "expected a list of probes",
                    "each item starts with `- name: ...`",
                );
            } else {
                self.problem(
                    "probes",
                    "no probes configured",
                    "add at least one probe under `probes:`",
                );
            }
            return Vec::new();
        };
        let d_interval = defaults.interval.map_or(Duration::from_secs(15), |d| d.0);
        let d_timeout = defaults.timeout.map_or(Duration::from_secs(5), |d| d.0);
        let d_buckets: Option<Arc<[f64]>> = defaults
            .buckets
            .as_deref()
            .filter(|b| self.buckets("defaults.buckets", b))
            .map(Arc::from);
        // A kind's default buckets, one copy for all its probes (a
        // histogram writer formats a bucket list once, not per series).
        let mut kind_buckets: HashMap<Kind, Arc<[f64]>> = HashMap::new();
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        // The key path of each probe in `out` (a probe that did not parse leaves a gap).
        let mut paths = Vec::new();
        let common = de::fields_of::<RawCommon>();
        for (i, node) in items.iter().enumerate() {
            let path = format!("probes[{i}]");
            if !node.is_map() {
                self.problem(&path, "expected a probe (a mapping with name and kind)", "");
                continue;
            }
            if let Some(name) = node.get("name").and_then(Node::scalar) {
                let line = node.mark_of("name").line;
                if let Some(first) = seen.insert(name.to_string(), line) {
                    self.problem(
                        &format!("{path}.name"),
                        format!("duplicate probe name `{name}`"),
                        format!("already used at line {first}; probe names must be unique"),
                    );
                }
            }
            let kind_name = node.get("kind").and_then(Node::scalar);
            let Some(kind_name) = kind_name else {
                self.problem(
                    &path,
                    "missing required key `kind`",
                    format!("one of: {}", probe::KIND_NAMES.join(", ")),
                );
                continue;
            };
            let Some(kind) = Kind::from_name(kind_name) else {
                self.problem(
                    &format!("{path}.kind"),
                    format!("unknown kind `{kind_name}`"),
                    suggest(kind_name, probe::KIND_NAMES, "kinds"),
                );
                continue;
            };
            let raw: Option<RawCommon> =
                de::parse(node, &path, self.ctx, &|k| common.contains(&k), &[]);
            let mut also: Vec<&'static str> = common.to_vec();
            also.push("kind");
            let spec = probe::parse_spec(kind, node, &path, self, &also);
            let Some(raw) = raw else { continue };
            if raw.name.is_empty()
                || raw.name.len() > 64
                || !raw
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                self.problem(
                    &format!("{path}.name"),
                    format!("invalid probe name `{}`", raw.name),
                    "use 1 to 64 letters, digits, '-', '_' or '.'",
                );
            }
            let interval = raw.interval.map_or(d_interval, |d| d.0);
            let s_interval = Source::of(&raw.interval, &defaults.interval);
            let mut s_timeout = Source::of(&raw.timeout, &defaults.timeout);
            let mut timeout = raw.timeout.map_or(d_timeout, |d| d.0);
            // The built-in timeout fits a short interval (4/5 of it), as
            // Prometheus caps its default scrape timeout at the interval:
            // `interval: 1s` alone is a valid probe.
            if matches!(s_timeout, Source::BuiltIn)
                && interval >= MIN_INTERVAL
                && timeout >= interval
            {
                timeout = interval * 4 / 5;
                s_timeout = Source::Fitted;
            }
            if interval < MIN_INTERVAL {
                self.problem(
                    &s_interval.key(&path, "interval"),
                    "interval is shorter than 100ms",
                    "checks that often would load the dependency",
                );
            } else if interval > MAX_INTERVAL {
                self.problem(
                    &s_interval.key(&path, "interval"),
                    format!(
                        "interval {} is longer than {}",
                        units::format_duration(interval),
                        units::format_duration(MAX_INTERVAL)
                    ),
                    "a dependency checked less than daily is not watched: use 15s to 1h",
                );
            }
            if timeout.is_zero() {
                self.problem(
                    &s_timeout.key(&path, "timeout"),
                    "timeout must be above zero",
                    "e.g. 5s",
                );
            } else if timeout >= interval {
                self.not_below_interval(
                    &path,
                    ("timeout", timeout, s_timeout),
                    (interval, s_interval),
                    "a check must end before the next one starts: lower timeout or raise interval",
                );
            }
            let failure_threshold = raw
                .failure_threshold
                .or(defaults.failure_threshold)
                .unwrap_or(3);
            let success_threshold = raw
                .success_threshold
                .or(defaults.success_threshold)
                .unwrap_or(1);
            for (key, v, source) in [
                (
                    "failure_threshold",
                    failure_threshold,
                    Source::of(&raw.failure_threshold, &defaults.failure_threshold),
                ),
                (
                    "success_threshold",
                    success_threshold,
                    Source::of(&raw.success_threshold, &defaults.success_threshold),
                ),
            ] {
                if !(1..=100).contains(&v) {
                    self.problem(
                        &source.key(&path, key),
                        format!("{key} {v} is out of range"),
                        "use 1 to 100 consecutive checks",
                    );
                }
            }
            let jitter = raw
                .jitter
                .map(|d| d.0)
                .or(defaults.jitter.map(|d| d.0))
                .unwrap_or_else(|| (interval / 10).min(Duration::from_secs(5)));
            if jitter >= interval {
                self.not_below_interval(
                    &path,
                    ("jitter", jitter, Source::of(&raw.jitter, &defaults.jitter)),
                    (interval, s_interval),
                    "a tenth of the interval spreads the load",
                );
            }
            for (t, tag) in raw.tags.iter().enumerate() {
                if !refs::is_tag(tag) {
                    self.problem(
                        &format!("{path}.tags[{t}]"),
                        format!("invalid tag `{tag}`"),
                        "use 1 to 64 letters, digits, '-', '_' or '.'",
                    );
                }
            }
            let buckets = match raw.buckets.as_deref() {
                Some(b) => {
                    self.buckets(&format!("{path}.buckets"), b);
                    Arc::from(b)
                }
                None => d_buckets.clone().unwrap_or_else(|| {
                    kind_buckets
                        .entry(kind)
                        .or_insert_with(|| Arc::from(kind.buckets()))
                        .clone()
                }),
            };
            // A check is cut at its timeout: a slow limit at or above it
            // could never be crossed.
            if let Some(probe::ProbeSpec::Http(h)) = &spec
                && let Some(slow) = h.slow_above.filter(|s| *s >= timeout)
            {
                let at = format!("{path}.slow_above");
                self.problem(
                    &at,
                    format!(
                        "slow_above {} is not shorter than timeout {}{}",
                        units::format_duration(slow),
                        units::format_duration(timeout),
                        s_timeout.note("timeout", &at),
                    ),
                    "a check is cut at its timeout, so it could never be slow: lower slow_above or raise timeout",
                );
            }
            if let Some(spec) = spec {
                paths.push(path);
                out.push(Arc::new(ProbeConfig {
                    tags: raw.tags,
                    buckets,
                    name: raw.name,
                    critical: raw.critical,
                    interval,
                    timeout,
                    jitter,
                    failure_threshold,
                    success_threshold,
                    spec,
                }));
            }
        }
        let refs: Vec<refs::Refs<'_>> = out
            .iter()
            .zip(&paths)
            .map(|(p, path)| refs::Refs {
                path,
                name: &p.name,
                tags: &p.tags,
                invalidates: p.spec.invalidates(),
            })
            .collect();
        self.references(&refs);
        out
    }

    /// Whether `list` (at key path `at`) are fit buckets for a histogram:
    /// 1 to [`MAX_BUCKETS`] finite upper bounds above 0, each above the one
    /// before it; every problem is reported.
    fn buckets(&self, at: &str, list: &[f64]) -> bool {
        let example = "upper bounds in seconds, e.g. [0.1, 0.5, 2, 5] (+Inf is always added)";
        if list.is_empty() {
            self.problem(at, "no buckets", format!("list at least one: {example}"));
            return false;
        }
        if list.len() > MAX_BUCKETS {
            self.problem(
                at,
                format!("{} buckets, more than {MAX_BUCKETS}", list.len()),
                "each bucket is one more series per component: keep the bounds your alerts and dashboards use",
            );
            return false;
        }
        let mut fit = true;
        for (i, &v) in list.iter().enumerate() {
            let here = format!("{at}[{i}]");
            if !(v.is_finite() && v > 0.0) {
                self.problem(
                    &here,
                    format!("bucket `{v}` is not a positive number of seconds"),
                    example,
                );
                fit = false;
            } else if let Some(&prev) = list[..i].last().filter(|p| v <= **p) {
                self.problem(
                    &here,
                    format!("bucket `{v}` is not above the one before it (`{prev}`)"),
                    "list the bounds in increasing order, each once",
                );
                fit = false;
            }
        }
        fit
    }

    /// `modules:`, a mapping of names to http probe templates, each with
    /// the URL patterns it may probe (`allowed_targets`, required).
    pub(super) fn modules(&self, defaults: &RawDefaults) -> BTreeMap<String, Module> {
        let mut out = BTreeMap::new();
        let Some(node) = self.root.get("modules") else {
            return out;
        };
        let yaml::Value::Map(entries) = &node.value else {
            if !matches!(node.value, yaml::Value::Null) {
                self.problem(
                    "modules",
                    "expected a mapping of module names to http probe templates",
                    "e.g. modules: { partner_2xx: { allowed_targets: [\"https://*.partner.example/*\"] } }",
                );
            }
            return out;
        };
        let d_timeout = defaults.timeout.map_or(Duration::from_secs(5), |d| d.0);
        for (k, v) in entries {
            let name = k.scalar().unwrap_or("").to_string();
            let path = format!("modules.{name}");
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                self.problem(
                    &path,
                    format!("invalid module name `{name}`"),
                    "use 1 to 64 letters, digits, '-', '_' or '.'",
                );
                continue;
            }
            if !v.is_map() && !matches!(v.value, yaml::Value::Null) {
                self.problem(&path, "expected an http probe template (a mapping)", "");
                continue;
            }
            let raw: Option<RawModule> =
                de::parse(v, &path, self.ctx, &|k| MODULE_KEYS.contains(&k), &[]);
            let spec = probe::http::Spec::parse_template(v, &path, self, MODULE_KEYS);
            let Some(raw) = raw else { continue };
            let timeout = raw.timeout.map_or(d_timeout, |d| d.0);
            if timeout.is_zero() {
                self.problem(
                    &format!("{path}.timeout"),
                    "timeout must be above zero",
                    "e.g. 5s",
                );
            }
            let Some(list) = raw.allowed_targets.filter(|l| !l.is_empty()) else {
                self.problem(
                    &path,
                    "missing required key `allowed_targets`",
                    "list the URLs this module may probe, e.g. [\"https://*.partner.example/*\"]: an open prober is a proxy into your network",
                );
                continue;
            };
            let mut allowed_targets = Vec::new();
            for (i, p) in list.iter().enumerate() {
                match TargetPattern::parse(p) {
                    Ok(t) => allowed_targets.push(t),
                    Err(e) => self.problem(
                        &format!("{path}.allowed_targets[{i}]"),
                        format!("invalid pattern `{p}`: {e}"),
                        "e.g. https://*.partner.example/* or http://127.0.0.1:*/*",
                    ),
                }
            }
            if let Some(spec) = spec {
                out.insert(
                    name,
                    Module {
                        timeout,
                        allowed_targets,
                        spec,
                    },
                );
            }
        }
        out
    }
}
