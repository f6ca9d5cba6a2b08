//! `/metrics` encoded once per change, not once per request: each format's
//! latest encoding is kept with the generation of the results it shows and
//! shared (as `Bytes`) by every scrape until something changes, and its
//! gzip form is compressed once, on the first scrape that asks for it.
//!
//! What changes results bumps the generation ([`changed`]): a check's
//! result, a log probe's poll, a reload, a health request's cache counts.
//! depwatch's own sampled numbers (`process_*`, connections, events,
//! emails) may change without a bump: an encoding is reused for at most
//! [`REUSE_FOR`], so those are never older than that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use super::exposition::{Deflated, Format, encode};
use super::lines::Registry as Lines;

/// How long an encoding may serve scrapes when no result changed.
pub const REUSE_FOR: Duration = Duration::from_secs(1);

/// The generation of the metrics' content. Process-wide: a bump from
/// another instance in the same process (tests) only costs an encoding.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Something in the exposition changed: the next scrape encodes anew.
pub fn changed() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// One encoding of the registry in one format.
pub struct Snapshot {
    generation: u64,
    built: Instant,
    /// The exposition without the per-request tail (see `Metrics::tail`).
    pub plain: Bytes,
    gzip: OnceLock<Deflated>,
}

impl Snapshot {
    /// The compressed form, once [`Snapshots::get`] was asked for it.
    pub fn deflated(&self) -> Option<&Deflated> {
        self.gzip.get()
    }
}

/// The latest snapshot of each format, rebuilt by the first scrape that
/// finds it stale while the others wait for it (one encoding at a time per
/// format, however many scrapers).
pub struct Snapshots {
    slots: [tokio::sync::Mutex<Option<Arc<Snapshot>>>; 2],
    encodes: [Counter; 2],
    compressions: Counter,
}

impl Snapshots {
    pub fn register(r: &mut Registry) -> Snapshots {
        let family = prometheus_client::metrics::family::Family::<
            [(&'static str, &'static str); 1],
            Counter,
        >::default();
        let encodes = Format::ALL.map(|f| family.get_or_create_owned(&[("format", f.as_str())]));
        r.register(
            "scrape_encodes",
            "Encodings of /metrics, by format: at most one per change of results (or per second), however many scrapes",
            family,
        );
        let compressions = Counter::default();
        r.register(
            "scrape_compressions",
            "Encodings of /metrics compressed with gzip (once each, on the first scrape asking for gzip)",
            compressions.clone(),
        );
        Snapshots {
            slots: [Default::default(), Default::default()],
            encodes,
            compressions,
        }
    }

    /// The current encoding of `registry` and `lines` in `format` (compressed too with
    /// `gzip`), reused while nothing changed.
    pub async fn get(
        &self,
        registry: &Registry,
        lines: &Lines,
        format: Format,
        gzip: bool,
    ) -> Arc<Snapshot> {
        let i = format as usize;
        let mut slot = self.slots[i].lock().await;
        let now = generation();
        let snap = match slot.as_ref() {
            Some(s) if s.generation == now && s.built.elapsed() < REUSE_FOR => s.clone(),
            _ => {
                // The generation is read before encoding: a change during
                // the encoding makes the next scrape encode again.
                self.encodes[i].inc();
                // Room for the last size and a tenth more: at 10,000
                // components a buffer grown by doubling would copy tens of
                // megabytes and hold twice that at its peak.
                // The old one goes first (unless a scrape still sends it).
                let capacity = slot.take().map_or(16 * 1024, |s| s.plain.len() / 10 * 11);
                let s = Arc::new(Snapshot {
                    generation: now,
                    built: Instant::now(),
                    plain: Bytes::from(encode(registry, Some(lines), format, capacity)),
                    gzip: OnceLock::new(),
                });
                *slot = Some(s.clone());
                s
            }
        };
        if gzip && snap.gzip.get().is_none() {
            self.compressions.inc();
            let _ = snap.gzip.set(Deflated::new(&snap.plain));
        }
        snap
    }
}
