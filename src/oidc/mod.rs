//! The per-tenant protocol endpoints under `{public_url}/t/{tenant}`.

pub mod authn;
pub mod authorize;
pub mod client_auth;
pub mod code_grant;
pub mod cors;
pub mod discovery;
pub mod form;
pub mod introspect;
pub mod login;
pub mod logout;
pub mod pages;
pub mod revoke;
pub mod session;
pub mod token;
pub mod user_tokens;
pub mod userinfo;

use std::sync::Arc;

use crate::app::AppState;
use crate::http::OAuthError;
use crate::tenants::Tenant;

/// The tenant named in the path, or the OAuth error for an unknown one.
pub async fn tenant(state: &AppState, slug: &str) -> Result<Arc<Tenant>, OAuthError> {
    state.tenants.by_slug(slug).await?.ok_or_else(OAuthError::not_found)
}

/// Records a token event; the response waits for it (nothing acknowledged is unaudited).
pub async fn audit(
    state: &AppState,
    tenant_id: &str,
    client_id: &str,
    user_id: Option<&str>,
    kind: &str,
    data: serde_json::Value,
) -> Result<(), OAuthError> {
    let mut e = crate::audit::Event::new(tenant_id, kind).client(client_id).data(data);
    if let Some(u) = user_id {
        e = e.user(u);
    }
    state.audit.record(e).await?;
    Ok(())
}
