//! RP-initiated logout 1.0: with a valid `id_token_hint` for the signed-in user the session
//! ends at once and the browser goes to an exactly registered `post_logout_redirect_uri`;
//! without one, or with another user's, the user confirms on a page first (so a third-party
//! page cannot sign people out, not even with an ID token of its own).

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use crate::app::AppState;
use crate::http::extract::Path;
use crate::tenants::Tenant;
use crate::tokens::jwt;

use super::authorize::{internal, redirect_to, with_cookies};
use super::pages::{error_page, page};
use super::session;

#[derive(Deserialize)]
struct Hint {
    aud: String,
    sub: String,
}

/// The client and user an ID token (possibly expired) of this tenant was issued to.
async fn hint_claims(state: &AppState, tenant: &Tenant, token: &str) -> Option<Hint> {
    let peek = jwt::peek(token).ok()?;
    // An ID token (`JWT`), never an access token (`at+jwt`), which carries iss, aud and sub too.
    if peek.typ.as_deref() != Some("JWT") {
        return None;
    }
    let keys = state.keys.for_tenant(&tenant.id).await.ok()?;
    let key = keys.verify.get(&peek.kid)?;
    if key.alg.jwt() != peek.alg {
        return None;
    }
    let mut v = jsonwebtoken::Validation::new(peek.alg);
    v.validate_exp = false;
    v.validate_aud = false;
    v.set_issuer(&[state.config.issuer(&tenant.slug)]);
    v.set_required_spec_claims(&["iss", "aud", "sub"]);
    jsonwebtoken::decode::<Hint>(token, &key.key, &v).ok().map(|d| d.claims)
}

fn params(raw: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(raw)
        .take(16)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A CSRF token for the confirmation form, bound to this browser's session cookie.
fn csrf(state: &AppState, tenant: &Tenant, headers: &HeaderMap) -> String {
    let sid = session::cookie(headers, &session::session_cookie_name(state, tenant)).unwrap_or_default();
    state
        .keyring
        .hmac_current(&[b"logout", tenant.id.as_bytes(), sid.as_bytes()])
        .0
}

async fn logout(state: &AppState, slug: &str, headers: &HeaderMap, raw: &[u8], confirmed_post: bool) -> Response {
    let Ok(Some(tenant)) = state.tenants.by_slug(slug).await else {
        return error_page(StatusCode::NOT_FOUND, "unicred", "Unknown organisation.");
    };
    let p = params(raw);
    let get = |k: &str| {
        p.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let action = format!("{}/logout", state.config.issuer(&tenant.slug));
    let done = || {
        page(
            StatusCode::OK,
            "logout.html",
            minijinja::context! { tenant_name => &tenant.name, done => true },
            None,
        )
    };
    let confirm_page = || {
        page(
            StatusCode::OK,
            "logout.html",
            minijinja::context! { tenant_name => &tenant.name, done => false, action, csrf => csrf(state, &tenant, headers) },
            None,
        )
    };
    match get("id_token_hint") {
        Some(hint) => {
            let Some(Hint { aud: client_id, sub }) = hint_claims(state, &tenant, hint).await else {
                return error_page(StatusCode::BAD_REQUEST, &tenant.name, "The id_token_hint is not valid.");
            };
            match session::current(state, &tenant, headers).await {
                Ok(Some(s)) if s.user_id != sub => return confirm_page(),
                Ok(_) => {}
                Err(e) => return internal(&tenant, &e),
            }
            let target = match get("post_logout_redirect_uri") {
                None => None,
                Some(uri) => match state.clients.get(&client_id).await {
                    Ok(Some(c)) if c.tenant_id == tenant.id && c.post_logout_redirect_uris.iter().any(|u| u == uri) => {
                        Some(uri.to_string())
                    }
                    _ => {
                        return error_page(
                            StatusCode::BAD_REQUEST,
                            &tenant.name,
                            "The post_logout_redirect_uri is not registered.",
                        );
                    }
                },
            };
            let _ = super::audit(
                state,
                &tenant.id,
                &client_id,
                None,
                "session.ended",
                serde_json::json!({"via": "rp_logout"}),
            )
            .await;
            let cleared = match session::end(state, &tenant, headers).await {
                Ok(c) => c,
                Err(e) => return internal(&tenant, &e),
            };
            let r = match target {
                Some(uri) => {
                    let st = get("state");
                    let params: Vec<(&str, &str)> = st.map(|s| vec![("state", s)]).unwrap_or_default();
                    redirect_to(&uri, &params)
                }
                None => done(),
            };
            with_cookies(r, vec![cleared])
        }
        None if confirmed_post => {
            let expected = csrf(state, &tenant, headers);
            let ok = get("csrf")
                .is_some_and(|c| bool::from(subtle::ConstantTimeEq::ct_eq(c.as_bytes(), expected.as_bytes())));
            if !ok {
                return error_page(
                    StatusCode::FORBIDDEN,
                    &tenant.name,
                    "The form has expired. Please try again.",
                );
            }
            match session::end(state, &tenant, headers).await {
                Ok(c) => with_cookies(done(), vec![c]),
                Err(e) => internal(&tenant, &e),
            }
        }
        None => confirm_page(),
    }
}

pub async fn get(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    logout(&state, &slug, &headers, q.unwrap_or_default().as_bytes(), false).await
}

pub async fn post(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let confirmed = form_urlencoded::parse(&body).any(|(k, v)| k == "confirm" && v == "yes");
    logout(&state, &slug, &headers, &body, confirmed).await
}
