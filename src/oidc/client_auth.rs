//! Client authentication for `/token`, `/introspect`, `/revoke`, `/authn`:
//! `client_secret_basic` or `client_secret_post`, the one the client registered, never both.
//! Every failure is the same `invalid_client`.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use base64::Engine;

use crate::app::AppState;
use crate::clients::{self, AuthMethod, Client};
use crate::http::OAuthError;
use crate::tenants::Tenant;

use super::form::Form;

/// Authenticates a confidential client of `tenant`; public clients identify themselves by
/// `client_id` only when `allow_public` is set.
pub async fn authenticate(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    form: &Form,
    allow_public: bool,
) -> Result<Arc<Client>, OAuthError> {
    authenticate_with(
        state,
        tenant,
        headers,
        form.get("client_id"),
        form.get("client_secret"),
        allow_public,
    )
    .await
}

/// The same, with `client_secret_post` credentials taken from wherever the body keeps them.
pub async fn authenticate_with(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    body_id: Option<&str>,
    body_secret: Option<&str>,
    allow_public: bool,
) -> Result<Arc<Client>, OAuthError> {
    let basic = basic_credentials(headers)?;
    let (id, secret, method) = match (basic, body_secret) {
        (Some(_), Some(_)) => return Err(OAuthError::invalid_request("use one client authentication method")),
        (Some((id, secret)), None) => {
            if body_id.is_some_and(|f| f != id) {
                return Err(OAuthError::invalid_request("client_id does not match the credentials"));
            }
            (id, Some(secret), AuthMethod::ClientSecretBasic)
        }
        (None, Some(secret)) => {
            let id = body_id.ok_or_else(|| OAuthError::invalid_request("`client_id` is required"))?;
            (id.to_string(), Some(secret.to_string()), AuthMethod::ClientSecretPost)
        }
        (None, None) => match body_id {
            Some(id) => (id.to_string(), None, AuthMethod::None),
            None => return Err(OAuthError::invalid_client()),
        },
    };
    let client = state.clients.get(&id).await?;
    let Some(client) = client.filter(|c| c.tenant_id == tenant.id) else {
        return Err(OAuthError::invalid_client());
    };
    if client.auth_method != method {
        return Err(OAuthError::invalid_client());
    }
    match secret {
        Some(s) if clients::secret_matches(&state.keyring, &client, &s) => Ok(client),
        None if allow_public && client.is_public() => Ok(client),
        _ => Err(OAuthError::invalid_client()),
    }
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| OAuthError::invalid_client())?;
    let Some((scheme, b64)) = value.split_once(' ') else {
        return Err(OAuthError::invalid_client());
    };
    if !scheme.eq_ignore_ascii_case("basic") || b64.len() > 2048 {
        return Err(OAuthError::invalid_client());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| OAuthError::invalid_client())?;
    let raw = String::from_utf8(raw).map_err(|_| OAuthError::invalid_client())?;
    let (id, secret) = raw.split_once(':').ok_or_else(OAuthError::invalid_client)?;
    let decode = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    let id = decode(id).ok_or_else(OAuthError::invalid_client)?;
    let secret = decode(secret).ok_or_else(OAuthError::invalid_client)?;
    Ok(Some((id, secret)))
}
