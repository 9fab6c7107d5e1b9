/* semgate: the cache's hashes: a fast unkeyed one and a keyed one.
 *
 * sg_hash64() is XXH64 (Yann Collet's xxHash, 64-bit variant), written out
 * here: same constants, same output as the reference for any input and
 * seed. Input is read as little-endian words whatever the host, so a hash is
 * the same on every machine.
 *
 * Hashes computed with it are stored on disk (exact-match keys and scope
 * hashes in the LMDB store), so its output must never change: a different
 * function needs a new store format version.
 */
#ifndef SEMGATE_HASH_H
#define SEMGATE_HASH_H

#include <stddef.h>
#include <stdint.h>

/**
 * Hash n bytes at p (p may be NULL when n is 0) with a seed. Pure function
 * of its inputs; borrows p for the duration of the call only.
 */
uint64_t sg_hash64(const void *p, size_t n, uint64_t seed);

/** A 128-bit secret key for sg_siphash(). */
typedef struct sg_hash_key {
	uint64_t k0, k1; /* the key's two halves (little-endian words of its 16 bytes) */
} sg_hash_key_t;

/**
 * SipHash-2-4 (Aumasson and Bernstein), 64-bit output, of n bytes at p
 * under key: a keyed hash whose collisions cannot be found without the key.
 * The cache derives its scope and exact-match ids with it, from a random
 * secret per store, so that no client can craft a prompt whose id is
 * another tenant's. Same output as the reference for any input; borrows p
 * for the call only.
 */
uint64_t sg_siphash(const sg_hash_key_t *key, const void *p, size_t n);

/**
 * Whether the n bytes at a and b are equal, in time that does not depend on
 * where they differ: every byte of both is read, whatever differs first (no
 * early exit; tests/unit/test_hash.c checks it by placing the bytes after the
 * first one on an unreadable page). For secrets and their digests.
 */
int sg_ct_equal(const void *a, const void *b, size_t n);

#endif
