//! The login page's step for a temporary password (set by an admin with `temporary`): after it
//! is entered, the user chooses a new one (the tenant's policy applies, each failed rule is
//! shown) before enrolment or the session — after the second factor when the user has one.
//! The sign-in API's function does the work (`authn::replace_temporary_password`), with a page
//! state token.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::{Form, LoginForm, Tx, after_password, complete, field, step_failed};
use crate::app::AppState;
use crate::authn;
use crate::http::ratelimit::ClientIp;
use crate::oidc::pages::page;
use crate::password::policy::Violation;
use crate::tenants::Tenant;

pub(super) const PURPOSE: &str = "page-password";

/// The "choose a new password" page for state token `token`.
pub(super) fn page_for(
    state: &AppState,
    tenant: &Tenant,
    tx: &Tx,
    token: &str,
    status: StatusCode,
    violations: &[Violation],
) -> Response {
    let ctx = minijinja::context! {
        tenant_name => &tenant.name,
        action => format!("{}/login/password", state.config.issuer(&tenant.slug)),
        tx => &tx.id,
        csrf => &tx.csrf,
        state => token,
        error => (!violations.is_empty()).then_some("That password cannot be used."),
        violations => violations.iter().map(|v| minijinja::context! { message => &v.message }).collect::<Vec<_>>(),
    };
    page(status, "password.html", ctx, Some(&tx.req.redirect_uri))
}

/// `POST /login/password` (fields `tx`, `csrf`, `state`, `new_password`). Without
/// `new_password` it shows the page for a live state token: the security-key script comes here
/// after an assertion, when the temporary password is still to be replaced.
pub async fn password_submit(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    LoginForm(Form { tenant, fields: f, tx }): LoginForm,
) -> Response {
    let token = field(&f, "state").unwrap_or_default().to_string();
    let Some(new) = field(&f, "new_password").map(|p| zeroize::Zeroizing::new(p.to_string())) else {
        return match authn::live_state(&state, &tenant, &tx.client, &token, PURPOSE).await {
            Ok(()) => page_for(&state, &tenant, &tx, &token, StatusCode::OK, &[]),
            Err(e) => step_failed(&tenant, e),
        };
    };
    match authn::replace_temporary_password(&state, &tenant, &tx.client, &token, PURPOSE, &new, ip).await {
        // The second factor came first: the sign-in is complete.
        Ok(Ok(authn::Replaced { ok, amr: Some(amr) })) => {
            complete(&state, &tenant, tx, &headers, ip, &ok, &amr, authn::ACR_MFA).await
        }
        Ok(Ok(authn::Replaced { ok, amr: None })) => after_password(&state, &tenant, tx, &headers, ip, &ok).await,
        Ok(Err(violations)) => page_for(
            &state,
            &tenant,
            &tx,
            &token,
            StatusCode::UNPROCESSABLE_ENTITY,
            &violations,
        ),
        Err(e) => step_failed(&tenant, e),
    }
}

/// After a second factor on the login page: the "choose a new password" page's state token
/// when the user's password is temporary (see [`authn::password`]), else `None`.
pub(super) async fn after_factor(
    state: &AppState,
    tenant: &Tenant,
    tx: &Tx,
    ok: &authn::PasswordOk,
    amr: &str,
) -> Result<Option<String>, authn::AuthnError> {
    authn::password_change_after_factor(state, tenant, &tx.client, ok, PURPOSE, amr).await
}
