//! Status conditions in the `metav1.Condition` shape.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A status condition (`metav1.Condition` shape): the list under
/// `status.conditions` is keyed by `type`, and `lastTransitionTime` changes only
/// when `status` changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`, `Progressing`, `Degraded`, `CircuitBreakerOpen`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// RFC 3339 time of the last change of `status`.
    pub last_transition_time: String,
    /// One-word CamelCase reason, e.g. `InsufficientFunds`.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
