/* Unit tests: the cache engine (scopes, exact and semantic lookups, LRU,
 * expiry, auto index upgrade, persistence). */
#include <jansson.h>
#include <lmdb.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "lmdb_raw.h"
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

static void key_with(sg_cache_key_t *k, const char *ns, const char *prompt,
                     const sg_hash_key_t *hk)
{
	json_t *req = json_pack("{s:s,s:[{s:s,s:s}]}", "model", "m", "messages", "role", "user",
	                        "content", prompt);
	sg_cache_key_opts_t ko = {SG_EMBED_LAST_USER, 0, 1.0, hk};
	sg_cache_key_build(k, req, SG_CACHE_CHAT, ns, "m", &ko);
	json_decref(req);
}

static void key(sg_cache_key_t *k, const char *ns, const char *prompt)
{
	key_with(k, ns, prompt, NULL);
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

/* The verifier on a candidate with the query's very vector (cosine 1): with
 * word evidence (the lexical embedders') a substituted rare word lowers the
 * score below 0.97; structure only (the model embedder's) it does not, while
 * different numbers still do. */
static void test_verifier_structure_only(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	for (int structure = 0; structure < 2; structure++) {
		CHECK(system(cmd) == 0);
		sg_cache_opts_t o = {
			.path = dir, .embedder_id = "test", .dim = DIM, .index_type = SG_INDEX_FLAT,
			.verify_hits = 1, .verify_structure_only = structure,
		};
		char err[512];
		sg_cache_t *c = NULL;
		CHECK(sg_cache_open(&c, &o, 1000, err, sizeof(err)) == 0);
		if (c == NULL)
			return;
		float v[DIM], w[DIM];
		vec(v, 1, 2, 0.1f);
		vec(w, 5, 6, 0.1f);
		uint64_t id1 = 0, id2 = 0;
		CHECK(put(c, "", "How do I learn the Python programming language quickly?", v, 1000,
		          0, &id1) == 0);
		CHECK(put(c, "", "What was the population of Lisbon in 1990?", w, 1000, 0, &id2) == 0);
		uint64_t got = find(c, "", "How do I learn the Haskell programming language quickly?",
		                    v, 0.97f, 1000);
		CHECK_MSG(got == (structure ? id1 : 0),
		          "a substituted rare word, structure only %d: got entry %llu", structure,
		          (unsigned long long)got);
		got = find(c, "", "What was the population of Lisbon in 2010?", w, 0.97f, 1000);
		CHECK_MSG(got == 0, "different numbers, structure only %d: got entry %llu", structure,
		          (unsigned long long)got);
		sg_cache_close(c);
	}
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

/* ---- checkpoints off the loop ------------------------------------------------ */

/* Finish a checkpoint under way, as the server's next maintenance ticks do. */
static void settle(sg_cache_t *c, int64_t now)
{
	sg_cache_stats_t st;
	for (int i = 0; i < 30000; i++) {
		CHECK(sg_cache_maintain(c, now, 0) == 0);
		sg_cache_stats(c, &st);
		if (!st.checkpoint_in_progress)
			return;
		usleep(1000);
	}
	CHECK(!"a checkpoint did not finish in 30 s");
}

/* A gate for the saver thread: it blocks at stage `block_at` until opened. */
typedef struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int block_at;   /* sg_cache_ckpt_stage_t to stop at (-1: none) */
	int entered;    /* times the saver stopped at the gate */
	int open;       /* let it go on */
	int chunks;     /* chunks written, all saves */
	int fail_adds;  /* make held adds fail (SG_CACHE_CKPT_HELD_ADD) */
} gate_t;

static int gate_hook(void *ud, int stage)
{
	gate_t *g = ud;
	pthread_mutex_lock(&g->mu);
	g->chunks += stage == SG_CACHE_CKPT_CHUNK;
	if (stage == SG_CACHE_CKPT_HELD_ADD) {
		int fail = g->fail_adds;
		pthread_mutex_unlock(&g->mu);
		return fail;
	}
	if (stage == g->block_at && !g->open) {
		g->entered++;
		pthread_cond_broadcast(&g->cv);
		while (!g->open)
			pthread_cond_wait(&g->cv, &g->mu);
	}
	pthread_mutex_unlock(&g->mu);
	return 0;
}

static void gate_init(gate_t *g, int block_at)
{
	memset(g, 0, sizeof(*g));
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	g->block_at = block_at;
}

/* Wait (up to 30 s) until the saver stands at the gate. */
static int gate_wait(gate_t *g)
{
	struct timespec ts;
	int ok;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 30;
	pthread_mutex_lock(&g->mu);
	while (g->entered == 0 && pthread_cond_timedwait(&g->cv, &g->mu, &ts) == 0)
		;
	ok = g->entered > 0;
	pthread_mutex_unlock(&g->mu);
	return ok;
}

static void gate_open(gate_t *g)
{
	pthread_mutex_lock(&g->mu);
	g->open = 1;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

static sg_cache_t *open_ckpt(gate_t *g, int64_t now)
{
	sg_cache_opts_t o = {
		.path = dir, .embedder_id = "test", .dim = DIM, .index_type = SG_INDEX_FLAT,
		.auto_hnsw = 1, .hnsw_min_entries = 8, .ckpt_chunk_bytes = 4096,
		.ckpt_hook = g ? gate_hook : NULL, .ckpt_hook_ud = g,
	};
	char err[512];
	sg_cache_t *c = NULL;
	if (sg_cache_open(&c, &o, now, err, sizeof(err)))
		fprintf(stderr, "open: %s\n", err);
	return c;
}

/* The i-th test vector: two different axes (no two of the first 240 share
 * them), as the other tests'; vec3() makes ones of three axes, which none of
 * these comes close to. */
static void vec_i(float *v, int i)
{
	vec(v, i % DIM, (i % DIM + 1 + (i / DIM) % (DIM - 1)) % DIM, 0.1f + (float)(i % 89) / 100.0f);
}

static void vec3(float *v, int a, int b, int c)
{
	for (int i = 0; i < DIM; i++)
		v[i] = 0;
	v[a] = 1.0f;
	v[b] = 0.6f;
	v[c] = 0.3f;
	float n = sqrtf(1.0f + 0.36f + 0.09f);
	for (int i = 0; i < DIM; i++)
		v[i] /= n;
}

/* Put n entries "a0".."a<n-1>" with vec_i vectors; ids[i] gets their ids. */
static int put_many(sg_cache_t *c, int from, int n, uint64_t *ids)
{
	char p[32];
	float v[DIM];
	int ok = 1;
	for (int i = from; i < from + n; i++) {
		snprintf(p, sizeof(p), "a%d", i);
		vec_i(v, i);
		ok &= put(c, "t", p, v, 1000, 0, &ids[i]) == 0;
	}
	return ok;
}

/*
 * While the saver thread holds a save (blocked at the gate after
 * serialising), the loop's calls return: exact and semantic lookups, a store,
 * a delete. The new entry is found exactly at once and semantically once the
 * save is done; the deleted one is never served again, then or after a
 * restart.
 */
static void test_checkpoint_off_loop(void)
{
	gate_t g;
	gate_init(&g, SG_CACHE_CKPT_SERIALISED);
	sg_cache_t *c = open_ckpt(&g, 1000);
	sg_cache_stats_t st;
	uint64_t ids[300], xid = 0;
	float v[DIM], x[DIM], v7[DIM];

	if (!c)
		return;
	CHECK(put_many(c, 0, 300, ids));
	CHECK(sg_cache_maintain(c, 1001, 1) == 0); /* hands the save over, returns */
	CHECK(gate_wait(&g));
	sg_cache_stats(c, &st);
	CHECK_MSG(st.checkpoint_in_progress == 1 && st.unsaved_changes == 301, "%d %llu",
	          st.checkpoint_in_progress, (unsigned long long)st.unsaved_changes);
	/* (300 entries + the switch to HNSW) */

	/* the loop goes on while the saver holds the save */
	CHECK(find_exact(c, "t", "a5", 1001) == ids[5]);
	vec_i(v, 11);
	CHECK(find(c, "t", "q", v, 0.99f, 1001) == ids[11]);
	vec3(x, 2, 9, 13);
	CHECK(put(c, "t", "x-new", x, 1001, 0, &xid) == 0);
	CHECK(find_exact(c, "t", "x-new", 1001) == xid);
	CHECK(find(c, "t", "q", x, 0.99f, 1001) == 0); /* held back until the save is done */
	CHECK(sg_cache_delete(c, ids[7]) == 0);
	vec_i(v7, 7);
	CHECK(find(c, "t", "q", v7, 0.99f, 1001) == 0); /* still in the frozen index: skipped */
	CHECK(find(c, "t", "q", v7, 0.99f, 1001) == 0); /* (its removal is held once) */
	CHECK(find_exact(c, "t", "a7", 1001) == 0);
	sg_cache_stats(c, &st);
	CHECK_MSG(st.unsaved_changes == 303, "%llu", (unsigned long long)st.unsaved_changes);
	CHECK(sg_cache_maintain(c, 1001, 1) == 0);     /* a tick meanwhile: no second save */
	sg_cache_stats(c, &st);
	CHECK(st.checkpoint_in_progress == 1 && st.entries == 300 && st.index_vectors == 300);

	gate_open(&g);
	settle(c, 1002);
	sg_cache_stats(c, &st);
	CHECK(st.checkpoint_in_progress == 0);
	CHECK(st.index_vectors == 300 && st.entries == 300);
	/* the two changes made during the save were saved by the checkpoint that
	 * the tick meanwhile asked for, started once the first was done */
	CHECK_MSG(st.unsaved_changes == 0, "%llu", (unsigned long long)st.unsaved_changes);
	CHECK(find(c, "t", "q", x, 0.99f, 1002) == xid);
	CHECK(find(c, "t", "q", v7, 0.99f, 1002) == 0);
	CHECK(g.chunks > 1); /* it was written in several chunks */
	sg_cache_close(c);

	c = open_ckpt(NULL, 1003);
	CHECK(c != NULL);
	if (!c)
		return;
	sg_cache_stats(c, &st);
	CHECK(st.entries == 300 && st.index_vectors == 300 && st.unsaved_changes == 0);
	CHECK(find(c, "t", "q", x, 0.99f, 1003) == xid);
	CHECK(find(c, "t", "q", v7, 0.99f, 1003) == 0);
	CHECK(find_exact(c, "t", "a7", 1003) == 0);
	vec_i(v, 200);
	CHECK(find(c, "t", "q", v, 0.99f, 1003) == ids[200]);
	sg_cache_close(c);
}

/* Top candidates of q queries near the stored vectors. */
static void search_all(sg_cache_t *c, int q, int64_t *out)
{
	sg_cache_key_t k;
	float v[DIM];
	sg_cache_key_init(&k);
	key(&k, "t", "q");
	for (int i = 0; i < q; i++) {
		sg_cache_candidates_t cand;
		vec(v, i % DIM, (i * 7) % DIM, 0.3f + (float)(i % 13) / 20.0f);
		memset(&cand, 0, sizeof(cand));
		CHECK(sg_cache_search(c, k.scope_hash, v, &cand) == 0);
		for (int j = 0; j < SG_CACHE_CANDIDATES; j++)
			out[i * SG_CACHE_CANDIDATES + j] = j < cand.n ? cand.ids[j] : -1;
	}
	sg_cache_key_free(&k);
}

static int keep_scope(void *ud, uint64_t scope_hash, uint64_t last_id, const void *blob,
                      size_t len)
{
	*(uint64_t *)ud = scope_hash;
	return 0;
}

/* Flip a byte in the middle of the first checkpoint chunk, with LMDB directly. */
static int damage_chunk(void)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;
	if ((rc = mdb_env_create(&env)))
		return rc;
	mdb_env_set_maxdbs(env, 8);
	if (!(rc = mdb_env_open(env, dir, 0, 0600)) && !(rc = mdb_txn_begin(env, NULL, 0, &txn))) {
		if (!(rc = mdb_dbi_open(txn, "ckchunks", 0, &dbi)) &&
		    !(rc = mdb_cursor_open(txn, dbi, &cur))) {
			if (!(rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST))) {
				char *b = malloc(v.mv_size);
				memcpy(b, v.mv_data, v.mv_size);
				b[v.mv_size / 2] ^= 0x40;
				v.mv_data = b;
				rc = mdb_cursor_put(cur, &k, &v, MDB_CURRENT);
				free(b);
			}
			mdb_cursor_close(cur);
		}
		if (rc)
			mdb_txn_abort(txn);
		else
			rc = mdb_txn_commit(txn);
	}
	mdb_env_close(env);
	return rc;
}

/*
 * A checkpoint written in chunks off the loop reloads to the same search
 * results; so does the same index as a single-record checkpoint (what the
 * previous semgate wrote); a damaged chunk makes the scope be rebuilt from
 * the stored vectors.
 */
static void test_checkpoint_reload(void)
{
	enum { Q = 60 };
	sg_cache_t *c = open_ckpt(NULL, 1000);
	sg_cache_stats_t st;
	uint64_t ids[600], scope = 0;
	int64_t before[Q * SG_CACHE_CANDIDATES], after[Q * SG_CACHE_CANDIDATES];
	float v[DIM];

	if (!c)
		return;
	CHECK(put_many(c, 0, 600, ids));
	CHECK(sg_cache_maintain(c, 1001, 1) == 0);
	settle(c, 1001);
	sg_cache_stats(c, &st);
	CHECK(st.unsaved_changes == 0 && st.hnsw_scopes == 1);
	search_all(c, Q, before);
	sg_cache_close(c); /* nothing left to save: the checkpoint is the saver's */

	c = open_ckpt(NULL, 1002);
	CHECK(c != NULL);
	if (!c)
		return;
	sg_cache_stats(c, &st);
	CHECK(st.unsaved_changes == 0 && st.index_vectors == 600); /* loaded, not rebuilt */
	search_all(c, Q, after);
	CHECK(memcmp(before, after, sizeof(before)) == 0);
	sg_cache_close(c);

	/* the same index as a single-record checkpoint */
	sg_store_opts_t so = {0, 0, "test", DIM, 0, 0};
	sg_store_t *s;
	char err[256];
	void *blob = NULL;
	size_t len = 0;
	uint64_t last = 0;
	CHECK(sg_store_open(&s, dir, &so, err, sizeof(err)) == 0);
	CHECK(sg_store_iter_checkpoints(s, keep_scope, &scope, NULL) == 0 && scope != 0);
	CHECK(sg_store_get_checkpoint(s, scope, &last, &blob, &len) == 0 && last == ids[599]);
	CHECK(sg_store_put_checkpoint(s, scope, last, blob, len) == 0); /* drops the chunked one */
	free(blob);
	sg_store_close(s);
	c = open_ckpt(NULL, 1003);
	CHECK(c != NULL);
	if (!c)
		return;
	sg_cache_stats(c, &st);
	CHECK(st.unsaved_changes == 0 && st.index_vectors == 600);
	memset(after, 0, sizeof(after));
	search_all(c, Q, after);
	CHECK(memcmp(before, after, sizeof(before)) == 0);
	/* the next save writes the chunked form */
	CHECK(sg_cache_delete(c, ids[0]) == 0);
	CHECK(sg_cache_maintain(c, 1004, 1) == 0);
	settle(c, 1004);
	sg_cache_close(c);

	/* a damaged chunk: the scope is rebuilt from the stored vectors */
	CHECK(damage_chunk() == 0);
	c = open_ckpt(NULL, 1005);
	CHECK(c != NULL);
	if (!c)
		return;
	sg_cache_stats(c, &st);
	CHECK(st.entries == 599 && st.index_vectors == 599 && st.unsaved_changes == 599);
	int found = 1;
	for (int i = 1; i < 600; i += 7) {
		vec_i(v, i);
		found &= find(c, "t", "q", v, 0.99f, 1005) == ids[i];
	}
	CHECK(found);
	vec_i(v, 0);
	CHECK(find(c, "t", "q", v, 0.99f, 1005) == 0);
	sg_cache_close(c);
}

/*
 * kill -9 in the middle of a save (between two chunks), with an add and a
 * delete held back meanwhile: the previous checkpoint is used, the new entry
 * is recovered from its stored vector, and the entries deleted before and
 * during the save stay deleted.
 */
static void test_checkpoint_crash_mid_save(void)
{
	uint64_t got[4] = {0}; /* xid, deleted before the save, deleted during, extra */
	int p[2];

	if (pipe(p) != 0)
		return;
	pid_t pid = fork();
	if (pid == 0) {
		gate_t g;
		gate_init(&g, -1);
		sg_cache_t *c = open_ckpt(&g, 1000);
		uint64_t ids[310], out[4];
		float x[DIM];
		close(p[0]);
		if (!c || !put_many(c, 0, 300, ids))
			_exit(1);
		sg_cache_maintain(c, 1001, 1);
		settle(c, 1001); /* the checkpoint to come back to */
		pthread_mutex_lock(&g.mu);
		g.block_at = SG_CACHE_CKPT_CHUNK; /* after the first chunk of the next */
		pthread_mutex_unlock(&g.mu);
		if (!put_many(c, 300, 10, ids) || sg_cache_delete(c, ids[3]) != 0)
			_exit(1);
		sg_cache_maintain(c, 1002, 1);
		if (!gate_wait(&g))
			_exit(1);
		vec3(x, 1, 5, 12);
		if (put(c, "t", "x-mid", x, 1002, 0, &out[0]) != 0 || sg_cache_delete(c, ids[4]))
			_exit(1);
		out[1] = ids[3];
		out[2] = ids[4];
		out[3] = ids[305];
		if (write(p[1], out, sizeof(out)) != sizeof(out))
			_exit(1);
		_exit(0); /* no close: a crash */
	}
	close(p[1]);
	CHECK(read(p[0], got, sizeof(got)) == sizeof(got));
	close(p[0]);
	int status = 0;
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	sg_cache_t *c = open_ckpt(NULL, 1003);
	sg_cache_stats_t st;
	float v[DIM], x[DIM];
	CHECK(c != NULL);
	if (!c)
		return;
	sg_cache_stats(c, &st);
	CHECK(st.entries == 300 + 10 + 1 - 2);
	CHECK(st.unsaved_changes == 11); /* 10 + 1 indexed from their vectors */
	vec3(x, 1, 5, 12);
	CHECK(find_exact(c, "t", "x-mid", 1003) == got[0]);
	CHECK(find(c, "t", "q", x, 0.99f, 1003) == got[0]);
	vec_i(v, 305);
	CHECK(find(c, "t", "q", v, 0.99f, 1003) == got[3]);
	CHECK(find_exact(c, "t", "a3", 1003) == 0 && find_exact(c, "t", "a4", 1003) == 0);
	vec_i(v, 3);
	CHECK(find(c, "t", "q", v, 0.99f, 1003) == 0);
	vec_i(v, 4);
	CHECK(find(c, "t", "q", v, 0.99f, 1003) == 0);
	/* the two were in the checkpoint's index: dropped on sight, so none is left */
	sg_cache_stats(c, &st);
	CHECK(st.index_vectors == st.entries);
	sg_cache_close(c);
}

/*
 * An entry stored during a save whose index add fails when the save is done
 * (an index error) is deleted: it would never be found semantically, not
 * even after a restart, as the next checkpoint covers its id.
 */
static void test_checkpoint_held_add_fails(void)
{
	gate_t g;
	gate_init(&g, SG_CACHE_CKPT_SERIALISED);
	g.fail_adds = 1;
	sg_cache_t *c = open_ckpt(&g, 1000);
	sg_cache_stats_t st;
	uint64_t ids[20], xid = 0;
	float x[DIM];

	if (!c)
		return;
	CHECK(put_many(c, 0, 20, ids));
	CHECK(sg_cache_maintain(c, 1001, 1) == 0);
	CHECK(gate_wait(&g));
	vec3(x, 2, 9, 13);
	CHECK(put(c, "t", "x-new", x, 1001, 0, &xid) == 0);
	CHECK(find_exact(c, "t", "x-new", 1001) == xid);
	gate_open(&g);
	settle(c, 1002);
	sg_cache_stats(c, &st);
	CHECK(st.entries == 20 && st.index_vectors == 20);
	CHECK(find_exact(c, "t", "x-new", 1002) == 0);
	CHECK(find_exact(c, "t", "a3", 1002) == ids[3]);
	sg_cache_close(c);

	c = open_ckpt(NULL, 1003);
	CHECK(c != NULL);
	if (!c)
		return;
	sg_cache_stats(c, &st);
	CHECK(st.entries == 20 && st.index_vectors == 20);
	CHECK(find_exact(c, "t", "x-new", 1003) == 0);
	sg_cache_close(c);
}

/*
 * DELETE /cache (every namespace) while a save is between two chunks, new
 * entries after it, then kill -9 once the save is over: the save did not
 * publish a checkpoint of chunks the clear deleted, and the restart indexes
 * the new entries from their vectors.
 */
static void test_checkpoint_cleared(void)
{
	uint64_t got[20];
	int p[2];

	if (pipe(p) != 0)
		return;
	pid_t pid = fork();
	if (pid == 0) {
		gate_t g;
		gate_init(&g, -1);
		sg_cache_t *c = open_ckpt(&g, 1000);
		sg_cache_stats_t st;
		uint64_t ids[330];
		size_t n = 0;
		close(p[0]);
		if (!c || !put_many(c, 0, 300, ids))
			_exit(1);
		sg_cache_maintain(c, 1001, 1);
		settle(c, 1001);
		pthread_mutex_lock(&g.mu);
		g.block_at = SG_CACHE_CKPT_CHUNK;
		pthread_mutex_unlock(&g.mu);
		if (!put_many(c, 300, 10, ids))
			_exit(2);
		sg_cache_maintain(c, 1002, 1);
		if (!gate_wait(&g))
			_exit(3);
		if (sg_cache_clear(c, NULL, &n) != 0 || n != 310)
			_exit(4);
		if (!put_many(c, 310, 20, ids))
			_exit(5);
		gate_open(&g);
		settle(c, 1003);
		sg_cache_stats(c, &st);
		if (st.entries != 20 || st.index_vectors != 20)
			_exit(6);
		if (write(p[1], ids + 310, sizeof(got)) != sizeof(got))
			_exit(7);
		_exit(0); /* no close: a crash */
	}
	close(p[1]);
	CHECK(read(p[0], got, sizeof(got)) == sizeof(got));
	close(p[0]);
	int status = 0;
	waitpid(pid, &status, 0);
	CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status %d", status);
	CHECK_MSG(raw_count(dir, "manifests") == 0 && raw_count(dir, "ckchunks") == 0,
	          "%ld manifests, %ld chunks", raw_count(dir, "manifests"), raw_count(dir, "ckchunks"));

	sg_cache_t *c = open_ckpt(NULL, 1004);
	sg_cache_stats_t st;
	float v[DIM];
	CHECK(c != NULL);
	if (!c)
		return;
	sg_cache_stats(c, &st);
	CHECK(st.entries == 20 && st.index_vectors == 20 && st.unsaved_changes == 20);
	vec_i(v, 315);
	CHECK(find(c, "t", "q", v, 0.99f, 1004) == got[5]);
	vec_i(v, 5);
	CHECK(find(c, "t", "q", v, 0.99f, 1004) == 0);
	sg_cache_close(c);
}

/* An entry of namespace "f" without a vector, of ~1.1 KB. */
static int put_filler(sg_cache_t *c, int i, uint64_t *id)
{
	static char body[1000];
	sg_cache_key_t k;
	char p[32];
	int rc;

	memset(body, 'x', sizeof(body));
	snprintf(p, sizeof(p), "f%d", i);
	sg_cache_key_init(&k);
	key(&k, "f", p);
	rc = sg_cache_store(c, &k, NULL, "f", "m", (sg_iovec_t){body, sizeof(body)}, 3, 4, 1000, 0,
	                    id);
	sg_cache_key_free(&k);
	return rc;
}

/*
 * A save into a store's map at its maximum size stops before it takes the
 * room the loop's own writes need, and takes its chunks with it: the loop's
 * writes go on.
 * The next checkpoint is skipped while there is no room for it, and the full
 * store opens again.
 */
static void test_checkpoint_map_full(void)
{
	enum { D = 40 };
	gate_t g;
	gate_init(&g, SG_CACHE_CKPT_SERIALISED);
	sg_cache_opts_t o = {
		.path = dir, .embedder_id = "test", .dim = DIM, .index_type = SG_INDEX_FLAT,
		.auto_hnsw = 1, .hnsw_min_entries = 8, .ckpt_chunk_bytes = 4096,
		.map_size = 2 << 20, .max_map_size = 2 << 20,
		.ckpt_hook = gate_hook, .ckpt_hook_ud = &g,
	};
	sg_cache_stats_t st;
	sg_cache_t *c = NULL;
	uint64_t ids[300], *fill = NULL;
	size_t nfill = 0, deleted = 0;
	char err[512];
	int chunks, puts = 0;

	if (sg_cache_open(&c, &o, 1000, err, sizeof(err))) {
		CHECK_MSG(0, "open: %s", err);
		return;
	}
	CHECK(put_many(c, 0, 300, ids));
	CHECK(sg_cache_maintain(c, 1001, 1) == 0);
	CHECK(gate_wait(&g));
	/* while it serialised the loop filled the map, then made some room,
	 * less than the index needs */
	for (;; nfill++) {
		uint64_t *f = realloc(fill, (nfill + 1) * sizeof(*f));
		if (!f)
			break;
		fill = f;
		if (put_filler(c, (int)nfill, &fill[nfill]) != 0)
			break;
	}
	CHECK(nfill > D);
	for (int pass = 0; pass < 2; pass++) /* at a full map the first can fail */
		for (size_t i = nfill - D; nfill > D && i < nfill; i++)
			deleted += sg_cache_delete(c, fill[i]) == 0;
	CHECK(deleted == D);
	gate_open(&g);
	settle(c, 1002);
	sg_cache_stats(c, &st);
	chunks = g.chunks;
	/* the save stopped before the map's last room (any chunks it wrote are
	 * gone again: test_store checks that) */
	CHECK_MSG(st.unsaved_changes >= 300 && !st.checkpoint_in_progress, "%d chunks, %llu unsaved",
	          chunks, (unsigned long long)st.unsaved_changes);
	/* the room is the loop's again */
	for (int i = 0; i < D / 2; i++)
		puts += put_filler(c, 100000 + i, NULL) == 0;
	CHECK_MSG(puts == D / 2, "%d of %d stored after the failed save", puts, D / 2);
	/* no room for the next save: it is not tried */
	CHECK(sg_cache_maintain(c, 1003, 1) == 0);
	sg_cache_stats(c, &st);
	CHECK(!st.checkpoint_in_progress && g.chunks == chunks);
	CHECK(find_exact(c, "t", "a5", 1003) == ids[5]);
	sg_cache_close(c); /* its save fails too */
	free(fill);

	o.ckpt_hook = NULL; /* the same maximum size */
	c = NULL;
	if (sg_cache_open(&c, &o, 1004, err, sizeof(err))) {
		CHECK_MSG(0, "reopening the full store: %s", err);
		return;
	}
	sg_cache_stats(c, &st);
	CHECK(st.entries == 300 + nfill - D + D / 2 && st.index_vectors == 300);
	float v[DIM];
	vec_i(v, 11);
	CHECK(find(c, "t", "q", v, 0.99f, 1004) == ids[11]);
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
	settle(c, 1001);
	sg_cache_stats(c, &st);
	CHECK(st.unsaved_changes == 0 && st.hnsw_scopes == 1);
	for (int k = 0; k < 10; k++, n++) { /* 10 < 4210 / 64: not worth a save */
		snprintf(p, sizeof(p), "b%d", n);
		vec(v, n % DIM, (n / DIM) % DIM, 0.3f);
		CHECK(put(c, "t", p, v, 1000, 0, &id) == 0);
	}
	CHECK(sg_cache_maintain(c, 1002, 1) == 0);
	sg_cache_stats(c, &st);
	CHECK(st.unsaved_changes == 10 && !st.checkpoint_in_progress);
	for (int k = 0; k < 60; k++, n++) { /* 70 >= 4270 / 64: saved */
		snprintf(p, sizeof(p), "b%d", n);
		vec(v, n % DIM, (n / DIM) % DIM, 0.7f);
		CHECK(put(c, "t", p, v, 1000, 0, &id) == 0);
	}
	CHECK(sg_cache_maintain(c, 1003, 1) == 0);
	settle(c, 1003);
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

/* Issue 9, defect 3: the index is chosen by a 64-bit scope id; two scopes
 * whose ids collide (crafted, when the ids were an unkeyed hash) must never
 * answer each other, exactly or semantically, in either direction. */
static void test_scope_id_collision_never_crosses(void)
{
	sg_cache_t *c = open_cache(0, 0, 1000);
	sg_cache_key_t ka, kb;
	sg_cache_hit_t hit;
	float v[DIM], best;
	uint64_t ida = 0, idb = 0;
	static const sg_iovec_t ans_a = {"{\"choices\":[\"A\"]}", 18}, ans_b = {"{\"choices\":[\"B\"]}", 18};

	CHECK(c != NULL);
	if (!c)
		return;
	sg_cache_key_init(&ka);
	sg_cache_key_init(&kb);
	key(&ka, "tenant-a", "what is the refund policy");
	key(&kb, "tenant-b", "what is the refund policy");
	CHECK(ka.scope_hash != kb.scope_hash);
	kb.scope_hash = ka.scope_hash; /* the collision an attacker wanted */
	kb.exact_hash = ka.exact_hash;
	vec(v, 3, 4, 0.1f);
	CHECK_RC(sg_cache_store(c, &ka, v, "tenant-a", "m", ans_a, 1, 1, 1000, 0, &ida), 0);
	/* B reads nothing of A's */
	CHECK_RC(sg_cache_lookup_exact(c, &kb, 1000, &hit), SG_ENOTFOUND);
	CHECK_RC(sg_cache_lookup_semantic(c, &kb, v, 0.0f, 1000, &hit, &best), SG_ENOTFOUND);
	/* B plants an answer under the same ids: A is still served its own */
	CHECK_RC(sg_cache_store(c, &kb, v, "tenant-b", "m", ans_b, 1, 1, 1000, 0, &idb), 0);
	for (int i = 0; i < 2; i++) {
		int rc = i ? sg_cache_lookup_semantic(c, &ka, v, 0.0f, 1000, &hit, &best)
		           : sg_cache_lookup_exact(c, &ka, 1000, &hit);
		CHECK_RC(rc, 0);
		if (rc == 0) {
			CHECK(hit.entry.m.id == ida);
			sg_cache_hit_free(&hit);
		}
	}
	/* and with A's entry gone, A gets a miss, never B's */
	CHECK_RC(sg_cache_delete(c, ida), 0);
	CHECK_RC(sg_cache_lookup_exact(c, &ka, 1000, &hit), SG_ENOTFOUND);
	CHECK_RC(sg_cache_lookup_semantic(c, &ka, v, 0.0f, 1000, &hit, &best), SG_ENOTFOUND);
	int rc = sg_cache_lookup_semantic(c, &kb, v, 0.0f, 1000, &hit, &best);
	CHECK_RC(rc, 0); /* B finds its own */
	if (rc == 0) {
		CHECK(hit.entry.m.id == idb);
		sg_cache_hit_free(&hit);
	}
	sg_cache_key_free(&ka);
	sg_cache_key_free(&kb);
	sg_cache_close(c);
}

/* Issue 9, defect 3: ids are a keyed hash under a random secret per store;
 * a store of format 2 (ids without a secret) gets one at open and its
 * entries' ids are derived again, so that they are still found. */
static void test_store_secret_and_upgrade(void)
{
	sg_cache_t *c = open_cache(0, 0, 1000);
	sg_cache_key_t k;
	sg_cache_hit_t hit;
	float v[DIM], best;
	uint64_t id = 0;
	sg_hash_key_t first;

	CHECK(c != NULL);
	if (!c)
		return;
	first = *sg_cache_hash_key(c);
	CHECK(first.k0 != 0 || first.k1 != 0);
	sg_cache_key_init(&k);
	key_with(&k, "ns", "how do I reset my password", sg_cache_hash_key(c));
	uint64_t keyed_scope = k.scope_hash;
	vec(v, 5, 6, 0.1f);
	CHECK_RC(sg_cache_store(c, &k, v, "ns", "m", (sg_iovec_t){"{\"choices\":[1]}", 15}, 1, 1,
	                        1000, 0, &id), 0);
	sg_cache_close(c);

	/* Turn the file into a format-2 one: no secret, ids of the old kind. */
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi meta;
	uint32_t two = 2;
	CHECK(mdb_env_create(&env) == 0);
	mdb_env_set_maxdbs(env, 8);
	mdb_env_set_mapsize(env, 64u << 20);
	CHECK(mdb_env_open(env, dir, 0, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
	CHECK(mdb_dbi_open(txn, "meta", 0, &meta) == 0);
	MDB_val mk = {8, "hash_key"}, fk = {6, "format"}, fv = {4, &two};
	CHECK(mdb_del(txn, meta, &mk, NULL) == 0);
	CHECK(mdb_put(txn, meta, &fk, &fv, 0) == 0);
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);

	c = open_cache(0, 0, 1000);
	CHECK(c != NULL);
	if (!c) {
		sg_cache_key_free(&k);
		return;
	}
	const sg_hash_key_t *now = sg_cache_hash_key(c);
	CHECK(now->k0 != first.k0 || now->k1 != first.k1); /* a new secret */
	key_with(&k, "ns", "how do I reset my password", now);
	CHECK(k.scope_hash != keyed_scope);
	for (int i = 0; i < 2; i++) {
		int rc = i ? sg_cache_lookup_semantic(c, &k, v, 0.5f, 1000, &hit, &best)
		           : sg_cache_lookup_exact(c, &k, 1000, &hit);
		CHECK_RC(rc, 0);
		if (rc == 0) {
			CHECK(hit.entry.m.id == id);
			sg_cache_hit_free(&hit);
		}
	}
	sg_cache_close(c);
	/* the secret persists: a reopen keeps it */
	c = open_cache(0, 0, 1000);
	CHECK(c != NULL);
	if (c) {
		sg_hash_key_t again = *sg_cache_hash_key(c);
		key_with(&k, "ns", "how do I reset my password", &again);
		int rc = sg_cache_lookup_exact(c, &k, 1000, &hit);
		CHECK_RC(rc, 0);
		if (rc == 0)
			sg_cache_hit_free(&hit);
		sg_cache_close(c);
	}
	sg_cache_key_free(&k);
}

/* A full store: a reply too large to make room for evicts nothing (it used
 * to drain entries on every such miss); a small one evicts what it needs
 * from the LRU end, not more. */
static void test_full_store_eviction(void)
{
	sg_cache_opts_t o = {
		.path = dir, .embedder_id = "test", .dim = DIM, .index_type = SG_INDEX_FLAT,
		.map_size = 4 << 20, .max_map_size = 4 << 20,
	};
	sg_cache_t *c = NULL;
	sg_cache_stats_t st;
	char err[512];
	int n = 0;

	if (sg_cache_open(&c, &o, 1000, err, sizeof(err))) {
		CHECK_MSG(0, "open: %s", err);
		return;
	}
	while (n < 100000 && put_filler(c, n, NULL) == 0)
		n++;
	sg_cache_stats(c, &st);
	uint64_t before = st.entries, evicted = st.evicted;
	CHECK(before > 100);
	size_t big_len = 3 << 20;
	char *big = malloc(big_len);
	sg_cache_key_t k;
	sg_cache_key_init(&k);
	key(&k, "f", "big one");
	if (big) {
		memset(big, 'y', big_len);
		CHECK_RC(sg_cache_store(c, &k, NULL, "f", "m", (sg_iovec_t){big, big_len}, 1, 1, 1000,
		                        0, NULL), SG_EFULL);
		free(big);
	}
	sg_cache_key_free(&k);
	sg_cache_stats(c, &st);
	CHECK(st.entries == before && st.evicted == evicted);
	CHECK(st.store_full == 1 && st.store_failures >= 1);
	int rc = put_filler(c, n + 1, NULL);
	sg_cache_stats(c, &st);
	if (rc == 0) {
		CHECK(st.store_full == 0);
		CHECK(st.evicted - evicted <= 256);
	}
	sg_cache_close(c);
}

/* Run fn on the store's meta database in a write transaction (raw LMDB). */
static int meta_edit(int (*fn)(MDB_txn *txn, MDB_dbi meta))
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi meta;
	int rc;
	if ((rc = mdb_env_create(&env)))
		return rc;
	mdb_env_set_maxdbs(env, 8);
	mdb_env_set_mapsize(env, 256u << 20);
	if (!(rc = mdb_env_open(env, dir, 0, 0600)) && !(rc = mdb_txn_begin(env, NULL, 0, &txn))) {
		if ((rc = mdb_dbi_open(txn, "meta", 0, &meta)) || (rc = fn(txn, meta)))
			mdb_txn_abort(txn);
		else
			rc = mdb_txn_commit(txn);
	}
	mdb_env_close(env);
	return rc;
}

static int to_format2(MDB_txn *txn, MDB_dbi meta)
{
	uint32_t two = 2;
	MDB_val mk = {8, "hash_key"}, fk = {6, "format"}, fv = {4, &two};
	int rc = mdb_del(txn, meta, &mk, NULL);
	return rc ? rc : mdb_put(txn, meta, &fk, &fv, 0);
}

/* What a crash right after the upgrade's first transaction leaves: a new
 * secret and the marker, the entries' ids still of the old secret. */
static int crashed_upgrade(MDB_txn *txn, MDB_dbi meta)
{
	uint8_t key[16] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6}, one = 1;
	MDB_val mk = {8, "hash_key"}, mv = {16, key}, rk = {6, "rehash"}, rv = {1, &one};
	int rc = mdb_put(txn, meta, &mk, &mv, 0);
	return rc ? rc : mdb_put(txn, meta, &rk, &rv, 0);
}

/* Every stored prompt q0..q(n-1) is found, exactly and semantically, under
 * the cache's secret. */
static int all_found(sg_cache_t *c, int n)
{
	sg_cache_key_t k;
	sg_cache_hit_t hit;
	float v[DIM], best;
	int missing = 0;
	char prompt[32];
	sg_cache_key_init(&k);
	for (int i = 0; i < n; i++) {
		snprintf(prompt, sizeof(prompt), "q%d", i);
		key_with(&k, "ns", prompt, sg_cache_hash_key(c));
		if (sg_cache_lookup_exact(c, &k, 1000, &hit) == 0)
			sg_cache_hit_free(&hit);
		else
			missing++;
		if (i % 250 == 0) {
			vec(v, i, i + 1, 0.3f);
			if (sg_cache_lookup_semantic(c, &k, v, 0.99f, 1000, &hit, &best) == 0)
				sg_cache_hit_free(&hit);
			else
				missing++;
		}
	}
	sg_cache_key_free(&k);
	return missing;
}

/* The upgrade of a store of several batches (1,024 entries each), and its
 * resumption after a crash in the middle. */
static void test_upgrade_many_and_resume(void)
{
	enum { N = 2500 };
	sg_cache_t *c = open_cache(0, 0, 1000);
	float v[DIM];
	char prompt[32];
	int ok = 1;
	CHECK(c != NULL);
	if (!c)
		return;
	for (int i = 0; i < N; i++) {
		snprintf(prompt, sizeof(prompt), "q%d", i);
		vec(v, i, i + 1, 0.3f);
		ok &= put(c, "ns", prompt, v, 1000, 0, NULL) == 0;
	}
	CHECK(ok);
	sg_cache_close(c);
	CHECK(meta_edit(to_format2) == 0);
	c = open_cache(0, 0, 1000);
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK_MSG(all_found(c, N) == 0, "%d lookups missed after the upgrade", all_found(c, N));
	sg_cache_close(c);
	CHECK(meta_edit(crashed_upgrade) == 0);
	c = open_cache(0, 0, 1000);
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK_MSG(all_found(c, N) == 0, "%d lookups missed after a resumed upgrade",
	          all_found(c, N));
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
	test_scope_id_collision_never_crosses();
	if (system(cmd) != 0)
		return 1;
	test_store_secret_and_upgrade();
	if (system(cmd) != 0)
		return 1;
	test_upgrade_many_and_resume();
	if (system(cmd) != 0)
		return 1;
	test_full_store_eviction();
	if (system(cmd) != 0)
		return 1;
	test_threshold_and_exact();
	if (system(cmd) != 0)
		return 1;
	test_verifier_structure_only();
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
	test_checkpoint_off_loop();
	if (system(cmd) != 0)
		return 1;
	test_checkpoint_reload();
	if (system(cmd) != 0)
		return 1;
	test_checkpoint_crash_mid_save();
	if (system(cmd) != 0)
		return 1;
	test_checkpoint_map_full();
	if (system(cmd) != 0)
		return 1;
	test_checkpoint_cleared();
	if (system(cmd) != 0)
		return 1;
	test_checkpoint_held_add_fails();
	if (system(cmd) != 0)
		return 1;
	CHECK_DONE();
}
