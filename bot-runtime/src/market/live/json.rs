//! Exact decimals from JSON text (never through `f64`).

use rust_decimal::Decimal;
use serde_json::value::RawValue;

/// A price from its raw JSON text: a number (`67187.33`, `6.9e-6`) or a
/// string holding one (`"67187.33000000"`). `None` for anything else
/// (`null`, words, objects, values beyond `Decimal`'s 28 digits).
pub(crate) fn decimal_from_json(raw: &RawValue) -> Option<Decimal> {
    let text = raw.get().trim();
    let text = match text.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => text,
    };
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) {
        return None;
    }
    match exponent {
        Some(e) if digits(e.strip_prefix(['-', '+']).unwrap_or(e)) => {
            Decimal::from_scientific(text).ok()
        }
        Some(_) => None,
        None => Decimal::from_str_exact(text).ok(),
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn d(json: &str) -> Option<Decimal> {
        let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
        decimal_from_json(&raw)
    }

    #[test]
    fn numbers_and_numeric_strings_parse_exactly() {
        assert_eq!(d("67187.3358"), Some(dec!(67187.3358)));
        assert_eq!(d("\"67187.33000000\""), Some(dec!(67187.33000000)));
        // 0.1 + 0.2 style digits stay exact (no f64 on the way).
        assert_eq!(d("0.30000000000000004"), Some(dec!(0.30000000000000004)));
        assert_eq!(d("6.99e-6"), Some(dec!(0.00000699)));
        assert_eq!(d("-3"), Some(dec!(-3)));
        assert_eq!(d("0"), Some(dec!(0)));
    }

    #[test]
    fn non_numbers_are_none() {
        for j in [
            "null",
            "true",
            "\"abc\"",
            "\"\"",
            "{}",
            "[1]",
            "\"1.2.3\"",
            "\"NaN\"",
        ] {
            assert_eq!(d(j), None, "{j}");
        }
    }
}
