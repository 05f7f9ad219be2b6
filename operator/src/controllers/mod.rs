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
    runtime::events::Recorder,
};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::{Result, builders::RuntimeSettings, metrics::Metrics};

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

#[cfg(test)]
mod tests;
