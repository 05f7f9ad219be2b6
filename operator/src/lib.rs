//! paperbot's Kubernetes operator: reconciles `PaperAccount`,
//! `StrategyConfig` and `BotSession` resources into one `bot-runtime`
//! StatefulSet per session, and reports what the bots do in `status`,
//! Events and Prometheus metrics.
#![warn(missing_docs)]

pub mod builders;
pub mod conditions;
pub mod config;
pub mod controllers;
pub mod drift;
pub mod error;
pub mod feed;
#[cfg(test)]
pub mod fixtures;
pub mod leader;
pub mod ledger;
pub mod metrics;
pub mod problem;
pub mod run;
pub mod server;
pub mod stores;
pub mod sync;
pub mod tls;
pub mod triggers;

pub use error::{Error, Result};
