//! Refreshes on events: a probe's [`Trigger`] (a log line matching a rule
//! with `invalidates`, such as "sync completed") drops the named
//! components' cached results and checks them now, so that the first
//! health request after a sync sees fresh data. Debounced per component:
//! at most one refresh per `health.cache_ttl`; an event inside that time
//! schedules one refresh at its end, so the latest event is never lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::component::{Component, Components};
use crate::metrics::Cause;
use crate::probe::Trigger;
use crate::util::sync::lock;

/// The configuration in force and its components (swapped on reload).
pub type Current = Arc<dyn Fn() -> Arc<Components> + Send + Sync>;

/// When a component was last refreshed by an event, and whether a
/// refresh is already scheduled.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    last: Option<Instant>,
    pending: bool,
}

type Slots = Arc<Mutex<HashMap<String, Slot>>>;

/// Applies triggers until `stop` (or every sender is gone).
pub async fn run(
    mut rx: mpsc::UnboundedReceiver<Trigger>,
    current: Current,
    mut stop: watch::Receiver<bool>,
) {
    let slots: Slots = Arc::default();
    loop {
        let t = tokio::select! {
            t = rx.recv() => match t {
                Some(t) => t,
                None => return,
            },
            _ = stop.changed() => return,
        };
        let rt = current();
        let ttl = rt.config.health.cache_ttl;
        let targets = resolve(&rt, &t.targets);
        tracing::debug!(
            component = %t.from, rule = %t.rule,
            targets = ?targets.iter().map(|c| c.name()).collect::<Vec<_>>(),
            "Log event: refreshing components."
        );
        for c in targets {
            let now = Instant::now();
            let mut all = lock(&slots);
            let slot = all.entry(c.name().to_string()).or_default();
            if slot.pending {
                // The scheduled refresh comes after this event.
                continue;
            }
            match slot.last {
                Some(last) if now < last + ttl => {
                    slot.pending = true;
                    let (slots, current) = (slots.clone(), current.clone());
                    let name = c.name().to_string();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(last + ttl).await;
                        // The component as configured then (a reload may have replaced it).
                        if let Some(c) = current().component(&name) {
                            refresh(c.clone());
                        }
                        lock(&slots).insert(
                            name,
                            Slot {
                                last: Some(Instant::now()),
                                pending: false,
                            },
                        );
                    });
                }
                _ => {
                    slot.last = Some(now);
                    refresh(c);
                }
            }
        }
    }
}

/// The components named by `targets` (names, or `tag:T`), each once.
fn resolve(rt: &Components, targets: &[String]) -> Vec<Arc<Component>> {
    let mut out: Vec<Arc<Component>> = Vec::new();
    for t in targets {
        let found: Vec<&Arc<Component>> = match t.strip_prefix("tag:") {
            Some(tag) => rt.components.iter().filter(|c| c.has_tag(tag)).collect(),
            None => rt.component(t).into_iter().collect(),
        };
        for c in found {
            if !out.iter().any(|o| Arc::ptr_eq(o, c)) {
                out.push(c.clone());
            }
        }
    }
    out
}

/// Drops the component's cached result and checks it now.
fn refresh(c: Arc<Component>) {
    c.invalidate(Cause::Event);
    tokio::spawn(async move {
        c.run_check(Instant::now()).await;
    });
}
