//! When to email: incidents, their grouping (`group_wait`), reminders
//! (`repeat_interval`) and resolution. Pure bookkeeping over observations;
//! the caller renders, caps, queues and persists what it decides.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::Mode;

/// A component as the engine sees it on one tick.
#[derive(Clone, Debug)]
pub struct Obs {
    pub component: String,
    pub kind: String,
    pub critical: bool,
    /// Unhealthy after its thresholds.
    pub unhealthy: bool,
    /// Checked, working and not unhealthy: an incident of it may close.
    pub recovered: bool,
    pub reason: Option<String>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub component: String,
    pub kind: String,
    pub critical: bool,
    pub since_ms: i64,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub resolved_ms: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Components,
    Pipeline,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: i64,
    pub scope: Scope,
    pub opened_ms: i64,
    /// Emails go out for it (false: opened while Alertmanager had it).
    pub notify: bool,
    pub members: Vec<Member>,
    /// Pipeline incidents: every reason seen while it was open.
    pub reasons: Vec<String>,
    /// The first email was decided.
    pub fired: bool,
    /// `Message-ID` of the first email: later ones reply to it.
    pub thread: Option<String>,
    pub last_email_ms: Option<i64>,
    pub emails: u32,
    pub resolved_ms: Option<i64>,
    /// An email decided and not queued yet: `max_per_hour` held it back.
    /// It goes once the cap allows, about the incident as it is then (a
    /// closed incident is kept, in the book and the store, until it went).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owed: Option<Owed>,
}

/// The email an incident is owed and since when (ms, wall clock: the
/// oldest held goes first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owed {
    pub kind: EmailKind,
    pub since_ms: i64,
}

impl Owed {
    /// What an incident is owed after `new` was decided on top of this:
    /// a firing (or watchdog) email never sent stays owed through the
    /// reminders (it tells the current state anyway); a resolution
    /// replaces whatever was owed (it says it fired if that was never told).
    fn merge(self, new: EmailKind) -> EmailKind {
        match (self.kind, new) {
            (EmailKind::Firing | EmailKind::Watchdog, EmailKind::Reminder) => self.kind,
            _ => new,
        }
    }
}

impl Incident {
    pub fn is_open(&self) -> bool {
        self.resolved_ms.is_none()
    }

    pub fn open_members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.resolved_ms.is_none())
    }

    pub fn critical(&self) -> bool {
        self.scope == Scope::Pipeline || self.members.iter().any(|m| m.critical)
    }

    /// Kept in the book (and loaded at start): open, or owed an email.
    pub fn kept(&self) -> bool {
        self.is_open() || self.owed.is_some()
    }
}

/// Which email an incident needs now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailKind {
    Firing,
    Reminder,
    Resolved,
    Watchdog,
    Test,
}

impl EmailKind {
    pub const ALL: [EmailKind; 5] = [
        EmailKind::Firing,
        EmailKind::Reminder,
        EmailKind::Resolved,
        EmailKind::Watchdog,
        EmailKind::Test,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EmailKind::Firing => "firing",
            EmailKind::Reminder => "reminder",
            EmailKind::Resolved => "resolved",
            EmailKind::Watchdog => "watchdog",
            EmailKind::Test => "test",
        }
    }

    pub fn from_name(s: &str) -> Option<EmailKind> {
        EmailKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An email to render and queue for an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intent {
    pub kind: EmailKind,
    pub incident: i64,
}

/// What one tick needs to know besides the components.
pub struct Policy {
    pub mode: Mode,
    pub can_email: bool,
    pub group_wait: Duration,
    pub repeat_interval: Option<Duration>,
    /// While the pipeline is down: since when (ms), i.e. when it last
    /// worked. A component that failed after that never reached
    /// Alertmanager through it.
    pub down_since: Option<i64>,
}

/// Every incident known (open ones, and those closed during this run).
#[derive(Default)]
pub struct Book {
    pub incidents: BTreeMap<i64, Incident>,
    pub next_id: i64,
    /// Changed since the last [`Book::take_dirty`]: to persist.
    dirty: BTreeSet<i64>,
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl Book {
    pub fn new(open: Vec<Incident>, next_id: i64) -> Book {
        let next_id = open
            .iter()
            .map(|i| i.id + 1)
            .max()
            .unwrap_or(1)
            .max(next_id);
        Book {
            incidents: open.into_iter().map(|i| (i.id, i)).collect(),
            next_id,
            dirty: BTreeSet::new(),
        }
    }

    pub fn take_dirty(&mut self) -> Vec<Incident> {
        let ids = std::mem::take(&mut self.dirty);
        let out = ids
            .iter()
            .filter_map(|id| self.incidents.get(id).cloned())
            .collect();
        // Closed incidents are persisted once, then forgotten here (once
        // the email they are owed went).
        self.incidents.retain(|_, i| i.kept());
        out
    }

    pub fn open(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values().filter(|i| i.is_open())
    }

    /// The open incidents and the closed ones still owed an email.
    pub fn kept(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values().filter(|i| i.kept())
    }

    /// Notes the emails decided on a tick as owed (merged with what each
    /// incident was owed already, see [`Owed::merge`]); the engine queues
    /// them from [`Book::due`] and settles each one it queued.
    pub fn owe(&mut self, intents: &[Intent], now: i64) {
        for intent in intents {
            if let Some(inc) = self.get_mut(intent.incident) {
                inc.owed = Some(match inc.owed {
                    Some(o) => Owed {
                        kind: o.merge(intent.kind),
                        since_ms: o.since_ms,
                    },
                    None => Owed {
                        kind: intent.kind,
                        since_ms: now,
                    },
                });
            }
        }
    }

    /// The emails owed, oldest first. Under `mode: off` (or without
    /// `email:`) none is due: those of open incidents wait, those of
    /// closed ones are dropped (off silences resolutions too).
    pub fn due(&mut self, p: &Policy) -> Vec<Intent> {
        let mut owed: Vec<(i64, i64, EmailKind)> = self
            .incidents
            .values()
            .filter_map(|i| i.owed.map(|o| (o.since_ms, i.id, o.kind)))
            .collect();
        if p.mode == Mode::Off || !p.can_email {
            for (_, id, _) in owed {
                if !self.incidents[&id].is_open()
                    && let Some(inc) = self.get_mut(id)
                {
                    inc.owed = None;
                }
            }
            return Vec::new();
        }
        owed.sort_unstable();
        owed.into_iter()
            .map(|(_, incident, kind)| Intent { kind, incident })
            .collect()
    }

    /// The email owed to `id` was queued (`now`), or given up (`None`).
    pub fn settle(&mut self, id: i64, queued: Option<(i64, &str)>) {
        if let Some(inc) = self.get_mut(id) {
            inc.owed = None;
            if let Some((now, message_id)) = queued {
                inc.last_email_ms = Some(now);
                inc.emails += 1;
                if inc.thread.is_none() {
                    inc.thread = Some(message_id.to_string());
                }
            }
        }
    }

    pub fn get_mut(&mut self, id: i64) -> Option<&mut Incident> {
        self.dirty.insert(id);
        self.incidents.get_mut(&id)
    }

    fn create(&mut self, scope: Scope, now: i64, notify: bool) -> &mut Incident {
        let id = self.next_id;
        self.next_id += 1;
        self.dirty.insert(id);
        self.incidents.entry(id).or_insert(Incident {
            id,
            scope,
            opened_ms: now,
            notify,
            members: Vec::new(),
            reasons: Vec::new(),
            fired: false,
            thread: None,
            last_email_ms: None,
            emails: 0,
            resolved_ms: None,
            owed: None,
        })
    }

    /// The pipeline: one `watchdog` email when it goes down, one `resolved`
    /// when it is confirmed back (`confirmed_ok`: every watched signal seen
    /// working since start, so a restart does not close an open outage).
    pub fn pipeline(
        &mut self,
        now: i64,
        down: bool,
        confirmed_ok: bool,
        reasons: &[String],
        p: &Policy,
    ) -> Vec<Intent> {
        let open = self
            .incidents
            .values()
            .find(|i| i.is_open() && i.scope == Scope::Pipeline)
            .map(|i| i.id);
        let mut out = Vec::new();
        match open {
            None if down && p.mode != Mode::Off => {
                let inc = self.create(Scope::Pipeline, now, p.can_email);
                inc.reasons = reasons.to_vec();
                inc.fired = true;
                inc.last_email_ms = Some(now);
                if inc.notify {
                    out.push(Intent {
                        kind: EmailKind::Watchdog,
                        incident: inc.id,
                    });
                }
            }
            Some(id) => {
                // Opened without email (no `email:` section then) and a
                // reload added one: the outage is told now, once.
                if down
                    && !self.incidents[&id].notify
                    && p.can_email
                    && p.mode != Mode::Off
                    && let Some(inc) = self.get_mut(id)
                {
                    inc.notify = true;
                    inc.last_email_ms = Some(now);
                    out.push(Intent {
                        kind: EmailKind::Watchdog,
                        incident: id,
                    });
                }
                let changed = self.incidents[&id].reasons.iter().collect::<BTreeSet<_>>()
                    != reasons.iter().collect::<BTreeSet<_>>();
                if !down && confirmed_ok {
                    let Some(inc) = self.get_mut(id) else {
                        return out;
                    };
                    inc.resolved_ms = Some(now);
                    // `mode: off` set by a reload meanwhile: no email at all.
                    if inc.notify && p.mode != Mode::Off {
                        out.push(Intent {
                            kind: EmailKind::Resolved,
                            incident: id,
                        });
                    }
                } else if down && changed {
                    // Keep every reason seen, for the resolution's account.
                    if let Some(inc) = self.get_mut(id) {
                        for r in reasons {
                            if !inc.reasons.contains(r) {
                                inc.reasons.push(r.clone());
                            }
                        }
                    }
                }
            }
            None => {}
        }
        out
    }

    /// `mode: fallback`: incidents opened unemailed because the pipeline
    /// still looked up, though it had already stopped working (a partition
    /// that cuts Prometheus off and fails the components together: the
    /// scrape watchdog tells only `scrape_watchdog` later). Alertmanager
    /// never had them, so they are emailed now, together in one incident
    /// as if grouped; their group_wait is over, it fires at once.
    fn adopt_unreported(&mut self, now: i64, p: &Policy) {
        let Some(since) = p.down_since else {
            return;
        };
        if p.mode != Mode::Fallback || !p.can_email {
            return;
        }
        let ids: Vec<i64> = self
            .open()
            .filter(|i| {
                i.scope == Scope::Components && !i.notify && !i.fired && i.opened_ms >= since
            })
            .map(|i| i.id)
            .collect();
        let Some((&host, rest)) = ids.split_first() else {
            return;
        };
        let mut moved = Vec::new();
        for id in rest {
            if let Some(inc) = self.get_mut(*id) {
                moved.extend(
                    inc.members
                        .iter()
                        .filter(|m| m.resolved_ms.is_none())
                        .cloned(),
                );
                // Its members live on in the host: this one ends unannounced.
                inc.resolved_ms = Some(now);
            }
        }
        if let Some(inc) = self.get_mut(host) {
            inc.notify = true;
            inc.members.extend(moved);
        }
    }

    /// Components: opens, groups, reminds and resolves.
    pub fn components(
        &mut self,
        now: i64,
        obs: &[Obs],
        pipeline_down: bool,
        p: &Policy,
    ) -> Vec<Intent> {
        let mut out = Vec::new();
        // Where each failing component is, looked up once per tick: an
        // outage of thousands must not cost a scan of every member per
        // component (seconds per tick, on the runtime that serves scrapes).
        let mut at: HashMap<String, (i64, usize)> = HashMap::new();
        for i in self
            .incidents
            .values()
            .filter(|i| i.is_open() && i.scope == Scope::Components)
        {
            for (n, m) in i.members.iter().enumerate() {
                if m.resolved_ms.is_none() {
                    at.entry(m.component.clone()).or_insert((i.id, n));
                }
            }
        }
        for o in obs {
            let open = at.get(&o.component).copied();
            match open {
                None if o.unhealthy => {
                    let notify = p.can_email
                        && match p.mode {
                            Mode::Always => true,
                            Mode::Fallback => pipeline_down,
                            Mode::Off => false,
                        };
                    let member = Member {
                        component: o.component.clone(),
                        kind: o.kind.clone(),
                        critical: o.critical,
                        since_ms: now,
                        reason: o.reason.clone(),
                        error: o.error.clone(),
                        resolved_ms: None,
                    };
                    let group = notify
                        .then(|| {
                            self.incidents
                                .values()
                                .find(|i| {
                                    i.is_open()
                                        && i.scope == Scope::Components
                                        && i.notify
                                        && !i.fired
                                        && now - i.opened_ms < ms(p.group_wait).max(1)
                                })
                                .map(|i| i.id)
                        })
                        .flatten();
                    let inc = match group.and_then(|id| self.get_mut(id)) {
                        Some(inc) => inc,
                        None => self.create(Scope::Components, now, notify),
                    };
                    inc.members.push(member);
                    at.insert(o.component.clone(), (inc.id, inc.members.len() - 1));
                }
                Some((id, n)) if o.recovered => {
                    if let Some(m) = self.get_mut(id).and_then(|i| i.members.get_mut(n)) {
                        m.resolved_ms = Some(now);
                    }
                    at.remove(&o.component);
                }
                Some((id, n)) if o.unhealthy => {
                    // Keep the latest reason and error for the reminders.
                    let stale = self.incidents[&id]
                        .members
                        .get(n)
                        .is_some_and(|m| m.reason != o.reason || m.error != o.error);
                    if stale && let Some(m) = self.get_mut(id).and_then(|i| i.members.get_mut(n)) {
                        m.reason = o.reason.clone();
                        m.error = o.error.clone();
                    }
                }
                _ => {}
            }
        }
        // Components removed by a reload: their incidents end.
        let names: BTreeSet<&str> = obs.iter().map(|o| o.component.as_str()).collect();
        let ids: Vec<i64> = self
            .open()
            .filter(|i| i.scope == Scope::Components)
            .map(|i| i.id)
            .collect();
        self.adopt_unreported(now, p);
        for id in ids {
            // Opened unemailed (fallback with the pipeline up, or no
            // `email:` then) and a reload set `mode: always`, which emails
            // every incident: this one is owed its firing email (group_wait
            // is over), then reminders and its resolution.
            if p.mode == Mode::Always
                && p.can_email
                && !self.incidents[&id].notify
                && let Some(inc) = self.get_mut(id)
            {
                inc.notify = true;
            }
            let inc = &self.incidents[&id];
            if inc
                .open_members()
                .any(|m| !names.contains(m.component.as_str()))
                && let Some(inc) = self.get_mut(id)
            {
                for m in inc.members.iter_mut() {
                    if !names.contains(m.component.as_str()) && m.resolved_ms.is_none() {
                        m.resolved_ms = Some(now);
                    }
                }
            }
            let inc = &self.incidents[&id];
            let all_resolved = inc.open_members().next().is_none();
            // A reload may have set `mode: off` while this incident was
            // open: it is still tracked (and resolves), but emails nothing
            // more; back to another mode, it carries on where it was.
            let quiet = p.mode == Mode::Off;
            if inc.notify && !inc.fired {
                if all_resolved {
                    // Recovered within group_wait: nothing to tell.
                    if let Some(inc) = self.get_mut(id) {
                        inc.resolved_ms = Some(now);
                    }
                } else if !quiet && now - inc.opened_ms >= ms(p.group_wait) {
                    if let Some(inc) = self.get_mut(id) {
                        inc.fired = true;
                        inc.last_email_ms = Some(now);
                    }
                    out.push(Intent {
                        kind: EmailKind::Firing,
                        incident: id,
                    });
                }
            } else if all_resolved {
                let fired = inc.fired && inc.notify && !quiet;
                if let Some(inc) = self.get_mut(id) {
                    inc.resolved_ms = Some(now);
                }
                if fired {
                    out.push(Intent {
                        kind: EmailKind::Resolved,
                        incident: id,
                    });
                }
            } else if inc.fired
                && inc.notify
                && !quiet
                && let Some(every) = p.repeat_interval
                && now - inc.last_email_ms.unwrap_or(inc.opened_ms) >= ms(every)
            {
                // Marked now: a reminder held back by the cap waits a whole interval.
                if let Some(inc) = self.get_mut(id) {
                    inc.last_email_ms = Some(now);
                }
                out.push(Intent {
                    kind: EmailKind::Reminder,
                    incident: id,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(name: &str, unhealthy: bool) -> Obs {
        Obs {
            component: name.into(),
            kind: "redis".into(),
            critical: true,
            unhealthy,
            recovered: !unhealthy,
            reason: unhealthy.then(|| "connect".into()),
            error: unhealthy.then(|| "refused".into()),
        }
    }

    fn policy(mode: Mode) -> Policy {
        Policy {
            mode,
            can_email: true,
            group_wait: Duration::from_secs(10),
            repeat_interval: Some(Duration::from_secs(60)),
            down_since: None,
        }
    }

    #[test]
    fn fallback_emails_only_while_the_pipeline_is_down() {
        let mut b = Book::new(vec![], 1);
        let p = policy(Mode::Fallback);
        // Pipeline up: an incident, never emailed.
        assert!(b.components(0, &[obs("a", true)], false, &p).is_empty());
        assert!(b.components(20_000, &[obs("a", true)], true, &p).is_empty());
        assert!(
            b.components(30_000, &[obs("a", false)], true, &p)
                .is_empty()
        );
        // Pipeline down: firing after group_wait, reminder, resolved.
        assert!(b.components(40_000, &[obs("a", true)], true, &p).is_empty());
        let k = |v: Vec<Intent>| v.iter().map(|i| i.kind).collect::<Vec<_>>();
        assert_eq!(
            k(b.components(50_000, &[obs("a", true)], true, &p)),
            vec![EmailKind::Firing]
        );
        let id = b.open().next().unwrap().id;
        b.get_mut(id).unwrap().last_email_ms = Some(50_000);
        assert!(
            b.components(100_000, &[obs("a", true)], true, &p)
                .is_empty()
        );
        assert_eq!(
            k(b.components(110_000, &[obs("a", true)], true, &p)),
            vec![EmailKind::Reminder]
        );
        assert_eq!(
            k(b.components(120_000, &[obs("a", false)], true, &p)),
            vec![EmailKind::Resolved]
        );
        assert_eq!(b.open().count(), 0);
    }

    #[test]
    fn failures_within_group_wait_share_one_email() {
        let mut b = Book::new(vec![], 1);
        let p = policy(Mode::Always);
        b.components(0, &[obs("a", true), obs("b", false)], false, &p);
        b.components(5_000, &[obs("a", true), obs("b", true)], false, &p);
        let out = b.components(10_000, &[obs("a", true), obs("b", true)], false, &p);
        assert_eq!(out.len(), 1);
        let inc = &b.incidents[&out[0].incident];
        assert_eq!(inc.members.len(), 2);
        // A later failure opens its own incident.
        b.components(
            11_000,
            &[obs("a", true), obs("b", true), obs("c", true)],
            false,
            &p,
        );
        assert_eq!(b.open().count(), 2);
    }

    #[test]
    fn a_flap_within_group_wait_sends_nothing() {
        let mut b = Book::new(vec![], 1);
        let p = policy(Mode::Always);
        b.components(0, &[obs("a", true)], false, &p);
        assert!(
            b.components(2_000, &[obs("a", false)], false, &p)
                .is_empty()
        );
        assert!(
            b.components(20_000, &[obs("a", false)], false, &p)
                .is_empty()
        );
        assert_eq!(b.open().count(), 0);
    }

    #[test]
    fn pipeline_resolves_only_when_confirmed() {
        let mut b = Book::new(vec![], 1);
        let p = policy(Mode::Fallback);
        let r = vec!["no scrape".to_string()];
        let out = b.pipeline(0, true, false, &r, &p);
        assert_eq!(out[0].kind, EmailKind::Watchdog);
        assert!(b.pipeline(1, true, false, &r, &p).is_empty());
        assert!(b.pipeline(2, false, false, &[], &p).is_empty());
        assert_eq!(
            b.pipeline(3, false, true, &[], &p)[0].kind,
            EmailKind::Resolved
        );
        // Off: nothing at all.
        let mut b = Book::new(vec![], 1);
        assert!(
            b.pipeline(0, true, false, &r, &policy(Mode::Off))
                .is_empty()
        );
    }

    #[test]
    fn mode_off_by_a_reload_silences_the_open_incidents() {
        let k = |v: Vec<Intent>| v.iter().map(|i| i.kind).collect::<Vec<_>>();
        let (on, off) = (policy(Mode::Always), policy(Mode::Off));
        let mut b = Book::new(vec![], 1);
        assert!(b.components(0, &[obs("a", true)], false, &on).is_empty());
        assert_eq!(
            k(b.components(10_000, &[obs("a", true)], false, &on)),
            vec![EmailKind::Firing]
        );
        // Off: no reminder when one is due, no resolution either.
        assert!(
            b.components(80_000, &[obs("a", true)], false, &off)
                .is_empty()
        );
        assert!(
            b.components(90_000, &[obs("a", false)], false, &off)
                .is_empty()
        );
        assert_eq!(b.open().count(), 0);
        // An incident still in group_wait when off comes fires nothing.
        b.components(100_000, &[obs("b", true)], false, &on);
        assert!(
            b.components(120_000, &[obs("b", true)], false, &off)
                .is_empty()
        );
        // Back on, it carries on: the firing email it owes.
        assert_eq!(
            k(b.components(121_000, &[obs("b", true)], false, &on)),
            vec![EmailKind::Firing]
        );
        // The pipeline: down under always, resolved under off: silent.
        let r = vec!["no scrape".to_string()];
        assert_eq!(
            k(b.pipeline(0, true, false, &r, &on)),
            vec![EmailKind::Watchdog]
        );
        assert!(b.pipeline(1, false, true, &[], &off).is_empty());
        assert!(b.open().all(|i| i.scope != Scope::Pipeline));
    }

    #[test]
    fn mode_always_by_a_reload_emails_the_incidents_already_open() {
        let k = |v: Vec<Intent>| v.iter().map(|i| i.kind).collect::<Vec<_>>();
        let mut b = Book::new(vec![], 1);
        // Fallback, pipeline up: tracked, not emailed.
        let fallback = policy(Mode::Fallback);
        assert!(
            b.components(0, &[obs("a", true)], false, &fallback)
                .is_empty()
        );
        assert!(
            b.components(20_000, &[obs("a", true)], false, &fallback)
                .is_empty()
        );
        // Always (Alertmanager retired): its firing email, once.
        let always = policy(Mode::Always);
        assert_eq!(
            k(b.components(21_000, &[obs("a", true)], false, &always)),
            vec![EmailKind::Firing]
        );
        assert!(
            b.components(22_000, &[obs("a", true)], false, &always)
                .is_empty()
        );
        assert_eq!(
            k(b.components(23_000, &[obs("a", false)], false, &always)),
            vec![EmailKind::Resolved]
        );
        // The pipeline down before `email:` was configured: told once it is.
        let mut mute = policy(Mode::Fallback);
        mute.can_email = false;
        let r = vec!["no scrape".to_string()];
        assert!(b.pipeline(0, true, false, &r, &mute).is_empty());
        assert_eq!(
            k(b.pipeline(1, true, false, &r, &fallback)),
            vec![EmailKind::Watchdog]
        );
        assert!(b.pipeline(2, true, false, &r, &fallback).is_empty());
        assert_eq!(
            k(b.pipeline(3, false, true, &[], &fallback)),
            vec![EmailKind::Resolved]
        );
    }

    #[test]
    fn an_outage_of_ten_thousand_components_is_a_short_tick() {
        // A partition fails 10,000 components at once: every tick looks
        // each one up, then they recover. Scanning the members per
        // component took 5.6 s a tick (debug build), on the runtime that
        // serves the scrapes; found by name, it is milliseconds.
        let p = policy(Mode::Always);
        let all = |unhealthy: bool| -> Vec<Obs> {
            (0..10_000)
                .map(|n| obs(&format!("api-{n:05}"), unhealthy))
                .collect()
        };
        let (down, up) = (all(true), all(false));
        let mut b = Book::new(vec![], 1);
        b.components(0, &down, false, &p);
        let started = std::time::Instant::now();
        let out = b.components(10_000, &down, false, &p);
        assert_eq!(out.len(), 1, "one firing email for the 10,000");
        assert_eq!(b.open().count(), 1);
        let resolved = b.components(20_000, &up, false, &p);
        assert_eq!(resolved[0].kind, EmailKind::Resolved);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        let inc = &b.incidents[&out[0].incident];
        assert!(inc.members.iter().all(|m| m.resolved_ms == Some(20_000)));
    }

    #[test]
    fn fallback_emails_the_failures_the_pipeline_never_carried() {
        // A partition: the last scrape at 1_000, then jobs and cache fail
        // (2_000, 3_000) while the pipeline still looks up (the scrape
        // watchdog needs its time); db had failed before, Alertmanager has it.
        let k = |v: Vec<Intent>| v.iter().map(|i| i.kind).collect::<Vec<_>>();
        let up = policy(Mode::Fallback);
        let mut b = Book::new(vec![], 1);
        b.components(0, &[obs("db", true)], false, &up);
        b.components(2_000, &[obs("db", true), obs("jobs", true)], false, &up);
        let all = [obs("db", true), obs("jobs", true), obs("cache", true)];
        assert!(b.components(3_000, &all, false, &up).is_empty());
        // Found down at 301_000, down since the last scrape: one email for
        // jobs and cache together, none for db.
        let down = Policy {
            down_since: Some(1_000),
            ..policy(Mode::Fallback)
        };
        let out = b.components(301_000, &all, true, &down);
        assert_eq!(k(out.clone()), vec![EmailKind::Firing]);
        let inc = &b.incidents[&out[0].incident];
        let names: Vec<&str> = inc.open_members().map(|m| m.component.as_str()).collect();
        assert_eq!(names, ["jobs", "cache"]);
        assert!(b.components(302_000, &all, true, &down).is_empty());
        assert_eq!(b.open().filter(|i| i.notify).count(), 1);
        assert_eq!(
            b.open().filter(|i| !i.notify).count(),
            1,
            "db stays Alertmanager's"
        );
        // Both recover: one resolution.
        let back = [obs("db", true), obs("jobs", false), obs("cache", false)];
        assert_eq!(
            k(b.components(303_000, &back, true, &down)),
            vec![EmailKind::Resolved]
        );
    }

    #[test]
    fn an_email_held_back_is_owed_until_it_goes_and_tells_the_state_then() {
        let k = |v: Vec<Intent>| v.iter().map(|i| i.kind).collect::<Vec<_>>();
        let p = policy(Mode::Always);
        let mut b = Book::new(vec![], 1);
        b.components(0, &[obs("a", true)], false, &p);
        let fired = b.components(10_000, &[obs("a", true)], false, &p);
        b.owe(&fired, 10_000);
        let id = fired[0].incident;
        // Held back (not settled): owed on every tick, nothing new decided.
        assert!(
            b.components(11_000, &[obs("a", true)], false, &p)
                .is_empty()
        );
        assert_eq!(k(b.due(&p)), vec![EmailKind::Firing]);
        // A reminder decided meanwhile: the firing email is still the one owed.
        let r = b.components(70_000, &[obs("a", true)], false, &p);
        assert_eq!(k(r.clone()), vec![EmailKind::Reminder]);
        b.owe(&r, 70_000);
        assert_eq!(k(b.due(&p)), vec![EmailKind::Firing]);
        // Across a restart (the store keeps it as JSON).
        let json: Vec<String> = b
            .take_dirty()
            .iter()
            .map(|i| serde_json::to_string(i).unwrap())
            .collect();
        let restored = json
            .iter()
            .map(|j| serde_json::from_str(j).unwrap())
            .collect();
        let mut b = Book::new(restored, 1);
        assert_eq!(
            b.incidents[&id].owed,
            Some(Owed {
                kind: EmailKind::Firing,
                since_ms: 10_000
            })
        );
        // It recovers before the hour made room: the resolution replaces
        // it, and the closed incident is kept until that went.
        let r = b.components(80_000, &[obs("a", false)], false, &p);
        assert_eq!(k(r.clone()), vec![EmailKind::Resolved]);
        b.owe(&r, 80_000);
        assert_eq!(b.take_dirty().len(), 1);
        assert_eq!(b.open().count(), 0);
        assert_eq!(b.kept().count(), 1);
        assert_eq!(k(b.due(&p)), vec![EmailKind::Resolved]);
        b.settle(id, Some((90_000, "<m@h>")));
        assert!(b.due(&p).is_empty());
        let last = b.take_dirty();
        assert_eq!(last[0].emails, 1);
        assert!(!last[0].kept(), "stored as done");
        assert!(b.incidents.is_empty(), "forgotten once it went");
    }

    #[test]
    fn held_back_emails_go_oldest_first_and_mode_off_drops_closed_ones() {
        let p = policy(Mode::Always);
        let mut b = Book::new(vec![], 1);
        b.components(0, &[obs("a", true)], false, &p);
        let a = b.components(10_000, &[obs("a", true)], false, &p);
        b.owe(&a, 10_000);
        b.components(20_000, &[obs("a", true), obs("b", true)], false, &p);
        let bb = b.components(30_000, &[obs("a", true), obs("b", true)], false, &p);
        b.owe(&bb, 30_000);
        let due = b.due(&p);
        assert_eq!(
            due.iter().map(|i| i.incident).collect::<Vec<_>>(),
            [a[0].incident, bb[0].incident]
        );
        // Off: nothing is due; b recovers (silently), its email is dropped,
        // a's waits for a mode that emails.
        let off = policy(Mode::Off);
        b.components(40_000, &[obs("a", true), obs("b", false)], false, &off);
        assert!(b.due(&off).is_empty());
        assert_eq!(b.incidents[&bb[0].incident].owed, None);
        assert_eq!(b.due(&p), vec![a[0]]);
    }

    #[test]
    fn a_restored_book_keeps_its_ids_and_incidents() {
        let mut b = Book::new(vec![], 7);
        let p = policy(Mode::Always);
        b.components(0, &[obs("a", true)], false, &p);
        let saved = b.take_dirty();
        let mut b2 = Book::new(saved, 1);
        assert_eq!(b2.next_id, 8);
        assert!(b2.components(10_000, &[obs("a", true)], false, &p).len() == 1);
        assert_eq!(b2.open().count(), 1);
    }
}
