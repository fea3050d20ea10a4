use sqlx::any::AnyExecutor;

use super::{Db, Result, StoreError, now, on_unique};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub policy: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLS: &str = "id, slug, name, policy, created_at, updated_at";

pub async fn create(ex: impl AnyExecutor<'_>, id: &str, slug: &str, name: &str, policy: &str) -> Result<TenantRow> {
    let t = now();
    sqlx::query("insert into tenants (id, slug, name, policy, created_at, updated_at) values ($1, $2, $3, $4, $5, $5)")
        .bind(id)
        .bind(slug)
        .bind(name)
        .bind(policy)
        .bind(t)
        .execute(ex)
        .await
        .map_err(on_unique("tenant"))?;
    Ok(TenantRow {
        id: id.into(),
        slug: slug.into(),
        name: name.into(),
        policy: policy.into(),
        created_at: t,
        updated_at: t,
    })
}

pub async fn by_slug(db: &Db, slug: &str) -> Result<Option<TenantRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLS} from tenants where slug = $1 and deleted_at is null"
    )))
    .bind(slug)
    .fetch_optional(&db.pool)
    .await?)
}

/// The id of the tenant that has or had `slug`, deleted or not (slugs are never reused).
pub async fn id_ever(db: &Db, slug: &str) -> Result<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("select id from tenants where slug = $1")
        .bind(slug)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.map(|(id,)| id))
}

pub async fn by_id(db: &Db, id: &str) -> Result<Option<TenantRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLS} from tenants where id = $1 and deleted_at is null"
    )))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

/// Live tenants ordered by slug, after `after` (exclusive).
pub async fn list(db: &Db, after: &str, limit: i64) -> Result<Vec<TenantRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLS} from tenants where deleted_at is null and slug > $1 order by slug limit $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

pub async fn update(ex: impl AnyExecutor<'_>, id: &str, name: &str, policy: &str) -> Result<()> {
    let r =
        sqlx::query("update tenants set name = $1, policy = $2, updated_at = $3 where id = $4 and deleted_at is null")
            .bind(name)
            .bind(policy)
            .bind(now())
            .bind(id)
            .execute(ex)
            .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Soft delete: the row (and so the slug) stays, so a deleted slug is never reused.
pub async fn delete(ex: impl AnyExecutor<'_>, id: &str) -> Result<()> {
    let r = sqlx::query("update tenants set deleted_at = $1 where id = $2 and deleted_at is null")
        .bind(now())
        .bind(id)
        .execute(ex)
        .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// True once anything has been created (keys may only be generated for an empty database).
pub async fn any_exist(db: &Db) -> Result<bool> {
    let n: (i64,) = sqlx::query_as("select count(*) from tenants")
        .fetch_one(&db.pool)
        .await?;
    Ok(n.0 > 0)
}
