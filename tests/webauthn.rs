//! WebAuthn as a second factor, with webauthn-authenticator-rs's software passkey as the
//! authenticator: registration through the account API, the sign-in API's options and
//! assertion steps, ceremonies that cross server processes, replayed and garbled assertions,
//! and a signature counter that goes backwards (a cloned authenticator).

mod common;

use base64::Engine;
use common::Server;
use reqwest::Method;
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

const PW: &str = "violet-harbour-lantern-42";

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

/// The origin the browser would report: the server's public URL.
fn origin(s: &Server) -> Url {
    Url::parse(s.state.config.public_url.as_str()).unwrap()
}

async fn post(s: &Server, t: &T, path: &str, body: Value) -> (u16, Value) {
    let r = s
        .http
        .post(format!("{}/t/bank{path}", s.url))
        .basic_auth(&t.id, Some(&t.secret))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn account(s: &Server, path: &str, token: &str, body: Value) -> (u16, Value) {
    let r = s
        .http
        .request(Method::POST, format!("{}/t/bank/account{path}", s.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn redeem(t: &T, ticket: &str, scope: Option<&str>) -> Value {
    let mut form = vec![
        ("grant_type", "urn:unicred:grant-type:login-ticket"),
        ("login_ticket", ticket),
    ];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    t.s.http
        .post(format!("{}/t/bank/token", t.s.url))
        .basic_auth(&t.id, Some(&t.secret))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

use common::jwt_claims as claims;

impl T {
    async fn signin(&self) -> Value {
        post(&self.s, self, "/authn", json!({"username": "alice", "password": PW}))
            .await
            .1
    }
    /// An access token with scope `account` (alice has no factor yet).
    async fn account_token(&self) -> String {
        let r = self.signin().await;
        let tok = redeem(self, r["login_ticket"].as_str().unwrap(), Some("openid account")).await;
        tok["access_token"].as_str().unwrap().to_string()
    }
    /// Registers `key` through the account API, options from `a`, answer to `b`; returns the
    /// answer and the account token.
    async fn register(&self, a: &Server, b: &Server, key: &mut SoftPasskey) -> (Value, String) {
        let token = self.account_token().await;
        let (st, opts) = account(a, "/webauthn/register/options", &token, json!({"name": "Laptop"})).await;
        assert_eq!(st, 200, "{opts}");
        assert_eq!(opts["publicKey"]["rp"]["id"], "localhost", "{opts}");
        let ccr: CreationChallengeResponse = serde_json::from_value(opts).unwrap();
        let cred = key.do_registration(origin(a), ccr).unwrap();
        let (st, r) = account(b, "/webauthn/register", &token, json!({"credential": cred})).await;
        assert_eq!(st, 200, "{r}");
        // The same answer cannot register twice.
        let (st, again) = account(a, "/webauthn/register", &token, json!({"credential": cred})).await;
        assert_eq!(st, 422, "{again}");
        (r, token)
    }
    /// Password, then WebAuthn options from `a`: (state token, options).
    async fn begin(&self, a: &Server) -> (String, RequestChallengeResponse) {
        let r = post(a, self, "/authn", json!({"username": "alice", "password": PW}))
            .await
            .1;
        assert_eq!(r["status"], "MFA_REQUIRED", "{r}");
        assert_eq!(r["factors"], json!([{"type": "webauthn"}, {"type": "recovery_code"}]));
        let st = r["state_token"].as_str().unwrap().to_string();
        let (code, opts) = post(a, self, "/authn/factors/webauthn/options", json!({"state_token": st})).await;
        assert_eq!(code, 200, "{opts}");
        (st, serde_json::from_value(opts).unwrap())
    }
    async fn stored_credential(&self) -> String {
        let (c,): (String,) = sqlx::query_as("select credential from factors where kind = 'webauthn'")
            .fetch_one(&self.s.state.db.pool)
            .await
            .unwrap();
        c
    }
    /// Sets the signature counter of every stored credential to `n`.
    async fn set_counter(&self, n: u32) {
        let rows: Vec<(String, String)> = sqlx::query_as("select id, credential from factors where kind = 'webauthn'")
            .fetch_all(&self.s.state.db.pool)
            .await
            .unwrap();
        for (id, c) in rows {
            let mut c: Value = serde_json::from_str(&c).unwrap();
            c["cred"]["counter"] = n.into();
            sqlx::query("update factors set credential = $1 where id = $2")
                .bind(c.to_string())
                .bind(id)
                .execute(&self.s.state.db.pool)
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn a_passkey_registers_and_completes_a_sign_in() {
    let t = setup().await;
    let mut key = SoftPasskey::new(true);
    let (r, token) = t.register(&t.s, &t.s, &mut key).await;
    assert!(r["factor_id"].is_string(), "{r}");
    assert_eq!(
        r["recovery_codes"].as_array().map(Vec::len),
        Some(10),
        "first factor: {r}"
    );
    let listed: Value =
        t.s.http
            .get(format!("{}/t/bank/account/factors", t.s.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(listed[0]["type"], "webauthn", "{listed}");
    assert_eq!(listed[0]["name"], "Laptop");
    assert_eq!(listed[0]["confirmed"], true);

    let (st, opts) = t.begin(&t.s).await;
    let assertion = key.do_authentication(origin(&t.s), opts).unwrap();
    let (code, ok) = post(
        &t.s,
        &t,
        "/authn/factors/webauthn",
        json!({"state_token": st, "credential": assertion}),
    )
    .await;
    assert_eq!(code, 200, "{ok}");
    assert_eq!(ok["status"], "SUCCESS");
    let tok = redeem(&t, ok["login_ticket"].as_str().unwrap(), None).await;
    let c = claims(tok["id_token"].as_str().unwrap());
    assert_eq!(c["acr"], "urn:unicred:acr:mfa");
    assert_eq!(
        c["amr"],
        json!(["pwd", "hwk", "user"]),
        "a device-bound key, user verified"
    );
    let counter: Value = serde_json::from_str(&t.stored_credential().await).unwrap();
    assert_eq!(counter["cred"]["counter"], 1, "the counter is kept");
    // The state token is spent.
    let (code, _) = post(&t.s, &t, "/authn/factors/webauthn/options", json!({"state_token": st})).await;
    assert_eq!(code, 401);
    t.s.stop().await;
}

#[tokio::test]
async fn a_ceremony_begun_on_one_process_finishes_on_another() {
    let t = setup().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(&t.s.db_url, &t.s.keys_dir, tmp.path());
    cfg.public_url = t.s.state.config.public_url.clone();
    let b = Server::start_with(cfg, Some(tmp)).await;
    let mut key = SoftPasskey::new(true);
    t.register(&t.s, &b, &mut key).await;
    let (st, opts) = t.begin(&b).await;
    let assertion = key.do_authentication(origin(&b), opts).unwrap();
    let (code, ok) = post(
        &t.s,
        &t,
        "/authn/factors/webauthn",
        json!({"state_token": st, "credential": assertion}),
    )
    .await;
    assert_eq!(code, 200, "{ok}");
    assert_eq!(ok["status"], "SUCCESS");
    b.stop().await;
    t.s.stop().await;
}

#[tokio::test]
async fn replayed_and_garbled_assertions_are_refused() {
    let t = setup().await;
    let mut key = SoftPasskey::new(true);
    t.register(&t.s, &t.s, &mut key).await;
    let (st, opts) = t.begin(&t.s).await;
    let first = key.do_authentication(origin(&t.s), opts).unwrap();
    let (code, _) = post(
        &t.s,
        &t,
        "/authn/factors/webauthn",
        json!({"state_token": st, "credential": first}),
    )
    .await;
    assert_eq!(code, 200);
    let before = t.stored_credential().await;

    // A new sign-in with its own challenge: the old assertion (spent challenge), a garbled one
    // and one with a flipped signature byte are refused and change nothing. (Each counts toward
    // the account's throttle: three strikes plus the password stay under the threshold of 5.)
    let (st, opts) = t.begin(&t.s).await;
    let mut forged = serde_json::to_value(key.do_authentication(origin(&t.s), opts.clone()).unwrap()).unwrap();
    let sig = forged["response"]["signature"].as_str().unwrap().to_string();
    let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&sig).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    forged["response"]["signature"] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw).into();
    for (credential, why) in [
        (serde_json::to_value(&first).unwrap(), "replayed"),
        (json!({"id": "x", "rawId": "eA", "type": "public-key"}), "garbled"),
    ] {
        let (code, body) = post(
            &t.s,
            &t,
            "/authn/factors/webauthn",
            json!({"state_token": st, "credential": credential}),
        )
        .await;
        assert_eq!(
            (code, body["error"].as_str()),
            (401, Some("invalid_factor")),
            "{why}: {body}"
        );
    }
    assert_eq!(t.stored_credential().await, before, "no state change");
    // The forged signature spends its challenge but is refused.
    let (code, _) = post(
        &t.s,
        &t,
        "/authn/factors/webauthn",
        json!({"state_token": st, "credential": forged}),
    )
    .await;
    assert_eq!(code, 401, "bad signature");
    assert_eq!(t.stored_credential().await, before, "no state change");
    // The state token survives these strikes: fresh options and a real assertion succeed.
    let (code, opts) = post(&t.s, &t, "/authn/factors/webauthn/options", json!({"state_token": st})).await;
    assert_eq!(code, 200, "{opts}");
    let good = key
        .do_authentication(origin(&t.s), serde_json::from_value(opts).unwrap())
        .unwrap();
    let (code, ok) = post(
        &t.s,
        &t,
        "/authn/factors/webauthn",
        json!({"state_token": st, "credential": good}),
    )
    .await;
    assert_eq!(code, 200, "{ok}");
    t.s.stop().await;
}

#[tokio::test]
async fn a_counter_going_backwards_is_refused_and_audited() {
    let t = setup().await;
    let live = || async {
        let (n,): (i64,) = sqlx::query_as("select count(*) from factors where kind = 'webauthn' and confirmed = 1")
            .fetch_one(&t.s.state.db.pool)
            .await
            .unwrap();
        n
    };
    // Stored counter ahead before the ceremony starts (the library's check) and after it
    // started (the check against the current row, as another replica may have moved it).
    for bump_after_options in [false, true] {
        // A key of its own each round: the one before is suspended.
        let mut key = SoftPasskey::new(true);
        t.register(&t.s, &t.s, &mut key).await;
        if !bump_after_options {
            t.set_counter(1000).await;
        }
        let (st, opts) = t.begin(&t.s).await;
        if bump_after_options {
            t.set_counter(2000).await;
        }
        let assertion = key.do_authentication(origin(&t.s), opts).unwrap();
        let (code, body) = post(
            &t.s,
            &t,
            "/authn/factors/webauthn",
            json!({"state_token": st, "credential": assertion}),
        )
        .await;
        assert_eq!((code, body["error"].as_str()), (401, Some("invalid_factor")), "{body}");
        // Either copy may be the attacker's: the credential is suspended, no longer offered.
        assert_eq!(live().await, 0, "suspended");
        assert_eq!(t.signin().await["status"], "SUCCESS", "no factor left to ask for");
    }
    let events: Vec<(String,)> =
        sqlx::query_as("select data from audit_events where kind = 'mfa.clone_detected' order by seq")
            .fetch_all(&t.s.state.db.pool)
            .await
            .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|(d,)| d.contains("\"suspended\":true")), "{events:?}");
    let counters: Vec<(String,)> = sqlx::query_as("select credential from factors where kind = 'webauthn'")
        .fetch_all(&t.s.state.db.pool)
        .await
        .unwrap();
    for (c,) in counters {
        let c: Value = serde_json::from_str(&c).unwrap();
        assert!(
            c["cred"]["counter"].as_u64().unwrap() >= 1000,
            "a regressed counter is not stored"
        );
    }
    t.s.stop().await;
}

/// A form post from the login page, without following redirects; (status, headers, body).
/// A form post from the browser whose `Cookie` header is `cookie`.
async fn page_post(
    t: &T,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/t/bank{path}", t.s.url))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap();
    let h = r.headers().clone();
    (r.status().as_u16(), h, r.text().await.unwrap())
}

fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker).unwrap_or_else(|| panic!("no {name} in {body}")) + marker.len();
    body[start..start + body[start..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn the_login_page_takes_a_passkey_as_second_factor() {
    const CB: &str = "http://127.0.0.1:9/cb";
    let t = setup().await;
    let mut key = SoftPasskey::new(true);
    t.register(&t.s, &t.s, &mut key).await;
    let (web, web_secret) =
        t.s.client(
            &t.admin,
            "bank",
            json!({"name": "Web App", "grant_types": ["authorization_code"], "redirect_uris": [CB]}),
        )
        .await;

    // The script is served, as JavaScript.
    let js =
        t.s.http
            .get(format!("{}/assets/webauthn.js", t.s.url))
            .send()
            .await
            .unwrap();
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"),
        "{:?}",
        js.headers()
    );

    let nc = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut u = url::Url::parse(&format!("{}/t/bank/authorize", t.s.url)).unwrap();
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &web)
        .append_pair("redirect_uri", CB)
        .append_pair("scope", "openid")
        .append_pair("state", "st-1")
        .append_pair("nonce", "n-1");
    let r = nc.get(u.as_str()).send().await.unwrap();
    assert_eq!(r.status(), 303);
    // The login transaction's browser binding: its forms are posted with it.
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let login_url = r.headers()["location"]
        .to_str()
        .unwrap()
        .replace("http://localhost", "http://127.0.0.1");
    let login = nc.get(&login_url).send().await.unwrap().text().await.unwrap();
    let (tx, csrf) = (hidden(&login, "tx"), hidden(&login, "csrf"));
    let (code, _, mfa) = page_post(
        &t,
        &cookie,
        "/login",
        &[("tx", &tx), ("csrf", &csrf), ("username", "alice"), ("password", PW)],
    )
    .await;
    assert_eq!(code, 200, "{mfa}");
    assert!(mfa.contains("id=\"webauthn\""), "the passkey button is offered: {mfa}");
    assert!(mfa.contains("src=\"/assets/webauthn.js\""), "{mfa}");
    assert!(!mfa.contains("<script>"), "no inline script");
    let st = hidden(&mfa, "state");

    // The CSRF token is checked.
    let (code, _, _) = page_post(
        &t,
        &cookie,
        "/login/webauthn/options",
        &[("tx", &tx), ("csrf", "wrong"), ("state", &st)],
    )
    .await;
    assert_eq!(code, 403);
    // A state token of the sign-in API is not one of the login page.
    let (api_st, _) = t.begin(&t.s).await;
    let (code, _, body) = page_post(
        &t,
        &cookie,
        "/login/webauthn/options",
        &[("tx", &tx), ("csrf", &csrf), ("state", &api_st)],
    )
    .await;
    assert_eq!(code, 401, "{body}");

    let (code, h, opts) = page_post(
        &t,
        &cookie,
        "/login/webauthn/options",
        &[("tx", &tx), ("csrf", &csrf), ("state", &st)],
    )
    .await;
    assert_eq!(code, 200, "{opts}");
    assert!(h["content-type"].to_str().unwrap().starts_with("application/json"));
    let rcr: RequestChallengeResponse = serde_json::from_str(&opts).unwrap();
    let assertion = serde_json::to_string(&key.do_authentication(origin(&t.s), rcr).unwrap()).unwrap();

    // A garbled assertion is refused (JSON for the script) and the step stays open.
    let (code, _, body) = page_post(
        &t,
        &cookie,
        "/login/webauthn",
        &[
            ("tx", &tx),
            ("csrf", &csrf),
            ("state", &st),
            ("credential", "{\"id\":\"x\"}"),
        ],
    )
    .await;
    assert_eq!(code, 401, "{body}");
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["error"].is_string(),
        "{body}"
    );

    let (code, h, body) = page_post(
        &t,
        &cookie,
        "/login/webauthn",
        &[("tx", &tx), ("csrf", &csrf), ("state", &st), ("credential", &assertion)],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let done: Value = serde_json::from_str(&body).unwrap();
    let redirect = done["redirect"].as_str().unwrap();
    assert!(redirect.starts_with(CB), "{redirect}");
    assert!(
        h.get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().contains("unicred-session")),
        "a session starts: {h:?}"
    );
    let q: std::collections::HashMap<String, String> =
        url::Url::parse(redirect).unwrap().query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st-1");

    // The same answer cannot be used again: the transaction and state token are spent.
    let (code, _, _) = page_post(
        &t,
        &cookie,
        "/login/webauthn",
        &[("tx", &tx), ("csrf", &csrf), ("state", &st), ("credential", &assertion)],
    )
    .await;
    assert_eq!(code, 400);

    let tok: Value =
        t.s.http
            .post(format!("{}/t/bank/token", t.s.url))
            .basic_auth(&web, Some(&web_secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", q["code"].as_str()),
                ("redirect_uri", CB),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let c = claims(tok["id_token"].as_str().unwrap());
    assert_eq!(c["acr"], "urn:unicred:acr:mfa", "{c}");
    assert_eq!(c["amr"], json!(["pwd", "hwk", "user"]), "{c}");
    let started: Vec<(String,)> = sqlx::query_as("select kind from audit_events where kind = 'session.started'")
        .fetch_all(&t.s.state.db.pool)
        .await
        .unwrap();
    assert_eq!(started.len(), 1);
    t.s.stop().await;
}

/// The PEM of a SoftToken's attestation root (serialised with the token as base64 DER).
fn root_pem(token: &webauthn_authenticator_rs::softtoken::SoftToken) -> String {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    let b64 = serde_json::to_value(token).unwrap()["ca_cert"]
        .as_str()
        .unwrap()
        .to_string();
    let der = STANDARD
        .decode(&b64)
        .or_else(|_| URL_SAFE.decode(&b64))
        .or_else(|_| URL_SAFE_NO_PAD.decode(&b64))
        .unwrap();
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// Registration through the account API with `key`: (status, answer, the attestation asked for).
async fn register_with(s: &Server, token: &str, key: &mut dyn WebauthnAuthenticator) -> (u16, Value, Value) {
    let (st, opts) = account(s, "/webauthn/register/options", token, json!({"name": "Key"})).await;
    assert_eq!(st, 200, "{opts}");
    let attestation = opts["publicKey"]["attestation"].clone();
    let cred = key
        .do_registration(origin(s), serde_json::from_value(opts).unwrap())
        .unwrap();
    let (st, r) = account(s, "/webauthn/register", token, json!({"credential": cred})).await;
    (st, r, attestation)
}

#[tokio::test]
async fn direct_attestation_admits_only_listed_authenticators() {
    use webauthn_authenticator_rs::softtoken::{AAGUID, SoftToken};
    let t = setup().await;
    let token = t.account_token().await;
    let (mut soft_token, _) = SoftToken::new(true).unwrap();
    let root = root_pem(&soft_token);
    let other = "6d44ba9b-f6ec-2e49-b930-0c8fe920cb73";
    let policy = |p: Value| {
        t.s.admin(
            Method::PATCH,
            "/admin/v1/tenants/bank",
            &t.admin,
            Some(json!({ "policy": p })),
        )
    };

    // Validation: direct needs AAGUIDs and parseable roots; an AAGUID must be a UUID.
    for (p, field) in [
        (json!({"webauthn_attestation": "direct"}), "webauthn_aaguids"),
        (
            json!({"webauthn_attestation": "direct", "webauthn_aaguids": [other]}),
            "webauthn_attestation_roots",
        ),
        (
            json!({"webauthn_attestation": "direct", "webauthn_aaguids": [other], "webauthn_attestation_roots": ["not a certificate"]}),
            "webauthn_attestation_roots",
        ),
    ] {
        let (st, b) = policy(p).await;
        common::assert_problem(st, &b, 422, "validation");
        assert_eq!(b["errors"][0]["field"], field, "{b}");
    }
    let (st, b) = policy(json!({"webauthn_aaguids": ["not-a-uuid"]})).await;
    common::assert_problem(st, &b, 400, "bad-request");
    assert!(b["detail"].as_str().unwrap().contains("webauthn_aaguids"), "{b}");

    // Direct attestation with the soft token's root, but another model's AAGUID.
    let (st, b) = policy(
        json!({"webauthn_attestation": "direct", "webauthn_aaguids": [other], "webauthn_attestation_roots": [root]}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut passkey = SoftPasskey::new(true);
    let o = origin(&t.s);
    let (st, r, asked) = register_with(&t.s, &token, &mut passkey).await;
    assert_eq!(asked, "direct");
    assert_eq!(st, 400, "a self-attested soft passkey: {r}");
    assert_eq!(r["type"], "urn:unicred:problem:attestation-refused", "{r}");
    let (st, r, _) = register_with(&t.s, &token, &mut soft_token).await;
    assert_eq!(
        (st, r["type"].as_str()),
        (400, Some("urn:unicred:problem:attestation-refused")),
        "AAGUID not listed: {r}"
    );

    // The soft token's model listed: its packed attestation verifies against the root.
    policy(json!({"webauthn_aaguids": [AAGUID.to_string()]})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (st, r, _) = register_with(&t.s, &token, &mut soft_token).await;
    assert_eq!(st, 200, "a listed, attested model: {r}");
    let (st, r, _) = register_with(&t.s, &token, &mut passkey).await;
    assert_eq!(st, 400, "still no self attestation: {r}");
    let refused: Vec<(String,)> =
        sqlx::query_as("select data from audit_events where kind = 'mfa.attestation_refused' order by seq")
            .fetch_all(&t.s.state.db.pool)
            .await
            .unwrap();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(
        refused[1].0.contains(other) || refused[1].0.contains("Aaguid"),
        "{refused:?}"
    );

    // The attested key signs in as a second factor like any passkey.
    let (st_token, opts) = t.begin(&t.s).await;
    let assertion = soft_token.do_authentication(o.clone(), opts).unwrap();
    let (code, ok) = post(
        &t.s,
        &t,
        "/authn/factors/webauthn",
        json!({"state_token": st_token, "credential": assertion}),
    )
    .await;
    assert_eq!(code, 200, "{ok}");

    // Back to no attestation: the soft passkey registers.
    policy(json!({"webauthn_attestation": "none"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (st, r, asked) = register_with(&t.s, &token, &mut passkey).await;
    assert_eq!(asked, "none");
    assert_eq!(st, 200, "{r}");
    t.s.stop().await;
}

#[tokio::test]
async fn a_webauthn_only_tenant_enrols_a_key_during_sign_in() {
    use webauthn_authenticator_rs::softtoken::SoftToken;
    let t = setup().await;
    let (soft_token, _) = SoftToken::new(true).unwrap();
    let root = root_pem(&soft_token);
    let (st, b) =
        t.s.admin(
            Method::PATCH,
            "/admin/v1/tenants/bank",
            &t.admin,
            Some(
                json!({"policy": {"mfa": "required", "mfa_factors": ["webauthn"], "webauthn_attestation": "direct",
                "webauthn_aaguids": ["6d44ba9b-f6ec-2e49-b930-0c8fe920cb73"], "webauthn_attestation_roots": [root]}}),
            ),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = t.signin().await;
    assert_eq!(r["status"], "MFA_ENROLL_REQUIRED", "{r}");
    assert_eq!(r["factors"], json!([{"type": "webauthn"}]), "{r}");
    let st = r["state_token"].as_str().unwrap().to_string();
    let (code, body) = post(&t.s, &t, "/authn/enroll/totp", json!({"state_token": st})).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (403, Some("factor_not_allowed")),
        "{body}"
    );

    let mut key = SoftPasskey::new(true);
    let register = |opts: Value, key: &mut SoftPasskey| {
        serde_json::to_value(
            key.do_registration(origin(&t.s), serde_json::from_value(opts).unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    // Under direct attestation the self-attested soft passkey is refused (and audited).
    let (code, opts) = post(&t.s, &t, "/authn/enroll/webauthn/options", json!({"state_token": st})).await;
    assert_eq!(code, 200, "{opts}");
    assert_eq!(opts["publicKey"]["attestation"], "direct");
    let cred = register(opts, &mut key);
    let (code, body) = post(
        &t.s,
        &t,
        "/authn/enroll/webauthn",
        json!({"state_token": st, "credential": cred}),
    )
    .await;
    assert_eq!(
        (code, body["error"].as_str()),
        (400, Some("attestation_refused")),
        "{body}"
    );
    // A garbled answer is an ordinary failure.
    let (code, body) = post(
        &t.s,
        &t,
        "/authn/enroll/webauthn",
        json!({"state_token": st, "credential": {"id": "x"}}),
    )
    .await;
    assert_eq!((code, body["error"].as_str()), (401, Some("invalid_factor")), "{body}");

    // Without attestation the same kind of key enrols and completes the sign-in.
    t.s.admin(
        Method::PATCH,
        "/admin/v1/tenants/bank",
        &t.admin,
        Some(json!({"policy": {"webauthn_attestation": "none"}})),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, opts) = post(&t.s, &t, "/authn/enroll/webauthn/options", json!({"state_token": st})).await;
    assert_eq!(code, 200, "{opts}");
    assert_eq!(opts["publicKey"]["authenticatorSelection"]["residentKey"], "preferred");
    let cred = register(opts, &mut key);
    let (code, ok) = post(
        &t.s,
        &t,
        "/authn/enroll/webauthn",
        json!({"state_token": st, "credential": cred}),
    )
    .await;
    assert_eq!(code, 200, "{ok}");
    assert_eq!(ok["status"], "SUCCESS");
    assert_eq!(ok["recovery_codes"].as_array().map(Vec::len), Some(10), "{ok}");
    let tok = redeem(&t, ok["login_ticket"].as_str().unwrap(), None).await;
    let c = claims(tok["id_token"].as_str().unwrap());
    assert_eq!(c["acr"], "urn:unicred:acr:mfa", "{c}");
    assert_eq!(c["amr"], json!(["pwd", "hwk", "user"]), "{c}");
    // The state token is spent; the next sign-in asks for the key.
    let (code, _) = post(&t.s, &t, "/authn/enroll/webauthn/options", json!({"state_token": st})).await;
    assert_eq!(code, 401);
    t.begin(&t.s).await;
    t.s.stop().await;
}

/// A registration whose audit event cannot be recorded stores no credential: the credential,
/// the first factor's recovery codes and `mfa.enrolled` are one transaction.
#[tokio::test]
async fn a_registration_whose_event_fails_stores_nothing() {
    let t = setup().await;
    let token = t.account_token().await;
    let rename = |from: &str, to: &str| {
        sqlx::query(sqlx::AssertSqlSafe(format!("alter table {from} rename to {to}"))).execute(&t.s.state.db.pool)
    };
    let factors = || async {
        let (n,): (i64,) = sqlx::query_as("select count(*) from factors")
            .fetch_one(&t.s.state.db.pool)
            .await
            .unwrap();
        n
    };
    let mut key = SoftPasskey::new(true);
    let (st, opts) = account(&t.s, "/webauthn/register/options", &token, json!({"name": "Laptop"})).await;
    assert_eq!(st, 200, "{opts}");
    let cred = key
        .do_registration(origin(&t.s), serde_json::from_value(opts).unwrap())
        .unwrap();
    rename("audit_events", "audit_events_away").await.unwrap();
    let (st, r) = account(&t.s, "/webauthn/register", &token, json!({"credential": cred})).await;
    assert!(st >= 500, "{st} {r}");
    rename("audit_events_away", "audit_events").await.unwrap();
    assert_eq!(
        factors().await,
        0,
        "no credential and no recovery codes without the event"
    );
    // With the event back, the same key registers.
    let (st, r, _) = register_with(&t.s, &token, &mut key).await;
    assert_eq!(st, 200, "{r}");
    assert!(r["recovery_codes"].is_array(), "{r}");
    t.s.stop().await;
}
