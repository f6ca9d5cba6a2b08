//! The error of the configuration's deserializer: a message, the key path
//! and position it belongs to, and a hint.

use std::fmt;

use serde::de;

use crate::config::yaml::{Mark, Node, hide_env_value, join};

/// Deserialization error carrying where it happened.
#[derive(Debug)]
pub struct DeError {
    pub(super) message: String,
    pub(super) hint: Option<String>,
    pub(super) path: String,
    pub(super) mark: Option<Mark>,
    located: bool,
    /// Set for a missing required key: its would-be path.
    pub(super) missing: Option<String>,
}

impl DeError {
    /// Places the error at `node`, `path` (once: the innermost place wins).
    pub(super) fn at(mut self, node: &Node, path: &str) -> Self {
        if !self.located {
            self.located = true;
            self.mark = Some(node.mark);
            self.path = path.to_string();
            if let Some(text) = node.env_text() {
                self.message = hide_env_value(&self.message, text);
            }
            if let Some(field) = self.missing.take() {
                self.path = join(path, &field);
                self.missing = Some(self.path.clone());
                self.message = format!("missing required key `{field}`");
            }
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

thread_local! {
    /// The hint of the error being made by [`hinted`], for [`DeError::custom`].
    static PENDING_HINT: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// An error from a `Deserialize` impl of ours (a duration, a log rule's
/// test) with its hint as a field. serde hands a deserializer only the
/// message (`de::Error::custom`), so the hint travels beside it for the
/// duration of that one call; any other deserializer ignores it.
pub fn hinted<E: de::Error>(message: impl fmt::Display, hint: &'static str) -> E {
    PENDING_HINT.with(|h| h.set(Some(hint)));
    let e = E::custom(message);
    PENDING_HINT.with(|h| h.set(None));
    e
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            hint: PENDING_HINT.with(|h| h.take()).map(str::to_string),
            path: String::new(),
            mark: None,
            located: false,
            missing: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        let mut e = Self::custom(format!("missing required key `{field}`"));
        e.missing = Some(field.to_string());
        e
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut e = Self::custom(format!("unknown value `{variant}`"));
        e.hint = Some(format!("expected one of: {}", expected.join(", ")));
        e
    }
}
