//! `kind: storage` — how full a filesystem is and when it will be full.
//!
//! The numbers come from `statvfs(path)` (size, used, available to
//! unprivileged users, inodes) or, with `source: http`, from a JSON document
//! an API serves (total / used / trash by JSON pointer). Every check stores a
//! snapshot in the state store; the growth rate is a least-squares fit of
//! used bytes over `forecast_window` (see [`fit`]), so the forecast survives
//! restarts and is there again at the first check after one.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use hyper::header::{self, HeaderName, HeaderValue};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::core::{
    BoxFuture, BuildCtx, BuildError, CheckError, CheckResult, FamiliesOf, Outcome, Probe, Reason,
    Status,
};
use crate::config::check::Checker;
use crate::config::units::{Dur, Secret, format_duration};
use crate::config::yaml::Node;
use crate::metrics::kit::{GaugeF, SeriesGate};
use crate::net::{Client, Request, Target};
use crate::store::{StorageSample, Store};
use crate::util::text::short;
use crate::util::time::unix_ms;

/// How a storage check fails: statvfs (not_found, io, timeout for a hung
/// mount) and the http source (connect, dns, tls, status, bad_response,
/// body_too_large).
pub const REASONS: &[Reason] = &[
    Reason::NotFound,
    Reason::Io,
    Reason::Timeout,
    Reason::Connect,
    Reason::Dns,
    Reason::Tls,
    Reason::Status,
    Reason::BadResponse,
    Reason::BodyTooLarge,
];

/// The largest JSON document `source: http` reads.
const MAX_BODY: u64 = 1 << 20;
/// The retention pruning of one component runs at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// A fit needs this many samples before it says anything.
const MIN_SAMPLES: usize = 4;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    path: Option<String>,
    source: Option<String>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, Secret>,
    pointers: Option<RawPointers>,
    warn_percent: Option<f64>,
    critical_percent: Option<f64>,
    forecast_window: Option<Dur>,
    warn_days: Option<f64>,
    critical_days: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPointers {
    total: String,
    used: String,
    available: Option<String>,
    trash: Option<String>,
}

/// Where the numbers come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Statvfs(PathBuf),
    Http(HttpSource),
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpSource {
    pub url: Target,
    /// Values are marked sensitive: `Debug` never shows them.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub total: String,
    pub used: String,
    pub available: Option<String>,
    pub trash: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub source: Source,
    pub warn_percent: f64,
    pub critical_percent: f64,
    pub forecast_window: Duration,
    pub warn_days: f64,
    pub critical_days: f64,
}

impl Spec {
    pub fn parse(node: &Node, path: &str, c: &Checker, also: &[&'static str]) -> Option<Spec> {
        let raw: Raw = c.parse_kind(node, path, also)?;
        let at = |k: &str| format!("{path}.{k}");
        let mut ok = true;
        let source = match raw.source.as_deref() {
            None | Some("statvfs") => {
                if raw.url.is_some() || raw.pointers.is_some() || !raw.headers.is_empty() {
                    c.problem(
                        &at("url"),
                        "`url`, `headers` and `pointers` need `source: http`",
                        "add `source: http`, or watch a local `path`",
                    );
                    ok = false;
                }
                match raw.path {
                    Some(p) if !p.is_empty() => {
                        // Absolute, so that the `path` label says which
                        // directory (`.` of the default says nothing).
                        let p = c.resolve(&p);
                        let clean: PathBuf = p.components().collect();
                        Some(Source::Statvfs(
                            std::path::absolute(&clean).unwrap_or(clean),
                        ))
                    }
                    _ => {
                        c.problem(
                            path,
                            "missing required key `path`",
                            "the directory whose filesystem to watch, e.g. path: /var/lib/app",
                        );
                        None
                    }
                }
            }
            Some("http") => http_source(&raw, path, c).map(Source::Http),
            Some(other) => {
                c.problem(
                    &at("source"),
                    format!("unknown source `{other}`"),
                    "one of: statvfs (the default, with `path`), http (with `url` and `pointers`)",
                );
                None
            }
        };
        let warn_percent = raw.warn_percent.unwrap_or(80.0);
        let critical_percent = raw.critical_percent.unwrap_or(95.0);
        for (k, v) in [
            ("warn_percent", warn_percent),
            ("critical_percent", critical_percent),
        ] {
            if !(v > 0.0 && v <= 100.0) {
                c.problem(
                    &at(k),
                    format!("{k} {v} is out of range"),
                    "a percentage above 0, at most 100",
                );
                ok = false;
            }
        }
        if warn_percent >= critical_percent {
            // Point at the key the user wrote, not at a default.
            let key = if raw.warn_percent.is_some() {
                "warn_percent"
            } else {
                "critical_percent"
            };
            c.problem(
                &at(key),
                "warn_percent is not below critical_percent",
                "the warning comes first: e.g. 80 and 95",
            );
            ok = false;
        }
        let warn_days = raw.warn_days.unwrap_or(30.0);
        let critical_days = raw.critical_days.unwrap_or(7.0);
        for (k, v) in [("warn_days", warn_days), ("critical_days", critical_days)] {
            if !(v >= 0.0 && v.is_finite()) {
                c.problem(
                    &at(k),
                    format!("{k} {v} must not be negative"),
                    "days until full, e.g. 30 and 7 (0 turns the threshold off)",
                );
                ok = false;
            }
        }
        // 0 turns a days threshold off (a forecast is never 0 days).
        if critical_days > 0.0 && warn_days <= critical_days {
            let key = if raw.warn_days.is_some() {
                "warn_days"
            } else {
                "critical_days"
            };
            c.problem(
                &at(key),
                "warn_days is not above critical_days",
                "the warning comes first: e.g. warn_days: 30, critical_days: 7",
            );
            ok = false;
        }
        let forecast_window = raw
            .forecast_window
            .map_or(Duration::from_secs(7 * 86_400), |d| d.0);
        if forecast_window < Duration::from_secs(60)
            || forecast_window > Duration::from_secs(366 * 86_400)
        {
            c.problem(
                &at("forecast_window"),
                format!(
                    "forecast_window {} is out of range",
                    format_duration(forecast_window)
                ),
                "use 1m to 366d; 7d sees a weekly cycle",
            );
            ok = false;
        }
        let source = source?;
        ok.then_some(Spec {
            source,
            warn_percent,
            critical_percent,
            forecast_window,
            warn_days,
            critical_days,
        })
    }

    /// The `path` label and history key: the directory, or the URL's path
    /// (never the whole URL: labels carry no hosts or queries).
    fn target(&self) -> String {
        match &self.source {
            Source::Statvfs(p) => p.display().to_string(),
            Source::Http(h) => h.url.path.split('?').next().unwrap_or("/").to_string(),
        }
    }
}

fn http_source(raw: &Raw, path: &str, c: &Checker) -> Option<HttpSource> {
    let at = |k: &str| format!("{path}.{k}");
    let mut ok = true;
    if raw.path.is_some() {
        c.problem(
            &at("path"),
            "`path` is for the statvfs source",
            "with `source: http` the numbers come from `url`: remove `path`",
        );
        ok = false;
    }
    let url = match raw.url.as_deref() {
        None => {
            c.problem(
                path,
                "missing required key `url`",
                "the endpoint that answers the capacity JSON, e.g. url: http://127.0.0.1:8080/capacity",
            );
            None
        }
        Some(u) => match Target::parse(u) {
            Ok(t) => Some(t),
            Err(e) => {
                c.problem(
                    &at("url"),
                    format!("invalid url: {e}"),
                    "write an absolute http:// or https:// URL; send credentials in `headers`, e.g. Authorization: \"Bearer ${TOKEN}\"",
                );
                None
            }
        },
    };
    let mut headers = Vec::new();
    for (k, v) in &raw.headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v.expose()),
        ) {
            (Ok(name), Ok(mut value)) => {
                value.set_sensitive(true);
                headers.push((name, value));
            }
            (Err(_), _) => {
                c.problem(
                    &at(&format!("headers.{k}")),
                    format!("invalid header name `{k}`"),
                    "",
                );
                ok = false;
            }
            (_, Err(_)) => {
                c.problem(
                    &at(&format!("headers.{k}")),
                    "invalid header value",
                    "header values are printable ASCII",
                );
                ok = false;
            }
        }
    }
    let Some(p) = &raw.pointers else {
        c.problem(
            path,
            "missing required key `pointers`",
            "JSON pointers to the numbers, e.g. pointers: { total: /quota/total, used: /quota/used }",
        );
        return None;
    };
    let mut check_ptr = |k: &str, v: &str| {
        if !(v.is_empty() || v.starts_with('/')) {
            c.problem(
                &at(&format!("pointers.{k}")),
                format!("`{v}` is not a JSON pointer"),
                "a JSON pointer starts with '/', e.g. /quota/used",
            );
            ok = false;
        }
    };
    check_ptr("total", &p.total);
    check_ptr("used", &p.used);
    if let Some(a) = &p.available {
        check_ptr("available", a);
    }
    if let Some(t) = &p.trash {
        check_ptr("trash", t);
    }
    let url = url?;
    ok.then(|| HttpSource {
        url,
        headers,
        total: p.total.clone(),
        used: p.used.clone(),
        available: p.available.clone(),
        trash: p.trash.clone(),
    })
}

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

// ---------------------------------------------------------------------------
// Forecast
// ---------------------------------------------------------------------------

/// The growth fitted over the window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    /// Bytes per second; negative when usage falls.
    pub slope: f64,
    pub samples: usize,
    pub span_seconds: f64,
    /// Drops (clean-ups) that split the series.
    pub deletions: usize,
    /// Grows by more than the noise (slope above twice its standard error).
    pub growing: bool,
}

/// Fits used bytes over time. `points` are (seconds, used bytes), oldest
/// first, at any spacing. `min_drop` is the smallest fall that counts as a
/// clean-up.
///
/// Why not plain least squares: a clean-up (a deletion of many files) in the
/// window would turn the line flat or negative while the disk keeps filling
/// at the same pace from a lower level. So the series is split at sudden
/// drops — falls far outside the step-to-step noise — and one common slope
/// is fitted across the pieces, each with its own level (a fixed-effects
/// regression). Steady shrinking has no sudden drop and stays negative.
/// When clean-ups recur (two or more), the growth between them says little
/// about filling up: the trend of the level each clean-up leaves behind is
/// reported instead (flat when they keep usage in check).
/// Regression on the real timestamps copes with irregular sampling and gaps.
pub fn fit(points: &[(f64, f64)], min_drop: f64) -> Option<Fit> {
    let n = points.len();
    if n < MIN_SAMPLES {
        return None;
    }
    let t0 = points[0].0;
    let span = points[n - 1].0 - t0;
    if span <= 0.0 {
        return None;
    }
    let cuts = deletions(points, min_drop);
    // Segments: [start, end) index ranges between cuts.
    let mut bounds = Vec::with_capacity(cuts.len() + 2);
    bounds.push(0);
    bounds.extend(cuts.iter().copied());
    bounds.push(n);
    let (mut sxx, mut sxy, mut used, mut groups) = (0.0, 0.0, 0usize, 0usize);
    let mut segs = Vec::new();
    for w in bounds.windows(2) {
        let seg = &points[w[0]..w[1]];
        if seg.len() < 2 {
            continue;
        }
        let k = seg.len() as f64;
        let tm = seg.iter().map(|p| p.0 - t0).sum::<f64>() / k;
        let ym = seg.iter().map(|p| p.1).sum::<f64>() / k;
        for p in seg {
            let dt = p.0 - t0 - tm;
            sxx += dt * dt;
            sxy += dt * (p.1 - ym);
        }
        used += seg.len();
        groups += 1;
        segs.push((seg, tm, ym));
    }
    if sxx <= 0.0 {
        return None;
    }
    let mut slope = sxy / sxx;
    let mut sse = 0.0;
    for (seg, tm, ym) in &segs {
        for p in *seg {
            let r = p.1 - ym - slope * (p.0 - t0 - tm);
            sse += r * r;
        }
    }
    let dof = used.saturating_sub(groups + 1);
    let se = if dof > 0 {
        (sse / dof as f64 / sxx).sqrt()
    } else {
        0.0
    };
    let mut growing = slope > 0.0 && slope > 2.0 * se;
    if cuts.len() >= 2 {
        // Recurring clean-ups: what matters is whether the level they leave
        // behind (the first sample after each) rises.
        let floors: Vec<(f64, f64)> = cuts.iter().map(|i| points[*i]).collect();
        slope = plain_slope(&floors);
        growing = slope > 0.0;
    }
    Some(Fit {
        slope,
        samples: n,
        span_seconds: span,
        deletions: cuts.len(),
        growing,
    })
}

/// Indices `i` where the step from `i-1` to `i` is a clean-up: a fall
/// larger than `min_drop` and far (6 robust sigmas) below the usual step
/// at that spacing.
fn deletions(points: &[(f64, f64)], min_drop: f64) -> Vec<usize> {
    let steps: Vec<(usize, f64, f64)> = points
        .windows(2)
        .enumerate()
        .map(|(i, w)| (i + 1, w[1].0 - w[0].0, w[1].1 - w[0].1))
        .collect();
    let rates: Vec<f64> = steps
        .iter()
        .filter(|s| s.1 > 0.0)
        .map(|s| s.2 / s.1)
        .collect();
    let rate = median(rates).unwrap_or(0.0);
    let resid: Vec<f64> = steps.iter().map(|s| s.2 - rate * s.1).collect();
    let mid = median(resid.clone()).unwrap_or(0.0);
    let sigma = 1.4826 * median(resid.iter().map(|r| (r - mid).abs()).collect()).unwrap_or(0.0);
    steps
        .iter()
        .zip(&resid)
        .filter(|((_, _, dy), r)| *dy < -min_drop && **r < mid - 6.0 * sigma)
        .map(|((i, _, _), _)| *i)
        .collect()
}

fn plain_slope(points: &[(f64, f64)]) -> f64 {
    let k = points.len() as f64;
    let tm = points.iter().map(|p| p.0).sum::<f64>() / k;
    let ym = points.iter().map(|p| p.1).sum::<f64>() / k;
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for p in points {
        sxx += (p.0 - tm) * (p.0 - tm);
        sxy += (p.0 - tm) * (p.1 - ym);
    }
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}

/// The median in linear time (a week of samples every check: no sort).
fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let m = v.len() / 2;
    let even = v.len().is_multiple_of(2);
    let (below, mid, _) = v.select_nth_unstable_by(m, f64::total_cmp);
    let mid = *mid;
    if even {
        let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((lower + mid) / 2.0)
    } else {
        Some(mid)
    }
}

/// The smallest fall that counts as a clean-up: 0.1% of the filesystem,
/// at least 1 MiB (a log rotation on a small disk is not a trend break).
fn min_drop(size: u64) -> f64 {
    (size as f64 * 0.001).max(1048576.0)
}

// ---------------------------------------------------------------------------
// The probe
// ---------------------------------------------------------------------------

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
            let client = Client::new(&request).map_err(|message| BuildError {
                name: ctx.name.to_string(),
                message,
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
        let days = fit
            .filter(|f| f.growing)
            .map(|f| m.available as f64 / f.slope / 86_400.0)
            .filter(|d| d.is_finite());
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = 1073741824.0;
    const DAY: f64 = 86_400.0;

    /// Relative error of `got` against `want`.
    fn rel(got: f64, want: f64) -> f64 {
        ((got - want) / want).abs()
    }

    fn series(n: usize, every: f64, mut f: impl FnMut(usize, f64) -> f64) -> Vec<(f64, f64)> {
        (0..n)
            .map(|i| {
                let t = i as f64 * every;
                (t, f(i, t))
            })
            .collect()
    }

    #[test]
    fn exact_linear_growth_within_one_percent() {
        let rate = 2.0 * GIB / DAY;
        let pts = series(7 * 96, 900.0, |_, t| 100.0 * GIB + rate * t);
        let f = fit(&pts, 1048576.0).unwrap();
        assert!(f.growing);
        assert!(rel(f.slope, rate) < 0.01, "{f:?}");
        assert_eq!(f.deletions, 0);
        // 60 GiB free at 2 GiB/day: 30 days.
        let days = 60.0 * GIB / f.slope / DAY;
        assert!(rel(days, 30.0) < 0.01, "{days}");
    }

    #[test]
    fn noisy_growth_within_ten_percent() {
        let rate = 1.0 * GIB / DAY;
        let mut rng = fastrand::Rng::with_seed(7);
        // Noise of ±2 GiB around a line that grows 7 GiB over the window.
        let pts = series(7 * 288, 300.0, |_, t| {
            50.0 * GIB + rate * t + (rng.f64() - 0.5) * 4.0 * GIB
        });
        let f = fit(&pts, 1048576.0).unwrap();
        assert!(f.growing, "{f:?}");
        assert!(rel(f.slope, rate) < 0.10, "{f:?}");
    }

    #[test]
    fn a_deletion_in_the_middle_keeps_the_growth_rate() {
        let rate = 3.0 * GIB / DAY;
        let pts = series(1000, 600.0, |i, t| {
            let base = 200.0 * GIB + rate * t;
            if i >= 500 { base - 150.0 * GIB } else { base }
        });
        let f = fit(&pts, 1048576.0).unwrap();
        assert_eq!(f.deletions, 1);
        assert!(f.growing);
        assert!(rel(f.slope, rate) < 0.01, "{f:?}");
        // A plain fit would have called this shrinking.
        assert!(plain_slope(&pts) < 0.0);
    }

    #[test]
    fn flat_usage_has_no_forecast() {
        let mut rng = fastrand::Rng::with_seed(3);
        let pts = series(500, 60.0, |_, _| 10.0 * GIB + (rng.f64() - 0.5) * 1e6);
        let f = fit(&pts, 1048576.0).unwrap();
        assert!(!f.growing, "{f:?}");
        let exact = series(50, 60.0, |_, _| 10.0 * GIB);
        let f = fit(&exact, 1048576.0).unwrap();
        assert!(!f.growing);
        assert_eq!(f.slope, 0.0);
    }

    #[test]
    fn shrinking_usage_has_no_forecast() {
        let rate = -GIB / DAY;
        let pts = series(500, 600.0, |_, t| 500.0 * GIB + rate * t);
        let f = fit(&pts, 1048576.0).unwrap();
        assert!(!f.growing);
        assert!(rel(f.slope, rate) < 0.01, "{f:?}");
        assert_eq!(f.deletions, 0, "steady shrinking is not a clean-up");
    }

    #[test]
    fn irregular_sampling_and_gaps() {
        let rate = 5.0 * 1048576.0 / 60.0; // 5 MiB a minute
        let mut rng = fastrand::Rng::with_seed(11);
        let mut t = 0.0;
        let mut pts = Vec::new();
        for i in 0..400 {
            // 5 s to 10 min apart, with a 6 h outage in the middle.
            t += 5.0 + rng.f64() * 595.0;
            if i == 200 {
                t += 6.0 * 3600.0;
            }
            pts.push((t, 20.0 * GIB + rate * t));
        }
        let f = fit(&pts, 1048576.0).unwrap();
        assert!(f.growing);
        assert_eq!(f.deletions, 0);
        assert!(rel(f.slope, rate) < 0.01, "{f:?}");
    }

    #[test]
    fn recurring_cleanups_that_keep_usage_flat_are_not_growth() {
        // Grows 10 GiB a day, cleaned back every day: a sawtooth.
        let pts = series(7 * 96, 900.0, |_, t| {
            100.0 * GIB + (t % DAY) / DAY * 10.0 * GIB
        });
        let f = fit(&pts, 1048576.0).unwrap();
        assert!(f.deletions >= 2, "{f:?}");
        assert!(!f.growing, "{f:?}");
    }

    #[test]
    fn too_few_samples_say_nothing() {
        assert_eq!(fit(&[(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)], 1.0), None);
        assert_eq!(fit(&[(5.0, 1.0); 10], 1.0), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
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

    fn parse(yaml: &str) -> Result<Spec, Vec<String>> {
        let text = format!("probes:\n  - name: d\n    kind: storage\n{yaml}");
        match crate::config::from_str(&text, "t.yml", None, std::path::Path::new("/etc"), &|_| {
            Some("s3cr3t".into())
        }) {
            Ok(mut c) => match c.probes.remove(0).spec {
                crate::probe::ProbeSpec::Storage(s) => Ok(s),
                other => panic!("{other:?}"),
            },
            Err(crate::config::ConfigError::Invalid { rendered }) => Err(rendered),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn config_defaults_and_relative_paths() {
        let s = parse("    path: data\n").unwrap();
        assert_eq!(s.source, Source::Statvfs(PathBuf::from("/etc/data")));
        assert_eq!((s.warn_percent, s.critical_percent), (80.0, 95.0));
        assert_eq!((s.warn_days, s.critical_days), (30.0, 7.0));
        assert_eq!(s.forecast_window, Duration::from_secs(7 * 86_400));
    }

    #[test]
    fn config_http_source() {
        let s = parse(
            "    source: http\n    url: https://api.example/v1/quota?x=1\n    headers: { Authorization: \"Bearer ${T}\" }\n    pointers: { total: /t, used: /u, trash: /tr }\n",
        )
        .unwrap();
        let Source::Http(h) = &s.source else { panic!() };
        assert_eq!(h.headers[0].1, "Bearer s3cr3t");
        assert_eq!(h.trash.as_deref(), Some("/tr"));
        assert_eq!(
            s.target(),
            "/v1/quota",
            "the label has no host and no query"
        );
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }

    #[test]
    fn config_problems_are_all_reported_with_positions() {
        let errs = parse(
            "    path: /x\n    warn_percent: 96\n    critical_days: 40\n    forecast_window: 10s\n",
        )
        .unwrap_err();
        let all = errs.join("\n");
        assert_eq!(errs.len(), 3, "{all}");
        assert!(
            all.contains(
                "t.yml:5:5: probes[0].warn_percent: warn_percent is not below critical_percent"
            ),
            "{all}"
        );
        assert!(
            all.contains(
                "t.yml:6:5: probes[0].critical_days: warn_days is not above critical_days"
            ),
            "{all}"
        );
        assert!(
            all.contains("probes[0].forecast_window: forecast_window 10s is out of range"),
            "{all}"
        );

        let all = parse(
            "    source: http\n    url: http://u:p@h/x\n    pointers: { total: t, used: /u }\n",
        )
        .unwrap_err()
        .join("\n");
        assert!(all.contains("credentials in the URL"), "{all}");
        assert!(all.contains("`t` is not a JSON pointer"), "{all}");
        assert!(!all.contains(":p@"), "{all}");

        let all = parse("    warn_percent: 50\n").unwrap_err().join("\n");
        assert!(all.contains("missing required key `path`"), "{all}");
        let all = parse("    path: /x\n    url: http://h/\n")
            .unwrap_err()
            .join("\n");
        assert!(all.contains("need `source: http`"), "{all}");
        // 0 turns the days thresholds off.
        assert!(parse("    path: /x\n    warn_days: 0\n    critical_days: 0\n").is_ok());
    }

    #[test]
    fn statvfs_of_a_missing_path_is_not_found() {
        let e = statvfs(std::path::Path::new("/no/such/dir/here")).unwrap_err();
        assert_eq!(e.reason, Reason::NotFound);
        let m = statvfs(std::path::Path::new(".")).unwrap();
        assert!(m.size > 0 && m.used <= m.size);
    }
}
