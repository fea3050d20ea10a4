//! `POST /authn/factors/webauthn/options` and `POST /authn/factors/webauthn`: the sign-in API's
//! WebAuthn step, client-authenticated like the other factor endpoints.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{ApiBody, api_request, error_response, json, step_response};
use crate::app::AppState;
use crate::authn::{self, enroll_webauthn as enrol, webauthn as flow};
use crate::http::OAuthError;
use crate::http::extract::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    state_token: String,
    credential: Option<serde_json::Value>,
    client_id: Option<String>,
    client_secret: Option<Zeroizing<String>>,
}

api_body!(Body, "body must be {\"state_token\", \"credential\"}");

/// `POST /authn/factors/webauthn/options` `{"state_token"}` → `{"publicKey": {…}}` for
/// `navigator.credentials.get`.
pub async fn options(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let (tenant, client, b) = api_request::<Body>(&state, &slug, &headers, &body).await?;
    match flow::options(&state, &tenant, &client, &b.state_token, "mfa").await {
        Ok(rcr) => Ok(json(
            StatusCode::OK,
            serde_json::to_value(rcr).map_err(|e| OAuthError::server_error(&e))?,
        )),
        Err(e) => error_response(e),
    }
}

/// `POST /authn/factors/webauthn` `{"state_token", "credential"}` → `SUCCESS` with a login
/// ticket, or 401 `invalid_factor`.
pub async fn factor(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let (tenant, client, b) = api_request::<Body>(&state, &slug, &headers, &body).await?;
    let credential = b.credential.unwrap_or(serde_json::Value::Null);
    match flow::factor(&state, &tenant, &client, &b.state_token, &credential).await {
        Ok(step) => Ok(step_response(step, None)),
        Err(e) => error_response(e),
    }
}

/// `POST /authn/enroll/webauthn/options` `{"state_token"}` (an enrolment-only token) →
/// `{"publicKey": {…}}` for `navigator.credentials.create`.
pub async fn enroll_options(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let (tenant, client, b) = api_request::<Body>(&state, &slug, &headers, &body).await?;
    if !tenant.policy.allows(crate::mfa::webauthn::KIND_WEBAUTHN) {
        return Ok(not_allowed());
    }
    match enrol::options(&state, &tenant, &client, &b.state_token, "enroll").await {
        Ok(ccr) => Ok(json(
            StatusCode::OK,
            serde_json::to_value(ccr).map_err(|e| OAuthError::server_error(&e))?,
        )),
        Err(e) => error_response(e),
    }
}

fn not_allowed() -> Response {
    json(
        StatusCode::FORBIDDEN,
        serde_json::json!({"error": "factor_not_allowed", "error_description": "the tenant does not allow WebAuthn factors"}),
    )
}

/// `POST /authn/enroll/webauthn` `{"state_token", "credential"}` → `SUCCESS` with a login
/// ticket and `recovery_codes`; 400 `attestation_refused` when the tenant requires an
/// attested authenticator model this is not; else 401 `invalid_factor`.
pub async fn enroll(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let (tenant, client, b) = api_request::<Body>(&state, &slug, &headers, &body).await?;
    if !tenant.policy.allows(crate::mfa::webauthn::KIND_WEBAUTHN) {
        return Ok(not_allowed());
    }
    let credential = b.credential.unwrap_or(serde_json::Value::Null);
    let enrolled = enrol::register(&state, &tenant, &client, &b.state_token, "enroll", &credential).await;
    let (st, codes, amr) = match enrolled {
        Ok(enrol::Enrolled::Done {
            st,
            recovery_codes,
            amr,
        }) => (st, recovery_codes, amr),
        Ok(enrol::Enrolled::AttestationRefused) => {
            return Ok(json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "attestation_refused", "error_description": "the tenant does not accept this authenticator model"}),
            ));
        }
        Err(e) => return error_response(e),
    };
    let ok = match authn::authenticated(&state, &tenant, &client, &st, &amr.join(" ")).await {
        Ok(ok) => ok,
        Err(e) => return error_response(e),
    };
    match authn::issue_ticket(&state, &tenant, &client, &ok.user, &amr, authn::ACR_MFA).await {
        Ok(ticket) => Ok(step_response(
            authn::Step::Success {
                user_id: ok.user.id,
                login_ticket: ticket,
                expires_in: authn::TICKET_TTL,
            },
            Some(codes),
        )),
        Err(e) => error_response(e),
    }
}
