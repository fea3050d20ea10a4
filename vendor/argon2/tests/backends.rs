//! Tests for the unicred patch: every compression backend (portable, AVX2,
//! AVX-512) must give identical results. Backends not supported by the CPU
//! running the tests are reported and skipped (the portable one always runs).

#![cfg(all(feature = "alloc", feature = "password-hash"))]

use argon2::{
    Algorithm, Argon2, AssociatedData, Backend, Block, Params, ParamsBuilder, PasswordHash,
    PasswordVerifier, Version,
};
use hex_literal::hex;

/// Small deterministic RNG (SplitMix64) so failures are reproducible.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    fn block(&mut self) -> Block {
        let mut b = Block::new();
        for w in b.as_mut() {
            *w = self.next_u64();
        }
        b
    }
}

/// Backends usable on this machine (always includes the portable one).
fn backends() -> Vec<Backend> {
    let available: Vec<Backend> = Backend::ALL
        .into_iter()
        .filter(|b| b.is_available())
        .collect();
    for b in Backend::ALL {
        if !b.is_available() {
            eprintln!("note: backend {b} not supported by this CPU, skipped");
        }
    }
    assert!(available.contains(&Backend::Portable));
    available
}

fn ctx<'k>(
    secret: Option<&'k [u8]>,
    algorithm: Algorithm,
    version: Version,
    params: Params,
    backend: Backend,
) -> Argon2<'k> {
    let a = match secret {
        Some(s) => Argon2::new_with_secret(s, algorithm, version, params).unwrap(),
        None => Argon2::new(algorithm, version, params),
    };
    let a = a.with_compress_backend(backend).expect("backend available");
    assert_eq!(a.compress_backend(), backend);
    a
}

#[test]
fn active_backend_is_best_available() {
    let active = argon2::active_backend();
    assert!(active.is_available());
    assert_eq!(argon2::active_backend_name(), active.name());
    assert_eq!(Argon2::default().compress_backend(), active);
    let best = Backend::ALL.into_iter().find(|b| b.is_available()).unwrap();
    assert_eq!(active, best);
    eprintln!("active backend: {active}");
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    {
        assert_eq!(
            Backend::Avx512.is_available(),
            std::is_x86_feature_detected!("avx512f")
        );
        assert_eq!(
            Backend::Avx2.is_available(),
            std::is_x86_feature_detected!("avx2")
        );
    }
}

#[test]
fn unavailable_backend_is_refused() {
    for b in Backend::ALL {
        assert_eq!(
            Argon2::default().with_compress_backend(b).is_some(),
            b.is_available()
        );
    }
}

/// RFC 9106 section 5 test vectors (version 0x13) and the reference
/// implementation's version 0x10 vectors: 32 KiB, t=3, p=4, secret, AD.
#[test]
fn rfc9106_vectors_every_backend() {
    let cases: [(Algorithm, Version, [u8; 32]); 6] = [
        (
            Algorithm::Argon2d,
            Version::V0x13,
            hex!("512b391b6f1162975371d30919734294f868e3be3984f3c1a13a4db9fabe4acb"),
        ),
        (
            Algorithm::Argon2i,
            Version::V0x13,
            hex!("c814d9d1dc7f37aa13f0d77f2494bda1c8de6b016dd388d29952a4c4672b6ce8"),
        ),
        (
            Algorithm::Argon2id,
            Version::V0x13,
            hex!("0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"),
        ),
        (
            Algorithm::Argon2d,
            Version::V0x10,
            hex!("96a9d4e5a1734092c85e29f410a45914a5dd1f5cbf08b2670da68a0285abf32b"),
        ),
        (
            Algorithm::Argon2i,
            Version::V0x10,
            hex!("87aeedd6517ab830cd9765cd8231abb2e647a5dee08f7c05e02fcb763335d0fd"),
        ),
        (
            Algorithm::Argon2id,
            Version::V0x10,
            hex!("b64615f07789b66b645b67ee9ed3b377ae350b6bfcbb0fc95141ea8f322613c0"),
        ),
    ];
    let params = ParamsBuilder::new()
        .m_cost(32)
        .t_cost(3)
        .p_cost(4)
        .data(AssociatedData::new(&[0x04; 12]).unwrap())
        .build()
        .unwrap();
    let secret = [0x03; 8];
    for backend in backends() {
        for (algorithm, version, tag) in cases {
            let a = ctx(Some(&secret), algorithm, version, params.clone(), backend);
            let mut out = [0u8; 32];
            a.hash_password_into(&[0x01; 32], &[0x02; 16], &mut out)
                .unwrap();
            assert_eq!(out, tag, "{algorithm:?} {version:?} backend {backend}");
            // Same through the memory-reusing entry point, with a dirty buffer.
            let mut blocks = vec![Block::new(); params.block_count()];
            for b in &mut blocks {
                b.as_mut().fill(0xdead_beef);
            }
            let mut out = [0u8; 32];
            a.hash_password_into_with_memory(&[0x01; 32], &[0x02; 16], &mut out, &mut blocks)
                .unwrap();
            assert_eq!(
                out, tag,
                "{algorithm:?} {version:?} backend {backend} (reused memory)"
            );
        }
    }
}

/// Reference implementation vectors at m = 2^16 (64 MiB) for Argon2i/Argon2id.
#[test]
fn reference_vectors_64mib_every_backend() {
    let cases: [(Algorithm, [u8; 32]); 2] = [
        (
            Algorithm::Argon2i,
            hex!("c1628832147d9720c5bd1cfd61367078729f6dfb6f8fea9ff98158e0d7816ed0"),
        ),
        (
            Algorithm::Argon2id,
            hex!("09316115d5cf24ed5a15a31a3ba326e5cf32edc24702987c02b6566f61913cf7"),
        ),
    ];
    let params = Params::new(1 << 16, 2, 1, Some(32)).unwrap();
    let mut blocks = vec![Block::new(); params.block_count()];
    for backend in backends() {
        for (algorithm, tag) in cases {
            let a = ctx(None, algorithm, Version::V0x13, params.clone(), backend);
            let mut out = [0u8; 32];
            a.hash_password_into_with_memory(b"password", b"somesalt", &mut out, &mut blocks)
                .unwrap();
            assert_eq!(out, tag, "{algorithm:?} backend {backend}");
        }
    }
}

/// Compression function on thousands of random blocks: every SIMD backend
/// equals the portable code, for both `next = G(x, y)` and `next ^= G(x, y)`.
#[test]
fn compression_matches_portable_on_random_blocks() {
    let mut rng = Rng(0x756e_6963_7265_6421);
    let simd: Vec<Backend> = backends()
        .into_iter()
        .filter(|b| *b != Backend::Portable)
        .collect();
    for i in 0..4000 {
        let (x, y) = match i {
            // Edge cases first: zeros, all ones, identical inputs.
            0 => (Block::new(), Block::new()),
            1 => {
                let mut ones = Block::new();
                ones.as_mut().fill(u64::MAX);
                (ones, Block::new())
            }
            2 => {
                let b = rng.block();
                (b, b)
            }
            _ => (rng.block(), rng.block()),
        };
        let old = rng.block();
        let expected = Backend::Portable.compress(&x, &y);
        let mut expected_xor = old;
        Backend::Portable.compress_into(&x, &y, &mut expected_xor, true);
        for &backend in &simd {
            assert_eq!(
                backend.compress(&x, &y).as_ref(),
                expected.as_ref(),
                "block {i}, {backend}"
            );
            let mut got = old;
            backend.compress_into(&x, &y, &mut got, false);
            assert_eq!(got.as_ref(), expected.as_ref(), "block {i}, {backend}");
            let mut got = old;
            backend.compress_into(&x, &y, &mut got, true);
            assert_eq!(
                got.as_ref(),
                expected_xor.as_ref(),
                "block {i} xor, {backend}"
            );
        }
    }
}

/// Full hashes with random small parameter sets agree across backends.
#[test]
fn full_hash_matches_portable_on_random_params() {
    let mut rng = Rng(0x0061_7267_6f6e_3221);
    let all = backends();
    let algorithms = [Algorithm::Argon2d, Algorithm::Argon2i, Algorithm::Argon2id];
    let versions = [Version::V0x10, Version::V0x13];
    for case in 0..300 {
        let p = 1 + rng.below(4) as u32;
        let m = 8 * p + rng.below(200) as u32;
        let t = 1 + rng.below(4) as u32;
        let out_len = 4 + rng.below(60) as usize;
        let algorithm = algorithms[rng.below(3) as usize];
        let version = versions[rng.below(2) as usize];
        let len = rng.below(40) as usize;
        let pwd = rng.bytes(len);
        let len = 8 + rng.below(24) as usize;
        let salt = rng.bytes(len);
        let len = rng.below(3) as usize * 8;
        let secret = rng.bytes(len);
        let len = rng.below(2) as usize * 12;
        let ad = rng.bytes(len);
        let params = ParamsBuilder::new()
            .m_cost(m)
            .t_cost(t)
            .p_cost(p)
            .data(AssociatedData::new(&ad).unwrap())
            .output_len(out_len)
            .build()
            .unwrap();
        let secret = (!secret.is_empty()).then_some(&secret[..]);
        let mut expected = vec![0u8; out_len];
        ctx(
            secret,
            algorithm,
            version,
            params.clone(),
            Backend::Portable,
        )
        .hash_password_into(&pwd, &salt, &mut expected)
        .unwrap();
        for &backend in &all {
            let mut got = vec![0u8; out_len];
            ctx(secret, algorithm, version, params.clone(), backend)
                .hash_password_into(&pwd, &salt, &mut got)
                .unwrap();
            assert_eq!(
                got, expected,
                "case {case}: {algorithm:?} {version:?} m={m} t={t} p={p} backend {backend}"
            );
        }
    }
}

/// PHC strings produced by the unpatched crates.io `argon2` 0.5.3 (generated
/// with `benches/argon2-ref`'s `gen-upstream` mode) verify with every backend.
#[test]
fn upstream_hashes_verify_every_backend() {
    for backend in backends() {
        let a = Argon2::default().with_compress_backend(backend).unwrap();
        for (password, phc) in UPSTREAM_HASHES {
            let hash = PasswordHash::new(phc).unwrap();
            assert!(
                a.verify_password(password.as_bytes(), &hash).is_ok(),
                "{phc} with {backend}"
            );
            assert!(
                a.verify_password(b"wrong password", &hash).is_err(),
                "{phc} with {backend}"
            );
        }
    }
}

/// (password, PHC string) pairs from the unpatched crate.
const UPSTREAM_HASHES: &[(&str, &str)] = &[
    ("hunter42", "$argon2id$v=19$m=19456,t=2,p=1$dXBzdHJlYW0tc2FsdC0w$PJQmKLHJKXVrap6cdPLMtKvhDBeupjQV/+GZxRebnC0"),
    ("correct horse", "$argon2id$v=19$m=64,t=3,p=2$dXBzdHJlYW0tc2FsdC0x$oPA/yG9oRdLvFyD0ct5HKXeKzOfJyGeiwTJt7+LIj8Y"),
    ("pässwörd", "$argon2i$v=19$m=256,t=2,p=4$dXBzdHJlYW0tc2FsdC0y$KmlcAIQ3Wo/RQ6itc4JQo+JkumKyXc9zIrL39tvYaus"),
    ("", "$argon2d$v=19$m=32,t=1,p=1$dXBzdHJlYW0tc2FsdC0z$F4zeI7yTwnRo+evd/zG6+uObvl9sY+jsPF9HYtcfnMw"),
    ("legacy", "$argon2id$v=16$m=128,t=2,p=1$dXBzdHJlYW0tc2FsdC00$mJvqIVuDxyGXMyuRWib9QuY8s96LkHDUKoWruozb0yw"),
];

/// unicred patch: hashing in caller-provided bytes viewed as blocks gives the same output as
/// in a `Vec<Block>`; misaligned or ragged byte slices are refused.
#[test]
fn slice_from_bytes_mut_hashes_identically() {
    let params = Params::new(64, 2, 1, Some(32)).unwrap();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut expected = [0u8; 32];
    let mut blocks = vec![Block::new(); params.block_count()];
    argon
        .hash_password_into_with_memory(
            b"password",
            b"somesaltsomesalt",
            &mut expected,
            &mut blocks,
        )
        .unwrap();

    let len = params.block_count() * Block::SIZE;
    let mut raw = vec![0xa5u8; len + 128];
    let start = raw.as_ptr().align_offset(64);
    let mut out = [0u8; 32];
    let view =
        Block::slice_from_bytes_mut(&mut raw[start..start + len]).expect("aligned whole blocks");
    assert_eq!(view.len(), params.block_count());
    argon
        .hash_password_into_with_memory(b"password", b"somesaltsomesalt", &mut out, view)
        .unwrap();
    assert_eq!(out, expected);

    assert!(Block::slice_from_bytes_mut(&mut raw[start + 8..start + 8 + len]).is_none());
    assert!(Block::slice_from_bytes_mut(&mut raw[start..start + len - 1]).is_none());
}
