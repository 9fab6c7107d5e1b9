/* Private to the cache module and its tests: the canonical JSON of a key. */
#ifndef SEMGATE_KEY_INT_H
#define SEMGATE_KEY_INT_H

#include <jansson.h>

#include "semgate/buf.h"

/*
 * Append v's canonical JSON to out: compact, object keys sorted, and reals
 * with an integral value below 9e15 written as integers (1.0 keys like 1).
 * Byte for byte what json_dumps() gives with JSON_COMPACT | JSON_SORT_KEYS on
 * that canonical copy (cache keys on disk depend on it; tests compare the
 * two), without building the copy or a callback per token.
 * Returns 0, or SG_ENOMEM / SG_ETOOBIG from the buffer.
 */
int sg__key_canon_dump(sg_buf_t *out, const json_t *v);

#endif
