//! The route handlers (except the event stream, in [`super::events`]).

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, Path, RawQuery, Request, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use paperbot_crds::runtime_api::{ConfigUpdate, ControlResponse, RuntimeStatus};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::{HttpError, code};
use super::paging::{History, parse_page, query_pairs};
use super::rows::{
    Adjustment, BreakerEvent, ClosedPosition, Decision, Fill, Liveness, Page, Readiness,
};
use crate::service::Control;

/// Longest accepted `revision` of a `POST /v1/config`, characters.
pub const MAX_REVISION_LEN: usize = 63;

/// Longest breaker name accepted in a path, characters.
const MAX_BREAKER_NAME_LEN: usize = 63;

/// `GET /healthz`: the process serves requests.
pub(crate) async fn healthz() -> Json<Liveness> {
    Json(Liveness {
        status: "ok".into(),
    })
}

/// `GET /readyz`: 200 iff the session reports ready, else 503 with why.
pub(crate) async fn readyz(State(app): State<AppState>) -> Result<Json<Readiness>, HttpError> {
    let s = app.handle.status.borrow().clone();
    if s.ready {
        return Ok(Json(Readiness {
            ready: true,
            phase: s.phase,
        }));
    }
    Err(HttpError::unavailable(not_ready_reason(&s)))
}

/// Why a session whose status says not ready is not ready.
fn not_ready_reason(s: &RuntimeStatus) -> String {
    if !s.ledger.reachable {
        return match &s.ledger.reason {
            Some(r) => format!("the ledger is unreachable: {r}"),
            None => "the ledger is unreachable".into(),
        };
    }
    if let Some(m) = &s.message {
        return format!("phase {:?}: {m}", s.phase);
    }
    match s.data_age_seconds {
        Some(age) => format!(
            "phase {:?}: the market data is stale (last candle {age:.0} s ago)",
            s.phase
        ),
        None => format!("phase {:?}: no market data has arrived yet", s.phase),
    }
}

/// `GET /metrics`: the session's registry in Prometheus' text format.
pub(crate) async fn metrics(State(app): State<AppState>) -> Response {
    render_metrics(&app.handle.registry)
}

/// The text exposition of `registry`, or a 500 naming what failed.
pub(crate) fn render_metrics(registry: &prometheus::Registry) -> Response {
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&registry.gather()) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => HttpError::internal(format!("metrics could not be encoded: {e}")).into_response(),
    }
}

/// `GET /openapi.json`.
pub(crate) async fn openapi(State(app): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        app.openapi.as_ref().clone(),
    )
        .into_response()
}

/// `GET /v1/status`: the latest status the session published.
pub(crate) async fn status(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<RuntimeStatus>, HttpError> {
    query_pairs(raw.as_deref(), &[])?;
    Ok(Json(app.handle.status.borrow().clone()))
}

/// The ledger id of the served session, or 503 while it has none.
fn session_id(app: &AppState) -> Result<String, HttpError> {
    let s = app.handle.status.borrow();
    if s.session_id.is_empty() {
        return Err(HttpError::unavailable(format!(
            "the session has no ledger id yet (phase {:?}): retry shortly",
            s.phase
        )));
    }
    Ok(s.session_id.clone())
}

/// A page of `history` with rows mapped by `row` and the cursor of what follows.
fn page_of<T, U>(
    history: History,
    rows: Vec<(u64, T)>,
    next_after: Option<u64>,
    row: impl Fn(u64, &T) -> U,
) -> Page<U> {
    Page {
        items: rows.iter().map(|(k, r)| row(*k, r)).collect(),
        next_cursor: next_after.map(|k| history.cursor(k)),
    }
}

/// `GET /v1/trades`.
pub(crate) async fn trades(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Page<Fill>>, HttpError> {
    let p = parse_page(raw.as_deref(), History::Trades)?;
    let id = session_id(&app)?;
    let page = app
        .ledger
        .trades(&id, &p.query, p.symbol.as_deref())
        .await?;
    Ok(Json(page_of(
        History::Trades,
        page.rows,
        page.next_after,
        |_, t| Fill::from(t),
    )))
}

/// `GET /v1/decisions`.
pub(crate) async fn decisions(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Page<Decision>>, HttpError> {
    let p = parse_page(raw.as_deref(), History::Decisions)?;
    let id = session_id(&app)?;
    let page = app
        .ledger
        .decisions(&id, &p.query, p.symbol.as_deref())
        .await?;
    Ok(Json(page_of(
        History::Decisions,
        page.rows,
        page.next_after,
        |_, d| Decision::from(d),
    )))
}

/// `GET /v1/positions`: closed positions.
pub(crate) async fn positions(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Page<ClosedPosition>>, HttpError> {
    let p = parse_page(raw.as_deref(), History::Positions)?;
    let id = session_id(&app)?;
    let page = app
        .ledger
        .round_trips(&id, &p.query, p.symbol.as_deref())
        .await?;
    Ok(Json(page_of(
        History::Positions,
        page.rows,
        page.next_after,
        ClosedPosition::new,
    )))
}

/// `GET /v1/breakers/events`.
pub(crate) async fn breaker_events(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Page<BreakerEvent>>, HttpError> {
    let p = parse_page(raw.as_deref(), History::BreakerEvents)?;
    let id = session_id(&app)?;
    let page = app.ledger.breaker_events(&id, &p.query).await?;
    Ok(Json(page_of(
        History::BreakerEvents,
        page.rows,
        page.next_after,
        |k, b| BreakerEvent::new(Some(k), b),
    )))
}

/// `GET /v1/autopilot/adjustments`.
pub(crate) async fn adjustments(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Page<Adjustment>>, HttpError> {
    let p = parse_page(raw.as_deref(), History::Adjustments)?;
    let id = session_id(&app)?;
    let page = app.ledger.adjustments(&id, &p.query).await?;
    Ok(Json(page_of(
        History::Adjustments,
        page.rows,
        page.next_after,
        |_, (a, o)| Adjustment::new(a, o.as_ref()),
    )))
}

/// Send `command` to the session and wait (bounded) for its answer.
async fn control(app: &AppState, command: Control) -> Result<Json<ControlResponse>, HttpError> {
    match tokio::time::timeout(app.control_timeout, app.handle.request(command)).await {
        Ok(answer) => Ok(Json(answer?)),
        Err(_) => Err(HttpError::unavailable(format!(
            "the session did not answer within {} s; the request may still take effect: check \
             GET /v1/status",
            app.control_timeout.as_secs_f64()
        ))),
    }
}

/// `POST /v1/pause`.
pub(crate) async fn pause(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
    _: NoBody,
) -> Result<Json<ControlResponse>, HttpError> {
    query_pairs(raw.as_deref(), &[])?;
    control(&app, Control::Pause).await
}

/// `POST /v1/resume`.
pub(crate) async fn resume(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
    _: NoBody,
) -> Result<Json<ControlResponse>, HttpError> {
    query_pairs(raw.as_deref(), &[])?;
    control(&app, Control::Resume).await
}

/// `POST /v1/stop`.
pub(crate) async fn stop(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
    _: NoBody,
) -> Result<Json<ControlResponse>, HttpError> {
    query_pairs(raw.as_deref(), &[])?;
    control(&app, Control::Stop).await
}

/// `POST /v1/breakers/{name}/reset`.
pub(crate) async fn reset_breaker(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    _: NoBody,
) -> Result<Json<ControlResponse>, HttpError> {
    query_pairs(raw.as_deref(), &[])?;
    let Path(name) = name.map_err(|e| {
        HttpError::bad_request("name", format!("{e}: expected a camelCase breaker name"))
    })?;
    let well_formed = !name.is_empty()
        && name.len() <= MAX_BREAKER_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric());
    if !well_formed {
        return Err(HttpError::bad_request(
            "name",
            format!(
                "{name:?} is not a breaker name: expected a camelCase name such as dailyLoss \
                 (letters and digits, at most {MAX_BREAKER_NAME_LEN})"
            ),
        ));
    }
    control(&app, Control::ResetBreaker(name)).await
}

/// `POST /v1/config`: hot reload of the strategy.
pub(crate) async fn config(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
    JsonBody(update): JsonBody<ConfigUpdate>,
) -> Result<Json<ControlResponse>, HttpError> {
    query_pairs(raw.as_deref(), &[])?;
    check_config(&update)?;
    control(&app, Control::Reload(Box::new(update))).await
}

/// The checks `kubectl apply` would make on the strategy (paths rebased
/// from `spec.` to `strategy.`), and the revision's length.
fn check_config(update: &ConfigUpdate) -> Result<(), HttpError> {
    if let Err(errors) = update.strategy.validate() {
        let first = &errors[..1.min(errors.len())];
        let message = errors
            .iter()
            .map(|e| format!("{}: {}", rebase(&e.path), e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let field = first.first().map(|e| rebase(&e.path)).unwrap_or_default();
        return Err(HttpError::bad_request(field, message));
    }
    if let Some(r) = &update.revision
        && (r.is_empty() || r.chars().count() > MAX_REVISION_LEN)
    {
        return Err(HttpError::bad_request(
            "revision",
            format!(
                "{} characters: expected 1 to {MAX_REVISION_LEN}",
                r.chars().count()
            ),
        ));
    }
    Ok(())
}

/// `spec.risk.x` → `strategy.risk.x`.
fn rebase(path: &str) -> String {
    match path.strip_prefix("spec") {
        Some(rest) => format!("strategy{rest}"),
        None => format!("strategy.{path}"),
    }
}

/// A JSON request body, read with the server's size limit and decoded with
/// the path of the field at fault: 415 unless `Content-Type` is JSON, 413
/// past the limit, 400 for malformed JSON, a wrong type, a missing or
/// unknown field (naming it).
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, HttpError> {
        check_json_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| HttpError::from_body_rejection(&r, state.body_limit))?;
        decode_json(&bytes).map(JsonBody)
    }
}

/// The body of a route that takes none: empty or `{}` (some clients always
/// send one); anything else is a 400 rather than being ignored.
pub(crate) struct NoBody;

impl FromRequest<AppState> for NoBody {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, HttpError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| HttpError::from_body_rejection(&r, state.body_limit))?;
        match std::str::from_utf8(&bytes).map(str::trim) {
            Ok("" | "{}") => Ok(NoBody),
            _ => Err(HttpError::bad_request(
                "",
                format!(
                    "this route takes no body (got {} bytes): send none, or {{}}",
                    bytes.len()
                ),
            )),
        }
    }
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), HttpError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    let json = mime.eq_ignore_ascii_case("application/json")
        || mime
            .rsplit_once('+')
            .is_some_and(|(_, s)| s.eq_ignore_ascii_case("json"));
    if json {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {ct:?}: expected application/json",
                ct = if ct.is_empty() { "(none)" } else { ct }
            ),
        ))
    }
}

/// `bytes` as a `T`, or a 400 naming the JSON path at fault.
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(HttpError::bad_request(
            "",
            "the request body is empty: expected a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let syntax = inner.is_syntax() || inner.is_eof();
        let field = if path == "." || syntax {
            String::new()
        } else {
            path
        };
        let message = if syntax {
            format!("malformed JSON: {inner}")
        } else if field.is_empty() {
            inner.to_string()
        } else {
            format!("{field}: {inner}")
        };
        HttpError::bad_request(field, message)
    })?;
    de.end().map_err(|e| {
        HttpError::bad_request("", format!("malformed JSON: {e} (one JSON value expected)"))
    })?;
    Ok(value)
}

/// Most report files built at once by `GET /v1/report/{file}`: one; further
/// requests wait their turn (each regenerates the whole report).
pub(crate) const REPORT_BUILDS: usize = 1;

/// The content type of report file `name`, `None` when `name` is not the
/// name of a report file: letters, digits, `_`, `-` and one `.` before a
/// known extension (`html`, `json`, `csv`, `png`), at most 128 bytes. So no
/// path (`/`, `..`) ever reaches the file system.
pub(crate) fn report_content_type(name: &str) -> Option<&'static str> {
    let (stem, ext) = name.rsplit_once('.')?;
    let stem_ok = !stem.is_empty()
        && name.len() <= 128
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !stem_ok {
        return None;
    }
    match ext {
        "html" => Some("text/html; charset=utf-8"),
        "json" => Some("application/json"),
        "csv" => Some("text/csv; charset=utf-8"),
        "png" => Some("image/png"),
        _ => None,
    }
}

/// `GET /v1/report/{file}`: one file of the session's report, regenerated
/// from the committed ledger for this request (so it is current while the
/// session runs, and the same as `bot-runtime report` would write).
pub(crate) async fn report_file(
    State(app): State<AppState>,
    file: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, HttpError> {
    query_pairs(raw.as_deref(), &[])?;
    let Path(file) = file
        .map_err(|e| HttpError::bad_request("file", format!("{e}: expected a report file name")))?;
    let expected = "expected a report file name such as report.html, summary.json, \
                    trades.csv or equity.png";
    let content_type = report_content_type(&file).ok_or_else(|| {
        HttpError::not_found(format!("{file:?} is not a report file: {expected}"))
    })?;
    let id = session_id(&app)?;
    let _turn = app
        .report_builds
        .acquire()
        .await
        .map_err(|_| HttpError::unavailable("the server is shutting down"))?;
    let dir = tempfile::Builder::new()
        .prefix("paperbot-api-report-")
        .tempdir()
        .map_err(|e| HttpError::internal(format!("cannot create a temporary directory: {e}")))?;
    let out = dir.path().to_path_buf();
    let ledger = app.ledger.clone();
    let data = app.report_data.clone();
    let built = tokio::task::spawn_blocking(move || {
        tokio::runtime::Handle::current()
            .block_on(crate::rebuild::regenerate_report(&ledger, &id, &out, &data))
    })
    .await
    .map_err(|e| HttpError::internal(format!("the report build stopped: {e}")))?;
    match built {
        Ok(_) => {}
        Err(crate::runner::RunError::Ledger(e)) => return Err(e.into()),
        Err(e) => return Err(HttpError::internal(format!("cannot build the report: {e}"))),
    }
    let body = match std::fs::read(dir.path().join(&file)) {
        Ok(body) => body,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut files: Vec<String> = std::fs::read_dir(dir.path())
                .map(|d| {
                    d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            return Err(HttpError::not_found(format!(
                "the report has no file {file:?}; it has {}",
                files.join(", ")
            )));
        }
        Err(e) => return Err(HttpError::internal(format!("cannot read {file}: {e}"))),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use paperbot_crds::runtime_api::{LedgerHealthStatus, RuntimePhase};

    #[test]
    fn config_errors_name_the_field() {
        let e =
            decode_json::<ConfigUpdate>(br#"{"strategy":{"signals":{}},"bogus":1}"#).unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("bogus"), "{:?}", e.body);
        let e = decode_json::<ConfigUpdate>(br#"{"strategy":{"intelLevel":"x","signals":{}}}"#)
            .unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("strategy.intelLevel"));
        let e = decode_json::<ConfigUpdate>(b"{\"strategy\":").unwrap_err();
        assert!(e.body.message.starts_with("malformed JSON"), "{:?}", e.body);
        let e =
            decode_json::<ConfigUpdate>(br#"{"strategy":{"signals":{"rsi":{}}}} {}"#).unwrap_err();
        assert!(e.body.message.starts_with("malformed JSON"), "{:?}", e.body);
        let e = decode_json::<ConfigUpdate>(b"  ").unwrap_err();
        assert!(e.body.message.contains("empty"));
    }

    #[test]
    fn out_of_range_strategies_are_refused_before_the_session_sees_them() {
        let u: ConfigUpdate =
            decode_json(br#"{"strategy":{"intelLevel":11,"signals":{"rsi":{}}},"revision":"7"}"#)
                .unwrap();
        let e = check_config(&u).unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("strategy.intelLevel"));
        assert!(
            e.body.message.contains("expected 1 to 10"),
            "{}",
            e.body.message
        );
        let mut u: ConfigUpdate = decode_json(br#"{"strategy":{"signals":{"rsi":{}}}}"#).unwrap();
        assert!(check_config(&u).is_ok());
        u.revision = Some("x".repeat(64));
        assert_eq!(
            check_config(&u).unwrap_err().body.field.as_deref(),
            Some("revision")
        );
    }

    #[test]
    fn not_ready_reasons() {
        let mut s = RuntimeStatus {
            phase: RuntimePhase::Running,
            ledger: LedgerHealthStatus {
                reachable: true,
                reason: None,
            },
            data_age_seconds: Some(95.2),
            ..Default::default()
        };
        assert!(not_ready_reason(&s).contains("stale (last candle 95 s ago)"));
        s.ledger = LedgerHealthStatus {
            reachable: false,
            reason: Some("connection refused".into()),
        };
        assert!(not_ready_reason(&s).contains("unreachable: connection refused"));
    }

    #[test]
    fn report_file_names_are_plain_names_with_known_extensions() {
        for (name, want) in [
            ("report.html", Some("text/html; charset=utf-8")),
            ("summary.json", Some("application/json")),
            ("by_exit_reason.csv", Some("text/csv; charset=utf-8")),
            ("price_BTC-USD.png", Some("image/png")),
            ("../paperbot.db", None),
            ("a/b.csv", None),
            (".csv", None),
            ("summary.json.bak", None),
            ("trades.CSV", None),
            ("summary", None),
            ("", None),
        ] {
            assert_eq!(report_content_type(name), want, "{name:?}");
        }
        let long = format!("{}.csv", "a".repeat(125));
        assert_eq!(report_content_type(&long), None);
        assert!(report_content_type(&format!("{}.csv", "a".repeat(124))).is_some());
    }
}
