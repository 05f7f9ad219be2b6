//! Every 4xx and 5xx answer of the API: a status code with an [`ApiError`]
//! body naming the field at fault and what is expected.

use axum::{
    Json,
    extract::rejection::BytesRejection,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use paperbot_crds::runtime_api::ApiError;

use crate::ledger::LedgerError;
use crate::service::ControlError;

/// An error answer: status and body.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpError {
    /// HTTP status (4xx or 5xx).
    pub status: StatusCode,
    /// The JSON body.
    pub body: ApiError,
    /// `WWW-Authenticate` value, on 401 only.
    pub challenge: Option<&'static str>,
}

/// Codes of [`ApiError::error`] beyond the ones `paperbot-crds` lists, for
/// the answers HTTP itself defines.
pub mod code {
    /// 400.
    pub const BAD_REQUEST: &str = "bad_request";
    /// 401.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 403.
    pub const FORBIDDEN: &str = "forbidden";
    /// 404.
    pub const NOT_FOUND: &str = "not_found";
    /// 405.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// 409.
    pub const CONFLICT: &str = "conflict";
    /// 413.
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// 415.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// 500.
    pub const INTERNAL: &str = "internal";
    /// 503.
    pub const UNAVAILABLE: &str = "unavailable";
}

impl HttpError {
    /// An error with `status`, machine code `error` and `message`.
    pub fn new(status: StatusCode, error: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ApiError {
                error: error.to_owned(),
                message: message.into(),
                field: None,
            },
            challenge: None,
        }
    }

    /// This error blamed on `field` (a JSON path or a query parameter name).
    pub fn field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        self.body.field = (!field.is_empty()).then_some(field);
        self
    }

    /// 400 `bad_request` about `field`.
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::BAD_REQUEST, message).field(field)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code::NOT_FOUND, message)
    }

    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, code::INTERNAL, message)
    }

    /// 401 `unauthorized` with a `WWW-Authenticate` challenge.
    pub fn unauthorized(message: impl Into<String>, challenge: &'static str) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, message);
        e.challenge = Some(challenge);
        e
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code::FORBIDDEN, message)
    }

    /// The body of a request that could not be read: 413 when it was larger
    /// than `limit` bytes, else 400.
    pub fn from_body_rejection(r: &BytesRejection, limit: usize) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                code::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {limit} bytes"),
            )
        } else {
            Self::bad_request("", format!("the request body could not be read: {r}"))
        }
    }
}

impl From<ControlError> for HttpError {
    /// `NotFound` → 404, `BadRequest` → 400 naming the field, `Conflict` →
    /// 409, `Unavailable` → 503.
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound { message } => Self::not_found(message),
            ControlError::BadRequest { field, message } => Self::bad_request(field, message),
            ControlError::Conflict(message) => {
                Self::new(StatusCode::CONFLICT, code::CONFLICT, message)
            }
            ControlError::Unavailable(message) => Self::unavailable(message),
        }
    }
}

impl From<LedgerError> for HttpError {
    /// A read that failed: 503 while the database may come back (it is
    /// unreachable, busy, or not created yet), 500 for a corrupt row.
    fn from(e: LedgerError) -> Self {
        match &e {
            LedgerError::Corrupt { .. } => Self::internal(e.to_string()),
            _ => Self::unavailable(format!("the ledger cannot be read now: {e}")),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if let Some(challenge) = self.challenge {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        r
    }
}
