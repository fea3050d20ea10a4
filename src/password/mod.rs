//! Password hashing: Argon2id in PHC strings with the versioned pepper as Argon2's secret
//! input, always on the bounded `HashPool`.

pub mod bench;
pub mod legacy;
pub mod policy;
pub mod pool;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

pub use pool::{Busy, HashPool, Scratch};

use crate::crypto::Keyring;
use crate::tenants::{Argon2Policy, Tenant};

/// Longest password accepted anywhere (bytes), so nobody can make us hash megabytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the hashing queue is full")]
    Busy,
    #[error("stored hash is malformed or uses an unknown pepper")]
    Malformed,
    #[error("no memory for hashing: {0}")]
    Memory(#[from] std::io::Error),
}

impl From<Busy> for PasswordError {
    fn from(_: Busy) -> Self {
        PasswordError::Busy
    }
}

pub struct StoredHash {
    pub phc: String,
    pub pepper_version: i64,
}

pub struct Passwords {
    pub pool: Arc<HashPool>,
    keyring: Arc<Keyring>,
    /// For re-reading `keys/` when a stored hash names a pepper version this process lacks.
    db: crate::store::Db,
    default: Argon2Policy,
    max_m_kib: u32,
    /// Dummy hashes per parameter set: unknown users cost one full hash at the tenant's cost.
    dummies: Mutex<HashMap<Argon2Policy, Dummy>>,
    /// Per tenant, the slowest check of a stored hash lately (imported or older hashes may cost
    /// more than the tenant's parameters): every failure is padded to it too.
    slowest: Mutex<HashMap<String, Duration>>,
    /// Password verifications performed (tests and metrics read it).
    pub verifications: AtomicU64,
}

/// A dummy hash, and how long one hash at its parameters took on a worker (a running average).
#[derive(Clone)]
struct Dummy {
    phc: String,
    cost: Duration,
}

/// The outcome of checking a stored hash.
pub struct Checked {
    pub ok: bool,
    /// The hash is weaker than the tenant's parameters, uses an older pepper or a legacy
    /// scheme: re-hash with the current ones now that the password is known.
    pub upgrade: bool,
}

impl Passwords {
    pub fn new(
        pool: Arc<HashPool>,
        keyring: Arc<Keyring>,
        db: crate::store::Db,
        default: Argon2Policy,
        max_m_kib: u32,
    ) -> Self {
        Passwords {
            pool,
            keyring,
            db,
            default,
            max_m_kib,
            dummies: Mutex::new(HashMap::new()),
            slowest: Mutex::new(HashMap::new()),
            verifications: AtomicU64::new(0),
        }
    }

    /// Checks `password` against a user's stored hash — or, for an unknown user or one without
    /// a password, against a dummy hash at the same cost, so both take the same time.
    ///
    /// Stored hashes do not all cost the same: imported ones (bcrypt cost 12, Django's PBKDF2)
    /// or ones made before the policy changed may cost less or more than the tenant's
    /// parameters, and a failure that answered sooner or later than an unknown user's would tell
    /// that the account exists. So every failure takes as long as the slower of one hash at the
    /// tenant's parameters and the slowest stored hash of the tenant checked lately (`pad`; only
    /// the first checks of a slower hash, before it is known, answer later). A correct password
    /// for an account that cannot sign in (`usable` false: locked, disabled) fails all the
    /// same and is padded too.
    pub async fn check(
        &self,
        tenant: &Tenant,
        stored: Option<(&str, Option<i64>)>,
        password: &str,
        usable: bool,
    ) -> Result<Checked, PasswordError> {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("unicred_password_verifications_total").increment(1);
        let params = self.params_for(tenant);
        match stored {
            Some((phc, Some(version))) => {
                let (ok, spent) = self.verify_timed(&tenant.id, phc, version, password).await?;
                let current_params = same_params(phc, params);
                self.note_cost(&tenant.id, spent);
                if !(ok && usable) {
                    self.pad(tenant, params, spent).await?;
                }
                let current = self.keyring.current_pepper().0 as i64;
                Ok(Checked {
                    ok,
                    upgrade: ok && (version != current || !current_params),
                })
            }
            Some((legacy_hash, None)) => {
                let limits = legacy::Limits {
                    argon2_max_m_kib: self.max_m_kib,
                };
                let (h, pw) = (legacy_hash.to_string(), Zeroizing::new(password.as_bytes().to_vec()));
                let (ok, spent) = self
                    .pool
                    .run(&tenant.id, move |_| timed(|| legacy::verify(&h, &pw, &limits)))
                    .await?;
                let ok = ok.map_err(|_| PasswordError::Malformed)?;
                self.note_cost(&tenant.id, spent);
                if !(ok && usable) {
                    self.pad(tenant, params, spent).await?;
                }
                Ok(Checked { ok, upgrade: ok })
            }
            None => {
                let spent = self.verify_dummy(tenant, params, password).await?;
                self.pad(tenant, params, spent).await?;
                Ok(Checked {
                    ok: false,
                    upgrade: false,
                })
            }
        }
    }

    /// One verification against the dummy hash at `params`, updating its measured cost; returns
    /// the time it took on the worker.
    async fn verify_dummy(
        &self,
        tenant: &Tenant,
        params: Argon2Policy,
        password: &str,
    ) -> Result<Duration, PasswordError> {
        let dummy = self.dummy(tenant, params).await?;
        let version = self.keyring.current_pepper().0 as i64;
        let (_, spent) = self.verify_timed(&tenant.id, &dummy.phc, version, password).await?;
        if let Some(d) = self.dummies.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&params) {
            d.cost = (d.cost * 7 + spent) / 8;
        }
        Ok(spent)
    }

    /// Remembers how long a stored hash of `tenant` took: the slowest lately, fading by 1/256
    /// per faster check so that it follows a tenant whose slow hashes were all upgraded.
    fn note_cost(&self, tenant_id: &str, spent: Duration) {
        let mut slowest = self.slowest.lock().unwrap_or_else(|e| e.into_inner());
        match slowest.get_mut(tenant_id) {
            Some(s) if spent > *s => *s = spent,
            Some(s) => *s = *s * 255 / 256,
            None => {
                slowest.insert(tenant_id.to_string(), spent);
            }
        }
    }

    /// Waits until a failed check that spent `spent` on a worker has taken as long as one hash
    /// at `params`, or as the tenant's slowest stored hash lately (see [`Passwords::check`]).
    /// The wait is a timer, not a worker: padding costs no hashing capacity.
    async fn pad(&self, tenant: &Tenant, params: Argon2Policy, spent: Duration) -> Result<(), PasswordError> {
        let slowest = self
            .slowest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant.id)
            .copied()
            .unwrap_or_default();
        // The dummy's cost without copying its hash (it is there after the first failure).
        let known = self
            .dummies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&params)
            .map(|d| d.cost);
        let dummy = match known {
            Some(cost) => cost,
            None => self.dummy(tenant, params).await?.cost,
        };
        let full = dummy.max(slowest);
        if let Some(rest) = full.checked_sub(spent) {
            tokio::time::sleep(rest).await;
        }
        Ok(())
    }

    async fn dummy(&self, tenant: &Tenant, params: Argon2Policy) -> Result<Dummy, PasswordError> {
        if let Some(d) = self.dummies.lock().unwrap_or_else(|e| e.into_inner()).get(&params) {
            return Ok(d.clone());
        }
        let (_, pepper) = self.keyring.current_pepper();
        let (phc, cost) = self
            .pool
            .run(&tenant.id, move |scratch| {
                timed(|| hash_with(scratch, &pepper[..], params, b"unicred dummy password"))
            })
            .await?;
        let dummy = Dummy { phc: phc?, cost };
        self.dummies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(params)
            .or_insert(dummy.clone());
        Ok(dummy)
    }

    /// The Argon2 cost for a tenant: its policy, else the platform default.
    pub fn params_for(&self, tenant: &Tenant) -> Argon2Policy {
        tenant.policy.argon2.unwrap_or(self.default)
    }

    pub async fn hash(&self, tenant: &Tenant, password: &str) -> Result<StoredHash, PasswordError> {
        let params = self.params_for(tenant);
        let (version, pepper) = self.keyring.current_pepper();
        let password = Zeroizing::new(password.as_bytes().to_vec());
        let phc = self
            .pool
            .run(&tenant.id, move |scratch| {
                hash_with(scratch, &pepper[..], params, &password)
            })
            .await??;
        Ok(StoredHash {
            phc,
            pepper_version: version as i64,
        })
    }

    /// `Ok(true)` on a match; a mismatch is `Ok(false)`, a malformed hash `Err`.
    pub async fn verify(
        &self,
        tenant_id: &str,
        phc: &str,
        pepper_version: i64,
        password: &str,
    ) -> Result<bool, PasswordError> {
        Ok(self.verify_timed(tenant_id, phc, pepper_version, password).await?.0)
    }

    /// `verify`, and the time the hash took on its worker (without the queue's wait).
    async fn verify_timed(
        &self,
        tenant_id: &str,
        phc: &str,
        pepper_version: i64,
        password: &str,
    ) -> Result<(bool, Duration), PasswordError> {
        let version = u32::try_from(pepper_version).map_err(|_| PasswordError::Malformed)?;
        let pepper = match self.keyring.pepper(version) {
            Some(p) => p,
            None => {
                // Another replica rotated the pepper and re-hashed this password with it: pick
                // the new version up from keys/ (the version comes from the database, never
                // from a request).
                if let Err(e) = self.keyring.reload(&self.db).await {
                    tracing::warn!(error = %e, "re-reading keys/ for a new pepper version failed");
                }
                self.keyring.pepper(version).ok_or(PasswordError::Malformed)?
            }
        };
        let phc = phc.to_string();
        let password = Zeroizing::new(password.as_bytes().to_vec());
        let (ok, spent) = self
            .pool
            .run(tenant_id, move |scratch| {
                timed(|| verify_with(scratch, &pepper[..], &phc, &password))
            })
            .await?;
        Ok((ok?, spent))
    }
}

fn timed<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed())
}

/// Whether a peppered PHC string was made with exactly `p` (Argon2id, v19).
fn same_params(phc: &str, p: Argon2Policy) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    parsed.algorithm == argon2::ARGON2ID_IDENT
        && parsed.version == Some(Version::V0x13.into())
        && params.m_cost() == p.m_kib
        && params.t_cost() == p.t
        && params.p_cost() == p.p
}

fn argon2_params(p: Argon2Policy) -> Result<Params, PasswordError> {
    Params::new(p.m_kib, p.t, p.p, Some(32)).map_err(|_| PasswordError::Malformed)
}

/// Hashes with the worker's reusable memory.
pub fn hash_with(
    scratch: &mut Scratch,
    pepper: &[u8],
    p: Argon2Policy,
    password: &[u8],
) -> Result<String, PasswordError> {
    let params = argon2_params(p)?;
    let argon = Argon2::new_with_secret(pepper, Algorithm::Argon2id, Version::V0x13, params.clone())
        .map_err(|_| PasswordError::Malformed)?;
    let salt = SaltString::encode_b64(&crate::crypto::random_bytes::<16>()).map_err(|_| PasswordError::Malformed)?;
    let mut raw_salt = [0u8; 16];
    let raw_salt = salt.decode_b64(&mut raw_salt).map_err(|_| PasswordError::Malformed)?;
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into_with_memory(password, raw_salt, &mut out[..], scratch.blocks(params.block_count())?)
        .map_err(|_| PasswordError::Malformed)?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: (&params).try_into().map_err(|_| PasswordError::Malformed)?,
        salt: Some(Salt::from(&salt)),
        hash: Some(Output::new(&out[..]).map_err(|_| PasswordError::Malformed)?),
    };
    Ok(phc.to_string())
}

/// Verifies an Argon2 PHC string (any variant) with the worker's reusable memory; the final
/// comparison is `Output`'s constant-time equality.
pub fn verify_with(scratch: &mut Scratch, pepper: &[u8], phc: &str, password: &[u8]) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(phc).map_err(|_| PasswordError::Malformed)?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|_| PasswordError::Malformed)?;
    let version = parsed
        .version
        .map_or(Ok(Version::V0x13), Version::try_from)
        .map_err(|_| PasswordError::Malformed)?;
    let expected = parsed.hash.ok_or(PasswordError::Malformed)?;
    let params = Params::try_from(&parsed).map_err(|_| PasswordError::Malformed)?;
    let params = Params::new(params.m_cost(), params.t_cost(), params.p_cost(), Some(expected.len()))
        .map_err(|_| PasswordError::Malformed)?;
    let mut salt = [0u8; 64];
    let salt = parsed
        .salt
        .ok_or(PasswordError::Malformed)?
        .decode_b64(&mut salt)
        .map_err(|_| PasswordError::Malformed)?;
    let argon =
        Argon2::new_with_secret(pepper, algorithm, version, params.clone()).map_err(|_| PasswordError::Malformed)?;
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    argon
        .hash_password_into_with_memory(password, salt, &mut out[..], scratch.blocks(params.block_count())?)
        .map_err(|_| PasswordError::Malformed)?;
    Ok(Output::new(&out[..]).map_err(|_| PasswordError::Malformed)? == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Argon2Policy = Argon2Policy {
        m_kib: 19456,
        t: 2,
        p: 1,
    };

    #[test]
    fn hash_verifies_and_pepper_matters() {
        let mut s = Scratch::default();
        let phc = hash_with(&mut s, b"pepper-one", P, b"correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_with(&mut s, b"pepper-one", &phc, b"correct horse").unwrap());
        assert!(!verify_with(&mut s, b"pepper-one", &phc, b"correct horsf").unwrap());
        assert!(!verify_with(&mut s, b"pepper-two", &phc, b"correct horse").unwrap());
        assert!(verify_with(&mut s, b"", "$argon2id$v=19$garbage", b"x").is_err());
    }

    /// RFC 9106 §5.3 (Argon2id) through the crate as configured: secret and associated data,
    /// m=32, t=3, p=4, 32-byte tag.
    #[test]
    fn rfc9106_argon2id_vector() {
        let mut out = [0u8; 32];
        let params_ad = argon2::ParamsBuilder::new()
            .m_cost(32)
            .t_cost(3)
            .p_cost(4)
            .output_len(32)
            .data(argon2::AssociatedData::new(&[4u8; 12]).unwrap())
            .build()
            .unwrap();
        // In a worker's (huge-page) scratch memory, as the pool hashes, grown from a smaller
        // size first so the remapping path is exercised too.
        let mut scratch = Scratch::default();
        assert_eq!(scratch.blocks(8).unwrap().len(), 8);
        let blocks = scratch.blocks(params_ad.block_count()).unwrap();
        let argon_ad = Argon2::new_with_secret(&[3u8; 8], Algorithm::Argon2id, Version::V0x13, params_ad).unwrap();
        argon_ad
            .hash_password_into_with_memory(&[1u8; 32], &[2u8; 16], &mut out, blocks)
            .unwrap();
        assert_eq!(
            crate::crypto::hex(&out),
            "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
        );
    }
}
