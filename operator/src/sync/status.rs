//! The runtime's part of a BotSession's status: applied on top of what the
//! pods show ([`crate::conditions::desired_session_status`] calls
//! [`overlay`] last). Pure: the report, the previous status and the time are
//! arguments.
//!
//! | runtime reports | phase | Ready | Degraded | CircuitBreakerOpen |
//! |---|---|---|---|---|
//! | nothing yet (pod up) | from the pods | False `WaitingForRuntime` | as the pods say | Unknown `RuntimeNotReporting` |
//! | `--runtime-not-reporting-after` failed polls | from the pods | False `RuntimeNotReporting` | True `RuntimeNotReporting` | Unknown `RuntimeNotReporting` |
//! | Running, ready | Running | True `Running` | False | True `BreakerOpen` / False `AllClosed` |
//! | Running, not ready (ledger down, stale data) | Running | False `RuntimeNotReady` (its message) | False | as reported |
//! | Paused (desired Paused) | Paused | True `Paused` | False | as reported |
//! | held by the account kill switch | Halted | False `AccountKillSwitch` | False | as reported |
//! | Completed / Stopped | Completed / Stopped | True `Completed` / `Stopped` | False | as reported |
//! | Halted (its own kill-switch breaker) | Halted | False `Halted` | False | True |
//! | Failed | Failed | False `RuntimeFailed` | True `RuntimeFailed` | as reported |
//!
//! Live sessions also get `MarketDataDegraded` from each report:
//! `True` `StalePrices` (symbols older than `maxAge`), `True`
//! `FallbackSource` (the active source is not the first of the chain),
//! else `False` `PreferredSource`; `Unknown` `RuntimeNotReporting` while the
//! runtime does not report.
//!
//! A phase that only the runtime can end a session with (Completed, Halted,
//! Stopped, Failed by the runtime) is kept once written, when the runtime
//! is no longer polled.
//!
//! The runtime's phase and readiness (the rows from "nothing yet" down)
//! apply only while the pods say the current configuration runs (phase
//! Running or Paused from the pods): while the pod starts, rolls out or
//! cannot run, the pods' phase and conditions stand (the figures and
//! breakers of a cached report are still shown).
//!
//! Before this operator process has polled the runtime at all (it just
//! started: `o.runtime` is `None`), a status already synced from the
//! runtime for the same generation stands as written (phase and the Ready,
//! Progressing, Degraded and CircuitBreakerOpen conditions), so an operator
//! restart writes nothing until a poll shows a change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use paperbot_crds::{
    BotSessionStatus, BreakerState, DesiredState, SessionPhase, runtime_api::RuntimePhase,
};

use super::project::{apply_figures, market_data_condition, session_phase_of};
use crate::conditions::{
    CIRCUIT_BREAKER_OPEN, ConditionStatus, DEGRADED, PROGRESSING, READY, SessionObservation,
    set_condition,
};

/// Reason of conditions while the runtime does not answer.
pub const RUNTIME_NOT_REPORTING: &str = "RuntimeNotReporting";
/// Reason of `Ready=False` while sessions of the account are held.
pub const ACCOUNT_KILL_SWITCH: &str = "AccountKillSwitch";
/// Live sessions: `True` while a fallback source serves or symbols are
/// stale (see [`market_data_condition`]).
pub const MARKET_DATA_DEGRADED: &str = "MarketDataDegraded";

fn set(
    s: &mut BotSessionStatus,
    type_: &str,
    st: ConditionStatus,
    reason: &str,
    msg: &str,
    o: &SessionObservation,
    now: &Time,
) {
    set_condition(&mut s.conditions, type_, st, reason, msg, o.generation, now);
}

/// Keep the Ready, Progressing, Degraded and CircuitBreakerOpen conditions
/// of `old` (at the observed generation).
fn keep_runtime_conditions(
    s: &mut BotSessionStatus,
    old: Option<&BotSessionStatus>,
    o: &SessionObservation,
    now: &Time,
) {
    use ConditionStatus::{False, True, Unknown};
    let keep = |t: &str| old.and_then(|x| x.conditions.iter().find(|c| c.type_ == t).cloned());
    for t in [READY, PROGRESSING, DEGRADED, CIRCUIT_BREAKER_OPEN] {
        if let Some(c) = keep(t) {
            set_condition(
                &mut s.conditions,
                t,
                match c.status.as_str() {
                    "True" => True,
                    "False" => False,
                    _ => Unknown,
                },
                &c.reason,
                &c.message,
                o.generation,
                now,
            );
        }
    }
}

/// Apply the runtime's report (`o.runtime`) and the account kill switch
/// (`o.account_halt`) to `s`, the status computed from the pods. `old` is
/// the status before this reconcile.
pub fn overlay(
    s: &mut BotSessionStatus,
    old: Option<&BotSessionStatus>,
    o: &SessionObservation,
    now: &Time,
) {
    use ConditionStatus::{False, True, Unknown};
    if o.problem.is_some() {
        return;
    }
    let obs = o.runtime.as_ref();
    let report = obs.and_then(|r| r.status.as_ref());
    if let Some(r) = report {
        apply_figures(s, r);
    }
    // Breakers.
    let silent = obs.is_none_or(|r| r.not_reporting || r.status.is_none());
    match (report, silent) {
        (Some(r), false) => {
            let open: Vec<String> = r
                .breakers
                .iter()
                .filter(|b| b.state != BreakerState::Closed)
                .map(|b| match &b.reason {
                    Some(why) => format!("{} ({why})", b.name),
                    None => b.name.clone(),
                })
                .collect();
            if let Some(md) = &s.market_data {
                let (degraded, reason, msg) = market_data_condition(md);
                let st = if degraded { True } else { False };
                set(s, MARKET_DATA_DEGRADED, st, reason, &msg, o, now);
            }
            if open.is_empty() {
                let msg = format!("all {} circuit breakers are closed", r.breakers.len());
                set(s, CIRCUIT_BREAKER_OPEN, False, "AllClosed", &msg, o, now);
            } else {
                let msg = format!("open: {}", open.join("; "));
                set(s, CIRCUIT_BREAKER_OPEN, True, "BreakerOpen", &msg, o, now);
            }
        }
        _ => {
            let msg = match obs.and_then(|r| r.last_error.as_deref()) {
                Some(e) => format!("the runtime does not report: {e}"),
                None => "the runtime has not reported yet".to_string(),
            };
            if obs.is_some_and(|r| r.not_reporting)
                && s.conditions.iter().any(|c| c.type_ == MARKET_DATA_DEGRADED)
            {
                set(
                    s,
                    MARKET_DATA_DEGRADED,
                    Unknown,
                    RUNTIME_NOT_REPORTING,
                    &msg,
                    o,
                    now,
                );
            }
            if !matches!(
                s.phase,
                SessionPhase::Completed | SessionPhase::Stopped | SessionPhase::Halted
            ) || obs.is_some()
            {
                set(
                    s,
                    CIRCUIT_BREAKER_OPEN,
                    Unknown,
                    RUNTIME_NOT_REPORTING,
                    &msg,
                    o,
                    now,
                );
            }
        }
    }

    // A phase only the runtime ends a session with sticks once written.
    let old_final = old.map(|o| o.phase).filter(|p| {
        matches!(
            p,
            SessionPhase::Completed | SessionPhase::Halted | SessionPhase::Stopped
        )
    });
    let pods_current = matches!(s.phase, SessionPhase::Running | SessionPhase::Paused);

    if let Some(r) = report.filter(|r| r.phase.is_final()) {
        s.phase = session_phase_of(r.phase);
        let msg = r.message.clone().unwrap_or_else(|| match r.phase {
            RuntimePhase::Completed => {
                "the session reached the end of its data or stopAfter".into()
            }
            RuntimePhase::Stopped => "the session was stopped for good".into(),
            _ => String::new(),
        });
        match r.phase {
            RuntimePhase::Completed | RuntimePhase::Stopped => {
                let reason = if r.phase == RuntimePhase::Completed {
                    "Completed"
                } else {
                    "Stopped"
                };
                set(s, READY, True, reason, &msg, o, now);
                set(s, PROGRESSING, False, reason, &msg, o, now);
            }
            RuntimePhase::Halted => {
                set(s, READY, False, "Halted", &msg, o, now);
                set(s, PROGRESSING, False, "Halted", &msg, o, now);
            }
            _ => {
                set(s, READY, False, "RuntimeFailed", &msg, o, now);
                set(s, PROGRESSING, False, "RuntimeFailed", &msg, o, now);
                set(s, DEGRADED, True, "RuntimeFailed", &msg, o, now);
            }
        }
        return;
    }
    if report.is_none()
        && let Some(p) = old_final
        && o.desired != DesiredState::Stopped
    {
        // Ended and synced: the pod may be gone; the end stays.
        s.phase = p;
        keep_runtime_conditions(s, old, o, now);
        return;
    }
    // Not answered yet: never polled, or polls failing but fewer than
    // `--runtime-not-reporting-after` (an operator restart polls every
    // session at once).
    let unanswered = obs.is_none_or(|r| r.status.is_none() && !r.not_reporting);
    if unanswered
        && pods_current
        && let Some(prev) = old
        && prev.equity.is_some()
        && prev.observed_generation == o.generation
        && matches!(prev.phase, SessionPhase::Running | SessionPhase::Paused)
    {
        // Not answered yet since this operator process started: the synced
        // status stands until the first answer.
        s.phase = prev.phase;
        keep_runtime_conditions(s, old, o, now);
        return;
    }
    if o.desired == DesiredState::Stopped {
        if let Some(r) = report.filter(|_| !silent) {
            let msg = format!(
                "asked the runtime to stop the session (it reports {:?})",
                r.phase
            );
            set(s, READY, False, "Stopping", &msg, o, now);
            set(s, PROGRESSING, True, "Stopping", &msg, o, now);
        }
        return;
    }
    if !pods_current {
        // The pods' conditions say why (creating, starting, rolling out,
        // crash loop).
        return;
    }
    if let Some(r) = obs.filter(|r| r.not_reporting) {
        let msg = format!(
            "{} failed polls of the runtime's API in a row: {}",
            r.failures,
            r.last_error.as_deref().unwrap_or("no answer")
        );
        set(s, READY, False, RUNTIME_NOT_REPORTING, &msg, o, now);
        set(s, DEGRADED, True, RUNTIME_NOT_REPORTING, &msg, o, now);
        return;
    }
    let Some(r) = report else {
        let msg = "the runtime pod is ready; waiting for its first status report";
        set(s, READY, False, "WaitingForRuntime", msg, o, now);
        return;
    };
    if let Some(why) = &o.account_halt {
        s.phase = SessionPhase::Halted;
        let msg = format!(
            "held by the account kill switch: {why}; set the PaperAccount's spec.resetRequest to release it"
        );
        set(s, READY, False, ACCOUNT_KILL_SWITCH, &msg, o, now);
        set(s, PROGRESSING, False, ACCOUNT_KILL_SWITCH, &msg, o, now);
        return;
    }
    s.phase = session_phase_of(r.phase);
    let want_paused = o.desired == DesiredState::Paused;
    match (want_paused, r.phase) {
        (true, RuntimePhase::Paused) => {
            let msg = "the runtime is paused: no new entries; open positions keep their exits";
            set(s, READY, True, "Paused", msg, o, now);
            set(s, PROGRESSING, False, "Paused", msg, o, now);
        }
        (true, _) => {
            let msg = format!("asked the runtime to pause (it reports {:?})", r.phase);
            set(s, READY, False, "Pausing", &msg, o, now);
            set(s, PROGRESSING, True, "Pausing", &msg, o, now);
        }
        (false, RuntimePhase::Paused) => {
            let msg = "asked the runtime to resume trading (it reports Paused)";
            set(s, READY, False, "Resuming", msg, o, now);
            set(s, PROGRESSING, True, "Resuming", msg, o, now);
        }
        (false, _) if !r.ready => {
            let msg = r.message.clone().unwrap_or_else(|| {
                if r.ledger.reachable {
                    "the runtime is not ready: its market data is stale".into()
                } else {
                    format!(
                        "the runtime is not ready: its ledger is unreachable ({})",
                        r.ledger.reason.as_deref().unwrap_or("no reason given")
                    )
                }
            });
            set(s, READY, False, "RuntimeNotReady", &msg, o, now);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use paperbot_crds::{
        BreakerStatus,
        runtime_api::{LedgerHealthStatus, RuntimeStatus},
    };
    use rust_decimal_macros::dec;

    use super::*;
    use crate::conditions::desired_session_status;
    use crate::sync::RuntimeObservation;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    /// (status, reason, message) of a condition.
    fn cond(s: &BotSessionStatus, type_: &str) -> (String, String, String) {
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {:?}", s.conditions));
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    fn sr(s: &BotSessionStatus, type_: &str) -> (String, String) {
        let (st, r, _) = cond(s, type_);
        (st, r)
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.into(), b.into())
    }

    fn status(phase: RuntimePhase) -> RuntimeStatus {
        RuntimeStatus {
            session: "bot".into(),
            phase,
            ready: true,
            equity: dec!(9500),
            ledger: LedgerHealthStatus {
                reachable: true,
                reason: None,
            },
            breakers: vec![BreakerStatus {
                name: "dailyLoss".into(),
                state: BreakerState::Closed,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn reporting(r: RuntimeStatus) -> Option<RuntimeObservation> {
        Some(RuntimeObservation {
            status: Some(r),
            ..Default::default()
        })
    }

    /// Pod ready and current, desired Running, with `runtime`.
    fn obs(runtime: Option<RuntimeObservation>) -> SessionObservation {
        SessionObservation {
            generation: Some(2),
            desired: DesiredState::Running,
            sts_replicas: Some(1),
            sts_ready_replicas: 1,
            sts_updated: true,
            pod_name: Some("bot-runtime-0".into()),
            pod_ready: true,
            runtime,
            ..Default::default()
        }
    }

    #[test]
    fn a_runtime_not_reporting_degrades_the_session() {
        let silent = RuntimeObservation {
            status: Some(status(RuntimePhase::Running)),
            failures: 3,
            last_error: Some("runtime unreachable: connection refused".into()),
            not_reporting: true,
        };
        let s = desired_session_status(None, &obs(Some(silent)), &at(10));
        assert_eq!(sr(&s, READY), pair("False", RUNTIME_NOT_REPORTING));
        assert_eq!(sr(&s, DEGRADED), pair("True", RUNTIME_NOT_REPORTING));
        let (_, _, msg) = cond(&s, DEGRADED);
        assert!(
            msg.starts_with("3 failed polls") && msg.contains("connection refused"),
            "{msg}"
        );
        assert_eq!(
            sr(&s, CIRCUIT_BREAKER_OPEN),
            pair("Unknown", RUNTIME_NOT_REPORTING)
        );
        assert_eq!(s.phase, SessionPhase::Running, "from the pods");
    }

    #[test]
    fn market_data_degraded_follows_failover_staleness_and_hand_back() {
        use paperbot_crds::runtime_api::{MarketDataSourceStatus, MarketDataStatus};
        let live = |active: Option<&str>, stale: &[&str]| {
            let mut r = status(RuntimePhase::Running);
            r.market_data = Some(MarketDataStatus {
                active_source: active.map(str::to_string),
                preferred_source: "gecko".into(),
                sources: vec![MarketDataSourceStatus {
                    name: "gecko".into(),
                    ..Default::default()
                }],
                stale_symbols: stale.iter().map(|s| s.to_string()).collect(),
                max_age_seconds: 60.0,
            });
            r
        };
        // Not live: no condition, no marketData.
        let s =
            desired_session_status(None, &obs(reporting(status(RuntimePhase::Running))), &at(1));
        assert!(s.market_data.is_none());
        assert!(s.conditions.iter().all(|c| c.type_ != MARKET_DATA_DEGRADED));
        // The preferred source serves: False.
        let s = desired_session_status(None, &obs(reporting(live(Some("gecko"), &[]))), &at(10));
        assert_eq!(
            sr(&s, MARKET_DATA_DEGRADED),
            pair("False", "PreferredSource")
        );
        let md = s.market_data.clone().unwrap();
        assert_eq!(
            (md.active_source.as_deref(), md.preferred_source.as_str()),
            (Some("gecko"), "gecko")
        );
        // A fallback serves: True FallbackSource, naming both.
        let s2 = desired_session_status(
            Some(&s),
            &obs(reporting(live(Some("binance"), &[]))),
            &at(20),
        );
        let (st, reason, msg) = cond(&s2, MARKET_DATA_DEGRADED);
        assert_eq!((st.as_str(), reason.as_str()), ("True", "FallbackSource"));
        assert!(msg.contains("binance") && msg.contains("gecko"), "{msg}");
        assert_eq!(sr(&s2, READY), pair("True", "Running"), "still trading");
        // Stale symbols: True StalePrices, naming them.
        let s3 = desired_session_status(
            Some(&s2),
            &obs(reporting(live(None, &["BTC-USD"]))),
            &at(30),
        );
        let (st, reason, msg) = cond(&s3, MARKET_DATA_DEGRADED);
        assert_eq!((st.as_str(), reason.as_str()), ("True", "StalePrices"));
        assert!(msg.contains("BTC-USD"), "{msg}");
        assert_eq!(s3.market_data.as_ref().unwrap().stale_symbols, ["BTC-USD"]);
        // The runtime stops reporting: Unknown.
        let silent = RuntimeObservation {
            status: Some(live(None, &["BTC-USD"])),
            failures: 3,
            last_error: Some("connection refused".into()),
            not_reporting: true,
        };
        let s4 = desired_session_status(Some(&s3), &obs(Some(silent)), &at(40));
        assert_eq!(
            sr(&s4, MARKET_DATA_DEGRADED),
            pair("Unknown", RUNTIME_NOT_REPORTING)
        );
        // Handed back: False again, with a new transition time.
        let s5 = desired_session_status(
            Some(&s4),
            &obs(reporting(live(Some("gecko"), &[]))),
            &at(50),
        );
        assert_eq!(
            sr(&s5, MARKET_DATA_DEGRADED),
            pair("False", "PreferredSource")
        );
        let c = s5
            .conditions
            .iter()
            .find(|c| c.type_ == MARKET_DATA_DEGRADED)
            .unwrap();
        assert_eq!(c.last_transition_time, at(50));
    }

    #[test]
    fn an_open_breaker_opens_the_condition_with_its_reason() {
        let mut r = status(RuntimePhase::Running);
        r.breakers.push(BreakerStatus {
            name: "maxDrawdown".into(),
            state: BreakerState::Open,
            trips: 1,
            reason: Some("drawdown 12% > 10%".into()),
            since: None,
        });
        let s = desired_session_status(None, &obs(reporting(r.clone())), &at(10));
        let (st, reason, msg) = cond(&s, CIRCUIT_BREAKER_OPEN);
        assert_eq!((st.as_str(), reason.as_str()), ("True", "BreakerOpen"));
        assert_eq!(msg, "open: maxDrawdown (drawdown 12% > 10%)");
        assert_eq!(s.breaker.as_deref(), Some("maxDrawdown"));
        assert_eq!(sr(&s, READY), pair("True", "Running"), "still trading");
        // Closed again: False, AllClosed.
        r.breakers[1].state = BreakerState::Closed;
        let s2 = desired_session_status(Some(&s), &obs(reporting(r)), &at(20));
        assert_eq!(sr(&s2, CIRCUIT_BREAKER_OPEN), pair("False", "AllClosed"));
        assert_eq!(s2.breaker.as_deref(), Some("None"));
    }

    #[test]
    fn a_runtime_not_ready_says_why() {
        let mut r = status(RuntimePhase::Running);
        r.ready = false;
        r.ledger = LedgerHealthStatus {
            reachable: false,
            reason: Some("connection refused".into()),
        };
        let s = desired_session_status(None, &obs(reporting(r)), &at(10));
        let (st, reason, msg) = cond(&s, READY);
        assert_eq!((st.as_str(), reason.as_str()), ("False", "RuntimeNotReady"));
        assert!(
            msg.contains("ledger is unreachable (connection refused)"),
            "{msg}"
        );
        assert_eq!(sr(&s, DEGRADED), pair("False", "AsExpected"));
    }

    #[test]
    fn completed_sticks_after_the_runtime_is_gone() {
        let mut done = status(RuntimePhase::Completed);
        done.equity = dec!(10250);
        let s = desired_session_status(None, &obs(reporting(done)), &at(10));
        assert_eq!(s.phase, SessionPhase::Completed);
        assert_eq!(sr(&s, READY), pair("True", "Completed"));
        assert_eq!(sr(&s, PROGRESSING), pair("False", "Completed"));
        // The poller forgot it and the pod is gone.
        let gone = SessionObservation {
            sts_replicas: Some(0),
            sts_ready_replicas: 0,
            pod_name: None,
            pod_ready: false,
            ..obs(None)
        };
        let s2 = desired_session_status(Some(&s), &gone, &at(20));
        assert_eq!(s2.phase, SessionPhase::Completed);
        assert_eq!(sr(&s2, READY), pair("True", "Completed"));
        assert_eq!(s2.equity, s.equity, "the final figures stay");
        assert_eq!(sr(&s2, CIRCUIT_BREAKER_OPEN), pair("False", "AllClosed"));
        assert_eq!(s2.pod, None);
        let s3 = desired_session_status(Some(&s2), &gone, &at(30));
        assert!(
            !crate::conditions::status_differs(Some(&s2), &s3),
            "nothing more to write once ended and gone"
        );
    }

    #[test]
    fn the_account_kill_switch_halts_the_session() {
        let why = "account drawdown 21% from peak equity 12000 passed limits.maxDrawdownPct 20%";
        let o = SessionObservation {
            account_halt: Some(why.into()),
            ..obs(reporting(status(RuntimePhase::Paused)))
        };
        let s = desired_session_status(None, &o, &at(10));
        assert_eq!(s.phase, SessionPhase::Halted);
        let (st, reason, msg) = cond(&s, READY);
        assert_eq!(
            (st.as_str(), reason.as_str()),
            ("False", ACCOUNT_KILL_SWITCH)
        );
        assert!(msg.contains(why) && msg.contains("resetRequest"), "{msg}");
        assert_eq!(sr(&s, PROGRESSING), pair("False", ACCOUNT_KILL_SWITCH));
        assert_eq!(sr(&s, DEGRADED), pair("False", "AsExpected"));
        // Released: Running again once the runtime resumes.
        let released = obs(reporting(status(RuntimePhase::Running)));
        let s2 = desired_session_status(Some(&s), &released, &at(20));
        assert_eq!(s2.phase, SessionPhase::Running);
        assert_eq!(sr(&s2, READY), pair("True", "Running"));
    }

    #[test]
    fn a_runtime_that_halted_or_failed_ends_the_session() {
        let mut halted = status(RuntimePhase::Halted);
        halted.message = Some("kill switch: daily loss 6% > 5%".into());
        let s = desired_session_status(None, &obs(reporting(halted)), &at(10));
        assert_eq!(s.phase, SessionPhase::Halted);
        assert_eq!(
            cond(&s, READY),
            (
                "False".into(),
                "Halted".into(),
                "kill switch: daily loss 6% > 5%".into()
            )
        );
        let failed = status(RuntimePhase::Failed);
        let s = desired_session_status(None, &obs(reporting(failed)), &at(10));
        assert_eq!(s.phase, SessionPhase::Failed);
        assert_eq!(sr(&s, DEGRADED), pair("True", "RuntimeFailed"));
    }

    #[test]
    fn stopping_waits_for_the_runtime_to_end_the_session() {
        let o = SessionObservation {
            desired: DesiredState::Stopped,
            ..obs(reporting(status(RuntimePhase::Running)))
        };
        let s = desired_session_status(None, &o, &at(10));
        assert_eq!(s.phase, SessionPhase::Stopped);
        assert_eq!(sr(&s, READY), pair("False", "Stopping"));
        assert_eq!(sr(&s, PROGRESSING), pair("True", "Stopping"));
        let o = SessionObservation {
            desired: DesiredState::Stopped,
            ..obs(reporting(status(RuntimePhase::Stopped)))
        };
        let s2 = desired_session_status(Some(&s), &o, &at(20));
        assert_eq!(s2.phase, SessionPhase::Stopped);
        assert_eq!(sr(&s2, READY), pair("True", "Stopped"));
    }
}
