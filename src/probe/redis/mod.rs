//! `kind: redis` — a Redis cache and its job queues.
//!
//! Each check sends ONE pipeline: PING, INFO, and one read-only script call
//! per queue (`queues.lua`), so a check costs one round trip however many
//! queues are watched. Only queue discovery (`discover: true`, SCAN, never
//! KEYS) adds round trips, and only when the discovered list is refreshed
//! (`discover_every`). The connection is opened lazily and reopened after a
//! connection error or a check cut short by its timeout; one kept from the
//! check before that turns out closed (Redis restarted) is replaced within
//! the check, which then sends its pipeline again.
//!
//! This file owns the probe: the connection, the check's pipeline and what
//! its errors mean. `config.rs` parses the keys, `cache.rs` turns INFO into
//! the cache families and the hit rate, `queues.rs` finds and reads the
//! queues (the script, the snapshots, the stream families).

mod cache;
mod config;
mod queues;

use std::time::{Duration, Instant, SystemTime};

use prometheus_client::registry::Registry;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, ServerErrorKind, Value as RValue};
use serde_json::{Map, json};

use super::core::{
    BoxFuture, BuildCtx, BuildError, CheckError, CheckResult, FamiliesOf, Outcome, Probe, Reason,
    Status,
};
use super::queue::{self, Publisher};
use crate::util::redact::{redact_url, scrub};
use cache::{Cache, parse_info};
pub use config::{QueueSpec, QueueType, Spec};
use queues::Queues;

/// The default buckets of the check duration: Redis answers in milliseconds.
pub const BUCKETS: &[f64] = crate::probe::core::FAST_BUCKETS;

/// The Redis families: the cache's, then the streams'.
pub struct Metrics {
    cache: cache::Families,
    streams: queues::Families,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Self {
        Metrics {
            cache: cache::Families::register(r),
            streams: queues::Families::register(r),
        }
    }
}

pub struct RedisProbe {
    spec: Spec,
    client: redis::Client,
    conn_cfg: AsyncConnectionConfig,
    /// How long connecting (with its TLS handshake) may take.
    connect_timeout: Duration,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    component: String,
    cache: Cache,
    queues: Queues,
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
    let metrics = FamiliesOf::<Metrics>::families(ctx.metrics);
    Ok(RedisProbe {
        spec: spec.clone(),
        client,
        conn_cfg: AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(None),
        connect_timeout,
        conn: tokio::sync::Mutex::new(None),
        component: ctx.name.to_string(),
        cache: Cache::new(ctx.name, metrics.cache.clone(), spec, ctx.gate.clone()),
        queues: Queues::new(
            ctx.name,
            metrics.streams.clone(),
            Publisher::new(
                ctx.name,
                FamiliesOf::<queue::Metrics>::families(ctx.metrics).clone(),
            ),
            ctx.gate.clone(),
        ),
    })
}

impl RedisProbe {
    fn secrets(&self) -> Vec<&str> {
        let mut s = vec![self.spec.url.expose()];
        if let Some(p) = &self.spec.password {
            s.push(p.expose());
        }
        s
    }

    /// The URL as messages and logs name it (its password as `***`).
    fn url(&self) -> String {
        redact_url(self.spec.url.expose())
    }

    fn error(&self, e: &redis::RedisError) -> CheckError {
        // One line: the parser's errors come as several.
        let text = scrub(&e.to_string(), &self.secrets())
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        if e.kind() == redis::ErrorKind::Parse {
            return CheckError::new(
                Reason::BadResponse,
                format!(
                    "{} does not answer in the Redis protocol (is it a Redis port?): {text}",
                    self.url()
                ),
            );
        }
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
        tracing::debug!(component = %self.component, url = %self.url(), "Connecting to Redis.");
        self.client
            .get_multiplexed_async_connection_with_config(&self.conn_cfg)
            .await
            .map_err(|e| {
                if !e.is_timeout() {
                    return self.error(&e);
                }
                // Connecting, not the scheduler's timeout: say how long
                // it waited, and the usual cause with TLS.
                let tls = self.spec.url.expose().starts_with("rediss:");
                CheckError::new(
                    Reason::Connect,
                    format!(
                        "connecting to {} timed out after {}{}",
                        self.url(),
                        crate::config::units::format_duration(self.connect_timeout),
                        if tls {
                            " (a server that does not speak TLS on its port never answers the handshake: is it rediss:// or redis://?)"
                        } else {
                            ""
                        }
                    ),
                )
            })
    }

    async fn run(&self, conn: &mut MultiplexedConnection) -> CheckResult {
        let mut out = Outcome::healthy(Map::new());
        let targets = self
            .queues
            .targets(&self.spec, conn, &mut out)
            .await
            .map_err(|e| self.error(&e))?;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("PING").cmd("INFO");
        let sent_ms = u64::try_from(crate::util::time::unix_ms(SystemTime::now())).unwrap_or(0);
        self.queues
            .add_reads(&mut pipe, &targets, self.spec.max_active_scan, sent_ms);
        if !targets.is_empty() {
            // Measures the lookups of the queue reads, kept out of the hit rate.
            pipe.cmd("INFO").arg("stats");
        }
        let started = Instant::now();
        let replies: Vec<RValue> = pipe.query_async(conn).await.map_err(|e| self.error(&e))?;
        let rtt = started.elapsed();
        let now_ms = crate::util::time::unix_now() * 1000.0;
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
            // An ACL user for the queues alone: Redis answered PING, and
            // the queues are read below; only INFO's numbers are missing.
            Some(RValue::ServerError(e)) if e.kind() == Some(ServerErrorKind::NoPerm) => {
                out.raise(
                    Status::Degraded,
                    "INFO is not permitted for this Redis user: no memory, clients, keys or hit \
                     rate (grant it with ACL SETUSER NAME +info)",
                );
                // Numbers from before the user lost it would stand still.
                self.cache.forget();
                None
            }
            Some(RValue::ServerError(e)) => return Err(self.error(&redis::RedisError::from(e))),
            Some(v) => Some(
                redis::from_redis_value::<String>(v)
                    .map_err(|_| bad("INFO did not answer text"))?,
            ),
            None => return Err(bad("no answer to INFO")),
        };
        let info = info.as_deref().map(parse_info);
        if let Some(info) = &info {
            self.cache.record(info, &mut out);
        }
        out.details
            .map_mut()
            .insert("round_trip_ms".into(), json!(ms(rtt)));

        let mut replies: Vec<RValue> = replies.collect();
        if !targets.is_empty()
            && let Some(after) = replies
                .pop()
                .and_then(|v| redis::from_redis_value::<String>(v).ok())
            && let Some(info) = &info
        {
            self.cache.count_own(info, &parse_info(&after));
        }
        self.queues.record(
            &targets,
            replies,
            now_ms,
            self.spec.max_active_scan,
            &self.secrets(),
            &mut out,
        );
        Ok(out)
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

impl Probe for RedisProbe {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(async move {
            let mut slot = self.conn.lock().await;
            // Taken out while in use: a check cut short by its timeout leaves
            // the slot empty, so the next check starts on a fresh connection.
            let (mut conn, reused) = match slot.take() {
                Some(c) => (c, true),
                None => (self.connection().await?, false),
            };
            let mut result = self.run(&mut conn).await;
            // A connection kept from the check before may have been closed
            // since (Redis restarted, a failover, an idle timeout): what
            // that says is about the past. Redis as it is now answers on a
            // new one, once.
            if reused && matches!(&result, Err(e) if e.reason == Reason::Connect) {
                tracing::debug!(component = %self.component, "Redis connection closed since the last check: reconnecting.");
                conn = self.connection().await?;
                result = self.run(&mut conn).await;
            }
            let broken = matches!(&result, Err(e) if matches!(e.reason, Reason::Connect | Reason::Timeout | Reason::Auth));
            if !broken {
                *slot = Some(conn);
            }
            result
        })
    }

    fn forget(&self) {
        self.cache.forget();
        self.queues.forget();
    }
}
