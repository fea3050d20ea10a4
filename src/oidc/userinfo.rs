//! `/userinfo` (OIDC Core §5.3): claims by scope, for a user access token of this tenant.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::http::extract::Path;
use crate::store;

fn refuse(status: StatusCode, www: &'static str) -> Response {
    let mut r = status.into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(www));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub async fn userinfo(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    _body: Bytes,
) -> Response {
    let Some(token) = crate::http::bearer(&headers) else {
        return refuse(StatusCode::UNAUTHORIZED, "Bearer realm=\"unicred\"");
    };
    let invalid = || {
        refuse(
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"unicred\", error=\"invalid_token\"",
        )
    };
    let Ok((tenant, claims)) = crate::tokens::access::validate(&state, token, None).await else {
        return invalid();
    };
    if tenant.slug != slug || claims.is_client_token() {
        return invalid();
    }
    if !claims.has_scope("openid") {
        return refuse(
            StatusCode::FORBIDDEN,
            "Bearer realm=\"unicred\", error=\"insufficient_scope\", scope=\"openid\"",
        );
    }
    let user = match store::users::get(&state.db, &tenant.id, &claims.sub).await {
        Ok(Some(u)) => u,
        _ => return invalid(),
    };
    let mut body = serde_json::json!({ "sub": user.id });
    if claims.has_scope("profile") {
        body["preferred_username"] = user.username.clone().into();
        if let Some(n) = &user.display_name {
            body["name"] = n.clone().into();
        }
        body["updated_at"] = user.updated_at.into();
    }
    if claims.has_scope("email")
        && let Some(e) = &user.email
    {
        body["email"] = e.clone().into();
        body["email_verified"] = false.into();
    }
    let mut r = axum::Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Readable cross-origin from the token's client's origins only.
    match state.clients.get(&claims.client_id).await {
        Ok(Some(client)) => super::cors::for_client(&client, r),
        _ => r,
    }
}
