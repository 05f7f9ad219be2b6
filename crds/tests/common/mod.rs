//! Helpers shared by the CRD tests: where the checked-in manifests are, and
//! loading them back.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// Kinds and the file names of their manifests.
pub const KINDS: [(&str, &str); 3] = [
    ("PaperAccount", "paperaccounts.paperbot.io.yaml"),
    ("StrategyConfig", "strategyconfigs.paperbot.io.yaml"),
    ("BotSession", "botsessions.paperbot.io.yaml"),
];

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in a workspace")
        .to_path_buf()
}

/// Text of a checked-in manifest under `crds/manifests/`.
pub fn checked_in_text(file: &str) -> String {
    let path = workspace_root().join("crds/manifests").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; generate it with `cargo run -p paperbot-crds --bin crdgen`",
            path.display()
        )
    })
}

/// A checked-in manifest parsed as a CustomResourceDefinition.
pub fn checked_in_crd(file: &str) -> CustomResourceDefinition {
    serde_yaml::from_str(&checked_in_text(file))
        .unwrap_or_else(|e| panic!("{file} is not a CustomResourceDefinition: {e}"))
}

/// A checked-in manifest as untyped JSON (keeps every key, even ones the
/// typed CRD would drop).
pub fn checked_in_json(file: &str) -> Value {
    serde_yaml::from_str(&checked_in_text(file))
        .unwrap_or_else(|e| panic!("{file} is not YAML: {e}"))
}

/// The `openAPIV3Schema` of the single version of a CRD given as JSON.
pub fn open_api_schema(crd: &Value) -> &Value {
    let versions = crd["spec"]["versions"].as_array().expect("spec.versions");
    assert_eq!(versions.len(), 1, "one served version");
    &versions[0]["schema"]["openAPIV3Schema"]
}

/// Visit every schema node below `schema` (itself included) with its path
/// (`spec.risk.stopLossPct`, `spec.symbols[]`, `status.effectiveParameters{}`).
pub fn walk<'a>(schema: &'a Value, path: &str, visit: &mut dyn FnMut(&str, &'a Value)) {
    visit(path, schema);
    let join = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(child, &join(name), visit);
        }
    }
    if let Some(items) = schema.get("items") {
        walk(items, &format!("{path}[]"), visit);
    }
    if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        walk(extra, &format!("{path}{{}}"), visit);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(branches) = schema.get(junctor).and_then(Value::as_array) {
            for (i, branch) in branches.iter().enumerate() {
                walk(branch, &format!("{path}<{junctor}{i}>"), visit);
            }
        }
    }
    if let Some(not) = schema.get("not") {
        walk(not, &format!("{path}<not>"), visit);
    }
}
