//! The shared market-data feed as the operator deploys it, against the real
//! control plane (the operator in-process with the chart's RBAC; the
//! controller-manager turns each feed Deployment into a pod on a kwok node):
//! live sessions with the same sources share one feed, another chain gets
//! its own, `useSharedFeed: false` gets none, runtime StatefulSets carry
//! `PAPERBOT_FEED_URL`, a changed group rolls its feed, and a feed goes with
//! the last session of its group (also when that session went while the
//! operator was down).

use std::{collections::BTreeSet, time::Duration};

use paperbot_crds::SecretKeyRef;
use paperbot_e2e::{ControlPlane, control_plane};
use paperbot_operator::{
    builders::child_name,
    feed::{FEED_COMPONENT, FEED_CONFIG_KEY, FEED_LABEL, FEED_URL_ENV},
    ledger::LedgerSettings,
};

use crate::operator::{Operator, base_context, eventually};

const OBJECTS: &str = r#"apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata: {name: acct}
spec: {initialBalance: "100000"}
---
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {name: strat}
spec:
  signals: {smaCrossover: {fastPeriod: 10, slowPeriod: 30}}
  risk: {maxPositionSizePct: "10"}
"#;

const GECKO: &str = "[{name: coingecko, kind: CoinGecko, requestsPerMinute: 30, \
                     apiKeySecretRef: {name: cg-key, key: apiKey}}, \
                     {name: binance, kind: Binance, requestsPerMinute: 600}]";
const BINANCE: &str = "[{name: binance, kind: Binance, requestsPerMinute: 600}]";

fn live_session(name: &str, symbols: &str, poll: &str, sources: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {{name: {name}}}
spec:
  accountRef: {{name: acct}}
  strategyRef: {{name: strat}}
  allocation: "1000"
  symbols: {symbols}
  marketData:
    source: Live
    live:
      interval: 1m
      pollInterval: {poll}
      warmUp: Record
{extra}      sources: {sources}
"#
    )
}

fn jsonpath(cp: &ControlPlane, ns: &str, what: &str, path: &str) -> String {
    let out = cp.kubectl(&["get", "-n", ns, what, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Names of the feed objects of `kind` in `ns`.
fn feeds(cp: &ControlPlane, ns: &str, kind: &str) -> BTreeSet<String> {
    let out = cp.kubectl_ok(&[
        "get",
        kind,
        "-n",
        ns,
        "-l",
        &format!("app.kubernetes.io/component={FEED_COMPONENT}"),
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    out.split_whitespace().map(String::from).collect()
}

/// The `PAPERBOT_FEED_URL` of session `name`'s StatefulSet ("" when unset),
/// once the StatefulSet exists.
async fn feed_url_of(cp: &ControlPlane, ns: &str, name: &str) -> String {
    let sts = format!("statefulset/{}", child_name(name));
    eventually(&sts, 60, || {
        (!jsonpath(cp, ns, &sts, "{.metadata.name}").is_empty()).then_some(())
    })
    .await;
    jsonpath(
        cp,
        ns,
        &sts,
        &format!("{{.spec.template.spec.containers[0].env[?(@.name==\"{FEED_URL_ENV}\")].value}}"),
    )
}

/// The operator in-process with the chart's RBAC and `--shared-feed`.
async fn start_operator(cp: &ControlPlane, ns: &str) -> Operator {
    let user = "operator-feed";
    let id = cp.operator_identity(user);
    let mut ctx = base_context(
        id.client().await,
        user,
        LedgerSettings {
            // kwok runs no container: nothing connects to it.
            database_secret: Some(SecretKeyRef {
                name: "pg".into(),
                key: "url".into(),
            }),
            ..Default::default()
        },
        Duration::from_secs(15),
    );
    ctx.settings.feed.enabled = true;
    Operator::run(std::sync::Arc::new(ctx), ns).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sessions_share_a_feed_per_chain_and_it_goes_with_their_last_session() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-feed");
    let op = start_operator(cp, &ns).await;

    let manifest = [
        OBJECTS.to_string(),
        live_session("a", "[BTC-USD, ETH-USD]", "10s", GECKO, ""),
        live_session("b", "[SOL-USD, BTC-USD]", "5s", GECKO, ""),
        live_session("c", "[BTC-USD]", "10s", BINANCE, ""),
        live_session(
            "d",
            "[BTC-USD]",
            "10s",
            GECKO,
            "      useSharedFeed: false\n",
        ),
    ]
    .join("---\n");
    cp.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &manifest);

    // Two chains → two feeds, each a Deployment, a Service and a ConfigMap.
    let names = eventually("two feed Deployments", 90, || {
        let d = feeds(cp, &ns, "deployments");
        (d.len() == 2).then_some(d)
    })
    .await;
    eventually("the feeds' Services and ConfigMaps", 60, || {
        (feeds(cp, &ns, "services") == names && feeds(cp, &ns, "configmaps") == names).then_some(())
    })
    .await;

    // Runtime pods point at their group's feed; the opted-out one at none.
    let (a, b, c, d) = (
        feed_url_of(cp, &ns, "a").await,
        feed_url_of(cp, &ns, "b").await,
        feed_url_of(cp, &ns, "c").await,
        feed_url_of(cp, &ns, "d").await,
    );
    assert_eq!(a, b, "same sources, same feed");
    assert_ne!(a, c, "other sources, another feed");
    assert_eq!(d, "", "useSharedFeed: false gets no feed");
    let host = |url: &str| {
        url.strip_prefix("http://")
            .and_then(|r| r.split_once(&format!(".{ns}.svc:8090")))
            .map(|(h, _)| h.to_string())
            .unwrap_or_else(|| panic!("{url} is not http://<feed>.{ns}.svc:8090"))
    };
    let (gecko, binance) = (host(&a), host(&c));
    assert_eq!(names, BTreeSet::from([gecko.clone(), binance.clone()]));

    // The group's feed.yaml: the union of its symbols, its smallest poll
    // interval, its sources; the key only as a secretKeyRef.
    let file = jsonpath(
        cp,
        &ns,
        &format!("configmap/{gecko}"),
        &format!("{{.data.{}}}", FEED_CONFIG_KEY.replace('.', "\\.")),
    );
    let cfg: serde_json::Value = serde_yaml::from_str(&file).expect("feed.yaml is YAML");
    assert_eq!(
        cfg["symbols"],
        serde_json::json!(["BTC-USD", "ETH-USD", "SOL-USD"])
    );
    assert_eq!(cfg["pollInterval"], "5s");
    assert_eq!(cfg["sources"][0]["name"], "coingecko");
    assert_eq!(cfg["sources"][1]["name"], "binance");
    let dep = format!("deployment/{gecko}");
    assert_eq!(
        jsonpath(
            cp,
            &ns,
            &dep,
            "{.spec.template.spec.containers[0].env[0].name}/{.spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.name}"
        ),
        "PAPERBOT_LIVE_API_KEY_COINGECKO/cg-key"
    );
    assert_eq!(
        jsonpath(cp, &ns, &dep, "{.spec.template.spec.containers[0].args[2]}"),
        "feed"
    );
    assert_eq!(
        jsonpath(
            cp,
            &ns,
            &dep,
            "{.spec.template.spec.securityContext.runAsNonRoot}/{.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem}"
        ),
        "true/true"
    );
    // The controller-manager and the scheduler run it on a kwok node.
    let node = eventually("a feed pod scheduled", 90, || {
        let n = jsonpath(
            cp,
            &ns,
            "pods",
            &format!(
                "{{.items[?(@.metadata.labels.{}==\"{gecko}\")].spec.nodeName}}",
                FEED_LABEL.replace('.', "\\.").replace('/', "\\/")
            ),
        );
        (!n.is_empty()).then_some(n)
    })
    .await;
    assert!(node.starts_with("kwok-node-"), "{node}");

    // A new symbol in the group rewrites feed.yaml and rolls the feed.
    let hash_path = "{.spec.template.metadata.annotations.paperbot\\.io/feed-config-hash}";
    let before = jsonpath(cp, &ns, &dep, hash_path);
    cp.kubectl_stdin(
        &["apply", "-n", &ns, "-f", "-"],
        &live_session("e", "[XRP-USD]", "10s", GECKO, ""),
    );
    eventually("the feed's config hash changes", 60, || {
        let now = jsonpath(cp, &ns, &dep, hash_path);
        (!now.is_empty() && now != before).then_some(())
    })
    .await;

    // The last sessions of the gecko group go while the operator is down; a
    // new operator (which knows no feed yet) finds the feeds by label and
    // deletes the gecko one; binance's stays.
    op.stop().await;
    cp.kubectl_ok(&[
        "delete",
        "botsession",
        "-n",
        &ns,
        "a",
        "b",
        "e",
        "--wait=false",
    ]);
    let op = start_operator(cp, &ns).await;
    eventually("the gecko feed deleted", 90, || {
        let left = BTreeSet::from([binance.clone()]);
        (feeds(cp, &ns, "deployments") == left
            && feeds(cp, &ns, "services") == left
            && feeds(cp, &ns, "configmaps") == left)
            .then_some(())
    })
    .await;
    cp.kubectl_ok(&["delete", "botsession", "-n", &ns, "c", "--wait=false"]);
    eventually("every feed deleted", 90, || {
        (feeds(cp, &ns, "deployments").is_empty()
            && feeds(cp, &ns, "services").is_empty()
            && feeds(cp, &ns, "configmaps").is_empty())
        .then_some(())
    })
    .await;
    op.stop().await;
}
