//! Registering WebAuthn credentials (passkeys, security keys) through the account API:
//! options for `navigator.credentials.create`, then the authenticator's answer. Both need a
//! recent authentication.

use axum::extract::State;
use serde::Deserialize;

use super::{AccountUser, mfa_problem};
use crate::app::AppState;
use crate::http::Problem;
use crate::http::extract::Json;
use crate::mfa::{self, webauthn as wa};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionsBody {
    name: Option<String>,
}

/// `POST /account/webauthn/register/options` `{"name"}` → `{"publicKey": {…}}`.
pub async fn register_options(
    State(state): State<AppState>,
    me: AccountUser,
    Json(body): Json<OptionsBody>,
) -> Result<Json<serde_json::Value>, Problem> {
    me.require_recent()?;
    let name = body.name.as_deref().map(str::trim).unwrap_or_default();
    let name = if name.is_empty() { "Passkey" } else { name };
    if name.chars().count() > 64 {
        return Err(Problem::validation("name", "must be at most 64 characters"));
    }
    let ccr = wa::register_options(&state, &me.tenant, &me.user.id, &me.user.username, name)
        .await
        .map_err(mfa_problem)?;
    Ok(Json(serde_json::to_value(ccr).map_err(|e| Problem::internal(&e))?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    credential: serde_json::Value,
}

/// `POST /account/webauthn/register` `{"credential"}` → `{"factor_id"}`, plus
/// `recovery_codes` when this is the user's first confirmed factor.
pub async fn register(
    State(state): State<AppState>,
    me: AccountUser,
    Json(body): Json<RegisterBody>,
) -> Result<Json<serde_json::Value>, Problem> {
    me.require_recent()?;
    let invalid = || Problem::validation("credential", "was not accepted for a pending registration");
    let credential = serde_json::from_value(body.credential).map_err(|_| invalid())?;
    let first = !mfa::has_confirmed(&state, &me.tenant, &me.user.id)
        .await
        .map_err(mfa_problem)?;
    let Some(registered) = wa::register_finish(&state, &me.tenant, &me.user.id, &credential)
        .await
        .map_err(mfa_problem)?
    else {
        return Err(invalid());
    };
    // The credential, the first factor's recovery codes and the event: one transaction.
    let mut tx = state.db.begin_write().await?;
    if !registered.store(&mut tx).await.map_err(mfa_problem)? {
        return Err(invalid());
    }
    let id = registered.factor_id;
    let mut out = serde_json::json!({ "factor_id": id });
    if first {
        let codes = mfa::new_recovery_codes(&state, &mut tx, &me.tenant, &me.user.id)
            .await
            .map_err(mfa_problem)?;
        out["recovery_codes"] = codes.into();
    }
    me.commit_audited(
        &state,
        tx,
        "mfa.enrolled",
        serde_json::json!({"factor": wa::KIND_WEBAUTHN, "factor_id": id}),
    )
    .await?;
    Ok(Json(out))
}
