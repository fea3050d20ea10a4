//! Passkeys on the login pages — passwordless sign-in, and registration on the enrolment page
//! of a tenant that requires a second factor — with webauthn-authenticator-rs's software passkey
//! standing in for a discoverable authenticator: SoftPasskey needs the credential named in
//! `allowCredentials` and returns no user handle, so the test adds both — exactly what a
//! discoverable authenticator supplies itself (the user handle is not signed; the server
//! must not trust it beyond finding the credential, which is what these tests check).

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::Server;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

const PW: &str = "violet-harbour-lantern-42";
const CB: &str = "http://127.0.0.1:9/cb";

struct T {
    s: Server,
    admin: String,
    /// The `Cookie` header of the test's one browser: login forms work only in the browser
    /// that started their sign-in.
    cookies: std::sync::Mutex<String>,
}

/// A registered passkey: its authenticator, credential id and user handle (base64url).
struct Key {
    auth: SoftPasskey,
    cred_id: String,
    handle: String,
}

struct App {
    id: String,
    secret: String,
    be: String,
    be_secret: String,
}

async fn setup() -> T {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    T {
        s,
        admin,
        cookies: Default::default(),
    }
}

fn origin(s: &Server) -> Url {
    Url::parse(s.state.config.public_url.as_str()).unwrap()
}

use common::jwt_claims as claims;

fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker).unwrap_or_else(|| panic!("no {name} in {body}")) + marker.len();
    body[start..start + body[start..].find('"').unwrap()].to_string()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl T {
    /// A tenant with a web app and a sign-in API client.
    async fn tenant(&self, slug: &str) -> App {
        self.s.tenant(&self.admin, slug).await;
        let (id, secret) = self
            .s
            .client(
                &self.admin,
                slug,
                json!({"name": "Web App", "grant_types": ["authorization_code"], "redirect_uris": [CB]}),
            )
            .await;
        let (be, be_secret) = self.s.authn_client(&self.admin, slug).await;
        App {
            id,
            secret,
            be,
            be_secret,
        }
    }

    /// An access token with scope `account` for a user without factors.
    async fn account_token(&self, slug: &str, app: &App, username: &str) -> String {
        let r: Value = self
            .s
            .authn(slug, &app.be, &app.be_secret, username, PW)
            .await
            .json()
            .await
            .unwrap();
        let tok: Value = self
            .s
            .http
            .post(format!("{}/t/{slug}/token", self.s.url))
            .basic_auth(&app.be, Some(&app.be_secret))
            .form(&[
                ("grant_type", "urn:unicred:grant-type:login-ticket"),
                (
                    "login_ticket",
                    r["login_ticket"].as_str().unwrap_or_else(|| panic!("{r}")),
                ),
                ("scope", "openid account"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tok["access_token"].as_str().unwrap().to_string()
    }

    /// Registers a passkey through the account API; `rk` is what the browser reports in
    /// credProps (whether it created a discoverable credential).
    async fn register(&self, slug: &str, app: &App, username: &str, user_id: &str, rk: bool) -> Key {
        let token = self.account_token(slug, app, username).await;
        let post = |path: &str, body: Value| {
            self.s
                .http
                .post(format!("{}/t/{slug}/account{path}", self.s.url))
                .bearer_auth(&token)
                .json(&body)
                .send()
        };
        let opts: Value = post("/webauthn/register/options", json!({"name": "Phone"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sel = &opts["publicKey"]["authenticatorSelection"];
        assert_eq!(sel["residentKey"], "preferred", "{opts}");
        assert_eq!(sel["userVerification"], "required", "{opts}");
        let ccr: CreationChallengeResponse = serde_json::from_value(opts).unwrap();
        let mut auth = SoftPasskey::new(true);
        let cred = auth.do_registration(origin(&self.s), ccr).unwrap();
        let mut cred = serde_json::to_value(cred).unwrap();
        if rk {
            cred["extensions"]["credProps"] = json!({"rk": true});
        }
        let cred_id = cred["rawId"].as_str().unwrap().to_string();
        let r = post("/webauthn/register", json!({"credential": cred})).await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let handle = B64.encode(uuid::Uuid::parse_str(user_id).unwrap().as_bytes());
        Key { auth, cred_id, handle }
    }
}

/// A login transaction of `app` at `slug`: (tx, csrf, the login page).
async fn login_page(t: &T, slug: &str, app: &App) -> (String, String, String) {
    let nc = no_redirects();
    let mut u = url::Url::parse(&format!("{}/t/{slug}/authorize", t.s.url)).unwrap();
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &app.id)
        .append_pair("redirect_uri", CB)
        .append_pair("scope", "openid")
        .append_pair("state", "st-pk")
        .append_pair("nonce", "n-pk");
    let cookies = t.cookies.lock().unwrap().clone();
    let r = nc.get(u.as_str()).header("cookie", cookies).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect();
    *t.cookies.lock().unwrap() = set.join("; ");
    let login_url = r.headers()["location"]
        .to_str()
        .unwrap()
        .replace("http://localhost", "http://127.0.0.1");
    let page = nc.get(&login_url).send().await.unwrap().text().await.unwrap();
    (hidden(&page, "tx"), hidden(&page, "csrf"), page)
}

async fn page_post(t: &T, slug: &str, path: &str, form: &[(&str, &str)]) -> (u16, HeaderMap, String) {
    let cookies = t.cookies.lock().unwrap().clone();
    let r = no_redirects()
        .post(format!("{}/t/{slug}{path}", t.s.url))
        .header("cookie", cookies)
        .form(form)
        .send()
        .await
        .unwrap();
    let h = r.headers().clone();
    (r.status().as_u16(), h, r.text().await.unwrap())
}

/// The passwordless options of a login transaction.
async fn options(t: &T, slug: &str, tx: &str, csrf: &str) -> Value {
    let (code, _, body) = page_post(t, slug, "/login/passkey/options", &[("tx", tx), ("csrf", csrf)]).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The authenticator's answer to `opts`, as a discoverable authenticator gives it (with
/// another user handle than the key's own, if `handle` is given).
fn assert_with(t: &T, key: &mut Key, mut opts: Value, handle: Option<&str>) -> String {
    let handle = handle.unwrap_or(&key.handle).to_string();
    opts["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": key.cred_id}]);
    let rcr: RequestChallengeResponse = serde_json::from_value(opts).unwrap();
    let mut a = serde_json::to_value(key.auth.do_authentication(origin(&t.s), rcr).unwrap()).unwrap();
    a["response"]["userHandle"] = handle.into();
    a.to_string()
}

fn session_cookie(h: &HeaderMap) -> bool {
    h.get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().contains("unicred-session"))
}

async fn events(t: &T, kind: &str) -> Vec<Value> {
    let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select data from audit_events where kind = '{kind}' order by seq"
    )))
    .fetch_all(&t.s.state.db.pool)
    .await
    .unwrap();
    rows.iter().map(|(d,)| serde_json::from_str(d).unwrap()).collect()
}

#[tokio::test]
async fn a_discoverable_passkey_signs_in_without_a_username() {
    let t = setup().await;
    let app = t.tenant("bank").await;
    let alice = t.s.user(&t.admin, "bank", "alice", PW).await;
    let mut key = t.register("bank", &app, "alice", &alice, true).await;

    let (tx, csrf, page) = login_page(&t, "bank", &app).await;
    assert!(page.contains("id=\"passkey\""), "the passkey button: {page}");
    assert!(page.contains("src=\"/assets/webauthn.js\""), "{page}");
    assert!(!page.contains("<script>"), "no inline script");

    // The CSRF token is checked.
    let (code, _, _) = page_post(&t, "bank", "/login/passkey/options", &[("tx", &tx), ("csrf", "x")]).await;
    assert_eq!(code, 403);
    let opts = options(&t, "bank", &tx, &csrf).await;
    let pk = &opts["publicKey"];
    assert!(
        pk["allowCredentials"].as_array().is_none_or(Vec::is_empty),
        "no credential named: {opts}"
    );
    assert_eq!(pk["userVerification"], "required", "{opts}");
    assert!(
        opts.get("mediation").is_none_or(Value::is_null),
        "a button, not autofill: {opts}"
    );

    let assertion = assert_with(&t, &mut key, opts, None);
    let form = [
        ("tx", tx.as_str()),
        ("csrf", csrf.as_str()),
        ("credential", assertion.as_str()),
    ];
    let (code, h, body) = page_post(&t, "bank", "/login/passkey", &form).await;
    assert_eq!(code, 200, "{body}");
    assert!(session_cookie(&h), "a session starts: {h:?}");
    let redirect = serde_json::from_str::<Value>(&body).unwrap()["redirect"]
        .as_str()
        .unwrap()
        .to_string();
    let q: std::collections::HashMap<String, String> =
        url::Url::parse(&redirect).unwrap().query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st-pk");
    let tok: Value =
        t.s.http
            .post(format!("{}/t/bank/token", t.s.url))
            .basic_auth(&app.id, Some(&app.secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", CB),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let c = claims(tok["id_token"].as_str().unwrap_or_else(|| panic!("{tok}")));
    assert_eq!(c["sub"], alice.as_str());
    assert_eq!(c["acr"], "urn:unicred:acr:mfa", "{c}");
    assert_eq!(c["amr"], json!(["hwk", "user"]), "{c}");
    let success = events(&t, "signin.success").await;
    assert_eq!(success.last().unwrap()["amr"], "hwk user");

    // The same answer again, on a new transaction: its ceremony is spent. No session.
    let (tx2, csrf2, _) = login_page(&t, "bank", &app).await;
    let form = [
        ("tx", tx2.as_str()),
        ("csrf", csrf2.as_str()),
        ("credential", assertion.as_str()),
    ];
    let (code, h, body) = page_post(&t, "bank", "/login/passkey", &form).await;
    assert_eq!(code, 401, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    assert!(!session_cookie(&h));
    t.s.stop().await;
}

#[tokio::test]
async fn repeated_options_replace_the_transactions_ceremony() {
    let t = setup().await;
    let app = t.tenant("bank").await;
    let alice = t.s.user(&t.admin, "bank", "alice", PW).await;
    let mut key = t.register("bank", &app, "alice", &alice, true).await;
    let ceremonies = || async {
        let (n,): (i64,) = sqlx::query_as("select count(*) from webauthn_challenges where kind = 'discover'")
            .fetch_one(&t.s.state.db.pool)
            .await
            .unwrap();
        n
    };
    let (tx, csrf, _) = login_page(&t, "bank", &app).await;
    let first = options(&t, "bank", &tx, &csrf).await;
    for _ in 0..20 {
        options(&t, "bank", &tx, &csrf).await;
    }
    let last = options(&t, "bank", &tx, &csrf).await;
    assert_eq!(
        ceremonies().await,
        1,
        "one ceremony per login transaction, however often asked"
    );
    // Another transaction has its own.
    let (tx2, csrf2, _) = login_page(&t, "bank", &app).await;
    options(&t, "bank", &tx2, &csrf2).await;
    assert_eq!(ceremonies().await, 2);

    // The replaced options no longer sign in; the latest do.
    let stale = assert_with(&t, &mut key, first, None);
    let form = [
        ("tx", tx.as_str()),
        ("csrf", csrf.as_str()),
        ("credential", stale.as_str()),
    ];
    let (code, h, body) = page_post(&t, "bank", "/login/passkey", &form).await;
    assert_eq!(code, 401, "{body}");
    assert!(!session_cookie(&h));
    let fresh = assert_with(&t, &mut key, last, None);
    let form = [
        ("tx", tx.as_str()),
        ("csrf", csrf.as_str()),
        ("credential", fresh.as_str()),
    ];
    let (code, h, body) = page_post(&t, "bank", "/login/passkey", &form).await;
    assert_eq!(code, 200, "{body}");
    assert!(session_cookie(&h));
    t.s.stop().await;
}

#[tokio::test]
async fn foreign_unbound_undiscoverable_and_cloned_passkeys_are_refused() {
    let t = setup().await;
    let bank = t.tenant("bank").await;
    let other = t.tenant("other").await;
    let alice = t.s.user(&t.admin, "bank", "alice", PW).await;
    let bob = t.s.user(&t.admin, "bank", "bob", PW).await;
    t.s.user(&t.admin, "other", "alice", PW).await;
    let mut key = t.register("bank", &bank, "alice", &alice, true).await;
    let mut plain = t.register("bank", &bank, "bob", &bob, false).await;
    let refused = |code: u16, h: &HeaderMap, body: &str, why: &str| {
        assert_eq!(code, 401, "{why}: {body}");
        assert!(!session_cookie(h), "{why}: no session");
    };

    // Tenant A's passkey on tenant B's login page (one relying party for every tenant, so
    // the browser offers it there).
    let (tx, csrf, _) = login_page(&t, "other", &other).await;
    let a = assert_with(&t, &mut key, options(&t, "other", &tx, &csrf).await, None);
    let (code, h, body) = page_post(
        &t,
        "other",
        "/login/passkey",
        &[("tx", &tx), ("csrf", &csrf), ("credential", &a)],
    )
    .await;
    refused(code, &h, &body, "another tenant's credential");

    // Options of one login transaction answered on another.
    let (tx1, csrf1, _) = login_page(&t, "bank", &bank).await;
    let (tx2, csrf2, _) = login_page(&t, "bank", &bank).await;
    let a = assert_with(&t, &mut key, options(&t, "bank", &tx1, &csrf1).await, None);
    let (code, h, body) = page_post(
        &t,
        "bank",
        "/login/passkey",
        &[("tx", &tx2), ("csrf", &csrf2), ("credential", &a)],
    )
    .await;
    refused(code, &h, &body, "another transaction's ceremony");

    // A user handle that is not the credential's user.
    let bobs = plain.handle.clone();
    let a = assert_with(&t, &mut key, options(&t, "bank", &tx2, &csrf2).await, Some(&bobs));
    let (code, h, body) = page_post(
        &t,
        "bank",
        "/login/passkey",
        &[("tx", &tx2), ("csrf", &csrf2), ("credential", &a)],
    )
    .await;
    refused(code, &h, &body, "someone else's user handle");

    // A credential the browser did not report as discoverable (a second factor only).
    let a = assert_with(&t, &mut plain, options(&t, "bank", &tx2, &csrf2).await, None);
    let (code, h, body) = page_post(
        &t,
        "bank",
        "/login/passkey",
        &[("tx", &tx2), ("csrf", &csrf2), ("credential", &a)],
    )
    .await;
    refused(code, &h, &body, "not discoverable");
    assert_eq!(
        events(&t, "signin.failure")
            .await
            .iter()
            .filter(|e| e["reason"] == "passkey_unknown")
            .count(),
        4
    );

    // A signature counter behind the stored one: refused, audited, and it counts toward
    // alice's throttle (the user is known by then).
    sqlx::query(
        "update factors set credential = replace(credential, '\"counter\":0', '\"counter\":1000') where user_id = $1",
    )
    .bind(&alice)
    .execute(&t.s.state.db.pool)
    .await
    .unwrap();
    let a = assert_with(&t, &mut key, options(&t, "bank", &tx2, &csrf2).await, None);
    let (code, h, body) = page_post(
        &t,
        "bank",
        "/login/passkey",
        &[("tx", &tx2), ("csrf", &csrf2), ("credential", &a)],
    )
    .await;
    refused(code, &h, &body, "counter regression");
    assert_eq!(events(&t, "mfa.clone_detected").await.len(), 1);
    let (failures,): (i64,) =
        sqlx::query_as("select failures from throttles where tenant_id = (select id from tenants where slug = 'bank') and username = 'alice'")
            .fetch_one(&t.s.state.db.pool)
            .await
            .unwrap();
    assert_eq!(failures, 1, "the refused assertion counts toward alice's throttle");

    // A tenant that stops allowing WebAuthn offers no passkey button and takes no assertion.
    let (st, b) =
        t.s.admin(
            reqwest::Method::PATCH,
            "/admin/v1/tenants/bank",
            &t.admin,
            Some(json!({"policy": {"mfa_factors": ["totp"]}})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (tx, csrf, page) = login_page(&t, "bank", &bank).await;
    assert!(!page.contains("id=\"passkey\""), "{page}");
    let (code, _, _) = page_post(&t, "bank", "/login/passkey/options", &[("tx", &tx), ("csrf", &csrf)]).await;
    assert_eq!(code, 403);
    t.s.stop().await;
}

#[tokio::test]
async fn a_passwordless_ceremony_begun_on_one_process_finishes_on_another() {
    let t = setup().await;
    let app = t.tenant("bank").await;
    let alice = t.s.user(&t.admin, "bank", "alice", PW).await;
    let mut key = t.register("bank", &app, "alice", &alice, true).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(&t.s.db_url, &t.s.keys_dir, tmp.path());
    cfg.public_url = t.s.state.config.public_url.clone();
    let b = Server::start_with(cfg, Some(tmp)).await;

    let (tx, csrf, _) = login_page(&t, "bank", &app).await;
    let a = assert_with(&t, &mut key, options(&t, "bank", &tx, &csrf).await, None);
    let cookies = t.cookies.lock().unwrap().clone();
    let r = no_redirects()
        .post(format!("{}/t/bank/login/passkey", b.url))
        .header("cookie", cookies)
        .form(&[("tx", tx.as_str()), ("csrf", csrf.as_str()), ("credential", a.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(session_cookie(r.headers()));
    b.stop().await;
    t.s.stop().await;
}

#[tokio::test]
async fn the_login_page_enrols_a_key_when_the_tenant_requires_one() {
    let t = setup().await;
    let app = t.tenant("bank").await;
    t.s.user(&t.admin, "bank", "alice", PW).await;
    let (st, b) =
        t.s.admin(
            reqwest::Method::PATCH,
            "/admin/v1/tenants/bank",
            &t.admin,
            Some(json!({"policy": {"mfa": "required", "mfa_factors": ["webauthn"]}})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (tx, csrf, _) = login_page(&t, "bank", &app).await;
    let (code, h, page) = page_post(
        &t,
        "bank",
        "/login",
        &[("tx", &tx), ("csrf", &csrf), ("username", "alice"), ("password", PW)],
    )
    .await;
    assert_eq!(code, 200, "{page}");
    assert!(!session_cookie(&h));
    assert!(page.contains("id=\"enroll-webauthn\""), "{page}");
    assert!(!page.contains("id=\"qr\""), "no TOTP offered: {page}");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("img-src 'self';"), "{csp}");
    let state = hidden(&page, "state");

    let (code, _, _) = page_post(
        &t,
        "bank",
        "/login/enroll/webauthn/options",
        &[("tx", &tx), ("csrf", "forged"), ("state", &state)],
    )
    .await;
    assert_eq!(code, 403, "CSRF");
    let (code, _, opts) = page_post(
        &t,
        "bank",
        "/login/enroll/webauthn/options",
        &[("tx", &tx), ("csrf", &csrf), ("state", &state)],
    )
    .await;
    assert_eq!(code, 200, "{opts}");
    let ccr: CreationChallengeResponse = serde_json::from_str(&opts).unwrap();
    let mut key = SoftPasskey::new(true);
    let cred = serde_json::to_string(&key.do_registration(origin(&t.s), ccr).unwrap()).unwrap();
    let form = [
        ("tx", tx.as_str()),
        ("csrf", csrf.as_str()),
        ("state", state.as_str()),
        ("credential", cred.as_str()),
    ];
    let (code, h, body) = page_post(&t, "bank", "/login/enroll/webauthn", &form).await;
    assert_eq!(code, 200, "{body}");
    assert!(!session_cookie(&h), "no session before the recovery codes are seen");
    let done: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(done["recovery_codes"].as_array().map(Vec::len), Some(10), "{done}");
    // The registration cannot be replayed: the state token is spent.
    let (code, _, _) = page_post(&t, "bank", "/login/enroll/webauthn", &form).await;
    assert_eq!(code, 401);

    let next = done["state"].as_str().unwrap();
    let (code, h, body) = page_post(
        &t,
        "bank",
        "/login/enroll/continue",
        &[("tx", &tx), ("csrf", &csrf), ("state", next)],
    )
    .await;
    assert_eq!(code, 303, "{body}");
    assert!(session_cookie(&h));
    let q: std::collections::HashMap<String, String> = url::Url::parse(h["location"].to_str().unwrap())
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let tok: Value =
        t.s.http
            .post(format!("{}/t/bank/token", t.s.url))
            .basic_auth(&app.id, Some(&app.secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", CB),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let c = claims(tok["id_token"].as_str().unwrap_or_else(|| panic!("{tok}")));
    assert_eq!(c["acr"], "urn:unicred:acr:mfa", "{c}");
    assert_eq!(c["amr"], json!(["pwd", "hwk", "user"]), "{c}");
    t.s.stop().await;
}
