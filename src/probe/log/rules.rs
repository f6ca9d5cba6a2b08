//! The rule engine: finds the fields the rules need in a JSON line without
//! building a document (`scan.rs`: one validating pass that skips every
//! other field), matches rules, and keeps each rule's series (counter,
//! duration histogram, value) under bounded labels.
//!
//! The hot path does no allocation per line in the common case: field
//! positions go into a reused buffer, strings without escapes are borrowed
//! from the line, label values are interned per rule.

use std::borrow::Cow;
use std::time::Instant;

use serde_json::{Map, Value};

use super::config::{DurUnit, RuleSpec, Scalar, Spec, Test, ValueKind};
use super::godur;
use super::groups::{ByGroup, MAX_FIELDS, Raws};
use super::labels::{FastMap, Label, OTHER_GROUP_ID, OTHER_ID, Short, group_id};
pub(super) use super::labels::{GroupKey, unpack};
use super::scan::{Scanner, Spans, Trie};
use super::stats::{GROUP_SAMPLES, Latency, SlowOp, Slowest};
use super::unseen::{self, Unseen};

/// What a line was, for `depwatch_log_lines_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    Matched,
    Unmatched,
    Invalid,
}

/// The id of a label's value in this line (`""` when the field is absent
/// or null): a raw text seen before is not decoded again.
fn label_id(l: &mut Label, spans: &Spans, text: &str, cap: usize) -> u32 {
    let Some((a, b)) = spans[l.slot] else {
        return l.id("", cap);
    };
    let (a, b) = (a as usize, b as usize);
    if let Some(id) = l.raw_id(&text.as_bytes()[a..b]) {
        return id;
    }
    let raw = &text[a..b];
    let f = Field::from_raw(raw);
    let id = l.id(f.as_ref().map_or("", Field::text), cap);
    l.remember_raw(raw, id);
    id
}

/// The index of a line's category in `by_group`: recalled from the raw
/// texts of its fields, else found through each field's value id.
fn category(
    by_group: &mut ByGroup,
    groups: &mut [Label],
    window: std::time::Duration,
    spans: &Spans,
    text: &str,
    cap: usize,
) -> usize {
    let mut raws: Raws = [Short::EMPTY; MAX_FIELDS];
    for (r, g) in raws.iter_mut().zip(&*groups) {
        if let Some((a, b)) = spans[g.slot] {
            *r = Short::within(text.as_bytes(), a as usize, b as usize);
        }
    }
    if let Some(i) = by_group.recall(&raws) {
        return i;
    }
    let mut key: GroupKey = 0;
    for (i, g) in groups.iter_mut().enumerate() {
        let id = label_id(g, spans, text, cap);
        key |= group_id(id) << (16 * i);
    }
    // Combinations are capped too: past max_label_values categories, a new
    // one counts as all-`other`.
    if by_group.get_mut(key).is_none() && by_group.len() >= cap {
        key = (0..groups.len()).fold(0, |k, i| k | OTHER_GROUP_ID << (16 * i));
    }
    let i = by_group.index_of(key, || Latency::with_cap(window, GROUP_SAMPLES));
    by_group.remember(&raws, i);
    i
}

/// A field's value, borrowed from the line where possible.
#[derive(Debug, PartialEq)]
pub enum Field<'a> {
    Str(Cow<'a, str>),
    /// A number, with its JSON text.
    Num(&'a str),
    Bool(bool),
    /// An object or array (only `exists` looks at those).
    Other(&'a str),
}

impl<'a> Field<'a> {
    /// Interprets raw JSON text; `None` for `null`.
    fn from_raw(raw: &'a str) -> Option<Field<'a>> {
        match raw.as_bytes().first()? {
            b'"' => {
                let inner = &raw[1..raw.len() - 1];
                // A byte loop: these are short, where memchr's setup costs more.
                if inner.bytes().any(|b| b == b'\\') {
                    serde_json::from_str::<String>(raw)
                        .ok()
                        .map(|s| Field::Str(Cow::Owned(s)))
                } else {
                    Some(Field::Str(Cow::Borrowed(inner)))
                }
            }
            b't' => Some(Field::Bool(true)),
            b'f' => Some(Field::Bool(false)),
            b'n' => None,
            b'{' | b'[' => Some(Field::Other(raw)),
            _ => Some(Field::Num(raw)),
        }
    }

    /// The value as text (labels, equality): strings unquoted, the rest as written.
    pub fn text(&self) -> &str {
        match self {
            Field::Str(s) => s,
            Field::Num(n) | Field::Other(n) => n,
            Field::Bool(true) => "true",
            Field::Bool(false) => "false",
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Field::Str(s) => Value::String(s.to_string()),
            Field::Num(n) | Field::Other(n) => serde_json::from_str(n).unwrap_or(Value::Null),
            Field::Bool(b) => Value::Bool(*b),
        }
    }
}

impl Scalar {
    fn matches(&self, f: &Field) -> bool {
        match f {
            // 200 and 200.0 are the same number.
            Field::Num(n) => match (self.num, n.parse::<f64>()) {
                (Some(a), Ok(b)) => a == b,
                _ => self.text == *n,
            },
            f => self.text == f.text(),
        }
    }
}

fn test(t: &Test, f: Option<&Field>) -> bool {
    match (t, f) {
        (Test::Exists(want), f) => f.is_some() == *want,
        (_, None) => false,
        (Test::Equals(s), Some(f)) => s.matches(f),
        (Test::OneOf(list), Some(f)) => list.iter().any(|s| s.matches(f)),
        (Test::Regex(re), Some(f)) => re.0.is_match(f.text()),
    }
}

/// One label combination's numbers.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub count: u64,
    pub buckets: Vec<u64>,
    pub dur_count: u64,
    pub dur_sum: f64,
    pub value: f64,
    pub has_value: bool,
}

#[derive(Debug)]
pub struct Rule {
    pub spec: RuleSpec,
    conds: Vec<(usize, Test)>,
    labels: Vec<Label>,
    dur_slot: Option<usize>,
    value_slot: Option<usize>,
    field_slots: Vec<(String, usize)>,
    pub series: FastMap<Box<[u32]>, Series>,
    pub matched: u64,
    pub bad_durations: u64,
    pub bad_values: u64,
    pub overflowed: u64,
    pub last_match: Option<Instant>,
    pub last_match_unix: Option<f64>,
    pub latency: Option<Latency>,
    pub slowest: Option<Slowest>,
    /// `group_by` fields, interned and capped like labels.
    pub(super) groups: Vec<Label>,
    /// Latency per category (a combination of `group_by` values).
    pub by_group: ByGroup,
    /// A line matched since the last [`Engine::take_fired`] (rules with
    /// `invalidates` only).
    fired: bool,
    /// The latest judgement of the latency levels, per category (made by
    /// the check, exported by the collector).
    pub judged: Vec<Judged>,
}

/// One category's latency against the rule's levels.
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    pub category: String,
    /// The configured quantile over the window, in seconds.
    pub secs: f64,
    /// 0 below the levels, 1 over `latency_warn`, 2 over `latency_critical`.
    pub level: u8,
}

impl Rule {
    /// What the rule's lines say of its configuration: a `duration` or
    /// `value` field that none of its matched lines had (as a number),
    /// which reads as a typo, not as data. One line without it is data;
    /// every line is the configuration.
    pub fn misses(&self) -> Vec<String> {
        let (m, n) = (&self.spec.metric, self.matched);
        let mut out = Vec::new();
        if n < FEW_LINES {
            return out;
        }
        if let Some(d) = self
            .spec
            .duration
            .as_ref()
            .filter(|_| self.bad_durations == n)
        {
            out.push(format!(
                "rule {m}: none of its {n} matched lines has a duration at `{}` (set \
                 duration.field to the field that holds the time)",
                d.field
            ));
        }
        if let Some(v) = self.spec.value.as_ref().filter(|_| self.bad_values == n) {
            out.push(format!(
                "rule {m}: none of its {n} matched lines has a number at `{}` (set \
                 value.field to the field that holds it)",
                v.field
            ));
        }
        // Not labels: a label field present only on some events (an error
        // code on failures) is legitimately absent from every line for a
        // while.
        out
    }

    /// Label names and values of a series key.
    pub fn labels_of<'a>(&'a self, key: &'a [u32]) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.labels
            .iter()
            .zip(key)
            .map(|(l, id)| (l.name.as_str(), l.value(*id)))
    }
}

/// Every rule of a probe and their state.
#[derive(Debug)]
pub struct Engine {
    trie: Trie,
    scanner: Scanner,
    spans: Vec<Option<(u32, u32)>>,
    key: Vec<u32>,
    time_slot: Option<usize>,
    pub rules: Vec<Rule>,
    /// Valid lines read (JSON objects).
    valid: u64,
    /// Of those, lines with bytes that were not UTF-8 inside a string,
    /// read with U+FFFD in their place.
    pub repaired: u64,
    /// The slots of the fields `match:` tests for a value that no line
    /// read has had yet (any value, `null` too): while any, lines are
    /// looked at for them, and one is kept now and then to suggest a name
    /// from (see [`Engine::unseen`]).
    unseen: Vec<usize>,
    sample: String,
}

/// Lines a rule waits for before its lines say something of its
/// configuration: one odd line is data, not a configuration.
const FEW_LINES: u64 = 5;

/// A rule's `group_by` / `labels` entries as interned labels.
fn labels_of(list: &[(String, String)], trie: &mut Trie, n: &mut usize) -> Vec<Label> {
    list.iter()
        .map(|(name, path)| Label::new(name.clone(), trie.slot(path, n)))
        .collect()
}

impl Engine {
    pub fn new(spec: &Spec) -> Self {
        let mut trie = Trie::new();
        let mut n = 0;
        let rules: Vec<Rule> = spec
            .rules
            .iter()
            .map(|r| Rule {
                conds: r
                    .matches
                    .iter()
                    .map(|(path, t)| (trie.slot(path, &mut n), t.clone()))
                    .collect(),
                labels: labels_of(&r.labels, &mut trie, &mut n),
                groups: labels_of(&r.group_by, &mut trie, &mut n),
                by_group: ByGroup::default(),
                fired: false,
                judged: Vec::new(),
                dur_slot: r.duration.as_ref().map(|d| trie.slot(&d.field, &mut n)),
                value_slot: r.value.as_ref().map(|v| trie.slot(&v.field, &mut n)),
                field_slots: r
                    .fields
                    .iter()
                    .map(|f| (f.clone(), trie.slot(f, &mut n)))
                    .collect(),
                series: FastMap::default(),
                matched: 0,
                bad_durations: 0,
                bad_values: 0,
                overflowed: 0,
                last_match: None,
                last_match_unix: None,
                latency: r.duration.as_ref().map(|_| Latency::new(r.stats_window)),
                slowest: r
                    .slow_above
                    .map(|_| Slowest::new(r.stats_window, r.top_slowest)),
                spec: r.clone(),
            })
            .collect();
        let time_slot = spec.time_field.as_ref().map(|f| trie.slot(f, &mut n));
        // Looked for: the fields `match:` tests for a value.
        let mut unseen: Vec<usize> = (rules.iter())
            .flat_map(|r| &r.conds)
            .filter(|(_, t)| !matches!(t, Test::Exists(false)))
            .map(|(slot, _)| *slot)
            .collect();
        unseen.sort_unstable();
        unseen.dedup();
        Engine {
            trie,
            scanner: Scanner::default(),
            spans: vec![None; n],
            key: Vec::new(),
            time_slot,
            rules,
            valid: 0,
            repaired: 0,
            unseen,
            sample: String::new(),
        }
    }

    /// The fields rules test for a value (`exists: false` asks for their
    /// absence) that none of the valid lines read so far had, once there
    /// were a few, with a line read to suggest names from. Cheap, under
    /// the engine's lock; the hints are made from it after
    /// ([`unseen::Found::hinted`]).
    pub fn unseen(&self) -> Option<unseen::Found> {
        if self.unseen.is_empty() || self.valid < FEW_LINES {
            return None;
        }
        let mut fields = Vec::new();
        for r in &self.rules {
            for ((slot, t), (path, _)) in r.conds.iter().zip(&r.spec.matches) {
                if self.unseen.contains(slot) && !matches!(t, Test::Exists(false)) {
                    fields.push(Unseen {
                        rule: r.spec.metric.clone(),
                        field: path.clone(),
                        hint: None,
                        lines: self.valid,
                    });
                }
            }
        }
        Some(unseen::Found {
            fields,
            sample: self.sample.clone(),
        })
    }

    /// Notes the fields `spans` found, while some were never seen.
    fn note_seen(&mut self, text: &str) {
        self.valid += 1;
        if self.unseen.is_empty() {
            return;
        }
        let spans = &self.spans;
        self.unseen.retain(|slot| spans[*slot].is_none());
        // The first line, then one in 1,024: names to suggest from.
        if !self.unseen.is_empty() && self.valid % 1024 == 1 {
            self.sample.clear();
            self.sample.push_str(text);
        }
    }

    /// The rules with `invalidates` that matched a line since the last
    /// call, with their targets.
    pub fn take_fired(&mut self) -> Vec<(String, Vec<String>)> {
        self.rules
            .iter_mut()
            .filter_map(|r| {
                std::mem::take(&mut r.fired)
                    .then(|| (r.spec.metric.clone(), r.spec.invalidates.clone()))
            })
            .collect()
    }

    /// Processes one line (without its newline).
    pub fn line(&mut self, line: &[u8], now: Instant, unix_now: f64) -> LineKind {
        // A byte that is not UTF-8 (a Latin-1 name in a user agent) costs
        // the line only the character: the rest of the line still counts.
        // Outside a string it is no JSON, and the scan says so.
        let text: Cow<'_, str> = match std::str::from_utf8(line) {
            Ok(t) => Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(line),
        };
        if self
            .scanner
            .line(text.as_bytes(), &self.trie, &mut self.spans)
            .is_err()
        {
            return LineKind::Invalid;
        }
        if let Cow::Owned(_) = text {
            self.repaired += 1;
        }
        let text: &str = &text;
        self.note_seen(text);
        let spans = &self.spans;
        let get = |slot: usize| -> Option<Field<'_>> {
            spans[slot].and_then(|(a, b)| Field::from_raw(&text[a as usize..b as usize]))
        };
        let mut any = false;
        for rule in &mut self.rules {
            if !rule
                .conds
                .iter()
                .all(|(slot, t)| test(t, get(*slot).as_ref()))
            {
                continue;
            }
            any = true;
            rule.fired |= !rule.spec.invalidates.is_empty();
            rule.matched += 1;
            rule.last_match = Some(now);
            rule.last_match_unix = Some(unix_now);
            self.key.clear();
            let cap = rule.spec.max_label_values;
            let mut overflowed = false;
            for l in &mut rule.labels {
                let id = label_id(l, spans, text, cap);
                overflowed |= id == OTHER_ID;
                self.key.push(id);
            }
            // Lines, not labels: comparable with the rule's matched lines
            // however many of its labels ran over.
            rule.overflowed += u64::from(overflowed);
            let secs = rule.spec.duration.as_ref().and_then(|d| {
                let secs = rule
                    .dur_slot
                    .and_then(&get)
                    .and_then(|f| duration_secs(&f, d.unit));
                if secs.is_none() {
                    rule.bad_durations += 1;
                }
                secs
            });
            let value = rule.spec.value.as_ref().and_then(|_| {
                let v = rule
                    .value_slot
                    .and_then(&get)
                    .and_then(|f| f.text().parse::<f64>().ok())
                    .filter(|v| v.is_finite());
                if v.is_none() {
                    rule.bad_values += 1;
                }
                v
            });
            let series = match rule.series.get_mut(self.key.as_slice()) {
                Some(s) => s,
                None => rule
                    .series
                    .entry(self.key.clone().into_boxed_slice())
                    .or_insert_with(|| Series {
                        buckets: vec![
                            0;
                            rule.spec
                                .duration
                                .as_ref()
                                .map_or(0, |d| d.buckets.len() + 1)
                        ],
                        ..Series::default()
                    }),
            };
            series.count += 1;
            if let (Some(secs), Some(d)) = (secs, &rule.spec.duration) {
                let i = d.buckets.partition_point(|b| *b < secs);
                series.buckets[i] += 1;
                series.dur_count += 1;
                series.dur_sum += secs;
                if let Some(l) = &mut rule.latency {
                    l.observe(now, secs);
                }
                if !rule.groups.is_empty() {
                    let window = rule.spec.stats_window;
                    let cat = category(
                        &mut rule.by_group,
                        &mut rule.groups,
                        window,
                        spans,
                        text,
                        cap,
                    );
                    rule.by_group.at(cat).observe(now, secs);
                }
                if let (Some(slow), Some(limit)) = (&mut rule.slowest, rule.spec.slow_above)
                    && secs > limit.as_secs_f64()
                {
                    {
                        let mut fields = Map::new();
                        for l in &rule.labels {
                            if let Some(f) = get(l.slot) {
                                fields.insert(l.name.clone(), f.to_json());
                            }
                        }
                        for (name, slot) in &rule.field_slots {
                            if let Some(f) = get(*slot) {
                                fields.insert(name.clone(), f.to_json());
                            }
                        }
                        let at = self
                            .time_slot
                            .and_then(&get)
                            .map(|f| f.text().to_string())
                            .unwrap_or_else(|| {
                                crate::util::time::rfc3339(
                                    std::time::UNIX_EPOCH
                                        + std::time::Duration::from_secs_f64(unix_now),
                                )
                            });
                        slow.push(SlowOp {
                            seen: now,
                            at,
                            secs,
                            fields,
                        });
                    }
                }
            }
            if let (Some(v), Some(vs)) = (value, &rule.spec.value) {
                match vs.kind {
                    ValueKind::Gauge => series.value = v,
                    ValueKind::Counter if v >= 0.0 => series.value += v,
                    ValueKind::Counter => rule.bad_values += 1,
                }
                series.has_value = true;
            }
        }
        if any {
            LineKind::Matched
        } else {
            LineKind::Unmatched
        }
    }
}

/// A duration field in seconds: a number in the rule's unit, or a string
/// holding a number (same unit) or a Go duration.
pub fn duration_secs(f: &Field, unit: DurUnit) -> Option<f64> {
    let scaled = |n: f64| (n.is_finite() && n >= 0.0).then(|| n * unit.seconds());
    match f {
        Field::Num(n) => n.parse::<f64>().ok().and_then(scaled),
        Field::Str(s) => match s.parse::<f64>() {
            Ok(n) => scaled(n),
            Err(_) => godur::parse_nanos(s).map(|ns| ns as f64 / 1e9),
        },
        _ => None,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::probe::log::tests::spec_of;

    pub(in crate::probe::log) fn engine(rules: &str) -> Engine {
        Engine::new(&spec_of(rules))
    }

    #[test]
    fn fields_and_nested_paths() {
        let mut e = engine(
            "rules:\n  - metric: ops\n    match: { message: done, user.kind: admin, 'a.b.c': { exists: true } }\n    labels: [status]\n",
        );
        let now = Instant::now();
        let l = br#"{"message":"done","status":"ok","user":{"kind":"admin","x":[1,{"y":2}]},"a":{"b":{"c":null,"d":1}}}"#;
        // a.b.c is null: does not exist.
        assert_eq!(e.line(l, now, 0.0), LineKind::Unmatched);
        let l = br#"{"message":"done","status":"ok","user":{"kind":"admin"},"a":{"b":{"c":0}}}"#;
        assert_eq!(e.line(l, now, 0.0), LineKind::Matched);
        let l = br#"{"message":"done","status":"ok","user":"admin","a":{"b":{"c":0}}}"#;
        assert_eq!(e.line(l, now, 0.0), LineKind::Unmatched);
        assert_eq!(e.line(b"{\"message\":", now, 0.0), LineKind::Invalid);
        assert_eq!(e.line(b"[1,2]", now, 0.0), LineKind::Invalid);
        assert_eq!(e.line(b"{} trailing", now, 0.0), LineKind::Invalid);
        assert_eq!(e.line(b"\xff\xfe", now, 0.0), LineKind::Invalid);
        assert_eq!(
            e.line(b"{\"message\":\"done\"} \xff", now, 0.0),
            LineKind::Invalid
        );
        assert_eq!(
            e.line(b"{\"message\":\"done\",\xff:1}", now, 0.0),
            LineKind::Invalid
        );
        assert_eq!(e.repaired, 0);
        // Not UTF-8 inside a string: the character is replaced, the line counts.
        let l = b"{\"message\":\"done\",\"ua\":\"Jos\xe9\",\"status\":\"ok\",\"user\":{\"kind\":\"admin\"},\"a\":{\"b\":{\"c\":0}}}";
        assert_eq!(e.line(l, now, 0.0), LineKind::Matched);
        assert_eq!(e.repaired, 1);
        assert_eq!(e.rules[0].matched, 2);
    }

    /// The fields never seen, with their hints.
    fn told(e: &Engine) -> Vec<Unseen> {
        e.unseen().map(unseen::Found::hinted).unwrap_or_default()
    }

    /// A field `match:` tests that no line has reads as a misspelt name,
    /// with the closest name of the lines: told after a few lines, not for
    /// `exists: false` (absent is what it asks), gone once a line has it.
    #[test]
    fn a_match_field_no_line_has_is_named_with_the_closest_one() {
        let mut e = engine(
            "rules:\n  - metric: ops\n    match: { mesage: done, status: ok, error: { exists: false }, user.rle: admin }\n",
        );
        let now = Instant::now();
        let l = br#"{"message":"done","status":"ok","user":{"role":"admin"}}"#;
        for _ in 0..4 {
            assert_eq!(e.line(l, now, 0.0), LineKind::Unmatched);
            assert!(told(&e).is_empty(), "one line is data");
        }
        assert_eq!(e.line(b"not json", now, 0.0), LineKind::Invalid);
        assert!(told(&e).is_empty(), "invalid lines do not count");
        e.line(l, now, 0.0);
        let u = told(&e);
        let fields: Vec<(&str, Option<&str>)> = (u.iter())
            .map(|u| (u.field.as_str(), u.hint.as_deref()))
            .collect();
        assert_eq!(
            fields,
            [
                ("mesage", Some("did you mean `message`?")),
                ("user.rle", Some("did you mean `user.role`?"))
            ]
        );
        assert_eq!(
            u[0].message(),
            "rule ops: its match tests `mesage`, which none of the 5 lines read has (a misspelt \
             name matches nothing; did you mean `message`?)"
        );
        // Names with control characters are never quoted.
        let mut e2 = engine("rules:\n  - metric: ops\n    match: { \"a\": x }\n");
        for _ in 0..5 {
            e2.line(br#"{"b\n":1}"#, now, 0.0);
        }
        assert_eq!(told(&e2)[0].hint, None, "{:?}", told(&e2));
        // Once a line has it (null too), it was a rare field, not a typo.
        e.line(br#"{"mesage":null,"user":{"rle":1}}"#, now, 0.0);
        assert!(told(&e).is_empty(), "{:?}", told(&e));
    }

    #[test]
    fn escapes_numbers_one_of_regex() {
        let mut e = engine(
            "rules:\n  - metric: ops\n    match: { msg: \"a \\\"quoted\\\" one\", code: [200, 204], path: { regex: '^/api/' } }\n",
        );
        let now = Instant::now();
        let l = br#"{"msg":"a \"quoted\" one","code":200.0,"path":"/api/x"}"#;
        assert_eq!(e.line(l, now, 0.0), LineKind::Matched);
        let l = br#"{"msg":"a \"quoted\" one","code":"204","path":"/api/x"}"#;
        assert_eq!(e.line(l, now, 0.0), LineKind::Matched);
        let l = br#"{"msg":"a \"quoted\" one","code":500,"path":"/api/x"}"#;
        assert_eq!(e.line(l, now, 0.0), LineKind::Unmatched);
        let l = br#"{"msg":"a \"quoted\" one","code":200,"path":"/web"}"#;
        assert_eq!(e.line(l, now, 0.0), LineKind::Unmatched);
    }

    #[test]
    fn durations_in_every_shape() {
        fn f(s: &str) -> Field<'_> {
            Field::from_raw(s).unwrap()
        }
        assert_eq!(duration_secs(&f("1500"), DurUnit::Ms), Some(1.5));
        assert_eq!(duration_secs(&f("2.5"), DurUnit::S), Some(2.5));
        assert_eq!(duration_secs(&f("\"250\""), DurUnit::Ms), Some(0.25));
        assert_eq!(
            duration_secs(&f("\"1m37.535505102s\""), DurUnit::Ms),
            Some(97.535505102)
        );
        assert_eq!(duration_secs(&f("\"soon\""), DurUnit::Ms), None);
        assert_eq!(duration_secs(&f("-3"), DurUnit::Ms), None);
        assert_eq!(duration_secs(&f("true"), DurUnit::Ms), None);
    }

    #[test]
    fn labels_overflow_to_other() {
        let mut e = engine(
            "rules:\n  - metric: ops\n    match: { m: x }\n    labels: [user]\n    max_label_values: 2\n",
        );
        let now = Instant::now();
        for u in ["a", "b", "c", "d", "a"] {
            let l = format!(r#"{{"m":"x","user":"{u}"}}"#);
            e.line(l.as_bytes(), now, 0.0);
        }
        let r = &e.rules[0];
        let mut got: Vec<(String, u64)> = r
            .series
            .iter()
            .map(|(k, s)| (r.labels_of(k).next().unwrap().1.to_string(), s.count))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![("a".into(), 2), ("b".into(), 1), ("other".into(), 2)]
        );
        assert_eq!(r.overflowed, 2);
    }

    #[test]
    fn control_characters_in_label_values_become_one_visible_value() {
        let mut e = engine("rules:\n  - metric: ops\n    match: { m: x }\n    labels: [user]\n");
        let now = Instant::now();
        for u in [r"a\u0000", r"a\u0001", r"a\r"] {
            let l = format!(r#"{{"m":"x","user":"{u}"}}"#);
            e.line(l.as_bytes(), now, 0.0);
        }
        let r = &e.rules[0];
        let got: Vec<(String, u64)> = r
            .series
            .iter()
            .map(|(k, s)| (r.labels_of(k).next().unwrap().1.to_string(), s.count))
            .collect();
        assert_eq!(got, vec![("a\u{FFFD}".into(), 3)]);
    }

    #[test]
    fn overflows_count_lines_not_labels() {
        let mut e = engine(
            "rules:\n  - metric: ops\n    match: { m: x }\n    labels: [user, op]\n    max_label_values: 1\n",
        );
        let now = Instant::now();
        for (u, op) in [("a", "r"), ("b", "w"), ("c", "r"), ("a", "w")] {
            let l = format!(r#"{{"m":"x","user":"{u}","op":"{op}"}}"#);
            e.line(l.as_bytes(), now, 0.0);
        }
        // Line 2 overflows both labels, line 3 one, line 4 one: 3 lines.
        assert_eq!(e.rules[0].overflowed, 3);
    }
}
