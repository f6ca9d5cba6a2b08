//! `POST /api/alertmanager/webhook`: Alertmanager's webhook receiver
//! (payload version 4). The always-firing `Watchdog` alert is the heartbeat
//! of the pipeline; other alerts are kept as Alertmanager sees them and
//! listed (`alerting.firing`), never emailed on their own; one that no
//! notification carried for `alerting.firing_expiry` is dropped (a route
//! without `send_resolved` never tells its resolution).
//! `POST /api/admin/alerts/test`: a test email, answered with the server's reply.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::state::{Alerting, FiringAlert, MAX_FIRING};
use crate::http::admin::authorize;
use crate::http::error::ApiError;
use crate::http::shared::AppState;

/// The largest webhook body accepted: Alertmanager's payloads are a few KiB
/// per alert; a group of thousands is a mistake (`max_alerts` caps it).
pub const MAX_BODY: usize = 1 << 20;

/// The name of the heartbeat alert (`alerts.yml`).
pub const WATCHDOG: &str = "Watchdog";

/// A notification that parsed: its alerts, to apply with
/// [`Alerting::on_webhook`].
pub struct Notification(Vec<WebhookAlert>);

/// Parses a webhook body: JSON of payload version 4, or why not.
pub fn parse_payload(body: &[u8]) -> Result<Notification, String> {
    let p: Payload =
        serde_json::from_slice(body).map_err(|e| format!("malformed webhook payload: {e}"))?;
    if p.version != "4" {
        return Err(format!(
            "unsupported webhook payload version `{}`: depwatch reads version 4",
            p.version.chars().take(20).collect::<String>()
        ));
    }
    Ok(Notification(p.alerts))
}

#[derive(Deserialize)]
struct Payload {
    version: String,
    alerts: Vec<WebhookAlert>,
}

#[derive(Deserialize)]
struct WebhookAlert {
    status: String,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt", default)]
    starts_at: String,
    #[serde(default)]
    fingerprint: String,
}

pub async fn receive(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // `access.webhook: authenticated` was checked in front of the router
    // (any user or token); public, it takes the admin token when one is set.
    if s.current()
        .config
        .access
        .level(crate::config::web::Group::Webhook)
        == crate::config::web::Level::Public
    {
        // The access guard let this request through as anonymous: its
        // refusal here is counted like the guard's own, so that a
        // misconfigured Alertmanager (no `http_config.authorization`) shows
        // in `depwatch_http_auth_failures_total{group="webhook"}`.
        if let Err(e) = authorize(&s, &headers, false) {
            s.metrics.access.refused(crate::config::web::Group::Webhook);
            return Err(e);
        }
    }
    let n = parse_payload(&body).map_err(ApiError::BadRequest)?;
    let (heartbeat, kept) = s.alert.on_webhook(n);
    Ok(
        axum::Json(json!({ "status": "ok", "heartbeat": heartbeat, "firing": kept }))
            .into_response(),
    )
}

impl Alerting {
    /// Applies one notification; answers (heartbeat seen, alerts kept).
    pub fn on_webhook(&self, n: Notification) -> (bool, usize) {
        let alerts = n.0;
        let now = super::render::now_ms();
        let mut heartbeat = false;
        let mut i = self.lock();
        i.webhook_posts += 1;
        for a in alerts {
            let firing = a.status == "firing";
            if a.labels.get("alertname").map(String::as_str) == Some(WATCHDOG) {
                heartbeat |= firing;
                continue;
            }
            let key = if a.fingerprint.is_empty() {
                format!("{:?}", a.labels)
            } else {
                a.fingerprint
            };
            if firing {
                if i.firing.len() >= MAX_FIRING && !i.firing.contains_key(&key) {
                    continue;
                }
                i.firing.insert(
                    key,
                    FiringAlert {
                        labels: a.labels,
                        annotations: a.annotations,
                        starts_at: a.starts_at,
                        received_ms: now,
                        seen: tokio::time::Instant::now(),
                    },
                );
            } else {
                i.firing.remove(&key);
            }
        }
        if heartbeat {
            if i.last_heartbeat_ms.is_none() {
                tracing::info!("First Watchdog heartbeat from Alertmanager.");
            }
            i.last_heartbeat_ms = Some(now);
        }
        (heartbeat, i.firing.len())
    }

    /// Drops the alerts no notification carried for `after` (at `now`):
    /// Alertmanager re-sends a firing alert every `repeat_interval` of its
    /// route, and a route without `send_resolved` sends no resolution, so
    /// such an alert would otherwise stay listed for good.
    pub fn expire_firing(&self, after: std::time::Duration, now: tokio::time::Instant) {
        let mut i = self.lock();
        i.firing.retain(|key, a| {
            let keep = now.saturating_duration_since(a.seen) < after;
            if !keep {
                tracing::info!(
                    alertname = a.labels.get("alertname").map_or("", String::as_str),
                    fingerprint = %key,
                    firing_expiry = %crate::config::units::format_duration(after),
                    "Alert dropped from alerting.firing: no notification carried it for alerting.firing_expiry (its route may lack send_resolved)."
                );
            }
            keep
        });
    }
}

pub async fn test_email(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, true)?;
    let rt = s.current();
    let Some(cfg) = rt.config.alerting.clone() else {
        return Err(ApiError::BadRequest(
            "alerting is not configured: add an `alerting.email` section".into(),
        ));
    };
    drop(rt);
    match super::outbox::send_test(&cfg, &s.alert.host, Some(&s.alert.metrics)).await {
        Ok(reply) => Ok(axum::Json(json!({ "status": "sent", "reply": reply })).into_response()),
        Err(e) => Ok((
            StatusCode::BAD_GATEWAY,
            axum::Json(
                json!({ "status": "failed", "reason": e.reason.as_str(), "error": e.message }),
            ),
        )
            .into_response()),
    }
}
