//! RFC 9068 access tokens: issued by `/token`, accepted by introspection, userinfo, the account
//! and admin APIs. Validation is one function so every surface refuses the same tokens.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::cache::TtlCache;
use crate::store;
use crate::tenants::{CLOCK_SKEW, Tenant};

use super::jwt::{self, Invalid};

pub const TYP: &str = "at+jwt";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
}

impl AccessClaims {
    pub fn has_scope(&self, s: &str) -> bool {
        self.scope.split(' ').any(|x| x == s)
    }
    /// Client-credentials tokens have the client as subject.
    pub fn is_client_token(&self) -> bool {
        self.sub == self.client_id && self.auth_time.is_none()
    }
}

/// Signs an access token with the tenant's current key for its default algorithm.
pub async fn issue(
    state: &AppState,
    tenant: &Tenant,
    claims: &AccessClaims,
) -> Result<String, super::tenant_keys::KeysError> {
    let keys = state.keys.for_tenant(&tenant.id).await?;
    let signer = keys
        .signers
        .get(&tenant.policy.signing_alg())
        .ok_or(super::tenant_keys::KeysError::Store(store::StoreError::Corrupt(
            "no current signing key".into(),
        )))?;
    Ok(jwt::sign(signer, TYP, claims))
}

/// Tokens whose signature, `typ`, `iss` and key were verified, by SHA-256 of the token: a
/// signature never changes, so a resource server introspecting the same token again skips the
/// ECDSA/RSA check. Everything that can change (key withdrawal, expiry, revocation, the
/// subject's standing) is checked on every use.
pub type VerifiedCache = TtlCache<[u8; 32], Arc<(String, String, AccessClaims)>>;

pub fn verified_cache() -> VerifiedCache {
    TtlCache::new(std::time::Duration::from_secs(60), 50_000)
}

/// Verifies an access token: a published key of its tenant, signature, `typ`, `exp`, `iss`,
/// `aud` (when given), then revocation and the subject's standing (client still exists,
/// user still active and not revoked since the token was issued).
pub async fn validate(
    state: &AppState,
    token: &str,
    audience: Option<&str>,
) -> Result<(Arc<Tenant>, AccessClaims), Invalid> {
    if token.len() > 16 * 1024 {
        return Err(Invalid::Malformed);
    }
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let (tenant, claims) = match state.verified.get(&digest) {
        Some(hit) => {
            let (tenant_id, kid, claims) = &*hit;
            let tenant = state
                .tenants
                .by_id(tenant_id)
                .await
                .ok()
                .flatten()
                .ok_or(Invalid::WrongIssuer)?;
            let keys = state
                .keys
                .for_tenant(&tenant.id)
                .await
                .map_err(|_| Invalid::UnknownKey)?;
            if !keys.verify.contains_key(kid) {
                return Err(Invalid::UnknownKey);
            }
            if claims.iss != state.config.issuer(&tenant.slug) {
                return Err(Invalid::WrongIssuer);
            }
            if claims.exp + CLOCK_SKEW < store::now() {
                return Err(Invalid::Expired);
            }
            if audience.is_some_and(|a| a != claims.aud) {
                return Err(Invalid::WrongAudience);
            }
            (tenant, claims.clone())
        }
        None => {
            let (tenant, kid, claims) = verify_signed(state, token, audience).await?;
            state
                .verified
                .put(digest, Arc::new((tenant.id.clone(), kid, claims.clone())));
            (tenant, claims)
        }
    };
    if state
        .revocations
        .is_revoked(&claims.jti)
        .await
        .map_err(|_| Invalid::Revoked)?
    {
        return Err(Invalid::Revoked);
    }
    let client = state
        .clients
        .get(&claims.client_id)
        .await
        .ok()
        .flatten()
        .ok_or(Invalid::Revoked)?;
    if client.tenant_id != tenant.id {
        return Err(Invalid::WrongIssuer);
    }
    // The client's own tokens end when its secret is rotated.
    if claims.is_client_token() && claims.iat < client.tokens_valid_after {
        return Err(Invalid::Revoked);
    }
    if !claims.is_client_token() {
        let (status, valid_after) = user_standing(state, &tenant.id, &claims.sub).await?;
        if status != "active" || claims.iat < valid_after {
            return Err(Invalid::Revoked);
        }
    }
    Ok((tenant, claims))
}

/// A user's status and `tokens_valid_after`, at most one second old.
async fn user_standing(state: &AppState, tenant_id: &str, user_id: &str) -> Result<(String, i64), Invalid> {
    let key = format!("{tenant_id}/{user_id}");
    if let Some(s) = state.user_standing.get(&key) {
        return Ok(s);
    }
    let user = store::users::get(&state.db, tenant_id, user_id)
        .await
        .map_err(|_| Invalid::Revoked)?
        .ok_or(Invalid::Revoked)?;
    let standing = (user.status, user.tokens_valid_after);
    state.user_standing.put(key, standing.clone());
    Ok(standing)
}

/// The full check of a token not seen before.
async fn verify_signed(
    state: &AppState,
    token: &str,
    audience: Option<&str>,
) -> Result<(Arc<Tenant>, String, AccessClaims), Invalid> {
    let peek = jwt::peek(token)?;
    if peek.typ.as_deref().map(|t| t.to_ascii_lowercase()) != Some(TYP.into()) {
        return Err(Invalid::WrongType);
    }
    let tenant_id = state
        .keys
        .tenant_of_kid(&peek.kid)
        .await
        .map_err(|_| Invalid::UnknownKey)?
        .ok_or(Invalid::UnknownKey)?;
    let tenant = state
        .tenants
        .by_id(&tenant_id)
        .await
        .ok()
        .flatten()
        .ok_or(Invalid::WrongIssuer)?;
    let keys = state
        .keys
        .for_tenant(&tenant.id)
        .await
        .map_err(|_| Invalid::UnknownKey)?;
    let key = keys.verify.get(&peek.kid).ok_or(Invalid::UnknownKey)?;
    if key.alg.jwt() != peek.alg {
        return Err(Invalid::UnknownKey);
    }
    let issuer = state.config.issuer(&tenant.slug);
    let claims: AccessClaims = jwt::verify(token, &key.key, peek.alg, &issuer, audience)?;
    Ok((tenant, peek.kid, claims))
}
