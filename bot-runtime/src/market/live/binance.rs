//! Binance spot public market data:
//! `GET /api/v3/ticker/price?symbols=["BTCUSDT","ETHUSDT"]` (one call for all
//! symbols; answered as `[{"symbol":"BTCUSDT","price":"67187.33000000"}, …]`,
//! prices as strings, no timestamp) and `GET /api/v3/klines?symbol=…&
//! interval=…&limit=…` for warm-up history (rows `[openTime ms, "open",
//! "high", "low", "close", "volume", closeTime ms, …]`). An unknown symbol
//! fails the whole bulk call with HTTP 400 `{"code":-1121,"msg":"Invalid
//! symbol."}`, which is why symbols are validated at start.

use std::collections::BTreeMap;

use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::market::csv::candle_from_fields;
use crate::types::{Candle, SymbolId, Timestamp};

use super::http::{HttpPolicy, HttpSource};
use super::json::decimal_from_json;
use super::sanity::RejectReason;
use super::symbols::{SourceKind, SymbolMap};
use super::{BreakerState, LiveError, LiveSource, PriceTick, Quote, SourceError, SourceFuture};

/// Binance spot REST base URL.
pub const BASE_URL: &str = "https://api.binance.com";

/// Most klines Binance returns per request.
pub const MAX_KLINES: u16 = 1000;

/// Binance's interval name for a candle length in milliseconds (`60000` →
/// `1m`), or `None` when Binance has no such interval. The spot API's kline
/// intervals: `1s`, `1m`, `3m`, `5m`, `15m`, `30m`, `1h`, `2h`, `4h`, `6h`,
/// `8h`, `12h`, `1d`, `3d`, `1w` (and `1M`, a calendar month, which has no
/// fixed length and is not offered here).
pub fn binance_interval(interval_ms: i64) -> Option<&'static str> {
    const M: i64 = 60_000;
    Some(match interval_ms {
        1000 => "1s",
        x if x == M => "1m",
        x if x == 3 * M => "3m",
        x if x == 5 * M => "5m",
        x if x == 15 * M => "15m",
        x if x == 30 * M => "30m",
        x if x == 60 * M => "1h",
        x if x == 120 * M => "2h",
        x if x == 240 * M => "4h",
        x if x == 360 * M => "6h",
        x if x == 480 * M => "8h",
        x if x == 720 * M => "12h",
        x if x == 1440 * M => "1d",
        x if x == 3 * 1440 * M => "3d",
        x if x == 7 * 1440 * M => "1w",
        _ => return None,
    })
}

/// The Binance source.
#[derive(Debug)]
pub struct Binance {
    name: String,
    http: HttpSource,
    url_base: String,
    map: SymbolMap,
}

#[derive(Deserialize)]
struct TickerRow<'a> {
    symbol: String,
    #[serde(borrow)]
    price: Option<&'a RawValue>,
}

/// Parse a bulk `ticker/price` body for `wanted` (session symbol, Binance
/// pair); prices are dated `now` (Binance sends no time).
///
/// # Errors
///
/// [`SourceError::Malformed`] when the body is not an array of
/// `{"symbol","price"}` objects.
pub fn parse_ticker_prices(
    body: &str,
    wanted: &[(&str, &str)],
    now: Timestamp,
) -> Result<Vec<Quote>, SourceError> {
    let rows: Vec<TickerRow<'_>> = serde_json::from_str(body).map_err(|e| {
        SourceError::Malformed(format!(
            "expected an array like [{{\"symbol\":\"BTCUSDT\",\"price\":\"67187.33\"}}]: {e}"
        ))
    })?;
    let by_pair: BTreeMap<&str, Option<&RawValue>> =
        rows.iter().map(|r| (r.symbol.as_str(), r.price)).collect();
    Ok(wanted
        .iter()
        .map(|&(symbol, pair)| {
            let reason = match by_pair.get(pair) {
                None | Some(None) => RejectReason::Missing,
                Some(Some(raw)) => match decimal_from_json(raw) {
                    Some(price) => {
                        return Quote::Price(PriceTick {
                            symbol: symbol.to_string(),
                            price,
                            time: now,
                        });
                    }
                    None => RejectReason::NonNumeric,
                },
            };
            Quote::Rejected {
                symbol: symbol.to_string(),
                reason,
            }
        })
        .collect())
}

/// Parse a `klines` body into candles of `symbol` with `interval_ms`,
/// keeping only candles closed at `now` (the last row is usually still open).
///
/// # Errors
///
/// [`SourceError::Malformed`] naming the row for a body that is not an array
/// of kline rows, a row whose prices fail the candle checks, or open times
/// that do not increase by whole intervals.
pub fn parse_klines(
    body: &str,
    symbol: SymbolId,
    interval_ms: i64,
    now: Timestamp,
) -> Result<Vec<Candle>, SourceError> {
    let rows: Vec<Vec<&RawValue>> = serde_json::from_str(body)
        .map_err(|e| SourceError::Malformed(format!("expected an array of kline arrays: {e}")))?;
    let mut out: Vec<Candle> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let bad = |what: String| SourceError::Malformed(format!("kline row {i}: {what}"));
        if row.len() < 6 {
            return Err(bad(format!(
                "expected at least 6 fields, found {}",
                row.len()
            )));
        }
        let open_ms: i64 = row[0]
            .get()
            .parse()
            .map_err(|_| bad(format!("open time {} is not integer milliseconds", row[0])))?;
        let mut texts: [String; 6] = Default::default();
        for (k, raw) in row.iter().take(6).enumerate().skip(1) {
            texts[k] = serde_json::from_str::<String>(raw.get())
                .map_err(|_| bad(format!("field {k} is {raw}, expected a decimal string")))?;
        }
        let fields: [&[u8]; 6] = [
            b"",
            texts[1].as_bytes(),
            texts[2].as_bytes(),
            texts[3].as_bytes(),
            texts[4].as_bytes(),
            texts[5].as_bytes(),
        ];
        let c =
            candle_from_fields(symbol, Timestamp(open_ms), interval_ms, &fields).map_err(bad)?;
        if let Some(prev) = out.last()
            && (c.open_time <= prev.open_time
                || (c.open_time.millis() - prev.open_time.millis()) % interval_ms != 0)
        {
            return Err(bad(format!(
                "open time {} does not follow {} by whole intervals",
                c.open_time, prev.open_time
            )));
        }
        if c.close_time() <= now {
            out.push(c);
        }
    }
    Ok(out)
}

impl Binance {
    /// A source named `binance` for `symbols` (session symbols; see
    /// [`SymbolMap`]). `base_url` `None` = [`BASE_URL`].
    ///
    /// # Errors
    ///
    /// [`LiveError::UnknownSymbol`] for a symbol with no Binance pair.
    pub fn new<S: AsRef<str>>(
        symbols: &[S],
        overrides: &BTreeMap<String, String>,
        base_url: Option<&str>,
        policy: HttpPolicy,
    ) -> Result<Self, LiveError> {
        Ok(Self {
            name: "binance".into(),
            map: SymbolMap::new(SourceKind::Binance, symbols, overrides)?,
            http: HttpSource::new(policy)?,
            url_base: base_url
                .unwrap_or(BASE_URL)
                .trim_end_matches('/')
                .to_string(),
        })
    }

    /// Rename (for two Binance entries in one chain).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The bulk ticker URL for `symbols`.
    pub fn ticker_url(&self, symbols: &[String]) -> String {
        let pairs: Vec<String> = symbols
            .iter()
            .filter_map(|s| self.map.id(s))
            .map(|p| format!("\"{p}\""))
            .collect();
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("symbols", &format!("[{}]", pairs.join(",")))
            .finish();
        format!("{}/api/v3/ticker/price?{query}", self.url_base)
    }

    /// The last `limit` (1 ..= [`MAX_KLINES`]) closed candles of session
    /// symbol `symbol` with `interval_ms`, for warm-up; one request.
    ///
    /// # Errors
    ///
    /// [`LiveError::Config`] for an interval Binance does not have, a limit
    /// out of range or a symbol not given at construction;
    /// [`LiveError::Request`] when the request or the body fails.
    pub async fn klines(
        &self,
        symbol: &str,
        id: SymbolId,
        interval_ms: i64,
        limit: u16,
        now: Timestamp,
    ) -> Result<Vec<Candle>, LiveError> {
        let interval = binance_interval(interval_ms).ok_or_else(|| {
            LiveError::Config(format!(
                "Binance has no {interval_ms} ms kline interval (expected 1s, 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, 1d, 3d or 1w)"
            ))
        })?;
        if !(1..=MAX_KLINES).contains(&limit) {
            return Err(LiveError::Config(format!(
                "kline limit must be 1 to {MAX_KLINES}, found {limit}"
            )));
        }
        let pair = self.map.id(symbol).ok_or_else(|| {
            LiveError::Config(format!(
                "symbol {symbol:?} was not given to the {} source",
                self.name
            ))
        })?;
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("symbol", pair)
            .append_pair("interval", interval)
            .append_pair("limit", &limit.to_string())
            .finish();
        let url = format!("{}/api/v3/klines?{query}", self.url_base);
        self.http
            .get(&url, &HeaderMap::new(), |b| {
                parse_klines(b, id, interval_ms, now)
            })
            .await
            .map_err(|error| LiveError::Request {
                source_name: self.name.clone(),
                error,
            })
    }
}

impl LiveSource for Binance {
    fn name(&self) -> &str {
        &self.name
    }

    fn fetch<'a>(
        &'a self,
        symbols: &'a [String],
        now: Timestamp,
    ) -> SourceFuture<'a, Result<Vec<Quote>, SourceError>> {
        Box::pin(async move {
            let wanted: Vec<(&str, &str)> = symbols
                .iter()
                .filter_map(|s| Some((s.as_str(), self.map.id(s)?)))
                .collect();
            let url = self.ticker_url(symbols);
            self.http
                .get(&url, &HeaderMap::new(), |b| {
                    parse_ticker_prices(b, &wanted, now)
                })
                .await
        })
    }

    fn breaker_state(&self) -> BreakerState {
        self.http.breaker_state()
    }

    fn ready(&self) -> Result<(), SourceError> {
        self.http.ready()
    }

    fn requests_sent(&self) -> u64 {
        self.http.requests_sent()
    }
}
