//! No input crashes the runtime: arbitrary candle rows and arbitrary
//! manifest values fed to validation give a clear error or `Ok`, never a
//! panic; whatever validation accepts then runs through the engine without
//! a panic.
//!
//! proptest turns a panic inside a case into a failure and shrinks it, so
//! "never a panic" is checked by simply calling the code. "Clear error" is
//! checked on every error: it names the file (and a line for row problems),
//! or the manifest's file, line, object and field path.

mod common;

use std::{cell::Cell, fs, path::Path};

use bot_runtime::{
    config::{SessionPlan, check_dns1123_label, parse_manifests, plan_sessions},
    engine::{Engine, EngineConfig, Step},
    market::{
        csv::{CandleReader, HEADER, scan_candle_file},
        simulated::{GbmParams, GbmSource},
    },
    preflight,
    types::{Candle, MAX_PRICE, MAX_VOLUME, MIN_PRICE, SymbolId},
};
use proptest::{prelude::*, test_runner::TestRunner};
use rust_decimal::Decimal;

// ---------------------------------------------------------------------------
// Candle rows
// ---------------------------------------------------------------------------

/// Number-like texts that probe the parser and the range checks.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        // Ordinary prices.
        (1u64..100_000, 0u32..6)
            .prop_map(|(m, s)| { rust_decimal::Decimal::new(m as i64, s).to_string() }),
        // Any 1 to 30 digits, with an optional fraction: 28-digit values,
        // values above 7.9e28 and tiny ones.
        ("[0-9]{1,30}", proptest::option::of("[0-9]{1,30}")).prop_map(|(i, f)| match f {
            Some(f) => format!("{i}.{f}"),
            None => i,
        }),
        Just("1234567890123456789012345678".to_string()),
        Just("0.0000000000000000000000000001".to_string()),
        Just("79228162514264337593543950335".to_string()),
        Just("1000000000000".to_string()),
        Just("1000000000000.000000000001".to_string()),
        Just("0.000000000001".to_string()),
        Just("0.0000000000009".to_string()),
        Just("1000000000000000000".to_string()),
        Just("1000000000000000000.5".to_string()),
        // Refused forms.
        prop_oneof![
            Just("NaN"),
            Just("inf"),
            Just("-inf"),
            Just("1e30"),
            Just("1E-5"),
            Just("+5"),
            Just("-0"),
            Just("-5"),
            Just("0"),
            Just(""),
            Just(" 1"),
            Just("1_000"),
            Just("٣"),
            Just("1.2.3"),
        ]
        .prop_map(str::to_string),
    ]
}

/// Timestamp-like texts, valid and not.
fn time_text(minute: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(format!("2022-01-01T{:02}:{:02}:00Z", minute / 60 % 24, minute % 60)),
        1 => prop_oneof![
            Just("0000-01-01T00:00:00Z".to_string()),
            Just("9999-12-31T23:59:59Z".to_string()),
            Just("9999-12-31T23:59:59.999+00:00".to_string()),
            Just("+275760-09-13T00:00:00Z".to_string()),
            Just("1969-12-31T23:59:59Z".to_string()),
            Just("2022-02-30T00:00:00Z".to_string()),
            Just("2022-01-01T00:00:00.0000001Z".to_string()),
            Just("2022-01-01T00:00:00+05:00".to_string()),
            Just("1641000000".to_string()),
            Just("ｔｉｍｅ".to_string()),
        ],
    ]
}

/// One row: six well-formed-ish fields, a random column count, or bytes.
fn row(minute: u32) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => (time_text(minute), proptest::collection::vec(number_text(), 5)).prop_map(
            |(t, v)| format!("{t},{}", v.join(",")).into_bytes()
        ),
        // Plausible candles around a price, so that some files are valid.
        6 => (time_text(minute), 1u64..1_000_000, 0u64..50, 0u64..50, 0u64..1000).prop_map(
            |(t, p, up, down, vol)| {
                let (o, h, l) = (p, p + up, p.saturating_sub(down).max(1));
                format!("{t},{o},{h},{l},{o},{vol}").into_bytes()
            }
        ),
        1 => proptest::collection::vec(number_text(), 0..9)
            .prop_map(|v| v.join(",").into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..60),
    ]
}

fn rows() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (1usize..12).prop_flat_map(|n| (0..n as u32).map(row).collect::<Vec<_>>())
}

/// A candle file: the header (sometimes damaged) and the rows.
fn csv_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            8 => Just(HEADER.as_bytes().to_vec()),
            1 => Just(b"\xEF\xBB\xBFtimestamp,open,high,low,close,volume".to_vec()),
            1 => proptest::collection::vec(any::<u8>(), 0..40),
        ],
        rows(),
        any::<bool>(),
    )
        .prop_map(|(header, rows, crlf)| {
            let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let mut out = header;
            for r in rows {
                out.extend_from_slice(eol);
                out.extend_from_slice(&r);
            }
            out
        })
}

/// Money and execution settings at the limits validation accepts.
const EXTREME_COSTS: (&str, &str) = (
    "1000000000000000",
    r#"    feeRatePct: "100"
    slippage: {baseBps: "1000000", impactPct: "100"}
    gasCost: "1000000000000000"
    latency: 30s
    latencyJitter: 30s
    failureRatePct: "50"
    seed: 7"#,
);

/// Ordinary money and execution settings, under which the strategy trades.
const TRADING_COSTS: (&str, &str) = (
    "100000",
    r#"    feeRatePct: "0.1"
    slippage: {baseBps: "5", impactPct: "10"}
    gasCost: "0.01"
    latency: 10s
    latencyJitter: 20s
    failureRatePct: "20"
    seed: 7"#,
);

/// A full-featured session replaying `csv` (every signal, cost, breaker and
/// the autopilot on), so the engine exercises all its arithmetic.
fn replay_manifest(csv: &Path, (money, costs): (&str, &str)) -> String {
    format!(
        r#"apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata: {{name: acct}}
spec:
  initialBalance: "{money}"
  limits: {{maxDrawdownPct: "90", dailyLossPct: "90"}}
---
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {{name: strat}}
spec:
  mode: Aggressive
  intelLevel: 10
  signals:
    smaCrossover: {{fastPeriod: 1, slowPeriod: 2}}
    rsi: {{period: 2}}
    momentum: {{period: 1, thresholdPct: "0.001"}}
    bollinger: {{period: 2, stdDev: "0.5"}}
  risk:
    maxPositionSizePct: "100"
    stopLossPct: "1"
    takeProfitPct: "1000000"
    trailingStopPct: "1"
    maxHoldTime: 2m
    confidenceThreshold: "0"
  circuitBreakers: {{dailyLossPct: "50", maxDrawdownPct: "60", minBalance: "1", maxConsecutiveLosses: 5, maxInvalidTicks: 2}}
  autopilot:
    enabled: true
    learningRate: "1"
    performanceWindow: 1
    cooldown: 1m
    bounds:
      stopLossPct: {{min: "0.5", max: "5"}}
      maxPositionSizePct: {{min: "1", max: "100"}}
---
apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {{name: fuzz}}
spec:
  accountRef: {{name: acct}}
  strategyRef: {{name: strat}}
  allocation: "{money}"
  symbols: [SYM]
  marketData:
    source: Replay
    replay:
      files: [{{symbol: SYM, path: {path:?}, interval: 1m}}]
  execution:
{costs}
"#,
        path = csv.display().to_string()
    )
}

/// Run every candle through a fresh engine until it stops (end of data, a
/// halt, or a figure leaving the engine's range, which must come with a
/// reason); returns the candles fed and the fills made.
fn drive(cfg: EngineConfig, candles: impl IntoIterator<Item = Candle>) -> (u64, u64) {
    let mut engine = Engine::new(cfg);
    let mut n = 0;
    for c in candles {
        n += 1;
        let step = engine.on_candle(&c);
        let _ = engine.take_batch();
        match step {
            Step::Continue => {}
            Step::Halted => break,
            Step::Failed => {
                let reason = engine
                    .failure()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                assert!(!reason.is_empty(), "a failed session says why");
                break;
            }
        }
    }
    engine.finish();
    let _ = engine.take_batch();
    (n, engine.state().fills)
}

/// Run `strategy` for `cases` cases with `test`; a failing case (an
/// assertion or a panic) fails the test with proptest's shrunk input.
fn run_cases<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        // The shrunk input is printed with the failure; no file is kept.
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// Check one candle file: a located error (the same from the scan and the
/// streaming reader) or the candles it holds, which also pass the manifest
/// checks and the preflight of a session replaying the file.
fn check_candle_file(bytes: &[u8]) -> Result<Option<Vec<Candle>>, TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.csv");
    fs::write(&path, bytes).unwrap();
    let summary = match scan_candle_file(&path, Some(60_000)) {
        Err(e) => {
            prop_assert_eq!(&e.file, &path);
            let text = e.to_string();
            prop_assert!(
                text.starts_with(&format!("{}:{}: ", path.display(), e.line)),
                "{}",
                text
            );
            prop_assert!(!e.reason.is_empty());
            prop_assert!(
                e.line as usize <= bytes.split(|&b| b == b'\n').count(),
                "{}",
                text
            );
            // The streaming reader stops on the same line with the same
            // reason (or finds no rows, or refuses the header at open).
            match CandleReader::open(&path, SymbolId(0), 60_000) {
                Err(open) => prop_assert_eq!(open.line, e.line),
                Ok(reader) => match reader.last() {
                    Some(Err(streamed)) => prop_assert_eq!(streamed, e),
                    // Whole-file problems (no rows) are line 0.
                    _ => prop_assert_eq!(e.line, 0),
                },
            }
            return Ok(None);
        }
        Ok(summary) => summary,
    };
    prop_assert!(summary.rows >= 1);
    let candles: Vec<Candle> = CandleReader::open(&path, SymbolId(0), 60_000)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    prop_assert_eq!(candles.len() as u64, summary.rows);
    for costs in [EXTREME_COSTS, TRADING_COSTS] {
        let manifest = replay_manifest(&path, costs);
        let plans = plan_sessions(&parse_manifests(&manifest, &dir.path().join("m.yaml")).unwrap())
            .unwrap();
        let checked = preflight::check(&plans[0]).unwrap();
        prop_assert_eq!(&checked.scans, &vec![summary]);
    }
    Ok(Some(candles))
}

/// Arbitrary candle files (random bytes, damaged headers, huge, tiny and
/// 28-digit numbers, exponents, NaN/inf, negatives, missing columns,
/// unicode, timestamps out of range): a located error or Ok, never a panic.
#[test]
fn arbitrary_candle_rows_give_a_located_error_or_validate() {
    let (refused, valid) = (Cell::new(0u32), Cell::new(0u32));
    run_cases(512, csv_bytes(), |bytes| {
        match check_candle_file(&bytes)? {
            None => refused.set(refused.get() + 1),
            Some(_) => valid.set(valid.get() + 1),
        }
        Ok(())
    });
    eprintln!(
        "candle files: {} refused, {} valid",
        refused.get(),
        valid.get()
    );
    assert!(
        refused.get() >= 100,
        "too few refused files: {}",
        refused.get()
    );
    assert!(valid.get() >= 5, "too few valid files: {}", valid.get());
}

/// A decimal in `[lo, hi]` from a random mantissa of up to 27 digits and a
/// random scale of 0 to 28 (so "max-scale" decimals appear), or one of the
/// ends.
fn decimal_in(lo: Decimal, hi: Decimal) -> impl Strategy<Value = Decimal> {
    prop_oneof![
        1 => Just(lo),
        1 => Just(hi),
        8 => (1u128..1_000_000_000_000_000_000_000_000_000, 0u32..=28)
            .prop_map(|(m, s)| Decimal::from_i128_with_scale(m as i128, s))
            .prop_filter("inside the range", move |d| *d >= lo && *d <= hi),
        4 => (1u64..1_000_000, 0u32..=12, 0u32..=12).prop_map(move |(m, s, up)| {
            // Ordinary magnitudes spread over the whole range.
            let d = Decimal::new(m as i64, s) * Decimal::from(10u64.pow(up));
            d.clamp(lo, hi)
        }),
    ]
}

/// One valid candle: four prices inside the engine's range sorted into
/// low <= open, close <= high, and a volume up to the limit.
fn valid_candle() -> impl Strategy<Value = [Decimal; 5]> {
    (
        proptest::collection::vec(decimal_in(MIN_PRICE, MAX_PRICE), 4),
        any::<bool>(),
        decimal_in(Decimal::ZERO, MAX_VOLUME),
    )
        .prop_map(|(mut p, swap, volume)| {
            p.sort();
            let (open, close) = if swap { (p[2], p[1]) } else { (p[1], p[2]) };
            [open, p[3], p[0], close, volume]
        })
}

/// A valid candle file: 1 to 60 valid candles one minute (sometimes a few
/// minutes) apart, prices anywhere in the range, jumping or trending.
fn valid_csv() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec((valid_candle(), 1i64..4), 1..60).prop_map(|rows| {
        let mut out = format!("{HEADER}\n");
        let mut minute = 0i64;
        for ([o, h, l, c, v], step) in rows {
            let t = chrono::DateTime::from_timestamp(1_640_995_200 + minute * 60, 0).unwrap();
            out.push_str(&format!(
                "{},{o},{h},{l},{c},{v}\n",
                t.format("%Y-%m-%dT%H:%M:%SZ")
            ));
            minute += step;
        }
        out.into_bytes()
    })
}

/// Valid candle files with values anywhere in the accepted range (extreme
/// magnitudes, 28-digit decimals, jumps from 1e-12 to 1e12) run through a
/// full-featured engine with extreme and with ordinary costs: never a panic.
#[test]
fn validated_candle_files_run_through_the_engine() {
    let (runs, fills) = (Cell::new(0u32), Cell::new(0u64));
    run_cases(192, valid_csv(), |bytes| {
        let candles = check_candle_file(&bytes)?;
        prop_assert!(candles.is_some(), "a valid file was refused");
        let candles = candles.unwrap_or_default();
        let dir = tempfile::tempdir().unwrap();
        for costs in [EXTREME_COSTS, TRADING_COSTS] {
            let path = dir.path().join("data.csv");
            fs::write(&path, &bytes).unwrap();
            let manifest = replay_manifest(&path, costs);
            let plans =
                plan_sessions(&parse_manifests(&manifest, &dir.path().join("m.yaml")).unwrap())
                    .unwrap();
            let cfg = EngineConfig::from_plan(&plans[0], 3_600_000);
            let (_, f) = drive(cfg, candles.clone());
            fills.set(fills.get() + f);
        }
        runs.set(runs.get() + 1);
        Ok(())
    });
    eprintln!(
        "valid candle files run: {}, fills: {}",
        runs.get(),
        fills.get()
    );
    assert!(fills.get() > 0, "no run made a fill");
}

// ---------------------------------------------------------------------------
// Manifest values
// ---------------------------------------------------------------------------

/// Values a field accepts at its edges (for most fields), so that many
/// fuzzed manifests are valid and reach the engine.
fn edge_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"0.00000001\"".to_string()),
        Just("\"0.5\"".to_string()),
        Just("\"1\"".to_string()),
        Just("\"100\"".to_string()),
        Just("\"1000000\"".to_string()),
        Just("\"1000000000000\"".to_string()),
        Just("\"1000000000000000\"".to_string()),
        Just("1".to_string()),
        Just("2".to_string()),
        Just("100000".to_string()),
        Just("1ms".to_string()),
        Just("876000h".to_string()),
        Just("\"1970-01-01T00:00:00Z\"".to_string()),
    ]
}

/// YAML values for any field: edge values, or anything.
fn yaml_value() -> impl Strategy<Value = String> {
    prop_oneof![2 => edge_value(), 3 => any_value()]
}

/// YAML scalars of every kind.
fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        number_text().prop_map(|n| format!("{n:?}")),
        number_text(),
        Just("\"0\"".to_string()),
        Just("\"100\"".to_string()),
        Just("\"5000\"".to_string()),
        Just("\"1000000000000000\"".to_string()),
        Just("\"1000000000000000.000000001\"".to_string()),
        Just("\"-1\"".to_string()),
        Just("\"1e3\"".to_string()),
        Just("\"0.00000001\"".to_string()),
        Just("\"99999999999999999999999999999\"".to_string()),
        Just("1m".to_string()),
        Just("0s".to_string()),
        Just("876000h".to_string()),
        Just("876001h".to_string()),
        Just("99999999999999999999h".to_string()),
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("4294967295".to_string()),
        Just("-1".to_string()),
        Just("1.5".to_string()),
        Just("true".to_string()),
        Just("null".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("\"\"".to_string()),
        Just("\"∞\"".to_string()),
        Just("~".to_string()),
        Just("\"2024-01-01T00:00:00Z\"".to_string()),
        Just("\"9999-12-31T00:00:00Z\"".to_string()),
        Just("\"../../x\"".to_string()),
        Just("\"Bot_Name\"".to_string()),
        "[a-z0-9-]{1,70}",
    ]
}

/// The manifest fields the fuzzer fills: (placeholder, default text).
const FIELDS: &[(&str, &str)] = &[
    ("BALANCE", "\"100000\""),
    ("CURRENCY", "USD"),
    ("DRAWDOWN", "\"50\""),
    ("INTEL", "5"),
    ("FAST", "2"),
    ("SLOW", "5"),
    ("RSI", "3"),
    ("MOMENTUM", "2"),
    ("THRESHOLD", "\"0.5\""),
    ("BOLLINGER", "4"),
    ("STDDEV", "\"2\""),
    ("SIZE", "\"50\""),
    ("QUANTITY", "\"0.5\""),
    ("STOP", "\"2\""),
    ("TAKE", "\"5\""),
    ("TRAIL", "\"3\""),
    ("HOLD", "1h"),
    ("MAXGAP", "10m"),
    ("MINBAL", "\"10\""),
    ("COOLDOWN", "5m"),
    ("LEARNING", "\"0.5\""),
    ("WINDOW", "2"),
    ("BOUNDMAX", "\"60\""),
    ("NAME", "sim"),
    ("ALLOCATION", "\"50000\""),
    ("SEED", "42"),
    ("PRICE", "\"100\""),
    ("DRIFT", "\"0.1\""),
    ("VOL", "\"0.8\""),
    ("INTERVAL", "1m"),
    ("CANDLES", "150"),
    ("START", "\"2024-01-01T00:00:00Z\""),
    ("STOPAFTER", "2h"),
    ("FEE", "\"0.1\""),
    ("BPS", "\"5\""),
    ("IMPACT", "\"10\""),
    ("GAS", "\"1\""),
    ("LATENCY", "1s"),
    ("JITTER", "2s"),
    ("FAILURE", "\"10\""),
];

const TEMPLATE: &str = r#"apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata: {name: acct}
spec:
  baseCurrency: CURRENCY
  initialBalance: BALANCE
  limits: {maxDrawdownPct: DRAWDOWN}
---
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {name: strat}
spec:
  intelLevel: INTEL
  signals:
    smaCrossover: {fastPeriod: FAST, slowPeriod: SLOW}
    rsi: {period: RSI}
    momentum: {period: MOMENTUM, thresholdPct: THRESHOLD}
    bollinger: {period: BOLLINGER, stdDev: STDDEV}
  risk:
    maxPositionSizePct: SIZE
    fixedQuantity: QUANTITY
    stopLossPct: STOP
    takeProfitPct: TAKE
    trailingStopPct: TRAIL
    maxHoldTime: HOLD
  circuitBreakers: {maxDataGap: MAXGAP, minBalance: MINBAL, cooldown: COOLDOWN}
  autopilot:
    enabled: true
    learningRate: LEARNING
    performanceWindow: WINDOW
    bounds:
      maxPositionSizePct: {min: "1", max: BOUNDMAX}
---
apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {name: NAME}
spec:
  accountRef: {name: acct}
  strategyRef: {name: strat}
  allocation: ALLOCATION
  symbols: [SIM-A, SIM-B]
  marketData:
    source: Simulated
    simulated: {seed: SEED, initialPrice: PRICE, annualDrift: DRIFT, annualVolatility: VOL, interval: INTERVAL, candles: CANDLES, start: START}
  stopAfter: STOPAFTER
  execution: {feeRatePct: FEE, slippage: {baseBps: BPS, impactPct: IMPACT}, gasCost: GAS, latency: LATENCY, latencyJitter: JITTER, failureRatePct: FAILURE, seed: SEED}
"#;

/// The template with 1 to 4 fields replaced by arbitrary values.
fn manifest_text() -> impl Strategy<Value = String> {
    proptest::collection::vec((0..FIELDS.len(), yaml_value()), 1..4).prop_map(|changes| {
        let mut values: Vec<String> = FIELDS.iter().map(|(_, v)| (*v).to_string()).collect();
        for (i, v) in changes {
            values[i] = v;
        }
        let mut text = TEMPLATE.to_string();
        // Longest placeholders first, so that no placeholder is a prefix of
        // another's replacement.
        let mut order: Vec<usize> = (0..FIELDS.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(FIELDS[i].0.len()));
        for i in order {
            text = text.replace(FIELDS[i].0, &values[i]);
        }
        text
    })
}

#[test]
fn the_fuzzed_template_is_valid_as_written() {
    let mut text = TEMPLATE.to_string();
    let mut order: Vec<usize> = (0..FIELDS.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(FIELDS[i].0.len()));
    for i in order {
        text = text.replace(FIELDS[i].0, FIELDS[i].1);
    }
    let plans = plan_sessions(&parse_manifests(&text, Path::new("fuzz.yaml")).unwrap()).unwrap();
    assert_eq!(plans[0].name, "sim");
    assert_eq!(plans[0].symbols.len(), 2);
}

/// Check one manifest text: a located error (file:line, object, field) or
/// one plan that passes the preflight.
fn check_manifest(text: &str) -> Result<Option<SessionPlan>, TestCaseError> {
    let path = Path::new("fuzz.yaml");
    match parse_manifests(text, path).and_then(|m| plan_sessions(&m)) {
        Err(e) => {
            let message = e.to_string();
            for line in message.lines() {
                prop_assert!(line.starts_with("fuzz.yaml:"), "{}\n{}", line, text);
                let rest = &line["fuzz.yaml:".len()..];
                let line_no: String = rest.chars().take_while(char::is_ascii_digit).collect();
                prop_assert!(!line_no.is_empty(), "no line number: {}", line);
                prop_assert!(
                    rest.contains(": PaperAccount \"")
                        || rest.contains(": StrategyConfig \"")
                        || rest.contains(": BotSession \"")
                        || rest.contains(": document "),
                    "no object named: {}",
                    line
                );
            }
            Ok(None)
        }
        Ok(mut plans) => {
            prop_assert_eq!(plans.len(), 1);
            let plan = plans.remove(0);
            prop_assert!(check_dns1123_label(&plan.name).is_ok());
            let checked = preflight::check(&plan).unwrap();
            prop_assert!(checked.files.is_empty());
            let sim = plan.session.market_data.simulated.as_ref().unwrap();
            prop_assert!(GbmParams::from_spec(sim).is_ok());
            Ok(Some(plan))
        }
    }
}

/// Arbitrary values in each field of a manifest (YAML documents with
/// random values): a located error or a plan, never a panic.
#[test]
fn arbitrary_manifest_values_give_a_located_error_or_plan() {
    let (refused, planned) = (Cell::new(0u32), Cell::new(0u32));
    run_cases(768, manifest_text(), |text| {
        match check_manifest(&text)? {
            None => refused.set(refused.get() + 1),
            Some(_) => planned.set(planned.get() + 1),
        }
        Ok(())
    });
    eprintln!(
        "manifests: {} refused, {} planned",
        refused.get(),
        planned.get()
    );
    assert!(
        refused.get() >= 100,
        "too few refused manifests: {}",
        refused.get()
    );
    assert!(
        planned.get() >= 20,
        "too few valid manifests: {}",
        planned.get()
    );
}

/// Manifests that validation accepts, with values anywhere in the accepted
/// ranges, run their simulated market through the engine: never a panic.
#[test]
fn planned_manifests_run_through_the_engine() {
    let (runs, fills) = (Cell::new(0u32), Cell::new(0u64));
    run_cases(384, manifest_text(), |text| {
        let Some(plan) = check_manifest(&text)? else {
            return Ok(());
        };
        let sim = plan.session.market_data.simulated.as_ref().unwrap();
        let mut params = GbmParams::from_spec(sim).unwrap();
        // Enough candles for every signal and breaker to act, few enough
        // for a debug build.
        params.candles = Some(params.candles.unwrap_or(300).min(300));
        let source = GbmSource::try_new(params, plan.symbols.len()).unwrap();
        let cfg = EngineConfig::from_plan(&plan, 3_600_000);
        let (_, f) = drive(cfg, source);
        fills.set(fills.get() + f);
        runs.set(runs.get() + 1);
        Ok(())
    });
    eprintln!(
        "planned manifests run: {}, fills: {}",
        runs.get(),
        fills.get()
    );
    assert!(
        runs.get() >= 8,
        "too few valid manifests ran: {}",
        runs.get()
    );
    assert!(fills.get() > 0, "no run made a fill");
}

/// Candles at the edges of the accepted range, through the full-featured
/// engine: the largest and smallest prices, the largest volume, 28-digit
/// decimals, a price that doubles every candle up to the limit.
#[test]
fn candles_at_the_edges_of_the_range_validate_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edges.csv");
    let mut text = format!("{HEADER}\n");
    let rows = [
        "1000000000000,1000000000000,1000000000000,1000000000000,1000000000000000000",
        "0.000000000001,0.000000000001,0.000000000001,0.000000000001,0",
        "1000000000000,1000000000000,0.000000000001,0.000000000001,1000000000000000000",
        "0.000000000001,1000000000000,0.000000000001,1000000000000,0.0000000000000000000000000001",
        "1.234567890123456789012345678,1.234567890123456789012345678,1.234567890123456789012345678,1.234567890123456789012345678,123456789012345678.1234567891",
        "999999999999.9999999999999999,999999999999.9999999999999999,0.0000000000010000000000000001,0.0000000000010000000000000001,999999999999999999.9999999999",
    ];
    let mut minute = 0u32;
    for r in rows {
        text.push_str(&format!(
            "2022-01-01T{:02}:{:02}:00Z,{r}\n",
            minute / 60,
            minute % 60
        ));
        minute += 1;
    }
    let mut price = rust_decimal::Decimal::new(1, 12);
    while price <= rust_decimal::Decimal::new(1_000_000_000_000, 0) {
        text.push_str(&format!(
            "2022-01-01T{:02}:{:02}:00Z,{price},{price},{price},{price},1000000000000000000\n",
            minute / 60,
            minute % 60
        ));
        price *= rust_decimal::Decimal::TWO;
        minute += 1;
    }
    fs::write(&path, &text).unwrap();
    let candles = common::candles(&path, 0);
    let mut fills = 0;
    for costs in [EXTREME_COSTS, TRADING_COSTS] {
        let manifest = replay_manifest(&path, costs);
        let plans = plan_sessions(&parse_manifests(&manifest, &dir.path().join("m.yaml")).unwrap())
            .unwrap();
        let checked = preflight::check(&plans[0]).unwrap();
        assert_eq!(checked.scans[0].rows, u64::from(minute));
        let cfg = EngineConfig::from_plan(&plans[0], 3_600_000);
        let (n, f) = drive(cfg, candles.clone());
        assert!(n >= 1);
        fills += f;
    }
    assert!(fills > 0, "the edge candles never traded");
}

/// The manifest limits of the `crds` crate are the engine's ranges.
#[test]
fn manifest_limits_match_the_engine_ranges() {
    use bot_runtime::types;
    use paperbot_crds::validation::limits;
    assert_eq!(limits::MAX_MONEY, types::MAX_CASH);
    assert_eq!(limits::MONEY_DP, types::MAX_CASH_DP);
    assert_eq!(limits::MAX_QUANTITY, types::MAX_QUANTITY);
    assert_eq!(limits::MAX_PCT, types::MAX_PCT);
    assert_eq!(limits::MAX_SIGNAL_PERIOD, types::MAX_SIGNAL_PERIOD);
    assert_eq!(limits::MAX_SIMULATED_PRICE, types::MAX_PRICE);
    assert!(limits::MIN_SIMULATED_PRICE >= types::MIN_PRICE);
}
