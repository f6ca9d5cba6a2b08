//! Stage two of the configuration: the [`Checker`] every part of the
//! configuration reports through (a problem at a key path, with a hint),
//! reads secrets and files named by the configuration (bounded), and hands
//! each probe kind its own keys. It is the ground floor: it knows YAML
//! nodes and units, and nothing of probes, so every kind can use it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::de::{self, Ctx};
use super::units::Secret;
use super::yaml::{self, Node, Problem};

/// The largest configuration file read. Ten thousand probes fit in 2 MiB;
/// a bigger file is a mistake (a log given as `--config`), not a config.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;
/// The largest secret file (`*_file`) read: tokens and passwords are short.
pub const MAX_SECRET_BYTES: u64 = 64 << 10;

/// The largest certificate or key file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads at most `limit` bytes of a file; `Ok(None)` when it is longer.
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= limit).then_some(buf))
}

/// The text of a file that should be UTF-8, or a problem at the first byte
/// that is not: its line and column, counted as an editor would.
pub fn utf8_text(bytes: Vec<u8>) -> Result<String, Problem> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let valid = e.utf8_error().valid_up_to();
        // The prefix up to `valid` is UTF-8 by definition.
        let before = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Problem {
            mark: yaml::Mark { line, col },
            path: String::new(),
            message: format!(
                "the file is not valid UTF-8 (byte 0x{:02x} at offset {valid})",
                bytes[valid]
            ),
            hint: Some("save the file as UTF-8".into()),
        }
    })
}

/// Stage two: semantic checks that report by key path.
pub struct Checker<'a> {
    pub(super) root: &'a Node,
    pub(super) ctx: &'a Ctx,
    pub(super) base: &'a Path,
}

impl Checker<'_> {
    /// Reports a problem at a key path, unless that very key already has one
    /// (a value that did not parse is not judged again).
    pub fn problem(&self, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        if self.ctx.has_problem_at(path) {
            return;
        }
        let hint = hint.into();
        let mut message = message.into();
        if let Some(text) = self.root.node_at(path).and_then(Node::env_text) {
            message = yaml::hide_env_value(&message, text);
        }
        self.ctx.push(Problem {
            mark: self.root.mark_of(path),
            path: path.to_string(),
            message,
            hint: (!hint.is_empty()).then_some(hint),
        });
    }

    /// Reports `name` at `{at}.name` when `seen` has it already: the names
    /// of a probe's queries, queues… label its metrics and must be unique.
    pub fn unique_name(&self, seen: &mut BTreeSet<String>, at: &str, what: &str, name: &str) {
        if !seen.insert(name.to_string()) {
            self.problem(
                &format!("{at}.name"),
                format!("duplicate {what} name `{name}`"),
                format!("{what} names label the metrics: make them unique"),
            );
        }
    }

    /// Reads a secret given inline or as `<key>_file`; exactly one may be set.
    pub fn secret(
        &self,
        path: &str,
        key: &str,
        inline: Option<Secret>,
        file: Option<&str>,
    ) -> Option<Secret> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(
                    &yaml::join(path, &format!("{key}_file")),
                    format!("both `{key}` and `{key}_file` are set"),
                    "keep one of them",
                );
                None
            }
            (Some(s), None) => Some(s),
            (None, Some(f)) => {
                let p = self.base.join(f);
                let read = read_bounded(&p, MAX_SECRET_BYTES).and_then(|b| {
                    let b = b.ok_or_else(|| {
                        std::io::Error::other(format!("larger than {} KiB", MAX_SECRET_BYTES >> 10))
                    })?;
                    String::from_utf8(b).map_err(|_| std::io::Error::other("not UTF-8 text"))
                });
                match read {
                    Ok(s) => Some(Secret::new(s.trim_end_matches(['\n', '\r']))),
                    Err(e) => {
                        self.problem(
                            &yaml::join(path, &format!("{key}_file")),
                            format!("cannot read secret file {f}: {e}"),
                            "check the path and that depwatch may read it",
                        );
                        None
                    }
                }
            }
            (None, None) => None,
        }
    }

    /// Deserializes a kind's own keys of a probe.
    pub fn parse_kind<T: serde::de::DeserializeOwned>(
        &self,
        node: &Node,
        path: &str,
        also: &[&'static str],
    ) -> Option<T> {
        de::parse(node, path, self.ctx, &|k| !also.contains(&k), also)
    }

    /// Reads a file named by the configuration (certificates, keys): at most
    /// 1 MiB, so that a wrong path such as /dev/zero cannot stall a load.
    pub fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        read_bounded(path, MAX_FILE_BYTES)?.ok_or_else(|| {
            std::io::Error::other(format!("larger than {} MiB", MAX_FILE_BYTES >> 20))
        })
    }

    /// The node at a key path (`alerting`, `probes[0].url`), if present.
    pub fn node(&self, path: &str) -> Option<&Node> {
        self.root.node_at(path)
    }

    /// Resolves a path relative to the configuration file.
    pub fn resolve(&self, p: &str) -> PathBuf {
        self.base.join(p)
    }

    /// The path `p` of the key at `key`, resolved as [`Checker::resolve`]
    /// does, after refusing what a shell would have expanded: depwatch
    /// reads `~/app.log` as a directory named `~` beside the
    /// configuration, and `$HOME/x` as a directory named `$HOME`.
    pub fn path(&self, key: &str, p: &str) -> PathBuf {
        self.not_for_a_shell(key, p);
        self.resolve(p)
    }

    /// Refuses, at `key`, what in the path `p` only a shell would expand.
    pub fn not_for_a_shell(&self, key: &str, p: &str) {
        if let Some((problem, hint)) = shell_form(p) {
            self.problem(key, problem, hint);
        }
    }
}

/// What in `p` only a shell expands, and how to write it instead.
fn shell_form(p: &str) -> Option<(String, String)> {
    let first = p.split('/').next().unwrap_or_default();
    if let Some(user) = first.strip_prefix('~') {
        let user = if user.is_empty() { "USER" } else { user };
        return Some((
            format!("`{first}` is not expanded: paths are read as written, not by a shell"),
            format!(
                "write the full path, e.g. /home/{user}{}",
                &p[first.len()..]
            ),
        ));
    }
    let var = p.strip_prefix('$')?;
    let name: String = var
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((
        format!("`${name}` is not substituted: only `${{NAME}}` is"),
        format!("write ${{{name}}}{}", &var[name.len()..]),
    ))
}
