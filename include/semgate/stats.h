/* semgate: request and cache statistics, overall, per model and per
 * namespace, rendered as JSON for GET /stats. */
#ifndef SEMGATE_STATS_H
#define SEMGATE_STATS_H

#include <stdint.h>

#include "semgate/buf.h"

/** What happened to one request, as far as the cache is concerned. */
enum sg_stat_outcome {
	SG_STAT_HIT_EXACT,
	SG_STAT_HIT_SEMANTIC,
	SG_STAT_MISS,
	SG_STAT_BYPASS,
	SG_STAT_REFRESH,
	SG_STAT__LAST
};

typedef struct sg_stats sg_stats_t;

/** Create empty statistics. NULL on allocation failure. */
sg_stats_t *sg_stats_new(void);
void sg_stats_free(sg_stats_t *s);

/**
 * Count one request. tokens_saved / money_saved are what a hit avoided
 * (0 otherwise). ns and model are copied when first seen; at most
 * SG_STATS_MAX_KEYS distinct namespaces are tracked, the rest are "(other)".
 */
void sg_stats_count(sg_stats_t *s, const char *model, const char *ns, enum sg_stat_outcome o,
                    uint64_t prompt_tokens_saved, uint64_t completion_tokens_saved,
                    double money_saved);
/** Count an embedding failure (the request went upstream uncached). */
void sg_stats_embed_error(sg_stats_t *s);
/** Count a prompt the embedder was too busy for (queue full or timed out):
 * it skipped the semantic lookup and went upstream. */
void sg_stats_embed_skip(sg_stats_t *s);
/** Record a cache lookup's duration (embed + search), in microseconds. */
void sg_stats_lookup_us(sg_stats_t *s, uint64_t us);
/** Append the statistics as a JSON object's members (no braces) to out. */
int sg_stats_json(const sg_stats_t *s, sg_buf_t *out);

#define SG_STATS_MAX_KEYS 1000

#endif
