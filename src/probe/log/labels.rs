//! The labels of a log rule (`labels`, `group_by`): each value seen is
//! interned once to a small id, capped per rule (beyond the cap: `other`),
//! and a `group_by` category is its fields' ids packed in one integer.
//!
//! This is on the per-line path: while a label has few values (the usual
//! case: a status, an operation, a partner), a line's value is found in a
//! small open-addressed table keyed by its length and its first and last
//! bytes ([`Short`]): a multiplication and one comparison, no hashing of
//! the text and no byte comparison up to 16 bytes.

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

/// Up to this many values are found through the small table (at most
/// half full); beyond, through the hash map.
const SMALL: usize = 32;
const TABLE: usize = 2 * SMALL;

/// A text's length, its first eight bytes (fewer, zero-padded, for a
/// shorter text) and, past eight bytes, its last eight: equal keys mean
/// equal texts up to 16 bytes; longer ones need a full comparison after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Short {
    len: usize,
    head: u64,
    tail: u64,
}

impl Short {
    /// The key of the empty text.
    pub(super) const EMPTY: Short = Short {
        len: 0,
        head: 0,
        tail: 0,
    };

    #[inline]
    pub(super) fn of(b: &[u8]) -> Short {
        let n = b.len();
        let (head, tail) = if n >= 8 {
            (u64_at(b, 0), if n > 8 { u64_at(b, n - 8) } else { 0 })
        } else if n >= 4 {
            // Two words that overlap: together, the n bytes.
            let (lo, hi) = (u32_at(b, 0), u32_at(b, n - 4));
            (u64::from(lo) | u64::from(hi) << (8 * (n - 4)), 0)
        } else {
            let h = b
                .iter()
                .enumerate()
                .fold(0u64, |h, (i, &x)| h | u64::from(x) << (8 * i));
            (h, 0)
        };
        Short { len: n, head, tail }
    }

    /// The key of `buf[a..b]`, read as whole words of `buf` where it has
    /// them around the text: no branch on the text's length, which varies
    /// from line to line (the same as [`Short::of`]).
    #[inline]
    pub(super) fn within(buf: &[u8], a: usize, b: usize) -> Short {
        let n = b - a;
        if a + 8 > buf.len() {
            return Short::of(&buf[a..b]);
        }
        let keep = u64::MAX.checked_shr(64 - 8 * n.min(8) as u32).unwrap_or(0);
        // Past eight bytes b - 8 >= a; otherwise the word read is not used.
        let tail = u64_at(buf, b.max(8) - 8);
        Short {
            len: n,
            head: u64_at(buf, a) & keep,
            tail: if n > 8 { tail } else { 0 },
        }
    }

    /// Where the key starts looking in a table of `TABLE` places.
    #[inline]
    fn place(&self) -> usize {
        (self.mix() >> 58) as usize % TABLE
    }

    /// The key's bits mixed into one word (for tables keyed by it).
    #[inline]
    pub(super) fn mix(&self) -> u64 {
        (self.head ^ self.tail.rotate_left(29) ^ self.len as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// Whether equal keys mean equal texts (up to 16 bytes).
    #[inline]
    pub(super) fn exact(&self) -> bool {
        self.len <= 16
    }

    /// Whether `text`, whose key this is, equals `stored`, whose key is
    /// `other`.
    #[inline]
    pub(super) fn same(&self, other: &Short, text: &[u8], stored: &[u8]) -> bool {
        self == other && (self.len <= 16 || text == stored)
    }
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[i..i + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(w)
}

/// Up to `SMALL` texts, found by their [`Short`] key in an open-addressed
/// table at most half full: a multiplication, usually one comparison.
/// (Label values here; the keys of a level of the rules' paths in `scan.rs`.)
#[derive(Debug)]
pub(super) struct Small {
    shorts: Vec<Short>,
    texts: Vec<Box<str>>,
    /// Index + 1 into `texts`, 0 for an empty place.
    table: [u32; TABLE],
}

impl Small {
    pub(super) fn new() -> Small {
        Small {
            shorts: Vec::new(),
            texts: Vec::new(),
            table: [0; TABLE],
        }
    }

    pub(super) fn is_full(&self) -> bool {
        self.texts.len() >= SMALL
    }

    /// The index of `text`, if held.
    #[inline]
    pub(super) fn find(&self, text: &[u8]) -> Option<usize> {
        let key = Short::of(text);
        let mut i = key.place();
        loop {
            let at = self.table[i] as usize;
            if at == 0 {
                return None;
            }
            if key.same(&self.shorts[at - 1], text, self.texts[at - 1].as_bytes()) {
                return Some(at - 1);
            }
            i = (i + 1) % TABLE;
        }
    }

    /// Adds `text` (not held, and the table not full) at the next index.
    pub(super) fn push(&mut self, text: &str) {
        let short = Short::of(text.as_bytes());
        let mut i = short.place();
        while self.table[i] != 0 {
            i = (i + 1) % TABLE;
        }
        self.shorts.push(short);
        self.texts.push(text.into());
        self.table[i] = self.texts.len() as u32;
    }
}

/// One label of a rule: its field and the distinct values seen (capped).
#[derive(Debug)]
pub(super) struct Label {
    pub(super) name: String,
    pub(super) slot: usize,
    /// The first `SMALL` values (ids are their indexes).
    small: Small,
    /// Every value, for labels with more.
    ids: FastMap<Box<str>, u32>,
    values: Vec<Box<str>>,
    /// Field texts as the JSON has them (a string with its quotes and
    /// escapes, a number as written) already resolved: a line's field is
    /// found without decoding it. At most `SMALL`, each short.
    raw: Small,
    raw_ids: Vec<u32>,
}

/// Raw texts longer than this are decoded every time (they are rare as
/// label values, and the table stays small).
const RAW_MAX: usize = 64;

impl Label {
    pub(super) fn new(name: String, slot: usize) -> Label {
        Label {
            name,
            slot,
            small: Small::new(),
            ids: FastMap::default(),
            values: Vec::new(),
            raw: Small::new(),
            raw_ids: Vec::new(),
        }
    }

    /// The id of a field's raw JSON text, if seen before.
    #[inline]
    pub(super) fn raw_id(&self, raw: &[u8]) -> Option<u32> {
        if self.raw_ids.is_empty() {
            return None;
        }
        self.raw.find(raw).map(|i| self.raw_ids[i])
    }

    /// Remembers that `raw` decodes to the value of `id`.
    pub(super) fn remember_raw(&mut self, raw: &str, id: u32) {
        if self.raw.is_full() || raw.len() > RAW_MAX || self.raw.find(raw.as_bytes()).is_some() {
            return;
        }
        self.raw.push(raw);
        self.raw_ids.push(id);
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
        if !self.small.is_full() {
            self.small.push(&safe);
        }
        self.values.push(safe.as_ref().into());
        self.ids.insert(safe.into(), id);
        id
    }

    #[inline]
    fn find(&self, value: &str) -> Option<u32> {
        if self.values.len() > SMALL {
            return self.ids.get(value).copied();
        }
        self.small.find(value.as_bytes()).map(|i| i as u32)
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
    fn keys_within_a_buffer_are_the_keys_of_the_text() {
        let buf: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for a in 0..buf.len() {
            for b in a..=buf.len() {
                assert_eq!(Short::within(&buf, a, b), Short::of(&buf[a..b]), "{a}..{b}");
            }
        }
        assert_eq!(Short::of(b""), Short::EMPTY);
    }

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
    fn raw_texts_resolve_to_the_ids_remembered() {
        let mut l = Label::new("x".into(), 0);
        let id = l.id("a/b", 10);
        assert_eq!(l.raw_id(b"\"a\\/b\""), None);
        l.remember_raw("\"a\\/b\"", id);
        l.remember_raw("\"a/b\"", id);
        assert_eq!(l.raw_id(b"\"a\\/b\""), Some(id));
        assert_eq!(l.raw_id(b"\"a/b\""), Some(id));
        assert_eq!(l.raw_id(b"\"a/c\""), None);
        // Long raw texts are not kept.
        let long = format!("\"{}\"", "y".repeat(RAW_MAX));
        l.remember_raw(&long, id);
        assert_eq!(l.raw_id(long.as_bytes()), None);
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
