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
//! - `registry`: the Prometheus registry holding the session's metrics.

use paperbot_crds::runtime_api::{ConfigUpdate, ControlResponse, RuntimePhase, RuntimeStatus};
use rust_decimal::Decimal;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::{
    ledger::records::{
        AdjustmentOutcomeRecord, AdjustmentRecord, BreakerEventRecord, DecisionRecord, TradeRecord,
    },
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

/// Why a control request was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ControlError {
    /// A named thing does not exist (e.g. a breaker that is not configured).
    #[error("{message}")]
    NotFound {
        /// What was looked for and what exists.
        message: String,
    },
    /// The request's content is invalid.
    #[error("{field}: {message}")]
    BadRequest {
        /// JSON path of the offending field.
        field: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// The request does not fit the session's state (e.g. resume after the end).
    #[error("{0}")]
    Conflict(String),
    /// The session cannot take requests now (starting, or the ledger is down).
    #[error("{0}")]
    Unavailable(String),
}

/// A control request with its reply channel.
#[derive(Debug)]
pub struct ControlRequest {
    /// What to do.
    pub command: Control,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<ControlResponse, ControlError>>,
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
