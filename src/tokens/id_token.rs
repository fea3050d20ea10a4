//! OpenID Connect ID tokens, signed with the client's `id_token_signed_response_alg`, else the
//! tenant's default algorithm.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;
use sha2::{Digest, Sha256, Sha512};

use super::Alg;

#[derive(Debug, Serialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub azp: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    pub acr: String,
    pub amr: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub at_hash: String,
}

/// `at_hash` (OIDC Core §3.1.3.6): the left half of the access token's hash with the hash of
/// the signing algorithm (SHA-512 for Ed25519).
pub fn at_hash(alg: Alg, access_token: &str) -> String {
    match alg {
        Alg::EdDSA => B64.encode(&Sha512::digest(access_token.as_bytes())[..32]),
        Alg::ES256 | Alg::RS256 => B64.encode(&Sha256::digest(access_token.as_bytes())[..16]),
    }
}
