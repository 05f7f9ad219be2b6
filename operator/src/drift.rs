//! Whether a child must be (re-)applied: [`decide`] compares the child the
//! operator would apply with the live one, without writing.
//!
//! Three checks, cheapest first:
//!
//! 1. **Our own changes**: every child carries the hash of what the operator
//!    last applied ([`crate::controllers::APPLIED_HASH`]); a different
//!    desired hash means the operator wants something new.
//! 2. **Fields of ours changed by another manager**: when `kubectl scale`,
//!    `kubectl edit` or any other client changes a field the operator
//!    applied, the API server moves the field's ownership to that client's
//!    field manager (`metadata.managedFields`). A field of the desired object
//!    owned by another manager (not a `status` subresource writer) whose live
//!    value differs from the desired one is drift. Walking the managers'
//!    field sets (`fieldsV1`) against the desired object needs no schema:
//!    each key says how to descend (`f:` a field, `k:` a list element by its
//!    keys, `i:` an index, `v:` a set value).
//! 3. **Fields of ours removed**: a field removed by another client is owned
//!    by nobody, so every field of the desired object must still be present
//!    in the live one (presence only: the API server normalizes values, e.g.
//!    `0.5` CPU to `500m`).
//!
//! A child that passes all three is left alone: an unchanged fleet and a
//! restarted operator write nothing.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::Resource;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{config::quantity_value, controllers::APPLIED_HASH};

/// Why a child is applied, or that it is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyDecision {
    /// The live child is what the operator would apply.
    Unchanged,
    /// There is no live child.
    Create,
    /// The operator wants something else than it last applied.
    Changed,
    /// Another field manager changed a field the operator applies.
    Drift {
        /// Dotted path of the field, e.g. `spec.replicas`.
        field: String,
        /// The field manager that changed it, with its subresource, e.g.
        /// `kubectl (scale)`.
        manager: String,
    },
    /// A field the operator applies is gone from the live child.
    Removed {
        /// Dotted path of the field.
        field: String,
    },
}

impl ApplyDecision {
    /// Bounded label for metrics: `unchanged`, `create`, `changed`, `drift`, `removed`.
    pub fn label(&self) -> &'static str {
        match self {
            ApplyDecision::Unchanged => "unchanged",
            ApplyDecision::Create => "create",
            ApplyDecision::Changed => "changed",
            ApplyDecision::Drift { .. } => "drift",
            ApplyDecision::Removed { .. } => "removed",
        }
    }

    /// Whether the child is to be applied.
    pub fn applies(&self) -> bool {
        *self != ApplyDecision::Unchanged
    }

    /// Whether someone else changed the child (an Event says it was put back).
    pub fn is_drift(&self) -> bool {
        matches!(
            self,
            ApplyDecision::Drift { .. } | ApplyDecision::Removed { .. }
        )
    }
}

impl fmt::Display for ApplyDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyDecision::Unchanged => f.write_str("unchanged"),
            ApplyDecision::Create => f.write_str("absent"),
            ApplyDecision::Changed => f.write_str("out of date"),
            ApplyDecision::Drift { field, manager } => {
                write!(f, "{field} was changed by {manager}")
            }
            ApplyDecision::Removed { field } => write!(f, "{field} was removed"),
        }
    }
}

/// Decide whether `desired` (carrying its [`APPLIED_HASH`] annotation) must
/// be applied over `live` (see the module docs). `live` may have had the
/// operator's own and the `status` writers' managed-field entries dropped
/// ([`crate::stores::keep_foreign_fields`]); only the others are read.
pub fn decide<K: Resource + Serialize>(
    desired: &K,
    live: Option<&K>,
) -> Result<ApplyDecision, serde_json::Error> {
    let Some(live) = live else {
        return Ok(ApplyDecision::Create);
    };
    let wanted = desired
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(APPLIED_HASH));
    let have = live
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(APPLIED_HASH));
    if wanted != have {
        return Ok(ApplyDecision::Changed);
    }
    let d = serde_json::to_value(desired)?;
    let l = serde_json::to_value(live)?;
    for entry in foreign_entries(live.meta().managed_fields.as_deref()) {
        let Some(fields) = entry.fields_v1.as_ref().and_then(|f| f.0.as_object()) else {
            continue;
        };
        if let Some(field) = changed_field(fields, &d, &l, "") {
            let manager = match entry.subresource.as_deref() {
                Some(sub) if !sub.is_empty() => {
                    format!("{} ({sub})", entry.manager.as_deref().unwrap_or("unknown"))
                }
                _ => entry.manager.clone().unwrap_or_else(|| "unknown".into()),
            };
            return Ok(ApplyDecision::Drift { field, manager });
        }
    }
    if let Some(field) = missing_field(&d, &l, "") {
        return Ok(ApplyDecision::Removed { field });
    }
    Ok(ApplyDecision::Unchanged)
}

/// Managed-field entries of other managers than the operator, except the
/// writers of the `status` subresource.
pub fn foreign_entries(
    entries: Option<&[ManagedFieldsEntry]>,
) -> impl Iterator<Item = &ManagedFieldsEntry> {
    entries.unwrap_or_default().iter().filter(|e| is_foreign(e))
}

/// Whether a managed-field entry belongs to another manager than the
/// operator and is not a `status` subresource writer.
pub fn is_foreign(e: &ManagedFieldsEntry) -> bool {
    e.manager.as_deref() != Some(crate::controllers::FIELD_MANAGER)
        && e.subresource.as_deref() != Some("status")
}

fn join(path: &str, seg: &str) -> String {
    if path.is_empty() {
        seg.to_string()
    } else if seg.starts_with('[') {
        format!("{path}{seg}")
    } else {
        format!("{path}.{seg}")
    }
}

/// The element of the list `v` whose fields include every pair of `keys`.
fn element<'a>(v: &'a Value, keys: &Map<String, Value>) -> Option<&'a Value> {
    v.as_array()?
        .iter()
        .find(|e| keys.iter().all(|(k, kv)| e.get(k) == Some(kv)))
}

/// The first field of a manager's field set (`fields`) that the desired
/// object `d` sets to another value than the live object `l` has.
fn changed_field(fields: &Map<String, Value>, d: &Value, l: &Value, path: &str) -> Option<String> {
    for (key, sub) in fields {
        let (dv, lv, seg) = if let Some(name) = key.strip_prefix("f:") {
            let Some(dv) = d.get(name) else { continue };
            (dv, l.get(name).unwrap_or(&Value::Null), name.to_string())
        } else if let Some(k) = key.strip_prefix("k:") {
            let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(k) else {
                continue;
            };
            let Some(dv) = element(d, &keys) else {
                continue;
            };
            (
                dv,
                element(l, &keys).unwrap_or(&Value::Null),
                format!("[{k}]"),
            )
        } else if let Some(i) = key.strip_prefix("i:") {
            let Ok(i) = i.parse::<usize>() else { continue };
            let Some(dv) = d.get(i) else { continue };
            (dv, l.get(i).unwrap_or(&Value::Null), format!("[{i}]"))
        } else {
            // `.` (the node itself) and `v:` (a set value, equal by definition).
            continue;
        };
        let here = join(path, &seg);
        let children = sub
            .as_object()
            .map(|m| m.keys().any(|k| k != "."))
            .unwrap_or(false);
        if children {
            if let Some(found) = sub
                .as_object()
                .and_then(|m| changed_field(m, dv, lv, &here))
            {
                return Some(found);
            }
        } else if !subset(dv, lv) {
            return Some(here);
        }
    }
    None
}

/// Whether every field of `d` is in `l` with an equal value (quantities
/// compared by value, so `0.5` equals `500m`).
fn subset(d: &Value, l: &Value) -> bool {
    match (d, l) {
        (Value::Object(dm), Value::Object(lm)) => dm
            .iter()
            .all(|(k, v)| lm.get(k).is_some_and(|lv| subset(v, lv))),
        (Value::Array(da), Value::Array(la)) => {
            da.len() == la.len() && da.iter().zip(la).all(|(a, b)| subset(a, b))
        }
        (Value::String(a), Value::String(b)) => {
            a == b
                || matches!((quantity_value(a), quantity_value(b)), (Some(x), Some(y)) if (x - y).abs() <= f64::EPSILON * x.abs().max(1.0))
        }
        _ => d == l,
    }
}

/// The first field of `d` that `l` lacks (presence only).
fn missing_field(d: &Value, l: &Value, path: &str) -> Option<String> {
    match d {
        Value::Object(dm) => {
            let lm = l.as_object()?;
            for (k, v) in dm {
                let here = join(path, k);
                match lm.get(k) {
                    None => return Some(here),
                    Some(lv) => {
                        if let Some(found) = missing_field(v, lv, &here) {
                            return Some(found);
                        }
                    }
                }
            }
            None
        }
        Value::Array(da) => {
            let Some(la) = l.as_array() else {
                return Some(path.to_string());
            };
            for (i, v) in da.iter().enumerate() {
                let here = join(path, &format!("[{i}]"));
                match la.get(i) {
                    None => return Some(here),
                    Some(lv) => {
                        if let Some(found) = missing_field(v, lv, &here) {
                            return Some(found);
                        }
                    }
                }
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{api::apps::v1::StatefulSet, apimachinery::pkg::apis::meta::v1::FieldsV1};
    use serde_json::json;

    use super::*;

    fn sts(v: Value) -> StatefulSet {
        serde_json::from_value(v).unwrap()
    }

    fn desired() -> StatefulSet {
        sts(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "s", "namespace": "ns", "labels": {"a": "b"},
                         "annotations": {APPLIED_HASH: "h1"}},
            "spec": {"replicas": 1, "serviceName": "s",
                     "selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "x",
                                            "env": [{"name": "A", "value": "1"}],
                                            "resources": {"limits": {"cpu": "0.5"}}}]}}}
        }))
    }

    /// What the API server returns for `desired`: defaults added, the CPU
    /// normalized, and `extra` managed-field entries.
    fn live(edit: impl FnOnce(&mut Value), managers: Vec<ManagedFieldsEntry>) -> StatefulSet {
        let mut v = serde_json::to_value(desired()).unwrap();
        v["metadata"]["uid"] = json!("u1");
        v["spec"]["podManagementPolicy"] = json!("OrderedReady");
        v["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] =
            json!("500m");
        v["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
        v["status"] = json!({"replicas": 1});
        edit(&mut v);
        let mut s = sts(v);
        s.metadata.managed_fields = Some(managers);
        s
    }

    fn entry(manager: &str, subresource: Option<&str>, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            subresource: subresource.map(Into::into),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    #[test]
    fn absent_and_changed_hash() {
        assert_eq!(decide(&desired(), None).unwrap(), ApplyDecision::Create);
        let old = live(
            |v| v["metadata"]["annotations"][APPLIED_HASH] = json!("h0"),
            vec![],
        );
        assert_eq!(
            decide(&desired(), Some(&old)).unwrap(),
            ApplyDecision::Changed
        );
    }

    #[test]
    fn defaults_normalized_values_and_status_writers_are_not_drift() {
        let status = entry(
            "kube-controller-manager",
            Some("status"),
            json!({"f:status": {"f:replicas": {}}}),
        );
        let ours = ManagedFieldsEntry {
            manager: Some(crate::controllers::FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(json!({"f:spec": {"f:replicas": {}}}))),
            ..Default::default()
        };
        let l = live(|_| {}, vec![status, ours]);
        assert_eq!(
            decide(&desired(), Some(&l)).unwrap(),
            ApplyDecision::Unchanged
        );
    }

    #[test]
    fn kubectl_scale_is_drift() {
        let l = live(
            |v| v["spec"]["replicas"] = json!(3),
            vec![entry(
                "kubectl",
                Some("scale"),
                json!({"f:spec": {"f:replicas": {}}}),
            )],
        );
        assert_eq!(
            decide(&desired(), Some(&l)).unwrap(),
            ApplyDecision::Drift {
                field: "spec.replicas".into(),
                manager: "kubectl (scale)".into()
            }
        );
    }

    #[test]
    fn an_edited_list_element_is_drift_and_a_foreign_field_is_not() {
        let fields = json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"c\"}": {"f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:value": {}}},
                                   "f:resources": {"f:limits": {"f:cpu": {}}}}}}}}});
        let edited = live(
            |v| v["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = json!("2"),
            vec![entry("kubectl-edit", None, fields.clone())],
        );
        assert_eq!(
            decide(&desired(), Some(&edited)).unwrap(),
            ApplyDecision::Drift {
                field:
                    "spec.template.spec.containers[{\"name\":\"c\"}].env[{\"name\":\"A\"}].value"
                        .into(),
                manager: "kubectl-edit".into()
            }
        );
        // Shared ownership with equal values (the CPU as the API server
        // normalized it) is no drift.
        let shared = live(|_| {}, vec![entry("kubectl-edit", None, fields)]);
        assert_eq!(
            decide(&desired(), Some(&shared)).unwrap(),
            ApplyDecision::Unchanged
        );
        // A field the operator does not set (a restart annotation) is the other manager's.
        let restart = live(
            |v| {
                v["spec"]["template"]["metadata"]["annotations"] =
                    json!({"kubectl.kubernetes.io/restartedAt": "now"})
            },
            vec![entry(
                "kubectl-rollout",
                None,
                json!({"f:spec": {"f:template": {"f:metadata": {"f:annotations": {"f:kubectl.kubernetes.io/restartedAt": {}}}}}}),
            )],
        );
        assert_eq!(
            decide(&desired(), Some(&restart)).unwrap(),
            ApplyDecision::Unchanged
        );
    }

    #[test]
    fn a_removed_field_is_found_by_presence() {
        let l = live(
            |v| {
                v["spec"]["template"]["spec"]["containers"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("env");
            },
            vec![],
        );
        assert_eq!(
            decide(&desired(), Some(&l)).unwrap(),
            ApplyDecision::Removed {
                field: "spec.template.spec.containers[0].env".into()
            }
        );
        let l = live(
            |v| {
                v["metadata"]["labels"].as_object_mut().unwrap().remove("a");
            },
            vec![],
        );
        assert_eq!(
            decide(&desired(), Some(&l)).unwrap(),
            ApplyDecision::Removed {
                field: "metadata.labels.a".into()
            }
        );
    }

    #[test]
    fn labels_and_messages() {
        let d = ApplyDecision::Drift {
            field: "spec.replicas".into(),
            manager: "kubectl (scale)".into(),
        };
        assert_eq!(d.label(), "drift");
        assert!(d.applies() && d.is_drift());
        assert_eq!(
            d.to_string(),
            "spec.replicas was changed by kubectl (scale)"
        );
        assert!(!ApplyDecision::Unchanged.applies());
        assert!(!ApplyDecision::Changed.is_drift());
    }
}
