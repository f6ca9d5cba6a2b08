//! HTML escaping, for the status page and the alert emails: `Display`
//! wrappers, so that nothing is allocated per value written.

use std::fmt::{self, Display, Write};

/// Writes `s` escaped; `quotes`: both quotes too (attribute values).
fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str, quotes: bool) -> fmt::Result {
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        let rep = match b {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'&' => "&amp;",
            b'"' if quotes => "&quot;",
            b'\'' if quotes => "&#39;",
            _ => continue,
        };
        f.write_str(&s[from..i])?;
        f.write_str(rep)?;
        from = i + 1;
    }
    f.write_str(&s[from..])
}

/// Writes its text HTML-escaped: safe in element content and in quoted
/// attribute values alike.
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0, true)
    }
}

/// Writes its text escaped for element content (`<pre>`, not attributes):
/// `&`, `<` and `>` only, so that quotes in JSON stay one byte.
pub struct EscText<'a>(pub &'a str);

impl Display for EscText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0, false)
    }
}

/// The escaped text as a `String`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let _ = write!(out, "{}", Esc(s));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_and_text() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(
            format!("{}", EscText(r#"{"a":"<b>"}"#)),
            r#"{"a":"&lt;b&gt;"}"#
        );
    }
}
