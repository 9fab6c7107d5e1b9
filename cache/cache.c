/* The semantic cache engine: store + per-scope indexes + LRU + expiry. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "semgate/cache.h"
#include "semgate/verify.h"
#include "u64map.h"


/* An entry as the LRU and expiry logic see it. */
typedef struct node {
	uint64_t id;          /* entry id */
	uint64_t scope_hash;  /* its scope */
	uint64_t bytes;       /* stored bytes (record + vector) */
	int64_t expires_s;    /* 0: never */
	int64_t last_use_s;   /* creation or last hit */
	uint32_t hits_unsaved; /* hits not yet written to the store */
	struct node *prev;    /* toward most recently used */
	struct node *next;    /* toward least recently used */
} node_t;

/* One hard scope: its index and checkpoint state. */
typedef struct scope {
	sg_index_t *ix;        /* vectors of the scope's live entries */
	uint64_t max_id;       /* highest id added */
	uint64_t ckpt_id;      /* highest id in the stored checkpoint (0: none) */
	size_t dirty;          /* changes since the checkpoint */
} scope_t;

/*
 * Two locks. `lock` guards everything; the loop thread holds it for every
 * call but sg_cache_search(). `ixlock` guards the scope map and the indexes:
 * searches run on worker threads under its read side, and every change to an
 * index takes its write side (always inside `lock`).
 */
struct sg_cache {
	pthread_mutex_t lock;   /* everything below */
	pthread_rwlock_t ixlock; /* scopes and their indexes */
	sg_store_t *store;      /* LMDB */
	sg_verify_t *verifier;  /* second look at semantic candidates, or NULL */
	sg_cache_opts_t o;      /* options (strings borrowed from the config) */
	sg_u64map_t nodes;      /* id -> node_t */
	sg_u64map_t scopes;     /* scope hash -> scope_t */
	node_t *head, *tail;    /* LRU list, most recent first */
	uint64_t nentries;      /* live entries */
	uint64_t nbytes;        /* their bytes */
	uint64_t evicted;       /* since start */
	uint64_t expired;       /* since start */
	uint64_t *touched;      /* ids with hits_unsaved, since the last flush */
	size_t ntouched, cap_touched; /* used, allocated */
	size_t sweep_cursor;    /* next nodes slot the expiry sweep looks at */
};

#define SWEEP_SLOTS 16384 /* node slots the expiry sweep visits per tick */

/* --- LRU list ------------------------------------------------------------------ */

static void lru_unlink(sg_cache_t *c, node_t *n)
{
	if (n->prev)
		n->prev->next = n->next;
	else
		c->head = n->next;
	if (n->next)
		n->next->prev = n->prev;
	else
		c->tail = n->prev;
	n->prev = n->next = NULL;
}

static void lru_push_front(sg_cache_t *c, node_t *n)
{
	n->prev = NULL;
	n->next = c->head;
	if (c->head)
		c->head->prev = n;
	c->head = n;
	if (c->tail == NULL)
		c->tail = n;
}

/* --- index changes (under ixlock's write side) ----------------------------------- */

static void ix_remove(sg_cache_t *c, sg_index_t *ix, int64_t id)
{
	pthread_rwlock_wrlock(&c->ixlock);
	sg_index_remove(ix, id);
	pthread_rwlock_unlock(&c->ixlock);
}

static int ix_add(sg_cache_t *c, sg_index_t *ix, int64_t id, const float *vec)
{
	pthread_rwlock_wrlock(&c->ixlock);
	int rc = sg_index_add(ix, id, vec);
	pthread_rwlock_unlock(&c->ixlock);
	return rc;
}

/* --- scopes ---------------------------------------------------------------------- */

static scope_t *scope_get(sg_cache_t *c, uint64_t hash, int create)
{
	scope_t *s = sg__u64map_get(&c->scopes, hash);
	if (s || !create)
		return s;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	if (sg_index_new(&s->ix, c->o.dim, c->o.auto_hnsw ? SG_INDEX_FLAT : c->o.index_type,
	                 &c->o.index_opts) != 0) {
		free(s);
		return NULL;
	}
	pthread_rwlock_wrlock(&c->ixlock);
	int rc = sg__u64map_put(&c->scopes, hash, s);
	pthread_rwlock_unlock(&c->ixlock);
	if (rc != 0) {
		sg_index_free(s->ix);
		free(s);
		return NULL;
	}
	return s;
}

/* Forget an entry everywhere: store, index, LRU. */
static int drop_entry(sg_cache_t *c, node_t *n)
{
	int rc = sg_store_delete(c->store, n->id);
	if (rc && rc != SG_ENOTFOUND)
		return rc;
	scope_t *s = scope_get(c, n->scope_hash, 0);
	if (s) {
		ix_remove(c, s->ix, (int64_t)n->id);
		s->dirty++;
	}
	sg__u64map_del(&c->nodes, n->id);
	lru_unlink(c, n);
	c->nentries--;
	c->nbytes -= n->bytes;
	free(n);
	return 0;
}

/*
 * In auto mode a scope starts with an exact (flat) index and moves to HNSW
 * once it holds hnsw_min_entries: a flat search reads every vector, which
 * stops being cheap at about that size. The vectors come from the store.
 */
static int scope_upgrade(sg_cache_t *c, uint64_t hash, scope_t *s)
{
	size_t n = sg_index_count(s->ix), k = 0;
	int64_t *ids = malloc(n * sizeof(*ids));
	float *vecs = malloc(n * (size_t)c->o.dim * sizeof(float));
	sg_index_t *ix = NULL;
	int rc = SG_ENOMEM;

	if (ids == NULL || vecs == NULL)
		goto out;
	for (size_t i = 0; i < c->nodes.cap && k < n; i++) {
		node_t *node = c->nodes.vals[i];
		if (node == NULL || node->scope_hash != hash)
			continue;
		if (sg_store_get_vector(c->store, node->id, vecs + k * (size_t)c->o.dim) == 0)
			ids[k++] = (int64_t)node->id;
	}
	rc = sg_index_new(&ix, c->o.dim, SG_INDEX_HNSW, &c->o.index_opts);
	if (rc == 0)
		rc = sg_index_add_batch(ix, k, ids, vecs);
	if (rc == 0) {
		pthread_rwlock_wrlock(&c->ixlock);
		sg_index_t *old = s->ix;
		s->ix = ix;
		pthread_rwlock_unlock(&c->ixlock);
		ix = old; /* freed below */
		s->dirty++;
	}
out:
	sg_index_free(ix);
	free(ids);
	free(vecs);
	return rc;
}

static void maybe_upgrade(sg_cache_t *c, uint64_t hash, scope_t *s)
{
	if (c->o.auto_hnsw && sg_index_kind(s->ix) == SG_INDEX_FLAT &&
	    sg_index_count(s->ix) >= c->o.hnsw_min_entries)
		scope_upgrade(c, hash, s); /* on failure the flat index goes on serving */
}

static node_t *node_add(sg_cache_t *c, uint64_t id, uint64_t scope_hash, uint64_t bytes,
                        int64_t expires_s, int64_t last_use_s)
{
	node_t *n = calloc(1, sizeof(*n));
	if (n == NULL)
		return NULL;
	n->id = id;
	n->scope_hash = scope_hash;
	n->bytes = bytes;
	n->expires_s = expires_s;
	n->last_use_s = last_use_s;
	if (sg__u64map_put(&c->nodes, id, n) != 0) {
		free(n);
		return NULL;
	}
	c->nentries++;
	c->nbytes += bytes;
	return n;
}

static uint64_t entry_bytes(const sg_cache_t *c, const sg_entry_meta_t *m)
{
	return m->ns.len + m->model.len + m->scope_json.len + m->prompt.len + m->response.len +
	       64 + (uint64_t)c->o.dim * sizeof(float);
}

/* --- opening ---------------------------------------------------------------------- */

/* Vectors of one scope waiting to be added in one batch at start-up. */
typedef struct pending {
	int64_t *ids;      /* entry ids */
	float *vecs;       /* their vectors, back to back */
	size_t n, cap;     /* used, allocated */
} pending_t;

typedef struct load_ctx {
	sg_cache_t *c;     /* the cache */
	sg_u64map_t pending; /* scope hash -> pending_t */
	int64_t now_s;     /* for expiry */
	uint64_t *expired; /* ids to delete after the scan */
	size_t nexpired, cap_expired;
	node_t **order;    /* nodes, to sort into LRU order */
	size_t norder, cap_order;
	int err;           /* first error */
} load_ctx_t;

static int load_checkpoint(void *ud, uint64_t scope_hash, uint64_t last_id, const void *blob,
                           size_t len)
{
	load_ctx_t *lc = ud;
	scope_t *s = scope_get(lc->c, scope_hash, 1);
	sg_index_type_t type;
	if (s == NULL)
		return lc->err = SG_ENOMEM;
	/* In auto mode a scope's checkpoint may be flat or HNSW. */
	if (sg_index_blob_type(blob, len, &type) == 0 && type != sg_index_kind(s->ix)) {
		sg_index_t *ix;
		if (sg_index_new(&ix, lc->c->o.dim, type, &lc->c->o.index_opts) == 0) {
			sg_index_free(s->ix);
			s->ix = ix;
		}
	}
	if (sg_index_load(s->ix, blob, len) != 0) {
		/* A bad checkpoint costs only time: the scope is rebuilt from vectors. */
		sg_index_free(s->ix);
		if (sg_index_new(&s->ix, lc->c->o.dim, lc->c->o.index_type, &lc->c->o.index_opts))
			return lc->err = SG_ENOMEM;
		return 0;
	}
	s->ckpt_id = s->max_id = last_id;
	return 0;
}

static int push(void **arr, size_t *n, size_t *cap, size_t size, const void *item)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 1024;
		void *p = realloc(*arr, nc * size);
		if (p == NULL)
			return SG_ENOMEM;
		*arr = p;
		*cap = nc;
	}
	memcpy((char *)*arr + *n * size, item, size);
	(*n)++;
	return 0;
}

/*
 * Times are whole seconds, so "created + TTL" names a second, not an
 * instant: an entry is served through the end of that second and gone after,
 * so it lives at least its TTL (at most one second more), never less. (Gone
 * at the second's start, an entry with TTL 1 written at x.999 would live a
 * millisecond.) expires_s 0: never.
 */
static int expired(int64_t expires_s, int64_t now_s)
{
	return expires_s != 0 && now_s > expires_s;
}

static int load_entry(void *ud, const sg_entry_meta_t *m, const float *vec)
{
	load_ctx_t *lc = ud;
	sg_cache_t *c = lc->c;

	if (expired(m->expires_s, lc->now_s)) {
		if (push((void **)&lc->expired, &lc->nexpired, &lc->cap_expired, sizeof(uint64_t), &m->id))
			return lc->err = SG_ENOMEM;
		return 0;
	}
	scope_t *s = scope_get(c, m->scope_hash, 1);
	int64_t used = m->last_hit_s > m->created_s ? m->last_hit_s : m->created_s;
	node_t *n = node_add(c, m->id, m->scope_hash, entry_bytes(c, m), m->expires_s, used);
	if (s == NULL || n == NULL)
		return lc->err = SG_ENOMEM;
	if (push((void **)&lc->order, &lc->norder, &lc->cap_order, sizeof(node_t *), &n))
		return lc->err = SG_ENOMEM;
	if (vec && m->id > s->ckpt_id) {
		pending_t *p = sg__u64map_get(&lc->pending, m->scope_hash);
		size_t dim = (size_t)c->o.dim;
		if (p == NULL) {
			p = calloc(1, sizeof(*p));
			if (p == NULL || sg__u64map_put(&lc->pending, m->scope_hash, p) != 0) {
				free(p);
				return lc->err = SG_ENOMEM;
			}
		}
		if (p->n == p->cap) {
			size_t cap = p->cap ? p->cap * 2 : 64;
			int64_t *ids = realloc(p->ids, cap * sizeof(*ids));
			if (ids)
				p->ids = ids;
			float *vecs = ids ? realloc(p->vecs, cap * dim * sizeof(float)) : NULL;
			if (vecs == NULL)
				return lc->err = SG_ENOMEM;
			p->vecs = vecs;
			p->cap = cap;
		}
		p->ids[p->n] = (int64_t)m->id;
		memcpy(p->vecs + p->n * dim, vec, dim * sizeof(float));
		p->n++;
		s->dirty++;
	}
	if (m->id > s->max_id)
		s->max_id = m->id;
	return 0;
}

static int by_last_use_desc(const void *a, const void *b)
{
	const node_t *x = *(node_t *const *)a, *y = *(node_t *const *)b;
	if (x->last_use_s != y->last_use_s)
		return x->last_use_s > y->last_use_s ? -1 : 1;
	return x->id > y->id ? -1 : x->id < y->id;
}

int sg_cache_open(sg_cache_t **out, const sg_cache_opts_t *o, int64_t now_s, char *err,
                  size_t errlen)
{
	sg_store_opts_t so = {o->map_size, o->max_map_size, o->embedder_id, (uint32_t)o->dim,
	                      o->rebuild, o->verify};
	load_ctx_t lc = {0};
	sg_cache_t *c;
	size_t skipped = 0;
	int rc;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return SG_ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	pthread_rwlock_init(&c->ixlock, NULL);
	c->o = *o;
	sg__u64map_init(&c->nodes);
	sg__u64map_init(&c->scopes);
	rc = sg_store_open(&c->store, o->path, &so, err, errlen);
	if (rc)
		goto fail;
	if (o->verify_hits && (rc = sg_verify_new(&c->verifier, NULL)) != 0) {
		snprintf(err, errlen, "cache: verifier: %s", sg_strerror(rc));
		goto fail;
	}

	lc.c = c;
	lc.now_s = now_s;
	sg__u64map_init(&lc.pending);
	rc = sg_store_iter_checkpoints(c->store, load_checkpoint, &lc, &skipped);
	if (rc == 0)
		rc = lc.err;
	if (rc == 0)
		rc = sg_store_iter(c->store, 0, 0, load_entry, &lc, &skipped);
	if (rc == 0)
		rc = lc.err;
	/* Index what the checkpoints lack, a scope at a time (HNSW adds in
	 * parallel when given a batch). */
	for (size_t i = 0; i < lc.pending.cap; i++) {
		pending_t *p = lc.pending.vals[i];
		if (p == NULL)
			continue;
		scope_t *sc = scope_get(c, lc.pending.keys[i], 0);
		if (rc == 0 && sc) {
			if (c->o.auto_hnsw && sg_index_kind(sc->ix) == SG_INDEX_FLAT &&
			    sg_index_count(sc->ix) == 0 && p->n >= c->o.hnsw_min_entries) {
				sg_index_free(sc->ix);
				sc->ix = NULL;
				rc = sg_index_new(&sc->ix, c->o.dim, SG_INDEX_HNSW, &c->o.index_opts);
			}
			if (rc == 0)
				rc = sg_index_add_batch(sc->ix, p->n, p->ids, p->vecs);
			if (rc == 0)
				maybe_upgrade(c, lc.pending.keys[i], sc);
		}
		free(p->ids);
		free(p->vecs);
		free(p);
	}
	sg__u64map_free(&lc.pending);
	if (rc) {
		snprintf(err, errlen, "cache at %s: loading entries failed: %s", o->path,
		         sg_strerror(rc));
		goto fail;
	}
	if (lc.norder > 1)
		qsort(lc.order, lc.norder, sizeof(node_t *), by_last_use_desc);
	for (size_t i = lc.norder; i-- > 0;)
		lru_push_front(c, lc.order[i]);
	for (size_t i = 0; i < lc.nexpired; i++) {
		if (sg_store_delete(c->store, lc.expired[i]) == 0)
			c->expired++;
	}
	/* Entries deleted after a checkpoint may still be in its index: they are
	 * dropped from the index on first sight (see search_scope). */
	free(lc.order);
	free(lc.expired);
	*out = c;
	return 0;
fail:
	free(lc.order);
	free(lc.expired);
	sg_cache_close(c);
	return rc;
}

/*
 * Saving an index costs the loop its serialisation and one large LMDB write:
 * ~0.5 s for an HNSW index of 100,000 entries, ~8 s for 1,000,000. So a big
 * index is saved on a checkpoint tick only once its unsaved changes are a
 * fair share of it (1/64); what came after the checkpoint is recovered at
 * start from the stored vectors, without embedding, which bounds that
 * recovery to ~1.6% of the index. Small indexes are saved whenever changed.
 */
#define CKPT_SMALL 4096

static int checkpoint_due(const scope_t *s, int force)
{
	size_t n = sg_index_count(s->ix);
	return s->dirty && (force || n < CKPT_SMALL || s->dirty >= n / 64);
}

/* Save changed indexes (force: all of them, as at close). */
static int checkpoint_scopes(sg_cache_t *c, int force)
{
	sg_buf_t blob;
	int rc = 0;

	sg_buf_init(&blob, 0);
	for (size_t i = 0; i < c->scopes.cap; i++) {
		scope_t *s = c->scopes.vals[i];
		if (s == NULL || !checkpoint_due(s, force))
			continue;
		if (sg_index_count(s->ix) == 0) {
			sg_store_delete_checkpoint(c->store, c->scopes.keys[i]);
			s->dirty = 0;
			continue;
		}
		sg_buf_reset(&blob);
		rc = sg_index_serialize(s->ix, &blob);
		if (rc == 0)
			rc = sg_store_put_checkpoint(c->store, c->scopes.keys[i], s->max_id, blob.data,
			                             blob.len);
		if (rc)
			break;
		s->ckpt_id = s->max_id;
		s->dirty = 0;
	}
	sg_buf_free(&blob);
	return rc;
}

/* Hit counts reach the store in one transaction per maintenance tick. */
static void flush_hits(sg_cache_t *c)
{
	sg_store_touch_t *items;
	size_t n = 0;

	if (c->ntouched == 0)
		return;
	items = malloc(c->ntouched * sizeof(*items));
	if (items == NULL)
		return; /* counts stay in memory for the next tick */
	for (size_t i = 0; i < c->ntouched; i++) {
		node_t *node = sg__u64map_get(&c->nodes, c->touched[i]);
		if (node == NULL || node->hits_unsaved == 0)
			continue;
		items[n++] = (sg_store_touch_t){node->id, node->hits_unsaved, node->last_use_s};
		node->hits_unsaved = 0;
	}
	sg_store_touch_batch(c->store, items, n);
	free(items);
	c->ntouched = 0;
}

void sg_cache_close(sg_cache_t *c)
{
	if (c == NULL)
		return;
	if (c->store) {
		flush_hits(c);
		checkpoint_scopes(c, 1);
		sg_store_sync(c->store);
		sg_store_close(c->store);
	}
	for (size_t i = 0; i < c->nodes.cap; i++)
		free(c->nodes.vals[i]);
	for (size_t i = 0; i < c->scopes.cap; i++) {
		scope_t *s = c->scopes.vals[i];
		if (s) {
			sg_index_free(s->ix);
			free(s);
		}
	}
	sg__u64map_free(&c->nodes);
	sg__u64map_free(&c->scopes);
	free(c->touched);
	sg_verify_free(c->verifier);
	pthread_rwlock_destroy(&c->ixlock);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* --- lookups ----------------------------------------------------------------------- */

static void record_hit(sg_cache_t *c, node_t *n, int64_t now_s)
{
	n->last_use_s = now_s;
	if (n->hits_unsaved++ == 0 &&
	    push((void **)&c->touched, &c->ntouched, &c->cap_touched, sizeof(uint64_t), &n->id) != 0)
		n->hits_unsaved = 0; /* out of memory: this hit is not counted on disk */
	lru_unlink(c, n);
	lru_push_front(c, n);
}

static int same(sg_iovec_t a, const sg_buf_t *b)
{
	return a.len == b->len && memcmp(a.base, b->data, a.len) == 0;
}

int sg_cache_lookup_exact(sg_cache_t *c, const sg_cache_key_t *k, int64_t now_s,
                          sg_cache_hit_t *hit)
{
	uint64_t ids[8];
	size_t n = 0;
	int rc;

	pthread_mutex_lock(&c->lock);
	rc = sg_store_find_exact(c->store, k->exact_hash, ids, SG_ARRAY_SIZE(ids), &n);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		node_t *node = sg__u64map_get(&c->nodes, ids[i]);
		if (node == NULL)
			continue;
		if (expired(node->expires_s, now_s)) {
			if (drop_entry(c, node) == 0)
				c->expired++;
			continue;
		}
		if (sg_store_get(c->store, ids[i], &hit->entry) != 0)
			continue;
		if (same(hit->entry.m.scope_json, &k->scope) && same(hit->entry.m.prompt, &k->prompt)) {
			hit->similarity = 1.0f;
			record_hit(c, node, now_s);
			pthread_mutex_unlock(&c->lock);
			return 0;
		}
		sg_entry_free(&hit->entry);
	}
	pthread_mutex_unlock(&c->lock);
	return rc ? rc : SG_ENOTFOUND;
}

int sg_cache_search(sg_cache_t *c, uint64_t scope_hash, const float *vec,
                    sg_cache_candidates_t *out)
{
	int rc = 0;

	out->n = 0;
	pthread_rwlock_rdlock(&c->ixlock);
	scope_t *s = sg__u64map_get(&c->scopes, scope_hash);
	if (s && sg_index_count(s->ix) > 0 &&
	    sg_index_search(s->ix, vec, SG_CACHE_CANDIDATES, out->ids, out->scores, &out->n) != 0)
		rc = SG_EINDEX;
	pthread_rwlock_unlock(&c->ixlock);
	return rc;
}

int sg_cache_resolve(sg_cache_t *c, const sg_cache_key_t *k, const sg_cache_candidates_t *cand,
                     float threshold, int64_t now_s, sg_cache_hit_t *hit, float *best)
{
	int rc = SG_ENOTFOUND;

	*best = cand->n > 0 ? cand->scores[0] : -1.0f;
	pthread_mutex_lock(&c->lock);
	scope_t *s = scope_get(c, k->scope_hash, 0);
	for (int i = 0; s && i < cand->n; i++) {
		if (cand->scores[i] < threshold)
			break;
		node_t *node = sg__u64map_get(&c->nodes, (uint64_t)cand->ids[i]);
		if (node == NULL) {
			/* deleted after the checkpoint this index came from, or meanwhile */
			ix_remove(c, s->ix, cand->ids[i]);
			s->dirty++;
			continue;
		}
		if (expired(node->expires_s, now_s)) {
			if (drop_entry(c, node) == 0)
				c->expired++;
			continue;
		}
		if (sg_store_get(c->store, node->id, &hit->entry) != 0)
			continue;
		hit->similarity = cand->scores[i];
		if (c->verifier) {
			/* The texts themselves: numbers, negations, question kinds and rare
			 * words the vectors blur can only lower the score. */
			hit->similarity = sg_verify_score(c->verifier, k->prompt.data, k->prompt.len,
			                                  hit->entry.m.prompt.base,
			                                  hit->entry.m.prompt.len, cand->scores[i]);
			if (hit->similarity < threshold) {
				sg_entry_free(&hit->entry);
				continue;
			}
		}
		record_hit(c, node, now_s);
		rc = 0;
		break;
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int sg_cache_lookup_semantic(sg_cache_t *c, const sg_cache_key_t *k, const float *vec,
                             float threshold, int64_t now_s, sg_cache_hit_t *hit, float *best)
{
	sg_cache_candidates_t cand;

	*best = -1.0f;
	if (sg_cache_search(c, k->scope_hash, vec, &cand) != 0)
		return SG_EINDEX;
	return sg_cache_resolve(c, k, &cand, threshold, now_s, hit, best);
}

void sg_cache_hit_free(sg_cache_hit_t *h)
{
	sg_entry_free(&h->entry);
}

/* --- writes ------------------------------------------------------------------------- */

/* Remove the entries stored under exactly k (same scope, same prompt). */
static void drop_exact(sg_cache_t *c, const sg_cache_key_t *k)
{
	uint64_t ids[8];
	size_t n = 0;
	sg_entry_t e;

	if (sg_store_find_exact(c->store, k->exact_hash, ids, SG_ARRAY_SIZE(ids), &n) != 0)
		return;
	for (size_t i = 0; i < n; i++) {
		node_t *node = sg__u64map_get(&c->nodes, ids[i]);
		if (node == NULL || sg_store_get(c->store, ids[i], &e) != 0)
			continue;
		int dup = same(e.m.scope_json, &k->scope) && same(e.m.prompt, &k->prompt);
		sg_entry_free(&e);
		if (dup)
			drop_entry(c, node);
	}
}

static void evict(sg_cache_t *c)
{
	while (c->tail && ((c->o.max_entries && c->nentries > c->o.max_entries) ||
	                   (c->o.max_bytes && c->nbytes > c->o.max_bytes))) {
		if (drop_entry(c, c->tail) != 0)
			break;
		c->evicted++;
	}
}

int sg_cache_store(sg_cache_t *c, const sg_cache_key_t *k, const float *vec, const char *ns,
                   const char *model, sg_iovec_t response, uint32_t prompt_tokens,
                   uint32_t completion_tokens, int64_t now_s, int64_t ttl_s, uint64_t *id_out)
{
	sg_entry_in_t in = {
		.ns = {ns, strlen(ns)},
		.model = {model, strlen(model)},
		.scope_json = {k->scope.data, k->scope.len},
		.prompt = {k->prompt.data, k->prompt.len},
		.response = response,
		.scope_hash = k->scope_hash,
		.exact_hash = k->exact_hash,
		.created_s = now_s,
		.expires_s = ttl_s > 0 ? now_s + ttl_s : 0,
		.prompt_tokens = prompt_tokens,
		.completion_tokens = completion_tokens,
	};
	sg_entry_meta_t m = {0};
	uint64_t id;
	int rc;

	pthread_mutex_lock(&c->lock);
	scope_t *s = scope_get(c, k->scope_hash, 1);
	if (s == NULL) {
		rc = SG_ENOMEM;
		goto out;
	}
	drop_exact(c, k); /* a refresh (or a concurrent miss) replaces the old answer */
	rc = sg_store_put(c->store, &in, vec, &id);
	if (rc)
		goto out;
	m.ns = in.ns;
	m.model = in.model;
	m.scope_json = in.scope_json;
	m.prompt = in.prompt;
	m.response = in.response;
	node_t *n = node_add(c, id, k->scope_hash, entry_bytes(c, &m), in.expires_s, now_s);
	if (n == NULL || (vec && ix_add(c, s->ix, (int64_t)id, vec) != 0)) {
		if (n) {
			sg__u64map_del(&c->nodes, id);
			c->nentries--;
			c->nbytes -= n->bytes;
			free(n);
		}
		sg_store_delete(c->store, id);
		rc = SG_EINDEX;
		goto out;
	}
	lru_push_front(c, n);
	s->dirty++;
	if (id > s->max_id)
		s->max_id = id;
	if (vec)
		maybe_upgrade(c, k->scope_hash, s);
	if (id_out)
		*id_out = id;
	evict(c);
out:
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int sg_cache_delete(sg_cache_t *c, uint64_t id)
{
	int rc;
	pthread_mutex_lock(&c->lock);
	node_t *n = sg__u64map_get(&c->nodes, id);
	rc = n ? drop_entry(c, n) : SG_ENOTFOUND;
	pthread_mutex_unlock(&c->lock);
	return rc;
}

static void cleared(void *ud, uint64_t id, uint64_t scope_hash)
{
	sg_cache_t *c = ud;
	node_t *n = sg__u64map_del(&c->nodes, id);
	scope_t *s = scope_get(c, scope_hash, 0);
	if (s) {
		ix_remove(c, s->ix, (int64_t)id);
		s->dirty++;
	}
	if (n) {
		lru_unlink(c, n);
		c->nentries--;
		c->nbytes -= n->bytes;
		free(n);
	}
}

int sg_cache_clear(sg_cache_t *c, const char *ns, size_t *n)
{
	int rc;
	pthread_mutex_lock(&c->lock);
	rc = sg_store_delete_where(c->store, ns, cleared, c, n);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int sg_cache_maintain(sg_cache_t *c, int64_t now_s, int checkpoint)
{
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	/* Expiry sweep, a slice per tick so that a large cache never stalls the
	 * loop; expired entries are never served meanwhile (lookups check). A
	 * removal shifts later slots back, so the same slot is looked at again. */
	for (size_t seen = 0; seen < SWEEP_SLOTS && c->nodes.cap; seen++) {
		size_t i = c->sweep_cursor % c->nodes.cap;
		node_t *n = c->nodes.vals[i];
		if (n && expired(n->expires_s, now_s) && drop_entry(c, n) == 0) {
			c->expired++;
			continue;
		}
		c->sweep_cursor = i + 1;
	}
	flush_hits(c);
	if (checkpoint)
		rc = checkpoint_scopes(c, 0);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

void sg_cache_flush_hits(sg_cache_t *c)
{
	pthread_mutex_lock(&c->lock);
	flush_hits(c);
	pthread_mutex_unlock(&c->lock);
}

int sg_cache_sync(sg_cache_t *c)
{
	return sg_store_sync(c->store);
}

void sg_cache_stats(sg_cache_t *c, sg_cache_stats_t *out)
{
	sg_store_stats_t ss = {0};

	pthread_mutex_lock(&c->lock);
	memset(out, 0, sizeof(*out));
	out->entries = c->nentries;
	out->bytes = c->nbytes;
	out->scopes = c->scopes.n;
	for (size_t i = 0; i < c->scopes.cap; i++) {
		scope_t *s = c->scopes.vals[i];
		if (s)
			out->index_vectors += sg_index_count(s->ix);
	}
	out->evicted = c->evicted;
	out->expired = c->expired;
	if (sg_store_stats(c->store, &ss) == 0)
		out->file_bytes = ss.file_bytes;
	out->index_type = c->o.auto_hnsw ? "auto" : c->o.index_type == SG_INDEX_HNSW ? "hnsw" : "flat";
	for (size_t i = 0; i < c->scopes.cap; i++) {
		scope_t *s = c->scopes.vals[i];
		if (s && sg_index_kind(s->ix) == SG_INDEX_HNSW)
			out->hnsw_scopes++;
		if (s)
			out->unsaved_changes += s->dirty;
	}
	pthread_mutex_unlock(&c->lock);
}

int sg_cache_list(sg_cache_t *c, uint64_t after_id, size_t limit, sg_store_iter_cb cb, void *ud)
{
	size_t skipped;
	int rc;
	pthread_mutex_lock(&c->lock);
	rc = sg_store_iter(c->store, after_id, limit, cb, ud, &skipped);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int sg_cache_get(sg_cache_t *c, uint64_t id, sg_entry_t *out)
{
	int rc;
	pthread_mutex_lock(&c->lock);
	rc = sg_store_get(c->store, id, out);
	pthread_mutex_unlock(&c->lock);
	return rc;
}
