//! Short renderings of values for messages people read.

/// `v` as JSON, cut to `max` characters with an ellipsis.
pub fn short(v: &serde_json::Value, max: usize) -> String {
    let s = v.to_string();
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::short;
    use serde_json::json;

    #[test]
    fn cuts_by_characters() {
        assert_eq!(short(&json!("abc"), 10), "\"abc\"");
        assert_eq!(short(&json!("ééééé"), 3), "\"éé…");
    }
}
