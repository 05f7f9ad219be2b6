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
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(5),
            concurrency: 32,
            not_reporting_after: 3,
            allow_endpoint_override: false,
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
}

/// Base URL of a session's runtime API.
pub fn endpoint(session: &BotSession, settings: &SyncSettings) -> String {
    if settings.allow_endpoint_override
        && let Some(url) = session.annotations().get(ENDPOINT_OVERRIDE_ANNOTATION)
    {
        return url.trim_end_matches('/').to_string();
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
