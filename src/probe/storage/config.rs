//! The storage kind's configuration: its own keys (`Raw`), checked into a
//! [`Spec`] with every problem reported (`Spec::parse`), and where the
//! numbers come from (`statvfs` of a path, or a JSON document over HTTP).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::config::check::Checker;
use crate::config::units::{Dur, Secret, format_duration};
use crate::config::yaml::Node;
use crate::net::target::Target;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    path: Option<String>,
    source: Option<String>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, Secret>,
    pointers: Option<RawPointers>,
    warn_percent: Option<f64>,
    critical_percent: Option<f64>,
    forecast_window: Option<Dur>,
    warn_days: Option<f64>,
    critical_days: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPointers {
    total: String,
    used: String,
    available: Option<String>,
    trash: Option<String>,
}

/// Where the numbers come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Statvfs(PathBuf),
    Http(HttpSource),
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpSource {
    pub url: Target,
    /// Values are marked sensitive: `Debug` never shows them.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub total: String,
    pub used: String,
    pub available: Option<String>,
    pub trash: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub source: Source,
    pub warn_percent: f64,
    pub critical_percent: f64,
    pub forecast_window: Duration,
    pub warn_days: f64,
    pub critical_days: f64,
}

impl Spec {
    pub fn parse(node: &Node, path: &str, c: &Checker, also: &[&'static str]) -> Option<Spec> {
        let raw: Raw = c.parse_kind(node, path, also)?;
        let at = |k: &str| format!("{path}.{k}");
        let mut ok = true;
        let source = match raw.source.as_deref() {
            None | Some("statvfs") => {
                if raw.url.is_some() || raw.pointers.is_some() || !raw.headers.is_empty() {
                    c.problem(
                        &at("url"),
                        "`url`, `headers` and `pointers` need `source: http`",
                        "add `source: http`, or watch a local `path`",
                    );
                    ok = false;
                }
                match raw.path {
                    Some(p) if !p.is_empty() => {
                        // Absolute, so that the `path` label says which
                        // directory (`.` of the default says nothing).
                        let p = c.path(&at("path"), &p);
                        let clean: PathBuf = p.components().collect();
                        Some(Source::Statvfs(
                            std::path::absolute(&clean).unwrap_or(clean),
                        ))
                    }
                    _ => {
                        c.problem(
                            path,
                            "missing required key `path`",
                            "the directory whose filesystem to watch, e.g. path: /var/lib/app",
                        );
                        None
                    }
                }
            }
            Some("http") => http_source(&raw, path, c).map(Source::Http),
            Some(other) => {
                c.problem(
                    &at("source"),
                    format!("unknown source `{other}`"),
                    "one of: statvfs (the default, with `path`), http (with `url` and `pointers`)",
                );
                None
            }
        };
        let warn_percent = raw.warn_percent.unwrap_or(80.0);
        let critical_percent = raw.critical_percent.unwrap_or(95.0);
        for (k, v) in [
            ("warn_percent", warn_percent),
            ("critical_percent", critical_percent),
        ] {
            if !(v > 0.0 && v <= 100.0) {
                c.problem(
                    &at(k),
                    format!("{k} {v} is out of range"),
                    "a percentage above 0, at most 100",
                );
                ok = false;
            }
        }
        if warn_percent >= critical_percent {
            // Point at the key the user wrote, not at a default.
            let key = if raw.warn_percent.is_some() {
                "warn_percent"
            } else {
                "critical_percent"
            };
            c.problem(
                &at(key),
                "warn_percent is not below critical_percent",
                "the warning comes first: e.g. 80 and 95",
            );
            ok = false;
        }
        let warn_days = raw.warn_days.unwrap_or(30.0);
        let critical_days = raw.critical_days.unwrap_or(7.0);
        for (k, v) in [("warn_days", warn_days), ("critical_days", critical_days)] {
            if !(v >= 0.0 && v.is_finite()) {
                c.problem(
                    &at(k),
                    format!("{k} {v} must not be negative"),
                    "days until full, e.g. 30 and 7 (0 turns the threshold off)",
                );
                ok = false;
            }
        }
        // 0 turns a days threshold off (a forecast is never 0 days).
        if critical_days > 0.0 && warn_days <= critical_days {
            let key = if raw.warn_days.is_some() {
                "warn_days"
            } else {
                "critical_days"
            };
            c.problem(
                &at(key),
                "warn_days is not above critical_days",
                "the warning comes first: e.g. warn_days: 30, critical_days: 7",
            );
            ok = false;
        }
        let forecast_window = raw
            .forecast_window
            .map_or(Duration::from_secs(7 * 86_400), |d| d.0);
        if forecast_window < Duration::from_secs(60)
            || forecast_window > Duration::from_secs(366 * 86_400)
        {
            c.problem(
                &at("forecast_window"),
                format!(
                    "forecast_window {} is out of range",
                    format_duration(forecast_window)
                ),
                "use 1m to 366d; 7d sees a weekly cycle",
            );
            ok = false;
        }
        let source = source?;
        ok.then_some(Spec {
            source,
            warn_percent,
            critical_percent,
            forecast_window,
            warn_days,
            critical_days,
        })
    }

    /// The `path` label and history key: the directory, or the URL's path
    /// (never the whole URL: labels carry no hosts or queries).
    pub(super) fn target(&self) -> String {
        match &self.source {
            Source::Statvfs(p) => p.display().to_string(),
            Source::Http(h) => h.url.path.split('?').next().unwrap_or("/").to_string(),
        }
    }
}

fn http_source(raw: &Raw, path: &str, c: &Checker) -> Option<HttpSource> {
    let at = |k: &str| format!("{path}.{k}");
    let mut ok = true;
    if raw.path.is_some() {
        c.problem(
            &at("path"),
            "`path` is for the statvfs source",
            "with `source: http` the numbers come from `url`: remove `path`",
        );
        ok = false;
    }
    let url = match raw.url.as_deref() {
        None => {
            c.problem(
                path,
                "missing required key `url`",
                "the endpoint that answers the capacity JSON, e.g. url: http://127.0.0.1:8080/capacity",
            );
            None
        }
        Some(u) => match Target::parse(u) {
            Ok(t) => Some(t),
            Err(e) => {
                c.problem(
                    &at("url"),
                    format!("invalid url: {e}"),
                    "write an absolute http:// or https:// URL; send credentials in `headers`, e.g. Authorization: \"Bearer ${TOKEN}\"",
                );
                None
            }
        },
    };
    let mut headers = Vec::new();
    for (k, v) in &raw.headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v.expose()),
        ) {
            (Ok(name), Ok(mut value)) => {
                value.set_sensitive(true);
                headers.push((name, value));
            }
            (Err(_), _) => {
                c.problem(
                    &at(&format!("headers.{k}")),
                    format!("invalid header name `{k}`"),
                    "",
                );
                ok = false;
            }
            (_, Err(_)) => {
                c.problem(
                    &at(&format!("headers.{k}")),
                    "invalid header value",
                    "header values are printable ASCII",
                );
                ok = false;
            }
        }
    }
    let Some(p) = &raw.pointers else {
        c.problem(
            path,
            "missing required key `pointers`",
            "JSON pointers to the numbers, e.g. pointers: { total: /quota/total, used: /quota/used }",
        );
        return None;
    };
    let mut check_ptr = |k: &str, v: &str| {
        if !(v.is_empty() || v.starts_with('/')) {
            c.problem(
                &at(&format!("pointers.{k}")),
                format!("`{v}` is not a JSON pointer"),
                "a JSON pointer starts with '/', e.g. /quota/used",
            );
            ok = false;
        }
    };
    check_ptr("total", &p.total);
    check_ptr("used", &p.used);
    if let Some(a) = &p.available {
        check_ptr("available", a);
    }
    if let Some(t) = &p.trash {
        check_ptr("trash", t);
    }
    let url = url?;
    ok.then(|| HttpSource {
        url,
        headers,
        total: p.total.clone(),
        used: p.used.clone(),
        available: p.available.clone(),
        trash: p.trash.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Spec, Vec<String>> {
        let text = format!("probes:\n  - name: d\n    kind: storage\n{yaml}");
        match crate::config::from_str(&text, "t.yml", None, std::path::Path::new("/etc"), &|_| {
            Some("s3cr3t".into())
        }) {
            Ok(mut c) => match std::sync::Arc::unwrap_or_clone(c.probes.remove(0)).spec {
                crate::probe::ProbeSpec::Storage(s) => Ok(s),
                other => panic!("{other:?}"),
            },
            Err(crate::config::ConfigError::Invalid { rendered }) => Err(rendered),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn config_defaults_and_relative_paths() {
        let s = parse("    path: data\n").unwrap();
        assert_eq!(s.source, Source::Statvfs(PathBuf::from("/etc/data")));
        assert_eq!((s.warn_percent, s.critical_percent), (80.0, 95.0));
        assert_eq!((s.warn_days, s.critical_days), (30.0, 7.0));
        assert_eq!(s.forecast_window, Duration::from_secs(7 * 86_400));
    }

    #[test]
    fn config_http_source() {
        let s = parse(
            "    source: http\n    url: https://api.example/v1/quota?x=1\n    headers: { Authorization: \"Bearer ${T}\" }\n    pointers: { total: /t, used: /u, trash: /tr }\n",
        )
        .unwrap();
        let Source::Http(h) = &s.source else { panic!() };
        assert_eq!(h.headers[0].1, "Bearer s3cr3t");
        assert_eq!(h.trash.as_deref(), Some("/tr"));
        assert_eq!(
            s.target(),
            "/v1/quota",
            "the label has no host and no query"
        );
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }

    #[test]
    fn config_problems_are_all_reported_with_positions() {
        let errs = parse(
            "    path: /x\n    warn_percent: 96\n    critical_days: 40\n    forecast_window: 10s\n",
        )
        .unwrap_err();
        let all = errs.join("\n");
        assert_eq!(errs.len(), 3, "{all}");
        assert!(
            all.contains(
                "t.yml:5:5: probes[0].warn_percent: warn_percent is not below critical_percent"
            ),
            "{all}"
        );
        assert!(
            all.contains(
                "t.yml:6:5: probes[0].critical_days: warn_days is not above critical_days"
            ),
            "{all}"
        );
        assert!(
            all.contains("probes[0].forecast_window: forecast_window 10s is out of range"),
            "{all}"
        );

        let all = parse(
            "    source: http\n    url: http://u:p@h/x\n    pointers: { total: t, used: /u }\n",
        )
        .unwrap_err()
        .join("\n");
        assert!(all.contains("credentials in the URL"), "{all}");
        assert!(all.contains("`t` is not a JSON pointer"), "{all}");
        assert!(!all.contains(":p@"), "{all}");

        let all = parse("    warn_percent: 50\n").unwrap_err().join("\n");
        assert!(all.contains("missing required key `path`"), "{all}");
        let all = parse("    path: /x\n    url: http://h/\n")
            .unwrap_err()
            .join("\n");
        assert!(all.contains("need `source: http`"), "{all}");
        // 0 turns the days thresholds off.
        assert!(parse("    path: /x\n    warn_days: 0\n    critical_days: 0\n").is_ok());
    }
}
