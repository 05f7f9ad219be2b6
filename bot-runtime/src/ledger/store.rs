//! The storage trait behind which every ledger backend sits.
//!
//! # Durability contract (both backends)
//!
//! * **One transaction per batch.** [`LedgerStore::write_batch`] stores a
//!   batch's rows, the session's cash/equity and the runner's checkpoint (the
//!   engine and feed state after the batch) in one transaction, so the stored
//!   rows and the stored checkpoint always describe the same instant.
//! * **Idempotent batches.** Each batch carries the next batch number of the
//!   session (`sessions.batch_seq + 1`). A retry of a batch whose commit
//!   succeeded but whose acknowledgement was lost (connection dropped during
//!   `COMMIT`) is recognised by its number and answered `Ok` without writing
//!   anything twice.
//! * **One writer per session across processes and pods.** Starting or
//!   resuming a session takes a lock that dies with its holder: an advisory
//!   lock on a dedicated connection (PostgreSQL), an `flock` on a lock file
//!   beside the database (SQLite). A second writer of the same session is
//!   refused with [`LedgerError::LeaseHeld`] naming the holder; a crashed
//!   holder's lock is released by the operating system / the database at once,
//!   so a restarted runtime resumes without waiting. Every write also checks a
//!   random writer token in its transaction, so a writer that lost its lock
//!   (e.g. its connection was cut and another writer took over) is
//!   [`LedgerError::Fenced`] and stores nothing.

use std::future::Future;

use rust_decimal::Decimal;
use serde::Serialize;

use super::LedgerError;
use super::records::{LedgerBatch, SessionEnd, SessionRecord};
use crate::types::Timestamp;

/// Phase of a session between its start and its end, while a writer holds it
/// (or held it when it crashed).
pub const RUNNING_PHASE: &str = "Running";

/// Phase of a session stopped by SIGTERM/SIGINT: not finished, resumable.
pub const INTERRUPTED_PHASE: &str = "Interrupted";

/// What a ledger knows about one stored session (a row of `sessions`, plus
/// counts), for `sessions list|show`, resume and reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionInfo {
    /// Session id (the BotSession name, plus `-N` for a re-run).
    pub id: String,
    /// BotSession name.
    pub name: String,
    /// PaperAccount name.
    pub account: String,
    /// StrategyConfig name.
    pub strategy: String,
    /// Quote (base) currency of the account, e.g. `USD`.
    pub base_currency: String,
    /// Starting cash, quote currency.
    pub initial_cash: Decimal,
    /// `Running`, `Interrupted`, `Completed`, `Halted`, `Stopped` or `Failed`.
    pub phase: String,
    /// Market time of the session's first candle.
    pub started_at: Timestamp,
    /// Market time of the end; `None` while unfinished.
    pub ended_at: Option<Timestamp>,
    /// Market time of the last committed batch; `None` before the first.
    pub last_batch_at: Option<Timestamp>,
    /// Cash after the last committed batch (final once ended), quote currency.
    pub cash: Decimal,
    /// Equity at the last committed snapshot (final once ended), quote currency.
    pub equity: Decimal,
    /// Number of trade rows (fills and failed orders).
    pub trades: u64,
    /// Number of committed batches (`sessions.batch_seq`).
    pub batches: u64,
    /// Who holds (or last held) the writer lock, e.g. `pod/bot-a-0 pid 7`;
    /// `None` once ended.
    pub writer: Option<String>,
    /// Wall clock (ms since the epoch) of the holder's last write.
    pub heartbeat_at: Option<i64>,
    /// The resolved configuration the session was started with (JSON).
    pub config_json: String,
    /// The summary (as in `summary.json`), once ended.
    pub summary_json: Option<String>,
}

impl SessionInfo {
    /// True while the session is unfinished (`Running` or `Interrupted`).
    pub fn is_unfinished(&self) -> bool {
        self.ended_at.is_none()
    }
}

/// What [`LedgerStore::resume_session`] hands back: the stored session and the
/// checkpoint of its last committed batch.
#[derive(Clone, Debug, PartialEq)]
pub struct ResumePoint {
    /// The stored session.
    pub info: SessionInfo,
    /// The checkpoint written with the last committed batch, exactly as the
    /// runner gave it to [`LedgerStore::write_batch`]; `None` if no batch was
    /// committed yet (resume = start from the first candle).
    pub checkpoint: Option<String>,
}

/// A ledger backend: one handle writes one session at a time, in order, and
/// reads any session.
///
/// The futures are `Send` so the store can run on its own tokio task.
pub trait LedgerStore: Send {
    /// The id a new run of the BotSession `name` gets: `name` if unused, else
    /// the smallest free `name-N` (N >= 2).
    ///
    /// # Errors
    /// [`LedgerError::Database`] on database failures.
    fn next_session_id(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<String, LedgerError>> + Send;

    /// Register a new session (its row must not exist; cash and equity start at
    /// `initial_cash`, phase `Running`, `started_at` as given) and take its
    /// writer lock. `writer` describes this process for others (shown by
    /// `sessions list` and in [`LedgerError::LeaseHeld`]).
    ///
    /// # Errors
    /// [`LedgerError::SessionExists`] if the id is taken,
    /// [`LedgerError::LeaseHeld`] if another writer is starting the same id
    /// at this moment, [`LedgerError::AlreadyStarted`] if this handle is
    /// writing a session, [`LedgerError::LockFile`] if SQLite's lock file
    /// cannot be created, [`LedgerError::Database`] on database failures.
    fn start_session(
        &mut self,
        s: &SessionRecord,
        writer: &str,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Take the writer lock of an unfinished session (`Running` after a crash,
    /// or `Interrupted`), set its phase back to `Running`, and return it with
    /// its last checkpoint. Later batches continue the stored numbering.
    ///
    /// # Errors
    /// [`LedgerError::UnknownSession`] if there is no such session,
    /// [`LedgerError::SessionFinished`] if it already ended,
    /// [`LedgerError::LeaseHeld`] if a live writer holds it (naming it),
    /// [`LedgerError::NotResumable`] if its batches were written without
    /// checkpoints (by a runtime before resumable sessions),
    /// [`LedgerError::AlreadyStarted`] if this handle is writing a session,
    /// [`LedgerError::LockFile`], [`LedgerError::Database`] on database
    /// failures.
    fn resume_session(
        &mut self,
        id: &str,
        writer: &str,
    ) -> impl Future<Output = Result<ResumePoint, LedgerError>> + Send;

    /// Write everything in the batch, the session's cash (and the equity of
    /// the batch's last snapshot, if any), market time and `checkpoint` in ONE
    /// transaction, as batch number `sessions.batch_seq + 1`. A retry after an
    /// error is safe (see the module docs): a batch already committed is not
    /// written again.
    ///
    /// Before writing, the handle checks that it still holds the session's
    /// lock, and takes it again if it was lost with its connection
    /// (PostgreSQL outage or network cut).
    ///
    /// # Errors
    /// [`LedgerError::Fenced`] if this handle lost the session (another
    /// writer took it over or ended it), [`LedgerError::LeaseHeld`] if its
    /// lock was lost and another writer holds it now,
    /// [`LedgerError::NotStarted`] without a started session,
    /// [`LedgerError::UnknownAdjustment`] for an outcome of an unknown
    /// adjustment, [`LedgerError::OutOfRange`] for a counter beyond `i64`,
    /// [`LedgerError::Database`] for constraint violations and other
    /// database failures (see [`LedgerError::is_transient`]). On any error
    /// nothing of the batch is stored, and the same batch may be retried.
    fn write_batch(
        &mut self,
        b: &LedgerBatch,
        checkpoint: &str,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Record that the session was interrupted (SIGTERM/SIGINT) at market time
    /// `at` (stored in `sessions.interrupted_at`): phase `Interrupted`, not
    /// ended, resumable; release the writer lock. The handle can then start
    /// another session.
    ///
    /// # Errors
    /// As [`finish_session`](Self::finish_session) (except `InvalidPhase`).
    fn interrupt_session(
        &mut self,
        at: Timestamp,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Record how the session ended (phase, end time, final cash and equity,
    /// summary) and release the writer lock.
    ///
    /// # Errors
    /// [`LedgerError::InvalidPhase`] unless the phase is `Completed`,
    /// `Halted`, `Stopped` or `Failed`; [`LedgerError::Fenced`] or
    /// [`LedgerError::LeaseHeld`] if this handle lost the session (it is
    /// then done with it); [`LedgerError::NotStarted`] without a started
    /// session; [`LedgerError::Database`] on database failures — the handle
    /// then keeps the session and its lock, so the call can be retried.
    fn finish_session(
        &mut self,
        end: &SessionEnd,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Every stored session, newest first (by creation).
    ///
    /// # Errors
    /// [`LedgerError::Database`] on database failures.
    fn list_sessions(&self) -> impl Future<Output = Result<Vec<SessionInfo>, LedgerError>> + Send;

    /// One stored session, or `None`.
    ///
    /// # Errors
    /// [`LedgerError::Database`] on database failures.
    fn session(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<SessionInfo>, LedgerError>> + Send;

    /// The checkpoint stored with session `id`'s last committed batch, exactly
    /// as written (`None` before the first batch or for an unknown session).
    /// Reading it takes no lock: reports regenerate from it.
    ///
    /// # Errors
    /// [`LedgerError::Database`] on database failures.
    fn checkpoint(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<String>, LedgerError>> + Send;

    /// The newest unfinished session whose BotSession name is `name`.
    ///
    /// # Errors
    /// [`LedgerError::Database`] on database failures.
    fn find_unfinished(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<SessionInfo>, LedgerError>> + Send;

    /// Every committed record of a session, in order, as batches of at most
    /// `chunk` records per kind: decisions and trades by `seq`, round trips,
    /// breaker events and snapshots by their stored seq, adjustments by id
    /// (each adjustment that has a verdict also yields its
    /// [`AdjustmentOutcomeRecord`](super::records::AdjustmentOutcomeRecord) in
    /// the same or a later batch), positions as stored now. Feeding them to
    /// `Analytics::on_batch` and `ReportWriter::write_batch` gives the same
    /// result as the batches the engine produced.
    ///
    /// # Errors
    /// [`LedgerError::UnknownSession`], [`LedgerError::Database`], or a stored
    /// value that does not parse ([`LedgerError::Corrupt`]).
    fn read_records(
        &self,
        id: &str,
        chunk: usize,
        sink: &mut (dyn FnMut(LedgerBatch) -> Result<(), LedgerError> + Send),
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Canonical text of every row of one session (all tables, by key),
    /// identical across backends for identical sessions: used to prove that a
    /// resumed session equals an uninterrupted one. Left out, because they
    /// legitimately differ between a crashed-and-resumed run and an
    /// uninterrupted one: wall-clock columns (`created_at`, `heartbeat_at`),
    /// the writer token and description, `batch_seq`, `checkpoint_json` and
    /// `interrupted_at`.
    ///
    /// # Errors
    /// [`LedgerError::Database`] on database failures.
    fn dump_session(&self, id: &str) -> impl Future<Output = Result<String, LedgerError>> + Send;

    /// Release the writer lock and close the pool. SQLite first checkpoints
    /// its WAL (`TRUNCATE`), so the database file alone holds every
    /// committed row.
    fn close(self) -> impl Future<Output = ()> + Send;
}
