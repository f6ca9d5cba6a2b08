//! What a compressed encoding keeps of a family written line by line, so
//! that the next one copies the family's compressed lines while its series
//! and values are as they were (see [`Written`]).

use super::super::exposition::{Segment, Writer};

/// What the last compressed encoding wrote of a family, so that the next
/// one can copy the family's sample lines instead of writing and
/// compressing them again when its series and values are as they were.
/// At 10,000 components most families (`depwatch_up`, the statuses, the
/// status codes) are the same from one scrape to the next; the others
/// change at every one, and keep only a digest of their values.
pub(super) enum Written {
    /// The same as in the encoding before: kept, compressed, with the
    /// values it shows (in the map's order; a histogram's count and sum).
    Kept {
        generation: u64,
        values: Vec<u64>,
        segment: Segment,
    },
    /// Changed since the encoding before: its values' digest, to notice
    /// when it stops changing (it is then kept from the next encoding on).
    Changing { generation: u64, digest: u64 },
}

/// How a compressed encoding writes a family.
pub(super) enum Plan<'a> {
    /// Copies the last encoding's segment.
    Copy(&'a Segment),
    /// Writes it as a segment and keeps that.
    Keep,
    /// Writes it.
    Write,
}

impl Plan<'_> {
    /// Starts the family on `w` as planned: `None` when it was copied
    /// (nothing left to write), else whether its lines are kept.
    pub(super) fn begin(self, w: &mut Writer) -> Option<bool> {
        match self {
            Plan::Copy(s) => {
                w.reuse(s);
                None
            }
            Plan::Keep => {
                w.begin_segment();
                Some(true)
            }
            Plan::Write => Some(false),
        }
    }
}

fn digest(values: &[u64]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    values.hash(&mut h);
    h.finish()
}

impl Written {
    /// How to write the family, now of `generation` and `values`, after
    /// `last`.
    pub(super) fn plan<'a>(last: &'a Option<Written>, generation: u64, values: &[u64]) -> Plan<'a> {
        match last {
            // The first compressed encoding keeps everything.
            None => Plan::Keep,
            Some(Written::Kept {
                generation: g,
                values: v,
                segment,
            }) if *g == generation && v.as_slice() == values => Plan::Copy(segment),
            Some(Written::Kept { .. }) => Plan::Write,
            Some(Written::Changing {
                generation: g,
                digest: d,
            }) if *g == generation && *d == digest(values) => Plan::Keep,
            Some(Written::Changing { .. }) => Plan::Write,
        }
    }

    /// What to remember of a family written from `generation` and
    /// `values`, `segment` when it was kept.
    pub(super) fn after(generation: u64, values: Vec<u64>, segment: Option<Segment>) -> Written {
        match segment {
            Some(segment) => Written::Kept {
                generation,
                values,
                segment,
            },
            None => Written::Changing {
                generation,
                digest: digest(&values),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::metrics::exposition::Format;

    /// A compressed encoding copies the sample lines of a family that is
    /// as the last one wrote it, and writes again any family where a value
    /// changed or a series came or went (even one with the same value).
    #[test]
    fn a_family_as_it_was_is_copied_not_written_again() {
        let up = Lines::<ComponentOnly, Gauge>::default();
        let checks = Lines::<ComponentOnly, Counter>::default();
        let last = Lines::<ComponentOnly, GaugeF>::default();
        let took = Histograms::<ComponentOnly>::default();
        let buckets: Arc<[f64]> = Arc::from([0.1, 1.0].as_slice());
        let mut r = Registry::default();
        r.register("depwatch", "up", "Up", up.clone());
        r.register("depwatch", "checks", "Checks", checks.clone());
        r.register("depwatch", "last_seconds", "Last", last.clone());
        r.register("depwatch", "took_seconds", "Took", took.clone());
        let c = |i: usize| ComponentOnly {
            component: format!("c{i}").into(),
        };
        for i in 0..3000 {
            up.get_or_create(&c(i)).set(1);
            checks.get_or_create(&c(i)).inc_by(i as u64);
            last.get_or_create(&c(i)).set(1.7e9 + i as f64 / 8.0);
            took.observe(&c(i), &buckets, i as f64 / 1000.0);
        }
        // The family's sample lines (not its metadata), as a plain writer
        // writes them.
        let samples = |text: &str, family: &str| -> u64 {
            let prefix = format!("depwatch_{family}");
            text.lines()
                .filter(|l| l.starts_with(&prefix))
                .map(|l| l.len() as u64 + 1)
                .sum()
        };
        let encodings = |r: &Registry| {
            let mut p = Writer::new(Format::Text, 64);
            r.write(&mut p);
            let mut d = Writer::deflating(Format::Text, 64);
            r.write(&mut d);
            let reused = d.reused();
            let inflated = String::from_utf8(d.finish_deflated().inflate()).unwrap();
            (p.finish(), inflated, reused)
        };
        let (plain, first, reused) = encodings(&r);
        assert_eq!(first, plain);
        assert_eq!(reused, 0);
        let (plain, second, reused) = encodings(&r);
        assert_eq!(second, plain);
        let all: u64 = ["up", "checks", "last_seconds", "took_seconds"]
            .iter()
            .map(|f| samples(&plain, f))
            .sum();
        assert_eq!(reused, all);

        // One value of a counter, a float gauge and a histogram.
        checks.get_or_create(&c(5)).inc();
        last.get_or_create(&c(6)).set(1.8e9);
        took.observe(&c(7), &buckets, 0.5);
        let (plain, third, reused) = encodings(&r);
        assert_eq!(third, plain);
        assert!(plain.contains("depwatch_checks_total{component=\"c5\"} 6\n"));
        assert!(plain.contains("depwatch_last_seconds{component=\"c6\"} 1800000000.0\n"));
        assert!(plain.contains("depwatch_took_seconds_count{component=\"c7\"} 2\n"));
        assert_eq!(reused, samples(&plain, "up"));

        // A series replaced by another of the same value; a gauge set to
        // what it was.
        assert!(up.remove(&c(8)));
        up.get_or_create(&c(3000)).set(1);
        last.get_or_create(&c(6)).set(1.8e9);
        let (plain, fourth, reused) = encodings(&r);
        assert_eq!(fourth, plain);
        assert!(plain.contains("depwatch_up{component=\"c3000\"} 1\n"));
        assert!(!plain.contains("depwatch_up{component=\"c8\"}"));
        // The families that changed last time kept only a digest: those
        // now as they were then are written once more, and kept.
        assert_eq!(reused, 0);
        let (plain, fifth, reused) = encodings(&r);
        assert_eq!(fifth, plain);
        let changed_before = ["checks", "last_seconds", "took_seconds"];
        assert_eq!(
            reused,
            changed_before
                .iter()
                .map(|f| samples(&plain, f))
                .sum::<u64>()
        );
        let (plain, sixth, reused) = encodings(&r);
        assert_eq!(sixth, plain);
        let everything = ["up", "checks", "last_seconds", "took_seconds"];
        assert_eq!(
            reused,
            everything.iter().map(|f| samples(&plain, f)).sum::<u64>()
        );
    }
}
