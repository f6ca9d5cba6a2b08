//! The status page's HTML: the verdict, the alerting pipeline and open
//! incidents, one row per component (state, since when, response time, the
//! failure in words, the latency sparkline, the kind's numbers and the
//! component's JSON), the performance summary and the health cache. The
//! stylesheet and the live-update script are inline (`style.css`,
//! `live.js`): no external asset, no framework.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::model::{FULL_AT_MOST, FULL_UP_TO, Page, Row, Shown};
use super::text::{Esc, EscText, age, count, ms, pct};
use super::{kinds, svg};
use crate::probe::Status;
use crate::util::time::rfc3339;

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("live.js");

/// `healthy`, `degraded`, `unhealthy` or `pending` (never checked): the
/// class that colours a state.
fn class(s: Option<Status>) -> &'static str {
    s.map_or("pending", Status::as_str)
}

/// The state in words (colour is never the only sign).
fn word(s: Option<Status>) -> &'static str {
    match s {
        Some(Status::Healthy) => "Healthy",
        Some(Status::Degraded) => "Degraded",
        Some(Status::Unhealthy) => "Unhealthy",
        None => "Not checked yet",
    }
}

/// A failure reason in plain words.
fn reason_words(r: &str) -> String {
    match r {
        "timeout" => "Timed out".into(),
        "connect" => "Cannot connect".into(),
        "dns" => "Name not resolved".into(),
        "tls" => "TLS failed".into(),
        "auth" => "Authentication failed".into(),
        "status" => "Unexpected HTTP status".into(),
        "bad_response" => "Unexpected answer".into(),
        "not_found" => "Not found".into(),
        "body_too_large" => "Answer too large".into(),
        other => {
            let mut s = other.replace('_', " ");
            if let Some(c) = s.get_mut(0..1) {
                c.make_ascii_uppercase();
            }
            s
        }
    }
}

fn ms_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// `<time datetime="…" data-ago>3 min ago</time>` (the script keeps the
/// words current).
fn ago(out: &mut String, at: SystemTime, now: SystemTime) {
    let secs = now.duration_since(at).map_or(0.0, |d| d.as_secs_f64());
    let stamp = rfc3339(at);
    let words = if secs < 1.0 {
        "just now".to_string()
    } else {
        format!("{} ago", age(secs))
    };
    let _ = write!(
        out,
        r#"<time datetime="{stamp}" title="{stamp}" data-ago>{words}</time>"#
    );
}

/// An RFC 3339 string from JSON as a `<time>`, or a dash.
fn ago_str(out: &mut String, v: Option<&str>, now: SystemTime) {
    match v.and_then(|s| humantime::parse_rfc3339_weak(s).ok()) {
        Some(t) => ago(out, t, now),
        None => out.push_str("never"),
    }
}

/// The whole page.
pub fn render(p: &Page) -> String {
    let mut h = String::with_capacity(16 * 1024 + p.rows.len() * 4096);
    let v = p.verdict;
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,"><noscript><meta http-equiv="refresh" content="{refresh}"></noscript><title>depwatch: {title}</title><style>{STYLE}</style></head><body>"#,
        refresh = p.refresh_s,
        title = class(Some(v)),
    );
    header(&mut h, p);
    h.push_str("<main>");
    alerting(&mut h, p);
    components(&mut h, p);
    performance(&mut h, p);
    h.push_str("</main>");
    let _ = write!(
        h,
        r#"<footer id="about"><p>depwatch {ver} · rendered {at} · <a href="api/health">/api/health</a> · <a href="api/events">/api/events</a> · <a href="metrics">/metrics</a></p></footer><script>{SCRIPT}</script></body></html>"#,
        ver = Esc(p.version),
        at = rfc3339(p.now),
    );
    h.push('\n');
    h
}

fn header(h: &mut String, p: &Page) {
    let v = p.verdict;
    let _ = write!(
        h,
        r#"<header class="top"><h1>depwatch: <span id="verdict" class="badge s-{c}">{w}</span></h1><p class="sub">"#,
        c = class(Some(v)),
        w = word(Some(v)),
    );
    if let Some(since) = p.since_ms {
        h.push_str(r#"<span id="verdict-since">since "#);
        ago(h, ms_time(since), p.now);
        h.push_str("</span> · ");
    }
    let n = p.counts;
    let _ = write!(
        h,
        r#"{} healthy, {} degraded, {} unhealthy"#,
        n[0], n[1], n[2]
    );
    if n[3] > 0 {
        let _ = write!(h, ", {} not checked yet", n[3]);
    }
    let _ = write!(
        h,
        r#" · up {} · <span id="live">refreshes every {} s</span></p></header>"#,
        age(p.uptime_s),
        p.refresh_s
    );
}

fn alerting(h: &mut String, p: &Page) {
    let a = &p.alerting;
    h.push_str(r#"<section id="alerting" aria-labelledby="h-alerting"><h2 id="h-alerting">Alerting pipeline</h2>"#);
    let pipeline = a["pipeline"].as_str().unwrap_or("unknown");
    let (c, w) = match pipeline {
        "ok" => ("healthy", "OK"),
        "down" => ("unhealthy", "Down"),
        _ => ("pending", "Unknown"),
    };
    let _ = write!(h, r#"<p><span class="badge s-{c}">{w}</span> "#);
    match a["mode"].as_str() {
        Some(mode) => {
            let _ = write!(h, "email fallback mode <code>{}</code>", Esc(mode));
        }
        None => h.push_str(
            "not configured: depwatch sends no email of its own (<code>alerting:</code>)",
        ),
    }
    h.push_str(" · last scrape of /metrics ");
    ago_str(h, a["last_scrape"].as_str(), p.now);
    if a["mode"].is_string() {
        h.push_str(" · last Watchdog heartbeat ");
        ago_str(h, a["last_heartbeat"].as_str(), p.now);
    }
    h.push_str("</p>");
    if let Some(reasons) = a["reasons"].as_array().filter(|r| !r.is_empty()) {
        h.push_str(r#"<ul class="reasons">"#);
        for r in reasons {
            let _ = write!(h, "<li>{}</li>", Esc(r["message"].as_str().unwrap_or("")));
        }
        h.push_str("</ul>");
    }
    let open = a["open_incidents"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if open.is_empty() {
        h.push_str("<p>No open incident.</p>");
    } else {
        h.push_str(r#"<div class="scroll" tabindex="0"><table><caption>Open incidents</caption><thead><tr><th scope="col">incident</th><th scope="col">components</th><th scope="col">opened</th><th scope="col" class="n">emails</th><th scope="col">last email</th></tr></thead><tbody>"#);
        for i in open {
            let comps: Vec<String> = i["components"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .filter_map(Value::as_str)
                        .map(|s| Esc(s).to_string())
                        .collect()
                })
                .unwrap_or_default();
            let _ = write!(
                h,
                r#"<tr><th scope="row">#{} {}</th><td>{}</td><td>"#,
                i["id"].as_i64().unwrap_or(0),
                Esc(i["scope"].as_str().unwrap_or("")),
                if comps.is_empty() {
                    "the pipeline".into()
                } else {
                    comps.join(", ")
                },
            );
            ago_str(h, i["opened_at"].as_str(), p.now);
            let _ = write!(
                h,
                r#"</td><td class="n">{}</td><td>"#,
                i["emails"].as_u64().unwrap_or(0)
            );
            ago_str(h, i["last_email_at"].as_str(), p.now);
            h.push_str("</td></tr>");
        }
        h.push_str("</tbody></table></div>");
    }
    if let Some(e) = a["last_email"].as_object() {
        let _ = write!(
            h,
            r#"<p>Last email: {} “{}” "#,
            Esc(e.get("kind").and_then(Value::as_str).unwrap_or("")),
            Esc(e.get("subject").and_then(Value::as_str).unwrap_or(""))
        );
        ago_str(h, e.get("at").and_then(Value::as_str), p.now);
        h.push_str("</p>");
    }
    if let Some(e) = a["last_error"].as_object() {
        let _ = write!(
            h,
            r#"<p class="why">Last email failure: {}</p>"#,
            Esc(e.get("message").and_then(Value::as_str).unwrap_or(""))
        );
    }
    if let Some(firing) = a["firing"].as_array().filter(|f| !f.is_empty()) {
        h.push_str(r#"<div class="scroll" tabindex="0"><table><caption>Firing in Alertmanager</caption><thead><tr><th scope="col">alert</th><th scope="col">severity</th><th scope="col">component</th><th scope="col">summary</th></tr></thead><tbody>"#);
        for f in firing.iter().take(50) {
            let g = |k: &str| Esc(f[k].as_str().unwrap_or("")).to_string();
            let _ = write!(
                h,
                r#"<tr><th scope="row">{}</th><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                g("alertname"),
                g("severity"),
                g("component"),
                g("summary")
            );
        }
        h.push_str("</tbody></table></div>");
    }
    h.push_str("</section>");
}

fn components(h: &mut String, p: &Page) {
    let _ = write!(
        h,
        r#"<section id="components" data-view="{}" aria-labelledby="h-components"><h2 id="h-components">Components</h2>"#,
        match p.shown {
            Shown::All => "all",
            Shown::Compact => "compact",
            Shown::One(_) => "one",
        }
    );
    match &p.shown {
        _ if p.total == 0 => h.push_str("<p>No component is configured.</p>"),
        Shown::All if p.total > FULL_UP_TO => {
            let _ = write!(
                h,
                r#"<p class="mut">All {} components in full. <a href=".">Name the healthy ones only</a>.</p>"#,
                p.total
            );
        }
        Shown::All => {}
        Shown::Compact => {
            let _ = write!(
                h,
                r#"<p class="mut">{} components: those not healthy in full (at most {FULL_AT_MOST}), the others by name. <a href="?all">Show all in full</a> (a larger page).</p>"#,
                p.total
            );
        }
        Shown::One(name) if p.rows.is_empty() => {
            let _ = write!(
                h,
                r#"<p>No component is named <code>{}</code>. <a href=".">All components</a>.</p>"#,
                Esc(name)
            );
        }
        Shown::One(_) => {
            let _ = write!(
                h,
                r#"<p class="mut">One of {} components. <a href=".">All components</a>.</p>"#,
                p.total
            );
        }
    }
    for (i, r) in p.rows.iter().enumerate() {
        row(h, p, i, r);
    }
    if !p.chips.is_empty() {
        let healthy = p
            .chips
            .iter()
            .filter(|c| c.status == Some(Status::Healthy))
            .count();
        let others = p.chips.len() - healthy;
        h.push_str(r#"<h3 class="chips-h" id="h-chips">"#);
        if others > 0 {
            let _ = write!(h, "{others} more not healthy, ");
        }
        let _ = write!(
            h,
            r#"{healthy} healthy</h3><ul class="chips" aria-labelledby="h-chips">"#
        );
        for c in &p.chips {
            let name = c.component.name();
            let href: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
            let _ = write!(
                h,
                r#"<li class="chip s-{s}" data-component="{n}" data-chip><a href="?component={href}" title="{w}">{n}</a>"#,
                s = class(c.status),
                n = Esc(name),
                href = Esc(&href),
                w = word(c.status),
            );
            // Colour is never the only sign: the state in words, but for
            // the healthy ones (their list says so).
            if c.status != Some(Status::Healthy) {
                let _ = write!(h, r#"<span class="cw">{}</span>"#, word(c.status));
            }
            h.push_str("</li>");
        }
        h.push_str("</ul>");
    }
    h.push_str("</section>");
}

fn row(h: &mut String, p: &Page, i: usize, r: &Row) {
    let l = &*r.latest;
    let c = class(l.status);
    let name = r.component.name();
    let _ = write!(
        h,
        r#"<article class="row s-{c}" id="c{i}" data-component="{n}" aria-labelledby="c{i}h"><div class="head"><h3 id="c{i}h" class="name">{n}</h3><span class="kind">{k}{crit}</span><span class="state"><span class="badge">{w}</span></span><span class="since">"#,
        n = Esc(name),
        k = r.component.kind().as_str(),
        crit = if r.component.cfg.critical {
            ""
        } else {
            " · non-critical"
        },
        w = word(l.status),
    );
    match l.since {
        Some(t) => {
            h.push_str("since ");
            ago(h, t, p.now);
        }
        None => h.push_str("waiting for the first check"),
    }
    let _ = write!(
        h,
        r#"</span><span class="rt" title="response time of the last check">{}</span><span class="sp">"#,
        if l.checked_at.is_some() {
            ms(l.duration.as_secs_f64() * 1000.0)
        } else {
            "–".into()
        }
    );
    svg::sparkline(h, &r.latencies, p.slow_ms, p.critical_ms);
    h.push_str("</span></div>");
    match (&l.error, l.reason) {
        (Some(e), Some(reason)) => {
            let _ = write!(
                h,
                r#"<p class="why" data-error="{e}"><strong>{}:</strong> {e}</p>"#,
                reason_words(reason.as_str()),
                e = Esc(e)
            );
        }
        (Some(e), None) => {
            let _ = write!(h, r#"<p class="why" data-error="{e}">{e}</p>"#, e = Esc(e));
        }
        _ => h.push_str(r#"<p class="why" hidden></p>"#),
    }
    let details = l.details.map();
    kinds::numbers(
        h,
        name,
        r.component.kind().as_str(),
        &details,
        r.chart.as_deref(),
    );
    h.push_str(r#"<details><summary>JSON</summary><pre tabindex="0">"#);
    let _ = write!(
        h,
        "{}",
        EscText(&pretty(&r.component.view_with(l, &details)))
    );
    h.push_str("</pre></details></article>");
}

/// JSON indented by one space a level: readable, and light on the page.
fn pretty(v: &impl serde::Serialize) -> String {
    let mut out = Vec::with_capacity(2048);
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        serde_json::ser::PrettyFormatter::with_indent(b" "),
    );
    if v.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

fn performance(h: &mut String, p: &Page) {
    let pf = &*p.performance;
    h.push_str(r#"<section id="performance" aria-labelledby="h-performance"><h2 id="h-performance">Performance of checks</h2>"#);
    if pf["checks"].as_u64().unwrap_or(0) == 0 {
        h.push_str("<p>No check has ended yet.</p>");
    } else {
        let m = |k: &str| pf[k].as_f64().map_or("–".into(), ms);
        let _ = write!(
            h,
            r#"<dl class="kv"><div><dt>rating</dt><dd>{}</dd></div><div><dt>checks</dt><dd>{}</dd></div><div><dt>p50 · p95 · p99</dt><dd>{} · {} · {}</dd></div><div><dt>average</dt><dd>{}</dd></div><div><dt>slow · critical</dt><dd>{} · {}</dd></div></dl>"#,
            Esc(pf["rating"].as_str().unwrap_or("–")),
            count(pf["checks"].as_u64().unwrap_or(0)),
            m("p50_ms"),
            m("p95_ms"),
            m("p99_ms"),
            m("avg_ms"),
            count(pf["slow"].as_u64().unwrap_or(0)),
            count(pf["critical"].as_u64().unwrap_or(0)),
        );
        match pf["regressions"].as_array().filter(|r| !r.is_empty()) {
            Some(regs) => {
                h.push_str("<p>Regressions (recent median against the baseline):</p><ul>");
                for r in regs {
                    let _ = write!(
                        h,
                        "<li>{}: {} → {}</li>",
                        Esc(r["component"].as_str().unwrap_or("")),
                        r["baseline_p50_ms"].as_f64().map_or("–".into(), ms),
                        r["current_p50_ms"].as_f64().map_or("–".into(), ms),
                    );
                }
                h.push_str("</ul>");
            }
            None => h.push_str("<p>No latency regression.</p>"),
        }
        if let Some(top) = pf["top_slowest"].as_array().filter(|t| !t.is_empty()) {
            h.push_str("<p>Slowest recent checks: ");
            for (i, t) in top.iter().enumerate() {
                if i > 0 {
                    h.push_str(" · ");
                }
                let _ = write!(
                    h,
                    "{} {}",
                    Esc(t["component"].as_str().unwrap_or("")),
                    t["ms"].as_f64().map_or("–".into(), ms)
                );
            }
            h.push_str("</p>");
        }
    }
    let c = &p.cache;
    let _ = write!(
        h,
        r#"<h3>Health cache</h3><dl class="kv"><div><dt>hit rate</dt><dd>{}</dd></div><div><dt>hits · misses</dt><dd>{} · {}</dd></div><div><dt>fresh entries</dt><dd>{}</dd></div><div><dt>ttl</dt><dd>{}</dd></div></dl></section>"#,
        c["hit_rate"].as_f64().map_or("–".into(), pct),
        count(c["hits"].as_u64().unwrap_or(0)),
        count(c["misses"].as_u64().unwrap_or(0)),
        c["entries"].as_u64().unwrap_or(0),
        age(c["ttl_seconds"].as_f64().unwrap_or(0.0)),
    );
}
