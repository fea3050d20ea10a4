//! Keys at rest: the versioned master key (AEAD), pepper and HMAC key under `keys/`.

pub mod keyring;

pub use keyring::{KeyError, Keyring, Purpose};

/// Random bytes from the OS-seeded thread RNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::fill(&mut b[..]);
    b
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
    Sha256::digest(secret.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
