//! The access state of the process (in `Shared`): passwords verified
//! lately (a salted SHA-256 of user, password and hash, so a scraper costs
//! one bcrypt an hour, not one per scrape), failed logins per client
//! address, exporter-toolkit's `rate_limit` bucket, the bcrypt slots and
//! the `/probe` slots. `access.rs` decides with it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::peer::AccessMetrics;
use crate::config::web::{Group, RateLimit};
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

impl Guard {
    /// exporter-toolkit's `rate_limit`: a token bucket for all requests.
    pub(super) fn take(&self, rl: RateLimit) -> bool {
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

    pub(super) fn blocked(&self, ip: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        lock(&self.failures)
            .get(&ip)
            .and_then(|f| f.blocked_until)
            .and_then(|t| t.checked_duration_since(now))
    }

    pub(super) fn failed(&self, ip: Option<IpAddr>, group: Group, metrics: &AccessMetrics) {
        metrics.refused(group);
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

    pub(super) async fn basic_ok(&self, cfg: &Config, user: &str, pass: &str) -> bool {
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
    fn the_dummy_hash_is_a_bcrypt_hash() {
        assert!(!bcrypt::verify("x", DUMMY_HASH.as_str()).unwrap());
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
        let m = AccessMetrics::default();
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
