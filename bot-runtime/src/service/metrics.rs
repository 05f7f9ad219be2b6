//! The session's Prometheus metrics, in the registry of its
//! [`SessionHandle`](super::SessionHandle) (served at `/metrics`).
//!
//! Every metric carries the constant labels `session` (the BotSession name),
//! `account` (its PaperAccount) and `strategy` (its StrategyConfig); the
//! scrape adds `namespace` (PodMonitor or the `prometheus.io/*` annotations,
//! see `charts/paperbot`). The other labels take a few fixed values each
//! (side, status, action, breaker, state, parameter, phase, symbol — the
//! session's configured symbols), never a message or an id. Money is in the
//! account's base currency (e.g. USD), as floats: Prometheus samples are
//! IEEE doubles, a view of the ledger's exact decimals. Counters count what
//! this process committed (they restart at 0 with the process, as
//! Prometheus counters may); gauges show the committed state.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `paperbot_equity`, `paperbot_cash`, `paperbot_realized_pnl`, `paperbot_unrealized_pnl` | gauge (base currency) | |
//! | `paperbot_drawdown_ratio`, `paperbot_max_drawdown_ratio` | gauge (fraction 0–1) | |
//! | `paperbot_open_positions` | gauge | |
//! | `paperbot_position_value` | gauge: quantity × last close, base currency (0 when flat) | `symbol` |
//! | `paperbot_candles_total` | counter | |
//! | `paperbot_fills_total` | counter | `side` (buy, sell), `status` (filled, failed) |
//! | `paperbot_decisions_total` | counter | `action` (buy, sell, skip, hold) |
//! | `paperbot_circuit_breaker_state` | gauge, 1 for the current state | `breaker`, `state` (Closed, Open, HalfOpen) |
//! | `paperbot_circuit_breaker_opened_timestamp_seconds` | gauge: Unix time (wall clock) this process saw the breaker open; 0 while not Open | `breaker` |
//! | `paperbot_circuit_breaker_trips_total` | counter | `breaker` |
//! | `paperbot_autopilot_adjustments_total` | counter | `parameter` |
//! | `paperbot_decision_latency_seconds` | histogram: engine time per candle | |
//! | `paperbot_market_data_age_seconds` | gauge: wall time since the last candle | |
//! | `paperbot_market_data_max_age_seconds` | gauge: the data age above which the runtime is not ready (3 candle intervals at the session's speed, at least 5 s) | |
//! | `paperbot_rejected_ticks_total` | counter: candles the feed guard rejected | |
//! | `paperbot_ledger_commit_duration_seconds` | histogram: one batch's commit, retries included | |
//! | `paperbot_ledger_errors_total` | counter: failed commit attempts (each retry counts) | |
//! | `paperbot_ledger_available` | gauge: 1 while commits succeed, 0 while they fail | |
//! | `paperbot_session_phase` | gauge, 1 for the current phase | `phase` |
//! | `paperbot_ready` | gauge: 1 when `/readyz` answers 200 | |
//!
//! Live sessions (`marketData.source: Live`) add the fallback chain's
//! series (label `source` = the configured source names, `symbol` = the
//! session's symbols; replay and simulated sessions have none of them):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `paperbot_market_data_source_requests_total` | counter: HTTP requests sent, retries included | `source` |
//! | `paperbot_market_data_source_failures_total` | counter: polls whose request failed | `source`, `kind` (timeout, connect, rate_limited, server, refused, malformed) |
//! | `paperbot_market_data_source_skips_total` | counter: polls that skipped the source without a request | `source`, `kind` (circuit_open, rate_limited, budget) |
//! | `paperbot_market_data_rejected_ticks_total` | counter: prices rejected by the sanity checks | `source`, `reason` (missing, non_numeric, zero, negative, stale, jump, ...) |
//! | `paperbot_market_data_source_state` | gauge, 1 for the source's circuit-breaker state | `source`, `state` (closed, open, half_open) |
//! | `paperbot_market_data_source_active` | gauge: 1 for the source that served the last poll, 0 for the others | `source` |
//! | `paperbot_market_data_price_age_seconds` | gauge: wall-clock seconds since the symbol's last accepted price (since the feed started before the first) | `symbol` |
//! | `paperbot_market_data_stale_symbols` | gauge: symbols whose price is older than `maxAge` | |
//! | `paperbot_market_data_degraded` | gauge: 1 while the session trades on a fallback source or has stale symbols | |

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use paperbot_crds::{
    BreakerState, BreakerStatus,
    runtime_api::{MarketDataStatus, RuntimePhase},
};
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, exponential_buckets,
};
use rust_decimal::{Decimal, prelude::ToPrimitive};

use crate::{
    ledger::records::{FillStatus, LedgerBatch},
    market::live::BreakerState as LiveBreakerState,
    runner::live::LiveFeedSnapshot,
    types::Timestamp,
};

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

/// Who a session's metrics belong to: the constant labels of every series,
/// and the symbols `paperbot_position_value` has a series for.
#[derive(Clone, Copy, Debug)]
pub struct SessionLabels<'a> {
    /// BotSession name (label `session`).
    pub session: &'a str,
    /// PaperAccount name (label `account`).
    pub account: &'a str,
    /// StrategyConfig name (label `strategy`).
    pub strategy: &'a str,
    /// The session's symbols, e.g. `BTC-USD` (label `symbol`).
    pub symbols: &'a [String],
}

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
    position_value: GaugeVec,
    symbols: Arc<Vec<String>>,
    candles: IntCounter,
    fills: IntCounterVec,
    decisions: IntCounterVec,
    breaker_state: IntGaugeVec,
    breaker_opened: GaugeVec,
    /// The state each breaker was last seen in (for its opening time).
    breaker_seen: Arc<Mutex<HashMap<String, BreakerState>>>,
    breaker_trips: IntCounterVec,
    adjustments: IntCounterVec,
    /// Engine time per candle, seconds (observed on the engine thread).
    pub decision_latency: Histogram,
    data_age: Gauge,
    data_max_age: Gauge,
    rejected_ticks: IntCounter,
    commit_duration: Histogram,
    ledger_errors: IntCounter,
    ledger_available: IntGauge,
    phase: IntGaugeVec,
    ready: IntGauge,
    live: LiveMetrics,
}

/// The fallback chain's series (live sessions only: every family has
/// labels, or an empty label set filled only for live sessions, so the
/// others expose none).
#[derive(Clone, Debug)]
struct LiveMetrics {
    requests: IntCounterVec,
    failures: IntCounterVec,
    skips: IntCounterVec,
    rejected: IntCounterVec,
    state: IntGaugeVec,
    active: IntGaugeVec,
    price_age: GaugeVec,
    stale_symbols: IntGaugeVec,
    degraded: IntGaugeVec,
}

/// Bring `counter` up to `total` (the chain counts since the process
/// started, as the counter does).
fn catch_up(counter: &IntCounter, total: u64) {
    let counted = counter.get();
    if total > counted {
        counter.inc_by(total - counted);
    }
}

fn f(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

/// Wall-clock Unix time now, seconds.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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
    /// Create the metrics of the session `labels` names and register them in
    /// `registry`.
    ///
    /// # Errors
    /// A prometheus error when the metrics of the same session are
    /// registered already, or a label value is not valid UTF-8 text for a
    /// label (names of Kubernetes objects always are).
    pub fn register(registry: &Registry, labels: &SessionLabels<'_>) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| {
            Opts::new(name, help)
                .const_label("session", labels.session)
                .const_label("account", labels.account)
                .const_label("strategy", labels.strategy)
        };
        let hopts = |name: &str, help: &str, buckets: Vec<f64>| {
            HistogramOpts::new(name, help)
                .const_label("session", labels.session)
                .const_label("account", labels.account)
                .const_label("strategy", labels.strategy)
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
            position_value: GaugeVec::new(
                opts(
                    "paperbot_position_value",
                    "Market value of the position in a symbol (quantity times last close), in the account's base currency; 0 when flat.",
                ),
                &["symbol"],
            )?,
            symbols: Arc::new(labels.symbols.to_vec()),
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
            breaker_opened: GaugeVec::new(
                opts(
                    "paperbot_circuit_breaker_opened_timestamp_seconds",
                    "Unix time (wall clock, seconds) at which this process saw the breaker open (its start when it resumed with the breaker open); 0 while it is not Open.",
                ),
                &["breaker"],
            )?,
            breaker_seen: Arc::default(),
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
            data_max_age: Gauge::with_opts(opts(
                "paperbot_market_data_max_age_seconds",
                "Data age in seconds above which the runtime is not ready: 3 candle intervals at the session's speed, at least 5.",
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
            ledger_errors: IntCounter::with_opts(opts(
                "paperbot_ledger_errors_total",
                "Failed ledger commit attempts (each failed retry counts once).",
            ))?,
            ledger_available: IntGauge::with_opts(opts(
                "paperbot_ledger_available",
                "1 while ledger commits succeed, 0 while they fail (trading is paused) or the writer gave up.",
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
            live: LiveMetrics {
                requests: IntCounterVec::new(
                    opts(
                        "paperbot_market_data_source_requests_total",
                        "HTTP requests sent to each live market-data source, retries included.",
                    ),
                    &["source"],
                )?,
                failures: IntCounterVec::new(
                    opts(
                        "paperbot_market_data_source_failures_total",
                        "Polls in which a live source's request failed, by kind (timeout, connect, rate_limited, server, refused, malformed).",
                    ),
                    &["source", "kind"],
                )?,
                skips: IntCounterVec::new(
                    opts(
                        "paperbot_market_data_source_skips_total",
                        "Polls that skipped a live source without a request, by kind (circuit_open, rate_limited, budget).",
                    ),
                    &["source", "kind"],
                )?,
                rejected: IntCounterVec::new(
                    opts(
                        "paperbot_market_data_rejected_ticks_total",
                        "Prices from a live source rejected by the sanity checks, by reason.",
                    ),
                    &["source", "reason"],
                )?,
                state: IntGaugeVec::new(
                    opts(
                        "paperbot_market_data_source_state",
                        "A live source's circuit breaker: 1 for its current state (closed, open, half_open), 0 for the others.",
                    ),
                    &["source", "state"],
                )?,
                active: IntGaugeVec::new(
                    opts(
                        "paperbot_market_data_source_active",
                        "1 for the live source that served the last poll, 0 for the others.",
                    ),
                    &["source"],
                )?,
                price_age: GaugeVec::new(
                    opts(
                        "paperbot_market_data_price_age_seconds",
                        "Wall-clock seconds since the symbol's last accepted live price (since the feed started before the first).",
                    ),
                    &["symbol"],
                )?,
                stale_symbols: IntGaugeVec::new(
                    opts(
                        "paperbot_market_data_stale_symbols",
                        "Symbols whose last accepted live price is older than maxAge.",
                    ),
                    &[],
                )?,
                degraded: IntGaugeVec::new(
                    opts(
                        "paperbot_market_data_degraded",
                        "1 while a live session trades on a fallback source (not the first of its chain) or has stale symbols.",
                    ),
                    &[],
                )?,
            },
        };
        registry.register(Box::new(m.live.requests.clone()))?;
        registry.register(Box::new(m.live.failures.clone()))?;
        registry.register(Box::new(m.live.skips.clone()))?;
        registry.register(Box::new(m.live.rejected.clone()))?;
        registry.register(Box::new(m.live.state.clone()))?;
        registry.register(Box::new(m.live.active.clone()))?;
        registry.register(Box::new(m.live.price_age.clone()))?;
        registry.register(Box::new(m.live.stale_symbols.clone()))?;
        registry.register(Box::new(m.live.degraded.clone()))?;
        registry.register(Box::new(m.equity.clone()))?;
        registry.register(Box::new(m.cash.clone()))?;
        registry.register(Box::new(m.realized_pnl.clone()))?;
        registry.register(Box::new(m.unrealized_pnl.clone()))?;
        registry.register(Box::new(m.drawdown.clone()))?;
        registry.register(Box::new(m.max_drawdown.clone()))?;
        registry.register(Box::new(m.open_positions.clone()))?;
        registry.register(Box::new(m.position_value.clone()))?;
        registry.register(Box::new(m.candles.clone()))?;
        registry.register(Box::new(m.fills.clone()))?;
        registry.register(Box::new(m.decisions.clone()))?;
        registry.register(Box::new(m.breaker_state.clone()))?;
        registry.register(Box::new(m.breaker_opened.clone()))?;
        registry.register(Box::new(m.breaker_trips.clone()))?;
        registry.register(Box::new(m.adjustments.clone()))?;
        registry.register(Box::new(m.decision_latency.clone()))?;
        registry.register(Box::new(m.data_age.clone()))?;
        registry.register(Box::new(m.data_max_age.clone()))?;
        registry.register(Box::new(m.rejected_ticks.clone()))?;
        registry.register(Box::new(m.commit_duration.clone()))?;
        registry.register(Box::new(m.ledger_errors.clone()))?;
        registry.register(Box::new(m.ledger_available.clone()))?;
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
        for symbol in m.symbols.iter() {
            m.position_value
                .with_label_values(&[symbol.as_str()])
                .set(0.0);
        }
        m.ledger_available.set(1);
        m.set_phase(RuntimePhase::Starting);
        Ok(m)
    }

    /// The gauges of a published status (committed state).
    pub(crate) fn set_status(&self, s: &paperbot_crds::runtime_api::RuntimeStatus) {
        let hundred = Decimal::ONE_HUNDRED;
        self.equity.set(f(s.equity));
        self.cash.set(f(s.cash));
        self.realized_pnl.set(f(s.realized_pnl));
        self.unrealized_pnl.set(f(s.unrealized_pnl));
        self.drawdown.set(f(s.drawdown_pct / hundred));
        self.max_drawdown.set(f(s.max_drawdown_pct / hundred));
        self.open_positions
            .set(i64::try_from(s.positions.len()).unwrap_or(i64::MAX));
        for symbol in self.symbols.iter() {
            let value: Decimal = s
                .positions
                .iter()
                .filter(|p| &p.symbol == symbol)
                .map(|p| p.quantity * p.mark_price)
                .sum();
            self.position_value
                .with_label_values(&[symbol.as_str()])
                .set(f(value));
        }
        self.set_breakers(&s.breakers);
    }

    /// The breakers' current states; a breaker seen entering Open gets its
    /// opening time (wall clock, now).
    pub(super) fn set_breakers(&self, breakers: &[BreakerStatus]) {
        let mut seen = self
            .breaker_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
            let before = seen.insert(b.name.clone(), b.state);
            let opened = self.breaker_opened.with_label_values(&[b.name.as_str()]);
            if b.state != BreakerState::Open {
                opened.set(0.0);
            } else if before != Some(BreakerState::Open) {
                opened.set(unix_now());
            }
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
    pub(crate) fn observe_commit(&self, seconds: f64) {
        self.commit_duration.observe(seconds);
    }

    /// Whether the ledger takes commits, and the writer's count of failed
    /// commit attempts so far in this process (the counter catches up).
    pub(super) fn set_ledger(&self, available: bool, errors_total: u64) {
        self.ledger_available.set(i64::from(available));
        let counted = self.ledger_errors.get();
        if errors_total > counted {
            self.ledger_errors.inc_by(errors_total - counted);
        }
    }

    /// The phase now.
    pub(super) fn set_phase(&self, phase: RuntimePhase) {
        for p in PHASES {
            self.phase
                .with_label_values(&[phase_name(p)])
                .set(i64::from(p == phase));
        }
    }

    /// A live session's fallback chain at `now` (wall clock): the chain's
    /// counters caught up, source states, the active source, price ages,
    /// stale symbols and whether `status` is degraded.
    pub(crate) fn set_market_data(
        &self,
        snap: &LiveFeedSnapshot,
        now: Timestamp,
        status: &MarketDataStatus,
    ) {
        let l = &self.live;
        for src in &snap.chain.sources {
            let name = src.name.as_str();
            catch_up(&l.requests.with_label_values(&[name]), src.http_requests);
            for (kind, n) in &src.failures {
                catch_up(&l.failures.with_label_values(&[name, kind]), *n);
            }
            for (kind, n) in &src.skipped {
                catch_up(&l.skips.with_label_values(&[name, kind]), *n);
            }
            for (reason, n) in &src.rejected {
                catch_up(&l.rejected.with_label_values(&[name, reason]), *n);
            }
            let state = src.breaker.unwrap_or(LiveBreakerState::Closed);
            for st in [
                LiveBreakerState::Closed,
                LiveBreakerState::Open,
                LiveBreakerState::HalfOpen,
            ] {
                l.state
                    .with_label_values(&[name, st.as_str()])
                    .set(i64::from(st == state));
            }
            l.active
                .with_label_values(&[name])
                .set(i64::from(snap.active_source() == Some(name)));
        }
        for age in snap.ages_at(now) {
            l.price_age
                .with_label_values(&[age.symbol.as_str()])
                .set(age.age_ms as f64 / 1000.0);
        }
        l.stale_symbols
            .with_label_values::<&str>(&[])
            .set(i64::try_from(status.stale_symbols.len()).unwrap_or(i64::MAX));
        l.degraded
            .with_label_values::<&str>(&[])
            .set(i64::from(status.degraded()));
    }

    /// Data age (seconds, 0 before the first candle), the age limit of
    /// readiness (seconds) and readiness.
    pub(super) fn set_freshness(
        &self,
        age_seconds: Option<f64>,
        max_age_seconds: f64,
        ready: bool,
    ) {
        self.data_age.set(age_seconds.unwrap_or(0.0));
        self.data_max_age.set(max_age_seconds);
        self.ready.set(i64::from(ready));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels<'a>(session: &'a str, symbols: &'a [String]) -> SessionLabels<'a> {
        SessionLabels {
            session,
            account: "acct",
            strategy: "trend",
            symbols,
        }
    }

    /// The value of the sample `series` (name and labels exactly as
    /// rendered) in the text exposition of `registry`.
    fn sample(registry: &Registry, series: &str) -> Option<f64> {
        let mut buf = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut buf,
        )
        .unwrap();
        String::from_utf8(buf)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_family_is_registered_with_the_session_account_and_strategy_labels() {
        let registry = Registry::new();
        let symbols = vec!["BTC-USD".to_string()];
        let m = Metrics::register(&registry, &labels("bot-a", &symbols)).unwrap();
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
            "paperbot_max_drawdown_ratio",
            "paperbot_open_positions",
            "paperbot_position_value",
            "paperbot_candles_total",
            "paperbot_fills_total",
            "paperbot_decisions_total",
            "paperbot_circuit_breaker_state",
            "paperbot_circuit_breaker_opened_timestamp_seconds",
            "paperbot_circuit_breaker_trips_total",
            "paperbot_autopilot_adjustments_total",
            "paperbot_decision_latency_seconds",
            "paperbot_market_data_age_seconds",
            "paperbot_market_data_max_age_seconds",
            "paperbot_rejected_ticks_total",
            "paperbot_ledger_commit_duration_seconds",
            "paperbot_ledger_errors_total",
            "paperbot_ledger_available",
            "paperbot_session_phase",
            "paperbot_ready",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert_eq!(names.len(), 24, "{names:?}");
        for family in &families {
            for metric in family.get_metric() {
                for (label, value) in [
                    ("session", "bot-a"),
                    ("account", "acct"),
                    ("strategy", "trend"),
                ] {
                    assert!(
                        metric
                            .get_label()
                            .iter()
                            .any(|l| l.name() == label && l.value() == value),
                        "{} has no {label} label",
                        family.name()
                    );
                }
            }
        }
        // The same session twice is refused; another session's metrics (other
        // label value) may share the registry.
        assert!(Metrics::register(&registry, &labels("bot-a", &symbols)).is_err());
        assert!(Metrics::register(&registry, &labels("bot-b", &symbols)).is_ok());
    }

    #[test]
    fn a_breaker_keeps_its_opening_time_while_open_and_drops_it_when_closed() {
        let registry = Registry::new();
        let m = Metrics::register(&registry, &labels("bot", &[])).unwrap();
        let series = "paperbot_circuit_breaker_opened_timestamp_seconds{account=\"acct\",breaker=\"dailyLoss\",session=\"bot\",strategy=\"trend\"}";
        let breaker = |state| BreakerStatus {
            name: "dailyLoss".into(),
            state,
            ..Default::default()
        };
        m.set_breakers(&[breaker(BreakerState::Closed)]);
        assert_eq!(sample(&registry, series), Some(0.0));
        let before = unix_now();
        m.set_breakers(&[breaker(BreakerState::Open)]);
        let opened = sample(&registry, series).unwrap();
        assert!(opened >= before.floor(), "{opened} < {before}");
        // Still open on the next status: the time it opened stays.
        std::thread::sleep(std::time::Duration::from_millis(20));
        m.set_breakers(&[breaker(BreakerState::Open)]);
        assert_eq!(sample(&registry, series), Some(opened));
        m.set_breakers(&[breaker(BreakerState::HalfOpen)]);
        assert_eq!(sample(&registry, series), Some(0.0));
    }

    #[test]
    fn live_chain_series_follow_the_feed_and_only_live_sessions_have_them() {
        use crate::market::live::{ChainStats, SourceStats};
        let registry = Registry::new();
        let symbols = vec!["BTC-USD".to_string(), "ETH-USD".to_string()];
        let m = Metrics::register(&registry, &labels("bot", &symbols)).unwrap();
        let names = |r: &Registry| -> Vec<String> {
            r.gather().iter().map(|f| f.name().to_string()).collect()
        };
        assert!(
            names(&registry)
                .iter()
                .all(|n| !n.starts_with("paperbot_market_data_source")
                    && n != "paperbot_market_data_degraded"),
            "a session that is not live has no chain series: {:?}",
            names(&registry)
        );
        let source = |name: &str, requests, breaker| SourceStats {
            name: name.into(),
            http_requests: requests,
            breaker: Some(breaker),
            ..Default::default()
        };
        let mut primary = source("gecko", 7, LiveBreakerState::Open);
        primary.failures.insert("server", 3);
        primary.skipped.insert("circuit_open", 2);
        let mut backup = source("binance", 4, LiveBreakerState::Closed);
        backup.rejected.insert("jump", 1);
        let snap = LiveFeedSnapshot {
            chain: ChainStats {
                active: Some("binance".into()),
                sources: vec![primary, backup],
                ..Default::default()
            },
            max_age_ms: 60_000,
            started: Timestamp(0),
            last_prices: vec![
                ("BTC-USD".into(), Some(Timestamp(100_000))),
                ("ETH-USD".into(), Some(Timestamp(30_000))),
            ],
        };
        let now = Timestamp(130_000);
        let status = crate::service::status::market_data_status(&snap, now);
        assert_eq!(status.active_source.as_deref(), Some("binance"));
        assert_eq!(status.preferred_source, "gecko");
        assert_eq!(status.stale_symbols, ["ETH-USD"]);
        assert_eq!(
            (status.sources[0].state, status.sources[0].failures),
            (paperbot_crds::runtime_api::SourceState::Open, 3)
        );
        assert_eq!(status.sources[1].rejected, 1);
        assert!(status.degraded());
        m.set_market_data(&snap, now, &status);
        // Twice: counters catch up, they do not add again.
        m.set_market_data(&snap, now, &status);
        let l = "account=\"acct\",session=\"bot\"";
        for (series, want) in [
            (format!("paperbot_market_data_source_requests_total{{{l},source=\"gecko\",strategy=\"trend\"}}"), 7.0),
            ("paperbot_market_data_source_failures_total{account=\"acct\",kind=\"server\",session=\"bot\",source=\"gecko\",strategy=\"trend\"}".to_string(), 3.0),
            ("paperbot_market_data_rejected_ticks_total{account=\"acct\",reason=\"jump\",session=\"bot\",source=\"binance\",strategy=\"trend\"}".to_string(), 1.0),
            ("paperbot_market_data_source_skips_total{account=\"acct\",kind=\"circuit_open\",session=\"bot\",source=\"gecko\",strategy=\"trend\"}".to_string(), 2.0),
            (format!("paperbot_market_data_source_active{{{l},source=\"binance\",strategy=\"trend\"}}"), 1.0),
            (format!("paperbot_market_data_source_active{{{l},source=\"gecko\",strategy=\"trend\"}}"), 0.0),
            (format!("paperbot_market_data_source_state{{{l},source=\"gecko\",state=\"open\",strategy=\"trend\"}}"), 1.0),
            (format!("paperbot_market_data_price_age_seconds{{{l},strategy=\"trend\",symbol=\"ETH-USD\"}}"), 100.0),
            (format!("paperbot_market_data_price_age_seconds{{{l},strategy=\"trend\",symbol=\"BTC-USD\"}}"), 30.0),
            (format!("paperbot_market_data_stale_symbols{{{l},strategy=\"trend\"}}"), 1.0),
            (format!("paperbot_market_data_degraded{{{l},strategy=\"trend\"}}"), 1.0),
        ] {
            assert_eq!(sample(&registry, &series), Some(want), "{series}");
        }
    }

    #[test]
    fn position_values_and_ledger_errors() {
        use paperbot_crds::runtime_api::{PositionStatus, RuntimeStatus};
        let registry = Registry::new();
        let symbols = vec!["BTC-USD".to_string(), "LTC-USD".to_string()];
        let m = Metrics::register(&registry, &labels("bot", &symbols)).unwrap();
        let value = |symbol: &str| {
            sample(
                &registry,
                &format!(
                    "paperbot_position_value{{account=\"acct\",session=\"bot\",strategy=\"trend\",symbol=\"{symbol}\"}}"
                ),
            )
        };
        assert_eq!(value("BTC-USD"), Some(0.0));
        m.set_status(&RuntimeStatus {
            positions: vec![PositionStatus {
                symbol: "BTC-USD".into(),
                quantity: Decimal::new(15, 1),
                mark_price: Decimal::new(20_000, 0),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(value("BTC-USD"), Some(30_000.0));
        assert_eq!(value("LTC-USD"), Some(0.0));
        m.set_status(&RuntimeStatus::default());
        assert_eq!(value("BTC-USD"), Some(0.0));

        let errors =
            "paperbot_ledger_errors_total{account=\"acct\",session=\"bot\",strategy=\"trend\"}";
        let available =
            "paperbot_ledger_available{account=\"acct\",session=\"bot\",strategy=\"trend\"}";
        assert_eq!(sample(&registry, errors), Some(0.0));
        assert_eq!(sample(&registry, available), Some(1.0));
        m.set_ledger(false, 3);
        assert_eq!(sample(&registry, errors), Some(3.0));
        assert_eq!(sample(&registry, available), Some(0.0));
        m.set_ledger(true, 3);
        assert_eq!(sample(&registry, errors), Some(3.0));
        assert_eq!(sample(&registry, available), Some(1.0));
    }
}
