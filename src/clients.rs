//! OIDC clients: validation of their registration, secrets (server-generated, shown once,
//! stored as HMAC-SHA-256 — never Argon2, so token requests do not pay for a password hash).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::TtlCache;
use crate::crypto::Keyring;
use crate::store::{self, Db, StoreError, clients::ClientRow};
use crate::tokens::Alg;

pub const GRANT_CODE: &str = "authorization_code";
pub const GRANT_REFRESH: &str = "refresh_token";
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_LOGIN_TICKET: &str = "urn:unicred:grant-type:login-ticket";
pub const GRANTS: [&str; 4] = [GRANT_CODE, GRANT_REFRESH, GRANT_CLIENT_CREDENTIALS, GRANT_LOGIN_TICKET];

pub const SCOPE_ADMIN: &str = "admin";
pub const SCOPE_TENANT_ADMIN: &str = "tenant-admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    None,
}

impl AuthMethod {
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::None => "none",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        [
            AuthMethod::ClientSecretBasic,
            AuthMethod::ClientSecretPost,
            AuthMethod::None,
        ]
        .into_iter()
        .find(|m| m.name() == s)
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub secret_hash: Option<String>,
    pub secret_key_version: Option<i64>,
    pub auth_method: AuthMethod,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    pub web_origins: Vec<String>,
    pub authn_api: bool,
    pub consent_required: bool,
    pub id_token_alg: Option<Alg>,
    pub platform_admin: bool,
    pub created_at: i64,
    /// Its own tokens issued before this (unix seconds) are refused: set by a secret rotation.
    pub tokens_valid_after: i64,
}

impl Client {
    pub fn has_grant(&self, g: &str) -> bool {
        self.grant_types.iter().any(|x| x == g)
    }
    pub fn is_public(&self) -> bool {
        self.auth_method == AuthMethod::None
    }

    pub fn to_row(&self) -> ClientRow {
        ClientRow {
            id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            name: self.name.clone(),
            secret_hash: self.secret_hash.clone(),
            secret_key_version: self.secret_key_version,
            token_endpoint_auth_method: self.auth_method.name().into(),
            redirect_uris: store::list(&self.redirect_uris),
            post_logout_redirect_uris: store::list(&self.post_logout_redirect_uris),
            grant_types: store::list(&self.grant_types),
            scopes: store::list(&self.scopes),
            resources: store::list(&self.resources),
            web_origins: store::list(&self.web_origins),
            authn_api: self.authn_api as i64,
            consent_required: self.consent_required as i64,
            id_token_signed_response_alg: self.id_token_alg.map(|a| a.name().to_string()),
            platform_admin: self.platform_admin as i64,
            created_at: self.created_at,
            updated_at: self.created_at,
            tokens_valid_after: self.tokens_valid_after,
        }
    }
}

impl TryFrom<ClientRow> for Client {
    type Error = StoreError;
    fn try_from(r: ClientRow) -> Result<Self, StoreError> {
        Ok(Client {
            auth_method: AuthMethod::parse(&r.token_endpoint_auth_method)
                .ok_or_else(|| StoreError::Corrupt("client auth method".into()))?,
            redirect_uris: store::parse_list(&r.redirect_uris)?,
            post_logout_redirect_uris: store::parse_list(&r.post_logout_redirect_uris)?,
            grant_types: store::parse_list(&r.grant_types)?,
            scopes: store::parse_list(&r.scopes)?,
            resources: store::parse_list(&r.resources)?,
            web_origins: store::parse_list(&r.web_origins)?,
            id_token_alg: r.id_token_signed_response_alg.as_deref().and_then(Alg::parse),
            id: r.id,
            tenant_id: r.tenant_id,
            name: r.name,
            secret_hash: r.secret_hash,
            secret_key_version: r.secret_key_version,
            authn_api: r.authn_api != 0,
            consent_required: r.consent_required != 0,
            platform_admin: r.platform_admin != 0,
            created_at: r.created_at,
            tokens_valid_after: r.tokens_valid_after,
        })
    }
}

/// A new secret: 256 bits, URL-safe. Returns `(secret, hmac_hex, hmac_version)`.
pub fn new_secret(keyring: &Keyring, client_id: &str) -> (String, String, i64) {
    let secret = crate::crypto::random_token::<32>();
    let (tag, version) = keyring.hmac_current(&[b"client-secret", client_id.as_bytes(), secret.as_bytes()]);
    (secret, tag, version as i64)
}

/// Constant-time check of a presented secret.
pub fn secret_matches(keyring: &Keyring, client: &Client, presented: &str) -> bool {
    match (&client.secret_hash, client.secret_key_version) {
        (Some(tag), Some(v)) if presented.len() <= 512 => keyring.hmac_verify(
            v as u32,
            &[b"client-secret", client.id.as_bytes(), presented.as_bytes()],
            tag,
        ),
        _ => false,
    }
}

/// Redirect URIs: absolute, no fragment; https, http only on loopback, or a private-use
/// scheme (`com.example.app:/cb`, RFC 8252 §7.1) for native apps.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.len() > 2048 {
        return Err("is longer than 2048 characters".into());
    }
    let u = url::Url::parse(uri).map_err(|_| "is not an absolute URI".to_string())?;
    if u.fragment().is_some() {
        return Err("must not contain a fragment".into());
    }
    match u.scheme() {
        "https" if u.host().is_some() => Ok(()),
        "http" if is_loopback(&u) => Ok(()),
        "http" => Err("may use http only on loopback".into()),
        s if s.contains('.') => Ok(()),
        _ => Err("uses a scheme that is not allowed".into()),
    }
}

pub fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// A scope token per RFC 6749 §3.3 (printable ASCII except space, `"` and `\`).
pub fn valid_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// Web origins for CORS: `scheme://host[:port]` only.
pub fn check_origin(o: &str) -> Result<(), String> {
    let u = url::Url::parse(o).map_err(|_| "is not an origin".to_string())?;
    if u.origin().ascii_serialization() != o {
        return Err("must be scheme://host[:port] with nothing after".into());
    }
    Ok(())
}

/// Clients by id, at most one second old (secret rotation and deletion reach every replica
/// within a second).
pub struct Clients {
    db: Db,
    cache: TtlCache<String, Arc<Client>>,
}

impl Clients {
    pub fn new(db: Db) -> Self {
        Clients {
            db,
            cache: TtlCache::new(Duration::from_secs(1), 100_000),
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Arc<Client>>, StoreError> {
        if id.is_empty() || id.len() > 128 {
            return Ok(None);
        }
        if let Some(c) = self.cache.get(&id.to_string()) {
            return Ok(Some(c));
        }
        let Some(row) = store::clients::get(&self.db, id).await? else {
            return Ok(None);
        };
        let c = Arc::new(Client::try_from(row)?);
        self.cache.put(c.id.clone(), c.clone());
        Ok(Some(c))
    }

    pub fn forget(&self, id: &str) {
        self.cache.remove(&id.to_string());
    }
}

/// A client registration or a change to one; absent fields keep their value.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientInput {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub post_logout_redirect_uris: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<AuthMethod>,
    pub scopes: Option<Vec<String>>,
    pub resources: Option<Vec<String>>,
    pub web_origins: Option<Vec<String>>,
    pub authn_api: Option<bool>,
    pub consent_required: Option<bool>,
    pub id_token_signed_response_alg: Option<Alg>,
}

fn bounded(field: &'static str, v: &[String], max: usize) -> Result<(), crate::error::Error> {
    if v.len() > max {
        return Err(crate::error::Error::invalid(
            field,
            format!("may hold at most {max} entries"),
        ));
    }
    Ok(())
}

impl ClientInput {
    /// Applies and validates. `platform_admin`: whether the caller may grant admin scopes.
    pub fn apply(
        self,
        c: &mut Client,
        tenant: &crate::tenants::Tenant,
        platform_admin: bool,
    ) -> Result<(), crate::error::Error> {
        use crate::error::Error;
        if let Some(n) = self.name {
            crate::tenants::check_name(&n)?;
            c.name = n;
        }
        if let Some(v) = self.redirect_uris {
            bounded("redirect_uris", &v, 50)?;
            for u in &v {
                check_redirect_uri(u).map_err(|r| Error::invalid("redirect_uris", format!("`{}` {r}", truncate(u))))?;
            }
            c.redirect_uris = v;
        }
        if let Some(v) = self.post_logout_redirect_uris {
            bounded("post_logout_redirect_uris", &v, 50)?;
            for u in &v {
                check_redirect_uri(u)
                    .map_err(|r| Error::invalid("post_logout_redirect_uris", format!("`{}` {r}", truncate(u))))?;
            }
            c.post_logout_redirect_uris = v;
        }
        if let Some(v) = self.grant_types {
            bounded("grant_types", &v, 4)?;
            if let Some(g) = v.iter().find(|g| !GRANTS.contains(&g.as_str())) {
                return Err(Error::invalid(
                    "grant_types",
                    format!("`{}` is not supported", truncate(g)),
                ));
            }
            c.grant_types = v;
        }
        if let Some(m) = self.token_endpoint_auth_method {
            c.auth_method = m;
        }
        if let Some(v) = self.scopes {
            bounded("scopes", &v, 50)?;
            for s in &v {
                if !valid_scope_token(s) {
                    return Err(Error::invalid("scopes", "contains an invalid scope token"));
                }
                let admin = s == SCOPE_ADMIN || s == SCOPE_TENANT_ADMIN;
                if admin && !platform_admin {
                    return Err(Error::Forbidden("only platform admins grant admin scopes"));
                }
                if s == SCOPE_ADMIN && !tenant.is_system() {
                    return Err(Error::invalid("scopes", "`admin` exists only in the system tenant"));
                }
            }
            c.scopes = v;
        }
        if let Some(v) = self.resources {
            bounded("resources", &v, 20)?;
            for r in &v {
                let ok = r.len() <= 512 && url::Url::parse(r).is_ok_and(|u| u.fragment().is_none());
                if !ok {
                    return Err(Error::invalid(
                        "resources",
                        "must be absolute URIs without a fragment (RFC 8707)",
                    ));
                }
            }
            c.resources = v;
        }
        if let Some(v) = self.web_origins {
            bounded("web_origins", &v, 20)?;
            for o in &v {
                check_origin(o).map_err(|r| Error::invalid("web_origins", r))?;
            }
            c.web_origins = v;
        }
        if let Some(b) = self.authn_api {
            c.authn_api = b;
        }
        if let Some(b) = self.consent_required {
            c.consent_required = b;
        }
        if let Some(a) = self.id_token_signed_response_alg {
            c.id_token_alg = Some(a);
        }
        // Cross-field rules.
        if c.is_public() && (c.has_grant(GRANT_CLIENT_CREDENTIALS) || c.has_grant(GRANT_LOGIN_TICKET) || c.authn_api) {
            return Err(Error::invalid(
                "grant_types",
                "public clients cannot use client_credentials, login tickets or the authn API",
            ));
        }
        if c.has_grant(GRANT_CODE) && c.redirect_uris.is_empty() {
            return Err(Error::invalid(
                "redirect_uris",
                "authorization_code needs at least one redirect URI",
            ));
        }
        let admin_scope = c.scopes.iter().any(|s| s == SCOPE_ADMIN || s == SCOPE_TENANT_ADMIN);
        if admin_scope && (c.is_public() || !c.has_grant(GRANT_CLIENT_CREDENTIALS)) {
            return Err(Error::invalid(
                "scopes",
                "admin scopes need a confidential client_credentials client",
            ));
        }
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A new client, checked and not yet stored, with its secret (shown once; `None` for public
/// clients).
pub fn new_client(
    state: &crate::app::AppState,
    tenant: &crate::tenants::Tenant,
    input: ClientInput,
    platform_admin: bool,
) -> Result<(Client, Option<String>), crate::error::Error> {
    if input.name.is_none() {
        return Err(crate::error::Error::invalid("name", "is required"));
    }
    let now = store::now();
    let mut c = Client {
        id: format!("uc_{}", crate::crypto::random_token::<16>()),
        tenant_id: tenant.id.clone(),
        name: String::new(),
        secret_hash: None,
        secret_key_version: None,
        auth_method: AuthMethod::ClientSecretBasic,
        redirect_uris: vec![],
        post_logout_redirect_uris: vec![],
        grant_types: vec![GRANT_CLIENT_CREDENTIALS.into()],
        scopes: vec![],
        resources: vec![],
        web_origins: vec![],
        authn_api: false,
        consent_required: false,
        id_token_alg: None,
        platform_admin: false,
        created_at: now,
        tokens_valid_after: 0,
    };
    if input.grant_types.is_none() && input.token_endpoint_auth_method == Some(AuthMethod::None) {
        c.grant_types = vec![GRANT_CODE.into()];
    }
    input.apply(&mut c, tenant, platform_admin)?;
    let secret = if c.is_public() {
        None
    } else {
        let (secret, tag, version) = new_secret(&state.keyring, &c.id);
        c.secret_hash = Some(tag);
        c.secret_key_version = Some(version);
        Some(secret)
    };
    Ok((c, secret))
}

/// A replacement secret for a confidential client, as [`new_secret`]. Once stored, the old one
/// stops working (within a second on every replica, after `state.clients.forget`).
pub fn rotated_secret(keyring: &Keyring, c: &Client) -> Result<(String, String, i64), crate::error::Error> {
    if c.is_public() {
        return Err(crate::error::Error::invalid(
            "token_endpoint_auth_method",
            "public clients have no secret",
        ));
    }
    Ok(new_secret(keyring, &c.id))
}
