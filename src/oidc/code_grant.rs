//! The `authorization_code` (RFC 6749 §4.1.3, RFC 7636) and `refresh_token` (§6) grants.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::clients::{Client, GRANT_CODE, GRANT_REFRESH};
use crate::http::OAuthError;
use crate::store::{self, codes::Redeemed, refresh::Used};
use crate::tenants::{CLOCK_SKEW, MAX_TOKEN_TTL, Tenant};

use super::form::Form;
use super::token::TokenResponse;
use super::user_tokens::{self, Authentication, Grant, Refresh};
use crate::crypto::secret_hash;

/// RFC 7636 §4.1: 43–128 characters of `[A-Za-z0-9-._~]`.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

pub async fn authorization_code(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    if !client.has_grant(GRANT_CODE) {
        return Err(OAuthError::unauthorized_client(
            "authorization_code is not allowed for this client",
        ));
    }
    let resource = super::token::audience(client, form)?;
    let code = form.require("code")?;
    if code.len() > 128 {
        return Err(OAuthError::invalid_grant("invalid authorization code"));
    }
    let code_hash = secret_hash(code);
    let c = match store::codes::redeem(&state.db, &code_hash).await? {
        Redeemed::Fresh(c) => *c,
        Redeemed::Replayed { tenant_id } => {
            // RFC 6749 §4.1.2: a code used twice revokes what it produced (or, if its
            // redemption is still under way, makes that redemption revoke it).
            let issued = store::codes::replayed(&state.db, &code_hash).await?;
            let (jti, family) = issued.map_or((None, None), |(j, f)| (Some(j), f));
            revoke_replayed(state, &tenant_id, &client.id, jti.as_deref(), family.as_deref()).await?;
            return Err(OAuthError::invalid_grant(
                "invalid, expired or already used authorization code",
            ));
        }
        Redeemed::Unknown => {
            return Err(OAuthError::invalid_grant(
                "invalid, expired or already used authorization code",
            ));
        }
    };
    if c.tenant_id != tenant.id || c.client_id != client.id {
        return Err(OAuthError::invalid_grant(
            "invalid, expired or already used authorization code",
        ));
    }
    if form.get("redirect_uri") != Some(c.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    // No PKCE downgrade in either direction.
    match (&c.code_challenge, form.get("code_verifier")) {
        (Some(challenge), Some(v)) => {
            if !valid_verifier(v) || B64.encode(Sha256::digest(v.as_bytes())) != *challenge {
                return Err(OAuthError::invalid_grant(
                    "code_verifier does not match the code_challenge",
                ));
            }
        }
        (Some(_), None) => return Err(OAuthError::invalid_grant("code_verifier is required")),
        (None, Some(_)) => {
            return Err(OAuthError::invalid_grant(
                "this code was issued without a code_challenge",
            ));
        }
        (None, None) => {}
    }
    let user = store::users::get(&state.db, &tenant.id, &c.user_id)
        .await?
        .filter(|u| u.status == "active" && u.tokens_valid_after <= c.auth_time)
        .ok_or_else(|| OAuthError::invalid_grant("the user can no longer sign in"))?;
    let scopes: Vec<String> = c.scope.split(' ').filter(|s| !s.is_empty()).map(String::from).collect();
    let authn = Authentication {
        auth_time: c.auth_time,
        acr: c.acr,
        amr: c.amr,
    };
    let issued = user_tokens::issue(
        state,
        tenant,
        client,
        &user,
        Grant {
            scopes,
            authn,
            nonce: c.nonce,
            resource,
        },
        Refresh::NewFamily {
            session_id: c.session_id,
        },
        None,
    )
    .await?;
    if !store::codes::record_issued(&state.db, &code_hash, &issued.jti, issued.family.as_deref()).await? {
        // The code was replayed while these tokens were being issued.
        revoke_replayed(
            state,
            &tenant.id,
            &client.id,
            Some(&issued.jti),
            issued.family.as_deref(),
        )
        .await?;
        return Err(OAuthError::invalid_grant(
            "invalid, expired or already used authorization code",
        ));
    }
    super::audit(
        state,
        &tenant.id,
        &client.id,
        Some(&user.id),
        "token.issued",
        serde_json::json!({"grant": "authorization_code", "jti": issued.jti, "family": issued.family}),
    )
    .await?;
    metrics::counter!("unicred_tokens_issued_total", "grant" => "authorization_code").increment(1);
    Ok(issued.response)
}

/// Revokes what a replayed code produced, and records the replay.
async fn revoke_replayed(
    state: &AppState,
    tenant_id: &str,
    client_id: &str,
    jti: Option<&str>,
    family: Option<&str>,
) -> Result<(), OAuthError> {
    if let Some(jti) = jti {
        state
            .revocations
            .revoke(jti, tenant_id, store::now() + MAX_TOKEN_TTL as i64 + CLOCK_SKEW)
            .await?;
    }
    if let Some(f) = family {
        store::refresh::revoke_family(&state.db.pool, f).await?;
    }
    super::audit(
        state,
        tenant_id,
        client_id,
        None,
        "code.replayed",
        serde_json::json!({"revoked_jti": jti, "revoked_family": family}),
    )
    .await?;
    Ok(())
}

/// Rotation and reuse detection in one transaction (RFC 6819 §5.2.2.3).
pub async fn refresh_token(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    if !client.has_grant(GRANT_REFRESH) {
        return Err(OAuthError::unauthorized_client(
            "refresh_token is not allowed for this client",
        ));
    }
    let resource = super::token::audience(client, form)?;
    let token = form.require("refresh_token")?;
    if token.len() > 128 {
        return Err(OAuthError::invalid_grant("invalid refresh token"));
    }
    let invalid = || OAuthError::invalid_grant("invalid, expired or revoked refresh token");
    let mut tx = state.db.begin_write().await?;
    let row = match store::refresh::use_token(&mut tx, &secret_hash(token)).await? {
        Used::Fresh(row) => row,
        // Another client's (or tenant's) token is refused without touching its family: only
        // its own client's reuse ends a family.
        Used::Reused {
            tenant_id, client_id, ..
        } if tenant_id != tenant.id || client_id != client.id => {
            let _ = tx.rollback().await;
            return Err(invalid());
        }
        Used::Reused {
            family_id, tenant_id, ..
        } => {
            store::refresh::revoke_family(&mut *tx, &family_id).await?;
            tx.commit().await.map_err(store::StoreError::from)?;
            super::audit(
                state,
                &tenant_id,
                &client.id,
                None,
                "refresh.reused",
                serde_json::json!({"family": family_id}),
            )
            .await?;
            return Err(invalid());
        }
        Used::Unknown => return Err(invalid()),
    };
    // Bound to its client and tenant: anything else leaves the token untouched.
    if row.tenant_id != tenant.id || row.client_id != client.id {
        let _ = tx.rollback().await;
        return Err(invalid());
    }
    let user = store::users::get(&state.db, &tenant.id, &row.user_id).await?;
    // A family begun with fewer factors than the tenant now requires ends with that policy.
    let strong_enough = !crate::authn::mfa_blocks(tenant) || row.acr == crate::authn::ACR_MFA;
    let standing =
        user.filter(|u| u.status == "active" && u.tokens_valid_after <= row.family_created_at && strong_enough);
    let session_alive = match &row.session_id {
        None => true,
        Some(sid) => session_alive(state, tenant, sid).await?,
    };
    let Some(user) = standing.filter(|_| session_alive) else {
        store::refresh::revoke_family(&mut *tx, &row.family_id).await?;
        tx.commit().await.map_err(store::StoreError::from)?;
        return Err(invalid());
    };
    // The family's scopes that the client may still ask for: a scope an admin has since taken
    // from the client is not refreshed.
    let granted: Vec<String> = row
        .scope
        .split(' ')
        .filter(|s| !s.is_empty() && user_tokens::user_scopes(client, s).is_ok())
        .map(String::from)
        .collect();
    let scopes = match form.get("scope") {
        None => granted,
        Some(req) => {
            let req: Vec<String> = req.split(' ').filter(|s| !s.is_empty()).map(String::from).collect();
            if req.iter().any(|s| !granted.contains(s)) {
                let _ = tx.rollback().await;
                return Err(OAuthError::invalid_scope("a requested scope was not granted"));
            }
            req
        }
    };
    let authn = Authentication {
        auth_time: row.auth_time,
        acr: row.acr.clone(),
        amr: row.amr.clone(),
    };
    let issued = user_tokens::issue(
        state,
        tenant,
        client,
        &user,
        Grant {
            scopes,
            authn,
            nonce: None,
            resource,
        },
        Refresh::Rotate(row),
        Some(&mut tx),
    )
    .await?;
    tx.commit().await.map_err(store::StoreError::from)?;
    super::audit(
        state,
        &tenant.id,
        &client.id,
        Some(&user.id),
        "token.refreshed",
        serde_json::json!({"jti": issued.jti, "family": issued.family}),
    )
    .await?;
    metrics::counter!("unicred_tokens_issued_total", "grant" => "refresh_token").increment(1);
    Ok(issued.response)
}

/// A session that has not been ended and is within its absolute lifetime (refreshing does not
/// count as session activity).
async fn session_alive(state: &AppState, tenant: &Tenant, sid: &str) -> Result<bool, store::StoreError> {
    let r: Option<(i64,)> = sqlx::query_as("select expires_at from sessions where id_hash = $1 and tenant_id = $2")
        .bind(sid)
        .bind(&tenant.id)
        .fetch_optional(&state.db.pool)
        .await?;
    Ok(r.is_some_and(|(exp,)| exp > store::now()))
}
