//! Selection of the block compression backend (portable, AVX2, AVX-512).
//!
//! Added by the unicred patch (see `PATCH.md`). Selection happens at run time
//! from CPU feature detection and is cached; nothing depends on the
//! `target-cpu` the crate was built for.

use crate::Block;
use core::fmt;

/// Implementation of the Argon2 compression function `G`.
#[derive(Copy, Clone, Debug, Eq, PartialEq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// The crate's original portable Rust code (no explicit SIMD).
    Portable,
    /// Hand-written AVX2 kernel (`x86_64` only).
    Avx2,
    /// Hand-written AVX-512F kernel (`x86_64` only).
    Avx512,
}

impl Backend {
    /// All backends, fastest first.
    pub const ALL: [Backend; 3] = [Backend::Avx512, Backend::Avx2, Backend::Portable];

    /// Short name: `"avx512"`, `"avx2"` or `"portable"`.
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Portable => "portable",
            Backend::Avx2 => "avx2",
            Backend::Avx512 => "avx512",
        }
    }

    /// Is this backend usable on the running CPU? (Cached run-time detection.)
    pub fn is_available(self) -> bool {
        match self {
            Backend::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => crate::simd::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => crate::simd::has_avx512(),
            #[cfg(not(target_arch = "x86_64"))]
            Backend::Avx2 | Backend::Avx512 => false,
        }
    }

    /// The fastest backend available on the running CPU (detected once, then cached).
    pub fn detect() -> Backend {
        Self::ALL
            .into_iter()
            .find(|b| b.is_available())
            .unwrap_or(Backend::Portable)
    }

    /// Compute `G(x, y)` with this backend: `P(x ^ y) ^ x ^ y`.
    ///
    /// Falls back to the portable code when this backend is not available on
    /// the running CPU. Exposed for tests and benchmarks.
    #[doc(hidden)]
    pub fn compress(self, x: &Block, y: &Block) -> Block {
        let mut out = Block::new();
        self.compress_into(x, y, &mut out, false);
        out
    }

    /// `next = G(prev, reference)` or, with `with_xor`, `next ^= G(prev, reference)`.
    ///
    /// Falls back to the portable code when this backend is not available on
    /// the running CPU. Exposed for tests and benchmarks.
    #[doc(hidden)]
    pub fn compress_into(self, prev: &Block, reference: &Block, next: &mut Block, with_xor: bool) {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::compress_into(self, prev, reference, next, with_xor) {
            return;
        }
        let result = Block::compress(prev, reference);
        if with_xor {
            *next ^= &result;
        } else {
            *next = result;
        }
    }

    /// Fill `memory[cur]` from `memory[prev]` and `memory[reference]` (see [`Self::compress_into`]).
    #[inline]
    pub(crate) fn fill_block(
        self,
        memory: &mut [Block],
        prev: usize,
        reference: usize,
        cur: usize,
        with_xor: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::fill_block(self, memory, prev, reference, cur, with_xor) {
            return;
        }
        let result = Block::compress(&memory[prev], &memory[reference]);
        if with_xor {
            memory[cur] ^= &result;
        } else {
            memory[cur] = result;
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The compression backend that [`crate::Argon2`] instances use by default on this CPU.
pub fn active_backend() -> Backend {
    Backend::detect()
}

/// Name of the compression backend in use on this CPU: `"avx512"`, `"avx2"` or `"portable"`.
pub fn active_backend_name() -> &'static str {
    active_backend().name()
}
