//! Wiring: one watch per kind fills the stores ([`crate::stores`]) and asks
//! for reconciles ([`crate::triggers`]); the three controllers run on kube's
//! `applier` with bounded concurrency; the status metrics refresher; for one
//! namespace or all of them.
//!
//! Start-up: no controller runs until every store holds its first list;
//! then each session, account and strategy is reconciled once. Shutdown: the
//! watches and the queues stop, reconciles in flight finish, the function
//! returns (the binary bounds the wait, see `main.rs`).

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::{
    FutureExt, StreamExt,
    channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded},
    future::join_all,
};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use kube::{
    Api, Client, Resource,
    runtime::{
        Config as ControllerConfig, WatchStreamExt, applier,
        controller::{ReconcileReason, ReconcileRequest},
        reflector::{ObjectRef, Store, store::Writer},
        watcher,
    },
};
use paperbot_crds::{BotSession, PaperAccount, StrategyConfig};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::{
    controllers::{Context, account, botsession, error_policy, strategy},
    metrics::{FleetSnapshot, Metrics},
    stores::{
        Fresh, Latest, PodView, StatefulSetView, Writers, keep_foreign_fields, resource_version,
        slim_pod, slim_resource,
    },
    triggers::{self, Cause, Triggers},
};

/// Label selector of the objects the operator creates.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by=paperbot-operator";

/// Objects per page of a watch's initial list.
pub const LIST_PAGE_SIZE: u32 = 250;

/// How often the fleet gauges ([`crate::metrics::fleet`]) are refreshed
/// from the cache.
pub const FLEET_METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// Default of `--reconcile-concurrency`: BotSession reconciles at a time.
pub const DEFAULT_SESSION_CONCURRENCY: u16 = 8;

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Sends the reconciles that watch events ask for to the three controllers.
struct Dispatch {
    sessions: UnboundedSender<ReconcileRequest<BotSession>>,
    accounts: UnboundedSender<ReconcileRequest<PaperAccount>>,
    strategies: UnboundedSender<ReconcileRequest<StrategyConfig>>,
    metrics: Arc<Metrics>,
    /// False until every store has its first list (the start-up reconciles
    /// cover what the initial lists show).
    live: AtomicBool,
}

/// `namespace/name` of an object, its key in the queue-depth metric.
fn queue_key<K: Resource>(r: &ObjectRef<K>) -> String {
    format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name)
}

fn request<K: Resource>(obj_ref: ObjectRef<K>, cause: Cause) -> ReconcileRequest<K> {
    ReconcileRequest {
        obj_ref,
        reason: ReconcileReason::Custom {
            reason: cause.as_str().to_string(),
        },
    }
}

impl Dispatch {
    fn send(&self, t: Triggers) {
        for (r, cause) in t.sessions {
            self.queued(botsession::CONTROLLER, &r, cause);
            let _ = self.sessions.unbounded_send(request(r, cause));
        }
        for (r, cause) in t.accounts {
            self.queued(account::CONTROLLER, &r, cause);
            let _ = self.accounts.unbounded_send(request(r, cause));
        }
        for (r, cause) in t.strategies {
            self.queued(strategy::CONTROLLER, &r, cause);
            let _ = self.strategies.unbounded_send(request(r, cause));
        }
    }

    /// Count a reconcile of `r` asked for by `cause` and queue it.
    fn queued<K: Resource>(&self, controller: &'static str, r: &ObjectRef<K>, cause: Cause) {
        self.metrics.record_trigger(controller, cause.as_str());
        self.metrics.record_queued(controller, queue_key(r));
    }

    /// Dispatch the triggers of one watch event of `kind`.
    fn event(&self, kind: &'static str, own_write: bool, t: Triggers) {
        if !self.live.load(Ordering::Acquire) {
            return;
        }
        let outcome = if own_write {
            "own_write"
        } else if t.is_empty() {
            "ignored"
        } else {
            "trigger"
        };
        self.metrics.record_watch_event(kind, outcome);
        self.send(t);
    }
}

/// Where the operator's own writes of a kind are recorded.
type OwnWrites<K> = (Arc<Fresh>, fn(&Fresh) -> &Latest<K>);

/// An object seen during a re-list: its copy before, its key, whether the
/// event was the operator's own write.
type Listed<K> = (Option<Arc<K>>, ObjectRef<K>, bool);

/// Watch `api`, keep `writer`'s store up to date (each object passed through
/// `slim` first) and call `on_change(old, new, own_write)` after each change
/// is in the store (`new` is `None` for a deletion). After a re-list the
/// changes are reported once the new list is in place, deletions included.
/// `own` recognises the operator's own writes; `synced` turns true once the
/// store holds its first list.
#[allow(clippy::too_many_arguments)]
async fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    mut writer: Writer<K>,
    slim: fn(&mut K),
    own: Option<OwnWrites<K>>,
    kind: &'static str,
    synced: tokio::sync::watch::Sender<bool>,
    mut on_change: impl FnMut(Option<&K>, Option<&K>, bool),
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let reader = writer.as_reader();
    let observe = |key: &ObjectRef<K>, obj: &K| {
        own.as_ref()
            .is_some_and(|(fresh, latest)| latest(fresh).observe(key, resource_version(obj)))
    };
    // During a re-list: (the copy before, the key, whether it is an own write).
    let mut relist: Option<Vec<Listed<K>>> = None;
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Err(e) => warn!(kind, error = %e, "watch failed; retrying with backoff"),
            Ok(watcher::Event::Init) => {
                writer.apply_watcher_event(&watcher::Event::Init);
                relist = Some(Vec::new());
            }
            Ok(watcher::Event::InitApply(mut obj)) => {
                slim(&mut obj);
                let key = ObjectRef::from_obj(&obj);
                let old = reader.get(&key);
                let own_write = observe(&key, &obj);
                writer.apply_watcher_event(&watcher::Event::InitApply(obj));
                relist
                    .get_or_insert_with(Vec::new)
                    .push((old, key, own_write));
            }
            Ok(watcher::Event::InitDone) => {
                let before = reader.state();
                writer.apply_watcher_event(&watcher::Event::InitDone);
                let listed = relist.take().unwrap_or_default();
                let seen: std::collections::HashSet<&ObjectRef<K>> =
                    listed.iter().map(|(_, k, _)| k).collect();
                for gone in before
                    .iter()
                    .filter(|o| !seen.contains(&ObjectRef::from_obj(&***o)))
                {
                    on_change(Some(gone), None, false);
                }
                for (old, key, own_write) in &listed {
                    let new = reader.get(key);
                    on_change(old.as_deref(), new.as_deref(), *own_write);
                }
                synced.send_replace(true);
            }
            Ok(watcher::Event::Apply(mut obj)) => {
                slim(&mut obj);
                let key = ObjectRef::from_obj(&obj);
                let old = reader.get(&key);
                let own_write = observe(&key, &obj);
                writer.apply_watcher_event(&watcher::Event::Apply(obj));
                let new = reader.get(&key);
                on_change(old.as_deref(), new.as_deref(), own_write);
            }
            Ok(watcher::Event::Delete(mut obj)) => {
                slim(&mut obj);
                let key = ObjectRef::from_obj(&obj);
                if let Some((fresh, latest)) = &own {
                    latest(fresh).forget(&key);
                }
                let old = reader.get(&key).unwrap_or_else(|| Arc::new(obj.clone()));
                writer.apply_watcher_event(&watcher::Event::Delete(obj));
                on_change(Some(&old), None, false);
            }
        }
    }
}

/// Wait until every watch has filled its store once (false when a watch
/// ended first). The watches' own signals are used, not
/// `Store::wait_until_ready`: kube-runtime 5 wakes only the last of several
/// tasks waiting on one store, and each applier waits on its store.
async fn stores_ready(synced: &[tokio::sync::watch::Receiver<bool>]) -> bool {
    for rx in synced {
        if rx.clone().wait_for(|s| *s).await.is_err() {
            return false;
        }
    }
    true
}

/// Run the controllers for `namespace` (`None`: all namespaces) until
/// `shutdown` resolves. `on_ready` is called once every store has synced
/// (the operator is then ready to serve `/readyz`). `ctx` gives the client,
/// settings and metrics; its stores are replaced by this scope's.
pub async fn run_controllers(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce() + Send + 'static,
) {
    let ns = namespace.as_deref();
    let client = ctx.client.clone();
    let writers = Writers::new();
    let stores = writers.readers();
    let ctx = Arc::new(ctx.for_scope(stores.clone()));
    let shutdown = shutdown.shared();
    let (s_tx, s_rx) = unbounded();
    let (a_tx, a_rx) = unbounded();
    let (st_tx, st_rx) = unbounded();
    let dispatch = Arc::new(Dispatch {
        sessions: s_tx,
        accounts: a_tx,
        strategies: st_tx,
        metrics: ctx.metrics.clone(),
        live: AtomicBool::new(false),
    });
    for c in [
        botsession::CONTROLLER,
        account::CONTROLLER,
        strategy::CONTROLLER,
    ] {
        ctx.metrics.init_controller(c);
    }

    let wc = watcher::Config::default().page_size(LIST_PAGE_SIZE);
    let owned = wc.clone().labels(MANAGED_BY);
    let Writers {
        sessions: w_sessions,
        accounts: w_accounts,
        strategies: w_strategies,
        stateful_sets: w_sts,
        pods: w_pods,
        config_maps: w_cm,
        secrets: w_secrets,
        services: w_services,
        claims: w_claims,
    } = writers;
    let fresh = ctx.fresh.clone();
    let mut synced = Vec::new();
    let mut signal = || {
        let (tx, rx) = tokio::sync::watch::channel(false);
        synced.push(rx);
        tx
    };
    let watches = {
        let (d, st) = (dispatch.clone(), stores.clone());
        let sessions = watch_kind(
            api::<BotSession>(&client, ns),
            wc.clone(),
            w_sessions,
            slim_resource::<BotSession>,
            Some((fresh.clone(), |f: &Fresh| &f.sessions)),
            "BotSession",
            signal(),
            move |old, new, own| {
                d.event(
                    "BotSession",
                    own,
                    triggers::on_session(old, new, own, &st.sessions, &st.accounts),
                )
            },
        );
        let (d, st) = (dispatch.clone(), stores.clone());
        let accounts = watch_kind(
            api::<PaperAccount>(&client, ns),
            wc.clone(),
            w_accounts,
            slim_resource::<PaperAccount>,
            Some((fresh.clone(), |f: &Fresh| &f.accounts)),
            "PaperAccount",
            signal(),
            move |old, new, own| {
                d.event(
                    "PaperAccount",
                    own,
                    triggers::on_account(old, new, own, &st.sessions),
                )
            },
        );
        let (d, st) = (dispatch.clone(), stores.clone());
        let strategies = watch_kind(
            api::<StrategyConfig>(&client, ns),
            wc.clone(),
            w_strategies,
            slim_resource::<StrategyConfig>,
            Some((fresh.clone(), |f: &Fresh| &f.strategies)),
            "StrategyConfig",
            signal(),
            move |old, new, own| {
                d.event(
                    "StrategyConfig",
                    own,
                    triggers::on_strategy(old, new, own, &st.sessions),
                )
            },
        );
        let d = dispatch.clone();
        let stateful_sets = watch_kind(
            api::<StatefulSetView>(&client, ns),
            owned.clone(),
            w_sts,
            keep_foreign_fields::<StatefulSetView>,
            Some((fresh.clone(), |f: &Fresh| &f.stateful_sets)),
            "StatefulSet",
            signal(),
            move |old, new, own| {
                d.event("StatefulSet", own, triggers::on_stateful_set(old, new, own))
            },
        );
        let (d, st) = (dispatch.clone(), stores.clone());
        let pods = watch_kind(
            api::<PodView>(&client, ns),
            owned.clone(),
            w_pods,
            slim_pod,
            None,
            "Pod",
            signal(),
            move |old, new, own| d.event("Pod", own, triggers::on_pod(old, new, &st.stateful_sets)),
        );
        let d = dispatch.clone();
        let config_maps = watch_kind(
            api::<ConfigMap>(&client, ns),
            owned.clone(),
            w_cm,
            keep_foreign_fields::<ConfigMap>,
            Some((fresh.clone(), |f: &Fresh| &f.config_maps)),
            "ConfigMap",
            signal(),
            move |old, new, own| d.event("ConfigMap", own, triggers::on_child(old, new, own)),
        );
        let d = dispatch.clone();
        let secrets = watch_kind(
            api::<Secret>(&client, ns),
            owned.clone(),
            w_secrets,
            keep_foreign_fields::<Secret>,
            Some((fresh.clone(), |f: &Fresh| &f.secrets)),
            "Secret",
            signal(),
            move |old, new, own| d.event("Secret", own, triggers::on_child(old, new, own)),
        );
        let d = dispatch.clone();
        let services = watch_kind(
            api::<Service>(&client, ns),
            owned.clone(),
            w_services,
            keep_foreign_fields::<Service>,
            Some((fresh.clone(), |f: &Fresh| &f.services)),
            "Service",
            signal(),
            move |old, new, own| d.event("Service", own, triggers::on_child(old, new, own)),
        );
        let (d, st) = (dispatch.clone(), stores.clone());
        let claims = watch_kind(
            api::<PersistentVolumeClaim>(&client, ns),
            owned,
            w_claims,
            keep_foreign_fields::<PersistentVolumeClaim>,
            Some((fresh.clone(), |f: &Fresh| &f.claims)),
            "PersistentVolumeClaim",
            signal(),
            move |old, new, own| {
                d.event(
                    "PersistentVolumeClaim",
                    own,
                    triggers::on_claim(old, new, own, &st.stateful_sets),
                )
            },
        );
        futures::future::join(
            futures::future::join5(sessions, accounts, strategies, stateful_sets, pods),
            futures::future::join4(config_maps, secrets, services, claims),
        )
    };
    let watches = {
        let sd = shutdown.clone();
        async move {
            tokio::select! {
                _ = watches => {},
                () = sd => {},
            }
        }
    };

    let starter = {
        let (d, st, sd, sy) = (
            dispatch.clone(),
            stores.clone(),
            shutdown.clone(),
            synced.clone(),
        );
        async move {
            tokio::select! {
                ready = stores_ready(&sy) => {
                    if !ready {
                        return;
                    }
                }
                () = sd => return,
            }
            d.live.store(true, Ordering::Release);
            info!(
                sessions = st.sessions.len(),
                accounts = st.accounts.len(),
                strategies = st.strategies.len(),
                "caches synced; ready"
            );
            d.send(triggers::startup(
                &st.sessions,
                &st.accounts,
                &st.strategies,
            ));
            on_ready();
        }
    };

    let concurrency = ctx.reconcile_concurrency;
    let sessions = run_applier(
        botsession::reconcile,
        botsession::CONTROLLER,
        ctx.clone(),
        stores.sessions.clone(),
        s_rx,
        shutdown.clone(),
        concurrency,
    );
    let accounts = run_applier(
        account::reconcile,
        account::CONTROLLER,
        ctx.clone(),
        stores.accounts.clone(),
        a_rx,
        shutdown.clone(),
        2,
    );
    let strategies = run_applier(
        strategy::reconcile,
        strategy::CONTROLLER,
        ctx.clone(),
        stores.strategies.clone(),
        st_rx,
        shutdown.clone(),
        2,
    );

    // The runtime status poller: a report users would see differently asks
    // for one reconcile of that session.
    let syncing = {
        let (d, st, sd, sy) = (
            dispatch.clone(),
            stores.clone(),
            shutdown.clone(),
            synced.clone(),
        );
        let poller = ctx.poller.clone();
        async move {
            if !stores_ready(&sy).await {
                return;
            }
            let trigger = move |r| {
                d.send(Triggers {
                    sessions: vec![(r, Cause::Runtime)],
                    ..Default::default()
                });
            };
            poller.run(st.sessions.clone(), trigger, sd).await;
        }
    };

    let metrics = ctx.metrics.clone();
    let (st, sd) = (stores.clone(), shutdown.clone());
    let (scope, interval) = (namespace.clone(), ctx.sync_interval);
    let refresher = async move {
        if !stores_ready(&synced).await {
            return;
        }
        let mut tick = tokio::time::interval(FLEET_METRICS_INTERVAL);
        let refresh = async {
            loop {
                tick.tick().await;
                export_fleet_metrics(scope.as_deref(), &st, &metrics, interval);
            }
        };
        tokio::select! {
            () = refresh => {},
            () = sd => {},
        }
    };
    drop(dispatch);
    futures::join!(
        watches, starter, sessions, accounts, strategies, refresher, syncing
    );
}

/// Run one controller on kube's applier: its queue is `queue` until
/// `shutdown`, then the reconciles in flight finish and it returns.
async fn run_applier<K, Fut>(
    reconcile: fn(Arc<K>, Arc<Context>) -> Fut,
    controller: &'static str,
    ctx: Arc<Context>,
    store: Store<K>,
    queue: UnboundedReceiver<ReconcileRequest<K>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    concurrency: u16,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = crate::Result<kube::runtime::controller::Action>> + Send + 'static,
{
    let queue = queue.map(Ok::<_, Infallible>).take_until(shutdown);
    applier(
        move |obj, ctx: Arc<Context>| {
            ctx.metrics
                .record_dequeued(controller, &queue_key(&ObjectRef::from_obj(&*obj)));
            Box::pin(reconcile(obj, ctx))
        },
        error_policy,
        ctx,
        store,
        queue,
        ControllerConfig::default().concurrency(concurrency),
    )
    .for_each(|r| async move {
        if let Err(e) = r {
            debug!(error = %e, "reconcile ended without result");
        }
    })
    .await;
}

/// The fleet gauges of `scope` (a namespace, `None` for all) from the
/// cache, and the queue depth without objects that are gone.
pub fn export_fleet_metrics(
    scope: Option<&str>,
    stores: &crate::stores::Stores,
    metrics: &Metrics,
    status_sync_interval: Duration,
) {
    metrics.fleet.export(
        scope,
        FleetSnapshot::of(
            &stores.sessions.state(),
            &stores.accounts.state(),
            stores.strategies.len(),
            status_sync_interval,
        ),
    );
    let exists = |key: &str, controller: &'static str| {
        let Some((ns, name)) = key.split_once('/') else {
            return false;
        };
        match controller {
            botsession::CONTROLLER => stores
                .sessions
                .get(&ObjectRef::new(name).within(ns))
                .is_some(),
            account::CONTROLLER => stores
                .accounts
                .get(&ObjectRef::new(name).within(ns))
                .is_some(),
            _ => stores
                .strategies
                .get(&ObjectRef::new(name).within(ns))
                .is_some(),
        }
    };
    for c in [
        botsession::CONTROLLER,
        account::CONTROLLER,
        strategy::CONTROLLER,
    ] {
        metrics.prune_queue(c, scope, |k| exists(k, c));
    }
}

/// Run the controllers for every namespace in `namespaces` (empty: all).
pub async fn run_all(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl Fn() + Send + Sync + 'static,
) {
    let shutdown = async move {
        shutdown.await;
    }
    .shared();
    let on_ready = Arc::new(on_ready);
    let targets: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(targets.len()));
    join_all(targets.into_iter().map(|ns| {
        let sd = shutdown.clone();
        let ready = on_ready.clone();
        let remaining = remaining.clone();
        run_controllers(ctx.clone(), ns, sd, move || {
            // Ready once every namespace's caches are.
            if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                ready();
            }
        })
    }))
    .await;
}

/// How [`run_as_leader`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderRunEnd {
    /// `shutdown` resolved (before or after leadership was gained).
    Shutdown,
    /// The lease was lost; the caller must stop writing (the binary exits so
    /// that it restarts as a standby).
    LostLease,
}

/// Run the controllers only while this replica holds the lease: wait until
/// it leads, run until `shutdown` or until the lease is lost.
pub async fn run_as_leader(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    mut leading: tokio::sync::watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl Fn() + Send + Sync + 'static,
) -> LeaderRunEnd {
    let shutdown = Box::pin(shutdown).shared();
    tokio::select! {
        r = leading.wait_for(|l| *l) => {
            if r.is_err() {
                return LeaderRunEnd::LostLease;
            }
        }
        () = shutdown.clone() => return LeaderRunEnd::Shutdown,
    }
    info!("acquired the leader lease; starting controllers");
    let lost = Arc::new(AtomicBool::new(false));
    let lost_flag = lost.clone();
    let stop = {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = shutdown => {},
                _ = leading.wait_for(|l| !*l) => {
                    tracing::error!("lost the leader lease; stopping controllers");
                    lost_flag.store(true, Ordering::SeqCst);
                },
            }
        }
    };
    run_all(ctx, namespaces, stop, on_ready).await;
    if lost.load(Ordering::SeqCst) {
        LeaderRunEnd::LostLease
    } else {
        LeaderRunEnd::Shutdown
    }
}
