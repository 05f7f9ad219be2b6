//! Reconcile behaviour against the mocked API server ([`crate::fixtures`]):
//! the requests each scenario makes, asserted by method, path and body.

use std::{sync::Arc, time::Duration};

use http::Method;
use kube::runtime::events::{Recorder, Reporter};
use paperbot_crds::{BotSession, PaperAccount, StrategyConfig};
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
    Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "paperbot-operator".into(),
                instance: None,
            },
        ),
        client,
        metrics: Arc::new(Metrics::new()),
        settings: RuntimeSettings {
            image: "bot-runtime:test".into(),
            ..Default::default()
        },
        sync_interval: Duration::from_secs(15),
    })
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
    botsession::reconcile(Arc::new(obj), ctx.clone())
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

async fn created_session(fake: &FakeApi, ctx: &Arc<Context>) {
    seed(fake, "10000");
    add_session(fake, "bot", "5000", "2026-01-01T00:00:01Z");
    reconcile(fake, ctx, "bot").await; // adds the finalizer
    reconcile(fake, ctx, "bot").await; // children and status
}

#[tokio::test]
async fn create_adds_finalizer_then_applies_children_and_status() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    seed(&fake, "10000");
    add_session(&fake, "bot", "5000", "2026-01-01T00:00:01Z");

    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert_eq!(
        writes(&reqs),
        [format!("PATCH /apis/{V}/namespaces/{NS}/botsessions/bot")]
    );
    let fin = &reqs.iter().find(|r| r.is_write()).unwrap();
    assert_eq!(fin.content_type, "application/json-patch+json");
    assert!(fin.body.to_string().contains(botsession::FINALIZER));

    let reqs = reconcile(&fake, &ctx, "bot").await;
    let child = child_name("bot");
    assert_eq!(
        writes(&reqs),
        [
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
        events(&reqs)
            .iter()
            .any(|(r, n)| r == "PhaseRunning" && n.ends_with("→ Running")),
        "{:?}",
        events(&reqs)
    );

    for _ in 0..3 {
        let reqs = reconcile(&fake, &ctx, "bot").await;
        assert!(
            writes(&reqs).is_empty() && events(&reqs).is_empty(),
            "unchanged object wrote: {:?}",
            writes(&reqs)
        );
        assert!(reqs.iter().all(|r| r.method == Method::GET));
    }
}

#[tokio::test]
async fn pause_resume_and_stop_scale_the_statefulset() {
    let fake = FakeApi::new();
    let ctx = context(&fake);
    created_session(&fake, &ctx).await;
    run_pod(&fake, "bot", true);
    reconcile(&fake, &ctx, "bot").await;

    for (state, replicas, phase) in [
        ("Paused", 0, "Paused"),
        ("Running", 1, "Running"),
        ("Stopped", 0, "Stopped"),
    ] {
        fake.edit(V, "BotSession", NS, "bot", |o| {
            o["spec"]["desiredState"] = json!(state)
        });
        let reqs = reconcile(&fake, &ctx, "bot").await;
        let sts = applied(&reqs, "statefulsets")
            .unwrap_or_else(|| panic!("{state}: StatefulSet applied"));
        assert_eq!(sts.body["spec"]["replicas"], replicas, "{state}");
        run_pod(&fake, "bot", replicas == 1);
        reconcile(&fake, &ctx, "bot").await;
        let st = status(&fake, "bot");
        assert_eq!(st["phase"], phase, "{st}");
        assert_eq!(condition(&st, "Ready").0, "True", "{state}: {st}");
        assert_eq!(
            st["observedGeneration"],
            fake.get(V, "BotSession", NS, "bot").unwrap()["metadata"]["generation"]
        );
    }
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
    reconcile(&fake, &ctx, "bot").await;
    let reqs = reconcile(&fake, &ctx, "bot").await;
    assert_eq!(
        writes(&reqs),
        [format!(
            "PATCH /apis/{V}/namespaces/{NS}/botsessions/bot/status"
        )]
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
    reconcile(&fake, &ctx, "late").await;
    let reqs = reconcile(&fake, &ctx, "late").await;
    assert_eq!(
        writes(&reqs),
        [format!(
            "PATCH /apis/{V}/namespaces/{NS}/botsessions/late/status"
        )]
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
    reconcile(&fake, &ctx, "bot").await;
    assert_eq!(condition(&status(&fake, "bot"), "Ready").0, "True");
}

#[tokio::test]
async fn strategy_change_rolls_the_pod() {
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
        "rendered config re-applied"
    );
    assert!(
        applied(&reqs, "statefulsets").is_some(),
        "pod template re-applied"
    );
    assert_ne!(hash(&fake), before, "a new config hash rolls the pod");
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
    account::reconcile(Arc::new(acct), ctx.clone())
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
    account::reconcile(Arc::new(acct), ctx.clone())
        .await
        .unwrap();
    assert!(
        writes(&fake.take_requests()).is_empty(),
        "unchanged account status is not rewritten"
    );

    let strat: StrategyConfig =
        serde_json::from_value(fake.get(V, "StrategyConfig", NS, "strat").unwrap()).unwrap();
    strategy::reconcile(Arc::new(strat), ctx.clone())
        .await
        .unwrap();
    let st = fake.get(V, "StrategyConfig", NS, "strat").unwrap()["status"].clone();
    assert_eq!(st["sessionCount"], 1);
    assert_eq!(condition(&st, "Ready").0, "True");
}
