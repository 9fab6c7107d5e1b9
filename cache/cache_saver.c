/* The cache's saver thread: checkpoints of the indexes off the event loop
 * (see the comment below); the engine is cache.c. */
#include "cache_int.h"

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
				if (sg__cache_push((void **)&s->unindexed, &s->nunindexed, &s->cap_unindexed,
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
void sg__cache_save_reap(sg_cache_t *c, int wait)
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
			int rc = n ? sg__cache_drop_entry(c, n) : 0; /* (deleted meanwhile) */
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
		sg__cache_maybe_upgrade(c, it->scope_hash, s); /* adds were held meanwhile */
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
size_t sg__cache_ckpt_estimate(const sg_cache_t *c, const scope_t *s)
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
int sg__cache_save_start(sg_cache_t *c)
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
		need += s->ckpt_bytes ? s->ckpt_bytes : sg__cache_ckpt_estimate(c, s);
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
int sg__cache_checkpoint_scopes(sg_cache_t *c)
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
