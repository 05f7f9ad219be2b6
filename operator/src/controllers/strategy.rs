//! StrategyConfig controller: records which sessions use the strategy and
//! the effective parameters the autopilot reached in each.

use std::{collections::BTreeMap, sync::Arc};

use kube::{
    ResourceExt,
    api::{Api, ListParams, Patch, PatchParams},
    runtime::controller::Action,
};
use paperbot_crds::{BotSession, StrategyConfig, StrategyConfigStatus};
use serde_json::json;
use tracing::{instrument, warn};

use super::{Context, FIELD_MANAGER, now};
use crate::metrics::ReconcileResult;
use crate::{
    Error, Result,
    conditions::{READY, conditions_equal_ignoring_time, set_condition},
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

fn differs(old: Option<&StrategyConfigStatus>, new: &StrategyConfigStatus) -> bool {
    match old {
        None => true,
        Some(old) => {
            let strip = |s: &StrategyConfigStatus| StrategyConfigStatus {
                conditions: Vec::new(),
                ..s.clone()
            };
            strip(old) != strip(new)
                || !conditions_equal_ignoring_time(&old.conditions, &new.conditions)
        }
    }
}

/// Reconcile one StrategyConfig.
#[instrument(skip_all, fields(strategy = %strategy.name_any()))]
pub async fn reconcile(strategy: Arc<StrategyConfig>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.reconcile_timer(CONTROLLER);
    let result = async {
        let ns = strategy
            .namespace()
            .ok_or(Error::MissingMetadata("namespace"))?;
        let sessions = Api::<BotSession>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default())
            .await?
            .items;
        let new = desired_status(&strategy, &sessions, &now());
        if differs(strategy.status.as_ref(), &new) {
            Api::<StrategyConfig>::namespaced(ctx.client.clone(), &ns)
                .patch_status(
                    &strategy.name_any(),
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(json!({
                        "apiVersion": "paperbot.io/v1alpha1",
                        "kind": "StrategyConfig",
                        "status": new,
                    })),
                )
                .await?;
        }
        Ok(Action::requeue(ctx.sync_interval))
    }
    .await;
    timer.finish(if result.is_ok() {
        ReconcileResult::Success
    } else {
        ReconcileResult::Error
    });
    result
}

/// Requeue after an error, counting it.
pub fn error_policy(strategy: Arc<StrategyConfig>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(strategy = %strategy.name_any(), error = %err, "reconcile failed");
    ctx.metrics.record_error(CONTROLLER, err.metric_label());
    Action::requeue(std::time::Duration::from_secs(5))
}
