//! `application/x-www-form-urlencoded` request bodies for OAuth endpoints. Parameters must not
//! repeat (RFC 6749 §3.1, §3.2) except those defined as lists (`resource`, RFC 8707).

use axum::body::Bytes;
use axum::http::{HeaderMap, header};

use crate::http::OAuthError;

pub struct Form {
    pairs: Vec<(String, String)>,
}

const REPEATABLE: &[&str] = &["resource"];

impl Form {
    pub fn parse(headers: &HeaderMap, body: &Bytes) -> Result<Form, OAuthError> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "content type must be application/x-www-form-urlencoded",
            ));
        }
        if std::str::from_utf8(body).is_err() {
            return Err(OAuthError::invalid_request("body is not UTF-8"));
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(body) {
            if pairs.len() >= 64 {
                return Err(OAuthError::invalid_request("too many parameters"));
            }
            if v.contains('\u{fffd}') || k.contains('\u{fffd}') {
                return Err(OAuthError::invalid_request("parameters are not UTF-8"));
            }
            if !REPEATABLE.contains(&k.as_ref()) && pairs.iter().any(|(p, _)| p == &k) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{}` repeated",
                    k.chars().take(32).collect::<String>()
                )));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Form { pairs })
    }

    /// A parameter; empty values count as absent (RFC 6749 §3.1).
    pub fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(p, v)| p == k && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, k: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(p, v)| p == k && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn require(&self, k: &str) -> Result<&str, OAuthError> {
        self.get(k)
            .ok_or_else(|| OAuthError::invalid_request(format!("`{k}` is required")))
    }
}
