//! HTTP: the router, middleware, extractors and the two error renderers.

pub mod error;
pub mod extract;
pub mod metrics;
pub mod ops;
pub mod ratelimit;
pub mod router;

pub use error::{OAuthError, Problem};

/// The token of an `Authorization: Bearer …` header (RFC 6750 §2.1), if there is one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let (scheme, token) = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
