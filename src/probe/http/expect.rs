//! What an http probe expects of an answer (`expect:`: status, headers,
//! body text, regex and JSON values) and the judging of an answer against
//! it. The parsing of these keys is `config.rs`'; the timing and certificate
//! levels are the probe's.

use hyper::header::HeaderName;
use regex::Regex;
use serde_json::Value;

use crate::net::Answer;
use crate::probe::core::Reason;
use crate::util::text::short;

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
        let text = String::from_utf8_lossy(&a.body);
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
            let doc: Value = match serde_json::from_slice(&a.body) {
                Ok(v) => v,
                Err(err) => return fail(format!("the body is not JSON: {err}")),
            };
            for p in &self.body_json_exists {
                if pointer(&doc, p).is_none() {
                    return fail(format!("JSON {p} is missing"));
                }
            }
            for (p, want) in &self.body_json {
                match pointer(&doc, p) {
                    None => return fail(format!("JSON {p} is missing")),
                    Some(got) if !json_eq(got, want) => {
                        return fail(format!(
                            "JSON {p} is {}, expected {}",
                            short(got, 80),
                            short(want, 80)
                        ));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// What `p` (a JSON pointer, RFC 6901) points at in `doc`: the answers of
/// `Value::pointer`, without its new `String` for every token (a check
/// looks its pointers up at every round).
fn pointer<'a>(doc: &'a Value, p: &str) -> Option<&'a Value> {
    if p.is_empty() {
        return Some(doc);
    }
    p.strip_prefix('/')?.split('/').try_fold(doc, |v, raw| {
        let token = if raw.contains('~') {
            std::borrow::Cow::Owned(raw.replace("~1", "/").replace("~0", "~"))
        } else {
            std::borrow::Cow::Borrowed(raw)
        };
        match v {
            Value::Object(m) => m.get(token.as_ref()),
            Value::Array(a) => {
                // No sign and no leading zero, as RFC 6901 writes indexes.
                let signed_or_padded =
                    token.starts_with('+') || (token.starts_with('0') && token.len() > 1);
                (!signed_or_padded)
                    .then(|| token.parse::<usize>().ok())
                    .flatten()
                    .and_then(|i| a.get(i))
            }
            _ => None,
        }
    })
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
        let doc: Value = serde_json::from_str(
            r#"{"a":{"b":[10,{"c~d":1,"e/f":2,"":3}]},"0":"zero","s":"x","n":null}"#,
        )
        .unwrap();
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
        ] {
            assert_eq!(pointer(&doc, p), doc.pointer(p), "{p:?}");
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
