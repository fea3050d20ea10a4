//! `/admin/v1/tenants/{slug}/keys`

use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::{Principal, managed_tenant};
use crate::app::AppState;
use crate::http::Problem;
use crate::http::extract::{Json, Path};
use crate::tokens::Alg;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub kid: String,
    pub alg: Alg,
    /// `next`, `current` or `retired`.
    pub state: String,
    pub created_at: i64,
    /// Retired keys leave the JWKS at this time.
    pub retire_until: Option<i64>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Withdraw every key of the tenant at once (current, retired and next) and sign with fresh
    /// ones: tokens the old keys signed stop validating.
    #[serde(default)]
    pub emergency: bool,
}

#[utoipa::path(get, path = "/admin/v1/tenants/{slug}/keys", params(("slug" = String, Path)), responses((status = 200, body = Vec<KeyView>)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Path(slug): Path<String>,
) -> Result<Json<Vec<KeyView>>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    let keys = state.keys.for_tenant(&t.id).await.map_err(crate::error::Error::from)?;
    Ok(Json(
        keys.rows
            .iter()
            .map(|(kid, alg, st, created, until)| KeyView {
                kid: kid.clone(),
                alg: *alg,
                state: st.clone(),
                created_at: *created,
                retire_until: *until,
            })
            .collect(),
    ))
}

/// Promote each algorithm's `next` key to `current`.
#[utoipa::path(post, path = "/admin/v1/tenants/{slug}/keys/rotate", params(("slug" = String, Path)), request_body = RotateBody,
    responses((status = 200, body = Vec<KeyView>)))]
pub async fn rotate(
    State(state): State<AppState>,
    who: Principal,
    Path(slug): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Vec<KeyView>>, Problem> {
    let t = managed_tenant(&state, &who, &slug).await?;
    // The body is optional: empty means a scheduled rotation.
    let emergency = if body.is_empty() {
        false
    } else {
        serde_json::from_slice::<RotateBody>(&body)
            .map_err(|e| Problem::bad_request(e.to_string()))?
            .emergency
    };
    let event = crate::audit::Event::new(&t.id, "keys.rotated")
        .actor(who.client_id())
        .data(serde_json::json!({"emergency": emergency}));
    state
        .keys
        .rotate(&t.id, emergency, &state.audit, event)
        .await
        .map_err(crate::error::Error::from)?;
    list(State(state), who, Path(slug)).await
}
