//! The operator at scale: the operator binary (a separate process, under the
//! chart's ServiceAccount and RBAC) against the real control plane with kwok
//! nodes, one PaperAccount, one StrategyConfig and N simulated BotSessions.
//!
//! [`ScaleRun`] runs the phases one by one so that a caller can add its own
//! (e.g. a fake runtime answering the sessions' status endpoints, reached
//! through [`paperbot_crds::runtime_api::ENDPOINT_OVERRIDE_ANNOTATION`] set
//! by [`ScaleOptions::session_annotations`]); [`run`] runs them all:
//!
//! 1. [`ScaleRun::setup`]: namespace, operator identity, enough kwok nodes,
//!    the ledger Secret, the account and the strategy;
//! 2. [`ScaleRun::start_operator`]: the binary, until `/readyz` answers 200;
//! 3. [`ScaleRun::ramp`]: create N sessions (a few at a time) and wait until
//!    all are `Ready`; count the operator's API requests per session from the
//!    audit log and its reconciles from its `/metrics`;
//! 4. [`ScaleRun::steady`]: nothing changes for a while: the operator's
//!    writes, reconciles triggered by watch events, and its resident memory;
//! 5. [`ScaleRun::restart`]: SIGTERM while idle, start again: writes of a
//!    restarted operator over an unchanged fleet;
//! 6. [`ScaleRun::sigterm_under_load`]: change the strategy (every session's
//!    children are re-applied) and send SIGTERM a second later;
//! 7. [`ScaleRun::cleanup`]: start the operator once more, delete every
//!    session (its finalizer runs), delete the namespace.
//!
//! Figures are measured, never asserted as timings (the machine is shared);
//! the test asserts the counts (no writes from an unchanged fleet or a
//! restart, no reconciles from the operator's own writes).

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
    runtime::watcher,
};
use paperbot_crds::BotSession;

use crate::{AuditEvent, ControlPlane, Identity};

/// Pods one scale node takes (kwok nodes run no process, so this is only
/// the scheduler's limit).
const PODS_PER_NODE: usize = 250;

/// Annotations of session `index` (named `name`), e.g. a runtime endpoint
/// override pointing at a fake runtime.
pub type SessionAnnotations = Arc<dyn Fn(usize, &str) -> BTreeMap<String, String> + Send + Sync>;

/// What to run.
#[derive(Clone)]
pub struct ScaleOptions {
    /// Number of BotSessions.
    pub sessions: usize,
    /// The `paperbot-operator` binary.
    pub operator_bin: PathBuf,
    /// Extra arguments for the operator (after the harness's own).
    pub operator_args: Vec<String>,
    /// Sessions created concurrently by the harness.
    pub creators: usize,
    /// Length of the steady-state window.
    pub steady_window: Duration,
    /// How long a restarted operator is watched for writes.
    pub restart_window: Duration,
    /// Give up waiting for all sessions to be Ready after this long.
    pub ready_timeout: Duration,
    /// Annotations per session.
    pub session_annotations: SessionAnnotations,
    /// Directory for the operator's logs of this run.
    pub log_dir: PathBuf,
}

impl ScaleOptions {
    /// Defaults for `sessions` sessions run by `operator_bin`: 8 creators, a
    /// 60 s steady window, 20 s after a restart, 30 min to get Ready, no
    /// annotations, logs under `target/scale/`.
    pub fn new(sessions: usize, operator_bin: PathBuf) -> Self {
        Self {
            sessions,
            operator_bin,
            operator_args: Vec::new(),
            creators: 8,
            steady_window: Duration::from_secs(60),
            restart_window: Duration::from_secs(20),
            ready_timeout: Duration::from_secs(30 * 60),
            session_annotations: Arc::new(|_, _| BTreeMap::new()),
            log_dir: crate::repo().join("target/scale"),
        }
    }
}

/// Requests by verb.
pub type VerbCounts = BTreeMap<String, usize>;

/// What one run measured. Memory in MiB (resident set), times in seconds.
#[derive(Clone, Debug, Default)]
pub struct ScaleReport {
    /// BotSessions.
    pub sessions: usize,
    /// From the first create to the last session Ready.
    pub ramp_secs: f64,
    /// Operator requests during the ramp (first create to Ready plus 10 s), by verb.
    pub ramp_requests: VerbCounts,
    /// Status patches of BotSessions during the ramp.
    pub ramp_status_writes: usize,
    /// Events created or patched by the operator during the ramp.
    pub ramp_events: usize,
    /// BotSession reconciles during the ramp (operator metrics).
    pub ramp_reconciles: f64,
    /// Reconcile triggers during the ramp by cause (operator metrics; absent
    /// from an operator without the metric).
    pub ramp_triggers: BTreeMap<String, f64>,
    /// Watch events the operator ignored because they were its own writes.
    pub ramp_own_write_events: f64,
    /// The most common sequences of status versions a session went through
    /// during the ramp (`phase/Ready reason: Ready message` each), with how
    /// many sessions followed each.
    pub ramp_status_sequences: Vec<(usize, Vec<String>)>,
    /// Peak operator RSS before the load/SIGTERM phase.
    pub operator_peak_rss_mib: f64,
    /// Median operator RSS over the steady window.
    pub operator_steady_rss_mib: f64,
    /// Writes per minute during the steady window.
    pub steady_writes_per_min: f64,
    /// Writes during the steady window, as `verb resource ns/name`.
    pub steady_writes: Vec<String>,
    /// BotSession reconciles during the steady window (periodic resyncs included).
    pub steady_reconciles: f64,
    /// Reconciles triggered by watch events during the steady window.
    pub steady_event_triggers: f64,
    /// SIGTERM to exit with an idle operator.
    pub sigterm_idle_secs: f64,
    /// Writes by a restarted operator over the unchanged fleet.
    pub restart_writes: Vec<String>,
    /// SIGTERM to exit one second after every session was requeued.
    pub sigterm_load_secs: f64,
    /// Peak kube-apiserver RSS during the run (when this process started the plane).
    pub apiserver_peak_rss_mib: Option<f64>,
    /// Peak etcd RSS during the run.
    pub etcd_peak_rss_mib: Option<f64>,
    /// From deleting every session to none left (finalizers run).
    pub delete_secs: f64,
}

impl ScaleReport {
    /// Operator requests per session during the ramp.
    pub fn requests_per_session(&self) -> f64 {
        self.ramp_requests.values().sum::<usize>() as f64 / self.sessions.max(1) as f64
    }

    /// Header of [`Self::row`].
    pub fn header() -> &'static str {
        "| sessions | ramp to all Ready (s) | requests/session (get, list, watch, create, patch, delete) | status writes/session | events/session | reconciles/session | operator peak / steady RSS (MiB) | steady writes/min | steady event-triggered reconciles | restart writes | SIGTERM idle / under load (s) | apiserver / etcd peak RSS (MiB) |\n|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---|---|"
    }

    /// One Markdown table row.
    pub fn row(&self) -> String {
        let n = self.sessions.max(1) as f64;
        let verb = |v: &str| *self.ramp_requests.get(v).unwrap_or(&0) as f64 / n;
        let opt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0}"));
        format!(
            "| {} | {:.1} | {:.2} ({:.2}, {:.2}, {:.2}, {:.2}, {:.2}, {:.2}) | {:.2} | {:.2} | {:.2} | {:.1} / {:.1} | {:.1} | {:.0} | {} | {:.2} / {:.2} | {} / {} |",
            self.sessions,
            self.ramp_secs,
            self.requests_per_session(),
            verb("get"),
            verb("list"),
            verb("watch"),
            verb("create"),
            verb("patch"),
            verb("delete"),
            self.ramp_status_writes as f64 / n,
            self.ramp_events as f64 / n,
            self.ramp_reconciles / n,
            self.operator_peak_rss_mib,
            self.operator_steady_rss_mib,
            self.steady_writes_per_min,
            self.steady_event_triggers,
            self.restart_writes.len(),
            self.sigterm_idle_secs,
            self.sigterm_load_secs,
            opt(self.apiserver_peak_rss_mib),
            opt(self.etcd_peak_rss_mib),
        )
    }
}

/// Run every phase for `opts.sessions` sessions and return the figures.
pub async fn run(cp: &'static ControlPlane, opts: ScaleOptions) -> ScaleReport {
    let mut run = ScaleRun::setup(cp, opts).await;
    run.start_operator();
    run.ramp().await;
    run.steady().await;
    run.restart().await;
    run.sigterm_under_load().await;
    run.cleanup().await;
    run.report
}

/// A running operator process.
pub struct OperatorProcess {
    child: Child,
    /// `host:port` of its `/metrics`, `/readyz`.
    pub metrics_addr: String,
}

impl OperatorProcess {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGTERM and wait for the exit; returns the time it took (at most
    /// 60 s, then the process is killed).
    pub fn sigterm(mut self) -> Duration {
        let started = Instant::now();
        // SAFETY: signalling a child process this struct owns.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return started.elapsed();
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One `GET path` over HTTP/1.0 to `addr`; the body when the status is 200.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.")
        .then_some(())
        .filter(|_| head.split_whitespace().nth(1) == Some("200"))?;
    Some(body.to_string())
}

/// Sum of the samples of metric `name` whose labels include `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r),
                None => (series, ""),
            };
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Samples by label of one metric: `label value → sum`.
pub fn metric_by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = l.rsplit_once(' ') else {
            continue;
        };
        let Some((metric, rest)) = series.split_once('{') else {
            continue;
        };
        if metric != name {
            continue;
        }
        let Some(v) = rest
            .split(&format!("{label}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        if let Ok(x) = value.parse::<f64>() {
            *out.entry(v.to_string()).or_insert(0.0) += x;
        }
    }
    out
}

/// Resident set size of `pid` in MiB (from `/proc/<pid>/status`).
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Samples the RSS of a set of processes every 250 ms on a thread.
struct RssSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Instant, String, f64)>>>,
    pids: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl RssSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let pids: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
        let (s, sm, p) = (stop.clone(), samples.clone(), pids.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let now = Instant::now();
                let watched = p.lock().map(|p| p.clone()).unwrap_or_default();
                for (label, pid) in watched {
                    if let Some(rss) = rss_mib(pid)
                        && let Ok(mut v) = sm.lock()
                    {
                        v.push((now, label, rss));
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Self {
            stop,
            samples,
            pids,
        }
    }

    fn watch(&self, label: &str, pid: u32) {
        if let Ok(mut p) = self.pids.lock() {
            p.insert(label.to_string(), pid);
        }
    }

    fn forget(&self, label: &str) {
        if let Ok(mut p) = self.pids.lock() {
            p.remove(label);
        }
    }

    /// RSS samples of `label` taken in `[from, to]`.
    fn between(&self, label: &str, from: Instant, to: Instant) -> Vec<f64> {
        self.samples
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|(t, l, _)| l == label && *t >= from && *t <= to)
                    .map(|(_, _, r)| *r)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The state of one run between phases.
pub struct ScaleRun {
    /// The control plane.
    pub cp: &'static ControlPlane,
    /// What to run.
    pub opts: ScaleOptions,
    /// The run's namespace.
    pub ns: String,
    /// The operator's identity (chart ServiceAccount and RBAC).
    pub identity: Identity,
    /// The admin client (creates the sessions).
    pub admin: kube::Client,
    /// The running operator, between start and stop.
    pub operator: Option<OperatorProcess>,
    /// Figures so far.
    pub report: ScaleReport,
    sampler: RssSampler,
    started: Instant,
    starts: usize,
}

impl ScaleRun {
    /// A namespace `scale-<N>-<pid>` with the ledger Secret, PaperAccount
    /// `acct` and StrategyConfig `strat`; enough kwok nodes for N pods.
    pub async fn setup(cp: &'static ControlPlane, opts: ScaleOptions) -> Self {
        cp.install_crds();
        let identity = cp.operator_identity("scale-operator");
        let ns = cp.namespace(&format!("scale-{}", opts.sessions));
        let nodes = opts.sessions.div_ceil(PODS_PER_NODE) + 1;
        let mut manifest = String::new();
        for i in 0..nodes {
            manifest.push_str(&format!(
                "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: scale-node-{i}\n  annotations: {{node.alpha.kubernetes.io/ttl: \"0\", kwok.x-k8s.io/node: fake}}\n  labels: {{kubernetes.io/hostname: scale-node-{i}, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}}\nstatus:\n  allocatable: {{cpu: \"1000\", memory: 4Ti, pods: \"{PODS_PER_NODE}\"}}\n  capacity: {{cpu: \"1000\", memory: 4Ti, pods: \"{PODS_PER_NODE}\"}}\n"
            ));
        }
        cp.kubectl_stdin_ok(&["apply", "-f", "-"], &manifest);
        // Admission taints new nodes not-ready; nothing lifts it (see start.sh).
        let _ = cp.kubectl(&[
            "taint",
            "nodes",
            "--all",
            "node.kubernetes.io/not-ready:NoSchedule-",
        ]);
        cp.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "-n",
            &ns,
            "pg-ledger",
            &format!("--from-literal=url=postgres://paperbot:secret@pg-rw.{ns}.svc:5432/paperbot"),
        ]);
        cp.kubectl_stdin_ok(
            &["apply", "-n", &ns, "-f", "-"],
            r#"apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata: {name: acct}
spec: {initialBalance: "100000000"}
---
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {name: strat}
spec:
  signals: {smaCrossover: {fastPeriod: 10, slowPeriod: 30}}
  risk: {maxPositionSizePct: "10"}
"#,
        );
        let sampler = RssSampler::start();
        if let Some(state) = &cp.state {
            for (label, file) in [("apiserver", "kube-apiserver"), ("etcd", "etcd")] {
                if let Some(pid) = std::fs::read_to_string(state.join("pids").join(file))
                    .ok()
                    .and_then(|p| p.trim().parse().ok())
                {
                    sampler.watch(label, pid);
                }
            }
        }
        std::fs::create_dir_all(&opts.log_dir).expect("creating the log directory");
        let admin = cp.client().await;
        Self {
            cp,
            report: ScaleReport {
                sessions: opts.sessions,
                ..Default::default()
            },
            opts,
            ns,
            identity,
            admin,
            operator: None,
            sampler,
            started: Instant::now(),
            starts: 0,
        }
    }

    /// Start the operator binary for the run's namespace, as the identity,
    /// and wait until `/readyz` answers 200 (its caches are synced).
    pub fn start_operator(&mut self) {
        assert!(self.operator.is_none(), "the operator already runs");
        self.starts += 1;
        let log = self
            .opts
            .log_dir
            .join(format!("operator-{}-{}.log", self.ns, self.starts));
        let log_file = std::fs::File::create(&log).expect("creating the operator log");
        let err_file = log_file.try_clone().expect("cloning the log handle");
        let mut child = Command::new(&self.opts.operator_bin)
            .args([
                "--namespaces",
                &self.ns,
                "--leader-election=false",
                "--metrics-addr",
                "127.0.0.1:0",
                "--log-format",
                "text",
                "--runtime-image",
                "ghcr.io/paperbot/bot-runtime:scale",
                "--ledger-database-secret",
                "pg-ledger",
            ])
            .args(&self.opts.operator_args)
            .env("KUBECONFIG", &self.identity.kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("PAPERBOT_SCALE_RUST_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting the operator {}: {e}",
                    self.opts.operator_bin.display()
                )
            });
        // Port 0, read back from the log: a port picked here could be taken
        // by another process before the operator binds it.
        let addr = paperbot_testkit::wait_for_logged_addr(
            &mut child,
            &log,
            "/readyz",
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("the operator {e}"));
        let op = OperatorProcess {
            child,
            metrics_addr: addr.to_string(),
        };
        self.sampler.watch("operator", op.pid());
        let deadline = Instant::now() + Duration::from_secs(120);
        while http_get(&op.metrics_addr, "/readyz").is_none() {
            assert!(
                Instant::now() < deadline,
                "the operator did not become ready within 120 s; log: {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.operator = Some(op);
    }

    /// SIGTERM the operator; the time to its exit.
    pub fn stop_operator(&mut self) -> Duration {
        let op = self.operator.take().expect("the operator runs");
        self.sampler.forget("operator");
        op.sigterm()
    }

    /// The operator's `/metrics`.
    pub fn metrics(&self) -> String {
        let op = self.operator.as_ref().expect("the operator runs");
        http_get(&op.metrics_addr, "/metrics").unwrap_or_default()
    }

    fn session_manifest(&self, i: usize) -> serde_json::Value {
        let name = format!("bot-{i:05}");
        let annotations = (self.opts.session_annotations)(i, &name);
        serde_json::json!({
            "apiVersion": "paperbot.io/v1alpha1",
            "kind": "BotSession",
            "metadata": {"name": name, "namespace": self.ns, "annotations": annotations},
            "spec": {
                "accountRef": {"name": "acct"},
                "strategyRef": {"name": "strat"},
                "allocation": "10",
                "symbols": ["SIM-BTC"],
                "marketData": {"source": "Simulated", "simulated": {"seed": i as u64 + 1, "candles": 1000}}
            }
        })
    }

    /// Operator requests audited in `[from, to]`.
    pub fn requests_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<AuditEvent> {
        self.cp
            .audit_events(&self.identity.username)
            .into_iter()
            .filter(|e| e.received >= from && e.received <= to)
            .collect()
    }

    /// Create the sessions and wait until every one is Ready; count what the
    /// operator did meanwhile.
    pub async fn ramp(&mut self) {
        let n = self.opts.sessions;
        let before = self.metrics();
        let api: Api<BotSession> = Api::namespaced(self.admin.clone(), &self.ns);
        let ready = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
        let sequences: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
        let watching = {
            let (ready, sequences) = (ready.clone(), sequences.clone());
            let api = api.clone();
            tokio::spawn(async move {
                let mut events = watcher(api, watcher::Config::default()).boxed();
                while let Ok(Some(ev)) = events.try_next().await {
                    let (watcher::Event::Apply(s) | watcher::Event::InitApply(s)) = ev else {
                        continue;
                    };
                    let Some(name) = s.metadata.name.clone() else {
                        continue;
                    };
                    let ready_cond = s
                        .status
                        .as_ref()
                        .and_then(|st| st.conditions.iter().find(|c| c.type_ == "Ready").cloned());
                    let is_ready = ready_cond.as_ref().is_some_and(|c| c.status == "True");
                    if let Some(st) = &s.status
                        && let Ok(mut seqs) = sequences.lock()
                    {
                        let mut version = format!(
                            "{:?}/{}: {}",
                            st.phase,
                            ready_cond.as_ref().map_or("", |c| c.reason.as_str()),
                            ready_cond.as_ref().map_or("", |c| c.message.as_str())
                        );
                        if std::env::var("PAPERBOT_SCALE_FULL_STATUS").is_ok() {
                            let mut v = serde_json::to_value(st).unwrap_or_default();
                            if let Some(cs) = v["conditions"].as_array_mut() {
                                for c in cs {
                                    c.as_object_mut().map(|o| o.remove("lastTransitionTime"));
                                }
                            }
                            version = v.to_string();
                        }
                        let version = version.replace(&name, "<session>");
                        let seq = seqs.entry(name.clone()).or_default();
                        if seq.last() != Some(&version) {
                            seq.push(version);
                        }
                    }
                    if let Ok(mut r) = ready.lock() {
                        if is_ready {
                            r.insert(name);
                        } else {
                            r.remove(&name);
                        }
                    }
                }
            })
        };
        let t0 = Utc::now();
        let started = Instant::now();
        let manifests: Vec<serde_json::Value> = (0..n).map(|i| self.session_manifest(i)).collect();
        futures::stream::iter(manifests)
            .map(|m| {
                let api = api.clone();
                async move {
                    let s: BotSession = serde_json::from_value(m).expect("valid session");
                    api.create(&PostParams::default(), &s)
                        .await
                        .expect("session created");
                }
            })
            .buffer_unordered(self.opts.creators.max(1))
            .collect::<Vec<()>>()
            .await;
        let deadline = started + self.opts.ready_timeout;
        loop {
            let count = ready.lock().map(|r| r.len()).unwrap_or(0);
            if count >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {count} of {n} sessions Ready after {:?}",
                self.opts.ready_timeout
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.report.ramp_secs = started.elapsed().as_secs_f64();
        watching.abort();
        let mut counted: BTreeMap<Vec<String>, usize> = BTreeMap::new();
        for seq in sequences
            .lock()
            .map(|s| s.values().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            *counted.entry(seq).or_default() += 1;
        }
        let mut by_count: Vec<(usize, Vec<String>)> =
            counted.into_iter().map(|(seq, n)| (n, seq)).collect();
        by_count.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        by_count.truncate(3);
        self.report.ramp_status_sequences = by_count;
        // The ramp ends when the fleet has settled: the StatefulSet controller
        // and kwok finish their updates and the operator's trailing writes
        // (account and strategy status) land.
        self.settle().await;
        let t1 = Utc::now();
        let after = self.metrics();
        let requests = self.requests_between(t0, t1);
        for e in &requests {
            *self.report.ramp_requests.entry(e.verb.clone()).or_default() += 1;
        }
        self.report.ramp_status_writes = requests
            .iter()
            .filter(|e| e.is_write() && e.resource == "botsessions" && e.subresource == "status")
            .count();
        self.report.ramp_events = requests
            .iter()
            .filter(|e| e.is_write() && e.resource == "events")
            .count();
        let reconciles = |t: &str| {
            metric_sum(
                t,
                "paperbot_operator_reconciles_total",
                &[("controller", "botsession")],
            )
        };
        self.report.ramp_reconciles = reconciles(&after) - reconciles(&before);
        let (tb, ta) = (
            metric_by_label(
                &before,
                "paperbot_operator_reconcile_triggers_total",
                "cause",
            ),
            metric_by_label(
                &after,
                "paperbot_operator_reconcile_triggers_total",
                "cause",
            ),
        );
        self.report.ramp_triggers = ta
            .iter()
            .map(|(k, v)| (k.clone(), v - tb.get(k).copied().unwrap_or(0.0)))
            .collect();
        let own = |t: &str| {
            metric_sum(
                t,
                "paperbot_operator_watch_events_total",
                &[("outcome", "own_write")],
            )
        };
        self.report.ramp_own_write_events = own(&after) - own(&before);
    }

    /// Wait until the operator has been asked for no reconcile for 10 s (at
    /// most 5 min): the control plane has finished reacting to the last
    /// change.
    pub async fn settle(&self) {
        let triggers = |t: &str| metric_sum(t, "paperbot_operator_reconcile_triggers_total", &[]);
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut last = triggers(&self.metrics());
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = triggers(&self.metrics());
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
        }
    }

    /// Nothing changes for the steady window: count writes and event
    /// triggers, sample memory.
    pub async fn steady(&mut self) {
        let before = self.metrics();
        let t0 = Utc::now();
        let i0 = Instant::now();
        tokio::time::sleep(self.opts.steady_window).await;
        let t1 = Utc::now();
        let i1 = Instant::now();
        let after = self.metrics();
        let writes: Vec<String> = self
            .requests_between(t0, t1)
            .into_iter()
            .filter(AuditEvent::is_write)
            .map(|e| e.to_string())
            .collect();
        self.report.steady_writes_per_min =
            writes.len() as f64 * 60.0 / self.opts.steady_window.as_secs_f64();
        self.report.steady_writes = writes;
        let reconciles = |t: &str| {
            metric_sum(
                t,
                "paperbot_operator_reconciles_total",
                &[("controller", "botsession")],
            )
        };
        self.report.steady_reconciles = reconciles(&after) - reconciles(&before);
        let triggers = |t: &str| metric_sum(t, "paperbot_operator_reconcile_triggers_total", &[]);
        self.report.steady_event_triggers = triggers(&after) - triggers(&before);
        self.report.operator_steady_rss_mib = median(&self.sampler.between("operator", i0, i1));
        self.report.operator_peak_rss_mib =
            max(&self.sampler.between("operator", self.started, i1));
    }

    /// SIGTERM the idle operator, start it again and count its writes over
    /// the unchanged fleet.
    pub async fn restart(&mut self) {
        self.report.sigterm_idle_secs = self.stop_operator().as_secs_f64();
        let t0 = Utc::now();
        self.start_operator();
        tokio::time::sleep(self.opts.restart_window).await;
        let t1 = Utc::now();
        self.report.restart_writes = self
            .requests_between(t0, t1)
            .into_iter()
            .filter(AuditEvent::is_write)
            .map(|e| e.to_string())
            .collect();
    }

    /// Change the strategy (every session's children change), wait a
    /// second, SIGTERM; the time to exit.
    pub async fn sigterm_under_load(&mut self) {
        let strategies: Api<paperbot_crds::StrategyConfig> =
            Api::namespaced(self.admin.clone(), &self.ns);
        strategies
            .patch(
                "strat",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"risk": {"maxPositionSizePct": "11"}}})),
            )
            .await
            .expect("strategy patched");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Instant::now();
        for (label, field) in [
            ("apiserver", &mut self.report.apiserver_peak_rss_mib),
            ("etcd", &mut self.report.etcd_peak_rss_mib),
        ] {
            let v = self.sampler.between(label, self.started, now);
            *field = (!v.is_empty()).then(|| max(&v));
        }
        self.report.sigterm_load_secs = self.stop_operator().as_secs_f64();
    }

    /// Start the operator, delete every session (the finalizers run), stop
    /// it and delete the namespace.
    pub async fn cleanup(&mut self) {
        self.start_operator();
        let started = Instant::now();
        self.cp.kubectl_ok(&[
            "delete",
            "botsessions",
            "--all",
            "-n",
            &self.ns,
            "--wait=false",
        ]);
        let api: Api<BotSession> = Api::namespaced(self.admin.clone(), &self.ns);
        let deadline = started + self.opts.ready_timeout;
        loop {
            let left = api
                .list_metadata(&Default::default())
                .await
                .map(|l| l.items.len())
                .unwrap_or(usize::MAX);
            if left == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{left} sessions still there after {:?}",
                self.opts.ready_timeout
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.report.delete_secs = started.elapsed().as_secs_f64();
        self.stop_operator();
        self.cp
            .kubectl_ok(&["delete", "namespace", &self.ns, "--wait=false"]);
    }
}

/// The operator binary: `PAPERBOT_OPERATOR_BIN`, else built by cargo
/// (`--release` when `release`) from this workspace.
pub fn operator_binary(release: bool) -> PathBuf {
    if let Ok(bin) = std::env::var("PAPERBOT_OPERATOR_BIN") {
        let p = PathBuf::from(bin);
        assert!(
            p.is_file(),
            "PAPERBOT_OPERATOR_BIN={} is not a file",
            p.display()
        );
        return p;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::repo()).args([
        "build",
        "--locked",
        "-p",
        "paperbot-operator",
        "--bin",
        "paperbot-operator",
    ]);
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("running cargo build");
    assert!(
        out.status.success(),
        "building the operator failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| crate::repo().join("target"));
    let bin = target
        .join(if release { "release" } else { "debug" })
        .join("paperbot-operator");
    assert!(bin.is_file(), "no operator binary at {}", bin.display());
    bin
}
