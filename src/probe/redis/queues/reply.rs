//! One queue's answer of the queue script (`queues.lua`): read into a
//! [`Snapshot`], or into the error that names the queue's key at fault and
//! what to do about it.

use std::collections::BTreeMap;

use redis::Value as RValue;
use serde_json::{Map, Value, json};

use super::super::config::QueueType;
use super::{MAX_GROUPS, Target, glob_escape};
use crate::probe::queue::{JobState, Snapshot};
use crate::util::redact::scrub;

/// Why one queue's answer could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum QueueReadError {
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
    let text = |i: usize| at::<String>(items, i).unwrap_or_default();
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
pub(super) struct Read<'a> {
    /// depwatch's clock when the answers came.
    pub(super) now_ms: f64,
    pub(super) max_scan: u32,
    /// Why `SCRIPT LOAD` failed, if it did.
    pub(super) load_error: Option<&'a str>,
    /// Scrubbed from server errors.
    pub(super) secrets: &'a [&'a str],
}

/// The script's answer for one queue as a snapshot.
pub(super) fn snapshot(t: &Target, reply: RValue, read: &Read) -> Result<Snapshot, QueueReadError> {
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
    let text = |i: usize| at::<String>(&items, i);
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
    let int = |i: usize| at::<i64>(&items, i).unwrap_or(0);
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
            // Redis made the entry IDs with its own clock, which the script
            // read: another host's clock (depwatch's) off by a minute would
            // put a minute into every age, or hide one.
            let clock = match int(5) {
                ms if ms > 0 => ms as f64,
                _ => now_ms,
            };
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
                        let c = at::<i64>(counted, i).and_then(|c| u64::try_from(c).ok());
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
                if let Some(a) = at::<String>(next_ids, i)
                    .and_then(|id| entry_ms(&id))
                    .map(|ms| ((clock - ms) / 1000.0).max(0.0))
                {
                    waited = Some(waited.map_or(a, |w| w.max(a)));
                }
                if let Some(idle) = at::<i64>(idles, i).filter(|ms| *ms >= 0) {
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

/// Item `i` of an answer as a `T`, if it is one.
fn at<T: redis::FromRedisValue>(items: &[RValue], i: usize) -> Option<T> {
    items
        .get(i)
        .and_then(|v| redis::from_redis_value::<T>(v.clone()).ok())
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

#[cfg(test)]
mod tests {
    use super::super::super::config::QueueSpec;
    use super::*;

    /// A stream's answer as the script gives it: one group `g` whose next
    /// entry to deliver was added at `added_ms`, Redis's clock at `clock_ms`.
    fn stream_reply(added_ms: i64, clock_ms: i64) -> RValue {
        let bulk = |s: &str| RValue::BulkString(s.as_bytes().to_vec());
        let group = RValue::Array(vec![
            bulk("name"),
            bulk("g"),
            bulk("pending"),
            RValue::Int(0),
            bulk("lag"),
            RValue::Int(1),
        ]);
        RValue::Array(vec![
            RValue::Int(1),
            RValue::Array(vec![group]),
            RValue::Array(vec![RValue::Int(-1)]),
            RValue::Array(vec![bulk(&format!("{added_ms}-0"))]),
            RValue::Array(vec![RValue::Int(-1)]),
            RValue::Int(clock_ms),
        ])
    }

    #[test]
    fn stream_ages_are_taken_on_the_clock_of_redis_that_made_the_ids() {
        let spec = QueueSpec {
            name: "events".into(),
            type_: QueueType::Stream,
            key: "events".into(),
            discover: None,
            state: JobState::Waiting,
            thresholds: Default::default(),
            groups: Vec::new(),
        };
        let t = Target {
            name: "events".into(),
            spec: &spec,
            arg: "events".into(),
        };
        // Redis's clock is an hour behind depwatch's host; the entry was
        // added 30 s ago by Redis's clock.
        let redis_now = 1_796_672_833_208;
        let depwatch_now = (redis_now + 3_600_000) as f64;
        let read = Read {
            now_ms: depwatch_now,
            max_scan: 100,
            load_error: None,
            secrets: &[],
        };
        let s = snapshot(&t, stream_reply(redis_now - 30_000, redis_now), &read).unwrap();
        assert_eq!(s.oldest_waiting_age, Some(30.0));
        // An answer without Redis's clock (none read): depwatch's.
        let mut old = stream_reply(redis_now - 30_000, redis_now);
        if let RValue::Array(items) = &mut old {
            items.truncate(5);
        }
        let s = snapshot(&t, old, &read).unwrap();
        assert_eq!(s.oldest_waiting_age, Some(3630.0));
    }

    #[test]
    fn stream_ids_made_by_redis_carry_their_time() {
        assert_eq!(entry_ms("1796672833208-0"), Some(1_796_672_833_208.0));
        assert_eq!(entry_ms("1-1"), None);
        assert_eq!(entry_ms("not-an-id"), None);
    }
}
