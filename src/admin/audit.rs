//! `/admin/v1/tenants/{slug}/audit`: query, export (JSON lines), verify, checkpoint.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Principal, managed_tenant};
use crate::app::AppState;
use crate::audit::{self, AuditError, Checkpoint, StoredEvent, Verification};
use crate::http::Problem;
use crate::http::extract::Query;
use crate::http::extract::{Json, Path};

impl From<AuditError> for Problem {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Store(crate::store::StoreError::NotFound) => Problem::not_found(),
            AuditError::Broken(at) => Problem::new(
                StatusCode::CONFLICT,
                "audit-chain-broken",
                "The audit chain does not verify",
            )
            .detail(format!("broken at sequence {at}")),
            AuditError::NoCheckpoint(_) => Problem::new(
                StatusCode::CONFLICT,
                "audit-no-checkpoint",
                "No signed checkpoint to prune to",
            ),
            other => Problem::internal(&other),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Events after this sequence number (the previous page's `next_after`).
    pub after: Option<i64>,
    /// Only events of this type, e.g. `signin.failure`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// Only events about this user id.
    pub user_id: Option<String>,
    /// Page size (default 50, at most 200).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub items: Vec<StoredEvent>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

/// Audit events in sequence order, with cursor paging.
#[utoipa::path(get, path = "/admin/v1/tenants/{slug}/audit", params(("slug" = String, Path), ListQuery),
    responses((status = 200, body = EventPage)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Path(slug): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<EventPage>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let limit = match q.limit {
        None => 50,
        Some(n) if (1..=200).contains(&n) => n,
        Some(_) => return Err(Problem::validation("limit", "must be between 1 and 200")),
    };
    let short = |v: &Option<String>| v.as_ref().is_none_or(|s| !s.is_empty() && s.len() <= 256);
    if !short(&q.kind) {
        return Err(Problem::validation("type", "must be 1 to 256 characters"));
    }
    if !short(&q.user_id) {
        return Err(Problem::validation("user_id", "must be 1 to 256 characters"));
    }
    let (items, next_after) = audit::list(
        &state.db,
        &t.id,
        &audit::Query {
            after: q.after.unwrap_or(0),
            kind: q.kind,
            user_id: q.user_id,
            limit,
        },
    )
    .await?;
    Ok(Json(EventPage { items, next_after }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// First sequence number (default 1).
    pub from: Option<i64>,
    /// Last sequence number (default: the end of the log).
    pub to: Option<i64>,
}

/// The log as JSON lines (`application/x-ndjson`), one event per line in sequence order,
/// streamed page by page. Each line holds every hashed field, so it can be re-verified offline.
#[utoipa::path(get, path = "/admin/v1/tenants/{slug}/audit/export", params(("slug" = String, Path), ExportQuery),
    responses((status = 200, content_type = "application/x-ndjson", body = StoredEvent),
        (status = 503, description = "too many whole-log reads at once; see Retry-After")))]
pub async fn export(
    State(state): State<AppState>,
    who: Principal,
    Path(slug): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let permit = state.audit.scan_permit().ok_or_else(Problem::busy)?;
    let stream = audit::export(state.db.clone(), t.id.clone(), q.from.unwrap_or(1), q.to).map(move |page| {
        let _held_until_the_stream_ends = &permit;
        page
    });
    let mut r = axum::body::Body::from_stream(stream).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(r)
}

/// Verifies the tenant's hash chain: `{"ok":true,"events","seq","head"}` or
/// `{"ok":false,"broken_at","reason"}`.
#[utoipa::path(get, path = "/admin/v1/tenants/{slug}/audit/verify", params(("slug" = String, Path)),
    responses((status = 200, body = Verification),
        (status = 503, description = "too many whole-log reads at once; see Retry-After")))]
pub async fn verify(
    State(state): State<AppState>,
    who: Principal,
    Path(slug): Path<String>,
) -> Result<Json<Verification>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let _permit = state.audit.scan_permit().ok_or_else(Problem::busy)?;
    Ok(Json(audit::verify(&state.db, &t.id).await?))
}

/// Signs the chain's current head with the tenant's audit key (see `{issuer}/audit-keys.json`).
#[utoipa::path(post, path = "/admin/v1/tenants/{slug}/audit/checkpoint", params(("slug" = String, Path)),
    responses((status = 201, body = Checkpoint), (status = 409, description = "the chain does not verify"),
        (status = 503, description = "too many scans of the log at once")))]
pub async fn checkpoint(
    State(state): State<AppState>,
    who: Principal,
    Path(slug): Path<String>,
) -> Result<(StatusCode, Json<Checkpoint>), Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    // It verifies the chain from the last checkpoint: a scan like verify and export.
    let _permit = state.audit.scan_permit().ok_or_else(Problem::busy)?;
    let c = state.audit.checkpoint(&t.id).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

/// `GET /t/{tenant}/audit-keys.json`: the tenant's audit checkpoint keys (JWKS), public and
/// cacheable. Keys are never withdrawn, so old checkpoints stay verifiable — also after the
/// tenant is deleted.
pub async fn audit_keys(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> Result<Response, crate::http::OAuthError> {
    let tenant_id = match state.tenants.by_slug(&slug).await? {
        Some(t) => t.id.clone(),
        None => crate::store::tenants::id_ever(&state.db, &slug)
            .await?
            .ok_or_else(crate::http::OAuthError::not_found)?,
    };
    let jwks = audit::audit_keys_jwks(&state.db, &tenant_id)
        .await
        .map_err(|e| crate::http::OAuthError::server_error(&e))?;
    let mut r = Json(jwks).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    Ok(r)
}
