//! Refresh-token families (RFC 6819 §5.2.2.3): every use rotates the token; presenting a used
//! one revokes the whole family.

use sqlx::any::AnyExecutor;

use super::{Db, Result, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshRow {
    pub family_id: String,
    pub tenant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub session_id: Option<String>,
    pub scope: String,
    pub auth_time: i64,
    pub acr: String,
    pub amr: String,
    pub family_created_at: i64,
    pub expires_at: i64,
}

const COLS: &str =
    "family_id, tenant_id, client_id, user_id, session_id, scope, auth_time, acr, amr, family_created_at, expires_at";

pub async fn create<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(
    e: E,
    token_hash: &str,
    r: &RefreshRow,
) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "insert into refresh_tokens (token_hash, {COLS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    )))
    .bind(token_hash)
    .bind(&r.family_id)
    .bind(&r.tenant_id)
    .bind(&r.client_id)
    .bind(&r.user_id)
    .bind(&r.session_id)
    .bind(&r.scope)
    .bind(r.auth_time)
    .bind(&r.acr)
    .bind(&r.amr)
    .bind(r.family_created_at)
    .bind(r.expires_at)
    .execute(e)
    .await?;
    Ok(())
}

pub enum Used {
    Fresh(RefreshRow),
    /// Already used (or its family revoked): reuse detected.
    Reused {
        family_id: String,
        tenant_id: String,
        client_id: String,
    },
    Unknown,
}

/// Marks the token used, once, inside the caller's transaction.
///
/// A family with any revoked token is dead as a whole. On PostgreSQL (READ COMMITTED) a
/// revocation racing a rotation misses the token that rotation inserts, as the revoking
/// UPDATE sees only rows that existed when it started; this check refuses that token.
pub async fn use_token(tx: &mut sqlx::Transaction<'static, sqlx::Any>, token_hash: &str) -> Result<Used> {
    let t = now();
    let fresh: Option<RefreshRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update refresh_tokens set used_at = $1 where token_hash = $2 and used_at is null and revoked_at is null \
         and expires_at > $1 and not exists (select 1 from refresh_tokens o \
         where o.family_id = refresh_tokens.family_id and o.revoked_at is not null) returning {COLS}"
    )))
    .bind(t)
    .bind(token_hash)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(r) = fresh {
        return Ok(Used::Fresh(r));
    }
    let seen: Option<(String, String, String, i64)> =
        sqlx::query_as("select family_id, tenant_id, client_id, expires_at from refresh_tokens where token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(match seen {
        Some((family_id, tenant_id, client_id, exp)) if exp > t => Used::Reused {
            family_id,
            tenant_id,
            client_id,
        },
        _ => Used::Unknown,
    })
}

pub async fn revoke_family<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(e: E, family_id: &str) -> Result<()> {
    sqlx::query("update refresh_tokens set revoked_at = $1 where family_id = $2 and revoked_at is null")
        .bind(now())
        .bind(family_id)
        .execute(e)
        .await?;
    Ok(())
}

/// Every refresh token a user holds for one client (the user withdrew the app's consent).
pub async fn revoke_for_client(
    ex: impl AnyExecutor<'_>,
    tenant_id: &str,
    user_id: &str,
    client_id: &str,
) -> Result<()> {
    sqlx::query(
        "update refresh_tokens set revoked_at = $1 \
         where tenant_id = $2 and user_id = $3 and client_id = $4 and revoked_at is null",
    )
    .bind(now())
    .bind(tenant_id)
    .bind(user_id)
    .bind(client_id)
    .execute(ex)
    .await?;
    Ok(())
}

pub async fn revoke_session(ex: impl AnyExecutor<'_>, session_id: &str) -> Result<()> {
    sqlx::query("update refresh_tokens set revoked_at = $1 where session_id = $2 and revoked_at is null")
        .bind(now())
        .bind(session_id)
        .execute(ex)
        .await?;
    Ok(())
}

/// The family a (current) refresh token belongs to, for RFC 7009 revocation by its client.
pub async fn family_of(db: &Db, token_hash: &str) -> Result<Option<(String, String, String)>> {
    Ok(
        sqlx::query_as("select family_id, tenant_id, client_id from refresh_tokens where token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&db.pool)
            .await?,
    )
}
