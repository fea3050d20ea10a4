//! The only module that speaks SQL. One implementation over sqlx's `Any` driver: both
//! backends accept the same lower-case SQL with `$n` placeholders, text ids, integer times
//! and 0/1 flags, so the suite that runs on both really exercises the same code.

pub mod audit;
pub mod clients;
pub mod codes;
pub mod consents;
pub mod factors;
pub mod keys;
pub mod refresh;
pub mod revocations;
pub mod sessions;
pub mod tenants;
pub mod throttle;
pub mod tickets;
pub mod users;
pub mod webauthn;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Connection, Executor};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A write transaction ([`Db::begin_write`]).
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

impl StoreError {
    /// The database cannot be reached right now (pool timeout, connection lost, the server
    /// shutting down or starting up): a 503 with `Retry-After`, not a 500, so clients and
    /// proxies retry instead of giving up. A pooled PostgreSQL connection used within the last
    /// second is not pinged first, so a server stop shows up as the next query's error:
    /// SQLSTATE class 08 (connection exception) or 57P01–57P03 (admin/crash shutdown, cannot
    /// connect now).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed) => true,
            StoreError::Db(sqlx::Error::Database(d)) => d
                .code()
                .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
            _ => false,
        }
    }

    /// The request carried text the database refuses: PostgreSQL takes no NUL character in a
    /// text value (SQLSTATE 22021), which anyone can put in an id, a query or a form field. The
    /// request's fault — a 400, not a 500 with an error in the log.
    pub fn is_bad_text(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::Database(d))
            if d.code().is_some_and(|c| matches!(&*c, "22021" | "22P05")))
    }
}

/// Turns a unique-constraint violation into `Conflict(what)`.
pub(crate) fn on_unique(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match e.as_database_error() {
        Some(d) if d.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Db(e),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// SQLite: the one connection write transactions use (see [`Db::begin_write`]).
    writer: Option<AnyPool>,
}

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Db {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("sqlite:") {
            let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or_default();
            if let Some(dir) = std::path::Path::new(path).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Corrupt(format!("cannot create {}: {e}", dir.display())))?;
            }
            let url = if url.contains('?') {
                url.to_string()
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            (Backend::Postgres, url.to_string())
        };
        let options = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
        let pool = pool_options(backend, max_connections, &[])
            .connect_with(options.clone())
            .await?;
        let writer = match backend {
            // No checkpoint after its commits: `Db::checkpoint` does it off this path.
            Backend::Sqlite => Some(
                pool_options(backend, 1, &["pragma wal_autocheckpoint = 0"])
                    .connect_with(options)
                    .await?,
            ),
            Backend::Postgres => None,
        };
        Ok(Db { pool, backend, writer })
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        }
    }

    /// Applies pending migrations (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        self.migrator()
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Corrupt(format!("migration failed: {e}")))
    }

    /// True when every embedded migration has been applied.
    pub async fn is_migrated(&self) -> Result<bool> {
        let applied: Vec<(i64,)> = sqlx::query_as("select version from _sqlx_migrations where success")
            .fetch_all(&self.pool)
            .await?;
        Ok(self
            .migrator()
            .iter()
            .all(|m| applied.iter().any(|(v,)| *v == m.version)))
    }

    /// SQLite: copies the WAL's committed pages into the database file without blocking the
    /// writer (`PASSIVE`, from a pool connection). The writer connection does not checkpoint
    /// after its own commits (`wal_autocheckpoint = 0`): called about once a second, a page
    /// that many commits rewrote is copied once, and no commit waits for a checkpoint. The
    /// server calls this periodically; a short-lived command leaves it to the last connection's
    /// close. PostgreSQL: nothing to do.
    pub async fn checkpoint(&self) -> Result<()> {
        if self.backend == Backend::Sqlite {
            sqlx::query("pragma wal_checkpoint(passive)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Where single write statements that must not wait behind the pool's other writers go:
    /// SQLite's writer connection (see [`Db::begin_write`]), else the pool.
    pub fn writer(&self) -> &AnyPool {
        self.writer.as_ref().unwrap_or(&self.pool)
    }

    /// A write transaction. On SQLite it runs on the process's one writer connection and takes
    /// the write lock up front (`begin immediate`), so a read-then-write transaction cannot
    /// fail with SQLITE_BUSY half-way, transactions queue in order on the pool instead of
    /// polling the lock, and the writer's page cache stays warm (SQLite drops a connection's
    /// cache whenever another connection wrote since its last transaction).
    pub async fn begin_write(&self) -> Result<Tx> {
        Ok(match &self.writer {
            Some(writer) => writer.begin_with("begin immediate").await?,
            None => self.pool.begin().await?,
        })
    }
}

/// `extra`: SQLite pragmas this pool's connections run after [`SQLITE_PRAGMAS`].
fn pool_options(backend: Backend, max_connections: u32, extra: &'static [&'static str]) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings every connection it hands out: a round trip before each query. A
        // SQLite connection cannot go away; a PostgreSQL one used within the last second
        // was alive then, so only one idle for longer (a database restart or a proxy may
        // have cut it meanwhile) is pinged, and replaced if the ping fails.
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if backend == Backend::Postgres && meta.idle_for > Duration::from_secs(1) {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    for pragma in SQLITE_PRAGMAS.iter().chain(extra) {
                        conn.execute(*pragma).await?;
                    }
                }
                Ok(())
            })
        })
}

/// Every SQLite connection's settings: WAL lets readers run beside the writer; busy_timeout
/// makes writers queue instead of failing.
const SQLITE_PRAGMAS: &[&str] = &[
    "pragma journal_mode = wal",
    "pragma synchronous = normal",
    "pragma busy_timeout = 10000",
    "pragma foreign_keys = on",
];

/// Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// JSON-encoded list columns.
pub(crate) fn list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn parse_list(s: &str) -> Result<Vec<String>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("list column: {e}")))
}
