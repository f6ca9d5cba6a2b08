//! What a log probe's lines say of its rules' `match:` fields: one that no
//! line has (a misspelt name, or an event yet to come), and the names the
//! lines do have, to suggest from.

use serde_json::Value;

/// A field a rule's `match:` tests for a value that no valid line read
/// has had at all: most likely a misspelt name (or an event yet to come).
#[derive(Debug, Clone, PartialEq)]
pub struct Unseen {
    pub rule: String,
    pub field: String,
    /// From the field names of a line read: the closest one, or the list.
    pub hint: Option<String>,
    pub lines: u64,
}

impl Unseen {
    /// For people: the log, `replay-log`.
    pub fn message(&self) -> String {
        let hint = self
            .hint
            .as_ref()
            .map_or(String::new(), |h| format!("; {h}"));
        format!(
            "rule {}: its match tests `{}`, which none of the {} lines read has (a misspelt name \
             matches nothing{hint})",
            self.rule, self.field, self.lines
        )
    }
}

/// The fields never seen ([`super::rules::Engine::unseen`]), and a line
/// read (empty when none was kept).
pub struct Found {
    pub fields: Vec<Unseen>,
    pub sample: String,
}

impl Found {
    /// The fields, each with its hint: the closest of the line's field
    /// names, or their list (none without a line).
    pub fn hinted(self) -> Vec<Unseen> {
        let names = field_names(&self.sample);
        let known: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut fields = self.fields;
        if !known.is_empty() {
            for u in &mut fields {
                u.hint = Some(crate::config::suggest::closest(
                    &u.field,
                    &known,
                    "fields of a line",
                ));
            }
        }
        fields
    }
}

/// The field names of a JSON line, nested ones as dotted paths (at most
/// 200, three levels deep): what a misspelt name is compared with. Names
/// that could not be a rule's (control characters, over 64 bytes) are
/// left out: a hint quotes them in depwatch's log.
fn field_names(line: &str) -> Vec<String> {
    fn walk(v: &Value, prefix: &str, depth: usize, out: &mut Vec<String>) {
        let Value::Object(m) = v else { return };
        for (k, v) in m {
            if out.len() >= 200 {
                return;
            }
            if k.len() > 64 || k.chars().any(char::is_control) {
                continue;
            }
            let path = match prefix {
                "" => k.clone(),
                p => format!("{p}.{k}"),
            };
            if depth < 3 {
                walk(v, &path, depth + 1, out);
            }
            out.push(path);
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_str::<Value>(line) {
        walk(&v, "", 1, &mut out);
    }
    out
}
