//! `paperbot-operator`: watches PaperAccount, StrategyConfig and BotSession
//! resources and runs one bot-runtime StatefulSet per session.
//!
//! Only the holder of the leader Lease reconciles; a replica that loses the
//! lease exits so that Kubernetes restarts it as a standby, and two replicas
//! never write at the same time. `/readyz` answers ok on a standby, and on
//! the leader once its caches have synced.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use kube::runtime::events::{Recorder, Reporter};
use paperbot_operator::{
    config::OperatorConfig,
    controllers::Context,
    leader::LeaderElection,
    metrics::Metrics,
    run::{LeaderRunEnd, run_all, run_as_leader},
    server::{ServerState, serve},
};
use tracing::{error, info, warn};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Before any reqwest client is built (reqwest has no built-in provider).
    paperbot_operator::tls::install_crypto_provider();
    let cfg = OperatorConfig::parse();
    cfg.init_tracing();
    let settings = cfg.runtime_settings().context("runtime settings")?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = {
        let mut rx = stop_rx.clone();
        futures::FutureExt::shared(Box::pin(async move {
            let _ = rx.wait_for(|s| *s).await;
        }))
    };
    tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            // Kubernetes stops a pod with SIGTERM; a terminal sends SIGINT.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            info!("shutdown requested");
            let _ = stop_tx.send(true);
        }
    });

    let server = tokio::spawn(serve(
        cfg.metrics_addr,
        ServerState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
        shutdown.clone(),
    ));

    let leader = if cfg.leader_election {
        Some(
            LeaderElection::start(client.clone(), cfg.leader_config(), metrics.clone())
                .await
                .context("starting leader election")?,
        )
    } else {
        None
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "paperbot-operator".into(),
            instance: Some(cfg.identity.clone()),
        },
    );
    let mut ctx = Context::new(
        client,
        recorder,
        metrics.clone(),
        settings,
        cfg.status_sync_interval(),
    );
    ctx.resync_interval = cfg.resync_interval();
    ctx.reconcile_concurrency = cfg.reconcile_concurrency;
    let ctx = ctx.with_sync(cfg.sync_settings());
    let ctx = Arc::new(ctx);
    // Readiness: the leader is ready once its caches have synced; a standby
    // is ready while it stands by (it does what it should), so that with
    // two replicas a rollout, `helm --wait` and a PodDisruptionBudget count
    // it as available. The leader is not ready from gaining the lease until
    // its caches have synced.
    let synced = Arc::new(AtomicBool::new(false));
    if let Some(le) = &leader {
        ready.store(true, Ordering::Relaxed);
        let (ready, synced, mut leading) = (ready.clone(), synced.clone(), le.subscribe());
        tokio::spawn(async move {
            loop {
                let is_leader = *leading.borrow_and_update();
                ready.store(
                    !is_leader || synced.load(Ordering::Acquire),
                    Ordering::Release,
                );
                if leading.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    let (r, s) = (ready.clone(), synced.clone());
    let on_ready = move || {
        s.store(true, Ordering::Release);
        r.store(true, Ordering::Release);
    };
    let run = async {
        match &leader {
            Some(le) => {
                info!("waiting for the leader lease");
                run_as_leader(
                    ctx,
                    cfg.namespaces.clone(),
                    le.subscribe(),
                    shutdown.clone(),
                    on_ready,
                )
                .await
            }
            None => {
                metrics.set_leader(true);
                run_all(ctx, cfg.namespaces.clone(), shutdown.clone(), on_ready).await;
                LeaderRunEnd::Shutdown
            }
        }
    };
    // After SIGTERM the watches and queues stop at once and the reconciles
    // in flight finish; under load (or with an API server that throttles)
    // that is bounded by the shutdown grace, so the pod stops well within
    // its termination grace period.
    let grace = cfg.shutdown_grace();
    let deadline = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        }
    };
    let end = tokio::select! {
        end = run => end,
        () = deadline => {
            warn!(grace_secs = grace.as_secs(), "reconciles still in flight after the shutdown grace; exiting without them");
            LeaderRunEnd::Shutdown
        }
    };
    if end == LeaderRunEnd::LostLease {
        // Restart as a standby: never two writers.
        error!("lost the leader lease; exiting");
        std::process::exit(1);
    }
    if let Some(le) = leader
        && tokio::time::timeout(Duration::from_secs(1), le.release())
            .await
            .is_err()
    {
        warn!("releasing the leader lease timed out; it expires on its own");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    Ok(())
}
