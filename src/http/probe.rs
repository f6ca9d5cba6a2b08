//! `GET /probe` — the blackbox-exporter multi-target pattern.
//!
//! `?target=URL&module=NAME` runs the http template `NAME` against `URL`
//! (only when one of the module's `allowed_targets` matches: an open prober
//! would be a proxy into the network) and answers only that check's metrics,
//! from a registry made for the request. `?target=NAME` answers the
//! configured probe `NAME`'s series from the health cache (a miss runs the
//! check through the same single-flight as the scheduler and `/api/health`,
//! so a flood of requests never multiplies the checks).
//!
//! Prometheus says how long it waits in `X-Prometheus-Scrape-Timeout-Seconds`;
//! the check gets that minus [`TIMEOUT_OFFSET`], so that the answer (a failed
//! check with reason `timeout`) arrives before Prometheus gives up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use super::error::{Api, ApiError};
use super::peer::Viewer;
use super::shared::AppState;
use crate::config::web::{Group, Level};
use crate::metrics::exposition::{Format, convert};
use crate::metrics::kit::GaugeF;
use crate::net::Target;
use crate::probe::Probe;
use crate::probe::http;

/// Time kept for answering after the check, out of Prometheus' scrape timeout.
pub const TIMEOUT_OFFSET: Duration = Duration::from_millis(500);
/// The shortest check a tiny scrape timeout still gets.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);

#[derive(Deserialize)]
pub(super) struct ProbeQuery {
    target: Option<String>,
    module: Option<String>,
    /// `debug=true`, as blackbox_exporter takes it: the check's result in
    /// words (error, details) before the metrics, as plain text.
    debug: Option<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    component: String,
}

/// The per-request families every `/probe` answer has.
struct ProbeResult {
    success: Family<ProbeLabels, Gauge>,
    duration: Family<ProbeLabels, GaugeF>,
}

impl ProbeResult {
    fn register(r: &mut Registry) -> Self {
        let p = ProbeResult {
            success: Family::default(),
            duration: Family::default(),
        };
        r.register(
            "probe_success",
            "Whether this /probe check succeeded (1) or failed (0)",
            p.success.clone(),
        );
        r.register(
            "probe_duration_seconds",
            "How long this /probe check took",
            p.duration.clone(),
        );
        p
    }

    fn set(&self, component: &str, ok: bool, took: Duration) {
        let l = ProbeLabels {
            component: component.to_string(),
        };
        self.success.get_or_create(&l).set(i64::from(ok));
        self.duration.get_or_create(&l).set(took.as_secs_f64());
    }
}

/// The scrape timeout Prometheus announced, minus the offset.
fn scrape_budget(headers: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    let Some(v) = headers.get("x-prometheus-scrape-timeout-seconds") else {
        return Ok(None);
    };
    let secs = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .ok_or_else(|| {
            ApiError::BadRequest(
                "X-Prometheus-Scrape-Timeout-Seconds is not a positive number of seconds".into(),
            )
        })?;
    let budget = Duration::from_secs_f64(secs.min(3600.0)).saturating_sub(TIMEOUT_OFFSET);
    Ok(Some(budget.max(MIN_TIMEOUT)))
}

pub(super) async fn probe(
    State(s): State<AppState>,
    viewer: Option<Extension<Viewer>>,
    headers: HeaderMap,
    Api(Query(q)): Api<Query<ProbeQuery>>,
) -> Result<Response, ApiError> {
    let target = q.target.filter(|t| !t.is_empty()).ok_or_else(|| {
        ApiError::BadRequest(
            "missing `target`: /probe?target=NAME for a configured probe, or /probe?target=URL&module=MODULE"
                .into(),
        )
    })?;
    let budget = scrape_budget(&headers)?;
    let rt = s.current();
    let cap = rt.config.limits.probe_concurrency;
    let Some(_slot) = s.guard.probe_slot(cap) else {
        s.metrics.access.limited("probe_concurrency");
        return Ok(super::access::too_many(
            Duration::from_secs(1),
            &format!("{cap} /probe checks are running (limits.probe_concurrency): try again"),
        ));
    };
    let debug = q.debug.as_deref().is_some_and(|d| d == "true" || d == "1");
    let (om, report) = match q.module.filter(|m| !m.is_empty()) {
        Some(name) => {
            let module = rt.config.modules.get(&name).ok_or_else(|| {
                let known: Vec<&str> = rt.config.modules.keys().map(String::as_str).collect();
                ApiError::BadRequest(if known.is_empty() {
                    format!("unknown module `{name}`: no modules are configured (`modules:`)")
                } else {
                    format!("unknown module `{name}`; known: {}", known.join(", "))
                })
            })?;
            // As blackbox_exporter reads it (its README probes
            // `target=google.com`): a target without a scheme is http://.
            let target = if target.contains("://") {
                target
            } else {
                format!("http://{target}")
            };
            let url = Target::parse(&target)
                .map_err(|e| ApiError::BadRequest(format!("invalid target: {e}")))?;
            if !module.allows(&url) {
                return Err(ApiError::BadRequest(format!(
                    "target {} is not allowed by module `{name}` (see its allowed_targets)",
                    url.redacted()
                )));
            }
            let timeout = budget.map_or(module.timeout, |b| b.min(module.timeout));
            run_module(&name, module, url, timeout, debug).await?
        }
        None => {
            let c = rt.component(&target).cloned().ok_or_else(|| {
                ApiError::BadRequest(if target.contains("://") {
                    "a URL target needs a module: /probe?target=URL&module=MODULE".to_string()
                } else {
                    format!("unknown target `{target}`: no configured probe has that name")
                })
            })?;
            // The component as /api/health shows it, only to whom
            // /api/health shows it whole (/probe may be more open).
            let debug = debug.then(|| match rt.config.access.level(Group::Health) {
                Level::Public => Shown::Whole,
                _ if viewer.is_some_and(|Extension(v)| v == Viewer::Authenticated) => Shown::Whole,
                level => Shown::Verdict(level),
            });
            run_configured(&s, &c, budget, rt.config.health.cache_ttl, debug).await
        }
    };
    if let Some(report) = report {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "{report}\n\nMetrics that would have been returned:\n{}",
                convert(&om, Format::Text)
            ),
        )
            .into_response());
    }
    let format = super::scrape::format_of(&headers);
    Ok((
        [(header::CONTENT_TYPE, format.content_type())],
        convert(&om, format),
    )
        .into_response())
}

/// How much of a configured probe `debug=true` shows.
#[derive(Clone, Copy)]
enum Shown {
    /// The component as `/api/health` shows it.
    Whole,
    /// Its verdict only: `/api/health` shows this client no more (the
    /// level of `access.health`).
    Verdict(Level),
}

/// What a check came to, in words, for `debug=true`: the outcome, the
/// reason and error of a failure, the details as `/api/health` has them.
fn report(head: String, result: &crate::probe::CheckResult) -> String {
    let (verdict, why, details) = match result {
        Ok(o) => (o.level.as_str(), o.why.clone(), &o.details),
        Err(e) => (
            "failed",
            Some(format!("{}: {}", e.reason.as_str(), e.message)),
            &e.details,
        ),
    };
    let mut out = format!("{head}: {verdict}\n");
    if let Some(why) = why {
        out.push_str(&format!("why: {why}\n"));
    }
    out.push_str("details: ");
    out.push_str(&pretty(details));
    out
}

/// JSON indented for reading (details hold raw JSON, which serializes as
/// it is: read back as a value first).
fn pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_default()
}

/// One check of a module against `url`, in a registry of its own; with
/// `debug`, its result in words too.
async fn run_module(
    name: &str,
    module: &http::Module,
    url: Target,
    timeout: Duration,
    debug: bool,
) -> Result<(String, Option<String>), ApiError> {
    // The URL as the report names it (without its query), made only for one.
    let shown = debug.then(|| url.redacted());
    let mut registry = Registry::default();
    let sub = registry.sub_registry_with_prefix("depwatch");
    let mut lines = crate::metrics::lines::Registry::default();
    let metrics = Arc::new(http::Metrics::register(&mut lines));
    let result = ProbeResult::register(sub);
    let spec = module.spec_for(url);
    let probe = http::build_with(&spec, name, metrics)
        .map_err(|e| ApiError::Internal(format!("cannot build module {name}'s probe: {e}")))?;
    let started = Instant::now();
    // On timeout the probe's future is dropped, which records the failure
    // (reason `timeout`) in its metrics; the probe then says where it was.
    let outcome = tokio::time::timeout(timeout, probe.check())
        .await
        .unwrap_or_else(|_| Err(probe.timed_out(timeout)));
    let ok = outcome.is_ok();
    if let Err(e) = &outcome {
        tracing::debug!(module = name, reason = e.reason.as_str(), error = %e.message, "Probe failed.");
    }
    let took = started.elapsed();
    result.set(name, ok, took);
    let mut om =
        crate::metrics::exposition::encode(&registry, &[&lines], Format::OpenMetrics, 2048);
    om.push_str("# EOF\n");
    let report = shown.map(|shown| {
        let head = format!(
            "Probe of {shown} with module `{name}` ({:.1} ms)",
            took.as_secs_f64() * 1000.0
        );
        report(head, &outcome)
    });
    Ok((om, report))
}

/// Answers a configured probe's own series, from the health cache: a result
/// younger than `health.cache_ttl` is reused, an older one is checked anew
/// through the single-flight `run_check`. So, like `/api/health`, a flood
/// of requests costs at most one check per TTL.
async fn run_configured(
    s: &crate::http::shared::Shared,
    c: &Arc<crate::component::Component>,
    budget: Option<Duration>,
    ttl: Duration,
    debug: Option<Shown>,
) -> (String, Option<String>) {
    let mut registry = Registry::default();
    let result = ProbeResult::register(registry.sub_registry_with_prefix("depwatch"));
    let started = tokio::time::Instant::now();
    let cached = c.cached(ttl);
    s.count_cache(cached.is_some());
    c.count_cache(cached.is_some());
    crate::metrics::snapshot::changed();
    let from_cache = cached.is_some();
    let (ok, took) = match cached {
        // The duration of the check that produced the result.
        Some(l) => (l.up, l.duration),
        None => {
            let check = c.run_check(started);
            let ok = match budget {
                Some(b) => tokio::time::timeout(b, check).await.map(|l| l.up),
                None => Ok(check.await.up),
            }
            .unwrap_or(false);
            (ok, started.elapsed())
        }
    };
    result.set(c.name(), ok, took);
    let own = encode(&registry);
    // The component's series from the encoding /metrics serves.
    let all = s
        .metrics
        .snapshots
        .get(
            &s.metrics.registry,
            &s.metrics.lines,
            Format::OpenMetrics,
            false,
        )
        .await;
    let mut out = select_component(
        std::str::from_utf8(&all.plain().whole()).unwrap_or(""),
        c.name(),
    );
    out.push_str(&own);
    let report = debug.map(|shown| {
        let view = match shown {
            Shown::Whole => pretty(&c.view(&c.latest())),
            Shown::Verdict(level) => format!(
                "(its details and error: for those /api/health shows them to, access.health: {})",
                level.as_str()
            ),
        };
        format!(
            "Probe `{}` (kind {}){}: {}\n{view}",
            c.name(),
            c.kind().as_str(),
            if from_cache {
                " from the health cache (health.cache_ttl)"
            } else {
                ""
            },
            if ok { "success" } else { "failed" },
        )
    });
    (out, report)
}

fn encode(r: &Registry) -> String {
    let mut out = String::with_capacity(2048);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, r);
    out
}

/// The families of an OpenMetrics text that have series of `component`,
/// with only those series (no `# EOF`).
fn select_component(om: &str, component: &str) -> String {
    let needle = format!("component=\"{component}\"");
    let mut out = String::new();
    let mut head = String::new();
    let mut kept_any = false;
    for line in om.lines() {
        if line == "# EOF" {
            break;
        }
        if line.starts_with('#') {
            if line.starts_with("# HELP ") || kept_any {
                head.clear();
                kept_any = false;
            }
            head.push_str(line);
            head.push('\n');
            continue;
        }
        if line.contains(&needle) {
            if !kept_any {
                out.push_str(&head);
                kept_any = true;
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_component_keeps_only_its_families() {
        let om = "# HELP a_x X.\n# TYPE a_x gauge\na_x{component=\"one\"} 1\na_x{component=\"two\"} 2\n\
                  # HELP b_y Y.\n# TYPE b_y counter\nb_y_total{component=\"two\"} 3\n\
                  # HELP c_z Z.\n# TYPE c_z gauge\nc_z{component=\"one\",kind=\"http\"} 4\n# EOF\n";
        assert_eq!(
            select_component(om, "one"),
            "# HELP a_x X.\n# TYPE a_x gauge\na_x{component=\"one\"} 1\n\
             # HELP c_z Z.\n# TYPE c_z gauge\nc_z{component=\"one\",kind=\"http\"} 4\n"
        );
        assert_eq!(select_component(om, "on"), "");
    }

    #[test]
    fn scrape_budget_keeps_an_offset() {
        let mut h = HeaderMap::new();
        assert!(scrape_budget(&h).unwrap().is_none());
        h.insert("x-prometheus-scrape-timeout-seconds", "10".parse().unwrap());
        assert_eq!(
            scrape_budget(&h).unwrap(),
            Some(Duration::from_millis(9500))
        );
        h.insert(
            "x-prometheus-scrape-timeout-seconds",
            "0.2".parse().unwrap(),
        );
        assert_eq!(scrape_budget(&h).unwrap(), Some(MIN_TIMEOUT));
        h.insert(
            "x-prometheus-scrape-timeout-seconds",
            "soon".parse().unwrap(),
        );
        assert!(scrape_budget(&h).is_err());
    }
}
