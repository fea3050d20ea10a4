//! Per-tenant signing keys: `next` (published before it signs) → `current` → `retired`
//! (published until every token it signed has expired) → gone. One key of each state per
//! algorithm. Loaded keys are cached for at most one second, so an emergency rotation
//! reaches every replica within that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::audit::{Audit, Event};
use crate::cache::TtlCache;
use crate::crypto::{KeyError, Keyring, Purpose};
use crate::password::HashPool;
use crate::store::{self, Db, StoreError, keys::SigningKeyRow};
use crate::tenants::{CLOCK_SKEW, MAX_TOKEN_TTL};

use super::material::{Alg, SigningKey, decoding_key};

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    Material(#[from] super::material::KeyMaterialError),
    #[error("key generation is busy")]
    Busy,
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

pub struct VerifyKey {
    pub alg: Alg,
    pub key: jsonwebtoken::DecodingKey,
}

/// A tenant's published keys and the current signer of each algorithm.
pub struct TenantKeys {
    pub signers: HashMap<Alg, Arc<SigningKey>>,
    pub verify: HashMap<String, VerifyKey>,
    /// `{"keys":[…]}`, serialized once.
    pub jwks: axum::body::Bytes,
    pub rows: Vec<(String, Alg, String, i64, Option<i64>)>,
}

pub struct KeyService {
    db: Db,
    keyring: Arc<Keyring>,
    pool: Arc<HashPool>,
    cache: TtlCache<String, Arc<TenantKeys>>,
    /// Parsed private keys by kid; parsing is done once per key, not per refresh.
    parsed: Mutex<HashMap<String, Arc<SigningKey>>>,
    kid_tenant: TtlCache<String, String>,
}

impl KeyService {
    pub fn new(db: Db, keyring: Arc<Keyring>, pool: Arc<HashPool>) -> Self {
        KeyService {
            db,
            keyring,
            pool,
            cache: TtlCache::new(Duration::from_secs(1), 10_000),
            parsed: Mutex::new(HashMap::new()),
            kid_tenant: TtlCache::new(Duration::from_secs(3600), 100_000),
        }
    }

    pub async fn for_tenant(&self, tenant_id: &str) -> Result<Arc<TenantKeys>, KeysError> {
        if let Some(k) = self.cache.get(&tenant_id.to_string()) {
            return Ok(k);
        }
        let rows = store::keys::published(&self.db.pool, tenant_id).await?;
        let mut signers = HashMap::new();
        let mut verify = HashMap::new();
        let mut jwks = Vec::new();
        for row in &rows {
            let Some(alg) = Alg::parse(&row.alg) else { continue };
            let jwk: serde_json::Value =
                serde_json::from_str(&row.public_jwk).map_err(|_| StoreError::Corrupt("public jwk".into()))?;
            if let Some(key) = decoding_key(&jwk) {
                verify.insert(row.kid.clone(), VerifyKey { alg, key });
            }
            jwks.push(jwk);
            if row.state == "current" {
                signers.insert(alg, self.parse(row, alg).await?);
            }
        }
        let keys = Arc::new(TenantKeys {
            signers,
            verify,
            jwks: serde_json::json!({ "keys": jwks }).to_string().into_bytes().into(),
            rows: rows
                .iter()
                .filter_map(|r| {
                    Some((
                        r.kid.clone(),
                        Alg::parse(&r.alg)?,
                        r.state.clone(),
                        r.created_at,
                        r.retire_until,
                    ))
                })
                .collect(),
        });
        self.cache.put(tenant_id.to_string(), keys.clone());
        Ok(keys)
    }

    async fn parse(&self, row: &SigningKeyRow, alg: Alg) -> Result<Arc<SigningKey>, KeysError> {
        if let Some(k) = self.parsed.lock().unwrap_or_else(|e| e.into_inner()).get(&row.kid) {
            return Ok(k.clone());
        }
        let der = match self
            .keyring
            .decrypt(Purpose::SigningKey, &row.tenant_id, &row.kid, &row.private_ct)
        {
            Err(KeyError::UnknownVersion(..)) => {
                // Another process rotated the master key: pick the new version up from keys/.
                self.keyring.reload(&self.db).await?;
                self.keyring
                    .decrypt(Purpose::SigningKey, &row.tenant_id, &row.kid, &row.private_ct)?
            }
            other => other?,
        };
        let key = Arc::new(SigningKey::from_pkcs8(alg, row.kid.clone(), &der)?);
        self.parsed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(row.kid.clone(), key.clone());
        Ok(key)
    }

    /// Which tenant a key id belongs to (kids are globally unique and never move).
    pub async fn tenant_of_kid(&self, kid: &str) -> Result<Option<String>, StoreError> {
        if kid.len() > 64 {
            return Ok(None);
        }
        if let Some(t) = self.kid_tenant.get(&kid.to_string()) {
            return Ok(Some(t));
        }
        let t = store::keys::tenant_of_kid(&self.db, kid).await?;
        if let Some(t) = &t {
            self.kid_tenant.put(kid.to_string(), t.clone());
        }
        Ok(t)
    }

    /// Generates (on the worker pool) and encrypts a new key row.
    async fn generate(&self, tenant_id: &str, alg: Alg, state: &str) -> Result<SigningKeyRow, KeysError> {
        let kid = store::new_id();
        let k = kid.clone();
        let (key, pkcs8) = self
            .pool
            .run(tenant_id, move |_| SigningKey::generate(alg, k))
            .await
            .map_err(|_| KeysError::Busy)??;
        let (ct, version) = self.keyring.encrypt(Purpose::SigningKey, tenant_id, &kid, &pkcs8);
        Ok(SigningKeyRow {
            kid,
            tenant_id: tenant_id.to_string(),
            alg: alg.name().into(),
            state: state.into(),
            public_jwk: key.public_jwk().to_string(),
            private_ct: ct,
            master_version: version as i64,
            created_at: store::now(),
            retire_until: None,
        })
    }

    /// A new tenant's keys: a `current` and a published `next` one for every algorithm,
    /// generated now (on the worker pool) and stored with [`TenantKeys::provision`] in the
    /// transaction that creates the tenant.
    pub async fn for_new_tenant(&self, tenant_id: &str) -> Result<Vec<SigningKeyRow>, KeysError> {
        let mut rows = Vec::new();
        for alg in Alg::ALL {
            rows.push(self.generate(tenant_id, alg, "current").await?);
            rows.push(self.generate(tenant_id, alg, "next").await?);
        }
        Ok(rows)
    }

    /// Stores keys from [`TenantKeys::for_new_tenant`] in `tx`.
    pub async fn provision(&self, tx: &mut store::Tx, rows: &[SigningKeyRow]) -> Result<(), KeysError> {
        for r in rows {
            store::keys::insert(&mut **tx, r).await?;
        }
        Ok(())
    }

    /// Promotes every algorithm's `next` key. The old `current` stays published until the
    /// longest-lived token it can have signed expires.
    ///
    /// With `emergency`, every key of the tenant leaves now — `current`, the `retired` ones
    /// (the leak may predate the last rotation) and `next` (stored beside the others, so it
    /// may have leaked with them) — and freshly generated keys take over. Tokens they signed
    /// stop validating at once.
    ///
    /// `event` (`keys.rotated`) is recorded in the rotation's own transaction.
    pub async fn rotate(&self, tenant_id: &str, emergency: bool, audit: &Audit, event: Event) -> Result<(), KeysError> {
        let mut fresh = Vec::new();
        for alg in Alg::ALL {
            if emergency {
                fresh.push(self.generate(tenant_id, alg, "current").await?);
            }
            fresh.push(self.generate(tenant_id, alg, "next").await?);
        }
        let now = store::now();
        let mut tx = self.db.begin_write().await?;
        let rows = store::keys::published_for_update(&mut tx, tenant_id).await?;
        for r in &rows {
            match (r.state.as_str(), emergency) {
                (_, true) => store::keys::delete(&mut *tx, &r.kid).await?,
                ("current", false) => {
                    let until = now + MAX_TOKEN_TTL as i64 + CLOCK_SKEW;
                    store::keys::set_state(&mut *tx, &r.kid, "retired", Some(until)).await?
                }
                ("next", false) => store::keys::set_state(&mut *tx, &r.kid, "current", None).await?,
                _ => {}
            }
        }
        for r in &fresh {
            store::keys::insert(&mut *tx, r).await?;
        }
        audit.commit(tx, event).await?;
        store::keys::delete_expired(&self.db).await?;
        self.cache.remove(&tenant_id.to_string());
        Ok(())
    }

    /// Re-encrypts every private key under the current master key; returns how many.
    pub async fn reencrypt_all(&self) -> Result<usize, KeysError> {
        let rows = store::keys::all(&self.db).await?;
        let current = self.keyring.current_version(crate::crypto::keyring::Kind::Master) as i64;
        let mut tx = self.db.begin_write().await?;
        let mut n = 0;
        for r in rows.iter().filter(|r| r.master_version != current) {
            let pt = self
                .keyring
                .decrypt(Purpose::SigningKey, &r.tenant_id, &r.kid, &r.private_ct)?;
            let (ct, v) = self.keyring.encrypt(Purpose::SigningKey, &r.tenant_id, &r.kid, &pt);
            store::keys::reencrypt(&mut *tx, &r.kid, &ct, v as i64).await?;
            n += 1;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(n)
    }
}
