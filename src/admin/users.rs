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

/// No `Debug`: it holds a password (wiped on drop).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    #[schema(value_type = String)]
    pub password: zeroize::Zeroizing<String>,
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
    let new = users::new_user(&state, &t, body).await?;
    let mut tx = state.db.begin_write().await?;
    new.insert(&mut *tx).await?;
    super::commit_audited(
        &state,
        tx,
        &who,
        &t.id,
        "user.created",
        Some(&new.id),
        serde_json::json!({"password_set": new.hash.is_some()}),
    )
    .await?;
    let u = user(&state, &t.id, &new.id).await?;
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
    let mut tx = state.db.begin_write().await?;
    store::users::update_profile(&mut *tx, &u).await?;
    if u.status != "active" {
        store::sessions::delete_for_user(&mut tx, &t.id, &id).await?;
    }
    super::commit_audited(
        &state,
        tx,
        &who,
        &t.id,
        "user.updated",
        Some(&id),
        serde_json::json!({"status": u.status}),
    )
    .await?;
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
    let mut tx = state.db.begin_write().await?;
    store::users::delete(&mut *tx, &t.id, &u.id).await?;
    store::sessions::delete_for_user(&mut tx, &t.id, &u.id).await?;
    crate::audit::erase_user(&mut *tx, &t.id, &u.id)
        .await
        .map_err(|e| Problem::internal(&e))?;
    super::commit_audited(
        &state,
        tx,
        &who,
        &t.id,
        "user.deleted",
        Some(&u.id),
        serde_json::json!({}),
    )
    .await?;
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
    let hash = users::new_password(&state, &t, &u, &body.password).await?;
    let mut tx = state.db.begin_write().await?;
    store::users::set_password(
        &mut *tx,
        &t.id,
        &u.id,
        &hash.phc,
        hash.pepper_version,
        body.temporary,
        true,
    )
    .await?;
    store::sessions::delete_for_user(&mut tx, &t.id, &u.id).await?;
    super::commit_audited(
        &state,
        tx,
        &who,
        &t.id,
        "user.password_set",
        Some(&u.id),
        serde_json::json!({"temporary": body.temporary}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lock a user: refused at sign-in; sessions and tokens end. A disabled user stays disabled
/// (so that unlocking cannot re-enable it).
#[utoipa::path(post, path = "/admin/v1/tenants/{slug}/users/{id}/lock", params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = UserView), (status = 404)))]
pub async fn lock(
    State(state): State<AppState>,
    who: Principal,
    Path((slug, id)): Path<(String, String)>,
) -> Result<Json<UserView>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let mut u = user(&state, &t.id, &id).await?;
    if u.status != "disabled" {
        u.status = "locked".into();
    }
    u.tokens_valid_after = store::now();
    let mut tx = state.db.begin_write().await?;
    store::users::update_profile(&mut *tx, &u).await?;
    store::sessions::delete_for_user(&mut tx, &t.id, &id).await?;
    super::commit_audited(&state, tx, &who, &t.id, "user.locked", Some(&id), serde_json::json!({})).await?;
    Ok(Json(UserView::from(&user(&state, &t.id, &id).await?)))
}

/// Unlock a user: clears the sign-in throttle and a lock.
#[utoipa::path(post, path = "/admin/v1/tenants/{slug}/users/{id}/unlock", params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = UserView), (status = 404)))]
pub async fn unlock(
    State(state): State<AppState>,
    who: Principal,
    Path((slug, id)): Path<(String, String)>,
) -> Result<Json<UserView>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let mut u = user(&state, &t.id, &id).await?;
    let mut tx = state.db.begin_write().await?;
    store::throttle::reset(&mut *tx, &t.id, &u.username).await?;
    if u.status == "locked" {
        u.status = "active".into();
        store::users::update_profile(&mut *tx, &u).await?;
    }
    super::commit_audited(
        &state,
        tx,
        &who,
        &t.id,
        "user.unlocked",
        Some(&id),
        serde_json::json!({}),
    )
    .await?;
    Ok(Json(UserView::from(&user(&state, &t.id, &id).await?)))
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ThrottleView {
    /// Failed (or in-flight) attempts since the last full sign-in.
    pub failures: i64,
    /// Unix time before which attempts are refused (0: none).
    pub next_allowed_at: i64,
}

/// The user's sign-in throttle state.
#[utoipa::path(get, path = "/admin/v1/tenants/{slug}/users/{id}/throttle", params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = ThrottleView), (status = 404)))]
pub async fn throttle(
    State(state): State<AppState>,
    who: Principal,
    Path((slug, id)): Path<(String, String)>,
) -> Result<Json<ThrottleView>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let u = user(&state, &t.id, &id).await?;
    let (failures, next_allowed_at) = store::throttle::get(&state.db, &t.id, &u.username)
        .await?
        .unwrap_or((0, 0));
    Ok(Json(ThrottleView {
        failures,
        next_allowed_at,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportUser {
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// PHC or modular-crypt: argon2id/i/d, bcrypt, scrypt, pbkdf2-sha256/sha512, Django pbkdf2_sha256.
    pub password_hash: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    pub users: Vec<ImportUser>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ImportResult {
    pub username: String,
    /// `created` or `error`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Most records one import request may carry.
pub const IMPORT_MAX: usize = 1000;

/// Bulk import with existing password hashes. Each record is checked on its own (format and
/// cost bounds, so an import cannot plant a denial of service); one bad record aborts nothing.
/// The users and the summary event commit together: each record is a savepoint of one
/// transaction. Imported users are upgraded to Argon2id at their next successful sign-in.
#[utoipa::path(post, path = "/admin/v1/tenants/{slug}/users/import", params(("slug" = String, Path)), request_body = ImportBody,
    responses((status = 200, body = Vec<ImportResult>), (status = 413), (status = 422)))]
pub async fn import(
    State(state): State<AppState>,
    who: Principal,
    Path(slug): Path<String>,
    Json(body): Json<ImportBody>,
) -> Result<Json<Vec<ImportResult>>, Problem> {
    use crate::password::legacy;
    let t = managed_tenant(&state, &who, &slug).await?;
    if body.users.len() > IMPORT_MAX {
        return Err(Problem::validation("users", "at most 1000 records per request"));
    }
    let limits = legacy::Limits {
        argon2_max_m_kib: state.config.argon2_max_m_kib,
    };
    let mut out = Vec::with_capacity(body.users.len());
    let mut tx = state.db.begin_write().await?;
    for rec in body.users {
        let result = async {
            let username = crate::username::normalize(&rec.username).map_err(|r| format!("username {r}"))?;
            if let Some(e) = &rec.email {
                users::check_email(e).map_err(|e| e.to_string())?;
            }
            if let Some(d) = &rec.display_name {
                users::check_display_name(d).map_err(|e| e.to_string())?;
            }
            if rec.password_hash.len() > 1024 {
                return Err("password_hash is too long".to_string());
            }
            legacy::classify(&rec.password_hash, &limits).map_err(|e| format!("password_hash: {e}"))?;
            let id = store::new_id();
            // A savepoint: a refused record (a taken username) leaves the others in place.
            let mut record = sqlx::Acquire::begin(&mut *tx).await.map_err(|e| {
                tracing::error!(error = %e, "import: a savepoint failed");
                "internal error".to_string()
            })?;
            store::users::create(
                &mut *record,
                &store::users::NewUser {
                    id: &id,
                    tenant_id: &t.id,
                    username: &username,
                    email: rec.email.as_deref(),
                    display_name: rec.display_name.as_deref(),
                    password_hash: Some(&rec.password_hash),
                    // No pepper: marks an imported hash, verified by the legacy verifiers.
                    pepper_version: None,
                    password_temporary: false,
                },
            )
            .await
            .map_err(|e| match e {
                store::StoreError::Conflict(_) => "username already exists".to_string(),
                other => {
                    tracing::error!(error = %other, "import: storing a user failed");
                    "internal error".to_string()
                }
            })?;
            record.commit().await.map_err(|e| {
                tracing::error!(error = %e, "import: releasing a savepoint failed");
                "internal error".to_string()
            })?;
            Ok::<String, String>(id)
        }
        .await;
        out.push(match result {
            Ok(id) => ImportResult {
                username: rec.username,
                status: "created",
                id: Some(id),
                error: None,
            },
            Err(e) => ImportResult {
                username: rec.username.chars().take(256).collect(),
                status: "error",
                id: None,
                error: Some(e),
            },
        });
    }
    let created = out.iter().filter(|r| r.status == "created").count();
    super::commit_audited(
        &state,
        tx,
        &who,
        &t.id,
        "users.imported",
        None,
        serde_json::json!({"created": created, "refused": out.len() - created}),
    )
    .await?;
    Ok(Json(out))
}

/// The user's second factors (never their secrets).
#[utoipa::path(get, path = "/admin/v1/tenants/{slug}/users/{id}/factors", params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Vec<crate::mfa::FactorView>), (status = 404)))]
pub async fn factors(
    State(state): State<AppState>,
    who: Principal,
    Path((slug, id)): Path<(String, String)>,
) -> Result<Json<Vec<crate::mfa::FactorView>>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let u = user(&state, &t.id, &id).await?;
    let rows = store::factors::for_user(&state.db, &t.id, &u.id).await?;
    Ok(Json(rows.iter().map(crate::mfa::FactorView::from).collect()))
}

/// Remove a second factor (support reset).
#[utoipa::path(delete, path = "/admin/v1/tenants/{slug}/users/{id}/factors/{factor_id}",
    params(("slug" = String, Path), ("id" = String, Path), ("factor_id" = String, Path)), responses((status = 204), (status = 404)))]
pub async fn factor_delete(
    State(state): State<AppState>,
    who: Principal,
    Path((slug, id, factor_id)): Path<(String, String, String)>,
) -> Result<StatusCode, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let u = user(&state, &t.id, &id).await?;
    // Support may remove any factor, the last one included.
    let mut tx = state.db.begin_write().await?;
    if let store::factors::Removal::NotFound =
        store::factors::remove_unless(&mut tx, &t.id, &u.id, &factor_id, |_, _| false).await?
    {
        return Err(Problem::not_found());
    }
    super::commit_audited(
        &state,
        tx,
        &who,
        &t.id,
        "mfa.removed",
        Some(&u.id),
        serde_json::json!({"factor_id": factor_id}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The user's live SSO sessions.
#[utoipa::path(get, path = "/admin/v1/tenants/{slug}/users/{id}/sessions", params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 200), (status = 404)))]
pub async fn sessions(
    State(state): State<AppState>,
    who: Principal,
    Path((slug, id)): Path<(String, String)>,
) -> Result<Json<Vec<serde_json::Value>>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let u = user(&state, &t.id, &id).await?;
    let rows = store::sessions::for_user(&state.db, &t.id, &u.id).await?;
    Ok(Json(rows.iter().map(crate::account::session_view).collect()))
}

/// End every session (and session-bound refresh token) of the user.
#[utoipa::path(delete, path = "/admin/v1/tenants/{slug}/users/{id}/sessions", params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404)))]
pub async fn sessions_delete(
    State(state): State<AppState>,
    who: Principal,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let u = user(&state, &t.id, &id).await?;
    let mut tx = state.db.begin_write().await?;
    store::sessions::delete_for_user(&mut tx, &t.id, &u.id).await?;
    super::commit_audited(
        &state,
        tx,
        &who,
        &t.id,
        "session.ended",
        Some(&u.id),
        serde_json::json!({"via": "admin"}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
