//! The tamper-evident audit trail.
//!
//! Every security event goes through [`Audit::record`], which returns only after the batch
//! holding the event has committed. One writer task per process drains the queue in batches
//! (group commit: one transaction per batch); each append locks the tenant's chain head in the
//! database first, so several replicas on one PostgreSQL still build one linear chain per
//! tenant (see [`chain`] for what is hashed). Events name users, clients and actors by opaque id
//! only, and the client IP stays outside the hashed content, so erasing a user's personal data
//! leaves the chain verifiable. Signed checkpoints ([`checkpoint`]) anchor the chain and let old
//! events be pruned.

pub mod chain;
pub mod checkpoint;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::crypto::{KeyError, Keyring};
use crate::store::audit::{self as sa, EventRow, Filter};
use crate::store::{Db, StoreError, now};
use crate::tokens::material::KeyMaterialError;

pub use chain::{GENESIS, TenantVerification, Verification, VerifyReport, verify, verify_all};
pub use checkpoint::{Checkpoint, CheckpointClaims, audit_keys_jwks, reencrypt_keys, verify_checkpoint};

/// Events a batch holds at most.
const MAX_BATCH: usize = 1000;
/// How often the writer yields to let more events join a batch, at most.
const YIELDS: usize = 4;
/// Events waiting for the writer at most; `record` waits for room beyond that.
const QUEUE: usize = 10_000;
/// Whole-log reads (verify, export) running at once per process at most.
const SCANS: usize = 2;
/// Limits on what a caller can put in one event.
pub const MAX_DATA_BYTES: usize = 8192;
const MAX_FIELD: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Material(#[from] KeyMaterialError),
    #[error("invalid audit event: {0}")]
    Invalid(&'static str),
    /// The writer stopped, or its batch failed because the database cannot be reached: retry.
    #[error("the audit trail is unavailable")]
    Unavailable,
    #[error("the audit batch could not be committed: {0}")]
    Failed(String),
    #[error("no signed checkpoint before sequence {0}")]
    NoCheckpoint(i64),
    #[error("the audit chain is broken at sequence {0}")]
    Broken(i64),
    #[error("checkpoint signature does not verify")]
    BadSignature,
}

impl AuditError {
    /// Whether retrying later may succeed (an unreachable database): a 503, not a 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            AuditError::Unavailable => true,
            AuditError::Store(e) => e.is_unavailable(),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        AuditError::Store(e.into())
    }
}

/// One security event. Reference people by opaque id (`user_id`, `actor`), never by name or
/// e-mail; `data` must not carry usernames, passwords, secrets or other personal data, because
/// the chain keeps it forever. The IP is the only personal field and is kept outside the chain.
#[derive(Debug, Clone)]
pub struct Event {
    pub tenant_id: String,
    /// Dotted type, e.g. `signin.failure`, `user.deleted`, `keys.rotated`.
    pub kind: String,
    /// Who did it: `user:{id}`, `client:{id}`, `admin:{client_id}`, `system`.
    pub actor: Option<String>,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<IpAddr>,
    /// A JSON object (or null for none).
    pub data: serde_json::Value,
}

impl Event {
    pub fn new(tenant_id: impl Into<String>, kind: impl Into<String>) -> Event {
        Event {
            tenant_id: tenant_id.into(),
            kind: kind.into(),
            actor: None,
            user_id: None,
            client_id: None,
            ip: None,
            data: serde_json::Value::Null,
        }
    }
    pub fn actor(mut self, actor: impl Into<String>) -> Event {
        self.actor = Some(actor.into());
        self
    }
    pub fn user(mut self, user_id: impl Into<String>) -> Event {
        self.user_id = Some(user_id.into());
        self
    }
    pub fn client(mut self, client_id: impl Into<String>) -> Event {
        self.client_id = Some(client_id.into());
        self
    }
    pub fn ip(mut self, ip: Option<IpAddr>) -> Event {
        self.ip = ip;
        self
    }
    pub fn data(mut self, data: serde_json::Value) -> Event {
        self.data = data;
        self
    }
}

/// Where a recorded event landed in its tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub seq: i64,
    pub hash: String,
}

/// An event checked and prepared by the caller's task (its row lacks only `seq` and `hash`),
/// waiting for the writer.
struct Pending {
    row: EventRow,
    done: oneshot::Sender<Result<Receipt, AuditError>>,
}

fn check_field(v: &Option<String>) -> Result<(), AuditError> {
    match v {
        Some(s) if s.is_empty() || s.len() > MAX_FIELD => Err(AuditError::Invalid("id field length")),
        _ => Ok(()),
    }
}

pub struct Audit {
    tx: mpsc::Sender<Pending>,
    db: Db,
    keyring: Arc<Keyring>,
    scans: Arc<tokio::sync::Semaphore>,
}

impl Audit {
    /// Starts this process's writer task (needs a Tokio runtime). The task ends when the last
    /// handle is dropped, after committing what is queued.
    pub fn start(db: Db, keyring: Arc<Keyring>) -> Arc<Audit> {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(db.clone(), rx));
        Arc::new(Audit {
            tx,
            db,
            keyring,
            scans: Arc::new(tokio::sync::Semaphore::new(SCANS)),
        })
    }

    /// A permit to read a tenant's whole log (verify, export), if one is free: each such read
    /// pages through and hashes or serialises every event, so unbounded parallel ones would
    /// take the database pool and the CPU from sign-ins. Hold it until the read ends.
    pub fn scan_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.scans.clone().try_acquire_owned().ok()
    }

    /// Appends `event` to its tenant's chain; returns once the batch holding it has committed.
    pub async fn record(&self, event: Event) -> Result<Receipt, AuditError> {
        let row = event_row(event)?;
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Pending { row, done })
            .await
            .map_err(|_| AuditError::Unavailable)?;
        wait.await.map_err(|_| AuditError::Unavailable)?
    }

    /// Appends `event` inside the caller's write transaction `tx` (see
    /// [`crate::store::Db::begin_write`]) and commits it, so the change it records and the event
    /// commit together or not at all. For changes that are rare (management, enrolment), as it
    /// takes the chain head's lock: this process's writer then finds its cached head moved and
    /// reloads it.
    pub async fn commit(&self, mut tx: crate::store::Tx, event: Event) -> Result<Receipt, AuditError> {
        let mut row = event_row(event)?;
        let head = sa::lock_head(&mut tx, &row.tenant_id, GENESIS).await?;
        row.seq = head.seq + 1;
        row.hash = chain::hash_of(&head.hash, &row).ok_or(AuditError::Invalid("event"))?;
        sa::insert_events(&mut tx, &[&row]).await?;
        tx.commit().await?;
        Ok(Receipt {
            seq: row.seq,
            hash: row.hash,
        })
    }

    /// Signs the current head of `tenant_id`'s chain with the tenant's audit key, after
    /// verifying the chain since the previous checkpoint (a broken chain is never signed).
    pub async fn checkpoint(&self, tenant_id: &str) -> Result<Checkpoint, AuditError> {
        let head = sa::head(&self.db.pool, tenant_id).await?;
        let (seq, hash) = head
            .as_ref()
            .map_or((0, GENESIS.to_string()), |h| (h.seq, h.hash.clone()));
        if let Some(c) = sa::checkpoint_at(&self.db, tenant_id, seq).await? {
            return Ok(c.into());
        }
        // Verify from the newest trustworthy anchor: the last checkpoint, or the chain's base.
        let (base_seq, base_hash) = head
            .as_ref()
            .map_or((0, GENESIS.to_string()), |h| (h.base_seq, h.base_hash.clone()));
        let (from_seq, from_hash) = match sa::checkpoint_upto(&self.db, tenant_id, seq).await? {
            Some(c) if c.seq >= base_seq => (c.seq, c.hash),
            _ => (base_seq, base_hash),
        };
        let v = chain::verify_range(&self.db, tenant_id, from_seq, &from_hash, seq, &hash).await?;
        if let Some(at) = v.broken_at {
            return Err(AuditError::Broken(at));
        }
        let key = checkpoint::signer(&self.db, &self.keyring, tenant_id).await?;
        let claims = CheckpointClaims {
            tenant_id: tenant_id.to_string(),
            seq,
            hash: hash.clone(),
            iat: now(),
        };
        let row = sa::CheckpointRow {
            tenant_id: tenant_id.to_string(),
            seq,
            hash,
            at: claims.iat,
            kid: key.kid.clone(),
            jws: checkpoint::sign(&key, &claims),
        };
        sa::insert_checkpoint(&self.db, &row).await?;
        // A concurrent checkpoint of the same head may have won; both are valid.
        Ok(sa::checkpoint_at(&self.db, tenant_id, seq)
            .await?
            .map_or(row, |r| r)
            .into())
    }

    /// Adds a new audit key for the tenant (the old ones stay published); returns its kid.
    pub async fn rotate_key(&self, tenant_id: &str) -> Result<String, AuditError> {
        Ok(checkpoint::new_key(&self.db, &self.keyring, tenant_id).await?.kid)
    }

    /// Retention: deletes the oldest events, up to and including the newest signed checkpoint
    /// before `before_seq`. The chain then verifies from that checkpoint. Refuses when no such
    /// checkpoint exists or the chain up to it does not verify. The pruning is itself recorded
    /// (`audit.pruned`, by `actor`), so the chain says where it was cut and by whom.
    pub async fn prune(&self, tenant_id: &str, before_seq: i64, actor: &str) -> Result<Pruned, AuditError> {
        let cp = sa::checkpoint_upto(&self.db, tenant_id, before_seq - 1)
            .await?
            .filter(|c| c.seq > 0)
            .ok_or(AuditError::NoCheckpoint(before_seq))?;
        let jwks = checkpoint::public_keys(&self.db, tenant_id).await?;
        let claims = checkpoint::verify_with(&jwks, &cp.jws)?;
        if claims.tenant_id != tenant_id || claims.seq != cp.seq || claims.hash != cp.hash {
            return Err(AuditError::BadSignature);
        }
        let v = verify(&self.db, tenant_id).await?;
        if let Some(at) = v.broken_at {
            return Err(AuditError::Broken(at));
        }
        let mut tx = self.db.begin_write().await?;
        let head = sa::lock_head(&mut tx, tenant_id, GENESIS).await?;
        if cp.seq <= head.base_seq {
            tx.rollback().await?;
            return Ok(Pruned {
                deleted: 0,
                base_seq: head.base_seq,
            });
        }
        let deleted = sa::prune(&mut tx, tenant_id, cp.seq, &cp.hash).await?;
        tx.commit().await?;
        tracing::info!(tenant_id, base_seq = cp.seq, deleted, "audit events pruned");
        let event = Event::new(tenant_id, "audit.pruned")
            .actor(actor)
            .data(serde_json::json!({"base_seq": cp.seq, "base_hash": cp.hash, "deleted": deleted}));
        self.record(event).await?;
        Ok(Pruned {
            deleted,
            base_seq: cp.seq,
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Pruned {
    pub deleted: u64,
    /// The chain now starts after this sequence number (a signed checkpoint).
    pub base_seq: i64,
}

/// Erases the personal data (IP addresses) kept beside a user's events; the chain still verifies.
pub async fn erase_user(
    ex: impl sqlx::any::AnyExecutor<'_>,
    tenant_id: &str,
    user_id: &str,
) -> Result<u64, AuditError> {
    Ok(sa::erase_personal(ex, tenant_id, user_id).await?)
}

/// Checks an event and builds its row: canonical data, the IP's salted commitment. `seq` and
/// `hash` are set when it is chained.
fn event_row(event: Event) -> Result<EventRow, AuditError> {
    let Event {
        tenant_id,
        kind,
        actor,
        user_id,
        client_id,
        ip,
        data,
    } = event;
    if kind.is_empty()
        || kind.len() > 64
        || !kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(AuditError::Invalid("kind"));
    }
    for f in [&actor, &user_id, &client_id] {
        check_field(f)?;
    }
    if tenant_id.is_empty() || tenant_id.len() > MAX_FIELD {
        return Err(AuditError::Invalid("tenant_id"));
    }
    let data = match data {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        o @ serde_json::Value::Object(_) => o,
        _ => return Err(AuditError::Invalid("data must be an object")),
    };
    // Canonical once, here: the chain hashes and stores exactly this text.
    let data = serde_json_canonicalizer::to_string(&data).map_err(|_| AuditError::Invalid("data"))?;
    if data.len() > MAX_DATA_BYTES {
        return Err(AuditError::Invalid("data too large"));
    }
    let (ip, ip_salt, ip_commit) = match ip {
        Some(ip) => {
            let ip = ip.to_canonical().to_string();
            let salt = crate::crypto::hex(&crate::crypto::random_bytes::<16>());
            let commit = chain::ip_commit(&salt, &ip);
            (Some(ip), Some(salt), Some(commit))
        }
        None => (None, None, None),
    };
    Ok(EventRow {
        tenant_id,
        seq: 0,
        at: now(),
        kind,
        actor,
        user_id,
        client_id,
        ip_commit,
        data,
        hash: String::new(),
        ip,
        ip_salt,
    })
}

/// The writer: takes whatever is queued (up to [`MAX_BATCH`]), appends it in one transaction,
/// then answers every waiter.
async fn writer(db: Db, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // The chain heads this writer last committed: a batch then needs no read of the head, only
    // the compare-and-swap (which fails, and reloads, if another replica appended meanwhile).
    let mut heads: HashMap<String, (i64, String)> = HashMap::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Let the requests that are runnable now queue their events too: under load one commit
        // then serves them all, and commits (WAL page writes) are what the trail costs. Yield
        // again while that brings more, a few times at most.
        for _ in 0..YIELDS {
            tokio::task::yield_now().await;
            let room = MAX_BATCH - batch.len();
            if room == 0 || rx.is_empty() {
                break;
            }
            rx.recv_many(&mut batch, room).await;
        }
        let mut attempt = 0;
        let started = std::time::Instant::now();
        let result = loop {
            attempt += 1;
            match append(&db, &mut batch, &mut heads).await {
                Ok(()) => break Ok(()),
                // A stale cached head: retry at once with heads read from the database.
                // Counted: with several replicas some are expected, a steady rise is not.
                Err(AppendError::Moved) if attempt < 5 => {
                    metrics::counter!("unicred_audit_retries_total", "cause" => "moved").increment(1);
                    continue;
                }
                // The pool already spent its whole acquire timeout trying to connect: the
                // database is down, and the waiting requests answer 503 now, not after retries.
                Err(e @ AppendError::Store(StoreError::Db(sqlx::Error::PoolTimedOut))) => break Err(e),
                Err(e) if attempt < 5 => {
                    metrics::counter!("unicred_audit_retries_total", "cause" => "error").increment(1);
                    tracing::warn!(error = %e, attempt, "audit batch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                }
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(()) => {
                metrics::histogram!("unicred_audit_batch_events").record(batch.len() as f64);
                metrics::histogram!("unicred_audit_batch_seconds").record(started.elapsed().as_secs_f64());
                for p in batch.drain(..) {
                    let _ = p.done.send(Ok(Receipt {
                        seq: p.row.seq,
                        hash: p.row.hash,
                    }));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = batch.len(), "audit batch lost");
                let unavailable = matches!(&e, AppendError::Store(s) if s.is_unavailable());
                let msg = e.to_string();
                for p in batch.drain(..) {
                    let _ = p.done.send(Err(if unavailable {
                        AuditError::Unavailable
                    } else {
                        AuditError::Failed(msg.clone())
                    }));
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum AppendError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the chain head of a tenant moved during the append")]
    Moved,
    #[error("hashing failed")]
    Hash,
}

impl From<sqlx::Error> for AppendError {
    fn from(e: sqlx::Error) -> Self {
        AppendError::Store(e.into())
    }
}

/// Appends a batch, setting each event's `seq` and `hash`. The head trigger (migrations 0010,
/// and 0012 on PostgreSQL) advances each tenant's head with its events and refuses them if another writer moved it
/// (→ [`AppendError::Moved`], retried with heads read afresh). A one-tenant batch whose head
/// this writer knows is one statement; otherwise one transaction, tenants locked in a fixed
/// order (sorted ids) so two replicas' batches cannot deadlock.
async fn append(db: &Db, batch: &mut [Pending], heads: &mut HashMap<String, (i64, String)>) -> Result<(), AppendError> {
    let mut by_tenant: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, p) in batch.iter().enumerate() {
        match by_tenant.get_mut(&p.row.tenant_id) {
            Some(idx) => idx.push(i),
            None => {
                by_tenant.insert(p.row.tenant_id.clone(), vec![i]);
            }
        }
    }
    if by_tenant.len() == 1
        && batch.len() <= sa::MAX_ONE_STATEMENT
        && let Some((tenant_id, idx)) = by_tenant.first_key_value()
        && let Some(head) = heads.get(tenant_id).cloned()
    {
        let head = chain(batch, idx, head)?;
        let rows: Vec<&EventRow> = batch.iter().map(|p| &p.row).collect();
        sa::append_one_statement(db, &rows)
            .await
            .map_err(|e| moved_or(e, heads))?;
        heads.insert(tenant_id.clone(), head);
        return Ok(());
    }
    let mut tx = db.begin_write().await?;
    let mut advanced = Vec::new();
    for (tenant_id, idx) in by_tenant {
        let head = match heads.get(&tenant_id) {
            Some(h) => h.clone(),
            None => {
                let h = sa::lock_head(&mut tx, &tenant_id, GENESIS).await?;
                (h.seq, h.hash)
            }
        };
        let head = chain(batch, &idx, head)?;
        let rows: Vec<&EventRow> = idx.iter().map(|&i| &batch[i].row).collect();
        sa::insert_events(&mut tx, &rows)
            .await
            .map_err(|e| moved_or(e, heads))?;
        advanced.push((tenant_id, head));
    }
    if let Err(e) = tx.commit().await {
        heads.clear();
        return Err(e.into());
    }
    heads.extend(advanced);
    Ok(())
}

/// A failed append: `Moved` (forgetting the cached heads) when another writer got there first.
fn moved_or(e: StoreError, heads: &mut HashMap<String, (i64, String)>) -> AppendError {
    heads.clear();
    if sa::is_moved(&e) { AppendError::Moved } else { e.into() }
}

/// Chains one tenant's events `idx` (in order) after `head`: sets their `seq` and `hash`, and
/// returns the new head.
fn chain(
    batch: &mut [Pending],
    idx: &[usize],
    (mut seq, mut prev): (i64, String),
) -> Result<(i64, String), AppendError> {
    for &i in idx {
        let row = &mut batch[i].row;
        seq += 1;
        row.seq = seq;
        row.hash = chain::hash_of(&prev, row).ok_or(AppendError::Hash)?;
        prev.clone_from(&row.hash);
    }
    Ok((seq, prev))
}

/// A stored event as the management API shows and exports it: every hashed field, so an
/// export can be re-verified offline.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoredEvent {
    pub tenant_id: String,
    pub seq: i64,
    pub at: i64,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Erased when the user's personal data is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// With `ip`, so that `ip_commit` can be checked offline; erased with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_salt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_commit: Option<String>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub hash: String,
}

impl From<EventRow> for StoredEvent {
    fn from(r: EventRow) -> Self {
        StoredEvent {
            data: serde_json::from_str(&r.data).unwrap_or(serde_json::Value::Null),
            tenant_id: r.tenant_id,
            seq: r.seq,
            at: r.at,
            kind: r.kind,
            actor: r.actor,
            user_id: r.user_id,
            client_id: r.client_id,
            ip: r.ip,
            ip_salt: r.ip_salt,
            ip_commit: r.ip_commit,
            hash: r.hash,
        }
    }
}

/// Query of the event log.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub after: i64,
    pub kind: Option<String>,
    pub user_id: Option<String>,
    /// 1..=200.
    pub limit: i64,
}

/// Up to `q.limit` events after `q.after`, and the cursor of the next page.
pub async fn list(db: &Db, tenant_id: &str, q: &Query) -> Result<(Vec<StoredEvent>, Option<i64>), AuditError> {
    let mut rows = sa::events(
        db,
        tenant_id,
        &Filter {
            after: q.after,
            to: None,
            kind: q.kind.as_deref(),
            user_id: q.user_id.as_deref(),
            limit: q.limit + 1,
        },
    )
    .await?;
    let more = rows.len() as i64 > q.limit;
    rows.truncate(q.limit as usize);
    let next = if more { rows.last().map(|r| r.seq) } else { None };
    Ok((rows.into_iter().map(StoredEvent::from).collect(), next))
}

/// JSON lines of the events with `from <= seq <= to`, read from the database one page at a
/// time as the consumer pulls: memory stays bounded by one page whatever the log's size.
pub fn export(
    db: Db,
    tenant_id: String,
    from: i64,
    to: Option<i64>,
) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, AuditError>> + Send + 'static {
    futures_util::stream::try_unfold(Some(from.saturating_sub(1)), move |after| {
        let db = db.clone();
        let tenant_id = tenant_id.clone();
        async move {
            let Some(after) = after else { return Ok(None) };
            let rows = sa::events(
                &db,
                &tenant_id,
                &Filter {
                    after,
                    to,
                    limit: chain::PAGE,
                    ..Filter::default()
                },
            )
            .await?;
            let Some(last) = rows.last().map(|r| r.seq) else {
                return Ok(None);
            };
            let next = (rows.len() as i64 == chain::PAGE).then_some(last);
            let mut out = Vec::with_capacity(rows.len() * 256);
            for r in rows {
                serde_json::to_writer(&mut out, &StoredEvent::from(r)).map_err(|_| AuditError::Invalid("event"))?;
                out.push(b'\n');
            }
            Ok(Some((axum::body::Bytes::from(out), next)))
        }
    })
}
