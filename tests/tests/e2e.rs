//! End-to-end tests against a real Kubernetes control plane built from
//! source (see `tests/control-plane/`). All tests share one plane (one test
//! process); each works in its own namespace.

use paperbot_e2e::{control_plane, repo};

#[path = "e2e/chart.rs"]
mod chart;
#[path = "e2e/feed.rs"]
mod feed;
#[path = "obs/mod.rs"]
mod obs;
#[path = "e2e/operator.rs"]
mod operator;
#[path = "e2e/prometheus.rs"]
mod prometheus;
#[path = "e2e/sync.rs"]
mod sync;

/// Every CRD is accepted (structural) and established; every manifest in
/// `examples/` applies; `kubectl get paperbot` and `kubectl explain` show
/// what a user expects.
#[test]
fn crds_and_examples_apply_and_kubectl_shows_them() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-examples");
    for example in [
        "quickstart.yaml",
        "fleet.yaml",
        "simulated.yaml",
        "sma-parity.yaml",
        "live.yaml",
        "ticks.yaml",
    ] {
        let path = repo().join("examples").join(example);
        cp.kubectl_ok(&["apply", "-n", &ns, "-f", path.to_str().unwrap()]);
    }
    let listing = cp.kubectl_ok(&["get", "paperbot", "-n", &ns]);
    println!("$ kubectl get paperbot -n {ns}\n{listing}");
    for header in [
        "BALANCE",
        "EQUITY",
        "SESSIONS",
        "ROI %",
        "MODE",
        "INTEL",
        "AUTOPILOT",
        "PHASE",
        "ACCOUNT",
        "STRATEGY",
        "P&L %",
        "TRADES",
        "BREAKER",
        "AGE",
    ] {
        assert!(
            listing.contains(header),
            "column {header} missing:\n{listing}"
        );
    }
    for name in [
        "paperaccount.paperbot.io/fleet",
        "strategyconfig.paperbot.io/trend",
        "botsession.paperbot.io/trend-sim-a",
        "botsession.paperbot.io/quickstart",
        "botsession.paperbot.io/live-btc-eth",
        "botsession.paperbot.io/ticks",
    ] {
        assert!(listing.contains(name), "{name} missing:\n{listing}");
    }
    // `sc` is also kubectl's short name for StorageClass (the built-in wins), so
    // StrategyConfig has `strat` too.
    let short = cp.kubectl_ok(&["get", "bs,pa,strat", "-n", &ns, "-o", "name"]);
    assert_eq!(short.lines().count(), 7 + 5 + 7, "{short}");
    let explain = cp.kubectl_ok(&["explain", "botsession.spec"]);
    println!("$ kubectl explain botsession.spec\n{explain}");
    for field in [
        "accountRef",
        "allocation",
        "marketData",
        "execution",
        "desiredState",
        "symbols",
    ] {
        assert!(explain.contains(field), "explain lacks {field}:\n{explain}");
    }
    assert!(
        explain.contains("Money drawn from the account"),
        "field docs missing:\n{explain}"
    );
    let explain = cp.kubectl_ok(&["explain", "strategyconfig.spec.risk.stopLossPct"]);
    assert!(explain.contains("percent"), "{explain}");
}

/// The corpus: each document with the (field, message) it must be refused
/// with, or None when it must be accepted.
fn corpus() -> Vec<(serde_yaml::Value, Option<(String, String)>)> {
    let mut docs = Vec::new();
    for file in [
        "paperaccounts.yaml",
        "strategyconfigs.yaml",
        "botsessions.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join("crds/tests/cases").join(file)).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
            if v.is_null() {
                continue;
            }
            let ann = &v["metadata"]["annotations"];
            let expect = match (
                ann["paperbot.io/expect-field"].as_str(),
                ann["paperbot.io/expect-message"].as_str(),
            ) {
                (Some(f), Some(m)) => Some((f.to_string(), m.to_string())),
                _ => None,
            };
            docs.push((v, expect));
        }
    }
    docs
}

/// The corpus of invalid manifests (one per rule, in `crds/tests/cases/`):
/// each is refused by the API server with a message naming its field; the
/// valid documents (and the originals of immutability updates) are accepted.
#[test]
fn api_server_refuses_each_invalid_manifest_with_its_message() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-invalid");
    let mut refused = 0;
    let mut failures = Vec::new();
    for (doc, expect) in corpus() {
        let yaml = serde_yaml::to_string(&doc).unwrap();
        let out = cp.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &yaml);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let name = doc["metadata"]["name"].as_str().unwrap_or("?").to_string();
        match expect {
            None => {
                if !out.status.success() {
                    failures.push(format!("{name}: a valid document was refused: {stderr}"));
                }
            }
            Some((field, message)) => {
                if out.status.success() {
                    failures.push(format!("{name}: accepted, expected refusal at {field}"));
                } else if !stderr.contains(&field) || !stderr.contains(&message) {
                    failures.push(format!(
                        "{name}: refused, but not with field {field:?} and message {message:?}:\n{stderr}"
                    ));
                } else {
                    refused += 1;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        refused >= 25,
        "only {refused} invalid manifests in the corpus"
    );
    println!("{refused} invalid manifests refused with their field and message");
}
