use sqlx::any::AnyExecutor;

use super::{Db, Result, StoreError, now, on_unique};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub tenant_id: String,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub status: String,
    pub password_hash: Option<String>,
    pub pepper_version: Option<i64>,
    pub password_temporary: i64,
    pub tokens_valid_after: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLS: &str = "id, tenant_id, username, email, display_name, status, password_hash, pepper_version, \
                    password_temporary, tokens_valid_after, created_at, updated_at";

pub struct NewUser<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub username: &'a str,
    pub email: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub password_hash: Option<&'a str>,
    pub pepper_version: Option<i64>,
    pub password_temporary: bool,
}

pub async fn create(ex: impl AnyExecutor<'_>, u: &NewUser<'_>) -> Result<()> {
    let t = now();
    sqlx::query(
        "insert into users (id, tenant_id, username, email, display_name, status, password_hash, pepper_version, \
         password_temporary, tokens_valid_after, created_at, updated_at) \
         values ($1, $2, $3, $4, $5, 'active', $6, $7, $8, 0, $9, $9)",
    )
    .bind(u.id)
    .bind(u.tenant_id)
    .bind(u.username)
    .bind(u.email)
    .bind(u.display_name)
    .bind(u.password_hash)
    .bind(u.pepper_version)
    .bind(u.password_temporary as i64)
    .bind(t)
    .execute(ex)
    .await
    .map_err(on_unique("username"))?;
    Ok(())
}

pub async fn get(db: &Db, tenant_id: &str, id: &str) -> Result<Option<UserRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLS} from users where tenant_id = $1 and id = $2"
    )))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

/// A user looked up for sign-in, with the kinds of their confirmed second factors
/// (comma-separated), so the password step learns whether a second factor follows in the
/// same round trip.
#[derive(sqlx::FromRow)]
pub struct SigninUser {
    #[sqlx(flatten)]
    pub user: UserRow,
    pub confirmed_factors: Option<String>,
}

pub async fn for_signin(db: &Db, tenant_id: &str, username: &str) -> Result<Option<SigninUser>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLS}, (select string_agg(f.kind, ',') from factors f \
           where f.tenant_id = users.tenant_id and f.user_id = users.id and f.confirmed <> 0) as confirmed_factors \
         from users where tenant_id = $1 and username = $2"
    )))
    .bind(tenant_id)
    .bind(username)
    .fetch_optional(&db.pool)
    .await?)
}

/// Users ordered by username after `after`; `q` matches a substring of username, email or
/// display name, ignoring ASCII case on both backends (LIKE wildcards in `q` are escaped).
pub async fn list(db: &Db, tenant_id: &str, q: Option<&str>, after: &str, limit: i64) -> Result<Vec<UserRow>> {
    let pattern = q.map(|q| {
        let escaped = q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        format!("%{escaped}%")
    });
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLS} from users where tenant_id = $1 and username > $2 \
         and ($3 is null or lower(username) like lower($3) escape '\\' or lower(email) like lower($3) escape '\\' \
         or lower(display_name) like lower($3) escape '\\') \
         order by username limit $4"
    )))
    .bind(tenant_id)
    .bind(after)
    .bind(pattern)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

/// Writes the mutable profile fields back.
pub async fn update_profile(ex: impl AnyExecutor<'_>, u: &UserRow) -> Result<()> {
    let r = sqlx::query(
        "update users set username = $1, email = $2, display_name = $3, status = $4, tokens_valid_after = $5, \
         updated_at = $6 where tenant_id = $7 and id = $8",
    )
    .bind(&u.username)
    .bind(&u.email)
    .bind(&u.display_name)
    .bind(&u.status)
    .bind(u.tokens_valid_after)
    .bind(now())
    .bind(&u.tenant_id)
    .bind(&u.id)
    .execute(ex)
    .await
    .map_err(on_unique("username"))?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Sets a new password hash. `revoke` moves `tokens_valid_after` to now, ending sessions and
/// tokens issued before.
pub async fn set_password(
    ex: impl AnyExecutor<'_>,
    tenant_id: &str,
    id: &str,
    hash: &str,
    pepper_version: i64,
    temporary: bool,
    revoke: bool,
) -> Result<()> {
    let t = now();
    let r = sqlx::query(
        "update users set password_hash = $1, pepper_version = $2, password_temporary = $3, \
         tokens_valid_after = case when $4 = 1 then $5 else tokens_valid_after end, updated_at = $5 \
         where tenant_id = $6 and id = $7",
    )
    .bind(hash)
    .bind(pepper_version)
    .bind(temporary as i64)
    .bind(revoke as i64)
    .bind(t)
    .bind(tenant_id)
    .bind(id)
    .execute(ex)
    .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub async fn delete(ex: impl AnyExecutor<'_>, tenant_id: &str, id: &str) -> Result<()> {
    let r = sqlx::query("delete from users where tenant_id = $1 and id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(ex)
        .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// How many password hashes use each pepper version.
pub async fn count_by_pepper(db: &Db) -> Result<Vec<(i64, i64)>> {
    Ok(sqlx::query_as(
        "select pepper_version, count(*) from users where pepper_version is not null group by pepper_version order by 1",
    )
    .fetch_all(&db.pool)
    .await?)
}

/// Replaces the hash only if it is still `old` (an upgrade on login must not overwrite a
/// password changed meanwhile).
pub async fn upgrade_hash(
    db: &Db,
    tenant_id: &str,
    id: &str,
    old: &str,
    new: &str,
    pepper_version: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "update users set password_hash = $1, pepper_version = $2, updated_at = $3 \
         where tenant_id = $4 and id = $5 and password_hash = $6",
    )
    .bind(new)
    .bind(pepper_version)
    .bind(now())
    .bind(tenant_id)
    .bind(id)
    .bind(old)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}
