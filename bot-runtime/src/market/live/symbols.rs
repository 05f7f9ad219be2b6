//! Session symbols (`BASE-QUOTE`, e.g. `BTC-USD`) to each source's own
//! identifiers: CoinGecko coin ids (`bitcoin`) and Binance spot pairs
//! (`BTCUSDT`; USD is quoted in USDT there).

use std::collections::BTreeMap;

use super::LiveError;

/// Which upstream a [`SymbolMap`] maps for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// CoinGecko coin ids (`/simple/price?ids=…`).
    CoinGecko,
    /// Binance spot symbols (`/api/v3/ticker/price?symbols=[…]`).
    Binance,
}

impl SourceKind {
    /// Lower-case name used in errors and counters.
    pub fn name(self) -> &'static str {
        match self {
            Self::CoinGecko => "coingecko",
            Self::Binance => "binance",
        }
    }

    fn example(self) -> &'static str {
        match self {
            Self::CoinGecko => "\"XYZ-USD\": \"xyz-coin-id\"",
            Self::Binance => "\"XYZ-USD\": \"XYZUSDT\"",
        }
    }
}

/// Built-in table: session symbol, CoinGecko id, Binance spot pair.
const BUILT_IN: &[(&str, &str, &str)] = &[
    ("BTC-USD", "bitcoin", "BTCUSDT"),
    ("ETH-USD", "ethereum", "ETHUSDT"),
    ("SOL-USD", "solana", "SOLUSDT"),
    ("BNB-USD", "binancecoin", "BNBUSDT"),
    ("XRP-USD", "ripple", "XRPUSDT"),
    ("ADA-USD", "cardano", "ADAUSDT"),
    ("DOGE-USD", "dogecoin", "DOGEUSDT"),
    ("AVAX-USD", "avalanche-2", "AVAXUSDT"),
    ("DOT-USD", "polkadot", "DOTUSDT"),
    ("LINK-USD", "chainlink", "LINKUSDT"),
    ("LTC-USD", "litecoin", "LTCUSDT"),
    ("TRX-USD", "tron", "TRXUSDT"),
];

/// Session symbol → one source's identifier, resolved once at start.
///
/// Lookups are exact and case-sensitive (`BTC-USD`, not `btc-usd`).
/// Overrides win over the built-in table.
#[derive(Clone, Debug)]
pub struct SymbolMap {
    kind: SourceKind,
    /// session symbol → source id, for the symbols the session trades.
    ids: BTreeMap<String, String>,
}

impl SymbolMap {
    /// Map `symbols` for `kind`, looking in `overrides` (session symbol →
    /// source id) first, then in the built-in table.
    ///
    /// # Errors
    ///
    /// [`LiveError::UnknownSymbol`] for the first symbol with no identifier,
    /// naming the symbol, the source and what is expected;
    /// [`LiveError::Config`] for an empty override value.
    pub fn new<S: AsRef<str>>(
        kind: SourceKind,
        symbols: &[S],
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, LiveError> {
        let mut ids = BTreeMap::new();
        for s in symbols {
            let s = s.as_ref();
            let id = match overrides.get(s) {
                Some(id) if id.trim().is_empty() => {
                    return Err(LiveError::Config(format!(
                        "the {} override for {s:?} is empty (expected an identifier such as {})",
                        kind.name(),
                        kind.example()
                    )));
                }
                Some(id) => id.trim().to_string(),
                None => built_in(kind, s)
                    .ok_or_else(|| LiveError::UnknownSymbol {
                        symbol: s.to_string(),
                        source_name: kind.name(),
                        example: kind.example(),
                        known: BUILT_IN.iter().map(|r| r.0).collect::<Vec<_>>().join(", "),
                    })?
                    .to_string(),
            };
            ids.insert(s.to_string(), id);
        }
        Ok(Self { kind, ids })
    }

    /// Which source this map is for.
    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// The source's identifier for a session symbol (`None` if the symbol was
    /// not given to [`new`](Self::new)).
    pub fn id(&self, symbol: &str) -> Option<&str> {
        self.ids.get(symbol).map(String::as_str)
    }

    /// All session symbols this map knows, sorted.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.ids.keys().map(String::as_str)
    }
}

fn built_in(kind: SourceKind, symbol: &str) -> Option<&'static str> {
    let row = BUILT_IN.iter().find(|r| r.0 == symbol)?;
    Some(match kind {
        SourceKind::CoinGecko => row.1,
        SourceKind::Binance => row.2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_symbols_map_per_source() {
        let none = BTreeMap::new();
        let cg = SymbolMap::new(SourceKind::CoinGecko, &["BTC-USD", "ETH-USD"], &none).unwrap();
        assert_eq!(cg.id("BTC-USD"), Some("bitcoin"));
        assert_eq!(cg.id("ETH-USD"), Some("ethereum"));
        let bn = SymbolMap::new(SourceKind::Binance, &["BTC-USD"], &none).unwrap();
        assert_eq!(bn.id("BTC-USD"), Some("BTCUSDT"));
        assert_eq!(bn.id("ETH-USD"), None);
    }

    #[test]
    fn overrides_win_and_add_symbols() {
        let o = BTreeMap::from([
            ("BTC-USD".to_string(), "BTCFDUSD".to_string()),
            ("PEPE-USD".to_string(), "PEPEUSDT".to_string()),
        ]);
        let bn = SymbolMap::new(SourceKind::Binance, &["BTC-USD", "PEPE-USD"], &o).unwrap();
        assert_eq!(bn.id("BTC-USD"), Some("BTCFDUSD"));
        assert_eq!(bn.id("PEPE-USD"), Some("PEPEUSDT"));
    }

    #[test]
    fn unknown_symbol_names_symbol_source_and_fix() {
        let err = SymbolMap::new(
            SourceKind::CoinGecko,
            &["BTC-USD", "FOO-USD"],
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, LiveError::UnknownSymbol { symbol, source_name, .. }
            if symbol == "FOO-USD" && *source_name == "coingecko")
        );
        let text = err.to_string();
        assert!(text.contains("\"FOO-USD\""), "{text}");
        assert!(text.contains("coingecko"), "{text}");
        assert!(text.contains("override"), "{text}");
        assert!(text.contains("BTC-USD"), "{text}");
        // Case matters: the session's symbols are upper-case.
        assert!(SymbolMap::new(SourceKind::Binance, &["btc-usd"], &BTreeMap::new()).is_err());
    }

    #[test]
    fn empty_override_is_a_config_error() {
        let o = BTreeMap::from([("BTC-USD".to_string(), " ".to_string())]);
        let err = SymbolMap::new(SourceKind::Binance, &["BTC-USD"], &o).unwrap_err();
        assert!(matches!(err, LiveError::Config(_)), "{err}");
    }
}
