/* Statistics: counters and a log-bucketed latency histogram. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "semgate/hash.h"
#include "semgate/stats.h"

#define NBUCKETS 96 /* bucket b holds [g^b, g^(b+1)) µs with g = 2^(1/4) */

typedef struct counters {
	uint64_t requests;         /* cacheable or not */
	uint64_t outcome[SG_STAT__LAST]; /* by outcome */
	uint64_t prompt_saved;     /* prompt tokens not sent upstream */
	uint64_t completion_saved; /* completion tokens not generated */
	double money_saved;        /* at the model's configured prices */
} counters_t;

/* A named group of counters (a model or a namespace). */
typedef struct group {
	char *name;        /* owned */
	counters_t c;      /* its counters */
} group_t;

typedef struct groups {
	group_t *v;        /* groups in first-seen order */
	size_t n, cap;     /* used, allocated */
} groups_t;

struct sg_stats {
	counters_t total;           /* all requests */
	groups_t models;            /* per model */
	groups_t namespaces;        /* per namespace */
	uint64_t embed_errors;      /* embedding failures */
	uint64_t embed_skipped;     /* embedder busy (queue full, timeout): no semantic lookup */
	uint64_t lookups;           /* lookups timed */
	uint64_t lat[NBUCKETS];     /* lookup latency histogram */
};

sg_stats_t *sg_stats_new(void)
{
	return calloc(1, sizeof(sg_stats_t));
}

static void groups_free(groups_t *g)
{
	for (size_t i = 0; i < g->n; i++)
		free(g->v[i].name);
	free(g->v);
}

void sg_stats_free(sg_stats_t *s)
{
	if (s == NULL)
		return;
	groups_free(&s->models);
	groups_free(&s->namespaces);
	free(s);
}

static counters_t *group(groups_t *g, const char *name)
{
	for (size_t i = 0; i < g->n; i++)
		if (strcmp(g->v[i].name, name) == 0)
			return &g->v[i].c;
	if (g->n >= SG_STATS_MAX_KEYS)
		name = "(other)";
	for (size_t i = 0; i < g->n; i++)
		if (strcmp(g->v[i].name, name) == 0)
			return &g->v[i].c;
	if (g->n == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 8;
		group_t *v = realloc(g->v, cap * sizeof(*v));
		if (v == NULL)
			return NULL;
		g->v = v;
		g->cap = cap;
	}
	char *copy = strdup(name);
	if (copy == NULL)
		return NULL;
	g->v[g->n] = (group_t){copy, {0}};
	return &g->v[g->n++].c;
}

static void add(counters_t *c, enum sg_stat_outcome o, uint64_t pt, uint64_t ct, double money)
{
	if (c == NULL)
		return;
	c->requests++;
	c->outcome[o]++;
	c->prompt_saved += pt;
	c->completion_saved += ct;
	c->money_saved += money;
}

void sg_stats_count(sg_stats_t *s, const char *model, const char *ns, enum sg_stat_outcome o,
                    uint64_t pt, uint64_t ct, double money)
{
	add(&s->total, o, pt, ct, money);
	if (model)
		add(group(&s->models, model), o, pt, ct, money);
	if (ns)
		add(group(&s->namespaces, ns), o, pt, ct, money);
}

void sg_stats_embed_error(sg_stats_t *s)
{
	s->embed_errors++;
}

void sg_stats_embed_skip(sg_stats_t *s)
{
	s->embed_skipped++;
}

void sg_stats_lookup_us(sg_stats_t *s, uint64_t us)
{
	int b = us <= 1 ? 0 : (int)(4.0 * log2((double)us));
	s->lat[b < NBUCKETS ? b : NBUCKETS - 1]++;
	s->lookups++;
}

/* Upper bound of the bucket holding the q-quantile, in µs. */
static double percentile(const sg_stats_t *s, double q)
{
	uint64_t want = (uint64_t)ceil(q * (double)s->lookups), seen = 0;
	if (s->lookups == 0)
		return 0;
	for (int b = 0; b < NBUCKETS; b++) {
		seen += s->lat[b];
		if (seen >= want)
			return pow(2.0, (b + 1) / 4.0);
	}
	return pow(2.0, NBUCKETS / 4.0);
}

static void counters_json(sg_buf_t *o, const counters_t *c)
{
	uint64_t hits = c->outcome[SG_STAT_HIT_EXACT] + c->outcome[SG_STAT_HIT_SEMANTIC];
	uint64_t lookups = hits + c->outcome[SG_STAT_MISS];
	sg_buf_printf(o,
	              "{\"requests\":%llu,\"hits\":%llu,\"hits_exact\":%llu,\"hits_semantic\":%llu,"
	              "\"misses\":%llu,\"bypasses\":%llu,\"refreshes\":%llu,\"hit_rate\":%.4f,"
	              "\"prompt_tokens_saved\":%llu,\"completion_tokens_saved\":%llu,"
	              "\"tokens_saved\":%llu,\"money_saved\":%.6f}",
	              (unsigned long long)c->requests, (unsigned long long)hits,
	              (unsigned long long)c->outcome[SG_STAT_HIT_EXACT],
	              (unsigned long long)c->outcome[SG_STAT_HIT_SEMANTIC],
	              (unsigned long long)c->outcome[SG_STAT_MISS],
	              (unsigned long long)c->outcome[SG_STAT_BYPASS],
	              (unsigned long long)c->outcome[SG_STAT_REFRESH],
	              lookups ? (double)hits / (double)lookups : 0.0,
	              (unsigned long long)c->prompt_saved, (unsigned long long)c->completion_saved,
	              (unsigned long long)(c->prompt_saved + c->completion_saved), c->money_saved);
}

static void groups_json(sg_buf_t *o, const groups_t *g)
{
	sg_buf_puts(o, "{");
	for (size_t i = 0; i < g->n; i++) {
		if (i)
			sg_buf_puts(o, ",");
		sg_buf_json_str(o, g->v[i].name, strlen(g->v[i].name));
		sg_buf_puts(o, ":");
		counters_json(o, &g->v[i].c);
	}
	sg_buf_puts(o, "}");
}

int sg_stats_json(const sg_stats_t *s, sg_buf_t *o)
{
	sg_buf_puts(o, "\"overall\":");
	counters_json(o, &s->total);
	sg_buf_puts(o, ",\"per_model\":");
	groups_json(o, &s->models);
	sg_buf_puts(o, ",\"per_namespace\":");
	groups_json(o, &s->namespaces);
	return sg_buf_printf(o,
	                     ",\"embed_errors\":%llu,\"embed_skipped\":%llu,"
	                     "\"lookup_latency_us\":{\"count\":%llu,"
	                     "\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f}",
	                     (unsigned long long)s->embed_errors,
	                     (unsigned long long)s->embed_skipped, (unsigned long long)s->lookups,
	                     percentile(s, 0.5), percentile(s, 0.9), percentile(s, 0.99));
}
