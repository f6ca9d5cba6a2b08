//! Who may use each endpoint group (`access:`), checked once for every
//! request by [`guard`], a middleware in front of the router.
//!
//! - Credentials: basic auth against `web.basic_auth_users` (bcrypt; a
//!   verified password is remembered by a salted SHA-256 of user, password
//!   and hash, so a scraper costs one bcrypt per hour, not one per scrape),
//!   bearer tokens (`auth.bearer_tokens` and the admin token), and client
//!   certificates verified by the TLS handshake. Tokens are compared in
//!   constant time; an unknown user costs a bcrypt like a known one.
//! - Failed logins are counted per group and per client address; an address
//!   with `guard::MAX_FAILURES` failures within `FAILURE_WINDOW` is refused
//!   (429, no password checked) for `BLOCK_FOR`. At most `BCRYPT_SLOTS`
//!   bcrypt checks run at once, so a flood of wrong passwords cannot take
//!   the CPU from scrapes (whose passwords are remembered).
//! - `summary` (health, page): anonymous clients get the verdict only.
//! - exporter-toolkit's `rate_limit` (all requests) and the answer headers
//!   of `http_server_config.headers`.

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;

use super::peer::{ClientCert, Peer, Viewer};
use super::shared::AppState;
use crate::config::Config;
use crate::config::web::{Group, Level};

enum Creds {
    Basic(String, String),
    Bearer(String),
    /// An `Authorization` header of another scheme or broken.
    Unusable,
}

fn credentials(h: &HeaderMap) -> Option<Creds> {
    let v = h.get(header::AUTHORIZATION)?;
    let Ok(v) = v.to_str() else {
        return Some(Creds::Unusable);
    };
    let Some((scheme, rest)) = v.split_once(' ') else {
        return Some(Creds::Unusable);
    };
    let rest = rest.trim_start_matches(' ');
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Creds::Bearer(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        return Some(match decoded.as_deref().and_then(|d| d.split_once(':')) {
            Some((u, p)) => Creds::Basic(u.to_string(), p.to_string()),
            None => Creds::Unusable,
        });
    }
    Some(Creds::Unusable)
}

/// Compares in time that depends on the lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The endpoint group of a path (`None`: `/healthz` and unknown paths).
pub fn group_of(path: &str) -> Option<Group> {
    Some(match path {
        "/metrics" => Group::Metrics,
        "/probe" => Group::Probe,
        "/api/health" => Group::Health,
        "/" => Group::Page,
        "/api/events" => Group::Events,
        "/api/alertmanager/webhook" => Group::Webhook,
        "/-/reload" => Group::Admin,
        p if p.starts_with("/api/admin/") => Group::Admin,
        _ => return None,
    })
}

fn bearer_ok(cfg: &Config, token: &str, admin_only: bool) -> bool {
    let mut ok = false;
    if let Some(a) = &cfg.admin_token {
        ok |= constant_time_eq(token.as_bytes(), a.expose().as_bytes());
    }
    if !admin_only {
        for t in &cfg.bearer_tokens {
            ok |= constant_time_eq(token.as_bytes(), t.expose().as_bytes());
        }
    }
    ok
}

/// 401 with the schemes this configuration accepts.
fn challenge(cfg: &Config, group: Group) -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({ "error": format!("authentication required for {}", group.as_str()) })),
    )
        .into_response();
    if !cfg.web.basic_auth_users.is_empty() && group != Group::Admin {
        r.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"depwatch\", charset=\"UTF-8\""),
        );
    }
    r.headers_mut().append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"depwatch\""),
    );
    r
}

pub fn too_many(retry_after: Duration, why: &str) -> Response {
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({ "error": why })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

enum Admit {
    Full(Viewer),
    Summary,
    Refuse(Response),
}

async fn admit(
    s: &AppState,
    cfg: &Config,
    group: Group,
    creds: Option<Creds>,
    ip: Option<IpAddr>,
    cert: bool,
) -> Admit {
    let level = cfg.access.level(group);
    let metrics = &s.metrics.access;
    if group == Group::Admin {
        // The admin token guards these; without one configured, the
        // handlers answer as they always did (reload open, the rest 403).
        if level == Level::Public || cfg.admin_token.is_none() {
            return Admit::Full(Viewer::Authenticated);
        }
        if let Some(wait) = s.guard.blocked(ip) {
            metrics.limited("login_failures");
            return Admit::Refuse(too_many(wait, "too many failed logins from this address"));
        }
        return match creds {
            Some(Creds::Bearer(t)) if bearer_ok(cfg, &t, true) => {
                Admit::Full(Viewer::Authenticated)
            }
            _ => {
                s.guard.failed(ip, group, metrics);
                // The admin endpoints' own refusal, as before `access:`.
                Admit::Refuse(super::error::ApiError::Unauthorized.into_response())
            }
        };
    }
    let Some(creds) = creds else {
        return match level {
            _ if cert => Admit::Full(Viewer::Authenticated),
            Level::Public => Admit::Full(Viewer::Anonymous),
            Level::Summary => Admit::Summary,
            Level::Authenticated => {
                metrics.refused(group);
                Admit::Refuse(challenge(cfg, group))
            }
        };
    };
    if let Some(wait) = s.guard.blocked(ip) {
        metrics.limited("login_failures");
        return Admit::Refuse(too_many(wait, "too many failed logins from this address"));
    }
    let ok = match &creds {
        Creds::Bearer(t) => bearer_ok(cfg, t, false),
        Creds::Basic(u, p) => s.guard.basic_ok(cfg, u, p).await,
        Creds::Unusable => false,
    };
    if ok {
        Admit::Full(Viewer::Authenticated)
    } else {
        s.guard.failed(ip, group, metrics);
        Admit::Refuse(challenge(cfg, group))
    }
}

/// The middleware: rate limit, access check, summary views, answer headers.
pub async fn guard(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let rt = s.current();
    let cfg = &rt.config;
    if let Some(rl) = cfg.web.rate_limit
        && !s.guard.take(rl)
    {
        s.metrics.access.limited("rate_limit");
        return too_many(rl.interval, "rate limit reached");
    }
    let mut resp = match group_of(req.uri().path()) {
        None => next.run(req).await,
        Some(g) => {
            // Nothing of the request (its body is not `Sync`) is held across a wait.
            let creds = credentials(req.headers());
            let ip = req.extensions().get::<Peer>().map(|p| p.0.ip());
            let cert = req
                .extensions()
                .get::<ClientCert>()
                .is_some_and(|c| c.verified);
            match admit(&s, cfg, g, creds, ip, cert).await {
                Admit::Full(viewer) => {
                    req.extensions_mut().insert(viewer);
                    next.run(req).await
                }
                Admit::Summary => {
                    let query = req.uri().query().unwrap_or("").to_string();
                    drop(req);
                    super::summary::answer(&s, g, &query).await
                }
                Admit::Refuse(r) => r,
            }
        }
    };
    for (name, value) in &cfg.web.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            resp.headers_mut().insert(n, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_path() {
        assert_eq!(group_of("/metrics"), Some(Group::Metrics));
        assert_eq!(group_of("/api/admin/cache/invalidate"), Some(Group::Admin));
        assert_eq!(group_of("/-/reload"), Some(Group::Admin));
        assert_eq!(group_of("/"), Some(Group::Page));
        assert_eq!(group_of("/healthz"), None);
        assert_eq!(group_of("/api/healthz"), None);
    }

    #[test]
    fn basic_credentials_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYTpzcw=="),
        );
        assert!(matches!(credentials(&h), Some(Creds::Basic(u, p)) if u == "user" && p == "pa:ss"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert!(matches!(credentials(&h), Some(Creds::Unusable)));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert!(matches!(credentials(&h), Some(Creds::Bearer(t)) if t == "abc"));
    }
}
