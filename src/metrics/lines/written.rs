//! What a compressed encoding keeps of a family written line by line, so
//! that the next one copies the family's compressed lines while its series
//! and values are as they were (see [`Written`]).

use crate::metrics::exposition::{Segment, Writer};

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

/// A digest of `values`, with foldhash's fixed seed: SipHash, the
/// standard one, took a third of a millisecond a scrape at 10,000
/// components for a check of "did anything change".
fn digest(values: &[u64]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::default().hash_one(values)
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
