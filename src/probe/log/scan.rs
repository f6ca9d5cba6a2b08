//! Where the fields the rules read are in a JSON line: one pass over its
//! bytes that validates the whole line as JSON (what serde_json accepts when
//! it ignores a value) and records the byte range of each wanted field's
//! value, without decoding anything else.
//!
//! A line is one object; the dotted paths of the rules form a [`Trie`] of
//! keys. Values nobody reads are skipped without recursion (a stack of the
//! open brackets), so however deep a line nests, the scan neither recurses
//! nor allocates beyond that stack, which is reused line after line.

use super::labels::Small;

/// The dotted field paths the rules use, as a tree of keys; every node that
/// a rule reads has a slot.
#[derive(Debug)]
pub(super) struct Trie {
    nodes: Vec<TrieNode>,
}

#[derive(Debug)]
struct TrieNode {
    slot: Option<usize>,
    /// The keys of the children (most keys of a line are not wanted: they
    /// are told apart without a byte comparison), the first `SMALL` of
    /// them; `ids` are their nodes.
    keys: Small,
    ids: Vec<usize>,
    /// Keys beyond those, searched in turn (rules reading that many fields
    /// of one object are rare).
    more: Vec<(Box<str>, usize)>,
}

impl TrieNode {
    fn new() -> Self {
        TrieNode {
            slot: None,
            keys: Small::new(),
            ids: Vec::new(),
            more: Vec::new(),
        }
    }

    #[inline]
    fn child(&self, key: &[u8]) -> Option<usize> {
        match self.keys.find(key) {
            Some(i) => Some(self.ids[i]),
            None if self.more.is_empty() => None,
            None => self
                .more
                .iter()
                .find(|(k, _)| k.as_bytes() == key)
                .map(|(_, i)| *i),
        }
    }

    fn add(&mut self, key: &str, node: usize) {
        if self.keys.is_full() {
            self.more.push((key.into(), node));
        } else {
            self.keys.push(key);
            self.ids.push(node);
        }
    }
}

impl Trie {
    pub(super) fn new() -> Self {
        Trie {
            nodes: vec![TrieNode::new()],
        }
    }

    /// The slot of `path`, created when new. `slots` counts them.
    pub(super) fn slot(&mut self, path: &str, slots: &mut usize) -> usize {
        let mut at = 0;
        for seg in path.split('.') {
            at = match self.nodes[at].child(seg.as_bytes()) {
                Some(i) => i,
                None => {
                    self.nodes.push(TrieNode::new());
                    let i = self.nodes.len() - 1;
                    self.nodes[at].add(seg, i);
                    i
                }
            };
        }
        *self.nodes[at].slot.get_or_insert_with(|| {
            *slots += 1;
            *slots - 1
        })
    }

    #[inline]
    fn child(&self, node: usize, key: &[u8]) -> Option<usize> {
        self.nodes[node].child(key)
    }
}

/// Where each needed field's raw JSON is in the line (byte range).
pub(super) type Spans = [Option<(u32, u32)>];

/// The line is not one JSON object.
#[derive(Debug, PartialEq)]
pub(super) struct Invalid;

type Scan<T = ()> = Result<T, Invalid>;

/// The scan's reusable state.
#[derive(Debug, Default)]
pub(super) struct Scanner {
    /// The closing bracket of each container being skipped.
    open: Vec<u8>,
}

impl Scanner {
    /// Scans `line` (one object, whitespace around it), filling `spans`
    /// (cleared first) with the ranges of the fields `trie` wants.
    pub(super) fn line(&mut self, line: &[u8], trie: &Trie, spans: &mut Spans) -> Scan {
        spans.fill(None);
        let mut c = Cursor { b: line, i: 0 };
        c.ws();
        if c.peek() != Some(b'{') {
            return Err(Invalid);
        }
        self.object(&mut c, trie, 0, spans)?;
        c.ws();
        if c.i == line.len() {
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// An object at the cursor whose keys are looked up under `node`. Only
    /// the paths of the trie recurse, so the depth is the longest path's.
    fn object(&mut self, c: &mut Cursor, trie: &Trie, node: usize, spans: &mut Spans) -> Scan {
        c.i += 1;
        c.ws();
        if c.eat(b'}') {
            return Ok(());
        }
        loop {
            let start = c.i;
            let escaped = c.key()?;
            let child = if escaped {
                // Rare: the line escapes a key the rules spell plainly.
                serde_json::from_slice::<String>(&c.b[start..c.i])
                    .ok()
                    .and_then(|k| trie.child(node, k.as_bytes()))
            } else {
                let (a, b) = (start + 1, c.i - 1);
                trie.child(node, &c.b[a..b])
            };
            c.ws();
            c.expect(b':')?;
            c.ws();
            match child.map(|i| (i, &trie.nodes[i])) {
                None => self.skip(c)?,
                Some((i, n)) => {
                    let start = c.i;
                    if !n.ids.is_empty() && c.peek() == Some(b'{') {
                        self.object(c, trie, i, spans)?;
                    } else {
                        self.skip(c)?;
                    }
                    if let Some(slot) = n.slot {
                        spans[slot] = Some((start as u32, c.i as u32));
                    }
                }
            }
            c.ws();
            match c.next() {
                Some(b',') => c.ws(),
                Some(b'}') => return Ok(()),
                _ => return Err(Invalid),
            }
        }
    }

    /// Skips one value of any kind, containers without recursion.
    fn skip(&mut self, c: &mut Cursor) -> Scan {
        self.open.clear();
        loop {
            // A value starts here.
            match c.peek().ok_or(Invalid)? {
                b'{' => {
                    c.i += 1;
                    c.ws();
                    if !c.eat(b'}') {
                        self.open.push(b'}');
                        c.member_head()?;
                        continue;
                    }
                }
                b'[' => {
                    c.i += 1;
                    c.ws();
                    if !c.eat(b']') {
                        self.open.push(b']');
                        continue;
                    }
                }
                b'"' => {
                    c.string()?;
                }
                b't' => c.literal(b"true")?,
                b'f' => c.literal(b"false")?,
                b'n' => c.literal(b"null")?,
                _ => c.number()?,
            }
            // After a value: close what ends here, or go on to the next one.
            loop {
                let Some(&close) = self.open.last() else {
                    return Ok(());
                };
                c.ws();
                match c.next() {
                    Some(b',') => {
                        c.ws();
                        if close == b'}' {
                            c.member_head()?;
                        }
                        break;
                    }
                    Some(b) if b == close => {
                        self.open.pop();
                    }
                    _ => return Err(Invalid),
                }
            }
        }
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Bytes of `w` that are zero (exact for the lowest one).
#[inline]
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(LO) & !w & HI
}

impl<'a> Cursor<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    #[inline]
    fn eat(&mut self, want: u8) -> bool {
        let hit = self.peek() == Some(want);
        self.i += usize::from(hit);
        hit
    }

    #[inline]
    fn expect(&mut self, want: u8) -> Scan {
        if self.eat(want) { Ok(()) } else { Err(Invalid) }
    }

    /// JSON's whitespace.
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// A key and its colon's whitespace, inside an object being skipped.
    fn member_head(&mut self) -> Scan {
        self.key()?;
        self.ws();
        self.expect(b':')?;
        self.ws();
        Ok(())
    }

    /// A key; whether it has escapes.
    fn key(&mut self) -> Scan<bool> {
        if self.peek() != Some(b'"') {
            return Err(Invalid);
        }
        self.string()
    }

    /// A string at the cursor; whether it had escapes. Eight bytes at a
    /// time up to the next quote, backslash or control character.
    fn string(&mut self) -> Scan<bool> {
        self.i += 1;
        let mut escaped = false;
        loop {
            while let Some(w) = self.b.get(self.i..self.i + 8) {
                let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
                let special = zero_bytes(w ^ (LO * u64::from(b'"')))
                    | zero_bytes(w ^ (LO * u64::from(b'\\')))
                    | (w.wrapping_sub(LO * 0x20) & !w & HI);
                if special != 0 {
                    self.i += (special.trailing_zeros() / 8) as usize;
                    break;
                }
                self.i += 8;
            }
            match self.next().ok_or(Invalid)? {
                b'"' => return Ok(escaped),
                b'\\' => {
                    escaped = true;
                    match self.next().ok_or(Invalid)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let hex = self.b.get(self.i..self.i + 4).ok_or(Invalid)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Invalid);
                            }
                            self.i += 4;
                        }
                        _ => return Err(Invalid),
                    }
                }
                0..0x20 => return Err(Invalid),
                _ => {}
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Scan {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Scan {
        self.eat(b'-');
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Invalid),
        }
        if self.eat(b'.') {
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Scan {
        let start = self.i;
        self.digits();
        if self.i > start { Ok(()) } else { Err(Invalid) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan's verdict on validity against serde_json's (ignoring every
    /// value), and the spans it finds.
    fn scan(paths: &[&str], line: &str) -> Option<Vec<Option<String>>> {
        let mut trie = Trie::new();
        let mut n = 0;
        let slots: Vec<usize> = paths.iter().map(|p| trie.slot(p, &mut n)).collect();
        let mut spans = vec![None; n];
        let got = Scanner::default().line(line.as_bytes(), &trie, &mut spans);
        let serde = serde_json::from_str::<serde::de::IgnoredAny>(line).is_ok()
            && line
                .trim_start_matches([' ', '\t', '\n', '\r'])
                .starts_with('{');
        assert_eq!(got.is_ok(), serde, "{line:?}");
        got.ok().map(|()| {
            slots
                .iter()
                .map(|s| spans[*s].map(|(a, b)| line[a as usize..b as usize].to_string()))
                .collect()
        })
    }

    #[test]
    fn finds_the_wanted_fields_as_written() {
        let line = r#" {"ts":"2025-01-04T10:30:15Z","a":{"b":{"c":-1.5e+3},"x":[1,{"c":2}]},"s":"q\"\u00e9\\","n":null, "o":{"k":true} } "#;
        let got = scan(
            &["ts", "a.b.c", "s", "n", "o", "a.x", "missing", "o.k"],
            line,
        )
        .unwrap();
        let want = [
            Some(r#""2025-01-04T10:30:15Z""#),
            Some("-1.5e+3"),
            Some(r#""q\"\u00e9\\""#),
            Some("null"),
            Some(r#"{"k":true}"#),
            Some(r#"[1,{"c":2}]"#),
            None,
            Some("true"),
        ];
        assert_eq!(got, want.map(|w| w.map(String::from)));
    }

    #[test]
    fn a_path_through_something_else_finds_nothing_and_the_last_key_wins() {
        let got = scan(&["a.b", "k"], r#"{"a":"b","k":1,"k":2}"#).unwrap();
        assert_eq!(got, [None, Some("2".to_string())]);
        // An escaped key is the key it spells.
        let got = scan(&["a.b", "k"], r#"{"\u0061":{"\u0062":3},"\k":1}"#);
        assert!(got.is_none());
        let got = scan(&["a.b", "k"], r#"{"\u0061":{"\u0062":3},"\u006b":1}"#).unwrap();
        assert_eq!(got, [Some("3".to_string()), Some("1".to_string())]);
        let got = scan(&["a.b"], r#"{"a":[{"b":1}],"a":{"b":[]}}"#).unwrap();
        assert_eq!(got, [Some("[]".to_string())]);
    }

    #[test]
    fn many_keys_at_one_level() {
        let paths: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let line = format!(
            "{{{}}}",
            (0..45)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let got = scan(&refs, &line).unwrap();
        let want: Vec<Option<String>> = (0..40).map(|i| Some(i.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn validity_is_serde_json_s() {
        let lines = [
            "{}",
            " { } ",
            "{\"a\":1}\r",
            "{\"a\":01}",
            "{\"a\":-}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":1E-07}",
            "{\"a\":-0.0}",
            "{\"a\":+1}",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":[1,]}",
            "{\"a\":[,1]}",
            "{\"a\":[]}",
            "{\"a\":[[[[]]]]}",
            "{\"a\":[[[[]]]}",
            "{\"a\":{\"b\":}}",
            "{\"a\":{\"b\" 1}}",
            "{\"a\":{1:2}}",
            "{\"a\":1,}",
            "{,}",
            "{\"a\" :\t1 ,\n\"b\": \"x\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":\"\\u12G4\"}",
            "{\"\\ud800\":\"\\udc00\"}",
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"unterminated}",
            "{\"a\":\"é ü 中文 😀\"}",
            "{\"a\":1} x",
            "{\"a\":1}{}",
            "[1]",
            "\"{}\"",
            "",
            "{",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":[{\"b\":[{\"c\":\"\\\"\"}]}]}",
        ];
        for l in lines {
            scan(&["a", "a.b"], l);
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(scan(&["a"], &deep).is_some());
        let unbalanced = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(9_999));
        assert!(scan(&["a"], &unbalanced).is_none());
    }

    #[test]
    fn long_strings_every_special_byte_at_every_position() {
        for len in 0..24 {
            for special in ["\\\"", "\\\\", "\\u0041", "\u{1}", "\"", "é"] {
                for at in 0..=len {
                    let mut s = "x".repeat(len);
                    s.insert_str(at, special);
                    scan(&["k"], &format!("{{\"k\":\"{s}\",\"z\":1}}"));
                }
            }
        }
    }
}
