//! Explicit SIMD kernels for the Argon2 compression function (`x86_64` only).
//!
//! This is the only module of the crate that contains `unsafe` code. Every
//! kernel is a `#[target_feature]` function; the safe wrappers below call one
//! only after the cached run-time CPU feature check for that feature set.

use crate::{Backend, Block};
use core::sync::atomic::{AtomicU8, Ordering};

mod avx2;
mod avx512;

const UNKNOWN: u8 = 0;
const HAS_AVX2: u8 = 1 << 1;
const HAS_AVX512: u8 = 1 << 2;
const DETECTED: u8 = 1 << 7;

/// Cached result of CPU feature detection (`UNKNOWN` until first use).
static FEATURES: AtomicU8 = AtomicU8::new(UNKNOWN);

#[cfg(not(feature = "std"))]
cpufeatures::new!(avx2_cpuid, "avx2");
#[cfg(not(feature = "std"))]
cpufeatures::new!(avx512_cpuid, "avx512f");

#[cold]
fn detect() -> u8 {
    let mut features = DETECTED;
    #[cfg(feature = "std")]
    {
        if std::is_x86_feature_detected!("avx2") {
            features |= HAS_AVX2;
        }
        if std::is_x86_feature_detected!("avx512f") {
            features |= HAS_AVX512;
        }
    }
    #[cfg(not(feature = "std"))]
    {
        // Without `std`, `is_x86_feature_detected!` is not available; the
        // `cpufeatures` crate performs the same CPUID + XGETBV (OS support) checks.
        if avx2_cpuid::get() {
            features |= HAS_AVX2;
        }
        if avx512_cpuid::get() {
            features |= HAS_AVX512;
        }
    }
    FEATURES.store(features, Ordering::Relaxed);
    features
}

#[inline]
fn features() -> u8 {
    match FEATURES.load(Ordering::Relaxed) {
        UNKNOWN => detect(),
        f => f,
    }
}

/// AVX2 is supported by the CPU and enabled by the OS.
#[inline]
pub(crate) fn has_avx2() -> bool {
    features() & HAS_AVX2 != 0
}

/// AVX-512F is supported by the CPU and enabled by the OS (ZMM state saved).
#[inline]
pub(crate) fn has_avx512() -> bool {
    features() & HAS_AVX512 != 0
}

/// Compress with a SIMD backend. Returns `false` (doing nothing) if `backend`
/// is the portable one or is not available on this CPU.
#[inline]
pub(crate) fn compress_into(
    backend: Backend,
    prev: &Block,
    reference: &Block,
    next: &mut Block,
    with_xor: bool,
) -> bool {
    match backend {
        Backend::Avx512 if has_avx512() => {
            // SAFETY: guarded by `has_avx512()`, the cached
            // `is_x86_feature_detected!("avx512f")` check, so the CPU supports
            // every feature the `#[target_feature(enable = "avx512f")]` kernel uses.
            unsafe { avx512::compress_into(prev, reference, next, with_xor) };
            true
        }
        Backend::Avx2 if has_avx2() => {
            // SAFETY: guarded by `has_avx2()`, the cached
            // `is_x86_feature_detected!("avx2")` check, so the CPU supports
            // every feature the `#[target_feature(enable = "avx2")]` kernel uses.
            unsafe { avx2::compress_into(prev, reference, next, with_xor) };
            true
        }
        _ => false,
    }
}

/// `memory[cur] (^)= G(memory[prev], memory[reference])` with a SIMD backend.
/// Returns `false` (doing nothing) if `backend` is the portable one or is not
/// available on this CPU.
#[inline]
pub(crate) fn fill_block(
    backend: Backend,
    memory: &mut [Block],
    prev: usize,
    reference: usize,
    cur: usize,
    with_xor: bool,
) -> bool {
    match backend {
        Backend::Avx512 if has_avx512() => {
            // SAFETY: guarded by `has_avx512()`, the cached
            // `is_x86_feature_detected!("avx512f")` check.
            unsafe { avx512::fill_block(memory, prev, reference, cur, with_xor) };
            true
        }
        Backend::Avx2 if has_avx2() => {
            // SAFETY: guarded by `has_avx2()`, the cached
            // `is_x86_feature_detected!("avx2")` check.
            unsafe { avx2::fill_block(memory, prev, reference, cur, with_xor) };
            true
        }
        _ => false,
    }
}
