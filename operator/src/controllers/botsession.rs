//! BotSession controller.
//!
//! Reconcile is a named pipeline; each step is one function, and every read
//! comes from the stores ([`crate::stores`]):
//!
//! 1. [`ensure_finalizer`] (the finalizer records the session's final
//!    figures when it is deleted);
//! 2. [`resolve`] the PaperAccount and StrategyConfig references;
//! 3. [`check`] the session: its own spec rules, and that the allocations of
//!    the account's active sessions fit its balance (first come, first funded:
//!    sessions are funded in creation order, so a newcomer that does not fit
//!    is refused and the running ones keep running);
//! 4. [`apply_children`]: build the children — a pure function,
//!    [`crate::builders::build_children`] — and apply each through the one
//!    apply path, [`super::apply_child`], which writes only what changed or
//!    drifted. A session with a problem keeps its children, suspended (no
//!    replica), so that it resumes when the problem goes. The ledger storage
//!    is decided by [`crate::ledger::plan`], and the ledger claim gets the
//!    owner the retention asks for;
//! 5. [`observation`] of the StatefulSet and its pod, the desired status
//!    ([`crate::conditions::desired_session_status`]), written only when it
//!    differs; Events mark phase changes, problems and reverted drift.
//!
//! With `--shared-feed`, steps 4 and [`cleanup`] also bring the namespace's
//! shared market-data feeds in line with its live sessions
//! ([`crate::feed::reconcile_namespace`]).
//!
//! Deleting a session runs [`cleanup`]: an Event with its final figures,
//! then the finalizer goes and Kubernetes garbage-collects the children
//! through their owner references.

use std::sync::Arc;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service},
};
use kube::{
    Resource, ResourceExt,
    api::{Api, DeleteParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event as KubeEvent, EventType},
        reflector::ObjectRef,
    },
};
use paperbot_crds::{
    BotSession, BotSessionStatus, DesiredState, PaperAccount, SessionPhase, StrategyConfig,
};
use rand::RngExt;
use rust_decimal::Decimal;
use serde_json::json;
use tracing::{info, instrument, warn};

use super::{Context, FIELD_MANAGER, apply_child, now};
use crate::{
    Error, Result,
    builders::{BuildInput, CONFIG_KEY, build_children, child_name, render_runtime_config},
    conditions::{
        LEDGER_STORAGE_OUTDATED, LedgerObservation, READY, SessionObservation,
        desired_session_status, status_differs,
    },
    drift::ApplyDecision,
    ledger::{self, LedgerStorage},
    metrics::ReconcileResult,
    problem::{InvalidObject, Problem},
    stores::{PodView, StatefulSetView, slim_resource},
    sync::{forward, project},
};

/// Label the StatefulSet controller puts on each pod: the template revision
/// it runs.
pub const POD_REVISION_LABEL: &str = "controller-revision-hash";

/// Finalizer name on BotSessions.
pub const FINALIZER: &str = "paperbot.io/session-cleanup";

/// Controller name used in metrics and logs.
pub const CONTROLLER: &str = "botsession";

/// Reconcile one BotSession.
#[instrument(skip_all, fields(session = %session.name_any(), namespace = session.namespace().unwrap_or_default()))]
pub async fn reconcile(session: Arc<BotSession>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.reconcile_timer(CONTROLLER);
    let key = ObjectRef::from_obj(&*session);
    let session = ctx
        .fresh
        .sessions
        .freshest(&key, Some(session))
        .ok_or(Error::MissingMetadata("name"))?;
    let result = if session.meta().deletion_timestamp.is_some() {
        cleanup(&session, &ctx).await
    } else {
        apply(session, &ctx).await
    };
    timer.finish(if result.is_ok() {
        ReconcileResult::Success
    } else {
        ReconcileResult::Error
    });
    result
}

fn has_finalizer(s: &BotSession) -> bool {
    s.finalizers().iter().any(|f| f == FINALIZER)
}

/// JSON patch adding [`FINALIZER`] to `s`'s finalizers as they are in `s`
/// (`test` guards against overwriting another controller's finalizer added
/// meanwhile).
fn add_finalizer_patch(s: &BotSession) -> serde_json::Value {
    let uid = s.metadata.uid.clone().unwrap_or_default();
    match s.metadata.finalizers.as_ref().filter(|f| !f.is_empty()) {
        None => json!([
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ]),
        Some(current) => json!([
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ]),
    }
}

/// JSON patch removing [`FINALIZER`] from `s`'s finalizers as they are in `s`.
fn remove_finalizer_patch(s: &BotSession) -> serde_json::Value {
    let current = s.metadata.finalizers.clone().unwrap_or_default();
    let kept: Vec<&String> = current.iter().filter(|f| *f != FINALIZER).collect();
    json!([
        {"op": "test", "path": "/metadata/finalizers", "value": current},
        {"op": "replace", "path": "/metadata/finalizers", "value": kept},
    ])
}

/// Whether the API server refused a patch because its `test` failed (the
/// copy it was made from was out of date) or the object changed meanwhile.
fn is_stale(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 422 || s.code == 409)
}

/// Apply the finalizer patch `make(s)` to `s`; when the copy was stale,
/// read the object once and, unless `done` already holds for it, patch
/// again from it. Returns the object as the API server has it.
async fn patch_finalizers(
    s: &BotSession,
    ctx: &Context,
    make: fn(&BotSession) -> serde_json::Value,
    done: fn(&BotSession) -> bool,
) -> Result<BotSession> {
    let ns = s.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<BotSession> = Api::namespaced(ctx.client.clone(), &ns);
    let name = s.name_any();
    let patch =
        |v: serde_json::Value| -> Result<json_patch::Patch> { Ok(serde_json::from_value(v)?) };
    match api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Json::<()>(patch(make(s))?),
        )
        .await
    {
        Ok(obj) => Ok(obj),
        Err(e) if is_stale(&e) => {
            ctx.metrics.record_stale_write(CONTROLLER);
            let live = api.get(&name).await?;
            if done(&live) || live.metadata.uid != s.metadata.uid {
                return Ok(live);
            }
            Ok(api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Json::<()>(patch(make(&live))?),
                )
                .await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The session with [`FINALIZER`]: as it is when it has it, else as the API
/// server returns it after adding it. Never a conflict on a stale copy: a
/// refused patch is retried at once on the object read back.
pub async fn ensure_finalizer(s: Arc<BotSession>, ctx: &Context) -> Result<Arc<BotSession>> {
    if has_finalizer(&s) {
        return Ok(s);
    }
    let mut obj = patch_finalizers(&s, ctx, add_finalizer_patch, has_finalizer).await?;
    slim_resource(&mut obj);
    Ok(ctx.fresh.sessions.record(obj))
}

/// A session's account and strategy, or the problem that one is missing.
pub type Resolved = std::result::Result<(Arc<PaperAccount>, Arc<StrategyConfig>), Problem>;

/// The referenced account and strategy, from the stores, or the problem
/// that one is missing.
pub fn resolve(s: &BotSession, ctx: &Context) -> Result<Resolved> {
    let ns = s.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let account = ctx
        .stores
        .accounts
        .get(&ObjectRef::new(&s.spec.account_ref.name).within(&ns));
    let strategy = ctx
        .stores
        .strategies
        .get(&ObjectRef::new(&s.spec.strategy_ref.name).within(&ns));
    Ok(match (account, strategy) {
        (None, _) => Err(Problem::AccountNotFound {
            account: s.spec.account_ref.name.clone(),
            namespace: ns,
        }),
        (_, None) => Err(Problem::StrategyNotFound {
            strategy: s.spec.strategy_ref.name.clone(),
            namespace: ns,
        }),
        (Some(a), Some(st)) => Ok((a, st)),
    })
}

/// Whether a session draws on its account's balance.
pub fn is_active(s: &BotSession) -> bool {
    s.spec.desired_state != DesiredState::Stopped && s.meta().deletion_timestamp.is_none()
}

/// Check the session against its own rules and its account's funds.
/// `siblings` are BotSessions of the namespace (those of other accounts are
/// ignored; `s` may be among them, in an older copy).
pub fn check(
    s: &BotSession,
    account: &PaperAccount,
    strategy: &StrategyConfig,
    siblings: &[Arc<BotSession>],
) -> Option<Problem> {
    if let Err(e) = s.spec.validate() {
        return Some(Problem::invalid(InvalidObject::Session, &e));
    }
    if let Err(e) = strategy.spec.validate() {
        return Some(Problem::invalid(
            InvalidObject::Strategy(strategy.name_any()),
            &e,
        ));
    }
    if let Err(e) = account.spec.validate() {
        return Some(Problem::invalid(
            InvalidObject::Account(account.name_any()),
            &e,
        ));
    }
    if !is_active(s) {
        return None;
    }
    let me = s.name_any();
    let mut active: Vec<&BotSession> = siblings
        .iter()
        .map(|o| &**o)
        .filter(|o| {
            o.spec.account_ref.name == s.spec.account_ref.name && is_active(o) && o.name_any() != me
        })
        .collect();
    active.push(s);
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
        if o.name_any() == me {
            if total > balance {
                return Some(Problem::InsufficientFunds {
                    account: account.name_any(),
                    allocation: s.spec.allocation.get(),
                    needed: total,
                    balance,
                });
            }
            break;
        }
    }
    None
}

/// The session's children as they are: the stores' copies, or the
/// operator's own newer writes.
#[derive(Clone, Debug, Default)]
pub struct LiveChildren {
    /// The ConfigMap.
    pub config_map: Option<Arc<ConfigMap>>,
    /// The Secret.
    pub secret: Option<Arc<Secret>>,
    /// The Service.
    pub service: Option<Arc<Service>>,
    /// The StatefulSet.
    pub stateful_set: Option<Arc<StatefulSet>>,
    /// The runtime pod (`<statefulset>-0`).
    pub pod: Option<Arc<PodView>>,
    /// The ledger claim (`ledger-<statefulset>-0`).
    pub claim: Option<Arc<PersistentVolumeClaim>>,
}

impl LiveChildren {
    /// Read the children of `s` from the stores.
    pub fn of(s: &BotSession, ctx: &Context) -> Result<Self> {
        let ns = s.namespace().ok_or(Error::MissingMetadata("namespace"))?;
        let name = child_name(&s.name_any());
        let (st, fr) = (&ctx.stores, &ctx.fresh);
        let claim = ledger::claim_name(&name);
        Ok(Self {
            config_map: current(&st.config_maps, &fr.config_maps, &ns, &name),
            secret: current(&st.secrets, &fr.secrets, &ns, &name),
            service: current(&st.services, &fr.services, &ns, &name),
            stateful_set: current(&st.stateful_sets, &fr.stateful_sets, &ns, &name)
                .map(|v| v.materialize())
                .transpose()?
                .map(Arc::new),
            pod: st
                .pods
                .get(&ObjectRef::new(&format!("{name}-0")).within(&ns)),
            claim: current(&st.claims, &fr.claims, &ns, &claim),
        })
    }
}

/// The newer of `store`'s copy of `ns/name` and the operator's last write of it.
fn current<K>(
    store: &kube::runtime::reflector::Store<K>,
    latest: &crate::stores::Latest<K>,
    ns: &str,
    name: &str,
) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let key = ObjectRef::new(name).within(ns);
    latest.freshest(&key, store.get(&key))
}

/// The session's API token: the one already in its Secret, or a new random
/// one (32 bytes, hex), so re-applying never rotates it.
fn api_token(secret: Option<&Secret>) -> String {
    if let Some(t) = secret
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(crate::builders::TOKEN_KEY))
        .and_then(|t| String::from_utf8(t.0.clone()).ok())
        .filter(|t| !t.is_empty())
    {
        return t;
    }
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

/// A child put back after someone else changed it: `(kind, name, what)`.
pub type Reverted = (&'static str, String, ApplyDecision);

/// What [`apply_children`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// How many objects were written.
    pub written: usize,
    /// The session's ledger storage, for the status (`None` when the
    /// children were not applied).
    pub ledger: Option<LedgerObservation>,
    /// Children changed by someone else and put back.
    pub reverted: Vec<Reverted>,
}

/// Build the children and apply them through the one apply path.
///
/// `resolved` is the account and strategy when both exist. `suspended`
/// (the session has a problem) renders the StatefulSet with no replica; a
/// suspended session without a StatefulSet gets no children. While a
/// reference is missing, the configuration kept in the live ConfigMap is
/// rendered again (and the ledger storage of the live StatefulSet kept), so
/// that only the replica count changes.
///
/// 1. [`ledger::plan`] the ledger storage from the configuration and the
///    live StatefulSet; a StatefulSet that keeps the ledger on an emptyDir
///    (an older operator) is deleted first, with a Warning Event, and
///    recreated below;
/// 2. build the children and apply each ([`super::apply_child`]);
/// 3. on a volume, give the ledger claim the owner the retention asks for
///    ([`ledger::claim_ownership_patch`]) and note whether it is bound.
///
/// The stores see only children with the operator's labels. When the
/// StatefulSet is not in the store but the API server refuses to create it
/// (422: one of that name exists, e.g. made by hand or by an older
/// operator, whose claim templates cannot change), it is read once and the
/// children are planned again from it.
pub async fn apply_children(
    s: &BotSession,
    resolved: Option<(&PaperAccount, &StrategyConfig)>,
    suspended: bool,
    stopping: bool,
    live: &mut LiveChildren,
    ctx: &Context,
) -> Result<Applied> {
    let unseen = live.stateful_set.is_none();
    match apply_children_once(s, resolved, suspended, stopping, live, ctx).await {
        Err(Error::Kube(kube::Error::Api(e)))
            if unseen
                && e.code == 422
                && e.details.as_ref().is_some_and(|d| d.kind == "StatefulSet") =>
        {
            let ns = s.namespace().ok_or(Error::MissingMetadata("namespace"))?;
            let name = child_name(&s.name_any());
            let Some(sts) = Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&name)
                .await?
            else {
                return Err(Error::Kube(kube::Error::Api(e)));
            };
            warn!(
                statefulset = %name,
                "a StatefulSet of the session's name exists without the operator's labels; planning from it"
            );
            live.stateful_set = Some(Arc::new(sts));
            apply_children_once(s, resolved, suspended, stopping, live, ctx).await
        }
        r => r,
    }
}

async fn apply_children_once(
    s: &BotSession,
    resolved: Option<(&PaperAccount, &StrategyConfig)>,
    suspended: bool,
    stopping: bool,
    live: &mut LiveChildren,
    ctx: &Context,
) -> Result<Applied> {
    let mut out = Applied::default();
    if suspended && live.stateful_set.is_none() {
        return Ok(out);
    }
    let ns = s.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let client = ctx.client.clone();
    let name = child_name(&s.name_any());
    let claim_name = ledger::claim_name(&name);
    let (rendered, configured) = match resolved {
        Some((account, strategy)) => (
            Some(render_runtime_config(s, account, strategy)?),
            Some(LedgerStorage::configured(account, &ctx.settings.ledger)),
        ),
        None => (
            live.config_map
                .as_ref()
                .and_then(|c| c.data.as_ref()?.get(CONFIG_KEY).cloned()),
            live.stateful_set
                .as_deref()
                .and_then(LedgerStorage::of_stateful_set),
        ),
    };
    let Some(configured) = configured else {
        // No reference and a StatefulSet of unknown storage: leave it as it is.
        return Ok(out);
    };
    let settings = &ctx.settings.ledger;
    let plan = ledger::plan(
        configured,
        live.stateful_set.as_deref(),
        live.claim.is_some(),
        settings,
    );
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    if plan.recreate {
        recreate_for_durable_ledger(s, &stateful_sets, &name, &plan.storage, &claim_name, ctx)
            .await?;
        ctx.fresh
            .stateful_sets
            .forget(&ObjectRef::new(&name).within(&ns));
        live.stateful_set = None;
        out.written += 1;
    }

    let token = api_token(live.secret.as_deref());
    if live.secret.is_some() {
        // The poller uses the Secret's token without reading it again.
        ctx.poller
            .reports
            .remember_token(&ObjectRef::from_obj(s), &token);
    }
    let children = build_children(&BuildInput {
        session: s,
        config: rendered.as_deref().unwrap_or_default(),
        settings: &ctx.settings,
        api_token: &token,
        ledger: &plan.storage,
        suspended,
        stopping,
    })?;
    let owner = children
        .stateful_set
        .metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.first().cloned())
        .ok_or(Error::MissingMetadata("uid"))?;
    let (fresh, metrics) = (&ctx.fresh, &*ctx.metrics);
    let mut note = |kind: &'static str, decision: ApplyDecision, applied: bool| {
        if applied {
            out.written += 1;
        }
        if decision.is_drift() {
            out.reverted.push((kind, name.clone(), decision));
        }
    };
    if rendered.is_some() {
        let r = apply_child(
            &Api::<ConfigMap>::namespaced(client.clone(), &ns),
            children.config_map,
            live.config_map.as_deref(),
            |o| {
                fresh.config_maps.record(o.clone());
                Ok(())
            },
            metrics,
            "ConfigMap",
        )
        .await?;
        note("ConfigMap", r.decision, r.applied.is_some());
        if r.applied.is_some() {
            live.config_map = r.applied;
        }
    }
    let r = apply_child(
        &Api::<Secret>::namespaced(client.clone(), &ns),
        children.secret,
        live.secret.as_deref(),
        |o| {
            fresh.secrets.record(o.clone());
            Ok(())
        },
        metrics,
        "Secret",
    )
    .await?;
    note("Secret", r.decision, r.applied.is_some());
    if r.applied.is_some() {
        live.secret = r.applied;
    }
    let r = apply_child(
        &Api::<Service>::namespaced(client.clone(), &ns),
        children.service,
        live.service.as_deref(),
        |o| {
            fresh.services.record(o.clone());
            Ok(())
        },
        metrics,
        "Service",
    )
    .await?;
    note("Service", r.decision, r.applied.is_some());
    if r.applied.is_some() {
        live.service = r.applied;
    }
    let r = apply_child(
        &stateful_sets,
        children.stateful_set,
        live.stateful_set.as_deref(),
        |o| {
            fresh.stateful_sets.record(StatefulSetView::of(o.clone())?);
            Ok(())
        },
        metrics,
        "StatefulSet",
    )
    .await?;
    note("StatefulSet", r.decision, r.applied.is_some());
    if r.applied.is_some() {
        live.stateful_set = r.applied;
    }

    let mut unbound_claim = None;
    if plan.storage.is_volume()
        && let Some(c) = live.claim.clone()
    {
        if let Some(patch) = ledger::claim_ownership_patch(&c, &owner, settings.retention) {
            let mut obj = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
                .patch(
                    &claim_name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(patch),
                )
                .await?;
            crate::stores::keep_foreign_fields(&mut obj);
            live.claim = Some(ctx.fresh.claims.record(obj));
            out.written += 1;
        }
        let phase = c.status.as_ref().and_then(|st| st.phase.clone());
        if phase.as_deref() != Some("Bound") {
            unbound_claim = Some((claim_name.clone(), phase.unwrap_or("Pending".into())));
        }
    }
    out.ledger = Some(LedgerObservation {
        location: plan.storage.describe(&claim_name),
        outdated: plan.outdated.map(|o| o.describe(&claim_name)),
        unbound_claim,
    });
    Ok(out)
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
    publish(
        ctx,
        s,
        EventType::Warning,
        "LedgerStorageMigrated",
        &format!(
            "StatefulSet {name} kept the ledger on an emptyDir (created by an older operator): \
             recreated with the ledger in {}; what the old pod recorded on the emptyDir is lost with it",
            storage.describe(claim_name)
        ),
        "Reconcile",
    )
    .await;
    Ok(())
}

/// What the StatefulSet and its pod show. The pod is named from the
/// StatefulSet while it asks for a replica (see
/// [`SessionObservation::pod_name`]).
pub fn observation(
    s: &BotSession,
    problem: Option<Problem>,
    sts: Option<&StatefulSet>,
    pod: Option<&PodView>,
) -> SessionObservation {
    let st = sts.and_then(|x| x.status.as_ref());
    // The StatefulSet reports on its current template...
    let update_revision = match (sts, st) {
        (Some(sts), Some(st)) if st.observed_generation >= sts.metadata.generation => {
            st.update_revision.as_deref()
        }
        _ => None,
    };
    // ...and the pod says which template it runs.
    let pod_revision = pod
        .and_then(|p| p.metadata.labels.as_ref())
        .and_then(|l| l.get(POD_REVISION_LABEL))
        .map(String::as_str);
    let sts_updated = update_revision.is_some_and(|u| {
        pod_revision == Some(u)
            || (pod_revision.is_none() && st.and_then(|x| x.current_revision.as_deref()) == Some(u))
    });
    let pod_outdated = matches!((update_revision, pod_revision), (Some(u), Some(p)) if u != p);
    let expected_pod = sts
        .filter(|x| x.spec.as_ref().and_then(|sp| sp.replicas).unwrap_or(1) > 0)
        .map(|x| format!("{}-0", x.name_any()));
    SessionObservation {
        generation: s.metadata.generation,
        desired: s.spec.desired_state,
        problem,
        sts_replicas: sts.map(|_| st.map_or(0, |x| x.replicas)),
        sts_ready_replicas: st.and_then(|x| x.ready_replicas).unwrap_or(0),
        sts_updated,
        pod_outdated,
        pod_name: pod.map(|p| p.name_any()).or(expected_pod),
        pod_phase: pod.and_then(|p| p.phase.clone()),
        pod_ready: pod.is_some_and(|p| p.ready),
        pod_waiting_reason: pod.and_then(|p| p.waiting_reason.clone()),
        ledger: None,
        runtime: None,
        account_halt: None,
    }
}

async fn apply(session: Arc<BotSession>, ctx: &Context) -> Result<Action> {
    let s = ensure_finalizer(session, ctx).await?;
    let resolved = resolve(&s, ctx)?;
    let problem = match &resolved {
        Err(p) => Some(p.clone()),
        Ok((account, strategy)) => {
            let ns = s.namespace().unwrap_or_default();
            let siblings: Vec<Arc<BotSession>> = ctx
                .stores
                .sessions
                .state()
                .into_iter()
                .filter(|o| o.metadata.namespace.as_deref() == Some(ns.as_str()))
                .collect();
            check(&s, account, strategy, &siblings)
        }
    };
    // What the runtime reports, and what the spec asks of it (forwarded once).
    let key = ObjectRef::from_obj(&*s);
    let account_halt = resolved.as_ref().ok().and_then(|(a, _)| {
        let k = a.status.as_ref()?.kill_switch.as_ref()?;
        k.engaged.then(|| {
            k.reason
                .clone()
                .unwrap_or_else(|| "an account limit was passed".into())
        })
    });
    let mut runtime = ctx.poller.reports.get(&key);
    let mut acknowledged = None;
    let mut forwarded = false;
    if problem.is_none()
        && let Ok((_, strategy)) = &resolved
    {
        let plan = forward::plan(&s, strategy, account_halt.is_some(), runtime.as_ref());
        if !plan.requests.is_empty() || plan.acknowledge_reset.is_some() {
            let done = ctx.poller.execute(&s, strategy, plan).await;
            for (request, message) in &done.done {
                info!(?request, %message, "runtime accepted a request");
            }
            if let Some((request, error)) = &done.failed {
                warn!(?request, %error, "runtime request failed; sent again at the next reconcile");
            }
            forwarded = !done.done.is_empty() || done.failed.is_some();
            acknowledged = done.acknowledge_reset;
            runtime = ctx.poller.reports.get(&key);
        }
    }
    let stopping = s.spec.desired_state == DesiredState::Stopped
        && runtime.as_ref().is_some_and(|r| {
            !r.not_reporting && r.status.as_ref().is_some_and(|st| !st.phase.is_final())
        });
    let mut live = LiveChildren::of(&s, ctx)?;
    let applied = apply_children(
        &s,
        resolved.as_ref().ok().map(|(a, st)| (&**a, &**st)),
        problem.is_some(),
        stopping,
        &mut live,
        ctx,
    )
    .await?;
    if applied.written > 0 {
        info!(written = applied.written, "applied children");
    }
    if ctx.settings.feed.enabled {
        let ns = s.namespace().ok_or(Error::MissingMetadata("namespace"))?;
        crate::feed::reconcile_namespace(&ns, &s, ctx).await?;
    }
    for (kind, name, decision) in &applied.reverted {
        publish(
            ctx,
            &s,
            EventType::Warning,
            "DriftReverted",
            &format!("{kind} {name}: {decision}; put back as declared"),
            "Reconcile",
        )
        .await;
    }
    let mut obs = observation(
        &s,
        problem.clone(),
        live.stateful_set.as_deref(),
        live.pod.as_deref(),
    );
    // The ledger condition is kept as it was while a problem blocks the session.
    obs.ledger = applied.ledger.filter(|_| problem.is_none());
    let message = runtime
        .as_ref()
        .and_then(|r| r.status.as_ref()?.message.clone())
        .or_else(|| account_halt.clone());
    obs.runtime = runtime;
    obs.account_halt = account_halt;
    let mut new = desired_session_status(s.status.as_ref(), &obs, &now());
    if acknowledged.is_some() {
        new.observed_reset_request = acknowledged;
    }
    if status_differs(s.status.as_ref(), &new) {
        patch_status(&s, &new, ctx).await?;
        publish_events(&s, s.status.as_ref(), &new, problem.as_ref(), ctx).await;
        for ev in project::runtime_events(s.status.as_ref(), &new, message.as_deref()) {
            let type_ = if ev.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            publish(ctx, &s, type_, ev.reason, &ev.note, "Sync").await;
        }
    }
    // A request sent (or failed) is checked again after one poll.
    Ok(Action::requeue(if forwarded {
        ctx.sync_interval
    } else {
        ctx.resync_interval
    }))
}

/// Server-side apply `status` to the session's status subresource and
/// remember the answer (so a reconcile before the watch delivers it starts
/// from it, and writes and announces nothing twice). Every writer of a
/// session's status goes through here; compare with
/// [`crate::conditions::status_differs`] first.
pub async fn patch_status(s: &BotSession, status: &BotSessionStatus, ctx: &Context) -> Result<()> {
    let ns = s.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let mut obj = Api::<BotSession>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &s.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "paperbot.io/v1alpha1",
                "kind": "BotSession",
                "status": status,
            })),
        )
        .await?;
    ctx.metrics.record_status_write(CONTROLLER);
    slim_resource(&mut obj);
    ctx.fresh.sessions.record(obj);
    Ok(())
}

/// Publish an Event about `s`; a failure is logged, never fails the reconcile.
async fn publish(
    ctx: &Context,
    s: &BotSession,
    type_: EventType,
    reason: &str,
    note: &str,
    action: &str,
) {
    let ev = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, 1000)),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &s.object_ref(&())).await {
        warn!(error = %e, "publishing event failed");
    }
}

/// Events for a phase change and for a new problem.
async fn publish_events(
    s: &BotSession,
    old: Option<&BotSessionStatus>,
    new: &BotSessionStatus,
    problem: Option<&Problem>,
    ctx: &Context,
) {
    let old_phase = old.map(|o| o.phase);
    if let Some(problem) = problem {
        let old_reason = old
            .and_then(|o| o.conditions.iter().find(|c| c.type_ == READY))
            .map(|c| c.reason.clone());
        if old_reason.as_deref() != Some(problem.reason()) {
            publish(
                ctx,
                s,
                EventType::Warning,
                problem.reason(),
                &problem.to_string(),
                "Validate",
            )
            .await;
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
        publish(
            ctx,
            s,
            EventType::Warning,
            LEDGER_STORAGE_OUTDATED,
            &message,
            "Reconcile",
        )
        .await;
    }
    // Completed and Halted have Events with the figures and the reason
    // (SessionCompleted, SessionHalted: see `sync::project::runtime_events`).
    if old_phase != Some(new.phase)
        && !matches!(new.phase, SessionPhase::Completed | SessionPhase::Halted)
    {
        let from = old_phase.map_or("None".to_string(), |p| format!("{p:?}"));
        // One reason per target phase: the recorder folds events with the same
        // reason into a series, which would hide the new phase in the note.
        publish(
            ctx,
            s,
            if matches!(new.phase, SessionPhase::Failed | SessionPhase::Halted) {
                EventType::Warning
            } else {
                EventType::Normal
            },
            &format!("Phase{:?}", new.phase),
            &format!("{from} → {:?}", new.phase),
            "Reconcile",
        )
        .await;
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

/// Record the final figures, then remove the finalizer (Kubernetes then
/// garbage-collects the children).
pub async fn cleanup(s: &BotSession, ctx: &Context) -> Result<Action> {
    if !has_finalizer(s) {
        return Ok(Action::await_change());
    }
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
    if ctx.settings.feed.enabled
        && let Some(ns) = s.namespace()
    {
        // Its feed goes with the last session of its group.
        crate::feed::reconcile_namespace(&ns, s, ctx).await?;
    }
    publish(
        ctx,
        s,
        EventType::Normal,
        "SessionDeleted",
        &figures,
        "Cleanup",
    )
    .await;
    let gone = |o: &BotSession| !has_finalizer(o);
    match patch_finalizers(s, ctx, remove_finalizer_patch, gone).await {
        Ok(mut obj) => {
            slim_resource(&mut obj);
            ctx.fresh.sessions.record(obj);
        }
        // Gone already (another finalizer was the last, or it was removed by hand).
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 404 => {}
        Err(e) => return Err(e),
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

    fn all(v: &[&BotSession]) -> Vec<Arc<BotSession>> {
        v.iter().map(|s| Arc::new((*s).clone())).collect()
    }

    #[test]
    fn sessions_are_funded_in_creation_order() {
        let a = session("a", "600", 1, "Running");
        let b = session("b", "300", 2, "Running");
        let c = session("c", "200", 3, "Running");
        let all = all(&[&c, &a, &b]);
        let acct = account("1000");
        assert_eq!(check(&a, &acct, &strategy(), &all), None);
        assert_eq!(check(&b, &acct, &strategy(), &all), None);
        let p = check(&c, &acct, &strategy(), &all).unwrap();
        assert_eq!(p.reason(), "InsufficientFunds");
        assert!(
            p.to_string().contains("need 1100 but its balance is 1000"),
            "{p}"
        );
    }

    #[test]
    fn a_newer_copy_of_the_session_itself_counts_once() {
        let old = session("a", "100", 1, "Running");
        let new = session("a", "900", 1, "Running");
        // The store still has the old allocation; the reconcile's copy wins.
        let p = check(&new, &account("1000"), &strategy(), &all(&[&old])).is_none();
        assert!(p);
    }

    #[test]
    fn stopped_sessions_release_their_allocation() {
        let a = session("a", "900", 1, "Stopped");
        let b = session("b", "900", 2, "Running");
        let all = all(&[&a, &b]);
        assert_eq!(check(&b, &account("1000"), &strategy(), &all), None);
        assert_eq!(check(&a, &account("1000"), &strategy(), &all), None);
    }

    #[test]
    fn invalid_specs_are_problems_not_errors() {
        let mut s = session("a", "100", 1, "Running");
        s.spec.symbols.clear();
        let p = check(&s, &account("1000"), &strategy(), &all(&[&s])).unwrap();
        assert_eq!(p.reason(), "InvalidSpec");
        assert!(p.to_string().contains("spec.symbols"), "{p}");
    }

    #[test]
    fn finalizer_patches_test_what_they_were_made_from() {
        let mut s = session("a", "100", 1, "Running");
        let add = add_finalizer_patch(&s);
        assert_eq!(
            add[1],
            json!({"op": "test", "path": "/metadata/finalizers", "value": null})
        );
        assert_eq!(add[2]["value"], json!([FINALIZER]));
        s.metadata.finalizers = Some(vec!["other".into()]);
        let add = add_finalizer_patch(&s);
        assert_eq!(add[1]["value"], json!(["other"]));
        assert_eq!(
            add[2],
            json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER})
        );
        s.metadata.finalizers = Some(vec!["other".into(), FINALIZER.into()]);
        let remove = remove_finalizer_patch(&s);
        assert_eq!(remove[1]["value"], json!(["other"]));
    }
}
