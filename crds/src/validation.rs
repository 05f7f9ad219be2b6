//! Field-level validation of specs, mirroring the rules the API server
//! enforces through the CRD schema (OpenAPI bounds and CEL rules), so that a
//! local `bot-runtime run` refuses the same manifests `kubectl apply` would.

use std::fmt;

use rust_decimal::Decimal;

use crate::values::{DecimalString, DurationString};

/// The ranges the runtime's engine accepts, as far as they concern spec
/// values. They mirror the constants of `bot_runtime::types` (`MAX_CASH`,
/// `MAX_CASH_DP`, `MAX_QUANTITY`, `MAX_PCT`, `MAX_SIGNAL_PERIOD`; a test of
/// the runtime checks that both agree), so that a spec `validate()` accepts
/// can never make the engine overflow.
pub mod limits {
    use std::time::Duration;

    use rust_decimal::Decimal;

    /// Largest money amount in a spec (`initialBalance`, `allocation`,
    /// `gasCost`, `minBalance`), base currency: 1e15.
    pub const MAX_MONEY: Decimal = Decimal::from_parts(2_764_472_320, 232_830, 0, false, 0);
    /// Most decimal places of a money amount, as written: 8.
    pub const MONEY_DP: u32 = 8;
    /// Largest `risk.fixedQuantity`, base units: 1e15.
    pub const MAX_QUANTITY: Decimal = MAX_MONEY;
    /// Most decimal places of `risk.fixedQuantity`, as written: 8.
    pub const QUANTITY_DP: u32 = 8;
    /// Largest open-ended percent or basis-point parameter
    /// (`risk.takeProfitPct`, its autopilot bound, `execution.slippage.baseBps`,
    /// `signals.momentum.thresholdPct`): 1,000,000.
    pub const MAX_PCT: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);
    /// Smallest simulated starting price, quote currency: 1e-8 (the
    /// simulated market's price step).
    pub const MIN_SIMULATED_PRICE: Decimal = Decimal::from_parts(1, 0, 0, false, 8);
    /// Largest simulated starting price, quote currency: 1e12 (the engine's
    /// largest candle price).
    pub const MAX_SIMULATED_PRICE: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0);
    /// Largest absolute simulated annual drift μ, fraction: 10 (±1000 % a year).
    pub const MAX_ANNUAL_DRIFT: Decimal = Decimal::TEN;
    /// Largest simulated annual volatility σ, fraction: 10 (1000 % a year).
    pub const MAX_ANNUAL_VOLATILITY: Decimal = Decimal::TEN;
    /// Largest RNG seed: 9,007,199,254,740,991 (2^53 − 1). The API server
    /// refuses integers above `i64::MAX`, reads a schema's `maximum` as a
    /// 64-bit float (so `i64::MAX` itself cannot be the bound), and JSON
    /// tools read numbers as doubles: 2^53 − 1 is the largest seed every one
    /// of them keeps exactly.
    pub const MAX_SEED: u64 = (1 << 53) - 1;
    /// Slowest `marketData.speed`: 0.001× real time.
    pub const MIN_SPEED: Decimal = Decimal::from_parts(1, 0, 0, false, 3);
    /// Fastest `marketData.speed` other than `max`: 1,000,000× real time.
    pub const MAX_SPEED: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);
    /// Most candles per symbol of a simulated source: 1,000,000,000.
    pub const MAX_SIMULATED_CANDLES: u64 = 1_000_000_000;
    /// Longest signal look-back, bars: 100,000 (each generator keeps a
    /// buffer of this many closes per symbol).
    pub const MAX_SIGNAL_PERIOD: u32 = 100_000;
    /// Longest duration in a spec (intervals, latencies, cooldowns,
    /// `stopAfter`, ...): 100 years of 365 days, i.e. `876000h`. Keeps every
    /// sum of a market time and a duration inside the runtime's millisecond
    /// timestamps.
    pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);
}

/// Longest DNS-1123 label, in characters (RFC 1123 §2.1; Kubernetes'
/// `validation.DNS1123LabelMaxLength`).
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;

/// Check that `name` is a DNS-1123 label, the rule Kubernetes applies to the
/// names of the objects a BotSession owns (StatefulSet, Service, pod): 1 to
/// 63 characters, lowercase ASCII letters, digits and `-`, starting and ending
/// with a letter or digit.
///
/// A session name also becomes a path (`<report-dir>/<name>`) and a ledger
/// key, so this rule keeps names such as `..`, `/abs/path` or `../../x` out
/// of the file system.
///
/// # Errors
///
/// A message quoting the name, saying what is wrong in it and what the rule
/// is, e.g. `"../x" is not a valid session name: character '.' at position 1
/// is not allowed (expected a DNS-1123 label: ...)`.
pub fn check_dns1123_label(name: &str) -> Result<(), String> {
    const RULE: &str = "expected a DNS-1123 label: 1 to 63 lowercase letters, digits and '-', \
                        starting and ending with a letter or digit, e.g. \"btc-trend-1\"";
    let bad = |what: String| {
        Err(format!(
            "{name:?} is not a valid session name: {what} ({RULE})"
        ))
    };
    if name.is_empty() {
        return bad("it is empty".into());
    }
    let len = name.chars().count();
    if len > DNS1123_LABEL_MAX_LENGTH {
        return bad(format!(
            "it is {len} characters long, more than {DNS1123_LABEL_MAX_LENGTH}"
        ));
    }
    if let Some((i, c)) = name
        .chars()
        .enumerate()
        .find(|&(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        return bad(format!(
            "character {c:?} at position {} is not allowed",
            i + 1
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("it starts or ends with '-'".into());
    }
    Ok(())
}

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

    /// Require a money amount (when present) of at most
    /// [`limits::MAX_MONEY`] with at most [`limits::MONEY_DP`] decimal places.
    pub fn money(&mut self, path: &str, v: Option<DecimalString>) {
        self.max_with_dp(path, v, limits::MAX_MONEY, limits::MONEY_DP);
    }

    /// Require `v <= max` with at most `dp` decimal places as written, when
    /// present.
    pub fn max_with_dp(&mut self, path: &str, v: Option<DecimalString>, max: Decimal, dp: u32) {
        let Some(v) = v.map(DecimalString::get) else {
            return;
        };
        if v > max {
            self.push(path, format!("{v} is out of range: expected at most {max}"));
        } else if v.scale() > dp {
            self.push(
                path,
                format!(
                    "{v} has {} decimal places: expected at most {dp}",
                    v.scale()
                ),
            );
        }
    }

    /// Require `v <= max` when present.
    pub fn at_most(&mut self, path: &str, v: Option<DecimalString>, max: Decimal, unit: &str) {
        if let Some(v) = v.map(DecimalString::get)
            && v > max
        {
            self.push(
                path,
                format!("{v} is out of range: expected at most {max}{unit}"),
            );
        }
    }

    /// Require a duration of at most [`limits::MAX_DURATION`] when present.
    pub fn duration(&mut self, path: &str, v: Option<DurationString>) {
        if let Some(v) = v
            && v.get() > limits::MAX_DURATION
        {
            self.push(
                path,
                format!(
                    "{v} is too long: expected at most {} (100 years)",
                    DurationString(limits::MAX_DURATION)
                ),
            );
        }
    }

    /// Require a count of at most `max` when present (the schema's `maximum`).
    pub fn count_at_most(&mut self, path: &str, v: Option<u64>, max: u64) {
        if let Some(v) = v
            && v > max
        {
            self.push(path, format!("{v} is out of range: expected at most {max}"));
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
