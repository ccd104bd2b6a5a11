/*
 * Philox-4x32-10 and the draws built on it (see rng.h for the input mapping). Pure
 * functions only; the known-answer vectors of the Random123 distribution are checked in
 * tests/unit/sample_test.c.
 */
#include "worker/rng.h"

#include <math.h>

/* Round multipliers and Weyl key increments of Philox-4x32. */
#define PHILOX_M0 UINT32_C(0xD2511F53)
#define PHILOX_M1 UINT32_C(0xCD9E8D57)
#define PHILOX_W0 UINT32_C(0x9E3779B9)
#define PHILOX_W1 UINT32_C(0xBB67AE85)

static void philox_round(uint32_t c[4], const uint32_t k[2])
{
    uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c[1] ^ k[0];
    uint32_t n2 = hi0 ^ c[3] ^ k[1];
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
}

void br_rng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k[0] += PHILOX_W0;
            k[1] += PHILOX_W1;
        }
        philox_round(c, k);
    }
    for (int i = 0; i < 4; i++) out[i] = c[i];
}

uint64_t br_rng_u64(uint64_t seed, uint64_t seq, uint64_t pos, uint64_t stream)
{
    const uint32_t ctr[4] = {(uint32_t)pos, (uint32_t)stream, (uint32_t)seq, (uint32_t)(seq >> 32)};
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t out[4];
    br_rng_philox4x32_10(ctr, key, out);
    return ((uint64_t)out[1] << 32) | out[0];
}

double br_rng_uniform_from_bits(uint64_t bits)
{
    /* (m + 0.5) * 2^-52 with m < 2^52 needs 53 significant bits, so it is exact. */
    uint64_t m = bits >> 12;
    return ((double)m + 0.5) * 0x1p-52;
}

double br_rng_gumbel_from_bits(uint64_t bits)
{
    return -log(-log(br_rng_uniform_from_bits(bits)));
}

double br_rng_uniform(uint64_t seed, uint64_t seq, uint64_t pos, uint64_t stream)
{
    return br_rng_uniform_from_bits(br_rng_u64(seed, seq, pos, stream));
}

float br_rng_uniformf(uint64_t seed, uint64_t seq, uint64_t pos, uint64_t stream)
{
    uint32_t m = (uint32_t)(br_rng_u64(seed, seq, pos, stream) >> 41);
    return ((float)m + 0.5f) * 0x1p-23f;
}

double br_rng_gumbel(uint64_t seed, uint64_t seq, uint64_t pos, uint64_t stream)
{
    return br_rng_gumbel_from_bits(br_rng_u64(seed, seq, pos, stream));
}

struct br_rng_step br_rng_step_key(uint64_t seed, uint64_t seq, uint64_t pos)
{
    const uint32_t ctr[4] = {(uint32_t)pos, BR_RNG_STREAM_STEP, (uint32_t)seq,
                             (uint32_t)(seq >> 32)};
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t out[4];
    br_rng_philox4x32_10(ctr, key, out);
    return (struct br_rng_step){((uint64_t)out[1] << 32) | out[0],
                                ((uint64_t)out[3] << 32) | out[2]};
}

double br_rng_token_gumbel(uint64_t seed, uint64_t seq, uint64_t pos, uint64_t id)
{
    return br_rng_gumbel_from_bits(br_rng_token_bits(br_rng_step_key(seed, seq, pos), id));
}
