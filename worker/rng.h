/*
 * Counter-based random numbers for sampling.
 *
 * Every draw is a pure function of (seed, sequence id, position, stream): there is no
 * generator state to advance. That is what makes sampling independent of batch
 * composition and of which rank draws (docs/ARCHITECTURE.md, "Exactness" rule 4): a sequence
 * sampled alone, interleaved with others, or on another vocabulary slice sees the very
 * same numbers.
 *
 * The generator is Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as
 * 1, 2, 3", SC'11). Mapping of the inputs:
 *   key     = seed (64 bits)
 *   counter = { pos (low 32 bits), stream (low 32 bits), seq (low 32), seq (high 32) }
 * so distinct (seq, pos < 2^32, stream < 2^32) give distinct counters, and Philox is a
 * bijection of the counter for a fixed key.
 *
 * Sampling needs one number per vocabulary token per step (Gumbel-max over 128K tokens),
 * where a Philox block per token would dominate the cost. So a step takes one Philox block
 * (stream BR_RNG_STREAM_STEP) as a 128-bit step key (a, b), and token id gets
 * fmix64(((a + id * golden) ^ b)): a SplitMix64-style expansion, still a pure function of
 * (seed, seq, pos, id), two multiplies per token.
 */
#ifndef BITRACK_COORDINATOR_RNG_H
#define BITRACK_COORDINATOR_RNG_H

#include <stdint.h>

/* The raw block function: out = Philox-4x32-10(ctr, key). */
void br_rng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* 64 random bits for (seed, seq, pos, stream): the first two output words of Philox. */
uint64_t br_rng_u64(uint64_t seed, uint64_t seq, uint64_t pos, uint64_t stream);

/* Uniform double in the open interval (0, 1): 52 random bits, centred in their cell, so the
 * result lies in [2^-53, 1 - 2^-53] and never reaches 0 or 1 (safe for log(-log(u))). */
double br_rng_uniform(uint64_t seed, uint64_t seq, uint64_t pos, uint64_t stream);

/* Uniform float in (0, 1): 23 random bits, centred, in [2^-24, 1 - 2^-24]. */
float br_rng_uniformf(uint64_t seed, uint64_t seq, uint64_t pos, uint64_t stream);

/* The conversions behind br_rng_uniform and br_rng_gumbel, for callers that already hold
 * the bits of br_rng_u64 (and may reject a token from the bits alone). */
double br_rng_uniform_from_bits(uint64_t bits);
double br_rng_gumbel_from_bits(uint64_t bits);

/* Standard Gumbel variate -log(-log(u)) for u = br_rng_uniform(...). Because u is at most
 * 1 - 2^-53, the result is below BR_RNG_GUMBEL_MAX, a bound samplers may use to skip
 * tokens that cannot win a Gumbel-max race, without changing the outcome. */
double br_rng_gumbel(uint64_t seed, uint64_t seq, uint64_t pos, uint64_t stream);
#define BR_RNG_GUMBEL_MAX 40.0

/* Per-step key for per-token draws (see the top of this file). */
#define BR_RNG_STREAM_STEP UINT32_C(0xffffffff)
struct br_rng_step {
    uint64_t a, b;
};

struct br_rng_step br_rng_step_key(uint64_t seed, uint64_t seq, uint64_t pos);

/* 64 random bits for token id within a step. Inline: it runs once per vocabulary entry. */
static inline uint64_t br_rng_token_bits(struct br_rng_step k, uint64_t id)
{
    uint64_t z = (k.a + id * UINT64_C(0x9E3779B97F4A7C15)) ^ k.b;
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* The Gumbel variate of token id at (seed, seq, pos), as the sampler draws it. */
double br_rng_token_gumbel(uint64_t seed, uint64_t seq, uint64_t pos, uint64_t id);

#endif
