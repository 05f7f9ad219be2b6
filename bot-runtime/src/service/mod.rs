//! `bot-runtime serve`: one session as a long-lived service.
//!
//! The session side (this module) runs the pipeline of [`crate::runner`] on
//! the wall clock and publishes what it commits; the HTTP side
//! ([`crate::api`]) serves it. They meet in a [`SessionHandle`]:
//!
//! - `status`: the latest [`RuntimeStatus`] (a `watch` channel), updated after
//!   every committed batch and at least once a second while the session runs
//!   (so `dataAgeSeconds` moves);
//! - `events`: a `broadcast` of what was committed (fills, decisions, breaker
//!   transitions, autopilot adjustments) and of every price and phase change,
//!   in commit order. A subscriber that falls behind misses events (the
//!   stream tells it so) and never slows the session;
//! - `control`: requests (pause, resume, stop, breaker reset, hot reload),
//!   each answered on its own `oneshot`;
//! - `registry`: the Prometheus registry holding the session's metrics
//!   ([`metrics`]).
//!
//! [`start`] runs one session of a manifest (resuming its unfinished run,
//! or starting one) on the runner's pipeline, wall-clock paced, and keeps
//! the handle serving after the session ends. See [`session`] for what it
//! runs, [`control`] for how each request is answered, and [`status`] for
//! what is published and when.
//!
//! # Pause
//!
//! A paused session takes no new entries (a Buy signal is recorded as a
//! Skip saying so) but keeps managing its open positions: stop-loss,
//! take-profit, trailing stop, max hold time and Sell signals still exit.
//! Pausing is a risk decision about *new* exposure; freezing the exits of
//! open positions would leave them unprotected for as long as the pause
//! lasts. Candles keep flowing (marks, equity, breakers, data age stay
//! current). The paused state is in every checkpoint, so a restarted
//! runtime resumes paused; `desiredState: Paused` starts paused.
//!
//! # Hot reload
//!
//! `POST /v1/config` replaces the StrategyConfig in place: cash, positions,
//! pending orders, breaker states and history are kept (see
//! [`crate::engine::Engine::reload`] for the details: edited parameters take
//! their new value, autopilot-tuned ones keep theirs within the new bounds,
//! unchanged signal generators stay warm, changed ones warm up again). The
//! new strategy is recorded in the checkpoint committed with the reload (one
//! transaction), so a crash after the answer resumes with it, and a later
//! `--resume` accepts a manifest whose StrategyConfig equals the reloaded
//! one (and refuses one that differs from it).

mod control;
pub mod metrics;
mod session;
mod status;

use std::sync::Arc;

use paperbot_crds::{
    Speed,
    runtime_api::{ConfigUpdate, ControlResponse, RuntimePhase, RuntimeStatus},
};
use rust_decimal::Decimal;
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    task::JoinHandle,
};

pub use metrics::Metrics;
pub use session::{ServeEnd, ServeOutcome, effective_speed};

use crate::{
    config::SessionPlan,
    ledger::{
        LedgerStore,
        records::{
            AdjustmentOutcomeRecord, AdjustmentRecord, BreakerEventRecord, DecisionRecord,
            TradeRecord,
        },
    },
    runner::{RunError, RunOptions, StopSignal},
    types::Timestamp,
};

/// One live event, in commit order.
#[derive(Clone, Debug)]
pub enum RuntimeEvent {
    /// An order filled (or failed).
    Fill(TradeRecord),
    /// A decision with its reasoning (holds only when the session records them).
    Decision(DecisionRecord),
    /// A circuit breaker changed state.
    Breaker(BreakerEventRecord),
    /// The autopilot changed a parameter.
    Adjustment(AdjustmentRecord),
    /// The autopilot judged an earlier adjustment.
    AdjustmentOutcome(AdjustmentOutcomeRecord),
    /// A candle closed.
    Price {
        /// Symbol, e.g. `BTC-USD`.
        symbol: String,
        /// Close time (market time).
        time: Timestamp,
        /// Close price, base currency.
        close: Decimal,
    },
    /// The session's phase changed.
    Phase {
        /// The new phase.
        phase: RuntimePhase,
        /// Why, when there is more to say (a halt's or failure's reason).
        message: Option<String>,
    },
}

/// What a control request asks for.
#[derive(Clone, Debug)]
pub enum Control {
    /// Stop opening positions; exits stay managed.
    Pause,
    /// Trade again after a pause.
    Resume,
    /// End the session for good: final report, phase `Stopped`.
    Stop,
    /// Close one breaker (by its camelCase name, e.g. `dailyLoss`).
    ResetBreaker(String),
    /// Replace the strategy's parameters in place.
    Reload(Box<ConfigUpdate>),
}

/// Why a control request was refused (defined with the runner's control
/// requests, which carry the same answers).
pub use crate::runner::control::ControlError;

/// A control request with its reply channel.
#[derive(Debug)]
pub struct ControlRequest {
    /// What to do.
    pub command: Control,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<ControlResponse, ControlError>>,
}

/// How to serve a session.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// How the session runs (`resume` is always on; `speed` is replaced by
    /// [`effective_speed`] of the plan and `speed`).
    pub run: RunOptions,
    /// `--speed`: overrides `spec.marketData.speed`.
    pub speed: Option<Speed>,
    /// The ledger URL, to scrub its password out of the status's ledger
    /// errors.
    pub ledger_url: Option<String>,
}

/// Capacity of the live event stream: a subscriber that falls this far
/// behind misses events (the stream tells it so).
pub const EVENT_CAPACITY: usize = 4096;

/// Start serving `plan` (one BotSession) into `ledger`: returns the handle
/// at once (phase `Starting`) and the session task, which ends when the
/// session ends (the handle keeps serving its final status), is interrupted
/// by `stop` (recorded `Interrupted`, resumable), or cannot run. The ledger
/// is closed when the task ends. Must be called within a tokio runtime.
///
/// # Errors
/// [`RunError::Other`] when the metrics cannot be registered (not expected:
/// each handle has its own registry). The task's errors are those of
/// [`session`] (the process should exit non-zero; the session stays
/// resumable).
pub fn start<L: LedgerStore + Sync + 'static>(
    plan: SessionPlan,
    opts: ServeOptions,
    ledger: L,
    stop: Arc<StopSignal>,
) -> Result<(SessionHandle, JoinHandle<Result<ServeOutcome, RunError>>), RunError> {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(
        &registry,
        &metrics::SessionLabels {
            session: &plan.name,
            account: &plan.account_name,
            strategy: &plan.strategy_name,
            symbols: &plan.symbols,
        },
    )
    .map_err(|e| RunError::Other(format!("metrics: {e}")))?;
    let initial = plan.session.allocation.get();
    let (status_tx, status_rx) = watch::channel(RuntimeStatus {
        session: plan.name.clone(),
        phase: RuntimePhase::Starting,
        initial_cash: initial,
        cash: initial,
        equity: initial,
        message: Some("starting: validating the market data, opening the ledger".into()),
        ..Default::default()
    });
    let (events, _) = broadcast::channel(EVENT_CAPACITY);
    let (control_tx, control_rx) = mpsc::channel(16);
    let speed = effective_speed(&plan, opts.speed);
    let shared = Arc::new(status::Shared::new(
        status_tx,
        events.clone(),
        metrics,
        speed,
        session::plan_interval_ms(&plan),
        opts.ledger_url.clone(),
        plan.strategy_revision.clone(),
    ));
    tokio::spawn(control::control_loop(
        control_rx,
        shared.clone(),
        plan.clone(),
        opts.run.snapshot_interval_ms,
    ));
    tokio::spawn(shared.clone().refresh_every_second());
    let task = tokio::spawn(session::run(plan, opts.run, speed, ledger, stop, shared));
    Ok((
        SessionHandle {
            status: status_rx,
            events,
            control: control_tx,
            registry,
        },
        task,
    ))
}

/// The session side as the HTTP side sees it (cheap to clone).
#[derive(Clone, Debug)]
pub struct SessionHandle {
    /// The latest status.
    pub status: watch::Receiver<RuntimeStatus>,
    /// Live events (subscribe with `events.subscribe()`).
    pub events: broadcast::Sender<RuntimeEvent>,
    /// Control requests.
    pub control: mpsc::Sender<ControlRequest>,
    /// The session's Prometheus metrics.
    pub registry: prometheus::Registry,
}

impl SessionHandle {
    /// Send `command` and wait for its answer.
    ///
    /// # Errors
    /// The session's refusal, or [`ControlError::Unavailable`] when the
    /// session side has gone.
    pub async fn request(&self, command: Control) -> Result<ControlResponse, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(ControlRequest { command, reply })
            .await
            .map_err(|_| ControlError::Unavailable("the session is shutting down".into()))?;
        answer
            .await
            .map_err(|_| ControlError::Unavailable("the session is shutting down".into()))?
    }
}
