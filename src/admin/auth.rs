//! Who is calling the management API. Privilege is a type: handlers receive a `Principal`,
//! extracted from a client_credentials access token for the admin audience.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::clients::{SCOPE_ADMIN, SCOPE_TENANT_ADMIN};
use crate::http::Problem;
use crate::tokens::access;

#[derive(Debug, Clone)]
pub enum Principal {
    /// `admin` scope from the `system` tenant: may do everything.
    Platform { client_id: String },
    /// `tenant-admin` scope: may manage its own tenant only.
    TenantAdmin { tenant_id: String, client_id: String },
}

impl Principal {
    pub fn is_platform(&self) -> bool {
        matches!(self, Principal::Platform { .. })
    }
    pub fn client_id(&self) -> &str {
        match self {
            Principal::Platform { client_id } | Principal::TenantAdmin { client_id, .. } => client_id,
        }
    }
    pub fn require_platform(&self) -> Result<(), Problem> {
        if self.is_platform() {
            Ok(())
        } else {
            Err(Problem::forbidden("platform admins only"))
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let invalid = || Problem::unauthorized("Bearer realm=\"unicred\", error=\"invalid_token\"");
        let Some(token) = crate::http::bearer(&parts.headers) else {
            return Err(Problem::unauthorized("Bearer realm=\"unicred\""));
        };
        let (tenant, claims) = access::validate(state, token, Some(&state.config.admin_audience()))
            .await
            .map_err(|why| {
                // Debug only: anyone can send a bad token, and one log line per request would
                // let a stranger flood the logs.
                tracing::debug!(reason = %why, "admin API: token refused");
                invalid()
            })?;
        // Admin scopes live only in client_credentials tokens.
        if !claims.is_client_token() {
            return Err(invalid());
        }
        // The scope must still be the client's: taking it away ends its tokens' power at once
        // (the client cache is at most one second old).
        let client = state.clients.get(&claims.client_id).await?.ok_or_else(invalid)?;
        let holds = |scope: &str| claims.has_scope(scope) && client.scopes.iter().any(|s| s == scope);
        if holds(SCOPE_ADMIN) && tenant.is_system() {
            Ok(Principal::Platform {
                client_id: claims.client_id,
            })
        } else if holds(SCOPE_TENANT_ADMIN) && !tenant.is_system() {
            Ok(Principal::TenantAdmin {
                tenant_id: tenant.id.clone(),
                client_id: claims.client_id,
            })
        } else {
            Err(Problem::forbidden("the token carries no admin scope"))
        }
    }
}
