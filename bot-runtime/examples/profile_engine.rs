//! Profiling driver: runs the parity strategy over the 1M-candle bench file
//! several times (for `perf record`). Not part of the test suite.
use bot_runtime::{
    config::{parse_manifests, plan_sessions},
    engine::{Engine, EngineConfig},
    market::csv::{CandleReader, scan_candle_file},
    types::SymbolId,
};
fn main() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let file = repo.join("target/bench-data/BTC-PERP_1m_ftx_2022-01_x23.csv");
    let scan = scan_candle_file(&file, None).unwrap();
    let candles: Vec<_> = CandleReader::open(&file, SymbolId(0), scan.interval_ms)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let strategy = std::fs::read_to_string(repo.join("examples/sma-parity.yaml")).unwrap();
    let text = format!(
        "{strategy}\n---\napiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {{name: a}}\nspec: {{initialBalance: \"100000\"}}\n---\napiVersion: paperbot.io/v1alpha1\nkind: BotSession\nmetadata: {{name: b}}\nspec:\n  accountRef: {{name: a}}\n  strategyRef: {{name: sma-10-30}}\n  allocation: \"100000\"\n  symbols: [S]\n  marketData: {{source: Simulated, simulated: {{seed: 1, candles: 1}}}}\n"
    );
    let plans =
        plan_sessions(&parse_manifests(&text, &repo.join("examples/x.yaml")).unwrap()).unwrap();
    for _ in 0..5 {
        let mut e = Engine::new(EngineConfig::from_plan(&plans[0], 3_600_000));
        let t = std::time::Instant::now();
        for (i, c) in candles.iter().enumerate() {
            e.on_candle(c);
            if i % 8192 == 0 {
                std::hint::black_box(e.take_batch());
            }
        }
        println!(
            "{:.2} M/s",
            candles.len() as f64 / t.elapsed().as_secs_f64() / 1e6
        );
    }
}
