//! The ledger: every decision, fill, breaker event, autopilot adjustment and
//! snapshot of a session, stored in SQLite (embedded default) or PostgreSQL.

pub mod records;
