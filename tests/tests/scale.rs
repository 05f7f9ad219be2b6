//! The operator at scale against the real control plane (see
//! `paperbot_e2e::scale`): the operator binary under the chart's
//! ServiceAccount, kwok nodes, one account, one strategy, N sessions.
//!
//! By default 20 then 100 sessions with the test profile's binary, asserting
//! what does not depend on the machine's speed: an unchanged fleet and a
//! restarted operator write nothing, no reconcile is triggered while nothing
//! changes, and the API requests per created session do not grow with the
//! fleet. The figures are printed as a Markdown table. The full measurement
//! (README, "The operator at scale"):
//!
//! ```sh
//! PAPERBOT_SCALE_SESSIONS=10,100,300,1000 PAPERBOT_SCALE_RELEASE=1 PAPERBOT_SCALE_STEADY_SECS=60 \
//!   cargo test -p paperbot-e2e --release --test scale -- --nocapture
//! ```
//!
//! `PAPERBOT_OPERATOR_BIN` runs a given binary instead (e.g. an older
//! release, for a before/after comparison); `PAPERBOT_SCALE_STEADY_SECS`
//! sets the steady window (default 30).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use paperbot_crds::runtime_api::ENDPOINT_OVERRIDE_ANNOTATION;
use paperbot_e2e::{
    control_plane,
    fake_runtime::FakeFleet,
    scale::{self, ScaleOptions, ScaleReport, operator_binary},
};

fn sizes() -> Vec<usize> {
    let raw = std::env::var("PAPERBOT_SCALE_SESSIONS").unwrap_or_else(|_| "20,100".into());
    raw.split(',')
        .map(|s| {
            s.trim().parse().unwrap_or_else(|_| {
                panic!("PAPERBOT_SCALE_SESSIONS must list session counts, e.g. 10,100: got {raw:?}")
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_at_scale() {
    let release = std::env::var("PAPERBOT_SCALE_RELEASE").is_ok_and(|v| v == "1");
    let bin = operator_binary(release);
    let steady = std::env::var("PAPERBOT_SCALE_STEADY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let cp = control_plane();
    let mut reports: Vec<ScaleReport> = Vec::new();
    println!("operator binary: {}", bin.display());
    println!("{}", ScaleReport::header());
    // kwok pods run no process: one fake fleet answers every session's
    // runtime API (Running, ready, figures unchanged), reached through the
    // endpoint-override annotation.
    let (fleet, template) = FakeFleet::shared();
    for n in sizes() {
        let mut opts = ScaleOptions::new(n, bin.clone());
        opts.steady_window = Duration::from_secs(steady);
        opts.operator_args = vec!["--allow-runtime-endpoint-override".into()];
        let base = template.replace("{namespace}", &format!("scale-{n}"));
        opts.session_annotations = Arc::new(move |_, name| {
            BTreeMap::from([(
                ENDPOINT_OVERRIDE_ANNOTATION.to_string(),
                base.replace("{name}", name),
            )])
        });
        let polls_before = fleet.status_requests();
        let r = scale::run(cp, opts).await;
        println!("{}", r.row());
        println!(
            "  runtime status polls answered by the fake fleet: {}",
            fleet.status_requests() - polls_before
        );
        println!(
            "  reconcile triggers during the ramp: {:?}; own-write watch events ignored: {}; reconciles in the steady window: {}; deleting all sessions took {:.1} s",
            r.ramp_triggers, r.ramp_own_write_events, r.steady_reconciles, r.delete_secs
        );
        for (n, seq) in &r.ramp_status_sequences {
            println!("  {n} session(s) went through: {}", seq.join(" → "));
        }
        reports.push(r);
    }
    for r in &reports {
        assert!(
            r.steady_writes.is_empty(),
            "{} sessions: an unchanged fleet caused writes: {:?}",
            r.sessions,
            r.steady_writes
        );
        assert!(
            r.restart_writes.is_empty(),
            "{} sessions: a restarted operator wrote over an unchanged fleet: {:?}",
            r.sessions,
            r.restart_writes
        );
        assert_eq!(
            r.steady_event_triggers, 0.0,
            "{} sessions: reconciles were triggered while nothing changed",
            r.sessions
        );
    }
    if let (Some(small), Some(large)) = (reports.first(), reports.last())
        && large.sessions > small.sessions
    {
        // Fixed costs (watches, account and strategy status) spread over more
        // sessions, so the per-session cost may only fall.
        assert!(
            large.requests_per_session() <= small.requests_per_session() * 1.2,
            "requests per session grew with the fleet: {:.2} at {} sessions, {:.2} at {}",
            small.requests_per_session(),
            small.sessions,
            large.requests_per_session(),
            large.sessions
        );
    }
}
