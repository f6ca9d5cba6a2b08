//! The `queries:` of a MongoDB probe: running one (count, oldest, aggregate
//! with labels, bounded by `max_series`), the query families and the series
//! a check exported (vanished ones are removed), and the thresholds, ratio
//! thresholds against another query included.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use mongodb::Client;
use mongodb::bson::{Bson, Document, doc};
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};

use super::config::{QueryKind, QuerySpec, Ratio};
use super::driver::{Driver, Failed};
use super::fields::{age_seconds, epoch_ms, label_value, lookup, number};
use crate::metrics::kit::GaugeF;
use crate::probe::core::{Outcome, Status};
use crate::util::sync::lock;

/// A query's labels: component, query, and the aggregate's own.
type Labels = Vec<(String, String)>;

/// The query families.
#[derive(Clone)]
pub(super) struct Families {
    value: Family<Labels, GaugeF>,
    dropped: Family<Labels, GaugeF>,
}

impl Families {
    pub(super) fn register(r: &mut Registry) -> Self {
        let m = Families {
            value: Family::default(),
            dropped: Family::default(),
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
        m
    }
}

/// What one query gave: one value, or one per labelled result document.
pub(super) enum QueryValue {
    One(f64),
    Many {
        rows: Vec<(Vec<(String, String)>, f64)>,
        dropped: usize,
    },
}

impl QueryValue {
    /// Whether this is also what a collection that does not exist gives:
    /// a zero, or no result document.
    pub(super) fn looks_empty(&self) -> bool {
        match self {
            QueryValue::One(x) => *x == 0.0,
            QueryValue::Many { rows, dropped } => rows.is_empty() && *dropped == 0,
        }
    }
}

/// Runs one query.
pub(super) async fn read(
    driver: &Driver,
    client: &Client,
    q: &QuerySpec,
) -> Result<QueryValue, Failed> {
    let coll = driver.collection(client, &q.database, &q.collection);
    let what = format!("query {}", q.name);
    match &q.kind {
        QueryKind::Count(filter) => {
            let n = coll
                .count_documents(filter.clone())
                .max_time(driver.timeout)
                .await
                .map_err(|e| driver.failed(&what, &e))?;
            Ok(QueryValue::One(n as f64))
        }
        QueryKind::Oldest { filter, field } => {
            let filter =
                doc! { "$and": [filter.clone(), { field.as_str(): { "$ne": Bson::Null } }] };
            let found = coll
                .find_one(filter)
                .sort(doc! { field.as_str(): 1 })
                .projection(doc! { field.as_str(): 1, "_id": 0 })
                .max_time(driver.timeout)
                .await
                .map_err(|e| driver.failed(&what, &e))?;
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
                .max_time(driver.timeout)
                .await
                .map_err(|e| driver.failed(&what, &e))?;
            let mut rows = Vec::new();
            let mut dropped = 0;
            // Counting the overflow is bounded too.
            let cap = max_series.saturating_mul(10);
            let mut seen = 0;
            while seen < cap
                && cursor
                    .advance()
                    .await
                    .map_err(|e| driver.failed(&what, &e))?
            {
                seen += 1;
                if rows.len() >= *max_series {
                    dropped += 1;
                    continue;
                }
                let d: Document = cursor
                    .deserialize_current()
                    .map_err(|e| driver.failed(&what, &e))?;
                // A `value:` that names no field of the results would read
                // as a healthy 0 for good (a null, as `$avg` of nothing
                // gives, is 0).
                let found = lookup(&d, value);
                let v = match found {
                    Some(Bson::Null) => Some(0.0),
                    f => f.and_then(number),
                };
                let Some(v) = v else {
                    let fields: Vec<&str> = d.keys().map(String::as_str).take(10).collect();
                    return Err(Failed::Own(format!(
                        "{what}: a result document has no number at `{value}` (its fields: {}; \
                         set `value:` to the field the pipeline computes)",
                        fields.join(", ")
                    )));
                };
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

/// One probe's query series.
pub(super) struct Series {
    component: String,
    families: Families,
    /// Label sets exported by the previous check, to drop vanished series.
    known: Mutex<BTreeSet<Labels>>,
}

impl Series {
    pub(super) fn new(component: &str, families: Families) -> Self {
        Series {
            component: component.to_string(),
            families,
            known: Mutex::new(BTreeSet::new()),
        }
    }

    /// Sets the series of this check's values; removes those that vanished.
    pub(super) fn publish(&self, values: &BTreeMap<&str, QueryValue>) {
        let m = &self.families;
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
        let mut known = lock(&self.known);
        for gone in known.difference(&now) {
            m.value.remove(gone);
        }
        *known = now;
    }

    /// Removes the component's query series.
    pub(super) fn forget(&self, queries: &[QuerySpec]) {
        let m = &self.families;
        for l in lock(&self.known).iter() {
            m.value.remove(l);
        }
        for q in queries {
            m.dropped.remove(&vec![
                ("component".to_string(), self.component.clone()),
                ("query".to_string(), q.name.clone()),
            ]);
        }
    }
}

/// Judges a query's value(s) against its absolute and ratio thresholds and
/// shows them in the details.
pub(super) fn judge(
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
        // The first ratio crossed, the stricter one first.
        let crossed = [
            (Status::Unhealthy, &q.unhealthy_above_ratio),
            (Status::Degraded, &q.degraded_above_ratio),
        ]
        .into_iter()
        .find_map(|(level, r)| {
            other(r, values)
                .filter(|(r, b)| x > r.ratio * b)
                .map(|rb| (level, rb))
        });
        if let Some((level, (r, base))) = crossed {
            out.raise(
                level,
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
            out.details.map_mut().insert(name.into(), json!(x));
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
            out.details
                .map_mut()
                .insert(name.into(), Value::Array(list));
            if *dropped > 0 {
                out.details
                    .map_mut()
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

fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:.1}")
    }
}
