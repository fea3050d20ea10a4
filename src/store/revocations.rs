use super::{Db, Result, now};

/// Records a revoked access token id until the token would have expired anyway.
pub async fn revoke(db: &Db, jti: &str, tenant_id: &str, expires_at: i64) -> Result<()> {
    sqlx::query(
        "insert into revoked_tokens (jti, tenant_id, expires_at) values ($1, $2, $3) on conflict (jti) do nothing",
    )
    .bind(jti)
    .bind(tenant_id)
    .bind(expires_at)
    .execute(&db.pool)
    .await?;
    Ok(())
}

pub async fn is_revoked(db: &Db, jti: &str) -> Result<bool> {
    let row: Option<(i64,)> = sqlx::query_as("select expires_at from revoked_tokens where jti = $1")
        .bind(jti)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.is_some())
}

/// Drops entries whose tokens have expired (they are refused by `exp` anyway).
pub async fn purge_expired(db: &Db) -> Result<u64> {
    let r = sqlx::query("delete from revoked_tokens where expires_at < $1")
        .bind(now() - 60)
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected())
}
