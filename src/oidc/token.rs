//! `/token` (RFC 6749 §3.2): no-cache, parse, authenticate the client, dispatch on the grant.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::app::AppState;
use crate::clients::{
    self, Client, GRANT_CLIENT_CREDENTIALS, GRANT_CODE, GRANT_LOGIN_TICKET, GRANT_REFRESH, SCOPE_ADMIN,
    SCOPE_TENANT_ADMIN,
};
use crate::http::OAuthError;
use crate::http::extract::Path;
use crate::store;
use crate::tenants::Tenant;
use crate::tokens::access::{self, AccessClaims};

use super::form::Form;
use super::{client_auth, user_tokens};

enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
    LoginTicket,
}

impl GrantType {
    fn parse(s: &str) -> Option<GrantType> {
        match s {
            GRANT_CODE => Some(GrantType::AuthorizationCode),
            GRANT_REFRESH => Some(GrantType::RefreshToken),
            GRANT_CLIENT_CREDENTIALS => Some(GrantType::ClientCredentials),
            GRANT_LOGIN_TICKET => Some(GrantType::LoginTicket),
            _ => None,
        }
    }
}

#[derive(Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl IntoResponse for TokenResponse {
    fn into_response(self) -> Response {
        let mut r = axum::Json(self).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r.headers_mut()
            .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        r
    }
}

pub async fn token(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let tenant = super::tenant(&state, &slug).await?;
    let form = Form::parse(&headers, &body)?;
    let grant = form.require("grant_type")?;
    let grant = GrantType::parse(grant).ok_or_else(OAuthError::unsupported_grant_type)?;
    let client = client_auth::authenticate(&state, &tenant, &headers, &form, true).await?;
    let r = match grant {
        GrantType::ClientCredentials => client_credentials(&state, &tenant, &client, &form).await,
        GrantType::LoginTicket => login_ticket(&state, &tenant, &client, &form).await,
        GrantType::AuthorizationCode => super::code_grant::authorization_code(&state, &tenant, &client, &form).await,
        GrantType::RefreshToken => super::code_grant::refresh_token(&state, &tenant, &client, &form).await,
    };
    Ok(super::cors::for_client(&client, r))
}

/// RFC 6749 §4.4. Admin scopes come only from here, and only for clients a platform admin
/// granted them; their tokens are for the management API alone.
async fn client_credentials(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    if client.is_public() || !client.has_grant(GRANT_CLIENT_CREDENTIALS) {
        return Err(OAuthError::unauthorized_client(
            "client_credentials is not allowed for this client",
        ));
    }
    let scopes = granted_scopes(client, form.get("scope"))?;
    let admin = scopes.iter().any(|s| *s == SCOPE_ADMIN || *s == SCOPE_TENANT_ADMIN);
    let aud = if admin {
        match form.all("resource").as_slice() {
            [] => state.config.admin_audience(),
            [r] if *r == state.config.admin_audience() => r.to_string(),
            _ => {
                return Err(OAuthError::invalid_target(
                    "admin scopes are only for the management API",
                ));
            }
        }
    } else {
        audience(client, form)?.unwrap_or_else(|| client.id.clone())
    };
    let now = store::now();
    let ttl = tenant.policy.access_token_ttl();
    let claims = AccessClaims {
        iss: state.config.issuer(&tenant.slug),
        sub: client.id.clone(),
        aud,
        client_id: client.id.clone(),
        exp: now + ttl,
        iat: now,
        jti: crate::crypto::random_token::<16>(),
        scope: scopes.join(" "),
        auth_time: None,
        acr: None,
    };
    let token = access::issue(state, tenant, &claims)
        .await
        .map_err(|e| OAuthError::server_error(&e))?;
    super::audit(
        state,
        &tenant.id,
        &client.id,
        None,
        "token.issued",
        serde_json::json!({"grant": "client_credentials", "jti": claims.jti, "scope": claims.scope}),
    )
    .await?;
    metrics::counter!("unicred_tokens_issued_total", "grant" => "client_credentials").increment(1);
    Ok(TokenResponse {
        access_token: token,
        token_type: "Bearer",
        expires_in: ttl,
        scope: claims.scope,
        id_token: None,
        refresh_token: None,
    })
}

/// `urn:unicred:grant-type:login-ticket`: redeems a one-time ticket from `/authn`, server to
/// server, for the client the ticket was issued to. No SSO session is created.
async fn login_ticket(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    if client.is_public() || !client.has_grant(GRANT_LOGIN_TICKET) || !client.authn_api {
        return Err(OAuthError::unauthorized_client(
            "the login-ticket grant is not allowed for this client",
        ));
    }
    let resource = audience(client, form)?;
    let ticket = form.require("login_ticket")?;
    if ticket.len() > 128 {
        return Err(OAuthError::invalid_grant("invalid login ticket"));
    }
    // Redeeming burns the ticket whoever presents it: a ticket in the wrong hands is spent.
    let t = store::tickets::redeem(&state.db, &crate::crypto::secret_hash(ticket))
        .await?
        .filter(|t| t.tenant_id == tenant.id && t.client_id == client.id)
        .ok_or_else(|| OAuthError::invalid_grant("invalid, expired or already used login ticket"))?;
    let user = store::users::get(&state.db, &tenant.id, &t.user_id)
        .await?
        .filter(|u| u.status == "active" && u.tokens_valid_after <= t.auth_time)
        .ok_or_else(|| OAuthError::invalid_grant("the user can no longer sign in"))?;
    let scopes = user_tokens::user_scopes(client, form.get("scope").unwrap_or("openid"))?;
    let authn = user_tokens::Authentication {
        auth_time: t.auth_time,
        acr: t.acr,
        amr: t.amr,
    };
    let issued = user_tokens::issue(
        state,
        tenant,
        client,
        &user,
        user_tokens::Grant {
            scopes,
            authn,
            nonce: None,
            resource,
        },
        user_tokens::Refresh::None,
        None,
    )
    .await?;
    super::audit(
        state,
        &tenant.id,
        &client.id,
        Some(&user.id),
        "token.issued",
        serde_json::json!({"grant": "login_ticket", "jti": issued.jti}),
    )
    .await?;
    metrics::counter!("unicred_tokens_issued_total", "grant" => "login_ticket").increment(1);
    Ok(issued.response)
}

/// The requested scopes, each of which the client must hold; none requested means all of
/// the client's scopes.
/// The access token's audience a request asks for with `resource` (RFC 8707): one of the
/// client's registered resources, or `None` (the client's own id) when it names none. Checked
/// before a code, ticket or refresh token is spent.
pub(super) fn audience(client: &Client, form: &Form) -> Result<Option<String>, OAuthError> {
    match form.all("resource").as_slice() {
        [] => Ok(None),
        [r] if client.resources.iter().any(|x| x == r) => Ok(Some(r.to_string())),
        [_] => Err(OAuthError::invalid_target("resource is not allowed for this client")),
        _ => Err(OAuthError::invalid_target("one resource per token")),
    }
}

fn granted_scopes<'a>(client: &'a Client, requested: Option<&'a str>) -> Result<Vec<&'a str>, OAuthError> {
    let Some(requested) = requested else {
        return Ok(client.scopes.iter().map(String::as_str).collect());
    };
    if requested.len() > 2048 {
        return Err(OAuthError::invalid_scope("scope is too long"));
    }
    let mut out: Vec<&str> = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if !clients::valid_scope_token(s) || !client.scopes.iter().any(|c| c == s) {
            return Err(OAuthError::invalid_scope(
                "a requested scope is not allowed for this client",
            ));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}
