//! Live price sources: an aggregator (CoinGecko simple price) and an
//! exchange's public REST market data (Binance spot `ticker/price` and
//! `klines`), behind one [`LiveSource`] trait, with a [`FallbackChain`] that
//! polls them in order of preference.
//!
//! This is a library layer: nothing here runs the engine or reads a
//! `BotSession`. A caller builds the sources from its configuration, puts them
//! in a chain and calls [`FallbackChain::poll`] once per poll interval.
//!
//! What each piece does, and its units:
//!
//! | piece | job |
//! |---|---|
//! | [`SymbolMap`] | session symbol (`BTC-USD`) → source identifier (`bitcoin`, `BTCUSDT`); built-in table plus overrides; unknown symbol = [`LiveError::UnknownSymbol`] at start |
//! | [`HttpSource`] | one upstream's HTTP(S) (TLS: [`tls`], system trust store): timeout (seconds), retries with exponential backoff and jitter, `429` + `Retry-After` (seconds or HTTP date), a [`CircuitBreaker`], a [`RequestBudget`] (requests per minute) |
//! | [`CoinGecko`], [`Binance`] | build the one bulk request per poll and parse the documented response bodies into exact [`Decimal`] prices |
//! | [`TickChecker`] | per-tick sanity: zero, negative, non-numeric, missing symbol, jump beyond a band (percent 0–100 vs the last accepted price) |
//! | [`FallbackChain`] | first healthy source first; symbols it could not price go to the next source; hand-back to the preferred source once its breaker closes; staleness (`max_age`, seconds) per symbol; counters as a [`ChainStats`] snapshot |
//!
//! Prices are parsed from the JSON text itself (Binance sends strings,
//! CoinGecko numbers, read through `serde_json`'s raw values), never through
//! `f64`.

mod binance;
mod breaker;
mod budget;
mod chain;
mod coingecko;
pub mod feed;
mod http;
mod json;
mod sanity;
mod symbols;
pub mod tls;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rust_decimal::Decimal;

use crate::types::Timestamp;

pub use binance::{Binance, MAX_KLINES, binance_interval, parse_klines, parse_ticker_prices};
pub use breaker::{BreakerState, CircuitBreaker};
pub use budget::RequestBudget;
pub use chain::{ChainConfig, ChainStats, FallbackChain, PollOutcome, SourceStats};
pub use coingecko::{CoinGecko, CoinGeckoPlan, parse_simple_price};
pub use http::{HttpPolicy, HttpSource, parse_retry_after};
pub use sanity::{RejectReason, TickChecker};
pub use symbols::{SourceKind, SymbolMap};

/// One price of one symbol as a source reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceTick {
    /// The session's symbol, e.g. `BTC-USD`.
    pub symbol: String,
    /// Last price in the quote currency (USD for `-USD` symbols, USDT for
    /// Binance `…USDT` pairs, treated as USD).
    pub price: Decimal,
    /// When the price was valid: the source's own timestamp when it sends one
    /// (CoinGecko `last_updated_at`), else the time the response arrived.
    pub time: Timestamp,
}

/// What a source answered for one symbol of a bulk request: a price, or why
/// there is none (missing from the body, not a number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Quote {
    /// A parsed price and its time (not yet sanity-checked for sign or jump).
    Price(PriceTick),
    /// No usable price for `symbol`.
    Rejected {
        /// The session's symbol.
        symbol: String,
        /// Why.
        reason: RejectReason,
    },
}

/// Why a request to a source failed (after its retries). `kind()` is a
/// bounded label for counters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// No answer within the request timeout.
    #[error("no answer within {timeout:?}")]
    Timeout {
        /// The configured timeout.
        timeout: Duration,
    },
    /// Could not connect or the connection broke.
    #[error("connection failed: {0}")]
    Connect(String),
    /// HTTP `429`; no request is sent before `retry_after` has passed.
    #[error("rate limited (HTTP 429); retry after {retry_after:?}")]
    RateLimited {
        /// The wait the server asked for (`Retry-After`), or the backoff
        /// default when it sent none.
        retry_after: Duration,
    },
    /// HTTP 5xx.
    #[error("server error HTTP {status}")]
    Server {
        /// The status code.
        status: u16,
    },
    /// Any other non-success status (4xx other than 429).
    #[error("request refused with HTTP {status}: {body}")]
    Refused {
        /// The status code.
        status: u16,
        /// The start of the body (at most 200 characters).
        body: String,
    },
    /// The body is not the documented JSON shape.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The circuit breaker is open: the source is skipped until its cool-down
    /// ends.
    #[error("circuit breaker open for another {remaining:?}")]
    CircuitOpen {
        /// Time left in the cool-down.
        remaining: Duration,
    },
    /// The per-source request budget is used up for the current minute.
    #[error("request budget used up; next request allowed in {wait:?}")]
    BudgetExhausted {
        /// Time until the budget allows the next request.
        wait: Duration,
    },
}

impl SourceError {
    /// Bounded label for counters and metrics: `timeout`, `connect`,
    /// `rate_limited`, `server`, `refused`, `malformed`, `circuit_open`,
    /// `budget`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::Connect(_) => "connect",
            Self::RateLimited { .. } => "rate_limited",
            Self::Server { .. } => "server",
            Self::Refused { .. } => "refused",
            Self::Malformed(_) => "malformed",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::BudgetExhausted { .. } => "budget",
        }
    }

    /// Whether another attempt within the same poll may succeed (timeouts,
    /// connection errors, 5xx). A 429 is not retried in the poll: its wait
    /// is honoured across polls.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. } | Self::Connect(_) | Self::Server { .. }
        )
    }

    /// Whether the request reached the upstream and failed there (counts
    /// towards the circuit breaker). Skips by our own breaker or budget do
    /// not.
    pub fn counts_as_failure(&self) -> bool {
        !matches!(
            self,
            Self::CircuitOpen { .. } | Self::BudgetExhausted { .. }
        )
    }
}

/// Errors found when sources are built (before any request).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LiveError {
    /// A session symbol has no identifier for a source.
    #[error(
        "symbol {symbol:?} has no {source_name} identifier: add an override (e.g. {example}) or use one of the built-in symbols ({known})"
    )]
    UnknownSymbol {
        /// The session's symbol.
        symbol: String,
        /// The source's name (`coingecko`, `binance`).
        source_name: &'static str,
        /// An example override for this source.
        example: &'static str,
        /// The built-in symbols, comma-separated.
        known: String,
    },
    /// A configuration value is out of range.
    #[error("invalid live source configuration: {0}")]
    Config(String),
    /// A request made while starting (e.g. warm-up klines) failed.
    #[error("{source_name}: {error}")]
    Request {
        /// The source's name.
        source_name: String,
        /// What failed.
        error: SourceError,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Boxed future returned by [`LiveSource`] methods (object safe).
pub type SourceFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A live price source: one bulk request per poll for all requested symbols.
pub trait LiveSource: Send + Sync {
    /// Short name used in counters and logs (`coingecko`, `binance`, or the
    /// name given at construction).
    fn name(&self) -> &str;

    /// Fetch the last price of every symbol in `symbols` (session symbols,
    /// each already validated by the source's [`SymbolMap`]) in one request.
    /// `now` is the arrival time stamped on prices the source does not date.
    ///
    /// Returns one [`Quote`] per requested symbol, in the order given.
    ///
    /// # Errors
    ///
    /// [`SourceError`] when the request as a whole failed.
    fn fetch<'a>(
        &'a self,
        symbols: &'a [String],
        now: Timestamp,
    ) -> SourceFuture<'a, Result<Vec<Quote>, SourceError>>;

    /// The breaker's state (for the chain's choice and for status).
    fn breaker_state(&self) -> BreakerState;

    /// Whether a request may be sent now (breaker closed or half-open, not
    /// inside a `Retry-After` wait, budget left). `Err` says why not.
    ///
    /// # Errors
    ///
    /// The [`SourceError`] the request would fail with.
    fn ready(&self) -> Result<(), SourceError>;

    /// HTTP requests sent so far (retries included).
    fn requests_sent(&self) -> u64;
}

impl fmt::Debug for dyn LiveSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveSource")
            .field("name", &self.name())
            .finish()
    }
}
