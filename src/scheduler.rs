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

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::component::Component;

/// The grid the offsets and phases of checks fall on.
pub const SLOT: Duration = Duration::from_millis(20);

pub struct Scheduler {
    tasks: HashMap<String, (Arc<Component>, JoinHandle<()>)>,
    shutdown_tx: watch::Sender<bool>,
}

impl Scheduler {
    pub fn new() -> Self {
        Scheduler {
            tasks: HashMap::new(),
            shutdown_tx: watch::channel(false).0,
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
                    let task = tokio::spawn(drive(c.clone(), self.shutdown_tx.subscribe()));
                    next.insert(c.name().to_string(), (c.clone(), task));
                }
            }
        }
        for (_, (_, task)) in self.tasks.drain() {
            task.abort();
        }
        self.tasks = next;
    }

    /// Stops every task: checks in flight get `grace` to end.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown_tx.send(true);
        let deadline = Instant::now() + grace;
        for (_, (_, mut task)) in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
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
