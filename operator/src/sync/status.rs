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

use super::project::{apply_figures, session_phase_of};
use crate::conditions::{
    CIRCUIT_BREAKER_OPEN, ConditionStatus, DEGRADED, PROGRESSING, READY, SessionObservation,
    set_condition,
};

/// Reason of conditions while the runtime does not answer.
pub const RUNTIME_NOT_REPORTING: &str = "RuntimeNotReporting";
/// Reason of `Ready=False` while sessions of the account are held.
pub const ACCOUNT_KILL_SWITCH: &str = "AccountKillSwitch";

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
    if obs.is_none()
        && pods_current
        && let Some(prev) = old
        && prev.equity.is_some()
        && prev.observed_generation == o.generation
        && matches!(prev.phase, SessionPhase::Running | SessionPhase::Paused)
    {
        // Not polled yet by this operator process (it just started): the
        // synced status stands until the first poll.
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
