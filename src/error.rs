//! Errors of the capabilities (tenants, users, clients, keys), shared by the CLI and the
//! admin API, which renders them as problem+json.

use crate::password::PasswordError;
use crate::store::StoreError;
use crate::tokens::tenant_keys::KeysError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{field}` {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("not found")]
    NotFound,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("the hashing queue is full")]
    Busy,
    #[error("password rejected by policy")]
    Policy(Vec<crate::password::policy::Violation>),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Keys(KeysError),
}

impl Error {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Error::NotFound,
            StoreError::Conflict(what) => Error::Conflict(what),
            other => Error::Store(other),
        }
    }
}

impl From<KeysError> for Error {
    fn from(e: KeysError) -> Self {
        match e {
            KeysError::Busy => Error::Busy,
            other => Error::Keys(other),
        }
    }
}

impl From<PasswordError> for Error {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Busy | PasswordError::Memory(_) => Error::Busy,
            PasswordError::Malformed => Error::Store(StoreError::Corrupt("password hash".into())),
        }
    }
}
