//! A log rule's conditions as written: the `match:` tests (equals, one of,
//! regex, exists) and the `labels:` entries, each with its own serde
//! visitor so that a wrong shape is reported at its line, and the scalar a
//! test compares against.

use std::fmt;

use regex::Regex;
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

use crate::config::de::hinted;

/// A regex compared by its source (for reload change detection).
#[derive(Clone, Debug)]
pub struct Pattern(pub Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// One condition of a rule's `match:`.
#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    Equals(Scalar),
    OneOf(Vec<Scalar>),
    Regex(Pattern),
    Exists(bool),
}

/// A test as written: `field: value`, `field: [a, b]`, or
/// `field: { equals | one_of | regex | exists: ... }`.
pub(super) enum RawTest {
    Equals(String),
    OneOf(Vec<String>),
    Regex(String),
    Exists(bool),
}

/// A scalar written in YAML, as text.
struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor).map(ScalarText)
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    // The stand-in of a value already reported (see config::de::POISON).
    fn visit_unit<E>(self) -> Result<String, E> {
        Ok(String::new())
    }
    fn visit_bool<E>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

const TEST_HINT: &str = "write one of equals, one_of, regex or exists";

impl<'de> Deserialize<'de> for RawTest {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTest;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value, a list of values, or one of equals/one_of/regex/exists")
            }
            fn visit_str<E>(self, v: &str) -> Result<RawTest, E> {
                Ok(RawTest::Equals(v.to_string()))
            }
            // The stand-in of a value already reported.
            fn visit_unit<E>(self) -> Result<RawTest, E> {
                Ok(RawTest::Exists(true))
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawTest, E> {
                Ok(RawTest::Equals(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawTest, E> {
                Ok(RawTest::Equals(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawTest, E> {
                Ok(RawTest::Equals(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawTest, E> {
                Ok(RawTest::Equals(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawTest, A::Error> {
                let mut out = Vec::new();
                while let Some(ScalarText(s)) = seq.next_element()? {
                    out.push(s);
                }
                Ok(RawTest::OneOf(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTest, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(hinted("empty test", TEST_HINT));
                };
                let test = match key.as_str() {
                    "equals" => RawTest::Equals(map.next_value::<ScalarText>()?.0),
                    "one_of" => RawTest::OneOf(
                        map.next_value::<Vec<ScalarText>>()?
                            .into_iter()
                            .map(|s| s.0)
                            .collect(),
                    ),
                    "regex" => RawTest::Regex(map.next_value::<String>()?),
                    "exists" => RawTest::Exists(map.next_value::<bool>()?),
                    other => {
                        return Err(hinted(format!("unknown test `{other}`"), TEST_HINT));
                    }
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(hinted(
                        "more than one test for a field",
                        "one of equals, one_of, regex or exists per field",
                    ));
                }
                Ok(test)
            }
        }
        d.deserialize_any(V)
    }
}

/// A label: `field` (named after the field) or `{ name: .., field: .. }`.
pub(super) struct RawLabel {
    pub(super) name: Option<String>,
    pub(super) field: String,
}

impl<'de> Deserialize<'de> for RawLabel {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawLabel;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name or { name, field }")
            }
            // The stand-in of a value already reported.
            fn visit_unit<E>(self) -> Result<RawLabel, E> {
                Ok(RawLabel {
                    name: None,
                    field: "_".into(),
                })
            }
            fn visit_str<E>(self, v: &str) -> Result<RawLabel, E> {
                Ok(RawLabel {
                    name: None,
                    field: v.to_string(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawLabel, A::Error> {
                let (mut name, mut field) = (None, None);
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        "name" => name = Some(map.next_value::<String>()?),
                        "field" => field = Some(map.next_value::<String>()?),
                        other => {
                            return Err(hinted(
                                format!("unknown key `{other}` in a label"),
                                "a label is a field name or { name, field }",
                            ));
                        }
                    }
                }
                let field = field.ok_or_else(|| {
                    hinted(
                        "a label needs `field`",
                        "{ name: partner, field: partner.id }",
                    )
                })?;
                Ok(RawLabel { name, field })
            }
        }
        d.deserialize_any(V)
    }
}

/// A configured constant to compare with.
#[derive(Clone, Debug)]
pub struct Scalar {
    pub text: String,
    pub num: Option<f64>,
}

impl PartialEq for Scalar {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Scalar {
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let num = text.parse().ok();
        Scalar { text, num }
    }
}
