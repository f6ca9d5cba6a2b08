//! The MongoDB kind's configuration: its own keys (`Raw`, with `RawQuery`
//! and `RawQueue`) checked into a [`Spec`] with every problem reported: the
//! URI and credentials, each query's form (count, aggregate with labels,
//! oldest) and thresholds (ratio thresholds name another query), each
//! queue's status values and timestamps. Filters and pipelines are extended
//! JSON turned into BSON here.

use std::collections::BTreeSet;

use mongodb::bson::{Bson, Document};
use mongodb::options::ConnectionString;
use serde::Deserialize;

use crate::config::check::Checker;
use crate::config::units::{Dur, Secret};
use crate::config::yaml::Node;
use crate::probe::queue::{JobState, Thresholds};
use crate::util::redact::{redact_url, scrub};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    uri: Secret,
    database: Option<String>,
    password: Option<Secret>,
    password_file: Option<String>,
    #[serde(default)]
    queries: Vec<RawQuery>,
    #[serde(default)]
    queues: Vec<RawQueue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    name: String,
    database: Option<String>,
    collection: String,
    count: Option<serde_json::Value>,
    aggregate: Option<Vec<serde_json::Value>>,
    oldest: Option<RawOldest>,
    value: Option<String>,
    labels: Option<Vec<String>>,
    max_series: Option<usize>,
    degraded_above: Option<f64>,
    unhealthy_above: Option<f64>,
    degraded_above_ratio: Option<RawRatio>,
    unhealthy_above_ratio: Option<RawRatio>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOldest {
    #[serde(default)]
    filter: Option<serde_json::Value>,
    field: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRatio {
    of: String,
    ratio: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    name: String,
    database: Option<String>,
    collection: String,
    #[serde(default)]
    filter: Option<serde_json::Value>,
    status_field: String,
    #[serde(default)]
    waiting: Vec<String>,
    #[serde(default)]
    active: Vec<String>,
    #[serde(default)]
    delayed: Vec<String>,
    #[serde(default)]
    failed: Vec<String>,
    #[serde(default)]
    completed: Vec<String>,
    timestamp_field: Option<String>,
    active_timestamp_field: Option<String>,
    degraded_above: Option<u64>,
    unhealthy_above: Option<u64>,
    stuck_after: Option<Dur>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum QueryKind {
    Count(Document),
    Aggregate {
        pipeline: Vec<Document>,
        value: String,
        labels: Vec<(String, String)>,
        max_series: usize,
    },
    Oldest {
        filter: Document,
        field: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ratio {
    pub of: String,
    pub ratio: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QuerySpec {
    pub name: String,
    pub database: String,
    pub collection: String,
    pub kind: QueryKind,
    pub degraded_above: Option<f64>,
    pub unhealthy_above: Option<f64>,
    pub degraded_above_ratio: Option<Ratio>,
    pub unhealthy_above_ratio: Option<Ratio>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QueueSpec {
    pub name: String,
    pub database: String,
    pub collection: String,
    pub filter: Document,
    pub status_field: String,
    pub states: Vec<(JobState, Vec<String>)>,
    pub timestamp_field: Option<String>,
    pub active_timestamp_field: Option<String>,
    pub thresholds: Thresholds,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub uri: Secret,
    pub password: Option<Secret>,
    pub queries: Vec<QuerySpec>,
    pub queues: Vec<QueueSpec>,
}

/// Extended JSON (`{"$date": …}`, `{"$oid": …}`) to a BSON document.
fn to_document(v: serde_json::Value, at: &str, c: &Checker) -> Option<Document> {
    match Bson::try_from(v) {
        Ok(Bson::Document(d)) => Some(d),
        Ok(_) => {
            c.problem(
                at,
                "expected a document",
                "write a mapping, e.g. { status: error }",
            );
            None
        }
        Err(e) => {
            c.problem(
                at,
                format!("not valid extended JSON: {e}"),
                "dates as { $date: \"2026-01-01T00:00:00Z\" }, ids as { $oid: \"…\" }",
            );
            None
        }
    }
}

impl Spec {
    pub fn parse(node: &Node, path: &str, c: &Checker, also: &[&'static str]) -> Option<Spec> {
        let raw: Raw = c.parse_kind(node, path, also)?;
        let password = c.secret(path, "password", raw.password, raw.password_file.as_deref());
        let uri_at = format!("{path}.uri");
        let shown = redact_url(raw.uri.expose());
        let mut default_db = raw.database.clone();
        if raw.uri.expose().starts_with("mongodb+srv://") {
            c.problem(
                &uri_at,
                format!("`{shown}`: mongodb+srv:// (DNS seed lists) is not supported"),
                "list the hosts: mongodb://host1,host2/?replicaSet=NAME",
            );
        } else {
            match ConnectionString::parse(raw.uri.expose()) {
                Ok(cs) => {
                    if default_db.is_none() {
                        default_db = cs.default_database.clone();
                    }
                }
                Err(e) => c.problem(
                    &uri_at,
                    format!(
                        "invalid MongoDB URI `{shown}`: {}",
                        scrub(&e.kind.to_string(), &[raw.uri.expose()])
                    ),
                    "write mongodb://[USER:PASSWORD@]HOST:PORT/DATABASE?OPTIONS",
                ),
            }
        }
        let db_for = |db: Option<String>, at: &str| -> String {
            match db.or_else(|| default_db.clone()) {
                Some(d) => d,
                None => {
                    c.problem(
                        &format!("{at}.database"),
                        "no database",
                        "set `database:` here or on the probe, or name it in the URI path",
                    );
                    String::new()
                }
            }
        };

        let mut queries = Vec::new();
        let mut names = BTreeSet::new();
        for (i, q) in raw.queries.into_iter().enumerate() {
            let at = format!("{path}.queries[{i}]");
            c.unique_name(&mut names, &at, "query", &q.name);
            let database = db_for(q.database.clone(), &at);
            if let Some(spec) = parse_query(q, database, &at, c) {
                queries.push((i, spec));
            }
        }
        // Ratio thresholds refer to a single-valued query of the same probe.
        for (i, q) in &queries {
            for (key, r) in [
                ("degraded_above_ratio", &q.degraded_above_ratio),
                ("unhealthy_above_ratio", &q.unhealthy_above_ratio),
            ] {
                let Some(r) = r else { continue };
                let at = format!("{path}.queries[{i}].{key}");
                match queries.iter().map(|(_, q)| q).find(|o| o.name == r.of) {
                    None => c.problem(
                        &format!("{at}.of"),
                        format!("no query named `{}`", r.of),
                        format!(
                            "one of: {}",
                            queries
                                .iter()
                                .map(|(_, q)| q.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                    Some(o) if o.name == q.name => c.problem(
                        &format!("{at}.of"),
                        "a query cannot be compared with itself",
                        "name another query",
                    ),
                    Some(o) if !o.single() => c.problem(
                        &format!("{at}.of"),
                        format!("query `{}` has several values (labels)", r.of),
                        "compare with a count, an oldest, or an aggregate without labels",
                    ),
                    Some(_) => {}
                }
                if !(r.ratio > 0.0 && r.ratio.is_finite()) {
                    c.problem(
                        &format!("{at}.ratio"),
                        format!("ratio {} must be above 0", r.ratio),
                        "e.g. 0.5: above half of the other query",
                    );
                }
            }
        }

        let mut queues = Vec::new();
        let mut qnames = BTreeSet::new();
        for (i, q) in raw.queues.into_iter().enumerate() {
            let at = format!("{path}.queues[{i}]");
            c.unique_name(&mut qnames, &at, "queue", &q.name);
            let database = db_for(q.database.clone(), &at);
            if let Some(spec) = parse_queue(q, database, &at, c) {
                queues.push(spec);
            }
        }
        Some(Spec {
            uri: raw.uri,
            password,
            queries: queries.into_iter().map(|(_, q)| q).collect(),
            queues,
        })
    }
}

impl QuerySpec {
    fn single(&self) -> bool {
        !matches!(&self.kind, QueryKind::Aggregate { labels, .. } if !labels.is_empty())
    }
}

fn parse_query(q: RawQuery, database: String, at: &str, c: &Checker) -> Option<QuerySpec> {
    let forms = [q.count.is_some(), q.aggregate.is_some(), q.oldest.is_some()];
    if forms.iter().filter(|f| **f).count() != 1 {
        c.problem(
            at,
            "a query needs exactly one of `count`, `aggregate` or `oldest`",
            "count: {filter} | aggregate: [pipeline] with value: | oldest: {filter, field}",
        );
        return None;
    }
    if q.aggregate.is_none() {
        for (set, key) in [
            (q.value.is_some(), "value"),
            (q.labels.is_some(), "labels"),
            (q.max_series.is_some(), "max_series"),
        ] {
            if set {
                c.problem(
                    &format!("{at}.{key}"),
                    format!("`{key}` applies to `aggregate` queries only"),
                    "remove it",
                );
            }
        }
    }
    let kind = if let Some(f) = q.count {
        QueryKind::Count(to_document(f, &format!("{at}.count"), c)?)
    } else if let Some(stages) = q.aggregate {
        let mut pipeline = Vec::with_capacity(stages.len());
        for (i, s) in stages.into_iter().enumerate() {
            pipeline.push(to_document(s, &format!("{at}.aggregate[{i}]"), c)?);
        }
        let Some(value) = q.value else {
            c.problem(
                at,
                "an aggregate query needs `value`: the field holding the number",
                "e.g. value: n with { $group: { _id: \"$status\", n: { $sum: 1 } } }",
            );
            return None;
        };
        let mut labels = Vec::new();
        for (i, field) in q.labels.unwrap_or_default().into_iter().enumerate() {
            let name = label_name(&field);
            if name.is_empty() || name == "component" || name == "query" {
                c.problem(
                    &format!("{at}.labels[{i}]"),
                    format!("`{field}` cannot name a label"),
                    "use a field name other than component or query",
                );
            }
            labels.push((name, field));
        }
        let max_series = q.max_series.unwrap_or(50);
        if max_series == 0 || max_series > 1000 {
            c.problem(
                &format!("{at}.max_series"),
                format!("max_series {max_series} is out of range"),
                "use 1 to 1000: every result document is a series",
            );
        }
        QueryKind::Aggregate {
            pipeline,
            value,
            labels,
            max_series,
        }
    } else {
        let o = q.oldest?;
        let filter = match o.filter {
            Some(f) => to_document(f, &format!("{at}.oldest.filter"), c)?,
            None => Document::new(),
        };
        QueryKind::Oldest {
            filter,
            field: o.field,
        }
    };
    if let (Some(d), Some(u)) = (q.degraded_above, q.unhealthy_above)
        && d >= u
    {
        c.problem(
            &format!("{at}.degraded_above"),
            format!("degraded_above {d} is not below unhealthy_above {u}"),
            "degraded is the earlier warning: make it the lower limit",
        );
    }
    let ratio = |r: Option<RawRatio>| {
        r.map(|r| Ratio {
            of: r.of,
            ratio: r.ratio,
        })
    };
    Some(QuerySpec {
        name: q.name,
        database,
        collection: q.collection,
        kind,
        degraded_above: q.degraded_above,
        unhealthy_above: q.unhealthy_above,
        degraded_above_ratio: ratio(q.degraded_above_ratio),
        unhealthy_above_ratio: ratio(q.unhealthy_above_ratio),
    })
}

fn parse_queue(q: RawQueue, database: String, at: &str, c: &Checker) -> Option<QueueSpec> {
    let thresholds = Thresholds::parse(q.degraded_above, q.unhealthy_above, q.stuck_after, at, c);
    let filter = match q.filter {
        Some(f) => to_document(f, &format!("{at}.filter"), c)?,
        None => Document::new(),
    };
    let states: Vec<(JobState, Vec<String>)> = [
        (JobState::Waiting, q.waiting),
        (JobState::Active, q.active),
        (JobState::Delayed, q.delayed),
        (JobState::Failed, q.failed),
        (JobState::Completed, q.completed),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect();
    if states.is_empty() {
        c.problem(
            at,
            "no status values",
            "list the values of the status field, e.g. waiting: [pending], active: [processing]",
        );
        return None;
    }
    let mut seen = BTreeSet::new();
    for (_, values) in &states {
        for v in values {
            if !seen.insert(v.clone()) {
                c.problem(
                    at,
                    format!("status value `{v}` is listed under two states"),
                    "each value means one state",
                );
            }
        }
    }
    if q.stuck_after.is_some() && q.timestamp_field.is_none() {
        c.problem(
            &format!("{at}.stuck_after"),
            "stuck_after needs `timestamp_field` to know how old jobs are",
            "e.g. timestamp_field: createdAt",
        );
    }
    Some(QueueSpec {
        name: q.name,
        database,
        collection: q.collection,
        filter,
        status_field: q.status_field,
        states,
        active_timestamp_field: q
            .active_timestamp_field
            .or_else(|| q.timestamp_field.clone()),
        timestamp_field: q.timestamp_field,
        thresholds,
    })
}

/// A field path as a label name: `user.status` → `user_status`.
fn label_name(field: &str) -> String {
    let mut s: String = field
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    if s.starts_with("__") {
        s = s.trim_start_matches('_').to_string();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_valid() {
        assert_eq!(label_name("status"), "status");
        assert_eq!(label_name("user.status"), "user_status");
        assert_eq!(label_name("_id"), "_id");
        assert_eq!(label_name("9x"), "_9x");
    }
}
