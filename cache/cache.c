/* The semantic cache engine: store + per-scope indexes + LRU + expiry, and
 * the saver thread that checkpoints indexes off the event loop. */
#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fsm.h"
#include "semgate/cache.h"
#include "semgate/log.h"
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

/* An index change held back while the scope's index is being saved. */
typedef struct held {
	int64_t id;            /* entry */
	int add;               /* 1: add the vector at held_vecs + vec, 0: remove */
	size_t vec;            /* offset of its vector in held_vecs (floats) */
} held_t;

/* One hard scope: its index and checkpoint state. */
typedef struct scope {
	sg_index_t *ix;        /* vectors of the scope's live entries */
	uint64_t max_id;       /* highest id added */
	uint64_t ckpt_id;      /* highest id in the stored checkpoint (0: none) */
	size_t dirty;          /* changes since the checkpoint */
	size_t ckpt_bytes;     /* size of its last serialisation, saved or not (0: none):
	                          the room its next save needs */
	int saving;            /* the saver thread is reading ix: it must not
	                          change, so changes go to `held` meanwhile */
	held_t *held;          /* changes held back while saving, in order */
	size_t nheld, cap_held; /* used, allocated */
	size_t held_done;      /* held changes applied (drain_held) */
	float *held_vecs;      /* vectors of the held adds, back to back */
	size_t nvecs, cap_vecs; /* vectors used, allocated */
	sg_u64map_t held_removed; /* ids whose removal is held (value: the scope) */
	int64_t *unindexed;    /* held adds the index refused: save_reap deletes them */
	size_t nunindexed, cap_unindexed; /* used, allocated */
} scope_t;

/* One scope's part of a checkpoint job. */
typedef struct save_item {
	uint64_t scope_hash;   /* whose index */
	scope_t *s;            /* the scope (scopes live until close) */
	const sg_index_t *ix;  /* its index, frozen while the job runs */
	uint64_t last_id;      /* highest entry id the index holds */
	size_t dirty;          /* the scope's changes this save covers */
	size_t bytes;          /* out: size of the blob */
	int rc;                /* out: result */
} save_item_t;

/* A checkpoint job's state; the saver's `mu` guards it. */
typedef enum save_state {
	SAVE_IDLE,    /* no job */
	SAVE_QUEUED,  /* handed to the saver thread */
	SAVE_RUNNING, /* being saved */
	SAVE_DONE,    /* saved or failed: the loop finishes it (save_reap) */
	SAVE__LAST    /* sentinel */
} save_state_t;

/*
 * The saver thread: serialises the indexes of one job and writes them as
 * chunked checkpoints (sg_store_ckpt_*), without the cache's locks. A job's
 * scopes are frozen (scope_t.saving, under `lock`) from save_start() until
 * the saver has written a scope's index and applied the changes held back
 * meanwhile (drain_held), so nothing else changes their indexes while they
 * are read; searches (readers) go on. save_reap() finishes the job on the
 * loop. A thread of its own rather than
 * libuv's pool: a save can take seconds, which would hold one of the pool's
 * few threads from searches and embeddings, and sg_cache_close() can join it
 * without a running loop.
 */
typedef struct saver {
	pthread_t thread;       /* once started */
	int started;            /* the thread exists */
	pthread_mutex_t mu;     /* state, stop, took_us */
	pthread_cond_t cv;      /* a change of state or stop */
	save_state_t state;     /* of the job */
	int stop;               /* close: exit when idle */
	save_item_t *items;     /* the job (owned; written by the loop while no job
	                           runs, by the saver while it runs) */
	size_t nitems;          /* scopes in the job */
	uint64_t took_us;       /* the job's duration */
	char err[320];          /* first failure's message */
} saver_t;

/*
 * Two locks. `lock` guards everything; the loop thread holds it for every
 * call but sg_cache_search(). `ixlock` guards the scope map and the indexes:
 * searches run on worker threads under its read side, and every change to an
 * index takes its write side (always inside `lock`).
 */
/* When the store is full, entries are dropped from the LRU end until twice
 * the new one's bytes are freed, FULL_EVICT_MAX at most; a new entry larger
 * than 1/FULL_EVICT_SHARE of the store evicts nothing (room for it would
 * cost too much of what is there). */
#define FULL_EVICT_MAX 256
#define FULL_EVICT_SHARE 16

struct sg_cache {
	pthread_mutex_t lock;   /* everything below */
	pthread_rwlock_t ixlock; /* scopes and their indexes */
	sg_store_t *store;      /* LMDB */
	sg_verify_t *verifier;  /* second look at semantic candidates, or NULL */
	sg_cache_opts_t o;      /* options (strings borrowed from the config) */
	sg_hash_key_t hash_key; /* the store's secret for scope and exact ids */
	sg_u64map_t nodes;      /* id -> node_t */
	sg_u64map_t scopes;     /* scope hash -> scope_t */
	node_t *head, *tail;    /* LRU list, most recent first */
	uint64_t nentries;      /* live entries */
	uint64_t nbytes;        /* their bytes */
	uint64_t evicted;       /* since start */
	uint64_t expired;       /* since start */
	uint64_t scope_mismatches; /* candidates of another scope under the same id */
	int store_full;         /* the last store failed: the map is at map_size_mb */
	uint64_t store_failures; /* stores that failed since start */
	uint64_t *touched;      /* ids with hits_unsaved, since the last flush */
	size_t ntouched, cap_touched; /* used, allocated */
	size_t sweep_cursor;    /* next nodes slot the expiry sweep looks at */
	saver_t saver;          /* checkpoints off the loop */
	int job_active;         /* a job is out (save_start .. save_reap) */
	int ckpt_wanted;        /* a checkpoint tick came while a job was out */
	int ckpt_full;          /* checkpoints are skipped: no room in the store */
	uint64_t ckpt_last_ms;  /* duration of the last job */
};

#define SWEEP_SLOTS 16384 /* node slots the expiry sweep visits per tick */
#define CKPT_CHUNK ((size_t)1 << 20) /* default checkpoint chunk: ~4 ms of writing */
#define HELD_BATCH 4 /* held adds given to the index at once: ~0.5 ms of HNSW */
#define HELD_BUDGET_US 500 /* time applying held changes per hold of the lock */

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

/* Append item, of size bytes, to the array *arr of *n items in *cap. Starts
 * small: a held vector is a whole embedding, and every scope of a save may
 * hold a few. */
static int push(void **arr, size_t *n, size_t *cap, size_t size, const void *item)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
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

/* --- index changes (under ixlock's write side) ----------------------------------- */

/*
 * While its index is being saved a scope's changes are held back, in order,
 * and applied when the save is done (drain_held): the entries are in the
 * store at once (exact hits, restarts), a new one is just not found by a
 * semantic search for that time, and a removed one that a search still
 * returns is skipped (no entry) as after a restart.
 */
static int hold(sg_cache_t *c, scope_t *s, int64_t id, const float *vec)
{
	size_t dim = (size_t)c->o.dim;
	held_t h = {id, vec != NULL, s->nvecs * dim};

	/* the vector first: a held change never points past the vectors */
	if (vec && push((void **)&s->held_vecs, &s->nvecs, &s->cap_vecs, dim * sizeof(float), vec))
		return SG_ENOMEM;
	return push((void **)&s->held, &s->nheld, &s->cap_held, sizeof(h), &h);
}

/* Returns 1 when the index changes (or will), 0 when a removal of id is
 * already held: during a save every search that finds a deleted entry in the
 * frozen index comes here again. */
static int ix_remove(sg_cache_t *c, scope_t *s, int64_t id)
{
	int rc;

	if (s->saving) {
		if (sg__u64map_get(&s->held_removed, (uint64_t)id))
			return 0;
		/* out of memory: it stays, found and skipped; or it is held again */
		if (hold(c, s, id, NULL) == 0)
			sg__u64map_put(&s->held_removed, (uint64_t)id, s);
		return 1;
	}
	pthread_rwlock_wrlock(&c->ixlock);
	rc = sg_index_remove(s->ix, id);
	pthread_rwlock_unlock(&c->ixlock);
	return rc != SG_ENOTFOUND;
}

static int ix_add(sg_cache_t *c, scope_t *s, int64_t id, const float *vec)
{
	if (s->saving)
		return hold(c, s, id, vec);
	pthread_rwlock_wrlock(&c->ixlock);
	int rc = sg_index_add(s->ix, id, vec);
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
		ix_remove(c, s, (int64_t)n->id);
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
	if (!s->saving && c->o.auto_hnsw && sg_index_kind(s->ix) == SG_INDEX_FLAT &&
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
	scope_t *s;
	sg_index_type_t type;
	if (blob == NULL) {
		/* A bad checkpoint costs only time: the scope is rebuilt from vectors. */
		sg_log_warn("cache: the checkpoint of scope %016" PRIx64 " is unusable (%s): "
		            "rebuilding its index from the stored vectors",
		            scope_hash, sg_store_last_error(lc->c->store));
		return 0;
	}
	s = scope_get(lc->c, scope_hash, 1);
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
	int rc = sg_index_load(s->ix, blob, len);
	if (rc != 0) {
		sg_log_warn("cache: the checkpoint of scope %016" PRIx64 " does not load (%s): "
		            "rebuilding its index from the stored vectors", scope_hash,
		            sg_strerror(rc));
		sg_index_free(s->ix);
		if (sg_index_new(&s->ix, lc->c->o.dim, lc->c->o.index_type, &lc->c->o.index_opts))
			return lc->err = SG_ENOMEM;
		return 0;
	}
	s->ckpt_id = s->max_id = last_id;
	s->ckpt_bytes = len;
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

static size_t ckpt_estimate(const sg_cache_t *c, const scope_t *s);

/*
 * At start, grow the map to hold a new checkpoint of every index beside the
 * current one, as save_start() asks: growing it later, on the loop, remaps
 * the whole store (~0.5 s at 1,000,000 entries, with the pages resident).
 * Address space only: the file grows as pages are written. Best effort: a
 * store at its maximum size is left as it is (save_start skips then).
 */
static void reserve_for_checkpoints(sg_cache_t *c)
{
	size_t need = 0;

	for (size_t i = 0; i < c->scopes.cap; i++) {
		scope_t *s = c->scopes.vals[i];
		if (s)
			need += s->ckpt_bytes ? s->ckpt_bytes : ckpt_estimate(c, s);
	}
	if (need)
		sg_store_reserve(c->store, need + need / 2); /* slack for the entries to come */
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
	/* Writers first: the loop (an index add) and the saver take the write
	 * side holding `lock`, and searches from the pool never stop. */
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&c->ixlock, &ra);
	pthread_rwlockattr_destroy(&ra);
	pthread_mutex_init(&c->saver.mu, NULL);
	pthread_cond_init(&c->saver.cv, NULL);
	c->o = *o;
	sg__u64map_init(&c->nodes);
	sg__u64map_init(&c->scopes);
	rc = sg_store_open(&c->store, o->path, &so, err, errlen);
	if (rc == 0)
		sg_store_hash_key(c->store, &c->hash_key);
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
	 * dropped from the index on first sight (see sg_cache_resolve). */
	reserve_for_checkpoints(c);
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
 * Saving an index costs its serialisation (~0.17 s for an HNSW index of
 * 100,000 entries, ~3 s for 1,000,000) and writing the blob (~0.25 s, ~5 s):
 * both run on the saver thread, the writing in chunks of a short write
 * transaction each (sg_store_ckpt_*), so the loop waits for one chunk at most
 * when it writes meanwhile. A big index is still saved only once its unsaved
 * changes are a fair share of it (1/64): what came after the checkpoint is
 * recovered at start from the stored vectors, without embedding, which bounds
 * that recovery to ~1.6% of the index, and the saver's work to a fair share
 * of the write traffic. Small indexes are saved whenever changed.
 */
#define CKPT_SMALL 4096

static int checkpoint_due(const scope_t *s, int force)
{
	size_t n = sg_index_count(s->ix);
	return s->dirty && !s->saving && (force || n < CKPT_SMALL || s->dirty >= n / 64);
}

/*
 * Serialise one index and write it as scope_hash's checkpoint, in chunks:
 * the one way a checkpoint is written, on the saver thread or (at close) on
 * the caller's. Takes none of the cache's locks: ix must not change
 * meanwhile. blob is scratch space; err gets a message on failure.
 */
static int save_index(sg_cache_t *c, save_item_t *it, int owner, sg_buf_t *blob, char *err,
                      size_t errlen)
{
	size_t chunk = c->o.ckpt_chunk_bytes ? c->o.ckpt_chunk_bytes : CKPT_CHUNK;
	sg_store_ckpt_t *w = NULL;
	int rc;

	sg_buf_reset(blob);
	if ((rc = sg_index_serialize(it->ix, blob))) {
		snprintf(err, errlen, "serialising the index: %s", sg_strerror(rc));
		return rc;
	}
	it->bytes = blob->len;
	if (c->o.ckpt_hook && c->o.ckpt_hook(c->o.ckpt_hook_ud, SG_CACHE_CKPT_SERIALISED) != 0)
		goto canceled;
	/* On the store's owner thread the map can grow to what the blob needs
	 * now; the saver thread relies on save_start's reservation. */
	if (owner && (rc = sg_store_reserve(c->store, blob->len + blob->len / 8 + chunk))) {
		snprintf(err, errlen, "%s", sg_store_last_error(c->store));
		return rc;
	}
	if ((rc = sg_store_ckpt_begin(c->store, it->scope_hash, &w, err, errlen)))
		return rc;
	for (size_t off = 0; off < blob->len; off += chunk) {
		if ((rc = sg_store_ckpt_chunk(w, blob->data + off, SG_MIN(chunk, blob->len - off))))
			goto fail;
		if (c->o.ckpt_hook && c->o.ckpt_hook(c->o.ckpt_hook_ud, SG_CACHE_CKPT_CHUNK) != 0)
			goto canceled;
	}
	if ((rc = sg_store_ckpt_publish(w, it->last_id)))
		goto fail;
	sg_store_ckpt_free(w);
	return 0;
fail:
	snprintf(err, errlen, "%s", sg_store_ckpt_error(w));
	sg_store_ckpt_free(w);
	return rc;
canceled:
	snprintf(err, errlen, "canceled by the checkpoint hook");
	sg_store_ckpt_free(w);
	return SG_ECANCELED;
}

static int add_held(sg_cache_t *c, scope_t *s, size_t n, const int64_t *ids, const float *vecs)
{
	if (c->o.ckpt_hook && c->o.ckpt_hook(c->o.ckpt_hook_ud, SG_CACHE_CKPT_HELD_ADD) != 0)
		return SG_EINDEX; /* a test's index failure */
	return sg_index_add_batch(s->ix, n, ids, vecs);
}

/*
 * Apply a scope's held changes, from the oldest, under lock and ixlock, for
 * about budget_us (a batch of adds started is finished): adds HELD_BATCH at
 * a time, removes (tombstones: cheap) one by one. Returns the changes
 * applied. An entry the index refuses would never be
 * found semantically, not even after a restart (the next checkpoint covers
 * its id): it is deleted, as a store whose add fails deletes it, but by
 * save_reap on the loop (the store's reads are the loop's).
 */
static size_t apply_held(sg_cache_t *c, scope_t *s, uint64_t budget_us)
{
	size_t i = s->held_done, end = s->nheld, done;
	int64_t ids[HELD_BATCH];
	uint64_t t0 = sg_now_us();

	pthread_rwlock_wrlock(&c->ixlock);
	while (i < end && sg_now_us() - t0 < budget_us) {
		held_t *h = &s->held[i];
		size_t n = 0;
		if (!h->add) {
			sg_index_remove(s->ix, h->id); /* SG_ENOTFOUND: a repeat */
			i++;
			continue;
		}
		/* held adds' vectors are back to back in order */
		while (i + n < end && n < HELD_BATCH && s->held[i + n].add) {
			ids[n] = s->held[i + n].id;
			n++;
		}
		if (add_held(c, s, n, ids, s->held_vecs + h->vec) != 0) {
			for (size_t j = i; j < i + n; j++) {
				const held_t *hj = &s->held[j];
				if (add_held(c, s, 1, &hj->id, s->held_vecs + hj->vec) == 0)
					continue;
				if (push((void **)&s->unindexed, &s->nunindexed, &s->cap_unindexed,
				         sizeof(hj->id), &hj->id) != 0)
					sg_log_warn("cache: entry %" PRId64 " could not be indexed: it "
					            "is found by exact lookups only", hj->id);
			}
		}
		i += n;
	}
	pthread_rwlock_unlock(&c->ixlock);
	done = i - s->held_done;
	s->held_done = i;
	return done;
}

/*
 * On the saver thread, once a scope's index is saved: apply the changes
 * held meanwhile, ~0.5 ms at a time under the cache's lock, so that the
 * loop waits for that at most (~130 us per HNSW add), not for all of them
 * (hundreds at a high write rate; a million removes after a DELETE /cache);
 * a pause between turns lets it in.
 * New changes are held until the list is empty; then, still under the lock,
 * the scope is released.
 */
static void drain_held(sg_cache_t *c, scope_t *s)
{
	for (;;) {
		pthread_mutex_lock(&c->lock);
		if (s->held_done == s->nheld) {
			free(s->held);
			free(s->held_vecs);
			s->held = NULL;
			s->held_vecs = NULL;
			s->nheld = s->cap_held = s->nvecs = s->cap_vecs = s->held_done = 0;
			sg__u64map_free(&s->held_removed);
			s->saving = 0;
			pthread_mutex_unlock(&c->lock);
			return;
		}
		apply_held(c, s, HELD_BUDGET_US);
		pthread_mutex_unlock(&c->lock);
		/* A mutex is not fair: relocking at once would starve the loop,
		 * woken but not yet running, for the whole list. */
		nanosleep(&(struct timespec){0, 200 * 1000}, NULL);
	}
}

/* A scope's index is in the store as of it: the changes it covers are saved. */
static void mark_saved(const save_item_t *it)
{
	scope_t *s = it->s;

	s->ckpt_id = it->last_id;
	s->dirty -= SG_MIN(it->dirty, s->dirty);
	s->ckpt_bytes = it->bytes;
}

/* One job at a time, round the cycle: idle -> queued (the loop) -> running
 * (the saver) -> done (the saver) -> idle (the loop reaps it). */
static const char *const save_state_names[SAVE__LAST] = {"idle", "queued", "running", "done"};
static const uint32_t save_next[SAVE__LAST] = {
	[SAVE_IDLE] = SG_FSM_TO(SAVE_QUEUED),
	[SAVE_QUEUED] = SG_FSM_TO(SAVE_RUNNING),
	[SAVE_RUNNING] = SG_FSM_TO(SAVE_DONE),
	[SAVE_DONE] = SG_FSM_TO(SAVE_IDLE),
};
static const sg_fsm_t save_fsm = {"checkpoint job", save_state_names, save_next, SAVE__LAST};

static void save_set_state(saver_t *sv, save_state_t st)
{
	sg_fsm_move(&save_fsm, sv, sv->state, st);
	sv->state = st;
	pthread_cond_broadcast(&sv->cv);
}

static void *saver_main(void *arg)
{
	sg_cache_t *c = arg;
	saver_t *sv = &c->saver;
	sg_buf_t blob;

	sg_buf_init(&blob, 0);
	/* One CPU for saving: an OpenMP team for the held adds would take the
	 * other CPU from the loop (and spin after each batch). */
	sg_index_set_threads(1);
	pthread_mutex_lock(&sv->mu);
	for (;;) {
		while (sv->state != SAVE_QUEUED && !sv->stop)
			pthread_cond_wait(&sv->cv, &sv->mu);
		if (sv->state != SAVE_QUEUED)
			break;
		save_set_state(sv, SAVE_RUNNING);
		pthread_mutex_unlock(&sv->mu);

		uint64_t t0 = sg_now_us();
		char err[256];
		sv->err[0] = '\0';
		for (size_t i = 0; i < sv->nitems; i++) {
			save_item_t *it = &sv->items[i];
			it->rc = save_index(c, it, 0, &blob, err, sizeof(err));
			if (it->rc && sv->err[0] == '\0')
				snprintf(sv->err, sizeof(sv->err), "scope %016" PRIx64 ": %s",
				         it->scope_hash, err);
			drain_held(c, it->s); /* saved or not, the index may change again */
		}
		sg_buf_free(&blob); /* up to the size of the largest index: not kept */

		pthread_mutex_lock(&sv->mu);
		sv->took_us = sg_now_us() - t0;
		save_set_state(sv, SAVE_DONE);
	}
	pthread_mutex_unlock(&sv->mu);
	sg_buf_free(&blob);
	return NULL;
}

/* On the loop, under lock: finish a job the saver is done with. wait: wait
 * for it (close). */
static void save_reap(sg_cache_t *c, int wait)
{
	saver_t *sv = &c->saver;
	size_t saved = 0, bytes = 0, need = 0;

	if (!c->job_active)
		return;
	pthread_mutex_lock(&sv->mu);
	while (wait && sv->state != SAVE_DONE)
		pthread_cond_wait(&sv->cv, &sv->mu);
	if (sv->state != SAVE_DONE) {
		pthread_mutex_unlock(&sv->mu);
		return;
	}
	save_set_state(sv, SAVE_IDLE);
	pthread_mutex_unlock(&sv->mu);
	for (size_t i = 0; i < sv->nitems; i++) {
		save_item_t *it = &sv->items[i];
		scope_t *s = it->s;
		assert(!s->saving); /* released by drain_held */
		if (it->rc == 0) {
			mark_saved(it);
			saved++;
			bytes += it->bytes;
		} else if (it->rc == SG_EFULL) {
			s->ckpt_bytes = it->bytes; /* the room the next try needs */
			need += 2 * it->bytes;
		}
		for (size_t j = 0; j < s->nunindexed; j++) {
			node_t *n = sg__u64map_get(&c->nodes, (uint64_t)s->unindexed[j]);
			int rc = n ? drop_entry(c, n) : 0; /* (deleted meanwhile) */
			if (rc)
				sg_log_warn("cache: entry %" PRId64 " could not be indexed, nor deleted "
				            "(%s): it is found by exact lookups only",
				            s->unindexed[j], sg_strerror(rc));
			else if (n)
				sg_log_warn("cache: entry %" PRId64 " could not be indexed: deleted",
				            s->unindexed[j]);
		}
		free(s->unindexed);
		s->unindexed = NULL;
		s->nunindexed = s->cap_unindexed = 0;
		maybe_upgrade(c, it->scope_hash, s); /* adds were held meanwhile */
	}
	c->ckpt_last_ms = sv->took_us / 1000;
	if (saved < sv->nitems)
		sg_log_warn("cache: %zu of %zu index checkpoint(s) failed (%s); tried again at the "
		            "next checkpoint", sv->nitems - saved, sv->nitems, sv->err);
	sg_log_debug("cache: checkpoint of %zu index(es), %zu bytes, in %llu ms off the loop",
	             saved, bytes, (unsigned long long)c->ckpt_last_ms);
	/* The saver never grows the map (that wants the loop's read transaction
	 * closed): it is grown here, for the next try. */
	if (need)
		sg_store_reserve(c->store, need);
	free(sv->items);
	sv->items = NULL;
	sv->nitems = 0;
	c->job_active = 0;
}

/* The size of a scope's first checkpoint, roughly: its vectors and, for
 * HNSW, the level-0 links (2 M of 4 bytes a node) and levels. Too small a
 * guess costs one failed save (the map then grows to twice the real size). */
static size_t ckpt_estimate(const sg_cache_t *c, const scope_t *s)
{
	size_t per = (size_t)c->o.dim * sizeof(float) + 64;
	int m = c->o.index_opts.hnsw_m > 0 ? c->o.index_opts.hnsw_m : 32;

	if (sg_index_kind(s->ix) == SG_INDEX_HNSW)
		per += (size_t)m * 2 * 4 + 32;
	return sg_index_count(s->ix) * per;
}

/*
 * On the loop, under lock: hand the indexes due for a checkpoint to the
 * saver thread; the checkpoints of emptied scopes are deleted here (a small
 * write). Without a saver thread (it could not start) the save runs here.
 */
static int save_start(sg_cache_t *c)
{
	saver_t *sv = &c->saver;
	size_t n = 0, need = 0;
	int rc = 0;

	assert(!c->job_active);
	for (size_t i = 0; i < c->scopes.cap; i++) {
		scope_t *s = c->scopes.vals[i];
		if (s == NULL || !checkpoint_due(s, 0))
			continue;
		if (sg_index_count(s->ix) == 0) {
			sg_store_delete_checkpoint(c->store, c->scopes.keys[i]);
			s->dirty = 0;
			s->ckpt_bytes = 0;
			continue;
		}
		if (n % 16 == 0) {
			save_item_t *items = realloc(sv->items, (n + 16) * sizeof(*items));
			if (items == NULL) {
				rc = SG_ENOMEM;
				break;
			}
			sv->items = items;
		}
		sv->items[n++] = (save_item_t){c->scopes.keys[i], s, s->ix, s->max_id, s->dirty, 0, 0};
		need += s->ckpt_bytes ? s->ckpt_bytes : ckpt_estimate(c, s);
	}
	if (n == 0) {
		free(sv->items);
		sv->items = NULL;
		return rc;
	}
	if (!sv->started) {
		if (pthread_create(&sv->thread, NULL, saver_main, c) != 0) {
			sg_log_warn("cache: no thread for checkpoints: saving on the event loop");
			sg_buf_t blob;
			char err[256];
			sg_buf_init(&blob, 0);
			for (size_t i = 0; i < n; i++) {
				save_item_t *it = &sv->items[i];
				if ((it->rc = save_index(c, it, 1, &blob, err, sizeof(err))) == 0)
					mark_saved(it);
				else
					rc = it->rc;
			}
			sg_buf_free(&blob);
			free(sv->items);
			sv->items = NULL;
			return rc;
		}
		sv->started = 1;
	}
	/* Room for the new generations beside the old ones, which stay until
	 * the new ones are published (a guess from the last sizes; on SG_EFULL
	 * the map grows in save_reap and the next checkpoint tries again). With
	 * the map at its maximum and no room, a save would fill it, and the
	 * loop's writes would fail until it gave up: none is tried. */
	if (sg_store_reserve(c->store, need + need / 4) == SG_EFULL) {
		if (!c->ckpt_full)
			sg_log_warn("cache: index checkpoints are skipped while the store has no "
			            "room for them (%s); what they lack is indexed from the stored "
			            "vectors at start", sg_store_last_error(c->store));
		c->ckpt_full = 1;
		free(sv->items);
		sv->items = NULL;
		return rc;
	}
	if (c->ckpt_full)
		sg_log_info("cache: room in the store again: index checkpoints resume");
	c->ckpt_full = 0;
	for (size_t i = 0; i < n; i++)
		sv->items[i].s->saving = 1;
	sv->nitems = n;
	c->job_active = 1;
	pthread_mutex_lock(&sv->mu);
	save_set_state(sv, SAVE_QUEUED);
	pthread_mutex_unlock(&sv->mu);
	return rc;
}

/* Save every changed index on the calling thread (close). */
static int checkpoint_scopes(sg_cache_t *c)
{
	sg_buf_t blob;
	char err[256];
	int rc = 0;

	sg_buf_init(&blob, 0);
	for (size_t i = 0; i < c->scopes.cap; i++) {
		scope_t *s = c->scopes.vals[i];
		if (s == NULL || !checkpoint_due(s, 1))
			continue;
		if (sg_index_count(s->ix) == 0) {
			sg_store_delete_checkpoint(c->store, c->scopes.keys[i]);
			s->dirty = 0;
			continue;
		}
		save_item_t it = {c->scopes.keys[i], s, s->ix, s->max_id, s->dirty, 0, 0};
		if ((rc = save_index(c, &it, 1, &blob, err, sizeof(err)))) {
			sg_log_warn("cache: checkpoint of scope %016" PRIx64 " failed: %s",
			            it.scope_hash, err);
			break;
		}
		mark_saved(&it);
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
	/* A save under way is finished (its serialisation is done or nearly,
	 * and the save below would redo it), then the saver stops. */
	save_reap(c, 1);
	if (c->saver.started) {
		pthread_mutex_lock(&c->saver.mu);
		c->saver.stop = 1;
		pthread_cond_broadcast(&c->saver.cv);
		pthread_mutex_unlock(&c->saver.mu);
		pthread_join(c->saver.thread, NULL);
	}
	if (c->store) {
		flush_hits(c);
		checkpoint_scopes(c);
		sg_store_sync(c->store);
		sg_store_close(c->store);
	}
	for (size_t i = 0; i < c->nodes.cap; i++)
		free(c->nodes.vals[i]);
	for (size_t i = 0; i < c->scopes.cap; i++) {
		scope_t *s = c->scopes.vals[i];
		if (s) {
			sg_index_free(s->ix);
			free(s->held);
			free(s->held_vecs);
			sg__u64map_free(&s->held_removed);
			free(s->unindexed);
			free(s);
		}
	}
	sg__u64map_free(&c->nodes);
	sg__u64map_free(&c->scopes);
	free(c->touched);
	sg_verify_free(c->verifier);
	pthread_cond_destroy(&c->saver.cv);
	pthread_mutex_destroy(&c->saver.mu);
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
			s->dirty += ix_remove(c, s, cand->ids[i]);
			continue;
		}
		if (expired(node->expires_s, now_s)) {
			if (drop_entry(c, node) == 0)
				c->expired++;
			continue;
		}
		if (sg_store_get(c->store, node->id, &hit->entry) != 0)
			continue;
		/* The index was chosen by a 64-bit id: only an entry of this very
		 * scope may answer, whatever collided with it. */
		if (!same(hit->entry.m.scope_json, &k->scope)) {
			sg_entry_free(&hit->entry);
			c->scope_mismatches++;
			continue;
		}
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
	if (rc == SG_EFULL && c->tail) {
		/* The store is at its configured maximum: make room the way a size cap
		 * would, from the least recently used end, and try once more. */
		sg_entry_meta_t need_m = {.ns = in.ns, .model = in.model, .scope_json = in.scope_json,
		                          .prompt = in.prompt, .response = in.response};
		uint64_t need = 2 * entry_bytes(c, &need_m), freed = 0;
		sg_store_stats_t ss;
		if (sg_store_stats(c->store, &ss) == 0 &&
		    need / 2 <= ss.max_map_size / FULL_EVICT_SHARE) {
			for (int i = 0; i < FULL_EVICT_MAX && c->tail && freed < need; i++) {
				uint64_t b = c->tail->bytes;
				if (drop_entry(c, c->tail) != 0)
					break;
				freed += b;
				c->evicted++;
			}
			rc = sg_store_put(c->store, &in, vec, &id);
		}
	}
	if (rc) {
		c->store_failures++;
		c->store_full = rc == SG_EFULL;
		goto out;
	}
	c->store_full = 0;
	m.ns = in.ns;
	m.model = in.model;
	m.scope_json = in.scope_json;
	m.prompt = in.prompt;
	m.response = in.response;
	node_t *n = node_add(c, id, k->scope_hash, entry_bytes(c, &m), in.expires_s, now_s);
	if (n == NULL || (vec && ix_add(c, s, (int64_t)id, vec) != 0)) {
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
		ix_remove(c, s, (int64_t)id);
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
	save_reap(c, 0);
	if (checkpoint)
		c->ckpt_wanted = 1;
	if (c->ckpt_wanted && !c->job_active) {
		c->ckpt_wanted = 0;
		rc = save_start(c);
	}
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
	out->scope_collisions = c->scope_mismatches;
	out->store_full = c->store_full;
	out->store_failures = c->store_failures;
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
	out->checkpoint_in_progress = c->job_active;
	out->checkpoint_last_ms = c->ckpt_last_ms;
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

const sg_hash_key_t *sg_cache_hash_key(const sg_cache_t *c)
{
	return &c->hash_key;
}
