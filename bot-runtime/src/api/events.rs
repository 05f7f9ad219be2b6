//! `GET /v1/events`: the session's live events as server-sent events.
//!
//! Each [`RuntimeEvent`] becomes one SSE event whose name is its kind
//! (`fill`, `decision`, `breaker`, `adjustment`, `adjustmentOutcome`,
//! `price`, `phase`) and whose `data` is one line of JSON (the shapes of
//! [`super::rows`]), in commit order. A subscriber that falls behind the
//! session's broadcast buffer gets a `lagged` event saying how many events
//! it missed, then the stream goes on; it never slows the session. A
//! comment line is sent every 15 s of silence so that proxies keep the
//! connection open. The stream ends when the session side goes away or the
//! server shuts down. `?kinds=fill,breaker` keeps only those kinds
//! (`lagged` is always sent). At most `ApiOptions::max_event_streams`
//! streams are open at once; one more is answered 503.

use std::convert::Infallible;
use std::time::Duration;

use axum::{
    extract::{RawQuery, State},
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{Stream, StreamExt as _, stream};
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::error::HttpError;
use super::paging::{ParamDoc, query_pairs};
use super::rows::{
    Adjustment, AdjustmentOutcome, BreakerEvent, Decision, Fill, Lagged, PhaseChange, PriceUpdate,
};
use crate::service::RuntimeEvent;

/// Seconds of silence after which a keep-alive comment is sent.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The query parameters of the stream.
pub const EVENT_PARAMS: [ParamDoc; 1] = [ParamDoc {
    name: "kinds",
    description: "Comma-separated event names to receive (default all): fill, decision, \
                  breaker, adjustment, adjustmentOutcome, price, phase. `lagged` is always sent.",
    json_type: "string",
    format: None,
    range: None,
}];

/// Every event name a filter may hold, in the bit order of [`Kinds`].
pub const KIND_NAMES: [&str; 7] = [
    "fill",
    "decision",
    "breaker",
    "adjustment",
    "adjustmentOutcome",
    "price",
    "phase",
];

/// A set of event kinds (bit `i` = [`KIND_NAMES`]`[i]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    /// Every kind.
    pub const ALL: Kinds = Kinds((1 << KIND_NAMES.len()) - 1);

    /// Parse `fill,breaker`.
    ///
    /// # Errors
    /// 400 on `kinds` naming an unknown or empty kind.
    pub fn parse(text: &str) -> Result<Self, HttpError> {
        let mut bits = 0u8;
        for name in text.split(',').map(str::trim) {
            match KIND_NAMES.iter().position(|k| *k == name) {
                Some(i) => bits |= 1 << i,
                None => {
                    return Err(HttpError::bad_request(
                        "kinds",
                        format!(
                            "unknown event kind {name:?}: expected a comma-separated list of {}",
                            KIND_NAMES.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(Self(bits))
    }

    fn contains(self, name: &str) -> bool {
        KIND_NAMES
            .iter()
            .position(|k| *k == name)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }
}

/// The SSE event name of `e`.
pub fn kind_of(e: &RuntimeEvent) -> &'static str {
    match e {
        RuntimeEvent::Fill(_) => "fill",
        RuntimeEvent::Decision(_) => "decision",
        RuntimeEvent::Breaker(_) => "breaker",
        RuntimeEvent::Adjustment(_) => "adjustment",
        RuntimeEvent::AdjustmentOutcome(_) => "adjustmentOutcome",
        RuntimeEvent::Price { .. } => "price",
        RuntimeEvent::Phase { .. } => "phase",
    }
}

/// `e` as one SSE event.
pub fn to_sse(e: &RuntimeEvent) -> Event {
    let event = Event::default().event(kind_of(e));
    let data = match e {
        RuntimeEvent::Fill(t) => event.json_data(Fill::from(t)),
        RuntimeEvent::Decision(d) => event.json_data(Decision::from(d)),
        RuntimeEvent::Breaker(b) => event.json_data(BreakerEvent::new(None, b)),
        RuntimeEvent::Adjustment(a) => event.json_data(Adjustment::new(a, None)),
        RuntimeEvent::AdjustmentOutcome(o) => event.json_data(AdjustmentOutcome::from(o)),
        RuntimeEvent::Price {
            symbol,
            time,
            close,
        } => event.json_data(PriceUpdate::new(symbol, *time, *close)),
        RuntimeEvent::Phase { phase, message } => event.json_data(PhaseChange {
            phase: *phase,
            message: message.clone(),
        }),
    };
    // Serialising these plain structs cannot fail; should it ever, the
    // subscriber is told instead of losing the event silently.
    data.unwrap_or_else(|e| {
        Event::default()
            .event("error")
            .data(format!("event could not be serialised: {e}"))
    })
}

fn lagged(missed: u64) -> Event {
    Event::default()
        .event("lagged")
        .json_data(Lagged {
            missed,
            message: format!(
                "this subscriber fell behind and missed {missed} events; re-read the histories \
                 (/v1/trades, /v1/decisions, ...) for them"
            ),
        })
        .unwrap_or_else(|_| Event::default().event("lagged").data(missed.to_string()))
}

/// The handler.
pub(crate) async fn events(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    let mut p = query_pairs(raw.as_deref(), &EVENT_PARAMS)?;
    let kinds = match p.remove("kinds") {
        Some(k) => Kinds::parse(&k)?,
        None => Kinds::ALL,
    };
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        return Err(HttpError::unavailable(format!(
            "{} event streams are open, the most this runtime serves: retry later",
            app.max_streams
        )));
    };
    let rx = app.handle.events.subscribe();
    let mut shutdown = app.shutdown.subscribe();
    let ended = async move {
        // Ends on shutdown, or when the server's state (and its sender) is gone.
        let _ = shutdown.wait_for(|s| *s).await;
    };
    // The permit lives as long as the stream.
    let live = stream::unfold((rx, permit), move |(mut rx, permit)| async move {
        loop {
            match rx.recv().await {
                Ok(e) if kinds.contains(kind_of(&e)) => {
                    return Some((Ok(to_sse(&e)), (rx, permit)));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => return Some((Ok(lagged(n)), (rx, permit))),
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(live.take_until(ended)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_filter() {
        let k = Kinds::parse("fill,breaker").unwrap();
        assert!(k.contains("fill") && k.contains("breaker"));
        assert!(!k.contains("price"));
        assert!(Kinds::ALL.contains("adjustmentOutcome"));
        let e = Kinds::parse("fill,nope").unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("kinds"));
        assert!(Kinds::parse("").is_err());
    }
}
