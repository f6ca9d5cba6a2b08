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

/// A moment on both clocks. `wall` (ms since the epoch) is what incidents
/// record, emails show and the store keeps; `mono` (ms on the monotonic
/// clock, from any origin fixed for the run) is what every wait is measured
/// on (`group_wait`, reminders), so a step of the wall clock (NTP, a VM
/// restored from a snapshot) neither hastens nor delays an email. Across a
/// restart only wall times exist: [`Book::new`] places the restored
/// incidents on this run's monotonic clock by their wall-clock ages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub wall: i64,
    pub mono: i64,
}

impl Now {
    /// Where the wall time `ms` falls on this run's monotonic clock (a time
    /// "in the future", after the clock stepped back, counts as now).
    pub fn mono_of(self, ms: i64) -> i64 {
        self.mono - (self.wall - ms).max(0)
    }
}

/// An incident's moments on the monotonic clock (see [`Now`]).
#[derive(Clone, Copy, Debug)]
struct Timers {
    opened: i64,
    emailed: Option<i64>,
}

/// What one tick needs to know besides the components.
pub struct Policy {
    pub mode: Mode,
    pub can_email: bool,
    pub group_wait: Duration,
    pub repeat_interval: Option<Duration>,
    /// While the pipeline is down: since when (ms on the monotonic clock,
    /// [`Now::mono`]), i.e. when it last worked. A component that failed
    /// after that never reached Alertmanager through it.
    pub down_since: Option<i64>,
}

/// Every incident known (open ones, and those closed during this run).
#[derive(Default)]
pub struct Book {
    pub incidents: BTreeMap<i64, Incident>,
    pub next_id: i64,
    /// Changed since the last [`Book::take_dirty`]: to persist.
    dirty: BTreeSet<i64>,
    /// Each incident's moments on the monotonic clock.
    timers: HashMap<i64, Timers>,
}

/// `d` in ms, as the book counts (saturating).
pub(super) fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl Book {
    /// A book of the incidents restored (`open`, from the store or an HA
    /// peer), placed on this run's monotonic clock by their wall times.
    pub fn new(open: Vec<Incident>, next_id: i64, now: Now) -> Book {
        let next_id = open
            .iter()
            .map(|i| i.id + 1)
            .max()
            .unwrap_or(1)
            .max(next_id);
        let timers = open
            .iter()
            .map(|i| {
                let t = Timers {
                    opened: now.mono_of(i.opened_ms),
                    emailed: i.last_email_ms.map(|t| now.mono_of(t)),
                };
                (i.id, t)
            })
            .collect();
        Book {
            incidents: open.into_iter().map(|i| (i.id, i)).collect(),
            next_id,
            dirty: BTreeSet::new(),
            timers,
        }
    }

    /// How long ago incident `id` opened (monotonic ms).
    fn since_opened(&self, id: i64, now: Now) -> i64 {
        self.timers.get(&id).map_or(0, |t| now.mono - t.opened)
    }

    /// How long ago incident `id` was last emailed, or opened (monotonic ms).
    fn since_emailed(&self, id: i64, now: Now) -> i64 {
        self.timers
            .get(&id)
            .map_or(0, |t| now.mono - t.emailed.unwrap_or(t.opened))
    }

    /// Incident `id` is emailed now (decided, or queued after being owed).
    fn emailed(&mut self, id: i64, now: Now) {
        if let Some(inc) = self.get_mut(id) {
            inc.last_email_ms = Some(now.wall);
        }
        if let Some(t) = self.timers.get_mut(&id) {
            t.emailed = Some(now.mono);
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
        let incidents = &self.incidents;
        self.timers.retain(|id, _| incidents.contains_key(id));
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
    pub fn owe(&mut self, intents: &[Intent], now: Now) {
        for intent in intents {
            if let Some(inc) = self.get_mut(intent.incident) {
                inc.owed = Some(match inc.owed {
                    Some(o) => Owed {
                        kind: o.merge(intent.kind),
                        since_ms: o.since_ms,
                    },
                    None => Owed {
                        kind: intent.kind,
                        since_ms: now.wall,
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
    pub fn settle(&mut self, id: i64, queued: Option<(Now, &str)>) {
        if let Some(inc) = self.get_mut(id) {
            inc.owed = None;
            if let Some((_, message_id)) = queued {
                inc.emails += 1;
                if inc.thread.is_none() {
                    inc.thread = Some(message_id.to_string());
                }
            }
        }
        if let Some((now, _)) = queued {
            self.emailed(id, now);
        }
    }

    pub fn get_mut(&mut self, id: i64) -> Option<&mut Incident> {
        self.dirty.insert(id);
        self.incidents.get_mut(&id)
    }

    fn create(&mut self, scope: Scope, now: Now, notify: bool) -> &mut Incident {
        let id = self.next_id;
        self.next_id += 1;
        self.dirty.insert(id);
        self.timers.insert(
            id,
            Timers {
                opened: now.mono,
                emailed: None,
            },
        );
        self.incidents.entry(id).or_insert(Incident {
            id,
            scope,
            opened_ms: now.wall,
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
        now: Now,
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
                let (id, notify) = (inc.id, inc.notify);
                self.emailed(id, now);
                if notify {
                    out.push(Intent {
                        kind: EmailKind::Watchdog,
                        incident: id,
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
                    self.emailed(id, now);
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
                    inc.resolved_ms = Some(now.wall);
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
    fn adopt_unreported(&mut self, now: Now, p: &Policy) {
        let Some(since) = p.down_since else {
            return;
        };
        if p.mode != Mode::Fallback || !p.can_email {
            return;
        }
        let ids: Vec<i64> = self
            .open()
            .filter(|i| {
                i.scope == Scope::Components
                    && !i.notify
                    && !i.fired
                    && self.timers.get(&i.id).is_some_and(|t| t.opened >= since)
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
                inc.resolved_ms = Some(now.wall);
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
        now: Now,
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
                        since_ms: now.wall,
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
                                        && self.since_opened(i.id, now) < ms(p.group_wait).max(1)
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
                        m.resolved_ms = Some(now.wall);
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
                        m.resolved_ms = Some(now.wall);
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
                        inc.resolved_ms = Some(now.wall);
                    }
                } else if !quiet && self.since_opened(id, now) >= ms(p.group_wait) {
                    if let Some(inc) = self.get_mut(id) {
                        inc.fired = true;
                    }
                    self.emailed(id, now);
                    out.push(Intent {
                        kind: EmailKind::Firing,
                        incident: id,
                    });
                }
            } else if all_resolved {
                let fired = inc.fired && inc.notify && !quiet;
                if let Some(inc) = self.get_mut(id) {
                    inc.resolved_ms = Some(now.wall);
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
                && self.since_emailed(id, now) >= ms(every)
            {
                // Marked now; if the cap holds it back, it is owed (and the
                // next one counts from when it went).
                self.emailed(id, now);
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
mod tests;
