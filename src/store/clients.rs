use sqlx::any::AnyExecutor;

use super::{Db, Result, StoreError, now, on_unique};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub secret_hash: Option<String>,
    pub secret_key_version: Option<i64>,
    pub token_endpoint_auth_method: String,
    pub redirect_uris: String,
    pub post_logout_redirect_uris: String,
    pub grant_types: String,
    pub scopes: String,
    pub resources: String,
    pub web_origins: String,
    pub authn_api: i64,
    pub consent_required: i64,
    pub id_token_signed_response_alg: Option<String>,
    pub platform_admin: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The client's own tokens issued before this (unix seconds) are refused.
    pub tokens_valid_after: i64,
}

const COLS: &str = "id, tenant_id, name, secret_hash, secret_key_version, token_endpoint_auth_method, redirect_uris, \
    post_logout_redirect_uris, grant_types, scopes, resources, web_origins, authn_api, consent_required, \
    id_token_signed_response_alg, platform_admin, created_at, updated_at, tokens_valid_after";

pub async fn create(ex: impl AnyExecutor<'_>, c: &ClientRow) -> Result<()> {
    sqlx::query(
        "insert into clients (id, tenant_id, name, secret_hash, secret_key_version, token_endpoint_auth_method, \
         redirect_uris, post_logout_redirect_uris, grant_types, scopes, resources, web_origins, authn_api, \
         consent_required, id_token_signed_response_alg, platform_admin, created_at, updated_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17)",
    )
    .bind(&c.id)
    .bind(&c.tenant_id)
    .bind(&c.name)
    .bind(&c.secret_hash)
    .bind(c.secret_key_version)
    .bind(&c.token_endpoint_auth_method)
    .bind(&c.redirect_uris)
    .bind(&c.post_logout_redirect_uris)
    .bind(&c.grant_types)
    .bind(&c.scopes)
    .bind(&c.resources)
    .bind(&c.web_origins)
    .bind(c.authn_api)
    .bind(c.consent_required)
    .bind(&c.id_token_signed_response_alg)
    .bind(c.platform_admin)
    .bind(now())
    .execute(ex)
    .await
    .map_err(on_unique("client"))?;
    Ok(())
}

/// Looks a client up by its globally unique id.
pub async fn get(db: &Db, id: &str) -> Result<Option<ClientRow>> {
    Ok(
        sqlx::query_as(sqlx::AssertSqlSafe(format!("select {COLS} from clients where id = $1")))
            .bind(id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

pub async fn platform_admin(db: &Db, tenant_id: &str) -> Result<Option<ClientRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLS} from clients where tenant_id = $1 and platform_admin = 1"
    )))
    .bind(tenant_id)
    .fetch_optional(&db.pool)
    .await?)
}

pub async fn list(db: &Db, tenant_id: &str, after: &str, limit: i64) -> Result<Vec<ClientRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLS} from clients where tenant_id = $1 and id > $2 order by id limit $3"
    )))
    .bind(tenant_id)
    .bind(after)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

pub async fn update(ex: impl AnyExecutor<'_>, c: &ClientRow) -> Result<()> {
    let r = sqlx::query(
        "update clients set name = $1, token_endpoint_auth_method = $2, redirect_uris = $3, \
         post_logout_redirect_uris = $4, grant_types = $5, scopes = $6, resources = $7, web_origins = $8, \
         authn_api = $9, consent_required = $10, id_token_signed_response_alg = $11, updated_at = $12 \
         where id = $13 and tenant_id = $14",
    )
    .bind(&c.name)
    .bind(&c.token_endpoint_auth_method)
    .bind(&c.redirect_uris)
    .bind(&c.post_logout_redirect_uris)
    .bind(&c.grant_types)
    .bind(&c.scopes)
    .bind(&c.resources)
    .bind(&c.web_origins)
    .bind(c.authn_api)
    .bind(c.consent_required)
    .bind(&c.id_token_signed_response_alg)
    .bind(now())
    .bind(&c.id)
    .bind(&c.tenant_id)
    .execute(ex)
    .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Sets the client's secret (a rotation): the client's own tokens issued before now end.
pub async fn set_secret(
    ex: impl AnyExecutor<'_>,
    id: &str,
    hash: Option<&str>,
    key_version: Option<i64>,
) -> Result<()> {
    let r = sqlx::query(
        "update clients set secret_hash = $1, secret_key_version = $2, updated_at = $3, tokens_valid_after = $3 \
         where id = $4",
    )
    .bind(hash)
    .bind(key_version)
    .bind(now())
    .bind(id)
    .execute(ex)
    .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub async fn delete(ex: impl AnyExecutor<'_>, tenant_id: &str, id: &str) -> Result<()> {
    let r = sqlx::query("delete from clients where tenant_id = $1 and id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(ex)
        .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub async fn count_by_hmac_version(db: &Db) -> Result<Vec<(i64, i64)>> {
    Ok(sqlx::query_as(
        "select secret_key_version, count(*) from clients where secret_key_version is not null group by secret_key_version order by 1",
    )
    .fetch_all(&db.pool)
    .await?)
}
