/* Unit tests: the cache engine (scopes, exact and semantic lookups, LRU,
 * expiry, auto index upgrade, persistence). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "semgate/cache.h"

#define DIM 16

static char dir[64];

/* A unit vector pointing mostly along axis `a`, a little along `b`. */
static void vec(float *v, int a, int b, float mix)
{
	for (int i = 0; i < DIM; i++)
		v[i] = 0;
	v[a % DIM] = 1.0f;
	v[b % DIM] += mix;
	float n = sqrtf(1.0f + mix * mix + (a % DIM == b % DIM ? 2 * mix : 0));
	for (int i = 0; i < DIM; i++)
		v[i] /= n;
}

static void key(sg_cache_key_t *k, const char *ns, const char *prompt)
{
	json_t *req = json_pack("{s:s,s:[{s:s,s:s}]}", "model", "m", "messages", "role", "user",
	                        "content", prompt);
	sg_cache_key_opts_t ko = {SG_EMBED_LAST_USER, 0, 1.0};
	sg_cache_key_build(k, req, SG_CACHE_CHAT, ns, "m", &ko);
	json_decref(req);
}

static sg_cache_t *open_cache(uint64_t max_entries, int auto_hnsw, int64_t now)
{
	sg_cache_opts_t o = {
		.path = dir, .embedder_id = "test", .dim = DIM, .index_type = SG_INDEX_FLAT,
		.auto_hnsw = auto_hnsw, .hnsw_min_entries = 8, .max_entries = max_entries,
	};
	char err[512];
	sg_cache_t *c = NULL;
	int rc = sg_cache_open(&c, &o, now, err, sizeof(err));
	if (rc)
		fprintf(stderr, "open: %s\n", err);
	return c;
}

static int put(sg_cache_t *c, const char *ns, const char *prompt, const float *v, int64_t now,
               int64_t ttl, uint64_t *id)
{
	sg_cache_key_t k;
	sg_cache_key_init(&k);
	key(&k, ns, prompt);
	int rc = sg_cache_store(c, &k, v, ns, "m", (sg_iovec_t){"{\"choices\":[]}", 14}, 3, 4, now,
	                        ttl, id);
	sg_cache_key_free(&k);
	return rc;
}

/* Semantic lookup; returns the entry id or 0. */
static uint64_t find(sg_cache_t *c, const char *ns, const char *prompt, const float *v,
                     float threshold, int64_t now)
{
	sg_cache_key_t k;
	sg_cache_hit_t hit;
	float best;
	uint64_t id = 0;
	sg_cache_key_init(&k);
	key(&k, ns, prompt);
	if (sg_cache_lookup_semantic(c, &k, v, threshold, now, &hit, &best) == 0) {
		id = hit.entry.m.id;
		sg_cache_hit_free(&hit);
	}
	sg_cache_key_free(&k);
	return id;
}

static uint64_t find_exact(sg_cache_t *c, const char *ns, const char *prompt, int64_t now)
{
	sg_cache_key_t k;
	sg_cache_hit_t hit;
	uint64_t id = 0;
	sg_cache_key_init(&k);
	key(&k, ns, prompt);
	if (sg_cache_lookup_exact(c, &k, now, &hit) == 0) {
		id = hit.entry.m.id;
		sg_cache_hit_free(&hit);
	}
	sg_cache_key_free(&k);
	return id;
}

static void test_scopes_never_cross(void)
{
	sg_cache_t *c = open_cache(0, 0, 1000);
	float v[DIM];
	char ns[32];
	uint64_t id;
	int ok = 1;

	CHECK(c != NULL);
	if (!c)
		return;
	/* 3000 tenants store the same vector; each finds only its own entry */
	vec(v, 1, 2, 0.1f);
	for (int i = 0; i < 3000; i++) {
		snprintf(ns, sizeof(ns), "tenant-%d", i);
		ok &= put(c, ns, "same question", v, 1000, 0, &id) == 0;
	}
	CHECK(ok);
	sg_cache_stats_t st;
	sg_cache_stats(c, &st);
	CHECK(st.scopes == 3000 && st.entries == 3000);
	for (int i = 0; i < 3000; i += 97) {
		snprintf(ns, sizeof(ns), "tenant-%d", i);
		sg_entry_t e;
		uint64_t got = find(c, ns, "other words", v, 0.5f, 1000);
		CHECK(got != 0);
		if (got && sg_cache_get(c, got, &e) == 0) {
			CHECK(e.m.ns.len == strlen(ns) && memcmp(e.m.ns.base, ns, e.m.ns.len) == 0);
			sg_entry_free(&e);
		}
	}
	CHECK(find(c, "nobody", "same question", v, 0.0f, 1000) == 0);
	sg_cache_close(c);
}

static void test_threshold_and_exact(void)
{
	sg_cache_t *c = open_cache(0, 0, 1000);
	float a[DIM], b[DIM], far[DIM];
	uint64_t id;

	vec(a, 3, 4, 0.0f);
	vec(b, 3, 4, 0.3f);   /* cosine with a: ~0.958 */
	vec(far, 9, 9, 0.0f); /* orthogonal */
	CHECK(put(c, "t", "alpha", a, 1000, 0, &id) == 0);
	CHECK(find_exact(c, "t", "alpha", 1000) == id);
	CHECK(find_exact(c, "t", "alpha ", 1000) == 0);
	CHECK(find(c, "t", "alpha?", b, 0.95f, 1000) == id);
	CHECK(find(c, "t", "alpha?", b, 0.97f, 1000) == 0);
	CHECK(find(c, "t", "beta", far, 0.5f, 1000) == 0);
	/* storing the same key again replaces the entry */
	uint64_t id2;
	CHECK(put(c, "t", "alpha", a, 1001, 0, &id2) == 0);
	CHECK(id2 != id && find_exact(c, "t", "alpha", 1001) == id2);
	sg_cache_stats_t st;
	sg_cache_stats(c, &st);
	CHECK(st.entries == 1 && st.index_vectors == 1);
	sg_cache_close(c);
}

static void test_lru_and_expiry(void)
{
	sg_cache_t *c = open_cache(3, 0, 1000);
	float v[4][DIM];
	uint64_t ids[4];
	const char *p[4] = {"p0", "p1", "p2", "p3"};

	for (int i = 0; i < 4; i++)
		vec(v[i], i, i, 0.0f);
	for (int i = 0; i < 3; i++)
		CHECK(put(c, "t", p[i], v[i], 1000 + i, 0, &ids[i]) == 0);
	/* a hit makes p0 the most recently used: p1 goes when p3 arrives */
	CHECK(find_exact(c, "t", "p0", 1010) == ids[0]);
	CHECK(put(c, "t", p[3], v[3], 1011, 0, &ids[3]) == 0);
	CHECK(find_exact(c, "t", "p1", 1012) == 0);
	CHECK(find(c, "t", "x", v[1], 0.9f, 1012) == 0); /* gone from the index too */
	CHECK(find_exact(c, "t", "p0", 1012) == ids[0]);
	sg_cache_stats_t st;
	sg_cache_stats(c, &st);
	CHECK(st.entries == 3 && st.evicted == 1 && st.index_vectors == 3);

	/* a TTL from creation: served for at least the TTL (through the second
	 * it ends in, 2010), never after */
	uint64_t tid;
	float t[DIM];
	vec(t, 7, 7, 0.0f);
	CHECK(put(c, "t", "short", t, 2000, 10, &tid) == 0);
	CHECK(find_exact(c, "t", "short", 2009) == tid);
	CHECK(find_exact(c, "t", "short", 2010) == tid);
	CHECK(find_exact(c, "t", "short", 2011) == 0);
	CHECK(find(c, "t", "x", t, 0.9f, 2011) == 0);
	CHECK(sg_cache_maintain(c, 2012, 0) == 0);
	sg_cache_stats(c, &st);
	CHECK(st.expired >= 1);
	sg_cache_close(c);
}

static void test_auto_upgrade_and_restart(void)
{
	sg_cache_t *c = open_cache(0, 1, 1000);
	float v[DIM];
	uint64_t ids[20];
	char p[32];

	for (int i = 0; i < 20; i++) {
		snprintf(p, sizeof(p), "q%d", i);
		vec(v, i, i + 1, 0.5f);
		CHECK(put(c, "t", p, v, 1000, 0, &ids[i]) == 0);
	}
	sg_cache_stats_t st;
	sg_cache_stats(c, &st);
	CHECK(st.hnsw_scopes == 1); /* more than hnsw_min_entries (8) */
	vec(v, 5, 6, 0.5f);
	CHECK(find(c, "t", "x", v, 0.99f, 1000) == ids[5]);
	CHECK(sg_cache_delete(c, ids[5]) == 0);
	CHECK(find(c, "t", "x", v, 0.99f, 1000) == 0);
	sg_cache_close(c); /* checkpoints the HNSW index */

	c = open_cache(0, 1, 1000);
	CHECK(c != NULL);
	if (!c)
		return;
	sg_cache_stats(c, &st);
	CHECK(st.entries == 19 && st.hnsw_scopes == 1);
	vec(v, 6, 7, 0.5f);
	CHECK(find(c, "t", "x", v, 0.99f, 1000) == ids[6]);
	vec(v, 5, 6, 0.5f);
	CHECK(find(c, "t", "x", v, 0.99f, 1000) == 0);
	CHECK(find_exact(c, "t", "q7", 1000) == ids[7]);
	size_t n = 0;
	CHECK(sg_cache_clear(c, "t", &n) == 0 && n == 19);
	sg_cache_stats(c, &st);
	CHECK(st.entries == 0 && st.index_vectors == 0);
	sg_cache_close(c);
}

/* A big index is checkpointed once 1/64 of it changed; close saves the rest,
 * and a start recovers what no checkpoint holds. */
static void test_big_index_checkpoints(void)
{
	sg_cache_t *c = open_cache(0, 1, 1000);
	sg_cache_stats_t st;
	float v[DIM];
	char p[32];
	uint64_t id;
	int n = 0;

	if (!c)
		return;
	for (; n < 4200; n++) {
		snprintf(p, sizeof(p), "b%d", n);
		vec(v, n % DIM, (n / DIM) % DIM, 0.1f + (float)(n % 97) / 100.0f);
		CHECK(put(c, "t", p, v, 1000, 0, &id) == 0);
	}
	CHECK(sg_cache_maintain(c, 1001, 1) == 0);
	sg_cache_stats(c, &st);
	CHECK(st.unsaved_changes == 0 && st.hnsw_scopes == 1);
	for (int k = 0; k < 10; k++, n++) { /* 10 < 4210 / 64: not worth a save */
		snprintf(p, sizeof(p), "b%d", n);
		vec(v, n % DIM, (n / DIM) % DIM, 0.3f);
		CHECK(put(c, "t", p, v, 1000, 0, &id) == 0);
	}
	CHECK(sg_cache_maintain(c, 1002, 1) == 0);
	sg_cache_stats(c, &st);
	CHECK(st.unsaved_changes == 10);
	for (int k = 0; k < 60; k++, n++) { /* 70 >= 4270 / 64: saved */
		snprintf(p, sizeof(p), "b%d", n);
		vec(v, n % DIM, (n / DIM) % DIM, 0.7f);
		CHECK(put(c, "t", p, v, 1000, 0, &id) == 0);
	}
	CHECK(sg_cache_maintain(c, 1003, 1) == 0);
	sg_cache_stats(c, &st);
	CHECK(st.unsaved_changes == 0);
	for (int k = 0; k < 5; k++, n++) {
		snprintf(p, sizeof(p), "b%d", n);
		vec(v, n % DIM, (n / DIM) % DIM, 0.9f);
		CHECK(put(c, "t", p, v, 1000, 0, &id) == 0);
	}
	sg_cache_close(c); /* saves the last 5 */

	c = open_cache(0, 1, 1000);
	CHECK(c != NULL);
	if (!c)
		return;
	sg_cache_stats(c, &st);
	CHECK(st.entries == (uint64_t)n && st.index_vectors == (uint64_t)n);
	CHECK(st.unsaved_changes == 0);
	CHECK(find_exact(c, "t", p, 1000) == id);
	sg_cache_close(c);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/sg-test-cache.%d", (int)getpid());
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	test_scopes_never_cross();
	if (system(cmd) != 0)
		return 1;
	test_threshold_and_exact();
	if (system(cmd) != 0)
		return 1;
	test_lru_and_expiry();
	if (system(cmd) != 0)
		return 1;
	test_auto_upgrade_and_restart();
	if (system(cmd) != 0)
		return 1;
	test_big_index_checkpoints();
	if (system(cmd) != 0)
		return 1;
	CHECK_DONE();
}
