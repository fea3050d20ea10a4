//! `/introspect` (RFC 7662): any authenticated client of the tenant may ask; tokens of other
//! tenants, revoked, expired or malformed tokens are all just `{"active": false}`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::http::OAuthError;
use crate::http::extract::Path;
use crate::tokens::access;

use super::client_auth;
use super::form::Form;

pub async fn introspect(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let tenant = super::tenant(&state, &slug).await?;
    let form = Form::parse(&headers, &body)?;
    client_auth::authenticate(&state, &tenant, &headers, &form, false).await?;
    let token = form.require("token")?;
    let body = match access::validate(&state, token, None).await {
        Ok((t, c)) if t.id == tenant.id => serde_json::json!({
            "active": true,
            "scope": c.scope,
            "client_id": c.client_id,
            "sub": c.sub,
            "aud": c.aud,
            "iss": c.iss,
            "exp": c.exp,
            "iat": c.iat,
            "jti": c.jti,
            "token_type": "Bearer",
        }),
        Ok(_) => serde_json::json!({ "active": false }),
        Err(why) => {
            tracing::debug!(reason = %why, "introspection: inactive token");
            serde_json::json!({ "active": false })
        }
    };
    let mut r = axum::Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
