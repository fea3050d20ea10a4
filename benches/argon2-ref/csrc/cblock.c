/* Exposes the reference implementation's compression function (opt.c's
 * static fill_block) for the per-block benchmark. Compiled from the very
 * sources that argon2-kdf builds, with the same ARGON2_KDF_C_COMPILER_FLAGS. */
#define fill_segment argon2ref_bench_unused_fill_segment
#include "opt.c"
#undef fill_segment

const char *bench_c_simd(void) {
#if defined(__AVX512F__)
    return "avx512";
#elif defined(__AVX2__)
    return "avx2";
#else
    return "sse";
#endif
}

/* n chained compressions: out = G(state, ref), state = out, as in fill_segment. */
void bench_c_fill_chain(const block *ref, block *out, size_t n) {
#if defined(__AVX512F__)
    __m512i state[ARGON2_512BIT_WORDS_IN_BLOCK];
#elif defined(__AVX2__)
    __m256i state[ARGON2_HWORDS_IN_BLOCK];
#else
    __m128i state[ARGON2_OWORDS_IN_BLOCK];
#endif
    size_t i;
    memcpy(state, out->v, ARGON2_BLOCK_SIZE);
    for (i = 0; i < n; i++) {
        fill_block(state, ref, out, 0);
    }
}
