//! Key fingerprints (`key_versions`) and per-tenant signing keys.

use sqlx::any::AnyExecutor;

use super::{Db, Result, now};

pub async fn versions(db: &Db) -> Result<Vec<(String, i64, String)>> {
    Ok(
        sqlx::query_as("select kind, version, fingerprint from key_versions order by kind, version")
            .fetch_all(&db.pool)
            .await?,
    )
}

/// Records a key version; an existing record for the same (kind, version) is left as it is,
/// so the caller re-reads and compares.
pub async fn record_version(db: &Db, kind: &str, version: i64, fingerprint: &str) -> Result<()> {
    sqlx::query(
        "insert into key_versions (kind, version, fingerprint, created_at) values ($1, $2, $3, $4) \
         on conflict (kind, version) do nothing",
    )
    .bind(kind)
    .bind(version)
    .bind(fingerprint)
    .bind(now())
    .execute(&db.pool)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub tenant_id: String,
    pub alg: String,
    pub state: String,
    pub public_jwk: String,
    pub private_ct: Vec<u8>,
    pub master_version: i64,
    pub created_at: i64,
    pub retire_until: Option<i64>,
}

const COLS: &str = "kid, tenant_id, alg, state, public_jwk, private_ct, master_version, created_at, retire_until";

/// Published keys of a tenant: next, current, and retired ones still within their window.
pub async fn published(ex: impl AnyExecutor<'_>, tenant_id: &str) -> Result<Vec<SigningKeyRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLS} from signing_keys where tenant_id = $1 and (retire_until is null or retire_until > $2) order by created_at, kid"
    )))
    .bind(tenant_id)
    .bind(now())
    .fetch_all(ex)
    .await?)
}

/// The tenant's published keys, read in the caller's write transaction after locking the
/// tenant's row (PostgreSQL `for update`; SQLite's write lock already serialises writers), so
/// that two rotations of one tenant run one after the other, each on what the other left.
pub async fn published_for_update(tx: &mut super::Tx, tenant_id: &str) -> Result<Vec<SigningKeyRow>> {
    if tx.backend_name() != "SQLite" {
        sqlx::query("select 1 from tenants where id = $1 for update")
            .bind(tenant_id)
            .execute(&mut **tx)
            .await?;
    }
    published(&mut **tx, tenant_id).await
}

pub async fn all(db: &Db) -> Result<Vec<SigningKeyRow>> {
    Ok(
        sqlx::query_as(sqlx::AssertSqlSafe(format!("select {COLS} from signing_keys")))
            .fetch_all(&db.pool)
            .await?,
    )
}

pub async fn tenant_of_kid(db: &Db, kid: &str) -> Result<Option<String>> {
    let r: Option<(String,)> = sqlx::query_as("select tenant_id from signing_keys where kid = $1")
        .bind(kid)
        .fetch_optional(&db.pool)
        .await?;
    Ok(r.map(|r| r.0))
}

pub async fn insert<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(e: E, k: &SigningKeyRow) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "insert into signing_keys ({COLS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    )))
    .bind(&k.kid)
    .bind(&k.tenant_id)
    .bind(&k.alg)
    .bind(&k.state)
    .bind(&k.public_jwk)
    .bind(&k.private_ct)
    .bind(k.master_version)
    .bind(k.created_at)
    .bind(k.retire_until)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn set_state<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(
    e: E,
    kid: &str,
    state: &str,
    retire_until: Option<i64>,
) -> Result<()> {
    sqlx::query("update signing_keys set state = $1, retire_until = $2 where kid = $3")
        .bind(state)
        .bind(retire_until)
        .bind(kid)
        .execute(e)
        .await?;
    Ok(())
}

pub async fn delete<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(e: E, kid: &str) -> Result<()> {
    sqlx::query("delete from signing_keys where kid = $1")
        .bind(kid)
        .execute(e)
        .await?;
    Ok(())
}

/// Deletes retired keys past their window.
pub async fn delete_expired(db: &Db) -> Result<u64> {
    let r = sqlx::query("delete from signing_keys where retire_until is not null and retire_until <= $1")
        .bind(now())
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected())
}

pub async fn reencrypt<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(
    e: E,
    kid: &str,
    ct: &[u8],
    master_version: i64,
) -> Result<()> {
    sqlx::query("update signing_keys set private_ct = $1, master_version = $2 where kid = $3")
        .bind(ct)
        .bind(master_version)
        .bind(kid)
        .execute(e)
        .await?;
    Ok(())
}

pub async fn count_by_master_version(db: &Db) -> Result<Vec<(i64, i64)>> {
    Ok(
        sqlx::query_as("select master_version, count(*) from signing_keys group by master_version order by 1")
            .fetch_all(&db.pool)
            .await?,
    )
}
