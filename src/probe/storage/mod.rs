//! `kind: storage` — how full a filesystem is and when it will be full.
//!
//! The numbers come from `statvfs(path)` (size, used, available to
//! unprivileged users, inodes) or, with `source: http`, from a JSON document
//! an API serves (total / used / trash by JSON pointer). Every check stores a
//! snapshot in the state store; the growth rate is a least-squares fit of
//! used bytes over `forecast_window` (see [`fit`]), so the forecast survives
//! restarts and is there again at the first check after one.
//!
//! This file owns the probe: its metric families, `build`, the measurement
//! and the check (history, verdict, details). The keys are parsed in
//! `config.rs`, the forecast maths live in `forecast.rs`.

mod config;
mod forecast;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use hyper::header::{self, HeaderValue};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};

use super::core::{
    BoxFuture, BuildCtx, BuildError, CheckError, CheckResult, FamiliesOf, Outcome, Probe, Reason,
    Status,
};
use crate::config::units::format_duration;
use crate::metrics::kit::{GaugeF, SeriesGate};
use crate::net::client::{Client, Request};
use crate::store::{StorageSample, Store};
use crate::util::text::short;
use crate::util::time::unix_ms;
pub use config::{HttpSource, Source, Spec};
use forecast::min_drop;
pub use forecast::{Fit, fit};

/// The default buckets of the check duration: a statvfs, or a small http
/// request to a capacity endpoint.
pub const BUCKETS: &[f64] = crate::probe::core::FAST_BUCKETS;

/// The largest JSON document `source: http` reads.
const MAX_BODY: u64 = 1 << 20;
/// The retention pruning of one component runs at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub component: String,
    pub path: String,
}

/// The storage metric families, labelled by component and path.
pub struct Metrics {
    size: Family<PathLabels, Gauge>,
    used: Family<PathLabels, Gauge>,
    available: Family<PathLabels, Gauge>,
    used_ratio: Family<PathLabels, GaugeF>,
    trash: Family<PathLabels, Gauge>,
    inodes: Family<PathLabels, Gauge>,
    inodes_used: Family<PathLabels, Gauge>,
    growth: Family<PathLabels, GaugeF>,
    days: Family<PathLabels, GaugeF>,
    samples: Family<PathLabels, Gauge>,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Metrics {
            size: Family::default(),
            used: Family::default(),
            available: Family::default(),
            used_ratio: Family::default(),
            trash: Family::default(),
            inodes: Family::default(),
            inodes_used: Family::default(),
            growth: Family::default(),
            days: Family::default(),
            samples: Family::default(),
        };
        r.register(
            "storage_size_bytes",
            "Size of the filesystem",
            m.size.clone(),
        );
        r.register(
            "storage_used_bytes",
            "Bytes used on the filesystem",
            m.used.clone(),
        );
        r.register(
            "storage_available_bytes",
            "Bytes available to unprivileged users",
            m.available.clone(),
        );
        r.register(
            "storage_used_ratio",
            "Used share of the space usable by unprivileged users (used / (used + available)), as df shows it",
            m.used_ratio.clone(),
        );
        r.register(
            "storage_trash_bytes",
            "Bytes in the trash, reclaimable (source: http with a trash pointer)",
            m.trash.clone(),
        );
        r.register(
            "storage_inodes",
            "Inodes of the filesystem",
            m.inodes.clone(),
        );
        r.register(
            "storage_inodes_used",
            "Inodes in use on the filesystem",
            m.inodes_used.clone(),
        );
        r.register(
            "storage_growth_bytes_per_second",
            "Growth of used bytes: least-squares fit over forecast_window (negative when shrinking)",
            m.growth.clone(),
        );
        r.register(
            "storage_days_until_full",
            "Days until the available bytes are used up at the fitted growth; absent when not growing",
            m.days.clone(),
        );
        r.register(
            "storage_forecast_samples",
            "Samples in the forecast window",
            m.samples.clone(),
        );
        m
    }

    fn forget(&self, l: &PathLabels) {
        self.forget_sample(l);
        self.growth.remove(l);
        self.days.remove(l);
        self.samples.remove(l);
    }

    fn forget_sample(&self, l: &PathLabels) {
        self.size.remove(l);
        self.used.remove(l);
        self.available.remove(l);
        self.used_ratio.remove(l);
        self.trash.remove(l);
        self.inodes.remove(l);
        self.inodes_used.remove(l);
    }
}

/// One measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measure {
    pub size: u64,
    pub used: u64,
    pub available: u64,
    pub trash: Option<u64>,
    /// (total, used); `None` where the filesystem has no inode limit.
    pub inodes: Option<(u64, u64)>,
}

impl Measure {
    /// Used percent as df shows it: of the space unprivileged users can use,
    /// so that 100% means "full for the service" even with reserved blocks.
    pub fn used_percent(&self) -> f64 {
        let usable = self.used.saturating_add(self.available);
        if usable == 0 {
            return 0.0;
        }
        self.used as f64 / usable as f64 * 100.0
    }
}
pub struct StorageProbe {
    inner: Arc<Inner>,
}

struct Inner {
    spec: Spec,
    name: String,
    target: String,
    labels: PathLabels,
    metrics: Arc<Metrics>,
    store: Arc<Store>,
    history: tokio::sync::Mutex<History>,
    /// The request of `source: http` (`None` for statvfs).
    client: Option<Client>,
    /// When the statvfs call in flight started (unix ms), 0 when none is.
    stuck_since: Arc<AtomicI64>,
    gate: SeriesGate,
}

#[derive(Default)]
struct History {
    loaded: bool,
    /// (unix ms, used bytes), oldest first, within the window.
    points: VecDeque<(i64, u64)>,
    last_prune_ms: i64,
}

pub fn build<F: FamiliesOf<Metrics> + ?Sized>(
    spec: &Spec,
    ctx: &BuildCtx<'_, F>,
) -> Result<StorageProbe, BuildError> {
    let target = spec.target();
    let client = match &spec.source {
        Source::Statvfs(_) => None,
        Source::Http(h) => {
            let mut headers = h.headers.clone();
            if !headers.iter().any(|(k, _)| *k == header::ACCEPT) {
                headers.push((header::ACCEPT, HeaderValue::from_static("application/json")));
            }
            let request = Request::get(h.url.clone(), headers, MAX_BODY);
            let client = Client::new(&request).map_err(|e| BuildError {
                name: ctx.name.to_string(),
                message: e.to_string(),
            })?;
            Some(client)
        }
    };
    Ok(StorageProbe {
        inner: Arc::new(Inner {
            spec: spec.clone(),
            name: ctx.name.to_string(),
            labels: PathLabels {
                component: ctx.name.to_string(),
                path: target.clone(),
            },
            target,
            metrics: FamiliesOf::<Metrics>::families(ctx.metrics).clone(),
            store: ctx.store.clone(),
            history: tokio::sync::Mutex::new(History::default()),
            client,
            stuck_since: Arc::new(AtomicI64::new(0)),
            gate: ctx.gate.clone(),
        }),
    })
}

fn statvfs(path: &std::path::Path) -> Result<Measure, CheckError> {
    let st = rustix::fs::statvfs(path).map_err(|e| {
        let reason = if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR {
            Reason::NotFound
        } else {
            Reason::Io
        };
        CheckError::new(
            reason,
            format!("cannot stat the filesystem of {}: {e}", path.display()),
        )
    })?;
    let frsize = if st.f_frsize > 0 {
        st.f_frsize
    } else {
        st.f_bsize
    };
    let size = st.f_blocks.saturating_mul(frsize);
    let free = st.f_bfree.saturating_mul(frsize);
    let available = st.f_bavail.saturating_mul(frsize);
    let inodes = (st.f_files > 0).then(|| (st.f_files, st.f_files.saturating_sub(st.f_ffree)));
    Ok(Measure {
        size,
        used: size.saturating_sub(free),
        available,
        trash: None,
        inodes,
    })
}

impl Inner {
    async fn fetch(&self, h: &HttpSource) -> Result<Measure, CheckError> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| CheckError::new(Reason::Internal, "no http client"))?;
        // Shown in errors instead of the URL: no query, which may hold a key.
        let shown = h.url.redacted();
        let answer = client.fetch().await.map_err(|mut e| {
            e.message = if e.reason == Reason::BodyTooLarge {
                format!("{shown} answered more than {MAX_BODY} bytes")
            } else {
                format!("request to {shown} failed: {}", e.message)
            };
            e
        })?;
        if !answer.status.is_success() {
            return Err(CheckError::new(
                Reason::Status,
                format!("{shown} answered HTTP {}", answer.status.as_u16()),
            ));
        }
        let doc: Value = serde_json::from_slice(&answer.body).map_err(|e| {
            CheckError::new(
                Reason::BadResponse,
                format!("{shown} did not answer JSON: {e}"),
            )
        })?;
        let total = number_at(&doc, &h.total, &shown)?;
        let used = number_at(&doc, &h.used, &shown)?;
        let available = match &h.available {
            Some(p) => number_at(&doc, p, &shown)?,
            None => total.saturating_sub(used),
        };
        let trash = h
            .trash
            .as_deref()
            .map(|p| number_at(&doc, p, &shown))
            .transpose()?;
        Ok(Measure {
            size: total,
            used,
            available,
            trash,
            inodes: None,
        })
    }

    async fn measure(&self) -> Result<Measure, CheckError> {
        match &self.spec.source {
            Source::Statvfs(p) => {
                // A hung mount (NFS gone) blocks statvfs for good; the
                // scheduler's timeout abandons the wait, not the thread. One
                // stuck call per probe at most, or the blocking pool fills up.
                let since = self.stuck_since.load(Ordering::Acquire);
                if since != 0 {
                    return Err(CheckError::new(
                        Reason::Timeout,
                        format!(
                            "statvfs of {} has not returned for {}s (a hung mount?)",
                            p.display(),
                            (unix_ms(SystemTime::now()) - since) / 1000
                        ),
                    ));
                }
                self.stuck_since
                    .store(unix_ms(SystemTime::now()).max(1), Ordering::Release);
                let p = p.clone();
                let flag = self.stuck_since.clone();
                tokio::task::spawn_blocking(move || {
                    let r = statvfs(&p);
                    flag.store(0, Ordering::Release);
                    r
                })
                .await
                .unwrap_or_else(|e| {
                    Err(CheckError::new(
                        Reason::Internal,
                        format!("statvfs panicked: {e}"),
                    ))
                })
            }
            Source::Http(h) => self.fetch(h).await,
        }
    }

    async fn check(&self) -> CheckResult {
        let started = unix_ms(SystemTime::now());
        let m = match self.measure().await {
            Ok(m) => m,
            Err(e) => {
                // No stale numbers: a failed check says nothing about the disk now.
                self.metrics.forget_sample(&self.labels);
                return Err(e);
            }
        };
        // The middle of the measurement: a slow API answer does not skew
        // the time axis of the fit.
        let now_ms = started + (unix_ms(SystemTime::now()) - started) / 2;
        let window_ms = self.spec.forecast_window.as_millis() as i64;
        let mut hist = self.history.lock().await;
        if !hist.loaded {
            self.load(&mut hist, now_ms - window_ms).await;
        }
        hist.points.push_back((now_ms, m.used));
        while hist
            .points
            .front()
            .is_some_and(|(t, _)| *t < now_ms - window_ms)
        {
            hist.points.pop_front();
        }
        self.store.storage_append(
            &self.name,
            &self.target,
            StorageSample {
                at_ms: now_ms,
                used: m.used,
                size: m.size,
                available: m.available,
            },
        );
        if now_ms - hist.last_prune_ms >= PRUNE_EVERY.as_millis() as i64 {
            hist.last_prune_ms = now_ms;
            self.store
                .storage_prune(&self.name, &self.target, now_ms - window_ms);
        }
        let t0 = hist.points.front().map_or(now_ms, |p| p.0);
        let points: Vec<(f64, f64)> = hist
            .points
            .iter()
            .map(|(t, u)| ((t - t0) as f64 / 1000.0, *u as f64))
            .collect();
        drop(hist);
        let n = points.len();
        let drop_at = min_drop(m.size);
        // A week of 15 s samples is 40 000 points: keep the runtime free.
        let fit = tokio::task::spawn_blocking(move || fit(&points, drop_at))
            .await
            .map_err(|e| CheckError::new(Reason::Internal, format!("forecast panicked: {e}")))?;
        Ok(self.report(&m, fit, n))
    }

    /// Loads the window's history from the store (once per probe).
    async fn load(&self, hist: &mut History, since_ms: i64) {
        hist.loaded = true;
        // A probe rebuilt by a reload must see what its predecessor queued.
        let _ = self.store.flush().await;
        match self
            .store
            .storage_history(&self.name, &self.target, since_ms)
            .await
        {
            Ok(rows) => {
                tracing::debug!(component = %self.name, samples = rows.len(), "Storage history loaded.");
                hist.points = rows.iter().map(|s| (s.at_ms, s.used)).collect();
            }
            Err(e) => {
                tracing::warn!(component = %self.name, error = %e, "Cannot load storage history; the forecast starts over.");
            }
        }
    }

    /// How long a fit must span before warn_days / critical_days judge it:
    /// a quarter of the window, at most an hour.
    fn min_span(&self) -> Duration {
        (self.spec.forecast_window / 4).min(Duration::from_secs(3600))
    }

    fn report(&self, m: &Measure, fit: Option<Fit>, samples: usize) -> Outcome {
        let mt = &self.metrics;
        let l = &self.labels;
        let pct = m.used_percent();
        // A removed component's series stay removed (see `SeriesGate`).
        let live = self.gate.open();
        if live.is_some() {
            mt.size.get_or_create(l).set(clamp_i64(m.size));
            mt.used.get_or_create(l).set(clamp_i64(m.used));
            mt.available.get_or_create(l).set(clamp_i64(m.available));
            mt.used_ratio.get_or_create(l).set(pct / 100.0);
            if let Some(t) = m.trash {
                mt.trash.get_or_create(l).set(clamp_i64(t));
            }
            if let Some((total, used)) = m.inodes {
                mt.inodes.get_or_create(l).set(clamp_i64(total));
                mt.inodes_used.get_or_create(l).set(clamp_i64(used));
            }
            mt.samples.get_or_create(l).set(samples as i64);
        }

        let mut d = Map::new();
        d.insert("path".into(), json!(self.target));
        d.insert("size_bytes".into(), json!(m.size));
        d.insert("used_bytes".into(), json!(m.used));
        d.insert("available_bytes".into(), json!(m.available));
        d.insert("used_percent".into(), json!(round(pct, 2)));
        if let Some(t) = m.trash {
            d.insert("trash_bytes".into(), json!(t));
        }
        if let Some((total, used)) = m.inodes {
            d.insert("inodes".into(), json!(total));
            d.insert("inodes_used".into(), json!(used));
        }
        let days = fit.and_then(|f| f.days_until_full(m.available));
        match &fit {
            Some(f) if live.is_some() => {
                mt.growth.get_or_create(l).set(f.slope);
            }
            _ => {
                mt.growth.remove(l);
            }
        }
        match days {
            Some(dd) if live.is_some() => {
                mt.days.get_or_create(l).set(dd);
            }
            _ => {
                mt.days.remove(l);
            }
        }
        drop(live);
        d.insert(
            "forecast".into(),
            json!({
                "window": format_duration(self.spec.forecast_window),
                "samples": samples,
                "span_seconds": fit.map(|f| round(f.span_seconds, 1)),
                "deletions": fit.map(|f| f.deletions),
                "growth_bytes_per_second": fit.map(|f| round(f.slope, 3)),
                "growth_per_day": fit.map(|f| format!("{}{}", if f.slope < 0.0 { "-" } else { "" }, bytes(f.slope.abs() * 86_400.0))),
                "days_until_full": days.map(|d| round(d, 2)),
                "thresholds_from_seconds": self.min_span().as_secs(),
                "trend": match fit {
                    None => "collecting",
                    Some(f) if f.growing => "growing",
                    Some(f) if f.slope < 0.0 => "shrinking",
                    Some(_) => "flat",
                },
            }),
        );

        let mut out = Outcome::healthy(d);
        let full = format!("{:.1}% full, {} free", pct, bytes(m.available as f64));
        let full = match m.trash {
            Some(t) if t > 0 => format!("{full} ({} reclaimable in the trash)", bytes(t as f64)),
            _ => full,
        };
        if pct >= self.spec.critical_percent {
            out.raise(Status::Unhealthy, full);
        } else if pct >= self.spec.warn_percent {
            out.raise(Status::Degraded, full);
        }
        if let Some((total, used)) = m.inodes {
            let ipct = used as f64 / total as f64 * 100.0;
            let msg = format!(
                "inodes {:.1}% used, {} left",
                ipct,
                total.saturating_sub(used)
            );
            if ipct >= self.spec.critical_percent {
                out.raise(Status::Unhealthy, msg);
            } else if ipct >= self.spec.warn_percent {
                out.raise(Status::Degraded, msg);
            }
        }
        // A forecast from a few minutes of samples would turn one burst of
        // writes (a deploy, a backup) into "full in 2 days": the days
        // thresholds wait until the fit spans enough time.
        let settled = fit.is_some_and(|f| f.span_seconds >= self.min_span().as_secs_f64());
        if let (Some(dd), Some(f), true) = (days, fit, settled) {
            let msg = format!(
                "full in {} days (growing {}/day)",
                fmt_days(dd),
                bytes(f.slope * 86_400.0)
            );
            if dd <= self.spec.critical_days {
                out.raise(Status::Unhealthy, msg);
            } else if dd <= self.spec.warn_days {
                out.raise(Status::Degraded, msg);
            }
        }
        out
    }
}

fn number_at(doc: &Value, pointer: &str, shown: &str) -> Result<u64, CheckError> {
    let v = doc.pointer(pointer);
    let n = match v {
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.is_finite())
                .map(|f| f as u64)
        }),
        // Some APIs send big numbers as strings to survive JavaScript.
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.ok_or_else(|| {
        CheckError::new(
            Reason::BadResponse,
            format!(
                "the answer of {shown} has no byte count at {pointer} (found {})",
                match v {
                    None => "nothing".to_string(),
                    Some(v) => short(v, 40),
                }
            ),
        )
    })
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

fn fmt_days(d: f64) -> String {
    if d < 10.0 {
        format!("{d:.1}")
    } else {
        format!("{d:.0}")
    }
}

/// Bytes the way people read them: 70.0 GiB, 512.0 MiB.
fn bytes(b: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b;
    let mut i = 0;
    while v.abs() >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

impl Probe for StorageProbe {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(self.inner.check())
    }

    fn forget(&self) {
        self.inner.metrics.forget(&self.inner.labels);
    }

    /// Used bytes over the forecast window: the last sample of each of
    /// `points` equal stretches of time (gaps stay gaps).
    fn chart(&self, points: usize) -> Option<Vec<(i64, f64)>> {
        let hist = self.inner.history.try_lock().ok()?;
        Some(downsample(&hist.points, points))
    }
}

/// The first point, then the last point of each of `n - 1` equal stretches
/// of the span of `points` (gaps stay gaps): at most `n` points, both ends kept.
fn downsample(points: &VecDeque<(i64, u64)>, n: usize) -> Vec<(i64, f64)> {
    let Some(first) = points.front() else {
        return Vec::new();
    };
    if points.len() <= n || n < 2 {
        return points.iter().map(|(t, u)| (*t, *u as f64)).collect();
    }
    let last_t = points.back().map_or(first.0, |p| p.0);
    let span = (last_t - first.0).max(1) as f64;
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(n);
    out.push((first.0, first.1 as f64));
    let mut slot_of_last = usize::MAX;
    for (t, u) in points.iter().skip(1) {
        let slot = (((t - first.0) as f64 / span) * (n - 2) as f64) as usize;
        if slot == slot_of_last
            && let Some(p) = out.last_mut()
        {
            *p = (*t, *u as f64);
        } else {
            out.push((*t, *u as f64));
            slot_of_last = slot;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = 1073741824.0;

    /// Relative error of `got` against `want`.
    fn rel(got: f64, want: f64) -> f64 {
        ((got - want) / want).abs()
    }

    #[test]
    fn charts_keep_the_ends_and_at_most_n_points() {
        let pts: VecDeque<(i64, u64)> = (0..1000).map(|i| (i * 15_000, i as u64)).collect();
        let c = downsample(&pts, 60);
        assert!(c.len() <= 60, "{}", c.len());
        assert_eq!(c.first(), Some(&(0, 0.0)));
        assert_eq!(c.last(), Some(&(999 * 15_000, 999.0)));
        assert!(c.windows(2).all(|w| w[0].0 < w[1].0));
        let few: VecDeque<(i64, u64)> = [(1, 5), (2, 6)].into_iter().collect();
        assert_eq!(downsample(&few, 60), vec![(1, 5.0), (2, 6.0)]);
    }

    #[test]
    fn readable_numbers() {
        assert_eq!(bytes(70.0 * GIB), "70.0 GiB");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(fmt_days(5.21), "5.2");
        assert_eq!(fmt_days(42.4), "42");
        let m = Measure {
            size: 100,
            used: 90,
            available: 5,
            trash: None,
            inodes: None,
        };
        assert!(rel(m.used_percent(), 94.736) < 0.001);
    }

    #[test]
    fn statvfs_of_a_missing_path_is_not_found() {
        let e = statvfs(std::path::Path::new("/no/such/dir/here")).unwrap_err();
        assert_eq!(e.reason, Reason::NotFound);
        let m = statvfs(std::path::Path::new(".")).unwrap();
        assert!(m.size > 0 && m.used <= m.size);
    }
}
