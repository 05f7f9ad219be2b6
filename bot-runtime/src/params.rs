//! Effective parameters: a `StrategyConfig` resolved through its `mode`
//! preset and `intelLevel` into plain numbers the engine uses.
//!
//! Precedence, highest first: a value written in `spec.risk` → the mode
//! preset scaled by the intel level → off.
//!
//! | parameter (percent) | Conservative | Moderate | Aggressive | intel scaling (level i, 1-10) |
//! |---|---:|---:|---:|---|
//! | maxPositionSizePct | 5 | 10 | 25 | × (0.5 + 0.1·i), capped at 100 |
//! | stopLossPct | 2 | 3 | 5 | × (0.7 + 0.06·i) |
//! | takeProfitPct | 4 | 6 | 12 | × (0.7 + 0.06·i) |
//! | confidenceThreshold | 70 | 60 | 45 | + 3·(5 − i), clamped to 0-100 |
//! | maxConcurrentPositions | 2 | 3 | 5 | — |
//! | maxDailyTrades | 10 | 25 | 100 | — |
//!
//! Level 5 leaves the preset unchanged. `Custom` has no preset: unset
//! parameters are off (no stop-loss, no take-profit, threshold 0, unlimited
//! positions and trades).

use paperbot_crds::{
    AutopilotSpec, Bound, CircuitBreakersSpec, DecimalString, StrategyConfigSpec, StrategyMode,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The parameters the autopilot may tune. Percentages are 0-100.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunableParams {
    /// Largest position, percent of equity at entry.
    pub max_position_size_pct: Decimal,
    /// Minimum confidence (0-100) to trade.
    pub confidence_threshold: Decimal,
    /// Stop-loss distance below average entry, percent; `None` = off.
    pub stop_loss_pct: Option<Decimal>,
    /// Take-profit distance above average entry, percent; `None` = off.
    pub take_profit_pct: Option<Decimal>,
}

/// Names of the tunable parameters, as in `spec.risk` and the autopilot bounds.
pub mod param_names {
    /// `maxPositionSizePct`
    pub const MAX_POSITION_SIZE_PCT: &str = "maxPositionSizePct";
    /// `confidenceThreshold`
    pub const CONFIDENCE_THRESHOLD: &str = "confidenceThreshold";
    /// `stopLossPct`
    pub const STOP_LOSS_PCT: &str = "stopLossPct";
    /// `takeProfitPct`
    pub const TAKE_PROFIT_PCT: &str = "takeProfitPct";
}

/// Fixed (non-tunable) risk parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RiskLimits {
    /// Buy exactly this quantity instead of sizing by percent.
    pub fixed_quantity: Option<Decimal>,
    /// Trailing stop distance below the highest price since entry, percent.
    pub trailing_stop_pct: Option<Decimal>,
    /// Maximum holding time, milliseconds of market time.
    pub max_hold_ms: Option<i64>,
    /// Entries per UTC day.
    pub max_daily_trades: Option<u32>,
    /// Positions open at once.
    pub max_concurrent_positions: Option<u32>,
    /// Skip entries whose estimated slippage exceeds this percent.
    pub max_slippage_pct: Option<Decimal>,
    /// Only these symbols (empty: all).
    pub allow: Vec<String>,
    /// Never these symbols.
    pub block: Vec<String>,
}

impl RiskLimits {
    /// Whether the token filter lets `symbol` trade.
    pub fn symbol_allowed(&self, symbol: &str) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|s| s == symbol))
            && !self.block.iter().any(|s| s == symbol)
    }
}

/// Circuit-breaker limits; `None` turns that breaker off.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerLimits {
    /// Strategy daily loss limit, percent of the day's starting equity.
    pub daily_loss_pct: Option<Decimal>,
    /// Strategy max drawdown, percent below the equity peak.
    pub max_drawdown_pct: Option<Decimal>,
    /// Failed executions in a row.
    pub max_consecutive_failures: Option<u32>,
    /// Losing round trips in a row.
    pub max_consecutive_losses: Option<u32>,
    /// Entries per UTC day.
    pub max_daily_trades: Option<u32>,
    /// Minimum equity, quote currency.
    pub min_balance: Option<Decimal>,
    /// Invalid ticks in a row before the price-feed breaker trips (always on; default 3).
    pub max_invalid_ticks: u32,
    /// Longest silence of a symbol's data, milliseconds (None: 5 × the candle interval).
    pub max_data_gap_ms: Option<i64>,
    /// Cooldown of an open breaker before half-open, milliseconds (default 15 min).
    pub cooldown_ms: i64,
    /// Account kill switch: drawdown percent (halts the session).
    pub account_max_drawdown_pct: Option<Decimal>,
    /// Account kill switch: daily loss percent (halts the session).
    pub account_daily_loss_pct: Option<Decimal>,
}

/// Autopilot settings with defaults applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AutopilotSettings {
    /// Whether it runs at all.
    pub enabled: bool,
    /// Fraction (0-1) of a bound's range moved per adjustment.
    pub learning_rate: Decimal,
    /// Fraction (0-1): willingness to loosen after good windows.
    pub aggressiveness: Decimal,
    /// Closed round trips per evaluation window.
    pub performance_window: u32,
    /// Minimum market time between adjustments, milliseconds.
    pub cooldown_ms: i64,
    /// Parameter changes per UTC day.
    pub max_daily_adjustments: u32,
    /// Negative outcomes in a row that disable it.
    pub auto_disable_after: u32,
    /// Bounds per parameter name (see [`param_names`]); unbounded parameters are not tuned.
    pub bounds: Vec<(&'static str, Decimal, Decimal)>,
}

/// A strategy resolved into numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveParams {
    /// Starting values of the tunable parameters.
    pub tunable: TunableParams,
    /// Fixed limits.
    pub risk: RiskLimits,
    /// Breaker limits.
    pub breakers: BreakerLimits,
    /// Autopilot settings.
    pub autopilot: AutopilotSettings,
}

fn d(v: i64) -> Decimal {
    Decimal::from(v)
}

fn opt(v: Option<DecimalString>) -> Option<Decimal> {
    v.map(DecimalString::get)
}

/// Preset values: (size %, stop %, take-profit %, threshold, max positions, max daily trades).
fn preset(mode: StrategyMode) -> Option<(i64, i64, i64, i64, u32, u32)> {
    match mode {
        StrategyMode::Conservative => Some((5, 2, 4, 70, 2, 10)),
        StrategyMode::Moderate => Some((10, 3, 6, 60, 3, 25)),
        StrategyMode::Aggressive => Some((25, 5, 12, 45, 5, 100)),
        StrategyMode::Custom => None,
    }
}

impl EffectiveParams {
    /// Resolve a (validated) strategy, with the account's kill-switch limits.
    ///
    /// Errors when an autopilot bound does not contain the preset-derived
    /// starting value (explicit values are already checked by `validate`).
    pub fn resolve(
        s: &StrategyConfigSpec,
        account_max_drawdown_pct: Option<Decimal>,
        account_daily_loss_pct: Option<Decimal>,
    ) -> Result<Self, String> {
        let i = Decimal::from(s.intel_level.clamp(1, 10));
        let size_mult = Decimal::new(5, 1) + Decimal::new(1, 1) * i;
        let stop_mult = Decimal::new(7, 1) + Decimal::new(6, 2) * i;
        let threshold_shift = d(3) * (d(5) - i);
        let r = &s.risk;
        let p = preset(s.mode);

        let max_position_size_pct = opt(r.max_position_size_pct)
            .or(p.map(|p| (d(p.0) * size_mult).min(Decimal::ONE_HUNDRED)))
            .unwrap_or(Decimal::ONE_HUNDRED);
        let stop_loss_pct = opt(r.stop_loss_pct).or(p.map(|p| d(p.1) * stop_mult));
        let take_profit_pct = opt(r.take_profit_pct).or(p.map(|p| d(p.2) * stop_mult));
        let confidence_threshold = opt(r.confidence_threshold)
            .or(p.map(|p| (d(p.3) + threshold_shift).clamp(Decimal::ZERO, Decimal::ONE_HUNDRED)))
            .unwrap_or(Decimal::ZERO);
        let tunable = TunableParams {
            max_position_size_pct: max_position_size_pct.normalize(),
            confidence_threshold: confidence_threshold.normalize(),
            stop_loss_pct: stop_loss_pct.map(|v| v.normalize()),
            take_profit_pct: take_profit_pct.map(|v| v.normalize()),
        };

        let tokens = s.tokens.clone().unwrap_or_default();
        let risk = RiskLimits {
            fixed_quantity: opt(r.fixed_quantity),
            trailing_stop_pct: opt(r.trailing_stop_pct),
            max_hold_ms: r.max_hold_time.map(|t| t.as_millis_i64()),
            max_daily_trades: r.max_daily_trades.or(p.map(|p| p.5)),
            max_concurrent_positions: r.max_concurrent_positions.or(p.map(|p| p.4)),
            max_slippage_pct: opt(r.max_slippage_pct),
            allow: tokens.allow,
            block: tokens.block,
        };

        let b = s.circuit_breakers.clone().unwrap_or_default();
        let breakers = resolve_breakers(&b, account_max_drawdown_pct, account_daily_loss_pct);
        let autopilot = resolve_autopilot(s.autopilot.as_ref(), &tunable)?;
        Ok(Self {
            tunable,
            risk,
            breakers,
            autopilot,
        })
    }
}

fn resolve_breakers(
    b: &CircuitBreakersSpec,
    account_max_drawdown_pct: Option<Decimal>,
    account_daily_loss_pct: Option<Decimal>,
) -> BreakerLimits {
    BreakerLimits {
        daily_loss_pct: opt(b.daily_loss_pct),
        max_drawdown_pct: opt(b.max_drawdown_pct),
        max_consecutive_failures: b.max_consecutive_failures,
        max_consecutive_losses: b.max_consecutive_losses,
        max_daily_trades: b.max_daily_trades,
        min_balance: opt(b.min_balance),
        max_invalid_ticks: b.max_invalid_ticks.unwrap_or(3),
        max_data_gap_ms: b.max_data_gap.map(|g| g.as_millis_i64()),
        cooldown_ms: b
            .cooldown
            .map(|c| c.as_millis_i64())
            .unwrap_or(15 * 60 * 1000),
        account_max_drawdown_pct,
        account_daily_loss_pct,
    }
}

fn resolve_autopilot(
    a: Option<&AutopilotSpec>,
    t: &TunableParams,
) -> Result<AutopilotSettings, String> {
    let a = a.cloned().unwrap_or_default();
    let mut bounds = Vec::new();
    let pairs: [(&'static str, Option<Bound>, Option<Decimal>); 4] = [
        (
            param_names::MAX_POSITION_SIZE_PCT,
            a.bounds.max_position_size_pct,
            Some(t.max_position_size_pct),
        ),
        (
            param_names::CONFIDENCE_THRESHOLD,
            a.bounds.confidence_threshold,
            Some(t.confidence_threshold),
        ),
        (
            param_names::STOP_LOSS_PCT,
            a.bounds.stop_loss_pct,
            t.stop_loss_pct,
        ),
        (
            param_names::TAKE_PROFIT_PCT,
            a.bounds.take_profit_pct,
            t.take_profit_pct,
        ),
    ];
    for (name, bound, start) in pairs {
        let Some(bound) = bound else { continue };
        match start {
            Some(v) if bound.contains(v) => bounds.push((name, bound.min.get(), bound.max.get())),
            Some(v) if a.enabled => {
                return Err(format!(
                    "spec.autopilot.bounds.{name}: [{}, {}] does not contain the starting value {v} \
                     (derived from mode and intelLevel); set spec.risk.{name} or widen the bounds",
                    bound.min, bound.max
                ));
            }
            None if a.enabled => {
                return Err(format!(
                    "spec.autopilot.bounds.{name}: bounds given but {name} is off; set spec.risk.{name}"
                ));
            }
            _ => {}
        }
    }
    Ok(AutopilotSettings {
        enabled: a.enabled,
        learning_rate: opt(a.learning_rate).unwrap_or(Decimal::new(1, 1)),
        aggressiveness: opt(a.aggressiveness).unwrap_or(Decimal::new(5, 1)),
        performance_window: a.performance_window.unwrap_or(10),
        cooldown_ms: a.cooldown.map(|c| c.as_millis_i64()).unwrap_or(3_600_000),
        max_daily_adjustments: a.max_daily_adjustments.unwrap_or(4),
        auto_disable_after: a.auto_disable_after.unwrap_or(3),
        bounds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> StrategyConfigSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn moderate_level_five_is_the_preset() {
        let p = EffectiveParams::resolve(&spec("signals: {rsi: {}}"), None, None).unwrap();
        assert_eq!(p.tunable.max_position_size_pct, d(10));
        assert_eq!(p.tunable.stop_loss_pct, Some(d(3)));
        assert_eq!(p.tunable.take_profit_pct, Some(d(6)));
        assert_eq!(p.tunable.confidence_threshold, d(60));
        assert_eq!(p.risk.max_concurrent_positions, Some(3));
    }

    #[test]
    fn intel_scales_presets_but_not_explicit_values() {
        let p = EffectiveParams::resolve(
            &spec("intelLevel: 10\nsignals: {rsi: {}}\nrisk: {stopLossPct: \"1.5\"}"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(p.tunable.max_position_size_pct, d(15));
        assert_eq!(p.tunable.stop_loss_pct, Some(Decimal::new(15, 1)));
        assert_eq!(p.tunable.take_profit_pct, Some(Decimal::new(78, 1)));
        assert_eq!(p.tunable.confidence_threshold, d(45));
        let p = EffectiveParams::resolve(&spec("intelLevel: 1\nsignals: {rsi: {}}"), None, None)
            .unwrap();
        assert_eq!(p.tunable.confidence_threshold, d(72));
        assert_eq!(p.tunable.max_position_size_pct, d(6));
    }

    #[test]
    fn custom_mode_turns_unset_exits_off() {
        let p = EffectiveParams::resolve(
            &spec("mode: Custom\nsignals: {rsi: {}}\nrisk: {fixedQuantity: \"0.1\"}"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(p.tunable.stop_loss_pct, None);
        assert_eq!(p.tunable.confidence_threshold, Decimal::ZERO);
        assert_eq!(p.risk.max_concurrent_positions, None);
    }

    #[test]
    fn autopilot_bounds_must_contain_preset_start() {
        let e = EffectiveParams::resolve(
            &spec(
                "signals: {rsi: {}}\nautopilot: {enabled: true, bounds: {stopLossPct: {min: \"4\", max: \"8\"}}}",
            ),
            None,
            None,
        )
        .unwrap_err();
        assert!(e.contains("spec.autopilot.bounds.stopLossPct"), "{e}");
    }
}
