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
    // The copies made here are wiped when dropped (zxcvbn's own are beyond reach).
    let lower = zeroize::Zeroizing::new(password.to_lowercase());
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
    // zxcvbn's cost grows with length; its verdict on the first 100 characters is enough.
    let head: zeroize::Zeroizing<String> = zeroize::Zeroizing::new(password.chars().take(100).collect());
    let inputs = [ctx.username, local, ctx.tenant_name];
    let entropy = zxcvbn::zxcvbn(&head, &inputs);
    let whole_common = entropy.sequence().iter().any(|m| {
        m.i == 0
            && m.j + 1 >= head.chars().count()
            // The crate does not export its dictionary type; `Passwords` is its default.
            && matches!(&m.pattern, zxcvbn::matching::patterns::MatchPattern::Dictionary(d)
                if d.dictionary_name == Default::default())
    });
    if whole_common {
        v.push(Violation {
            rule: "common_password",
            message: "is a commonly used password".into(),
        });
    }
    let score = entropy.score() as u8;
    if score < policy.zxcvbn_min_score() {
        v.push(Violation {
            rule: "too_weak",
            message: format!("strength {score} is below the required {}", policy.zxcvbn_min_score()),
        });
    }
    if v.is_empty() { Ok(()) } else { Err(v) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(pw: &str) -> Vec<&'static str> {
        let ctx = Context {
            username: "alice",
            email: Some("alice.smith@bank.example"),
            tenant_name: "Example Bank",
        };
        match check(&Policy::default(), pw, &ctx) {
            Ok(()) => vec![],
            Err(v) => v.into_iter().map(|v| v.rule).collect(),
        }
    }

    #[test]
    fn each_rule_reports_its_reason() {
        assert_eq!(rules("correct horse battery staple pickle"), Vec::<&str>::new());
        assert!(rules("short").contains(&"min_length"));
        assert!(rules("password1234").contains(&"common_password"));
        assert!(rules("aaaaaaaaaaaaaaaa").contains(&"too_weak"));
        assert!(rules("alice-is-my-name-really").contains(&"contains_username"));
        assert!(rules("alice.smith-vault-9137").contains(&"contains_email"));
        assert!(rules("Example Bank forever 2024!").contains(&"contains_tenant_name"));
        assert!(rules(&"x".repeat(1025)).contains(&"max_length"));
    }
}
