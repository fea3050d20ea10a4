//! WebAuthn credentials (webauthn-rs passkeys: user verification required) as a second factor.
//! One relying party for the whole deployment: RP ID = the host of `public_url`, origin =
//! `public_url`'s origin. Ceremony state is kept in the database for five minutes and spent
//! once, keyed by the SHA-256 of the challenge (which comes back inside the client data), so
//! a ceremony begun on one replica can finish on any other.

use std::sync::Arc;

use base64::Engine;
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{
    CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse, Uuid, WebauthnError,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use super::MfaError;
use crate::app::AppState;
use crate::audit::Event;
use crate::config::Config;
use crate::crypto::secret_hash;
use crate::store::{self, StoreError, webauthn as db};
use crate::tenants::Tenant;

pub const KIND_WEBAUTHN: &str = "webauthn";
/// A ceremony must finish within this many seconds of its options.
pub const CEREMONY_TTL: i64 = 300;

/// The relying party, from `public_url` (validated at configuration time: a host, not an IP).
pub fn build(config: &Config) -> Arc<Webauthn> {
    let url = &config.public_url;
    let rp_id = url.host_str().unwrap_or("localhost").to_string();
    let origin = url::Url::parse(&url.origin().ascii_serialization()).unwrap_or_else(|_| url.clone());
    let w = WebauthnBuilder::new(&rp_id, &origin)
        .and_then(|b| b.rp_name("unicred").build())
        .expect("public_url is a valid WebAuthn relying party");
    Arc::new(w)
}

pub(super) fn internal(e: impl std::fmt::Display) -> MfaError {
    MfaError::Internal(e.to_string())
}

/// The WebAuthn user handle: the user id when it is a UUID (always, for unicred's own ids).
pub(super) fn user_handle(tenant_id: &str, user_id: &str) -> Uuid {
    Uuid::parse_str(user_id).unwrap_or_else(|_| {
        let h = Sha256::digest(format!("{tenant_id}\0{user_id}").as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        uuid::Builder::from_random_bytes(b).into_uuid()
    })
}

pub(super) fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn challenge_hash(challenge: &[u8]) -> String {
    crate::crypto::secret_hash(challenge)
}

/// The challenge a client echoes in its client data (base64url, padded or not).
pub(super) fn echoed_challenge(client_data_json: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(client_data_json).ok()?;
    let c = v.get("challenge")?.as_str()?.trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok()
}

/// Spends the ceremony a client's answer belongs to (found by the challenge echoed in its
/// client data, for this tenant, user, client and kind) and returns its stored state; `None`
/// for an unknown, spent, expired or foreign ceremony.
pub(super) async fn take_ceremony(
    state: &AppState,
    tenant: &Tenant,
    user_id: &str,
    client_id: Option<&str>,
    kind: &str,
    client_data_json: &[u8],
) -> Result<Option<serde_json::Value>, MfaError> {
    let Some(challenge) = echoed_challenge(client_data_json) else {
        return Ok(None);
    };
    let Some(st) = db::take_challenge(
        &state.db,
        &challenge_hash(&challenge),
        &tenant.id,
        user_id,
        client_id,
        kind,
    )
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_str(&st).map_err(internal)?))
}

/// The user's passkeys with their rows, skipping (and logging) any that no longer parse.
async fn passkeys(
    state: &AppState,
    tenant_id: &str,
    user_id: &str,
) -> Result<Vec<(db::CredentialRow, Passkey)>, MfaError> {
    let rows = db::for_user(&state.db, tenant_id, user_id).await?;
    Ok(rows.into_iter().filter_map(parse).collect())
}

/// A stored credential with its parsed form; `None` (logged) if it no longer parses.
pub(super) fn parse(r: db::CredentialRow) -> Option<(db::CredentialRow, Passkey)> {
    match serde_json::from_str::<Passkey>(&r.credential) {
        Ok(p) => Some((r, p)),
        Err(e) => {
            tracing::warn!(factor_id = %r.id, error = %e, "stored WebAuthn credential unreadable");
            None
        }
    }
}

/// The second factors to offer a user who has at least one: each confirmed kind, and
/// recovery codes.
pub async fn offered_factors(state: &AppState, tenant: &Tenant, user_id: &str) -> Result<Vec<&'static str>, MfaError> {
    let rows = store::factors::for_user(&state.db, &tenant.id, user_id).await?;
    let mut out = Vec::new();
    for kind in [super::KIND_TOTP, KIND_WEBAUTHN] {
        if tenant.policy.allows(kind) && rows.iter().any(|f| f.kind == kind && f.confirmed != 0) {
            out.push(kind);
        }
    }
    // Recovery codes stand in for an allowed factor, never for one the tenant dropped.
    if !out.is_empty() {
        out.push("recovery_code");
    }
    Ok(out)
}

pub(super) async fn save_ceremony(
    state: &AppState,
    tenant_id: &str,
    user_id: &str,
    client_id: Option<&str>,
    kind: &str,
    challenge: &[u8],
    ceremony: &serde_json::Value,
) -> Result<(), MfaError> {
    if let Err(e) = db::purge_expired(&state.db).await {
        tracing::warn!(error = %e, "purging expired WebAuthn ceremonies failed");
    }
    let st = serde_json::to_string(ceremony).map_err(internal)?;
    // The login transaction when the ceremony is bound to one (passwordless), else the user:
    // a page or client asking again starts over, and the earlier options stop working.
    let owner = ceremony["binding"].as_str().unwrap_or(user_id);
    let slot = secret_hash([tenant_id, kind, client_id.unwrap_or_default(), owner].join("\0"));
    db::create_challenge(
        &state.db,
        &db::Challenge {
            id_hash: &challenge_hash(challenge),
            slot: &slot,
            tenant_id,
            user_id,
            client_id,
            kind,
            state: &st,
            expires_at: store::now() + CEREMONY_TTL,
        },
    )
    .await?;
    Ok(())
}

/// Starts registering a passkey named `name`; the user's existing credentials are excluded.
pub async fn register_options(
    state: &AppState,
    tenant: &Tenant,
    user_id: &str,
    username: &str,
    name: &str,
) -> Result<CreationChallengeResponse, MfaError> {
    if !tenant.policy.allows(KIND_WEBAUTHN) {
        return Err(MfaError::NotAllowed(KIND_WEBAUTHN));
    }
    super::room_for_another(state, &tenant.id, user_id).await?;
    let exclude: Vec<_> = passkeys(state, &tenant.id, user_id)
        .await?
        .into_iter()
        .map(|(_, p)| p.cred_id().clone())
        .collect();
    let handle = user_handle(&tenant.id, user_id);
    let (ccr, ceremony) = match super::attestation::cas(&tenant.policy).map_err(internal)? {
        None => {
            let (ccr, reg) = state
                .webauthn
                .start_passkey_registration(handle, username, username, Some(exclude))
                .map_err(internal)?;
            (ccr, serde_json::json!({"name": name, "registration": reg}))
        }
        Some(cas) => {
            let (ccr, reg) = super::attestation::start(state, handle, username, exclude, cas)?;
            (ccr, serde_json::json!({"name": name, "attested": reg}))
        }
    };
    let ccr = prefer_resident_key(ccr)?;
    save_ceremony(
        state,
        &tenant.id,
        user_id,
        None,
        "register",
        &ccr.public_key.challenge,
        &ceremony,
    )
    .await?;
    Ok(ccr)
}

/// webauthn-rs asks passkeys for `residentKey: discouraged`; a passkey that can sign in
/// without a username must be discoverable. `preferred`, not `required`: a security key with
/// no room left for resident keys still registers, as a second factor only. The ceremony
/// state does not depend on it (webauthn-rs does not enforce the resident-key choice).
pub(super) fn prefer_resident_key(ccr: CreationChallengeResponse) -> Result<CreationChallengeResponse, MfaError> {
    let mut v = serde_json::to_value(ccr).map_err(internal)?;
    if let Some(sel) = v["publicKey"]["authenticatorSelection"].as_object_mut() {
        sel.insert("residentKey".into(), "preferred".into());
        sel.insert("requireResidentKey".into(), false.into());
    }
    serde_json::from_value(v).map_err(internal)
}

/// Whether the browser reported a discoverable credential (credProps, unsigned: it only
/// decides whether the owner's own credential is offered for passwordless sign-in, which
/// still needs a verified assertion with user verification).
fn discoverable(credential: &RegisterPublicKeyCredential) -> bool {
    credential
        .extensions
        .cred_props
        .as_ref()
        .and_then(|p| p.rk)
        .unwrap_or(false)
}

/// A newly registered credential, verified and not yet stored: the caller stores it with
/// [`Registered::store`] in the transaction that also records its event.
pub struct Registered {
    pub factor_id: String,
    /// May be synced to other devices (`swk` rather than `hwk`).
    pub backup_eligible: bool,
    tenant_id: String,
    user_id: String,
    name: String,
    cred_id: String,
    credential: String,
    discoverable: bool,
}

impl Registered {
    /// Stores the credential in `tx`; false if the tenant already has this credential id
    /// (the transaction must then be dropped).
    pub async fn store(&self, tx: &mut store::Tx) -> Result<bool, MfaError> {
        let created = db::create(
            &mut **tx,
            &db::NewCredential {
                id: &self.factor_id,
                tenant_id: &self.tenant_id,
                user_id: &self.user_id,
                name: &self.name,
                cred_id: &self.cred_id,
                credential: &self.credential,
                discoverable: self.discoverable,
            },
        )
        .await;
        match created {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Finishes a registration: the verified credential, or `None` for an unknown, spent, expired
/// or invalid ceremony.
pub async fn register_finish(
    state: &AppState,
    tenant: &Tenant,
    user_id: &str,
    credential: &RegisterPublicKeyCredential,
) -> Result<Option<Registered>, MfaError> {
    if !tenant.policy.allows(KIND_WEBAUTHN) {
        return Err(MfaError::NotAllowed(KIND_WEBAUTHN));
    }
    let Some(ceremony) = take_ceremony(
        state,
        tenant,
        user_id,
        None,
        "register",
        &credential.response.client_data_json,
    )
    .await?
    else {
        return Ok(None);
    };
    let name = ceremony["name"].as_str().unwrap_or("Passkey");
    let passkey = if let Some(reg) = ceremony.get("attested") {
        let reg = serde_json::from_value(reg.clone()).map_err(internal)?;
        match super::attestation::finish(state, tenant, user_id, credential, &reg).await? {
            Some(p) => p,
            None => return Ok(None),
        }
    } else if tenant.policy.attestation_required() {
        // Begun before the tenant required attestation: nothing was verified.
        let reason = "the registration began before the tenant required attestation".to_string();
        return Err(super::attestation::refuse(state, tenant, user_id, reason, None).await);
    } else {
        let reg: PasskeyRegistration = serde_json::from_value(ceremony["registration"].clone()).map_err(internal)?;
        match state.webauthn.finish_passkey_registration(credential, &reg) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(error = %e, "WebAuthn registration refused");
                return Ok(None);
            }
        }
    };
    let credential_json = serde_json::to_string(&passkey).map_err(internal)?;
    let backup_eligible = serde_json::to_value(&passkey).map_err(internal)?["cred"]["backup_eligible"]
        .as_bool()
        .unwrap_or(false);
    Ok(Some(Registered {
        factor_id: store::new_id(),
        backup_eligible,
        tenant_id: tenant.id.clone(),
        user_id: user_id.to_string(),
        name: name.to_string(),
        cred_id: b64url(passkey.cred_id()),
        credential: credential_json,
        discoverable: discoverable(credential),
    }))
}

/// Starts an assertion for the sign-in API client `client_id`: `None` if the user has no
/// WebAuthn credential.
pub async fn authenticate_options(
    state: &AppState,
    tenant: &Tenant,
    user_id: &str,
    client_id: &str,
) -> Result<Option<RequestChallengeResponse>, MfaError> {
    if !tenant.policy.allows(KIND_WEBAUTHN) {
        return Ok(None);
    }
    let keys: Vec<Passkey> = passkeys(state, &tenant.id, user_id)
        .await?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    if keys.is_empty() {
        return Ok(None);
    }
    let (rcr, auth) = state.webauthn.start_passkey_authentication(&keys).map_err(internal)?;
    let ceremony = serde_json::json!({"authentication": auth});
    save_ceremony(
        state,
        &tenant.id,
        user_id,
        Some(client_id),
        "authenticate",
        &rcr.public_key.challenge,
        &ceremony,
    )
    .await?;
    Ok(Some(rcr))
}

/// A verified assertion.
pub struct Asserted {
    pub factor_id: String,
    /// The credential may be synced to other devices (`swk` rather than `hwk`).
    pub backup_eligible: bool,
    pub user_verified: bool,
}

/// The stored signature counter of a passkey.
pub(super) fn counter(p: &Passkey) -> u32 {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v["cred"]["counter"].as_u64())
        .unwrap_or(0) as u32
}

/// Checks an assertion against the ceremony it answers and the user's credentials; updates the
/// credential's counter and backup state. `None` for anything not accepted; a counter at or
/// below the stored one is refused and recorded as `mfa.clone_detected`.
pub async fn authenticate_finish(
    state: &AppState,
    tenant: &Tenant,
    user_id: &str,
    client_id: &str,
    credential: &PublicKeyCredential,
) -> Result<Option<Asserted>, MfaError> {
    if !tenant.policy.allows(KIND_WEBAUTHN) {
        return Ok(None);
    }
    let Some(ceremony) = take_ceremony(
        state,
        tenant,
        user_id,
        Some(client_id),
        "authenticate",
        &credential.response.client_data_json,
    )
    .await?
    else {
        return Ok(None);
    };
    let auth: PasskeyAuthentication = serde_json::from_value(ceremony["authentication"].clone()).map_err(internal)?;
    // The ceremony carries the credentials as they were at its start; check against the
    // current rows too, so a counter another replica accepted since is not accepted again.
    let current = passkeys(state, &tenant.id, user_id).await?;
    let Some((row, p)) = current.into_iter().find(|(_, p)| p.cred_id() == &credential.raw_id) else {
        return Ok(None);
    };
    let result = state.webauthn.finish_passkey_authentication(credential, &auth);
    accept(state, tenant, user_id, &row, p, result).await
}

/// The end of every assertion, second factor or passwordless: refuses a counter at or below
/// the stored one (recorded as `mfa.clone_detected`), else stores the new counter and backup
/// state — only if the row is unchanged since it was read, so two replicas cannot both accept
/// one counter value.
pub(super) async fn accept(
    state: &AppState,
    tenant: &Tenant,
    user_id: &str,
    row: &db::CredentialRow,
    mut passkey: Passkey,
    result: Result<webauthn_rs::prelude::AuthenticationResult, WebauthnError>,
) -> Result<Option<Asserted>, MfaError> {
    let res = match result {
        Ok(res) => res,
        Err(WebauthnError::CredentialPossibleCompromise) => {
            clone_detected(state, tenant, user_id, &row.id, None, counter(&passkey)).await?;
            return Ok(None);
        }
        Err(e) => {
            tracing::info!(error = %e, "WebAuthn assertion refused");
            return Ok(None);
        }
    };
    let stored = counter(&passkey);
    if (res.counter() > 0 || stored > 0) && res.counter() <= stored {
        clone_detected(state, tenant, user_id, &row.id, Some(res.counter()), stored).await?;
        return Ok(None);
    }
    passkey.update_credential(&res);
    let json = serde_json::to_string(&passkey).map_err(internal)?;
    if !db::update_credential(&state.db, &row.id, &row.credential, &json).await? {
        return Ok(None);
    }
    Ok(Some(Asserted {
        factor_id: row.id.clone(),
        backup_eligible: res.backup_eligible(),
        user_verified: res.user_verified(),
    }))
}

/// A cloned authenticator: whichever copy moved the counter first keeps passing, and that is
/// as likely the attacker's, so the credential is suspended (unconfirmed: no longer offered or
/// accepted) until its owner removes it and registers a key again; recorded with the event.
pub(super) async fn clone_detected(
    state: &AppState,
    tenant: &Tenant,
    user_id: &str,
    factor_id: &str,
    presented: Option<u32>,
    stored: u32,
) -> Result<(), MfaError> {
    tracing::warn!(%factor_id, ?presented, stored, "WebAuthn signature counter regressed: possible cloned authenticator");
    let mut tx = state.db.begin_write().await?;
    db::suspend(&mut *tx, &tenant.id, factor_id).await?;
    let e = Event::new(&tenant.id, "mfa.clone_detected").user(user_id).data(
        serde_json::json!({"factor": KIND_WEBAUTHN, "factor_id": factor_id, "counter": presented,
            "stored_counter": stored, "suspended": true}),
    );
    state.audit.commit(tx, e).await.map_err(internal)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echoed_challenge_is_read_padded_or_not() {
        let bytes = [0xfbu8, 0xff, 0x01, 0x02, 0x03];
        let unpadded = b64url(&bytes);
        for c in [unpadded.clone(), format!("{unpadded}===")] {
            let cd = serde_json::json!({"type": "webauthn.get", "challenge": c, "origin": "https://id.example"});
            assert_eq!(echoed_challenge(cd.to_string().as_bytes()), Some(bytes.to_vec()));
        }
        assert_eq!(echoed_challenge(b"not json"), None);
        assert_eq!(echoed_challenge(br#"{"challenge": 5}"#), None);
    }

    #[test]
    fn user_handles_are_the_uuid_or_a_stable_hash() {
        let id = "6f1c2b7e-3a4d-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(user_handle("t", id).to_string(), id);
        assert_eq!(user_handle("t", "legacy-42"), user_handle("t", "legacy-42"));
        assert_ne!(user_handle("t", "legacy-42"), user_handle("u", "legacy-42"));
    }
}
