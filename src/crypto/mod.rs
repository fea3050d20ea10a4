//! Keys at rest: the versioned master key (AEAD), pepper and HMAC key under `keys/`.

pub mod keyring;

pub use keyring::{KeyError, Keyring, Purpose};

/// Random bytes from the OS-seeded thread RNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::fill(&mut b[..]);
    b
}

/// Lowercase hex, two digits per byte: the one encoding of hashes, MACs and fingerprints.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

/// The bytes of a hex string (either case); `None` if it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    // `from_str_radix` alone would also take a sign ("+f").
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A URL-safe random token of `N` bytes of entropy.
pub fn random_token<const N: usize>() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<N>())
}

/// The stored form of a high-entropy secret (login tickets, codes, refresh tokens, session ids,
/// state tokens, challenges): SHA-256, hex. Such secrets need no slow hash, and the database
/// never holds the secret itself.
pub fn secret_hash(secret: impl AsRef<[u8]>) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(secret.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
        assert_eq!(hex(&[]), "");
        assert_eq!(unhex("000fa5FF10"), Some(vec![0x00, 0x0f, 0xa5, 0xff, 0x10]));
        for bad in ["0", "0g", "+f", "-1", "é0"] {
            assert_eq!(unhex(bad), None, "{bad}");
        }
    }
}
