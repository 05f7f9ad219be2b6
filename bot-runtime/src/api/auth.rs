//! Bearer-token authentication.
//!
//! Control routes (`POST /v1/*`) always need `Authorization: Bearer <token>`;
//! read routes (`GET /v1/*`) too unless the server opens them. Without the
//! header the answer is 401 with a `WWW-Authenticate: Bearer` challenge,
//! with a wrong token 403. A server started without a token refuses every
//! control request (403) — it never opens them silently — and its reads need
//! `open_reads`.
//!
//! The comparison is in constant time: both the presented and the expected
//! token are hashed with SHA-256 and the digests compared with
//! [`subtle::ConstantTimeEq`], so neither the content nor the length of the
//! expected token leaks through timing.

use std::fmt;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::HttpError;

/// Challenge sent with a 401 for a missing `Authorization` header.
const CHALLENGE: &str = "Bearer realm=\"paperbot-runtime\"";
/// Challenge sent with a 401 for a header that is not `Bearer <token>`.
const CHALLENGE_INVALID: &str = "Bearer realm=\"paperbot-runtime\", error=\"invalid_request\"";

/// The API token (never printed: `Debug` shows `ApiToken(***)`).
#[derive(Clone)]
pub struct ApiToken {
    digest: [u8; 32],
}

impl ApiToken {
    /// A token from its text; surrounding white space (a trailing newline in
    /// a Secret file) is not part of it.
    ///
    /// # Errors
    /// A message when the token is empty, or holds characters a header
    /// cannot carry (only visible ASCII is allowed).
    pub fn new(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("the API token is empty: expected at least one character".into());
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the API token holds white space or non-ASCII characters: expected visible \
                 ASCII only (it travels in an HTTP header)"
                    .into(),
            );
        }
        Ok(Self {
            digest: Sha256::digest(t.as_bytes()).into(),
        })
    }

    /// Whether `presented` is this token, in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest.ct_eq(&d).into()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Probes, metrics, the OpenAPI document: no token.
    Open,
    /// `GET /v1/*`: the token unless reads are open.
    Read,
    /// `POST /v1/*`: always the token.
    Control,
}

/// Who may do what.
#[derive(Clone, Debug)]
pub struct Auth {
    /// The token; `None` refuses control and (unless open) reads.
    pub token: Option<ApiToken>,
    /// Reads need no token.
    pub open_reads: bool,
}

impl Auth {
    /// Whether a request with `headers` may use a route needing `access`.
    ///
    /// # Errors
    /// 401 without a bearer token, 403 with a wrong one or when the server
    /// has no token.
    pub fn check(&self, headers: &HeaderMap, access: Access) -> Result<(), HttpError> {
        if access == Access::Open || (access == Access::Read && self.open_reads) {
            return Ok(());
        }
        let Some(token) = &self.token else {
            return Err(HttpError::forbidden(match access {
                Access::Control => {
                    "this runtime was started without an API token (--token-file), so it \
                     refuses every control request"
                }
                _ => {
                    "this runtime was started without an API token (--token-file) and with \
                     closed reads: start it with a token, or with reads opened"
                }
            }));
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(HttpError::unauthorized(
                "this route needs the session's API token: send `Authorization: Bearer <token>`",
                CHALLENGE,
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty());
        let Some(presented) = presented else {
            return Err(HttpError::unauthorized(
                "the Authorization header is not `Bearer <token>`",
                CHALLENGE_INVALID,
            ));
        };
        if token.matches(presented) {
            Ok(())
        } else {
            Err(HttpError::forbidden(
                "the bearer token is not this session's API token",
            ))
        }
    }
}

/// Middleware of read routes.
pub(crate) async fn require_read(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    guard(&app, req, next, Access::Read).await
}

/// Middleware of control routes.
pub(crate) async fn require_control(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    guard(&app, req, next, Access::Control).await
}

async fn guard(app: &AppState, req: Request, next: Next, access: Access) -> Response {
    match app.auth.check(req.headers(), access) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn tokens_compare_by_content_and_never_print() {
        let t = ApiToken::new("s3cret\n").unwrap();
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cre"));
        assert!(!t.matches("s3cret "));
        assert_eq!(format!("{t:?}"), "ApiToken(***)");
        assert!(ApiToken::new(" \n").unwrap_err().contains("empty"));
        assert!(ApiToken::new("a b").unwrap_err().contains("visible ASCII"));
    }

    #[test]
    fn schemes_and_statuses() {
        let auth = Auth {
            token: Some(ApiToken::new("tok").unwrap()),
            open_reads: false,
        };
        let status = |h: &HeaderMap, a| auth.check(h, a).map_err(|e| e.status);
        assert_eq!(status(&headers("Bearer tok"), Access::Control), Ok(()));
        assert_eq!(status(&headers("bearer tok"), Access::Read), Ok(()));
        assert_eq!(
            status(&HeaderMap::new(), Access::Control),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(&headers("Basic dG9r"), Access::Control),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(&headers("Bearer nope"), Access::Read),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(status(&HeaderMap::new(), Access::Open), Ok(()));
        let e = auth.check(&HeaderMap::new(), Access::Read).unwrap_err();
        assert_eq!(e.challenge, Some(CHALLENGE));
    }

    #[test]
    fn without_a_token_control_is_refused_and_reads_only_when_open() {
        let closed = Auth {
            token: None,
            open_reads: false,
        };
        let open = Auth {
            token: None,
            open_reads: true,
        };
        let h = headers("Bearer anything");
        assert_eq!(
            closed.check(&h, Access::Control).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            open.check(&h, Access::Control).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            closed.check(&h, Access::Read).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert!(open.check(&HeaderMap::new(), Access::Read).is_ok());
    }
}
