//! paperbot's Kubernetes operator: reconciles `PaperAccount`,
//! `StrategyConfig` and `BotSession` resources into one `bot-runtime`
//! StatefulSet per session, and reports what the bots do in `status`,
//! Events and Prometheus metrics.
#![warn(missing_docs)]

pub mod builders;
pub mod conditions;
pub mod config;
pub mod leader;
pub mod metrics;
pub mod server;
