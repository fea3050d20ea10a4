//! OpenID Connect login: authorization code + PKCE, login and consent pages, SSO sessions,
//! refresh rotation, logout, userinfo — driven over HTTP like a browser and a relying party.

mod common;

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::Server;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PW: &str = "violet-harbour-lantern-42";
const CB: &str = "http://127.0.0.1:9/cb";

/// A cookie-keeping, non-redirecting browser.
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }
    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let r = req.header("cookie", cookie).send().await.unwrap();
        for c in r.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        Page {
            status: r.status().as_u16(),
            location: r.headers().get("location").map(|l| l.to_str().unwrap().to_string()),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }
    async fn get(&mut self, url: &str) -> Page {
        let req = self.http.get(url);
        self.send(req).await
    }
    async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let req = self.http.post(url).form(form);
        self.send(req).await
    }
    fn session(&self) -> Option<String> {
        self.cookies
            .iter()
            .find(|(k, _)| k.contains("unicred-session"))
            .map(|(_, v)| v.clone())
    }
}

fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker).unwrap_or_else(|| panic!("no {name} in {body}")) + marker.len();
    body[start..start + body[start..].find('"').unwrap()].to_string()
}

fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

fn pkce() -> (String, String) {
    let verifier = B64.encode(unicred::crypto::random_bytes::<32>());
    let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

struct Setup {
    s: Server,
    admin: String,
}

async fn setup() -> Setup {
    let s = Server::start().await;
    let admin = s.admin_token().await;
    s.tenant(&admin, "bank").await;
    s.user(&admin, "bank", "alice", PW).await;
    Setup { s, admin }
}

impl Setup {
    async fn app(&self, extra: Value) -> (String, String) {
        let mut body = json!({"name": "Web App", "grant_types": ["authorization_code", "refresh_token"], "redirect_uris": [CB],
            "post_logout_redirect_uris": ["http://127.0.0.1:9/bye"], "scopes": ["accounts:read"]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.s.client(&self.admin, "bank", body).await
    }
    fn authorize_url(&self, client_id: &str, extra: &[(&str, &str)]) -> String {
        let mut u = url::Url::parse(&format!("{}/t/bank/authorize", self.s.url)).unwrap();
        let defaults = [
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", CB),
            ("scope", "openid profile offline_access"),
            ("state", "st-123"),
            ("nonce", "n-456"),
        ];
        for (k, v) in defaults {
            if !extra.iter().any(|(e, _)| *e == k) {
                u.query_pairs_mut().append_pair(k, v);
            }
        }
        for (k, v) in extra {
            u.query_pairs_mut().append_pair(k, v);
        }
        u.to_string()
    }
    /// Authorize → login page → credentials; returns the final page (the redirect to the client).
    async fn login(&self, b: &mut Browser, client_id: &str, extra: &[(&str, &str)], user: &str, pw: &str) -> Page {
        let p = b.get(&self.authorize_url(client_id, extra)).await;
        assert_eq!(p.status, 303, "{}", p.body);
        if p.location.as_deref().is_some_and(|l| l.starts_with(CB)) {
            return p; // signed in already (SSO)
        }
        let login = b
            .get(
                p.location
                    .as_deref()
                    .unwrap()
                    .replace("http://localhost", "http://127.0.0.1")
                    .as_str(),
            )
            .await;
        assert_eq!(login.status, 200, "{}", login.body);
        self.submit(b, &login, user, pw).await
    }
    async fn submit(&self, b: &mut Browser, login: &Page, user: &str, pw: &str) -> Page {
        let (tx, csrf) = (hidden(&login.body, "tx"), hidden(&login.body, "csrf"));
        b.post(
            &format!("{}/t/bank/login", self.s.url),
            &[("tx", &tx), ("csrf", &csrf), ("username", user), ("password", pw)],
        )
        .await
    }
    async fn exchange(&self, id: &str, secret: Option<&str>, code: &str, verifier: Option<&str>) -> (u16, Value) {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", CB),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        let mut req = self.s.http.post(format!("{}/t/bank/token", self.s.url));
        match secret {
            Some(sec) => req = req.basic_auth(id, Some(sec)),
            None => form.push(("client_id", id)),
        }
        let r = req.form(&form).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
    async fn refresh(&self, id: &str, secret: &str, rt: &str) -> (u16, Value) {
        let r = self
            .s
            .http
            .post(format!("{}/t/bank/token", self.s.url))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

fn code_of(p: &Page) -> String {
    let loc = p
        .location
        .as_deref()
        .unwrap_or_else(|| panic!("no redirect: {} {}", p.status, p.body));
    assert!(loc.starts_with(CB), "{loc}");
    let q = query(loc);
    assert_eq!(q.get("state").map(String::as_str), Some("st-123"));
    assert!(q.get("iss").unwrap().ends_with("/t/bank"), "RFC 9207 iss");
    q.get("code").cloned().unwrap_or_else(|| panic!("no code: {loc}"))
}

#[tokio::test]
async fn confidential_code_flow_with_pkce_refresh_rotation_and_reuse_detection() {
    let t = setup().await;
    let (id, secret) = t.app(json!({})).await;
    let (verifier, challenge) = pkce();
    let mut b = Browser::new();
    let p = t
        .login(
            &mut b,
            &id,
            &[("code_challenge", &challenge), ("code_challenge_method", "S256")],
            "alice",
            PW,
        )
        .await;
    assert_eq!(p.status, 303);
    let code = code_of(&p);
    let (st, tok) = t.exchange(&id, Some(&secret), &code, Some(&verifier)).await;
    assert_eq!(st, 200, "{tok}");
    let idt = tok["id_token"].as_str().unwrap();
    let claims: Value = serde_json::from_slice(&B64.decode(idt.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["nonce"], "n-456");
    assert_eq!(claims["aud"], id.as_str());
    let at = tok["access_token"].as_str().unwrap();
    assert_eq!(claims["at_hash"], B64.encode(&Sha256::digest(at.as_bytes())[..16]));
    // userinfo
    let ui: Value =
        t.s.http
            .get(format!("{}/t/bank/userinfo", t.s.url))
            .bearer_auth(at)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(ui["sub"], claims["sub"]);
    assert_eq!(ui["preferred_username"], "alice");
    // Refresh rotates; reusing an old one revokes the family.
    let rt1 = tok["refresh_token"].as_str().unwrap().to_string();
    let (st, r2) = t.refresh(&id, &secret, &rt1).await;
    assert_eq!(st, 200, "{r2}");
    let rt2 = r2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);
    // Another client presenting the spent token is refused and ends nothing.
    let (other, other_secret) = t.app(json!({"name": "Other"})).await;
    let (st, _) = t.refresh(&other, &other_secret, &rt1).await;
    assert_eq!(st, 400);
    let (st, r3) = t.refresh(&id, &secret, &rt2).await;
    assert_eq!(st, 200, "the family lives on: {r3}");
    let rt2 = r3["refresh_token"].as_str().unwrap().to_string();
    let (st, e) = t.refresh(&id, &secret, &rt1).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "reuse detected"
    );
    let (st, _) = t.refresh(&id, &secret, &rt2).await;
    assert_eq!(st, 400, "the whole family is revoked");
    // Code reuse: refused, and the tokens it produced are revoked.
    let (st, e) = t.exchange(&id, Some(&secret), &code, Some(&verifier)).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(t.s.introspect("bank", &id, &secret, at).await["active"], false);
    t.s.stop().await;
}

/// A revocation that raced a rotation and missed the token the rotation inserted (PostgreSQL,
/// READ COMMITTED): the family has a revoked token, so the survivor is refused too.
#[tokio::test]
async fn a_refresh_token_that_escaped_its_familys_revocation_is_refused() {
    let t = setup().await;
    let (id, secret) = t.app(json!({})).await;
    let (verifier, challenge) = pkce();
    let mut b = Browser::new();
    let extra = [
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let p = t.login(&mut b, &id, &extra, "alice", PW).await;
    let (st, tok) = t.exchange(&id, Some(&secret), &code_of(&p), Some(&verifier)).await;
    assert_eq!(st, 200, "{tok}");
    let (st, r2) = t.refresh(&id, &secret, tok["refresh_token"].as_str().unwrap()).await;
    assert_eq!(st, 200, "{r2}");
    // What the racing revocation did: it revoked the family's rows it saw (the used one).
    let revoked = sqlx::query("update refresh_tokens set revoked_at = 1 where used_at is not null")
        .execute(&t.s.state.db.pool)
        .await
        .unwrap();
    assert_eq!(revoked.rows_affected(), 1);
    let (st, e) = t.refresh(&id, &secret, r2["refresh_token"].as_str().unwrap()).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")), "{e}");
    t.s.stop().await;
}

/// A code replayed while its first redemption is still issuing tokens: what that redemption
/// issues does not last either (RFC 6749 §4.1.2).
#[tokio::test]
async fn a_code_replayed_during_its_redemption_revokes_what_that_redemption_issues() {
    use unicred::store::codes;
    let t = setup().await;
    let (id, secret) = t.app(json!({})).await;
    let mut b = Browser::new();
    let code = code_of(&t.login(&mut b, &id, &[], "alice", PW).await);
    let db = &t.s.state.db;
    let hash = unicred::crypto::secret_hash(&code);
    // The first redemption has marked the code used and is issuing tokens…
    assert!(matches!(
        codes::redeem(db, &hash).await.unwrap(),
        codes::Redeemed::Fresh(_)
    ));
    // …when the code comes again: refused,
    let (status, body) = t.exchange(&id, Some(&secret), &code, None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    // and the first redemption learns of it as it records what it issued (and revokes that).
    assert!(
        !codes::record_issued(db, &hash, "jti-1", Some("family-1"))
            .await
            .unwrap()
    );
    // A code replayed after its redemption recorded its tokens gets those to revoke.
    let code = code_of(&t.login(&mut b, &id, &[], "alice", PW).await);
    let (status, tok) = t.exchange(&id, Some(&secret), &code, None).await;
    assert_eq!(status, 200, "{tok}");
    let hash = unicred::crypto::secret_hash(&code);
    let issued = codes::replayed(db, &hash).await.unwrap();
    assert!(issued.is_some_and(|(jti, family)| !jti.is_empty() && family.is_some()));
    t.s.stop().await;
}

#[tokio::test]
async fn pkce_is_required_for_public_clients_and_never_downgraded() {
    let t = setup().await;
    let (public, _) = t
        .app(json!({"token_endpoint_auth_method": "none", "grant_types": ["authorization_code"]}))
        .await;
    let (conf, secret) = t.app(json!({})).await;
    let mut b = Browser::new();
    // Public client without PKCE, or with plain: error back to the client.
    for extra in [
        vec![],
        vec![("code_challenge", "abc"), ("code_challenge_method", "plain")],
    ] {
        let p = b.get(&t.authorize_url(&public, &extra)).await;
        let q = query(p.location.as_deref().unwrap());
        assert_eq!(q["error"], "invalid_request", "{q:?}");
        assert_eq!(q["state"], "st-123");
    }
    let (verifier, challenge) = pkce();
    let pk = [
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let code = code_of(&t.login(&mut b, &public, &pk, "alice", PW).await);
    let (st, e) = t.exchange(&public, None, &code, Some(&pkce().0)).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "verifier mismatch"
    );
    let code = code_of(&t.login(&mut b, &public, &pk, "alice", PW).await);
    assert_eq!(
        t.exchange(&public, None, &code, None).await.0,
        400,
        "challenge issued, verifier required"
    );
    let code = code_of(&t.login(&mut b, &public, &pk, "alice", PW).await);
    let (st, tok) = t.exchange(&public, None, &code, Some(&verifier)).await;
    assert_eq!(st, 200, "{tok}");
    assert!(tok.get("refresh_token").is_none(), "no refresh grant, no refresh token");
    // Confidential without a challenge: a verifier at the token endpoint is refused.
    let code = code_of(&t.login(&mut b, &conf, &[], "alice", PW).await);
    let (st, e) = t.exchange(&conf, Some(&secret), &code, Some(&verifier)).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")));
    t.s.stop().await;
}

#[tokio::test]
async fn bad_authorization_requests() {
    let t = setup().await;
    let (id, secret) = t.app(json!({})).await;
    let mut b = Browser::new();
    let base = format!("{}/t/bank/authorize", t.s.url);
    // Before the redirect URI is validated: a page, never a redirect.
    for url in [
        format!("{base}?response_type=code&client_id=nope&redirect_uri={CB}"),
        format!("{base}?response_type=code&client_id={id}&redirect_uri=http://127.0.0.1:9/other"),
        format!("{base}?response_type=code&client_id={id}"),
        format!("{base}?response_type=code&client_id={id}&client_id={id}&redirect_uri={CB}"),
    ] {
        let p = b.get(&url).await;
        assert_eq!(p.status, 400, "{url}");
        assert!(p.location.is_none());
        assert!(p.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    }
    for (extra, error) in [
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("prompt", "none")], "login_required"),
        (vec![("scope", "openid admin")], "invalid_scope"),
        (vec![("max_age", "-1")], "invalid_request"),
        (vec![("request", "eyJ")], "request_not_supported"),
        (
            vec![("code_challenge", "x"), ("code_challenge_method", "S256")],
            "invalid_request",
        ),
    ] {
        let mut u = url::Url::parse(&base).unwrap();
        u.query_pairs_mut()
            .append_pair("client_id", &id)
            .append_pair("redirect_uri", CB)
            .append_pair("state", "s1");
        if !extra.iter().any(|(k, _)| *k == "response_type") {
            u.query_pairs_mut().append_pair("response_type", "code");
        }
        for (k, v) in &extra {
            u.query_pairs_mut().append_pair(k, v);
        }
        let p = b.get(u.as_str()).await;
        let q = query(p.location.as_deref().unwrap_or_else(|| panic!("{extra:?}: {}", p.body)));
        assert_eq!(q["error"], error, "{extra:?}");
        assert_eq!(q["state"], "s1");
    }
    // redirect_uri mismatch at the token endpoint.
    let code = code_of(&t.login(&mut b, &id, &[], "alice", PW).await);
    let r =
        t.s.http
            .post(format!("{}/t/bank/token", t.s.url))
            .basic_auth(&id, Some(&secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:9/other"),
            ])
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
    t.s.stop().await;
}

#[tokio::test]
async fn login_page_is_hardened_and_does_not_enumerate() {
    let t = setup().await;
    let (id, _) = t.app(json!({})).await;
    let mut b = Browser::new();
    let p = b.get(&t.authorize_url(&id, &[])).await;
    let login = b
        .get(&p.location.unwrap().replace("http://localhost", "http://127.0.0.1"))
        .await;
    let csp = login.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(login.headers["x-frame-options"], "DENY");
    assert_eq!(login.headers["referrer-policy"], "no-referrer");
    assert_eq!(login.headers["cache-control"], "no-store");
    let wrong = t.submit(&mut b, &login, "alice", "not-the-password").await;
    let unknown = t.submit(&mut b, &login, "mallory", "not-the-password").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    let msg = |p: &Page| {
        p.body[p.body.find("id=\"error\"").unwrap()..]
            .split('<')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(msg(&wrong), msg(&unknown));
    // A forged CSRF token is refused.
    let tx = hidden(&login.body, "tx");
    let p = b
        .post(
            &format!("{}/t/bank/login", t.s.url),
            &[("tx", &tx), ("csrf", "forged"), ("username", "alice"), ("password", PW)],
        )
        .await;
    assert_eq!(p.status, 403);
    t.s.stop().await;
}

#[tokio::test]
async fn sso_prompt_max_age_and_new_session_ids() {
    let t = setup().await;
    let (a, _) = t.app(json!({})).await;
    let (c2, _) = t.app(json!({"name": "Second App"})).await;
    let mut b = Browser::new();
    b.cookies
        .insert("unicred-session-bank".into(), "planted-by-attacker".into());
    code_of(&t.login(&mut b, &a, &[], "alice", PW).await);
    let first = b.session().unwrap();
    assert_ne!(first, "planted-by-attacker", "a new session id at sign-in");
    // A second app of the tenant: no password while the session lives, also with prompt=none.
    let p = b.get(&t.authorize_url(&c2, &[("prompt", "none")])).await;
    code_of(&p);
    // prompt=login and max_age force a new sign-in, which issues a new session id.
    let p = b.get(&t.authorize_url(&c2, &[("prompt", "login")])).await;
    assert!(p.location.unwrap().contains("/login?tx="));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let p = b.get(&t.authorize_url(&c2, &[("max_age", "0")])).await;
    assert!(p.location.unwrap().contains("/login?tx="));
    code_of(&t.login(&mut b, &c2, &[("max_age", "0")], "alice", PW).await);
    assert_ne!(b.session().unwrap(), first);
    // The largest max_age is "any age" (it overflowed a sum, and panicked in debug builds).
    code_of(
        &b.get(&t.authorize_url(&c2, &[("max_age", "9223372036854775807"), ("prompt", "none")]))
            .await,
    );
    // Another browser has no session.
    let mut other = Browser::new();
    let p = other.get(&t.authorize_url(&a, &[("prompt", "none")])).await;
    assert_eq!(query(&p.location.unwrap())["error"], "login_required");
    t.s.stop().await;
}

#[tokio::test]
async fn consent_is_asked_once_and_can_be_denied() {
    let t = setup().await;
    let (id, _) = t.app(json!({"consent_required": true})).await;
    let mut b = Browser::new();
    let p = t.login(&mut b, &id, &[], "alice", PW).await;
    assert!(
        p.location.as_deref().unwrap().contains("/consent?tx="),
        "{:?}",
        p.location
    );
    let page = b
        .get(&p.location.unwrap().replace("http://localhost", "http://127.0.0.1"))
        .await;
    assert!(page.body.contains("offline_access"));
    let (tx, csrf) = (hidden(&page.body, "tx"), hidden(&page.body, "csrf"));
    let p = b
        .post(
            &format!("{}/t/bank/consent", t.s.url),
            &[("tx", &tx), ("csrf", &csrf), ("decision", "allow")],
        )
        .await;
    code_of(&p);
    // Remembered.
    code_of(&b.get(&t.authorize_url(&id, &[])).await);
    // Another user denies.
    t.s.user(&t.admin, "bank", "bob", PW).await;
    let mut b2 = Browser::new();
    let p = t.login(&mut b2, &id, &[], "bob", PW).await;
    let page = b2
        .get(&p.location.unwrap().replace("http://localhost", "http://127.0.0.1"))
        .await;
    let (tx, csrf) = (hidden(&page.body, "tx"), hidden(&page.body, "csrf"));
    let p = b2
        .post(
            &format!("{}/t/bank/consent", t.s.url),
            &[("tx", &tx), ("csrf", &csrf), ("decision", "deny")],
        )
        .await;
    assert_eq!(query(&p.location.unwrap())["error"], "access_denied");
    // prompt=none without consent.
    let p = b2.get(&t.authorize_url(&id, &[("prompt", "none")])).await;
    assert_eq!(query(&p.location.unwrap())["error"], "consent_required");
    t.s.stop().await;
}

/// What an app was granted ends when it can no longer be granted: withdrawing the consent
/// (account API) revokes the app's refresh tokens, and a scope an admin took from the client
/// is not refreshed.
#[tokio::test]
async fn refresh_follows_withdrawn_consent_and_scopes() {
    let t = setup().await;
    let (id, secret) = t.app(json!({"consent_required": true})).await;
    let mut b = Browser::new();
    let scope = [("scope", "openid offline_access accounts:read")];
    let p = t.login(&mut b, &id, &scope, "alice", PW).await;
    let page = b
        .get(&p.location.unwrap().replace("http://localhost", "http://127.0.0.1"))
        .await;
    let (tx, csrf) = (hidden(&page.body, "tx"), hidden(&page.body, "csrf"));
    let p = b
        .post(
            &format!("{}/t/bank/consent", t.s.url),
            &[("tx", &tx), ("csrf", &csrf), ("decision", "allow")],
        )
        .await;
    let (st, tok) = t.exchange(&id, Some(&secret), &code_of(&p), None).await;
    assert_eq!(st, 200, "{tok}");
    assert_eq!(tok["scope"], "openid offline_access accounts:read");
    // The admin takes `accounts:read` from the app: the next refresh leaves it out.
    let (st, c) =
        t.s.admin(
            Method::PATCH,
            &format!("/admin/v1/tenants/bank/clients/{id}"),
            &t.admin,
            Some(json!({"scopes": []})),
        )
        .await;
    assert_eq!(st, 200, "{c}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // client cache: 1 s
    let (st, r) = t.refresh(&id, &secret, tok["refresh_token"].as_str().unwrap()).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["scope"], "openid offline_access");
    // Alice withdraws her consent through the account API (first-party app, SSO).
    let (acct, acct_secret) = t.app(json!({"scopes": ["account"]})).await;
    let p = b.get(&t.authorize_url(&acct, &[("scope", "openid account")])).await;
    let (st, at) = t.exchange(&acct, Some(&acct_secret), &code_of(&p), None).await;
    assert_eq!(st, 200, "{at}");
    let r2 =
        t.s.http
            .delete(format!("{}/t/bank/account/consents/{id}", t.s.url))
            .bearer_auth(at["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
    assert_eq!(r2.status(), 204);
    let (st, e) = t.refresh(&id, &secret, r["refresh_token"].as_str().unwrap()).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")), "{e}");
    t.s.stop().await;
}

/// A consent answers the session it was asked in: if another sign-in in the same browser
/// replaced that session meanwhile, the older consent page and form are refused (they would
/// otherwise grant the new session's user what was checked for the old one).
#[tokio::test]
async fn a_consent_answers_only_the_session_it_was_asked_in() {
    let t = setup().await;
    let (id, _) = t.app(json!({"consent_required": true})).await;
    t.s.user(&t.admin, "bank", "bob", PW).await;
    let local = |p: &Page| {
        p.location
            .as_deref()
            .unwrap()
            .replace("http://localhost", "http://127.0.0.1")
    };
    let mut b = Browser::new();
    let asked = t.login(&mut b, &id, &[], "alice", PW).await;
    let alices = b.get(&local(&asked)).await;
    assert_eq!(alices.status, 200, "{}", alices.body);
    let (tx, csrf) = (hidden(&alices.body, "tx"), hidden(&alices.body, "csrf"));
    // Another tab of the same browser signs in as bob: his session replaces alice's.
    let bobs = t.login(&mut b, &id, &[("prompt", "login")], "bob", PW).await;
    assert!(local(&bobs).contains("/consent?tx="), "{:?}", bobs.location);
    let consent = format!("{}/t/bank/consent", t.s.url);
    let p = b
        .post(&consent, &[("tx", &tx), ("csrf", &csrf), ("decision", "allow")])
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.location.is_none(), "no code for bob from alice's consent");
    assert_eq!(
        b.get(&local(&asked)).await.status,
        401,
        "alice's consent page is gone too"
    );
    // Bob's own consent works.
    let page = b.get(&local(&bobs)).await;
    let (tx, csrf) = (hidden(&page.body, "tx"), hidden(&page.body, "csrf"));
    code_of(
        &b.post(&consent, &[("tx", &tx), ("csrf", &csrf), ("decision", "allow")])
            .await,
    );
    t.s.stop().await;
}

/// Login CSRF: anyone can start a sign-in and read its form, so a form must work only in the
/// browser that started it (else a page could sign a victim's browser in to the attacker's
/// account), and a sign-in's form must not answer a consent (else `prompt=login` is skipped).
#[tokio::test]
async fn a_login_form_works_only_in_its_own_browser_and_for_its_own_purpose() {
    let t = setup().await;
    let (id, _) = t.app(json!({"consent_required": true})).await;
    let local = |p: &Page| {
        p.location
            .as_deref()
            .unwrap()
            .replace("http://localhost", "http://127.0.0.1")
    };
    let mut attacker = Browser::new();
    let start = attacker.get(&t.authorize_url(&id, &[])).await;
    let login = attacker.get(&local(&start)).await;
    let (tx, csrf) = (hidden(&login.body, "tx"), hidden(&login.body, "csrf"));
    let form = [
        ("tx", tx.as_str()),
        ("csrf", csrf.as_str()),
        ("username", "alice"),
        ("password", PW),
    ];
    let url = format!("{}/t/bank/login", t.s.url);
    // The victim's browser posts the attacker's form: refused, with or without a sign-in of its own.
    let mut victim = Browser::new();
    let p = victim.post(&url, &form).await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(victim.session().is_none());
    victim.get(&t.authorize_url(&id, &[])).await;
    let p = victim.post(&url, &form).await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(victim.session().is_none());
    // In the browser that started it, the same form signs in (and asks for consent), also
    // after that browser started another sign-in (two tabs share the browser's binding).
    let other_tab = attacker.get(&t.authorize_url(&id, &[])).await;
    assert!(local(&other_tab).contains("/login?tx="), "{:?}", other_tab.location);
    let p = attacker.post(&url, &form).await;
    assert!(local(&p).contains("/consent?tx="), "{:?}", p.location);
    assert!(attacker.session().is_some());
    // Signed in, `prompt=login` starts a sign-in: its form cannot be posted as a consent.
    let start = attacker.get(&t.authorize_url(&id, &[("prompt", "login")])).await;
    assert!(local(&start).contains("/login?tx="), "{:?}", start.location);
    let login = attacker.get(&local(&start)).await;
    let (tx, csrf) = (hidden(&login.body, "tx"), hidden(&login.body, "csrf"));
    let consent = format!("{}/t/bank/consent", t.s.url);
    let p = attacker
        .post(&consent, &[("tx", &tx), ("csrf", &csrf), ("decision", "allow")])
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.location.is_none());
    t.s.stop().await;
}

#[tokio::test]
async fn a_device_cookie_keeps_its_owner_out_of_a_strangers_delay() {
    let t = setup().await;
    t.s.admin(
        Method::PATCH,
        "/admin/v1/tenants/bank",
        &t.admin,
        Some(json!({"policy": {"lockout_threshold": 3, "lockout_max_delay_seconds": 900}})),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (id, _) = t.app(json!({})).await;
    let mut owner = Browser::new();
    code_of(&t.login(&mut owner, &id, &[], "alice", PW).await);
    assert!(owner.cookies.keys().any(|k| k.contains("unicred-device")));
    owner.cookies.retain(|k, _| !k.contains("unicred-session"));
    let mut stranger = Browser::new();
    for _ in 0..6 {
        assert_eq!(
            t.login(&mut stranger, &id, &[], "alice", "guessing-wrong-pw")
                .await
                .status,
            401
        );
    }
    // The stranger is now delayed even with the right password; the owner is not, and the
    // device cookie renewed by that sign-in keeps working too.
    assert_eq!(t.login(&mut stranger, &id, &[], "alice", PW).await.status, 401);
    for _ in 0..2 {
        code_of(&t.login(&mut owner, &id, &[], "alice", PW).await);
        owner.cookies.retain(|k, _| !k.contains("unicred-session"));
    }
    t.s.stop().await;
}

#[tokio::test]
async fn logout_ends_the_session_and_its_refresh_tokens() {
    let t = setup().await;
    let (id, secret) = t.app(json!({})).await;
    let mut b = Browser::new();
    // scope without offline_access: the refresh token is tied to the session.
    let code = code_of(&t.login(&mut b, &id, &[("scope", "openid")], "alice", PW).await);
    let (_, tok) = t.exchange(&id, Some(&secret), &code, None).await;
    let rt = tok["refresh_token"].as_str().unwrap();
    let idt = tok["id_token"].as_str().unwrap();
    // Without a hint: a confirmation page first, nothing ended yet.
    let p = b.get(&format!("{}/t/bank/logout", t.s.url)).await;
    assert!(p.body.contains("id=\"logout\""));
    code_of(&b.get(&t.authorize_url(&id, &[("prompt", "none")])).await);
    // Another user's ID token does not end this browser's session: it asks first.
    t.s.user(&t.admin, "bank", "bob", PW).await;
    let mut other = Browser::new();
    let code = code_of(&t.login(&mut other, &id, &[("scope", "openid")], "bob", PW).await);
    let (_, bob) = t.exchange(&id, Some(&secret), &code, None).await;
    let bobs = format!(
        "{}/t/bank/logout?id_token_hint={}",
        t.s.url,
        bob["id_token"].as_str().unwrap()
    );
    let p = b.get(&bobs).await;
    assert!(p.body.contains("id=\"logout\""), "{}", p.body);
    code_of(&b.get(&t.authorize_url(&id, &[("prompt", "none")])).await);
    // Nor does the user's own access token: it is not an ID token (iss, aud and sub alike).
    let at = tok["access_token"].as_str().unwrap();
    let p = b.get(&format!("{}/t/bank/logout?id_token_hint={at}", t.s.url)).await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(p.body.contains("id_token_hint is not valid"), "{}", p.body);
    code_of(&b.get(&t.authorize_url(&id, &[("prompt", "none")])).await);
    // An unregistered post_logout_redirect_uri is refused.
    let bad = format!(
        "{}/t/bank/logout?id_token_hint={idt}&post_logout_redirect_uri=http://evil.example/",
        t.s.url
    );
    assert_eq!(b.get(&bad).await.status, 400);
    let url = format!(
        "{}/t/bank/logout?id_token_hint={idt}&post_logout_redirect_uri=http://127.0.0.1:9/bye&state=bye-1",
        t.s.url
    );
    let p = b.get(&url).await;
    assert_eq!(p.location.as_deref(), Some("http://127.0.0.1:9/bye?state=bye-1"));
    assert!(b.session().is_none());
    let p = b.get(&t.authorize_url(&id, &[("prompt", "none")])).await;
    assert_eq!(query(&p.location.unwrap())["error"], "login_required");
    assert_eq!(
        t.refresh(&id, &secret, rt).await.0,
        400,
        "session-bound refresh token ended with the session"
    );
    t.s.stop().await;
}

#[tokio::test]
async fn codes_sessions_and_refresh_tokens_are_bound_to_their_tenant() {
    let t = setup().await;
    t.s.tenant(&t.admin, "other").await;
    t.s.user(&t.admin, "other", "alice", PW).await;
    let (id, secret) = t.app(json!({})).await;
    let (oid, osecret) =
        t.s.client(
            &t.admin,
            "other",
            json!({"name": "o", "grant_types": ["authorization_code", "refresh_token"], "redirect_uris": [CB]}),
        )
        .await;
    let mut b = Browser::new();
    let code = code_of(&t.login(&mut b, &id, &[], "alice", PW).await);
    // The other tenant's session cookie does not exist; its authorize wants a login.
    let p = b
        .get(&t.authorize_url(&oid, &[]).replace("/t/bank/", "/t/other/"))
        .await;
    assert!(p.location.unwrap().contains("/t/other/login"));
    // A code of tenant bank, presented with a client of tenant other.
    let r =
        t.s.http
            .post(format!("{}/t/other/token", t.s.url))
            .basic_auth(&oid, Some(&osecret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CB),
            ])
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
    // The code was burnt by that attempt; get a fresh one and a refresh token.
    let code = code_of(&t.login(&mut b, &id, &[("prompt", "login")], "alice", PW).await);
    let (_, tok) = t.exchange(&id, Some(&secret), &code, None).await;
    let r =
        t.s.http
            .post(format!("{}/t/other/token", t.s.url))
            .basic_auth(&oid, Some(&osecret))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", tok["refresh_token"].as_str().unwrap()),
            ])
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
    // Still usable by its own client (the foreign attempt changed nothing).
    assert_eq!(
        t.refresh(&id, &secret, tok["refresh_token"].as_str().unwrap()).await.0,
        200
    );
    // The access token of bank is refused by other's userinfo.
    let r =
        t.s.http
            .get(format!("{}/t/other/userinfo", t.s.url))
            .bearer_auth(tok["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401);
    t.s.stop().await;
}

#[tokio::test]
async fn a_login_started_on_one_process_finishes_on_another() {
    let a = setup().await;
    let tmp = tempfile::tempdir().unwrap();
    // Replicas share the public URL (and so the issuer).
    let mut cfg = common::test_config(&a.s.db_url, &a.s.keys_dir, tmp.path());
    cfg.public_url = a.s.state.config.public_url.clone();
    let b_srv = Server::start_with(cfg, Some(tmp)).await;
    let (id, secret) = a.app(json!({})).await;
    let mut b = Browser::new();
    let p = b.get(&a.authorize_url(&id, &[])).await;
    // The login page and form post go to the second process.
    let other = b_srv.url.clone();
    let login = b
        .get(
            &p.location
                .unwrap()
                .replace("http://localhost", "http://127.0.0.1")
                .replace(&a.s.url, &other),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let (tx, csrf) = (hidden(&login.body, "tx"), hidden(&login.body, "csrf"));
    let p = b
        .post(
            &format!("{other}/t/bank/login"),
            &[("tx", &tx), ("csrf", &csrf), ("username", "alice"), ("password", PW)],
        )
        .await;
    let code = code_of(&p);
    // Exchanged on the first, refreshed on the second, revoked on the first.
    let (st, tok) = a.exchange(&id, Some(&secret), &code, None).await;
    assert_eq!(st, 200);
    let r: Value = b_srv
        .http
        .post(format!("{other}/t/bank/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tok["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rt2 = r["refresh_token"].as_str().unwrap();
    let at2 = r["access_token"].as_str().unwrap();
    a.s.http
        .post(format!("{}/t/bank/revoke", a.s.url))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", rt2)])
        .send()
        .await
        .unwrap();
    a.s.http
        .post(format!("{}/t/bank/revoke", a.s.url))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", at2)])
        .send()
        .await
        .unwrap();
    assert_eq!(a.refresh(&id, &secret, rt2).await.0, 400);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        b_srv.introspect("bank", &id, &secret, at2).await["active"],
        false,
        "the other process sees the revocation within a second"
    );
    b_srv.stop().await;
    a.s.stop().await;
}

#[tokio::test]
async fn cors_answers_only_registered_web_origins() {
    let t = setup().await;
    let (id, secret) = t.app(json!({"web_origins": ["https://app.bank.example"]})).await;
    t.app(json!({"web_origins": ["https://other.bank.example"]})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let preflight = |path: &str, origin: &str| {
        t.s.http
            .request(Method::OPTIONS, format!("{}{path}", t.s.url))
            .header("origin", origin.to_string())
            .header("access-control-request-method", "POST")
            .send()
    };
    let r = preflight("/t/bank/token", "https://app.bank.example").await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.bank.example");
    let r = preflight("/t/bank/token", "https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // The actual request carries the header for a registered origin only.
    let r =
        t.s.http
            .post(format!("{}/t/bank/revoke", t.s.url))
            .header("origin", "https://app.bank.example")
            .form(&[("token", "x")])
            .send()
            .await
            .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.bank.example");
    // Once the client is known, its answer is readable from its own origins only: another
    // client's origin passes the preflight (which names no client), not the answer.
    let mut b = Browser::new();
    let code = code_of(&t.login(&mut b, &id, &[], "alice", PW).await);
    let (_, tok) = t.exchange(&id, Some(&secret), &code, None).await;
    let at = tok["access_token"].as_str().unwrap();
    for origin in ["https://app.bank.example", "https://other.bank.example"] {
        let own = origin == "https://app.bank.example";
        let acao = |r: &reqwest::Response| r.headers().get("access-control-allow-origin").cloned();
        let userinfo =
            t.s.http
                .get(format!("{}/t/bank/userinfo", t.s.url))
                .header("origin", origin)
                .bearer_auth(at);
        let r = userinfo.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(acao(&r).is_some(), own, "userinfo from {origin}");
        let r =
            t.s.http
                .post(format!("{}/t/bank/token", t.s.url))
                .header("origin", origin)
                .basic_auth(&id, Some(&secret))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", "not-one")])
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(acao(&r).is_some(), own, "a token error for the client from {origin}");
        let r =
            t.s.http
                .post(format!("{}/t/bank/revoke", t.s.url))
                .header("origin", origin)
                .basic_auth(&id, Some(&secret))
                .form(&[("token", tok["refresh_token"].as_str().unwrap())])
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(acao(&r).is_some(), own, "revoke from {origin}");
    }
    // Discovery and JWKS: any origin. The account and admin APIs: never.
    let r =
        t.s.http
            .get(format!("{}/t/bank/jwks.json", t.s.url))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    for path in ["/t/bank/account/factors", "/admin/v1/tenants"] {
        let r = preflight(path, "https://app.bank.example").await.unwrap();
        assert!(r.headers().get("access-control-allow-origin").is_none(), "{path}");
    }
    t.s.stop().await;
}

/// The current code of a base32 TOTP secret, computed by totp-rs (SHA-1, 6 digits, 30 s).
fn totp_code(secret: &str, at: u64) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret).unwrap();
    totp_rs::Builder::new()
        .with_secret(secret)
        .build()
        .unwrap()
        .generate(at)
        .to_string()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A form post of the bank tenant's pages with owned fields.
async fn post(t: &Setup, b: &mut Browser, path: &str, f: Vec<(String, String)>) -> Page {
    let req = b.http.post(format!("{}/t/bank{path}", t.s.url)).form(&f);
    b.send(req).await
}

/// The text of the element with id `id` (no nested tags).
fn element(body: &str, id: &str) -> String {
    let start = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {body}"));
    let text = &body[start..];
    text[text.find('>').unwrap() + 1..text.find('<').unwrap()].to_string()
}

#[tokio::test]
async fn required_policy_enrols_totp_on_the_login_page() {
    let t = setup().await;
    let (id, secret) = t.app(json!({})).await;
    t.s.admin(
        Method::PATCH,
        "/admin/v1/tenants/bank",
        &t.admin,
        Some(json!({"policy": {"mfa": "required"}})),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut b = Browser::new();
    let p = b.get(&t.authorize_url(&id, &[])).await;
    let login = b
        .get(&p.location.unwrap().replace("http://localhost", "http://127.0.0.1"))
        .await;
    let csp = login.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("img-src 'self';"), "no data: images elsewhere: {csp}");

    // A correct password leads to the enrolment page: no session, no code yet.
    let enrol = t.submit(&mut b, &login, "alice", PW).await;
    assert_eq!(enrol.status, 200, "{}", enrol.body);
    assert!(enrol.location.is_none() && b.session().is_none());
    let csp = enrol.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("img-src 'self' data:;"),
        "the QR code is a data: image: {csp}"
    );
    assert!(
        enrol.body.contains("src=\"data:image/png;base64,iVBOR"),
        "{}",
        enrol.body
    );
    let totp_secret = element(&enrol.body, "secret");
    assert!(totp_secret.len() >= 32, "{totp_secret}");
    let form = |p: &Page, code: &str| -> Vec<(String, String)> {
        ["tx", "csrf", "state", "factor"]
            .iter()
            .map(|n| (n.to_string(), hidden(&p.body, n)))
            .chain([("code".to_string(), code.to_string())])
            .collect()
    };

    // A wrong code shows the same enrolment again.
    let again = post(&t, &mut b, "/login/enroll", form(&enrol, "000000")).await;
    assert_eq!(again.status, 401, "{}", again.body);
    assert_eq!(element(&again.body, "secret"), totp_secret);
    assert!(again.body.contains("id=\"error\""));
    assert!(b.session().is_none());

    // The right code (totp-rs) confirms it; the recovery codes are shown before any session.
    let codes = post(
        &t,
        &mut b,
        "/login/enroll",
        form(&again, &totp_code(&totp_secret, unix_now())),
    )
    .await;
    assert_eq!(codes.status, 200, "{}", codes.body);
    assert!(b.session().is_none(), "no session before the recovery codes are seen");
    let shown: Vec<String> = codes
        .body
        .split("<li><code>")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().to_string())
        .collect();
    assert_eq!(shown.len(), 10, "{}", codes.body);
    let next: Vec<(String, String)> = ["tx", "csrf", "state"]
        .iter()
        .map(|n| (n.to_string(), hidden(&codes.body, n)))
        .collect();
    let done = post(&t, &mut b, "/login/enroll/continue", next.clone()).await;
    let code = code_of(&done);
    assert!(b.session().is_some());
    let (st, tok) = t.exchange(&id, Some(&secret), &code, None).await;
    assert_eq!(st, 200, "{tok}");
    let c: Value = serde_json::from_slice(
        &B64.decode(tok["id_token"].as_str().unwrap().split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(c["acr"], "urn:unicred:acr:mfa", "{c}");
    assert_eq!(c["amr"], json!(["pwd", "otp"]), "{c}");
    // The continue step is single use.
    assert_ne!(post(&t, &mut b, "/login/enroll/continue", next).await.status, 303);

    // The next sign-in (new browser) asks for the factor; a shown recovery code works.
    let mut b2 = Browser::new();
    let mfa = t.login(&mut b2, &id, &[], "alice", PW).await;
    assert_eq!(mfa.status, 200, "{}", mfa.body);
    assert!(mfa.body.contains("form id=\"mfa\""), "{}", mfa.body);
    let f: Vec<(String, String)> = ["tx", "csrf", "state"]
        .iter()
        .map(|n| (n.to_string(), hidden(&mfa.body, n)))
        .chain([
            ("kind".to_string(), "recovery_code".to_string()),
            ("code".to_string(), shown[0].clone()),
        ])
        .collect();
    let done = post(&t, &mut b2, "/login/mfa", f).await;
    code_of(&done);
    t.s.stop().await;
}

/// A tenant that comes to require a second factor does not honour what began with a password
/// alone: the SSO session signs in again, and its refresh tokens stop.
#[tokio::test]
async fn requiring_mfa_ends_what_a_password_alone_began() {
    let t = setup().await;
    let (id, secret) = t.app(json!({})).await;
    let mut b = Browser::new();
    let code = code_of(&t.login(&mut b, &id, &[], "alice", PW).await);
    let (_, tok) = t.exchange(&id, Some(&secret), &code, None).await;
    let rt = tok["refresh_token"].as_str().unwrap().to_string();
    let (st, _) =
        t.s.admin(
            Method::PATCH,
            "/admin/v1/tenants/bank",
            &t.admin,
            Some(json!({"policy": {"mfa": "required"}})),
        )
        .await;
    assert_eq!(st, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let p = b.get(&t.authorize_url(&id, &[("prompt", "none")])).await;
    assert_eq!(query(p.location.as_deref().unwrap())["error"], "login_required");
    let p = b.get(&t.authorize_url(&id, &[])).await;
    assert!(p.location.unwrap().contains("/login?tx="), "to the login page");
    assert_eq!(
        t.refresh(&id, &secret, &rt).await.0,
        400,
        "the password-only family ends"
    );
    t.s.stop().await;
}

/// The login page asks for a new password after a temporary one, applies the policy, and
/// only then goes on to the application.
#[tokio::test]
async fn the_login_page_replaces_a_temporary_password() {
    let t = setup().await;
    let (id, secret) = t.app(json!({})).await;
    let temp = t.s.temporary_password(&t.admin, "bank", "alice").await;
    let mut b = Browser::new();
    let p = t.login(&mut b, &id, &[], "alice", temp).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("id=\"password-change\""), "{}", p.body);
    assert!(b.session().is_none(), "no session before the new password");
    let (tx, csrf, state) = (hidden(&p.body, "tx"), hidden(&p.body, "csrf"), hidden(&p.body, "state"));
    let url = format!("{}/t/bank/login/password", t.s.url);
    let weak = b
        .post(
            &url,
            &[
                ("tx", &tx),
                ("csrf", &csrf),
                ("state", &state),
                ("new_password", "alice"),
            ],
        )
        .await;
    assert_eq!(weak.status, 422);
    assert!(weak.body.contains("id=\"violations\""), "{}", weak.body);
    let new = "granite-meadow-compass-88";
    let done = b
        .post(
            &url,
            &[("tx", &tx), ("csrf", &csrf), ("state", &state), ("new_password", new)],
        )
        .await;
    let code = code_of(&done);
    let (st, tok) = t.exchange(&id, Some(&secret), &code, None).await;
    assert_eq!(st, 200, "{tok}");
    let mut again = Browser::new();
    code_of(&t.login(&mut again, &id, &[], "alice", new).await);
    t.s.stop().await;
}

/// With a second factor, a temporary password is replaced only after it: the temporary
/// password alone shows the second-factor page, not the one that chooses the account's
/// password (its holder could otherwise take the account over and end its sessions).
#[tokio::test]
async fn the_login_page_asks_the_second_factor_before_a_new_password() {
    let t = setup().await;
    let (id, secret) = t.app(json!({"scopes": ["account"]})).await;
    // Alice enrols TOTP through the account API.
    let mut b = Browser::new();
    let code = code_of(&t.login(&mut b, &id, &[("scope", "openid account")], "alice", PW).await);
    let (st, tok) = t.exchange(&id, Some(&secret), &code, None).await;
    assert_eq!(st, 200, "{tok}");
    let account = |path: &str, body: Value| {
        t.s.http
            .post(format!("{}/t/bank/account{path}", t.s.url))
            .bearer_auth(tok["access_token"].as_str().unwrap())
            .json(&body)
            .send()
    };
    let e: Value = account("/totp", json!({})).await.unwrap().json().await.unwrap();
    let fid = e["factor_id"].as_str().unwrap_or_else(|| panic!("{e}"));
    let code = totp_code(e["secret"].as_str().unwrap(), unix_now());
    let c: Value = account(&format!("/totp/{fid}/confirm"), json!({"code": code}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let recovery = c["recovery_codes"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{c}"))
        .to_string();
    let temp = t.s.temporary_password(&t.admin, "bank", "alice").await;

    let mut b = Browser::new();
    let mfa = t.login(&mut b, &id, &[], "alice", temp).await;
    assert_eq!(mfa.status, 200, "{}", mfa.body);
    assert!(mfa.body.contains("form id=\"mfa\""), "{}", mfa.body);
    assert!(!mfa.body.contains("password-change"), "{}", mfa.body);
    let step = |p: &Page| -> Vec<(String, String)> {
        ["tx", "csrf", "state"]
            .iter()
            .map(|n| (n.to_string(), hidden(&p.body, n)))
            .collect()
    };
    let new = "granite-meadow-compass-88";
    let with = |mut f: Vec<(String, String)>, extra: &[(&str, &str)]| {
        f.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        f
    };
    // The second factor's state token cannot choose the password.
    let early = post(
        &t,
        &mut b,
        "/login/password",
        with(step(&mfa), &[("new_password", new)]),
    )
    .await;
    assert_eq!(early.status, 401, "{}", early.body);
    let change = post(
        &t,
        &mut b,
        "/login/mfa",
        with(step(&mfa), &[("kind", "recovery_code"), ("code", &recovery)]),
    )
    .await;
    assert_eq!(change.status, 200, "{}", change.body);
    assert!(change.body.contains("id=\"password-change\""), "{}", change.body);
    assert!(b.session().is_none(), "no session before the new password");
    // Without a new password, the same step shows its page again (the security-key script's way in).
    let shown = post(&t, &mut b, "/login/password", step(&change)).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert!(shown.body.contains("id=\"password-change\""), "{}", shown.body);
    let done = post(
        &t,
        &mut b,
        "/login/password",
        with(step(&change), &[("new_password", new)]),
    )
    .await;
    let (st, tok) = t.exchange(&id, Some(&secret), &code_of(&done), None).await;
    assert_eq!(st, 200, "{tok}");
    let c = common::jwt_claims(tok["id_token"].as_str().unwrap());
    assert_eq!(c["acr"], "urn:unicred:acr:mfa", "{c}");
    assert_eq!(c["amr"], json!(["pwd", "otp"]), "{c}");
    assert_eq!(t.login(&mut Browser::new(), &id, &[], "alice", temp).await.status, 401);
    t.s.stop().await;
}

/// RFC 8707 for user tokens: `resource` at the token endpoint (one of the client's registered
/// resources) is the access token's `aud`; another is refused before the code or refresh token
/// is spent; without it, `aud` is the client.
#[tokio::test]
async fn a_user_token_is_for_the_resource_asked_for() {
    let t = setup().await;
    let api = "https://api.bank.example";
    let (id, secret) = t.app(json!({"resources": [api]})).await;
    let aud = |tok: &Value| -> Value {
        common::jwt_claims(tok["access_token"].as_str().unwrap_or_else(|| panic!("{tok}")))["aud"].clone()
    };
    let token = |form: Vec<(&str, String)>| {
        t.s.http
            .post(format!("{}/t/bank/token", t.s.url))
            .basic_auth(&id, Some(&secret))
            .form(&form)
            .send()
    };
    let code = code_of(&t.login(&mut Browser::new(), &id, &[], "alice", PW).await);
    let redeem = |resource: &str| {
        vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.clone()),
            ("redirect_uri", CB.to_string()),
            ("resource", resource.to_string()),
        ]
    };
    let r = token(redeem("https://elsewhere.example")).await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "invalid_target", "{e}");
    let tok: Value = token(redeem(api)).await.unwrap().json().await.unwrap();
    assert_eq!(aud(&tok), api, "the code was not spent by the refused request");
    let refresh = |rt: &str, resource: Option<&str>| {
        let mut f = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", rt.to_string()),
        ];
        if let Some(r) = resource {
            f.push(("resource", r.to_string()));
        }
        f
    };
    let rt = tok["refresh_token"].as_str().unwrap();
    let r = token(refresh(rt, Some("https://elsewhere.example"))).await.unwrap();
    assert_eq!(r.status(), 400);
    let tok: Value = token(refresh(rt, None)).await.unwrap().json().await.unwrap();
    assert_eq!(aud(&tok), id.as_str(), "no resource: the client");
    t.s.stop().await;
}

/// Signing in again in the same browser (`prompt=login`, a step-up, `max_age`) keeps the
/// user's other apps signed in: their session-bound refresh families move to the new session.
/// Another user's sign-in in that browser ends them.
#[tokio::test]
async fn signing_in_again_keeps_the_users_other_apps() {
    let t = setup().await;
    let (a, a_secret) = t.app(json!({})).await;
    let (other, _) = t.app(json!({"name": "Other"})).await;
    t.s.user(&t.admin, "bank", "bob", PW).await;
    let bound = [("scope", "openid profile")]; // no offline_access: bound to the session
    let mut b = Browser::new();
    let code = code_of(&t.login(&mut b, &a, &bound, "alice", PW).await);
    let (_, tok) = t.exchange(&a, Some(&a_secret), &code, None).await;
    let rt = tok["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{tok}"))
        .to_string();
    code_of(&t.login(&mut b, &other, &[("prompt", "login")], "alice", PW).await);
    let (st, r) = t.refresh(&a, &a_secret, &rt).await;
    assert_eq!(st, 200, "the first app stays signed in: {r}");
    let rt = r["refresh_token"].as_str().unwrap().to_string();
    code_of(&t.login(&mut b, &other, &[("prompt", "login")], "bob", PW).await);
    let (st, _) = t.refresh(&a, &a_secret, &rt).await;
    assert_eq!(st, 400, "another user's sign-in ends alice's session and its families");
    t.s.stop().await;
}
