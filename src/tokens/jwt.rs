//! Compact JWS issuance with a cached key, and validation through `jsonwebtoken`.
//!
//! Issuing assembles `b64(header).b64(claims).b64(sig)` itself so the key pair is parsed once
//! (jsonwebtoken's `encode` re-parses the PKCS#8 key on every call); every token unicred
//! accepts is parsed and verified by `jsonwebtoken`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::material::SigningKey;

pub fn sign<C: Serialize>(key: &SigningKey, typ: &str, claims: &C) -> String {
    #[derive(Serialize)]
    struct Header<'a> {
        alg: &'a str,
        typ: &'a str,
        kid: &'a str,
    }
    let header = serde_json::to_vec(&Header {
        alg: key.alg.name(),
        typ,
        kid: &key.kid,
    })
    .expect("header serializes");
    let claims = serde_json::to_vec(claims).expect("claims serialize");
    let mut out = String::with_capacity(64 + (header.len() + claims.len()) * 4 / 3 + 400);
    B64.encode_string(&header, &mut out);
    out.push('.');
    B64.encode_string(&claims, &mut out);
    let sig = key.sign(out.as_bytes());
    out.push('.');
    B64.encode_string(&sig, &mut out);
    out
}

/// Why a token was refused. Never shown in detail to the presenter.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("malformed token")]
    Malformed,
    #[error("unknown key")]
    UnknownKey,
    #[error("wrong token type")]
    WrongType,
    #[error("verification failed: {0}")]
    Verify(jsonwebtoken::errors::Error),
    #[error("revoked")]
    Revoked,
    #[error("issuer or tenant mismatch")]
    WrongIssuer,
    #[error("expired")]
    Expired,
    #[error("wrong audience")]
    WrongAudience,
}

pub struct Peek {
    pub kid: String,
    pub alg: jsonwebtoken::Algorithm,
    pub typ: Option<String>,
}

/// Reads the (unverified) header: only to choose the key; everything is verified after.
pub fn peek(token: &str) -> Result<Peek, Invalid> {
    if token.len() > 16 * 1024 {
        return Err(Invalid::Malformed);
    }
    let h = jsonwebtoken::decode_header(token).map_err(|_| Invalid::Malformed)?;
    Ok(Peek {
        kid: h.kid.ok_or(Invalid::Malformed)?,
        alg: h.alg,
        typ: h.typ,
    })
}

/// Verifies signature, `exp` (5 s leeway), `iss` and `aud`.
pub fn verify<C: DeserializeOwned>(
    token: &str,
    key: &jsonwebtoken::DecodingKey,
    alg: jsonwebtoken::Algorithm,
    issuer: &str,
    audience: Option<&str>,
) -> Result<C, Invalid> {
    let mut v = jsonwebtoken::Validation::new(alg);
    v.leeway = 5;
    v.set_issuer(&[issuer]);
    match audience {
        Some(aud) => v.set_audience(&[aud]),
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&["exp", "iss", "iat"]);
    jsonwebtoken::decode::<C>(token, key, &v)
        .map(|d| d.claims)
        .map_err(Invalid::Verify)
}
