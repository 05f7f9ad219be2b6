//! Autopilot: nudges the tunable parameters ([`TunableParams`]) after every
//! evaluation window of closed round trips, within bounds, and judges each
//! change after the next window.
//!
//! # Windows
//!
//! An evaluation window is `performance_window` consecutive closed round
//! trips (a window of 0 counts as 1). When a window completes its
//! [`WindowMetrics`] are computed (all rounded to 4 dp):
//! trades; win rate = round trips with pnl > 0 / trades × 100 (percent
//! 0-100); P&L = sum of pnl (quote currency); avg return = mean of
//! `return_pct` (percent); profit factor = gross profit / gross loss (`None`
//! when the window has no losing trip).
//!
//! # Judging earlier adjustments
//!
//! The adjustments made after one window form a *set*. At the completion of
//! the next window the set is judged: this window's avg return is compared
//! with the avg return of the window that led to the set
//! (`metrics_before`). Higher by more than [`OUTCOME_EPSILON_PCT`] (0.05
//! percentage points) → `Positive`; lower by more → `Negative`; otherwise
//! `Neutral`. One [`AdjustmentOutcomeRecord`] is pushed per adjustment of the
//! set, all with the same verdict. After `auto_disable_after` `Negative`
//! verdicts in a row (one verdict per judged set; a `Positive` or `Neutral`
//! verdict resets the run) the autopilot disables itself for the rest of the
//! session: nothing more is recorded and parameters no longer change.
//! `auto_disable_after = 0` never disables.
//!
//! # Adjusting
//!
//! Then, if enabled, no adjustment was made in the last `cooldown_ms`
//! milliseconds of market time, and fewer than `max_daily_adjustments`
//! parameter changes were made in the current UTC day, each *bounded*
//! parameter (bounds in [`AutopilotSettings::bounds`]; unbounded parameters,
//! and stop-loss/take-profit while off, never change) moves by
//! `step = learning_rate × (max − min)`:
//!
//! | window | maxPositionSizePct | confidenceThreshold | stopLossPct | takeProfitPct |
//! |---|---|---|---|---|
//! | poor: P&L < 0 or win rate < 50% → tighten | −step | +step | −step (tighter) | −step (take profit earlier) |
//! | good: P&L > 0 and win rate ≥ 50% → loosen | +a·step | −a·step | +a·step | +a·step |
//! | P&L = 0 and win rate ≥ 50% | — | — | — | — |
//!
//! where `a` = aggressiveness (0 never loosens). The new value is clamped into
//! `[min, max]` and rounded to 4 dp (toward the inside of the bounds when
//! rounding to nearest would leave them). A parameter whose value would not
//! change is skipped; parameters are visited in the order of the table and
//! adjusting stops as soon as the daily cap is reached, even mid-window. Each
//! change pushes one [`AdjustmentRecord`] (ids from 1) and counts toward the
//! cap; the cooldown restarts at the time of the set.
//!
//! Invariants (checked by a property test): every parameter stays within its
//! bounds, unbounded parameters never change, no UTC day sees more than
//! `max_daily_adjustments` records, and nothing is recorded after disabling.

use std::collections::{BTreeMap, VecDeque};

use paperbot_crds::{AdjustmentStatus, AutopilotStatus, DecimalString};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::ledger::records::{
    AdjustmentOutcomeRecord, AdjustmentRecord, Outcome, RoundTrip, WindowMetrics,
};
use crate::params::{AutopilotSettings, TunableParams, param_names};
use crate::types::Timestamp;

/// Dead band of the outcome verdict, percentage points of avg return per
/// round trip: 0.05.
pub const OUTCOME_EPSILON_PCT: Decimal = Decimal::from_parts(5, 0, 0, false, 2);

/// Adjustments shown in [`AutopilotStatus::recent_adjustments`].
const RECENT: usize = 10;

/// Decimal places of adjusted values and window metrics.
const DP: u32 = 4;

/// Tunable parameters in adjustment order, with the sign of a tightening move.
const PARAMS: [(&str, i8); 4] = [
    (param_names::MAX_POSITION_SIZE_PCT, -1),
    (param_names::CONFIDENCE_THRESHOLD, 1),
    (param_names::STOP_LOSS_PCT, -1),
    (param_names::TAKE_PROFIT_PCT, -1),
];

fn get(p: &TunableParams, i: usize) -> Option<Decimal> {
    match i {
        0 => Some(p.max_position_size_pct),
        1 => Some(p.confidence_threshold),
        2 => p.stop_loss_pct,
        _ => p.take_profit_pct,
    }
}

fn set(p: &mut TunableParams, i: usize, v: Decimal) {
    match i {
        0 => p.max_position_size_pct = v,
        1 => p.confidence_threshold = v,
        2 => p.stop_loss_pct = Some(v),
        _ => p.take_profit_pct = Some(v),
    }
}

/// `v` (already in `[min, max]`) rounded to [`DP`] places without leaving
/// the bounds; unrounded when no [`DP`]-place value lies within them.
fn round_within(v: Decimal, min: Decimal, max: Decimal) -> Decimal {
    let r = v.round_dp(DP);
    if (min..=max).contains(&r) {
        return r;
    }
    let down = v.round_dp_with_strategy(DP, RoundingStrategy::ToNegativeInfinity);
    if (min..=max).contains(&down) {
        return down;
    }
    let up = v.round_dp_with_strategy(DP, RoundingStrategy::ToPositiveInfinity);
    if (min..=max).contains(&up) {
        return up;
    }
    v
}

/// Running sums of the current window (saturating: a window of P&L beyond a
/// decimal's range stays at its largest value instead of overflowing).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct WindowSums {
    trades: u32,
    wins: u32,
    pnl: Decimal,
    returns: Decimal,
    gross_profit: Decimal,
    gross_loss: Decimal,
}

impl WindowSums {
    fn add(&mut self, rt: &RoundTrip) {
        self.trades = self.trades.saturating_add(1);
        self.pnl = self.pnl.saturating_add(rt.pnl);
        self.returns = self.returns.saturating_add(rt.return_pct);
        if rt.pnl > Decimal::ZERO {
            self.wins = self.wins.saturating_add(1);
            self.gross_profit = self.gross_profit.saturating_add(rt.pnl);
        } else if rt.pnl < Decimal::ZERO {
            self.gross_loss = self.gross_loss.saturating_sub(rt.pnl);
        }
    }

    fn metrics(&self) -> WindowMetrics {
        let n = Decimal::from(self.trades.max(1));
        WindowMetrics {
            trades: self.trades,
            win_rate_pct: (Decimal::from(self.wins) * Decimal::ONE_HUNDRED / n)
                .round_dp(DP)
                .normalize(),
            pnl: self.pnl.normalize(),
            avg_return_pct: (self.returns / n).round_dp(DP).normalize(),
            profit_factor: (!self.gross_loss.is_zero()).then(|| {
                self.gross_profit
                    .checked_div(self.gross_loss)
                    .unwrap_or(Decimal::MAX)
                    .round_dp(DP)
                    .normalize()
            }),
        }
    }
}

/// Adjustments of one window awaiting their verdict.
#[derive(Clone, Debug)]
struct Pending {
    first_id: u64,
    last_id: u64,
    before: WindowMetrics,
}

/// [`WindowMetrics`] in a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MetricsCheckpoint {
    pub trades: u32,
    pub win_rate_pct: Decimal,
    pub pnl: Decimal,
    pub avg_return_pct: Decimal,
    pub profit_factor: Option<Decimal>,
}

/// A pending set of adjustments in a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PendingCheckpoint {
    pub first_id: u64,
    pub last_id: u64,
    pub before: MetricsCheckpoint,
}

/// One of the recent adjustments in a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RecentCheckpoint {
    pub id: u64,
    pub status: AdjustmentStatus,
}

/// What a checkpoint keeps of the autopilot (its settings come from the
/// configuration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AutopilotCheckpoint {
    pub enabled: bool,
    pub params: TunableParams,
    pub window: WindowSums,
    pub pending: Option<PendingCheckpoint>,
    pub negative_run: u32,
    pub last_adjustment: Option<Timestamp>,
    pub day: i64,
    pub day_count: u32,
    pub next_id: u64,
    pub count: u32,
    pub recent: Vec<RecentCheckpoint>,
}

fn describe(m: &WindowMetrics) -> String {
    let pf = m
        .profit_factor
        .map_or_else(|| "n/a (no losses)".to_string(), |p| p.to_string());
    format!(
        "{} round trips, win rate {}%, P&L {}, avg return {}%, profit factor {pf}",
        m.trades, m.win_rate_pct, m.pnl, m.avg_return_pct
    )
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Positive => "Positive",
        Outcome::Neutral => "Neutral",
        Outcome::Negative => "Negative",
    }
}

/// The session's autopilot. See the [module docs](self) for the rules.
#[derive(Clone, Debug)]
pub struct Autopilot {
    enabled: bool,
    learning_rate: Decimal,
    aggressiveness: Decimal,
    window: u32,
    cooldown_ms: i64,
    max_daily: u32,
    auto_disable_after: u32,
    /// `(min, max)` per entry of [`PARAMS`].
    bounds: [Option<(Decimal, Decimal)>; 4],
    params: TunableParams,
    sums: WindowSums,
    pending: Option<Pending>,
    negative_run: u32,
    last_adjustment: Option<Timestamp>,
    /// UTC day of `day_count`.
    day: i64,
    day_count: u32,
    next_id: u64,
    count: u32,
    /// Newest last; ids alongside for the outcome update.
    recent: VecDeque<(u64, AdjustmentStatus)>,
}

impl Autopilot {
    /// An autopilot starting from `start` (whose bounded values should lie in
    /// their bounds; one that does not is clamped in at its first adjustment).
    pub fn new(settings: &AutopilotSettings, start: TunableParams) -> Self {
        let mut bounds = [None; 4];
        for &(name, min, max) in &settings.bounds {
            if let Some(i) = PARAMS.iter().position(|(n, _)| *n == name) {
                bounds[i] = Some((min.min(max), max.max(min)));
            }
        }
        Self {
            enabled: settings.enabled,
            learning_rate: settings.learning_rate,
            aggressiveness: settings.aggressiveness,
            window: settings.performance_window.max(1),
            cooldown_ms: settings.cooldown_ms,
            max_daily: settings.max_daily_adjustments,
            auto_disable_after: settings.auto_disable_after,
            bounds,
            params: start,
            sums: WindowSums::default(),
            pending: None,
            negative_run: 0,
            last_adjustment: None,
            day: i64::MIN,
            day_count: 0,
            next_id: 1,
            count: 0,
            recent: VecDeque::with_capacity(RECENT),
        }
    }

    /// Everything that decides future adjustments, verdicts and status.
    pub(crate) fn checkpoint(&self) -> AutopilotCheckpoint {
        let metrics = |m: &WindowMetrics| MetricsCheckpoint {
            trades: m.trades,
            win_rate_pct: m.win_rate_pct,
            pnl: m.pnl,
            avg_return_pct: m.avg_return_pct,
            profit_factor: m.profit_factor,
        };
        AutopilotCheckpoint {
            enabled: self.enabled,
            params: self.params.clone(),
            window: self.sums.clone(),
            pending: self.pending.as_ref().map(|p| PendingCheckpoint {
                first_id: p.first_id,
                last_id: p.last_id,
                before: metrics(&p.before),
            }),
            negative_run: self.negative_run,
            last_adjustment: self.last_adjustment,
            day: self.day,
            day_count: self.day_count,
            next_id: self.next_id,
            count: self.count,
            recent: self
                .recent
                .iter()
                .map(|(id, status)| RecentCheckpoint {
                    id: *id,
                    status: status.clone(),
                })
                .collect(),
        }
    }

    /// The autopilot for `settings` in the state of a checkpoint: ids
    /// consistent (`count = next_id − 1`, a pending set among the ids
    /// given), at most 10 recent adjustments, enabled only when the settings
    /// enable it.
    pub(crate) fn restore(
        settings: &AutopilotSettings,
        cp: AutopilotCheckpoint,
    ) -> Result<Self, String> {
        let mut a = Self::new(settings, cp.params);
        if cp.enabled && !settings.enabled {
            return Err(
                "autopilot.enabled is true but the autopilot is not enabled in the strategy".into(),
            );
        }
        if cp.next_id == 0 || u64::from(cp.count) != cp.next_id - 1 {
            return Err(format!(
                "autopilot.count {} does not match autopilot.nextId {} (expected count = nextId - 1)",
                cp.count, cp.next_id
            ));
        }
        if let Some(p) = &cp.pending
            && (p.first_id == 0 || p.first_id > p.last_id || p.last_id >= cp.next_id)
        {
            return Err(format!(
                "autopilot.pending ids {}..={} are not among the adjustments made (1..{})",
                p.first_id, p.last_id, cp.next_id
            ));
        }
        if cp.recent.len() > RECENT {
            return Err(format!(
                "autopilot.recent has {} entries, at most {RECENT} are kept",
                cp.recent.len()
            ));
        }
        if cp.window.trades >= a.window {
            return Err(format!(
                "autopilot.window has {} round trips, a full window is {} (it is evaluated then)",
                cp.window.trades, a.window
            ));
        }
        a.enabled = cp.enabled;
        a.sums = cp.window;
        a.pending = cp.pending.map(|p| Pending {
            first_id: p.first_id,
            last_id: p.last_id,
            before: WindowMetrics {
                trades: p.before.trades,
                win_rate_pct: p.before.win_rate_pct,
                pnl: p.before.pnl,
                avg_return_pct: p.before.avg_return_pct,
                profit_factor: p.before.profit_factor,
            },
        });
        a.negative_run = cp.negative_run;
        a.last_adjustment = cp.last_adjustment;
        a.day = cp.day;
        a.day_count = cp.day_count;
        a.next_id = cp.next_id;
        a.count = cp.count;
        a.recent = cp.recent.into_iter().map(|r| (r.id, r.status)).collect();
        Ok(a)
    }

    /// Take a reloaded strategy: `new` settings and the strategy's new
    /// starting parameters `new_start` (`old`, `old_start`: those it ran
    /// with). Returns whether the effective parameters changed.
    ///
    /// - A parameter the new strategy starts at another value, or that the
    ///   new settings do not bound (the autopilot no longer tunes it), takes
    ///   its new starting value: the user's edit wins. Any other parameter
    ///   keeps its tuned value, clamped into its new bounds.
    /// - When the autopilot settings changed, `enabled` follows the new
    ///   settings and the run of negative verdicts restarts (a self-disabled
    ///   autopilot is re-armed by editing its settings); otherwise its state,
    ///   including a self-disable, is kept.
    /// - The evaluation window restarts and a set of adjustments awaiting its
    ///   verdict is dropped without one (a verdict compares two windows
    ///   traded under the same strategy); those adjustments stay recorded
    ///   with no outcome.
    /// - The daily cap, the cooldown, the ids and the history are kept, so a
    ///   reload never allows more adjustments in a day than the cap.
    pub fn reconfigure(
        &mut self,
        old: &AutopilotSettings,
        new: &AutopilotSettings,
        old_start: &TunableParams,
        new_start: &TunableParams,
    ) -> bool {
        let fresh = Self::new(new, new_start.clone());
        let mut params = self.params.clone();
        for i in 0..PARAMS.len() {
            let value = match (fresh.bounds[i], get(new_start, i) == get(old_start, i)) {
                (Some((min, max)), true) => get(&params, i).map(|v| v.clamp(min, max)),
                _ => get(new_start, i),
            };
            match (i, value) {
                (2, None) => params.stop_loss_pct = None,
                (3, None) => params.take_profit_pct = None,
                (_, Some(v)) => set(&mut params, i, v),
                _ => {}
            }
        }
        let changed = params != self.params;
        if old != new {
            self.enabled = new.enabled;
            self.negative_run = 0;
        }
        self.learning_rate = fresh.learning_rate;
        self.aggressiveness = fresh.aggressiveness;
        self.window = fresh.window;
        self.cooldown_ms = fresh.cooldown_ms;
        self.max_daily = fresh.max_daily;
        self.auto_disable_after = fresh.auto_disable_after;
        self.bounds = fresh.bounds;
        self.params = params;
        self.sums = WindowSums::default();
        self.pending = None;
        changed
    }

    /// The current (effective) parameters; the engine reads them before each
    /// decision.
    pub fn params(&self) -> &TunableParams {
        &self.params
    }

    /// Whether it still adjusts: false when never enabled or after it
    /// disabled itself.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Parameter changes made so far.
    pub fn adjustment_count(&self) -> u32 {
        self.count
    }

    /// Feed each closed round trip, at market time `now`. When it completes a
    /// window this judges the pending set (pushing `outcomes`), then may
    /// change [`Autopilot::params`] (pushing `adjustments`). Does nothing
    /// once disabled.
    pub fn on_round_trip(
        &mut self,
        now: Timestamp,
        rt: &RoundTrip,
        adjustments: &mut Vec<AdjustmentRecord>,
        outcomes: &mut Vec<AdjustmentOutcomeRecord>,
    ) {
        if !self.enabled {
            return;
        }
        self.sums.add(rt);
        if self.sums.trades < self.window {
            return;
        }
        let metrics = std::mem::take(&mut self.sums).metrics();

        if let Some(p) = self.pending.take() {
            self.judge(now, p, &metrics, outcomes);
            if !self.enabled {
                return;
            }
        }
        self.adjust(now, metrics, adjustments);
    }

    fn judge(
        &mut self,
        now: Timestamp,
        p: Pending,
        after: &WindowMetrics,
        outcomes: &mut Vec<AdjustmentOutcomeRecord>,
    ) {
        let diff = after.avg_return_pct.saturating_sub(p.before.avg_return_pct);
        let outcome = if diff > OUTCOME_EPSILON_PCT {
            Outcome::Positive
        } else if diff < -OUTCOME_EPSILON_PCT {
            Outcome::Negative
        } else {
            Outcome::Neutral
        };
        for id in p.first_id..=p.last_id {
            outcomes.push(AdjustmentOutcomeRecord {
                id,
                time: now,
                outcome,
                metrics_after: after.clone(),
            });
        }
        for (id, s) in &mut self.recent {
            if (p.first_id..=p.last_id).contains(id) {
                s.outcome = Some(outcome_name(outcome).to_string());
            }
        }
        if outcome == Outcome::Negative {
            self.negative_run = self.negative_run.saturating_add(1);
            if self.auto_disable_after > 0 && self.negative_run >= self.auto_disable_after {
                self.enabled = false;
            }
        } else {
            self.negative_run = 0;
        }
    }

    fn adjust(
        &mut self,
        now: Timestamp,
        m: WindowMetrics,
        adjustments: &mut Vec<AdjustmentRecord>,
    ) {
        if let Some(last) = self.last_adjustment
            && now.millis().saturating_sub(last.millis()) < self.cooldown_ms
        {
            return;
        }
        let today = now.utc_day();
        if today != self.day {
            self.day = today;
            self.day_count = 0;
        }
        let fifty = Decimal::from(50);
        let poor = m.pnl < Decimal::ZERO || m.win_rate_pct < fifty;
        let good = m.pnl > Decimal::ZERO && m.win_rate_pct >= fifty;
        if !poor && !good {
            return;
        }
        let first_id = self.next_id;
        for (i, &(name, tighten_sign)) in PARAMS.iter().enumerate() {
            if self.day_count >= self.max_daily {
                break;
            }
            let (Some((min, max)), Some(old)) = (self.bounds[i], get(&self.params, i)) else {
                continue;
            };
            // Bounds are percents (at most types::MAX_PCT); saturating all the same.
            let step = self.learning_rate.saturating_mul(max.saturating_sub(min));
            let (delta, how) = if poor {
                (step * Decimal::from(tighten_sign), "tighten")
            } else {
                (
                    -(self.aggressiveness.saturating_mul(step)) * Decimal::from(tighten_sign),
                    "loosen",
                )
            };
            let new = round_within(old.saturating_add(delta).clamp(min, max), min, max);
            if new == old {
                continue;
            }
            let new = new.normalize();
            let step_text = if poor {
                format!(
                    "step {} = learning rate {} × range",
                    delta.abs().normalize(),
                    self.learning_rate.normalize()
                )
            } else {
                format!(
                    "step {} = aggressiveness {} × learning rate {} × range",
                    delta.abs().normalize(),
                    self.aggressiveness.normalize(),
                    self.learning_rate.normalize()
                )
            };
            let quality = if poor {
                "poor window (P&L < 0 or win rate < 50%)"
            } else {
                "good window (P&L > 0 and win rate >= 50%)"
            };
            let reason = format!(
                "{quality}: {}; {how} {name} {} → {new} ({step_text} [{}, {}])",
                describe(&m),
                old.normalize(),
                min.normalize(),
                max.normalize()
            );
            let rec = AdjustmentRecord {
                id: self.next_id,
                time: now,
                parameter: name.to_string(),
                old_value: old,
                new_value: new,
                reason,
                metrics_before: m.clone(),
            };
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back((
                rec.id,
                AdjustmentStatus {
                    time: now.to_rfc3339(),
                    parameter: rec.parameter.clone(),
                    old_value: DecimalString(old),
                    new_value: DecimalString(new),
                    reason: rec.reason.clone(),
                    outcome: None,
                },
            ));
            adjustments.push(rec);
            set(&mut self.params, i, new);
            self.next_id += 1;
            self.count += 1;
            self.day_count += 1;
        }
        if self.next_id > first_id {
            self.last_adjustment = Some(now);
            self.pending = Some(Pending {
                first_id,
                last_id: self.next_id - 1,
                before: m,
            });
        }
    }

    /// For `BotSession.status.autopilot`: enabled, the effective parameters
    /// (camelCase name → value; stop-loss/take-profit only when on), the
    /// adjustment count and the last 10 adjustments, newest last, with their
    /// outcome (`Positive`/`Neutral`/`Negative`, absent while pending).
    pub fn status(&self) -> AutopilotStatus {
        let effective_parameters: BTreeMap<String, DecimalString> = PARAMS
            .iter()
            .enumerate()
            .filter_map(|(i, (name, _))| {
                get(&self.params, i).map(|v| (name.to_string(), DecimalString(v)))
            })
            .collect();
        AutopilotStatus {
            enabled: self.enabled,
            effective_parameters,
            adjustment_count: self.count,
            recent_adjustments: self.recent.iter().map(|(_, s)| s.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    use super::*;
    use crate::ledger::records::FillReason;

    /// 2022-01-01T00:00:00Z.
    const T0: i64 = 1_640_995_200_000;
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;

    fn t(minutes: i64) -> Timestamp {
        Timestamp(T0 + minutes * MIN)
    }

    fn settings() -> AutopilotSettings {
        AutopilotSettings {
            enabled: true,
            learning_rate: dec!(0.1),
            aggressiveness: dec!(0.5),
            performance_window: 2,
            cooldown_ms: HOUR,
            max_daily_adjustments: 10,
            auto_disable_after: 2,
            bounds: vec![
                (param_names::MAX_POSITION_SIZE_PCT, dec!(5), dec!(15)),
                (param_names::CONFIDENCE_THRESHOLD, dec!(50), dec!(70)),
                (param_names::STOP_LOSS_PCT, dec!(1), dec!(5)),
            ],
        }
    }

    fn start() -> TunableParams {
        TunableParams {
            max_position_size_pct: dec!(10),
            confidence_threshold: dec!(60),
            stop_loss_pct: Some(dec!(3)),
            take_profit_pct: Some(dec!(6)),
        }
    }

    fn rt(pnl: Decimal, ret: Decimal) -> RoundTrip {
        RoundTrip {
            symbol: "BTCUSDT".into(),
            entry_time: Timestamp(T0),
            entry_price: dec!(100),
            exit_time: Timestamp(T0),
            exit_price: dec!(100),
            quantity: Decimal::ONE,
            pnl,
            fees: Decimal::ZERO,
            return_pct: ret,
            exit_reason: FillReason::Signal,
        }
    }

    /// Feeds a window of `(pnl, return %)` at `now`; returns what it recorded.
    fn window(
        ap: &mut Autopilot,
        now: Timestamp,
        trips: &[(Decimal, Decimal)],
    ) -> (Vec<AdjustmentRecord>, Vec<AdjustmentOutcomeRecord>) {
        let (mut a, mut o) = (Vec::new(), Vec::new());
        for &(pnl, ret) in trips {
            ap.on_round_trip(now, &rt(pnl, ret), &mut a, &mut o);
        }
        (a, o)
    }

    fn changes(a: &[AdjustmentRecord]) -> Vec<(u64, &str, Decimal, Decimal)> {
        a.iter()
            .map(|r| (r.id, r.parameter.as_str(), r.old_value, r.new_value))
            .collect()
    }

    const POOR: [(Decimal, Decimal); 2] = [(dec!(-10), dec!(-1)), (dec!(-20), dec!(-2))];

    #[test]
    fn a_restored_autopilot_continues_identically_and_damage_is_refused() {
        let mut a = Autopilot::new(&settings(), start());
        window(&mut a, t(0), &POOR); // adjusts: a set awaits its verdict
        window(&mut a, t(120), &POOR[..1]); // half a window open
        let cp = a.checkpoint();
        assert!(cp.pending.is_some() && cp.window.trades == 1);
        let json = serde_json::to_string(&cp).unwrap();
        let mut b = Autopilot::restore(&settings(), serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(b.status(), a.status());
        let good = [
            (dec!(30), dec!(3)),
            (dec!(10), dec!(1)),
            (dec!(5), dec!(0.5)),
        ];
        for (i, w) in [&POOR[1..], &good[..2], &good[1..], &POOR[..]]
            .iter()
            .enumerate()
        {
            let at = t(300 + 200 * i as i64);
            assert_eq!(window(&mut a, at, w), window(&mut b, at, w), "window {i}");
        }
        assert_eq!(a.params(), b.params());
        assert!(a.adjustment_count() > 3);

        let refused = |f: &dyn Fn(&mut AutopilotCheckpoint)| {
            let mut bad = cp.clone();
            f(&mut bad);
            Autopilot::restore(&settings(), bad).unwrap_err()
        };
        assert!(refused(&|c| c.count += 1).contains("does not match autopilot.nextId"));
        assert!(
            refused(&|c| c.pending.as_mut().unwrap().last_id = 99)
                .contains("autopilot.pending ids")
        );
        assert!(refused(&|c| c.window.trades = 2).contains("a full window is 2"));
        let off = AutopilotSettings {
            enabled: false,
            ..settings()
        };
        assert!(
            Autopilot::restore(&off, cp.clone())
                .unwrap_err()
                .contains("not enabled")
        );
    }

    #[test]
    fn a_reload_keeps_tuned_values_the_user_did_not_edit() {
        let mut a = Autopilot::new(&settings(), start());
        let (adj, _) = window(&mut a, t(0), &POOR); // tightens size, threshold, stop
        assert_eq!(adj.len(), 3);
        let tuned = a.params().clone();
        assert_eq!(tuned.max_position_size_pct, dec!(9));
        assert!(
            a.status()
                .recent_adjustments
                .iter()
                .all(|r| r.outcome.is_none())
        );
        window(&mut a, t(200), &POOR[..1]); // half a window
        // The user edits the stop-loss start and narrows the size bounds.
        let new_settings = AutopilotSettings {
            bounds: vec![
                (param_names::MAX_POSITION_SIZE_PCT, dec!(9.5), dec!(12)),
                (param_names::CONFIDENCE_THRESHOLD, dec!(50), dec!(70)),
                (param_names::STOP_LOSS_PCT, dec!(1), dec!(5)),
            ],
            ..settings()
        };
        let new_start = TunableParams {
            stop_loss_pct: Some(dec!(2)),
            ..start()
        };
        assert!(a.reconfigure(&settings(), &new_settings, &start(), &new_start));
        let p = a.params();
        assert_eq!(
            p.max_position_size_pct,
            dec!(9.5),
            "tuned 9, clamped into [9.5, 12]"
        );
        assert_eq!(p.confidence_threshold, tuned.confidence_threshold, "kept");
        assert_eq!(p.stop_loss_pct, Some(dec!(2)), "edited: the new start wins");
        assert_eq!(p.take_profit_pct, Some(dec!(6)), "unbounded: the start");
        let cp = a.checkpoint();
        assert!(
            cp.pending.is_none() && cp.window.trades == 0,
            "a fresh window"
        );
        assert_eq!(cp.count, 3, "history kept");
        // It restores under the new settings and keeps adjusting from there.
        let mut b = Autopilot::restore(&new_settings, cp).unwrap();
        assert_eq!(window(&mut a, t(400), &POOR), window(&mut b, t(400), &POOR));
        // Disabled by the new settings: nothing more changes.
        let off = AutopilotSettings {
            enabled: false,
            ..new_settings.clone()
        };
        let before = a.params().clone();
        assert!(!a.reconfigure(&new_settings, &off, &new_start, &new_start));
        assert!(!a.enabled());
        assert!(window(&mut a, t(900), &POOR).0.is_empty());
        assert_eq!(a.params(), &before);
    }

    #[test]
    fn extreme_returns_saturate_instead_of_overflowing() {
        let mut ap = Autopilot::new(&settings(), start());
        let huge = [(Decimal::MAX, Decimal::MAX), (Decimal::MAX, Decimal::MAX)];
        let (a, _) = window(&mut ap, t(0), &huge);
        assert!(!a.is_empty(), "a good window loosens");
        let low = [(Decimal::MIN, Decimal::MIN), (Decimal::MIN, Decimal::MIN)];
        let (_, o) = window(&mut ap, t(120), &low);
        assert!(o.iter().all(|x| x.outcome == Outcome::Negative), "{o:?}");
    }

    #[test]
    fn tightens_after_a_poor_window_then_loosens_after_a_good_one() {
        let mut ap = Autopilot::new(&settings(), start());
        let (a, o) = window(&mut ap, t(0), &POOR[..1]);
        assert!(a.is_empty() && o.is_empty(), "window not complete yet");

        let (a, o) = window(&mut ap, t(1), &POOR[1..]);
        assert!(o.is_empty());
        assert_eq!(
            changes(&a),
            [
                (1, "maxPositionSizePct", dec!(10), dec!(9)),
                (2, "confidenceThreshold", dec!(60), dec!(62)),
                (3, "stopLossPct", dec!(3), dec!(2.6)),
            ]
        );
        let before = WindowMetrics {
            trades: 2,
            win_rate_pct: dec!(0),
            pnl: dec!(-30),
            avg_return_pct: dec!(-1.5),
            profit_factor: Some(dec!(0)),
        };
        assert_eq!(a[0].metrics_before, before);
        assert_eq!(a[0].time, t(1));
        assert_eq!(
            a[0].reason,
            "poor window (P&L < 0 or win rate < 50%): 2 round trips, win rate 0%, P&L -30, \
             avg return -1.5%, profit factor 0; tighten maxPositionSizePct 10 → 9 \
             (step 1 = learning rate 0.1 × range [5, 15])"
        );
        assert_eq!(
            ap.params(),
            &TunableParams {
                max_position_size_pct: dec!(9),
                confidence_threshold: dec!(62),
                stop_loss_pct: Some(dec!(2.6)),
                take_profit_pct: Some(dec!(6)),
            }
        );

        let (a, o) = window(&mut ap, t(120), &[(dec!(30), dec!(1)), (dec!(10), dec!(3))]);
        let after = WindowMetrics {
            trades: 2,
            win_rate_pct: dec!(100),
            pnl: dec!(40),
            avg_return_pct: dec!(2),
            profit_factor: None,
        };
        assert_eq!(
            o,
            (1..=3)
                .map(|id| AdjustmentOutcomeRecord {
                    id,
                    time: t(120),
                    outcome: Outcome::Positive,
                    metrics_after: after.clone(),
                })
                .collect::<Vec<_>>()
        );
        assert_eq!(
            changes(&a),
            [
                (4, "maxPositionSizePct", dec!(9), dec!(9.5)),
                (5, "confidenceThreshold", dec!(62), dec!(61)),
                (6, "stopLossPct", dec!(2.6), dec!(2.8)),
            ]
        );
        assert_eq!(
            a[2].reason,
            "good window (P&L > 0 and win rate >= 50%): 2 round trips, win rate 100%, P&L 40, \
             avg return 2%, profit factor n/a (no losses); loosen stopLossPct 2.6 → 2.8 \
             (step 0.2 = aggressiveness 0.5 × learning rate 0.1 × range [1, 5])"
        );
        assert_eq!(ap.adjustment_count(), 6);

        let st = ap.status();
        assert!(st.enabled);
        assert_eq!(st.adjustment_count, 6);
        let eff: Vec<_> = st
            .effective_parameters
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_string()))
            .collect();
        assert_eq!(
            eff,
            [
                ("confidenceThreshold", "61".to_string()),
                ("maxPositionSizePct", "9.5".to_string()),
                ("stopLossPct", "2.8".to_string()),
                ("takeProfitPct", "6".to_string()),
            ]
        );
        let outcomes: Vec<_> = st
            .recent_adjustments
            .iter()
            .map(|r| r.outcome.as_deref())
            .collect();
        assert_eq!(
            outcomes,
            [
                Some("Positive"),
                Some("Positive"),
                Some("Positive"),
                None,
                None,
                None
            ]
        );
        assert_eq!(st.recent_adjustments[3].time, "2022-01-01T02:00:00Z");
    }

    #[test]
    fn outcome_judged_after_the_next_window_and_cooldown_respected() {
        let mut ap = Autopilot::new(&settings(), start());
        let (a, _) = window(&mut ap, t(0), &POOR);
        assert_eq!(a.len(), 3);
        // 30 minutes later (cooldown 1h): judged (avg -1.51 vs -1.5: within
        // 0.05 → Neutral), but no new adjustment.
        let (a, o) = window(
            &mut ap,
            t(30),
            &[(dec!(-1), dec!(-1.52)), (dec!(-1), dec!(-1.5))],
        );
        assert!(a.is_empty());
        assert_eq!(o.len(), 3);
        assert!(o.iter().all(|r| r.outcome == Outcome::Neutral));
        assert_eq!(ap.params().max_position_size_pct, dec!(9));
        // At exactly 1h the cooldown has passed; nothing is pending any more.
        let (a, o) = window(&mut ap, t(60), &POOR);
        assert!(o.is_empty());
        assert_eq!(
            changes(&a),
            [
                (4, "maxPositionSizePct", dec!(9), dec!(8)),
                (5, "confidenceThreshold", dec!(62), dec!(64)),
                (6, "stopLossPct", dec!(2.6), dec!(2.2)),
            ]
        );
        // Judged against the window that led to it: -1.5 → -3.5 is Negative.
        let (_, o) = window(
            &mut ap,
            t(61),
            &[(dec!(-1), dec!(-3)), (dec!(-1), dec!(-4))],
        );
        assert_eq!(
            o.iter().map(|r| (r.id, r.outcome)).collect::<Vec<_>>(),
            [
                (4, Outcome::Negative),
                (5, Outcome::Negative),
                (6, Outcome::Negative)
            ]
        );
    }

    #[test]
    fn disables_itself_after_n_negative_verdicts_in_a_row() {
        let s = AutopilotSettings {
            cooldown_ms: 0,
            ..settings()
        };
        let mut ap = Autopilot::new(&s, start());
        let lose = |r: Decimal| [(dec!(-1), r), (dec!(-1), r)];
        let (a, _) = window(&mut ap, t(0), &lose(dec!(-1)));
        assert_eq!(a.len(), 3);
        let (a, o) = window(&mut ap, t(1), &lose(dec!(-2)));
        assert!(o.iter().all(|r| r.outcome == Outcome::Negative));
        assert_eq!(a.len(), 3, "one negative verdict: still adjusting");
        assert!(ap.enabled());
        let params = ap.params().clone();

        let (a, o) = window(&mut ap, t(2), &lose(dec!(-3)));
        assert_eq!(o.len(), 3, "the second set is still judged");
        assert!(o.iter().all(|r| r.outcome == Outcome::Negative));
        assert!(a.is_empty());
        assert!(!ap.enabled());
        assert!(!ap.status().enabled);
        assert_eq!(ap.params(), &params);

        for m in 3..10 {
            let (a, o) = window(&mut ap, t(m * 24 * 60), &lose(dec!(5)));
            assert!(a.is_empty() && o.is_empty());
        }
        assert_eq!(ap.adjustment_count(), 6);
    }

    #[test]
    fn a_non_negative_verdict_resets_the_negative_run() {
        let s = AutopilotSettings {
            cooldown_ms: 0,
            ..settings()
        };
        let mut ap = Autopilot::new(&s, start());
        let lose = |r: Decimal| [(dec!(-1), r), (dec!(-1), r)];
        window(&mut ap, t(0), &lose(dec!(-1)));
        window(&mut ap, t(1), &lose(dec!(-2))); // negative (1)
        let (_, o) = window(&mut ap, t(2), &lose(dec!(-1.98))); // neutral
        assert!(o.iter().all(|r| r.outcome == Outcome::Neutral));
        window(&mut ap, t(3), &lose(dec!(-3))); // negative (1)
        assert!(ap.enabled());
    }

    #[test]
    fn daily_cap_counts_parameter_changes_per_utc_day() {
        let s = AutopilotSettings {
            cooldown_ms: 0,
            max_daily_adjustments: 2,
            ..settings()
        };
        let mut ap = Autopilot::new(&s, start());
        let (a, _) = window(&mut ap, t(0), &POOR);
        assert_eq!(
            changes(&a),
            [
                (1, "maxPositionSizePct", dec!(10), dec!(9)),
                (2, "confidenceThreshold", dec!(60), dec!(62)),
            ],
            "the cap stops mid-window"
        );
        let (a, o) = window(&mut ap, t(23 * 60 + 59), &POOR);
        assert!(a.is_empty());
        assert_eq!(o.len(), 2);
        let (a, _) = window(&mut ap, t(24 * 60), &POOR);
        assert_eq!(
            changes(&a),
            [
                (3, "maxPositionSizePct", dec!(9), dec!(8)),
                (4, "confidenceThreshold", dec!(62), dec!(64)),
            ]
        );
    }

    #[test]
    fn clamps_to_bounds_skips_unchanged_and_zero_aggressiveness_never_loosens() {
        let s = AutopilotSettings {
            cooldown_ms: 0,
            learning_rate: dec!(1),
            aggressiveness: dec!(0),
            ..settings()
        };
        let mut ap = Autopilot::new(&s, start());
        let (a, _) = window(&mut ap, t(0), &POOR);
        assert_eq!(
            changes(&a),
            [
                (1, "maxPositionSizePct", dec!(10), dec!(5)),
                (2, "confidenceThreshold", dec!(60), dec!(70)),
                (3, "stopLossPct", dec!(3), dec!(1)),
            ]
        );
        // Already at the tight ends: nothing changes, nothing recorded.
        let (a, o) = window(&mut ap, t(1), &POOR);
        assert!(a.is_empty());
        assert_eq!(o.len(), 3);
        let (a, _) = window(&mut ap, t(2), &[(dec!(5), dec!(1)), (dec!(5), dec!(1))]);
        assert!(a.is_empty(), "aggressiveness 0 never loosens");
        assert_eq!(ap.params().take_profit_pct, Some(dec!(6)), "unbounded");
    }

    #[test]
    fn disabled_autopilot_does_nothing() {
        let s = AutopilotSettings {
            enabled: false,
            ..settings()
        };
        let mut ap = Autopilot::new(&s, start());
        let (a, o) = window(&mut ap, t(0), &POOR);
        assert!(a.is_empty() && o.is_empty());
        assert!(!ap.enabled());
        assert_eq!(ap.params(), &start());
    }

    #[test]
    fn rounding_to_four_places_stays_within_bounds() {
        assert_eq!(
            round_within(dec!(0.16666667), dec!(0), dec!(1)),
            dec!(0.1667)
        );
        assert_eq!(
            round_within(dec!(1.00007), dec!(0), dec!(1.00007)),
            dec!(1.0000)
        );
        assert_eq!(
            round_within(dec!(0.00003), dec!(0.00003), dec!(1)),
            dec!(0.0001)
        );
        // No 4-place value inside: kept exact.
        assert_eq!(
            round_within(dec!(0.00003), dec!(0.00002), dec!(0.00004)),
            dec!(0.00003)
        );
    }

    // ---- property test ----

    /// A decimal with 2 places from `cents`.
    fn d2(cents: i64) -> Decimal {
        Decimal::new(cents, 2)
    }

    fn bound_strategy() -> impl Strategy<Value = Option<(Decimal, Decimal, Decimal)>> {
        // (min, max, start) with min <= start <= max.
        prop::option::of(
            (0i64..10_000, 0i64..5_000, 0u32..=100).prop_map(|(lo, span, at)| {
                let (min, max) = (d2(lo), d2(lo + span));
                let start = d2(lo + span * i64::from(at) / 100);
                (min, max, start)
            }),
        )
    }

    #[derive(Debug, Clone)]
    struct Session {
        settings: AutopilotSettings,
        start: TunableParams,
        /// (time step ms, pnl cents, return pct cents)
        trips: Vec<(i64, i64, i64)>,
    }

    fn session_strategy() -> impl Strategy<Value = Session> {
        (
            [
                bound_strategy(),
                bound_strategy(),
                bound_strategy(),
                bound_strategy(),
            ],
            [any::<bool>(), any::<bool>()],
            [0i64..10_000, 0i64..10_000, 1i64..2_000, 1i64..4_000],
            (1i64..=100, 0i64..=100, 1u32..=20),
            (0i64..=6 * HOUR, 1u32..=10, 1u32..=5),
            prop::collection::vec(
                (0i64..=3 * HOUR, -100_000i64..100_000, -2_000i64..2_000),
                0..400,
            ),
        )
            .prop_map(|(b, on, free, (lr, ag, win), (cd, cap, dis), trips)| {
                // Unbounded parameters start anywhere; stop/take-profit may be off.
                let val = |i: usize| b[i].map_or(d2(free[i]), |x| x.2);
                let start = TunableParams {
                    max_position_size_pct: val(0),
                    confidence_threshold: val(1),
                    stop_loss_pct: (on[0] || b[2].is_some()).then(|| val(2)),
                    take_profit_pct: (on[1] || b[3].is_some()).then(|| val(3)),
                };
                let bounds = PARAMS
                    .iter()
                    .zip(b)
                    .filter_map(|((name, _), b)| b.map(|(lo, hi, _)| (*name, lo, hi)))
                    .collect();
                Session {
                    settings: AutopilotSettings {
                        enabled: true,
                        learning_rate: d2(lr),
                        aggressiveness: d2(ag),
                        performance_window: win,
                        cooldown_ms: cd,
                        max_daily_adjustments: cap,
                        auto_disable_after: dis,
                        bounds,
                    },
                    start,
                    trips,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn autopilot_invariants_hold_over_random_sessions(s in session_strategy()) {
            let mut ap = Autopilot::new(&s.settings, s.start.clone());
            let bound = |i: usize| {
                s.settings.bounds.iter().find(|b| b.0 == PARAMS[i].0).map(|b| (b.1, b.2))
            };
            let mut now = T0 + 7 * HOUR;
            let mut per_day: HashMap<i64, u32> = HashMap::new();
            let mut last_id = 0;
            let mut was_disabled = false;
            for &(step, pnl, ret) in &s.trips {
                now += step;
                let (mut a, mut o) = (Vec::new(), Vec::new());
                ap.on_round_trip(Timestamp(now), &rt(d2(pnl), d2(ret)), &mut a, &mut o);
                if was_disabled {
                    prop_assert!(a.is_empty() && o.is_empty(), "recorded after disabling");
                }
                if !ap.enabled() {
                    // The verdict that disables it comes before adjusting.
                    prop_assert!(a.is_empty(), "adjusted in the window that disabled it");
                }
                for r in &a {
                    last_id += 1;
                    prop_assert_eq!(r.id, last_id);
                    prop_assert_eq!(r.time, Timestamp(now));
                    prop_assert_ne!(r.old_value, r.new_value);
                    let c = per_day.entry(Timestamp(now).utc_day()).or_default();
                    *c += 1;
                    prop_assert!(*c <= s.settings.max_daily_adjustments,
                        "{} adjustments on day {}", c, Timestamp(now).utc_day());
                }
                for r in &o {
                    prop_assert!(r.id >= 1 && r.id <= last_id);
                }
                for (i, (name, _)) in PARAMS.iter().enumerate() {
                    let v = get(ap.params(), i);
                    match bound(i) {
                        Some((lo, hi)) => {
                            let v = v.expect("a bounded parameter is on");
                            prop_assert!(lo <= v && v <= hi, "{} = {} outside [{}, {}]", name, v, lo, hi);
                            prop_assert!(v.scale() <= DP || v == get(&s.start, i).unwrap());
                        }
                        None => prop_assert_eq!(v, get(&s.start, i), "unbounded {} changed", name),
                    }
                }
                prop_assert_eq!(ap.adjustment_count() as u64, last_id);
                was_disabled |= !ap.enabled();
            }
        }
    }
}
