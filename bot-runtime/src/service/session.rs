//! The session task of `bot-runtime serve`: decide what to run, run it on
//! the runner's pipeline with the live hooks, and publish how it ended.
//!
//! 1. The newest run of the BotSession has ended (Completed, Halted,
//!    Stopped, Failed — e.g. the pod restarted after the end): nothing is
//!    started; its final status is rebuilt from the ledger (figures and
//!    analytics from its records, positions, breakers and autopilot from its
//!    last checkpoint) and served.
//! 2. `desiredState: Stopped`: an unfinished run is ended as `Stopped`
//!    (resumed and stopped before its next candle); without one nothing is
//!    started.
//! 3. Otherwise the unfinished run is resumed, or a new one started
//!    (`run --resume`), paused from the start when `desiredState: Paused`.

use std::sync::Arc;

use paperbot_crds::{
    DesiredState, MarketDataSource, Speed,
    runtime_api::{ControlResponse, RuntimePhase, RuntimeStatus},
};
use tokio::sync::oneshot;

use crate::{
    config::SessionPlan,
    engine::{Engine, EngineConfig},
    ledger::{LedgerStore, SessionInfo},
    rebuild,
    runner::{
        self, Checkpoint, RunError, RunOptions, StopSignal,
        control::{Command, ControlError, Inbox, Live, LiveSnapshot},
    },
    types::Timestamp,
};

use super::status::{Publisher, Shared, Stage, apply_figures};

/// How a serving session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeEnd {
    /// The session has ended for good (this run, or before this process
    /// started); the API keeps serving its final status.
    Final(RuntimePhase),
    /// A stop signal interrupted it (recorded `Interrupted`, resumable).
    Interrupted,
}

/// The outcome of the session task.
#[derive(Clone, Debug)]
pub struct ServeOutcome {
    /// The ledger session id (`None` when nothing was ever started).
    pub session_id: Option<String>,
    /// How it ended.
    pub end: ServeEnd,
}

/// The speed a session runs at: `--speed` if given, else
/// `spec.marketData.speed`, else real time for a simulated market and as
/// fast as possible for a replay. `None` = as fast as possible.
pub fn effective_speed(plan: &SessionPlan, flag: Option<Speed>) -> Option<f64> {
    let speed =
        flag.or(plan.session.market_data.speed)
            .unwrap_or(match plan.session.market_data.source {
                MarketDataSource::Simulated => Speed::Factor(rust_decimal::Decimal::ONE),
                MarketDataSource::Replay => Speed::Max,
                // Live prices arrive in real time; the spec refuses a speed.
                MarketDataSource::Live => Speed::Factor(rust_decimal::Decimal::ONE),
            });
    speed.factor()
}

/// Whether the market is simulated without a start of its own (it then
/// starts at the wall clock).
pub(super) fn starts_at_wall_clock(plan: &SessionPlan) -> bool {
    plan.session.market_data.source == MarketDataSource::Simulated
        && plan
            .session
            .market_data
            .simulated
            .as_ref()
            .is_some_and(|s| s.start.is_none())
}

/// Candle interval of the plan's market data, ms (60 s when not known
/// before the first candle).
pub(super) fn plan_interval_ms(plan: &SessionPlan) -> i64 {
    match plan.session.market_data.source {
        MarketDataSource::Simulated => plan
            .session
            .market_data
            .simulated
            .as_ref()
            .map_or(60_000, |s| s.interval.as_millis_i64().max(1)),
        MarketDataSource::Replay => plan
            .replay
            .iter()
            .find_map(|r| r.interval_ms)
            .unwrap_or(60_000),
        MarketDataSource::Live => plan.live.as_ref().map_or(60_000, |l| l.interval_ms.max(1)),
    }
}

/// The session task (see the module docs). The ledger is closed before it
/// returns.
///
/// # Errors
/// What keeps the session from running: the ledger (unreachable, another
/// writer, failing past its retry budget), a manifest that no longer
/// matches the unfinished run, bad market data found before trading. The
/// session stays resumable; the process should exit non-zero so that its
/// supervisor restarts it.
pub(super) async fn run<L: LedgerStore + Sync + 'static>(
    plan: SessionPlan,
    opts: RunOptions,
    speed: Option<f64>,
    mut ledger: L,
    stop: Arc<StopSignal>,
    shared: Arc<Shared>,
) -> Result<ServeOutcome, RunError> {
    let result = run_inner(&plan, opts, speed, &mut ledger, stop, &shared).await;
    ledger.close().await;
    match &result {
        Ok(ServeOutcome {
            end: ServeEnd::Final(_),
            ..
        }) => {}
        Ok(_) => shared.set_stage(Stage::ShuttingDown),
        Err(e) => {
            shared.set_stage(Stage::ShuttingDown);
            shared.publish(|s| {
                s.message = Some(format!("cannot run: {e}"));
            });
        }
    }
    result
}

async fn run_inner<L: LedgerStore + Sync + 'static>(
    plan: &SessionPlan,
    mut opts: RunOptions,
    speed: Option<f64>,
    ledger: &mut L,
    stop: Arc<StopSignal>,
    shared: &Arc<Shared>,
) -> Result<ServeOutcome, RunError> {
    let newest: Option<SessionInfo> = ledger
        .list_sessions()
        .await?
        .into_iter()
        .find(|s| s.name == plan.name);
    if let Some(info) = newest.as_ref().filter(|s| !s.is_unfinished()) {
        tracing::info!(
            session = %info.id,
            phase = %info.phase,
            "the newest run of this session has ended: nothing to run, serving its final status"
        );
        let status = ended_status(ledger, plan, info).await;
        let phase = status.phase;
        shared.set_stage(Stage::Ended(phase));
        shared.publish(|s| *s = status);
        return Ok(ServeOutcome {
            session_id: Some(info.id.clone()),
            end: ServeEnd::Final(phase),
        });
    }
    let unfinished = newest;
    if plan.session.desired_state == DesiredState::Stopped && unfinished.is_none() {
        shared.set_stage(Stage::Ended(RuntimePhase::Stopped));
        shared.publish(|s| {
            s.phase = RuntimePhase::Stopped;
            s.message = Some("desiredState is Stopped: nothing was started".into());
        });
        return Ok(ServeOutcome {
            session_id: None,
            end: ServeEnd::Final(RuntimePhase::Stopped),
        });
    }

    // The simulated market starts at the wall clock, aligned to its interval
    // (market time ≈ wall time); a resumed run at the start it recorded.
    let sim_start = starts_at_wall_clock(plan).then(|| match &unfinished {
        Some(info) => info.started_at,
        None => {
            let iv = plan_interval_ms(plan);
            let now = chrono::Utc::now().timestamp_millis();
            Timestamp(now - now.rem_euclid(iv))
        }
    });
    let prepared = {
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || runner::prepare_with_start(plan, sim_start))
            .await
            .map_err(|e| RunError::Other(format!("input validation thread failed: {e}")))??
    };
    for w in &prepared.warnings {
        tracing::warn!(session = %plan.name, "{w}");
    }
    shared.set_live(prepared.feed.live_stats());
    if stop.is_requested() {
        return Ok(ServeOutcome {
            session_id: unfinished.map(|u| u.id),
            end: ServeEnd::Interrupted,
        });
    }

    let inbox = Arc::new(Inbox::new(stop.clone()));
    if plan.session.desired_state == DesiredState::Stopped {
        // Resume the unfinished run only to end it before its next candle.
        let (reply, _) = oneshot::channel();
        inbox.push(Command::Stop(reply));
    }
    let live = Live {
        inbox: inbox.clone(),
        observer: Box::new(Publisher::new(shared.clone(), inbox.clone())),
        decision_latency: Some(shared.metrics.decision_latency.clone()),
        start_paused: plan.session.desired_state == DesiredState::Paused,
        wall_clock: speed == Some(1.0) && starts_at_wall_clock(plan),
        health: shared.health.clone(),
    };
    opts.speed = speed;
    opts.resume = true;
    tracing::info!(
        session = %plan.name,
        symbols = ?plan.symbols,
        speed = %speed.map_or_else(|| "max".to_string(), |s| s.to_string()),
        "serving session"
    );
    let result = runner::run_session_live(prepared, &opts, stop, ledger, Some(live)).await;
    let (outcome, failure) = match result {
        Ok(out) => (Some(out), None),
        Err(e @ (RunError::Engine { .. } | RunError::Data(_))) => (None, Some(e.to_string())),
        Err(e) => {
            drain(&inbox, shared, None);
            return Err(e);
        }
    };
    let phase = match (&outcome, &failure) {
        (_, Some(_)) => Some(RuntimePhase::Failed),
        (Some(out), None) => match out.phase.as_str() {
            "Completed" => Some(RuntimePhase::Completed),
            "Halted" => Some(RuntimePhase::Halted),
            "Stopped" => Some(RuntimePhase::Stopped),
            "Failed" => Some(RuntimePhase::Failed),
            _ => None, // Interrupted
        },
        (None, None) => None,
    };
    let Some(phase) = phase else {
        drain(&inbox, shared, None);
        return Ok(ServeOutcome {
            session_id: outcome.map(|o| o.session_id),
            end: ServeEnd::Interrupted,
        });
    };
    let message = match (&failure, phase) {
        (Some(reason), _) => Some(reason.clone()),
        (None, RuntimePhase::Halted) => Some(halt_message(&shared.status.borrow())),
        (None, RuntimePhase::Stopped) => Some("stopped by request: ended for good".into()),
        (None, _) => Some("the market data ended (or stopAfter was reached)".into()),
    };
    shared.set_stage(Stage::Ended(phase));
    shared.publish(|s| {
        s.phase = phase;
        s.message = message;
        if let Some(out) = &outcome {
            s.session_id = out.session_id.clone();
            s.roi_pct = out.summary.roi_pct.round_dp(4).normalize();
        }
        s.data_age_seconds = None;
    });
    tracing::info!(session = %plan.name, phase = ?phase, "session ended: serving its final status");
    let session_id = outcome.as_ref().map(|o| o.session_id.clone());
    if let Some(reply) = outcome.and_then(|o| o.stop_reply) {
        let _ = reply.send(Ok(ControlResponse {
            phase,
            message: "stopped: the session ended for good; final report written".into(),
            effective_parameters: Default::default(),
        }));
    }
    drain(&inbox, shared, Some(phase));
    Ok(ServeOutcome {
        session_id: session_id.or_else(|| unfinished.map(|u| u.id)),
        end: ServeEnd::Final(phase),
    })
}

/// Answer the requests left in the inbox after the engine thread ended:
/// as an ended session does (`phase`), or as unavailable while shutting down.
fn drain(inbox: &Inbox, shared: &Shared, phase: Option<RuntimePhase>) {
    // Under the stage lock: no request is pushed after this.
    shared.with_stage(|stage| {
        *stage = match phase {
            Some(p) => Stage::Ended(p),
            None => Stage::ShuttingDown,
        };
    });
    while let Some(cmd) = inbox.pop() {
        let answer = match phase {
            Some(p) => super::control::answer_ended(asked(&cmd), p),
            None => Err(ControlError::Unavailable(
                "the session is shutting down".into(),
            )),
        };
        cmd.answer(answer);
    }
}

/// What a queued command asks, for an answer after the end.
fn asked(cmd: &Command) -> super::control::Asked {
    use super::control::Asked;
    match cmd {
        Command::Pause(_) => Asked::Pause,
        Command::Resume(_) => Asked::Resume,
        Command::Stop(_) => Asked::Stop,
        Command::ResetBreaker(..) => Asked::ResetBreaker,
        Command::Reload(..) => Asked::Reload,
    }
}

/// Why a session halted: its open kill-switch breaker.
fn halt_message(s: &RuntimeStatus) -> String {
    s.breakers
        .iter()
        .find(|b| {
            b.state == paperbot_crds::BreakerState::Open
                && matches!(b.name.as_str(), "accountMaxDrawdown" | "accountDailyLoss")
        })
        .map_or_else(
            || "halted by the account kill switch".into(),
            |b| {
                format!(
                    "halted by the account kill switch {}: {}",
                    b.name,
                    b.reason.as_deref().unwrap_or("tripped")
                )
            },
        )
}

/// The final status of an ended run, rebuilt from the ledger: figures and
/// analytics from its committed records and last checkpoint; positions,
/// breakers and the autopilot from the engine restored from that checkpoint
/// (left empty, with a warning in the log, when the checkpoint no longer
/// fits the manifest).
pub(super) async fn ended_status<L: LedgerStore>(
    ledger: &L,
    plan: &SessionPlan,
    info: &SessionInfo,
) -> RuntimeStatus {
    let phase = match info.phase.as_str() {
        "Completed" => RuntimePhase::Completed,
        "Halted" => RuntimePhase::Halted,
        "Stopped" => RuntimePhase::Stopped,
        _ => RuntimePhase::Failed,
    };
    let mut status = RuntimeStatus {
        session: plan.name.clone(),
        session_id: info.id.clone(),
        phase,
        ready: true,
        initial_cash: info.initial_cash,
        cash: info.cash,
        equity: info.equity,
        ..Default::default()
    };
    let checkpoint = match ledger.checkpoint(&info.id).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(session = %info.id, error = %e, "cannot read the final checkpoint");
            None
        }
    };
    let folded = match rebuild::fold(ledger, info, checkpoint.as_deref(), None).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(session = %info.id, error = %e, "cannot rebuild the final figures");
            status.message = Some(format!("ended {}; figures not available: {e}", info.phase));
            return status;
        }
    };
    let parsed = checkpoint.as_deref().map(Checkpoint::from_json);
    let snapshot = match parsed {
        Some(Ok(cp)) => restored_snapshot(plan, &cp).unwrap_or_else(|e| {
            tracing::warn!(
                session = %info.id,
                "positions, breakers and autopilot of the ended run are not shown: {e}"
            );
            LiveSnapshot {
                candles: cp.candles,
                ..Default::default()
            }
        }),
        _ => LiveSnapshot::default(),
    };
    apply_figures(&mut status, &folded.state, &snapshot, &folded.analytics);
    status.message = Some(
        match (phase, checkpoint.as_deref().map(Checkpoint::from_json)) {
            (RuntimePhase::Failed, Some(Ok(cp))) => cp.engine.failure().map_or_else(
                || "failed (see the log of that run)".into(),
                |f| format!("failed: {f}"),
            ),
            (RuntimePhase::Halted, _) => halt_message(&status),
            _ => format!("ended {} (before this process started)", info.phase),
        },
    );
    status
}

/// The live snapshot of the engine restored from an ended run's checkpoint.
fn restored_snapshot(plan: &SessionPlan, cp: &Checkpoint) -> Result<LiveSnapshot, String> {
    let plan = match &cp.strategy {
        None => plan.clone(),
        Some(r) => runner::control::reload_plan(plan, &r.spec, r.revision.as_deref())
            .map_err(|e| e.to_string())?,
    };
    let cfg = EngineConfig::from_plan(&plan, cp.snapshot_interval_ms);
    let engine = Engine::restore(cfg, cp.engine.clone()).map_err(|e| e.to_string())?;
    Ok(runner::snapshot_of(
        &engine,
        cp.candles,
        cp.strategy.as_ref(),
    ))
}
