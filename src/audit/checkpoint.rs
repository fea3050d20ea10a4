//! Signed checkpoints: a compact JWS (EdDSA, `typ: audit-checkpoint+jwt`) over
//! `{"tenant_id","seq","hash","iat"}`, made with a per-tenant audit key that has nothing to do
//! with the tenant's token signing keys. The private key is stored encrypted under the master
//! key (`Purpose::AuditKey`, bound to tenant and kid); public keys are never withdrawn and are
//! published at `{issuer}/audit-keys.json`, so anyone holding a checkpoint can check it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use super::AuditError;
use crate::crypto::{KeyError, Keyring, Purpose};
use crate::store::audit::{self as sa, AuditKeyRow};
use crate::store::{Db, StoreError, new_id, now};
use crate::tokens::material::{Alg, SigningKey, decoding_key};

pub const TYP: &str = "audit-checkpoint+jwt";

/// What a checkpoint states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckpointClaims {
    pub tenant_id: String,
    pub seq: i64,
    /// The chain hash at `seq` (hex).
    pub hash: String,
    /// Signing time, unix seconds.
    pub iat: i64,
}

/// A stored checkpoint.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Checkpoint {
    pub tenant_id: String,
    pub seq: i64,
    pub hash: String,
    pub at: i64,
    pub kid: String,
    /// Compact JWS; verify it with the keys at `{issuer}/audit-keys.json`.
    pub jws: String,
}

impl From<sa::CheckpointRow> for Checkpoint {
    fn from(r: sa::CheckpointRow) -> Self {
        Checkpoint {
            tenant_id: r.tenant_id,
            seq: r.seq,
            hash: r.hash,
            at: r.at,
            kid: r.kid,
            jws: r.jws,
        }
    }
}

/// The tenant's audit public keys (JWKs), oldest first.
pub(crate) async fn public_keys(db: &Db, tenant_id: &str) -> Result<Vec<serde_json::Value>, AuditError> {
    sa::keys(db, tenant_id)
        .await?
        .iter()
        .map(|k| serde_json::from_str(&k.public_jwk).map_err(|_| StoreError::Corrupt("audit public jwk".into()).into()))
        .collect()
}

/// `{"keys":[…]}`: every audit key the tenant ever had (served at `{issuer}/audit-keys.json`).
pub async fn audit_keys_jwks(db: &Db, tenant_id: &str) -> Result<serde_json::Value, AuditError> {
    Ok(serde_json::json!({ "keys": public_keys(db, tenant_id).await? }))
}

/// Checks a checkpoint JWS against a JWKS document (`{"keys":[…]}`) and returns what it states.
pub fn verify_checkpoint(jwks: &serde_json::Value, jws: &str) -> Result<CheckpointClaims, AuditError> {
    let keys = jwks
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or(AuditError::BadSignature)?;
    verify_with(keys, jws)
}

pub(crate) fn verify_with(keys: &[serde_json::Value], jws: &str) -> Result<CheckpointClaims, AuditError> {
    let header = jsonwebtoken::decode_header(jws).map_err(|_| AuditError::BadSignature)?;
    if header.alg != jsonwebtoken::Algorithm::EdDSA || header.typ.as_deref() != Some(TYP) {
        return Err(AuditError::BadSignature);
    }
    let kid = header.kid.ok_or(AuditError::BadSignature)?;
    let jwk = keys
        .iter()
        .find(|k| k.get("kid").and_then(|v| v.as_str()) == Some(kid.as_str()))
        .ok_or(AuditError::BadSignature)?;
    let key = decoding_key(jwk).ok_or(AuditError::BadSignature)?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    jsonwebtoken::decode::<CheckpointClaims>(jws, &key, &v)
        .map(|d| d.claims)
        .map_err(|_| AuditError::BadSignature)
}

fn decrypt(keyring: &Keyring, row: &AuditKeyRow) -> Result<SigningKey, AuditError> {
    let der = keyring.decrypt(Purpose::AuditKey, &row.tenant_id, &row.kid, &row.private_ct)?;
    Ok(SigningKey::from_pkcs8(Alg::EdDSA, row.kid.clone(), &der)?)
}

/// The tenant's newest audit key, made on first use.
pub(crate) async fn signer(db: &Db, keyring: &Keyring, tenant_id: &str) -> Result<SigningKey, AuditError> {
    match sa::keys(db, tenant_id).await?.last() {
        Some(row) => match decrypt(keyring, row) {
            Err(AuditError::Key(KeyError::UnknownVersion(..))) => {
                // Another process rotated the master key.
                keyring.reload(db).await?;
                decrypt(keyring, row)
            }
            r => r,
        },
        None => new_key(db, keyring, tenant_id).await,
    }
}

/// Adds a new audit key for the tenant; the older ones stay published.
pub(crate) async fn new_key(db: &Db, keyring: &Keyring, tenant_id: &str) -> Result<SigningKey, AuditError> {
    // Sortable: the newest key (last by `created_at, kid`) signs.
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let kid = format!("audit-{millis:013}-{}", &new_id()[..8]);
    let (key, pkcs8) = SigningKey::generate(Alg::EdDSA, kid.clone())?;
    let mut jwk = key.public_jwk();
    jwk["use"] = "sig".into();
    let (ct, version) = keyring.encrypt(Purpose::AuditKey, tenant_id, &kid, &pkcs8);
    sa::insert_key(
        db,
        &AuditKeyRow {
            kid,
            tenant_id: tenant_id.to_string(),
            public_jwk: jwk.to_string(),
            private_ct: ct,
            master_version: version as i64,
            created_at: now(),
        },
    )
    .await?;
    Ok(key)
}

pub(crate) fn sign(key: &SigningKey, claims: &CheckpointClaims) -> String {
    let header = serde_json::json!({"alg": "EdDSA", "typ": TYP, "kid": key.kid});
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(serde_json::to_vec(claims).unwrap_or_default())
    );
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig))
}

/// Re-encrypts every audit key under the current master key (after `keys rotate-master`).
pub async fn reencrypt_keys(db: &Db, keyring: &Keyring) -> Result<u64, AuditError> {
    keyring.reload(db).await?;
    let current = keyring.current_version(crate::crypto::keyring::Kind::Master) as i64;
    let mut n = 0;
    for row in sa::all_keys(db).await? {
        if row.master_version == current {
            continue;
        }
        let der = keyring.decrypt(Purpose::AuditKey, &row.tenant_id, &row.kid, &row.private_ct)?;
        let (ct, v) = keyring.encrypt(Purpose::AuditKey, &row.tenant_id, &row.kid, &der);
        sa::reencrypt_key(db, &row.kid, &ct, v as i64).await?;
        n += 1;
    }
    Ok(n)
}
