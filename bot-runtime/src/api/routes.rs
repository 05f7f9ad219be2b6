//! The route table: every route once, with its handler and its
//! documentation. [`declare`] feeds it to a [`RouteSink`]: the router sink
//! mounts the handlers behind their authentication, the document sink
//! writes the OpenAPI paths ([`super::openapi`]).

use axum::{
    Router,
    handler::Handler,
    middleware,
    routing::{MethodRouter, get, post},
};
use paperbot_crds::runtime_api::{
    CONFIG_PATH, ConfigUpdate, ControlResponse, PAUSE_PATH, RESUME_PATH, RuntimeStatus,
    STATUS_PATH, STOP_PATH,
};

use super::AppState;
use super::auth::{self, Access};
use super::events::{self, EVENT_PARAMS};
use super::handlers;
use super::openapi::{Method, Operation, Spec};
use super::paging::History;
use super::rows::{
    Adjustment, AdjustmentOutcome, BreakerEvent, ClosedPosition, Decision, Fill, Liveness, Page,
    PhaseChange, PriceUpdate, Readiness,
};

/// Receives the route table.
pub(crate) trait RouteSink {
    /// Mount `handler` at `path` as documented by `op`.
    fn route<H, T>(&mut self, path: &'static str, handler: H, op: Operation)
    where
        H: Handler<T, AppState>,
        T: 'static;
}

/// Builds the router.
pub(crate) struct RouterSink {
    pub router: Router<AppState>,
    pub state: AppState,
}

impl RouteSink for RouterSink {
    fn route<H, T>(&mut self, path: &'static str, handler: H, op: Operation)
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let mut mr: MethodRouter<AppState> = match op.method {
            Method::Get => get(handler),
            Method::Post => post(handler),
        };
        mr = match op.access {
            Access::Open => mr,
            Access::Read => mr.route_layer(middleware::from_fn_with_state(
                self.state.clone(),
                auth::require_read,
            )),
            Access::Control => mr.route_layer(middleware::from_fn_with_state(
                self.state.clone(),
                auth::require_control,
            )),
        };
        let router = std::mem::take(&mut self.router);
        self.router = router.route(path, mr);
    }
}

/// Builds the OpenAPI document.
#[derive(Default)]
pub(crate) struct DocSink(pub Spec);

impl RouteSink for DocSink {
    fn route<H, T>(&mut self, path: &'static str, _handler: H, op: Operation)
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.0.add(path, &op);
    }
}

fn history(summary: &'static str, h: History) -> Operation {
    Operation::get("history", summary)
        .access(Access::Read)
        .query(h.params())
        .unavailable()
}

/// Every route of the API.
pub(crate) fn declare<R: RouteSink>(r: &mut R) {
    r.route(
        "/healthz",
        handlers::healthz,
        Operation::get("probes", "Liveness: the process serves requests")
            .ok::<Liveness>("Always `{\"status\":\"ok\"}`."),
    );
    r.route(
        "/readyz",
        handlers::readyz,
        Operation::get(
            "probes",
            "Readiness: the ledger is reachable and the data fresh",
        )
        .describe(
            "200 iff `GET /v1/status` says `ready` (the ledger takes commits and the market \
                 data is fresh, or the session has ended); else 503 with the reason.",
        )
        .ok::<Readiness>("Ready.")
        .error(503, "Not ready; `message` says why."),
    );
    r.route(
        "/metrics",
        handlers::metrics,
        Operation::get("probes", "Prometheus metrics of the session")
            .ok_text("text/plain", "Prometheus text format 0.0.4."),
    );
    r.route(
        "/openapi.json",
        handlers::openapi,
        Operation::get("probes", "This document")
            .ok_text("application/json", "The OpenAPI 3.1 document."),
    );
    r.route(
        STATUS_PATH,
        handlers::status,
        Operation::get("session", "The session's live figures")
            .describe(
                "Phase, equity, cash, realized and unrealized P&L, ROI, trades, win rate, \
                 drawdown, Sharpe ratio, open positions (with marks and unrealized P&L), every \
                 breaker, the autopilot, data age and the last candle time. Updated after every \
                 commit and at least once a second while the session runs.",
            )
            .access(Access::Read)
            .ok::<RuntimeStatus>("The latest status."),
    );
    r.route(
        "/v1/events",
        events::events,
        Operation::get("session", "Live event stream (server-sent events)")
            .describe(
                "One SSE event per committed fill, decision, breaker transition, autopilot \
                 adjustment and verdict, and per price and phase change, in commit order; the \
                 event name is the kind and `data` one line of JSON. A subscriber that falls \
                 behind gets a `lagged` event (how many it missed) and the stream goes on. A \
                 comment is sent after 15 s of silence. The stream ends when the server shuts \
                 down.",
            )
            .access(Access::Read)
            .query(&EVENT_PARAMS)
            .ok_text("text/event-stream", "The event stream.")
            .error(503, "Too many event streams are open; retry later.")
            .event::<Fill>("fill", "An order filled (or failed).")
            .event::<Decision>("decision", "A decision with its reasoning.")
            .event::<BreakerEvent>("breaker", "A circuit breaker changed state.")
            .event::<Adjustment>("adjustment", "The autopilot changed a parameter.")
            .event::<AdjustmentOutcome>(
                "adjustmentOutcome",
                "The autopilot judged an earlier adjustment.",
            )
            .event::<PriceUpdate>("price", "A candle closed.")
            .event::<PhaseChange>("phase", "The session's phase changed.")
            .event::<super::rows::Lagged>("lagged", "This subscriber missed events."),
    );
    r.route(
        "/v1/trades",
        handlers::trades,
        history("Fills and failed orders", History::Trades)
            .describe("By `seq`; `from`/`to` filter the fill's market time.")
            .ok::<Page<Fill>>("One page."),
    );
    r.route(
        "/v1/decisions",
        handlers::decisions,
        history("Decisions with their reasoning", History::Decisions)
            .describe(
                "By `seq`; `from`/`to` filter the decision's market time. Holds are recorded \
                 only when the session records them.",
            )
            .ok::<Page<Decision>>("One page."),
    );
    r.route(
        "/v1/positions",
        handlers::positions,
        history("Closed positions (position history)", History::Positions)
            .describe(
                "Each closed position (first entry to full exit) with its entry, exit, net P&L \
                 and exit reason, by `seq`; `from`/`to` filter the exit time. Open positions, \
                 with their marks and unrealized P&L, are in `GET /v1/status` (`positions`).",
            )
            .ok::<Page<ClosedPosition>>("One page."),
    );
    r.route(
        "/v1/breakers/events",
        handlers::breaker_events,
        history("Circuit-breaker transitions", History::BreakerEvents)
            .describe("By `seq`; `from`/`to` filter the transition's market time.")
            .ok::<Page<BreakerEvent>>("One page."),
    );
    r.route(
        "/v1/autopilot/adjustments",
        handlers::adjustments,
        history(
            "Autopilot adjustments with their verdicts",
            History::Adjustments,
        )
        .describe("By `id`; `from`/`to` filter the adjustment's market time.")
        .ok::<Page<Adjustment>>("One page."),
    );
    r.route(
        "/v1/report/{file}",
        handlers::report_file,
        Operation::get("session", "One file of the session's report")
            .describe(
                "The report `bot-runtime report` writes, regenerated from the committed ledger \
                 for this request (current while the session runs): `report.html` (one \
                 self-contained page with every table and chart), `summary.json`, \
                 `trades.csv`, `round_trips.csv`, `decisions.csv`, `by_symbol.csv`, \
                 `by_exit_reason.csv`, `daily.csv`, `equity.png` and the charts. One report is \
                 built at a time; other requests wait.",
            )
            .access(Access::Read)
            .path_param("file", "The file name, e.g. `report.html`.")
            .ok_text(
                "text/html",
                "The file, typed by its extension: `text/html`, `application/json`, `text/csv` \
                 or `image/png`.",
            )
            .error(
                404,
                "Not a report file; `message` lists the report's files.",
            )
            .unavailable(),
    );
    let control = |summary, description| {
        Operation::post("control", summary)
            .describe(description)
            .access(Access::Control)
            .ok::<ControlResponse>("Done (or nothing needed doing: see `message`).")
            .error(
                409,
                "The request does not fit the session's state (e.g. it has ended).",
            )
            .unavailable()
    };
    r.route(
        PAUSE_PATH,
        handlers::pause,
        control(
            "Pause: no new entries",
            "Open positions keep their exits (stop-loss, take-profit, trailing stop, max hold \
             time). No body.",
        ),
    );
    r.route(
        RESUME_PATH,
        handlers::resume,
        control("Resume after a pause", "No body."),
    );
    r.route(
        STOP_PATH,
        handlers::stop,
        control(
            "End the session for good",
            "Final report, phase `Stopped`; the API keeps serving. No body.",
        ),
    );
    r.route(
        "/v1/breakers/{name}/reset",
        handlers::reset_breaker,
        control(
            "Close one circuit breaker",
            "No body. 404 when the session has no breaker of that name.",
        )
        .path_param("name", "Breaker name (camelCase), e.g. `dailyLoss`.")
        .error(
            404,
            "No breaker of that name; `message` lists the breakers.",
        ),
    );
    r.route(
        CONFIG_PATH,
        handlers::config,
        control(
            "Hot reload of the strategy",
            "Replaces the strategy's parameters in place: positions, cash, breakers and history \
             are kept. The strategy is checked as `kubectl apply` would; the first field at \
             fault is named in `field`.",
        )
        .body::<ConfigUpdate>(),
    );
}

/// The OpenAPI document of every route the API serves.
pub fn openapi_document() -> serde_json::Value {
    let mut sink = DocSink::default();
    declare(&mut sink);
    sink.0.finish()
}
