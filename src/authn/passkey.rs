//! Passwordless sign-in with a discoverable passkey (login page). Counts as multi-factor:
//! possession of the authenticator plus user verification (PIN or biometric) on it, which the
//! ceremony requires — so `amr` is `["hwk"|"swk", "user"]` and `acr` is mfa (`ACR_MFA`), and a tenant whose
//! policy requires a second factor needs no other. An assertion without user verification is
//! refused, never downgraded.
//!
//! Once the credential names a user, the attempt counts toward that account's throttle (the
//! same counter as its passwords: the normalised username, or the browser's device counter),
//! and full authentication resets it.

use std::net::IpAddr;

use webauthn_rs::prelude::PublicKeyCredential;

use super::{AuthnError, PasswordOk, outcome, throttle_key};
use crate::app::AppState;
use crate::clients::Client;
use crate::mfa::passkey;
use crate::store::{self, throttle};
use crate::tenants::Tenant;

/// `amr` of a passwordless passkey sign-in (RFC 8176).
pub fn amr(backup_eligible: bool) -> Vec<&'static str> {
    vec![if backup_eligible { "swk" } else { "hwk" }, "user"]
}

/// Checks a passwordless assertion for the login transaction `binding`; on success the user is
/// fully authenticated (throttle reset, `signin.success` audited) with the returned `amr`.
/// Every refusal is `InvalidCredentials`, audited as `signin.failure`.
pub async fn sign_in(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    binding: &str,
    credential: &serde_json::Value,
    ip: IpAddr,
    device: impl Fn(&str) -> Option<String>,
) -> Result<(PasswordOk, Vec<&'static str>), AuthnError> {
    let Ok(credential) = serde_json::from_value::<PublicKeyCredential>(credential.clone()) else {
        outcome(state, tenant, client, None, ip, "passkey_malformed").await?;
        return Err(AuthnError::InvalidCredentials);
    };
    let identified = passkey::identify(state, tenant, &client.id, binding, &credential).await?;
    let Some(id) = identified else {
        outcome(state, tenant, client, None, ip, "passkey_unknown").await?;
        return Err(AuthnError::InvalidCredentials);
    };
    let Some(user) = store::users::get(&state.db, &tenant.id, &id.user_id).await? else {
        outcome(state, tenant, client, None, ip, "passkey_unknown").await?;
        return Err(AuthnError::InvalidCredentials);
    };
    let (_, key) = throttle_key(&user.username);
    let counter = super::counter_key(&key, device);
    let rules = throttle::Rules {
        threshold: tenant.policy.lockout_threshold(),
        max_delay: tenant.policy.lockout_max_delay(),
    };
    if let throttle::Reservation::Throttled { .. } = throttle::reserve(&state.db, &tenant.id, &counter, &rules).await? {
        metrics::counter!("unicred_signin_throttled_total").increment(1);
        outcome(state, tenant, client, Some(&user), ip, "throttled").await?;
        return Err(AuthnError::InvalidCredentials);
    }
    let asserted = passkey::verify(state, tenant, id, &credential).await?;
    let reason = match &asserted {
        None => Some("passkey_refused"),
        Some(a) if !a.user_verified => Some("passkey_not_user_verified"),
        Some(_) if user.status != "active" => Some(if user.status == "locked" { "locked" } else { "disabled" }),
        Some(_) => None,
    };
    if let Some(reason) = reason {
        outcome(state, tenant, client, Some(&user), ip, reason).await?;
        return Err(AuthnError::InvalidCredentials);
    }
    let amr = amr(asserted.is_some_and(|a| a.backup_eligible));
    let ok = PasswordOk {
        user,
        has_factor: false,
        throttle_key: counter,
        ip: Some(ip),
    };
    super::fully_authenticated(state, tenant, client, &ok, &amr.join(" ")).await?;
    Ok((ok, amr))
}

#[cfg(test)]
mod tests {
    #[test]
    fn amr_names_the_kind_of_key_and_user_verification() {
        assert_eq!(super::amr(false), ["hwk", "user"]);
        assert_eq!(super::amr(true), ["swk", "user"]);
    }
}
