/*
 * One table of every kernel family for one variant (ternary GEMV/GEMM, the Q8_0, Q6_K and
 * F16/BF16 head GEMMs, attention), so that a variant is chosen once per process and every
 * family follows the same choice. Families without a variant of their own for an ISA take
 * the scalar reference; every entry computes the reference's bits (kernels/kernel_impl.h).
 */
#ifndef BR_KERNELS_KSET_H
#define BR_KERNELS_KSET_H

#include "kernels/attn.h"
#include "kernels/fhead.h"
#include "kernels/kernel_impl.h"
#include "kernels/q6k.h"
#include "kernels/q8_impl.h"

struct br_kernel_set {
    const char *name; /* the variant: "ref", "avx2", "avx512", "neon", "neon-nodot" */
    const struct br_kernel_ops *ternary;
    const struct br_q8_ops *q8;
    br_q6k_gemm_fn q6k;
    br_fhead_gemm_fn fhead;
    const struct br_attn_ops *attn;
};

/* Fills *out with variant `name` (as br_kernels_find names them); BR_E_NOTFOUND when it is
 * not compiled in or this CPU cannot run it. */
int br_kernel_set_find(const char *name, struct br_kernel_set *out);

/* The set this process runs: the variant br_kernels_active() picked (BITRACK_KERNELS or
 * the best this CPU has), filled on the first call; thread-safe, never NULL. */
const struct br_kernel_set *br_kernel_set_active(void);

#endif
