//! The two error renderers: RFC 9457 problem+json for the management API, RFC 6749 error JSON
//! for OAuth endpoints. Internal detail is logged here, inside the request span, and never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;

/// `Retry-After` (seconds) while the database cannot be reached: every renderer of an outage
/// (problem+json, OAuth JSON, the login pages) says the same.
pub const OUTAGE_RETRY_AFTER: u64 = 2;

#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: Option<String>,
    pub errors: Option<serde_json::Value>,
    pub www_authenticate: Option<String>,
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, title: &'static str) -> Self {
        Problem {
            status,
            code,
            title,
            detail: None,
            errors: None,
            www_authenticate: None,
            retry_after: None,
        }
    }
    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
    pub fn bad_request(d: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", "The request is malformed").detail(d)
    }
    pub fn validation(field: &str, reason: &str) -> Self {
        let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", "A field is invalid")
            .detail(format!("`{field}` {reason}"));
        p.errors = Some(serde_json::json!([{ "field": field, "reason": reason }]));
        p
    }
    pub fn not_found() -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "No such resource")
    }
    pub fn unauthorized(www: &str) -> Self {
        let mut p = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "A valid bearer token is required",
        );
        p.www_authenticate = Some(www.into());
        p
    }
    pub fn forbidden(d: impl Into<String>) -> Self {
        let mut p = Problem::new(StatusCode::FORBIDDEN, "forbidden", "The token does not allow this").detail(d);
        p.www_authenticate = Some("Bearer error=\"insufficient_scope\"".into());
        p
    }
    pub fn busy() -> Self {
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "The service is busy, retry later",
        );
        p.retry_after = Some(1);
        p
    }
    /// Logs `err` and answers a generic 500 — or a 503 with `Retry-After` when `err` is the
    /// database being unreachable, whatever path it took to get here.
    pub fn internal<E: std::fmt::Display + Unavailability + ?Sized>(err: &E) -> Self {
        if err.is_bad_text() {
            return Problem::bad_request(BAD_TEXT);
        }
        if err.is_unavailable() {
            tracing::warn!(error = %err, "database unavailable");
            let mut p = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Temporarily unavailable, retry later",
            );
            p.retry_after = Some(OUTAGE_RETRY_AFTER);
            return p;
        }
        tracing::error!(error = %err, "internal error");
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
    }
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a serde_json::Value>,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            kind: format!("urn:unicred:problem:{}", self.code),
            title: self.title,
            status: self.status.as_u16(),
            detail: self.detail.as_deref(),
            errors: self.errors.as_ref(),
        };
        let mut r = (self.status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(w) = self.www_authenticate.and_then(|w| HeaderValue::from_str(&w).ok()) {
            h.insert(header::WWW_AUTHENTICATE, w);
        }
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid { field, reason } => Problem::validation(field, &reason),
            Error::Conflict(what) => Problem::new(StatusCode::CONFLICT, "conflict", "The resource already exists")
                .detail(format!("{what} already exists")),
            Error::NotFound => Problem::not_found(),
            Error::Forbidden(why) => Problem::forbidden(why),
            Error::Busy => Problem::busy(),
            Error::Policy(violations) => {
                let mut p = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "password-policy",
                    "The password does not meet the policy",
                );
                p.errors = Some(serde_json::to_value(violations).unwrap_or_default());
                p
            }
            Error::Store(e) => Problem::internal(&e),
            Error::Keys(e) => Problem::internal(&e),
        }
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Self {
        Problem::from(Error::from(e))
    }
}

/// Every 503 tells the client when to come back: the handlers' own 503s say so already; this
/// covers the rest (the request timeout, the login pages' busy answers) with one second.
pub fn retry_after_layer() -> tower_http::set_header::SetResponseHeaderLayer<fn(&Response) -> Option<HeaderValue>> {
    fn one_second_on_503(r: &Response) -> Option<HeaderValue> {
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then(|| HeaderValue::from_static("1"))
    }
    tower_http::set_header::SetResponseHeaderLayer::if_not_present(header::RETRY_AFTER, one_second_on_503)
}

/// RFC 6749 §5.2 error response.
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    pub www_authenticate: Option<&'static str>,
    pub retry_after: Option<u64>,
}

impl OAuthError {
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
            www_authenticate: None,
            retry_after: None,
        }
    }
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    /// Same answer for unknown client, wrong secret and wrong method.
    pub fn invalid_client() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
        e.www_authenticate = Some("Basic realm=\"unicred\", charset=\"UTF-8\"");
        e
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", d)
    }
    pub fn unsupported_grant_type() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type is not supported",
        )
    }
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", d)
    }
    pub fn invalid_target(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_target", d)
    }
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request", "unknown tenant")
    }
    pub fn busy() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "busy, retry later",
        );
        e.retry_after = Some(1);
        e
    }
    /// Logs `err` and answers a generic 500 — or 503 `temporarily_unavailable` with
    /// `Retry-After` when `err` is the database being unreachable.
    pub fn server_error<E: std::fmt::Display + Unavailability + ?Sized>(err: &E) -> Self {
        if err.is_bad_text() {
            return OAuthError::invalid_request(BAD_TEXT);
        }
        if err.is_unavailable() {
            tracing::warn!(error = %err, "database unavailable");
            let mut o = OAuthError::busy();
            o.retry_after = Some(OUTAGE_RETRY_AFTER);
            return o;
        }
        tracing::error!(error = %err, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error")
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.error, "error_description": self.description });
        let mut r = (self.status, axum::Json(body)).into_response();
        let h = r.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(w) = self.www_authenticate {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(w));
        }
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(e: crate::store::StoreError) -> Self {
        OAuthError::server_error(&e)
    }
}

impl From<crate::audit::AuditError> for OAuthError {
    fn from(e: crate::audit::AuditError) -> Self {
        OAuthError::server_error(&e)
    }
}

/// What a 400 for text the database refuses says (see [`crate::store::StoreError::is_bad_text`]).
pub const BAD_TEXT: &str = "text with a NUL character is not accepted";

/// Whether an error means the database cannot be reached right now (a 503 and a retry, not a
/// 500): one question every error that can carry a database failure answers. And whether the
/// request held text the database refuses (a 400).
pub trait Unavailability {
    fn is_unavailable(&self) -> bool;
    fn is_bad_text(&self) -> bool {
        false
    }
}

impl Unavailability for crate::store::StoreError {
    fn is_unavailable(&self) -> bool {
        crate::store::StoreError::is_unavailable(self)
    }
    fn is_bad_text(&self) -> bool {
        crate::store::StoreError::is_bad_text(self)
    }
}

impl Unavailability for crate::audit::AuditError {
    fn is_unavailable(&self) -> bool {
        crate::audit::AuditError::is_unavailable(self)
    }
}

impl Unavailability for crate::mfa::MfaError {
    fn is_unavailable(&self) -> bool {
        matches!(self, crate::mfa::MfaError::Store(e) if e.is_unavailable())
    }
    fn is_bad_text(&self) -> bool {
        matches!(self, crate::mfa::MfaError::Store(e) if e.is_bad_text())
    }
}

impl Unavailability for crate::authn::AuthnError {
    /// `Busy`: the hashing queue is full or the database unreachable — both worth a retry.
    fn is_unavailable(&self) -> bool {
        matches!(self, crate::authn::AuthnError::Busy)
    }
}

impl Unavailability for crate::tokens::tenant_keys::KeysError {
    fn is_unavailable(&self) -> bool {
        use crate::tokens::tenant_keys::KeysError;
        match self {
            KeysError::Store(e) => e.is_unavailable(),
            KeysError::Busy => true,
            _ => false,
        }
    }
}

/// Already-rendered messages and malformed stored JSON are never a database outage.
impl Unavailability for str {
    fn is_unavailable(&self) -> bool {
        false
    }
}

impl Unavailability for String {
    fn is_unavailable(&self) -> bool {
        false
    }
}

impl Unavailability for serde_json::Error {
    fn is_unavailable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_503_carries_retry_after_and_nothing_else_gains_one() {
        use axum::routing::get;
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route("/bare", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route(
                "/own",
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "7")]) }),
            )
            .route("/ok", get(|| async { "ok" }))
            .layer(retry_after_layer());
        let get = |uri: &'static str| {
            let app = app.clone();
            async move {
                let r = app
                    .oneshot(axum::http::Request::get(uri).body(axum::body::Body::empty()).unwrap())
                    .await
                    .unwrap();
                (r.status(), r.headers().get(header::RETRY_AFTER).cloned())
            }
        };
        assert_eq!(
            get("/bare").await,
            (StatusCode::SERVICE_UNAVAILABLE, Some(HeaderValue::from_static("1")))
        );
        assert_eq!(
            get("/own").await,
            (StatusCode::SERVICE_UNAVAILABLE, Some(HeaderValue::from_static("7")))
        );
        assert_eq!(get("/ok").await, (StatusCode::OK, None));
    }
    use crate::store::StoreError;
    use crate::tokens::tenant_keys::KeysError;

    fn outage() -> KeysError {
        KeysError::Store(StoreError::Db(sqlx::Error::PoolTimedOut))
    }

    #[test]
    fn an_unreachable_database_is_a_503_with_retry_after_whatever_error_carries_it() {
        let o = OAuthError::server_error(&outage());
        assert_eq!(o.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(o.error, "temporarily_unavailable");
        assert_eq!(o.retry_after, Some(2));
        let p = Problem::internal(&outage());
        assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(p.retry_after, Some(2));
        let p = Problem::from(crate::error::Error::Keys(outage()));
        assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn other_failures_stay_500_without_detail() {
        let corrupt = KeysError::Store(StoreError::Corrupt("secret detail".into()));
        let o = OAuthError::server_error(&corrupt);
        assert_eq!(o.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!o.description.contains("secret"));
        let p = Problem::internal("no signing key");
        assert_eq!(p.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(p.detail, None);
    }
}
