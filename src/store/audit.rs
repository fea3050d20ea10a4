//! The audit trail's tables: `audit_events` (one hash chain per tenant), `audit_heads` (the
//! head of each chain, locked by every append), `audit_keys` and `audit_checkpoints`.

use sqlx::{Any, Executor, Transaction};

use sqlx::any::AnyExecutor;

use super::{Backend, Db, Result, StoreError, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub tenant_id: String,
    pub seq: i64,
    pub at: i64,
    pub kind: String,
    pub actor: Option<String>,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub ip_commit: Option<String>,
    /// RFC 8785 JSON.
    pub data: String,
    /// Hex SHA-256 of (previous hash ‖ canonical event).
    pub hash: String,
    /// Erasable, outside the hashed content.
    pub ip: Option<String>,
    pub ip_salt: Option<String>,
}

const EVENT_COLS: &str = "tenant_id, seq, at, kind, actor, user_id, client_id, ip_commit, data, hash, ip, ip_salt";
/// The number of columns in [`EVENT_COLS`], as `bind_rows` binds them.
const COLS: usize = 12;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HeadRow {
    pub seq: i64,
    pub hash: String,
    /// Verification starts here: 0 and the genesis hash, or a signed checkpoint after pruning.
    pub base_seq: i64,
    pub base_hash: String,
}

/// Locks the head of `tenant_id`'s chain for the rest of `tx` (creating it at `genesis` if the
/// tenant has none) and returns it. PostgreSQL holds the row lock of the no-op update until
/// commit, so replicas append one after the other; SQLite's `begin immediate` already did.
pub async fn lock_head(tx: &mut Transaction<'static, Any>, tenant_id: &str, genesis: &str) -> Result<HeadRow> {
    let lock = "update audit_heads set seq = seq where tenant_id = $1";
    if sqlx::query(lock)
        .bind(tenant_id)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 0
    {
        sqlx::query(
            "insert into audit_heads (tenant_id, seq, hash, base_seq, base_hash) values ($1, 0, $2, 0, $2) \
             on conflict (tenant_id) do nothing",
        )
        .bind(tenant_id)
        .bind(genesis)
        .execute(&mut **tx)
        .await?;
        sqlx::query(lock).bind(tenant_id).execute(&mut **tx).await?;
    }
    Ok(
        sqlx::query_as("select seq, hash, base_seq, base_hash from audit_heads where tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(&mut **tx)
            .await?,
    )
}

pub async fn head<'c, E: Executor<'c, Database = Any>>(e: E, tenant_id: &str) -> Result<Option<HeadRow>> {
    Ok(
        sqlx::query_as("select seq, hash, base_seq, base_hash from audit_heads where tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(e)
            .await?,
    )
}

/// Whether `e` means another writer appended first: the head trigger refused an event that
/// no longer follows the head (migrations 0010, 0012), a racing append took its sequence
/// number, or (PostgreSQL) the statement found no head row to lock.
pub fn is_moved(e: &StoreError) -> bool {
    match e {
        StoreError::Db(e) => e
            .as_database_error()
            .is_some_and(|d| d.is_unique_violation() || d.message().contains(HEAD_MOVED)),
        StoreError::Conflict(HEAD_MOVED) => true,
        _ => false,
    }
}

/// Appends consecutive events of one tenant inside `tx`, in statements of at most
/// [`MAX_ONE_STATEMENT`] rows; the head trigger advances the tenant's head and refuses a
/// statement if another writer moved it. One tenant: on PostgreSQL each statement locks the
/// head of its first row's tenant (see [`insert_sql`]).
pub async fn insert_events(tx: &mut Transaction<'static, Any>, rows: &[&EventRow]) -> Result<()> {
    let numbered = tx.backend_name() != "SQLite";
    for chunk in rows.chunks(MAX_ONE_STATEMENT) {
        insert_statement(&mut **tx, numbered, chunk).await?;
    }
    Ok(())
}

/// Rows one statement takes at most.
pub const MAX_ONE_STATEMENT: usize = 64;

/// Appends up to [`MAX_ONE_STATEMENT`] consecutive events of one tenant as one statement
/// outside any transaction (SQLite's writer connection, or any PostgreSQL connection): one
/// statement is atomic, and the head trigger makes it a compare-and-swap. One round trip
/// instead of begin, insert and commit.
pub async fn append_one_statement(db: &Db, rows: &[&EventRow]) -> Result<()> {
    insert_statement(db.writer(), db.backend != Backend::Sqlite, rows).await
}

/// Statement sizes in rows: a batch is padded up to the next one (with null rows, which the
/// statement filters out), so every connection's prepared-statement cache keeps all ten
/// instead of preparing one per batch length again and again (a prepared 64-row statement is
/// ~0.2 MB in a PostgreSQL backend).
const SIZES: [usize; 10] = [1, 2, 4, 8, 12, 16, 24, 32, 48, MAX_ONE_STATEMENT];

/// `numbered`: PostgreSQL's `$n` placeholders rather than SQLite's `?`.
async fn insert_statement<'c, E: Executor<'c, Database = Any>>(e: E, numbered: bool, rows: &[&EventRow]) -> Result<()> {
    let size = SIZES
        .into_iter()
        .find(|n| *n >= rows.len())
        .expect("at most MAX_ONE_STATEMENT rows");
    let mut q = bind_rows(sqlx::query(sqlx::AssertSqlSafe(insert_sql(size, numbered))), rows);
    for _ in rows.len()..size {
        // A null row, typed as `bind_rows` types a real one (text, then seq and at as integers).
        q = q.bind(None::<String>).bind(None::<i64>).bind(None::<i64>);
        for _ in 3..COLS {
            q = q.bind(None::<String>);
        }
    }
    let inserted = q.execute(e).await?.rows_affected();
    // PostgreSQL's statement inserts nothing when the tenant has no head row.
    if inserted != rows.len() as u64 {
        return Err(StoreError::Conflict(HEAD_MOVED));
    }
    Ok(())
}

const HEAD_MOVED: &str = "audit chain head moved";

/// `insert … select * from (values (…), …) where column1 is not null` for `n` rows (both
/// backends name a values list's columns `column1`…). SQLite gets anonymous `?`
/// placeholders: sqlx looks up every numbered parameter's name, and SQLite's lookup is a
/// linear scan, quadratic over a 768-parameter statement.
///
/// On PostgreSQL the statement first locks the tenant's head row (`$1` is the first row's
/// tenant): the head trigger runs after the rows are in, and a concurrent appender whose rows
/// collide with these waits for this transaction, so locking the head only then would let two
/// replicas wait for each other (a deadlock, broken by PostgreSQL only after a second).
fn insert_sql(n: usize, numbered: bool) -> String {
    let mut sql = if numbered {
        format!(
            "with head as (select 1 from audit_heads where tenant_id = $1 for update) \
             insert into audit_events ({EVENT_COLS}) select * from (values "
        )
    } else {
        format!("insert into audit_events ({EVENT_COLS}) select * from (values ")
    };
    for i in 0..n {
        sql.push_str(if i > 0 { ",(" } else { "(" });
        for c in 0..COLS {
            if c > 0 {
                sql.push(',');
            }
            if numbered {
                sql.push_str(&format!("${}", i * COLS + c + 1));
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql.push_str(if numbered {
        ") v where column1 is not null and exists (select 1 from head)"
    } else {
        ") v where column1 is not null"
    });
    sql
}

fn bind_rows<'q>(
    mut q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    rows: &[&'q EventRow],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    for r in rows {
        q = q
            .bind(&r.tenant_id)
            .bind(r.seq)
            .bind(r.at)
            .bind(&r.kind)
            .bind(&r.actor)
            .bind(&r.user_id)
            .bind(&r.client_id)
            .bind(&r.ip_commit)
            .bind(&r.data)
            .bind(&r.hash)
            .bind(&r.ip)
            .bind(&r.ip_salt);
    }
    q
}

/// Filters of an event page.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    /// Events with a larger sequence number.
    pub after: i64,
    /// Up to and including this sequence number.
    pub to: Option<i64>,
    pub kind: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub limit: i64,
}

/// Events of a tenant in sequence order.
pub async fn events(db: &Db, tenant_id: &str, f: &Filter<'_>) -> Result<Vec<EventRow>> {
    let mut sql = format!("select {EVENT_COLS} from audit_events where tenant_id = $1 and seq > $2");
    let mut n = 2;
    let mut next = |sql: &mut String, cond: &str| {
        n += 1;
        sql.push_str(&format!(" and {cond} ${n}"));
    };
    if f.to.is_some() {
        next(&mut sql, "seq <=");
    }
    if f.kind.is_some() {
        next(&mut sql, "kind =");
    }
    if f.user_id.is_some() {
        next(&mut sql, "user_id =");
    }
    next(&mut sql, "1 = 1 order by seq limit");
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant_id).bind(f.after);
    if let Some(to) = f.to {
        q = q.bind(to);
    }
    if let Some(k) = f.kind {
        q = q.bind(k);
    }
    if let Some(u) = f.user_id {
        q = q.bind(u);
    }
    Ok(q.bind(f.limit).fetch_all(&db.pool).await?)
}

/// Deletes the events up to and including `seq` and moves the chain's base to the checkpoint
/// `(seq, hash)`.
pub async fn prune(tx: &mut Transaction<'static, Any>, tenant_id: &str, seq: i64, hash: &str) -> Result<u64> {
    let r = sqlx::query("delete from audit_events where tenant_id = $1 and seq <= $2")
        .bind(tenant_id)
        .bind(seq)
        .execute(&mut **tx)
        .await?;
    sqlx::query("update audit_heads set base_seq = $1, base_hash = $2 where tenant_id = $3")
        .bind(seq)
        .bind(hash)
        .bind(tenant_id)
        .execute(&mut **tx)
        .await?;
    Ok(r.rows_affected())
}

/// Erases the personal columns (outside the hashed content) of a user's events.
pub async fn erase_personal(ex: impl AnyExecutor<'_>, tenant_id: &str, user_id: &str) -> Result<u64> {
    let r = sqlx::query(
        "update audit_events set ip = null, ip_salt = null where tenant_id = $1 and user_id = $2 and ip is not null",
    )
    .bind(tenant_id)
    .bind(user_id)
    .execute(ex)
    .await?;
    Ok(r.rows_affected())
}

/// Every tenant with a chain, with its slug (also for deleted tenants).
pub async fn chains(db: &Db) -> Result<Vec<(String, Option<String>)>> {
    Ok(sqlx::query_as(
        "select c.tenant_id, t.slug from \
         (select tenant_id from audit_heads union select distinct tenant_id from audit_events \
          union select distinct tenant_id from audit_checkpoints) c \
         left join tenants t on t.id = c.tenant_id order by t.slug, c.tenant_id",
    )
    .fetch_all(&db.pool)
    .await?)
}

/// The id of the tenant with this slug, deleted or not (deleted slugs are never reused).
pub async fn tenant_by_slug(db: &Db, slug: &str) -> Result<Option<String>> {
    let r: Option<(String,)> = sqlx::query_as("select id from tenants where slug = $1")
        .bind(slug)
        .fetch_optional(&db.pool)
        .await?;
    Ok(r.map(|r| r.0))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditKeyRow {
    pub kid: String,
    pub tenant_id: String,
    pub public_jwk: String,
    pub private_ct: Vec<u8>,
    pub master_version: i64,
    pub created_at: i64,
}

const KEY_COLS: &str = "kid, tenant_id, public_jwk, private_ct, master_version, created_at";

pub async fn insert_key(db: &Db, k: &AuditKeyRow) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "insert into audit_keys ({KEY_COLS}) values ($1, $2, $3, $4, $5, $6)"
    )))
    .bind(&k.kid)
    .bind(&k.tenant_id)
    .bind(&k.public_jwk)
    .bind(&k.private_ct)
    .bind(k.master_version)
    .bind(k.created_at)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// A tenant's audit keys, oldest first (the newest signs).
pub async fn keys(db: &Db, tenant_id: &str) -> Result<Vec<AuditKeyRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {KEY_COLS} from audit_keys where tenant_id = $1 order by created_at, kid"
    )))
    .bind(tenant_id)
    .fetch_all(&db.pool)
    .await?)
}

pub async fn all_keys(db: &Db) -> Result<Vec<AuditKeyRow>> {
    Ok(
        sqlx::query_as(sqlx::AssertSqlSafe(format!("select {KEY_COLS} from audit_keys")))
            .fetch_all(&db.pool)
            .await?,
    )
}

pub async fn reencrypt_key(db: &Db, kid: &str, ct: &[u8], master_version: i64) -> Result<()> {
    sqlx::query("update audit_keys set private_ct = $1, master_version = $2 where kid = $3")
        .bind(ct)
        .bind(master_version)
        .bind(kid)
        .execute(&db.pool)
        .await?;
    Ok(())
}

pub async fn count_keys_by_master_version(db: &Db) -> Result<Vec<(i64, i64)>> {
    Ok(
        sqlx::query_as("select master_version, count(*) from audit_keys group by master_version order by 1")
            .fetch_all(&db.pool)
            .await?,
    )
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CheckpointRow {
    pub tenant_id: String,
    pub seq: i64,
    pub hash: String,
    pub at: i64,
    pub kid: String,
    pub jws: String,
}

const CP_COLS: &str = "tenant_id, seq, hash, at, kid, jws";

/// Stores a checkpoint; one already stored for the same sequence number stays.
pub async fn insert_checkpoint(db: &Db, c: &CheckpointRow) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "insert into audit_checkpoints ({CP_COLS}) values ($1, $2, $3, $4, $5, $6) on conflict (tenant_id, seq) do nothing"
    )))
    .bind(&c.tenant_id)
    .bind(c.seq)
    .bind(&c.hash)
    .bind(c.at)
    .bind(&c.kid)
    .bind(&c.jws)
    .execute(&db.pool)
    .await?;
    Ok(())
}

pub async fn checkpoint_at(db: &Db, tenant_id: &str, seq: i64) -> Result<Option<CheckpointRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {CP_COLS} from audit_checkpoints where tenant_id = $1 and seq = $2"
    )))
    .bind(tenant_id)
    .bind(seq)
    .fetch_optional(&db.pool)
    .await?)
}

/// The newest checkpoint at or before `seq`.
pub async fn checkpoint_upto(db: &Db, tenant_id: &str, seq: i64) -> Result<Option<CheckpointRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {CP_COLS} from audit_checkpoints where tenant_id = $1 and seq <= $2 order by seq desc limit 1"
    )))
    .bind(tenant_id)
    .bind(seq)
    .fetch_optional(&db.pool)
    .await?)
}

/// Checkpoints with `from <= seq <= to`, in order.
pub async fn checkpoints(db: &Db, tenant_id: &str, from: i64, to: i64) -> Result<Vec<CheckpointRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {CP_COLS} from audit_checkpoints where tenant_id = $1 and seq >= $2 and seq <= $3 order by seq"
    )))
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .fetch_all(&db.pool)
    .await?)
}

pub fn timestamp() -> i64 {
    now()
}
