//! The children of a BotSession, built as pure values (no client): a
//! ConfigMap with the rendered runtime configuration, a Secret with the
//! session's API token, a Service, and a one-replica StatefulSet.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;

/// Operator-wide defaults for runtime pods (from flags and environment).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeSettings {
    /// Container image of the bot-runtime, e.g. `ghcr.io/paperbot/bot-runtime:0.1.0`.
    pub image: String,
    /// `IfNotPresent`, `Always` or `Never`; `None` lets Kubernetes decide.
    pub image_pull_policy: Option<String>,
    /// Requests and limits used when a session does not override them.
    pub default_resources: ResourceRequirements,
    /// Extra labels put on every child object.
    pub extra_labels: BTreeMap<String, String>,
}
