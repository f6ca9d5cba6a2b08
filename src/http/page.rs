//! `GET /`: a plain status page from the latest results (no checks run, no
//! external assets, refreshes itself every 15 s).

use std::fmt::Write;

use axum::extract::State;
use axum::response::Html;

use super::shared::AppState;
use crate::component::verdict;
use crate::probe::Status;
use crate::util::time::rfc3339;

pub(super) async fn status_page(State(s): State<AppState>) -> Html<String> {
    let rt = s.current();
    let rows: Vec<_> = rt
        .components
        .iter()
        .map(|c| (c.clone(), c.latest()))
        .collect();
    let overall = verdict(rows.iter().map(|(c, l)| (c.cfg.critical, l.status)));
    let mut html = String::with_capacity(4096);
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="15">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>depwatch: {overall}</title>
<style>body{{font:15px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{padding:.35em .8em;border-bottom:1px solid #ddd;text-align:left}}.healthy{{color:#1a7f37}}
.degraded{{color:#9a6700}}.unhealthy{{color:#cf222e}}.pending{{color:#777}}h1 span{{text-transform:uppercase}}</style></head>
<body><h1>depwatch: <span class="{overall}">{overall}</span></h1>
<p>Version {version}, up {uptime:.0} s. Machine-readable: <a href="api/health">/api/health</a>, <a href="metrics">/metrics</a>.</p>
<table><tr><th>component</th><th>kind</th><th>status</th><th>last check</th><th>response</th><th>error</th></tr>"#,
        overall = overall.as_str(),
        version = crate::util::build::VERSION,
        uptime = s.started.elapsed().as_secs_f64(),
    );
    for (c, l) in &rows {
        let status = l.status.map_or("pending", Status::as_str);
        let _ = write!(
            html,
            r#"<tr><td>{name}</td><td>{kind}</td><td class="{status}">{status}{crit}</td><td>{at}</td><td>{ms:.1} ms</td><td>{err}</td></tr>"#,
            name = escape(c.name()),
            kind = c.kind().as_str(),
            crit = if c.cfg.critical {
                ""
            } else {
                " (non-critical)"
            },
            at = l.checked_at.map(rfc3339).unwrap_or_default(),
            ms = l.duration.as_secs_f64() * 1000.0,
            err = escape(l.error.as_deref().unwrap_or("")),
        );
    }
    html.push_str("</table>");
    html.push_str(&s.alert.page_html());
    html.push_str("</body></html>\n");
    Html(html)
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
