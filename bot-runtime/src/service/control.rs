//! The control loop: answers every [`ControlRequest`] of the handle by the
//! session's stage.
//!
//! | stage | pause / resume / reset / reload | stop |
//! |---|---|---|
//! | starting, shutting down | `Unavailable` | `Unavailable` |
//! | running | to the engine thread (answered after the commit that carries the change; `Unavailable` while the ledger is down) | ends the session: `Stopped`, answered once recorded |
//! | ended | `Conflict` naming the phase | OK, nothing to stop |
//!
//! A breaker name that is not a breaker is `NotFound` with the configured
//! breakers listed; a reload is validated here (`BadRequest` naming the
//! field) before it reaches the engine.

use std::sync::Arc;

use paperbot_crds::runtime_api::{ControlResponse, RuntimePhase};
use tokio::sync::mpsc;

use crate::{
    breakers::BreakerKind,
    config::SessionPlan,
    engine::EngineConfig,
    runner::control::{Command, ControlError, Reload, reload_plan},
};

use super::{
    Control, ControlRequest,
    metrics::phase_name,
    status::{Shared, Stage},
};

/// What a request asked, for the answer of an ended session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Asked {
    Pause,
    Resume,
    Stop,
    ResetBreaker,
    Reload,
}

impl Asked {
    fn of(c: &Control) -> Self {
        match c {
            Control::Pause => Asked::Pause,
            Control::Resume => Asked::Resume,
            Control::Stop => Asked::Stop,
            Control::ResetBreaker(_) => Asked::ResetBreaker,
            Control::Reload(_) => Asked::Reload,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Asked::Pause => "pausing",
            Asked::Resume => "resuming",
            Asked::Stop => "stopping",
            Asked::ResetBreaker => "resetting a breaker",
            Asked::Reload => "reloading the strategy",
        }
    }
}

/// The answer of a session that ended with `phase`.
pub(super) fn answer_ended(
    asked: Asked,
    phase: RuntimePhase,
) -> Result<ControlResponse, ControlError> {
    let name = phase_name(phase);
    match asked {
        Asked::Stop => Ok(ControlResponse {
            phase,
            message: format!("the session already ended ({name}): nothing to stop"),
            effective_parameters: Default::default(),
        }),
        other => Err(ControlError::Conflict(format!(
            "the session has ended ({name}): {} is not possible; its final status is served \
             read-only",
            other.what()
        ))),
    }
}

/// Answer requests until every handle is dropped.
pub(super) async fn control_loop(
    mut rx: mpsc::Receiver<ControlRequest>,
    shared: Arc<Shared>,
    plan: SessionPlan,
    snapshot_interval_ms: i64,
) {
    while let Some(ControlRequest { command, reply }) = rx.recv().await {
        let asked = Asked::of(&command);
        // Checked before the stage lock: validation needs no engine.
        let command = match prepare(command, &shared, &plan, snapshot_interval_ms) {
            Ok(c) => c,
            Err(e) => {
                // An ended session answers by its end first.
                let answer = match shared.stage() {
                    Stage::Ended(phase) => answer_ended(asked, phase),
                    _ => Err(e),
                };
                let _ = reply.send(answer);
                continue;
            }
        };
        shared.with_stage(|stage| match stage {
            Stage::Starting => {
                let _ = reply.send(Err(ControlError::Unavailable(
                    "the session is starting (validating its data, opening the ledger, resuming); \
                     retry in a moment"
                        .into(),
                )));
            }
            Stage::ShuttingDown => {
                let _ = reply.send(Err(ControlError::Unavailable(
                    "the session is shutting down".into(),
                )));
            }
            Stage::Ended(phase) => {
                let _ = reply.send(answer_ended(asked, *phase));
            }
            Stage::Running(inbox) => inbox.push(command.into_command(reply)),
        });
    }
}

/// A request checked and ready for the engine thread (reply still to attach).
enum Prepared {
    Pause,
    Resume,
    Stop,
    Reset(BreakerKind),
    Reload(Box<Reload>),
}

impl Prepared {
    fn into_command(self, reply: crate::runner::control::Reply) -> Command {
        match self {
            Prepared::Pause => Command::Pause(reply),
            Prepared::Resume => Command::Resume(reply),
            Prepared::Stop => Command::Stop(reply),
            Prepared::Reset(k) => Command::ResetBreaker(k, reply),
            Prepared::Reload(r) => Command::Reload(r, reply),
        }
    }
}

/// Check what can be checked without the engine: the breaker name, the
/// strategy of a reload.
fn prepare(
    command: Control,
    shared: &Shared,
    plan: &SessionPlan,
    snapshot_interval_ms: i64,
) -> Result<Prepared, ControlError> {
    Ok(match command {
        Control::Pause => Prepared::Pause,
        Control::Resume => Prepared::Resume,
        Control::Stop => Prepared::Stop,
        Control::ResetBreaker(name) => match BreakerKind::parse(&name) {
            Some(kind) => Prepared::Reset(kind),
            None => {
                let configured: Vec<String> = shared
                    .status
                    .borrow()
                    .breakers
                    .iter()
                    .map(|b| b.name.clone())
                    .collect();
                return Err(ControlError::NotFound {
                    message: format!(
                        "no breaker named {name:?}: the configured breakers are {}",
                        configured.join(", ")
                    ),
                });
            }
        },
        Control::Reload(update) => {
            let next = reload_plan(plan, &update.strategy, update.revision.as_deref())?;
            Prepared::Reload(Box::new(Reload {
                config: EngineConfig::from_plan(&next, snapshot_interval_ms),
                strategy: update.strategy,
                revision: update.revision,
            }))
        }
    })
}
