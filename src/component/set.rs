//! The components in force, as one set: found by name, told apart from the
//! set a reload replaces, and judged together (the overall verdict).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Component;
use crate::config::Config;
use crate::probe::Status;

/// The overall verdict: the worst component, where a non-critical one can
/// only make it degraded. A component not yet checked counts as degraded.
pub fn verdict<'a>(items: impl Iterator<Item = (bool, Option<Status>)> + 'a) -> Status {
    items
        .map(|(critical, s)| {
            let s = s.unwrap_or(Status::Degraded);
            if !critical && s == Status::Unhealthy {
                Status::Degraded
            } else {
                s
            }
        })
        .max()
        .unwrap_or(Status::Healthy)
}

/// Status changes of any component so far (a first result counts): the
/// overall verdict over thousands of components is worked out anew only
/// when this moved (`http::events::current_verdict`). Moved after the new
/// result is in place, so that whoever reads the old count before looking
/// at the results sees a count that moves again after any change it missed.
static STATUS_CHANGES: AtomicU64 = AtomicU64::new(0);

/// Sets of components made so far (see [`Components::generation`]).
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

/// How many times a component's status changed, in this process.
pub fn status_changes() -> u64 {
    STATUS_CHANGES.load(Ordering::Acquire)
}

pub(super) fn status_changed() {
    STATUS_CHANGES.fetch_add(1, Ordering::AcqRel);
}

/// The configuration in force and its components.
pub struct Components {
    pub config: Config,
    pub components: Vec<Arc<Component>>,
    by_name: HashMap<String, usize>,
    generation: u64,
}

impl Components {
    /// The components already built from `config` (in its order).
    pub fn new(config: Config, components: Vec<Arc<Component>>) -> Components {
        let by_name = components
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name().to_string(), i))
            .collect();
        Components {
            config,
            components,
            by_name,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// Which set of components this is: each set made in this process has
    /// its own (a reload makes a new one).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn component(&self, name: &str) -> Option<&Arc<Component>> {
        self.by_name.get(name).map(|i| &self.components[*i])
    }

    /// Where the component `name` is in [`Components::components`].
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Status::{Degraded as D, Healthy as H, Unhealthy as U};

    #[test]
    fn verdict_worst_wins_and_non_critical_caps() {
        assert_eq!(verdict([(true, Some(H)), (true, Some(D))].into_iter()), D);
        assert_eq!(verdict([(true, Some(H)), (false, Some(U))].into_iter()), D);
        assert_eq!(verdict([(true, Some(U)), (false, Some(H))].into_iter()), U);
        assert_eq!(verdict([(true, Some(H))].into_iter()), H);
        assert_eq!(verdict(std::iter::empty()), H);
    }
}
