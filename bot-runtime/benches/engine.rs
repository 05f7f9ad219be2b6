//! Speed and memory benchmark of the engine and the whole `backtest` process.
//!
//! ```text
//! cargo bench -p bot-runtime --bench engine
//! ```
//!
//! Input: the FTX BTC-PERP month of ../shared/data/market repeated 23 times
//! (1,026,720 one-minute candles, times shifted by 31 days per copy), written
//! once to `target/bench-data/`. Strategy: SMA(10/30) long-only, 0.1 per
//! entry (examples/sma-parity.yaml), full accounting and ledger.
//!
//! Reported (medians over repeated runs; no assertion — machines are shared
//! and noisy):
//! 1. whole process: wall time and peak RSS of
//!    `bot-runtime backtest --data <1M file> --strategy examples/sma-parity.yaml`
//!    (CSV validation + streaming parse, engine, SQLite ledger, report files),
//!    measured first, while the benchmark process is small (a child's
//!    `ru_maxrss` includes the parent's resident pages at fork time);
//! 2. engine loop: candles/s of `Engine::on_candle` + batch hand-off, on
//!    candles already in memory, one thread;
//! 3. decision latency: time to process one tick of 50 symbols (50 candles),
//!    p50 / p99 / max.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use bot_runtime::{
    config::{parse_manifests, plan_sessions},
    engine::{Engine, EngineConfig},
    market::{
        csv::{CandleReader, scan_candle_file},
        simulated::{GbmParams, GbmSource},
    },
    types::{Candle, SymbolId, Timestamp},
};
use rust_decimal::Decimal;

mod common;

use common::{million_candle_file, repo, run_measured};

fn parity_config(symbols: usize) -> EngineConfig {
    let strategy = std::fs::read_to_string(repo().join("examples/sma-parity.yaml")).unwrap();
    let syms: Vec<String> = (0..symbols).map(|i| format!("S{i}")).collect();
    let text = format!(
        "{strategy}\n---\napiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {{name: a}}\nspec: {{initialBalance: \"100000000\"}}\n---\napiVersion: paperbot.io/v1alpha1\nkind: BotSession\nmetadata: {{name: b}}\nspec:\n  accountRef: {{name: a}}\n  strategyRef: {{name: sma-10-30}}\n  allocation: \"100000000\"\n  symbols: {syms:?}\n  marketData: {{source: Simulated, simulated: {{seed: 1, candles: 1}}}}\n"
    );
    let plans =
        plan_sessions(&parse_manifests(&text, &repo().join("examples/bench.yaml")).unwrap())
            .unwrap();
    EngineConfig::from_plan(&plans[0], 3_600_000)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn engine_loop(candles: &[Candle]) {
    let mut rates = Vec::new();
    let mut trades = 0;
    for _ in 0..7 {
        let mut engine = Engine::new(parity_config(1));
        let t = Instant::now();
        for (i, c) in candles.iter().enumerate() {
            engine.on_candle(c);
            if i % 8192 == 8191 {
                std::hint::black_box(engine.take_batch());
            }
        }
        engine.finish();
        let b = engine.take_batch();
        let secs = t.elapsed().as_secs_f64();
        trades = engine.state().fills;
        std::hint::black_box(b);
        rates.push(candles.len() as f64 / secs);
    }
    let mut sorted = rates.clone();
    println!(
        "engine loop: {} candles, {} fills per run: median {:.2} M candles/s (runs: {})",
        candles.len(),
        trades,
        median(&mut sorted) / 1e6,
        rates
            .iter()
            .map(|r| format!("{:.2}", r / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn tick_latency() {
    const SYMBOLS: usize = 50;
    const TICKS: u64 = 20_000;
    let params = GbmParams {
        seed: 7,
        initial_price: Decimal::from(100),
        annual_drift: 0.0,
        annual_volatility: 0.8,
        interval_ms: 60_000,
        candles: Some(TICKS),
        start: Timestamp(1_700_000_000_000),
    };
    let candles: Vec<Candle> = GbmSource::new(params, SYMBOLS).collect();
    let mut engine = Engine::new(parity_config(SYMBOLS));
    let mut lat = Vec::with_capacity(TICKS as usize);
    for tick in candles.chunks(SYMBOLS) {
        let t = Instant::now();
        for c in tick {
            engine.on_candle(c);
        }
        lat.push(t.elapsed());
        if lat.len() % 64 == 0 {
            std::hint::black_box(engine.take_batch());
        }
    }
    lat.sort();
    let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    println!(
        "tick latency, {SYMBOLS} symbols per tick, {} ticks, {} fills: p50 {:?}, p99 {:?}, max {:?}",
        lat.len(),
        engine.state().fills,
        q(0.50),
        q(0.99),
        lat.last().copied().unwrap_or(Duration::ZERO)
    );
}

fn whole_process(file: &Path) {
    let bin = env!("CARGO_BIN_EXE_bot-runtime");
    let work = repo().join("target/bench-data/run");
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for i in 0..5 {
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let (secs, kib) = run_measured(
            Command::new(bin)
                .args(["backtest", "--data"])
                .arg(format!("BTC-PERP={}", file.display()))
                .args(["--quote-volume", "BTC-PERP", "--strategy"])
                .arg(repo().join("examples/sma-parity.yaml"))
                .env("RUST_LOG", "warn")
                .args(["--no-progress", "--name", "bench", "--ledger"])
                .arg(work.join("ledger.db"))
                .arg("--report-dir")
                .arg(work.join("reports"))
                .stdout(std::process::Stdio::null()),
        );
        println!(
            "  run {i}: {secs:.3} s, peak RSS {:.1} MiB",
            kib as f64 / 1024.0
        );
        times.push(secs);
        rss.push(kib as f64 / 1024.0);
    }
    println!(
        "whole process (bot-runtime backtest, 1M candles): median {:.3} s, median peak RSS {:.1} MiB",
        median(&mut times),
        median(&mut rss)
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing special. Run
    // the full benchmark only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("engine benchmark: run with `cargo bench -p bot-runtime --bench engine`");
        return;
    }
    let file = million_candle_file();
    let scan = scan_candle_file(&file, None).unwrap();
    println!("input: {} ({} candles)", file.display(), scan.rows);
    // First, while this process is still small: a child's peak RSS (ru_maxrss)
    // includes the parent's resident pages at fork time.
    whole_process(&file);
    let candles: Vec<Candle> = CandleReader::open(&file, SymbolId(0), scan.interval_ms)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    engine_loop(&candles);
    drop(candles);
    tick_latency();
}
