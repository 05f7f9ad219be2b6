//! Cost of engine checkpoints and of resuming a simulated feed.
//!
//! ```text
//! cargo bench -p bot-runtime --bench checkpoint
//! ```
//!
//! 1. The quickstart session (examples/quickstart.yaml: two symbols, SMA +
//!    momentum + RSI, stops, trailing stop, breakers, autopilot, fees,
//!    slippage, latency, failures) on its three days of Coinbase candles: a
//!    checkpoint after every 97th candle (the runner takes one every 8,192;
//!    the data has 7,774 candles) and,
//!    separately, after every candle (paced runs). Reported: median time of
//!    `Engine::checkpoint`, of `EngineCheckpoint::to_json`, of
//!    `EngineCheckpoint::from_json` + `Engine::restore`, and the JSON size.
//! 2. The simulated feed: skipping 1,000,000 GBM candles (2 symbols) with
//!    `Iterator::nth` versus producing them with `next`.
//!
//! Medians of repeated runs; nothing is asserted (the machine is shared).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bot_runtime::{
    config::{parse_manifests, plan_sessions},
    engine::{Engine, EngineCheckpoint, EngineConfig},
    market::{
        csv::{CandleReader, scan_candle_file},
        merge::MergedFeed,
        simulated::{GbmParams, GbmSource},
    },
    types::{Candle, SymbolId, Timestamp},
};
use rust_decimal::Decimal;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn quickstart() -> (EngineConfig, Vec<Candle>) {
    let path = repo().join("examples/quickstart.yaml");
    let text = std::fs::read_to_string(&path).expect("examples/quickstart.yaml");
    let plans = plan_sessions(&parse_manifests(&text, &path).expect("manifest")).expect("plan");
    let plan = &plans[0];
    let readers: Vec<_> = plan
        .replay
        .iter()
        .map(|r| {
            let s = scan_candle_file(&r.path, None).expect("scan");
            CandleReader::open(&r.path, SymbolId(r.symbol as u16), s.interval_ms).expect("open")
        })
        .collect();
    let candles = MergedFeed::new(readers)
        .map(|c| c.expect("candle"))
        .collect();
    (EngineConfig::from_plan(plan, 3_600_000), candles)
}

/// Checkpoint (and restore) after every `every`th candle.
fn checkpoints(cfg: &EngineConfig, candles: &[Candle], every: usize) {
    let mut take = Vec::new();
    let mut json = Vec::new();
    let mut restore = Vec::new();
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let mut engine = Engine::new(cfg.clone());
        for (i, c) in candles.iter().enumerate() {
            engine.on_candle(c);
            if i % every != every - 1 {
                continue;
            }
            std::hint::black_box(engine.take_batch());
            let t = Instant::now();
            let cp = engine.checkpoint();
            take.push(t.elapsed());
            let t = Instant::now();
            let text = cp.to_json().expect("json");
            json.push(t.elapsed());
            sizes.push(text.len());
            let t = Instant::now();
            let back = Engine::restore(
                cfg.clone(),
                EngineCheckpoint::from_json(&text).expect("parse"),
            )
            .expect("restore");
            restore.push(t.elapsed());
            std::hint::black_box(back);
        }
    }
    sizes.sort_unstable();
    println!(
        "checkpoint every {every} candles ({} taken, 2 symbols): checkpoint() {:?}, to_json {:?}, \
         from_json + restore {:?} (medians); JSON {} bytes (median, max {})",
        take.len(),
        median(&mut take),
        median(&mut json),
        median(&mut restore),
        sizes[sizes.len() / 2],
        sizes[sizes.len() - 1],
    );
}

fn gbm_skip() {
    const N: usize = 1_000_000;
    let params = GbmParams {
        seed: 3,
        initial_price: Decimal::from(100),
        annual_drift: 0.0,
        annual_volatility: 0.8,
        interval_ms: 60_000,
        candles: None,
        start: Timestamp(1_700_000_000_000),
    };
    let (mut skip, mut produce) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let mut src = GbmSource::new(params.clone(), 2);
        let t = Instant::now();
        std::hint::black_box(src.nth(N - 1));
        skip.push(t.elapsed());
        let mut src = GbmSource::new(params.clone(), 2);
        let t = Instant::now();
        for _ in 0..N {
            std::hint::black_box(src.next());
        }
        produce.push(t.elapsed());
    }
    println!(
        "GBM feed, 2 symbols: skip {N} candles with nth {:?}, produce them with next {:?} (medians)",
        median(&mut skip),
        median(&mut produce)
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("checkpoint benchmark: run with `cargo bench -p bot-runtime --bench checkpoint`");
        return;
    }
    let (cfg, candles) = quickstart();
    println!("quickstart session: {} candles", candles.len());
    checkpoints(&cfg, &candles, 97);
    checkpoints(&cfg, &candles, 1);
    gbm_skip();
}
