//! kubectl's `-l` label selector syntax (`a=b,c==d,e!=f,g in (x,y),h notin (z),i,!j`):
//! a parser into [`Selector`], its canonical string form, and matching.

use std::collections::BTreeMap;
use std::fmt;

use crate::validate::{is_label_value, is_qualified_name};

/// A requirement's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `k=v` or `k==v`
    Equals,
    /// `k!=v`
    NotEquals,
    /// `k in (a,b)`
    In,
    /// `k notin (a,b)`
    NotIn,
    /// `k`
    Exists,
    /// `!k`
    DoesNotExist,
}

/// One requirement on a label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// One value for `=`/`!=`, one or more for `in`/`notin`, none otherwise.
    pub values: Vec<String>,
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A parsed label selector: every requirement must hold. Empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

/// Why a selector string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid selector {input:?} at character {position}: {message}; write requirements like app=web,tier!=db,env in (prod,staging),release,!legacy"
)]
pub struct SelectorParseError {
    pub input: String,
    /// 1-based character position of the problem.
    pub position: usize,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    Eq,
    NotEq,
    Not,
    Open,
    Close,
}

fn lex(input: &str) -> Result<Vec<(usize, Token)>, SelectorParseError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let start = i + 1;
        let next = chars.get(i + 1).copied();
        let token = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            ',' => Token::Comma,
            '(' => Token::Open,
            ')' => Token::Close,
            '=' if next == Some('=') => {
                i += 1;
                Token::Eq
            }
            '=' => Token::Eq,
            '!' if next == Some('=') => {
                i += 1;
                Token::NotEq
            }
            '!' => Token::Not,
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.get(i) {
                    if c.is_whitespace() || ",()=!".contains(c) {
                        break;
                    }
                    word.push(c);
                    i += 1;
                }
                out.push((start, Token::Ident(word)));
                continue;
            }
        };
        out.push((start, token));
        i += 1;
    }
    Ok(out)
}

impl Selector {
    /// A selector that matches everything.
    pub fn everything() -> Self {
        Selector::default()
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses kubectl's selector syntax. An empty or blank string matches everything.
    pub fn parse(input: &str) -> Result<Selector, SelectorParseError> {
        let tokens = lex(input)?;
        let end = input.chars().count() + 1;
        let err = |position: usize, message: String| SelectorParseError {
            input: input.to_string(),
            position,
            message,
        };
        let mut it = tokens.into_iter().peekable();
        let mut requirements = Vec::new();
        if it.peek().is_none() {
            return Ok(Selector { requirements });
        }
        loop {
            let negated = matches!(it.peek(), Some((_, Token::Not)));
            if negated {
                it.next();
            }
            let (key_pos, key) = match it.next() {
                Some((p, Token::Ident(k))) => (p, k),
                Some((p, t)) => return Err(err(p, format!("expected a label key, found {t:?}"))),
                None => return Err(err(end, "expected a label key".into())),
            };
            if !is_qualified_name(&key) {
                return Err(err(key_pos, format!("{key:?} is not a valid label key")));
            }
            let requirement = if negated {
                Requirement {
                    key,
                    operator: Operator::DoesNotExist,
                    values: Vec::new(),
                }
            } else {
                match it.peek().cloned() {
                    None | Some((_, Token::Comma)) => Requirement {
                        key,
                        operator: Operator::Exists,
                        values: Vec::new(),
                    },
                    Some((_, op @ (Token::Eq | Token::NotEq))) => {
                        it.next();
                        let value = match it.peek().cloned() {
                            Some((p, Token::Ident(v))) => {
                                it.next();
                                check_value(&v).map_err(|m| err(p, m))?;
                                v
                            }
                            None | Some((_, Token::Comma)) => String::new(),
                            Some((p, t)) => {
                                return Err(err(p, format!("expected a label value, found {t:?}")));
                            }
                        };
                        let operator = if op == Token::Eq {
                            Operator::Equals
                        } else {
                            Operator::NotEquals
                        };
                        Requirement {
                            key,
                            operator,
                            values: vec![value],
                        }
                    }
                    Some((p, Token::Ident(word))) if word == "in" || word == "notin" => {
                        it.next();
                        let values = parse_set(&mut it, end).map_err(|(p, m)| err(p, m))?;
                        if values.is_empty() {
                            return Err(err(p, format!("'{word}' needs at least one value")));
                        }
                        let operator = if word == "in" {
                            Operator::In
                        } else {
                            Operator::NotIn
                        };
                        Requirement {
                            key,
                            operator,
                            values,
                        }
                    }
                    Some((p, t)) => {
                        return Err(err(
                            p,
                            format!("expected =, ==, !=, in, notin or ',' after {key:?}, found {t:?}"),
                        ));
                    }
                }
            };
            requirements.push(requirement);
            match it.next() {
                None => break,
                Some((_, Token::Comma)) => {}
                Some((p, t)) => return Err(err(p, format!("expected ',' found {t:?}"))),
            }
        }
        Ok(Selector { requirements })
    }
}

fn check_value(v: &str) -> Result<(), String> {
    if is_label_value(v) {
        Ok(())
    } else {
        Err(format!("{v:?} is not a valid label value"))
    }
}

type Tokens = std::iter::Peekable<std::vec::IntoIter<(usize, Token)>>;

/// Parses `(a, b, c)` after `in`/`notin`.
fn parse_set(it: &mut Tokens, end: usize) -> Result<Vec<String>, (usize, String)> {
    match it.next() {
        Some((_, Token::Open)) => {}
        Some((p, t)) => return Err((p, format!("expected '(' found {t:?}"))),
        None => return Err((end, "expected '('".into())),
    }
    let mut values = Vec::new();
    loop {
        match it.next() {
            Some((_, Token::Close)) if values.is_empty() => return Ok(values),
            Some((p, Token::Ident(v))) => {
                check_value(&v).map_err(|m| (p, m))?;
                values.push(v);
            }
            Some((p, t)) => return Err((p, format!("expected a value, found {t:?}"))),
            None => return Err((end, "expected a value and ')'".into())),
        }
        match it.next() {
            Some((_, Token::Comma)) => {}
            Some((_, Token::Close)) => return Ok(values),
            Some((p, t)) => return Err((p, format!("expected ',' or ')', found {t:?}"))),
            None => return Err((end, "missing ')'".into())),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        let mut sorted: Vec<&str> = self.values.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let set = sorted.join(",");
        match self.operator {
            Operator::Equals => write!(f, "{}={first}", self.key),
            Operator::NotEquals => write!(f, "{}!={first}", self.key),
            Operator::In => write!(f, "{} in ({set})", self.key),
            Operator::NotIn => write!(f, "{} notin ({set})", self.key),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_form() {
        let s = Selector::parse("a=b,c==d,e!=f,g in (x,y),h notin (z),i,!j").unwrap();
        let ops: Vec<_> = s.requirements.iter().map(|r| r.operator).collect();
        use Operator::*;
        assert_eq!(ops, [Equals, Equals, NotEquals, In, NotIn, Exists, DoesNotExist]);
        assert_eq!(s.requirements[3].values, ["x", "y"]);
        assert_eq!(s.to_string(), "a=b,c=d,e!=f,g in (x,y),h notin (z),i,!j");
        let spaced = Selector::parse("  app = web , tier in ( a , b ) ,  ! legacy ").unwrap();
        assert_eq!(spaced.to_string(), "app=web,tier in (a,b),!legacy");
        assert!(Selector::parse("").unwrap().is_empty());
        assert!(Selector::parse("   ").unwrap().is_empty());
        let empty_value = Selector::parse("a=,b").unwrap();
        assert_eq!(empty_value.requirements[0].values, [""]);
        assert!(Selector::parse("app.kubernetes.io/name=web").is_ok());
    }

    #[test]
    fn matching() {
        let s = Selector::parse("a=b,e!=f,g in (x,y),h notin (z),i,!j").unwrap();
        let mut l = labels(&[("a", "b"), ("g", "x"), ("i", "")]);
        assert!(s.matches(&l));
        l.insert("j".into(), "1".into());
        assert!(!s.matches(&l));
        l.remove("j");
        l.insert("e".into(), "f".into());
        assert!(!s.matches(&l));
        l.insert("e".into(), "g".into());
        l.insert("h".into(), "z".into());
        assert!(!s.matches(&l));
        assert!(Selector::everything().matches(&labels(&[])));
    }

    #[test]
    fn errors_say_where_and_how() {
        for (bad, pos) in [
            ("a=b,", 5),
            ("a in x", 6),
            ("a in (x", 8),
            ("a in ()", 3),
            ("=b", 1),
            ("a b", 3),
            ("a=b c", 5),
            ("bad key=1", 5),
            ("a=b=c", 4),
            ("a=@@", 3),
            ("-a", 1),
            ("!", 2),
            ("a notin (x,)", 12),
        ] {
            let e = Selector::parse(bad).unwrap_err();
            assert_eq!(e.position, pos, "{bad}: {e}");
            assert!(e.to_string().contains("app=web"), "{e}");
        }
    }
}
