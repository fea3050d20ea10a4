//! The sign-in state machine shared by the first-party API (`/authn`) and, later, the login
//! pages: password → (second factor or enrolment) → one-time login ticket. No ticket is
//! issued before every factor the tenant requires; throttling counters reset only then.

use std::net::IpAddr;

use crate::app::AppState;
use crate::audit::Event;
use crate::clients::Client;
use crate::crypto::secret_hash;
use crate::mfa;
use crate::password::PasswordError;
use crate::store::{self, factors::StateRow, throttle, tickets::Ticket, users::UserRow};
use crate::tenants::{MfaPolicy, Tenant};

pub mod enroll_webauthn;
pub mod passkey;
pub mod webauthn;

pub const ACR_PWD: &str = "urn:unicred:acr:pwd";
pub const ACR_MFA: &str = "urn:unicred:acr:mfa";
/// Login tickets are redeemed server to server right away.
pub const TICKET_TTL: i64 = 60;

pub enum Step {
    Success {
        user_id: String,
        login_ticket: String,
        expires_in: i64,
    },
    /// The user has second factors: one of them must follow, with this state token.
    MfaRequired {
        state_token: String,
        factors: Vec<&'static str>,
    },
    /// The tenant requires a second factor and the user has none: enrolment only, of one of
    /// `factors` (the kinds the tenant allows that the sign-in API can enrol).
    MfaEnrollRequired {
        state_token: String,
        factors: Vec<&'static str>,
    },
    /// The password was temporary (an admin's, set with `temporary`): the user chooses a new
    /// one with this state token before enrolment or the ticket (after the second factor when
    /// the user has one).
    PasswordChangeRequired { state_token: String },
}

/// State tokens live 5 minutes and die after 5 failures.
pub const STATE_TTL: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// Unknown user, wrong password, disabled, locked or throttled: one answer for all.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A wrong, replayed or throttled second factor, or a dead state token.
    #[error("invalid factor")]
    InvalidFactor,
    #[error("busy")]
    Busy,
    #[error("internal: {0}")]
    Internal(String),
}

/// A factor or audit failure: an unreachable database stays a retryable 503.
impl From<mfa::MfaError> for AuthnError {
    fn from(e: mfa::MfaError) -> Self {
        match e {
            mfa::MfaError::Store(e) => e.into(),
            e => AuthnError::Internal(e.to_string()),
        }
    }
}

impl From<crate::audit::AuditError> for AuthnError {
    fn from(e: crate::audit::AuditError) -> Self {
        match e {
            crate::audit::AuditError::Store(e) => e.into(),
            e if e.is_unavailable() => AuthnError::Busy,
            e => AuthnError::Internal(e.to_string()),
        }
    }
}

impl From<store::StoreError> for AuthnError {
    fn from(e: store::StoreError) -> Self {
        // A database that cannot be reached is a retryable 503, not a 500.
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            return AuthnError::Busy;
        }
        // Text no row can hold (a NUL in an id or a token): nothing matches it.
        if e.is_bad_text() {
            return AuthnError::InvalidFactor;
        }
        AuthnError::Internal(e.to_string())
    }
}

impl From<PasswordError> for AuthnError {
    fn from(e: PasswordError) -> Self {
        match e {
            // Out of memory for a hash is logged where it happens; the caller may retry.
            PasswordError::Busy | PasswordError::Memory(_) => AuthnError::Busy,
            PasswordError::Malformed => AuthnError::Internal("stored hash unusable".into()),
        }
    }
}

/// Device counters are `device <id> <account key>`. The spaces keep the form apart from every
/// account key: a normalised username has no space (PRECIS IdentifierClass), nor has a `raw:`
/// key. (With `:` a user named `device:x:bob` had counters that read as a device's of `bob`,
/// and signing in as that user gave a device cookie for `bob`'s counter.)
const DEVICE_PREFIX: &str = "device ";

/// The throttling counter for account `key`: the account's own, or, for a browser or caller
/// that `device` recognises, one of that device's (so strangers' failures do not delay it).
/// The one place that writes the counter format [`account_key`] reads.
fn counter_key(key: &str, device: impl Fn(&str) -> Option<String>) -> String {
    match device(key) {
        Some(d) => format!("{DEVICE_PREFIX}{d} {key}"),
        None => key.to_string(),
    }
}

/// The account's throttling key within a counter key (see [`counter_key`]): a device's
/// cookie names the account, not the device's counter.
pub fn account_key(counter: &str) -> &str {
    counter
        .strip_prefix(DEVICE_PREFIX)
        .and_then(|rest| rest.split_once(' '))
        .map_or(counter, |(_, key)| key)
}

/// The throttling key: the normalised username, or (for names that cannot be normalised) a
/// digest of the lowercased raw input, so invalid names are throttled like any other and the
/// key holds no control character or space whatever was sent.
fn throttle_key(raw: &str) -> (Option<String>, String) {
    match crate::username::normalize(raw) {
        Ok(n) => (Some(n.clone()), n),
        Err(_) => (None, format!("raw:{}", &secret_hash(raw.to_lowercase())[..32])),
    }
}

/// Records a failed first-factor attempt in the audit trail (the internal reason, never the
/// password), before the answer goes out.
async fn outcome(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    user: Option<&UserRow>,
    ip: IpAddr,
    reason: &str,
) -> Result<(), AuthnError> {
    let mut e = Event::new(&tenant.id, "signin.failure")
        .client(&client.id)
        .ip(Some(ip))
        .data(serde_json::json!({ "reason": reason }));
    if let Some(u) = user {
        e = e.user(&u.id);
    }
    state.audit.record(e).await?;
    Ok(())
}

/// A correct password for an active user. The account's throttle is not reset yet: that
/// happens only after every required factor. Nothing is audited yet either: the next step
/// records `signin.success` (one event for a one-step sign-in) or, when a second factor or an
/// enrolment follows, `signin.password_ok`.
pub struct PasswordOk {
    pub user: UserRow,
    /// Whether the user has a confirmed second factor the tenant allows: looked up with the
    /// user by the password step, false where the sign-in did not start with a password.
    pub has_factor: bool,
    pub throttle_key: String,
    /// The client's address, when this request carried the password.
    pub ip: Option<IpAddr>,
}

/// The password step, shared by the sign-in API and the login pages. `device` maps the
/// throttling key to a device id when the browser proves an earlier full sign-in for that
/// account: such a device has its own counter, so strangers' failures do not delay it.
pub async fn check_password(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    username: &str,
    password: &str,
    ip: IpAddr,
    device: impl Fn(&str) -> Option<String>,
) -> Result<PasswordOk, AuthnError> {
    if password.is_empty() || password.len() > crate::password::MAX_PASSWORD_BYTES || username.len() > 1024 {
        outcome(state, tenant, client, None, ip, "malformed").await?;
        return Err(AuthnError::InvalidCredentials);
    }
    // Shed before touching the database: a flood must not cost writes it will never use.
    if !state.passwords.pool.has_room(&tenant.id) {
        metrics::counter!("unicred_hash_shed_total").increment(1);
        return Err(AuthnError::Busy);
    }
    let (normalized, key) = throttle_key(username);
    let counter = counter_key(&key, device);
    let rules = throttle::Rules {
        threshold: tenant.policy.lockout_threshold(),
        max_delay: tenant.policy.lockout_max_delay(),
    };
    // Independent round trips, run together: the reservation and the user lookup.
    let (reservation, user) = tokio::join!(throttle::reserve(&state.db, &tenant.id, &counter, &rules), async {
        match &normalized {
            Some(n) => store::users::for_signin(&state.db, &tenant.id, n).await,
            None => Ok(None),
        }
    });
    if let throttle::Reservation::Throttled { .. } = reservation? {
        metrics::counter!("unicred_signin_throttled_total").increment(1);
        outcome(state, tenant, client, None, ip, "throttled").await?;
        return Err(AuthnError::InvalidCredentials);
    }
    let (user, factors) = match user? {
        Some(u) => (Some(u.user), u.confirmed_factors),
        None => (None, None),
    };
    let stored = user
        .as_ref()
        .and_then(|u| u.password_hash.as_deref().map(|h| (h, u.pepper_version)));
    let usable = user.as_ref().is_some_and(|u| u.status == "active");
    let checked = state.passwords.check(tenant, stored, password, usable).await?;
    let reason = match &user {
        None => Some("unknown_user"),
        Some(_) if !checked.ok => Some("wrong_password"),
        Some(u) if u.status != "active" => Some(if u.status == "locked" { "locked" } else { "disabled" }),
        Some(_) => None,
    };
    if let Some(reason) = reason {
        outcome(state, tenant, client, user.as_ref(), ip, reason).await?;
        return Err(AuthnError::InvalidCredentials);
    }
    let user = user.expect("a user when no failure reason");
    if checked.upgrade {
        upgrade(state, tenant, &user, password).await;
    }
    Ok(PasswordOk {
        user,
        has_factor: mfa::any_allowed(tenant, factors.iter().flat_map(|f| f.split(','))),
        throttle_key: counter,
        ip: Some(ip),
    })
}

/// Whether the tenant requires a factor this user cannot yet give (no ticket, code or session
/// may be issued then).
pub fn mfa_blocks(tenant: &Tenant) -> bool {
    tenant.policy.mfa == Some(MfaPolicy::Required)
}

/// Full authentication reached: the account's counters start clean.
pub async fn fully_authenticated(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    ok: &PasswordOk,
    amr: &str,
) -> Result<(), AuthnError> {
    let e = Event::new(&tenant.id, "signin.success")
        .user(&ok.user.id)
        .client(&client.id)
        .ip(ok.ip)
        .data(serde_json::json!({ "amr": amr }));
    let (reset, recorded) = tokio::join!(
        throttle::reset(&state.db.pool, &tenant.id, &ok.throttle_key),
        state.audit.record(e)
    );
    reset?;
    recorded?;
    Ok(())
}

/// The sign-in API's password step: a login ticket once every required factor is in.
///
/// A temporary password is replaced before the sign-in goes on, but after the second factor
/// when the user has one: the temporary password alone (it reached the user by some other
/// channel) must not let anyone choose the account's password and end its sessions.
pub async fn password(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    username: &str,
    password: &str,
    ip: IpAddr,
) -> Result<Step, AuthnError> {
    let ok = check_password(state, tenant, client, username, password, ip, |_| None).await?;
    if ok.user.password_temporary != 0 && !ok.has_factor {
        let token = new_state(state, tenant, client, &ok, "password").await?;
        return Ok(Step::PasswordChangeRequired { state_token: token });
    }
    next_step(state, tenant, client, ok).await
}

/// After the password (or its replacement): a second factor, enrolment, or the ticket.
pub async fn next_step(state: &AppState, tenant: &Tenant, client: &Client, ok: PasswordOk) -> Result<Step, AuthnError> {
    if ok.has_factor {
        let token = new_state(state, tenant, client, &ok, "mfa").await?;
        return Ok(Step::MfaRequired {
            state_token: token,
            factors: mfa::webauthn::offered_factors(state, tenant, &ok.user.id).await?,
        });
    }
    if mfa_blocks(tenant) {
        let token = new_state(state, tenant, client, &ok, "enroll").await?;
        let factors = [mfa::KIND_TOTP, mfa::webauthn::KIND_WEBAUTHN]
            .into_iter()
            .filter(|k| tenant.policy.allows(k))
            .collect();
        return Ok(Step::MfaEnrollRequired {
            state_token: token,
            factors,
        });
    }
    // Independent writes, run together (one commit's latency instead of three): the ticket is
    // only handed out once the throttle reset and the audit event are committed too.
    let (done, ticket) = tokio::join!(
        fully_authenticated(state, tenant, client, &ok, "pwd"),
        issue_ticket(state, tenant, client, &ok.user, &["pwd"], ACR_PWD)
    );
    done?;
    let ticket = ticket?;
    Ok(Step::Success {
        user_id: ok.user.id,
        login_ticket: ticket,
        expires_in: TICKET_TTL,
    })
}

/// After a second factor: the state token (`purpose`) for replacing a temporary password the
/// user still has, carrying the factor's `amr`; `None` if there is none to replace.
pub async fn password_change_after_factor(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    ok: &PasswordOk,
    purpose: &str,
    amr: &str,
) -> Result<Option<String>, AuthnError> {
    if ok.user.password_temporary == 0 {
        return Ok(None);
    }
    let row = state_row(tenant, client, ok, purpose, Some(amr.into()));
    Ok(Some(stored_state(state, &row).await?))
}

/// The sign-in API after a second factor (`amr`): the login ticket, or first the replacement
/// of a temporary password.
async fn after_factor(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    ok: PasswordOk,
    amr: &[&str],
) -> Result<Step, AuthnError> {
    if let Some(token) = password_change_after_factor(state, tenant, client, &ok, "password", &amr.join(" ")).await? {
        return Ok(Step::PasswordChangeRequired { state_token: token });
    }
    let ticket = issue_ticket(state, tenant, client, &ok.user, amr, ACR_MFA).await?;
    Ok(Step::Success {
        user_id: ok.user.id,
        login_ticket: ticket,
        expires_in: TICKET_TTL,
    })
}

/// A replaced temporary password.
pub struct Replaced {
    pub ok: PasswordOk,
    /// The second factor's `amr` when it came first (the user had one): the sign-in is then
    /// complete. `None`: it goes on as after a password.
    pub amr: Option<String>,
}

/// The sign-in API after a replaced temporary password: as after the password, or the ticket
/// when the second factor came first.
pub async fn after_replacement(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    r: Replaced,
) -> Result<Step, AuthnError> {
    match r.amr {
        Some(amr) => after_factor(state, tenant, client, r.ok, &amr.split(' ').collect::<Vec<_>>()).await,
        None => next_step(state, tenant, client, r.ok).await,
    }
}

/// Replaces a temporary password: the state token of the password step (`purpose`) is spent,
/// the new password (checked against the tenant's policy: `Ok(Err(violations))` otherwise, and
/// the token stays usable) is stored as a permanent one, earlier sessions and tokens end, and
/// the change is audited with it. The caller goes on with [`after_replacement`] or its page's
/// like.
pub async fn replace_temporary_password(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    purpose: &str,
    new_password: &str,
    ip: IpAddr,
) -> Result<Result<Replaced, Vec<crate::password::policy::Violation>>, AuthnError> {
    let st = load_state(state, tenant, client, token, purpose).await?;
    let mut user = store::users::get(&state.db, &tenant.id, &st.user_id)
        .await?
        .filter(|u| u.status == "active" && u.password_temporary != 0)
        .ok_or(AuthnError::InvalidFactor)?;
    let hash = match crate::users::new_password(state, tenant, &user, new_password).await {
        Ok(h) => h,
        Err(crate::error::Error::Policy(v)) => return Ok(Err(v)),
        Err(crate::error::Error::Busy) => return Err(AuthnError::Busy),
        // An unreachable database stays a retryable 503.
        Err(crate::error::Error::Store(e)) => return Err(e.into()),
        Err(e) => return Err(AuthnError::Internal(e.to_string())),
    };
    // The token is spent in the change's own transaction: two requests cannot both change.
    let mut tx = state.db.begin_write().await?;
    if !store::factors::consume_state(&mut *tx, &secret_hash(token)).await? {
        return Err(AuthnError::InvalidFactor);
    }
    store::users::set_password(
        &mut *tx,
        &tenant.id,
        &user.id,
        &hash.phc,
        hash.pepper_version,
        false,
        true,
    )
    .await?;
    store::sessions::delete_for_user(&mut tx, &tenant.id, &user.id).await?;
    let e = Event::new(&tenant.id, "user.password_changed")
        .user(&user.id)
        .client(&client.id)
        .ip(Some(ip))
        .data(serde_json::json!({"via": "temporary"}));
    state.audit.commit(tx, e).await?;
    user.password_temporary = 0;
    // After a second factor nothing reads it: the sign-in is complete.
    let has_factor = st.amr.is_none() && mfa::has_confirmed(state, tenant, &user.id).await?;
    Ok(Ok(Replaced {
        ok: PasswordOk {
            has_factor,
            user,
            throttle_key: st.throttle_key,
            ip: Some(ip),
        },
        amr: st.amr,
    }))
}

/// Whether `token` is a live state token of this tenant and client, for `purpose`.
pub async fn live_state(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    purpose: &str,
) -> Result<(), AuthnError> {
    load_state(state, tenant, client, token, purpose).await.map(|_| ())
}

pub async fn new_state(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    ok: &PasswordOk,
    purpose: &str,
) -> Result<String, AuthnError> {
    let token = stored_state(state, &state_row(tenant, client, ok, purpose, None)).await?;
    let e = Event::new(&tenant.id, "signin.password_ok")
        .user(&ok.user.id)
        .client(&client.id)
        .ip(ok.ip)
        .data(serde_json::json!({ "reason": "password_ok", "next": purpose }));
    state.audit.record(e).await?;
    Ok(token)
}

/// A live state token of this tenant and client, for `purpose`.
async fn load_state(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    purpose: &str,
) -> Result<StateRow, AuthnError> {
    if token.len() > 128 {
        return Err(AuthnError::InvalidFactor);
    }
    store::factors::state(&state.db, &secret_hash(token))
        .await?
        .filter(|s| s.tenant_id == tenant.id && s.client_id == client.id && s.purpose == purpose)
        .ok_or(AuthnError::InvalidFactor)
}

/// A second-factor attempt spends one of the state token's attempts, and counts toward the
/// account's throttling like a password attempt; a correct password never resets it — only
/// full authentication does.
async fn factor_attempt(state: &AppState, tenant: &Tenant, token: &str, st: &StateRow) -> Result<(), AuthnError> {
    if !store::factors::reserve_attempt(&state.db, &secret_hash(token)).await? {
        return Err(AuthnError::InvalidFactor);
    }
    let rules = throttle::Rules {
        threshold: tenant.policy.lockout_threshold(),
        max_delay: tenant.policy.lockout_max_delay(),
    };
    match throttle::reserve(&state.db, &tenant.id, &st.throttle_key, &rules).await? {
        throttle::Reservation::Allowed => Ok(()),
        throttle::Reservation::Throttled { .. } => Err(AuthnError::InvalidFactor),
    }
}

async fn factor_failed(state: &AppState, tenant: &Tenant, client: &Client, st: &StateRow, kind: &str) -> AuthnError {
    let e = Event::new(&tenant.id, "mfa.failure")
        .user(&st.user_id)
        .client(&client.id)
        .data(serde_json::json!({ "factor": kind }));
    match state.audit.record(e).await {
        Ok(_) => AuthnError::InvalidFactor,
        Err(e) => e.into(),
    }
}

/// After a verified second factor: consume the state token and reach full authentication.
async fn factor_success(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    st: &StateRow,
    amr: &str,
) -> Result<PasswordOk, AuthnError> {
    if !store::factors::consume_state(&state.db.pool, &secret_hash(token)).await? {
        return Err(AuthnError::InvalidFactor);
    }
    authenticated(state, tenant, client, st, amr).await
}

/// Full authentication of the (still active) user of a spent state token.
pub(crate) async fn authenticated(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    st: &StateRow,
    amr: &str,
) -> Result<PasswordOk, AuthnError> {
    let user = store::users::get(&state.db, &tenant.id, &st.user_id)
        .await?
        .filter(|u| u.status == "active")
        .ok_or(AuthnError::InvalidFactor)?;
    let ok = PasswordOk {
        user,
        has_factor: false,
        throttle_key: st.throttle_key.clone(),
        ip: None,
    };
    fully_authenticated(state, tenant, client, &ok, amr).await?;
    Ok(ok)
}

/// `amr` after a password and a one-time code.
pub const AMR_MFA: &str = "pwd otp";

/// Verifies a second factor (`totp` or `recovery_code`) for a state token of `purpose`.
pub async fn verify_factor(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    purpose: &str,
    kind: &str,
    code: &str,
) -> Result<PasswordOk, AuthnError> {
    let st = load_state(state, tenant, client, token, purpose).await?;
    factor_attempt(state, tenant, token, &st).await?;
    let ok = match kind {
        "totp" => mfa::check_totp(state, tenant, &st.user_id, code, None).await?.is_some(),
        "recovery_code" => mfa::use_recovery_code(state, tenant, &st.user_id, code).await?,
        _ => false,
    };
    if !ok {
        return Err(factor_failed(state, tenant, client, &st, kind).await);
    }
    factor_success(state, tenant, client, token, &st, AMR_MFA).await
}

/// `POST /authn/factors/{totp|recovery_code}`.
pub async fn factor(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    kind: &str,
    code: &str,
) -> Result<Step, AuthnError> {
    let ok = verify_factor(state, tenant, client, token, "mfa", kind, code).await?;
    after_factor(state, tenant, client, ok, &["pwd", "otp"]).await
}

/// `POST /authn/enroll/totp` (`purpose` `enroll`) and the login page's enrolment step
/// (`page-enroll`): the enrolment-only state token may start a TOTP factor.
pub async fn enroll_totp(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    purpose: &str,
) -> Result<mfa::Enrolment, AuthnError> {
    let st = load_state(state, tenant, client, token, purpose).await?;
    let user = store::users::get(&state.db, &tenant.id, &st.user_id)
        .await?
        .ok_or(AuthnError::InvalidFactor)?;
    match mfa::enroll_totp(state, tenant, &user.id, &user.username).await {
        Ok(e) => Ok(e),
        Err(mfa::MfaError::NotAllowed(_)) => Err(AuthnError::InvalidFactor),
        Err(e) => Err(e.into()),
    }
}

/// The pending TOTP enrolment `factor` of an enrolment-only state token's user, shown again
/// (after a wrong code); `None` once the token is dead or the factor is not pending.
pub async fn enrolment_again(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    purpose: &str,
    factor: &str,
) -> Result<Option<mfa::Enrolment>, AuthnError> {
    let st = match load_state(state, tenant, client, token, purpose).await {
        Ok(st) => st,
        Err(AuthnError::InvalidFactor) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(user) = store::users::get(&state.db, &tenant.id, &st.user_id).await? else {
        return Ok(None);
    };
    mfa::pending_totp(state, tenant, &user.id, factor, &user.username)
        .await
        .map_err(AuthnError::from)
}

/// A valid code confirms the pending TOTP factor of an enrolment-only state token of
/// `purpose` (`factor`, or the latest one the token's user started): recovery codes are
/// issued, `mfa.enrolled` audited and the state token spent. A wrong code counts like any
/// second-factor failure.
pub async fn confirm_enrolment(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    purpose: &str,
    factor: Option<&str>,
    code: &str,
) -> Result<(StateRow, Vec<String>), AuthnError> {
    let st = load_state(state, tenant, client, token, purpose).await?;
    factor_attempt(state, tenant, token, &st).await?;
    let pending = store::factors::for_user(&state.db, &tenant.id, &st.user_id)
        .await?
        .into_iter()
        .rev()
        .find(|f| f.confirmed == 0 && f.kind == mfa::KIND_TOTP && factor.is_none_or(|id| id == f.id))
        .ok_or(AuthnError::InvalidFactor)?;
    let verified = mfa::check_totp(state, tenant, &st.user_id, code, Some(&pending.id)).await?;
    if verified.is_none() {
        return Err(factor_failed(state, tenant, client, &st, "totp").await);
    }
    // The spent token, the confirmation, the recovery codes and the event: one transaction,
    // the token first, so two enrolments on one token cannot both replace the codes.
    let mut tx = state.db.begin_write().await?;
    if !store::factors::consume_state(&mut *tx, &secret_hash(token)).await? {
        return Err(AuthnError::InvalidFactor);
    }
    if !store::factors::confirm(&mut *tx, &tenant.id, &pending.id).await? {
        drop(tx);
        return Err(factor_failed(state, tenant, client, &st, "totp").await);
    }
    let codes = mfa::new_recovery_codes(state, &mut tx, tenant, &st.user_id).await?;
    let e = Event::new(&tenant.id, "mfa.enrolled")
        .user(&st.user_id)
        .client(&client.id)
        .data(serde_json::json!({ "factor": "totp", "factor_id": pending.id }));
    state.audit.commit(tx, e).await?;
    Ok((st, codes))
}

/// `POST /authn/enroll/totp/confirm`: a confirmed enrolment completes the sign-in at once.
pub async fn enroll_confirm(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    code: &str,
) -> Result<(Step, Vec<String>), AuthnError> {
    let (st, codes) = confirm_enrolment(state, tenant, client, token, "enroll", None, code).await?;
    let ok = authenticated(state, tenant, client, &st, AMR_MFA).await?;
    let ticket = issue_ticket(state, tenant, client, &ok.user, &["pwd", "otp"], ACR_MFA).await?;
    Ok((
        Step::Success {
            user_id: ok.user.id,
            login_ticket: ticket,
            expires_in: TICKET_TTL,
        },
        codes,
    ))
}

/// The login page after a confirmed enrolment: the recovery codes are shown first, so the
/// sign-in completes on the page's next post, with a fresh single-use state token of purpose
/// `page-enrolled` for the same user, carrying the `amr` of the factor just enrolled.
pub async fn enrolled_state(state: &AppState, st: &StateRow, amr: &[&str]) -> Result<String, AuthnError> {
    let row = StateRow {
        purpose: "page-enrolled".into(),
        failures: 0,
        amr: Some(amr.join(" ")),
        ..st.clone()
    };
    stored_state(state, &row).await
}

/// A fresh state row for `ok`'s user and `purpose` (`amr`: a second factor already given).
fn state_row(tenant: &Tenant, client: &Client, ok: &PasswordOk, purpose: &str, amr: Option<String>) -> StateRow {
    StateRow {
        tenant_id: tenant.id.clone(),
        client_id: client.id.clone(),
        user_id: ok.user.id.clone(),
        purpose: purpose.into(),
        throttle_key: ok.throttle_key.clone(),
        failures: 0,
        amr,
    }
}

/// Stores `row` under a new state token, live for [`STATE_TTL`]; returns the token.
async fn stored_state(state: &AppState, row: &StateRow) -> Result<String, AuthnError> {
    let token = crate::crypto::random_token::<32>();
    store::factors::create_state(&state.db, &secret_hash(&token), row, store::now() + STATE_TTL).await?;
    Ok(token)
}

/// Completes a sign-in whose enrolment was confirmed (`enrolled_state`): spends the token and
/// reaches full authentication, as after a second factor; answers the `amr` to use.
pub async fn finish_enrolled(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
) -> Result<(PasswordOk, String), AuthnError> {
    let st = load_state(state, tenant, client, token, "page-enrolled").await?;
    let amr = st.amr.clone().ok_or(AuthnError::InvalidFactor)?;
    let ok = factor_success(state, tenant, client, token, &st, &amr).await?;
    Ok((ok, amr))
}

/// Re-hashes with the tenant's current parameters and pepper; a failure only costs the upgrade.
async fn upgrade(state: &AppState, tenant: &Tenant, user: &UserRow, password: &str) {
    let Some(old) = user.password_hash.as_deref() else {
        return;
    };
    match state.passwords.hash(tenant, password).await {
        Ok(new) => {
            match store::users::upgrade_hash(&state.db, &tenant.id, &user.id, old, &new.phc, new.pepper_version).await {
                Ok(true) => {
                    metrics::counter!("unicred_password_upgrades_total").increment(1);
                    tracing::info!(user_id = %user.id, "password hash upgraded");
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "password hash upgrade failed"),
            }
        }
        Err(e) => tracing::warn!(error = %e, "password hash upgrade skipped"),
    }
}

pub(crate) async fn issue_ticket(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    user: &UserRow,
    amr: &[&str],
    acr: &str,
) -> Result<String, AuthnError> {
    let ticket = crate::crypto::random_token::<32>();
    let now = store::now();
    let row = Ticket {
        tenant_id: tenant.id.clone(),
        client_id: client.id.clone(),
        user_id: user.id.clone(),
        auth_time: now,
        amr: amr.join(" "),
        acr: acr.to_string(),
    };
    store::tickets::create(&state.db, &secret_hash(&ticket), &row, now + TICKET_TTL).await?;
    Ok(ticket)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_device_counter_names_its_account() {
        use super::{account_key, counter_key, throttle_key};
        let on = |d: &'static str| move |_: &str| Some(d.to_string());
        for name in ["alice", "device:x:bob", "device:acct-1:bob", "raw:a:b"] {
            let (_, key) = throttle_key(name);
            assert_eq!(account_key(&counter_key(&key, |_| None)), key, "{name}");
            assert_eq!(account_key(&counter_key(&key, on("AbC-_1"))), key, "{name}");
        }
        // A username shaped like a device counter is its own account, not `bob`'s.
        assert_eq!(account_key("device:x:bob"), "device:x:bob");
        let (_, raw) = throttle_key("Bad\u{0}Name with spaces");
        assert!(
            raw.starts_with("raw:") && !raw.contains(' ') && !raw.contains('\0'),
            "{raw}"
        );
        assert_eq!(raw, throttle_key("bad\u{0}name WITH spaces").1, "case-folded");
        assert_eq!(account_key(&counter_key(&raw, on("d"))), raw);
    }
}
