use super::{Db, Result, now};

/// Records a revoked access token id until the token would have expired anyway.
pub async fn revoke(db: &Db, jti: &str, tenant_id: &str, expires_at: i64) -> Result<()> {
    sqlx::query(
        "insert into revoked_tokens (jti, tenant_id, expires_at, revoked_at) values ($1, $2, $3, $4) \
         on conflict (jti) do nothing",
    )
    .bind(jti)
    .bind(tenant_id)
    .bind(expires_at)
    .bind(now())
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Unexpired revocations recorded at or after `since` (unix seconds): `(jti, expires_at)`.
pub async fn since(db: &Db, since: i64) -> Result<Vec<(String, i64)>> {
    Ok(
        sqlx::query_as("select jti, expires_at from revoked_tokens where revoked_at >= $1 and expires_at >= $2")
            .bind(since)
            .bind(now())
            .fetch_all(&db.pool)
            .await?,
    )
}

/// Drops entries whose tokens have expired (they are refused by `exp` anyway).
pub async fn purge_expired(db: &Db) -> Result<u64> {
    let r = sqlx::query("delete from revoked_tokens where expires_at < $1")
        .bind(now() - 60)
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected())
}
