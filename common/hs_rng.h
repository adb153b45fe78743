/*
 * The project's one pseudo-random generator: splitmix64 (Steele, Lea and
 * Flood), one 64-bit word of state that any value seeds, including 0.  Not
 * for secrets; fast and good enough for picking rows, TTL jitter, lease
 * tokens, load mixes and test data.  The seeder's rows depend on this exact
 * sequence, so changing it changes every seeded database.
 */
#ifndef HS_RNG_H
#define HS_RNG_H

#include <stdint.h>

/* Advances *s and returns the next 64 random bits. */
static inline uint64_t
hs_rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, n), n < 2^32 (multiply-shift; the bias is negligible). */
static inline uint32_t
hs_rng_below(uint64_t *s, uint32_t n)
{
	return (uint32_t)(((hs_rng_next(s) >> 32) * (uint64_t)n) >> 32);
}

#endif
