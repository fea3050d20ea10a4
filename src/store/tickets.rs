//! One-time login tickets from `/authn`, redeemed at `/token` by the same client.

use super::{Db, Result, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Ticket {
    pub tenant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub auth_time: i64,
    pub amr: String,
    pub acr: String,
}

pub async fn create(db: &Db, id_hash: &str, t: &Ticket, expires_at: i64) -> Result<()> {
    sqlx::query(
        "insert into login_tickets (id_hash, tenant_id, client_id, user_id, auth_time, amr, acr, expires_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id_hash)
    .bind(&t.tenant_id)
    .bind(&t.client_id)
    .bind(&t.user_id)
    .bind(t.auth_time)
    .bind(&t.amr)
    .bind(&t.acr)
    .bind(expires_at)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Marks the ticket used and returns it, once: a second redemption, an expired or unknown
/// ticket all return `None`.
pub async fn redeem(db: &Db, id_hash: &str) -> Result<Option<Ticket>> {
    let t = now();
    Ok(sqlx::query_as(
        "update login_tickets set used_at = $1 where id_hash = $2 and used_at is null and expires_at > $1 \
         returning tenant_id, client_id, user_id, auth_time, amr, acr",
    )
    .bind(t)
    .bind(id_hash)
    .fetch_optional(&db.pool)
    .await?)
}

pub async fn purge_expired(db: &Db) -> Result<u64> {
    let r = sqlx::query("delete from login_tickets where expires_at < $1")
        .bind(now() - 3600)
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected())
}
