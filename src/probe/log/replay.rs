//! `depwatch replay-log`: a log probe's rules over files from their beginning
//! to their end, through the same tailer and engine as the running probe.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use super::collector::encode_probes;
use super::config::{Spec, StartAt};
use super::poll_into;
use super::rules::{Engine, LineKind};
use super::state::{Counts, ProbeState, TailView};
use super::tail::Tailer;
use crate::util::sync::lock;

/// Why `replay-log` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{} is not a readable file", .0.display())]
    NotAFile(PathBuf),
    #[error("{0}")]
    Read(String),
    #[error("no log probe named `{want}` (log probes: {known})")]
    NoSuchProbe { want: String, known: String },
    #[error("the configuration has no probe of kind log")]
    NoLogProbe,
    #[error("several log probes: choose one with --probe ({0})")]
    Several(String),
}

/// What a replay produced.
pub struct Replayed {
    /// The metrics, in Prometheus' text format.
    pub metrics: String,
    /// What the lines say of the rules (a field no line has), for people.
    pub notes: Vec<String>,
}

/// `depwatch replay-log`: runs a log probe's rules over files from their
/// beginning to their end and returns the metrics (Prometheus text) they
/// produce — to try rules on a sample, or to backfill a count.
pub fn replay(spec: &Spec, component: &str, files: &[PathBuf]) -> Result<Replayed, ReplayError> {
    let state = Arc::new(ProbeState {
        component: component.to_string(),
        engine: Mutex::new(Engine::new(spec)),
        triggers: None,
        counts: Counts::default(),
        view: Mutex::new(TailView::default()),
    });
    for f in files {
        if !f.is_file() {
            return Err(ReplayError::NotAFile(f.clone()));
        }
    }
    let patterns = files
        .iter()
        .map(|f| glob::Pattern::escape(&f.display().to_string()))
        .collect();
    let mut tailer = Tailer::new(patterns, StartAt::Beginning, spec.max_line_bytes);
    loop {
        let stats = poll_into(&mut tailer, &state);
        if let Some(e) = &tailer.last_error {
            return Err(ReplayError::Read(e.clone()));
        }
        if !stats.more {
            break;
        }
    }
    // A last line without its newline still counts.
    tailer.finish(&mut |line| {
        let mut e = lock(&state.engine);
        let kind = match line {
            Some(l) => e.line(l, Instant::now(), crate::util::time::unix_now()),
            None => LineKind::Invalid,
        };
        let c = &state.counts;
        match kind {
            LineKind::Matched => c.matched.fetch_add(1, Ordering::Relaxed),
            LineKind::Unmatched => c.unmatched.fetch_add(1, Ordering::Relaxed),
            LineKind::Invalid => c.invalid.fetch_add(1, Ordering::Relaxed),
        };
    });
    let found = lock(&state.engine).unseen();
    let notes = (found.map(super::unseen::Found::hinted).unwrap_or_default())
        .iter()
        .map(|u| u.message())
        .collect();
    let mut registry = Registry::default();
    registry
        .sub_registry_with_prefix("depwatch")
        .register_collector(Box::new(Replay(state)));
    let metrics = crate::metrics::exposition::encode(
        &registry,
        &[],
        crate::metrics::exposition::Format::Text,
        16 * 1024,
    );
    Ok(Replayed { metrics, notes })
}

#[derive(Debug)]
struct Replay(Arc<ProbeState>);

impl prometheus_client::collector::Collector for Replay {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        encode_probes(std::slice::from_ref(&self.0), &mut enc)
    }
}
