//! The CRD schemas are structural, as `apiextensions.k8s.io/v1` requires:
//! the API server refuses a CRD that breaks these rules, and pruning,
//! defaulting and CEL all depend on them.
//! <https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema>

mod common;

use common::{KINDS, checked_in_crd, checked_in_json, open_api_schema, walk};
use serde_json::Value;

/// Keys that may only appear in the structural part of a schema, never inside
/// `allOf`/`anyOf`/`oneOf`/`not`.
const STRUCTURAL_ONLY: [&str; 9] = [
    "type",
    "properties",
    "items",
    "additionalProperties",
    "description",
    "default",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
];

/// Schema keys the API server accepts (JSONSchemaProps), so a typo or an
/// unsupported JSON-Schema keyword from schemars is caught here.
const KNOWN_KEYS: [&str; 29] = [
    "type",
    "format",
    "description",
    "default",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "maxProperties",
    "pattern",
    "nullable",
    "title",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "x-kubernetes-list-map-keys",
];

#[test]
fn every_crd_parses_back_into_a_custom_resource_definition() {
    for (kind, file) in KINDS {
        let crd = checked_in_crd(file);
        assert_eq!(crd.spec.names.kind, kind);
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap_or_else(|| panic!("{kind}: no openAPIV3Schema"));
        assert_eq!(schema.type_.as_deref(), Some("object"));
        let properties = schema.properties.as_ref().unwrap();
        assert!(properties.contains_key("spec") && properties.contains_key("status"));
        assert_eq!(schema.required.as_deref(), Some(&["spec".to_string()][..]));
    }
}

#[test]
fn every_node_is_structural() {
    for (kind, file) in KINDS {
        let crd = checked_in_json(file);
        let mut problems = Vec::new();
        walk(open_api_schema(&crd), "", &mut |path, node| {
            problems.extend(structural_problems(path, node).into_iter().map(|p| {
                format!(
                    "{kind} {}: {p}",
                    if path.is_empty() { "<root>" } else { path }
                )
            }));
        });
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

fn structural_problems(path: &str, node: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(obj) = node.as_object() else {
        return vec!["schema is not an object".into()];
    };
    for key in obj.keys() {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            problems.push(format!("unsupported keyword {key:?}"));
        }
    }
    let escapes_type = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let in_junctor = path.contains('<');
    match obj.get("type") {
        Some(Value::String(_)) => {}
        Some(other) => problems.push(format!("type must be one string, found {other}")),
        None if escapes_type || in_junctor => {}
        None => problems.push("no type".into()),
    }
    if in_junctor {
        for key in STRUCTURAL_ONLY {
            if obj.contains_key(key) {
                problems.push(format!("{key} inside a logical junctor"));
            }
        }
    }
    for junctor in ["allOf", "anyOf", "oneOf", "not"] {
        if obj.contains_key(junctor) && !escapes_type {
            problems.push(format!(
                "{junctor} outside x-kubernetes-int-or-string (keep schemas flat)"
            ));
        }
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        problems.push("additionalProperties alongside properties".into());
    }
    if let Some(extra) = obj.get("additionalProperties")
        && !extra.is_object()
    {
        problems.push(format!(
            "additionalProperties must be a schema, found {extra}"
        ));
    }
    for key in [
        "uniqueItems",
        "$ref",
        "$schema",
        "definitions",
        "$defs",
        "const",
    ] {
        if obj.contains_key(key) {
            problems.push(format!("{key} is not allowed"));
        }
    }
    // The derive makes the root's `status` optional; nothing else may accept
    // `null` (Options serialize as absent, and the API server prunes a `null`
    // a user writes instead of storing it).
    if obj.contains_key("nullable") && path != "status" {
        problems.push("nullable".into());
    }
    if obj.get("type") == Some(&Value::from("array")) && obj.get("items").is_none() {
        problems.push("array without items".into());
    }
    if let Some(Value::Array(required)) = obj.get("required") {
        let props = obj.get("properties").and_then(Value::as_object);
        for name in required {
            let name = name.as_str().unwrap_or_default();
            if props.is_none_or(|p| !p.contains_key(name)) {
                problems.push(format!("required {name:?} is not a property"));
            }
        }
    }
    if obj.get("x-kubernetes-list-type") == Some(&Value::from("map")) {
        let keys = obj["x-kubernetes-list-map-keys"].as_array();
        let item_required = obj["items"]["required"].as_array();
        match (keys, item_required) {
            (Some(keys), Some(required)) if keys.iter().all(|k| required.contains(k)) => {}
            _ => problems.push("list-map keys must be required properties of the items".into()),
        }
    }
    problems
}

#[test]
fn the_structural_check_catches_what_the_api_server_refuses() {
    let bad = [
        (r#"{"properties": {}}"#, "no type"),
        (r#"{"type": ["string", "null"]}"#, "type must be one string"),
        (
            r#"{"type": "object", "properties": {}, "additionalProperties": {"type": "string"}}"#,
            "additionalProperties alongside properties",
        ),
        (
            r#"{"type": "array", "items": {"type": "string"}, "uniqueItems": true}"#,
            "uniqueItems",
        ),
        (r##"{"$ref": "#/definitions/X"}"##, "$ref"),
        (
            r#"{"type": "string", "anyOf": [{"type": "string"}, {"type": "null"}]}"#,
            "anyOf outside",
        ),
        (r#"{"type": "string", "nullable": true}"#, "nullable"),
        (r#"{"type": "object", "required": ["a"]}"#, "required \"a\""),
    ];
    for (schema, problem) in bad {
        let schema: Value = serde_json::from_str(schema).unwrap();
        let problems = structural_problems("spec.x", &schema);
        assert!(
            problems.iter().any(|p| p.contains(problem)),
            "{schema}: expected {problem:?}, got {problems:?}"
        );
    }
    let good: Value =
        serde_json::from_str(r#"{"x-kubernetes-int-or-string": true, "description": "q"}"#)
            .unwrap();
    assert_eq!(structural_problems("spec.x", &good), Vec::<String>::new());
}
