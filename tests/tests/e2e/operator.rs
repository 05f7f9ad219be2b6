//! The operator (in-process, the same reconcilers as the binary) against the
//! real control plane: children, pods scheduled onto kwok nodes, status and
//! conditions, pause/resume, deletion through the finalizer, restarts,
//! leader election, an unchanged fleet making no writes, and the runtimes'
//! durable ledger storage (claims bound to PersistentVolumes, or
//! `DATABASE_URL` from a Secret) as the API server validates it.

use std::{sync::Arc, time::Duration};

use kube::runtime::events::{Recorder, Reporter};
use paperbot_crds::SecretKeyRef;
use paperbot_e2e::{ControlPlane, control_plane};
use paperbot_operator::{
    builders::{RuntimeSettings, child_name},
    controllers::Context,
    leader::{LeaderConfig, LeaderElection},
    ledger::{LedgerSettings, VolumeRetention, claim_name},
    metrics::Metrics,
    run::{run_as_leader, run_controllers},
};
use tokio::sync::watch;

/// Ledgers on volumes of the tests' StorageClass (bound to volumes the tests
/// provision with [`ledger_volume`]).
fn on_volumes(cp: &ControlPlane) -> LedgerSettings {
    LedgerSettings {
        storage_size: "1Gi".into(),
        storage_class: Some(cp.ledger_storage_class().into()),
        ..Default::default()
    }
}

/// Ledgers in PostgreSQL, the URL in key `url` of the Secret `secret`.
fn in_database(secret: &str) -> LedgerSettings {
    LedgerSettings {
        database_secret: Some(SecretKeyRef {
            name: secret.into(),
            key: "url".into(),
        }),
        ..Default::default()
    }
}

/// The PersistentVolume the ledger claim of session `session` binds to.
fn ledger_volume(cp: &ControlPlane, ns: &str, session: &str) -> String {
    cp.provision_ledger_volume(ns, &claim_name(&child_name(session)), "1Gi")
}

/// A Secret `name` with a PostgreSQL URL under `key` (kwok never starts the
/// container, so nothing connects to it; the kubelet contract is the
/// `secretKeyRef`).
fn database_secret(cp: &ControlPlane, ns: &str, name: &str, key: &str) {
    cp.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "-n",
        ns,
        name,
        &format!("--from-literal={key}=postgres://paperbot:secret@pg-rw.{ns}.svc:5432/paperbot"),
    ]);
}

/// The operator's context as the binary builds it for `user`, with runtime
/// pods keeping their ledger as `ledger` says and `sync_interval` between
/// runtime polls.
pub(crate) fn base_context(
    client: kube::Client,
    user: &str,
    ledger: LedgerSettings,
    sync_interval: Duration,
) -> Context {
    Context::new(
        client.clone(),
        Recorder::new(
            client,
            Reporter {
                controller: "paperbot-operator".into(),
                instance: Some(user.into()),
            },
        ),
        Arc::new(Metrics::new()),
        RuntimeSettings {
            image: "ghcr.io/paperbot/bot-runtime:e2e".into(),
            ledger,
            ..Default::default()
        },
        sync_interval,
    )
}

/// The operator's context; healthy objects are reconciled again every 2 s
/// (the binary's default is 10 min) so that the tests see many reconciles of
/// an unchanged fleet.
fn context(client: kube::Client, user: &str, ledger: LedgerSettings) -> Arc<Context> {
    let mut ctx = base_context(client, user, ledger, Duration::from_secs(2));
    ctx.resync_interval = Duration::from_secs(2);
    // kwok pods run no process: one fake fleet answers for every session's
    // runtime (Running, ready; pause/resume/stop change its phase).
    let (_, template) = paperbot_e2e::fake_runtime::FakeFleet::shared();
    let ctx = ctx.with_sync(paperbot_operator::sync::SyncSettings {
        interval: Duration::from_secs(1),
        endpoint_template: Some(template.clone()),
        ..Default::default()
    });
    Arc::new(ctx)
}

/// A running in-process operator; stops when dropped.
pub(crate) struct Operator {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Operator {
    /// Run the controllers for `ns` as the operator identity `user` (the
    /// chart's ServiceAccount and RBAC, see [`ControlPlane::operator_identity`]).
    async fn start(cp: &ControlPlane, user: &str, ns: &str, ledger: LedgerSettings) -> Operator {
        let id = cp.operator_identity(user);
        Self::run(context(id.client().await, user, ledger), ns).await
    }

    /// Run the controllers of `ctx` for `ns` until stopped; returns once its
    /// caches have synced.
    pub(crate) async fn run(ctx: Arc<Context>, ns: &str) -> Operator {
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

    pub(crate) async fn stop(mut self) {
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
    elect_with(
        cp.client_for(user).await,
        user,
        ns,
        "paperbot-operator",
        lease_secs,
    )
    .await
}

/// Start leader election with `client` as holder `user` on the Lease `lease` in `ns`.
async fn elect_with(
    client: kube::Client,
    user: &str,
    ns: &str,
    lease: &str,
    lease_secs: u64,
) -> LeaderElection {
    LeaderElection::start(
        client,
        LeaderConfig {
            lease_name: lease.into(),
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
pub(crate) async fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
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
    let volume = ledger_volume(cp, &ns, "bot");
    let op = Operator::start(cp, "operator-a", &ns, on_volumes(cp)).await;
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

    // The ledger is on the session's claim, bound to its volume.
    let claim = claim_name(&child);
    assert_eq!(
        jsonpath(
            cp,
            &ns,
            &format!("pvc/{claim}"),
            "{.status.phase}/{.spec.volumeName}/{.spec.storageClassName}"
        ),
        format!("Bound/{volume}/paperbot-e2e")
    );
    let claim_uid = jsonpath(cp, &ns, &format!("pvc/{claim}"), "{.metadata.uid}");

    // Pause and resume keep the pod (the runtime is paused through its API);
    // the StatefulSet keeps its claim template, which the API server refuses
    // to change.
    for (state, replicas, phase) in [("Paused", "1", "Paused"), ("Running", "1", "Running")] {
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
        // Scaling down keeps the ledger.
        assert_eq!(
            jsonpath(
                cp,
                &ns,
                &format!("pvc/{claim}"),
                "{.metadata.uid}/{.status.phase}"
            ),
            format!("{claim_uid}/Bound"),
            "{state}"
        );
    }
    assert_eq!(
        jsonpath(
            cp,
            &ns,
            &format!("pod/{child}-0"),
            "{.spec.volumes[?(@.name==\"ledger\")].persistentVolumeClaim.claimName}"
        ),
        claim,
        "the resumed pod mounts the same claim"
    );
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
    // The claim goes with its session (owner reference, retention Delete).
    eventually("ledger claim garbage-collected", 90, || {
        let out = cp.kubectl(&["get", "-n", &ns, &format!("pvc/{claim}")]);
        (!out.status.success()).then_some(())
    })
    .await;
    op.stop().await;
    cp.delete_ledger_volumes(&ns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_creates_no_duplicates_and_an_unchanged_fleet_writes_nothing() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-fleet");
    database_secret(cp, &ns, "pg-ledger", "url");
    let mut manifest = account_and_strategy("1000000");
    for i in 0..20 {
        manifest.push_str("---\n");
        manifest.push_str(&session(&format!("bot-{i:02}"), "1000"));
    }
    let op = Operator::start(cp, "operator-b", &ns, in_database("pg-ledger")).await;
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
    let user = cp.operator_identity("operator-b").username;
    let before = cp.audited_writes_in(&user, &ns).len();
    let op = Operator::start(cp, "operator-b", &ns, in_database("pg-ledger")).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let sts = cp.kubectl_ok(&["get", "statefulsets", "-n", &ns, "-o", "name"]);
    assert_eq!(
        sts.lines().count(),
        20,
        "one StatefulSet per session, no duplicates:\n{sts}"
    );
    let restart_writes = cp.audited_writes_in(&user, &ns)[before..].to_vec();
    assert!(
        restart_writes.iter().all(|w| w.contains("events")),
        "a restart over an unchanged fleet wrote: {restart_writes:?}"
    );

    // An unchanged fleet of 20 sessions, reconciled every 2 s for a minute: no writes.
    let before = cp.audited_writes_in(&user, &ns).len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let writes = cp.audited_writes_in(&user, &ns)[before..].to_vec();
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
/// lease holder writes. Each runs as its own chart ServiceAccount and holds
/// the Lease in its release namespace, as the chart's RBAC allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_only_the_lease_holder_writes() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-replicas");
    let lease = format!("replicas-{}", std::process::id());
    database_secret(cp, &ns, "pg-ledger", "url");
    let mut replicas = Vec::new();
    for user in ["operator-a", "operator-b"] {
        let id = cp.operator_identity(user);
        let leader = elect_with(id.client().await, user, &id.namespace, &lease, 5).await;
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(run_as_leader(
            context(id.client().await, user, in_database("pg-ledger")),
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
        paperbot_e2e::OPERATOR_NAMESPACE,
        &format!("lease/{lease}"),
        "{.spec.holderIdentity}",
    );
    let writers: Vec<(&str, usize)> = ["operator-a", "operator-b"]
        .into_iter()
        .map(|u| {
            let user = cp.operator_identity(u).username;
            (u, cp.audited_writes_in(&user, &ns).len())
        })
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

fn wait_ready(cp: &ControlPlane, ns: &str, what: &str, secs: u32) {
    cp.kubectl_ok(&[
        "wait",
        "-n",
        ns,
        "--for=condition=Ready",
        what,
        &format!("--timeout={secs}s"),
    ]);
}

/// `{.status.conditions[?(@.type=="T")].FIELD}` of a session.
fn session_condition(
    cp: &ControlPlane,
    ns: &str,
    session: &str,
    type_: &str,
    field: &str,
) -> String {
    jsonpath(
        cp,
        ns,
        &format!("botsession/{session}"),
        &format!("{{.status.conditions[?(@.type==\"{type_}\")].{field}}}"),
    )
}

/// The Secret name/key the runtime container of `sts` reads DATABASE_URL from
/// (empty when it has none).
fn database_url_source(cp: &ControlPlane, ns: &str, object: &str, containers: &str) -> String {
    jsonpath(
        cp,
        ns,
        object,
        &format!(
            "{{{containers}[0].env[?(@.name==\"DATABASE_URL\")].valueFrom.secretKeyRef.name}}/{{{containers}[0].env[?(@.name==\"DATABASE_URL\")].valueFrom.secretKeyRef.key}}"
        ),
    )
}

/// With retention `Retain` the ledger claim outlives a rescheduled pod and
/// its session: a new pod, and a new session of the same name, mount the same
/// claim bound to the same volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_ledger_volume_survives_rescheduling_and_its_session() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-retain");
    let volume = ledger_volume(cp, &ns, "bot");
    let ledger = LedgerSettings {
        retention: VolumeRetention::Retain,
        ..on_volumes(cp)
    };
    let op = Operator::start(cp, "operator-a", &ns, ledger).await;
    let manifest = format!(
        "{}---\n{}",
        account_and_strategy("10000"),
        session("bot", "5000")
    );
    cp.kubectl_stdin_ok(&["apply", "-n", &ns, "-f", "-"], &manifest);
    let child = child_name("bot");
    let claim = claim_name(&child);
    wait_ready(cp, &ns, "botsession/bot", 90);
    let bound = |cp: &ControlPlane| {
        jsonpath(
            cp,
            &ns,
            &format!("pvc/{claim}"),
            "{.metadata.uid}/{.status.phase}/{.spec.volumeName}",
        )
    };
    let first = bound(cp);
    assert!(first.ends_with(&format!("/Bound/{volume}")), "{first}");
    assert_eq!(
        jsonpath(
            cp,
            &ns,
            &format!("pvc/{claim}"),
            "{.metadata.ownerReferences[*].kind}"
        ),
        "",
        "a retained claim has no owner"
    );

    // The node "fails": the pod is deleted and the StatefulSet makes a new one.
    let old_pod = jsonpath(cp, &ns, &format!("pod/{child}-0"), "{.metadata.uid}");
    cp.kubectl_ok(&[
        "delete",
        "pod",
        "-n",
        &ns,
        &format!("{child}-0"),
        "--wait=false",
    ]);
    eventually("a new pod scheduled", 90, || {
        let p = jsonpath(
            cp,
            &ns,
            &format!("pod/{child}-0"),
            "{.metadata.uid} {.spec.nodeName}",
        );
        let (uid, node) = p.split_once(' ')?;
        (!uid.is_empty() && uid != old_pod && node.starts_with("kwok-node-")).then_some(())
    })
    .await;
    wait_ready(cp, &ns, &format!("pod/{child}-0"), 90);
    assert_eq!(
        bound(cp),
        first,
        "the new pod uses the same claim and volume"
    );

    // The session goes, the claim stays; a new session of the name takes it up.
    cp.kubectl_ok(&["delete", "-n", &ns, "botsession/bot", "--timeout=60s"]);
    eventually("StatefulSet garbage-collected", 90, || {
        let out = cp.kubectl(&["get", "-n", &ns, &format!("statefulset/{child}")]);
        (!out.status.success()).then_some(())
    })
    .await;
    eventually("pod gone", 90, || {
        let out = cp.kubectl(&["get", "-n", &ns, &format!("pod/{child}-0")]);
        (!out.status.success()).then_some(())
    })
    .await;
    assert_eq!(bound(cp), first, "the retained claim outlives its session");
    cp.kubectl_stdin_ok(&["apply", "-n", &ns, "-f", "-"], &session("bot", "5000"));
    wait_ready(cp, &ns, "botsession/bot", 90);
    assert_eq!(
        bound(cp),
        first,
        "the new session mounts the retained claim"
    );
    // The operator removes the finalizer.
    cp.kubectl_ok(&["delete", "-n", &ns, "botsession/bot", "--timeout=60s"]);
    op.stop().await;
    cp.kubectl_ok(&["delete", "-n", &ns, &format!("pvc/{claim}"), "--wait=false"]);
    cp.delete_ledger_volumes(&ns);
}

/// With a database Secret the runtime reads DATABASE_URL from it (the
/// operator's Secret, or the account's own), and no claim is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_ledger_comes_from_the_operator_secret_or_the_account_override() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-database");
    database_secret(cp, &ns, "pg-ledger", "url");
    database_secret(cp, &ns, "team-db", "uri");
    let op = Operator::start(cp, "operator-b", &ns, in_database("pg-ledger")).await;
    let manifest = format!(
        r#"{}---
apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata: {{name: team}}
spec:
  initialBalance: "10000"
  ledger:
    databaseUrlSecretRef: {{name: team-db, key: uri}}
---
{}---
{}"#,
        account_and_strategy("10000"),
        session("shared", "5000"),
        session("own", "5000").replace("accountRef: {name: acct}", "accountRef: {name: team}"),
    );
    cp.kubectl_stdin_ok(&["apply", "-n", &ns, "-f", "-"], &manifest);
    for (session, source) in [("shared", "pg-ledger/url"), ("own", "team-db/uri")] {
        wait_ready(cp, &ns, &format!("botsession/{session}"), 90);
        let child = child_name(session);
        assert_eq!(
            database_url_source(
                cp,
                &ns,
                &format!("statefulset/{child}"),
                ".spec.template.spec.containers"
            ),
            source,
            "{session}: StatefulSet"
        );
        // The pod the API server admitted from that template.
        assert_eq!(
            database_url_source(cp, &ns, &format!("pod/{child}-0"), ".spec.containers"),
            source,
            "{session}: pod"
        );
        assert_eq!(
            jsonpath(
                cp,
                &ns,
                &format!("statefulset/{child}"),
                "{.spec.volumeClaimTemplates}"
            ),
            "",
            "{session}: no claim template"
        );
        let args = jsonpath(
            cp,
            &ns,
            &format!("pod/{child}-0"),
            "{.spec.containers[0].args}",
        );
        assert!(
            args.contains("serve") && !args.contains("--ledger"),
            "{args}"
        );
        assert!(
            !jsonpath(
                cp,
                &ns,
                &format!("pod/{child}-0"),
                "{.spec.containers[0].env}"
            )
            .contains("postgres://"),
            "the URL is never copied into the pod spec"
        );
        let (status, message) = (
            session_condition(cp, &ns, session, "LedgerStorageOutdated", "status"),
            session_condition(cp, &ns, session, "LedgerStorageOutdated", "message"),
        );
        assert_eq!(status, "False", "{message}");
        assert!(
            message.contains("PostgreSQL") && message.contains(source.split('/').next().unwrap()),
            "{message}"
        );
    }
    assert_eq!(cp.kubectl_ok(&["get", "pvc", "-n", &ns, "-o", "name"]), "");
    op.stop().await;
}

/// A running session on a volume keeps it when its account moves to a
/// database (the claim template is immutable and the trades are on the
/// volume): it says so, keeps running, and a new session of the account uses
/// the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_session_keeps_its_ledger_volume_when_its_account_moves_to_a_database() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-storage-change");
    ledger_volume(cp, &ns, "bot");
    database_secret(cp, &ns, "pg-app", "uri");
    let op = Operator::start(cp, "operator-a", &ns, on_volumes(cp)).await;
    let manifest = format!(
        "{}---\n{}",
        account_and_strategy("10000"),
        session("bot", "5000")
    );
    cp.kubectl_stdin_ok(&["apply", "-n", &ns, "-f", "-"], &manifest);
    wait_ready(cp, &ns, "botsession/bot", 90);
    let child = child_name("bot");
    let template = jsonpath(
        cp,
        &ns,
        &format!("statefulset/{child}"),
        "{.spec.volumeClaimTemplates[0].metadata.name}",
    );
    assert_eq!(template, "ledger");

    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        "paperaccount/acct",
        "--type=merge",
        "-p",
        r#"{"spec":{"ledger":{"databaseUrlSecretRef":{"name":"pg-app","key":"uri"}}}}"#,
    ]);
    eventually("LedgerStorageOutdated=True", 60, || {
        (session_condition(cp, &ns, "bot", "LedgerStorageOutdated", "status") == "True")
            .then_some(())
    })
    .await;
    let message = session_condition(cp, &ns, "bot", "LedgerStorageOutdated", "message");
    println!("LedgerStorageOutdated: {message}");
    assert!(
        message.contains(&claim_name(&child)) && message.contains("pg-app"),
        "{message}"
    );
    assert_eq!(
        jsonpath(
            cp,
            &ns,
            &format!("statefulset/{child}"),
            "{.spec.volumeClaimTemplates[0].metadata.name}"
        ),
        "ledger"
    );
    assert_eq!(
        database_url_source(
            cp,
            &ns,
            &format!("statefulset/{child}"),
            ".spec.template.spec.containers"
        ),
        "/"
    );
    assert_eq!(session_condition(cp, &ns, "bot", "Ready", "status"), "True");
    let events = cp.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &ns,
        "--field-selector",
        "reason=LedgerStorageOutdated",
    ]);
    assert!(events.contains("LedgerStorageOutdated"), "{events}");

    // A new session of the account starts on the database.
    cp.kubectl_stdin_ok(&["apply", "-n", &ns, "-f", "-"], &session("fresh", "1000"));
    wait_ready(cp, &ns, "botsession/fresh", 90);
    assert_eq!(
        database_url_source(
            cp,
            &ns,
            &format!("statefulset/{}", child_name("fresh")),
            ".spec.template.spec.containers"
        ),
        "pg-app/uri"
    );
    cp.kubectl_ok(&["delete", "-n", &ns, "botsession/bot", "--timeout=60s"]);
    op.stop().await;
    cp.delete_ledger_volumes(&ns);
}

/// A StatefulSet an older operator made, with the ledger on an emptyDir, is
/// recreated with a ledger volume (and a Warning Event says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptydir_stateful_set_of_an_older_operator_is_recreated_with_a_ledger_volume() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-migrate");
    ledger_volume(cp, &ns, "bot");
    let child = child_name("bot");
    let selector = paperbot_operator::builders::labels("bot");
    let labels = serde_json::to_string(&selector).unwrap();
    let manifest = format!(
        r#"{}---
{}---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {child}}}
spec:
  replicas: 1
  serviceName: {child}
  selector: {{matchLabels: {labels}}}
  template:
    metadata: {{labels: {labels}}}
    spec:
      containers:
      - name: bot-runtime
        image: ghcr.io/paperbot/bot-runtime:old
        args: [run, -f, /etc/paperbot/session.yaml, --ledger, /var/lib/paperbot/ledger.db]
        volumeMounts: [{{name: data, mountPath: /var/lib/paperbot}}]
      volumes: [{{name: data, emptyDir: {{}}}}]
"#,
        account_and_strategy("10000"),
        session("bot", "5000"),
    );
    cp.kubectl_stdin_ok(&["apply", "-n", &ns, "-f", "-"], &manifest);
    eventually("the old StatefulSet's pod ready", 90, || {
        (jsonpath(
            cp,
            &ns,
            &format!("statefulset/{child}"),
            "{.status.readyReplicas}",
        ) == "1")
            .then_some(())
    })
    .await;
    let old_sts = jsonpath(cp, &ns, &format!("statefulset/{child}"), "{.metadata.uid}");

    let op = Operator::start(cp, "operator-a", &ns, on_volumes(cp)).await;
    wait_ready(cp, &ns, "botsession/bot", 120);
    let sts = jsonpath(
        cp,
        &ns,
        &format!("statefulset/{child}"),
        "{.metadata.uid} {.spec.volumeClaimTemplates[0].metadata.name} {.metadata.ownerReferences[0].kind}",
    );
    let (uid, rest) = sts.split_once(' ').unwrap();
    assert_ne!(uid, old_sts, "recreated");
    assert_eq!(rest, "ledger BotSession");
    assert_eq!(
        jsonpath(
            cp,
            &ns,
            &format!("pvc/{}", claim_name(&child)),
            "{.status.phase}"
        ),
        "Bound"
    );
    let events = cp.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &ns,
        "--field-selector",
        "reason=LedgerStorageMigrated",
    ]);
    assert!(events.contains("emptyDir"), "{events}");
    cp.kubectl_ok(&["delete", "-n", &ns, "botsession/bot", "--timeout=60s"]);
    op.stop().await;
    cp.delete_ledger_volumes(&ns);
}

/// Start an operator for `ns` and one Ready session `bot` on a database
/// ledger; returns the operator and the child name.
async fn one_ready_session(cp: &ControlPlane, ns: &str, user: &str) -> (Operator, String) {
    database_secret(cp, ns, "pg-ledger", "url");
    let op = Operator::start(cp, user, ns, in_database("pg-ledger")).await;
    cp.kubectl_stdin_ok(
        &["apply", "-n", ns, "-f", "-"],
        &format!(
            "{}---\n{}",
            account_and_strategy("10000"),
            session("bot", "5000")
        ),
    );
    wait_ready(cp, ns, "botsession/bot", 90);
    (op, child_name("bot"))
}

/// Writes of `user` in `ns` stop: none in 10 s (no apply loop after a repair).
async fn writes_settle(cp: &ControlPlane, user: &str, ns: &str) {
    let user = cp.operator_identity(user).username;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = cp.audited_writes_in(&user, ns).len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = cp.audited_writes_in(&user, ns);
    assert_eq!(
        after.len(),
        before,
        "the operator keeps writing: {:?}",
        &after[before..]
    );
}

/// Drift case 1: a session scaled to zero because its account went missing
/// scales back when the account returns (one apply path: the suspended
/// StatefulSet is rendered and applied like any other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_suspended_while_its_account_is_missing_scales_back_when_it_returns() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-drift-account");
    let (op, child) = one_ready_session(cp, &ns, "operator-a").await;
    cp.kubectl_ok(&["delete", "-n", &ns, "paperaccount/acct"]);
    eventually("scaled to zero", 60, || {
        (jsonpath(cp, &ns, &format!("statefulset/{child}"), "{.spec.replicas}") == "0")
            .then_some(())
    })
    .await;
    eventually("AccountNotFound", 60, || {
        (session_condition(cp, &ns, "bot", "Ready", "reason") == "AccountNotFound").then_some(())
    })
    .await;
    cp.kubectl_stdin_ok(
        &["apply", "-n", &ns, "-f", "-"],
        &account_and_strategy("10000"),
    );
    eventually("scaled back to one", 60, || {
        (jsonpath(cp, &ns, &format!("statefulset/{child}"), "{.spec.replicas}") == "1")
            .then_some(())
    })
    .await;
    wait_ready(cp, &ns, "botsession/bot", 90);
    println!(
        "{}",
        cp.kubectl_ok(&["get", "botsession,statefulset", "-n", &ns])
    );
    writes_settle(cp, "operator-a", &ns).await;
    op.stop().await;
}

/// Drift case 2: `kubectl scale` of a runtime StatefulSet is undone, with a
/// Warning Event naming the field and who changed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_of_a_runtime_stateful_set_is_undone() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-drift-scale");
    let (op, child) = one_ready_session(cp, &ns, "operator-b").await;
    cp.kubectl_ok(&[
        "scale",
        "-n",
        &ns,
        &format!("statefulset/{child}"),
        "--replicas=3",
    ]);
    eventually("replicas back to 1", 60, || {
        (jsonpath(cp, &ns, &format!("statefulset/{child}"), "{.spec.replicas}") == "1")
            .then_some(())
    })
    .await;
    let events = eventually("a DriftReverted Event", 30, || {
        let e = cp.kubectl_ok(&[
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "reason=DriftReverted",
        ]);
        e.contains("spec.replicas was changed by kubectl")
            .then_some(e)
    })
    .await;
    println!("$ kubectl get events --field-selector reason=DriftReverted\n{events}");
    writes_settle(cp, "operator-b", &ns).await;
    op.stop().await;
}

/// Drift case 3: an edit of a child by another client (`kubectl patch` of
/// the ConfigMap, `kubectl set image` on the StatefulSet, `kubectl label`
/// removing a label of the Service, deleting the Secret) is undone, and the
/// repaired fleet writes nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_edits_of_children_are_undone() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-drift-edit");
    let (op, child) = one_ready_session(cp, &ns, "operator-a").await;
    let config = |cp: &ControlPlane| {
        jsonpath(
            cp,
            &ns,
            &format!("configmap/{child}"),
            "{.data.session\\.yaml}",
        )
    };
    let image = |cp: &ControlPlane| {
        jsonpath(
            cp,
            &ns,
            &format!("statefulset/{child}"),
            "{.spec.template.spec.containers[0].image}",
        )
    };
    let (config0, image0) = (config(cp), image(cp));
    assert!(config0.contains("kind: BotSession"), "{config0}");
    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        &format!("configmap/{child}"),
        "--type=merge",
        "-p",
        r#"{"data":{"session.yaml":"edited by hand"}}"#,
    ]);
    cp.kubectl_ok(&[
        "set",
        "image",
        "-n",
        &ns,
        &format!("statefulset/{child}"),
        "bot-runtime=example.invalid/other:1",
    ]);
    cp.kubectl_ok(&[
        "label",
        "-n",
        &ns,
        &format!("service/{child}"),
        "paperbot.io/session-",
    ]);
    let token0 = jsonpath(cp, &ns, &format!("secret/{child}"), "{.metadata.uid}");
    cp.kubectl_ok(&["delete", "-n", &ns, &format!("secret/{child}")]);
    eventually("ConfigMap put back", 60, || {
        (config(cp) == config0).then_some(())
    })
    .await;
    eventually("image put back", 60, || (image(cp) == image0).then_some(())).await;
    eventually("Service label put back", 60, || {
        (jsonpath(
            cp,
            &ns,
            &format!("service/{child}"),
            "{.metadata.labels.paperbot\\.io/session}",
        ) == "bot")
            .then_some(())
    })
    .await;
    eventually("Secret recreated", 60, || {
        let uid = jsonpath(cp, &ns, &format!("secret/{child}"), "{.metadata.uid}");
        (!uid.is_empty() && uid != token0).then_some(())
    })
    .await;
    wait_ready(cp, &ns, "botsession/bot", 90);
    writes_settle(cp, "operator-a", &ns).await;
    op.stop().await;
}
