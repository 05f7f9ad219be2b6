//! The ledger's error type, and which errors are worth retrying.

use sqlx::migrate::MigrateError;

/// Why a ledger operation failed. A failed [`write_batch`] never leaves part
/// of its batch behind: the whole transaction is rolled back.
///
/// [`write_batch`]: crate::ledger::LedgerStore::write_batch
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database rejected a statement or could not be reached (includes
    /// constraint violations such as a duplicate primary key).
    #[error("ledger database error: {0}")]
    Database(#[from] sqlx::Error),

    /// Applying the schema migrations failed (e.g. the database was written by
    /// a newer or modified schema).
    #[error("ledger schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// The directory for the database file could not be created.
    #[error("cannot create ledger directory {path:?}: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The ledger database could not be opened or reached at start-up.
    /// `url` has its password replaced by `***`, and so has `reason`.
    #[error("cannot open ledger {url}: {reason}")]
    Connect {
        /// The ledger URL or path, password redacted.
        url: String,
        /// What failed.
        reason: String,
        /// Whether retrying may help ([`LedgerError::is_transient`]).
        transient: bool,
    },

    /// A ledger URL that cannot be used.
    #[error(
        "invalid ledger URL {url}: {reason}; expected a SQLite file path, sqlite:PATH, \
             sqlite::memory:, or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
    )]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The lock file of a session could not be created or locked.
    #[error("cannot use the session lock file {path}: {source}")]
    LockFile {
        /// The lock file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Another live writer holds the session's writer lock (on start, resume,
    /// or when a writer whose lock connection was cut tries to take it back).
    #[error(
        "session {session_id:?} is being written by another live runtime ({holder}); \
         refusing to trade it twice"
    )]
    LeaseHeld {
        /// The session.
        session_id: String,
        /// The holder as it described itself, e.g. `pod/bot-a-0 pid 7 on node-1`.
        holder: String,
    },

    /// `start_session` for an id that is already stored.
    #[error("session {session_id:?} already exists in the ledger")]
    SessionExists {
        /// The session.
        session_id: String,
    },

    /// No session with this id is stored.
    #[error("no session {session_id:?} in the ledger")]
    UnknownSession {
        /// The session.
        session_id: String,
    },

    /// A stored value does not parse (e.g. a decimal column holding `abc`).
    #[error("ledger row of session {session_id:?} in {table}: {detail}")]
    Corrupt {
        /// The session.
        session_id: String,
        /// The table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },

    /// `resume_session` for a session that already ended; a re-run needs a new
    /// id (see [`LedgerStore::next_session_id`](crate::ledger::LedgerStore::next_session_id)).
    #[error("session {session_id:?} has already ended; re-runs need a new session id")]
    SessionFinished {
        /// The session.
        session_id: String,
    },

    /// This handle no longer owns the session: another writer took it over
    /// (after this one's lock died with its connection) or the session was
    /// finished or interrupted. Nothing of the failed call was stored.
    #[error(
        "fenced: this writer no longer owns session {session_id:?} \
         (another writer took it over, or it was ended); nothing was written"
    )]
    Fenced {
        /// The session.
        session_id: String,
    },

    /// `write_batch`/`interrupt_session`/`finish_session` before
    /// `start_session`/`resume_session` (or after the session was finished or
    /// interrupted) on this handle.
    #[error(
        "no session is started on this ledger handle; call start_session or resume_session first"
    )]
    NotStarted,

    /// `start_session`/`resume_session` while this handle is still writing a
    /// session.
    #[error("this ledger handle is already writing session {session_id:?}; finish it first")]
    AlreadyStarted {
        /// The session the handle is writing.
        session_id: String,
    },

    /// An adjustment outcome names an adjustment id that is not stored (neither
    /// in an earlier batch nor earlier in the same batch).
    #[error("adjustment outcome for unknown autopilot adjustment {id} of session {session_id:?}")]
    UnknownAdjustment {
        /// The session.
        session_id: String,
        /// The adjustment id.
        id: u64,
    },

    /// An unsigned counter does not fit SQL's signed 64-bit INTEGER.
    #[error("{field} = {value} does not fit in a signed 64-bit database integer")]
    OutOfRange {
        /// Record field, e.g. `trade.seq`.
        field: &'static str,
        /// The value.
        value: u64,
    },

    /// Window metrics could not be serialized to JSON.
    #[error("cannot serialize {what} as JSON: {source}")]
    Json {
        /// What was being serialized.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A value could not be encoded as a query argument.
    #[error("cannot encode a ledger value as a query argument: {0}")]
    Encode(String),

    /// `finish_session` with a phase a session cannot end in.
    #[error(
        "cannot end a session in phase {phase:?}: expected Completed, Halted, Stopped or Failed"
    )]
    InvalidPhase {
        /// The phase given.
        phase: String,
    },

    /// An unfinished session that cannot be resumed.
    #[error("session {session_id:?} cannot be resumed: {reason}")]
    NotResumable {
        /// The session.
        session_id: String,
        /// Why.
        reason: String,
    },
}

impl LedgerError {
    /// True for failures worth retrying with backoff: the database was
    /// unreachable, overloaded, restarting, or a transaction lost a race.
    /// Nothing of a failed [`write_batch`] is stored, and a retried batch
    /// whose commit had in fact succeeded is not written twice, so retrying
    /// these is always safe.
    ///
    /// Transient:
    /// - I/O errors (connection refused, reset, closed; timeouts), a pool
    ///   that timed out waiting for a connection, a crashed SQLite worker;
    /// - PostgreSQL SQLSTATE class `08` (connection exception), class `53`
    ///   (insufficient resources: disk full, out of memory, too many
    ///   connections), `57P01`-`57P03` (admin/crash shutdown, cannot connect
    ///   now: a restarting server), `40001` (serialization failure) and
    ///   `40P01` (deadlock detected);
    /// - SQLite `SQLITE_BUSY`, `SQLITE_LOCKED` (another connection holds a
    ///   lock past the busy timeout), `SQLITE_FULL` (disk full: may clear),
    ///   `SQLITE_IOERR` (any extended I/O error code).
    ///
    /// Not transient: a TLS handshake refused by a check (an untrusted or
    /// mismatched server certificate, `sslmode=require` against a server
    /// without TLS: see [`tls_rejection`]), constraint violations, fencing
    /// and lock refusals
    /// ([`Fenced`](Self::Fenced), [`LeaseHeld`](Self::LeaseHeld): another
    /// writer owns the session), corrupt rows, invalid URLs or arguments,
    /// schema migration conflicts — retrying cannot change them.
    ///
    /// [`write_batch`]: crate::ledger::LedgerStore::write_batch
    pub fn is_transient(&self) -> bool {
        match self {
            LedgerError::Database(e) => sqlx_is_transient(e),
            LedgerError::Migrate(
                MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _),
            ) => sqlx_is_transient(e),
            LedgerError::Connect { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// See [`LedgerError::is_transient`].
pub(crate) fn sqlx_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(io) => tls_rejection(io).is_none(),
        sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => match db.code() {
            Some(code)
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some() =>
            {
                pg_code_is_transient(&code)
            }
            Some(code) if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
                sqlite_code_is_transient(&code)
            }
            _ => false,
        },
        sqlx::Error::Migrate(m) => match &**m {
            MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => sqlx_is_transient(e),
            _ => false,
        },
        _ => false,
    }
}

/// The TLS check that refused a handshake, when `e` is one: sqlx reports a
/// certificate the client does not trust (rustls' `InvalidCertificate`,
/// an alert from the server, ...) as an I/O error carrying the
/// [`rustls::Error`]. Retrying meets the same certificate, so such errors
/// are configuration errors, not transient ones.
pub(crate) fn tls_rejection(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The text of a connection failure `e` for [`LedgerError::Connect`], with
/// the URL's password scrubbed; a TLS refusal says so and names the
/// settings that decide it.
pub(crate) fn connect_reason(e: &sqlx::Error, url: &str) -> String {
    let text = super::url::scrub(&e.to_string(), url);
    match e {
        sqlx::Error::Io(io) if tls_rejection(io).is_some() => format!(
            "TLS handshake refused: {text} (the server's certificate must be trusted: \
             sslrootcert=PATH in the URL, or the system trust store / SSL_CERT_FILE; \
             sslmode=require encrypts without verifying)"
        ),
        _ => text,
    }
}

fn pg_code_is_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
}

/// `code` is SQLite's extended result code; its low byte is the primary code.
fn sqlite_code_is_transient(code: &str) -> bool {
    const BUSY: i64 = 5;
    const LOCKED: i64 = 6;
    const IOERR: i64 = 10;
    const FULL: i64 = 13;
    code.parse::<i64>()
        .is_ok_and(|c| matches!(c & 0xff, BUSY | LOCKED | IOERR | FULL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes_that_clear_up_are_transient() {
        for code in [
            "08000", "08006", "08P01", "53100", "53300", "57P01", "57P02", "57P03", "40001",
            "40P01",
        ] {
            assert!(pg_code_is_transient(code), "{code}");
        }
        for code in [
            "23505", "23503", "42P01", "3D000", "28P01", "57014", "22003",
        ] {
            assert!(!pg_code_is_transient(code), "{code}");
        }
    }

    #[test]
    fn sqlite_busy_locked_full_and_io_errors_are_transient() {
        // Extended codes keep the primary code in the low byte:
        // SQLITE_BUSY_SNAPSHOT = 5 | 2 << 8, SQLITE_IOERR_FSYNC = 10 | 4 << 8.
        for code in ["5", "517", "6", "262", "10", "1034", "13"] {
            assert!(sqlite_code_is_transient(code), "{code}");
        }
        // SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CORRUPT, SQLITE_READONLY, SQLITE_ERROR.
        for code in ["1555", "11", "8", "1", "x"] {
            assert!(!sqlite_code_is_transient(code), "{code}");
        }
    }

    #[test]
    fn a_refused_tls_handshake_is_a_configuration_error() {
        let refused = || {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            ))
        };
        assert!(!sqlx_is_transient(&refused()));
        let url = "postgres://u:hunter2@db/x?sslmode=verify-full";
        let reason = connect_reason(&refused(), url);
        assert!(
            reason.starts_with("TLS handshake refused: ") && reason.contains("UnknownIssuer"),
            "{reason}"
        );
        // Any other I/O error keeps its text and stays transient.
        let reset = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset by peer",
        ));
        assert!(sqlx_is_transient(&reset));
        assert_eq!(connect_reason(&reset, url), reset.to_string());
    }

    #[test]
    fn io_and_pool_timeouts_are_transient_but_fencing_is_not() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(LedgerError::Database(sqlx::Error::Io(io)).is_transient());
        assert!(LedgerError::Database(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!LedgerError::Database(sqlx::Error::RowNotFound).is_transient());
        assert!(
            !LedgerError::Fenced {
                session_id: "s".into()
            }
            .is_transient()
        );
        assert!(
            !LedgerError::LeaseHeld {
                session_id: "s".into(),
                holder: "h".into()
            }
            .is_transient()
        );
    }
}
