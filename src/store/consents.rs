//! Consent remembered per user and client.

use sqlx::any::AnyExecutor;

use super::{Db, Result, now};

pub async fn get(db: &Db, tenant_id: &str, user_id: &str, client_id: &str) -> Result<Option<String>> {
    let r: Option<(String,)> =
        sqlx::query_as("select scopes from consents where tenant_id = $1 and user_id = $2 and client_id = $3")
            .bind(tenant_id)
            .bind(user_id)
            .bind(client_id)
            .fetch_optional(&db.pool)
            .await?;
    Ok(r.map(|r| r.0))
}

pub async fn put(db: &Db, tenant_id: &str, user_id: &str, client_id: &str, scopes: &str) -> Result<()> {
    sqlx::query(
        "insert into consents (tenant_id, user_id, client_id, scopes, created_at) values ($1, $2, $3, $4, $5) \
         on conflict (tenant_id, user_id, client_id) do update set scopes = excluded.scopes, created_at = excluded.created_at",
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(client_id)
    .bind(scopes)
    .bind(now())
    .execute(&db.pool)
    .await?;
    Ok(())
}

pub async fn delete(ex: impl AnyExecutor<'_>, tenant_id: &str, user_id: &str, client_id: &str) -> Result<bool> {
    let r = sqlx::query("delete from consents where tenant_id = $1 and user_id = $2 and client_id = $3")
        .bind(tenant_id)
        .bind(user_id)
        .bind(client_id)
        .execute(ex)
        .await?;
    Ok(r.rows_affected() == 1)
}
