//! `GET /`: the status page people open first. Server-rendered from the
//! latest results (no check runs, nothing is fetched from elsewhere), under
//! 100 KB for 20 components; without JavaScript it reloads itself every
//! 15 s, with JavaScript it follows `/api/events` live.
//!
//! - [`gather`] reads what the page shows into a [`Page`] (`model.rs`); [`render`]
//!   writes the HTML (`render.rs`), with the per-kind numbers (`kinds.rs`),
//!   the inline SVG (`svg.rs`) and escaping (`text.rs`).
//! - `style.css` (light and dark from `prefers-color-scheme`, one column
//!   under 600 px) and `live.js` are inlined.

mod kinds;
mod model;
mod render;
mod svg;
pub mod text;

use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub use model::{CHART_POINTS, Page, Row, SPARK_POINTS};
pub use render::render;

use super::error::ApiError;
use super::shared::{AppState, Shared};
use crate::probe::Status;

/// The page reloads itself this often without JavaScript.
pub const REFRESH_SECONDS: u32 = 15;

pub(super) async fn status_page(State(s): State<AppState>) -> Result<Response, ApiError> {
    let html = render(&gather(&s));
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response())
}

/// Reads the page's data from the running state (memory only).
pub(super) fn gather(s: &Shared) -> Page {
    let rt = s.current();
    let rows: Vec<Row> = rt.components.iter().map(Row::of).collect();
    let v = super::events::current_verdict(s, &rt);
    let verdict = Status::ALL
        .into_iter()
        .find(|st| st.as_str() == v.status)
        .unwrap_or(Status::Degraded);
    let perf = &rt.config.health.performance;
    let ttl = rt.config.health.cache_ttl;
    let hits = s.cache_hits.load(std::sync::atomic::Ordering::Relaxed);
    let misses = s.cache_misses.load(std::sync::atomic::Ordering::Relaxed);
    let cache = json!({
        "hits": hits,
        "misses": misses,
        "hit_rate": (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
        "entries": rt.components.iter().filter(|c| c.is_fresh(ttl)).count(),
        "ttl_seconds": ttl.as_secs_f64(),
    });
    Page {
        now: SystemTime::now(),
        version: crate::util::build::VERSION,
        uptime_s: s.started.elapsed().as_secs_f64(),
        verdict,
        since_ms: Some(v.since_ms),
        alerting: s.alert.health_json(),
        performance: super::performance::performance(&s.perf_memo, &rt).value(),
        cache,
        slow_ms: ms_of(perf.slow_above),
        critical_ms: ms_of(perf.critical_above),
        refresh_s: REFRESH_SECONDS,
        rows,
    }
}

fn ms_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
