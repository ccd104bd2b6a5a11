/*
 * Which kernel variant this process runs.
 *
 * The variant is chosen once, on first use, from the CPU's features: AVX-512 (F, BW, VL,
 * VNNI, DQ) over AVX2 (with FMA, F16C, BMI2) over the scalar reference on x86-64; NEON on
 * aarch64. The environment variable BITRACK_KERNELS=ref|avx2|avx512|neon overrides the
 * choice; a variant this build or CPU cannot run is refused with a message on stderr and
 * the automatic choice is kept. Results do not depend on the variant.
 */
#ifndef BR_KERNELS_DISPATCH_H
#define BR_KERNELS_DISPATCH_H

/* Name of the active variant: "ref", "avx2", "avx512", "neon" (with SDOT) or "neon-nodot"
 * (aarch64 without the dot-product extension; BITRACK_KERNELS=neon selects it there).
 * Static text. */
const char *br_kernels_name(void);

/* 1 if the named variant is compiled in and this CPU can run it, else 0. */
int br_kernels_available(const char *name);

#endif
