/*
 * The canonical combine of 8 float lanes (kernels/ops.h, q8.h, q6k.h, fhead.h) for the x86
 * kernel files: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), exactly the scalar
 * reference's order. Included only from files compiled with AVX (or later) flags.
 */
#ifndef BR_KERNELS_COMBINE_X86_H
#define BR_KERNELS_COMBINE_X86_H

#include <immintrin.h>

static inline float br_combine8_m256(__m256 l)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(l), _mm256_extractf128_ps(l, 1));
    /* s = [l0+l4, l1+l5, l2+l6, l3+l7] */
    __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    /* t0 = (l0+l4)+(l2+l6), t1 = (l1+l5)+(l3+l7) */
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

#endif
