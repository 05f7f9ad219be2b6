//! Why a session cannot run as declared: a typed [`Problem`], from which the
//! condition reason, the message, the phase and the Event are derived.
//! Problems are reported in status and Events, never retried as errors: they
//! go away when the user (or another object) changes.

use std::fmt;

use paperbot_crds::FieldError;
use rust_decimal::Decimal;

/// The kind of object whose spec is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvalidObject {
    /// The session itself.
    Session,
    /// Its StrategyConfig, by name.
    Strategy(String),
    /// Its PaperAccount, by name.
    Account(String),
}

impl fmt::Display for InvalidObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidObject::Session => f.write_str("BotSession"),
            InvalidObject::Strategy(n) => write!(f, "StrategyConfig {n:?}"),
            InvalidObject::Account(n) => write!(f, "PaperAccount {n:?}"),
        }
    }
}

/// Why a session cannot run. [`Problem::reason`] is the `Ready` condition's
/// reason and the Warning Event's reason; `Display` is the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// `spec.accountRef` names no PaperAccount in the session's namespace.
    AccountNotFound {
        /// The referenced name.
        account: String,
        /// The session's namespace.
        namespace: String,
    },
    /// `spec.strategyRef` names no StrategyConfig in the session's namespace.
    StrategyNotFound {
        /// The referenced name.
        strategy: String,
        /// The session's namespace.
        namespace: String,
    },
    /// The account's active sessions, funded in creation order, leave no
    /// room for this session's allocation.
    InsufficientFunds {
        /// The PaperAccount.
        account: String,
        /// This session's allocation, base currency.
        allocation: Decimal,
        /// What the active sessions up to and including this one need, base currency.
        needed: Decimal,
        /// The account's balance, base currency.
        balance: Decimal,
    },
    /// A spec breaks a rule the runtime enforces (the API server normally
    /// refuses such an object; this catches what it cannot check).
    InvalidSpec {
        /// Whose spec.
        object: InvalidObject,
        /// Each broken rule: the field's path and what is expected.
        errors: Vec<String>,
    },
}

impl Problem {
    /// The condition and Event reason (CamelCase).
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::AccountNotFound { .. } => "AccountNotFound",
            Problem::StrategyNotFound { .. } => "StrategyNotFound",
            Problem::InsufficientFunds { .. } => "InsufficientFunds",
            Problem::InvalidSpec { .. } => INVALID_SPEC,
        }
    }

    /// Whether only a change of the spec can fix it (phase `Failed`,
    /// `Degraded=True`); the others wait for another object (phase `Pending`).
    pub fn is_invalid_spec(&self) -> bool {
        matches!(self, Problem::InvalidSpec { .. })
    }

    /// The problem of an object whose `validate()` failed.
    pub fn invalid(object: InvalidObject, errors: &[FieldError]) -> Self {
        Problem::InvalidSpec {
            object,
            errors: errors.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Reason of [`Problem::InvalidSpec`].
pub const INVALID_SPEC: &str = "InvalidSpec";

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::AccountNotFound { account, namespace } => write!(
                f,
                "PaperAccount {account:?} not found in namespace {namespace}: create it or fix spec.accountRef.name"
            ),
            Problem::StrategyNotFound {
                strategy,
                namespace,
            } => write!(
                f,
                "StrategyConfig {strategy:?} not found in namespace {namespace}: create it or fix spec.strategyRef.name"
            ),
            Problem::InsufficientFunds {
                account,
                allocation,
                needed,
                balance,
            } => write!(
                f,
                "allocation {allocation} does not fit: active sessions of PaperAccount {account:?} (funded in creation order) need {needed} but its balance is {balance}"
            ),
            Problem::InvalidSpec { object, errors } => {
                write!(f, "{object}: {}", errors.join("; "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_messages() {
        let p = Problem::AccountNotFound {
            account: "acct".into(),
            namespace: "ns".into(),
        };
        assert_eq!(p.reason(), "AccountNotFound");
        assert_eq!(
            p.to_string(),
            "PaperAccount \"acct\" not found in namespace ns: create it or fix spec.accountRef.name"
        );
        assert!(!p.is_invalid_spec());
        let p = Problem::InsufficientFunds {
            account: "acct".into(),
            allocation: Decimal::from(200),
            needed: Decimal::from(1100),
            balance: Decimal::from(1000),
        };
        assert_eq!(p.reason(), "InsufficientFunds");
        assert!(p.to_string().contains("need 1100 but its balance is 1000"));
        let p = Problem::invalid(
            InvalidObject::Strategy("s".into()),
            &[FieldError {
                path: "spec.signals".into(),
                message: "name at least one signal".into(),
            }],
        );
        assert_eq!(p.reason(), "InvalidSpec");
        assert!(p.is_invalid_spec());
        assert!(
            p.to_string()
                .starts_with("StrategyConfig \"s\": spec.signals")
        );
    }
}
