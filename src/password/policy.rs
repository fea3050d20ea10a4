//! Password policy (NIST SP 800-63B style): length bounds and no passwords built from the
//! account's own names. Every failed rule is reported with a machine-readable reason.

use serde::Serialize;

use super::MAX_PASSWORD_BYTES;
use crate::tenants::Policy;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    pub message: String,
}

pub struct Context<'a> {
    pub username: &'a str,
    pub email: Option<&'a str>,
    pub tenant_name: &'a str,
}

pub fn check(policy: &Policy, password: &str, ctx: &Context<'_>) -> Result<(), Vec<Violation>> {
    let mut v = Vec::new();
    let chars = password.chars().count();
    if chars < policy.password_min_length() {
        v.push(Violation {
            rule: "min_length",
            message: format!("at least {} characters", policy.password_min_length()),
        });
    }
    if password.len() > MAX_PASSWORD_BYTES {
        v.push(Violation {
            rule: "max_length",
            message: format!("at most {MAX_PASSWORD_BYTES} bytes"),
        });
    }
    let lower = password.to_lowercase();
    let local = ctx.email.and_then(|e| e.split('@').next()).unwrap_or_default();
    for (rule, word) in [
        ("contains_username", ctx.username),
        ("contains_email", local),
        ("contains_tenant_name", ctx.tenant_name),
    ] {
        let word = word.to_lowercase();
        if word.chars().count() >= 3 && lower.contains(&word) {
            v.push(Violation {
                rule,
                message: "must not contain the account's own names".into(),
            });
        }
    }
    if v.is_empty() { Ok(()) } else { Err(v) }
}
