/* The semantic cache engine: store + per-scope indexes + LRU + expiry. The
 * saver thread that checkpoints indexes off the event loop is cache_saver.c. */
#include "cache_int.h"

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
int sg__cache_push(void **arr, size_t *n, size_t *cap, size_t size, const void *item)
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
	if (vec && sg__cache_push((void **)&s->held_vecs, &s->nvecs, &s->cap_vecs, dim * sizeof(float), vec))
		return SG_ENOMEM;
	return sg__cache_push((void **)&s->held, &s->nheld, &s->cap_held, sizeof(h), &h);
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
int sg__cache_drop_entry(sg_cache_t *c, node_t *n)
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

void sg__cache_maybe_upgrade(sg_cache_t *c, uint64_t hash, scope_t *s)
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
		if (sg__cache_push((void **)&lc->expired, &lc->nexpired, &lc->cap_expired, sizeof(uint64_t), &m->id))
			return lc->err = SG_ENOMEM;
		return 0;
	}
	scope_t *s = scope_get(c, m->scope_hash, 1);
	int64_t used = m->last_hit_s > m->created_s ? m->last_hit_s : m->created_s;
	node_t *n = node_add(c, m->id, m->scope_hash, entry_bytes(c, m), m->expires_s, used);
	if (s == NULL || n == NULL)
		return lc->err = SG_ENOMEM;
	if (sg__cache_push((void **)&lc->order, &lc->norder, &lc->cap_order, sizeof(node_t *), &n))
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


/*
 * At start, grow the map to hold a new checkpoint of every index beside the
 * current one, as sg__cache_save_start() asks: growing it later, on the loop, remaps
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
			need += s->ckpt_bytes ? s->ckpt_bytes : sg__cache_ckpt_estimate(c, s);
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
	/* a negative knob switches that evidence off (verify.h) */
	const sg_verify_opts_t structure = {.substitution = -1, .extra = -1};
	if (o->verify_hits &&
	    (rc = sg_verify_new(&c->verifier, o->verify_structure_only ? &structure : NULL)) != 0) {
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
				sg__cache_maybe_upgrade(c, lc.pending.keys[i], sc);
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
	sg__cache_save_reap(c, 1);
	if (c->saver.started) {
		pthread_mutex_lock(&c->saver.mu);
		c->saver.stop = 1;
		pthread_cond_broadcast(&c->saver.cv);
		pthread_mutex_unlock(&c->saver.mu);
		pthread_join(c->saver.thread, NULL);
	}
	if (c->store) {
		flush_hits(c);
		sg__cache_checkpoint_scopes(c);
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
	    sg__cache_push((void **)&c->touched, &c->ntouched, &c->cap_touched, sizeof(uint64_t), &n->id) != 0)
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
			if (sg__cache_drop_entry(c, node) == 0)
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
			if (sg__cache_drop_entry(c, node) == 0)
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
			sg__cache_drop_entry(c, node);
	}
}

static void evict(sg_cache_t *c)
{
	while (c->tail && ((c->o.max_entries && c->nentries > c->o.max_entries) ||
	                   (c->o.max_bytes && c->nbytes > c->o.max_bytes))) {
		if (sg__cache_drop_entry(c, c->tail) != 0)
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
				if (sg__cache_drop_entry(c, c->tail) != 0)
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
		sg__cache_maybe_upgrade(c, k->scope_hash, s);
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
	rc = n ? sg__cache_drop_entry(c, n) : SG_ENOTFOUND;
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
		if (n && expired(n->expires_s, now_s) && sg__cache_drop_entry(c, n) == 0) {
			c->expired++;
			continue;
		}
		c->sweep_cursor = i + 1;
	}
	flush_hits(c);
	sg__cache_save_reap(c, 0);
	if (checkpoint)
		c->ckpt_wanted = 1;
	if (c->ckpt_wanted && !c->job_active) {
		c->ckpt_wanted = 0;
		rc = sg__cache_save_start(c);
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
