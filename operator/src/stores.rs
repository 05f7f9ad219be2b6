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
//! `kubectl.kubernetes.io/last-applied-configuration`, and pods keep only
//! their status.
//!
//! A store lags the API server by the watch latency. Right after the
//! operator writes (a status, a finalizer, a child) the store may still hold
//! the older copy; [`Latest`] keeps the object the API server returned for
//! the write until the watch delivers it, and [`Latest::freshest`] picks the
//! newer of the two. The same record tells the watch which events are the
//! operator's own writes, which trigger no reconcile of the written object.

use std::{collections::HashMap, hash::Hash, sync::Arc};

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, PersistentVolumeClaim, Pod, PodStatus, Secret, Service},
};
use kube::{
    Resource,
    runtime::reflector::{ObjectRef, Store, store::Writer},
};
use paperbot_crds::{BotSession, PaperAccount, StrategyConfig};

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
    pub stateful_sets: Store<StatefulSet>,
    /// The runtime pods (same label), status only.
    pub pods: Store<Pod>,
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
    pub stateful_sets: Writer<StatefulSet>,
    /// Pods.
    pub pods: Writer<Pod>,
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
    pub stateful_sets: Latest<StatefulSet>,
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

/// Keep of a runtime pod what the session's status reads: its name,
/// labels, owner and status phase, conditions and container states.
pub fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.spec = None;
    if let Some(st) = pod.status.take() {
        pod.status = Some(PodStatus {
            phase: st.phase,
            conditions: st.conditions,
            container_statuses: st.container_statuses.map(|cs| {
                cs.into_iter()
                    .map(|mut c| {
                        c.last_state = None;
                        c.image_id = String::new();
                        c.container_id = None;
                        c.volume_mounts = None;
                        c.resources = None;
                        c.allocated_resources = None;
                        c
                    })
                    .collect()
            }),
            ..Default::default()
        });
    }
}

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
