//! End to end with independent client software: Authlib (Python) as the relying party, and a
//! real Chromium (playwright-core, Node) on the login page, against the real server.
//!
//! Runs only with `UNICRED_E2E=1` (set by `scripts/test`); then a missing Python package, Node
//! package or Chromium fails the test. Setup: `python3 -m pip install -r
//! tests/e2e/requirements.txt`, `(cd tests/e2e && npm ci)`, `apt-get install chromium`.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::Server;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PW: &str = "violet-harbour-lantern-42";
const TENANT: &str = "acme";
const TIMEOUT: Duration = Duration::from_secs(60);

fn enabled() -> bool {
    if std::env::var("UNICRED_E2E").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("end-to-end tests not run: set UNICRED_E2E=1 (scripts/test does)");
    false
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e")
}

struct Output {
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion within TIMEOUT (killed past it), on a blocking thread so the
/// in-process server keeps serving; panics with its output unless it exits 0.
async fn run(mut cmd: Command, what: String) -> Output {
    tokio::task::spawn_blocking(move || {
        cmd.current_dir(dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start {:?}: {e}", cmd.get_program()));
        let pipe = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let out = pipe(Box::new(child.stdout.take().unwrap()));
        let err = pipe(Box::new(child.stderr.take().unwrap()));
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if start.elapsed() > TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let o = Output {
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        };
        match status {
            Some(st) if st.success() => {
                eprintln!("{what}: ok in {:.1?}\n{}", start.elapsed(), o.stderr.trim_end());
                Ok(o)
            }
            Some(st) => Err(format!(
                "{what}: {st}\n--- stdout\n{}\n--- stderr\n{}",
                o.stdout, o.stderr
            )),
            None => Err(format!(
                "{what}: timed out after {TIMEOUT:?}\n--- stdout\n{}\n--- stderr\n{}",
                o.stdout, o.stderr
            )),
        }
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A redirect URI on a free port (a browser refuses well-known ports such as 9). The listener
/// holds the port until dropped: the Authlib RP never follows the redirect, so it is held for
/// the whole test; browser.mjs serves the port itself, so it is released just before.
fn callback() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cb = format!("http://127.0.0.1:{}/cb", l.local_addr().unwrap().port());
    (l, cb)
}

async fn setup() -> (Server, String) {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, TENANT).await;
    s.user(&admin, TENANT, "alice", PW).await;
    (s, admin)
}

async fn app(s: &Server, admin: &str, cb: &str, name: &str, auth: &str, alg: &str) -> (String, String) {
    s.client(
        admin,
        TENANT,
        json!({"name": name, "grant_types": ["authorization_code", "refresh_token"], "redirect_uris": [cb],
            "token_endpoint_auth_method": auth, "id_token_signed_response_alg": alg}),
    )
    .await
}

fn last_json(out: &Output) -> Value {
    let line = out.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stdout))
}

/// Authlib as the relying party: discovery, PKCE, the login form, state and RFC 9207 iss, the
/// code exchange, ID-token validation (JWKS signature, iss, aud, exp, nonce, at_hash), the
/// alg, refresh, userinfo — for a confidential and a public client and every signing alg.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_relying_party() {
    if !enabled() {
        return;
    }
    let (s, admin) = setup().await;
    let (_listener, cb) = callback();
    let issuer = s.issuer(TENANT);
    let cases = [
        ("client_secret_basic", "RS256"),
        ("none", "ES256"),
        ("client_secret_post", "EdDSA"),
        ("none", "EdDSA"),
    ];
    let mut runs = Vec::new();
    for (auth, alg) in cases {
        let (id, secret) = app(&s, &admin, &cb, &format!("rp {auth} {alg}"), auth, alg).await;
        assert_eq!(secret.is_empty(), auth == "none");
        let mut cmd = Command::new(std::env::var("UNICRED_E2E_PYTHON").unwrap_or("python3".into()));
        cmd.arg("rp_authlib.py")
            .env("E2E_ISSUER", &issuer)
            .env("E2E_CLIENT_ID", &id)
            .env("E2E_CLIENT_SECRET", &secret)
            .env("E2E_REDIRECT_URI", &cb)
            .env("E2E_USERNAME", "alice")
            .env("E2E_PASSWORD", PW)
            .env("E2E_ALG", alg);
        if auth != "none" {
            cmd.env("E2E_AUTH_METHOD", auth);
        }
        runs.push(run(cmd, format!("authlib RP ({auth}, {alg})")));
    }
    for (out, (auth, alg)) in futures_join(runs).await.iter().zip(cases) {
        let v = last_json(out);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["alg"], alg, "{v}");
        assert_eq!(v["client"], if auth == "none" { "public" } else { auth }, "{v}");
    }
    s.stop().await;
}

/// Awaits the runs concurrently (each on its own blocking thread).
async fn futures_join<F: std::future::Future<Output = Output> + Send + 'static>(fs: Vec<F>) -> Vec<Output> {
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        match h.await {
            Ok(o) => out.push(o),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

/// The token endpoint, as the client `id` (HTTP Basic with a secret, else a public client).
async fn exchange(s: &Server, id: &str, secret: Option<&str>, form: &[(&str, &str)]) -> (reqwest::StatusCode, Value) {
    let mut form = form.to_vec();
    let mut req = s.http.post(format!("{}/t/{TENANT}/token", s.url));
    match secret {
        Some(sec) => req = req.basic_auth(id, Some(sec)),
        None => form.push(("client_id", id)),
    }
    let r = req.form(&form).send().await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

fn pkce() -> (String, String) {
    let verifier = B64.encode(unicred::crypto::random_bytes::<32>());
    let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Chromium on the real login page (no CSP violation), then SSO: a second client of the tenant
/// gets a code in the same browser without the login page. Both codes are redeemed here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_and_sso() {
    if !enabled() {
        return;
    }
    let (s, admin) = setup().await;
    let (listener, cb) = callback();
    let (web, web_secret) = app(&s, &admin, &cb, "Web App", "client_secret_basic", "ES256").await;
    let (spa, _) = app(&s, &admin, &cb, "Single Page App", "none", "EdDSA").await;
    let disco: Value = s
        .http
        .get(format!("{}/.well-known/openid-configuration", s.issuer(TENANT)).replace("localhost", "127.0.0.1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The issuer's own host (localhost), as a relying party would send the browser there.
    let authorize = disco["authorization_endpoint"].as_str().unwrap();
    let flows: Vec<(&str, String, String, String)> = [(&web, "st-web"), (&spa, "st-spa")]
        .into_iter()
        .map(|(id, state)| {
            let (verifier, challenge) = pkce();
            let mut u = url::Url::parse(authorize).unwrap();
            u.query_pairs_mut()
                .append_pair("response_type", "code")
                .append_pair("client_id", id)
                .append_pair("redirect_uri", &cb)
                .append_pair("scope", "openid profile")
                .append_pair("state", state)
                .append_pair("nonce", &format!("n-{state}"))
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            (id.as_str(), state.to_string(), verifier, u.to_string())
        })
        .collect();
    let mut cmd = Command::new(std::env::var("UNICRED_E2E_NODE").unwrap_or("node".into()));
    cmd.args([
        "browser.mjs",
        "--redirect-uri",
        &cb,
        "--username",
        "alice",
        "--password",
        PW,
    ]);
    cmd.args(flows.iter().map(|f| &f.3));
    drop(listener);
    let out = run(cmd, "chromium".into()).await;
    let results = last_json(&out)["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 2, "{}", out.stdout);
    assert_eq!(results[0]["login_page"], true);
    assert_eq!(results[1]["login_page"], false, "SSO");

    let mut subs = Vec::new();
    for ((id, state, verifier, _), r) in flows.iter().zip(&results) {
        assert_eq!(r["state"], state.as_str());
        assert_eq!(r["iss"], s.issuer(TENANT), "RFC 9207 iss");
        let code = r["code"].as_str().unwrap();
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", cb.as_str()),
            ("code_verifier", verifier),
        ];
        let secret = (*id == web).then_some(web_secret.as_str());
        let (status, tok) = exchange(&s, id, secret, &form).await;
        assert_eq!(status, 200, "{id}: {tok}");
        let idt = tok["id_token"].as_str().unwrap();
        let claims: Value = serde_json::from_slice(&B64.decode(idt.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(claims["aud"], *id);
        assert_eq!(claims["nonce"], format!("n-{state}"));
        assert_eq!(claims["iss"], s.issuer(TENANT));
        subs.push(claims["sub"].clone());
        // A code is single use.
        let (status, body) = exchange(&s, id, secret, &form).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_grant", "{body}");
    }
    assert_eq!(subs[0], subs[1], "the same user through SSO");
    s.stop().await;
}

/// Chromium with a CDP virtual authenticator: a passkey registered through the account API,
/// then the login page's second factor with it (the served script, no CSP violation); the
/// code's ID token says `acr` mfa and the kind of key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_with_a_passkey() {
    if !enabled() {
        return;
    }
    let claims = browser_passkey(Passkey::SecondFactor).await;
    let amr = claims["amr"].as_array().unwrap();
    assert_eq!(amr[0], "pwd", "{claims}");
    assert!(amr.iter().any(|a| a == "hwk" || a == "swk"), "{claims}");
    assert!(amr.iter().any(|a| a == "user"), "user verified: {claims}");
}

/// The same with a temporary password: after the key, the served script posts to the "choose
/// a new password" page, and only the new password completes the sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_passkey_before_a_new_password() {
    if !enabled() {
        return;
    }
    let claims = browser_passkey(Passkey::BeforeANewPassword).await;
    assert_eq!(claims["amr"][0], "pwd", "{claims}");
}

/// The same passkey, discoverable, with only the login page's "Sign in with a passkey"
/// button: no username, no password; first refused on another tenant's login page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_passwordless_passkey() {
    if !enabled() {
        return;
    }
    let claims = browser_passkey(Passkey::Passwordless).await;
    let amr = claims["amr"].as_array().unwrap();
    assert_eq!(amr.len(), 2, "{claims}");
    assert!(amr[0] == "hwk" || amr[0] == "swk", "{claims}");
    assert_eq!(amr[1], "user", "{claims}");
}

/// A tenant that requires a second factor and allows only WebAuthn: after the password, the
/// enrolment page registers the browser's key, shows the recovery codes, and continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_enrols_a_passkey_when_required() {
    if !enabled() {
        return;
    }
    let (s, admin) = setup().await;
    let (st, b) = s
        .admin(
            reqwest::Method::PATCH,
            &format!("/admin/v1/tenants/{TENANT}"),
            &admin,
            Some(json!({"policy": {"mfa": "required", "mfa_factors": ["webauthn"]}})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (listener, cb) = callback();
    let (web, web_secret) = app(&s, &admin, &cb, "Web App", "client_secret_basic", "ES256").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (verifier, url) = authorize_url(&s, TENANT, &web, &cb, "st-key");
    let origin = s.state.config.public_url.as_str().trim_end_matches('/').to_string();
    let mut cmd = Command::new(std::env::var("UNICRED_E2E_NODE").unwrap_or("node".into()));
    cmd.args([
        "webauthn.mjs",
        "--redirect-uri",
        &cb,
        "--username",
        "alice",
        "--password",
        PW,
        "--enrol",
        "--origin",
        &origin,
        "--tenant",
        TENANT,
        &url,
    ]);
    drop(listener);
    let v = last_json(&run(cmd, "chromium enrolment".into()).await);
    assert_eq!(v["state"], "st-key", "{v}");
    assert_eq!(v["recovery_codes"], 10, "{v}");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", v["code"].as_str().unwrap()),
        ("redirect_uri", cb.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, tok) = exchange(&s, &web, Some(&web_secret), &form).await;
    assert_eq!(status, 200, "{tok}");
    let idt = tok["id_token"].as_str().unwrap();
    let claims: Value = serde_json::from_slice(&B64.decode(idt.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["acr"], "urn:unicred:acr:mfa", "{claims}");
    let amr = claims["amr"].as_array().unwrap();
    assert_eq!(amr[0], "pwd", "{claims}");
    assert!(amr[1] == "hwk" || amr[1] == "swk", "{claims}");
    assert_eq!(amr[2], "user", "{claims}");
    s.stop().await;
}

/// An authorization request of `client` at `tenant`: (PKCE verifier, URL).
fn authorize_url(s: &Server, tenant: &str, client: &str, cb: &str, state: &str) -> (String, String) {
    let (verifier, challenge) = pkce();
    let mut u = url::Url::parse(&format!("{}/authorize", s.issuer(tenant))).unwrap();
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client)
        .append_pair("redirect_uri", cb)
        .append_pair("scope", "openid")
        .append_pair("state", state)
        .append_pair("nonce", "n-key")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    (verifier, u.to_string())
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Passkey {
    /// After the password.
    SecondFactor,
    /// After a temporary password, then the new password.
    BeforeANewPassword,
    /// Without username or password.
    Passwordless,
}

/// Registers a passkey in Chromium's virtual authenticator and signs in with it (`how`);
/// returns the ID token's claims (acr checked here).
async fn browser_passkey(how: Passkey) -> Value {
    let passwordless = how == Passkey::Passwordless;
    let (s, admin) = setup().await;
    let (listener, cb) = callback();
    let (web, web_secret) = app(&s, &admin, &cb, "Web App", "client_secret_basic", "ES256").await;
    // An account token for alice, through the sign-in API.
    let (be, be_secret) = s
        .client(
            &admin,
            TENANT,
            json!({"name": "be", "authn_api": true, "grant_types": ["urn:unicred:grant-type:login-ticket"], "scopes": ["account"]}),
        )
        .await;
    let r: Value = s
        .http
        .post(format!("{}/t/{TENANT}/authn", s.url))
        .basic_auth(&be, Some(&be_secret))
        .json(&json!({"username": "alice", "password": PW}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket = r["login_ticket"].as_str().unwrap_or_else(|| panic!("{r}"));
    let (status, tok) = exchange(
        &s,
        &be,
        Some(&be_secret),
        &[
            ("grant_type", "urn:unicred:grant-type:login-ticket"),
            ("login_ticket", ticket),
            ("scope", "openid account"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tok}");
    let account_token = tok["access_token"].as_str().unwrap().to_string();

    if how == Passkey::BeforeANewPassword {
        // Alice's password becomes temporary, as after an admin's set with `temporary`. The
        // flag is set directly: an admin's set also ends her tokens, and the script still needs
        // the account token above to register the key.
        sqlx::query("update users set password_temporary = 1 where username = 'alice'")
            .execute(&s.state.db.pool)
            .await
            .unwrap();
    }
    let (verifier, url) = authorize_url(&s, TENANT, &web, &cb, "st-key");
    let origin = s.state.config.public_url.as_str().trim_end_matches('/').to_string();
    let mut cmd = Command::new(std::env::var("UNICRED_E2E_NODE").unwrap_or("node".into()));
    cmd.args([
        "webauthn.mjs",
        "--redirect-uri",
        &cb,
        "--username",
        "alice",
        "--password",
        PW,
        "--account-token",
        &account_token,
        "--origin",
        &origin,
        "--tenant",
        TENANT,
    ]);
    if passwordless {
        // Another tenant with the same user name and an app on the same redirect URI.
        s.tenant(&admin, "elsewhere").await;
        s.user(&admin, "elsewhere", "alice", PW).await;
        let (id, _) = s
            .client(
                &admin,
                "elsewhere",
                json!({"name": "Other App", "grant_types": ["authorization_code"], "redirect_uris": [cb]}),
            )
            .await;
        let (_, foreign) = authorize_url(&s, "elsewhere", &id, &cb, "st-foreign");
        cmd.args(["--passwordless", "--foreign", &foreign]);
    }
    if how == Passkey::BeforeANewPassword {
        cmd.args(["--new-password", "granite-meadow-compass-88"]);
    }
    cmd.arg(url);
    drop(listener);
    let out = run(cmd, format!("chromium passkey ({how:?})")).await;
    let v = last_json(&out);
    assert_eq!(v["state"], "st-key", "{v}");
    assert_eq!(v["iss"], s.issuer(TENANT), "{v}");
    if passwordless {
        assert!(v["foreign_refused"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let form = [
        ("grant_type", "authorization_code"),
        ("code", v["code"].as_str().unwrap()),
        ("redirect_uri", cb.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, tok) = exchange(&s, &web, Some(&web_secret), &form).await;
    assert_eq!(status, 200, "{tok}");
    let idt = tok["id_token"].as_str().unwrap();
    let claims: Value = serde_json::from_slice(&B64.decode(idt.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["acr"], "urn:unicred:acr:mfa", "{claims}");
    s.stop().await;
    claims
}
