//! The session's Prometheus metrics, in the registry of its
//! [`SessionHandle`](super::SessionHandle) (served at `/metrics`).
//!
//! Every metric carries the constant label `session` (the BotSession name);
//! the other labels take a few fixed values each (side, status, action,
//! breaker, state, parameter, phase), never a message or an id. Money is in
//! the account's base currency (e.g. USD), as floats: Prometheus samples are
//! IEEE doubles, a view of the ledger's exact decimals. Counters count what
//! this process committed (they restart at 0 with the process, as
//! Prometheus counters may); gauges show the committed state.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `paperbot_equity`, `paperbot_cash`, `paperbot_realized_pnl`, `paperbot_unrealized_pnl` | gauge (base currency) | |
//! | `paperbot_drawdown_ratio`, `paperbot_max_drawdown_ratio` | gauge (fraction 0–1) | |
//! | `paperbot_open_positions` | gauge | |
//! | `paperbot_candles_total` | counter | |
//! | `paperbot_fills_total` | counter | `side` (buy, sell), `status` (filled, failed) |
//! | `paperbot_decisions_total` | counter | `action` (buy, sell, skip, hold) |
//! | `paperbot_circuit_breaker_state` | gauge, 1 for the current state | `breaker`, `state` (Closed, Open, HalfOpen) |
//! | `paperbot_circuit_breaker_trips_total` | counter | `breaker` |
//! | `paperbot_autopilot_adjustments_total` | counter | `parameter` |
//! | `paperbot_decision_latency_seconds` | histogram: engine time per candle | |
//! | `paperbot_market_data_age_seconds` | gauge: wall time since the last candle | |
//! | `paperbot_rejected_ticks_total` | counter: candles the feed guard rejected | |
//! | `paperbot_ledger_commit_duration_seconds` | histogram: one batch's commit, retries included | |
//! | `paperbot_session_phase` | gauge, 1 for the current phase | `phase` |
//! | `paperbot_ready` | gauge: 1 when `/readyz` answers 200 | |

use paperbot_crds::{BreakerState, BreakerStatus, runtime_api::RuntimePhase};
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, exponential_buckets,
};
use rust_decimal::{Decimal, prelude::ToPrimitive};

use crate::ledger::records::{FillStatus, LedgerBatch};

/// Every phase, for the `paperbot_session_phase` state set.
const PHASES: [RuntimePhase; 7] = [
    RuntimePhase::Starting,
    RuntimePhase::Running,
    RuntimePhase::Paused,
    RuntimePhase::Halted,
    RuntimePhase::Completed,
    RuntimePhase::Stopped,
    RuntimePhase::Failed,
];

/// The session's metrics (see the module docs for names and labels).
#[derive(Clone, Debug)]
pub struct Metrics {
    equity: Gauge,
    cash: Gauge,
    realized_pnl: Gauge,
    unrealized_pnl: Gauge,
    drawdown: Gauge,
    max_drawdown: Gauge,
    open_positions: IntGauge,
    candles: IntCounter,
    fills: IntCounterVec,
    decisions: IntCounterVec,
    breaker_state: IntGaugeVec,
    breaker_trips: IntCounterVec,
    adjustments: IntCounterVec,
    /// Engine time per candle, seconds (observed on the engine thread).
    pub decision_latency: Histogram,
    data_age: Gauge,
    rejected_ticks: IntCounter,
    commit_duration: Histogram,
    phase: IntGaugeVec,
    ready: IntGauge,
}

fn f(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

fn state_name(s: BreakerState) -> &'static str {
    match s {
        BreakerState::Closed => "Closed",
        BreakerState::Open => "Open",
        BreakerState::HalfOpen => "HalfOpen",
    }
}

/// `Running`, `Paused`, ... as in the status.
pub(super) fn phase_name(p: RuntimePhase) -> &'static str {
    match p {
        RuntimePhase::Starting => "Starting",
        RuntimePhase::Running => "Running",
        RuntimePhase::Paused => "Paused",
        RuntimePhase::Halted => "Halted",
        RuntimePhase::Completed => "Completed",
        RuntimePhase::Stopped => "Stopped",
        RuntimePhase::Failed => "Failed",
    }
}

impl Metrics {
    /// Create the metrics of session `session` and register them in `registry`.
    ///
    /// # Errors
    /// A prometheus error when the metrics of the same session are
    /// registered already.
    pub fn register(registry: &Registry, session: &str) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("session", session);
        let hopts = |name: &str, help: &str, buckets: Vec<f64>| {
            HistogramOpts::new(name, help)
                .const_label("session", session)
                .buckets(buckets)
        };
        let m = Self {
            equity: Gauge::with_opts(opts(
                "paperbot_equity",
                "Equity: cash plus open positions at their last close, in the account's base currency.",
            ))?,
            cash: Gauge::with_opts(opts(
                "paperbot_cash",
                "Cash, in the account's base currency.",
            ))?,
            realized_pnl: Gauge::with_opts(opts(
                "paperbot_realized_pnl",
                "Realized profit and loss (fees and slippage included), in the account's base currency.",
            ))?,
            unrealized_pnl: Gauge::with_opts(opts(
                "paperbot_unrealized_pnl",
                "Unrealized profit and loss of open positions at their last close, in the account's base currency.",
            ))?,
            drawdown: Gauge::with_opts(opts(
                "paperbot_drawdown_ratio",
                "Current fall of equity from its peak, as a fraction (0.05 = 5 %).",
            ))?,
            max_drawdown: Gauge::with_opts(opts(
                "paperbot_max_drawdown_ratio",
                "Largest peak-to-trough fall of equity so far, as a fraction.",
            ))?,
            open_positions: IntGauge::with_opts(opts(
                "paperbot_open_positions",
                "Positions open now.",
            ))?,
            candles: IntCounter::with_opts(opts(
                "paperbot_candles_total",
                "Candles traded (committed) by this process.",
            ))?,
            fills: IntCounterVec::new(
                opts(
                    "paperbot_fills_total",
                    "Orders executed, by side (buy, sell) and status (filled, failed).",
                ),
                &["side", "status"],
            )?,
            decisions: IntCounterVec::new(
                opts(
                    "paperbot_decisions_total",
                    "Decisions, by action (buy, sell, skip, hold).",
                ),
                &["action"],
            )?,
            breaker_state: IntGaugeVec::new(
                opts(
                    "paperbot_circuit_breaker_state",
                    "Circuit breaker state: 1 for the breaker's current state (Closed, Open, HalfOpen), 0 for the others.",
                ),
                &["breaker", "state"],
            )?,
            breaker_trips: IntCounterVec::new(
                opts(
                    "paperbot_circuit_breaker_trips_total",
                    "Circuit breaker trips (transitions to Open).",
                ),
                &["breaker"],
            )?,
            adjustments: IntCounterVec::new(
                opts(
                    "paperbot_autopilot_adjustments_total",
                    "Autopilot parameter changes, by parameter.",
                ),
                &["parameter"],
            )?,
            decision_latency: Histogram::with_opts(hopts(
                "paperbot_decision_latency_seconds",
                "Engine time per candle (feed check, fills, exits, signals, decision), in seconds.",
                exponential_buckets(1e-6, 4.0, 9)?,
            ))?,
            data_age: Gauge::with_opts(opts(
                "paperbot_market_data_age_seconds",
                "Wall-clock seconds since the last candle was traded.",
            ))?,
            rejected_ticks: IntCounter::with_opts(opts(
                "paperbot_rejected_ticks_total",
                "Candles the feed guard rejected (invalid or out of order).",
            ))?,
            commit_duration: Histogram::with_opts(hopts(
                "paperbot_ledger_commit_duration_seconds",
                "Wall time of one ledger commit (a batch with its checkpoint, retries included), in seconds.",
                exponential_buckets(0.0005, 3.0, 10)?,
            ))?,
            phase: IntGaugeVec::new(
                opts(
                    "paperbot_session_phase",
                    "Session phase: 1 for the current phase, 0 for the others.",
                ),
                &["phase"],
            )?,
            ready: IntGauge::with_opts(opts(
                "paperbot_ready",
                "1 when the runtime is ready (ledger reachable and market data fresh, or the session ended).",
            ))?,
        };
        registry.register(Box::new(m.equity.clone()))?;
        registry.register(Box::new(m.cash.clone()))?;
        registry.register(Box::new(m.realized_pnl.clone()))?;
        registry.register(Box::new(m.unrealized_pnl.clone()))?;
        registry.register(Box::new(m.drawdown.clone()))?;
        registry.register(Box::new(m.max_drawdown.clone()))?;
        registry.register(Box::new(m.open_positions.clone()))?;
        registry.register(Box::new(m.candles.clone()))?;
        registry.register(Box::new(m.fills.clone()))?;
        registry.register(Box::new(m.decisions.clone()))?;
        registry.register(Box::new(m.breaker_state.clone()))?;
        registry.register(Box::new(m.breaker_trips.clone()))?;
        registry.register(Box::new(m.adjustments.clone()))?;
        registry.register(Box::new(m.decision_latency.clone()))?;
        registry.register(Box::new(m.data_age.clone()))?;
        registry.register(Box::new(m.rejected_ticks.clone()))?;
        registry.register(Box::new(m.commit_duration.clone()))?;
        registry.register(Box::new(m.phase.clone()))?;
        registry.register(Box::new(m.ready.clone()))?;
        // Known label values start at 0 so that rates and absences read right.
        for side in ["buy", "sell"] {
            for status in ["filled", "failed"] {
                m.fills.with_label_values(&[side, status]);
            }
        }
        for action in ["buy", "sell", "skip", "hold"] {
            m.decisions.with_label_values(&[action]);
        }
        {
            use crate::params::param_names::*;
            for p in [
                MAX_POSITION_SIZE_PCT,
                CONFIDENCE_THRESHOLD,
                STOP_LOSS_PCT,
                TAKE_PROFIT_PCT,
            ] {
                m.adjustments.with_label_values(&[p]);
            }
        }
        m.set_phase(RuntimePhase::Starting);
        Ok(m)
    }

    /// The gauges of a published status (committed state).
    pub(super) fn set_status(&self, s: &paperbot_crds::runtime_api::RuntimeStatus) {
        let hundred = Decimal::ONE_HUNDRED;
        self.equity.set(f(s.equity));
        self.cash.set(f(s.cash));
        self.realized_pnl.set(f(s.realized_pnl));
        self.unrealized_pnl.set(f(s.unrealized_pnl));
        self.drawdown.set(f(s.drawdown_pct / hundred));
        self.max_drawdown.set(f(s.max_drawdown_pct / hundred));
        self.open_positions
            .set(i64::try_from(s.positions.len()).unwrap_or(i64::MAX));
        self.set_breakers(&s.breakers);
    }

    /// The breakers' current states.
    pub(super) fn set_breakers(&self, breakers: &[BreakerStatus]) {
        for b in breakers {
            for s in [
                BreakerState::Closed,
                BreakerState::Open,
                BreakerState::HalfOpen,
            ] {
                self.breaker_state
                    .with_label_values(&[b.name.as_str(), state_name(s)])
                    .set(i64::from(b.state == s));
            }
            self.breaker_trips.with_label_values(&[b.name.as_str()]);
        }
    }

    /// Count what a committed batch holds; `holds` and `rejected` are the
    /// increments of the engine's Hold and rejected-tick counters.
    pub(super) fn count(&self, batch: &LedgerBatch, candles: u64, holds: u64, rejected: u64) {
        self.candles.inc_by(candles);
        for t in &batch.trades {
            let status = match t.status {
                FillStatus::Filled => "filled",
                FillStatus::Failed => "failed",
            };
            self.fills
                .with_label_values(&[t.side.as_str(), status])
                .inc();
        }
        for d in &batch.decisions {
            if d.action != crate::ledger::records::Action::Hold {
                self.decisions.with_label_values(&[d.action.as_str()]).inc();
            }
        }
        self.decisions.with_label_values(&["hold"]).inc_by(holds);
        for e in &batch.breaker_events {
            if e.to_state == "Open" && e.from_state != "Open" {
                self.breaker_trips
                    .with_label_values(&[e.breaker.as_str()])
                    .inc();
            }
        }
        for a in &batch.adjustments {
            self.adjustments
                .with_label_values(&[a.parameter.as_str()])
                .inc();
        }
        self.rejected_ticks.inc_by(rejected);
    }

    /// One commit took `seconds`.
    pub(super) fn observe_commit(&self, seconds: f64) {
        self.commit_duration.observe(seconds);
    }

    /// The phase now.
    pub(super) fn set_phase(&self, phase: RuntimePhase) {
        for p in PHASES {
            self.phase
                .with_label_values(&[phase_name(p)])
                .set(i64::from(p == phase));
        }
    }

    /// Data age (seconds, 0 before the first candle) and readiness.
    pub(super) fn set_freshness(&self, age_seconds: Option<f64>, ready: bool) {
        self.data_age.set(age_seconds.unwrap_or(0.0));
        self.ready.set(i64::from(ready));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_registered_with_the_session_label() {
        let registry = Registry::new();
        let m = Metrics::register(&registry, "bot-a").unwrap();
        m.decision_latency.observe(0.00002);
        m.observe_commit(0.003);
        m.set_breakers(&[BreakerStatus {
            name: "dailyLoss".into(),
            state: BreakerState::Open,
            ..Default::default()
        }]);
        let families = registry.gather();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        for want in [
            "paperbot_equity",
            "paperbot_cash",
            "paperbot_realized_pnl",
            "paperbot_unrealized_pnl",
            "paperbot_drawdown_ratio",
            "paperbot_open_positions",
            "paperbot_fills_total",
            "paperbot_decisions_total",
            "paperbot_circuit_breaker_state",
            "paperbot_circuit_breaker_trips_total",
            "paperbot_decision_latency_seconds",
            "paperbot_market_data_age_seconds",
            "paperbot_rejected_ticks_total",
            "paperbot_ledger_commit_duration_seconds",
            "paperbot_session_phase",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        for family in &families {
            for metric in family.get_metric() {
                assert!(
                    metric
                        .get_label()
                        .iter()
                        .any(|l| l.name() == "session" && l.value() == "bot-a"),
                    "{} has no session label",
                    family.name()
                );
            }
        }
        // The same session twice is refused; another session's metrics (other
        // label value) may share the registry.
        assert!(Metrics::register(&registry, "bot-a").is_err());
        assert!(Metrics::register(&registry, "bot-b").is_ok());
    }
}
