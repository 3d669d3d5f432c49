//! The decoder's error: what went wrong (kind, message, hint) and, once it has
//! surfaced through the tree, where (steps, shown path, mark). Also the
//! plain-words wording of serde's errors and "did you mean".

use std::fmt;

use serde::de::{Expected, Unexpected};

use super::Mark;
use super::node::clip;
use super::path::Step;

/// Which kind of error, so the repair rounds know what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ErrKind {
    /// A key the type does not know; located at the key.
    UnknownField(String),
    /// A required field is absent; located at the map that lacks it.
    MissingField(String),
    /// Anything else wrong with a value; located at the value.
    Value,
}

/// Where an error surfaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    /// Steps in the tree being decoded (which may have been repaired).
    pub steps: Vec<Step>,
    /// Steps as reported to the user (original list indices).
    pub shown: Vec<Step>,
    pub mark: Mark,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DeError {
    pub kind: ErrKind,
    pub message: String,
    pub hint: Option<String>,
    pub loc: Option<Box<Loc>>,
}

impl DeError {
    pub fn value(message: String, hint: Option<String>) -> DeError {
        DeError {
            kind: ErrKind::Value,
            message,
            hint,
            loc: None,
        }
    }

    /// Attaches a location unless the error already has one (the innermost wins).
    pub fn at(mut self, loc: impl FnOnce() -> Loc) -> DeError {
        if self.loc.is_none() {
            self.loc = Some(Box::new(loc()));
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

impl serde::de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let message = msg.to_string();
        let message = match message.strip_prefix("data did not match any variant of untagged enum ") {
            Some(name) => format!("this value does not fit any form of {name}"),
            None => message,
        };
        DeError::value(message, None)
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        DeError::value(
            format!(
                "expected {}, found {}",
                expected_words(exp),
                unexpected_words(&unexp)
            ),
            None,
        )
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        DeError::value(
            format!(
                "{} is not valid here: expected {}",
                unexpected_words(&unexp),
                expected_words(exp)
            ),
            None,
        )
    }

    fn invalid_length(len: usize, exp: &dyn Expected) -> Self {
        DeError::value(
            format!("expected {}, found {len} items", expected_words(exp)),
            None,
        )
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::value(
            format!(
                "unknown value `{}`; expected one of: {}",
                clip(variant),
                expected.join(", ")
            ),
            did_you_mean(variant, expected),
        )
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let valid = if expected.is_empty() {
            "there are no fields here".to_string()
        } else {
            format!("valid fields here: {}", expected.join(", "))
        };
        DeError {
            kind: ErrKind::UnknownField(field.into()),
            message: format!("unknown field `{}`; {valid}", clip(field)),
            hint: did_you_mean(field, expected),
            loc: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            kind: ErrKind::MissingField(field.into()),
            message: format!("missing required field `{field}`"),
            hint: None,
            loc: None,
        }
    }

    fn duplicate_field(field: &'static str) -> Self {
        DeError::value(
            format!("the field `{field}` is given twice"),
            Some("keep only one".into()),
        )
    }
}

/// How serde's `Expected` reads in a message for a YAML user.
pub(crate) fn expected_words(exp: &dyn Expected) -> String {
    let s = exp.to_string();
    if s.starts_with("struct ") || s == "a map" {
        return "a map".into();
    }
    match s.as_str() {
        "a sequence" => "a list".into(),
        "a string" | "a borrowed string" | "string or map" => "text".into(),
        "a boolean" => "true or false".into(),
        "u8" | "u16" | "u32" | "u64" | "i8" | "i16" | "i32" | "i64" | "u128" | "i128" => {
            "a whole number".into()
        }
        "f32" | "f64" => "a number".into(),
        _ => s,
    }
}

/// How serde's `Unexpected` reads in a message for a YAML user.
pub(crate) fn unexpected_words(unexp: &Unexpected<'_>) -> String {
    match unexp {
        Unexpected::Bool(b) => format!("`{b}`"),
        Unexpected::Unsigned(n) => format!("the number `{n}`"),
        Unexpected::Signed(n) => format!("the number `{n}`"),
        Unexpected::Float(n) => format!("the number `{n}`"),
        Unexpected::Char(c) => format!("the text `{c}`"),
        Unexpected::Str(s) => format!("the text `{}`", clip(s)),
        Unexpected::Unit => "nothing (null)".into(),
        Unexpected::Seq => "a list".into(),
        Unexpected::Map => "a map".into(),
        other => other.to_string(),
    }
}

/// "did you mean `x`?" when a candidate is close: same word ignoring case and
/// `_`/`-`, or a small edit distance.
pub(crate) fn did_you_mean(word: &str, candidates: &[&str]) -> Option<String> {
    let norm = |s: &str| -> Vec<char> {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let w = norm(word);
    let allowed = (w.len() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(&w, &norm(c)), *c))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
    if a.len().abs_diff(b.len()) > 3 || a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_are_suggested() {
        let fields = ["containerPort", "hostPort", "protocol", "name"];
        assert_eq!(
            did_you_mean("containerport", &fields).as_deref(),
            Some("did you mean `containerPort`?")
        );
        assert_eq!(
            did_you_mean("container_port", &fields).as_deref(),
            Some("did you mean `containerPort`?")
        );
        assert_eq!(
            did_you_mean("protocl", &fields).as_deref(),
            Some("did you mean `protocol`?")
        );
        assert_eq!(did_you_mean("image", &fields), None);
        assert_eq!(did_you_mean("", &fields), None);
    }

    #[test]
    fn serde_words_read_plainly() {
        use serde::de::Error as _;
        let e = DeError::unknown_field("foo", &["a", "b", "c"]);
        assert_eq!(e.message, "unknown field `foo`; valid fields here: a, b, c");
        assert_eq!(e.kind, ErrKind::UnknownField("foo".into()));
        let e = DeError::invalid_type(Unexpected::Map, &"a sequence");
        assert_eq!(e.message, "expected a list, found a map");
        let e = DeError::unknown_variant("Alwayz", &["Always", "OnFailure", "Never"]);
        assert_eq!(e.hint.as_deref(), Some("did you mean `Always`?"));
    }
}
