//! Field-level validation of specs, mirroring the rules the API server
//! enforces through the CRD schema (OpenAPI bounds and CEL rules), so that a
//! local `bot-runtime run` refuses the same manifests `kubectl apply` would.

use std::fmt;

use rust_decimal::Decimal;

use crate::values::DecimalString;

/// One rule a spec breaks: the JSON path of the field (`spec.risk.stopLossPct`)
/// and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path from the object root, e.g. `spec.autopilot.bounds.stopLossPct`.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects [`FieldError`]s while walking a spec.
#[derive(Default, Debug)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    /// Record an error at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Require `lo <= v <= hi`.
    pub fn range(&mut self, path: &str, v: Decimal, lo: Decimal, hi: Decimal, unit: &str) {
        if v < lo || v > hi {
            self.push(
                path,
                format!("{v} is out of range: expected {lo} to {hi}{unit}"),
            );
        }
    }

    /// Require a percentage in `0..=100` when present.
    pub fn pct(&mut self, path: &str, v: Option<DecimalString>) {
        if let Some(v) = v {
            self.range(
                path,
                v.get(),
                Decimal::ZERO,
                Decimal::ONE_HUNDRED,
                " (percent, 0-100)",
            );
        }
    }

    /// Require a fraction in `0..=1` when present.
    pub fn fraction(&mut self, path: &str, v: Option<DecimalString>) {
        if let Some(v) = v {
            self.range(
                path,
                v.get(),
                Decimal::ZERO,
                Decimal::ONE,
                " (fraction, 0-1)",
            );
        }
    }

    /// Require `v > 0` when present.
    pub fn positive(&mut self, path: &str, v: Option<DecimalString>) {
        if let Some(v) = v
            && v.get() <= Decimal::ZERO
        {
            self.push(path, format!("{} must be greater than 0", v.get()));
        }
    }

    /// Require `v >= 0` when present.
    pub fn non_negative(&mut self, path: &str, v: Option<DecimalString>) {
        if let Some(v) = v
            && v.get() < Decimal::ZERO
        {
            self.push(path, format!("{} must not be negative", v.get()));
        }
    }

    /// Require at most `max` characters (the schema's `maxLength`).
    pub fn max_length(&mut self, path: &str, v: &str, max: usize) {
        let n = v.chars().count();
        if n > max {
            self.push(
                path,
                format!("is {n} characters long: expected at most {max}"),
            );
        }
    }

    /// Require at most `max` entries (the schema's `maxItems`).
    pub fn max_items(&mut self, path: &str, len: usize, max: usize) {
        if len > max {
            self.push(path, format!("has {len} entries: expected at most {max}"));
        }
    }

    /// The collected errors, or `Ok` when there are none.
    pub fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}
