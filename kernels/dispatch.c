/*
 * Runtime kernel dispatch: probes the CPU once, picks one table of kernels, and routes
 * the public entry points of ternary.h and ops.h through it.
 *
 * The only global mutable state is the chosen table, written once. Racing first calls
 * compute the same answer, so the pointer is published with a release store and read
 * with an acquire load; no lock is needed and ThreadSanitizer sees no race.
 */
#include "kernels/dispatch.h"
#include "kernels/kset.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernel_impl.h"
#include "kernels/probe_impl.h"
#include "kernels/ops.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

struct x86_features {
    int avx2, avx512, vbmi, gfni, avxvnni, amd;
};

static unsigned long long xgetbv0(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static struct x86_features probe_x86(void)
{
    struct x86_features f = {0, 0, 0, 0, 0, 0};
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
    f.amd = b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u; /* "AuthenticAMD" */
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx) return f;
    unsigned long long xcr0 = xgetbv0();
    int ymm_os = (xcr0 & 0x6) == 0x6;             /* SSE and AVX state */
    int zmm_os = ymm_os && (xcr0 & 0xe0) == 0xe0; /* opmask, ZMM0-15 upper, ZMM16-31 */
    if (__get_cpuid_max(0, NULL) < 7) return f;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1, bmi2 = (b >> 8) & 1;
    int avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1,
        avx512vl = (b >> 31) & 1;
    int vnni = (c >> 11) & 1, vbmi = (c >> 1) & 1, gfni = (c >> 8) & 1;
    f.avx2 = ymm_os && avx2 && fma && f16c && bmi2;
    f.avx512 = f.avx2 && zmm_os && avx512f && avx512dq && avx512bw && avx512vl && vnni;
    f.vbmi = f.avx512 && vbmi;
    f.gfni = f.avx512 && gfni;
    unsigned max_sub = a; /* leaf 7 subleaf 0: EAX holds the highest subleaf */
    if (max_sub >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        f.avxvnni = f.avx2 && ((a >> 4) & 1);
    }
    return f;
}

static struct x86_features x86_features(void)
{
    /* Bits: 1 probed, 2 avx2, 4 avx512, 8 vbmi, 16 gfni, 32 avxvnni, 64 amd. One word, so
     * publishing needs no lock; racing first callers store the same value. */
    static atomic_uint word;
    unsigned w = atomic_load_explicit(&word, memory_order_relaxed);
    if (!w) {
        struct x86_features f = probe_x86();
        w = 1u | (f.avx2 ? 2u : 0u) | (f.avx512 ? 4u : 0u) | (f.vbmi ? 8u : 0u) |
            (f.gfni ? 16u : 0u) | (f.avxvnni ? 32u : 0u) | (f.amd ? 64u : 0u);
        atomic_store_explicit(&word, w, memory_order_relaxed);
    }
    struct x86_features out = {(w & 2u) != 0,  (w & 4u) != 0,  (w & 8u) != 0,
                               (w & 16u) != 0, (w & 32u) != 0, (w & 64u) != 0};
    return out;
}
#endif

#if defined(BR_HAVE_AVX2)
int br_cpu_has_avxvnni(void)
{
    return x86_features().avxvnni;
}
#endif

#if defined(BR_HAVE_AVX512)
int br_cpu_has_avx512vbmi(void)
{
    return x86_features().vbmi;
}

int br_cpu_has_gfni(void)
{
    return x86_features().gfni;
}

int br_gemm_use_gfni(void)
{
    /* decided once (every GEMM call asks): 0 undecided, 1 shift, 2 GFNI */
    static atomic_int choice;
    int c = atomic_load_explicit(&choice, memory_order_relaxed);
    if (!c) {
        struct x86_features f = x86_features();
        const char *e = getenv("BITRACK_GEMM_UNPACK");
        int gfni = e && strcmp(e, "shift") == 0 ? 0 : e && strcmp(e, "gfni") == 0 ? 1 : !f.amd;
        c = f.gfni && gfni ? 2 : 1;
        atomic_store_explicit(&choice, c, memory_order_relaxed);
    }
    return c == 2;
}
#endif

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
int br_cpu_has_dotprod(void)
{
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
}
#endif

const struct br_kernel_ops *br_kernels_find(const char *name)
{
    if (!name) return NULL;
    if (strcmp(name, "ref") == 0) return &br_kernels_ref;
#if defined(BR_HAVE_AVX2)
    if (strcmp(name, "avx2") == 0) return x86_features().avx2 ? &br_kernels_avx2 : NULL;
#endif
#if defined(BR_HAVE_AVX512)
    if (strcmp(name, "avx512") == 0) return x86_features().avx512 ? &br_kernels_avx512 : NULL;
#endif
#if defined(BR_HAVE_NEON)
    /* NEON is baseline on aarch64; SDOT is optional */
    if (strcmp(name, "neon") == 0)
        return br_cpu_has_dotprod() ? &br_kernels_neon_dot : &br_kernels_neon_plain;
    if (strcmp(name, "neon-nodot") == 0) return &br_kernels_neon_plain;
#endif
    return NULL;
}

int br_kernels_available(const char *name)
{
    return br_kernels_find(name) != NULL;
}

const struct br_kernel_ops *br_kernels_select(const char *request)
{
    static const char *const order[] = {"avx512", "avx2", "neon", "ref"};
    if (request && *request) {
        const struct br_kernel_ops *k = br_kernels_find(request);
        if (k) return k;
        fprintf(stderr,
                "bitrack: BITRACK_KERNELS=%s is not available on this build or CPU; "
                "choosing automatically\n",
                request);
    }
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        const struct br_kernel_ops *k = br_kernels_find(order[i]);
        if (k) return k;
    }
    return &br_kernels_ref;
}

const struct br_kernel_ops *br_kernels_active(void)
{
    static _Atomic(const struct br_kernel_ops *) active;
    const struct br_kernel_ops *k = atomic_load_explicit(&active, memory_order_acquire);
    if (!k) {
        k = br_kernels_select(getenv("BITRACK_KERNELS"));
        /* Every racing caller computes the same table, so the first store wins harmlessly. */
        const struct br_kernel_ops *expected = NULL;
        if (!atomic_compare_exchange_strong_explicit(&active, &expected, k, memory_order_acq_rel,
                                                     memory_order_acquire))
            k = expected;
    }
    return k;
}

const char *br_kernels_name(void)
{
    return br_kernels_active()->name;
}

/* ---- public entry points ---- */

int br_tmat_prepare(struct br_tmat *m)
{
    const struct br_kernel_ops *k = br_kernels_active();
    return k->prepare ? k->prepare(m) : BR_OK;
}

void br_tmat_gemv(const struct br_tmat *m, int32_t r0, int32_t r1, const int8_t *q, int32_t *acc)
{
    br_kernels_active()->gemv(m, r0, r1, q, acc);
}

void br_tmat_gemm(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok, const int8_t *q,
                  size_t q_stride, int32_t *acc, size_t acc_stride)
{
    br_kernels_active()->gemm(m, r0, r1, ntok, q, q_stride, acc, acc_stride);
}

float br_dot_f32(const float *a, const float *b, size_t n)
{
    return br_kernels_active()->dot_f32(a, b, n);
}

float br_dot_f16_f32(const uint16_t *w_f16, const float *x, size_t n)
{
    return br_kernels_active()->dot_f16_f32(w_f16, x, n);
}

/* Scalar multiply-adds in 8 independent chains. */
static int64_t peak_macs_ref(int64_t iters)
{
    volatile int32_t seed = 3;
    int32_t c = seed, a[8] = {0};
    for (int64_t i = 0; i < iters; i++)
        for (int k = 0; k < 8; k++) a[k] += c * (int32_t)(int8_t)(i + k);
    int32_t s = 0;
    for (int k = 0; k < 8; k++) s += a[k];
    seed = s;
    return iters * 8;
}

static uint64_t read_probe_ref(const void *p, size_t bytes, int streams, size_t ahead)
{
    return br_read_probe_impl(p, bytes, streams, ahead);
}

const struct br_kernel_ops br_kernels_ref = {
    .name = "ref",
    .gemv = br_tmat_gemv_ref,
    .gemm = br_tmat_gemm_ref,
    .prepare = NULL,
    .dot_f32 = br_dot_f32_ref,
    .dot_f16_f32 = br_dot_f16_f32_ref,
    .peak_macs = peak_macs_ref,
    .read_probe = read_probe_ref,
};

/* ---- Q8_0 head kernels (kernels/q8_impl.h): the table matching the ternary variant ---- */

#include "kernels/q8_impl.h"

const struct br_q8_ops *br_q8_ops_find(const char *name)
{
    if (!br_kernels_find(name)) return NULL;
#if defined(BR_HAVE_AVX2)
    if (strcmp(name, "avx2") == 0) return &br_q8_ops_avx2;
#endif
#if defined(BR_HAVE_AVX512)
    if (strcmp(name, "avx512") == 0) return &br_q8_ops_avx512;
#endif
#if defined(BR_HAVE_NEON)
    if (strcmp(name, "neon") == 0)
        return br_cpu_has_dotprod() ? &br_q8_ops_neon_dot : &br_q8_ops_neon_plain;
    if (strcmp(name, "neon-nodot") == 0) return &br_q8_ops_neon_plain;
#endif
    return &br_q8_ops_ref;
}

const struct br_q8_ops *br_q8_ops_active(void)
{
    return br_kernel_set_active()->q8;
}
