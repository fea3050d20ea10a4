//! Passwords and the first-party sign-in API: tickets, no enumeration, throttling (also across
//! two processes on one database), upgrades on login, legacy import, shedding, fairness.

mod common;

use std::sync::atomic::Ordering;

use common::Server;
use reqwest::Method;
use serde_json::{Value, json};

const PW: &str = "violet-harbour-lantern-42";

async fn signin(s: &Server) -> (String, String, String) {
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    s.user(&admin, "bank", "alice", PW).await;
    let (id, secret) = s.authn_client(&admin, "bank").await;
    (admin, id, secret)
}

#[tokio::test]
async fn signin_issues_a_one_time_ticket_for_the_same_client() {
    let s = Server::start().await;
    let (admin, id, secret) = signin(&s).await;
    let r = s.authn("bank", &id, &secret, "Alice", PW).await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["status"], "SUCCESS");
    assert_eq!(b["expires_in"], 60);
    let ticket = b["login_ticket"].as_str().unwrap().to_string();

    // Another client of the same tenant cannot redeem it (and burns it trying).
    let (id2, secret2) = s.authn_client(&admin, "bank").await;
    let r2 = s
        .authn("bank", &id, &secret, "alice", PW)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let ticket2 = r2["login_ticket"].as_str().unwrap().to_string();
    assert_eq!(
        s.redeem_ticket("bank", &id2, &secret2, &ticket2, "openid").await.1["error"],
        "invalid_grant"
    );
    assert_eq!(
        s.redeem_ticket("bank", &id, &secret, &ticket2, "openid").await.1["error"],
        "invalid_grant"
    );

    let (st, tok) = s
        .redeem_ticket("bank", &id, &secret, &ticket, "openid accounts:read")
        .await;
    assert_eq!(st, 200, "{tok}");
    let jwks: Value = s
        .http
        .get(format!("{}/t/bank/jwks.json", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let idt = tok["id_token"].as_str().unwrap();
    let h = jsonwebtoken::decode_header(idt).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(set.find(h.kid.as_deref().unwrap()).unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(h.alg);
    v.set_issuer(&[s.issuer("bank")]);
    v.set_audience(&[&id]);
    let claims = jsonwebtoken::decode::<Value>(idt, &key, &v).unwrap().claims;
    assert_eq!(claims["sub"], b["user_id"]);
    assert_eq!(claims["amr"], json!(["pwd"]));
    assert_eq!(claims["acr"], "urn:unicred:acr:pwd");
    assert!(claims["at_hash"].is_string() && claims["auth_time"].is_i64());
    let intro = s
        .introspect("bank", &id, &secret, tok["access_token"].as_str().unwrap())
        .await;
    assert_eq!(intro["active"], true);
    assert_eq!(intro["sub"], b["user_id"]);

    // Single use; admin scopes can never be asked for; an expired ticket is refused.
    assert_eq!(
        s.redeem_ticket("bank", &id, &secret, &ticket, "openid").await.1["error"],
        "invalid_grant"
    );
    let t3 = s
        .authn("bank", &id, &secret, "alice", PW)
        .await
        .json::<Value>()
        .await
        .unwrap()["login_ticket"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        s.redeem_ticket("bank", &id, &secret, &t3, "openid tenant-admin")
            .await
            .1["error"],
        "invalid_scope"
    );
    let t4 = s
        .authn("bank", &id, &secret, "alice", PW)
        .await
        .json::<Value>()
        .await
        .unwrap()["login_ticket"]
        .as_str()
        .unwrap()
        .to_string();
    sqlx::query("update login_tickets set expires_at = 0")
        .execute(&s.state.db.pool)
        .await
        .unwrap();
    assert_eq!(
        s.redeem_ticket("bank", &id, &secret, &t4, "openid").await.1["error"],
        "invalid_grant"
    );

    // Disabling the user revokes what was issued.
    let (_, page) = s
        .admin(Method::GET, "/admin/v1/tenants/bank/users?q=alice", &admin, None)
        .await;
    let uid = page["items"][0]["id"].as_str().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    s.admin(
        Method::PATCH,
        &format!("/admin/v1/tenants/bank/users/{uid}"),
        &admin,
        Some(json!({"status": "disabled"})),
    )
    .await;
    assert_eq!(
        s.introspect("bank", &id, &secret, tok["access_token"].as_str().unwrap())
            .await["active"],
        false
    );
    assert_eq!(s.authn("bank", &id, &secret, "alice", PW).await.status(), 401);

    // A client without authn_api is refused.
    let (id3, secret3) = s.client(&admin, "bank", json!({"name": "plain"})).await;
    assert_eq!(s.authn("bank", &id3, &secret3, "alice", PW).await.status(), 400);
    s.stop().await;
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_look_the_same() {
    let s = Server::start().await;
    let (_, id, secret) = signin(&s).await;
    let strip = |r: &reqwest::Response| {
        let mut h: Vec<(String, String)> = r
            .headers()
            .iter()
            .filter(|(k, _)| !["date", "x-request-id"].contains(&k.as_str()))
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        h.sort();
        h
    };
    let before = s.state.passwords.verifications.load(Ordering::SeqCst);
    let a = s.authn("bank", &id, &secret, "alice", "wrong-password-x").await;
    let b = s.authn("bank", &id, &secret, "mallory", "wrong-password-x").await;
    let c = s
        .authn("bank", &id, &secret, "not a valid name!", "wrong-password-x")
        .await;
    assert_eq!(
        s.state.passwords.verifications.load(Ordering::SeqCst) - before,
        3,
        "unknown users cost a hash too"
    );
    let (ha, hb, hc) = (strip(&a), strip(&b), strip(&c));
    let (sa, sb, sc) = (a.status(), b.status(), c.status());
    let (ba, bb, bc) = (
        a.text().await.unwrap(),
        b.text().await.unwrap(),
        c.text().await.unwrap(),
    );
    assert_eq!(
        (sa.as_u16(), &ba),
        (401, &r#"{"error":"invalid_credentials"}"#.to_string())
    );
    assert_eq!((sa, &ba, &ha), (sb, &bb, &hb));
    assert_eq!((sa, &ba, &ha), (sc, &bc, &hc));
    s.stop().await;
}

#[tokio::test]
async fn throttling_delays_after_the_threshold_and_resets_on_success() {
    let s = Server::start().await;
    let (admin, id, secret) = signin(&s).await;
    s.admin(
        Method::PATCH,
        "/admin/v1/tenants/bank",
        &admin,
        Some(json!({"policy": {"lockout_threshold": 3}})),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for _ in 0..3 {
        assert_eq!(
            s.authn("bank", &id, &secret, "alice", "nope-nope-nope").await.status(),
            401
        );
    }
    // Within the delay even the right password is refused, without a hash.
    let before = s.state.passwords.verifications.load(Ordering::SeqCst);
    assert_eq!(s.authn("bank", &id, &secret, "alice", PW).await.status(), 401);
    assert_eq!(s.state.passwords.verifications.load(Ordering::SeqCst), before);
    // Unknown users are throttled the same way.
    for _ in 0..4 {
        s.authn("bank", &id, &secret, "ghost", "nope-nope-nope").await;
    }
    let before = s.state.passwords.verifications.load(Ordering::SeqCst);
    s.authn("bank", &id, &secret, "ghost", "nope-nope-nope").await;
    assert_eq!(s.state.passwords.verifications.load(Ordering::SeqCst), before);
    // After the 1 s delay the right password gets through and clears the counter.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(s.authn("bank", &id, &secret, "alice", PW).await.status(), 200);
    let (_, page) = s
        .admin(Method::GET, "/admin/v1/tenants/bank/users?q=alice", &admin, None)
        .await;
    let uid = page["items"][0]["id"].as_str().unwrap();
    let (_, th) = s
        .admin(
            Method::GET,
            &format!("/admin/v1/tenants/bank/users/{uid}/throttle"),
            &admin,
            None,
        )
        .await;
    assert_eq!(th["failures"], 0);
    // Admin lock and unlock.
    let (st, u) = s
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/bank/users/{uid}/lock"),
            &admin,
            None,
        )
        .await;
    assert_eq!((st.as_u16(), u["status"].as_str()), (200, Some("locked")));
    assert_eq!(s.authn("bank", &id, &secret, "alice", PW).await.status(), 401);
    let (_, u) = s
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/bank/users/{uid}/unlock"),
            &admin,
            None,
        )
        .await;
    assert_eq!(u["status"], "active");
    assert_eq!(s.authn("bank", &id, &secret, "alice", PW).await.status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn fifty_parallel_guesses_evaluate_at_most_the_threshold() {
    let s = Server::start().await;
    let (_, id, secret) = signin(&s).await;
    let before = s.state.passwords.verifications.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (http, url, id, secret) = (s.http.clone(), s.url.clone(), id.clone(), secret.clone());
        tasks.push(tokio::spawn(async move {
            http.post(format!("{url}/t/bank/authn"))
                .basic_auth(id, Some(secret))
                .json(&json!({"username": "alice", "password": format!("guess-{i}-xxxxxxxx")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        let st = t.await.unwrap();
        assert!(st == 401 || st == 503, "{st}");
    }
    let checks = s.state.passwords.verifications.load(Ordering::SeqCst) - before;
    assert!(checks <= 5, "{checks} real password checks for 50 parallel guesses");
    s.stop().await;
}

#[tokio::test]
async fn throttling_is_shared_by_two_processes_on_one_database() {
    let a = Server::start().await;
    let (_, id, secret) = signin(&a).await;
    let tmp = tempfile::tempdir().unwrap();
    let b = Server::start_with(common::test_config(&a.db_url, &a.keys_dir, tmp.path()), Some(tmp)).await;
    for _ in 0..5 {
        assert_eq!(
            a.authn("bank", &id, &secret, "alice", "nope-nope-nope").await.status(),
            401
        );
    }
    let before = b.state.passwords.verifications.load(Ordering::SeqCst);
    assert_eq!(b.authn("bank", &id, &secret, "alice", PW).await.status(), 401);
    assert_eq!(
        b.state.passwords.verifications.load(Ordering::SeqCst),
        before,
        "the other process refuses without a hash"
    );
    b.stop().await;
    a.stop().await;
}

async fn stored_hash(s: &Server) -> (String, Option<i64>) {
    sqlx::query_as("select password_hash, pepper_version from users where username = 'alice'")
        .fetch_one(&s.state.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn pepper_rotation_and_parameter_upgrade_on_login() {
    let s = Server::start().await;
    let (admin, id, secret) = signin(&s).await;
    let (h1, v1) = stored_hash(&s).await;
    assert_eq!(v1, Some(1));
    assert!(h1.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    let v = s
        .state
        .keyring
        .rotate(&s.state.db, unicred::crypto::keyring::Kind::Pepper)
        .await
        .unwrap();
    assert_eq!(v, 2);
    assert_eq!(
        s.authn("bank", &id, &secret, "alice", PW).await.status(),
        200,
        "old pepper still verifies"
    );
    let (h2, v2) = stored_hash(&s).await;
    assert_eq!(v2, Some(2), "upgraded to the new pepper");
    assert_ne!(h1, h2);
    let (st, b) = s
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/bank",
            &admin,
            Some(json!({"policy": {"argon2": {"m_kib": 24576, "t": 2, "p": 1}}})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(s.authn("bank", &id, &secret, "alice", PW).await.status(), 200);
    let (h3, _) = stored_hash(&s).await;
    assert!(h3.starts_with("$argon2id$v=19$m=24576,t=2,p=1$"), "{h3}");
    assert_eq!(s.authn("bank", &id, &secret, "alice", PW).await.status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn legacy_import_logs_in_and_upgrades_every_format() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    let (id, secret) = s.authn_client(&admin, "bank").await;
    let fixtures: Vec<Value> = serde_json::from_str(include_str!("fixtures/legacy_hashes.json")).unwrap();
    let users: Vec<Value> = fixtures
        .iter()
        .enumerate()
        .map(|(i, f)| json!({"username": format!("user{i}"), "password_hash": f["hash"]}))
        .collect();
    let (st, results) = s
        .admin(
            Method::POST,
            "/admin/v1/tenants/bank/users/import",
            &admin,
            Some(json!({"users": users})),
        )
        .await;
    assert_eq!(st, 200, "{results}");
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), fixtures.len());
    for (i, (f, r)) in fixtures.iter().zip(results).enumerate() {
        let expect_ok = f["expect"] == "ok";
        assert_eq!(
            r["status"] == "created",
            expect_ok,
            "fixture {i} ({}): {r}",
            f["scheme"]
        );
        if !expect_ok {
            assert!(r["error"].as_str().unwrap().starts_with("password_hash"), "{r}");
            continue;
        }
        let name = format!("user{i}");
        let pw = f["password"].as_str().unwrap();
        assert_eq!(
            s.authn("bank", &id, &secret, &name, "definitely-wrong-pw")
                .await
                .status(),
            401
        );
        let r = s.authn("bank", &id, &secret, &name, pw).await;
        assert_eq!(r.status(), 200, "fixture {i} ({}) should log in", f["scheme"]);
        let (hash, v): (String, Option<i64>) =
            sqlx::query_as("select password_hash, pepper_version from users where username = $1")
                .bind(&name)
                .fetch_one(&s.state.db.pool)
                .await
                .unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456") && v == Some(1),
            "fixture {i} upgraded: {hash}"
        );
        assert_eq!(s.authn("bank", &id, &secret, &name, pw).await.status(), 200);
    }
    let (st, b) = s
        .admin(
            Method::POST,
            "/admin/v1/tenants/bank/users/import",
            &admin,
            Some(json!({"users": [
                {"username": "user0", "password_hash": "$2b$04$x"},
                {"username": "user0", "password_hash": fixtures[0]["hash"]},
                {"username": "latecomer", "password_hash": fixtures[0]["hash"]},
            ]})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(b[0]["status"], "error", "{b}");
    // A taken username is refused and leaves the rest of the import (one transaction) intact.
    assert_eq!(b[1]["error"], "username already exists", "{b}");
    assert_eq!(b[2]["status"], "created", "{b}");
    let pw = fixtures[0]["password"].as_str().unwrap();
    assert_eq!(s.authn("bank", &id, &secret, "latecomer", pw).await.status(), 200);
    s.stop().await;
}

/// Imports one user of tenant `bank` with `hash`; returns the user's id.
async fn import_one(s: &Server, admin: &str, username: &str, hash: &Value) -> String {
    let (st, b) = s
        .admin(
            Method::POST,
            "/admin/v1/tenants/bank/users/import",
            admin,
            Some(json!({"users": [{"username": username, "password_hash": hash}]})),
        )
        .await;
    assert_eq!((st.as_u16(), &b[0]["status"]), (200, &json!("created")), "{b}");
    b[0]["id"].as_str().unwrap().to_string()
}

/// How long a sign-in at tenant `bank` that must fail (401) took.
async fn failed_signin(s: &Server, id: &str, secret: &str, user: &str, password: &str) -> std::time::Duration {
    let t = std::time::Instant::now();
    let r = s.authn("bank", id, secret, user, password).await;
    assert_eq!(r.status(), 401);
    t.elapsed()
}

/// A wrong password against a cheap imported hash (argon2id m=1024, t=1: well under a
/// millisecond) must not answer sooner than for an unknown user, which costs a hash at the
/// tenant's parameters: else the timing tells which accounts exist.
#[tokio::test]
async fn a_weak_imported_hash_answers_no_sooner_than_an_unknown_user() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    let (id, secret) = s.authn_client(&admin, "bank").await;
    let fixtures: Vec<Value> = serde_json::from_str(include_str!("fixtures/legacy_hashes.json")).unwrap();
    let weak = &fixtures[0]["hash"];
    assert!(weak.as_str().unwrap().starts_with("$argon2id$v=19$m=1024,t=1,"));
    import_one(&s, &admin, "olduser", weak).await;
    let timed = |user: String| {
        let (s, id, secret) = (&s, &id, &secret);
        async move { failed_signin(s, id, secret, &user, "definitely-wrong-pw").await }
    };
    timed("warm-up".into()).await;
    // Four rounds: under the throttle's threshold (5), so no attempt is delayed by it.
    let (mut known, mut unknown) = (vec![], vec![]);
    for i in 0..4 {
        unknown.push(timed(format!("ghost{i}")).await);
        known.push(timed("olduser".into()).await);
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[2], unknown[2]);
    assert!(
        k.as_secs_f64() >= 0.6 * u.as_secs_f64(),
        "existing user with a weak hash: {k:?}, unknown user: {u:?}"
    );

    // A locked account's correct password fails like a wrong one, and no sooner.
    let uid = import_one(&s, &admin, "lockeduser", weak).await;
    let (st, _) = s
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/bank/users/{uid}/lock"),
            &admin,
            None,
        )
        .await;
    assert_eq!(st, 200);
    let right = fixtures[0]["password"].as_str().unwrap();
    let mut locked = vec![];
    for _ in 0..3 {
        locked.push(failed_signin(&s, &id, &secret, "lockeduser", right).await);
    }
    locked.sort();
    assert!(
        locked[1].as_secs_f64() >= 0.6 * u.as_secs_f64(),
        "locked user, right password: {:?}, unknown user: {u:?}",
        locked[1]
    );
    s.stop().await;
}

#[tokio::test]
async fn a_full_queue_sheds_with_503_and_other_tenants_keep_their_share() {
    let tmp = tempfile::tempdir().unwrap();
    let db = common::fresh_database(tmp.path()).await;
    let mut cfg = common::test_config(&db, &tmp.path().join("keys"), tmp.path());
    cfg.hash_workers = 1;
    cfg.hash_queue = 8; // a tenant's share: 2
    let s = Server::start_with(cfg, Some(tmp)).await;
    let admin = s.admin_token().await;
    for t in ["flood", "quiet"] {
        s.tenant(&admin, t).await;
        s.user(&admin, t, "alice", PW).await;
    }
    let (fid, fsec) = s.authn_client(&admin, "flood").await;
    let (qid, qsec) = s.authn_client(&admin, "quiet").await;
    let mut flood = Vec::new();
    for i in 0..40 {
        let (http, url, id, sec) = (s.http.clone(), s.url.clone(), fid.clone(), fsec.clone());
        flood.push(tokio::spawn(async move {
            let r = http
                .post(format!("{url}/t/flood/authn"))
                .basic_auth(id, Some(sec))
                .json(&json!({"username": format!("u{i}"), "password": "wrong-password-here"}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.headers().get("retry-after").is_some())
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    for _ in 0..3 {
        assert_eq!(
            s.authn("quiet", &qid, &qsec, "alice", PW).await.status(),
            200,
            "the quiet tenant is not starved"
        );
    }
    let mut shed = 0;
    for f in flood {
        let (st, retry) = f.await.unwrap();
        if st == 503 {
            assert!(retry, "503 carries Retry-After");
            shed += 1;
        } else {
            assert_eq!(st, 401);
        }
    }
    assert!(shed > 0, "the flooding tenant is shed");
    let metrics = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("unicred_hash_shed_total"));
    s.stop().await;
}

#[tokio::test]
async fn per_ip_rate_limit_answers_429() {
    let tmp = tempfile::tempdir().unwrap();
    let db = common::fresh_database(tmp.path()).await;
    let mut cfg = common::test_config(&db, &tmp.path().join("keys"), tmp.path());
    cfg.ip_rate_per_second = 1;
    cfg.ip_rate_burst = 3;
    let s = Server::start_with(cfg, Some(tmp)).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = s
            .http
            .post(format!("{}/t/system/token", s.url))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
        statuses.push(r.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    // /authorize stores a login transaction for every stranger's request: limited too. (The
    // bucket is empty now; whatever the request's other faults, the limit answers first.)
    let r = s
        .http
        .get(format!("{}/t/system/authorize?response_type=code&client_id=x", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Discovery is not a credential endpoint.
    let r = s
        .http
        .get(format!("{}/t/system/jwks.json", s.url))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 429);
    s.stop().await;
}

/// Throttle counters of names nobody tried for a day, delay over, are purged; live ones stay.
#[tokio::test]
async fn idle_throttle_counters_are_purged() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    let now = unicred::store::now();
    for (name, updated, next) in [
        ("idle", now - 90_000, 0),
        ("recent", now - 60, 0),
        ("waiting", now - 90_000, now + 600),
    ] {
        sqlx::query("insert into throttles (tenant_id, username, failures, next_allowed_at, updated_at) values ('t', $1, 9, $2, $3)")
            .bind(name)
            .bind(next)
            .bind(updated)
            .execute(&s.state.db.pool)
            .await
            .unwrap();
    }
    assert_eq!(unicred::store::throttle::purge_idle(&s.state.db).await.unwrap(), 1);
    let left: Vec<(String,)> = sqlx::query_as("select username from throttles where tenant_id = 't' order by username")
        .fetch_all(&s.state.db.pool)
        .await
        .unwrap();
    assert_eq!(left, [("recent".to_string(),), ("waiting".to_string(),)]);
    s.stop().await;
}

/// A password an admin set with `temporary` must be replaced at the next sign-in, before
/// anything else; the tenant's policy applies to the new one.
#[tokio::test]
async fn a_temporary_password_is_replaced_at_the_next_sign_in() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    let uid = s.user(&admin, "bank", "alice", PW).await;
    let (id, secret) = s.authn_client(&admin, "bank").await;
    let temp = s.temporary_password(&admin, "bank", "alice").await;
    let r: Value = s.authn("bank", &id, &secret, "alice", temp).await.json().await.unwrap();
    assert_eq!(r["status"], "PASSWORD_CHANGE_REQUIRED", "{r}");
    assert!(r.get("login_ticket").is_none());
    let st_token = r["state_token"].as_str().unwrap();
    let change = |new: &str| {
        s.http
            .post(format!("{}/t/bank/authn/password", s.url))
            .basic_auth(&id, Some(&secret))
            .json(&json!({"state_token": st_token, "new_password": new}))
            .send()
    };
    // Refused by the policy: each failed rule, and the token stays usable.
    let r = change("alice").await.unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "password_policy", "{v}");
    assert!(v["violations"].as_array().is_some_and(|a| !a.is_empty()), "{v}");
    let new = "granite-meadow-compass-88";
    let r: Value = change(new).await.unwrap().json().await.unwrap();
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert!(r["login_ticket"].is_string());
    // Spent: the token does not work twice.
    assert_eq!(change("another-granite-meadow-9").await.unwrap().status(), 401);
    // The temporary password is gone; the new one signs in directly.
    assert_eq!(s.authn("bank", &id, &secret, "alice", temp).await.status(), 401);
    let r: Value = s.authn("bank", &id, &secret, "alice", new).await.json().await.unwrap();
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let (_, u) = s
        .admin(
            Method::GET,
            &format!("/admin/v1/tenants/bank/users/{uid}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(u["password_temporary"], false, "{u}");
    s.stop().await;
}

/// An imported hash dearer than the tenant's parameters (an Argon2 hash with more memory and
/// passes here; bcrypt cost 12 or Django's PBKDF2 in practice) does not make its account's
/// failures slower than an unknown user's: once such a hash was checked, every failure of the
/// tenant waits as long.
#[tokio::test]
async fn a_dear_imported_hash_answers_no_later_than_an_unknown_user() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    let (id, secret) = s.authn_client(&admin, "bank").await;
    let params = argon2::Params::new(65536, 4, 1, None).unwrap();
    let dear = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(b"old-password", &SaltString::encode_b64(b"sixteen-byte-slt").unwrap())
        .unwrap()
        .to_string();
    import_one(&s, &admin, "dearuser", &json!(dear)).await;
    let timed = |user: String| {
        let (s, id, secret) = (&s, &id, &secret);
        async move { failed_signin(s, id, secret, &user, "definitely-wrong-pw").await }
    };
    // Each unknown user's failure follows a check of the dear hash and must take about as long
    // as that check. Pairs, not medians of each side: on a loaded machine the dear hash's cost
    // drifts from one check to the next, and the padding follows what was measured before.
    let mut previous = timed("dearuser".into()).await; // the first check: it is learnt here
    let mut ratios = vec![];
    for i in 0..3 {
        if i > 0 {
            previous = timed("dearuser".into()).await;
        }
        let unknown = timed(format!("ghost{i}")).await;
        ratios.push((unknown.as_secs_f64() / previous.as_secs_f64(), unknown, previous));
    }
    ratios.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ratio, u, k) = ratios[1];
    assert!(
        ratio >= 0.75,
        "unknown user: {u:?}, the dear hash's check just before: {k:?} ({ratios:?})"
    );
    s.stop().await;
}

/// After another replica rotated the pepper and re-hashed a password with it, a replica
/// started before the rotation reads the new version from keys/ instead of failing.
#[tokio::test]
async fn a_replica_picks_up_a_pepper_another_rotated() {
    let a = Server::start().await;
    let (_, id, secret) = signin(&a).await;
    let tmp = tempfile::tempdir().unwrap();
    let b = Server::start_with(common::test_config(&a.db_url, &a.keys_dir, tmp.path()), Some(tmp)).await;
    let v = b
        .state
        .keyring
        .rotate(&b.state.db, unicred::crypto::keyring::Kind::Pepper)
        .await
        .unwrap();
    // The rotating process upgrades alice to the new pepper at her next sign-in.
    assert_eq!(b.authn("bank", &id, &secret, "alice", PW).await.status(), 200);
    assert_eq!(stored_hash(&a).await.1, Some(i64::from(v)));
    // The one started before it still signs her in.
    let r = a.authn("bank", &id, &secret, "alice", PW).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    b.stop().await;
    a.stop().await;
}
