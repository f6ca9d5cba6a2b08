//! The HA sender election (`alerting.coordination`): depwatch instances
//! watching one service elect one sender through that service's Redis.
//!
//! - The lease: `SET {p}:leader VALUE NX PX lease`, where VALUE is this
//!   instance's name and a token new at every acquisition; the leader renews
//!   it every third of the lease with a script that extends it only while
//!   it still holds VALUE.
//! - Fencing: every write of the leader (the open incidents, the outbox, the
//!   last email) and every email it is about to send first checks, in one
//!   script, that the lease still holds its VALUE. A leader that cannot
//!   renew stops counting itself leader before its lease can have expired.
//! - Takeover: the instance that acquires the lease after another held it
//!   adopts the shared open incidents and outbox, so it neither resends what
//!   was sent nor forgets a resolution still owed.
//! - Redis unreachable: every instance sends alone, and says so in its
//!   emails and in `/api/health` ("uncoordinated").
//!
//! Keys live under `depwatch:alerting:{group}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::config::Coordination;
use super::email::Outgoing;
use super::incident::{EmailKind, Incident};
use crate::util::redact::{redact_url, scrub};

/// What this instance is among its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Role {
    /// No coordination configured: sends alone.
    #[default]
    Sole,
    /// Not yet heard from the coordinator: holds its emails.
    Starting,
    /// Holds the lease: sends.
    Leader,
    /// Another instance holds the lease: decides, does not send.
    Follower,
    /// Cannot reach the coordinator: sends, and marks its emails so.
    Uncoordinated,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sole => "sole",
            Role::Starting => "starting",
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Uncoordinated => "uncoordinated",
        }
    }

    pub fn sends(self) -> bool {
        matches!(self, Role::Sole | Role::Leader | Role::Uncoordinated)
    }
}

/// The open incidents as the leader last decided them.
#[derive(Serialize, Deserialize)]
pub struct SharedBook {
    pub open: Vec<Incident>,
    pub next_incident: i64,
}

/// An email in the shared outbox (queued by the leader, not yet sent).
#[derive(Serialize, Deserialize)]
struct SharedEmail {
    incident: Option<i64>,
    kind: String,
    message_id: String,
    subject: String,
    from: String,
    to: Vec<String>,
    body: String,
    queued_ms: i64,
}

/// What a new leader takes over from the one before.
pub struct Adopted {
    pub book: Option<SharedBook>,
    /// Unsent, oldest first (`id` 0: the engine gives them local ids).
    pub outbox: Vec<Outgoing>,
    pub last_email: Option<Value>,
}

/// A write of the leader, applied in order by the coordinator task.
enum Publish {
    Book(String),
    Queued(String, String),
    Sent(String, String),
}

#[derive(Default)]
struct State {
    role: Role,
    instance: String,
    leader: Option<String>,
    /// The lease value while this instance holds (or last held) it.
    value: Option<String>,
    /// Until when this instance may count itself leader without renewing.
    valid_until: Option<Instant>,
    last_contact: Option<Instant>,
    since_ms: i64,
    error: Option<String>,
    url: Option<String>,
    lease: Option<Duration>,
    group: Option<String>,
    takeovers: u64,
}

/// The election's state, shared by the engine, the sender and `/api/health`.
pub struct Coord {
    state: Mutex<State>,
    conn: Mutex<Option<MultiplexedConnection>>,
    adopted: Mutex<Option<Adopted>>,
    tx: mpsc::UnboundedSender<Publish>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Publish>>>,
}

/// What the sender does with the email at the head of its outbox.
pub enum Gate {
    Send,
    /// Another instance is the sender (it has the email in the shared outbox).
    Skip(String),
    /// Not known yet: ask again shortly.
    Wait,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0";

/// KEYS: lease, target(s). ARGV: value, op, args…
const FENCED: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == 'book' then
  redis.call('SET', KEYS[2], ARGV[3])
elseif ARGV[2] == 'queued' then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
elseif ARGV[2] == 'sent' then
  redis.call('HDEL', KEYS[2], ARGV[3])
  redis.call('SET', KEYS[3], ARGV[4])
end
return 1";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

struct Keys {
    leader: String,
    book: String,
    outbox: String,
    last_email: String,
}

impl Keys {
    fn of(group: &str) -> Keys {
        let p = format!("depwatch:alerting:{group}");
        Keys {
            leader: format!("{p}:leader"),
            book: format!("{p}:book"),
            outbox: format!("{p}:outbox"),
            last_email: format!("{p}:last_email"),
        }
    }
}

fn holder_name(value: &str) -> String {
    value.split('\n').next().unwrap_or(value).to_string()
}

impl Default for Coord {
    fn default() -> Self {
        Coord::new()
    }
}

impl Coord {
    pub fn new() -> Coord {
        let (tx, rx) = mpsc::unbounded_channel();
        Coord {
            state: Mutex::new(State::default()),
            conn: Mutex::new(None),
            adopted: Mutex::new(None),
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    pub fn role(&self) -> Role {
        lock(&self.state).role
    }

    /// The shared state a takeover brought, once.
    pub fn take_adopted(&self) -> Option<Adopted> {
        lock(&self.adopted).take()
    }

    /// A note for emails sent while the coordinator cannot be reached.
    pub fn uncoordinated_note(&self) -> Option<String> {
        let s = lock(&self.state);
        (s.role == Role::Uncoordinated).then(|| {
            format!(
                "Sent without coordination: {} cannot reach the coordinator ({}), so every depwatch of this service sends alone and you may get this email from each of them.",
                s.instance,
                s.error.as_deref().unwrap_or("no answer")
            )
        })
    }

    pub fn publish_book(&self, json: String) {
        let _ = self.tx.send(Publish::Book(json));
    }

    pub fn publish_queued(&self, e: &Outgoing, now_ms: i64) {
        let shared = SharedEmail {
            incident: e.incident,
            kind: e.kind.as_str().to_string(),
            message_id: e.message_id.clone(),
            subject: e.subject.clone(),
            from: e.from.clone(),
            to: e.to.clone(),
            body: String::from_utf8_lossy(&e.body).into_owned(),
            queued_ms: now_ms,
        };
        if let Ok(j) = serde_json::to_string(&shared) {
            let _ = self.tx.send(Publish::Queued(e.message_id.clone(), j));
        }
    }

    pub fn publish_sent(&self, message_id: &str, last_email: &Value) {
        let _ = self.tx.send(Publish::Sent(
            message_id.to_string(),
            last_email.to_string(),
        ));
    }

    /// The `sender` section of `/api/health`.
    pub fn health_json(&self) -> Value {
        let s = lock(&self.state);
        if s.role == Role::Sole {
            return json!({
                "role": "sole",
                "instance": s.instance,
                "note": "this depwatch sends alone: set alerting.coordination to elect one sender among its peers",
            });
        }
        json!({
            "role": s.role.as_str(),
            "instance": s.instance,
            "leader": s.leader,
            "coordination": s.url,
            "coordinator": if s.error.is_some() { "down" } else if s.last_contact.is_some() { "ok" } else { "unknown" },
            "group": s.group,
            "lease": s.lease.map(crate::config::units::format_duration),
            "since": crate::util::time::rfc3339_ms(s.since_ms),
            "error": s.error,
            "takeovers": s.takeovers,
            "note": match s.role {
                Role::Uncoordinated => "the coordinator cannot be reached: this depwatch sends alone and marks its emails so",
                Role::Follower => "another depwatch holds the lease and sends",
                Role::Leader => "this depwatch holds the lease and sends",
                _ => "waiting for the coordinator",
            },
        })
    }

    fn set_role(&self, s: &mut State, role: Role, now_ms: i64) {
        if s.role != role {
            match role {
                Role::Uncoordinated => tracing::warn!(
                    instance = %s.instance, error = s.error.as_deref().unwrap_or(""),
                    "Alert coordinator unreachable: sending alone."
                ),
                _ => tracing::info!(
                    instance = %s.instance, role = role.as_str(),
                    leader = s.leader.as_deref().unwrap_or(""), "Alert sender role changed."
                ),
            }
            s.role = role;
            s.since_ms = now_ms;
        }
    }

    /// Decides whether the email at the head of the outbox goes out from
    /// here; a leader checks its lease in Redis first (the fence).
    pub async fn gate(&self) -> Gate {
        let (role, value, keys, valid) = {
            let s = lock(&self.state);
            (
                s.role,
                s.value.clone(),
                s.group.as_deref().map(Keys::of),
                s.valid_until.is_some_and(|v| Instant::now() < v),
            )
        };
        match role {
            Role::Sole | Role::Uncoordinated => Gate::Send,
            Role::Starting => Gate::Wait,
            Role::Follower => Gate::Skip(
                lock(&self.state)
                    .leader
                    .clone()
                    .unwrap_or_else(|| "another instance".into()),
            ),
            Role::Leader => {
                let (Some(value), Some(keys)) = (value, keys) else {
                    return Gate::Wait;
                };
                let conn = lock(&self.conn).clone();
                let Some(mut conn) = conn else {
                    return if valid { Gate::Send } else { Gate::Wait };
                };
                let r: redis::RedisResult<i64> = Script::new(FENCED)
                    .key(&keys.leader)
                    .arg(&value)
                    .arg("check")
                    .invoke_async(&mut conn)
                    .await;
                match r {
                    Ok(1) => Gate::Send,
                    Ok(_) => {
                        let mut s = lock(&self.state);
                        s.valid_until = None;
                        self.set_role(&mut s, Role::Follower, super::render::now_ms());
                        Gate::Skip(
                            s.leader
                                .clone()
                                .unwrap_or_else(|| "another instance".into()),
                        )
                    }
                    // The lease is ours until `valid_until` whatever Redis says now.
                    Err(_) if valid => Gate::Send,
                    Err(_) => Gate::Wait,
                }
            }
        }
    }
}

/// The coordinator task: acquires or renews the lease every third of it,
/// applies the leader's writes in order, and releases the lease on shutdown.
/// `settings` answers the current `alerting.coordination` (it changes on
/// reload) and the port of `listen`; `host` names this machine.
pub async fn run(
    c: &Coord,
    settings: impl Fn() -> (Option<Coordination>, u16),
    host: &str,
    mut stop: watch::Receiver<bool>,
) {
    let Some(mut rx) = lock(&c.rx).take() else {
        return;
    };
    let mut client: Option<(Coordination, redis::Client)> = None;
    loop {
        let (cfg, port) = settings();
        let now_ms = super::render::now_ms();
        let Some(cfg) = cfg else {
            {
                let mut s = lock(&c.state);
                s.instance = format!("{host}:{port}");
                s.leader = None;
                s.value = None;
                s.error = None;
                s.url = None;
                c.set_role(&mut s, Role::Sole, now_ms);
            }
            *lock(&c.conn) = None;
            client = None;
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = rx.recv() => {}
            }
            continue;
        };
        let instance = cfg
            .instance
            .clone()
            .unwrap_or_else(|| format!("{host}:{port}"));
        if client.as_ref().is_none_or(|(k, _)| *k != cfg) {
            *lock(&c.conn) = None;
            let mut s = lock(&c.state);
            s.instance = instance.clone();
            s.url = Some(redact_url(cfg.url.expose()));
            s.lease = Some(cfg.lease);
            s.group = Some(cfg.group.clone());
            s.value = None;
            s.valid_until = None;
            if s.role == Role::Sole {
                c.set_role(&mut s, Role::Starting, now_ms);
            }
            drop(s);
            client = match redis::Client::open(cfg.url.expose()) {
                Ok(cl) => Some((cfg.clone(), cl)),
                Err(e) => {
                    lock(&c.state).error = Some(scrub(&e.to_string(), &[cfg.url.expose()]));
                    None
                }
            };
        }
        let every = cfg.lease / 3;
        let next = Instant::now() + every;
        if let Some((_, cl)) = &client {
            round(c, cl, &cfg, &instance, every).await;
        } else {
            unreachable_now(c, &cfg);
        }
        // Apply the leader's writes as they come until the next round.
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    release(c, &cfg).await;
                    return;
                }
                _ = tokio::time::sleep_until(next) => break,
                p = rx.recv() => match p {
                    Some(p) => apply(c, &cfg, p, every).await,
                    None => return,
                },
            }
        }
    }
}

async fn connection(
    c: &Coord,
    cl: &redis::Client,
    timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    if let Some(conn) = lock(&c.conn).clone() {
        return Ok(conn);
    }
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let conn = cl
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?;
    *lock(&c.conn) = Some(conn.clone());
    Ok(conn)
}

fn unreachable_now(c: &Coord, cfg: &Coordination) {
    let mut s = lock(&c.state);
    let now = Instant::now();
    let now_ms = super::render::now_ms();
    match s.role {
        // Still ours until the lease could have run out.
        Role::Leader if s.valid_until.is_some_and(|v| now < v) => {}
        // The leader's lease runs out at most a lease after we last saw it.
        Role::Follower if s.last_contact.is_some_and(|t| now < t + cfg.lease) => {}
        _ => {
            s.valid_until = None;
            c.set_role(&mut s, Role::Uncoordinated, now_ms);
        }
    }
}

async fn round(c: &Coord, cl: &redis::Client, cfg: &Coordination, instance: &str, every: Duration) {
    let keys = Keys::of(&cfg.group);
    let t0 = Instant::now();
    let result = async {
        let mut conn = connection(c, cl, every).await?;
        let held = lock(&c.state).value.clone();
        let lease_ms = cfg.lease.as_millis() as u64;
        if let Some(value) = &held {
            let renewed: i64 = Script::new(RENEW)
                .key(&keys.leader)
                .arg(value)
                .arg(lease_ms)
                .invoke_async(&mut conn)
                .await?;
            if renewed == 1 {
                return Ok((true, false, value.clone()));
            }
        }
        let value = format!("{instance}\n{:x}-{:x}", std::process::id(), unique());
        let set: Option<String> = redis::cmd("SET")
            .arg(&keys.leader)
            .arg(&value)
            .arg("NX")
            .arg("PX")
            .arg(lease_ms)
            .query_async(&mut conn)
            .await?;
        if set.is_some() {
            return Ok((true, true, value));
        }
        let holder: Option<String> = redis::cmd("GET")
            .arg(&keys.leader)
            .query_async(&mut conn)
            .await?;
        Ok::<_, redis::RedisError>((false, false, holder.unwrap_or_default()))
    }
    .await;
    let now_ms = super::render::now_ms();
    match result {
        Ok((true, acquired, value)) => {
            let adopt = {
                let mut s = lock(&c.state);
                let before = s.role;
                s.error = None;
                s.last_contact = Some(t0);
                // Redis set the expiry after t0: our lease lasts at least
                // until t0 + lease; keep a tenth for clock drift.
                s.valid_until = Some(t0 + cfg.lease - cfg.lease / 10);
                s.value = Some(value);
                s.leader = Some(instance.to_string());
                if acquired {
                    s.takeovers += 1;
                }
                c.set_role(&mut s, Role::Leader, now_ms);
                // After an outage every instance sent alone: its own book is
                // the newest. Otherwise the shared book is what was decided.
                acquired && before != Role::Uncoordinated
            };
            if adopt {
                match load(c, cl, &keys, every).await {
                    Ok(a) => *lock(&c.adopted) = Some(a),
                    Err(e) => {
                        tracing::warn!(error = %scrub(&e.to_string(), &[cfg.url.expose()]), "Cannot read the shared alert state.")
                    }
                }
            }
        }
        Ok((false, _, holder)) => {
            let mut s = lock(&c.state);
            s.error = None;
            s.last_contact = Some(t0);
            s.value = None;
            s.valid_until = None;
            s.leader = (!holder.is_empty()).then(|| holder_name(&holder));
            c.set_role(&mut s, Role::Follower, now_ms);
        }
        Err(e) => {
            *lock(&c.conn) = None;
            lock(&c.state).error = Some(scrub(&e.to_string(), &[cfg.url.expose()]));
            unreachable_now(c, cfg);
        }
    }
}

async fn load(
    c: &Coord,
    cl: &redis::Client,
    keys: &Keys,
    timeout: Duration,
) -> redis::RedisResult<Adopted> {
    let mut conn = connection(c, cl, timeout).await?;
    let (book, outbox, last): (Option<String>, HashMap<String, String>, Option<String>) =
        redis::pipe()
            .get(&keys.book)
            .hgetall(&keys.outbox)
            .get(&keys.last_email)
            .query_async(&mut conn)
            .await?;
    let book = book.and_then(|b| match serde_json::from_str::<SharedBook>(&b) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(error = %e, "Skipping an unreadable shared incident book.");
            None
        }
    });
    let mut mails: Vec<SharedEmail> = outbox
        .values()
        .filter_map(|v| serde_json::from_str(v).ok())
        .collect();
    mails.sort_by_key(|m| m.queued_ms);
    let outbox = mails
        .into_iter()
        .map(|m| Outgoing {
            id: 0,
            incident: m.incident,
            kind: EmailKind::from_name(&m.kind).unwrap_or(EmailKind::Firing),
            message_id: m.message_id,
            subject: m.subject,
            from: m.from,
            to: m.to,
            body: Arc::new(m.body.into_bytes()),
        })
        .collect();
    Ok(Adopted {
        book,
        outbox,
        last_email: last.and_then(|l| serde_json::from_str(&l).ok()),
    })
}

async fn apply(c: &Coord, cfg: &Coordination, p: Publish, timeout: Duration) {
    let (role, value) = {
        let s = lock(&c.state);
        (s.role, s.value.clone())
    };
    let (Role::Leader, Some(value)) = (role, value) else {
        return; // only the leader writes the shared state
    };
    let Some(mut conn) = lock(&c.conn).clone() else {
        return;
    };
    let keys = Keys::of(&cfg.group);
    let script = Script::new(FENCED);
    let mut inv = script.prepare_invoke();
    inv.key(&keys.leader);
    match &p {
        Publish::Book(json) => {
            inv.key(&keys.book).arg(&value).arg("book").arg(json);
        }
        Publish::Queued(id, json) => {
            inv.key(&keys.outbox)
                .arg(&value)
                .arg("queued")
                .arg(id)
                .arg(json);
        }
        Publish::Sent(id, json) => {
            inv.key(&keys.outbox)
                .key(&keys.last_email)
                .arg(&value)
                .arg("sent")
                .arg(id)
                .arg(json);
        }
    }
    let r: Result<redis::RedisResult<i64>, _> =
        tokio::time::timeout(timeout, inv.invoke_async(&mut conn)).await;
    match r {
        Ok(Ok(1)) => {}
        Ok(Ok(_)) => {
            let mut st = lock(&c.state);
            st.value = None;
            st.valid_until = None;
            c.set_role(&mut st, Role::Follower, super::render::now_ms());
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %scrub(&e.to_string(), &[cfg.url.expose()]), "Cannot write the shared alert state.");
        }
        Err(_) => tracing::debug!("Writing the shared alert state timed out."),
    }
}

/// On shutdown a leader gives the lease up, so a peer takes over at its
/// next round instead of after the lease.
async fn release(c: &Coord, cfg: &Coordination) {
    let value = lock(&c.state).value.clone();
    let conn = lock(&c.conn).clone();
    if let (Some(value), Some(mut conn)) = (value, conn) {
        let keys = Keys::of(&cfg.group);
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            Script::new(RELEASE)
                .key(&keys.leader)
                .arg(&value)
                .invoke_async::<i64>(&mut conn),
        )
        .await;
    }
}

fn unique() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    t ^ (u128::from(N.fetch_add(1, Ordering::Relaxed)) << 64)
}
