//! `PaperAccount`: a virtual account that sessions draw their allocation from.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{
    condition::Condition,
    schema::{self, MAX_CURRENCY_LENGTH, MAX_NAME_LENGTH},
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
    /// Where the runtimes of this account's sessions keep their ledger in a
    /// cluster (default: the operator's `--ledger-*` flags). Ignored by a
    /// local `bot-runtime run`, which takes `--ledger`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<AccountLedger>,
    /// Declarative kill-switch reset: set or change this value (any token of
    /// at most 63 characters, e.g. the current time) to release a tripped
    /// account kill switch once; the drawdown peak and the day's starting
    /// equity restart from the current equity. Acknowledged in
    /// `status.observedResetRequest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::session::MAX_RESET_REQUEST_LENGTH))]
    pub reset_request: Option<String>,
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

/// Ledger storage of an account's sessions in a cluster.
///
/// The kind of storage a session's ledger lives on (a database or a
/// per-session volume) is fixed when the operator creates the session's
/// runtime; a later change applies to new sessions, and running ones report
/// it in their `LedgerStorageOutdated` condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountLedger {
    /// Secret in the account's namespace holding the PostgreSQL URL of the
    /// ledger (`postgres://user:password@host:5432/db`), e.g. the `<cluster>-app`
    /// Secret and key `uri` of a CloudNativePG Cluster. Overrides the
    /// operator's `--ledger-database-secret`. The runtime reads it from its
    /// `DATABASE_URL` environment variable; the operator never reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url_secret_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// `metadata.name` of the Secret (a DNS subdomain name), e.g. `pg-app`.
    #[schemars(length(max = MAX_NAME_LENGTH))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DNS_SUBDOMAIN_PATTERN}')"))
        .message("ledger.databaseUrlSecretRef.name must be a Secret name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, e.g. \"pg-app\""))]
    pub name: String,
    /// Key in the Secret's `data` holding the URL (default `url`).
    #[serde(default = "default_secret_key")]
    #[schemars(length(max = MAX_NAME_LENGTH))]
    #[x_kube(validation = Rule::new(format!("self.matches('{SECRET_KEY_PATTERN}')"))
        .message("ledger.databaseUrlSecretRef.key must be a Secret key: letters, digits, '-', '_' and '.', e.g. \"uri\""))]
    pub key: String,
}

/// Default [`SecretKeyRef::key`]: `url`.
pub const DEFAULT_SECRET_KEY: &str = "url";

fn default_secret_key() -> String {
    DEFAULT_SECRET_KEY.into()
}

/// A DNS-1123 subdomain (the name of a Secret), as a CEL/RE2 pattern.
pub(crate) const DNS_SUBDOMAIN_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A Secret data key, as a CEL/RE2 pattern.
pub(crate) const SECRET_KEY_PATTERN: &str = "^[-._a-zA-Z0-9]+$";

/// Whether `s` is a DNS-1123 subdomain name: at most 253 characters, dot-separated
/// labels of lower-case letters, digits and `-`, each starting and ending
/// alphanumeric.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LENGTH
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Whether `s` is a valid key of a Secret's `data`: letters, digits, `-`, `_`
/// and `.`, at most 253 characters.
pub fn is_secret_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LENGTH
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
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
    /// Sessions with at least one open circuit breaker.
    #[serde(default)]
    pub open_breakers: u32,
    /// The account-wide kill switch (`spec.limits`) over the aggregated equity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_switch: Option<KillSwitchStatus>,
    /// The `spec.resetRequest` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_reset_request: Option<String>,
    /// `metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Degraded, ... (`metav1.Condition` shape), one per `type`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The account kill switch: what it measures and whether it tripped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KillSwitchStatus {
    /// True while the account's sessions are halted; only a changed
    /// `spec.resetRequest` releases it.
    pub engaged: bool,
    /// Which limit was passed, with the measured value and the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339 time it tripped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Highest aggregated equity seen (since creation or the last reset),
    /// base currency: the reference of `limits.maxDrawdownPct`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_equity: Option<DecimalString>,
    /// UTC date (`YYYY-MM-DD`) of `dayStartEquity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    /// Aggregated equity when `day` began (first observation that day), base
    /// currency: the reference of `limits.dailyLossPct`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_start_equity: Option<DecimalString>,
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
        if let Some(r) = &self.reset_request {
            e.max_length(
                "spec.resetRequest",
                r,
                crate::session::MAX_RESET_REQUEST_LENGTH,
            );
        }
        if let Some(l) = &self.limits {
            e.pct("spec.limits.maxDrawdownPct", l.max_drawdown_pct);
            e.pct("spec.limits.dailyLossPct", l.daily_loss_pct);
        }
        if let Some(r) = self
            .ledger
            .as_ref()
            .and_then(|l| l.database_url_secret_ref.as_ref())
        {
            if !is_dns_subdomain(&r.name) {
                e.push(
                    "spec.ledger.databaseUrlSecretRef.name",
                    format!(
                        "{:?} is not a Secret name: expected lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most {MAX_NAME_LENGTH} characters",
                        r.name
                    ),
                );
            }
            if !is_secret_key(&r.key) {
                e.push(
                    "spec.ledger.databaseUrlSecretRef.key",
                    format!(
                        "{:?} is not a Secret key: expected letters, digits, '-', '_' and '.', at most {MAX_NAME_LENGTH} characters",
                        r.key
                    ),
                );
            }
        }
        e.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(ledger: &str) -> PaperAccountSpec {
        serde_yaml::from_str(&format!("initialBalance: \"1000\"\nledger: {ledger}\n")).unwrap()
    }

    #[test]
    fn database_secret_key_defaults_to_url() {
        let spec = account("{databaseUrlSecretRef: {name: pg-app}}");
        let r = spec.ledger.unwrap().database_url_secret_ref.unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("pg-app", "url"));
    }

    #[test]
    fn validate_names_the_bad_secret_name_and_key() {
        assert_eq!(
            account("{databaseUrlSecretRef: {name: pg.app-1, key: uri_2.x}}").validate(),
            Ok(())
        );
        let errors = account("{databaseUrlSecretRef: {name: -pg, key: a/b}}")
            .validate()
            .unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.ledger.databaseUrlSecretRef.name",
                "spec.ledger.databaseUrlSecretRef.key"
            ]
        );
        assert!(errors[0].message.contains("\"-pg\" is not a Secret name"));
    }

    #[test]
    fn name_and_key_rules() {
        for ok in ["a", "pg-app", "pg.cluster-app", "0x", &"a".repeat(253)] {
            assert!(is_dns_subdomain(ok), "{ok}");
        }
        for bad in ["", "A", "a_b", "-a", "a-", "a..b", ".a", &"a".repeat(254)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
        for ok in ["url", "URI", "db.url", "a-b_c"] {
            assert!(is_secret_key(ok), "{ok}");
        }
        for bad in ["", "a/b", "a b", "é"] {
            assert!(!is_secret_key(bad), "{bad}");
        }
    }

    #[test]
    fn ledger_is_absent_unless_set() {
        let spec: PaperAccountSpec = serde_yaml::from_str("initialBalance: \"1\"").unwrap();
        assert_eq!(spec.ledger, None);
        let json = serde_json::to_value(&spec).unwrap();
        assert!(json.get("ledger").is_none(), "{json}");
    }
}
