//! Every security event of a realistic run lands in the tenant's audit chain with the right
//! fields, and the chain verifies — through the API and with `unicred audit verify` offline.

mod common;

use common::Server;
use reqwest::Method;
use serde_json::{Value, json};

const PW: &str = "violet-harbour-lantern-42";

#[tokio::test]
async fn security_events_are_recorded_and_the_chain_verifies() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    let uid = s.user(&admin, "bank", "alice", PW).await;
    let (id, secret) = s
        .client(&admin, "bank", json!({"name": "be", "authn_api": true, "grant_types": ["urn:unicred:grant-type:login-ticket", "client_credentials"]}))
        .await;
    assert_eq!(
        s.authn("bank", &id, &secret, "alice", "wrong-password-x")
            .await
            .status(),
        401
    );
    assert_eq!(
        s.authn("bank", &id, &secret, "nobody", "wrong-password-x")
            .await
            .status(),
        401
    );
    let ok: Value = s.authn("bank", &id, &secret, "alice", PW).await.json().await.unwrap();
    let r: Value = s
        .http
        .post(format!("{}/t/bank/token", s.url))
        .basic_auth(&id, Some(&secret))
        .form(&[
            ("grant_type", "urn:unicred:grant-type:login-ticket"),
            ("login_ticket", ok["login_ticket"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, cc) = s.token("bank", &id, &secret, &[]).await;
    s.http
        .post(format!("{}/t/bank/revoke", s.url))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", cc["access_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    s.admin(
        Method::POST,
        &format!("/admin/v1/tenants/bank/users/{uid}/password"),
        &admin,
        Some(json!({"password": "another-fine-passphrase-9"})),
    )
    .await;
    s.admin(Method::POST, "/admin/v1/tenants/bank/keys/rotate", &admin, None)
        .await;
    assert!(r["access_token"].is_string());

    let (st, page) = s
        .admin(Method::GET, "/admin/v1/tenants/bank/audit?limit=200", &admin, None)
        .await;
    assert_eq!(st, 200, "{page}");
    let events = page["items"].as_array().unwrap();
    let find = |kind: &str| events.iter().filter(|e| e["type"] == kind).cloned().collect::<Vec<_>>();
    for kind in [
        "tenant.created",
        "user.created",
        "client.created",
        "signin.failure",
        "signin.success",
        "token.issued",
        "token.revoked",
        "user.password_set",
        "keys.rotated",
    ] {
        assert!(!find(kind).is_empty(), "no {kind} event in {events:#?}");
    }
    // A one-step sign-in is one event, with the client's address beside the chain.
    let success = find("signin.success");
    assert_eq!(success.len(), 1, "{success:#?}");
    assert_eq!(success[0]["data"]["amr"], "pwd");
    assert!(
        success[0]["ip"].is_string() && success[0]["ip_salt"].is_string() && success[0]["ip_commit"].is_string(),
        "an IP comes with what checks it: {success:#?}"
    );
    assert!(
        find("signin.password_ok").is_empty(),
        "no second step followed the password"
    );
    let failures = find("signin.failure");
    let reasons: Vec<&str> = failures.iter().map(|e| e["data"]["reason"].as_str().unwrap()).collect();
    assert!(
        reasons.contains(&"wrong_password") && reasons.contains(&"unknown_user"),
        "{reasons:?}"
    );
    assert!(
        failures.iter().any(|e| e["user_id"] == uid.as_str()),
        "a known user's failure names the user id"
    );
    let text = serde_json::to_string(events).unwrap();
    for secret_text in [PW, "wrong-password-x", secret.as_str(), "another-fine-passphrase-9"] {
        assert!(!text.contains(secret_text), "a secret is in the audit trail");
    }
    assert!(!text.contains("\"alice\""), "users appear by opaque id only");
    assert!(
        find("user.created")[0]["actor"].is_string(),
        "management events name who did it"
    );
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "one linear chain");

    let (_, v) = s
        .admin(Method::GET, "/admin/v1/tenants/bank/audit/verify", &admin, None)
        .await;
    assert_eq!(v["ok"], true, "{v}");
    // Offline, with the CLI: ok, then exit 1 after tampering.
    let db = s.db_url.clone();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_unicred"))
            .args(args)
            .env_clear()
            .env("UNICRED_DATABASE_URL", &db)
            .output()
            .unwrap()
    };
    let out = cli(&["audit", "verify", "--tenant", "bank"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Retention: a signed checkpoint, then pruning behind it keeps the chain verifiable.
    let keys = s.keys_dir.display().to_string();
    let with_keys = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_unicred"))
            .args(args)
            .env_clear()
            .env("UNICRED_DATABASE_URL", &db)
            .env("UNICRED_KEYS_DIR", &keys)
            .output()
            .unwrap()
    };
    let out = with_keys(&["audit", "checkpoint", "--tenant", "bank"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cp: Value = serde_json::from_slice(&out.stdout).unwrap();
    let head = cp["seq"].as_i64().unwrap();
    let out = with_keys(&[
        "audit",
        "prune",
        "--tenant",
        "bank",
        "--before",
        &(head + 1).to_string(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pruned: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pruned["chain_starts_after"], head);
    let (_, v) = s
        .admin(Method::GET, "/admin/v1/tenants/bank/audit/verify", &admin, None)
        .await;
    assert_eq!(v["ok"], true, "{v}");
    // New events after pruning, so there is a row to tamper with below.
    s.admin(Method::POST, "/admin/v1/tenants/bank/keys/rotate", &admin, None)
        .await;
    s.admin(Method::POST, "/admin/v1/tenants/bank/keys/rotate", &admin, None)
        .await;
    s.admin(Method::POST, "/admin/v1/tenants/bank/keys/rotate", &admin, None)
        .await;
    let tampered = head + 2;
    sqlx::query(sqlx::AssertSqlSafe(format!("update audit_events set data = '{{\"reason\":\"edited\"}}' where seq = {tampered} and tenant_id = (select id from tenants where slug = 'bank')")))
        .execute(&s.state.db.pool)
        .await
        .unwrap();
    let out = cli(&["audit", "verify", "--tenant", "bank"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("broken at sequence {tampered}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.stop().await;
}

/// Whatever the management API accepts, its event fits the chain: a change is never applied
/// and then left unrecorded because its before/after was too large for an event.
#[tokio::test]
async fn management_changes_of_any_accepted_size_are_recorded() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    let root = "A".repeat(9000);
    let (st, b) = s
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/bank",
            &admin,
            Some(json!({"policy": {"mfa": "required", "webauthn_attestation_roots": [root]}})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let uris: Vec<String> = (0..30)
        .map(|i| format!("https://app.example/cb/{i}/{}", "p".repeat(1500)))
        .collect();
    let (id, _) = s
        .client(
            &admin,
            "bank",
            json!({"name": "web", "grant_types": ["authorization_code"], "redirect_uris": uris}),
        )
        .await;
    let (st, b) = s
        .admin(
            Method::PATCH,
            &format!("/admin/v1/tenants/bank/clients/{id}"),
            &admin,
            Some(json!({"redirect_uris": [uris[0]]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    let (_, page) = s
        .admin(Method::GET, "/admin/v1/tenants/bank/audit?limit=200", &admin, None)
        .await;
    for bad in ["limit=x", "unknown=1"] {
        let (st, b) = s
            .admin(
                Method::GET,
                &format!("/admin/v1/tenants/bank/audit?{bad}"),
                &admin,
                None,
            )
            .await;
        common::assert_problem(st, &b, 400, "bad-request");
    }
    let events = page["items"].as_array().unwrap();
    let one = |kind: &str| {
        let found: Vec<&Value> = events.iter().filter(|e| e["type"] == kind).collect();
        assert_eq!(found.len(), 1, "{kind}: {events:#?}");
        found[0].clone()
    };
    // Only what changed, long values by digest.
    let t = one("tenant.updated");
    assert_eq!(
        t["data"]["before"],
        json!({"policy": {"mfa": null, "webauthn_attestation_roots": null}})
    );
    assert_eq!(t["data"]["after"]["policy"]["mfa"], "required");
    let digest = t["data"]["after"]["policy"]["webauthn_attestation_roots"][0]
        .as_str()
        .unwrap();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    assert!(one("client.created")["data"].is_object());
    let c = one("client.updated");
    assert_eq!(c["data"]["after"]["redirect_uris"].as_array().unwrap().len(), 1, "{c}");
    assert!(
        c["data"]["before"]["name"].is_null(),
        "unchanged fields are left out: {c}"
    );
    let (_, v) = s
        .admin(Method::GET, "/admin/v1/tenants/bank/audit/verify", &admin, None)
        .await;
    assert_eq!(v["ok"], true, "{v}");
    s.stop().await;
}

/// Whole-log reads (verify, export) are bounded per process: beyond the permits, 503 with
/// Retry-After at once, and served again when one is free.
#[tokio::test]
async fn whole_log_reads_are_bounded() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    let held: Vec<_> = std::iter::from_fn(|| s.state.audit.scan_permit()).collect();
    assert_eq!(held.len(), 2);
    for path in ["verify", "export"] {
        let r = s
            .http
            .get(format!("{}/admin/v1/tenants/bank/audit/{path}", s.url))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{path}");
        assert_eq!(r.headers()["retry-after"], "1");
    }
    drop(held);
    let (st, v) = s
        .admin(Method::GET, "/admin/v1/tenants/bank/audit/verify", &admin, None)
        .await;
    assert_eq!((st.as_u16(), &v["ok"]), (200, &json!(true)), "{v}");
    // An export holds its permit until its stream ends, then gives it back.
    let body = s
        .http
        .get(format!("{}/admin/v1/tenants/bank/audit/export", s.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.lines().count() >= 1, "{body}");
    // The server drops the finished stream just after the last byte is sent.
    let mut free = 0;
    for _ in 0..100 {
        // Collected, not counted: each permit must stay held while the next one is taken.
        free = std::iter::from_fn(|| s.state.audit.scan_permit())
            .collect::<Vec<_>>()
            .len();
        if free == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(free, 2, "every permit is free again");
    s.stop().await;
}

/// Platform-wide key rotations from the CLI land in the system tenant's chain.
#[tokio::test]
async fn platform_key_rotations_are_recorded() {
    let s = Server::start().await;
    s.admin_token().await; // bootstrap: the system tenant exists
    for (cmd, kind) in [
        ("rotate-pepper", "keys.pepper_rotated"),
        ("rotate-master", "keys.master_rotated"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_unicred"))
            .args(["keys", cmd])
            .env_clear()
            .env("UNICRED_DATABASE_URL", &s.db_url)
            .env("UNICRED_KEYS_DIR", &s.keys_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (data,): (String,) = sqlx::query_as(
            "select e.data from audit_events e join tenants t on t.id = e.tenant_id \
             where t.slug = 'system' and e.kind = $1 and e.actor = 'cli'",
        )
        .bind(kind)
        .fetch_one(&s.state.db.pool)
        .await
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let data: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(data["version"], 2, "{data}");
    }
    s.stop().await;
}

/// `unicred audit verify` reads only: on a database whose schema is not this version's it
/// says so and changes nothing (it used to run the migrations on what it was checking).
#[tokio::test]
async fn offline_verify_does_not_migrate_what_it_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/empty.db?mode=rwc", tmp.path().display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unicred"))
        .args(["audit", "verify"])
        .env_clear()
        .env("UNICRED_DATABASE_URL", &db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("run `unicred migrate` first"), "{stderr}");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
        .await
        .unwrap();
    let tables: Vec<(String,)> = sqlx::query_as("select name from sqlite_master where type = 'table'")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(tables.is_empty(), "{tables:?}");
}

/// A management change and its event commit together: when the event cannot be written, the
/// change is not made either (it used to stand, unrecorded, behind a 5xx).
#[tokio::test]
async fn a_change_whose_event_fails_is_not_made() {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    let uid = s.user(&admin, "bank", "alice", PW).await;
    let (id, _) = s.client(&admin, "bank", json!({"name": "web-app"})).await;
    let rename = |from: &'static str, to: &'static str| {
        let pool = s.state.db.pool.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!("alter table {from} rename to {to}")))
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    let (_, keys_before) = s.admin(Method::GET, "/admin/v1/tenants/bank/keys", &admin, None).await;
    let legacy: Value = serde_json::from_str(include_str!("fixtures/legacy_hashes.json")).unwrap();
    rename("audit_events", "audit_events_away").await;
    let changes = [
        (
            Method::POST,
            "/admin/v1/tenants".to_string(),
            Some(json!({"slug": "second"})),
        ),
        (Method::POST, "/admin/v1/tenants/bank/keys/rotate".to_string(), None),
        (
            Method::PATCH,
            "/admin/v1/tenants/bank".to_string(),
            Some(json!({"name": "Renamed"})),
        ),
        (
            Method::PATCH,
            format!("/admin/v1/tenants/bank/clients/{id}"),
            Some(json!({"name": "renamed"})),
        ),
        (Method::POST, format!("/admin/v1/tenants/bank/users/{uid}/lock"), None),
        (Method::DELETE, format!("/admin/v1/tenants/bank/clients/{id}"), None),
        (
            Method::POST,
            "/admin/v1/tenants/bank/users/import".to_string(),
            Some(json!({"users": [{"username": "imported", "password_hash": legacy[0]["hash"]}]})),
        ),
    ];
    for (m, path, body) in &changes {
        let (st, b) = s.admin(m.clone(), path, &admin, body.clone()).await;
        assert!(st.is_server_error(), "{m} {path}: {st} {b}");
    }
    rename("audit_events_away", "audit_events").await;
    let (_, t) = s.admin(Method::GET, "/admin/v1/tenants/bank", &admin, None).await;
    assert_eq!(t["name"], "bank", "{t}");
    let (st, c) = s
        .admin(
            Method::GET,
            &format!("/admin/v1/tenants/bank/clients/{id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!((st.as_u16(), c["name"].as_str()), (200, Some("web-app")), "{c}");
    let (_, u) = s
        .admin(
            Method::GET,
            &format!("/admin/v1/tenants/bank/users/{uid}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(u["status"], "active", "{u}");
    let (st, _) = s.admin(Method::GET, "/admin/v1/tenants/second", &admin, None).await;
    assert_eq!(st, 404, "no tenant without its event");
    let (_, keys_after) = s.admin(Method::GET, "/admin/v1/tenants/bank/keys", &admin, None).await;
    assert_eq!(keys_before, keys_after, "no rotation without its event");
    let (_, found) = s
        .admin(Method::GET, "/admin/v1/tenants/bank/users?q=imported", &admin, None)
        .await;
    assert_eq!(found["items"], json!([]), "no imported user without the import's event");

    // With the trail back, each change is made and recorded, and the chain verifies.
    for (m, path, body) in &changes {
        let (st, b) = s.admin(m.clone(), path, &admin, body.clone()).await;
        assert!(st.is_success(), "{m} {path}: {st} {b}");
    }
    let (_, page) = s
        .admin(Method::GET, "/admin/v1/tenants/bank/audit?limit=200", &admin, None)
        .await;
    let kinds: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    for k in [
        "keys.rotated",
        "tenant.updated",
        "client.updated",
        "user.locked",
        "client.deleted",
        "users.imported",
    ] {
        assert_eq!(kinds.iter().filter(|x| **x == k).count(), 1, "{k}: {kinds:?}");
    }
    let (_, v) = s
        .admin(Method::GET, "/admin/v1/tenants/bank/audit/verify", &admin, None)
        .await;
    assert_eq!(v["ok"], true, "{v}");
    s.stop().await;
}
