//! The dashboards and alerts against a real Prometheus (Debian's
//! `prometheus`, started on loopback by the test) scraping real runtimes
//! and the operator:
//!
//! - three `bot-runtime serve` processes replay the quickstart data for
//!   BotSessions the operator (in-process, the chart's ServiceAccount and
//!   RBAC, leader election on, `/metrics` served as the binary serves it)
//!   reconciles on the real control plane: one trips a breaker that stays
//!   open, one trades and lets its autopilot adjust, one runs slowly
//!   through the whole test; a fourth trades live prices from a local
//!   upstream while its preferred source is unreachable (a fallback serves);
//! - Prometheus scrapes them every second as the chart's PodMonitor and
//!   ServiceMonitor would (jobs `bot-runtime` and `paperbot-operator`,
//!   target labels `namespace` and `pod`, `honor_labels` for the operator)
//!   and loads `charts/paperbot/files/alerts.yaml`;
//! - `promtool check metrics` is clean on every scrape; every rule loads and
//!   evaluates without error;
//! - every template variable query, every panel query (variables replaced
//!   by the values the variables' own queries give) and every part of every
//!   alert expression returns series, every selector in them matches
//!   series, the labels they group, match or join on exist on those series,
//!   and the results carry the labels the legends and the alerts'
//!   annotations use;
//! - the chart renders the ServiceMonitor, PodMonitor, PrometheusRule and
//!   dashboard ConfigMaps, whose selectors and ports match what the operator
//!   really creates.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::{Child, Command},
    sync::Arc,
    time::{Duration, Instant},
};

use paperbot_crds::SecretKeyRef;
use paperbot_e2e::{ControlPlane, control_plane, repo};
use paperbot_operator::{
    builders::{RuntimeSettings, child_name},
    leader::{LeaderConfig, LeaderElection},
    ledger::LedgerSettings,
    server::{ServerState, serve_on},
    sync::SyncSettings,
};
use serde_json::Value;

use crate::{
    obs,
    operator::{Operator, base_context},
    sync::{Runtime, free_port, get_json, wait_for},
};

const USER: &str = "e2e-prometheus";
/// What the test's scrape configuration calls the jobs (the chart's
/// monitors name them after `app.kubernetes.io/name`).
const RUNTIME_JOB: &str = "bot-runtime";
const OPERATOR_JOB: &str = "paperbot-operator";
/// The session the session-detail dashboard is checked on (its breaker is
/// open, so every panel has something to show).
const DETAIL_SESSION: &str = "tripper";

/// A Prometheus server on loopback, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Start Prometheus with `config` (YAML) in a temporary directory and
    /// wait until it is ready.
    ///
    /// Prometheus cannot be told to bind port 0 and report it, so the port
    /// is picked here; should another process take it before Prometheus
    /// binds it, Prometheus exits and is started again on another port.
    fn start(config: &str) -> Prometheus {
        let mut dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "the prometheus server is needed for this test ({e}): apt-get install \
                         prometheus (Debian/Ubuntu)"
                    )
                });
            let mut p = Prometheus {
                child,
                url: format!("http://127.0.0.1:{port}"),
                dir,
            };
            let ready = wait_for("Prometheus ready or exited", 60, || {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Some(Err(status));
                }
                let out = Command::new("curl")
                    .args(["-sf", &format!("{}/-/ready", p.url)])
                    .output()
                    .ok()?;
                out.status.success().then_some(Ok(()))
            });
            match ready {
                Ok(()) => return p,
                Err(status) if attempt < 3 && p.log().contains("address already in use") => {
                    println!("Prometheus: port {port} was taken ({status}); another port");
                    dir = std::mem::replace(&mut p.dir, tempfile::tempdir().expect("temp dir"));
                }
                Err(status) => panic!("Prometheus exited ({status}):\n{}", p.log()),
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Prometheus HTTP API.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// GET `path` with `params`; the `data` of a `success` answer, or the
    /// error Prometheus gave.
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params)
            .map_err(|e| e.to_string())?;
        let resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    /// An instant query's result vector (label sets), at now.
    async fn query(&self, q: &str) -> Result<Vec<BTreeMap<String, String>>, String> {
        let data = self.get("/api/v1/query", &[("query", q)]).await?;
        Ok(match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| labels(&r["metric"]))
                .collect(),
            // A scalar is one value without labels.
            Some("scalar") => vec![BTreeMap::new()],
            other => return Err(format!("unexpected result type {other:?}")),
        })
    }

    /// Series matching `selector` over the last 5 minutes.
    async fn series(&self, selector: &str) -> Result<Vec<BTreeMap<String, String>>, String> {
        let end = chrono::Utc::now().timestamp();
        let start = (end - 300).to_string();
        let end = end.to_string();
        let data = self
            .get(
                "/api/v1/series",
                &[("match[]", selector), ("start", &start), ("end", &end)],
            )
            .await?;
        Ok(data.as_array().into_iter().flatten().map(labels).collect())
    }
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// The account, two strategies (one trips its breaker at the first losing
/// round trip and keeps it open) and three sessions replaying the
/// quickstart data (absolute paths: the runtimes run from temporary
/// directories).
/// A local upstream shaped like Binance's public `ticker/price` (every
/// path answers it): BTCUSDT zig-zags by 1 % a second around 100, so the
/// live session's candles move. Serves until the test's runtime ends.
async fn live_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port for the fake upstream");
    let addr = listener.local_addr().expect("local address");
    let app = axum::Router::new().fallback(|| async {
        const CYCLE: [u32; 4] = [100, 101, 100, 99];
        let s = chrono::Utc::now().timestamp().rem_euclid(4) as usize;
        (
            [("content-type", "application/json")],
            format!(
                r#"[{{"symbol":"BTCUSDT","price":"{}.00000000"}}]"#,
                CYCLE[s]
            ),
        )
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// `manifests` plus a live session (`feedy`) whose preferred source
/// (CoinGecko-shaped, at `dead`: nothing listens) fails, so the fallback
/// (Binance-shaped, at `upstream`) serves: every market-data series of the
/// dashboards and of `PaperbotMarketDataDegraded` exists.
fn manifests_with_live(upstream: &str, dead: &str) -> String {
    format!(
        r#"{}---
apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {{name: feedy}}
spec:
  accountRef: {{name: desk}}
  strategyRef: {{name: trend}}
  allocation: "40000"
  symbols: [BTC-USD]
  marketData:
    source: Live
    live:
      interval: 2s
      pollInterval: 1s
      maxAge: 30s
      jumpBandPct: "20"
      warmUp: Record
      useSharedFeed: false
      sources:
        - {{name: gecko, kind: CoinGecko, requestsPerMinute: 600, baseUrl: "{dead}"}}
        - {{name: binance, kind: Binance, requestsPerMinute: 600, baseUrl: "{upstream}"}}
"#,
        manifests()
    )
}

fn manifests() -> String {
    let data = repo().join("examples/data");
    let btc = data.join("BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv");
    let ltc = data.join("LTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv");
    let strategy = |name: &str, breakers: &str| {
        format!(
            r#"apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {{name: {name}}}
spec:
  mode: Moderate
  intelLevel: 6
  signals:
    smaCrossover: {{fastPeriod: 20, slowPeriod: 60, weight: "2"}}
    momentum: {{period: 15, thresholdPct: "0.3"}}
    rsi: {{period: 14, oversold: "30", overbought: "70"}}
  risk: {{maxPositionSizePct: "10", stopLossPct: "1.5", takeProfitPct: "3", trailingStopPct: "2", maxHoldTime: "12h", confidenceThreshold: "55", maxConcurrentPositions: 2}}
  circuitBreakers: {breakers}
  autopilot:
    enabled: true
    performanceWindow: 8
    cooldown: "2h"
    maxDailyAdjustments: 4
    bounds:
      maxPositionSizePct: {{min: "5", max: "30"}}
      confidenceThreshold: {{min: "30", max: "80"}}
      stopLossPct: {{min: "0.5", max: "3"}}
      takeProfitPct: {{min: "1.5", max: "6"}}
"#
        )
    };
    let session = |name: &str, strat: &str, speed: &str| {
        format!(
            r#"apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {{name: {name}}}
spec:
  accountRef: {{name: desk}}
  strategyRef: {{name: {strat}}}
  allocation: "40000"
  symbols: [BTC-USD, LTC-USD]
  marketData:
    source: Replay
    speed: "{speed}"
    replay:
      files:
        - {{symbol: BTC-USD, path: "{}"}}
        - {{symbol: LTC-USD, path: "{}"}}
  execution: {{feeRatePct: "0.1", slippage: {{baseBps: "2"}}, seed: 7}}
"#,
            btc.display(),
            ltc.display()
        )
    };
    [
        // Wide limits: the kill switch measures (loss ratios exported) but
        // does not engage.
        "apiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {name: desk}\nspec: {initialBalance: \"200000\", limits: {maxDrawdownPct: \"40\", dailyLossPct: \"40\"}}\n".to_string(),
        strategy("trend", r#"{dailyLossPct: "3", maxDrawdownPct: "8", maxConsecutiveLosses: 6, cooldown: "30m"}"#),
        strategy("touchy", r#"{maxConsecutiveLosses: 1, cooldown: "720h"}"#),
        session("tripper", "touchy", "1500"),
        session("tuner", "trend", "1500"),
        // Runs through the whole test (2 days of candles at 60x: 48 min),
        // so one runtime is always polled and trading.
        session("steady", "trend", "60"),
    ]
    .join("---\n")
}

/// The Prometheus configuration: scrape like the chart's monitors.
fn prometheus_config(runtimes: &[(String, u16)], operator_port: u16, ns: &str) -> String {
    let mut targets = String::new();
    for (session, port) in runtimes {
        targets.push_str(&format!(
            "      - targets: ['127.0.0.1:{port}']\n        labels: {{namespace: {ns}, pod: {}-0}}\n",
            child_name(session)
        ));
    }
    format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: {RUNTIME_JOB}
    static_configs:
{targets}  - job_name: {OPERATOR_JOB}
    honor_labels: true
    static_configs:
      - targets: ['127.0.0.1:{operator_port}']
        labels: {{namespace: {op_ns}, pod: paperbot-0}}
"#,
        rules = obs::alerts_file().display(),
        op_ns = paperbot_e2e::OPERATOR_NAMESPACE,
    )
}

/// `promtool check metrics` has nothing to say about `text`.
fn promtool_check_metrics(what: &str, text: &str) {
    paperbot_testkit::assert_promtool_clean(what, text);
}

/// Checks of one PromQL expression (variables already replaced).
struct Checked {
    /// Series the whole expression returned.
    series: usize,
    problems: Vec<String>,
}

/// Every selector of `expr` matches series, and every label `expr` groups,
/// matches or joins on exists on them.
async fn check_selectors(api: &Api, what: &str, expr: &str, problems: &mut Vec<String>) {
    let parsed = match obs::parse(expr) {
        Ok(e) => e,
        Err(e) => {
            problems.push(format!("{what}: does not parse: {e}: {expr}"));
            return;
        }
    };
    let mut names = BTreeSet::new();
    for sel in obs::selectors(&parsed) {
        let text = obs::selector_text(&sel);
        match api.series(&text).await {
            Ok(s) if s.is_empty() => {
                problems.push(format!("{what}: selector {text} matches no series"));
            }
            Ok(s) => names.extend(s.into_iter().flat_map(|l| l.into_keys())),
            Err(e) => problems.push(format!("{what}: selector {text}: {e}")),
        }
    }
    for label in obs::grouping_labels(&parsed) {
        if !names.contains(&label) {
            problems.push(format!(
                "{what}: label {label} (by/on/group) is on none of the series of {expr}"
            ));
        }
    }
}

/// The query returns at least one series, each carrying `want` labels.
async fn check_query(api: &Api, what: &str, expr: &str, want: &BTreeSet<String>) -> Checked {
    let mut problems = Vec::new();
    let result = api.query(expr).await;
    let series = match result {
        Err(e) => {
            problems.push(format!("{what}: query failed: {e}: {expr}"));
            0
        }
        Ok(r) => {
            if r.is_empty() {
                problems.push(format!("{what}: no series: {expr}"));
            }
            for s in &r {
                for l in want {
                    if s.get(l).is_none_or(|v| v.is_empty()) {
                        problems.push(format!("{what}: a series lacks label {l}: {s:?} of {expr}"));
                    }
                }
            }
            r.len()
        }
    };
    check_selectors(api, what, expr, &mut problems).await;
    Checked { series, problems }
}

/// The values of a template variable's query, with the earlier variables
/// replaced; as Grafana formats a multi-value regex variable: `(a|b)`.
async fn resolve_variable(
    api: &Api,
    v: &obs::Variable,
    values: &BTreeMap<String, String>,
) -> Result<Vec<String>, String> {
    let q = obs::substitute(&v.query, "1m", values);
    let mut found = BTreeSet::new();
    if let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let (sel, label) = inner
            .rsplit_once(',')
            .ok_or_else(|| format!("label_values without a label: {q}"))?;
        let label = label.trim();
        for s in api.series(sel.trim()).await? {
            match s.get(label) {
                Some(x) => {
                    found.insert(x.clone());
                }
                None => return Err(format!("a series of {sel} has no label {label}: {s:?}")),
            }
        }
    } else if let Some(inner) = q
        .strip_prefix("query_result(")
        .and_then(|r| r.strip_suffix(')'))
    {
        // The regex must capture one label's value: /<label>="([^"]+)"/.
        let regex = v.json["regex"].as_str().unwrap_or_default();
        let label = regex
            .strip_prefix('/')
            .and_then(|r| r.strip_suffix("=\"([^\"]+)\"/"))
            .ok_or_else(|| format!("regex {regex:?} does not capture a label's value"))?;
        for s in api.query(inner).await? {
            match s.get(label) {
                Some(x) => {
                    found.insert(x.clone());
                }
                None => return Err(format!("a result of {inner} has no label {label}: {s:?}")),
            }
        }
    } else {
        return Err(format!("unsupported variable query {q}"));
    }
    if found.is_empty() {
        return Err(format!("no values for {q}"));
    }
    Ok(found.into_iter().collect())
}

/// Everything one dashboard queries; returns the problems found.
async fn check_dashboard(api: &Api, d: &obs::Dashboard, ns: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut values = BTreeMap::new();
    for v in d.variables.iter().filter(|v| v.kind == "query") {
        match resolve_variable(api, v, &values).await {
            Err(e) => problems.push(format!("{}: variable {}: {e}", d.file, v.name)),
            Ok(found) => {
                println!("{}: ${} = {found:?}", d.file, v.name);
                let value = if v.json["multi"] == true {
                    format!("({})", found.join("|"))
                } else if found.iter().any(|f| f == DETAIL_SESSION) {
                    DETAIL_SESSION.to_string()
                } else {
                    found[0].clone()
                };
                values.insert(v.name.clone(), value);
            }
        }
    }
    if d.file != "operator-health.json" {
        let ns_values = values.get("namespace").cloned().unwrap_or_default();
        if !ns_values.contains(ns) {
            problems.push(format!("{}: $namespace {ns_values} lacks {ns}", d.file));
        }
    }
    for p in &d.panels {
        for t in &p.targets {
            let what = format!("{} / {}", d.file, p.title);
            let expr = obs::substitute(&t.expr, "1m", &values);
            let c = check_query(api, &what, &expr, &obs::legend_labels(&t.legend)).await;
            println!("  {what}: {} series  {}", c.series, t.legend);
            problems.extend(c.problems);
        }
    }
    problems
}

/// Every part of every alert expression; returns the problems found.
async fn check_rules(api: &Api) -> Vec<String> {
    let mut problems = Vec::new();
    for r in obs::alert_rules() {
        // The whole expression is valid PromQL to this Prometheus (it may
        // well return nothing: nothing is wrong).
        if let Err(e) = api.query(&r.expr).await {
            problems.push(format!("{}: {e}", r.alert));
        }
        let parsed = obs::parse(&r.expr).unwrap();
        let mut want = BTreeSet::new();
        for text in r.annotations.values() {
            want.extend(obs::required_template_labels(text));
        }
        for (i, part) in obs::operands(&parsed).iter().enumerate() {
            let expr = part.to_string();
            let what = format!("alert {} part {}", r.alert, i + 1);
            // The first part's series are the alert's: they carry the labels
            // the annotations read.
            let labels = if i == 0 {
                want.clone()
            } else {
                BTreeSet::new()
            };
            let c = check_query(api, &what, &expr, &labels).await;
            println!("  {what}: {} series  {expr}", c.series);
            problems.extend(c.problems);
        }
    }
    problems
}

/// The chart's monitoring resources rendered, checked against what the
/// operator created in `ns` (the runtime StatefulSet `sts`).
fn check_chart(cp: &ControlPlane, ns: &str, sts: &Value) {
    let chart = repo().join("charts/paperbot");
    let out = cp.helm(&[
        "template",
        "pb",
        chart.to_str().unwrap(),
        "--namespace",
        "paperbot-system",
        "--set",
        "monitoring.serviceMonitor.enabled=true,monitoring.podMonitor.enabled=true,monitoring.prometheusRule.enabled=true,monitoring.scrapeAnnotations.enabled=true,dashboards.enabled=true,dashboards.annotations.grafana_folder=paperbot",
    ]);
    assert!(
        out.status.success(),
        "helm template:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8_lossy(&out.stdout).into_owned();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&rendered)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect();
    let find = |kind: &str| -> Vec<&serde_yaml::Value> {
        docs.iter()
            .filter(|d| d["kind"].as_str() == Some(kind))
            .collect()
    };
    // PrometheusRule: the rule file's groups, as they are.
    let rule = find("PrometheusRule");
    assert_eq!(rule.len(), 1, "one PrometheusRule");
    let file: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(obs::alerts_file()).unwrap()).unwrap();
    assert_eq!(
        rule[0]["spec"]["groups"], file["groups"],
        "PrometheusRule spec"
    );
    // Dashboards: one ConfigMap per file, with the sidecar label and the
    // file as it is.
    let maps: Vec<_> = find("ConfigMap");
    let files = obs::dashboards();
    assert_eq!(maps.len(), files.len(), "a ConfigMap per dashboard");
    for d in &files {
        let m = maps
            .iter()
            .find(|m| m["data"][d.file.as_str()].is_string())
            .unwrap_or_else(|| panic!("no ConfigMap holds {}", d.file));
        assert_eq!(
            m["metadata"]["labels"]["grafana_dashboard"].as_str(),
            Some("1")
        );
        assert_eq!(
            m["metadata"]["annotations"]["grafana_folder"].as_str(),
            Some("paperbot")
        );
        let json: Value =
            serde_json::from_str(m["data"][d.file.as_str()].as_str().unwrap()).unwrap();
        assert_eq!(json, d.json, "{} in its ConfigMap", d.file);
    }
    // The ConfigMaps pass the API server's validation (size, names, labels).
    let cms: String = rendered
        .split("\n---")
        .filter(|d| d.contains("kind: ConfigMap"))
        .map(|d| format!("---{d}\n"))
        .collect();
    let dry = cp.kubectl_stdin_ok(
        &["apply", "--dry-run=server", "-n", ns, "-f", "-"],
        &cms.replace("namespace: paperbot-system", &format!("namespace: {ns}")),
    );
    println!("{dry}");
    // PodMonitor: selects the runtime pods the operator creates, on their
    // metrics port.
    let pm = find("PodMonitor");
    assert_eq!(pm.len(), 1);
    let pod_labels = &sts["spec"]["template"]["metadata"]["labels"];
    for (k, v) in pm[0]["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(
            pod_labels[k.as_str().unwrap()].as_str(),
            v.as_str(),
            "PodMonitor selector {k:?} on the runtime pods {pod_labels}"
        );
    }
    let port = pm[0]["spec"]["podMetricsEndpoints"][0]["port"]
        .as_str()
        .unwrap();
    let ports = &sts["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert!(
        ports
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port && p["containerPort"] == 9090),
        "port {port} on the runtime container: {ports}"
    );
    assert_eq!(
        pm[0]["spec"]["namespaceSelector"]["any"].as_bool(),
        Some(true)
    );
    // ServiceMonitor: the operator's Service by its labels and port, with
    // honorLabels (the fleet gauges' namespace).
    let sm = find("ServiceMonitor");
    assert_eq!(sm.len(), 1);
    let svc = find("Service");
    assert_eq!(svc.len(), 1);
    for (k, v) in sm[0]["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(
            &svc[0]["metadata"]["labels"][k.as_str().unwrap()],
            v,
            "Service label {k:?}"
        );
    }
    let ep = &sm[0]["spec"]["endpoints"][0];
    assert_eq!(ep["honorLabels"].as_bool(), Some(true));
    assert!(
        svc[0]["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| p["name"] == ep["port"]),
        "ServiceMonitor port {:?} on the Service",
        ep["port"]
    );
    // Scrape annotations on the operator pod, and the flag that puts them
    // on runtime pods.
    let dep = find("Deployment");
    let annotations = &dep[0]["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(annotations["prometheus.io/port"].as_str(), Some("8080"));
    let args = serde_yaml::to_string(&dep[0]["spec"]["template"]["spec"]["containers"][0]["args"])
        .unwrap();
    assert!(args.contains("--runtime-scrape-annotations=true"), "{args}");
    let runtime_annotations = &sts["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        runtime_annotations["prometheus.io/port"], "9090",
        "{runtime_annotations}"
    );
    assert_eq!(runtime_annotations["prometheus.io/path"], "/metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_runtimes_and_operator_and_every_dashboard_and_alert_query_has_series() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-prometheus");
    cp.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "-n",
        &ns,
        "ledger-db",
        "--from-literal=url=postgres://paperbot@ledger.invalid/paperbot",
    ]);

    // The operator: the chart's identity, leader election, runtime pods
    // with scrape annotations, /metrics on a loopback port.
    let id = cp.operator_identity(USER);
    let client = id.client().await;
    let ledger = LedgerSettings {
        database_secret: Some(SecretKeyRef {
            name: "ledger-db".into(),
            key: "url".into(),
        }),
        ..Default::default()
    };
    let mut ctx = base_context(client.clone(), USER, ledger, Duration::from_secs(1)).with_sync(
        SyncSettings {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            concurrency: 8,
            not_reporting_after: 3,
            allow_endpoint_override: true,
            endpoint_template: None,
        },
    );
    ctx.settings = RuntimeSettings {
        scrape_annotations: true,
        ..ctx.settings.clone()
    };
    let metrics = ctx.metrics.clone();
    let leader = LeaderElection::start(
        client,
        LeaderConfig {
            lease_name: "paperbot-prometheus-e2e".into(),
            namespace: id.namespace.clone(),
            identity: USER.into(),
            lease_duration: Duration::from_secs(15),
        },
        metrics.clone(),
    )
    .await
    .expect("leader election starts");
    wait_for("the leader Lease", 60, || {
        (*leader.subscribe().borrow()).then_some(())
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let operator_port = listener.local_addr().unwrap().port();
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(
        listener,
        ServerState::new(metrics.clone()),
        async {
            let _ = server_stopped.await;
        },
    ));
    let op = Operator::run(Arc::new(ctx), &ns).await;

    let upstream = live_upstream().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    cp.kubectl_stdin_ok(
        &["apply", "-n", &ns, "-f", "-"],
        &manifests_with_live(&upstream, &dead),
    );
    let sessions = ["tripper", "tuner", "steady", "feedy"];
    let runtimes: Vec<(String, Runtime)> = sessions
        .iter()
        .map(|s| (s.to_string(), Runtime::start(cp, &ns, s)))
        .collect();
    let ports: Vec<(String, u16)> = runtimes.iter().map(|(s, r)| (s.clone(), r.port)).collect();
    let prom = Prometheus::start(&prometheus_config(&ports, operator_port, &ns));
    paperbot_operator::tls::install_crypto_provider();
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        base: prom.url.clone(),
    };

    // Until Prometheus has seen what the dashboards show: fills, a breaker
    // open for good, an autopilot adjustment, the account's kill-switch
    // distance, the operator's reconciles; then some more scrapes so rates
    // over a minute have samples on both sides.
    let deadline = Instant::now() + Duration::from_secs(300);
    let ready = [
        "sum(paperbot_fills_total{status=\"filled\"}) > 0",
        "paperbot_circuit_breaker_opened_timestamp_seconds{session=\"tripper\"} > 0",
        "sum(paperbot_autopilot_adjustments_total{session=\"tuner\"}) > 0",
        "paperbot_account_loss_ratio{account=\"desk\"}",
        "paperbot_session_not_reporting{session=\"steady\"} == 0",
        "sum(paperbot_operator_reconciles_total{result=\"success\"}) > 0",
        "paperbot_operator_leader == 1",
        "paperbot_market_data_source_active{session=\"feedy\", source=\"binance\"} == 1",
        "paperbot_market_data_source_failures_total{session=\"feedy\", source=\"gecko\"} > 0",
    ];
    let mut pending: Vec<&str> = ready.to_vec();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for q in pending {
            if api.query(q).await.map_or(true, |r| r.is_empty()) {
                still.push(q);
            }
        }
        pending = still;
        if Instant::now() > deadline {
            for (s, rt) in &runtimes {
                println!("--- runtime {s}:\n{}", rt.log());
            }
            panic!(
                "Prometheus never saw {pending:?} in 300 s\nPrometheus log:\n{}",
                prom.log()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    println!(
        "$ kubectl get paperbot -n {ns}\n{}",
        cp.kubectl_ok(&["get", "paperbot", "-n", &ns])
    );

    // Every target is up, and promtool finds nothing in any scrape.
    let targets = api.get("/api/v1/targets", &[]).await.unwrap();
    let active = targets["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), sessions.len() + 1, "{targets}");
    for t in active {
        assert_eq!(t["health"], "up", "target {t}");
    }
    let http = reqwest::Client::new();
    for (s, rt) in &runtimes {
        let text = http
            .get(format!("http://127.0.0.1:{}/metrics", rt.port))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        promtool_check_metrics(&format!("runtime {s}"), &text);
    }
    let text = http
        .get(format!("http://127.0.0.1:{operator_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    promtool_check_metrics("the operator", &text);

    // Every rule loaded and evaluated without error.
    let rules = wait_for_rules(&api).await;
    println!("{rules} alerting rules evaluated without error");
    assert_eq!(rules, obs::alert_rules().len());

    // Every query of every dashboard and every part of every alert.
    let mut problems = Vec::new();
    let mut queries = 0;
    for d in obs::dashboards() {
        println!("== {} ({})", d.title, d.file);
        queries += d.panels.iter().map(|p| p.targets.len()).sum::<usize>();
        problems.extend(check_dashboard(&api, &d, &ns).await);
    }
    println!("== alerts");
    problems.extend(check_rules(&api).await);
    let alerts = api.query("ALERTS").await.unwrap();
    println!("ALERTS now: {alerts:?}");
    assert!(
        problems.is_empty(),
        "{} problem(s) with the dashboards and alerts against the scraped metrics:\n{}",
        problems.len(),
        problems.join("\n")
    );
    println!(
        "{queries} panel queries and {} alerts checked",
        obs::alert_rules().len()
    );
    // The checks catch a metric or label that does not exist.
    for (expr, legend, finding) in [
        ("sum(paperbot_equitty)", "", "matches no series"),
        (
            "sum by (acount) (paperbot_equity)",
            "",
            "label acount (by/on/group)",
        ),
        (
            "sum by (session) (paperbot_equity)",
            "{{account}}",
            "lacks label account",
        ),
        ("paperbot_equity{sesion=\"tripper\"}", "", "no series"),
    ] {
        let c = check_query(&api, "a wrong query", expr, &obs::legend_labels(legend)).await;
        assert!(
            c.problems.iter().any(|p| p.contains(finding)),
            "{expr} ({legend}) not reported as {finding:?}: {:?}",
            c.problems
        );
    }

    // The chart's monitoring resources fit what the operator created.
    let sts = get_json(cp, "statefulset", &ns, &child_name(DETAIL_SESSION));
    check_chart(cp, &ns, &sts);

    drop(runtimes);
    op.stop().await;
    let _ = stop_server.send(());
    let _ = server.await;
    leader.release().await;
}

/// Wait until Prometheus has evaluated every rule; the number of alerting
/// rules, all healthy.
async fn wait_for_rules(api: &Api) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let data = api.get("/api/v1/rules", &[]).await.unwrap();
        let rules: Vec<Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().all(|r| {
            r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001"))
        });
        if evaluated && !rules.is_empty() {
            for r in &rules {
                assert_eq!(r["health"], "ok", "rule {} : {}", r["name"], r["lastError"]);
            }
            return rules.iter().filter(|r| r["type"] == "alerting").count();
        }
        assert!(
            Instant::now() < deadline,
            "rules not evaluated in 60 s: {data}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
