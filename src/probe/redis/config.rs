//! The Redis kind's configuration: its own keys (`Raw`, one `RawQueue` per
//! watched queue) checked into a [`Spec`] with every problem reported: the
//! URL, credentials and TLS roots, the hit-rate threshold, and each queue's
//! type, key or prefix, discovery and thresholds.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::IntoConnectionInfo;
use serde::Deserialize;

use crate::config::check::Checker;
use crate::config::units::{Dur, Secret};
use crate::config::yaml::Node;
use crate::probe::queue::{JobState, Thresholds};
use crate::util::redact::{redact_url, scrub};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    url: Secret,
    username: Option<String>,
    password: Option<Secret>,
    password_file: Option<String>,
    tls_ca_file: Option<String>,
    hit_rate_degraded_below: Option<f64>,
    hit_rate_min_lookups: Option<u64>,
    memory_degraded_above: Option<f64>,
    #[serde(default)]
    queues: Vec<RawQueue>,
    discover_every: Option<Dur>,
    max_active_scan: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    name: Option<String>,
    /// Checked in stage two so that a wrong type does not hide other problems.
    #[serde(rename = "type")]
    type_: String,
    prefix: Option<String>,
    key: Option<String>,
    #[serde(default)]
    discover: bool,
    max_queues: Option<usize>,
    state: Option<String>,
    degraded_above: Option<u64>,
    unhealthy_above: Option<u64>,
    stuck_after: Option<Dur>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueType {
    Bullmq,
    Bull,
    List,
    Stream,
    Zset,
}

impl QueueType {
    const NAMES: &[&str] = &["bullmq", "bull", "list", "stream", "zset"];

    fn from_name(s: &str) -> Option<QueueType> {
        Some(match s {
            "bullmq" => QueueType::Bullmq,
            "bull" => QueueType::Bull,
            "list" => QueueType::List,
            "stream" => QueueType::Stream,
            "zset" => QueueType::Zset,
            _ => return None,
        })
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            QueueType::Bullmq => "bullmq",
            QueueType::Bull => "bull",
            QueueType::List => "list",
            QueueType::Stream => "stream",
            QueueType::Zset => "zset",
        }
    }

    pub(super) fn is_bull(self) -> bool {
        matches!(self, QueueType::Bullmq | QueueType::Bull)
    }
}

/// One configured queue, or a family of queues found by SCAN.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueSpec {
    pub name: String,
    pub type_: QueueType,
    /// bull/bullmq: the key prefix (`bull`); others: the key.
    pub key: String,
    pub discover: Option<usize>,
    /// list/zset: the state its items are in.
    pub state: JobState,
    pub thresholds: Thresholds,
    /// stream: the consumer groups that must exist on it.
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub url: Secret,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// PEM roots for `rediss://` instead of the system's.
    pub tls_ca: Option<Vec<u8>>,
    pub hit_rate_degraded_below: Option<f64>,
    pub hit_rate_min_lookups: u64,
    /// The share of `maxmemory` in use above which the component is
    /// degraded (a full Redis under `noeviction` is degraded without it).
    pub memory_degraded_above: Option<f64>,
    pub queues: Vec<QueueSpec>,
    pub discover_every: Duration,
    pub max_active_scan: u32,
}

impl Spec {
    pub fn parse(node: &Node, path: &str, c: &Checker, also: &[&'static str]) -> Option<Spec> {
        let raw: Raw = c.parse_kind(node, path, also)?;
        let password = c.secret(path, "password", raw.password, raw.password_file.as_deref());
        let scheme_ok =
            raw.url.expose().starts_with("redis://") || raw.url.expose().starts_with("rediss://");
        match raw.url.expose().into_connection_info() {
            _ if !scheme_ok => c.problem(
                &format!("{path}.url"),
                format!("unsupported URL `{}`", redact_url(raw.url.expose())),
                "use redis://HOST:PORT/DB, or rediss:// for TLS",
            ),
            Err(e) => c.problem(
                &format!("{path}.url"),
                format!(
                    "invalid Redis URL `{}`: {}",
                    redact_url(raw.url.expose()),
                    scrub(&e.to_string(), &[raw.url.expose()])
                ),
                "use redis://[USER:PASSWORD@]HOST:PORT/DB, or rediss:// for TLS",
            ),
            Ok(_) => {}
        }
        let tls_ca = raw.tls_ca_file.as_deref().and_then(|f| {
            let at = format!("{path}.tls_ca_file");
            if !raw.url.expose().starts_with("rediss://") {
                c.problem(
                    &at,
                    "tls_ca_file applies to rediss:// URLs only",
                    "use rediss:// for TLS, or remove tls_ca_file",
                );
            }
            let p = c.path(&at, f);
            match c.read_file(&p) {
                Ok(pem) if pem.windows(11).any(|w| w == b"-----BEGIN ") => Some(pem),
                Ok(_) => {
                    c.problem(
                        &at,
                        format!("{} holds no PEM certificate", p.display()),
                        "give the CA certificate that signed the server's, in PEM",
                    );
                    None
                }
                Err(e) => {
                    c.problem(
                        &at,
                        format!("cannot read {}: {e}", p.display()),
                        "check the path and that depwatch may read it",
                    );
                    None
                }
            }
        });
        if let Some(r) = raw.hit_rate_degraded_below
            && !(0.0..=1.0).contains(&r)
        {
            c.problem(
                &format!("{path}.hit_rate_degraded_below"),
                format!("hit_rate_degraded_below {r} is not a ratio"),
                "write a number between 0 and 1, e.g. 0.8",
            );
        }
        if let Some(r) = raw.memory_degraded_above
            && !(r > 0.0 && r <= 1.0)
        {
            c.problem(
                &format!("{path}.memory_degraded_above"),
                format!("memory_degraded_above {r} is not a share of maxmemory"),
                "write a number above 0 and at most 1, e.g. 0.9",
            );
        }
        let mut queues = Vec::with_capacity(raw.queues.len());
        let mut names = BTreeSet::new();
        for (i, q) in raw.queues.into_iter().enumerate() {
            let at = format!("{path}.queues[{i}]");
            if let Some(spec) = parse_queue(q, &at, c) {
                if spec.discover.is_none() {
                    c.unique_name(&mut names, &at, "queue", &spec.name);
                }
                queues.push(spec);
            }
        }
        let max_active_scan = raw.max_active_scan.unwrap_or(1000);
        if max_active_scan > 100_000 {
            c.problem(
                &format!("{path}.max_active_scan"),
                format!("max_active_scan {max_active_scan} is above 100000"),
                "each active job costs one lookup of its lock inside Redis",
            );
        }
        let discover_every = raw.discover_every.map_or(Duration::from_secs(60), |d| d.0);
        if discover_every > Duration::from_secs(86_400) {
            c.problem(
                &format!("{path}.discover_every"),
                "discover_every is longer than 1d",
                "new queues should appear within minutes: e.g. 60s",
            );
        }
        Some(Spec {
            url: raw.url,
            username: raw.username,
            password,
            tls_ca,
            hit_rate_degraded_below: raw.hit_rate_degraded_below,
            hit_rate_min_lookups: raw.hit_rate_min_lookups.unwrap_or(100),
            memory_degraded_above: raw.memory_degraded_above,
            queues,
            discover_every,
            max_active_scan,
        })
    }
}

fn parse_queue(q: RawQueue, at: &str, c: &Checker) -> Option<QueueSpec> {
    let Some(type_) = QueueType::from_name(&q.type_) else {
        c.problem(
            &format!("{at}.type"),
            format!("unknown queue type `{}`", q.type_),
            format!("one of: {}", QueueType::NAMES.join(", ")),
        );
        return None;
    };
    let thresholds = Thresholds::parse(q.degraded_above, q.unhealthy_above, q.stuck_after, at, c);
    // A list or zset holds bare items: nothing tells how long one waited,
    // and a threshold that is never judged would pass for a guard.
    if q.stuck_after.is_some() && matches!(type_, QueueType::List | QueueType::Zset) {
        c.problem(
            &format!("{at}.stuck_after"),
            format!(
                "`stuck_after` does not apply to {} queues: their items carry no time",
                type_.as_str()
            ),
            "remove it and watch the depth with degraded_above / unhealthy_above",
        );
    }
    let state = match q.state.as_deref() {
        None => JobState::Waiting,
        Some(s) => match JobState::from_name(s) {
            Some(st) if !type_.is_bull() && type_ != QueueType::Stream => st,
            Some(_) => {
                c.problem(
                    &format!("{at}.state"),
                    format!("`state` does not apply to {} queues", type_.as_str()),
                    "their states are read from the queue itself; remove the key",
                );
                JobState::Waiting
            }
            None => {
                c.problem(
                    &format!("{at}.state"),
                    format!("unknown state `{s}`"),
                    format!("one of: {}", JobState::NAMES.join(", ")),
                );
                JobState::Waiting
            }
        },
    };
    if !q.groups.is_empty() && type_ != QueueType::Stream {
        c.problem(
            &format!("{at}.groups"),
            format!("`groups` does not apply to {} queues", type_.as_str()),
            "consumer groups belong to streams: remove the key",
        );
    }
    if q.groups.iter().any(String::is_empty) {
        c.problem(
            &format!("{at}.groups"),
            "a consumer group name is empty",
            "write the names the consumers pass to XREADGROUP GROUP",
        );
    }
    if type_.is_bull() {
        if q.key.is_some() {
            c.problem(
                &format!("{at}.key"),
                format!("{} queues are found by `prefix` and `name`", type_.as_str()),
                "write `prefix: bull` and the queue's `name` (or `discover: true`)",
            );
        }
        let prefix = q.prefix.unwrap_or_else(|| "bull".into());
        if q.discover {
            if q.name.is_some() {
                c.problem(
                    &format!("{at}.name"),
                    "`name` and `discover: true` exclude each other",
                    "discovery names each queue after its keys",
                );
            }
            let max = q.max_queues.unwrap_or(100);
            if max == 0 || max > 10_000 {
                c.problem(
                    &format!("{at}.max_queues"),
                    format!("max_queues {max} is out of range"),
                    "use 1 to 10000: each queue is a label value",
                );
            }
            return Some(QueueSpec {
                name: String::new(),
                type_,
                key: prefix,
                discover: Some(max),
                state,
                thresholds,
                groups: Vec::new(),
            });
        }
        let Some(name) = q.name else {
            c.problem(
                at,
                "a queue needs a `name` (or `discover: true`)",
                "the name is the queue's, as given to `new Queue(name)`",
            );
            return None;
        };
        if q.max_queues.is_some() {
            c.problem(
                &format!("{at}.max_queues"),
                "max_queues applies to `discover: true` only",
                "remove it, or set `discover: true`",
            );
        }
        return Some(QueueSpec {
            name,
            type_,
            key: prefix,
            discover: None,
            state,
            thresholds,
            groups: Vec::new(),
        });
    }
    for (set, key) in [
        (q.prefix.is_some(), "prefix"),
        (q.discover, "discover"),
        (q.max_queues.is_some(), "max_queues"),
    ] {
        if set {
            c.problem(
                &format!("{at}.{key}"),
                format!("`{key}` applies to bull and bullmq queues only"),
                "a list, zset or stream queue is one `key`",
            );
        }
    }
    let Some(key) = q.key else {
        c.problem(
            at,
            format!("a {} queue needs a `key`", type_.as_str()),
            "the Redis key holding the queue",
        );
        return None;
    };
    Some(QueueSpec {
        name: q.name.unwrap_or_else(|| key.clone()),
        type_,
        key,
        discover: None,
        state,
        thresholds,
        groups: q.groups,
    })
}
