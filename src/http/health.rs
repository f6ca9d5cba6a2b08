//! `GET /api/health`: the verdict, served from cached results. A result
//! older than `health.cache_ttl` (or invalidated) is a miss and is checked
//! anew; concurrent misses of one component share one check.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::error::ApiError;
use super::performance::{Section, Slowest, performance};
use super::shared::AppState;
use super::shared::Shared;
use crate::component::{Component, Latest, verdict};
use crate::config::PerfConfig;
use crate::perf;
use crate::probe::Status;
use crate::util::time::rfc3339;

#[derive(Deserialize)]
pub(super) struct ComponentQuery {
    component: Option<String>,
}

pub(super) async fn health(
    State(s): State<AppState>,
    Query(q): Query<ComponentQuery>,
) -> Result<Response, ApiError> {
    let rt = s.current();
    let ttl = rt.config.health.cache_ttl;
    let selected = select(&rt, q.component.as_deref())?;
    let results = latest_of(&s, &selected, ttl).await;

    let status = verdict(
        selected
            .iter()
            .zip(&results)
            .map(|(c, l)| (c.cfg.critical, l.status)),
    );
    let performance = match &q.component {
        Some(_) => Arc::new(Section::of(&component_perf(
            &selected[0],
            &rt.config.health.performance,
        ))),
        None => performance(&s.perf_memo, &rt),
    };
    let valid = rt.components.iter().filter(|c| c.is_fresh(ttl)).count();
    let hits = s.cache_hits.load(std::sync::atomic::Ordering::Relaxed);
    let misses = s.cache_misses.load(std::sync::atomic::Ordering::Relaxed);
    let body = HealthBody {
        status: status.as_str(),
        timestamp: rfc3339(SystemTime::now()),
        uptime_seconds: perf::round2(s.started.elapsed().as_secs_f64()),
        version: crate::util::build::VERSION,
        components: Components(&selected, &results),
        performance: &performance.raw,
        state_store: s.store.status_json(),
        alerting: s.alert.health_json(),
        cache: CacheView {
            hits,
            misses,
            hit_rate: if hits + misses == 0 {
                0.0
            } else {
                (hits as f64 / (hits + misses) as f64 * 1e4).round() / 1e4
            },
            entries: valid,
            valid,
            expired: rt.components.len() - valid,
            ttl_seconds: ttl.as_secs_f64(),
            components: CachePer(&rt.components),
        },
    };
    let code = if status == Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let json = serde_json::to_vec(&body)
        .map_err(|e| ApiError::Internal(format!("cannot serialize the health answer: {e}")))?;
    Ok((
        code,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json,
    )
        .into_response())
}

#[derive(Serialize)]
struct HealthBody<'a> {
    status: &'static str,
    timestamp: String,
    uptime_seconds: f64,
    version: &'static str,
    components: Components<'a>,
    performance: &'a RawValue,
    state_store: Value,
    cache: CacheView<'a>,
    alerting: Value,
}

#[derive(Serialize)]
struct CacheView<'a> {
    hits: u64,
    misses: u64,
    hit_rate: f64,
    /// Fresh results (as `valid`; kept for earlier readers).
    entries: usize,
    /// Results younger than the TTL and not invalidated.
    valid: usize,
    /// Components whose next health request checks anew (older than the
    /// TTL, invalidated, or never checked).
    expired: usize,
    ttl_seconds: f64,
    components: CachePer<'a>,
}

#[derive(Serialize)]
struct HitMiss {
    hits: u64,
    misses: u64,
}

/// Per component: `{ "hits": n, "misses": n }`.
struct CachePer<'a>(&'a [Arc<Component>]);

impl Serialize for CachePer<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut map = ser.serialize_map(Some(self.0.len()))?;
        for c in self.0 {
            let (hits, misses) = c.cache_counts();
            map.serialize_entry(c.name(), &HitMiss { hits, misses })?;
        }
        map.end()
    }
}

/// Components as a JSON object in configuration order.
struct Components<'a>(&'a [Arc<Component>], &'a [Arc<Latest>]);

impl Serialize for Components<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut map = ser.serialize_map(Some(self.0.len()))?;
        for (c, l) in self.0.iter().zip(self.1) {
            map.serialize_entry(c.name(), c.view_json(l))?;
        }
        map.end()
    }
}

/// The latest result of each component: from the cache when fresh, else from
/// a check run now (misses run concurrently, each bounded by its timeout).
async fn latest_of(s: &Shared, components: &[Arc<Component>], ttl: Duration) -> Vec<Arc<Latest>> {
    let since = tokio::time::Instant::now();
    let mut out: Vec<Option<Arc<Latest>>> = Vec::with_capacity(components.len());
    let mut misses = tokio::task::JoinSet::new();
    for (i, c) in components.iter().enumerate() {
        match c.cached(ttl) {
            Some(l) => {
                s.count_cache(true);
                c.count_cache(true);
                out.push(Some(l));
            }
            None => {
                s.count_cache(false);
                c.count_cache(false);
                out.push(None);
                let c = c.clone();
                misses.spawn(async move { (i, c.run_check(since).await) });
            }
        }
    }
    crate::metrics::snapshot::changed();
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
        let mut top = Slowest::new(cfg.top_slowest);
        for s in w.samples() {
            top.offer(c.name(), s);
        }
        m.insert("top_slowest".into(), Value::Array(top.into_json()));
        m.insert(
            "regression".into(),
            w.regression().map_or(Value::Null, |(b, r)| {
                json!({ "baseline_p50_ms": perf::round2(b), "current_p50_ms": perf::round2(r) })
            }),
        );
    }
    v
}

/// The verdict alone, from the same cache as the whole answer (the
/// anonymous `summary` view): of every component, or of one.
pub(super) async fn verdict_now(s: &Shared, component: Option<&str>) -> Result<Status, ApiError> {
    let rt = s.current();
    let selected = select(&rt, component)?;
    let results = latest_of(s, &selected, rt.config.health.cache_ttl).await;
    Ok(verdict(
        selected
            .iter()
            .zip(&results)
            .map(|(c, l)| (c.cfg.critical, l.status)),
    ))
}

/// Every component, or the one `?component=` names (404 when unknown).
fn select(
    rt: &crate::component::Components,
    component: Option<&str>,
) -> Result<Vec<Arc<Component>>, ApiError> {
    Ok(match component {
        Some(name) => vec![
            rt.component(name)
                .cloned()
                .ok_or_else(|| ApiError::NotFound(format!("no component named `{name}`")))?,
        ],
        None => rt.components.clone(),
    })
}
