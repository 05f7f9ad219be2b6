//! The ledger: every decision, fill, breaker event, autopilot adjustment and
//! snapshot of a session, stored in SQLite (embedded default) or PostgreSQL.
//!
//! The engine fills [`records::LedgerBatch`]es; a [`LedgerStore`] writes each
//! batch in one database transaction, with the runner's checkpoint, under a
//! writer lock that dies with its holder (see the durability contract in
//! [`store`]). [`open`] picks the backend from the ledger URL and returns a
//! [`Ledger`].
//!
//! Layout: [`store`] (the trait), [`sqlite`] and [`postgres`] (opening each
//! backend), and, shared by both through a small `Dialect` trait: the table
//! list (`schema`), SQL generation (`sql`), row binding (`bind`) and
//! decoding (`decode`), the writer with its fencing (`writer`), the writer
//! locks (`lock`, `advisory`), the readers (`read`) and the canonical dump
//! (`dump`). [`query`] holds the HTTP API's read-only, keyset-paged queries
//! (a pool of their own beside the writer's).

mod advisory;
mod bind;
mod decode;
mod dialect;
mod dump;
mod error;
mod lock;
pub mod postgres;
pub mod query;
mod read;
pub mod records;
pub mod sample;
mod schema;
mod sql;
pub mod sqlite;
pub mod store;
pub mod url;
mod writer;

use std::future::Future;

pub use error::LedgerError;
pub use postgres::PgLedger;
pub use sqlite::SqliteLedger;
pub use store::{INTERRUPTED_PHASE, LedgerStore, RUNNING_PHASE, ResumePoint, SessionInfo};
pub use url::redact as redact_url;

use records::{LedgerBatch, SessionEnd, SessionRecord};

use crate::types::Timestamp;

/// A ledger of either backend, as [`open`] returns it.
#[derive(Debug)]
pub enum Ledger {
    /// Embedded SQLite.
    Sqlite(SqliteLedger),
    /// PostgreSQL (boxed: its handle is larger).
    Postgres(Box<PgLedger>),
}

/// Open the ledger at `url`: `postgres://...` or `postgresql://...` opens
/// PostgreSQL ([`PgLedger::open`]); anything else — a file path, a
/// `sqlite:` URL, `sqlite::memory:` — opens SQLite ([`SqliteLedger::open`]).
/// Either way the schema is brought up to date.
///
/// # Errors
/// As the backend's `open`. No error shows the URL's password.
pub async fn open(url: &str) -> Result<Ledger, LedgerError> {
    match url::backend(url) {
        url::Backend::Postgres => PgLedger::open(url)
            .await
            .map(|l| Ledger::Postgres(Box::new(l))),
        url::Backend::Sqlite => SqliteLedger::open(url).await.map(Ledger::Sqlite),
    }
}

impl Ledger {
    /// `"SQLite"` or `"PostgreSQL"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Ledger::Sqlite(_) => "SQLite",
            Ledger::Postgres(_) => "PostgreSQL",
        }
    }

    /// Id of the session this handle is writing, if any.
    pub fn active_session(&self) -> Option<&str> {
        match self {
            Ledger::Sqlite(l) => l.active_session(),
            Ledger::Postgres(l) => l.active_session(),
        }
    }

    /// Test hook: the next successful `write_batch` commit reports a lost
    /// acknowledgement (an I/O error) instead of `Ok`.
    #[cfg(test)]
    pub(crate) fn lose_next_ack(&mut self) {
        match self {
            Ledger::Sqlite(l) => l.core.lose_next_ack = true,
            Ledger::Postgres(l) => l.core.lose_next_ack = true,
        }
    }
}

/// `impl LedgerStore` for a backend type whose `core` field is a
/// [`writer::Writer`], and for [`Ledger`] by delegating to its variants.
macro_rules! store_impl {
    ($($ty:ty),*) => {$(
        impl LedgerStore for $ty {
            fn next_session_id(&self, name: &str) -> impl Future<Output = Result<String, LedgerError>> + Send {
                read::next_session_id(self.core.pool(), name)
            }
            fn start_session(&mut self, s: &SessionRecord, writer: &str) -> impl Future<Output = Result<(), LedgerError>> + Send {
                self.core.start_session(s, writer)
            }
            fn resume_session(&mut self, id: &str, writer: &str) -> impl Future<Output = Result<ResumePoint, LedgerError>> + Send {
                self.core.resume_session(id, writer)
            }
            fn write_batch(&mut self, b: &LedgerBatch, checkpoint: &str) -> impl Future<Output = Result<(), LedgerError>> + Send {
                self.core.write_batch(b, checkpoint)
            }
            fn interrupt_session(&mut self, at: Timestamp) -> impl Future<Output = Result<(), LedgerError>> + Send {
                self.core.interrupt_session(at)
            }
            fn finish_session(&mut self, end: &SessionEnd) -> impl Future<Output = Result<(), LedgerError>> + Send {
                self.core.finish_session(end)
            }
            fn list_sessions(&self) -> impl Future<Output = Result<Vec<SessionInfo>, LedgerError>> + Send {
                read::list_sessions(self.core.pool())
            }
            fn session(&self, id: &str) -> impl Future<Output = Result<Option<SessionInfo>, LedgerError>> + Send {
                async move { Ok(read::session_state(self.core.pool(), id).await?.map(|s| s.info)) }
            }
            fn checkpoint(&self, id: &str) -> impl Future<Output = Result<Option<String>, LedgerError>> + Send {
                async move { Ok(read::session_state(self.core.pool(), id).await?.and_then(|s| s.checkpoint)) }
            }
            fn find_unfinished(&self, name: &str) -> impl Future<Output = Result<Option<SessionInfo>, LedgerError>> + Send {
                read::find_unfinished(self.core.pool(), name)
            }
            fn read_records(
                &self,
                id: &str,
                chunk: usize,
                sink: &mut (dyn FnMut(LedgerBatch) -> Result<(), LedgerError> + Send),
            ) -> impl Future<Output = Result<(), LedgerError>> + Send {
                read::read_records(self.core.pool(), id, chunk, sink)
            }
            fn dump_session(&self, id: &str) -> impl Future<Output = Result<String, LedgerError>> + Send {
                dump::dump_session(self.core.pool(), id)
            }
            fn close(self) -> impl Future<Output = ()> + Send {
                self.close_pool()
            }
        }
    )*};
}

store_impl!(SqliteLedger, PgLedger);

/// Call `$method` on whichever backend `$self` holds.
macro_rules! each {
    ($self:expr, $l:ident => $call:expr) => {
        match $self {
            Ledger::Sqlite($l) => $call.await,
            Ledger::Postgres($l) => $call.await,
        }
    };
}

impl LedgerStore for Ledger {
    async fn next_session_id(&self, name: &str) -> Result<String, LedgerError> {
        each!(self, l => l.next_session_id(name))
    }
    async fn start_session(&mut self, s: &SessionRecord, writer: &str) -> Result<(), LedgerError> {
        each!(self, l => l.start_session(s, writer))
    }
    async fn resume_session(&mut self, id: &str, writer: &str) -> Result<ResumePoint, LedgerError> {
        each!(self, l => l.resume_session(id, writer))
    }
    async fn write_batch(&mut self, b: &LedgerBatch, checkpoint: &str) -> Result<(), LedgerError> {
        each!(self, l => l.write_batch(b, checkpoint))
    }
    async fn interrupt_session(&mut self, at: Timestamp) -> Result<(), LedgerError> {
        each!(self, l => l.interrupt_session(at))
    }
    async fn finish_session(&mut self, end: &SessionEnd) -> Result<(), LedgerError> {
        each!(self, l => l.finish_session(end))
    }
    async fn list_sessions(&self) -> Result<Vec<SessionInfo>, LedgerError> {
        each!(self, l => l.list_sessions())
    }
    async fn session(&self, id: &str) -> Result<Option<SessionInfo>, LedgerError> {
        each!(self, l => l.session(id))
    }
    async fn checkpoint(&self, id: &str) -> Result<Option<String>, LedgerError> {
        each!(self, l => l.checkpoint(id))
    }
    async fn find_unfinished(&self, name: &str) -> Result<Option<SessionInfo>, LedgerError> {
        each!(self, l => l.find_unfinished(name))
    }
    async fn read_records(
        &self,
        id: &str,
        chunk: usize,
        sink: &mut (dyn FnMut(LedgerBatch) -> Result<(), LedgerError> + Send),
    ) -> Result<(), LedgerError> {
        each!(self, l => l.read_records(id, chunk, sink))
    }
    async fn dump_session(&self, id: &str) -> Result<String, LedgerError> {
        each!(self, l => l.dump_session(id))
    }
    async fn close(self) {
        each!(self, l => l.close())
    }
}

#[cfg(test)]
mod tests;
