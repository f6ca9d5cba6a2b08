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

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub use model::{CHART_POINTS, Chip, FULL_AT_MOST, FULL_UP_TO, Page, Row, SPARK_POINTS, Shown};
pub use render::render;

use super::error::ApiError;
use super::shared::{AppState, Shared};
use crate::probe::Status;

/// The page reloads itself this often without JavaScript.
pub const REFRESH_SECONDS: u32 = 15;

pub(super) async fn status_page(
    State(s): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let html = render(&gather(&s, Shown::of_query(query.as_deref())));
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response())
}

/// Reads the page's data from the running state (memory only): every
/// component in full, or as `shown` asks; without, every one up to
/// [`FULL_UP_TO`] components and past that those not healthy.
pub(super) fn gather(s: &Shared, shown: Option<Shown>) -> Page {
    let rt = s.current();
    let total = rt.components.len();
    let shown = shown.unwrap_or(if total <= FULL_UP_TO {
        Shown::All
    } else {
        Shown::Compact
    });
    let mut counts = [0usize; 4];
    let mut rows = Vec::new();
    let mut sick = Vec::new();
    let mut healthy = Vec::new();
    for c in &rt.components {
        let status = c.latest().status;
        counts[match status {
            Some(Status::Healthy) => 0,
            Some(Status::Degraded) => 1,
            Some(Status::Unhealthy) => 2,
            None => 3,
        }] += 1;
        let full = match &shown {
            Shown::All => true,
            Shown::One(name) => c.name() == name,
            Shown::Compact => status != Some(Status::Healthy) && rows.len() < FULL_AT_MOST,
        };
        if full {
            rows.push(Row::of(c));
        } else if shown == Shown::Compact {
            let chip = Chip {
                component: c.clone(),
                status,
            };
            if status == Some(Status::Healthy) {
                healthy.push(chip);
            } else {
                sick.push(chip);
            }
        }
    }
    // Those not healthy past the ones in full come first.
    sick.append(&mut healthy);
    let chips = sick;
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
        chips,
        shown,
        total,
        counts,
    }
}

fn ms_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
