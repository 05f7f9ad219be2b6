//! The operator's Prometheus metrics, in a registry of their own (never the
//! process-global default one), rendered in the text exposition format by
//! [`Metrics::render`] for `GET /metrics`.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `paperbot_operator_reconciles_total` | counter | `controller`, `result` (`success`, `error`, `requeue`) |
//! | `paperbot_operator_reconcile_duration_seconds` | histogram | `controller` |
//! | `paperbot_operator_reconcile_errors_total` | counter | `controller`, `category` ([`ERROR_CATEGORIES`], all present from the start) |
//! | `paperbot_operator_leader` | gauge | — |
//! | `paperbot_operator_queue_depth` | gauge: objects asked for and not yet being reconciled | `controller` |
//! | `paperbot_operator_status_writes_total` | counter: status subresource writes | `controller` |
//! | `paperbot_operator_reconcile_triggers_total` | counter | `controller`, `cause` ([`crate::triggers::Cause`]) |
//! | `paperbot_operator_watch_events_total` | counter | `kind`, `outcome` (`trigger`, `ignored`, `own_write`) |
//! | `paperbot_operator_child_applies_total` | counter | `kind`, `decision` ([`crate::drift::ApplyDecision`]: `unchanged`, `create`, `changed`, `drift`, `removed`) |
//! | `paperbot_operator_stale_writes_total` | counter | `controller` (a write refused because the cached copy was out of date, retried at once) |
//! | the fleet gauges of [`fleet`] | gauge | `namespace`, `account`, ... |
//!
//! Label values of the operator's own metrics are `&'static str`, so only a
//! bounded set can reach a series (never an error message). The fleet
//! gauges carry object names (namespace, account, session): one series per
//! object, removed with it.

pub mod fleet;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Instant,
};

use paperbot_crds::SessionPhase;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub use fleet::{FleetGauges, FleetSnapshot};

/// Every `category` of `paperbot_operator_reconcile_errors_total`
/// ([`crate::Error::metric_label`]); each starts at 0 for every controller.
pub const ERROR_CATEGORIES: [&str; 5] =
    ["kube", "finalizer", "build", "invalid_object", "serialize"];

/// Upper bounds (seconds) of the reconcile-duration buckets: 1 ms to 10 s.
pub const RECONCILE_DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every session phase, in lifecycle order; `paperbot_sessions` always has one
/// series per entry.
pub const ALL_PHASES: [SessionPhase; 8] = [
    SessionPhase::Pending,
    SessionPhase::Starting,
    SessionPhase::Running,
    SessionPhase::Paused,
    SessionPhase::Halted,
    SessionPhase::Stopped,
    SessionPhase::Completed,
    SessionPhase::Failed,
];

/// The `phase` label value of a session phase (its name as in `status.phase`).
pub fn phase_label(phase: SessionPhase) -> &'static str {
    // Exhaustive on purpose: a new phase fails to compile here until it is
    // added to `ALL_PHASES` too.
    match phase {
        SessionPhase::Pending => "Pending",
        SessionPhase::Starting => "Starting",
        SessionPhase::Running => "Running",
        SessionPhase::Paused => "Paused",
        SessionPhase::Halted => "Halted",
        SessionPhase::Stopped => "Stopped",
        SessionPhase::Completed => "Completed",
        SessionPhase::Failed => "Failed",
    }
}

/// Outcome of one reconcile, the `result` label of
/// `paperbot_operator_reconciles_total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReconcileResult {
    /// The object is in its desired state.
    Success,
    /// The reconcile failed (the default when a [`ReconcileTimer`] is dropped
    /// without a result, e.g. on an early `?` return).
    #[default]
    Error,
    /// The reconcile made progress but must run again soon (e.g. waiting for
    /// a pod to start).
    Requeue,
}

impl ReconcileResult {
    /// The label value: `success`, `error` or `requeue`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
            Self::Requeue => "requeue",
        }
    }
}

/// The operator's metrics. Cheap to share behind an `Arc`; every method
/// takes `&self`.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    reconcile_duration: HistogramVec,
    reconcile_errors: IntCounterVec,
    leader: IntGauge,
    queue_depth: IntGaugeVec,
    /// Objects (`namespace/name`) asked for and not yet being reconciled,
    /// by controller.
    queued: Arc<Mutex<HashMap<&'static str, HashSet<String>>>>,
    status_writes: IntCounterVec,
    triggers: IntCounterVec,
    watch_events: IntCounterVec,
    child_applies: IntCounterVec,
    stale_writes: IntCounterVec,
    /// Sessions, accounts and the write budget ([`fleet`]).
    pub fleet: FleetGauges,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the metrics in a fresh registry; the leader gauge starts at 0.
    pub fn new() -> Self {
        Self::try_new().expect("metric definitions are static and valid")
    }

    fn try_new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "paperbot_operator_reconciles_total",
                "Reconciles run, by controller and result.",
            ),
            &["controller", "result"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "paperbot_operator_reconcile_duration_seconds",
                "Wall-clock duration of one reconcile, in seconds.",
            )
            .buckets(RECONCILE_DURATION_BUCKETS.to_vec()),
            &["controller"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "paperbot_operator_reconcile_errors_total",
                "Failed reconciles, by controller and error category.",
            ),
            &["controller", "category"],
        )?;
        let leader = IntGauge::new(
            "paperbot_operator_leader",
            "1 when this replica holds the leader Lease (or runs without leader election), else 0.",
        )?;
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "paperbot_operator_queue_depth",
                "Objects whose reconcile was asked for and has not started yet, by controller.",
            ),
            &["controller"],
        )?;
        let status_writes = IntCounterVec::new(
            Opts::new(
                "paperbot_operator_status_writes_total",
                "Writes of the status subresource, by controller.",
            ),
            &["controller"],
        )?;
        let triggers = IntCounterVec::new(
            Opts::new(
                "paperbot_operator_reconcile_triggers_total",
                "Reconciles asked for by watch events (and one per object at start), by controller and cause.",
            ),
            &["controller", "cause"],
        )?;
        let watch_events = IntCounterVec::new(
            Opts::new(
                "paperbot_operator_watch_events_total",
                "Watch events received, by kind and outcome: trigger (asked for a reconcile), ignored (nothing a reconcile reads changed), own_write (the operator's own write).",
            ),
            &["kind", "outcome"],
        )?;
        let child_applies = IntCounterVec::new(
            Opts::new(
                "paperbot_operator_child_applies_total",
                "Children considered by the apply path, by kind and decision (unchanged children are not written).",
            ),
            &["kind", "decision"],
        )?;
        let stale_writes = IntCounterVec::new(
            Opts::new(
                "paperbot_operator_stale_writes_total",
                "Writes refused because the cached copy was out of date and retried at once on the object read back.",
            ),
            &["controller"],
        )?;
        registry.register(Box::new(triggers.clone()))?;
        registry.register(Box::new(watch_events.clone()))?;
        registry.register(Box::new(child_applies.clone()))?;
        registry.register(Box::new(stale_writes.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(status_writes.clone()))?;
        let fleet = FleetGauges::register(&registry)?;
        Ok(Self {
            registry,
            reconciles,
            reconcile_duration,
            reconcile_errors,
            leader,
            queue_depth,
            queued: Arc::default(),
            status_writes,
            triggers,
            watch_events,
            child_applies,
            stale_writes,
            fleet,
        })
    }

    /// The registry, for components that add metrics of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Creates the series of `controller` at zero — `reconciles_total` (all
    /// three results), `reconcile_errors_total` (every category), the
    /// duration histogram, the queue depth, the status and stale writes — so that
    /// they are exported (and `rate()` works) before its first reconcile.
    /// Optional.
    pub fn init_controller(&self, controller: &'static str) {
        for result in [
            ReconcileResult::Success,
            ReconcileResult::Error,
            ReconcileResult::Requeue,
        ] {
            self.reconciles
                .with_label_values(&[controller, result.as_str()]);
        }
        for category in ERROR_CATEGORIES {
            self.reconcile_errors
                .with_label_values(&[controller, category]);
        }
        self.reconcile_duration.with_label_values(&[controller]);
        self.queue_depth.with_label_values(&[controller]);
        self.status_writes.with_label_values(&[controller]);
        self.stale_writes.with_label_values(&[controller]);
    }

    /// Counts one status write of `controller`.
    pub fn record_status_write(&self, controller: &'static str) {
        self.status_writes.with_label_values(&[controller]).inc();
    }

    fn queue<T>(&self, controller: &'static str, f: impl FnOnce(&mut HashSet<String>) -> T) -> T {
        let mut queued = self
            .queued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let set = queued.entry(controller).or_default();
        let out = f(set);
        self.queue_depth
            .with_label_values(&[controller])
            .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
        out
    }

    /// A reconcile of the object `key` (`namespace/name`) was asked for.
    pub fn record_queued(&self, controller: &'static str, key: String) {
        self.queue(controller, |q| q.insert(key));
    }

    /// The reconcile of `key` starts.
    pub fn record_dequeued(&self, controller: &'static str, key: &str) {
        self.queue(controller, |q| q.remove(key));
    }

    /// Forget queued objects of `scope` (a namespace, `None` for all) for
    /// which `exists` is false: the controller drops a request for an object
    /// that is gone without reconciling it.
    pub fn prune_queue(
        &self,
        controller: &'static str,
        scope: Option<&str>,
        exists: impl Fn(&str) -> bool,
    ) {
        let in_scope = |key: &str| {
            scope.is_none_or(|ns| key.split_once('/').is_some_and(|(k_ns, _)| k_ns == ns))
        };
        self.queue(controller, |q| q.retain(|k| !in_scope(k) || exists(k)));
    }

    /// Starts timing one reconcile of `controller` (e.g. `"botsession"`).
    /// When the returned guard drops it observes the elapsed seconds in
    /// `paperbot_operator_reconcile_duration_seconds` and counts one
    /// reconcile with the result set on it ([`ReconcileResult::Error`] unless
    /// set otherwise).
    pub fn reconcile_timer(&self, controller: &'static str) -> ReconcileTimer {
        ReconcileTimer {
            controller,
            started: Instant::now(),
            result: ReconcileResult::default(),
            duration: self.reconcile_duration.with_label_values(&[controller]),
            reconciles: self.reconciles.clone(),
        }
    }

    /// Counts one failed reconcile of `controller` under a bounded error
    /// `category` such as `kube`, `missing_reference`, `insufficient_funds`,
    /// `invalid_spec`, `build` or `finalizer`.
    pub fn record_error(&self, controller: &'static str, category: &'static str) {
        self.reconcile_errors
            .with_label_values(&[controller, category])
            .inc();
    }

    /// Counts a reconcile of `controller` asked for by `cause`.
    pub fn record_trigger(&self, controller: &'static str, cause: &'static str) {
        self.triggers.with_label_values(&[controller, cause]).inc();
    }

    /// Counts a watch event of `kind` with its `outcome` (`trigger`,
    /// `ignored` or `own_write`).
    pub fn record_watch_event(&self, kind: &'static str, outcome: &'static str) {
        self.watch_events.with_label_values(&[kind, outcome]).inc();
    }

    /// Counts a child of `kind` considered for apply, with the decision's label.
    pub fn record_child_apply(&self, kind: &'static str, decision: &'static str) {
        self.child_applies
            .with_label_values(&[kind, decision])
            .inc();
    }

    /// Counts a write of `controller` refused on an out-of-date copy.
    pub fn record_stale_write(&self, controller: &'static str) {
        self.stale_writes.with_label_values(&[controller]).inc();
    }

    /// Sets `paperbot_operator_leader` to 1 (`true`) or 0.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// All metrics in the Prometheus text exposition format (version 0.0.4,
    /// content type [`prometheus::TEXT_FORMAT`]).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Guard returned by [`Metrics::reconcile_timer`]: records the reconcile's
/// duration and result when dropped.
#[derive(Debug)]
pub struct ReconcileTimer {
    controller: &'static str,
    started: Instant,
    result: ReconcileResult,
    duration: Histogram,
    reconciles: IntCounterVec,
}

impl ReconcileTimer {
    /// Sets the result counted when the guard drops.
    pub fn set_result(&mut self, result: ReconcileResult) {
        self.result = result;
    }

    /// Ends the reconcile now with `result`.
    pub fn finish(mut self, result: ReconcileResult) {
        self.result = result;
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.duration.observe(self.started.elapsed().as_secs_f64());
        self.reconciles
            .with_label_values(&[self.controller, self.result.as_str()])
            .inc();
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    /// The value of the sample `series` (name plus labels, exactly as
    /// rendered), if present.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn all_phases_are_listed_once() {
        for (i, phase) in ALL_PHASES.iter().enumerate() {
            assert_eq!(ALL_PHASES.iter().position(|p| p == phase), Some(i));
        }
        // Labels match the serialized phase names in `status.phase`.
        for phase in ALL_PHASES {
            assert_eq!(serde_json::to_value(phase).unwrap(), phase_label(phase));
        }
    }

    #[test]
    fn fresh_registry_has_the_leader_gauge_at_zero() {
        let text = Metrics::new().render();
        assert_eq!(sample(&text, "paperbot_operator_leader"), Some(0.0));
    }

    #[test]
    fn init_controller_exports_zero_series() {
        let m = Metrics::new();
        assert!(!m.render().contains("paperbot_operator_reconciles_total"));
        m.init_controller("botsession");
        let text = m.render();
        assert!(
            text.contains("# TYPE paperbot_operator_reconciles_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE paperbot_operator_reconcile_duration_seconds histogram"),
            "{text}"
        );
        for result in ["success", "error", "requeue"] {
            let series = format!(
                "paperbot_operator_reconciles_total{{controller=\"botsession\",result=\"{result}\"}}"
            );
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        assert_eq!(
            sample(
                &text,
                "paperbot_operator_reconcile_duration_seconds_count{controller=\"botsession\"}"
            ),
            Some(0.0)
        );
        for category in ERROR_CATEGORIES {
            let series = format!(
                "paperbot_operator_reconcile_errors_total{{category=\"{category}\",controller=\"botsession\"}}"
            );
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        for family in [
            "paperbot_operator_queue_depth",
            "paperbot_operator_status_writes_total",
            "paperbot_operator_stale_writes_total",
        ] {
            let series = format!("{family}{{controller=\"botsession\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
    }

    #[test]
    fn the_queue_counts_distinct_objects_until_their_reconcile_starts() {
        let m = Metrics::new();
        let depth = |m: &Metrics| {
            sample(
                &m.render(),
                "paperbot_operator_queue_depth{controller=\"botsession\"}",
            )
        };
        m.record_queued("botsession", "a/x".into());
        m.record_queued("botsession", "a/x".into());
        m.record_queued("botsession", "b/y".into());
        assert_eq!(depth(&m), Some(2.0));
        m.record_dequeued("botsession", "a/x");
        assert_eq!(depth(&m), Some(1.0));
        // Pruning namespace a keeps b's object (another scope's).
        m.record_queued("botsession", "a/gone".into());
        m.prune_queue("botsession", Some("a"), |_| false);
        assert_eq!(depth(&m), Some(1.0));
        m.prune_queue("botsession", None, |_| false);
        assert_eq!(depth(&m), Some(0.0));
        m.record_status_write("botsession");
        assert_eq!(
            sample(
                &m.render(),
                "paperbot_operator_status_writes_total{controller=\"botsession\"}"
            ),
            Some(1.0)
        );
    }

    #[test]
    fn two_instances_do_not_share_series() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.set_leader(true);
        assert_eq!(sample(&b.render(), "paperbot_operator_leader"), Some(0.0));
    }

    #[test]
    fn reconcile_timer_counts_results_and_observes_durations() {
        let m = Metrics::new();
        m.reconcile_timer("botsession")
            .finish(ReconcileResult::Success);
        {
            let mut t = m.reconcile_timer("botsession");
            t.set_result(ReconcileResult::Requeue);
        }
        drop(m.reconcile_timer("botsession")); // no result set: an error
        m.reconcile_timer("paperaccount")
            .finish(ReconcileResult::Success);
        m.reconcile_timer("botsession")
            .finish(ReconcileResult::Success);

        let text = m.render();
        let count = |c: &str, r: &str| {
            sample(
                &text,
                &format!("paperbot_operator_reconciles_total{{controller=\"{c}\",result=\"{r}\"}}"),
            )
        };
        assert_eq!(count("botsession", "success"), Some(2.0));
        assert_eq!(count("botsession", "requeue"), Some(1.0));
        assert_eq!(count("botsession", "error"), Some(1.0));
        assert_eq!(count("paperaccount", "success"), Some(1.0));
        assert_eq!(count("paperaccount", "error"), None);
        assert_eq!(
            sample(
                &text,
                "paperbot_operator_reconcile_duration_seconds_count{controller=\"botsession\"}"
            ),
            Some(4.0)
        );
        assert_eq!(
            sample(
                &text,
                "paperbot_operator_reconcile_duration_seconds_bucket{controller=\"botsession\",le=\"+Inf\"}"
            ),
            Some(4.0)
        );
        assert!(text.contains("paperbot_operator_reconcile_duration_seconds_bucket{controller=\"botsession\",le=\"0.001\"}"));
        assert!(text.contains("paperbot_operator_reconcile_duration_seconds_bucket{controller=\"botsession\",le=\"10\"}"));
    }

    #[test]
    fn errors_are_counted_by_category() {
        let m = Metrics::new();
        m.record_error("botsession", "kube");
        m.record_error("botsession", "kube");
        m.record_error("botsession", "insufficient_funds");
        let text = m.render();
        assert!(
            text.contains("# TYPE paperbot_operator_reconcile_errors_total counter"),
            "{text}"
        );
        let series = |cat: &str| {
            format!(
                // The encoder sorts labels by name.
                "paperbot_operator_reconcile_errors_total{{category=\"{cat}\",controller=\"botsession\"}}"
            )
        };
        assert_eq!(sample(&text, &series("kube")), Some(2.0));
        assert_eq!(sample(&text, &series("insufficient_funds")), Some(1.0));
    }

    #[test]
    fn leader_gauge() {
        let m = Metrics::new();
        m.set_leader(true);
        let text = m.render();
        assert_eq!(sample(&text, "paperbot_operator_leader"), Some(1.0));
        m.set_leader(false);
        assert_eq!(sample(&m.render(), "paperbot_operator_leader"), Some(0.0));
    }

    /// Lints the exposition with `promtool check metrics` (from the Debian
    /// package `prometheus`). Fails when promtool is not installed.
    #[test]
    fn promtool_check_metrics_is_clean() {
        let m = Metrics::new();
        m.init_controller("paperaccount");
        m.reconcile_timer("botsession")
            .finish(ReconcileResult::Success);
        m.record_error("botsession", "kube");
        m.record_queued("botsession", "ns/bot".into());
        m.fleet.export(
            None,
            FleetSnapshot {
                sessions: vec![fleet::SessionFacts {
                    namespace: "ns".into(),
                    name: "bot".into(),
                    account: "acct".into(),
                    phase: SessionPhase::Running,
                    breaker_open: true,
                    polled: true,
                    not_reporting: false,
                }],
                accounts: vec![fleet::AccountFacts {
                    namespace: "ns".into(),
                    name: "acct".into(),
                    equity: Some(100_000.0),
                    realized_pnl: Some(-12.5),
                    unrealized_pnl: Some(3.25),
                    kill_switch_engaged: Some(false),
                    limits: vec![fleet::LimitFacts {
                        limit: fleet::LIMIT_MAX_DRAWDOWN,
                        loss: Some(0.01),
                        limit_ratio: 0.05,
                    }],
                }],
                strategies: 1,
                status_sync_interval: std::time::Duration::from_secs(15),
            },
        );
        let text = m.render();
        paperbot_testkit::assert_promtool_clean("the operator's /metrics", &text);
    }
}
