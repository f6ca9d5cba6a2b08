//! The one error type of the HTTP API: JSON `{"error": ...}` with the
//! status that fits. Faults of depwatch's own are logged, never sent.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

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

/// An axum extractor (`Query`, `Path`) whose rejection is answered as
/// every other error of the API: JSON, 400 (axum's own is plain text).
pub struct Api<E>(pub E);

impl<E, S> FromRequestParts<S> for Api<E>
where
    E: FromRequestParts<S>,
    E::Rejection: std::fmt::Display,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match E::from_request_parts(parts, state).await {
            Ok(e) => Ok(Api(e)),
            Err(e) => Err(ApiError::BadRequest(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_answer_500_without_their_detail() {
        let resp = ApiError::Internal("secret detail of the fault".into()).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], br#"{"error":"internal error"}"#);
    }
}
