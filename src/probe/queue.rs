//! Job-queue metrics shared by the Redis and MongoDB probes: one set of
//! families (`depwatch_queue_jobs{component,queue,state}`, the oldest
//! waiting / active ages, stalled jobs, paused) so that one dashboard and one
//! set of alert rules serve queues wherever they live. Not a probe kind: the
//! kinds read their queues and hand a [`Snapshot`] to [`Publisher`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};

use super::core::{Outcome, Status};
use crate::config::check::Checker;
use crate::config::units::{Dur, format_duration};
use crate::metrics::kit::GaugeF;

/// The state of a job, as BullMQ names them (`waiting-children` included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    Waiting,
    Active,
    Delayed,
    Prioritized,
    WaitingChildren,
    Paused,
    Completed,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Active => "active",
            JobState::Delayed => "delayed",
            JobState::Prioritized => "prioritized",
            JobState::WaitingChildren => "waiting-children",
            JobState::Paused => "paused",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }

    pub fn from_name(s: &str) -> Option<JobState> {
        Some(match s {
            "waiting" => JobState::Waiting,
            "active" => JobState::Active,
            "delayed" => JobState::Delayed,
            "prioritized" => JobState::Prioritized,
            "waiting-children" => JobState::WaitingChildren,
            "paused" => JobState::Paused,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }

    pub const NAMES: &[&str] = &[
        "waiting",
        "active",
        "delayed",
        "prioritized",
        "waiting-children",
        "paused",
        "completed",
        "failed",
    ];
}

impl prometheus_client::encoding::EncodeLabelValue for JobState {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobsLabels {
    component: String,
    queue: String,
    state: JobState,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub component: String,
    pub queue: String,
}

/// The queue families, registered once and shared by every kind.
pub struct Metrics {
    jobs: Family<JobsLabels, Gauge>,
    oldest_waiting: Family<QueueLabels, GaugeF>,
    oldest_active: Family<QueueLabels, GaugeF>,
    stalled: Family<QueueLabels, Gauge>,
    paused: Family<QueueLabels, Gauge>,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Metrics {
            jobs: Family::default(),
            oldest_waiting: Family::default(),
            oldest_active: Family::default(),
            stalled: Family::default(),
            paused: Family::default(),
        };
        r.register("queue_jobs", "Jobs in a queue, by state.", m.jobs.clone());
        r.register(
            "queue_oldest_waiting_age_seconds",
            "Age of the job that has waited longest (0 when none waits).",
            m.oldest_waiting.clone(),
        );
        r.register(
            "queue_oldest_active_age_seconds",
            "How long the longest-running active job has been running (0 when none runs).",
            m.oldest_active.clone(),
        );
        r.register(
            "queue_stalled_jobs",
            "Active jobs whose lock has expired: their worker is gone.",
            m.stalled.clone(),
        );
        r.register(
            "queue_paused",
            "Whether the queue is paused (1) or not (0).",
            m.paused.clone(),
        );
        m
    }
}

/// What one check read of one queue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub queue: String,
    pub counts: Vec<(JobState, u64)>,
    pub oldest_waiting_age: Option<f64>,
    pub oldest_active_age: Option<f64>,
    pub stalled: Option<u64>,
    pub paused: Option<bool>,
    /// Kind-specific extras shown in the health details (stream groups…).
    pub extra: Map<String, Value>,
}

impl Snapshot {
    pub fn count(&self, state: JobState) -> u64 {
        self.counts
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Jobs ready to run that no worker took yet. A paused queue has none:
    /// its waiting jobs are counted as paused, and its prioritized ones
    /// (BullMQ leaves them in their set) wait on purpose too.
    pub fn backlog(&self) -> u64 {
        if self.paused == Some(true) {
            return self.count(JobState::Waiting);
        }
        self.count(JobState::Waiting) + self.count(JobState::Prioritized)
    }

    pub fn details(&self) -> Value {
        let mut d = Map::new();
        for (s, n) in &self.counts {
            d.insert(s.as_str().into(), json!(n));
        }
        if let Some(a) = self.oldest_waiting_age {
            d.insert("oldest_waiting_age_seconds".into(), json!(round1(a)));
        }
        if let Some(a) = self.oldest_active_age {
            d.insert("oldest_active_age_seconds".into(), json!(round1(a)));
        }
        if let Some(s) = self.stalled {
            d.insert("stalled".into(), json!(s));
        }
        if let Some(p) = self.paused {
            d.insert("paused".into(), json!(p));
        }
        d.extend(self.extra.clone());
        Value::Object(d)
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The thresholds every queue accepts, whatever its store.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Thresholds {
    /// Backlog (waiting + prioritized) above which the component degrades.
    pub degraded_above: Option<u64>,
    pub unhealthy_above: Option<u64>,
    /// Age of the oldest waiting or active job above which the queue is stuck.
    pub stuck_after: Option<Duration>,
}

impl Thresholds {
    pub fn parse(
        degraded_above: Option<u64>,
        unhealthy_above: Option<u64>,
        stuck_after: Option<Dur>,
        path: &str,
        c: &Checker,
    ) -> Thresholds {
        if let (Some(d), Some(u)) = (degraded_above, unhealthy_above)
            && d >= u
        {
            c.problem(
                &format!("{path}.degraded_above"),
                format!("degraded_above {d} is not below unhealthy_above {u}"),
                "degraded is the earlier warning: make it the lower limit",
            );
        }
        if stuck_after.is_some_and(|d| d.0.is_zero()) {
            c.problem(
                &format!("{path}.stuck_after"),
                "stuck_after must be above zero",
                "e.g. 30m: a job waiting or running longer than that is stuck",
            );
        }
        Thresholds {
            degraded_above,
            unhealthy_above,
            stuck_after: stuck_after.map(|d| d.0),
        }
    }

    /// Raises the outcome's level for every threshold the snapshot crosses.
    pub fn judge(&self, s: &Snapshot, out: &mut Outcome) {
        let backlog = s.backlog();
        if let Some(limit) = self.unhealthy_above.filter(|l| backlog > *l) {
            out.raise(
                Status::Unhealthy,
                format!("queue {}: {backlog} jobs waiting, above {limit}", s.queue),
            );
        } else if let Some(limit) = self.degraded_above.filter(|l| backlog > *l) {
            out.raise(
                Status::Degraded,
                format!("queue {}: {backlog} jobs waiting, above {limit}", s.queue),
            );
        }
        if let Some(stuck) = self.stuck_after {
            let limit = stuck.as_secs_f64();
            // A paused queue waits on purpose: only its running jobs can be stuck.
            let waiting = s
                .oldest_waiting_age
                .filter(|_| s.paused != Some(true))
                .filter(|a| *a > limit);
            if let Some(a) = waiting {
                out.raise(
                    Status::Degraded,
                    format!(
                        "queue {}: oldest waiting job is {} old, stuck after {}",
                        s.queue,
                        human_age(a),
                        format_duration(stuck)
                    ),
                );
            }
            if let Some(a) = s.oldest_active_age.filter(|a| *a > limit) {
                out.raise(
                    Status::Degraded,
                    format!(
                        "queue {}: oldest active job has run for {}, stuck after {}",
                        s.queue,
                        human_age(a),
                        format_duration(stuck)
                    ),
                );
            }
        }
    }
}

fn human_age(secs: f64) -> String {
    format_duration(Duration::from_secs(secs.max(0.0).round() as u64))
}

/// Writes snapshots into the queue families for one component and drops
/// the series of queues that are gone (a discovered queue was deleted).
pub struct Publisher {
    component: String,
    metrics: Arc<Metrics>,
    published: Mutex<BTreeSet<String>>,
}

impl Publisher {
    pub fn new(component: &str, metrics: Arc<Metrics>) -> Self {
        Publisher {
            component: component.to_string(),
            metrics,
            published: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn publish(&self, snaps: &[Snapshot]) {
        let m = &self.metrics;
        let mut now = BTreeSet::new();
        for s in snaps {
            let q = QueueLabels {
                component: self.component.clone(),
                queue: s.queue.clone(),
            };
            for (state, n) in &s.counts {
                m.jobs
                    .get_or_create(&JobsLabels {
                        component: q.component.clone(),
                        queue: q.queue.clone(),
                        state: *state,
                    })
                    .set(i64::try_from(*n).unwrap_or(i64::MAX));
            }
            if let Some(a) = s.oldest_waiting_age {
                m.oldest_waiting.get_or_create(&q).set(a);
            }
            if let Some(a) = s.oldest_active_age {
                m.oldest_active.get_or_create(&q).set(a);
            }
            if let Some(n) = s.stalled {
                m.stalled
                    .get_or_create(&q)
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            if let Some(p) = s.paused {
                m.paused.get_or_create(&q).set(i64::from(p));
            }
            now.insert(s.queue.clone());
        }
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        for gone in published.difference(&now) {
            self.remove(gone);
        }
        *published = now;
    }

    fn remove(&self, queue: &str) {
        let m = &self.metrics;
        let q = QueueLabels {
            component: self.component.clone(),
            queue: queue.to_string(),
        };
        for state in JobState::NAMES
            .iter()
            .filter_map(|n| JobState::from_name(n))
        {
            m.jobs.remove(&JobsLabels {
                component: q.component.clone(),
                queue: q.queue.clone(),
                state,
            });
        }
        m.oldest_waiting.remove(&q);
        m.oldest_active.remove(&q);
        m.stalled.remove(&q);
        m.paused.remove(&q);
    }

    /// Drops every series of the component.
    pub fn forget(&self) {
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        for q in published.iter() {
            self.remove(q);
        }
        published.clear();
    }
}

/// The health details of a set of queues, keyed by queue name.
pub fn details(snaps: &[Snapshot]) -> Value {
    Value::Object(
        snaps
            .iter()
            .map(|s| (s.queue.clone(), s.details()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(waiting: u64, wait_age: f64, paused: bool) -> Snapshot {
        Snapshot {
            queue: "q".into(),
            counts: vec![(JobState::Waiting, waiting), (JobState::Active, 1)],
            oldest_waiting_age: Some(wait_age),
            oldest_active_age: Some(1.0),
            stalled: Some(0),
            paused: Some(paused),
            extra: Map::new(),
        }
    }

    fn level(t: &Thresholds, s: &Snapshot) -> Status {
        let mut o = Outcome::healthy(Map::new());
        t.judge(s, &mut o);
        o.level
    }

    #[test]
    fn depth_and_age_thresholds() {
        let t = Thresholds {
            degraded_above: Some(10),
            unhealthy_above: Some(100),
            stuck_after: Some(Duration::from_secs(60)),
        };
        assert_eq!(level(&t, &snap(10, 5.0, false)), Status::Healthy);
        assert_eq!(level(&t, &snap(11, 5.0, false)), Status::Degraded);
        assert_eq!(level(&t, &snap(101, 5.0, false)), Status::Unhealthy);
        assert_eq!(level(&t, &snap(1, 61.0, false)), Status::Degraded);
        // Paused on purpose: waiting is not stuck.
        assert_eq!(level(&t, &snap(1, 61.0, true)), Status::Healthy);
    }

    #[test]
    fn a_paused_queue_with_prioritized_jobs_has_no_backlog() {
        let t = Thresholds {
            degraded_above: Some(10),
            ..Thresholds::default()
        };
        let mut s = snap(0, 0.0, true);
        s.counts.push((JobState::Paused, 40));
        s.counts.push((JobState::Prioritized, 50));
        assert_eq!(s.backlog(), 0);
        assert_eq!(level(&t, &s), Status::Healthy);
        s.paused = Some(false);
        assert_eq!(level(&t, &s), Status::Degraded);
    }

    #[test]
    fn details_name_every_state() {
        let d = snap(3, 2.04, false).details();
        assert_eq!(d["waiting"], 3);
        assert_eq!(d["oldest_waiting_age_seconds"], 2.0);
        assert_eq!(d["paused"], false);
    }
}
