//! CORS for `/token`, `/userinfo` and `/revoke`: a response is readable from the web origins
//! of the client it answers (`web_origins`), once the handler knows that client ([`for_client`]).
//! A preflight, which names no client, and an error answered before any client was known are
//! allowed for the origins of every client of the tenant. `/account` and `/admin` never answer
//! cross-origin requests.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::clients::Client;
use crate::store;

/// The client a response answers: its origins alone may read it.
#[derive(Clone)]
struct ForClient(Arc<Client>);

/// Marks `r` as the answer to `client`, for [`cors`].
pub fn for_client(client: &Arc<Client>, r: impl IntoResponse) -> Response {
    let mut r = r.into_response();
    r.extensions_mut().insert(ForClient(client.clone()));
    r
}

async fn tenant_origins(state: &AppState, slug: &str) -> Option<Arc<Vec<String>>> {
    if let Some(o) = state.origins.get(&slug.to_string()) {
        return Some(o);
    }
    let tenant = state.tenants.by_slug(slug).await.ok().flatten()?;
    let rows: Vec<(String,)> = sqlx::query_as("select web_origins from clients where tenant_id = $1")
        .bind(&tenant.id)
        .fetch_all(&state.db.pool)
        .await
        .ok()?;
    let mut all = Vec::new();
    for (list,) in rows {
        all.extend(store::parse_list(&list).ok()?);
    }
    let all = Arc::new(all);
    state.origins.put(slug.to_string(), all.clone());
    Some(all)
}

pub async fn cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    // Inside the nested `/t/{tenant}` router the URI is stripped; the original names the tenant.
    let path = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| req.uri().path().to_string(), |u| u.path().to_string());
    let slug = path
        .trim_start_matches("/t/")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let some_clients = async |o: &str| {
        tenant_origins(&state, &slug)
            .await
            .is_some_and(|list| list.iter().any(|x| x == o))
    };
    let Some(o) = origin.as_deref() else {
        return next.run(req).await;
    };
    if req.method() == Method::OPTIONS {
        let allowed = some_clients(o).await;
        let mut r = if allowed {
            StatusCode::NO_CONTENT.into_response()
        } else {
            StatusCode::FORBIDDEN.into_response()
        };
        if allowed {
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type"),
            );
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
            allow(h, origin.as_deref());
        }
        return r;
    }
    let mut r = next.run(req).await;
    let readable = match r.extensions().get::<ForClient>() {
        Some(ForClient(c)) => c.web_origins.iter().any(|x| x == o),
        // Refused before the client was known (malformed, bad credentials, bad token).
        None => !r.status().is_success() && some_clients(o).await,
    };
    if readable {
        allow(r.headers_mut(), origin.as_deref());
    }
    r
}

fn allow(h: &mut axum::http::HeaderMap, origin: Option<&str>) {
    if let Some(v) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}
