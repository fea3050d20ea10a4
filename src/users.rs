//! Users of a tenant: creation, profile changes, passwords, and the revocation that every
//! disable/delete/reset implies.

use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::error::Error;
use crate::password::policy::{self, Context};
use crate::store::{self, users::UserRow};
use crate::tenants::Tenant;

/// No `Debug`: it holds a password (wiped on drop).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    #[schema(value_type = Option<String>)]
    pub password: Option<zeroize::Zeroizing<String>>,
    #[serde(default)]
    pub temporary: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub status: String,
    pub password_set: bool,
    pub password_temporary: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&UserRow> for UserView {
    fn from(u: &UserRow) -> Self {
        UserView {
            id: u.id.clone(),
            username: u.username.clone(),
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            status: u.status.clone(),
            password_set: u.password_hash.is_some(),
            password_temporary: u.password_temporary != 0,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

pub fn check_email(e: &str) -> Result<(), Error> {
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("email", "is not an email address"))
    }
}

pub fn check_display_name(d: &str) -> Result<(), Error> {
    if d.chars().count() > 200 || d.chars().any(char::is_control) {
        return Err(Error::invalid(
            "display_name",
            "must be at most 200 printable characters",
        ));
    }
    Ok(())
}

/// A user checked and ready to store: the username normalised, the password (if any) checked
/// against the tenant's policy and hashed, all before any write transaction begins.
pub struct Prepared {
    pub id: String,
    tenant_id: String,
    username: String,
    email: Option<String>,
    display_name: Option<String>,
    pub hash: Option<crate::password::StoredHash>,
    temporary: bool,
}

pub async fn new_user(state: &AppState, tenant: &Tenant, input: NewUser) -> Result<Prepared, Error> {
    let username = crate::username::normalize(&input.username).map_err(|r| Error::invalid("username", r))?;
    if let Some(e) = &input.email {
        check_email(e)?;
    }
    if let Some(d) = &input.display_name {
        check_display_name(d)?;
    }
    let hash = match &input.password {
        Some(pw) => {
            let ctx = Context {
                username: &username,
                email: input.email.as_deref(),
                tenant_name: &tenant.name,
            };
            policy::check(&tenant.policy, pw, &ctx).map_err(Error::Policy)?;
            Some(state.passwords.hash(tenant, pw).await?)
        }
        None => None,
    };
    Ok(Prepared {
        id: store::new_id(),
        tenant_id: tenant.id.clone(),
        username,
        email: input.email,
        display_name: input.display_name,
        hash,
        temporary: input.temporary,
    })
}

impl Prepared {
    /// Fails with `Conflict("username")` when the tenant already has the username.
    pub async fn insert(&self, ex: impl sqlx::any::AnyExecutor<'_>) -> Result<(), Error> {
        store::users::create(
            ex,
            &store::users::NewUser {
                id: &self.id,
                tenant_id: &self.tenant_id,
                username: &self.username,
                email: self.email.as_deref(),
                display_name: self.display_name.as_deref(),
                password_hash: self.hash.as_ref().map(|h| h.phc.as_str()),
                pepper_version: self.hash.as_ref().map(|h| h.pepper_version),
                password_temporary: self.temporary,
            },
        )
        .await?;
        Ok(())
    }
}

/// A new password for `user`, checked against the tenant's policy and hashed, to be stored
/// with [`store::users::set_password`].
pub async fn new_password(
    state: &AppState,
    tenant: &Tenant,
    user: &UserRow,
    password: &str,
) -> Result<crate::password::StoredHash, Error> {
    let ctx = Context {
        username: &user.username,
        email: user.email.as_deref(),
        tenant_name: &tenant.name,
    };
    policy::check(&tenant.policy, password, &ctx).map_err(Error::Policy)?;
    Ok(state.passwords.hash(tenant, password).await?)
}
