//! How a trial app validates unicred access tokens: offline against the tenant's JWKS, or
//! online with introspection. Copy what you need.
//!
//! ```sh
//! cargo run --example validate_token -- <issuer> <audience> <access-token> [client_id client_secret]
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

/// A JWKS cache: refreshed after `max_age`, and at once (at most every 10 s) on an unknown
/// `kid`, because unicred publishes a key before it signs with it.
struct Jwks {
    url: String,
    keys: HashMap<String, (jsonwebtoken::Algorithm, DecodingKey)>,
    fetched: Option<Instant>,
}

impl Jwks {
    async fn key(
        &mut self,
        http: &reqwest::Client,
        kid: &str,
    ) -> Result<&(jsonwebtoken::Algorithm, DecodingKey), String> {
        let stale = self.fetched.is_none_or(|t| t.elapsed() > Duration::from_secs(300));
        let unknown =
            !self.keys.contains_key(kid) && self.fetched.is_none_or(|t| t.elapsed() > Duration::from_secs(10));
        if stale || unknown {
            let set: JwkSet = http
                .get(&self.url)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            self.keys.clear();
            for jwk in &set.keys {
                let (Some(kid), Some(alg)) = (&jwk.common.key_id, jwk.common.key_algorithm) else {
                    continue;
                };
                let alg = alg.to_string().parse().map_err(|_| "unsupported alg".to_string())?;
                self.keys.insert(
                    kid.clone(),
                    (alg, DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?),
                );
            }
            self.fetched = Some(Instant::now());
        }
        self.keys.get(kid).ok_or_else(|| "unknown signing key".to_string())
    }
}

/// Offline: signature with the published key, `typ`, `iss`, `aud`, `exp` with 5 s of skew.
async fn validate_offline(
    http: &reqwest::Client,
    jwks: &mut Jwks,
    issuer: &str,
    audience: &str,
    token: &str,
) -> Result<Value, String> {
    let header = decode_header(token).map_err(|e| e.to_string())?;
    if header.typ.as_deref() != Some("at+jwt") {
        return Err("not an access token (typ must be at+jwt, RFC 9068)".into());
    }
    let kid = header.kid.ok_or("no kid")?;
    let (alg, key) = jwks.key(http, &kid).await?;
    if *alg != header.alg {
        return Err("algorithm does not match the key".into());
    }
    let mut v = Validation::new(*alg);
    v.leeway = 5;
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    decode::<Value>(token, key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

/// Online: RFC 7662 introspection sees revocations within a second.
async fn validate_online(
    http: &reqwest::Client,
    issuer: &str,
    id: &str,
    secret: &str,
    token: &str,
) -> Result<Value, String> {
    let r: Value = http
        .post(format!("{issuer}/introspect"))
        .basic_auth(id, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if r["active"] == true {
        Ok(r)
    } else {
        Err("inactive token".into())
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [issuer, audience, token, rest @ ..] = args.as_slice() else {
        eprintln!("usage: validate_token <issuer> <audience> <access-token> [client_id client_secret]");
        std::process::exit(2);
    };
    let http = reqwest::Client::new();
    let mut jwks = Jwks {
        url: format!("{issuer}/jwks.json"),
        keys: HashMap::new(),
        fetched: None,
    };
    match validate_offline(&http, &mut jwks, issuer, audience, token).await {
        Ok(claims) => println!("offline: valid: {claims}"),
        Err(e) => println!("offline: invalid: {e}"),
    }
    if let [id, secret] = rest {
        match validate_online(&http, issuer, id, secret, token).await {
            Ok(r) => println!("introspection: active: {r}"),
            Err(e) => println!("introspection: {e}"),
        }
    }
}
