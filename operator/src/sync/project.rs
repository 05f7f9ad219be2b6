//! Pure functions from a runtime's report to what users see: the figures in
//! a BotSession's status, the Events a change deserves, and the account
//! kill switch. No client, no clock (times are arguments).

use paperbot_crds::{
    AccountLimits, BotSessionStatus, BreakerState, DecimalString, KillSwitchStatus,
    SessionMarketDataStatus,
    runtime_api::{RuntimePhase, RuntimeStatus},
};
use rust_decimal::Decimal;

/// What the operator knows about a session's runtime from its polls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeObservation {
    /// The last status the runtime answered (kept across failed polls).
    pub status: Option<RuntimeStatus>,
    /// Failed polls in a row since the last answer.
    pub failures: u32,
    /// Why the last poll failed.
    pub last_error: Option<String>,
    /// `failures` reached the operator's `--runtime-not-reporting-after`.
    pub not_reporting: bool,
}

/// Money in status: rounded to cents (the exact figures are in the
/// runtime's API and ledger), trailing zeros dropped.
fn money(d: Decimal) -> DecimalString {
    DecimalString(d.round_dp(2).normalize())
}

/// Percent or ratio in status: two decimal places.
fn two_dp(d: Decimal) -> DecimalString {
    DecimalString(d.round_dp(2).normalize())
}

/// The `status.breaker` printer column: `None`, or the names of the open
/// (and half-open) breakers, comma-separated.
pub fn breaker_summary(r: &RuntimeStatus) -> String {
    let open: Vec<&str> = r
        .breakers
        .iter()
        .filter(|b| b.state != BreakerState::Closed)
        .map(|b| b.name.as_str())
        .collect();
    if open.is_empty() {
        "None".to_string()
    } else {
        open.join(",")
    }
}

/// Copy the runtime's figures into `s`: equity, cash, P&L, P&L % of the
/// allocation, trades, win rate, max drawdown, Sharpe ratio, open positions,
/// breakers (and their summary), autopilot (at most its 10 newest
/// adjustments), and the StrategyConfig generation it trades (its
/// `strategyRevision`, when that is a generation number).
pub fn apply_figures(s: &mut BotSessionStatus, r: &RuntimeStatus) {
    s.equity = Some(money(r.equity));
    s.cash = Some(money(r.cash));
    s.realized_pnl = Some(money(r.realized_pnl));
    s.unrealized_pnl = Some(money(r.unrealized_pnl));
    s.pnl_pct = Some(two_dp(r.roi_pct));
    s.trades = r.trades;
    s.round_trips = r.round_trips;
    s.win_rate_pct = r.win_rate_pct.map(two_dp);
    s.max_drawdown_pct = Some(two_dp(r.max_drawdown_pct));
    s.sharpe_ratio = r.sharpe_ratio.map(two_dp);
    s.open_positions = u32::try_from(r.positions.len()).unwrap_or(u32::MAX);
    s.breaker = Some(breaker_summary(r));
    s.breakers = r.breakers.clone();
    let mut autopilot = r.autopilot.clone();
    let keep = autopilot.recent_adjustments.len().saturating_sub(10);
    autopilot.recent_adjustments.drain(..keep);
    s.autopilot = Some(autopilot);
    s.market_data = r.market_data.as_ref().map(|m| SessionMarketDataStatus {
        active_source: m.active_source.clone(),
        preferred_source: m.preferred_source.clone(),
        stale_symbols: m.stale_symbols.clone(),
    });
    if let Some(g) = r
        .strategy_revision
        .as_deref()
        .and_then(|v| v.parse::<i64>().ok())
    {
        s.observed_strategy_generation = Some(g);
    }
}

/// An Event to publish: type, reason, note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    /// Warning (else Normal).
    pub warning: bool,
    /// CamelCase reason, e.g. `CircuitBreakerTripped`.
    pub reason: &'static str,
    /// What happened, for a person.
    pub note: String,
}

/// Reason of the Event for each breaker trip.
pub const CIRCUIT_BREAKER_TRIPPED: &str = "CircuitBreakerTripped";
/// Reason of the Event when an open breaker closes.
pub const CIRCUIT_BREAKER_RESET: &str = "CircuitBreakerReset";
/// Reason of the Event for each autopilot adjustment.
pub const AUTOPILOT_ADJUSTED: &str = "AutopilotAdjusted";
/// Reason of the Event when the session completes.
pub const SESSION_COMPLETED: &str = "SessionCompleted";
/// Reason of the Event when the session halts.
pub const SESSION_HALTED: &str = "SessionHalted";

/// Reason of the Event when a live session's active source changes.
pub const MARKET_DATA_SOURCE_CHANGED: &str = "MarketDataSourceChanged";

/// Reason of `MarketDataDegraded=True` while symbols are stale.
pub const STALE_PRICES: &str = "StalePrices";
/// Reason of `MarketDataDegraded=True` while a fallback source serves.
pub const FALLBACK_SOURCE: &str = "FallbackSource";
/// Reason of `MarketDataDegraded=False`.
pub const PREFERRED_SOURCE: &str = "PreferredSource";

/// The `MarketDataDegraded` condition of a live session: `True` with
/// reason [`STALE_PRICES`] while symbols are older than `maxAge` (the
/// `priceFeed` breaker is open), else [`FALLBACK_SOURCE`] while the active
/// source is not the first of the chain; `False` ([`PREFERRED_SOURCE`])
/// otherwise. Returns (degraded, reason, message).
pub fn market_data_condition(m: &SessionMarketDataStatus) -> (bool, &'static str, String) {
    let serving = match &m.active_source {
        Some(a) if *a == m.preferred_source => format!("the preferred source {a} serves"),
        Some(a) => format!(
            "the fallback source {a} serves (the preferred source {} does not answer or was rejected)",
            m.preferred_source
        ),
        None => "no source answered the last poll".to_string(),
    };
    if !m.stale_symbols.is_empty() {
        let msg = format!(
            "prices older than maxAge for {}: the priceFeed breaker holds new entries; {serving}",
            m.stale_symbols.join(", ")
        );
        return (true, STALE_PRICES, msg);
    }
    match &m.active_source {
        Some(a) if *a != m.preferred_source => (true, FALLBACK_SOURCE, serving),
        _ => (false, PREFERRED_SOURCE, serving),
    }
}

/// The final figures of a session, for Events and logs.
pub fn figures(s: &BotSessionStatus) -> String {
    let f = |d: Option<DecimalString>| d.map_or("n/a".to_string(), |d| d.to_string());
    format!(
        "equity {}, P&L {}% (realized {}, unrealized {}), trades {}, win rate {}%, max drawdown {}%, Sharpe {}",
        f(s.equity),
        f(s.pnl_pct),
        f(s.realized_pnl),
        f(s.unrealized_pnl),
        s.trades,
        f(s.win_rate_pct),
        f(s.max_drawdown_pct),
        f(s.sharpe_ratio),
    )
}

/// The Events that the change from `old` to `new` deserves — one per breaker
/// trip or reset and per autopilot adjustment (however many polls saw it),
/// and one when the session completes or halts. Comparing written statuses
/// (not polls) keeps this exact across operator restarts.
///
/// `message` is the runtime's message (why it halted).
pub fn runtime_events(
    old: Option<&BotSessionStatus>,
    new: &BotSessionStatus,
    message: Option<&str>,
) -> Vec<EventSpec> {
    let mut out = Vec::new();
    for b in &new.breakers {
        let before = old.and_then(|o| o.breakers.iter().find(|x| x.name == b.name));
        let old_trips = before.map_or(0, |x| x.trips);
        let why = b.reason.as_deref().unwrap_or("no reason given");
        if b.trips > old_trips {
            let n = b.trips - old_trips;
            let times = if n == 1 {
                String::new()
            } else {
                format!(" {n} times since the last report")
            };
            out.push(EventSpec {
                warning: true,
                reason: CIRCUIT_BREAKER_TRIPPED,
                note: format!(
                    "breaker {} tripped{times} (now {:?}, {} trips in total): {why}",
                    b.name, b.state, b.trips
                ),
            });
        } else if b.state == BreakerState::Closed
            && before.is_some_and(|x| x.state != BreakerState::Closed)
        {
            out.push(EventSpec {
                warning: false,
                reason: CIRCUIT_BREAKER_RESET,
                note: format!("breaker {} closed: {why}", b.name),
            });
        }
    }
    if let Some(ap) = &new.autopilot {
        let old_count = old
            .and_then(|o| o.autopilot.as_ref())
            .map_or(0, |a| a.adjustment_count);
        if ap.adjustment_count > old_count {
            let new_ones = (ap.adjustment_count - old_count) as usize;
            let shown = new_ones.min(ap.recent_adjustments.len());
            for a in &ap.recent_adjustments[ap.recent_adjustments.len() - shown..] {
                out.push(EventSpec {
                    warning: false,
                    reason: AUTOPILOT_ADJUSTED,
                    note: format!(
                        "{} {} → {} at {}: {}",
                        a.parameter, a.old_value, a.new_value, a.time, a.reason
                    ),
                });
            }
            if new_ones > shown {
                out.push(EventSpec {
                    warning: false,
                    reason: AUTOPILOT_ADJUSTED,
                    note: format!(
                        "{} earlier adjustments since the last report are in the runtime's /v1/autopilot/adjustments",
                        new_ones - shown
                    ),
                });
            }
        }
    }
    if let (Some(before), Some(now)) = (
        old.and_then(|o| o.market_data.as_ref()),
        new.market_data.as_ref(),
    ) && before.active_source != now.active_source
    {
        let from = before.active_source.as_deref().unwrap_or("none");
        let (warning, note) = match now.active_source.as_deref() {
            Some(to) if to == now.preferred_source => (
                false,
                format!("market data handed back from {from} to the preferred source {to}"),
            ),
            Some(to) => (
                true,
                format!(
                    "market data failed over from {from} to {to} (preferred: {})",
                    now.preferred_source
                ),
            ),
            None => (
                true,
                format!("no market-data source answered (last active: {from})"),
            ),
        };
        out.push(EventSpec {
            warning,
            reason: MARKET_DATA_SOURCE_CHANGED,
            note,
        });
    }
    let old_phase = old.map(|o| o.phase);
    if old_phase != Some(new.phase) {
        match new.phase {
            paperbot_crds::SessionPhase::Completed => out.push(EventSpec {
                warning: false,
                reason: SESSION_COMPLETED,
                note: format!("session completed: {}", figures(new)),
            }),
            paperbot_crds::SessionPhase::Halted => out.push(EventSpec {
                warning: true,
                reason: SESSION_HALTED,
                note: format!(
                    "session halted: {}; {}",
                    message.unwrap_or("a halting limit was passed"),
                    figures(new)
                ),
            }),
            _ => {}
        }
    }
    out
}

/// Whether a runtime phase ends the session for the operator (it stops
/// polling once the final status is written).
pub fn runtime_ended(r: &RuntimeStatus) -> bool {
    r.phase.is_final()
}

/// Maps the runtime's phase to the BotSession phase (the runtime's
/// `Stopped` and the operator's are the same end).
pub fn session_phase_of(p: RuntimePhase) -> paperbot_crds::SessionPhase {
    use paperbot_crds::SessionPhase as S;
    match p {
        RuntimePhase::Starting => S::Starting,
        RuntimePhase::Running => S::Running,
        RuntimePhase::Paused => S::Paused,
        RuntimePhase::Halted => S::Halted,
        RuntimePhase::Completed => S::Completed,
        RuntimePhase::Stopped => S::Stopped,
        RuntimePhase::Failed => S::Failed,
    }
}

/// Evaluate the account kill switch over the account's aggregated `equity`
/// (base currency) at wall time `now` (RFC 3339) on UTC day `today`
/// (`YYYY-MM-DD`).
///
/// - The drawdown reference `peakEquity` is the highest equity seen; the
///   daily reference `dayStartEquity` is the first equity seen on `today`.
/// - It trips when `(peak − equity) / peak × 100 > limits.maxDrawdownPct` or
///   `(dayStart − equity) / dayStart × 100 > limits.dailyLossPct` (percent
///   0–100), and then stays engaged until `reset` (a new `spec.resetRequest`),
///   which also restarts both references from `equity`.
pub fn evaluate_kill_switch(
    limits: Option<&AccountLimits>,
    prev: Option<&KillSwitchStatus>,
    equity: Decimal,
    today: &str,
    now: &str,
    reset: bool,
) -> KillSwitchStatus {
    let mut k = if reset {
        KillSwitchStatus::default()
    } else {
        prev.cloned().unwrap_or_default()
    };
    let peak = k.peak_equity.map_or(equity, |p| p.get().max(equity));
    k.peak_equity = Some(DecimalString(peak));
    if k.day.as_deref() != Some(today) {
        k.day = Some(today.to_string());
        k.day_start_equity = Some(DecimalString(equity));
    }
    if k.engaged {
        return k;
    }
    let pct_below = |reference: Decimal| -> Option<Decimal> {
        if reference <= Decimal::ZERO {
            return None;
        }
        (reference - equity)
            .checked_div(reference)?
            .checked_mul(Decimal::ONE_HUNDRED)
    };
    let Some(limits) = limits else {
        return k;
    };
    let mut why = None;
    if let (Some(limit), Some(dd)) = (limits.max_drawdown_pct, pct_below(peak))
        && dd > limit.get()
    {
        why = Some(format!(
            "account drawdown {}% from peak equity {} passed limits.maxDrawdownPct {}%",
            dd.round_dp(2),
            peak.round_dp(2),
            limit
        ));
    }
    if why.is_none()
        && let (Some(limit), Some(start)) = (limits.daily_loss_pct, k.day_start_equity)
        && let Some(loss) = pct_below(start.get())
        && loss > limit.get()
    {
        why = Some(format!(
            "account loss today {}% from {} passed limits.dailyLossPct {}%",
            loss.round_dp(2),
            start.get().round_dp(2),
            limit
        ));
    }
    if let Some(reason) = why {
        k.engaged = true;
        k.reason = Some(reason);
        k.since = Some(now.to_string());
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use paperbot_crds::{AdjustmentStatus, AutopilotStatus, BreakerStatus, SessionPhase};
    use rust_decimal_macros::dec;

    fn breaker(name: &str, state: BreakerState, trips: u32, reason: &str) -> BreakerStatus {
        BreakerStatus {
            name: name.into(),
            state,
            trips,
            reason: Some(reason.into()),
            since: None,
        }
    }

    fn adjustment(parameter: &str, old: &str, new: &str) -> AdjustmentStatus {
        AdjustmentStatus {
            time: "2026-01-01T00:00:00Z".into(),
            parameter: parameter.into(),
            old_value: old.parse().unwrap(),
            new_value: new.parse().unwrap(),
            reason: "win rate 30% below 40%".into(),
            outcome: None,
        }
    }

    #[test]
    fn figures_are_rounded_to_cents_and_breakers_summarised() {
        let r = RuntimeStatus {
            equity: dec!(10123.456789),
            roi_pct: dec!(1.23456),
            trades: 7,
            breakers: vec![
                breaker("dailyLoss", BreakerState::Open, 1, "loss 3% > 2%"),
                breaker("maxDrawdown", BreakerState::Closed, 0, ""),
            ],
            strategy_revision: Some("4".into()),
            ..Default::default()
        };
        let mut s = BotSessionStatus::default();
        apply_figures(&mut s, &r);
        assert_eq!(s.equity.unwrap().to_string(), "10123.46");
        assert_eq!(s.pnl_pct.unwrap().to_string(), "1.23");
        assert_eq!(s.trades, 7);
        assert_eq!(s.breaker.as_deref(), Some("dailyLoss"));
        assert_eq!(s.observed_strategy_generation, Some(4));
        assert_eq!(s.win_rate_pct, None);
    }

    #[test]
    fn one_event_per_trip_reset_and_adjustment_not_per_poll() {
        let mut old = BotSessionStatus {
            breakers: vec![breaker("dailyLoss", BreakerState::Closed, 0, "")],
            autopilot: Some(AutopilotStatus {
                enabled: true,
                adjustment_count: 1,
                recent_adjustments: vec![adjustment("stopLossPct", "2", "2.5")],
                ..Default::default()
            }),
            phase: SessionPhase::Running,
            ..Default::default()
        };
        let mut new = old.clone();
        new.breakers = vec![breaker("dailyLoss", BreakerState::Open, 1, "loss 3% > 2%")];
        new.autopilot.as_mut().unwrap().adjustment_count = 3;
        new.autopilot.as_mut().unwrap().recent_adjustments.extend([
            adjustment("stopLossPct", "2.5", "3"),
            adjustment("confidenceThreshold", "60", "65"),
        ]);
        let ev = runtime_events(Some(&old), &new, None);
        let reasons: Vec<_> = ev.iter().map(|e| e.reason).collect();
        assert_eq!(
            reasons,
            [
                CIRCUIT_BREAKER_TRIPPED,
                AUTOPILOT_ADJUSTED,
                AUTOPILOT_ADJUSTED
            ]
        );
        assert!(ev[0].note.contains("loss 3% > 2%"), "{}", ev[0].note);
        assert!(ev[1].note.contains("stopLossPct 2.5 → 3"), "{}", ev[1].note);
        // The same status again (another poll): nothing.
        assert!(runtime_events(Some(&new), &new, None).is_empty());
        // Reset: one Normal event.
        old = new.clone();
        new.breakers = vec![breaker(
            "dailyLoss",
            BreakerState::Closed,
            1,
            "reset by request",
        )];
        let ev = runtime_events(Some(&old), &new, None);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].reason, CIRCUIT_BREAKER_RESET);
        assert!(!ev[0].warning);
    }

    #[test]
    fn one_event_per_change_of_the_active_source() {
        let with = |active: Option<&str>| BotSessionStatus {
            market_data: Some(SessionMarketDataStatus {
                active_source: active.map(str::to_string),
                preferred_source: "gecko".into(),
                stale_symbols: Vec::new(),
            }),
            ..Default::default()
        };
        // The first report is no change.
        assert!(runtime_events(None, &with(Some("gecko")), None).is_empty());
        assert!(
            runtime_events(
                Some(&BotSessionStatus::default()),
                &with(Some("gecko")),
                None
            )
            .is_empty()
        );
        assert!(runtime_events(Some(&with(Some("gecko"))), &with(Some("gecko")), None).is_empty());
        let ev = runtime_events(Some(&with(Some("gecko"))), &with(Some("binance")), None);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].reason, MARKET_DATA_SOURCE_CHANGED);
        assert!(ev[0].warning);
        assert_eq!(
            ev[0].note,
            "market data failed over from gecko to binance (preferred: gecko)"
        );
        let ev = runtime_events(Some(&with(Some("binance"))), &with(None), None);
        assert_eq!(
            (ev[0].warning, ev[0].note.as_str()),
            (
                true,
                "no market-data source answered (last active: binance)"
            )
        );
        let ev = runtime_events(Some(&with(None)), &with(Some("gecko")), None);
        assert_eq!(
            (ev[0].warning, ev[0].note.as_str()),
            (
                false,
                "market data handed back from none to the preferred source gecko"
            )
        );
    }

    #[test]
    fn market_data_condition_names_what_degrades_it() {
        let md = |active: Option<&str>, stale: &[&str]| SessionMarketDataStatus {
            active_source: active.map(str::to_string),
            preferred_source: "gecko".into(),
            stale_symbols: stale.iter().map(|s| s.to_string()).collect(),
        };
        let (d, r, m) = market_data_condition(&md(Some("gecko"), &[]));
        assert_eq!(
            (d, r, m.as_str()),
            (false, PREFERRED_SOURCE, "the preferred source gecko serves")
        );
        let (d, r, _) = market_data_condition(&md(None, &[]));
        assert_eq!(
            (d, r),
            (false, PREFERRED_SOURCE),
            "no answer yet, prices still fresh"
        );
        let (d, r, m) = market_data_condition(&md(Some("binance"), &[]));
        assert_eq!((d, r), (true, FALLBACK_SOURCE));
        assert!(m.starts_with("the fallback source binance serves"), "{m}");
        let (d, r, m) = market_data_condition(&md(Some("binance"), &["BTC-USD", "ETH-USD"]));
        assert_eq!((d, r), (true, STALE_PRICES));
        assert!(
            m.starts_with("prices older than maxAge for BTC-USD, ETH-USD"),
            "{m}"
        );
    }

    #[test]
    fn completion_and_halt_give_one_event_each() {
        let old = BotSessionStatus {
            phase: SessionPhase::Running,
            ..Default::default()
        };
        let mut done = old.clone();
        done.phase = SessionPhase::Completed;
        done.equity = Some(DecimalString(dec!(101)));
        let ev = runtime_events(Some(&old), &done, None);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].reason, SESSION_COMPLETED);
        assert!(ev[0].note.contains("equity 101"), "{}", ev[0].note);
        assert!(runtime_events(Some(&done), &done, None).is_empty());
        let mut halted = old.clone();
        halted.phase = SessionPhase::Halted;
        let ev = runtime_events(Some(&old), &halted, Some("kill switch: drawdown 12% > 10%"));
        assert_eq!(ev[0].reason, SESSION_HALTED);
        assert!(ev[0].warning && ev[0].note.contains("12% > 10%"));
    }

    fn limits(dd: Option<&str>, daily: Option<&str>) -> AccountLimits {
        AccountLimits {
            max_drawdown_pct: dd.map(|d| d.parse().unwrap()),
            daily_loss_pct: daily.map(|d| d.parse().unwrap()),
        }
    }

    #[test]
    fn kill_switch_trips_on_drawdown_from_peak_and_latches_until_reset() {
        let l = limits(Some("10"), None);
        let k = evaluate_kill_switch(Some(&l), None, dec!(1000), "2026-01-01", "t0", false);
        assert!(!k.engaged);
        let k = evaluate_kill_switch(Some(&l), Some(&k), dec!(1200), "2026-01-01", "t1", false);
        assert_eq!(k.peak_equity.unwrap().get(), dec!(1200));
        // 1200 → 1081 is 9.9 %: not yet.
        let k = evaluate_kill_switch(Some(&l), Some(&k), dec!(1081), "2026-01-01", "t2", false);
        assert!(!k.engaged);
        let k = evaluate_kill_switch(Some(&l), Some(&k), dec!(1079), "2026-01-01", "t3", false);
        assert!(k.engaged);
        assert_eq!(k.since.as_deref(), Some("t3"));
        assert!(k.reason.as_deref().unwrap().contains("maxDrawdownPct 10%"));
        // Recovery does not release it; a reset does, from the current equity.
        let k = evaluate_kill_switch(Some(&l), Some(&k), dec!(1300), "2026-01-02", "t4", false);
        assert!(k.engaged);
        let k = evaluate_kill_switch(Some(&l), Some(&k), dec!(1079), "2026-01-02", "t5", true);
        assert!(!k.engaged);
        assert_eq!(k.peak_equity.unwrap().get(), dec!(1079));
    }

    #[test]
    fn kill_switch_daily_loss_uses_the_first_equity_of_the_day() {
        let l = limits(None, Some("5"));
        let k = evaluate_kill_switch(Some(&l), None, dec!(1000), "2026-01-01", "t0", false);
        let k = evaluate_kill_switch(Some(&l), Some(&k), dec!(900), "2026-01-02", "t1", false);
        assert!(!k.engaged, "a new day starts from 900");
        assert_eq!(k.day_start_equity.unwrap().get(), dec!(900));
        let k = evaluate_kill_switch(Some(&l), Some(&k), dec!(850), "2026-01-02", "t2", false);
        assert!(k.engaged);
        assert!(k.reason.unwrap().contains("dailyLossPct 5%"));
    }

    #[test]
    fn kill_switch_without_limits_or_with_zero_equity_never_panics_or_trips() {
        let k = evaluate_kill_switch(None, None, dec!(0), "d", "t", false);
        assert!(!k.engaged);
        let l = limits(Some("1"), Some("1"));
        let k = evaluate_kill_switch(Some(&l), Some(&k), dec!(-5), "d", "t", false);
        assert!(
            !k.engaged,
            "no positive reference: nothing to measure against"
        );
    }
}
