//! `/admin/v1/tenants`

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{Page, PageQuery, Principal, managed_tenant, page};
use crate::app::AppState;
use crate::error::Error;
use crate::http::Problem;
use crate::http::extract::{Json, Path, Query};
use crate::store;
use crate::tenants::{self, Policy, SYSTEM, Tenant};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub slug: String,
    pub name: Option<String>,
    pub policy: Option<Policy>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    pub name: Option<String>,
    /// Fields given replace the tenant's; others keep their value.
    pub policy: Option<Policy>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub issuer: String,
    pub policy: Policy,
    pub created_at: i64,
}

pub fn view(state: &AppState, t: &Tenant) -> TenantView {
    TenantView {
        id: t.id.clone(),
        slug: t.slug.clone(),
        name: t.name.clone(),
        issuer: state.config.issuer(&t.slug),
        policy: t.policy.clone(),
        created_at: t.created_at,
    }
}

/// Create a tenant (platform admins).
#[utoipa::path(post, path = "/admin/v1/tenants", request_body = NewTenant,
    responses((status = 201, body = TenantView), (status = 409, description = "slug taken"), (status = 422, description = "invalid")))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    Json(body): Json<NewTenant>,
) -> Result<(StatusCode, Json<TenantView>), Problem> {
    who.require_platform()?;
    if body.slug == SYSTEM {
        return Err(Problem::validation("slug", "is reserved"));
    }
    let policy = body.policy.unwrap_or_default();
    let data = super::changes::bounded(serde_json::json!({
        "slug": body.slug, "name": body.name.as_deref().unwrap_or(&body.slug), "policy": policy,
    }));
    let event = |id: &str| {
        crate::audit::Event::new(id, "tenant.created")
            .actor(who.client_id())
            .data(data.clone())
    };
    let t = tenants::create(&state, &body.slug, body.name.as_deref(), policy, &event).await?;
    tracing::info!(tenant = %t.slug, by = %who.client_id(), "tenant created");
    Ok((StatusCode::CREATED, Json(view(&state, &t))))
}

/// List tenants (platform admins).
#[utoipa::path(get, path = "/admin/v1/tenants", params(PageQuery), responses((status = 200, body = Page<TenantView>)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<TenantView>>, Problem> {
    who.require_platform()?;
    let limit = q.limit()?;
    let rows = store::tenants::list(&state.db, &q.after()?, limit + 1).await?;
    let mut tenants = Vec::with_capacity(rows.len());
    for r in rows {
        tenants.push(Tenant::try_from(r)?);
    }
    Ok(Json(page(tenants, limit, |t| t.slug.clone(), |t| view(&state, t))))
}

#[utoipa::path(get, path = "/admin/v1/tenants/{slug}", params(("slug" = String, Path)), responses((status = 200, body = TenantView), (status = 404)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    Path(slug): Path<String>,
) -> Result<Json<TenantView>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    Ok(Json(view(&state, &t)))
}

/// Change name or policy. Only platform admins set `argon2`.
#[utoipa::path(patch, path = "/admin/v1/tenants/{slug}", params(("slug" = String, Path)), request_body = TenantPatch,
    responses((status = 200, body = TenantView), (status = 403), (status = 404), (status = 422)))]
pub async fn update(
    State(state): State<AppState>,
    who: Principal,
    Path(slug): Path<String>,
    Json(body): Json<TenantPatch>,
) -> Result<Json<TenantView>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let before = serde_json::json!({"name": t.name, "policy": t.policy});
    let mut policy = t.policy.clone();
    let mut name = t.name.clone();
    if let Some(n) = body.name {
        tenants::check_name(&n)?;
        name = n;
    }
    if let Some(p) = body.policy {
        if p.argon2.is_some() && !who.is_platform() {
            return Err(Problem::forbidden("only platform admins set the argon2 policy"));
        }
        policy.merge(&p);
    }
    policy
        .validate(state.config.argon2_max_m_kib)
        .map_err(|(f, r)| Problem::from(Error::invalid(f, r)))?;
    let mut tx = state.db.begin_write().await?;
    store::tenants::update(
        &mut *tx,
        &t.id,
        &name,
        &serde_json::to_string(&policy).unwrap_or_default(),
    )
    .await?;
    super::commit_audited(
        &state,
        tx,
        &who,
        &t.id,
        "tenant.updated",
        None,
        super::changes::changes(&before, &serde_json::json!({"name": name, "policy": policy})),
    )
    .await?;
    state.tenants.forget(&t);
    let t = state.tenants.by_id(&t.id).await?.ok_or_else(Problem::not_found)?;
    Ok(Json(view(&state, &t)))
}

/// Delete a tenant (platform admins). Its slug is never reused.
#[utoipa::path(delete, path = "/admin/v1/tenants/{slug}", params(("slug" = String, Path)), responses((status = 204), (status = 404)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    Path(slug): Path<String>,
) -> Result<StatusCode, Problem> {
    who.require_platform()?;
    let t = managed_tenant(&state, &who, &slug).await?;
    if t.is_system() {
        return Err(Problem::forbidden("the system tenant cannot be deleted"));
    }
    let mut tx = state.db.begin_write().await?;
    store::tenants::delete(&mut *tx, &t.id).await?;
    super::commit_audited(
        &state,
        tx,
        &who,
        &t.id,
        "tenant.deleted",
        None,
        serde_json::json!({"slug": t.slug}),
    )
    .await?;
    state.tenants.forget(&t);
    Ok(StatusCode::NO_CONTENT)
}
