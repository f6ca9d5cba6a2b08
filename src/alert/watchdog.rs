//! The pipeline watchdog: whether Prometheus, Alertmanager and the path to
//! on-call still work, read from when depwatch last saw a scrape and a
//! Watchdog heartbeat (on the monotonic clock) and from the Alertmanager
//! health checker. Pure: the engine reads the signals each tick and acts.

use std::time::Duration;

use super::config::AlertingConfig;
use super::state::Reason;

/// `ms`: when the signal was last seen (wall clock, as it said then);
/// `age`: how long ago that was (monotonic clock).
fn ago_text(ms: Option<i64>, age: Duration) -> String {
    match ms {
        None => "never since depwatch started".into(),
        Some(t) => format!(
            "last {} ago, at {}",
            crate::config::units::format_duration(Duration::from_secs(age.as_secs())),
            crate::util::time::rfc3339_ms(t)
        ),
    }
}

/// A watched signal (the last scrape, the last heartbeat) timed on the
/// monotonic clock from when the engine saw it change: a step of the wall
/// clock (NTP correcting a bad clock, a VM restored from a snapshot) then
/// neither fakes an outage (forward: "no scrape for 1h" right after one)
/// nor hides one (back: the last scrape "in the future" for an hour).
pub(super) struct Seen {
    /// The signal's wall-clock time (ms) as last seen.
    value: Option<i64>,
    at: tokio::time::Instant,
}

impl Seen {
    pub(super) fn new(at: tokio::time::Instant) -> Seen {
        Seen { value: None, at }
    }

    /// Notes the signal's current value; answers how long ago it last
    /// changed (since the start when it never did).
    pub(super) fn age(&mut self, value: Option<i64>, now: tokio::time::Instant) -> Duration {
        if value.is_some() && value != self.value {
            self.value = value;
            self.at = now;
        }
        now.saturating_duration_since(self.at)
    }

    /// Seen at least once since the start.
    pub(super) fn seen(&self) -> bool {
        self.value.is_some()
    }
}

/// What the watchdog reads on one tick: each signal's last wall time and
/// its age on the monotonic clock.
pub(super) struct Signals<'a> {
    /// Wall clock now (ms): only to say since when, never to measure.
    pub(super) now: i64,
    pub(super) scrape: (Option<i64>, Duration),
    pub(super) heartbeat: (Option<i64>, Duration),
    pub(super) am: &'a super::state::AmState,
}

/// Why the pipeline is down, if it is (empty: it is not).
pub(super) fn watchdog(cfg: &AlertingConfig, s: &Signals<'_>) -> Vec<Reason> {
    let fmt = crate::config::units::format_duration;
    let since = |age: Duration| s.now - super::incident::ms(age);
    let mut reasons = Vec::new();
    let (last_scrape, scrape_age) = s.scrape;
    if scrape_age >= cfg.scrape_watchdog {
        reasons.push(Reason {
            check: "scrape",
            message: format!(
                "no scrape of /metrics for {} ({}): Prometheus is gone or cannot reach depwatch",
                fmt(cfg.scrape_watchdog),
                ago_text(last_scrape, scrape_age)
            ),
            since_ms: since(scrape_age),
        });
    }
    if let Some(url) = &cfg.alertmanager_url
        && s.am.failures >= cfg.failure_threshold
    {
        reasons.push(Reason {
            check: "alertmanager",
            message: format!(
                "Alertmanager at {url} is unhealthy: {} ({} failed checks in a row)",
                s.am.error.as_deref().unwrap_or("no answer"),
                s.am.failures
            ),
            since_ms: s.am.first_failure_ms.unwrap_or(s.now),
        });
    }
    let (last_heartbeat, heartbeat_age) = s.heartbeat;
    if let Some(timeout) = cfg.heartbeat_timeout
        && heartbeat_age >= timeout
    {
        reasons.push(Reason {
            check: "heartbeat",
            message: format!(
                "no Watchdog notification from Alertmanager for {} ({}): rules → Prometheus → Alertmanager → notifications is broken",
                fmt(timeout),
                ago_text(last_heartbeat, heartbeat_age)
            ),
            since_ms: since(heartbeat_age),
        });
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::config::Mode;

    fn cfg() -> AlertingConfig {
        AlertingConfig {
            mode: Mode::Fallback,
            alertmanager_url: None,
            check_interval: Duration::from_secs(15),
            failure_threshold: 3,
            scrape_watchdog: Duration::from_secs(300),
            heartbeat_timeout: Some(Duration::from_secs(300)),
            group_wait: Duration::from_secs(30),
            firing_expiry: Duration::from_secs(3600),
            max_per_hour: 20,
            coordination: None,
            runbook_url: "docs/runbook.md".into(),
            page_url: None,
            email: None,
        }
    }

    fn checks(r: &[Reason]) -> Vec<&str> {
        r.iter().map(|r| r.check).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_of_the_wall_clock_neither_fakes_nor_hides_an_outage() {
        let (cfg, am) = (cfg(), Default::default());
        let t = 1_800_000_000_000;
        let (mut scrape, mut heartbeat) = (
            Seen::new(tokio::time::Instant::now()),
            Seen::new(tokio::time::Instant::now()),
        );
        let mono = tokio::time::Instant::now();
        let mut at = |now: i64, mono, seen: Option<i64>| {
            let s = Signals {
                now,
                scrape: (seen, scrape.age(seen, mono)),
                heartbeat: (seen, heartbeat.age(seen, mono)),
                am: &am,
            };
            checks(&watchdog(&cfg, &s))
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        // Scraped and notified at t; a second later the clock steps an
        // hour forward (NTP): nothing is late, the pipeline is fine.
        assert!(at(t, mono, Some(t)).is_empty());
        let second = mono + Duration::from_secs(1);
        assert!(at(t + 3_600_000, second, Some(t)).is_empty());
        // Then nothing for 5 minutes: down, however the clock stepped back
        // meanwhile (the last scrape "in the future").
        let later = mono + Duration::from_secs(301);
        assert_eq!(at(t - 3_600_000, later, Some(t)), ["scrape", "heartbeat"]);
        // A new scrape and heartbeat (their times from the stepped-back
        // clock): fine again.
        assert!(at(t - 3_599_000, later, Some(t - 3_599_000)).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_signal_never_seen_counts_from_the_start() {
        let (cfg, am) = (cfg(), Default::default());
        let start = tokio::time::Instant::now();
        let mut scrape = Seen::new(start);
        let mut s = |mono| Signals {
            now: 0,
            scrape: (None, scrape.age(None, mono)),
            heartbeat: (None, Duration::ZERO),
            am: &am,
        };
        assert!(watchdog(&cfg, &s(start + Duration::from_secs(299))).is_empty());
        let r = watchdog(&cfg, &s(start + Duration::from_secs(300)));
        assert_eq!(checks(&r), ["scrape"]);
        assert!(
            r[0].message.contains("never since depwatch started"),
            "{}",
            r[0].message
        );
        assert!(!scrape.seen());
    }
}
