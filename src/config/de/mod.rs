//! The serde bridge of the configuration: deserializes typed raw structs from
//! [`Node`]s and keeps going after an error, so that one run reports every
//! problem of a file, each at its line and column with a hint.

// Errors carry a path, a message and a hint: large, but only on the cold
// configuration path, where clarity beats a boxed indirection.
#![allow(clippy::result_large_err)]

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

use super::suggest::suggest;
use super::yaml::{Mark, Node, Problem, Value, join};

mod error;
mod poison;

pub use error::{DeError, hinted};
pub use poison::POISON;
use poison::PoisonDe;

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
                        hint: Some(suggest(key, &known, "keys")),
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
    use crate::config::yaml::{hide_env_value, parse_document};
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
}
