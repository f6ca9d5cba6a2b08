//! The metric registry: general families every component has, depwatch's own
//! process metrics, build info, and the two exposition formats.
//!
//! Probes write into families; a scrape only encodes what is there. The
//! building blocks of families are in [`kit`], the formats in
//! [`exposition`], the encodings scrapes share in [`snapshot`].

pub mod exposition;
pub mod kit;
pub mod lines;
pub mod snapshot;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::http::serve::ServerMetrics;
use crate::probe::{Kind, KindMetrics, Reason, Status};
use crate::util::build::{REVISION, RUSTC, VERSION};
use crate::util::time::unix_now;
use exposition::Format;
use kit::{ComponentOnly, GaugeF};
use lines::{Histograms, LabelSet, Labels, Lines, touch_str};
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ComponentKind {
    pub component: Arc<str>,
    pub kind: Kind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ComponentStatus {
    pub component: Arc<str>,
    pub kind: Kind,
    pub status: Status,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ComponentFailure {
    pub component: Arc<str>,
    pub kind: Kind,
    pub reason: Reason,
}

impl LabelSet for ComponentKind {
    fn write(&self, out: &mut Labels<'_>) {
        out.add("component", &self.component)
            .add("kind", self.kind.as_str());
    }

    fn touch(&self) -> u64 {
        touch_str(&self.component)
    }
}

impl LabelSet for ComponentStatus {
    fn write(&self, out: &mut Labels<'_>) {
        out.add("component", &self.component)
            .add("kind", self.kind.as_str())
            .add("status", self.status.as_str());
    }

    fn touch(&self) -> u64 {
        touch_str(&self.component)
    }
}

impl LabelSet for ComponentFailure {
    fn write(&self, out: &mut Labels<'_>) {
        out.add("component", &self.component)
            .add("kind", self.kind.as_str())
            .add("reason", self.reason.as_str());
    }

    fn touch(&self) -> u64 {
        touch_str(&self.component)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheResult {
    pub result: &'static str,
}

/// Why cached health results were dropped.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Cause {
    /// `POST /api/admin/cache/invalidate`
    Admin,
    /// A log rule's `invalidates` saw a matching line.
    Event,
    /// A reload changed the component.
    Reload,
}

impl Cause {
    pub const ALL: [Cause; 3] = [Cause::Admin, Cause::Event, Cause::Reload];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Admin => "admin",
            Cause::Event => "event",
            Cause::Reload => "reload",
        }
    }
}

impl prometheus_client::encoding::EncodeLabelValue for Cause {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: Cause,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
    rustc: &'static str,
}

/// Metric families that live as long as the process, across reloads.
pub struct Metrics {
    pub registry: Registry,
    /// The families with a series per component, written line by line
    /// after `registry`'s.
    pub lines: lines::Registry,
    pub up: Lines<ComponentKind, Gauge>,
    pub status: Lines<ComponentStatus, Gauge>,
    /// Each component's series has its own buckets (its kind's default or
    /// its configuration's `buckets`).
    pub check_duration: Histograms<ComponentKind>,
    pub checks: Lines<ComponentKind, Counter>,
    pub failures: Lines<ComponentFailure, Counter>,
    pub consecutive_failures: Lines<ComponentOnly, Gauge>,
    pub last_success: Lines<ComponentOnly, GaugeF>,
    /// Not in the registry: written after each scrape's cached body (see
    /// [`Metrics::tail`]), so that it is the time of that very scrape.
    pub last_scrape: GaugeF,
    /// The encodings `/metrics` serves.
    pub snapshots: snapshot::Snapshots,
    pub reload_ok: Gauge,
    pub reload_time: GaugeF,
    pub cache_hit: Counter,
    pub cache_miss: Counter,
    /// `depwatch_health_cache_invalidations_total{cause}`: cached results dropped.
    invalidations: [Counter; 3],
    /// The regression judgement of each component's check latencies.
    pub regression: Lines<ComponentOnly, Gauge>,
    pub baseline_p50: Lines<ComponentOnly, GaugeF>,
    pub recent_p50: Lines<ComponentOnly, GaugeF>,
    pub kinds: KindMetrics,
    /// depwatch's own HTTP server: open and refused connections.
    pub server: ServerMetrics,
    /// Failed logins and 429s of depwatch's HTTP server.
    pub access: crate::http::peer::AccessMetrics,
    /// `depwatch_alert_*`: the email fallback and the pipeline watchdog.
    pub alert: crate::alert::metrics::AlertMetrics,
    /// The live event feed of `/api/events` (and its `depwatch_events_*`).
    pub events: std::sync::Arc<crate::events::Hub>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SelfProcess));
        let r = registry.sub_registry_with_prefix("depwatch");
        let mut lines = lines::Registry::default();
        let l = &mut lines;

        let up = Lines::default();
        l.register(
            "depwatch",
            "up",
            "Whether the component's last check succeeded (1) or failed (0)",
            up.clone(),
        );
        let status = Lines::default();
        l.register(
            "depwatch",
            "component_status",
            "The component's health: 1 for its current status",
            status.clone(),
        );
        let check_duration = Histograms::default();
        l.register(
            "depwatch",
            "check_duration_seconds",
            "How long checks took",
            check_duration.clone(),
        );
        let checks = Lines::default();
        l.register("depwatch", "checks", "Checks run", checks.clone());
        let failures = Lines::default();
        l.register(
            "depwatch",
            "check_failures",
            "Checks that failed, by reason",
            failures.clone(),
        );
        let consecutive_failures = Lines::default();
        l.register(
            "depwatch",
            "consecutive_failures",
            "Failed checks in a row",
            consecutive_failures.clone(),
        );
        let last_success = Lines::default();
        l.register(
            "depwatch",
            "last_success_timestamp_seconds",
            "When the last successful check ended (Unix time)",
            last_success.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: VERSION,
                revision: REVISION,
                rustc: RUSTC,
            })
            .set(1);
        r.register(
            "build_info",
            "depwatch's version, revision and compiler: always 1",
            build,
        );
        let last_scrape = GaugeF::default();
        let snapshots = snapshot::Snapshots::register(r);
        let reload_ok = Gauge::default();
        reload_ok.set(1);
        r.register(
            "config_last_reload_successful",
            "Whether the last configuration reload worked",
            reload_ok.clone(),
        );
        let reload_time = GaugeF::default();
        reload_time.set(unix_now());
        r.register(
            "config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (Unix time)",
            reload_time.clone(),
        );
        let cache_requests = Family::<CacheResult, Counter>::default();
        // Handles kept apart: the health path counts without a family lookup.
        let cache_hit = cache_requests.get_or_create_owned(&CacheResult { result: "hit" });
        let cache_miss = cache_requests.get_or_create_owned(&CacheResult { result: "miss" });
        r.register(
            "health_cache_requests",
            "Health results served from the cache (hit) or checked anew (miss)",
            cache_requests.clone(),
        );
        let invalidations_family = Family::<CauseLabel, Counter>::default();
        let invalidations =
            Cause::ALL.map(|cause| invalidations_family.get_or_create_owned(&CauseLabel { cause }));
        r.register(
            "health_cache_invalidations",
            "Cached health results dropped, by cause (admin, event, reload)",
            invalidations_family,
        );
        let regression = Lines::default();
        l.register(
            "depwatch",
            "check_regression",
            "Whether the component's recent median check latency is at least regression_factor times its baseline (1) or not (0)",
            regression.clone(),
        );
        let baseline_p50 = Lines::default();
        l.register(
            "depwatch",
            "check_baseline_p50_seconds",
            "Median check latency of the older part of the component's window",
            baseline_p50.clone(),
        );
        let recent_p50 = Lines::default();
        l.register(
            "depwatch",
            "check_recent_p50_seconds",
            "Median check latency of the component's recent checks",
            recent_p50.clone(),
        );
        let kinds = KindMetrics::register(r, l);
        let server = ServerMetrics::register(r);
        let access = crate::http::peer::AccessMetrics::register(r);
        let alert = crate::alert::metrics::AlertMetrics::register(r);
        let events =
            std::sync::Arc::new(crate::events::Hub::new(r, crate::events::Hub::base_now()));
        Metrics {
            registry,
            lines,
            up,
            status,
            check_duration,
            checks,
            failures,
            consecutive_failures,
            last_success,
            last_scrape,
            snapshots,
            reload_ok,
            reload_time,
            cache_hit,
            cache_miss,
            invalidations,
            regression,
            baseline_p50,
            recent_p50,
            kinds,
            server,
            access,
            alert,
            events,
        }
    }

    /// Drops every general series of a removed component.
    pub fn forget(&self, component: &str, kind: Kind) {
        let ck = ComponentKind {
            component: component.into(),
            kind,
        };
        self.up.remove(&ck);
        self.check_duration.remove(&ck);
        self.checks.remove(&ck);
        for status in Status::ALL {
            self.status.remove(&ComponentStatus {
                component: component.into(),
                kind,
                status,
            });
        }
        for reason in Reason::ALL {
            self.failures.remove(&ComponentFailure {
                component: component.into(),
                kind,
                reason,
            });
        }
        let c = ComponentOnly {
            component: component.into(),
        };
        self.consecutive_failures.remove(&c);
        self.last_success.remove(&c);
        self.regression.remove(&c);
        self.baseline_p50.remove(&c);
        self.recent_p50.remove(&c);
        snapshot::changed();
    }

    /// Counts `n` cached results dropped for `cause`.
    pub fn count_invalidations(&self, cause: Cause, n: u64) {
        self.invalidations[cause as usize].inc_by(n);
        snapshot::changed();
    }

    /// What follows the cached body in every `/metrics` answer: the time
    /// of this scrape, and in OpenMetrics the `# EOF`.
    pub fn tail(&self, format: Format) -> String {
        let name = "depwatch_last_scrape_timestamp_seconds";
        let mut out = format!(
            "# HELP {name} When /metrics was last scraped (Unix time).\n# TYPE {name} gauge\n{name} {}\n",
            Float(self.last_scrape.get())
        );
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }

    /// The whole exposition, encoded now (tests, `replay-log`); scrapes use
    /// [`snapshot::Snapshots`].
    pub fn encode(&self, format: Format) -> String {
        let mut out = exposition::encode(&self.registry, &[&self.lines], format, 16 * 1024);
        out.push_str(&self.tail(format));
        out
    }

    /// OpenMetrics text, ending in `# EOF`.
    pub fn encode_openmetrics(&self) -> String {
        self.encode(Format::OpenMetrics)
    }

    /// The Prometheus text format 0.0.4.
    pub fn encode_text(&self) -> String {
        self.encode(Format::Text)
    }
}

/// A sample value as prometheus-client writes a float: integers with `.0`.
struct Float(f64);

impl std::fmt::Display for Float {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
            write!(f, "{v:.1}")
        } else {
            write!(f, "{v}")
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// depwatch's own `process_*` metrics, read from /proc on each scrape (as
/// client_golang does; it is a few syscalls on our own pid).
#[derive(Debug)]
struct SelfProcess;

impl prometheus_client::collector::Collector for SelfProcess {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let Some(s) = crate::procfs::read_self() else {
            return Ok(());
        };
        let gauges: [(&str, &str, f64); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                s.rss_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.vsize_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                s.start_time,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                s.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                s.max_fds,
            ),
        ];
        let cpu = prometheus_client::metrics::counter::ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?)?;
        for (name, help, v) in gauges {
            if v.is_nan() {
                continue;
            }
            let g = prometheus_client::metrics::gauge::ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        let threads = prometheus_client::metrics::gauge::ConstGauge::new(s.threads as i64);
        threads.encode(encoder.encode_descriptor(
            "process_threads",
            "Number of OS threads in the process.",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_renames_counters_and_drops_eof() {
        let m = Metrics::new();
        m.checks
            .get_or_create(&ComponentKind {
                component: "a".into(),
                kind: Kind::Process,
            })
            .inc();
        let om = m.encode_openmetrics();
        assert!(om.ends_with("# EOF\n"));
        assert!(om.contains("# TYPE depwatch_checks counter"), "{om}");
        let text = m.encode_text();
        assert!(
            text.contains("# TYPE depwatch_checks_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP depwatch_checks_total Checks run."),
            "{text}"
        );
        assert!(
            text.contains("depwatch_checks_total{component=\"a\",kind=\"process\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(text.contains("depwatch_build_info{version=\""));
    }

    #[test]
    fn control_characters_never_reach_the_exposition() {
        let m = Metrics::new();
        let raw = "nul\0cr\resc\u{1b}tab\tdel\u{7f}c1\u{85}nl\nend";
        m.up.get_or_create(&ComponentKind {
            component: raw.into(),
            kind: Kind::Process,
        })
        .set(1);
        for text in [m.encode_openmetrics(), m.encode_text()] {
            let bad: Vec<char> = text
                .chars()
                .filter(|c| c.is_control() && *c != '\n')
                .collect();
            assert!(bad.is_empty(), "{bad:?} in:\n{text}");
            assert!(
                text.contains(
                    "depwatch_up{component=\"nul\u{FFFD}cr\u{FFFD}esc\u{FFFD}tab\u{FFFD}del\u{FFFD}c1\u{FFFD}nl\\nend\",kind=\"process\"} 1"
                ),
                "{text}"
            );
        }
    }
}
