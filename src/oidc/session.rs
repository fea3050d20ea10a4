//! SSO session and device cookies. Per tenant; `HttpOnly`, `SameSite=Lax`, and `Secure` with
//! the `__Host-` prefix when `public_url` is https. Cookie values are random (sessions) or
//! HMAC-signed (devices); the database keeps only SHA-256 of session ids.

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use crate::app::AppState;
use crate::store::{self, sessions::SessionRow};
use crate::tenants::Tenant;

fn prefix(state: &AppState) -> &'static str {
    if state.config.secure_cookies() { "__Host-" } else { "" }
}

pub fn session_cookie_name(state: &AppState, tenant: &Tenant) -> String {
    format!("{}unicred-session-{}", prefix(state), tenant.slug)
}

fn device_cookie_name(state: &AppState, tenant: &Tenant) -> String {
    format!("{}unicred-device-{}", prefix(state), tenant.slug)
}

fn browser_cookie_name(state: &AppState, tenant: &Tenant) -> String {
    format!("{}unicred-browser-{}", prefix(state), tenant.slug)
}

/// What a login transaction's forms are for: a transaction started to sign in cannot be used
/// to consent, and the reverse (a consent form would otherwise skip a forced sign-in). A
/// consent is also bound to the session it was asked in (SHA-256 of its id): if another
/// sign-in replaced that session in the browser meanwhile, the form is refused instead of
/// granting the new session's user what the old one was checked for.
#[derive(Clone, Copy)]
pub enum TxPurpose<'a> {
    Login,
    Consent { session: &'a str },
}

/// The browser's login binding: a random value in a cookie that each login transaction's CSRF
/// token is derived from, so a transaction's forms work only in the browser that started it.
/// Without it, anyone could start a transaction, read its form and have a victim's browser post
/// it (login CSRF: the victim signed in to the attacker's account). Returns the value (the
/// request's own, or a new one) and the `Set-Cookie` that keeps it as long as the transaction.
pub fn browser_binding(state: &AppState, tenant: &Tenant, headers: &HeaderMap) -> (String, HeaderValue) {
    let name = browser_cookie_name(state, tenant);
    let value = cookie(headers, &name)
        .filter(|v| v.len() == 43 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .unwrap_or_else(crate::crypto::random_token::<32>);
    let set = set_cookie(state, &name, &value, crate::oidc::authorize::TX_TTL);
    (value, set)
}

/// A transaction's CSRF token: bound to the browser, the transaction and its purpose.
pub fn tx_csrf(binding: &str, tx: &str, purpose: TxPurpose<'_>) -> String {
    let purpose = match purpose {
        TxPurpose::Login => "login".to_string(),
        TxPurpose::Consent { session } => format!("consent {session}"),
    };
    crate::crypto::secret_hash(format!("{purpose}.{binding}.{tx}"))
}

/// Whether the request comes from the browser that started transaction `tx` for `purpose`.
pub fn tx_bound(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    tx: &str,
    csrf: &str,
    purpose: TxPurpose<'_>,
) -> bool {
    use subtle::ConstantTimeEq;
    cookie(headers, &browser_cookie_name(state, tenant))
        .is_some_and(|b| bool::from(tx_csrf(&b, tx, purpose).as_bytes().ct_eq(csrf.as_bytes())))
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() <= 512)
}

fn set_cookie(state: &AppState, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.config.secure_cookies() { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are URL-safe")
}

/// The live session named by the request's cookie (and mark it used).
pub async fn current(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
) -> Result<Option<SessionRow>, store::StoreError> {
    let Some(raw) = cookie(headers, &session_cookie_name(state, tenant)) else {
        return Ok(None);
    };
    let idle = tenant.policy.session_idle_seconds.unwrap_or(1800) as i64;
    store::sessions::touch(&state.db, &tenant.id, &crate::crypto::secret_hash(&raw), idle).await
}

/// Starts a session with a new id (ending the one the browser had, whose refresh-token
/// families move to the new one if it was the same user's) and returns the `Set-Cookie`
/// headers: the session and a signed device cookie.
pub async fn start(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    user_id: &str,
    throttle_key: &str,
    amr: &str,
    acr: &str,
) -> Result<(SessionRow, Vec<HeaderValue>), store::StoreError> {
    let raw = crate::crypto::random_token::<32>();
    let now = store::now();
    let max = tenant.policy.session_max_seconds.unwrap_or(12 * 3600) as i64;
    let row = SessionRow {
        id_hash: crate::crypto::secret_hash(&raw),
        tenant_id: tenant.id.clone(),
        user_id: user_id.to_string(),
        auth_time: now,
        amr: amr.to_string(),
        acr: acr.to_string(),
        created_at: now,
        last_seen: now,
        expires_at: now + max,
    };
    match cookie(headers, &session_cookie_name(state, tenant)) {
        // The browser's earlier session ends in the transaction that starts this one.
        Some(old) => {
            let mut tx = state.db.begin_write().await?;
            let old = crate::crypto::secret_hash(&old);
            store::sessions::hand_over(&mut tx, &tenant.id, &old, &row.id_hash, user_id).await?;
            store::sessions::create(&mut *tx, &row).await?;
            tx.commit().await?;
        }
        None => store::sessions::create(&state.db.pool, &row).await?,
    }
    let device = device_cookie(state, tenant, throttle_key);
    let cookies = vec![
        set_cookie(state, &session_cookie_name(state, tenant), &raw, max),
        set_cookie(state, &device_cookie_name(state, tenant), &device, 365 * 86400),
    ];
    Ok((row, cookies))
}

/// Ends the browser's session (and the refresh tokens bound to it); the cookie is cleared.
pub async fn end(state: &AppState, tenant: &Tenant, headers: &HeaderMap) -> Result<HeaderValue, store::StoreError> {
    if let Some(raw) = cookie(headers, &session_cookie_name(state, tenant)) {
        let h = crate::crypto::secret_hash(&raw);
        store::sessions::delete(&state.db.pool, &tenant.id, &h).await?;
        store::refresh::revoke_session(&state.db.pool, &h).await?;
    }
    Ok(set_cookie(state, &session_cookie_name(state, tenant), "", 0))
}

/// `b64(tenant_id|throttle_key|device_id|issued).hmac` — proof this browser completed a full
/// sign-in for that account.
fn device_cookie(state: &AppState, tenant: &Tenant, throttle_key: &str) -> String {
    let payload = format!(
        "{}|{}|{}|{}",
        tenant.id,
        throttle_key,
        crate::crypto::random_token::<12>(),
        store::now()
    );
    let (tag, v) = state.keyring.hmac_current(&[b"device", payload.as_bytes()]);
    format!("{}.{v}.{tag}", B64.encode(payload))
}

/// The device id if the request carries a valid device cookie for this tenant and account.
pub fn device_for(state: &AppState, tenant: &Tenant, headers: &HeaderMap, throttle_key: &str) -> Option<String> {
    let raw = cookie(headers, &device_cookie_name(state, tenant))?;
    let mut parts = raw.splitn(3, '.');
    let (payload, version, tag) = (parts.next()?, parts.next()?, parts.next()?);
    let payload = String::from_utf8(B64.decode(payload).ok()?).ok()?;
    let version: u32 = version.parse().ok()?;
    if !state
        .keyring
        .hmac_verify(version, &[b"device", payload.as_bytes()], tag)
    {
        return None;
    }
    let fields: Vec<&str> = payload.split('|').collect();
    match fields.as_slice() {
        [t, key, device, _] if *t == tenant.id && *key == throttle_key => Some(device.to_string()),
        _ => None,
    }
}
