//! `BotSession`: one running bot, trading one StrategyConfig with money
//! allocated from one PaperAccount.

use std::collections::{BTreeMap, BTreeSet};

use kube::{CustomResource, KubeSchema};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    condition::Condition,
    live::LiveSpec,
    schema::{
        self, MAX_NAME_LENGTH, MAX_PATH_LENGTH, MAX_REPLAY_FILES, MAX_SYMBOL_LENGTH, MAX_SYMBOLS,
    },
    validation::{Errors, FieldError, limits},
    values::{DecimalString, DurationString},
};

/// One paper-trading bot. The operator runs one `bot-runtime` pod per
/// session; `bot-runtime run -f` runs it locally.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "paperbot.io",
    version = "v1alpha1",
    kind = "BotSession",
    doc = "One paper-trading bot: trades a StrategyConfig on the symbols it lists, with \
           money allocated from a PaperAccount, on replayed, simulated or live market data.",
    namespaced,
    status = "BotSessionStatus",
    validation = schema::dns1123_label_name("BotSession"),
    shortname = "bs",
    category = "paperbot",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Account",
        type_ = "string",
        json_path = ".spec.accountRef.name"
    ),
    printcolumn(
        name = "Strategy",
        type_ = "string",
        json_path = ".spec.strategyRef.name"
    ),
    printcolumn(name = "Equity", type_ = "string", json_path = ".status.equity"),
    printcolumn(name = "P&L %", type_ = "string", json_path = ".status.pnlPct"),
    printcolumn(name = "Trades", type_ = "integer", json_path = ".status.trades"),
    printcolumn(name = "Breaker", type_ = "string", json_path = ".status.breaker"),
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".status.marketData.activeSource"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = schema::absent_not_null)]
#[x_kube(
    validation = Rule::new(
        "self.marketData.source != 'Replay' || !has(self.marketData.replay) \
         || self.marketData.replay.files.all(f, f.symbol in self.symbols)"
    )
    .message("marketData.replay.files[].symbol must be one of spec.symbols")
    .field_path(".marketData.replay.files"),
    validation = Rule::new(
        "self.marketData.source != 'Replay' || !has(self.marketData.replay) \
         || self.symbols.all(s, self.marketData.replay.files.exists(f, f.symbol == s))"
    )
    .message("marketData.replay.files must hold a candle file for every symbol in spec.symbols")
    .field_path(".marketData.replay.files")
    .reason(Reason::FieldValueRequired),
    validation = Rule::new(
        "self.marketData.source != 'Simulated' || !has(self.marketData.simulated) \
         || has(self.marketData.simulated.candles) || has(self.stopAfter)"
    )
    .message("a simulated source needs an end: set marketData.simulated.candles or stopAfter")
    .field_path(".marketData.simulated")
    .reason(Reason::FieldValueRequired),
    validation = Rule::new(
        "self.marketData.source != 'Live' || !has(self.marketData.live) \
         || self.marketData.live.sources.all(s, !has(s.symbols) \
            || s.symbols.all(k, k in self.symbols))"
    )
    .message(
        "marketData.live.sources[].symbols may only map symbols listed in spec.symbols"
    )
    .field_path(".marketData.live.sources")
)]
pub struct BotSessionSpec {
    /// The PaperAccount (same namespace) the allocation is drawn from.
    /// Immutable: delete and recreate the session to change it.
    #[x_kube(
        validation = schema::immutable("accountRef", "BotSession"),
        validation = Rule::new("self.name.trim() != ''")
            .message("accountRef.name must not be empty: expected the name of a PaperAccount")
    )]
    pub account_ref: ObjectRef,
    /// The StrategyConfig (same namespace) this bot trades.
    /// Immutable: delete and recreate the session to change it.
    #[x_kube(
        validation = schema::immutable("strategyRef", "BotSession"),
        validation = Rule::new("self.name.trim() != ''")
            .message("strategyRef.name must not be empty: expected the name of a StrategyConfig")
    )]
    pub strategy_ref: ObjectRef,
    /// Money drawn from the account for this session, base currency; > 0
    /// and at most 1e15, with at most 8 decimal places.
    #[x_kube(
        validation = schema::positive("allocation"),
        validation = schema::money("allocation")
    )]
    pub allocation: DecimalString,
    /// Symbols to trade, e.g. `["BTC-USD"]`; non-empty, unique, at most 50.
    #[schemars(length(max = MAX_SYMBOLS), inner(length(max = MAX_SYMBOL_LENGTH)))]
    #[x_kube(
        validation = schema::not_empty_list("symbols", "expected at least one symbol such as \"BTC-USD\""),
        validation = Rule::new("self.all(s, s.trim() != '')")
            .message("symbols must not contain an empty symbol"),
        validation = Rule::new("self.all(s, self.exists_one(t, t == s))")
            .message("symbols must be unique: a symbol is listed more than once")
    )]
    pub symbols: Vec<String>,
    /// Where prices come from.
    pub market_data: MarketDataSpec,
    /// Simulated execution realism (fees, slippage, latency, failures).
    #[serde(default)]
    pub execution: ExecutionSpec,
    /// `Running` (default), `Paused` (no trading, state kept) or `Stopped`.
    #[serde(default)]
    pub desired_state: DesiredState,
    /// End the session after this much market time, e.g. `"24h"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_after: Option<DurationString>,
    /// Record Hold decisions in the ledger too (they are always counted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record_holds: bool,
    /// Overrides of the operator's defaults for this session's runtime pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeOverrides>,
    /// Declarative breaker reset: set or change this value (any token of at
    /// most 63 characters, e.g. the current time) to close the session's open
    /// circuit breakers once. The operator forwards it to the runtime and
    /// acknowledges it in `status.observedResetRequest`; the same value is
    /// never forwarded twice, so GitOps re-applies are harmless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_RESET_REQUEST_LENGTH))]
    pub reset_request: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Longest `resetRequest` token (BotSession and PaperAccount).
pub const MAX_RESET_REQUEST_LENGTH: usize = 63;

/// Per-session overrides of the runtime pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeOverrides {
    /// Container image of the bot-runtime (default: the operator's `--runtime-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory requests and limits (default: the operator's defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
}

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectRef {
    /// `metadata.name` of the referenced object.
    #[schemars(length(max = MAX_NAME_LENGTH))]
    pub name: String,
}

/// The state the user wants the session in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DesiredState {
    /// Trade.
    #[default]
    Running,
    /// Keep state, make no decisions.
    Paused,
    /// Stop the bot.
    Stopped,
}

/// Market data source. `source` selects which of the other fields is used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = Rule::new("self.source != 'Replay' || has(self.replay)")
        .message("marketData.source is Replay but marketData.replay is not set: expected replay.files")
        .field_path(".replay")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.source != 'Simulated' || has(self.simulated)")
        .message("marketData.source is Simulated but marketData.simulated is not set: expected simulated.seed")
        .field_path(".simulated")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.source != 'Live' || has(self.live)")
        .message("marketData.source is Live but marketData.live is not set: expected live.sources")
        .field_path(".live")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.source != 'Live' || !has(self.speed)")
        .message("marketData.speed must not be set when marketData.source is Live: live prices arrive in real time")
        .field_path(".speed")
)]
pub struct MarketDataSpec {
    /// `Replay` (recorded candle files), `Simulated` (seeded geometric
    /// Brownian motion) or `Live` (prices polled from exchanges and
    /// aggregators).
    pub source: MarketDataSource,
    /// Recorded candles, used when `source: Replay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplaySpec>,
    /// Synthetic prices, used when `source: Simulated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated: Option<SimulatedSpec>,
    /// Live prices from an ordered fallback chain of sources, used when
    /// `source: Live`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveSpec>,
    /// Pace of the market data under `bot-runtime serve`: `"max"` (as fast
    /// as the CPU allows) or a multiple of real time from `"0.001"` to
    /// `"1000000"` (`"1"` = real time: one candle per interval; `"60"` = one
    /// minute of market time per second). Default: `"1"` for `Simulated`,
    /// `"max"` for `Replay`. `bot-runtime run` and `backtest` ignore it
    /// (they run as fast as possible unless given `--speed`). Changing it
    /// changes no record: a resumed session may run at another speed.
    /// Must not be set for `Live` (live prices arrive in real time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::speed("marketData.speed"))]
    pub speed: Option<Speed>,
}

/// Pace of market data relative to the wall clock (`spec.marketData.speed`):
/// `"max"` or an exact decimal multiple of real time, written as a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Speed {
    /// As fast as the CPU allows.
    Max,
    /// This many seconds of market time per second of wall time (`1` = real
    /// time); [`limits::MIN_SPEED`] to [`limits::MAX_SPEED`] once validated.
    Factor(Decimal),
}

impl Speed {
    /// The multiple of real time as `f64` (pacing arithmetic), `None` for [`Speed::Max`].
    pub fn factor(self) -> Option<f64> {
        match self {
            Speed::Max => None,
            Speed::Factor(d) => Some(rust_decimal::prelude::ToPrimitive::to_f64(&d).unwrap_or(1.0)),
        }
    }
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Factor(d) => d.normalize().fmt(f),
        }
    }
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "max" {
            return Ok(Speed::Max);
        }
        s.parse::<DecimalString>()
            .map(|d| Speed::Factor(d.get()))
            .map_err(|_| {
                format!(
                    "invalid speed {s:?}: expected \"max\" or a multiple of real time such as \"1\" or \"60\""
                )
            })
    }
}

impl Serialize for Speed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Speed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Speed;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"max\" or a decimal string such as \"60\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Speed, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Speed, E> {
                Err(E::custom(format!(
                    "expected \"max\" or a decimal string, found the number {v}: quote it (\"{v}\")"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Speed, E> {
                Err(E::custom(format!(
                    "expected \"max\" or a decimal string, found the number {v}: quote it (\"{v}\")"
                )))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Speed, E> {
                Err(E::custom(format!(
                    "expected \"max\" or a decimal string, found the number {v}: quote it (\"{v}\")"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Speed {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Speed".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": SPEED_PATTERN,
            "maxLength": crate::values::DECIMAL_MAX_LENGTH,
        })
    }
}

/// Regular expression a speed must match (also the OpenAPI `pattern`):
/// `max` or a plain non-negative decimal.
pub const SPEED_PATTERN: &str = r"^(max|[0-9]+(\.[0-9]+)?)$";

/// Kind of market data source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum MarketDataSource {
    /// Replay recorded candle CSV files.
    Replay,
    /// Geometric Brownian motion from a seed.
    Simulated,
    /// Prices polled from exchanges and aggregators (`marketData.live`).
    Live,
}

/// An RFC 3339 UTC time (`Z` or a zero offset), as a CEL/RE2 pattern.
const RFC3339_UTC_PATTERN: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-]00:00)$";

/// Longest `replay.from` / `replay.to` string.
const MAX_TIME_LENGTH: u32 = 40;

/// Recorded candles to replay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = Rule::new("!has(self.from) || !has(self.to) || timestamp(self.from) < timestamp(self.to)")
        .message("marketData.replay.from must be before marketData.replay.to: expected from < to (from is inclusive, to exclusive)")
        .field_path(".from")
)]
pub struct ReplaySpec {
    /// One candle file per symbol (format: `timestamp,open,high,low,close,volume`
    /// with RFC 3339 UTC open times). Several files are merged by timestamp.
    /// Non-empty, at most 50.
    #[schemars(length(max = MAX_REPLAY_FILES))]
    #[x_kube(validation = schema::not_empty_list(
        "marketData.replay.files",
        "expected at least one candle file"
    ))]
    pub files: Vec<ReplayFile>,
    /// First candle open time to replay, inclusive: RFC 3339 UTC, e.g.
    /// `2024-01-01T00:00:00Z`. Unset: from the start of every file. Applies
    /// to every file (candle and trade files alike); the files are still
    /// validated in full. `bot-runtime run --from` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_TIME_LENGTH))]
    #[x_kube(validation = Rule::new(format!("self.matches('{RFC3339_UTC_PATTERN}')"))
        .message("marketData.replay.from must be an RFC 3339 UTC time, e.g. 2024-01-01T00:00:00Z"))]
    pub from: Option<String>,
    /// End of the replayed range, exclusive (candles opening at or after
    /// it are not replayed): RFC 3339 UTC. Unset: to the end of every file.
    /// Must be after `from`. `bot-runtime run --to` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_TIME_LENGTH))]
    #[x_kube(validation = Rule::new(format!("self.matches('{RFC3339_UTC_PATTERN}')"))
        .message("marketData.replay.to must be an RFC 3339 UTC time, e.g. 2024-02-01T00:00:00Z"))]
    pub to: Option<String>,
}

/// Parse a `replay.from` / `replay.to` value: RFC 3339 with a UTC offset
/// (`Z` or `+00:00`), as milliseconds since the Unix epoch.
///
/// # Errors
/// A message naming `field`, the value and the expected form.
pub fn parse_utc_time(field: &str, value: &str) -> Result<i64, String> {
    let t = chrono::DateTime::parse_from_rfc3339(value.trim()).map_err(|e| {
        format!(
            "{field}: {value:?} is not an RFC 3339 time ({e}; expected e.g. 2024-01-01T00:00:00Z)"
        )
    })?;
    if t.offset().local_minus_utc() != 0 {
        return Err(format!(
            "{field}: {value:?} is not in UTC (expected a Z or +00:00 offset, e.g. 2024-01-01T00:00:00Z)"
        ));
    }
    Ok(t.timestamp_millis())
}

impl ReplaySpec {
    /// The selected range as `(from, to)` milliseconds since the Unix epoch
    /// (`from` inclusive, `to` exclusive on candle open times; `None`
    /// unbounded).
    ///
    /// # Errors
    /// A message when a bound is not RFC 3339 UTC, or `from` is not before `to`.
    pub fn range_ms(&self) -> Result<(Option<i64>, Option<i64>), String> {
        let from = self
            .from
            .as_deref()
            .map(|v| parse_utc_time("marketData.replay.from", v))
            .transpose()?;
        let to = self
            .to
            .as_deref()
            .map(|v| parse_utc_time("marketData.replay.to", v))
            .transpose()?;
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            return Err(format!(
                "marketData.replay.from {:?} must be before marketData.replay.to {:?} (from is \
                 inclusive, to exclusive)",
                self.from.as_deref().unwrap_or_default(),
                self.to.as_deref().unwrap_or_default()
            ));
        }
        Ok((from, to))
    }
}

/// One market data file of a symbol: candles, or trades aggregated into
/// candles of `interval`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = Rule::new("!has(self.format) || self.format != 'Trades' || has(self.interval)")
        .message("marketData.replay.files[].interval is required when format is Trades: expected the candle length to aggregate the trades into, e.g. 1m")
        .field_path(".interval")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.format) || self.format != 'Trades' || !has(self.volumeUnit) || self.volumeUnit == 'Base'")
        .message("marketData.replay.files[].volumeUnit must be Base when format is Trades: trade quantities are base-currency units")
        .field_path(".volumeUnit")
)]
pub struct ReplayFile {
    /// Symbol the file holds; must be one of `spec.symbols`.
    #[schemars(length(max = MAX_SYMBOL_LENGTH))]
    pub symbol: String,
    /// Path of the CSV; relative paths are resolved against the manifest's directory.
    #[schemars(length(max = MAX_PATH_LENGTH))]
    #[x_kube(validation = schema::not_blank(
        "marketData.replay.files[].path",
        "expected the path of a candle CSV file"
    ))]
    pub path: String,
    /// Candle length, e.g. `"1m"`. For `format: Candles` it is inferred
    /// from the first rows when unset; for `format: Trades` it is required:
    /// the trades are aggregated into candles of this length on the UTC
    /// grid (1m candles open at whole minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::nonzero_duration("marketData.replay.files[].interval", "1m"))]
    pub interval: Option<DurationString>,
    /// Unit of the `volume` column: `Base` (default, base-currency units) or
    /// `Quote` (quote-currency notional). Must be `Base` for trade files.
    #[serde(default)]
    pub volume_unit: VolumeUnit,
    /// What the file holds: `Candles` (default,
    /// `timestamp,open,high,low,close,volume`) or `Trades`
    /// (`timestamp,price,quantity,side`, aggregated into OHLCV candles of
    /// `interval`; an interval without trades is a gap, never a candle).
    #[serde(default, skip_serializing_if = "ReplayFormat::is_candles")]
    pub format: ReplayFormat,
}

/// What a replay file holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ReplayFormat {
    /// Candles: `timestamp,open,high,low,close,volume`.
    #[default]
    Candles,
    /// Trades (ticks): `timestamp,price,quantity,side`, aggregated into
    /// candles of the file's `interval`.
    Trades,
}

impl ReplayFormat {
    /// Whether this is the default, `Candles` (not serialized, so manifests
    /// and rendered configurations without trade files stay as they were).
    pub fn is_candles(&self) -> bool {
        *self == Self::Candles
    }
}

/// Unit of a candle file's volume column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum VolumeUnit {
    /// Base-currency units (e.g. BTC).
    #[default]
    Base,
    /// Quote-currency notional (e.g. USD).
    Quote,
}

/// Seeded geometric Brownian motion, one independent path per symbol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulatedSpec {
    /// RNG seed; the same seed gives the same prices. At most
    /// 9007199254740991 (2^53 − 1, the largest integer JSON keeps exactly).
    #[schemars(range(max = limits::MAX_SEED))]
    pub seed: u64,
    /// Starting price of every symbol, quote currency (default `"100"`),
    /// from 0.00000001 to 1e12.
    #[serde(default = "default_initial_price")]
    #[x_kube(
        validation = schema::positive("marketData.simulated.initialPrice"),
        validation = schema::between(
            "marketData.simulated.initialPrice",
            limits::MIN_SIMULATED_PRICE,
            limits::MAX_SIMULATED_PRICE
        )
    )]
    pub initial_price: DecimalString,
    /// Annualised drift μ as a fraction (e.g. `"0.05"` = 5 % a year, default
    /// `"0"`), from -10 to 10.
    #[serde(default)]
    #[x_kube(validation = schema::between(
        "marketData.simulated.annualDrift",
        -limits::MAX_ANNUAL_DRIFT,
        limits::MAX_ANNUAL_DRIFT
    ))]
    pub annual_drift: DecimalString,
    /// Annualised volatility σ as a fraction (e.g. `"0.6"`, default `"0.5"`),
    /// from 0 to 10.
    #[serde(default = "default_volatility")]
    #[x_kube(
        validation = schema::non_negative("marketData.simulated.annualVolatility"),
        validation = schema::at_most(
            "marketData.simulated.annualVolatility",
            limits::MAX_ANNUAL_VOLATILITY
        )
    )]
    pub annual_volatility: DecimalString,
    /// Candle length (default `"1m"`).
    #[serde(default = "default_interval")]
    #[x_kube(validation = schema::nonzero_duration("marketData.simulated.interval", "1m"))]
    pub interval: DurationString,
    /// Number of candles per symbol, at most 1,000,000,000; unset means
    /// unbounded (use `stopAfter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = limits::MAX_SIMULATED_CANDLES))]
    pub candles: Option<u64>,
    /// RFC 3339 open time of the first candle (default `2024-01-01T00:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
}

fn default_initial_price() -> DecimalString {
    DecimalString(rust_decimal::Decimal::ONE_HUNDRED)
}
fn default_volatility() -> DecimalString {
    DecimalString(rust_decimal::Decimal::new(5, 1))
}
fn default_interval() -> DurationString {
    DurationString(std::time::Duration::from_secs(60))
}

/// Execution realism. All randomness comes from `seed`, so the same inputs
/// and seed give the same fills.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecutionSpec {
    /// Fee, percent (0-100) of each fill's notional (default `"0"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::percent("execution.feeRatePct"))]
    pub fee_rate_pct: Option<DecimalString>,
    /// Slippage model (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slippage: Option<SlippageSpec>,
    /// Fixed cost per fill, quote currency (e.g. gas on a DEX; default `"0"`),
    /// at most 1e15 with at most 8 decimal places.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = schema::non_negative("execution.gasCost"),
        validation = schema::money("execution.gasCost")
    )]
    pub gas_cost: Option<DecimalString>,
    /// Delay from decision to fill, e.g. `"250ms"` (default `"0s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<DurationString>,
    /// Extra random delay, uniform in `[0, latencyJitter]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_jitter: Option<DurationString>,
    /// Probability, percent (0-100), that an order fails and is not filled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::percent("execution.failureRatePct"))]
    pub failure_rate_pct: Option<DecimalString>,
    /// Seed of the execution RNG (failures, latency jitter); default 0, at
    /// most 9007199254740991.
    #[serde(default)]
    #[schemars(range(max = limits::MAX_SEED))]
    pub seed: u64,
}

/// Slippage: `baseBps / 10000 + impactPct / 100 × min(1, order notional / candle notional)`,
/// applied against the order (buys fill higher, sells lower).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlippageSpec {
    /// Fixed part, basis points (1 bp = 0.01 %), from 0 to 1,000,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = schema::non_negative("execution.slippage.baseBps"),
        validation = schema::at_most("execution.slippage.baseBps", limits::MAX_PCT)
    )]
    pub base_bps: Option<DecimalString>,
    /// Market-impact part, percent of price when the order's notional equals the
    /// fill candle's whole traded notional; scales linearly below that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::percent("execution.slippage.impactPct"))]
    pub impact_pct: Option<DecimalString>,
}

/// Lifecycle phase of a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SessionPhase {
    /// Accepted, children not yet created.
    #[default]
    Pending,
    /// Pod starting.
    Starting,
    /// Trading.
    Running,
    /// Desired state Paused.
    Paused,
    /// Halted by the account kill switch.
    Halted,
    /// Desired state Stopped.
    Stopped,
    /// Replay or `stopAfter` reached its end.
    Completed,
    /// Could not run (bad data, crash loop, ...).
    Failed,
}

/// State of one circuit breaker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BreakerState {
    /// Normal: entries allowed.
    #[default]
    Closed,
    /// Tripped: new entries blocked, exits still run.
    Open,
    /// Cooldown over, on probation: entries allowed, the next bad outcome reopens it.
    HalfOpen,
}

/// One circuit breaker as shown in status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakerStatus {
    /// Breaker name, e.g. `dailyLoss`, `maxDrawdown`, `priceFeed`.
    pub name: String,
    /// Closed, Open or HalfOpen.
    pub state: BreakerState,
    /// Times it tripped in this session.
    #[serde(default)]
    pub trips: u32,
    /// Why it last changed state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339 time of the last state change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// One autopilot adjustment as shown in status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustmentStatus {
    /// RFC 3339 market time of the adjustment.
    pub time: String,
    /// Parameter name, e.g. `stopLossPct`.
    pub parameter: String,
    /// Value before.
    pub old_value: DecimalString,
    /// Value after.
    pub new_value: DecimalString,
    /// Why.
    pub reason: String,
    /// `Positive`, `Neutral`, `Negative`, or absent while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// Autopilot state as shown in status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutopilotStatus {
    /// False once the autopilot disabled itself (or was never enabled).
    pub enabled: bool,
    /// Current values of the tunable parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub effective_parameters: BTreeMap<String, DecimalString>,
    /// Parameter changes made so far.
    #[serde(default)]
    pub adjustment_count: u32,
    /// The most recent adjustments, newest last (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_adjustments: Vec<AdjustmentStatus>,
}

/// What the operator observes about a session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::absent_not_null)]
pub struct BotSessionStatus {
    /// Lifecycle phase.
    #[serde(default)]
    pub phase: SessionPhase,
    /// Name of the runtime pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// RFC 3339 time of the runtime's last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<String>,
    /// Cash plus marked positions, base currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equity: Option<DecimalString>,
    /// Realized P&L, base currency (fees and slippage included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realized_pnl: Option<DecimalString>,
    /// Unrealized P&L, base currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrealized_pnl: Option<DecimalString>,
    /// Total P&L as a percent of the allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pnl_pct: Option<DecimalString>,
    /// Fills.
    #[serde(default)]
    pub trades: u64,
    /// Winning / closed round trips, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub win_rate_pct: Option<DecimalString>,
    /// Largest peak-to-trough equity fall, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_drawdown_pct: Option<DecimalString>,
    /// Annualised Sharpe ratio (see the runtime's analytics docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharpe_ratio: Option<DecimalString>,
    /// Positions open now.
    #[serde(default)]
    pub open_positions: u32,
    /// Summary of breakers for the printer column: `None`, or the open ones' names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
    /// Every configured breaker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breakers: Vec<BreakerStatus>,
    /// Autopilot state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autopilot: Option<AutopilotStatus>,
    /// Cash not held in positions, base currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cash: Option<DecimalString>,
    /// Closed round trips (the denominator of `winRatePct`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub round_trips: u64,
    /// The `spec.resetRequest` last forwarded to the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_reset_request: Option<String>,
    /// `metadata.generation` of the StrategyConfig the runtime trades (after
    /// a hot reload through the runtime's `/v1/config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_strategy_generation: Option<i64>,
    /// `metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Live sessions: where the prices come from (absent for replay and
    /// simulation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_data: Option<SessionMarketDataStatus>,
    /// Ready, Progressing, Degraded, CircuitBreakerOpen, MarketDataDegraded
    /// (live sessions) (`metav1.Condition` shape), one per `type`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A live session's market data as the runtime last reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionMarketDataStatus {
    /// The source of the fallback chain that served the last poll; absent
    /// while none answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_source: Option<String>,
    /// The first source of the chain (`spec.marketData.live.sources[0]`),
    /// which serves whenever it is healthy.
    pub preferred_source: String,
    /// Symbols without an accepted price younger than `maxAge` (they hold
    /// the `priceFeed` breaker open).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale_symbols: Vec<String>,
}

impl BotSession {
    /// Check the rules the API server also enforces on the whole object:
    /// `metadata.name` is a DNS-1123 label
    /// ([`check_dns1123_label`](crate::validation::check_dns1123_label)),
    /// then [`BotSessionSpec::validate`]. Paths start at the object root.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = self.metadata.name.as_deref().unwrap_or_default();
        if let Err(message) = crate::validation::check_dns1123_label(name) {
            errors.push(FieldError {
                path: "metadata.name".into(),
                message,
            });
        }
        if let Err(e) = self.spec.validate() {
            errors.extend(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl BotSessionSpec {
    /// Check the rules the API server also enforces. Paths start at `spec`.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut e = Errors::default();
        if self.account_ref.name.trim().is_empty() {
            e.push("spec.accountRef.name", "must name a PaperAccount");
        }
        e.max_length(
            "spec.accountRef.name",
            &self.account_ref.name,
            MAX_NAME_LENGTH,
        );
        if self.strategy_ref.name.trim().is_empty() {
            e.push("spec.strategyRef.name", "must name a StrategyConfig");
        }
        e.max_length(
            "spec.strategyRef.name",
            &self.strategy_ref.name,
            MAX_NAME_LENGTH,
        );
        e.max_items("spec.symbols", self.symbols.len(), MAX_SYMBOLS);
        e.positive("spec.allocation", Some(self.allocation));
        e.money("spec.allocation", Some(self.allocation));
        e.duration("spec.stopAfter", self.stop_after);
        if let Some(r) = &self.reset_request {
            e.max_length("spec.resetRequest", r, MAX_RESET_REQUEST_LENGTH);
        }
        if self.symbols.is_empty() {
            e.push("spec.symbols", "must list at least one symbol");
        }
        let mut seen = BTreeSet::new();
        for (i, s) in self.symbols.iter().enumerate() {
            e.max_length(&format!("spec.symbols[{i}]"), s, MAX_SYMBOL_LENGTH);
            if s.trim().is_empty() {
                e.push(format!("spec.symbols[{i}]"), "must not be empty");
            } else if !seen.insert(s) {
                e.push(
                    format!("spec.symbols[{i}]"),
                    format!("{s:?} is listed twice: symbols must be unique"),
                );
            }
        }
        // Like the CRD's rules: a replay or simulated block is checked whenever
        // it is present; `source` decides which one must be present and whether
        // the replay files must match `spec.symbols`.
        let md = &self.market_data;
        if md.source == MarketDataSource::Live {
            if md.live.is_none() {
                e.push(
                    "spec.marketData.live",
                    "source is Live but no live settings are given: expected live.sources",
                );
            }
            if md.speed.is_some() {
                e.push(
                    "spec.marketData.speed",
                    "must not be set when source is Live: live prices arrive in real time",
                );
            }
        }
        if let Some(l) = &md.live {
            l.validate(
                "spec.marketData.live",
                &self.symbols,
                md.source == MarketDataSource::Live,
                &mut e,
            );
        }
        match (md.source, &md.replay, &md.simulated) {
            (MarketDataSource::Replay, None, _) => e.push(
                "spec.marketData.replay",
                "source is Replay but no replay files are given: expected replay.files",
            ),
            (MarketDataSource::Simulated, _, None) => e.push(
                "spec.marketData.simulated",
                "source is Simulated but no simulated settings are given: expected simulated.seed",
            ),
            (MarketDataSource::Simulated, _, Some(s))
                if s.candles.is_none() && self.stop_after.is_none() =>
            {
                e.push(
                    "spec.marketData.simulated.candles",
                    "a simulated source needs an end: set simulated.candles or spec.stopAfter",
                )
            }
            _ => {}
        }
        if let Some(r) = &md.replay {
            self.validate_replay(r, md.source == MarketDataSource::Replay, &mut e);
        }
        if let Some(s) = &md.simulated {
            let path = "spec.marketData.simulated";
            e.positive(&format!("{path}.initialPrice"), Some(s.initial_price));
            if s.initial_price.get() > Decimal::ZERO {
                e.range(
                    &format!("{path}.initialPrice"),
                    s.initial_price.get(),
                    limits::MIN_SIMULATED_PRICE,
                    limits::MAX_SIMULATED_PRICE,
                    " (quote currency)",
                );
            }
            e.range(
                &format!("{path}.annualDrift"),
                s.annual_drift.get(),
                -limits::MAX_ANNUAL_DRIFT,
                limits::MAX_ANNUAL_DRIFT,
                " (fraction a year)",
            );
            e.non_negative(
                &format!("{path}.annualVolatility"),
                Some(s.annual_volatility),
            );
            e.at_most(
                &format!("{path}.annualVolatility"),
                Some(s.annual_volatility),
                limits::MAX_ANNUAL_VOLATILITY,
                " (fraction a year)",
            );
            if s.interval.get().is_zero() {
                e.push(format!("{path}.interval"), "must be longer than 0s");
            }
            e.duration(&format!("{path}.interval"), Some(s.interval));
            e.count_at_most(&format!("{path}.seed"), Some(s.seed), limits::MAX_SEED);
            e.count_at_most(
                &format!("{path}.candles"),
                s.candles,
                limits::MAX_SIMULATED_CANDLES,
            );
        }
        if let Some(Speed::Factor(f)) = md.speed {
            e.range(
                "spec.marketData.speed",
                f,
                limits::MIN_SPEED,
                limits::MAX_SPEED,
                " (multiple of real time, or \"max\")",
            );
        }
        let x = &self.execution;
        e.pct("spec.execution.feeRatePct", x.fee_rate_pct);
        e.non_negative("spec.execution.gasCost", x.gas_cost);
        e.money("spec.execution.gasCost", x.gas_cost);
        e.count_at_most("spec.execution.seed", Some(x.seed), limits::MAX_SEED);
        e.duration("spec.execution.latency", x.latency);
        e.duration("spec.execution.latencyJitter", x.latency_jitter);
        e.pct("spec.execution.failureRatePct", x.failure_rate_pct);
        if let Some(s) = &x.slippage {
            e.non_negative("spec.execution.slippage.baseBps", s.base_bps);
            e.at_most(
                "spec.execution.slippage.baseBps",
                s.base_bps,
                limits::MAX_PCT,
                " (basis points)",
            );
            e.pct("spec.execution.slippage.impactPct", s.impact_pct);
        }
        e.finish()
    }

    /// Checks of `marketData.replay`; `in_use` when `source` is `Replay`,
    /// which also requires one file per symbol and no other files.
    fn validate_replay(&self, r: &ReplaySpec, in_use: bool, e: &mut Errors) {
        let mut bounds = [None, None];
        for (slot, (name, value)) in bounds.iter_mut().zip([("from", &r.from), ("to", &r.to)]) {
            if let Some(v) = value {
                match parse_utc_time(&format!("marketData.replay.{name}"), v) {
                    Ok(ms) => *slot = Some(ms),
                    Err(why) => e.push(format!("spec.marketData.replay.{name}"), why),
                }
            }
        }
        if let [Some(from), Some(to)] = bounds
            && from >= to
        {
            e.push(
                "spec.marketData.replay.from",
                format!(
                    "{:?} must be before marketData.replay.to {:?} (from is inclusive, to \
                     exclusive)",
                    r.from.as_deref().unwrap_or_default(),
                    r.to.as_deref().unwrap_or_default()
                ),
            );
        }
        let path = "spec.marketData.replay.files";
        if r.files.is_empty() {
            e.push(path, "must list at least one candle file");
        }
        e.max_items(path, r.files.len(), MAX_REPLAY_FILES);
        for (i, f) in r.files.iter().enumerate() {
            let file = format!("{path}[{i}]");
            e.max_length(&format!("{file}.symbol"), &f.symbol, MAX_SYMBOL_LENGTH);
            e.max_length(&format!("{file}.path"), &f.path, MAX_PATH_LENGTH);
            if f.path.trim().is_empty() {
                e.push(format!("{file}.path"), "must not be empty");
            }
            if let Some(iv) = f.interval
                && iv.get().is_zero()
            {
                e.push(format!("{file}.interval"), "must be longer than 0s");
            }
            e.duration(&format!("{file}.interval"), f.interval);
            if f.format == ReplayFormat::Trades {
                if f.interval.is_none() {
                    e.push(
                        format!("{file}.interval"),
                        "is required when format is Trades: expected the candle length to \
                         aggregate the trades into, e.g. 1m",
                    );
                }
                if f.volume_unit != VolumeUnit::Base {
                    e.push(
                        format!("{file}.volumeUnit"),
                        "must be Base when format is Trades: trade quantities are \
                         base-currency units",
                    );
                }
            }
            if in_use && !self.symbols.contains(&f.symbol) {
                e.push(
                    format!("{file}.symbol"),
                    format!(
                        "{:?} is not one of spec.symbols {:?}",
                        f.symbol, self.symbols
                    ),
                );
            }
        }
        if in_use {
            for s in &self.symbols {
                if !r.files.iter().any(|f| &f.symbol == s) {
                    e.push(path, format!("no candle file for symbol {s:?}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_range_takes_rfc3339_utc_in_order() {
        let spec = |from: Option<&str>, to: Option<&str>| ReplaySpec {
            files: Vec::new(),
            from: from.map(Into::into),
            to: to.map(Into::into),
        };
        assert_eq!(spec(None, None).range_ms(), Ok((None, None)));
        assert_eq!(
            spec(
                Some("2024-01-01T00:00:00Z"),
                Some("2024-01-01T00:01:00.5+00:00")
            )
            .range_ms(),
            Ok((Some(1_704_067_200_000), Some(1_704_067_260_500)))
        );
        let e = spec(Some("2024-01-01T00:01:00Z"), Some("2024-01-01T00:01:00Z"))
            .range_ms()
            .unwrap_err();
        assert!(e.contains("must be before"), "{e}");
        let e = spec(Some("2024-01-01"), None).range_ms().unwrap_err();
        assert!(
            e.contains("marketData.replay.from") && e.contains("not an RFC 3339"),
            "{e}"
        );
        let e = spec(None, Some("2024-01-01T02:00:00+02:00"))
            .range_ms()
            .unwrap_err();
        assert!(
            e.contains("marketData.replay.to") && e.contains("not in UTC"),
            "{e}"
        );
    }

    #[test]
    fn speed_reads_max_and_exact_factors_and_refuses_numbers() {
        let s: Speed = serde_yaml::from_str("max").unwrap();
        assert_eq!(s, Speed::Max);
        assert_eq!(s.factor(), None);
        let s: Speed = serde_yaml::from_str("\"60.50\"").unwrap();
        assert_eq!(s, Speed::Factor(Decimal::new(6050, 2)));
        assert_eq!(s.to_string(), "60.5");
        assert_eq!(s.factor(), Some(60.5));
        assert_eq!(serde_json::to_string(&Speed::Max).unwrap(), "\"max\"");
        let e = serde_yaml::from_str::<Speed>("60").unwrap_err().to_string();
        assert!(e.contains("quote it"), "{e}");
        let e = serde_yaml::from_str::<Speed>("fast")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected \"max\" or a multiple"), "{e}");
    }

    #[test]
    fn validate_refuses_a_speed_out_of_range_naming_the_field() {
        let mut spec: BotSessionSpec = serde_yaml::from_str(
            "accountRef: {name: a}\nstrategyRef: {name: s}\nallocation: \"1000\"\n\
             symbols: [BTC-USD]\nmarketData: {source: Simulated, speed: \"0.0009\", \
             simulated: {seed: 1, candles: 10}}\n",
        )
        .unwrap();
        let e = spec.validate().unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].path, "spec.marketData.speed");
        assert!(e[0].message.contains("expected 0.001 to 1000000"), "{e:?}");
        spec.market_data.speed = Some(Speed::Factor(Decimal::ONE));
        assert!(spec.validate().is_ok());
        spec.market_data.speed = Some(Speed::Max);
        assert!(spec.validate().is_ok());
    }
}
