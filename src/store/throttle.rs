//! Per-account throttling keyed on (tenant, normalised username), whether or not the user
//! exists. An attempt is *reserved* (counted as a failure) before its password is checked,
//! with a compare-and-swap, so N parallel guesses can never evaluate more than the threshold.

use sqlx::any::AnyExecutor;

use super::{Db, Result};

pub enum Reservation {
    Allowed,
    Throttled { retry_after: i64 },
}

pub struct Rules {
    pub threshold: u32,
    pub max_delay: i64,
}

/// Delay after `failures` failures: none below the threshold, then 1 s, 2 s, 4 s … capped.
pub fn delay(rules: &Rules, failures: i64) -> i64 {
    if failures < rules.threshold as i64 {
        return 0;
    }
    let exp = (failures - rules.threshold as i64).min(30) as u32;
    (1i64 << exp).min(rules.max_delay)
}

pub async fn reserve(db: &Db, tenant_id: &str, username: &str, rules: &Rules) -> Result<Reservation> {
    // `next_allowed_at` is whole seconds; rounding the deadline up (rather than adding the
    // delay to a truncated `now`) makes every delay last at least its full length.
    let now_ms = now_millis();
    let t = now_ms / 1000;
    let next_after = |failures: i64| match delay(rules, failures) {
        0 => 0,
        d => deadline(now_ms, d),
    };
    // Below the threshold, one statement: insert the first attempt, or count one more on an
    // account that is not waiting out a delay. It changes nothing (and returns no row) when
    // the attempt would start or hit a delay, which needs the deadline computed here.
    let counted: Option<(i64,)> = sqlx::query_as(
        "insert into throttles (tenant_id, username, failures, next_allowed_at, updated_at) \
         values ($1, $2, 1, $3, $4) on conflict (tenant_id, username) do update \
         set failures = throttles.failures + 1, updated_at = $4 \
         where throttles.next_allowed_at <= $4 and throttles.failures + 1 < $5 \
         returning failures",
    )
    .bind(tenant_id)
    .bind(username)
    .bind(next_after(1))
    .bind(t)
    .bind(rules.threshold as i64)
    .fetch_optional(&db.pool)
    .await?;
    if counted.is_some() {
        return Ok(Reservation::Allowed);
    }
    // Otherwise two statements: a read, then a compare-and-swap of the count with its
    // deadline (it fails, and the loop re-reads, if a parallel attempt got there first).
    for _ in 0..8 {
        let row: Option<(i64, i64)> =
            sqlx::query_as("select failures, next_allowed_at from throttles where tenant_id = $1 and username = $2")
                .bind(tenant_id)
                .bind(username)
                .fetch_optional(&db.pool)
                .await?;
        let Some((failures, next_allowed_at)) = row else {
            let r = sqlx::query(
                "insert into throttles (tenant_id, username, failures, next_allowed_at, updated_at) \
                 values ($1, $2, 1, $3, $4) on conflict (tenant_id, username) do nothing",
            )
            .bind(tenant_id)
            .bind(username)
            .bind(next_after(1))
            .bind(t)
            .execute(&db.pool)
            .await?;
            if r.rows_affected() == 1 {
                return Ok(Reservation::Allowed);
            }
            continue;
        };
        if next_allowed_at * 1000 > now_ms {
            return Ok(Reservation::Throttled {
                retry_after: (next_allowed_at - t).max(1),
            });
        }
        let r = sqlx::query(
            "update throttles set failures = $1, next_allowed_at = $2, updated_at = $3 \
             where tenant_id = $4 and username = $5 and failures = $6",
        )
        .bind(failures + 1)
        .bind(next_after(failures + 1))
        .bind(t)
        .bind(tenant_id)
        .bind(username)
        .bind(failures)
        .execute(&db.pool)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(Reservation::Allowed);
        }
    }
    // Heavy contention on one account: treat as throttled rather than spin.
    Ok(Reservation::Throttled { retry_after: 1 })
}

/// The first whole second at or after `now_ms + delay` seconds.
fn deadline(now_ms: i64, delay: i64) -> i64 {
    (now_ms + delay * 1000 + 999) / 1000
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// After full authentication (every required factor): the account starts clean.
pub async fn reset(ex: impl AnyExecutor<'_>, tenant_id: &str, username: &str) -> Result<()> {
    sqlx::query("delete from throttles where tenant_id = $1 and username = $2")
        .bind(tenant_id)
        .bind(username)
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn get(db: &Db, tenant_id: &str, username: &str) -> Result<Option<(i64, i64)>> {
    Ok(
        sqlx::query_as("select failures, next_allowed_at from throttles where tenant_id = $1 and username = $2")
            .bind(tenant_id)
            .bind(username)
            .fetch_optional(&db.pool)
            .await?,
    )
}

/// Counters idle for a day whose delay has run out: every name ever tried leaves a row
/// (unknown ones too), so without this the table grows with every guess. Forgetting such a
/// counter gives at most `threshold` more undelayed guesses a day, against the 96 a day the
/// capped delay allows anyway.
pub async fn purge_idle(db: &Db) -> Result<u64> {
    let now = super::now();
    let r = sqlx::query("delete from throttles where updated_at < $1 and next_allowed_at < $2")
        .bind(now - 86_400)
        .bind(now)
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_cap() {
        let r = Rules {
            threshold: 5,
            max_delay: 900,
        };
        let d: Vec<i64> = (0..20).map(|f| delay(&r, f)).collect();
        assert_eq!(&d[..8], &[0, 0, 0, 0, 0, 1, 2, 4]);
        assert_eq!(d[19], 900);
    }

    #[test]
    fn a_delay_is_never_cut_short_by_the_second_boundary() {
        // 0.999 s into a second, a 1 s delay must still end no earlier than 1 s later.
        assert_eq!(deadline(100_999, 1), 102);
        assert_eq!(deadline(100_000, 1), 101);
        assert_eq!(deadline(100_001, 2), 103);
    }
}
