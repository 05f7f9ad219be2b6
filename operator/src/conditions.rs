//! Status conditions and phase of a BotSession, computed as pure values from
//! the previous status and what the reconciler observed (no client, no clock:
//! the current time is an argument).
//!
//! The conditions follow the `metav1.Condition` conventions that Flux, Argo CD
//! and `kubectl wait --for=condition=Ready` rely on:
//!
//! - [`READY`] is `True` only when the session is in the state the user asked
//!   for: trading with the current configuration (`Running`), or scaled down
//!   (`Paused`, `Stopped`).
//! - [`PROGRESSING`] is `True` while the operator is moving towards that state
//!   (creating, starting, rolling out, scaling down) and `False` when it got
//!   there or cannot get there without a change.
//! - [`DEGRADED`] is `True` when something is wrong that needs a human: an
//!   invalid spec, or a runtime container that cannot run (crash loop, image
//!   pull failure).
//! - [`CIRCUIT_BREAKER_OPEN`] is `Unknown` (reason `RuntimeNotReporting`)
//!   until the runtime reports its breakers.
//! - [`LEDGER_STORAGE_OUTDATED`] is `True` when the configuration asks for
//!   other ledger storage than the one the session keeps (fixed when its
//!   runtime was created, see [`crate::ledger`]); `False` says where the
//!   ledger is.
//!
//! Every condition carries the observed `metadata.generation`, and its
//! `lastTransitionTime` moves only when its status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use paperbot_crds::{
    BotSessionStatus, DesiredState, PaperAccountStatus, SessionPhase, StrategyConfigStatus,
};

pub use crate::problem::INVALID_SPEC;
use crate::problem::Problem;

/// `True` when the session is in its desired state.
pub const READY: &str = "Ready";
/// `True` while the operator is moving the session towards its desired state.
pub const PROGRESSING: &str = "Progressing";
/// `True` when the session cannot run as asked without a human.
pub const DEGRADED: &str = "Degraded";
/// `True` while one of the session's circuit breakers is open.
pub const CIRCUIT_BREAKER_OPEN: &str = "CircuitBreakerOpen";
/// `True` when the configured ledger storage differs from the one the
/// session keeps; `False` (reason `AsConfigured`) names where the ledger is.
pub const LEDGER_STORAGE_OUTDATED: &str = "LedgerStorageOutdated";
/// Reason of [`LEDGER_STORAGE_OUTDATED`] = `True`.
pub const STORAGE_FIXED_AT_CREATION: &str = "StorageFixedAtCreation";

/// Container waiting reasons that mean the runtime cannot run without a
/// change (phase `Failed`, `Degraded=True`); any other waiting reason (e.g.
/// `ContainerCreating`) counts as still starting.
pub const DEGRADING_WAITING_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Container waiting reasons of a normal start, left out of the `Ready`
/// message so that it does not change at each step.
pub const NORMAL_START_WAITING_REASONS: &[&str] = &["ContainerCreating", "PodInitializing"];

/// Summary written to `status.breaker` until the runtime reports breakers.
pub const NO_BREAKER: &str = "None";

/// Status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known (yet).
    Unknown,
}

impl ConditionStatus {
    /// `"True"`, `"False"` or `"Unknown"`, as written in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// Upsert the condition of type `type_` in `conds`.
///
/// A new condition gets `now` as `lastTransitionTime`; an existing one keeps
/// its `lastTransitionTime` unless its status changes. `reason` must be a
/// CamelCase identifier (`metav1.Condition` requires one). Returns whether
/// anything — status, reason, message or observedGeneration — changed (or
/// the condition was added).
pub fn set_condition(
    conds: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> bool {
    let status = status.as_str();
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let changed = c.status != status
                || c.reason != reason
                || c.message != message
                || c.observed_generation != generation;
            if c.status != status {
                c.status = status.to_string();
                c.last_transition_time = now.clone();
            }
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = generation;
            changed
        }
        None => {
            conds.push(Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: reason.to_string(),
                message: message.to_string(),
                observed_generation: generation,
                last_transition_time: now.clone(),
            });
            true
        }
    }
}

/// Whether two condition lists hold the same conditions (in any order),
/// comparing type, status, reason, message and observedGeneration but not
/// `lastTransitionTime`.
pub fn conditions_equal_ignoring_time(a: &[Condition], b: &[Condition]) -> bool {
    fn key(c: &Condition) -> (&str, &str, &str, &str, Option<i64>) {
        (
            &c.type_,
            &c.status,
            &c.reason,
            &c.message,
            c.observed_generation,
        )
    }
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// What the reconciler observed about one session and its children.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionObservation {
    /// `metadata.generation` of the session.
    pub generation: Option<i64>,
    /// `spec.desiredState`.
    pub desired: DesiredState,
    /// Why the session cannot run. Report only problems that block the
    /// desired state (e.g. not `InsufficientFunds` for a Stopped session): a
    /// problem wins over everything else observed.
    pub problem: Option<Problem>,
    /// The runtime StatefulSet's `status.replicas` (pods that exist), `0` when
    /// it has no status yet; `None` when there is no StatefulSet.
    pub sts_replicas: Option<i32>,
    /// The StatefulSet's `status.readyReplicas` (0 when unset); a ready
    /// replica counts as a ready runtime even when the pod was not read.
    pub sts_ready_replicas: i32,
    /// Whether the StatefulSet reports the current template rolled out: it
    /// observed its generation and its pod runs the update revision.
    pub sts_updated: bool,
    /// Whether the pod is known to run an older template revision than the
    /// StatefulSet's update revision (a rollout is under way). Unknown — the
    /// StatefulSet has not reported on its current generation yet — is not
    /// outdated: a new pod that is ready before its StatefulSet says so is
    /// still starting, not rolling out.
    pub pod_outdated: bool,
    /// Name of the runtime pod: the pod when it exists, or the one the
    /// StatefulSet is to run (`<statefulset>-0`, while it asks for a replica),
    /// so that the status names it from the start and does not change when
    /// the pod appears.
    pub pod_name: Option<String>,
    /// The pod's `status.phase` (`Pending`, `Running`, ...).
    pub pod_phase: Option<String>,
    /// Whether the pod's `Ready` condition is `True`.
    pub pod_ready: bool,
    /// Waiting reason of the runtime container, e.g. `CrashLoopBackOff`.
    pub pod_waiting_reason: Option<String>,
    /// Where the ledger is, when the children were applied in this reconcile
    /// (`None` while a problem blocks the session).
    pub ledger: Option<LedgerObservation>,
    /// What the runtime's API reported (see [`crate::sync`]); `None` before
    /// its first poll.
    pub runtime: Option<crate::sync::RuntimeObservation>,
    /// Why the account kill switch holds the session, while it does.
    pub account_halt: Option<String>,
}

/// What the reconciler knows about a session's ledger storage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LedgerObservation {
    /// Where the ledger is, for a person, e.g. `SQLite on
    /// PersistentVolumeClaim ledger-bot-runtime-0 (1Gi, default storage class)`.
    pub location: String,
    /// The configured storage the session does not use because its storage
    /// is fixed at creation, described like `location`.
    pub outdated: Option<String>,
    /// `(name, phase)` of the ledger claim while it exists but is not `Bound`.
    pub unbound_claim: Option<(String, String)>,
}

impl SessionObservation {
    /// The container's waiting reason when it is one of
    /// [`DEGRADING_WAITING_REASONS`].
    fn degrading_reason(&self) -> Option<&str> {
        self.pod_waiting_reason
            .as_deref()
            .filter(|r| DEGRADING_WAITING_REASONS.contains(r))
    }

    /// Whether the runtime pod is ready: its `Ready` condition, or the
    /// StatefulSet counting a ready replica when the pod was not read.
    fn runtime_ready(&self) -> bool {
        self.pod_ready || self.sts_ready_replicas > 0
    }

    /// Whether nothing runs any more: no StatefulSet, or one with no pods.
    fn scaled_down(&self) -> bool {
        self.sts_replicas.unwrap_or(0) == 0
    }
}

/// The phase of a session from what was observed:
///
/// - a problem: `Failed` for `InvalidSpec`, else `Pending`;
/// - desired `Running`: no StatefulSet → `Pending`; container waiting for a
///   [degrading reason](DEGRADING_WAITING_REASONS) → `Failed`; pod ready (or
///   the StatefulSet counting a ready replica) and rollout complete →
///   `Running`; otherwise (including a ready pod of an older configuration)
///   → `Starting`;
/// - desired `Paused` → `Paused`, desired `Stopped` → `Stopped` (also while
///   scaling down; the `Ready` condition tells when it is done).
///
/// `Halted` and `Completed` come from the runtime's reports, not from here.
pub fn session_phase(o: &SessionObservation) -> SessionPhase {
    if let Some(problem) = &o.problem {
        return if problem.is_invalid_spec() {
            SessionPhase::Failed
        } else {
            SessionPhase::Pending
        };
    }
    match o.desired {
        DesiredState::Stopped => SessionPhase::Stopped,
        DesiredState::Running | DesiredState::Paused => {
            if o.sts_replicas.is_none() {
                SessionPhase::Pending
            } else if o.degrading_reason().is_some() {
                SessionPhase::Failed
            } else if o.runtime_ready() && o.sts_updated {
                if o.desired == DesiredState::Paused {
                    SessionPhase::Paused
                } else {
                    SessionPhase::Running
                }
            } else {
                SessionPhase::Starting
            }
        }
    }
}

/// One condition to set: status, reason, message.
struct Want {
    status: ConditionStatus,
    reason: String,
    message: String,
}

fn want(status: ConditionStatus, reason: &str, message: impl Into<String>) -> Want {
    Want {
        status,
        reason: reason.to_string(),
        message: message.into(),
    }
}

const AS_EXPECTED: &str = "AsExpected";

/// Ready, Progressing and Degraded for an observation.
fn wanted_conditions(o: &SessionObservation) -> [Want; 3] {
    use ConditionStatus::{False, True};
    let healthy = || want(False, AS_EXPECTED, "no problems observed");
    if let Some(problem) = &o.problem {
        let (reason, message) = (problem.reason(), problem.to_string());
        let degraded = if problem.is_invalid_spec() {
            want(True, reason, message.clone())
        } else {
            healthy()
        };
        return [
            want(False, reason, message),
            want(False, reason, "waiting for the problem to be fixed"),
            degraded,
        ];
    }
    let pod = o.pod_name.as_deref().unwrap_or("the runtime pod");
    match o.desired {
        DesiredState::Stopped => {
            let (state, done) = ("Stopped", "the session is stopped: no runtime pod runs");
            if o.scaled_down() {
                [
                    want(True, state, done),
                    want(False, "ScaledDown", done),
                    healthy(),
                ]
            } else {
                let msg = format!("scaling down to 0 replicas: waiting for {pod} to stop");
                [
                    want(False, "ScalingDown", msg.clone()),
                    want(True, "ScalingDown", msg),
                    healthy(),
                ]
            }
        }
        DesiredState::Running | DesiredState::Paused => {
            if o.sts_replicas.is_none() {
                let msg = "creating the runtime StatefulSet";
                return [
                    want(False, "Creating", msg),
                    want(True, "Creating", msg),
                    healthy(),
                ];
            }
            if let Some(reason) = o.degrading_reason() {
                let msg = format!("container bot-runtime of {pod} is waiting: {reason}");
                return [
                    want(False, reason, msg.clone()),
                    want(False, reason, msg.clone()),
                    want(True, reason, msg),
                ];
            }
            let ready = o.runtime_ready();
            if ready && o.sts_updated {
                let msg = format!("{pod} is ready and runs the current configuration");
                return [
                    want(True, "Running", msg.clone()),
                    want(False, "RolloutComplete", msg),
                    healthy(),
                ];
            }
            // The message names what is waited for, not each step of a normal
            // start (scheduled, creating the container, running): the status is
            // written once when the session starts and once when it is ready.
            let rolling = ready && o.pod_outdated;
            let msg = if rolling {
                format!("rolling out the current configuration: {pod} runs an older one")
            } else {
                let unbound = o.ledger.as_ref().and_then(|l| l.unbound_claim.as_ref());
                let waiting = o
                    .pod_waiting_reason
                    .as_deref()
                    .filter(|w| !NORMAL_START_WAITING_REASONS.contains(w));
                match (unbound, waiting) {
                    (Some((claim, phase)), _) => format!(
                        "{pod} waits for its ledger volume: PersistentVolumeClaim {claim} is {phase} \
                         (no PersistentVolume bound yet: check that its storage class exists and provisions volumes)"
                    ),
                    (None, Some(w)) => format!("{pod} is starting: {w}"),
                    (None, None) => format!("{pod} is starting"),
                }
            };
            let reason = if rolling { "RollingOut" } else { "Starting" };
            [
                want(False, reason, msg.clone()),
                want(True, reason, msg),
                healthy(),
            ]
        }
    }
}

/// The status to write for a session: the phase ([`session_phase`]), the
/// pod name, `observedGeneration`, and the conditions [`READY`],
/// [`PROGRESSING`] and [`DEGRADED`] (see the module docs), plus
/// [`CIRCUIT_BREAKER_OPEN`]: `Unknown` with reason `RuntimeNotReporting`
/// when absent, otherwise kept as it is (only its observedGeneration moves),
/// and [`LEDGER_STORAGE_OUTDATED`] when the observation has the ledger
/// (kept as it is otherwise).
/// `breaker` becomes `"None"` when unset. Every other field of `old` (P&L,
/// trades, breakers, autopilot, heartbeat, other conditions) is kept as it
/// was.
///
/// Applying it again with the same observation gives an equal status (see
/// [`status_differs`]), whatever `now` is.
pub fn desired_session_status(
    old: Option<&BotSessionStatus>,
    o: &SessionObservation,
    now: &Time,
) -> BotSessionStatus {
    let mut s = old.cloned().unwrap_or_default();
    s.phase = session_phase(o);
    s.pod = o.pod_name.clone();
    s.observed_generation = o.generation;
    if s.breaker.is_none() {
        s.breaker = Some(NO_BREAKER.to_string());
    }
    let [ready, progressing, degraded] = wanted_conditions(o);
    for (type_, w) in [
        (READY, ready),
        (PROGRESSING, progressing),
        (DEGRADED, degraded),
    ] {
        set_condition(
            &mut s.conditions,
            type_,
            w.status,
            &w.reason,
            &w.message,
            o.generation,
            now,
        );
    }
    let breaker = s
        .conditions
        .iter()
        .find(|c| c.type_ == CIRCUIT_BREAKER_OPEN)
        .map(|c| {
            let status = match c.status.as_str() {
                "True" => ConditionStatus::True,
                "False" => ConditionStatus::False,
                _ => ConditionStatus::Unknown,
            };
            (status, c.reason.clone(), c.message.clone())
        });
    let (status, reason, message) = breaker.unwrap_or_else(|| {
        (
            ConditionStatus::Unknown,
            "RuntimeNotReporting".to_string(),
            "the runtime does not report its circuit breakers yet".to_string(),
        )
    });
    set_condition(
        &mut s.conditions,
        CIRCUIT_BREAKER_OPEN,
        status,
        &reason,
        &message,
        o.generation,
        now,
    );
    if let Some(ledger) = &o.ledger {
        let (status, reason, message) = ledger_condition(ledger);
        set_condition(
            &mut s.conditions,
            LEDGER_STORAGE_OUTDATED,
            status,
            reason,
            &message,
            o.generation,
            now,
        );
    }
    crate::sync::status::overlay(&mut s, old, o, now);
    // The overlay may set a condition over the pods' one of another status;
    // the transition time compares with the status written before, so it
    // moves only when the written status flips.
    if let Some(old) = old {
        for c in &mut s.conditions {
            if let Some(prev) = old
                .conditions
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
            {
                c.last_transition_time = prev.last_transition_time.clone();
            }
        }
    }
    s
}

/// Status, reason and message of [`LEDGER_STORAGE_OUTDATED`].
fn ledger_condition(l: &LedgerObservation) -> (ConditionStatus, &'static str, String) {
    match &l.outdated {
        Some(configured) => (
            ConditionStatus::True,
            STORAGE_FIXED_AT_CREATION,
            format!(
                "the ledger stays in {}; the configuration now asks for {configured}, which applies \
                 to new sessions: a session's ledger storage is fixed when its runtime is created",
                l.location
            ),
        ),
        None => (
            ConditionStatus::False,
            AS_EXPECTED_STORAGE,
            format!("the ledger is in {}", l.location),
        ),
    }
}

const AS_EXPECTED_STORAGE: &str = "AsConfigured";

/// A status with `metav1.Condition`s, compared by [`status_differs`].
pub trait WithConditions: Clone + PartialEq {
    /// The conditions, to compare without their `lastTransitionTime`.
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
}

impl WithConditions for BotSessionStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

impl WithConditions for PaperAccountStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

impl WithConditions for StrategyConfigStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

/// Whether writing `new` over `old` changes anything but condition
/// timestamps — the one status comparator of every controller. `true` when
/// there is no old status; a reconcile of an unchanged object must find
/// `false` and write nothing. Conditions compare in any order
/// ([`conditions_equal_ignoring_time`]); every other field compares exactly.
pub fn status_differs<S: WithConditions>(old: Option<&S>, new: &S) -> bool {
    let Some(old) = old else {
        return true;
    };
    let (mut a, mut b) = (old.clone(), new.clone());
    let (ca, cb) = (
        std::mem::take(a.conditions_mut()),
        std::mem::take(b.conditions_mut()),
    );
    !conditions_equal_ignoring_time(&ca, &cb) || a != b
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use paperbot_crds::{
        BreakerState, BreakerStatus,
        runtime_api::{RuntimePhase, RuntimeStatus},
    };
    use rust_decimal_macros::dec;

    use crate::sync::RuntimeObservation;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    fn cond<'a>(s: &'a BotSessionStatus, type_: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"))
    }

    /// (status, reason) of a condition.
    fn sr(s: &BotSessionStatus, type_: &str) -> (String, String) {
        let c = cond(s, type_);
        (c.status.clone(), c.reason.clone())
    }

    fn pair(status: &str, reason: &str) -> (String, String) {
        (status.to_string(), reason.to_string())
    }

    /// A runtime's answer: `phase`, `ready`, two closed breakers.
    fn report(phase: RuntimePhase, ready: bool) -> RuntimeObservation {
        RuntimeObservation {
            status: Some(RuntimeStatus {
                session: "bot".into(),
                phase,
                ready,
                equity: dec!(10012.346),
                cash: dec!(9000),
                trades: 3,
                ledger: paperbot_crds::runtime_api::LedgerHealthStatus {
                    reachable: true,
                    reason: None,
                },
                breakers: ["dailyLoss", "maxDrawdown"]
                    .map(|n| BreakerStatus {
                        name: n.into(),
                        state: BreakerState::Closed,
                        ..Default::default()
                    })
                    .to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The pod is ready and current; the runtime has not been polled yet.
    fn pod_ready() -> SessionObservation {
        SessionObservation {
            generation: Some(4),
            desired: DesiredState::Running,
            sts_replicas: Some(1),
            sts_ready_replicas: 1,
            sts_updated: true,
            pod_name: Some("bot-runtime-0".into()),
            pod_phase: Some("Running".into()),
            pod_ready: true,
            ..Default::default()
        }
    }

    /// The pod is ready and current and the runtime reports Running, ready.
    fn running_ready() -> SessionObservation {
        SessionObservation {
            runtime: Some(report(RuntimePhase::Running, true)),
            ..pod_ready()
        }
    }

    fn invalid(message: &str) -> Problem {
        Problem::InvalidSpec {
            object: crate::problem::InvalidObject::Session,
            errors: vec![message.into()],
        }
    }

    fn status_of(o: &SessionObservation) -> BotSessionStatus {
        desired_session_status(None, o, &at(1_000))
    }

    #[test]
    fn set_condition_adds_a_new_condition() {
        let mut conds = Vec::new();
        assert!(set_condition(
            &mut conds,
            READY,
            ConditionStatus::False,
            "Starting",
            "pod starting",
            Some(1),
            &at(10)
        ));
        assert_eq!(
            conds,
            [Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "Starting".into(),
                message: "pod starting".into(),
                observed_generation: Some(1),
                last_transition_time: at(10),
            }]
        );
    }

    #[test]
    fn transition_time_kept_when_only_message_changes() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            READY,
            false.into(),
            "Starting",
            "a",
            Some(1),
            &at(10),
        );
        assert!(set_condition(
            &mut conds,
            READY,
            false.into(),
            "Starting",
            "b",
            Some(1),
            &at(20)
        ));
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].message, "b");
        assert_eq!(conds[0].last_transition_time, at(10));
    }

    #[test]
    fn transition_time_updated_when_status_flips() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            READY,
            false.into(),
            "Starting",
            "a",
            Some(1),
            &at(10),
        );
        assert!(set_condition(
            &mut conds,
            READY,
            true.into(),
            "Running",
            "a",
            Some(1),
            &at(20)
        ));
        assert_eq!(conds[0].status, "True");
        assert_eq!(conds[0].last_transition_time, at(20));
    }

    #[test]
    fn set_condition_reports_no_change_for_equal_values() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            READY,
            true.into(),
            "Running",
            "m",
            Some(1),
            &at(10),
        );
        let before = conds.clone();
        assert!(!set_condition(
            &mut conds,
            READY,
            true.into(),
            "Running",
            "m",
            Some(1),
            &at(99)
        ));
        assert_eq!(conds, before);
        assert!(set_condition(
            &mut conds,
            READY,
            true.into(),
            "Running",
            "m",
            Some(2),
            &at(99)
        ));
        assert_eq!(conds[0].observed_generation, Some(2));
        assert_eq!(conds[0].last_transition_time, at(10));
    }

    #[test]
    fn conditions_compare_without_time_or_order() {
        let mut a = Vec::new();
        set_condition(&mut a, READY, true.into(), "Running", "m", Some(1), &at(1));
        set_condition(
            &mut a,
            DEGRADED,
            false.into(),
            "AsExpected",
            "m",
            Some(1),
            &at(1),
        );
        let mut b = Vec::new();
        set_condition(
            &mut b,
            DEGRADED,
            false.into(),
            "AsExpected",
            "m",
            Some(1),
            &at(5),
        );
        set_condition(&mut b, READY, true.into(), "Running", "m", Some(1), &at(5));
        assert!(conditions_equal_ignoring_time(&a, &b));
        set_condition(
            &mut b,
            READY,
            true.into(),
            "Running",
            "other",
            Some(1),
            &at(5),
        );
        assert!(!conditions_equal_ignoring_time(&a, &b));
        assert!(!conditions_equal_ignoring_time(&a, &a[..1]));
    }

    #[test]
    fn running_ready_pod_is_running_and_ready() {
        let s = status_of(&running_ready());
        assert_eq!(s.phase, SessionPhase::Running);
        assert_eq!(s.pod.as_deref(), Some("bot-runtime-0"));
        assert_eq!(sr(&s, READY), pair("True", "Running"));
        assert_eq!(sr(&s, PROGRESSING), pair("False", "RolloutComplete"));
        assert_eq!(sr(&s, DEGRADED), pair("False", "AsExpected"));
        assert_eq!(sr(&s, CIRCUIT_BREAKER_OPEN), pair("False", "AllClosed"));
        assert_eq!(
            cond(&s, CIRCUIT_BREAKER_OPEN).message,
            "all 2 circuit breakers are closed"
        );
        assert_eq!(s.breaker.as_deref(), Some("None"));
        assert_eq!(s.equity.map(|e| e.to_string()).as_deref(), Some("10012.35"));
        assert_eq!(s.trades, 3);
        assert_eq!(s.conditions.len(), 4);
    }

    #[test]
    fn a_ready_pod_waits_for_the_runtimes_first_report() {
        let s = status_of(&pod_ready());
        assert_eq!(s.phase, SessionPhase::Running, "from the pods");
        assert_eq!(sr(&s, READY), pair("False", "WaitingForRuntime"));
        assert_eq!(sr(&s, DEGRADED), pair("False", "AsExpected"));
        assert_eq!(
            sr(&s, CIRCUIT_BREAKER_OPEN),
            pair("Unknown", "RuntimeNotReporting")
        );
        assert_eq!(s.equity, None, "no figures before a report");
        // A failed first poll says so, without RuntimeNotReporting yet.
        let o = SessionObservation {
            runtime: Some(RuntimeObservation {
                failures: 1,
                last_error: Some("runtime unreachable: connection refused".into()),
                ..Default::default()
            }),
            ..pod_ready()
        };
        let s = status_of(&o);
        assert_eq!(sr(&s, READY), pair("False", "WaitingForRuntime"));
        assert!(
            cond(&s, CIRCUIT_BREAKER_OPEN)
                .message
                .contains("connection refused"),
            "{:?}",
            cond(&s, CIRCUIT_BREAKER_OPEN)
        );
        // The report makes it ready.
        let s2 = desired_session_status(Some(&s), &running_ready(), &at(2_000));
        assert_eq!(sr(&s2, READY), pair("True", "Running"));
        assert_eq!(cond(&s2, READY).last_transition_time, at(2_000));
    }

    #[test]
    fn no_stateful_set_yet_is_pending_and_creating() {
        let o = SessionObservation {
            generation: Some(1),
            desired: DesiredState::Running,
            ..Default::default()
        };
        let s = status_of(&o);
        assert_eq!(s.phase, SessionPhase::Pending);
        assert_eq!(sr(&s, READY), pair("False", "Creating"));
        assert_eq!(sr(&s, PROGRESSING), pair("True", "Creating"));
        assert_eq!(sr(&s, DEGRADED), pair("False", "AsExpected"));
        assert_eq!(s.pod, None);
    }

    #[test]
    fn pod_not_ready_is_starting() {
        let o = SessionObservation {
            pod_ready: false,
            sts_ready_replicas: 0,
            pod_phase: Some("Pending".into()),
            pod_waiting_reason: Some("ContainerCreating".into()),
            ..running_ready()
        };
        let s = status_of(&o);
        assert_eq!(s.phase, SessionPhase::Starting);
        assert_eq!(sr(&s, READY), pair("False", "Starting"));
        assert_eq!(sr(&s, PROGRESSING), pair("True", "Starting"));
        assert_eq!(sr(&s, DEGRADED), pair("False", "AsExpected"));
        assert_eq!(
            cond(&s, READY).message,
            "bot-runtime-0 is starting",
            "the steps of a normal start stay out of the message"
        );
    }

    #[test]
    fn a_ready_replica_counts_when_the_pod_was_not_read() {
        let o = SessionObservation {
            pod_name: None,
            pod_phase: None,
            pod_ready: false,
            ..running_ready()
        };
        assert_eq!(session_phase(&o), SessionPhase::Running);
        let o = SessionObservation {
            sts_ready_replicas: 0,
            ..o
        };
        assert_eq!(session_phase(&o), SessionPhase::Starting);
        let s = status_of(&o);
        assert_eq!(cond(&s, READY).message, "the runtime pod is starting");
    }

    #[test]
    fn ready_pod_with_an_old_config_is_rolling_out() {
        let o = SessionObservation {
            sts_updated: false,
            pod_outdated: true,
            ..running_ready()
        };
        let s = status_of(&o);
        assert_eq!(s.phase, SessionPhase::Starting);
        assert_eq!(sr(&s, READY), pair("False", "RollingOut"));
        assert_eq!(sr(&s, PROGRESSING), pair("True", "RollingOut"));
    }

    #[test]
    fn a_ready_pod_before_its_stateful_set_reports_is_still_starting() {
        let starting = SessionObservation {
            pod_ready: false,
            sts_ready_replicas: 0,
            sts_updated: false,
            ..running_ready()
        };
        let first = status_of(&starting);
        // The pod is ready; the StatefulSet has not reported on it yet.
        let ready_early = SessionObservation {
            pod_ready: true,
            ..starting
        };
        let second = desired_session_status(Some(&first), &ready_early, &at(2_000));
        assert_eq!(sr(&second, READY), pair("False", "Starting"));
        assert!(
            !status_differs(Some(&first), &second),
            "nothing new to write"
        );
    }

    #[test]
    fn crash_loop_and_image_pull_failures_are_degraded() {
        for reason in ["CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull"] {
            let o = SessionObservation {
                pod_ready: false,
                pod_waiting_reason: Some(reason.into()),
                ..running_ready()
            };
            let s = status_of(&o);
            assert_eq!(s.phase, SessionPhase::Failed, "{reason}");
            assert_eq!(sr(&s, READY), pair("False", reason));
            assert_eq!(sr(&s, PROGRESSING), pair("False", reason));
            assert_eq!(sr(&s, DEGRADED), pair("True", reason));
            assert_eq!(
                cond(&s, DEGRADED).message,
                format!("container bot-runtime of bot-runtime-0 is waiting: {reason}")
            );
        }
    }

    #[test]
    fn invalid_spec_fails_and_degrades() {
        let o = SessionObservation {
            generation: Some(2),
            problem: Some(invalid("spec.symbols: must list one")),
            ..Default::default()
        };
        let s = status_of(&o);
        assert_eq!(s.phase, SessionPhase::Failed);
        assert_eq!(sr(&s, READY), pair("False", "InvalidSpec"));
        assert_eq!(
            cond(&s, READY).message,
            "BotSession: spec.symbols: must list one"
        );
        assert_eq!(sr(&s, PROGRESSING), pair("False", "InvalidSpec"));
        assert_eq!(sr(&s, DEGRADED), pair("True", "InvalidSpec"));
    }

    #[test]
    fn missing_refs_and_insufficient_funds_are_pending_not_degraded() {
        let problems = [
            Problem::AccountNotFound {
                account: "a".into(),
                namespace: "ns".into(),
            },
            Problem::StrategyNotFound {
                strategy: "s".into(),
                namespace: "ns".into(),
            },
            Problem::InsufficientFunds {
                account: "a".into(),
                allocation: 2.into(),
                needed: 3.into(),
                balance: 1.into(),
            },
        ];
        for problem in problems {
            let reason = problem.reason();
            let o = SessionObservation {
                problem: Some(problem),
                // A problem wins over a ready pod.
                ..running_ready()
            };
            let s = status_of(&o);
            assert_eq!(s.phase, SessionPhase::Pending, "{reason}");
            assert_eq!(sr(&s, READY), pair("False", reason));
            assert_eq!(sr(&s, PROGRESSING), pair("False", reason));
            assert_eq!(sr(&s, DEGRADED), pair("False", "AsExpected"));
        }
    }

    #[test]
    fn paused_keeps_the_pod_and_is_ready_once_the_runtime_reports_paused() {
        // Desired Paused, pod ready, nothing reported yet: Paused from the pods.
        let waiting = SessionObservation {
            desired: DesiredState::Paused,
            ..pod_ready()
        };
        let s = status_of(&waiting);
        assert_eq!(s.phase, SessionPhase::Paused);
        assert_eq!(sr(&s, READY), pair("False", "WaitingForRuntime"));
        // The runtime still trades: asked to pause.
        let pausing = SessionObservation {
            desired: DesiredState::Paused,
            ..running_ready()
        };
        let s1 = desired_session_status(Some(&s), &pausing, &at(2_000));
        assert_eq!(s1.phase, SessionPhase::Running, "what the runtime does");
        assert_eq!(sr(&s1, READY), pair("False", "Pausing"));
        assert_eq!(sr(&s1, PROGRESSING), pair("True", "Pausing"));
        // It reports Paused: ready, with its pod.
        let paused = SessionObservation {
            desired: DesiredState::Paused,
            runtime: Some(report(RuntimePhase::Paused, true)),
            ..pod_ready()
        };
        let s2 = desired_session_status(Some(&s1), &paused, &at(3_000));
        assert_eq!(s2.phase, SessionPhase::Paused);
        assert_eq!(sr(&s2, READY), pair("True", "Paused"));
        assert_eq!(cond(&s2, READY).last_transition_time, at(3_000));
        assert_eq!(sr(&s2, PROGRESSING), pair("False", "Paused"));
        assert_eq!(sr(&s2, DEGRADED), pair("False", "AsExpected"));
        assert_eq!(s2.pod.as_deref(), Some("bot-runtime-0"), "the pod stays");
        // Resumed in the spec, the runtime still paused: resuming.
        let resuming = SessionObservation {
            desired: DesiredState::Running,
            ..paused
        };
        let s3 = desired_session_status(Some(&s2), &resuming, &at(4_000));
        assert_eq!(s3.phase, SessionPhase::Paused);
        assert_eq!(sr(&s3, READY), pair("False", "Resuming"));
        assert_eq!(sr(&s3, PROGRESSING), pair("True", "Resuming"));
    }

    #[test]
    fn stopped_is_ready_once_scaled_down() {
        let o = SessionObservation {
            generation: Some(7),
            desired: DesiredState::Stopped,
            sts_replicas: Some(0),
            ..Default::default()
        };
        let s = status_of(&o);
        assert_eq!(s.phase, SessionPhase::Stopped);
        assert_eq!(sr(&s, READY), pair("True", "Stopped"));
        assert_eq!(sr(&s, PROGRESSING), pair("False", "ScaledDown"));
        let scaling = SessionObservation {
            sts_replicas: Some(1),
            ..o
        };
        let s = status_of(&scaling);
        assert_eq!(s.phase, SessionPhase::Stopped);
        assert_eq!(sr(&s, READY), pair("False", "ScalingDown"));
        assert_eq!(sr(&s, PROGRESSING), pair("True", "ScalingDown"));
    }

    #[test]
    fn observed_generation_on_status_and_every_condition() {
        let s = status_of(&running_ready());
        assert_eq!(s.observed_generation, Some(4));
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(4))
        );
        let next = SessionObservation {
            generation: Some(5),
            ..running_ready()
        };
        let s2 = desired_session_status(Some(&s), &next, &at(5_000));
        assert_eq!(s2.observed_generation, Some(5));
        assert!(
            s2.conditions
                .iter()
                .all(|c| c.observed_generation == Some(5))
        );
        // Statuses did not flip, so no transition time moved.
        assert!(
            s2.conditions
                .iter()
                .all(|c| c.last_transition_time == at(1_000))
        );
        assert!(status_differs(Some(&s), &s2));
    }

    #[test]
    fn applying_twice_with_a_later_time_changes_nothing() {
        for o in [
            running_ready(),
            SessionObservation {
                desired: DesiredState::Paused,
                ..running_ready()
            },
            SessionObservation {
                problem: Some(invalid("bad")),
                ..running_ready()
            },
        ] {
            let first = desired_session_status(None, &o, &at(1_000));
            let second = desired_session_status(Some(&first), &o, &at(9_000));
            assert!(!status_differs(Some(&first), &second));
            assert_eq!(second, first, "not even a timestamp moves");
        }
    }

    #[test]
    fn before_the_first_poll_a_synced_status_stands() {
        // What the operator wrote before it restarted.
        let old = BotSessionStatus {
            phase: SessionPhase::Running,
            observed_generation: Some(4),
            equity: Some("10250.5".parse().unwrap()),
            realized_pnl: Some("250.5".parse().unwrap()),
            trades: 12,
            open_positions: 1,
            last_heartbeat: Some("2025-01-01T00:00:00Z".into()),
            breaker: Some("dailyLoss".into()),
            breakers: vec![BreakerStatus {
                name: "dailyLoss".into(),
                state: BreakerState::Open,
                trips: 1,
                ..Default::default()
            }],
            conditions: vec![
                Condition {
                    type_: CIRCUIT_BREAKER_OPEN.into(),
                    status: "True".into(),
                    reason: "DailyLoss".into(),
                    message: "dailyLoss is open".into(),
                    observed_generation: Some(3),
                    last_transition_time: at(500),
                },
                Condition {
                    type_: "Custom".into(),
                    status: "True".into(),
                    reason: "Other".into(),
                    message: String::new(),
                    observed_generation: Some(3),
                    last_transition_time: at(400),
                },
            ],
            ..Default::default()
        };
        // Restarted: the pod is ready and current, the runtime not polled yet.
        let s = desired_session_status(Some(&old), &pod_ready(), &at(1_000));
        assert_eq!(s.phase, SessionPhase::Running);
        assert_eq!(s.equity, old.equity);
        assert_eq!(s.realized_pnl, old.realized_pnl);
        assert_eq!(s.trades, 12);
        assert_eq!(s.open_positions, 1);
        assert_eq!(s.last_heartbeat, old.last_heartbeat);
        assert_eq!(s.breaker.as_deref(), Some("dailyLoss"));
        assert_eq!(s.breakers, old.breakers);
        let cb = cond(&s, CIRCUIT_BREAKER_OPEN);
        assert_eq!(
            (cb.status.as_str(), cb.reason.as_str()),
            ("True", "DailyLoss")
        );
        assert_eq!(cb.last_transition_time, at(500));
        assert_eq!(cb.observed_generation, Some(4));
        assert_eq!(cond(&s, "Custom"), &old.conditions[1]);
        assert_eq!(
            sr(&s, READY),
            pair("True", "Running"),
            "a condition not written before comes from the pods"
        );
    }

    #[test]
    fn an_operator_restart_writes_nothing_until_a_poll_changes_something() {
        for (desired, phase) in [
            (DesiredState::Running, RuntimePhase::Running),
            (DesiredState::Paused, RuntimePhase::Paused),
        ] {
            let synced = SessionObservation {
                desired,
                runtime: Some(report(phase, true)),
                ..pod_ready()
            };
            let written = status_of(&synced);
            let restarted = SessionObservation {
                desired,
                ..pod_ready()
            };
            let again = desired_session_status(Some(&written), &restarted, &at(9_000));
            assert!(
                !status_differs(Some(&written), &again),
                "{desired:?}: {:?}",
                again.conditions
            );
            // A new generation is not vouched for by the old report.
            let edited = SessionObservation {
                generation: Some(5),
                ..restarted
            };
            let s = desired_session_status(Some(&written), &edited, &at(9_000));
            assert_eq!(sr(&s, READY), pair("False", "WaitingForRuntime"));
        }
    }

    #[test]
    fn the_pods_win_while_they_start_roll_out_or_fail() {
        // A cached report of a runtime whose pod crash-loops.
        let crashing = SessionObservation {
            pod_ready: false,
            sts_ready_replicas: 0,
            pod_waiting_reason: Some("CrashLoopBackOff".into()),
            ..running_ready()
        };
        let s = status_of(&crashing);
        assert_eq!(s.phase, SessionPhase::Failed);
        assert_eq!(sr(&s, READY), pair("False", "CrashLoopBackOff"));
        assert_eq!(sr(&s, DEGRADED), pair("True", "CrashLoopBackOff"));
        // The old pod still trades while the new configuration rolls out.
        let rolling = SessionObservation {
            sts_updated: false,
            pod_outdated: true,
            ..running_ready()
        };
        let s = status_of(&rolling);
        assert_eq!(s.phase, SessionPhase::Starting);
        assert_eq!(sr(&s, READY), pair("False", "RollingOut"));
        assert_eq!(s.trades, 3, "its figures are still shown");
    }

    #[test]
    fn status_differs_ignores_only_condition_times() {
        let s = status_of(&running_ready());
        assert!(status_differs(None, &s));
        let mut later = s.clone();
        for c in &mut later.conditions {
            c.last_transition_time = at(77_777);
        }
        assert!(!status_differs(Some(&s), &later));
        let mut more_trades = s.clone();
        more_trades.trades += 1;
        assert!(status_differs(Some(&s), &more_trades));
        let mut other_phase = s.clone();
        other_phase.phase = SessionPhase::Starting;
        assert!(status_differs(Some(&s), &other_phase));
    }

    fn with_ledger(outdated: Option<&str>, unbound: Option<(&str, &str)>) -> SessionObservation {
        SessionObservation {
            ledger: Some(LedgerObservation {
                location: "SQLite on PersistentVolumeClaim ledger-bot-runtime-0 (1Gi, default storage class)".into(),
                outdated: outdated.map(Into::into),
                unbound_claim: unbound.map(|(c, p)| (c.into(), p.into())),
            }),
            ..running_ready()
        }
    }

    #[test]
    fn ledger_condition_says_where_the_ledger_is() {
        let s = status_of(&with_ledger(None, None));
        assert_eq!(
            sr(&s, LEDGER_STORAGE_OUTDATED),
            pair("False", "AsConfigured")
        );
        assert_eq!(
            cond(&s, LEDGER_STORAGE_OUTDATED).message,
            "the ledger is in SQLite on PersistentVolumeClaim ledger-bot-runtime-0 (1Gi, default storage class)"
        );
        assert_eq!(
            sr(&s, READY),
            pair("True", "Running"),
            "an outdated storage does not block"
        );
    }

    #[test]
    fn a_storage_change_that_cannot_apply_is_reported_and_the_session_keeps_running() {
        let s = status_of(&with_ledger(
            Some("PostgreSQL (URL from Secret \"pg-app\", key \"uri\")"),
            None,
        ));
        assert_eq!(
            sr(&s, LEDGER_STORAGE_OUTDATED),
            pair("True", "StorageFixedAtCreation")
        );
        let msg = &cond(&s, LEDGER_STORAGE_OUTDATED).message;
        assert!(
            msg.starts_with(
                "the ledger stays in SQLite on PersistentVolumeClaim ledger-bot-runtime-0"
            ) && msg.contains("now asks for PostgreSQL (URL from Secret \"pg-app\", key \"uri\")"),
            "{msg}"
        );
        assert_eq!(sr(&s, READY), pair("True", "Running"));
        assert_eq!(s.phase, SessionPhase::Running);
    }

    #[test]
    fn without_a_ledger_observation_the_condition_is_left_as_it_was() {
        let first = status_of(&with_ledger(None, None));
        let o = SessionObservation {
            problem: Some(Problem::AccountNotFound {
                account: "gone".into(),
                namespace: "ns".into(),
            }),
            ..running_ready()
        };
        let next = desired_session_status(Some(&first), &o, &at(2_000));
        assert_eq!(
            cond(&next, LEDGER_STORAGE_OUTDATED).message,
            cond(&first, LEDGER_STORAGE_OUTDATED).message
        );
        assert!(
            status_of(&running_ready())
                .conditions
                .iter()
                .all(|c| c.type_ != LEDGER_STORAGE_OUTDATED)
        );
    }

    #[test]
    fn an_unbound_ledger_claim_explains_a_starting_pod() {
        let o = SessionObservation {
            pod_ready: false,
            sts_ready_replicas: 0,
            pod_phase: Some("Pending".into()),
            ..with_ledger(None, Some(("ledger-bot-runtime-0", "Pending")))
        };
        let s = status_of(&o);
        assert_eq!(sr(&s, READY), pair("False", "Starting"));
        let msg = &cond(&s, READY).message;
        assert!(
            msg.contains("PersistentVolumeClaim ledger-bot-runtime-0 is Pending")
                && msg.contains("storage class"),
            "{msg}"
        );
    }
}
