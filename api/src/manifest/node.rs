//! The positioned tree the parser builds and the decoder walks: [`Node`], its
//! values, YAML 1.2 core-schema typing of plain scalars, lookups by key and by
//! path, and conversion to `serde_json::Value`.

use super::Mark;
use super::path::{Step, parse_path};

/// A positioned YAML/JSON document (the tree the decoder walks).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where this node starts.
    pub mark: Mark,
    pub value: Value,
}

/// What a node holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Entries in document order; keys are unique (the parser rejects duplicates).
    Map(Vec<Entry>),
}

/// A scalar's source text and whether it was written plain (unquoted), which
/// decides whether `80`, `true` or `null` are typed or stay text.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub text: String,
    pub plain: bool,
}

/// One `key: value` pair of a map.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_mark: Mark,
    pub value: Node,
}

/// A scalar typed by the YAML 1.2 core schema.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Typed<'a> {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
}

impl Scalar {
    /// Types the scalar: quoted scalars are always text; plain ones follow the
    /// YAML 1.2 core schema (`null`, `~`, empty; `true`/`false`; integers in
    /// decimal, `0o` octal and `0x` hex; floats, `.inf`, `.nan`).
    pub fn typed(&self) -> Typed<'_> {
        if !self.plain {
            return Typed::Str(&self.text);
        }
        resolve_plain(&self.text)
    }
}

fn resolve_plain(t: &str) -> Typed<'_> {
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return Typed::Null,
        "true" | "True" | "TRUE" => return Typed::Bool(true),
        "false" | "False" | "FALSE" => return Typed::Bool(false),
        ".nan" | ".NaN" | ".NAN" => return Typed::Float(f64::NAN),
        _ => {}
    }
    let (negative, unsigned) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
        return Typed::Float(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return match t.parse::<i128>() {
            Ok(i) => Typed::Int(i),
            Err(_) => t.parse::<f64>().map_or(Typed::Str(t), Typed::Float),
        };
    }
    if let Some(oct) = t.strip_prefix("0o")
        && let Ok(i) = i128::from_str_radix(oct, 8)
        && !oct.starts_with(['+', '-'])
    {
        return Typed::Int(i);
    }
    if let Some(hex) = t.strip_prefix("0x")
        && let Ok(i) = i128::from_str_radix(hex, 16)
        && !hex.starts_with(['+', '-'])
    {
        return Typed::Int(i);
    }
    if is_core_float(unsigned) {
        return t.parse::<f64>().map_or(Typed::Str(t), Typed::Float);
    }
    Typed::Str(t)
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_core_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let int_digits = digits(&mut i);
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = digits(&mut i);
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

impl Node {
    /// A plain scalar node (handy in tests and when building trees by hand).
    pub fn scalar(mark: Mark, text: &str, plain: bool) -> Node {
        Node {
            mark,
            value: Value::Scalar(Scalar {
                text: text.into(),
                plain,
            }),
        }
    }

    /// The value under `key` when this node is a map.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    /// The entry (key, its position, value) under `key` when this node is a map.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// The item at `index` when this node is a list.
    pub fn item(&self, index: usize) -> Option<&Node> {
        match &self.value {
            Value::Seq(items) => items.get(index),
            _ => None,
        }
    }

    /// The text of a scalar (any style) that is not null; `None` for maps,
    /// lists and nulls.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) if s.typed() != Typed::Null => Some(&s.text),
            _ => None,
        }
    }

    /// Whether the node is a null (`null`, `~` or nothing at all).
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.typed() == Typed::Null)
    }

    /// How messages name what this node is: `a map`, `a list`, `the text `x``.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Map(_) => "a map".into(),
            Value::Seq(_) => "a list".into(),
            Value::Scalar(s) => match s.typed() {
                Typed::Null => "nothing (null)".into(),
                Typed::Bool(b) => format!("`{b}`"),
                Typed::Int(_) | Typed::Float(_) => format!("the number `{}`", s.text),
                Typed::Str(t) => format!("the text `{}`", clip(t)),
            },
        }
    }

    /// The node as JSON: plain scalars typed by the core schema, quoted ones
    /// as strings. Floats JSON cannot hold (`.nan`, `.inf`) stay text.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Scalar(s) => match s.typed() {
                Typed::Null => J::Null,
                Typed::Bool(b) => J::Bool(b),
                Typed::Int(i) => {
                    if let Ok(v) = i64::try_from(i) {
                        J::from(v)
                    } else if let Ok(v) = u64::try_from(i) {
                        J::from(v)
                    } else {
                        J::String(s.text.clone())
                    }
                }
                Typed::Float(f) => {
                    serde_json::Number::from_f64(f).map_or_else(|| J::String(s.text.clone()), J::Number)
                }
                Typed::Str(t) => J::String(t.into()),
            },
        }
    }

    /// The position of the value at `path` (`a.b[2].c`,
    /// `metadata.labels["app.kubernetes.io/name"]`), or of the nearest ancestor
    /// that exists. A scalar is located at its value; a map or list under a key
    /// at its key (the line a user looks for).
    pub fn locate(&self, path: &str) -> Mark {
        self.locate_steps(&parse_path(path))
    }

    /// [`Node::locate`] for parsed steps.
    pub fn locate_steps(&self, steps: &[Step]) -> Mark {
        let mut node = self;
        let mut mark = self.mark;
        for step in steps {
            let next = match step {
                Step::Key(k) => node.entry(k).map(|e| (&e.value, Some(e.key_mark))),
                Step::Index(i) => node.item(*i).map(|n| (n, None)),
            };
            let Some((child, key_mark)) = next else {
                break;
            };
            node = child;
            mark = match (&child.value, key_mark) {
                (Value::Scalar(_), _) | (_, None) => child.mark,
                (_, Some(k)) => k,
            };
        }
        mark
    }

    /// Counts the nodes in this tree (itself, keys and values).
    pub fn count(&self) -> usize {
        match &self.value {
            Value::Scalar(_) => 1,
            Value::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            Value::Map(entries) => 1 + entries.iter().map(|e| 1 + e.value.count()).sum::<usize>(),
        }
    }

    /// The deepest nesting of maps and lists below and including this node.
    pub fn depth(&self) -> usize {
        match &self.value {
            Value::Scalar(_) => 0,
            Value::Seq(items) => 1 + items.iter().map(Node::depth).max().unwrap_or(0),
            Value::Map(entries) => 1 + entries.iter().map(|e| e.value.depth()).max().unwrap_or(0),
        }
    }
}

/// Shortens long text for messages.
pub(crate) fn clip(t: &str) -> String {
    const MAX: usize = 40;
    if t.chars().count() <= MAX {
        t.to_string()
    } else {
        let head: String = t.chars().take(MAX).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(t: &str) -> Scalar {
        Scalar {
            text: t.into(),
            plain: true,
        }
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        assert_eq!(plain("80").typed(), Typed::Int(80));
        assert_eq!(plain("-12").typed(), Typed::Int(-12));
        assert_eq!(plain("+7").typed(), Typed::Int(7));
        assert_eq!(plain("0x1F").typed(), Typed::Int(31));
        assert_eq!(plain("0o17").typed(), Typed::Int(15));
        assert_eq!(plain("1.5").typed(), Typed::Float(1.5));
        assert_eq!(plain("1.").typed(), Typed::Float(1.0));
        assert_eq!(plain(".5").typed(), Typed::Float(0.5));
        assert_eq!(plain("1e3").typed(), Typed::Float(1000.0));
        assert_eq!(plain("-.inf").typed(), Typed::Float(f64::NEG_INFINITY));
        assert!(matches!(plain(".nan").typed(), Typed::Float(f) if f.is_nan()));
        assert_eq!(plain("true").typed(), Typed::Bool(true));
        assert_eq!(plain("FALSE").typed(), Typed::Bool(false));
        assert_eq!(plain("~").typed(), Typed::Null);
        assert_eq!(plain("").typed(), Typed::Null);
        // YAML 1.1 words are text in YAML 1.2.
        assert_eq!(plain("yes").typed(), Typed::Str("yes"));
        assert_eq!(plain("1.14.2").typed(), Typed::Str("1.14.2"));
        assert_eq!(plain("1e").typed(), Typed::Str("1e"));
        assert_eq!(plain("0x").typed(), Typed::Str("0x"));
        assert_eq!(plain("0x-1").typed(), Typed::Str("0x-1"));
        assert_eq!(plain("-").typed(), Typed::Str("-"));
        assert_eq!(plain(".").typed(), Typed::Str("."));
        let quoted = Scalar {
            text: "80".into(),
            plain: false,
        };
        assert_eq!(quoted.typed(), Typed::Str("80"));
    }

    #[test]
    fn huge_integers_become_floats() {
        assert!(matches!(
            plain("1000000000000000000000000000000000000000").typed(),
            Typed::Float(f) if f > 1e38
        ));
    }
}
