//! Second factors: TOTP (codes from an independent implementation: Python's standard library),
//! replay and skew, recovery codes, required enrolment, the sign-in API's factor steps, the
//! account API with its reauthentication window, and step-up on the login pages.

mod common;

use common::Server;
use reqwest::Method;
use serde_json::{Value, json};

const PW: &str = "violet-harbour-lantern-42";

/// RFC 6238 code for `secret` (base32) at `time`, computed by Python's hmac module.
fn totp(secret: &str, time: i64) -> String {
    let script = "import base64,hashlib,hmac,struct,sys\n\
        s=sys.argv[1]; s+='='*(-len(s)%8); k=base64.b32decode(s)\n\
        h=hmac.new(k,struct.pack('>Q',int(sys.argv[2])//30),hashlib.sha1).digest(); o=h[-1]&15\n\
        print('%06d'%((struct.unpack('>I',h[o:o+4])[0]&0x7fffffff)%1000000))";
    let out = std::process::Command::new("python3")
        .args(["-c", script, secret, &time.to_string()])
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct T {
    s: Server,
    admin: String,
    id: String,
    secret: String,
}

async fn setup() -> T {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    s.user(&admin, "bank", "alice", PW).await;
    let (id, secret) = s
        .client(
            &admin,
            "bank",
            json!({"name": "be", "authn_api": true, "grant_types": ["urn:unicred:grant-type:login-ticket"], "scopes": ["account"]}),
        )
        .await;
    T { s, admin, id, secret }
}

impl T {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .s
            .http
            .post(format!("{}/t/bank{path}", self.s.url))
            .basic_auth(&self.id, Some(&self.secret))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
    /// Sets the tenant's policy and waits out the one-second tenant cache.
    async fn set_policy(&self, policy: Value) {
        let (st, b) = self
            .s
            .admin(
                Method::PATCH,
                "/admin/v1/tenants/bank",
                &self.admin,
                Some(json!({ "policy": policy })),
            )
            .await;
        assert_eq!(st, 200, "{b}");
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    /// The account throttle of `user`, as the admin API shows it.
    async fn throttle(&self, user: &str) -> Value {
        let (_, page) = self
            .s
            .admin(
                Method::GET,
                &format!("/admin/v1/tenants/bank/users?q={user}"),
                &self.admin,
                None,
            )
            .await;
        let uid = page["items"][0]["id"].as_str().unwrap();
        let path = format!("/admin/v1/tenants/bank/users/{uid}/throttle");
        self.s.admin(Method::GET, &path, &self.admin, None).await.1
    }
    async fn signin(&self, user: &str) -> Value {
        self.post("/authn", json!({"username": user, "password": PW})).await.1
    }
    /// An access token with scope `account` for `user` (who has no factor yet).
    async fn account_token(&self, user: &str) -> String {
        let ticket = self.signin(user).await["login_ticket"].as_str().unwrap().to_string();
        let (st, r) = self
            .s
            .redeem_ticket("bank", &self.id, &self.secret, &ticket, "openid account")
            .await;
        assert_eq!(st, 200, "{r}");
        r["access_token"].as_str().unwrap().to_string()
    }
    async fn account(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self
            .s
            .http
            .request(method, format!("{}/t/bank/account{path}", self.s.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let (st, h) = (r.status().as_u16(), r.headers().clone());
        (st, r.json().await.unwrap_or(Value::Null), h)
    }
    /// Adds and confirms one more TOTP factor through the account API; returns its id.
    async fn add_totp(&self, token: &str) -> String {
        let (st, e, _) = self.account(Method::POST, "/totp", token, None).await;
        assert_eq!(st, 200, "{e}");
        let fid = e["factor_id"].as_str().unwrap().to_string();
        let code = totp(e["secret"].as_str().unwrap(), now());
        let (st, c, _) = self
            .account(
                Method::POST,
                &format!("/totp/{fid}/confirm"),
                token,
                Some(json!({"code": code})),
            )
            .await;
        assert_eq!(st, 200, "{c}");
        fid
    }
    /// Enrols TOTP through the account API; returns (secret, recovery codes, time of the code
    /// that confirmed it).
    async fn enrol(&self, user: &str) -> (String, Vec<String>, i64) {
        let token = self.account_token(user).await;
        // An abandoned enrolment is replaced by the next: one pending factor at a time.
        let (st, abandoned, _) = self.account(Method::POST, "/totp", &token, None).await;
        assert_eq!(st, 200, "{abandoned}");
        let (st, e, _) = self.account(Method::POST, "/totp", &token, None).await;
        assert_eq!(st, 200, "{e}");
        let (st, _, _) = self
            .account(
                Method::POST,
                &format!("/totp/{}/confirm", abandoned["factor_id"].as_str().unwrap()),
                &token,
                Some(json!({"code": totp(abandoned["secret"].as_str().unwrap(), now())})),
            )
            .await;
        assert_eq!(st, 422, "a valid code for the abandoned enrolment confirms nothing");
        let secret = e["secret"].as_str().unwrap().to_string();
        assert!(e["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/"));
        assert!(e["otpauth_uri"].as_str().unwrap().contains("issuer=bank"));
        assert!(e["qr_png_base64"].as_str().unwrap().starts_with("iVBOR"), "a PNG");
        let fid = e["factor_id"].as_str().unwrap();
        let (st, _, _) = self
            .account(
                Method::POST,
                &format!("/totp/{fid}/confirm"),
                &token,
                Some(json!({"code": "000000"})),
            )
            .await;
        assert_eq!(st, 422, "a wrong code does not confirm");
        let at = now();
        let (st, c, _) = self
            .account(
                Method::POST,
                &format!("/totp/{fid}/confirm"),
                &token,
                Some(json!({"code": totp(&secret, at)})),
            )
            .await;
        assert_eq!(st, 200, "{c}");
        let codes: Vec<String> = c["recovery_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        assert_eq!(codes.len(), 10);
        assert!(
            codes.iter().all(|c| c.replace('-', "").len() == 16),
            "16 base32 characters: 80 bits"
        );
        (secret, codes, at)
    }
}

#[tokio::test]
async fn totp_sign_in_with_replay_and_skew_rules() {
    let t = setup().await;
    let (secret, _, base) = t.enrol("alice").await;
    // The enrolment spent its step: only later steps can sign in from now on.
    let r = t.signin("alice").await;
    assert_eq!(r["status"], "MFA_REQUIRED", "{r}");
    assert_eq!(r["factors"], json!([{"type": "totp"}, {"type": "recovery_code"}]));
    assert!(r.get("login_ticket").is_none(), "no ticket before the second factor");
    let st = r["state_token"].as_str().unwrap();
    // Beyond the next step is outside the ±1 window (three steps from now: the clock may pass
    // a step boundary before the server checks); the enrolment's step was already used (replay).
    for (at, why) in [(now() + 90, "outside the window"), (base, "a spent step")] {
        let (code, body) = t
            .post(
                "/authn/factors/totp",
                json!({"state_token": st, "code": totp(&secret, at)}),
            )
            .await;
        assert_eq!((code, body["error"].as_str()), (401, Some("invalid_factor")), "{why}");
    }
    // One step ahead (skew) is accepted, once.
    let next = totp(&secret, base + 30);
    let (code, ok) = t
        .post("/authn/factors/totp", json!({"state_token": st, "code": next}))
        .await;
    assert_eq!(code, 200, "{ok}");
    // The audit trail: the password step (a factor followed), then the full sign-in.
    let kinds: Vec<(String, String)> = sqlx::query_as(
        "select kind, data from audit_events where kind in ('signin.password_ok', 'signin.success') order by seq",
    )
    .fetch_all(&t.s.state.db.pool)
    .await
    .unwrap();
    assert_eq!(
        kinds[kinds.len() - 2..],
        [
            (
                "signin.password_ok".to_string(),
                r#"{"next":"mfa","reason":"password_ok"}"#.to_string()
            ),
            ("signin.success".to_string(), r#"{"amr":"pwd otp"}"#.to_string()),
        ]
    );
    let st2 = t.signin("alice").await["state_token"].as_str().unwrap().to_string();
    let (code, body) = t
        .post("/authn/factors/totp", json!({"state_token": st2, "code": next}))
        .await;
    assert_eq!(
        (code, body["error"].as_str()),
        (401, Some("invalid_factor")),
        "replay refused"
    );
    // A used state token is dead.
    assert_eq!(
        t.post(
            "/authn/factors/totp",
            json!({"state_token": st, "code": totp(&secret, base + 30)})
        )
        .await
        .0,
        401
    );
    // The ticket's tokens say mfa.
    let ticket = ok["login_ticket"].as_str().unwrap();
    let tok: Value =
        t.s.http
            .post(format!("{}/t/bank/token", t.s.url))
            .basic_auth(&t.id, Some(&t.secret))
            .form(&[
                ("grant_type", "urn:unicred:grant-type:login-ticket"),
                ("login_ticket", ticket),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let idt = tok["id_token"].as_str().unwrap();
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(idt.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["acr"], "urn:unicred:acr:mfa");
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
    t.s.stop().await;
}

/// On a tenant that requires a second factor, two parallel deletes of a user's two factors
/// cannot each count the other as the one left: exactly one succeeds.
#[tokio::test]
async fn parallel_deletes_keep_the_last_required_factor() {
    let t = setup().await;
    let token = t.account_token("alice").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(t.add_totp(&token).await);
    }
    t.set_policy(json!({"mfa": "required"})).await;
    let (p0, p1) = (format!("/factors/{}", ids[0]), format!("/factors/{}", ids[1]));
    let (a, b) = tokio::join!(
        t.account(Method::DELETE, &p0, &token, None),
        t.account(Method::DELETE, &p1, &token, None)
    );
    let mut codes = [a.0, b.0];
    codes.sort();
    assert_eq!(codes, [204, 409], "{a:?} {b:?}");
    let (_, factors, _) = t.account(Method::GET, "/factors", &token, None).await;
    assert_eq!(factors.as_array().unwrap().len(), 1, "{factors}");
    t.s.stop().await;
}

/// `keys rotate-master` re-encrypts every secret under the old master key — TOTP seeds and
/// audit checkpoint keys as well as signing keys — and TOTP keeps working afterwards.
#[tokio::test]
async fn master_key_rotation_reencrypts_totp_seeds_and_audit_keys() {
    let t = setup().await;
    let (secret, _, base) = t.enrol("alice").await;
    let tenant = t.s.state.tenants.by_slug("bank").await.unwrap().unwrap();
    t.s.state.audit.checkpoint(&tenant.id).await.unwrap();
    let v =
        t.s.state
            .keyring
            .rotate(&t.s.state.db, unicred::crypto::keyring::Kind::Master)
            .await
            .unwrap();
    assert_eq!(v, 2);
    let report = unicred::cli::reencrypt_secrets(&t.s.state).await.unwrap();
    for (what, n, by_version) in report {
        assert!(n >= 1, "{what}: none re-encrypted");
        assert_eq!(by_version.iter().map(|(v, _)| *v).collect::<Vec<_>>(), [2], "{what}");
    }
    let st = t.signin("alice").await["state_token"].as_str().unwrap().to_string();
    let (code, ok) = t
        .post(
            "/authn/factors/totp",
            json!({"state_token": st, "code": totp(&secret, base + 30)}),
        )
        .await;
    assert_eq!(code, 200, "the seed decrypts under the new master key: {ok}");
    t.s.stop().await;
}

#[tokio::test]
async fn recovery_codes_are_single_use_and_malformed_factors_change_nothing() {
    let t = setup().await;
    let (_, codes, _) = t.enrol("alice").await;
    let st = t.signin("alice").await["state_token"].as_str().unwrap().to_string();
    for bad in [
        json!({}),
        json!({"state_token": 5}),
        json!({"state_token": st, "code": "x", "extra": 1}),
    ] {
        assert_eq!(t.post("/authn/factors/totp", bad).await.0, 400);
    }
    assert_eq!(
        t.post("/authn/factors/sms", json!({"state_token": st, "code": "1"}))
            .await
            .0,
        404
    );
    assert_eq!(
        t.post(
            "/authn/factors/totp",
            json!({"state_token": "garbage", "code": "123456"})
        )
        .await
        .0,
        401
    );
    assert_eq!(
        t.post(
            "/authn/factors/totp",
            json!({"state_token": st, "code": "1".repeat(100)})
        )
        .await
        .0,
        401
    );
    let (code, _) = t
        .post(
            "/authn/factors/recovery_code",
            json!({"state_token": st, "code": codes[0].to_lowercase()}),
        )
        .await;
    assert_eq!(code, 200, "recovery codes are case-insensitive");
    let st = t.signin("alice").await["state_token"].as_str().unwrap().to_string();
    assert_eq!(
        t.post(
            "/authn/factors/recovery_code",
            json!({"state_token": st, "code": codes[0]})
        )
        .await
        .0,
        401,
        "single use"
    );
    assert_eq!(
        t.post(
            "/authn/factors/recovery_code",
            json!({"state_token": st, "code": codes[1]})
        )
        .await
        .0,
        200
    );
    t.s.stop().await;
}

#[tokio::test]
async fn second_factor_failures_count_toward_throttling() {
    let t = setup().await;
    let (secret, _, _) = t.enrol("alice").await;
    t.set_policy(json!({"lockout_threshold": 3})).await;
    // password (1) + two wrong codes (2, 3) reach the threshold; the correct password did not reset it.
    let st = t.signin("alice").await["state_token"].as_str().unwrap().to_string();
    for _ in 0..2 {
        assert_eq!(
            t.post("/authn/factors/totp", json!({"state_token": st, "code": "000000"}))
                .await
                .0,
            401
        );
    }
    // The account's counter holds the password attempt and both factor failures, and a delay
    // now applies (the correct password did not reset anything).
    let th = t.throttle("alice").await;
    assert_eq!(th["failures"], 3, "{th}");
    assert!(th["next_allowed_at"].as_i64().unwrap() > 0);
    // Within the delay even a valid code is refused (judged by when the answer came back: the
    // delay is one second, and a request sent just before it ends may arrive after).
    let (code, _) = t
        .post(
            "/authn/factors/totp",
            json!({"state_token": st, "code": totp(&secret, now() + 30)}),
        )
        .await;
    if now() < th["next_allowed_at"].as_i64().unwrap() {
        assert_eq!(code, 401, "throttled even with a valid code");
    }
    t.s.stop().await;
}

/// A state token allows 5 factor attempts, also when they arrive together.
#[tokio::test]
async fn parallel_codes_on_one_state_token_get_five_checks_at_most() {
    let t = setup().await;
    let (secret, _, _) = t.enrol("alice").await;
    t.set_policy(json!({"lockout_threshold": 100})).await;
    let st = t.signin("alice").await["state_token"].as_str().unwrap().to_string();
    let mut tries = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let req =
            t.s.http
                .post(format!("{}/t/bank/authn/factors/totp", t.s.url))
                .basic_auth(&t.id, Some(&t.secret))
                .json(&json!({"state_token": st, "code": "000000"}));
        tries.spawn(async move { req.send().await.unwrap().status().as_u16() });
    }
    for code in tries.join_all().await {
        assert_eq!(code, 401);
    }
    // Each checked code counts on the account's throttle: the password and at most 5 codes.
    let th = t.throttle("alice").await;
    assert!(th["failures"].as_i64().unwrap() <= 6, "{th}");
    // The token is spent: even a valid code is refused with it.
    let (code, _) = t
        .post(
            "/authn/factors/totp",
            json!({"state_token": st, "code": totp(&secret, now())}),
        )
        .await;
    assert_eq!(code, 401);
    t.s.stop().await;
}

#[tokio::test]
async fn required_policy_forces_enrolment_before_any_ticket() {
    let t = setup().await;
    t.set_policy(json!({"mfa": "required"})).await;
    let r = t.signin("alice").await;
    assert_eq!(r["status"], "MFA_ENROLL_REQUIRED", "{r}");
    assert!(r.get("login_ticket").is_none());
    let st = r["state_token"].as_str().unwrap();
    // The enrolment token is not a factor token.
    assert_eq!(
        t.post("/authn/factors/totp", json!({"state_token": st, "code": "123456"}))
            .await
            .0,
        401
    );
    let (code, e) = t.post("/authn/enroll/totp", json!({"state_token": st})).await;
    assert_eq!(code, 200, "{e}");
    let secret = e["secret"].as_str().unwrap();
    assert_eq!(
        t.post(
            "/authn/enroll/totp/confirm",
            json!({"state_token": st, "code": "000000"})
        )
        .await
        .0,
        401
    );
    let (code, done) = t
        .post(
            "/authn/enroll/totp/confirm",
            json!({"state_token": st, "code": totp(secret, now())}),
        )
        .await;
    assert_eq!(code, 200, "{done}");
    assert_eq!(done["status"], "SUCCESS");
    assert_eq!(done["recovery_codes"].as_array().unwrap().len(), 10);
    // Removing the only factor of a required tenant is refused.
    let r = t.signin("alice").await;
    let st = r["state_token"].as_str().unwrap();
    let codes = done["recovery_codes"].as_array().unwrap();
    let (_, ok) = t
        .post(
            "/authn/factors/recovery_code",
            json!({"state_token": st, "code": codes[0]}),
        )
        .await;
    let ticket = ok["login_ticket"].as_str().unwrap();
    let tok: Value =
        t.s.http
            .post(format!("{}/t/bank/token", t.s.url))
            .basic_auth(&t.id, Some(&t.secret))
            .form(&[
                ("grant_type", "urn:unicred:grant-type:login-ticket"),
                ("login_ticket", ticket),
                ("scope", "openid account"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let token = tok["access_token"].as_str().unwrap();
    let (_, factors, _) = t.account(Method::GET, "/factors", token, None).await;
    let fid = factors[0]["id"].as_str().unwrap();
    assert!(
        factors[0].get("secret").is_none() && factors[0].get("secret_ct").is_none(),
        "never secrets"
    );
    let (code, _, _) = t.account(Method::DELETE, &format!("/factors/{fid}"), token, None).await;
    assert_eq!(code, 409);
    // The admin can reset it (support).
    let (_, page) =
        t.s.admin(Method::GET, "/admin/v1/tenants/bank/users?q=alice", &t.admin, None)
            .await;
    let uid = page["items"][0]["id"].as_str().unwrap();
    let (st, _) =
        t.s.admin(
            Method::DELETE,
            &format!("/admin/v1/tenants/bank/users/{uid}/factors/{fid}"),
            &t.admin,
            None,
        )
        .await;
    assert_eq!(st, 204);
    assert_eq!(t.signin("alice").await["status"], "MFA_ENROLL_REQUIRED");
    t.s.stop().await;
}

#[tokio::test]
async fn account_changes_need_a_recent_authentication() {
    let t = setup().await;
    t.set_policy(json!({"reauth_window_seconds": 5})).await;
    let token = t.account_token("alice").await;
    let (code, sessions, _) = t.account(Method::GET, "/sessions", &token, None).await;
    assert_eq!(
        (code, sessions.as_array().map(Vec::len)),
        (200, Some(0)),
        "the sign-in API makes no SSO session"
    );
    tokio::time::sleep(std::time::Duration::from_millis(6000)).await;
    let (code, body, h) = t.account(Method::POST, "/totp", &token, None).await;
    assert_eq!(code, 401, "{body}");
    let www = h["www-authenticate"].to_str().unwrap();
    assert!(
        www.contains("insufficient_user_authentication") && www.contains("max_age=5"),
        "{www}"
    );
    // Reading is fine; a token without the account scope is not.
    assert_eq!(t.account(Method::GET, "/factors", &token, None).await.0, 200);
    let (_, cc) = t.s.token("bank", &t.id, &t.secret, &[]).await;
    assert_eq!(
        t.account(
            Method::GET,
            "/factors",
            cc["access_token"].as_str().unwrap_or("x"),
            None
        )
        .await
        .0,
        401
    );
    // Only a client registered with the `account` scope may ask for it.
    let (app, app_secret) =
        t.s.client(
            &t.admin,
            "bank",
            json!({"name": "app", "authn_api": true, "grant_types": ["urn:unicred:grant-type:login-ticket"]}),
        )
        .await;
    let r: Value =
        t.s.authn("bank", &app, &app_secret, "alice", PW)
            .await
            .json()
            .await
            .unwrap();
    let ticket = r["login_ticket"].as_str().unwrap();
    let (st, b) =
        t.s.redeem_ticket("bank", &app, &app_secret, ticket, "openid account")
            .await;
    assert_eq!((st.as_u16(), b["error"].as_str()), (400, Some("invalid_scope")), "{b}");
    // Password change: wrong current password refused; a fresh sign-in can change it.
    let fresh = t.account_token("alice").await;
    let (code, _, _) = t
        .account(
            Method::POST,
            "/password",
            &fresh,
            Some(json!({"current_password": "nope-nope-nope", "new_password": "a brand new passphrase 77"})),
        )
        .await;
    assert_eq!(code, 422);
    let (code, b, _) = t
        .account(
            Method::POST,
            "/password",
            &fresh,
            Some(json!({"current_password": PW, "new_password": "a brand new passphrase 77"})),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    assert_eq!(
        t.post("/authn", json!({"username": "alice", "password": PW})).await.0,
        401
    );
    assert_eq!(
        t.post(
            "/authn",
            json!({"username": "alice", "password": "a brand new passphrase 77"})
        )
        .await
        .0,
        200
    );
    // Strangers' failures on the username (a delay for sign-ins) do not stop the signed-in
    // user from changing the password: lockout is not a weapon.
    t.s.user(&t.admin, "bank", "bob", PW).await;
    let bob = t.account_token("bob").await;
    for _ in 0..8 {
        let (code, _) = t
            .post("/authn", json!({"username": "bob", "password": "a stranger's guess"}))
            .await;
        assert_eq!(code, 401);
    }
    assert_eq!(
        t.post("/authn", json!({"username": "bob", "password": PW})).await.0,
        401,
        "delayed"
    );
    let (code, b, _) = t
        .account(
            Method::POST,
            "/password",
            &bob,
            Some(json!({"current_password": PW, "new_password": "a second fresh passphrase 12"})),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    t.s.stop().await;
}

#[tokio::test]
async fn the_tenant_chooses_the_allowed_factor_types() {
    let t = setup().await;
    t.s.user(&t.admin, "bank", "bob", PW).await;
    let patch = |policy: Value| {
        t.s.admin(
            Method::PATCH,
            "/admin/v1/tenants/bank",
            &t.admin,
            Some(json!({ "policy": policy })),
        )
    };
    let not_allowed = |st: u16, b: &Value| {
        common::assert_problem(
            reqwest::StatusCode::from_u16(st).unwrap(),
            b,
            403,
            "factor-type-not-allowed",
        )
    };
    // Validation: unknown types are malformed (400, naming the field); an empty or repeating
    // list is invalid (422, naming the field).
    let (st, b) = patch(json!({"mfa_factors": ["totp", "sms"]})).await;
    common::assert_problem(st, &b, 400, "bad-request");
    assert!(b["detail"].as_str().unwrap().contains("mfa_factors"), "{b}");
    for bad in [json!([]), json!(["totp", "totp"])] {
        let (st, b) = patch(json!({ "mfa_factors": bad })).await;
        common::assert_problem(st, &b, 422, "validation");
        assert_eq!(b["errors"][0]["field"], "mfa_factors", "{b}");
    }
    let (_, tenant) = t.s.admin(Method::GET, "/admin/v1/tenants/bank", &t.admin, None).await;
    assert!(tenant["policy"].get("mfa_factors").is_none(), "default: every type");

    // Alice enrols TOTP while it is allowed; then the tenant allows only WebAuthn.
    let (secret, _, _) = t.enrol("alice").await;
    let (st, b) = patch(json!({"mfa_factors": ["webauthn"]})).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["policy"]["mfa_factors"], json!(["webauthn"]));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // Enrolling TOTP is refused; WebAuthn registration is not.
    let token = t.account_token("bob").await;
    let (st, b, _) = t.account(Method::POST, "/totp", &token, None).await;
    not_allowed(st, &b);
    let (st, b, _) = t
        .account(Method::POST, "/webauthn/register/options", &token, Some(json!({})))
        .await;
    assert_eq!(st, 200, "{b}");

    // Alice's TOTP is neither offered nor accepted (nor her recovery codes): an optional
    // tenant signs her in with the password alone.
    let r = t.signin("alice").await;
    assert_eq!(r["status"], "SUCCESS", "{r}");
    // A required tenant makes her enrol an allowed type: WebAuthn only, TOTP enrolment is
    // refused.
    patch(json!({"mfa": "required"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = t.signin("alice").await;
    assert_eq!(r["status"], "MFA_ENROLL_REQUIRED", "{r}");
    assert_eq!(r["factors"], json!([{"type": "webauthn"}]), "{r}");
    let (st, b) = t
        .post("/authn/enroll/totp", json!({"state_token": r["state_token"]}))
        .await;
    assert_eq!((st, b["error"].as_str()), (403, Some("factor_not_allowed")), "{b}");

    // TOTP allowed (alone) again: offered and accepted again; WebAuthn registration refused.
    patch(json!({"mfa_factors": ["totp"]})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = t.signin("alice").await;
    assert_eq!(r["status"], "MFA_REQUIRED", "{r}");
    assert_eq!(r["factors"], json!([{"type": "totp"}, {"type": "recovery_code"}]));
    let (st, ok) = t
        .post(
            "/authn/factors/totp",
            json!({"state_token": r["state_token"], "code": totp(&secret, now() + 30)}),
        )
        .await;
    assert_eq!(st, 200, "{ok}");
    let r = t.signin("bob").await;
    assert_eq!(r["status"], "MFA_ENROLL_REQUIRED", "{r}");
    assert_eq!(r["factors"], json!([{"type": "totp"}]), "{r}");
    let (st, b, _) = t
        .account(Method::POST, "/webauthn/register/options", &token, Some(json!({})))
        .await;
    not_allowed(st, &b);

    // `mfa: off`: no second factor is asked for, offered or enrolled — Alice's TOTP included.
    patch(json!({"mfa": "off"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = t.signin("alice").await;
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let (st, b, _) = t.account(Method::POST, "/totp", &token, None).await;
    not_allowed(st, &b);
    t.s.stop().await;
}

/// With a second factor, the sign-in API asks for it before a temporary password is replaced:
/// the temporary password alone cannot choose the account's password.
#[tokio::test]
async fn a_temporary_password_is_replaced_after_the_second_factor() {
    let t = setup().await;
    let (_, codes, _) = t.enrol("alice").await;
    let temp = t.s.temporary_password(&t.admin, "bank", "alice").await;
    let (st, r) = t.post("/authn", json!({"username": "alice", "password": temp})).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("MFA_REQUIRED")), "{r}");
    let mfa_token = r["state_token"].as_str().unwrap().to_string();
    let new = "granite-meadow-compass-88";
    // The second factor's state token cannot choose the password.
    let (st, _) = t
        .post(
            "/authn/password",
            json!({"state_token": mfa_token, "new_password": new}),
        )
        .await;
    assert_eq!(st, 401);
    let (st, r) = t
        .post(
            "/authn/factors/recovery_code",
            json!({"state_token": mfa_token, "code": codes[0]}),
        )
        .await;
    assert_eq!(
        (st, r["status"].as_str()),
        (200, Some("PASSWORD_CHANGE_REQUIRED")),
        "{r}"
    );
    assert!(r.get("login_ticket").is_none(), "{r}");
    let (st, r) = t
        .post(
            "/authn/password",
            json!({"state_token": r["state_token"], "new_password": new}),
        )
        .await;
    assert_eq!((st, r["status"].as_str()), (200, Some("SUCCESS")), "{r}");
    let (st, tok) =
        t.s.redeem_ticket("bank", &t.id, &t.secret, r["login_ticket"].as_str().unwrap(), "openid")
            .await;
    assert_eq!(st, 200, "{tok}");
    let claims = common::jwt_claims(tok["id_token"].as_str().unwrap());
    assert_eq!(claims["acr"], "urn:unicred:acr:mfa", "{claims}");
    assert_eq!(claims["amr"], json!(["pwd", "otp"]), "{claims}");
    // The new password stands, and still needs the factor.
    let (_, r) = t.post("/authn", json!({"username": "alice", "password": new})).await;
    assert_eq!(r["status"], "MFA_REQUIRED", "{r}");
    t.s.stop().await;
}

/// A user has at most ten second factors: each sign-in checks a code against every TOTP seed,
/// so an account cannot be grown without bound. Removing one makes room again.
#[tokio::test]
async fn a_user_has_at_most_ten_factors() {
    let t = setup().await;
    let token = t.account_token("alice").await;
    let mut ids = vec![];
    for _ in 0..10 {
        ids.push(t.add_totp(&token).await);
    }
    let (st, e, _) = t.account(Method::POST, "/totp", &token, None).await;
    assert_eq!(
        (st, e["type"].as_str()),
        (409, Some("urn:unicred:problem:too-many-factors")),
        "{e}"
    );
    let (st, e, _) = t
        .account(
            Method::POST,
            "/webauthn/register/options",
            &token,
            Some(json!({"name": "Key"})),
        )
        .await;
    assert_eq!(st, 409, "{e}");
    let (st, _, _) = t
        .account(Method::DELETE, &format!("/factors/{}", ids[0]), &token, None)
        .await;
    assert_eq!(st, 204);
    let (st, e, _) = t.account(Method::POST, "/totp", &token, None).await;
    assert_eq!(st, 200, "{e}");
    t.s.stop().await;
}

/// Sign-in state tokens are purged once expired (every minute, in maintenance): each password
/// step of a user with a factor writes one.
#[tokio::test]
async fn expired_state_tokens_are_purged() {
    let t = setup().await;
    t.enrol("alice").await;
    assert_eq!(t.signin("alice").await["status"], "MFA_REQUIRED");
    sqlx::query("update mfa_states set expires_at = 1")
        .execute(&t.s.state.db.pool)
        .await
        .unwrap();
    assert_eq!(t.signin("alice").await["status"], "MFA_REQUIRED");
    let purged = unicred::store::factors::purge_expired_states(&t.s.state.db)
        .await
        .unwrap();
    assert!(purged >= 1, "{purged}");
    let (left,): (i64,) = sqlx::query_as("select count(*) from mfa_states")
        .fetch_one(&t.s.state.db.pool)
        .await
        .unwrap();
    assert_eq!(left, 1, "the live one stays");
    t.s.stop().await;
}
