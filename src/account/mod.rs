//! The self-service account API under `/t/{tenant}/account`: a signed-in user's factors,
//! recovery codes, password, sessions and consents. Bearer access token with scope `account`.
//! Changes to factors and the password need an authentication no older than the tenant's
//! `reauth_window_seconds`, else RFC 9470's `insufficient_user_authentication`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::app::AppState;
use crate::audit::Event;
use crate::http::Problem;
use crate::http::extract::{Json, Path};
use crate::http::ratelimit::ClientIp;
use crate::mfa::{self, FactorView};
use crate::password::policy::{self, Context};
use crate::store::{self, users::UserRow};
use crate::tenants::{MfaPolicy, Tenant};
use crate::tokens::access::{self, AccessClaims};

pub mod webauthn;

/// A signed-in user of the tenant named in the path.
pub struct AccountUser {
    pub tenant: Arc<Tenant>,
    pub user: UserRow,
    pub claims: AccessClaims,
}

impl FromRequestParts<AppState> for AccountUser {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let invalid = || Problem::unauthorized("Bearer realm=\"unicred\", error=\"invalid_token\"");
        // Inside the nested `/t/{tenant}` router the URI is stripped; the original names the tenant.
        let path = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| parts.uri.path().to_string(), |u| u.path().to_string());
        let slug = path
            .trim_start_matches("/t/")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let token =
            crate::http::bearer(&parts.headers).ok_or_else(|| Problem::unauthorized("Bearer realm=\"unicred\""))?;
        let (tenant, claims) = access::validate(state, token, None).await.map_err(|_| invalid())?;
        if tenant.slug != slug || claims.is_client_token() {
            return Err(invalid());
        }
        if !claims.has_scope("account") {
            let mut p = Problem::forbidden("the token lacks the `account` scope");
            p.www_authenticate = Some("Bearer error=\"insufficient_scope\", scope=\"account\"".into());
            return Err(p);
        }
        let user = store::users::get(&state.db, &tenant.id, &claims.sub)
            .await?
            .ok_or_else(invalid)?;
        Ok(AccountUser { tenant, user, claims })
    }
}

impl AccountUser {
    /// RFC 9470: the authentication behind this token must be recent enough.
    fn require_recent(&self) -> Result<(), Problem> {
        let window = self.tenant.policy.reauth_window_seconds.unwrap_or(600) as i64;
        let fresh = self.claims.auth_time.is_some_and(|t| t + window >= store::now());
        if fresh {
            return Ok(());
        }
        let mut p = Problem::new(
            StatusCode::UNAUTHORIZED,
            "reauthentication-required",
            "Sign in again to do this",
        )
        .detail(format!("authentication older than {window} s"));
        p.www_authenticate = Some(format!(
            "Bearer error=\"insufficient_user_authentication\", max_age={window}"
        ));
        Err(p)
    }

    /// Records the user's change in its own transaction `tx` and commits both (as
    /// [`crate::admin::commit_audited`]).
    async fn commit_audited(
        &self,
        state: &AppState,
        tx: store::Tx,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<(), Problem> {
        let e = Event::new(&self.tenant.id, kind)
            .user(&self.user.id)
            .client(&self.claims.client_id)
            .data(data);
        state.audit.commit(tx, e).await.map_err(|e| Problem::internal(&e))?;
        Ok(())
    }
}

fn mfa_problem(e: mfa::MfaError) -> Problem {
    match e {
        mfa::MfaError::NotAllowed(kind) => not_allowed(kind),
        mfa::MfaError::TooMany => Problem::new(
            StatusCode::CONFLICT,
            "too-many-factors",
            "You have as many second factors as an account may have",
        )
        .detail(format!("at most {} per user: remove one first", mfa::MAX_FACTORS)),
        mfa::MfaError::AttestationRefused(reason) => Problem::new(
            StatusCode::BAD_REQUEST,
            "attestation-refused",
            "Your organisation does not accept this authenticator",
        )
        .detail(format!(
            "the tenant requires a verifiable attestation from an allowed authenticator model: {reason}"
        )),
        e => Problem::internal(&e),
    }
}

/// The tenant's `mfa_factors` policy leaves this kind of factor out.
fn not_allowed(kind: &str) -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "factor-type-not-allowed",
        "Your organisation does not allow this kind of second factor",
    )
    .detail(format!("the tenant's mfa_factors policy does not include `{kind}`"))
}

pub async fn factors(State(state): State<AppState>, me: AccountUser) -> Result<Json<Vec<FactorView>>, Problem> {
    let rows = store::factors::for_user(&state.db, &me.tenant.id, &me.user.id).await?;
    Ok(Json(rows.iter().map(FactorView::from).collect()))
}

pub async fn totp_start(State(state): State<AppState>, me: AccountUser) -> Result<Json<mfa::Enrolment>, Problem> {
    me.require_recent()?;
    let e = mfa::enroll_totp(&state, &me.tenant, &me.user.id, &me.user.username)
        .await
        .map_err(mfa_problem)?;
    Ok(Json(e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    code: Zeroizing<String>,
}

pub async fn totp_confirm(
    State(state): State<AppState>,
    me: AccountUser,
    Path((_, id)): Path<(String, String)>,
    Json(body): Json<CodeBody>,
) -> Result<Json<serde_json::Value>, Problem> {
    me.require_recent()?;
    if !me.tenant.policy.allows(mfa::KIND_TOTP) {
        return Err(not_allowed(mfa::KIND_TOTP));
    }
    let first = !mfa::has_confirmed(&state, &me.tenant, &me.user.id)
        .await
        .map_err(mfa_problem)?;
    let ok = mfa::check_totp(&state, &me.tenant, &me.user.id, &body.code, Some(&id))
        .await
        .map_err(mfa_problem)?;
    if ok.is_none() {
        return Err(Problem::validation("code", "is not valid for this factor"));
    }
    // The confirmation, the first factor's recovery codes and the event: one transaction.
    let mut tx = state.db.begin_write().await?;
    if !store::factors::confirm(&mut *tx, &me.tenant.id, &id).await? {
        return Err(Problem::validation("code", "is not valid for this factor"));
    }
    let codes = if first {
        Some(
            mfa::new_recovery_codes(&state, &mut tx, &me.tenant, &me.user.id)
                .await
                .map_err(mfa_problem)?,
        )
    } else {
        None
    };
    me.commit_audited(
        &state,
        tx,
        "mfa.enrolled",
        serde_json::json!({"factor": "totp", "factor_id": id}),
    )
    .await?;
    Ok(Json(match codes {
        Some(codes) => serde_json::json!({ "recovery_codes": codes }),
        None => serde_json::json!({}),
    }))
}

pub async fn factor_delete(
    State(state): State<AppState>,
    me: AccountUser,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    me.require_recent()?;
    // Only factors the tenant still allows count: those are the ones sign-in offers.
    let usable = |g: &store::factors::FactorRow| g.confirmed != 0 && me.tenant.policy.allows(&g.kind);
    let required = me.tenant.policy.mfa == Some(MfaPolicy::Required);
    let must_keep = |f: &store::factors::FactorRow, others: &[store::factors::FactorRow]| {
        required && usable(f) && !others.iter().any(usable)
    };
    let mut tx = state.db.begin_write().await?;
    match store::factors::remove_unless(&mut tx, &me.tenant.id, &me.user.id, &id, must_keep).await? {
        store::factors::Removal::Removed => {}
        store::factors::Removal::NotFound => return Err(Problem::not_found()),
        store::factors::Removal::LastFactor => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "last-factor",
                "Your organisation requires a second factor",
            )
            .detail("enrol another factor before removing this one"));
        }
    }
    me.commit_audited(&state, tx, "mfa.removed", serde_json::json!({"factor_id": id}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn recovery_codes(
    State(state): State<AppState>,
    me: AccountUser,
) -> Result<Json<serde_json::Value>, Problem> {
    me.require_recent()?;
    if !mfa::has_confirmed(&state, &me.tenant, &me.user.id)
        .await
        .map_err(mfa_problem)?
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "no-factor",
            "Enrol a second factor first",
        ));
    }
    let mut tx = state.db.begin_write().await?;
    let codes = mfa::new_recovery_codes(&state, &mut tx, &me.tenant, &me.user.id)
        .await
        .map_err(mfa_problem)?;
    me.commit_audited(&state, tx, "mfa.recovery_codes_regenerated", serde_json::json!({}))
        .await?;
    Ok(Json(serde_json::json!({ "recovery_codes": codes })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: Zeroizing<String>,
    new_password: Zeroizing<String>,
}

/// Change the password: the current one is checked like a sign-in, on a throttling counter of
/// the signed-in user's own (strangers' failures on the username must not stop the user from
/// changing it, and the user's wrong guesses here are still throttled); every other session,
/// refresh token and access token ends.
pub async fn password(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    me: AccountUser,
    Json(body): Json<PasswordChange>,
) -> Result<StatusCode, Problem> {
    me.require_recent()?;
    let client = state
        .clients
        .get(&me.claims.client_id)
        .await?
        .ok_or_else(Problem::not_found)?;
    let own = format!("acct-{}", me.user.id);
    let ok = crate::authn::check_password(
        &state,
        &me.tenant,
        &client,
        &me.user.username,
        &body.current_password,
        ip,
        |_| Some(own.clone()),
    )
    .await;
    match ok {
        Ok(ok) if ok.user.id == me.user.id => {
            store::throttle::reset(&state.db.pool, &me.tenant.id, &ok.throttle_key).await?;
        }
        Ok(_) | Err(crate::authn::AuthnError::InvalidCredentials | crate::authn::AuthnError::InvalidFactor) => {
            return Err(Problem::validation("current_password", "is not correct"));
        }
        Err(crate::authn::AuthnError::Busy) => return Err(Problem::busy()),
        Err(crate::authn::AuthnError::Internal(e)) => return Err(Problem::internal(&e)),
    }
    let ctx = Context {
        username: &me.user.username,
        email: me.user.email.as_deref(),
        tenant_name: &me.tenant.name,
    };
    policy::check(&me.tenant.policy, &body.new_password, &ctx)
        .map_err(|v| Problem::from(crate::error::Error::Policy(v)))?;
    let hash = state
        .passwords
        .hash(&me.tenant, &body.new_password)
        .await
        .map_err(crate::error::Error::from)?;
    let mut tx = state.db.begin_write().await?;
    store::users::set_password(
        &mut *tx,
        &me.tenant.id,
        &me.user.id,
        &hash.phc,
        hash.pepper_version,
        false,
        true,
    )
    .await?;
    store::sessions::delete_for_user(&mut tx, &me.tenant.id, &me.user.id).await?;
    me.commit_audited(&state, tx, "user.password_changed", serde_json::json!({}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn sessions(State(state): State<AppState>, me: AccountUser) -> Result<Json<Vec<serde_json::Value>>, Problem> {
    let rows = store::sessions::for_user(&state.db, &me.tenant.id, &me.user.id).await?;
    Ok(Json(rows.iter().map(session_view).collect()))
}

pub fn session_view(s: &store::sessions::SessionRow) -> serde_json::Value {
    serde_json::json!({"id": s.id_hash, "auth_time": s.auth_time, "acr": s.acr, "amr": s.amr.split(' ').collect::<Vec<_>>(),
        "created_at": s.created_at, "last_seen": s.last_seen, "expires_at": s.expires_at})
}

pub async fn session_delete(
    State(state): State<AppState>,
    me: AccountUser,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let rows = store::sessions::for_user(&state.db, &me.tenant.id, &me.user.id).await?;
    if !rows.iter().any(|s| s.id_hash == id) {
        return Err(Problem::not_found());
    }
    let mut tx = state.db.begin_write().await?;
    store::sessions::delete(&mut *tx, &me.tenant.id, &id).await?;
    store::refresh::revoke_session(&mut *tx, &id).await?;
    me.commit_audited(&state, tx, "session.ended", serde_json::json!({"via": "account"}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn consent_delete(
    State(state): State<AppState>,
    me: AccountUser,
    Path((_, client_id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let mut tx = state.db.begin_write().await?;
    if !store::consents::delete(&mut *tx, &me.tenant.id, &me.user.id, &client_id).await? {
        return Err(Problem::not_found());
    }
    // What the app was granted ends with the consent: no more refreshing.
    store::refresh::revoke_for_client(&mut *tx, &me.tenant.id, &me.user.id, &client_id).await?;
    me.commit_audited(
        &state,
        tx,
        "consent.revoked",
        serde_json::json!({"client_id": client_id}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
