//! The login page's enrolment step for tenants that require a second factor: a user with none
//! sets up TOTP (QR code and key shown), confirms a code, sees the recovery codes once, and
//! only then continues to the session and the code. The sign-in API's enrolment functions do
//! the work (`authn::enroll_totp`, `authn::confirm_enrolment`), with page state tokens
//! (`page-enroll`, then `page-enrolled`).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::{Tx, complete, field, internal, posted_form};
use crate::app::AppState;
use crate::authn::{self, AuthnError, PasswordOk};
use crate::http::extract::Path;
use crate::http::ratelimit::ClientIp;
use crate::mfa::Enrolment;
use crate::oidc::pages::{error_page, page, page_with_data_images};
use crate::tenants::Tenant;

const PURPOSE: &str = "page-enroll";

fn expired(tenant: &Tenant) -> Response {
    error_page(
        StatusCode::UNAUTHORIZED,
        &tenant.name,
        "This sign-in has expired. Please go back to the application and start again.",
    )
}

fn failed(tenant: &Tenant, e: AuthnError) -> Response {
    match e {
        AuthnError::InvalidFactor | AuthnError::InvalidCredentials => expired(tenant),
        AuthnError::Busy => error_page(StatusCode::SERVICE_UNAVAILABLE, &tenant.name, "The service is busy."),
        AuthnError::Internal(e) => internal(tenant, &e),
    }
}

/// After a correct password of a user who must enrol: a new TOTP factor, pending, on a page.
pub(super) async fn start(state: &AppState, tenant: &Tenant, tx: &Tx, ok: &PasswordOk) -> Response {
    if !tenant.policy.allows(crate::mfa::KIND_TOTP) {
        // The pages enrol only TOTP; a tenant that allows WebAuthn alone registers its users'
        // keys through the account API.
        return error_page(
            StatusCode::FORBIDDEN,
            &tenant.name,
            "Your organisation requires a second factor that cannot be set up here. Please contact your administrator.",
        );
    }
    let token = match authn::new_state(state, tenant, &tx.client, ok, PURPOSE).await {
        Ok(t) => t,
        Err(e) => return failed(tenant, e),
    };
    match authn::enroll_totp(state, tenant, &tx.client, &token, PURPOSE).await {
        Ok(e) => enroll_page(state, tenant, tx, &token, &e, StatusCode::OK, None),
        Err(e) => failed(tenant, e),
    }
}

fn enroll_page(
    state: &AppState,
    tenant: &Tenant,
    tx: &Tx,
    token: &str,
    e: &Enrolment,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let ctx = minijinja::context! {
        tenant_name => &tenant.name,
        action => format!("{}/login/enroll", state.config.issuer(&tenant.slug)),
        tx => &tx.id,
        csrf => &tx.csrf,
        state => token,
        factor => &e.factor_id,
        secret => &e.secret,
        qr_png_base64 => &e.qr_png_base64,
        error => error,
    };
    page_with_data_images(status, "enroll.html", ctx, Some(&tx.req.redirect_uri))
}

/// `POST /login/enroll` (`tx`, `csrf`, `state`, `factor`, `code`): a valid code confirms the
/// factor and shows the recovery codes; a wrong one shows the same enrolment again.
pub async fn enroll_submit(State(state): State<AppState>, Path(slug): Path<String>, body: Bytes) -> Response {
    let (tenant, f, tx) = match posted_form(&state, &slug, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
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
                    &e,
                    StatusCode::UNAUTHORIZED,
                    Some("That code is not valid. Enter the code the app shows now."),
                ),
                Ok(None) => expired(&tenant),
                Err(e) => failed(&tenant, e),
            };
        }
        Err(e) => return failed(&tenant, e),
    };
    let next = match authn::enrolled_state(&state, &st).await {
        Ok(t) => t,
        Err(e) => return failed(&tenant, e),
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
    Path(slug): Path<String>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (tenant, f, tx) = match posted_form(&state, &slug, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let token = field(&f, "state").unwrap_or_default();
    let ok = match authn::finish_enrolled(&state, &tenant, &tx.client, token).await {
        Ok(ok) => ok,
        Err(e) => return failed(&tenant, e),
    };
    complete(&state, &tenant, tx, &headers, ip, &ok, authn::AMR_MFA, authn::ACR_MFA).await
}
