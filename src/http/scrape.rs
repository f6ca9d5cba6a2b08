//! `GET /metrics`: the latest results in the format the scraper asks for.
//! Never runs a probe.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::shared::AppState;

pub(super) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub(super) const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    s.metrics.last_scrape.set(crate::util::time::unix_now());
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (body, ctype) = if accept.contains("application/openmetrics-text") {
        (s.metrics.encode_openmetrics(), OPENMETRICS)
    } else {
        (s.metrics.encode_text(), TEXT_004)
    };
    ([(header::CONTENT_TYPE, ctype)], body).into_response()
}
