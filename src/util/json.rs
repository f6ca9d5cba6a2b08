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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializable_values_are_written_and_the_rest_is_null() {
        assert_eq!(raw_or_null(&[1, 2], "a list").get(), "[1,2]");
        // A map with non-string keys cannot be JSON.
        let bad: std::collections::BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        assert_eq!(raw_or_null(&bad, "a map").get(), "null");
    }
}
