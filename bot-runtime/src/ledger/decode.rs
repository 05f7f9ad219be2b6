//! Stored rows back into records and session descriptions. Rows are read
//! with the select lists of [`sql`](super::sql) (every column in schema
//! order, decimals as exact text); a value that does not parse is
//! [`LedgerError::Corrupt`] naming the table, the column and the value.

use std::str::FromStr;

use rust_decimal::Decimal;

use super::LedgerError;
use super::dialect::Dialect;
use super::records::{
    Action, AdjustmentOutcomeRecord, AdjustmentRecord, BreakerEventRecord, DecisionRecord,
    FillReason, FillStatus, Outcome, PositionRecord, RoundTrip, SnapshotRecord, TradeRecord,
    WindowMetrics,
};
use super::schema::{self, Table};
use super::store::SessionInfo;
use crate::types::{Side, Timestamp};

/// Reads one row's columns in order.
pub(crate) struct Cursor<'r, DB: Dialect> {
    row: &'r DB::Row,
    table: &'static Table,
    session: &'r str,
    i: usize,
}

impl<'r, DB: Dialect> Cursor<'r, DB> {
    /// A cursor at the first column of `row`, read from `table` for `session`.
    pub fn new(row: &'r DB::Row, table: &'static Table, session: &'r str) -> Self {
        Self {
            row,
            table,
            session,
            i: 0,
        }
    }

    fn column(&self) -> &'static str {
        self.table
            .columns
            .get(self.i)
            .map_or("(computed)", |c| c.name)
    }

    fn corrupt(&self, detail: String) -> LedgerError {
        LedgerError::Corrupt {
            session_id: self.session.to_owned(),
            table: self.table.name,
            detail: format!("column {}: {detail}", self.column()),
        }
    }

    /// Skip `n` columns.
    pub fn skip(&mut self, n: usize) -> &mut Self {
        self.i += n;
        self
    }

    /// A nullable integer.
    pub fn opt_int(&mut self) -> Result<Option<i64>, LedgerError> {
        let v = DB::int_at(self.row, self.i).map_err(|e| self.corrupt(e.to_string()))?;
        self.i += 1;
        Ok(v)
    }

    /// An integer.
    pub fn int(&mut self) -> Result<i64, LedgerError> {
        match self.opt_int()? {
            Some(v) => Ok(v),
            None => {
                self.i -= 1;
                Err(self.corrupt("NULL where a number is required".into()))
            }
        }
    }

    /// A counter: an integer >= 0.
    pub fn count(&mut self) -> Result<u64, LedgerError> {
        let v = self.int()?;
        u64::try_from(v).map_err(|_| {
            self.i -= 1;
            self.corrupt(format!("{v} where a count >= 0 is required"))
        })
    }

    /// A counter that fits in `u32`.
    pub fn small_count(&mut self) -> Result<u32, LedgerError> {
        let v = self.count()?;
        u32::try_from(v).map_err(|_| {
            self.i -= 1;
            self.corrupt(format!("{v} is above {}", u32::MAX))
        })
    }

    /// A market time (ms).
    pub fn time(&mut self) -> Result<Timestamp, LedgerError> {
        self.int().map(Timestamp)
    }

    /// A nullable market time (ms).
    pub fn opt_time(&mut self) -> Result<Option<Timestamp>, LedgerError> {
        Ok(self.opt_int()?.map(Timestamp))
    }

    /// Nullable text.
    pub fn opt_text(&mut self) -> Result<Option<String>, LedgerError> {
        let v = DB::text_at(self.row, self.i).map_err(|e| self.corrupt(e.to_string()))?;
        self.i += 1;
        Ok(v)
    }

    /// Text.
    pub fn text(&mut self) -> Result<String, LedgerError> {
        match self.opt_text()? {
            Some(v) => Ok(v),
            None => {
                self.i -= 1;
                Err(self.corrupt("NULL where text is required".into()))
            }
        }
    }

    /// Text parsed by `parse`; `expected` describes the accepted values.
    pub fn parse<T>(
        &mut self,
        parse: impl FnOnce(&str) -> Option<T>,
        expected: &str,
    ) -> Result<T, LedgerError> {
        let text = self.text()?;
        parse(&text).ok_or_else(|| {
            self.i -= 1;
            self.corrupt(format!("{text:?} is not {expected}"))
        })
    }

    /// A nullable exact decimal.
    pub fn opt_dec(&mut self) -> Result<Option<Decimal>, LedgerError> {
        match self.opt_text()? {
            None => Ok(None),
            Some(text) => Decimal::from_str(&text).map(Some).map_err(|e| {
                self.i -= 1;
                self.corrupt(format!("{text:?} is not a decimal: {e}"))
            }),
        }
    }

    /// An exact decimal.
    pub fn dec(&mut self) -> Result<Decimal, LedgerError> {
        match self.opt_dec()? {
            Some(v) => Ok(v),
            None => {
                self.i -= 1;
                Err(self.corrupt("NULL where a decimal is required".into()))
            }
        }
    }

    /// [`WindowMetrics`] from JSON text.
    pub fn metrics(&mut self) -> Result<WindowMetrics, LedgerError> {
        let text = self.text()?;
        serde_json::from_str(&text).map_err(|e| {
            self.i -= 1;
            self.corrupt(format!("not window metrics JSON ({e}): {text:?}"))
        })
    }
}

fn side(s: &str) -> Option<Side> {
    match s {
        "buy" => Some(Side::Buy),
        "sell" => Some(Side::Sell),
        _ => None,
    }
}

const FILL_REASONS: &str =
    "signal, stop_loss, take_profit, trailing_stop, max_hold_time or liquidation";

/// A `decisions` row.
pub(crate) fn decision<DB: Dialect>(c: &mut Cursor<'_, DB>) -> Result<DecisionRecord, LedgerError> {
    c.skip(1);
    Ok(DecisionRecord {
        seq: c.count()?,
        time: c.time()?,
        symbol: c.text()?,
        action: c.parse(Action::parse, "buy, sell, skip or hold")?,
        confidence: c.dec()?,
        price: c.dec()?,
        quantity: c.opt_dec()?,
        positive_signals: c.text()?,
        negative_signals: c.text()?,
        risk_assessment: c.text()?,
        reason: c.text()?,
    })
}

/// A `trades` row.
pub(crate) fn trade<DB: Dialect>(c: &mut Cursor<'_, DB>) -> Result<TradeRecord, LedgerError> {
    c.skip(1);
    Ok(TradeRecord {
        seq: c.count()?,
        decision_seq: c.count()?,
        time: c.time()?,
        symbol: c.text()?,
        side: c.parse(side, "buy or sell")?,
        quantity: c.dec()?,
        reference_price: c.dec()?,
        fill_price: c.dec()?,
        fee: c.dec()?,
        gas: c.dec()?,
        slippage_cost: c.dec()?,
        latency_ms: c.int()?,
        realized_pnl: c.dec()?,
        reason: c.parse(FillReason::parse, FILL_REASONS)?,
        status: c.parse(FillStatus::parse, "filled or failed")?,
        cash_after: c.dec()?,
        position_after: c.dec()?,
        cost_basis_after: c.dec()?,
    })
}

/// A `round_trips` row (without its store-assigned seq).
pub(crate) fn round_trip<DB: Dialect>(c: &mut Cursor<'_, DB>) -> Result<RoundTrip, LedgerError> {
    c.skip(2);
    Ok(RoundTrip {
        symbol: c.text()?,
        entry_time: c.time()?,
        entry_price: c.dec()?,
        exit_time: c.time()?,
        exit_price: c.dec()?,
        quantity: c.dec()?,
        pnl: c.dec()?,
        fees: c.dec()?,
        return_pct: c.dec()?,
        exit_reason: c.parse(FillReason::parse, FILL_REASONS)?,
    })
}

/// A `breaker_events` row (without its store-assigned seq).
pub(crate) fn breaker_event<DB: Dialect>(
    c: &mut Cursor<'_, DB>,
) -> Result<BreakerEventRecord, LedgerError> {
    c.skip(2);
    Ok(BreakerEventRecord {
        time: c.time()?,
        breaker: c.text()?,
        from_state: c.text()?,
        to_state: c.text()?,
        reason: c.text()?,
    })
}

/// An `autopilot_adjustments` row: the adjustment, and its verdict if one
/// is stored.
pub(crate) fn adjustment<DB: Dialect>(
    c: &mut Cursor<'_, DB>,
) -> Result<(AdjustmentRecord, Option<AdjustmentOutcomeRecord>), LedgerError> {
    c.skip(1);
    let adjustment = AdjustmentRecord {
        id: c.count()?,
        time: c.time()?,
        parameter: c.text()?,
        old_value: c.dec()?,
        new_value: c.dec()?,
        reason: c.text()?,
        metrics_before: c.metrics()?,
    };
    let outcome = match c.opt_time()? {
        None => None,
        Some(time) => Some(AdjustmentOutcomeRecord {
            id: adjustment.id,
            time,
            outcome: c.parse(Outcome::parse, "positive, neutral or negative")?,
            metrics_after: c.metrics()?,
        }),
    };
    Ok((adjustment, outcome))
}

/// A `snapshots` row (without its store-assigned seq).
pub(crate) fn snapshot<DB: Dialect>(c: &mut Cursor<'_, DB>) -> Result<SnapshotRecord, LedgerError> {
    c.skip(2);
    Ok(SnapshotRecord {
        time: c.time()?,
        cash: c.dec()?,
        position_value: c.dec()?,
        equity: c.dec()?,
        realized_pnl: c.dec()?,
        unrealized_pnl: c.dec()?,
        drawdown_pct: c.dec()?,
        open_positions: c.small_count()?,
        trades: c.count()?,
    })
}

/// A `positions` row.
pub(crate) fn position<DB: Dialect>(c: &mut Cursor<'_, DB>) -> Result<PositionRecord, LedgerError> {
    c.skip(1);
    Ok(PositionRecord {
        symbol: c.text()?,
        quantity: c.dec()?,
        cost_basis: c.dec()?,
        last_price: c.dec()?,
        opened_at: c.opt_time()?,
        updated_at: c.time()?,
    })
}

/// What a `sessions` row holds beyond [`SessionInfo`]: the writer's
/// bookkeeping.
#[derive(Debug)]
pub(crate) struct SessionState {
    pub info: SessionInfo,
    /// Token of the current lock holder (`None` when nobody holds it).
    pub writer_token: Option<String>,
    /// Runner checkpoint of the last committed batch.
    pub checkpoint: Option<String>,
}

/// A `sessions` row (all columns in schema order) followed by its trade count.
pub(crate) fn session<DB: Dialect>(c: &mut Cursor<'_, DB>) -> Result<SessionState, LedgerError> {
    debug_assert_eq!(c.table.name, schema::SESSIONS.name);
    let id = c.text()?;
    session_rest(c, id.clone()).map_err(|e| match e {
        // Name the session whose row is bad.
        LedgerError::Corrupt { table, detail, .. } => LedgerError::Corrupt {
            session_id: id,
            table,
            detail,
        },
        e => e,
    })
}

fn session_rest<DB: Dialect>(
    c: &mut Cursor<'_, DB>,
    id: String,
) -> Result<SessionState, LedgerError> {
    let name = c.text()?;
    let account = c.text()?;
    let strategy = c.text()?;
    let base_currency = c.text()?;
    let initial_cash = c.dec()?;
    let config_json = c.text()?;
    let started_at = c.time()?;
    let phase = c.text()?;
    let ended_at = c.opt_time()?;
    let cash = c.dec()?;
    let equity = c.dec()?;
    let last_batch_at = c.opt_time()?;
    let summary_json = c.opt_text()?;
    let writer_token = c.opt_text()?;
    c.skip(1); // created_at
    let batches = c.count()?;
    let checkpoint = c.opt_text()?;
    let writer = c.opt_text()?;
    let heartbeat_at = c.opt_int()?;
    c.skip(1); // interrupted_at
    let trades = c.count()?;
    Ok(SessionState {
        info: SessionInfo {
            id,
            name,
            account,
            strategy,
            base_currency,
            initial_cash,
            phase,
            started_at,
            ended_at,
            last_batch_at,
            cash,
            equity,
            trades,
            batches,
            writer,
            heartbeat_at,
            config_json,
            summary_json,
        },
        writer_token,
        checkpoint,
    })
}
