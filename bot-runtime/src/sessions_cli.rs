//! `bot-runtime sessions list|show|close`: what a ledger holds, and closing
//! the orphans of crashed or interrupted runs.

use std::fmt::Write as _;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::{
    ledger::{LedgerError, LedgerStore, SessionInfo, records::SessionEnd},
    rebuild::Folded,
    report::{fmt_money, summary_table},
};

/// Phase given to a session closed by `sessions close`.
pub const CLOSED_PHASE: &str = "Stopped";

fn time_or_dash(t: Option<crate::types::Timestamp>) -> String {
    t.map_or_else(|| "-".into(), |t| t.to_rfc3339())
}

/// How a session's writer looks from here: `-` once ended, else the holder
/// and how long ago it last wrote.
fn writer_text(s: &SessionInfo, now_ms: i64) -> String {
    if !s.is_unfinished() {
        return "-".into();
    }
    let who = s.writer.clone().unwrap_or_else(|| "none".into());
    match s.heartbeat_at {
        Some(at) => format!("{who}, last write {}s ago", (now_ms - at).max(0) / 1000),
        None => who,
    }
}

fn wall_clock_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The `sessions list` table: one row per session, newest first.
///
/// # Errors
/// Ledger read failures.
pub async fn list<L: LedgerStore>(ledger: &L) -> anyhow::Result<String> {
    let sessions = ledger.list_sessions().await?;
    if sessions.is_empty() {
        return Ok("no sessions in this ledger\n".into());
    }
    let now = wall_clock_ms();
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header([
        "session", "phase", "from", "to", "trades", "equity", "writer",
    ]);
    for s in &sessions {
        t.add_row([
            s.id.clone(),
            s.phase.clone(),
            s.started_at.to_rfc3339(),
            time_or_dash(s.ended_at.or(s.last_batch_at)),
            s.trades.to_string(),
            format!(
                "{} {}",
                fmt_money(s.equity, &s.base_currency),
                s.base_currency
            ),
            writer_text(s, now),
        ]);
    }
    let unfinished = sessions.iter().filter(|s| s.is_unfinished()).count();
    let mut out = format!("{t}\n");
    if unfinished > 0 {
        let _ = writeln!(
            out,
            "{unfinished} unfinished: resume with `bot-runtime run -f FILE --resume`, \
             or close with `bot-runtime sessions close ID`"
        );
    }
    Ok(out)
}

/// `sessions show ID`: every stored field of one session and its summary.
///
/// # Errors
/// [`LedgerError::UnknownSession`] and ledger read failures.
pub async fn show<L: LedgerStore>(ledger: &L, id: &str) -> anyhow::Result<String> {
    let s = ledger
        .session(id)
        .await?
        .ok_or_else(|| LedgerError::UnknownSession {
            session_id: id.to_owned(),
        })?;
    let mut out = String::new();
    let _ = writeln!(out, "session:       {}", s.id);
    let _ = writeln!(out, "BotSession:    {}", s.name);
    let _ = writeln!(out, "account:       {}", s.account);
    let _ = writeln!(out, "strategy:      {}", s.strategy);
    let _ = writeln!(out, "phase:         {}", s.phase);
    let _ = writeln!(out, "started at:    {}", s.started_at.to_rfc3339());
    let _ = writeln!(out, "last batch at: {}", time_or_dash(s.last_batch_at));
    let _ = writeln!(out, "ended at:      {}", time_or_dash(s.ended_at));
    let _ = writeln!(
        out,
        "initial cash:  {} {}",
        fmt_money(s.initial_cash, &s.base_currency),
        s.base_currency
    );
    let _ = writeln!(
        out,
        "cash:          {} {}",
        s.cash.normalize(),
        s.base_currency
    );
    let _ = writeln!(
        out,
        "equity:        {} {}",
        s.equity.normalize(),
        s.base_currency
    );
    let _ = writeln!(out, "trades:        {}", s.trades);
    let _ = writeln!(out, "batches:       {}", s.batches);
    let _ = writeln!(out, "writer:        {}", writer_text(&s, wall_clock_ms()));
    if let Some(json) = &s.summary_json
        && let Ok(summary) = serde_json::from_str::<serde_json::Value>(json)
    {
        let pretty = serde_json::to_string_pretty(&summary).unwrap_or_default();
        let _ = writeln!(out, "summary:\n{pretty}");
    }
    Ok(out)
}

/// `sessions close ID`: take the writer lock of an unfinished session (so a
/// live runtime is never closed under its feet), compute its summary from
/// the ledger, and record it as [`CLOSED_PHASE`] at its last committed time.
///
/// # Errors
/// [`LedgerError::LeaseHeld`] while a live runtime writes it,
/// [`LedgerError::SessionFinished`] when it already ended, read failures.
pub async fn close<L: LedgerStore>(
    ledger: &mut L,
    id: &str,
    writer: &str,
) -> anyhow::Result<String> {
    let point = ledger.resume_session(id, writer).await?;
    let info = point.info;
    let Folded { analytics, state } =
        crate::rebuild::fold(&*ledger, &info, point.checkpoint.as_deref(), None).await?;
    let summary = analytics.summary(&state, CLOSED_PHASE);
    ledger
        .finish_session(&SessionEnd {
            phase: CLOSED_PHASE.into(),
            ended_at: state.now,
            cash: state.cash,
            equity: state.equity,
            summary_json: serde_json::to_string(&summary).unwrap_or_default(),
        })
        .await?;
    Ok(format!(
        "closed session {id:?} as {CLOSED_PHASE} at {} (it was {}):\n{}\n",
        state.now,
        info.phase,
        summary_table(&summary, &info.base_currency)
    ))
}
