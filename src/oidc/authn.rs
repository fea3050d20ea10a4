//! `POST /t/{tenant}/authn`: the first-party sign-in API for institutions' back-ends and native
//! apps. Client-authenticated (`authn_api` clients only); the answer never says which half of
//! the credentials was wrong.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::app::AppState;
use crate::authn::{self, AuthnError, Step};
use crate::http::OAuthError;
use crate::http::extract::Path;
use crate::http::ratelimit::{ClientIp, too_many};

use super::client_auth;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    username: String,
    password: Zeroizing<String>,
    client_id: Option<String>,
    client_secret: Option<Zeroizing<String>>,
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub async fn authn(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let tenant = super::tenant(&state, &slug).await?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.to_ascii_lowercase().starts_with("application/json") {
        return Err(OAuthError::invalid_request("content type must be application/json"));
    }
    let body: Body = serde_json::from_slice(&body)
        .map_err(|_| OAuthError::invalid_request("body must be {\"username\", \"password\"}"))?;
    let secret = body.client_secret.as_ref().map(|s| s.as_str());
    let client =
        client_auth::authenticate_with(&state, &tenant, &headers, body.client_id.as_deref(), secret, false).await?;
    if !client.authn_api {
        return Err(OAuthError::unauthorized_client(
            "this client may not use the sign-in API",
        ));
    }
    if let Err(wait) = state.limits.check_client(&client.id) {
        metrics::counter!("unicred_rate_limited_total", "by" => "client").increment(1);
        return Ok(too_many(wait));
    }
    match authn::password(&state, &tenant, &client, &body.username, &body.password, ip).await {
        Ok(Step::Success {
            user_id,
            login_ticket,
            expires_in,
        }) => Ok(json(
            StatusCode::OK,
            serde_json::json!({"status": "SUCCESS", "user_id": user_id, "login_ticket": login_ticket, "expires_in": expires_in}),
        )),
        Ok(Step::MfaEnrollRequired) => Ok(json(
            StatusCode::OK,
            serde_json::json!({"status": "MFA_ENROLL_REQUIRED"}),
        )),
        Err(AuthnError::InvalidCredentials) => Ok(json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "invalid_credentials"}),
        )),
        Err(AuthnError::Busy) => Err(OAuthError::busy()),
        Err(AuthnError::Internal(e)) => Err(OAuthError::server_error(&e)),
    }
}
