//! Discovery (OpenID Connect Discovery 1.0 / RFC 8414) and JWKS. The document lists only
//! endpoints this build serves.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::clients::{GRANT_CLIENT_CREDENTIALS, GRANT_CODE, GRANT_LOGIN_TICKET, GRANT_REFRESH};
use crate::http::OAuthError;
use crate::http::extract::Path;
use crate::tokens::Alg;

pub async fn openid_configuration(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> Result<Response, OAuthError> {
    let tenant = super::tenant(&state, &slug).await?;
    let iss = state.config.issuer(&tenant.slug);
    let auth_methods = ["client_secret_basic", "client_secret_post"];
    let algs: Vec<&str> = Alg::ALL.iter().map(|a| a.name()).collect();
    let doc = serde_json::json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "userinfo_endpoint": format!("{iss}/userinfo"),
        "jwks_uri": format!("{iss}/jwks.json"),
        "introspection_endpoint": format!("{iss}/introspect"),
        "revocation_endpoint": format!("{iss}/revoke"),
        "end_session_endpoint": format!("{iss}/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [GRANT_CODE, GRANT_REFRESH, GRANT_CLIENT_CREDENTIALS, GRANT_LOGIN_TICKET],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "id_token_signing_alg_values_supported": algs,
        "subject_types_supported": ["public"],
        "scopes_supported": tenant_scopes(),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "at_hash",
            "preferred_username", "name", "email", "email_verified", "updated_at"],
        "acr_values_supported": [crate::authn::ACR_PWD, crate::authn::ACR_MFA],
        "prompt_values_supported": ["none", "login", "consent"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
    });
    Ok(cacheable(axum::Json(doc).into_response(), 300))
}

fn tenant_scopes() -> Vec<&'static str> {
    vec!["openid", "profile", "email", "offline_access", "account"]
}

pub async fn jwks(State(state): State<AppState>, Path(slug): Path<String>) -> Result<Response, OAuthError> {
    let tenant = super::tenant(&state, &slug).await?;
    let keys = state
        .keys
        .for_tenant(&tenant.id)
        .await
        .map_err(|e| OAuthError::server_error(&e))?;
    let mut r = keys.jwks.clone().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    // Short: an emergency rotation must leave relying parties' caches quickly.
    Ok(cacheable(r, 30))
}

/// Public, cacheable, and readable from any origin.
fn cacheable(mut r: Response, max_age: u32) -> Response {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        h.insert(header::CACHE_CONTROL, v);
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
}
