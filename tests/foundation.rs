//! Foundation: admin API, service tokens, keys, bad input, restart. Runs on SQLite, and on
//! PostgreSQL when UNICRED_TEST_DATABASE_URL points at one.

mod common;

use common::{Server, assert_problem};
use reqwest::Method;
use serde_json::{Value, json};

fn verify_with_jwks(jwks: &Value, token: &str, iss: &str, aud: &str) -> Value {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .expect("kid published in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_issuer(&[iss]);
    v.set_audience(&[aud]);
    jsonwebtoken::decode::<Value>(token, &key, &v).unwrap().claims
}

#[tokio::test]
async fn service_token_lifecycle() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    let bank = s.tenant(&admin, "bank").await;
    let (st, user) = s
        .admin(
            Method::POST,
            "/admin/v1/tenants/bank/users",
            &admin,
            Some(json!({"username": "Alice", "password": "a long passphrase here"})),
        )
        .await;
    assert_eq!(st, 201, "{user}");
    assert_eq!(user["username"], "alice", "PRECIS case-mapped");
    let (id, secret) = s
        .client(
            &admin,
            &bank,
            json!({"name": "svc", "scopes": ["read", "write"], "resources": ["https://api.bank.example"]}),
        )
        .await;

    let (st, tok) = s.token(&bank, &id, &secret, &[("scope", "read")]).await;
    assert_eq!(st, 200, "{tok}");
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 300);
    let at = tok["access_token"].as_str().unwrap();
    let jwks: Value = s
        .http
        .get(format!("{}/t/bank/jwks.json", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claims = verify_with_jwks(&jwks, at, &s.issuer("bank"), &id);
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(claims["scope"], "read");
    assert!(claims["jti"].is_string() && claims["iat"].is_i64());

    // RFC 8707 resource becomes the audience.
    let (_, tok2) = s
        .token(&bank, &id, &secret, &[("resource", "https://api.bank.example")])
        .await;
    let c2 = verify_with_jwks(
        &jwks,
        tok2["access_token"].as_str().unwrap(),
        &s.issuer("bank"),
        "https://api.bank.example",
    );
    assert_eq!(c2["scope"], "read write");
    let (st, e) = s
        .token(&bank, &id, &secret, &[("resource", "https://evil.example")])
        .await;
    assert_eq!((st.as_u16(), e["error"].as_str()), (400, Some("invalid_target")));

    let active = s.introspect(&bank, &id, &secret, at).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["client_id"], id.as_str());

    let r = s
        .http
        .post(format!("{}/t/bank/revoke", s.url))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", at)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.introspect(&bank, &id, &secret, at).await, json!({"active": false}));

    // The admin API refuses a revoked admin token.
    let (aid, asec) = s.bootstrap().await;
    let (_, t) = s.token("system", &aid, &asec, &[]).await;
    let admin2 = t["access_token"].as_str().unwrap();
    let (st, _) = s.admin(Method::GET, "/admin/v1/tenants", admin2, None).await;
    assert_eq!(st, 200);
    let r = s
        .http
        .post(format!("{}/t/system/revoke", s.url))
        .basic_auth(&aid, Some(&asec))
        .form(&[("token", admin2)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (st, body) = s.admin(Method::GET, "/admin/v1/tenants", admin2, None).await;
    assert_problem(st, &body, 401, "unauthorized");
    // Bootstrap issued a new secret: the first admin client secret no longer works.
    s.stop().await;
}

#[tokio::test]
async fn bootstrap_rotates_the_platform_secret() {
    let s = Server::start().await;
    let (id1, secret1) = s.bootstrap().await;
    let (id2, secret2) = s.bootstrap().await;
    assert_eq!(id1, id2);
    assert_ne!(secret1, secret2);
    let (st, e) = s.token("system", &id1, &secret1, &[]).await;
    assert_eq!((st.as_u16(), e["error"].as_str()), (401, Some("invalid_client")));
    let (st, tok) = s.token("system", &id2, &secret2, &[]).await;
    assert_eq!(st, 200);
    // The platform-admin client is neither changed nor deleted through the API: a change
    // could leave no platform admin that bootstrap could bring back.
    let admin = tok["access_token"].as_str().unwrap();
    let path = format!("/admin/v1/tenants/system/clients/{id2}");
    let (st, b) = s.admin(Method::PATCH, &path, admin, Some(json!({"scopes": []}))).await;
    assert_eq!(st, 403, "{b}");
    let (st, b) = s.admin(Method::DELETE, &path, admin, None).await;
    assert_eq!(st, 403, "{b}");
    let (st, _) = s.admin(Method::GET, "/admin/v1/tenants", admin, None).await;
    assert_eq!(st, 200, "still a platform admin");
    s.stop().await;
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_and_emergency_revokes_them() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    let t = s.tenant(&admin, "insurer").await;
    let (id, secret) = s.client(&admin, &t, json!({"name": "svc"})).await;
    let kid = |tok: &str| jsonwebtoken::decode_header(tok).unwrap().kid.unwrap();

    let (_, a) = s.token(&t, &id, &secret, &[]).await;
    let a = a["access_token"].as_str().unwrap().to_string();
    let (st, keys) = s
        .admin(Method::POST, "/admin/v1/tenants/insurer/keys/rotate", &admin, None)
        .await;
    assert_eq!(st, 200, "{keys}");
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid(&a) && k["state"] == "retired")
    );
    let (_, b) = s.token(&t, &id, &secret, &[]).await;
    let b = b["access_token"].as_str().unwrap().to_string();
    assert_ne!(kid(&a), kid(&b), "the promoted key signs");
    assert_eq!(
        s.introspect(&t, &id, &secret, &a).await["active"],
        true,
        "retired key still validates"
    );
    let jwks: Value = s
        .http
        .get(format!("{}/t/insurer/jwks.json", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == kid(&a)));

    let (st, _) = s
        .admin(
            Method::POST,
            "/admin/v1/tenants/insurer/keys/rotate",
            &admin,
            Some(json!({"emergency": true})),
        )
        .await;
    assert_eq!(st, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // caches live at most 1 s
    assert_eq!(
        s.introspect(&t, &id, &secret, &b).await["active"],
        false,
        "emergency rotation withdraws the key"
    );
    assert_eq!(
        s.introspect(&t, &id, &secret, &a).await["active"],
        false,
        "the earlier retired key leaves too: the leak may predate the last rotation"
    );
    let jwks: Value = s
        .http
        .get(format!("{}/t/insurer/jwks.json", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(!published.contains(&kid(&b).as_str()) && !published.contains(&kid(&a).as_str()));
    // No key that existed before the emergency signs or is published: not even `next`.
    let before: Vec<String> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    assert!(
        published.iter().all(|k| !before.iter().any(|b| b == k)),
        "{published:?} / {before:?}"
    );
    let (_, c) = s.token(&t, &id, &secret, &[]).await;
    let c = kid(c["access_token"].as_str().unwrap());
    assert!(
        published.contains(&c.as_str()) && !before.contains(&c),
        "a fresh key signs"
    );

    // Rotations of one tenant at once (plain and emergency) run one after the other: each
    // algorithm ends with one current and one next key, and the last emergency's keys only.
    let rotate = |emergency: bool| {
        s.admin(
            Method::POST,
            "/admin/v1/tenants/insurer/keys/rotate",
            &admin,
            Some(json!({"emergency": emergency})),
        )
    };
    let (r1, r2, r3, r4) = tokio::join!(rotate(false), rotate(true), rotate(false), rotate(false));
    for (st, b) in [r1, r2, r3, r4] {
        assert_eq!(st, 200, "{b}");
    }
    let (_, keys) = s
        .admin(Method::GET, "/admin/v1/tenants/insurer/keys", &admin, None)
        .await;
    let keys = keys.as_array().unwrap();
    for alg in ["RS256", "ES256", "EdDSA"] {
        for state in ["current", "next"] {
            let n = keys.iter().filter(|k| k["alg"] == alg && k["state"] == state).count();
            assert_eq!(n, 1, "{alg} {state}: {keys:#?}");
        }
    }
    s.stop().await;
}

/// Two rotations of one tenant cannot interleave: the second's read of the keys waits for the
/// first's commit and sees what it left (else both would promote the same `next` key, or an
/// emergency would miss the keys a plain rotation just added).
#[tokio::test]
async fn a_rotations_read_of_the_keys_waits_for_the_one_before() {
    use unicred::store::keys;
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "insurer").await;
    let (tenant,): (String,) = sqlx::query_as("select id from tenants where slug = 'insurer'")
        .fetch_one(&s.state.db.pool)
        .await
        .unwrap();
    let mut first = s.state.db.begin_write().await.unwrap();
    let before = keys::published_for_update(&mut first, &tenant).await.unwrap();
    let second = tokio::spawn({
        let (db, tenant) = (s.state.db.clone(), tenant.clone());
        async move {
            let mut tx = db.begin_write().await.unwrap();
            keys::published_for_update(&mut tx, &tenant).await.unwrap().len()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second read waits for the first rotation");
    keys::delete(&mut *first, &before[0].kid).await.unwrap();
    first.commit().await.unwrap();
    assert_eq!(second.await.unwrap(), before.len() - 1, "and reads what it left");
    s.stop().await;
}

#[tokio::test]
async fn a_process_with_other_keys_refuses_to_start() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    let other = tempfile::tempdir().unwrap();
    // Empty keys/ on a database with data: refuse (never generate new keys).
    let cfg = common::test_config(&s.db_url, &other.path().join("keys"), other.path());
    let err = AppStateBuild::err(cfg).await;
    assert!(err.contains("empty"), "{err}");
    // Different keys of its own: refuse on the fingerprint.
    let fresh = tempfile::tempdir().unwrap();
    let fresh_db = common::fresh_database(fresh.path()).await;
    let own = common::test_config(&fresh_db, &other.path().join("keys"), fresh.path());
    unicred::AppState::build(own).await.unwrap().db.pool.close().await;
    let cfg = common::test_config(&s.db_url, &other.path().join("keys"), other.path());
    let err = AppStateBuild::err(cfg).await;
    assert!(err.contains("does not match"), "{err}");
    s.stop().await;
}

struct AppStateBuild;
impl AppStateBuild {
    async fn err(cfg: unicred::Config) -> String {
        match unicred::AppState::build(cfg).await {
            Ok(_) => panic!("a process with other keys started"),
            Err(e) => e.to_string(),
        }
    }
}

#[tokio::test]
async fn ciphertexts_are_bound_to_their_row() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    let rows = unicred::store::keys::all(&s.state.db).await.unwrap();
    let (a, b) = (&rows[0], &rows[1]);
    use unicred::crypto::Purpose;
    assert!(
        s.state
            .keyring
            .decrypt(Purpose::SigningKey, &a.tenant_id, &a.kid, &a.private_ct)
            .is_ok()
    );
    // Row b's ciphertext presented as row a's (copied into another row) does not decrypt.
    assert!(
        s.state
            .keyring
            .decrypt(Purpose::SigningKey, &a.tenant_id, &a.kid, &b.private_ct)
            .is_err()
    );
    assert!(
        s.state
            .keyring
            .decrypt(Purpose::TotpSeed, &a.tenant_id, &a.kid, &a.private_ct)
            .is_err()
    );
    // And through the service: copy b's ciphertext into a current key row of another tenant.
    sqlx::query("update signing_keys set private_ct = $1 where kid = $2")
        .bind(&b.private_ct)
        .bind(&a.kid)
        .execute(&s.state.db.pool)
        .await
        .unwrap();
    let fresh = unicred::tokens::tenant_keys::KeyService::new(
        s.state.db.clone(),
        s.state.keyring.clone(),
        s.state.passwords.pool.clone(),
    );
    let loaded = fresh.for_tenant(&a.tenant_id).await;
    if a.state == "current" {
        assert!(loaded.is_err(), "a swapped ciphertext must not load");
    }
    s.stop().await;
}

#[tokio::test]
async fn master_key_rotation_reencrypts_and_keeps_signing() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    let t = s.tenant(&admin, "bank").await;
    let v = s
        .state
        .keyring
        .rotate(&s.state.db, unicred::crypto::keyring::Kind::Master)
        .await
        .unwrap();
    assert_eq!(v, 2);
    let n = s.state.keys.reencrypt_all().await.unwrap();
    assert!(n >= 12);
    let counts = unicred::store::keys::count_by_master_version(&s.state.db)
        .await
        .unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].0, 2);
    let tid = s.state.tenants.by_slug(&t).await.unwrap().unwrap().id.clone();
    let e = unicred::audit::Event::new(&tid, "keys.rotated").actor("test");
    s.state.keys.rotate(&tid, false, &s.state.audit, e).await.unwrap();
    let (id, secret) = s.client(&admin, &t, json!({"name": "svc"})).await;
    let (st, _) = s.token(&t, &id, &secret, &[]).await;
    assert_eq!(st, 200);
    s.stop().await;
}

#[tokio::test]
async fn tenant_admin_is_confined_to_its_tenant() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    let a = s.tenant(&admin, "tenant-a").await;
    s.tenant(&admin, "tenant-b").await;
    // Only platform admins grant admin scopes.
    let (id, secret) = s
        .client(&admin, &a, json!({"name": "ops", "scopes": ["tenant-admin"]}))
        .await;
    let (st, tok) = s.token(&a, &id, &secret, &[]).await;
    assert_eq!(st, 200);
    let ta = tok["access_token"].as_str().unwrap();
    let get = |p: &'static str| s.admin(Method::GET, p, ta, None);
    assert_eq!(get("/admin/v1/tenants/tenant-a/users").await.0, 200);
    assert_eq!(get("/admin/v1/tenants/tenant-a").await.0, 200);
    assert_eq!(get("/admin/v1/tenants/tenant-b/users").await.0, 403);
    assert_eq!(
        get("/admin/v1/tenants/no-such-tenant").await.0,
        403,
        "no existence oracle"
    );
    assert_eq!(get("/admin/v1/tenants/system/clients").await.0, 403);
    assert_eq!(get("/admin/v1/tenants").await.0, 403);
    let (st, _) = s
        .admin(Method::POST, "/admin/v1/tenants", ta, Some(json!({"slug": "mine"})))
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .admin(
            Method::POST,
            "/admin/v1/tenants/tenant-a/clients",
            ta,
            Some(json!({"name": "x", "scopes": ["tenant-admin"]})),
        )
        .await;
    assert_eq!(st, 403, "a tenant admin cannot mint admin clients");
    let (st, _) = s
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/tenant-a",
            ta,
            Some(json!({"policy": {"argon2": {"m_kib": 65536, "t": 3, "p": 1}}})),
        )
        .await;
    assert_eq!(st, 403);
    let (st, body) = s
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/tenant-a",
            ta,
            Some(json!({"policy": {"access_token_ttl_seconds": 60}})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["policy"]["access_token_ttl_seconds"], 60);
    // The platform admin can; `admin` itself only exists in the system tenant.
    let (st, _) = s
        .admin(
            Method::POST,
            "/admin/v1/tenants/tenant-a/clients",
            &admin,
            Some(json!({"name": "x", "scopes": ["admin"]})),
        )
        .await;
    assert_eq!(st, 422);
    // A non-admin token (its own audience) is refused by the admin API.
    let (id2, secret2) = s.client(&admin, &a, json!({"name": "svc", "scopes": ["read"]})).await;
    let (_, t2) = s.token(&a, &id2, &secret2, &[]).await;
    let (st, _) = s
        .admin(
            Method::GET,
            "/admin/v1/tenants/tenant-a",
            t2["access_token"].as_str().unwrap(),
            None,
        )
        .await;
    assert_eq!(st, 401);

    // Taking the scope away ends the token's power at once (not at its expiry); a secret
    // rotation ends the tokens the old secret obtained.
    let (st, b) = s
        .admin(
            Method::PATCH,
            &format!("/admin/v1/tenants/tenant-a/clients/{id}"),
            &admin,
            Some(json!({"scopes": []})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // the client cache
    assert_eq!(get("/admin/v1/tenants/tenant-a/users").await.0, 403);
    let (st, b) = s
        .admin(
            Method::PATCH,
            &format!("/admin/v1/tenants/tenant-a/clients/{id}"),
            &admin,
            Some(json!({"scopes": ["tenant-admin"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(get("/admin/v1/tenants/tenant-a/users").await.0, 200, "granted again");
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await; // a later second
    let (st, b) = s
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/tenant-a/clients/{id}/secret"),
            &admin,
            None,
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        get("/admin/v1/tenants/tenant-a/users").await.0,
        401,
        "issued before the rotation"
    );
    let (_, fresh) = s.token(&a, &id, b["client_secret"].as_str().unwrap(), &[]).await;
    let (st, _) = s
        .admin(
            Method::GET,
            "/admin/v1/tenants/tenant-a/users",
            fresh["access_token"].as_str().unwrap(),
            None,
        )
        .await;
    assert_eq!(st, 200, "the new secret's token works");
    s.stop().await;
}

#[tokio::test]
async fn tokens_and_clients_are_bound_to_their_tenant() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    let a = s.tenant(&admin, "bank-a").await;
    let b = s.tenant(&admin, "bank-b").await;
    let (ida, seca) = s.client(&admin, &a, json!({"name": "a"})).await;
    let (idb, secb) = s.client(&admin, &b, json!({"name": "b"})).await;
    let (_, ta) = s.token(&a, &ida, &seca, &[]).await;
    let ta = ta["access_token"].as_str().unwrap();
    assert_eq!(s.introspect(&b, &idb, &secb, ta).await, json!({"active": false}));
    assert_eq!(s.introspect(&a, &ida, &seca, ta).await["active"], true);
    let (st, e) = s.token(&b, &ida, &seca, &[]).await;
    assert_eq!((st.as_u16(), e["error"].as_str()), (401, Some("invalid_client")));
    // Revocation at B by B's client does nothing to A's token.
    s.http
        .post(format!("{}/t/{b}/revoke", s.url))
        .basic_auth(&idb, Some(&secb))
        .form(&[("token", ta)])
        .send()
        .await
        .unwrap();
    assert_eq!(s.introspect(&a, &ida, &seca, ta).await["active"], true);
    s.stop().await;
}

#[tokio::test]
async fn users_paging_search_and_revocation() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "clinic").await;
    for name in ["carol", "alice", "bob", "dave_x"] {
        let (st, b) = s
            .admin(
                Method::POST,
                "/admin/v1/tenants/clinic/users",
                &admin,
                Some(json!({"username": name, "email": format!("{name}@clinic.example")})),
            )
            .await;
        assert_eq!(st, 201, "{b}");
    }
    let (st, b) = s
        .admin(
            Method::POST,
            "/admin/v1/tenants/clinic/users",
            &admin,
            Some(json!({"username": "ALICE"})),
        )
        .await;
    assert_problem(st, &b, 409, "conflict");
    let (_, p1) = s
        .admin(Method::GET, "/admin/v1/tenants/clinic/users?limit=2", &admin, None)
        .await;
    let names: Vec<_> = p1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = s
        .admin(
            Method::GET,
            &format!("/admin/v1/tenants/clinic/users?limit=2&cursor={cursor}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 2);
    assert!(p2["next_cursor"].is_null());
    let (_, found) = s
        .admin(Method::GET, "/admin/v1/tenants/clinic/users?q=_", &admin, None)
        .await;
    assert_eq!(
        found["items"].as_array().unwrap().len(),
        1,
        "LIKE wildcards are literal"
    );
    let (_, found) = s
        .admin(Method::GET, "/admin/v1/tenants/clinic/users?q=ALI", &admin, None)
        .await;
    assert_eq!(
        found["items"][0]["username"], "alice",
        "case is ignored on both backends: {found}"
    );
    let (st, b) = s
        .admin(Method::GET, "/admin/v1/tenants/clinic/users?limit=500", &admin, None)
        .await;
    assert_problem(st, &b, 422, "validation");

    let id = p1["items"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/admin/v1/tenants/clinic/users/{id}");
    let (st, u) = s
        .admin(
            Method::PATCH,
            &path,
            &admin,
            Some(json!({"status": "disabled", "display_name": "Alice A."})),
        )
        .await;
    assert_eq!((st.as_u16(), u["status"].as_str()), (200, Some("disabled")));
    // Locking and unlocking a disabled user leaves it disabled.
    for action in ["lock", "unlock"] {
        let (st, u) = s.admin(Method::POST, &format!("{path}/{action}"), &admin, None).await;
        assert_eq!((st.as_u16(), u["status"].as_str()), (200, Some("disabled")), "{action}");
    }
    let (st, b) = s
        .admin(Method::PATCH, &path, &admin, Some(json!({"status": "gone"})))
        .await;
    assert_problem(st, &b, 422, "validation");
    let (st, b) = s
        .admin(
            Method::POST,
            &format!("{path}/password"),
            &admin,
            Some(json!({"password": "short"})),
        )
        .await;
    assert_problem(st, &b, 422, "password-policy");
    assert_eq!(b["errors"][0]["rule"], "min_length");
    let (st, _) = s
        .admin(
            Method::POST,
            &format!("{path}/password"),
            &admin,
            Some(json!({"password": "a sufficiently long one", "temporary": true})),
        )
        .await;
    assert_eq!(st, 204);
    let (_, u) = s.admin(Method::GET, &path, &admin, None).await;
    assert_eq!(
        (u["password_set"].as_bool(), u["password_temporary"].as_bool()),
        (Some(true), Some(true))
    );
    let (st, _) = s.admin(Method::DELETE, &path, &admin, None).await;
    assert_eq!(st, 204);
    let (st, b) = s.admin(Method::GET, &path, &admin, None).await;
    assert_problem(st, &b, 404, "not-found");
    s.stop().await;
}

#[tokio::test]
async fn client_secret_rotation_and_deletion() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    let t = s.tenant(&admin, "bank").await;
    let (id, old) = s.client(&admin, &t, json!({"name": "svc"})).await;
    let (st, b) = s
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/bank/clients/{id}/secret"),
            &admin,
            None,
        )
        .await;
    assert_eq!(st, 200);
    let new = b["client_secret"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(s.token(&t, &id, &old, &[]).await.0, 401);
    let (st, tok) = s.token(&t, &id, &new, &[]).await;
    assert_eq!(st, 200);
    let (_, listed) = s
        .admin(
            Method::GET,
            &format!("/admin/v1/tenants/bank/clients/{id}"),
            &admin,
            None,
        )
        .await;
    assert!(listed.get("client_secret").is_none(), "secrets are never retrievable");
    let (st, b) = s
        .admin(
            Method::PATCH,
            &format!("/admin/v1/tenants/bank/clients/{id}"),
            &admin,
            Some(json!({"redirect_uris": ["http://evil.example/cb"]})),
        )
        .await;
    assert_problem(st, &b, 422, "validation");
    let (st, _) = s
        .admin(
            Method::DELETE,
            &format!("/admin/v1/tenants/bank/clients/{id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(st, 204);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(s.token(&t, &id, &new, &[]).await.0, 401);
    // Tokens of a deleted client are no longer active.
    let (ida, seca) = s.client(&admin, &t, json!({"name": "rs"})).await;
    assert_eq!(
        s.introspect(&t, &ida, &seca, tok["access_token"].as_str().unwrap())
            .await["active"],
        false
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    let t = s.tenant(&admin, "bank").await;
    let (id, secret) = s.client(&admin, &t, json!({"name": "svc", "scopes": ["read"]})).await;
    let url = |p: &str| format!("{}{p}", s.url);
    let raw = |body: Vec<u8>, ct: &str| {
        s.http
            .post(url("/admin/v1/tenants/bank/users"))
            .bearer_auth(&admin)
            .header("content-type", ct.to_string())
            .body(body)
            .send()
    };
    async fn problem(r: reqwest::Response) -> (reqwest::StatusCode, Value) {
        let st = r.status();
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        (st, r.json().await.unwrap())
    }
    let (st, b) = problem(raw(b"{not json".to_vec(), "application/json").await.unwrap()).await;
    assert_problem(st, &b, 400, "bad-request");
    let (st, b) = problem(raw(br#"{"username": 5}"#.to_vec(), "application/json").await.unwrap()).await;
    assert_problem(st, &b, 400, "bad-request");
    let (st, b) = problem(
        raw(br#"{"username": "x1", "admin": true}"#.to_vec(), "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_problem(st, &b, 400, "bad-request");
    let (st, b) = problem(
        raw(b"{\"username\": \"\xff\xfe\"}".to_vec(), "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_problem(st, &b, 400, "bad-request");
    let (st, b) = problem(raw(br#"{"username": "x1"}"#.to_vec(), "text/plain").await.unwrap()).await;
    assert_problem(st, &b, 415, "unsupported-media-type");
    let big = format!(r#"{{"username": "{}"}}"#, "a".repeat(70_000));
    let (st, b) = problem(raw(big.into_bytes(), "application/json").await.unwrap()).await;
    assert_problem(st, &b, 413, "payload-too-large");
    for name in ["", &"a".repeat(10_000), "two words"] {
        let (st, b) = s
            .admin(
                Method::POST,
                "/admin/v1/tenants/bank/users",
                &admin,
                Some(json!({"username": name})),
            )
            .await;
        assert_problem(st, &b, 422, "validation");
    }
    for slug in ["A", "-x", "a", "x_y", &"a".repeat(70), "system"] {
        let (st, b) = s
            .admin(Method::POST, "/admin/v1/tenants", &admin, Some(json!({"slug": slug})))
            .await;
        assert_problem(st, &b, 422, "validation");
    }
    let (st, b) = s
        .admin(Method::POST, "/admin/v1/tenants", &admin, Some(json!({"slug": "bank"})))
        .await;
    assert_problem(st, &b, 409, "conflict");
    let (st, b) = s.admin(Method::GET, "/admin/v1/tenants/nope/users", &admin, None).await;
    assert_problem(st, &b, 404, "not-found");
    let (st, b) = s
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/bank",
            &admin,
            Some(json!({"policy": {"access_token_ttl_seconds": 2}})),
        )
        .await;
    assert_problem(st, &b, 422, "validation");
    let r = s.http.get(url("/admin/v1/tenants")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let r = s
        .http
        .get(url("/admin/v1/tenants"))
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // OAuth endpoints answer RFC 6749 JSON.
    let post = |path: &str, form: Vec<(&str, &str)>, auth: Option<(&str, &str)>| {
        let mut req = s.http.post(url(path)).form(&form);
        if let Some((i, p)) = auth {
            req = req.basic_auth(i, Some(p));
        }
        req.send()
    };
    async fn oauth(r: reqwest::Response) -> (u16, String) {
        let st = r.status().as_u16();
        let b: Value = r.json().await.unwrap();
        (st, b["error"].as_str().unwrap_or_default().to_string())
    }
    let auth = Some((id.as_str(), secret.as_str()));
    assert_eq!(
        oauth(post("/t/bank/token", vec![], auth).await.unwrap()).await,
        (400, "invalid_request".into())
    );
    assert_eq!(
        oauth(
            post("/t/bank/token", vec![("grant_type", "password")], auth)
                .await
                .unwrap()
        )
        .await,
        (400, "unsupported_grant_type".into())
    );
    assert_eq!(
        oauth(
            post(
                "/t/bank/token",
                vec![("grant_type", "client_credentials"), ("scope", "admin")],
                auth
            )
            .await
            .unwrap()
        )
        .await,
        (400, "invalid_scope".into())
    );
    assert_eq!(
        oauth(
            post(
                "/t/bank/token",
                vec![
                    ("grant_type", "client_credentials"),
                    ("grant_type", "client_credentials")
                ],
                auth
            )
            .await
            .unwrap()
        )
        .await,
        (400, "invalid_request".into())
    );
    assert_eq!(
        oauth(
            post(
                "/t/bank/token",
                vec![("grant_type", "client_credentials")],
                Some((&id, "wrong"))
            )
            .await
            .unwrap()
        )
        .await,
        (401, "invalid_client".into())
    );
    assert_eq!(
        oauth(
            post(
                "/t/bank/token",
                vec![("grant_type", "client_credentials")],
                Some(("nobody", "x"))
            )
            .await
            .unwrap()
        )
        .await,
        (401, "invalid_client".into())
    );
    assert_eq!(
        oauth(
            post("/t/bank/token", vec![("grant_type", "client_credentials")], None)
                .await
                .unwrap()
        )
        .await,
        (401, "invalid_client".into())
    );
    assert_eq!(
        oauth(
            post("/t/nope/token", vec![("grant_type", "client_credentials")], auth)
                .await
                .unwrap()
        )
        .await
        .0,
        404
    );
    assert_eq!(
        oauth(
            post(
                "/t/bank/token",
                vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", &id),
                    ("client_secret", &secret)
                ],
                None
            )
            .await
            .unwrap()
        )
        .await,
        (401, "invalid_client".into()),
        "a client_secret_basic client cannot switch to client_secret_post"
    );
    let r = s
        .http
        .post(url("/t/bank/token"))
        .basic_auth(&id, Some(&secret))
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(oauth(r).await, (400, "invalid_request".into()), "content type required");
    let r = s
        .http
        .post(url("/t/bank/token"))
        .basic_auth(&id, Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(b"grant_type=client_credentials&scope=\xff".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(oauth(r).await.0, 400);
    assert_eq!(
        oauth(post("/t/bank/introspect", vec![("token", "x")], None).await.unwrap()).await,
        (401, "invalid_client".into())
    );
    assert_eq!(
        s.introspect("bank", &id, &secret, "garbage").await,
        json!({"active": false})
    );
    assert_eq!(
        s.introspect("bank", &id, &secret, &"a".repeat(20_000)).await,
        json!({"active": false})
    );
    s.stop().await;
}

#[tokio::test]
async fn restart_keeps_everything() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    let t = s.tenant(&admin, "bank").await;
    let (id, secret) = s.client(&admin, &t, json!({"name": "svc"})).await;
    let (_, tok) = s.token(&t, &id, &secret, &[]).await;
    let tok = tok["access_token"].as_str().unwrap().to_string();
    let (db_url, keys) = (s.db_url.clone(), s.keys_dir.clone());
    let tmp = s.stop().await.unwrap();
    let s2 = Server::start_with(common::test_config(&db_url, &keys, tmp.path()), Some(tmp)).await;
    let (st, _) = s2.token(&t, &id, &secret, &[]).await;
    assert_eq!(st, 200);
    // The issuer differs (new port), so the old token is not valid at the new URL; its
    // signature key is still published.
    let jwks: Value = s2
        .http
        .get(format!("{}/t/bank/jwks.json", s2.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(&tok).unwrap().kid.unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid.as_str())
    );
    s2.stop().await;
}

#[tokio::test]
async fn operations_endpoints_and_openapi() {
    let s = Server::start().await;
    let get = |p: &str| s.http.get(format!("{}{p}", s.url)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let r = get("/readyz").await.unwrap();
    assert!(r.headers().contains_key("x-request-id"));
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("unicred_http_requests_total"), "{metrics}");
    // Made-up methods are one label value, not one series each (a stranger could otherwise
    // grow the metrics, and memory, without bound).
    for i in 0..20 {
        let m = reqwest::Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        let r = s.http.request(m, format!("{}/healthz", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 405);
    }
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("MADEUP"), "{metrics}");
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    let doc: Value = get("/admin/v1/openapi.json").await.unwrap().json().await.unwrap();
    for p in [
        "/admin/v1/tenants",
        "/admin/v1/tenants/{slug}/users/{id}",
        "/admin/v1/tenants/{slug}/clients/{client_id}/secret",
        "/admin/v1/tenants/{slug}/keys/rotate",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing from OpenAPI");
    }
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["PasswordBody"]["properties"]["password"]["type"], "string",
        "{schemas}"
    );
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    let disco: Value = get("/t/bank/.well-known/openid-configuration")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(disco["issuer"], s.issuer("bank"));
    assert_eq!(disco["jwks_uri"], format!("{}/jwks.json", s.issuer("bank")));
    let r = get("/t/bank/jwks.json").await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(get("/t/nope/jwks.json").await.unwrap().status(), 404);
    assert_eq!(get("/no/such/path").await.unwrap().status(), 404);
    s.stop().await;
}

/// A NUL character, which PostgreSQL refuses in text, is the request's fault wherever a
/// stranger, a user or an admin can put one (ids, queries, form fields, JSON): a 4xx there,
/// never a 500 with an error in the log. On SQLite the same requests simply match nothing.
#[tokio::test]
async fn nul_characters_are_refused_not_failed_on() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    let (id, secret) = s.authn_client(&admin, "bank").await;
    let url = |p: &str| format!("{}{p}", s.url);
    let checks: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "admin search",
            s.http
                .get(url("/admin/v1/tenants/bank/users?q=%00"))
                .bearer_auth(&admin),
        ),
        (
            "admin id",
            s.http.get(url("/admin/v1/tenants/bank/users/%00")).bearer_auth(&admin),
        ),
        (
            "admin cursor",
            s.http
                .get(url("/admin/v1/tenants/bank/users?cursor=AA"))
                .bearer_auth(&admin),
        ),
        (
            "admin email",
            s.http
                .post(url("/admin/v1/tenants/bank/users"))
                .bearer_auth(&admin)
                .json(&json!({"username": "nul", "email": "a\u{0}@b.example"})),
        ),
        (
            "token client_id",
            s.http.post(url("/t/bank/token")).form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "a\0b"),
                ("client_secret", "x"),
            ]),
        ),
        (
            "sign-in API client_id",
            s.http
                .post(url("/t/bank/authn"))
                .json(&json!({"username": "alice", "password": "pw", "client_id": "a\u{0}", "client_secret": "x"})),
        ),
        (
            "sign-in API state token",
            s.http
                .post(url("/t/bank/authn/factors/totp"))
                .basic_auth(&id, Some(&secret))
                .json(&json!({"state_token": "a\u{0}", "code": "123456"})),
        ),
        (
            "authorize client_id",
            s.http.get(url("/t/bank/authorize?client_id=%00&response_type=code")),
        ),
        ("login page tx", s.http.get(url("/t/bank/login?tx=%00"))),
        (
            "tenant slug",
            s.http.get(url("/t/%00/.well-known/openid-configuration")),
        ),
    ];
    for (what, req) in checks {
        let r = req.send().await.unwrap();
        let st = r.status();
        assert!(!st.is_server_error(), "{what}: {st} {}", r.text().await.unwrap());
    }
    s.stop().await;
}
