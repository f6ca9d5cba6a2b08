//! Alert state in the state store (tables `alert_incidents` and
//! `alert_emails`, migration "alert state"): open incidents survive a
//! restart, and so does the outbox — an email is stored before it is sent
//! and marked sent after, so a restart neither resends nor forgets.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};

use super::email::Outgoing;
use super::incident::{EmailKind, Incident};
use crate::store::{Store, StoreError};

/// What the engine resumes from.
pub struct Saved {
    pub open: Vec<Incident>,
    pub next_incident: i64,
    pub next_email: i64,
    /// Emails stored but not sent yet, oldest first.
    pub unsent: Vec<Outgoing>,
    /// When the emails of the last hour were queued (for `max_per_hour`).
    pub recent_ms: Vec<i64>,
    /// The last email sent: (kind, subject, sent_ms, reply).
    pub last_sent: Option<(String, String, i64, Option<String>)>,
}

impl Store {
    pub async fn alert_load(&self, now_ms: i64) -> Result<Saved, StoreError> {
        self.read(move |c| {
            let mut open = Vec::new();
            let mut st = c.prepare_cached("SELECT state FROM alert_incidents WHERE open = 1 ORDER BY id")?;
            for s in st.query_map([], |r| r.get::<_, String>(0))? {
                match serde_json::from_str::<Incident>(&s?) {
                    Ok(i) => open.push(i),
                    Err(e) => tracing::warn!(error = %e, "Skipping an unreadable stored incident."),
                }
            }
            let next_incident: i64 =
                c.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM alert_incidents", [], |r| r.get(0))?;
            let next_email: i64 =
                c.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM alert_emails", [], |r| r.get(0))?;
            let mut st = c.prepare_cached(
                "SELECT id, incident, kind, message_id, subject, mail_from, rcpt_to, body
                 FROM alert_emails WHERE sent_ms IS NULL ORDER BY id",
            )?;
            let unsent = st
                .query_map([], |r| {
                    let to: String = r.get(6)?;
                    Ok(Outgoing {
                        id: r.get(0)?,
                        incident: r.get(1)?,
                        kind: EmailKind::from_name(&r.get::<_, String>(2)?).unwrap_or(EmailKind::Firing),
                        message_id: r.get(3)?,
                        subject: r.get(4)?,
                        from: r.get(5)?,
                        to: serde_json::from_str(&to).unwrap_or_default(),
                        body: Arc::new(r.get(7)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut st = c.prepare_cached(
                "SELECT created_ms FROM alert_emails WHERE created_ms > ?1 AND kind != 'test' ORDER BY created_ms",
            )?;
            let recent_ms = st
                .query_map(params![now_ms - 3_600_000], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            let last_sent = c
                .query_row(
                    "SELECT kind, subject, sent_ms, reply FROM alert_emails
                     WHERE sent_ms IS NOT NULL ORDER BY sent_ms DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            Ok(Saved {
                open,
                next_incident,
                next_email,
                unsent,
                recent_ms,
                last_sent,
            })
        })
        .await
    }

    pub fn alert_incident_put(&self, inc: &Incident, now_ms: i64) {
        let Some(row) = IncidentRow::of(inc) else {
            return;
        };
        self.write("alert incident", move |c| row.save(c, now_ms));
    }

    /// An email queued for an incident and the incident's state with it
    /// (fired, its thread, the email counted, nothing owed any more), in
    /// one write: the writer gives each write its own savepoint, so both
    /// are committed or neither is. Apart, a crash between two batches
    /// could keep the email without the state that decided it (sent again
    /// after a restart) or the state without the email (never sent).
    pub fn alert_email_queued(&self, e: &Outgoing, inc: &Incident, now_ms: i64) {
        let Some(row) = IncidentRow::of(inc) else {
            return;
        };
        let e = e.clone();
        self.write("alert email queued", move |c| {
            insert_email(c, &e, now_ms)?;
            row.save(c, now_ms)
        });
    }

    pub fn alert_email_put(&self, e: &Outgoing, now_ms: i64) {
        let e = e.clone();
        self.write("alert email", move |c| insert_email(c, &e, now_ms));
    }

    pub fn alert_email_attempt(&self, id: i64) {
        self.write("alert email attempt", move |c| {
            c.prepare_cached("UPDATE alert_emails SET attempts = attempts + 1 WHERE id = ?1")?
                .execute(params![id])
                .map(drop)
        });
    }

    /// The recipients an email is still owed to (the others took it).
    pub fn alert_email_recipients(&self, id: i64, to: &[String]) {
        let to = serde_json::to_string(to).unwrap_or_default();
        self.write("alert email recipients", move |c| {
            c.prepare_cached("UPDATE alert_emails SET rcpt_to = ?2 WHERE id = ?1")?
                .execute(params![id, to])
                .map(drop)
        });
    }

    pub fn alert_email_sent(&self, id: i64, now_ms: i64, reply: String) {
        self.write("alert email sent", move |c| {
            c.prepare_cached("UPDATE alert_emails SET sent_ms = ?2, reply = ?3 WHERE id = ?1")?
                .execute(params![id, now_ms, reply])
                .map(drop)
        });
    }
}

/// An incident as its row holds it.
struct IncidentRow {
    id: i64,
    /// Loaded at start: open, or a closed incident still owed an email
    /// (held back by `max_per_hour`) until that went.
    open: bool,
    state: String,
}

impl IncidentRow {
    fn of(inc: &Incident) -> Option<IncidentRow> {
        let state = serde_json::to_string(inc).ok()?;
        Some(IncidentRow {
            id: inc.id,
            open: inc.kept(),
            state,
        })
    }

    fn save(&self, c: &rusqlite::Connection, now_ms: i64) -> rusqlite::Result<()> {
        c.prepare_cached(
            "INSERT INTO alert_incidents (id, open, state, updated_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET open = ?2, state = ?3, updated_ms = ?4",
        )?
        .execute(params![self.id, self.open, self.state, now_ms])
        .map(drop)
    }
}

fn insert_email(c: &rusqlite::Connection, e: &Outgoing, now_ms: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO alert_emails (id, incident, kind, message_id, subject, mail_from, rcpt_to, body, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        e.id,
        e.incident,
        e.kind.as_str(),
        e.message_id,
        e.subject,
        e.from,
        serde_json::to_string(&e.to).unwrap_or_default(),
        e.body.as_slice(),
        now_ms
    ])
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::incident::Now;

    fn at(ms: i64) -> Now {
        Now { wall: ms, mono: ms }
    }

    fn email(id: i64) -> Outgoing {
        Outgoing {
            id,
            incident: Some(1),
            kind: EmailKind::Firing,
            message_id: format!("<m{id}@h>"),
            subject: "s".into(),
            from: "a@b.c".into(),
            to: vec!["d@e.f".into()],
            body: Arc::new(b"body".to_vec()),
        }
    }

    /// The book's policy for the tests: emails at once, no reminders.
    fn policy(down_since: Option<i64>) -> crate::alert::incident::Policy {
        crate::alert::incident::Policy {
            mode: crate::alert::config::Mode::Always,
            can_email: true,
            group_wait: std::time::Duration::ZERO,
            repeat_interval: None,
            down_since,
        }
    }

    /// A critical component `a` found unhealthy.
    fn unhealthy() -> crate::alert::incident::Obs {
        crate::alert::incident::Obs {
            component: "a".into(),
            kind: "redis".into(),
            critical: true,
            unhealthy: true,
            recovered: false,
            reason: None,
            error: None,
        }
    }

    fn fired() -> Incident {
        let mut b = crate::alert::incident::Book::new(vec![], 1, at(0));
        let (o, p) = (unhealthy(), policy(None));
        assert_eq!(b.components(at(1_000), &[o], false, &p).len(), 1);
        b.take_dirty().remove(0)
    }

    #[tokio::test]
    async fn an_email_and_its_incident_are_saved_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let t = crate::util::time::unix_ms(std::time::SystemTime::now());
        let inc = fired();
        assert!(inc.fired);
        // Both land.
        s.alert_email_queued(&email(1), &inc, t);
        s.flush().await.unwrap();
        let saved = s.alert_load(t).await.unwrap();
        assert_eq!((saved.open.len(), saved.unsent.len()), (1, 1));
        // The email cannot be saved (its id is taken): the incident's new
        // state is not saved either, so a restart neither loses the firing
        // email (incident fired, no email) nor resends it.
        let mut later = inc.clone();
        later.id = 2;
        s.alert_email_queued(&email(1), &later, t);
        s.flush().await.unwrap();
        assert_eq!(s.status_json()["write_failures"], 1, "{}", s.status_json());
        let saved = s.alert_load(t).await.unwrap();
        assert_eq!(
            saved.open.iter().map(|i| i.id).collect::<Vec<_>>(),
            [1],
            "the incident was saved without its email"
        );
        assert_eq!(saved.unsent.len(), 1);
    }

    #[tokio::test]
    async fn incidents_and_outbox_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut b = crate::alert::incident::Book::new(vec![], 1, at(0));
        let (o, p) = (unhealthy(), policy(Some(0)));
        b.components(at(1_000), &[o], true, &p);
        for i in b.take_dirty() {
            s.alert_incident_put(&i, 1_000);
        }
        // Real times: a reopen prunes sent rows older than MAX_RETENTION.
        let t = crate::util::time::unix_ms(std::time::SystemTime::now());
        s.alert_email_put(&email(1), t - 2_000);
        s.alert_email_put(&email(2), t - 1_000);
        s.alert_email_sent(1, t - 500, "250 ok".into());
        s.close().await.unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        let saved = s.alert_load(t).await.unwrap();
        assert_eq!(saved.open.len(), 1);
        assert_eq!(saved.next_incident, 2);
        assert_eq!(saved.next_email, 3);
        assert_eq!(saved.unsent.len(), 1);
        assert_eq!(saved.unsent[0].id, 2);
        assert_eq!(saved.recent_ms, vec![t - 2_000, t - 1_000]);
        assert_eq!(saved.last_sent.unwrap().3.as_deref(), Some("250 ok"));
    }
}
