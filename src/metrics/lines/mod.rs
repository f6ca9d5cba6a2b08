//! Families that depwatch writes itself, line by line: the ones with a
//! series per component (`depwatch_up`, the check counters and histogram,
//! the http probe's), which at 10,000 components are nearly all of
//! `/metrics`.
//!
//! prometheus-client encodes each series through its generic label and
//! value encoders, about a microsecond a series; here a series is its name,
//! its labels pushed straight into the buffer and a number from `itoa` or
//! `dtoa`. The values are the same atomics (prometheus-client's `Counter`
//! and `Gauge`), read at the scrape: never older than the scrape, never
//! copied. The output is what prometheus-client writes for a `Family` of
//! the same name, help, labels and values (the tests compare them), with
//! label values already as [`super::exposition::Writer`] would make them
//! (control characters replaced).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::exposition::{Direct, Writer};
use super::kit::{ComponentOnly, GaugeF, unsafe_in_label};
use crate::util::sync::{lock, read, write};
use written::{Plan, Written};

mod written;

/// A label set that writes itself, as `k="v",…` in its fields' order.
pub trait LabelSet: Clone + Eq + Hash + Send + Sync + 'static {
    fn write(&self, out: &mut Labels<'_>);
    /// Reads what [`LabelSet::write`] will read from elsewhere in memory
    /// (a component's name), so that it is in the cache by then (see
    /// [`BATCH`]).
    fn touch(&self) -> u64 {
        0
    }
}

/// What a family's writer reads ahead at once. The name and the value of
/// a series live in their own allocations, scattered over the heap as the
/// components were made: at 10,000 components, each family's pass met
/// two cache misses per series, one after the other, because formatting a
/// line is too long for the processor to reach the next line's loads.
/// Touching a batch of series first, in a loop of nothing but independent
/// loads, lets the misses overlap; the lines are then written from the
/// cache.
const BATCH: usize = 128;

/// The first byte of `s`: a load of the line holding it.
pub fn touch_str(s: &str) -> u64 {
    s.as_bytes().first().map_or(0, |b| u64::from(*b))
}

/// Touches every item of `batch` (see [`BATCH`]).
fn warm<T>(batch: &[T], touch: impl Fn(&T) -> u64) {
    let sum = batch
        .iter()
        .fold(0u64, |acc, item| acc.wrapping_add(touch(item)));
    std::hint::black_box(sum);
}

/// Writes the labels of one series.
pub struct Labels<'a> {
    out: &'a mut String,
    first: bool,
}

impl Labels<'_> {
    /// One `key="value"`, the value escaped (`\`, `"`, newline) and every
    /// other control character replaced by U+FFFD.
    pub fn add(&mut self, key: &str, value: &str) -> &mut Self {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push_str(key);
        self.out.push_str("=\"");
        push_value(self.out, value);
        self.out.push('"');
        self
    }
}

fn push_value(out: &mut String, v: &str) {
    // Almost always plain: nothing to escape, no control character.
    if !special(v) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if unsafe_in_label(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// The bytes to escape or replace in a label value: control characters
/// (below 0x20, 0x7F, and 0xC2, which leads the C1 controls and some
/// harmless characters), `"` and `\\`.
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0x7f] = true;
    t[0xc2] = true;
    t
};

/// Whether `v` has a byte of [`SPECIAL`]. A scrape at 10,000 components
/// writes about 400,000 label values of a few bytes each: one table load
/// a byte is about half the work of the comparisons it replaced, which
/// were a quarter of the work of writing the lines.
fn special(v: &str) -> bool {
    v.bytes().any(|b| SPECIAL[usize::from(b)])
}

impl LabelSet for ComponentOnly {
    fn write(&self, out: &mut Labels<'_>) {
        out.add("component", &self.component);
    }

    fn touch(&self) -> u64 {
        touch_str(&self.component)
    }
}

/// The value of a series, as prometheus-client writes it.
pub trait Value: Clone + Default + Send + Sync + 'static {
    const TYPE: MetricType;
    /// After the family's name on a sample line (`_total` for counters).
    const SUFFIX: &'static str;
    /// The value now, as the bits [`Value::write`] writes.
    fn bits(&self) -> u64;
    /// Writes a value read by [`Value::bits`].
    fn write(bits: u64, out: &mut String);
}

impl Value for Counter {
    const TYPE: MetricType = MetricType::Counter;
    const SUFFIX: &'static str = "_total";
    fn bits(&self) -> u64 {
        self.get()
    }
    fn write(bits: u64, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(bits));
    }
}

impl Value for Gauge {
    const TYPE: MetricType = MetricType::Gauge;
    const SUFFIX: &'static str = "";
    fn bits(&self) -> u64 {
        self.get() as u64
    }
    fn write(bits: u64, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(bits as i64));
    }
}

impl Value for GaugeF {
    const TYPE: MetricType = MetricType::Gauge;
    const SUFFIX: &'static str = "";
    fn bits(&self) -> u64 {
        self.get().to_bits()
    }
    fn write(bits: u64, out: &mut String) {
        push_f64(out, f64::from_bits(bits));
    }
}

/// `v` as a sample's value: the shortest text that reads back as `v`
/// (zmij, about three times as fast as prometheus-client's dtoa on the
/// durations and timestamps of a scrape; the same text but for exponents
/// from 16 up, written `1e+16` where dtoa writes `10000000000000000.0`,
/// both of which Prometheus reads); `NaN` and the infinities as
/// prometheus-client writes them.
fn push_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        out.push_str(zmij::Buffer::new().format_finite(v));
    } else {
        out.push_str(dtoa::Buffer::new().format(v));
    }
}

/// Series removed so far, from any family (reloads remove them): handles
/// kept in a [`Kept`] are fetched again after a removal.
static REMOVALS: AtomicU64 = AtomicU64::new(0);

fn removed(existed: bool) -> bool {
    if existed {
        REMOVALS.fetch_add(1, Ordering::AcqRel);
    }
    existed
}

/// Handles on a component's series, kept from one check to the next so
/// that a check writes its values without looking each series up by its
/// labels (a hash and a copy of the name per series). Fetched again after
/// any series was removed: a removed series' handle would write into
/// nothing, and a successor of the same name may have made it anew.
pub struct Kept<T> {
    slot: Mutex<Option<(u64, T)>>,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept {
            slot: Mutex::new(None),
        }
    }
}

impl<T> Kept<T> {
    /// `f` of the kept handles, made by `make` when there are none or a
    /// series was removed since they were.
    pub fn with<R>(&self, make: impl FnOnce() -> T, f: impl FnOnce(&mut T) -> R) -> R {
        let now = REMOVALS.load(Ordering::Acquire);
        let mut slot = lock(&self.slot);
        match &mut *slot {
            Some((at, t)) if *at == now => f(t),
            _ => {
                let (_, t) = slot.insert((now, make()));
                f(t)
            }
        }
    }
}

/// A family of series by label set, used as prometheus-client's `Family`
/// is: `get_or_create(&labels).inc()`.
pub struct Lines<S, M> {
    inner: Arc<Inner<S, M>>,
}

struct Inner<S, M> {
    series: RwLock<Series<S, M>>,
    /// What the last compressed encoding wrote of this family.
    last: Mutex<Option<Written>>,
}

/// A family's series and how often their set changed.
struct Series<S, T> {
    map: HashMap<S, T>,
    /// One more for every series made or removed (or made anew): the
    /// map's order and labels are the same while this is.
    generation: u64,
}

impl<S, T> Default for Series<S, T> {
    fn default() -> Self {
        Series {
            map: HashMap::new(),
            generation: 0,
        }
    }
}

impl<S, M> Clone for Lines<S, M> {
    fn clone(&self) -> Self {
        Lines {
            inner: self.inner.clone(),
        }
    }
}

impl<S, T> Default for Inner<S, T> {
    fn default() -> Self {
        Inner {
            series: RwLock::default(),
            last: Mutex::new(None),
        }
    }
}

impl<S, M> Default for Lines<S, M> {
    fn default() -> Self {
        Lines {
            inner: Arc::default(),
        }
    }
}

impl<S: LabelSet, M: Value> Lines<S, M> {
    /// The series `labels` (a handle on the same value), made at zero when
    /// it does not exist.
    pub fn get_or_create(&self, labels: &S) -> M {
        if let Some(m) = read(&self.inner.series).map.get(labels) {
            return m.clone();
        }
        let mut w = write(&self.inner.series);
        w.generation += 1;
        w.map.entry(labels.clone()).or_default().clone()
    }

    /// Drops the series `labels`; whether it existed.
    pub fn remove(&self, labels: &S) -> bool {
        let mut w = write(&self.inner.series);
        w.generation += 1;
        removed(w.map.remove(labels).is_some())
    }
}

/// What a [`Registry`] needs of a family.
pub trait Family: Send + Sync {
    fn metric_type(&self) -> MetricType;
    fn is_empty(&self) -> bool;
    /// How many sample lines [`Family::write`] writes now.
    fn sample_lines(&self) -> usize;
    /// Every series' sample lines, the family named `name`, each series'
    /// into [`Writer::samples`] (which may compress what came before).
    fn write(&self, name: &str, w: &mut Writer);
}

/// `name{labels} ` of a sample line, `opening` its `name{` (with a suffix
/// after the name, if any).
fn head<S: LabelSet>(out: &mut String, opening: &str, labels: &S) {
    out.push_str(opening);
    labels.write(&mut Labels { out, first: true });
    out.push_str("} ");
}

impl<S: LabelSet, M: Value> Family for Lines<S, M> {
    fn metric_type(&self) -> MetricType {
        M::TYPE
    }

    fn is_empty(&self) -> bool {
        read(&self.inner.series).map.is_empty()
    }

    fn sample_lines(&self) -> usize {
        read(&self.inner.series).map.len()
    }

    fn write(&self, name: &str, w: &mut Writer) {
        let series = read(&self.inner.series);
        // Every value first, in a loop of nothing but independent loads
        // (see [`BATCH`]); the lines are written from these.
        let values: Vec<u64> = series.map.values().map(M::bits).collect();
        let mut last = lock(&self.inner.last);
        let plan = if w.segments() {
            Written::plan(&last, series.generation, &values)
        } else {
            Plan::Write
        };
        let Some(keep) = plan.begin(w) else {
            return;
        };
        let opening = format!("{name}{}{{", M::SUFFIX);
        let mut all = series.map.keys().zip(&values);
        let mut batch = Vec::with_capacity(BATCH.min(series.map.len()));
        loop {
            batch.clear();
            batch.extend(all.by_ref().take(BATCH));
            if batch.is_empty() {
                break;
            }
            warm(&batch, |(labels, _)| labels.touch());
            for (labels, bits) in &batch {
                let out = w.samples();
                head(out, &opening, *labels);
                M::write(**bits, out);
                out.push('\n');
            }
        }
        if w.segments() {
            let segment = if keep { w.end_segment() } else { None };
            *last = Some(Written::after(series.generation, values, segment));
        }
    }
}

/// A histogram family whose series each have their own buckets (a
/// component's, from its kind or its configuration), taken at the first
/// observation.
pub struct Histograms<S> {
    inner: Arc<Inner<S, Arc<Histogram>>>,
}

/// One histogram: the buckets it was made with, their finite upper bounds
/// (`+Inf` is implicit, as in prometheus-client) and what it counted.
pub struct Histogram {
    given: Arc<[f64]>,
    bounds: Box<[f64]>,
    counts: Mutex<Counts>,
}

struct Counts {
    sum: f64,
    count: u64,
    /// Per bucket, not cumulative; one more than `bounds` (`+Inf`).
    buckets: Box<[u64]>,
}

impl Histogram {
    fn new(given: &Arc<[f64]>) -> Histogram {
        let bounds: Box<[f64]> = given.iter().copied().filter(|b| b.is_finite()).collect();
        Histogram {
            given: given.clone(),
            counts: Mutex::new(Counts {
                sum: 0.0,
                count: 0,
                buckets: vec![0; bounds.len() + 1].into(),
            }),
            bounds,
        }
    }

    pub fn observe(&self, v: f64) {
        let mut c = lock(&self.counts);
        c.sum += v;
        c.count += 1;
        // The first bucket whose bound is at least `v`; NaN in `+Inf`.
        let i = self
            .bounds
            .iter()
            .position(|b| *b >= v)
            .unwrap_or(self.bounds.len());
        c.buckets[i] += 1;
    }
}

impl<S> Clone for Histograms<S> {
    fn clone(&self) -> Self {
        Histograms {
            inner: self.inner.clone(),
        }
    }
}

impl<S> Default for Histograms<S> {
    fn default() -> Self {
        Histograms {
            inner: Arc::default(),
        }
    }
}

impl<S: LabelSet> Histograms<S> {
    /// Observes `v` in the series `labels`, made with `buckets` when it
    /// does not exist. A series made with other buckets (a reload changed
    /// them) starts over with the new ones: Prometheus reads that as a
    /// counter reset, as after a restart.
    pub fn observe(&self, labels: &S, buckets: &Arc<[f64]>, v: f64) {
        self.get_or_create(labels, buckets).observe(v);
    }

    /// The series `labels` (a handle on it), made with `buckets` when it
    /// does not exist or was made with other buckets.
    pub fn get_or_create(&self, labels: &S, buckets: &Arc<[f64]>) -> Arc<Histogram> {
        if let Some(h) = read(&self.inner.series).map.get(labels)
            && *h.given == **buckets
        {
            return h.clone();
        }
        let mut w = write(&self.inner.series);
        w.generation += 1;
        let h = w
            .map
            .entry(labels.clone())
            .or_insert_with(|| Arc::new(Histogram::new(buckets)));
        if *h.given != **buckets {
            *h = Arc::new(Histogram::new(buckets));
        }
        h.clone()
    }

    /// Drops the series `labels`; whether it existed.
    pub fn remove(&self, labels: &S) -> bool {
        let mut w = write(&self.inner.series);
        w.generation += 1;
        removed(w.map.remove(labels).is_some())
    }
}

impl<S: LabelSet> Family for Histograms<S> {
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }

    fn is_empty(&self) -> bool {
        read(&self.inner.series).map.is_empty()
    }

    fn sample_lines(&self) -> usize {
        // Its buckets, `+Inf`, the sum and the count.
        let series = read(&self.inner.series);
        series.map.values().map(|h| h.bounds.len() + 3).sum()
    }

    fn write(&self, name: &str, w: &mut Writer) {
        let series = read(&self.inner.series);
        let mut last = lock(&self.inner.last);
        // Every series' counts first, each under its lock once, in a loop
        // of nothing but loads and copies (see [`BATCH`]): `values` holds
        // each series' count and sum (another observation changes both,
        // even of NaN: the count), what a compressed encoding compares;
        // `buckets` each series' per-bucket counts, one after the other.
        // The lines are written from these.
        let mut values = Vec::with_capacity(2 * series.map.len());
        let mut buckets = Vec::with_capacity(series.map.len() * 8);
        for h in series.map.values() {
            let c = lock(&h.counts);
            values.extend([c.count, c.sum.to_bits()]);
            buckets.extend_from_slice(&c.buckets);
        }
        let plan = if w.segments() {
            Written::plan(&last, series.generation, &values)
        } else {
            Plan::Write
        };
        let Some(keep) = plan.begin(w) else {
            return;
        };
        // The opening of each bucket line (`name_bucket{le="0.5"`) of the
        // last bucket list, `+Inf` last, made once for all the series that
        // share it (a kind's, the defaults'); a line is then its opening,
        // the series' labels and the count.
        let mut heads: Option<(Arc<[f64]>, Vec<String>)> = None;
        let sum_head = format!("{name}_sum{{");
        let count_head = format!("{name}_count{{");
        // A series' labels and what closes them (`,k="v",…} `), written
        // once for its lines; a bucket line takes it after its `le`, the
        // others without the comma.
        let mut rest = String::with_capacity(64);
        let mut all = series.map.iter().zip(values.chunks_exact(2));
        let mut counts = buckets.as_slice();
        let mut batch = Vec::with_capacity(BATCH.min(series.map.len()));
        loop {
            batch.clear();
            batch.extend(all.by_ref().take(BATCH));
            if batch.is_empty() {
                break;
            }
            warm(&batch, |((labels, _), _)| labels.touch());
            for &((labels, h), value) in &batch {
                rest.clear();
                rest.push(',');
                labels.write(&mut Labels {
                    out: &mut rest,
                    first: true,
                });
                if rest.len() == 1 {
                    rest.clear();
                }
                rest.push_str("} ");
                let plain = rest.strip_prefix(',').unwrap_or(&rest);
                let same = heads
                    .as_ref()
                    .is_some_and(|(given, _)| Arc::ptr_eq(given, &h.given) || **given == *h.given);
                if !same {
                    let mut bound = dtoa::Buffer::new();
                    let mut made: Vec<String> = h
                        .bounds
                        .iter()
                        .map(|b| format!("{name}_bucket{{le=\"{}\"", bound.format(*b)))
                        .collect();
                    made.push(format!("{name}_bucket{{le=\"+Inf\""));
                    heads = Some((h.given.clone(), made));
                }
                let bucket_heads = heads
                    .as_ref()
                    .map(|(_, l)| l.as_slice())
                    .unwrap_or_default();
                let (own, later) = counts.split_at(h.bounds.len() + 1);
                counts = later;
                let out = w.samples();
                out.push_str(&sum_head);
                out.push_str(plain);
                push_f64(out, f64::from_bits(value[1]));
                out.push('\n');
                out.push_str(&count_head);
                out.push_str(plain);
                out.push_str(itoa::Buffer::new().format(value[0]));
                out.push('\n');
                let mut cumulative = 0u64;
                for (head, n) in bucket_heads.iter().zip(own) {
                    cumulative += n;
                    out.push_str(head);
                    out.push_str(&rest);
                    out.push_str(itoa::Buffer::new().format(cumulative));
                    out.push('\n');
                }
            }
        }
        if w.segments() {
            let segment = if keep { w.end_segment() } else { None };
            *last = Some(Written::after(series.generation, values, segment));
        }
    }
}

/// The families written line by line, in the order they were registered.
#[derive(Default)]
pub struct Registry {
    families: Vec<Registered>,
}

struct Registered {
    /// With its prefix.
    name: String,
    /// With its final period, as prometheus-client adds it.
    help: String,
    family: Box<dyn Family>,
}

impl Registry {
    /// Registers `family` as `prefix_name`, with `help` as prometheus-client
    /// would show it.
    pub fn register(
        &mut self,
        prefix: &str,
        name: &str,
        help: &str,
        family: impl Family + 'static,
    ) {
        self.families.push(Registered {
            name: format!("{prefix}_{name}"),
            help: format!("{help}."),
            family: Box::new(family),
        });
    }

    /// How many sample lines an encoding writes now: what sizes the first
    /// one, before any was built.
    pub fn sample_lines(&self) -> usize {
        self.families.iter().map(|f| f.family.sample_lines()).sum()
    }
}

impl Direct for Registry {
    /// Every family with a series: its metadata through `w` (which writes
    /// it in its format), its sample lines straight into the output.
    fn write(&self, w: &mut Writer) {
        for f in self.families.iter().filter(|f| !f.family.is_empty()) {
            w.metadata_lines(&f.name, &f.help, f.family.metric_type());
            f.family.write(&f.name, w);
        }
    }
}

#[cfg(test)]
mod tests;
