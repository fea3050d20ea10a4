//! Revoked access-token ids, held in memory and refreshed from the database at most one second
//! apart (DESIGN.md: a revocation is seen by every replica within a second). Each refresh
//! re-reads a window of recent revocations, so a row committed late or stamped by a replica
//! with a slightly different clock is still picked up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::store::{self, Db, StoreError};

/// How far back each refresh looks (covers commit delays and clock skew between replicas).
const WINDOW_SECS: i64 = 10;
const REFRESH: Duration = Duration::from_secs(1);

struct Feed {
    synced: Option<Instant>,
    revoked: HashMap<String, i64>,
}

pub struct Revocations {
    db: Db,
    feed: tokio::sync::Mutex<Feed>,
}

impl Revocations {
    pub fn new(db: Db) -> Self {
        Revocations {
            db,
            feed: tokio::sync::Mutex::new(Feed {
                synced: None,
                revoked: HashMap::new(),
            }),
        }
    }

    pub async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let mut feed = self.feed.lock().await;
        let fresh = feed.synced.is_some_and(|t| t.elapsed() < REFRESH);
        if !fresh {
            // First sync reads every unexpired revocation; later ones a recent window.
            let since = if feed.synced.is_none() {
                0
            } else {
                store::now() - WINDOW_SECS
            };
            let rows = store::revocations::since(&self.db, since).await?;
            let now = store::now();
            feed.revoked.retain(|_, exp| *exp >= now);
            feed.revoked.extend(rows);
            feed.synced = Some(Instant::now());
        }
        Ok(feed.revoked.contains_key(jti))
    }

    /// Revokes and makes it visible in this process at once.
    pub async fn revoke(&self, jti: &str, tenant_id: &str, expires_at: i64) -> Result<(), StoreError> {
        store::revocations::revoke(&self.db, jti, tenant_id, expires_at).await?;
        self.feed.lock().await.revoked.insert(jti.to_string(), expires_at);
        Ok(())
    }
}
