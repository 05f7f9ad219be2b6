//! `StrategyConfig`: how a bot trades — signals, risk parameters, circuit
//! breakers and the autopilot's bounds.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    condition::Condition,
    schema::{self, MAX_SYMBOL_LENGTH, MAX_SYMBOLS},
    validation::{Errors, FieldError, limits},
    values::{DecimalString, DurationString},
};

/// How to trade. One StrategyConfig can drive many BotSessions; each session
/// keeps its own autopilot state starting from these values.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "paperbot.io",
    version = "v1alpha1",
    kind = "StrategyConfig",
    doc = "How a paper-trading bot trades: signal generators, risk parameters, token \
           lists, circuit breakers and the autopilot's bounds. Used by BotSessions.",
    namespaced,
    status = "StrategyConfigStatus",
    shortname = "sc",
    shortname = "strat",
    category = "paperbot",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Intel", type_ = "integer", json_path = ".spec.intelLevel"),
    printcolumn(
        name = "Autopilot",
        type_ = "boolean",
        json_path = ".spec.autopilot.enabled"
    ),
    printcolumn(
        name = "Sessions",
        type_ = "integer",
        json_path = ".status.sessionCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = schema::absent_not_null)]
#[x_kube(
    validation = Rule::new(
        "self.mode != 'Custom' || (has(self.risk) \
         && (has(self.risk.maxPositionSizePct) || has(self.risk.fixedQuantity)))"
    )
    .message("mode Custom has no preset: set risk.maxPositionSizePct or risk.fixedQuantity")
    .field_path(".risk")
    .reason(Reason::FieldValueRequired),
    validation = schema::bound_contains_start("maxPositionSizePct"),
    validation = schema::bound_contains_start("confidenceThreshold"),
    validation = schema::bound_contains_start("stopLossPct"),
    validation = schema::bound_contains_start("takeProfitPct")
)]
pub struct StrategyConfigSpec {
    /// Preset that fills in every risk parameter left unset:
    /// `Conservative`, `Moderate` (default), `Aggressive`, or `Custom` (no preset:
    /// unset stop-loss / take-profit are off, and `risk.maxPositionSizePct` or
    /// `risk.fixedQuantity` must be given).
    #[serde(default)]
    pub mode: StrategyMode,
    /// The "intel slider", 1 (ultra-conservative) to 10 (most aggressive), default 5.
    /// Scales the preset-derived position size, stop-loss distance and confidence
    /// threshold; values set explicitly in `risk` are used as written.
    #[serde(default = "default_intel")]
    #[schemars(range(min = 1, max = 10))]
    pub intel_level: u8,
    /// The signal generators; at least one must be set.
    pub signals: SignalsSpec,
    /// Position sizing, exits and pre-trade limits.
    #[serde(default)]
    pub risk: RiskSpec,
    /// Symbols this strategy may or may not trade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenFilter>,
    /// Limits that halt new entries when losses or faults pass them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breakers: Option<CircuitBreakersSpec>,
    /// Self-tuning of position size, confidence threshold, stop-loss and
    /// take-profit within bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autopilot: Option<AutopilotSpec>,
}

fn default_intel() -> u8 {
    5
}

/// Risk preset. See [`StrategyConfigSpec::mode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum StrategyMode {
    /// Small positions, tight stops, high confidence threshold.
    Conservative,
    /// The default preset.
    #[default]
    Moderate,
    /// Large positions, wide stops, low confidence threshold.
    Aggressive,
    /// No preset: only what `risk` says.
    Custom,
}

/// Signal generators. Each one set contributes a score in -1..1 with its
/// `weight`; the decision's confidence is how strongly the signals that have an
/// opinion agree (see the runtime's decision module).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "has(self.smaCrossover) || has(self.rsi) || has(self.momentum) || has(self.bollinger)"
)
.message("signals must set at least one of smaCrossover, rsi, momentum, bollinger")
.reason(Reason::FieldValueRequired))]
pub struct SignalsSpec {
    /// Simple-moving-average crossover on closes: buy when the fast SMA crosses
    /// above the slow one, sell when it crosses below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sma_crossover: Option<SmaCrossoverSpec>,
    /// RSI mean reversion: buy when oversold, sell when overbought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsi: Option<RsiSpec>,
    /// Momentum: rate of change of the close over `period` bars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<MomentumSpec>,
    /// Bollinger bands: buy below the lower band, sell above the upper one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bollinger: Option<BollingerSpec>,
}

/// SMA crossover parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.fastPeriod < self.slowPeriod")
    .message("signals.smaCrossover.fastPeriod must be smaller than signals.smaCrossover.slowPeriod"))]
pub struct SmaCrossoverSpec {
    /// Bars in the fast average (>= 1, < `slowPeriod`).
    #[schemars(range(min = 1, max = limits::MAX_SIGNAL_PERIOD))]
    pub fast_period: u32,
    /// Bars in the slow average (at most 100,000).
    #[schemars(range(min = 2, max = limits::MAX_SIGNAL_PERIOD))]
    pub slow_period: u32,
    /// Weight of this signal (> 0, default `"1"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::positive("signals.smaCrossover.weight"))]
    pub weight: Option<DecimalString>,
}

/// RSI parameters (Wilder's smoothing).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("double(self.oversold) < double(self.overbought)")
    .message("signals.rsi.oversold must be below signals.rsi.overbought"))]
pub struct RsiSpec {
    /// Bars in the RSI (default 14, 2 to 100,000).
    #[serde(default = "default_rsi_period")]
    #[schemars(range(min = 2, max = limits::MAX_SIGNAL_PERIOD))]
    pub period: u32,
    /// RSI level (0-100) at or below which the market is oversold (default `"30"`).
    #[serde(default = "default_oversold")]
    #[x_kube(validation = schema::percent("signals.rsi.oversold"))]
    pub oversold: DecimalString,
    /// RSI level (0-100) at or above which the market is overbought (default `"70"`).
    #[serde(default = "default_overbought")]
    #[x_kube(validation = schema::percent("signals.rsi.overbought"))]
    pub overbought: DecimalString,
    /// Weight of this signal (> 0, default `"1"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::positive("signals.rsi.weight"))]
    pub weight: Option<DecimalString>,
}

fn default_rsi_period() -> u32 {
    14
}
fn default_oversold() -> DecimalString {
    DecimalString(Decimal::from(30))
}
fn default_overbought() -> DecimalString {
    DecimalString(Decimal::from(70))
}

/// Momentum parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MomentumSpec {
    /// Look-back in bars (default 10, 1 to 100,000).
    #[serde(default = "default_momentum_period")]
    #[schemars(range(min = 1, max = limits::MAX_SIGNAL_PERIOD))]
    pub period: u32,
    /// Rate of change, percent, at which the signal reaches full strength
    /// (default `"1"`, at most 1,000,000).
    #[serde(default = "default_momentum_threshold")]
    #[x_kube(
        validation = schema::positive("signals.momentum.thresholdPct"),
        validation = schema::at_most("signals.momentum.thresholdPct", limits::MAX_PCT)
    )]
    pub threshold_pct: DecimalString,
    /// Weight of this signal (> 0, default `"1"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::positive("signals.momentum.weight"))]
    pub weight: Option<DecimalString>,
}

fn default_momentum_period() -> u32 {
    10
}
fn default_momentum_threshold() -> DecimalString {
    DecimalString(Decimal::ONE)
}

/// Bollinger band parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BollingerSpec {
    /// Bars in the moving average and standard deviation (default 20, 2 to 100,000).
    #[serde(default = "default_bollinger_period")]
    #[schemars(range(min = 2, max = limits::MAX_SIGNAL_PERIOD))]
    pub period: u32,
    /// Band width in standard deviations (default `"2"`).
    #[serde(default = "default_std_dev")]
    #[x_kube(validation = schema::positive("signals.bollinger.stdDev"))]
    pub std_dev: DecimalString,
    /// Weight of this signal (> 0, default `"1"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::positive("signals.bollinger.weight"))]
    pub weight: Option<DecimalString>,
}

fn default_bollinger_period() -> u32 {
    20
}
fn default_std_dev() -> DecimalString {
    DecimalString(Decimal::TWO)
}

/// Risk parameters. Every field is optional: unset ones come from the `mode`
/// preset scaled by `intelLevel` (see the README's table).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RiskSpec {
    /// Largest position, percent (0-100) of session equity at entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::positive_percent("risk.maxPositionSizePct"))]
    pub max_position_size_pct: Option<DecimalString>,
    /// Buy exactly this quantity (base units) on every entry instead of sizing by
    /// `maxPositionSizePct`; at most 1e15 with at most 8 decimal places.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = schema::positive("risk.fixedQuantity"),
        validation = schema::money("risk.fixedQuantity")
    )]
    pub fixed_quantity: Option<DecimalString>,
    /// Close a position this many percent (0-100) below its average entry price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::positive_percent("risk.stopLossPct"))]
    pub stop_loss_pct: Option<DecimalString>,
    /// Close a position this many percent above its average entry price
    /// (at most 1,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = schema::positive("risk.takeProfitPct"),
        validation = schema::at_most("risk.takeProfitPct", limits::MAX_PCT)
    )]
    pub take_profit_pct: Option<DecimalString>,
    /// Close a position this many percent (0-100) below the highest price since entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::positive_percent("risk.trailingStopPct"))]
    pub trailing_stop_pct: Option<DecimalString>,
    /// Close a position held this long (market time), e.g. `"24h"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hold_time: Option<DurationString>,
    /// Entries allowed per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_daily_trades: Option<u32>,
    /// Positions open at once, over all symbols (>= 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent_positions: Option<u32>,
    /// Minimum decision confidence (0-100) to trade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::percent("risk.confidenceThreshold"))]
    pub confidence_threshold: Option<DecimalString>,
    /// Skip an entry whose estimated slippage exceeds this percent (0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::percent("risk.maxSlippagePct"))]
    pub max_slippage_pct: Option<DecimalString>,
}

/// Symbol allow and block lists. A symbol trades when the allow list is empty
/// or names it, and the block list does not name it. No symbol may be in both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "!has(self.allow) || !has(self.block) || !self.allow.exists(s, s in self.block)"
)
.message("tokens.allow and tokens.block must not name the same symbol")
.field_path(".allow"))]
pub struct TokenFilter {
    /// Only these symbols may be traded (empty: all); at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SYMBOLS), inner(length(max = MAX_SYMBOL_LENGTH)))]
    pub allow: Vec<String>,
    /// These symbols are never traded; at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SYMBOLS), inner(length(max = MAX_SYMBOL_LENGTH)))]
    pub block: Vec<String>,
}

/// Circuit-breaker limits. Each set limit is one breaker with the states
/// closed / open / half-open; an open breaker blocks new entries, exits still run.
/// Counts are >= 1: omit a field to turn its breaker off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakersSpec {
    /// Trip when the loss since the start of the UTC day exceeds this percent
    /// (0-100) of the equity at the start of that day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::positive_percent("circuitBreakers.dailyLossPct"))]
    pub daily_loss_pct: Option<DecimalString>,
    /// Trip when equity falls this many percent (0-100) below its peak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::positive_percent("circuitBreakers.maxDrawdownPct"))]
    pub max_drawdown_pct: Option<DecimalString>,
    /// Trip after this many failed executions in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_consecutive_failures: Option<u32>,
    /// Trip after this many losing round trips in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_consecutive_losses: Option<u32>,
    /// Trip when this many entries were made in the UTC day (resets at midnight UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_daily_trades: Option<u32>,
    /// Trip when equity falls below this amount (base currency; at most 1e15
    /// with at most 8 decimal places).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = schema::non_negative("circuitBreakers.minBalance"),
        validation = schema::money("circuitBreakers.minBalance")
    )]
    pub min_balance: Option<DecimalString>,
    /// Trip after this many invalid price ticks in a row (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_invalid_ticks: Option<u32>,
    /// Trip when a symbol's data goes silent longer than this (market time), e.g. `"5m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_data_gap: Option<DurationString>,
    /// Time an open breaker waits before it turns half-open (default `"15m"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<DurationString>,
}

/// Autopilot: after every evaluation window it nudges the tunable parameters
/// by the learning rate, within `bounds`, and judges each change after the
/// next window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutopilotSpec {
    /// Whether the autopilot adjusts anything.
    #[serde(default)]
    pub enabled: bool,
    /// Fraction (0-1) of a parameter's bound range moved per adjustment (default `"0.1"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::positive_fraction("autopilot.learningRate"))]
    pub learning_rate: Option<DecimalString>,
    /// Fraction (0-1): how readily the autopilot loosens risk after good windows
    /// (0 = only ever tightens, default `"0.5"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::fraction("autopilot.aggressiveness"))]
    pub aggressiveness: Option<DecimalString>,
    /// Closed round trips in one evaluation window (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub performance_window: Option<u32>,
    /// Minimum market time between two adjustments (default `"1h"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<DurationString>,
    /// Parameter changes allowed per UTC day (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_daily_adjustments: Option<u32>,
    /// Disable the autopilot after this many negative outcomes in a row (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub auto_disable_after: Option<u32>,
    /// Inclusive bounds per tunable parameter. A parameter without bounds is not tuned.
    #[serde(default)]
    pub bounds: AutopilotBounds,
}

/// Bounds of the parameters the autopilot may tune. Each must contain the
/// parameter's starting value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutopilotBounds {
    /// Bounds of `risk.maxPositionSizePct` (percent 0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = schema::bound_ordered("maxPositionSizePct"),
        validation = schema::bound_non_negative("maxPositionSizePct"),
        validation = schema::bound_percent("maxPositionSizePct")
    )]
    pub max_position_size_pct: Option<Bound>,
    /// Bounds of `risk.confidenceThreshold` (0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = schema::bound_ordered("confidenceThreshold"),
        validation = schema::bound_non_negative("confidenceThreshold"),
        validation = schema::bound_percent("confidenceThreshold")
    )]
    pub confidence_threshold: Option<Bound>,
    /// Bounds of `risk.stopLossPct` (percent 0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = schema::bound_ordered("stopLossPct"),
        validation = schema::bound_non_negative("stopLossPct"),
        validation = schema::bound_percent("stopLossPct")
    )]
    pub stop_loss_pct: Option<Bound>,
    /// Bounds of `risk.takeProfitPct` (percent, at most 1,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = schema::bound_ordered("takeProfitPct"),
        validation = schema::bound_non_negative("takeProfitPct"),
        validation = schema::bound_at_most("takeProfitPct", limits::MAX_PCT)
    )]
    pub take_profit_pct: Option<Bound>,
}

/// An inclusive `[min, max]` range.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bound {
    /// Lowest allowed value.
    pub min: DecimalString,
    /// Highest allowed value.
    pub max: DecimalString,
}

impl Bound {
    /// Whether `v` lies in `[min, max]`.
    pub fn contains(&self, v: Decimal) -> bool {
        self.min.get() <= v && v <= self.max.get()
    }
}

/// What the operator observes about a strategy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::absent_not_null)]
pub struct StrategyConfigStatus {
    /// Number of sessions using this strategy.
    #[serde(default)]
    pub session_count: u32,
    /// Effective parameters the autopilot reached, by session name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub effective_parameters: BTreeMap<String, BTreeMap<String, DecimalString>>,
    /// `metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, ... (`metav1.Condition` shape), one per `type`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

impl StrategyConfigSpec {
    /// Check the rules the API server also enforces. Paths start at `spec`.
    /// Bounds are checked against explicit `risk` values only; the runtime
    /// checks them again against the preset-derived starting values.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut e = Errors::default();
        if !(1..=10).contains(&self.intel_level) {
            e.push(
                "spec.intelLevel",
                format!("{} is out of range: expected 1 to 10", self.intel_level),
            );
        }
        let s = &self.signals;
        if s.sma_crossover.is_none()
            && s.rsi.is_none()
            && s.momentum.is_none()
            && s.bollinger.is_none()
        {
            e.push(
                "spec.signals",
                "no signal generator set: expected at least one of smaCrossover, rsi, momentum, bollinger",
            );
        }
        if let Some(x) = &s.sma_crossover {
            if x.fast_period == 0 {
                e.push("spec.signals.smaCrossover.fastPeriod", "must be at least 1");
            }
            e.count_at_most(
                "spec.signals.smaCrossover.slowPeriod",
                Some(u64::from(x.slow_period)),
                u64::from(limits::MAX_SIGNAL_PERIOD),
            );
            if x.fast_period >= x.slow_period {
                e.push(
                    "spec.signals.smaCrossover",
                    format!(
                        "fastPeriod ({}) must be smaller than slowPeriod ({})",
                        x.fast_period, x.slow_period
                    ),
                );
            }
            e.positive("spec.signals.smaCrossover.weight", x.weight);
        }
        if let Some(x) = &s.rsi {
            if x.period < 2 {
                e.push("spec.signals.rsi.period", "must be at least 2");
            }
            e.count_at_most(
                "spec.signals.rsi.period",
                Some(u64::from(x.period)),
                u64::from(limits::MAX_SIGNAL_PERIOD),
            );
            e.pct("spec.signals.rsi.oversold", Some(x.oversold));
            e.pct("spec.signals.rsi.overbought", Some(x.overbought));
            if x.oversold.get() >= x.overbought.get() {
                e.push(
                    "spec.signals.rsi",
                    format!(
                        "oversold ({}) must be below overbought ({})",
                        x.oversold, x.overbought
                    ),
                );
            }
            e.positive("spec.signals.rsi.weight", x.weight);
        }
        if let Some(x) = &s.momentum {
            if x.period == 0 {
                e.push("spec.signals.momentum.period", "must be at least 1");
            }
            e.count_at_most(
                "spec.signals.momentum.period",
                Some(u64::from(x.period)),
                u64::from(limits::MAX_SIGNAL_PERIOD),
            );
            e.positive("spec.signals.momentum.thresholdPct", Some(x.threshold_pct));
            e.at_most(
                "spec.signals.momentum.thresholdPct",
                Some(x.threshold_pct),
                limits::MAX_PCT,
                " (percent)",
            );
            e.positive("spec.signals.momentum.weight", x.weight);
        }
        if let Some(x) = &s.bollinger {
            if x.period < 2 {
                e.push("spec.signals.bollinger.period", "must be at least 2");
            }
            e.count_at_most(
                "spec.signals.bollinger.period",
                Some(u64::from(x.period)),
                u64::from(limits::MAX_SIGNAL_PERIOD),
            );
            e.positive("spec.signals.bollinger.stdDev", Some(x.std_dev));
            e.positive("spec.signals.bollinger.weight", x.weight);
        }

        let r = &self.risk;
        e.pct("spec.risk.maxPositionSizePct", r.max_position_size_pct);
        e.positive("spec.risk.maxPositionSizePct", r.max_position_size_pct);
        e.positive("spec.risk.fixedQuantity", r.fixed_quantity);
        e.max_with_dp(
            "spec.risk.fixedQuantity",
            r.fixed_quantity,
            limits::MAX_QUANTITY,
            limits::QUANTITY_DP,
        );
        e.pct("spec.risk.stopLossPct", r.stop_loss_pct);
        e.positive("spec.risk.stopLossPct", r.stop_loss_pct);
        e.positive("spec.risk.takeProfitPct", r.take_profit_pct);
        e.at_most(
            "spec.risk.takeProfitPct",
            r.take_profit_pct,
            limits::MAX_PCT,
            " (percent)",
        );
        e.duration("spec.risk.maxHoldTime", r.max_hold_time);
        e.pct("spec.risk.trailingStopPct", r.trailing_stop_pct);
        e.positive("spec.risk.trailingStopPct", r.trailing_stop_pct);
        e.pct("spec.risk.confidenceThreshold", r.confidence_threshold);
        e.pct("spec.risk.maxSlippagePct", r.max_slippage_pct);
        if r.max_concurrent_positions == Some(0) {
            e.push("spec.risk.maxConcurrentPositions", "must be at least 1");
        }
        if self.mode == StrategyMode::Custom
            && r.max_position_size_pct.is_none()
            && r.fixed_quantity.is_none()
        {
            e.push(
                "spec.risk",
                "mode Custom has no preset: set maxPositionSizePct or fixedQuantity",
            );
        }

        if let Some(t) = &self.tokens {
            for (name, list) in [("allow", &t.allow), ("block", &t.block)] {
                e.max_items(&format!("spec.tokens.{name}"), list.len(), MAX_SYMBOLS);
                for (i, sym) in list.iter().enumerate() {
                    e.max_length(&format!("spec.tokens.{name}[{i}]"), sym, MAX_SYMBOL_LENGTH);
                }
            }
            for (i, sym) in t.allow.iter().enumerate() {
                if t.block.contains(sym) {
                    e.push(
                        format!("spec.tokens.allow[{i}]"),
                        format!("{sym:?} is both allowed and blocked"),
                    );
                }
            }
        }

        if let Some(b) = &self.circuit_breakers {
            e.pct("spec.circuitBreakers.dailyLossPct", b.daily_loss_pct);
            e.positive("spec.circuitBreakers.dailyLossPct", b.daily_loss_pct);
            e.pct("spec.circuitBreakers.maxDrawdownPct", b.max_drawdown_pct);
            e.positive("spec.circuitBreakers.maxDrawdownPct", b.max_drawdown_pct);
            e.non_negative("spec.circuitBreakers.minBalance", b.min_balance);
            e.money("spec.circuitBreakers.minBalance", b.min_balance);
            e.duration("spec.circuitBreakers.maxDataGap", b.max_data_gap);
            e.duration("spec.circuitBreakers.cooldown", b.cooldown);
            for (path, v) in [
                (
                    "spec.circuitBreakers.maxConsecutiveFailures",
                    b.max_consecutive_failures,
                ),
                (
                    "spec.circuitBreakers.maxConsecutiveLosses",
                    b.max_consecutive_losses,
                ),
                ("spec.circuitBreakers.maxDailyTrades", b.max_daily_trades),
                ("spec.circuitBreakers.maxInvalidTicks", b.max_invalid_ticks),
            ] {
                if v == Some(0) {
                    e.push(
                        path,
                        "must be at least 1 (omit the field to turn the breaker off)",
                    );
                }
            }
        }

        if let Some(a) = &self.autopilot {
            e.fraction("spec.autopilot.learningRate", a.learning_rate);
            e.positive("spec.autopilot.learningRate", a.learning_rate);
            e.fraction("spec.autopilot.aggressiveness", a.aggressiveness);
            if a.performance_window == Some(0) {
                e.push(
                    "spec.autopilot.performanceWindow",
                    "must be at least 1 closed trade",
                );
            }
            if a.auto_disable_after == Some(0) {
                e.push("spec.autopilot.autoDisableAfter", "must be at least 1");
            }
            e.duration("spec.autopilot.cooldown", a.cooldown);
            let b = &a.bounds;
            for (name, bound, start, hi) in [
                (
                    "maxPositionSizePct",
                    b.max_position_size_pct,
                    r.max_position_size_pct,
                    Some(Decimal::ONE_HUNDRED),
                ),
                (
                    "confidenceThreshold",
                    b.confidence_threshold,
                    r.confidence_threshold,
                    Some(Decimal::ONE_HUNDRED),
                ),
                (
                    "stopLossPct",
                    b.stop_loss_pct,
                    r.stop_loss_pct,
                    Some(Decimal::ONE_HUNDRED),
                ),
                (
                    "takeProfitPct",
                    b.take_profit_pct,
                    r.take_profit_pct,
                    Some(limits::MAX_PCT),
                ),
            ] {
                let Some(bound) = bound else { continue };
                let path = format!("spec.autopilot.bounds.{name}");
                if bound.min.get() > bound.max.get() {
                    e.push(
                        &path,
                        format!("min ({}) must not exceed max ({})", bound.min, bound.max),
                    );
                }
                if bound.min.get() < Decimal::ZERO {
                    e.push(
                        format!("{path}.min"),
                        format!("{} must not be negative", bound.min),
                    );
                }
                if let Some(hi) = hi
                    && bound.max.get() > hi
                {
                    e.push(
                        format!("{path}.max"),
                        format!("{} is out of range: expected at most {hi}", bound.max),
                    );
                }
                if let Some(start) = start
                    && !bound.contains(start.get())
                {
                    e.push(
                        &path,
                        format!(
                            "[{}, {}] does not contain the starting value spec.risk.{name} = {start}",
                            bound.min, bound.max
                        ),
                    );
                }
            }
        }
        e.finish()
    }
}
