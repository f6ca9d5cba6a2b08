//! The HTTP surface: `/metrics`, `/probe`, `/api/health`, `/healthz`, the status page,
//! reload and the admin endpoints. [`router`] stands apart from serving so
//! that tests can drive it directly.

mod health;
mod page;
mod probe;
pub mod serve;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use crate::app::Shared;

pub type AppState = Arc<Shared>;

pub fn router(shared: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/probe", get(probe::probe))
        .route("/api/health", get(health::health))
        .route("/healthz", get(|| async { "ok" }))
        .route("/", get(page::status_page))
        .route("/-/reload", post(reload))
        .route("/api/admin/cache/invalidate", post(invalidate))
        .route("/api/admin/probes/{name}/run", post(run_probe))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .with_state(shared)
}

/// Errors of the API, as JSON. Internals are logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("a valid admin bearer token is required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
    /// A fault of depwatch's own: the detail goes to the log, the client
    /// gets 500 and "internal error".
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, msg) = match self {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, self.to_string()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "Internal error while answering a request.");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        };
        let mut resp = (code, axum::Json(json!({ "error": msg }))).into_response();
        if code == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
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

/// Checks the bearer token. `required`: refuse when no token is configured.
fn authorize(s: &Shared, headers: &HeaderMap, required: bool) -> Result<(), ApiError> {
    let rt = s.runtime();
    let Some(token) = &rt.config.admin_token else {
        return if required {
            Err(ApiError::Forbidden(
                "admin endpoints are disabled: set auth.admin_token in the configuration".into(),
            ))
        } else {
            Ok(())
        };
    };
    let given = bearer_token(headers).unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// The credentials of an `Authorization: Bearer ...` header. The scheme is
/// matched in any case (RFC 7235: `bearer` is as valid as `Bearer`).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// Compares in time that depends on the lengths only, not on where the
/// bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn reload(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&s, &headers, false)?;
    let (tx, rx) = oneshot::channel();
    s.reload_tx
        .send(tx)
        .await
        .map_err(|_| ApiError::Unavailable("depwatch is shutting down".into()))?;
    match rx.await {
        Ok(Ok(())) => Ok(axum::Json(json!({ "status": "reloaded" })).into_response()),
        Ok(Err(e)) => Err(ApiError::BadRequest(format!(
            "configuration refused, the previous one keeps running: {e}"
        ))),
        Err(_) => Err(ApiError::Unavailable("depwatch is shutting down".into())),
    }
}

#[derive(Deserialize)]
struct ComponentQuery {
    component: Option<String>,
}

async fn invalidate(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ComponentQuery>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, true)?;
    let rt = s.runtime();
    let dropped = match q.component {
        Some(name) => {
            let c = rt
                .component(&name)
                .ok_or_else(|| ApiError::NotFound(format!("no component named `{name}`")))?;
            c.invalidate();
            1
        }
        None => {
            rt.components.iter().for_each(|c| c.invalidate());
            rt.components.len()
        }
    };
    Ok(axum::Json(json!({ "invalidated": dropped })).into_response())
}

async fn run_probe(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, true)?;
    let rt = s.runtime();
    let c = rt
        .component(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no component named `{name}`")))?;
    let latest = c.run_check(tokio::time::Instant::now()).await;
    Ok(axum::Json(json!({ "component": name, "result": c.view(&latest) })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[tokio::test]
    async fn internal_errors_answer_500_without_their_detail() {
        let resp = ApiError::Internal("secret detail of the fault".into()).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], br#"{"error":"internal error"}"#);
    }

    #[test]
    fn bearer_scheme_in_any_case() {
        assert_eq!(bearer_token(&auth("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&auth("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&auth("BEARER  abc")), Some("abc"));
        assert_eq!(bearer_token(&auth("Basic abc")), None);
        assert_eq!(bearer_token(&auth("Bearerabc")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn constant_time_eq_compares_all_bytes() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
