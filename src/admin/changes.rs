//! What a management change's audit event says: only the fields that changed, before and
//! after, and never more than an event may hold. A change the API accepted must always be
//! recordable, or it would be applied and answered 500 with no trace in the chain.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::audit::MAX_DATA_BYTES;
use crate::crypto::hex;

/// Strings longer than this (certificates, long URIs) are recorded by their SHA-256.
const LONG: usize = 256;

/// `{"before": {...}, "after": {...}}` with the fields that differ (nested objects compared
/// field by field; anything else as a whole).
pub fn changes(before: &Value, after: &Value) -> Value {
    let (b, a) = diff(before, after).unwrap_or_else(|| (json!({}), json!({})));
    json!({"before": b, "after": a})
}

fn diff(before: &Value, after: &Value) -> Option<(Value, Value)> {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let (mut bo, mut ao) = (Map::new(), Map::new());
            let keys = b.keys().chain(a.keys().filter(|k| !b.contains_key(*k)));
            for k in keys {
                let (bv, av) = (b.get(k).unwrap_or(&Value::Null), a.get(k).unwrap_or(&Value::Null));
                if let Some((x, y)) = diff(bv, av) {
                    bo.insert(k.clone(), x);
                    ao.insert(k.clone(), y);
                }
            }
            (!bo.is_empty()).then_some((Value::Object(bo), Value::Object(ao)))
        }
        _ => (before != after).then(|| (before.clone(), after.clone())),
    }
}

/// `data` made to fit an audit event: long strings become `sha256:<hex>`; if it is still too
/// large, only its digest, size and top-level field names are kept.
pub fn bounded(data: Value) -> Value {
    let data = shorten(data);
    let text = serde_json_canonicalizer::to_string(&data).unwrap_or_default();
    if text.len() <= MAX_DATA_BYTES {
        return data;
    }
    let fields: Vec<&String> = data.as_object().map(|o| o.keys().collect()).unwrap_or_default();
    json!({"summarised": {"sha256": digest(&text), "bytes": text.len(), "fields": fields}})
}

fn shorten(v: Value) -> Value {
    match v {
        Value::String(s) if s.len() > LONG => Value::String(digest(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(shorten).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, shorten(v))).collect()),
        v => v,
    }
}

fn digest(s: &str) -> String {
    format!("sha256:{}", hex(&Sha256::digest(s.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_fields_are_kept_nested_included() {
        let before = json!({"name": "a", "policy": {"mfa": "off", "min": 12}, "uris": ["x"]});
        let after = json!({"name": "a", "policy": {"mfa": "required", "min": 12}, "uris": ["x", "y"]});
        assert_eq!(
            changes(&before, &after),
            json!({"before": {"policy": {"mfa": "off"}, "uris": ["x"]},
                   "after": {"policy": {"mfa": "required"}, "uris": ["x", "y"]}})
        );
        assert_eq!(changes(&before, &before), json!({"before": {}, "after": {}}));
    }

    #[test]
    fn anything_accepted_fits_an_event() {
        let long = "A".repeat(9000);
        let d = bounded(json!({"roots": [long.clone()]}));
        assert_eq!(d, json!({"roots": [digest(&long)]}));
        let many: Vec<String> = (0..200)
            .map(|i| format!("https://app.example/{i}/{}", "p".repeat(200)))
            .collect();
        let d = bounded(json!({"before": {"redirect_uris": many.clone()}, "after": {"redirect_uris": many}}));
        let text = serde_json_canonicalizer::to_string(&d).unwrap();
        assert!(text.len() <= MAX_DATA_BYTES, "{}", text.len());
        assert_eq!(d["summarised"]["fields"], json!(["after", "before"]));
    }
}
