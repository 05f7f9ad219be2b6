//! JSON bodies of the bot-runtime's HTTP API (`bot-runtime serve`) that the
//! operator reads and writes: the session's live status and the control
//! requests. Shared so that the two binaries cannot drift apart; the runtime
//! serves the full API (paged histories, the event stream) with types of its
//! own, documented in its generated OpenAPI document (`/openapi.json`).
//!
//! Money and prices are exact decimals serialised as JSON strings
//! (`rust_decimal`'s serde form), in the account's base currency (e.g. USD).
//! Percentages are percent (0–100, `5.5` = 5.5 %). Times are RFC 3339 UTC.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{AutopilotStatus, BreakerStatus, StrategyConfigSpec};

/// Path of the status endpoint.
pub const STATUS_PATH: &str = "/v1/status";
/// Path of the hot-reload endpoint.
pub const CONFIG_PATH: &str = "/v1/config";
/// Path of the pause endpoint.
pub const PAUSE_PATH: &str = "/v1/pause";
/// Path of the resume endpoint.
pub const RESUME_PATH: &str = "/v1/resume";
/// Path of the stop endpoint (ends the session for good: final report, phase `Stopped`).
pub const STOP_PATH: &str = "/v1/stop";

/// Path of a breaker's reset endpoint, e.g. `/v1/breakers/dailyLoss/reset`.
pub fn breaker_reset_path(name: &str) -> String {
    format!("/v1/breakers/{name}/reset")
}

/// Key of the API token in the session's Secret (and file name under the
/// mounted Secret directory).
pub const TOKEN_KEY: &str = "api-token";

/// Annotation on the StrategyConfig document of a rendered manifest (the
/// session's ConfigMap) giving the StrategyConfig's `metadata.generation`:
/// the runtime reports it as [`RuntimeStatus::strategy_revision`] until a
/// `POST /v1/config` brings another, so the operator knows which strategy
/// the runtime trades without asking it to reload.
pub const STRATEGY_REVISION_ANNOTATION: &str = "paperbot.io/strategy-revision";

/// Annotation on a BotSession naming the base URL of its runtime's API
/// (e.g. `http://127.0.0.1:18080`) instead of its Service. Honoured only by
/// an operator started with `--allow-runtime-endpoint-override`: it lets the
/// operator reach a runtime outside the cluster (tests, a runtime on a
/// developer machine).
pub const ENDPOINT_OVERRIDE_ANNOTATION: &str = "paperbot.io/runtime-endpoint";

/// Where a runtime's session stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RuntimePhase {
    /// Validating inputs, opening the ledger, resuming from the checkpoint.
    #[default]
    Starting,
    /// Trading.
    Running,
    /// Paused by `POST /v1/pause`: no new entries; open positions keep their
    /// exits (stop-loss, take-profit, trailing stop, max hold time).
    Paused,
    /// A halting breaker (kill switch) stopped the session.
    Halted,
    /// The data ended or `stopAfter` was reached; the API keeps serving.
    Completed,
    /// Ended for good by `POST /v1/stop`; the API keeps serving.
    Stopped,
    /// Could not run on (bad data, a value out of range, the ledger lost past
    /// its retry budget); `message` says why.
    Failed,
}

impl RuntimePhase {
    /// Whether the session has ended (nothing more will be traded).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Halted | Self::Completed | Self::Stopped | Self::Failed
        )
    }
}

/// One open position.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PositionStatus {
    /// Symbol, e.g. `BTC-USD`.
    pub symbol: String,
    /// Quantity held, base asset units.
    #[schemars(with = "String")]
    pub quantity: Decimal,
    /// Average entry price, base currency.
    #[schemars(with = "String")]
    pub entry_price: Decimal,
    /// Last close, base currency.
    #[schemars(with = "String")]
    pub mark_price: Decimal,
    /// Unrealized P&L at the mark, base currency.
    #[schemars(with = "String")]
    pub unrealized_pnl: Decimal,
    /// RFC 3339 market time the position was opened.
    pub opened_at: String,
}

/// Whether the ledger takes commits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerHealthStatus {
    /// False while commits fail (trading is paused until they succeed again).
    pub reachable: bool,
    /// The last error while unreachable (passwords redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// State of a live source's circuit breaker (its own, not the session's
/// `priceFeed` breaker).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SourceState {
    /// Requests flow.
    #[default]
    Closed,
    /// Skipped until its cool-down ends (failed polls in a row).
    Open,
    /// The cool-down ended: the next request is a trial.
    HalfOpen,
}

/// One source of a live session's fallback chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MarketDataSourceStatus {
    /// The source's name (`live.sources[].name`).
    pub name: String,
    /// Its circuit breaker.
    pub state: SourceState,
    /// HTTP requests sent to it by this process, retries included.
    pub requests: u64,
    /// Polls in which its request failed (timeouts, connection errors, 429,
    /// 5xx, refusals, malformed bodies).
    pub failures: u64,
    /// Prices it sent that were rejected (missing symbol, not a number,
    /// zero or negative, stale, a jump beyond the band).
    pub rejected: u64,
}

/// Where a live session's prices come from (absent for replay and
/// simulation).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MarketDataStatus {
    /// The source that served the last poll; absent before the first price
    /// and while no source answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_source: Option<String>,
    /// The first source of the chain (serves whenever it is healthy).
    pub preferred_source: String,
    /// Every source, in chain order.
    pub sources: Vec<MarketDataSourceStatus>,
    /// Symbols without an accepted price younger than `maxAge` (they hold
    /// the `priceFeed` breaker open).
    #[serde(default)]
    pub stale_symbols: Vec<String>,
    /// `maxAge`, seconds.
    pub max_age_seconds: f64,
}

impl MarketDataStatus {
    /// Whether the session trades on a fallback (the active source is not
    /// the preferred one) or has stale symbols.
    pub fn degraded(&self) -> bool {
        !self.stale_symbols.is_empty()
            || self
                .active_source
                .as_deref()
                .is_some_and(|a| a != self.preferred_source)
    }
}

/// `GET /v1/status`: the session's live figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStatus {
    /// BotSession name.
    pub session: String,
    /// Ledger session id (`<name>` or `<name>-N` for a re-run).
    pub session_id: String,
    /// Where the session stands.
    pub phase: RuntimePhase,
    /// Same as `GET /readyz` answering 200: the ledger is reachable and the
    /// market data is fresh (or the session has ended).
    pub ready: bool,
    /// Why the session halted or failed, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Starting cash (the allocation), base currency.
    #[schemars(with = "String")]
    pub initial_cash: Decimal,
    /// Cash, base currency.
    #[schemars(with = "String")]
    pub cash: Decimal,
    /// Cash plus positions at their marks, base currency.
    #[schemars(with = "String")]
    pub equity: Decimal,
    /// Realized P&L, base currency (fees and slippage included).
    #[schemars(with = "String")]
    pub realized_pnl: Decimal,
    /// Unrealized P&L at the marks, base currency.
    #[schemars(with = "String")]
    pub unrealized_pnl: Decimal,
    /// (equity − initial cash) / initial cash × 100, percent.
    #[schemars(with = "String")]
    pub roi_pct: Decimal,
    /// Fills.
    pub trades: u64,
    /// Closed round trips.
    pub round_trips: u64,
    /// Winning / closed round trips × 100, percent; absent before the first close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub win_rate_pct: Option<Decimal>,
    /// Current fall from the equity peak, percent.
    #[schemars(with = "String")]
    pub drawdown_pct: Decimal,
    /// Largest peak-to-trough fall so far, percent.
    #[schemars(with = "String")]
    pub max_drawdown_pct: Decimal,
    /// Annualised Sharpe ratio of the snapshot returns; absent until defined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub sharpe_ratio: Option<Decimal>,
    /// Open positions.
    #[serde(default)]
    pub positions: Vec<PositionStatus>,
    /// Every configured breaker.
    #[serde(default)]
    pub breakers: Vec<BreakerStatus>,
    /// Autopilot state, effective parameters and recent adjustments.
    #[serde(default)]
    pub autopilot: AutopilotStatus,
    /// Candles traded so far.
    pub candles: u64,
    /// RFC 3339 close time of the last candle traded (market time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_candle_time: Option<String>,
    /// Wall-clock seconds since the last candle arrived; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_age_seconds: Option<f64>,
    /// Whether the ledger takes commits.
    #[serde(default)]
    pub ledger: LedgerHealthStatus,
    /// Revision of the strategy in force: the `revision` of the last accepted
    /// `POST /v1/config`, absent while the session runs the strategy it
    /// started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy_revision: Option<String>,
    /// Live sessions: the fallback chain's sources and the stale symbols.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_data: Option<MarketDataStatus>,
}

/// `POST /v1/config`: replace the strategy's parameters without a restart.
/// Positions, cash, breakers and history are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigUpdate {
    /// The new StrategyConfig spec (validated like `kubectl apply` would).
    pub strategy: StrategyConfigSpec,
    /// Opaque revision echoed in [`RuntimeStatus::strategy_revision`] (the
    /// operator sends the StrategyConfig's `metadata.generation`), at most 63
    /// characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// Answer of every accepted `POST` (pause, resume, stop, reset, config).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlResponse {
    /// The phase after the request.
    pub phase: RuntimePhase,
    /// What was done, e.g. `breaker dailyLoss reset (was Open)`, or that
    /// nothing needed doing.
    pub message: String,
    /// For `/v1/config`: the parameters now in force.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, String>")]
    pub effective_parameters: BTreeMap<String, Decimal>,
}

/// Body of every 4xx and 5xx answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    /// Machine-readable code: `unauthorized` (401), `forbidden` (403),
    /// `bad_request` (400), `not_found` (404), `method_not_allowed` (405),
    /// `conflict` (409), `payload_too_large` (413), `unsupported_media_type`
    /// (415), `internal` (500), `unavailable` (503).
    pub error: String,
    /// What was wrong and what is expected.
    pub message: String,
    /// JSON path of the offending field, when one is to blame (e.g.
    /// `strategy.risk.stopLossPct`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_with_exact_decimals() {
        let s = RuntimeStatus {
            session: "a".into(),
            session_id: "a".into(),
            phase: RuntimePhase::Running,
            equity: Decimal::new(1_000_012_345, 6),
            ..Default::default()
        };
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""equity":"1000.012345""#), "{json}");
        let back: RuntimeStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn config_update_refuses_unknown_fields() {
        let err = serde_json::from_str::<ConfigUpdate>(
            r#"{"strategy":{"signals":{"rsi":{}}},"extra":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn final_phases() {
        assert!(RuntimePhase::Completed.is_final());
        assert!(!RuntimePhase::Paused.is_final());
    }
}
