//! What a log probe shares with the collector, the check and replay-log:
//! its counters, what the tailer last saw, its offsets checkpoint, and the
//! kind's process-wide list of live probes with one lease per component.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::rules::Engine;
use super::tail::{self, OffsetStore, Saved};
use crate::util::sync::lock;

/// A probe's counters, read by the collector and the check.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) matched: AtomicU64,
    pub(super) unmatched: AtomicU64,
    pub(super) invalid: AtomicU64,
    pub(super) read_bytes: AtomicU64,
    pub(super) rotations: AtomicU64,
    pub(super) truncations: AtomicU64,
}

/// What the tailer last saw, for the check.
#[derive(Debug, Default)]
pub(super) struct TailView {
    pub(super) polled: bool,
    pub(super) files: Vec<tail::FileView>,
    pub(super) matched_paths: usize,
    pub(super) matched_dir: Option<std::path::PathBuf>,
    pub(super) error: Option<String>,
}

/// One live log probe, as the collector and the check see it.
#[derive(Debug)]
pub(super) struct ProbeState {
    pub(super) component: String,
    pub(super) engine: Mutex<Engine>,
    pub(super) counts: Counts,
    pub(super) view: Mutex<TailView>,
    /// Where rules with `invalidates` send their events.
    pub(super) triggers: Option<crate::probe::core::Triggers>,
}

/// Saves the latest offsets when the last holder goes (shutdown, reload):
/// whatever was counted is recorded, so a restart neither recounts nor skips.
pub(super) struct Checkpointer {
    pub(super) component: String,
    pub(super) store: Arc<dyn OffsetStore>,
    pub(super) latest: Mutex<(Saved, bool)>,
}

impl Checkpointer {
    pub(super) fn update(&self, files: Vec<tail::FileMark>) {
        let mut l = lock(&self.latest);
        if l.0.files != files {
            l.0.files = files;
            l.1 = true;
        }
    }

    /// Queues the offsets for the state store if they changed since the
    /// last save (write failures are the store's to count and show).
    pub(super) fn flush(&self) {
        let mut l = lock(&self.latest);
        if !l.1 {
            return;
        }
        l.0.saved_at = crate::util::time::unix_now();
        self.store.save(&self.component, &l.0);
        l.1 = false;
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The kind's process-wide state: live probes (for the rule metric
/// families, whose names come from configuration) and one lease per
/// component, so that the tailer of a reloaded probe starts only after its
/// predecessor saved its offsets.
#[derive(Debug, Default)]
pub(super) struct Live {
    pub(super) probes: Mutex<Vec<(u64, Arc<ProbeState>)>>,
    pub(super) leases: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub(super) next_id: AtomicU64,
}

/// A tailer's hold on its component's lease. The last holder takes the
/// entry out of `Live::leases`, so the names of removed components do not
/// pile up over reloads.
pub(super) struct Lease {
    pub(super) live: Arc<Live>,
    pub(super) component: String,
    pub(super) lock: Arc<tokio::sync::Mutex<()>>,
    pub(super) held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Lease {
    /// The component's lease (one per name, shared with a predecessor).
    pub(super) fn of(live: &Arc<Live>, component: &str) -> Lease {
        let lock = lock(&live.leases)
            .entry(component.to_string())
            .or_default()
            .clone();
        Lease {
            live: live.clone(),
            component: component.to_string(),
            lock,
            held: None,
        }
    }

    /// Waits until the predecessor released it.
    pub(super) async fn acquire(&mut self) {
        self.held = Some(self.lock.clone().lock_owned().await);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.held = None;
        let mut leases = lock(&self.live.leases);
        // Only the map's and ours: no successor waits for it. A successor
        // takes its clone under this same map lock, so it cannot slip in.
        if Arc::strong_count(&self.lock) == 2 {
            leases.remove(&self.component);
        }
    }
}
