//! `/admin/v1/tenants/{slug}/clients`

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::{Page, PageQuery, Principal, managed_tenant, page};
use crate::app::AppState;
use crate::clients::{self, AuthMethod, Client, ClientInput};
use crate::http::Problem;
use crate::http::extract::{Json, Path, Query};
use crate::store;
use crate::tokens::Alg;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClientView {
    pub client_id: String,
    pub name: String,
    pub token_endpoint_auth_method: AuthMethod,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    pub web_origins: Vec<String>,
    pub authn_api: bool,
    pub consent_required: bool,
    pub id_token_signed_response_alg: Option<Alg>,
    pub created_at: i64,
    /// Only in the responses to create and rotate: shown once, never retrievable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

fn view(c: &Client, secret: Option<String>) -> ClientView {
    ClientView {
        client_id: c.id.clone(),
        name: c.name.clone(),
        token_endpoint_auth_method: c.auth_method,
        redirect_uris: c.redirect_uris.clone(),
        post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
        grant_types: c.grant_types.clone(),
        scopes: c.scopes.clone(),
        resources: c.resources.clone(),
        web_origins: c.web_origins.clone(),
        authn_api: c.authn_api,
        consent_required: c.consent_required,
        id_token_signed_response_alg: c.id_token_alg,
        created_at: c.created_at,
        client_secret: secret,
    }
}

async fn client(state: &AppState, tenant_id: &str, id: &str) -> Result<Arc<Client>, Problem> {
    let c = store::clients::get(&state.db, id)
        .await?
        .filter(|c| c.tenant_id == tenant_id)
        .ok_or_else(Problem::not_found)?;
    Ok(Arc::new(Client::try_from(c)?))
}

#[utoipa::path(post, path = "/admin/v1/tenants/{slug}/clients", params(("slug" = String, Path)), request_body = ClientInput,
    responses((status = 201, body = ClientView), (status = 403), (status = 422)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    Path(slug): Path<String>,
    Json(body): Json<ClientInput>,
) -> Result<(StatusCode, Json<ClientView>), Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let (c, secret) = clients::new_client(&state, &t, body, who.is_platform())?;
    let mut tx = state.db.begin_write().await?;
    store::clients::create(&mut *tx, &c.to_row()).await?;
    super::commit_audited(
        &state,
        tx,
        &who,
        &t.id,
        "client.created",
        None,
        serde_json::to_value(view(&c, None)).unwrap_or_default(),
    )
    .await?;
    tracing::info!(client_id = %c.id, tenant = %t.slug, "client created");
    Ok((StatusCode::CREATED, Json(view(&c, secret))))
}

#[utoipa::path(get, path = "/admin/v1/tenants/{slug}/clients", params(("slug" = String, Path), PageQuery),
    responses((status = 200, body = Page<ClientView>)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Path(slug): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<ClientView>>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let limit = q.limit()?;
    let rows = store::clients::list(&state.db, &t.id, &q.after()?, limit + 1).await?;
    let mut cs = Vec::with_capacity(rows.len());
    for r in rows {
        cs.push(Client::try_from(r)?);
    }
    Ok(Json(page(cs, limit, |c| c.id.clone(), |c| view(c, None))))
}

#[utoipa::path(get, path = "/admin/v1/tenants/{slug}/clients/{client_id}", params(("slug" = String, Path), ("client_id" = String, Path)),
    responses((status = 200, body = ClientView), (status = 404)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    Path((slug, id)): Path<(String, String)>,
) -> Result<Json<ClientView>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let c = client(&state, &t.id, &id).await?;
    Ok(Json(view(&c, None)))
}

#[utoipa::path(patch, path = "/admin/v1/tenants/{slug}/clients/{client_id}", params(("slug" = String, Path), ("client_id" = String, Path)),
    request_body = ClientInput, responses((status = 200, body = ClientView), (status = 403), (status = 404), (status = 422)))]
pub async fn update(
    State(state): State<AppState>,
    who: Principal,
    Path((slug, id)): Path<(String, String)>,
    Json(body): Json<ClientInput>,
) -> Result<Json<ClientView>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let mut c = (*client(&state, &t.id, &id).await?).clone();
    // Its scopes and grants are what `bootstrap` relies on: a change could leave no platform
    // admin, and bootstrap (which only issues a new secret) could not bring one back.
    if c.platform_admin {
        return Err(Problem::forbidden(
            "the platform-admin client is managed by `unicred bootstrap`",
        ));
    }
    let before = view(&c, None);
    if body
        .token_endpoint_auth_method
        .is_some_and(|m| (m == AuthMethod::None) != c.is_public())
    {
        return Err(Problem::validation(
            "token_endpoint_auth_method",
            "cannot switch between public and confidential",
        ));
    }
    body.apply(&mut c, &t, who.is_platform())?;
    let mut tx = state.db.begin_write().await?;
    store::clients::update(&mut *tx, &c.to_row()).await?;
    super::commit_audited(
        &state,
        tx,
        &who,
        &t.id,
        "client.updated",
        None,
        super::changes::changes(
            &serde_json::to_value(before).unwrap_or_default(),
            &serde_json::to_value(view(&c, None)).unwrap_or_default(),
        ),
    )
    .await?;
    state.clients.forget(&c.id);
    Ok(Json(view(&c, None)))
}

#[utoipa::path(delete, path = "/admin/v1/tenants/{slug}/clients/{client_id}", params(("slug" = String, Path), ("client_id" = String, Path)),
    responses((status = 204), (status = 404)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let c = client(&state, &t.id, &id).await?;
    if c.platform_admin {
        return Err(Problem::forbidden(
            "the platform-admin client is managed by `unicred bootstrap`",
        ));
    }
    let mut tx = state.db.begin_write().await?;
    store::clients::delete(&mut *tx, &t.id, &c.id).await?;
    super::commit_audited(
        &state,
        tx,
        &who,
        &t.id,
        "client.deleted",
        None,
        serde_json::json!({"client_id": c.id}),
    )
    .await?;
    state.clients.forget(&c.id);
    Ok(StatusCode::NO_CONTENT)
}

/// Issue a new secret; the old one stops working.
#[utoipa::path(post, path = "/admin/v1/tenants/{slug}/clients/{client_id}/secret", params(("slug" = String, Path), ("client_id" = String, Path)),
    responses((status = 200, body = ClientView), (status = 404), (status = 422)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    who: Principal,
    Path((slug, id)): Path<(String, String)>,
) -> Result<Json<ClientView>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let c = client(&state, &t.id, &id).await?;
    let (secret, tag, version) = clients::rotated_secret(&state.keyring, &c)?;
    let mut tx = state.db.begin_write().await?;
    store::clients::set_secret(&mut *tx, &c.id, Some(&tag), Some(version)).await?;
    super::commit_audited(
        &state,
        tx,
        &who,
        &t.id,
        "client.secret_rotated",
        None,
        serde_json::json!({"client_id": c.id}),
    )
    .await?;
    state.clients.forget(&c.id);
    Ok(Json(view(&c, Some(secret))))
}
