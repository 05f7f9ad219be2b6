//! PaperAccount controller: aggregates its sessions into the account's
//! status (allocated funds, equity, P&L, ROI, trades, active sessions) and
//! flags an over-allocated account.

use std::sync::Arc;

use kube::{ResourceExt, runtime::controller::Action};
use paperbot_crds::{BotSession, DecimalString, PaperAccount, PaperAccountStatus};
use rust_decimal::Decimal;
use tracing::instrument;

use super::{Context, now, reconcile_status_from_sessions};
use crate::{
    Result,
    conditions::{READY, set_condition},
};

/// Controller name used in metrics and logs.
pub const CONTROLLER: &str = "paperaccount";

/// What of a session its account's status depends on: which account, what
/// it draws (allocation while active) and its reported figures.
/// [`desired_status`] reads nothing else of a session, so a session event
/// that leaves this unchanged does not reconcile the account
/// ([`crate::triggers::on_session`]).
pub fn session_inputs(s: &BotSession) -> impl PartialEq + use<> {
    let st = s.status.as_ref();
    (
        s.spec.account_ref.name.clone(),
        super::botsession::is_active(s).then(|| s.spec.allocation.get()),
        st.and_then(|st| st.equity),
        st.and_then(|st| st.realized_pnl),
        st.and_then(|st| st.unrealized_pnl),
        st.map_or(0, |st| st.trades),
    )
}

/// The status an account should have, given its sessions (those of its
/// namespace that reference it). Equity = balance − allocations + Σ session
/// equity (a session without reported equity counts at its allocation).
pub fn desired_status(
    account: &PaperAccount,
    sessions: &[Arc<BotSession>],
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> PaperAccountStatus {
    let name = account.name_any();
    let active: Vec<&BotSession> = sessions
        .iter()
        .map(|s| &**s)
        .filter(|s| s.spec.account_ref.name == name && super::botsession::is_active(s))
        .collect();
    let balance = account.spec.initial_balance.get();
    let allocated: Decimal = active.iter().map(|s| s.spec.allocation.get()).sum();
    let sum = |f: fn(&BotSession) -> Option<Decimal>| -> Decimal {
        active.iter().filter_map(|s| f(s)).sum()
    };
    let session_equity: Decimal = active
        .iter()
        .map(|s| {
            s.status
                .as_ref()
                .and_then(|st| st.equity)
                .map_or(s.spec.allocation.get(), |e| e.get())
        })
        .sum();
    let equity = balance - allocated + session_equity;
    let realized = sum(|s| s.status.as_ref()?.realized_pnl.map(|d| d.get()));
    let unrealized = sum(|s| s.status.as_ref()?.unrealized_pnl.map(|d| d.get()));
    let trades: u64 = active
        .iter()
        .filter_map(|s| s.status.as_ref())
        .map(|st| st.trades)
        .sum();
    let roi = if balance.is_zero() {
        Decimal::ZERO
    } else {
        ((equity - balance) / balance * Decimal::ONE_HUNDRED).round_dp(2)
    };
    let mut status = account.status.clone().unwrap_or_default();
    status.cash = Some(DecimalString(balance - allocated));
    status.allocated = Some(DecimalString(allocated));
    status.equity = Some(DecimalString(equity.normalize()));
    status.realized_pnl = Some(DecimalString(realized.normalize()));
    status.unrealized_pnl = Some(DecimalString(unrealized.normalize()));
    status.roi_pct = Some(DecimalString(roi.normalize()));
    status.total_trades = trades;
    status.active_sessions = active.len() as u32;
    status.observed_generation = account.metadata.generation;
    let (ok, reason, message) = if allocated > balance {
        (
            false,
            "Overallocated",
            format!(
                "active sessions allocate {allocated} but the balance is {balance}; the newest sessions are refused"
            ),
        )
    } else {
        (
            true,
            "Reconciled",
            format!(
                "{} active session(s) allocate {allocated} of {balance}",
                active.len()
            ),
        )
    };
    set_condition(
        &mut status.conditions,
        READY,
        ok.into(),
        reason,
        &message,
        account.metadata.generation,
        now,
    );
    status
}

/// Reconcile one PaperAccount.
#[instrument(skip_all, fields(account = %account.name_any()))]
pub async fn reconcile(account: Arc<PaperAccount>, ctx: Arc<Context>) -> Result<Action> {
    let latest = ctx.fresh.clone();
    reconcile_status_from_sessions(
        account,
        ctx,
        CONTROLLER,
        &latest.accounts,
        |a, sessions| desired_status(a, sessions, &now()),
        |a| a.status.as_ref(),
    )
    .await
}
