//! The numbers that matter per kind, read from a component's details (the
//! same JSON `/api/health` shows): queues, storage, partner APIs, log rules,
//! Redis caches, MongoDB query values, the process. Every value that came
//! from outside (names, fields, URLs) is escaped.

use std::fmt::Write;

use serde_json::{Map, Value};

use super::svg;
use super::text::{Esc, age, bytes, count, ms, num, pct};

/// A `<dl>` of label/value pairs, written as they come.
struct Pairs<'a> {
    out: &'a mut String,
    open: bool,
}

impl<'a> Pairs<'a> {
    fn new(out: &'a mut String) -> Self {
        Pairs { out, open: false }
    }

    /// One pair; `value` is HTML already (escape what came from outside).
    fn add(&mut self, label: &str, value: &str) {
        if !self.open {
            self.out.push_str(r#"<dl class="kv">"#);
            self.open = true;
        }
        let _ = write!(self.out, "<div><dt>{label}</dt><dd>{value}</dd></div>");
    }

    fn end(self) {
        if self.open {
            self.out.push_str("</dl>");
        }
    }
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// The kind's numbers for one component. `chart` is the probe's series
/// (storage history), `name` the component (for table captions).
pub fn numbers(
    out: &mut String,
    name: &str,
    kind: &str,
    d: &Map<String, Value>,
    chart: Option<&[(i64, f64)]>,
) {
    match kind {
        "storage" => storage(out, d, chart),
        "http" => http(out, d),
        "redis" => {
            if d.contains_key("used_memory_bytes") {
                cache(out, d);
            }
            if let Some(Value::Object(q)) = d.get("queues") {
                queues(out, name, q);
            }
        }
        "mongodb" => {
            queries(out, d);
            if let Some(Value::Object(q)) = d.get("queues") {
                queues(out, name, q);
            }
        }
        "log" => log(out, name, d),
        "process" => process(out, d),
        _ => {}
    }
}

fn storage(out: &mut String, d: &Map<String, Value>, chart: Option<&[(i64, f64)]>) {
    let used = d.get("used_bytes").and_then(f);
    let avail = d.get("available_bytes").and_then(f);
    let size = d.get("size_bytes").and_then(f);
    let fc = d.get("forecast").and_then(Value::as_object);
    if let Some(p) = d.get("used_percent").and_then(f) {
        let _ = write!(
            out,
            r#"<div class="use"><div class="bar" role="img" aria-label="{p:.1}% used"><span style="width:{w:.1}%"></span></div> <span>{p:.1}% used</span></div>"#,
            w = p.clamp(0.0, 100.0)
        );
    }
    let mut kv = Pairs::new(out);
    if let (Some(u), Some(a)) = (used, avail) {
        kv.add("used / free", &format!("{} / {}", bytes(u), bytes(a)));
    }
    if let Some(t) = d.get("trash_bytes").and_then(f) {
        kv.add("in the trash", &bytes(t));
    }
    if let (Some(n), Some(u)) = (
        d.get("inodes").and_then(f),
        d.get("inodes_used").and_then(f),
    ) && n > 0.0
    {
        kv.add("inodes used", &pct(u / n));
    }
    if let Some(fc) = fc {
        if let Some(g) = fc.get("growth_per_day").and_then(Value::as_str) {
            kv.add("growth", &format!("{}/day", Esc(g)));
        }
        let days = fc.get("days_until_full").and_then(f);
        let trend = fc.get("trend").and_then(Value::as_str).unwrap_or("");
        let verdict = match (days, trend) {
            (Some(dd), _) => format!("full in {} days", num_days(dd)),
            (None, "collecting") => "collecting samples".into(),
            (None, "shrinking") => "not growing (shrinking)".into(),
            _ => "not growing".into(),
        };
        kv.add("forecast", &verdict);
    }
    kv.end();
    if let Some(pts) = chart.filter(|c| c.len() >= 2) {
        let slope = fc
            .and_then(|fc| fc.get("growth_bytes_per_second"))
            .and_then(f);
        out.push_str(r#"<figure class="chart">"#);
        svg::history(out, pts, slope, size);
        out.push_str("<figcaption>used space, the window's history; dashed: the fitted trend</figcaption></figure>");
    }
}

fn num_days(d: f64) -> String {
    if d < 10.0 {
        format!("{d:.1}")
    } else {
        format!("{d:.0}")
    }
}

fn http(out: &mut String, d: &Map<String, Value>) {
    let mut kv = Pairs::new(out);
    match d.get("status_code") {
        Some(Value::Number(c)) => kv.add("status", &c.to_string()),
        Some(Value::Null) => kv.add("status", "no answer"),
        _ => {}
    }
    if let Some(Value::Object(p)) = d.get("phases_ms") {
        let mut s = String::new();
        for (key, label) in [
            ("dns", "dns"),
            ("connect", "connect"),
            ("tls", "tls"),
            ("first_byte", "first byte"),
            ("transfer", "transfer"),
        ] {
            if let Some(v) = p.get(key).and_then(f).filter(|v| *v > 0.0) {
                if !s.is_empty() {
                    s.push_str(" · ");
                }
                let _ = write!(s, "{label} {}", ms(v));
            }
        }
        if !s.is_empty() {
            kv.add("phases", &s);
        }
    }
    if let Some(days) = d.get("cert_expires_in_days").and_then(f) {
        kv.add(
            "certificate",
            &if days < 0.0 {
                format!("expired {} days ago", num_days(-days))
            } else {
                format!("{} days left", num_days(days))
            },
        );
    }
    if let Some(v) = d.get("tls_version").and_then(Value::as_str) {
        kv.add("tls", &Esc(v).to_string());
    }
    if let Some(u) = d.get("url").and_then(Value::as_str) {
        kv.add("url", &format!("<code>{}</code>", Esc(u)));
    }
    kv.end();
}

fn cache(out: &mut String, d: &Map<String, Value>) {
    let mut kv = Pairs::new(out);
    match d.get("hit_rate").and_then(f) {
        Some(r) => kv.add("hit rate", &pct(r)),
        None => {
            if let Some(r) = d.get("lifetime_hit_rate").and_then(f) {
                kv.add("hit rate (since start)", &pct(r));
            }
        }
    }
    if let Some(u) = d.get("used_memory_bytes").and_then(f) {
        let max = d.get("maxmemory_bytes").and_then(f).filter(|m| *m > 0.0);
        kv.add(
            "memory",
            &match max {
                Some(m) => format!("{} of {} ({})", bytes(u), bytes(m), pct(u / m)),
                None => bytes(u),
            },
        );
    }
    if let Some(e) = d.get("evicted_keys").and_then(Value::as_u64) {
        kv.add("evictions", &count(e));
    }
    if let Some(Value::Object(keys)) = d.get("keys") {
        let total: u64 = keys.values().filter_map(Value::as_u64).sum();
        kv.add("keys", &count(total));
    }
    if let Some(c) = d.get("connected_clients").and_then(Value::as_u64) {
        kv.add("clients", &count(c));
    }
    kv.end();
}

/// Queue states in the order people read them.
const STATES: [&str; 7] = [
    "waiting",
    "prioritized",
    "active",
    "delayed",
    "failed",
    "completed",
    "paused",
];

fn queues(out: &mut String, name: &str, q: &Map<String, Value>) {
    if q.is_empty() {
        return;
    }
    let shown: Vec<&str> = STATES
        .iter()
        .copied()
        .filter(|s| q.values().any(|v| v.get(*s).is_some_and(Value::is_u64)))
        .collect();
    let _ = write!(
        out,
        r#"<div class="scroll" tabindex="0"><table class="q"><caption>Queues of {}</caption><thead><tr><th scope="col">queue</th>"#,
        Esc(name)
    );
    for s in &shown {
        let _ = write!(out, r#"<th scope="col" class="n">{s}</th>"#);
    }
    out.push_str(r#"<th scope="col" class="n">oldest waiting</th><th scope="col" class="n">oldest active</th><th scope="col" class="n">stalled</th></tr></thead><tbody>"#);
    for (qname, v) in q {
        let _ = write!(out, r#"<tr><th scope="row">{}</th>"#, Esc(qname));
        for s in &shown {
            match v.get(*s).and_then(Value::as_u64) {
                Some(n) => {
                    let _ = write!(out, r#"<td class="n">{}</td>"#, count(n));
                }
                None => out.push_str(r#"<td class="n">–</td>"#),
            }
        }
        for key in ["oldest_waiting_age_seconds", "oldest_active_age_seconds"] {
            match v.get(key).and_then(f) {
                Some(a) => {
                    let _ = write!(out, r#"<td class="n">{}</td>"#, age(a));
                }
                None => out.push_str(r#"<td class="n">–</td>"#),
            }
        }
        let stalled = match v.get("stalled").and_then(Value::as_u64) {
            Some(n) => count(n),
            None => "–".into(),
        };
        let paused = if v.get("paused").and_then(Value::as_bool) == Some(true) {
            " (queue paused)"
        } else {
            ""
        };
        let _ = write!(out, r#"<td class="n">{stalled}{paused}</td></tr>"#);
    }
    out.push_str("</tbody></table></div>");
}

/// MongoDB query values: every detail but the queues is a named query,
/// one number or a list of labelled rows.
fn queries(out: &mut String, d: &Map<String, Value>) {
    let mut kv = Pairs::new(out);
    for (k, v) in d {
        if k == "queues" {
            continue;
        }
        match v {
            Value::Number(n) => kv.add(&Esc(k).to_string(), &num(n.as_f64().unwrap_or(0.0))),
            Value::Array(rows) => {
                let mut s = String::new();
                for (i, r) in rows.iter().take(12).enumerate() {
                    let Value::Object(r) = r else { continue };
                    if i > 0 {
                        s.push_str(" · ");
                    }
                    let labels: Vec<String> = r
                        .iter()
                        .filter(|(k, _)| *k != "value")
                        .map(|(_, v)| match v {
                            Value::String(s) => Esc(s).to_string(),
                            other => Esc(&other.to_string()).to_string(),
                        })
                        .collect();
                    let _ = write!(
                        s,
                        "{} {}",
                        labels.join("/"),
                        r.get("value").and_then(f).map_or("–".into(), num)
                    );
                }
                if rows.len() > 12 {
                    let _ = write!(s, " · {} more", rows.len() - 12);
                }
                kv.add(&Esc(k).to_string(), &s);
            }
            _ => {}
        }
    }
    kv.end();
}

fn process(out: &mut String, d: &Map<String, Value>) {
    let mut kv = Pairs::new(out);
    if let Some(r) = d.get("resident_memory_bytes").and_then(f) {
        kv.add("memory", &bytes(r));
    }
    if let Some(c) = d.get("cpu_seconds").and_then(f) {
        kv.add("cpu", &format!("{c:.1} s"));
    }
    if let Some(t) = d.get("threads").and_then(Value::as_u64) {
        kv.add("threads", &count(t));
    }
    if let Some(t) = d.get("open_fds").and_then(Value::as_u64) {
        kv.add("open files", &count(t));
    }
    if let Some(t) = d.get("restarts_seen").and_then(Value::as_u64) {
        kv.add("restarts seen", &count(t));
    }
    kv.end();
}

/// Values of a status-like category that count as failed operations.
const FAILED: [&str; 7] = [
    "failure",
    "failed",
    "fail",
    "error",
    "errored",
    "timeout",
    "timed_out",
];

/// `text`, escaped, its `quoted` names as code.
fn quoted(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        let _ = if i % 2 == 1 {
            write!(out, "<code>{}</code>", Esc(part))
        } else {
            write!(out, "{}", Esc(part))
        };
    }
    out
}

fn log(out: &mut String, name: &str, d: &Map<String, Value>) {
    let mut kv = Pairs::new(out);
    if let Some(Value::Object(l)) = d.get("lines") {
        let g = |k: &str| l.get(k).and_then(Value::as_u64).unwrap_or(0);
        let mut lines = format!(
            "{} matched · {} unmatched · {} invalid",
            count(g("matched")),
            count(g("unmatched")),
            count(g("invalid"))
        );
        if g("not_utf8") > 0 {
            let _ = write!(
                lines,
                " ({} read with bytes not UTF-8)",
                count(g("not_utf8"))
            );
        }
        kv.add("lines", &lines);
    }
    if let Some(Value::Array(files)) = d.get("files") {
        let lag: u64 = files
            .iter()
            .filter_map(|f| f.get("lag_bytes").and_then(Value::as_u64))
            .sum();
        kv.add(
            "files",
            &format!("{} read, {} behind", files.len(), bytes(lag as f64)),
        );
    }
    kv.end();
    let Some(Value::Object(rules)) = d.get("rules") else {
        return;
    };
    for (rule, r) in rules {
        let _ = write!(
            out,
            r#"<div class="rule"><h4>rule <code>{}</code></h4>"#,
            Esc(rule)
        );
        let lat = r.get("latency").and_then(Value::as_object);
        let mut kv = Pairs::new(out);
        if let Some(l) = lat {
            let n = l.get("count").and_then(f).unwrap_or(0.0);
            let win = l.get("window_seconds").and_then(f).unwrap_or(0.0);
            if win > 0.0 {
                let per_min = n / win * 60.0;
                kv.add(
                    "rate",
                    &format!("{}/min over {}", num(round_rate(per_min)), age(win)),
                );
            }
            let p = |k: &str| l.get(k).and_then(f).map_or("–".into(), ms);
            kv.add(
                "p50 · p95 · p99",
                &format!("{} · {} · {}", p("p50_ms"), p("p95_ms"), p("p99_ms")),
            );
        } else if let Some(m) = r.get("matched").and_then(Value::as_u64) {
            kv.add("matched", &count(m));
        }
        if let Some(ratio) = r.get("categories").and_then(failure_ratio) {
            kv.add("failure ratio", &pct(ratio));
        }
        if let Some(Value::Array(never)) = r.get("fields_never_seen") {
            // A misspelt `match:` field, most likely: what the lines have.
            let told: Vec<String> = (never.iter())
                .map(|u| {
                    let field = u.get("field").and_then(Value::as_str).unwrap_or("");
                    match u.get("hint").and_then(Value::as_str) {
                        Some(h) => format!("<code>{}</code> ({})", Esc(field), quoted(h)),
                        None => format!("<code>{}</code>", Esc(field)),
                    }
                })
                .collect();
            kv.add("in no line", &told.join(", "));
        }
        kv.end();
        if let Some(Value::Array(h)) = lat.and_then(|l| l.get("histogram")) {
            let buckets: Vec<(Option<f64>, u64)> = h
                .iter()
                .map(|b| {
                    (
                        b.get("le_ms").and_then(f),
                        b.get("count").and_then(Value::as_u64).unwrap_or(0),
                    )
                })
                .collect();
            svg::histogram(out, &buckets);
        }
        if let Some(Value::Object(c)) = r.get("categories") {
            categories(out, name, rule, c);
        }
        if let Some(Value::Array(slow)) = r.get("slowest")
            && !slow.is_empty()
        {
            slowest(out, slow);
        }
        out.push_str("</div>");
    }
}

fn round_rate(v: f64) -> f64 {
    if v >= 10.0 {
        v.round()
    } else {
        (v * 100.0).round() / 100.0
    }
}

/// The share of operations in failed categories, when the rule groups by a
/// status-like field (`group_by: [status]`).
fn failure_ratio(c: &Value) -> Option<f64> {
    let all = c.get("all")?.get("count")?.as_f64()?;
    let values = c.get("values")?.as_object()?;
    let mut failed = 0.0;
    let mut status_like = false;
    for v in values.values() {
        let Some(Value::Object(fields)) = v.get("fields") else {
            continue;
        };
        let bad = fields.values().any(|x| {
            x.as_str()
                .is_some_and(|s| FAILED.contains(&s.to_ascii_lowercase().as_str()))
        });
        if fields.keys().any(|k| {
            matches!(
                k.as_str(),
                "status" | "result" | "outcome" | "state" | "level"
            )
        }) {
            status_like = true;
        }
        if bad {
            failed += v.get("count").and_then(f).unwrap_or(0.0);
        }
    }
    (status_like && all > 0.0).then(|| failed / all)
}

fn categories(out: &mut String, name: &str, rule: &str, c: &Map<String, Value>) {
    let Some(Value::Object(values)) = c.get("values") else {
        return;
    };
    if values.is_empty() {
        return;
    }
    let _ = write!(
        out,
        r#"<div class="scroll" tabindex="0"><table><caption>{} · {} by category</caption><thead><tr><th scope="col">category</th><th scope="col" class="n">count</th><th scope="col" class="n">p50</th><th scope="col" class="n">p95</th><th scope="col" class="n">p99</th></tr></thead><tbody>"#,
        Esc(name),
        Esc(rule)
    );
    for (cat, v) in values.iter().take(20) {
        let p = |k: &str| v.get(k).and_then(f).map_or("–".into(), ms);
        let _ = write!(
            out,
            r#"<tr><th scope="row">{}</th><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            Esc(cat),
            v.get("count")
                .and_then(Value::as_u64)
                .map_or("–".into(), count),
            p("p50_ms"),
            p("p95_ms"),
            p("p99_ms")
        );
    }
    out.push_str("</tbody></table></div>");
}

fn slowest(out: &mut String, slow: &[Value]) {
    out.push_str(r#"<p class="slowest"><span class="mut">slowest recent:</span> "#);
    for (i, s) in slow.iter().take(5).enumerate() {
        if i > 0 {
            out.push_str(" · ");
        }
        let _ = write!(
            out,
            "<strong>{}</strong>",
            s.get("ms").and_then(f).map_or("–".into(), ms)
        );
        if let Some(Value::Object(fields)) = s.get("fields") {
            let parts: Vec<String> = fields
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    format!("{}={}", Esc(k), Esc(&v))
                })
                .collect();
            if !parts.is_empty() {
                let _ = write!(out, " <code>{}</code>", parts.join(" "));
            }
        }
    }
    out.push_str("</p>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn queue_tables_escape_names_and_show_every_state_present() {
        let d = obj(json!({ "queues": { "\"><img src=x onerror=alert(1)>": {
            "waiting": 1204, "active": 3, "delayed": 0, "failed": 7,
            "oldest_waiting_age_seconds": 95.0, "stalled": 1 } } }));
        let mut s = String::new();
        numbers(&mut s, "jobs", "redis", &d, None);
        assert!(!s.contains("<img"), "{s}");
        assert!(
            s.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"),
            "{s}"
        );
        assert!(s.contains(">waiting<") && s.contains(">failed<"), "{s}");
        assert!(s.contains("1\u{202f}204"), "{s}");
        assert!(s.contains(">2 min<"), "{s}");
    }

    #[test]
    fn storage_says_when_it_is_full_or_that_it_is_not_growing() {
        let mut d = obj(
            json!({ "used_percent": 63.2, "used_bytes": 100, "available_bytes": 50,
            "size_bytes": 150, "forecast": { "growth_per_day": "1.2 GiB", "days_until_full": 5.25,
            "growth_bytes_per_second": 1.0, "trend": "growing" } }),
        );
        let mut s = String::new();
        numbers(
            &mut s,
            "disk",
            "storage",
            &d,
            Some(&[(0, 1.0), (1000, 2.0)]),
        );
        assert!(s.contains("full in 5.2 days"), "{s}");
        assert!(s.contains("63.2% used") && s.contains("<svg"), "{s}");
        d.insert(
            "forecast".into(),
            json!({ "trend": "flat", "growth_per_day": "0 B" }),
        );
        let mut s = String::new();
        numbers(&mut s, "disk", "storage", &d, None);
        assert!(s.contains("not growing"), "{s}");
    }

    #[test]
    fn log_rules_show_rate_percentiles_histogram_failures_and_escaped_fields() {
        let d = obj(
            json!({ "lines": { "matched": 10, "unmatched": 1, "invalid": 0, "not_utf8": 2 },
            "rules": { "sync": {
                "latency": { "window_seconds": 600, "count": 300, "p50_ms": 12.0, "p95_ms": 80.0,
                    "p99_ms": 300.0, "histogram": [ { "le_ms": 100.0, "count": 290 }, { "le_ms": null, "count": 10 } ] },
                "categories": { "by": ["status"], "all": { "count": 300 }, "values": {
                    "failure": { "count": 30, "p50_ms": 20.0, "fields": { "status": "failure" } },
                    "success": { "count": 270, "p50_ms": 10.0, "fields": { "status": "success" } } } },
                "slowest": [ { "ms": 97535.5, "fields": { "user": "<script>alert(1)</script>" } } ],
                "fields_never_seen": [ { "field": "mesage", "hint": "did you mean `message`?" } ] } } }),
        );
        let mut s = String::new();
        numbers(&mut s, "app-log", "log", &d, None);
        assert!(s.contains("0 invalid (2 read with bytes not UTF-8)"), "{s}");
        assert!(s.contains("30/min"), "{s}");
        assert!(s.contains("12.0 ms · 80.0 ms · 300 ms"), "{s}");
        assert!(s.contains("failure ratio</dt><dd>10.0%"), "{s}");
        assert!(s.contains(r#"class="bars""#), "{s}");
        assert!(!s.contains("<script>"), "{s}");
        assert!(s.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{s}");
        assert!(
            s.contains(
                "<dt>in no line</dt><dd><code>mesage</code> (did you mean <code>message</code>?)</dd>"
            ),
            "{s}"
        );
    }

    #[test]
    fn http_shows_status_phases_and_certificate() {
        let d = obj(json!({ "status_code": 200, "cert_expires_in_days": 83.6,
            "phases_ms": { "dns": 0.2, "connect": 0.5, "tls": 3.1, "first_byte": 20.0, "transfer": 1.0, "total": 25.0 } }));
        let mut s = String::new();
        numbers(&mut s, "api", "http", &d, None);
        assert!(s.contains("<dd>200</dd>"), "{s}");
        assert!(s.contains("first byte 20.0 ms"), "{s}");
        assert!(s.contains("84 days left"), "{s}");
    }
}
