//! CoinGecko `GET /api/v3/simple/price` — every symbol of a poll in one call:
//! `?ids=bitcoin,ethereum&vs_currencies=usd&include_last_updated_at=true`,
//! answered as `{"bitcoin":{"usd":67187.33,"last_updated_at":1711356300}, …}`
//! (prices as JSON numbers, `last_updated_at` in Unix seconds; ids CoinGecko
//! does not know are left out of the answer).

use std::collections::BTreeMap;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::value::RawValue;

use crate::types::Timestamp;

use super::http::{HttpPolicy, HttpSource};
use super::json::decimal_from_json;
use super::sanity::RejectReason;
use super::symbols::{SourceKind, SymbolMap};
use super::{BreakerState, LiveError, LiveSource, PriceTick, Quote, SourceError, SourceFuture};

/// Public API base URL (no key, or a demo key).
pub const PUBLIC_BASE_URL: &str = "https://api.coingecko.com/api/v3";
/// Paid plans' base URL (pro key).
pub const PRO_BASE_URL: &str = "https://pro-api.coingecko.com/api/v3";

/// Which CoinGecko plan, with its key. The key is sent as a header
/// (`x-cg-demo-api-key` or `x-cg-pro-api-key`) marked sensitive, so it is
/// never printed.
#[derive(Clone)]
pub enum CoinGeckoPlan {
    /// No key.
    Public,
    /// Demo plan key.
    Demo(String),
    /// Paid plan key.
    Pro(String),
}

impl std::fmt::Debug for CoinGeckoPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Public => "Public",
            Self::Demo(_) => "Demo(<key>)",
            Self::Pro(_) => "Pro(<key>)",
        })
    }
}

impl CoinGeckoPlan {
    /// The plan's base URL.
    pub fn base_url(&self) -> &'static str {
        match self {
            Self::Pro(_) => PRO_BASE_URL,
            _ => PUBLIC_BASE_URL,
        }
    }
}

/// The CoinGecko source.
#[derive(Debug)]
pub struct CoinGecko {
    name: String,
    http: HttpSource,
    url_base: String,
    map: SymbolMap,
    headers: HeaderMap,
}

impl CoinGecko {
    /// A source named `coingecko` for `symbols` (session symbols such as
    /// `BTC-USD`; the part after the last `-` is the `vs_currency`, lower
    /// case). `base_url` `None` = the plan's URL (tests pass a loopback URL).
    ///
    /// # Errors
    ///
    /// [`LiveError::UnknownSymbol`] for a symbol with no CoinGecko id;
    /// [`LiveError::Config`] for a key that is not a valid header value.
    pub fn new<S: AsRef<str>>(
        symbols: &[S],
        overrides: &BTreeMap<String, String>,
        plan: CoinGeckoPlan,
        base_url: Option<&str>,
        policy: HttpPolicy,
    ) -> Result<Self, LiveError> {
        let map = SymbolMap::new(SourceKind::CoinGecko, symbols, overrides)?;
        let mut headers = HeaderMap::new();
        let key = match &plan {
            CoinGeckoPlan::Public => None,
            CoinGeckoPlan::Demo(k) => Some(("x-cg-demo-api-key", k)),
            CoinGeckoPlan::Pro(k) => Some(("x-cg-pro-api-key", k)),
        };
        if let Some((name, k)) = key {
            let mut v = HeaderValue::from_str(k.trim()).map_err(|_| {
                LiveError::Config(
                    "the CoinGecko API key must be printable ASCII without line breaks".into(),
                )
            })?;
            v.set_sensitive(true);
            headers.insert(HeaderName::from_static(name), v);
        }
        Ok(Self {
            name: "coingecko".into(),
            http: HttpSource::new(policy)?,
            url_base: base_url
                .unwrap_or(plan.base_url())
                .trim_end_matches('/')
                .to_string(),
            map,
            headers,
        })
    }

    /// Rename (for two CoinGecko entries in one chain).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The request URL for `symbols`.
    pub fn url(&self, symbols: &[String]) -> String {
        let mut ids = Vec::new();
        let mut vs = Vec::new();
        for s in symbols {
            if let Some(id) = self.map.id(s)
                && !ids.contains(&id)
            {
                ids.push(id);
            }
            let cur = vs_currency(s);
            if !vs.contains(&cur) {
                vs.push(cur);
            }
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("ids", &ids.join(","))
            .append_pair("vs_currencies", &vs.join(","))
            .append_pair("include_last_updated_at", "true")
            .finish();
        format!("{}/simple/price?{query}", self.url_base)
    }
}

fn vs_currency(symbol: &str) -> String {
    symbol
        .rsplit_once('-')
        .map_or("usd", |(_, q)| q)
        .to_ascii_lowercase()
}

/// Parse a `/simple/price` body for `wanted` (session symbol, CoinGecko id)
/// pairs. `now` dates prices without `last_updated_at`.
///
/// # Errors
///
/// [`SourceError::Malformed`] when the body is not a JSON object. A missing
/// id or a price that is not a number only rejects that symbol.
pub fn parse_simple_price(
    body: &str,
    wanted: &[(&str, &str)],
    now: Timestamp,
) -> Result<Vec<Quote>, SourceError> {
    let top: BTreeMap<String, &RawValue> = serde_json::from_str(body).map_err(|e| {
        SourceError::Malformed(format!(
            "expected a JSON object of coin ids (e.g. {{\"bitcoin\":{{\"usd\":67187.33}}}}): {e}"
        ))
    })?;
    Ok(wanted
        .iter()
        .map(|&(symbol, id)| {
            let reject = |reason| Quote::Rejected {
                symbol: symbol.to_string(),
                reason,
            };
            let Some(raw) = top.get(id) else {
                return reject(RejectReason::Missing);
            };
            let Ok(fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(raw.get()) else {
                return reject(RejectReason::NonNumeric);
            };
            let Some(price_raw) = fields.get(&vs_currency(symbol)) else {
                return reject(RejectReason::Missing);
            };
            let Some(price) = decimal_from_json(price_raw) else {
                return reject(RejectReason::NonNumeric);
            };
            let time = fields
                .get("last_updated_at")
                .and_then(|r| r.get().parse::<i64>().ok())
                .and_then(|s| s.checked_mul(1000))
                .map_or(now, Timestamp);
            Quote::Price(PriceTick {
                symbol: symbol.to_string(),
                price,
                time,
            })
        })
        .collect())
}

impl LiveSource for CoinGecko {
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
            let url = self.url(symbols);
            self.http
                .get(&url, &self.headers, |b| parse_simple_price(b, &wanted, now))
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
