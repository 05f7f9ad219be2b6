//! `PaperAccount`: a virtual account that sessions draw their allocation from.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{
    condition::Condition,
    schema::{self, MAX_CURRENCY_LENGTH},
    validation::{Errors, FieldError},
    values::DecimalString,
};

/// A virtual trading account in one base currency. Sessions draw an
/// `allocation` from it; the account-wide limits act as a kill switch over all
/// of its sessions.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "paperbot.io",
    version = "v1alpha1",
    kind = "PaperAccount",
    doc = "A virtual paper-trading account: a starting balance in one base currency, \
           drawn on by BotSessions, with account-wide loss limits (kill switch).",
    namespaced,
    status = "PaperAccountStatus",
    shortname = "pa",
    category = "paperbot",
    printcolumn(name = "Balance", type_ = "string", json_path = ".spec.initialBalance"),
    printcolumn(name = "Equity", type_ = "string", json_path = ".status.equity"),
    printcolumn(
        name = "Sessions",
        type_ = "integer",
        json_path = ".status.activeSessions"
    ),
    printcolumn(name = "ROI %", type_ = "string", json_path = ".status.roiPct"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = schema::absent_not_null)]
pub struct PaperAccountSpec {
    /// ISO code of the currency all money in this account is counted in (default `USD`).
    #[serde(default = "default_base_currency")]
    #[schemars(length(max = MAX_CURRENCY_LENGTH))]
    #[x_kube(validation = schema::not_blank("baseCurrency", "expected a currency code such as \"USD\""))]
    pub base_currency: String,
    /// Starting balance in the base currency, e.g. `"100000"`. Must be > 0
    /// and at most 1e15, with at most 8 decimal places.
    #[x_kube(
        validation = schema::positive("initialBalance"),
        validation = schema::money("initialBalance")
    )]
    pub initial_balance: DecimalString,
    /// Account-wide kill switch; a session that breaks one halts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<AccountLimits>,
}

fn default_base_currency() -> String {
    "USD".into()
}

/// Account-wide loss limits (the kill switch).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountLimits {
    /// Halt when equity falls this many percent (0-100) below its peak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::percent("limits.maxDrawdownPct"))]
    pub max_drawdown_pct: Option<DecimalString>,
    /// Halt when the loss since the start of the UTC day exceeds this percent (0-100)
    /// of the equity at the start of that day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = schema::percent("limits.dailyLossPct"))]
    pub daily_loss_pct: Option<DecimalString>,
}

/// What the operator observes about an account.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::absent_not_null)]
pub struct PaperAccountStatus {
    /// Cash not held in positions, base currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cash: Option<DecimalString>,
    /// Cash plus marked value of all positions, base currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equity: Option<DecimalString>,
    /// Sum of the allocations of active sessions, base currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<DecimalString>,
    /// Realized P&L, base currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realized_pnl: Option<DecimalString>,
    /// Unrealized P&L, base currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrealized_pnl: Option<DecimalString>,
    /// Return on the initial balance, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roi_pct: Option<DecimalString>,
    /// Winning round trips / closed round trips, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub win_rate_pct: Option<DecimalString>,
    /// Number of fills over all sessions.
    #[serde(default)]
    pub total_trades: u64,
    /// Sessions currently running or paused.
    #[serde(default)]
    pub active_sessions: u32,
    /// `metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Degraded, ... (`metav1.Condition` shape), one per `type`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

impl PaperAccountSpec {
    /// Check the rules the API server also enforces. Paths start at `spec`.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut e = Errors::default();
        if self.base_currency.trim().is_empty() {
            e.push("spec.baseCurrency", "must not be empty (e.g. \"USD\")");
        }
        e.max_length(
            "spec.baseCurrency",
            &self.base_currency,
            MAX_CURRENCY_LENGTH,
        );
        e.positive("spec.initialBalance", Some(self.initial_balance));
        e.money("spec.initialBalance", Some(self.initial_balance));
        if let Some(l) = &self.limits {
            e.pct("spec.limits.maxDrawdownPct", l.max_drawdown_pct);
            e.pct("spec.limits.dailyLossPct", l.daily_loss_pct);
        }
        e.finish()
    }
}
