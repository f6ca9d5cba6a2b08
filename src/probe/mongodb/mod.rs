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
//!
//! This file owns the probe: `build`, the check (a ping, then the queries
//! and queues side by side) and the ping family. `config.rs` parses the
//! keys, `driver.rs` holds the client and what its errors mean,
//! `queries.rs` and `queues.rs` run and publish the queries and queues,
//! `fields.rs` reads values out of result documents.

mod config;
mod driver;
mod fields;
mod queries;
mod queues;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use mongodb::bson::doc;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{Map, json};

use super::core::{
    BoxFuture, BuildCtx, BuildError, CheckError, CheckResult, FamiliesOf, Outcome, Probe, Status,
};
use super::queue::{self, Publisher};
use crate::metrics::kit::{ComponentOnly, GaugeF, SeriesGate};
pub use config::{QueryKind, QuerySpec, QueueSpec, Ratio, Spec};
use driver::{Driver, Failed};

/// The default buckets of the check duration: MongoDB answers in milliseconds.
pub const BUCKETS: &[f64] = crate::probe::core::FAST_BUCKETS;

/// The MongoDB families: the queries', then the ping.
pub struct Metrics {
    queries: queries::Families,
    ping: Family<ComponentOnly, GaugeF>,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Metrics {
            queries: queries::Families::register(r),
            ping: Family::default(),
        };
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
    driver: Driver,
    label: ComponentOnly,
    metrics: Arc<Metrics>,
    series: queries::Series,
    publisher: Publisher,
    gate: SeriesGate,
}

pub fn build<F: FamiliesOf<Metrics> + FamiliesOf<queue::Metrics> + ?Sized>(
    spec: &Spec,
    ctx: &BuildCtx<'_, F>,
) -> Result<MongoProbe, BuildError> {
    let metrics = FamiliesOf::<Metrics>::families(ctx.metrics).clone();
    Ok(MongoProbe {
        spec: spec.clone(),
        driver: Driver::new(spec, ctx.timeout),
        label: ComponentOnly {
            component: ctx.name.into(),
        },
        series: queries::Series::new(ctx.name, metrics.queries.clone()),
        metrics,
        publisher: Publisher::new(
            ctx.name,
            FamiliesOf::<queue::Metrics>::families(ctx.metrics).clone(),
        ),
        gate: ctx.gate.clone(),
    })
}

impl MongoProbe {
    async fn run(&self) -> CheckResult {
        let client = self.driver.client().await?;
        let started = Instant::now();
        client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| self.driver.error("ping", &e))?;
        let rtt = started.elapsed().as_secs_f64();
        if let Some(_live) = self.gate.open() {
            self.metrics.ping.get_or_create(&self.label).set(rtt);
        }
        let mut out = Outcome::healthy(Map::new());
        out.details
            .map_mut()
            .insert("ping_ms".into(), json!((rtt * 100_000.0).round() / 100.0));

        // Queries and queues run side by side on the driver's pool: a check
        // takes as long as its slowest query, not their sum.
        let (values, snaps) = futures_util::future::join(
            join_all((self.spec.queries.iter()).map(|q| queries::read(&self.driver, &client, q))),
            join_all((self.spec.queues.iter()).map(|q| queues::read(&self.driver, &client, q))),
        )
        .await;
        // What the database could not do fails the check; what one query
        // or queue got wrong (a bad operator, no privilege on its
        // collection) is named, and the others are still read.
        let values = settle(&self.spec.queries, values, &mut out);
        let snaps = settle(&self.spec.queues, snaps, &mut out);
        let (values, snaps) = match (values, snaps) {
            (Ok(v), Ok(s)) => (v, s),
            (Err(mut e), _) | (_, Err(mut e)) => {
                e.details = out.details;
                return Err(e);
            }
        };
        // MongoDB answers for a collection it has never seen as for an
        // empty one: where a result is empty, whether its collection
        // exists is asked, so that a typo in a name, or a database restored
        // without a collection, is not read as a healthy zero.
        let empty: BTreeSet<(&str, &str)> = (values.iter())
            .filter(|(_, v)| v.looks_empty())
            .map(|(q, _)| (q.database.as_str(), q.collection.as_str()))
            .chain(
                (snaps.iter())
                    .filter(|(_, s)| s.counts.iter().all(|(_, n)| *n == 0))
                    .map(|(q, _)| (q.database.as_str(), q.collection.as_str())),
            )
            .collect();
        let missing = match empty.is_empty() {
            true => BTreeSet::new(),
            false => self.driver.missing(&client, &empty).await,
        };
        let absent = |what: &str, name: &str, db: &str, coll: &str, out: &mut Outcome| {
            let gone = missing.contains(&(db, coll));
            if gone {
                out.raise(
                    Status::Degraded,
                    format!(
                        "{what} {name}: collection {db}.{coll} does not exist (check the {what}'s \
                         database and collection; MongoDB makes a collection with its first document)"
                    ),
                );
            }
            gone
        };
        let mut kept = BTreeMap::new();
        for (q, v) in values {
            if !absent("query", &q.name, &q.database, &q.collection, &mut out) {
                kept.insert(q.name.as_str(), v);
            }
        }
        let values = kept;
        let (queues, snaps): (Vec<&QueueSpec>, Vec<queue::Snapshot>) = (snaps.into_iter())
            .filter(|(q, _)| !absent("queue", &q.name, &q.database, &q.collection, &mut out))
            .unzip();
        if let Some(_live) = self.gate.open() {
            self.series.publish(&values);
            self.publisher.publish(&snaps);
        }
        for q in &self.spec.queries {
            if let Some(v) = values.get(q.name.as_str()) {
                queries::judge(q, v, &values, &mut out);
            }
        }
        for (q, s) in queues.into_iter().zip(&snaps) {
            q.thresholds.judge(s, &mut out);
        }
        if !snaps.is_empty() {
            out.details
                .map_mut()
                .insert("queues".into(), queue::details(&snaps));
        }
        Ok(out)
    }
}

/// Each spec with what its read gave: a failure of the query itself is
/// raised on `out` (degraded) and leaves it out; the first failure of the
/// database is the check's.
fn settle<'a, S, T>(
    specs: &'a [S],
    results: Vec<Result<T, Failed>>,
    out: &mut Outcome,
) -> Result<Vec<(&'a S, T)>, CheckError> {
    let mut kept = Vec::with_capacity(results.len());
    for (spec, r) in specs.iter().zip(results) {
        match r {
            Ok(v) => kept.push((spec, v)),
            Err(Failed::Own(why)) => out.raise(Status::Degraded, why),
            Err(Failed::Check(e)) => return Err(e),
        }
    }
    Ok(kept)
}

impl Probe for MongoProbe {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(self.run())
    }

    fn forget(&self) {
        self.series.forget(&self.spec.queries);
        self.metrics.ping.remove(&self.label);
        self.publisher.forget();
    }
}
