//! `/metrics` encoded once per change, not once per request: each format's
//! latest encoding is kept with the generation of the results it shows and
//! shared (as `Bytes`) by every scrape until something changes, and its
//! gzip form is compressed once, on the first scrape that asks for it.
//! A large encoding built for a gzip scrape (Prometheus always asks for
//! gzip) keeps only its compressed form: at 10,000 components that is
//! 1.6 MB instead of 17. Once the last encoding was that large (or, for
//! the first one, once its sample lines make it so), the next one is
//! compressed as it is written, whatever the scrape asked for: its
//! 16 MB of plain text never exist whole, and a scrape without gzip gets
//! them inflated piece by piece as it reads. The two formats share what
//! they learnt of the size (the first OpenMetrics scrape after a text one
//! is compressed as it is written too), and building one lets the other's
//! stale encoding go: at most one large encoding is held between scrapes.
//! A compressed encoding copies the families that are as the last one
//! wrote them (their series and values unchanged) from it, compressed
//! (`lines::Written`, `exposition::Segment`).
//!
//! What changes results bumps the generation ([`changed`]): a check's
//! result, a log probe's poll, a reload, a health request's cache counts.
//! depwatch's own sampled numbers (`process_*`, connections, events,
//! emails) may change without a bump: an encoding is reused for at most
//! [`REUSE_FOR`], so those are never older than that.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use super::exposition::{Deflated, Format, Inflating, encode, encode_deflated};
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

/// Above this size, an encoding built for a gzip scrape keeps only its
/// compressed form.
const KEEP_PLAIN_UP_TO: usize = 1 << 20;

/// The fewest bytes a sample line of ours takes (`depwatch_up{component="a"} 1`,
/// and its newline): what makes a lower bound of an encoding's size.
const LINE_BYTES_AT_LEAST: usize = 29;

/// Whether the next encoding is compressed as it is written: when the last
/// one was large, or, before any was built, when its sample lines alone
/// (`lines`, asked only then) make it large. The first scrape at 10,000
/// components built its 16 MB of plain text whole to compress it, which
/// was the daemon's peak memory (84 MB before it, 101 MB at it).
fn compress_as_written(last_len: usize, lines: impl FnOnce() -> usize) -> bool {
    let size = match last_len {
        0 => lines().saturating_mul(LINE_BYTES_AT_LEAST),
        n => n,
    };
    size > KEEP_PLAIN_UP_TO
}

/// One encoding of the registry in one format: the plain text, the gzip
/// form, or both (never neither).
pub struct Snapshot {
    generation: u64,
    built: Instant,
    /// The size of the plain text.
    len: usize,
    /// The exposition without the per-request tail (see `Metrics::tail`).
    plain: OnceLock<Bytes>,
    gzip: OnceLock<Deflated>,
}

impl Snapshot {
    /// The compressed form, once [`Snapshots::get`] was asked for it.
    pub fn deflated(&self) -> Option<&Deflated> {
        self.gzip.get()
    }

    /// The exposition without the per-request tail: the kept text, or
    /// the compressed form being inflated when only that was kept.
    pub fn plain(&self) -> Plain {
        match (self.plain.get(), self.gzip.get()) {
            (Some(p), _) => Plain::Kept(p.clone()),
            (None, Some(d)) => Plain::Inflating(d.inflating()),
            (None, None) => Plain::Kept(Bytes::new()),
        }
    }
}

/// The plain text of a [`Snapshot`].
pub enum Plain {
    Kept(Bytes),
    Inflating(Inflating),
}

impl Plain {
    /// The whole text (for small encodings and tests: a large one is
    /// better read piece by piece).
    pub fn whole(self) -> Bytes {
        match self {
            Plain::Kept(b) => b,
            Plain::Inflating(mut i) => {
                let mut out =
                    Vec::with_capacity(usize::try_from(i.remaining()).unwrap_or_default());
                while let Some(piece) = i.next_piece() {
                    out.extend_from_slice(&piece);
                }
                Bytes::from(out)
            }
        }
    }
}

/// The latest snapshot of each format, rebuilt by the first scrape that
/// finds it stale while the others wait for it (one encoding at a time per
/// format, however many scrapers).
pub struct Snapshots {
    slots: [tokio::sync::Mutex<Option<Arc<Snapshot>>>; 2],
    encodes: [Counter; 2],
    compressions: Counter,
    /// The plain size of the last encoding built, in either format (the
    /// two are about as large: the first encoding of a format is sized
    /// from the other's, and compressed as it is written when that was
    /// large), and the compressed size of the last one compressed.
    last_len: AtomicUsize,
    last_gzip_len: AtomicUsize,
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
            last_len: AtomicUsize::new(0),
            last_gzip_len: AtomicUsize::new(0),
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
                drop(slot.take());
                let s = Snapshot {
                    generation: now,
                    built: Instant::now(),
                    len: 0,
                    plain: OnceLock::new(),
                    gzip: OnceLock::new(),
                };
                let last_len = self.last_len.load(Ordering::Relaxed);
                let last_gzip_len = self.last_gzip_len.load(Ordering::Relaxed);
                let s = if compress_as_written(last_len, || lines.sample_lines()) {
                    // Only the compressed form will be kept: compressed as
                    // it is written, the plain text never whole (a scrape
                    // without gzip inflates it as it reads).
                    self.compressions.inc();
                    let room = match last_gzip_len {
                        0 => KEEP_PLAIN_UP_TO / 8,
                        n => n / 10 * 11,
                    };
                    let d = encode_deflated(registry, &[lines], format, room);
                    let len = usize::try_from(d.plain_len()).unwrap_or(usize::MAX);
                    let _ = s.gzip.set(d);
                    Snapshot { len, ..s }
                } else {
                    let capacity = match last_len {
                        0 => 16 * 1024,
                        n => n / 10 * 11,
                    };
                    let plain = encode(registry, &[lines], format, capacity);
                    if gzip {
                        self.compressions.inc();
                        let _ = s.gzip.set(Deflated::new(plain.as_bytes()));
                    }
                    let len = plain.len();
                    if !gzip || len <= KEEP_PLAIN_UP_TO {
                        let _ = s.plain.set(Bytes::from(plain));
                    }
                    Snapshot { len, ..s }
                };
                self.last_len.store(s.len, Ordering::Relaxed);
                if let Some(d) = s.gzip.get() {
                    self.last_gzip_len
                        .store(d.compressed_len(), Ordering::Relaxed);
                }
                // The other format's encoding, when it is stale, can never
                // serve again: at 10,000 components it holds megabytes
                // until that format's next scrape. Let it go now (a scrape
                // still sending it keeps its own reference).
                if let Ok(mut other) = self.slots[1 - i].try_lock()
                    && other.as_ref().is_some_and(|o| o.generation != now)
                {
                    other.take();
                }
                let s = Arc::new(s);
                *slot = Some(s.clone());
                s
            }
        };
        if gzip && snap.gzip.get().is_none() {
            // Built for a scrape without gzip: its plain text is kept.
            self.compressions.inc();
            let _ = snap.gzip.set(Deflated::new(&snap.plain().whole()));
        }
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::kit::ComponentOnly;
    use crate::metrics::lines::Lines as Family;
    use prometheus_client::metrics::gauge::Gauge;

    /// Snapshots of a registry whose encoding is over `KEEP_PLAIN_UP_TO`:
    /// 40,000 `depwatch_up` series, and the family to add more.
    fn large() -> (Registry, Snapshots, Lines, Family<ComponentOnly, Gauge>) {
        let mut r = Registry::default();
        let snaps = Snapshots::register(&mut r);
        let mut lines = Lines::default();
        let up = Family::<ComponentOnly, Gauge>::default();
        lines.register("depwatch", "up", "Up", up.clone());
        for i in 0..40_000 {
            up.get_or_create(&ComponentOnly {
                component: format!("component-{i:05}").into(),
            })
            .set(1);
        }
        (r, snaps, lines, up)
    }

    #[tokio::test]
    async fn a_large_encoding_built_for_gzip_keeps_only_that_and_inflates_for_plain() {
        let (r, snaps, lines, up) = large();
        let want = encode(&r, &[&lines], Format::OpenMetrics, 0);
        assert!(want.len() > KEEP_PLAIN_UP_TO, "{}", want.len());
        let s = snaps.get(&r, &lines, Format::OpenMetrics, true).await;
        assert!(s.deflated().is_some());
        assert!(s.plain.get().is_none(), "the plain text is not kept");
        // A scrape without gzip of the same generation: the same snapshot,
        // inflated.
        let again = snaps.get(&r, &lines, Format::OpenMetrics, false).await;
        assert!(Arc::ptr_eq(&s, &again));
        // The registry's own counters moved on since `want` was encoded:
        // compare the depwatch_up lines.
        let ups = |t: &str| t.lines().filter(|l| l.starts_with("depwatch_up{")).count();
        let plain = String::from_utf8(again.plain().whole().to_vec()).unwrap();
        assert_eq!(ups(&plain), 40_000);
        assert_eq!(plain.len(), s.len);
        assert_eq!(ups(&want), 40_000);
        // The next encoding for gzip, after a change, is compressed as it
        // is written: the same text, series for series.
        changed();
        up.get_or_create(&ComponentOnly {
            component: "component-new".into(),
        })
        .set(0);
        let streamed = snaps.get(&r, &lines, Format::OpenMetrics, true).await;
        assert!(!Arc::ptr_eq(&s, &streamed));
        assert!(streamed.plain.get().is_none(), "the plain text is not kept");
        let text = String::from_utf8(streamed.plain().whole().to_vec()).unwrap();
        assert_eq!(text.len(), streamed.len);
        assert_eq!(ups(&text), 40_001);
        assert!(text.contains("depwatch_up{component=\"component-new\"} 0\n"));
        let whole = encode(&r, &[&lines], Format::OpenMetrics, 0);
        let families = |t: &str| {
            t.lines()
                .filter(|l| l.starts_with("depwatch_up") || l.starts_with("# HELP depwatch_up"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(families(&text), families(&whole));
        // So is the next one for a scrape without gzip, which reads it
        // inflated piece by piece.
        changed();
        let plain_scrape = snaps.get(&r, &lines, Format::OpenMetrics, false).await;
        assert!(plain_scrape.plain.get().is_none() && plain_scrape.deflated().is_some());
        let Plain::Inflating(mut pieces) = plain_scrape.plain() else {
            panic!("a large encoding is read inflated");
        };
        assert_eq!(pieces.remaining(), plain_scrape.len as u64);
        let mut read = Vec::new();
        let mut n = 0;
        while let Some(p) = pieces.next_piece() {
            assert!(p.len() <= crate::metrics::exposition::CHUNK);
            read.extend_from_slice(&p);
            n += 1;
        }
        assert!(n > 1, "{n} pieces");
        assert_eq!(read.len(), plain_scrape.len);
        assert_eq!(ups(std::str::from_utf8(&read).unwrap()), 40_001);
        // A small one built for gzip keeps both.
        let small = Snapshots::register(&mut Registry::default());
        let s = small
            .get(&Registry::default(), &Lines::default(), Format::Text, true)
            .await;
        assert!(s.plain.get().is_some() && s.deflated().is_some());
    }

    #[test]
    fn a_first_encoding_is_compressed_as_it_is_written_when_its_lines_make_it_large() {
        let (r, _snaps, lines, _up) = large();
        let plain = encode(&r, &[&lines], Format::Text, 0).len();
        assert!(plain > KEEP_PLAIN_UP_TO);
        // The bound is below the real size, and says "large" for it.
        let n = lines.sample_lines();
        assert_eq!(n, 40_000);
        assert!(n * LINE_BYTES_AT_LEAST <= plain, "{n} lines, {plain} bytes");
        assert!(compress_as_written(0, || n));
        // A small one, before any encoding and after.
        assert!(!compress_as_written(0, || 150));
        assert!(!compress_as_written(14_000, || unreachable!()));
        // The last size, once known, decides.
        assert!(compress_as_written(KEEP_PLAIN_UP_TO + 1, || 0));
        // Histograms count their buckets, `+Inf`, sum and count.
        let mut h = Lines::default();
        let f = crate::metrics::lines::Histograms::<ComponentOnly>::default();
        h.register("depwatch", "d", "D", f.clone());
        let buckets: Arc<[f64]> = Arc::from([0.1, 1.0]);
        f.get_or_create(
            &ComponentOnly {
                component: "a".into(),
            },
            &buckets,
        )
        .observe(0.5);
        assert_eq!(h.sample_lines(), 5);
    }

    #[tokio::test]
    async fn the_first_encoding_of_the_other_format_knows_the_size_and_the_stale_one_goes() {
        let (r, snaps, lines, _up) = large();
        // A first scrape of the text format, without gzip: its lines say
        // it is large, so it is compressed as it is written too (and read
        // inflated).
        let text = snaps.get(&r, &lines, Format::Text, false).await;
        assert!(text.len > KEEP_PLAIN_UP_TO && text.plain.get().is_none());
        assert!(text.deflated().is_some());
        assert!(snaps.slots[Format::Text as usize].lock().await.is_some());
        drop(text);
        // Then Prometheus' first scrape, after a change: OpenMetrics with
        // gzip, compressed as it is written (the text one said how large
        // it would be), and the stale text encoding is let go.
        changed();
        let om = snaps.get(&r, &lines, Format::OpenMetrics, true).await;
        assert!(om.plain.get().is_none() && om.deflated().is_some());
        assert!(snaps.slots[Format::Text as usize].lock().await.is_none());
        let got = String::from_utf8(om.plain().whole().to_vec()).unwrap();
        assert_eq!(
            got.lines()
                .filter(|l| l.starts_with("depwatch_up{"))
                .count(),
            40_000
        );
    }
}
