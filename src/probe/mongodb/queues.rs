//! The `queues:` of a MongoDB probe: jobs kept in a collection, counted per
//! state by their status field in one aggregation (with the oldest waiting
//! and active job), as snapshots for the shared queue families
//! (`probe::queue`).

use std::collections::BTreeMap;

use mongodb::Client;
use mongodb::bson::{Document, doc};
use serde_json::Map;

use super::config::QueueSpec;
use super::driver::{Driver, Failed};
use super::fields::{age_seconds, epoch_ms, label_value, number};
use crate::probe::queue::{JobState, Snapshot};

/// Counts one queue's jobs per state (one aggregation), with the age of
/// the oldest waiting and active job where timestamps are configured.
pub(super) async fn read(
    driver: &Driver,
    client: &Client,
    q: &QueueSpec,
) -> Result<Snapshot, Failed> {
    let coll = driver.collection(client, &q.database, &q.collection);
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
        .max_time(driver.timeout)
        .await
        .map_err(|e| driver.failed(&what, &e))?;
    let mut counts: BTreeMap<JobState, u64> = q.states.iter().map(|(s, _)| (*s, 0)).collect();
    let mut oldest_wait: Option<f64> = None;
    let mut oldest_active: Option<f64> = None;
    let min = |acc: &mut Option<f64>, v: Option<f64>| {
        if let Some(v) = v {
            *acc = Some(acc.map_or(v, |a: f64| a.min(v)));
        }
    };
    while cursor
        .advance()
        .await
        .map_err(|e| driver.failed(&what, &e))?
    {
        let d: Document = cursor
            .deserialize_current()
            .map_err(|e| driver.failed(&what, &e))?;
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
