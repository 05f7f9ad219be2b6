-- paperbot ledger, PostgreSQL schema (version 1). Same tables and column names
-- as the SQLite schema (migrations/sqlite, versions 1 and 2), so that one set of
-- statements and one canonical dump serve both backends.
--
-- Conventions:
--   * money, prices, quantities, percents: NUMERIC without a typmod, which keeps
--     the scale written (0.10 reads back as 0.10, as the SQLite TEXT form does);
--   * times: BIGINT milliseconds since the Unix epoch, market time, except
--     sessions.created_at and sessions.heartbeat_at (wall clock);
--   * every integer is BIGINT (the records' counters are 64-bit);
--   * enums: TEXT with a CHECK listing the records' as_str() values;
--   * text keys are COLLATE "C" (byte order, as SQLite's BINARY), so that
--     ORDER BY and range scans give the same order whatever the database's locale;
--   * every child table is keyed by (session_id, per-session number).

CREATE TABLE sessions (
    id               TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name             TEXT COLLATE "C" NOT NULL,   -- BotSession name
    account          TEXT    NOT NULL,            -- PaperAccount name
    strategy         TEXT    NOT NULL,            -- StrategyConfig name
    base_currency    TEXT    NOT NULL,
    initial_cash     NUMERIC NOT NULL,
    config_json      TEXT    NOT NULL,
    started_at       BIGINT  NOT NULL,            -- market time, ms
    phase            TEXT    NOT NULL CHECK (phase IN
                         ('Running', 'Interrupted', 'Completed', 'Halted', 'Stopped', 'Failed')),
    ended_at         BIGINT,                      -- market time, ms; NULL while unfinished
    cash             NUMERIC NOT NULL,            -- current, final once ended
    equity           NUMERIC NOT NULL,            -- last snapshot, final once ended
    last_batch_at    BIGINT,                      -- market time of the last committed batch
    summary_json     TEXT,                        -- NULL while unfinished
    writer_token     TEXT,                        -- fencing token of the lock holder; NULL when none
    created_at       BIGINT  NOT NULL,            -- wall clock, ms
    batch_seq        BIGINT  NOT NULL DEFAULT 0,  -- committed batches
    checkpoint_json  TEXT,                        -- runner state after the last committed batch
    writer           TEXT,                        -- holder (or last holder) of the writer lock
    heartbeat_at     BIGINT,                      -- wall clock, ms, of the holder's last write
    interrupted_at   BIGINT                       -- market time, ms, of the last interruption
);

CREATE INDEX sessions_by_name ON sessions (name);

CREATE TABLE decisions (
    session_id       TEXT COLLATE "C" NOT NULL REFERENCES sessions (id),
    seq              BIGINT  NOT NULL,
    time             BIGINT  NOT NULL,
    symbol           TEXT    NOT NULL,
    action           TEXT    NOT NULL CHECK (action IN ('buy', 'sell', 'skip', 'hold')),
    confidence       NUMERIC NOT NULL,
    price            NUMERIC NOT NULL,
    quantity         NUMERIC,
    positive_signals TEXT    NOT NULL,
    negative_signals TEXT    NOT NULL,
    risk_assessment  TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE trades (
    session_id       TEXT COLLATE "C" NOT NULL REFERENCES sessions (id),
    seq              BIGINT  NOT NULL,
    decision_seq     BIGINT  NOT NULL,            -- 0 for automatic exits
    time             BIGINT  NOT NULL,
    symbol           TEXT COLLATE "C" NOT NULL,
    side             TEXT    NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity         NUMERIC NOT NULL,
    reference_price  NUMERIC NOT NULL,
    fill_price       NUMERIC NOT NULL,
    fee              NUMERIC NOT NULL,
    gas              NUMERIC NOT NULL,
    slippage_cost    NUMERIC NOT NULL,
    latency_ms       BIGINT  NOT NULL,
    realized_pnl     NUMERIC NOT NULL,
    reason           TEXT    NOT NULL CHECK (reason IN ('signal', 'stop_loss', 'take_profit',
                         'trailing_stop', 'max_hold_time', 'liquidation')),
    status           TEXT    NOT NULL CHECK (status IN ('filled', 'failed')),
    cash_after       NUMERIC NOT NULL,
    position_after   NUMERIC NOT NULL,
    cost_basis_after NUMERIC NOT NULL,
    PRIMARY KEY (session_id, seq)
);

-- Per-symbol trade history (the report, the operator's status).
CREATE INDEX trades_by_symbol ON trades (session_id, symbol, seq);

CREATE TABLE round_trips (
    session_id       TEXT COLLATE "C" NOT NULL REFERENCES sessions (id),
    seq              BIGINT  NOT NULL,            -- assigned by the store, from 1, in write order
    symbol           TEXT    NOT NULL,
    entry_time       BIGINT  NOT NULL,
    entry_price      NUMERIC NOT NULL,
    exit_time        BIGINT  NOT NULL,
    exit_price       NUMERIC NOT NULL,
    quantity         NUMERIC NOT NULL,
    pnl              NUMERIC NOT NULL,
    fees             NUMERIC NOT NULL,
    return_pct       NUMERIC NOT NULL,
    exit_reason      TEXT    NOT NULL CHECK (exit_reason IN ('signal', 'stop_loss',
                         'take_profit', 'trailing_stop', 'max_hold_time', 'liquidation')),
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE breaker_events (
    session_id       TEXT COLLATE "C" NOT NULL REFERENCES sessions (id),
    seq              BIGINT  NOT NULL,            -- assigned by the store, from 1, in write order
    time             BIGINT  NOT NULL,
    breaker          TEXT    NOT NULL,
    from_state       TEXT    NOT NULL,
    to_state         TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE autopilot_adjustments (
    session_id          TEXT COLLATE "C" NOT NULL REFERENCES sessions (id),
    id                  BIGINT  NOT NULL,
    time                BIGINT  NOT NULL,
    parameter           TEXT    NOT NULL,
    old_value           NUMERIC NOT NULL,
    new_value           NUMERIC NOT NULL,
    reason              TEXT    NOT NULL,
    metrics_before_json TEXT    NOT NULL,         -- WindowMetrics as JSON text, decimals as strings
    -- The verdict, filled in by a later batch (all NULL until then).
    outcome_time        BIGINT,
    outcome             TEXT CHECK (outcome IN ('positive', 'neutral', 'negative')),
    metrics_after_json  TEXT,
    PRIMARY KEY (session_id, id)
);

CREATE TABLE snapshots (
    session_id       TEXT COLLATE "C" NOT NULL REFERENCES sessions (id),
    seq              BIGINT  NOT NULL,            -- assigned by the store, from 1, in write order
    time             BIGINT  NOT NULL,
    cash             NUMERIC NOT NULL,
    position_value   NUMERIC NOT NULL,
    equity           NUMERIC NOT NULL,
    realized_pnl     NUMERIC NOT NULL,
    unrealized_pnl   NUMERIC NOT NULL,
    drawdown_pct     NUMERIC NOT NULL,
    open_positions   BIGINT  NOT NULL,
    trades           BIGINT  NOT NULL,
    PRIMARY KEY (session_id, seq)
);

-- Equity curve lookups by market time.
CREATE INDEX snapshots_by_time ON snapshots (session_id, time);

CREATE TABLE positions (
    session_id       TEXT COLLATE "C" NOT NULL REFERENCES sessions (id),
    symbol           TEXT COLLATE "C" NOT NULL,
    quantity         NUMERIC NOT NULL,
    cost_basis       NUMERIC NOT NULL,
    last_price       NUMERIC NOT NULL,
    opened_at        BIGINT,                      -- NULL when flat
    updated_at       BIGINT  NOT NULL,
    PRIMARY KEY (session_id, symbol)
);
