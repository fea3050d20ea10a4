//! Private signing key material (aws-lc-rs key pairs, parsed once and cached) and its JWK.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// JWS algorithms unicred signs with. RS256 is always available (OIDC requires it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Alg {
    ES256,
    RS256,
    EdDSA,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::ES256, Alg::RS256, Alg::EdDSA];

    pub fn name(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == s)
    }

    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Alg::ES256 => jsonwebtoken::Algorithm::ES256,
            Alg::RS256 => jsonwebtoken::Algorithm::RS256,
            Alg::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("signing key: {0}")]
pub struct KeyMaterialError(pub &'static str);

enum Pair {
    Ec(EcdsaKeyPair),
    Rsa(signature::RsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A parsed private key. aws-lc-rs frees (and cleanses) its key memory on drop.
pub struct SigningKey {
    pub kid: String,
    pub alg: Alg,
    pair: Pair,
}

impl SigningKey {
    /// Generates a key; returns it with its PKCS#8 encoding (zeroized on drop) for storage.
    pub fn generate(alg: Alg, kid: String) -> Result<(SigningKey, Zeroizing<Vec<u8>>), KeyMaterialError> {
        let rng = SystemRandom::new();
        let pkcs8 = match alg {
            Alg::ES256 => EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| KeyMaterialError("EC generation failed"))?
                .as_ref()
                .to_vec(),
            Alg::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| KeyMaterialError("Ed25519 generation failed"))?
                .as_ref()
                .to_vec(),
            Alg::RS256 => {
                let pair = signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(|_| KeyMaterialError("RSA generation failed"))?;
                let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
                    .map_err(|_| KeyMaterialError("RSA encoding failed"))?;
                der.as_ref().to_vec()
            }
        };
        let pkcs8 = Zeroizing::new(pkcs8);
        Ok((SigningKey::from_pkcs8(alg, kid, &pkcs8)?, pkcs8))
    }

    pub fn from_pkcs8(alg: Alg, kid: String, der: &[u8]) -> Result<SigningKey, KeyMaterialError> {
        let bad = |_| KeyMaterialError("stored key does not parse");
        let pair = match alg {
            Alg::ES256 => {
                Pair::Ec(EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(bad)?)
            }
            Alg::EdDSA => Pair::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(bad)?),
            Alg::RS256 => Pair::Rsa(signature::RsaKeyPair::from_pkcs8(der).map_err(bad)?),
        };
        Ok(SigningKey { kid, alg, pair })
    }

    /// The public JWK (RFC 7517) with `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> serde_json::Value {
        let mut jwk = match &self.pair {
            Pair::Ec(p) => {
                let point = p.public_key().as_ref();
                serde_json::json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])})
            }
            Pair::Ed(p) => {
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(p.public_key().as_ref())})
            }
            Pair::Rsa(p) => {
                let c = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(p.public_key());
                serde_json::json!({"kty": "RSA", "n": B64.encode(&c.n), "e": B64.encode(&c.e)})
            }
        };
        jwk["kid"] = self.kid.clone().into();
        jwk["alg"] = self.alg.name().into();
        jwk["use"] = "sig".into();
        jwk
    }

    /// Raw JWS signature over `message` (ES256 in the fixed r‖s form JWS requires).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Ec(p) => p.sign(&rng, message).expect("ECDSA signing").as_ref().to_vec(),
            Pair::Ed(p) => p.sign(message).as_ref().to_vec(),
            Pair::Rsa(p) => {
                let mut sig = vec![0; p.public_modulus_len()];
                p.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .expect("RSA signing");
                sig
            }
        }
    }
}

/// A verification key built from a published JWK.
pub fn decoding_key(jwk: &serde_json::Value) -> Option<jsonwebtoken::DecodingKey> {
    let s = |k: &str| jwk.get(k).and_then(|v| v.as_str());
    match s("kty")? {
        "EC" => jsonwebtoken::DecodingKey::from_ec_components(s("x")?, s("y")?).ok(),
        "OKP" => jsonwebtoken::DecodingKey::from_ed_components(s("x")?).ok(),
        "RSA" => jsonwebtoken::DecodingKey::from_rsa_components(s("n")?, s("e")?).ok(),
        _ => None,
    }
}
