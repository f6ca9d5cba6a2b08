//! The anonymous views of `access.health: summary` and `access.page:
//! summary`: the verdict and nothing else — `{"status", "timestamp"}` with
//! the same 200/503 as the whole answer, so load balancers keep working,
//! and a page with the verdict in words and colour and a way to sign in.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use super::shared::AppState;
use crate::config::web::Group;
use crate::probe::Status;
use crate::util::time::rfc3339;

pub(super) async fn answer(s: &AppState, group: Group, query: &str) -> Response {
    let mut component = None;
    let mut login = false;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "component" => component = Some(v.into_owned()),
            "login" => login = true,
            _ => {}
        }
    }
    let status = match super::health::verdict_now(s, component.as_deref()).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let code = if status == Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let now = rfc3339(std::time::SystemTime::now());
    let mut r = if group == Group::Page {
        if login {
            // The browser asks for the password on this 401, then reloads `/`.
            let mut r =
                (StatusCode::UNAUTHORIZED, "sign in to see every component").into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"depwatch\", charset=\"UTF-8\""),
            );
            return r;
        }
        (code, Html(page(status, &now))).into_response()
    } else {
        (
            code,
            axum::Json(json!({ "status": status.as_str(), "timestamp": now })),
        )
            .into_response()
    };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn page(status: Status, now: &str) -> String {
    let (fg, bg) = match status {
        Status::Healthy => ("#0b5d1e", "#e6f4ea"),
        Status::Degraded => ("#6b4a00", "#fff4d6"),
        Status::Unhealthy => ("#8a1520", "#fde7e9"),
    };
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="15">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>depwatch: {s}</title>
<style>body{{font:16px system-ui,sans-serif;margin:2em;color:#1f2328;background:#fff}}
.v{{display:inline-block;padding:.4em .9em;border-radius:.4em;color:{fg};background:{bg};font-weight:600}}
@media (prefers-color-scheme: dark){{body{{color:#e6edf3;background:#0d1117}}a{{color:#7cb7ff}}}}</style></head>
<body><main><h1>depwatch</h1><p>Status: <span class="v">{s}</span></p><p>As of {now}.</p>
<p>Details are for signed-in users: <a href="?login">sign in</a>.</p></main></body></html>
"#,
        s = status.as_str(),
    )
}
