//! The operator's runtime status poller over a fleet of 1,000 sessions whose
//! runtimes are answered by one fake fleet (`paperbot_e2e::fake_runtime`) on
//! 127.0.0.1: how long one full sync (a poll of every session) takes with
//! the default concurrency, and how many reconciles it asks for — with
//! every session's equity moving between passes (at most one per session
//! per pass is the budget) and with nothing moving (none).
//!
//! ```sh
//! cargo bench -p paperbot-e2e --bench poller            # 1,000 sessions
//! PAPERBOT_BENCH_SESSIONS=5000 cargo bench -p paperbot-e2e --bench poller
//! ```
//!
//! No API server is involved: the tokens are remembered as the reconciler
//! does, and a reconcile asked for is counted, not run.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use kube::runtime::{reflector, watcher};
use paperbot_crds::{BotSession, runtime_api::ENDPOINT_OVERRIDE_ANNOTATION};
use paperbot_e2e::fake_runtime::FakeFleet;
use paperbot_operator::sync::{Poller, SyncSettings};
use rust_decimal::Decimal;

fn session(i: usize, base: &str) -> BotSession {
    let name = format!("bot-{i:05}");
    serde_json::from_value(serde_json::json!({
        "apiVersion": "paperbot.io/v1alpha1", "kind": "BotSession",
        "metadata": {"name": name, "namespace": "bench", "uid": format!("u-{i}"),
            "annotations": {ENDPOINT_OVERRIDE_ANNOTATION: format!("{base}/bench/{name}")}},
        "spec": {"accountRef": {"name": "acct"}, "strategyRef": {"name": "strat"},
            "allocation": "1000", "symbols": ["SIM-BTC"],
            "marketData": {"source": "Simulated", "simulated": {"seed": 1, "candles": 100}}},
        "status": {"phase": "Running"}
    }))
    .expect("a valid BotSession")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("PAPERBOT_BENCH_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let fleet = FakeFleet::default();
    let addr = fleet.serve().await.expect("the fake fleet binds 127.0.0.1");
    let base = format!("http://{addr}");
    let (store, mut writer) = reflector::store::<BotSession>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for i in 0..n {
        let s = session(i, &base);
        fleet.add(
            "bench",
            s.metadata.name.as_deref().unwrap_or_default(),
            Decimal::from(1000),
        );
        writer.apply_watcher_event(&watcher::Event::InitApply(s));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    // A client for Secrets is never used: every token is remembered.
    let kube = kube::Client::try_from(kube::Config::new(
        "http://127.0.0.1:9".parse().expect("url"),
    ))
    .expect("a kube client");
    let settings = SyncSettings {
        interval: Duration::ZERO, // every pass polls every session
        allow_endpoint_override: true,
        ..Default::default()
    };
    let concurrency = settings.concurrency;
    let poller = Poller::new(settings, kube);
    for s in store.state() {
        poller
            .reports
            .remember_token(&reflector::ObjectRef::from_obj(&*s), "bench-token");
    }
    let triggered = Arc::new(AtomicU64::new(0));
    let t = triggered.clone();
    let trigger = move |_| {
        t.fetch_add(1, Ordering::Relaxed);
    };

    // The first pass triggers every session (nothing was known).
    poller.pass(&store, &trigger).await;
    let mut moving = Vec::new();
    let mut moving_triggers = Vec::new();
    let mut still = Vec::new();
    let mut still_triggers = Vec::new();
    for round in 0..7 {
        // Equity moves by a cent: every session changes what users see.
        fleet.tick(Decimal::new(1 + round, 2));
        let before = triggered.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let polled = poller.pass(&store, &trigger).await;
        moving.push(t0.elapsed().as_secs_f64());
        assert_eq!(polled, n, "every session is polled in a pass");
        moving_triggers.push(triggered.load(Ordering::Relaxed) - before);
        // Nothing moves: nothing is triggered.
        let before = triggered.load(Ordering::Relaxed);
        let t0 = Instant::now();
        poller.pass(&store, &trigger).await;
        still.push(t0.elapsed().as_secs_f64());
        still_triggers.push(triggered.load(Ordering::Relaxed) - before);
    }
    println!(
        "{n} sessions, concurrency {concurrency}: one full sync in {:.3} s (median of 7, equity moving; min {:.3}, max {:.3}), {:.3} s with nothing moving",
        median(moving.clone()),
        moving.iter().copied().fold(f64::INFINITY, f64::min),
        moving.iter().copied().fold(0.0, f64::max),
        median(still),
    );
    println!(
        "reconciles asked for per pass: {moving_triggers:?} with equity moving (budget: at most {n}), {still_triggers:?} with nothing moving (budget: 0)"
    );
    println!("status requests answered: {}", fleet.status_requests());
    if let Some(rss) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
    {
        println!("bench process (poller + fake fleet) peak RSS: {rss}");
    }
}
