-- paperbot ledger, SQLite schema (version 1).
--
-- Conventions (kept portable to the later PostgreSQL schema, which uses the
-- same table and column names):
--   * money, prices, quantities, percents: TEXT holding the exact decimal form
--     of a rust_decimal::Decimal (scale preserved, e.g. '0.10'); NUMERIC in PostgreSQL;
--   * times: INTEGER milliseconds since the Unix epoch, market time, except
--     sessions.created_at and sessions.lease_expires_at (wall clock);
--   * enums: TEXT, snake_case / lower case as the records' as_str();
--   * every child table is keyed by (session_id, per-session number), so the
--     rows of one session are contiguous in the primary-key b-tree.
-- STRICT makes SQLite enforce the declared types; WITHOUT ROWID stores each
-- child table as one b-tree clustered on its primary key (no second index).

CREATE TABLE sessions (
    id               TEXT    NOT NULL PRIMARY KEY,
    name             TEXT    NOT NULL,            -- BotSession name
    account          TEXT    NOT NULL,            -- PaperAccount name
    strategy         TEXT    NOT NULL,            -- StrategyConfig name
    base_currency    TEXT    NOT NULL,
    initial_cash     TEXT    NOT NULL,            -- decimal
    config_json      TEXT    NOT NULL,
    started_at       INTEGER NOT NULL,            -- market time, ms
    phase            TEXT    NOT NULL,            -- Running, then Completed/Halted/Stopped/Failed
    ended_at         INTEGER,                     -- market time, ms; NULL while running
    cash             TEXT    NOT NULL,            -- decimal; current, final once ended
    equity           TEXT    NOT NULL,            -- decimal; last snapshot, final once ended
    last_batch_at    INTEGER,                     -- market time of the last written batch
    summary_json     TEXT,                        -- NULL while running
    writer_token     TEXT,                        -- fencing token of the lease holder; NULL once ended
    lease_expires_at INTEGER,                     -- wall clock, ms; NULL once ended
    created_at       INTEGER NOT NULL             -- wall clock, ms
) STRICT;

CREATE INDEX sessions_by_name ON sessions (name);

CREATE TABLE decisions (
    session_id       TEXT    NOT NULL REFERENCES sessions (id),
    seq              INTEGER NOT NULL,
    time             INTEGER NOT NULL,
    symbol           TEXT    NOT NULL,
    action           TEXT    NOT NULL CHECK (action IN ('buy', 'sell', 'skip', 'hold')),
    confidence       TEXT    NOT NULL,
    price            TEXT    NOT NULL,
    quantity         TEXT,
    positive_signals TEXT    NOT NULL,
    negative_signals TEXT    NOT NULL,
    risk_assessment  TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    PRIMARY KEY (session_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE trades (
    session_id       TEXT    NOT NULL REFERENCES sessions (id),
    seq              INTEGER NOT NULL,
    decision_seq     INTEGER NOT NULL,            -- 0 for automatic exits
    time             INTEGER NOT NULL,
    symbol           TEXT    NOT NULL,
    side             TEXT    NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity         TEXT    NOT NULL,
    reference_price  TEXT    NOT NULL,
    fill_price       TEXT    NOT NULL,
    fee              TEXT    NOT NULL,
    gas              TEXT    NOT NULL,
    slippage_cost    TEXT    NOT NULL,
    latency_ms       INTEGER NOT NULL,
    realized_pnl     TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('filled', 'failed')),
    cash_after       TEXT    NOT NULL,
    position_after   TEXT    NOT NULL,
    cost_basis_after TEXT    NOT NULL,
    PRIMARY KEY (session_id, seq)
) STRICT, WITHOUT ROWID;

-- Per-symbol trade history (the report, the operator's status).
CREATE INDEX trades_by_symbol ON trades (session_id, symbol, seq);

CREATE TABLE round_trips (
    session_id       TEXT    NOT NULL REFERENCES sessions (id),
    seq              INTEGER NOT NULL,            -- assigned by the store, from 1, in write order
    symbol           TEXT    NOT NULL,
    entry_time       INTEGER NOT NULL,
    entry_price      TEXT    NOT NULL,
    exit_time        INTEGER NOT NULL,
    exit_price       TEXT    NOT NULL,
    quantity         TEXT    NOT NULL,
    pnl              TEXT    NOT NULL,
    fees             TEXT    NOT NULL,
    return_pct       TEXT    NOT NULL,
    exit_reason      TEXT    NOT NULL,
    PRIMARY KEY (session_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE breaker_events (
    session_id       TEXT    NOT NULL REFERENCES sessions (id),
    seq              INTEGER NOT NULL,            -- assigned by the store, from 1, in write order
    time             INTEGER NOT NULL,
    breaker          TEXT    NOT NULL,
    from_state       TEXT    NOT NULL,
    to_state         TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    PRIMARY KEY (session_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE autopilot_adjustments (
    session_id          TEXT    NOT NULL REFERENCES sessions (id),
    id                  INTEGER NOT NULL,
    time                INTEGER NOT NULL,
    parameter           TEXT    NOT NULL,
    old_value           TEXT    NOT NULL,
    new_value           TEXT    NOT NULL,
    reason              TEXT    NOT NULL,
    metrics_before_json TEXT    NOT NULL,         -- WindowMetrics as JSON, decimals as strings
    -- The verdict, filled in by a later batch (all NULL until then).
    outcome_time        INTEGER,
    outcome             TEXT CHECK (outcome IN ('positive', 'neutral', 'negative')),
    metrics_after_json  TEXT,
    PRIMARY KEY (session_id, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE snapshots (
    session_id       TEXT    NOT NULL REFERENCES sessions (id),
    seq              INTEGER NOT NULL,            -- assigned by the store, from 1, in write order
    time             INTEGER NOT NULL,
    cash             TEXT    NOT NULL,
    position_value   TEXT    NOT NULL,
    equity           TEXT    NOT NULL,
    realized_pnl     TEXT    NOT NULL,
    unrealized_pnl   TEXT    NOT NULL,
    drawdown_pct     TEXT    NOT NULL,
    open_positions   INTEGER NOT NULL,
    trades           INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
) STRICT, WITHOUT ROWID;

-- Equity curve lookups by market time.
CREATE INDEX snapshots_by_time ON snapshots (session_id, time);

CREATE TABLE positions (
    session_id       TEXT    NOT NULL REFERENCES sessions (id),
    symbol           TEXT    NOT NULL,
    quantity         TEXT    NOT NULL,
    cost_basis       TEXT    NOT NULL,
    last_price       TEXT    NOT NULL,
    opened_at        INTEGER,                     -- NULL when flat
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (session_id, symbol)
) STRICT, WITHOUT ROWID;
