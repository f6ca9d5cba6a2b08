//! `kind: mongodb` — a MongoDB database through the official driver: a ping
//! (its round trip), `queries:` turned into gauges and health details
//! (count, aggregate with labels, age of the oldest matching document, with
//! absolute and ratio thresholds), and `queues:` kept in a collection,
//! exported with the same families as Redis queues.
//!
//! The client is created on the first check (building does no I/O) and
//! kept: the driver reconnects by itself. Server selection and connecting
//! give up inside the check's timeout, so an unreachable server reads as
//! `connect`, not `timeout`. The URI's password never leaves this module:
//! it is shown as `***` and scrubbed from every error message.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::try_join_all;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{ClientOptions, ConnectionString};
use mongodb::{Client, Collection};
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::core::{
    BoxFuture, BuildCtx, BuildError, CheckError, CheckResult, FamiliesOf, Outcome, Probe, Reason,
    Status,
};
use super::queue::{self, JobState, Publisher, Snapshot, Thresholds};
use crate::config::check::Checker;
use crate::config::units::{Dur, Secret};
use crate::config::yaml::Node;
use crate::metrics::kit::{ComponentOnly, GaugeF, SeriesGate};
use crate::util::redact::{redact_url, scrub};
use crate::util::sync::lock;

/// How a MongoDB check fails (the counters of these start at 0).
pub const REASONS: &[Reason] = &[
    Reason::Connect,
    Reason::Auth,
    Reason::Tls,
    Reason::Timeout,
    Reason::BadResponse,
];

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

/// The MongoDB families.
pub struct Metrics {
    value: Family<Vec<(String, String)>, GaugeF>,
    dropped: Family<Vec<(String, String)>, GaugeF>,
    ping: Family<ComponentOnly, GaugeF>,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Metrics {
            value: Family::default(),
            dropped: Family::default(),
            ping: Family::default(),
        };
        r.register(
            "mongodb_query_value",
            "The value of a configured query (count, aggregate value, or age in seconds).",
            m.value.clone(),
        );
        r.register(
            "mongodb_query_dropped_series",
            "Result documents of an aggregate query beyond max_series, not exported.",
            m.dropped.clone(),
        );
        r.register(
            "mongodb_ping_seconds",
            "Round trip of the last ping.",
            m.ping.clone(),
        );
        m
    }
}

pub struct MongoProbe {
    spec: Spec,
    timeout: Duration,
    client: tokio::sync::Mutex<Option<Client>>,
    component: String,
    label: ComponentOnly,
    metrics: Arc<Metrics>,
    queues: Publisher,
    /// Label sets exported by the previous check, to drop vanished series.
    series: Mutex<BTreeSet<Vec<(String, String)>>>,
    gate: SeriesGate,
}

pub fn build<F: FamiliesOf<Metrics> + FamiliesOf<queue::Metrics> + ?Sized>(
    spec: &Spec,
    ctx: &BuildCtx<'_, F>,
) -> Result<MongoProbe, BuildError> {
    Ok(MongoProbe {
        spec: spec.clone(),
        timeout: ctx.timeout,
        client: tokio::sync::Mutex::new(None),
        component: ctx.name.to_string(),
        label: ComponentOnly {
            component: ctx.name.to_string(),
        },
        metrics: FamiliesOf::<Metrics>::families(ctx.metrics).clone(),
        queues: Publisher::new(
            ctx.name,
            FamiliesOf::<queue::Metrics>::families(ctx.metrics).clone(),
        ),
        series: Mutex::new(BTreeSet::new()),
        gate: ctx.gate.clone(),
    })
}

/// What one query gave: one value, or one per labelled result document.
enum QueryValue {
    One(f64),
    Many {
        rows: Vec<(Vec<(String, String)>, f64)>,
        dropped: usize,
    },
}

impl MongoProbe {
    fn secrets(&self) -> Vec<&str> {
        let mut s = vec![self.spec.uri.expose()];
        if let Some(p) = &self.spec.password {
            s.push(p.expose());
        }
        s
    }

    fn error(&self, what: &str, e: &mongodb::error::Error) -> CheckError {
        use mongodb::error::ErrorKind as K;
        // The kind only: the whole error adds labels and empty fields.
        let text = scrub(&e.kind.to_string(), &self.secrets());
        let reason = match e.kind.as_ref() {
            K::Authentication { .. } => Reason::Auth,
            // AuthenticationFailed, Unauthorized.
            K::Command(c) if c.code == 18 || c.code == 13 => Reason::Auth,
            // MaxTimeMSExpired: the server gave up within our time limit.
            K::Command(c) if c.code == 50 => Reason::Timeout,
            K::ServerSelection { message, .. } if message.to_ascii_lowercase().contains("auth") => {
                Reason::Auth
            }
            // rustls says why a server was refused: "invalid peer certificate".
            K::ServerSelection { .. } | K::Io(_) | K::ConnectionPoolCleared { .. }
                if text.to_ascii_lowercase().contains("certificate") =>
            {
                Reason::Tls
            }
            K::ServerSelection { .. }
            | K::Io(_)
            | K::ConnectionPoolCleared { .. }
            | K::DnsResolve { .. } => Reason::Connect,
            K::InvalidTlsConfig { .. } => Reason::Tls,
            _ => Reason::BadResponse,
        };
        CheckError::new(reason, format!("{what}: {text}"))
    }

    /// The driver client, created on the first check: the driver keeps its
    /// own pool and monitors and reconnects after an outage by itself.
    async fn client(&self) -> Result<Client, CheckError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let bad = |e: mongodb::error::Error| {
            CheckError::new(
                Reason::Internal,
                format!(
                    "invalid MongoDB URI {}: {}",
                    redact_url(self.spec.uri.expose()),
                    scrub(&e.to_string(), &self.secrets())
                ),
            )
        };
        let mut o = ClientOptions::parse(self.spec.uri.expose())
            .await
            .map_err(bad)?;
        // Inside the check's timeout: an unreachable server is `connect`.
        let inner = (self.timeout * 3 / 4).max(Duration::from_millis(50));
        o.server_selection_timeout = Some(inner);
        o.connect_timeout = Some(inner);
        o.app_name = Some("depwatch".into());
        if let Some(p) = &self.spec.password {
            let mut cred = o.credential.take().unwrap_or_default();
            cred.password = Some(p.expose().to_string());
            o.credential = Some(cred);
        }
        let client = Client::with_options(o).map_err(bad)?;
        *slot = Some(client.clone());
        Ok(client)
    }

    fn collection(&self, client: &Client, db: &str, coll: &str) -> Collection<Document> {
        client.database(db).collection::<Document>(coll)
    }

    async fn query(&self, client: &Client, q: &QuerySpec) -> Result<QueryValue, CheckError> {
        let coll = self.collection(client, &q.database, &q.collection);
        let what = format!("query {}", q.name);
        match &q.kind {
            QueryKind::Count(filter) => {
                let n = coll
                    .count_documents(filter.clone())
                    .max_time(self.timeout)
                    .await
                    .map_err(|e| self.error(&what, &e))?;
                Ok(QueryValue::One(n as f64))
            }
            QueryKind::Oldest { filter, field } => {
                let filter =
                    doc! { "$and": [filter.clone(), { field.as_str(): { "$ne": Bson::Null } }] };
                let found = coll
                    .find_one(filter)
                    .sort(doc! { field.as_str(): 1 })
                    .projection(doc! { field.as_str(): 1, "_id": 0 })
                    .max_time(self.timeout)
                    .await
                    .map_err(|e| self.error(&what, &e))?;
                let age = found
                    .as_ref()
                    .and_then(|d| lookup(d, field))
                    .and_then(epoch_ms)
                    .map_or(0.0, age_seconds);
                Ok(QueryValue::One(age))
            }
            QueryKind::Aggregate {
                pipeline,
                value,
                labels,
                max_series,
            } => {
                let mut cursor = coll
                    .aggregate(pipeline.clone())
                    .max_time(self.timeout)
                    .await
                    .map_err(|e| self.error(&what, &e))?;
                let mut rows = Vec::new();
                let mut dropped = 0;
                // Counting the overflow is bounded too.
                let cap = max_series.saturating_mul(10);
                let mut seen = 0;
                while seen < cap && cursor.advance().await.map_err(|e| self.error(&what, &e))? {
                    seen += 1;
                    if rows.len() >= *max_series {
                        dropped += 1;
                        continue;
                    }
                    let d: Document = cursor
                        .deserialize_current()
                        .map_err(|e| self.error(&what, &e))?;
                    let v = lookup(&d, value).and_then(number).unwrap_or(0.0);
                    let l = labels
                        .iter()
                        .map(|(name, field)| {
                            (
                                name.clone(),
                                lookup(&d, field).map(label_value).unwrap_or_default(),
                            )
                        })
                        .collect();
                    rows.push((l, v));
                    if labels.is_empty() {
                        break;
                    }
                }
                if labels.is_empty() {
                    return Ok(QueryValue::One(rows.first().map_or(0.0, |r| r.1)));
                }
                Ok(QueryValue::Many { rows, dropped })
            }
        }
    }

    async fn queue(&self, client: &Client, q: &QueueSpec) -> Result<Snapshot, CheckError> {
        let coll = self.collection(client, &q.database, &q.collection);
        let all: Vec<&String> = q.states.iter().flat_map(|(_, v)| v).collect();
        let mut m = q.filter.clone();
        let status = q.status_field.as_str();
        let matcher = doc! { status: { "$in": all } };
        if m.is_empty() {
            m = matcher;
        } else {
            m = doc! { "$and": [m, matcher] };
        }
        let mut group = doc! { "_id": format!("${status}"), "n": { "$sum": 1 } };
        if let Some(ts) = &q.timestamp_field {
            group.insert("oldest", doc! { "$min": format!("${ts}") });
        }
        if let Some(ts) = &q.active_timestamp_field {
            group.insert("oldest_active", doc! { "$min": format!("${ts}") });
        }
        let what = format!("queue {}", q.name);
        let mut cursor = coll
            .aggregate(vec![doc! { "$match": m }, doc! { "$group": group }])
            .max_time(self.timeout)
            .await
            .map_err(|e| self.error(&what, &e))?;
        let mut counts: BTreeMap<JobState, u64> = q.states.iter().map(|(s, _)| (*s, 0)).collect();
        let mut oldest_wait: Option<f64> = None;
        let mut oldest_active: Option<f64> = None;
        let min = |acc: &mut Option<f64>, v: Option<f64>| {
            if let Some(v) = v {
                *acc = Some(acc.map_or(v, |a: f64| a.min(v)));
            }
        };
        while cursor.advance().await.map_err(|e| self.error(&what, &e))? {
            let d: Document = cursor
                .deserialize_current()
                .map_err(|e| self.error(&what, &e))?;
            let value = d.get("_id").map(label_value).unwrap_or_default();
            let Some(state) = q
                .states
                .iter()
                .find(|(_, vals)| vals.contains(&value))
                .map(|(s, _)| *s)
            else {
                continue;
            };
            let n = d.get("n").and_then(number).unwrap_or(0.0) as u64;
            *counts.entry(state).or_default() += n;
            match state {
                JobState::Waiting => min(&mut oldest_wait, d.get("oldest").and_then(epoch_ms)),
                JobState::Active => min(
                    &mut oldest_active,
                    d.get("oldest_active").and_then(epoch_ms),
                ),
                _ => {}
            }
        }
        let has = |s: JobState| q.states.iter().any(|(st, _)| *st == s);
        Ok(Snapshot {
            queue: q.name.clone(),
            counts: counts.into_iter().collect(),
            oldest_waiting_age: (q.timestamp_field.is_some() && has(JobState::Waiting))
                .then(|| oldest_wait.map_or(0.0, age_seconds)),
            oldest_active_age: (q.active_timestamp_field.is_some() && has(JobState::Active))
                .then(|| oldest_active.map_or(0.0, age_seconds)),
            stalled: None,
            paused: None,
            extra: Map::new(),
        })
    }

    async fn run(&self) -> CheckResult {
        let client = self.client().await?;
        let started = Instant::now();
        client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| self.error("ping", &e))?;
        let rtt = started.elapsed().as_secs_f64();
        if let Some(_live) = self.gate.open() {
            self.metrics.ping.get_or_create(&self.label).set(rtt);
        }
        let mut out = Outcome::healthy(Map::new());
        out.details
            .insert("ping_ms".into(), json!((rtt * 100_000.0).round() / 100.0));

        // Queries and queues run side by side on the driver's pool: a check
        // takes as long as its slowest query, not their sum.
        let queries = try_join_all(self.spec.queries.iter().map(|q| self.query(&client, q)));
        let queues = try_join_all(self.spec.queues.iter().map(|q| self.queue(&client, q)));
        let (values, snaps) = match futures_util::future::try_join(queries, queues).await {
            Ok(v) => v,
            Err(mut e) => {
                e.details = out.details;
                return Err(e);
            }
        };
        let values: BTreeMap<&str, QueryValue> = self
            .spec
            .queries
            .iter()
            .map(|q| q.name.as_str())
            .zip(values)
            .collect();
        if let Some(_live) = self.gate.open() {
            self.publish(&values);
            self.queues.publish(&snaps);
        }
        for q in &self.spec.queries {
            if let Some(v) = values.get(q.name.as_str()) {
                self.judge(q, v, &values, &mut out);
            }
        }
        for (q, s) in self.spec.queues.iter().zip(&snaps) {
            q.thresholds.judge(s, &mut out);
        }
        if !snaps.is_empty() {
            out.details.insert("queues".into(), queue::details(&snaps));
        }
        Ok(out)
    }

    fn publish(&self, values: &BTreeMap<&str, QueryValue>) {
        let m = &self.metrics;
        let mut now = BTreeSet::new();
        for (name, v) in values {
            let base = vec![
                ("component".to_string(), self.component.clone()),
                ("query".to_string(), name.to_string()),
            ];
            match v {
                QueryValue::One(x) => {
                    m.value.get_or_create(&base).set(*x);
                    now.insert(base);
                }
                QueryValue::Many { rows, dropped } => {
                    for (labels, x) in rows {
                        let mut l = base.clone();
                        l.extend(labels.iter().cloned());
                        m.value.get_or_create(&l).set(*x);
                        now.insert(l);
                    }
                    m.dropped.get_or_create(&base).set(*dropped as f64);
                }
            }
        }
        let mut known = lock(&self.series);
        for gone in known.difference(&now) {
            m.value.remove(gone);
        }
        *known = now;
    }

    fn judge(
        &self,
        q: &QuerySpec,
        v: &QueryValue,
        values: &BTreeMap<&str, QueryValue>,
        out: &mut Outcome,
    ) {
        let name = q.name.as_str();
        fn other<'a>(
            r: &'a Option<Ratio>,
            values: &BTreeMap<&str, QueryValue>,
        ) -> Option<(&'a Ratio, f64)> {
            r.as_ref().and_then(|r| match values.get(r.of.as_str()) {
                Some(QueryValue::One(x)) => Some((r, *x)),
                _ => None,
            })
        }
        let check = |x: f64, what: &str, out: &mut Outcome| {
            if let Some(l) = q.unhealthy_above.filter(|l| x > *l) {
                out.raise(
                    Status::Unhealthy,
                    format!("{what} is {}, above {l}", num(x)),
                );
            } else if let Some(l) = q.degraded_above.filter(|l| x > *l) {
                out.raise(Status::Degraded, format!("{what} is {}, above {l}", num(x)));
            }
            if let Some((r, base)) =
                other(&q.unhealthy_above_ratio, values).filter(|(r, b)| x > r.ratio * b)
            {
                out.raise(
                    Status::Unhealthy,
                    format!(
                        "{what} is {}, above {} × {} ({})",
                        num(x),
                        r.ratio,
                        r.of,
                        num(base)
                    ),
                );
            } else if let Some((r, base)) =
                other(&q.degraded_above_ratio, values).filter(|(r, b)| x > r.ratio * b)
            {
                out.raise(
                    Status::Degraded,
                    format!(
                        "{what} is {}, above {} × {} ({})",
                        num(x),
                        r.ratio,
                        r.of,
                        num(base)
                    ),
                );
            }
        };
        match v {
            QueryValue::One(x) => {
                out.details.insert(name.into(), json!(x));
                check(*x, name, out);
            }
            QueryValue::Many { rows, dropped } => {
                let mut list = Vec::with_capacity(rows.len());
                for (labels, x) in rows {
                    let mut row: Map<String, Value> =
                        labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                    row.insert("value".into(), json!(x));
                    list.push(Value::Object(row));
                    let shown = labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    check(*x, &format!("{name}{{{shown}}}"), out);
                }
                out.details.insert(name.into(), Value::Array(list));
                if *dropped > 0 {
                    out.details
                        .insert(format!("{name}_dropped_series"), json!(dropped));
                    out.raise(
                        Status::Healthy,
                        format!(
                            "query {name}: {dropped} result documents beyond max_series were not exported"
                        ),
                    );
                }
            }
        }
    }
}

fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:.1}")
    }
}

/// A dotted field path in a document.
fn lookup<'a>(d: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut cur = d.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Bson::Document(d) => d.get(p)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn number(b: &Bson) -> Option<f64> {
    match b {
        Bson::Int32(i) => Some(f64::from(*i)),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(f) => Some(*f),
        Bson::Decimal128(d) => d.to_string().parse().ok(),
        Bson::Boolean(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// A date, or a number of milliseconds since the epoch.
fn epoch_ms(b: &Bson) -> Option<f64> {
    match b {
        Bson::DateTime(d) => Some(d.timestamp_millis() as f64),
        Bson::Timestamp(t) => Some(f64::from(t.time) * 1000.0),
        other => number(other),
    }
}

fn age_seconds(ms: f64) -> f64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0);
    ((now - ms) / 1000.0).max(0.0)
}

/// A result field as a label value (bounded in length).
fn label_value(b: &Bson) -> String {
    let s = match b {
        Bson::String(s) => s.clone(),
        Bson::ObjectId(o) => o.to_hex(),
        Bson::Null | Bson::Undefined => String::new(),
        Bson::Boolean(b) => b.to_string(),
        Bson::Int32(i) => i.to_string(),
        Bson::Int64(i) => i.to_string(),
        Bson::Double(f) => f.to_string(),
        other => other.clone().into_relaxed_extjson().to_string(),
    };
    s.chars().take(128).collect()
}

impl Probe for MongoProbe {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(self.run())
    }

    fn forget(&self) {
        let m = &self.metrics;
        for l in lock(&self.series).iter() {
            m.value.remove(l);
        }
        for q in &self.spec.queries {
            m.dropped.remove(&vec![
                ("component".to_string(), self.component.clone()),
                ("query".to_string(), q.name.clone()),
            ]);
        }
        m.ping.remove(&self.label);
        self.queues.forget();
    }
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

    #[test]
    fn fields_and_dates() {
        let d = doc! { "a": { "b": 3_i64 }, "t": mongodb::bson::DateTime::from_millis(1_000) };
        assert_eq!(lookup(&d, "a.b").and_then(number), Some(3.0));
        assert_eq!(lookup(&d, "t").and_then(epoch_ms), Some(1000.0));
        assert_eq!(lookup(&d, "a.c"), None);
    }
}
