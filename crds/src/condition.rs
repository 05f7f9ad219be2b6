//! Status conditions in the `metav1.Condition` shape.
//!
//! The type is Kubernetes' own ([`k8s_openapi`]'s `Condition`), so `kubectl
//! wait --for=condition=Ready`, Argo CD and Flux read it as they read any
//! built-in resource's conditions.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
