//! Query parameters of the paged histories and of the event stream: parsed
//! strictly (an unknown, repeated or malformed parameter is a 400 naming it),
//! and documented from the same table ([`PAGE_PARAMS`]).
//!
//! Cursors are opaque to clients: the hex form of `<history>:<last key>`,
//! so a cursor of one history is refused by another.

use std::collections::BTreeMap;

use chrono::DateTime;

use super::error::HttpError;
use crate::ledger::query::{MAX_PAGE_ROWS, PageQuery};
use crate::types::Timestamp;

/// Rows per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;

/// Longest accepted `symbol` filter, characters.
const MAX_SYMBOL_LEN: usize = 64;

/// One documented query parameter.
#[derive(Clone, Copy, Debug)]
pub struct ParamDoc {
    /// Name, e.g. `limit`.
    pub name: &'static str,
    /// What it does and what it accepts.
    pub description: &'static str,
    /// JSON type: `integer` or `string`.
    pub json_type: &'static str,
    /// JSON Schema `format`, if any (e.g. `date-time`).
    pub format: Option<&'static str>,
    /// Inclusive range and default of an integer.
    pub range: Option<(i64, i64, i64)>,
}

/// The parameters of every paged history (`symbol` only where rows have one).
pub const PAGE_PARAMS: [ParamDoc; 5] = [
    ParamDoc {
        name: "limit",
        description: "Rows per page, 1 to 1000 (default 100).",
        json_type: "integer",
        format: None,
        range: Some((1, MAX_PAGE_ROWS as i64, DEFAULT_LIMIT as i64)),
    },
    ParamDoc {
        name: "cursor",
        description: "Opaque cursor from the previous page's `nextCursor`; absent for the first \
                      page. Keep the other filters unchanged while paging.",
        json_type: "string",
        format: None,
        range: None,
    },
    ParamDoc {
        name: "from",
        description: "Only rows at or after this RFC 3339 market time (e.g. \
                      `2018-04-04T00:00:00Z`; send `+` in an offset as `%2B`).",
        json_type: "string",
        format: Some("date-time"),
        range: None,
    },
    ParamDoc {
        name: "to",
        description: "Only rows before this RFC 3339 market time (exclusive).",
        json_type: "string",
        format: Some("date-time"),
        range: None,
    },
    ParamDoc {
        name: "symbol",
        description: "Only rows of this symbol, e.g. `BTC-USD`.",
        json_type: "string",
        format: None,
        range: None,
    },
];

/// A paged history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum History {
    /// `GET /v1/trades`.
    Trades,
    /// `GET /v1/decisions`.
    Decisions,
    /// `GET /v1/positions` (closed positions).
    Positions,
    /// `GET /v1/breakers/events`.
    BreakerEvents,
    /// `GET /v1/autopilot/adjustments`.
    Adjustments,
}

impl History {
    /// Name used in cursors and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Trades => "trades",
            Self::Decisions => "decisions",
            Self::Positions => "positions",
            Self::BreakerEvents => "breakerEvents",
            Self::Adjustments => "adjustments",
        }
    }

    /// Whether its rows have a symbol (so `symbol` filters them).
    pub fn has_symbol(self) -> bool {
        matches!(self, Self::Trades | Self::Decisions | Self::Positions)
    }

    /// The query parameters it accepts.
    pub fn params(self) -> &'static [ParamDoc] {
        if self.has_symbol() {
            &PAGE_PARAMS
        } else {
            &PAGE_PARAMS[..4]
        }
    }

    /// The cursor that continues after `key`.
    pub fn cursor(self, key: u64) -> String {
        hex::encode(format!("{}:{key}", self.name()))
    }

    fn parse_cursor(self, text: &str) -> Result<u64, HttpError> {
        let bad = || {
            HttpError::bad_request(
                "cursor",
                format!(
                    "{text:?} is not a cursor of this history: expected the `nextCursor` of a \
                     previous page of {}",
                    self.name()
                ),
            )
        };
        let raw = hex::decode(text).map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        match raw.split_once(':') {
            Some((name, key)) if name == self.name() => key.parse().map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

/// A parsed page request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageParams {
    /// Keyset position, limit and time filters.
    pub query: PageQuery,
    /// Symbol filter.
    pub symbol: Option<String>,
}

/// The query string's parameters by name.
///
/// # Errors
/// 400 naming a parameter that is not in `allowed` or is given twice.
pub fn query_pairs(
    raw: Option<&str>,
    allowed: &[ParamDoc],
) -> Result<BTreeMap<String, String>, HttpError> {
    let mut out = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !allowed.iter().any(|p| p.name == k) {
            let names: Vec<&str> = allowed.iter().map(|p| p.name).collect();
            let expected = if names.is_empty() {
                "this route takes no query parameters".to_owned()
            } else {
                format!("expected {}", names.join(", "))
            };
            return Err(HttpError::bad_request(
                k.as_ref(),
                format!("unknown query parameter {k:?}: {expected}"),
            ));
        }
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(HttpError::bad_request(
                k.as_ref(),
                format!("query parameter {k:?} is given twice: expected it at most once"),
            ));
        }
    }
    Ok(out)
}

/// An RFC 3339 time parameter.
fn time_param(name: &str, v: &str) -> Result<Timestamp, HttpError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| Timestamp::from_datetime(t.to_utc()))
        .map_err(|e| {
            let hint = if v.contains(' ') {
                " (a `+` in a query string reads as a space: send it as %2B, or use `Z`)"
            } else {
                ""
            };
            HttpError::bad_request(
                name,
                format!(
                    "{v:?} is not an RFC 3339 time ({e}): expected e.g. 2018-04-04T00:00:00Z{hint}"
                ),
            )
        })
}

/// Parse the query string of a page of `history`.
///
/// # Errors
/// 400 naming the parameter: unknown or repeated, `limit` not an integer
/// from 1 to 1000, a cursor this history did not issue, a time that is not
/// RFC 3339, `from` not before `to`, an empty or overlong `symbol`.
pub fn parse_page(raw: Option<&str>, history: History) -> Result<PageParams, HttpError> {
    let mut p = query_pairs(raw, history.params())?;
    let limit = match p.remove("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_ROWS).contains(&n) => n,
            _ => {
                return Err(HttpError::bad_request(
                    "limit",
                    format!("{v:?} is out of range: expected an integer from 1 to {MAX_PAGE_ROWS}"),
                ));
            }
        },
    };
    let after = p
        .remove("cursor")
        .map(|c| history.parse_cursor(&c))
        .transpose()?;
    let from = p
        .remove("from")
        .map(|v| time_param("from", &v))
        .transpose()?;
    let to = p.remove("to").map(|v| time_param("to", &v)).transpose()?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(HttpError::bad_request(
            "to",
            format!("to ({t}) is not after from ({f}): expected from < to"),
        ));
    }
    let symbol = match p.remove("symbol") {
        Some(s) if s.is_empty() || s.chars().count() > MAX_SYMBOL_LEN => {
            return Err(HttpError::bad_request(
                "symbol",
                format!(
                    "{s:?}: expected a symbol of 1 to {MAX_SYMBOL_LEN} characters, e.g. BTC-USD"
                ),
            ));
        }
        s => s,
    };
    Ok(PageParams {
        query: PageQuery {
            after,
            limit,
            from,
            to,
        },
        symbol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<PageParams, HttpError>) -> String {
        r.unwrap_err().body.field.unwrap_or_default()
    }

    #[test]
    fn defaults_and_full_queries() {
        let p = parse_page(None, History::Trades).unwrap();
        assert_eq!(p.query.limit, DEFAULT_LIMIT);
        assert_eq!(p.query.after, None);
        let c = History::Trades.cursor(42);
        let q = format!(
            "limit=1000&cursor={c}&from=2018-04-04T00:00:00Z&to=2018-04-05T00:00:00%2B01:00&symbol=BTC-USD"
        );
        let p = parse_page(Some(&q), History::Trades).unwrap();
        assert_eq!(p.query.limit, 1000);
        assert_eq!(p.query.after, Some(42));
        assert_eq!(p.query.from, Some(Timestamp(1_522_800_000_000)));
        assert_eq!(p.query.to, Some(Timestamp(1_522_882_800_000)));
        assert_eq!(p.symbol.as_deref(), Some("BTC-USD"));
    }

    #[test]
    fn bad_parameters_name_themselves() {
        let t = History::Trades;
        assert_eq!(field_of(parse_page(Some("limit=0"), t)), "limit");
        assert_eq!(field_of(parse_page(Some("limit=5000"), t)), "limit");
        assert_eq!(field_of(parse_page(Some("limit=x"), t)), "limit");
        assert_eq!(field_of(parse_page(Some("cursor=zz"), t)), "cursor");
        let other = History::Decisions.cursor(1);
        assert_eq!(
            field_of(parse_page(Some(&format!("cursor={other}")), t)),
            "cursor"
        );
        assert_eq!(field_of(parse_page(Some("from=yesterday"), t)), "from");
        let e = parse_page(Some("from=2018-04-04T00:00:00+00:00"), t).unwrap_err();
        assert!(e.body.message.contains("%2B"), "{}", e.body.message);
        assert_eq!(
            field_of(parse_page(
                Some("from=2018-04-05T00:00:00Z&to=2018-04-04T00:00:00Z"),
                t
            )),
            "to"
        );
        assert_eq!(field_of(parse_page(Some("symbol="), t)), "symbol");
        assert_eq!(field_of(parse_page(Some("limit=1&limit=2"), t)), "limit");
        assert_eq!(field_of(parse_page(Some("page=2"), t)), "page");
        let e = parse_page(Some("symbol=BTC-USD"), History::BreakerEvents).unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("symbol"));
        assert!(e.body.message.contains("expected limit, cursor, from, to"));
    }
}
