//! Value types used in the specs: exact decimals and Kubernetes-style durations,
//! both written as strings in YAML so that the API server and the runtime read
//! the same text the same way.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

use rust_decimal::Decimal;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Regular expression a decimal string must match (also emitted as the
/// OpenAPI `pattern`): an optional minus sign, digits, an optional fraction.
/// No exponent, no thousands separators.
pub const DECIMAL_PATTERN: &str = r"^-?[0-9]+(\.[0-9]+)?$";

/// Longest decimal string accepted, in characters (also the OpenAPI
/// `maxLength`, which bounds the cost of the CEL rules that read the value).
pub const DECIMAL_MAX_LENGTH: usize = 40;

/// Regular expression a duration string must match (also emitted as the
/// OpenAPI `pattern`): one or more number-unit pairs such as `1h30m`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h|d))+$";

/// Longest duration string accepted, in characters (also the OpenAPI `maxLength`).
pub const DURATION_MAX_LENGTH: usize = 64;

/// An exact decimal written as a YAML/JSON string, e.g. `"10000"` or `"2.5"`.
///
/// Money (USD or the account's base currency), prices, quantities and
/// percentages in the specs use this type so that no value passes through a
/// binary float. Bare YAML numbers are refused with a message asking for
/// quotes, exactly as the API server refuses them (the schema says
/// `type: string`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DecimalString(pub Decimal);

impl DecimalString {
    /// The exact value.
    pub fn get(self) -> Decimal {
        self.0
    }
}

impl From<Decimal> for DecimalString {
    fn from(d: Decimal) -> Self {
        Self(d)
    }
}

impl FromStr for DecimalString {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.chars().count() > DECIMAL_MAX_LENGTH {
            return Err(format!(
                "invalid decimal {s:?}: longer than {DECIMAL_MAX_LENGTH} characters"
            ));
        }
        let valid = {
            let body = t.strip_prefix('-').unwrap_or(t);
            let mut parts = body.splitn(2, '.');
            let int = parts.next().unwrap_or("");
            let frac = parts.next();
            !int.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        };
        if !valid {
            return Err(format!(
                "invalid decimal {s:?}: expected a plain decimal string such as \"10000\" or \"2.5\""
            ));
        }
        Decimal::from_str_exact(t)
            .map(Self)
            .map_err(|e| format!("invalid decimal {s:?}: {e}"))
    }
}

impl fmt::Display for DecimalString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.normalize().fmt(f)
    }
}

impl Serialize for DecimalString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DecimalString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = DecimalString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal string such as \"10000\" or \"2.5\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "expected a decimal string, found the number {v}: quote it (\"{v}\") so it is read exactly"
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "expected a decimal string, found the number {v}: quote it (\"{v}\") so it is read exactly"
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "expected a decimal string, found the number {v}: quote it (\"{v}\") so it is read exactly"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for DecimalString {
    fn schema_name() -> Cow<'static, str> {
        "DecimalString".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DECIMAL_PATTERN,
            "maxLength": DECIMAL_MAX_LENGTH,
        })
    }
}

/// A duration in Kubernetes/Go style: `"500ms"`, `"15s"`, `"1h30m"`, `"24h"`.
///
/// Parsed with the `humantime` grammar (which accepts Go's unit suffixes
/// `ns`, `us`, `ms`, `s`, `m`, `h` and also `d`). Serialized back in the same
/// style.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DurationString(pub Duration);

impl DurationString {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
    /// The duration in whole milliseconds (saturating).
    pub fn as_millis_i64(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl FromStr for DurationString {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().chars().count() > DURATION_MAX_LENGTH {
            return Err(format!(
                "invalid duration {s:?}: longer than {DURATION_MAX_LENGTH} characters"
            ));
        }
        humantime::parse_duration(s.trim())
            .map(Self)
            .map_err(|e| format!("invalid duration {s:?} ({e}): expected a duration such as \"500ms\", \"15s\", \"1h30m\" or \"24h\""))
    }
}

/// Go/Kubernetes style: hours, minutes, seconds, milliseconds, microseconds,
/// nanoseconds, zero parts left out (`36h`, `1h30m`, `250ms`; `0s` for zero).
/// Hours are never folded into days or years, so every value matches the
/// schema pattern and parses back to itself.
impl fmt::Display for DurationString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if total == 0 && nanos == 0 {
            return f.write_str("0s");
        }
        let parts = [
            (total / 3600, "h"),
            (total / 60 % 60, "m"),
            (total % 60, "s"),
            (u64::from(nanos / 1_000_000), "ms"),
            (u64::from(nanos / 1_000 % 1_000), "us"),
            (u64::from(nanos % 1_000), "ns"),
        ];
        for (v, unit) in parts {
            if v > 0 {
                write!(f, "{v}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for DurationString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for DurationString {
    fn schema_name() -> Cow<'static, str> {
        "DurationString".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": DURATION_MAX_LENGTH,
        })
    }
}

/// Regular expression a [`GoDuration`] must match (also the OpenAPI
/// `pattern`): number-unit pairs in Go's units only (`h`, `m`, `s`, `ms`,
/// `us`, `ns`), the units CEL's `duration()` reads.
pub const GO_DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$";

/// A [`DurationString`] written in Go's `time.ParseDuration` units only
/// (`"10s"`, `"1m30s"`, `"250ms"`, `"2h"`; no `d`, no `µs`), so that the CRD's
/// CEL rules can compare it with `duration()` (used by the live market data
/// settings, whose poll interval, candle interval and maximum age are
/// compared with each other).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub DurationString);

impl GoDuration {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0.get()
    }
    /// The duration in whole milliseconds (saturating).
    pub fn as_millis_i64(self) -> i64 {
        self.0.as_millis_i64()
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        Self(DurationString(d))
    }
}

impl FromStr for GoDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        // The pattern, without a regex engine: digits with an optional
        // fraction, then a unit, repeated.
        let mut rest = t;
        let mut valid = !rest.is_empty();
        while valid && !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let number = &rest[..digits];
            let (int, frac) = number.split_once('.').unwrap_or((number, "0"));
            valid = !int.is_empty()
                && !frac.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit());
            rest = &rest[digits..];
            let unit = ["ns", "us", "ms", "s", "m", "h"]
                .into_iter()
                .find(|u| rest.starts_with(u) && !(*u == "m" && rest.starts_with("ms")));
            match unit {
                Some(u) if valid => rest = &rest[u.len()..],
                _ => valid = false,
            }
        }
        if !valid {
            return Err(format!(
                "invalid duration {s:?}: expected number-unit pairs in the units h, m, s, ms, us \
                 or ns, such as \"10s\", \"1m30s\" or \"2h\" (no days: write \"24h\")"
            ));
        }
        t.parse().map(Self)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // DurationString writes h, m, s, ms, us and ns only.
        self.0.fmt(f)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": GO_DURATION_PATTERN,
            "maxLength": DURATION_MAX_LENGTH,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_parse_exactly() {
        let d: DecimalString = serde_yaml::from_str("\"0.1\"").unwrap();
        assert_eq!(d.get(), Decimal::new(1, 1));
        let d: DecimalString = serde_yaml::from_str("\"-12.500\"").unwrap();
        assert_eq!(d.to_string(), "-12.5");
    }

    #[test]
    fn decimal_rejects_numbers_and_garbage() {
        let e = serde_yaml::from_str::<DecimalString>("10000").unwrap_err();
        assert!(e.to_string().contains("quote it"), "{e}");
        let e = serde_yaml::from_str::<DecimalString>("\"1e5\"").unwrap_err();
        assert!(e.to_string().contains("plain decimal"), "{e}");
        let e = serde_yaml::from_str::<DecimalString>("\"abc\"").unwrap_err();
        assert!(e.to_string().contains("\"abc\""), "{e}");
    }

    #[test]
    fn durations_roundtrip() {
        let d: DurationString = "1h30m".parse().unwrap();
        assert_eq!(d.get(), Duration::from_secs(5400));
        assert_eq!(d.to_string(), "1h30m");
        let d: DurationString = "250ms".parse().unwrap();
        assert_eq!(d.as_millis_i64(), 250);
        assert!("soon".parse::<DurationString>().is_err());
        // Long durations stay in hours so they match the schema pattern and round-trip.
        for text in ["720h", "8760h30m", "36h", "1h0m1s250ms", "0s", "1500us"] {
            let d: DurationString = text.parse().unwrap();
            let shown = d.to_string();
            assert_eq!(
                shown.parse::<DurationString>().unwrap(),
                d,
                "{text} -> {shown}"
            );
            assert!(
                !shown.contains("year") && !shown.contains("month") && !shown.contains('d'),
                "{shown}"
            );
        }
        assert_eq!(
            "90d".parse::<DurationString>().unwrap().to_string(),
            "2160h"
        );
    }

    #[test]
    fn overlong_values_are_refused_like_the_schema_max_length() {
        let long = format!("1{}", "0".repeat(DECIMAL_MAX_LENGTH));
        let e = long.parse::<DecimalString>().unwrap_err();
        assert!(e.contains("longer than 40 characters"), "{e}");
        let fits = format!("0.{}", "1".repeat(DECIMAL_MAX_LENGTH - 12));
        assert!(fits.parse::<DecimalString>().is_ok());
        let e = "1s"
            .repeat(DURATION_MAX_LENGTH)
            .parse::<DurationString>()
            .unwrap_err();
        assert!(e.contains("longer than 64 characters"), "{e}");
    }

    #[test]
    fn go_durations_take_go_units_only() {
        let d: GoDuration = serde_yaml::from_str("1m30s").unwrap();
        assert_eq!(d.get(), Duration::from_secs(90));
        assert_eq!(d.to_string(), "1m30s");
        for ok in ["10s", "250ms", "2h", "1h0m1s", "0.5s", "100us", "5ns"] {
            assert!(ok.parse::<GoDuration>().is_ok(), "{ok}");
        }
        for bad in ["1d", "10µs", "", "s", "10", "1.s", "10 s", "-1s", "1x"] {
            let e = bad.parse::<GoDuration>().unwrap_err();
            assert!(e.contains("units h, m, s, ms, us or ns"), "{bad}: {e}");
        }
        let e = format!("1{}", "0".repeat(DURATION_MAX_LENGTH)) + "s";
        assert!(e.parse::<GoDuration>().is_err());
    }
}
