//! References between probes: a log rule's `invalidates: [name, "tag:T"]`
//! must name a probe or a tag that some probe carries.

use super::check::Checker;
use super::suggest::suggest;

/// A tag: 1 to 64 letters, digits, '-', '_' or '.'.
pub(super) fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// What one probe names and is named by.
pub(super) struct Refs<'a> {
    pub(super) path: &'a str,
    pub(super) name: &'a str,
    pub(super) tags: &'a [String],
    /// (key path below the probe, target)
    pub(super) invalidates: Vec<(String, String)>,
}

impl Checker<'_> {
    /// Reports every `invalidates` target that names no probe (or a tag
    /// no probe has), at its own position, with the nearest known name.
    pub(super) fn references(&self, probes: &[Refs<'_>]) {
        let names: Vec<&str> = probes.iter().map(|p| p.name).collect();
        let mut tags: Vec<&str> = probes
            .iter()
            .flat_map(|p| p.tags.iter().map(String::as_str))
            .collect();
        tags.sort_unstable();
        tags.dedup();
        for p in probes {
            for (at, target) in &p.invalidates {
                let path = format!("{}.{at}", p.path);
                match target.strip_prefix("tag:") {
                    Some(tag) if !tags.contains(&tag) => {
                        let hint = if tags.is_empty() {
                            "no probe has tags: add tags: [..] to the probes to refresh".into()
                        } else {
                            suggest(tag, &tags, "tags")
                        };
                        self.problem(&path, format!("no probe has the tag `{tag}`"), hint);
                    }
                    None if !names.contains(&target.as_str()) => {
                        let hint = suggest(target, &names, "probes");
                        self.problem(
                            &path,
                            format!("no probe named `{target}`"),
                            format!("{hint} (or tag:NAME for a tag)"),
                        );
                    }
                    _ => {}
                }
            }
        }
    }
}
