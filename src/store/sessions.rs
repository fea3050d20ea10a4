//! SSO sessions (by SHA-256 of the cookie value) and login transactions.

use sqlx::any::AnyExecutor;

use super::{Db, Result, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id_hash: String,
    pub tenant_id: String,
    pub user_id: String,
    pub auth_time: i64,
    pub amr: String,
    pub acr: String,
    pub created_at: i64,
    pub last_seen: i64,
    pub expires_at: i64,
}

pub async fn create(ex: impl AnyExecutor<'_>, s: &SessionRow) -> Result<()> {
    sqlx::query(
        "insert into sessions (id_hash, tenant_id, user_id, auth_time, amr, acr, created_at, last_seen, expires_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&s.id_hash)
    .bind(&s.tenant_id)
    .bind(&s.user_id)
    .bind(s.auth_time)
    .bind(&s.amr)
    .bind(&s.acr)
    .bind(s.created_at)
    .bind(s.last_seen)
    .bind(s.expires_at)
    .execute(ex)
    .await?;
    Ok(())
}

/// Ends session `old` in `tx` as session `new` of `user_id` begins in the same browser. When
/// `old` was the same user's, the refresh-token families begun in it move to `new`: signing in
/// again (step-up, `prompt=login`, `max_age`) must not end the user's other apps' sign-ins.
/// Another user's session just ends, and its families with it at their next refresh.
pub async fn hand_over(tx: &mut super::Tx, tenant_id: &str, old: &str, new: &str, user_id: &str) -> Result<()> {
    let own = sqlx::query("delete from sessions where id_hash = $1 and tenant_id = $2 and user_id = $3")
        .bind(old)
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    if own.rows_affected() > 0 {
        sqlx::query("update refresh_tokens set session_id = $1 where session_id = $2 and tenant_id = $3")
            .bind(new)
            .bind(old)
            .bind(tenant_id)
            .execute(&mut **tx)
            .await?;
    } else {
        delete(&mut **tx, tenant_id, old).await?;
    }
    Ok(())
}

/// A live session: not past its absolute limit, and used within `idle` seconds (and then
/// marked as used now).
pub async fn touch(db: &Db, tenant_id: &str, id_hash: &str, idle: i64) -> Result<Option<SessionRow>> {
    let t = now();
    Ok(sqlx::query_as(
        "update sessions set last_seen = $1 where id_hash = $2 and tenant_id = $3 and expires_at > $1 and last_seen + $4 > $1 \
         returning id_hash, tenant_id, user_id, auth_time, amr, acr, created_at, last_seen, expires_at",
    )
    .bind(t)
    .bind(id_hash)
    .bind(tenant_id)
    .bind(idle)
    .fetch_optional(&db.pool)
    .await?)
}

pub async fn delete(ex: impl AnyExecutor<'_>, tenant_id: &str, id_hash: &str) -> Result<()> {
    sqlx::query("delete from sessions where id_hash = $1 and tenant_id = $2")
        .bind(id_hash)
        .bind(tenant_id)
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn purge_expired(db: &Db) -> Result<()> {
    let t = now();
    sqlx::query("delete from sessions where expires_at < $1")
        .bind(t)
        .execute(&db.pool)
        .await?;
    sqlx::query("delete from login_transactions where expires_at < $1")
        .bind(t)
        .execute(&db.pool)
        .await?;
    sqlx::query("delete from auth_codes where expires_at < $1")
        .bind(t - 3600)
        .execute(&db.pool)
        .await?;
    sqlx::query("delete from refresh_tokens where expires_at < $1")
        .bind(t)
        .execute(&db.pool)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransactionRow {
    pub tenant_id: String,
    pub client_id: String,
    pub params: String,
    pub csrf: String,
}

pub async fn create_transaction(db: &Db, id_hash: &str, t: &TransactionRow, expires_at: i64) -> Result<()> {
    sqlx::query(
        "insert into login_transactions (id_hash, tenant_id, client_id, params, csrf, expires_at) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id_hash)
    .bind(&t.tenant_id)
    .bind(&t.client_id)
    .bind(&t.params)
    .bind(&t.csrf)
    .bind(expires_at)
    .execute(&db.pool)
    .await?;
    Ok(())
}

pub async fn transaction(db: &Db, tenant_id: &str, id_hash: &str) -> Result<Option<TransactionRow>> {
    Ok(sqlx::query_as(
        "select tenant_id, client_id, params, csrf from login_transactions where id_hash = $1 and tenant_id = $2 and expires_at > $3",
    )
    .bind(id_hash)
    .bind(tenant_id)
    .bind(now())
    .fetch_optional(&db.pool)
    .await?)
}

/// Ends a transaction; true if this call ended it (so it completes once).
pub async fn end_transaction(db: &Db, id_hash: &str) -> Result<bool> {
    let r = sqlx::query("delete from login_transactions where id_hash = $1")
        .bind(id_hash)
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn for_user(db: &Db, tenant_id: &str, user_id: &str) -> Result<Vec<SessionRow>> {
    Ok(sqlx::query_as(
        "select id_hash, tenant_id, user_id, auth_time, amr, acr, created_at, last_seen, expires_at from sessions \
         where tenant_id = $1 and user_id = $2 and expires_at > $3 order by created_at",
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(now())
    .fetch_all(&db.pool)
    .await?)
}

/// Ends every session of a user (and the refresh tokens bound to them), in the caller's write
/// transaction with the change that calls for it.
pub async fn delete_for_user(tx: &mut super::Tx, tenant_id: &str, user_id: &str) -> Result<()> {
    sqlx::query(
        "update refresh_tokens set revoked_at = $1 where tenant_id = $2 and user_id = $3 and revoked_at is null",
    )
    .bind(now())
    .bind(tenant_id)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("delete from sessions where tenant_id = $1 and user_id = $2")
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
