//! Reconcile behaviour against the mocked API server ([`crate::fixtures`]):
//! the requests each scenario makes, asserted by method, path and body. Each
//! reconcile reads stores filled from the fake's objects, as the watches
//! would have filled them.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use http::Method;
use kube::runtime::{
    events::{Recorder, Reporter},
    reflector::ObjectRef,
};
use paperbot_crds::{
    BotSession, PaperAccount, StrategyConfig,
    runtime_api::{LedgerHealthStatus, RuntimePhase, RuntimeStatus},
};
use serde_json::{Value, json};

use super::{Context, account, botsession, strategy};
use crate::{
    builders::{RuntimeSettings, child_name},
    fixtures::{FakeApi, Recorded},
    metrics::Metrics,
};

const V: &str = "paperbot.io/v1alpha1";
const NS: &str = "ns";

fn context(fake: &FakeApi) -> Arc<Context> {
    let client = fake.client();
    Arc::new(Context::new(
        client.clone(),
        Recorder::new(
            client,
            Reporter {
                controller: "paperbot-operator".into(),
                instance: None,
            },
        ),
        Arc::new(Metrics::new()),
        RuntimeSettings {
            image: "bot-runtime:test".into(),
            ..Default::default()
        },
        Duration::from_secs(15),
    ))
}

/// `ctx` reading what the fake holds now.
fn synced(fake: &FakeApi, ctx: &Arc<Context>) -> Arc<Context> {
    Arc::new(ctx.with_stores(fake.stores()))
}

fn seed(fake: &FakeApi, balance: &str) {
    fake.put(json!({"apiVersion": V, "kind": "PaperAccount",
        "metadata": {"name": "acct", "namespace": NS},
        "spec": {"initialBalance": balance}}));
    fake.put(json!({"apiVersion": V, "kind": "StrategyConfig",
        "metadata": {"name": "strat", "namespace": NS},
        "spec": {"signals": {"smaCrossover": {"fastPeriod": 10, "slowPeriod": 30}}, "risk": {"maxPositionSizePct": "10"}}}));
}

fn add_session(fake: &FakeApi, name: &str, allocation: &str, created: &str) {
    fake.put(json!({"apiVersion": V, "kind": "BotSession",
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": created},
        "spec": {"accountRef": {"name": "acct"}, "strategyRef": {"name": "strat"},
                 "allocation": allocation, "symbols": ["BTC-USD"],
                 "marketData": {"source": "Simulated", "simulated": {"seed": 1, "candles": 100}}}}));
}

async fn reconcile(fake: &FakeApi, ctx: &Arc<Context>, name: &str) -> Vec<Recorded> {
    let obj: BotSession =
        serde_json::from_value(fake.get(V, "BotSession", NS, name).expect("session exists"))
            .unwrap();
    botsession::reconcile(Arc::new(obj), synced(fake, ctx))
        .await
        .expect("reconcile succeeds");
    fake.take_requests()
}

/// Writes other than Events, as `METHOD path`.
fn writes(reqs: &[Recorded]) -> Vec<String> {
    reqs.iter()
        .filter(|r| r.is_write() && !r.path.contains("/events"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn events(reqs: &[Recorded]) -> Vec<(String, String)> {
    reqs.iter()
        .filter(|r| r.method == Method::POST && r.path.ends_with("/events"))
        .map(|r| {
            (
                r.body["reason"].as_str().unwrap_or_default().to_string(),
                r.body["note"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn applied<'a>(reqs: &'a [Recorded], plural: &str) -> Option<&'a Recorded> {
    reqs.iter().find(|r| {
        r.method == Method::PATCH
            && r.path.contains(&format!("/{plural}/"))
            && !r.path.ends_with("/status")
    })
}

fn status(fake: &FakeApi, name: &str) -> Value {
    fake.get(V, "BotSession", NS, name).unwrap()["status"].clone()
}

fn condition(status: &Value, type_: &str) -> (String, String) {
    let c = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"));
    (
        c["status"].as_str().unwrap().to_string(),
        c["reason"].as_str().unwrap().to_string(),
    )
}

/// The pod a StatefulSet controller, scheduler and kubelet would produce.
fn run_pod(fake: &FakeApi, session: &str, ready: bool) {
    let sts = child_name(session);
    fake.edit("apps/v1", "StatefulSet", NS, &sts, |o| {
        let generation = o["metadata"]["generation"].clone();
        let replicas = o["spec"]["replicas"].as_i64().unwrap_or(1);
        o["status"] = json!({"observedGeneration": generation, "replicas": replicas,
            "readyReplicas": if ready { replicas } else { 0 }, "currentRevision": "r1", "updateRevision": "r1"});
    });
    if ready {
        fake.put(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{sts}-0"), "namespace": NS},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}));
    } else {
        fake.remove("v1", "Pod", NS, &format!("{sts}-0"));
    }
}

/// A runtime status report: `phase`, ready, trading the strategy's current
/// generation (so nothing is forwarded), with `equity`.
fn runtime_status(phase: RuntimePhase, equity: &str) -> RuntimeStatus {
    RuntimeStatus {
        session: "bot".into(),
        session_id: "bot".into(),
        phase,
        ready: true,
        initial_cash: "5000".parse().unwrap(),
        cash: "5000".parse().unwrap(),
        equity: equity.parse().unwrap(),
        trades: 2,
        ledger: LedgerHealthStatus {
            reachable: true,
            reason: None,
        },
        strategy_revision: Some("1".into()),
        ..Default::default()
    }
}

/// What a poll of `session`'s runtime would record: Running, ready.
fn runtime_reports(ctx: &Arc<Context>, session: &str, equity: &str) {
    ctx.poller.reports.record(
        &ObjectRef::new(session).within(NS),
        runtime_status(RuntimePhase::Running, equity),
    );
}

async fn created_session(fake: &FakeApi, ctx: &Arc<Context>) {
    seed(fake, "10000");
    add_session(fake, "bot", "5000", "2026-01-01T00:00:01Z");
    reconcile(fake, ctx, "bot").await; // finalizer, children and status
}

#[tokio::test]
async fn one_reconcile_adds_the_finalizer_applies_children_and_status() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    seed(&fake, "10000");
    add_session(&fake, "bot", "5000", "2026-01-01T00:00:01Z");

    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert!(
        reqs.iter().all(|r| r.is_write()),
        "everything is read from the stores: {:?}",
        reqs.iter()
            .filter(|r| !r.is_write())
            .map(|r| &r.path)
            .collect::<Vec<_>>()
    );
    let fin = &reqs.iter().find(|r| r.is_write()).unwrap();
    assert_eq!(fin.content_type, "application/json-patch+json");
    assert!(fin.body.to_string().contains(botsession::FINALIZER));
    let child = child_name("bot");
    assert_eq!(
        writes(&reqs),
        [
            format!("PATCH /apis/{V}/namespaces/{NS}/botsessions/bot"),
            format!("PATCH /api/v1/namespaces/{NS}/configmaps/{child}"),
            format!("PATCH /api/v1/namespaces/{NS}/secrets/{child}"),
            format!("PATCH /api/v1/namespaces/{NS}/services/{child}"),
            format!("PATCH /apis/apps/v1/namespaces/{NS}/statefulsets/{child}"),
            format!("PATCH /apis/{V}/namespaces/{NS}/botsessions/bot/status"),
        ]
    );
    for r in reqs
        .iter()
        .filter(|r| r.is_write() && !r.path.contains("/events"))
        .skip(1)
    {
        assert_eq!(r.content_type, "application/apply-patch+yaml", "{}", r.path);
        assert!(
            r.query.contains("fieldManager=paperbot-operator"),
            "{}",
            r.query
        );
    }
    let sts = &applied(&reqs, "statefulsets").unwrap().body;
    assert_eq!(sts["spec"]["replicas"], 1);
    let owner = &sts["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            owner["kind"].as_str(),
            owner["name"].as_str(),
            owner["controller"].as_bool()
        ),
        (Some("BotSession"), Some("bot"), Some(true))
    );
    assert!(
        sts["spec"]["template"]["metadata"]["annotations"]["paperbot.io/config-hash"].is_string()
    );
    let st = status(&fake, "bot");
    assert!(
        matches!(st["phase"].as_str(), Some("Starting" | "Pending")),
        "{st}"
    );
    assert_eq!(condition(&st, "Ready").0, "False");
    assert_eq!(st["observedGeneration"], 1);
    assert!(
        events(&reqs)
            .iter()
            .any(|(r, n)| r.starts_with("Phase") && n.starts_with("None →")),
        "{:?}",
        events(&reqs)
    );
}

#[tokio::test]
async fn ready_pod_makes_the_session_ready_and_an_unchanged_reconcile_writes_nothing() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    created_session(&fake, &ctx).await;
    run_pod(&fake, "bot", true);
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert_eq!(
        condition(&status(&fake, "bot"), "Ready"),
        ("False".into(), "WaitingForRuntime".into()),
        "the pod is ready, the runtime has not reported"
    );
    assert_eq!(
        writes(&reqs),
        [format!(
            "PATCH /apis/{V}/namespaces/{NS}/botsessions/bot/status"
        )]
    );
    assert!(
        events(&reqs)
            .iter()
            .any(|(r, n)| r == "PhaseRunning" && n.ends_with("→ Running")),
        "{:?}",
        events(&reqs)
    );
    runtime_reports(&ctx, "bot", "5000");
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert_eq!(
        writes(&reqs),
        [format!(
            "PATCH /apis/{V}/namespaces/{NS}/botsessions/bot/status"
        )]
    );
    let st = status(&fake, "bot");
    assert_eq!(st["phase"], "Running");
    assert_eq!(condition(&st, "Ready"), ("True".into(), "Running".into()));
    assert_eq!(st["pod"], format!("{}-0", child_name("bot")));
    assert!(
        events(&reqs).is_empty(),
        "no phase change, no Event: {:?}",
        events(&reqs)
    );

    for _ in 0..3 {
        let reqs = reconcile(&fake, &ctx, "bot").await;
        assert!(
            reqs.is_empty(),
            "a reconcile of an unchanged session makes no request: {:?}",
            reqs.iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect::<Vec<_>>()
        );
    }
}

/// A runtime on a local port: `GET /v1/status` and the control requests,
/// which change its phase as `bot-runtime serve` does; records the paths of
/// the control requests.
#[derive(Clone)]
struct LocalRuntime {
    phase: Arc<Mutex<RuntimePhase>>,
    controls: Arc<Mutex<Vec<String>>>,
}

impl LocalRuntime {
    async fn start() -> (Self, String) {
        use axum::{
            Json, Router,
            extract::State,
            routing::{get, post},
        };
        use paperbot_crds::runtime_api::{
            ControlResponse, PAUSE_PATH, RESUME_PATH, STATUS_PATH, STOP_PATH,
        };
        let rt = Self {
            phase: Arc::new(Mutex::new(RuntimePhase::Running)),
            controls: Arc::default(),
        };
        fn control(rt: &LocalRuntime, path: &str, to: RuntimePhase) -> Json<ControlResponse> {
            rt.controls.lock().unwrap().push(path.to_string());
            *rt.phase.lock().unwrap() = to;
            Json(ControlResponse {
                phase: to,
                message: format!("now {to:?}"),
                effective_parameters: Default::default(),
            })
        }
        let app = Router::new()
            .route(
                STATUS_PATH,
                get(|State(rt): State<LocalRuntime>| async move {
                    let phase = *rt.phase.lock().unwrap();
                    Json(runtime_status(phase, "5000"))
                }),
            )
            .route(
                PAUSE_PATH,
                post(|State(rt): State<LocalRuntime>| async move {
                    control(&rt, PAUSE_PATH, RuntimePhase::Paused)
                }),
            )
            .route(
                RESUME_PATH,
                post(|State(rt): State<LocalRuntime>| async move {
                    control(&rt, RESUME_PATH, RuntimePhase::Running)
                }),
            )
            .route(
                STOP_PATH,
                post(|State(rt): State<LocalRuntime>| async move {
                    control(&rt, STOP_PATH, RuntimePhase::Stopped)
                }),
            )
            .with_state(rt.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        (rt, url)
    }

    fn take_controls(&self) -> Vec<String> {
        std::mem::take(&mut *self.controls.lock().unwrap())
    }
}

/// A context whose poller reaches runtimes at their endpoint annotation.
fn context_with_local_runtimes(fake: &FakeApi) -> Arc<Context> {
    Arc::new(context(fake).with_sync(crate::sync::SyncSettings {
        allow_endpoint_override: true,
        ..Default::default()
    }))
}

async fn poll(fake: &FakeApi, ctx: &Arc<Context>, name: &str) {
    let obj: BotSession =
        serde_json::from_value(fake.get(V, "BotSession", NS, name).unwrap()).unwrap();
    ctx.poller.poll_one(&obj).await;
    fake.take_requests();
}

#[tokio::test]
async fn pause_and_resume_are_forwarded_and_keep_the_pod_and_stop_scales_to_zero() {
    let fake = FakeApi::new();
    let ctx = context_with_local_runtimes(&fake);
    let (rt, url) = LocalRuntime::start().await;
    seed(&fake, "10000");
    add_session(&fake, "bot", "5000", "2026-01-01T00:00:01Z");
    fake.edit(
        V,
        "BotSession",
        NS,
        "bot",
        |o| {
            o["metadata"]["annotations"] =
                json!({paperbot_crds::runtime_api::ENDPOINT_OVERRIDE_ANNOTATION: url})
        },
    );
    reconcile(&fake, &ctx, "bot").await;
    run_pod(&fake, "bot", true);
    poll(&fake, &ctx, "bot").await;
    reconcile(&fake, &ctx, "bot").await;
    assert_eq!(
        condition(&status(&fake, "bot"), "Ready"),
        ("True".into(), "Running".into())
    );
    let template = sts(&fake)["spec"]["template"].clone();

    for (state, request, phase, reason) in [
        ("Paused", "/v1/pause", "Paused", "Paused"),
        ("Running", "/v1/resume", "Running", "Running"),
    ] {
        fake.edit(V, "BotSession", NS, "bot", |o| {
            o["spec"]["desiredState"] = json!(state)
        });
        let reqs = reconcile(&fake, &ctx, "bot").await;
        assert_eq!(rt.take_controls(), [request], "{state}: forwarded once");
        assert!(
            applied(&reqs, "statefulsets").is_none(),
            "{state}: the pod is neither scaled nor rolled"
        );
        assert_eq!(replicas(&fake), 1, "{state}");
        assert_eq!(sts(&fake)["spec"]["template"], template, "{state}");
        let st = status(&fake, "bot");
        assert_eq!(st["phase"], phase, "{state}: {st}");
        assert_eq!(
            condition(&st, "Ready"),
            ("True".into(), reason.into()),
            "{state}: {st}"
        );
        assert_eq!(
            st["observedGeneration"],
            fake.get(V, "BotSession", NS, "bot").unwrap()["metadata"]["generation"]
        );
        // The next poll confirms it: nothing more is sent or written.
        poll(&fake, &ctx, "bot").await;
        let reqs = reconcile(&fake, &ctx, "bot").await;
        assert!(rt.take_controls().is_empty(), "{state}");
        assert!(writes(&reqs).is_empty(), "{state}: {:?}", writes(&reqs));
    }

    fake.edit(V, "BotSession", NS, "bot", |o| {
        o["spec"]["desiredState"] = json!("Stopped")
    });
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert_eq!(rt.take_controls(), ["/v1/stop"]);
    let sts_write = applied(&reqs, "statefulsets").expect("StatefulSet applied");
    assert_eq!(
        sts_write.body["spec"]["replicas"], 0,
        "the runtime ended the session: scaled to zero"
    );
    run_pod(&fake, "bot", false);
    reconcile(&fake, &ctx, "bot").await;
    let st = status(&fake, "bot");
    assert_eq!(st["phase"], "Stopped", "{st}");
    assert_eq!(condition(&st, "Ready").0, "True", "{st}");
}

#[tokio::test]
async fn a_runtime_report_writes_the_figures_once() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    created_session(&fake, &ctx).await;
    run_pod(&fake, "bot", true);
    reconcile(&fake, &ctx, "bot").await;
    runtime_reports(&ctx, "bot", "5123.456");
    let reqs = reconcile(&fake, &ctx, "bot").await;
    let status_writes: Vec<&Recorded> = reqs
        .iter()
        .filter(|r| r.method == Method::PATCH && r.path.ends_with("/status"))
        .collect();
    assert_eq!(status_writes.len(), 1, "{:?}", writes(&reqs));
    let st = status(&fake, "bot");
    assert_eq!(st["equity"], "5123.46", "{st}");
    assert_eq!(st["trades"], 2);
    assert_eq!(st["observedStrategyGeneration"], 1);
    assert_eq!(condition(&st, "CircuitBreakerOpen").1, "AllClosed");

    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert!(
        reqs.is_empty(),
        "the same report again: no request at all: {:?}",
        reqs.iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
    // A change below a cent is not shown either.
    runtime_reports(&ctx, "bot", "5123.4581");
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert!(writes(&reqs).is_empty(), "{:?}", writes(&reqs));
}

#[tokio::test]
async fn delete_runs_the_finalizer_and_records_final_figures() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    created_session(&fake, &ctx).await;
    fake.edit(V, "BotSession", NS, "bot", |o| {
        o["metadata"]["deletionTimestamp"] = json!("2026-01-02T00:00:00Z");
        o["status"]["equity"] = json!("5123.45");
        o["status"]["trades"] = json!(42);
    });
    let reqs = reconcile(&fake, &ctx, "bot").await;
    let ev = events(&reqs);
    let (_, note) = ev
        .iter()
        .find(|(r, _)| r == "SessionDeleted")
        .expect("final figures event");
    assert!(
        note.contains("equity 5123.45") && note.contains("trades 42"),
        "{note}"
    );
    let fin = reqs
        .iter()
        .find(|r| r.content_type == "application/json-patch+json")
        .expect("finalizer removed");
    assert!(
        fin.body.to_string().contains("remove") || fin.body.to_string().contains("[]"),
        "{}",
        fin.body
    );
    assert!(
        fake.get(V, "BotSession", NS, "bot").is_none(),
        "object gone once the finalizer is removed"
    );
    assert!(
        applied(&reqs, "statefulsets").is_none(),
        "no children applied while deleting"
    );
}

#[tokio::test]
async fn missing_account_or_strategy_is_reported_in_status_not_retried() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    add_session(&fake, "bot", "5000", "2026-01-01T00:00:01Z");
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert_eq!(
        writes(&reqs),
        [
            format!("PATCH /apis/{V}/namespaces/{NS}/botsessions/bot"),
            format!("PATCH /apis/{V}/namespaces/{NS}/botsessions/bot/status")
        ],
        "the finalizer and the status; no children for a session that cannot run"
    );
    let st = status(&fake, "bot");
    assert_eq!(
        condition(&st, "Ready"),
        ("False".into(), "AccountNotFound".into())
    );
    assert!(
        events(&reqs)
            .iter()
            .any(|(r, n)| r == "AccountNotFound" && n.contains("acct"))
    );

    seed(&fake, "10000");
    fake.remove(V, "StrategyConfig", NS, "strat");
    reconcile(&fake, &ctx, "bot").await;
    assert_eq!(
        condition(&status(&fake, "bot"), "Ready").1,
        "StrategyNotFound"
    );
}

#[tokio::test]
async fn insufficient_funds_refuses_the_newest_session() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    created_session(&fake, &ctx).await;
    add_session(&fake, "late", "6000", "2026-01-01T00:00:09Z");
    let reqs = reconcile(&fake, &ctx, "late").await;
    assert_eq!(
        writes(&reqs),
        [
            format!("PATCH /apis/{V}/namespaces/{NS}/botsessions/late"),
            format!("PATCH /apis/{V}/namespaces/{NS}/botsessions/late/status")
        ]
    );
    let st = status(&fake, "late");
    assert_eq!(
        condition(&st, "Ready"),
        ("False".into(), "InsufficientFunds".into())
    );
    assert!(
        events(&reqs)
            .iter()
            .any(|(r, n)| r == "InsufficientFunds" && n.contains("11000"))
    );
    // The first session keeps its funding.
    run_pod(&fake, "bot", true);
    runtime_reports(&ctx, "bot", "5000");
    reconcile(&fake, &ctx, "bot").await;
    assert_eq!(condition(&status(&fake, "bot"), "Ready").0, "True");
}

#[tokio::test]
async fn a_strategy_change_does_not_roll_the_pod_but_an_allocation_change_does() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    created_session(&fake, &ctx).await;
    let hash = |fake: &FakeApi| {
        fake.get("apps/v1", "StatefulSet", NS, &child_name("bot"))
            .unwrap()["spec"]["template"]["metadata"]["annotations"]["paperbot.io/config-hash"]
            .clone()
    };
    let before = hash(&fake);
    fake.edit(V, "StrategyConfig", NS, "strat", |o| {
        o["spec"]["risk"]["maxPositionSizePct"] = json!("12")
    });
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert!(
        applied(&reqs, "configmaps").is_some(),
        "rendered config re-applied (a restarted runtime starts from it)"
    );
    let rendered =
        fake.get("v1", "ConfigMap", NS, &child_name("bot")).unwrap()["data"]["session.yaml"]
            .as_str()
            .unwrap()
            .to_string();
    assert!(
        rendered.contains("paperbot.io/strategy-revision: '2'")
            || rendered.contains("paperbot.io/strategy-revision: \"2\""),
        "{rendered}"
    );
    assert!(
        applied(&reqs, "statefulsets").is_none(),
        "the pod is not rolled: the running runtime gets the strategy through /v1/config"
    );
    assert_eq!(hash(&fake), before);

    fake.edit(V, "BotSession", NS, "bot", |o| {
        o["spec"]["allocation"] = json!("4000")
    });
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert!(
        applied(&reqs, "statefulsets").is_some(),
        "pod template re-applied"
    );
    assert_ne!(hash(&fake), before, "a new allocation rolls the pod");
    assert!(
        applied(&reqs, "secrets").is_none(),
        "the API token is not rotated"
    );
}

#[tokio::test]
async fn account_and_strategy_status_aggregate_their_sessions() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    created_session(&fake, &ctx).await;
    fake.edit(V, "BotSession", NS, "bot", |o| {
        o["status"]["equity"] = json!("5100");
        o["status"]["realizedPnl"] = json!("100");
        o["status"]["trades"] = json!(7);
    });
    let acct: PaperAccount =
        serde_json::from_value(fake.get(V, "PaperAccount", NS, "acct").unwrap()).unwrap();
    account::reconcile(Arc::new(acct), synced(&fake, &ctx))
        .await
        .unwrap();
    let st = fake.get(V, "PaperAccount", NS, "acct").unwrap()["status"].clone();
    assert_eq!(st["allocated"], "5000");
    assert_eq!(st["equity"], "10100");
    assert_eq!(st["roiPct"], "1");
    assert_eq!(st["activeSessions"], 1);
    assert_eq!(st["totalTrades"], 7);
    fake.take_requests();
    let acct: PaperAccount =
        serde_json::from_value(fake.get(V, "PaperAccount", NS, "acct").unwrap()).unwrap();
    account::reconcile(Arc::new(acct), synced(&fake, &ctx))
        .await
        .unwrap();
    assert!(
        writes(&fake.take_requests()).is_empty(),
        "unchanged account status is not rewritten"
    );

    let strat: StrategyConfig =
        serde_json::from_value(fake.get(V, "StrategyConfig", NS, "strat").unwrap()).unwrap();
    strategy::reconcile(Arc::new(strat), synced(&fake, &ctx))
        .await
        .unwrap();
    let st = fake.get(V, "StrategyConfig", NS, "strat").unwrap()["status"].clone();
    assert_eq!(st["sessionCount"], 1);
    assert_eq!(condition(&st, "Ready").0, "True");
}

fn sts(fake: &FakeApi) -> Value {
    fake.get("apps/v1", "StatefulSet", NS, &child_name("bot"))
        .expect("StatefulSet exists")
}

/// The claim the StatefulSet controller creates from the `ledger` template.
fn create_claim(fake: &FakeApi, phase: &str) {
    fake.put(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": format!("ledger-{}-0", child_name("bot")), "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": phase}}));
}

#[tokio::test]
async fn ledger_claim_is_owned_by_the_session_once_and_its_binding_reported() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    created_session(&fake, &ctx).await;
    let templates = sts(&fake)["spec"]["volumeClaimTemplates"].clone();
    assert_eq!(templates[0]["metadata"]["name"], "ledger", "{templates}");
    assert_eq!(
        sts(&fake)["spec"]["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    let claim = format!("ledger-{}-0", child_name("bot"));

    create_claim(&fake, "Pending");
    let reqs = reconcile(&fake, &ctx, "bot").await;
    let patch = applied(&reqs, "persistentvolumeclaims").expect("claim adopted");
    assert_eq!(patch.content_type, "application/apply-patch+yaml");
    let owner = &patch.body["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str()),
        (Some("BotSession"), Some("bot"))
    );
    assert!(owner.get("controller").is_none(), "{owner}");
    let st = status(&fake, "bot");
    assert_eq!(
        condition(&st, "LedgerStorageOutdated"),
        ("False".into(), "AsConfigured".into())
    );
    let ready = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()["message"]
        .clone();
    assert!(
        ready
            .as_str()
            .unwrap()
            .contains(&format!("{claim} is Pending")),
        "{ready}"
    );

    // Bound, pod ready: nothing more to write, ever.
    fake.edit("v1", "PersistentVolumeClaim", NS, &claim, |o| {
        o["status"]["phase"] = json!("Bound")
    });
    run_pod(&fake, "bot", true);
    runtime_reports(&ctx, "bot", "5000");
    reconcile(&fake, &ctx, "bot").await;
    assert_eq!(condition(&status(&fake, "bot"), "Ready").0, "True");
    for _ in 0..2 {
        let reqs = reconcile(&fake, &ctx, "bot").await;
        assert!(writes(&reqs).is_empty(), "{:?}", writes(&reqs));
    }
}

#[tokio::test]
async fn retained_claims_get_no_owner_from_the_session() {
    let fake = FakeApi::new();
    let mut ctx = context(&fake);
    Arc::get_mut(&mut ctx).unwrap().settings.ledger.retention =
        crate::ledger::VolumeRetention::Retain;
    created_session(&fake, &ctx).await;
    create_claim(&fake, "Bound");
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert!(applied(&reqs, "persistentvolumeclaims").is_none());
}

#[tokio::test]
async fn a_database_secret_wires_database_url_and_needs_no_claim() {
    let fake = FakeApi::new();
    let mut ctx = context(&fake);
    Arc::get_mut(&mut ctx)
        .unwrap()
        .settings
        .ledger
        .database_secret = Some(paperbot_crds::SecretKeyRef {
        name: "pg-app".into(),
        key: "uri".into(),
    });
    created_session(&fake, &ctx).await;
    let sts = sts(&fake);
    assert!(sts["spec"]["volumeClaimTemplates"].is_null(), "{sts}");
    let env = &sts["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env[1],
        json!({"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "pg-app", "key": "uri", "optional": false}}})
    );
    let st = status(&fake, "bot");
    assert_eq!(condition(&st, "LedgerStorageOutdated").0, "False");
    run_pod(&fake, "bot", true);
    reconcile(&fake, &ctx, "bot").await;
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert!(
        !reqs
            .iter()
            .any(|r| r.path.contains("persistentvolumeclaims")),
        "no claim is read or written on a database"
    );
}

#[tokio::test]
async fn moving_a_running_session_to_a_database_is_refused_and_reported() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    created_session(&fake, &ctx).await;
    create_claim(&fake, "Bound");
    run_pod(&fake, "bot", true);
    runtime_reports(&ctx, "bot", "5000");
    reconcile(&fake, &ctx, "bot").await;
    let before = sts(&fake)["spec"].clone();

    fake.edit(V, "PaperAccount", NS, "acct", |o| {
        o["spec"]["ledger"] = json!({"databaseUrlSecretRef": {"name": "pg-app", "key": "uri"}})
    });
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert!(
        applied(&reqs, "statefulsets").is_none(),
        "the StatefulSet keeps its claim template"
    );
    assert_eq!(sts(&fake)["spec"], before);
    let st = status(&fake, "bot");
    assert_eq!(
        condition(&st, "LedgerStorageOutdated"),
        ("True".into(), "StorageFixedAtCreation".into())
    );
    assert_eq!(
        condition(&st, "Ready").0,
        "True",
        "the session keeps running"
    );
    let ev = events(&reqs);
    let (_, note) = ev
        .iter()
        .find(|(r, _)| r == "LedgerStorageOutdated")
        .expect("a Warning Event");
    assert!(
        note.contains("stays in SQLite on PersistentVolumeClaim") && note.contains("pg-app"),
        "{note}"
    );
    // Reported once.
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert!(events(&reqs).is_empty() && writes(&reqs).is_empty());
}

#[tokio::test]
async fn a_stateful_set_with_the_ledger_on_an_emptydir_is_recreated_durable() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    seed(&fake, "10000");
    add_session(&fake, "bot", "5000", "2026-01-01T00:00:01Z");
    reconcile(&fake, &ctx, "bot").await;
    // What an operator before durable ledgers left behind.
    fake.put(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": child_name("bot"), "namespace": NS},
        "spec": {"replicas": 1, "template": {"spec": {
            "containers": [{"name": "bot-runtime", "args": ["run", "--ledger", "/var/lib/paperbot/ledger.db"]}],
            "volumes": [{"name": "data", "emptyDir": {}}]}}}}));
    let reqs = reconcile(&fake, &ctx, "bot").await;
    let order: Vec<String> = reqs
        .iter()
        .filter(|r| r.is_write() && r.path.contains("/statefulsets/"))
        .map(|r| r.method.to_string())
        .collect();
    assert_eq!(order, ["DELETE", "PATCH"], "deleted, then applied anew");
    assert!(
        sts(&fake)["spec"]["volumeClaimTemplates"].is_array(),
        "{}",
        sts(&fake)
    );
    assert!(
        events(&reqs)
            .iter()
            .any(|(r, n)| r == "LedgerStorageMigrated" && n.contains("emptyDir")),
        "{:?}",
        events(&reqs)
    );
}

fn replicas(fake: &FakeApi) -> Value {
    sts(fake)["spec"]["replicas"].clone()
}

#[tokio::test]
async fn a_session_suspended_while_its_account_is_missing_resumes_when_it_returns() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    created_session(&fake, &ctx).await;
    run_pod(&fake, "bot", true);
    runtime_reports(&ctx, "bot", "5000");
    reconcile(&fake, &ctx, "bot").await;
    assert_eq!(condition(&status(&fake, "bot"), "Ready").0, "True");

    fake.remove(V, "PaperAccount", NS, "acct");
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert_eq!(replicas(&fake), 0, "scaled to zero through the apply path");
    let sts_write = applied(&reqs, "statefulsets").expect("StatefulSet applied");
    assert_eq!(sts_write.content_type, "application/apply-patch+yaml");
    assert!(
        applied(&reqs, "configmaps").is_none(),
        "the kept configuration is not rewritten"
    );
    assert_eq!(
        condition(&status(&fake, "bot"), "Ready"),
        ("False".into(), "AccountNotFound".into())
    );
    run_pod(&fake, "bot", false);
    reconcile(&fake, &ctx, "bot").await;

    seed(&fake, "10000");
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert!(applied(&reqs, "statefulsets").is_some());
    assert_eq!(replicas(&fake), 1, "scaled back when the account returned");
    run_pod(&fake, "bot", true);
    reconcile(&fake, &ctx, "bot").await;
    assert_eq!(condition(&status(&fake, "bot"), "Ready").0, "True");
}

#[tokio::test]
async fn a_stateful_set_scaled_by_hand_is_put_back_and_an_event_says_so() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    created_session(&fake, &ctx).await;
    run_pod(&fake, "bot", true);
    reconcile(&fake, &ctx, "bot").await;
    // What `kubectl scale --replicas=3` leaves: the field owned by kubectl.
    fake.edit("apps/v1", "StatefulSet", NS, &child_name("bot"), |o| {
        o["spec"]["replicas"] = json!(3);
        o["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Update",
            "subresource": "scale", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:replicas": {}}}}]);
    });
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert_eq!(
        writes(&reqs)
            .iter()
            .filter(|w| w.contains("/statefulsets/"))
            .count(),
        1,
        "{:?}",
        writes(&reqs)
    );
    assert_eq!(replicas(&fake), 1);
    let ev = events(&reqs);
    let (_, note) = ev
        .iter()
        .find(|(r, _)| r == "DriftReverted")
        .expect("a DriftReverted Event");
    assert!(
        note.contains("spec.replicas was changed by kubectl (scale)"),
        "{note}"
    );
}

#[tokio::test]
async fn an_edited_or_deleted_child_is_put_back() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    created_session(&fake, &ctx).await;
    let child = child_name("bot");
    let rendered = |fake: &FakeApi| {
        fake.get("v1", "ConfigMap", NS, &child).unwrap()["data"]["session.yaml"].clone()
    };
    let before = rendered(&fake);
    // `kubectl edit configmap`: the key now belongs to kubectl-edit.
    fake.edit("v1", "ConfigMap", NS, &child, |o| {
        o["data"]["session.yaml"] = json!("edited");
        o["metadata"]["managedFields"] = json!([{"manager": "kubectl-edit", "operation": "Update",
            "apiVersion": "v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:session.yaml": {}}}}]);
    });
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert!(applied(&reqs, "configmaps").is_some());
    assert_eq!(rendered(&fake), before);
    // A label removed by hand is missing from the live object.
    fake.edit("v1", "Service", NS, &child, |o| {
        o["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("paperbot.io/session");
    });
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert!(applied(&reqs, "services").is_some());
    // A deleted Secret is recreated (with a new token: the old one is gone).
    fake.remove("v1", "Secret", NS, &child);
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert_eq!(
        writes(&reqs),
        [format!("PATCH /api/v1/namespaces/{NS}/secrets/{child}")]
    );
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert!(writes(&reqs).is_empty(), "{:?}", writes(&reqs));
}

#[tokio::test]
async fn a_reconcile_on_stale_stores_repeats_no_write_and_no_event() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    seed(&fake, "10000");
    add_session(&fake, "bot", "5000", "2026-01-01T00:00:01Z");
    // The stores as they were before the first reconcile's writes arrived.
    let stale = fake.stores();
    reconcile(&fake, &ctx, "bot").await;
    let obj: BotSession =
        serde_json::from_value(fake.get(V, "BotSession", NS, "bot").unwrap()).unwrap();
    let mut old = obj.clone();
    old.metadata.finalizers = None;
    old.status = None;
    old.metadata.resource_version = Some("1".into());
    botsession::reconcile(Arc::new(old), Arc::new(ctx.with_stores(stale)))
        .await
        .unwrap();
    let reqs = fake.take_requests();
    assert!(
        reqs.is_empty(),
        "the operator's own writes stand in for the stale copies: {:?}",
        reqs.iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn adding_the_finalizer_on_a_stale_copy_is_retried_at_once() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    seed(&fake, "10000");
    add_session(&fake, "bot", "5000", "2026-01-01T00:00:01Z");
    let stale: BotSession =
        serde_json::from_value(fake.get(V, "BotSession", NS, "bot").unwrap()).unwrap();
    // Another replica (or an earlier run) added it meanwhile.
    fake.edit(V, "BotSession", NS, "bot", |o| {
        o["metadata"]["finalizers"] = json!([botsession::FINALIZER])
    });
    botsession::reconcile(Arc::new(stale), synced(&fake, &ctx))
        .await
        .expect("no 422 error: the object is read back and the reconcile goes on");
    let reqs = fake.take_requests();
    let on_session: Vec<String> = reqs
        .iter()
        .filter(|r| r.path == format!("/apis/{V}/namespaces/{NS}/botsessions/bot"))
        .map(|r| r.method.to_string())
        .collect();
    assert_eq!(on_session, ["PATCH", "GET"], "refused, read back, done");
    assert!(applied(&reqs, "statefulsets").is_some(), "children applied");
    assert!(
        ctx.metrics
            .render()
            .contains("paperbot_operator_stale_writes_total{controller=\"botsession\"} 1")
    );
}
