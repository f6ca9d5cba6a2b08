//! The alerting tasks: the engine (pipeline watchdog, `watchdog.rs`, + incidents, every
//! [`TICK`]), the Alertmanager health checker, the HA coordinator, and the
//! outbox sender (`outbox.rs`). None of them blocks a probe or an endpoint:
//! they read the components' latest results and hand emails over through a
//! queue.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use super::config::{AlertingConfig, Mode};
use super::email::{self, Outgoing};
use super::incident::{Book, Incident, Intent, Now, Obs, Policy, Scope};
use super::render::{self, CompView, View, now_ms};
use super::watchdog::{Seen, Signals, watchdog};
use crate::http::shared::Shared;
use crate::probe::core::Status;

/// How often the engine looks at the components and the pipeline.
pub const TICK: Duration = Duration::from_millis(250);

/// Waits `d`; true when `stop` turned true meanwhile (or was already).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = stop.changed() => true,
        _ = tokio::time::sleep(d) => *stop.borrow(),
    }
}

struct Engine {
    shared: Arc<Shared>,
    book: Book,
    next_email: i64,
    /// What the status pages were last told (`/api/events`): the pipeline
    /// (state and the checks failing), and each incident's openness.
    told_pipeline: Option<serde_json::Value>,
    told_open: std::collections::BTreeMap<i64, bool>,
    /// Incidents that got a reminder decided since the last announcement.
    reminded: Vec<i64>,
    /// The open incidents as last written to the HA coordinator.
    published: String,
    /// The last scrape and the last heartbeat, timed on the monotonic clock.
    scrape: Seen,
    heartbeat: Seen,
    /// The origin of [`Now::mono`]: the book's waits and the cap's hour
    /// are measured on the monotonic clock, like the watchdog's.
    origin: tokio::time::Instant,
    /// Every component has had a result since this start (or
    /// [`OWED_WAIT_AT_START`] passed): emails owed from before it may go.
    results: bool,
    /// This run has judged the pipeline: seen it working end to end, or
    /// down by its timeouts. Until then its `ok` is only a start.
    judged: bool,
}

/// How long, at most, emails owed from before a start wait for every
/// component's first result: sent at the first tick, they showed every
/// component as `unknown`. A check that hangs holds them no longer.
const OWED_WAIT_AT_START: Duration = Duration::from_secs(30);

pub(super) async fn coordinator(shared: Arc<Shared>, stop: watch::Receiver<bool>, port: u16) {
    let settings = {
        let shared = shared.clone();
        move || {
            let rt = shared.current();
            let c = rt
                .config
                .alerting
                .as_ref()
                .and_then(|a| a.coordination.clone());
            (c, port)
        }
    };
    super::coord::run(&shared.alert.coord, settings, &shared.alert.host, stop).await;
}

pub(super) async fn engine(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let origin = tokio::time::Instant::now();
    let saved = match shared.store.alert_load(now_ms()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Cannot read the alert state; starting without it.");
            super::store::Saved {
                open: vec![],
                next_incident: 1,
                next_email: 1,
                unsent: vec![],
                recent_ms: vec![],
                last_sent: None,
            }
        }
    };
    let a = &shared.alert;
    if !saved.open.is_empty() || !saved.unsent.is_empty() {
        tracing::info!(
            open_incidents = saved.open.len(),
            unsent_emails = saved.unsent.len(),
            "Alert state restored."
        );
    }
    for e in saved.unsent {
        a.enqueue(e);
    }
    let start = clock(origin);
    a.recent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(saved.recent_ms.iter().map(|t| start.mono_of(*t)));
    if let Some((kind, subject, at, reply)) = saved.last_sent {
        a.lock().last_email = Some(json!({
            "kind": kind, "subject": subject, "reply": reply,
            "at": crate::util::time::rfc3339_ms(at),
        }));
    }
    let book = Book::new(saved.open, saved.next_incident, start);
    let told_open = book.incidents.keys().map(|id| (*id, true)).collect();
    let mut e = Engine {
        shared: shared.clone(),
        book,
        next_email: saved.next_email,
        published: String::new(),
        told_pipeline: None,
        told_open,
        reminded: Vec::new(),
        scrape: Seen::new(tokio::time::Instant::now()),
        heartbeat: Seen::new(tokio::time::Instant::now()),
        origin,
        results: false,
        judged: false,
    };
    loop {
        e.tick();
        e.announce();
        if stopped(&mut stop, TICK).await {
            break;
        }
    }
    // Whatever the last tick changed is queued for the store already.
}

impl Engine {
    /// A takeover: the open incidents and the unsent emails are the previous
    /// leader's, so nothing it sent is sent again and nothing owed is lost.
    fn adopt(&mut self, adopted: super::coord::Adopted, now: i64) {
        let a = &self.shared.alert;
        if let Some(book) = adopted.book {
            tracing::info!(
                open_incidents = book.open.len(),
                "Took over the alert sender: adopting the shared incidents."
            );
            let next = book.next_incident.max(self.book.next_id);
            // Open or still owed an email here, unknown to the shared
            // book: closed and saved so (a row still owed an email would
            // be loaded, and its email sent, at the next start).
            for inc in self.book.kept() {
                if !book.open.iter().any(|b| b.id == inc.id) {
                    let mut closed = inc.clone();
                    closed.resolved_ms.get_or_insert(now);
                    // The shared book is the one in force: nothing of
                    // this one is owed any more.
                    closed.owed = None;
                    self.shared.store.alert_incident_put(&closed, now);
                }
            }
            self.book = Book::new(book.open, next, clock(self.origin));
            // Closed ones that still owe an email too: saved, so that a
            // crash of this leader does not lose what they owe.
            for inc in self.book.kept() {
                self.shared.store.alert_incident_put(inc, now);
            }
        }
        for mut e in adopted.outbox {
            e.id = self.next_email;
            self.next_email += 1;
            tracing::info!(kind = e.kind.as_str(), subject = %e.subject, "Taking over an unsent alert email.");
            self.shared.store.alert_email_put(&e, now);
            a.enqueue(e);
        }
        if let Some(last) = adopted.last_email {
            let mut i = a.lock();
            if i.last_email.is_none() {
                i.last_email = Some(last);
            }
        }
        self.published.clear();
    }

    fn tick(&mut self) {
        let rt = self.shared.current();
        let shared = self.shared.clone();
        let a = &shared.alert;
        let clock = clock(self.origin);
        let now = clock.wall;
        let last_scrape = {
            let s = self.shared.metrics.last_scrape.get();
            (s > 0.0).then_some((s * 1000.0) as i64)
        };
        if let Some(adopted) = a.coord.take_adopted() {
            self.adopt(adopted, now);
        }
        let role = a.coord.role();
        a.expire_firing(
            rt.config
                .alerting
                .as_ref()
                .map_or(super::config::DEFAULT_FIRING_EXPIRY, |c| c.firing_expiry),
            tokio::time::Instant::now(),
        );
        let Some(cfg) = rt.config.alerting.as_ref() else {
            let mut i = a.lock();
            i.configured = false;
            i.mode = None;
            i.pipeline = "unknown";
            i.reasons.clear();
            i.last_scrape_ms = last_scrape;
            a.metrics.set_pipeline(None);
            a.metrics.set_sender(None);
            return;
        };
        let (reasons, confirmed) = {
            let i = a.lock();
            let mono = tokio::time::Instant::now();
            let signals = Signals {
                now,
                scrape: (last_scrape, self.scrape.age(last_scrape, mono)),
                heartbeat: (
                    i.last_heartbeat_ms,
                    self.heartbeat.age(i.last_heartbeat_ms, mono),
                ),
                am: &i.am,
            };
            let reasons = watchdog(cfg, &signals);
            // Seen since this start, whatever the wall clock said then.
            let confirmed = self.scrape.seen()
                && (cfg.alertmanager_url.is_none() || i.am.healthy == Some(true))
                && (cfg.heartbeat_timeout.is_none() || self.heartbeat.seen());
            (reasons, confirmed)
        };
        let down = !reasons.is_empty();
        let email_cfg = cfg.email.as_ref();
        let policy = Policy {
            mode: cfg.mode,
            can_email: email_cfg.is_some(),
            group_wait: cfg.group_wait,
            repeat_interval: email_cfg.map(|e| e.repeat_interval),
            down_since: reasons.iter().map(|r| clock.mono_of(r.since_ms)).min(),
        };
        let texts: Vec<String> = reasons.iter().map(|r| r.message.clone()).collect();
        let mut intents = self.book.pipeline(clock, down, confirmed, &texts, &policy);
        let obs: Vec<Obs> = rt
            .components
            .iter()
            .map(|c| {
                let l = c.latest();
                Obs {
                    component: c.name().to_string(),
                    kind: c.kind().as_str().to_string(),
                    critical: c.cfg.critical,
                    unhealthy: l.status == Some(Status::Unhealthy),
                    recovered: l.status.is_some_and(|s| s != Status::Unhealthy) && l.up,
                    reason: l.reason.map(|r| r.as_str().to_string()),
                    error: l.error.clone(),
                }
            })
            .collect();
        intents.extend(self.book.components(clock, &obs, down, &policy));
        self.reminded.extend(
            intents
                .iter()
                .filter(|i| i.kind == super::incident::EmailKind::Reminder)
                .map(|i| i.incident),
        );
        {
            let mut i = a.lock();
            i.configured = true;
            i.mode = Some(cfg.mode);
            i.pipeline = if down { "down" } else { "ok" };
            i.last_scrape_ms = last_scrape;
            if i.reasons
                .iter()
                .map(|r| r.check)
                .ne(reasons.iter().map(|r| r.check))
            {
                if down {
                    for r in &reasons {
                        tracing::warn!(check = r.check, reason = %r.message, "Alerting pipeline down.");
                    }
                } else {
                    tracing::info!("Alerting pipeline ok.");
                }
            }
            i.reasons = reasons;
        }
        a.metrics.set_pipeline(Some(!down));
        a.metrics.set_sender(Some(
            email_cfg.is_some() && cfg.mode != Mode::Off && role.sends(),
        ));
        // Every email decided is owed first; the owed ones go oldest first,
        // as far as `max_per_hour` allows (the others wait, in the book
        // and the store, for the hour to make room).
        self.book.owe(&intents, clock);
        let fresh: std::collections::BTreeSet<i64> = intents.iter().map(|i| i.incident).collect();
        let due = self.book.due(&policy);
        self.judged = self.judged || down || confirmed;
        self.results = self.results
            || self.origin.elapsed() >= OWED_WAIT_AT_START
            || rt.components.iter().all(|c| c.latest().status.is_some());
        match email_cfg {
            Some(ecfg) if role.sends() => {
                for intent in due {
                    // Owed from before this start: after the components'
                    // first results, which the email shows; about the
                    // pipeline, once this run has judged it (seen working,
                    // or down by its timeouts), not the "ok" it starts at.
                    if !fresh.contains(&intent.incident) {
                        let pipeline = self
                            .book
                            .incidents
                            .get(&intent.incident)
                            .is_some_and(|i| i.scope == Scope::Pipeline);
                        if !self.results || (pipeline && !self.judged) {
                            continue;
                        }
                    }
                    match self.queue(cfg, ecfg, intent, clock, &rt, role) {
                        Queued::Yes | Queued::Failed => {}
                        Queued::HeldBack if fresh.contains(&intent.incident) => {
                            let mut i = a.lock();
                            i.held_back += 1;
                            i.held_back_total += 1;
                            tracing::warn!(
                                kind = intent.kind.as_str(),
                                incident = intent.incident,
                                max_per_hour = cfg.max_per_hour,
                                "Alert email held back: max_per_hour reached; it goes once the hour makes room."
                            );
                        }
                        Queued::HeldBack => {}
                    }
                }
            }
            _ => {
                // Not the sender (the HA leader sends), or no `email:`:
                // nothing is owed here.
                if !due.is_empty() {
                    tracing::debug!(
                        emails = due.len(),
                        role = role.as_str(),
                        "Alert emails left to the HA leader."
                    );
                }
                for intent in due {
                    self.book.settle(intent.incident, None);
                }
            }
        }
        if role == super::coord::Role::Leader {
            let snapshot = super::coord::SharedBook {
                open: self.book.kept().cloned().collect(),
                next_incident: self.book.next_id,
            };
            if let Ok(json) = serde_json::to_string(&snapshot)
                && json != self.published
            {
                a.coord.publish_book(json.clone());
                self.published = json;
            }
        } else {
            self.published.clear();
        }
        self.announce_incidents();
        for inc in self.book.take_dirty() {
            self.shared.store.alert_incident_put(&inc, now);
        }
        let open: Vec<&Incident> = self.book.open().collect();
        if a.metrics.incidents_open.set(open.len() as i64) != open.len() as i64 {
            crate::metrics::snapshot::changed();
        }
        let views = open
            .iter()
            .map(|i| {
                json!({
                    "id": i.id,
                    "scope": i.scope,
                    "components": i.open_members().map(|m| m.component.clone()).collect::<Vec<_>>(),
                    "opened_at": crate::util::time::rfc3339_ms(i.opened_ms),
                    "emailed": i.notify,
                    "emails": i.emails,
                    "last_email_at": i.last_email_ms.map(at_ms),
                    // The email `max_per_hour` holds back for it, if any.
                    "held_back": i.owed.map(|o| o.kind.as_str()),
                })
            })
            .collect();
        a.lock().open = views;
    }

    /// Tells the status pages (`/api/events`) when the pipeline's state or
    /// its failing checks changed (a `pipeline` event).
    fn announce(&mut self) {
        let hub = &self.shared.metrics.events;
        let p = self.shared.alert.pipeline_json();
        let checks: Vec<&serde_json::Value> = p["reasons"]
            .as_array()
            .map(|r| r.iter().map(|x| &x["check"]).collect())
            .unwrap_or_default();
        let key = json!([p["configured"], p["pipeline"], checks]);
        if self.told_pipeline.as_ref() != Some(&key) {
            hub.publish("pipeline", &p);
            self.told_pipeline = Some(key);
        }
    }

    /// An `incident` event for each incident opened, reminded or resolved
    /// in this tick (before the book forgets the closed ones).
    fn announce_incidents(&mut self) {
        let hub = &self.shared.metrics.events;
        let reminded = std::mem::take(&mut self.reminded);
        for inc in self.book.incidents.values() {
            let was_open = self.told_open.get(&inc.id).copied();
            let action = match (was_open, inc.is_open()) {
                (None, true) => "opened",
                (Some(true), false) => "resolved",
                (Some(true), true) if reminded.contains(&inc.id) => "reminded",
                _ => continue,
            };
            self.told_open.insert(inc.id, inc.is_open());
            hub.publish("incident", &incident_json(inc, action));
        }
        // Closed ones are told once; keep the map as small as the book.
        self.told_open
            .retain(|id, open| *open || self.book.incidents.contains_key(id));
    }

    fn view(
        &self,
        cfg: &AlertingConfig,
        rt: &crate::component::Components,
        held_back: u64,
    ) -> View {
        let a = &self.shared.alert;
        let i = a.lock();
        let mut alert_runbooks = std::collections::BTreeMap::new();
        for f in i.firing.values() {
            if let (Some(c), Some(u)) =
                (f.labels.get("component"), f.annotations.get("runbook_url"))
                && f.labels
                    .get("alertname")
                    .is_some_and(|n| n == "ComponentUnhealthy")
            {
                alert_runbooks.insert(c.clone(), u.clone());
            }
        }
        View {
            host: a.host.clone(),
            mode: cfg.mode.as_str(),
            pipeline: match i.pipeline {
                "ok" if !self.judged => "not yet confirmed since the start",
                p => p,
            },
            reasons: i
                .reasons
                .iter()
                .map(|r| (r.message.clone(), r.since_ms))
                .collect(),
            components: rt
                .components
                .iter()
                .map(|c| {
                    let l = c.latest();
                    CompView {
                        name: c.name().to_string(),
                        kind: c.kind().as_str().to_string(),
                        status: l.status.map_or("unknown", Status::as_str).to_string(),
                        critical: c.cfg.critical,
                        error: l.error.clone(),
                        reason: l.reason.map(|r| r.as_str().to_string()),
                        checked_at_ms: l.checked_at.map(crate::util::time::unix_ms),
                        consecutive_failures: l.consecutive_failures,
                        details: serde_json::Value::Object(l.details.map()),
                    }
                })
                .collect(),
            held_back,
            runbook: cfg.runbook_url.clone(),
            cap: None,
            alert_runbooks,
            page_url: Some(cfg.page_url.clone().unwrap_or_else(|| {
                page_url(
                    rt.config.listen,
                    crate::util::sync::read(&self.shared.tls).is_some(),
                    &a.host,
                )
            })),
            uncoordinated: None,
            held_since: None,
        }
    }

    /// Renders, stores and queues one email, unless `max_per_hour` holds it back.
    fn queue(
        &mut self,
        cfg: &AlertingConfig,
        ecfg: &super::config::EmailConfig,
        intent: Intent,
        clock: Now,
        rt: &crate::component::Components,
        role: super::coord::Role,
    ) -> Queued {
        let now = clock.wall;
        let a = &self.shared.alert;
        if !self.book.incidents.contains_key(&intent.incident) {
            return Queued::Failed;
        }
        let cap;
        {
            // When the emails of the last hour were queued, on the
            // monotonic clock: a step of the wall clock neither frees nor
            // blocks the cap.
            let mut recent = a.recent.lock().unwrap_or_else(|e| e.into_inner());
            while recent.front().is_some_and(|t| clock.mono - t >= 3_600_000) {
                recent.pop_front();
            }
            if recent.len() >= cfg.max_per_hour as usize {
                return Queued::HeldBack;
            }
            recent.push_back(clock.mono);
            // This one fills the hour: it says so, since the emails held
            // back after it cannot (the next one sent counts them).
            cap = (recent.len() >= cfg.max_per_hour as usize).then(|| {
                (
                    cfg.max_per_hour,
                    recent
                        .front()
                        .map_or(now, |t| now + (t + 3_600_000 - clock.mono)),
                )
            });
        }
        // Cloned only now: while the cap holds, every tick asks again.
        let inc = self.book.incidents[&intent.incident].clone();
        let held_back = std::mem::take(&mut a.lock().held_back);
        let mut view = self.view(cfg, rt, held_back);
        view.cap = cap;
        view.uncoordinated = a.coord.uncoordinated_note();
        view.held_since = inc.owed.map(|o| o.since_ms).filter(|t| *t < now);
        let rendered = render::render(intent.kind, Some(&inc), &view, now);
        let id = self.next_email;
        self.next_email += 1;
        let message_id = email::new_message_id(Some(inc.id), id, &a.host);
        let body = match email::build(
            ecfg,
            &rendered,
            &message_id,
            inc.thread.as_deref(),
            intent.kind.as_str(),
        ) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "Cannot build the alert email.");
                self.book.settle(inc.id, None);
                return Queued::Failed;
            }
        };
        self.book.settle(inc.id, Some((clock, &message_id)));
        let (from, to) = email::envelope_of(ecfg);
        let out = Outgoing {
            id,
            incident: Some(inc.id),
            kind: intent.kind,
            message_id,
            subject: rendered.subject,
            from,
            to,
            body: Arc::new(body),
        };
        tracing::info!(kind = intent.kind.as_str(), incident = inc.id, subject = %out.subject, "Alert email queued.");
        // One write: a crash never keeps the email without the incident's
        // state that decided it (sent again at start) or the reverse (lost).
        self.shared
            .store
            .alert_email_queued(&out, &self.book.incidents[&inc.id], now);
        if role == super::coord::Role::Leader {
            a.coord.publish_queued(&out, now);
        }
        a.enqueue(out);
        Queued::Yes
    }
}

/// What became of an email owed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queued {
    Yes,
    /// `max_per_hour` is reached: still owed.
    HeldBack,
    /// It could not be built: given up (logged).
    Failed,
}

/// The status page's address from `listen` when `alerting.page_url` is not
/// set: a wildcard address (`0.0.0.0`, `::`, as in a container) is no link
/// anyone can open, the host's name is the best guess.
fn page_url(listen: std::net::SocketAddr, tls: bool, host: &str) -> String {
    let scheme = if tls { "https" } else { "http" };
    if listen.ip().is_unspecified() {
        format!("{scheme}://{host}:{}/", listen.port())
    } else {
        format!("{scheme}://{listen}/")
    }
}

/// Now on both clocks (see [`Now`]); `mono` counts from `origin`.
fn clock(origin: tokio::time::Instant) -> Now {
    Now {
        wall: now_ms(),
        mono: super::incident::ms(origin.elapsed()),
    }
}

fn at_ms(ms: i64) -> String {
    crate::util::time::rfc3339_ms(ms)
}

/// The data of an `incident` event.
fn incident_json(i: &Incident, action: &str) -> serde_json::Value {
    let members: Vec<&str> = if i.is_open() {
        i.open_members().map(|m| m.component.as_str()).collect()
    } else {
        i.members.iter().map(|m| m.component.as_str()).collect()
    };
    json!({
        "action": action,
        "id": i.id,
        "scope": i.scope,
        "components": members,
        "reasons": i.reasons,
        "opened_at": at_ms(i.opened_ms),
        "resolved_at": i.resolved_ms.map(at_ms),
        "emailed": i.notify,
        "emails": i.emails,
        "last_email_at": i.last_email_ms.map(at_ms),
    })
}

/// Checks Alertmanager's `/-/healthy` every `check_interval`.
pub(super) async fn alertmanager_checker(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    use crate::net::client::{Client, Request};
    use crate::net::target::Target;
    loop {
        let rt = shared.current();
        let cfg = rt.config.alerting.as_ref();
        let every = cfg.map_or(Duration::from_secs(1), |c| c.check_interval);
        match cfg.and_then(|c| c.alertmanager_url.clone()) {
            None => shared.alert.lock().am = Default::default(),
            Some(url) => {
                let result = match Target::parse(&format!("{url}/-/healthy"))
                    .and_then(|t| Client::new(&Request::get(t, vec![], 64 << 10)))
                {
                    Err(e) => Err(e.to_string()),
                    Ok(client) => {
                        let limit = every.clamp(Duration::from_millis(100), Duration::from_secs(5));
                        match tokio::time::timeout(limit, client.fetch()).await {
                            Err(_) => Err(format!(
                                "no answer within {}",
                                crate::config::units::format_duration(limit)
                            )),
                            Ok(Err(e)) => Err(e.message),
                            Ok(Ok(ans)) if ans.status.is_success() => Ok(()),
                            Ok(Ok(ans)) => Err(format!("GET /-/healthy answered {}", ans.status)),
                        }
                    }
                };
                let now = now_ms();
                let mut i = shared.alert.lock();
                i.am.checked_ms = Some(now);
                match result {
                    Ok(()) => {
                        if i.am.healthy == Some(false) {
                            tracing::info!(url, "Alertmanager is healthy again.");
                        }
                        i.am.healthy = Some(true);
                        i.am.failures = 0;
                        i.am.first_failure_ms = None;
                        i.am.error = None;
                    }
                    Err(e) => {
                        if i.am.failures == 0 {
                            tracing::warn!(url, error = %e, "Alertmanager health check failed.");
                            i.am.first_failure_ms = Some(now);
                        }
                        i.am.failures += 1;
                        i.am.healthy = Some(false);
                        i.am.error = Some(e);
                    }
                }
            }
        }
        if stopped(&mut stop, every).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_page_link_is_one_a_person_can_open() {
        let at = |s: &str| s.parse().unwrap();
        assert_eq!(
            page_url(at("0.0.0.0:9877"), false, "web-1"),
            "http://web-1:9877/"
        );
        assert_eq!(
            page_url(at("[::]:9877"), true, "web-1"),
            "https://web-1:9877/"
        );
        assert_eq!(
            page_url(at("10.0.0.5:9877"), true, "web-1"),
            "https://10.0.0.5:9877/"
        );
        assert_eq!(
            page_url(at("[::1]:9877"), false, "web-1"),
            "http://[::1]:9877/"
        );
    }
}
