//! Test fixtures backed by real services.
//!
//! [`PostgresServer`] runs a throw-away PostgreSQL server from Debian's
//! binaries (`/usr/lib/postgresql/<version>/bin`, package `postgresql`) on a
//! free loopback port, for the ledger's tests, the runtime's crash and outage
//! tests and the end-to-end tests. A test that cannot start it fails with the
//! reason; nothing is skipped.
//!
//! ```no_run
//! let server = paperbot_testkit::PostgresServer::shared()?;
//! let url = server.create_database("my_test")?;
//! // ... connect to `url` ...
//! # Ok::<(), paperbot_testkit::FixtureError>(())
//! ```

#![warn(missing_docs)]

mod install;
mod logged;
mod postgres;
mod promtool;
mod supervisor;

pub use install::Installation;
pub use logged::{logged_addr, wait_for_logged_addr};
pub use postgres::{FixtureError, PostgresServer};
pub use promtool::{assert_promtool_clean, promtool_findings};
