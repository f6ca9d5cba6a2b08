//! The `performance` section of `/api/health` and the page: percentiles
//! across every component's latency window, each component's own, the
//! slowest recent checks and the regressions.
//!
//! Computed off the request path: a request takes the latest section
//! (serialized once) and, when it is older than [`FRESH_FOR`], starts one
//! recomputation in the background for the next requests. Only the very
//! first request waits for one. At 10,000 components a recomputation
//! gathers 2 million latencies and selects the percentiles in linear time.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::component::Components;
use crate::perf::{self, Sample, Stats};
use crate::util::sync::lock;
use crate::util::time::rfc3339;

/// How long a computed section answers requests before one of them starts
/// the next computation.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// One computed section.
pub struct Section {
    /// The JSON as `/api/health` embeds it.
    pub raw: Box<RawValue>,
    value: OnceLock<Arc<Value>>,
}

impl Section {
    pub fn of(v: &impl Serialize) -> Section {
        Section {
            raw: crate::util::json::raw_or_null(v, "the performance section"),
            value: OnceLock::new(),
        }
    }

    /// The section as a JSON value (the page reads it).
    pub fn value(&self) -> Arc<Value> {
        self.value
            .get_or_init(|| Arc::new(serde_json::from_str(self.raw.get()).unwrap_or(Value::Null)))
            .clone()
    }
}

/// The latest section and whether a recomputation runs.
#[derive(Default)]
pub struct Memo {
    latest: Option<(Instant, Arc<Section>)>,
    refreshing: bool,
    /// Bumped by [`Memo::clear`]: a recomputation started before keeps
    /// its section of the old components to itself.
    epoch: u64,
}

impl Memo {
    /// Forgets the section (a reload changed the components).
    pub fn clear(&mut self) {
        self.latest = None;
        self.epoch += 1;
    }
}

/// The section for `rt`'s components: the latest one, refreshed in the
/// background when older than [`FRESH_FOR`].
pub fn performance(memo: &Arc<Mutex<Memo>>, rt: &Arc<Components>) -> Arc<Section> {
    let mut m = lock(memo);
    match &m.latest {
        Some((at, p)) if at.elapsed() < FRESH_FOR => p.clone(),
        Some((_, p)) => {
            let p = p.clone();
            if !m.refreshing {
                m.refreshing = true;
                let (memo, rt, epoch) = (memo.clone(), rt.clone(), m.epoch);
                tokio::task::spawn_blocking(move || {
                    let next = Arc::new(compute(&rt));
                    let mut m = lock(&memo);
                    m.refreshing = false;
                    // A reload in between cleared the memo: this section
                    // is of the old components.
                    if m.epoch == epoch {
                        m.latest = Some((Instant::now(), next));
                    }
                });
            }
            p
        }
        None => {
            drop(m);
            let p = Arc::new(compute(rt));
            lock(memo).latest = Some((Instant::now(), p.clone()));
            p
        }
    }
}

#[derive(Serialize)]
struct View<'a> {
    #[serde(flatten)]
    stats: Overall,
    top_slowest: Vec<Value>,
    regressions: Vec<Value>,
    components: Per<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Overall {
    Stats(Stats),
    Empty { checks: u64 },
}

/// Each component's own statistics, in configuration order.
struct Per<'a>(Vec<(&'a str, Stats)>);

impl Serialize for Per<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = ser.serialize_map(Some(self.0.len()))?;
        for (name, st) in &self.0 {
            map.serialize_entry(name, st)?;
        }
        map.end()
    }
}

/// Gathers every window once (each locked only while it is read).
fn compute(rt: &Components) -> Section {
    let cfg = &rt.config.health.performance;
    let mut all: Vec<f64> = Vec::new();
    let mut own: Vec<f64> = Vec::new();
    let (mut checks, mut slow, mut critical) = (0, 0, 0);
    let mut per = Vec::with_capacity(rt.components.len());
    let mut regressions = Vec::new();
    let mut top = Slowest::new(cfg.top_slowest);
    for c in &rt.components {
        let w = lock(c.perf_window());
        own.clear();
        own.extend(w.samples().map(Sample::ms));
        all.extend_from_slice(&own);
        checks += w.total;
        slow += w.slow;
        critical += w.critical;
        for s in w.samples() {
            top.offer(c.name(), s);
        }
        if let Some((b, r)) = w.regression() {
            regressions.push(json!({ "component": c.name(), "baseline_p50_ms": perf::round2(b), "current_p50_ms": perf::round2(r) }));
        }
        if let Some(st) = perf::stats_of(&mut own, w.total, w.slow, w.critical, cfg) {
            per.push((c.name(), st));
        }
    }
    let stats = match perf::stats_of(&mut all, checks, slow, critical, cfg) {
        Some(st) => Overall::Stats(st),
        None => Overall::Empty { checks: 0 },
    };
    Section::of(&View {
        stats,
        top_slowest: top.into_json(),
        regressions,
        components: Per(per),
    })
}

/// The `n` slowest samples seen, slowest first.
pub struct Slowest<'a> {
    n: usize,
    top: Vec<(&'a str, Sample)>,
}

impl<'a> Slowest<'a> {
    pub fn new(n: usize) -> Self {
        Slowest {
            n,
            top: Vec::with_capacity(n + 1),
        }
    }

    pub fn offer(&mut self, component: &'a str, s: &Sample) {
        if self.n == 0 || (self.top.len() == self.n && s.ms() <= self.top[self.n - 1].1.ms()) {
            return;
        }
        let i = self.top.partition_point(|(_, t)| t.ms() >= s.ms());
        self.top.insert(i, (component, *s));
        self.top.truncate(self.n);
    }

    pub fn into_json(self) -> Vec<Value> {
        self.top
            .into_iter()
            .map(|(name, s)| json!({ "component": name, "ms": perf::round2(s.ms()), "at": rfc3339(s.at()) }))
            .collect()
    }
}
