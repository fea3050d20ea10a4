//! The login and consent pages. Forms carry a CSRF token bound to the login transaction; the
//! same state machine, throttling and hashing pool as `/authn` check the password.

use axum::Extension;
use axum::body::Bytes;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::audit::Event;
use crate::authn::{self, ACR_PWD, AuthnError};
use crate::clients::Client;
use crate::http::extract::Path;
use crate::http::ratelimit::ClientIp;
use crate::store::{self, sessions::SessionRow};
use crate::tenants::Tenant;

use super::authorize::{AuthRequest, after_login, error_redirect, internal, issue_code};
use super::pages::{error_page, page};
use super::session::{self, TxPurpose};
use crate::crypto::secret_hash;

mod enroll;
mod passkey;
mod password;
pub use enroll::{enroll_continue, enroll_submit, enroll_webauthn, enroll_webauthn_options};
pub use passkey::{passkey_options, passkey_submit};
pub use password::password_submit;

#[derive(Deserialize)]
pub struct TxQuery {
    tx: Option<String>,
}

struct Tx {
    id: String,
    csrf: String,
    client: std::sync::Arc<Client>,
    req: AuthRequest,
}

async fn load_tx(state: &AppState, tenant: &Tenant, tx: Option<&str>) -> Result<Tx, Response> {
    let expired = || {
        error_page(
            StatusCode::BAD_REQUEST,
            &tenant.name,
            "This sign-in has expired. Please go back to the application and start again.",
        )
    };
    let Some(id) = tx.filter(|t| t.len() <= 64) else {
        return Err(expired());
    };
    let row = match store::sessions::transaction(&state.db, &tenant.id, &secret_hash(id)).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(expired()),
        Err(e) => return Err(internal(tenant, &e)),
    };
    let req: AuthRequest = serde_json::from_str(&row.params).map_err(|e| internal(tenant, &e))?;
    let client = match state.clients.get(&row.client_id).await {
        Ok(Some(c)) if c.tenant_id == tenant.id => c,
        _ => return Err(expired()),
    };
    Ok(Tx {
        id: id.to_string(),
        csrf: row.csrf,
        client,
        req,
    })
}

fn login_page(
    state: &AppState,
    tenant: &Tenant,
    tx: &Tx,
    status: StatusCode,
    username: &str,
    error: Option<&str>,
) -> Response {
    let issuer = state.config.issuer(&tenant.slug);
    let passkeys = passkey::offered(tenant);
    let ctx = minijinja::context! {
        tenant_name => &tenant.name,
        client_name => &tx.client.name,
        action => format!("{issuer}/login"),
        passkey_options => passkeys.then(|| format!("{issuer}/login/passkey/options")),
        passkey_action => passkeys.then(|| format!("{issuer}/login/passkey")),
        tx => &tx.id,
        csrf => &tx.csrf,
        username => username,
        error => error,
    };
    page(status, "login.html", ctx, Some(&tx.req.redirect_uri))
}

async fn tenant_or_page(state: &AppState, slug: &str) -> Result<std::sync::Arc<Tenant>, Response> {
    match state.tenants.by_slug(slug).await {
        Ok(Some(t)) => Ok(t),
        _ => Err(error_page(StatusCode::NOT_FOUND, "unicred", "Unknown organisation.")),
    }
}

pub async fn show(State(state): State<AppState>, Path(slug): Path<String>, Query(q): Query<TxQuery>) -> Response {
    let tenant = match tenant_or_page(&state, &slug).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match load_tx(&state, &tenant, q.tx.as_deref()).await {
        Ok(tx) => {
            let hint = tx.req.login_hint.clone().unwrap_or_default();
            login_page(&state, &tenant, &tx, StatusCode::OK, &hint, None)
        }
        Err(r) => r,
    }
}

fn form(body: &Bytes) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .take(16)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn field<'a>(f: &'a [(String, String)], k: &str) -> Option<&'a str> {
    f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn csrf_ok(tx: &Tx, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(tx.csrf.as_bytes())))
}

/// A form post of the login pages, checked: the tenant, the fields, the login transaction
/// they name, its CSRF token, and that the post comes from the browser that started the
/// transaction, for this purpose. Handlers take it as [`LoginForm`] or [`ConsentForm`]; a
/// post that fails a check never reaches them (403 page).
pub struct Form {
    tenant: Arc<Tenant>,
    fields: Vec<(String, String)>,
    tx: Tx,
}

/// A [`Form`] posted for a sign-in step.
pub struct LoginForm(Form);
/// A [`Form`] posted to the consent page, with the session it was asked in.
pub struct ConsentForm(Form, SessionRow);

impl FromRequest<AppState> for LoginForm {
    type Rejection = Response;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (form, headers) = Form::read(req, state).await?;
        form.bound(state, &headers, TxPurpose::Login)?;
        Ok(LoginForm(form))
    }
}

impl FromRequest<AppState> for ConsentForm {
    type Rejection = Response;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (form, headers) = Form::read(req, state).await?;
        let s = signed_in(state, &form.tenant, &headers).await?;
        form.bound(state, &headers, TxPurpose::Consent { session: &s.id_hash })?;
        Ok(ConsentForm(form, s))
    }
}

impl Form {
    /// The tenant, the fields and the login transaction they name.
    async fn read(req: Request, state: &AppState) -> Result<(Form, HeaderMap), Response> {
        let (mut parts, body) = req.into_parts();
        let Path(slug) = Path::<String>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let headers = parts.headers.clone();
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let tenant = tenant_or_page(state, &slug).await?;
        let fields = form(&body);
        let tx = load_tx(state, &tenant, field(&fields, "tx")).await?;
        Ok((Form { tenant, fields, tx }, headers))
    }

    /// The form's CSRF token, and that it comes from the browser that started the transaction,
    /// for `purpose`.
    fn bound(&self, state: &AppState, headers: &HeaderMap, purpose: TxPurpose<'_>) -> Result<(), Response> {
        if !csrf_ok(&self.tx, field(&self.fields, "csrf"))
            || !session::tx_bound(state, &self.tenant, headers, &self.tx.id, &self.tx.csrf, purpose)
        {
            return Err(error_page(
                StatusCode::FORBIDDEN,
                &self.tenant.name,
                "The form has expired. Please try again.",
            ));
        }
        Ok(())
    }
}

/// The browser's session, or the page that asks to sign in again.
async fn signed_in(state: &AppState, tenant: &Tenant, headers: &HeaderMap) -> Result<SessionRow, Response> {
    match session::current(state, tenant, headers).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(error_page(
            StatusCode::UNAUTHORIZED,
            &tenant.name,
            "Please sign in again.",
        )),
        Err(e) => Err(internal(tenant, &e)),
    }
}

pub async fn submit(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    LoginForm(Form { tenant, fields: f, tx }): LoginForm,
) -> Response {
    let username = field(&f, "username").unwrap_or_default();
    let password = zeroize::Zeroizing::new(field(&f, "password").unwrap_or_default().to_string());
    let device = |key: &str| session::device_for(&state, &tenant, &headers, key);
    let ok = match authn::check_password(&state, &tenant, &tx.client, username, &password, ip, device).await {
        Ok(ok) => ok,
        Err(AuthnError::InvalidCredentials | AuthnError::InvalidFactor) => {
            let shown: String = username.chars().take(256).collect();
            return login_page(
                &state,
                &tenant,
                &tx,
                StatusCode::UNAUTHORIZED,
                &shown,
                Some("The username or password is incorrect."),
            );
        }
        Err(AuthnError::Busy) => {
            return login_page(
                &state,
                &tenant,
                &tx,
                StatusCode::SERVICE_UNAVAILABLE,
                username,
                Some("The service is busy. Please try again in a moment."),
            );
        }
        Err(AuthnError::Internal(e)) => return internal(&tenant, &e),
    };
    // A temporary password is replaced now, or after the second factor (see `authn::password`).
    if ok.user.password_temporary != 0 && !ok.has_factor {
        return match authn::new_state(&state, &tenant, &tx.client, &ok, password::PURPOSE).await {
            Ok(token) => password::page_for(&state, &tenant, &tx, &token, StatusCode::OK, &[]),
            Err(e) => internal(&tenant, &e),
        };
    }
    after_password(&state, &tenant, tx, &headers, ip, &ok).await
}

/// A step's state token is spent, expired or foreign: the sign-in starts over.
fn step_expired(tenant: &Tenant) -> Response {
    error_page(
        StatusCode::UNAUTHORIZED,
        &tenant.name,
        "This sign-in has expired. Please go back to the application and start again.",
    )
}

/// The page for a sign-in step that failed other than by a wrong input.
fn step_failed(tenant: &Tenant, e: AuthnError) -> Response {
    match e {
        AuthnError::InvalidFactor | AuthnError::InvalidCredentials => step_expired(tenant),
        AuthnError::Busy => error_page(StatusCode::SERVICE_UNAVAILABLE, &tenant.name, "The service is busy."),
        AuthnError::Internal(e) => internal(tenant, &e),
    }
}

/// The login page after the password (or its replacement): the second-factor page, enrolment,
/// or the session.
async fn after_password(
    state: &AppState,
    tenant: &Tenant,
    tx: Tx,
    headers: &HeaderMap,
    ip: std::net::IpAddr,
    ok: &authn::PasswordOk,
) -> Response {
    if ok.has_factor {
        return match authn::new_state(state, tenant, &tx.client, ok, "page").await {
            Ok(token) => mfa_page(state, tenant, &tx, &token, StatusCode::OK, None).await,
            Err(e) => internal(tenant, &e),
        };
    }
    if authn::mfa_blocks(tenant) {
        return enroll::start(state, tenant, &tx, ok).await;
    }
    if let Err(e) = authn::fully_authenticated(state, tenant, &tx.client, ok, "pwd").await {
        return internal(tenant, &e);
    }
    complete(state, tenant, tx, headers, ip, ok, "pwd", ACR_PWD).await
}

/// The end of every way through the login page: the login transaction is spent, a session
/// starts (with `amr` and `acr`), `session.started` is audited and the browser is sent on.
#[allow(clippy::too_many_arguments)]
async fn complete(
    state: &AppState,
    tenant: &Tenant,
    tx: Tx,
    headers: &HeaderMap,
    ip: std::net::IpAddr,
    ok: &authn::PasswordOk,
    amr: &str,
    acr: &str,
) -> Response {
    match store::sessions::end_transaction(&state.db, &secret_hash(&tx.id)).await {
        Ok(true) => {}
        Ok(false) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                &tenant.name,
                "This sign-in was already completed.",
            );
        }
        Err(e) => return internal(tenant, &e),
    }
    let key = authn::account_key(&ok.throttle_key);
    let started = session::start(state, tenant, headers, &ok.user.id, key, amr, acr).await;
    let (s, cookies) = match started {
        Ok(x) => x,
        Err(e) => return internal(tenant, &e),
    };
    let e = Event::new(&tenant.id, "session.started")
        .user(&ok.user.id)
        .client(&tx.client.id)
        .ip(Some(ip));
    if let Err(e) = state.audit.record(e).await {
        return internal(tenant, &e);
    }
    after_login(state, tenant, &tx.client, headers, tx.req, &s, cookies).await
}

fn consent_page(state: &AppState, tenant: &Tenant, tx: &Tx) -> Response {
    let ctx = minijinja::context! {
        tenant_name => &tenant.name,
        client_name => &tx.client.name,
        scopes => &tx.req.scopes,
        action => format!("{}/consent", state.config.issuer(&tenant.slug)),
        tx => &tx.id,
        csrf => &tx.csrf,
    };
    page(StatusCode::OK, "consent.html", ctx, Some(&tx.req.redirect_uri))
}

pub async fn consent_show(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    Query(q): Query<TxQuery>,
) -> Response {
    let tenant = match tenant_or_page(&state, &slug).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let tx = match load_tx(&state, &tenant, q.tx.as_deref()).await {
        Ok(tx) => tx,
        Err(r) => return r,
    };
    let s = match signed_in(&state, &tenant, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    // Asked in another session than this one (another sign-in replaced it since).
    if !session::tx_bound(
        &state,
        &tenant,
        &headers,
        &tx.id,
        &tx.csrf,
        TxPurpose::Consent { session: &s.id_hash },
    ) {
        return step_expired(&tenant);
    }
    consent_page(&state, &tenant, &tx)
}

pub async fn consent_submit(
    State(state): State<AppState>,
    ConsentForm(Form { tenant, fields: f, tx }, s): ConsentForm,
) -> Response {
    match store::sessions::end_transaction(&state.db, &secret_hash(&tx.id)).await {
        Ok(true) => {}
        Ok(false) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                &tenant.name,
                "This request was already answered.",
            );
        }
        Err(e) => return internal(&tenant, &e),
    }
    if field(&f, "decision") != Some("allow") {
        return error_redirect(
            &state,
            &tenant,
            &tx.req.redirect_uri,
            tx.req.state.as_deref(),
            "access_denied",
            "the user denied access",
        );
    }
    if let Err(e) = store::consents::put(
        &state.db,
        &tenant.id,
        &s.user_id,
        &tx.client.id,
        &tx.req.scopes.join(" "),
    )
    .await
    {
        return internal(&tenant, &e);
    }
    issue_code(&state, &tenant, tx.req, &s).await
}

/// The second-factor form; with a button for a security key or passkey when the state
/// token's user has one.
async fn mfa_page(
    state: &AppState,
    tenant: &Tenant,
    tx: &Tx,
    token: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let webauthn = match authn::webauthn::offered(state, tenant, &tx.client, token, "page").await {
        Ok(w) => w,
        Err(AuthnError::Internal(e)) => return internal(tenant, &e),
        Err(_) => false,
    };
    let issuer = state.config.issuer(&tenant.slug);
    let ctx = minijinja::context! {
        tenant_name => &tenant.name,
        action => format!("{issuer}/login/mfa"),
        webauthn_options => webauthn.then(|| format!("{issuer}/login/webauthn/options")),
        webauthn_action => webauthn.then(|| format!("{issuer}/login/webauthn")),
        totp => tenant.policy.allows(crate::mfa::KIND_TOTP),
        tx => &tx.id,
        csrf => &tx.csrf,
        state => token,
        error => error,
    };
    page(status, "mfa.html", ctx, Some(&tx.req.redirect_uri))
}

/// The second-factor step of the login page: the same state machine and throttling as the
/// sign-in API; a session (with `acr` mfa) starts only after it.
pub async fn mfa_submit(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    LoginForm(Form { tenant, fields: f, tx }): LoginForm,
) -> Response {
    let token = field(&f, "state").unwrap_or_default().to_string();
    let kind = field(&f, "kind").unwrap_or("totp");
    let code = zeroize::Zeroizing::new(field(&f, "code").unwrap_or_default().to_string());
    let ok = match authn::verify_factor(&state, &tenant, &tx.client, &token, "page", kind, &code).await {
        Ok(ok) => ok,
        Err(AuthnError::InvalidFactor | AuthnError::InvalidCredentials) => {
            return mfa_page(
                &state,
                &tenant,
                &tx,
                &token,
                StatusCode::UNAUTHORIZED,
                Some("That code is not valid."),
            )
            .await;
        }
        Err(AuthnError::Busy) => {
            return error_page(StatusCode::SERVICE_UNAVAILABLE, &tenant.name, "The service is busy.");
        }
        Err(AuthnError::Internal(e)) => return internal(&tenant, &e),
    };
    match password::after_factor(&state, &tenant, &tx, &ok, authn::AMR_MFA).await {
        Ok(Some(token)) => password::page_for(&state, &tenant, &tx, &token, StatusCode::OK, &[]),
        Ok(None) => complete(&state, &tenant, tx, &headers, ip, &ok, authn::AMR_MFA, authn::ACR_MFA).await,
        Err(e) => step_failed(&tenant, e),
    }
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Response {
    let mut r = (status, v.to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_error(status: StatusCode, message: &str) -> Response {
    json_response(status, serde_json::json!({ "error": message }))
}

/// `POST /login/webauthn/options` (form fields `tx`, `csrf`, `state`): the assertion request
/// for `navigator.credentials.get`, for the user of the login page's state token.
pub async fn webauthn_options(
    State(state): State<AppState>,
    LoginForm(Form { tenant, fields: f, tx }): LoginForm,
) -> Response {
    let token = field(&f, "state").unwrap_or_default();
    options_json(
        &tenant,
        authn::webauthn::options(&state, &tenant, &tx.client, token, "page").await,
    )
}

/// A WebAuthn ceremony's options for the page's script, or the JSON error it shows.
fn options_json<T: serde::Serialize>(tenant: &Tenant, options: Result<T, AuthnError>) -> Response {
    match options.map(serde_json::to_value) {
        Ok(Ok(v)) => json_response(StatusCode::OK, v),
        Ok(Err(e)) => internal(tenant, &e),
        Err(AuthnError::Internal(e)) => internal(tenant, &e),
        Err(AuthnError::Busy) => json_error(StatusCode::SERVICE_UNAVAILABLE, "The service is busy."),
        Err(_) => json_error(
            StatusCode::UNAUTHORIZED,
            "This sign-in has expired. Please start again.",
        ),
    }
}

/// `POST /login/webauthn` (form fields `tx`, `csrf`, `state`, `credential` — the assertion as
/// JSON): on success the session starts as after any second factor, and the answer is
/// `{"redirect": URL}` for the page's script to follow (with the session cookie set).
pub async fn webauthn_submit(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    LoginForm(Form { tenant, fields: f, tx }): LoginForm,
) -> Response {
    let token = field(&f, "state").unwrap_or_default().to_string();
    let credential = field(&f, "credential")
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        .unwrap_or(serde_json::Value::Null);
    let (ok, amr) = match authn::webauthn::verify(&state, &tenant, &tx.client, &token, "page", &credential).await {
        Ok(x) => x,
        Err(AuthnError::InvalidFactor | AuthnError::InvalidCredentials) => {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "That security key or passkey was not accepted.",
            );
        }
        Err(AuthnError::Busy) => return json_error(StatusCode::SERVICE_UNAVAILABLE, "The service is busy."),
        Err(AuthnError::Internal(e)) => return internal(&tenant, &e),
    };
    let amr = amr.join(" ");
    match password::after_factor(&state, &tenant, &tx, &ok, &amr).await {
        // The script posts `state` with the page's tx and csrf to `action`, which shows the page.
        Ok(Some(token)) => json_response(
            StatusCode::OK,
            serde_json::json!({"continue": {
                "action": format!("{}/login/password", state.config.issuer(&tenant.slug)),
                "state": token,
            }}),
        ),
        Ok(None) => redirect_as_json(complete(&state, &tenant, tx, &headers, ip, &ok, &amr, authn::ACR_MFA).await),
        Err(AuthnError::Busy) => json_error(StatusCode::SERVICE_UNAVAILABLE, "The service is busy."),
        Err(e) => internal(&tenant, &e),
    }
}

/// fetch() cannot usefully follow a redirect to another origin: the page's script gets the
/// URL as `{"redirect": URL}` (with the session cookies set) and navigates itself.
fn redirect_as_json(r: Response) -> Response {
    if r.status() != StatusCode::SEE_OTHER {
        return r;
    }
    let Some(location) = r.headers().get(header::LOCATION).and_then(|l| l.to_str().ok()) else {
        return r;
    };
    let mut out = json_response(StatusCode::OK, serde_json::json!({ "redirect": location }));
    for c in r.headers().get_all(header::SET_COOKIE) {
        out.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    out
}
