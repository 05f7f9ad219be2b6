//! The CRDs' CEL rules (`x-kubernetes-validations`), evaluated client-side
//! with kube-cel (kube's `cel` feature, a dev-dependency only) against the
//! checked-in manifests' schemas, defaults applied first as the API server
//! does.
//!
//! The manifests under `tests/cases/` drive the tests: a document without
//! `paperbot.io/expect-*` annotations must pass every rule; an annotated one
//! must be refused with `paperbot.io/expect-message` at
//! `paperbot.io/expect-field`, and the spec's `validate()` must refuse it too.
//! A document with the kind and name of an earlier accepted one is an update
//! of it, so transition rules (`oldSelf`) see the earlier one. The same files
//! can be applied to a real API server.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    path::Path,
};

use common::{KINDS, checked_in_json, open_api_schema, walk, workspace_root};
use kube::core::cel::{
    ErrorKind, ScopeContext, ValidationError, Validator, WarningKind, analyze_rule, compile_schema,
};
use paperbot_crds::{
    BotSession, BotSessionSpec, FieldError, ObjectRef, PaperAccount, StrategyConfig,
};
use serde::Deserialize;
use serde_json::{Value, json};

const EXPECT_FIELD: &str = "paperbot.io/expect-field";
const EXPECT_MESSAGE: &str = "paperbot.io/expect-message";

/// One YAML document of a test or example file.
struct Doc {
    /// `file#index name`, for failure messages.
    label: String,
    kind: String,
    name: String,
    object: Value,
    /// `(field, message)` the API server must refuse it with.
    expect: Option<(String, String)>,
}

fn load_docs(path: &Path) -> Vec<Doc> {
    let text = fs::read_to_string(path).unwrap();
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    serde_yaml::Deserializer::from_str(&text)
        .enumerate()
        .filter_map(|(i, doc)| {
            let object = Value::deserialize(doc).unwrap();
            if object.is_null() {
                return None;
            }
            let kind = object["kind"].as_str().unwrap().to_string();
            let name = object["metadata"]["name"].as_str().unwrap().to_string();
            let annotations = &object["metadata"]["annotations"];
            let expect = match (
                annotations[EXPECT_FIELD].as_str(),
                annotations[EXPECT_MESSAGE].as_str(),
            ) {
                (Some(field), Some(message)) => Some((field.to_string(), message.to_string())),
                (None, None) => None,
                _ => panic!("{file}#{i}: set both {EXPECT_FIELD} and {EXPECT_MESSAGE}"),
            };
            Some(Doc {
                label: format!("{file}#{i} {kind}/{name}"),
                kind,
                name,
                object,
                expect,
            })
        })
        .collect()
}

fn yaml_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn case_files() -> Vec<std::path::PathBuf> {
    yaml_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases"))
}

/// `openAPIV3Schema` of every kind, from the checked-in manifests.
fn schemas() -> HashMap<String, Value> {
    KINDS
        .iter()
        .map(|(kind, file)| {
            (
                kind.to_string(),
                open_api_schema(&checked_in_json(file)).clone(),
            )
        })
        .collect()
}

/// One evaluated document: the CEL errors and whether it was an update.
struct Outcome<'a> {
    doc: &'a Doc,
    is_update: bool,
    errors: Vec<ValidationError>,
}

/// Evaluate the documents of one file in order, each update against the last
/// accepted version of the same object.
fn evaluate<'a>(docs: &'a [Doc], schemas: &HashMap<String, Value>) -> Vec<Outcome<'a>> {
    let validator = Validator::new();
    let mut stored: HashMap<(String, String), Value> = HashMap::new();
    docs.iter()
        .map(|doc| {
            let schema = schemas
                .get(&doc.kind)
                .unwrap_or_else(|| panic!("{}: unknown kind", doc.label));
            let key = (doc.kind.clone(), doc.name.clone());
            let old = stored.get(&key);
            let errors = validator
                .validate(schema, &doc.object, old)
                .err()
                .map(|e| e.into_vec())
                .unwrap_or_default();
            let is_update = old.is_some();
            if errors.is_empty() {
                stored.insert(key, doc.object.clone());
            }
            Outcome {
                doc,
                is_update,
                errors,
            }
        })
        .collect()
}

/// The spec's own `validate()`, on the typed object.
fn rust_validate(doc: &Doc) -> Result<(), Vec<FieldError>> {
    let object = doc.object.clone();
    let parsed = match doc.kind.as_str() {
        "PaperAccount" => serde_json::from_value::<PaperAccount>(object).map(|o| o.spec.validate()),
        "StrategyConfig" => {
            serde_json::from_value::<StrategyConfig>(object).map(|o| o.spec.validate())
        }
        // The whole object: its root rule checks metadata.name.
        "BotSession" => serde_json::from_value::<BotSession>(object).map(|o| o.validate()),
        other => panic!("{}: unknown kind {other}", doc.label),
    };
    parsed.unwrap_or_else(|e| panic!("{}: does not deserialize: {e}", doc.label))
}

fn describe(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(|e| format!("\n    {:?} at {}: {}", e.kind, e.field_path, e.message))
        .collect()
}

#[test]
fn examples_and_valid_cases_pass_every_rule_and_validate() {
    let schemas = schemas();
    let mut files = yaml_files(&workspace_root().join("examples"));
    files.extend(case_files());
    let mut accepted = 0;
    for file in files {
        let docs = load_docs(&file);
        for outcome in evaluate(&docs, &schemas) {
            if outcome.doc.expect.is_some() {
                continue;
            }
            assert!(
                outcome.errors.is_empty(),
                "{} must pass every rule:{}",
                outcome.doc.label,
                describe(&outcome.errors)
            );
            if let Err(e) = rust_validate(outcome.doc) {
                panic!("{}: validate() refuses it: {e:?}", outcome.doc.label);
            }
            accepted += 1;
        }
    }
    assert!(accepted >= 10, "only {accepted} valid documents checked");
}

#[test]
fn refused_cases_fail_with_the_expected_message_at_the_expected_field() {
    let schemas = schemas();
    let mut refused = 0;
    for file in case_files() {
        let docs = load_docs(&file);
        for outcome in evaluate(&docs, &schemas) {
            let Some((field, message)) = &outcome.doc.expect else {
                continue;
            };
            let label = &outcome.doc.label;
            assert!(
                outcome
                    .errors
                    .iter()
                    .any(|e| &e.field_path == field && &e.message == message),
                "{label}: expected {message:?} at {field}, got:{}",
                describe(&outcome.errors)
            );
            // Every failure is a rule saying no, never a rule that cannot run.
            assert!(
                outcome
                    .errors
                    .iter()
                    .all(|e| e.kind == ErrorKind::ValidationFailure),
                "{label}: a rule failed to evaluate:{}",
                describe(&outcome.errors)
            );
            refused += 1;
        }
    }
    assert!(refused >= 60, "only {refused} refused documents checked");
}

#[test]
fn validate_refuses_what_the_rules_refuse_at_the_same_field() {
    let schemas = schemas();
    for file in case_files() {
        let docs = load_docs(&file);
        for outcome in evaluate(&docs, &schemas) {
            let Some((field, _)) = &outcome.doc.expect else {
                continue;
            };
            let result = rust_validate(outcome.doc);
            if outcome.is_update {
                // Transition rules compare with the stored object, which
                // `validate()` never sees: the new spec alone is valid.
                assert_eq!(result, Ok(()), "{}", outcome.doc.label);
                continue;
            }
            let errors = result.expect_err(&format!(
                "{}: the API server refuses it but validate() accepts it",
                outcome.doc.label
            ));
            assert!(
                errors.iter().any(|e| e.path.starts_with(field.as_str())),
                "{}: validate() reports {errors:?}, none at {field}",
                outcome.doc.label
            );
        }
    }
}

/// Every rule in a CRD: `(kind, schema path, rule JSON)`.
fn all_rules() -> Vec<(String, String, Value)> {
    let mut rules = Vec::new();
    for (kind, file) in KINDS {
        let crd = checked_in_json(file);
        walk(open_api_schema(&crd), "", &mut |path, node| {
            for rule in node["x-kubernetes-validations"]
                .as_array()
                .into_iter()
                .flatten()
            {
                rules.push((kind.to_string(), path.to_string(), rule.clone()));
            }
        });
    }
    rules
}

#[test]
fn every_rule_is_exercised_by_a_refused_case_and_messages_are_unique() {
    let mut by_message: BTreeMap<(String, String), String> = BTreeMap::new();
    for (kind, path, rule) in all_rules() {
        let message = rule["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{kind} {path}: rule {rule} has no message"))
            .to_string();
        let previous = by_message.insert((kind.clone(), message.clone()), path.clone());
        assert!(
            previous.is_none(),
            "{kind}: message {message:?} used at {path} and {previous:?}"
        );
    }
    let exercised: BTreeSet<(String, String)> = case_files()
        .iter()
        .flat_map(|f| load_docs(f))
        .filter_map(|d| d.expect.map(|(_, message)| (d.kind, message)))
        .collect();
    let missing: Vec<_> = by_message
        .iter()
        .filter(|(key, _)| !exercised.contains(*key))
        .map(|((kind, message), path)| format!("{kind} {path}: {message}"))
        .collect();
    assert!(
        missing.is_empty(),
        "rules without a refused case in tests/cases:\n{}",
        missing.join("\n")
    );
    let unknown: Vec<_> = exercised
        .iter()
        .filter(|key| !by_message.contains_key(*key))
        .collect();
    assert!(
        unknown.is_empty(),
        "expected messages no rule produces: {unknown:?}"
    );
}

#[test]
fn every_rule_message_names_the_field_it_is_about() {
    for (kind, path, rule) in all_rules() {
        let field = match rule["fieldPath"].as_str() {
            Some(fp) => format!("{path}{fp}"),
            None => path.clone(),
        };
        let last = field
            .trim_end_matches("[]")
            .rsplit(['.', '['])
            .next()
            .unwrap()
            .trim_end_matches(']');
        let message = rule["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(last),
            "{kind} {field}: message {message:?} does not name {last:?}"
        );
        assert!(
            !message.contains('\n'),
            "{kind} {field}: multi-line message"
        );
    }
}

#[test]
fn rules_use_only_self_and_old_self_and_stay_within_the_cost_budget() {
    let mut checked = 0;
    for (kind, file) in KINDS {
        let crd = checked_in_json(file);
        walk(open_api_schema(&crd), "", &mut |path, node| {
            let Some(rules) = node["x-kubernetes-validations"].as_array() else {
                return;
            };
            let compiled = compile_schema(node);
            assert!(
                compiled.compilation_errors().is_empty(),
                "{kind} {path}: a rule does not compile"
            );
            for rule in rules {
                let text = rule["rule"].as_str().unwrap();
                let binders = macro_variables(text);
                let warnings: Vec<_> = analyze_rule(text, &compiled, ScopeContext::CrdValidation)
                    .into_iter()
                    // kube-cel's scope check also reports the variables that
                    // `all`/`exists`/... bind; those are in scope.
                    .filter(|w| {
                        w.kind != WarningKind::WrongScope
                            || !binders
                                .iter()
                                .any(|v| w.message.starts_with(&format!("variable '{v}' ")))
                    })
                    .collect();
                assert!(
                    warnings.is_empty(),
                    "{kind} {path}: {text}: {:?}",
                    warnings.iter().map(|w| &w.message).collect::<Vec<_>>()
                );
                checked += 1;
            }
        });
    }
    assert!(checked >= 60, "only {checked} rules analysed");
}

/// Variables bound by the comprehension macros of a rule: `x` in
/// `list.all(x, ...)`.
fn macro_variables(rule: &str) -> Vec<String> {
    ["all(", "exists(", "exists_one(", "map(", "filter("]
        .iter()
        .flat_map(|m| rule.match_indices(m).map(move |(i, _)| i + m.len()))
        .filter_map(|start| {
            let name = rule[start..].split(',').next()?.trim();
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                .then(|| name.to_string())
        })
        .collect()
}

#[test]
fn macro_variables_are_found() {
    assert_eq!(
        macro_variables("self.all(s, self.exists_one(t, t == s)) && size(self) > 0"),
        ["s", "t"]
    );
}

fn session(account: &str, strategy: &str, allocation: &str) -> BotSession {
    let spec: BotSessionSpec = serde_json::from_value(json!({
        "accountRef": {"name": account},
        "strategyRef": {"name": strategy},
        "allocation": allocation,
        "symbols": ["BTC-USD"],
        "marketData": {"source": "Simulated", "simulated": {"seed": 1, "candles": 10}},
    }))
    .unwrap();
    BotSession::new("s", spec)
}

#[test]
fn account_and_strategy_refs_are_immutable_other_fields_are_not() {
    let schema = &schemas()["BotSession"];
    let validator = Validator::new();
    let check = |new: &BotSession, old: &BotSession| {
        let new = serde_json::to_value(new).unwrap();
        let old = serde_json::to_value(old).unwrap();
        validator
            .validate(schema, &new, Some(&old))
            .err()
            .map(|e| e.into_vec())
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.field_path, e.message))
            .collect::<Vec<_>>()
    };
    let created = session("demo", "trend", "1000");
    assert_eq!(check(&session("demo", "trend", "2500"), &created), []);

    let mut moved = created.clone();
    moved.spec.account_ref = ObjectRef {
        name: "other".into(),
    };
    assert_eq!(
        check(&moved, &created),
        [(
            "spec.accountRef".to_string(),
            "accountRef is immutable: delete and recreate the BotSession to change it".to_string()
        )]
    );
    moved.spec.strategy_ref.name = "other".into();
    let errors = check(&moved, &created);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.contains(&(
        "spec.strategyRef".to_string(),
        "strategyRef is immutable: delete and recreate the BotSession to change it".to_string()
    )));

    // On creation there is no old object: transition rules do not run.
    let fresh = serde_json::to_value(&moved).unwrap();
    assert!(validator.validate(schema, &fresh, None).is_ok());
}

#[test]
fn decimal_rules_compare_values_not_text() {
    let schema = &schemas()["StrategyConfig"];
    let validator = Validator::new();
    let verdict = |stop_loss: &str| {
        let object = json!({
            "apiVersion": "paperbot.io/v1alpha1",
            "kind": "StrategyConfig",
            "metadata": {"name": "s"},
            "spec": {"signals": {"rsi": {}}, "risk": {"stopLossPct": stop_loss}},
        });
        validator.validate(schema, &object, None).is_ok()
    };
    for accepted in ["100", "100.000", "007.5", "0.000001", "99.999999"] {
        assert!(verdict(accepted), "{accepted} must be accepted");
    }
    for refused in ["0", "0.0", "-0.5", "100.01", "1000"] {
        assert!(!verdict(refused), "{refused} must be refused");
    }
}
