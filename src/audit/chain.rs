//! The hash chain: what is hashed, and verification.
//!
//! `hash(n) = SHA-256(hash(n-1) ‖ JCS(content(n)))`, hex, where JCS is the RFC 8785 canonical
//! JSON of the event's hashed fields (`v`, `tenant_id`, `seq`, `at`, `kind`, `actor`,
//! `user_id`, `client_id`, `ip_commit`, `data`; absent optional fields are left out) and
//! `hash(0)` is [`GENESIS`], 32 zero bytes. The client IP is personal data, so the chain holds
//! only `ip_commit = SHA-256("unicred-audit-ip\0" ‖ salt ‖ ip)`; the IP and its salt sit in
//! erasable columns beside it and, while present, must match the commitment.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::AuditError;
use super::checkpoint::{self, CheckpointClaims};
use crate::crypto::{hex, unhex};
use crate::store::audit::{self as sa, EventRow, Filter};
use crate::store::{Db, StoreError};

/// `hash(0)`: 32 zero bytes, hex.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Rows read per page while verifying or exporting.
pub(crate) const PAGE: i64 = 1000;

/// The hashed fields of an event. Declared in RFC 8785 member order (sorted by name), with
/// `data` already in RFC 8785 form, so serde_json's compact output *is* the canonical JSON:
/// its string escaping and integer formatting are the ones RFC 8785 prescribes (checked against
/// `serde_json_canonicalizer` by `content_is_rfc8785` below). Re-canonicalising the event per
/// append cost more than hashing it.
#[derive(Serialize)]
struct Content<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<&'a str>,
    at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    data: &'a serde_json::value::RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip_commit: Option<&'a str>,
    kind: &'a str,
    seq: i64,
    tenant_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    v: u8,
}

pub(crate) fn ip_commit(salt: &str, ip: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"unicred-audit-ip\0");
    h.update(salt.as_bytes());
    h.update(b"\0");
    h.update(ip.as_bytes());
    hex(&h.finalize())
}

/// The canonical JSON of `row`'s hashed content; `None` unless its `data` is JSON. Stored
/// data is the canonical text written at append time: any other bytes change the hash.
fn canonical(row: &EventRow) -> Option<Vec<u8>> {
    let data = serde_json::from_str::<&serde_json::value::RawValue>(&row.data).ok()?;
    let content = Content {
        v: 1,
        tenant_id: &row.tenant_id,
        seq: row.seq,
        at: row.at,
        kind: &row.kind,
        actor: row.actor.as_deref(),
        user_id: row.user_id.as_deref(),
        client_id: row.client_id.as_deref(),
        ip_commit: row.ip_commit.as_deref(),
        data,
    };
    let mut out = Vec::with_capacity(256 + row.data.len());
    serde_json::to_writer(&mut out, &content).ok()?;
    Some(out)
}

/// The chain hash of `row` after `prev` (hex); `None` if `prev` is not a hash or the row's
/// data is not JSON.
pub(crate) fn hash_of(prev: &str, row: &EventRow) -> Option<String> {
    let prev: [u8; 32] = unhex(prev)?.try_into().ok()?;
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical(row)?);
    Some(hex(&h.finalize()))
}

/// The outcome of verifying one tenant's chain: `{"ok":true,"events","seq","head"}` or
/// `{"ok":false,"broken_at","reason"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Verification {
    pub ok: bool,
    /// Events verified (after pruning: since the base checkpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<i64>,
    /// Sequence number of the head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// Hash of the head (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// The first sequence number that does not verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Verification {
    fn ok(events: i64, seq: i64, head: String) -> Self {
        Verification {
            ok: true,
            events: Some(events),
            seq: Some(seq),
            head: Some(head),
            broken_at: None,
            reason: None,
        }
    }
    fn broken(at: i64, reason: impl Into<String>) -> Self {
        Verification {
            ok: false,
            events: None,
            seq: None,
            head: None,
            broken_at: Some(at),
            reason: Some(reason.into()),
        }
    }
}

/// Verifies `tenant_id`'s chain from its base (genesis, or the signed checkpoint it was pruned
/// to) to the head recorded in `audit_heads`, reading pages of [`PAGE`] rows. Detects changed,
/// deleted, inserted and reordered rows, and checks every stored checkpoint's signature against
/// the tenant's audit keys and its hash against the chain.
pub async fn verify(db: &Db, tenant_id: &str) -> Result<Verification, AuditError> {
    // The newest checkpoint is read before the head: heads only grow and checkpoints are taken
    // at a head, so one beyond the head read next means events (and the head) were cut back.
    let newest = sa::checkpoint_upto(db, tenant_id, i64::MAX).await?;
    let head = sa::head(&db.pool, tenant_id).await?;
    if let Some(c) = newest.filter(|c| head.as_ref().is_none_or(|h| c.seq > h.seq)) {
        let jwks = checkpoint::public_keys(db, tenant_id).await?;
        let reason = match checkpoint::verify_with(&jwks, &c.jws) {
            Ok(claims) if claims.tenant_id == tenant_id && claims.seq == c.seq && claims.hash == c.hash => {
                "a signed checkpoint lies beyond the chain's head: events were cut off"
            }
            _ => "checkpoint signature does not verify",
        };
        return Ok(Verification::broken(c.seq, reason));
    }
    let Some(head) = head else {
        // No head: there must be no events either.
        let first = sa::events(
            db,
            tenant_id,
            &Filter {
                after: i64::MIN,
                limit: 1,
                ..Filter::default()
            },
        )
        .await?;
        return Ok(match first.first() {
            Some(r) => Verification::broken(r.seq, "events without a chain head"),
            None => Verification::ok(0, 0, GENESIS.into()),
        });
    };
    verify_range(db, tenant_id, head.base_seq, &head.base_hash, head.seq, &head.hash).await
}

/// Verifies the chain from `(from_seq, from_hash)` (genesis or a checkpoint) to `(to_seq, to_hash)`.
pub(crate) async fn verify_range(
    db: &Db,
    tenant_id: &str,
    from_seq: i64,
    from_hash: &str,
    to_seq: i64,
    to_hash: &str,
) -> Result<Verification, AuditError> {
    let jwks = checkpoint::public_keys(db, tenant_id).await?;
    let mut cps = Vec::new();
    for c in sa::checkpoints(db, tenant_id, from_seq, to_seq).await? {
        match checkpoint::verify_with(&jwks, &c.jws) {
            Ok(CheckpointClaims {
                tenant_id: t,
                seq,
                hash,
                ..
            }) if t == tenant_id && seq == c.seq && hash == c.hash => cps.push((seq, hash)),
            _ => {
                return Ok(Verification::broken(
                    c.seq.max(1),
                    "checkpoint signature does not verify",
                ));
            }
        }
    }
    if from_seq > 0 && !cps.iter().any(|(s, h)| *s == from_seq && h == from_hash) {
        return Ok(Verification::broken(
            from_seq + 1,
            "the chain's base is not a signed checkpoint",
        ));
    }
    if from_seq == 0 && from_hash != GENESIS {
        return Ok(Verification::broken(1, "the chain does not start at genesis"));
    }
    let mut cps = cps.into_iter().filter(|(s, _)| *s > from_seq).peekable();
    let mut prev = from_hash.to_string();
    let mut expected = from_seq + 1;
    'pages: while expected <= to_seq {
        let rows = sa::events(
            db,
            tenant_id,
            &Filter {
                after: expected - 1,
                to: Some(to_seq),
                limit: PAGE,
                ..Filter::default()
            },
        )
        .await?;
        if rows.is_empty() {
            break 'pages;
        }
        for row in &rows {
            if row.seq != expected {
                return Ok(Verification::broken(expected, "event missing"));
            }
            if hash_of(&prev, row).as_deref() != Some(row.hash.as_str()) {
                return Ok(Verification::broken(row.seq, "hash mismatch"));
            }
            // An IP is kept with its salt and matches its commitment, or both were erased.
            let ip_ok = match (&row.ip, &row.ip_salt) {
                (Some(ip), Some(salt)) => row.ip_commit.as_deref() == Some(ip_commit(salt, ip).as_str()),
                (None, None) => true,
                _ => false,
            };
            if !ip_ok {
                return Ok(Verification::broken(row.seq, "ip does not match its commitment"));
            }
            while let Some((s, h)) = cps.next_if(|(s, _)| *s <= row.seq) {
                if s != row.seq || h != row.hash {
                    return Ok(Verification::broken(s, "checkpoint does not match the chain"));
                }
            }
            prev.clone_from(&row.hash);
            expected += 1;
        }
    }
    if expected <= to_seq {
        return Ok(Verification::broken(expected, "event missing"));
    }
    if prev != to_hash {
        return Ok(Verification::broken(to_seq.max(1), "head does not match the chain"));
    }
    Ok(Verification::ok(to_seq - from_seq, to_seq, prev))
}

/// One line of the offline report.
#[derive(Debug, Clone, Serialize)]
pub struct TenantVerification {
    pub tenant_id: String,
    pub slug: Option<String>,
    #[serde(flatten)]
    pub result: Verification,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub tenants: Vec<TenantVerification>,
}

impl VerifyReport {
    /// The first broken chain, if any.
    pub fn first_broken(&self) -> Option<&TenantVerification> {
        self.tenants.iter().find(|t| !t.result.ok)
    }
}

/// `unicred audit verify [--tenant SLUG]`: verifies one tenant's chain (deleted tenants
/// included) or every chain in the database. Needs only the database: checkpoint signatures
/// are checked with the public keys.
pub async fn verify_all(db: &Db, tenant: Option<&str>) -> Result<VerifyReport, AuditError> {
    let chains = match tenant {
        Some(slug) => {
            let id = sa::tenant_by_slug(db, slug)
                .await?
                .ok_or(AuditError::Store(StoreError::NotFound))?;
            vec![(id, Some(slug.to_string()))]
        }
        None => sa::chains(db).await?,
    };
    let mut tenants = Vec::with_capacity(chains.len());
    for (tenant_id, slug) in chains {
        let result = verify(db, &tenant_id).await?;
        tenants.push(TenantVerification {
            tenant_id,
            slug,
            result,
        });
    }
    Ok(VerifyReport {
        ok: tenants.iter().all(|t| t.result.ok),
        tenants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    fn row(fields: [Option<String>; 4], kind: String, data: &serde_json::Value) -> EventRow {
        let [actor, user_id, client_id, ip_commit] = fields;
        EventRow {
            tenant_id: kind.chars().rev().collect(),
            seq: 9_007_199_254_740_991,
            at: 1_795_000_000,
            kind,
            actor,
            user_id,
            client_id,
            ip_commit,
            data: serde_json_canonicalizer::to_string(data).unwrap(),
            hash: String::new(),
            ip: None,
            ip_salt: None,
        }
    }

    /// The hashed bytes are exactly RFC 8785's canonical JSON of the event, as an independent
    /// implementation (`serde_json_canonicalizer`) writes it: escapes, non-ASCII text, absent
    /// fields, nested and unsorted data.
    #[test]
    fn content_is_rfc8785() {
        const CHARS: &[char] = &[
            'a', 'Z', '0', ' ', '"', '\\', '/', '\u{0}', '\u{8}', '\t', '\n', '\u{b}', '\u{c}', '\r', '\u{1f}',
            '\u{7f}', 'é', '\u{2028}', '€', '😀', '\u{fffd}',
        ];
        let mut rng = rand::rng();
        let mut text = |n: usize| -> String { (0..n).map(|_| CHARS[rng.random_range(0..CHARS.len())]).collect() };
        for i in 0..500 {
            let fields = [0, 1, 2, 3].map(|f| (i >> f & 1 == 1).then(|| text(i % 9)));
            let data = serde_json::json!({
                text(3): text(5),
                "z": [1, -2, 3.5, 1e21, null, true, {"b": text(2), "a": 0}],
                "a": {"y": text(4), "x": i},
            });
            let r = row(fields, text(1 + i % 7), &data);
            let expected = serde_json_canonicalizer::to_vec(&serde_json::json!({
                "v": 1,
                "tenant_id": r.tenant_id,
                "seq": r.seq,
                "at": r.at,
                "kind": r.kind,
                "actor": r.actor,
                "user_id": r.user_id,
                "client_id": r.client_id,
                "ip_commit": r.ip_commit,
                "data": data,
            }))
            .map(|v| {
                // Absent optional fields are left out, not null.
                let mut o: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&v).unwrap();
                o.retain(|_, v| !v.is_null());
                serde_json_canonicalizer::to_vec(&o).unwrap()
            })
            .unwrap();
            assert_eq!(
                String::from_utf8(canonical(&r).unwrap()).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }

    #[test]
    fn data_that_is_not_json_has_no_hash() {
        let mut r = row([None, None, None, None], "x".into(), &serde_json::json!({}));
        assert!(hash_of(GENESIS, &r).is_some());
        r.data = "{".into();
        assert_eq!(hash_of(GENESIS, &r), None);
        r.data = "{}".into();
        assert_eq!(hash_of("not a hash", &r), None);
    }
}
