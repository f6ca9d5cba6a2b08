//! Live state of every component: the latest result, the threshold
//! bookkeeping, the latency window, and the single-flight check runner that
//! the scheduler and the health cache share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
// tokio's clock, so that tests can pause time and step through the cache TTL.
use tokio::time::Instant;

use crate::config::{PerfConfig, ProbeConfig};
use crate::metrics::kit::{ComponentOnly, GaugeF, SeriesGate};
use crate::metrics::lines::{Histogram, Kept};
use crate::metrics::{Cause, ComponentFailure, ComponentKind, ComponentStatus, Metrics};
use crate::perf::Window;
use crate::probe::{CheckResult, Details, Kind, Probe, Reason, Status};
use crate::util::sync::{lock, read, write};
use crate::util::time::{Stamp, unix};

mod set;
use set::status_changed;
pub use set::{Components, status_changes, verdict};

/// The latest known state of a component.
#[derive(Clone, Debug, Default)]
pub struct Latest {
    /// `None` until the first check ended.
    pub status: Option<Status>,
    pub up: bool,
    pub checked_at: Option<SystemTime>,
    pub finished: Option<Instant>,
    pub duration: Duration,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub error: Option<String>,
    pub reason: Option<Reason>,
    pub details: Details,
    pub last_success: Option<SystemTime>,
    pub down: bool,
    /// When the status became what it is (the start of the check that changed it).
    pub since: Option<SystemTime>,
    /// The component as `/api/health` shows it, serialized once (see
    /// [`Component::view_json`]).
    pub json: std::sync::OnceLock<Box<serde_json::value::RawValue>>,
}

/// Applies one check result to the previous state: a failure counts toward
/// `failure_threshold` (the status stays as it was until then), a success
/// counts toward `success_threshold` before an unhealthy component recovers,
/// and a working check's own level (thresholds crossed) applies at once.
pub fn transition(prev: &Latest, result: &CheckResult, cfg: &ProbeConfig) -> Step {
    match result {
        Err(_) => {
            let failures = prev.consecutive_failures.saturating_add(1);
            let down = prev.down || failures >= cfg.failure_threshold;
            // Below the threshold the status stays; a first failing check is not healthy.
            let status = if down {
                Status::Unhealthy
            } else {
                prev.status.unwrap_or(Status::Degraded)
            };
            Step {
                status,
                failures,
                successes: 0,
                down,
            }
        }
        Ok(outcome) => {
            let successes = prev.consecutive_successes.saturating_add(1);
            let down = prev.down && successes < cfg.success_threshold;
            let status = if down {
                Status::Unhealthy
            } else {
                outcome.level
            };
            Step {
                status,
                failures: 0,
                successes,
                down,
            }
        }
    }
}

/// The bookkeeping after one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub status: Status,
    pub failures: u32,
    pub successes: u32,
    /// Unhealthy by failed checks, until `success_threshold` successes.
    pub down: bool,
}

pub struct Component {
    pub cfg: Arc<ProbeConfig>,
    pub probe: Arc<dyn Probe>,
    labels: ComponentKind,
    metrics: Arc<Metrics>,
    perf_cfg: PerfConfig,
    latest: RwLock<Arc<Latest>>,
    perf: Mutex<Window>,
    flight: tokio::sync::Mutex<()>,
    /// Invalidations so far, and the count a finished check had seen when
    /// it started: the result is invalidated while `dropped > served`, so a
    /// check already in flight when an invalidation came does not clear it.
    dropped: AtomicU64,
    served: AtomicU64,
    /// Health requests answered from this component's cache, or not.
    hits: AtomicU64,
    misses: AtomicU64,
    /// Shared with the probe: closed when a reload removes or replaces the
    /// component, before its series are dropped.
    gate: SeriesGate,
    series: Kept<Series>,
    /// The name as a JSON string (quoted, escaped): the key of this
    /// component in `/api/health`, written at every request.
    name_json: Box<str>,
}

/// Handles on a component's general series (see [`Kept`]).
struct Series {
    regression: Gauge,
    /// The baseline and recent medians, made at the first judgement.
    p50: Option<(GaugeF, GaugeF)>,
    up: Gauge,
    /// In the order of `Status::ALL`.
    status: [Gauge; 3],
    consecutive_failures: Gauge,
    last_success: GaugeF,
    duration: Arc<Histogram>,
    checks: Counter,
}

impl Component {
    pub fn new(
        cfg: Arc<ProbeConfig>,
        probe: Arc<dyn Probe>,
        metrics: Arc<Metrics>,
        perf_cfg: PerfConfig,
        gate: SeriesGate,
    ) -> Self {
        let labels = ComponentKind {
            component: cfg.name.as_str().into(),
            kind: cfg.kind(),
        };
        let name_json = serde_json::to_string(&cfg.name)
            .unwrap_or_default()
            .into_boxed_str();
        Component {
            name_json,
            cfg,
            probe,
            labels,
            metrics,
            perf_cfg,
            latest: RwLock::new(Arc::new(Latest::default())),
            perf: Mutex::new(Window::default()),
            flight: tokio::sync::Mutex::new(()),
            dropped: AtomicU64::new(0),
            served: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            gate,
            series: Kept::default(),
        }
    }

    /// Takes the component out of service (a reload removed or replaced
    /// it): closes its gate, then drops the probe's series and, with
    /// `general`, the general ones (`depwatch_up`, ...; a successor of the
    /// same name and kind carries those on). A check still in flight ends
    /// without writing any.
    pub fn retire(&self, general: bool) {
        self.gate.retire();
        self.probe.forget();
        if general {
            self.metrics.forget(self.name(), self.kind());
        }
    }

    /// Carries the history of a component over a reload that changed it.
    /// Its latest result came from the old configuration: no longer a
    /// cache hit (counted as a `reload` invalidation).
    pub fn inherit(&self, old: &Component) {
        if old.cfg.kind() == self.cfg.kind() {
            // Shown anew: kind and criticality come from this configuration.
            let mut l = (*old.latest()).clone();
            l.json = Default::default();
            *write(&self.latest) = Arc::new(l);
            status_changed();
            *lock(&self.perf) = lock(&old.perf).clone();
            self.hits
                .store(old.hits.load(Ordering::Relaxed), Ordering::Relaxed);
            self.misses
                .store(old.misses.load(Ordering::Relaxed), Ordering::Relaxed);
            if self.latest().finished.is_some() {
                self.invalidate(Cause::Reload);
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The name as a JSON string, quoted and escaped.
    pub fn name_json(&self) -> &str {
        &self.name_json
    }

    pub fn kind(&self) -> Kind {
        self.cfg.kind()
    }

    /// The latest result (shared: cloning it is a reference count).
    pub fn latest(&self) -> Arc<Latest> {
        read(&self.latest).clone()
    }

    pub fn perf(&self) -> Window {
        lock(&self.perf).clone()
    }

    /// The latency window itself (read it under its lock, without a copy).
    pub fn perf_window(&self) -> &Mutex<Window> {
        &self.perf
    }

    /// The latest result if it is younger than `ttl` and not invalidated.
    pub fn cached(&self, ttl: Duration) -> Option<Arc<Latest>> {
        if self.invalidated() {
            return None;
        }
        let l = read(&self.latest);
        match l.finished {
            Some(f) if f.elapsed() < ttl && l.status.is_some() => Some(l.clone()),
            _ => None,
        }
    }

    /// Drops the cached result: the next health request checks anew.
    /// Returns whether there was a valid one to drop (only those count).
    pub fn invalidate(&self, cause: Cause) -> bool {
        let had = self.is_fresh(Duration::MAX);
        self.dropped.fetch_add(1, Ordering::AcqRel);
        if had {
            self.metrics.count_invalidations(cause, 1);
        }
        had
    }

    fn invalidated(&self) -> bool {
        self.dropped.load(Ordering::Acquire) > self.served.load(Ordering::Acquire)
    }

    /// Counts a health request served from the cache (`hit`) or not.
    pub fn count_cache(&self, hit: bool) {
        let n = if hit { &self.hits } else { &self.misses };
        n.fetch_add(1, Ordering::Relaxed);
    }

    /// (hits, misses) of health requests for this component.
    pub fn cache_counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.cfg.tags.iter().any(|t| t == tag)
    }

    /// Runs one check unless one that ended after `since` exists already:
    /// concurrent callers (scheduler, health misses, admin runs) share one
    /// check instead of each starting their own.
    pub async fn run_check(&self, since: Instant) -> Arc<Latest> {
        let _flight = self.flight.lock().await;
        // Removed by a reload after the caller found it: nothing to check.
        if self.gate.is_retired() {
            return self.latest();
        }
        {
            let l = read(&self.latest);
            if l.finished.is_some_and(|f| f >= since) && !self.invalidated() {
                return l.clone();
            }
        }
        // Invalidations up to now are answered by this check; later ones are not.
        let seen = self.dropped.load(Ordering::Acquire);
        let started = Instant::now();
        let at = SystemTime::now();
        // The check's future is dropped once the timeout is reached, before
        // the probe is asked what it was doing.
        let result = match tokio::time::timeout(self.cfg.timeout, self.probe.check()).await {
            Ok(r) => r,
            Err(_) => Err(self.probe.timed_out(self.cfg.timeout)),
        };
        // The dependency's own time when the probe measured it (http: the
        // request), else the time around the check.
        let took = match &result {
            Ok(o) => o.took,
            Err(e) => e.took,
        };
        let duration = took.unwrap_or_else(|| started.elapsed());
        let latest = self.record(result, at, duration);
        self.served.fetch_max(seen, Ordering::AcqRel);
        latest
    }

    fn record(&self, result: CheckResult, at: SystemTime, duration: Duration) -> Arc<Latest> {
        let prev = self.latest();
        let Step {
            status,
            failures,
            successes,
            down,
        } = transition(&prev, &result, &self.cfg);
        let now = SystemTime::now();
        let mut next = Latest {
            status: Some(status),
            up: result.is_ok(),
            checked_at: Some(at),
            finished: Some(Instant::now()),
            duration,
            consecutive_failures: failures,
            consecutive_successes: successes,
            error: None,
            reason: None,
            details: Details::default(),
            last_success: prev.last_success,
            down,
            since: if prev.status == Some(status) {
                prev.since
            } else {
                Some(at)
            },
            json: Default::default(),
        };
        match result {
            Ok(o) => {
                next.error = o.why;
                next.details = o.details.into_json();
                next.last_success = Some(now);
            }
            Err(e) => {
                next.error = Some(e.message.clone());
                next.reason = Some(e.reason);
                next.details = e.details.into_json();
            }
        }
        let judgement = {
            let mut w = lock(&self.perf);
            w.push(duration, at, &self.perf_cfg);
            w.judgement()
        };
        // A check that ends after a reload removed the component writes no
        // series: they would stay in /metrics for good.
        if let Some(_live) = self.gate.open() {
            self.write_series(&next, duration, judgement);
        }
        // The probe's own series were written during the check, these just
        // now: the next scrape encodes anew.
        crate::metrics::snapshot::changed();
        if prev.status != Some(status) || prev.up != next.up {
            let component = self.name();
            let kind = self.kind().as_str();
            match (&next.error, status) {
                (Some(err), Status::Unhealthy | Status::Degraded) => tracing::warn!(
                    component, kind, status = status.as_str(), reason = next.reason.map(Reason::as_str),
                    error = %err, "Component state changed."
                ),
                _ => tracing::info!(
                    component,
                    kind,
                    status = status.as_str(),
                    "Component state changed."
                ),
            }
        }
        // Serialized here, in the check's task, so that no health request
        // pays for it (at 10,000 components that would be most of its time).
        let _ = self.view_json(&next);
        let next = Arc::new(next);
        *write(&self.latest) = next.clone();
        if prev.status != Some(status) {
            status_changed();
        }
        if !self.gate.is_retired() {
            self.announce(&prev, &next);
        }
        next
    }

    /// Tells the open status pages (`/api/events`) about a check: a `state`
    /// event when the status changed, else a `check` event; either carries
    /// the component as `/api/health` shows it, with its name.
    fn announce(&self, prev: &Latest, next: &Latest) {
        if prev.status == next.status {
            self.metrics
                .events
                .publish_with("check", || self.event_data(next, None));
        } else {
            self.metrics
                .events
                .publish_with("state", || self.event_data(next, Some(prev)));
        }
    }

    /// The handles on the component's general series, made at its first
    /// check.
    fn series(&self) -> Series {
        let m = &self.metrics;
        let only = ComponentOnly {
            component: self.labels.component.clone(),
        };
        Series {
            regression: m.regression.get_or_create(&only),
            p50: None,
            up: m.up.get_or_create(&self.labels),
            status: crate::probe::Status::ALL.map(|status| {
                m.status.get_or_create(&ComponentStatus {
                    component: self.labels.component.clone(),
                    kind: self.kind(),
                    status,
                })
            }),
            consecutive_failures: m.consecutive_failures.get_or_create(&only),
            last_success: m.last_success.get_or_create(&only),
            duration: m
                .check_duration
                .get_or_create(&self.labels, &self.cfg.buckets),
            checks: m.checks.get_or_create(&self.labels),
        }
    }

    /// The general series of one check (`depwatch_up`, status, counters)
    /// and the regression judgement of the latency window (the one
    /// `/api/health` shows): 0 until there are enough checks to judge.
    fn write_series(
        &self,
        next: &Latest,
        duration: Duration,
        judgement: Option<crate::perf::Judgement>,
    ) {
        self.series.with(
            || self.series(),
            |s| self.write(s, next, duration, judgement),
        );
    }

    fn write(
        &self,
        s: &mut Series,
        next: &Latest,
        duration: Duration,
        judgement: Option<crate::perf::Judgement>,
    ) {
        let m = &self.metrics;
        s.regression
            .set(i64::from(judgement.is_some_and(|j| j.regressed)));
        if let Some(j) = judgement {
            let (baseline, recent) = s.p50.get_or_insert_with(|| {
                let only = ComponentOnly {
                    component: self.labels.component.clone(),
                };
                (
                    m.baseline_p50.get_or_create(&only),
                    m.recent_p50.get_or_create(&only),
                )
            });
            baseline.set(j.baseline_ms / 1e3);
            recent.set(j.recent_ms / 1e3);
        }
        if let Some(t) = next.last_success.filter(|_| next.up) {
            s.last_success.set(unix(t));
        }
        s.up.set(i64::from(next.up));
        for (g, status) in s.status.iter().zip(crate::probe::Status::ALL) {
            g.set(i64::from(Some(status) == next.status));
        }
        s.consecutive_failures
            .set(i64::from(next.consecutive_failures));
        // Counters last: whoever sees a check counted sees its gauges too.
        // A reason's failure counter is created by its first failure, not at
        // 0 up front: a target that never failed has no failure series (an
        // http target's seven reasons at 0 were an eighth of its series, on
        // every target, for failures most never see). The price, which is
        // why Prometheus' instrumentation guide creates known labels at 0:
        // the series appears at 1, and rate()/increase() start from the
        // first sample they see, so the first failure of each reason (per
        // component and start) is missing from them; the counter's value
        // and every later failure are right. Alerts judge `depwatch_up`, the
        // status and `consecutive_failures`, never these counters, and the
        // bundle's ratios read an absent failure series as 0.
        if let Some(reason) = next.reason {
            m.failures
                .get_or_create(&ComponentFailure {
                    component: self.labels.component.clone(),
                    kind: self.kind(),
                    reason,
                })
                .inc();
        }
        s.duration.observe(duration.as_secs_f64());
        s.checks.inc();
    }

    /// Whether a fresh (younger than `ttl`, not invalidated) result exists.
    pub fn is_fresh(&self, ttl: Duration) -> bool {
        !self.invalidated()
            && read(&self.latest)
                .finished
                .is_some_and(|f| f.elapsed() < ttl)
    }

    /// The data of its `state` and `check` events (compact JSON): the
    /// component as `/api/health` shows it (serialized once per result),
    /// with its name and, for a change of state, the status it had before.
    pub fn event_data(&self, l: &Latest, previous: Option<&Latest>) -> String {
        let view = self.view_json(l).get();
        let mut data = String::with_capacity(view.len() + self.name().len() + 48);
        data.push_str("{\"component\":");
        // A &str serializes without fail.
        data.push_str(&serde_json::to_string(self.name()).unwrap_or_default());
        if let Some(p) = previous {
            data.push_str(",\"previous\":");
            match p.status {
                Some(s) => {
                    data.push('"');
                    data.push_str(s.as_str());
                    data.push('"');
                }
                None => data.push_str("null"),
            }
        }
        match view.strip_prefix('{') {
            Some(rest) if rest.trim_start() != "}" => {
                data.push(',');
                data.push_str(rest);
            }
            _ => data.push('}'),
        }
        data
    }

    /// [`Component::view`] serialized, once per result.
    pub fn view_json<'a>(&self, l: &'a Latest) -> &'a serde_json::value::RawValue {
        l.json.get_or_init(|| {
            serde_json::value::to_raw_value(&self.view(l)).unwrap_or_else(|e| {
                tracing::error!(component = %self.name(), error = %e, "Cannot serialize a component.");
                serde_json::value::RawValue::from_string("null".into()).expect("valid JSON")
            })
        })
    }

    /// The component as `/api/health` shows it.
    pub fn view<'a>(&'a self, l: &'a Latest) -> ComponentView<'a, &'a Details> {
        self.view_with(l, &l.details)
    }

    /// [`Component::view`] with `details` in place of the kept ones (the
    /// status page shows them parsed, so that they are indented too).
    pub fn view_with<'a, D>(&'a self, l: &'a Latest, details: D) -> ComponentView<'a, D> {
        ComponentView {
            kind: self.kind().as_str(),
            status: l.status.map(Status::as_str),
            critical: self.cfg.critical,
            response_time_ms: crate::perf::round2(l.duration.as_secs_f64() * 1000.0),
            checked_at: l.checked_at.map(Stamp),
            consecutive_failures: l.consecutive_failures,
            error: l.error.as_deref(),
            reason: l.reason.map(Reason::as_str),
            last_success: l.last_success.map(Stamp),
            since: l.since.map(Stamp),
            details,
        }
    }
}

/// One component in `/api/health`, serialized straight from the state.
#[derive(serde::Serialize)]
pub struct ComponentView<'a, D> {
    pub kind: &'static str,
    pub status: Option<&'static str>,
    pub critical: bool,
    pub response_time_ms: f64,
    pub checked_at: Option<Stamp>,
    pub consecutive_failures: u32,
    pub error: Option<&'a str>,
    pub reason: Option<&'static str>,
    pub last_success: Option<Stamp>,
    /// When the status became what it is.
    pub since: Option<Stamp>,
    pub details: D,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{CheckError, Outcome};
    use serde_json::Map;

    #[test]
    fn details_are_kept_as_the_json_of_their_map() {
        let map = serde_json::json!({
            "url": "https://partner.example/x?a=\"b\"",
            "phases_ms": { "dns": 0.5, "total": 12.25 },
            "status_code": 200, "tls_version": null, "redirects": 0,
        });
        let map = map.as_object().unwrap().clone();
        let d = Details::from(map.clone()).into_json();
        assert!(matches!(d, Details::Json(_)));
        assert_eq!(d.map(), map);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        let mut more = d.clone();
        more.map_mut().insert("extra".into(), 1.into());
        assert_eq!(more.map().len(), map.len() + 1);
        let none = Details::default().into_json();
        assert_eq!(serde_json::to_string(&none).unwrap(), "{}");
        assert!(none.map().is_empty());
    }

    fn cfg(failure_threshold: u32, success_threshold: u32) -> ProbeConfig {
        let mut c = Arc::unwrap_or_clone(crate::config::builtin().probes.remove(0));
        c.failure_threshold = failure_threshold;
        c.success_threshold = success_threshold;
        c
    }

    fn run(c: &ProbeConfig, results: &[bool]) -> Vec<Status> {
        let mut l = Latest::default();
        results
            .iter()
            .map(|ok| {
                let r: CheckResult = if *ok {
                    Ok(Outcome::healthy(Map::new()))
                } else {
                    Err(CheckError::new(Reason::Connect, "refused"))
                };
                let step = transition(&l, &r, c);
                l.status = Some(step.status);
                l.consecutive_failures = step.failures;
                l.consecutive_successes = step.successes;
                l.down = step.down;
                step.status
            })
            .collect()
    }

    use Status::{Degraded as D, Healthy as H, Unhealthy as U};

    /// A probe whose check says when it started and ends when released.
    struct Held {
        started: Arc<tokio::sync::Notify>,
        release: Arc<tokio::sync::Notify>,
    }

    impl Probe for Held {
        fn check(&self) -> crate::probe::BoxFuture<'_, CheckResult> {
            Box::pin(async move {
                self.started.notify_one();
                self.release.notified().await;
                Ok(Outcome::healthy(Map::new()))
            })
        }
    }

    #[tokio::test]
    async fn a_check_in_flight_writes_no_series_after_retire() {
        let config = crate::config::builtin();
        let mut cfg = (*config.probes[0]).clone();
        cfg.name = "gone".into();
        cfg.timeout = Duration::from_secs(60);
        let metrics = Arc::new(Metrics::new());
        let (started, release) = (Arc::default(), Arc::default());
        let probe = Held {
            started: Arc::clone(&started),
            release: Arc::clone(&release),
        };
        let c = Arc::new(Component::new(
            Arc::new(cfg),
            Arc::new(probe),
            metrics.clone(),
            config.health.performance.clone(),
            SeriesGate::default(),
        ));
        let first = tokio::spawn({
            let c = c.clone();
            async move { c.run_check(Instant::now()).await }
        });
        started.notified().await;
        c.retire(true);
        release.notify_one();
        let latest = first.await.expect("check task");
        assert_eq!(latest.status, Some(H), "the check itself ended");
        let text = metrics.encode_text();
        assert!(!text.contains("component=\"gone\""), "{text}");
        // A later caller (a health request holding the old runtime) checks nothing.
        let again = c.run_check(Instant::now()).await;
        assert!(Arc::ptr_eq(&again, &latest));
        assert!(!metrics.encode_text().contains("component=\"gone\""));
    }

    /// An invalidation while a check is in flight (a sync completed during
    /// it) is not answered by that check: the next request checks again.
    #[tokio::test]
    async fn an_invalidation_during_a_check_outlives_it() {
        let config = crate::config::builtin();
        let mut cfg = (*config.probes[0]).clone();
        cfg.timeout = Duration::from_secs(60);
        let (started, release) = (Arc::new(tokio::sync::Notify::new()), Arc::default());
        let probe = Held {
            started: Arc::clone(&started),
            release: Arc::clone(&release),
        };
        let c = Arc::new(Component::new(
            Arc::new(cfg),
            Arc::new(probe),
            Arc::new(Metrics::new()),
            config.health.performance.clone(),
            SeriesGate::default(),
        ));
        let since = Instant::now();
        let first = tokio::spawn({
            let c = c.clone();
            async move { c.run_check(since).await }
        });
        started.notified().await;
        assert!(!c.invalidate(Cause::Event), "nothing cached yet");
        release.notify_one();
        first.await.expect("check task");
        assert!(c.cached(Duration::from_secs(60)).is_none());
        // The next caller runs a new check (which the probe starts).
        let second = tokio::spawn({
            let c = c.clone();
            async move { c.run_check(since).await }
        });
        started.notified().await;
        release.notify_one();
        second.await.expect("check task");
        assert!(c.cached(Duration::from_secs(60)).is_some());
        assert!(c.invalidate(Cause::Admin), "a fresh result was dropped");
    }

    #[test]
    fn failures_turn_unhealthy_at_threshold() {
        assert_eq!(
            run(&cfg(3, 1), &[true, false, false, false, true]),
            vec![H, H, H, U, H]
        );
    }

    #[test]
    fn a_blip_changes_nothing() {
        assert_eq!(
            run(&cfg(3, 1), &[true, false, true, false, false, true]),
            vec![H, H, H, H, H, H]
        );
    }

    #[test]
    fn recovery_needs_success_threshold() {
        assert_eq!(
            run(&cfg(2, 2), &[false, false, true, true, true]),
            vec![D, U, U, H, H]
        );
    }

    #[test]
    fn a_failing_first_check_is_not_healthy() {
        assert_eq!(run(&cfg(3, 1), &[false]), vec![D]);
    }
}
