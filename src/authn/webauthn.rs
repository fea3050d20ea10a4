//! The sign-in API's WebAuthn step: request options for a state token, then an assertion that
//! completes the sign-in. Failures count like TOTP failures (throttling, state token strikes).

use webauthn_rs::prelude::{PublicKeyCredential, RequestChallengeResponse};

use super::{AuthnError, PasswordOk, Step, after_factor, factor_attempt, factor_failed, factor_success, load_state};
use crate::app::AppState;
use crate::clients::Client;
use crate::mfa::webauthn as wa;
use crate::tenants::Tenant;

/// An assertion challenge for the user of a state token of `purpose` (`mfa` for the sign-in
/// API's `POST /authn/factors/webauthn/options`, `page` for the login page).
pub async fn options(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    purpose: &str,
) -> Result<RequestChallengeResponse, AuthnError> {
    let st = load_state(state, tenant, client, token, purpose).await?;
    wa::authenticate_options(state, tenant, &st.user_id, &client.id)
        .await?
        .ok_or(AuthnError::InvalidFactor)
}

/// `amr` for a password and a WebAuthn assertion (RFC 8176): `hwk` for a device-bound key,
/// `swk` for one that may be synced, `user` when the authenticator verified the user.
pub fn amr(backup_eligible: bool, user_verified: bool) -> Vec<&'static str> {
    let mut amr = vec!["pwd", if backup_eligible { "swk" } else { "hwk" }];
    if user_verified {
        amr.push("user");
    }
    amr
}

/// Whether the user of a live state token of `purpose` has a confirmed WebAuthn credential.
pub async fn offered(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    purpose: &str,
) -> Result<bool, AuthnError> {
    let st = match load_state(state, tenant, client, token, purpose).await {
        Ok(st) => st,
        Err(AuthnError::InvalidFactor) => return Ok(false),
        Err(e) => return Err(e),
    };
    let kinds = wa::offered_factors(state, tenant, &st.user_id).await?;
    Ok(kinds.contains(&wa::KIND_WEBAUTHN))
}

/// Checks an assertion for a state token of `purpose`: on success the state token is spent and
/// the user fully authenticated, with the `amr` of the assertion; anything else is
/// `InvalidFactor`, counted against the state token and the account's throttle.
pub async fn verify(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    purpose: &str,
    credential: &serde_json::Value,
) -> Result<(PasswordOk, Vec<&'static str>), AuthnError> {
    let st = load_state(state, tenant, client, token, purpose).await?;
    factor_attempt(state, tenant, token, &st).await?;
    let asserted = match serde_json::from_value::<PublicKeyCredential>(credential.clone()) {
        Ok(c) => wa::authenticate_finish(state, tenant, &st.user_id, &client.id, &c).await?,
        Err(_) => None,
    };
    let Some(a) = asserted else {
        return Err(factor_failed(state, tenant, client, &st, wa::KIND_WEBAUTHN).await);
    };
    let amr = amr(a.backup_eligible, a.user_verified);
    let ok = factor_success(state, tenant, client, token, &st, &amr.join(" ")).await?;
    Ok((ok, amr))
}

/// `POST /authn/factors/webauthn`: a valid assertion issues a login ticket (or first asks for
/// a temporary password's replacement).
pub async fn factor(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    credential: &serde_json::Value,
) -> Result<Step, AuthnError> {
    let (ok, amr) = verify(state, tenant, client, token, "mfa", credential).await?;
    after_factor(state, tenant, client, ok, &amr).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn amr_names_the_kind_of_key_and_user_verification() {
        assert_eq!(super::amr(false, true), ["pwd", "hwk", "user"]);
        assert_eq!(super::amr(true, true), ["pwd", "swk", "user"]);
        assert_eq!(super::amr(false, false), ["pwd", "hwk"]);
    }
}
