//! `paperbot-operator`: watches PaperAccount, StrategyConfig and BotSession
//! resources and runs one bot-runtime StatefulSet per session.
//!
//! Only the holder of the leader Lease reconciles; a replica that loses the
//! lease exits so that Kubernetes restarts it as a standby, and two replicas
//! never write at the same time.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
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
use tracing::{error, info};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
    let ctx = Arc::new(Context {
        client,
        recorder,
        metrics: metrics.clone(),
        settings,
        sync_interval: cfg.status_sync_interval(),
    });
    let r = ready.clone();
    let on_ready = move || r.store(true, Ordering::Relaxed);
    match &leader {
        Some(le) => {
            info!("waiting for the leader lease");
            if run_as_leader(
                ctx,
                cfg.namespaces.clone(),
                le.subscribe(),
                shutdown,
                on_ready,
            )
            .await
                == LeaderRunEnd::LostLease
            {
                // Restart as a standby: never two writers.
                error!("lost the leader lease; exiting");
                std::process::exit(1);
            }
        }
        None => {
            metrics.set_leader(true);
            run_all(ctx, cfg.namespaces.clone(), shutdown, on_ready).await;
        }
    }
    if let Some(le) = leader {
        le.release().await;
    }
    let _ = server.await;
    Ok(())
}
