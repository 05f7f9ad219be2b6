//! The loop closed, end to end: the operator (in-process, the binary's
//! reconcilers, under the chart's ServiceAccount and RBAC) against the real
//! control plane, and a real `bot-runtime serve` process per session, started
//! by the test from exactly what the operator rendered (the session's
//! ConfigMap and API token Secret). kwok pods run no process, so each session
//! carries the endpoint-override annotation pointing at its runtime on
//! 127.0.0.1 (the operator runs with `--allow-runtime-endpoint-override`).
//!
//! What `kubectl` shows is printed into the test log: equity and P&L in
//! `kubectl get paperbot`, a breaker trip (`CircuitBreakerOpen=True`, a
//! `CircuitBreakerTripped` Event), a declarative reset (the breaker closes,
//! trading goes on), autopilot adjustments (`AutopilotAdjusted` Events, the
//! StrategyConfig's effective parameters), pause and resume without a new
//! process or pod, an account kill switch halting two sessions and its
//! reset, and a session that completes.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use paperbot_crds::{SecretKeyRef, runtime_api::ENDPOINT_OVERRIDE_ANNOTATION};
use paperbot_e2e::{ControlPlane, control_plane, repo};
use paperbot_operator::{builders::child_name, ledger::LedgerSettings, sync::SyncSettings};
use serde_json::Value;

use crate::operator::{Operator, base_context};

const USER: &str = "e2e-sync";

/// The operator in-process under the chart's ServiceAccount and RBAC,
/// polling runtimes every second at their endpoint-override annotations.
async fn start_operator(cp: &ControlPlane, user: &str, ns: &str) -> Operator {
    let client = cp.operator_identity(user).client().await;
    // The runtimes run outside the plane on their own SQLite files; pods
    // (kwok: no process) point at a database Secret so that no ledger volume
    // has to bind.
    let ledger = LedgerSettings {
        database_secret: Some(SecretKeyRef {
            name: "ledger-db".into(),
            key: "url".into(),
        }),
        ..Default::default()
    };
    let ctx = base_context(client, user, ledger, Duration::from_secs(1)).with_sync(SyncSettings {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        concurrency: 8,
        not_reporting_after: 3,
        allow_endpoint_override: true,
        endpoint_template: None,
    });
    Operator::run(Arc::new(ctx), ns).await
}

/// The bot-runtime binary of this workspace (built once by cargo).
fn runtime_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(repo())
            .args(["build", "-q", "-p", "bot-runtime", "--bin", "bot-runtime"])
            .output()
            .expect("running cargo build -p bot-runtime");
        assert!(
            out.status.success(),
            "cargo build -p bot-runtime failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo().join("target"));
        target.join("debug").join("bot-runtime")
    })
    .clone()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A real `bot-runtime serve` for one session.
pub(crate) struct Runtime {
    child: Child,
    /// Where its API (and `/metrics`) listens (127.0.0.1).
    pub(crate) port: u16,
    dir: tempfile::TempDir,
}

impl Runtime {
    /// Start the runtime of `session` from what the operator rendered: the
    /// ConfigMap's `session.yaml` and the Secret's `api-token`.
    pub(crate) fn start(cp: &ControlPlane, ns: &str, session: &str) -> Runtime {
        let child = child_name(session);
        let config = wait_for(&format!("ConfigMap {child}"), 60, || {
            let out = cp.kubectl(&[
                "get",
                "configmap",
                &child,
                "-n",
                ns,
                "-o",
                "jsonpath={.data.session\\.yaml}",
            ]);
            (out.status.success() && !out.stdout.is_empty())
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        });
        let token = wait_for(&format!("Secret {child}"), 60, || {
            let out = cp.kubectl(&[
                "get",
                "secret",
                &child,
                "-n",
                ns,
                "-o",
                "jsonpath={.data.api-token}",
            ]);
            (out.status.success() && !out.stdout.is_empty()).then(|| {
                let b64 = String::from_utf8_lossy(&out.stdout).into_owned();
                let out = Command::new("base64")
                    .arg("-d")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .and_then(|mut c| {
                        use std::io::Write;
                        c.stdin.take().unwrap().write_all(b64.as_bytes())?;
                        c.wait_with_output()
                    })
                    .expect("base64 -d");
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
        });
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("session.yaml"), &config).unwrap();
        std::fs::write(dir.path().join("api-token"), &token).unwrap();
        let log = std::fs::File::create(dir.path().join("runtime.log")).unwrap();
        // Port 0: the runtime binds a free port and logs it (a port picked
        // here and released could be taken by another process first).
        let mut child = Command::new(runtime_binary())
            .current_dir(dir.path())
            .args(["serve", "-f", "session.yaml", "--listen", "127.0.0.1:0"])
            .args([
                "--metrics-listen",
                "127.0.0.1:0",
                "--token-file",
                "api-token",
                "--adopt-manifest-strategy",
                "--ledger",
            ])
            .arg(dir.path().join("ledger.db"))
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting bot-runtime serve");
        let port = paperbot_testkit::wait_for_logged_addr(
            &mut child,
            &dir.path().join("runtime.log"),
            "API listening",
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{ns}/{session}: bot-runtime serve {e}"))
        .port();
        println!("{ns}/{session}: bot-runtime serve on 127.0.0.1:{port}");
        let rt = Runtime { child, port, dir };
        cp.kubectl_ok(&[
            "annotate",
            "botsession",
            session,
            "-n",
            ns,
            "--overwrite",
            &format!("{ENDPOINT_OVERRIDE_ANNOTATION}=http://127.0.0.1:{port}"),
        ]);
        rt
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("runtime.log")).unwrap_or_default()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` every 250 ms until it gives a value, or fail after `secs`.
pub(crate) fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub(crate) fn get_json(cp: &ControlPlane, kind: &str, ns: &str, name: &str) -> Value {
    serde_json::from_str(&cp.kubectl_ok(&["get", kind, name, "-n", ns, "-o", "json"]))
        .expect("kubectl JSON")
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_is(obj: &Value, type_: &str, status: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c["status"] == status)
}

/// Events of `name` with `reason`.
fn events(cp: &ControlPlane, ns: &str, name: &str, reason: &str) -> Vec<Value> {
    let list: Value = serde_json::from_str(&cp.kubectl_ok(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        &format!("involvedObject.name={name},reason={reason}"),
        "-o",
        "json",
    ]))
    .expect("events JSON");
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Wait until `name` has at least one Event with `reason` (an Event is
/// published right after the status write that announces it); all of them.
fn wait_events(cp: &ControlPlane, ns: &str, name: &str, reason: &str) -> Vec<Value> {
    wait_for(&format!("a {reason} Event of {name}"), 30, || {
        let e = events(cp, ns, name, reason);
        (!e.is_empty()).then_some(e)
    })
}

fn show(cp: &ControlPlane, args: &[&str]) -> String {
    let out = cp.kubectl_ok(args);
    println!("$ kubectl {}\n{out}", args.join(" "));
    out
}

/// The account, strategies and sessions of the test. Replay paths are
/// absolute (the runtimes run from temporary directories).
fn manifests() -> String {
    let data = repo().join("examples/data");
    let btc = data.join("BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv");
    let ltc = data.join("LTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv");
    let strategy = |name: &str, breakers: &str| {
        format!(
            r#"apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {{name: {name}}}
spec:
  mode: Moderate
  intelLevel: 6
  signals:
    smaCrossover: {{fastPeriod: 20, slowPeriod: 60, weight: "2"}}
    momentum: {{period: 15, thresholdPct: "0.3"}}
    rsi: {{period: 14, oversold: "30", overbought: "70"}}
  risk: {{maxPositionSizePct: "10", stopLossPct: "1.5", takeProfitPct: "3", trailingStopPct: "2", maxHoldTime: "12h", confidenceThreshold: "55", maxConcurrentPositions: 2}}
  circuitBreakers: {breakers}
  autopilot:
    enabled: true
    performanceWindow: 8
    cooldown: "2h"
    maxDailyAdjustments: 4
    bounds:
      maxPositionSizePct: {{min: "5", max: "30"}}
      confidenceThreshold: {{min: "30", max: "80"}}
      stopLossPct: {{min: "0.5", max: "3"}}
      takeProfitPct: {{min: "1.5", max: "6"}}
"#
        )
    };
    let session = |name: &str, account: &str, strat: &str, speed: &str| {
        format!(
            r#"apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {{name: {name}}}
spec:
  accountRef: {{name: {account}}}
  strategyRef: {{name: {strat}}}
  allocation: "40000"
  symbols: [BTC-USD, LTC-USD]
  marketData:
    source: Replay
    speed: "{speed}"
    replay:
      files:
        - {{symbol: BTC-USD, path: "{}"}}
        - {{symbol: LTC-USD, path: "{}"}}
  execution: {{feeRatePct: "0.1", slippage: {{baseBps: "2"}}, seed: 7}}
"#,
            btc.display(),
            ltc.display()
        )
    };
    [
        "apiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {name: solo}\nspec: {initialBalance: \"200000\"}\n".to_string(),
        "apiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {name: tight}\nspec: {initialBalance: \"100000\", limits: {maxDrawdownPct: \"0.05\"}}\n".to_string(),
        strategy("trend", r#"{dailyLossPct: "3", maxDrawdownPct: "8", maxConsecutiveLosses: 6, cooldown: "30m"}"#),
        // Trips at the first losing round trip and stays open until reset.
        strategy("touchy", r#"{maxConsecutiveLosses: 1, cooldown: "720h"}"#),
        session("done", "solo", "trend", "max"),
        session("tripper", "solo", "touchy", "1500"),
        session("halt-a", "tight", "trend", "1500"),
        session("halt-b", "tight", "trend", "1500"),
    ]
    .join("---\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtimes_report_into_status_conditions_and_events() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-sync");
    cp.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "-n",
        &ns,
        "ledger-db",
        "--from-literal=url=postgres://paperbot@ledger.invalid/paperbot",
    ]);
    let op = start_operator(cp, USER, &ns).await;
    cp.kubectl_stdin_ok(&["apply", "-n", &ns, "-f", "-"], &manifests());
    let runtimes: Vec<(String, Runtime)> = ["done", "tripper", "halt-a", "halt-b"]
        .iter()
        .map(|s| (s.to_string(), Runtime::start(cp, &ns, s)))
        .collect();
    let rt = |name: &str| &runtimes.iter().find(|(n, _)| n == name).unwrap().1;

    // 1. A replay as fast as possible completes: final figures in status,
    //    one SessionCompleted Event, autopilot adjustments as Events and in
    //    the StrategyConfig's status.
    let done = wait_for("done Completed", 120, || {
        let s = get_json(cp, "botsession", &ns, "done");
        (s["status"]["phase"] == "Completed").then_some(s)
    });
    assert!(done["status"]["equity"].is_string(), "{done}");
    assert!(done["status"]["trades"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(wait_events(cp, &ns, "done", "SessionCompleted").len(), 1);
    let adjusted = wait_events(cp, &ns, "done", "AutopilotAdjusted");
    assert!(
        !adjusted.is_empty(),
        "no AutopilotAdjusted Event:\n{}",
        rt("done").log()
    );
    println!("AutopilotAdjusted: {}", adjusted[0]["message"]);
    assert!(!wait_events(cp, &ns, "done", "CircuitBreakerTripped").is_empty());
    let strat = wait_for("trend's effective parameters", 30, || {
        let st = get_json(cp, "strategyconfig", &ns, "trend");
        st["status"]["effectiveParameters"]["done"]
            .is_object()
            .then_some(st)
    });
    println!("trend status: {}", strat["status"]);

    // 2. A breaker trips and stays open: CircuitBreakerOpen=True, one Event.
    let tripped = wait_for("tripper's breaker open", 180, || {
        let s = get_json(cp, "botsession", &ns, "tripper");
        condition_is(&s, "CircuitBreakerOpen", "True").then_some(s)
    });
    println!("tripper: breaker {}", tripped["status"]["breaker"]);
    show(cp, &["get", "pods", "-n", &ns, "-o", "wide"]);
    show(cp, &["describe", "botsession", "tripper", "-n", &ns]);
    assert_eq!(
        wait_events(cp, &ns, "tripper", "CircuitBreakerTripped").len(),
        1
    );
    show(cp, &["get", "paperbot", "-n", &ns]);
    // A declarative reset closes it once and trading goes on.
    let trades_before = tripped["status"]["trades"].as_u64().unwrap();
    cp.kubectl_ok(&[
        "patch",
        "botsession",
        "tripper",
        "-n",
        &ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"resetRequest":"reset-1"}}"#,
    ]);
    let reset = wait_for("tripper reset acknowledged", 60, || {
        let s = get_json(cp, "botsession", &ns, "tripper");
        (s["status"]["observedResetRequest"] == "reset-1").then_some(s)
    });
    println!(
        "after reset: {}",
        condition(&reset, "CircuitBreakerOpen").unwrap()
    );
    assert!(!wait_events(cp, &ns, "tripper", "CircuitBreakerReset").is_empty());
    wait_for("tripper trades again", 180, || {
        let s = get_json(cp, "botsession", &ns, "tripper");
        (s["status"]["trades"].as_u64().unwrap_or(0) > trades_before).then_some(())
    });

    // 3. Pause and resume: no new process, no new pod.
    let pod_uid = |cp: &ControlPlane| {
        cp.kubectl_ok(&[
            "get",
            "pod",
            &format!("{}-0", child_name("tripper")),
            "-n",
            &ns,
            "-o",
            "jsonpath={.metadata.uid}",
        ])
    };
    let uid = pod_uid(cp);
    cp.kubectl_ok(&[
        "patch",
        "botsession",
        "tripper",
        "-n",
        &ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"desiredState":"Paused"}}"#,
    ]);
    wait_for("tripper Paused and Ready", 60, || {
        let s = get_json(cp, "botsession", &ns, "tripper");
        (s["status"]["phase"] == "Paused" && condition_is(&s, "Ready", "True")).then_some(())
    });
    cp.kubectl_ok(&[
        "patch",
        "botsession",
        "tripper",
        "-n",
        &ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"desiredState":"Running"}}"#,
    ]);
    wait_for("tripper Running again", 60, || {
        let s = get_json(cp, "botsession", &ns, "tripper");
        (s["status"]["phase"] == "Running").then_some(())
    });
    assert_eq!(pod_uid(cp), uid, "pause/resume must not replace the pod");
    assert!(
        Path::new(&format!("/proc/{}", rt("tripper").pid())).exists(),
        "pause/resume must not end the runtime process"
    );

    // A StrategyConfig edit is hot-reloaded through the runtime's /v1/config:
    // the runtime trades generation 2, on the same pod and process.
    cp.kubectl_ok(&[
        "patch",
        "strategyconfig",
        "touchy",
        "-n",
        &ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"risk":{"stopLossPct":"1.2"}}}"#,
    ]);
    let reloaded = wait_for("tripper trades StrategyConfig generation 2", 60, || {
        let s = get_json(cp, "botsession", &ns, "tripper");
        (s["status"]["observedStrategyGeneration"] == 2).then_some(s)
    });
    println!(
        "tripper after the reload: stopLossPct {}",
        reloaded["status"]["autopilot"]["effectiveParameters"]["stopLossPct"]
    );
    assert_eq!(pod_uid(cp), uid, "a strategy edit must not replace the pod");
    assert!(
        Path::new(&format!("/proc/{}", rt("tripper").pid())).exists(),
        "a strategy edit must not end the runtime process"
    );

    // 4. The account kill switch halts both sessions of `tight`.
    let acct = wait_for("tight's kill switch", 180, || {
        let a = get_json(cp, "paperaccount", &ns, "tight");
        (a["status"]["killSwitch"]["engaged"] == true).then_some(a)
    });
    println!("tight: {}", acct["status"]["killSwitch"]);
    for s in ["halt-a", "halt-b"] {
        wait_for(&format!("{s} Halted"), 60, || {
            let o = get_json(cp, "botsession", &ns, s);
            (o["status"]["phase"] == "Halted").then_some(())
        });
        assert_eq!(wait_events(cp, &ns, s, "SessionHalted").len(), 1);
    }
    show(cp, &["get", "paperbot", "-n", &ns]);
    show(cp, &["describe", "botsession", "halt-a", "-n", &ns]);
    // Released by a declarative reset (with a looser limit so that it does
    // not trip again at once).
    cp.kubectl_ok(&[
        "patch",
        "paperaccount",
        "tight",
        "-n",
        &ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"resetRequest":"r1","limits":{"maxDrawdownPct":"50"}}}"#,
    ]);
    for s in ["halt-a", "halt-b"] {
        wait_for(&format!("{s} Running after the reset"), 60, || {
            let o = get_json(cp, "botsession", &ns, s);
            (o["status"]["phase"] == "Running").then_some(())
        });
    }
    let _ = rt;
    op.stop().await;
}
