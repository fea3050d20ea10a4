//! Usernames per RFC 8265 UsernameCaseMapped (PRECIS): width-mapped, case-folded, NFC, and
//! restricted to the IdentifierClass, so visually equal names cannot register twice.

use precis_core::profile::Profile;
use precis_profiles::UsernameCaseMapped;

/// Longest username accepted before and after preparation (bytes).
pub const MAX_BYTES: usize = 256;

pub fn normalize(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() {
        return Err("must not be empty");
    }
    if raw.len() > MAX_BYTES {
        return Err("is too long (at most 256 bytes)");
    }
    let profile = UsernameCaseMapped::default();
    let out = profile
        .enforce(raw)
        .map_err(|_| "contains characters a username may not use")?;
    if out.is_empty() || out.len() > MAX_BYTES {
        return Err("is not a valid username");
    }
    Ok(out.into_owned())
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn case_and_width_fold() {
        assert_eq!(normalize("Alice").unwrap(), "alice");
        assert_eq!(normalize("ＡＬＩＣＥ").unwrap(), "alice");
        assert!(normalize("").is_err());
        assert!(normalize("a b").is_err());
        assert!(normalize(&"a".repeat(10_000)).is_err());
        assert!(normalize("bad\u{0000}").is_err());
    }
}
