//! The checked-in CRD manifests: current with the types, and carrying the
//! names, printer columns, subresources and OpenAPI bounds users rely on.

mod common;

use std::{collections::BTreeMap, fs, process::Command};

use common::{KINDS, checked_in_crd, checked_in_json, open_api_schema, walk, workspace_root};
use paperbot_crds::{
    BotSession, BotSessionSpec, DecimalString, PaperAccountSpec, StrategyConfigSpec, manifest,
};
use rust_decimal::Decimal;
use serde_json::{Value, json};

#[test]
fn checked_in_manifests_match_the_types() {
    let stale = manifest::stale(&workspace_root()).unwrap();
    assert!(
        stale.is_empty(),
        "stale CRD manifests:\n{}\nregenerate them with `{}` and commit the result",
        stale
            .iter()
            .map(|s| format!("  {s}"))
            .collect::<Vec<_>>()
            .join("\n"),
        manifest::REGENERATE_COMMAND
    );
}

/// The chart's CRD templates are the plain manifests plus the chart's
/// guard, labels and keep annotation (what Helm renders from them is
/// compared with the plain manifests by the end-to-end chart tests).
#[test]
fn helm_chart_templates_wrap_the_plain_manifests() {
    let root = workspace_root();
    assert!(
        !root.join("charts/paperbot/crds").exists(),
        "charts/paperbot/crds/ is back: Helm would install those files once and never upgrade them"
    );
    for (_, file) in KINDS {
        let plain = fs::read_to_string(root.join(manifest::PLAIN_DIR).join(file)).unwrap();
        let chart = fs::read_to_string(root.join(manifest::CHART_DIR).join(file)).unwrap();
        assert!(chart.starts_with(manifest::CHART_GUARD), "{file}: {chart}");
        assert!(chart.contains("helm.sh/resource-policy: keep"), "{file}");
        let spec_at = |t: &str| t.find("\nspec:\n").unwrap();
        assert_eq!(
            plain[spec_at(&plain)..],
            chart[spec_at(&chart)..].replace("{{- end }}\n", ""),
            "{file}: the chart template's spec differs from the plain manifest"
        );
    }
}

#[test]
fn crdgen_check_lists_stale_files_and_the_command_then_passes_after_regenerating() {
    let root = std::env::temp_dir().join(format!("paperbot-crdgen-check-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let crdgen = env!("CARGO_BIN_EXE_crdgen");

    let out = Command::new(crdgen)
        .args(["--check", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "--check must fail on missing files"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("botsessions.paperbot.io.yaml: missing"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cargo run -p paperbot-crds --bin crdgen"),
        "{stderr}"
    );

    let out = Command::new(crdgen)
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let status = Command::new(crdgen)
        .args(["--check", "--root"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success(), "--check after writing must pass");

    let edited = root.join("charts/paperbot/templates/crds/strategyconfigs.paperbot.io.yaml");
    fs::write(&edited, "# stale\n").unwrap();
    let out = Command::new(crdgen)
        .args(["--check", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: differs from the generated manifest",
            edited.display()
        )),
        "{stderr}"
    );
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn crdgen_stdout_is_a_stream_of_the_three_crds() {
    let out = Command::new(env!("CARGO_BIN_EXE_crdgen"))
        .arg("--stdout")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<String> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
                serde::Deserialize::deserialize(doc).unwrap();
            crd.metadata.name.unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            "paperaccounts.paperbot.io",
            "strategyconfigs.paperbot.io",
            "botsessions.paperbot.io"
        ]
    );
}

#[test]
fn names_short_names_and_categories() {
    // `sc` is shadowed by StorageClass in kubectl, hence `strat` as well.
    for ((kind, file), (plural, short)) in KINDS.into_iter().zip([
        ("paperaccounts", &["pa"][..]),
        ("strategyconfigs", &["sc", "strat"][..]),
        ("botsessions", &["bs"][..]),
    ]) {
        let crd = checked_in_crd(file);
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{plural}.paperbot.io").as_str())
        );
        assert_eq!(crd.spec.group, "paperbot.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        let names = &crd.spec.names;
        assert_eq!(names.kind, kind);
        assert_eq!(names.plural, plural);
        assert_eq!(
            names.singular.as_deref(),
            Some(kind.to_lowercase().as_str())
        );
        let expected: Vec<String> = short.iter().map(|s| s.to_string()).collect();
        assert_eq!(names.short_names.as_deref(), Some(&expected[..]));
        assert_eq!(
            names.categories.as_deref(),
            Some(&["paperbot".to_string()][..])
        );
        let [version] = &crd.spec.versions[..] else {
            panic!("{kind}: expected exactly one version");
        };
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
    }
}

#[test]
fn printer_columns() {
    let expected: [&[(&str, &str, &str)]; 3] = [
        &[
            ("Balance", "string", ".spec.initialBalance"),
            ("Equity", "string", ".status.equity"),
            ("Sessions", "integer", ".status.activeSessions"),
            ("ROI %", "string", ".status.roiPct"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ],
        &[
            ("Mode", "string", ".spec.mode"),
            ("Intel", "integer", ".spec.intelLevel"),
            ("Autopilot", "boolean", ".spec.autopilot.enabled"),
            ("Sessions", "integer", ".status.sessionCount"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ],
        &[
            ("Phase", "string", ".status.phase"),
            ("Account", "string", ".spec.accountRef.name"),
            ("Strategy", "string", ".spec.strategyRef.name"),
            ("Equity", "string", ".status.equity"),
            ("P&L %", "string", ".status.pnlPct"),
            ("Trades", "integer", ".status.trades"),
            ("Breaker", "string", ".status.breaker"),
            ("Source", "string", ".status.marketData.activeSource"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ],
    ];
    for ((kind, file), expected) in KINDS.into_iter().zip(expected) {
        let crd = checked_in_crd(file);
        let columns: Vec<(String, String, String)> = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.name, c.type_, c.json_path))
            .collect();
        let expected: Vec<(String, String, String)> = expected
            .iter()
            .map(|(n, t, p)| (n.to_string(), t.to_string(), p.to_string()))
            .collect();
        assert_eq!(columns, expected, "{kind} printer columns");

        // Every column points at a field the schema has.
        let schema = checked_in_json(file);
        let mut paths = Vec::new();
        walk(open_api_schema(&schema), "", &mut |p, _| {
            paths.push(p.to_string())
        });
        for (name, _, json_path) in &columns {
            let path = json_path.trim_start_matches('.');
            assert!(
                path.starts_with("metadata.") || paths.iter().any(|p| p == path),
                "{kind} column {name}: {json_path} is not in the schema"
            );
        }
    }
}

#[test]
fn status_subresource_on_all_three() {
    for (kind, file) in KINDS {
        let crd = checked_in_crd(file);
        let sub = crd.spec.versions[0]
            .subresources
            .as_ref()
            .unwrap_or_else(|| panic!("{kind}: no subresources"));
        assert!(sub.status.is_some(), "{kind}: no status subresource");
        assert!(sub.scale.is_none(), "{kind}: unexpected scale subresource");
    }
}

/// The schema node at a dotted path below `openAPIV3Schema`.
fn node<'a>(schema: &'a Value, path: &str) -> &'a Value {
    let mut node = schema;
    for part in path.split('.') {
        node = if part == "[]" {
            &node["items"]
        } else {
            &node["properties"][part]
        };
        assert!(!node.is_null(), "no schema node at {path}");
    }
    node
}

#[test]
fn openapi_bounds_and_enums_land_in_the_schema() {
    let sc = checked_in_json("strategyconfigs.paperbot.io.yaml");
    let sc = open_api_schema(&sc);
    let intel = node(sc, "spec.intelLevel");
    assert_eq!(
        (
            intel["type"].as_str(),
            intel["minimum"].as_f64(),
            intel["maximum"].as_f64()
        ),
        (Some("integer"), Some(1.0), Some(10.0))
    );
    assert_eq!(intel["default"], json!(5));
    assert_eq!(
        node(sc, "spec.mode")["enum"],
        json!(["Conservative", "Moderate", "Aggressive", "Custom"])
    );
    // Counts validate() requires to be >= 1.
    for path in [
        "spec.signals.smaCrossover.fastPeriod",
        "spec.signals.momentum.period",
        "spec.risk.maxConcurrentPositions",
        "spec.circuitBreakers.maxConsecutiveFailures",
        "spec.circuitBreakers.maxConsecutiveLosses",
        "spec.circuitBreakers.maxDailyTrades",
        "spec.circuitBreakers.maxInvalidTicks",
        "spec.autopilot.performanceWindow",
        "spec.autopilot.autoDisableAfter",
    ] {
        assert_eq!(node(sc, path)["minimum"].as_f64(), Some(1.0), "{path}");
    }
    for path in [
        "spec.signals.smaCrossover.slowPeriod",
        "spec.signals.rsi.period",
        "spec.signals.bollinger.period",
    ] {
        assert_eq!(node(sc, path)["minimum"].as_f64(), Some(2.0), "{path}");
    }
    // Counts where 0 is allowed still refuse negatives.
    for path in [
        "spec.risk.maxDailyTrades",
        "spec.autopilot.maxDailyAdjustments",
    ] {
        assert_eq!(node(sc, path)["minimum"].as_f64(), Some(0.0), "{path}");
    }
    let risk_pct = node(sc, "spec.risk.stopLossPct");
    assert_eq!(risk_pct["maxLength"], json!(40));
    assert_eq!(risk_pct["pattern"], json!(r"^-?[0-9]+(\.[0-9]+)?$"));

    let bs = checked_in_json("botsessions.paperbot.io.yaml");
    let bs = open_api_schema(&bs);
    assert_eq!(
        node(bs, "spec.desiredState")["enum"],
        json!(["Running", "Paused", "Stopped"])
    );
    assert_eq!(
        node(bs, "spec.marketData.source")["enum"],
        json!(["Replay", "Simulated", "Live"])
    );
    let live = "spec.marketData.live";
    let sources = node(bs, &format!("{live}.sources"));
    assert_eq!(sources["maxItems"], json!(5));
    let source = &sources["items"];
    assert_eq!(
        source["properties"]["kind"]["enum"],
        json!(["CoinGecko", "Binance"])
    );
    let budget = &source["properties"]["requestsPerMinute"];
    assert_eq!(budget["minimum"].as_f64(), Some(1.0));
    assert_eq!(budget["maximum"].as_f64(), Some(6000.0));
    assert_eq!(source["properties"]["symbols"]["maxProperties"], json!(50));
    assert_eq!(
        source["properties"]["apiKeySecretRef"]["required"],
        json!(["key", "name"])
    );
    assert_eq!(
        node(bs, &format!("{live}.warmUp"))["enum"],
        json!(["Klines", "Record"])
    );
    for (field, default) in [
        ("interval", "1m"),
        ("pollInterval", "10s"),
        ("maxAge", "1m"),
    ] {
        let n = node(bs, &format!("{live}.{field}"));
        assert_eq!(n["default"], json!(default), "{field}");
        // Go units only, so that CEL's duration() reads every accepted value.
        assert_eq!(
            n["pattern"],
            json!(r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"),
            "{field}"
        );
    }
    assert_eq!(
        node(bs, "spec.marketData.replay.files.[].volumeUnit")["enum"],
        json!(["Base", "Quote"])
    );
    let symbols = node(bs, "spec.symbols");
    assert_eq!(symbols["maxItems"], json!(50));
    assert_eq!(symbols["items"]["maxLength"], json!(64));
    assert_eq!(node(bs, "spec.accountRef.name")["maxLength"], json!(253));
    assert_eq!(node(bs, "spec.stopAfter")["maxLength"], json!(64));
}

#[test]
fn status_conditions_are_list_maps_keyed_by_type() {
    for (kind, file) in KINDS {
        let crd = checked_in_json(file);
        let conditions = node(open_api_schema(&crd), "status.conditions");
        assert_eq!(conditions["x-kubernetes-list-type"], json!("map"), "{kind}");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            json!(["type"]),
            "{kind}"
        );
        let required = conditions["items"]["required"].as_array().unwrap();
        assert!(
            required.contains(&json!("type")),
            "{kind}: a list-map key must be required"
        );
    }
}

/// Fields that hold unbounded strings or lists; no CEL rule reads them, so they
/// do not count towards the API server's rule cost estimate.
const UNBOUNDED_NOT_READ_BY_RULES: [&str; 3] = [
    "spec.runtime.image",
    "spec.runtime.resources",
    "spec.marketData.simulated.start",
];

#[test]
fn every_string_and_list_in_a_spec_is_bounded() {
    for (kind, file) in KINDS {
        let crd = checked_in_json(file);
        let spec = &open_api_schema(&crd)["properties"]["spec"];
        walk(spec, "spec", &mut |path, node| {
            if UNBOUNDED_NOT_READ_BY_RULES
                .iter()
                .any(|p| path == *p || path.starts_with(&format!("{p}.")))
            {
                return;
            }
            match node["type"].as_str() {
                Some("string") if node.get("enum").is_none() => assert!(
                    node.get("maxLength").is_some(),
                    "{kind} {path}: string without maxLength"
                ),
                Some("array") => assert!(
                    node.get("maxItems").is_some(),
                    "{kind} {path}: list without maxItems"
                ),
                Some("object") => assert!(
                    node.get("additionalProperties").is_none()
                        || node.get("maxProperties").is_some(),
                    "{kind} {path}: map without a bound"
                ),
                _ => {}
            }
        });
    }
}

#[test]
fn optional_fields_serialize_as_absent_not_null() {
    let account: PaperAccountSpec =
        serde_json::from_value(json!({"initialBalance": "1000"})).unwrap();
    let strategy: StrategyConfigSpec =
        serde_json::from_value(json!({"signals": {"rsi": {}}, "autopilot": {}})).unwrap();
    let session: BotSessionSpec = serde_json::from_value(json!({
        "accountRef": {"name": "a"},
        "strategyRef": {"name": "s"},
        "allocation": "10",
        "symbols": ["BTC-USD"],
        "marketData": {"source": "Simulated", "simulated": {"seed": 1}},
        "execution": {"slippage": {}},
    }))
    .unwrap();
    let mut status = paperbot_crds::BotSessionStatus {
        equity: Some(DecimalString(Decimal::ONE)),
        ..Default::default()
    };
    status.breakers.push(Default::default());
    let mut session_object = BotSession::new("s", session.clone());
    session_object.status = Some(status);

    for value in [
        serde_json::to_value(&account).unwrap(),
        serde_json::to_value(&strategy).unwrap(),
        serde_json::to_value(&session).unwrap(),
        serde_json::to_value(&session_object).unwrap(),
    ] {
        let mut nulls = Vec::new();
        find_nulls(&value, "", &mut nulls);
        assert!(nulls.is_empty(), "null values at {nulls:?} in {value}");
    }
    // Absent, not merely non-null: unset options leave no key behind.
    let strategy = serde_json::to_value(&strategy).unwrap();
    assert_eq!(strategy.get("tokens"), None);
    assert_eq!(strategy["autopilot"].get("learningRate"), None);
}

fn find_nulls(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Null => out.push(path.to_string()),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                find_nulls(v, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                find_nulls(v, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_spec_and_status_field_has_a_description() {
    for (kind, file) in KINDS {
        let crd = checked_in_json(file);
        let root = open_api_schema(&crd);
        assert!(root["description"].as_str().is_some_and(|d| !d.is_empty()));
        let mut undocumented = BTreeMap::new();
        for top in ["spec", "status"] {
            walk(&root["properties"][top], top, &mut |path, node| {
                let is_property = !path.ends_with("[]") && !path.ends_with("{}");
                if is_property && node["description"].as_str().is_none_or(str::is_empty) {
                    undocumented.insert(path.to_string(), ());
                }
            });
        }
        assert!(
            undocumented.is_empty(),
            "{kind}: fields without a description (kubectl explain shows nothing): {:?}",
            undocumented.keys()
        );
    }
}
