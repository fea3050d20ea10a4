//! Tenants that require direct WebAuthn attestation (`webauthn_attestation: "direct"`):
//! registration uses webauthn-rs's attested-passkey ceremony, which verifies the attestation
//! statement and its certificate chain against a CA list and the AAGUIDs each CA vouches
//! for. webauthn-rs can only trust an attestation through a root certificate, so the tenant
//! supplies its vendors' roots (`webauthn_attestation_roots`, PEM) beside the allowed AAGUIDs
//! (`webauthn_aaguids`); every root vouches for every listed AAGUID. No CBOR, COSE or X.509
//! is parsed here.

use std::collections::BTreeMap;

use webauthn_rs::prelude::{
    AttestationCaList, AttestationCaListBuilder, AttestationMetadata, AttestedPasskey, AttestedPasskeyRegistration,
    CreationChallengeResponse, CredentialID, Passkey, RegisterPublicKeyCredential, Uuid, WebauthnError,
};

use super::MfaError;
use super::webauthn::internal;
use crate::app::AppState;
use crate::audit::Event;
use crate::tenants::{Policy, Tenant};

/// The trust list of a policy requiring direct attestation (`None` when it does not); an
/// error names the root certificate that does not parse.
pub fn cas(policy: &Policy) -> Result<Option<AttestationCaList>, String> {
    if !policy.attestation_required() {
        return Ok(None);
    }
    let mut b = AttestationCaListBuilder::new();
    for (i, pem) in policy.webauthn_attestation_roots.iter().flatten().enumerate() {
        for aaguid in policy.webauthn_aaguids.iter().flatten() {
            b.insert_device_pem(
                pem.as_bytes(),
                *aaguid,
                "allowed by tenant policy".into(),
                BTreeMap::new(),
            )
            .map_err(|e| format!("certificate {i} is not a PEM X.509 certificate ({e})"))?;
        }
    }
    Ok(Some(b.build()))
}

/// Starts an attested registration (direct attestation, packed or TPM formats, device-bound
/// credentials only — webauthn-rs's choices for attested passkeys).
pub fn start(
    state: &AppState,
    handle: Uuid,
    username: &str,
    exclude: Vec<CredentialID>,
    cas: AttestationCaList,
) -> Result<(CreationChallengeResponse, AttestedPasskeyRegistration), MfaError> {
    state
        .webauthn
        .start_attested_passkey_registration(handle, username, username, Some(exclude), cas, None)
        .map_err(internal)
}

/// Errors that mean "not an authenticator this tenant trusts" rather than a broken or
/// replayed answer: webauthn-rs names those `Attestation…`, plus a synced (not device-bound)
/// credential. Matched by name so new attestation variants are covered too.
fn is_refusal(e: &WebauthnError) -> bool {
    matches!(e, WebauthnError::CredentialMayNotBeHardwareBound) || format!("{e:?}").starts_with("Attestation")
}

/// The AAGUID the attestation vouched for, if its format carries one.
fn aaguid(p: &AttestedPasskey) -> Option<Uuid> {
    match &p.attestation().metadata {
        AttestationMetadata::Packed { aaguid } | AttestationMetadata::Tpm { aaguid, .. } => Some(*aaguid),
        _ => None,
    }
}

/// Finishes an attested registration. `Ok(None)`: a broken, replayed or mismatched answer (no
/// audit); `Err(AttestationRefused)`: an attestation that does not verify, does not chain to
/// a tenant root, or names an AAGUID the tenant's current policy does not list — audited as
/// `mfa.attestation_refused`.
pub async fn finish(
    state: &AppState,
    tenant: &Tenant,
    user_id: &str,
    credential: &RegisterPublicKeyCredential,
    reg: &AttestedPasskeyRegistration,
) -> Result<Option<Passkey>, MfaError> {
    let attested = match state.webauthn.finish_attested_passkey_registration(credential, reg) {
        Ok(p) => p,
        Err(e) if is_refusal(&e) => return Err(refuse(state, tenant, user_id, format!("{e:?}"), None).await),
        Err(e) => {
            tracing::info!(error = %e, "WebAuthn registration refused");
            return Ok(None);
        }
    };
    // webauthn-rs checked the AAGUID against the list the ceremony began with; the policy
    // may have narrowed since.
    let listed = aaguid(&attested).filter(|a| tenant.policy.webauthn_aaguids.iter().flatten().any(|x| x == a));
    if !tenant.policy.attestation_required() || listed.is_none() {
        let reason = "the AAGUID is not (or no longer) allowed".to_string();
        return Err(refuse(state, tenant, user_id, reason, aaguid(&attested)).await);
    }
    Ok(Some(Passkey::from(attested)))
}

/// Records `mfa.attestation_refused` and answers `AttestationRefused` (or the audit's error).
pub async fn refuse(
    state: &AppState,
    tenant: &Tenant,
    user_id: &str,
    reason: String,
    aaguid: Option<Uuid>,
) -> MfaError {
    tracing::info!(%reason, "WebAuthn attestation refused");
    let e = Event::new(&tenant.id, "mfa.attestation_refused")
        .user(user_id)
        .data(serde_json::json!({"reason": reason, "aaguid": aaguid}));
    match state.audit.record(e).await {
        Ok(_) => MfaError::AttestationRefused(reason),
        Err(e) => internal(e),
    }
}
