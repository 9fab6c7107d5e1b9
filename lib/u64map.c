/* uint64 -> pointer hash map. */
#include <stdlib.h>

#include "semgate/common.h"
#include "u64map.h"

static inline size_t slot_of(uint64_t key, size_t cap)
{
	/* Fibonacci hashing spreads sequential ids and weak hashes alike. */
	return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

void sg__u64map_init(sg_u64map_t *m)
{
	m->keys = NULL;
	m->vals = NULL;
	m->cap = 0;
	m->n = 0;
}

void sg__u64map_free(sg_u64map_t *m)
{
	free(m->keys);
	free(m->vals);
	sg__u64map_init(m);
}

void *sg__u64map_get(const sg_u64map_t *m, uint64_t key)
{
	if (m->cap == 0)
		return NULL;
	for (size_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (m->vals[i] == NULL)
			return NULL;
		if (m->keys[i] == key)
			return m->vals[i];
	}
}

static int grow(sg_u64map_t *m)
{
	size_t cap = m->cap ? m->cap * 2 : 64;
	uint64_t *keys = malloc(cap * sizeof(*keys));
	void **vals = calloc(cap, sizeof(*vals));

	if (keys == NULL || vals == NULL) {
		free(keys);
		free(vals);
		return SG_ENOMEM;
	}
	for (size_t j = 0; j < m->cap; j++) {
		if (m->vals[j] == NULL)
			continue;
		size_t i = slot_of(m->keys[j], cap);
		while (vals[i])
			i = (i + 1) & (cap - 1);
		keys[i] = m->keys[j];
		vals[i] = m->vals[j];
	}
	free(m->keys);
	free(m->vals);
	m->keys = keys;
	m->vals = vals;
	m->cap = cap;
	return 0;
}

int sg__u64map_put(sg_u64map_t *m, uint64_t key, void *val)
{
	if ((m->n + 1) * 4 > m->cap * 3 && grow(m) != 0)
		return SG_ENOMEM;
	size_t i = slot_of(key, m->cap);
	while (m->vals[i] && m->keys[i] != key)
		i = (i + 1) & (m->cap - 1);
	if (m->vals[i] == NULL)
		m->n++;
	m->keys[i] = key;
	m->vals[i] = val;
	return 0;
}

void *sg__u64map_del(sg_u64map_t *m, uint64_t key)
{
	size_t i, j, mask = m->cap - 1;
	void *val;

	if (m->cap == 0)
		return NULL;
	for (i = slot_of(key, m->cap);; i = (i + 1) & mask) {
		if (m->vals[i] == NULL)
			return NULL;
		if (m->keys[i] == key)
			break;
	}
	val = m->vals[i];
	m->vals[i] = NULL;
	m->n--;
	/* Shift later members of the probe run back so lookups never stop early. */
	for (j = (i + 1) & mask; m->vals[j]; j = (j + 1) & mask) {
		size_t home = slot_of(m->keys[j], m->cap);
		/* j's entry may move to i if i lies cyclically in [home, j). */
		if (((j - home) & mask) >= ((j - i) & mask)) {
			m->keys[i] = m->keys[j];
			m->vals[i] = m->vals[j];
			m->vals[j] = NULL;
			i = j;
		}
	}
	return val;
}
