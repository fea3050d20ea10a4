//! `/admin/v1/tenants/{slug}/users`

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::{Page, PageQuery, Principal, managed_tenant, page};
use crate::app::AppState;
use crate::error::Error;
use crate::http::Problem;
use crate::http::extract::{Json, Path, Query};
use crate::store::{self, users::UserRow};
use crate::users::{self, NewUser, UserView};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub username: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// `active` or `disabled`; disabling ends every session and token.
    pub status: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    pub password: String,
    #[serde(default)]
    pub temporary: bool,
}

async fn user(state: &AppState, tenant_id: &str, id: &str) -> Result<UserRow, Problem> {
    if id.len() > 64 {
        return Err(Problem::not_found());
    }
    store::users::get(&state.db, tenant_id, id)
        .await?
        .ok_or_else(Problem::not_found)
}

#[utoipa::path(post, path = "/admin/v1/tenants/{slug}/users", params(("slug" = String, Path)), request_body = NewUser,
    responses((status = 201, body = UserView), (status = 409), (status = 422)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    Path(slug): Path<String>,
    Json(body): Json<NewUser>,
) -> Result<(StatusCode, Json<UserView>), Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let u = users::create(&state, &t, body).await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&u))))
}

#[utoipa::path(get, path = "/admin/v1/tenants/{slug}/users", params(("slug" = String, Path), PageQuery),
    responses((status = 200, body = Page<UserView>)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Path(slug): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<UserView>>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let limit = q.limit()?;
    if q.q.as_ref().is_some_and(|s| s.len() > 256) {
        return Err(Problem::validation("q", "is too long"));
    }
    let rows = store::users::list(&state.db, &t.id, q.q.as_deref(), &q.after()?, limit + 1).await?;
    Ok(Json(page(rows, limit, |u| u.username.clone(), |u| UserView::from(u))))
}

#[utoipa::path(get, path = "/admin/v1/tenants/{slug}/users/{id}", params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = UserView), (status = 404)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    Path((slug, id)): Path<(String, String)>,
) -> Result<Json<UserView>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    Ok(Json(UserView::from(&user(&state, &t.id, &id).await?)))
}

#[utoipa::path(patch, path = "/admin/v1/tenants/{slug}/users/{id}", params(("slug" = String, Path), ("id" = String, Path)),
    request_body = UserPatch, responses((status = 200, body = UserView), (status = 404), (status = 409), (status = 422)))]
pub async fn update(
    State(state): State<AppState>,
    who: Principal,
    Path((slug, id)): Path<(String, String)>,
    Json(body): Json<UserPatch>,
) -> Result<Json<UserView>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let mut u = user(&state, &t.id, &id).await?;
    if let Some(name) = body.username {
        u.username = crate::username::normalize(&name).map_err(|r| Error::invalid("username", r))?;
    }
    if let Some(e) = body.email {
        users::check_email(&e)?;
        u.email = Some(e);
    }
    if let Some(d) = body.display_name {
        users::check_display_name(&d)?;
        u.display_name = Some(d);
    }
    if let Some(s) = body.status {
        if s != "active" && s != "disabled" {
            return Err(Problem::validation("status", "must be `active` or `disabled`"));
        }
        if s == "disabled" && u.status != "disabled" {
            // Ends sessions, refresh-token families and access tokens issued before now.
            u.tokens_valid_after = store::now();
        }
        u.status = s;
    }
    store::users::update_profile(&state.db, &u).await?;
    Ok(Json(UserView::from(&user(&state, &t.id, &id).await?)))
}

#[utoipa::path(delete, path = "/admin/v1/tenants/{slug}/users/{id}", params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let u = user(&state, &t.id, &id).await?;
    store::users::delete(&state.db, &t.id, &u.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set or reset a password; ends the user's sessions and tokens.
#[utoipa::path(post, path = "/admin/v1/tenants/{slug}/users/{id}/password", params(("slug" = String, Path), ("id" = String, Path)),
    request_body = PasswordBody, responses((status = 204), (status = 404), (status = 422), (status = 503)))]
pub async fn set_password(
    State(state): State<AppState>,
    who: Principal,
    Path((slug, id)): Path<(String, String)>,
    Json(body): Json<PasswordBody>,
) -> Result<StatusCode, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let u = user(&state, &t.id, &id).await?;
    users::set_password(&state, &t, &u, &body.password, body.temporary).await?;
    Ok(StatusCode::NO_CONTENT)
}
