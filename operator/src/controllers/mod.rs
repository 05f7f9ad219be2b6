//! The three controllers and what they share.
//!
//! | controller | owns | watches | writes |
//! |---|---|---|---|
//! | [`botsession`] | ConfigMap, Secret, Service, StatefulSet per session | its PaperAccount and StrategyConfig (a change re-reconciles every session that uses them) | children (server-side apply), status, Events |
//! | [`account`] | — | BotSessions that reference it | status |
//! | [`strategy`] | — | BotSessions that use it | status |
//!
//! Every write is skipped when it would change nothing: children carry a hash
//! of what was applied, and status is compared ignoring timestamps, so a
//! reconcile of an unchanged fleet only reads.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Client, Resource, ResourceExt,
    api::{Api, Patch, PatchParams},
    runtime::{controller::Action, events::Recorder},
};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::{
    Error, Result,
    builders::RuntimeSettings,
    metrics::{Metrics, ReconcileResult},
};

pub mod account;
pub mod botsession;
pub mod strategy;

/// Field manager of every server-side apply and status patch.
pub const FIELD_MANAGER: &str = "paperbot-operator";

/// Annotation on each child with the hash of the object the operator last
/// applied; an unchanged hash means no write.
pub const APPLIED_HASH: &str = "paperbot.io/applied-hash";

/// What every reconcile needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder (one for the process).
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Defaults for runtime pods.
    pub settings: RuntimeSettings,
    /// Requeue interval of a healthy object (status refresh).
    pub sync_interval: Duration,
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

/// Server-side apply `obj` unless the live object carries the same applied
/// hash. Returns whether a write was made.
pub async fn apply_if_changed<K>(api: &Api<K>, mut obj: K) -> Result<bool>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = obj.name_any();
    obj.annotations_mut().remove(APPLIED_HASH);
    let hash = object_hash(&obj)?;
    if let Some(live) = api.get_opt(&name).await?
        && live.annotations().get(APPLIED_HASH) == Some(&hash)
    {
        return Ok(false);
    }
    obj.annotations_mut().insert(APPLIED_HASH.into(), hash);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await?;
    Ok(true)
}

/// Whether writing `new` over `old` changes anything but the conditions'
/// `lastTransitionTime` (so an unchanged object is never rewritten).
pub fn status_changed<S: Serialize>(old: Option<&S>, new: &S) -> bool {
    fn strip(v: serde_json::Value) -> serde_json::Value {
        let mut v = v;
        if let Some(conds) = v.get_mut("conditions").and_then(|c| c.as_array_mut()) {
            for c in conds {
                if let Some(o) = c.as_object_mut() {
                    o.remove("lastTransitionTime");
                }
            }
        }
        v
    }
    match old {
        None => true,
        Some(old) => {
            let (a, b) = (serde_json::to_value(old), serde_json::to_value(new));
            match (a, b) {
                (Ok(a), Ok(b)) => strip(a) != strip(b),
                _ => true,
            }
        }
    }
}

/// Reconcile a resource whose status is computed from the BotSessions of
/// its namespace (PaperAccount, StrategyConfig): list the sessions, compute
/// the status, server-side apply it when it changed, requeue.
pub async fn reconcile_status_from_sessions<K, S>(
    obj: Arc<K>,
    ctx: Arc<Context>,
    controller: &'static str,
    desired: impl FnOnce(&K, &[paperbot_crds::BotSession]) -> S,
    current: impl FnOnce(&K) -> Option<&S>,
) -> Result<Action>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize,
{
    let timer = ctx.metrics.reconcile_timer(controller);
    let result = async {
        let ns = obj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
        let sessions = Api::<paperbot_crds::BotSession>::namespaced(ctx.client.clone(), &ns)
            .list(&kube::api::ListParams::default())
            .await?
            .items;
        let new = desired(&obj, &sessions);
        if status_changed(current(&obj), &new) {
            Api::<K>::namespaced(ctx.client.clone(), &ns)
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
