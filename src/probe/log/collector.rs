//! The rule families of every live log probe, written by one collector:
//! their names come from configuration, so they are encoded here rather
//! than registered as families.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};

use super::config::FamilyType;
use super::rules::{self, Engine};
use super::state::{Counts, Live, ProbeState};
use crate::util::sync::lock;

#[derive(Debug)]
pub(super) struct Collector(pub(super) Arc<Live>);

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut probes: Vec<Arc<ProbeState>> = lock(&self.0.probes)
            .iter()
            .map(|(_, p)| p.clone())
            .collect();
        probes.sort_by(|a, b| a.component.cmp(&b.component));
        encode_probes(&probes, &mut enc)
    }
}

/// A rule family: its type, help, and the (component, rule) that feed it.
type Members<'a> = (FamilyType, String, Vec<(&'a str, &'a rules::Rule)>);

pub(super) fn encode_probes(
    probes: &[Arc<ProbeState>],
    enc: &mut DescriptorEncoder,
) -> Result<(), fmt::Error> {
    // Engines first: line counts are updated under their locks, so the
    // totals below agree with the rule series.
    let engines: Vec<(&str, MutexGuard<'_, Engine>)> = probes
        .iter()
        .map(|p| (p.component.as_str(), lock(&p.engine)))
        .collect();
    {
        let mut m = enc.encode_descriptor("log_lines", "Log lines read, by result: matched a rule, matched none, or invalid (not JSON, too long).", None, FamilyType::Counter.metric_type())?;
        for p in probes {
            for (result, v) in [
                ("matched", &p.counts.matched),
                ("unmatched", &p.counts.unmatched),
                ("invalid", &p.counts.invalid),
            ] {
                let labels = [("component", p.component.as_str()), ("result", result)];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&v.load(Ordering::Relaxed), None)?;
            }
        }
    }
    for (name, help, pick) in [
        (
            "log_read_bytes",
            "Bytes read from log files.",
            (|c: &Counts| &c.read_bytes) as fn(&Counts) -> &AtomicU64,
        ),
        (
            "log_rotations",
            "Log file rotations seen (renamed away, replaced).",
            |c: &Counts| &c.rotations,
        ),
        (
            "log_truncations",
            "Log files that shrank (copytruncate) and were read again from the start.",
            |c: &Counts| &c.truncations,
        ),
    ] {
        let mut m = enc.encode_descriptor(name, help, None, FamilyType::Counter.metric_type())?;
        for p in probes {
            let labels = [("component", p.component.as_str())];
            m.encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(
                    &pick(&p.counts).load(Ordering::Relaxed),
                    None,
                )?;
        }
    }
    {
        let mut m = enc.encode_descriptor(
            "log_files",
            "Log files being read.",
            None,
            FamilyType::Gauge.metric_type(),
        )?;
        for p in probes {
            let n = lock(&p.view).files.len() as i64;
            let labels = [("component", p.component.as_str())];
            m.encode_family(&labels)?.encode_gauge(&n)?;
        }
    }
    {
        let mut m = enc.encode_descriptor(
            "log_rule_last_match_timestamp_seconds",
            "When a line last matched the rule (Unix time).",
            None,
            FamilyType::Gauge.metric_type(),
        )?;
        for (component, e) in &engines {
            for r in &e.rules {
                if let Some(t) = r.last_match_unix {
                    let labels = [("component", *component), ("rule", r.spec.metric.as_str())];
                    m.encode_family(&labels)?.encode_gauge(&t)?;
                }
            }
        }
    }
    {
        let mut m = enc.encode_descriptor("log_label_overflows", "Matching lines whose label value was counted as `other` (the rule's max_label_values was reached).", None, FamilyType::Counter.metric_type())?;
        for (component, e) in &engines {
            for r in &e.rules {
                if !r.spec.labels.is_empty() {
                    let labels = [("component", *component), ("rule", r.spec.metric.as_str())];
                    m.encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&r.overflowed, None)?;
                }
            }
        }
    }
    // The latency levels as the latest check judged them.
    for (name, help) in [
        (
            "log_latency_level",
            "A category's latency against its rule's levels: 0 below, 1 over latency_warn, 2 over latency_critical (as the latest check judged).",
        ),
        (
            "log_latency_quantile_seconds",
            "The quantile of a category's latency that its rule's levels judge (latency_quantile, p95 by default) over the rule's window.",
        ),
    ] {
        let mut m = enc.encode_descriptor(name, help, None, FamilyType::Gauge.metric_type())?;
        for (component, e) in &engines {
            for r in &e.rules {
                for j in &r.judged {
                    let labels = [
                        ("component", *component),
                        ("rule", r.spec.metric.as_str()),
                        ("category", j.category.as_str()),
                    ];
                    let mut f = m.encode_family(&labels)?;
                    if name == "log_latency_level" {
                        f.encode_gauge(&i64::from(j.level))?;
                    } else {
                        f.encode_gauge(&j.secs)?;
                    }
                }
            }
        }
    }
    // Rule families, merged across probes by name.
    let mut families: BTreeMap<String, Members<'_>> = BTreeMap::new();
    for (component, e) in &engines {
        for r in &e.rules {
            for (name, ty) in r.spec.families() {
                let help = if ty == FamilyType::Histogram {
                    format!("Durations of the operations of rule {}.", r.spec.metric)
                } else if name == r.spec.metric {
                    r.spec.help.clone()
                } else {
                    format!(
                        "Field {} of the lines of rule {}.",
                        r.spec.value.as_ref().map_or("", |v| v.field.as_str()),
                        r.spec.metric
                    )
                };
                let entry = families
                    .entry(name)
                    .or_insert_with(|| (ty, help, Vec::new()));
                // A type clash between probes is refused at build time.
                if entry.0 == ty {
                    entry.2.push((component, r));
                }
            }
        }
    }
    for (name, (ty, help, members)) in &families {
        let full = format!("log_{name}");
        let mut m = enc.encode_descriptor(&full, help, None, ty.metric_type())?;
        for (component, r) in members {
            for (key, s) in &r.series {
                let mut labels: Vec<(&str, &str)> = Vec::with_capacity(1 + key.len());
                labels.push(("component", component));
                labels.extend(r.labels_of(key));
                let mut f = m.encode_family(&labels)?;
                match ty {
                    FamilyType::Histogram => {
                        let Some(d) = &r.spec.duration else { continue };
                        let mut buckets: Vec<(f64, u64)> = d
                            .buckets
                            .iter()
                            .copied()
                            .zip(s.buckets.iter().copied())
                            .collect();
                        buckets.push((f64::INFINITY, s.buckets.last().copied().unwrap_or(0)));
                        f.encode_histogram::<NoLabelSet>(s.dur_sum, s.dur_count, &buckets, None)?;
                    }
                    FamilyType::Counter if *name == r.spec.metric => {
                        f.encode_counter::<NoLabelSet, _, u64>(&s.count, None)?;
                    }
                    FamilyType::Counter => {
                        if s.has_value {
                            f.encode_counter::<NoLabelSet, _, u64>(&s.value, None)?;
                        }
                    }
                    _ => {
                        if s.has_value {
                            f.encode_gauge(&s.value)?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
