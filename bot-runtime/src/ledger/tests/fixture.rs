//! Where the suite's databases come from: a temporary directory of SQLite
//! files, or databases on a real PostgreSQL server (one per test binary,
//! started on first use from Debian's binaries by `paperbot-testkit`).

use std::sync::atomic::{AtomicU64, Ordering};

use paperbot_testkit::PostgresServer;

use crate::ledger::{self, Ledger, LedgerError};

/// A source of fresh ledger databases.
pub(super) trait Fixture: Sync {
    /// `"sqlite"` or `"postgres"`.
    const NAME: &'static str;

    /// URL of a new, empty ledger database (`tag` makes it recognisable).
    fn fresh(&self, tag: &str) -> String;
}

/// SQLite files in a temporary directory removed with the fixture.
pub(super) struct Sqlite {
    dir: tempfile::TempDir,
    n: AtomicU64,
}

impl Sqlite {
    pub(super) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}")),
            n: AtomicU64::new(0),
        }
    }
}

impl Fixture for Sqlite {
    const NAME: &'static str = "sqlite";

    fn fresh(&self, tag: &str) -> String {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("{tag}-{n}.db"));
        path.to_str()
            .unwrap_or_else(|| panic!("non-UTF-8 temp path {}", path.display()))
            .to_owned()
    }
}

/// Databases on the shared PostgreSQL test server. The server starts on the
/// first `fresh` call; a server that cannot start fails the test with the
/// reason.
pub(super) struct Postgres;

impl Postgres {
    pub(super) fn new() -> Self {
        Self
    }

    /// The shared server (panics with the reason it could not start).
    pub(super) fn server() -> &'static PostgresServer {
        PostgresServer::shared().unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Fixture for Postgres {
    const NAME: &'static str = "postgres";

    fn fresh(&self, tag: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name: String = format!("l_{tag}_{n}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(63)
            .collect();
        Self::server()
            .create_database(&name)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Open the ledger at `url`, failing the test with the reason.
pub(super) async fn open(url: &str) -> Ledger {
    ledger::open(url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// Run one raw SQL statement on a ledger's own pool (to simulate what no
/// API call can do, e.g. a takeover behind a writer's back); returns the
/// number of rows changed.
pub(super) async fn exec(ledger: &Ledger, sql: &'static str) -> Result<u64, LedgerError> {
    Ok(match ledger {
        Ledger::Sqlite(l) => sqlx::query(sql).execute(l.pool()).await?.rows_affected(),
        Ledger::Postgres(l) => sqlx::query(sql).execute(l.pool()).await?.rows_affected(),
    })
}

/// One integer from a raw SQL query on a ledger's pool.
pub(super) async fn scalar(ledger: &Ledger, sql: &'static str) -> i64 {
    let v: Result<i64, sqlx::Error> = match ledger {
        Ledger::Sqlite(l) => sqlx::query_scalar(sql).fetch_one(l.pool()).await,
        Ledger::Postgres(l) => sqlx::query_scalar(sql).fetch_one(l.pool()).await,
    };
    v.unwrap_or_else(|e| panic!("{sql}: {e}"))
}
