/*
 * A config generation: one configuration and the services built from it that
 * may change with it (the router and its deployments' health, each
 * deployment's prepared upstream headers). The server holds the current one;
 * every request pins the one it started on (a reference), so a reload swaps
 * in a new generation while requests and streams in flight finish on theirs.
 * What cannot change at run time (the listener, the cache, the embedder) is
 * built once from the first generation and lives with the server.
 * Loop thread only.
 */
#ifndef SEMGATE_GEN_H
#define SEMGATE_GEN_H

#include <stdint.h>

#include "semgate/config.h"
#include "semgate/router.h"
#include "semgate/upstream.h"

typedef struct sg_gen {
	unsigned refs;                       /* the server's + one per pinned request */
	uint64_t number;                     /* 1 at start, +1 per reload */
	int64_t loaded_unix_ms;              /* wall clock when it was made */
	sg_config_t *cfg;                    /* its configuration */
	int owns_cfg;                        /* free cfg with the generation */
	sg_router_t *router;                 /* deployment choice and health */
	sg_upstream_headers_t **dep_headers; /* per deployment, by seq */
	size_t ndeps;                        /* entries in dep_headers */
} sg_gen_t;

/**
 * Make generation `number` of cfg (owned when owns_cfg; on failure too).
 * prev (may be NULL): the generation it replaces, whose deployments' health
 * carries over (sg_router_adopt). One reference for the caller.
 */
int sg__gen_new(sg_gen_t **out, sg_config_t *cfg, int owns_cfg, sg_gen_t *prev,
                uint64_t number, uint64_t seed);
sg_gen_t *sg__gen_ref(sg_gen_t *g);
/** Drop a reference; the last one frees the generation. NULL is fine. */
void sg__gen_unref(sg_gen_t *g);

#endif
