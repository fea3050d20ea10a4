//! The audit trail: one linear chain per tenant under concurrent appends from two replicas,
//! tamper detection, signed checkpoints, pruning, streamed export. Runs on SQLite, and on
//! PostgreSQL when UNICRED_TEST_DATABASE_URL points at one.

mod common;

use std::collections::BTreeSet;

use common::{Server, test_config};
use serde_json::{Value, json};
use unicred::AppState;
use unicred::audit::{Event, Verification, verify, verify_all, verify_checkpoint};

/// The server's router plus the audit routes (the lead mounts them in http/router.rs), served
/// on its own port; returns its base URL.
async fn serve_with_audit(s: &Server) -> String {
    let app = unicred::http::router::router(s.state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    url
}

/// A tenant row made directly, so that its chain holds only the events a test records (the
/// admin API and `tenants::create` add `tenant.created`; these tests sign no tokens).
async fn make_tenant(s: &Server, slug: &str) {
    unicred::store::tenants::create(&s.state.db.pool, &unicred::store::new_id(), slug, slug, "{}")
        .await
        .unwrap();
}

async fn tenant_id(s: &Server, slug: &str) -> String {
    s.state.tenants.by_slug(slug).await.unwrap().unwrap().id.clone()
}

/// Records `n` events for `tenant_id` concurrently; returns their sequence numbers.
async fn record_many(state: &AppState, tenant_id: &str, n: usize) -> Vec<i64> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let audit = state.audit.clone();
        let ev = Event::new(tenant_id, if i % 2 == 0 { "signin.failure" } else { "signin.success" })
            .user(format!("user-{}", i % 7))
            .client("app-1")
            .ip(Some(std::net::Ipv4Addr::new(192, 0, 2, (i % 250) as u8).into()))
            .data(json!({"i": i, "reason": "bad_password"}));
        set.spawn(async move { audit.record(ev).await.unwrap().seq });
    }
    set.join_all().await
}

#[track_caller]
fn assert_ok(v: &Verification, events: i64) {
    assert!(v.ok, "{v:?}");
    assert_eq!(v.events, Some(events), "{v:?}");
}

#[track_caller]
fn assert_broken(v: &Verification, at: i64) {
    assert!(!v.ok, "{v:?}");
    assert_eq!(v.broken_at, Some(at), "{v:?}");
}

#[tokio::test]
async fn concurrent_appends_from_two_replicas_form_one_chain() {
    let s = Server::start().await;
    make_tenant(&s, "bank").await;
    make_tenant(&s, "clinic").await;
    let bank = tenant_id(&s, "bank").await;
    let clinic = tenant_id(&s, "clinic").await;
    // A second replica: its own state, writer task and pool on the same database and keys.
    let tmp = tempfile::tempdir().unwrap();
    let replica = AppState::build(test_config(&s.db_url, &s.keys_dir, tmp.path()))
        .await
        .unwrap();

    let (a, b, c) = tokio::join!(
        record_many(&s.state, &bank, 300),
        record_many(&replica, &bank, 300),
        record_many(&replica, &clinic, 100),
    );
    let mut seqs: BTreeSet<i64> = a.iter().chain(&b).copied().collect();
    // Then many small rounds, so each replica's cached head goes stale again and again.
    for _ in 0..30 {
        let (a, b) = tokio::join!(record_many(&s.state, &bank, 5), record_many(&replica, &bank, 5));
        seqs.extend(a.iter().chain(&b));
    }
    assert_eq!(seqs, (1..=900).collect(), "one gap-free sequence across both replicas");
    // A replica whose cached head went stale appended again, and says so in its metrics.
    let rendered = s.state.metrics.render();
    assert!(
        rendered
            .lines()
            .any(|l| l.starts_with("unicred_audit_retries_total{cause=\"moved\"}") && !l.ends_with(" 0")),
        "{rendered}"
    );
    assert_eq!(c.iter().copied().collect::<BTreeSet<_>>(), (1..=100).collect());

    let v = verify(&s.state.db, &bank).await.unwrap();
    assert_ok(&v, 900);
    assert_eq!(v.seq, Some(900));
    assert_ok(&verify(&s.state.db, &clinic).await.unwrap(), 100);

    // One event: acknowledged means stored.
    let r = s
        .state
        .audit
        .record(Event::new(&bank, "user.deleted").actor("admin:x").user("user-1"))
        .await
        .unwrap();
    assert_eq!(r.seq, 901);
    assert_eq!(verify(&s.state.db, &bank).await.unwrap().head, Some(r.hash));

    // Bad events are refused before they reach the chain.
    for bad in [
        Event::new(&bank, "Sign In"),
        Event::new(&bank, "x").data(json!([1])),
        Event::new(&bank, "x").data(json!({"blob": "a".repeat(10_000)})),
    ] {
        assert!(s.state.audit.record(bad).await.is_err());
    }

    let report = verify_all(&s.state.db, None).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert!(report.tenants.iter().any(|t| t.slug.as_deref() == Some("bank")));
    replica.db.pool.close().await;
    let db_url = s.db_url.clone();
    s.stop().await;
    if db_url.starts_with("postgres") {
        assert_eq!(
            deadlocks(&db_url).await,
            0,
            "two replicas' appends never wait for each other in a cycle"
        );
    }
}

/// Deadlocks PostgreSQL detected in the database of `url`, once every other session has ended
/// (a session's counters reach the statistics when it exits).
async fn deadlocks(url: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    for _ in 0..100 {
        let (others,): (i64,) = sqlx::query_as(
            "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if others == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (n,): (i64,) = sqlx::query_as("select deadlocks from pg_stat_database where datname = current_database()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    n
}

async fn exec(s: &Server, sql: &str, args: &[&str]) {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
    for a in args {
        q = q.bind(a.to_string());
    }
    let r = q.execute(&s.state.db.pool).await.unwrap();
    assert!(r.rows_affected() > 0, "{sql}");
}

async fn data_of(s: &Server, tenant: &str, seq: i64) -> String {
    let (d,): (String,) = sqlx::query_as("select data from audit_events where tenant_id = $1 and seq = $2")
        .bind(tenant)
        .bind(seq)
        .fetch_one(&s.state.db.pool)
        .await
        .unwrap();
    d
}

#[tokio::test]
async fn tampering_in_the_database_is_detected() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    let mut tenants = Vec::new();
    for slug in ["updated", "deleted", "swapped", "truncated", "erased", "cut"] {
        make_tenant(&s, slug).await;
        let id = tenant_id(&s, slug).await;
        record_many(&s.state, &id, 10).await;
        assert_ok(&verify(&s.state.db, &id).await.unwrap(), 10);
        tenants.push(id);
    }
    let [updated, deleted, swapped, truncated, erased, cut] = &tenants[..] else {
        unreachable!()
    };

    exec(
        &s,
        "update audit_events set data = $1 where tenant_id = $2 and seq = 5",
        &[r#"{"i":999}"#, updated],
    )
    .await;
    assert_broken(&verify(&s.state.db, updated).await.unwrap(), 5);

    exec(
        &s,
        "delete from audit_events where tenant_id = $1 and seq = 5",
        &[deleted],
    )
    .await;
    assert_broken(&verify(&s.state.db, deleted).await.unwrap(), 5);
    // Putting the deleted row back, or adding one that does not follow the head, is refused
    // by the database itself (the head trigger).
    for seq in [5, 12] {
        let r = sqlx::query(
            "insert into audit_events (tenant_id, seq, at, kind, data, hash) values ($1, $2, 0, 'x', '{}', 'h')",
        )
        .bind(deleted.as_str())
        .bind(seq as i64)
        .execute(&s.state.db.pool)
        .await;
        let e = r.expect_err("an out-of-sequence event was stored");
        assert!(e.to_string().contains("audit chain head moved"), "{e}");
    }
    // Nor a batch with a gap in it (one statement, as the writer appends), though it starts
    // right after the head.
    let (head,): (i64,) = sqlx::query_as("select seq from audit_heads where tenant_id = $1")
        .bind(deleted.as_str())
        .fetch_one(&s.state.db.pool)
        .await
        .unwrap();
    let r = sqlx::query(
        "insert into audit_events (tenant_id, seq, at, kind, data, hash) \
         values ($1, $2, 0, 'x', '{}', 'h'), ($1, $3, 0, 'x', '{}', 'h')",
    )
    .bind(deleted.as_str())
    .bind(head + 1)
    .bind(head + 3)
    .execute(&s.state.db.pool)
    .await;
    let e = r.expect_err("a batch with a gap was stored");
    assert!(e.to_string().contains("audit chain head moved"), "{e}");

    let (d3, d7) = (data_of(&s, swapped, 3).await, data_of(&s, swapped, 7).await);
    exec(
        &s,
        "update audit_events set data = $1 where tenant_id = $2 and seq = 3",
        &[&d7, swapped],
    )
    .await;
    exec(
        &s,
        "update audit_events set data = $1 where tenant_id = $2 and seq = 7",
        &[&d3, swapped],
    )
    .await;
    assert_broken(&verify(&s.state.db, swapped).await.unwrap(), 3);

    exec(
        &s,
        "delete from audit_events where tenant_id = $1 and seq >= 9",
        &[truncated],
    )
    .await;
    assert_broken(&verify(&s.state.db, truncated).await.unwrap(), 9);

    // Cutting the tail off, head and all, back past a signed checkpoint: the checkpoint says so.
    assert_eq!(s.state.audit.checkpoint(cut).await.unwrap().seq, 10);
    exec(&s, "delete from audit_events where tenant_id = $1 and seq >= 8", &[cut]).await;
    let (h7,): (String,) = sqlx::query_as("select hash from audit_events where tenant_id = $1 and seq = 7")
        .bind(cut)
        .fetch_one(&s.state.db.pool)
        .await
        .unwrap();
    exec(
        &s,
        "update audit_heads set seq = 7, hash = $1 where tenant_id = $2",
        &[&h7, cut],
    )
    .await;
    let v = verify(&s.state.db, cut).await.unwrap();
    assert_broken(&v, 10);
    assert!(
        v.reason.as_deref().unwrap().contains("beyond the chain's head"),
        "{v:?}"
    );
    // And with the head row gone as well.
    exec(&s, "delete from audit_events where tenant_id = $1", &[cut]).await;
    exec(&s, "delete from audit_heads where tenant_id = $1", &[cut]).await;
    assert_broken(&verify(&s.state.db, cut).await.unwrap(), 10);

    // Erasing a user's personal data leaves the chain verifiable; changing an IP does not.
    assert!(
        unicred::audit::erase_user(&s.state.db.pool, erased, "user-3")
            .await
            .unwrap()
            > 0
    );
    assert_ok(&verify(&s.state.db, erased).await.unwrap(), 10);
    let (first_ip,): (i64,) =
        sqlx::query_as("select min(seq) from audit_events where tenant_id = $1 and ip is not null")
            .bind(erased)
            .fetch_one(&s.state.db.pool)
            .await
            .unwrap();
    exec(
        &s,
        &format!("update audit_events set ip = '203.0.113.9' where tenant_id = $1 and seq = {first_ip}"),
        &[erased],
    )
    .await;
    assert_broken(&verify(&s.state.db, erased).await.unwrap(), first_ip);
    // Nor does dropping the salt, which would leave a changed IP uncheckable.
    exec(
        &s,
        &format!("update audit_events set ip_salt = null where tenant_id = $1 and seq = {first_ip}"),
        &[erased],
    )
    .await;
    assert_broken(&verify(&s.state.db, erased).await.unwrap(), first_ip);

    // The offline check names the first broken chain.
    let report = verify_all(&s.state.db, Some("swapped")).await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_broken().unwrap().result.broken_at, Some(3));

    // The API says the same.
    let url = serve_with_audit(&s).await;
    let r: Value = s
        .http
        .get(format!("{url}/admin/v1/tenants/deleted/audit/verify"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (r["ok"].clone(), r["broken_at"].clone()),
        (json!(false), json!(5)),
        "{r}"
    );
    // A broken chain is never signed.
    let r = s
        .http
        .post(format!("{url}/admin/v1/tenants/updated/audit/checkpoint"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // A checkpoint scans the log like verify and export: with every scan permit taken, 503.
    let held: Vec<_> = std::iter::from_fn(|| s.state.audit.scan_permit()).collect();
    assert!(!held.is_empty());
    let r = s
        .http
        .post(format!("{url}/admin/v1/tenants/erased/audit/checkpoint"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    drop(held);
    s.stop().await;
}

/// Checks a checkpoint JWS with jsonwebtoken and the JWKS served over HTTP.
fn check_independently(jwks: &Value, jws: &str) -> Value {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let header = jsonwebtoken::decode_header(jws).unwrap();
    assert_eq!(header.typ.as_deref(), Some("audit-checkpoint+jwt"));
    let jwk = set.find(header.kid.as_deref().unwrap()).expect("kid published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_aud = false;
    jsonwebtoken::decode::<Value>(jws, &key, &v).unwrap().claims
}

#[tokio::test]
async fn checkpoints_verify_with_published_keys_and_anchor_pruning() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    make_tenant(&s, "bank").await;
    let bank = tenant_id(&s, "bank").await;
    let url = serve_with_audit(&s).await;
    record_many(&s.state, &bank, 30).await;

    let r = s
        .http
        .post(format!("{url}/admin/v1/tenants/bank/audit/checkpoint"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let cp: Value = r.json().await.unwrap();
    assert_eq!(cp["seq"], 30);
    let jws = cp["jws"].as_str().unwrap().to_string();
    let jwks_url = format!("{url}/t/bank/audit-keys.json");
    let jwks: Value = s.http.get(&jwks_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    let claims = check_independently(&jwks, &jws);
    assert_eq!(claims["seq"], 30);
    assert_eq!(claims["tenant_id"], bank.as_str());
    let v = verify(&s.state.db, &bank).await.unwrap();
    assert_eq!(claims["hash"], json!(v.head.unwrap()));
    assert_eq!(verify_checkpoint(&jwks, &jws).unwrap().seq, 30);
    // Not a token signing key: the tenant's JWKS does not verify it, and vice versa.
    let token_jwks: Value = s
        .http
        .get(format!("{}/t/bank/jwks.json", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(verify_checkpoint(&token_jwks, &jws).is_err());
    // A forged payload fails.
    let mut parts: Vec<&str> = jws.split('.').collect();
    let other = base64_url(&json!({"tenant_id": bank, "seq": 30, "hash": "00", "iat": 0}).to_string());
    parts[1] = &other;
    assert!(verify_checkpoint(&jwks, &parts.join(".")).is_err());

    // Rotating the tenant's token signing keys (even an emergency) leaves audit keys alone.
    let e = unicred::audit::Event::new(&bank, "keys.rotated").actor("test");
    s.state.keys.rotate(&bank, true, &s.state.audit, e).await.unwrap();
    let after: Value = s.http.get(&jwks_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(after, jwks);
    check_independently(&after, &jws);

    // A new audit key signs later checkpoints; the old one stays published.
    s.state.audit.rotate_key(&bank).await.unwrap();
    record_many(&s.state, &bank, 10).await;
    let cp2 = s.state.audit.checkpoint(&bank).await.unwrap();
    assert_eq!(cp2.seq, 41, "30 events, the keys.rotated event, 10 more");
    let jwks2: Value = s.http.get(&jwks_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks2["keys"].as_array().unwrap().len(), 2);
    check_independently(&jwks2, &jws);
    check_independently(&jwks2, &cp2.jws);
    assert_ne!(cp2.kid, cp["kid"].as_str().unwrap());

    // Pruning stops at a checkpoint and the rest still verifies from it.
    record_many(&s.state, &bank, 5).await;
    let err = s.state.audit.prune(&bank, 30, "cli").await.unwrap_err();
    assert!(matches!(err, unicred::audit::AuditError::NoCheckpoint(_)), "{err}");
    let p = s.state.audit.prune(&bank, 35, "cli").await.unwrap();
    assert_eq!((p.deleted, p.base_seq), (30, 30));
    // The pruning itself is an event of the chain (seq 47), naming the new base.
    let (kind, data): (String, String) =
        sqlx::query_as("select kind, data from audit_events where tenant_id = $1 and seq = 47")
            .bind(&bank)
            .fetch_one(&s.state.db.pool)
            .await
            .unwrap();
    assert_eq!(kind, "audit.pruned");
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(
        (data["base_seq"].as_i64(), data["deleted"].as_i64()),
        (Some(30), Some(30))
    );
    assert_eq!(data["base_hash"], json!(cp["hash"]));
    assert_ok(&verify(&s.state.db, &bank).await.unwrap(), 17);
    let p = s.state.audit.prune(&bank, 45, "cli").await.unwrap();
    assert_eq!((p.deleted, p.base_seq), (11, 41));
    let v = verify(&s.state.db, &bank).await.unwrap();
    assert_ok(&v, 7);
    assert_eq!(v.seq, Some(48));
    // Appending and verifying go on after pruning; tampering after the base is still caught.
    record_many(&s.state, &bank, 5).await;
    assert_ok(&verify(&s.state.db, &bank).await.unwrap(), 12);
    exec(
        &s,
        "delete from audit_events where tenant_id = $1 and seq = 42",
        &[&bank],
    )
    .await;
    assert_broken(&verify(&s.state.db, &bank).await.unwrap(), 42);
    // The keys stay published once the tenant is deleted: its checkpoints stay verifiable.
    let r = s
        .http
        .delete(format!("{url}/admin/v1/tenants/bank"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        s.http
            .get(format!("{url}/t/bank/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "the tenant is gone"
    );
    let kept: Value = s.http.get(&jwks_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(kept, jwks2);
    check_independently(&kept, &cp2.jws);
    s.stop().await;
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn query_pages_and_large_export_streams() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    make_tenant(&s, "bank").await;
    let bank = tenant_id(&s, "bank").await;
    let url = serve_with_audit(&s).await;
    const N: usize = 20_000;
    let started = std::time::Instant::now();
    record_many(&s.state, &bank, N).await;
    eprintln!("recorded {N} events in {:?}", started.elapsed());

    // Cursor paging with filters.
    let mut after = 0;
    let mut seen = 0;
    loop {
        let r: Value = s
            .http
            .get(format!(
                "{url}/admin/v1/tenants/bank/audit?type=signin.failure&user_id=user-3&limit=200&after={after}"
            ))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in r["items"].as_array().unwrap() {
            assert_eq!(
                (e["type"].as_str(), e["user_id"].as_str()),
                (Some("signin.failure"), Some("user-3"))
            );
            assert!(e["seq"].as_i64().unwrap() > after);
            seen += 1;
        }
        match r["next_after"].as_i64() {
            Some(n) => after = n,
            None => break,
        }
    }
    let (expected,): (i64,) = sqlx::query_as(
        "select count(*) from audit_events where tenant_id = $1 and kind = 'signin.failure' and user_id = 'user-3'",
    )
    .bind(&bank)
    .fetch_one(&s.state.db.pool)
    .await
    .unwrap();
    assert_eq!(seen, expected);
    let r = s
        .http
        .get(format!("{url}/admin/v1/tenants/bank/audit?limit=500"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    // Export: streamed (no Content-Length), read chunk by chunk and split into lines.
    let started = std::time::Instant::now();
    let mut r = s
        .http
        .get(format!("{url}/admin/v1/tenants/bank/audit/export"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    assert!(r.headers().get("content-length").is_none());
    let (mut buf, mut chunks, mut lines, mut last) = (Vec::new(), 0, 0, 0);
    while let Some(chunk) = r.chunk().await.unwrap() {
        chunks += 1;
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let e: Value = serde_json::from_slice(&line).unwrap();
            let seq = e["seq"].as_i64().unwrap();
            assert_eq!(seq, last + 1);
            assert!(e["hash"].is_string() && e["data"].is_object());
            last = seq;
            lines += 1;
        }
    }
    assert!(buf.is_empty());
    assert_eq!((lines, last), (N, N as i64));
    assert!(chunks > 1, "streamed in pieces");
    eprintln!("exported {N} events in {:?} ({chunks} chunks)", started.elapsed());

    let part = s
        .http
        .get(format!("{url}/admin/v1/tenants/bank/audit/export?from=101&to=250"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let seqs: Vec<i64> = part
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (101..=250).collect::<Vec<_>>());

    let started = std::time::Instant::now();
    assert_ok(&verify(&s.state.db, &bank).await.unwrap(), N as i64);
    eprintln!("verified {N} events in {:?}", started.elapsed());
    s.stop().await;
}
