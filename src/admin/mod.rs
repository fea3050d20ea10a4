//! The management API under `/admin/v1`: a thin layer that checks the caller's privilege,
//! calls the capability and renders problem+json.

pub mod audit;
pub mod auth;
pub mod changes;
pub mod clients;
pub mod keys;
pub mod tenants;
pub mod users;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::http::Problem;
use crate::store;
use crate::tenants::Tenant;

pub use auth::Principal;

/// The tenant named by `slug`, if the caller may manage it. A tenant admin asking about any
/// other tenant gets 403 whether or not it exists.
pub async fn managed_tenant(state: &AppState, who: &Principal, slug: &str) -> Result<Arc<Tenant>, Problem> {
    let tenant = state.tenants.by_slug(slug).await?;
    match (who, tenant) {
        (Principal::Platform { .. }, Some(t)) => Ok(t),
        (Principal::Platform { .. }, None) => Err(Problem::not_found()),
        (Principal::TenantAdmin { tenant_id, .. }, Some(t)) if *tenant_id == t.id => Ok(t),
        (Principal::TenantAdmin { .. }, _) => Err(Problem::forbidden("this token manages another tenant")),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size (default 50, at most 200).
    pub limit: Option<i64>,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Substring search (users only).
    pub q: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<i64, Problem> {
        match self.limit {
            None => Ok(50),
            Some(n) if (1..=200).contains(&n) => Ok(n),
            Some(_) => Err(Problem::validation("limit", "must be between 1 and 200")),
        }
    }
    /// The sort key the cursor encodes ("" for the first page).
    pub fn after(&self) -> Result<String, Problem> {
        match &self.cursor {
            None => Ok(String::new()),
            Some(c) => B64
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| s.len() <= 512)
                .ok_or_else(|| Problem::validation("cursor", "is not a cursor this API issued")),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Builds a page from up to `limit + 1` rows.
pub fn page<R, T>(mut rows: Vec<R>, limit: i64, key: impl Fn(&R) -> String, view: impl Fn(&R) -> T) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| B64.encode(key(r)))
    } else {
        None
    };
    Page {
        items: rows.iter().map(view).collect(),
        next_cursor,
    }
}

/// Records a management change (who, what; before/after for non-personal fields) in the
/// change's own transaction `tx` and commits both: no change stands without its event, and no
/// event tells of a change that did not happen. Its data is bounded to fit an event
/// (`changes::bounded`).
pub async fn commit_audited(
    state: &AppState,
    tx: store::Tx,
    who: &Principal,
    tenant_id: &str,
    kind: &str,
    user_id: Option<&str>,
    data: serde_json::Value,
) -> Result<(), Problem> {
    let mut e = crate::audit::Event::new(tenant_id, kind)
        .actor(who.client_id())
        .data(changes::bounded(data));
    if let Some(u) = user_id {
        e = e.user(u);
    }
    state.audit.commit(tx, e).await.map_err(|e| Problem::internal(&e))?;
    Ok(())
}
