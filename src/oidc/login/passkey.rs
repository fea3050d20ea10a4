//! The login page's "Sign in with a passkey" button: `POST /login/passkey/options` and
//! `POST /login/passkey`, form posts bound to the login transaction and its CSRF token like
//! every other form of the page, answered in JSON for the page's script.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::{Form, LoginForm, complete, field, internal, json_error, json_response, redirect_as_json};
use crate::app::AppState;
use crate::authn::{self, AuthnError};
use crate::crypto::secret_hash;
use crate::http::ratelimit::ClientIp;
use crate::tenants::Tenant;

/// Whether the login page offers passwordless passkeys: when the tenant allows WebAuthn.
pub(super) fn offered(tenant: &Tenant) -> bool {
    tenant.policy.allows(crate::mfa::webauthn::KIND_WEBAUTHN)
}

/// `POST /login/passkey/options` (form fields `tx`, `csrf`): assertion options naming no
/// credential, for `navigator.credentials.get`.
pub async fn passkey_options(State(state): State<AppState>, LoginForm(Form { tenant, tx, .. }): LoginForm) -> Response {
    if !offered(&tenant) {
        return json_error(StatusCode::FORBIDDEN, "Passkeys are not available here.");
    }
    match crate::mfa::passkey::options(&state, &tenant, &tx.client.id, &secret_hash(&tx.id)).await {
        Ok(rcr) => match serde_json::to_value(rcr) {
            Ok(v) => json_response(StatusCode::OK, v),
            Err(e) => internal(&tenant, &e),
        },
        Err(crate::mfa::MfaError::Store(e)) if e.is_unavailable() => {
            json_error(StatusCode::SERVICE_UNAVAILABLE, "The service is busy.")
        }
        Err(e) => internal(&tenant, &e),
    }
}

/// `POST /login/passkey` (form fields `tx`, `csrf`, `credential` — the assertion as JSON): on
/// success the session starts and the answer is `{"redirect": URL}`; else a JSON error and no
/// session.
pub async fn passkey_submit(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    LoginForm(Form { tenant, fields: f, tx }): LoginForm,
) -> Response {
    if !offered(&tenant) {
        return json_error(StatusCode::FORBIDDEN, "Passkeys are not available here.");
    }
    let credential = field(&f, "credential")
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        .unwrap_or(serde_json::Value::Null);
    let device = |key: &str| super::session::device_for(&state, &tenant, &headers, key);
    let binding = secret_hash(&tx.id);
    let signed_in = authn::passkey::sign_in(&state, &tenant, &tx.client, &binding, &credential, ip, device).await;
    let (ok, amr) = match signed_in {
        Ok(x) => x,
        Err(AuthnError::InvalidCredentials | AuthnError::InvalidFactor) => {
            return json_error(StatusCode::UNAUTHORIZED, "That passkey was not accepted.");
        }
        Err(AuthnError::Busy) => return json_error(StatusCode::SERVICE_UNAVAILABLE, "The service is busy."),
        Err(AuthnError::Internal(e)) => return internal(&tenant, &e),
    };
    let r = complete(&state, &tenant, tx, &headers, ip, &ok, &amr.join(" "), authn::ACR_MFA).await;
    redirect_as_json(r)
}
