//! Hints for a name that is not known where it was written (a key, a
//! kind, a tag, a probe): the closest known one, or ours for what another
//! tool calls it, or the list.

/// Names that other tools (blackbox_exporter, Gatus, mtail, Prometheus)
/// or habit give to what is named otherwise here: (written, meant). A
/// pair is suggested only where the meant name is known.
const SYNONYMS: &[(&str, &str)] = &[
    ("paths", "files"),
    ("path", "files"),
    ("file", "files"),
    ("logs", "files"),
    ("address", "url"),
    ("address", "uri"),
    ("addr", "url"),
    ("endpoint", "url"),
    ("target", "url"),
    ("host", "url"),
    ("host", "uri"),
    ("connection_string", "uri"),
    ("conditions", "expect"),
    ("valid_status_codes", "expect"),
    ("scrape_interval", "interval"),
    ("every", "interval"),
    ("period", "interval"),
    ("frequency", "interval"),
    ("scrape_timeout", "timeout"),
    ("type", "kind"),
    ("prober", "kind"),
    ("insecure", "insecure_skip_verify"),
    ("skip_verify", "insecure_skip_verify"),
    ("tls_skip_verify", "insecure_skip_verify"),
    // kinds
    ("disk", "storage"),
    ("filesystem", "storage"),
    ("bullmq", "redis"),
    ("bull", "redis"),
    ("queue", "redis"),
];

/// At most this many names in a hint's list.
const LISTED: usize = 40;

/// A hint for a misspelt name: the closest of `known`, the name used here
/// for what another tool calls `unknown`, or the list (`known NOUN: …`).
pub fn suggest(unknown: &str, known: &[&str], noun: &str) -> String {
    let synonym = || {
        SYNONYMS
            .iter()
            .find(|(written, meant)| written.eq_ignore_ascii_case(unknown) && known.contains(meant))
            .map(|(_, meant)| *meant)
    };
    hint(near(unknown, known).or_else(synonym), known, noun)
}

/// As [`suggest`], for names that are not depwatch's own (a log line's
/// fields): the closest of `known` or the list, no synonyms.
pub fn closest(unknown: &str, known: &[&str], noun: &str) -> String {
    hint(near(unknown, known), known, noun)
}

/// The name of `known` close enough to `unknown` to be what was meant.
fn near<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let (d, k) = known
        .iter()
        .map(|k| (strsim::levenshtein(unknown, k), *k))
        .min_by_key(|(d, _)| *d)?;
    (d <= 2 || (d <= 4 && k.contains(unknown))).then_some(k)
}

/// "did you mean `MEANT`?", or the list of `known`.
fn hint(meant: Option<&str>, known: &[&str], noun: &str) -> String {
    if let Some(k) = meant {
        return format!("did you mean `{k}`?");
    }
    let mut all: Vec<&str> = known.to_vec();
    all.sort_unstable();
    // A list is read, not searched: the first ones, and how many more.
    let more = all.len().saturating_sub(LISTED);
    all.truncate(LISTED);
    match more {
        0 => format!("known {noun}: {}", all.join(", ")),
        n => format!("known {noun}: {}, and {n} more", all.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_not_ours_get_no_synonyms() {
        assert_eq!(
            closest("paths", &["files", "rules"], "fields"),
            "known fields: files, rules"
        );
        assert_eq!(
            closest("fles", &["files"], "fields"),
            "did you mean `files`?"
        );
    }

    #[test]
    fn a_long_list_is_cut_and_says_how_many_more() {
        let names: Vec<String> = (0..45).map(|i| format!("field{i:02}")).collect();
        let known: Vec<&str> = names.iter().map(String::as_str).collect();
        let hint = suggest("zzzzzzzz", &known, "fields");
        assert!(
            hint.starts_with("known fields: field00, field01, "),
            "{hint}"
        );
        assert!(hint.ends_with("field39, and 5 more"), "{hint}");
    }

    #[test]
    fn another_tool_s_name_points_to_ours_only_where_ours_is_known() {
        assert_eq!(
            suggest("paths", &["files", "rules"], "keys"),
            "did you mean `files`?"
        );
        assert_eq!(
            suggest("Host", &["uri", "database"], "keys"),
            "did you mean `uri`?"
        );
        assert_eq!(
            suggest("paths", &["url", "expect"], "keys"),
            "known keys: expect, url"
        );
        // A close spelling wins over a synonym.
        assert_eq!(
            suggest("tpye", &["kind", "type"], "keys"),
            "did you mean `type`?"
        );
    }
}
