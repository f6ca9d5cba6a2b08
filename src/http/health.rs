//! `GET /api/health`: the verdict, served from cached results. A result
//! older than `health.cache_ttl` (or invalidated) is a miss and is checked
//! anew; concurrent misses of one component share one check.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{ApiError, AppState, ComponentQuery};
use crate::app::{Runtime, Shared};
use crate::config::PerfConfig;
use crate::perf;
use crate::probe::Status;
use crate::state::{Component, Latest, rfc3339, verdict};

pub(super) async fn health(
    State(s): State<AppState>,
    Query(q): Query<ComponentQuery>,
) -> Result<Response, ApiError> {
    let rt = s.runtime();
    let ttl = rt.config.health.cache_ttl;
    let selected: Vec<Arc<Component>> = match &q.component {
        Some(name) => vec![
            rt.component(name)
                .cloned()
                .ok_or_else(|| ApiError::NotFound(format!("no component named `{name}`")))?,
        ],
        None => rt.components.clone(),
    };
    let results = latest_of(&s, &selected, ttl).await;

    let status = verdict(
        selected
            .iter()
            .zip(&results)
            .map(|(c, l)| (c.cfg.critical, l.status)),
    );
    let mut components = Map::new();
    for (c, l) in selected.iter().zip(&results) {
        components.insert(c.name().to_string(), c.to_json(l));
    }
    let performance = match &q.component {
        Some(_) => component_perf(&selected[0], &rt.config.health.performance),
        None => performance(&s, &rt),
    };
    let hits = s.cache_hits.load(std::sync::atomic::Ordering::Relaxed);
    let misses = s.cache_misses.load(std::sync::atomic::Ordering::Relaxed);
    let entries = rt
        .components
        .iter()
        .filter(|c| c.cached(ttl).is_some())
        .count();
    let body = json!({
        "status": status.as_str(),
        "timestamp": rfc3339(SystemTime::now()),
        "uptime_seconds": perf::round2(s.started.elapsed().as_secs_f64()),
        "version": crate::metrics::VERSION,
        "components": components,
        "performance": performance,
        "state_store": s.store.status_json(),
        "cache": {
            "hits": hits,
            "misses": misses,
            "hit_rate": if hits + misses == 0 { 0.0 } else { (hits as f64 / (hits + misses) as f64 * 1e4).round() / 1e4 },
            "entries": entries,
            "ttl_seconds": ttl.as_secs_f64(),
        },
    });
    let code = if status == Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    Ok((
        code,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

/// The latest result of each component: from the cache when fresh, else from
/// a check run now (misses run concurrently, each bounded by its timeout).
async fn latest_of(s: &Shared, components: &[Arc<Component>], ttl: Duration) -> Vec<Latest> {
    let since = Instant::now();
    let mut out: Vec<Option<Latest>> = Vec::with_capacity(components.len());
    let mut misses = tokio::task::JoinSet::new();
    for (i, c) in components.iter().enumerate() {
        match c.cached(ttl) {
            Some(l) => {
                s.count_cache(true);
                out.push(Some(l));
            }
            None => {
                s.count_cache(false);
                out.push(None);
                let c = c.clone();
                misses.spawn(async move { (i, c.run_check(since).await) });
            }
        }
    }
    while let Some(done) = misses.join_next().await {
        if let Ok((i, l)) = done {
            out[i] = Some(l);
        }
    }
    out.into_iter()
        .zip(components)
        .map(|(l, c)| l.unwrap_or_else(|| c.latest()))
        .collect()
}

fn component_perf(c: &Component, cfg: &PerfConfig) -> Value {
    let w = c.perf();
    let mut v = match perf::stats(std::iter::once(&w), cfg) {
        Some(st) => serde_json::to_value(st).unwrap_or(Value::Null),
        None => return json!({ "checks": 0 }),
    };
    if let Value::Object(m) = &mut v {
        m.insert(
            "top_slowest".into(),
            Value::Array(slowest(std::iter::once((c.name(), &w)), cfg.top_slowest)),
        );
        m.insert(
            "regression".into(),
            w.regression(cfg).map_or(Value::Null, |(b, r)| {
                json!({ "baseline_p50_ms": perf::round2(b), "current_p50_ms": perf::round2(r) })
            }),
        );
    }
    v
}

fn slowest<'a>(windows: impl Iterator<Item = (&'a str, &'a perf::Window)>, n: usize) -> Vec<Value> {
    let mut all: Vec<(&str, &perf::Sample)> = windows
        .flat_map(|(name, w)| w.samples().map(move |s| (name, s)))
        .collect();
    all.sort_unstable_by(|a, b| b.1.ms.total_cmp(&a.1.ms));
    all.into_iter()
        .take(n)
        .map(
            |(name, s)| json!({ "component": name, "ms": perf::round2(s.ms), "at": rfc3339(s.at) }),
        )
        .collect()
}

/// The performance section for all components, recomputed at most once a
/// second so that a flood of health requests does not sort windows each time.
fn performance(s: &Shared, rt: &Runtime) -> Value {
    let mut memo = s.perf_memo.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, v)) = memo.as_ref() {
        if at.elapsed() < Duration::from_secs(1) {
            return v.clone();
        }
    }
    let cfg = &rt.config.health.performance;
    let windows: Vec<(&str, perf::Window)> =
        rt.components.iter().map(|c| (c.name(), c.perf())).collect();
    let mut v = match perf::stats(windows.iter().map(|(_, w)| w), cfg) {
        Some(st) => serde_json::to_value(st).unwrap_or(Value::Null),
        None => json!({ "checks": 0 }),
    };
    if let Value::Object(m) = &mut v {
        m.insert(
            "top_slowest".into(),
            Value::Array(slowest(
                windows.iter().map(|(n, w)| (*n, w)),
                cfg.top_slowest,
            )),
        );
        let regressions: Vec<Value> = windows
            .iter()
            .filter_map(|(name, w)| {
                w.regression(cfg).map(|(b, r)| {
                    json!({ "component": name, "baseline_p50_ms": perf::round2(b), "current_p50_ms": perf::round2(r) })
                })
            })
            .collect();
        m.insert("regressions".into(), Value::Array(regressions));
        let per: Map<String, Value> = windows
            .iter()
            .filter_map(|(name, w)| {
                let st = perf::stats(std::iter::once(w), cfg)?;
                Some((name.to_string(), serde_json::to_value(st).ok()?))
            })
            .collect();
        m.insert("components".into(), Value::Object(per));
    }
    *memo = Some((Instant::now(), v.clone()));
    v
}
