//! The Helm chart (`charts/paperbot`) with the real `helm` and the real API
//! server: `helm lint` (also `--strict`) and `helm template` for the defaults
//! and every `ci/*.yaml`, a server-side dry run of each rendering, bad values
//! refused with a message, what each mode renders, the CRD templates equal to
//! crdgen's output, `helm install` / `upgrade` / `uninstall` keeping the CRDs
//! and the sessions, the values reference in the chart's README, and the
//! operator in namespaced mode running sessions with Roles only.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Output,
    sync::Arc,
    time::Duration,
};

use paperbot_e2e::{ControlPlane, OPERATOR_NAMESPACE, chart_values, control_plane, repo};
use paperbot_operator::{
    builders::{API_PORT, METRICS_PORT, child_name, labels},
    leader::{LeaderConfig, LeaderElection},
    ledger::{LedgerSettings, claim_name},
    metrics::Metrics,
    sync::SyncSettings,
};
use serde_json::{Value, json};

use crate::operator::{Operator, base_context};

fn chart() -> PathBuf {
    repo().join("charts/paperbot")
}

fn chart_arg() -> String {
    chart().to_str().expect("utf-8 path").to_string()
}

/// `charts/paperbot/ci/*.yaml`, sorted.
fn ci_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .expect("charts/paperbot/ci exists")
        .map(|e| e.expect("readable ci directory").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "too few ci value files: {files:?}");
    files
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template RELEASE chart -n NS [-f values] [--set s]...`.
fn template(
    cp: &ControlPlane,
    release: &str,
    ns: &str,
    values: Option<&Path>,
    sets: &[&str],
) -> Output {
    let chart = chart_arg();
    let mut args = vec!["template", release, chart.as_str(), "--namespace", ns];
    let file;
    if let Some(v) = values {
        file = v.to_str().expect("utf-8 path").to_string();
        args.extend(["-f", file.as_str()]);
    }
    for s in sets {
        args.extend(["--set", s]);
    }
    cp.helm(&args)
}

/// The rendering of `values` (and `sets`), as YAML text; panics with helm's
/// output when it fails.
fn render(
    cp: &ControlPlane,
    release: &str,
    ns: &str,
    values: Option<&Path>,
    sets: &[&str],
) -> String {
    let out = template(cp, release, ns, values, sets);
    assert!(
        out.status.success(),
        "helm template {release} with {values:?} {sets:?} failed:\n{}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The documents of a rendering, as JSON.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("helm renders YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn app_version() -> String {
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .expect("Chart.yaml is YAML");
    chart["appVersion"]
        .as_str()
        .expect("Chart.yaml has appVersion")
        .to_string()
}

fn args_of(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("operator container args")
        .iter()
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect()
}

/// Every value in values.yaml has a `# --` description, the README's table
/// is the one generated from them (so a value added, removed or renamed
/// without the README fails), and values.schema.json declares exactly the
/// values of values.yaml.
#[test]
fn chart_readme_lists_every_value_and_the_schema_declares_exactly_them() {
    let values_text = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
    let values = chart_values::parse(&values_text).unwrap_or_else(|e| panic!("{e}"));
    let readme = std::fs::read_to_string(chart().join("README.md")).unwrap();
    let expected = chart_values::with_table(&readme, &chart_values::table(&values))
        .expect("the chart README has the values table markers");
    assert!(
        expected == readme,
        "charts/paperbot/README.md lists other values than values.yaml: regenerate it with `{}`",
        chart_values::REGENERATE_COMMAND
    );
    println!("{} values documented", values.len());

    // Schema ⇄ values: down to each documented value, every property of the
    // schema is a key of values.yaml and the reverse (helm lint checks that
    // values.yaml fits the schema; this also catches a schema property for a
    // value that does not exist). Below a documented value (e.g.
    // `resources`, a Kubernetes object) the schema describes its shape.
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).unwrap())
            .expect("values.schema.json is JSON");
    let yaml: Value = serde_yaml::from_str(&values_text).unwrap();
    let documented: BTreeSet<&str> = values.iter().map(|v| v.key.as_str()).collect();
    fn walk(
        schema: &Value,
        values: &Value,
        path: &str,
        documented: &BTreeSet<&str>,
        problems: &mut Vec<String>,
    ) {
        if documented.contains(path) {
            return;
        }
        let Some(props) = schema["properties"].as_object() else {
            problems.push(format!(
                "{path}: a section of values.yaml without schema properties"
            ));
            return;
        };
        if schema["additionalProperties"] != json!(false) {
            problems.push(format!("{path}: the schema allows unknown keys here"));
        }
        for (k, sub) in props {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match values.get(k) {
                Some(v) => walk(sub, v, &p, documented, problems),
                None if p == "global" => {}
                None => problems.push(format!("{p}: in the schema, not in values.yaml")),
            }
        }
        for k in values.as_object().into_iter().flat_map(|m| m.keys()) {
            if !props.contains_key(k) {
                problems.push(format!("{path}.{k}: in values.yaml, not in the schema"));
            }
        }
    }
    let mut problems = Vec::new();
    walk(&schema, &yaml, "", &documented, &mut problems);
    assert!(
        problems.is_empty(),
        "schema and values.yaml disagree:\n{}",
        problems.join("\n")
    );
}

/// `helm lint` and `helm lint --strict` report no warning or error for the
/// defaults and for every ci value file.
#[test]
fn helm_lint_is_clean_for_the_defaults_and_every_ci_file() {
    let cp = control_plane();
    let chart = chart_arg();
    let mut cases: Vec<Option<PathBuf>> = vec![None];
    cases.extend(ci_files().into_iter().map(Some));
    for case in &cases {
        for strict in [false, true] {
            let mut args = vec!["lint", chart.as_str()];
            if strict {
                args.push("--strict");
            }
            let file;
            if let Some(f) = case {
                file = f.to_str().unwrap().to_string();
                args.extend(["-f", file.as_str()]);
            }
            let out = cp.helm(&args);
            let output = text(&out);
            assert!(
                out.status.success(),
                "helm {} failed:\n{output}",
                args.join(" ")
            );
            assert!(output.contains("0 chart(s) failed"), "{output}");
            assert!(
                !output.contains("[WARNING]") && !output.contains("[ERROR]"),
                "helm {} is not clean:\n{output}",
                args.join(" ")
            );
        }
    }
    println!(
        "helm lint clean (also --strict) for the defaults and {} ci files",
        cases.len() - 1
    );
}

/// Each ci rendering (and the defaults) is accepted by the real API server in
/// a server-side dry run, with the namespaces it names created first.
#[test]
fn every_ci_rendering_passes_a_server_side_dry_run() {
    let cp = control_plane();
    // ci/monitoring-values.yaml renders a ServiceMonitor, a PodMonitor and a
    // PrometheusRule: the API server checks them against the real CRDs.
    install_prometheus_operator_crds(cp);
    let release_ns = cp.namespace("e2e-chart-dry-run");
    let mut cases: Vec<Option<PathBuf>> = vec![None];
    cases.extend(ci_files().into_iter().map(Some));
    for case in &cases {
        let name = case
            .as_ref()
            .and_then(|f| f.file_stem())
            .map(|s| s.to_string_lossy().replace("-values", ""))
            .unwrap_or_else(|| "defaults".into());
        let release = format!("ci-{name}");
        let rendered = render(cp, &release, &release_ns, case.as_deref(), &[]);
        let docs = documents(&rendered);
        let namespaces: BTreeSet<&str> = docs
            .iter()
            .filter_map(|d| d["metadata"]["namespace"].as_str())
            .collect();
        for ns in &namespaces {
            cp.kubectl_stdin_ok(
                &["apply", "-f", "-"],
                &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
            );
        }
        let out = cp.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &rendered);
        assert!(
            out.status.success(),
            "server-side dry run of {name} refused:\n{}",
            text(&out)
        );
        let accepted = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count();
        assert_eq!(
            accepted,
            docs.len(),
            "{name}: not every object was dry-run:\n{}",
            text(&out)
        );
        println!(
            "{name}: {} objects accepted by a server-side dry run (namespaces {namespaces:?})",
            docs.len()
        );
    }
}

/// The CRDs Helm renders are exactly crdgen's (the types'), plus the chart's
/// labels and `helm.sh/resource-policy: keep`; `crds.create=false` renders none.
#[test]
fn rendered_crds_are_crdgens_with_keep_and_can_be_turned_off() {
    let cp = control_plane();
    let docs = documents(&render(cp, "crds", "paperbot-system", None, &[]));
    let rendered = of_kind(&docs, "CustomResourceDefinition");
    let generated = paperbot_crds::manifest::crds();
    assert_eq!(rendered.len(), generated.len());
    for g in &generated {
        let name = g.metadata.name.clone().unwrap_or_default();
        let mut r = (*rendered
            .iter()
            .find(|r| r["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} not rendered")))
        .clone();
        assert_eq!(
            r["metadata"]["annotations"],
            json!({"helm.sh/resource-policy": "keep"}),
            "{name}"
        );
        assert_eq!(
            r["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm",
            "{name}"
        );
        assert_eq!(
            r["metadata"]["labels"]["app.kubernetes.io/part-of"], "paperbot",
            "{name}"
        );
        let meta = r["metadata"].as_object_mut().unwrap();
        meta.remove("annotations");
        meta.remove("labels");
        // Not assert_eq: the difference of two whole CRDs is unreadable.
        assert!(
            r == serde_json::to_value(g).unwrap(),
            "{name}: what Helm renders differs from crdgen's CRD (regenerate with `{}`)",
            paperbot_crds::manifest::REGENERATE_COMMAND
        );
    }
    let without = documents(&render(
        cp,
        "crds",
        "paperbot-system",
        None,
        &["crds.create=false"],
    ));
    assert!(of_kind(&without, "CustomResourceDefinition").is_empty());
}

/// Bad values fail `helm template` (as they fail install, upgrade and lint)
/// with a message naming the value and what is wrong.
#[test]
fn bad_values_are_refused_with_a_message() {
    let cp = control_plane();
    let cases: &[(&str, &[&str])] = &[
        (
            "ledger.storage.retention=Keep",
            &[
                "ledger.storage.retention",
                "must be one of",
                "Delete",
                "Retain",
            ],
        ),
        (
            "replicaCont=2",
            &["Additional property replicaCont is not allowed"],
        ),
        (
            "runtime.resources.memoryLimit=lots",
            &["runtime.resources.memoryLimit", "Does not match pattern"],
        ),
        (
            "statusSyncInterval=15 seconds",
            &["statusSyncInterval", "Does not match pattern"],
        ),
        (
            "metrics.port=80",
            &["metrics.port", "greater than or equal to 1024"],
        ),
        (
            "image.pullPolicy=Sometimes",
            &["image.pullPolicy", "must be one of"],
        ),
        (
            "leaderElection=yes",
            &["leaderElection", "Expected: boolean"],
        ),
        (
            "watchNamespaces={Bad_NS}",
            &["watchNamespaces.0", "Does not match pattern"],
        ),
        (
            "networkPolicy.apiServer.cidrs={10.0.0.1}",
            &["networkPolicy.apiServer.cidrs.0", "Does not match pattern"],
        ),
        (
            "extraArgs={runtime-image=x}",
            &["extraArgs.0", "Does not match pattern"],
        ),
        (
            "replicaCount=2,leaderElection=false",
            &[
                "replicaCount is 2 but leaderElection is false",
                "set leaderElection=true",
            ],
        ),
        (
            "replicaCount=2,podDisruptionBudget.minAvailable=2",
            &["podDisruptionBudget.minAvailable (2) must be below replicaCount (2)"],
        ),
        (
            "networkPolicy.enabled=true",
            &["networkPolicy.enabled needs networkPolicy.apiServer.cidrs"],
        ),
        (
            "networkPolicy.enabled=true,networkPolicy.apiServer.cidrs={10.0.0.1/32}",
            &["needs networkPolicy.sessionNamespaces"],
        ),
    ];
    for (set, expected) in cases {
        let out = template(cp, "bad", "paperbot-system", None, &[set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "helm template accepted --set {set}");
        for e in *expected {
            assert!(
                stderr.contains(e),
                "--set {set}: the message lacks {e:?}:\n{stderr}"
            );
        }
        let message = stderr
            .lines()
            .find(|l| l.starts_with("- ") || l.starts_with("Error: execution error"))
            .unwrap_or_default();
        println!("--set {set}: {message}");
    }
}

/// What each mode renders: the hardened operator pod and image names by
/// default; only namespaced objects in namespaced mode; replicas, leader
/// election, a PodDisruptionBudget and placement in HA; NetworkPolicies that
/// select the operator's runtime pods by the labels the operator gives them.
#[test]
fn each_mode_renders_what_it_promises() {
    let cp = control_plane();
    let version = app_version();
    assert_eq!(
        version,
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion must be the workspace version (the operator's default runtime image tag)"
    );
    let ci = |f: &str| chart().join("ci").join(f);

    // Defaults.
    let docs = documents(&render(cp, "pb", "paperbot-system", None, &[]));
    let dep = one(&docs, "Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    let ctr = &pod["containers"][0];
    assert_eq!(
        ctr["image"],
        format!("ghcr.io/paperbot/paperbot-operator:{version}")
    );
    assert!(args_of(dep).contains(&format!(
        "--runtime-image=ghcr.io/paperbot/bot-runtime:{version}"
    )));
    assert!(args_of(dep).contains(&"--leader-election=true".to_string()));
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(ctr["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(ctr["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        ctr["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(
        one(&docs, "ServiceAccount")["automountServiceAccountToken"],
        false
    );
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
    assert!(of_kind(&docs, "NetworkPolicy").is_empty());
    let operator_role = of_kind(&docs, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "pb-paperbot")
        .expect("the operator's ClusterRole");
    let verbs = |resource: &str| -> BTreeSet<String> {
        operator_role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == resource)
            })
            .flat_map(|r| {
                r["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
            })
            .collect()
    };
    // Least privilege: no update and no delete but where the operator uses them.
    assert_eq!(
        verbs("pods"),
        BTreeSet::from(["list".into(), "watch".into()])
    );
    assert_eq!(
        verbs("persistentvolumeclaims"),
        BTreeSet::from(["list".into(), "patch".into(), "watch".into()])
    );
    for r in ["secrets", "botsessions", "paperaccounts"] {
        assert!(
            !verbs(r).contains("update") && !verbs(r).contains("delete"),
            "{r}: {:?}",
            verbs(r)
        );
    }
    // The shared feeds: applied, listed once, deleted with their last session.
    for r in ["configmaps", "services"] {
        assert!(!verbs(r).contains("update"), "{r}: {:?}", verbs(r));
        assert!(verbs(r).contains("delete"), "{r}: {:?}", verbs(r));
    }
    assert_eq!(
        verbs("deployments"),
        BTreeSet::from([
            "create".into(),
            "delete".into(),
            "list".into(),
            "patch".into()
        ])
    );
    let args = args_of(one(&docs, "Deployment"));
    for flag in [
        "--shared-feed=true",
        "--feed-replicas=1",
        "--feed-cpu-request=50m",
        "--feed-memory-limit=128Mi",
    ] {
        assert!(
            args.contains(&flag.to_string()),
            "{flag} missing from {args:?}"
        );
    }

    // Namespaced RBAC: nothing cluster-scoped, a Role per watched namespace.
    let docs = documents(&render(
        cp,
        "pb",
        "paperbot-system",
        Some(&ci("namespaced-rbac-values.yaml")),
        &[],
    ));
    for d in &docs {
        assert!(
            d["metadata"]["namespace"].is_string(),
            "namespaced mode renders a cluster-scoped {} {}",
            d["kind"],
            d["metadata"]["name"]
        );
    }
    let roles: BTreeSet<String> = of_kind(&docs, "Role")
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["metadata"]["namespace"].as_str().unwrap(),
                r["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        roles,
        BTreeSet::from([
            "paperbot-ci-team-a/pb-paperbot".to_string(),
            "paperbot-ci-team-b/pb-paperbot".to_string(),
            "paperbot-system/pb-paperbot-leader".to_string(),
        ])
    );
    assert!(
        args_of(one(&docs, "Deployment"))
            .contains(&"--namespaces=paperbot-ci-team-a,paperbot-ci-team-b".to_string())
    );

    // High availability.
    let docs = documents(&render(
        cp,
        "pb",
        "paperbot-system",
        Some(&ci("ha-values.yaml")),
        &[],
    ));
    let dep = one(&docs, "Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(dep["spec"]["replicas"], 2);
    assert!(args_of(dep).contains(&"--leader-election=true".to_string()));
    assert!(args_of(dep).contains(&"--runtime-request-timeout=10s".to_string()));
    assert_eq!(one(&docs, "PodDisruptionBudget")["spec"]["minAvailable"], 1);
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "regcred");
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        dep["spec"]["template"]["metadata"]["labels"]["team"],
        "quant"
    );

    // NetworkPolicies: the operator's, and one per session namespace that
    // selects the runtime pods by the labels the operator gives them.
    let docs = documents(&render(
        cp,
        "pb",
        "paperbot-system",
        Some(&ci("network-policy-values.yaml")),
        &[],
    ));
    let policies = of_kind(&docs, "NetworkPolicy");
    let at: BTreeSet<String> = policies
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap(),
                p["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        at,
        BTreeSet::from([
            "paperbot-system/pb-paperbot".to_string(),
            "paperbot-ci-np-a/pb-paperbot-runtime".to_string(),
            "paperbot-ci-np-b/pb-paperbot-runtime".to_string(),
            "paperbot-ci-np-a/pb-paperbot-feed".to_string(),
            "paperbot-ci-np-b/pb-paperbot-feed".to_string(),
        ])
    );
    let runtime_labels = labels("any-session");
    for p in &policies {
        assert_eq!(p["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        if p["metadata"]["name"] != "pb-paperbot-runtime" {
            continue;
        }
        for (k, v) in p["spec"]["podSelector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(
                runtime_labels.get(k).map(String::as_str),
                v.as_str(),
                "runtime pods carry {k}"
            );
        }
        let ingress_ports: BTreeSet<i64> = p["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x["port"].as_i64().unwrap())
            })
            .collect();
        assert_eq!(
            ingress_ports,
            BTreeSet::from([i64::from(API_PORT), i64::from(METRICS_PORT)])
        );
        let egress = serde_json::to_string(&p["spec"]["egress"]).unwrap();
        for needle in [
            "kube-dns",
            "cnpg.io/cluster",
            "203.0.113.0/24",
            "5432",
            "paperbot-feed",
            "8090",
        ] {
            assert!(
                egress.contains(needle),
                "runtime egress lacks {needle}: {egress}"
            );
        }
    }
    // The feeds: selected by the labels the operator gives them, reached by
    // runtimes and Prometheus on 8090 only, reaching DNS and market data only.
    let feed_labels = paperbot_operator::feed::feed_labels("paperbot-feed-0123456789");
    for p in policies
        .iter()
        .filter(|p| p["metadata"]["name"] == "pb-paperbot-feed")
    {
        for (k, v) in p["spec"]["podSelector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(
                feed_labels.get(k).map(String::as_str),
                v.as_str(),
                "feed pods carry {k}"
            );
        }
        let ingress = p["spec"]["ingress"].as_array().unwrap();
        assert_eq!(ingress.len(), 1);
        assert_eq!(
            ingress[0]["ports"],
            json!([{"port": 8090, "protocol": "TCP"}])
        );
        let from = serde_json::to_string(&ingress[0]["from"]).unwrap();
        assert!(
            from.contains("bot-runtime") && from.contains("prometheus"),
            "{from}"
        );
        let egress = serde_json::to_string(&p["spec"]["egress"]).unwrap();
        assert!(
            egress.contains("kube-dns") && egress.contains("203.0.113.0/24"),
            "{egress}"
        );
        assert!(
            !egress.contains("5432"),
            "the feed needs no database: {egress}"
        );
    }

    // Database ledger.
    let docs = documents(&render(
        cp,
        "pb",
        "paperbot-system",
        Some(&ci("database-ledger-values.yaml")),
        &[],
    ));
    let args = args_of(one(&docs, "Deployment"));
    for flag in [
        "--ledger-database-secret=pg-app",
        "--ledger-database-secret-key=uri",
        "--runtime-image=registry.example.com/paperbot/bot-runtime:0.1.0",
        "--runtime-memory-limit=512Mi",
    ] {
        assert!(
            args.contains(&flag.to_string()),
            "{flag} missing from {args:?}"
        );
    }
}

fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn jsonpath(cp: &ControlPlane, ns: &str, what: &str, path: &str) -> String {
    let out = cp.kubectl(&["get", "-n", ns, what, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const CRDS: [&str; 3] = [
    "crd/paperaccounts.paperbot.io",
    "crd/strategyconfigs.paperbot.io",
    "crd/botsessions.paperbot.io",
];

/// `helm install` (into a namespace that enforces the `restricted` Pod
/// Security Standard, which admits the operator pod) creates the operator's
/// objects and takes over the CRDs; `helm upgrade` changes the operator and
/// keeps the CRDs and the sessions; `helm uninstall` removes the operator
/// and keeps the CRDs (`helm.sh/resource-policy: keep`) and the sessions.
#[test]
fn helm_install_upgrade_and_uninstall_keep_the_crds_and_the_sessions() {
    let cp = control_plane();
    let chart = chart_arg();
    let ns = cp.namespace("e2e-helm");
    cp.kubectl_ok(&[
        "label",
        "namespace",
        &ns,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    // Other tests of this process install the CRDs with kubectl; the release
    // adopts them (a first install on a cluster without them creates them).
    let install = cp.helm(&[
        "install",
        "pb",
        &chart,
        "--namespace",
        &ns,
        "--take-ownership",
        "--wait=false",
        "--set",
        "ledger.database.secretName=pg-app,ledger.database.secretKey=uri,ledger.storage.size=2Gi,ledger.storage.className=fast-ssd,ledger.storage.retention=Retain",
    ]);
    assert!(
        install.status.success(),
        "helm install failed:\n{}",
        text(&install)
    );
    println!(
        "$ helm install pb charts/paperbot -n {ns} ...\n{}",
        String::from_utf8_lossy(&install.stdout)
    );
    for obj in [
        "deployment/pb-paperbot",
        "serviceaccount/pb-paperbot",
        "service/pb-paperbot-metrics",
        "role/pb-paperbot-leader",
        "rolebinding/pb-paperbot-leader",
    ] {
        cp.kubectl_ok(&["get", "-n", &ns, obj]);
    }
    cp.kubectl_ok(&[
        "get",
        "clusterrole/pb-paperbot",
        "clusterrolebinding/pb-paperbot",
    ]);
    cp.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        CRDS[0],
        CRDS[1],
        CRDS[2],
    ]);
    for crd in CRDS {
        let owner = cp.kubectl_ok(&[
            "get",
            crd,
            "-o",
            "jsonpath={.metadata.annotations.helm\\.sh/resource-policy}/{.metadata.annotations.meta\\.helm\\.sh/release-namespace}",
        ]);
        assert_eq!(owner, format!("keep/{ns}"), "{crd}");
    }
    // The restricted namespace admits the operator pod (the ReplicaSet
    // controller would report FailedCreate otherwise).
    let pod = eventually("the operator pod admitted", 60, || {
        let p = jsonpath(cp, &ns, "pods", "{.items[0].metadata.name}");
        (!p.is_empty()).then_some(p)
    });
    println!("operator pod {pod} admitted by the restricted Pod Security Standard");
    let args = jsonpath(
        cp,
        &ns,
        "deployment/pb-paperbot",
        "{.spec.template.spec.containers[0].args}",
    );
    for flag in [
        "--ledger-database-secret=pg-app",
        "--ledger-database-secret-key=uri",
        "--ledger-storage-size=2Gi",
        "--ledger-storage-class=fast-ssd",
        "--ledger-storage-retention=Retain",
    ] {
        assert!(args.contains(flag), "{flag} missing from {args}");
    }

    // A session between install and upgrade.
    cp.kubectl_stdin_ok(
        &["apply", "-n", &ns, "-f", "-"],
        &std::fs::read_to_string(repo().join("examples/fleet.yaml")).unwrap(),
    );
    let upgrade = cp.helm(&[
        "upgrade",
        "pb",
        &chart,
        "--namespace",
        &ns,
        "--reuse-values",
        "--wait=false",
        "--set",
        "statusSyncInterval=30s",
    ]);
    assert!(
        upgrade.status.success(),
        "helm upgrade failed:\n{}",
        text(&upgrade)
    );
    let args = jsonpath(
        cp,
        &ns,
        "deployment/pb-paperbot",
        "{.spec.template.spec.containers[0].args}",
    );
    assert!(
        args.contains("--status-sync-interval=30s")
            && args.contains("--ledger-storage-class=fast-ssd"),
        "{args}"
    );
    cp.kubectl_ok(&[
        "get",
        "-n",
        &ns,
        "botsession/trend-sim-a",
        "paperaccount/fleet",
    ]);

    let uninstall = cp.helm(&["uninstall", "pb", "--namespace", &ns]);
    assert!(uninstall.status.success(), "{}", text(&uninstall));
    println!("$ helm uninstall pb -n {ns}\n{}", text(&uninstall));
    assert!(
        text(&uninstall).contains("kept due to the resource policy"),
        "helm does not say it keeps the CRDs:\n{}",
        text(&uninstall)
    );
    eventually("the Deployment gone", 60, || {
        (!cp.kubectl(&["get", "-n", &ns, "deployment/pb-paperbot"])
            .status
            .success())
        .then_some(())
    });
    assert!(
        !cp.kubectl(&["get", "clusterrole/pb-paperbot"])
            .status
            .success()
    );
    cp.kubectl_ok(&["get", CRDS[0], CRDS[1], CRDS[2]]);
    let listing = cp.kubectl_ok(&["get", "paperbot", "-n", &ns]);
    println!("after helm uninstall: $ kubectl get paperbot -n {ns}\n{listing}");
    assert!(
        listing.contains("botsession.paperbot.io/trend-sim-a"),
        "{listing}"
    );
}

/// The operator in namespaced mode, as the chart sets it up
/// (`watchNamespaces`): a Role in the watched namespace and the leader Role,
/// no ClusterRole. It elects itself, runs a session (children, pod, ledger
/// claim, status Running and Ready) and deletes it through the finalizer;
/// a session in a namespace it does not watch is left alone; and the API
/// server's audit log shows no cluster-wide request of it and no refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_operator_runs_sessions_with_roles_only() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-ns-mode");
    let other = cp.namespace("e2e-ns-mode-other");
    let release = format!("ns-operator-{}", std::process::id());
    let id = cp.namespaced_operator_identity(&release, &[&ns]);
    let bindings = cp.kubectl_ok(&[
        "get",
        "clusterrolebindings",
        "-o",
        "jsonpath={range .items[*]}{.subjects[*].name}{'\\n'}{end}",
    ]);
    assert!(
        !bindings
            .lines()
            .any(|l| l.split(' ').any(|s| s == format!("{release}-paperbot"))),
        "namespaced mode must bind no ClusterRole"
    );
    let client = id.client().await;

    // Leader election through the leader Role of the release namespace.
    let leader = LeaderElection::start(
        client.clone(),
        LeaderConfig {
            lease_name: format!("{release}-paperbot"),
            namespace: OPERATOR_NAMESPACE.into(),
            identity: release.clone(),
            lease_duration: Duration::from_secs(5),
        },
        Arc::new(Metrics::new()),
    )
    .await
    .expect("leader election with the chart's leader Role");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !leader.is_leader() {
        assert!(std::time::Instant::now() < deadline, "never became leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let ledger = LedgerSettings {
        storage_size: "1Gi".into(),
        storage_class: Some(cp.ledger_storage_class().into()),
        ..Default::default()
    };
    let (_, endpoints) = paperbot_e2e::fake_runtime::FakeFleet::shared();
    let ctx =
        base_context(client, &release, ledger, Duration::from_secs(1)).with_sync(SyncSettings {
            interval: Duration::from_secs(1),
            endpoint_template: Some(endpoints.clone()),
            ..Default::default()
        });
    let op = Operator::run(Arc::new(ctx), &ns).await;

    let child = child_name("bot");
    cp.provision_ledger_volume(&ns, &claim_name(&child), "1Gi");
    let manifests = r#"apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata: {name: acct}
spec: {initialBalance: "10000"}
---
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {name: strat}
spec:
  signals: {smaCrossover: {fastPeriod: 10, slowPeriod: 30}}
---
apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {name: bot}
spec:
  accountRef: {name: acct}
  strategyRef: {name: strat}
  allocation: "5000"
  symbols: [SIM-BTC]
  marketData: {source: Simulated, simulated: {seed: 1, candles: 1000}}
"#;
    cp.kubectl_stdin_ok(&["apply", "-n", &ns, "-f", "-"], manifests);
    cp.kubectl_stdin_ok(&["apply", "-n", &other, "-f", "-"], manifests);
    cp.kubectl_ok(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Ready",
        "botsession/bot",
        "--timeout=90s",
    ]);
    assert_eq!(
        jsonpath(cp, &ns, "botsession/bot", "{.status.phase}"),
        "Running"
    );
    assert_eq!(
        jsonpath(
            cp,
            &ns,
            &format!("pvc/{}", claim_name(&child)),
            "{.status.phase}"
        ),
        "Bound"
    );
    let listing = cp.kubectl_ok(&["get", "paperbot", "-n", &ns]);
    println!("namespaced operator: $ kubectl get paperbot -n {ns}\n{listing}");
    // The namespace it does not watch: no children, no status.
    assert_eq!(
        jsonpath(cp, &other, "botsession/bot", "{.status.phase}"),
        ""
    );
    assert!(
        !cp.kubectl(&["get", "-n", &other, &format!("statefulset/{child}")])
            .status
            .success()
    );

    cp.kubectl_ok(&["delete", "-n", &ns, "botsession/bot", "--timeout=60s"]);
    op.stop().await;
    leader.release().await;

    let events = cp.audit_events(&id.username);
    assert!(
        events.len() > 10,
        "too few audited requests: {}",
        events.len()
    );
    let cluster_wide: Vec<String> = events
        .iter()
        .filter(|e| e.namespace.is_empty())
        .map(ToString::to_string)
        .collect();
    assert!(
        cluster_wide.is_empty(),
        "cluster-wide requests in namespaced mode: {cluster_wide:?}"
    );
    let refused: Vec<String> = events
        .iter()
        .filter(|e| e.code == 403)
        .map(|e| format!("{e} ({})", e.code))
        .collect();
    assert!(
        refused.is_empty(),
        "requests the Roles refused: {refused:?}"
    );
    let namespaces: BTreeSet<&str> = events.iter().map(|e| e.namespace.as_str()).collect();
    assert_eq!(
        namespaces,
        BTreeSet::from([ns.as_str(), OPERATOR_NAMESPACE])
    );
    println!(
        "namespaced operator: {} requests, all in {namespaces:?}, none refused",
        events.len()
    );
    cp.delete_ledger_volumes(&ns);
}

/// CloudNativePG's Go module (its `config/crd/bases` hold the CRDs the
/// example is checked against); fetched through the Go module proxy like
/// the control plane's modules, cached in GOMODCACHE.
const CLOUDNATIVEPG_MODULE: &str = "github.com/cloudnative-pg/cloudnative-pg@v1.25.1";

/// The Prometheus Operator, whose CRDs (ServiceMonitor, PodMonitor,
/// PrometheusRule) the chart's monitoring resources are checked against.
const PROMETHEUS_OPERATOR_MODULE: &str =
    "github.com/prometheus-operator/prometheus-operator@v0.85.0";

/// Where `go mod download` put `module` (a Go module with its release's
/// files; the Go module proxy is reachable where the registries are).
fn go_module_dir(module: &str) -> PathBuf {
    let out = std::process::Command::new("go")
        .current_dir(std::env::temp_dir())
        .env("GOFLAGS", "-mod=mod")
        .args(["mod", "download", "-json", module])
        .output()
        .expect("go runs (the end-to-end tests need Go)");
    assert!(
        out.status.success(),
        "go mod download {module} failed:\n{}",
        text(&out)
    );
    let info: Value =
        serde_json::from_slice(&out.stdout).expect("go mod download -json prints JSON");
    PathBuf::from(
        info["Dir"]
            .as_str()
            .expect("Dir in go mod download's answer"),
    )
}

/// Install the Prometheus Operator's ServiceMonitor, PodMonitor and
/// PrometheusRule CRDs (from its release), so a server-side dry run checks
/// the chart's monitoring resources against their real schemas.
fn install_prometheus_operator_crds(cp: &ControlPlane) {
    let dir = go_module_dir(PROMETHEUS_OPERATOR_MODULE).join("example/prometheus-operator-crd");
    for kind in ["servicemonitors", "podmonitors", "prometheusrules"] {
        let crd = dir.join(format!("monitoring.coreos.com_{kind}.yaml"));
        cp.kubectl_ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crd.to_str().expect("utf-8 path"),
        ]);
        let name = format!("crd/{kind}.monitoring.coreos.com");
        eventually(&format!("{name} established"), 60, || {
            cp.kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=10s",
                &name,
            ])
            .status
            .success()
            .then_some(())
        });
    }
}

/// `examples/cloudnativepg/ledger.yaml` (a CloudNativePG Cluster and an
/// account whose sessions keep their ledger in it) is accepted by the API
/// server with CloudNativePG's own Cluster CRD installed (server-side dry
/// run: the schema and its CEL rules check the Cluster).
#[test]
fn cloudnativepg_example_is_a_valid_cluster() {
    let cp = control_plane();
    cp.install_crds();
    let crd = go_module_dir(CLOUDNATIVEPG_MODULE)
        .join("config/crd/bases/postgresql.cnpg.io_clusters.yaml");
    cp.kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        crd.to_str().expect("utf-8 path"),
    ]);
    // Right after creation the CRD has no status yet, which `kubectl wait`
    // reports as an error rather than waiting.
    eventually("the Cluster CRD established", 60, || {
        cp.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=10s",
            "crd/clusters.postgresql.cnpg.io",
        ])
        .status
        .success()
        .then_some(())
    });
    let ns = cp.namespace("e2e-cnpg");
    let example = repo().join("examples/cloudnativepg/ledger.yaml");
    let out = cp.kubectl(&[
        "apply",
        "--dry-run=server",
        "-n",
        &ns,
        "-f",
        example.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "the CloudNativePG example was refused:\n{}",
        text(&out)
    );
    let accepted = String::from_utf8_lossy(&out.stdout);
    println!("{accepted}");
    assert!(
        accepted.contains("cluster.postgresql.cnpg.io/pg created (server dry run)"),
        "{accepted}"
    );
    assert!(
        accepted.contains("paperaccount.paperbot.io/pg-fleet created (server dry run)"),
        "{accepted}"
    );
}

/// One `paperbot-operator` process, killed when dropped.
struct Replica {
    name: String,
    child: std::process::Child,
    base: String,
}

impl Replica {
    /// Start the operator binary as the chart would run it: with `id`'s
    /// credentials, leader election on the release's Lease in the release
    /// namespace, watching `ns`.
    fn start(name: &str, id: &paperbot_e2e::Identity, lease: &str, ns: &str) -> Replica {
        let logs = repo().join(format!("target/e2e-{name}-{}.log", std::process::id()));
        let log = std::fs::File::create(&logs).expect("operator log file");
        let mut child = std::process::Command::new(paperbot_e2e::scale::operator_binary(false))
            .env("KUBECONFIG", &id.kubeconfig)
            .env("POD_NAMESPACE", &id.namespace)
            .env("POD_NAME", name)
            .env("RUST_LOG", "info")
            .args([
                &format!("--namespaces={ns}"),
                &format!("--lease-name={lease}"),
                "--lease-duration=4s",
                "--leader-election=true",
                "--log-format=text",
                "--runtime-image=ghcr.io/paperbot/bot-runtime:e2e",
                // Port 0, read back from the log: a port picked here could be
                // taken by another process before the operator binds it.
                "--metrics-addr=127.0.0.1:0",
            ])
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .expect("starting paperbot-operator");
        let addr = paperbot_testkit::wait_for_logged_addr(
            &mut child,
            &logs,
            "/readyz",
            std::time::Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("operator {name} {e}"));
        Replica {
            name: name.to_string(),
            child,
            base: format!("http://{addr}"),
        }
    }

    /// `/readyz` status code (0 when it does not answer) and the value of
    /// `paperbot_operator_leader` (None when unknown).
    async fn probe(&self, http: &reqwest::Client) -> (u16, Option<bool>) {
        let ready = match http.get(format!("{}/readyz", self.base)).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        let leader = match http.get(format!("{}/metrics", self.base)).send().await {
            Ok(r) => r.text().await.ok().and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("paperbot_operator_leader "))
                    .map(|l| l.ends_with(" 1"))
            }),
            Err(_) => None,
        };
        (ready, leader)
    }

    /// SIGTERM, then wait for the exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.child.wait().expect("waiting for the operator")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two operator replicas, as the chart runs them with `replicaCount: 2`
/// (the binary, the chart's namespaced RBAC and Lease): both report ready
/// (the standby while it stands by, so that a rollout, `helm --wait` and the
/// PodDisruptionBudget count it), exactly one leads; when the leader stops,
/// the standby takes the Lease and leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_are_both_ready_and_one_leads_until_it_stops() {
    let cp = control_plane();
    cp.install_crds();
    let ns = cp.namespace("e2e-ha");
    let release = format!("ha-operator-{}", std::process::id());
    let id = cp.namespaced_operator_identity(&release, &[&ns]);
    let lease = format!("{release}-paperbot");
    let mut replicas = [
        Replica::start("replica-a", &id, &lease, &ns),
        Replica::start("replica-b", &id, &lease, &ns),
    ];
    paperbot_operator::tls::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("HTTP client");
    let settled = |states: &[(u16, Option<bool>)]| {
        states.iter().all(|(ready, _)| *ready == 200)
            && states.iter().filter(|(_, l)| *l == Some(true)).count() == 1
            && states.iter().filter(|(_, l)| *l == Some(false)).count() == 1
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let states = loop {
        let mut states = Vec::new();
        for r in &replicas {
            states.push(r.probe(&http).await);
        }
        if settled(&states) {
            break states;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "two replicas did not settle to both ready, one leader: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let leader = states.iter().position(|(_, l)| *l == Some(true)).unwrap();
    let standby = 1 - leader;
    let holder = jsonpath(
        cp,
        OPERATOR_NAMESPACE,
        &format!("lease/{lease}"),
        "{.spec.holderIdentity}",
    );
    assert_eq!(holder, replicas[leader].name);
    println!(
        "{} leads, {} stands by; both /readyz 200",
        replicas[leader].name, replicas[standby].name
    );

    let status = replicas[leader].terminate();
    assert!(
        status.success(),
        "the leader exited with {status} on SIGTERM"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (ready, leads) = replicas[standby].probe(&http).await;
        if ready == 200 && leads == Some(true) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the standby did not take over: readyz {ready}, leader {leads:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let holder = jsonpath(
        cp,
        OPERATOR_NAMESPACE,
        &format!("lease/{lease}"),
        "{.spec.holderIdentity}",
    );
    assert_eq!(holder, replicas[standby].name);
    println!(
        "after the leader stopped, {} leads and is ready",
        replicas[standby].name
    );
}
