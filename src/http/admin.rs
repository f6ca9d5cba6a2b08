//! The admin endpoints (reload, cache invalidation, running a probe now)
//! and the bearer token that guards them.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::access::constant_time_eq;
use super::error::{Api, ApiError};
use super::shared::{AppState, Shared};
use crate::component::{Component, Components};
use crate::metrics::Cause;

/// Checks the bearer token. `required`: refuse when no token is configured.
pub(crate) fn authorize(s: &Shared, headers: &HeaderMap, required: bool) -> Result<(), ApiError> {
    let rt = s.current();
    if rt.config.access.level(crate::config::web::Group::Admin) == crate::config::web::Level::Public
    {
        return Ok(());
    }
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

pub(super) async fn reload(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
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

/// Which components an admin request is about: `?component=NAME`,
/// `?tag=T`, or (neither) all of them.
#[derive(Deserialize)]
pub(super) struct Selector {
    component: Option<String>,
    tag: Option<String>,
}

impl Selector {
    fn select(&self, rt: &Components) -> Result<Vec<Arc<Component>>, ApiError> {
        match (&self.component, &self.tag) {
            (Some(_), Some(_)) => Err(ApiError::BadRequest(
                "give ?component= or ?tag=, not both".into(),
            )),
            (Some(name), None) => {
                Ok(vec![rt.component(name).cloned().ok_or_else(|| {
                    ApiError::NotFound(format!("no component named `{name}`"))
                })?])
            }
            (None, Some(tag)) => {
                let tagged: Vec<_> = rt
                    .components
                    .iter()
                    .filter(|c| c.has_tag(tag))
                    .cloned()
                    .collect();
                if tagged.is_empty() {
                    return Err(ApiError::NotFound(format!("no component tagged `{tag}`")));
                }
                Ok(tagged)
            }
            (None, None) => Ok(rt.components.clone()),
        }
    }
}

/// Drops cached results: answers how many and which components had one.
pub(super) async fn invalidate(
    State(s): State<AppState>,
    headers: HeaderMap,
    Api(Query(q)): Api<Query<Selector>>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, true)?;
    let rt = s.current();
    let selected = q.select(&rt)?;
    let dropped: Vec<&str> = selected
        .iter()
        .filter(|c| c.invalidate(Cause::Admin))
        .map(|c| c.name())
        .collect();
    Ok(axum::Json(json!({
        "invalidated": dropped.len(),
        "components": dropped,
        "selected": selected.iter().map(|c| c.name()).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `POST /api/admin/probes/run?tag=T` (or `?component=`, or all): runs the
/// selected components now, together, and answers each result.
pub(super) async fn run_selected(
    State(s): State<AppState>,
    headers: HeaderMap,
    Api(Query(q)): Api<Query<Selector>>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, true)?;
    let rt = s.current();
    let selected = q.select(&rt)?;
    let since = tokio::time::Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    for (i, c) in selected.iter().enumerate() {
        let c = c.clone();
        runs.spawn(async move { (i, c.run_check(since).await) });
    }
    let mut results = vec![None; selected.len()];
    while let Some(done) = runs.join_next().await {
        let (i, latest) =
            done.map_err(|e| ApiError::Internal(format!("a check task failed: {e}")))?;
        results[i] = Some(latest);
    }
    let results: Vec<_> = selected
        .iter()
        .zip(results)
        .map(|(c, l)| l.unwrap_or_else(|| c.latest()))
        .collect();
    // Each result as /api/health shows it, serialized when it was recorded;
    // by name, as a JSON object's keys are.
    let out: std::collections::BTreeMap<&str, &serde_json::value::RawValue> = selected
        .iter()
        .zip(&results)
        .map(|(c, l)| (c.name(), c.view_json(l)))
        .collect();
    Ok(axum::Json(json!({ "ran": selected.len(), "results": out })).into_response())
}

pub(super) async fn run_probe(
    State(s): State<AppState>,
    headers: HeaderMap,
    Api(Path(name)): Api<Path<String>>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, true)?;
    let rt = s.current();
    let c = rt
        .component(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no component named `{name}`")))?;
    let latest = c.run_check(tokio::time::Instant::now()).await;
    Ok(axum::Json(json!({ "component": name, "result": c.view_json(&latest) })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
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
