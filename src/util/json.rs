//! JSON written once and embedded as is.

use serde::Serialize;
use serde_json::value::RawValue;

/// `v` serialized, to embed in a larger answer without a `Value` tree;
/// `null` (and an error logged, naming `what`) when it cannot be.
pub fn raw_or_null(v: &impl Serialize, what: &str) -> Box<RawValue> {
    serde_json::value::to_raw_value(v).unwrap_or_else(|e| {
        tracing::error!(error = %e, "Cannot serialize {what}.");
        RawValue::from_string("null".into()).expect("valid JSON")
    })
}

/// `v` serialized after what `out` holds, to embed in a larger answer;
/// `null` (and an error logged, naming `what`) when it cannot be.
pub fn write_or_null(out: &mut Vec<u8>, v: &impl Serialize, what: &str) {
    let start = out.len();
    if let Err(e) = serde_json::to_writer(&mut *out, v) {
        tracing::error!(error = %e, "Cannot serialize {what}.");
        out.truncate(start);
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializable_values_are_written_and_the_rest_is_null() {
        assert_eq!(raw_or_null(&[1, 2], "a list").get(), "[1,2]");
        // A map with non-string keys cannot be JSON.
        let bad: std::collections::BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        assert_eq!(raw_or_null(&bad, "a map").get(), "null");
        let mut out = b"[".to_vec();
        write_or_null(&mut out, &[1, 2], "a list");
        out.push(b',');
        write_or_null(&mut out, &bad, "a map");
        out.push(b']');
        assert_eq!(out, b"[[1,2],null]");
    }
}
