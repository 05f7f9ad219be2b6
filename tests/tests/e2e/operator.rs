//! The operator (in-process, the same reconcilers as the binary) against the
//! real control plane: children, pods scheduled onto kwok nodes, status and
//! conditions, pause/resume, deletion through the finalizer, restarts,
//! leader election, and an unchanged fleet making no writes.

use std::{sync::Arc, time::Duration};

use kube::runtime::events::{Recorder, Reporter};
use paperbot_e2e::{ControlPlane, control_plane};
use paperbot_operator::{
    builders::{RuntimeSettings, child_name},
    controllers::Context,
    leader::{LeaderConfig, LeaderElection},
    metrics::Metrics,
    run::{run_as_leader, run_controllers},
};
use tokio::sync::watch;

fn context(client: kube::Client, user: &str) -> Arc<Context> {
    Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "paperbot-operator".into(),
                instance: Some(user.into()),
            },
        ),
        client,
        metrics: Arc::new(Metrics::new()),
        settings: RuntimeSettings {
            image: "ghcr.io/paperbot/bot-runtime:e2e".into(),
            ..Default::default()
        },
        sync_interval: Duration::from_secs(2),
    })
}

/// A running in-process operator; stops when dropped.
struct Operator {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Operator {
    async fn start(cp: &ControlPlane, user: &str, ns: &str) -> Operator {
        let ctx = context(cp.client_for(user).await, user);
        let (stop, mut rx) = watch::channel(false);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run_controllers(
            ctx,
            Some(ns.to_string()),
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
            move || {
                let _ = ready_tx.send(());
            },
        ));
        tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .expect("operator caches sync within 60s")
            .expect("operator signals ready");
        Operator {
            stop,
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Start leader election for `user` on the Lease `paperbot-operator` in `ns`.
async fn elect(cp: &ControlPlane, user: &str, ns: &str, lease_secs: u64) -> LeaderElection {
    LeaderElection::start(
        cp.client_for(user).await,
        LeaderConfig {
            lease_name: "paperbot-operator".into(),
            namespace: ns.into(),
            identity: user.into(),
            lease_duration: Duration::from_secs(lease_secs),
        },
        Arc::new(Metrics::new()),
    )
    .await
    .expect("leader election starts")
}

fn account_and_strategy(balance: &str) -> String {
    format!(
        r#"apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata: {{name: acct}}
spec: {{initialBalance: "{balance}"}}
---
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {{name: strat}}
spec:
  signals: {{smaCrossover: {{fastPeriod: 10, slowPeriod: 30}}}}
  risk: {{maxPositionSizePct: "10"}}
"#
    )
}

fn session(name: &str, allocation: &str) -> String {
    format!(
        r#"apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {{name: {name}}}
spec:
  accountRef: {{name: acct}}
  strategyRef: {{name: strat}}
  allocation: "{allocation}"
  symbols: [SIM-BTC]
  marketData: {{source: Simulated, simulated: {{seed: 1, candles: 1000}}}}
"#
    )
}

/// Poll `f` every 250 ms until it returns Some, failing after `secs`.
async fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn jsonpath(cp: &ControlPlane, ns: &str, what: &str, path: &str) -> String {
    let out = cp.kubectl(&["get", "-n", ns, what, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_runs_pauses_resumes_and_deletes_a_session() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-lifecycle");
    let op = Operator::start(cp, "operator-a", &ns).await;
    cp.kubectl_stdin(
        &["apply", "-n", &ns, "-f", "-"],
        &format!(
            "{}---\n{}",
            account_and_strategy("10000"),
            session("bot", "5000")
        ),
    );
    let child = child_name("bot");

    // Children with controller owner references.
    let kinds = ["configmap", "secret", "service", "statefulset"];
    for kind in kinds {
        let owner = eventually(&format!("{kind} {child}"), 60, || {
            let o = jsonpath(cp, &ns, &format!("{kind}/{child}"), "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].controller}");
            (!o.is_empty()).then_some(o)
        })
        .await;
        assert_eq!(owner, "BotSession/bot/true", "{kind}");
    }
    // controller-manager creates the pod, the scheduler binds it to a kwok node, kwok runs it.
    let node = eventually("pod scheduled", 60, || {
        let n = jsonpath(cp, &ns, &format!("pod/{child}-0"), "{.spec.nodeName}");
        (!n.is_empty()).then_some(n)
    })
    .await;
    assert!(node.starts_with("kwok-node-"), "{node}");
    cp.kubectl_ok(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Ready",
        &format!("pod/{child}-0"),
        "--timeout=60s",
    ]);
    cp.kubectl_ok(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Ready",
        "botsession/bot",
        "--timeout=60s",
    ]);
    assert_eq!(
        jsonpath(cp, &ns, "botsession/bot", "{.status.phase}"),
        "Running"
    );
    assert_eq!(
        jsonpath(cp, &ns, "botsession/bot", "{.status.observedGeneration}"),
        jsonpath(cp, &ns, "botsession/bot", "{.metadata.generation}")
    );
    assert_eq!(
        jsonpath(cp, &ns, "botsession/bot", "{.status.pod}"),
        format!("{child}-0")
    );
    let listing = cp.kubectl_ok(&["get", "botsession", "-n", &ns]);
    println!("$ kubectl get botsession\n{listing}");

    // Pause → 0 replicas; resume → 1.
    for (state, replicas, phase) in [("Paused", "0", "Paused"), ("Running", "1", "Running")] {
        cp.kubectl_ok(&[
            "patch",
            "-n",
            &ns,
            "botsession/bot",
            "--type=merge",
            "-p",
            &format!(r#"{{"spec":{{"desiredState":"{state}"}}}}"#),
        ]);
        eventually(&format!("{state}: replicas {replicas}"), 60, || {
            (jsonpath(cp, &ns, &format!("statefulset/{child}"), "{.spec.replicas}") == replicas)
                .then_some(())
        })
        .await;
        eventually(&format!("phase {phase}"), 60, || {
            (jsonpath(cp, &ns, "botsession/bot", "{.status.phase}") == phase).then_some(())
        })
        .await;
        cp.kubectl_ok(&[
            "wait",
            "-n",
            &ns,
            "--for=condition=Ready",
            "botsession/bot",
            "--timeout=60s",
        ]);
    }
    let events = cp.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &ns,
        "--field-selector",
        "involvedObject.kind=BotSession",
    ]);
    assert!(
        events.contains("PhaseRunning") && events.contains("PhasePaused"),
        "{events}"
    );

    // Delete → finalizer records the figures → children are garbage-collected.
    cp.kubectl_ok(&["delete", "-n", &ns, "botsession/bot", "--timeout=60s"]);
    for kind in kinds {
        eventually(&format!("{kind} garbage-collected"), 90, || {
            let out = cp.kubectl(&["get", "-n", &ns, &format!("{kind}/{child}")]);
            (!out.status.success()).then_some(())
        })
        .await;
    }
    let events = cp.kubectl_ok(&["get", "events", "-n", &ns]);
    assert!(events.contains("SessionDeleted"), "{events}");
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_creates_no_duplicates_and_an_unchanged_fleet_writes_nothing() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-fleet");
    let mut manifest = account_and_strategy("1000000");
    for i in 0..20 {
        manifest.push_str("---\n");
        manifest.push_str(&session(&format!("bot-{i:02}"), "1000"));
    }
    let op = Operator::start(cp, "operator-b", &ns).await;
    cp.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &manifest);
    for i in 0..20 {
        cp.kubectl_ok(&[
            "wait",
            "-n",
            &ns,
            "--for=condition=Ready",
            &format!("botsession/bot-{i:02}"),
            "--timeout=120s",
        ]);
    }
    op.stop().await;

    // A restarted operator finds everything in place.
    let before = cp.audited_writes_in("operator-b", &ns).len();
    let op = Operator::start(cp, "operator-b", &ns).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let sts = cp.kubectl_ok(&["get", "statefulsets", "-n", &ns, "-o", "name"]);
    assert_eq!(
        sts.lines().count(),
        20,
        "one StatefulSet per session, no duplicates:\n{sts}"
    );
    let restart_writes = cp.audited_writes_in("operator-b", &ns)[before..].to_vec();
    assert!(
        restart_writes.iter().all(|w| w.contains("events")),
        "a restart over an unchanged fleet wrote: {restart_writes:?}"
    );

    // An unchanged fleet of 20 sessions, reconciled every 2 s for a minute: no writes.
    let before = cp.audited_writes_in("operator-b", &ns).len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let writes = cp.audited_writes_in("operator-b", &ns)[before..].to_vec();
    println!(
        "writes by the operator over 60 s of an unchanged 20-session fleet: {}",
        writes.len()
    );
    assert!(
        writes.is_empty(),
        "unchanged fleet caused writes: {writes:?}"
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_of_two_replicas_holds_the_lease() {
    let cp = control_plane();
    let ns = cp.namespace("e2e-lease");
    let a = elect(cp, "operator-a", &ns, 3).await;
    let mut a_rx = a.subscribe();
    tokio::time::timeout(Duration::from_secs(30), a_rx.wait_for(|l| *l))
        .await
        .expect("a leads")
        .unwrap();
    let b = elect(cp, "operator-b", &ns, 3).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        a.is_leader() && !b.is_leader(),
        "exactly one leader while a renews"
    );
    let holder = jsonpath(cp, &ns, "lease/paperbot-operator", "{.spec.holderIdentity}");
    assert_eq!(holder, "operator-a");
    // The holder steps down: the standby takes over.
    a.release().await;
    let mut b_rx = b.subscribe();
    tokio::time::timeout(Duration::from_secs(30), b_rx.wait_for(|l| *l))
        .await
        .expect("b takes over")
        .unwrap();
    assert_eq!(
        jsonpath(cp, &ns, "lease/paperbot-operator", "{.spec.holderIdentity}"),
        "operator-b"
    );
    b.release().await;
}

/// Two complete operator replicas (each waiting for the lease before running
/// its controllers, as the binary does) against one namespace: only the
/// lease holder writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_only_the_lease_holder_writes() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-replicas");
    let lease_ns = cp.namespace("e2e-replicas-lease");
    let mut replicas = Vec::new();
    for user in ["operator-a", "operator-b"] {
        let leader = elect(cp, user, &lease_ns, 5).await;
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(run_as_leader(
            context(cp.client_for(user).await, user),
            vec![ns.clone()],
            leader.subscribe(),
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
            || {},
        ));
        replicas.push((user, leader, stop, task));
    }
    cp.kubectl_stdin(
        &["apply", "-n", &ns, "-f", "-"],
        &format!(
            "{}---\n{}",
            account_and_strategy("10000"),
            session("bot", "5000")
        ),
    );
    cp.kubectl_ok(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Ready",
        "botsession/bot",
        "--timeout=120s",
    ]);
    let holder = jsonpath(
        cp,
        &lease_ns,
        "lease/paperbot-operator",
        "{.spec.holderIdentity}",
    );
    let writers: Vec<(&str, usize)> = ["operator-a", "operator-b"]
        .into_iter()
        .map(|u| (u, cp.audited_writes_in(u, &ns).len()))
        .collect();
    println!("lease holder {holder}; writes in {ns}: {writers:?}");
    for (user, n) in &writers {
        if *user == holder {
            assert!(*n > 0, "the lease holder {user} wrote nothing");
        } else {
            assert_eq!(*n, 0, "the standby {user} wrote {n} times");
        }
    }
    for (_, leader, stop, task) in replicas {
        let _ = stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        leader.release().await;
    }
}
