//! HTTP: the router, middleware, extractors and the two error renderers.

pub mod error;
pub mod extract;
pub mod metrics;
pub mod ops;
pub mod ratelimit;
pub mod router;

pub use error::{OAuthError, Problem};
