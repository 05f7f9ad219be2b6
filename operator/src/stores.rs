//! The operator's view of the cluster: one reflector store per watched kind,
//! filled by one watch each and shared by the three controllers, plus what
//! the operator itself wrote most recently ([`Fresh`]).
//!
//! Reconciles read accounts, strategies, sessions and the children from
//! these stores — no GET per reference and no LIST per reconcile — so the
//! cost of a session is constant and the memory linear in the fleet.
//! Memory per object is kept small: the cached copies drop
//! `metadata.managedFields` (children keep only the entries of other field
//! managers, which [`crate::drift`] reads) and
//! `kubectl.kubernetes.io/last-applied-configuration`; a StatefulSet is
//! kept as a [`StatefulSetView`] (its spec as JSON text, about a seventh of
//! the typed object's memory) and a pod as a [`PodView`] (what the session's
//! status reads of it).
//!
//! A store lags the API server by the watch latency. Right after the
//! operator writes (a status, a finalizer, a child) the store may still hold
//! the older copy; [`Latest`] keeps the object the API server returned for
//! the write until the watch delivers it, and [`Latest::freshest`] picks the
//! newer of the two. The same record tells the watch which events are the
//! operator's own writes, which trigger no reconcile of the written object.

use std::{borrow::Cow, collections::HashMap, hash::Hash, sync::Arc};

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetStatus},
        core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Resource,
    core::NamespaceResourceScope,
    runtime::reflector::{ObjectRef, Store, store::Writer},
};
use paperbot_crds::{BotSession, PaperAccount, StrategyConfig};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::drift::is_foreign;

/// Annotation `kubectl apply` keeps a copy of the whole object in; dropped
/// from cached copies (nothing reads it and it doubles an object's size).
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Read handles of every store (cheap to clone).
#[derive(Clone)]
pub struct Stores {
    /// BotSessions.
    pub sessions: Store<BotSession>,
    /// PaperAccounts.
    pub accounts: Store<PaperAccount>,
    /// StrategyConfigs.
    pub strategies: Store<StrategyConfig>,
    /// The runtime StatefulSets (label `app.kubernetes.io/managed-by=paperbot-operator`).
    pub stateful_sets: Store<StatefulSetView>,
    /// The runtime pods (same label).
    pub pods: Store<PodView>,
    /// The sessions' ConfigMaps (same label).
    pub config_maps: Store<ConfigMap>,
    /// The sessions' Secrets (same label).
    pub secrets: Store<Secret>,
    /// The sessions' Services (same label).
    pub services: Store<Service>,
    /// The ledger claims (the StatefulSet controller gives them the selector's labels).
    pub claims: Store<PersistentVolumeClaim>,
}

/// The writers behind a [`Stores`], one per kind.
pub struct Writers {
    /// BotSessions.
    pub sessions: Writer<BotSession>,
    /// PaperAccounts.
    pub accounts: Writer<PaperAccount>,
    /// StrategyConfigs.
    pub strategies: Writer<StrategyConfig>,
    /// StatefulSets.
    pub stateful_sets: Writer<StatefulSetView>,
    /// Pods.
    pub pods: Writer<PodView>,
    /// ConfigMaps.
    pub config_maps: Writer<ConfigMap>,
    /// Secrets.
    pub secrets: Writer<Secret>,
    /// Services.
    pub services: Writer<Service>,
    /// PersistentVolumeClaims.
    pub claims: Writer<PersistentVolumeClaim>,
}

impl Writers {
    /// Empty stores and their writers.
    pub fn new() -> Self {
        Self {
            sessions: Writer::default(),
            accounts: Writer::default(),
            strategies: Writer::default(),
            stateful_sets: Writer::default(),
            pods: Writer::default(),
            config_maps: Writer::default(),
            secrets: Writer::default(),
            services: Writer::default(),
            claims: Writer::default(),
        }
    }

    /// Read handles of these writers' stores.
    pub fn readers(&self) -> Stores {
        Stores {
            sessions: self.sessions.as_reader(),
            accounts: self.accounts.as_reader(),
            strategies: self.strategies.as_reader(),
            stateful_sets: self.stateful_sets.as_reader(),
            pods: self.pods.as_reader(),
            config_maps: self.config_maps.as_reader(),
            secrets: self.secrets.as_reader(),
            services: self.services.as_reader(),
            claims: self.claims.as_reader(),
        }
    }
}

impl Default for Writers {
    fn default() -> Self {
        Self::new()
    }
}

impl Stores {
    /// Empty stores whose writers are gone (nothing fills them); for code
    /// that builds a [`crate::controllers::Context`] before the watches run.
    pub fn empty() -> Self {
        Writers::new().readers()
    }
}

/// `metadata.resourceVersion` as a number (etcd revisions are), for telling
/// which of two copies of an object is newer.
pub fn resource_version<K: Resource>(obj: &K) -> Option<u64> {
    obj.meta().resource_version.as_deref()?.parse().ok()
}

/// The objects the operator wrote, as the API server returned them, until
/// the watch delivers the same or a newer version.
pub struct Latest<K: Resource<DynamicType = ()>> {
    written: std::sync::Mutex<HashMap<ObjectRef<K>, Arc<K>>>,
}

impl<K: Resource<DynamicType = ()>> Default for Latest<K> {
    fn default() -> Self {
        Self {
            written: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

impl<K> Latest<K>
where
    K: Resource<DynamicType = ()> + Clone,
    ObjectRef<K>: Hash + Eq,
{
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<K>, Arc<K>>> {
        // A panic while holding the lock leaves a consistent map (inserts and
        // removes only), so a poisoned lock is still usable.
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remember `obj`, the API server's answer to a write; returns it shared.
    pub fn record(&self, obj: K) -> Arc<K> {
        let obj = Arc::new(obj);
        self.lock().insert(ObjectRef::from_obj(&*obj), obj.clone());
        obj
    }

    /// The newer of the store's copy and the last written one. A stored copy
    /// at least as new as the written one ends the record.
    pub fn freshest(&self, key: &ObjectRef<K>, stored: Option<Arc<K>>) -> Option<Arc<K>> {
        let mut written = self.lock();
        let Some(mine) = written.get(key).cloned() else {
            return stored;
        };
        match stored {
            None => Some(mine),
            Some(s) => match (resource_version(&*s), resource_version(&*mine)) {
                (Some(a), Some(b)) if a < b => Some(mine),
                _ => {
                    written.remove(key);
                    Some(s)
                }
            },
        }
    }

    /// Whether a watch event of `key` at `rv` is the operator's own write
    /// (the version it recorded). Ends the record when the event is that
    /// version or a newer one.
    pub fn observe(&self, key: &ObjectRef<K>, rv: Option<u64>) -> bool {
        let mut written = self.lock();
        let Some(mine) = written.get(key).map(|m| resource_version(&**m)) else {
            return false;
        };
        match (rv, mine) {
            (Some(a), Some(b)) if a == b => {
                written.remove(key);
                true
            }
            (Some(a), Some(b)) if a < b => false,
            _ => {
                written.remove(key);
                false
            }
        }
    }

    /// Forget `key` (it was deleted).
    pub fn forget(&self, key: &ObjectRef<K>) {
        self.lock().remove(key);
    }

    /// Objects recorded and not yet seen by the watch.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the operator wrote most recently, per kind it writes.
#[derive(Default)]
pub struct Fresh {
    /// BotSessions (finalizer, status).
    pub sessions: Latest<BotSession>,
    /// PaperAccounts (status).
    pub accounts: Latest<PaperAccount>,
    /// StrategyConfigs (status).
    pub strategies: Latest<StrategyConfig>,
    /// StatefulSets.
    pub stateful_sets: Latest<StatefulSetView>,
    /// ConfigMaps.
    pub config_maps: Latest<ConfigMap>,
    /// Secrets.
    pub secrets: Latest<Secret>,
    /// Services.
    pub services: Latest<Service>,
    /// Ledger claims (owner references).
    pub claims: Latest<PersistentVolumeClaim>,
}

/// Drop what nothing reads from a cached paperbot resource: managed fields
/// and `kubectl apply`'s copy of the object.
pub fn slim_resource<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// Keep only the managed-field entries of other managers than the operator
/// (and not of `status` writers) on a cached child: what [`crate::drift`]
/// reads. Usually none are left.
pub fn keep_foreign_fields<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    if let Some(entries) = meta.managed_fields.as_mut() {
        entries.retain(is_foreign);
        if entries.is_empty() {
            meta.managed_fields = None;
        }
    }
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// A cached StatefulSet: metadata and status as they are, the spec as its
/// JSON text. [`Self::materialize`] gives the typed object back when a
/// reconcile needs it (one at a time), so the store does not hold a fully
/// typed pod template per session.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct StatefulSetView {
    /// `metadata`.
    pub metadata: ObjectMeta,
    /// `spec`, as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Box<RawValue>>,
    /// `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatefulSetStatus>,
}

impl Resource for StatefulSetView {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "StatefulSet".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "apps".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "statefulsets".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl StatefulSetView {
    /// The view of a typed StatefulSet (its spec serialized).
    pub fn of(sts: StatefulSet) -> Result<Self, serde_json::Error> {
        Ok(Self {
            spec: sts
                .spec
                .as_ref()
                .map(serde_json::value::to_raw_value)
                .transpose()?,
            metadata: sts.metadata,
            status: sts.status,
        })
    }

    /// The typed StatefulSet (its spec parsed).
    pub fn materialize(&self) -> Result<StatefulSet, serde_json::Error> {
        Ok(StatefulSet {
            metadata: self.metadata.clone(),
            spec: self
                .spec
                .as_ref()
                .map(|s| serde_json::from_str(s.get()))
                .transpose()?,
            status: self.status.clone(),
        })
    }
}

/// What the operator keeps of a runtime pod: its identity, owner and
/// revision, and what the session's status reads of its status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodView {
    /// Name, namespace, uid, resource version, owner references and the
    /// `controller-revision-hash` label only.
    pub metadata: ObjectMeta,
    /// `status.phase`.
    pub phase: Option<String>,
    /// Whether the `Ready` condition is `True`.
    pub ready: bool,
    /// The first waiting reason among the container statuses.
    pub waiting_reason: Option<String>,
}

impl From<Pod> for PodView {
    fn from(pod: Pod) -> Self {
        let revision = crate::controllers::botsession::POD_REVISION_LABEL;
        let labels = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(revision))
            .map(|v| [(revision.to_string(), v.clone())].into());
        let status = pod.status.unwrap_or_default();
        Self {
            metadata: ObjectMeta {
                name: pod.metadata.name,
                namespace: pod.metadata.namespace,
                uid: pod.metadata.uid,
                resource_version: pod.metadata.resource_version,
                owner_references: pod.metadata.owner_references,
                labels,
                ..Default::default()
            },
            phase: status.phase,
            ready: status
                .conditions
                .as_ref()
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            waiting_reason: status.container_statuses.as_ref().and_then(|cs| {
                cs.iter()
                    .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
            }),
        }
    }
}

impl<'de> Deserialize<'de> for PodView {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Pod::deserialize(d).map(Self::from)
    }
}

impl Resource for PodView {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Nothing to drop from a [`PodView`] (it keeps only what is read).
pub fn slim_pod(_: &mut PodView) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(rv: &str) -> BotSession {
        let mut s: BotSession = serde_json::from_value(serde_json::json!({
            "apiVersion": "paperbot.io/v1alpha1", "kind": "BotSession",
            "metadata": {"name": "bot", "namespace": "ns", "resourceVersion": rv},
            "spec": {"accountRef": {"name": "a"}, "strategyRef": {"name": "s"},
                     "allocation": "1", "symbols": ["X"],
                     "marketData": {"source": "Simulated", "simulated": {"seed": 1, "candles": 10}}}
        }))
        .unwrap();
        s.metadata.resource_version = Some(rv.into());
        s
    }

    #[test]
    fn the_written_copy_wins_until_the_store_catches_up() {
        let latest = Latest::<BotSession>::default();
        let key = ObjectRef::from_obj(&session("1"));
        assert!(latest.freshest(&key, None).is_none());
        latest.record(session("5"));
        let pick = |stored: &str| {
            latest
                .freshest(&key, Some(Arc::new(session(stored))))
                .unwrap()
                .metadata
                .resource_version
                .clone()
                .unwrap()
        };
        assert_eq!(pick("4"), "5", "stale store copy");
        assert_eq!(latest.len(), 1);
        assert_eq!(pick("5"), "5");
        assert!(latest.is_empty(), "caught up: the record ends");
        assert_eq!(pick("4"), "4", "nothing recorded: the store's copy");
    }

    #[test]
    fn own_writes_are_recognised_by_their_version() {
        let latest = Latest::<BotSession>::default();
        let key = ObjectRef::from_obj(&session("1"));
        assert!(!latest.observe(&key, Some(7)), "nothing written");
        latest.record(session("7"));
        assert!(!latest.observe(&key, Some(6)), "an older event");
        assert_eq!(latest.len(), 1);
        assert!(latest.observe(&key, Some(7)));
        assert!(latest.is_empty());
        latest.record(session("8"));
        assert!(!latest.observe(&key, Some(9)), "someone wrote after us");
        assert!(latest.is_empty());
    }

    #[test]
    fn slimming_keeps_what_reconciles_read() {
        let mut s = session("1");
        s.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_string(), "{}".to_string()),
                ("k".into(), "v".into()),
            ]
            .into(),
        );
        s.metadata.managed_fields = Some(vec![Default::default()]);
        slim_resource(&mut s);
        assert_eq!(s.metadata.managed_fields, None);
        assert_eq!(
            s.metadata.annotations,
            Some([("k".to_string(), "v".to_string())].into())
        );
    }
}
