//! `Quantity`: Kubernetes' exact fixed-point amounts (`500m`, `128Mi`, `1e3`),
//! parsed without floats, compared by value and serialized in canonical form.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANO: i128 = 1_000_000_000;
const ACCEPTED: &str = "write a number with an optional suffix: 500m, 0.5, 2, 128Mi, 1Gi, 1.5Gi, 2k, 100M, 1e3 (binary Ki Mi Gi Ti Pi Ei; decimal n u m k M G T P E)";

/// How a quantity was written, which decides its canonical form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Powers of 1024: `Ki`, `Mi`, `Gi`…
    BinarySI,
    /// Powers of 1000: `m`, `k`, `M`… or no suffix.
    DecimalSI,
    /// `e<n>` exponents: `1e3`.
    DecimalExponent,
}

/// An exact amount with a unit suffix, stored in nano-units.
#[derive(Clone, Debug)]
pub struct Quantity {
    nanos: i128,
    format: Format,
    original: String,
}

/// Why a quantity string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {input:?}: {reason}; {ACCEPTED}")]
pub struct QuantityError {
    pub input: String,
    pub reason: String,
}

fn pow10(e: u32) -> Option<i128> {
    10i128.checked_pow(e)
}

impl Quantity {
    /// Parses a quantity string exactly. Values finer than a nano-unit round up.
    pub fn parse(input: &str) -> Result<Quantity, QuantityError> {
        let err = |reason: &str| QuantityError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        let (negative, rest) = match (s.strip_prefix('-'), s.strip_prefix('+')) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            (None, None) => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("it has no digits"));
        }
        if frac_part.contains('.') {
            return Err(err("it has more than one '.'"));
        }
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Err(err("it has too many digits"));
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| err("its digits do not parse"))?
        };
        let frac_digits = u32::try_from(frac_part.len()).map_err(|_| err("it has too many digits"))?;
        // value = mantissa * 10^-frac * (2^bin or 10^dec)
        let (format, binary_shift, dec_exp): (Format, u32, i32) = match suffix {
            "" => (Format::DecimalSI, 0, 0),
            "Ki" => (Format::BinarySI, 10, 0),
            "Mi" => (Format::BinarySI, 20, 0),
            "Gi" => (Format::BinarySI, 30, 0),
            "Ti" => (Format::BinarySI, 40, 0),
            "Pi" => (Format::BinarySI, 50, 0),
            "Ei" => (Format::BinarySI, 60, 0),
            "n" => (Format::DecimalSI, 0, -9),
            "u" => (Format::DecimalSI, 0, -6),
            "m" => (Format::DecimalSI, 0, -3),
            "k" => (Format::DecimalSI, 0, 3),
            "M" => (Format::DecimalSI, 0, 6),
            "G" => (Format::DecimalSI, 0, 9),
            "T" => (Format::DecimalSI, 0, 12),
            "P" => (Format::DecimalSI, 0, 15),
            "E" => (Format::DecimalSI, 0, 18),
            other if other.starts_with(['e', 'E']) => {
                let exp = other.get(1..).unwrap_or("");
                let exp: i32 = exp
                    .parse()
                    .map_err(|_| err(&format!("the exponent {exp:?} is not an integer")))?;
                if !(-40..=40).contains(&exp) {
                    return Err(err("the exponent is out of range (-40..40)"));
                }
                (Format::DecimalExponent, 0, exp)
            }
            other => return Err(err(&format!("unknown suffix {other:?}"))),
        };
        let too_large = || err("it is too large");
        // nanos = mantissa * 2^shift * 10^(9 + dec_exp - frac)
        let scaled = mantissa
            .checked_mul(1i128 << binary_shift)
            .ok_or_else(too_large)?;
        let frac = i32::try_from(frac_digits).map_err(|_| too_large())?;
        let exp10 = 9 + dec_exp - frac;
        let nanos = if exp10 >= 0 {
            let m = pow10(exp10.unsigned_abs()).ok_or_else(too_large)?;
            scaled.checked_mul(m).ok_or_else(too_large)?
        } else {
            match pow10(exp10.unsigned_abs()) {
                // Round up, as Kubernetes does.
                Some(d) => (scaled + d - 1) / d,
                None => i128::from(scaled != 0),
            }
        };
        if nanos > i128::from(i64::MAX) * NANO {
            return Err(too_large());
        }
        Ok(Quantity {
            nanos: if negative { -nanos } else { nanos },
            format,
            original: s.to_string(),
        })
    }

    /// A whole-unit decimal quantity, e.g. `4` CPUs or `110` pods.
    pub fn from_value(v: i64) -> Quantity {
        Quantity::from_nanos(i128::from(v) * NANO, Format::DecimalSI)
    }

    /// A milli-unit quantity, e.g. `250m` CPU.
    pub fn from_milli(v: i64) -> Quantity {
        Quantity::from_nanos(i128::from(v) * 1_000_000, Format::DecimalSI)
    }

    /// A byte count shown with binary suffixes, e.g. `8Gi` of memory.
    pub fn from_bytes(v: i64) -> Quantity {
        Quantity::from_nanos(i128::from(v) * NANO, Format::BinarySI)
    }

    fn from_nanos(nanos: i128, format: Format) -> Quantity {
        let mut q = Quantity {
            nanos,
            format,
            original: String::new(),
        };
        q.original = q.canonical();
        q
    }

    /// The exact value in nano-units.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The string as the user wrote it (trimmed).
    pub fn original(&self) -> &str {
        &self.original
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The value in thousandths, rounded up (CPU millicores). Saturates at `i64` bounds.
    pub fn milli_value(&self) -> i64 {
        saturate(ceil_div(self.nanos, 1_000_000))
    }

    /// The value in whole units, rounded up (bytes). Saturates at `i64` bounds.
    pub fn value(&self) -> i64 {
        saturate(ceil_div(self.nanos, NANO))
    }

    /// The canonical string: the largest suffix of the original format that
    /// keeps the value an integer (`0.5` → `500m`, `1.5Gi` → `1536Mi`).
    pub fn canonical(&self) -> String {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        if abs == 0 {
            return "0".into();
        }
        if self.format == Format::BinarySI && abs.is_multiple_of(1_000_000_000) {
            let units = abs / 1_000_000_000;
            const SUFFIXES: [(u32, &str); 6] = [
                (60, "Ei"),
                (50, "Pi"),
                (40, "Ti"),
                (30, "Gi"),
                (20, "Mi"),
                (10, "Ki"),
            ];
            for (shift, suffix) in SUFFIXES {
                let unit = 1u128 << shift;
                if units >= unit && units.is_multiple_of(unit) {
                    return format!("{sign}{}{suffix}", units / unit);
                }
            }
            if units < 1024 {
                return format!("{sign}{units}");
            }
        }
        // Decimal: the largest power of 1000 (from nano up) dividing the value.
        let mut exp: i32 = -9;
        let mut mantissa = abs;
        while exp < 18 && mantissa.is_multiple_of(1000) {
            mantissa /= 1000;
            exp += 3;
        }
        if self.format == Format::DecimalExponent {
            return match exp {
                0 => format!("{sign}{mantissa}"),
                e => format!("{sign}{mantissa}e{e}"),
            };
        }
        let suffix = match exp {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        format!("{sign}{mantissa}{suffix}")
    }
}

fn ceil_div(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d > 0 { q + 1 } else { q }
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.nanos.hash(state);
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.canonical())
    }
}

struct QuantityVisitor;

impl Visitor<'_> for QuantityVisitor {
    type Value = Quantity;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a quantity such as 500m, 128Mi or 2")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
        Quantity::parse(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
        Quantity::parse(&v.to_string()).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
        Quantity::parse(&v.to_string()).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
        if !v.is_finite() {
            return Err(E::custom(format!("invalid quantity {v}; {ACCEPTED}")));
        }
        // Display prints the shortest exact decimal that round-trips, never exponents.
        Quantity::parse(&v.to_string()).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(QuantityVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(q("500m").milli_value(), 500);
        assert_eq!(q("0.5").milli_value(), 500);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("2").milli_value(), 2000);
        assert_eq!(q("128Mi").value(), 128 * 1024 * 1024);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("1.5Gi").value(), 3 << 29);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E3").value(), 1000);
        assert_eq!(q("2k").value(), 2000);
        assert_eq!(q("100M").value(), 100_000_000);
        assert_eq!(q("1E").value(), 1_000_000_000_000_000_000);
        assert_eq!(q("1Ki").value(), 1024);
        assert_eq!(q("250u").nanos(), 250_000);
        assert_eq!(q("7n").nanos(), 7);
        assert_eq!(q("+3").value(), 3);
        assert_eq!(q("1e-3").milli_value(), 1);
        assert_eq!(q(" 1Gi ").original(), "1Gi");
        assert!(q("-1").is_negative());
    }

    #[test]
    fn rounds_up() {
        assert_eq!(q("1.1").value(), 2);
        assert_eq!(q("0.1m").milli_value(), 1);
        assert_eq!(q("0.5n").nanos(), 1);
        assert_eq!(q("1.0001m").milli_value(), 2);
    }

    #[test]
    fn canonical_forms() {
        for (input, canon) in [
            ("0.5", "500m"),
            ("500m", "500m"),
            ("1.5Gi", "1536Mi"),
            ("1024Mi", "1Gi"),
            ("0.5Ki", "512"),
            ("1000", "1k"),
            ("1500m", "1500m"),
            ("1e3", "1e3"),
            ("1000e-3", "1"),
            ("2k", "2k"),
            ("100M", "100M"),
            ("1E", "1E"),
            ("0", "0"),
            ("0Mi", "0"),
            ("-500m", "-500m"),
        ] {
            assert_eq!(q(input).to_string(), canon, "{input}");
        }
        assert_eq!(Quantity::from_bytes(8 << 30).to_string(), "8Gi");
        assert_eq!(Quantity::from_milli(250).to_string(), "250m");
        assert_eq!(Quantity::from_value(4).to_string(), "4");
    }

    #[test]
    fn compares_by_value() {
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("0.5"), q("500m"));
        assert_eq!(q("1k"), q("1e3"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("100m") < q("1"));
        assert!(q("-1") < q("0"));
        let mut v = vec![q("2"), q("1Mi"), q("10m")];
        v.sort();
        assert_eq!(v, vec![q("10m"), q("2"), q("1Mi")]);
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "",
            "abc",
            "1.2.3",
            "1Gb",
            "1 Gi",
            "1e",
            "1ee3",
            "1KiB",
            "Mi",
            "1e99",
            "--1",
            "0x10",
            "99999999999999999999999999999999Ei",
        ] {
            let e = Quantity::parse(bad).unwrap_err();
            assert!(e.to_string().contains("128Mi"), "{bad}: {e}");
        }
    }

    #[test]
    fn serde_accepts_strings_and_numbers() {
        let v: Vec<Quantity> = serde_json::from_str(r#"["500m", 2, 0.5, 1.5, "1Gi"]"#).unwrap();
        assert_eq!(v[1].value(), 2);
        assert_eq!(v[2].milli_value(), 500);
        assert_eq!(v[3].milli_value(), 1500);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"["500m","2","500m","1500m","1Gi"]"#
        );
        let e = serde_json::from_str::<Quantity>(r#""12 cores""#).unwrap_err();
        assert!(e.to_string().contains("invalid quantity"));
        assert!(serde_json::from_str::<Quantity>("true").is_err());
    }
}
