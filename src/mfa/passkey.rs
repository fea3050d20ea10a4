//! Passwordless sign-in with a discoverable passkey (webauthn-rs's discoverable
//! authentication): the options name no credential and no user; the authenticator answers
//! with its credential id and the user handle it stored at registration. The user is found
//! by both, within the tenant only — the relying party (the host of `public_url`) is shared by
//! every tenant, so a browser offers tenant A's passkeys on tenant B's page too. Ceremony
//! state lives in the database like every other ceremony (any replica finishes it, once),
//! bound to the login page's client and transaction.

use webauthn_rs::prelude::{DiscoverableAuthentication, PublicKeyCredential, RequestChallengeResponse};

use super::MfaError;
use super::webauthn::{
    Asserted, KIND_WEBAUTHN, accept, b64url, internal, parse, save_ceremony, take_ceremony, user_handle,
};
use crate::app::AppState;
use crate::store::webauthn as db;
use crate::tenants::Tenant;

/// The ceremony kind in `webauthn_challenges`; the user column stays empty until the
/// authenticator names one.
const KIND: &str = "discover";
const NO_USER: &str = "";

/// Starts a passwordless assertion for the login transaction `binding` (its hash) of
/// `client_id`.
pub async fn options(
    state: &AppState,
    tenant: &Tenant,
    client_id: &str,
    binding: &str,
) -> Result<RequestChallengeResponse, MfaError> {
    if !tenant.policy.allows(KIND_WEBAUTHN) {
        return Err(MfaError::NotAllowed(KIND_WEBAUTHN));
    }
    let (mut rcr, auth) = state.webauthn.start_discoverable_authentication().map_err(internal)?;
    // webauthn-rs marks these options for conditional mediation (autofill); the login page
    // asks on a button press instead, a plain modal request.
    rcr.mediation = None;
    let ceremony = serde_json::json!({"binding": binding, "authentication": auth});
    save_ceremony(
        state,
        &tenant.id,
        NO_USER,
        Some(client_id),
        KIND,
        &rcr.public_key.challenge,
        &ceremony,
    )
    .await?;
    Ok(rcr)
}

/// An assertion whose ceremony was spent and whose credential and user were found.
pub struct Identified {
    pub user_id: String,
    row: db::CredentialRow,
    passkey: webauthn_rs::prelude::Passkey,
    auth: DiscoverableAuthentication,
}

/// Spends the ceremony the assertion answers and finds its credential: a discoverable
/// credential of this tenant whose user handle is the one the authenticator returned.
/// `None` for an unknown, spent, expired or foreign ceremony, or an unknown credential.
pub async fn identify(
    state: &AppState,
    tenant: &Tenant,
    client_id: &str,
    binding: &str,
    credential: &PublicKeyCredential,
) -> Result<Option<Identified>, MfaError> {
    if !tenant.policy.allows(KIND_WEBAUTHN) {
        return Ok(None);
    }
    let Some(ceremony) = take_ceremony(
        state,
        tenant,
        NO_USER,
        Some(client_id),
        KIND,
        &credential.response.client_data_json,
    )
    .await?
    else {
        return Ok(None);
    };
    if ceremony["binding"].as_str() != Some(binding) {
        return Ok(None);
    }
    let auth: DiscoverableAuthentication =
        serde_json::from_value(ceremony["authentication"].clone()).map_err(internal)?;
    let Ok((handle, cred_id)) = state.webauthn.identify_discoverable_authentication(credential) else {
        return Ok(None);
    };
    let Some((user_id, row)) = db::discoverable(&state.db, &tenant.id, &b64url(cred_id)).await? else {
        return Ok(None);
    };
    if user_handle(&tenant.id, &user_id) != handle {
        return Ok(None);
    }
    let Some((row, passkey)) = parse(row) else {
        return Ok(None);
    };
    Ok(Some(Identified {
        user_id,
        row,
        passkey,
        auth,
    }))
}

/// Verifies the assertion (signature, user verification — the ceremony requires it —,
/// counter) and updates the credential; `None` if it is not accepted.
pub async fn verify(
    state: &AppState,
    tenant: &Tenant,
    id: Identified,
    credential: &PublicKeyCredential,
) -> Result<Option<Asserted>, MfaError> {
    let result = state
        .webauthn
        .finish_discoverable_authentication_v2(credential, id.auth, &id.passkey);
    accept(state, tenant, &id.user_id, &id.row, id.passkey, result).await
}
