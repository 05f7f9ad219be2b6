//! Engine integration tests on real recorded data: parity with the reference
//! engines, exact accounting, determinism, breaker semantics, exact resume
//! from checkpoints after simulated crashes, and arithmetic that no accepted
//! input can break.

mod common;

use bot_runtime::{
    engine::{Engine, EngineCheckpoint, EngineConfig, EngineState, RestoreError, Step},
    ledger::records::{Action, FillReason, FillStatus, LedgerBatch},
    market::{
        csv::{CandleReader, scan_candle_file},
        merge::MergedFeed,
        simulated::{GbmParams, GbmSource},
    },
    types::{Candle, MAX_CASH, MAX_PRICE, MAX_VOLUME, MIN_PRICE, SymbolId, Timestamp},
};
use common::*;
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::str::FromStr;

const PARITY: &str = r#"apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata: {name: acct}
spec:
  initialBalance: "100000"
---
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {name: sma}
spec:
  mode: Custom
  signals:
    smaCrossover: {fastPeriod: 10, slowPeriod: 30}
  risk:
    fixedQuantity: "0.1"
    confidenceThreshold: "0"
---
apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {name: parity}
spec:
  accountRef: {name: acct}
  strategyRef: {name: sma}
  allocation: "100000"
  symbols: [BTC-PERP]
  marketData:
    source: Simulated
    simulated: {seed: 1, candles: 1}
"#;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// SMA(10/30), fixed 0.1, next-open fills, no costs: the 934 round trips and
/// final equity 98,082.85 of ../shared/bench/reference, trade by trade.
#[test]
fn parity_sma_10_30_matches_reference_trade_by_trade() {
    let plan = plan(PARITY);
    let cfg = EngineConfig::from_plan(&plan, 3_600_000);
    let data = candles(&shared_data("BTC-PERP_1m_ftx_2022-01.csv"), 0);
    assert_eq!(data.len(), 44_640);
    let (engine, all) = run_with(cfg, data, |_, _| {});

    let reference = std::fs::read_to_string(shared_reference(
        "sma-10-30_BTC-PERP_1m_ftx_2022-01.trades.csv",
    ))
    .unwrap();
    let expected: Vec<Vec<&str>> = reference
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(expected.len(), 934);
    assert_eq!(all.round_trips.len(), 934, "round trips");
    for (i, (rt, exp)) in all.round_trips.iter().zip(&expected).enumerate() {
        // Times as text; prices, quantity and P&L as exact decimals (the file writes "38.0" for 38).
        let got = (
            rt.entry_time.to_rfc3339(),
            rt.entry_price,
            rt.exit_time.to_rfc3339(),
            rt.exit_price,
            rt.quantity,
            rt.pnl,
        );
        let want = (
            exp[0].to_string(),
            dec(exp[1]),
            exp[2].to_string(),
            dec(exp[3]),
            dec(exp[4]),
            dec(exp[5]),
        );
        assert_eq!(got, want, "round trip {} differs", i + 1);
    }
    let st = engine.state();
    assert_eq!(st.cash, dec("94230.75"));
    assert_eq!(st.equity, dec("98082.85"));
    assert_eq!(st.open_positions, 1);
    assert_eq!(
        engine.portfolio().position(SymbolId(0)).quantity,
        dec("0.1")
    );
    // Every fill is a plain next-open fill: no fee, no slippage.
    assert!(
        all.trades
            .iter()
            .all(|t| t.fee.is_zero() && t.slippage_cost.is_zero())
    );
    assert_eq!(all.trades.len(), 934 * 2 + 1);
}

/// Two symbols, fees, slippage, latency with jitter, random failures, stops,
/// trailing stops, max hold time, breakers and autopilot: the identity
/// `cash + marked positions = initial + realized + unrealized` holds exactly
/// at every snapshot (one per minute) and after every candle.
#[test]
fn accounting_invariant_holds_exactly_at_every_snapshot() {
    let strategy = r#"  mode: Aggressive
  intelLevel: 8
  signals:
    smaCrossover: {fastPeriod: 5, slowPeriod: 20}
    momentum: {period: 10, thresholdPct: "0.2"}
    rsi: {period: 14}
    bollinger: {period: 20, stdDev: "2"}
  risk:
    maxPositionSizePct: "30"
    stopLossPct: "0.8"
    takeProfitPct: "1.2"
    trailingStopPct: "0.6"
    maxHoldTime: "3h"
    confidenceThreshold: "20"
    maxSlippagePct: "0.5"
  circuitBreakers:
    dailyLossPct: "4"
    maxConsecutiveLosses: 4
    maxConsecutiveFailures: 2
    maxDataGap: "10m"
    cooldown: "20m"
  autopilot:
    enabled: true
    learningRate: "0.2"
    performanceWindow: 3
    cooldown: "30m"
    maxDailyAdjustments: 6
    bounds:
      maxPositionSizePct: {min: "5", max: "40"}
      confidenceThreshold: {min: "10", max: "60"}
      stopLossPct: {min: "0.3", max: "2"}
      takeProfitPct: {min: "0.5", max: "3"}"#;
    let plan = plan(&manifest(strategy, FULL_EXECUTION, ""));
    let initial = plan.session.allocation.get();
    let cfg = EngineConfig::from_plan(&plan, 60_000);
    let feed = merged(&plan);
    let mut candles_seen = 0;
    let (engine, all) = run_with(cfg, feed, |e, _| {
        candles_seen += 1;
        e.portfolio().check_invariant().unwrap();
    });
    eprintln!(
        "candles {candles_seen}, fills {}, round trips {}, breaker events {}, adjustments {}, decisions {}",
        all.trades.len(),
        all.round_trips.len(),
        all.breaker_events.len(),
        all.adjustments.len(),
        all.decisions.len()
    );
    assert!(candles_seen > 7_000);
    assert!(
        all.snapshots.len() > 3_000,
        "snapshots: {}",
        all.snapshots.len()
    );
    for s in &all.snapshots {
        assert_eq!(s.equity, s.cash + s.position_value);
        assert_eq!(
            s.cash + s.position_value,
            initial + s.realized_pnl + s.unrealized_pnl,
            "identity broken at {}",
            s.time
        );
    }
    // The run exercised what it claims to.
    let reasons: std::collections::HashSet<_> = all.trades.iter().map(|t| t.reason).collect();
    assert!(
        all.trades.iter().any(|t| t.status == FillStatus::Failed),
        "some orders failed"
    );
    assert!(reasons.contains(&FillReason::StopLoss) || reasons.contains(&FillReason::TrailingStop));
    assert!(
        all.trades
            .iter()
            .any(|t| !t.fee.is_zero() && !t.slippage_cost.is_zero())
    );
    assert!(all.trades.iter().any(|t| t.latency_ms > 800));
    assert!(!all.breaker_events.is_empty());
    assert!(all.round_trips.len() > 20);
    // Realized P&L equals the sum of round-trip P&L (every exit here closes a position).
    let rt_sum: Decimal = all.round_trips.iter().map(|r| r.pnl).sum();
    assert_eq!(rt_sum, engine.portfolio().realized_pnl());
}

fn merged(plan: &bot_runtime::config::SessionPlan) -> impl Iterator<Item = Candle> {
    let readers: Vec<_> = plan
        .replay
        .iter()
        .map(|r| {
            let s = scan_candle_file(&r.path, None).unwrap();
            CandleReader::open(&r.path, SymbolId(r.symbol as u16), s.interval_ms).unwrap()
        })
        .collect();
    MergedFeed::new(readers).map(|c| c.unwrap())
}

fn realistic(seed: u64, failure_pct: &str, jitter: &str) -> bot_runtime::config::SessionPlan {
    let strategy = r#"  signals:
    smaCrossover: {fastPeriod: 5, slowPeriod: 20}
    momentum: {period: 10, thresholdPct: "0.2"}
  risk:
    confidenceThreshold: "30""#;
    let execution = format!(
        "    feeRatePct: \"0.1\"\n    slippage: {{baseBps: \"2\", impactPct: \"5\"}}\n    latency: \"2s\"\n    latencyJitter: \"{jitter}\"\n    failureRatePct: \"{failure_pct}\"\n    seed: {seed}"
    );
    plan(&manifest(strategy, &execution, ""))
}

/// Same inputs and seed → identical records; without configured randomness the
/// seed changes nothing; with it, the seed changes fills.
#[test]
fn determinism_and_seed_only_matters_where_randomness_is_configured() {
    let run = |p: &bot_runtime::config::SessionPlan| {
        let cfg = EngineConfig::from_plan(p, 3_600_000);
        run_with(cfg, merged(p), |_, _| {}).1
    };
    let a = run(&realistic(1, "5", "30s"));
    assert!(a.trades.len() > 20);
    assert_eq!(a, run(&realistic(1, "5", "30s")), "same seed, same records");
    assert_ne!(
        a.trades,
        run(&realistic(2, "5", "30s")).trades,
        "a different seed changes fills when failures and jitter are on"
    );
    let quiet1 = run(&realistic(1, "0", "0s"));
    let quiet2 = run(&realistic(2, "0", "0s"));
    assert_eq!(
        quiet1, quiet2,
        "no randomness configured: the seed is irrelevant"
    );
    assert!(quiet1.trades.iter().all(|t| t.status == FillStatus::Filled));
}

fn candle(i: i64, open: i64, close: i64) -> Candle {
    Candle {
        symbol: SymbolId(0),
        open_time: Timestamp(1_700_000_000_000 + i * 60_000),
        interval_ms: 60_000,
        open: Decimal::from(open),
        high: Decimal::from(open.max(close)),
        low: Decimal::from(open.min(close)),
        close: Decimal::from(close),
        volume: Decimal::from(1000),
    }
}

/// An open circuit breaker refuses new entries but a stop-loss still closes
/// the position.
#[test]
fn open_breaker_blocks_entries_but_not_stop_loss_exits() {
    let yaml = PARITY
        .replace("fastPeriod: 10, slowPeriod: 30", "fastPeriod: 2, slowPeriod: 4")
        .replace(
            "    confidenceThreshold: \"0\"",
            "    confidenceThreshold: \"0\"\n    stopLossPct: \"5\"\n  circuitBreakers:\n    maxDataGap: \"5m\"\n    cooldown: \"24h\"",
        )
        .replace("fixedQuantity: \"0.1\"", "fixedQuantity: \"1\"");
    let cfg = EngineConfig::from_plan(&plan(&yaml), 3_600_000);
    let closes = [100, 99, 98, 97, 96, 95, 97, 99, 101, 103];
    let mut data = Vec::new();
    let mut prev = 100;
    for (i, c) in closes.iter().enumerate() {
        data.push(candle(i as i64, prev, *c));
        prev = *c;
    }
    // A 10-minute silence trips the price-feed breaker; then the price falls through the stop.
    let after_gap = [102, 90, 88, 86, 84, 86, 90, 95, 100, 105, 110];
    for (i, c) in (closes.len() as i64 + 9..).zip(after_gap) {
        data.push(candle(i, prev, c));
        prev = c;
    }
    let (_, all) = run_with(cfg, data, |_, _| {});
    let opened = all
        .breaker_events
        .iter()
        .find(|e| e.breaker == "priceFeed" && e.to_state == "Open")
        .expect("price-feed breaker opened");
    let buys: Vec<_> = all
        .trades
        .iter()
        .filter(|t| t.side == bot_runtime::types::Side::Buy)
        .collect();
    assert_eq!(buys.len(), 1, "one entry before the breaker");
    assert!(buys[0].time < opened.time);
    let stop = all
        .trades
        .iter()
        .find(|t| t.reason == FillReason::StopLoss)
        .expect("stop-loss exit ran while the breaker was open");
    assert!(stop.time >= opened.time);
    // Cross up on the close 99 → entry at the next open, 99; stop 99 × 0.95 = 94.05;
    // the falling candle opened above the stop, so it fills at the stop level.
    assert_eq!(buys[0].fill_price, dec("99"));
    assert_eq!(stop.fill_price, dec("94.05"));
    let skipped = all
        .decisions
        .iter()
        .find(|d| d.action == Action::Skip && d.time > opened.time)
        .expect("a later buy signal was skipped");
    assert!(
        skipped.reason.contains("circuit breaker priceFeed is open"),
        "{}",
        skipped.reason
    );
}

/// The account's kill switch halts the session and liquidates its positions.
#[test]
fn account_kill_switch_halts_and_liquidates() {
    let strategy = r#"  mode: Aggressive
  signals:
    smaCrossover: {fastPeriod: 3, slowPeriod: 8}
  risk:
    maxPositionSizePct: "90"
    confidenceThreshold: "0"
    stopLossPct: "50""#;
    let yaml = manifest(strategy, "    feeRatePct: \"0.2\"", "").replace(
        "  initialBalance: \"100000\"",
        "  initialBalance: \"100000\"\n  limits: {maxDrawdownPct: \"1\"}",
    );
    let p = plan(&yaml);
    let cfg = EngineConfig::from_plan(&p, 3_600_000);
    let mut halted_at = None;
    let (engine, all) = run_with(cfg, merged(&p), |e, c| {
        if halted_at.is_none() && e.breakers().halted().is_some() {
            halted_at = Some(c.close_time());
        }
    });
    let halted_at = halted_at.expect("the 1% account drawdown limit halts the session");
    let trip = all
        .breaker_events
        .iter()
        .find(|e| e.breaker == "accountMaxDrawdown")
        .expect("kill-switch event");
    assert_eq!(trip.to_state, "Open");
    assert_eq!(
        engine.portfolio().open_positions(),
        0,
        "positions liquidated"
    );
    assert_eq!(
        engine.state().now,
        halted_at,
        "nothing processed after the halt"
    );
    let last = all.trades.last().unwrap();
    if last.reason == FillReason::Liquidation {
        assert_eq!(last.time, halted_at);
        assert!(last.position_after.is_zero());
    }
    engine.portfolio().check_invariant().unwrap();
}

/// In a live-style feed a bad tick is skipped and counted, and persistent bad
/// data trips the price-feed breaker (default: 3 invalid ticks in a row).
#[test]
fn bad_ticks_are_skipped_counted_and_trip_the_price_feed_breaker() {
    let cfg = EngineConfig::from_plan(&plan(PARITY), 3_600_000);
    let mut data: Vec<Candle> = (0..5).map(|i| candle(i, 100, 101)).collect();
    let mut bad = candle(5, 100, 101);
    bad.high = Decimal::from(90); // high below low
    data.push(bad);
    let mut backwards = candle(1, 100, 101); // time goes backwards
    backwards.close = Decimal::from(102);
    data.push(backwards);
    let mut negative = candle(6, 100, 101);
    negative.low = Decimal::from(-1); // non-positive price
    data.push(negative);
    data.push(candle(7, 101, 102));
    let (engine, all) = run_with(cfg, data, |_, _| {});
    let st = engine.state();
    assert_eq!(st.rejected_ticks, 3);
    assert_eq!(st.bars, 6, "only valid candles are traded on");
    let trip = all
        .breaker_events
        .iter()
        .find(|e| e.breaker == "priceFeed" && e.to_state == "Open")
        .expect("three invalid ticks in a row trip the price-feed breaker");
    assert!(trip.reason.contains('3'), "{}", trip.reason);
    // The portfolio was never marked at a bad price.
    assert_eq!(all.snapshots.last().unwrap().equity, Decimal::from(100_000));
}

/// Every cost and every source of randomness, stops, trailing stops, max
/// hold time, breakers (the price-feed breaker trips on the data's 7-hour
/// outage) and an autopilot that adjusts often.
const FULL_STRATEGY: &str = r#"  mode: Aggressive
  intelLevel: 8
  signals:
    smaCrossover: {fastPeriod: 5, slowPeriod: 20}
    momentum: {period: 10, thresholdPct: "0.2"}
    rsi: {period: 14}
    bollinger: {period: 20, stdDev: "2"}
  risk:
    maxPositionSizePct: "30"
    stopLossPct: "0.8"
    takeProfitPct: "1.2"
    trailingStopPct: "0.6"
    maxHoldTime: "12m"
    confidenceThreshold: "20"
    maxSlippagePct: "0.5"
  circuitBreakers:
    dailyLossPct: "4"
    maxDrawdownPct: "3"
    maxConsecutiveLosses: 4
    maxConsecutiveFailures: 2
    maxDataGap: "10m"
    cooldown: "20m"
  autopilot:
    enabled: true
    learningRate: "0.2"
    aggressiveness: "0.8"
    performanceWindow: 3
    cooldown: "30m"
    maxDailyAdjustments: 6
    autoDisableAfter: 50
    bounds:
      maxPositionSizePct: {min: "5", max: "40"}
      confidenceThreshold: {min: "10", max: "60"}
      stopLossPct: {min: "0.3", max: "2"}
      takeProfitPct: {min: "0.5", max: "3"}"#;

const FULL_EXECUTION: &str = r#"    feeRatePct: "0.1"
    slippage: {baseBps: "3", impactPct: "1"}
    gasCost: "0.35"
    latency: "800ms"
    latencyJitter: "40s"
    failureRatePct: "7"
    seed: 9"#;

fn full_plan() -> bot_runtime::config::SessionPlan {
    plan(&manifest(
        FULL_STRATEGY,
        FULL_EXECUTION,
        "  recordHolds: true",
    ))
}

/// Everything a run committed, and its final figures.
struct Run {
    records: LedgerBatch,
    state: EngineState,
    /// Restores performed.
    restores: usize,
}

/// Run a session the way the runner does — commit a batch and its
/// checkpoint (as JSON text) every `batch_every` candles — and "kill" it
/// right before each candle index in `crashes`: whatever was not committed
/// is lost, a new engine is restored from the last committed checkpoint and
/// the feed is rebuilt by skipping the candles that checkpoint had consumed
/// (`feed(skip)`).
fn run_with_crashes<F, I>(cfg: &EngineConfig, mut feed: F, batch_every: u64, crashes: &[u64]) -> Run
where
    F: FnMut(u64) -> I,
    I: Iterator<Item = Candle>,
{
    let mut crashes: Vec<u64> = crashes.to_vec();
    crashes.sort_unstable();
    crashes.dedup();
    let mut crashes = crashes.into_iter().peekable();
    let mut engine = Engine::new(cfg.clone());
    let mut committed = LedgerBatch::default();
    let mut last_json = engine.checkpoint().to_json().unwrap();
    let mut restores = 0;
    let mut pos = 0u64;
    let mut candles = feed(0);
    loop {
        if crashes.peek() == Some(&pos) {
            crashes.next();
            // kill -9: the engine and everything after the last commit are gone.
            let cp = EngineCheckpoint::from_json(&last_json).unwrap();
            pos = cp.candles_consumed();
            engine = Engine::restore(cfg.clone(), cp).unwrap();
            assert_eq!(
                engine.checkpoint().to_json().unwrap(),
                last_json,
                "a restored engine's checkpoint is the checkpoint it came from"
            );
            candles = feed(pos);
            restores += 1;
            continue;
        }
        let Some(c) = candles.next() else { break };
        let step = engine.on_candle(&c);
        pos += 1;
        if pos.is_multiple_of(batch_every) || step != Step::Continue {
            let (b, cp) = engine.take_batch_and_checkpoint();
            committed.append(b);
            assert_eq!(cp.candles_consumed(), pos);
            assert_eq!(
                cp.state(),
                engine.state(),
                "figures from the checkpoint alone"
            );
            last_json = cp.to_json().unwrap();
        }
        if step != Step::Continue {
            break;
        }
    }
    engine.finish();
    committed.append(engine.take_batch());
    Run {
        records: committed,
        state: engine.state(),
        restores,
    }
}

/// The first record that differs between two runs, compared as JSON text
/// (decimals keep their scale, so "identical" includes the digits a ledger
/// stores), or `None` when every record and the final cash and time match.
fn first_divergence(got: &LedgerBatch, want: &LedgerBatch) -> Option<String> {
    fn rows<T: serde::Serialize>(v: &[T]) -> Vec<String> {
        v.iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect()
    }
    let tables = [
        ("decisions", rows(&got.decisions), rows(&want.decisions)),
        ("trades", rows(&got.trades), rows(&want.trades)),
        (
            "round trips",
            rows(&got.round_trips),
            rows(&want.round_trips),
        ),
        (
            "breaker events",
            rows(&got.breaker_events),
            rows(&want.breaker_events),
        ),
        (
            "adjustments",
            rows(&got.adjustments),
            rows(&want.adjustments),
        ),
        (
            "outcomes",
            rows(&got.adjustment_outcomes),
            rows(&want.adjustment_outcomes),
        ),
        ("snapshots", rows(&got.snapshots), rows(&want.snapshots)),
        ("positions", rows(&got.positions), rows(&want.positions)),
    ];
    for (name, g, w) in tables {
        if let Some(i) = (0..g.len().max(w.len())).find(|&i| g.get(i) != w.get(i)) {
            return Some(format!(
                "{name}[{i}] of {}/{}:\n  got  {:?}\n  want {:?}",
                g.len(),
                w.len(),
                g.get(i),
                w.get(i)
            ));
        }
    }
    let (gc, wc) = (got.cash.to_string(), want.cash.to_string());
    (gc != wc || got.time != want.time).then(|| {
        format!(
            "final cash/time {gc} {:?} != {wc} {:?}",
            got.time, want.time
        )
    })
}

fn replay_candles() -> Vec<Candle> {
    merged(&full_plan()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// A replay with every cost and randomness on, killed before random
    /// candles (1 to 8 times) and resumed from the last committed
    /// checkpoint, commits exactly the records (as text) and ends with
    /// exactly the figures of an uninterrupted run.
    #[test]
    fn replay_resumed_after_crashes_matches_the_uninterrupted_run(
        batch_every in prop_oneof![Just(1u64), 2u64..64, 64u64..2_000],
        crash_points in prop::collection::vec(0.0f64..1.0, 1..8),
    ) {
        let cfg = EngineConfig::from_plan(&full_plan(), 60_000);
        let candles = replay_candles();
        let crashes: Vec<u64> = crash_points
            .iter()
            .map(|f| (f * candles.len() as f64) as u64)
            .collect();
        let feed = |skip: u64| candles.clone().into_iter().skip(skip as usize);
        let reference = run_with_crashes(&cfg, feed, batch_every, &[]);
        let resumed = run_with_crashes(&cfg, feed, batch_every, &crashes);
        prop_assert!(resumed.restores >= 1);
        prop_assert_eq!(first_divergence(&resumed.records, &reference.records), None);
        prop_assert_eq!(resumed.state, reference.state);
    }

    /// The same on simulated (GBM) candles, the feed resumed with
    /// `Iterator::nth` as the runner does.
    #[test]
    fn simulated_session_resumed_after_crashes_matches_the_uninterrupted_run(
        seed in 0u64..1_000,
        batch_every in 1u64..500,
        crashes in prop::collection::vec(0u64..6_000, 1..6),
    ) {
        let cfg = EngineConfig::from_plan(&full_plan(), 300_000);
        let params = GbmParams {
            seed,
            initial_price: Decimal::from(100),
            annual_drift: 0.0,
            annual_volatility: 1.5,
            interval_ms: 60_000,
            candles: Some(3_000),
            start: Timestamp(1_700_000_000_000),
        };
        let feed = |skip: u64| {
            let mut src = GbmSource::new(params.clone(), 2);
            if skip > 0 {
                src.nth(skip as usize - 1);
            }
            src
        };
        let reference = run_with_crashes(&cfg, feed, batch_every, &[]);
        let resumed = run_with_crashes(&cfg, feed, batch_every, &crashes);
        prop_assert!(reference.records.trades.len() > 10);
        prop_assert_eq!(first_divergence(&resumed.records, &reference.records), None);
        prop_assert_eq!(resumed.state, reference.state);
    }
}

/// The replay scenario of the property above exercises what it claims:
/// autopilot adjustments and verdicts, breaker trips (the price feed on the
/// outage among them), failed orders, stop, trailing-stop, take-profit and
/// max-hold exits, pending orders and open positions across checkpoints.
#[test]
fn the_resume_scenario_exercises_every_feature() {
    let cfg = EngineConfig::from_plan(&full_plan(), 60_000);
    let run = run_with_crashes(
        &cfg,
        |skip| replay_candles().into_iter().skip(skip as usize),
        97,
        &[],
    );
    // Crashes before the first candle, before the first commit, right at and
    // right after a commit.
    let early = run_with_crashes(
        &cfg,
        |skip| replay_candles().into_iter().skip(skip as usize),
        97,
        &[0, 1, 96, 97, 98],
    );
    assert_eq!(early.restores, 5);
    assert_eq!(first_divergence(&early.records, &run.records), None);
    assert_eq!(early.state, run.state);
    let r = &run.records;
    eprintln!(
        "trades {}, round trips {}, breaker events {}, adjustments {}, outcomes {}, decisions {}, snapshots {}",
        r.trades.len(),
        r.round_trips.len(),
        r.breaker_events.len(),
        r.adjustments.len(),
        r.adjustment_outcomes.len(),
        r.decisions.len(),
        r.snapshots.len()
    );
    assert!(
        r.adjustments.len() >= 3,
        "autopilot adjustments: {}",
        r.adjustments.len()
    );
    assert!(!r.adjustment_outcomes.is_empty(), "verdicts on adjustments");
    let opened = |name: &str| {
        r.breaker_events
            .iter()
            .any(|e| e.breaker == name && e.to_state == "Open")
    };
    assert!(
        opened("priceFeed"),
        "the outage trips the price-feed breaker"
    );
    assert!(
        r.breaker_events
            .iter()
            .any(|e| e.breaker == "priceFeed" && e.reason.starts_with("data gap")),
        "tripped by the gap"
    );
    assert!(
        [
            "consecutiveFailures",
            "consecutiveLosses",
            "maxDrawdown",
            "dailyLoss"
        ]
        .iter()
        .any(|b| opened(b)),
        "a strategy breaker trips"
    );
    assert!(
        r.trades.iter().any(|t| t.status == FillStatus::Failed),
        "failed orders"
    );
    for reason in [
        FillReason::StopLoss,
        FillReason::TrailingStop,
        FillReason::TakeProfit,
        FillReason::MaxHoldTime,
    ] {
        assert!(
            r.trades
                .iter()
                .any(|t| t.reason == reason && t.status == FillStatus::Filled),
            "{reason:?} exits"
        );
    }
    assert!(
        r.trades.iter().any(|t| t.latency_ms > 800),
        "jittered latency"
    );
    assert!(
        r.decisions.iter().any(|d| d.action == Action::Hold),
        "holds recorded"
    );
    // Checkpoints are taken with orders pending and positions open.
    let mut engine = Engine::new(cfg.clone());
    let (mut pending, mut open) = (0, 0);
    for c in replay_candles() {
        engine.on_candle(&c);
        engine.take_batch();
        let json = engine.checkpoint().to_json().unwrap();
        pending += usize::from(json.contains("\"pending\":{"));
        open += usize::from(engine.portfolio().open_positions() > 0);
    }
    assert!(
        pending > 100 && open > 100,
        "pending {pending}, open {open}"
    );
}

/// `restore` refuses, with the reason, a checkpoint of another version, of
/// another configuration, with records still pending, or damaged.
#[test]
fn restore_refuses_foreign_stale_and_damaged_checkpoints() {
    let cfg = EngineConfig::from_plan(&full_plan(), 60_000);
    let mut engine = Engine::new(cfg.clone());
    for c in replay_candles().into_iter().take(3_000) {
        engine.on_candle(&c);
    }
    let unflushed = engine.checkpoint();
    match Engine::restore(cfg.clone(), unflushed) {
        Err(RestoreError::Unflushed(n)) => assert!(n > 0),
        other => panic!("expected Unflushed, got {:?}", other.err()),
    }
    let (_, cp) = engine.take_batch_and_checkpoint();
    let json = cp.to_json().unwrap();
    let edit = |from: &str, to: &str| {
        assert!(json.contains(from), "{from} is in the checkpoint");
        EngineCheckpoint::from_json(&json.replacen(from, to, 1))
    };
    let err = |r: Result<EngineCheckpoint, RestoreError>| match r {
        Ok(cp) => Engine::restore(cfg.clone(), cp)
            .err()
            .expect("refused")
            .to_string(),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        err(edit("{\"version\":1,", "{\"version\":2,")),
        "checkpoint format version 2 is not supported: this runtime reads version 1"
    );
    let mut other = cfg.clone();
    other.execution.seed = 10;
    assert_eq!(
        Engine::restore(other, cp.clone())
            .err()
            .unwrap()
            .to_string(),
        "the session's configuration changed since the checkpoint: execution.seed was 9, now 10"
    );
    let mut other = cfg.clone();
    other.symbols.reverse();
    assert!(
        Engine::restore(other, cp.clone())
            .err()
            .unwrap()
            .to_string()
            .starts_with("the session's configuration changed since the checkpoint: symbols[0] was \"BTC-USD\", now \"LTC-USD\"")
    );
    let e = err(edit("\"cash\":\"", "\"cash\":\"1"));
    assert!(
        e.starts_with("corrupt checkpoint: portfolio: the accounting identity does not hold"),
        "{e}"
    );
    let e = err(edit(
        "\"failureWordPos\":",
        "\"failureWordPos\":999999999999999999999999",
    ));
    assert!(e.contains("failureWordPos"), "{e}");
    let e = err(edit("\"window\":[", "\"window\":[\"1\","));
    assert!(
        e.starts_with(
            "corrupt checkpoint: symbols[0].signals: smaCrossover state has a window of 21 closes"
        ),
        "{e}"
    );
    let e = err(edit("\"fills\":", "\"fills\":9"));
    assert!(
        e.starts_with("corrupt checkpoint: counters disagree"),
        "{e}"
    );
    let e = err(edit("\"bars\":", "\"bogus\":1,\"bars\":"));
    assert!(
        e.starts_with("the checkpoint is not valid checkpoint JSON: unknown field `bogus`"),
        "{e}"
    );
    let e = err(EngineCheckpoint::from_json("{\"version\":1"));
    assert!(
        e.starts_with("the checkpoint is not valid checkpoint JSON"),
        "{e}"
    );
    // The untouched checkpoint restores.
    assert!(Engine::restore(cfg, cp).is_ok());
}

/// A price within the accepted range (1e-12 to 1e12) with up to 28
/// significant digits and 28 decimal places.
fn any_price() -> impl Strategy<Value = Decimal> {
    let clamp = |p: Decimal| p.max(MIN_PRICE).min(MAX_PRICE);
    prop_oneof![
        4 => (any::<u128>(), 0u32..=28).prop_map(move |(m, s)| {
            clamp(Decimal::from_i128_with_scale((m % (1 << 96)) as i128, s))
        }),
        3 => (1i64..1_000, 0u32..=24).prop_map(move |(m, s)| clamp(Decimal::new(m, s))),
        1 => Just(MIN_PRICE),
        1 => Just(MAX_PRICE),
    ]
}

/// A volume from 0 to 1e18 with up to 28 decimal places.
fn any_volume() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        (any::<u128>(), 0u32..=28).prop_map(|(m, s)| {
            Decimal::from_i128_with_scale((m % (1 << 96)) as i128, s).min(MAX_VOLUME)
        }),
        Just(Decimal::ZERO),
        Just(MAX_VOLUME),
    ]
}

/// How the next candle of a symbol moves from its previous close.
#[derive(Clone, Debug)]
enum Move {
    /// Four fresh prices anywhere in the range.
    Jump([Decimal; 4]),
    /// `close = previous close × factor` (clamped to the range), repeated `n` times.
    Run(Decimal, u8),
}

fn any_move() -> impl Strategy<Value = Move> {
    prop_oneof![
        2 => prop::array::uniform4(any_price()).prop_map(Move::Jump),
        3 => (
            prop_oneof![
                Just(Decimal::TWO),
                Just(Decimal::from(10)),
                Just(Decimal::new(5, 1)),
                Just(Decimal::new(1, 1)),
                Just(Decimal::new(10_000_001, 7)),
            ],
            1u8..90
        )
            .prop_map(|(f, n)| Move::Run(f, n)),
    ]
}

/// Candles for two symbols from `moves` (symbol, move, volume, minutes to
/// the next candle: 0 repeats a time — a bad tick — and large values are gaps).
fn candles_from(moves: &[(u16, Move, Decimal, i64)]) -> Vec<Candle> {
    let mut close = [Decimal::ONE; 2];
    let mut time = [1_700_000_000_000i64; 2];
    let mut out = Vec::new();
    for (sym, mv, volume, step) in moves {
        let s = usize::from(*sym);
        let bars: Vec<[Decimal; 4]> = match mv {
            Move::Jump(p) => vec![*p],
            Move::Run(f, n) => (0..*n)
                .map(|_| {
                    let open = close[s];
                    let next = open
                        .checked_mul(*f)
                        .unwrap_or(MAX_PRICE)
                        .max(MIN_PRICE)
                        .min(MAX_PRICE);
                    close[s] = next;
                    [open, next, open, next]
                })
                .collect(),
        };
        for mut p in bars {
            p.sort();
            let (open, close_px) = if p[1] < p[2] {
                (p[1], p[2])
            } else {
                (p[2], p[1])
            };
            close[s] = close_px;
            out.push(Candle {
                symbol: SymbolId(*sym),
                open_time: Timestamp(time[s]),
                interval_ms: 60_000,
                open,
                high: p[3],
                low: p[0],
                close: close_px,
                volume: *volume,
            });
            time[s] += step * 60_000;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Arbitrary candles within the accepted ranges (extreme magnitudes,
    /// long runs of doubling or tenfold prices, tiny prices with the largest
    /// allocation, 28-digit decimals, bad ticks, gaps) through an engine
    /// with every feature on: never a panic; the accounting identity holds
    /// exactly after every candle and at every snapshot (a refused
    /// operation leaves the books as they were); once the engine stops for
    /// range reasons it says why and stays stopped; and its checkpoint
    /// restores.
    #[test]
    fn no_accepted_input_breaks_the_engine(
        moves in prop::collection::vec(
            (0u16..2, any_move(), any_volume(), prop_oneof![8 => Just(1i64), 1 => Just(0i64), 1 => 2i64..400]),
            1..60,
        ),
        cash in prop_oneof![
            Just(MAX_CASH),
            Just(Decimal::new(1, 8)),
            Just(Decimal::ONE),
            Just(Decimal::new(12_345_678_912_345_678, 8)),
            Just(Decimal::from(1_000_000_000_000i64)),
        ],
        fixed in prop_oneof![
            3 => Just(None),
            1 => Just(Some(Decimal::new(1, 8))),
            1 => Just(Some(Decimal::ONE)),
            1 => Just(Some(MAX_CASH)),
        ],
        gas in prop_oneof![Just(Decimal::ZERO), Just(Decimal::new(35, 2)), Just(MAX_CASH)],
        kill_switch in any::<bool>(),
        extreme in any::<bool>(),
    ) {
        let mut cfg = EngineConfig::from_plan(&full_plan(), 3_600_000);
        if extreme {
            // Settings validation accepts today without an upper bound.
            let huge = paperbot_crds::DecimalString(Decimal::from_i128_with_scale(10i128.pow(27), 0));
            cfg.params.tunable.take_profit_pct = Some(huge.0);
            cfg.execution.fee_rate_pct = Some(paperbot_crds::DecimalString(Decimal::ONE_HUNDRED));
            cfg.execution.slippage = Some(paperbot_crds::SlippageSpec {
                base_bps: Some(huge),
                impact_pct: Some(paperbot_crds::DecimalString(Decimal::ONE_HUNDRED)),
            });
        }
        cfg.initial_cash = cash;
        cfg.params.risk.fixed_quantity = fixed;
        cfg.params.risk.max_slippage_pct = None;
        cfg.params.tunable.confidence_threshold = Decimal::ONE;
        cfg.execution.gas_cost = Some(paperbot_crds::DecimalString(gas));
        if kill_switch {
            cfg.params.breakers.account_max_drawdown_pct = Some(Decimal::from(50));
        }
        let candles = candles_from(&moves);
        let mut engine = Engine::new(cfg.clone());
        let mut all = LedgerBatch::default();
        let mut stopped: Option<Step> = None;
        for c in &candles {
            let step = engine.on_candle(c);
            if let Some(s) = stopped {
                prop_assert_eq!(step, s, "a stopped engine stays stopped");
            } else if step != Step::Continue {
                stopped = Some(step);
            }
            if step == Step::Failed {
                prop_assert!(engine.failure().is_some_and(|f| f.contains(": ")), "{:?}", engine.failure());
            }
            if let Err(e) = engine.portfolio().check_invariant() {
                prop_assert!(false, "identity broken after {:?}: {}", c, e);
            }
            all.append(engine.take_batch());
        }
        engine.finish();
        all.append(engine.take_batch());
        for s in &all.snapshots {
            prop_assert_eq!(s.equity, s.cash + s.position_value);
            prop_assert_eq!(
                s.cash + s.position_value,
                cash + s.realized_pnl + s.unrealized_pnl,
                "identity at the snapshot of {}", s.time
            );
        }
        let json = engine.checkpoint().to_json().unwrap();
        let restored = Engine::restore(cfg, EngineCheckpoint::from_json(&json).unwrap());
        prop_assert!(restored.is_ok(), "{:?}", restored.err().map(|e| e.to_string()));
        let restored = restored.unwrap();
        prop_assert_eq!(restored.state(), engine.state());
        prop_assert_eq!(restored.failure(), engine.failure());
    }
}

/// A position whose value grows past the engine's range (1e20) stops the
/// session cleanly: `Step::Failed`, the reason with the symbol, time and
/// figure, the books as they were before the refused mark, and a checkpoint
/// that restores into the same stopped engine.
#[test]
fn a_session_beyond_the_engine_range_stops_with_the_reason() {
    let strategy = r#"  mode: Custom
  signals:
    momentum: {period: 3, thresholdPct: "1"}
  risk:
    maxPositionSizePct: "50"
    confidenceThreshold: "1""#;
    let execution = "    feeRatePct: \"0.1\"\n    slippage: {baseBps: \"3\", impactPct: \"1\"}";
    let mut cfg = EngineConfig::from_plan(&plan(&manifest(strategy, execution, "")), 3_600_000);
    cfg.initial_cash = MAX_CASH;
    // Prices double every minute from 1e-6 to 1e12.
    let mut price = Decimal::new(1, 6);
    let mut candles = Vec::new();
    for i in 0..70 {
        let next = (price * Decimal::TWO).min(MAX_PRICE);
        candles.push(Candle {
            symbol: SymbolId(0),
            open_time: Timestamp(1_700_000_000_000 + i * 60_000),
            interval_ms: 60_000,
            open: price,
            high: next,
            low: price,
            close: next,
            volume: MAX_VOLUME,
        });
        price = next;
    }
    let mut engine = Engine::new(cfg.clone());
    let mut failed_at = None;
    for (i, c) in candles.iter().enumerate() {
        if engine.on_candle(c) == Step::Failed {
            failed_at = Some(i);
            break;
        }
        engine.portfolio().check_invariant().unwrap();
    }
    let at = failed_at.expect("the doubling position leaves the range");
    let reason = engine.failure().unwrap().to_string();
    assert!(
        reason.starts_with("BTC-USD at ") && reason.contains("exceeds the engine's range (1e20)"),
        "{reason}"
    );
    assert!(
        engine.portfolio().position(SymbolId(0)).is_open(),
        "a position was open"
    );
    engine.portfolio().check_invariant().unwrap();
    assert_eq!(engine.on_candle(&candles[at + 1]), Step::Failed);
    let (_, cp) = engine.take_batch_and_checkpoint();
    assert_eq!(cp.failure(), Some(reason.as_str()));
    let mut restored = Engine::restore(cfg, cp).unwrap();
    assert_eq!(restored.on_candle(&candles[at + 1]), Step::Failed);
    assert_eq!(restored.failure(), Some(reason.as_str()));
}

/// Any decimal at all: negative, zero, 28 digits, the largest.
fn any_decimal() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        (any::<i128>(), 0u32..=28)
            .prop_map(|(m, s)| { Decimal::from_i128_with_scale(m % (1 << 96), s) }),
        Just(Decimal::MAX),
        Just(Decimal::MIN),
        Just(Decimal::ZERO),
        any_price(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Candles with arbitrary fields — any decimals, any times, any
    /// interval, symbol ids the session does not have — never make the
    /// engine panic: what the feed guard refuses is counted as a bad tick,
    /// and the books keep the identity.
    #[test]
    fn arbitrary_candles_never_panic(
        raw in prop::collection::vec(
            (0u16..3, any::<i64>(), any::<i64>(), prop::array::uniform5(any_decimal())),
            1..80,
        ),
    ) {
        let cfg = EngineConfig::from_plan(&full_plan(), 3_600_000);
        let mut engine = Engine::new(cfg);
        let mut bad = 0u64;
        for (sym, t, interval, [o, h, l, c, v]) in raw {
            let candle = Candle {
                symbol: SymbolId(sym),
                open_time: Timestamp(t),
                interval_ms: interval,
                open: o,
                high: h,
                low: l,
                close: c,
                volume: v,
            };
            bad += u64::from(sym >= 2);
            engine.on_candle(&candle);
            prop_assert!(engine.portfolio().check_invariant().is_ok());
            engine.take_batch();
        }
        engine.finish();
        let st = engine.state();
        prop_assert!(st.rejected_ticks >= bad, "unknown symbols are bad ticks");
        prop_assert!(engine.checkpoint().to_json().is_ok());
    }
}
