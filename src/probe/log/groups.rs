//! The categories of a rule's `group_by` as the per-line path finds them:
//! each category's latency, by its key (the fields' value ids), and a memo
//! from the fields' raw texts to the category, so that a line of a
//! category seen before costs a few comparisons, not a lookup per field
//! and one more per category.

use super::labels::{FastMap, GroupKey, Short};
use super::stats::Latency;

/// At most this many field combinations are memoized (the table at most
/// half full); lines of others take the lookups.
const MEMO: usize = 64;
const MEMO_TABLE: usize = 2 * MEMO;
/// `group_by` takes at most this many fields (16 bits of the key each).
pub(super) const MAX_FIELDS: usize = 4;

/// Every category of a rule with its latency.
#[derive(Debug)]
pub struct ByGroup {
    keys: Vec<GroupKey>,
    stats: Vec<Latency>,
    index: FastMap<GroupKey, usize>,
    /// The raw texts' keys of each memoized combination, and its category.
    memo: Vec<([Short; MAX_FIELDS], usize)>,
    /// Index + 1 into `memo`, 0 for an empty place.
    table: [u16; MEMO_TABLE],
}

impl Default for ByGroup {
    fn default() -> Self {
        ByGroup {
            keys: Vec::new(),
            stats: Vec::new(),
            index: FastMap::default(),
            memo: Vec::new(),
            table: [0; MEMO_TABLE],
        }
    }
}

/// The raw texts of a line's `group_by` fields, by their keys (an absent
/// field as the empty text: a JSON value is never empty).
pub(super) type Raws = [Short; MAX_FIELDS];

fn place(raws: &Raws) -> usize {
    let h = raws
        .iter()
        .fold(0u64, |h, s| h.rotate_left(17) ^ s.mix())
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 57) as usize % MEMO_TABLE
}

impl ByGroup {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = GroupKey> + '_ {
        self.keys.iter().copied()
    }

    pub fn get_mut(&mut self, key: GroupKey) -> Option<&mut Latency> {
        let i = *self.index.get(&key)?;
        Some(&mut self.stats[i])
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (GroupKey, &mut Latency)> {
        self.keys.iter().copied().zip(self.stats.iter_mut())
    }

    /// Drops a category (its window emptied). The memo starts over: the
    /// indexes it holds moved.
    pub fn remove(&mut self, key: GroupKey) {
        let Some(i) = self.index.remove(&key) else {
            return;
        };
        self.keys.swap_remove(i);
        self.stats.swap_remove(i);
        if let Some(moved) = self.keys.get(i) {
            self.index.insert(*moved, i);
        }
        self.memo.clear();
        self.table = [0; MEMO_TABLE];
    }

    /// The category of a combination of raw texts seen before.
    #[inline]
    pub(super) fn recall(&self, raws: &Raws) -> Option<usize> {
        if self.memo.is_empty() {
            return None;
        }
        let mut i = place(raws);
        loop {
            let at = usize::from(self.table[i]);
            let (keys, cat) = self.memo.get(at.checked_sub(1)?)?;
            if keys == raws {
                return Some(*cat);
            }
            i = (i + 1) % MEMO_TABLE;
        }
    }

    /// Remembers that `raws` (each exact: see [`Short::exact`]) are the
    /// category at `cat`.
    pub(super) fn remember(&mut self, raws: &Raws, cat: usize) {
        if self.memo.len() >= MEMO || !raws.iter().all(Short::exact) {
            return;
        }
        let mut i = place(raws);
        while self.table[i] != 0 {
            i = (i + 1) % MEMO_TABLE;
        }
        self.memo.push((*raws, cat));
        self.table[i] = self.memo.len() as u16;
    }

    /// The index of category `key`, made with `new` when it is not there.
    pub(super) fn index_of(&mut self, key: GroupKey, new: impl FnOnce() -> Latency) -> usize {
        if let Some(i) = self.index.get(&key) {
            return *i;
        }
        self.keys.push(key);
        self.stats.push(new());
        self.index.insert(key, self.keys.len() - 1);
        self.keys.len() - 1
    }

    pub(super) fn at(&mut self, i: usize) -> &mut Latency {
        &mut self.stats[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn raws(texts: &[&str]) -> Raws {
        let mut r = [Short::EMPTY; MAX_FIELDS];
        for (r, t) in r.iter_mut().zip(texts) {
            *r = Short::of(t.as_bytes());
        }
        r
    }

    #[test]
    fn the_memo_finds_what_it_was_told_and_starts_over_on_removal() {
        let mut g = ByGroup::default();
        let new = || Latency::new(Duration::from_secs(60));
        let a = g.index_of(1, new);
        let b = g.index_of(2, new);
        assert_eq!(g.index_of(1, new), a);
        g.remember(&raws(&["\"x\"", "\"y\""]), a);
        g.remember(&raws(&["\"x\"", "7"]), b);
        assert_eq!(g.recall(&raws(&["\"x\"", "\"y\""])), Some(a));
        assert_eq!(g.recall(&raws(&["\"x\"", "7"])), Some(b));
        assert_eq!(g.recall(&raws(&["\"x\""])), None);
        // Texts past 16 bytes are not memoized (their keys are not exact).
        g.remember(&raws(&["\"a-long-value-of-20\""]), a);
        assert_eq!(g.recall(&raws(&["\"a-long-value-of-20\""])), None);
        g.at(b).observe(Instant::now(), 1.0);
        g.remove(1);
        assert_eq!(g.recall(&raws(&["\"x\"", "7"])), None);
        assert_eq!(g.keys().collect::<Vec<_>>(), [2]);
        assert_eq!(g.get_mut(2).unwrap().count(Instant::now()), 1);
        // Full: further combinations are looked up every time.
        for i in 0..(MEMO + 5) {
            g.remember(&raws(&[&i.to_string()]), 0);
        }
        assert_eq!(g.recall(&raws(&["3"])), Some(0));
        assert_eq!(g.recall(&raws(&[&(MEMO + 2).to_string()])), None);
    }
}
