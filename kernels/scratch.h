/*
 * Per-thread scratch for the kernels' working copies (permuted or interleaved
 * activations, carried sums): a kernel called once per task of every step must not
 * allocate each time, and its signature has no place for a caller's buffer, so each
 * thread keeps a few grow-only buffers here. A buffer grows to the largest size asked of
 * it on that thread and is freed when the thread ends; steady-state steps, asking the
 * same sizes, allocate nothing.
 *
 * Invariant: a slot's buffer is valid until the next br_kernel_scratch call for the same
 * slot on the same thread, so a kernel uses distinct slots for buffers it holds at once
 * and never calls another kernel that uses them while holding one.
 */
#ifndef BR_KERNELS_SCRATCH_H
#define BR_KERNELS_SCRATCH_H

#include <stddef.h>

enum { BR_SCRATCH_SLOTS = 3 };

/* A 64-byte aligned buffer of at least `bytes` for slot (0 .. BR_SCRATCH_SLOTS - 1),
 * owned by this thread; NULL when out of memory (callers fall back to the reference,
 * which needs none). Contents are not kept across growth. */
void *br_kernel_scratch(int slot, size_t bytes);

#endif
