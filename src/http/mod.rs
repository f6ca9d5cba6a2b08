//! The HTTP surface: `/metrics`, `/probe`, `/api/health`, `/healthz`, the status page
//! and its event stream (`/api/events`), reload and the admin endpoints. [`router`] stands apart from serving so
//! that tests can drive it directly.

pub mod access;
pub(crate) mod admin;
pub(crate) mod error;
pub mod events;
pub mod guard;
mod gzip;
mod health;
pub mod page;
pub mod peer;
mod performance;
mod probe;
mod scrape;
pub mod serve;
pub mod shared;
mod summary;
pub mod tls;

use axum::Router;
use axum::routing::{get, post};

pub use error::ApiError;
pub use shared::AppState;

/// depwatch's own liveness: the process serves (it checks nothing; its
/// configuration was loaded before it listened).
async fn alive() -> &'static str {
    "ok"
}

/// The largest request body any endpoint but the webhook reads.
pub const MAX_BODY: usize = 64 << 10;

pub fn router(shared: AppState) -> Router {
    Router::new()
        .route("/metrics", get(scrape::metrics))
        .route("/probe", get(probe::probe))
        .route(
            "/api/health",
            get(health::health).layer(axum::middleware::from_fn(gzip::compress)),
        )
        .route("/healthz", get(alive))
        // The names Prometheus, Alertmanager and blackbox_exporter answer
        // to, for probes written for them (Kubernetes, load balancers).
        .route("/-/healthy", get(alive))
        .route("/-/ready", get(alive))
        .route(
            "/",
            get(page::status_page).layer(axum::middleware::from_fn(gzip::compress)),
        )
        .route("/api/events", get(events::events))
        .route("/-/reload", post(admin::reload))
        .route("/api/admin/cache/invalidate", post(admin::invalidate))
        .route("/api/admin/probes/{name}/run", post(admin::run_probe))
        .route("/api/admin/probes/run", post(admin::run_selected))
        .route(
            "/api/alertmanager/webhook",
            post(crate::alert::webhook::receive).layer(axum::extract::DefaultBodyLimit::max(
                crate::alert::webhook::MAX_BODY,
            )),
        )
        .route(
            "/api/admin/alerts/test",
            post(crate::alert::webhook::test_email),
        )
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        // Nothing but the webhook (its own cap, above) reads a body.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            access::guard,
        ))
        .with_state(shared)
}
