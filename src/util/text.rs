//! Short renderings of values for messages people read.

/// `v` as JSON, cut to `max` characters with an ellipsis.
pub fn short(v: &serde_json::Value, max: usize) -> String {
    short_str(&v.to_string(), max)
}

/// `s` cut to `max` characters with an ellipsis.
pub fn short_str(s: &str, max: usize) -> String {
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max).collect::<String>())
    } else {
        s.to_string()
    }
}

/// An error's message followed by its causes (`source()`), each not
/// already in the text: libraries such as hyper and lettre keep the
/// specific cause ("invalid chunk size line", "end of file before message
/// length reached") under a general message.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !t.is_empty() && !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{short, with_causes};
    use serde_json::json;

    #[test]
    fn causes_follow_the_message_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "error reading a body",
            Some(Box::new(E(
                "bad chunk",
                Some(Box::new(E("bad chunk", None))),
            ))),
        );
        assert_eq!(with_causes(&e), "error reading a body: bad chunk");
        assert_eq!(with_causes(&E("alone", None)), "alone");
    }

    #[test]
    fn cuts_by_characters() {
        assert_eq!(short(&json!("abc"), 10), "\"abc\"");
        assert_eq!(short(&json!("ééééé"), 3), "\"éé…");
    }
}
