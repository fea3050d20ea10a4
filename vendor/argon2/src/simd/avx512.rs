//! AVX-512F kernel for the Argon2 compression function.
//!
//! A 1 KiB block is 16 ZMM registers (`r[k]` = words `8k..8k+8`), i.e. row
//! `i` of the 8x8 matrix of 16-byte registers is `r[2i]`, `r[2i + 1]`.
//!
//! Working layout `s` ("row-pair layout"), for row pairs `j = 0..4`:
//!
//! ```text
//! s[4j]     = [row 2j words 0..4  | row 2j+1 words 0..4 ]
//! s[4j + 1] = [row 2j words 4..8  | row 2j+1 words 4..8 ]
//! s[4j + 2] = [row 2j words 8..12 | row 2j+1 words 8..12]
//! s[4j + 3] = [row 2j words 12..16| row 2j+1 words 12..16]
//! ```
//!
//! Row phase: `(s[4j], s[4j+1], s[4j+2], s[4j+3])` are the `a, b, c, d` vectors
//! of two BLAKE2b permutations (one per 256-bit half); the diagonal step rotates
//! within 256-bit halves (`vpermq` immediate).
//!
//! Column phase: the same layout, without any transposition:
//! `(s[k], s[4+k], s[8+k], s[12+k])` hold column pairs `2k` and `2k+1`,
//! interleaved by 128-bit lanes (P even in lanes 0 and 2, P odd in lanes 1 and 3);
//! the diagonal step is then a fixed cross-lane permutation (`vpermq` with an
//! index vector). Only the conversion in and out of the layout needs
//! two-source shuffles (32 `vshufi64x2` per block).

use crate::Block;
use core::arch::x86_64::*;

/// ZMM registers per block.
const REGS: usize = Block::SIZE / 64;

#[target_feature(enable = "avx512f")]
#[inline]
fn muladd(x: __m512i, y: __m512i) -> __m512i {
    // x + y + 2 * lo32(x) * lo32(y)
    let z = _mm512_mul_epu32(x, y);
    _mm512_add_epi64(_mm512_add_epi64(x, y), _mm512_add_epi64(z, z))
}

/// One BlaMka `G` over 8 independent lanes.
#[target_feature(enable = "avx512f")]
#[inline]
fn g(a: &mut __m512i, b: &mut __m512i, c: &mut __m512i, d: &mut __m512i) {
    *a = muladd(*a, *b);
    *d = _mm512_ror_epi64::<32>(_mm512_xor_si512(*d, *a));
    *c = muladd(*c, *d);
    *b = _mm512_ror_epi64::<24>(_mm512_xor_si512(*b, *c));
    *a = muladd(*a, *b);
    *d = _mm512_ror_epi64::<16>(_mm512_xor_si512(*d, *a));
    *c = muladd(*c, *d);
    *b = _mm512_ror_epi64::<63>(_mm512_xor_si512(*b, *c));
}

/// Full BLAKE2b round on row pair `j` (`s[4j..4j + 4]`): column step,
/// diagonalise, diagonal step, undiagonalise.
///
/// Macros rather than functions: `#[inline(always)]` cannot be combined with
/// `#[target_feature]`, and the kernel must end up as one straight-line
/// function with the state in registers.
macro_rules! round_rows {
    ($s:ident, $j:literal) => {{
        let (mut a, mut b, mut c, mut d) =
            ($s[4 * $j], $s[4 * $j + 1], $s[4 * $j + 2], $s[4 * $j + 3]);
        g(&mut a, &mut b, &mut c, &mut d);
        // Per 256-bit half: b <<< 1 word, c <<< 2, d <<< 3.
        b = _mm512_permutex_epi64::<0b00_11_10_01>(b);
        c = _mm512_permutex_epi64::<0b01_00_11_10>(c);
        d = _mm512_permutex_epi64::<0b10_01_00_11>(d);
        g(&mut a, &mut b, &mut c, &mut d);
        b = _mm512_permutex_epi64::<0b10_01_00_11>(b);
        c = _mm512_permutex_epi64::<0b01_00_11_10>(c);
        d = _mm512_permutex_epi64::<0b00_11_10_01>(d);
        ($s[4 * $j], $s[4 * $j + 1], $s[4 * $j + 2], $s[4 * $j + 3]) = (a, b, c, d);
    }};
}

/// Full BLAKE2b round on column pairs `2k`, `2k + 1` (`s[k]`, `s[4 + k]`, ...).
macro_rules! round_columns {
    ($s:ident, $k:literal, $rot1:ident, $rot3:ident) => {{
        let (mut a, mut b, mut c, mut d) = ($s[$k], $s[4 + $k], $s[8 + $k], $s[12 + $k]);
        g(&mut a, &mut b, &mut c, &mut d);
        b = _mm512_permutexvar_epi64($rot1, b);
        c = _mm512_shuffle_i64x2::<0b01_00_11_10>(c, c);
        d = _mm512_permutexvar_epi64($rot3, d);
        g(&mut a, &mut b, &mut c, &mut d);
        b = _mm512_permutexvar_epi64($rot3, b);
        c = _mm512_shuffle_i64x2::<0b01_00_11_10>(c, c);
        d = _mm512_permutexvar_epi64($rot1, d);
        ($s[$k], $s[4 + $k], $s[8 + $k], $s[12 + $k]) = (a, b, c, d);
    }};
}

/// `P(r) ^ r` for `r` in memory layout; evaluates to the result in memory layout.
macro_rules! permute_xor {
    ($r:ident) => {{
        let r = &$r;
        // Memory layout -> row-pair layout.
        let mut s = [_mm512_setzero_si512(); REGS];
        for j in 0..4 {
            s[4 * j] = _mm512_shuffle_i64x2::<0x44>(r[4 * j], r[4 * j + 2]);
            s[4 * j + 1] = _mm512_shuffle_i64x2::<0xEE>(r[4 * j], r[4 * j + 2]);
            s[4 * j + 2] = _mm512_shuffle_i64x2::<0x44>(r[4 * j + 1], r[4 * j + 3]);
            s[4 * j + 3] = _mm512_shuffle_i64x2::<0xEE>(r[4 * j + 1], r[4 * j + 3]);
        }
        round_rows!(s, 0);
        round_rows!(s, 1);
        round_rows!(s, 2);
        round_rows!(s, 3);
        // Word positions of v0..v3 of the even column permutation: 0, 1, 4, 5;
        // of the odd one: 2, 3, 6, 7.
        let rot1 = _mm512_setr_epi64(1, 4, 3, 6, 5, 0, 7, 2);
        let rot3 = _mm512_setr_epi64(5, 0, 7, 2, 1, 4, 3, 6);
        round_columns!(s, 0, rot1, rot3);
        round_columns!(s, 1, rot1, rot3);
        round_columns!(s, 2, rot1, rot3);
        round_columns!(s, 3, rot1, rot3);
        // Row-pair layout -> memory layout, then feed-forward.
        let mut out = [_mm512_setzero_si512(); REGS];
        for j in 0..4 {
            out[4 * j] = _mm512_shuffle_i64x2::<0x44>(s[4 * j], s[4 * j + 1]);
            out[4 * j + 2] = _mm512_shuffle_i64x2::<0xEE>(s[4 * j], s[4 * j + 1]);
            out[4 * j + 1] = _mm512_shuffle_i64x2::<0x44>(s[4 * j + 2], s[4 * j + 3]);
            out[4 * j + 3] = _mm512_shuffle_i64x2::<0xEE>(s[4 * j + 2], s[4 * j + 3]);
        }
        for (o, x) in out.iter_mut().zip(r.iter()) {
            *o = _mm512_xor_si512(*o, *x);
        }
        out
    }};
}

/// Load `x ^ y` (memory layout).
#[target_feature(enable = "avx512f")]
#[inline]
fn load_xor(x: &Block, y: &Block) -> [__m512i; REGS] {
    let px = x.as_ref().as_ptr().cast::<__m512i>();
    let py = y.as_ref().as_ptr().cast::<__m512i>();
    let mut r = [_mm512_setzero_si512(); REGS];
    for (i, v) in r.iter_mut().enumerate() {
        // SAFETY: `i < REGS` so both 64-byte reads lie inside the 1 KiB blocks
        // (unaligned loads, no alignment requirement). AVX-512F is enabled on this
        // function, which is only reached after the `has_avx512()` run-time check.
        *v = unsafe {
            _mm512_xor_si512(_mm512_loadu_si512(px.add(i)), _mm512_loadu_si512(py.add(i)))
        };
    }
    r
}

/// `dst = v` or `dst ^= v`.
#[target_feature(enable = "avx512f")]
#[inline]
fn store(dst: &mut Block, v: &[__m512i; REGS], with_xor: bool) {
    let p = dst.as_mut().as_mut_ptr().cast::<__m512i>();
    for (i, x) in v.iter().enumerate() {
        // SAFETY: `i < REGS` so the 64-byte read/write lies inside the 1 KiB
        // block, which is exclusively borrowed. AVX-512F is enabled on this
        // function, which is only reached after the `has_avx512()` run-time check.
        unsafe {
            let x = if with_xor {
                _mm512_xor_si512(*x, _mm512_loadu_si512(p.add(i)))
            } else {
                *x
            };
            _mm512_storeu_si512(p.add(i), x);
        }
    }
}

/// `next = G(prev, reference)`, or `next ^= G(prev, reference)` with `with_xor`.
#[target_feature(enable = "avx512f")]
pub(super) fn compress_into(prev: &Block, reference: &Block, next: &mut Block, with_xor: bool) {
    let r = load_xor(prev, reference);
    let q = permute_xor!(r);
    store(next, &q, with_xor);
}

/// `memory[cur] (^)= G(memory[prev], memory[reference])`.
#[target_feature(enable = "avx512f")]
pub(super) fn fill_block(
    memory: &mut [Block],
    prev: usize,
    reference: usize,
    cur: usize,
    with_xor: bool,
) {
    let r = load_xor(&memory[prev], &memory[reference]);
    let q = permute_xor!(r);
    store(&mut memory[cur], &q, with_xor);
}
