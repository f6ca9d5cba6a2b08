//! The labels of a log rule (`labels`, `group_by`): each value seen is
//! interned once to a small id, capped per rule (beyond the cap: `other`),
//! and a `group_by` category is its fields' ids packed in one integer.
//!
//! This is on the per-line path: a line's value is found among the values
//! already seen without hashing while they are few (the usual case: a
//! status, an operation, a partner), by comparing its length and its first
//! and last eight bytes.

use std::collections::HashMap;

/// Maps on the per-line path: foldhash (hashbrown's hasher) instead of
/// SipHash. Label values are capped per rule, so collisions cost little.
pub(super) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A category of a rule's `group_by`: the value ids of its fields, 16 bits
/// each (at most 4 fields, ids below `max_label_values` ≤ 10000, `other`
/// as 0xFFFF), so that the per-line lookup hashes one integer.
pub(super) type GroupKey = u64;

pub(super) const OTHER_GROUP_ID: u64 = 0xFFFF;

pub(super) fn group_id(id: u32) -> u64 {
    if id == OTHER_ID {
        OTHER_GROUP_ID
    } else {
        u64::from(id)
    }
}

/// The value ids of a category, in `group_by` order (zip it with the fields).
pub(super) fn unpack(key: GroupKey) -> impl Iterator<Item = u32> {
    (0..4).map(move |i| match (key >> (16 * i)) & 0xFFFF {
        OTHER_GROUP_ID => OTHER_ID,
        id => id as u32,
    })
}

/// The value that stands for every label value beyond a rule's cap.
pub const OTHER: &str = "other";
pub(super) const OTHER_ID: u32 = u32::MAX;

/// Up to this many values are found by a linear scan of their [`Short`]
/// keys; beyond, through the hash map.
const SCANNED: usize = 16;

/// A text's length and its first and last bytes (eight each from 8
/// bytes on, four each from 4, else every byte): equal keys mean equal
/// texts up to 16 bytes; longer ones need a full comparison after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Short {
    len: usize,
    head: u64,
    tail: u64,
}

impl Short {
    #[inline]
    pub(super) fn of(b: &[u8]) -> Short {
        let n = b.len();
        let (head, tail) = if n >= 8 {
            (u64_at(b, 0), u64_at(b, n - 8))
        } else if n >= 4 {
            (u64::from(u32_at(b, 0)), u64::from(u32_at(b, n - 4)))
        } else {
            let h = b
                .iter()
                .enumerate()
                .fold(0u64, |h, (i, &x)| h | u64::from(x) << (8 * i));
            (h, 0)
        };
        Short { len: n, head, tail }
    }

    /// Whether `text`, whose key this is, equals `stored`, whose key is
    /// `other`.
    #[inline]
    pub(super) fn same(&self, other: &Short, text: &str, stored: &str) -> bool {
        self == other && (self.len <= 16 || text == stored)
    }
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[i..i + 4]);
    u32::from_le_bytes(w)
}

/// One label of a rule: its field and the distinct values seen (capped).
#[derive(Debug)]
pub(super) struct Label {
    pub(super) name: String,
    pub(super) slot: usize,
    shorts: Vec<Short>,
    ids: FastMap<Box<str>, u32>,
    values: Vec<Box<str>>,
}

impl Label {
    pub(super) fn new(name: String, slot: usize) -> Label {
        Label {
            name,
            slot,
            shorts: Vec::new(),
            ids: FastMap::default(),
            values: Vec::new(),
        }
    }

    /// The id of `value`: its own, `OTHER_ID` beyond `cap` values.
    pub(super) fn id(&mut self, value: &str, cap: usize) -> u32 {
        if let Some(id) = self.find(value) {
            return id;
        }
        // Control characters (a JSON "\u0000") never reach a label: values
        // differing only there are one series.
        let safe = crate::metrics::kit::label_safe(value);
        if let std::borrow::Cow::Owned(s) = &safe
            && let Some(id) = self.find(s)
        {
            return id;
        }
        if self.values.len() >= cap {
            return OTHER_ID;
        }
        let id = self.values.len() as u32;
        self.shorts.push(Short::of(safe.as_bytes()));
        self.values.push(safe.as_ref().into());
        self.ids.insert(safe.into(), id);
        id
    }

    #[inline]
    fn find(&self, value: &str) -> Option<u32> {
        if self.values.len() > SCANNED {
            return self.ids.get(value).copied();
        }
        let key = Short::of(value.as_bytes());
        self.shorts
            .iter()
            .zip(&self.values)
            .position(|(k, v)| key.same(k, value, v))
            .map(|i| i as u32)
    }

    pub(super) fn value(&self, id: u32) -> &str {
        if id == OTHER_ID {
            OTHER
        } else {
            &self.values[id as usize]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_get_one_id_each_whatever_their_length() {
        let mut l = Label::new("x".into(), 0);
        let values: Vec<String> = (0..40)
            .flat_map(|i| {
                [
                    format!("{i}"),
                    format!("value-{i}"),
                    format!("a-longer-value-{i:04}"),
                    format!("prefix-{i:02}-and-the-same-suffix"),
                ]
            })
            .collect();
        let ids: Vec<u32> = values.iter().map(|v| l.id(v, 1000)).collect();
        // Again, now found (through the scan, then through the map).
        for (v, id) in values.iter().zip(&ids) {
            assert_eq!(l.id(v, 1000), *id, "{v}");
            assert_eq!(l.value(*id), v);
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), values.len());
    }

    #[test]
    fn same_ends_different_middles_are_different_values() {
        let mut l = Label::new("x".into(), 0);
        let a = l.id("abcdefgh-1-ijklmnop", 10);
        let b = l.id("abcdefgh-2-ijklmnop", 10);
        assert_ne!(a, b);
        assert_eq!(l.id("abcdefgh-2-ijklmnop", 10), b);
        assert_eq!(l.id("", 10), l.id("", 10));
        assert_ne!(l.id("", 10), l.id("\0", 10));
    }

    #[test]
    fn control_characters_share_the_safe_value_and_the_cap_holds() {
        let mut l = Label::new("x".into(), 0);
        let a = l.id("a\u{1}b", 3);
        assert_eq!(l.value(a), "a\u{FFFD}b");
        assert_eq!(l.id("a\u{2}b", 3), a);
        assert_eq!(l.id("a\u{FFFD}b", 3), a);
        l.id("c", 3);
        l.id("d", 3);
        assert_eq!(l.id("e", 3), OTHER_ID);
        assert_eq!(l.value(OTHER_ID), OTHER);
    }
}
