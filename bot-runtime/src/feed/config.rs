//! The feed's configuration file (YAML) and the sources built from it.
//!
//! ```yaml
//! pollInterval: 10s        # one upstream request per source per interval
//! maxAge: 60s              # older prices are stale
//! jumpBandPct: "20"        # percent 0–1000 from the last accepted price
//! forgetAfterPolls: 3      # drop a symbol nobody asked for in this many polls
//! symbols: [BTC-USD, ETH-USD]   # what the feed may serve (mapped at start)
//! sources:                 # same shape as BotSession marketData.live.sources
//!   - {name: coingecko, kind: CoinGecko, requestsPerMinute: 30}
//!   - {name: binance, kind: Binance, requestsPerMinute: 600}
//! ```
//!
//! API keys come from the environment, as for a runtime:
//! `PAPERBOT_LIVE_API_KEY_<NAME>` ([`LiveSourceSpec::api_key_env`]).
//!
//! A symbol that no source can map (no built-in identifier, no override) is
//! skipped, not fatal: the feed serves the others, logs the skipped ones and
//! counts them (`paperbot_feed_unmapped_symbols`), and answers a client
//! asking for one with HTTP 400. The operator writes the union of a group's
//! symbols into one `feed.yaml`, so one session with an unknown symbol (which
//! fails at its own start anyway) must not stop the feed of all the others.
//! A source that maps only some symbols is asked only for those.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use paperbot_crds::{
    DecimalString, GoDuration, LiveSourceKind, LiveSourceSpec, MAX_JUMP_BAND_PCT, MAX_LIVE_SOURCES,
    MAX_REQUESTS_PER_MINUTE, MIN_REQUESTS_PER_MINUTE, is_http_url,
};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::market::live::{
    Binance, ChainConfig, CoinGecko, CoinGeckoPlan, HttpPolicy, LiveError, LiveSource, SourceKind,
    SymbolMap,
};

/// The feed's settings (file shape in the module docs).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FeedConfig {
    /// Time between two polls of the upstream chain (Go units such as
    /// `10s`; at least 100 ms so that tests can run short intervals).
    pub poll_interval: GoDuration,
    /// Age after which a price is stale (default 60 s).
    #[serde(default = "default_max_age")]
    pub max_age: GoDuration,
    /// Jump band, percent (default 20).
    #[serde(default = "default_band")]
    pub jump_band_pct: DecimalString,
    /// Polls after which a symbol no client asked for leaves the union
    /// (default 3, at least 1).
    #[serde(default = "default_forget")]
    pub forget_after_polls: u32,
    /// The symbols the feed may serve (session symbols, e.g. `BTC-USD`),
    /// each mapped by a source's built-in table or its `symbols` overrides;
    /// one that no source maps is skipped ([`FeedConfig::map_symbols`]). A
    /// client asking for a symbol not served gets HTTP 400.
    pub symbols: Vec<String>,
    /// The upstream fallback chain, most preferred first (1 to 5).
    pub sources: Vec<LiveSourceSpec>,
}

fn default_max_age() -> GoDuration {
    Duration::from_secs(60).into()
}
fn default_band() -> DecimalString {
    DecimalString(Decimal::from(20))
}
fn default_forget() -> u32 {
    3
}

/// Shortest poll interval the feed accepts: 100 ms.
pub const MIN_FEED_POLL: Duration = Duration::from_millis(100);

impl FeedConfig {
    /// Read and check a YAML file.
    ///
    /// # Errors
    ///
    /// The file cannot be read, is not the documented shape (the message
    /// names the field), or a value is out of range.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read feed config {}: {e}", path.display()))?;
        let de = serde_yaml::Deserializer::from_str(&text);
        let cfg: Self = serde_path_to_error::deserialize(de)
            .map_err(|e| anyhow::anyhow!("feed config {}: {e}", path.display()))?;
        cfg.check()
            .map_err(|e| anyhow::anyhow!("feed config {}: {e}", path.display()))?;
        Ok(cfg)
    }

    /// Range checks (the sources with the CRD's own rules).
    ///
    /// # Errors
    ///
    /// A message naming the field and what is expected.
    pub fn check(&self) -> Result<(), String> {
        if self.poll_interval.get() < MIN_FEED_POLL {
            return Err(format!(
                "pollInterval {} is too short: expected at least 100ms",
                self.poll_interval
            ));
        }
        if self.max_age.get() < self.poll_interval.get() {
            return Err(format!(
                "maxAge {} is shorter than pollInterval {}: every price would be stale",
                self.max_age, self.poll_interval
            ));
        }
        if self.forget_after_polls == 0 {
            return Err("forgetAfterPolls must be at least 1".into());
        }
        if self.symbols.is_empty() {
            return Err("symbols must list at least one symbol, e.g. [BTC-USD]".into());
        }
        let band = self.jump_band_pct.get();
        if band <= Decimal::ZERO || band > MAX_JUMP_BAND_PCT {
            return Err(format!(
                "jumpBandPct {band} is out of range: expected more than 0 and at most 1000 (percent)"
            ));
        }
        if self.sources.is_empty() || self.sources.len() > MAX_LIVE_SOURCES {
            return Err(format!(
                "sources lists {} source(s): expected 1 to {MAX_LIVE_SOURCES}",
                self.sources.len()
            ));
        }
        for (i, s) in self.sources.iter().enumerate() {
            if self.sources[..i].iter().any(|t| t.name == s.name) {
                return Err(format!("sources[{i}].name {:?} is listed twice", s.name));
            }
            if !(MIN_REQUESTS_PER_MINUTE..=MAX_REQUESTS_PER_MINUTE).contains(&s.requests_per_minute)
            {
                return Err(format!(
                    "sources[{i}].requestsPerMinute {} is out of range: expected \
                     {MIN_REQUESTS_PER_MINUTE} to {MAX_REQUESTS_PER_MINUTE}",
                    s.requests_per_minute
                ));
            }
            if let Some(u) = &s.base_url
                && !is_http_url(u)
            {
                return Err(format!(
                    "sources[{i}].baseUrl {u:?} is not an http:// or https:// URL with a host"
                ));
            }
        }
        Ok(())
    }

    /// The chain settings.
    pub fn chain_config(&self) -> ChainConfig {
        ChainConfig {
            max_age: self.max_age.get(),
            jump_band_percent: self.jump_band_pct.get(),
            ..ChainConfig::default()
        }
    }

    /// Which configured symbols each source maps (its `symbols` overrides
    /// first, then the built-in table).
    ///
    /// # Errors
    ///
    /// [`LiveError::Config`] for an empty override value. A symbol no
    /// source maps is not an error: it is listed in
    /// [`SymbolPlan::unmapped`].
    pub fn map_symbols(&self) -> Result<SymbolPlan, LiveError> {
        let mut plan = SymbolPlan {
            per_source: vec![Vec::new(); self.sources.len()],
            ..SymbolPlan::default()
        };
        for sym in &self.symbols {
            if plan.served.contains(sym) || plan.unmapped.contains_key(sym) {
                continue;
            }
            let mut reasons = Vec::new();
            for (i, src) in self.sources.iter().enumerate() {
                let kind = match src.kind {
                    LiveSourceKind::CoinGecko => SourceKind::CoinGecko,
                    LiveSourceKind::Binance => SourceKind::Binance,
                };
                match SymbolMap::new(kind, std::slice::from_ref(sym), &src.symbols) {
                    Ok(_) => plan.per_source[i].push(sym.clone()),
                    Err(e @ LiveError::UnknownSymbol { .. }) => {
                        reasons.push(format!("source {:?}: {e}", src.name));
                    }
                    Err(e) => return Err(e),
                }
            }
            if plan.per_source.iter().any(|p| p.contains(sym)) {
                plan.served.push(sym.clone());
            } else {
                plan.unmapped.insert(sym.clone(), reasons.join("; "));
            }
        }
        Ok(plan)
    }

    /// Build the sources, each for the symbols `plan` says it maps, reading
    /// API keys with `env` (a variable name → its value; `std::env::var` in
    /// the binary).
    ///
    /// # Errors
    ///
    /// A client/key error ([`LiveError::Config`], [`LiveError::Client`]);
    /// [`LiveError::UnknownSymbol`] only if `plan` is not this config's.
    pub fn build_sources(
        &self,
        plan: &SymbolPlan,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<Arc<dyn LiveSource>>, LiveError> {
        self.sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let symbols = plan.per_source.get(i).map_or(&[][..], Vec::as_slice);
                let policy = HttpPolicy {
                    requests_per_minute: s.requests_per_minute,
                    ..HttpPolicy::default()
                };
                let key = env(&s.api_key_env()).filter(|k| !k.trim().is_empty());
                let src: Arc<dyn LiveSource> = match s.kind {
                    LiveSourceKind::CoinGecko => {
                        let plan = match key {
                            None => CoinGeckoPlan::Public,
                            Some(k)
                                if s.base_url.as_deref().is_some_and(|u| u.contains("pro-api")) =>
                            {
                                CoinGeckoPlan::Pro(k)
                            }
                            Some(k) => CoinGeckoPlan::Demo(k),
                        };
                        Arc::new(
                            CoinGecko::new(
                                symbols,
                                &s.symbols,
                                plan,
                                s.base_url.as_deref(),
                                policy,
                            )?
                            .with_name(s.name.clone()),
                        )
                    }
                    LiveSourceKind::Binance => Arc::new(
                        Binance::new(symbols, &s.symbols, s.base_url.as_deref(), policy)?
                            .with_name(s.name.clone()),
                    ),
                };
                Ok(src)
            })
            .collect()
    }
}

/// The configured symbols split by whether a source can map them
/// ([`FeedConfig::map_symbols`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymbolPlan {
    /// Symbols at least one source maps, in configuration order: the ones
    /// the feed serves.
    pub served: Vec<String>,
    /// Per source (configuration order), the served symbols it maps.
    pub per_source: Vec<Vec<String>>,
    /// Symbol → why no source maps it (each source's error, `; `-joined).
    pub unmapped: BTreeMap<String, String>,
}
