//! Drives every component on its own interval. The first check comes at a
//! random offset within the jitter (soon after start); later ones keep a
//! phase of their own within the interval, derived from the component's
//! name as Prometheus derives a target's scrape offset, so that thousands
//! of components spread over the interval instead of checking together.
//! A jitter of zero keeps every check on the start. Offsets and phases fall
//! on a grid of [`SLOT`]: the components whose checks land in one slot are
//! woken together, so that at thousands of components the runtime wakes a
//! few times a second for a batch rather than once for every check (each
//! wake-up is a context switch, which at 10,000 components cost more than
//! the checks themselves). The timeout and the thresholds are applied by
//! [`Component::run_check`].
//!
//! In the daemon the checks run on a thread of their own
//! ([`Scheduler::on_own_thread`]: `depwatch-checks`, a single-threaded
//! runtime), apart from the runtime that serves HTTP. On a shared
//! multi-threaded runtime each batch of answers woke the idle worker to
//! steal work, which parked again at once: at 10,000 components those
//! futex wake-ups and context switches were a third of depwatch's CPU. The
//! thread also keeps the checks' timings clear of the serving load: a
//! scrape that encodes for 30 ms does not delay the answers being timed.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::component::Component;
use crate::config::units::format_duration;

/// The grid the offsets and phases of checks fall on.
pub const SLOT: Duration = Duration::from_millis(20);

/// How long shutdown lets the tasks between checks end before it counts
/// the ones still checking.
const SETTLE: Duration = Duration::from_millis(200);

pub struct Scheduler {
    tasks: HashMap<String, (Arc<Component>, JoinHandle<()>)>,
    shutdown_tx: watch::Sender<bool>,
    /// Where the checks run: `None`, the runtime that calls `apply`.
    thread: Option<ChecksThread>,
}

/// The name of the checks' thread.
pub const THREAD: &str = "depwatch-checks";

/// A thread that drives a single-threaded runtime until dropped.
struct ChecksThread {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl ChecksThread {
    fn start() -> std::io::Result<ChecksThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(THREAD)
            // Blocking work of checks (DNS lookups, statvfs) runs on this
            // runtime's own pool; a hung mount holds one thread, not more.
            .max_blocking_threads(64)
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(THREAD.into())
            .spawn(move || {
                // Ends when the sender is dropped, whatever else is running.
                let _ = runtime.block_on(stopped);
                // Tasks left over were aborted by `Scheduler`; blocking work
                // still in flight (a hung statvfs) is not waited for.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(ChecksThread {
            handle,
            _stop: stop,
        })
    }
}

impl Scheduler {
    /// A scheduler whose checks run on the runtime that calls
    /// [`Scheduler::apply`] (tests drive it on a paused clock).
    pub fn new() -> Self {
        Scheduler {
            tasks: HashMap::new(),
            shutdown_tx: watch::channel(false).0,
            thread: None,
        }
    }

    /// A scheduler whose checks run on a thread of their own (see the
    /// module's documentation), started here.
    pub fn on_own_thread() -> std::io::Result<Self> {
        Ok(Scheduler {
            thread: Some(ChecksThread::start()?),
            ..Self::new()
        })
    }

    fn spawn(&self, c: &Arc<Component>) -> JoinHandle<()> {
        let task = drive(c.clone(), self.shutdown_tx.subscribe());
        match &self.thread {
            Some(t) => t.handle.spawn(task),
            None => tokio::spawn(task),
        }
    }

    /// Makes the running set match `components`: tasks of components that
    /// are gone or were replaced stop; new ones start. Unchanged components
    /// (the same `Arc`) keep their task and cadence.
    pub fn apply(&mut self, components: &[Arc<Component>]) {
        let mut next = HashMap::with_capacity(components.len());
        for c in components {
            match self.tasks.remove(c.name()) {
                Some((old, task)) if Arc::ptr_eq(&old, c) => {
                    next.insert(c.name().to_string(), (old, task));
                }
                other => {
                    if let Some((_, task)) = other {
                        task.abort();
                    }
                    let task = self.spawn(c);
                    next.insert(c.name().to_string(), (c.clone(), task));
                }
            }
        }
        for (_, (_, task)) in self.tasks.drain() {
            task.abort();
        }
        self.tasks = next;
    }

    /// Stops every task: checks in flight get `grace` to end, and the log
    /// says how many there are (a stop that waits for a partner that does
    /// not answer is not silent) and how many were cut. Then the checks'
    /// thread, if any, ends.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.shutdown_tx.send(true);
        let deadline = Instant::now() + grace;
        let mut tasks: Vec<JoinHandle<()>> = self.tasks.drain().map(|(_, (_, t))| t).collect();
        // A task between checks ends at once; what is left after a moment
        // is a check in flight.
        let settle = Instant::now() + SETTLE.min(grace);
        while tasks.iter().any(|t| !t.is_finished()) && Instant::now() < settle {
            tokio::time::sleep(SLOT).await;
        }
        let busy = tasks.iter().filter(|t| !t.is_finished()).count();
        if busy > 0 {
            tracing::info!(
                checks = busy,
                "Waiting for the checks in flight to end (at most {}).",
                format_duration(grace)
            );
        }
        let mut cut = 0;
        for task in &mut tasks {
            if tokio::time::timeout_at(deadline, &mut *task).await.is_err() {
                task.abort();
                cut += 1;
            }
        }
        if cut > 0 {
            tracing::warn!(
                checks = cut,
                "Checks still in flight after {} were stopped; they record no result.",
                format_duration(grace)
            );
        }
    }
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::new()
    }
}

async fn drive(c: Arc<Component>, mut shutdown: watch::Receiver<bool>) {
    let interval = c.cfg.interval;
    let jitter = c.cfg.jitter;
    let offset = if jitter.is_zero() {
        Duration::ZERO
    } else {
        on_grid(Duration::from_nanos(fastrand::u64(
            0..jitter.as_nanos() as u64,
        )))
    };
    let mut next = Instant::now() + offset;
    let phase = (!jitter.is_zero()).then(|| phase_of(c.name(), interval));
    let mut first = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.changed() => return,
        }
        let started = Instant::now();
        // A check in flight is not cut by shutdown: `Scheduler::shutdown`
        // gives it a grace period.
        c.run_check(started).await;
        match phase.filter(|_| std::mem::take(&mut first)) {
            // From the first check to the component's phase: never more
            // than an interval after it (no round is missed on the way).
            Some(phase) => next = on_phase(started + Duration::from_millis(1), phase, interval),
            None => next += interval,
        }
        if next < Instant::now() {
            // Fell behind (a suspended machine): skip the missed rounds.
            next = Instant::now() + interval;
        }
    }
}

/// The instant phases count from: the same for every component.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `d` rounded down to a whole number of [`SLOT`]s.
fn on_grid(d: Duration) -> Duration {
    let slot = SLOT.as_nanos();
    Duration::from_nanos((d.as_nanos() / slot * slot) as u64)
}

/// A component's offset within its interval, stable across restarts and
/// reloads (a hash of its name), on the grid of [`SLOT`].
fn phase_of(name: &str, interval: Duration) -> Duration {
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    let nanos = interval.as_nanos().max(1);
    on_grid(Duration::from_nanos(
        (u128::from(h.finish()) % nanos) as u64,
    ))
}

/// The first instant at or after `after` that is `phase` past a whole
/// number of intervals since [`epoch`].
fn on_phase(after: Instant, phase: Duration, interval: Duration) -> Instant {
    let start = epoch() + phase;
    if after <= start {
        return start;
    }
    let period = interval.as_nanos().max(1);
    let k = (after - start).as_nanos().div_ceil(period);
    start + Duration::from_nanos((k * period) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::metrics::kit::SeriesGate;
    use crate::probe::{BoxFuture, CheckResult, Outcome, Probe};
    use std::sync::Mutex;

    /// Notes the thread each check ran on.
    #[derive(Default)]
    struct Where(Mutex<Vec<Option<String>>>);

    impl Probe for Arc<Where> {
        fn check(&self) -> BoxFuture<'_, CheckResult> {
            Box::pin(async move {
                let name = std::thread::current().name().map(str::to_string);
                self.0.lock().unwrap().push(name);
                Ok(Outcome::healthy(serde_json::Map::new()))
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_run_on_their_own_thread_which_ends_with_the_scheduler() {
        let config = crate::config::builtin();
        let mut cfg = (*config.probes[0]).clone();
        cfg.interval = Duration::from_millis(50);
        cfg.jitter = Duration::ZERO;
        let seen = Arc::new(Where::default());
        let c = Arc::new(Component::new(
            Arc::new(cfg),
            Arc::new(seen.clone()),
            Arc::new(Metrics::new()),
            config.health.performance.clone(),
            SeriesGate::default(),
        ));
        let threads = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter(|t| {
                    let comm = t.as_ref().unwrap().path().join("comm");
                    std::fs::read_to_string(comm).unwrap_or_default().trim() == THREAD
                })
                .count()
        };
        let mut s = Scheduler::on_own_thread().expect("thread");
        s.apply(std::slice::from_ref(&c));
        tokio::time::sleep(Duration::from_millis(180)).await;
        assert_eq!(threads(), 1);
        s.shutdown(Duration::from_secs(1)).await;
        let seen = seen.0.lock().unwrap().clone();
        assert!(seen.len() >= 3, "checks every 50 ms: {seen:?}");
        assert!(
            seen.iter().all(|n| n.as_deref() == Some(THREAD)),
            "{seen:?}"
        );
        assert!(c.latest().up);
        // The thread ends once the scheduler is gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while threads() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the checks' thread is still there"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn phases_spread_over_the_interval_and_land_on_it() {
        let interval = Duration::from_secs(15);
        let mut seen = [0u32; 15];
        for i in 0..3000 {
            let p = phase_of(&format!("target-{i}"), interval);
            assert!(p < interval);
            assert_eq!(p.as_nanos() % SLOT.as_nanos(), 0, "{p:?}");
            seen[p.as_secs() as usize] += 1;
        }
        // Each second of the interval holds about a fifteenth of them.
        assert!(seen.iter().all(|n| (120..=280).contains(n)), "{seen:?}");
        assert_eq!(phase_of("a", interval), phase_of("a", interval));
        let phase = Duration::from_millis(2500);
        for after_ms in [0u64, 1, 2500, 2501, 17_499, 17_500, 17_501, 100_000] {
            let after = epoch() + Duration::from_millis(after_ms);
            let at = on_phase(after, phase, interval);
            assert!(at >= after && at - after < interval, "{after_ms}");
            let since = (at - epoch()).as_millis();
            assert_eq!(since % 15_000, 2_500, "{after_ms}");
        }
    }
}
