//! The message: subject, plain text and HTML of each email kind, from a
//! snapshot of what depwatch knows ([`View`]). No I/O here.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use super::incident::{EmailKind, Incident, Scope};
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
    pub runbook: String,
    /// component → `runbook_url` of the alert Alertmanager has for it.
    pub alert_runbooks: BTreeMap<String, String>,
    /// depwatch's status page.
    pub page_url: Option<String>,
    /// Set while an HA peer cannot reach the coordinator: this email may
    /// come from every peer.
    pub uncoordinated: Option<String>,
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

fn others(v: &View, skip: &[&str]) -> Rows {
    v.components
        .iter()
        .filter(|c| !skip.contains(&c.name.as_str()))
        .map(|c| {
            let mut s = c.status.clone();
            if let Some(e) = &c.error
                && c.status != "healthy"
            {
                let _ = write!(s, ": {e}");
            }
            (c.name.clone(), s)
        })
        .collect()
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
                    "The alerting pipeline works again (down from {} for {}).",
                    at(i.opened_ms),
                    ago(now, i.opened_ms)
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
                    "{} recovered (incident opened {}, lasted {}).",
                    names(i, false),
                    at(i.opened_ms),
                    ago(now, i.opened_ms)
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
    if let Some(i) = inc.filter(|i| i.scope == Scope::Components) {
        for m in &i.members {
            let c = v.components.iter().find(|c| c.name == m.component);
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
    }
    if kind != EmailKind::Test {
        let skip: Vec<&str> = inc
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
    use crate::alert::incident::Member;

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
    }
}
