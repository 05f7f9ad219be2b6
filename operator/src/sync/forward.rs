//! Declarative control: what the spec asks of a running session's runtime,
//! forwarded to its API once.
//!
//! | spec / account | runtime | request |
//! |---|---|---|
//! | `desiredState: Paused`, or the account kill switch engaged | Running | `POST /v1/pause` |
//! | `desiredState: Running`, kill switch released | Paused | `POST /v1/resume` |
//! | `desiredState: Stopped` | not ended | `POST /v1/stop` (then the pod is scaled to zero) |
//! | `resetRequest` ≠ `status.observedResetRequest` | breakers open | `POST /v1/breakers/{name}/reset` for each, then acknowledged |
//! | StrategyConfig `metadata.generation` ≠ the runtime's `strategyRevision` | any | `POST /v1/config` (hot reload: no new pod) |
//!
//! Nothing is sent to a runtime that has not reported, is not reporting, or
//! has ended; a failed request is retried at the next reconcile (the spec
//! still differs from what the runtime reports). Requests are idempotent on
//! the runtime side, so a retry after a lost answer is harmless.

use paperbot_crds::{
    BotSession, BreakerState, DesiredState, StrategyConfig,
    runtime_api::{
        CONFIG_PATH, ConfigUpdate, PAUSE_PATH, RESUME_PATH, RuntimePhase, STOP_PATH,
        breaker_reset_path,
    },
};

use super::project::RuntimeObservation;

/// One request to a runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `POST /v1/pause`.
    Pause,
    /// `POST /v1/resume`.
    Resume,
    /// `POST /v1/stop`.
    Stop,
    /// `POST /v1/breakers/{name}/reset`.
    ResetBreaker(String),
    /// `POST /v1/config` with the StrategyConfig at this generation.
    Reload(i64),
}

impl Request {
    /// The request's path.
    pub fn path(&self) -> String {
        match self {
            Request::Pause => PAUSE_PATH.into(),
            Request::Resume => RESUME_PATH.into(),
            Request::Stop => STOP_PATH.into(),
            Request::ResetBreaker(name) => breaker_reset_path(name),
            Request::Reload(_) => CONFIG_PATH.into(),
        }
    }
}

/// What to send, and the reset request to acknowledge once it is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Requests, in order.
    pub requests: Vec<Request>,
    /// The `spec.resetRequest` to record as observed when every request
    /// succeeded (`None`: nothing to acknowledge).
    pub acknowledge_reset: Option<String>,
}

/// What `session` asks of its runtime, given its last report and whether
/// its account's kill switch holds it.
pub fn plan(
    session: &BotSession,
    strategy: &StrategyConfig,
    account_halted: bool,
    runtime: Option<&RuntimeObservation>,
) -> Plan {
    let mut p = Plan::default();
    let Some(obs) = runtime.filter(|o| !o.not_reporting) else {
        return p;
    };
    let Some(r) = &obs.status else {
        return p;
    };
    let observed_reset = session
        .status
        .as_ref()
        .and_then(|s| s.observed_reset_request.clone());
    let wanted_reset = session.spec.reset_request.clone();
    if r.phase.is_final() || r.phase == RuntimePhase::Starting {
        // An ended session takes no requests; acknowledging a reset there
        // would lie, so it stays pending (visible in status).
        return p;
    }
    if session.spec.desired_state == DesiredState::Stopped {
        p.requests.push(Request::Stop);
        return p;
    }
    let hold = account_halted || session.spec.desired_state == DesiredState::Paused;
    match (hold, r.phase) {
        (true, RuntimePhase::Running) => p.requests.push(Request::Pause),
        (false, RuntimePhase::Paused) => p.requests.push(Request::Resume),
        _ => {}
    }
    if let Some(generation) = strategy.metadata.generation
        && r.strategy_revision.as_deref() != Some(generation.to_string().as_str())
    {
        p.requests.push(Request::Reload(generation));
    }
    if wanted_reset.is_some() && wanted_reset != observed_reset {
        for b in &r.breakers {
            if b.state != BreakerState::Closed {
                p.requests.push(Request::ResetBreaker(b.name.clone()));
            }
        }
        p.acknowledge_reset = wanted_reset;
    }
    p
}

/// The body of a [`Request::Reload`].
pub fn reload_body(strategy: &StrategyConfig, generation: i64) -> ConfigUpdate {
    ConfigUpdate {
        strategy: strategy.spec.clone(),
        revision: Some(generation.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paperbot_crds::{BreakerStatus, runtime_api::RuntimeStatus};

    fn session(desired: &str, reset: Option<&str>, observed: Option<&str>) -> BotSession {
        let mut s: BotSession = serde_yaml::from_str(&format!(
            r#"apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {{name: a, namespace: ns, uid: u}}
spec:
  accountRef: {{name: acct}}
  strategyRef: {{name: strat}}
  allocation: "100"
  symbols: [BTC-USD]
  desiredState: {desired}
  marketData: {{source: Simulated, simulated: {{seed: 1, candles: 10}}}}
"#
        ))
        .unwrap();
        s.spec.reset_request = reset.map(Into::into);
        s.status = Some(paperbot_crds::BotSessionStatus {
            observed_reset_request: observed.map(Into::into),
            ..Default::default()
        });
        s
    }

    fn strategy(generation: i64) -> StrategyConfig {
        let mut st: StrategyConfig = serde_yaml::from_str(
            "apiVersion: paperbot.io/v1alpha1\nkind: StrategyConfig\nmetadata: {name: strat, namespace: ns}\nspec: {signals: {rsi: {}}}\n",
        )
        .unwrap();
        st.metadata.generation = Some(generation);
        st
    }

    fn report(phase: RuntimePhase, open: &[&str], revision: Option<&str>) -> RuntimeObservation {
        RuntimeObservation {
            status: Some(RuntimeStatus {
                phase,
                breakers: ["dailyLoss", "maxDrawdown"]
                    .iter()
                    .map(|n| BreakerStatus {
                        name: (*n).into(),
                        state: if open.contains(n) {
                            BreakerState::Open
                        } else {
                            BreakerState::Closed
                        },
                        ..Default::default()
                    })
                    .collect(),
                strategy_revision: revision.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn in_sync_sends_nothing() {
        let r = report(RuntimePhase::Running, &[], Some("1"));
        let p = plan(
            &session("Running", None, None),
            &strategy(1),
            false,
            Some(&r),
        );
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn pause_resume_and_the_account_hold() {
        let running = report(RuntimePhase::Running, &[], Some("1"));
        let paused = report(RuntimePhase::Paused, &[], Some("1"));
        let st = strategy(1);
        assert_eq!(
            plan(&session("Paused", None, None), &st, false, Some(&running)).requests,
            [Request::Pause]
        );
        assert_eq!(
            plan(&session("Running", None, None), &st, false, Some(&paused)).requests,
            [Request::Resume]
        );
        assert_eq!(
            plan(&session("Running", None, None), &st, true, Some(&running)).requests,
            [Request::Pause],
            "the account kill switch holds a session that is desired Running"
        );
        assert!(
            plan(&session("Running", None, None), &st, true, Some(&paused))
                .requests
                .is_empty()
        );
    }

    #[test]
    fn reset_request_resets_open_breakers_once() {
        let r = report(RuntimePhase::Running, &["dailyLoss"], Some("1"));
        let p = plan(
            &session("Running", Some("r1"), None),
            &strategy(1),
            false,
            Some(&r),
        );
        assert_eq!(p.requests, [Request::ResetBreaker("dailyLoss".into())]);
        assert_eq!(p.acknowledge_reset.as_deref(), Some("r1"));
        assert_eq!(
            Request::ResetBreaker("dailyLoss".into()).path(),
            "/v1/breakers/dailyLoss/reset"
        );
        // Acknowledged: never again, even with the breaker open again.
        let p = plan(
            &session("Running", Some("r1"), Some("r1")),
            &strategy(1),
            false,
            Some(&r),
        );
        assert!(p.requests.is_empty() && p.acknowledge_reset.is_none());
        // Nothing open: acknowledged without a request.
        let closed = report(RuntimePhase::Running, &[], Some("1"));
        let p = plan(
            &session("Running", Some("r2"), Some("r1")),
            &strategy(1),
            false,
            Some(&closed),
        );
        assert!(p.requests.is_empty());
        assert_eq!(p.acknowledge_reset.as_deref(), Some("r2"));
    }

    #[test]
    fn a_new_strategy_generation_is_hot_reloaded() {
        let r = report(RuntimePhase::Running, &[], Some("1"));
        let p = plan(
            &session("Running", None, None),
            &strategy(2),
            false,
            Some(&r),
        );
        assert_eq!(p.requests, [Request::Reload(2)]);
        let body = reload_body(&strategy(2), 2);
        assert_eq!(body.revision.as_deref(), Some("2"));
    }

    #[test]
    fn stop_wins_and_ended_or_silent_runtimes_get_nothing() {
        let r = report(RuntimePhase::Running, &["dailyLoss"], Some("1"));
        let p = plan(
            &session("Stopped", Some("x"), None),
            &strategy(2),
            false,
            Some(&r),
        );
        assert_eq!(p.requests, [Request::Stop]);
        let done = report(RuntimePhase::Completed, &["dailyLoss"], Some("1"));
        assert_eq!(
            plan(
                &session("Paused", Some("x"), None),
                &strategy(2),
                false,
                Some(&done)
            ),
            Plan::default()
        );
        let mut silent = r.clone();
        silent.not_reporting = true;
        assert_eq!(
            plan(
                &session("Paused", None, None),
                &strategy(2),
                false,
                Some(&silent)
            ),
            Plan::default()
        );
        assert_eq!(
            plan(&session("Paused", None, None), &strategy(2), false, None),
            Plan::default()
        );
    }
}
