//! YAML with positions: a parsed document tree whose every node knows its line
//! and column, `${NAME}` substitution, and the limits that keep a hostile file
//! (alias bombs, deep nesting, a second document) from being obeyed.
//!
//! serde_yaml (deprecated) and its forks stop at the first error and forget
//! where values came from, so the semantic checks of stage two could not name a
//! line. Parsing is done by `yaml-rust2` (maintained); this module turns its
//! marked events into [`Node`]s, which [`super::de`] deserializes into typed
//! raw structs.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the source (both 1-based).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    pub line: usize,
    pub col: usize,
}

impl From<Marker> for Mark {
    fn from(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Mark {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub mark: Mark,
    pub value: Value,
}

#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Scalar {
        text: String,
        /// Plain (unquoted) scalars are typed by content: `true`, `12`, `~`.
        plain: bool,
        /// Text came (partly) from the environment: never quote it in errors.
        secret: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn is_map(&self) -> bool {
        matches!(self.value, Value::Map(_))
    }

    /// The key node and value node of `key` in a mapping.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.scalar() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The node at exactly this dotted path, if there is one.
    pub fn node_at(&self, path: &str) -> Option<&Node> {
        let mut node = self;
        for seg in split_path(path) {
            node = match seg {
                Seg::Key(k) => node.get(k)?,
                Seg::Index(i) => match &node.value {
                    Value::Seq(items) => items.get(i)?,
                    _ => return None,
                },
            };
        }
        Some(node)
    }

    /// The text of a scalar that came (partly) from the environment.
    pub fn env_text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar {
                text, secret: true, ..
            } => Some(text),
            _ => None,
        }
    }

    /// Every text in this tree that came from the environment.
    pub fn env_texts(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let mut todo = vec![self];
        while let Some(n) = todo.pop() {
            match &n.value {
                Value::Scalar { .. } => out.extend(n.env_text()),
                Value::Seq(items) => todo.extend(items),
                Value::Map(entries) => todo.extend(entries.iter().map(|(_, v)| v)),
                Value::Null => {}
            }
        }
        out
    }

    /// The position of a dotted path such as `probes[2].timeout`, relative to
    /// this node: the key's position when the path ends at a map entry, the
    /// nearest existing ancestor's otherwise.
    pub fn mark_of(&self, path: &str) -> Mark {
        let mut node = self;
        let mut mark = self.mark;
        for seg in split_path(path) {
            let next = match seg {
                Seg::Key(k) => node.entry(k).map(|(key, v)| (key.mark, v)),
                Seg::Index(i) => match &node.value {
                    Value::Seq(items) => items.get(i).map(|n| (n.mark, n)),
                    _ => None,
                },
            };
            match next {
                Some((m, n)) => {
                    mark = m;
                    node = n;
                }
                None => break,
            }
        }
        mark
    }
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub mark: Mark,
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    /// `FILE:LINE:COL: key.path: what is wrong (hint)`
    pub fn render(&self, file: &str) -> String {
        let mut s = format!("{file}:{}:{}: ", self.mark.line, self.mark.col);
        if !self.path.is_empty() {
            s.push_str(&self.path);
            s.push_str(": ");
        }
        s.push_str(&self.message);
        if let Some(h) = &self.hint {
            s.push_str(" (");
            s.push_str(h);
            s.push(')');
        }
        s
    }
}

/// Deepest nesting of mappings and lists a configuration may have. Stage two
/// walks the tree recursively; real configurations stay under ten levels.
pub const MAX_DEPTH: usize = 64;
/// Most aliases (`*name`) a file may use.
pub const MAX_ALIASES: usize = 10_000;
/// Most that aliases may add to the document, in estimated bytes: an
/// anchor's subtree is copied at each of its aliases, so nine levels of ten
/// aliases ("billion laughs") would otherwise grow without bound.
pub const MAX_ALIAS_EXPANSION: usize = 16 << 20;
/// The estimated cost of one node beyond its text.
const NODE_COST: usize = 64;

/// Parses a YAML document, substituting `${NAME}` from `env`. Syntax errors
/// and documents past the limits are fatal (there is no tree to check);
/// unset variables are collected.
pub fn parse_document(
    src: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Node, Vec<Problem>), Problem> {
    // Editors on Windows write a byte order mark: it is not part of a key.
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(src);
    let mut documents = 0;
    // Events are pulled one by one rather than through `Parser::load`,
    // which recurses once per level of nesting and stops silently after the
    // first document.
    loop {
        let (ev, marker) = parser.next_token().map_err(|e| {
            let info = e.to_string();
            let info = info.split(" at byte ").next().unwrap_or(&info).to_string();
            Problem {
                mark: Mark::from(*e.marker()),
                path: String::new(),
                message: format!("invalid YAML: {info}"),
                hint: Some("check indentation and quoting near this position".into()),
            }
        })?;
        match ev {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(Problem {
                        mark: Mark::from(marker),
                        path: String::new(),
                        message: "a second YAML document starts here; depwatch reads one document per file".into(),
                        hint: Some("remove this `---` (and what follows) or merge it into the first document".into()),
                    });
                }
            }
            ev => builder.on_event(ev, marker),
        }
        if let Some(p) = builder.error.take() {
            return Err(p);
        }
    }
    let mut root = builder.root.unwrap_or(Node {
        mark: Mark { line: 1, col: 1 },
        value: Value::Map(Vec::new()),
    });
    if matches!(root.value, Value::Null) {
        root.value = Value::Map(Vec::new());
    }
    let mut problems = builder.problems;
    let mut budget = Some(MAX_ALIAS_EXPANSION);
    substitute(&mut root, "", env, &mut problems, &mut budget);
    Ok((root, problems))
}

/// One collection being built: the node, a key waiting for its value, the
/// anchor id, and the estimated size of the subtree so far.
struct Frame {
    node: Node,
    pending_key: Option<Node>,
    anchor: usize,
    weight: usize,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Anchored subtrees with their estimated size.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    aliases: usize,
    expanded: usize,
    /// A limit was passed: building stops, the caller reports this.
    error: Option<Problem>,
    /// Problems that leave a tree to check (a bad merge key).
    problems: Vec<Problem>,
}

impl Builder {
    fn push_value(&mut self, node: Node, weight: usize, anchor: usize) {
        if anchor > 0 {
            // The copy kept for later aliases costs memory too.
            self.expanded = self.expanded.saturating_add(weight);
            self.anchors.insert(anchor, (node.clone(), weight));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(frame) => {
                frame.weight = frame.weight.saturating_add(weight);
                match &mut frame.node.value {
                    Value::Seq(items) => items.push(node),
                    Value::Map(entries) => match frame.pending_key.take() {
                        None => frame.pending_key = Some(node),
                        Some(k) => entries.push((k, node)),
                    },
                    _ => {}
                }
            }
        }
    }

    fn open(&mut self, mark: Mark, value: Value, anchor: usize) {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(
                mark,
                format!("the document nests deeper than {MAX_DEPTH} levels"),
                "flatten the structure: depwatch's keys nest a few levels at most",
            );
            return;
        }
        self.stack.push(Frame {
            node: Node { mark, value },
            pending_key: None,
            anchor,
            weight: NODE_COST,
        });
    }

    fn fail(&mut self, mark: Mark, message: String, hint: &str) {
        if self.error.is_none() {
            self.error = Some(Problem {
                mark,
                path: String::new(),
                message,
                hint: Some(hint.to_string()),
            });
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, marker: Marker) {
        let mark = Mark::from(marker);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                let weight = NODE_COST + text.len();
                let value = if plain && matches!(text.as_str(), "~" | "null" | "Null" | "NULL" | "")
                {
                    Value::Null
                } else {
                    Value::Scalar {
                        text,
                        plain,
                        secret: false,
                    }
                };
                self.push_value(Node { mark, value }, weight, anchor);
            }
            Event::SequenceStart(anchor, _) => self.open(mark, Value::Seq(Vec::new()), anchor),
            Event::MappingStart(anchor, _) => self.open(mark, Value::Map(Vec::new()), anchor),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(Frame {
                    mut node,
                    anchor,
                    weight,
                    ..
                }) = self.stack.pop()
                {
                    if let Value::Map(entries) = &mut node.value {
                        // A block mapping is only recognised at its first
                        // `:`, so its event points there: use the first key.
                        if let Some((k, _)) = entries.first() {
                            node.mark = k.mark;
                        }
                        merge_keys(entries, &mut self.problems);
                    }
                    self.push_value(node, weight, anchor);
                }
            }
            Event::Alias(id) => {
                let Some((node, weight)) = self.anchors.get(&id) else {
                    self.push_value(
                        Node {
                            mark,
                            value: Value::Null,
                        },
                        NODE_COST,
                        0,
                    );
                    return;
                };
                self.aliases += 1;
                self.expanded = self.expanded.saturating_add(*weight);
                if self.aliases > MAX_ALIASES {
                    self.fail(
                        mark,
                        format!("more than {MAX_ALIASES} aliases"),
                        "write the values out: a file that needs this many aliases is an alias bomb",
                    );
                } else if self.expanded > MAX_ALIAS_EXPANSION {
                    self.fail(
                        mark,
                        format!(
                            "aliases expand the document past {} MiB",
                            MAX_ALIAS_EXPANSION >> 20
                        ),
                        "an anchor that contains aliases of anchors multiplies at each level (an alias bomb): write the values out",
                    );
                } else {
                    let (node, weight) = (node.clone(), *weight);
                    self.push_value(node, weight, 0);
                }
            }
            _ => {}
        }
    }
}

/// Whether `key` is YAML's merge key: a plain `<<` (a quoted one is an
/// ordinary key).
fn is_merge_key(key: &Node) -> bool {
    matches!(&key.value, Value::Scalar { text, plain: true, .. } if text == "<<")
}

/// Resolves the merge keys (`<<: *base`, `<<: [*a, *b]`) of a mapping just
/// built, as YAML 1.1 and the Go and Python loaders do: the merged
/// mappings' entries join it, except keys it has itself (they override
/// them, wherever they stand), the first of several merged mappings
/// winning over the later ones. Merged entries keep their own positions:
/// a problem in one points at the anchor's line, where the value is
/// written. An anchored mapping is resolved before its aliases copy it.
fn merge_keys(entries: &mut Vec<(Node, Node)>, problems: &mut Vec<Problem>) {
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        return;
    }
    let (merges, mut out): (Vec<_>, Vec<_>) = std::mem::take(entries)
        .into_iter()
        .partition(|(k, _)| is_merge_key(k));
    let has = |out: &[(Node, Node)], key: &Node| {
        key.scalar()
            .is_some_and(|t| out.iter().any(|(k, _)| k.scalar() == Some(t)))
    };
    for (_, value) in merges {
        let sources = match value.value {
            Value::Seq(items) => items,
            _ => vec![value],
        };
        for source in sources {
            let Value::Map(merged) = source.value else {
                problems.push(Problem {
                    mark: source.mark,
                    path: String::new(),
                    message: "`<<` (a YAML merge key) takes a mapping or a list of mappings".into(),
                    hint: Some(
                        "anchor a mapping (`base: &base {kind: http}`) and merge it with `<<: *base`"
                            .into(),
                    ),
                });
                continue;
            };
            for (k, v) in merged {
                if !has(&out, &k) {
                    out.push((k, v));
                }
            }
        }
    }
    *entries = out;
}

/// Replaces `${NAME}` in every scalar. `budget` is what substitutions may
/// add in all: an alias copies `${NAME}` before it is replaced, so a large
/// variable used through many aliases would multiply.
fn substitute(
    node: &mut Node,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
    budget: &mut Option<usize>,
) {
    match &mut node.value {
        Value::Scalar { text, secret, .. } => {
            if !text.contains("${") {
                return;
            }
            let mut out = String::with_capacity(text.len());
            let mut rest = text.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else {
                    problems.push(Problem {
                        mark: node.mark,
                        path: path.to_string(),
                        message: "unterminated `${` in value".into(),
                        hint: Some("write ${NAME}, or $${ for a literal".into()),
                    });
                    return;
                };
                let name = &after[..end];
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    problems.push(Problem {
                        mark: node.mark,
                        path: path.to_string(),
                        message: format!("invalid environment variable name `{name}`"),
                        hint: Some("names use letters, digits and _".into()),
                    });
                    return;
                }
                // Exhausted: reported once, the rest is left as written.
                let Some(left) = *budget else { return };
                match env(name) {
                    Some(v) if v.len() > left => {
                        problems.push(Problem {
                            mark: node.mark,
                            path: path.to_string(),
                            message: format!(
                                "values from the environment add more than {} MiB to the document",
                                MAX_ALIAS_EXPANSION >> 20
                            ),
                            hint: Some(
                                "a large variable used through many aliases multiplies: use it once"
                                    .into(),
                            ),
                        });
                        *budget = None;
                        return;
                    }
                    Some(v) => {
                        *budget = Some(left - v.len());
                        out.push_str(&v);
                    }
                    None => {
                        problems.push(Problem {
                            mark: node.mark,
                            path: path.to_string(),
                            message: format!("environment variable `{name}` is not set"),
                            hint: Some(format!("export {name}=... before starting depwatch")),
                        });
                        return;
                    }
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *text = out;
            *secret = true;
        }
        Value::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{path}[{i}]"), env, problems, budget);
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                let key = k.scalar().unwrap_or("?").to_string();
                substitute(v, &join(path, &key), env, problems, budget);
            }
        }
        Value::Null => {}
    }
}

/// A message about a value that came from the environment, without the
/// value: every quoted part goes, and the text itself wherever it appears.
/// The environment is where secrets are passed (`${REDIS_URL}`).
pub fn hide_env_value(message: &str, text: &str) -> String {
    const SHOWN: &str = "(a value from the environment)";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('`') {
        let Some(len) = rest[open + 1..].find('`') else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(SHOWN);
        rest = &rest[open + 1 + len + 1..];
    }
    out.push_str(rest);
    if text.len() >= 4 {
        out = out.replace(text, SHOWN);
    }
    out
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(src: &str) -> Node {
        parse_document(src, &|k| (k == "SET").then(|| "value".to_string()))
            .unwrap()
            .0
    }

    #[test]
    fn positions_are_one_based() {
        let n = doc("a: 1\nb:\n  c: x\n");
        assert_eq!(n.mark_of("b.c"), Mark { line: 3, col: 3 });
        assert_eq!(n.mark_of("a"), Mark { line: 1, col: 1 });
    }

    #[test]
    fn env_substitution_and_unset() {
        let (n, probs) = parse_document("a: \"x-${SET}-y\"\nb: ${UNSET}\n", &|k| {
            (k == "SET").then(|| "v".into())
        })
        .unwrap();
        assert_eq!(n.get("a").and_then(Node::scalar), Some("x-v-y"));
        assert_eq!(probs.len(), 1);
        assert_eq!(
            probs[0].render("f"),
            "f:2:4: b: environment variable `UNSET` is not set (export UNSET=... before starting depwatch)"
        );
    }

    #[test]
    fn alias_bombs_are_refused_with_a_position() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            src.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = parse_document(&src, &|_| None).unwrap_err();
        assert!(err.message.contains("aliases expand"), "{err:?}");
        assert!(err.mark.line > 1 && err.mark.line <= 10, "{err:?}");

        let many = format!("a: &a x\nb: [{}]\n", vec!["*a"; MAX_ALIASES + 1].join(","));
        let err = parse_document(&many, &|_| None).unwrap_err();
        assert!(err.message.contains("more than 10000 aliases"), "{err:?}");
        // Ordinary use of anchors is fine.
        let ok = "d: &d {interval: 15s}\np: [*d, *d, *d]\n";
        assert!(parse_document(ok, &|_| None).is_ok());
    }

    #[test]
    fn environment_values_through_aliases_are_bounded() {
        let src = format!("a: &a \"${{BIG}}\"\nb: [{}]\n", vec!["*a"; 500].join(","));
        let (_, problems) = parse_document(&src, &|_| Some("x".repeat(100_000))).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.contains("more than 16 MiB"),
            "{problems:?}"
        );
    }

    #[test]
    fn merge_keys_join_the_mapping_its_own_keys_winning() {
        let n = doc(concat!(
            "base: &base {kind: http, interval: 10s, timeout: 2s}\n",
            "slow: &slow {timeout: 9s, retries: 3}\n",
            "one:\n",
            "  name: a\n",
            "  <<: *base\n",
            "  interval: 5s\n",
            "two: {<<: [*slow, *base], name: b}\n",
            "three: {\"<<\": x}\n",
        ));
        let get = |path: &str| n.node_at(path).and_then(Node::scalar).map(str::to_string);
        assert_eq!(get("one.kind").as_deref(), Some("http"));
        // The mapping's own key wins, even written after the merge.
        assert_eq!(get("one.interval").as_deref(), Some("5s"));
        assert_eq!(get("one.timeout").as_deref(), Some("2s"));
        assert!(n.node_at("one.<<").is_none());
        // Of several merged mappings, the first wins.
        assert_eq!(get("two.timeout").as_deref(), Some("9s"));
        assert_eq!(get("two.kind").as_deref(), Some("http"));
        assert_eq!(get("two.retries").as_deref(), Some("3"));
        // The mapping keeps its own position; a merged key keeps the anchor's.
        assert_eq!(n.get("one").unwrap().mark, Mark { line: 4, col: 3 });
        assert_eq!(n.mark_of("one.kind").line, 1);
        // A quoted `<<` is an ordinary key.
        assert_eq!(get("three.<<").as_deref(), Some("x"));

        let (_, problems) = parse_document("a: {<<: 3, b: 1}\n", &|_| None).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].render("f"),
            "f:1:9: `<<` (a YAML merge key) takes a mapping or a list of mappings \
             (anchor a mapping (`base: &base {kind: http}`) and merge it with `<<: *base`)"
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let src = format!("a: {}{}\n", "[".repeat(200), "]".repeat(200));
        let err = parse_document(&src, &|_| None).unwrap_err();
        assert!(err.message.contains("nests deeper than 64"), "{err:?}");
        let mut block = String::new();
        for i in 0..100 {
            block.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        let err = parse_document(&block, &|_| None).unwrap_err();
        assert!(err.message.contains("nests deeper"), "{err:?}");
    }

    #[test]
    fn a_second_document_is_refused() {
        let err = parse_document("a: 1\n---\nb: 2\n", &|_| None).unwrap_err();
        assert_eq!(err.mark.line, 2, "{err:?}");
        assert!(err.message.contains("second YAML document"), "{err:?}");
        // One document with an explicit start is fine.
        assert!(parse_document("---\na: 1\n", &|_| None).is_ok());
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_key() {
        let n = doc("\u{feff}name: x\n");
        assert_eq!(n.get("name").and_then(Node::scalar), Some("x"));
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse_document("a: [1, 2\nb: 3\n", &|_| None).unwrap_err();
        assert!(err.message.starts_with("invalid YAML"), "{err:?}");
        assert!(err.mark.line >= 1);
    }
}
