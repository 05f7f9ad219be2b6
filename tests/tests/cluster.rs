//! The product on a real node, as a user runs it: the images built by
//! `images/build.sh` loaded into the node's containerd, the operator
//! installed by `helm install` from `charts/paperbot` (in a pod, with its
//! in-cluster config, its ServiceAccount and the chart's RBAC), BotSessions
//! whose `bot-runtime` pods trade and report through the operator into
//! `kubectl get paperbot`, and the lifecycle a cluster puts them through: a
//! runtime killed without warning (`SIGKILL`, as the OOM killer does) and a
//! runtime pod deleted mid-session (`SIGTERM`), both resumed by their
//! StatefulSet with nothing lost, live sessions sharing the market-data feed
//! the operator deploys for them, `helm upgrade` and `helm uninstall`.
//! Both namespaces enforce the `restricted` Pod Security Standard through the
//! API server's PodSecurity admission.
//!
//! One test, on its own plane with a real node (`tests/control-plane/start.sh
//! --real-node`, see `paperbot_e2e::real_node`); it prints what a user would
//! see at each step.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::sleep,
    time::{Duration, Instant},
};

use paperbot_e2e::{
    real_node::{HostState, REAL_NODE_KEY, RealNodePlane},
    repo,
};
use serde_json::Value;

/// The operator's release name and the Deployment the chart names after it.
const RELEASE: &str = "paperbot";
/// StorageClass of the ledger volumes the test provisions by hand (the
/// plane has no dynamic provisioner).
const LEDGER_CLASS: &str = "paperbot-real-node";
/// Sessions: `steady` runs uninterrupted; `interrupted` is the same session
/// killed with SIGKILL and then deleted mid-run. Same seeds, same market:
/// their ledgers must be equal trade for trade.
const STEADY: &str = "steady";
const INTERRUPTED: &str = "interrupted";

/// Run `images/build.sh` (cheap when nothing changed) and return the
/// operator's and the runtime's image tarballs.
fn build_images() -> (PathBuf, PathBuf) {
    let began = Instant::now();
    let out = Command::new(repo().join("images/build.sh"))
        .output()
        .expect("running images/build.sh");
    assert!(
        out.status.success(),
        "images/build.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = repo().join("target/images");
    let operator = dir.join("paperbot-operator.tar");
    let runtime = dir.join("bot-runtime.tar");
    for t in [&operator, &runtime] {
        let len = std::fs::metadata(t)
            .unwrap_or_else(|e| panic!("{}: {e}", t.display()))
            .len();
        println!("image {}: {:.1} MB", t.display(), len as f64 / 1e6);
    }
    println!("images/build.sh took {:.1?}", began.elapsed());
    (operator, runtime)
}

/// Poll `check` every 500 ms until it returns `Some`, or fail after `limit`
/// with `what` and the last state `describe` gives.
fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let began = Instant::now();
    loop {
        if let Some(v) = check() {
            println!("{what}: after {:.1?}", began.elapsed());
            return v;
        }
        if began.elapsed() > limit {
            panic!("{what}: not within {limit:?}\n{}", describe());
        }
        sleep(Duration::from_millis(500));
    }
}

fn json(plane: &RealNodePlane, args: &[&str]) -> Option<Value> {
    let out = plane.kubectl(args);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn session(plane: &RealNodePlane, ns: &str, name: &str) -> Option<Value> {
    json(plane, &["get", "botsession", name, "-n", ns, "-o", "json"])
}

fn phase(s: &Value) -> &str {
    s.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn trades(s: &Value) -> u64 {
    s.pointer("/status/trades")
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// What a user looks at when something is off: sessions, pods, events and
/// the operator's last log lines.
fn cluster_state(plane: &RealNodePlane, op_ns: &str, ns: &str) -> String {
    // The node's disk first: a DiskPressure eviction storm (one evicted
    // operator pod after another) otherwise drowns every other line.
    let df = Command::new("df")
        .args(["-h", "/"])
        .arg(&plane.state)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("df: {e}\n"));
    let mut s = format!("$ df -h / {}\n{df}\n", plane.state.display());
    for args in [
        vec![
            "get",
            "nodes",
            "-o",
            "custom-columns=NODE:.metadata.name,PRESSURE:.status.conditions[?(@.status==\"True\")].type",
        ],
        vec!["get", "paperbot", "-n", ns, "-o", "wide"],
        vec![
            "get",
            "pods,pvc",
            "-A",
            "-o",
            "wide",
            "--field-selector=status.phase!=Failed",
        ],
        vec!["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
        vec!["get", "events", "-n", op_ns, "--sort-by=.lastTimestamp"],
        vec!["logs", "-n", op_ns, "deploy/paperbot", "--tail=40"],
        vec!["logs", "-n", ns, "interrupted-runtime-0", "--tail=20"],
    ] {
        let out = plane.kubectl(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The last 60 lines of each: the newest events and log lines.
        let lines: Vec<&str> = text.lines().collect();
        let kept = &lines[lines.len().saturating_sub(60)..];
        let cut = lines.len() - kept.len();
        s.push_str(&format!("$ kubectl {}\n", args.join(" ")));
        if cut > 0 {
            s.push_str(&format!("({cut} earlier lines left out)\n"));
        }
        s.push_str(&kept.join("\n"));
        s.push_str("\n\n");
    }
    s
}

/// Ledger volumes: `count` hostPath PersistentVolumes of [`LEDGER_CLASS`]
/// under `dir`, owned by the runtime's user (65532) because a hostPath
/// volume ignores `fsGroup`.
fn provision_ledger_volumes(plane: &RealNodePlane, dir: &Path, count: usize) {
    plane.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {LEDGER_CLASS}}}\n\
             provisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: Immediate\nreclaimPolicy: Retain\n"
        ),
    );
    for i in 0..count {
        let path = dir.join(format!("pv-{i}"));
        std::fs::create_dir_all(&path).expect("creating a ledger volume directory");
        std::os::unix::fs::chown(&path, Some(65532), Some(65532)).expect("chown 65532");
        plane.kubectl_stdin_ok(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: ledger-{i}}}\nspec:\n  \
                 capacity: {{storage: 256Mi}}\n  accessModes: [ReadWriteOnce]\n  \
                 persistentVolumeReclaimPolicy: Retain\n  storageClassName: {LEDGER_CLASS}\n  \
                 hostPath: {{path: {}, type: Directory}}\n",
                path.display()
            ),
        );
    }
}

/// Helm values: the operator and the runtimes on the real node, ledgers on
/// the hand-made volumes, a short status sync so the test sees figures move.
fn values() -> String {
    let placement = format!(
        "  nodeSelector: {{{REAL_NODE_KEY}: \"true\"}}\n  tolerations:\n  - {{key: {REAL_NODE_KEY}, operator: Exists, effect: NoSchedule}}\n"
    );
    format!(
        "nodeSelector: {{{REAL_NODE_KEY}: \"true\"}}\ntolerations:\n- {{key: {REAL_NODE_KEY}, operator: Exists, effect: NoSchedule}}\n\
         runtime:\n{placement}\
         ledger:\n  storage: {{className: {LEDGER_CLASS}, size: 64Mi}}\n\
         statusSyncInterval: 2s\nlogFormat: text\n"
    )
}

/// The sessions: a simulated market of two symbols (576 five-minute candles
/// at 3,000× real time: about 60 s each), an aggressive strategy with every
/// signal, breakers and the autopilot on.
fn manifest(names: &[&str]) -> String {
    let mut m = String::from(
        r#"apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata: {name: desk}
spec:
  initialBalance: "50000"
---
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {name: all-signals}
spec:
  mode: Aggressive
  intelLevel: 7
  signals:
    smaCrossover: {fastPeriod: 8, slowPeriod: 21}
    rsi: {period: 14, oversold: "35", overbought: "65"}
    momentum: {period: 12, thresholdPct: "0.8"}
    bollinger: {period: 20, stdDev: "2"}
  risk:
    trailingStopPct: "3"
    maxHoldTime: "6h"
  circuitBreakers:
    maxConsecutiveLosses: 5
    dailyLossPct: "6"
    cooldown: "1h"
  autopilot:
    enabled: true
    performanceWindow: 5
    cooldown: "3h"
    bounds:
      maxPositionSizePct: {min: "10", max: "40"}
      confidenceThreshold: {min: "20", max: "70"}
"#,
    );
    for name in names {
        m.push_str(&format!(
            r#"---
apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {{name: {name}}}
spec:
  accountRef: {{name: desk}}
  strategyRef: {{name: all-signals}}
  allocation: "20000"
  symbols: [SIM-A, SIM-B]
  marketData:
    source: Simulated
    speed: "3000"
    simulated:
      seed: 2024
      initialPrice: "250"
      annualDrift: "0.1"
      annualVolatility: "0.9"
      interval: 5m
      candles: 576
  execution:
    feeRatePct: "0.05"
    slippage: {{baseBps: "1", impactPct: "0.2"}}
    latency: "500ms"
    failureRatePct: "0.5"
    seed: 7
"#
        ));
    }
    m
}

/// The id of the running `bot-runtime` container of `pod` in the node's
/// containerd.
fn runtime_container(plane: &RealNodePlane, ns: &str, pod: &str) -> Option<String> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(&plane.containerd_socket)
        .args(["-n", "k8s.io", "containers", "ls", "-q"])
        .arg(format!(
            "labels.\"io.kubernetes.pod.name\"=={pod},labels.\"io.kubernetes.pod.namespace\"=={ns},labels.\"io.kubernetes.container.name\"==bot-runtime"
        ))
        .output()
        .ok()?;
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    // Only the container whose task runs (an exited one may still be listed).
    ids.into_iter().find(|id| {
        Command::new("ctr")
            .arg("--address")
            .arg(&plane.containerd_socket)
            .args(["-n", "k8s.io", "tasks", "ps", id])
            .output()
            .map(|o| o.status.success() && o.stdout.len() > 20)
            .unwrap_or(false)
    })
}

fn restart_count(plane: &RealNodePlane, ns: &str, pod: &str) -> i64 {
    json(plane, &["get", "pod", pod, "-n", ns, "-o", "json"])
        .and_then(|p| {
            p.pointer("/status/containerStatuses/0/restartCount")
                .and_then(Value::as_i64)
        })
        .unwrap_or(-1)
}

/// Every fill of a session's runtime, through its HTTP API (all pages),
/// from inside the node's network namespace with the session's token.
fn fills(plane: &RealNodePlane, ns: &str, session: &str) -> Vec<Value> {
    let child = format!("{session}-runtime");
    let token = plane.kubectl_ok(&[
        "get",
        "secret",
        &child,
        "-n",
        ns,
        "-o",
        r#"go-template={{index .data "api-token" | base64decode}}"#,
    ]);
    let token = token.trim();
    let ip = plane.kubectl_ok(&[
        "get",
        "service",
        &child,
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("http://{}:8080/v1/trades?limit=500", ip.trim());
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let out = plane
            .in_netns("curl")
            .args(["-sf", "--max-time", "10", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(&url)
            .output()
            .expect("running curl in the node's network namespace");
        assert!(
            out.status.success(),
            "GET {url} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let page: Value = serde_json::from_slice(&out.stdout).expect("a FillPage");
        all.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page.get("nextCursor").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_string()),
            None => return all,
        }
    }
}

/// Live sessions of one source chain: they share one feed.
const LIVE_SESSIONS: [&str; 3] = ["live-a", "live-b", "live-c"];

/// A CoinGecko-shaped upstream on the host's loopback: every request gets
/// BTC and ETH at a price that zig-zags with the wall clock (99–103 and
/// 49.5–51.5 USD, 1 % steps), with `last_updated_at` now; counts requests.
fn start_price_upstream(rt: &tokio::runtime::Runtime) -> (u16, Arc<AtomicU64>) {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind a loopback port for the fake CoinGecko");
    let port = listener.local_addr().expect("local address").port();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            const CYCLE: [u32; 8] = [100, 101, 102, 103, 102, 101, 100, 99];
            let now = chrono::Utc::now().timestamp();
            let p = CYCLE[now.rem_euclid(8) as usize];
            (
                [("content-type", "application/json")],
                format!(
                    r#"{{"bitcoin":{{"usd":{p},"last_updated_at":{now}}},"ethereum":{{"usd":{}.{},"last_updated_at":{now}}}}}"#,
                    p / 2,
                    if p.is_multiple_of(2) { "0" } else { "5" }
                ),
            )
        }
    });
    rt.spawn(async move { axum::serve(listener, app).await });
    (port, hits)
}

/// Three live sessions with the same source chain (a fake CoinGecko on the
/// host, reached from the pods through the node IP): the operator deploys
/// one `paperbot-feed-<hash>` for them on the real node, every runtime takes
/// its prices from it (`status.marketData.activeSource` is `shared_feed`),
/// the upstream sees about one request per poll interval for the three, and
/// the feed goes with the last session.
fn live_sessions_share_one_feed(plane: &RealNodePlane, op_ns: &str) {
    let net = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime for the fake upstream");
    let (port, hits) = start_price_upstream(&net);
    let upstream = plane.expose_host_port(port);
    let ns = plane.restricted_namespace("live");
    let mut m = String::from(
        "apiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {name: live-desk}\n\
         spec: {initialBalance: \"30000\"}\n---\n\
         apiVersion: paperbot.io/v1alpha1\nkind: StrategyConfig\nmetadata: {name: live-cross}\n\
         spec:\n  mode: Custom\n  signals:\n    smaCrossover: {fastPeriod: 1, slowPeriod: 2}\n  \
         risk:\n    fixedQuantity: \"1\"\n    confidenceThreshold: \"0\"\n",
    );
    for name in LIVE_SESSIONS {
        m.push_str(&format!(
            "---\napiVersion: paperbot.io/v1alpha1\nkind: BotSession\nmetadata: {{name: {name}}}\n\
             spec:\n  accountRef: {{name: live-desk}}\n  strategyRef: {{name: live-cross}}\n  \
             allocation: \"10000\"\n  symbols: [BTC-USD, ETH-USD]\n  marketData:\n    source: Live\n    \
             live:\n      interval: 2s\n      pollInterval: 1s\n      maxAge: 10s\n      warmUp: Record\n      \
             sources:\n      - {{name: gecko, kind: CoinGecko, requestsPerMinute: 300, \
             baseUrl: \"http://{upstream}/api/v3\"}}\n"
        ));
    }
    plane.kubectl_stdin_ok(&["apply", "-n", &ns, "-f", "-"], &m);
    let state = || {
        format!(
            "{}$ kubectl get deploy,svc,pods -n {ns} -o wide\n{}",
            cluster_state(plane, op_ns, &ns),
            plane.kubectl_ok(&["get", "deploy,svc,pods", "-n", &ns, "-o", "wide"])
        )
    };
    for name in LIVE_SESSIONS {
        wait_for(
            &format!("live session {name} trades on prices from the shared feed"),
            Duration::from_secs(180),
            || {
                let s = session(plane, &ns, name)?;
                let source = s.pointer("/status/marketData/activeSource")?.as_str()?;
                (phase(&s) == "Running" && source == "shared_feed" && trades(&s) > 0).then_some(())
            },
            state,
        );
    }
    let feeds = plane.kubectl_ok(&[
        "get",
        "deploy",
        "-n",
        &ns,
        "-l",
        "app.kubernetes.io/component=market-data-feed",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.readyReplicas}{\"\\n\"}{end}",
    ]);
    let feeds: Vec<&str> = feeds.lines().collect();
    assert_eq!(feeds.len(), 1, "one feed for one source chain: {feeds:?}");
    assert!(feeds[0].ends_with(" 1"), "the feed is ready: {feeds:?}");
    let feed_node = plane.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        &ns,
        "-l",
        "app.kubernetes.io/component=market-data-feed",
        "-o",
        "jsonpath={.items[0].spec.nodeName}",
    ]);
    assert_eq!(feed_node, plane.node, "the feed runs on the real node");
    // One poll a second for three sessions: about one upstream request a
    // second through the feed (three without it).
    let window = Duration::from_secs(10);
    let h0 = hits.load(Ordering::SeqCst);
    sleep(window);
    let requests = hits.load(Ordering::SeqCst) - h0;
    println!(
        "{} live sessions through {}: {requests} upstream requests in {window:?} (poll interval 1 s)\n$ kubectl get paperbot -n {ns}\n{}",
        LIVE_SESSIONS.len(),
        feeds[0],
        plane.kubectl_ok(&["get", "paperbot", "-n", &ns])
    );
    assert!(
        requests <= window.as_secs() + 2,
        "{requests} upstream requests in {window:?}: the sessions should share the feed's one request per poll\n{}",
        state()
    );
    let feed_name = feeds[0].split_whitespace().next().unwrap_or_default();
    let logs = plane.kubectl_ok(&["logs", "-n", &ns, &format!("deploy/{feed_name}")]);
    println!(
        "$ kubectl logs -n {ns} deploy/{feed_name}   (first 8 lines)\n{}",
        logs.lines().take(8).collect::<Vec<_>>().join("\n")
    );
    plane.kubectl_ok(&["delete", "botsessions", "--all", "-n", &ns, "--wait=true"]);
    wait_for(
        "the feed goes with its last session",
        Duration::from_secs(120),
        || {
            let left = plane.kubectl_ok(&[
                "get",
                "deploy,svc,configmap",
                "-n",
                &ns,
                "-l",
                "app.kubernetes.io/component=market-data-feed",
                "-o",
                "name",
            ]);
            left.trim().is_empty().then_some(())
        },
        state,
    );
}

#[test]
fn helm_install_runs_sessions_on_a_real_node_through_crashes_upgrade_and_uninstall() {
    let (operator_image, runtime_image) = build_images();
    let before = HostState::capture();
    let plane = RealNodePlane::start();
    println!("plane with a real node up in {:.1?}", plane.started_in);
    for image in [&operator_image, &runtime_image] {
        let began = Instant::now();
        plane.load_image(image);
        println!("loaded {} in {:.1?}", image.display(), began.elapsed());
    }
    let op_ns = plane.restricted_namespace("paperbot-system");
    let ns = plane.restricted_namespace("bots");
    let volumes = plane.state.join("ledger-volumes");
    // Two sessions of the test, the four of examples/simulated.yaml and
    // examples/fleet.yaml, and the three live ones.
    provision_ledger_volumes(&plane, &volumes, 7 + LIVE_SESSIONS.len());
    let values_file = plane.state.join("values.yaml");
    std::fs::write(&values_file, values()).expect("writing values.yaml");
    let chart = repo().join("charts/paperbot");
    let helm = |args: &[&str]| {
        let out = plane.helm(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "helm {} failed:\n{text}\n{}",
            args.join(" "),
            cluster_state(&plane, &op_ns, &ns)
        );
        text
    };

    // --- helm install: the operator runs in a pod under the chart's RBAC.
    let began = Instant::now();
    let installed = helm(&[
        "install",
        RELEASE,
        chart.to_str().expect("utf-8 path"),
        "-n",
        &op_ns,
        "-f",
        values_file.to_str().expect("utf-8 path"),
        "--wait",
        "--timeout",
        "180s",
    ]);
    println!(
        "$ helm install {RELEASE} charts/paperbot -n {op_ns} -f values.yaml --wait   ({:.1?})\n{installed}",
        began.elapsed()
    );
    println!(
        "$ kubectl get pods -n {op_ns} -o wide\n{}",
        plane.kubectl_ok(&["get", "pods", "-n", &op_ns, "-o", "wide"])
    );
    let operator_pod = plane.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        &op_ns,
        "-o",
        "jsonpath={.items[0].metadata.name} {.items[0].spec.nodeName} {.items[0].spec.serviceAccountName}",
    ]);
    let parts: Vec<&str> = operator_pod.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "operator pod: {operator_pod}");
    assert_eq!(parts[1], plane.node, "the operator runs on the real node");
    assert_eq!(
        parts[2], RELEASE,
        "the operator runs as the chart's ServiceAccount"
    );
    let operator_pod = parts[0].to_string();

    // --- kubectl apply: two identical sessions.
    plane.kubectl_stdin_ok(
        &["apply", "-n", &ns, "-f", "-"],
        &manifest(&[STEADY, INTERRUPTED]),
    );
    let state = || cluster_state(&plane, &op_ns, &ns);
    for name in [STEADY, INTERRUPTED] {
        wait_for(
            &format!("{name} is Running with trades in its status"),
            Duration::from_secs(120),
            || {
                let s = session(&plane, &ns, name)?;
                (phase(&s) == "Running" && trades(&s) > 0).then_some(())
            },
            state,
        );
    }
    let listing = plane.kubectl_ok(&["get", "paperbot", "-n", &ns]);
    println!("$ kubectl get paperbot -n {ns}\n{listing}");
    let live = session(&plane, &ns, STEADY).expect("steady");
    for field in ["equity", "cash", "realizedPnl"] {
        assert!(
            live.pointer(&format!("/status/{field}")).is_some(),
            "status.{field} is synced from the runtime: {live}"
        );
    }
    // --- the examples a user applies first run as they are.
    let examples_ns = plane.restricted_namespace("examples");
    for example in ["simulated.yaml", "fleet.yaml"] {
        let path = repo().join("examples").join(example);
        plane.kubectl_ok(&[
            "apply",
            "-n",
            &examples_ns,
            "-f",
            path.to_str().expect("utf-8 path"),
        ]);
    }
    for (name, want) in [
        ("simulated", "Running"),
        ("trend-sim-a", "Running"),
        ("trend-sim-b", "Running"),
        ("reversion-paused", "Paused"),
    ] {
        wait_for(
            &format!("example session {name} is {want} with its figures in status"),
            Duration::from_secs(180),
            || {
                let s = session(&plane, &examples_ns, name)?;
                (phase(&s) == want && s.pointer("/status/equity").is_some()).then_some(())
            },
            || cluster_state(&plane, &op_ns, &examples_ns),
        );
    }
    println!(
        "$ kubectl apply -f examples/simulated.yaml -f examples/fleet.yaml && kubectl get paperbot -n {examples_ns}\n{}",
        plane.kubectl_ok(&["get", "paperbot", "-n", &examples_ns])
    );

    let pod_of = |name: &str| format!("{name}-runtime-0");
    let node_of = plane.kubectl_ok(&[
        "get",
        "pod",
        &pod_of(INTERRUPTED),
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.nodeName}",
    ]);
    assert_eq!(node_of, plane.node, "runtimes run on the real node");
    let logs = plane.kubectl_ok(&["logs", "-n", &ns, &pod_of(INTERRUPTED)]);
    println!(
        "$ kubectl logs -n {ns} {}   (first 15 lines)\n{}",
        pod_of(INTERRUPTED),
        logs.lines().take(15).collect::<Vec<_>>().join("\n")
    );
    assert!(
        logs.contains(INTERRUPTED),
        "the runtime's log names its session:\n{logs}"
    );

    // --- kill -9 mid-session (what the OOM killer does): the kubelet restarts
    // the container, which resumes from its ledger.
    let before_kill = trades(&session(&plane, &ns, INTERRUPTED).expect("interrupted"));
    let id = wait_for(
        "the interrupted runtime's container is found in containerd",
        Duration::from_secs(30),
        || runtime_container(&plane, &ns, &pod_of(INTERRUPTED)),
        state,
    );
    let killed = Command::new("ctr")
        .arg("--address")
        .arg(&plane.containerd_socket)
        .args(["-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", &id])
        .output()
        .expect("ctr tasks kill");
    assert!(
        killed.status.success(),
        "ctr tasks kill: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
    println!("SIGKILL to the runtime of {INTERRUPTED} (container {id}) after {before_kill} trades");
    wait_for(
        "the killed runtime is restarted in place and trades on",
        Duration::from_secs(120),
        || {
            let s = session(&plane, &ns, INTERRUPTED)?;
            (restart_count(&plane, &ns, &pod_of(INTERRUPTED)) >= 1
                && (trades(&s) > before_kill || phase(&s) == "Completed"))
                .then_some(())
        },
        state,
    );

    let restarts_in_place = restart_count(&plane, &ns, &pod_of(INTERRUPTED));

    // --- the pod deleted mid-session (SIGTERM, as on a drain): its
    // StatefulSet makes a new pod, which resumes from the same volume.
    let uid_before = plane.kubectl_ok(&[
        "get",
        "pod",
        &pod_of(INTERRUPTED),
        "-n",
        &ns,
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let s = session(&plane, &ns, INTERRUPTED).expect("interrupted");
    let deleted_at_phase = phase(&s).to_string();
    println!(
        "$ kubectl delete pod -n {ns} {}   (phase {deleted_at_phase}, {} trades)\n{}",
        pod_of(INTERRUPTED),
        trades(&s),
        plane.kubectl_ok(&["delete", "pod", "-n", &ns, &pod_of(INTERRUPTED)])
    );
    wait_for(
        "a new pod of the interrupted session runs",
        Duration::from_secs(120),
        || {
            let p = json(
                &plane,
                &["get", "pod", &pod_of(INTERRUPTED), "-n", &ns, "-o", "json"],
            )?;
            let uid = p.pointer("/metadata/uid")?.as_str()?;
            let ready = p.pointer("/status/phase")?.as_str()? == "Running";
            (uid != uid_before && ready).then_some(())
        },
        state,
    );
    assert_eq!(
        deleted_at_phase, "Running",
        "the pod was deleted mid-session (make the session longer if it had already ended)"
    );

    // --- both sessions end; the interrupted one lost nothing.
    for name in [STEADY, INTERRUPTED] {
        wait_for(
            &format!("{name} Completed"),
            Duration::from_secs(300),
            || {
                let s = session(&plane, &ns, name)?;
                (phase(&s) == "Completed").then_some(())
            },
            state,
        );
    }
    let listing = plane.kubectl_ok(&["get", "paperbot", "-n", &ns]);
    println!("$ kubectl get paperbot -n {ns}\n{listing}");
    let steady = session(&plane, &ns, STEADY).expect("steady");
    let interrupted = session(&plane, &ns, INTERRUPTED).expect("interrupted");
    for field in [
        "equity",
        "cash",
        "realizedPnl",
        "unrealizedPnl",
        "trades",
        "roundTrips",
        "winRatePct",
        "maxDrawdownPct",
    ] {
        let pointer = format!("/status/{field}");
        assert_eq!(
            steady.pointer(&pointer),
            interrupted.pointer(&pointer),
            "status.{field} of the interrupted session differs from the uninterrupted one"
        );
    }
    let a = fills(&plane, &ns, STEADY);
    let b = fills(&plane, &ns, INTERRUPTED);
    assert!(a.len() > 10, "the scenario trades: {} fills", a.len());
    assert_eq!(a.len(), b.len(), "number of fills");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "fill {i} of the interrupted session differs");
    }
    println!(
        "ledgers equal: {} fills; the interrupted runtime was restarted {restarts_in_place} time(s) in place after SIGKILL and once in a new pod after the deletion",
        a.len()
    );

    // --- live sessions through the shared feed the operator deploys.
    live_sessions_share_one_feed(&plane, &op_ns);

    // --- helm upgrade keeps the CRDs and the sessions.
    let upgraded = helm(&[
        "upgrade",
        RELEASE,
        chart.to_str().expect("utf-8 path"),
        "-n",
        &op_ns,
        "-f",
        values_file.to_str().expect("utf-8 path"),
        "--set",
        "statusSyncInterval=3s",
        "--wait",
        "--timeout",
        "180s",
    ]);
    println!(
        "$ helm upgrade {RELEASE} charts/paperbot -n {op_ns} --set statusSyncInterval=3s --wait\n{upgraded}"
    );
    let new_pod = wait_for(
        "the upgraded operator pod replaces the old one",
        Duration::from_secs(120),
        || {
            let names = plane.kubectl_ok(&[
                "get",
                "pods",
                "-n",
                &op_ns,
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ]);
            let names: Vec<&str> = names.split_whitespace().collect();
            (names.len() == 1 && names[0] != operator_pod).then(|| names[0].to_string())
        },
        state,
    );
    println!("operator pod {operator_pod} → {new_pod}");
    for name in [STEADY, INTERRUPTED] {
        let s = session(&plane, &ns, name).expect("the session survives the upgrade");
        assert_eq!(phase(&s), "Completed", "{name} after the upgrade");
        assert_eq!(
            s.pointer("/status/equity"),
            steady.pointer("/status/equity"),
            "{name}'s figures after the upgrade"
        );
    }
    for crd in [
        "botsessions.paperbot.io",
        "paperaccounts.paperbot.io",
        "strategyconfigs.paperbot.io",
    ] {
        plane.kubectl_ok(&["get", "crd", crd]);
    }

    // --- helm uninstall removes the operator, keeps the CRDs and sessions.
    let uninstalled = helm(&["uninstall", RELEASE, "-n", &op_ns, "--wait"]);
    println!("$ helm uninstall {RELEASE} -n {op_ns}\n{uninstalled}");
    let left = plane.kubectl_ok(&["get", "deploy,sa", "-n", &op_ns, "-o", "name"]);
    assert!(
        !left.contains("deployment.apps/paperbot"),
        "the operator's Deployment is gone: {left}"
    );
    let kept = plane.kubectl_ok(&["get", "crd", "-o", "name"]);
    assert_eq!(
        kept.lines().filter(|l| l.contains("paperbot.io")).count(),
        3,
        "the CRDs stay (resource-policy keep): {kept}"
    );
    let sessions = plane.kubectl_ok(&["get", "botsessions", "-n", &ns, "-o", "name"]);
    assert_eq!(sessions.lines().count(), 2, "the sessions stay: {sessions}");
    println!(
        "$ kubectl get paperbot -n {ns}   (after helm uninstall)\n{}",
        plane.kubectl_ok(&["get", "paperbot", "-n", &ns])
    );

    let report = plane.stop();
    let _ = std::fs::remove_dir_all(&volumes);
    assert!(
        report.trim().is_empty(),
        "stop.sh reported leftovers: {report}"
    );
    let leftovers = plane.leftovers(&before);
    assert!(leftovers.is_empty(), "left on the machine: {leftovers:?}");
}
