//! The sign-in API's WebAuthn step: request options for a state token, then an assertion that
//! completes the sign-in. Failures count like TOTP failures (throttling, state token strikes).

use webauthn_rs::prelude::{PublicKeyCredential, RequestChallengeResponse};

use super::{
    ACR_MFA, AuthnError, Step, TICKET_TTL, factor_attempt, factor_failed, factor_success, internal, issue_ticket,
    load_state,
};
use crate::app::AppState;
use crate::clients::Client;
use crate::mfa::webauthn as wa;
use crate::tenants::Tenant;

/// `POST /authn/factors/webauthn/options`: an assertion challenge for the state token's user.
pub async fn options(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
) -> Result<RequestChallengeResponse, AuthnError> {
    let st = load_state(state, tenant, client, token, "mfa").await?;
    wa::authenticate_options(state, tenant, &st.user_id, &client.id)
        .await
        .map_err(internal)?
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

/// `POST /authn/factors/webauthn`: a valid assertion issues a login ticket; anything else is
/// `InvalidFactor`, counted against the state token and the account's throttle.
pub async fn factor(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    credential: &serde_json::Value,
) -> Result<Step, AuthnError> {
    let st = load_state(state, tenant, client, token, "mfa").await?;
    factor_attempt(state, tenant, &st).await?;
    let asserted = match serde_json::from_value::<PublicKeyCredential>(credential.clone()) {
        Ok(c) => wa::authenticate_finish(state, tenant, &st.user_id, &client.id, &c)
            .await
            .map_err(internal)?,
        Err(_) => None,
    };
    let Some(a) = asserted else {
        return Err(factor_failed(state, tenant, client, token, &st, wa::KIND_WEBAUTHN).await);
    };
    let amr = amr(a.backup_eligible, a.user_verified);
    let ok = factor_success(state, tenant, client, token, &st, &amr.join(" ")).await?;
    let ticket = issue_ticket(state, tenant, client, &ok.user, &amr, ACR_MFA).await?;
    Ok(Step::Success {
        user_id: ok.user.id,
        login_ticket: ticket,
        expires_in: TICKET_TTL,
    })
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
