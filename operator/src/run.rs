//! Wiring: the three controllers on kube's runtime, the status metrics
//! refresher, for one namespace or all of them.

use std::{future::Future, sync::Arc, time::Duration};

use futures::{StreamExt, future::join_all};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Secret, Service},
};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use paperbot_crds::{BotSession, PaperAccount, StrategyConfig};
use tracing::info;

use crate::{
    controllers::{Context, account, botsession, error_policy, strategy},
    metrics::Metrics,
};

/// Label selector of the objects the operator creates.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by=paperbot-operator";

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Run the controllers for `namespace` (`None`: all namespaces) until
/// `shutdown` resolves. `on_ready` is called once the BotSession cache has
/// synced (the operator is then ready to serve `/readyz`).
pub async fn run_controllers(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce() + Send + 'static,
) {
    let ns = namespace.as_deref();
    let client = ctx.client.clone();
    let wc = watcher::Config::default();
    let owned = watcher::Config::default().labels(MANAGED_BY);

    let sessions = Controller::new(api::<BotSession>(&client, ns), wc.clone());
    let store = sessions.store();
    let by_account = store.clone();
    let by_strategy = store.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = futures::future::FutureExt::shared(async move {
        shutdown.await;
    });
    let sd = shutdown.clone();
    let sessions = sessions
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<ConfigMap>(&client, ns), owned.clone())
        .owns(api::<Secret>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .watches(api::<PaperAccount>(&client, ns), wc.clone(), move |a| {
            sessions_referencing(&by_account, &a.namespace(), |s| {
                s.spec.account_ref.name == a.name_any()
            })
        })
        .watches(api::<StrategyConfig>(&client, ns), wc.clone(), move |st| {
            sessions_referencing(&by_strategy, &st.namespace(), |s| {
                s.spec.strategy_ref.name == st.name_any()
            })
        })
        .graceful_shutdown_on(async move {
            sd.await;
        })
        .run(botsession::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});

    let sd = shutdown.clone();
    let accounts = Controller::new(api::<PaperAccount>(&client, ns), wc.clone())
        .watches(api::<BotSession>(&client, ns), wc.clone(), |s| {
            Some(
                ObjectRef::new(&s.spec.account_ref.name).within(&s.namespace().unwrap_or_default()),
            )
        })
        .graceful_shutdown_on(async move {
            sd.await;
        })
        .run(account::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});

    let sd = shutdown.clone();
    let strategies = Controller::new(api::<StrategyConfig>(&client, ns), wc.clone())
        .watches(api::<BotSession>(&client, ns), wc, |s| {
            Some(
                ObjectRef::new(&s.spec.strategy_ref.name)
                    .within(&s.namespace().unwrap_or_default()),
            )
        })
        .graceful_shutdown_on(async move {
            sd.await;
        })
        .run(strategy::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});

    let ready_store = store.clone();
    tokio::spawn(async move {
        // kube-runtime 5's `Store::wait_until_ready` keeps one waker only: when
        // the controller's applier waits on the same store, an earlier waiter
        // is never woken. Re-polling with a timeout sidesteps that.
        loop {
            match tokio::time::timeout(Duration::from_millis(250), ready_store.wait_until_ready())
                .await
            {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return,
                Err(_) => continue,
            }
        }
        info!("session cache synced; ready");
        on_ready();
        let _ = tx.send(());
    });
    let metrics = ctx.metrics.clone();
    let sd = shutdown.clone();
    let refresher = async move {
        let _ = rx.await;
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        let refresh = async {
            loop {
                tick.tick().await;
                export_session_metrics(&store, &metrics);
            }
        };
        tokio::select! {
            () = refresh => {},
            () = sd => {},
        }
    };
    futures::join!(sessions, accounts, strategies, refresher);
}

fn sessions_referencing(
    store: &Store<BotSession>,
    namespace: &Option<String>,
    uses: impl Fn(&BotSession) -> bool,
) -> Vec<ObjectRef<BotSession>> {
    store
        .state()
        .into_iter()
        .filter(|s| &s.namespace() == namespace && uses(s))
        .map(|s| ObjectRef::from_obj(&*s))
        .collect()
}

/// Sessions by phase and sessions with an open breaker, from the cache.
pub fn export_session_metrics(store: &Store<BotSession>, metrics: &Metrics) {
    let sessions = store.state();
    let mut breakers_open = 0;
    for s in &sessions {
        if s.status
            .as_ref()
            .and_then(|st| st.breaker.as_deref())
            .is_some_and(|b| b != "None")
        {
            breakers_open += 1;
        }
    }
    metrics.set_sessions_by_phase(
        sessions
            .iter()
            .map(|s| (s.status.clone().unwrap_or_default().phase, 1)),
    );
    metrics.set_breakers_open(breakers_open);
}

/// Run the controllers for every namespace in `namespaces` (empty: all).
pub async fn run_all(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl Fn() + Send + Sync + 'static,
) {
    let shutdown = futures::future::FutureExt::shared(async move {
        shutdown.await;
    });
    let on_ready = Arc::new(on_ready);
    let targets: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    join_all(targets.into_iter().map(|ns| {
        let sd = shutdown.clone();
        let ready = on_ready.clone();
        run_controllers(ctx.clone(), ns, sd, move || ready())
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
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    tokio::select! {
        r = leading.wait_for(|l| *l) => {
            if r.is_err() {
                return LeaderRunEnd::LostLease;
            }
        }
        () = shutdown.clone() => return LeaderRunEnd::Shutdown,
    }
    info!("acquired the leader lease; starting controllers");
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lost_flag = lost.clone();
    let stop = {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = shutdown => {},
                _ = leading.wait_for(|l| !*l) => {
                    tracing::error!("lost the leader lease; stopping controllers");
                    lost_flag.store(true, std::sync::atomic::Ordering::SeqCst);
                },
            }
        }
    };
    run_all(ctx, namespaces, stop, on_ready).await;
    if lost.load(std::sync::atomic::Ordering::SeqCst) {
        LeaderRunEnd::LostLease
    } else {
        LeaderRunEnd::Shutdown
    }
}
