//! `kind: redis` — a Redis cache and its job queues.
//!
//! Each check sends ONE pipeline: PING, INFO, and one read-only script call
//! per queue (`queues.lua`), so a check costs one round trip however many
//! queues are watched. Only queue discovery (`discover: true`, SCAN, never
//! KEYS) adds round trips, and only when the discovered list is refreshed
//! (`discover_every`). The connection is opened lazily and reopened after a
//! connection error or a check cut short by its timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, Value as RValue};
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
use crate::metrics::kit::{AbsCounter, ComponentOnly, SeriesGate};
use crate::util::redact::{redact_url, scrub};
use crate::util::sync::lock;

/// How a Redis check fails (the counters of these start at 0).
pub const REASONS: &[Reason] = &[
    Reason::Connect,
    Reason::Auth,
    Reason::Tls,
    Reason::Timeout,
    Reason::BadResponse,
];

const SCRIPT: &str = include_str!("queues.lua");

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

    fn as_str(self) -> &'static str {
        match self {
            QueueType::Bullmq => "bullmq",
            QueueType::Bull => "bull",
            QueueType::List => "list",
            QueueType::Stream => "stream",
            QueueType::Zset => "zset",
        }
    }

    fn is_bull(self) -> bool {
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
            let p = c.resolve(f);
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
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DbLabels {
    component: String,
    db: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct GroupLabels {
    component: String,
    queue: String,
    group: String,
}

/// The Redis families, labelled by component.
pub struct Metrics {
    hits: Family<ComponentOnly, AbsCounter>,
    misses: Family<ComponentOnly, AbsCounter>,
    evicted: Family<ComponentOnly, AbsCounter>,
    expired: Family<ComponentOnly, AbsCounter>,
    memory_used: Family<ComponentOnly, Gauge>,
    memory_max: Family<ComponentOnly, Gauge>,
    clients: Family<ComponentOnly, Gauge>,
    keys: Family<DbLabels, Gauge>,
    stream_length: Family<queue::QueueLabels, Gauge>,
    group_pending: Family<GroupLabels, Gauge>,
    group_lag: Family<GroupLabels, Gauge>,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Metrics {
            hits: Family::default(),
            misses: Family::default(),
            evicted: Family::default(),
            expired: Family::default(),
            memory_used: Family::default(),
            memory_max: Family::default(),
            clients: Family::default(),
            keys: Family::default(),
            stream_length: Family::default(),
            group_pending: Family::default(),
            group_lag: Family::default(),
        };
        r.register(
            "redis_keyspace_hits",
            "Successful key lookups (Redis INFO keyspace_hits).",
            m.hits.clone(),
        );
        r.register(
            "redis_keyspace_misses",
            "Failed key lookups (Redis INFO keyspace_misses).",
            m.misses.clone(),
        );
        r.register(
            "redis_evicted_keys",
            "Keys evicted for maxmemory (Redis INFO evicted_keys).",
            m.evicted.clone(),
        );
        r.register(
            "redis_expired_keys",
            "Keys expired by their TTL (Redis INFO expired_keys).",
            m.expired.clone(),
        );
        r.register(
            "redis_memory_used_bytes",
            "Memory used by Redis (INFO used_memory).",
            m.memory_used.clone(),
        );
        r.register(
            "redis_memory_max_bytes",
            "Redis maxmemory (0: no limit).",
            m.memory_max.clone(),
        );
        r.register(
            "redis_connected_clients",
            "Clients connected to Redis.",
            m.clients.clone(),
        );
        r.register("redis_keys", "Keys per database.", m.keys.clone());
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

/// Hit-rate bookkeeping: the rate over the lookups since the last judged
/// sample, judged only once at least `min_lookups` happened.
#[derive(Default)]
struct HitWindow {
    /// Hits and misses (without depwatch's own) at the last judged sample.
    base: Option<(f64, f64)>,
    rate: Option<f64>,
    /// Lookups made by depwatch's own queue reads since the server started:
    /// they are Redis's keyspace hits and misses too, but not the cache's.
    own: (f64, f64),
    last: (f64, f64),
}

struct Discovered {
    at: Instant,
    /// Per discovering queue spec (index): the queue names found.
    names: BTreeMap<usize, (Vec<String>, bool)>,
}

pub struct RedisProbe {
    spec: Spec,
    client: redis::Client,
    conn_cfg: AsyncConnectionConfig,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    component: String,
    label: ComponentOnly,
    metrics: Arc<Metrics>,
    queues: Publisher,
    script: redis::Script,
    hits: Mutex<HitWindow>,
    discovered: Mutex<Option<Discovered>>,
    groups: Mutex<BTreeSet<GroupLabels>>,
    dbs: Mutex<BTreeSet<String>>,
    gate: SeriesGate,
}

pub fn build<F: FamiliesOf<Metrics> + FamiliesOf<queue::Metrics> + ?Sized>(
    spec: &Spec,
    ctx: &BuildCtx<'_, F>,
) -> Result<RedisProbe, BuildError> {
    let fail = |message: String| BuildError {
        name: ctx.name.to_string(),
        message,
    };
    let info = spec.url.expose().into_connection_info().map_err(|e| {
        fail(format!(
            "invalid Redis URL {}: {}",
            redact_url(spec.url.expose()),
            scrub(&e.to_string(), &[spec.url.expose()])
        ))
    })?;
    let mut settings = info.redis_settings().clone();
    if let Some(u) = &spec.username {
        settings = settings.set_username(u);
    }
    if let Some(p) = &spec.password {
        settings = settings.set_password(p.expose());
    }
    settings = settings.set_lib_name("depwatch", crate::util::build::VERSION);
    let info = info.set_redis_settings(settings);
    let client = match &spec.tls_ca {
        Some(pem) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => redis::Client::open(info),
    }
    .map_err(|e| {
        fail(format!(
            "cannot use Redis URL {}: {}",
            redact_url(spec.url.expose()),
            scrub(&e.to_string(), &[spec.url.expose()])
        ))
    })?;
    // Connecting must end inside the check's timeout so that an unreachable
    // server reads as `connect`, not as the scheduler's `timeout`.
    let connect_timeout = (ctx.timeout * 3 / 4).max(Duration::from_millis(50));
    Ok(RedisProbe {
        spec: spec.clone(),
        client,
        conn_cfg: AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(None),
        conn: tokio::sync::Mutex::new(None),
        component: ctx.name.to_string(),
        label: ComponentOnly {
            component: ctx.name.to_string(),
        },
        metrics: FamiliesOf::<Metrics>::families(ctx.metrics).clone(),
        queues: Publisher::new(
            ctx.name,
            FamiliesOf::<queue::Metrics>::families(ctx.metrics).clone(),
        ),
        script: redis::Script::new(SCRIPT),
        hits: Mutex::new(HitWindow::default()),
        discovered: Mutex::new(None),
        groups: Mutex::new(BTreeSet::new()),
        dbs: Mutex::new(BTreeSet::new()),
        gate: ctx.gate.clone(),
    })
}

/// One queue to read in this check (a configured one, or a discovered one).
struct Target<'a> {
    name: String,
    spec: &'a QueueSpec,
    arg: String,
}

impl RedisProbe {
    fn secrets(&self) -> Vec<&str> {
        let mut s = vec![self.spec.url.expose()];
        if let Some(p) = &self.spec.password {
            s.push(p.expose());
        }
        s
    }

    fn error(&self, e: &redis::RedisError) -> CheckError {
        let text = scrub(&e.to_string(), &self.secrets());
        let upper = text.to_ascii_uppercase();
        let reason = if e.kind() == redis::ErrorKind::AuthenticationFailed
            || upper.contains("WRONGPASS")
            || upper.contains("NOAUTH")
            || upper.contains("NOPERM")
            || upper.contains("INVALID PASSWORD")
        {
            Reason::Auth
        } else if upper.contains("CERTIFICATE") || upper.contains("TLS") {
            Reason::Tls
        } else if e.is_timeout() {
            Reason::Timeout
        } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
            Reason::Connect
        } else {
            Reason::BadResponse
        };
        CheckError::new(reason, text)
    }

    async fn connection(&self) -> Result<MultiplexedConnection, CheckError> {
        tracing::debug!(component = %self.component, url = %redact_url(self.spec.url.expose()), "Connecting to Redis.");
        self.client
            .get_multiplexed_async_connection_with_config(&self.conn_cfg)
            .await
            .map_err(|e| self.error(&e))
    }

    /// The queues to read: configured ones, plus the discovered ones
    /// (refreshed by SCAN every `discover_every`).
    async fn targets(
        &self,
        conn: &mut MultiplexedConnection,
        out: &mut Outcome,
    ) -> Result<Vec<Target<'_>>, CheckError> {
        let stale = lock(&self.discovered)
            .as_ref()
            .is_none_or(|d| d.at.elapsed() >= self.spec.discover_every);
        if stale && self.spec.queues.iter().any(|q| q.discover.is_some()) {
            let mut names = BTreeMap::new();
            for (i, q) in self.spec.queues.iter().enumerate() {
                if let Some(max) = q.discover {
                    let found = self.discover(conn, q, max).await?;
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
        for (i, q) in self.spec.queues.iter().enumerate() {
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

    /// SCAN (never KEYS) for the marker key every queue of the layout has:
    /// BullMQ's `meta` hash, Bull's `id` counter. Sorted; at most `max`.
    async fn discover(
        &self,
        conn: &mut MultiplexedConnection,
        q: &QueueSpec,
        max: usize,
    ) -> Result<(Vec<String>, bool), CheckError> {
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
                .await
                .map_err(|e| self.error(&e))?;
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
        let overflow = found.len() > max;
        Ok((found.into_iter().take(max).collect(), overflow))
    }

    async fn run(&self, conn: &mut MultiplexedConnection) -> CheckResult {
        let mut out = Outcome::healthy(Map::new());
        let targets = self.targets(conn, &mut out).await?;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("PING").cmd("INFO");
        if !targets.is_empty() {
            // Loading is idempotent and keeps the same round trip: a restarted
            // or flushed server has the script again before it is called.
            pipe.cmd("SCRIPT").arg("LOAD").arg(SCRIPT).ignore();
        }
        for t in &targets {
            pipe.cmd("EVALSHA")
                .arg(self.script.get_hash())
                .arg(0)
                .arg(t.spec.type_.as_str())
                .arg(&t.arg)
                .arg(self.spec.max_active_scan);
        }
        if !targets.is_empty() {
            // Measures the lookups of the queue reads, kept out of the hit rate.
            pipe.cmd("INFO").arg("stats");
        }
        let started = Instant::now();
        let replies: Vec<RValue> = pipe.query_async(conn).await.map_err(|e| self.error(&e))?;
        let rtt = started.elapsed();
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        let mut replies = replies.into_iter();
        let bad = |what: &str| CheckError::new(Reason::BadResponse, what.to_string());
        match replies.next() {
            Some(RValue::ServerError(e)) => {
                return Err(self.error(&redis::RedisError::from(e)));
            }
            Some(_) => {}
            None => return Err(bad("no answer to PING")),
        }
        let info = match replies.next() {
            Some(RValue::ServerError(e)) => return Err(self.error(&redis::RedisError::from(e))),
            Some(v) => {
                redis::from_redis_value::<String>(v).map_err(|_| bad("INFO did not answer text"))?
            }
            None => return Err(bad("no answer to INFO")),
        };
        let info = parse_info(&info);
        self.record_info(&info, &mut out);
        out.details.insert("round_trip_ms".into(), json!(ms(rtt)));

        let mut replies: Vec<RValue> = replies.collect();
        if !targets.is_empty()
            && let Some(after) = replies
                .pop()
                .and_then(|v| redis::from_redis_value::<String>(v).ok())
        {
            let after = parse_info(&after);
            let get = |i: &BTreeMap<String, String>, k: &str| {
                i.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            };
            let dh = get(&after, "keyspace_hits") - get(&info, "keyspace_hits");
            let dm = get(&after, "keyspace_misses") - get(&info, "keyspace_misses");
            let mut w = lock(&self.hits);
            w.own.0 += dh.max(0.0);
            w.own.1 += dm.max(0.0);
        }
        let mut snaps = Vec::with_capacity(targets.len());
        for (t, reply) in targets.iter().zip(replies) {
            match self.queue_snapshot(t, reply, now_ms) {
                Ok(s) => {
                    t.spec.thresholds.judge(&s, &mut out);
                    snaps.push(s);
                }
                Err(msg) => out.raise(
                    Status::Degraded,
                    format!("queue {}: cannot read it: {msg}", t.name),
                ),
            }
        }
        if let Some(_live) = self.gate.open() {
            self.queues.publish(&snaps);
            self.publish_groups(&snaps);
        }
        if !snaps.is_empty() {
            out.details.insert("queues".into(), queue::details(&snaps));
        }
        Ok(out)
    }

    fn record_info(&self, info: &BTreeMap<String, String>, out: &mut Outcome) {
        let m = &self.metrics;
        let num = |k: &str| info.get(k).and_then(|v| v.parse::<f64>().ok());
        let hits = num("keyspace_hits").unwrap_or(0.0);
        let misses = num("keyspace_misses").unwrap_or(0.0);
        let used = num("used_memory").unwrap_or(0.0);
        let max = num("maxmemory").unwrap_or(0.0);
        let clients = num("connected_clients").unwrap_or(0.0);
        // A removed component's series stay removed (see `SeriesGate`).
        let live = self.gate.open();
        if live.is_some() {
            m.hits.get_or_create(&self.label).set(hits);
            m.misses.get_or_create(&self.label).set(misses);
            m.evicted
                .get_or_create(&self.label)
                .set(num("evicted_keys").unwrap_or(0.0));
            m.expired
                .get_or_create(&self.label)
                .set(num("expired_keys").unwrap_or(0.0));
            m.memory_used.get_or_create(&self.label).set(used as i64);
            m.memory_max.get_or_create(&self.label).set(max as i64);
            m.clients.get_or_create(&self.label).set(clients as i64);
        }

        let mut keys = Map::new();
        let mut dbs = BTreeSet::new();
        for (k, v) in info.iter().filter(|(k, _)| is_db(k)) {
            let n = v
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or(0);
            if live.is_some() {
                m.keys
                    .get_or_create(&DbLabels {
                        component: self.component.clone(),
                        db: k.clone(),
                    })
                    .set(n);
            }
            keys.insert(k.clone(), json!(n));
            dbs.insert(k.clone());
        }
        // A database emptied since the last check leaves INFO: show it as 0.
        let mut known = lock(&self.dbs);
        for gone in known.difference(&dbs) {
            if live.is_some() {
                m.keys
                    .get_or_create(&DbLabels {
                        component: self.component.clone(),
                        db: gone.clone(),
                    })
                    .set(0);
            }
            keys.insert(gone.clone(), json!(0));
        }
        known.extend(dbs);
        drop(known);
        drop(live);

        let d = &mut out.details;
        for k in ["redis_version", "role"] {
            if let Some(v) = info.get(k) {
                d.insert(k.into(), json!(v));
            }
        }
        d.insert(
            "uptime_seconds".into(),
            json!(num("uptime_in_seconds").map(|v| v as u64)),
        );
        d.insert("connected_clients".into(), json!(clients as i64));
        d.insert("used_memory_bytes".into(), json!(used as u64));
        d.insert("maxmemory_bytes".into(), json!(max as u64));
        d.insert(
            "evicted_keys".into(),
            json!(num("evicted_keys").map(|v| v as u64)),
        );
        d.insert("keys".into(), Value::Object(keys));
        let lifetime = (hits + misses > 0.0).then(|| round4(hits / (hits + misses)));
        d.insert("lifetime_hit_rate".into(), json!(lifetime));

        let (rate, lookups) = self.hit_rate(hits, misses);
        d.insert("hit_rate".into(), json!(rate.map(round4)));
        d.insert("hit_rate_lookups".into(), json!(lookups as u64));
        if let (Some(rate), Some(limit)) = (rate, self.spec.hit_rate_degraded_below)
            && rate < limit
        {
            out.raise(
                Status::Degraded,
                format!(
                    "cache hit rate {:.1}% below {:.1}%",
                    rate * 100.0,
                    limit * 100.0
                ),
            );
        }
    }

    /// The hit rate over the lookups since the last judged sample, once at
    /// least `hit_rate_min_lookups` happened (else the previous rate stands).
    fn hit_rate(&self, hits: f64, misses: f64) -> (Option<f64>, f64) {
        let mut w = lock(&self.hits);
        if hits < w.last.0 || misses < w.last.1 {
            // Counters went down: the server restarted or was reset.
            w.own = (0.0, 0.0);
            w.base = None;
        }
        w.last = (hits, misses);
        let (hits, misses) = ((hits - w.own.0).max(0.0), (misses - w.own.1).max(0.0));
        let (h0, m0) = match w.base {
            Some((h0, m0)) if hits >= h0 && misses >= m0 => (h0, m0),
            _ => (0.0, 0.0),
        };
        let (dh, dm) = (hits - h0, misses - m0);
        let lookups = dh + dm;
        if lookups >= self.spec.hit_rate_min_lookups.max(1) as f64 {
            w.rate = Some(dh / lookups);
            w.base = Some((hits, misses));
        } else if w.base.is_none() {
            w.base = Some((h0, m0));
        }
        (w.rate, lookups)
    }

    fn queue_snapshot(&self, t: &Target, reply: RValue, now_ms: f64) -> Result<Snapshot, String> {
        if let RValue::ServerError(e) = reply {
            return Err(scrub(
                &redis::RedisError::from(e).to_string(),
                &self.secrets(),
            ));
        }
        let RValue::Array(items) = reply else {
            return Err("unexpected answer".into());
        };
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
                let groups = match items.get(1) {
                    Some(RValue::Array(g)) => g.as_slice(),
                    _ => &[],
                };
                let mut lag_sum = 0;
                let mut pending_sum = 0;
                let mut gs = Map::new();
                for g in groups.iter().take(MAX_GROUPS) {
                    let f = pairs(g);
                    let name = f.get("name").cloned().unwrap_or_default();
                    let pending = f
                        .get("pending")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0u64);
                    // No lag (Redis < 7, or a trimmed stream): all entries may wait.
                    let lag = f.get("lag").and_then(|v| v.parse().ok());
                    lag_sum += lag.unwrap_or(0u64);
                    pending_sum += pending;
                    gs.insert(name, json!({ "pending": pending, "lag": lag }));
                }
                let waiting = if groups.is_empty() { len } else { lag_sum };
                s.counts = vec![
                    (JobState::Waiting, waiting),
                    (JobState::Active, pending_sum),
                ];
                s.extra.insert("length".into(), json!(len));
                s.extra.insert("groups".into(), Value::Object(gs));
            }
            QueueType::Bullmq | QueueType::Bull => {
                if items.len() < 13 {
                    return Err("unexpected answer from the queue script".into());
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
                s.oldest_waiting_age = Some(age(int(9)).unwrap_or(0.0));
                s.oldest_active_age = Some(age(int(10)).unwrap_or(0.0));
                s.stalled = Some(n(11));
                if n(12) < n(1) {
                    s.extra.insert("stalled_checked".into(), json!(n(12)));
                }
            }
        }
        Ok(s)
    }

    fn publish_groups(&self, snaps: &[Snapshot]) {
        let m = &self.metrics;
        let mut now = BTreeSet::new();
        for s in snaps {
            let Some(Value::Object(groups)) = s.extra.get("groups") else {
                continue;
            };
            if let Some(len) = s.extra.get("length").and_then(Value::as_i64) {
                m.stream_length
                    .get_or_create(&queue::QueueLabels {
                        component: self.component.clone(),
                        queue: s.queue.clone(),
                    })
                    .set(len);
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
    }
}

/// At most this many consumer groups per stream become label values.
const MAX_GROUPS: usize = 50;

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

fn is_db(k: &str) -> bool {
    k.strip_prefix("db")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `key:value` lines of INFO (sections and comments skipped).
fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
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

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

impl Probe for RedisProbe {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(async move {
            let mut slot = self.conn.lock().await;
            // Taken out while in use: a check cut short by its timeout leaves
            // the slot empty, so the next check starts on a fresh connection.
            let mut conn = match slot.take() {
                Some(c) => c,
                None => self.connection().await?,
            };
            let result = self.run(&mut conn).await;
            let broken = matches!(&result, Err(e) if matches!(e.reason, Reason::Connect | Reason::Timeout | Reason::Auth));
            if !broken {
                *slot = Some(conn);
            }
            result
        })
    }

    fn forget(&self) {
        let m = &self.metrics;
        for f in [&m.hits, &m.misses, &m.evicted, &m.expired] {
            f.remove(&self.label);
        }
        for f in [&m.memory_used, &m.memory_max, &m.clients] {
            f.remove(&self.label);
        }
        for db in lock(&self.dbs).iter() {
            m.keys.remove(&DbLabels {
                component: self.component.clone(),
                db: db.clone(),
            });
        }
        self.publish_groups(&[]);
        for s in self
            .spec
            .queues
            .iter()
            .filter(|q| q.type_ == QueueType::Stream)
        {
            m.stream_length.remove(&queue::QueueLabels {
                component: self.component.clone(),
                queue: s.name.clone(),
            });
        }
        self.queues.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_parsed() {
        let i = parse_info(
            "# Stats\r\nkeyspace_hits:5\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n",
        );
        assert_eq!(i["keyspace_hits"], "5");
        assert!(is_db("db0") && !is_db("db") && !is_db("dbx"));
        assert_eq!(i["db0"], "keys=3,expires=0,avg_ttl=0");
    }

    #[test]
    fn glob_is_escaped() {
        assert_eq!(glob_escape("a*b[c]:"), "a\\*b\\[c\\]:");
    }
}
