//! The ledger: every decision, fill, breaker event, autopilot adjustment and
//! snapshot of a session, stored in SQLite (embedded default) or PostgreSQL.
//!
//! The engine fills [`records::LedgerBatch`]es; a [`LedgerStore`] writes each
//! batch in one database transaction. [`SqliteLedger`] is the embedded
//! implementation; [`dump_session`] renders one stored session as canonical
//! text for determinism tests.

mod error;
pub mod records;
pub mod sqlite;
pub mod store;

pub use error::LedgerError;
pub use sqlite::{SqliteLedger, dump_session};
pub use store::LedgerStore;

#[cfg(test)]
mod tests;
