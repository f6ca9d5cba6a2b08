//! `kind: log` — metrics from JSON logs, the way mtail does it but
//! JSON-native: a background task per probe tails `files:` (see [`tail`]),
//! each line goes through the probe's rules (see [`rules`]), and the rules'
//! counters, duration histograms and values are exposed as
//! `depwatch_log_<rule>_total`, `depwatch_log_<rule>_duration_seconds` and
//! `depwatch_log_<rule>_<value>`. The check only reports state: lines,
//! files, per-rule latency statistics and slowest operations, and
//! `stuck_after` (no matching line for too long degrades the component).

pub mod categories;
mod collector;
mod conditions;
mod config;
pub mod godur;
mod groups;
mod labels;
pub mod replay;
pub mod rules;
mod scan;
mod state;
pub mod stats;
pub mod tail;
pub mod unseen;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::core::{
    BoxFuture, BuildCtx, BuildError, CheckError, CheckResult, FamiliesOf, Outcome, Probe, Reason,
    Status,
};
use crate::config::units::format_duration;
use crate::util::pool::Workers;
use crate::util::sync::lock;
use collector::Collector;
pub use config::{DurUnit, FamilyType, RuleSpec, Spec, StartAt, Test, ValueKind};
use rules::{Engine, LineKind};
use state::{Checkpointer, Counts, Lease, Live, ProbeState, TailView};
use tail::{OffsetStore, Saved, Tailer};

/// The default buckets of the check duration: a log check reads what the
/// tailer gathered, in microseconds.
pub const BUCKETS: &[f64] = crate::probe::core::FAST_BUCKETS;

/// The log kind's metrics: one collector over every live log probe.
pub struct Metrics {
    live: Arc<Live>,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Self {
        let live = Arc::new(Live::default());
        r.register_collector(Box::new(Collector(live.clone())));
        Metrics { live }
    }
}

// ---------------------------------------------------------------- the probe

pub struct LogProbe {
    spec: Arc<Spec>,
    state: Arc<ProbeState>,
    live: Arc<Live>,
    id: u64,
    started: Instant,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Saves the offsets when the probe goes, should the tailer not get to.
    _checkpoint: Arc<Checkpointer>,
    /// The fields never seen that were logged (rule, field): once each.
    told: Mutex<Vec<(String, String)>>,
}

pub fn build<F: FamiliesOf<Metrics> + ?Sized>(
    spec: &Spec,
    ctx: &BuildCtx<'_, F>,
) -> Result<LogProbe, BuildError> {
    let live = FamiliesOf::<Metrics>::families(ctx.metrics).live.clone();
    // Rule families are shared by name across probes: their types must agree.
    let mine = spec.families();
    for (_, other) in lock(&live.probes).iter() {
        if other.component == ctx.name {
            continue;
        }
        let theirs = lock(&other.engine)
            .rules
            .iter()
            .flat_map(|r| r.spec.families())
            .collect::<Vec<_>>();
        for (name, ty) in &mine {
            if theirs.iter().any(|(n, t)| n == name && t != ty) {
                return Err(BuildError {
                    name: ctx.name.to_string(),
                    message: format!(
                        "depwatch_log_{name} is also made by probe {} with another type: rename the rule's metric",
                        other.component
                    ),
                });
            }
        }
    }
    let store: Arc<dyn OffsetStore> = ctx.store.clone();
    let state = Arc::new(ProbeState {
        component: ctx.name.to_string(),
        engine: Mutex::new(Engine::new(spec)),
        triggers: ctx.triggers.cloned(),
        counts: Counts::default(),
        view: Mutex::new(TailView::default()),
    });
    let checkpoint = Arc::new(Checkpointer {
        component: ctx.name.to_string(),
        store: store.clone(),
        latest: Mutex::new((Saved::default(), false)),
    });
    let id = live.next_id.fetch_add(1, Ordering::Relaxed);
    lock(&live.probes).push((id, state.clone()));
    let (stop, stop_rx) = watch::channel(false);
    let spec = Arc::new(spec.clone());
    // Built inside the runtime (always, in depwatch): tailing starts now.
    let task = tokio::runtime::Handle::try_current().ok().map(|rt| {
        let lease = Lease::of(&live, ctx.name);
        rt.spawn(tail_task(
            spec.clone(),
            state.clone(),
            store,
            checkpoint.clone(),
            lease,
            stop_rx,
        ))
    });
    Ok(LogProbe {
        spec,
        state,
        live,
        id,
        started: Instant::now(),
        stop,
        task: Mutex::new(task),
        _checkpoint: checkpoint,
        told: Mutex::new(Vec::new()),
    })
}

/// How often offsets are written while lines keep coming.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// The engine lock is released this often during a long read, so that a
/// scrape never waits long.
const LINES_PER_LOCK: u32 = 4096;

/// Reads new lines into the engine; returns the tailer and what it saw.
fn poll_into(tailer: &mut Tailer, state: &ProbeState) -> tail::PollStats {
    let mut guard: Option<MutexGuard<'_, Engine>> = None;
    let mut since_lock = 0u32;
    let counts = &state.counts;
    let t0 = Instant::now();
    let unix0 = crate::util::time::unix_now();
    let stats = tailer.poll(&mut |line| {
        let Some(line) = line else {
            counts.invalid.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if since_lock >= LINES_PER_LOCK {
            guard = None;
            since_lock = 0;
        }
        since_lock += 1;
        let engine = guard.get_or_insert_with(|| lock(&state.engine));
        let now = Instant::now();
        let unix = unix0 + now.duration_since(t0).as_secs_f64();
        // Counted under the engine lock, so that readers holding it see
        // line counts and rule series that agree.
        let counter = match engine.line(line, now, unix) {
            LineKind::Matched => &counts.matched,
            LineKind::Unmatched => &counts.unmatched,
            LineKind::Invalid => &counts.invalid,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    });
    drop(guard);
    if stats.read_bytes > 0 || stats.rotations > 0 || stats.truncations > 0 {
        crate::metrics::snapshot::changed();
    }
    if let Some(tx) = &state.triggers {
        // One event per rule and poll, however many lines matched.
        for (rule, targets) in lock(&state.engine).take_fired() {
            let _ = tx.send(super::core::Trigger {
                from: state.component.clone(),
                rule,
                targets,
            });
        }
    }
    counts
        .read_bytes
        .fetch_add(stats.read_bytes, Ordering::Relaxed);
    counts
        .rotations
        .fetch_add(stats.rotations, Ordering::Relaxed);
    counts
        .truncations
        .fetch_add(stats.truncations, Ordering::Relaxed);
    let mut v = lock(&state.view);
    v.polled = true;
    v.files = tailer.view();
    v.matched_paths = tailer.matched_paths;
    v.matched_dir.clone_from(&tailer.matched_dir);
    if v.error != tailer.last_error {
        if let Some(e) = &tailer.last_error {
            tracing::warn!(component = %state.component, kind = "log", error = %e, "Cannot read a log file.");
        }
        v.error = tailer.last_error.clone();
    }
    stats
}

/// The threads that poll log files, shared by every log probe: a poll
/// reads what was appended since the last one, so one per core (at least
/// two) keeps up, and a reload that starts hundreds of tailers together
/// queues their polls instead of starting a thread for each (see
/// [`Workers`]).
static POLLERS: Workers = Workers::new("depwatch-poll", 0, 65_536);

async fn tail_task(
    spec: Arc<Spec>,
    state: Arc<ProbeState>,
    store: Arc<dyn OffsetStore>,
    checkpoint: Arc<Checkpointer>,
    mut lease: Lease,
    mut stop: watch::Receiver<bool>,
) {
    lease.acquire().await;
    if *stop.borrow() {
        return;
    }
    let component = state.component.clone();
    let saved = match store.load(&component).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(component = %component, kind = "log", error = %e, "Cannot load log offsets; starting as configured by start_at.");
            None
        }
    };
    if let Some(s) = &saved {
        *lock(&checkpoint.latest) = (s.clone(), false);
    }
    let mut tailer = Tailer::new(spec.files.clone(), spec.start_at, spec.max_line_bytes);
    tailer.restore(saved);
    let mut last_save = Instant::now();
    loop {
        // A stopped probe reads nothing more: its series are gone, and its
        // successor resumes from the offsets saved below.
        if *stop.borrow() {
            break;
        }
        let st = state.clone();
        let polled = POLLERS
            .run(move || {
                let stats = poll_into(&mut tailer, &st);
                (tailer, stats)
            })
            .await;
        let (t, stats) = match polled {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(component = %component, kind = "log", error = %e, "Log tailer stopped: a poll did not finish.");
                return;
            }
        };
        tailer = t;
        checkpoint.update(tailer.marks());
        if last_save.elapsed() >= CHECKPOINT_EVERY {
            let cp = checkpoint.clone();
            cp.flush();
            last_save = Instant::now();
        }
        if stats.more {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(spec.poll_interval) => {}
            _ = stop.changed() => {}
        }
    }
    // Committed before the lease is released: a successor (a reload) loads
    // them and starts from here.
    checkpoint.flush();
    store.committed().await;
}

/// Valid lines read before a field no line has is logged as a warning
/// (in `/api/health` from the fifth).
const WARN_UNSEEN_AFTER: u64 = 1000;

impl LogProbe {
    /// Logs, once each, the fields a rule tests that many lines never had.
    fn warn_unseen(&self, unseen: &[unseen::Unseen]) {
        let mut told = lock(&self.told);
        for u in unseen.iter().filter(|u| u.lines >= WARN_UNSEEN_AFTER) {
            if !told.iter().any(|(r, f)| *r == u.rule && *f == u.field) {
                tracing::warn!(component = %self.state.component, kind = "log", "{}", u.message());
                told.push((u.rule.clone(), u.field.clone()));
            }
        }
    }

    fn report(&self) -> CheckResult {
        let now = Instant::now();
        // Held while the counts are read: they agree with the rules' numbers.
        let mut e = lock(&self.state.engine);
        let c = &self.state.counts;
        let mut d = Map::new();
        let mut lines = json!({
            "matched": c.matched.load(Ordering::Relaxed),
            "unmatched": c.unmatched.load(Ordering::Relaxed),
            "invalid": c.invalid.load(Ordering::Relaxed),
        });
        if e.repaired > 0 {
            // Counted above; bytes that were not UTF-8 read as U+FFFD.
            lines["not_utf8"] = json!(e.repaired);
        }
        d.insert("lines".into(), lines);
        let (polled, error, matched_paths, matched_dir) = {
            let v = lock(&self.state.view);
            d.insert(
                "files".into(),
                Value::Array(
                    v.files
                        .iter()
                        .map(|f| {
                            json!({
                                "path": f.path, "offset": f.offset, "size": f.size,
                                "lag_bytes": f.size.saturating_sub(f.offset),
                                "rotated": f.draining,
                            })
                        })
                        .collect(),
                ),
            );
            (
                v.polled,
                v.error.clone(),
                v.matched_paths,
                v.matched_dir.clone(),
            )
        };
        // Degradations: stuck rules, fields no line has.
        let mut degraded = Vec::new();
        let mut levels = Vec::new();
        let mut rules_d = Map::new();
        let found = e.unseen();
        {
            for r in &mut e.rules {
                let mut rd = Map::new();
                rd.insert("matched".into(), json!(r.matched));
                rd.insert(
                    "last_match".into(),
                    r.last_match_unix.map_or(Value::Null, |t| {
                        json!(crate::util::time::rfc3339(
                            std::time::UNIX_EPOCH + Duration::from_secs_f64(t)
                        ))
                    }),
                );
                if r.overflowed > 0 {
                    rd.insert("label_overflows".into(), json!(r.overflowed));
                }
                if r.bad_durations > 0 {
                    rd.insert("bad_durations".into(), json!(r.bad_durations));
                }
                if r.bad_values > 0 {
                    rd.insert("bad_values".into(), json!(r.bad_values));
                }
                let bins = r.bins();
                if let Some(l) = &mut r.latency {
                    rd.insert("latency".into(), l.summary_with(now, bins.as_ref()));
                }
                if let Some(c) = r.categories(now) {
                    rd.insert("categories".into(), c);
                }
                levels.extend(r.judge(now));
                degraded.extend(r.misses());
                if let Some(s) = &mut r.slowest {
                    rd.insert("slowest".into(), s.summary(now));
                }
                if let Some(limit) = r.spec.stuck_after {
                    let since = r.last_match.unwrap_or(self.started);
                    let quiet = now.saturating_duration_since(since);
                    if quiet > limit {
                        degraded.push(format!(
                            "rule {}: no matching line for {} (stuck_after {})",
                            r.spec.metric,
                            format_duration(Duration::from_secs(quiet.as_secs())),
                            format_duration(limit)
                        ));
                    }
                }
                rules_d.insert(r.spec.metric.clone(), Value::Object(rd));
            }
        }
        drop(e);
        // The hints read a line and compare names: off the engine's lock.
        let unseen = found.map(unseen::Found::hinted).unwrap_or_default();
        for u in &unseen {
            if let Some(Value::Object(rd)) = rules_d.get_mut(&u.rule) {
                let never = rd
                    .entry("fields_never_seen")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = never {
                    list.push(json!({ "field": u.field, "hint": u.hint }));
                }
            }
        }
        self.warn_unseen(&unseen);
        d.insert("rules".into(), Value::Object(rules_d));
        if let Some(e) = error {
            let mut err = CheckError::new(Reason::Io, e);
            err.details = d.into();
            return Err(err);
        }
        let mut out = Outcome::healthy(d);
        if polled && matched_paths == 0 {
            // `files: [/var/log/app]` names a directory, whose files it
            // does not read: say so (the tailer saw it, off this path).
            let hint = matched_dir
                .map(|d| {
                    let d = d.display().to_string();
                    let d = d.strip_suffix('/').filter(|d| !d.is_empty()).unwrap_or(&d);
                    format!(" ({d} is a directory: name its files, for example {d}/*.log)")
                })
                .unwrap_or_default();
            out.raise(
                Status::Degraded,
                format!("no file matches {}{hint}", self.spec.files.join(", ")),
            );
        }
        for s in degraded {
            out.raise(Status::Degraded, s);
        }
        for (level, why) in levels {
            out.raise(level, why);
        }
        Ok(out)
    }
}

impl Probe for LogProbe {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        // Tailing runs on its own; the check only reads its state.
        Box::pin(async move { self.report() })
    }

    fn forget(&self) {
        let _ = self.stop.send(true);
        lock(&self.live.probes).retain(|(id, _)| *id != self.id);
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.stop.send(true);
            // The tailer ends its read and saves its offsets before it ends.
            let task = lock(&self.task).take();
            if let Some(task) = task {
                let _ = task.await;
            }
        })
    }
}

impl Drop for LogProbe {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        lock(&self.live.probes).retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use super::*;

    /// A probe spec from the YAML of its own keys (files default to x.log).
    pub fn spec_of(yaml: &str) -> Spec {
        let src = format!(
            "probes:\n  - name: t\n    kind: log\n    files: [x.log]\n{}",
            indent(yaml)
        );
        let cfg = crate::config::from_str(&src, "t.yml", None, Path::new("/tmp"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        match &cfg.probes[0].spec {
            super::super::ProbeSpec::Log(s) => s.clone(),
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        }
    }

    fn indent(s: &str) -> String {
        s.lines().map(|l| format!("    {l}\n")).collect()
    }

    fn problems(yaml: &str) -> String {
        let src = format!(
            "probes:\n  - name: t\n    kind: log\n    files: [x.log]\n{}",
            indent(yaml)
        );
        match crate::config::from_str(&src, "t.yml", None, Path::new("/tmp"), &|_| None) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn leases_of_removed_probes_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::Store::open(dir.path()).unwrap());
        let kinds = crate::probe::KindMetrics::register(
            &mut Registry::default(),
            &mut crate::metrics::lines::Registry::default(),
        );
        let gate = crate::metrics::kit::SeriesGate::default();
        let spec = spec_of("rules:\n  - metric: hits\n");
        let build_all = |generation: usize| -> Vec<LogProbe> {
            (0..5)
                .map(|i| {
                    let name = format!("p{i}-{generation}");
                    let ctx = BuildCtx {
                        name: &name,
                        metrics: &kinds,
                        store: &store,
                        timeout: Duration::from_secs(1),
                        gate: &gate,
                        triggers: None,
                    };
                    build(&spec, &ctx).unwrap()
                })
                .collect()
        };
        let mut probes = build_all(0);
        for generation in 1..=10 {
            // A reload that renames every probe: the old ones stop and go.
            let next = build_all(generation);
            for p in probes {
                p.forget();
                p.shutdown().await;
            }
            probes = next;
        }
        let leases = lock(&kinds.log.live.leases).len();
        assert_eq!(leases, 5, "one lease per live probe");
        for p in probes {
            p.shutdown().await;
        }
        store.close().await.unwrap();
    }

    #[test]
    fn parses_the_spec_example() {
        let s = spec_of(
            "format: json\nrules:\n  - metric: sync_operations\n    match: { message: \"Sync operation completed\" }\n    labels: [operation, status]\n    duration: { field: duration }\n",
        );
        assert_eq!(s.files, vec!["/tmp/x.log"]);
        assert_eq!(s.start_at, StartAt::End);
        let r = &s.rules[0];
        assert_eq!(
            r.labels,
            vec![
                ("operation".into(), "operation".into()),
                ("status".into(), "status".into())
            ]
        );
        assert_eq!(r.duration.as_ref().map(|d| d.unit), Some(DurUnit::Ms));
        assert_eq!(
            s.families(),
            vec![
                ("sync_operations".into(), FamilyType::Counter),
                (
                    "sync_operations_duration_seconds".into(),
                    FamilyType::Histogram
                )
            ]
        );
    }

    #[test]
    fn reports_every_problem_with_position() {
        let p = problems(
            "format: logfmt\nrules:\n  - metric: Bad-Name\n    match: { a: { regex: '(' } }\n    labels: [le, user.id, user.id]\n    duration: { field: d, buckets: [1, 0.5] }\n  - metric: lines\n    slow_above: 1s\n",
        );
        for want in [
            "t.yml:5:5: probes[0].format: unsupported format `logfmt`",
            "probes[0].rules[0].metric: invalid metric name `Bad-Name`",
            "probes[0].rules[0].match.a: invalid regex",
            "label `le` is reserved",
            "duplicate label `user_id`",
            "probes[0].rules[0].duration.buckets: buckets must be positive and increasing",
            "probes[0].rules[1].metric: depwatch_log_lines is one of depwatch's own metrics",
            "probes[0].rules[1].slow_above: slow_above needs a duration",
        ] {
            assert!(p.contains(want), "missing {want:?} in:\n{p}");
        }
        assert!(
            problems("rules:\n  - metric: a\n    match: { b: { nope: 1 } }\n")
                .contains("probes[0].rules[0].match.b: unknown test `nope`")
        );
        assert!(problems("rules:\n  - metric: a_total\n").contains("ends in _total"));
        assert!(problems("rules:\n  - metric: a\n  - metric: a\n").contains("also made by"));
    }
}
