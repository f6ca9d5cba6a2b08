//! Who may use each endpoint group (`access:`), checked once for every
//! request by [`guard`], a middleware in front of the router.
//!
//! - Credentials: basic auth against `web.basic_auth_users` (bcrypt; a
//!   verified password is remembered by a salted SHA-256 of user, password
//!   and hash, so a scraper costs one bcrypt per hour, not one per scrape),
//!   bearer tokens (`auth.bearer_tokens` and the admin token), and client
//!   certificates verified by the TLS handshake. Tokens are compared in
//!   constant time; an unknown user costs a bcrypt like a known one.
//! - Failed logins are counted per group and per client address; an address
//!   with [`MAX_FAILURES`] failures within [`FAILURE_WINDOW`] is refused
//!   (429, no password checked) for [`BLOCK_FOR`]. At most [`BCRYPT_SLOTS`]
//!   bcrypt checks run at once, so a flood of wrong passwords cannot take
//!   the CPU from scrapes (whose passwords are remembered).
//! - `summary` (health, page): anonymous clients get the verdict only.
//! - exporter-toolkit's `rate_limit` (all requests) and the answer headers
//!   of `http_server_config.headers`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;

use super::shared::AppState;
use super::tls::ClientCert;
use crate::config::web::{Group, Level, RateLimit};
use crate::config::{Config, units::Secret};

/// Failed logins from one address before it is refused for a while.
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
pub const BLOCK_FOR: Duration = Duration::from_secs(60);
/// bcrypt checks at once (each takes tens of milliseconds of CPU).
pub const BCRYPT_SLOTS: usize = 2;
/// How long a verified password is remembered.
const REMEMBER: Duration = Duration::from_secs(3600);
/// Remembered passwords and tracked addresses, at most.
const MAX_REMEMBERED: usize = 1024;
const MAX_TRACKED: usize = 10_000;
/// Checked against when the user is unknown, so that the answer takes as
/// long as for a known user (the hash of a random string, cost 10).
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let random: String = (0..24).map(|_| fastrand::alphanumeric()).collect();
    bcrypt::hash(random, 10).unwrap_or_default()
});

/// The client's address, set by the server on every request.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// What a handler may show: set by [`guard`] on every request it lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Viewer {
    /// No credentials, on a public group.
    Anonymous,
    Authenticated,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    reason: &'static str,
}

/// `depwatch_http_auth_failures_total{group}` and
/// `depwatch_http_requests_limited_total{reason}`.
#[derive(Clone)]
pub struct AccessMetrics {
    failures: Family<GroupLabel, Counter>,
    limited: Family<LimitLabel, Counter>,
}

impl AccessMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = AccessMetrics {
            failures: Family::default(),
            limited: Family::default(),
        };
        for g in Group::ALL {
            let _ = m.failures.get_or_create(&GroupLabel { group: g.as_str() });
        }
        for reason in ["login_failures", "rate_limit", "probe_concurrency"] {
            let _ = m.limited.get_or_create(&LimitLabel { reason });
        }
        r.register(
            "http_auth_failures",
            "Requests refused for wrong or missing credentials, by endpoint group",
            m.failures.clone(),
        );
        r.register(
            "http_requests_limited",
            "Requests refused with 429: an address after too many failed logins, the rate_limit, the /probe concurrency cap",
            m.limited.clone(),
        );
        m
    }

    pub fn limited(&self, reason: &'static str) {
        self.limited.get_or_create(&LimitLabel { reason }).inc();
    }
}

struct Failures {
    count: u32,
    first: Instant,
    blocked_until: Option<Instant>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The access state of the process (in [`super::shared::Shared`]).
pub struct Guard {
    salt: [u8; 16],
    remembered: Mutex<HashMap<[u8; 32], Instant>>,
    failures: Mutex<HashMap<Option<IpAddr>, Failures>>,
    bucket: Mutex<Option<Bucket>>,
    bcrypt: tokio::sync::Semaphore,
    /// `/probe` checks running now (capped by `limits.probe_concurrency`).
    pub probes_running: AtomicUsize,
}

impl Default for Guard {
    fn default() -> Self {
        let mut salt = [0u8; 16];
        for b in &mut salt {
            *b = fastrand::u8(..);
        }
        Guard {
            salt,
            remembered: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            bucket: Mutex::new(None),
            bcrypt: tokio::sync::Semaphore::new(BCRYPT_SLOTS),
            probes_running: AtomicUsize::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Creds {
    Basic(String, String),
    Bearer(String),
    /// An `Authorization` header of another scheme or broken.
    Unusable,
}

fn credentials(h: &HeaderMap) -> Option<Creds> {
    let v = h.get(header::AUTHORIZATION)?;
    let Ok(v) = v.to_str() else {
        return Some(Creds::Unusable);
    };
    let Some((scheme, rest)) = v.split_once(' ') else {
        return Some(Creds::Unusable);
    };
    let rest = rest.trim_start_matches(' ');
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Creds::Bearer(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        return Some(match decoded.as_deref().and_then(|d| d.split_once(':')) {
            Some((u, p)) => Creds::Basic(u.to_string(), p.to_string()),
            None => Creds::Unusable,
        });
    }
    Some(Creds::Unusable)
}

/// Compares in time that depends on the lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The endpoint group of a path (`None`: `/healthz` and unknown paths).
pub fn group_of(path: &str) -> Option<Group> {
    Some(match path {
        "/metrics" => Group::Metrics,
        "/probe" => Group::Probe,
        "/api/health" => Group::Health,
        "/" => Group::Page,
        "/api/events" => Group::Events,
        "/api/alertmanager/webhook" => Group::Webhook,
        "/-/reload" => Group::Admin,
        p if p.starts_with("/api/admin/") => Group::Admin,
        _ => return None,
    })
}

impl Guard {
    /// exporter-toolkit's `rate_limit`: a token bucket for all requests.
    fn take(&self, rl: RateLimit) -> bool {
        let now = Instant::now();
        let mut b = lock(&self.bucket);
        let b = b.get_or_insert(Bucket {
            tokens: f64::from(rl.burst),
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() / rl.interval.as_secs_f64();
        b.tokens = (b.tokens + refill).min(f64::from(rl.burst));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn blocked(&self, ip: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        lock(&self.failures)
            .get(&ip)
            .and_then(|f| f.blocked_until)
            .and_then(|t| t.checked_duration_since(now))
    }

    fn failed(&self, ip: Option<IpAddr>, group: Group, metrics: &AccessMetrics) {
        metrics
            .failures
            .get_or_create(&GroupLabel {
                group: group.as_str(),
            })
            .inc();
        let now = Instant::now();
        let mut all = lock(&self.failures);
        if all.len() >= MAX_TRACKED && !all.contains_key(&ip) {
            all.retain(|_, f| {
                f.blocked_until.is_some_and(|t| t > now)
                    || now.duration_since(f.first) < FAILURE_WINDOW
            });
            if all.len() >= MAX_TRACKED {
                return;
            }
        }
        let f = all.entry(ip).or_insert(Failures {
            count: 0,
            first: now,
            blocked_until: None,
        });
        if now.duration_since(f.first) >= FAILURE_WINDOW {
            f.count = 0;
            f.first = now;
        }
        f.count += 1;
        if f.count >= MAX_FAILURES && f.blocked_until.is_none_or(|t| t <= now) {
            f.blocked_until = Some(now + BLOCK_FOR);
            f.count = 0;
            f.first = now;
            tracing::warn!(
                client = %ip.map_or("unknown".into(), |i| i.to_string()),
                group = group.as_str(),
                failures = MAX_FAILURES,
                block_seconds = BLOCK_FOR.as_secs(),
                "Too many failed logins from one address: refusing it for a while."
            );
        }
    }

    fn digest(&self, user: &str, pass: &str, hash: &str) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.salt);
        for part in [user, pass, hash] {
            ctx.update(part.as_bytes());
            ctx.update(&[0]);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    async fn basic_ok(&self, cfg: &Config, user: &str, pass: &str) -> bool {
        let hash = cfg.web.basic_auth_users.get(user);
        let h = hash.map_or(DUMMY_HASH.as_str(), Secret::expose).to_string();
        let key = self.digest(user, pass, &h);
        if hash.is_some()
            && lock(&self.remembered)
                .get(&key)
                .is_some_and(|t| t.elapsed() < REMEMBER)
        {
            return true;
        }
        let Ok(_slot) = self.bcrypt.acquire().await else {
            return false;
        };
        let pass = pass.to_string();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(pass, &h).unwrap_or(false))
            .await
            .unwrap_or(false);
        if ok && hash.is_some() {
            let mut r = lock(&self.remembered);
            if r.len() >= MAX_REMEMBERED {
                r.clear();
            }
            r.insert(key, Instant::now());
            return true;
        }
        false
    }
}

fn bearer_ok(cfg: &Config, token: &str, admin_only: bool) -> bool {
    let mut ok = false;
    if let Some(a) = &cfg.admin_token {
        ok |= constant_time_eq(token.as_bytes(), a.expose().as_bytes());
    }
    if !admin_only {
        for t in &cfg.bearer_tokens {
            ok |= constant_time_eq(token.as_bytes(), t.expose().as_bytes());
        }
    }
    ok
}

/// 401 with the schemes this configuration accepts.
fn challenge(cfg: &Config, group: Group) -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({ "error": format!("authentication required for {}", group.as_str()) })),
    )
        .into_response();
    if !cfg.web.basic_auth_users.is_empty() && group != Group::Admin {
        r.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"depwatch\", charset=\"UTF-8\""),
        );
    }
    r.headers_mut().append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"depwatch\""),
    );
    r
}

pub fn too_many(retry_after: Duration, why: &str) -> Response {
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({ "error": why })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

enum Admit {
    Full(Viewer),
    Summary,
    Refuse(Response),
}

async fn admit(
    s: &AppState,
    cfg: &Config,
    group: Group,
    creds: Option<Creds>,
    ip: Option<IpAddr>,
    cert: bool,
) -> Admit {
    let level = cfg.access.level(group);
    let metrics = &s.metrics.access;
    if group == Group::Admin {
        // The admin token guards these; without one configured, the
        // handlers answer as they always did (reload open, the rest 403).
        if level == Level::Public || cfg.admin_token.is_none() {
            return Admit::Full(Viewer::Authenticated);
        }
        if let Some(wait) = s.guard.blocked(ip) {
            metrics.limited("login_failures");
            return Admit::Refuse(too_many(wait, "too many failed logins from this address"));
        }
        return match creds {
            Some(Creds::Bearer(t)) if bearer_ok(cfg, &t, true) => {
                Admit::Full(Viewer::Authenticated)
            }
            _ => {
                s.guard.failed(ip, group, metrics);
                Admit::Refuse(challenge(cfg, group))
            }
        };
    }
    let Some(creds) = creds else {
        return match level {
            _ if cert => Admit::Full(Viewer::Authenticated),
            Level::Public => Admit::Full(Viewer::Anonymous),
            Level::Summary => Admit::Summary,
            Level::Authenticated => {
                metrics
                    .failures
                    .get_or_create(&GroupLabel {
                        group: group.as_str(),
                    })
                    .inc();
                Admit::Refuse(challenge(cfg, group))
            }
        };
    };
    if let Some(wait) = s.guard.blocked(ip) {
        metrics.limited("login_failures");
        return Admit::Refuse(too_many(wait, "too many failed logins from this address"));
    }
    let ok = match &creds {
        Creds::Bearer(t) => bearer_ok(cfg, t, false),
        Creds::Basic(u, p) => s.guard.basic_ok(cfg, u, p).await,
        Creds::Unusable => false,
    };
    if ok {
        Admit::Full(Viewer::Authenticated)
    } else {
        s.guard.failed(ip, group, metrics);
        Admit::Refuse(challenge(cfg, group))
    }
}

/// The middleware: rate limit, access check, summary views, answer headers.
pub async fn guard(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let rt = s.current();
    let cfg = &rt.config;
    if let Some(rl) = cfg.web.rate_limit
        && !s.guard.take(rl)
    {
        s.metrics.access.limited("rate_limit");
        return too_many(rl.interval, "rate limit reached");
    }
    let mut resp = match group_of(req.uri().path()) {
        None => next.run(req).await,
        Some(g) => {
            // Nothing of the request (its body is not `Sync`) is held across a wait.
            let creds = credentials(req.headers());
            let ip = req.extensions().get::<Peer>().map(|p| p.0.ip());
            let cert = req
                .extensions()
                .get::<ClientCert>()
                .is_some_and(|c| c.verified);
            match admit(&s, cfg, g, creds, ip, cert).await {
                Admit::Full(viewer) => {
                    req.extensions_mut().insert(viewer);
                    next.run(req).await
                }
                Admit::Summary => {
                    let query = req.uri().query().unwrap_or("").to_string();
                    drop(req);
                    super::summary::answer(&s, g, &query).await
                }
                Admit::Refuse(r) => r,
            }
        }
    };
    for (name, value) in &cfg.web.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            resp.headers_mut().insert(n, v);
        }
    }
    resp
}

/// Holds one of `limits.probe_concurrency` slots of `/probe`.
pub struct ProbeSlot<'a>(&'a AtomicUsize);

impl Drop for ProbeSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Guard {
    /// A slot for one `/probe` check, or `None` when `cap` run already.
    pub fn probe_slot(&self, cap: usize) -> Option<ProbeSlot<'_>> {
        let before = self.probes_running.fetch_add(1, Ordering::AcqRel);
        let slot = ProbeSlot(&self.probes_running);
        (before < cap).then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_path() {
        assert_eq!(group_of("/metrics"), Some(Group::Metrics));
        assert_eq!(group_of("/api/admin/cache/invalidate"), Some(Group::Admin));
        assert_eq!(group_of("/-/reload"), Some(Group::Admin));
        assert_eq!(group_of("/"), Some(Group::Page));
        assert_eq!(group_of("/healthz"), None);
        assert_eq!(group_of("/api/healthz"), None);
    }

    #[test]
    fn the_dummy_hash_is_a_bcrypt_hash() {
        assert!(!bcrypt::verify("x", DUMMY_HASH.as_str()).unwrap());
    }

    #[test]
    fn basic_credentials_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYTpzcw=="),
        );
        assert!(matches!(credentials(&h), Some(Creds::Basic(u, p)) if u == "user" && p == "pa:ss"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert!(matches!(credentials(&h), Some(Creds::Unusable)));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert!(matches!(credentials(&h), Some(Creds::Bearer(t)) if t == "abc"));
    }

    #[test]
    fn a_token_bucket_refills() {
        let g = Guard::default();
        let rl = RateLimit {
            interval: Duration::from_secs(3600),
            burst: 2,
        };
        assert!(g.take(rl));
        assert!(g.take(rl));
        assert!(!g.take(rl));
    }

    #[test]
    fn ten_failures_block_an_address() {
        let g = Guard::default();
        let m = AccessMetrics {
            failures: Family::default(),
            limited: Family::default(),
        };
        let ip = Some(IpAddr::from([127, 0, 0, 2]));
        for _ in 0..MAX_FAILURES - 1 {
            g.failed(ip, Group::Metrics, &m);
        }
        assert!(g.blocked(ip).is_none());
        g.failed(ip, Group::Metrics, &m);
        assert!(g.blocked(ip).is_some());
        assert!(g.blocked(Some(IpAddr::from([127, 0, 0, 1]))).is_none());
    }
}
