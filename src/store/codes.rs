//! Authorization codes: single use, short-lived, bound to client, redirect URI and PKCE.

use super::{Db, Result, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CodeRow {
    pub tenant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub session_id: Option<String>,
    pub redirect_uri: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub auth_time: i64,
    pub acr: String,
    pub amr: String,
}

pub async fn create(db: &Db, code_hash: &str, c: &CodeRow, expires_at: i64) -> Result<()> {
    sqlx::query(
        "insert into auth_codes (code_hash, tenant_id, client_id, user_id, session_id, redirect_uri, scope, nonce, \
         code_challenge, auth_time, acr, amr, expires_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(code_hash)
    .bind(&c.tenant_id)
    .bind(&c.client_id)
    .bind(&c.user_id)
    .bind(&c.session_id)
    .bind(&c.redirect_uri)
    .bind(&c.scope)
    .bind(&c.nonce)
    .bind(&c.code_challenge)
    .bind(c.auth_time)
    .bind(&c.acr)
    .bind(&c.amr)
    .bind(expires_at)
    .execute(&db.pool)
    .await?;
    Ok(())
}

const COLS: &str =
    "tenant_id, client_id, user_id, session_id, redirect_uri, scope, nonce, code_challenge, auth_time, acr, amr";

pub enum Redeemed {
    Fresh(Box<CodeRow>),
    /// Presented before: whatever it produced must be revoked.
    Replayed {
        tenant_id: String,
    },
    Unknown,
}

/// Marks the code used, once.
pub async fn redeem(db: &Db, code_hash: &str) -> Result<Redeemed> {
    let t = now();
    let fresh: Option<CodeRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update auth_codes set used_at = $1 where code_hash = $2 and used_at is null and expires_at > $1 returning {COLS}"
    )))
    .bind(t)
    .bind(code_hash)
    .fetch_optional(&db.pool)
    .await?;
    if let Some(c) = fresh {
        return Ok(Redeemed::Fresh(Box::new(c)));
    }
    let seen: Option<(String, Option<i64>)> =
        sqlx::query_as("select tenant_id, used_at from auth_codes where code_hash = $1")
            .bind(code_hash)
            .fetch_optional(&db.pool)
            .await?;
    Ok(match seen {
        Some((tenant_id, Some(_))) => Redeemed::Replayed { tenant_id },
        _ => Redeemed::Unknown,
    })
}

/// Records what the code's redemption issued. False when a replay of the code came first
/// (see [`replayed`]): the caller must then revoke what it issued.
pub async fn record_issued(db: &Db, code_hash: &str, jti: &str, family: Option<&str>) -> Result<bool> {
    let r = sqlx::query(
        "update auth_codes set issued_jti = $1, issued_family = $2 where code_hash = $3 and issued_jti is null",
    )
    .bind(jti)
    .bind(family)
    .bind(code_hash)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// For a replayed code: what its redemption issued, to revoke; or, while that redemption has
/// not recorded it yet, `None` after marking the code (an empty `issued_jti`) so that the
/// redemption revokes its tokens itself. Either way nothing issued for a replayed code lasts.
pub async fn replayed(db: &Db, code_hash: &str) -> Result<Option<(String, Option<String>)>> {
    let marked = sqlx::query("update auth_codes set issued_jti = '' where code_hash = $1 and issued_jti is null")
        .bind(code_hash)
        .execute(&db.pool)
        .await?;
    if marked.rows_affected() == 1 {
        return Ok(None);
    }
    let issued: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("select issued_jti, issued_family from auth_codes where code_hash = $1")
            .bind(code_hash)
            .fetch_optional(&db.pool)
            .await?;
    Ok(issued.and_then(|(jti, family)| jti.filter(|j| !j.is_empty()).map(|j| (j, family))))
}
