//! Redis job queues: which queues a check reads (the configured ones, and
//! the ones discovery finds by SCAN every `discover_every`), the read-only
//! Lua script (`queues.lua`) that reads one queue per call inside the
//! check's single pipeline, its answers turned into queue snapshots
//! (`queues/reply.rs`, with the errors that name a key at fault), and the
//! stream families (length, consumer groups' pending entries and lag).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use redis::aio::MultiplexedConnection;
use redis::{Pipeline, RedisResult, Value as RValue};
use serde_json::Value;

use super::config::{QueueSpec, QueueType, Spec};
use crate::metrics::kit::SeriesGate;
use crate::probe::core::{Outcome, Status};
use crate::probe::queue::{self, Publisher, Snapshot};
use crate::util::redact::scrub;
use crate::util::sync::lock;

mod reply;

use reply::{QueueReadError, Read, snapshot};

const SCRIPT: &str = include_str!("queues.lua");

/// At most this many consumer groups per stream become label values.
const MAX_GROUPS: usize = 50;

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct GroupLabels {
    component: String,
    queue: String,
    group: String,
}

/// The stream families (the queue families are `probe::queue`'s).
#[derive(Clone)]
pub(super) struct Families {
    stream_length: Family<queue::QueueLabels, Gauge>,
    group_pending: Family<GroupLabels, Gauge>,
    group_lag: Family<GroupLabels, Gauge>,
}

impl Families {
    pub(super) fn register(r: &mut Registry) -> Self {
        let m = Families {
            stream_length: Family::default(),
            group_pending: Family::default(),
            group_lag: Family::default(),
        };
        r.register(
            "redis_stream_length",
            "Entries in a stream queue (XLEN).",
            m.stream_length.clone(),
        );
        r.register(
            "redis_stream_group_pending",
            "Entries delivered to a consumer group and not acknowledged.",
            m.group_pending.clone(),
        );
        r.register(
            "redis_stream_group_lag",
            "Entries not yet delivered to a consumer group.",
            m.group_lag.clone(),
        );
        m
    }
}

struct Discovered {
    at: Instant,
    /// Per discovering queue spec (index): the queue names found.
    names: BTreeMap<usize, (Vec<String>, bool)>,
}

/// One queue to read in this check (a configured one, or a discovered one).
pub(super) struct Target<'a> {
    name: String,
    spec: &'a QueueSpec,
    arg: String,
}

/// One probe's queues: what discovery found, the script, and the series.
pub(super) struct Queues {
    component: String,
    families: Families,
    publisher: Publisher,
    script: redis::Script,
    discovered: Mutex<Option<Discovered>>,
    groups: Mutex<BTreeSet<GroupLabels>>,
    /// The streams whose length is published.
    streams: Mutex<BTreeSet<String>>,
    gate: SeriesGate,
}

impl Queues {
    pub(super) fn new(
        component: &str,
        families: Families,
        publisher: Publisher,
        gate: SeriesGate,
    ) -> Self {
        Queues {
            component: component.to_string(),
            families,
            publisher,
            script: redis::Script::new(SCRIPT),
            discovered: Mutex::new(None),
            groups: Mutex::new(BTreeSet::new()),
            streams: Mutex::new(BTreeSet::new()),
            gate,
        }
    }

    /// The queues to read: configured ones, plus the discovered ones
    /// (refreshed by SCAN every `discover_every`).
    pub(super) async fn targets<'a>(
        &self,
        spec: &'a Spec,
        conn: &mut MultiplexedConnection,
        out: &mut Outcome,
    ) -> RedisResult<Vec<Target<'a>>> {
        let stale = lock(&self.discovered)
            .as_ref()
            .is_none_or(|d| d.at.elapsed() >= spec.discover_every);
        if stale && spec.queues.iter().any(|q| q.discover.is_some()) {
            let mut names = BTreeMap::new();
            for (i, q) in spec.queues.iter().enumerate() {
                if let Some(max) = q.discover {
                    let found = discover(conn, q, max).await?;
                    tracing::debug!(
                        component = %self.component,
                        prefix = %q.key,
                        queues = found.0.len(),
                        overflow = found.1,
                        "Queues discovered."
                    );
                    names.insert(i, found);
                }
            }
            *lock(&self.discovered) = Some(Discovered {
                at: Instant::now(),
                names,
            });
        }
        let found = lock(&self.discovered);
        let mut seen = BTreeSet::new();
        let mut targets = Vec::new();
        for (i, q) in spec.queues.iter().enumerate() {
            if q.discover.is_some() {
                let Some((list, overflow)) = found.as_ref().and_then(|d| d.names.get(&i)) else {
                    continue;
                };
                if *overflow {
                    out.raise(
                        Status::Healthy,
                        format!(
                            "more than {} {} queues under prefix `{}`: only the first are watched",
                            q.discover.unwrap_or(0),
                            q.type_.as_str(),
                            q.key
                        ),
                    );
                }
                for name in list {
                    if seen.insert(name.clone()) {
                        targets.push(Target {
                            name: name.clone(),
                            spec: q,
                            arg: format!("{}:{name}", q.key),
                        });
                    }
                }
            } else if seen.insert(q.name.clone()) {
                let arg = if q.type_.is_bull() {
                    format!("{}:{}", q.key, q.name)
                } else {
                    q.key.clone()
                };
                targets.push(Target {
                    name: q.name.clone(),
                    spec: q,
                    arg,
                });
            }
        }
        Ok(targets)
    }

    /// Adds the script calls that read `targets` (one answer each) to the
    /// check's pipeline.
    /// `now_ms` is depwatch's clock, against which the script finds the
    /// delayed jobs that are due.
    pub(super) fn add_reads(
        &self,
        pipe: &mut Pipeline,
        targets: &[Target],
        max_active_scan: u32,
        now_ms: u64,
    ) {
        if !targets.is_empty() {
            // Loading is idempotent and keeps the same round trip: a restarted
            // or flushed server has the script again before it is called.
            // Its answer comes first: it tells why a call found no script.
            pipe.cmd("SCRIPT").arg("LOAD").arg(SCRIPT);
        }
        for t in targets {
            pipe.cmd("EVALSHA")
                .arg(self.script.get_hash())
                .arg(0)
                .arg(t.spec.type_.as_str())
                .arg(&t.arg)
                .arg(max_active_scan)
                .arg(now_ms)
                .arg(MAX_GROUPS);
        }
    }

    /// `SCRIPT LOAD`'s answer, then the script's answers (one per target,
    /// in order; nothing at all without targets): snapshots judged
    /// against the thresholds, published, and shown in the details.
    /// `secrets` are scrubbed from server errors.
    pub(super) fn record(
        &self,
        targets: &[Target],
        replies: Vec<RValue>,
        now_ms: f64,
        max_scan: u32,
        secrets: &[&str],
        out: &mut Outcome,
    ) {
        let mut snaps = Vec::with_capacity(targets.len());
        let mut replies = replies.into_iter();
        let load_error = match targets.is_empty() {
            true => None,
            false => match replies.next() {
                Some(RValue::ServerError(e)) => {
                    Some(scrub(&redis::RedisError::from(e).to_string(), secrets))
                }
                _ => None,
            },
        };
        let read = Read {
            now_ms,
            max_scan,
            load_error: load_error.as_deref(),
            secrets,
        };
        for (t, reply) in targets.iter().zip(replies) {
            match snapshot(t, reply, &read) {
                Ok(s) => {
                    t.spec.thresholds.judge(&s, out);
                    missing_groups(t, &s, out);
                    rate_limited(&s, out);
                    snaps.push(s);
                }
                Err(
                    e @ (QueueReadError::Missing { .. }
                    | QueueReadError::MissingStream { .. }
                    | QueueReadError::BullNotBullmq { .. }
                    | QueueReadError::BullmqNotBull { .. }),
                ) => {
                    out.raise(Status::Degraded, format!("queue {}: {e}", t.name));
                }
                Err(e) => out.raise(
                    Status::Degraded,
                    format!("queue {}: cannot read it: {e}", t.name),
                ),
            }
        }
        if let Some(_live) = self.gate.open() {
            self.publisher.publish(&snaps);
            self.publish_groups(&snaps);
        }
        if !snaps.is_empty() {
            out.details
                .map_mut()
                .insert("queues".into(), queue::details(&snaps));
        }
    }

    fn publish_groups(&self, snaps: &[Snapshot]) {
        let m = &self.families;
        let mut now = BTreeSet::new();
        let mut streams = BTreeSet::new();
        for s in snaps {
            let Some(Value::Object(groups)) = s.extra.get("groups") else {
                continue;
            };
            if let Some(len) = s.extra.get("length").and_then(Value::as_i64) {
                let l = queue::QueueLabels {
                    component: self.component.clone(),
                    queue: s.queue.clone(),
                };
                m.stream_length.get_or_create(&l).set(len);
                streams.insert(l.queue);
            }
            for (g, v) in groups {
                let l = GroupLabels {
                    component: self.component.clone(),
                    queue: s.queue.clone(),
                    group: g.clone(),
                };
                m.group_pending
                    .get_or_create(&l)
                    .set(v["pending"].as_i64().unwrap_or(0));
                if let Some(lag) = v["lag"].as_i64() {
                    m.group_lag.get_or_create(&l).set(lag);
                }
                now.insert(l);
            }
        }
        let mut known = lock(&self.groups);
        for gone in known.difference(&now) {
            m.group_pending.remove(gone);
            m.group_lag.remove(gone);
        }
        *known = now;
        // A stream that could not be read (deleted, another type) has no
        // length to show, as it has no jobs series.
        let mut known = lock(&self.streams);
        for gone in known.difference(&streams) {
            m.stream_length.remove(&queue::QueueLabels {
                component: self.component.clone(),
                queue: gone.clone(),
            });
        }
        *known = streams;
    }

    /// Removes the component's queue and stream series.
    pub(super) fn forget(&self) {
        // With no snapshot, every group and stream series published goes.
        self.publish_groups(&[]);
        self.publisher.forget();
    }
}

/// Says so when a BullMQ queue is rate limited: its jobs wait on purpose,
/// which explains a backlog or an old waiting job (judged all the same:
/// a partner that throttles for an hour stalls the work for an hour).
fn rate_limited(s: &Snapshot, out: &mut Outcome) {
    if let Some(secs) = s
        .extra
        .get("rate_limited_for_seconds")
        .and_then(Value::as_f64)
    {
        out.raise(
            Status::Healthy,
            format!(
                "queue {}: rate limited for another {} (BullMQ's limiter): its workers take no job until then",
                s.queue,
                crate::config::units::format_duration(std::time::Duration::from_secs_f64(secs.ceil()))
            ),
        );
    }
}

/// A stream's configured consumer groups that it does not have: their
/// consumers get NOGROUP (a stream deleted and made again by XADD loses
/// its groups), while the entries pile up.
fn missing_groups(t: &Target, s: &Snapshot, out: &mut Outcome) {
    // Past MAX_GROUPS the details do not name every group: no verdict.
    let Some(Value::Object(have)) = s
        .extra
        .get("groups")
        .filter(|g| g.as_object().is_some_and(|g| g.len() < MAX_GROUPS))
    else {
        return;
    };
    for g in t.spec.groups.iter().filter(|g| !have.contains_key(*g)) {
        let key = &t.spec.key;
        out.raise(
            Status::Degraded,
            format!(
                "queue {}: consumer group {g} does not exist on stream {key} (its consumers get NOGROUP: create it with XGROUP CREATE {key} {g} $ MKSTREAM, or check the group's name)",
                t.name
            ),
        );
    }
}

/// SCAN (never KEYS) for the marker key every queue of the layout has:
/// BullMQ's `meta` hash, Bull's `id` counter. Sorted; at most `max`.
async fn discover(
    conn: &mut MultiplexedConnection,
    q: &QueueSpec,
    max: usize,
) -> RedisResult<(Vec<String>, bool)> {
    let (suffix, ty) = match q.type_ {
        QueueType::Bullmq => (":meta", "hash"),
        _ => (":id", "string"),
    };
    let head = format!("{}:", q.key);
    let pattern = format!("{}*{suffix}", glob_escape(&head));
    let mut found = BTreeSet::new();
    let mut cursor: u64 = 0;
    // A bound on round trips even for a huge keyspace (10M keys).
    for _ in 0..10_000 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg(ty)
            .query_async(conn)
            .await?;
        for k in keys {
            if let Some(name) = k
                .strip_prefix(&head)
                .and_then(|r| r.strip_suffix(suffix))
                .filter(|n| !n.is_empty())
            {
                found.insert(name.to_string());
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    if q.type_ == QueueType::Bull && !found.is_empty() {
        // BullMQ keeps an `:id` counter too: its queues are not Bull's.
        let mut pipe = redis::pipe();
        // A meta key of another type is no BullMQ queue's: it stays.
        pipe.ignore_errors();
        for name in &found {
            pipe.cmd("HMGET")
                .arg(format!("{head}{name}:meta"))
                .arg("opts.maxLenEvents")
                .arg("version");
        }
        let metas: Vec<RValue> = pipe.query_async(conn).await?;
        let bullmq = |meta: &RValue| {
            let Ok((events, version)) =
                redis::from_redis_value::<(Option<String>, Option<String>)>(meta.clone())
            else {
                return false;
            };
            events.is_some() || version.is_some_and(|v| v.starts_with("bullmq"))
        };
        found = found
            .into_iter()
            .zip(metas)
            .filter(|(_, m)| !bullmq(m))
            .map(|(name, _)| name)
            .collect();
    }
    let overflow = found.len() > max;
    Ok((found.into_iter().take(max).collect(), overflow))
}

/// Escapes the glob characters of a SCAN pattern.
pub(super) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_is_escaped() {
        assert_eq!(glob_escape("a*b[c]:"), "a\\*b\\[c\\]:");
    }
}
