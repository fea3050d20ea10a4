//! WebAuthn credentials (factors of kind `webauthn`) and single-use ceremony state.

use sqlx::any::AnyExecutor;

use super::{Db, Result, now, on_unique};

/// A WebAuthn credential, confirmed at creation (the ceremony itself proves possession).
pub struct NewCredential<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub user_id: &'a str,
    pub name: &'a str,
    pub cred_id: &'a str,
    pub credential: &'a str,
    /// Created as a discoverable credential (may sign in without a username).
    pub discoverable: bool,
}

/// Fails with `Conflict("credential")` when the tenant already knows this credential id.
pub async fn create(ex: impl AnyExecutor<'_>, c: &NewCredential<'_>) -> Result<()> {
    sqlx::query(
        "insert into factors (id, tenant_id, user_id, kind, name, confirmed, created_at, cred_id, credential, discoverable) \
         values ($1, $2, $3, 'webauthn', $4, 1, $5, $6, $7, $8)",
    )
    .bind(c.id)
    .bind(c.tenant_id)
    .bind(c.user_id)
    .bind(c.name)
    .bind(now())
    .bind(c.cred_id)
    .bind(c.credential)
    .bind(i64::from(c.discoverable))
    .execute(ex)
    .await
    .map_err(on_unique("credential"))?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CredentialRow {
    pub id: String,
    pub cred_id: String,
    pub credential: String,
}

/// Suspends a credential (a cloned authenticator): unconfirmed, it is no longer offered or
/// accepted.
pub async fn suspend(ex: impl AnyExecutor<'_>, tenant_id: &str, id: &str) -> Result<()> {
    sqlx::query("update factors set confirmed = 0 where tenant_id = $1 and id = $2 and kind = 'webauthn'")
        .bind(tenant_id)
        .bind(id)
        .execute(ex)
        .await?;
    Ok(())
}

/// The user's confirmed WebAuthn credentials.
pub async fn for_user(db: &Db, tenant_id: &str, user_id: &str) -> Result<Vec<CredentialRow>> {
    Ok(sqlx::query_as(
        "select id, cred_id, credential from factors where tenant_id = $1 and user_id = $2 \
         and kind = 'webauthn' and confirmed = 1 and credential is not null order by created_at",
    )
    .bind(tenant_id)
    .bind(user_id)
    .fetch_all(&db.pool)
    .await?)
}

/// A discoverable credential of this tenant, by its credential id (base64url): the key of a
/// passwordless sign-in, where the authenticator names the credential and the user.
pub async fn discoverable(db: &Db, tenant_id: &str, cred_id: &str) -> Result<Option<(String, CredentialRow)>> {
    let row: Option<(String, String, String, String)> = sqlx::query_as(
        "select user_id, id, cred_id, credential from factors where tenant_id = $1 and cred_id = $2 \
         and kind = 'webauthn' and confirmed = 1 and discoverable = 1 and credential is not null",
    )
    .bind(tenant_id)
    .bind(cred_id)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.map(|(user_id, id, cred_id, credential)| {
        (
            user_id,
            CredentialRow {
                id,
                cred_id,
                credential,
            },
        )
    }))
}

/// Stores the credential after a use (counter, backup state), only if nobody changed it since
/// `old` was read: two replicas cannot both accept the same counter value.
pub async fn update_credential(db: &Db, id: &str, old: &str, new: &str) -> Result<bool> {
    let r = sqlx::query("update factors set credential = $1, last_used_at = $2 where id = $3 and credential = $4")
        .bind(new)
        .bind(now())
        .bind(id)
        .bind(old)
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub struct Challenge<'a> {
    pub id_hash: &'a str,
    /// What the ceremony belongs to (see migration 0013): one live ceremony per slot.
    pub slot: &'a str,
    pub tenant_id: &'a str,
    pub user_id: &'a str,
    pub client_id: Option<&'a str>,
    pub kind: &'a str,
    pub state: &'a str,
    pub expires_at: i64,
}

/// Stores a ceremony in its slot, replacing the slot's earlier one (spent or not), in one
/// statement, so parallel requests for one slot still leave one row.
pub async fn create_challenge(db: &Db, c: &Challenge<'_>) -> Result<()> {
    sqlx::query(
        "insert into webauthn_challenges (slot, id_hash, tenant_id, user_id, client_id, kind, state, expires_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8) \
         on conflict (slot) do update set id_hash = excluded.id_hash, tenant_id = excluded.tenant_id, \
         user_id = excluded.user_id, client_id = excluded.client_id, kind = excluded.kind, \
         state = excluded.state, expires_at = excluded.expires_at, used_at = null",
    )
    .bind(c.slot)
    .bind(c.id_hash)
    .bind(c.tenant_id)
    .bind(c.user_id)
    .bind(c.client_id)
    .bind(c.kind)
    .bind(c.state)
    .bind(c.expires_at)
    .execute(&db.pool)
    .await
    .map_err(on_unique("challenge"))?;
    Ok(())
}

/// Spends a live ceremony of this tenant, user, kind (and client, if any): its state, once.
pub async fn take_challenge(
    db: &Db,
    id_hash: &str,
    tenant_id: &str,
    user_id: &str,
    client_id: Option<&str>,
    kind: &str,
) -> Result<Option<String>> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "select state, client_id from webauthn_challenges where id_hash = $1 and tenant_id = $2 and user_id = $3 \
         and kind = $4 and used_at is null and expires_at > $5",
    )
    .bind(id_hash)
    .bind(tenant_id)
    .bind(user_id)
    .bind(kind)
    .bind(now())
    .fetch_optional(&db.pool)
    .await?;
    let Some((state, client)) = row else {
        return Ok(None);
    };
    if client.as_deref() != client_id {
        return Ok(None);
    }
    let r = sqlx::query("update webauthn_challenges set used_at = $1 where id_hash = $2 and used_at is null")
        .bind(now())
        .bind(id_hash)
        .execute(&db.pool)
        .await?;
    Ok((r.rows_affected() == 1).then_some(state))
}

/// Ceremonies expired for an hour or more (kept that long for forensics).
pub async fn purge_expired(db: &Db) -> Result<u64> {
    let r = sqlx::query("delete from webauthn_challenges where expires_at < $1")
        .bind(now() - 3600)
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected())
}
