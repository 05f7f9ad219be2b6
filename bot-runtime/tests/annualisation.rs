//! Sharpe and Sortino are annualised by the sampling actually used: on real
//! 4-hour candles with the default 1-hour snapshot interval the engine takes
//! a snapshot every 4 hours, and the ratios must be annualised with
//! 365 × 6 = 2190 periods a year, not 8760.

mod common;

use bot_runtime::{
    analytics::Analytics,
    engine::{Engine, EngineConfig, Step},
    ledger::records::SnapshotRecord,
};
use rust_decimal::prelude::ToPrimitive;

const HOUR: i64 = 3_600_000;

fn strategy_manifest(csv: &std::path::Path) -> String {
    format!(
        r#"apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata: {{name: acct}}
spec:
  baseCurrency: USDT
  initialBalance: "100000"
---
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {{name: trend}}
spec:
  mode: Custom
  signals:
    smaCrossover: {{fastPeriod: 3, slowPeriod: 12}}
  risk:
    maxPositionSizePct: "80"
---
apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {{name: four-hourly}}
spec:
  accountRef: {{name: acct}}
  strategyRef: {{name: trend}}
  allocation: "100000"
  symbols: [BTC-USDT]
  marketData:
    source: Replay
    replay:
      files: [{{symbol: BTC-USDT, path: {path:?}}}]
  execution: {{feeRatePct: "0.1"}}
"#,
        path = csv.display().to_string()
    )
}

/// Per-period Sharpe and Sortino of `snapshots`, computed the textbook way
/// in two passes: simple returns r_i = e_i / e_{i-1} − 1; Sharpe = mean /
/// sample standard deviation; Sortino = mean / √(Σ min(r, 0)² / n).
fn per_period_ratios(snapshots: &[SnapshotRecord]) -> (f64, f64, usize) {
    let equity: Vec<f64> = snapshots
        .iter()
        .map(|s| s.equity.to_f64().unwrap())
        .collect();
    let r: Vec<f64> = equity.windows(2).map(|w| w[1] / w[0] - 1.0).collect();
    let n = r.len() as f64;
    let mean = r.iter().sum::<f64>() / n;
    let var = r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let downside = (r.iter().map(|x| x.min(0.0).powi(2)).sum::<f64>() / n).sqrt();
    (mean / var.sqrt(), mean / downside, r.len())
}

#[test]
fn four_hour_candles_are_annualised_by_the_four_hour_spacing() {
    let csv = common::shared_data("BTC-USDT_4h_binance_2023-12-30_2024-03-22.csv");
    let plan = common::plan(&strategy_manifest(&csv));
    let cfg = EngineConfig::from_plan(&plan, HOUR);
    let mut engine = Engine::new(cfg);
    let mut analytics = Analytics::new(plan.session.allocation.get(), HOUR);
    let mut snapshots = Vec::new();
    let mut fold = |engine: &mut Engine, analytics: &mut Analytics| {
        let batch = engine.take_batch();
        analytics.on_batch(&batch);
        snapshots.extend(batch.snapshots);
    };
    for c in common::candles(&csv, 0) {
        let step = engine.on_candle(&c);
        fold(&mut engine, &mut analytics);
        assert_ne!(step, Step::Halted);
    }
    engine.finish();
    fold(&mut engine, &mut analytics);
    let summary = analytics.summary(&engine.state(), "Completed");

    // 500 candles: a snapshot at the first candle's open, then one at each
    // 4-hour close, all 4 hours apart (the data has no gap).
    assert_eq!(snapshots.len(), 501);
    assert!(
        snapshots
            .windows(2)
            .all(|w| w[1].time.0 - w[0].time.0 == 4 * HOUR),
        "snapshots are 4 hours apart"
    );
    assert!(
        summary.fills >= 10,
        "the strategy traded: {}",
        summary.fills
    );
    assert_eq!(summary.return_periods, 500);
    assert_eq!(summary.return_period_ms, Some(4 * HOUR));
    assert_eq!(summary.snapshot_interval_ms, HOUR);

    let (sharpe, sortino, n) = per_period_ratios(&snapshots);
    assert_eq!(n, 500);
    let periods_per_year = 365.0 * 24.0 / 4.0;
    let expected_sharpe = sharpe * f64::sqrt(periods_per_year);
    let expected_sortino = sortino * f64::sqrt(periods_per_year);
    let got_sharpe = summary.sharpe_ratio.unwrap();
    let got_sortino = summary.sortino_ratio.unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert!(
        close(got_sharpe, expected_sharpe),
        "{got_sharpe} vs {expected_sharpe}"
    );
    assert!(
        close(got_sortino, expected_sortino),
        "{got_sortino} vs {expected_sortino}"
    );
    // Annualising by the configured hour would have doubled both.
    let hourly = sharpe * f64::sqrt(365.0 * 24.0);
    assert!(close(hourly / got_sharpe, 2.0), "{hourly} vs {got_sharpe}");
}
