//! The line writers against what prometheus-client writes for the same
//! families, the label scan, the float text and the copy of unchanged
//! families.

use super::*;
use crate::metrics::exposition::Format;
use prometheus_client::encoding::EncodeLabelSet;

/// Both label traits, with every kind of character a label value may hold.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Two {
    component: String,
    other: String,
}

impl LabelSet for Two {
    fn write(&self, out: &mut Labels<'_>) {
        out.add("component", &self.component)
            .add("other", &self.other);
    }
}

/// prometheus-client's encoding of a registry, through our writer.
fn theirs(f: impl FnOnce(&mut prometheus_client::registry::Registry), format: Format) -> String {
    let mut r = prometheus_client::registry::Registry::default();
    f(r.sub_registry_with_prefix("depwatch"));
    crate::metrics::exposition::encode(&r, &[], format, 64)
}

fn ours(f: impl FnOnce(&mut Registry), format: Format) -> String {
    let mut r = Registry::default();
    f(&mut r);
    let mut w = Writer::new(format, 64);
    r.write(&mut w);
    w.finish()
}

#[test]
fn lines_are_what_prometheus_client_writes() {
    let values = ["plain", "q\"uo\\te\nnl", "nul\0del\u{7f}c1\u{85}λ", ""];
    let pc_c = prometheus_client::metrics::family::Family::<Two, Counter>::default();
    let pc_g = prometheus_client::metrics::family::Family::<Two, Gauge>::default();
    let pc_f = prometheus_client::metrics::family::Family::<ComponentOnly, GaugeF>::default();
    let c = Lines::<Two, Counter>::default();
    let g = Lines::<Two, Gauge>::default();
    let f = Lines::<ComponentOnly, GaugeF>::default();
    // One series each (a family's order is its map's).
    for (i, v) in values.iter().enumerate() {
        let two = Two {
            component: format!("c{i}"),
            other: v.to_string(),
        };
        let i = i as i64;
        pc_c.get_or_create(&two).inc_by(7 * i as u64);
        c.get_or_create(&two).inc_by(7 * i as u64);
        pc_g.get_or_create(&two).set(-3 * i);
        g.get_or_create(&two).set(-3 * i);
    }
    let only = ComponentOnly {
        component: "x\"y".into(),
    };
    for v in [1.5e9, 0.25, 3.0, 1e-7] {
        pc_f.get_or_create(&only).set(v);
        f.get_or_create(&only).set(v);
        for format in Format::ALL {
            let (pc_c, pc_g, pc_f) = (pc_c.clone(), pc_g.clone(), pc_f.clone());
            let sorted = |s: String| {
                let mut l: Vec<_> = s.lines().map(str::to_string).collect();
                l.sort();
                l
            };
            let a = theirs(
                |r| {
                    r.register("n", "Counted", pc_c);
                    r.register("g", "Gauged", pc_g);
                    r.register("f_seconds", "Float", pc_f);
                },
                format,
            );
            let (c, g, f) = (c.clone(), g.clone(), f.clone());
            let b = ours(
                |r| {
                    r.register("depwatch", "n", "Counted", c);
                    r.register("depwatch", "g", "Gauged", g);
                    r.register("depwatch", "f_seconds", "Float", f);
                },
                format,
            );
            assert_eq!(sorted(a), sorted(b.clone()), "{format:?}: {b}");
            assert!(!b.contains('\0') && !b.contains('\u{85}'), "{b}");
        }
    }
    assert!(c.remove(&Two {
        component: "c0".into(),
        other: "plain".into()
    }));
    assert!(
        ours(
            |r| r.register("d", "e", "E", Lines::<Two, Gauge>::default()),
            Format::Text
        )
        .is_empty()
    );
}

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

#[test]
fn special_finds_every_byte_to_escape_wherever_it_is() {
    let simple = |v: &str| {
        v.bytes()
            .any(|b| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f || b == 0xc2)
    };
    // Every character of one or two bytes, at every place of strings
    // from 1 to 20 bytes, among plain letters and other bytes that sit
    // next to the special ones (0x1f, 0x20, 0x21, 0x5b, 0x5d, 0x7e).
    let around = [
        "a", "\u{1f}", " ", "!", "[", "]", "~", "é", "\u{c1}", "\u{100}", "#",
    ];
    for c in (0u32..0x800).filter_map(char::from_u32) {
        for len in 1..20 {
            for at in 0..len {
                for fill in around {
                    let mut v = String::new();
                    for i in 0..len {
                        if i == at {
                            v.push(c);
                        } else {
                            v.push_str(fill);
                        }
                    }
                    assert_eq!(special(&v), simple(&v), "{v:?}");
                }
            }
        }
    }
    assert!(!special(""));
    assert!(!special("p0042"));
    assert!(special("p0042\u{85}"));
}

#[test]
fn floats_are_the_shortest_text_that_reads_back() {
    let text = |v: f64| {
        let mut s = String::new();
        push_f64(&mut s, v);
        s
    };
    // As dtoa (prometheus-client) writes them: the values of a scrape.
    for (v, want) in [
        (0.0, "0.0"),
        (2.0, "2.0"),
        (7.72e-7, "7.72e-7"),
        (0.009308315000000001, "0.009308315000000001"),
        (1796660888.2226086, "1796660888.2226086"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
    ] {
        assert_eq!(text(v), want);
        assert_eq!(text(v), dtoa::Buffer::new().format(v));
    }
    // From 1e16 up, an exponent where dtoa writes every digit.
    assert_eq!(text(1e16), "1e+16");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = f64::from_bits(x);
        if v.is_nan() {
            assert_eq!(text(v), "NaN");
        } else {
            let back: f64 = text(v).parse().unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{v:e} as {}", text(v));
        }
    }
}

#[test]
fn histograms_are_what_a_family_of_histograms_writes() {
    use prometheus_client::metrics::histogram::Histogram as PcHistogram;
    let buckets: Arc<[f64]> = Arc::from([0.005, 0.1, 1.0, 2.5].as_slice());
    let family = prometheus_client::metrics::family::Family::<ComponentOnly, PcHistogram, _>::new_with_constructor(
        || PcHistogram::new([0.005, 0.1, 1.0, 2.5]),
    );
    let h = Histograms::<ComponentOnly>::default();
    for (c, vs) in [
        ("a", &[0.05, 0.5, 3.0, 1.0, f64::NAN][..]),
        ("b", &[0.001][..]),
    ] {
        let l = ComponentOnly {
            component: c.into(),
        };
        for v in vs {
            family.get_or_create(&l).observe(*v);
            h.observe(&l, &buckets, *v);
        }
    }
    for format in Format::ALL {
        let family = family.clone();
        let a = theirs(|r| r.register("d_seconds", "D", family), format);
        let h = h.clone();
        let b = ours(|r| r.register("depwatch", "d_seconds", "D", h), format);
        let sorted = |s: &str| {
            let mut l: Vec<_> = s.lines().collect();
            l.sort();
            l.join("\n")
        };
        assert_eq!(sorted(&a), sorted(&b), "{format:?}");
        assert!(
            b.contains("depwatch_d_seconds_bucket{le=\"1.0\",component=\"a\"} 3\n"),
            "{b}"
        );
    }

    // Other buckets (a reload changed them): the series starts over.
    let l = ComponentOnly {
        component: "a".into(),
    };
    let more: Arc<[f64]> = Arc::from([0.1, 1.0, 5.0].as_slice());
    h.observe(&l, &more, 3.0);
    let c = ours(
        |r| r.register("depwatch", "d_seconds", "D", h.clone()),
        Format::Text,
    );
    assert!(
        c.contains("depwatch_d_seconds_count{component=\"a\"} 1\n"),
        "{c}"
    );
    assert!(
        c.contains("depwatch_d_seconds_bucket{le=\"5.0\",component=\"a\"} 1\n"),
        "{c}"
    );
    // Series of one family with two bucket lists: each its own `le`s,
    // whichever the writer met first.
    let les = |c: &str, comp: &str| {
        let tail = format!(",component=\"{comp}\"}}");
        c.lines()
            .filter(|l| l.contains(&tail) && l.contains("_bucket{le=\""))
            .map(|l| l.split('"').nth(1).unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(les(&c, "a"), ["0.1", "1.0", "5.0", "+Inf"], "{c}");
    assert_eq!(les(&c, "b"), ["0.005", "0.1", "1.0", "2.5", "+Inf"], "{c}");
    assert!(h.remove(&l));
}
