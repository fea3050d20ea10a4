//! Second factors, recovery codes and sign-in state tokens.

use sqlx::any::AnyExecutor;

use super::{Db, Result, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FactorRow {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub kind: String,
    pub name: String,
    pub secret_ct: Option<Vec<u8>>,
    pub confirmed: i64,
    pub last_step: Option<i64>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

const COLS: &str = "id, tenant_id, user_id, kind, name, secret_ct, confirmed, last_step, created_at, last_used_at";

pub async fn create(db: &Db, f: &FactorRow, master_version: i64) -> Result<()> {
    sqlx::query(
        "insert into factors (id, tenant_id, user_id, kind, name, secret_ct, master_version, confirmed, created_at) \
         values ($1, $2, $3, $4, $5, $6, $7, 0, $8)",
    )
    .bind(&f.id)
    .bind(&f.tenant_id)
    .bind(&f.user_id)
    .bind(&f.kind)
    .bind(&f.name)
    .bind(&f.secret_ct)
    .bind(master_version)
    .bind(f.created_at)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// TOTP seeds encrypted under a master version other than `current`: (id, tenant, ciphertext).
pub async fn seeds_not_under(db: &Db, current: i64) -> Result<Vec<(String, String, Vec<u8>)>> {
    Ok(sqlx::query_as(
        "select id, tenant_id, secret_ct from factors where secret_ct is not null and master_version <> $1",
    )
    .bind(current)
    .fetch_all(&db.pool)
    .await?)
}

pub async fn reencrypt_seed(db: &Db, id: &str, ct: &[u8], master_version: i64) -> Result<()> {
    sqlx::query("update factors set secret_ct = $1, master_version = $2 where id = $3")
        .bind(ct)
        .bind(master_version)
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

pub async fn count_seeds_by_master_version(db: &Db) -> Result<Vec<(i64, i64)>> {
    Ok(sqlx::query_as(
        "select master_version, count(*) from factors where secret_ct is not null group by master_version order by 1",
    )
    .fetch_all(&db.pool)
    .await?)
}

/// Drops the user's unconfirmed factors of `kind`: a new enrolment replaces an abandoned one,
/// so a user cannot pile up pending rows.
pub async fn delete_pending(db: &Db, tenant_id: &str, user_id: &str, kind: &str) -> Result<u64> {
    Ok(
        sqlx::query("delete from factors where tenant_id = $1 and user_id = $2 and kind = $3 and confirmed = 0")
            .bind(tenant_id)
            .bind(user_id)
            .bind(kind)
            .execute(&db.pool)
            .await?
            .rows_affected(),
    )
}

pub async fn for_user(db: &Db, tenant_id: &str, user_id: &str) -> Result<Vec<FactorRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLS} from factors where tenant_id = $1 and user_id = $2 order by created_at"
    )))
    .bind(tenant_id)
    .bind(user_id)
    .fetch_all(&db.pool)
    .await?)
}

pub async fn confirm(ex: impl AnyExecutor<'_>, tenant_id: &str, id: &str) -> Result<bool> {
    let r = sqlx::query("update factors set confirmed = 1 where tenant_id = $1 and id = $2 and confirmed = 0")
        .bind(tenant_id)
        .bind(id)
        .execute(ex)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Accepts a TOTP step only if it is later than every step accepted before (RFC 6238 §5.2),
/// atomically, so a code cannot be replayed on this or any other replica.
pub async fn accept_step(db: &Db, id: &str, step: i64) -> Result<bool> {
    let r = sqlx::query(
        "update factors set last_step = $1, last_used_at = $2 where id = $3 and (last_step is null or last_step < $1)",
    )
    .bind(step)
    .bind(now())
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub enum Removal {
    Removed,
    NotFound,
    /// `must_keep` refused: the factor is the user's last usable one.
    LastFactor,
}

/// Deletes factor `id` of the user unless `must_keep(factor, others)` says it has to stay
/// (`|_, _| false` to delete whatever the rest).
/// In the caller's write transaction ([`Db::begin_write`]), with the user's factor rows locked
/// (PostgreSQL `for update`; SQLite's write lock) until it ends, so two parallel deletes cannot
/// each count the other's factor as the one left. The caller commits.
pub async fn remove_unless(
    tx: &mut super::Tx,
    tenant_id: &str,
    user_id: &str,
    id: &str,
    must_keep: impl Fn(&FactorRow, &[FactorRow]) -> bool,
) -> Result<Removal> {
    let lock = if tx.backend_name() == "SQLite" {
        ""
    } else {
        " for update"
    };
    let mut all: Vec<FactorRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLS} from factors where tenant_id = $1 and user_id = $2{lock}"
    )))
    .bind(tenant_id)
    .bind(user_id)
    .fetch_all(&mut **tx)
    .await?;
    let Some(at) = all.iter().position(|f| f.id == id) else {
        return Ok(Removal::NotFound);
    };
    let f = all.remove(at);
    if must_keep(&f, &all) {
        return Ok(Removal::LastFactor);
    }
    sqlx::query("delete from factors where tenant_id = $1 and user_id = $2 and id = $3")
        .bind(tenant_id)
        .bind(user_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(Removal::Removed)
}

/// In the caller's write transaction, with the event that records it.
pub async fn replace_recovery_codes(
    tx: &mut super::Tx,
    tenant_id: &str,
    user_id: &str,
    hashes: &[String],
    version: i64,
) -> Result<()> {
    sqlx::query("delete from recovery_codes where tenant_id = $1 and user_id = $2")
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    for h in hashes {
        sqlx::query("insert into recovery_codes (tenant_id, user_id, code_hash, key_version) values ($1, $2, $3, $4)")
            .bind(tenant_id)
            .bind(user_id)
            .bind(h)
            .bind(version)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub async fn recovery_versions(db: &Db, tenant_id: &str, user_id: &str) -> Result<Vec<i64>> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "select distinct key_version from recovery_codes where tenant_id = $1 and user_id = $2 and used_at is null",
    )
    .bind(tenant_id)
    .bind(user_id)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Spends a recovery code, once.
pub async fn use_recovery_code(db: &Db, tenant_id: &str, user_id: &str, code_hash: &str) -> Result<bool> {
    let r = sqlx::query(
        "update recovery_codes set used_at = $1 where tenant_id = $2 and user_id = $3 and code_hash = $4 and used_at is null",
    )
    .bind(now())
    .bind(tenant_id)
    .bind(user_id)
    .bind(code_hash)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StateRow {
    pub tenant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub purpose: String,
    pub throttle_key: String,
    pub failures: i64,
    /// Set on a `page-enrolled` token: the `amr` its sign-in completes with.
    pub amr: Option<String>,
}

pub async fn create_state(db: &Db, id_hash: &str, s: &StateRow, expires_at: i64) -> Result<()> {
    sqlx::query(
        "insert into mfa_states (id_hash, tenant_id, client_id, user_id, purpose, throttle_key, failures, expires_at, amr) \
         values ($1, $2, $3, $4, $5, $6, 0, $7, $8)",
    )
    .bind(id_hash)
    .bind(&s.tenant_id)
    .bind(&s.client_id)
    .bind(&s.user_id)
    .bind(&s.purpose)
    .bind(&s.throttle_key)
    .bind(expires_at)
    .bind(&s.amr)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// A state token dies after this many factor attempts.
const STATE_ATTEMPTS: i64 = 5;

/// A live state token: unused, unexpired, attempts left.
pub async fn state(db: &Db, id_hash: &str) -> Result<Option<StateRow>> {
    Ok(sqlx::query_as(
        "select tenant_id, client_id, user_id, purpose, throttle_key, failures, amr from mfa_states \
         where id_hash = $1 and used_at is null and expires_at > $2 and failures < $3",
    )
    .bind(id_hash)
    .bind(now())
    .bind(STATE_ATTEMPTS)
    .fetch_optional(&db.pool)
    .await?)
}

/// Spends one of a live state token's factor attempts (counted in `failures`: a successful
/// one consumes the token anyway), atomically, before the factor is checked: parallel requests
/// on one token cannot get more than `STATE_ATTEMPTS` checks. False when none is left.
pub async fn reserve_attempt(db: &Db, id_hash: &str) -> Result<bool> {
    let r = sqlx::query(
        "update mfa_states set failures = failures + 1 \
         where id_hash = $1 and used_at is null and expires_at > $2 and failures < $3",
    )
    .bind(id_hash)
    .bind(now())
    .bind(STATE_ATTEMPTS)
    .execute(db.writer())
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn consume_state(ex: impl AnyExecutor<'_>, id_hash: &str) -> Result<bool> {
    let r = sqlx::query("update mfa_states set used_at = $1 where id_hash = $2 and used_at is null")
        .bind(now())
        .bind(id_hash)
        .execute(ex)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Deletes expired sign-in state tokens (spent or not); returns how many.
pub async fn purge_expired_states(db: &Db) -> Result<u64> {
    let r = sqlx::query("delete from mfa_states where expires_at < $1")
        .bind(now())
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected())
}
