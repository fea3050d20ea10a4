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

/// `ApiBody` for a body struct with `client_id` and `client_secret` fields (for
/// `client_secret_post`) and the problem's description when it does not parse.
macro_rules! api_body {
    ($body:ty, $shape:expr) => {
        impl ApiBody for $body {
            const SHAPE: &'static str = $shape;
            fn client(&self) -> (Option<&str>, Option<&str>) {
                (
                    self.client_id.as_deref(),
                    self.client_secret.as_ref().map(|s| s.as_str()),
                )
            }
        }
    };
}

pub mod webauthn;

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
    let (tenant, client, body) = api_request::<Body>(&state, &slug, &headers, &body).await?;
    if let Err(wait) = state.limits.check_client(&client.id) {
        metrics::counter!("unicred_rate_limited_total", "by" => "client").increment(1);
        return Ok(too_many(wait));
    }
    match authn::password(&state, &tenant, &client, &body.username, &body.password, ip).await {
        Ok(step) => Ok(step_response(step, None)),
        Err(e) => error_response(e),
    }
}

fn step_response(step: Step, recovery_codes: Option<Vec<String>>) -> Response {
    let mut body = match step {
        Step::Success {
            user_id,
            login_ticket,
            expires_in,
        } => {
            serde_json::json!({"status": "SUCCESS", "user_id": user_id, "login_ticket": login_ticket, "expires_in": expires_in})
        }
        Step::MfaRequired { state_token, factors } => {
            let factors: Vec<_> = factors.iter().map(|f| serde_json::json!({"type": f})).collect();
            serde_json::json!({"status": "MFA_REQUIRED", "state_token": state_token, "factors": factors})
        }
        Step::MfaEnrollRequired { state_token, factors } => {
            let factors: Vec<_> = factors.iter().map(|f| serde_json::json!({"type": f})).collect();
            serde_json::json!({"status": "MFA_ENROLL_REQUIRED", "state_token": state_token, "factors": factors})
        }
        Step::PasswordChangeRequired { state_token } => {
            serde_json::json!({"status": "PASSWORD_CHANGE_REQUIRED", "state_token": state_token})
        }
    };
    if let Some(codes) = recovery_codes {
        body["recovery_codes"] = codes.into();
    }
    json(StatusCode::OK, body)
}

fn error_response(e: AuthnError) -> Result<Response, OAuthError> {
    match e {
        AuthnError::InvalidCredentials => Ok(json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "invalid_credentials"}),
        )),
        AuthnError::InvalidFactor => Ok(json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "invalid_factor"}),
        )),
        AuthnError::Busy => Err(OAuthError::busy()),
        AuthnError::Internal(e) => Err(OAuthError::server_error(&e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FactorBody {
    state_token: String,
    code: Option<Zeroizing<String>>,
    client_id: Option<String>,
    client_secret: Option<Zeroizing<String>>,
}

api_body!(Body, "body must be {\"username\", \"password\"}");

api_body!(FactorBody, "body must be {\"state_token\", \"code\"}");

/// A sign-in API request body: its step's fields and, for `client_secret_post`, the client's
/// credentials.
trait ApiBody: serde::de::DeserializeOwned {
    /// The problem's description when the body does not parse.
    const SHAPE: &'static str;
    fn client(&self) -> (Option<&str>, Option<&str>);
}

/// The shared prologue of every sign-in API endpoint: tenant, JSON body, client
/// authentication, and the client's `authn_api` permission.
async fn api_request<B: ApiBody>(
    state: &AppState,
    slug: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<
    (
        std::sync::Arc<crate::tenants::Tenant>,
        std::sync::Arc<crate::clients::Client>,
        B,
    ),
    OAuthError,
> {
    let tenant = super::tenant(state, slug).await?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.to_ascii_lowercase().starts_with("application/json") {
        return Err(OAuthError::invalid_request("content type must be application/json"));
    }
    let b: B = serde_json::from_slice(body).map_err(|_| OAuthError::invalid_request(B::SHAPE))?;
    let (id, secret) = b.client();
    let client = client_auth::authenticate_with(state, &tenant, headers, id, secret, false).await?;
    if !client.authn_api {
        return Err(OAuthError::unauthorized_client(
            "this client may not use the sign-in API",
        ));
    }
    Ok((tenant, client, b))
}

/// `POST /authn/factors/{kind}` with `totp` or `recovery_code`.
pub async fn factor(
    State(state): State<AppState>,
    Path((slug, kind)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let (tenant, client, b) = api_request::<FactorBody>(&state, &slug, &headers, &body).await?;
    if kind != "totp" && kind != "recovery_code" {
        return Err(OAuthError::new(
            StatusCode::NOT_FOUND,
            "invalid_request",
            "unknown factor type",
        ));
    }
    let code = b.code.as_ref().map(|c| c.as_str()).unwrap_or_default();
    match authn::factor(&state, &tenant, &client, &b.state_token, &kind, code).await {
        Ok(step) => Ok(step_response(step, None)),
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPasswordBody {
    state_token: String,
    new_password: Zeroizing<String>,
    client_id: Option<String>,
    client_secret: Option<Zeroizing<String>>,
}

api_body!(NewPasswordBody, "body must be {\"state_token\", \"new_password\"}");

/// `POST /authn/password`: the new password after `PASSWORD_CHANGE_REQUIRED`; then the
/// sign-in goes on as after a password (`MFA_REQUIRED`, `MFA_ENROLL_REQUIRED` or `SUCCESS`), or
/// ends with `SUCCESS` when the second factor came first.
/// A password the policy refuses: 422 with each failed rule, and the state token stays usable.
pub async fn new_password(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let (tenant, client, b) = api_request::<NewPasswordBody>(&state, &slug, &headers, &body).await?;
    let replaced = authn::replace_temporary_password(
        &state,
        &tenant,
        &client,
        &b.state_token,
        "password",
        &b.new_password,
        ip,
    )
    .await;
    match replaced {
        Ok(Ok(r)) => match authn::after_replacement(&state, &tenant, &client, r).await {
            Ok(step) => Ok(step_response(step, None)),
            Err(e) => error_response(e),
        },
        Ok(Err(violations)) => Ok(json(
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({"error": "password_policy", "violations": violations}),
        )),
        Err(e) => error_response(e),
    }
}

/// `POST /authn/enroll/totp`.
pub async fn enroll_totp(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let (tenant, client, b) = api_request::<FactorBody>(&state, &slug, &headers, &body).await?;
    if !tenant.policy.allows(crate::mfa::KIND_TOTP) {
        return Ok(json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"error": "factor_not_allowed", "error_description": "the tenant does not allow TOTP factors"}),
        ));
    }
    match authn::enroll_totp(&state, &tenant, &client, &b.state_token, "enroll").await {
        Ok(e) => Ok(json(
            StatusCode::OK,
            serde_json::json!({"factor_id": e.factor_id, "secret": e.secret, "otpauth_uri": e.otpauth_uri, "qr_png_base64": e.qr_png_base64}),
        )),
        Err(e) => error_response(e),
    }
}

/// `POST /authn/enroll/totp/confirm`.
pub async fn enroll_confirm(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let (tenant, client, b) = api_request::<FactorBody>(&state, &slug, &headers, &body).await?;
    let code = b.code.as_ref().map(|c| c.as_str()).unwrap_or_default();
    match authn::enroll_confirm(&state, &tenant, &client, &b.state_token, code).await {
        Ok((step, codes)) => Ok(step_response(step, Some(codes))),
        Err(e) => error_response(e),
    }
}
