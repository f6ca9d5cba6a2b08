//! Values out of result documents: a dotted field path, a number, a date
//! (or epoch milliseconds) and its age, and a field as a bounded label value.

use std::time::SystemTime;

use mongodb::bson::{Bson, Document};

/// A dotted field path in a document.
pub(super) fn lookup<'a>(d: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut cur = d.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Bson::Document(d) => d.get(p)?,
            _ => return None,
        };
    }
    Some(cur)
}

pub(super) fn number(b: &Bson) -> Option<f64> {
    match b {
        Bson::Int32(i) => Some(f64::from(*i)),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(f) => Some(*f),
        Bson::Decimal128(d) => d.to_string().parse().ok(),
        Bson::Boolean(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// A date, or a number of milliseconds since the epoch.
pub(super) fn epoch_ms(b: &Bson) -> Option<f64> {
    match b {
        Bson::DateTime(d) => Some(d.timestamp_millis() as f64),
        Bson::Timestamp(t) => Some(f64::from(t.time) * 1000.0),
        other => number(other),
    }
}

pub(super) fn age_seconds(ms: f64) -> f64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0);
    ((now - ms) / 1000.0).max(0.0)
}

/// A result field as a label value (bounded in length).
pub(super) fn label_value(b: &Bson) -> String {
    let s = match b {
        Bson::String(s) => s.clone(),
        Bson::ObjectId(o) => o.to_hex(),
        Bson::Null | Bson::Undefined => String::new(),
        Bson::Boolean(b) => b.to_string(),
        Bson::Int32(i) => i.to_string(),
        Bson::Int64(i) => i.to_string(),
        Bson::Double(f) => f.to_string(),
        other => other.clone().into_relaxed_extjson().to_string(),
    };
    s.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;

    use super::*;

    #[test]
    fn fields_and_dates() {
        let d = doc! { "a": { "b": 3_i64 }, "t": mongodb::bson::DateTime::from_millis(1_000) };
        assert_eq!(lookup(&d, "a.b").and_then(number), Some(3.0));
        assert_eq!(lookup(&d, "t").and_then(epoch_ms), Some(1000.0));
        assert_eq!(lookup(&d, "a.c"), None);
    }
}
