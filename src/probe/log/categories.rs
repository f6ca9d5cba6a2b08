//! A rule's `group_by` categories: their names, the per-category latency
//! statistics of `/api/health`, and the judgement of `latency_warn` /
//! `latency_critical` per category. The engine (`rules.rs`) fills
//! `Rule::by_group` on the hot path; this is what reads it.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{Map, Value};

use super::rules::{GroupKey, Judged, Rule, unpack};
use super::stats::{Bins, Latency};
use crate::probe::core::Status;

/// The category name of a rule without `group_by`, and of every operation.
pub const ALL: &str = "all";

impl Rule {
    /// A category's name: its `group_by` values joined by `/`.
    pub fn category_of(&self, key: GroupKey) -> String {
        let mut out = String::new();
        for (i, (l, id)) in self.groups.iter().zip(unpack(key)).enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(l.value(id));
        }
        out
    }

    /// How the `/api/health` histogram is cut: `bucket_width`, or the
    /// duration's buckets for a rule with `group_by`; none otherwise.
    pub fn bins(&self) -> Option<Bins> {
        match (self.spec.bucket_width, &self.spec.duration) {
            (Some(w), _) => Some(Bins::Width(w.as_secs_f64())),
            (None, Some(d)) if !self.spec.group_by.is_empty() => {
                Some(Bins::Bounds(d.buckets.clone()))
            }
            _ => None,
        }
    }

    /// The per-category statistics of `/api/health`: `by` (the fields),
    /// `all`, and `values` keyed by category name.
    pub fn categories(&mut self, now: Instant) -> Option<Value> {
        if self.groups.is_empty() {
            return None;
        }
        let bins = self.bins();
        let all = self
            .latency
            .as_mut()
            .map_or(Value::Null, |l| l.summary_with(now, bins.as_ref()));
        let mut keys: Vec<GroupKey> = self.by_group.keys().collect();
        keys.sort_by_key(|k| self.category_of(*k));
        let mut values = Map::new();
        for key in keys {
            let name = self.category_of(key);
            let fields: Map<String, Value> = self
                .groups
                .iter()
                .zip(unpack(key))
                .map(|(l, id)| (l.name.clone(), Value::String(l.value(id).to_string())))
                .collect();
            let Some(l) = self.by_group.get_mut(key) else {
                continue;
            };
            if l.count(now) == 0 {
                // Nothing left in the window: the category goes.
                self.by_group.remove(key);
                continue;
            }
            let mut v = l.summary_with(now, bins.as_ref());
            if let Value::Object(m) = &mut v {
                m.insert("fields".into(), Value::Object(fields));
            }
            values.insert(name, v);
        }
        Some(serde_json::json!({
            "by": self.groups.iter().map(|l| l.name.clone()).collect::<Vec<_>>(),
            "all": all,
            "values": values,
        }))
    }

    /// Judges the rule's latency levels: per category with `group_by`, else
    /// over all its operations. Returns the level reached and why, and keeps
    /// the judgement for the metrics.
    pub fn judge(&mut self, now: Instant) -> Vec<(Status, String)> {
        let Some(lv) = self.spec.levels.clone() else {
            return Vec::new();
        };
        let mut seen: Vec<(String, &mut Latency)> = Vec::new();
        if self.groups.is_empty() {
            if let Some(l) = self.latency.as_mut() {
                seen.push((ALL.to_string(), l));
            }
        } else {
            let names: HashMap<GroupKey, String> = self
                .by_group
                .keys()
                .map(|k| (k, self.category_of(k)))
                .collect();
            for (k, l) in self.by_group.iter_mut() {
                seen.push((names[&k].clone(), l));
            }
        }
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        let window = crate::config::units::format_duration(self.spec.stats_window);
        let pct = lv.quantile * 100.0;
        let mut judged = Vec::new();
        let mut out = Vec::new();
        for (category, l) in seen {
            let count = l.count(now);
            if count < lv.min_count {
                continue;
            }
            let Some(secs) = l.quantile(now, lv.quantile) else {
                continue;
            };
            let over =
                |limit: Option<std::time::Duration>| limit.filter(|d| secs > d.as_secs_f64());
            let (level, status, key, limit) = match (over(lv.critical), over(lv.warn)) {
                (Some(d), _) => (2, Status::Unhealthy, "latency_critical", d),
                (None, Some(d)) => (1, Status::Degraded, "latency_warn", d),
                (None, None) => {
                    judged.push(Judged {
                        category,
                        secs,
                        level: 0,
                    });
                    continue;
                }
            };
            let by = if self.groups.is_empty() {
                String::new()
            } else {
                let fields: Vec<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();
                format!(" {}={category}", fields.join("/"))
            };
            out.push((
                status,
                format!(
                    "rule {}{by}: p{} {} over the last {window} ({count} operations) is above {key} {}",
                    self.spec.metric,
                    trim_float(pct),
                    human_secs(secs),
                    crate::config::units::format_duration(limit),
                ),
            ));
            judged.push(Judged {
                category,
                secs,
                level,
            });
        }
        self.judged = judged;
        out
    }
}

/// `95`, `99.9`: a percentage without trailing zeros.
fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A latency as people read it: `812.4ms`, `2.35s`.
fn human_secs(secs: f64) -> String {
    if secs < 1.0 {
        format!("{}ms", trim_float(secs * 1000.0))
    } else {
        format!("{}s", trim_float(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::log::rules::tests::engine;

    #[test]
    fn categories_are_capped_and_judged() {
        let mut e = engine(
            "rules:\n  - metric: ops\n    match: { m: x }\n    duration: { field: d }\n    group_by: [a, b]\n    max_label_values: 2\n    latency_warn: 100ms\n    latency_min_count: 2\n",
        );
        let now = Instant::now();
        for (a, b, d) in [
            ("1", "x", 10),
            ("1", "y", 500),
            ("2", "x", 20),
            ("1", "y", 400),
            ("1", "x", 30),
        ] {
            let l = format!(r#"{{"m":"x","a":"{a}","b":"{b}","d":{d}}}"#);
            e.line(l.as_bytes(), now, 0.0);
        }
        let r = &mut e.rules[0];
        let c = r.categories(now).unwrap();
        let names: Vec<&String> = c["values"].as_object().unwrap().keys().collect();
        // Two categories, then every new combination is other/other.
        assert_eq!(names, ["1/x", "1/y", "other/other"], "{c}");
        assert_eq!(c["values"]["other/other"]["count"], 1);
        assert_eq!(c["all"]["count"], 5);
        let judged = r.judge(now);
        assert_eq!(judged.len(), 1, "{judged:?}");
        assert_eq!(judged[0].0, Status::Degraded);
        assert_eq!(
            judged[0].1,
            "rule ops a/b=1/y: p95 500ms over the last 15m (2 operations) is above latency_warn 100ms"
        );
        assert_eq!(r.judged.iter().map(|j| j.level).collect::<Vec<_>>(), [0, 1]);
    }
}
