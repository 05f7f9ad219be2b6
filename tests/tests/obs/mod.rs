//! What the observability tests read: the Grafana dashboards
//! (`charts/paperbot/dashboards/*.json`), the alerting rules
//! (`charts/paperbot/files/alerts.yaml`) and their PromQL, parsed with
//! `promql-parser`. Shared by `tests/observability.rs` (static checks) and
//! the end-to-end test `e2e/prometheus.rs` (queries against a real
//! Prometheus).

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use paperbot_e2e::repo;
use promql_parser::{
    label::MatchOp,
    parser::{self, Expr, LabelModifier, VectorMatchCardinality, VectorSelector},
};
use serde_json::Value;

/// The duration `$__rate_interval` stands for while linting: any range
/// equal to it was written as `$__rate_interval` (the linter's trick).
pub const RATE_INTERVAL_MAGIC: &str = "123d4h5m6s";

/// Where the dashboards are.
pub fn dashboards_dir() -> PathBuf {
    repo().join("charts/paperbot/dashboards")
}

/// The alerting rule file.
pub fn alerts_file() -> PathBuf {
    repo().join("charts/paperbot/files/alerts.yaml")
}

/// One query of a panel.
#[derive(Clone, Debug)]
pub struct Target {
    /// The PromQL, with Grafana variables.
    pub expr: String,
    /// `legendFormat`, e.g. `{{namespace}}/{{account}}`.
    pub legend: String,
    /// Its datasource object.
    pub datasource: Value,
}

/// One panel (rows excluded).
#[derive(Clone, Debug)]
pub struct Panel {
    /// `id`.
    pub id: u64,
    /// `type`, e.g. `timeseries`.
    pub kind: String,
    /// `title`.
    pub title: String,
    /// The panel's JSON.
    pub json: Value,
    /// Its queries.
    pub targets: Vec<Target>,
}

/// One template variable.
#[derive(Clone, Debug)]
pub struct Variable {
    /// The variable's JSON.
    pub json: Value,
    /// `name`.
    pub name: String,
    /// `type`: `datasource`, `query`, ...
    pub kind: String,
    /// The query (`label_values(...)`, `query_result(...)`), or the plugin
    /// id of a datasource variable.
    pub query: String,
}

/// One dashboard file.
#[derive(Clone, Debug)]
pub struct Dashboard {
    /// File name, e.g. `fleet-overview.json`.
    pub file: String,
    /// The whole JSON.
    pub json: Value,
    /// `title`.
    pub title: String,
    /// Every panel but rows (also those nested in collapsed rows).
    pub panels: Vec<Panel>,
    /// `templating.list`.
    pub variables: Vec<Variable>,
}

fn panels_of(list: &Value, out: &mut Vec<Panel>) {
    for p in list.as_array().into_iter().flatten() {
        if p["type"] == "row" {
            panels_of(&p["panels"], out);
            continue;
        }
        out.push(Panel {
            id: p["id"].as_u64().unwrap_or(0),
            kind: p["type"].as_str().unwrap_or_default().to_string(),
            title: p["title"].as_str().unwrap_or_default().to_string(),
            json: p.clone(),
            targets: p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| Target {
                    expr: t["expr"].as_str().unwrap_or_default().to_string(),
                    legend: t["legendFormat"].as_str().unwrap_or_default().to_string(),
                    datasource: t["datasource"].clone(),
                })
                .collect(),
        });
    }
}

/// Every dashboard, by file name.
///
/// # Panics
/// When the directory or a file cannot be read or is not JSON.
pub fn dashboards() -> Vec<Dashboard> {
    let dir = dashboards_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            let mut panels = Vec::new();
            panels_of(&json["panels"], &mut panels);
            let variables = json["templating"]["list"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| Variable {
                    json: v.clone(),
                    name: v["name"].as_str().unwrap_or_default().to_string(),
                    kind: v["type"].as_str().unwrap_or_default().to_string(),
                    query: match &v["query"] {
                        Value::String(s) => s.clone(),
                        q => q["query"].as_str().unwrap_or_default().to_string(),
                    },
                })
                .collect();
            Dashboard {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                title: json["title"].as_str().unwrap_or_default().to_string(),
                json,
                panels,
                variables,
            }
        })
        .collect()
}

/// `expr` with Grafana's variables replaced: `$__rate_interval` (and
/// `${__rate_interval}`) by `rate_interval`, `$name` and `${name}` by
/// `values[name]`. Longer names first, so `$job` never eats `$jobs`.
pub fn substitute(expr: &str, rate_interval: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = expr
        .replace("${__rate_interval}", rate_interval)
        .replace("$__rate_interval", rate_interval);
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), &values[name])
            .replace(&format!("${name}"), &values[name]);
    }
    out
}

/// Parse PromQL.
///
/// # Errors
/// The parser's message.
pub fn parse(expr: &str) -> Result<Expr, String> {
    parser::parse(expr)
}

/// Visit every node of `e` with its ancestors (outermost first).
pub fn walk<'a>(
    e: &'a Expr,
    parents: &mut Vec<&'a Expr>,
    f: &mut dyn FnMut(&'a Expr, &[&'a Expr]),
) {
    f(e, parents);
    parents.push(e);
    match e {
        Expr::Aggregate(a) => {
            walk(&a.expr, parents, f);
            if let Some(p) = &a.param {
                walk(p, parents, f);
            }
        }
        Expr::Unary(u) => walk(&u.expr, parents, f),
        Expr::Binary(b) => {
            walk(&b.lhs, parents, f);
            walk(&b.rhs, parents, f);
        }
        Expr::Paren(p) => walk(&p.expr, parents, f),
        Expr::Subquery(s) => walk(&s.expr, parents, f),
        Expr::Call(c) => {
            for a in &c.args.args {
                walk(a, parents, f);
            }
        }
        _ => {}
    }
    parents.pop();
}

/// Every vector selector of `e` (those inside range selectors included).
pub fn selectors(e: &Expr) -> Vec<VectorSelector> {
    let mut out = Vec::new();
    walk(e, &mut Vec::new(), &mut |n, _| match n {
        Expr::VectorSelector(v) => out.push(v.clone()),
        Expr::MatrixSelector(m) => out.push(m.vs.clone()),
        _ => {}
    });
    out
}

/// The metric name a selector reads.
pub fn metric_name(v: &VectorSelector) -> Option<String> {
    v.name.clone().or_else(|| {
        v.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.clone())
    })
}

/// Every metric name `e` reads.
pub fn metric_names(e: &Expr) -> BTreeSet<String> {
    selectors(e).iter().filter_map(metric_name).collect()
}

/// A selector as PromQL text (for the series API).
pub fn selector_text(v: &VectorSelector) -> String {
    let mut v = v.clone();
    v.offset = None;
    v.at = None;
    v.to_string()
}

/// Every label name `e` names outside matchers: `by`/`without`,
/// `on`/`ignoring`, `group_left`/`group_right`.
pub fn grouping_labels(e: &Expr) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let modifier = |m: &LabelModifier, out: &mut BTreeSet<String>| {
        out.extend(m.labels().labels.iter().cloned());
    };
    walk(e, &mut Vec::new(), &mut |n, _| match n {
        Expr::Aggregate(a) => {
            if let Some(m) = &a.modifier {
                modifier(m, &mut out);
            }
        }
        Expr::Binary(b) => {
            if let Some(m) = &b.modifier {
                if let Some(matching) = &m.matching {
                    modifier(matching, &mut out);
                }
                match &m.card {
                    VectorMatchCardinality::ManyToOne(l) | VectorMatchCardinality::OneToMany(l) => {
                        out.extend(l.labels.iter().cloned());
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    });
    out
}

/// Label names of `{{label}}` placeholders in a legend format.
pub fn legend_labels(legend: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = legend;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        if !name.is_empty() {
            out.insert(name.to_string());
        }
        rest = &after[end + 2..];
    }
    out
}

/// Whether `e` is a scalar made of number literals only (`15 * 60`).
pub fn is_literal(e: &Expr) -> bool {
    match e {
        Expr::NumberLiteral(_) => true,
        Expr::Paren(p) => is_literal(&p.expr),
        Expr::Unary(u) => is_literal(&u.expr),
        Expr::Binary(b) => is_literal(&b.lhs) && is_literal(&b.rhs),
        _ => false,
    }
}

/// The parts of an alert expression that must each return series while the
/// system is healthy: a filter against a literal (`x > 0.1`) keeps its
/// vector side, a comparison of two vectors and a set operation (`and`,
/// `or`, `unless`) keep both sides, `absent(x)` keeps `x`. The first part
/// is the one whose labels the alert carries.
pub fn operands(e: &Expr) -> Vec<Expr> {
    match e {
        Expr::Paren(p) => operands(&p.expr),
        Expr::Binary(b) if b.op.is_set_operator() => {
            let mut v = operands(&b.lhs);
            v.extend(operands(&b.rhs));
            v
        }
        Expr::Binary(b)
            if b.op.is_comparison_operator()
                && !b.modifier.as_ref().is_some_and(|m| m.return_bool) =>
        {
            if is_literal(&b.rhs) {
                operands(&b.lhs)
            } else if is_literal(&b.lhs) {
                operands(&b.rhs)
            } else {
                let mut v = operands(&b.lhs);
                v.extend(operands(&b.rhs));
                v
            }
        }
        Expr::Call(c) if c.func.name == "absent" => {
            c.args.args.iter().flat_map(|a| operands(a)).collect()
        }
        other => vec![other.clone()],
    }
}

/// One alerting rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Group name.
    pub group: String,
    /// `alert`.
    pub alert: String,
    /// `expr`.
    pub expr: String,
    /// `labels`.
    pub labels: BTreeMap<String, String>,
    /// `annotations`.
    pub annotations: BTreeMap<String, String>,
}

/// Every alerting rule of [`alerts_file`].
///
/// # Panics
/// When the file cannot be read or is not a rule file.
pub fn alert_rules() -> Vec<Rule> {
    let path = alerts_file();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let doc: serde_yaml::Value = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    let map = |v: &serde_yaml::Value| -> BTreeMap<String, String> {
        v.as_mapping()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
            .collect()
    };
    let mut rules = Vec::new();
    for g in doc["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let Some(alert) = r["alert"].as_str() else {
                continue;
            };
            rules.push(Rule {
                group: g["name"].as_str().unwrap_or_default().to_string(),
                alert: alert.to_string(),
                expr: r["expr"].as_str().expect("expr").to_string(),
                labels: map(&r["labels"]),
                annotations: map(&r["annotations"]),
            });
        }
    }
    rules
}

/// Label names an alert template reads (`$labels.name`).
pub fn template_labels(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("$labels.") {
        let name: String = text[i + 8..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// Label names an alert's annotations read unconditionally (inside a
/// `{{ with $labels.x }}` block a label may be absent).
pub fn required_template_labels(text: &str) -> BTreeSet<String> {
    let mut all = template_labels(text);
    for (i, _) in text.match_indices("{{ with $labels.") {
        let name: String = text[i + 16..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        all.remove(&name);
    }
    all
}
