//! Revoked access-token ids, held in memory and refreshed from the database at most one second
//! apart (DESIGN.md: a revocation is seen by every replica within a second). Refreshes are
//! lazy (on the next check), so each one reads everything revoked since the previous refresh
//! began, minus a margin: a row committed late or stamped by a replica with a slightly
//! different clock is still picked up, however long the process went without a check.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::store::{self, Db, StoreError};

/// How far before the previous refresh each refresh looks (commit delays, clock skew).
const MARGIN_SECS: i64 = 10;
const REFRESH: Duration = Duration::from_secs(1);

struct Feed {
    /// When the last successful refresh began: monotonic, and wall-clock seconds.
    synced: Option<(Instant, i64)>,
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
        let fresh = feed.synced.is_some_and(|(t, _)| t.elapsed() < REFRESH);
        if !fresh {
            // The first refresh reads every unexpired revocation; later ones what is new since
            // the previous one (a fixed recent window would miss revocations made while this
            // process went without a check for longer than the window).
            let since = feed.synced.map_or(0, |(_, wall)| wall - MARGIN_SECS);
            let started = (Instant::now(), store::now());
            let rows = store::revocations::since(&self.db, since).await?;
            let now = store::now();
            feed.revoked.retain(|_, exp| *exp >= now);
            feed.revoked.extend(rows);
            feed.synced = Some(started);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_revocation_made_during_a_long_idle_spell_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite:{}/t.db", dir.path().display()), 2)
            .await
            .unwrap();
        db.migrate().await.unwrap();
        let feed = Revocations::new(db.clone());
        assert!(!feed.is_revoked("a").await.unwrap());
        // Another replica revoked "a" 30 s ago; this process last refreshed a minute ago.
        sqlx::query("insert into revoked_tokens (jti, tenant_id, expires_at, revoked_at) values ('a', 't', $1, $2)")
            .bind(store::now() + 300)
            .bind(store::now() - 30)
            .execute(&db.pool)
            .await
            .unwrap();
        feed.feed.lock().await.synced = Some((Instant::now() - 2 * REFRESH, store::now() - 60));
        assert!(feed.is_revoked("a").await.unwrap());
    }
}
