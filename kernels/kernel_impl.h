/*
 * Internal interface between the kernel dispatcher and the per-ISA kernel files.
 *
 * Each ISA file (ternary_avx2.c, ternary_avx512.c, ternary_neon.c) defines one constant
 * table of function pointers; dispatch.c picks one table, once, from the CPU's features
 * (overridable with BITRACK_KERNELS) and the public entry points (br_tmat_gemv,
 * br_dot_f32, ...) call through it. Every table computes exactly what the reference
 * computes: integer products bit for bit, float dots in the canonical order of ops.h.
 *
 * Tests and the benchmark reach individual variants through br_kernels_find(), which
 * returns NULL for a variant that is not compiled in or that this CPU cannot run.
 */
#ifndef BR_KERNELS_KERNEL_IMPL_H
#define BR_KERNELS_KERNEL_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"
#include "kernels/ternary.h"

/* Values of br_tmat.packed_kind. */
enum {
    BR_PACK_NONE = 0, /* only the canonical 2-bit codes */
    BR_PACK_T5 = 1,   /* 5 trits per byte (1.6 bits/weight), see ternary_avx512.c */
};

typedef void (*br_gemv_fn)(const struct br_tmat *m, int32_t r0, int32_t r1, const int8_t *q,
                           int32_t *acc);
typedef void (*br_gemm_fn)(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                           const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride);
typedef float (*br_dot_f16_fn)(const uint16_t *w, const float *x, size_t n);

struct br_kernel_ops {
    const char *name;
    br_gemv_fn gemv;
    br_gemm_fn gemm;
    /* Builds m->packed when this variant has a layout it prefers; NULL: none. */
    int (*prepare)(struct br_tmat *m);
    br_dot_f32_fn dot_f32;
    br_dot_f16_fn dot_f16_f32;
    /* A tight loop of this variant's int8 multiply-add instruction with independent
     * accumulators (the peak the GEMM is compared with); returns the MACs performed. */
    int64_t (*peak_macs)(int64_t iters);
    /* The read-only streaming probe of probe_impl.h with this variant's widest loads:
     * reads `bytes` at p (64-byte aligned, a multiple of 128 * streams) in `streams`
     * pieces in lockstep (1, 2, 4 or 8), prefetching `ahead` bytes ahead into L2 (0: no
     * prefetch), and returns a value that depends on every byte. */
    uint64_t (*read_probe)(const void *p, size_t bytes, int streams, size_t ahead);
};

extern const struct br_kernel_ops br_kernels_ref;
#if defined(BR_HAVE_AVX2)
extern const struct br_kernel_ops br_kernels_avx2;
/* The AVX2 GEMM with vpmaddubsw (vnni zero, every AVX2 CPU) or AVX-VNNI vpdpbusd on 256
 * bits (vnni nonzero; the CPU must have AVX-VNNI). The table's gemm takes AVX-VNNI where
 * the CPU has it; tests and the benchmark reach both through this. */
void br_tmat_gemm_avx2_vnni(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                            const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride,
                            int vnni);
/* AVX-VNNI (the VEX-encoded vpdpbusd) with AVX2. */
int br_cpu_has_avxvnni(void);
#endif
#if defined(BR_HAVE_AVX512)
extern const struct br_kernel_ops br_kernels_avx512;
/* The 1.6-bit layout, kept as an alternative to measure against the 2-bit one: builds
 * m->packed (BR_PACK_T5) whatever the default policy; needs AVX-512 VBMI at run time. */
int br_tmat_pack_t5_avx512(struct br_tmat *m);
int br_cpu_has_avx512vbmi(void);
/* The AVX-512 GEMM with a chosen unpacking of the 2-bit codes: gfni nonzero uses one
 * gf2p8affineqb per bit pair (the CPU must have GFNI), zero a shift and a mask (every
 * AVX-512 VNNI CPU). The table's gemm takes GFNI where the CPU has it; tests and the
 * benchmark reach both through this. */
void br_tmat_gemm_avx512_unpack(const struct br_tmat *m, int32_t r0, int32_t r1, int32_t ntok,
                                const int8_t *q, size_t q_stride, int32_t *acc, size_t acc_stride,
                                int gfni);
/* GFNI with AVX-512 (the EVEX forms of the GF(2^8) instructions). */
int br_cpu_has_gfni(void);
/* Whether the GEMM decodes codes with GFNI: where the CPU has it, except on AMD. Zen 4 runs
 * gf2p8affineqb on the pipes vpdpbusd needs, while the shift and the AND of the other form
 * go to pipes of their own (bench kernels there, 2B-4T shapes at 32 tokens, one thread:
 * 93-94% of the vpdpbusd peak with the shift, 86-87% with GFNI; Sapphire Rapids shares
 * every 512-bit operation between vpdpbusd's two ports, so one instruction beats two).
 * BITRACK_GEMM_UNPACK=shift|gfni overrides; the bits are the same either way. */
int br_gemm_use_gfni(void);
#endif
#if defined(BR_HAVE_NEON)
/* "neon" runs the SDOT table where the CPU has the dot-product extension and the plain
 * one elsewhere; "neon-nodot" always names the plain one (so tests reach both). */
extern const struct br_kernel_ops br_kernels_neon_dot;
extern const struct br_kernel_ops br_kernels_neon_plain;
int br_cpu_has_dotprod(void);
#endif

/* The variant called `name` ("ref", "avx2", "avx512", "neon", "neon-nodot") if compiled in and
 * supported by this CPU, else NULL. */
const struct br_kernel_ops *br_kernels_find(const char *name);
/* What the dispatcher picks for a BITRACK_KERNELS value (NULL or "" = automatic): the
 * requested variant if it is available, else (with a message on stderr) the best one. */
const struct br_kernel_ops *br_kernels_select(const char *request);
/* The variant chosen for this process (first call decides; thread-safe). */
const struct br_kernel_ops *br_kernels_active(void);

/* Sum of q[0..n-1], the correction term of sum w*q = sum c*q - sum q. */
static inline int32_t br_sum_i8(const int8_t *q, size_t n)
{
    int32_t s = 0;
    for (size_t i = 0; i < n; i++) s += q[i];
    return s;
}

#endif
