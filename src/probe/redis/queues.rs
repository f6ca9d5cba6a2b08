//! Redis job queues: which queues a check reads (the configured ones, and
//! the ones discovery finds by SCAN every `discover_every`), the read-only
//! Lua script (`queues.lua`) that reads one queue per call inside the
//! check's single pipeline, its answers turned into queue snapshots, and the
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
use serde_json::{Map, Value, json};

use super::config::{QueueSpec, QueueType, Spec};
use crate::metrics::kit::SeriesGate;
use crate::probe::core::{Outcome, Status};
use crate::probe::queue::{self, JobState, Publisher, Snapshot};
use crate::util::redact::scrub;
use crate::util::sync::lock;

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
                .arg(now_ms);
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
    pub(super) fn forget(&self, spec: &Spec) {
        self.publish_groups(&[]);
        for s in spec.queues.iter().filter(|q| q.type_ == QueueType::Stream) {
            self.families.stream_length.remove(&queue::QueueLabels {
                component: self.component.clone(),
                queue: s.name.clone(),
            });
        }
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

/// Why one queue's answer could not be read.
#[derive(Debug, thiserror::Error)]
enum QueueReadError {
    /// Redis' own error, with the connection's secrets scrubbed.
    #[error("{0}")]
    Server(String),
    /// Redis' refusal of the script to this ACL user, scrubbed.
    #[error(
        "{0} (each queue is read by one read-only script: the user needs +evalsha +script|load and the read commands it runs, +@read)"
    )]
    Denied(String),
    #[error("unexpected answer")]
    Unexpected,
    #[error("unexpected answer from the queue script")]
    UnexpectedFromScript,
    /// The queue's marker key (see `queues.lua`) does not exist.
    #[error(
        "no such {layout} queue: {marker} does not exist (every {layout} queue has it; check the queue's name and prefix)"
    )]
    Missing {
        layout: &'static str,
        marker: String,
    },
    /// `type: bullmq` for a Bull 3 queue: its id counter, no meta hash.
    #[error(
        "no such BullMQ queue: {marker} does not exist, but {id} does: a Bull (v3) queue (write `type: bull`)"
    )]
    BullNotBullmq { marker: String, id: String },
    /// `type: bull` for a BullMQ queue (BullMQ keeps an id counter too).
    #[error(
        "{meta} is BullMQ's (opts.maxLenEvents or a bullmq version in it): read as Bull, its prioritized and waiting-children jobs would be missed (write `type: bullmq`)"
    )]
    BullmqNotBull { meta: String },
    /// A stream queue's key does not exist (an empty stream still does).
    #[error(
        "no such stream: {key} does not exist (a stream stays when emptied, and XGROUP CREATE … MKSTREAM makes one; check the queue's key)"
    )]
    MissingStream { key: String },
    /// A key the queue is read from holds another type.
    #[error(
        "key {key} is a {is} where {what} a {want} (check the queue's {config}: it names a key of something else)"
    )]
    WrongType {
        key: String,
        is: String,
        want: String,
        what: String,
        config: &'static str,
    },
    /// The ACL user may not read one of the queue's keys.
    #[error(
        "this Redis user may not read {key} (grant read access to the queue's keys: ACL SETUSER USER %R~{pattern})"
    )]
    KeyDenied { key: String, pattern: String },
    /// Another error reading one key, scrubbed.
    #[error("reading {key}: {text}")]
    Key { key: String, text: String },
}

/// The script's answer about a key it could not read:
/// `['fault', key, error, its type, the type expected]`.
fn fault(t: &Target, items: &[RValue], secrets: &[&str]) -> QueueReadError {
    let text = |i: usize| {
        items
            .get(i)
            .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
            .unwrap_or_default()
    };
    let (key, error, is, want) = (text(1), scrub(&text(2), secrets), text(3), text(4));
    let bull = t.spec.type_.is_bull();
    if error.starts_with("WRONGTYPE") {
        let what = match bull {
            true => format!("the {} queue keeps", t.spec.type_.as_str()),
            false => format!("a {} queue needs", t.spec.type_.as_str()),
        };
        return QueueReadError::WrongType {
            key,
            is: if is.is_empty() {
                "key of another type".into()
            } else {
                is
            },
            want,
            what,
            config: if bull {
                "prefix and name"
            } else {
                "key and type"
            },
        };
    }
    if error.contains("can't run this command") {
        return QueueReadError::Denied(format!("reading {key}: {error}"));
    }
    if error.contains("NOPERM") || error.contains("can't access") {
        let pattern = if bull {
            format!("{}:*", glob_escape(&t.arg))
        } else {
            glob_escape(&t.arg)
        };
        return QueueReadError::KeyDenied { key, pattern };
    }
    QueueReadError::Key { key, text: error }
}

/// What reading every queue of one check shares.
struct Read<'a> {
    /// depwatch's clock when the answers came.
    now_ms: f64,
    max_scan: u32,
    /// Why `SCRIPT LOAD` failed, if it did.
    load_error: Option<&'a str>,
    /// Scrubbed from server errors.
    secrets: &'a [&'a str],
}

/// The script's answer for one queue as a snapshot.
fn snapshot(t: &Target, reply: RValue, read: &Read) -> Result<Snapshot, QueueReadError> {
    let Read {
        now_ms,
        max_scan,
        secrets,
        ..
    } = *read;
    if let RValue::ServerError(e) = reply {
        if e.kind() == Some(redis::ServerErrorKind::NoScript) {
            // The same pipeline loaded it just before: either loading
            // failed (most often a user without +script|load), or someone
            // flushed the script cache in between.
            return Err(match read.load_error {
                Some(why) => QueueReadError::Denied(format!(
                    "NOSCRIPT: the script is not loaded, and loading it failed: {why}"
                )),
                None => QueueReadError::Server(
                    "NOSCRIPT: the script cache was flushed between loading the script and \
                     calling it (SCRIPT FLUSH); the next check loads it again"
                        .into(),
                ),
            });
        }
        let no_perm = e.kind() == Some(redis::ServerErrorKind::NoPerm);
        let text = scrub(&redis::RedisError::from(e).to_string(), secrets);
        // An ACL user without the scripting commands, or without the
        // commands the script runs (ACLs apply inside scripts too).
        return Err(match no_perm || text.contains("can't run this command") {
            true => QueueReadError::Denied(text),
            false => QueueReadError::Server(text),
        });
    }
    let RValue::Array(items) = reply else {
        return Err(QueueReadError::Unexpected);
    };
    let tag = match items.first() {
        Some(RValue::BulkString(b)) => b.as_slice(),
        _ => &[],
    };
    if tag == b"fault" {
        return Err(fault(t, &items, secrets));
    }
    let text = |i: usize| {
        items
            .get(i)
            .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
    };
    if tag == b"layout" {
        return Err(QueueReadError::BullmqNotBull {
            meta: text(1).unwrap_or_default(),
        });
    }
    if tag == b"missing" {
        let marker = text(1).unwrap_or_default();
        if let Some(id) = text(2) {
            return Err(QueueReadError::BullNotBullmq { marker, id });
        }
        return Err(match t.spec.type_ {
            QueueType::Bullmq => QueueReadError::Missing {
                layout: "BullMQ",
                marker,
            },
            QueueType::Bull => QueueReadError::Missing {
                layout: "Bull",
                marker,
            },
            _ => QueueReadError::MissingStream { key: marker },
        });
    }
    let int = |i: usize| -> i64 {
        items
            .get(i)
            .and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok())
            .unwrap_or(0)
    };
    let n = |i: usize| int(i).max(0) as u64;
    let age = |ts: i64| (ts >= 0).then(|| ((now_ms - ts as f64) / 1000.0).max(0.0));
    let mut s = Snapshot {
        queue: t.name.clone(),
        ..Snapshot::default()
    };
    match t.spec.type_ {
        QueueType::List | QueueType::Zset => {
            s.counts = vec![(t.spec.state, n(0))];
        }
        QueueType::Stream => {
            let len = n(0);
            let array = |i: usize| match items.get(i) {
                Some(RValue::Array(g)) => g.as_slice(),
                _ => &[],
            };
            let (groups, counted, next_ids, idles) = (array(1), array(2), array(3), array(4));
            let mut waited: Option<f64> = None;
            let mut running: Option<f64> = None;
            let mut lag_sum = 0;
            let mut pending_sum = 0;
            let mut gs = Map::new();
            for (i, g) in groups.iter().enumerate().take(MAX_GROUPS) {
                let f = pairs(g);
                let name = f.get("name").cloned().unwrap_or_default();
                let pending = f
                    .get("pending")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0u64);
                let mut group = json!({ "pending": pending });
                // Redis counts lag as entries added minus entries read, so
                // entries trimmed before the group read them count too: none
                // can wait that the stream no longer holds.
                let lag = match f.get("lag").and_then(|v| v.parse::<u64>().ok()) {
                    Some(lag) => Some(lag.min(len)),
                    // No lag from Redis (entries deleted in the middle, a
                    // group set to an arbitrary ID, Redis < 7): the script
                    // counted the entries after the last delivered one, up
                    // to max_active_scan.
                    None => {
                        let c = counted
                            .get(i)
                            .and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok())
                            .and_then(|c| u64::try_from(c).ok());
                        if let Some(c) = c {
                            group["lag_counted"] = json!(true);
                            if c >= u64::from(max_scan) {
                                group["lag_at_least"] = json!(true);
                            }
                        }
                        c
                    }
                };
                group["lag"] = json!(lag);
                if let Some(a) = next_ids
                    .get(i)
                    .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                    .and_then(|id| entry_ms(&id))
                    .map(|ms| ((now_ms - ms) / 1000.0).max(0.0))
                {
                    waited = Some(waited.map_or(a, |w| w.max(a)));
                }
                if let Some(idle) = idles
                    .get(i)
                    .and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok())
                    .filter(|ms| *ms >= 0)
                {
                    let a = idle as f64 / 1000.0;
                    running = Some(running.map_or(a, |r| r.max(a)));
                }
                lag_sum += lag.unwrap_or(0);
                pending_sum += pending;
                gs.insert(name, group);
            }
            let waiting = if groups.is_empty() { len } else { lag_sum };
            s.counts = vec![
                (JobState::Waiting, waiting),
                (JobState::Active, pending_sum),
            ];
            // Ages need a group: without one, nothing tells what was read.
            if !groups.is_empty() {
                s.oldest_waiting_age = Some(waited.unwrap_or(0.0));
                s.oldest_active_age = Some(running.unwrap_or(0.0));
            }
            s.extra.insert("length".into(), json!(len));
            s.extra.insert("groups".into(), Value::Object(gs));
        }
        QueueType::Bullmq | QueueType::Bull => {
            if items.len() < 16 {
                return Err(QueueReadError::UnexpectedFromScript);
            }
            let paused = int(8) == 1;
            let (wait, paused_n) = if paused {
                // A paused queue's waiting jobs are not waiting for a worker.
                (0, n(0) + n(2))
            } else {
                (n(0), n(2))
            };
            s.counts = vec![
                (JobState::Waiting, wait),
                (JobState::Active, n(1)),
                (JobState::Paused, paused_n),
                (JobState::Delayed, n(3)),
            ];
            if t.spec.type_ == QueueType::Bullmq {
                s.counts.push((JobState::Prioritized, n(4)));
                s.counts.push((JobState::WaitingChildren, n(5)));
            }
            s.counts.push((JobState::Completed, n(6)));
            s.counts.push((JobState::Failed, n(7)));
            s.paused = Some(paused);
            // A delayed job past its time waits as much as a waiting one:
            // for a worker to promote it (none left: it never runs).
            let overdue = age(int(14)).filter(|_| n(13) > 0);
            let waited = age(int(9)).into_iter().chain(overdue).reduce(f64::max);
            s.oldest_waiting_age = Some(waited.unwrap_or(0.0));
            s.extra.insert("delayed_due".into(), json!(n(13)));
            if int(15) > 0 {
                s.extra.insert(
                    "rate_limited_for_seconds".into(),
                    json!((int(15) as f64 / 100.0).round() / 10.0),
                );
            }
            s.oldest_active_age = Some(age(int(10)).unwrap_or(0.0));
            s.stalled = Some(n(11));
            if n(12) < n(1) {
                s.extra.insert("stalled_checked".into(), json!(n(12)));
            }
        }
    }
    Ok(s)
}

/// The time (ms since the epoch) in a stream entry ID that Redis made
/// (`XADD key *`); `None` for an ID written by hand (`1-1`), whose first
/// part is no time: one before 2001 is taken as such.
fn entry_ms(id: &str) -> Option<f64> {
    let ms: u64 = id.split_once('-').map_or(id, |(ms, _)| ms).parse().ok()?;
    (ms >= 1_000_000_000_000).then_some(ms as f64)
}

/// A flat `[k1, v1, k2, v2…]` reply (or a RESP3 map) as text pairs.
fn pairs(v: &RValue) -> BTreeMap<String, String> {
    let text = |v: &RValue| match v {
        RValue::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        RValue::SimpleString(s) => s.clone(),
        RValue::Int(i) => i.to_string(),
        _ => String::new(),
    };
    let mut out = BTreeMap::new();
    match v {
        RValue::Array(items) => {
            for kv in items.chunks(2) {
                if let [k, v] = kv
                    && !matches!(v, RValue::Nil)
                {
                    out.insert(text(k), text(v));
                }
            }
        }
        RValue::Map(items) => {
            for (k, v) in items {
                if !matches!(v, RValue::Nil) {
                    out.insert(text(k), text(v));
                }
            }
        }
        _ => {}
    }
    out
}

/// Escapes the glob characters of a SCAN pattern.
fn glob_escape(s: &str) -> String {
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
    fn stream_ids_made_by_redis_carry_their_time() {
        assert_eq!(entry_ms("1796672833208-0"), Some(1_796_672_833_208.0));
        assert_eq!(entry_ms("1-1"), None);
        assert_eq!(entry_ms("not-an-id"), None);
    }

    #[test]
    fn glob_is_escaped() {
        assert_eq!(glob_escape("a*b[c]:"), "a\\*b\\[c\\]:");
    }
}
