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

/// The status a strategy should have, given the sessions of its namespace.
pub fn desired_status(
    strategy: &StrategyConfig,
    sessions: &[BotSession],
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> StrategyConfigStatus {
    let name = strategy.name_any();
    let users: Vec<&BotSession> = sessions
        .iter()
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
    reconcile_status_from_sessions(
        strategy,
        ctx,
        CONTROLLER,
        |s, sessions| desired_status(s, sessions, &now()),
        |s| s.status.as_ref(),
    )
    .await
}
