//! Drives every component on its own interval, with a random start offset
//! (jitter) so that many probes do not fire together. The timeout and the
//! thresholds are applied by [`Component::run_check`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::component::Component;

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
        Duration::from_nanos(fastrand::u64(0..jitter.as_nanos() as u64))
    };
    let mut next = Instant::now() + offset;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.changed() => return,
        }
        let started = Instant::now();
        // A check in flight is not cut by shutdown: `Scheduler::shutdown`
        // gives it a grace period.
        c.run_check(started).await;
        next += interval;
        if next < Instant::now() {
            // Fell behind (a suspended machine): skip the missed rounds.
            next = Instant::now() + interval;
        }
    }
}
