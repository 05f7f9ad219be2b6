//! The ledger's tables as the Rust side sees them: every column with its kind
//! and whether the canonical dump shows it. Mirrors `migrations/sqlite` and
//! `migrations/postgres` (same names on both backends); a test compares this
//! list with the live schema of each backend.

/// How a column is stored and rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// 64-bit integer (SQLite INTEGER, PostgreSQL BIGINT).
    Int,
    /// Text (SQLite TEXT, PostgreSQL TEXT).
    Text,
    /// Exact decimal, scale preserved (SQLite TEXT, PostgreSQL NUMERIC).
    Decimal,
}

/// One column.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Column {
    pub name: &'static str,
    pub kind: Kind,
    /// Shown by the canonical dump. Wall-clock columns, the writer's token and
    /// description, and the resume bookkeeping (batch count, checkpoint,
    /// interruption time) are not: they legitimately differ between a
    /// crashed-and-resumed run and an uninterrupted one.
    pub dumped: bool,
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        dumped: true,
    }
}

const fn hidden(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        dumped: false,
    }
}

/// One table holding rows of sessions.
#[derive(Debug)]
pub(crate) struct Table {
    pub name: &'static str,
    /// The column naming the session (`id` in `sessions`, else `session_id`).
    pub session_column: &'static str,
    /// Primary-key columns, in key order (the dump's row order).
    pub key: &'static [&'static str],
    /// Every column, in schema order.
    pub columns: &'static [Column],
}

impl Table {
    /// The columns the dump shows, in schema order.
    pub fn dumped(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.dumped)
    }
}

use Kind::{Decimal as D, Int as I, Text as T};

/// `sessions`: one row per session.
pub(crate) const SESSIONS: Table = Table {
    name: "sessions",
    session_column: "id",
    key: &["id"],
    columns: &[
        col("id", T),
        col("name", T),
        col("account", T),
        col("strategy", T),
        col("base_currency", T),
        col("initial_cash", D),
        col("config_json", T),
        col("started_at", I),
        col("phase", T),
        col("ended_at", I),
        col("cash", D),
        col("equity", D),
        col("last_batch_at", I),
        col("summary_json", T),
        hidden("writer_token", T),
        hidden("created_at", I),
        hidden("batch_seq", I),
        hidden("checkpoint_json", T),
        hidden("writer", T),
        hidden("heartbeat_at", I),
        hidden("interrupted_at", I),
    ],
};

/// `decisions`, keyed by the engine's decision seq.
pub(crate) const DECISIONS: Table = Table {
    name: "decisions",
    session_column: "session_id",
    key: &["session_id", "seq"],
    columns: &[
        col("session_id", T),
        col("seq", I),
        col("time", I),
        col("symbol", T),
        col("action", T),
        col("confidence", D),
        col("price", D),
        col("quantity", D),
        col("positive_signals", T),
        col("negative_signals", T),
        col("risk_assessment", T),
        col("reason", T),
    ],
};

/// `trades` (fills and failed orders), keyed by the engine's trade seq.
pub(crate) const TRADES: Table = Table {
    name: "trades",
    session_column: "session_id",
    key: &["session_id", "seq"],
    columns: &[
        col("session_id", T),
        col("seq", I),
        col("decision_seq", I),
        col("time", I),
        col("symbol", T),
        col("side", T),
        col("quantity", D),
        col("reference_price", D),
        col("fill_price", D),
        col("fee", D),
        col("gas", D),
        col("slippage_cost", D),
        col("latency_ms", I),
        col("realized_pnl", D),
        col("reason", T),
        col("status", T),
        col("cash_after", D),
        col("position_after", D),
        col("cost_basis_after", D),
    ],
};

/// `round_trips`, numbered by the store.
pub(crate) const ROUND_TRIPS: Table = Table {
    name: "round_trips",
    session_column: "session_id",
    key: &["session_id", "seq"],
    columns: &[
        col("session_id", T),
        col("seq", I),
        col("symbol", T),
        col("entry_time", I),
        col("entry_price", D),
        col("exit_time", I),
        col("exit_price", D),
        col("quantity", D),
        col("pnl", D),
        col("fees", D),
        col("return_pct", D),
        col("exit_reason", T),
    ],
};

/// `breaker_events`, numbered by the store.
pub(crate) const BREAKER_EVENTS: Table = Table {
    name: "breaker_events",
    session_column: "session_id",
    key: &["session_id", "seq"],
    columns: &[
        col("session_id", T),
        col("seq", I),
        col("time", I),
        col("breaker", T),
        col("from_state", T),
        col("to_state", T),
        col("reason", T),
    ],
};

/// `autopilot_adjustments`, keyed by the engine's adjustment id; the last
/// three columns are the verdict, filled in by a later batch.
pub(crate) const ADJUSTMENTS: Table = Table {
    name: "autopilot_adjustments",
    session_column: "session_id",
    key: &["session_id", "id"],
    columns: &[
        col("session_id", T),
        col("id", I),
        col("time", I),
        col("parameter", T),
        col("old_value", D),
        col("new_value", D),
        col("reason", T),
        col("metrics_before_json", T),
        col("outcome_time", I),
        col("outcome", T),
        col("metrics_after_json", T),
    ],
};

/// Columns of `autopilot_adjustments` written by the insert (the verdict
/// columns come later, by update).
pub(crate) const ADJUSTMENT_INSERT_COLUMNS: usize = 8;

/// `snapshots`, numbered by the store.
pub(crate) const SNAPSHOTS: Table = Table {
    name: "snapshots",
    session_column: "session_id",
    key: &["session_id", "seq"],
    columns: &[
        col("session_id", T),
        col("seq", I),
        col("time", I),
        col("cash", D),
        col("position_value", D),
        col("equity", D),
        col("realized_pnl", D),
        col("unrealized_pnl", D),
        col("drawdown_pct", D),
        col("open_positions", I),
        col("trades", I),
    ],
};

/// `positions`: the current state per symbol (upserted).
pub(crate) const POSITIONS: Table = Table {
    name: "positions",
    session_column: "session_id",
    key: &["session_id", "symbol"],
    columns: &[
        col("session_id", T),
        col("symbol", T),
        col("quantity", D),
        col("cost_basis", D),
        col("last_price", D),
        col("opened_at", I),
        col("updated_at", I),
    ],
};

/// Every table holding session rows, in name order (the dump's order).
pub(crate) const TABLES: [&Table; 8] = [
    &ADJUSTMENTS,
    &BREAKER_EVENTS,
    &DECISIONS,
    &POSITIONS,
    &ROUND_TRIPS,
    &SESSIONS,
    &SNAPSHOTS,
    &TRADES,
];

/// Phases a session can end in (`SessionEnd::phase`).
pub(crate) const END_PHASES: [&str; 4] = ["Completed", "Halted", "Stopped", "Failed"];
