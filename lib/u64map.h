/* Private to cache/: a hash map from uint64 keys to non-NULL pointers
 * (open addressing, linear probing, backward-shift deletion). */
#ifndef SEMGATE_U64MAP_H
#define SEMGATE_U64MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct sg_u64map {
	uint64_t *keys; /* slot keys */
	void **vals;    /* slot values; NULL marks an empty slot */
	size_t cap;     /* slots, a power of two */
	size_t n;       /* used slots */
} sg_u64map_t;

void sg__u64map_init(sg_u64map_t *m);
void sg__u64map_free(sg_u64map_t *m);
/** The value for key, or NULL. */
void *sg__u64map_get(const sg_u64map_t *m, uint64_t key);
/** Insert or replace (val must not be NULL). SG_ENOMEM. */
int sg__u64map_put(sg_u64map_t *m, uint64_t key, void *val);
/** Remove key; returns its value or NULL. */
void *sg__u64map_del(sg_u64map_t *m, uint64_t key);

/** Iterate: for (size_t i = 0; i < m->cap; i++) if (m->vals[i]) ... */

#endif
