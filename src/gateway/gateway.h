/*
 * The gateway: the services a request uses, apart from the HTTP front end
 * that hands requests to it. It holds the current config generation (and
 * with it the router and the deployments' prepared headers), the libcurl
 * client on the loop, the cache with its maintenance timers and fsync
 * thread work, the embedder and the statistics. A front end (src/http/) is
 * attached to it and knows it only through its handler callbacks
 * (sg_http_handler_t): several front ends over one gateway is what several
 * workers will need. Loop thread only.
 */
#ifndef SEMGATE_GATEWAY_H
#define SEMGATE_GATEWAY_H

#include <stdint.h>

#include <uv.h>

#include "authdb.h"
#include "counter.h"
#include "gen.h"
#include "semgate/cache.h"
#include "semgate/embed.h"
#include "semgate/log.h"
#include "semgate/stats.h"
#include "semgate/upstream.h"

typedef struct sg_server sg_server_t;

typedef struct sg_gateway {
	uv_loop_t *loop;              /* borrowed */
	sg_gen_t *gen;                /* the current config generation (a reference) */
	char *config_path;            /* the file a reload reads, or NULL (built-in config) */
	uint64_t reloads;             /* reloads that took effect */
	uint64_t reload_failures;     /* reloads refused (an invalid file) */
	uint32_t seed;                /* random per process (routers' choices) */
	sg_upstream_t *upstream;      /* libcurl multi on the loop (NULL once closed) */
	sg_cache_t *cache;            /* the semantic cache, or NULL when off (borrowed) */
	sg_embedder_t *embedder;      /* the cache's embedder (borrowed or owned_embedder) */
	sg_embedder_t *owned_embedder; /* the openai one, made here on upstream */
	sg_stats_t *stats;            /* statistics (owned) */
	uv_timer_t maint_timer;       /* cache maintenance, once a second */
	uv_timer_t hits_timer;        /* cache hit counters to the store, often */
	uv_work_t sync_work;          /* fsync of the cache off the loop */
	int syncing;                  /* sync_work is queued or running */
	int sync_rc;                  /* its result */
	int64_t last_checkpoint_s;    /* when indexes were last checkpointed */
	int closed;                   /* sg__gateway_close() ran */
	int test_id_bits;             /* SEMGATE_TEST_SCOPE_ID_BITS (a test hook; 64: off) */
	uint64_t sse_events_dropped;  /* upstream stream events that were not JSON objects */
	sg_log_limit_t store_log;     /* rate limits for lines an upstream can cause */
	sg_log_limit_t sse_log;
	sg_server_t *http;            /* the front end attached (for its figures in /stats) */
	sg_authdb_t *authdb;          /* keys, teams, budgets, spend (auth.mode keys or
	                               * auth.record_spend), or NULL */
	sg_counters_t *counters;      /* rate-limit counters (auth.mode keys), or NULL */
	sg_counters_t *counters_local; /* the in-process backend (counters, or inside it) */
	uv_timer_t gov_timer;         /* forgets idle counters */
	uint64_t auth_refused;        /* requests refused by the auth step */
	uint64_t limited;             /* ... by a rate or concurrency limit */
	uint64_t budget_refused;      /* ... by a budget (or an unpriced model under one) */
	sg_log_limit_t gov_log;
} sg_gateway_t;

/** Make the gateway for cfg (borrowed: generation 1, it must outlive the
 * gateway); cache and embedder are borrowed (NULL embedder with a cache: the
 * openai one is made here). */
int sg__gateway_new(sg_gateway_t **out, uv_loop_t *loop, const sg_config_t *cfg,
                    sg_cache_t *cache, sg_embedder_t *embedder);
/** Stop the timers and close the upstream client (the front end has drained). */
void sg__gateway_close(sg_gateway_t *gw);
/** Free it once the loop has run its handles' close callbacks. */
void sg__gateway_free(sg_gateway_t *gw);
/** A cache hit was counted: its counter reaches the store within a few ms. */
void sg__gateway_hit_counted(sg_gateway_t *gw);
/** Reload (see sg_server_reload() in semgate/server.h). */
int sg__gateway_reload(sg_gateway_t *gw, sg_buf_t *report);

#endif
