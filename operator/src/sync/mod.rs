//! Runtime status sync: the operator polls each running session's runtime
//! (`GET /v1/status` of `bot-runtime serve`) and keeps the answers in memory
//! ([`Reports`]); the BotSession reconciler turns them into status,
//! conditions and Events ([`project`]).
//!
//! Why a poller beside the reconciler, not polls inside reconciles:
//!
//! - **Write budget.** A poll that changes nothing a user sees (the
//!   [`digest`] of the rounded figures, phase, breakers, autopilot, readiness)
//!   triggers nothing; a changed one triggers one reconcile of that session
//!   only, which writes its status once. Polls happen once per
//!   `--status-sync-interval`, so a session's status is written at most once
//!   per interval however fast its equity moves, and an idle fleet writes
//!   nothing.
//! - **Bounded load.** One pass polls every session with at most
//!   `--runtime-poll-concurrency` requests in flight, each with a timeout; a
//!   runtime that fails is retried with exponential backoff (up to 8
//!   intervals) so dead runtimes cost little, and after
//!   `--runtime-not-reporting-after` failures in a row the session shows
//!   `RuntimeNotReporting`.
//! - **Restarts.** Reports live in memory only. After an operator restart
//!   the first pass triggers one reconcile per session, which finds the
//!   written status equal and writes nothing.
//!
//! The runtime is reached at its Service
//! (`http://<session>-runtime.<namespace>.svc:8080`), or at the URL of the
//! session's [`ENDPOINT_OVERRIDE_ANNOTATION`] when the operator runs with
//! `--allow-runtime-endpoint-override` (tests, runtimes outside the cluster).
//! The bearer token is the one the operator generated into the session's
//! Secret, read once and cached.

pub mod client;
pub mod forward;
pub mod project;
pub mod status;

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};
use paperbot_crds::{
    BotSession, DesiredState, SessionPhase,
    runtime_api::{ENDPOINT_OVERRIDE_ANNOTATION, RuntimeStatus, TOKEN_KEY},
};
use tracing::{debug, warn};

use crate::builders::{API_PORT, child_name};
pub use client::{ClientError, RuntimeClient};
pub use project::RuntimeObservation;

/// How the poller works (from the operator's flags).
#[derive(Clone, Debug)]
pub struct SyncSettings {
    /// Time between two polls of one runtime (`--status-sync-interval`).
    pub interval: Duration,
    /// Timeout of one request (`--runtime-request-timeout`).
    pub timeout: Duration,
    /// Requests in flight at most (`--runtime-poll-concurrency`).
    pub concurrency: usize,
    /// Failed polls in a row after which a session is `RuntimeNotReporting`
    /// (`--runtime-not-reporting-after`).
    pub not_reporting_after: u32,
    /// Honour [`ENDPOINT_OVERRIDE_ANNOTATION`] (`--allow-runtime-endpoint-override`).
    pub allow_endpoint_override: bool,
    /// Reach every runtime at this URL instead of its Service, `{namespace}`
    /// and `{name}` replaced by the session's (e.g.
    /// `http://127.0.0.1:9000/{namespace}/{name}`): for test harnesses that
    /// answer for runtimes kwok does not run. Not a flag of the binary.
    pub endpoint_template: Option<String>,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(5),
            concurrency: 32,
            not_reporting_after: 3,
            allow_endpoint_override: false,
            endpoint_template: None,
        }
    }
}

/// Longest pause between polls of a failing runtime, in intervals.
const MAX_BACKOFF_INTERVALS: u32 = 8;

#[derive(Debug, Default)]
struct Entry {
    obs: RuntimeObservation,
    /// Digest of what users see, at the last trigger.
    digest: Option<u64>,
    next_poll: Option<Instant>,
    token: Option<String>,
}

/// The runtimes' latest answers, by session.
#[derive(Debug, Default)]
pub struct Reports {
    entries: Mutex<HashMap<ObjectRef<BotSession>, Entry>>,
}

impl Reports {
    /// What is known of `session`'s runtime (`None` before its first poll).
    pub fn get(&self, session: &ObjectRef<BotSession>) -> Option<RuntimeObservation> {
        self.lock().get(session).map(|e| e.obs.clone())
    }

    /// Forget a session (deleted, or ended and synced).
    pub fn forget(&self, session: &ObjectRef<BotSession>) {
        self.lock().remove(session);
    }

    /// Record the answer of a control request (e.g. after `POST /v1/pause`
    /// the next status will say Paused; until then, nothing is assumed).
    /// Also used by tests.
    pub fn record(&self, session: &ObjectRef<BotSession>, status: RuntimeStatus) {
        let mut map = self.lock();
        let e = map.entry(session.clone()).or_default();
        e.obs.status = Some(status);
        e.obs.failures = 0;
        e.obs.last_error = None;
        e.obs.not_reporting = false;
    }

    /// Sessions with a report.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session has a report.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<BotSession>, Entry>> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // map itself is always consistent (single assignments).
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached token of a session's runtime.
    fn token(&self, session: &ObjectRef<BotSession>) -> Option<String> {
        self.lock().get(session).and_then(|e| e.token.clone())
    }

    fn set_token(&self, session: &ObjectRef<BotSession>, token: Option<String>) {
        self.lock().entry(session.clone()).or_default().token = token;
    }

    /// Remember the API token of `session`'s runtime (the reconciler knows
    /// it from the Secret it applies), so the poller need not read the Secret.
    pub fn remember_token(&self, session: &ObjectRef<BotSession>, token: &str) {
        let mut map = self.lock();
        let e = map.entry(session.clone()).or_default();
        if e.token.as_deref() != Some(token) {
            e.token = Some(token.to_string());
        }
    }
}

/// Base URL of a session's runtime API.
pub fn endpoint(session: &BotSession, settings: &SyncSettings) -> String {
    if settings.allow_endpoint_override
        && let Some(url) = session.annotations().get(ENDPOINT_OVERRIDE_ANNOTATION)
    {
        return url.trim_end_matches('/').to_string();
    }
    if let Some(t) = &settings.endpoint_template {
        return t
            .replace("{namespace}", &session.namespace().unwrap_or_default())
            .replace("{name}", &session.name_any());
    }
    format!(
        "http://{}.{}.svc:{API_PORT}",
        child_name(&session.name_any()),
        session.namespace().unwrap_or_default()
    )
}

/// Whether the operator polls this session's runtime: it should be running
/// (or was asked to stop and has not confirmed it), and its final status
/// has not been written yet.
pub fn needs_poll(s: &BotSession) -> bool {
    if s.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let phase = s.status.as_ref().map(|st| st.phase);
    match phase {
        Some(SessionPhase::Starting | SessionPhase::Running | SessionPhase::Paused) => true,
        Some(SessionPhase::Halted) => true, // an account halt resumes on reset
        Some(SessionPhase::Stopped) => false,
        Some(SessionPhase::Completed | SessionPhase::Failed) => false,
        Some(SessionPhase::Pending) | None => s.spec.desired_state != DesiredState::Stopped,
    }
}

/// A digest of what users would see of a report: the status figures as
/// written (rounded), phase, readiness, breakers, autopilot, strategy
/// revision, and whether the runtime is reporting.
pub fn digest(obs: &RuntimeObservation) -> u64 {
    let mut h = DefaultHasher::new();
    obs.not_reporting.hash(&mut h);
    if let Some(r) = &obs.status {
        let mut s = paperbot_crds::BotSessionStatus::default();
        project::apply_figures(&mut s, r);
        // Serialised status: stable, and covers every field users see.
        serde_json::to_string(&s).unwrap_or_default().hash(&mut h);
        format!("{:?}", r.phase).hash(&mut h);
        r.ready.hash(&mut h);
        r.message.hash(&mut h);
        r.ledger.reachable.hash(&mut h);
    }
    h.finish()
}

/// The session's API token from its Secret (`api-token` key).
async fn read_token(client: &Client, s: &BotSession) -> Result<String, String> {
    let ns = s.namespace().unwrap_or_default();
    let name = child_name(&s.name_any());
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await
        .map_err(|e| format!("reading Secret {name}: {e}"))?
        .ok_or_else(|| format!("Secret {name} with the runtime's API token does not exist yet"))?;
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(TOKEN_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("Secret {name} has no {TOKEN_KEY} key"))
}

/// The poller: its settings, client and the reports it fills.
pub struct Poller {
    /// Settings.
    pub settings: SyncSettings,
    /// HTTP client.
    pub http: RuntimeClient,
    /// Kubernetes client (reads the token Secrets).
    pub kube: Client,
    /// Where answers go.
    pub reports: Arc<Reports>,
}

impl Poller {
    /// A poller with `settings`, reading tokens with `kube`, no reports yet.
    pub fn new(settings: SyncSettings, kube: Client) -> Self {
        let http = RuntimeClient::new(settings.timeout).unwrap_or_else(|e| {
            warn!(error = %e, "HTTP client with timeouts unavailable; using the default one");
            RuntimeClient::default_client()
        });
        Self {
            settings,
            http,
            kube,
            reports: Arc::default(),
        }
    }

    /// The token of `s`'s runtime (cached after the first read).
    pub async fn token(&self, s: &BotSession) -> Result<String, String> {
        let key = ObjectRef::from_obj(s);
        if let Some(t) = self.reports.token(&key) {
            return Ok(t);
        }
        let t = read_token(&self.kube, s).await?;
        self.reports.set_token(&key, Some(t.clone()));
        Ok(t)
    }

    /// Poll `s` once and record the answer. Returns whether what users see
    /// changed since the last trigger (then the caller triggers a reconcile).
    pub async fn poll_one(&self, s: &BotSession) -> bool {
        let key = ObjectRef::from_obj(s);
        let answer = match self.token(s).await {
            Ok(token) => self
                .http
                .status(&endpoint(s, &self.settings), &token)
                .await
                .map_err(|e| {
                    if matches!(e, ClientError::Unauthorized { .. }) {
                        // The Secret may have been recreated: read it again next time.
                        self.reports.set_token(&key, None);
                    }
                    e.to_string()
                }),
            Err(e) => Err(e),
        };
        let now = Instant::now();
        let mut map = self.reports.lock();
        let e = map.entry(key).or_default();
        match answer {
            Ok(status) => {
                e.obs.status = Some(status);
                e.obs.failures = 0;
                e.obs.last_error = None;
                e.obs.not_reporting = false;
                e.next_poll = Some(now + self.settings.interval);
            }
            Err(err) => {
                e.obs.failures = e.obs.failures.saturating_add(1);
                debug!(session = %s.name_any(), failures = e.obs.failures, error = %err, "runtime poll failed");
                e.obs.last_error = Some(err);
                e.obs.not_reporting = e.obs.failures >= self.settings.not_reporting_after;
                let factor = 2u32
                    .saturating_pow(e.obs.failures.saturating_sub(1))
                    .min(MAX_BACKOFF_INTERVALS);
                e.next_poll = Some(now + self.settings.interval * factor);
            }
        }
        let d = digest(&e.obs);
        let changed = e.digest != Some(d);
        e.digest = Some(d);
        changed
    }

    fn due(&self, s: &BotSession, now: Instant) -> bool {
        let key = ObjectRef::from_obj(s);
        self.reports
            .lock()
            .get(&key)
            .and_then(|e| e.next_poll)
            .is_none_or(|t| t <= now)
    }

    /// One pass over the sessions of `store`: poll those that need it and are
    /// due, at most `concurrency` at a time; send the changed ones to
    /// `trigger`. Returns how many were polled.
    pub async fn pass(
        &self,
        store: &Store<BotSession>,
        trigger: &(dyn Fn(ObjectRef<BotSession>) + Send + Sync),
    ) -> usize {
        let now = Instant::now();
        let targets: Vec<Arc<BotSession>> = store
            .state()
            .into_iter()
            .filter(|s| needs_poll(s) && self.due(s, now))
            .collect();
        // Forget sessions that no longer need polling (deleted, ended).
        {
            let live: std::collections::HashSet<ObjectRef<BotSession>> = store
                .state()
                .iter()
                .filter(|s| needs_poll(s))
                .map(|s| ObjectRef::from_obj(&**s))
                .collect();
            self.reports.lock().retain(|k, _| live.contains(k));
        }
        let n = targets.len();
        let changed: Vec<ObjectRef<BotSession>> = futures::stream::iter(targets)
            .map(|s| async move {
                let changed = self.poll_one(&s).await;
                changed.then(|| ObjectRef::from_obj(&*s))
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .filter_map(|x| async move { x })
            .collect()
            .await;
        for r in changed {
            trigger(r);
        }
        n
    }

    /// Poll every `interval / 4` (each runtime is still polled once per
    /// interval: the pass skips those not due) until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        store: Store<BotSession>,
        trigger: impl Fn(ObjectRef<BotSession>) + Send + Sync,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let tick_every = (self.settings.interval / 4).max(Duration::from_millis(250));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let work = async {
            loop {
                tick.tick().await;
                self.pass(&store, &trigger).await;
            }
        };
        tokio::select! {
            () = work => {},
            () = shutdown => {},
        }
    }
}

/// What [`Poller::execute`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Executed {
    /// Requests the runtime accepted, with its answer's message.
    pub done: Vec<(forward::Request, String)>,
    /// The first request that failed, and why (the rest were not sent).
    pub failed: Option<(forward::Request, String)>,
    /// The reset request to record as observed (every request succeeded).
    pub acknowledge_reset: Option<String>,
}

impl Poller {
    /// Send a [`forward::Plan`] to `s`'s runtime, in order, stopping at the
    /// first failure. Each accepted request updates the cached report's
    /// phase (the next poll brings the rest).
    pub async fn execute(
        &self,
        s: &BotSession,
        strategy: &paperbot_crds::StrategyConfig,
        plan: forward::Plan,
    ) -> Executed {
        let mut out = Executed::default();
        if plan.requests.is_empty() {
            out.acknowledge_reset = plan.acknowledge_reset;
            return out;
        }
        let token = match self.token(s).await {
            Ok(t) => t,
            Err(e) => {
                out.failed = plan.requests.into_iter().next().map(|r| (r, e));
                return out;
            }
        };
        let base = endpoint(s, &self.settings);
        let key = ObjectRef::from_obj(s);
        for req in plan.requests {
            let answer = match &req {
                forward::Request::Reload(generation) => {
                    let body = forward::reload_body(strategy, *generation);
                    self.http
                        .post(&base, &req.path(), &token, Some(&body))
                        .await
                }
                _ => self.http.post::<()>(&base, &req.path(), &token, None).await,
            };
            match answer {
                Ok(resp) => {
                    // The runtime answers once the change is committed and in
                    // its status: the cached report follows (the next poll
                    // brings the rest).
                    if let Some(e) = self.reports.lock().get_mut(&key)
                        && let Some(st) = e.obs.status.as_mut()
                    {
                        st.phase = resp.phase;
                        match &req {
                            forward::Request::Reload(g) => {
                                st.strategy_revision = Some(g.to_string());
                            }
                            forward::Request::ResetBreaker(name) => {
                                if let Some(b) = st.breakers.iter_mut().find(|b| &b.name == name) {
                                    b.state = paperbot_crds::BreakerState::Closed;
                                    b.reason = Some(format!("reset by request: {}", resp.message));
                                }
                            }
                            _ => {}
                        }
                    }
                    out.done.push((req, resp.message));
                }
                Err(e) => {
                    out.failed = Some((req, e.to_string()));
                    return out;
                }
            }
        }
        out.acknowledge_reset = plan.acknowledge_reset;
        out
    }
}

#[cfg(test)]
mod tests {
    //! The poller against a real HTTP server on a local port (answering
    //! `GET /v1/status` as `bot-runtime serve` does) and the token Secret on
    //! the fake API server.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::{
        Json, Router,
        extract::State,
        http::{HeaderMap, StatusCode},
        routing::get,
    };
    use paperbot_crds::runtime_api::{ApiError, LedgerHealthStatus, RuntimePhase};
    use rust_decimal::Decimal;
    use rust_decimal_macros::dec;
    use serde_json::json;

    use super::*;
    use crate::fixtures::FakeApi;

    const TOKEN: &str = "tok-abc";

    #[test]
    fn endpoint_is_the_service_unless_overridden_by_an_allowed_annotation_or_a_template() {
        let mut s: BotSession = serde_json::from_value(json!({
            "apiVersion": "paperbot.io/v1alpha1", "kind": "BotSession",
            "metadata": {"name": "bot", "namespace": "ns",
                "annotations": {ENDPOINT_OVERRIDE_ANNOTATION: "http://10.0.0.9:8080/"}},
            "spec": {"accountRef": {"name": "a"}, "strategyRef": {"name": "s"},
                "allocation": "1", "symbols": ["X"],
                "marketData": {"source": "Simulated", "simulated": {"seed": 1, "candles": 5}}}
        }))
        .unwrap();
        let mut st = SyncSettings::default();
        assert_eq!(endpoint(&s, &st), "http://bot-runtime.ns.svc:8080");
        st.endpoint_template = Some("http://127.0.0.1:9/{namespace}/{name}".into());
        assert_eq!(endpoint(&s, &st), "http://127.0.0.1:9/ns/bot");
        st.allow_endpoint_override = true;
        assert_eq!(endpoint(&s, &st), "http://10.0.0.9:8080");
        s.metadata.annotations = None;
        assert_eq!(endpoint(&s, &st), "http://127.0.0.1:9/ns/bot");
    }

    /// `token` as a Secret's `data` value (base64).
    fn secret_value(token: &str) -> serde_json::Value {
        serde_json::to_value(k8s_openapi::ByteString(token.as_bytes().to_vec())).unwrap()
    }

    /// What the fake runtime answers.
    #[derive(Clone)]
    enum Answer {
        Status(Box<RuntimeStatus>),
        Error(StatusCode),
    }

    #[derive(Clone)]
    struct Runtime {
        answer: Arc<Mutex<Answer>>,
        requests: Arc<AtomicUsize>,
    }

    impl Runtime {
        fn set(&self, a: Answer) {
            *self.answer.lock().unwrap() = a;
        }
        fn set_equity(&self, equity: Decimal) {
            self.set(Answer::Status(Box::new(running(equity))));
        }
        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    fn running(equity: Decimal) -> RuntimeStatus {
        RuntimeStatus {
            session: "bot".into(),
            session_id: "bot".into(),
            phase: RuntimePhase::Running,
            ready: true,
            initial_cash: dec!(5000),
            cash: dec!(5000),
            equity,
            ledger: LedgerHealthStatus {
                reachable: true,
                reason: None,
            },
            ..Default::default()
        }
    }

    async fn status(
        State(rt): State<Runtime>,
        headers: HeaderMap,
    ) -> Result<Json<RuntimeStatus>, (StatusCode, Json<ApiError>)> {
        rt.requests.fetch_add(1, Ordering::SeqCst);
        let refuse = |code: StatusCode, message: &str| {
            (
                code,
                Json(ApiError {
                    error: "refused".into(),
                    message: message.into(),
                    field: None,
                }),
            )
        };
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if auth != format!("Bearer {TOKEN}") {
            return Err(refuse(StatusCode::UNAUTHORIZED, "bad token"));
        }
        let answer = rt.answer.lock().unwrap().clone();
        match answer {
            Answer::Status(s) => Ok(Json(*s)),
            Answer::Error(code) => Err(refuse(code, "ledger on fire")),
        }
    }

    /// A runtime API on a local port; returns it and its base URL.
    async fn serve() -> (Runtime, String) {
        let rt = Runtime {
            answer: Arc::new(Mutex::new(Answer::Status(Box::new(running(dec!(5000)))))),
            requests: Arc::default(),
        };
        let app = Router::new()
            .route(paperbot_crds::runtime_api::STATUS_PATH, get(status))
            .with_state(rt.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        (rt, format!("http://{addr}"))
    }

    fn settings() -> SyncSettings {
        SyncSettings {
            // Long: a test never waits for an interval, it checks `due`.
            interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
            concurrency: 4,
            not_reporting_after: 3,
            allow_endpoint_override: true,
            endpoint_template: None,
        }
    }

    /// The session `name` (pointing at `url`) and its token Secret in `fake`.
    fn put_session(fake: &FakeApi, name: &str, url: &str) -> BotSession {
        fake.put(json!({"apiVersion": "paperbot.io/v1alpha1", "kind": "BotSession",
            "metadata": {"name": name, "namespace": "ns",
                         "annotations": {ENDPOINT_OVERRIDE_ANNOTATION: url}},
            "spec": {"accountRef": {"name": "acct"}, "strategyRef": {"name": "strat"},
                     "allocation": "5000", "symbols": ["BTC-USD"],
                     "marketData": {"source": "Simulated", "simulated": {"seed": 1, "candles": 100}}}}));
        fake.put(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": child_name(name), "namespace": "ns"},
            "data": {TOKEN_KEY: secret_value(TOKEN)}}));
        serde_json::from_value(
            fake.get("paperbot.io/v1alpha1", "BotSession", "ns", name)
                .unwrap(),
        )
        .unwrap()
    }

    fn next_poll(p: &Poller, s: &BotSession) -> Instant {
        p.reports
            .lock()
            .get(&ObjectRef::from_obj(s))
            .and_then(|e| e.next_poll)
            .expect("a polled session has a next poll")
    }

    #[tokio::test]
    async fn a_poll_records_the_report_and_triggers_only_on_a_visible_change() {
        let (rt, url) = serve().await;
        let fake = FakeApi::new();
        let s = put_session(&fake, "bot", &url);
        let poller = Poller::new(settings(), fake.client());
        let key = ObjectRef::from_obj(&s);
        assert!(poller.reports.get(&key).is_none());

        assert!(poller.poll_one(&s).await, "the first answer triggers");
        let obs = poller.reports.get(&key).expect("recorded");
        assert_eq!(obs.status.as_ref().unwrap().equity, dec!(5000));
        assert_eq!((obs.failures, obs.not_reporting), (0, false));
        let secret_reads = fake
            .take_requests()
            .iter()
            .filter(|r| r.path.contains("/secrets/"))
            .count();
        assert_eq!(secret_reads, 1);

        assert!(!poller.poll_one(&s).await, "the same answer: nothing");
        rt.set_equity(dec!(5000.001));
        assert!(
            !poller.poll_one(&s).await,
            "a change below a cent is not shown in status: nothing"
        );
        assert_eq!(
            poller.reports.get(&key).unwrap().status.unwrap().equity,
            dec!(5000.001),
            "the report itself is kept exact"
        );
        rt.set_equity(dec!(5012.5));
        assert!(poller.poll_one(&s).await, "a changed equity triggers");
        assert!(!poller.poll_one(&s).await);
        assert_eq!(rt.requests(), 5);
        assert!(
            fake.take_requests().is_empty(),
            "the token is read once and cached"
        );
    }

    #[tokio::test]
    async fn failures_back_off_and_mark_the_runtime_not_reporting() {
        let (rt, url) = serve().await;
        let fake = FakeApi::new();
        let s = put_session(&fake, "bot", &url);
        let poller = Poller::new(settings(), fake.client());
        let key = ObjectRef::from_obj(&s);
        let interval = poller.settings.interval;
        assert!(poller.poll_one(&s).await);

        rt.set(Answer::Error(StatusCode::SERVICE_UNAVAILABLE));
        // Backoff in intervals after 1, 2, 3, 4, 5 failures: 1, 2, 4, 8, 8.
        for (failures, factor, triggers) in [
            (1, 1, false),
            (2, 2, false),
            (3, 4, true), // now not reporting: users see it
            (4, 8, false),
            (5, 8, false),
        ] {
            let before = Instant::now();
            assert_eq!(poller.poll_one(&s).await, triggers, "failure {failures}");
            let after = Instant::now();
            let obs = poller.reports.get(&key).unwrap();
            assert_eq!(obs.failures, failures);
            assert_eq!(obs.not_reporting, failures >= 3, "failure {failures}");
            assert!(
                obs.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("503") && e.contains("ledger on fire")),
                "{:?}",
                obs.last_error
            );
            assert!(
                obs.status.is_some(),
                "the last answer is kept across failures"
            );
            let next = next_poll(&poller, &s);
            assert!(
                next >= before + interval * factor && next <= after + interval * factor,
                "failure {failures}: next poll after {factor} intervals"
            );
            assert!(!poller.due(&s, after), "not polled again before then");
            assert!(poller.due(&s, next));
        }
        // It answers again: reporting, back to one interval.
        rt.set_equity(dec!(5000));
        assert!(poller.poll_one(&s).await, "reporting again triggers");
        let obs = poller.reports.get(&key).unwrap();
        assert_eq!((obs.failures, obs.not_reporting), (0, false));
        assert!(obs.last_error.is_none());
        assert!(next_poll(&poller, &s) <= Instant::now() + interval);
    }

    #[tokio::test]
    async fn an_unreachable_runtime_and_a_refused_token_are_failures() {
        // A port nothing listens on: bind, note it, close it.
        let closed = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let fake = FakeApi::new();
        let s = put_session(&fake, "bot", &closed);
        let poller = Poller::new(settings(), fake.client());
        assert!(poller.poll_one(&s).await, "the first observation triggers");
        let obs = poller.reports.get(&ObjectRef::from_obj(&s)).unwrap();
        assert_eq!(obs.failures, 1);
        assert!(
            obs.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("runtime unreachable")),
            "{:?}",
            obs.last_error
        );

        // The Secret now holds another token than the runtime's.
        let (rt, url) = serve().await;
        let s = put_session(&fake, "other", &url);
        fake.edit("v1", "Secret", "ns", &child_name("other"), |o| {
            o["data"][TOKEN_KEY] = secret_value("old");
        });
        fake.take_requests();
        poller.poll_one(&s).await;
        poller.poll_one(&s).await;
        let obs = poller.reports.get(&ObjectRef::from_obj(&s)).unwrap();
        assert_eq!(obs.failures, 2);
        assert!(
            obs.last_error
                .as_deref()
                .is_some_and(|e| e.contains("refused the session's API token (401)")),
            "{:?}",
            obs.last_error
        );
        assert_eq!(rt.requests(), 2);
        let secret_reads = fake
            .take_requests()
            .iter()
            .filter(|r| r.path.contains("/secrets/"))
            .count();
        assert_eq!(secret_reads, 2, "a refused token is read again");
    }

    #[tokio::test]
    async fn a_pass_polls_due_sessions_and_triggers_the_changed_ones() {
        let (rt, url) = serve().await;
        let fake = FakeApi::new();
        let a = put_session(&fake, "a", &url);
        let b = put_session(&fake, "b", &url);
        // Stopped for good: not polled.
        put_session(&fake, "done", &url);
        fake.edit("paperbot.io/v1alpha1", "BotSession", "ns", "done", |o| {
            o["status"] = json!({"phase": "Completed"});
        });
        let store = fake.stores().sessions;
        let poller = Poller::new(settings(), fake.client());
        let triggered = Mutex::new(Vec::new());
        let trigger = |r: ObjectRef<BotSession>| triggered.lock().unwrap().push(r.name);

        assert_eq!(poller.pass(&store, &trigger).await, 2);
        let mut names = std::mem::take(&mut *triggered.lock().unwrap());
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(rt.requests(), 2);

        // Nothing is due within the interval.
        assert_eq!(poller.pass(&store, &trigger).await, 0);
        assert_eq!(rt.requests(), 2);

        // Due again, one of them changed (both share the fake's answer, so
        // make `a` due only).
        poller
            .reports
            .lock()
            .get_mut(&ObjectRef::from_obj(&a))
            .unwrap()
            .next_poll = Some(Instant::now());
        rt.set_equity(dec!(4990));
        assert_eq!(poller.pass(&store, &trigger).await, 1);
        assert_eq!(*triggered.lock().unwrap(), ["a"]);
        assert_eq!(
            poller
                .reports
                .get(&ObjectRef::from_obj(&b))
                .unwrap()
                .status
                .unwrap()
                .equity,
            dec!(5000),
            "b was not due"
        );
        assert_eq!(poller.reports.len(), 2);

        // A session that no longer needs polling is forgotten.
        fake.remove("paperbot.io/v1alpha1", "BotSession", "ns", "b");
        let store = fake.stores().sessions;
        poller.pass(&store, &trigger).await;
        assert_eq!(poller.reports.len(), 1);
        assert!(poller.reports.get(&ObjectRef::from_obj(&b)).is_none());
    }
}
