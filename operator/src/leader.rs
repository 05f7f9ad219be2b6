//! Leader election on a `coordination.k8s.io/v1` Lease through the
//! `kube-lease-manager` crate, so that only one operator replica writes.
//!
//! [`LeaderElection::start`] creates the Lease if needed and spawns a task
//! that keeps trying to acquire it and, once held, renews it one third of
//! the lease duration before it expires. The current state is published on
//! a `watch` channel ([`LeaderElection::subscribe`]) and in the
//! `paperbot_operator_leader` gauge.
//!
//! When the Lease cannot be read or renewed the replica steps down at once
//! (publishes `false`) and retries with a fresh lease manager after a
//! backoff (1 s doubling to 30 s); if it still holds the Lease it becomes
//! leader again on the first successful call. A replica that cannot reach the
//! API server thus stops writing before a standby may take over.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, stream::BoxStream};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError, LeaseParams};
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};

use crate::metrics::Metrics;

/// First wait before retrying after a Lease error.
const RETRY_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between retries after Lease errors.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Errors of [`LeaderElection::start`].
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The lease duration is shorter than two whole seconds.
    #[error("lease duration {0:?} is too short: it must be at least 2 whole seconds")]
    LeaseDurationTooShort(Duration),
    /// A name field of [`LeaderConfig`] is empty.
    #[error("leader election needs a non-empty {0}")]
    Empty(&'static str),
    /// The Lease could not be read or created (API server unreachable,
    /// missing RBAC on `coordination.k8s.io` leases, ...).
    #[error("cannot read or create Lease {namespace}/{name}")]
    Lease {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The lease manager's error.
        #[source]
        source: LeaseManagerError,
    },
}

/// Which Lease to use and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderConfig {
    /// Name of the Lease, e.g. `paperbot-operator`.
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own namespace).
    pub namespace: String,
    /// This replica's holder identity (the pod name); unique per replica.
    pub identity: String,
    /// How long the Lease stays valid without renewal; whole seconds (a
    /// fraction is dropped), at least 2 s. The holder renews it when a third
    /// of this duration (at least 1 s) is left.
    pub lease_duration: Duration,
}

impl LeaderConfig {
    /// The renewal margin: a third of the lease duration, at least 1 s.
    pub fn renew_grace(&self) -> Duration {
        Duration::from_secs((self.lease_duration.as_secs() / 3).max(1))
    }

    /// The lease manager's parameters: identity, duration and grace period
    /// in whole seconds (see [`Self::renew_grace`]).
    ///
    /// # Errors
    /// [`LeaderError::Empty`] for an empty name or identity,
    /// [`LeaderError::LeaseDurationTooShort`] below two whole seconds.
    pub fn lease_params(&self) -> Result<LeaseParams, LeaderError> {
        for (field, value) in [
            ("lease name", &self.lease_name),
            ("lease namespace", &self.namespace),
            ("identity", &self.identity),
        ] {
            if value.trim().is_empty() {
                return Err(LeaderError::Empty(field));
            }
        }
        let duration = self.lease_duration.as_secs();
        if duration < 2 {
            return Err(LeaderError::LeaseDurationTooShort(self.lease_duration));
        }
        // `LeaseParams::new` panics unless 0 < grace < duration; both hold here.
        Ok(LeaseParams::new(
            self.identity.clone(),
            duration,
            self.renew_grace().as_secs(),
        ))
    }
}

/// Handle on this replica's leadership.
///
/// Dropping it without [`Self::release`] also gives the Lease up, in the
/// background, as long as the Tokio runtime keeps running.
#[derive(Debug)]
pub struct LeaderElection {
    state: watch::Sender<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

impl LeaderElection {
    /// Creates the Lease if it does not exist and spawns the task that
    /// acquires and renews it. Not leader until the Lease is acquired.
    ///
    /// # Errors
    /// [`LeaderError`] for an invalid `cfg` or when the Lease cannot be read
    /// or created; later API errors are retried in the background.
    pub async fn start(
        client: kube::Client,
        cfg: LeaderConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, LeaderError> {
        let params = cfg.lease_params()?;
        let manager = build_manager(client.clone(), &cfg, params.clone())
            .await
            .map_err(|source| LeaderError::Lease {
                namespace: cfg.namespace.clone(),
                name: cfg.lease_name.clone(),
                source,
            })?;
        metrics.set_leader(false);
        let (state, _) = watch::channel(false);
        let (stop, stop_rx) = oneshot::channel();
        let task = Elector {
            client,
            cfg,
            params,
            state: state.clone(),
            metrics: metrics.clone(),
        };
        let task = tokio::spawn(task.run(manager, stop_rx));
        Ok(Self {
            state,
            stop: Some(stop),
            task: Some(task),
            metrics,
        })
    }

    /// Leader election turned off (`--leader-election=false`): always leader.
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        metrics.set_leader(true);
        let (state, _) = watch::channel(true);
        Self {
            state,
            stop: None,
            task: None,
            metrics,
        }
    }

    /// Whether this replica holds the Lease right now.
    pub fn is_leader(&self) -> bool {
        *self.state.borrow()
    }

    /// A receiver of leadership changes (`true` = leader); its current value
    /// is marked seen. `changed()` returns an error once this handle has
    /// been released (or dropped and its background task has ended).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.state.subscribe()
    }

    /// A stream that yields `()` each time this replica becomes leader
    /// (not for leadership already held when it is created). Meant for
    /// `Controller::reconcile_all_on`, so that a new leader reconciles every
    /// object at once. Ends when this handle is released or dropped.
    pub fn leadership_gained(&self) -> BoxStream<'static, ()> {
        futures::stream::unfold(self.subscribe(), |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                if *rx.borrow_and_update() {
                    return Some(((), rx));
                }
            }
        })
        .boxed()
    }

    /// Steps down and gives the Lease up, so that a standby replica takes
    /// over at once instead of after the lease duration. Waits at most one
    /// lease duration for the API server.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(err) = task.await
        {
            tracing::warn!(error = %err, "leader election task failed");
        }
        self.state.send_replace(false);
        self.metrics.set_leader(false);
    }
}

async fn build_manager(
    client: kube::Client,
    cfg: &LeaderConfig,
    params: LeaseParams,
) -> Result<LeaseManager, LeaseManagerError> {
    LeaseManagerBuilder::new(client, cfg.lease_name.clone())
        .with_namespace(cfg.namespace.clone())
        .with_parameters(params)
        .build()
        .await
}

/// The background task: keeps a lease manager running and publishes its
/// state.
struct Elector {
    client: kube::Client,
    cfg: LeaderConfig,
    params: LeaseParams,
    state: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl Elector {
    fn publish(&self, leader: bool) {
        let changed = self
            .state
            .send_if_modified(|current| std::mem::replace(current, leader) != leader);
        self.metrics.set_leader(leader);
        if changed {
            tracing::info!(
                lease = %self.cfg.lease_name,
                namespace = %self.cfg.namespace,
                identity = %self.cfg.identity,
                leader,
                "leadership changed"
            );
        }
    }

    async fn run(self, manager: LeaseManager, mut stop: oneshot::Receiver<()>) {
        let mut manager = Some(manager);
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            let Some(current) = manager.as_ref() else {
                tokio::select! {
                    biased;
                    _ = &mut stop => break,
                    built = async {
                        tokio::time::sleep(backoff).await;
                        build_manager(self.client.clone(), &self.cfg, self.params.clone()).await
                    } => match built {
                        Ok(m) => manager = Some(m),
                        Err(err) => {
                            tracing::warn!(error = %err, lease = %self.cfg.lease_name, "cannot read the leader Lease; retrying");
                            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                        }
                    },
                }
                continue;
            };
            tokio::select! {
                biased;
                _ = &mut stop => break,
                changed = current.changed() => match changed {
                    Ok(leader) => {
                        backoff = RETRY_BACKOFF_MIN;
                        self.publish(leader);
                    }
                    Err(err) => {
                        // The state of the Lease is unknown: stop writing now;
                        // a fresh manager finds out whether we still hold it.
                        tracing::warn!(error = %err, lease = %self.cfg.lease_name, "leader Lease error; stepping down and retrying");
                        self.publish(false);
                        manager = None;
                    }
                },
            }
        }
        // Step down before giving the Lease up, so that two replicas never
        // both believe they lead.
        self.publish(false);
        let release = async {
            let manager = match manager {
                Some(m) => m,
                None => build_manager(self.client.clone(), &self.cfg, self.params.clone()).await?,
            };
            manager.release().await
        };
        match tokio::time::timeout(self.cfg.lease_duration, release).await {
            Ok(Ok(())) => tracing::info!(lease = %self.cfg.lease_name, "leader Lease released"),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "cannot release the leader Lease; it expires on its own")
            }
            Err(_) => tracing::warn!("timed out releasing the leader Lease; it expires on its own"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::FutureExt;
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;

    fn cfg(secs: u64) -> LeaderConfig {
        LeaderConfig {
            lease_name: "paperbot-operator".into(),
            namespace: "paperbot-system".into(),
            identity: "pod-a".into(),
            lease_duration: Duration::from_secs(secs),
        }
    }

    #[test]
    fn lease_params_follow_the_config() {
        assert_eq!(
            cfg(15).lease_params().unwrap(),
            LeaseParams::new("pod-a", 15, 5)
        );
        assert_eq!(
            cfg(2).lease_params().unwrap(),
            LeaseParams::new("pod-a", 2, 1)
        );
        assert_eq!(cfg(60).renew_grace(), Duration::from_secs(20));
        let fractional = LeaderConfig {
            lease_duration: Duration::from_millis(15_900),
            ..cfg(0)
        };
        assert_eq!(
            fractional.lease_params().unwrap(),
            LeaseParams::new("pod-a", 15, 5)
        );
    }

    #[test]
    fn invalid_configs_are_errors_not_panics() {
        assert!(matches!(
            cfg(1).lease_params(),
            Err(LeaderError::LeaseDurationTooShort(_))
        ));
        let e = LeaderConfig {
            identity: " ".into(),
            ..cfg(15)
        }
        .lease_params()
        .unwrap_err();
        assert_eq!(e.to_string(), "leader election needs a non-empty identity");
        let e = LeaderConfig {
            lease_name: String::new(),
            ..cfg(15)
        }
        .lease_params()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "leader election needs a non-empty lease name"
        );
    }

    #[tokio::test]
    async fn disabled_election_always_leads() {
        let metrics = Arc::new(Metrics::new());
        let election = LeaderElection::disabled(metrics.clone());
        assert!(election.is_leader());
        assert!(*election.subscribe().borrow());
        assert!(metrics.render().contains("paperbot_operator_leader 1"));
        // Nothing to gain: the stream stays pending.
        assert_eq!(election.leadership_gained().next().now_or_never(), None);
        election.release().await;
        assert!(metrics.render().contains("paperbot_operator_leader 0"));
    }

    #[tokio::test]
    async fn leadership_gained_yields_on_false_to_true() {
        let metrics = Arc::new(Metrics::new());
        let election = LeaderElection {
            state: watch::channel(false).0,
            stop: None,
            task: None,
            metrics,
        };
        let mut gained = election.leadership_gained();
        assert_eq!(gained.next().now_or_never(), None);
        election.state.send_replace(true);
        assert_eq!(gained.next().await, Some(()));
        election.state.send_replace(false);
        assert_eq!(gained.next().now_or_never(), None);
        election.state.send_replace(true);
        assert_eq!(gained.next().await, Some(()));
        drop(election);
        assert_eq!(gained.next().await, None);
    }

    /// A minimal API server holding one Lease: GET, POST (create) and
    /// PATCH (JSON merge of the body, `null` deletes), which is what the
    /// lease manager sends.
    struct FakeLeaseApi {
        lease: Mutex<Option<Value>>,
        fail_next_patch: Mutex<bool>,
    }

    impl FakeLeaseApi {
        fn holder(&self) -> Option<String> {
            let lease = self.lease.lock().unwrap();
            lease
                .as_ref()?
                .pointer("/spec/holderIdentity")?
                .as_str()
                .map(str::to_owned)
        }

        fn merge(target: &mut Value, patch: &Value) {
            match (target, patch) {
                (Value::Object(t), Value::Object(p)) => {
                    for (k, v) in p {
                        if v.is_null() {
                            t.remove(k);
                        } else {
                            Self::merge(t.entry(k.clone()).or_insert(Value::Null), v);
                        }
                    }
                }
                (t, p) => *t = p.clone(),
            }
        }

        fn status(code: StatusCode, reason: &str) -> Response<Body> {
            let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": reason, "reason": reason, "code": code.as_u16()});
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap()
        }

        async fn handle(&self, req: Request<Body>) -> Response<Body> {
            assert!(
                req.uri()
                    .path()
                    .starts_with("/apis/coordination.k8s.io/v1/namespaces/paperbot-system/leases"),
                "{}",
                req.uri()
            );
            let method = req.method().clone();
            let body = req.into_body().collect_bytes().await.unwrap();
            let mut lease = self.lease.lock().unwrap();
            let ok = |v: &Value| Response::new(Body::from(serde_json::to_vec(v).unwrap()));
            match method {
                Method::GET => lease
                    .as_ref()
                    .map_or_else(|| Self::status(StatusCode::NOT_FOUND, "NotFound"), ok),
                Method::POST => {
                    let mut created: Value = serde_json::from_slice(&body).unwrap();
                    created["metadata"]["namespace"] = json!("paperbot-system");
                    let response = ok(&created);
                    *lease = Some(created);
                    response
                }
                Method::PATCH => {
                    if std::mem::take(&mut *self.fail_next_patch.lock().unwrap()) {
                        return Self::status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError");
                    }
                    let patch: Value = serde_json::from_slice(&body).unwrap();
                    let Some(current) = lease.as_mut() else {
                        return Self::status(StatusCode::NOT_FOUND, "NotFound");
                    };
                    Self::merge(current, &patch);
                    ok(current)
                }
                other => panic!("unexpected {other} request"),
            }
        }
    }

    fn fake_client(api: Arc<FakeLeaseApi>) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            while let Some((req, respond)) = handle.next_request().await {
                respond.send_response(api.handle(req).await);
            }
        });
        kube::Client::new(service, "default")
    }

    #[tokio::test]
    async fn acquires_a_free_lease_and_releases_it_on_shutdown() {
        let api = Arc::new(FakeLeaseApi {
            lease: Mutex::new(None),
            fail_next_patch: Mutex::new(false),
        });
        let metrics = Arc::new(Metrics::new());
        let election = LeaderElection::start(fake_client(api.clone()), cfg(15), metrics.clone())
            .await
            .unwrap();
        // `start` created the Lease.
        assert!(api.lease.lock().unwrap().is_some());

        let mut rx = election.subscribe();
        rx.wait_for(|leader| *leader).await.unwrap();
        assert!(election.is_leader());
        assert_eq!(api.holder().as_deref(), Some("pod-a"));
        let lease = api.lease.lock().unwrap().clone().unwrap();
        assert_eq!(lease["spec"]["leaseDurationSeconds"], json!(15));
        assert!(metrics.render().contains("paperbot_operator_leader 1"));

        election.release().await;
        assert_eq!(api.holder(), None, "the Lease is free for a standby");
        assert!(!*rx.borrow_and_update());
        assert!(
            rx.changed().await.is_err(),
            "the channel closes with the handle"
        );
        assert!(metrics.render().contains("paperbot_operator_leader 0"));
    }

    #[tokio::test]
    async fn recovers_after_a_lease_error() {
        let api = Arc::new(FakeLeaseApi {
            lease: Mutex::new(None),
            fail_next_patch: Mutex::new(true),
        });
        let metrics = Arc::new(Metrics::new());
        let election = LeaderElection::start(fake_client(api.clone()), cfg(15), metrics)
            .await
            .unwrap();
        // The first acquire attempt fails; a fresh manager acquires the Lease.
        election
            .subscribe()
            .wait_for(|leader| *leader)
            .await
            .unwrap();
        assert!(!*api.fail_next_patch.lock().unwrap());
        assert_eq!(api.holder().as_deref(), Some("pod-a"));
        election.release().await;
        assert_eq!(api.holder(), None);
    }

    #[tokio::test]
    async fn start_reports_api_errors() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            while let Some((_, respond)) = handle.next_request().await {
                respond.send_response(FakeLeaseApi::status(StatusCode::FORBIDDEN, "Forbidden"));
            }
        });
        let client = kube::Client::new(service, "default");
        let err = LeaderElection::start(client, cfg(15), Arc::new(Metrics::new()))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read or create Lease paperbot-system/paperbot-operator"
        );
        assert!(matches!(err, LeaderError::Lease { .. }));
    }
}
