//! API types of the `paperbot.io/v1alpha1` custom resources — `PaperAccount`,
//! `StrategyConfig` and `BotSession` — shared by the operator and the runtime.
//!
//! Money, prices, quantities and percentages are exact decimals written as
//! strings ([`DecimalString`]); durations are Kubernetes-style strings
//! ([`DurationString`]). Each spec has a `validate()` that mirrors the checks
//! the API server applies, so a local run refuses what `kubectl apply` would.
//!
//! The CRDs carry those checks as OpenAPI bounds and CEL rules
//! (`x-kubernetes-validations`, see [`schema`]). `cargo run -p paperbot-crds
//! --bin crdgen` writes them to `crds/manifests/` and, as templates, to the
//! Helm chart's `charts/paperbot/templates/crds/` ([`manifest`]); a test fails
//! when those copies are stale. `tests/cases/` holds valid and invalid manifests, each invalid one
//! annotated with the field and message the API server refuses it with.

#![warn(missing_docs)]
// kube's `#[kube(printcolumn(...))]` is repeated once per column by design.
#![allow(clippy::duplicated_attributes)]

pub mod account;
pub mod condition;
pub mod live;
pub mod manifest;
pub mod runtime_api;
pub mod schema;
pub mod session;
pub mod strategy;
pub mod validation;
pub mod values;

pub use account::{
    AccountLedger, AccountLimits, KillSwitchStatus, PaperAccount, PaperAccountSpec,
    PaperAccountStatus, SecretKeyRef,
};
pub use condition::Condition;
pub use live::*;
pub use session::*;
pub use strategy::*;
pub use validation::FieldError;
pub use values::{DecimalString, DurationString, GoDuration};

/// API group of all paperbot resources.
pub const GROUP: &str = "paperbot.io";
/// API version of all paperbot resources.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "paperbot.io/v1alpha1";
