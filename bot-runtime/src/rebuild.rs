//! Reports derived from the ledger alone.
//!
//! A session's report (CSVs, `summary.json`, `equity.png`) is a function of
//! what the ledger committed: its records, folded through the same
//! [`Analytics`] and [`ReportWriter`] as during the run, and the engine's
//! figures from the last committed checkpoint. The runner uses this to bring
//! the report of a resumed session back in line with the ledger before it
//! continues; `bot-runtime report` uses it to regenerate a report directory.

use std::future::Future;
use std::path::{Path, PathBuf};

use crate::{
    analytics::{Analytics, Summary},
    charts::MarketSeries,
    engine::EngineState,
    ledger::{LedgerError, LedgerStore, SessionInfo, query::LedgerReader, records::LedgerBatch},
    market::csv::{CandleReader, scan_candle_file},
    report::{ReportError, ReportFiles, ReportWriter},
    runner::{Checkpoint, RunError},
    types::SymbolId,
};

/// What a report is folded from: a session's row, its last checkpoint and
/// its committed records. Every [`LedgerStore`] is one (the CLI's `report`,
/// the runner on resume); so is a read-only [`LedgerReader`] (the runtime's
/// `GET /v1/report/{file}`, which reads beside the session's writer).
pub trait RecordSource {
    /// The session `id`, `None` when the ledger has none.
    fn source_session(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<SessionInfo>, LedgerError>> + Send;
    /// The last committed checkpoint (JSON text) of session `id`.
    fn source_checkpoint(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<String>, LedgerError>> + Send;
    /// Feed every committed record of `id` to `sink`, in ledger order, at
    /// most `chunk` records per kind and call (as
    /// [`LedgerStore::read_records`]).
    fn source_records(
        &self,
        id: &str,
        chunk: usize,
        sink: &mut (dyn FnMut(LedgerBatch) -> Result<(), LedgerError> + Send),
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
}

impl<L: LedgerStore> RecordSource for L {
    fn source_session(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<SessionInfo>, LedgerError>> + Send {
        self.session(id)
    }
    fn source_checkpoint(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<String>, LedgerError>> + Send {
        self.checkpoint(id)
    }
    fn source_records(
        &self,
        id: &str,
        chunk: usize,
        sink: &mut (dyn FnMut(LedgerBatch) -> Result<(), LedgerError> + Send),
    ) -> impl Future<Output = Result<(), LedgerError>> + Send {
        self.read_records(id, chunk, sink)
    }
}

impl RecordSource for LedgerReader {
    fn source_session(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<SessionInfo>, LedgerError>> + Send {
        self.session(id)
    }
    fn source_checkpoint(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<String>, LedgerError>> + Send {
        self.checkpoint(id)
    }
    fn source_records(
        &self,
        id: &str,
        chunk: usize,
        sink: &mut (dyn FnMut(LedgerBatch) -> Result<(), LedgerError> + Send),
    ) -> impl Future<Output = Result<(), LedgerError>> + Send {
        self.read_records(id, chunk, sink)
    }
}

/// Records read from the ledger per kind and call.
const READ_CHUNK: usize = 4096;

/// Feed every committed record of session `id` into `analytics` and `report`,
/// in ledger order.
///
/// # Errors
/// [`RunError::Ledger`] for a read failure, [`RunError::Report`] when a
/// report file cannot be written.
pub async fn replay_records<L: RecordSource>(
    ledger: &L,
    id: &str,
    analytics: &mut Analytics,
    mut report: Option<&mut ReportWriter>,
) -> Result<(), RunError> {
    let mut report_error: Option<ReportError> = None;
    let mut sink = |batch: crate::ledger::records::LedgerBatch| -> Result<(), LedgerError> {
        analytics.on_batch(&batch);
        if let Some(r) = report.as_deref_mut()
            && let Err(e) = r.write_batch(&batch)
        {
            report_error = Some(e);
            return Err(LedgerError::Encode("report write failed".into()));
        }
        Ok(())
    };
    let read = ledger.source_records(id, READ_CHUNK, &mut sink).await;
    if let Some(e) = report_error {
        return Err(RunError::Report(e));
    }
    read.map_err(RunError::Ledger)
}

/// What the ledger committed of a session, folded: the analytics over every
/// record and the engine's figures at the last checkpoint.
#[derive(Debug)]
pub struct Folded {
    /// Every committed record folded in.
    pub analytics: Analytics,
    /// The engine's figures at the last committed batch (the starting cash
    /// when no batch was committed).
    pub state: EngineState,
}

/// Fold session `info`'s committed records (also into `report`, when given)
/// with its stored `checkpoint` text (as [`LedgerStore::checkpoint`] or
/// [`crate::ledger::ResumePoint`] give it).
///
/// # Errors
/// [`RunError::Resume`] when the checkpoint is unreadable, and read or
/// write failures.
pub async fn fold<L: RecordSource>(
    ledger: &L,
    info: &SessionInfo,
    checkpoint: Option<&str>,
    report: Option<&mut ReportWriter>,
) -> Result<Folded, RunError> {
    let checkpoint = checkpoint
        .map(Checkpoint::from_json)
        .transpose()
        .map_err(|e| RunError::Resume {
            session_id: info.id.clone(),
            reason: e.to_string(),
        })?;
    let interval = checkpoint
        .as_ref()
        .map_or(DEFAULT_SNAPSHOT_INTERVAL_MS, |c| c.snapshot_interval_ms);
    let mut analytics = Analytics::new(info.initial_cash, interval);
    let benchmark = checkpoint.as_ref().and_then(|c| c.benchmark.clone());
    analytics.set_identity(crate::analytics::SessionIdentity {
        session_id: info.id.clone(),
        name: info.name.clone(),
        strategy: info.strategy.clone(),
        symbols: benchmark
            .as_ref()
            .map(|b| b.symbols.clone())
            .unwrap_or_default(),
        currency: info.base_currency.clone(),
    });
    analytics.set_benchmark_prices(benchmark);
    replay_records(ledger, &info.id, &mut analytics, report).await?;
    let state = match &checkpoint {
        Some(cp) => cp.engine.state(),
        None => crate::runner::initial_state(info.initial_cash, Some(info.started_at)),
    };
    Ok(Folded { analytics, state })
}

/// Snapshot interval assumed for a session that committed no checkpoint
/// (nothing was snapshotted, so it changes no figure): 1 hour, in ms.
const DEFAULT_SNAPSHOT_INTERVAL_MS: i64 = 3_600_000;

/// A report regenerated from the ledger.
#[derive(Debug)]
pub struct Regenerated {
    /// The files written.
    pub files: ReportFiles,
    /// The summary (also in `summary.json`).
    pub summary: Summary,
    /// The session's quote currency, e.g. `USD`.
    pub currency: String,
}

/// Regenerate the report directory `out` of session `id` from the ledger.
///
/// The snapshot interval and the engine's end figures come from the last
/// checkpoint; a session that committed no batch reports its starting cash.
/// `data` — (symbol, candle file) pairs, may be empty — gives the price
/// charts and the benchmark line the candles of the session's period
/// ([`market_from_files`]); without them they draw the recorded decision
/// and fill prices.
///
/// # Errors
/// [`LedgerError::UnknownSession`] (as [`RunError::Ledger`]) when the ledger
/// has no such session, [`RunError::Resume`] when its checkpoint is
/// unreadable, [`RunError::Data`] for a bad candle file, and read or write
/// failures.
pub async fn regenerate_report<L: RecordSource>(
    ledger: &L,
    id: &str,
    out: &Path,
    data: &[(String, PathBuf)],
) -> Result<Regenerated, RunError> {
    let info = ledger
        .source_session(id)
        .await?
        .ok_or_else(|| LedgerError::UnknownSession {
            session_id: id.to_owned(),
        })?;
    let checkpoint = ledger.source_checkpoint(id).await?;
    let mut report = ReportWriter::create(out, &info.id)?;
    // The stop levels on the price charts: the strategy's stop-loss and
    // take-profit distances the session started with, as the run drew them.
    if let Some(t) = serde_json::from_str::<serde_json::Value>(&info.config_json)
        .ok()
        .and_then(|v| {
            serde_json::from_value::<crate::params::TunableParams>(
                v["effective"]["tunable"].clone(),
            )
            .ok()
        })
    {
        report.set_risk_levels(t.stop_loss_pct, t.take_profit_pct);
    }
    let folded = fold(ledger, &info, checkpoint.as_deref(), Some(&mut report)).await?;
    let summary = folded.analytics.summary(&folded.state, &info.phase);
    if !data.is_empty() {
        let data = data.to_vec();
        let (start, end) = (summary.start, summary.end);
        let market = tokio::task::spawn_blocking(move || market_from_files(&data, start, end))
            .await
            .map_err(|e| RunError::Other(format!("candle reader thread failed: {e}")))??;
        report.set_market(market);
    }
    let files = report.finish(&summary)?;
    Ok(Regenerated {
        files,
        summary,
        currency: info.base_currency,
    })
}

/// The price series of the candles in `files` ((symbol, path) pairs, in
/// symbol order) that a session from `start` to `end` traded: every candle
/// opening at or after `start` and closing at or before `end`, each file read
/// in order (the interval inferred as the run infers it).
///
/// # Errors
/// [`RunError::Data`] naming the file and line of the first bad row.
pub fn market_from_files(
    files: &[(String, PathBuf)],
    start: crate::types::Timestamp,
    end: crate::types::Timestamp,
) -> Result<MarketSeries, RunError> {
    let mut market = MarketSeries::new(files.iter().map(|f| f.0.clone()).collect());
    for (i, (_, path)) in files.iter().enumerate() {
        let scan = scan_candle_file(path, None)?;
        let id = u16::try_from(i)
            .map_err(|_| RunError::Other(format!("more than {} candle files", u16::MAX)))?;
        for c in CandleReader::open(path, SymbolId(id), scan.interval_ms)? {
            let c = c?;
            if c.open_time >= start && c.close_time() <= end {
                market.observe(&c);
            }
        }
    }
    Ok(market)
}
