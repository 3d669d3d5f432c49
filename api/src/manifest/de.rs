//! The strict serde `Deserializer` over a `&Node`: it tracks the field path,
//! checks shapes itself (so "expected a list, found a map" comes with a fix),
//! types plain scalars by the YAML 1.2 core schema (keeping a plain number's
//! source text when text is wanted), and locates every error — including those
//! a derived visitor raises — at the innermost node or key where it surfaced.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::de::Visitor;

use super::Mark;
use super::access::{MapAcc, MapEnum, ScalarEnum, SeqAcc};
use super::error::{DeError, Loc};
use super::node::{Entry, Node, Scalar, Typed, Value, clip};
use super::path::Step;

/// State shared by one decoding pass.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    /// For lists that lost items in repair: the original index of each
    /// remaining item, so later errors still name the index the user wrote.
    pub seq_origins: HashMap<Vec<Step>, Vec<usize>>,
    /// The fields each struct visited in this pass accepts, by path; used to
    /// tell a mis-indented field from an unknown one.
    pub fields: RefCell<HashMap<Vec<Step>, &'static [&'static str]>>,
}

#[derive(Clone)]
pub(crate) struct De<'a, 'c> {
    pub(super) node: &'a Node,
    steps: Vec<Step>,
    shown: Vec<Step>,
    /// The key that introduced this node, and its position.
    key: Option<(&'a str, Mark)>,
    ctx: &'c Ctx,
}

type Res<T> = Result<T, DeError>;

impl<'a, 'c> De<'a, 'c> {
    pub fn root(node: &'a Node, ctx: &'c Ctx) -> Self {
        De {
            node,
            steps: Vec::new(),
            shown: Vec::new(),
            key: None,
            ctx,
        }
    }

    /// Where errors about this node point: a scalar at its value, a map or
    /// list at the key that introduced it.
    fn loc(&self) -> Loc {
        let mark = match (&self.node.value, self.key) {
            (Value::Map(_) | Value::Seq(_), Some((_, m))) => m,
            _ => self.node.mark,
        };
        Loc {
            steps: self.steps.clone(),
            shown: self.shown.clone(),
            mark,
        }
    }

    pub(super) fn locate(&self, e: DeError) -> DeError {
        e.at(|| self.loc())
    }

    pub(super) fn fail<T>(&self, message: String, hint: Option<String>) -> Res<T> {
        Err(DeError::value(message, hint).at(|| self.loc()))
    }

    pub(super) fn key_loc(&self, entry: &Entry) -> Loc {
        let mut steps = self.steps.clone();
        steps.push(Step::Key(entry.key.clone()));
        let mut shown = self.shown.clone();
        shown.push(Step::Key(entry.key.clone()));
        Loc {
            steps,
            shown,
            mark: entry.key_mark,
        }
    }

    pub(super) fn child_key(&self, entry: &'a Entry) -> De<'a, 'c> {
        let mut steps = self.steps.clone();
        steps.push(Step::Key(entry.key.clone()));
        let mut shown = self.shown.clone();
        shown.push(Step::Key(entry.key.clone()));
        De {
            node: &entry.value,
            steps,
            shown,
            key: Some((&entry.key, entry.key_mark)),
            ctx: self.ctx,
        }
    }

    pub(super) fn child_index(&self, index: usize, node: &'a Node) -> De<'a, 'c> {
        let original = if self.ctx.seq_origins.is_empty() {
            index
        } else {
            self.ctx
                .seq_origins
                .get(&self.steps)
                .and_then(|o| o.get(index).copied())
                .unwrap_or(index)
        };
        let mut steps = self.steps.clone();
        steps.push(Step::Index(index));
        let mut shown = self.shown.clone();
        shown.push(Step::Index(original));
        De {
            node,
            steps,
            shown,
            key: None,
            ctx: self.ctx,
        }
    }

    fn scalar(&self) -> Option<&'a Scalar> {
        match &self.node.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    fn key_name(&self) -> &str {
        self.key.map_or("", |(k, _)| k)
    }

    /// A whole number within `min..=max`, with messages that say why not.
    fn integer(&self, min: i128, max: i128) -> Res<i128> {
        let Some(s) = self.scalar() else {
            return self.fail(
                format!("expected a whole number, found {}", self.node.describe()),
                None,
            );
        };
        match s.typed() {
            Typed::Int(n) if (min..=max).contains(&n) => Ok(n),
            Typed::Int(n) => {
                let port = self.key_name().to_ascii_lowercase().ends_with("port");
                if port && max == i128::from(u16::MAX) {
                    self.fail(format!("{n} is out of range for a port (0 to 65535)"), None)
                } else {
                    self.fail(
                        format!("{n} is out of range: expected a whole number from {min} to {max}"),
                        None,
                    )
                }
            }
            Typed::Float(_) => self.fail(format!("expected a whole number, found `{}`", s.text), None),
            Typed::Str(t) if !s.plain && t.trim().parse::<i128>().is_ok() => self.fail(
                format!("expected a number, found the quoted text \"{}\"", clip(t)),
                Some(format!("remove the quotes: `{}`", t.trim())),
            ),
            _ => self.fail(
                format!("expected a whole number, found {}", self.node.describe()),
                None,
            ),
        }
    }

    fn any<V: Visitor<'a>>(&self, v: V) -> Res<V::Value> {
        match &self.node.value {
            Value::Map(entries) => v.visit_map(MapAcc::new(self, entries)),
            Value::Seq(items) => v.visit_seq(SeqAcc::new(self, items)),
            Value::Scalar(s) => match s.typed() {
                Typed::Null => v.visit_unit(),
                Typed::Bool(b) => v.visit_bool(b),
                Typed::Int(n) => {
                    if let Ok(i) = i64::try_from(n) {
                        v.visit_i64(i)
                    } else if let Ok(u) = u64::try_from(n) {
                        v.visit_u64(u)
                    } else {
                        self.fail(
                            format!("the number `{}` is too large", s.text),
                            Some(format!("quote it to keep it as text: \"{}\"", s.text)),
                        )
                    }
                }
                Typed::Float(f) => v.visit_f64(f),
                Typed::Str(t) => v.visit_str(t),
            },
        }
    }

    fn text<V: Visitor<'a>>(&self, v: V) -> Res<V::Value> {
        match self.scalar() {
            Some(s) if s.plain && s.typed() == Typed::Null => {
                let hint = match self.key {
                    Some((k, _)) => format!("write a value after `{k}:`, or remove the line"),
                    None => "write a value, or remove the item".into(),
                };
                self.fail("expected text, found nothing (null)".into(), Some(hint))
            }
            Some(s) => v.visit_str(&s.text),
            None => self.fail(format!("expected text, found {}", self.node.describe()), None),
        }
    }

    fn boolean<V: Visitor<'a>>(&self, v: V) -> Res<V::Value> {
        let Some(s) = self.scalar() else {
            return self.fail(
                format!("expected true or false, found {}", self.node.describe()),
                None,
            );
        };
        match (s.typed(), s.text.to_ascii_lowercase().as_str()) {
            (Typed::Bool(b), _) => v.visit_bool(b),
            (Typed::Str(_), t @ ("true" | "false")) => self.fail(
                format!("expected true or false, found the quoted text \"{}\"", s.text),
                Some(format!("remove the quotes: `{t}`")),
            ),
            (Typed::Str(_), "yes" | "no" | "on" | "off" | "y" | "n") => self.fail(
                format!("expected true or false, found the text `{}`", s.text),
                Some("YAML 1.2 reads yes/no/on/off as text; write `true` or `false`".into()),
            ),
            _ => self.fail(
                format!("expected true or false, found {}", self.node.describe()),
                None,
            ),
        }
    }

    fn seq<V: Visitor<'a>>(&self, v: V) -> Res<V::Value> {
        match &self.node.value {
            Value::Seq(items) => v.visit_seq(SeqAcc::new(self, items)),
            _ if self.node.is_null() => v.visit_seq(SeqAcc::new(self, &[])),
            Value::Map(entries) => {
                let hint = entries.first().map(|e| match &e.value.value {
                    Value::Scalar(s) => format!("write it as a list item: `- {}: {}`", e.key, s.text),
                    _ => format!("write it as a list item: `- {}: …`", e.key),
                });
                self.fail("expected a list, found a map".into(), hint)
            }
            Value::Scalar(s) => self.fail(
                format!("expected a list, found {}", self.node.describe()),
                Some(format!("write it as a list item: `- {}`", clip(&s.text))),
            ),
        }
    }

    fn map<V: Visitor<'a>>(&self, v: V) -> Res<V::Value> {
        match &self.node.value {
            Value::Map(entries) => v.visit_map(MapAcc::new(self, entries)),
            _ if self.node.is_null() => v.visit_map(MapAcc::new(self, &[])),
            Value::Seq(_) => self.fail(
                "expected a map, found a list".into(),
                Some("remove the `- ` in front of the fields: this value is a single map, not a list".into()),
            ),
            Value::Scalar(_) => self.fail(
                format!("expected a map, found {}", self.node.describe()),
                Some("write its fields as `key: value` lines indented under it".into()),
            ),
        }
    }

    fn enumeration<V: Visitor<'a>>(&self, variants: &'static [&'static str], v: V) -> Res<V::Value> {
        match &self.node.value {
            Value::Scalar(s) if !self.node.is_null() => v.visit_enum(ScalarEnum { text: &s.text }),
            Value::Map(entries) if entries.len() == 1 => match entries.first() {
                Some(entry) => v.visit_enum(MapEnum { de: self, entry }),
                None => self.fail("expected a value".into(), None),
            },
            _ => self.fail(
                format!(
                    "expected one of: {}; found {}",
                    variants.join(", "),
                    self.node.describe()
                ),
                None,
            ),
        }
    }
}

macro_rules! integers {
    ($($method:ident => $visit:ident, $t:ty;)*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
            let n = self.integer(i128::from(<$t>::MIN), i128::from(<$t>::MAX))?;
            match <$t>::try_from(n) {
                Ok(n) => v.$visit(n.into()).map_err(|e| self.locate(e)),
                Err(_) => self.fail(format!("{n} is out of range"), None),
            }
        }
    )*};
}

impl<'de, 'c> serde::Deserializer<'de> for De<'de, 'c> {
    type Error = DeError;

    integers! {
        deserialize_i8 => visit_i64, i8;
        deserialize_i16 => visit_i64, i16;
        deserialize_i32 => visit_i64, i32;
        deserialize_i64 => visit_i64, i64;
        deserialize_u8 => visit_u64, u8;
        deserialize_u16 => visit_u64, u16;
        deserialize_u32 => visit_u64, u32;
        deserialize_u64 => visit_u64, u64;
    }

    fn deserialize_i128<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        let n = self.integer(i128::MIN, i128::MAX)?;
        v.visit_i128(n).map_err(|e| self.locate(e))
    }

    fn deserialize_u128<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        let n = self.integer(0, i128::MAX)?;
        match u128::try_from(n) {
            Ok(n) => v.visit_u128(n).map_err(|e| self.locate(e)),
            Err(_) => self.fail(format!("{n} is out of range"), None),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        self.deserialize_f64(v)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        let r = match self.scalar().map(Scalar::typed) {
            Some(Typed::Float(f)) => v.visit_f64(f),
            #[allow(clippy::cast_precision_loss)]
            Some(Typed::Int(n)) => v.visit_f64(n as f64),
            _ => self.fail(format!("expected a number, found {}", self.node.describe()), None),
        };
        r.map_err(|e| self.locate(e))
    }

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        self.any(v).map_err(|e| self.locate(e))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        self.boolean(v).map_err(|e| self.locate(e))
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        let mut chars = self.scalar().map(|s| s.text.chars());
        match chars.as_mut().map(|c| (c.next(), c.next())) {
            Some((Some(c), None)) => v.visit_char(c).map_err(|e| self.locate(e)),
            _ => self.fail(
                format!("expected a single character, found {}", self.node.describe()),
                None,
            ),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        self.text(v).map_err(|e| self.locate(e))
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        self.text(v).map_err(|e| self.locate(e))
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        let r = match self.scalar() {
            Some(s) => v.visit_bytes(s.text.as_bytes()),
            None => self.seq(v),
        };
        r.map_err(|e| self.locate(e))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        self.deserialize_bytes(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        let r = if self.node.is_null() {
            v.visit_none()
        } else {
            v.visit_some(self.clone())
        };
        r.map_err(|e| self.locate(e))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        if self.node.is_null() {
            v.visit_unit().map_err(|e| self.locate(e))
        } else {
            self.fail(
                format!("expected nothing (null), found {}", self.node.describe()),
                None,
            )
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, v: V) -> Res<V::Value> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, v: V) -> Res<V::Value> {
        v.visit_newtype_struct(self.clone()).map_err(|e| self.locate(e))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        self.seq(v).map_err(|e| self.locate(e))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Res<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Res<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        self.map(v).map_err(|e| self.locate(e))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Res<V::Value> {
        if let Ok(mut known) = self.ctx.fields.try_borrow_mut() {
            known.insert(self.steps.clone(), fields);
        }
        self.map(v).map_err(|e| self.locate(e))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Res<V::Value> {
        self.enumeration(variants, v).map_err(|e| self.locate(e))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        self.text(v).map_err(|e| self.locate(e))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        v.visit_unit()
    }
}
