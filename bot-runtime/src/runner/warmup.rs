//! `warmUp: Klines`: a new live session fetches recent closed candles from
//! an exchange at start and warms its indicators up on them, so that it can
//! decide on its first live candle instead of waiting for the look-back
//! (`slowPeriod + 1` candles of an SMA crossover: 51 hours on 1-hour
//! candles) to fill with recorded ones.
//!
//! # What is fetched, and from where
//!
//! - The source: the first `Binance` source of the chain (its `baseUrl`, its
//!   symbol mapping), with a request budget of its own (the warm-up's
//!   requests do not eat the polling budget). CoinGecko's simple price has
//!   no history, and the shared feed serves last prices only.
//! - Per symbol, one `GET /api/v3/klines?symbol=…&interval=…&limit=N` with
//!   `N` = the strategy's look-back ([`SignalSet::warmup_bars`], at most
//!   [`MAX_KLINES`]) and `interval` = the session's candle interval, which
//!   must be one Binance has (`1s`, `1m` … `1w`). Only candles closed before the
//!   first live candle opens are kept; the interval in progress at the
//!   start is neither fetched again nor invented, so the warmed indicators
//!   skip it (a one-candle hole in their history, never a made-up price).
//! - The candles go to [`Engine::warm_up`](crate::engine::Engine::warm_up):
//!   signal generators only. Nothing is traded, marked or recorded in the
//!   ledger; the checkpoint carries the warmed generators, so a resumed
//!   session never warms up again.
//!
//! When the chain has no Binance source, the interval is not a Binance
//! interval, or a symbol's request fails, that symbol warms up as with
//! `Record` (on live candles, no entry until warm) and the runtime says so
//! in its log; the session still starts.

use paperbot_crds::LiveSourceKind;

use crate::{
    config::{LivePlan, LiveSourcePlan},
    market::live::{Binance, MAX_KLINES, binance_interval},
    signals::SignalSet,
    types::{Candle, SymbolId, Timestamp},
};

use super::live::policy_for;

/// The first Binance source of `plan`'s chain, when its interval is one
/// Binance serves klines for.
///
/// # Errors
/// Why a klines warm-up cannot run (no Binance source; an interval Binance
/// does not have), for the log and the start-up warnings.
pub fn klines_source(plan: &LivePlan) -> Result<&LiveSourcePlan, String> {
    let source = plan
        .sources
        .iter()
        .find(|s| s.kind == LiveSourceKind::Binance)
        .ok_or_else(|| {
            "marketData.live.warmUp Klines needs a Binance source in marketData.live.sources \
             (CoinGecko's simple price has no history); the indicators warm up on live \
             candles instead, as with Record"
                .to_string()
        })?;
    if binance_interval(plan.interval_ms).is_none() {
        return Err(format!(
            "marketData.live.warmUp Klines: Binance has no {} ms kline interval (expected 1s, \
             1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, 1d, 3d or 1w); the indicators warm up \
             on live candles instead, as with Record",
            plan.interval_ms
        ));
    }
    Ok(source)
}

/// Candles a strategy's signals need before they all give a reading (its
/// look-back), capped at one klines request ([`MAX_KLINES`]); 0 when no
/// generator is configured.
pub fn bars_needed(signals: &paperbot_crds::SignalsSpec) -> u16 {
    let bars = SignalSet::new(signals).warmup_bars();
    u16::try_from(bars).unwrap_or(MAX_KLINES).min(MAX_KLINES)
}

/// What a klines warm-up fetched.
#[derive(Clone, Debug, Default)]
pub struct WarmUpHistory {
    /// Name of the source asked.
    pub source: String,
    /// Closed candles, per symbol in time order, symbols in session order.
    pub candles: Vec<Candle>,
    /// Per session symbol: candles fetched, or why none.
    pub per_symbol: Vec<(String, Result<usize, String>)>,
}

/// Fetch the last `bars` closed candles of every symbol of `symbols`
/// (session order = [`SymbolId`]) with the session's interval from the
/// first Binance source of `plan`, keeping those closed by `before` (the
/// open of the first live candle). One request per symbol, all at once.
///
/// # Errors
/// As [`klines_source`]; a message when the source cannot be built (an
/// unknown symbol). A failed request is not an error: it is recorded in
/// [`WarmUpHistory::per_symbol`] and that symbol gets no history.
pub async fn fetch_klines(
    plan: &LivePlan,
    symbols: &[String],
    bars: u16,
    before: Timestamp,
) -> Result<WarmUpHistory, String> {
    let spec = klines_source(plan)?;
    let policy = policy_for(plan, spec.requests_per_minute);
    let source = Binance::new(symbols, &spec.symbols, spec.base_url.as_deref(), policy)
        .map_err(|e| format!("warm-up source {:?}: {e}", spec.name))?
        .with_name(spec.name.clone());
    let now = Timestamp::from_datetime(chrono::Utc::now());
    let requests = symbols.iter().enumerate().map(|(i, sym)| {
        let source = &source;
        async move {
            source
                .klines(sym, SymbolId(i as u16), plan.interval_ms, bars, now)
                .await
        }
    });
    let answers = futures::future::join_all(requests).await;
    let mut out = WarmUpHistory {
        source: spec.name.clone(),
        ..WarmUpHistory::default()
    };
    for (sym, answer) in symbols.iter().zip(answers) {
        match answer {
            Ok(candles) => {
                let kept: Vec<Candle> = candles
                    .into_iter()
                    .filter(|c| c.close_time() <= before)
                    .collect();
                out.per_symbol.push((sym.clone(), Ok(kept.len())));
                out.candles.extend(kept);
            }
            Err(e) => out.per_symbol.push((sym.clone(), Err(e.to_string()))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    };

    use axum::{Router, extract::RawQuery, http::StatusCode, response::IntoResponse};
    use paperbot_crds::WarmUp;
    use rust_decimal_macros::dec;

    use super::*;

    const MIN: i64 = 60_000;

    fn plan(sources: Vec<LiveSourcePlan>, interval_ms: i64) -> LivePlan {
        LivePlan {
            interval_ms,
            poll_interval_ms: 1000,
            max_age_ms: 60_000,
            jump_band_pct: dec!(20),
            warm_up: WarmUp::Klines,
            sources,
            use_shared_feed: false,
        }
    }

    fn source(name: &str, kind: LiveSourceKind, base: Option<String>) -> LiveSourcePlan {
        LiveSourcePlan {
            name: name.into(),
            kind,
            requests_per_minute: 600,
            base_url: base,
            api_key_env: None,
            symbols: Default::default(),
        }
    }

    /// A Binance-shaped `klines` server: `limit` rows of 1-minute candles
    /// ending with the one in progress now (Binance's last row is open);
    /// ETH answers HTTP 400 like an unknown pair. Records the queries.
    async fn klines_server() -> (String, Arc<Mutex<Vec<String>>>, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let queries = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicU64::new(0));
        let (q2, h2) = (queries.clone(), hits.clone());
        let app = Router::new().fallback(move |RawQuery(q): RawQuery| {
            let (queries, hits) = (q2.clone(), h2.clone());
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let q = q.unwrap_or_default();
                queries.lock().unwrap().push(q.clone());
                if q.contains("ETHUSDT") {
                    return (
                        StatusCode::BAD_REQUEST,
                        r#"{"code":-1121,"msg":"Invalid symbol."}"#,
                    )
                        .into_response();
                }
                let limit: i64 = q
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("limit="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                let now = chrono::Utc::now().timestamp_millis();
                let current = now.div_euclid(MIN) * MIN;
                let rows: Vec<String> = (0..limit)
                    .rev()
                    .map(|k| {
                        let open = current - k * MIN;
                        let p = 100 + k;
                        format!(
                            r#"[{open},"{p}.0","{p}.5","{p}.0","{p}.0","1.5",{},"150.0",3,"0.7","70.0","0"]"#,
                            open + MIN - 1
                        )
                    })
                    .collect();
                (
                    [("content-type", "application/json")],
                    format!("[{}]", rows.join(",")),
                )
                    .into_response()
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), queries, hits)
    }

    #[test]
    fn klines_need_a_binance_source_and_a_binance_interval() {
        let gecko = source("gecko", LiveSourceKind::CoinGecko, None);
        let e = klines_source(&plan(vec![gecko.clone()], MIN)).unwrap_err();
        assert!(e.contains("needs a Binance source"), "{e}");
        let binance = source("bn", LiveSourceKind::Binance, None);
        let e = klines_source(&plan(vec![gecko.clone(), binance.clone()], 7_000)).unwrap_err();
        assert!(e.contains("no 7000 ms kline interval"), "{e}");
        let both = plan(vec![gecko, binance], MIN);
        assert_eq!(klines_source(&both).unwrap().name, "bn");
    }

    #[test]
    fn bars_needed_is_the_strategys_look_back_capped_at_one_request() {
        let spec: paperbot_crds::SignalsSpec = serde_json::from_value(
            serde_json::json!({"smaCrossover": {"fastPeriod": 3, "slowPeriod": 20}}),
        )
        .unwrap();
        assert_eq!(bars_needed(&spec), 21);
        let long: paperbot_crds::SignalsSpec = serde_json::from_value(
            serde_json::json!({"smaCrossover": {"fastPeriod": 3, "slowPeriod": 5000}}),
        )
        .unwrap();
        assert_eq!(bars_needed(&long), MAX_KLINES);
        assert_eq!(bars_needed(&paperbot_crds::SignalsSpec::default()), 0);
    }

    /// One request per symbol with the look-back as `limit` and the session
    /// interval; only closed candles before the first live open are kept; a
    /// symbol whose request fails gets none and says why.
    #[tokio::test]
    async fn fetches_closed_klines_per_symbol_and_reports_failures() {
        let (base, queries, hits) = klines_server().await;
        let p = plan(
            vec![
                source(
                    "gecko",
                    LiveSourceKind::CoinGecko,
                    Some("http://127.0.0.1:9".into()),
                ),
                source("bn", LiveSourceKind::Binance, Some(base)),
            ],
            MIN,
        );
        let symbols = vec!["BTC-USD".to_string(), "ETH-USD".to_string()];
        let now = chrono::Utc::now().timestamp_millis();
        let first_open = Timestamp((now.div_euclid(MIN) + 1) * MIN);
        let h = fetch_klines(&p, &symbols, 5, first_open).await.unwrap();
        assert_eq!(h.source, "bn");
        assert_eq!(hits.load(Ordering::SeqCst), 2, "one request per symbol");
        let q = queries.lock().unwrap().clone();
        assert!(
            q.iter().any(|q| q.contains("symbol=BTCUSDT")
                && q.contains("interval=1m")
                && q.contains("limit=5")),
            "{q:?}"
        );
        // 5 rows, the last one still open: 4 closed candles of BTC.
        assert_eq!(h.per_symbol[0], ("BTC-USD".to_string(), Ok(4)));
        assert_eq!(h.candles.len(), 4);
        assert!(h.candles.iter().all(|c| c.symbol == SymbolId(0)));
        assert!(
            h.candles
                .windows(2)
                .all(|w| w[0].open_time < w[1].open_time)
        );
        assert!(h.candles.iter().all(|c| c.close_time() <= first_open));
        assert_eq!(h.candles.last().unwrap().close, dec!(101.0));
        let (sym, eth) = &h.per_symbol[1];
        assert_eq!(sym, "ETH-USD");
        let e = eth.as_ref().unwrap_err();
        assert!(e.contains("400") || e.contains("Invalid symbol"), "{e}");
    }
}
