//! The ledger's error type.

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

    /// `resume_session` found the session held by another live writer.
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

    /// `start_session` for a session that already ended; a re-run needs a new
    /// id (see `SqliteLedger::next_session_id`).
    #[error("session {session_id:?} has already ended; re-runs need a new session id")]
    SessionFinished {
        /// The session.
        session_id: String,
    },

    /// This handle no longer holds the session's writer lease: another writer
    /// took it over (after this one's lease expired) or the session was
    /// finished. Nothing of the failed call was stored.
    #[error(
        "fenced: this writer no longer holds the lease of session {session_id:?} \
         (another writer took over or the session ended); nothing was written"
    )]
    Fenced {
        /// The session.
        session_id: String,
    },

    /// `write_batch`/`finish_session` before `start_session` (or after
    /// `finish_session`) on this handle.
    #[error("no session is started on this ledger handle; call start_session first")]
    NotStarted,

    /// `start_session` while this handle is still writing another session.
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
}
