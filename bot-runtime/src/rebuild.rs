//! Reports derived from the ledger alone.
//!
//! A session's report (CSVs, `summary.json`, `equity.png`) is a function of
//! what the ledger committed: its records, folded through the same
//! [`Analytics`] and [`ReportWriter`] as during the run, and the engine's
//! figures from the last committed checkpoint. The runner uses this to bring
//! the report of a resumed session back in line with the ledger before it
//! continues; `bot-runtime report` uses it to regenerate a report directory.

use std::path::Path;

use crate::{
    analytics::{Analytics, Summary},
    ledger::{LedgerError, LedgerStore},
    report::{ReportError, ReportFiles, ReportWriter},
    runner::{Checkpoint, RunError},
};

/// Records read from the ledger per kind and call.
const READ_CHUNK: usize = 4096;

/// Feed every committed record of session `id` into `analytics` and `report`,
/// in ledger order.
///
/// # Errors
/// [`RunError::Ledger`] for a read failure, [`RunError::Report`] when a
/// report file cannot be written.
pub async fn replay_records<L: LedgerStore>(
    ledger: &L,
    id: &str,
    analytics: &mut Analytics,
    report: &mut ReportWriter,
) -> Result<(), RunError> {
    let mut report_error: Option<ReportError> = None;
    let mut sink = |batch: crate::ledger::records::LedgerBatch| -> Result<(), LedgerError> {
        analytics.on_batch(&batch);
        if let Err(e) = report.write_batch(&batch) {
            report_error = Some(e);
            return Err(LedgerError::Encode("report write failed".into()));
        }
        Ok(())
    };
    let read = ledger.read_records(id, READ_CHUNK, &mut sink).await;
    if let Some(e) = report_error {
        return Err(RunError::Report(e));
    }
    read.map_err(RunError::Ledger)
}

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
///
/// # Errors
/// [`LedgerError::UnknownSession`] (as [`RunError::Ledger`]) when the ledger
/// has no such session, [`RunError::Resume`] when its checkpoint is
/// unreadable, and read or write failures.
pub async fn regenerate_report<L: LedgerStore>(
    ledger: &L,
    id: &str,
    out: &Path,
) -> Result<Regenerated, RunError> {
    let info = ledger
        .session(id)
        .await?
        .ok_or_else(|| LedgerError::UnknownSession {
            session_id: id.to_owned(),
        })?;
    let checkpoint = match ledger.checkpoint(id).await? {
        Some(text) => Some(Checkpoint::from_json(&text).map_err(|e| RunError::Resume {
            session_id: id.to_owned(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    let interval = checkpoint
        .as_ref()
        .map_or(3_600_000, |c| c.snapshot_interval_ms);
    let mut analytics = Analytics::new(info.initial_cash, interval);
    let mut report = ReportWriter::create(out, &info.id)?;
    replay_records(ledger, id, &mut analytics, &mut report).await?;
    let state = match &checkpoint {
        Some(cp) => cp.engine.state(),
        None => crate::runner::initial_state(info.initial_cash, Some(info.started_at)),
    };
    let summary = analytics.summary(&state, &info.phase);
    let files = report.finish(&summary)?;
    Ok(Regenerated {
        files,
        summary,
        currency: info.base_currency,
    })
}
