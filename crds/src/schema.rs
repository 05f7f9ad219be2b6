//! Schema details of the CRDs that the derives do not produce on their own:
//! size limits, the transform that keeps `nullable` out of the schema, and
//! builders for the CEL rules (`x-kubernetes-validations`) shared by many
//! fields.
//!
//! The API server estimates the cost of every CEL rule from the largest value
//! the schema allows and refuses a CRD whose rules could cost too much, so
//! every string and list a rule reads carries a `maxLength` / `maxItems`
//! (the limits below; the decimal and duration limits live in
//! [`crate::values`]).
//!
//! Decimal strings are compared in CEL as `double(self)`: exact for the
//! `> 0` and `>= 0` checks, and for range ends exact up to about 15
//! significant digits, which is as far as a double goes. `validate()` compares
//! the exact decimals.

use kube::core::{Reason, Rule};
use rust_decimal::Decimal;
use schemars::Schema;
use serde_json::{Map, Value};

use crate::validation::limits;

/// Most symbols a session trades (`spec.symbols` `maxItems`), and most entries in
/// each of a strategy's token allow and block lists.
pub const MAX_SYMBOLS: usize = 50;
/// Longest symbol, in characters (e.g. `BTC-USD`).
pub const MAX_SYMBOL_LENGTH: usize = 64;
/// Longest object name, in characters (a DNS subdomain name: 253).
pub const MAX_NAME_LENGTH: usize = 253;
/// Longest currency code, in characters (ISO 4217 codes have 3; stablecoins 4).
pub const MAX_CURRENCY_LENGTH: usize = 16;
/// Most candle files one replay session reads.
pub const MAX_REPLAY_FILES: usize = 50;
/// Longest candle file path, in characters.
pub const MAX_PATH_LENGTH: usize = 4096;

/// Schema transform: an optional field is either present with a value or
/// absent, never `null`.
///
/// schemars marks every `Option` as nullable (`type: [T, "null"]`, later
/// `nullable: true`). The Rust types never write `null` (every `Option`
/// serializes as absent), and with `nullable` left out the API server prunes a
/// `null` a user writes instead of storing it, so CEL rules guarded by `has()`
/// never see one. Applied to the top-level spec and status types; it walks the
/// whole subtree, including embedded Kubernetes types.
pub fn absent_not_null(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        strip_null(object);
    }
}

fn strip_null(object: &mut Map<String, Value>) {
    object.remove("nullable");
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            object.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(values)) = object.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    if let Some(Value::Array(branches)) = object.get_mut("anyOf") {
        branches.retain(|b| !is_null_schema(b));
        if branches.len() == 1
            && let Some(Value::Object(only)) = branches.pop()
        {
            object.remove("anyOf");
            for (key, value) in only {
                object.entry(key).or_insert(value);
            }
        }
    }
    for key in ["properties", "patternProperties"] {
        if let Some(Value::Object(children)) = object.get_mut(key) {
            children.values_mut().for_each(strip_value);
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = object.get_mut(key) {
            strip_value(child);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(children)) = object.get_mut(key) {
            children.iter_mut().for_each(strip_value);
        }
    }
}

fn strip_value(value: &mut Value) {
    if let Value::Object(object) = value {
        strip_null(object);
    }
}

fn is_null_schema(value: &Value) -> bool {
    value.get("type") == Some(&Value::from("null"))
        || value.get("const") == Some(&Value::Null)
        || value.get("enum") == Some(&Value::Array(vec![Value::Null]))
}

/// A decimal string in `0..=100` (percent).
pub(crate) fn percent(field: &str) -> Rule {
    Rule::new("double(self) >= 0.0 && double(self) <= 100.0")
        .message(format!("{field} must be a percent from 0 to 100, e.g. \"2.5\"").as_str())
}

/// A decimal string in `(0, 100]` (percent).
pub(crate) fn positive_percent(field: &str) -> Rule {
    Rule::new("double(self) > 0.0 && double(self) <= 100.0").message(
        format!("{field} must be a percent greater than 0 and at most 100, e.g. \"2.5\"").as_str(),
    )
}

/// A decimal string in `0..=1` (fraction).
pub(crate) fn fraction(field: &str) -> Rule {
    Rule::new("double(self) >= 0.0 && double(self) <= 1.0")
        .message(format!("{field} must be a fraction from 0 to 1, e.g. \"0.5\"").as_str())
}

/// A decimal string in `(0, 1]` (fraction).
pub(crate) fn positive_fraction(field: &str) -> Rule {
    Rule::new("double(self) > 0.0 && double(self) <= 1.0").message(
        format!("{field} must be a fraction greater than 0 and at most 1, e.g. \"0.1\"").as_str(),
    )
}

/// A decimal string `> 0`.
pub(crate) fn positive(field: &str) -> Rule {
    Rule::new("double(self) > 0.0").message(format!("{field} must be greater than 0").as_str())
}

/// A decimal string `>= 0`.
pub(crate) fn non_negative(field: &str) -> Rule {
    Rule::new("double(self) >= 0.0").message(format!("{field} must not be negative").as_str())
}

/// A decimal string of at most [`limits::MAX_MONEY`] with at most
/// [`limits::MONEY_DP`] decimal places as written (money, or a quantity with
/// the same limits).
pub(crate) fn money(field: &str) -> Rule {
    Rule::new(format!(
        "double(self) <= {}.0 && !self.matches('[.][0-9]{{{},}}$')",
        limits::MAX_MONEY,
        limits::MONEY_DP + 1
    ))
    .message(
        format!(
            "{field} must be at most {} with at most {} decimal places",
            limits::MAX_MONEY,
            limits::MONEY_DP
        )
        .as_str(),
    )
}

/// A decimal string `<= max` (`max` a whole number).
pub(crate) fn at_most(field: &str, max: Decimal) -> Rule {
    Rule::new(format!("double(self) <= {max}.0"))
        .message(format!("{field} must be at most {max}").as_str())
}

/// A decimal string in `[lo, hi]`.
pub(crate) fn between(field: &str, lo: Decimal, hi: Decimal) -> Rule {
    Rule::new(format!(
        "double(self) >= {} && double(self) <= {}",
        cel_double(lo),
        cel_double(hi)
    ))
    .message(format!("{field} must be from {lo} to {hi}").as_str())
}

/// `d` as a CEL double literal (always with a decimal point).
fn cel_double(d: Decimal) -> String {
    let text = d.normalize().to_string();
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

/// Autopilot bound `{min, max}`: `max <= limit` (`limit` a whole number).
pub(crate) fn bound_at_most(parameter: &str, limit: Decimal) -> Rule {
    Rule::new(format!("double(self.max) <= {limit}.0")).message(
        format!("autopilot.bounds.{parameter}.max must be at most {limit} (percent)").as_str(),
    )
}

/// Rule on the object root: `metadata.name` is a DNS-1123 label (1 to 63
/// lowercase letters, digits and `-`, starting and ending with a letter or
/// digit). Kubernetes itself only requires a DNS subdomain (dots, up to 253
/// characters) of a custom resource, but the objects a BotSession owns (its
/// StatefulSet, Service and pod) need a label, and the runtime uses the name
/// as a directory name.
pub(crate) fn dns1123_label_name(kind: &str) -> Rule {
    Rule::new(
        "size(self.metadata.name) <= 63 \
         && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
    )
    .message(
        format!(
            "metadata.name must be a DNS-1123 label (at most 63 lowercase letters, digits and '-', \
             starting and ending with a letter or digit): a {kind} names its StatefulSet, \
             Service and report directory"
        )
        .as_str(),
    )
}

/// `marketData.speed`: `max` or a multiple of real time in
/// [`limits::MIN_SPEED`, `limits::MAX_SPEED`] (the pattern already admits
/// only `max` and plain decimals; CEL's `||` short-circuits before
/// `double()` sees `max`).
pub(crate) fn speed(field: &str) -> Rule {
    Rule::new(format!(
        "self == 'max' || (double(self) >= {} && double(self) <= {})",
        cel_double(limits::MIN_SPEED),
        cel_double(limits::MAX_SPEED)
    ))
    .message(
        format!(
            "{field} must be \"max\" or a multiple of real time from {} to {}, e.g. \"60\"",
            limits::MIN_SPEED,
            limits::MAX_SPEED
        )
        .as_str(),
    )
}

/// A duration string longer than zero. The schema's pattern already requires
/// number-unit pairs, so the duration is zero exactly when it has no digit 1-9.
pub(crate) fn nonzero_duration(field: &str, example: &str) -> Rule {
    Rule::new("self.matches('[1-9]')")
        .message(format!("{field} must be longer than 0s, e.g. \"{example}\"").as_str())
}

/// A string with at least one non-blank character.
pub(crate) fn not_blank(field: &str, expected: &str) -> Rule {
    Rule::new("self.trim() != ''")
        .message(format!("{field} must not be empty: {expected}").as_str())
}

/// A list with at least one entry.
pub(crate) fn not_empty_list(field: &str, expected: &str) -> Rule {
    Rule::new("size(self) > 0")
        .message(format!("{field} must not be empty: {expected}").as_str())
        .reason(Reason::FieldValueRequired)
}

/// An object that cannot change after creation (transition rule).
pub(crate) fn immutable(field: &str, kind: &str) -> Rule {
    Rule::new("self == oldSelf").message(
        format!("{field} is immutable: delete and recreate the {kind} to change it").as_str(),
    )
}

/// Autopilot bound `{min, max}`: `min <= max`.
pub(crate) fn bound_ordered(parameter: &str) -> Rule {
    Rule::new("double(self.min) <= double(self.max)").message(
        format!(
            "autopilot.bounds.{parameter}.min must not exceed autopilot.bounds.{parameter}.max"
        )
        .as_str(),
    )
}

/// Autopilot bound `{min, max}`: `min >= 0`.
pub(crate) fn bound_non_negative(parameter: &str) -> Rule {
    Rule::new("double(self.min) >= 0.0")
        .message(format!("autopilot.bounds.{parameter}.min must not be negative").as_str())
}

/// Autopilot bound `{min, max}` of a percent parameter: `max <= 100`.
pub(crate) fn bound_percent(parameter: &str) -> Rule {
    Rule::new("double(self.max) <= 100.0")
        .message(format!("autopilot.bounds.{parameter}.max must be at most 100 (percent)").as_str())
}

/// Rule on the StrategyConfig spec: the autopilot bound of `parameter`, when
/// set, contains the starting value `risk.<parameter>` when that is set.
pub(crate) fn bound_contains_start(parameter: &str) -> Rule {
    let bound = format!("self.autopilot.bounds.{parameter}");
    let start = format!("self.risk.{parameter}");
    Rule::new(format!(
        "!has(self.autopilot) || !has(self.autopilot.bounds) || !has({bound}) \
         || !has(self.risk) || !has({start}) \
         || (double({bound}.min) <= double({start}) && double({start}) <= double({bound}.max))"
    ))
    .message(
        format!(
            "autopilot.bounds.{parameter} must contain the starting value risk.{parameter}: \
         expected min <= risk.{parameter} <= max"
        )
        .as_str(),
    )
    .field_path(format!(".autopilot.bounds.{parameter}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn null_is_removed_from_types_enums_and_any_of_everywhere() {
        let mut schema = Schema::try_from(json!({
            "type": "object",
            "properties": {
                "a": {"type": ["string", "null"], "nullable": true, "maxLength": 3},
                "b": {"type": ["object", "null"], "properties": {
                    "c": {"type": ["integer", "null"], "format": "uint32"}
                }},
                "d": {"anyOf": [{"type": "string", "enum": ["X", "Y"]}, {"type": "null"}],
                      "description": "kept"},
                "e": {"type": "array", "items": {"type": ["number", "null"]}},
                "f": {"type": "string", "enum": ["P", null]}
            }
        }))
        .unwrap();
        absent_not_null(&mut schema);
        assert_eq!(
            schema.as_value(),
            &json!({
                "type": "object",
                "properties": {
                    "a": {"type": "string", "maxLength": 3},
                    "b": {"type": "object", "properties": {
                        "c": {"type": "integer", "format": "uint32"}
                    }},
                    "d": {"type": "string", "enum": ["X", "Y"], "description": "kept"},
                    "e": {"type": "array", "items": {"type": "number"}},
                    "f": {"type": "string", "enum": ["P"]}
                }
            })
        );
    }

    /// Whether `value` passes `rule` attached to a node of type `ty`,
    /// evaluated client-side with kube-cel.
    fn passes(rule: Rule, ty: &str, value: Value) -> bool {
        let schema = json!({"type": ty, "x-kubernetes-validations": [rule]});
        match kube::core::cel::Validator::new().validate(&schema, &value, None) {
            Ok(()) => true,
            Err(errors) => {
                assert!(
                    errors
                        .iter()
                        .all(|e| e.kind == kube::core::cel::ErrorKind::ValidationFailure),
                    "{value}: {errors}"
                );
                false
            }
        }
    }

    fn verdicts(rule: fn(&str) -> Rule, values: &[&str]) -> Vec<bool> {
        values
            .iter()
            .map(|v| passes(rule("f"), "string", json!(v)))
            .collect()
    }

    #[test]
    fn decimal_rules_accept_their_ends_and_refuse_beyond() {
        let values = ["-0.01", "0", "0.001", "1", "1.01", "100", "100.5"];
        assert_eq!(
            verdicts(percent, &values),
            [false, true, true, true, true, true, false]
        );
        assert_eq!(
            verdicts(positive_percent, &values),
            [false, false, true, true, true, true, false]
        );
        assert_eq!(
            verdicts(fraction, &values),
            [false, true, true, true, false, false, false]
        );
        assert_eq!(
            verdicts(positive_fraction, &values),
            [false, false, true, true, false, false, false]
        );
        assert_eq!(
            verdicts(positive, &values),
            [false, false, true, true, true, true, true]
        );
        assert_eq!(
            verdicts(non_negative, &values),
            [false, true, true, true, true, true, true]
        );
    }

    #[test]
    fn range_rules_accept_their_ends_and_refuse_beyond() {
        let money = |v: &str| passes(money("f"), "string", json!(v));
        assert!(money("0") && money("1000000000000000") && money("0.12345678"));
        assert!(
            money("-5") && money("100.10000000"),
            "sign is another rule's job"
        );
        assert!(!money("1000000000000001") && !money("0.123456789") && !money("1.000000000"));
        let at_most = |v: &str| passes(at_most("f", limits::MAX_PCT), "string", json!(v));
        assert!(at_most("1000000") && at_most("0.5") && !at_most("1000000.5"));
        let drift = |v: &str| {
            passes(
                between("f", -limits::MAX_ANNUAL_DRIFT, limits::MAX_ANNUAL_DRIFT),
                "string",
                json!(v),
            )
        };
        assert!(drift("-10") && drift("10") && drift("0") && !drift("10.01") && !drift("-11"));
        let price = |v: &str| {
            passes(
                between(
                    "f",
                    limits::MIN_SIMULATED_PRICE,
                    limits::MAX_SIMULATED_PRICE,
                ),
                "string",
                json!(v),
            )
        };
        assert!(price("0.00000001") && price("1000000000000"));
        assert!(!price("0.000000009") && !price("1000000000001"));
        let bound = |max: &str| {
            passes(
                bound_at_most("p", limits::MAX_PCT),
                "object",
                json!({"min": "0", "max": max}),
            )
        };
        assert!(bound("1000000") && !bound("1000001"));
    }

    #[test]
    fn duration_and_text_rules() {
        let nonzero = |v: &str| passes(nonzero_duration("f", "1m"), "string", json!(v));
        assert!(nonzero("1m") && nonzero("0.5s") && nonzero("1h0m") && nonzero("10ms"));
        assert!(!nonzero("0s") && !nonzero("0m0s") && !nonzero("0.0h"));
        let text = |v: &str| passes(not_blank("f", "x"), "string", json!(v));
        assert!(text("USD") && !text("") && !text(" \t"));
        let list = |v: Value| passes(not_empty_list("f", "x"), "array", v);
        assert!(list(json!(["a"])) && !list(json!([])));
    }

    #[test]
    fn bound_rules() {
        let bound = |rule: fn(&str) -> Rule, min: &str, max: &str| {
            passes(rule("p"), "object", json!({"min": min, "max": max}))
        };
        assert!(bound(bound_ordered, "1", "1") && bound(bound_ordered, "1", "2"));
        assert!(!bound(bound_ordered, "2", "1.5"));
        assert!(bound(bound_non_negative, "0", "1") && !bound(bound_non_negative, "-0.1", "1"));
        assert!(bound(bound_percent, "0", "100") && !bound(bound_percent, "0", "100.1"));
    }

    #[test]
    fn bound_contains_start_only_checks_values_that_are_set() {
        let spec = |risk: Value, bounds: Value| {
            passes(
                bound_contains_start("stopLossPct"),
                "object",
                json!({"risk": risk, "autopilot": {"bounds": bounds}}),
            )
        };
        let b = json!({"stopLossPct": {"min": "1", "max": "3"}});
        assert!(spec(json!({"stopLossPct": "1"}), b.clone()));
        assert!(spec(json!({"stopLossPct": "3"}), b.clone()));
        assert!(!spec(json!({"stopLossPct": "0.99"}), b.clone()));
        assert!(!spec(json!({"stopLossPct": "3.5"}), b.clone()));
        assert!(spec(json!({}), b));
        assert!(spec(json!({"stopLossPct": "9"}), json!({})));
        assert!(passes(
            bound_contains_start("stopLossPct"),
            "object",
            json!({"risk": {"stopLossPct": "9"}})
        ));
    }

    #[test]
    fn immutable_compares_with_the_stored_object() {
        let schema =
            json!({"type": "object", "x-kubernetes-validations": [immutable("ref", "Thing")]});
        let validator = kube::core::cel::Validator::new();
        let old = json!({"name": "a"});
        assert!(
            validator
                .validate(&schema, &json!({"name": "a"}), Some(&old))
                .is_ok()
        );
        let errors = validator
            .validate(&schema, &json!({"name": "b"}), Some(&old))
            .unwrap_err();
        assert_eq!(
            errors[0].message,
            "ref is immutable: delete and recreate the Thing to change it"
        );
    }

    #[test]
    fn rule_builders_name_the_field_in_the_message() {
        let rule = positive_percent("risk.stopLossPct");
        let value = serde_json::to_value(&rule).unwrap();
        assert_eq!(
            value,
            json!({
                "rule": "double(self) > 0.0 && double(self) <= 100.0",
                "message": "risk.stopLossPct must be a percent greater than 0 and at most 100, e.g. \"2.5\""
            })
        );
        let rule = serde_json::to_value(bound_contains_start("stopLossPct")).unwrap();
        assert_eq!(rule["fieldPath"], ".autopilot.bounds.stopLossPct");
        assert!(rule["rule"].as_str().unwrap().contains(
            "double(self.risk.stopLossPct) <= double(self.autopilot.bounds.stopLossPct.max)"
        ));
    }
}
