//! Enrolling a WebAuthn credential during sign-in, with an enrolment-only state token (the
//! sign-in API's `enroll`, the login page's `page-enroll`): without it a tenant that requires
//! a second factor and allows only WebAuthn could never let a new user in. The registration
//! is the account API's (same ceremony state, exclusions, resident-key preference and
//! attestation policy); the user then counts as signed in with a password and that key.

use webauthn_rs::prelude::{CreationChallengeResponse, RegisterPublicKeyCredential};

use super::{AuthnError, factor_attempt, factor_failed, load_state};
use crate::app::AppState;
use crate::audit::Event;
use crate::clients::Client;
use crate::crypto::secret_hash;
use crate::mfa::{self, MfaError, webauthn as wa};
use crate::store::{self, factors::StateRow};
use crate::tenants::Tenant;

/// Creation options for the user of an enrolment-only state token of `purpose`.
pub async fn options(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    purpose: &str,
) -> Result<CreationChallengeResponse, AuthnError> {
    let st = load_state(state, tenant, client, token, purpose).await?;
    let user = store::users::get(&state.db, &tenant.id, &st.user_id)
        .await?
        .ok_or(AuthnError::InvalidFactor)?;
    match wa::register_options(state, tenant, &user.id, &user.username, "Passkey").await {
        Ok(ccr) => Ok(ccr),
        Err(MfaError::NotAllowed(_)) => Err(AuthnError::InvalidFactor),
        Err(e) => Err(e.into()),
    }
}

pub enum Enrolled {
    /// Registered: recovery codes issued, the state token spent; `amr` for the sign-in.
    Done {
        st: StateRow,
        recovery_codes: Vec<String>,
        amr: Vec<&'static str>,
    },
    /// The tenant requires attestation and this authenticator's does not qualify (audited;
    /// counted like a failed factor).
    AttestationRefused,
}

/// Registers the authenticator's answer for the user of an enrolment-only state token.
/// Anything not accepted counts toward throttling and the state token's strikes.
pub async fn register(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    purpose: &str,
    credential: &serde_json::Value,
) -> Result<Enrolled, AuthnError> {
    let st = load_state(state, tenant, client, token, purpose).await?;
    factor_attempt(state, tenant, token, &st).await?;
    let registered = match serde_json::from_value::<RegisterPublicKeyCredential>(credential.clone()) {
        Ok(c) => wa::register_finish(state, tenant, &st.user_id, &c).await,
        Err(_) => Ok(None),
    };
    let registered = match registered {
        Ok(Some(r)) => r,
        Ok(None) | Err(MfaError::NotAllowed(_)) => {
            return Err(factor_failed(state, tenant, client, &st, wa::KIND_WEBAUTHN).await);
        }
        Err(MfaError::AttestationRefused(_)) => {
            return match factor_failed(state, tenant, client, &st, wa::KIND_WEBAUTHN).await {
                AuthnError::InvalidFactor => Ok(Enrolled::AttestationRefused),
                e => Err(e),
            };
        }
        Err(e) => return Err(e.into()),
    };
    // The spent token, the credential, its recovery codes and the event: one transaction, the
    // token first (two enrolments on one token cannot both replace the codes). A credential
    // the tenant already has is refused like an invalid one.
    let mut tx = state.db.begin_write().await?;
    if !store::factors::consume_state(&mut *tx, &secret_hash(token)).await? {
        return Err(AuthnError::InvalidFactor);
    }
    if !registered.store(&mut tx).await? {
        drop(tx);
        return Err(factor_failed(state, tenant, client, &st, wa::KIND_WEBAUTHN).await);
    }
    let recovery_codes = mfa::new_recovery_codes(state, &mut tx, tenant, &st.user_id).await?;
    let e = Event::new(&tenant.id, "mfa.enrolled")
        .user(&st.user_id)
        .client(&client.id)
        .data(serde_json::json!({"factor": wa::KIND_WEBAUTHN, "factor_id": registered.factor_id}));
    state.audit.commit(tx, e).await?;
    // The authenticator verified the user (passkey registration requires it).
    let amr = super::webauthn::amr(registered.backup_eligible, true);
    Ok(Enrolled::Done {
        st,
        recovery_codes,
        amr,
    })
}
