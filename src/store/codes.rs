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
    Fresh(CodeRow),
    /// Presented before: whatever it produced must be revoked.
    Replayed {
        issued_jti: Option<String>,
        issued_family: Option<String>,
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
        return Ok(Redeemed::Fresh(c));
    }
    #[derive(sqlx::FromRow)]
    struct Seen {
        issued_jti: Option<String>,
        issued_family: Option<String>,
        tenant_id: String,
        used_at: Option<i64>,
    }
    let seen: Option<Seen> =
        sqlx::query_as("select issued_jti, issued_family, tenant_id, used_at from auth_codes where code_hash = $1")
            .bind(code_hash)
            .fetch_optional(&db.pool)
            .await?;
    Ok(match seen {
        Some(s) if s.used_at.is_some() => Redeemed::Replayed {
            issued_jti: s.issued_jti,
            issued_family: s.issued_family,
            tenant_id: s.tenant_id,
        },
        _ => Redeemed::Unknown,
    })
}

pub async fn record_issued(db: &Db, code_hash: &str, jti: &str, family: Option<&str>) -> Result<()> {
    sqlx::query("update auth_codes set issued_jti = $1, issued_family = $2 where code_hash = $3")
        .bind(jti)
        .bind(family)
        .bind(code_hash)
        .execute(&db.pool)
        .await?;
    Ok(())
}
