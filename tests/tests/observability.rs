//! The alerts, runbooks and dashboards, checked without a cluster:
//!
//! - `promtool check rules` on `charts/paperbot/files/alerts.yaml` and
//!   `promtool test rules` on `tests/prometheus/alerts.test.yaml`, which
//!   shows every alert firing and not firing;
//! - every alert links its section of `docs/runbooks.md`, and every section
//!   has its meaning, impact, diagnosis (with kubectl) and fix;
//! - the dashboards pass a linter that mirrors the rules of Grafana's
//!   dashboard-linter (github.com/grafana/dashboard-linter, not installable
//!   here: not served by the Go module proxy, and no linter of Grafana
//!   dashboards is published on npm, PyPI or crates.io);
//! - `docs/dashboards.md` lists every panel with the metrics it reads.
//!
//! That each query returns series with the labels it uses is checked
//! against a real Prometheus in the end-to-end test `e2e/prometheus.rs`.

#[path = "obs/mod.rs"]
mod obs;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
};

use obs::{Dashboard, Panel};
use paperbot_e2e::repo;
use promql_parser::{label::MatchOp, parser::Expr};
use serde_json::Value;

/// Run `promtool ARGS` in the repository; its output, or a failure naming
/// how to get promtool.
fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .current_dir(repo())
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is needed for this test ({e}): apt-get install prometheus \
                 (Debian/Ubuntu), or put a Prometheus release's promtool on PATH"
            )
        });
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The alert rule file is valid and its unit tests pass: each alert firing
/// with its labels and annotations, and not firing.
#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    let (ok, out) = promtool(&["check", "rules", "charts/paperbot/files/alerts.yaml"]);
    assert!(ok, "promtool check rules:\n{out}");
    let rules = obs::alert_rules();
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{out}"
    );
    let (ok, out) = promtool(&["test", "rules", "tests/prometheus/alerts.test.yaml"]);
    assert!(ok, "promtool test rules:\n{out}");
    println!("{out}");

    // Every alert is tested firing (an expected alert) and not firing (an
    // empty expectation).
    let text = std::fs::read_to_string(repo().join("tests/prometheus/alerts.test.yaml")).unwrap();
    let tests: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for t in tests["tests"].as_sequence().expect("tests") {
        for case in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_string();
            if case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty())
            {
                firing.insert(name);
            } else {
                silent.insert(name);
            }
        }
    }
    for r in &rules {
        assert!(
            firing.contains(&r.alert),
            "{} is never tested firing",
            r.alert
        );
        assert!(
            silent.contains(&r.alert),
            "{} is never tested not firing",
            r.alert
        );
    }
    let names: BTreeSet<&str> = rules.iter().map(|r| r.alert.as_str()).collect();
    for tested in firing.iter().chain(&silent) {
        assert!(
            names.contains(tested.as_str()),
            "tests of an unknown alert {tested}"
        );
    }
}

/// The list of alerts, each with a severity, a summary, a
/// description and a runbook link to its own section, which explains the
/// alert and how to diagnose it with kubectl.
#[test]
fn every_alert_links_its_runbook_section() {
    let rules = obs::alert_rules();
    let names: BTreeSet<&str> = rules.iter().map(|r| r.alert.as_str()).collect();
    for wanted in [
        "PaperbotCircuitBreakerOpen",
        "PaperbotSessionNotReporting",
        "PaperbotAccountNearKillSwitch",
        "PaperbotSessionHalted",
        "PaperbotMarketDataStale",
        "PaperbotMarketDataDegraded",
        "PaperbotLedgerErrors",
        "PaperbotOperatorReconcileErrors",
        "PaperbotOperatorNotLeading",
        "PaperbotStatusWriteBudgetExceeded",
    ] {
        assert!(names.contains(wanted), "no alert {wanted} in {names:?}");
    }
    let runbooks = std::fs::read_to_string(repo().join("docs/runbooks.md")).unwrap();
    // Sections by their `## ` heading.
    let mut sections: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in runbooks.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            current = Some(h.trim().to_string());
            sections.insert(h.trim().to_string(), String::new());
        } else if let Some(c) = &current {
            let s = sections.get_mut(c).unwrap();
            s.push_str(line);
            s.push('\n');
        }
    }
    let base = "https://github.com/paperbot/paperbot/blob/main/docs/runbooks.md";
    for r in &rules {
        let sev = r.labels.get("severity").map(String::as_str);
        assert!(
            matches!(sev, Some("warning" | "critical")),
            "{}: severity {sev:?}",
            r.alert
        );
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                r.annotations.get(key).is_some_and(|v| !v.trim().is_empty()),
                "{} has no {key}",
                r.alert
            );
        }
        assert_eq!(
            r.annotations["runbook_url"],
            format!("{base}#{}", r.alert.to_lowercase()),
            "{}: the runbook link is its section's anchor",
            r.alert
        );
        let section = sections
            .get(&r.alert)
            .unwrap_or_else(|| panic!("docs/runbooks.md has no section \"## {}\"", r.alert));
        for part in ["### Meaning", "### Impact", "### Diagnosis", "### Fix"] {
            assert!(
                section.contains(part),
                "the runbook of {} has no \"{part}\"",
                r.alert
            );
        }
        assert!(
            section.contains("kubectl "),
            "the runbook of {} shows no kubectl command",
            r.alert
        );
    }
    for heading in sections.keys() {
        assert!(
            names.contains(heading.as_str()) || !heading.starts_with("Paperbot"),
            "docs/runbooks.md has a section for an alert that does not exist: {heading}"
        );
    }
}

// ---- the dashboard linter ------------------------------------------------

/// Units Grafana knows (its value formats), as the dashboard linter lists
/// them, limited to the categories a trading fleet can use.
const UNITS: &[&str] = &[
    "none",
    "string",
    "short",
    "percent",
    "percentunit",
    "locale",
    "sci",
    "currencyUSD",
    "currencyEUR",
    "currencyGBP",
    "currencyJPY",
    "currencyCHF",
    "currencyBTC",
    "bytes",
    "decbytes",
    "ns",
    "µs",
    "ms",
    "s",
    "m",
    "h",
    "d",
    "dtdurationms",
    "dtdurations",
    "dateTimeAsIso",
    "dateTimeFromNow",
    "hertz",
    "cps",
    "ops",
    "reqps",
    "rps",
    "wps",
    "iops",
    "cpm",
    "opm",
    "rpm",
    "wpm",
    "bool",
    "bool_yes_no",
    "bool_on_off",
];

/// Panel types that query the datasource.
fn queries(p: &Panel) -> bool {
    !matches!(p.kind.as_str(), "text" | "news" | "dashlist" | "row")
}

fn is_datasource_variable(uid: &Value) -> bool {
    matches!(uid.as_str(), Some("$datasource" | "${datasource}"))
}

/// The findings of the dashboard linter rules on `d`, as `rule: message`.
fn lint(d: &Dashboard) -> Vec<String> {
    let mut found = Vec::new();
    let mut add = |rule: &str, msg: String| found.push(format!("{}: {rule}: {msg}", d.file));

    // uneditable-dashboard
    if d.json["editable"] != false {
        add(
            "uneditable-dashboard",
            "is editable, it should set editable: false".into(),
        );
    }
    for key in ["uid", "title", "description"] {
        if d.json[key].as_str().is_none_or(|s| s.trim().is_empty()) {
            add("dashboard-metadata", format!("has no {key}"));
        }
    }
    // template-datasource-rule
    let ds: Vec<_> = d
        .variables
        .iter()
        .filter(|v| v.kind == "datasource")
        .collect();
    match ds.as_slice() {
        [v] => {
            if v.name != "datasource" {
                add(
                    "template-datasource-rule",
                    format!(
                        "datasource variable named '{}', should be 'datasource'",
                        v.name
                    ),
                );
            }
            if v.json["label"] != "Data source" {
                add(
                    "template-datasource-rule",
                    "datasource variable should be labeled 'Data source'".into(),
                );
            }
            if v.query != "prometheus" {
                add(
                    "template-datasource-rule",
                    format!(
                        "datasource variable queries '{}', should be 'prometheus'",
                        v.query
                    ),
                );
            }
        }
        _ => add(
            "template-datasource-rule",
            format!("has {} templated data sources, should have one", ds.len()),
        ),
    }
    // template-job-rule, and its namespace twin (the dashboards filter by
    // the Kubernetes namespace where the linter's template-instance-rule
    // asks for `instance`: a runtime's instance changes with every pod).
    for (name, label) in [("job", "Job"), ("namespace", "Namespace")] {
        let Some(v) = d.variables.iter().find(|v| v.name == name) else {
            add(
                &format!("template-{name}-rule"),
                format!("is missing the {name} template"),
            );
            continue;
        };
        let j = &v.json;
        if !is_datasource_variable(&j["datasource"]["uid"]) {
            add(
                &format!("template-{name}-rule"),
                format!("{name} template should use datasource '$datasource'"),
            );
        }
        if v.kind != "query" {
            add(
                &format!("template-{name}-rule"),
                format!(
                    "{name} template should be a Prometheus query, is '{}'",
                    v.kind
                ),
            );
        }
        if j["label"] != label {
            add(
                &format!("template-{name}-rule"),
                format!("{name} template should be labeled '{label}'"),
            );
        }
        if j["multi"] != true {
            add(
                &format!("template-{name}-rule"),
                format!("{name} template should be a multi select"),
            );
        }
        if j["allValue"] != ".+" {
            add(
                &format!("template-{name}-rule"),
                format!("{name} template allValue should be '.+'"),
            );
        }
    }
    // Variables stay as written (`"$job"` is a valid PromQL string); only
    // `$__rate_interval` becomes a duration, one the rate rule recognises.
    let names = BTreeMap::new();
    for v in d.variables.iter().filter(|v| v.kind == "query") {
        // template-on-time-change-reload-rule
        if v.json["refresh"] != 2 {
            add(
                "template-on-time-change-reload-rule",
                format!(
                    "variable '{}' should refresh on time range change (2)",
                    v.name
                ),
            );
        }
        if !is_datasource_variable(&v.json["datasource"]["uid"]) {
            add(
                "template-datasource-rule",
                format!(
                    "variable '{}' does not use the templated datasource",
                    v.name
                ),
            );
        }
        // template-label-promql-rule
        let q = v.query.trim();
        let inner = ["label_values(", "query_result(", "label_names(", "metrics("]
            .iter()
            .find_map(|f| q.strip_prefix(f))
            .and_then(|r| r.strip_suffix(')'));
        match inner {
            None => add(
                "template-label-promql-rule",
                format!(
                    "variable '{}': '{q}' is not label_values, label_names, metrics or query_result",
                    v.name
                ),
            ),
            Some(inner) => {
                let promql = if q.starts_with("label_values(") {
                    inner
                        .rsplit_once(',')
                        .map_or(inner, |(sel, _)| sel)
                        .trim()
                        .to_string()
                } else {
                    inner.to_string()
                };
                if !promql.is_empty()
                    && let Err(e) =
                        obs::parse(&obs::substitute(&promql, obs::RATE_INTERVAL_MAGIC, &names))
                {
                    add(
                        "template-label-promql-rule",
                        format!("variable '{}': invalid PromQL '{promql}': {e}", v.name),
                    );
                }
            }
        }
    }
    // Panel ids are unique (Grafana links and the sidecar rely on them).
    let mut ids = BTreeSet::new();
    let mut all_ids = vec![];
    fn ids_of(list: &Value, out: &mut Vec<u64>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p["id"].as_u64().unwrap_or(0));
            ids_of(&p["panels"], out);
        }
    }
    ids_of(&d.json["panels"], &mut all_ids);
    for id in all_ids {
        if id == 0 || !ids.insert(id) {
            add("panel-id", format!("panel id {id} is missing or repeated"));
        }
    }
    let mut titles = BTreeSet::new();
    for p in &d.panels {
        let name = format!("panel {} '{}'", p.id, p.title);
        if !titles.insert(p.title.clone()) {
            add(
                "panel-title-description-rule",
                format!("{name}: the title is used twice"),
            );
        }
        // panel-title-description-rule
        if p.title.trim().is_empty()
            || p.json["description"]
                .as_str()
                .is_none_or(|s| s.trim().is_empty())
        {
            add(
                "panel-title-description-rule",
                format!("{name} has no title or description"),
            );
        }
        if !queries(p) {
            continue;
        }
        // panel-datasource-rule (the panel's and each target's)
        if !is_datasource_variable(&p.json["datasource"]["uid"]) {
            add(
                "panel-datasource-rule",
                format!(
                    "{name} does not use the templated datasource, uses {}",
                    p.json["datasource"]
                ),
            );
        }
        // panel-no-targets-rule
        if p.targets.is_empty() {
            add("panel-no-targets-rule", format!("{name} has no targets"));
        }
        // panel-units-rule (value mappings exempt a panel, as in the linter)
        let defaults = &p.json["fieldConfig"]["defaults"];
        let mapped = defaults["mappings"]
            .as_array()
            .is_some_and(|m| !m.is_empty());
        let unit = defaults["unit"].as_str().unwrap_or_default();
        if !mapped && !UNITS.contains(&unit) {
            add(
                "panel-units-rule",
                format!("{name} has no or an invalid unit: '{unit}'"),
            );
        }
        // gridPos within the 24 columns.
        let g = &p.json["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap_or(99), g["w"].as_u64().unwrap_or(0));
        if w == 0 || x + w > 24 {
            add(
                "panel-grid",
                format!("{name} does not fit the 24 columns: {g}"),
            );
        }
        for t in &p.targets {
            if !is_datasource_variable(&t.datasource["uid"]) {
                add(
                    "panel-datasource-rule",
                    format!("{name}: a target does not use the templated datasource"),
                );
            }
            // target-promql-rule
            let text = obs::substitute(&t.expr, obs::RATE_INTERVAL_MAGIC, &names);
            let expr = match obs::parse(&text) {
                Ok(e) => e,
                Err(e) => {
                    add(
                        "target-promql-rule",
                        format!("{name}: invalid PromQL '{}': {e}", t.expr),
                    );
                    continue;
                }
            };
            for rule in target_rules(&t.expr, &expr) {
                add(rule.0, format!("{name}: {}", rule.1));
            }
        }
    }
    found
}

/// target-rate-interval-rule, target-job-rule, target-namespace-rule (the
/// linter's target-instance-rule, by namespace) and target-counter-agg-rule
/// on one parsed target.
fn target_rules(source: &str, expr: &Expr) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    let magic = promql_parser::util::duration::parse_duration(obs::RATE_INTERVAL_MAGIC).unwrap();
    obs::walk(expr, &mut Vec::new(), &mut |node, parents| {
        if let Expr::MatrixSelector(m) = node {
            let in_rate = parents
                .last()
                .is_some_and(|p| matches!(p, Expr::Call(c) if matches!(c.func.name, "rate" | "irate" | "increase")));
            if in_rate && m.range != magic {
                found.push((
                    "target-rate-interval-rule",
                    format!("'{source}' should use $__rate_interval"),
                ));
            }
        }
    });
    for v in obs::selectors(expr) {
        for (label, var) in [("job", "$job"), ("namespace", "$namespace")] {
            let ok = v
                .matchers
                .matchers
                .iter()
                .any(|m| m.name == label && matches!(m.op, MatchOp::Re(_)) && m.value == var);
            if !ok {
                found.push((
                    if label == "job" {
                        "target-job-rule"
                    } else {
                        "target-namespace-rule"
                    },
                    format!(
                        "'{source}': selector {} has no {label}=~\"{var}\" matcher",
                        obs::selector_text(&v)
                    ),
                ));
            }
        }
    }
    // target-counter-agg-rule: a counter is read through rate, irate or
    // increase over a range.
    obs::walk(expr, &mut Vec::new(), &mut |node, parents| {
        let name = match node {
            Expr::VectorSelector(v) => obs::metric_name(v),
            Expr::MatrixSelector(m) => obs::metric_name(&m.vs),
            _ => None,
        };
        let Some(name) = name.filter(|n| n.ends_with("_total")) else {
            return;
        };
        let ok = matches!(node, Expr::MatrixSelector(_))
            && parents
                .last()
                .is_some_and(|p| matches!(p, Expr::Call(c) if matches!(c.func.name, "rate" | "irate" | "increase")));
        if !ok {
            found.push((
                "target-counter-agg-rule",
                format!(
                    "'{source}': counter {name} is not aggregated with rate, irate or increase"
                ),
            ));
        }
    });
    found
}

/// The three dashboards pass the linter; the panels are there.
#[test]
fn dashboards_pass_the_dashboard_linter_rules() {
    let ds = obs::dashboards();
    let files: Vec<&str> = ds.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "fleet-overview.json",
            "operator-health.json",
            "session-detail.json"
        ]
    );
    let mut findings = Vec::new();
    let mut uids = BTreeSet::new();
    for d in &ds {
        findings.extend(lint(d));
        assert!(
            uids.insert(d.json["uid"].as_str().unwrap_or_default().to_string()),
            "uid repeated"
        );
        // No hard-coded datasource anywhere but Grafana's built-in
        // annotations.
        fn datasources(v: &Value, out: &mut Vec<Value>) {
            match v {
                Value::Object(m) => {
                    for (k, x) in m {
                        if k == "datasource" {
                            out.push(x.clone());
                        }
                        datasources(x, out);
                    }
                }
                Value::Array(a) => a.iter().for_each(|x| datasources(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        datasources(&d.json, &mut all);
        for x in all {
            let ok = x.is_null()
                || x == "prometheus"
                || is_datasource_variable(&x["uid"])
                || x["uid"] == "-- Grafana --";
            if !ok {
                findings.push(format!("{}: hard-coded datasource {x}", d.file));
            }
        }
        println!(
            "{}: {} panels, {} variables, linted clean: {}",
            d.file,
            d.panels.len(),
            d.variables.len(),
            lint(d).is_empty()
        );
    }
    assert!(
        findings.is_empty(),
        "{} finding(s):\n{}",
        findings.len(),
        findings.join("\n")
    );

    // The panels the issue asks for.
    let titles = |file: &str| -> Vec<String> {
        ds.iter()
            .find(|d| d.file == file)
            .unwrap()
            .panels
            .iter()
            .map(|p| p.title.to_lowercase())
            .collect()
    };
    for (file, wanted) in [
        (
            "fleet-overview.json",
            &[
                "sessions by phase",
                "equity by account",
                "p&l by account",
                "open breakers",
                "trades per minute",
            ][..],
        ),
        (
            "session-detail.json",
            &[
                "equity curve",
                "p&l",
                "drawdown",
                "positions",
                "trades",
                "circuit breakers",
                "autopilot adjustments",
                "decision latency",
                "market data age",
            ][..],
        ),
        (
            "operator-health.json",
            &[
                "reconciles",
                "reconcile errors",
                "reconcile duration",
                "queue depth",
                "leader",
                "status writes",
            ][..],
        ),
    ] {
        let t = titles(file);
        for w in wanted {
            assert!(
                t.iter().any(|x| x.contains(w)),
                "{file}: no panel about {w:?} in {t:?}"
            );
        }
    }
    // Variables for namespace, account and session.
    let vars = |file: &str| -> Vec<String> {
        ds.iter()
            .find(|d| d.file == file)
            .unwrap()
            .variables
            .iter()
            .map(|v| v.name.clone())
            .collect()
    };
    assert_eq!(
        vars("fleet-overview.json"),
        ["datasource", "job", "namespace", "account"]
    );
    assert_eq!(
        vars("session-detail.json"),
        ["datasource", "job", "namespace", "account", "session"]
    );
    assert_eq!(
        vars("operator-health.json"),
        ["datasource", "job", "namespace"]
    );
}

/// The linter finds what it should: a dashboard with each problem fails
/// the rule's check (so a clean result means something).
#[test]
fn the_linter_catches_each_rule() {
    let mut d = obs::dashboards().into_iter().next().unwrap();
    assert!(lint(&d).is_empty());
    d.json["editable"] = Value::Bool(true);
    let p = &mut d.panels[1];
    p.json["datasource"] = serde_json::json!({"type": "prometheus", "uid": "P1809F7CD0C75ACF3"});
    p.json["description"] = Value::String(String::new());
    p.json["fieldConfig"]["defaults"]["unit"] = Value::String("furlongs".into());
    p.targets[0].expr = "rate(paperbot_fills_total[5m])".into();
    d.variables.retain(|v| v.name != "job");
    let found = lint(&d).join("\n");
    for rule in [
        "uneditable-dashboard",
        "panel-datasource-rule",
        "panel-title-description-rule",
        "panel-units-rule",
        "target-rate-interval-rule",
        "target-job-rule",
        "target-namespace-rule",
        "template-job-rule",
    ] {
        assert!(found.contains(rule), "{rule} not reported:\n{found}");
    }
    let e =
        obs::parse("sum(paperbot_fills_total{job=~\"$job\", namespace=~\"$namespace\"})").unwrap();
    assert!(
        target_rules("x", &e)
            .iter()
            .any(|(r, _)| *r == "target-counter-agg-rule")
    );
}

/// `docs/dashboards.md` has a row per panel naming the metrics its queries
/// read, exactly.
#[test]
fn dashboards_md_lists_every_panel_and_the_metrics_it_reads() {
    let doc = std::fs::read_to_string(repo().join("docs/dashboards.md")).unwrap();
    // Rows `| Dashboard | Panel | metrics | ... |` of the panel tables.
    let mut documented: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 3 || !cells[0].starts_with("paperbot / ") {
            continue;
        }
        let metrics: BTreeSet<String> = cells[2]
            .split(',')
            .map(|m| m.trim().trim_matches('`').to_string())
            .filter(|m| m.starts_with("paperbot_"))
            .collect();
        documented.insert((cells[0].to_string(), cells[1].to_string()), metrics);
    }
    let names: BTreeMap<String, String> = [
        ("job", ".+"),
        ("namespace", ".+"),
        ("account", ".+"),
        ("session", ".+"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut problems = Vec::new();
    let mut rows = 0;
    for d in obs::dashboards() {
        for p in &d.panels {
            let mut read = BTreeSet::new();
            for t in &p.targets {
                let e = obs::parse(&obs::substitute(&t.expr, "1m", &names)).unwrap();
                read.extend(obs::metric_names(&e));
            }
            rows += 1;
            match documented.get(&(d.title.clone(), p.title.clone())) {
                None => problems.push(format!("no row for {} / {}", d.title, p.title)),
                Some(m) if *m != read => problems.push(format!(
                    "{} / {}: documented {m:?}, the panel reads {read:?}",
                    d.title, p.title
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/dashboards.md is stale:\n{}",
        problems.join("\n")
    );
    assert_eq!(
        documented.len(),
        rows,
        "docs/dashboards.md has rows for panels that do not exist"
    );
}
