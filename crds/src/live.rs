//! `BotSession.spec.marketData.live`: live prices polled from exchanges and
//! aggregators through an ordered fallback chain of sources, each with its
//! own request budget and optional API key from a Secret.
//!
//! The engine trades candles of `interval`, aggregated from the prices
//! polled every `pollInterval`. A price older than `maxAge` is stale and
//! trips the runtime's price-feed breaker; a price moving more than
//! `jumpBandPct` percent from the last accepted one is rejected.

use std::collections::{BTreeMap, BTreeSet};

use kube::KubeSchema;
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    account::{DNS_SUBDOMAIN_PATTERN, SECRET_KEY_PATTERN, is_dns_subdomain, is_secret_key},
    schema::{self, MAX_NAME_LENGTH, MAX_SYMBOL_LENGTH, MAX_SYMBOLS},
    validation::{DNS1123_LABEL_MAX_LENGTH, Errors},
    values::{DecimalString, GoDuration},
};

/// Most sources in one fallback chain (`live.sources` `maxItems`).
pub const MAX_LIVE_SOURCES: usize = 5;
/// Smallest per-source request budget, requests a minute.
pub const MIN_REQUESTS_PER_MINUTE: u32 = 1;
/// Largest per-source request budget, requests a minute (Binance's public
/// REST weight limit is 6000 a minute).
pub const MAX_REQUESTS_PER_MINUTE: u32 = 6000;
/// Shortest `live.pollInterval`: 1 s.
pub const MIN_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Largest `live.jumpBandPct`, percent: 1000 (an 11× move in one poll).
pub const MAX_JUMP_BAND_PCT: Decimal = Decimal::from_parts(1000, 0, 0, false, 0);
/// Longest `baseUrl`, in characters.
pub const MAX_URL_LENGTH: usize = 2048;
/// Longest source-specific identifier in `sources[].symbols`, in characters.
pub const MAX_SOURCE_SYMBOL_LENGTH: usize = 128;
/// Prefix of the environment variable a runtime reads a source's API key
/// from; see [`LiveSourceSpec::api_key_env`].
pub const API_KEY_ENV_PREFIX: &str = "PAPERBOT_LIVE_API_KEY_";

/// A DNS-1123 label (a source name), as a CEL/RE2 pattern.
const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// An `http://` or `https://` URL with a host, as a CEL/RE2 pattern.
const HTTP_URL_PATTERN: &str = r"^https?://[^\\s/?#]+([/?#]\\S*)?$";

/// Live market data settings (`spec.marketData.live`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = Rule::new("duration(self.pollInterval) <= duration(self.interval)")
        .message("marketData.live.pollInterval must not be longer than marketData.live.interval: expected at least one poll per candle")
        .field_path(".pollInterval"),
    validation = Rule::new("duration(self.maxAge) >= duration(self.pollInterval)")
        .message("marketData.live.maxAge must be at least marketData.live.pollInterval: a shorter age makes every price stale before the next poll")
        .field_path(".maxAge")
)]
pub struct LiveSpec {
    /// Length of the candles the engine trades (default `"1m"`), in Go units
    /// (`h`, `m`, `s`, `ms`): the polled prices are aggregated into candles
    /// of this length, and decisions are made on closed candles.
    #[serde(default = "default_interval")]
    #[x_kube(validation = schema::nonzero_duration("marketData.live.interval", "1m"))]
    pub interval: GoDuration,
    /// Time between two polls of the sources (default `"10s"`); at least
    /// `1s` and at most `interval`.
    #[serde(default = "default_poll_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')")
        .message("marketData.live.pollInterval must be at least 1s, e.g. \"10s\""))]
    pub poll_interval: GoDuration,
    /// Age after which the last price of a symbol is stale (default
    /// `"1m"`); stale prices trip the session's price-feed breaker until
    /// fresh ones arrive. At least `pollInterval`.
    #[serde(default = "default_max_age")]
    #[x_kube(validation = schema::nonzero_duration("marketData.live.maxAge", "60s"))]
    pub max_age: GoDuration,
    /// Sanity band, percent (default `"20"`, greater than 0, at most 1000):
    /// a price that moved more than this percent from the last accepted
    /// price of its symbol is rejected and counted, never traded on.
    #[serde(default = "default_jump_band_pct")]
    #[x_kube(
        validation = schema::positive("marketData.live.jumpBandPct"),
        validation = schema::at_most("marketData.live.jumpBandPct", MAX_JUMP_BAND_PCT)
    )]
    pub jump_band_pct: DecimalString,
    /// How the indicators get their history before the first decision:
    /// `Klines` (default: a new session fetches the strategy's look-back of
    /// recent candles from the first `Binance` source at start; with no
    /// Binance source, or an interval Binance lacks, it records instead) or
    /// `Record` (collect live candles, and trade once enough are closed).
    #[serde(default)]
    pub warm_up: WarmUp,
    /// Ordered fallback chain: the first healthy source is used, the next one
    /// takes over while it fails, and the first hands back when it recovers.
    /// 1 to 5 sources with unique names.
    #[schemars(length(max = MAX_LIVE_SOURCES))]
    #[x_kube(
        validation = schema::not_empty_list(
            "marketData.live.sources",
            "expected at least one source such as {name: coingecko, kind: CoinGecko}"
        ),
        validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))")
            .message("marketData.live.sources must have unique names: a source name is listed more than once")
    )]
    pub sources: Vec<LiveSourceSpec>,
    /// Take prices from the shared market-data feed of the namespace when
    /// one serves these symbols, falling back to polling the sources
    /// directly within their budgets (default `true`). `false`: always poll
    /// the sources directly. Runtimes without a shared feed poll directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_shared_feed: Option<bool>,
}

fn default_interval() -> GoDuration {
    std::time::Duration::from_secs(60).into()
}
fn default_poll_interval() -> GoDuration {
    std::time::Duration::from_secs(10).into()
}
fn default_max_age() -> GoDuration {
    std::time::Duration::from_secs(60).into()
}
fn default_jump_band_pct() -> DecimalString {
    DecimalString(Decimal::from(20))
}

/// How a live session fills its indicators' history before trading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum WarmUp {
    /// Fetch recent candles (klines) from the first Binance source at start.
    #[default]
    Klines,
    /// Record live candles and make no decision until enough are closed.
    Record,
}

/// The API a live source speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum LiveSourceKind {
    /// CoinGecko's `simple/price` endpoint (every symbol in one request).
    CoinGecko,
    /// Binance's public spot market data (`ticker/price`, `klines`).
    Binance,
}

/// One source of the fallback chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiveSourceSpec {
    /// Name of the source in metrics, status and logs, e.g. `coingecko`: a
    /// DNS-1123 label, unique in the chain.
    #[schemars(length(max = DNS1123_LABEL_MAX_LENGTH))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DNS_LABEL_PATTERN}')"))
        .message("marketData.live.sources[].name must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit, e.g. \"coingecko\""))]
    pub name: String,
    /// `CoinGecko` or `Binance`.
    pub kind: LiveSourceKind,
    /// Request budget of this source, requests a minute, from 1 to 6000;
    /// the runtime never sends more, whatever the poll interval.
    #[schemars(range(min = MIN_REQUESTS_PER_MINUTE, max = MAX_REQUESTS_PER_MINUTE))]
    #[x_kube(validation = Rule::new(format!(
        "self >= {MIN_REQUESTS_PER_MINUTE} && self <= {MAX_REQUESTS_PER_MINUTE}"
    ))
    .message("marketData.live.sources[].requestsPerMinute must be from 1 to 6000 (requests a minute)"))]
    pub requests_per_minute: u32,
    /// Override of the API's base URL (tests, proxies, regional endpoints),
    /// `http://` or `https://`, e.g. `https://api.coingecko.com`; default the
    /// public endpoint of `kind`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_URL_LENGTH))]
    #[x_kube(validation = Rule::new(format!("self.matches('{HTTP_URL_PATTERN}')"))
        .message("marketData.live.sources[].baseUrl must be an http:// or https:// URL with a host, e.g. \"https://api.coingecko.com\""))]
    pub base_url: Option<String>,
    /// The Secret key (same namespace) holding this source's API key; the
    /// key never appears in the spec. The runtime container receives it in
    /// the environment variable `PAPERBOT_LIVE_API_KEY_<NAME>` (the source
    /// name in upper case, `-` as `_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<ApiKeySecretRef>,
    /// Overrides of the built-in symbol mapping: session symbol → this
    /// source's identifier (e.g. `BTC-USD: bitcoin` for CoinGecko,
    /// `BTC-USD: BTCUSDT` for Binance). Keys must be in `spec.symbols`; at
    /// most 50.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = MAX_SYMBOLS,
        "additionalProperties" = {"type": "string", "maxLength": MAX_SOURCE_SYMBOL_LENGTH}
    ))]
    #[x_kube(validation = Rule::new("self.all(k, self[k].trim() != '')")
        .message("marketData.live.sources[].symbols must not map a symbol to an empty identifier: expected the source's identifier, e.g. \"bitcoin\""))]
    pub symbols: BTreeMap<String, String>,
}

impl LiveSourceSpec {
    /// Name of the environment variable that carries this source's API key
    /// into the runtime container: [`API_KEY_ENV_PREFIX`] followed by the
    /// source name in upper case with `-` as `_` (`coin-gecko` →
    /// `PAPERBOT_LIVE_API_KEY_COIN_GECKO`). Unique per chain, since names
    /// are unique DNS-1123 labels (which have no `_`).
    pub fn api_key_env(&self) -> String {
        let suffix: String = self
            .name
            .chars()
            .map(|c| match c {
                '-' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        format!("{API_KEY_ENV_PREFIX}{suffix}")
    }
}

/// A key of a Secret in the session's namespace holding an API key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeySecretRef {
    /// `metadata.name` of the Secret (a DNS subdomain name), e.g. `cg-key`.
    #[schemars(length(max = MAX_NAME_LENGTH))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DNS_SUBDOMAIN_PATTERN}')"))
        .message("marketData.live.sources[].apiKeySecretRef.name must be a Secret name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, e.g. \"cg-key\""))]
    pub name: String,
    /// Key in the Secret's `data` holding the API key, e.g. `apiKey`.
    #[schemars(length(max = MAX_NAME_LENGTH))]
    #[x_kube(validation = Rule::new(format!("self.matches('{SECRET_KEY_PATTERN}')"))
        .message("marketData.live.sources[].apiKeySecretRef.key must be a Secret key: letters, digits, '-', '_' and '.', e.g. \"apiKey\""))]
    pub key: String,
}

/// Whether `s` is an `http://` or `https://` URL with a non-empty host and
/// no whitespace ([`HTTP_URL_PATTERN`]).
pub fn is_http_url(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
    else {
        return false;
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    host_end > 0 && !s.chars().any(|c| c.is_ascii_whitespace())
}

impl LiveSpec {
    /// Check the rules the API server also enforces on `marketData.live`
    /// (`path` is its path, `symbols` the session's `spec.symbols`; the
    /// symbol mapping is checked against them only when `in_use`).
    pub(crate) fn validate(&self, path: &str, symbols: &[String], in_use: bool, e: &mut Errors) {
        let interval = self.interval.get();
        if interval.is_zero() {
            e.push(format!("{path}.interval"), "must be longer than 0s");
        }
        e.duration(&format!("{path}.interval"), Some(self.interval.0));
        let poll = self.poll_interval.get();
        if poll < MIN_POLL_INTERVAL {
            e.push(
                format!("{path}.pollInterval"),
                format!("{} is too short: expected at least 1s", self.poll_interval),
            );
        } else if poll > interval {
            e.push(
                format!("{path}.pollInterval"),
                format!(
                    "{} is longer than interval {}: expected at least one poll per candle",
                    self.poll_interval, self.interval
                ),
            );
        }
        let max_age = self.max_age.get();
        if max_age.is_zero() {
            e.push(format!("{path}.maxAge"), "must be longer than 0s");
        } else if max_age < poll {
            e.push(
                format!("{path}.maxAge"),
                format!(
                    "{} is shorter than pollInterval {}: every price would be stale before the \
                     next poll",
                    self.max_age, self.poll_interval
                ),
            );
        }
        e.duration(&format!("{path}.maxAge"), Some(self.max_age.0));
        e.positive(&format!("{path}.jumpBandPct"), Some(self.jump_band_pct));
        e.at_most(
            &format!("{path}.jumpBandPct"),
            Some(self.jump_band_pct),
            MAX_JUMP_BAND_PCT,
            " (percent)",
        );
        let sources = format!("{path}.sources");
        if self.sources.is_empty() {
            e.push(&sources, "must list at least one source");
        }
        e.max_items(&sources, self.sources.len(), MAX_LIVE_SOURCES);
        let mut names = BTreeSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let at = format!("{sources}[{i}]");
            if crate::validation::check_dns1123_label(&s.name).is_err() {
                e.push(
                    format!("{at}.name"),
                    format!(
                        "{:?} is not a DNS-1123 label: expected 1 to 63 lower-case letters, \
                         digits and '-', starting and ending with a letter or digit",
                        s.name
                    ),
                );
            } else if !names.insert(&s.name) {
                e.push(
                    format!("{at}.name"),
                    format!("{:?} is listed twice: source names must be unique", s.name),
                );
            }
            if !(MIN_REQUESTS_PER_MINUTE..=MAX_REQUESTS_PER_MINUTE).contains(&s.requests_per_minute)
            {
                e.push(
                    format!("{at}.requestsPerMinute"),
                    format!(
                        "{} is out of range: expected {MIN_REQUESTS_PER_MINUTE} to \
                         {MAX_REQUESTS_PER_MINUTE} (requests a minute)",
                        s.requests_per_minute
                    ),
                );
            }
            if let Some(url) = &s.base_url {
                e.max_length(&format!("{at}.baseUrl"), url, MAX_URL_LENGTH);
                if !is_http_url(url) {
                    e.push(
                        format!("{at}.baseUrl"),
                        format!("{url:?} is not an http:// or https:// URL with a host"),
                    );
                }
            }
            if let Some(r) = &s.api_key_secret_ref {
                if !is_dns_subdomain(&r.name) {
                    e.push(
                        format!("{at}.apiKeySecretRef.name"),
                        format!("{:?} is not a Secret name (a DNS subdomain)", r.name),
                    );
                }
                if !is_secret_key(&r.key) {
                    e.push(
                        format!("{at}.apiKeySecretRef.key"),
                        format!(
                            "{:?} is not a Secret key: expected letters, digits, '-', '_' and '.'",
                            r.key
                        ),
                    );
                }
            }
            e.max_items(&format!("{at}.symbols"), s.symbols.len(), MAX_SYMBOLS);
            for (symbol, id) in &s.symbols {
                let field = format!("{at}.symbols");
                e.max_length(&field, symbol, MAX_SYMBOL_LENGTH);
                e.max_length(&field, id, MAX_SOURCE_SYMBOL_LENGTH);
                if id.trim().is_empty() {
                    e.push(
                        &field,
                        format!("{symbol:?} is mapped to an empty identifier"),
                    );
                }
                if in_use && !symbols.contains(symbol) {
                    e.push(
                        &field,
                        format!("{symbol:?} is not one of spec.symbols {symbols:?}"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_env_names_are_upper_case_with_underscores() {
        let s: LiveSourceSpec = serde_yaml::from_str(
            "{name: coin-gecko-2, kind: CoinGecko, requestsPerMinute: 30, \
             apiKeySecretRef: {name: cg-key, key: apiKey}}",
        )
        .unwrap();
        assert_eq!(s.api_key_env(), "PAPERBOT_LIVE_API_KEY_COIN_GECKO_2");
    }

    #[test]
    fn http_urls_need_a_scheme_and_a_host() {
        for ok in [
            "http://127.0.0.1:8080",
            "https://api.coingecko.com/api/v3",
            "https://h?x=1",
        ] {
            assert!(is_http_url(ok), "{ok}");
        }
        for bad in [
            "ftp://h",
            "https://",
            "https:///x",
            "api.binance.com",
            "http://a b",
            "",
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }

    #[test]
    fn defaults_fill_every_optional_setting() {
        let l: LiveSpec =
            serde_yaml::from_str("sources: [{name: b, kind: Binance, requestsPerMinute: 600}]")
                .unwrap();
        assert_eq!(l.interval.get().as_secs(), 60);
        assert_eq!(l.poll_interval.get().as_secs(), 10);
        assert_eq!(l.max_age.get().as_secs(), 60);
        assert_eq!(l.jump_band_pct.get(), Decimal::from(20));
        assert_eq!(l.warm_up, WarmUp::Klines);
        assert_eq!(l.use_shared_feed, None);
        let e = serde_yaml::from_str::<LiveSpec>(
            "pollInterval: 1d\nsources: [{name: b, kind: Binance, requestsPerMinute: 1}]",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no days"), "{e}");
    }
}
