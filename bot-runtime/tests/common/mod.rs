//! Helpers shared by the engine integration tests.
#![allow(dead_code)]

pub mod feed;
pub mod serve;

use std::path::{Path, PathBuf};
use std::process::Command;

use bot_runtime::{
    config::{SessionPlan, parse_manifests, plan_sessions},
    engine::{Engine, EngineConfig, Step},
    ledger::records::LedgerBatch,
    market::csv::{CandleReader, scan_candle_file},
    types::{Candle, SymbolId},
};

/// The `bot-runtime` binary under test, logging warnings only, with no
/// ledger taken from the environment (`DATABASE_URL`, `PAPERBOT_LEDGER`), so
/// every test names its own ledger.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bot-runtime"));
    c.env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("PAPERBOT_LEDGER");
    c
}

/// A process's output as text (invalid UTF-8 replaced).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A file of the shared market data set (`../shared/data/market` beside the
/// repository). Panics — failing the test, never skipping it — when missing.
pub fn shared_data(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/market")
        .join(name);
    assert!(
        p.is_file(),
        "shared market data {} is missing: these tests need ../shared beside the repository",
        p.display()
    );
    p
}

/// The shared reference results directory.
pub fn shared_reference(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/bench/reference")
        .join(name);
    assert!(p.is_file(), "reference file {} is missing", p.display());
    p
}

/// A file in the repository's `examples/`.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

/// Plan the single session of a manifest given as text, as if it lived in `examples/`.
pub fn plan(yaml: &str) -> SessionPlan {
    let m = parse_manifests(yaml, &example("test.yaml")).expect("manifest parses");
    let mut plans = plan_sessions(&m).expect("manifest is valid");
    assert_eq!(plans.len(), 1);
    plans.remove(0)
}

/// All candles of a CSV file for symbol 0.
pub fn candles(path: &Path, symbol: u16) -> Vec<Candle> {
    let scan = scan_candle_file(path, None).expect("scan");
    CandleReader::open(path, SymbolId(symbol), scan.interval_ms)
        .expect("open")
        .map(|c| c.expect("valid candle"))
        .collect()
}

/// Run candles through a fresh engine; returns the engine and every batch
/// (one per candle when `per_candle`, else one at the end). `each` runs after
/// every candle.
pub fn run_with(
    cfg: EngineConfig,
    candles: impl IntoIterator<Item = Candle>,
    mut each: impl FnMut(&Engine, &Candle),
) -> (Engine, LedgerBatch) {
    let mut engine = Engine::new(cfg);
    let mut all = LedgerBatch::default();
    for c in candles {
        let step = engine.on_candle(&c);
        each(&engine, &c);
        let b = engine.take_batch();
        all.append(b);
        if step == Step::Halted {
            break;
        }
    }
    engine.finish();
    let b = engine.take_batch();
    all.append(b);
    (engine, all)
}

/// The quickstart's account and session around a strategy `spec:` body
/// (indented by 2) and an execution block, on the shared BTC-USD Coinbase file.
pub fn manifest(strategy_spec: &str, execution: &str, extra_session: &str) -> String {
    format!(
        r#"apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata: {{name: acct}}
spec:
  initialBalance: "100000"
---
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {{name: strat}}
spec:
{strategy_spec}
---
apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {{name: bot}}
spec:
  accountRef: {{name: acct}}
  strategyRef: {{name: strat}}
  allocation: "100000"
  symbols: [BTC-USD, LTC-USD]
  marketData:
    source: Replay
    replay:
      files:
        - {{symbol: BTC-USD, path: data/BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv}}
        - {{symbol: LTC-USD, path: data/LTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv}}
  execution:
{execution}
{extra_session}
"#
    )
}
