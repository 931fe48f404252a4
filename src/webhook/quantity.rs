//! Kubernetes resource quantities (`500m`, `1.5`, `512Mi`, `1e3`, `10G`), parsed exactly.
//!
//! The webhook compares and adds quantities (requests against a node type's allocatable, limits
//! against requests), so it needs their value, not only their text. Values are held as signed
//! nano-units in an `i128`: exact for every suffix Kubernetes accepts, from `1n` to `8Ei`.
//! Sub-nano fractions are rounded up, as Kubernetes does.

use std::{cmp::Ordering, fmt};

/// Why a quantity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Empty text.
    #[error("empty quantity")]
    Empty,
    /// Not of the form `<number><suffix>`.
    #[error("`{0}` is not a Kubernetes quantity (examples: 500m, 1.5, 512Mi, 2Gi, 1e3)")]
    Syntax(String),
    /// Too large to hold.
    #[error("`{0}` is too large")]
    Overflow(String),
}

const NANO: i128 = 1_000_000_000;

/// A parsed quantity: the text as written and its exact value in nano-units.
#[derive(Debug, Clone)]
pub struct Quantity {
    text: String,
    nanos: i128,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}
impl Eq for Quantity {}
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

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Quantity {
    /// Parses Kubernetes quantity syntax: an optional sign, a decimal number and an optional
    /// suffix (`n u m k M G T P E`, `Ki Mi Gi Ti Pi Ei`, or an exponent `e3` / `E-2`).
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(QuantityError::Empty);
        }
        let syntax = || QuantityError::Syntax(text.to_owned());
        let overflow = || QuantityError::Overflow(text.to_owned());
        let (negative, body) = match t.as_bytes()[0] {
            b'-' => (true, &t[1..]),
            b'+' => (false, &t[1..]),
            _ => (false, t),
        };
        let num_end = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, suffix) = body.split_at(num_end);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(syntax());
        }
        // The digits of both parts as one integer, leading zeros skipped; at most 30
        // significant digits (an i128 holds 38). Both parts are ASCII digits only (`num_end`).
        let mut mantissa: i128 = 0;
        let mut significant = 0usize;
        for d in int_part.bytes().chain(frac_part.bytes()) {
            if significant == 0 && d == b'0' {
                continue;
            }
            significant += 1;
            if significant > 30 {
                return Err(overflow());
            }
            mantissa = mantissa * 10 + i128::from(d - b'0');
        }
        let frac_digits = i32::try_from(frac_part.len()).map_err(|_| overflow())?;
        // value = mantissa * 10^-frac_digits * scale, scale = 2^bin * 10^dec
        let (bin, dec): (u32, i32) = match suffix {
            "" => (0, 0),
            "n" => (0, -9),
            "u" => (0, -6),
            "m" => (0, -3),
            "k" => (0, 3),
            "M" => (0, 6),
            "G" => (0, 9),
            "T" => (0, 12),
            "P" => (0, 15),
            "E" => (0, 18),
            "Ki" => (10, 0),
            "Mi" => (20, 0),
            "Gi" => (30, 0),
            "Ti" => (40, 0),
            "Pi" => (50, 0),
            "Ei" => (60, 0),
            s if s.starts_with(['e', 'E']) => {
                let exp: i32 = s[1..].parse().map_err(|_| syntax())?;
                if !(-40..=40).contains(&exp) {
                    return Err(overflow());
                }
                (0, exp)
            }
            _ => return Err(syntax()),
        };
        let mut value = mantissa.checked_mul(1i128 << bin).ok_or_else(overflow)?;
        let pow10 = dec + 9 - frac_digits;
        if pow10 >= 0 {
            let factor = 10i128
                .checked_pow(pow10.unsigned_abs())
                .ok_or_else(overflow)?;
            value = value.checked_mul(factor).ok_or_else(overflow)?;
        } else {
            let div = 10i128
                .checked_pow(pow10.unsigned_abs())
                .unwrap_or(i128::MAX);
            // Round up like Kubernetes (a request of 0.1n is 1n, not 0).
            value = value / div + i128::from(value % div != 0);
        }
        Ok(Self {
            text: t.to_owned(),
            nanos: if negative { -value } else { value },
        })
    }

    /// Builds a quantity from nano-units, with a canonical text.
    pub fn from_nanos(nanos: i128) -> Self {
        Self {
            text: canonical(nanos),
            nanos,
        }
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Exact value in nano-units (1 = 10⁻⁹).
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// True when below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// Sum of two quantities (saturating).
    #[must_use]
    pub fn saturating_add(&self, other: &Self) -> Self {
        Self::from_nanos(self.nanos.saturating_add(other.nanos))
    }

    /// A short human form for messages: CPU in cores or millicores, byte amounts in the
    /// largest exact binary (or decimal) unit.
    pub fn human(&self, resource: &str) -> String {
        if resource == "cpu" && self.nanos % 1_000_000 == 0 {
            let milli = self.nanos / 1_000_000;
            let (whole, frac) = (milli / 1000, (milli % 1000).abs());
            return if frac == 0 {
                format!("{whole} CPU")
            } else {
                let frac = format!("{frac:03}");
                format!("{whole}.{} CPU", frac.trim_end_matches('0'))
            };
        }
        canonical(self.nanos)
    }
}

/// Canonical text of a nano-unit value: the largest suffix that represents it exactly,
/// preferring binary suffixes for large whole numbers (as byte amounts usually are).
fn canonical(nanos: i128) -> String {
    if nanos == 0 {
        return "0".to_owned();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let nano = NANO.unsigned_abs();
    if n.is_multiple_of(nano) {
        let whole = n / nano;
        if whole >= 1000 {
            // The shortest exact spelling; binary wins ties (byte amounts usually are).
            let mut best = whole.to_string();
            let candidates = [
                ("Ei", 1u128 << 60),
                ("Pi", 1 << 50),
                ("Ti", 1 << 40),
                ("Gi", 1 << 30),
                ("Mi", 1 << 20),
                ("Ki", 1 << 10),
            ]
            .into_iter()
            .chain([
                ("E", 10u128.pow(18)),
                ("P", 10u128.pow(15)),
                ("T", 10u128.pow(12)),
                ("G", 10u128.pow(9)),
                ("M", 10u128.pow(6)),
                ("k", 1000),
            ]);
            for (suffix, unit) in candidates {
                if whole.is_multiple_of(unit) {
                    let text = format!("{}{suffix}", whole / unit);
                    if text.len() < best.len() {
                        best = text;
                    }
                }
            }
            return format!("{sign}{best}");
        }
        return format!("{sign}{whole}");
    }
    for (suffix, unit) in [("m", 1_000_000u128), ("u", 1_000), ("n", 1)] {
        if n.is_multiple_of(unit) {
            return format!("{sign}{}{suffix}", n / unit);
        }
    }
    format!("{sign}{n}n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn parses_kubernetes_forms() {
        assert_eq!(q("1").nanos(), NANO);
        assert_eq!(q("500m"), q("0.5"));
        assert_eq!(q("1000m"), q("1"));
        assert_eq!(q("1.5"), q("1500m"));
        assert_eq!(q("512Mi").nanos(), 512 * 1024 * 1024 * NANO);
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("1G"), q("1000M"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("1E-3"), q("1m"));
        assert_eq!(q(".5"), q("500m"));
        assert_eq!(q("5."), q("5"));
        assert_eq!(q("+2"), q("2"));
        assert!(q("-1").is_negative());
        assert_eq!(q("0.1n").nanos(), 1, "rounds up");
        assert_eq!(q("8Ei").nanos(), 8 * (1i128 << 60) * NANO);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", " ", "abc", "1x", "1.2.3", ".", "1 Gi", "Mi", "1e", "1e999", "--1", "1ki", "1mi",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should fail");
        }
        assert!(matches!(
            Quantity::parse("99999999999999999999999999999999999Ei"),
            Err(QuantityError::Overflow(_))
        ));
    }

    #[test]
    fn thirty_significant_digits_leading_zeros_not_counted() {
        let zeros = "0".repeat(40);
        assert_eq!(q(&format!("{zeros}1")), q("1"));
        assert_eq!(q("0000.001k"), q("1"));
        assert_eq!(
            q(&format!("{}n", "9".repeat(30))).nanos(),
            10i128.pow(30) - 1
        );
        assert!(matches!(
            Quantity::parse(&format!("{}n", "1".repeat(31))),
            Err(QuantityError::Overflow(_))
        ));
        assert!(matches!(
            Quantity::parse(&format!("{}.{}", "1".repeat(20), "1".repeat(11))),
            Err(QuantityError::Overflow(_))
        ));
        assert_eq!(q("0"), q("000.000"));
    }

    #[test]
    fn canonical_text() {
        assert_eq!(Quantity::from_nanos(q("1.5").nanos()).as_str(), "1500m");
        assert_eq!(Quantity::from_nanos(q("2").nanos()).as_str(), "2");
        assert_eq!(Quantity::from_nanos(q("3Gi").nanos()).as_str(), "3Gi");
        assert_eq!(Quantity::from_nanos(q("1536Mi").nanos()).as_str(), "1536Mi");
        assert_eq!(Quantity::from_nanos(q("2G").nanos()).as_str(), "2G");
        assert_eq!(q("500m").saturating_add(&q("1")).as_str(), "1500m");
        assert_eq!(q("1.5").human("cpu"), "1.5 CPU");
        assert_eq!(q("250m").human("cpu"), "0.25 CPU");
        assert_eq!(q("4").human("cpu"), "4 CPU");
        assert_eq!(q("13Gi").human("memory"), "13Gi");
    }
}
