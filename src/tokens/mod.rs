//! Signing keys, JWT issuance and validation, revocation.

pub mod access;
pub mod id_token;
pub mod jwt;
pub mod material;
pub mod revocations;
pub mod tenant_keys;

pub use material::Alg;
