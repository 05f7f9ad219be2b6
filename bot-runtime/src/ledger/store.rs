//! The storage trait behind which every ledger backend sits.

use std::future::Future;

use super::LedgerError;
use super::records::{LedgerBatch, SessionEnd, SessionRecord};

/// A ledger backend: one handle writes one session at a time, in order.
///
/// Writers are fenced: [`start_session`](Self::start_session) takes the
/// session's writer lease and stores a unique fencing token; every later write
/// of the handle checks that token inside its transaction, so a writer whose
/// lease was taken over can never interleave rows with the new holder.
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

    /// Register the session (a new row; its cash and equity start at
    /// `initial_cash`) and take the writer lease with a fresh fencing token.
    ///
    /// If the session row already exists and is not finished, the lease is
    /// taken over only when the previous holder's lease has expired; the stored
    /// row is kept as it is (its `SessionRecord` fields are not rewritten) and
    /// per-session counters continue after the stored rows.
    ///
    /// # Errors
    /// [`LedgerError::LeaseHeld`] if another writer's lease is live,
    /// [`LedgerError::SessionFinished`] if the session already ended,
    /// [`LedgerError::AlreadyStarted`] if this handle is writing a session,
    /// [`LedgerError::Database`] on database failures.
    fn start_session(
        &mut self,
        s: &SessionRecord,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Write everything in the batch in ONE transaction: a trade, its position
    /// change and its cash change commit together or not at all. Also stores
    /// the batch's cash (and the equity of its last snapshot, if any) on the
    /// session row and renews the writer lease.
    ///
    /// # Errors
    /// [`LedgerError::Fenced`] if this handle lost the lease,
    /// [`LedgerError::NotStarted`] without a started session,
    /// [`LedgerError::UnknownAdjustment`] for an outcome of an unknown
    /// adjustment, [`LedgerError::Database`] for constraint violations (e.g. a
    /// repeated decision/trade seq or adjustment id) and other database
    /// failures. On any error nothing of the batch is stored.
    fn write_batch(
        &mut self,
        b: &LedgerBatch,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Record how the session ended (phase, end time, final cash and equity,
    /// summary) and release the writer lease; the handle can then start
    /// another session.
    ///
    /// # Errors
    /// [`LedgerError::Fenced`] if this handle lost the lease,
    /// [`LedgerError::NotStarted`] without a started session,
    /// [`LedgerError::Database`] on database failures.
    fn finish_session(
        &mut self,
        end: &SessionEnd,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
}
