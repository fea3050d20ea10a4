//! Import of password hashes made by other systems (issue 3, item 5).
//!
//! `classify` runs when an admin imports users: it recognises the format and refuses hashes
//! whose parameters would make one verification cost more than we are willing to spend (an
//! import file must not be able to pin the hashing pool or exhaust memory). `verify` runs at
//! the user's first login, re-checks the same bounds, and delegates all hashing to the
//! RustCrypto / `bcrypt` crates; the caller then rehashes the password with our own Argon2id
//! scheme. Nothing here writes a hash algorithm or compares secret bytes with `==`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use scrypt::password_hash::phc::{Output, PasswordHash as PhcHash};
use scrypt::password_hash::{Error as PhError, PasswordVerifier as _};

/// Hash schemes that can be imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `$argon2id$`, `$argon2i$`, `$argon2d$` (versions 0x10 and 0x13), no secret.
    Argon2,
    /// `$2a$`, `$2b$`, `$2y$`.
    Bcrypt,
    /// `$scrypt$ln=…,r=…,p=…$salt$hash` (passlib and RustCrypto write the same PHC form).
    Scrypt,
    /// `$pbkdf2-sha256$`: RustCrypto PHC (`i=…,l=…`) or passlib (bare rounds, adapted base64).
    Pbkdf2Sha256,
    /// `$pbkdf2-sha512$`, same two forms.
    Pbkdf2Sha512,
    /// Django's `pbkdf2_sha256$<iterations>$<salt>$<base64 hash>`.
    DjangoPbkdf2Sha256,
}

/// Per-deployment bounds; the other bounds are the fixed constants below.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub argon2_max_m_kib: u32,
}

const BCRYPT_MAX_COST: u32 = 16;
const PBKDF2_MAX_ROUNDS: u32 = 2_000_000;
const SCRYPT_MAX_LOG_N: u8 = 20;
const SCRYPT_MAX_R_TIMES_P: u64 = 64;
const ARGON2_MAX_T: u32 = 32;
const ARGON2_MAX_P: u32 = 16;

/// Messages name the format or the parameter, never the hash or the password, so they are
/// safe to show to the admin running an import.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("unsupported password hash format")]
    Unsupported,
    #[error("malformed password hash")]
    Malformed,
    #[error("password hash parameters exceed the import limits: {0}")]
    TooCostly(&'static str),
}

/// Parses and checks an imported hash string at import time (no hashing here).
pub fn classify(hash: &str, limits: &Limits) -> Result<Scheme, ImportError> {
    parse(hash, limits).map(|parsed| parsed.scheme())
}

/// Verifies a password against an imported hash: `Ok(false)` on mismatch, `Err` if the hash
/// is refused by `classify`. CPU-heavy: run it on the hashing pool.
pub fn verify(hash: &str, password: &[u8], limits: &Limits) -> Result<bool, ImportError> {
    match parse(hash, limits)? {
        Parsed::Argon2(phc) => {
            use argon2::password_hash::{Error, PasswordVerifier as _};
            // Hashes from elsewhere carry no pepper: default instance, no secret. The
            // algorithm, version and costs come from the (already bounded) string.
            match argon2::Argon2::default().verify_password(password, &phc) {
                Ok(()) => Ok(true),
                Err(Error::Password) => Ok(false),
                Err(_) => Err(ImportError::Malformed),
            }
        }
        // The crate compares with `subtle::ConstantTimeEq`.
        Parsed::Bcrypt => bcrypt::verify(password, hash).map_err(|_| ImportError::Malformed),
        Parsed::Scrypt(phc) => phc_result(scrypt::Scrypt::default().verify_password(password, &phc)),
        Parsed::Pbkdf2Phc(_, phc) => phc_result(pbkdf2::Pbkdf2::default().verify_password(password, &phc)),
        Parsed::Pbkdf2Raw {
            scheme,
            rounds,
            salt,
            expected,
        } => {
            // passlib and Django strings are not PHC, so the crate's verifier cannot take
            // them (and its PHC salt type would refuse short Django salts); derive with the
            // crate and compare through `Output`, whose equality is constant time.
            let mut buf = [0u8; 64];
            let out = &mut buf[..expected.len()];
            match scheme {
                Scheme::Pbkdf2Sha512 => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, &salt, rounds, out),
                _ => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, &salt, rounds, out),
            }
            let computed = Output::new(out).map_err(|_| ImportError::Malformed)?;
            Ok(computed == expected)
        }
    }
}

fn phc_result(result: Result<(), PhError>) -> Result<bool, ImportError> {
    match result {
        Ok(()) => Ok(true),
        Err(PhError::PasswordInvalid) => Ok(false),
        Err(_) => Err(ImportError::Malformed),
    }
}

/// A hash that passed the format and cost checks, ready for verification.
enum Parsed<'a> {
    Argon2(argon2::password_hash::PasswordHash<'a>),
    /// The bcrypt crate re-parses the string itself.
    Bcrypt,
    Scrypt(PhcHash),
    Pbkdf2Phc(Scheme, PhcHash),
    Pbkdf2Raw {
        scheme: Scheme,
        rounds: u32,
        salt: Vec<u8>,
        expected: Output,
    },
}

impl Parsed<'_> {
    fn scheme(&self) -> Scheme {
        match self {
            Parsed::Argon2(_) => Scheme::Argon2,
            Parsed::Bcrypt => Scheme::Bcrypt,
            Parsed::Scrypt(_) => Scheme::Scrypt,
            Parsed::Pbkdf2Phc(scheme, _) | Parsed::Pbkdf2Raw { scheme, .. } => *scheme,
        }
    }
}

fn parse<'a>(hash: &'a str, limits: &Limits) -> Result<Parsed<'a>, ImportError> {
    // Stray whitespace (CSV exports, trailing newlines) is an error in the import file, not an
    // unknown format; say so rather than guess what the exporter meant.
    if hash.is_empty() || hash.trim().len() != hash.len() {
        return Err(ImportError::Malformed);
    }
    // Dispatch on the exact prefix: anything else (md5-crypt, sha-crypt, $2x$, $7$, Django's
    // other hashers, bare hex digests, …) is a format we do not import.
    if ["$argon2id$", "$argon2i$", "$argon2d$"]
        .iter()
        .any(|p| hash.starts_with(p))
    {
        parse_argon2(hash, limits)
    } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
        parse_bcrypt(hash)
    } else if let Some(rest) = hash.strip_prefix("$scrypt$") {
        parse_scrypt(hash, rest, limits)
    } else if let Some(rest) = hash.strip_prefix("$pbkdf2-sha256$") {
        parse_pbkdf2(hash, rest, Scheme::Pbkdf2Sha256)
    } else if let Some(rest) = hash.strip_prefix("$pbkdf2-sha512$") {
        parse_pbkdf2(hash, rest, Scheme::Pbkdf2Sha512)
    } else if let Some(rest) = hash.strip_prefix("pbkdf2_sha256$") {
        parse_django(rest)
    } else {
        Err(ImportError::Unsupported)
    }
}

fn parse_argon2<'a>(hash: &'a str, limits: &Limits) -> Result<Parsed<'a>, ImportError> {
    use argon2::password_hash::PasswordHash;
    let mut phc = PasswordHash::new(hash).map_err(|_| ImportError::Malformed)?;
    // The PHC syntax takes a salt of 4 characters; Argon2 needs 8 bytes, and a shorter one
    // would fail at every sign-in instead of here.
    let mut buf = [0u8; 64];
    let salt_len = phc
        .salt
        .and_then(|s| s.decode_b64(&mut buf).ok())
        .map_or(0, <[u8]>::len);
    if salt_len < argon2::MIN_SALT_LEN || phc.hash.is_none() {
        return Err(ImportError::Malformed);
    }
    // The reference implementation reads a missing `v=` as version 1.0 (0x10), while the
    // argon2 crate would default to 0x13 and reject every such hash as a mismatch.
    if phc.version.is_none() {
        phc.version = Some(0x10);
    }
    argon2::Version::try_from(phc.version.unwrap_or_default()).map_err(|_| ImportError::Malformed)?;
    let params = argon2::Params::try_from(&phc).map_err(|_| ImportError::Malformed)?;
    if !params.keyid().is_empty() {
        // keyid names a secret key used by the other system; without it nothing verifies.
        return Err(ImportError::Unsupported);
    }
    if params.m_cost() > limits.argon2_max_m_kib {
        return Err(ImportError::TooCostly("argon2 memory (m) above the configured maximum"));
    }
    if params.t_cost() > ARGON2_MAX_T {
        return Err(ImportError::TooCostly("argon2 iterations (t) above 32"));
    }
    if params.p_cost() > ARGON2_MAX_P {
        return Err(ImportError::TooCostly("argon2 parallelism (p) above 16"));
    }
    Ok(Parsed::Argon2(phc))
}

fn parse_bcrypt(hash: &str) -> Result<Parsed<'static>, ImportError> {
    let parts: bcrypt::HashParts = hash.parse().map_err(|_| ImportError::Malformed)?;
    match parts.get_cost() {
        // Costs below 4 are not valid bcrypt at all.
        0..4 => Err(ImportError::Malformed),
        c if c > BCRYPT_MAX_COST => Err(ImportError::TooCostly("bcrypt cost above 16")),
        _ => Ok(Parsed::Bcrypt),
    }
}

fn parse_scrypt(hash: &str, rest: &str, limits: &Limits) -> Result<Parsed<'static>, ImportError> {
    let phc = PhcHash::new(hash).map_err(|_| ImportError::Malformed)?;
    // The crate fills in missing ln/r/p with its own recommended values; an imported hash
    // must state the parameters it was made with.
    let params_field = rest.split('$').next().unwrap_or_default();
    let stated = |name: &str| params_field.split(',').any(|kv| kv.starts_with(name));
    if !(stated("ln=") && stated("r=") && stated("p=")) || phc.salt.is_none() || phc.hash.is_none() {
        return Err(ImportError::Malformed);
    }
    let params = scrypt::Params::try_from(&phc).map_err(|_| ImportError::Malformed)?;
    let (log_n, r, p) = (params.log_n(), u64::from(params.r()), u64::from(params.p()));
    if log_n > SCRYPT_MAX_LOG_N {
        return Err(ImportError::TooCostly("scrypt ln above 20"));
    }
    if r * p > SCRYPT_MAX_R_TIMES_P {
        return Err(ImportError::TooCostly("scrypt r*p above 64"));
    }
    // scrypt needs 128·r·N bytes for each verification, outside the hashing workers' reused
    // memory, and its p lanes run one after another here: memory and work both stay within
    // what one pass over the largest Argon2 memory costs (ln ≤ 20 with r = 8 would be 1 GiB;
    // ln = 20, r = 1, p = 64 is 128 MiB but tens of seconds of a worker per wrong password).
    if 128 * r * params.n() * p > u64::from(limits.argon2_max_m_kib) * 1024 {
        return Err(ImportError::TooCostly(
            "scrypt work (128*r*N*p bytes) above the configured maximum (argon2_max_m_kib)",
        ));
    }
    Ok(Parsed::Scrypt(phc))
}

fn parse_pbkdf2(hash: &str, rest: &str, scheme: Scheme) -> Result<Parsed<'static>, ImportError> {
    let mut fields = rest.split('$');
    let params_field = fields.next().unwrap_or_default();
    if params_field.contains('=') {
        // RustCrypto PHC: `i=…,l=…`; the crate checks i ≥ 1000 and that l matches the hash.
        let phc = PhcHash::new(hash).map_err(|_| ImportError::Malformed)?;
        let params = pbkdf2::Params::try_from(&phc).map_err(|_| ImportError::Malformed)?;
        if phc.salt.is_none() || phc.hash.is_none() {
            return Err(ImportError::Malformed);
        }
        check_rounds(params.rounds())?;
        return Ok(Parsed::Pbkdf2Phc(scheme, phc));
    }
    // passlib: `<rounds>$<salt>$<checksum>`, "adapted base64" = standard alphabet with `.`
    // for `+`, no padding; the checksum is one full digest.
    let (Some(salt), Some(checksum), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(ImportError::Malformed);
    };
    let ab64 = |s: &str| {
        STANDARD_NO_PAD
            .decode(s.replace('.', "+"))
            .map_err(|_| ImportError::Malformed)
    };
    let digest_len = if scheme == Scheme::Pbkdf2Sha512 { 64 } else { 32 };
    raw_pbkdf2(scheme, params_field, ab64(salt)?, &ab64(checksum)?, digest_len)
}

fn parse_django(rest: &str) -> Result<Parsed<'static>, ImportError> {
    // Django splits at most three times and uses the salt's UTF-8 bytes as they are.
    let mut fields = rest.splitn(3, '$');
    let (Some(rounds), Some(salt), Some(b64)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(ImportError::Malformed);
    };
    if salt.is_empty() {
        return Err(ImportError::Malformed);
    }
    let digest = STANDARD.decode(b64).map_err(|_| ImportError::Malformed)?;
    raw_pbkdf2(
        Scheme::DjangoPbkdf2Sha256,
        rounds,
        salt.as_bytes().to_vec(),
        &digest,
        32,
    )
}

fn raw_pbkdf2(
    scheme: Scheme,
    rounds: &str,
    salt: Vec<u8>,
    digest: &[u8],
    digest_len: usize,
) -> Result<Parsed<'static>, ImportError> {
    // Only plain decimal digits: `u32::from_str` would also take a leading `+`.
    if rounds.is_empty() || !rounds.bytes().all(|b| b.is_ascii_digit()) || digest.len() != digest_len {
        return Err(ImportError::Malformed);
    }
    let rounds = match rounds.parse::<u32>() {
        Ok(0) => return Err(ImportError::Malformed),
        Ok(n) => n,
        // All digits yet not a u32: far above any bound.
        Err(_) => u32::MAX,
    };
    check_rounds(rounds)?;
    let expected = Output::new(digest).map_err(|_| ImportError::Malformed)?;
    Ok(Parsed::Pbkdf2Raw {
        scheme,
        rounds,
        salt,
        expected,
    })
}

fn check_rounds(rounds: u32) -> Result<(), ImportError> {
    if rounds > PBKDF2_MAX_ROUNDS {
        return Err(ImportError::TooCostly("pbkdf2 iterations above 2000000"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        argon2_max_m_kib: 65536,
    };

    #[derive(serde::Deserialize)]
    struct Fixture {
        scheme: String,
        hash: String,
        password: String,
        expect: String,
        note: String,
    }

    fn fixtures() -> Vec<Fixture> {
        serde_json::from_str(include_str!("../../tests/fixtures/legacy_hashes.json")).unwrap()
    }

    fn scheme_of(name: &str) -> Scheme {
        match name {
            "argon2" => Scheme::Argon2,
            "bcrypt" => Scheme::Bcrypt,
            "scrypt" => Scheme::Scrypt,
            "pbkdf2_sha256" => Scheme::Pbkdf2Sha256,
            "pbkdf2_sha512" => Scheme::Pbkdf2Sha512,
            "django_pbkdf2_sha256" => Scheme::DjangoPbkdf2Sha256,
            other => panic!("fixture names unknown scheme {other}"),
        }
    }

    #[test]
    fn accepted_hashes_classify_and_verify() {
        let all = fixtures();
        let ok: Vec<_> = all.iter().filter(|f| f.expect == "ok").collect();
        assert!(ok.len() >= 30, "fixture file looks truncated");
        for f in ok {
            let what = format!("{} ({})", f.note, f.hash);
            assert_eq!(classify(&f.hash, &LIMITS).unwrap(), scheme_of(&f.scheme), "{what}");
            assert!(verify(&f.hash, f.password.as_bytes(), &LIMITS).unwrap(), "{what}");
            let mut wrong = f.password.clone().into_bytes();
            wrong.push(b'x');
            assert!(!verify(&f.hash, &wrong, &LIMITS).unwrap(), "{what}");
            assert!(!verify(&f.hash, b"", &LIMITS).unwrap(), "{what}");
        }
    }

    #[test]
    fn refused_hashes_are_refused_by_classify_and_verify() {
        let all = fixtures();
        let mut seen = 0;
        for f in all.iter().filter(|f| f.expect != "ok") {
            let what = format!("{} ({})", f.note, f.hash);
            let got = classify(&f.hash, &LIMITS);
            match f.expect.as_str() {
                "too_costly" => {
                    scheme_of(&f.scheme); // over-bound fixtures are of a supported scheme
                    assert!(matches!(got, Err(ImportError::TooCostly(_))), "{what}: {got:?}");
                }
                "unsupported" => assert!(matches!(got, Err(ImportError::Unsupported)), "{what}: {got:?}"),
                "malformed" => assert!(matches!(got, Err(ImportError::Malformed)), "{what}: {got:?}"),
                other => panic!("unknown expectation {other}"),
            }
            // verify applies the same checks before hashing anything.
            let v = verify(&f.hash, f.password.as_bytes(), &LIMITS);
            assert_eq!(format!("{v:?}"), format!("{:?}", got.map(|_| true)), "{what}");
            seen += 1;
        }
        assert!(seen >= 30);
    }

    #[test]
    fn argon2_memory_bound_follows_limits() {
        let f = fixtures()
            .into_iter()
            .find(|f| f.scheme == "argon2" && f.expect == "too_costly")
            .unwrap();
        let roomy = Limits {
            argon2_max_m_kib: 1 << 20,
        };
        assert_eq!(classify(&f.hash, &roomy).unwrap(), Scheme::Argon2);
        let tight = Limits { argon2_max_m_kib: 512 };
        let ok = fixtures()
            .into_iter()
            .find(|f| f.scheme == "argon2" && f.expect == "ok")
            .unwrap();
        assert!(matches!(classify(&ok.hash, &tight), Err(ImportError::TooCostly(_))));
    }

    #[test]
    fn scrypt_memory_bound_follows_limits() {
        // Parameters only: classify does not hash.
        let hash = |ln: u8| {
            format!("$scrypt$ln={ln},r=8,p=1$ZpSM3lbrd/tmA+cTGp+U5A$Wtf/kHJ+jAFNaFcIAnsO/gDiNErOSNdNVe9YF1WlXqE")
        };
        let default = Limits {
            argon2_max_m_kib: 262_144, // the platform default, 256 MiB
        };
        assert_eq!(classify(&hash(18), &default).unwrap(), Scheme::Scrypt, "256 MiB");
        for ln in [19, 20] {
            assert!(
                matches!(classify(&hash(ln), &default), Err(ImportError::TooCostly(_))),
                "ln={ln} needs {} MiB",
                1u64 << (ln - 10)
            );
        }
        // Lanes run one after another: 64 lanes of 128 MiB are 8 GiB of work, not 128 MiB.
        let lanes = |ln: u8, r: u8, p: u8| {
            format!("$scrypt$ln={ln},r={r},p={p}$ZpSM3lbrd/tmA+cTGp+U5A$Wtf/kHJ+jAFNaFcIAnsO/gDiNErOSNdNVe9YF1WlXqE")
        };
        assert!(matches!(
            classify(&lanes(20, 1, 64), &default),
            Err(ImportError::TooCostly(_))
        ));
        assert!(matches!(
            classify(&lanes(17, 8, 4), &default),
            Err(ImportError::TooCostly(_))
        ));
        assert_eq!(
            classify(&lanes(17, 8, 2), &default).unwrap(),
            Scheme::Scrypt,
            "256 MiB of work"
        );
    }

    /// Argon2 needs a salt of 8 bytes or more; PHC strings may carry shorter ones, which would
    /// fail at every sign-in, so they are refused at import.
    #[test]
    fn short_argon2_salts_are_refused_at_import() {
        let with_salt =
            |salt: &str| format!("$argon2id$v=19$m=1024,t=1,p=1${salt}$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        assert!(
            matches!(classify(&with_salt("AAAAAAAA"), &LIMITS), Err(ImportError::Malformed)),
            "6 bytes"
        );
        assert_eq!(
            classify(&with_salt("AAAAAAAAAAA"), &LIMITS).unwrap(),
            Scheme::Argon2,
            "8 bytes"
        );
    }

    /// Hashes written by the RustCrypto crates themselves (the Python fixtures only imitate
    /// their PHC layout).
    #[test]
    fn rustcrypto_phc_round_trip() {
        use scrypt::password_hash::CustomizedPasswordHasher as _;
        let salt = b"0123456789abcdef";
        let s = scrypt::Scrypt::default()
            .hash_password_customized(b"pw", salt, None, None, scrypt::Params::new(10, 8, 1).unwrap())
            .unwrap()
            .to_string();
        let p = pbkdf2::Pbkdf2::default()
            .hash_password_customized(
                b"pw",
                salt,
                Some("pbkdf2-sha512"),
                None,
                pbkdf2::Params::new(1000).unwrap(),
            )
            .unwrap()
            .to_string();
        for (hash, scheme) in [(s, Scheme::Scrypt), (p, Scheme::Pbkdf2Sha512)] {
            assert_eq!(classify(&hash, &LIMITS).unwrap(), scheme, "{hash}");
            assert!(verify(&hash, b"pw", &LIMITS).unwrap(), "{hash}");
            assert!(!verify(&hash, b"pW", &LIMITS).unwrap(), "{hash}");
        }
    }

    #[test]
    fn messages_do_not_echo_input() {
        for f in fixtures().iter().filter(|f| f.expect != "ok") {
            let msg = classify(&f.hash, &LIMITS).unwrap_err().to_string();
            assert!(f.hash.is_empty() || !msg.contains(&f.hash), "{msg}");
        }
    }
}
