//! The message: subject, plain text and HTML of each email kind, from a
//! snapshot of what depwatch knows ([`View`]). No I/O here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

use serde_json::Value;

use super::incident::{EmailKind, Incident, Member, Scope};
use crate::util::html::escape as esc;
use crate::util::time::unix_ms;

/// A component as the email shows it.
#[derive(Clone, Debug)]
pub struct CompView {
    pub name: String,
    pub kind: String,
    pub status: String,
    pub critical: bool,
    pub error: Option<String>,
    pub reason: Option<String>,
    pub checked_at_ms: Option<i64>,
    pub consecutive_failures: u32,
    pub details: Value,
}

/// What one email is written from.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub host: String,
    pub mode: &'static str,
    /// `ok`, `down` or `unknown`.
    pub pipeline: &'static str,
    /// Each reason with since when (ms).
    pub reasons: Vec<(String, i64)>,
    pub components: Vec<CompView>,
    /// Emails not sent because of `max_per_hour` since the last one.
    pub held_back: u64,
    /// This email is the last `max_per_hour` allows: (max_per_hour, when
    /// the next may go, ms).
    pub cap: Option<(u32, i64)>,
    pub runbook: String,
    /// component → `runbook_url` of the alert Alertmanager has for it.
    pub alert_runbooks: BTreeMap<String, String>,
    /// depwatch's status page.
    pub page_url: Option<String>,
    /// Set while an HA peer cannot reach the coordinator: this email may
    /// come from every peer.
    pub uncoordinated: Option<String>,
    /// This email was decided then (ms) and held back by `max_per_hour`
    /// until now: it tells the incident as it is now.
    pub held_since: Option<i64>,
}

pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn at(ms: i64) -> String {
    crate::util::time::rfc3339_ms(ms)
}

fn ago(now: i64, ms: i64) -> String {
    let secs = ((now - ms).max(0) / 1000) as u64;
    crate::config::units::format_duration(std::time::Duration::from_secs(secs))
}

/// A resolution sent for an incident nothing was sent about: its firing
/// (or watchdog) email was held back by `max_per_hour` until it was over.
fn untold(i: &Incident) -> String {
    if i.emails > 0 {
        return String::new();
    }
    match i.resolved_ms {
        Some(end) => format!(
            " It failed at {} and recovered at {}; its first email was held back by max_per_hour, so this is the only one about it.",
            at(i.opened_ms),
            at(end)
        ),
        None => String::new(),
    }
}

fn names(inc: &Incident, open_only: bool) -> String {
    let list: Vec<&str> = inc
        .members
        .iter()
        .filter(|m| !open_only || m.resolved_ms.is_none())
        .map(|m| m.component.as_str())
        .collect();
    match list.len() {
        0 => "no component".into(),
        1..=3 => list.join(", "),
        n => format!("{} and {} more", list[..2].join(", "), n - 2),
    }
}

/// Lines of (label, value) for both parts.
type Rows = Vec<(String, String)>;

struct Doc {
    headline: String,
    sections: Vec<(String, Rows)>,
    notes: Vec<String>,
}

impl Doc {
    fn text(&self) -> String {
        let mut t = format!("{}\n", self.headline);
        for n in &self.notes {
            let _ = writeln!(t, "\n{n}");
        }
        for (title, rows) in &self.sections {
            let _ = writeln!(t, "\n{title}");
            let w = rows
                .iter()
                .map(|(k, _)| k.chars().count())
                .max()
                .unwrap_or(0);
            for (k, v) in rows {
                // A value's own line breaks (an error quoting a partner's
                // answer, an annotation from Alertmanager) stay indented
                // under it: it cannot pass for a row or a section of its
                // own ("Status  healthy"); other control characters go.
                let pad = if k.is_empty() { 4 } else { w + 4 };
                let v = one_value(v, pad);
                if k.is_empty() {
                    let _ = writeln!(t, "  {v}");
                } else {
                    let _ = writeln!(t, "  {k:<w$}  {v}");
                }
            }
        }
        t
    }

    fn html(&self) -> String {
        let mut h = String::from(
            "<!DOCTYPE html><html><body style=\"font-family:sans-serif;font-size:14px\">",
        );
        let _ = write!(h, "<h2>{}</h2>", esc(&self.headline));
        for n in &self.notes {
            let _ = write!(h, "<p>{}</p>", esc(n));
        }
        for (title, rows) in &self.sections {
            let _ = write!(h, "<h3>{}</h3><table cellpadding=\"3\">", esc(title));
            for (k, v) in rows {
                let v = if v.starts_with("http://") || v.starts_with("https://") {
                    format!("<a href=\"{0}\">{0}</a>", esc(v))
                } else {
                    format!("<code>{}</code>", esc(v))
                };
                let _ = write!(h, "<tr><th align=\"left\">{}</th><td>{v}</td></tr>", esc(k));
            }
            h.push_str("</table>");
        }
        h.push_str("</body></html>\n");
        h
    }
}

/// `v` for the text part: each line after the first indented by `pad`,
/// carriage returns and other control characters (tabs aside) removed.
fn one_value(v: &str, pad: usize) -> String {
    if !v.chars().any(char::is_control) {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len());
    for (i, line) in v.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', pad));
        }
        out.extend(line.chars().filter(|c| !c.is_control() || *c == '\t'));
    }
    out
}

fn runbook(v: &View, anchor: &str, component: Option<&str>) -> String {
    component
        .and_then(|c| v.alert_runbooks.get(c).cloned())
        .unwrap_or_else(|| format!("{}#{anchor}", v.runbook))
}

fn pipeline_rows(v: &View, now: i64) -> Rows {
    let mut rows = vec![("State".to_string(), v.pipeline.to_string())];
    for (r, since) in &v.reasons {
        rows.push((
            String::new(),
            format!("{r} (since {}, {} ago)", at(*since), ago(now, *since)),
        ));
    }
    rows
}

/// Components an email shows in full, row by row; past these, the members
/// of an incident get one line each.
const DETAILED: usize = 20;
/// Lines of one list (members beyond [`DETAILED`], other components), at
/// most: an outage of thousands of components must still make an email a
/// mail server takes (Postfix refuses one over 10 MB by default, before
/// encoding) and a person reads; the status page has the rest.
const LISTED: usize = 200;

/// The other components, those not healthy first, [`LISTED`] at most and a
/// line for the rest.
fn others(v: &View, skip: &HashSet<&str>) -> Rows {
    let (sick, healthy): (Vec<&CompView>, Vec<&CompView>) = v
        .components
        .iter()
        .filter(|c| !skip.contains(c.name.as_str()))
        .partition(|c| c.status != "healthy");
    let total = sick.len() + healthy.len();
    let mut rows: Rows = sick
        .iter()
        .chain(&healthy)
        .take(LISTED)
        .map(|c| {
            let mut s = c.status.clone();
            if let Some(e) = &c.error
                && c.status != "healthy"
            {
                let _ = write!(s, ": {}", clip(e));
            }
            (c.name.clone(), s)
        })
        .collect();
    if total > LISTED {
        let healthy_left = healthy.len().min(total - LISTED);
        rows.push((
            String::new(),
            format!(
                "… and {} more ({healthy_left} of them healthy): see the status page",
                total - LISTED
            ),
        ));
    }
    rows
}

/// A value on one line of a list, at most 200 characters.
fn clip(s: &str) -> String {
    let mut chars = s.chars();
    let mut out: String = chars.by_ref().take(200).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// One line of a member beyond [`DETAILED`].
fn member_line(m: &Member, c: Option<&CompView>) -> String {
    match (m.resolved_ms, c) {
        (Some(r), _) => format!("recovered {}", at(r)),
        (None, c) => {
            let status = c.map_or("unknown", |c| c.status.as_str());
            let mut s = format!("{status} since {}", at(m.since_ms));
            let why = c
                .and_then(|c| c.error.as_deref().or(c.reason.as_deref()))
                .or(m.error.as_deref())
                .or(m.reason.as_deref());
            if let Some(why) = why {
                let _ = write!(s, ": {}", clip(why));
            }
            s
        }
    }
}

/// Renders one email. `inc` is `None` for a test message.
pub fn render(kind: EmailKind, inc: Option<&Incident>, v: &View, now: i64) -> Rendered {
    let host = &v.host;
    let sev = if inc.is_none_or(Incident::critical) {
        "CRITICAL"
    } else {
        "WARNING"
    };
    let pipeline_inc = inc.is_some_and(|i| i.scope == Scope::Pipeline);
    let (subject, mut doc) = match (kind, inc) {
        (EmailKind::Test, _) | (_, None) => (
            format!("[TEST] test email — depwatch on {host}"),
            Doc {
                headline: format!("This is a test email from depwatch on {host}."),
                sections: vec![],
                notes: vec![
                    "If you read this, depwatch can reach you when the alerting pipeline is down."
                        .into(),
                ],
            },
        ),
        (EmailKind::Watchdog, Some(i)) | (EmailKind::Reminder, Some(i)) if pipeline_inc => (
            format!("[{sev}] alerting pipeline down — depwatch on {host}"),
            Doc {
                headline: format!(
                    "The alerting pipeline is down since {}: alerts may reach no one.",
                    at(i.opened_ms)
                ),
                sections: vec![],
                notes: vec![format!(
                    "Runbook: {}",
                    runbook(v, "alerting-pipeline-down", None)
                )],
            },
        ),
        (EmailKind::Resolved, Some(i)) if pipeline_inc => (
            format!("[RESOLVED] alerting pipeline back — depwatch on {host}"),
            Doc {
                headline: format!(
                    "The alerting pipeline works again (down from {} for {}).{}",
                    at(i.opened_ms),
                    ago(i.resolved_ms.unwrap_or(now), i.opened_ms),
                    untold(i)
                ),
                sections: vec![(
                    "What was wrong".into(),
                    i.reasons
                        .iter()
                        .map(|r| (String::new(), r.clone()))
                        .collect(),
                )],
                notes: vec![],
            },
        ),
        (EmailKind::Resolved, Some(i)) => (
            format!(
                "[RESOLVED] {} recovered — depwatch on {host}",
                names(i, false)
            ),
            Doc {
                headline: format!(
                    "{} recovered (incident opened {}, lasted {}).{}",
                    names(i, false),
                    at(i.opened_ms),
                    ago(i.resolved_ms.unwrap_or(now), i.opened_ms),
                    untold(i)
                ),
                sections: vec![],
                notes: vec![],
            },
        ),
        (kind, Some(i)) => {
            let still = if kind == EmailKind::Reminder {
                "still "
            } else {
                ""
            };
            (
                format!(
                    "[{sev}] {} {still}unhealthy — depwatch on {host}",
                    names(i, true)
                ),
                Doc {
                    headline: format!(
                        "{} {}{still}unhealthy since {}.",
                        names(i, true),
                        if i.open_members().count() > 1 {
                            "are "
                        } else {
                            "is "
                        },
                        at(i.opened_ms)
                    ),
                    sections: vec![],
                    notes: vec![],
                },
            )
        }
    };
    let by_name: HashMap<&str, &CompView> =
        v.components.iter().map(|c| (c.name.as_str(), c)).collect();
    if let Some(i) = inc.filter(|i| i.scope == Scope::Components) {
        // Those still failing first, in the incident's order.
        let members: Vec<&Member> = i
            .open_members()
            .chain(i.members.iter().filter(|m| m.resolved_ms.is_some()))
            .collect();
        for m in members.iter().take(DETAILED) {
            let c = by_name.get(m.component.as_str()).copied();
            let mut rows: Rows = vec![
                (
                    "Kind".into(),
                    format!(
                        "{}{}",
                        m.kind,
                        if m.critical {
                            ", critical"
                        } else {
                            ", not critical"
                        }
                    ),
                ),
                (
                    "Status".into(),
                    match (m.resolved_ms, c) {
                        (Some(r), Some(c)) => format!("{} (recovered {})", c.status, at(r)),
                        (Some(r), None) => format!("removed from the configuration {}", at(r)),
                        (None, Some(c)) => format!(
                            "{} since {} ({} ago, {} failed checks in a row)",
                            c.status,
                            at(m.since_ms),
                            ago(now, m.since_ms),
                            c.consecutive_failures
                        ),
                        (None, None) => "unknown".into(),
                    },
                ),
            ];
            let reason = c.and_then(|c| c.reason.clone()).or(m.reason.clone());
            let error = c.and_then(|c| c.error.clone()).or(m.error.clone());
            if m.resolved_ms.is_none() {
                if let Some(r) = reason {
                    rows.push(("Reason".into(), r));
                }
                if let Some(e) = error {
                    rows.push(("Error".into(), e));
                }
            }
            if let Some(c) = c {
                if let Some(t) = c.checked_at_ms {
                    rows.push(("Last check".into(), at(t)));
                }
                if let Value::Object(map) = &c.details {
                    for (k, val) in map.iter().take(20) {
                        let s = match val {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        let s: String = s.chars().take(300).collect();
                        rows.push((k.clone(), s));
                    }
                }
            }
            rows.push((
                "Runbook".into(),
                runbook(v, "componentunhealthy", Some(&m.component)),
            ));
            doc.sections.push((m.component.clone(), rows));
        }
        let rest = members.get(DETAILED..).unwrap_or_default();
        if !rest.is_empty() {
            let mut rows: Rows = rest
                .iter()
                .take(LISTED)
                .map(|m| {
                    let c = by_name.get(m.component.as_str()).copied();
                    (m.component.clone(), member_line(m, c))
                })
                .collect();
            if rest.len() > LISTED {
                rows.push((
                    String::new(),
                    format!("… and {} more: see the status page", rest.len() - LISTED),
                ));
            }
            doc.sections.push((
                format!(
                    "{} more components in this incident ({} in all)",
                    rest.len(),
                    members.len()
                ),
                rows,
            ));
        }
    }
    if kind != EmailKind::Test {
        let skip: HashSet<&str> = inc
            .map(|i| i.members.iter().map(|m| m.component.as_str()).collect())
            .unwrap_or_default();
        let rows = others(v, &skip);
        if !rows.is_empty() {
            doc.sections.push(("Other components".into(), rows));
        }
    }
    doc.sections
        .push(("Alerting pipeline".into(), pipeline_rows(v, now)));
    if v.held_back > 0 {
        doc.notes.push(format!(
            "{} email(s) were held back by max_per_hour since the last one: see the status page.",
            v.held_back
        ));
    }
    if let Some(since) = v.held_since {
        doc.notes.push(format!(
            "Held back by max_per_hour since {} ({} ago): this email tells the incident as it is now.",
            at(since),
            ago(now, since)
        ));
    }
    if let Some((max, until)) = v.cap {
        doc.notes.push(format!(
            "This is the last email max_per_hour ({max}) allows this hour: until {}, \
             new incidents, reminders and resolutions are held back (the status page \
             has them); then each incident held back gets one email about how it is \
             then, and the next email says how many were held back).",
            at(until)
        ));
    }
    if let Some(note) = &v.uncoordinated {
        doc.notes.push(note.clone());
    }
    if kind != EmailKind::Test && !pipeline_inc {
        doc.notes.push(match v.mode {
            "always" => "depwatch emails every incident (mode: always).".into(),
            _ => "depwatch emails you directly because the alerting pipeline (Prometheus → Alertmanager) is down (mode: fallback).".into(),
        });
    }
    let mut footer: Rows = vec![("Host".into(), host.clone())];
    if let Some(i) = inc {
        footer.push(("Incident".into(), i.id.to_string()));
    }
    footer.push(("Sent".into(), at(now)));
    if v.uncoordinated.is_some() {
        footer.push((
            "Sender".into(),
            "uncoordinated (HA coordinator unreachable)".into(),
        ));
    }
    if let Some(p) = &v.page_url {
        footer.push(("Status page".into(), p.clone()));
    }
    doc.sections.push(("depwatch".into(), footer));
    Rendered {
        subject,
        text: doc.text(),
        html: doc.html(),
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    unix_ms(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident() -> Incident {
        Incident {
            id: 3,
            scope: Scope::Components,
            opened_ms: 1_000,
            notify: true,
            members: vec![Member {
                component: "orders-db".into(),
                kind: "mongodb".into(),
                critical: true,
                since_ms: 1_000,
                reason: Some("connect".into()),
                error: Some("connection refused <x>".into()),
                resolved_ms: None,
            }],
            reasons: vec![],
            fired: true,
            thread: None,
            last_email_ms: None,
            emails: 0,
            owed: None,
            resolved_ms: None,
        }
    }

    #[test]
    fn firing_subject_and_parts() {
        let v = View {
            host: "web-1".into(),
            mode: "fallback",
            pipeline: "down",
            reasons: vec![("no scrape".into(), 0)],
            runbook: "https://x/runbook.md".into(),
            ..Default::default()
        };
        let r = render(EmailKind::Firing, Some(&incident()), &v, 61_000);
        assert_eq!(
            r.subject,
            "[CRITICAL] orders-db unhealthy — depwatch on web-1"
        );
        assert!(r.text.contains("connection refused <x>"), "{}", r.text);
        assert!(r.text.contains("https://x/runbook.md#componentunhealthy"));
        assert!(r.html.contains("connection refused &lt;x&gt;"));
        let r = render(EmailKind::Reminder, Some(&incident()), &v, 61_000);
        assert_eq!(
            r.subject,
            "[CRITICAL] orders-db still unhealthy — depwatch on web-1"
        );
        let mut i = incident();
        i.members[0].resolved_ms = Some(5_000);
        let r = render(EmailKind::Resolved, Some(&i), &v, 61_000);
        assert_eq!(
            r.subject,
            "[RESOLVED] orders-db recovered — depwatch on web-1"
        );
        assert!(!r.text.contains("held back"), "{}", r.text);
        // Sent late (the hour's cap): it lasted until it was resolved, and
        // when nothing was sent about it before, it says it failed too.
        i.resolved_ms = Some(5_000);
        let r = render(EmailKind::Resolved, Some(&i), &v, 3_600_000);
        assert!(r.text.contains("lasted 4s"), "{}", r.text);
        assert!(
            r.text.contains("It failed at 1970-01-01T00:00:01")
                && r.text.contains("recovered at 1970-01-01T00:00:05")
                && r.text
                    .contains("its first email was held back by max_per_hour"),
            "{}",
            r.text
        );
        i.emails = 1;
        let r = render(EmailKind::Resolved, Some(&i), &v, 3_600_000);
        assert!(!r.text.contains("It failed at"), "{}", r.text);
    }

    #[test]
    fn line_breaks_in_a_value_cannot_forge_rows_in_either_part() {
        // An error quoting a partner's answer, and a runbook_url annotation
        // from Alertmanager, with line breaks and markup of their own.
        let mut i = incident();
        i.members[0].error =
            Some("bad gateway\r\nStatus   healthy\n\nAll clear\u{7}<script>x</script>".into());
        let v = View {
            host: "web-1".into(),
            mode: "fallback",
            pipeline: "down",
            runbook: "docs/runbook.md".into(),
            alert_runbooks: [(
                "orders-db".to_string(),
                "https://x/rb\nPipeline  ok".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let r = render(EmailKind::Firing, Some(&i), &v, 61_000);
        for forged in ["Status   healthy", "All clear", "Pipeline  ok"] {
            let line = r
                .text
                .lines()
                .find(|l| l.contains(forged))
                .unwrap_or_else(|| panic!("{forged} missing:\n{}", r.text));
            // Under its row's value column, not at a row's or section's place.
            assert!(line.starts_with("    "), "{line:?}\n{}", r.text);
        }
        assert!(!r.text.contains('\r') && !r.text.contains('\u{7}'));
        assert!(r.html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(!r.html.contains("<script>"));
        assert!(r.html.contains("href=\"https://x/rb\nPipeline  ok\""));
    }

    fn component(name: &str, status: &str) -> CompView {
        CompView {
            name: name.into(),
            kind: "http".into(),
            status: status.into(),
            critical: true,
            error: (status != "healthy").then(|| format!("{name}: connection refused")),
            reason: None,
            checked_at_ms: Some(50_000),
            consecutive_failures: 3,
            details: serde_json::json!({"url": format!("https://{name}.example/health"), "status_code": 503}),
        }
    }

    #[test]
    fn an_outage_of_thousands_makes_an_email_a_mail_server_takes() {
        // 10,000 components fail together (a network partition), 5,000
        // others are still up: every member and component in full would
        // be tens of MB, over what mail servers accept (Postfix: 10 MB).
        let mut inc = incident();
        inc.members = (0..10_000)
            .map(|n| Member {
                component: format!("api-{n:05}"),
                kind: "http".into(),
                critical: true,
                since_ms: 1_000,
                reason: Some("connect".into()),
                error: Some("connection refused".into()),
                // The first 30 have recovered already: listed after the rest.
                resolved_ms: (n < 30).then_some(9_000),
            })
            .collect();
        let mut components: Vec<CompView> = (0..10_000)
            .map(|n| {
                component(
                    &format!("api-{n:05}"),
                    if n < 30 { "healthy" } else { "unhealthy" },
                )
            })
            .collect();
        components.extend((0..5_000).map(|n| component(&format!("web-{n:05}"), "healthy")));
        components.push(component("cache", "degraded"));
        let v = View {
            host: "web-1".into(),
            mode: "fallback",
            pipeline: "down",
            runbook: "https://x/runbook.md".into(),
            components,
            ..Default::default()
        };
        let started = std::time::Instant::now();
        for kind in [EmailKind::Firing, EmailKind::Reminder, EmailKind::Resolved] {
            let r = render(kind, Some(&inc), &v, 61_000);
            assert!(
                r.text.len() < 100_000,
                "{kind:?}: {} bytes of text",
                r.text.len()
            );
            assert!(
                r.html.len() < 200_000,
                "{kind:?}: {} bytes of html",
                r.html.len()
            );
            // Still failing first: the 31st member in full, not the first.
            assert!(r.text.contains("\napi-00030\n"), "{}", &r.text[..2000]);
            assert!(!r.text.contains("\napi-00000\n"));
            assert!(
                r.text
                    .contains("9980 more components in this incident (10000 in all)")
            );
            // Past the detailed ones, a line each, then the count.
            assert!(
                r.text
                    .contains("api-00050  unhealthy since 1970-01-01T00:00:01"),
                "{}",
                r.text
            );
            assert!(r.text.contains("… and 9780 more: see the status page"));
            // Others: the degraded one before the healthy ones, then the count.
            let others = &r.text[r.text.find("Other components").unwrap()..];
            assert!(
                others.contains("cache      degraded: cache: connection refused"),
                "{others}"
            );
            assert!(
                others.contains("… and 4801 more (4801 of them healthy): see the status page"),
                "{others}"
            );
        }
        // Found by name, not by a search of every component per member.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
