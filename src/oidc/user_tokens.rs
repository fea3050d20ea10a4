//! Tokens for a signed-in user, shared by the authorization-code, refresh-token and
//! login-ticket grants: an access token, an ID token when `openid` was granted, and a rotating
//! refresh token when the client has that grant.

use crate::app::AppState;
use crate::clients::{Client, GRANT_REFRESH, SCOPE_ADMIN, SCOPE_TENANT_ADMIN};
use crate::http::OAuthError;
use crate::store::{self, refresh::RefreshRow, users::UserRow};
use crate::tenants::Tenant;
use crate::tokens::access::{self, AccessClaims};
use crate::tokens::id_token::{self, IdClaims};
use crate::tokens::jwt;

use super::token::TokenResponse;

/// Scopes a user token may carry besides the client's own (never the admin scopes). `account`
/// (the self-service API: factors, recovery codes, sessions) is not among them: only clients
/// registered with it may ask for it, else any app of the tenant could get a signed-in user's
/// token for it silently (prompt=none) and enrol its own second factor.
pub const USER_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// The requested scopes, each a user scope or one of the client's non-admin scopes.
pub fn user_scopes(client: &Client, requested: &str) -> Result<Vec<String>, OAuthError> {
    if requested.len() > 2048 {
        return Err(OAuthError::invalid_scope("scope is too long"));
    }
    let mut out: Vec<String> = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        let admin = s == SCOPE_ADMIN || s == SCOPE_TENANT_ADMIN;
        let allowed = USER_SCOPES.contains(&s) || client.scopes.iter().any(|c| c == s);
        if admin || !allowed {
            return Err(OAuthError::invalid_scope("a requested scope is not allowed"));
        }
        if !out.iter().any(|x| x == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

pub struct Authentication {
    pub auth_time: i64,
    pub acr: String,
    pub amr: String,
}

/// What the user granted and how they authenticated.
pub struct Grant {
    pub scopes: Vec<String>,
    pub authn: Authentication,
    pub nonce: Option<String>,
    /// The access token's audience asked for (RFC 8707; see `token::audience`), else the
    /// client's own id.
    pub resource: Option<String>,
}

pub enum Refresh {
    /// No refresh token (login tickets never make one).
    None,
    /// A new family, bound to the SSO session unless `offline_access` was granted.
    NewFamily { session_id: Option<String> },
    /// The next token of an existing family (rotation).
    Rotate(RefreshRow),
}

pub struct Issued {
    pub response: TokenResponse,
    pub jti: String,
    pub family: Option<String>,
}

pub async fn issue(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    user: &UserRow,
    grant: Grant,
    refresh: Refresh,
    tx: Option<&mut sqlx::Transaction<'static, sqlx::Any>>,
) -> Result<Issued, OAuthError> {
    let Grant {
        scopes,
        authn,
        nonce,
        resource,
    } = grant;
    let now = store::now();
    let ttl = tenant.policy.access_token_ttl();
    let scope = scopes.join(" ");
    let claims = AccessClaims {
        iss: state.config.issuer(&tenant.slug),
        sub: user.id.clone(),
        aud: resource.unwrap_or_else(|| client.id.clone()),
        client_id: client.id.clone(),
        exp: now + ttl,
        iat: now,
        jti: crate::crypto::random_token::<16>(),
        scope: scope.clone(),
        auth_time: Some(authn.auth_time),
        acr: Some(authn.acr.clone()),
    };
    let access_token = access::issue(state, tenant, &claims)
        .await
        .map_err(|e| OAuthError::server_error(&e))?;
    let id_token = if scopes.iter().any(|s| s == "openid") {
        let alg = client.id_token_alg.unwrap_or(tenant.policy.signing_alg());
        let keys = state
            .keys
            .for_tenant(&tenant.id)
            .await
            .map_err(|e| OAuthError::server_error(&e))?;
        let signer = keys
            .signers
            .get(&alg)
            .ok_or_else(|| OAuthError::server_error("no signing key"))?;
        let id = IdClaims {
            iss: claims.iss.clone(),
            sub: user.id.clone(),
            aud: client.id.clone(),
            azp: client.id.clone(),
            exp: now + ttl,
            iat: now,
            auth_time: authn.auth_time,
            acr: authn.acr.clone(),
            amr: authn
                .amr
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            nonce,
            at_hash: id_token::at_hash(alg, &access_token),
        };
        Some(jwt::sign(signer, "JWT", &id))
    } else {
        None
    };
    let family_row = match refresh {
        Refresh::None => None,
        Refresh::NewFamily { .. } if !client.has_grant(GRANT_REFRESH) => None,
        Refresh::NewFamily { session_id } => Some(RefreshRow {
            family_id: store::new_id(),
            tenant_id: tenant.id.clone(),
            client_id: client.id.clone(),
            user_id: user.id.clone(),
            session_id: if scopes.iter().any(|s| s == "offline_access") {
                None
            } else {
                session_id
            },
            scope: scope.clone(),
            auth_time: authn.auth_time,
            acr: authn.acr.clone(),
            amr: authn.amr.clone(),
            family_created_at: now,
            expires_at: now + tenant.policy.refresh_token_ttl(),
        }),
        Refresh::Rotate(row) => Some(RefreshRow {
            scope: scope.clone(),
            ..row
        }),
    };
    let (refresh_token, family) = match family_row {
        Some(row) => {
            let token = crate::crypto::random_token::<32>();
            match tx {
                Some(tx) => store::refresh::create(&mut **tx, &crate::crypto::secret_hash(&token), &row).await?,
                None => store::refresh::create(&state.db.pool, &crate::crypto::secret_hash(&token), &row).await?,
            }
            (Some(token), Some(row.family_id))
        }
        None => (None, None),
    };
    Ok(Issued {
        response: TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: ttl,
            scope,
            id_token,
            refresh_token,
        },
        jti: claims.jti,
        family,
    })
}
