//! The login page's enrolment step for tenants that require a second factor: a user with none
//! sets up TOTP (QR code and key shown), confirms a code, sees the recovery codes once, and
//! only then continues to the session and the code. The sign-in API's enrolment functions do
//! the work (`authn::enroll_totp`, `authn::confirm_enrolment`), with page state tokens
//! (`page-enroll`, then `page-enrolled`).

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::{
    Form, LoginForm, Tx, complete, field, internal, json_error, json_response, options_json, step_expired, step_failed,
};
use crate::app::AppState;
use crate::authn::{self, AuthnError, PasswordOk};
use crate::http::ratelimit::ClientIp;
use crate::mfa::Enrolment;
use crate::mfa::webauthn::KIND_WEBAUTHN;
use crate::oidc::pages::{page, page_with_data_images};
use crate::tenants::Tenant;

const PURPOSE: &str = "page-enroll";

/// After a correct password of a user who must enrol: a page offering the allowed types — a
/// new pending TOTP factor (QR code and key), and/or a button that registers a passkey or
/// security key.
pub(super) async fn start(state: &AppState, tenant: &Tenant, tx: &Tx, ok: &PasswordOk) -> Response {
    let token = match authn::new_state(state, tenant, &tx.client, ok, PURPOSE).await {
        Ok(t) => t,
        Err(e) => return step_failed(tenant, e),
    };
    let totp = if tenant.policy.allows(crate::mfa::KIND_TOTP) {
        match authn::enroll_totp(state, tenant, &tx.client, &token, PURPOSE).await {
            Ok(e) => Some(e),
            Err(e) => return step_failed(tenant, e),
        }
    } else {
        None
    };
    enroll_page(state, tenant, tx, &token, totp.as_ref(), StatusCode::OK, None)
}

fn enroll_page(
    state: &AppState,
    tenant: &Tenant,
    tx: &Tx,
    token: &str,
    totp: Option<&Enrolment>,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let issuer = state.config.issuer(&tenant.slug);
    let webauthn = tenant.policy.allows(KIND_WEBAUTHN);
    let ctx = minijinja::context! {
        tenant_name => &tenant.name,
        action => format!("{issuer}/login/enroll"),
        webauthn_options => webauthn.then(|| format!("{issuer}/login/enroll/webauthn/options")),
        webauthn_action => webauthn.then(|| format!("{issuer}/login/enroll/webauthn")),
        continue_action => format!("{issuer}/login/enroll/continue"),
        tx => &tx.id,
        csrf => &tx.csrf,
        state => token,
        factor => totp.map(|e| &e.factor_id),
        secret => totp.map(|e| &e.secret),
        qr_png_base64 => totp.map(|e| &e.qr_png_base64),
        error => error,
    };
    // Only the TOTP QR code needs a data: image.
    match totp {
        Some(_) => page_with_data_images(status, "enroll.html", ctx, Some(&tx.req.redirect_uri)),
        None => page(status, "enroll.html", ctx, Some(&tx.req.redirect_uri)),
    }
}

/// `POST /login/enroll` (`tx`, `csrf`, `state`, `factor`, `code`): a valid code confirms the
/// factor and shows the recovery codes; a wrong one shows the same enrolment again.
pub async fn enroll_submit(
    State(state): State<AppState>,
    LoginForm(Form { tenant, fields: f, tx }): LoginForm,
) -> Response {
    let token = field(&f, "state").unwrap_or_default();
    let factor = field(&f, "factor").unwrap_or_default();
    let code = zeroize::Zeroizing::new(field(&f, "code").unwrap_or_default().to_string());
    let confirmed = authn::confirm_enrolment(&state, &tenant, &tx.client, token, PURPOSE, Some(factor), &code).await;
    let (st, codes) = match confirmed {
        Ok(x) => x,
        Err(AuthnError::InvalidFactor) => {
            return match authn::enrolment_again(&state, &tenant, &tx.client, token, PURPOSE, factor).await {
                Ok(Some(e)) => enroll_page(
                    &state,
                    &tenant,
                    &tx,
                    token,
                    Some(&e),
                    StatusCode::UNAUTHORIZED,
                    Some("That code is not valid. Enter the code the app shows now."),
                ),
                Ok(None) => step_expired(&tenant),
                Err(e) => step_failed(&tenant, e),
            };
        }
        Err(e) => return step_failed(&tenant, e),
    };
    let next = match authn::enrolled_state(&state, &st, &["pwd", "otp"]).await {
        Ok(t) => t,
        Err(e) => return step_failed(&tenant, e),
    };
    let ctx = minijinja::context! {
        tenant_name => &tenant.name,
        action => format!("{}/login/enroll/continue", state.config.issuer(&tenant.slug)),
        tx => &tx.id,
        csrf => &tx.csrf,
        state => next,
        codes => codes,
    };
    page(StatusCode::OK, "recovery_codes.html", ctx, Some(&tx.req.redirect_uri))
}

/// `POST /login/enroll/continue` (`tx`, `csrf`, `state`): the sign-in completes, with a second
/// factor (`amr` pwd otp, `acr` mfa).
pub async fn enroll_continue(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    LoginForm(Form { tenant, fields: f, tx }): LoginForm,
) -> Response {
    let token = field(&f, "state").unwrap_or_default();
    let (ok, amr) = match authn::finish_enrolled(&state, &tenant, &tx.client, token).await {
        Ok(x) => x,
        Err(e) => return step_failed(&tenant, e),
    };
    complete(&state, &tenant, tx, &headers, ip, &ok, &amr, authn::ACR_MFA).await
}

/// `POST /login/enroll/webauthn/options` (`tx`, `csrf`, `state`): creation options for
/// `navigator.credentials.create`.
pub async fn enroll_webauthn_options(
    State(state): State<AppState>,
    LoginForm(Form { tenant, fields: f, tx }): LoginForm,
) -> Response {
    let token = field(&f, "state").unwrap_or_default();
    options_json(
        &tenant,
        authn::enroll_webauthn::options(&state, &tenant, &tx.client, token, PURPOSE).await,
    )
}

/// `POST /login/enroll/webauthn` (`tx`, `csrf`, `state`, `credential` — the authenticator's
/// answer as JSON): `{"recovery_codes", "state"}` for the page's script, which shows the codes
/// and a continue form carrying the new state token (`POST /login/enroll/continue`).
pub async fn enroll_webauthn(
    State(state): State<AppState>,
    LoginForm(Form { tenant, fields: f, tx }): LoginForm,
) -> Response {
    let token = field(&f, "state").unwrap_or_default();
    let credential = field(&f, "credential")
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        .unwrap_or(serde_json::Value::Null);
    let enrolled = authn::enroll_webauthn::register(&state, &tenant, &tx.client, token, PURPOSE, &credential).await;
    let (st, codes, amr) = match enrolled {
        Ok(authn::enroll_webauthn::Enrolled::Done {
            st,
            recovery_codes,
            amr,
        }) => (st, recovery_codes, amr),
        Ok(authn::enroll_webauthn::Enrolled::AttestationRefused) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "Your organisation does not accept this kind of security key or passkey.",
            );
        }
        Err(AuthnError::Internal(e)) => return internal(&tenant, &e),
        Err(AuthnError::Busy) => return json_error(StatusCode::SERVICE_UNAVAILABLE, "The service is busy."),
        Err(_) => {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "The passkey or security key could not be registered. Please try again.",
            );
        }
    };
    match authn::enrolled_state(&state, &st, &amr).await {
        Ok(next) => json_response(
            StatusCode::OK,
            serde_json::json!({"recovery_codes": codes, "state": next}),
        ),
        Err(e) => step_failed(&tenant, e),
    }
}
