//! What an http probe expects of an answer (`expect:`: status, headers,
//! body text, regex and JSON values) and the judging of an answer against
//! it. The parsing of these keys is `config.rs`'; the timing and certificate
//! levels are the probe's.

use hyper::header::HeaderName;
use regex::Regex;
use std::borrow::Cow;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::net::Answer;
use crate::probe::core::Reason;
use crate::util::text::{short, short_str};

/// An accepted status: one code or a class such as `2xx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusPat {
    Code(u16),
    Class(u16),
}

impl StatusPat {
    pub fn parse(v: &Value) -> Option<StatusPat> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .filter(|c| (100..600).contains(c))
                .map(|c| StatusPat::Code(c as u16)),
            Value::String(s) => {
                let s = s.to_ascii_lowercase();
                if let Some(d) = s.strip_suffix("xx").filter(|d| d.len() == 1) {
                    d.parse()
                        .ok()
                        .filter(|d| (1..6).contains(d))
                        .map(StatusPat::Class)
                } else {
                    s.parse()
                        .ok()
                        .filter(|c| (100..600).contains(c))
                        .map(StatusPat::Code)
                }
            }
            _ => None,
        }
    }

    fn matches(self, code: u16) -> bool {
        match self {
            StatusPat::Code(c) => c == code,
            StatusPat::Class(d) => code / 100 == d,
        }
    }

    fn show(self) -> String {
        match self {
            StatusPat::Code(c) => c.to_string(),
            StatusPat::Class(d) => format!("{d}xx"),
        }
    }
}

/// A regex compared by its source (so a reload can tell whether it changed).
#[derive(Clone, Debug)]
pub struct Pattern(pub Regex);

impl PartialEq for Pattern {
    fn eq(&self, o: &Self) -> bool {
        self.0.as_str() == o.0.as_str()
    }
}

/// The `expect:` of an http probe (its `max_body_bytes` is the request's
/// `max_body`: the client stops reading there).
#[derive(Clone, Debug, PartialEq)]
pub struct Expect {
    pub status: Vec<StatusPat>,
    pub body_contains: Vec<String>,
    pub body_regex: Vec<Pattern>,
    /// JSON pointer → the value it must equal.
    pub body_json: Vec<(String, Value)>,
    pub body_json_exists: Vec<String>,
    /// Header → a substring its value must contain ("" = only present).
    pub headers: Vec<(HeaderName, String)>,
}

impl Expect {
    /// The first expectation `a` misses, as the reason and message of the
    /// failure: the status first, then headers, body text, regexes, JSON.
    pub fn judge(&self, a: &Answer) -> Result<(), (Reason, String)> {
        let code = a.status.as_u16();
        if !self.status.iter().any(|p| p.matches(code)) {
            let want: Vec<String> = self.status.iter().map(|p| p.show()).collect();
            return Err((
                Reason::Status,
                format!("status {code}, expected {}", want.join(" or ")),
            ));
        }
        let fail = |msg: String| Err((Reason::Expectation, msg));
        for (name, want) in &self.headers {
            let got = a.headers.get(name).and_then(|v| v.to_str().ok());
            match got {
                None => return fail(format!("header {name} is missing")),
                Some(v) if !v.contains(want.as_str()) => {
                    return fail(format!("header {name} does not contain `{want}`"));
                }
                _ => {}
            }
        }
        // Without a UTF-8 byte order mark, as browsers read a body (what
        // .NET and Windows tools often put first): JSON never starts with one.
        let body = a.body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&a.body);
        let text = String::from_utf8_lossy(body);
        for s in &self.body_contains {
            if !text.contains(s.as_str()) {
                return fail(format!("the body does not contain `{s}`"));
            }
        }
        for r in &self.body_regex {
            if !r.0.is_match(&text) {
                return fail(format!("the body does not match /{}/", r.0.as_str()));
            }
        }
        if !self.body_json.is_empty() || !self.body_json_exists.is_empty() {
            // Checked whole, then only what the pointers name is read: no
            // `Value` tree of the answer (at 10,000 probes it was a quarter
            // of a check's allocations).
            if body.is_empty() {
                return fail(format!(
                    "the body is empty, expected JSON (status {code}: is this the right URL and method?)"
                ));
            }
            let doc = match json_text(body) {
                Ok(d) => d,
                Err(err) => {
                    let coding = a
                        .headers
                        .get(hyper::header::CONTENT_ENCODING)
                        .and_then(|v| v.to_str().ok())
                        .filter(|c| !c.eq_ignore_ascii_case("identity"))
                        .map(|c| {
                            format!(" (Content-Encoding: {c}, which depwatch does not decode)")
                        })
                        .unwrap_or_default();
                    return fail(format!("the body is not JSON: {err}{coding}"));
                }
            };
            for p in &self.body_json_exists {
                if pointer(doc, p).is_none() {
                    return fail(format!("JSON {p} is missing"));
                }
            }
            for (p, want) in &self.body_json {
                let Some(raw) = pointer(doc, p) else {
                    return fail(format!("JSON {p} is missing"));
                };
                // What a pointer names is valid JSON (the body was checked),
                // but serde_json builds no value nested deeper than 128
                // levels: none that a configuration can hold, so unequal.
                let Ok(got) = serde_json::from_str::<Value>(raw.get()) else {
                    return fail(format!(
                        "JSON {p} is {} (nested too deeply to compare), expected {}",
                        short_str(raw.get(), 80),
                        short(want, 80)
                    ));
                };
                if !json_eq(&got, want) {
                    return fail(format!(
                        "JSON {p} is {}, expected {}",
                        short(&got, 80),
                        short(want, 80)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The body as JSON text, once it is known to be JSON (UTF-8, one value,
/// nothing after it but whitespace), without building it.
fn json_text(body: &[u8]) -> Result<&RawValue, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("{e}"))?;
    serde_json::from_str::<&RawValue>(text).map_err(|e| e.to_string())
}

/// What `p` (a JSON pointer, RFC 6901) points at in `doc`, as the text of
/// that value: what `Value::pointer` finds (the last of duplicate keys, as
/// a parsed object keeps), read from the text level by level, skipping
/// what the pointer does not name.
fn pointer<'a>(doc: &'a RawValue, p: &str) -> Option<&'a RawValue> {
    if p.is_empty() {
        return Some(doc);
    }
    p.strip_prefix('/')?.split('/').try_fold(doc, |v, raw| {
        let token = if raw.contains('~') {
            Cow::Owned(raw.replace("~1", "/").replace("~0", "~"))
        } else {
            Cow::Borrowed(raw)
        };
        // No sign and no leading zero, as RFC 6901 writes indexes.
        let signed_or_padded =
            token.starts_with('+') || (token.starts_with('0') && token.len() > 1);
        let index = (!signed_or_padded)
            .then(|| token.parse::<usize>().ok())
            .flatten();
        let mut de = serde_json::Deserializer::from_str(v.get());
        Step { key: &token, index }
            .deserialize(&mut de)
            .ok()
            .flatten()
    })
}

/// One token of a pointer applied to one value: the member of an object
/// named `key`, or the element of an array at `index`.
struct Step<'t> {
    key: &'t str,
    index: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for Step<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Step<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        // Every member is read: the last of duplicate keys wins, and the
        // parser wants the object to its end.
        while let Some(matches) = m.next_key_seed(KeyIs(self.key))? {
            if matches {
                found = Some(m.next_value::<&RawValue>()?);
            } else {
                m.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0;
        loop {
            if Some(i) == self.index {
                match s.next_element::<&RawValue>()? {
                    Some(v) => found = Some(v),
                    None => break,
                }
            } else if s.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }

    // A scalar has no members.
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Whether an object's key is the one sought, compared where the parser
/// holds it (no `String` per key).
struct KeyIs<'t>(&'t str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, k: &str) -> Result<bool, E> {
        Ok(k == self.0)
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`) and a
/// scalar written as a YAML string matches the same JSON number or bool
/// (`"200"` matches `200`): config authors rarely mean the type.
fn json_eq(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Number(_) | Value::Bool(_), Value::String(s)) => {
            serde_json::from_str::<Value>(s).is_ok_and(|w| json_eq(got, &w))
        }
        _ => got == want,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pointers_find_what_serde_json_finds() {
        let text = r#"{"a":{"b":[10,{"c~d":1,"e/f":2,"":3}]},"0":"zero","s":"x","n":null,
            "d":1,"d":{"x":[true,false]},"esc\"aped\u0041":{"y":2.5e3},"ws" : [ 1 , [ ] , { } ] }"#;
        let doc: Value = serde_json::from_str(text).unwrap();
        let raw = json_text(text.as_bytes()).unwrap();
        for p in [
            "",
            "/",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1",
            "/a/b/1/c~0d",
            "/a/b/1/e~1f",
            "/a/b/1/",
            "/a/b/2",
            "/a/b/01",
            "/a/b/+1",
            "/a/b/-1",
            "/a/b/x",
            "/0",
            "/s/0",
            "/n",
            "/n/x",
            "a",
            "/missing",
            "/a/b/1/c~1d",
            "/a//b",
            "/d",
            "/d/x/1",
            "/d/x/2",
            "/esc\"apedA",
            "/esc\"apedA/y",
            "/ws/0",
            "/ws/1",
            "/ws/2",
            "/ws/3",
            "/n/0",
            "/a/b/0/0",
        ] {
            let found = pointer(raw, p).map(|v| serde_json::from_str::<Value>(v.get()).unwrap());
            assert_eq!(found.as_ref(), doc.pointer(p), "{p:?}");
        }
    }

    #[test]
    fn bodies_that_are_not_json_are_told() {
        assert!(json_text(br#" {"a":1} "#).is_ok());
        for (body, says) in [
            (&b"{\"a\":1} x"[..], "trailing characters"),
            (b"", "EOF while parsing"),
            (b"{\"a\":\"\xff\"}", "invalid utf-8"),
            (b"[1,]", "expected value"),
        ] {
            let e = json_text(body).unwrap_err();
            assert!(e.contains(says), "{body:?}: {e}");
        }
    }

    #[test]
    fn status_patterns() {
        let p = |v: Value| StatusPat::parse(&v);
        assert_eq!(p(json!(200)), Some(StatusPat::Code(200)));
        assert_eq!(p(json!("2xx")), Some(StatusPat::Class(2)));
        assert_eq!(p(json!("404")), Some(StatusPat::Code(404)));
        assert_eq!(p(json!("7xx")), None);
        assert_eq!(p(json!(99)), None);
        assert!(StatusPat::Class(2).matches(204));
        assert!(!StatusPat::Class(2).matches(301));
    }

    #[test]
    fn json_equality_is_lenient_on_number_types() {
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(json_eq(&json!(200), &json!("200")));
        assert!(json_eq(&json!("ok"), &json!("ok")));
        assert!(!json_eq(&json!("ok"), &json!("degraded")));
    }
}
