//! The outbox sender: the emails the engine queued, delivered in order
//! through `alerting.email`, each retried with backoff before anything
//! behind it goes (a message the server refuses for good is set aside, see
//! [`sender`]); and the test email, sent at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use super::config::AlertingConfig;
use super::email::{self, Outgoing};
use super::engine::stopped;
use super::incident::EmailKind;
use super::render::{self, View, now_ms};
use crate::http::shared::Shared;

/// Sends the outbox in order; a failure is retried (backoff) before
/// anything behind it goes.
pub(super) async fn sender(
    shared: Arc<Shared>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
    mut stop: watch::Receiver<bool>,
) {
    let a = &shared.alert;
    let mut q: VecDeque<Outgoing> = VecDeque::new();
    let mut attempt = 0u32;
    // Failures in a row that retrying cannot fix (a refused login, a
    // refusal for good): these wait far longer (`email::backoff_refused`).
    let mut refusals = 0u32;
    // The failure last logged: a failure is logged when it changes, not on
    // every attempt.
    let mut logged: Option<(email::FailReason, String)> = None;
    // A failure was logged since the last delivery: the next one says so.
    let mut failing = false;
    // A message the server refused for good (5xx), set aside while the
    // next one is tried: if the server takes that one, it refuses this
    // message itself (its size, its content) and retrying cannot help, so
    // it is given up instead of holding back every email behind it; if it
    // refuses that one too (relay, recipients), both wait for a fix.
    let mut refused: Option<(Outgoing, email::SendError)> = None;
    loop {
        if q.is_empty() {
            a.lock().queued = 0;
            tokio::select! {
                _ = stop.changed() => return,
                m = rx.recv() => match m {
                    Some(m) => q.push_back(m),
                    None => return,
                },
            }
        }
        while let Ok(m) = rx.try_recv() {
            q.push_back(m);
        }
        a.lock().queued = q.len() + usize::from(refused.is_some());
        if q.is_empty() {
            continue;
        }
        let rt = shared.current();
        let Some(ecfg) = rt.config.alerting.as_ref().and_then(|c| c.email.clone()) else {
            // Email was removed by a reload: keep the outbox until it is back.
            if stopped(&mut stop, Duration::from_secs(1)).await {
                return;
            }
            continue;
        };
        drop(rt);
        let head = match q.front_mut() {
            Some(h) => {
                follow_config(h, &ecfg);
                h.clone()
            }
            None => continue,
        };
        match a.coord.gate().await {
            super::coord::Gate::Send => {}
            super::coord::Gate::Wait => {
                if stopped(&mut stop, Duration::from_millis(200)).await {
                    return;
                }
                continue;
            }
            super::coord::Gate::Skip(leader) => {
                tracing::info!(kind = head.kind.as_str(), subject = %head.subject, leader = %leader, "Alert email left to the HA leader.");
                shared.store.alert_email_sent(
                    head.id,
                    now_ms(),
                    format!("not sent here: {leader} is the sender"),
                );
                q.pop_front();
                continue;
            }
        }
        // After an SMTP outage the queue holds every reminder decided
        // meanwhile: the newest (or the resolution) says what is true now,
        // the older ones would arrive as a burst of stale "still unhealthy".
        if head.kind == EmailKind::Reminder
            && head.incident.is_some()
            && q.iter().skip(1).any(|m| {
                m.incident == head.incident
                    && matches!(m.kind, EmailKind::Reminder | EmailKind::Resolved)
            })
        {
            tracing::info!(kind = head.kind.as_str(), subject = %head.subject, "Alert email dropped: a later one about the same incident is queued.");
            shared.store.alert_email_sent(
                head.id,
                now_ms(),
                "superseded: a later email about this incident was queued".into(),
            );
            let last = a.lock().last_email.clone();
            if let Some(last) = last {
                a.coord.publish_sent(&head.message_id, &last);
            }
            q.pop_front();
            continue;
        }
        a.metrics.attempt(head.kind);
        shared.store.alert_email_attempt(head.id);
        let result = tokio::select! {
            _ = stop.changed() => return,
            r = email::deliver(&ecfg, &head) => r,
        };
        let now = now_ms();
        let at = crate::util::time::rfc3339(std::time::SystemTime::now());
        match result {
            Ok(email::Delivered {
                reply,
                refused: partly,
                owed,
            }) => {
                refusals = 0;
                a.metrics.set_backoff(Duration::ZERO);
                logged = None;
                if std::mem::take(&mut failing) {
                    tracing::info!("Alert emails are delivered again.");
                }
                if owed.is_empty() {
                    shared.store.alert_email_sent(head.id, now, reply.clone());
                    tracing::info!(kind = head.kind.as_str(), subject = %head.subject, reply = %reply, attempts = attempt + 1, "Alert email sent.");
                } else {
                    // Taken for some; those refused for now are retried
                    // alone (stored, so a restart owes them only).
                    tracing::info!(kind = head.kind.as_str(), subject = %head.subject, reply = %reply, owed = ?owed, "Alert email sent to some recipients; retrying the others.");
                    shared.store.alert_email_recipients(head.id, &owed);
                }
                if let Some(e) = partly {
                    // Sent, but not to everyone: counted and shown as a failure.
                    a.metrics.failure(head.kind);
                    tracing::warn!(kind = head.kind.as_str(), subject = %head.subject, error = %e.message, "Alert email refused for some recipients.");
                    a.lock().last_error = Some(failure(&head, &e, &at, attempt + 1));
                }
                let last = json!({
                    "kind": head.kind.as_str(), "subject": head.subject, "reply": reply, "at": at,
                });
                a.lock().last_email = Some(last.clone());
                let retry = !owed.is_empty();
                if retry {
                    if let Some(h) = q.front_mut() {
                        h.to = owed;
                    }
                } else {
                    a.coord.publish_sent(&head.message_id, &last);
                    q.pop_front();
                    attempt = 0;
                }
                if let Some((m, e)) = refused.take() {
                    tracing::error!(kind = m.kind.as_str(), subject = %m.subject, error = %e.message, "Alert email given up: the server refuses this message and took the next one.");
                    shared
                        .store
                        .alert_email_sent(m.id, now, format!("given up: {}", e.message));
                    // Out of the shared outbox too (a peer taking over would
                    // try it again); the email sent stays the last one.
                    a.coord.publish_sent(&m.message_id, &last);
                }
                if retry {
                    let wait = email::backoff(attempt);
                    attempt += 1;
                    if stopped(&mut stop, wait).await {
                        return;
                    }
                }
            }
            Err(e) => {
                a.metrics.failure(head.kind);
                let hint = e.reason.hint();
                let for_good = hint.is_some();
                let wait = if for_good {
                    email::backoff_refused(refusals)
                } else {
                    email::backoff(attempt)
                };
                let next = crate::util::time::rfc3339(std::time::SystemTime::now() + wait);
                let key = (e.reason, e.message.clone());
                if logged.as_ref() != Some(&key) {
                    if for_good {
                        tracing::error!(kind = head.kind.as_str(), reason = e.reason.as_str(), error = %e.message, retry_in = ?wait, hint = hint.unwrap_or_default(), "Alert email refused; retrying less and less often.");
                    } else {
                        tracing::warn!(kind = head.kind.as_str(), reason = e.reason.as_str(), error = %e.message, retry_in = ?wait, "Alert email failed; retrying.");
                    }
                    logged = Some(key);
                    failing = true;
                } else {
                    tracing::debug!(kind = head.kind.as_str(), reason = e.reason.as_str(), retry_in = ?wait, "Alert email failed again.");
                }
                let mut shown = failure(&head, &e, &at, attempt + 1);
                shown["next_attempt"] = json!(next);
                if let Some(h) = hint {
                    shown["hint"] = json!(h);
                }
                a.lock().last_error = Some(shown);
                if e.reason == email::FailReason::Rejected && refused.is_none() && q.len() > 1 {
                    refused = q.pop_front().map(|m| (m, e));
                    continue;
                }
                if let Some((m, _)) = refused.take() {
                    q.push_front(m);
                }
                attempt += 1;
                if for_good {
                    refusals += 1;
                } else {
                    refusals = 0;
                }
                a.metrics.set_backoff(wait);
                // A refusal of one message may be that message's: another
                // one queued meanwhile is tried (see `refused`). A refused
                // login is not retried for new emails.
                let on_new = e.reason == email::FailReason::Rejected;
                match pause(&shared, &mut stop, &mut rx, &mut q, &ecfg, wait, on_new).await {
                    Pause::Stop => return,
                    Pause::Elapsed | Pause::Queued => {}
                    Pause::Changed => {
                        tracing::info!("alerting.email changed: retrying the alert emails now.");
                        (attempt, refusals) = (0, 0);
                        // What the retry meets is news after a fix: a
                        // refusal as before is logged again, at its level.
                        logged = None;
                        a.metrics.set_backoff(Duration::ZERO);
                    }
                }
            }
        }
    }
}

/// Why [`pause`] ended.
enum Pause {
    Stop,
    Elapsed,
    /// `alerting.email` changed (a reload): the fix may be in it.
    Changed,
    /// Another email was queued (only when asked to wake for one).
    Queued,
}

/// Waits `wait` before the next attempt, or less: until `alerting.email`
/// differs from `ecfg` (looked at every 250 ms: a reload swaps the whole
/// configuration, nothing announces it) or, with `on_new`, until another
/// email is queued (taken into `q`).
async fn pause(
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
    q: &mut VecDeque<Outgoing>,
    ecfg: &super::config::EmailConfig,
    wait: Duration,
    on_new: bool,
) -> Pause {
    let until = tokio::time::Instant::now() + wait;
    loop {
        if *stop.borrow() {
            return Pause::Stop;
        }
        let now = tokio::time::Instant::now();
        if now >= until {
            return Pause::Elapsed;
        }
        let slice = (until - now).min(Duration::from_millis(250));
        tokio::select! {
            _ = stop.changed() => return Pause::Stop,
            m = rx.recv(), if on_new => match m {
                Some(m) => {
                    q.push_back(m);
                    return Pause::Queued;
                }
                None => return Pause::Stop,
            },
            _ = tokio::time::sleep(slice) => {
                let rt = shared.current();
                let now_cfg = rt.config.alerting.as_ref().and_then(|c| c.email.as_ref());
                if now_cfg.is_some_and(|c| c != ecfg) {
                    return Pause::Changed;
                }
            }
        }
    }
}

/// Points a queued email's envelope at the configuration in force. A
/// queue the server refuses for its addresses (a typo in `to`, a `from` it
/// will not relay for) would otherwise stay blocked after the fix and the
/// reload, every email in it keeping the addresses it was queued with.
/// Those still owed it who are still configured keep it; if none of them
/// is, it goes to the configured recipients. (The message's own `From:`
/// and `To:` headers stay as written.)
fn follow_config(m: &mut Outgoing, ecfg: &super::config::EmailConfig) {
    let (from, to) = email::envelope_of(ecfg);
    let kept: Vec<String> = m.to.iter().filter(|a| to.contains(a)).cloned().collect();
    if m.from != from || kept.len() != m.to.len() {
        tracing::info!(kind = m.kind.as_str(), subject = %m.subject, from = %from, to = ?if kept.is_empty() { &to } else { &kept }, "Queued alert email sent to the addresses configured now.");
    }
    m.from = from;
    m.to = if kept.is_empty() { to } else { kept };
}

/// The outbox's last error as `/api/health` shows it.
fn failure(m: &Outgoing, e: &email::SendError, at: &str, attempts: u32) -> serde_json::Value {
    json!({
        "kind": m.kind.as_str(), "reason": e.reason.as_str(), "message": e.message,
        "at": at, "attempts": attempts,
    })
}

/// Sends a test email now (not through the outbox) and answers the
/// server's reply or the exact failure.
pub async fn send_test(
    cfg: &AlertingConfig,
    host: &str,
    metrics: Option<&super::metrics::AlertMetrics>,
) -> Result<String, email::SendError> {
    let Some(ecfg) = cfg.email.as_ref() else {
        return Err(email::SendError {
            reason: email::FailReason::Config,
            message: "alerting.email is not configured".into(),
        });
    };
    let view = View {
        host: host.to_string(),
        mode: cfg.mode.as_str(),
        pipeline: "unknown",
        runbook: cfg.runbook_url.clone(),
        ..Default::default()
    };
    let r = render::render(EmailKind::Test, None, &view, now_ms());
    let message_id = email::new_message_id(None, 0, host);
    let body = email::build(ecfg, &r, &message_id, None, "test").map_err(|e| email::SendError {
        reason: email::FailReason::Config,
        message: e,
    })?;
    let (from, to) = email::envelope_of(ecfg);
    let out = Outgoing {
        id: 0,
        incident: None,
        kind: EmailKind::Test,
        message_id,
        subject: r.subject,
        from,
        to,
        body: Arc::new(body),
    };
    if let Some(m) = metrics {
        m.attempt(EmailKind::Test);
    }
    let res = async {
        email::greets(ecfg).await?;
        match email::deliver(ecfg, &out).await? {
            email::Delivered {
                reply,
                refused: None,
                ..
            } => Ok(reply),
            // A test is for finding what is wrong: a recipient refused is.
            email::Delivered {
                reply,
                refused: Some(mut e),
                ..
            } => {
                e.message = format!("{} (the others: {reply})", e.message);
                Err(e)
            }
        }
    }
    .await;
    if res.is_err()
        && let Some(m) = metrics
    {
        m.failure(EmailKind::Test);
    }
    res
}
