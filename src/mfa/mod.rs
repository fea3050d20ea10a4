//! Second factors: TOTP (RFC 6238 via totp-rs) and recovery codes. Seeds are encrypted at
//! rest with the master key (bound to tenant and factor) and zeroized in memory; recovery
//! codes are stored as keyed HMACs (80 bits of entropy need no Argon2).

use base64::Engine;
use serde::Serialize;
use totp_rs::{Builder, Totp};
use zeroize::Zeroizing;

use crate::app::AppState;
use crate::crypto::Purpose;
use crate::store::{self, StoreError, factors::FactorRow};
use crate::tenants::Tenant;

pub mod attestation;
pub mod passkey;
pub mod webauthn;

pub const KIND_TOTP: &str = "totp";
const RECOVERY_CODES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("factor: {0}")]
    Internal(String),
    /// The tenant requires direct attestation and this authenticator's does not qualify.
    #[error("attestation refused: {0}")]
    AttestationRefused(String),
    /// The tenant's policy (`mfa_factors`) does not allow this kind of factor.
    #[error("the tenant does not allow {0} factors")]
    NotAllowed(&'static str),
    /// The user has [`MAX_FACTORS`] already.
    #[error("at most {MAX_FACTORS} second factors per user")]
    TooMany,
}

/// Most confirmed second factors one user may have, of every kind: a sign-in checks a code
/// against each TOTP seed, and lists of factors stay short.
pub const MAX_FACTORS: usize = 10;

/// Refuses to begin another factor for a user who has [`MAX_FACTORS`].
pub async fn room_for_another(state: &AppState, tenant_id: &str, user_id: &str) -> Result<(), MfaError> {
    let factors = store::factors::for_user(&state.db, tenant_id, user_id).await?;
    if factors.iter().filter(|f| f.confirmed != 0).count() >= MAX_FACTORS {
        return Err(MfaError::TooMany);
    }
    Ok(())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FactorView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub confirmed: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl From<&FactorRow> for FactorView {
    fn from(f: &FactorRow) -> Self {
        FactorView {
            id: f.id.clone(),
            kind: f.kind.clone(),
            name: f.name.clone(),
            confirmed: f.confirmed != 0,
            created_at: f.created_at,
            last_used_at: f.last_used_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Enrolment {
    pub factor_id: String,
    pub secret: String,
    pub otpauth_uri: String,
    pub qr_png_base64: String,
}

/// The otpauth label parts may not contain ':'.
fn label(s: &str) -> String {
    s.replace(':', "-")
}

fn totp(seed: &[u8], issuer: &str, account: &str) -> Result<Totp, MfaError> {
    Builder::new()
        .with_secret(seed.to_vec())
        .with_issuer(Some(label(issuer)))
        .with_account_name(label(account))
        .build()
        .map_err(|e| MfaError::Internal(e.to_string()))
}

/// Starts a TOTP enrolment: a pending factor, confirmed by a first valid code. It replaces
/// the user's earlier pending TOTP enrolment, if any.
pub async fn enroll_totp(
    state: &AppState,
    tenant: &Tenant,
    user_id: &str,
    account: &str,
) -> Result<Enrolment, MfaError> {
    if !tenant.policy.allows(KIND_TOTP) {
        return Err(MfaError::NotAllowed(KIND_TOTP));
    }
    room_for_another(state, &tenant.id, user_id).await?;
    let seed = Zeroizing::new(crate::crypto::random_bytes::<20>());
    let id = store::new_id();
    let (ct, version) = state.keyring.encrypt(Purpose::TotpSeed, &tenant.id, &id, &seed[..]);
    let t = totp(&seed[..], &tenant.name, account)?;
    let row = FactorRow {
        id: id.clone(),
        tenant_id: tenant.id.clone(),
        user_id: user_id.to_string(),
        kind: KIND_TOTP.into(),
        name: "Authenticator app".into(),
        secret_ct: Some(ct),
        confirmed: 0,
        last_step: None,
        created_at: store::now(),
        last_used_at: None,
    };
    store::factors::delete_pending(&state.db, &tenant.id, user_id, KIND_TOTP).await?;
    store::factors::create(&state.db, &row, version as i64).await?;
    enrolment(id, &seed[..], &t)
}

fn enrolment(factor_id: String, seed: &[u8], t: &Totp) -> Result<Enrolment, MfaError> {
    let png = t.to_qr_png().map_err(|e| MfaError::Internal(e.to_string()))?;
    Ok(Enrolment {
        factor_id,
        secret: totp_rs::Secret::from(seed.to_vec()).to_base32(),
        otpauth_uri: t.to_url().map_err(|e| MfaError::Internal(e.to_string()))?,
        qr_png_base64: base64::engine::general_purpose::STANDARD.encode(png),
    })
}

/// The enrolment of the user's pending (unconfirmed) TOTP factor `factor_id` again — for a
/// page shown anew after a wrong code; `None` if it is not a pending factor of this user.
pub async fn pending_totp(
    state: &AppState,
    tenant: &Tenant,
    user_id: &str,
    factor_id: &str,
    account: &str,
) -> Result<Option<Enrolment>, MfaError> {
    let rows = store::factors::for_user(&state.db, &tenant.id, user_id).await?;
    let Some(f) = rows
        .iter()
        .find(|f| f.id == factor_id && f.kind == KIND_TOTP && f.confirmed == 0)
    else {
        return Ok(None);
    };
    let Some(ct) = f.secret_ct.as_deref() else {
        return Ok(None);
    };
    let seed = state
        .keyring
        .decrypt(Purpose::TotpSeed, &tenant.id, &f.id, ct)
        .map_err(|e| MfaError::Internal(e.to_string()))?;
    let t = totp(&seed, &tenant.name, account)?;
    enrolment(f.id.clone(), &seed, &t).map(Some)
}

/// After a master-key rotation: every TOTP seed under an older master version, re-encrypted
/// under the current one. Returns how many.
pub async fn reencrypt_seeds(db: &crate::store::Db, keyring: &crate::crypto::Keyring) -> Result<u64, MfaError> {
    let current = keyring.current_version(crate::crypto::keyring::Kind::Master);
    let mut n = 0;
    for (id, tenant_id, ct) in store::factors::seeds_not_under(db, current as i64).await? {
        let seed = keyring
            .decrypt(Purpose::TotpSeed, &tenant_id, &id, &ct)
            .map_err(|e| MfaError::Internal(e.to_string()))?;
        let (ct, v) = keyring.encrypt(Purpose::TotpSeed, &tenant_id, &id, &seed[..]);
        store::factors::reencrypt_seed(db, &id, &ct, v as i64).await?;
        n += 1;
    }
    Ok(n)
}

/// Checks a TOTP code against the user's confirmed factors (or one pending factor):
/// ±1 step of skew, and a step at or before the last accepted one is refused (replay).
pub async fn check_totp(
    state: &AppState,
    tenant: &Tenant,
    user_id: &str,
    code: &str,
    pending: Option<&str>,
) -> Result<Option<String>, MfaError> {
    if code.len() > 16 || !tenant.policy.allows(KIND_TOTP) {
        return Ok(None);
    }
    let now = store::now() as u64;
    for f in store::factors::for_user(&state.db, &tenant.id, user_id).await? {
        let eligible = f.kind == KIND_TOTP
            && if let Some(p) = pending {
                f.id == p && f.confirmed == 0
            } else {
                f.confirmed != 0
            };
        let Some(ct) = f.secret_ct.as_deref().filter(|_| eligible) else {
            continue;
        };
        let seed = state
            .keyring
            .decrypt(Purpose::TotpSeed, &tenant.id, &f.id, ct)
            .map_err(|e| MfaError::Internal(e.to_string()))?;
        let Some(step) = totp(&seed, &tenant.name, "user")?.check(code.trim(), now) else {
            continue;
        };
        if store::factors::accept_step(&state.db, &f.id, step as i64).await? {
            return Ok(Some(f.id));
        }
    }
    Ok(None)
}

/// Whether the user has a confirmed factor of a kind the tenant allows (one of another kind
/// is not offered, so it does not count — nor do the recovery codes that came with it).
pub async fn has_confirmed(state: &AppState, tenant: &Tenant, user_id: &str) -> Result<bool, MfaError> {
    let factors = store::factors::for_user(&state.db, &tenant.id, user_id).await?;
    Ok(any_allowed(
        tenant,
        factors.iter().filter(|f| f.confirmed != 0).map(|f| f.kind.as_str()),
    ))
}

/// Whether any of these confirmed factor kinds is one the tenant allows.
pub fn any_allowed<'a>(tenant: &Tenant, mut kinds: impl Iterator<Item = &'a str>) -> bool {
    kinds.any(|k| tenant.policy.allows(k))
}

fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// A new set of recovery codes replacing the user's, stored in `tx` (the caller records the
/// event in it and commits); the codes are shown once.
pub async fn new_recovery_codes(
    state: &AppState,
    tx: &mut store::Tx,
    tenant: &Tenant,
    user_id: &str,
) -> Result<Vec<String>, MfaError> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTVWXYZ0123456789"; // Crockford base32: 5 bits a character
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    let mut hashes = Vec::with_capacity(RECOVERY_CODES);
    let mut version = 0;
    for _ in 0..RECOVERY_CODES {
        let bytes = crate::crypto::random_bytes::<16>();
        let raw: String = bytes.iter().map(|b| ALPHABET[(*b & 31) as usize] as char).collect(); // 16 × 5 = 80 bits
        let (tag, v) =
            state
                .keyring
                .hmac_current(&[b"recovery", tenant.id.as_bytes(), user_id.as_bytes(), raw.as_bytes()]);
        version = v as i64;
        hashes.push(tag);
        codes.push(format!(
            "{}-{}-{}-{}",
            &raw[0..4],
            &raw[4..8],
            &raw[8..12],
            &raw[12..16]
        ));
    }
    store::factors::replace_recovery_codes(tx, &tenant.id, user_id, &hashes, version).await?;
    Ok(codes)
}

/// Spends a recovery code, once.
pub async fn use_recovery_code(state: &AppState, tenant: &Tenant, user_id: &str, code: &str) -> Result<bool, MfaError> {
    let raw = normalize_code(code);
    if raw.len() != 16 {
        return Ok(false);
    }
    for v in store::factors::recovery_versions(&state.db, &tenant.id, user_id).await? {
        let (tag, _) = state.keyring.hmac_version(
            v as u32,
            &[b"recovery", tenant.id.as_bytes(), user_id.as_bytes(), raw.as_bytes()],
        );
        if let Some(tag) = tag
            && store::factors::use_recovery_code(&state.db, &tenant.id, user_id, &tag).await?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    /// RFC 6238 Appendix B (SHA-1 rows) through totp-rs as configured (8 digits there).
    #[test]
    fn rfc6238_vectors() {
        let t = totp_rs::Builder::new()
            .with_secret(b"12345678901234567890".to_vec())
            .with_digits(8)
            .build_noncompliant();
        for (time, code) in [
            (59u64, "94287082"),
            (1111111109, "07081804"),
            (1111111111, "14050471"),
            (1234567890, "89005924"),
            (2000000000, "69279037"),
            (20000000000, "65353130"),
        ] {
            assert_eq!(t.generate(time).to_string(), code, "t={time}");
        }
    }
}
