//! Requests to a running session (pause, resume, stop, breaker reset, hot
//! reload) on their way to the engine thread, and what the engine thread
//! publishes for a serving session.
//!
//! The engine thread takes requests between two candles (a paced run is
//! woken for them at once, see [`StopSignal::notify`]). A request that
//! changes the session is answered only after the batch that carries the
//! change — and the checkpoint that keeps it across restarts — is committed,
//! and after the status reflects it: an `Ok` answer means the change is
//! durable and visible. A request that changes nothing is answered at once.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use paperbot_crds::{
    AutopilotStatus, BreakerStatus, StrategyConfigSpec,
    runtime_api::{ControlResponse, PositionStatus},
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::{
    analytics::Analytics,
    breakers::BreakerKind,
    config::SessionPlan,
    engine::{EngineConfig, EngineState},
    ledger::records::LedgerBatch,
    params::EffectiveParams,
    types::Timestamp,
};

use super::stop::StopSignal;

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

/// Where the answer to a request goes.
pub type Reply = oneshot::Sender<Result<ControlResponse, ControlError>>;

/// A request for the engine thread.
#[derive(Debug)]
pub enum Command {
    /// No new entries (exits stay managed).
    Pause(Reply),
    /// Trade again.
    Resume(Reply),
    /// End the session for good (phase `Stopped`); answered once the end is
    /// recorded and the final report written.
    Stop(Reply),
    /// Close one breaker.
    ResetBreaker(BreakerKind, Reply),
    /// Replace the strategy (already validated, see [`reload_plan`]).
    Reload(Box<Reload>, Reply),
}

impl Command {
    /// Answer the request with `answer` (a requester that gave up is ignored).
    pub fn answer(self, answer: Result<ControlResponse, ControlError>) {
        let reply = match self {
            Command::Pause(r)
            | Command::Resume(r)
            | Command::Stop(r)
            | Command::ResetBreaker(_, r)
            | Command::Reload(_, r) => r,
        };
        let _ = reply.send(answer);
    }
}

/// A validated strategy reload.
#[derive(Debug)]
pub struct Reload {
    /// The new StrategyConfig spec (recorded in every later checkpoint).
    pub strategy: StrategyConfigSpec,
    /// The revision to echo in the status.
    pub revision: Option<String>,
    /// The engine configuration with the new strategy.
    pub config: EngineConfig,
}

/// A strategy put in force by a hot reload, as the runner's checkpoint keeps
/// it: a resumed session runs it instead of the manifest's StrategyConfig
/// (and accepts a manifest that carries it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReloadedStrategy {
    /// The StrategyConfig spec in force.
    pub spec: StrategyConfigSpec,
    /// The revision it was sent with (`ConfigUpdate::revision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// Longest `revision` of a reload, in characters.
pub const MAX_REVISION_LENGTH: usize = 63;

/// `plan` with `strategy` in place of its StrategyConfig: the spec checked
/// as `kubectl apply` would (`validate()`, then the parameter derivation
/// with the account's kill-switch limits) and `revision` checked.
///
/// # Errors
/// [`ControlError::BadRequest`] naming the field as the request body has it
/// (`strategy.risk.stopLossPct`, `revision`) and what is expected; several
/// broken rules are joined with `; ` under the first one's field.
pub fn reload_plan(
    plan: &SessionPlan,
    strategy: &StrategyConfigSpec,
    revision: Option<&str>,
) -> Result<SessionPlan, ControlError> {
    if let Some(r) = revision
        && r.chars().count() > MAX_REVISION_LENGTH
    {
        return Err(ControlError::BadRequest {
            field: "revision".into(),
            message: format!(
                "is {} characters long: expected at most {MAX_REVISION_LENGTH}",
                r.chars().count()
            ),
        });
    }
    let body_path = |p: &str| match p.strip_prefix("spec.") {
        Some(rest) => format!("strategy.{rest}"),
        None if p == "spec" => "strategy".into(),
        None => format!("strategy.{p}"),
    };
    if let Err(errors) = strategy.validate() {
        let field = errors
            .first()
            .map_or_else(|| "strategy".into(), |e| body_path(&e.path));
        let message = errors
            .iter()
            .map(|e| format!("{}: {}", body_path(&e.path), e.message))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ControlError::BadRequest { field, message });
    }
    let limits = plan.account.limits.clone().unwrap_or_default();
    let params = EffectiveParams::resolve(
        strategy,
        limits.max_drawdown_pct.map(|v| v.get()),
        limits.daily_loss_pct.map(|v| v.get()),
    )
    .map_err(|message| ControlError::BadRequest {
        field: "strategy.autopilot.bounds".into(),
        message,
    })?;
    let mut next = plan.clone();
    next.strategy = strategy.clone();
    next.params = params;
    Ok(next)
}

/// Requests waiting for the engine thread. Pushing one wakes a paced
/// engine thread that waits for its next candle.
#[derive(Debug)]
pub struct Inbox {
    queue: Mutex<VecDeque<Command>>,
    len: AtomicUsize,
    wake: Arc<StopSignal>,
}

impl Inbox {
    /// An empty inbox that wakes the sleepers of `wake` (the run's stop signal).
    pub fn new(wake: Arc<StopSignal>) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            wake,
        }
    }

    /// Queue `cmd` and wake the engine thread.
    pub fn push(&self, cmd: Command) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.push_back(cmd);
            self.len.store(q.len(), Ordering::SeqCst);
        }
        self.wake.notify();
    }

    /// Whether a request waits (one atomic load: checked between candles).
    pub fn has_pending(&self) -> bool {
        self.len.load(Ordering::Relaxed) > 0
    }

    /// The oldest waiting request.
    pub fn pop(&self) -> Option<Command> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let cmd = q.pop_front();
        self.len.store(q.len(), Ordering::SeqCst);
        cmd
    }
}

/// The last candle the engine traded, for the status's data age.
#[derive(Clone, Copy, Debug)]
pub struct LastCandle {
    /// Its close time (market time).
    pub close_time: Timestamp,
    /// Its length, ms.
    pub interval_ms: i64,
    /// When the engine traded it (wall clock).
    pub traded_at: Instant,
}

/// What only the engine knows, taken with each committed batch of a serving
/// session (the instant of the batch's checkpoint).
#[derive(Clone, Debug, Default)]
pub struct LiveSnapshot {
    /// Paused by request.
    pub paused: bool,
    /// Current fall of equity from its peak, percent.
    pub drawdown_pct: Decimal,
    /// Open positions with their marks.
    pub positions: Vec<PositionStatus>,
    /// Every configured breaker.
    pub breakers: Vec<BreakerStatus>,
    /// The autopilot.
    pub autopilot: AutopilotStatus,
    /// Candles traded so far.
    pub candles: u64,
    /// The last candle traded.
    pub last_candle: Option<LastCandle>,
    /// The latest close of each symbol traded since the previous batch:
    /// `(symbol, close time, close)`.
    pub prices: Vec<(String, Timestamp, Decimal)>,
    /// Revision of the strategy in force (of the last reload).
    pub strategy_revision: Option<String>,
    /// Candles the feed guard rejected so far.
    pub rejected_ticks: u64,
    /// Hold decisions so far (counted even when not recorded).
    pub holds: u64,
}

/// One committed batch as a serving session's observer sees it.
pub struct Committed<'a> {
    /// The batch's records.
    pub batch: &'a LedgerBatch,
    /// The engine's figures after it.
    pub state: &'a EngineState,
    /// What the engine published with it.
    pub snapshot: &'a LiveSnapshot,
    /// Every committed record folded in.
    pub analytics: &'a Analytics,
    /// Wall time the commit took (its retries included), seconds.
    pub commit_seconds: f64,
    /// Requests whose change this batch carries, with their answers: send
    /// them once the status shows the change.
    pub replies: Vec<(Reply, ControlResponse)>,
}

/// Receives a serving session's committed state, in commit order, on the
/// report thread (so it must not block for long).
pub trait Observer: Send {
    /// The session is open (started or resumed) and about to trade:
    /// `session_id`, whether it resumed, and the state it starts from
    /// (`analytics` holds every record already committed).
    fn started(
        &mut self,
        session_id: &str,
        resumed: bool,
        state: &EngineState,
        snapshot: &LiveSnapshot,
        analytics: &Analytics,
    );

    /// A batch was committed and folded into the analytics.
    fn committed(&mut self, c: Committed<'_>);
}

/// What a serving session adds to a run.
pub struct Live {
    /// Requests for the engine thread.
    pub inbox: Arc<Inbox>,
    /// Gets every committed batch.
    pub observer: Box<dyn Observer>,
    /// Engine time per candle, seconds (observed on the engine thread).
    pub decision_latency: Option<prometheus::Histogram>,
    /// Start paused (the manifest's `desiredState: Paused`); a checkpoint
    /// taken while paused resumes paused either way.
    pub start_paused: bool,
    /// Pace by the wall clock: market time `t` is due when the wall clock
    /// reads `t` (at speed 1; see [`super::RunOptions::speed`]), candles
    /// already due are traded at once. For a simulated market that starts
    /// at the wall clock.
    pub wall_clock: bool,
    /// Shared with the status: whether the ledger takes commits.
    pub health: Arc<super::LedgerHealth>,
}
