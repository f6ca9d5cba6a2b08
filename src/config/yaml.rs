//! YAML with positions: a parsed document tree whose every node knows its line
//! and column, `${NAME}` substitution, and a serde bridge that keeps going
//! after an error so that one run reports every problem of a file.
//!
//! serde_yaml (deprecated) and its forks stop at the first error and forget
//! where values came from, so the semantic checks of stage two could not name a
//! line. Parsing is done by `yaml-rust2` (maintained); this module turns its
//! marked events into [`Node`]s and deserializes typed raw structs from them.

// Errors carry a path, a message and a hint: large, but only on the cold
// configuration path, where clarity beats a boxed indirection.
#![allow(clippy::result_large_err)]

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
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
    let mut problems = Vec::new();
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
                    // A block mapping is only recognised at its first `:`,
                    // so its event points there: use the first key instead.
                    if let Value::Map(entries) = &node.value
                        && let Some((k, _)) = entries.first()
                    {
                        node.mark = k.mark;
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

/// Collects problems while deserializing and validating one file.
#[derive(Default)]
pub struct Ctx {
    problems: RefCell<BTreeSet<Problem>>,
}

impl Ctx {
    pub fn push(&self, p: Problem) {
        self.problems.borrow_mut().insert(p);
    }

    pub fn into_problems(self) -> Vec<Problem> {
        self.problems.into_inner().into_iter().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.problems.borrow().is_empty()
    }

    /// Whether a problem was reported for exactly this key path.
    pub fn has_problem_at(&self, path: &str) -> bool {
        self.problems.borrow().iter().any(|p| p.path == path)
    }
}

/// Stands in for a value already reported as wrong, so that the rest of the
/// file can still be checked. Types of ours that parse strings accept it.
pub const POISON: &str = "\u{0}<reported>";

/// Deserializes `T` from `node`, reporting into `ctx` every problem found:
/// a bad (or missing) value is reported, then replaced by a neutral stand-in
/// ([`POISON`], 0, false, empty) and the whole is tried again, so the next
/// problem is found too. `None` when anything was wrong. `keep` filters which
/// keys of the top map `T` sees; `also` names keys handled elsewhere (no
/// "unknown key" for them).
pub fn parse<T: DeserializeOwned>(
    node: &Node,
    path: &str,
    ctx: &Ctx,
    keep: &dyn Fn(&str) -> bool,
    also: &[&'static str],
) -> Option<T> {
    let mut poison: BTreeSet<String> = BTreeSet::new();
    loop {
        let de = NodeDe {
            node,
            path: path.to_string(),
            ctx,
            poison: &poison,
            poisoned: false,
            keep: Some(keep),
            also,
        };
        match T::deserialize(de) {
            // With stand-ins the value is only good for further checks:
            // the problems are in `ctx`, and the configuration is refused.
            Ok(v) => return Some(v),
            Err(e) => {
                let target = e.missing.clone().unwrap_or_else(|| e.path.clone());
                if poison.iter().any(|p| {
                    target == *p
                        || target.starts_with(&format!("{p}."))
                        || target.starts_with(&format!("{p}["))
                }) {
                    // A stand-in did not satisfy its type: stop here.
                    return None;
                }
                ctx.push(Problem {
                    mark: e.mark.unwrap_or(node.mark),
                    path: e.path.clone(),
                    message: e.message.clone(),
                    hint: e.hint.clone(),
                });
                if target == path {
                    return None;
                }
                poison.insert(target);
            }
        }
    }
}

/// Deserialization error carrying where it happened.
#[derive(Debug)]
pub struct DeError {
    message: String,
    hint: Option<String>,
    path: String,
    mark: Option<Mark>,
    located: bool,
    /// Set for a missing required key: its would-be path.
    missing: Option<String>,
}

impl DeError {
    fn at(mut self, node: &Node, path: &str) -> Self {
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

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let text = msg.to_string();
        // Custom messages from our own types carry a hint after " (hint: ".
        let (message, hint) = match text.split_once(" (hint: ") {
            Some((m, h)) => (m.to_string(), Some(h.trim_end_matches(')').to_string())),
            None => (text, None),
        };
        DeError {
            message,
            hint,
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

/// A hint for a misspelt key: the closest known name, or the list.
pub fn suggest(unknown: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| (strsim::levenshtein(unknown, k), *k))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, k)) if d <= 2 || (d <= 4 && k.contains(unknown)) => format!("did you mean `{k}`?"),
        _ => {
            let mut all: Vec<&str> = known.to_vec();
            all.sort_unstable();
            format!("known keys: {}", all.join(", "))
        }
    }
}

struct NodeDe<'a> {
    node: &'a Node,
    path: String,
    ctx: &'a Ctx,
    poison: &'a BTreeSet<String>,
    poisoned: bool,
    keep: Option<&'a dyn Fn(&str) -> bool>,
    also: &'a [&'static str],
}

impl<'a> NodeDe<'a> {
    fn child(&self, node: &'a Node, path: String) -> NodeDe<'a> {
        let poisoned = self.poisoned || self.poison.contains(&path);
        NodeDe {
            node,
            path,
            ctx: self.ctx,
            poison: self.poison,
            poisoned,
            keep: None,
            also: &[],
        }
    }

    fn text(&self) -> Option<&'a str> {
        self.node.scalar()
    }

    fn shown(&self) -> String {
        match &self.node.value {
            Value::Scalar { secret: true, .. } => "a value from the environment".into(),
            Value::Scalar { text, .. } => format!("`{text}`"),
            Value::Null => "nothing".into(),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    fn expected(&self, what: &str) -> DeError {
        de::Error::custom(format!("expected {what}, found {}", self.shown()))
    }

    fn wrap<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.at(self.node, &self.path))
    }

    /// The entries of a mapping (filtered by `keep`); a key given twice is
    /// reported and its second value ignored.
    fn entries(&self) -> Vec<(&'a str, &'a Node, &'a Node)> {
        let Value::Map(entries) = &self.node.value else {
            return Vec::new();
        };
        let mut out: Vec<(&'a str, &'a Node, &'a Node)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let key = k.scalar().unwrap_or("");
            if !self.keep.is_none_or(|f| f(key)) {
                continue;
            }
            if let Some((_, first, _)) = out.iter().find(|(seen, _, _)| *seen == key) {
                self.ctx.push(Problem {
                    mark: k.mark,
                    path: join(&self.path, key),
                    message: format!("duplicate key `{key}`"),
                    hint: Some(format!("already set at line {}; keep one", first.mark.line)),
                });
                continue;
            }
            out.push((key, k, v));
        }
        out
    }
}

macro_rules! de_number {
    ($method:ident, $visit:ident, $ty:ty, $what:expr) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            if self.poisoned {
                return PoisonDe.$method(visitor);
            }
            let parsed = self
                .text()
                .and_then(|t| t.trim().replace('_', "").parse::<$ty>().ok());
            let r = match parsed {
                Some(n) => visitor.$visit(n),
                None => Err(self.expected($what)),
            };
            self.wrap(r)
        }
    };
}

static NULL_NODE: Node = Node {
    mark: Mark { line: 0, col: 0 },
    value: Value::Null,
};

macro_rules! poison_numbers {
    ($($method:ident $visit:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            visitor.$visit(0)
        }
    )*};
}

/// The stand-in of a value already reported: neutral values of any type.
struct PoisonDe;

impl<'de> de::Deserializer<'de> for PoisonDe {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_bool(false)
    }
    poison_numbers! {
        deserialize_i8 visit_i8, deserialize_i16 visit_i16, deserialize_i32 visit_i32,
        deserialize_i64 visit_i64, deserialize_u8 visit_u8, deserialize_u16 visit_u16,
        deserialize_u32 visit_u32, deserialize_u64 visit_u64
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_f32(0.0)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_f64(0.0)
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str(POISON)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_none()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_seq(de::value::SeqDeserializer::new(std::iter::empty::<()>()))
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(de::value::MapDeserializer::new(
            std::iter::empty::<((), ())>(),
        ))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_map(PoisonMap {
            fields: fields.iter(),
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let first = variants.first().copied().unwrap_or("");
        visitor.visit_enum(first.into_deserializer())
    }
    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct tuple tuple_struct identifier ignored_any
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str(POISON)
    }
}

struct PoisonMap {
    fields: std::slice::Iter<'static, &'static str>,
}

impl<'de> de::MapAccess<'de> for PoisonMap {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.fields.next() {
            Some(f) => seed
                .deserialize(de::value::StrDeserializer::<DeError>::new(f))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        seed.deserialize(PoisonDe)
    }
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_any(visitor);
        }
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Scalar { text, plain, .. } => {
                if *plain {
                    if let Some(b) = parse_bool(text) {
                        return self.wrap(visitor.visit_bool(b));
                    }
                    if let Ok(i) = text.parse::<i64>() {
                        return self.wrap(visitor.visit_i64(i));
                    }
                    if let Ok(f) = text.parse::<f64>() {
                        return self.wrap(visitor.visit_f64(f));
                    }
                }
                visitor.visit_str(text)
            }
            Value::Seq(_) => return self.deserialize_seq(visitor),
            Value::Map(_) => return self.deserialize_map(visitor),
        };
        self.wrap(r)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_bool(visitor);
        }
        let r = match self.text().and_then(parse_bool) {
            Some(b) => visitor.visit_bool(b),
            None => Err(self.expected("true or false")),
        };
        self.wrap(r)
    }

    de_number!(deserialize_i8, visit_i8, i8, "an integer");
    de_number!(deserialize_i16, visit_i16, i16, "an integer");
    de_number!(deserialize_i32, visit_i32, i32, "an integer");
    de_number!(deserialize_i64, visit_i64, i64, "an integer");
    de_number!(deserialize_u8, visit_u8, u8, "a non-negative integer");
    de_number!(deserialize_u16, visit_u16, u16, "a non-negative integer");
    de_number!(deserialize_u32, visit_u32, u32, "a non-negative integer");
    de_number!(deserialize_u64, visit_u64, u64, "a non-negative integer");
    de_number!(deserialize_f32, visit_f32, f32, "a number");
    de_number!(deserialize_f64, visit_f64, f64, "a number");

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_char(visitor);
        }
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_str(visitor);
        }
        let r = match self.text() {
            Some(t) => visitor.visit_str(t),
            None => Err(self.expected("a string")),
        };
        self.wrap(r)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_string(visitor);
        }
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_bytes(visitor);
        }
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_byte_buf(visitor);
        }
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_option(visitor);
        }
        if matches!(self.node.value, Value::Null) {
            self.wrap(visitor.visit_none())
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_unit(visitor);
        }
        self.wrap(visitor.visit_unit())
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_unit_struct(_name, visitor);
        }
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_newtype_struct(_name, visitor);
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_seq(visitor);
        }
        let r = match &self.node.value {
            Value::Seq(items) => {
                let items: Vec<(usize, &Node)> = items.iter().enumerate().collect();
                visitor.visit_seq(SeqAcc {
                    de: &self,
                    items: items.into_iter(),
                })
            }
            _ => Err(self.expected("a list")),
        };
        self.wrap(r)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_tuple(_len, visitor);
        }
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_tuple_struct(_name, _len, visitor);
        }
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_map(visitor);
        }
        let r = match &self.node.value {
            Value::Map(_) => {
                let entries = self.entries();
                visitor.visit_map(MapAcc {
                    de: &self,
                    entries: entries.into_iter(),
                    value: None,
                })
            }
            _ => Err(self.expected("a mapping")),
        };
        self.wrap(r)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_struct(_name, fields, visitor);
        }
        let Value::Map(_) = &self.node.value else {
            if matches!(self.node.value, Value::Null) {
                // `key:` with nothing under it: an empty mapping.
                let r = visitor.visit_map(MapAcc {
                    de: &self,
                    entries: Vec::new().into_iter(),
                    value: None,
                });
                return self.wrap(r);
            }
            return self.wrap(Err(self.expected("a mapping")));
        };
        // Unknown keys are reported here, all of them, and left out.
        let mut known: Vec<&str> = fields.to_vec();
        known.extend_from_slice(self.also);
        let mut entries: Vec<_> = self
            .entries()
            .into_iter()
            .filter(|(key, knode, _)| {
                if fields.contains(key) {
                    return true;
                }
                if !self.also.contains(key) {
                    self.ctx.push(Problem {
                        mark: knode.mark,
                        path: join(&self.path, key),
                        message: format!("unknown key `{key}`"),
                        hint: Some(suggest(key, &known)),
                    });
                }
                false
            })
            .collect();
        // Required keys reported missing get a stand-in.
        for f in fields {
            if self.poison.contains(&join(&self.path, f)) && !entries.iter().any(|(k, _, _)| k == f)
            {
                entries.push((f, &NULL_NODE, &NULL_NODE));
            }
        }
        let r = visitor.visit_map(MapAcc {
            de: &self,
            entries: entries.into_iter(),
            value: None,
        });
        self.wrap(r)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_enum(_name, variants, visitor);
        }
        let r = match self.text() {
            Some(t) if variants.contains(&t) => visitor.visit_enum(t.into_deserializer()),
            Some(t) => {
                let mut e: DeError = de::Error::custom(format!("unknown value `{t}`"));
                e.hint = Some(format!("expected one of: {}", variants.join(", ")));
                Err(e)
            }
            None => Err(self.expected(&format!("one of: {}", variants.join(", ")))),
        };
        self.wrap(r)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_identifier(visitor);
        }
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.poisoned {
            return PoisonDe.deserialize_ignored_any(visitor);
        }
        visitor.visit_unit()
    }
}

fn parse_bool(t: &str) -> Option<bool> {
    match t {
        "true" | "True" | "TRUE" | "yes" | "on" => Some(true),
        "false" | "False" | "FALSE" | "no" | "off" => Some(false),
        _ => None,
    }
}

struct SeqAcc<'b, 'a, I> {
    de: &'b NodeDe<'a>,
    items: I,
}

impl<'de, 'b, 'a, I: Iterator<Item = (usize, &'a Node)>> de::SeqAccess<'de> for SeqAcc<'b, 'a, I> {
    type Error = DeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some((i, node)) => {
                let path = format!("{}[{i}]", self.de.path);
                let child = self.de.child(node, path.clone());
                seed.deserialize(child)
                    .map(Some)
                    .map_err(|e| e.at(node, &path))
            }
            None => Ok(None),
        }
    }
}

struct MapAcc<'b, 'a, I> {
    de: &'b NodeDe<'a>,
    entries: I,
    value: Option<(&'a str, &'a Node)>,
}

impl<'de, 'b, 'a, I: Iterator<Item = (&'a str, &'a Node, &'a Node)>> de::MapAccess<'de>
    for MapAcc<'b, 'a, I>
{
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((key, knode, vnode)) => {
                self.value = Some((key, vnode));
                let path = join(&self.de.path, key);
                seed.deserialize(de::value::StrDeserializer::<DeError>::new(key))
                    .map(Some)
                    .map_err(|e| e.at(knode, &path))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        let (key, node) = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("value without key"))?;
        let path = join(&self.de.path, key);
        let child = self.de.child(node, path.clone());
        seed.deserialize(child).map_err(|e| e.at(node, &path))
    }
}

/// The field names of a derived struct, as serde hands them to a deserializer.
pub fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Sniff(std::cell::Cell<&'static [&'static str]>);
    impl<'de> de::Deserializer<'de> for &Sniff {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("sniff"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _v: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(de::Error::custom("sniff"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let sniff = Sniff(std::cell::Cell::new(&[]));
    let _ = T::deserialize(&sniff);
    sniff.0.get()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        a: u32,
        #[serde(default)]
        b: Option<String>,
    }

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Inner,
        #[serde(default)]
        list: Vec<u32>,
    }

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
    fn every_error_is_reported() {
        let n = doc("name: x\ninner:\n  a: notanumber\n  bb: 1\nlist: [1, two, 3]\nextra: 1\n");
        let ctx = Ctx::default();
        let out: Option<Outer> = parse(&n, "", &ctx, &|_| true, &[]);
        let probs: Vec<String> = ctx.into_problems().iter().map(|p| p.render("f")).collect();
        assert_eq!(out.map(|o| o.name), Some("x".to_string()));
        assert_eq!(
            probs,
            vec![
                "f:3:6: inner.a: expected a non-negative integer, found `notanumber`",
                "f:4:3: inner.bb: unknown key `bb` (did you mean `b`?)",
                "f:5:11: list[1]: expected a non-negative integer, found `two`",
                "f:6:1: extra: unknown key `extra` (known keys: inner, list, name)",
            ]
        );
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
    fn fields_are_sniffed() {
        assert_eq!(fields_of::<Inner>(), &["a", "b"]);
    }

    #[test]
    fn errors_never_quote_values_from_the_environment() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            a: crate::config::units::Dur,
            b: crate::config::units::Size,
        }
        let (n, _) = parse_document("a: ${V}\nb: x${V}\n", &|_| Some("Zz9-secret".into())).unwrap();
        let ctx = Ctx::default();
        let _: Option<T> = parse(&n, "", &ctx, &|_| true, &[]);
        let problems = ctx.into_problems();
        assert_eq!(problems.len(), 2);
        for p in problems {
            assert!(!p.render("f").contains("Zz9"), "{p:?}");
        }
        assert_eq!(
            hide_env_value("invalid duration `Zz9-secret` (unit `Zz`)", "Zz9-secret"),
            "invalid duration (a value from the environment) (unit (a value from the environment))"
        );
        assert_eq!(n.node_at("b").and_then(Node::env_text), Some("xZz9-secret"));
        assert_eq!(n.env_texts().len(), 2);
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
