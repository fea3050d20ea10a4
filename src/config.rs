//! Configuration: defaults, then a TOML file (`--config` / `UNICRED_CONFIG`), then `UNICRED_*`
//! environment variables. Unknown keys and bad values fail at start with the key named.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use url::Url;

/// Errors are one line that names the offending key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// sqlx URL; empty means `sqlite://{data_dir}/unicred.db`.
    pub database_url: Secret,
    pub data_dir: PathBuf,
    pub keys_dir: PathBuf,
    pub listen: SocketAddr,
    pub public_url: Url,
    pub database_max_connections: u32,
    pub log_format: LogFormat,
    pub hash_workers: usize,
    pub hash_queue: usize,
    pub argon2_m_kib: u32,
    pub argon2_t: u32,
    pub argon2_p: u32,
    /// Upper bound on the Argon2 memory a tenant policy or an imported hash may ask for.
    pub argon2_max_m_kib: u32,
    pub ip_rate_per_second: u32,
    pub ip_rate_burst: u32,
    /// Per-client token bucket on `/authn` (its callers are institution back-ends).
    pub client_rate_per_second: u32,
    pub client_rate_burst: u32,
    pub max_body_bytes: usize,
    pub import_max_body_bytes: usize,
    pub request_timeout_seconds: u64,
    #[serde(deserialize_with = "string_or_list")]
    pub trusted_proxies: Vec<IpNet>,
}

/// A string that never appears in `Debug` output (database URLs carry passwords).
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"<redacted>\"")
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: Secret::default(),
            data_dir: PathBuf::from("./data"),
            keys_dir: PathBuf::from("./keys"),
            listen: "127.0.0.1:8080".parse().unwrap(),
            public_url: Url::parse("http://localhost:8080").unwrap(),
            // 2 cores: a handful of connections saturate them; with PostgreSQL keep
            // replicas × database_max_connections below the server's max_connections.
            database_max_connections: 8,
            log_format: LogFormat::Pretty,
            hash_workers: cores(),
            hash_queue: 64,
            argon2_m_kib: 19456,
            argon2_t: 2,
            argon2_p: 1,
            argon2_max_m_kib: 262144,
            ip_rate_per_second: 20,
            ip_rate_burst: 40,
            client_rate_per_second: 200,
            client_rate_burst: 400,
            max_body_bytes: 65536,
            import_max_body_bytes: 8 * 1024 * 1024,
            request_timeout_seconds: 30,
            trusted_proxies: Vec::new(),
        }
    }
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    let items = match Raw::deserialize(d)? {
        Raw::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Raw::Many(v) => v,
    };
    items
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a CIDR")))
        })
        .collect()
}

/// The keys a config file or `UNICRED_*` variable may set.
const KEYS: &[&str] = &[
    "database_url",
    "data_dir",
    "keys_dir",
    "listen",
    "public_url",
    "database_max_connections",
    "log_format",
    "hash_workers",
    "hash_queue",
    "argon2_m_kib",
    "argon2_t",
    "argon2_p",
    "argon2_max_m_kib",
    "ip_rate_per_second",
    "ip_rate_burst",
    "client_rate_per_second",
    "client_rate_burst",
    "max_body_bytes",
    "import_max_body_bytes",
    "request_timeout_seconds",
    "trusted_proxies",
];

impl Config {
    /// Loads the layers. `env` is passed in (not read here) so tests can supply their own.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut table = toml::Table::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            table = text
                .parse::<toml::Table>()
                .map_err(|e| ConfigError(format!("{}: {}", path.display(), one_line(&e))))?;
        }
        for (name, value) in env {
            let Some(key) = name.strip_prefix("UNICRED_") else {
                continue;
            };
            if key == "CONFIG" {
                continue;
            }
            let key = key.to_ascii_lowercase();
            if !KEYS.contains(&key.as_str()) {
                return Err(ConfigError(format!("unknown variable {name}")));
            }
            table.insert(key, env_value(&value));
        }
        for key in table.keys() {
            if !KEYS.contains(&key.as_str()) {
                return Err(ConfigError(format!("unknown key `{key}`")));
            }
        }
        let config = match Config::deserialize(toml::Value::Table(table.clone())) {
            Ok(c) => c,
            Err(_) => return Err(name_bad_key(&table)),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("`{key}` {why}")));
        if !matches!(self.public_url.scheme(), "http" | "https") {
            return bad("public_url", "must be an http or https URL");
        }
        match self.public_url.host() {
            Some(url::Host::Domain(_)) => {}
            _ => return bad("public_url", "must name a host, not an IP (it is the WebAuthn RP ID)"),
        }
        if self.public_url.query().is_some() || self.public_url.fragment().is_some() {
            return bad("public_url", "must not have a query or fragment");
        }
        if self.argon2_m_kib < 19456 || self.argon2_t < 2 || self.argon2_p < 1 {
            return bad(
                "argon2_m_kib",
                "with argon2_t/argon2_p is below OWASP's minimum (19456 KiB, t=2, p=1)",
            );
        }
        if self.argon2_p > 16 || self.argon2_t > 64 {
            return bad("argon2_p", "or argon2_t is unreasonably high");
        }
        if self.argon2_max_m_kib < self.argon2_m_kib {
            return bad("argon2_max_m_kib", "must be at least argon2_m_kib");
        }
        if self.hash_workers == 0 || self.hash_workers > 256 {
            return bad("hash_workers", "must be between 1 and 256");
        }
        if self.hash_queue == 0 {
            return bad("hash_queue", "must be at least 1");
        }
        if self.database_max_connections == 0 {
            return bad("database_max_connections", "must be at least 1");
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024");
        }
        if self.request_timeout_seconds == 0 {
            return bad("request_timeout_seconds", "must be at least 1");
        }
        let url = self.database_url();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return bad("database_url", "must be a sqlite: or postgres:// URL");
        }
        Ok(())
    }

    /// The effective database URL.
    pub fn database_url(&self) -> String {
        if self.database_url.0.is_empty() {
            format!("sqlite://{}/unicred.db", self.data_dir.display())
        } else {
            self.database_url.0.clone()
        }
    }

    /// `public_url` without a trailing slash.
    pub fn base_url(&self) -> String {
        self.public_url.as_str().trim_end_matches('/').to_string()
    }

    pub fn issuer(&self, tenant_slug: &str) -> String {
        format!("{}/t/{tenant_slug}", self.base_url())
    }

    pub fn admin_audience(&self) -> String {
        format!("{}/admin/v1", self.base_url())
    }

    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }
}

/// An environment value is read as a TOML value when it parses as one (numbers, booleans,
/// arrays), else as a plain string.
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table())
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// serde's error for the whole table may not say which key failed: try each key alone.
fn name_bad_key(table: &toml::Table) -> ConfigError {
    let sorted: BTreeMap<_, _> = table.iter().collect();
    for (key, value) in sorted {
        let mut one = toml::Table::new();
        one.insert(key.clone(), value.clone());
        if let Err(e) = Config::deserialize(toml::Value::Table(one)) {
            return ConfigError(format!("`{key}`: {}", one_line(&e)));
        }
    }
    ConfigError("invalid configuration".into())
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.database_url(), "sqlite://./data/unicred.db");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.issuer("bank"), "http://localhost:8080/t/bank");
    }

    #[test]
    fn env_overrides_and_types() {
        let c = Config::load(
            None,
            env(&[
                ("UNICRED_HASH_WORKERS", "3"),
                ("UNICRED_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.hash_workers, 3);
        assert_eq!(c.trusted_proxies.len(), 2);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::load(None, env(&[("UNICRED_HASH_WORKERS", "many")])).unwrap_err();
        assert!(e.to_string().contains("hash_workers"), "{e}");
        let e = Config::load(None, env(&[("UNICRED_NOPE", "1")])).unwrap_err();
        assert!(e.to_string().contains("UNICRED_NOPE"), "{e}");
        let e = Config::load(None, env(&[("UNICRED_PUBLIC_URL", "http://127.0.0.1:8080")])).unwrap_err();
        assert!(e.to_string().contains("public_url"), "{e}");
        let e = Config::load(None, env(&[("UNICRED_ARGON2_M_KIB", "1024")])).unwrap_err();
        assert!(e.to_string().contains("argon2_m_kib"), "{e}");
    }

    #[test]
    fn database_password_is_not_in_debug() {
        let c = Config::load(None, env(&[("UNICRED_DATABASE_URL", "postgres://u:hunter2@db/x")])).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
