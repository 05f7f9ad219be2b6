//! `bot-runtime sweep`: run one strategy over a grid of parameter values
//! on the same candles, rank the variants and write the best as a ready
//! StrategyConfig manifest.
//!
//! # Grid syntax
//!
//! `--grid 'signals.smaCrossover.fastPeriod=5..20:5,risk.stopLossPct=1,2,3'`:
//! comma-separated `path=values` items. A path is the StrategyConfig
//! `spec`'s camelCase field path. Values are a list (`1,2,3`: a bare value
//! after a comma belongs to the item before it) and/or ranges
//! `start..end:step` (inclusive end, exact decimals: `0.5..2:0.5` is 0.5,
//! 1, 1.5, 2). Each path is checked against the StrategyConfig CRD schema
//! up front (unknown field, integer field given a fraction, decimal field
//! given text); the variants are the cartesian product in grid order (the
//! last path varies fastest), at most [`MAX_VARIANTS`].
//!
//! # Variants
//!
//! Every variant's StrategyConfig is parsed with the CRD types and checked
//! as `kubectl apply` and a hot reload check it
//! ([`crate::runner::control::reload_plan`]: the spec's own rules, then the
//! parameter derivation with the account's limits). A variant that fails
//! (e.g. `fastPeriod` ≥ `slowPeriod`) is **reported and skipped**: it is
//! listed with its reason on stderr and in `sweep.csv`, and the others run.
//! A grid whose every variant fails is refused.
//!
//! # Runs
//!
//! The candles are validated and read once (the same preflight and feed as
//! `backtest`, with its time range) and shared read-only by the workers
//! (`std::thread::scope`, one atomic work index). Each variant is an
//! independent [`Engine`] run with no ledger: its batches go straight into
//! [`Analytics`], the same fold the `backtest` report thread applies to
//! committed batches, with the same benchmark inputs and the same ends
//! (data exhausted, `stopAfter`, kill switch, engine failure). So each
//! variant's [`Summary`] equals that of `bot-runtime backtest` with the
//! variant's strategy file (the tests compare them figure by figure), and
//! the results do not depend on `--jobs`.

use std::{
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use comfy_table::{CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use paperbot_crds::StrategyConfig;
use rust_decimal::Decimal;

use crate::{
    analytics::{Analytics, SessionIdentity, Summary},
    compare::SortBy,
    config::SessionPlan,
    engine::{Engine, EngineConfig, Step},
    figures::BenchmarkPrices,
    market::csv::FileSummary,
    report::{fmt_dp, fmt_ratio},
    types::Candle,
};

/// Most variants a grid may have.
pub const MAX_VARIANTS: usize = 10_000;
/// Name of the CSV file of every variant, written into `--out`.
pub const CSV_FILE: &str = "sweep.csv";
/// Name of the JSON-lines file of every variant's full summary (the
/// `summary.json` of a `backtest` run), written into `--out`.
pub const SUMMARIES_FILE: &str = "summaries.jsonl";
/// Name of the best variant's StrategyConfig manifest, written into `--out`.
pub const BEST_FILE: &str = "best.yaml";
/// Longest object name Kubernetes accepts (a DNS-1123 subdomain).
const MAX_NAME: usize = 253;
/// Flush the engine's records into the analytics every this many candles
/// (bounds memory; the figures do not depend on it).
const BATCH_CANDLES: u64 = 8192;
/// ... or when this many records are waiting.
const MAX_PENDING_RECORDS: usize = 20_000;

/// A grid that cannot be swept. Nothing runs when one occurs.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    /// The text does not follow `path=values,...`.
    #[error("--grid: {0}")]
    Syntax(String),
    /// A path names no field of a StrategyConfig spec.
    #[error("--grid: unknown path {path:?}: {message}")]
    UnknownPath {
        /// The path as given.
        path: String,
        /// What exists there instead.
        message: String,
    },
    /// A value does not fit its field's type.
    #[error("--grid: {path}={value}: {message}")]
    Value {
        /// The path.
        path: String,
        /// The value as given.
        value: String,
        /// What is expected.
        message: String,
    },
    /// More variants than [`MAX_VARIANTS`].
    #[error(
        "--grid: {count} variants (product of the value counts {counts}): at most {max} are \
         allowed; use fewer values or coarser steps"
    )]
    TooLarge {
        /// Variants the grid would have (saturated at `usize::MAX`).
        count: usize,
        /// The value count of each path, `a × b × …`.
        counts: String,
        /// [`MAX_VARIANTS`].
        max: usize,
    },
}

/// One varied field and its values in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Axis {
    /// camelCase path under the StrategyConfig `spec`, e.g.
    /// `signals.smaCrossover.fastPeriod`.
    pub path: String,
    /// The values: decimals in normalized text (`1.50` → `1.5`), other
    /// tokens (durations, modes, booleans) as given.
    pub values: Vec<String>,
    /// The field's schema type, once [`Grid::check_paths`] resolved it.
    pub kind: FieldKind,
}

/// The JSON type a field takes in a StrategyConfig.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// Not resolved yet.
    Unknown,
    /// A JSON integer (periods, counts).
    Integer,
    /// A decimal string (`"2.5"`: percents, weights, thresholds).
    Decimal,
    /// Any other string (durations, modes).
    Text,
    /// `true` / `false`.
    Bool,
}

/// A parsed `--grid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grid {
    /// The varied fields, in the order given.
    pub axes: Vec<Axis>,
}

impl Grid {
    /// Parse `--grid` text (syntax, ranges and the [`MAX_VARIANTS`] cap;
    /// paths are checked by [`check_paths`](Self::check_paths)).
    ///
    /// # Errors
    /// [`GridError::Syntax`] naming the bad item (empty path or value, a
    /// value before any `path=`, a path given twice, a value listed twice
    /// for one path, a bad range); [`GridError::TooLarge`].
    pub fn parse(text: &str) -> Result<Self, GridError> {
        let syntax = |m: String| GridError::Syntax(m);
        if text.trim().is_empty() {
            return Err(syntax("empty: expected path=values,...".into()));
        }
        let mut raw: Vec<(String, Vec<String>)> = Vec::new();
        for piece in text.split(',') {
            let piece = piece.trim();
            match piece.split_once('=') {
                Some((path, first)) => {
                    let path = path.trim();
                    if path.is_empty() {
                        return Err(syntax(format!(
                            "{piece:?} has no path before `=`: expected path=values, e.g. \
                             risk.stopLossPct=1,2"
                        )));
                    }
                    if raw.iter().any(|(p, _)| p == path) {
                        return Err(syntax(format!(
                            "path {path:?} is given twice: list all its values in one item"
                        )));
                    }
                    raw.push((path.to_string(), vec![first.trim().to_string()]));
                }
                None => match raw.last_mut() {
                    Some((_, values)) => values.push(piece.to_string()),
                    None => {
                        return Err(syntax(format!(
                            "{piece:?} comes before any path=values item: expected e.g. \
                             signals.smaCrossover.fastPeriod=5..20:5"
                        )));
                    }
                },
            }
        }
        let mut axes = Vec::new();
        for (path, tokens) in raw {
            let mut values: Vec<String> = Vec::new();
            for t in tokens {
                if t.is_empty() {
                    return Err(syntax(format!(
                        "{path}: an empty value (two commas in a row, or nothing after `=`)"
                    )));
                }
                let expanded = if t.contains("..") {
                    expand_range(&path, &t)?
                } else {
                    vec![match t.parse::<Decimal>() {
                        Ok(d) if !t.contains(['e', 'E']) => d.normalize().to_string(),
                        _ => t.clone(),
                    }]
                };
                for v in expanded {
                    if values.contains(&v) {
                        return Err(syntax(format!(
                            "{path}: value {v} is listed twice: each variant must differ"
                        )));
                    }
                    values.push(v);
                    if values.len() > MAX_VARIANTS {
                        return Err(GridError::TooLarge {
                            count: values.len(),
                            counts: format!("{path}: more than {MAX_VARIANTS}"),
                            max: MAX_VARIANTS,
                        });
                    }
                }
            }
            axes.push(Axis {
                path,
                values,
                kind: FieldKind::Unknown,
            });
        }
        let grid = Self { axes };
        let count = grid
            .axes
            .iter()
            .try_fold(1usize, |n, a| n.checked_mul(a.values.len()))
            .unwrap_or(usize::MAX);
        if count > MAX_VARIANTS {
            return Err(GridError::TooLarge {
                count,
                counts: grid
                    .axes
                    .iter()
                    .map(|a| a.values.len().to_string())
                    .collect::<Vec<_>>()
                    .join(" × "),
                max: MAX_VARIANTS,
            });
        }
        Ok(grid)
    }

    /// Number of variants (the product of the value counts).
    pub fn len(&self) -> usize {
        self.axes.iter().map(|a| a.values.len()).product()
    }

    /// Whether the grid has no variant (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Variant `i` (0-based, grid order: the last path varies fastest) as
    /// `(path, value)` pairs in path order. `i` must be below [`len`](Self::len).
    pub fn variant(&self, mut i: usize) -> Vec<(&str, &str)> {
        let mut out = vec![("", ""); self.axes.len()];
        for (k, a) in self.axes.iter().enumerate().rev() {
            let n = a.values.len().max(1);
            out[k] = (a.path.as_str(), a.values[i % n].as_str());
            i /= n;
        }
        out
    }

    /// Resolve every path in the StrategyConfig CRD schema and check every
    /// value against its field's type (integer, decimal string, other
    /// string, boolean). Sets each [`Axis::kind`].
    ///
    /// # Errors
    /// [`GridError::UnknownPath`] listing the fields that exist where the
    /// path went wrong; [`GridError::Value`] for a value of the wrong type.
    pub fn check_paths(&mut self) -> Result<(), GridError> {
        let schema = spec_schema();
        for a in &mut self.axes {
            let kind = resolve(&schema, &a.path)?;
            for v in &a.values {
                check_value(kind, &a.path, v)?;
            }
            a.kind = kind;
        }
        Ok(())
    }
}

/// `start..end:step` → the exact decimals start, start + step, … ≤ end.
fn expand_range(path: &str, t: &str) -> Result<Vec<String>, GridError> {
    let bad = |why: &str| {
        GridError::Syntax(format!(
            "{path}={t}: {why}: expected start..end:step with decimals, start ≤ end, step > 0 \
             (e.g. 5..20:5 or 0.5..2:0.5)"
        ))
    };
    let (range, step) = t.split_once(':').ok_or_else(|| bad("no :step"))?;
    let (start, end) = range.split_once("..").ok_or_else(|| bad("no .."))?;
    let num = |s: &str, what: &str| {
        let s = s.trim();
        if s.contains(['e', 'E']) {
            return Err(bad(&format!("{what} {s:?} is not a plain decimal")));
        }
        s.parse::<Decimal>()
            .map_err(|_| bad(&format!("{what} {s:?} is not a decimal")))
    };
    let (start, end, step) = (num(start, "start")?, num(end, "end")?, num(step, "step")?);
    if step <= Decimal::ZERO {
        return Err(bad("the step is not > 0"));
    }
    if start > end {
        return Err(bad("start > end"));
    }
    let count = (end - start)
        .checked_div(step)
        .map(|q| q.floor())
        .and_then(|q| u64::try_from(q).ok())
        .ok_or_else(|| bad("too many values"))?;
    if count >= MAX_VARIANTS as u64 {
        return Err(GridError::TooLarge {
            count: usize::try_from(count.saturating_add(1)).unwrap_or(usize::MAX),
            counts: format!("{path}: {}", count.saturating_add(1)),
            max: MAX_VARIANTS,
        });
    }
    (0..=count)
        .map(|k| {
            Decimal::from(k)
                .checked_mul(step)
                .and_then(|x| x.checked_add(start))
                .map(|x| x.normalize().to_string())
                .ok_or_else(|| bad("a value overflows"))
        })
        .collect()
}

/// The `spec` schema of the StrategyConfig CRD (structural: nested
/// `properties`, no `$ref`).
fn spec_schema() -> serde_json::Value {
    paperbot_crds::manifest::crds()
        .into_iter()
        .filter_map(|c| serde_json::to_value(c).ok())
        .find(|c| c.pointer("/spec/names/kind").and_then(|k| k.as_str()) == Some("StrategyConfig"))
        .and_then(|c| {
            c.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec")
                .cloned()
        })
        .unwrap_or_default()
}

fn resolve(schema: &serde_json::Value, path: &str) -> Result<FieldKind, GridError> {
    let mut at = schema;
    let mut walked = Vec::new();
    for seg in path.split('.') {
        let props = at.get("properties").and_then(|p| p.as_object());
        let Some(next) = props.and_then(|p| p.get(seg)) else {
            let here = if walked.is_empty() {
                "spec".to_string()
            } else {
                walked.join(".")
            };
            let message = match props {
                Some(p) => format!(
                    "{here} has no field {seg:?}: expected one of {}",
                    p.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                None => format!("{here} is a single value, not an object with fields"),
            };
            return Err(GridError::UnknownPath {
                path: path.to_string(),
                message,
            });
        };
        walked.push(seg);
        at = next;
    }
    let ty = at.get("type").and_then(|t| t.as_str()).unwrap_or("");
    match ty {
        "integer" => Ok(FieldKind::Integer),
        "boolean" => Ok(FieldKind::Bool),
        "string"
            if at.get("pattern").and_then(|p| p.as_str())
                == Some(paperbot_crds::values::DECIMAL_PATTERN) =>
        {
            Ok(FieldKind::Decimal)
        }
        "string" => Ok(FieldKind::Text),
        other => Err(GridError::UnknownPath {
            path: path.to_string(),
            message: format!(
                "is {}, not a single value: expected the path of a number, decimal, string or \
                 boolean field",
                if other.is_empty() { "untyped" } else { other }
            ),
        }),
    }
}

fn check_value(kind: FieldKind, path: &str, v: &str) -> Result<(), GridError> {
    let err = |message: &str| GridError::Value {
        path: path.into(),
        value: v.into(),
        message: message.into(),
    };
    match kind {
        FieldKind::Integer => v
            .parse::<i64>()
            .map(|_| ())
            .map_err(|_| err("this field is an integer: expected a whole number")),
        FieldKind::Decimal => v
            .parse::<paperbot_crds::DecimalString>()
            .map(|_| ())
            .map_err(|e| err(&format!("this field is a decimal: {e}"))),
        FieldKind::Bool => match v {
            "true" | "false" => Ok(()),
            _ => Err(err("this field is a boolean: expected true or false")),
        },
        FieldKind::Text | FieldKind::Unknown => Ok(()),
    }
}

/// The base StrategyConfig with one variant's values set, parsed with the
/// CRD types and named `name`.
///
/// # Errors
/// The field path and reason when the object no longer parses (e.g. a
/// signal given only some of its required fields).
pub fn variant_strategy(
    base: &StrategyConfig,
    grid: &Grid,
    i: usize,
    name: &str,
) -> Result<StrategyConfig, String> {
    let mut doc = serde_json::to_value(base).map_err(|e| e.to_string())?;
    for ((path, value), axis) in grid.variant(i).into_iter().zip(&grid.axes) {
        let mut at = doc
            .get_mut("spec")
            .ok_or_else(|| "the StrategyConfig has no spec".to_string())?;
        let segs: Vec<&str> = path.split('.').collect();
        for (k, seg) in segs.iter().enumerate() {
            if !at.is_object() {
                *at = serde_json::Value::Object(Default::default());
            }
            let map = at
                .as_object_mut()
                .ok_or_else(|| format!("{path}: not an object"))?;
            if k + 1 == segs.len() {
                let v = match axis.kind {
                    FieldKind::Integer => serde_json::Value::from(
                        value
                            .parse::<i64>()
                            .map_err(|_| format!("{path}={value}: not an integer"))?,
                    ),
                    FieldKind::Bool => serde_json::Value::Bool(value == "true"),
                    _ => serde_json::Value::String(value.to_string()),
                };
                map.insert((*seg).to_string(), v);
                break;
            }
            at = map
                .entry((*seg).to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
        }
    }
    if let Some(md) = doc.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        md.insert("name".into(), name.into());
        for k in [
            "resourceVersion",
            "uid",
            "generation",
            "creationTimestamp",
            "managedFields",
        ] {
            md.remove(k);
        }
    }
    doc.as_object_mut().map(|o| o.remove("status"));
    serde_path_to_error::deserialize::<_, StrategyConfig>(doc).map_err(|e| {
        let p = e.path().to_string();
        let p = p.strip_prefix("spec.").unwrap_or(&p).to_string();
        format!("{p}: {}", e.into_inner())
    })
}

/// `base-sweep-N` (variant N, 1-based), the base shortened to stay a valid
/// object name.
pub fn variant_name(base: &str, i: usize) -> String {
    let suffix = format!("-sweep-{}", i + 1);
    let mut b: String = base.chars().take(MAX_NAME - suffix.len()).collect();
    while b.ends_with(['-', '.']) {
        b.pop();
    }
    format!("{b}{suffix}")
}

/// What one variant gave.
#[derive(Clone, Debug)]
pub struct VariantResult {
    /// 0-based grid index.
    pub index: usize,
    /// `(path, value)` of each varied field.
    pub values: Vec<(String, String)>,
    /// The variant's StrategyConfig (`None` when it failed validation).
    pub strategy: Option<StrategyConfig>,
    /// The figures of a run that ended `Completed` or `Halted`.
    pub summary: Option<Summary>,
    /// Why the variant has no figures: its validation error, or how its
    /// run failed.
    pub error: Option<String>,
}

/// Run one planned session on `candles` (the session's feed, read once)
/// without a ledger; returns its summary and end phase (`Completed`,
/// `Halted`, or `Failed` with the engine's reason).
///
/// The loop is the runner's engine thread without the ledger and pacing:
/// the same end conditions (`stopAfter` before the candle that reaches it,
/// the kill switch, an engine failure), the same benchmark inputs (each
/// symbol's first accepted candle, the last candles at the end) and the
/// same [`Analytics`] fold of every batch.
pub fn run_in_memory(
    plan: &SessionPlan,
    candles: &[Candle],
    snapshot_interval_ms: i64,
) -> (Summary, String, Option<String>) {
    let cfg = EngineConfig::from_plan(plan, snapshot_interval_ms);
    let initial = cfg.initial_cash;
    let mut engine = Engine::new(cfg);
    let mut analytics = Analytics::new(initial, snapshot_interval_ms);
    analytics.set_identity(SessionIdentity {
        session_id: plan.name.clone(),
        name: plan.name.clone(),
        strategy: plan.strategy_name.clone(),
        symbols: plan.symbols.clone(),
        currency: plan.account.base_currency.clone(),
    });
    let mut bench = BenchmarkPrices::new(
        plan.symbols.clone(),
        crate::execution::ExecutionModel::from_spec(&plan.session.execution, &plan.volume_units)
            .fee_rate(),
    );
    let mut missing = bench.missing_first();
    let stop_after = plan.session.stop_after.map(|d| d.as_millis_i64());
    let mut first_open = None;
    let mut n: u64 = 0;
    let mut phase = "Completed";
    let mut failure = None;
    for c in candles {
        let t0 = *first_open.get_or_insert(c.open_time);
        if let Some(limit) = stop_after
            && c.open_time.millis().saturating_sub(t0.millis()) >= limit
        {
            break;
        }
        let step = engine.on_candle(c);
        if missing > 0 {
            let i = c.symbol.idx();
            if let Some(first) = engine.last_candle(i)
                && bench.set_first(i, first.open_time, first.open)
            {
                missing -= 1;
            }
        }
        n += 1;
        if n.is_multiple_of(BATCH_CANDLES) || engine.pending_records() > MAX_PENDING_RECORDS {
            analytics.on_batch(&engine.take_batch());
        }
        match step {
            Step::Continue => {}
            Step::Halted => {
                phase = "Halted";
                break;
            }
            Step::Failed => {
                phase = "Failed";
                failure = Some(
                    engine
                        .failure()
                        .unwrap_or("value out of the engine's range")
                        .to_owned(),
                );
                break;
            }
        }
    }
    engine.finish();
    let batch = engine.take_batch();
    for i in 0..bench.symbols.len() {
        if let Some(c) = engine.last_candle(i) {
            bench.set_last(i, c.close_time(), c.close);
        }
    }
    analytics.on_batch(&batch);
    analytics.set_benchmark_prices(Some(bench));
    let summary = analytics.summary(&engine.state(), phase);
    (summary, phase.to_string(), failure)
}

/// Most variants whose own warnings `sweep` prints; the rest are counted.
pub const MAX_WARNED_VARIANTS: usize = 20;

/// The pre-run warnings ([`crate::preflight::warnings`]) of variant
/// `result` that the base strategy does not have: e.g. a `slowPeriod`
/// longer than the data, or a `maxDataGap` below the candle interval, which
/// explain a variant that never trades. `base` is the planned session,
/// `scans` its replay files' summaries, `base_warnings` the base's warnings
/// as printed. Empty for a variant that failed validation.
pub fn variant_warnings(
    base: &SessionPlan,
    scans: &[FileSummary],
    result: &VariantResult,
    base_warnings: &[String],
) -> Vec<String> {
    let Some(sc) = &result.strategy else {
        return Vec::new();
    };
    // Planned under the base's name, so a warning naming the strategy reads
    // the same as the base's and is not repeated for every variant.
    let Ok(plan) = crate::runner::control::reload_plan(base, &sc.spec, None) else {
        return Vec::new();
    };
    crate::preflight::warnings(&plan, scans)
        .iter()
        .map(ToString::to_string)
        .filter(|w| !base_warnings.contains(w))
        .collect()
}

/// How to report progress while the variants run.
pub trait Progress: Sync {
    /// One more variant is done (`done` of `total`).
    fn done(&self, done: usize, total: usize);
}

/// Validate and run every variant of `grid` on `candles` with `jobs`
/// worker threads. `base` is the planned `backtest` session (its
/// StrategyConfig is the base of every variant); results come back in grid
/// order and do not depend on `jobs`.
pub fn run_grid(
    base: &SessionPlan,
    base_strategy: &StrategyConfig,
    grid: &Grid,
    candles: &[Candle],
    snapshot_interval_ms: i64,
    jobs: usize,
    progress: &dyn Progress,
) -> Vec<VariantResult> {
    let total = grid.len();
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<VariantResult>>> = Mutex::new(vec![None; total]);
    let base_name = base_strategy.metadata.name.clone().unwrap_or_default();
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, total.max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let r = run_one(
                        base,
                        base_strategy,
                        &base_name,
                        grid,
                        i,
                        candles,
                        snapshot_interval_ms,
                    );
                    if let Ok(mut all) = results.lock() {
                        all[i] = Some(r);
                    }
                    progress.done(finished.fetch_add(1, Ordering::Relaxed) + 1, total);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|| VariantResult {
                index: i,
                values: owned(grid.variant(i)),
                strategy: None,
                summary: None,
                error: Some("the worker running it failed".into()),
            })
        })
        .collect()
}

/// `path=value, path=value` of a variant's varied fields.
fn listed(values: &[(String, String)]) -> String {
    values
        .iter()
        .map(|(p, v)| format!("{p}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn owned(v: Vec<(&str, &str)>) -> Vec<(String, String)> {
    v.into_iter()
        .map(|(p, v)| (p.to_string(), v.to_string()))
        .collect()
}

fn run_one(
    base: &SessionPlan,
    base_strategy: &StrategyConfig,
    base_name: &str,
    grid: &Grid,
    i: usize,
    candles: &[Candle],
    snapshot_interval_ms: i64,
) -> VariantResult {
    let values = owned(grid.variant(i));
    let name = variant_name(base_name, i);
    let checked = variant_strategy(base_strategy, grid, i, &name).and_then(|sc| {
        crate::runner::control::reload_plan(base, &sc.spec, None)
            .map(|mut plan| {
                plan.strategy_name = name.clone();
                (sc, plan)
            })
            .map_err(|e| match e {
                crate::runner::control::ControlError::BadRequest { message, .. } => {
                    message.replace("strategy.", "")
                }
                other => other.to_string(),
            })
    });
    match checked {
        Err(e) => VariantResult {
            index: i,
            values,
            strategy: None,
            summary: None,
            error: Some(e),
        },
        Ok((sc, plan)) => {
            let (summary, phase, failure) = run_in_memory(&plan, candles, snapshot_interval_ms);
            let error = (phase == "Failed")
                .then(|| format!("the run failed: {}", failure.unwrap_or_default()));
            VariantResult {
                index: i,
                values,
                strategy: Some(sc),
                summary: error.is_none().then_some(summary),
                error,
            }
        }
    }
}

/// Indices of the variants with figures, best first by `metric` (see
/// [`crate::compare::order`]); ties keep grid order.
pub fn rank(results: &[VariantResult], metric: SortBy) -> Vec<usize> {
    let mut ranked: Vec<usize> = (0..results.len())
        .filter(|&i| results[i].summary.is_some())
        .collect();
    ranked.sort_by(|&a, &b| match (&results[a].summary, &results[b].summary) {
        (Some(x), Some(y)) => crate::compare::order(x, y, metric),
        _ => std::cmp::Ordering::Equal,
    });
    ranked
}

/// The last path segment of each axis, or the whole path where two end
/// alike (column headers).
fn headers(grid: &Grid) -> Vec<String> {
    let last = |p: &str| p.rsplit('.').next().unwrap_or(p).to_string();
    grid.axes
        .iter()
        .map(|a| {
            let l = last(&a.path);
            if grid.axes.iter().filter(|b| last(&b.path) == l).count() > 1 {
                a.path.clone()
            } else {
                l
            }
        })
        .collect()
}

/// The ranked table for the terminal (comfy-table, the style and figure
/// names of `sessions compare`): the first `top` ranked variants: rank,
/// variant number (1-based grid order), the varied values, ROI %,
/// buy-and-hold %, excess pp, max drawdown %, Sharpe, Sortino, trades
/// (round trips), win rate %, profit factor, exposure %. Percentages and
/// ratios with 2 places, `n/a` when absent.
pub fn table(grid: &Grid, results: &[VariantResult], ranked: &[usize], top: usize) -> String {
    let pct = |d: Decimal| fmt_dp(d, 2);
    let opt_pct = |d: Option<Decimal>| d.map_or_else(|| "n/a".to_owned(), pct);
    let mut header = vec!["rank".to_string(), "variant".to_string()];
    header.extend(headers(grid));
    let fixed = [
        "ROI %",
        "benchmark %",
        "excess pp",
        "max drawdown %",
        "Sharpe",
        "Sortino",
        "trades",
        "win rate %",
        "profit factor",
        "exposure %",
    ];
    header.extend(fixed.iter().map(|s| s.to_string()));
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.clone());
    for (r, &i) in ranked.iter().enumerate().take(top) {
        let v = &results[i];
        let Some(s) = &v.summary else { continue };
        let mut row = vec![(r + 1).to_string(), (v.index + 1).to_string()];
        row.extend(v.values.iter().map(|(_, x)| x.clone()));
        row.extend([
            pct(s.roi_pct),
            opt_pct(s.figures.benchmark_return_pct),
            opt_pct(s.figures.excess_return_pct),
            pct(s.max_drawdown_pct),
            fmt_ratio(s.sharpe_ratio),
            fmt_ratio(s.sortino_ratio),
            s.round_trips.to_string(),
            pct(s.win_rate_pct),
            s.profit_factor.map_or_else(|| "n/a".to_owned(), pct),
            pct(s.figures.exposure_time_pct),
        ]);
        t.add_row(row);
    }
    for i in 0..header.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.to_string()
}

/// Write `sweep.csv` to `path`: a header (`rank`, `variant`, each path,
/// then the figures as `summary.json` has them: decimals normalized, ratios
/// as f64, empty when absent, and `error`), then the ranked variants, then
/// those without figures (empty rank, the reason in `error`).
///
/// # Errors
/// The file cannot be written.
pub fn write_csv(
    grid: &Grid,
    results: &[VariantResult],
    ranked: &[usize],
    path: &Path,
) -> anyhow::Result<()> {
    let mut w =
        csv::Writer::from_path(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut header: Vec<String> = vec!["rank".into(), "variant".into()];
    header.extend(grid.axes.iter().map(|a| a.path.clone()));
    header.extend(
        [
            "phase",
            "candles",
            "trades",
            "win_rate_pct",
            "realized_pnl",
            "final_equity",
            "roi_pct",
            "benchmark_return_pct",
            "excess_return_pct",
            "max_drawdown_pct",
            "sharpe_ratio",
            "sortino_ratio",
            "profit_factor",
            "exposure_time_pct",
            "fees_paid",
            "error",
        ]
        .map(String::from),
    );
    w.write_record(&header)?;
    let d = |d: Decimal| d.normalize().to_string();
    let od = |x: Option<Decimal>| x.map(d).unwrap_or_default();
    let of = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_default();
    let mut is_ranked = vec![false; results.len()];
    for &i in ranked {
        is_ranked[i] = true;
    }
    let unranked = (0..results.len()).filter(|&i| !is_ranked[i]);
    for (rank, i) in ranked
        .iter()
        .copied()
        .enumerate()
        .map(|(r, i)| (Some(r + 1), i))
        .chain(unranked.map(|i| (None, i)))
    {
        let v = &results[i];
        let mut row = vec![
            rank.map(|r| r.to_string()).unwrap_or_default(),
            (v.index + 1).to_string(),
        ];
        row.extend(v.values.iter().map(|(_, x)| x.clone()));
        match &v.summary {
            Some(s) => row.extend([
                s.phase.clone(),
                s.bars.to_string(),
                s.round_trips.to_string(),
                d(s.win_rate_pct),
                d(s.realized_pnl),
                d(s.final_equity),
                d(s.roi_pct),
                od(s.figures.benchmark_return_pct),
                od(s.figures.excess_return_pct),
                d(s.max_drawdown_pct),
                of(s.sharpe_ratio),
                of(s.sortino_ratio),
                od(s.profit_factor),
                d(s.figures.exposure_time_pct),
                d(s.fees_paid),
                String::new(),
            ]),
            None => {
                row.extend(std::iter::repeat_n(String::new(), 15));
                row.push(v.error.clone().unwrap_or_default());
            }
        }
        w.write_record(&row)?;
    }
    w.flush()?;
    Ok(())
}

/// The best variant as a StrategyConfig manifest (apiVersion, kind,
/// metadata.name `<base>-sweep-<N>`, the full spec), preceded by comment
/// lines giving the grid values and its figures.
///
/// # Errors
/// The object cannot be serialized.
pub fn best_manifest(best: &VariantResult, metric: SortBy) -> anyhow::Result<String> {
    let sc = best
        .strategy
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the best variant has no strategy"))?;
    let metric = clap::ValueEnum::to_possible_value(&metric)
        .map_or_else(|| format!("{metric:?}"), |v| v.get_name().to_string());
    let mut out = format!(
        "# Best variant of a bot-runtime sweep (variant {}, ranked by --metric {metric}):\n",
        best.index + 1
    );
    for (p, v) in &best.values {
        out.push_str(&format!("#   {p} = {v}\n"));
    }
    if let Some(s) = &best.summary {
        out.push_str(&format!(
            "#   ROI {} %, max drawdown {} %, Sharpe {}, {} trades\n",
            fmt_dp(s.roi_pct, 2),
            fmt_dp(s.max_drawdown_pct, 2),
            fmt_ratio(s.sharpe_ratio),
            s.round_trips
        ));
    }
    out.push_str(&serde_yaml::to_string(sc)?);
    Ok(out)
}

/// Write `summaries.jsonl` to `path`: one JSON object per variant in grid
/// order, `{"variant": N (1-based), "values": {path: value, …}, "summary":
/// {…} or null, "error": reason or null}`, the summary exactly as a
/// `backtest` run's `summary.json` has it.
///
/// # Errors
/// The file cannot be written.
pub fn write_summaries(results: &[VariantResult], path: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let file =
        std::fs::File::create(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for v in results {
        let values: serde_json::Map<String, serde_json::Value> = v
            .values
            .iter()
            .map(|(p, x)| (p.clone(), serde_json::Value::String(x.clone())))
            .collect();
        let line = serde_json::json!({
            "variant": v.index + 1,
            "values": values,
            "summary": v.summary,
            "error": v.error,
        });
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")?;
    }
    w.flush()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Files a sweep wrote.
#[derive(Debug)]
pub struct Written {
    /// `sweep.csv`.
    pub csv: PathBuf,
    /// `summaries.jsonl`.
    pub summaries: PathBuf,
    /// `best.yaml` (`None` when no variant has figures).
    pub best: Option<PathBuf>,
}

/// Write `sweep.csv`, `summaries.jsonl` and `best.yaml` into `dir` (created).
///
/// # Errors
/// A file or the directory cannot be written.
pub fn write_outputs(
    dir: &Path,
    grid: &Grid,
    results: &[VariantResult],
    ranked: &[usize],
    metric: SortBy,
) -> anyhow::Result<Written> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("--out {}: {e}", dir.display()))?;
    let csv = dir.join(CSV_FILE);
    write_csv(grid, results, ranked, &csv)?;
    let summaries = dir.join(SUMMARIES_FILE);
    write_summaries(results, &summaries)?;
    let best = match ranked.first() {
        Some(&i) => {
            let p = dir.join(BEST_FILE);
            std::fs::write(&p, best_manifest(&results[i], metric)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            Some(p)
        }
        None => None,
    };
    Ok(Written {
        csv,
        summaries,
        best,
    })
}

/// What `bot-runtime sweep` was asked.
pub struct SweepArgs<'a> {
    /// The planned `backtest` session (data files, range, account,
    /// execution model, the base strategy).
    pub plan: SessionPlan,
    /// The base StrategyConfig object as its file has it.
    pub strategy: StrategyConfig,
    /// `--grid` text.
    pub grid: &'a str,
    /// `--metric`.
    pub metric: SortBy,
    /// Worker threads (≥ 1).
    pub jobs: usize,
    /// `--out` directory.
    pub out: &'a Path,
    /// Rows of the ranked table printed.
    pub top: usize,
    /// Market time between snapshots, ms.
    pub snapshot_interval_ms: i64,
    /// Show a progress bar (stderr is a terminal); otherwise plain lines.
    pub progress: bool,
}

/// Progress on stderr: an indicatif bar on a terminal, else a plain line
/// at every tenth of the variants (and the last).
struct StderrProgress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress for StderrProgress {
    fn done(&self, done: usize, total: usize) {
        match &self.bar {
            Some(b) => b.inc(1),
            None => {
                let step = total.div_ceil(10).max(1);
                if done.is_multiple_of(step) || done == total {
                    eprintln!("sweep: {done}/{total} variants done");
                }
            }
        }
    }
}

/// `bot-runtime sweep`: parse and check the grid, read the candles once,
/// run every variant, print the ranked table and write the outputs.
///
/// # Errors
/// A bad grid (nothing runs), bad market data (as `backtest` reports it),
/// a grid whose every variant is invalid, or an output that cannot be
/// written.
pub fn run(args: SweepArgs<'_>) -> anyhow::Result<()> {
    let mut grid = Grid::parse(args.grid)?;
    grid.check_paths()?;
    let prepared = crate::runner::prepare(args.plan).map_err(anyhow::Error::new)?;
    for w in &prepared.warnings {
        eprintln!("warning: {w}");
    }
    let crate::runner::PreparedSession {
        plan,
        feed,
        warnings: base_warnings,
        scans,
        ..
    } = prepared;
    let candles: Vec<Candle> = feed.collect::<Result<_, _>>()?;
    let total = grid.len();
    eprintln!(
        "sweep: {total} variant(s) × {} candles on {} thread(s)",
        candles.len(),
        args.jobs.min(total)
    );
    let bar = args.progress.then(|| {
        let b = indicatif::ProgressBar::new(total as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} variants, {elapsed} elapsed, ETA {eta}",
        ) {
            b.set_style(style);
        }
        b
    });
    let progress = StderrProgress { bar };
    let t0 = std::time::Instant::now();
    let results = run_grid(
        &plan,
        &args.strategy,
        &grid,
        &candles,
        args.snapshot_interval_ms,
        args.jobs,
        &progress,
    );
    let secs = t0.elapsed().as_secs_f64();
    if let Some(b) = &progress.bar {
        b.finish_and_clear();
    }
    for r in results.iter().filter(|r| r.summary.is_none()) {
        eprintln!(
            "skipped variant {} ({}): {}",
            r.index + 1,
            listed(&r.values),
            r.error.as_deref().unwrap_or("no figures")
        );
    }
    let mut warned = 0;
    for r in &results {
        let warnings = variant_warnings(&plan, &scans, r, &base_warnings);
        if warnings.is_empty() {
            continue;
        }
        warned += 1;
        if warned <= MAX_WARNED_VARIANTS {
            for w in warnings {
                eprintln!(
                    "warning: variant {} ({}): {w}",
                    r.index + 1,
                    listed(&r.values)
                );
            }
        }
    }
    if warned > MAX_WARNED_VARIANTS {
        eprintln!(
            "warning: {} more variant(s) have warnings of their own",
            warned - MAX_WARNED_VARIANTS
        );
    }
    let ranked = rank(&results, args.metric);
    if ranked.is_empty() {
        anyhow::bail!(
            "no variant of the grid could run ({total} skipped, reasons above): change the grid \
             or the base strategy"
        );
    }
    let ran = candles.len() as f64 * ranked.len() as f64;
    eprintln!(
        "sweep: {} variant(s) ran in {secs:.2} s ({:.2} M variant-candles/s)",
        ranked.len(),
        if secs > 0.0 { ran / secs / 1e6 } else { 0.0 }
    );
    println!("{}", table(&grid, &results, &ranked, args.top));
    if ranked.len() > args.top {
        println!("… {} more in {CSV_FILE}", ranked.len() - args.top);
    }
    let written = write_outputs(args.out, &grid, &results, &ranked, args.metric)?;
    println!("wrote {}", written.csv.display());
    println!("wrote {}", written.summaries.display());
    if let Some(b) = written.best {
        println!("wrote {}", b.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(t: &str) -> Grid {
        let mut g = Grid::parse(t).unwrap();
        g.check_paths().unwrap();
        g
    }

    #[test]
    fn lists_and_ranges() {
        let g = parsed("signals.smaCrossover.fastPeriod=5..20:5,risk.stopLossPct=1,2,3");
        assert_eq!(g.axes[0].values, ["5", "10", "15", "20"]);
        assert_eq!(g.axes[0].kind, FieldKind::Integer);
        assert_eq!(g.axes[1].values, ["1", "2", "3"]);
        assert_eq!(g.axes[1].kind, FieldKind::Decimal);
        assert_eq!(g.len(), 12);
        assert_eq!(
            g.variant(0),
            [
                ("signals.smaCrossover.fastPeriod", "5"),
                ("risk.stopLossPct", "1")
            ]
        );
        assert_eq!(
            g.variant(4),
            [
                ("signals.smaCrossover.fastPeriod", "10"),
                ("risk.stopLossPct", "2")
            ]
        );
        assert_eq!(
            g.variant(11),
            [
                ("signals.smaCrossover.fastPeriod", "20"),
                ("risk.stopLossPct", "3")
            ]
        );
    }

    #[test]
    fn decimal_ranges_are_exact() {
        let g = parsed("risk.takeProfitPct=0.5..2:0.5");
        assert_eq!(g.axes[0].values, ["0.5", "1", "1.5", "2"]);
        // 0.1 steps do not drift as binary floats would.
        let g = parsed("risk.stopLossPct=0.1..1:0.1");
        assert_eq!(g.axes[0].values.len(), 10);
        assert_eq!(g.axes[0].values[2], "0.3");
        assert_eq!(g.axes[0].values[9], "1");
        // An end not on the step is not reached; mixed list and range.
        let g = parsed("risk.stopLossPct=1..2:0.4,5");
        assert_eq!(g.axes[0].values, ["1", "1.4", "1.8", "5"]);
        // Non-decimal fields keep their tokens.
        let g = parsed("risk.maxHoldTime=1h,90m");
        assert_eq!(g.axes[0].values, ["1h", "90m"]);
        assert_eq!(g.axes[0].kind, FieldKind::Text);
    }

    #[test]
    fn bad_syntax_is_refused_with_the_item() {
        for (text, needle) in [
            ("", "empty"),
            ("5,6", "before any path"),
            ("=5", "no path"),
            ("risk.stopLossPct=", "empty value"),
            ("risk.stopLossPct=1,,2", "empty value"),
            ("risk.stopLossPct=1..3", "no :step"),
            ("risk.stopLossPct=3..1:1", "start > end"),
            ("risk.stopLossPct=1..3:0", "step is not > 0"),
            ("risk.stopLossPct=1..3:-1", "step is not > 0"),
            ("risk.stopLossPct=a..3:1", "\"a\" is not a decimal"),
            ("risk.stopLossPct=1..3:1e0", "not a plain decimal"),
            ("risk.stopLossPct=1,1.0", "listed twice"),
            ("risk.stopLossPct=1,risk.stopLossPct=2", "given twice"),
        ] {
            let e = Grid::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn unknown_paths_and_wrong_types_are_refused() {
        let e = Grid::parse("signals.smaCrossover.fast=5")
            .unwrap()
            .check_paths()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("signals.smaCrossover has no field \"fast\""),
            "{e}"
        );
        assert!(e.contains("fastPeriod, slowPeriod, weight"), "{e}");
        let e = Grid::parse("risk=5")
            .unwrap()
            .check_paths()
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a single value"), "{e}");
        let e = Grid::parse("signals.smaCrossover.fastPeriod=5.5")
            .unwrap()
            .check_paths()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fastPeriod=5.5: this field is an integer"),
            "{e}"
        );
        let e = Grid::parse("risk.stopLossPct=abc")
            .unwrap()
            .check_paths()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("risk.stopLossPct=abc: this field is a decimal"),
            "{e}"
        );
        let e = Grid::parse("autopilot.enabled=yes")
            .unwrap()
            .check_paths()
            .unwrap_err()
            .to_string();
        assert!(e.contains("boolean"), "{e}");
    }

    #[test]
    fn grids_over_the_cap_are_refused() {
        // 101 × 100 = 10,100 variants.
        let e =
            Grid::parse("signals.smaCrossover.fastPeriod=1..101:1,risk.stopLossPct=0.1..10:0.1")
                .unwrap_err();
        assert!(
            matches!(e, GridError::TooLarge { count: 10_100, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("101 × 100"), "{e}");
        // One huge range is refused before it is materialized.
        let e = Grid::parse("risk.stopLossPct=0..1000000000:0.000001").unwrap_err();
        assert!(matches!(e, GridError::TooLarge { .. }), "{e}");
        // Exactly the cap is fine.
        assert_eq!(
            Grid::parse("signals.smaCrossover.fastPeriod=1..100:1,risk.stopLossPct=0.1..10:0.1")
                .unwrap()
                .len(),
            MAX_VARIANTS
        );
    }

    #[test]
    fn variant_names_stay_valid() {
        assert_eq!(variant_name("sma", 0), "sma-sweep-1");
        let long = "a".repeat(300);
        let n = variant_name(&long, 9999);
        assert!(n.len() <= MAX_NAME && n.ends_with("-sweep-10000"), "{n}");
    }
}
