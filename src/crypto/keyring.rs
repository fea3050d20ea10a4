//! `keys/` holds one file per key version: `master.vN`, `pepper.vN`, `hmac.vN`, each 32 random
//! bytes in base64, mode 0600. The database records each version's fingerprint; a process whose
//! files do not match refuses to start, so replicas can never silently fork the keys.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::store::{self, Db};

type Key = Zeroizing<[u8; 32]>;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Mismatch(String),
    #[error("keys directory {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("key file {0} is malformed")]
    Malformed(PathBuf),
    #[error("unknown {0} key version {1}")]
    UnknownVersion(&'static str, u32),
    #[error("decryption failed")]
    Decrypt,
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Master,
    Pepper,
    Hmac,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Master, Kind::Pepper, Kind::Hmac];
    pub fn name(self) -> &'static str {
        match self {
            Kind::Master => "master",
            Kind::Pepper => "pepper",
            Kind::Hmac => "hmac",
        }
    }
}

/// What an AEAD ciphertext protects; part of its associated data.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    SigningKey,
    TotpSeed,
    AuditKey,
}

impl Purpose {
    fn name(self) -> &'static str {
        match self {
            Purpose::SigningKey => "signing-key",
            Purpose::TotpSeed => "totp-seed",
            Purpose::AuditKey => "audit-key",
        }
    }
}

#[derive(Default)]
struct KeySet {
    keys: BTreeMap<(Kind, u32), Key>,
}

impl KeySet {
    fn current(&self, kind: Kind) -> (u32, &Key) {
        self.keys
            .iter()
            .rev()
            .find(|((k, _), _)| *k == kind)
            .map(|((_, v), key)| (*v, key))
            .expect("a key of every kind is loaded at start")
    }
}

pub struct Keyring {
    dir: PathBuf,
    set: RwLock<Arc<KeySet>>,
}

fn fingerprint(kind: Kind, key: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"unicred key fingerprint\0");
    h.update(kind.name().as_bytes());
    h.update(key);
    super::hex(&h.finalize()[..16])
}

fn read_dir(dir: &Path) -> Result<KeySet, KeyError> {
    let io = |e| KeyError::Io(dir.to_path_buf(), e);
    let mut set = KeySet::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(set),
        Err(e) => return Err(io(e)),
    };
    for entry in entries {
        let path = entry.map_err(io)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((kind, version)) = name.split_once(".v") else {
            continue;
        };
        let Some(kind) = Kind::ALL.into_iter().find(|k| k.name() == kind) else {
            continue;
        };
        let Ok(version) = version.parse::<u32>() else { continue };
        let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(io)?);
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| KeyError::Malformed(path.clone()))?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Malformed(path.clone()))?;
        set.keys.insert((kind, version), Zeroizing::new(key));
    }
    Ok(set)
}

fn write_key(dir: &Path, kind: Kind, version: u32) -> Result<(), KeyError> {
    let io = |e| KeyError::Io(dir.to_path_buf(), e);
    std::fs::create_dir_all(dir).map_err(io)?;
    let key = Zeroizing::new(super::random_bytes::<32>());
    let text = Zeroizing::new(STANDARD.encode(*key) + "\n");
    let path = dir.join(format!("{}.v{version}", kind.name()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

impl Keyring {
    /// Loads `keys/`, generating the first versions only when both `keys/` and the database
    /// are empty, and checks every recorded fingerprint.
    pub async fn open(dir: &Path, db: &Db) -> Result<Keyring, KeyError> {
        let mut set = read_dir(dir)?;
        if set.keys.is_empty() {
            let recorded = store::keys::versions(db).await?;
            if !recorded.is_empty() || store::tenants::any_exist(db).await? {
                return Err(KeyError::Mismatch(format!(
                    "keys directory {} is empty but the database already holds data: mount the keys/ \
                     every other replica uses (keys are generated only for an empty database)",
                    dir.display()
                )));
            }
            for kind in Kind::ALL {
                write_key(dir, kind, 1)?;
            }
            set = read_dir(dir)?;
        }
        for kind in Kind::ALL {
            if !set.keys.keys().any(|(k, _)| *k == kind) {
                return Err(KeyError::Mismatch(format!(
                    "keys directory {} has no {} key",
                    dir.display(),
                    kind.name()
                )));
            }
        }
        let ring = Keyring {
            dir: dir.to_path_buf(),
            set: RwLock::new(Arc::new(set)),
        };
        ring.check(db).await?;
        Ok(ring)
    }

    /// Records fingerprints of versions the database does not know yet, then requires every
    /// recorded version to be present here with the same fingerprint.
    async fn check(&self, db: &Db) -> Result<(), KeyError> {
        let set = self.snapshot();
        let recorded = store::keys::versions(db).await?;
        for ((kind, version), key) in &set.keys {
            if !recorded
                .iter()
                .any(|(k, v, _)| k == kind.name() && *v == *version as i64)
            {
                store::keys::record_version(db, kind.name(), *version as i64, &fingerprint(*kind, key)).await?;
            }
        }
        for (kind_name, version, fp) in store::keys::versions(db).await? {
            let Some(kind) = Kind::ALL.into_iter().find(|k| k.name() == kind_name) else {
                continue;
            };
            match set.keys.get(&(kind, version as u32)) {
                Some(key) if fingerprint(kind, key) == fp => {}
                Some(_) => {
                    return Err(KeyError::Mismatch(format!(
                        "{}.v{version} in {} does not match the fingerprint recorded in the database: \
                         this process has different keys than the other replicas; refusing to start",
                        kind.name(),
                        self.dir.display()
                    )));
                }
                None => {
                    return Err(KeyError::Mismatch(format!(
                        "{}.v{version} is recorded in the database but missing from {}: mount the shared keys/",
                        kind.name(),
                        self.dir.display()
                    )));
                }
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Arc<KeySet> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads `keys/` (after another process rotated a key) and re-checks fingerprints.
    pub async fn reload(&self, db: &Db) -> Result<(), KeyError> {
        let set = read_dir(&self.dir)?;
        let old = self.snapshot();
        // Never drop a version this process already holds.
        if old.keys.keys().any(|k| !set.keys.contains_key(k)) {
            return Err(KeyError::Mismatch("a key version disappeared from keys/".into()));
        }
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        self.check(db).await
    }

    /// Adds a new version of `kind` (files first, then the fingerprint) and returns it.
    pub async fn rotate(&self, db: &Db, kind: Kind) -> Result<u32, KeyError> {
        self.reload(db).await?;
        let next = self.snapshot().current(kind).0 + 1;
        write_key(&self.dir, kind, next)?;
        self.reload(db).await?;
        Ok(next)
    }

    pub fn current_version(&self, kind: Kind) -> u32 {
        self.snapshot().current(kind).0
    }

    fn aad(purpose: Purpose, tenant_id: &str, row_id: &str) -> Vec<u8> {
        format!("unicred/1\0{}\0{tenant_id}\0{row_id}", purpose.name()).into_bytes()
    }

    /// AES-256-GCM under the current master key: `version (4 bytes BE) ‖ nonce (12) ‖ ciphertext`,
    /// with the associated data binding purpose, tenant and row.
    pub fn encrypt(&self, purpose: Purpose, tenant_id: &str, row_id: &str, plaintext: &[u8]) -> (Vec<u8>, u32) {
        let set = self.snapshot();
        let (version, key) = set.current(Kind::Master);
        let cipher = Aes256Gcm::new_from_slice(&key[..]).expect("32-byte key");
        let nonce_bytes = super::random_bytes::<12>();
        let nonce = aes_gcm::aead::Nonce::<Aes256Gcm>::try_from(&nonce_bytes[..]).expect("12-byte nonce");
        let aad = Self::aad(purpose, tenant_id, row_id);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of a small message cannot fail");
        let mut out = Vec::with_capacity(16 + ct.len());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ct);
        (out, version)
    }

    pub fn decrypt(
        &self,
        purpose: Purpose,
        tenant_id: &str,
        row_id: &str,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if blob.len() < 16 + 16 {
            return Err(KeyError::Decrypt);
        }
        let version = u32::from_be_bytes(blob[..4].try_into().expect("4 bytes"));
        let set = self.snapshot();
        let key = set
            .keys
            .get(&(Kind::Master, version))
            .ok_or(KeyError::UnknownVersion("master", version))?;
        let cipher = Aes256Gcm::new_from_slice(&key[..]).expect("32-byte key");
        let nonce = aes_gcm::aead::Nonce::<Aes256Gcm>::try_from(&blob[4..16]).map_err(|_| KeyError::Decrypt)?;
        let aad = Self::aad(purpose, tenant_id, row_id);
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &blob[16..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Decrypt)
    }

    /// The current pepper (Argon2's secret input) and its version.
    pub fn current_pepper(&self) -> (u32, Key) {
        let set = self.snapshot();
        let (v, k) = set.current(Kind::Pepper);
        (v, k.clone())
    }

    pub fn pepper(&self, version: u32) -> Option<Key> {
        self.snapshot().keys.get(&(Kind::Pepper, version)).cloned()
    }

    fn mac(&self, version: u32, parts: &[&[u8]]) -> Option<Hmac<Sha256>> {
        let set = self.snapshot();
        let key = set.keys.get(&(Kind::Hmac, version))?;
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&key[..]).expect("any key length");
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        Some(mac)
    }

    /// HMAC-SHA-256 under the current HMAC key, hex; used for client secrets and recovery codes.
    pub fn hmac_current(&self, parts: &[&[u8]]) -> (String, u32) {
        let version = self.current_version(Kind::Hmac);
        let tag = self
            .mac(version, parts)
            .expect("current version exists")
            .finalize()
            .into_bytes();
        (super::hex(&tag), version)
    }

    /// HMAC-SHA-256 under a given HMAC key version (`None` if this process lacks it).
    pub fn hmac_version(&self, version: u32, parts: &[&[u8]]) -> (Option<String>, u32) {
        let tag = self.mac(version, parts).map(|m| super::hex(&m.finalize().into_bytes()));
        (tag, version)
    }

    /// Constant-time check of a hex tag made by `hmac_current`.
    pub fn hmac_verify(&self, version: u32, parts: &[&[u8]], tag_hex: &str) -> bool {
        let Some(mac) = self.mac(version, parts) else {
            return false;
        };
        let Some(tag) = super::unhex(tag_hex) else { return false };
        mac.verify_slice(&tag).is_ok()
    }
}
