//! BotSession controller.
//!
//! Reconcile is a named pipeline; each step is one function:
//!
//! 1. [`resolve`] the PaperAccount and StrategyConfig references;
//! 2. [`check`] the session: its own spec rules, and that the allocations of
//!    the account's active sessions fit its balance (first come, first funded:
//!    sessions are funded in creation order, so a newcomer that does not fit
//!    is refused and the running ones keep running);
//! 3. build the children — a pure function, [`crate::builders::build_children`];
//! 4. [`apply_children`] with server-side apply and a fixed field manager,
//!    skipping unchanged ones (or scale an existing StatefulSet to zero when
//!    the session has a problem); the ledger storage is decided by
//!    [`crate::ledger::plan`] from the configuration and the live
//!    StatefulSet, and the ledger claim gets the owner the retention asks for;
//! 5. [`observe`] the StatefulSet and its pod, compute the desired status
//!    ([`crate::conditions::desired_session_status`]) and patch it only when
//!    it differs; Events mark phase changes and problems.
//!
//! A finalizer records the session's final figures (an Event and a log line)
//! before Kubernetes garbage-collects the children through their owner
//! references.

use std::sync::Arc;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service},
};
use kube::{
    Resource, ResourceExt,
    api::{Api, DeleteParams, ListParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event as KubeEvent, EventType},
        finalizer::{Event, finalizer},
    },
};
use paperbot_crds::{
    BotSession, BotSessionStatus, DesiredState, PaperAccount, SessionPhase, StrategyConfig,
};
use rand::RngExt;
use rust_decimal::Decimal;
use serde_json::json;
use tracing::{info, instrument, warn};

use super::{Context, FIELD_MANAGER, apply_if_changed, now};
use crate::metrics::ReconcileResult;
use crate::{
    Error, Result,
    builders::{BuildInput, build_children, child_name},
    conditions::{
        LEDGER_STORAGE_OUTDATED, LedgerObservation, SessionObservation, desired_session_status,
        status_differs,
    },
    ledger::{self, LedgerStorage},
};

/// Finalizer name on BotSessions.
pub const FINALIZER: &str = "paperbot.io/session-cleanup";

/// Controller name used in metrics and logs.
pub const CONTROLLER: &str = "botsession";

/// A problem in what the user declared: (reason, message). Reported in status
/// and Events, never retried as an error.
pub type Problem = (String, String);

/// Reconcile one BotSession.
#[instrument(skip_all, fields(session = %session.name_any(), namespace = session.namespace().unwrap_or_default()))]
pub async fn reconcile(session: Arc<BotSession>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.reconcile_timer(CONTROLLER);
    let ns = session
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<BotSession> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, session, |event| async {
        match event {
            Event::Apply(s) => apply(&s, &ctx).await,
            Event::Cleanup(s) => cleanup(&s, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    timer.finish(if result.is_ok() {
        ReconcileResult::Success
    } else {
        ReconcileResult::Error
    });
    result
}

/// The referenced account and strategy, or the problem that one is missing.
pub async fn resolve(
    s: &BotSession,
    ctx: &Context,
) -> Result<Result<(PaperAccount, StrategyConfig), Problem>> {
    let ns = s.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let accounts: Api<PaperAccount> = Api::namespaced(ctx.client.clone(), &ns);
    let strategies: Api<StrategyConfig> = Api::namespaced(ctx.client.clone(), &ns);
    let account = accounts.get_opt(&s.spec.account_ref.name).await?;
    let strategy = strategies.get_opt(&s.spec.strategy_ref.name).await?;
    Ok(match (account, strategy) {
        (None, _) => Err((
            "AccountNotFound".into(),
            format!(
                "PaperAccount {:?} not found in namespace {ns}: create it or fix spec.accountRef.name",
                s.spec.account_ref.name
            ),
        )),
        (_, None) => Err((
            "StrategyNotFound".into(),
            format!(
                "StrategyConfig {:?} not found in namespace {ns}: create it or fix spec.strategyRef.name",
                s.spec.strategy_ref.name
            ),
        )),
        (Some(a), Some(st)) => Ok((a, st)),
    })
}

/// Whether a session draws on its account's balance.
fn is_active(s: &BotSession) -> bool {
    s.spec.desired_state != DesiredState::Stopped && s.meta().deletion_timestamp.is_none()
}

/// Check the session against its own rules and its account's funds.
/// `siblings` are all BotSessions of the namespace (including `s`).
pub fn check(
    s: &BotSession,
    account: &PaperAccount,
    strategy: &StrategyConfig,
    siblings: &[BotSession],
) -> Option<Problem> {
    let invalid = |errs: Vec<paperbot_crds::FieldError>, kind: &str| {
        let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
        (
            "InvalidSpec".to_string(),
            format!("{kind}: {}", list.join("; ")),
        )
    };
    if let Err(e) = s.spec.validate() {
        return Some(invalid(e, "BotSession"));
    }
    if let Err(e) = strategy.spec.validate() {
        return Some(invalid(
            e,
            &format!("StrategyConfig {:?}", strategy.name_any()),
        ));
    }
    if let Err(e) = account.spec.validate() {
        return Some(invalid(
            e,
            &format!("PaperAccount {:?}", account.name_any()),
        ));
    }
    if !is_active(s) {
        return None;
    }
    let mut active: Vec<&BotSession> = siblings
        .iter()
        .filter(|o| o.spec.account_ref.name == s.spec.account_ref.name && is_active(o))
        .collect();
    if !active.iter().any(|o| o.name_any() == s.name_any()) {
        active.push(s);
    }
    active.sort_by(|a, b| {
        let key = |o: &BotSession| {
            (
                o.meta().creation_timestamp.as_ref().map(|t| t.0),
                o.name_any(),
            )
        };
        key(a).cmp(&key(b))
    });
    let balance = account.spec.initial_balance.get();
    let mut total = Decimal::ZERO;
    for o in active {
        total += o.spec.allocation.get();
        if o.name_any() == s.name_any() {
            if total > balance {
                return Some((
                    "InsufficientFunds".into(),
                    format!(
                        "allocation {} does not fit: active sessions of PaperAccount {:?} (funded in creation order) need {total} but its balance is {balance}",
                        s.spec.allocation,
                        account.name_any()
                    ),
                ));
            }
            break;
        }
    }
    None
}

/// The session's API token: the one already in its Secret, or a new random
/// one (32 bytes, hex), so re-applying never rotates it.
async fn api_token(secrets: &Api<Secret>, name: &str) -> Result<String> {
    if let Some(secret) = secrets.get_opt(name).await?
        && let Some(t) = secret.data.as_ref().and_then(|d| d.get("api-token"))
        && let Ok(t) = String::from_utf8(t.0.clone())
        && !t.is_empty()
    {
        return Ok(t);
    }
    let bytes: [u8; 32] = rand::rng().random();
    Ok(hex::encode(bytes))
}

/// What [`apply_children`] did.
#[derive(Debug)]
pub struct Applied {
    /// How many objects were written.
    pub written: usize,
    /// The session's ledger storage, for the status.
    pub ledger: LedgerObservation,
}

/// Build and apply the children.
///
/// 1. read the live StatefulSet (and, without one, whether the ledger claim
///    exists) and [`ledger::plan`] the ledger storage; a StatefulSet that
///    keeps the ledger on an emptyDir (an older operator) is deleted first,
///    with a Warning Event, and recreated below;
/// 2. build the children and server-side apply the changed ones;
/// 3. on a volume, give the ledger claim the owner the retention asks for
///    ([`ledger::claim_ownership_patch`]) and note whether it is bound.
pub async fn apply_children(
    s: &BotSession,
    account: &PaperAccount,
    strategy: &StrategyConfig,
    ctx: &Context,
) -> Result<Applied> {
    let ns = s.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let client = ctx.client.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let name = child_name(&s.name_any());
    let claim_name = ledger::claim_name(&name);

    let live = stateful_sets.get_opt(&name).await?;
    let mut claim = match live {
        None => claims.get_opt(&claim_name).await?,
        Some(_) => None,
    };
    let settings = &ctx.settings.ledger;
    let configured = LedgerStorage::configured(account, settings);
    let plan = ledger::plan(configured, live.as_ref(), claim.is_some(), settings);
    let mut written = 0;
    if plan.recreate {
        recreate_for_durable_ledger(s, &stateful_sets, &name, &plan.storage, &claim_name, ctx)
            .await?;
        written += 1;
    }

    let token = api_token(&secrets, &name).await?;
    let children = build_children(&BuildInput {
        session: s,
        account,
        strategy,
        settings: &ctx.settings,
        api_token: &token,
        ledger: &plan.storage,
    })?;
    let owner = children
        .stateful_set
        .metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.first().cloned())
        .ok_or(Error::MissingMetadata("uid"))?;
    written += apply_if_changed(
        &Api::<ConfigMap>::namespaced(client.clone(), &ns),
        children.config_map,
    )
    .await? as usize;
    written += apply_if_changed(&secrets, children.secret).await? as usize;
    written += apply_if_changed(
        &Api::<Service>::namespaced(client.clone(), &ns),
        children.service,
    )
    .await? as usize;
    written += apply_if_changed(&stateful_sets, children.stateful_set).await? as usize;

    let mut unbound_claim = None;
    if plan.storage.is_volume() {
        if live.is_some() {
            claim = claims.get_opt(&claim_name).await?;
        }
        if let Some(c) = &claim {
            if let Some(patch) = ledger::claim_ownership_patch(c, &owner, settings.retention) {
                claims
                    .patch(
                        &claim_name,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(patch),
                    )
                    .await?;
                written += 1;
            }
            let phase = c.status.as_ref().and_then(|st| st.phase.clone());
            if phase.as_deref() != Some("Bound") {
                unbound_claim = Some((claim_name.clone(), phase.unwrap_or("Pending".into())));
            }
        }
    }
    Ok(Applied {
        written,
        ledger: LedgerObservation {
            location: plan.storage.describe(&claim_name),
            outdated: plan.outdated.map(|o| o.describe(&claim_name)),
            unbound_claim,
        },
    })
}

/// Delete a StatefulSet that keeps the ledger on an emptyDir, so that it is
/// recreated with durable storage, and say so in a Warning Event: whatever
/// that pod recorded is lost with it (it would be on any reschedule anyway).
async fn recreate_for_durable_ledger(
    s: &BotSession,
    stateful_sets: &Api<StatefulSet>,
    name: &str,
    storage: &LedgerStorage,
    claim_name: &str,
    ctx: &Context,
) -> Result<()> {
    warn!(
        statefulset = name,
        "ledger on an emptyDir: recreating the StatefulSet with durable storage"
    );
    stateful_sets
        .delete(name, &DeleteParams::background())
        .await?;
    let ev = KubeEvent {
        type_: EventType::Warning,
        reason: "LedgerStorageMigrated".into(),
        note: Some(truncate(
            &format!(
                "StatefulSet {name} kept the ledger on an emptyDir (created by an older operator): \
                 recreated with the ledger in {}; what the old pod recorded on the emptyDir is lost with it",
                storage.describe(claim_name)
            ),
            1000,
        )),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &s.object_ref(&())).await {
        warn!(error = %e, "publishing event failed");
    }
    Ok(())
}

/// Scale an existing StatefulSet of the session to zero (a session with a
/// problem must not keep trading). No write when absent or already at zero.
async fn scale_to_zero(s: &BotSession, ctx: &Context) -> Result<()> {
    let ns = s.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let name = child_name(&s.name_any());
    if let Some(sts) = api.get_opt(&name).await?
        && sts.spec.as_ref().and_then(|sp| sp.replicas).unwrap_or(1) != 0
    {
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await?;
    }
    Ok(())
}

/// What the StatefulSet and its pod show, with the ledger storage when the
/// children were applied.
pub async fn observe(
    s: &BotSession,
    problem: Option<Problem>,
    ledger: Option<LedgerObservation>,
    ctx: &Context,
) -> Result<SessionObservation> {
    let ns = s.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = child_name(&s.name_any());
    let sts = Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await?;
    let pod_name = format!("{name}-0");
    let pod = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&pod_name)
        .await?;
    Ok(SessionObservation {
        ledger,
        ..observation(s, problem, sts.as_ref(), pod.as_ref())
    })
}

/// Pure part of [`observe`].
pub fn observation(
    s: &BotSession,
    problem: Option<Problem>,
    sts: Option<&StatefulSet>,
    pod: Option<&Pod>,
) -> SessionObservation {
    let st = sts.and_then(|x| x.status.as_ref());
    let sts_updated = match (sts, st) {
        (Some(sts), Some(st)) => {
            st.observed_generation >= sts.metadata.generation
                && st.update_revision.is_some()
                && st.current_revision == st.update_revision
        }
        _ => false,
    };
    let pod_status = pod.and_then(|p| p.status.as_ref());
    SessionObservation {
        generation: s.metadata.generation,
        desired: s.spec.desired_state,
        problem,
        sts_replicas: sts.and_then(|x| x.spec.as_ref()).and_then(|sp| sp.replicas),
        sts_ready_replicas: st.and_then(|x| x.ready_replicas).unwrap_or(0),
        sts_updated,
        pod_name: pod.map(|p| p.name_any()),
        pod_phase: pod_status.and_then(|p| p.phase.clone()),
        pod_ready: pod_status
            .and_then(|p| p.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        pod_waiting_reason: pod_status
            .and_then(|p| p.container_statuses.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
            }),
        ledger: None,
    }
}

async fn apply(s: &BotSession, ctx: &Context) -> Result<Action> {
    let ns = s.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let sessions: Api<BotSession> = Api::namespaced(ctx.client.clone(), &ns);
    let mut ledger = None;
    let problem = match resolve(s, ctx).await? {
        Err(p) => Some(p),
        Ok((account, strategy)) => {
            let siblings = sessions.list(&ListParams::default()).await?.items;
            match check(s, &account, &strategy, &siblings) {
                Some(p) => Some(p),
                None => {
                    let applied = apply_children(s, &account, &strategy, ctx).await?;
                    if applied.written > 0 {
                        info!(written = applied.written, "applied children");
                    }
                    ledger = Some(applied.ledger);
                    None
                }
            }
        }
    };
    if problem.is_some() {
        scale_to_zero(s, ctx).await?;
    }
    let obs = observe(s, problem.clone(), ledger, ctx).await?;
    let new = desired_session_status(s.status.as_ref(), &obs, &now());
    if status_differs(s.status.as_ref(), &new) {
        patch_status(&sessions, s, &new).await?;
        publish_events(s, s.status.as_ref(), &new, problem.as_ref(), ctx).await;
    }
    Ok(Action::requeue(ctx.sync_interval))
}

async fn patch_status(
    api: &Api<BotSession>,
    s: &BotSession,
    status: &BotSessionStatus,
) -> Result<()> {
    api.patch_status(
        &s.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(json!({
            "apiVersion": "paperbot.io/v1alpha1",
            "kind": "BotSession",
            "status": status,
        })),
    )
    .await?;
    Ok(())
}

/// Events for a phase change and for a new problem. Failures to publish are
/// logged, never fail the reconcile.
async fn publish_events(
    s: &BotSession,
    old: Option<&BotSessionStatus>,
    new: &BotSessionStatus,
    problem: Option<&Problem>,
    ctx: &Context,
) {
    let old_phase = old.map(|o| o.phase);
    let reference = s.object_ref(&());
    if let Some((reason, message)) = problem {
        let old_reason = old
            .and_then(|o| {
                o.conditions
                    .iter()
                    .find(|c| c.type_ == crate::conditions::READY)
            })
            .map(|c| c.reason.clone());
        if old_reason.as_deref() != Some(reason.as_str()) {
            let ev = KubeEvent {
                type_: EventType::Warning,
                reason: reason.clone(),
                note: Some(truncate(message, 1000)),
                action: "Validate".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
                warn!(error = %e, "publishing event failed");
            }
        }
    }
    let outdated = |st: Option<&BotSessionStatus>| {
        st.and_then(|st| {
            st.conditions
                .iter()
                .find(|c| c.type_ == LEDGER_STORAGE_OUTDATED && c.status == "True")
        })
        .map(|c| c.message.clone())
    };
    if let (None, Some(message)) = (outdated(old), outdated(Some(new))) {
        let ev = KubeEvent {
            type_: EventType::Warning,
            reason: LEDGER_STORAGE_OUTDATED.into(),
            note: Some(truncate(&message, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            warn!(error = %e, "publishing event failed");
        }
    }
    if old_phase != Some(new.phase) {
        let from = old_phase.map_or("None".to_string(), |p| format!("{p:?}"));
        let ev = KubeEvent {
            type_: if matches!(new.phase, SessionPhase::Failed | SessionPhase::Halted) {
                EventType::Warning
            } else {
                EventType::Normal
            },
            // One reason per target phase: the recorder folds events with the same
            // reason into a series, which would hide the new phase in the note.
            reason: format!("Phase{:?}", new.phase),
            note: Some(format!("{from} → {:?}", new.phase)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            warn!(error = %e, "publishing event failed");
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Record the final figures before the children are garbage-collected.
async fn cleanup(s: &BotSession, ctx: &Context) -> Result<Action> {
    let st = s.status.clone().unwrap_or_default();
    let fmt =
        |d: Option<paperbot_crds::DecimalString>| d.map_or("n/a".to_string(), |d| d.to_string());
    let figures = format!(
        "final figures: phase {:?}, equity {}, realized P&L {}, unrealized P&L {}, trades {}, win rate {}%, max drawdown {}%",
        st.phase,
        fmt(st.equity),
        fmt(st.realized_pnl),
        fmt(st.unrealized_pnl),
        st.trades,
        fmt(st.win_rate_pct),
        fmt(st.max_drawdown_pct),
    );
    info!(session = %s.name_any(), %figures, "session deleted");
    let ev = KubeEvent {
        type_: EventType::Normal,
        reason: "SessionDeleted".into(),
        note: Some(figures),
        action: "Cleanup".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &s.object_ref(&())).await {
        warn!(error = %e, "publishing event failed");
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(name: &str, alloc: &str, created_s: i64, state: &str) -> BotSession {
        serde_yaml::from_str(&format!(
            r#"apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {{name: {name}, namespace: ns, uid: "u-{name}", creationTimestamp: "2026-01-01T00:00:{created_s:02}Z"}}
spec:
  accountRef: {{name: acct}}
  strategyRef: {{name: strat}}
  allocation: "{alloc}"
  symbols: [BTC-USD]
  desiredState: {state}
  marketData: {{source: Simulated, simulated: {{seed: 1, candles: 10}}}}
"#
        ))
        .unwrap()
    }

    fn account(balance: &str) -> PaperAccount {
        serde_yaml::from_str(&format!(
            "apiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {{name: acct, namespace: ns}}\nspec: {{initialBalance: \"{balance}\"}}\n"
        ))
        .unwrap()
    }

    fn strategy() -> StrategyConfig {
        serde_yaml::from_str(
            "apiVersion: paperbot.io/v1alpha1\nkind: StrategyConfig\nmetadata: {name: strat, namespace: ns}\nspec: {signals: {rsi: {}}}\n",
        )
        .unwrap()
    }

    #[test]
    fn sessions_are_funded_in_creation_order() {
        let a = session("a", "600", 1, "Running");
        let b = session("b", "300", 2, "Running");
        let c = session("c", "200", 3, "Running");
        let all = vec![c.clone(), a.clone(), b.clone()];
        let acct = account("1000");
        assert_eq!(check(&a, &acct, &strategy(), &all), None);
        assert_eq!(check(&b, &acct, &strategy(), &all), None);
        let (reason, msg) = check(&c, &acct, &strategy(), &all).unwrap();
        assert_eq!(reason, "InsufficientFunds");
        assert!(msg.contains("need 1100 but its balance is 1000"), "{msg}");
    }

    #[test]
    fn stopped_sessions_release_their_allocation() {
        let a = session("a", "900", 1, "Stopped");
        let b = session("b", "900", 2, "Running");
        let all = vec![a.clone(), b.clone()];
        assert_eq!(check(&b, &account("1000"), &strategy(), &all), None);
        assert_eq!(check(&a, &account("1000"), &strategy(), &all), None);
    }

    #[test]
    fn invalid_specs_are_problems_not_errors() {
        let mut s = session("a", "100", 1, "Running");
        s.spec.symbols.clear();
        let (reason, msg) =
            check(&s, &account("1000"), &strategy(), std::slice::from_ref(&s)).unwrap();
        assert_eq!(reason, "InvalidSpec");
        assert!(msg.contains("spec.symbols"), "{msg}");
    }
}
