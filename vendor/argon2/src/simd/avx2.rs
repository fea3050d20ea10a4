//! AVX2 kernel for the Argon2 compression function.
//!
//! A 1 KiB block is 32 YMM registers in memory order: `y[4i..4i + 4]` are the
//! `a, b, c, d` vectors of row `i`, so the row phase needs no transposition
//! (the diagonal step rotates with `vpermq`).
//!
//! Column phase, for `k = 0..4`: `A0 = y[k]`, `A1 = y[4 + k]`, `B0 = y[8 + k]`,
//! ... `D1 = y[28 + k]` hold columns pairs `2k` (words 0, 1 of each register) and
//! `2k + 1` (words 2, 3). The column step is lane-wise on `(A0, B0, C0, D0)` and
//! `(A1, B1, C1, D1)`; the diagonal step is in-lane `vpalignr` for `B` and `D`
//! and a register swap for `C`, so no cross-lane shuffle is needed.

use crate::Block;
use core::arch::x86_64::*;

/// YMM registers per block.
const REGS: usize = Block::SIZE / 32;

#[target_feature(enable = "avx2")]
#[inline]
fn muladd(x: __m256i, y: __m256i) -> __m256i {
    // x + y + 2 * lo32(x) * lo32(y)
    let z = _mm256_mul_epu32(x, y);
    _mm256_add_epi64(_mm256_add_epi64(x, y), _mm256_add_epi64(z, z))
}

#[target_feature(enable = "avx2")]
#[inline]
fn ror32(x: __m256i) -> __m256i {
    _mm256_shuffle_epi32::<0b10_11_00_01>(x)
}

#[target_feature(enable = "avx2")]
#[inline]
fn ror24(x: __m256i) -> __m256i {
    let m = _mm256_setr_epi8(
        3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10, //
        3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10,
    );
    _mm256_shuffle_epi8(x, m)
}

#[target_feature(enable = "avx2")]
#[inline]
fn ror16(x: __m256i) -> __m256i {
    let m = _mm256_setr_epi8(
        2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9, //
        2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9,
    );
    _mm256_shuffle_epi8(x, m)
}

#[target_feature(enable = "avx2")]
#[inline]
fn ror63(x: __m256i) -> __m256i {
    _mm256_xor_si256(_mm256_srli_epi64::<63>(x), _mm256_add_epi64(x, x))
}

/// One BlaMka `G` over 4 independent lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn g(a: &mut __m256i, b: &mut __m256i, c: &mut __m256i, d: &mut __m256i) {
    *a = muladd(*a, *b);
    *d = ror32(_mm256_xor_si256(*d, *a));
    *c = muladd(*c, *d);
    *b = ror24(_mm256_xor_si256(*b, *c));
    *a = muladd(*a, *b);
    *d = ror16(_mm256_xor_si256(*d, *a));
    *c = muladd(*c, *d);
    *b = ror63(_mm256_xor_si256(*b, *c));
}

/// BLAKE2b round on row `i` (`y[4i..4i + 4]`).
///
/// Macros rather than functions: `#[inline(always)]` cannot be combined with
/// `#[target_feature]`, and the kernel must end up as one straight-line
/// function.
macro_rules! round_row {
    ($y:ident, $i:literal) => {{
        let (mut a, mut b, mut c, mut d) =
            ($y[4 * $i], $y[4 * $i + 1], $y[4 * $i + 2], $y[4 * $i + 3]);
        g(&mut a, &mut b, &mut c, &mut d);
        b = _mm256_permute4x64_epi64::<0b00_11_10_01>(b);
        c = _mm256_permute4x64_epi64::<0b01_00_11_10>(c);
        d = _mm256_permute4x64_epi64::<0b10_01_00_11>(d);
        g(&mut a, &mut b, &mut c, &mut d);
        b = _mm256_permute4x64_epi64::<0b10_01_00_11>(b);
        c = _mm256_permute4x64_epi64::<0b01_00_11_10>(c);
        d = _mm256_permute4x64_epi64::<0b00_11_10_01>(d);
        ($y[4 * $i], $y[4 * $i + 1], $y[4 * $i + 2], $y[4 * $i + 3]) = (a, b, c, d);
    }};
}

/// BLAKE2b round on column pairs `2k`, `2k + 1`.
macro_rules! round_columns {
    ($y:ident, $k:literal) => {{
        let (mut a0, mut a1, mut b0, mut b1) = ($y[$k], $y[4 + $k], $y[8 + $k], $y[12 + $k]);
        let (mut c0, mut c1, mut d0, mut d1) = ($y[16 + $k], $y[20 + $k], $y[24 + $k], $y[28 + $k]);
        g(&mut a0, &mut b0, &mut c0, &mut d0);
        g(&mut a1, &mut b1, &mut c1, &mut d1);
        // Diagonalise: alignr(x, y, 8) = [y[1], x[0]] per 128-bit lane.
        let (t0, t1) = (b0, b1);
        b0 = _mm256_alignr_epi8::<8>(t1, t0);
        b1 = _mm256_alignr_epi8::<8>(t0, t1);
        let (t0, t1) = (d0, d1);
        d0 = _mm256_alignr_epi8::<8>(t0, t1);
        d1 = _mm256_alignr_epi8::<8>(t1, t0);
        // c0 <-> c1
        g(&mut a0, &mut b0, &mut c1, &mut d0);
        g(&mut a1, &mut b1, &mut c0, &mut d1);
        // Undiagonalise.
        let (t0, t1) = (b0, b1);
        b0 = _mm256_alignr_epi8::<8>(t0, t1);
        b1 = _mm256_alignr_epi8::<8>(t1, t0);
        let (t0, t1) = (d0, d1);
        d0 = _mm256_alignr_epi8::<8>(t1, t0);
        d1 = _mm256_alignr_epi8::<8>(t0, t1);
        ($y[$k], $y[4 + $k], $y[8 + $k], $y[12 + $k]) = (a0, a1, b0, b1);
        ($y[16 + $k], $y[20 + $k], $y[24 + $k], $y[28 + $k]) = (c0, c1, d0, d1);
    }};
}

/// `P(r) ^ r`.
macro_rules! permute_xor {
    ($r:ident) => {{
        let mut y = $r;
        round_row!(y, 0);
        round_row!(y, 1);
        round_row!(y, 2);
        round_row!(y, 3);
        round_row!(y, 4);
        round_row!(y, 5);
        round_row!(y, 6);
        round_row!(y, 7);
        round_columns!(y, 0);
        round_columns!(y, 1);
        round_columns!(y, 2);
        round_columns!(y, 3);
        for (o, x) in y.iter_mut().zip($r.iter()) {
            *o = _mm256_xor_si256(*o, *x);
        }
        y
    }};
}

/// Load `x ^ y`.
#[target_feature(enable = "avx2")]
#[inline]
fn load_xor(x: &Block, y: &Block) -> [__m256i; REGS] {
    let px = x.as_ref().as_ptr().cast::<__m256i>();
    let py = y.as_ref().as_ptr().cast::<__m256i>();
    let mut r = [_mm256_setzero_si256(); REGS];
    for (i, v) in r.iter_mut().enumerate() {
        // SAFETY: `i < REGS` so both 32-byte reads lie inside the 1 KiB blocks
        // (unaligned loads). AVX2 is enabled on this function, which is only
        // reached after the `has_avx2()` run-time check.
        *v = unsafe {
            _mm256_xor_si256(_mm256_loadu_si256(px.add(i)), _mm256_loadu_si256(py.add(i)))
        };
    }
    r
}

/// `dst = v` or `dst ^= v`.
#[target_feature(enable = "avx2")]
#[inline]
fn store(dst: &mut Block, v: &[__m256i; REGS], with_xor: bool) {
    let p = dst.as_mut().as_mut_ptr().cast::<__m256i>();
    for (i, x) in v.iter().enumerate() {
        // SAFETY: `i < REGS` so the 32-byte read/write lies inside the 1 KiB
        // block, which is exclusively borrowed. AVX2 is enabled on this
        // function, which is only reached after the `has_avx2()` run-time check.
        unsafe {
            let x = if with_xor {
                _mm256_xor_si256(*x, _mm256_loadu_si256(p.add(i)))
            } else {
                *x
            };
            _mm256_storeu_si256(p.add(i), x);
        }
    }
}

/// `next = G(prev, reference)`, or `next ^= G(prev, reference)` with `with_xor`.
#[target_feature(enable = "avx2")]
pub(super) fn compress_into(prev: &Block, reference: &Block, next: &mut Block, with_xor: bool) {
    let r = load_xor(prev, reference);
    let q = permute_xor!(r);
    store(next, &q, with_xor);
}

/// `memory[cur] (^)= G(memory[prev], memory[reference])`.
#[target_feature(enable = "avx2")]
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
