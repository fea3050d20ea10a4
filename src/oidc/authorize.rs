//! `/authorize` (RFC 6749 §4.1, OIDC Core §3.1.2, RFC 7636, RFC 9207). Errors before the
//! redirect URI is validated are shown as a page; after, they go back to the client.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::clients::{Client, GRANT_CODE};
use crate::http::extract::Path;
use crate::store::{self, codes::CodeRow, sessions::SessionRow};
use crate::tenants::Tenant;

use super::pages::error_page;
use super::session;
use super::user_tokens::user_scopes;
use crate::crypto::secret_hash;

/// A validated authorization request, kept in the login transaction while the user signs in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub prompt: Vec<String>,
    pub max_age: Option<i64>,
    pub acr_values: Option<String>,
    pub login_hint: Option<String>,
}

/// Login transactions live this long.
pub const TX_TTL: i64 = 600;
const CODE_TTL: i64 = 60;

pub async fn get(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    authorize(&state, &slug, &headers, q.unwrap_or_default().as_bytes()).await
}

pub async fn post(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    authorize(&state, &slug, &headers, &body).await
}

/// An error sent back to the client (RFC 6749 §4.1.2.1), with `iss` (RFC 9207).
pub fn error_redirect(
    state: &AppState,
    tenant: &Tenant,
    req_uri: &str,
    st: Option<&str>,
    error: &str,
    desc: &str,
) -> Response {
    let mut params = vec![("error", error), ("error_description", desc)];
    if let Some(s) = st {
        params.push(("state", s));
    }
    let iss = state.config.issuer(&tenant.slug);
    params.push(("iss", &iss));
    redirect_to(req_uri, &params)
}

pub fn redirect_to(base: &str, params: &[(&str, &str)]) -> Response {
    let mut url = match url::Url::parse(base) {
        Ok(u) => u,
        Err(_) => return (StatusCode::BAD_REQUEST, "bad redirect").into_response(),
    };
    url.query_pairs_mut().extend_pairs(params.iter());
    see_other(url.as_str())
}

pub fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn params(raw: &[u8]) -> Result<Vec<(String, String)>, &'static str> {
    if raw.len() > 16 * 1024 || std::str::from_utf8(raw).is_err() {
        return Err("the request is too large or not UTF-8");
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(raw) {
        if out.len() >= 64 {
            return Err("too many parameters");
        }
        if out.iter().any(|(p, _)| *p == k) {
            return Err("a parameter is repeated");
        }
        if !v.is_empty() {
            out.push((k.into_owned(), v.into_owned()));
        }
    }
    Ok(out)
}

async fn authorize(state: &AppState, slug: &str, headers: &HeaderMap, raw: &[u8]) -> Response {
    let Ok(Some(tenant)) = state.tenants.by_slug(slug).await else {
        return error_page(StatusCode::NOT_FOUND, "unicred", "Unknown organisation.");
    };
    let p = match params(raw) {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &tenant.name, e),
    };
    let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    // Before the redirect URI is known to be the client's, errors are pages.
    let client = match get("client_id") {
        Some(id) => state
            .clients
            .get(id)
            .await
            .ok()
            .flatten()
            .filter(|c| c.tenant_id == tenant.id),
        None => None,
    };
    let Some(client) = client else {
        return error_page(StatusCode::BAD_REQUEST, &tenant.name, "Unknown or missing client_id.");
    };
    let Some(redirect_uri) = get("redirect_uri").filter(|u| client.redirect_uris.iter().any(|r| r == u)) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            &tenant.name,
            "The redirect_uri is missing or not registered for this client.",
        );
    };
    let st = get("state");
    let fail = |error: &str, desc: &str| error_redirect(state, &tenant, redirect_uri, st, error, desc);
    match validate(&client, &p) {
        Ok(req) => proceed(state, &tenant, &client, headers, req).await,
        Err((error, desc)) => fail(error, &desc),
    }
}

fn validate(client: &Client, p: &[(String, String)]) -> Result<AuthRequest, (&'static str, String)> {
    let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let bad = |d: &str| ("invalid_request", d.to_string());
    if get("request").is_some() {
        return Err(("request_not_supported", "request objects are not supported".into()));
    }
    if get("request_uri").is_some() {
        return Err(("request_uri_not_supported", "request_uri is not supported".into()));
    }
    match get("response_type") {
        Some("code") => {}
        Some(_) => {
            return Err((
                "unsupported_response_type",
                "only response_type=code is supported".into(),
            ));
        }
        None => return Err(bad("response_type is required")),
    }
    if get("response_mode").is_some_and(|m| m != "query") {
        return Err(bad("only response_mode=query is supported"));
    }
    if !client.has_grant(GRANT_CODE) {
        return Err((
            "unauthorized_client",
            "this client may not use the authorization code flow".into(),
        ));
    }
    let scopes = user_scopes(client, get("scope").unwrap_or("openid")).map_err(|e| ("invalid_scope", e.description))?;
    let code_challenge = match (get("code_challenge"), get("code_challenge_method")) {
        (Some(c), Some("S256")) => {
            let ok = c.len() == 43 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(bad("code_challenge must be a base64url SHA-256 (43 characters)"));
            }
            Some(c.to_string())
        }
        (Some(_), _) => return Err(bad("code_challenge_method must be S256 (plain is not accepted)")),
        (None, Some(_)) => return Err(bad("code_challenge_method without code_challenge")),
        (None, None) if client.is_public() => {
            return Err(bad("PKCE (code_challenge with S256) is required for public clients"));
        }
        (None, None) => None,
    };
    let prompt: Vec<String> = get("prompt")
        .map(|p| p.split(' ').filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    if prompt
        .iter()
        .any(|v| !["none", "login", "consent", "select_account"].contains(&v.as_str()))
    {
        return Err(bad("unsupported prompt value"));
    }
    if prompt.iter().any(|v| v == "none") && prompt.len() > 1 {
        return Err(bad("prompt=none cannot be combined"));
    }
    let max_age = match get("max_age") {
        Some(m) => Some(
            m.parse::<i64>()
                .ok()
                .filter(|m| *m >= 0)
                .ok_or_else(|| bad("max_age must be a non-negative integer"))?,
        ),
        None => None,
    };
    let bounded = |k: &str, max: usize| -> Result<Option<String>, (&'static str, String)> {
        match get(k) {
            Some(v) if v.len() > max => Err(bad(&format!("{k} is too long"))),
            v => Ok(v.map(String::from)),
        }
    };
    Ok(AuthRequest {
        client_id: client.id.clone(),
        redirect_uri: get("redirect_uri").unwrap_or_default().to_string(),
        scopes,
        state: bounded("state", 2048)?,
        nonce: bounded("nonce", 512)?,
        code_challenge,
        prompt,
        max_age,
        acr_values: bounded("acr_values", 512)?,
        login_hint: bounded("login_hint", 256)?,
    })
}

/// With a usable session, finish (or ask consent); otherwise start a login transaction.
async fn proceed(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    headers: &HeaderMap,
    req: AuthRequest,
) -> Response {
    let session = match session::current(state, tenant, headers).await {
        Ok(s) => s,
        Err(e) => return internal(tenant, &e),
    };
    let now = store::now();
    let fresh_enough = |s: &SessionRow| req.max_age.is_none_or(|m| now.saturating_sub(s.auth_time) <= m);
    // Step-up: `acr_values` asking for mfa needs a session that had a second factor, and so
    // does a tenant that requires one (a session begun before the policy said so does not
    // count: it signs in again, with every factor).
    let wants_mfa = crate::authn::mfa_blocks(tenant)
        || req
            .acr_values
            .as_deref()
            .is_some_and(|v| v.split(' ').any(|a| a == crate::authn::ACR_MFA));
    let strong_enough = |s: &SessionRow| !wants_mfa || s.acr == crate::authn::ACR_MFA;
    let usable = session.filter(|s| !req.prompt.iter().any(|p| p == "login") && fresh_enough(s) && strong_enough(s));
    let fail = |e: &str, d: &str| error_redirect(state, tenant, &req.redirect_uri, req.state.as_deref(), e, d);
    match usable {
        Some(s) => after_login(state, tenant, client, headers, req, &s, Vec::new()).await,
        None if req.prompt.iter().any(|p| p == "none") => fail("login_required", "the user is not signed in"),
        None => match start_transaction(state, tenant, headers, &req, session::TxPurpose::Login).await {
            Ok((tx, cookie)) => with_cookies(
                see_other(&format!("{}/login?tx={tx}", state.config.issuer(&tenant.slug))),
                vec![cookie],
            ),
            Err(e) => internal(tenant, &e),
        },
    }
}

/// The page for a failure the user cannot fix: 503 (with `Retry-After`) while the database
/// cannot be reached, else 500.
pub fn internal<E: std::fmt::Display + crate::http::error::Unavailability + ?Sized>(
    tenant: &Tenant,
    e: &E,
) -> Response {
    if e.is_bad_text() {
        return error_page(StatusCode::BAD_REQUEST, &tenant.name, crate::http::error::BAD_TEXT);
    }
    if e.is_unavailable() {
        tracing::warn!(error = %e, "database unavailable");
        let mut r = error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            &tenant.name,
            "The service is busy. Please try again in a moment.",
        );
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(crate::http::error::OUTAGE_RETRY_AFTER),
        );
        return r;
    }
    tracing::error!(error = %e, "authorization failed");
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        &tenant.name,
        "Something went wrong. Please try again.",
    )
}

/// A login transaction for this browser (see [`session::browser_binding`]): its id, and the
/// `Set-Cookie` to send with the redirect to its page.
pub async fn start_transaction(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    req: &AuthRequest,
    purpose: session::TxPurpose<'_>,
) -> Result<(String, HeaderValue), store::StoreError> {
    let tx = crate::crypto::random_token::<24>();
    let (binding, cookie) = session::browser_binding(state, tenant, headers);
    let row = store::sessions::TransactionRow {
        tenant_id: tenant.id.clone(),
        client_id: req.client_id.clone(),
        params: serde_json::to_string(req).unwrap_or_default(),
        csrf: session::tx_csrf(&binding, &tx, purpose),
    };
    store::sessions::create_transaction(&state.db, &secret_hash(&tx), &row, store::now() + TX_TTL).await?;
    Ok((tx, cookie))
}

/// Signed in: consent if the client needs it and the user has not given it for these scopes,
/// then a code. `cookies` are `Set-Cookie` values to send along.
#[allow(clippy::too_many_arguments)]
pub async fn after_login(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    headers: &HeaderMap,
    req: AuthRequest,
    s: &SessionRow,
    mut cookies: Vec<HeaderValue>,
) -> Response {
    if client.consent_required {
        let granted = match store::consents::get(&state.db, &tenant.id, &s.user_id, &client.id).await {
            Ok(g) => g,
            Err(e) => return internal(tenant, &e),
        };
        let covered = granted.is_some_and(|g| req.scopes.iter().all(|x| g.split(' ').any(|y| y == x)));
        if !covered || req.prompt.iter().any(|p| p == "consent") {
            if req.prompt.iter().any(|p| p == "none") {
                return error_redirect(
                    state,
                    tenant,
                    &req.redirect_uri,
                    req.state.as_deref(),
                    "consent_required",
                    "consent is required",
                );
            }
            let (tx, cookie) = match start_transaction(
                state,
                tenant,
                headers,
                &req,
                session::TxPurpose::Consent { session: &s.id_hash },
            )
            .await
            {
                Ok(x) => x,
                Err(e) => return internal(tenant, &e),
            };
            cookies.push(cookie);
            return with_cookies(
                see_other(&format!("{}/consent?tx={tx}", state.config.issuer(&tenant.slug))),
                cookies,
            );
        }
    }
    with_cookies(issue_code(state, tenant, req, s).await, cookies)
}

pub fn with_cookies(mut r: Response, cookies: Vec<HeaderValue>) -> Response {
    for c in cookies {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

pub async fn issue_code(state: &AppState, tenant: &Tenant, req: AuthRequest, s: &SessionRow) -> Response {
    let code = crate::crypto::random_token::<32>();
    let row = CodeRow {
        tenant_id: tenant.id.clone(),
        client_id: req.client_id.clone(),
        user_id: s.user_id.clone(),
        session_id: Some(s.id_hash.clone()),
        redirect_uri: req.redirect_uri.clone(),
        scope: req.scopes.join(" "),
        nonce: req.nonce.clone(),
        code_challenge: req.code_challenge.clone(),
        auth_time: s.auth_time,
        acr: s.acr.clone(),
        amr: s.amr.clone(),
    };
    if let Err(e) = store::codes::create(&state.db, &secret_hash(&code), &row, store::now() + CODE_TTL).await {
        return internal(tenant, &e);
    }
    let iss = state.config.issuer(&tenant.slug);
    let mut params = vec![("code", code.as_str())];
    if let Some(st) = &req.state {
        params.push(("state", st));
    }
    params.push(("iss", &iss));
    redirect_to(&req.redirect_uri, &params)
}
