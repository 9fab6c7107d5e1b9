/* semgate: a fast 64-bit non-cryptographic hash for the cache's keys.
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

#endif
