//! StrategyConfig controller: records which sessions use the strategy and
//! the effective parameters the autopilot reached in each.

use std::{collections::BTreeMap, sync::Arc};

use kube::{ResourceExt, runtime::controller::Action};
use paperbot_crds::{BotSession, StrategyConfig, StrategyConfigStatus};
use tracing::instrument;

use super::{Context, now, reconcile_status_from_sessions};
use crate::{
    Result,
    conditions::{READY, set_condition},
};

/// Controller name used in metrics and logs.
pub const CONTROLLER: &str = "strategyconfig";

/// What of a session its strategy's status depends on: which strategy, and
/// the autopilot's effective parameters. [`desired_status`] reads nothing
/// else of a session (see [`super::account::session_inputs`]).
pub fn session_inputs(s: &BotSession) -> impl PartialEq + use<> {
    (
        s.spec.strategy_ref.name.clone(),
        s.status
            .as_ref()
            .and_then(|st| st.autopilot.as_ref())
            .map(|ap| ap.effective_parameters.clone()),
    )
}

/// The status a strategy should have, given the sessions of its namespace.
pub fn desired_status(
    strategy: &StrategyConfig,
    sessions: &[Arc<BotSession>],
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> StrategyConfigStatus {
    let name = strategy.name_any();
    let users: Vec<&BotSession> = sessions
        .iter()
        .map(|s| &**s)
        .filter(|s| s.spec.strategy_ref.name == name)
        .collect();
    let mut status = strategy.status.clone().unwrap_or_default();
    status.session_count = users.len() as u32;
    status.effective_parameters = users
        .iter()
        .filter_map(|s| {
            let ap = s.status.as_ref()?.autopilot.as_ref()?;
            (!ap.effective_parameters.is_empty())
                .then(|| (s.name_any(), ap.effective_parameters.clone()))
        })
        .collect::<BTreeMap<_, _>>();
    status.observed_generation = strategy.metadata.generation;
    let (ok, reason, message) = match strategy.spec.validate() {
        Ok(()) => (
            true,
            "Valid".to_string(),
            format!("used by {} session(s)", users.len()),
        ),
        Err(errs) => (
            false,
            "InvalidSpec".to_string(),
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    set_condition(
        &mut status.conditions,
        READY,
        ok.into(),
        &reason,
        &message,
        strategy.metadata.generation,
        now,
    );
    status
}

/// Reconcile one StrategyConfig.
#[instrument(skip_all, fields(strategy = %strategy.name_any()))]
pub async fn reconcile(strategy: Arc<StrategyConfig>, ctx: Arc<Context>) -> Result<Action> {
    let latest = ctx.fresh.clone();
    reconcile_status_from_sessions(
        strategy,
        ctx,
        CONTROLLER,
        &latest.strategies,
        |s, sessions| desired_status(s, sessions, &now()),
        |s| s.status.as_ref(),
    )
    .await
}
