//! The three controllers and what they share.
//!
//! | controller | owns | reads (from the stores) | writes |
//! |---|---|---|---|
//! | [`botsession`] | ConfigMap, Secret, Service, StatefulSet per session; with `--shared-feed`, a ConfigMap, Deployment and Service per group of live sessions with the same sources ([`crate::feed`]) | its PaperAccount and StrategyConfig, the account's other sessions (funding), its children, pod and ledger claim; the namespace's live sessions (feed groups) | finalizer, children (server-side apply), feeds (server-side apply, delete), status, Events |
//! | [`account`] | — | the sessions that reference it | status |
//! | [`strategy`] | — | the sessions that use it | status |
//!
//! Every read comes from the reflector stores ([`crate::stores`]); what a
//! watch event asks to reconcile is decided in [`crate::triggers`]. Every
//! write is skipped when it would change nothing: children go through one
//! apply path, [`apply_child`], which applies only what [`crate::drift`]
//! finds changed or drifted, and status is compared ignoring timestamps
//! ([`crate::conditions::status_differs`]), so a reconcile of an unchanged
//! fleet writes nothing.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Client, Resource, ResourceExt,
    api::{Api, Patch, PatchParams},
    runtime::{controller::Action, events::Recorder, reflector::ObjectRef},
};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::{
    Error, Result,
    builders::RuntimeSettings,
    conditions::{WithConditions, status_differs},
    drift::{self, ApplyDecision},
    metrics::{Metrics, ReconcileResult},
    stores::{Fresh, Latest, Stores, keep_foreign_fields},
};

pub mod account;
pub mod botsession;
pub mod strategy;

/// Field manager of every server-side apply and status patch.
pub const FIELD_MANAGER: &str = "paperbot-operator";

/// Annotation on each child with the hash of the object the operator last
/// applied; an unchanged hash (and no drift) means no write.
pub const APPLIED_HASH: &str = "paperbot.io/applied-hash";

/// Default requeue of a healthy object (`--resync-interval`): a safety net
/// only, since watch events ask for every reconcile that is needed.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(600);

/// Shortest time between two status writes of one PaperAccount or
/// StrategyConfig: while sessions come and go quickly (a fleet being
/// applied), their aggregate is written at most once per second.
pub const AGGREGATE_STATUS_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What every reconcile needs. Cheap to clone (handles and `Arc`s).
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder (one for the process).
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Defaults for runtime pods.
    pub settings: RuntimeSettings,
    /// `--status-sync-interval`: how often fast-moving status figures may be
    /// refreshed per session.
    pub sync_interval: Duration,
    /// Requeue interval of a healthy object ([`DEFAULT_RESYNC_INTERVAL`]).
    pub resync_interval: Duration,
    /// BotSession reconciles at a time
    /// ([`crate::run::DEFAULT_SESSION_CONCURRENCY`]).
    pub reconcile_concurrency: u16,
    /// The reflector stores of the watched scope.
    pub stores: Stores,
    /// What the operator wrote and the stores may not show yet.
    pub fresh: Arc<Fresh>,
    /// Polls the runtimes and keeps their reports ([`crate::sync`]).
    pub poller: Arc<crate::sync::Poller>,
    /// Last status write per PaperAccount and StrategyConfig.
    pub(crate) aggregate_writes: Arc<Mutex<HashMap<String, Instant>>>,
    /// The shared feeds the operator applied ([`crate::feed`]).
    pub feeds: Arc<crate::feed::FeedState>,
}

impl Context {
    /// A context with empty stores (see [`Self::with_stores`]).
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        settings: RuntimeSettings,
        sync_interval: Duration,
    ) -> Self {
        let kube_client = client.clone();
        Self {
            client,
            recorder,
            metrics,
            settings,
            sync_interval,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            reconcile_concurrency: crate::run::DEFAULT_SESSION_CONCURRENCY,
            stores: Stores::empty(),
            poller: Arc::new(crate::sync::Poller::new(
                crate::sync::SyncSettings {
                    interval: sync_interval,
                    ..Default::default()
                },
                kube_client,
            )),
            fresh: Arc::default(),
            aggregate_writes: Arc::default(),
            feeds: Arc::default(),
        }
    }

    /// This context reading `stores` (sharing its record of fresh writes).
    pub fn with_stores(&self, stores: Stores) -> Self {
        Self {
            stores,
            ..self.clone()
        }
    }

    /// This context polling runtimes with `settings` (fresh reports).
    pub fn with_sync(&self, settings: crate::sync::SyncSettings) -> Self {
        Self {
            poller: Arc::new(crate::sync::Poller::new(settings, self.client.clone())),
            ..self.clone()
        }
    }

    /// This context for a new watched scope: reading `stores`, with an
    /// empty record of fresh writes.
    pub fn for_scope(&self, stores: Stores) -> Self {
        Self {
            stores,
            fresh: Arc::default(),
            aggregate_writes: Arc::default(),
            feeds: Arc::default(),
            ..self.clone()
        }
    }
}

/// Current time as a Kubernetes `Time`.
pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now())
}

/// SHA-256 (hex, 16 chars) of an object's JSON form.
pub fn object_hash<T: Serialize>(obj: &T) -> Result<String> {
    let bytes = serde_json::to_vec(obj)?;
    Ok(hex::encode(&Sha256::digest(&bytes)[..8]))
}

/// What [`apply_child`] did.
#[derive(Debug)]
pub struct ChildApplied<K> {
    /// Why it was applied, or [`ApplyDecision::Unchanged`].
    pub decision: ApplyDecision,
    /// The child as the API server returned it, when it was applied.
    pub applied: Option<Arc<K>>,
}

/// The one apply path of every child: stamp `desired` with its
/// [`APPLIED_HASH`], [`drift::decide`] against `live`, and server-side
/// apply it (field manager [`FIELD_MANAGER`], forced) unless unchanged. The
/// API server's answer is passed to `remember` (which records it in
/// [`Fresh`], so the next reconcile reads it even before the watch delivers
/// it, and the watch knows the event as the operator's own); the decision is
/// counted in `paperbot_operator_child_applies_total`.
pub async fn apply_child<K>(
    api: &Api<K>,
    mut desired: K,
    live: Option<&K>,
    remember: impl FnOnce(&K) -> Result<()>,
    metrics: &Metrics,
    kind: &'static str,
) -> Result<ChildApplied<K>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = desired.name_any();
    desired.annotations_mut().remove(APPLIED_HASH);
    let hash = object_hash(&desired)?;
    desired.annotations_mut().insert(APPLIED_HASH.into(), hash);
    let decision = drift::decide(&desired, live)?;
    metrics.record_child_apply(kind, decision.label());
    if !decision.applies() {
        return Ok(ChildApplied {
            decision,
            applied: None,
        });
    }
    let mut obj = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await?;
    keep_foreign_fields(&mut obj);
    remember(&obj)?;
    Ok(ChildApplied {
        decision,
        applied: Some(Arc::new(obj)),
    })
}

/// Reconcile a resource whose status is computed from the BotSessions of
/// its namespace (PaperAccount, StrategyConfig): read the sessions from the
/// store, compute the status, server-side apply it when it changed (at most
/// once per [`AGGREGATE_STATUS_MIN_INTERVAL`]), requeue after the resync
/// interval.
pub async fn reconcile_status_from_sessions<K, S>(
    obj: Arc<K>,
    ctx: Arc<Context>,
    controller: &'static str,
    latest: &Latest<K>,
    desired: impl FnOnce(&K, &[Arc<paperbot_crds::BotSession>]) -> S,
    current: impl FnOnce(&K) -> Option<&S>,
) -> Result<Action>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + WithConditions,
{
    let timer = ctx.metrics.reconcile_timer(controller);
    let result = async {
        let key = ObjectRef::from_obj(&*obj);
        let obj = latest
            .freshest(&key, Some(obj))
            .ok_or(Error::MissingMetadata("name"))?;
        let ns = obj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
        let sessions: Vec<Arc<paperbot_crds::BotSession>> = ctx
            .stores
            .sessions
            .state()
            .into_iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
            .collect();
        let new = desired(&obj, &sessions);
        if !status_differs(current(&obj), &new) {
            return Ok(Action::requeue(ctx.resync_interval));
        }
        let throttle_key = format!("{controller}/{ns}/{}", obj.name_any());
        let wait = ctx
            .aggregate_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&throttle_key)
            .and_then(|last| AGGREGATE_STATUS_MIN_INTERVAL.checked_sub(last.elapsed()));
        if let Some(wait) = wait.filter(|w| !w.is_zero()) {
            return Ok(Action::requeue(wait));
        }
        let written = Api::<K>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &obj.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(serde_json::json!({
                    "apiVersion": K::api_version(&()),
                    "kind": K::kind(&()),
                    "status": new,
                })),
            )
            .await?;
        ctx.metrics.record_status_write(controller);
        let mut written = written;
        crate::stores::slim_resource(&mut written);
        latest.record(written);
        ctx.aggregate_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(throttle_key, Instant::now());
        Ok(Action::requeue(ctx.resync_interval))
    }
    .await;
    timer.finish(if result.is_ok() {
        ReconcileResult::Success
    } else {
        ReconcileResult::Error
    });
    result
}

/// Requeue after an error with a short backoff, logging and counting it
/// under the resource's controller name (its kind in lower case).
pub fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let controller = match K::kind(&()).as_ref() {
        "BotSession" => botsession::CONTROLLER,
        "PaperAccount" => account::CONTROLLER,
        _ => strategy::CONTROLLER,
    };
    tracing::warn!(controller, object = %obj.name_any(), error = %err, "reconcile failed");
    ctx.metrics.record_error(controller, err.metric_label());
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests;
