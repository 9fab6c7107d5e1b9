/* XXH64 and SipHash-2-4, written from their published descriptions. */
#include <string.h>

#include "semgate/hash.h"

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static inline uint64_t rotl64(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

/* Explicit little-endian loads: the hash is persisted and must not depend on
 * the host's byte order or on the input's alignment. */
static inline uint64_t load64(const uint8_t *b)
{
	return (uint64_t)b[0] | (uint64_t)b[1] << 8 | (uint64_t)b[2] << 16 |
	       (uint64_t)b[3] << 24 | (uint64_t)b[4] << 32 | (uint64_t)b[5] << 40 |
	       (uint64_t)b[6] << 48 | (uint64_t)b[7] << 56;
}

static inline uint32_t load32(const uint8_t *b)
{
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
	       (uint32_t)b[3] << 24;
}

static inline uint64_t round64(uint64_t acc, uint64_t input)
{
	acc += input * P2;
	acc = rotl64(acc, 31);
	return acc * P1;
}

static inline uint64_t merge64(uint64_t acc, uint64_t v)
{
	acc ^= round64(0, v);
	return acc * P1 + P4;
}

uint64_t sg_hash64(const void *p, size_t n, uint64_t seed)
{
	const uint8_t *b = p;
	size_t left = n;
	uint64_t h;

	if (n == 0)
		b = (const uint8_t *)""; /* no arithmetic on a NULL pointer */
	if (left >= 32) {
		uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
		do {
			v1 = round64(v1, load64(b));
			v2 = round64(v2, load64(b + 8));
			v3 = round64(v3, load64(b + 16));
			v4 = round64(v4, load64(b + 24));
			b += 32;
			left -= 32;
		} while (left >= 32);
		h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
		h = merge64(h, v1);
		h = merge64(h, v2);
		h = merge64(h, v3);
		h = merge64(h, v4);
	} else {
		h = seed + P5;
	}
	h += (uint64_t)n;
	for (; left >= 8; b += 8, left -= 8) {
		h ^= round64(0, load64(b));
		h = rotl64(h, 27) * P1 + P4;
	}
	if (left >= 4) {
		h ^= (uint64_t)load32(b) * P1;
		h = rotl64(h, 23) * P2 + P3;
		b += 4;
		left -= 4;
	}
	for (; left > 0; b++, left--) {
		h ^= (uint64_t)*b * P5;
		h = rotl64(h, 11) * P1;
	}
	/* final avalanche */
	h ^= h >> 33;
	h *= P2;
	h ^= h >> 29;
	h *= P3;
	h ^= h >> 32;
	return h;
}

/* --- SipHash-2-4 ------------------------------------------------------------ */

#define SIPROUND(v0, v1, v2, v3)                                                  \
	do {                                                                      \
		v0 += v1; v1 = rotl64(v1, 13); v1 ^= v0; v0 = rotl64(v0, 32);     \
		v2 += v3; v3 = rotl64(v3, 16); v3 ^= v2;                           \
		v0 += v3; v3 = rotl64(v3, 21); v3 ^= v0;                           \
		v2 += v1; v1 = rotl64(v1, 17); v1 ^= v2; v2 = rotl64(v2, 32);     \
	} while (0)

uint64_t sg_siphash(const sg_hash_key_t *key, const void *p, size_t n)
{
	const uint8_t *b = n ? p : (const uint8_t *)"";
	uint64_t v0 = 0x736f6d6570736575ULL ^ key->k0, v1 = 0x646f72616e646f6dULL ^ key->k1;
	uint64_t v2 = 0x6c7967656e657261ULL ^ key->k0, v3 = 0x7465646279746573ULL ^ key->k1;
	size_t left = n;

	for (; left >= 8; b += 8, left -= 8) {
		uint64_t m = load64(b);
		v3 ^= m;
		SIPROUND(v0, v1, v2, v3);
		SIPROUND(v0, v1, v2, v3);
		v0 ^= m;
	}
	uint64_t last = (uint64_t)n << 56;
	for (size_t i = 0; i < left; i++)
		last |= (uint64_t)b[i] << (8 * i);
	v3 ^= last;
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	v0 ^= last;
	v2 ^= 0xff;
	for (int i = 0; i < 4; i++)
		SIPROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

int sg_ct_equal(const void *a, const void *b, size_t n)
{
	const uint8_t *x = a, *y = b;
	uint64_t diff = 0, u, v;
	size_t i = 0;
	/* Eight bytes a step. The empty asm makes diff opaque to the compiler
	 * after every step, so it cannot turn the loop into one that stops at the
	 * first difference (what the volatile reads of a byte loop did, at five
	 * times the instructions). */
	for (; i + 8 <= n; i += 8) {
		memcpy(&u, x + i, 8);
		memcpy(&v, y + i, 8);
		diff |= u ^ v;
		__asm__("" : "+r"(diff));
	}
	for (; i < n; i++) {
		diff |= (uint8_t)(x[i] ^ y[i]);
		__asm__("" : "+r"(diff));
	}
	return diff == 0;
}
