//! `/revoke` (RFC 7009): a client revokes only its own tokens; unknown or foreign tokens get
//! the same 200 so nothing is learnt from the answer.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use crate::app::AppState;
use crate::clients::Client;
use crate::http::OAuthError;
use crate::http::extract::Path;
use crate::tenants::Tenant;
use crate::tokens::access;

use super::client_auth;
use super::form::Form;
use crate::store;

pub async fn revoke(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let tenant = super::tenant(&state, &slug).await?;
    let form = Form::parse(&headers, &body)?;
    let client = client_auth::authenticate(&state, &tenant, &headers, &form, true).await?;
    let r = revoke_token(&state, &tenant, &client, &form).await;
    Ok(super::cors::for_client(&client, r))
}

async fn revoke_token(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    form: &Form,
) -> Result<StatusCode, OAuthError> {
    let token = form.require("token")?;
    // Refresh tokens are opaque; access tokens are JWTs.
    if token.len() <= 128
        && let Some((family, tenant_id, client_id)) =
            store::refresh::family_of(&state.db, &crate::crypto::secret_hash(token)).await?
    {
        if tenant_id == tenant.id && client_id == client.id {
            store::refresh::revoke_family(&state.db.pool, &family).await?;
            super::audit(
                state,
                &tenant.id,
                &client.id,
                None,
                "token.revoked",
                serde_json::json!({"family": family}),
            )
            .await?;
            metrics::counter!("unicred_tokens_revoked_total").increment(1);
        }
        return Ok(StatusCode::OK);
    }
    if let Ok((t, claims)) = access::validate(state, token, None).await
        && t.id == tenant.id
        && claims.client_id == client.id
    {
        let until = claims.exp + crate::tenants::CLOCK_SKEW;
        state.revocations.revoke(&claims.jti, &tenant.id, until).await?;
        super::audit(
            state,
            &tenant.id,
            &client.id,
            None,
            "token.revoked",
            serde_json::json!({"jti": claims.jti}),
        )
        .await?;
        metrics::counter!("unicred_tokens_revoked_total").increment(1);
    }
    Ok(StatusCode::OK)
}
