//! Tenants and their policies (`GetEffective…`: the tenant's value, else the default).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::TtlCache;
use crate::store::{self, Db, StoreError};
use crate::tokens::Alg;

pub const SYSTEM: &str = "system";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MfaPolicy {
    Off,
    Optional,
    Required,
}

/// A kind of second factor a tenant may allow (`mfa_factors`). Recovery codes are not one:
/// they always come with a confirmed factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FactorType {
    Totp,
    Webauthn,
}

impl FactorType {
    pub const ALL: [FactorType; 2] = [FactorType::Totp, FactorType::Webauthn];

    /// The factor kind as stored and as the APIs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            FactorType::Totp => "totp",
            FactorType::Webauthn => "webauthn",
        }
    }
}

/// Which WebAuthn attestation registration asks for and requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Attestation {
    /// Any authenticator (no attestation asked for).
    None,
    /// Only authenticators whose attestation chains to one of `webauthn_attestation_roots`
    /// and whose AAGUID is in `webauthn_aaguids`.
    Direct,
}

/// Bounds on what a tenant admin may store in the attestation allow-list.
const MAX_AAGUIDS: usize = 64;
const MAX_ROOTS: usize = 16;
const MAX_ROOT_PEM_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Argon2Policy {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

/// A tenant's policy; every field optional (absent = platform default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_min_length: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zxcvbn_min_score: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa: Option<MfaPolicy>,
    /// The second-factor types users may enrol and sign in with (default: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa_factors: Option<Vec<FactorType>>,
    /// `none` (default) or `direct`: see `Attestation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webauthn_attestation: Option<Attestation>,
    /// With `direct`: the AAGUIDs (authenticator models) allowed to register.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webauthn_aaguids: Option<Vec<uuid::Uuid>>,
    /// With `direct`: the vendors' attestation root certificates (PEM) that vouch for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webauthn_attestation_roots: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lockout_threshold: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lockout_max_delay_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token_ttl_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token_ttl_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_idle_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_max_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reauth_window_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_alg: Option<Alg>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argon2: Option<Argon2Policy>,
}

/// Longest access/ID token lifetime a policy may set.
pub const MAX_TOKEN_TTL: u32 = 3600;
/// Clock skew allowed when validating tokens.
pub const CLOCK_SKEW: i64 = 5;

impl Policy {
    pub fn access_token_ttl(&self) -> i64 {
        self.access_token_ttl_seconds.unwrap_or(300) as i64
    }
    pub fn refresh_token_ttl(&self) -> i64 {
        self.refresh_token_ttl_seconds.unwrap_or(8 * 3600) as i64
    }
    pub fn signing_alg(&self) -> Alg {
        self.signing_alg.unwrap_or(Alg::ES256)
    }
    pub fn password_min_length(&self) -> usize {
        self.password_min_length.unwrap_or(12) as usize
    }
    pub fn zxcvbn_min_score(&self) -> u8 {
        self.zxcvbn_min_score.unwrap_or(3)
    }
    pub fn lockout_threshold(&self) -> u32 {
        self.lockout_threshold.unwrap_or(5)
    }
    pub fn lockout_max_delay(&self) -> i64 {
        self.lockout_max_delay_seconds.unwrap_or(900) as i64
    }

    /// Whether users may enrol and use second factors of `kind` (`totp`, `webauthn`). An
    /// existing credential of a kind no longer allowed is neither offered nor accepted, and
    /// `mfa: off` allows none (passkeys included): sign-in is by password alone.
    pub fn allows(&self, kind: &str) -> bool {
        if self.mfa == Some(MfaPolicy::Off) {
            return false;
        }
        match &self.mfa_factors {
            None => FactorType::ALL.iter().any(|f| f.as_str() == kind),
            Some(allowed) => allowed.iter().any(|f| f.as_str() == kind),
        }
    }

    /// Overlays the fields set in `patch`.
    pub fn merge(&mut self, patch: &Policy) {
        macro_rules! take {
            ($($f:ident),*) => { $( if patch.$f.is_some() { self.$f = patch.$f; } )* };
        }
        take!(
            password_min_length,
            zxcvbn_min_score,
            mfa,
            lockout_threshold,
            lockout_max_delay_seconds,
            access_token_ttl_seconds,
            refresh_token_ttl_seconds,
            session_idle_seconds,
            session_max_seconds,
            reauth_window_seconds,
            signing_alg,
            argon2,
            webauthn_attestation
        );
        if patch.mfa_factors.is_some() {
            self.mfa_factors = patch.mfa_factors.clone();
        }
        if patch.webauthn_aaguids.is_some() {
            self.webauthn_aaguids = patch.webauthn_aaguids.clone();
        }
        if patch.webauthn_attestation_roots.is_some() {
            self.webauthn_attestation_roots = patch.webauthn_attestation_roots.clone();
        }
    }

    /// Whether WebAuthn registration requires a verifiable attestation.
    pub fn attestation_required(&self) -> bool {
        self.webauthn_attestation == Some(Attestation::Direct)
    }

    fn validate_attestation(&self) -> Result<(), (&'static str, String)> {
        let aaguids = self.webauthn_aaguids.as_deref().unwrap_or_default();
        let roots = self.webauthn_attestation_roots.as_deref().unwrap_or_default();
        if aaguids.len() > MAX_AAGUIDS {
            return Err(("webauthn_aaguids", format!("must list at most {MAX_AAGUIDS}")));
        }
        if roots.len() > MAX_ROOTS {
            return Err(("webauthn_attestation_roots", format!("must list at most {MAX_ROOTS}")));
        }
        if roots.iter().any(|r| r.len() > MAX_ROOT_PEM_BYTES) {
            return Err((
                "webauthn_attestation_roots",
                format!("each certificate must be at most {MAX_ROOT_PEM_BYTES} bytes"),
            ));
        }
        if !self.attestation_required() {
            return Ok(());
        }
        if aaguids.is_empty() {
            return Err((
                "webauthn_aaguids",
                "must list at least one AAGUID when attestation is direct".into(),
            ));
        }
        if roots.is_empty() {
            return Err((
                "webauthn_attestation_roots",
                "must list at least one PEM root certificate when attestation is direct".into(),
            ));
        }
        crate::mfa::attestation::cas(self).map_err(|e| ("webauthn_attestation_roots", e))?;
        Ok(())
    }

    /// Range checks; `Err((field, reason))`.
    pub fn validate(&self, argon2_max_m_kib: u32) -> Result<(), (&'static str, String)> {
        fn range(field: &'static str, v: Option<u32>, lo: u32, hi: u32) -> Result<(), (&'static str, String)> {
            match v {
                Some(v) if v < lo || v > hi => Err((field, format!("must be between {lo} and {hi}"))),
                _ => Ok(()),
            }
        }
        range("password_min_length", self.password_min_length, 8, 1024)?;
        range("zxcvbn_min_score", self.zxcvbn_min_score.map(u32::from), 0, 4)?;
        range("lockout_threshold", self.lockout_threshold, 1, 1000)?;
        range("lockout_max_delay_seconds", self.lockout_max_delay_seconds, 1, 86400)?;
        range(
            "access_token_ttl_seconds",
            self.access_token_ttl_seconds,
            5,
            MAX_TOKEN_TTL,
        )?;
        range(
            "refresh_token_ttl_seconds",
            self.refresh_token_ttl_seconds,
            5,
            90 * 86400,
        )?;
        range("session_idle_seconds", self.session_idle_seconds, 5, 30 * 86400)?;
        range("session_max_seconds", self.session_max_seconds, 5, 90 * 86400)?;
        range("reauth_window_seconds", self.reauth_window_seconds, 5, 86400)?;
        self.validate_attestation()?;
        if let Some(f) = &self.mfa_factors {
            if f.is_empty() {
                return Err(("mfa_factors", "must allow at least one of totp, webauthn".into()));
            }
            if f.iter().enumerate().any(|(i, a)| f[..i].contains(a)) {
                return Err(("mfa_factors", "must not repeat a factor type".into()));
            }
        }
        if let Some(a) = self.argon2 {
            range("argon2", Some(a.m_kib), 19456, argon2_max_m_kib)?;
            range("argon2", Some(a.t), 2, 32)?;
            range("argon2", Some(a.p), 1, 16)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub policy: Policy,
    pub created_at: i64,
}

impl Tenant {
    pub fn is_system(&self) -> bool {
        self.slug == SYSTEM
    }
}

impl TryFrom<store::tenants::TenantRow> for Tenant {
    type Error = StoreError;
    fn try_from(r: store::tenants::TenantRow) -> Result<Self, StoreError> {
        let policy = serde_json::from_str(&r.policy).map_err(|e| StoreError::Corrupt(format!("tenant policy: {e}")))?;
        Ok(Tenant {
            id: r.id,
            slug: r.slug,
            name: r.name,
            policy,
            created_at: r.created_at,
        })
    }
}

/// `^[a-z0-9][a-z0-9-]{1,62}$`
pub fn valid_slug(s: &str) -> bool {
    let b = s.as_bytes();
    (2..=63).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Tenants by slug and by id, at most one second old.
pub struct Tenants {
    db: Db,
    by_slug: TtlCache<String, Arc<Tenant>>,
    by_id: TtlCache<String, Arc<Tenant>>,
}

impl Tenants {
    pub fn new(db: Db) -> Self {
        let ttl = Duration::from_secs(1);
        Tenants {
            db,
            by_slug: TtlCache::new(ttl, 10_000),
            by_id: TtlCache::new(ttl, 10_000),
        }
    }

    pub async fn by_slug(&self, slug: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        if let Some(t) = self.by_slug.get(&slug.to_string()) {
            return Ok(Some(t));
        }
        if !valid_slug(slug) {
            return Ok(None);
        }
        let Some(row) = store::tenants::by_slug(&self.db, slug).await? else {
            return Ok(None);
        };
        let t = Arc::new(Tenant::try_from(row)?);
        self.by_slug.put(t.slug.clone(), t.clone());
        self.by_id.put(t.id.clone(), t.clone());
        Ok(Some(t))
    }

    pub async fn by_id(&self, id: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        if let Some(t) = self.by_id.get(&id.to_string()) {
            return Ok(Some(t));
        }
        let Some(row) = store::tenants::by_id(&self.db, id).await? else {
            return Ok(None);
        };
        let t = Arc::new(Tenant::try_from(row)?);
        self.by_slug.put(t.slug.clone(), t.clone());
        self.by_id.put(t.id.clone(), t.clone());
        Ok(Some(t))
    }

    /// Drops this process's cached copy after a change it made itself.
    pub fn forget(&self, t: &Tenant) {
        self.by_slug.remove(&t.slug);
        self.by_id.remove(&t.id);
    }
}

/// Creates a tenant with its signing keys and `event(tenant id)` (`tenant.created`) in one
/// transaction.
pub async fn create(
    state: &crate::app::AppState,
    slug: &str,
    name: Option<&str>,
    policy: Policy,
    event: &(dyn Fn(&str) -> crate::audit::Event + Sync),
) -> Result<Tenant, crate::error::Error> {
    use crate::error::Error;
    if !valid_slug(slug) {
        return Err(Error::invalid("slug", "must match ^[a-z0-9][a-z0-9-]{1,62}$"));
    }
    let name = name.unwrap_or(slug);
    check_name(name)?;
    policy
        .validate(state.config.argon2_max_m_kib)
        .map_err(|(f, r)| Error::invalid(f, r))?;
    let id = store::new_id();
    let keys = state.keys.for_new_tenant(&id).await?;
    let mut tx = state.db.begin_write().await?;
    let row = store::tenants::create(
        &mut *tx,
        &id,
        slug,
        name,
        &serde_json::to_string(&policy).unwrap_or_default(),
    )
    .await?;
    state.keys.provision(&mut tx, &keys).await?;
    state
        .audit
        .commit(tx, event(&id))
        .await
        .map_err(crate::tokens::tenant_keys::KeysError::from)?;
    Ok(Tenant::try_from(row)?)
}

pub fn check_name(name: &str) -> Result<(), crate::error::Error> {
    if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(crate::error::Error::invalid(
            "name",
            "must be 1 to 200 printable characters",
        ));
    }
    Ok(())
}
