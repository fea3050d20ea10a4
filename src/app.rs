//! Building the application state, and serving it.

use std::net::SocketAddr;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::clients::Clients;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::password::{HashPool, Passwords};
use crate::store::Db;
use crate::tenants::{Argon2Policy, Tenants};
use crate::tokens::tenant_keys::KeyService;

/// The state every request shares: one `Arc`, so extractors clone a single pointer.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Handles to the service's parts.
pub struct Shared {
    pub config: Arc<Config>,
    pub db: Db,
    pub keyring: Arc<Keyring>,
    pub audit: Arc<crate::audit::Audit>,
    pub keys: Arc<KeyService>,
    pub tenants: Arc<Tenants>,
    pub clients: Arc<Clients>,
    pub passwords: Arc<Passwords>,
    pub limits: Arc<crate::http::ratelimit::RateLimits>,
    pub revocations: Arc<crate::tokens::revocations::Revocations>,
    pub verified: Arc<crate::tokens::access::VerifiedCache>,
    /// User status and `tokens_valid_after`, at most one second old.
    pub user_standing: Arc<crate::cache::TtlCache<String, (String, i64)>>,
    /// Web origins registered by a tenant's clients (CORS), at most one second old.
    pub origins: Arc<crate::cache::TtlCache<String, Arc<Vec<String>>>>,
    pub metrics: PrometheusHandle,
    /// The WebAuthn relying party (RP ID and origin from `public_url`).
    pub webauthn: Arc<webauthn_rs::Webauthn>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("keys: {0}")]
    Keys(#[from] crate::crypto::KeyError),
}

impl AppState {
    /// Connects, migrates, opens `keys/` (refusing mismatched keys) and starts the worker pool.
    pub async fn build(config: Config) -> Result<AppState, StartError> {
        let db = Db::connect(&config.database_url(), config.database_max_connections).await?;
        db.migrate().await?;
        let keyring = Arc::new(Keyring::open(&config.keys_dir, &db).await?);
        let pool = Arc::new(HashPool::new(config.hash_workers, config.hash_queue));
        let default = Argon2Policy {
            m_kib: config.argon2_m_kib,
            t: config.argon2_t,
            p: config.argon2_p,
        };
        Ok(AppState(Arc::new(Shared {
            keys: Arc::new(KeyService::new(db.clone(), keyring.clone(), pool.clone())),
            audit: crate::audit::Audit::start(db.clone(), keyring.clone()),
            tenants: Arc::new(Tenants::new(db.clone())),
            clients: Arc::new(Clients::new(db.clone())),
            passwords: Arc::new(Passwords::new(
                pool,
                keyring.clone(),
                db.clone(),
                default,
                config.argon2_max_m_kib,
            )),
            limits: Arc::new(crate::http::ratelimit::RateLimits::new(&config)),
            revocations: Arc::new(crate::tokens::revocations::Revocations::new(db.clone())),
            verified: Arc::new(crate::tokens::access::verified_cache()),
            user_standing: Arc::new(crate::cache::TtlCache::new(std::time::Duration::from_secs(1), 100_000)),
            origins: Arc::new(crate::cache::TtlCache::new(std::time::Duration::from_secs(1), 10_000)),
            metrics: crate::http::metrics::handle(),
            webauthn: crate::mfa::webauthn::build(&config),
            config: Arc::new(config),
            db,
            keyring,
        })))
    }
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = crate::http::router::router(state.clone());
    let checkpoints = tokio::spawn(wal_checkpoints(state.db.clone()));
    let maintenance = tokio::spawn(maintenance(state));
    let r = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await;
    maintenance.abort();
    checkpoints.abort();
    r
}

/// SQLite's write-ahead log is copied into the database file here, once a second, instead of
/// by the writer after its commits (see [`crate::store::Db::checkpoint`]).
async fn wal_checkpoints(db: crate::store::Db) {
    if db.backend != crate::store::Backend::Sqlite {
        return;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Err(e) = db.checkpoint().await {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

/// Periodic clean-up of expired rows.
async fn maintenance(state: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    let mut minutes: u64 = 0;
    loop {
        tick.tick().await;
        minutes += 1;
        // Hourly, sign each tenant's audit chain head (a checkpoint institutions can keep).
        if minutes.is_multiple_of(60) {
            checkpoint_all(&state).await;
            if let Err(e) = crate::store::throttle::purge_idle(&state.db).await {
                tracing::warn!(error = %e, "purging idle throttle counters failed");
            }
        }
        if let Err(e) = crate::store::revocations::purge_expired(&state.db).await {
            tracing::warn!(error = %e, "purging expired revocations failed");
        }
        if let Err(e) = crate::store::sessions::purge_expired(&state.db).await {
            tracing::warn!(error = %e, "purging expired sessions failed");
        }
        if let Err(e) = crate::store::tickets::purge_expired(&state.db).await {
            tracing::warn!(error = %e, "purging expired login tickets failed");
        }
        if let Err(e) = crate::store::factors::purge_expired_states(&state.db).await {
            tracing::warn!(error = %e, "purging expired sign-in state tokens failed");
        }
        state.limits.shrink();
        if let Err(e) = crate::store::keys::delete_expired(&state.db).await {
            tracing::warn!(error = %e, "deleting expired signing keys failed");
        }
    }
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Signs a checkpoint of every live tenant's audit chain (a no-op for an unchanged head).
async fn checkpoint_all(state: &AppState) {
    let mut after = String::new();
    loop {
        let page = match crate::store::tenants::list(&state.db, &after, 200).await {
            Ok(p) => p,
            Err(e) => return tracing::warn!(error = %e, "audit checkpoints: listing tenants failed"),
        };
        for t in &page {
            if let Err(e) = state.audit.checkpoint(&t.id).await {
                tracing::warn!(error = %e, tenant = %t.slug, "audit checkpoint failed");
            }
        }
        match page.last() {
            Some(last) if page.len() == 200 => after = last.slug.clone(),
            _ => return,
        }
    }
}
