//! `IntOrString`: a field that is a number or a string (`maxSurge: 1` or
//! `"25%"`, `targetPort: 8080` or `"http"`), with percentage scaling.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An integer or a string, serialized as whichever it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IntOrString {
    Int(i32),
    String(String),
}

impl IntOrString {
    /// The percentage if this is a string like `"25%"`.
    pub fn percent(&self) -> Option<Result<i32, String>> {
        match self {
            IntOrString::Int(_) => None,
            IntOrString::String(s) => Some(parse_percent(s)),
        }
    }

    /// The absolute value: the integer itself, or `total * percent / 100`,
    /// rounded up or down. Errors on a string that is not a percentage.
    pub fn scaled_value(&self, total: i32, round_up: bool) -> Result<i32, String> {
        match self {
            IntOrString::Int(i) => Ok(*i),
            IntOrString::String(s) => {
                let pct = i64::from(parse_percent(s)?);
                let product = i64::from(total) * pct;
                let v = if round_up {
                    (product + 99).div_euclid(100)
                } else {
                    product.div_euclid(100)
                };
                i32::try_from(v).map_err(|_| format!("{s} of {total} is out of range"))
            }
        }
    }
}

fn parse_percent(s: &str) -> Result<i32, String> {
    s.strip_suffix('%')
        .and_then(|n| n.parse::<i32>().ok())
        .ok_or_else(|| format!("{s:?} is not a percentage; write an integer or a percentage like \"25%\""))
}

impl Default for IntOrString {
    fn default() -> Self {
        IntOrString::Int(0)
    }
}

impl From<i32> for IntOrString {
    fn from(i: i32) -> Self {
        IntOrString::Int(i)
    }
}

impl From<&str> for IntOrString {
    fn from(s: &str) -> Self {
        IntOrString::String(s.to_string())
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(i) => s.serialize_i32(*i),
            IntOrString::String(v) => s.serialize_str(v),
        }
    }
}

struct IntOrStringVisitor;

impl Visitor<'_> for IntOrStringVisitor {
    type Value = IntOrString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer or a string such as \"25%\" or \"http\"")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
        i32::try_from(v)
            .map(IntOrString::Int)
            .map_err(|_| E::custom(format!("{v} is out of range for a 32-bit integer")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
        i32::try_from(v)
            .map(IntOrString::Int)
            .map_err(|_| E::custom(format!("{v} is out of range for a 32-bit integer")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
        Ok(IntOrString::String(v.to_string()))
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IntOrStringVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_percentages() {
        let p = IntOrString::from("25%");
        assert_eq!(p.scaled_value(10, true), Ok(3));
        assert_eq!(p.scaled_value(10, false), Ok(2));
        assert_eq!(p.scaled_value(4, true), Ok(1));
        assert_eq!(p.scaled_value(0, true), Ok(0));
        assert_eq!(IntOrString::from("100%").scaled_value(7, false), Ok(7));
        assert_eq!(IntOrString::Int(2).scaled_value(10, true), Ok(2));
        assert!(IntOrString::from("http").scaled_value(10, true).is_err());
        assert!(IntOrString::from("x%").scaled_value(10, true).is_err());
        assert_eq!(IntOrString::from("25%").percent(), Some(Ok(25)));
        assert_eq!(IntOrString::Int(1).percent(), None);
    }

    #[test]
    fn serde_keeps_the_shape() {
        let v: Vec<IntOrString> = serde_json::from_str(r#"[1, "25%", "http", "8080"]"#).unwrap();
        assert_eq!(v[0], IntOrString::Int(1));
        assert_eq!(v[3], IntOrString::String("8080".into()));
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"[1,"25%","http","8080"]"#);
        assert!(serde_json::from_str::<IntOrString>("1.5").is_err());
        assert!(serde_json::from_str::<IntOrString>("99999999999").is_err());
    }
}
