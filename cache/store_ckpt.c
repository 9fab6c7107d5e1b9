/* The store's index checkpoints: see the comment below and semgate/store.h. */
#include "store_int.h"

/* ---- checkpoints ---------------------------------------------------------
 *
 * Two forms. Single-record (format 1, still read and written by
 * sg_store_put_checkpoint): `checkpoints` holds scope_hash -> last_id + blob.
 * Chunked (what the cache writes): the blob is cut into chunks, each stored
 * under (scope_hash, generation, number) in `ckchunks` by its own short write
 * transaction, so that a checkpoint of hundreds of MB never holds LMDB's one
 * writer slot (and with it the owner's writes) for more than a chunk; then
 * one small transaction publishes the generation in `manifests`, and the
 * previous generation's chunks are deleted. A crash before the manifest
 * leaves the previous checkpoint in place and chunks nothing refers to,
 * which the next open (or the scope's next save) deletes.
 */

#define MANIFEST_VERSION 1u
#define CKPT_SEED 0x5347435050ull /* seed of the chunks' chained checksum */
#define CHUNK_KEY 20              /* scope_hash, generation (big-endian u64s),
				     chunk number (big-endian u32) */

/* A published chunked checkpoint. Host byte order, no padding. */
typedef struct manifest {
	uint32_t version;   /* MANIFEST_VERSION */
	uint32_t flags;     /* 0 */
	uint64_t gen;       /* generation: its chunks' keys */
	uint64_t last_id;   /* highest entry id the blob includes */
	uint64_t len;       /* blob bytes */
	uint64_t nchunks;   /* chunks, numbered from 0 */
	uint64_t checksum;  /* manifest_sum(): over the fields above and the chunks */
} manifest_t;
_Static_assert(sizeof(manifest_t) == 48, "manifest_t must have no padding");

/* XXH64 of the manifest's fields (checksum zeroed), seeded with chunks_sum,
 * the XXH64 chained over the chunks in order from CKPT_SEED: a damaged field
 * (a last_id that would skip entries at start) fails it as a chunk would. */
static uint64_t manifest_sum(const manifest_t *m, uint64_t chunks_sum)
{
	manifest_t z = *m;
	z.checksum = 0;
	return sg_hash64(&z, sizeof(z), chunks_sum);
}

struct sg_store_ckpt {
	sg_store_t *s;        /* borrowed */
	uint64_t scope_hash;  /* whose checkpoint */
	uint64_t gen;         /* generation being written */
	uint64_t old_gen;     /* generation published before (0: none) */
	uint64_t nchunks;     /* chunks written */
	uint64_t len;         /* their bytes */
	uint64_t checksum;    /* chained over them */
	int published;        /* its manifest is written: the chunks are the checkpoint's */
	uint64_t clears;      /* the store's count of clears at begin */
	char err[256];        /* last error: this writer's own, not the store's */
};

static void chunk_key(uint8_t k[CHUNK_KEY], uint64_t scope_hash, uint64_t gen, uint32_t i)
{
	sg__store_key_be(k, scope_hash);
	sg__store_key_be(k + 8, gen);
	for (int j = 3; j >= 0; j--, i >>= 8)
		k[16 + j] = (uint8_t)i;
}

static int get_manifest(sg_store_t *s, MDB_txn *txn, uint64_t scope_hash, manifest_t *m)
{
	MDB_val key = {sizeof(scope_hash), &scope_hash}, val;
	int rc = mdb_get(txn, s->manifests, &key, &val);

	if (rc)
		return rc;
	if (val.mv_size != sizeof(*m))
		return MDB_CORRUPTED;
	memcpy(m, val.mv_data, sizeof(*m));
	return m->version == MANIFEST_VERSION ? 0 : MDB_CORRUPTED;
}

/* The generation in a chunk key. */
static uint64_t chunk_gen(const MDB_val *k)
{
	MDB_val g = {8, (char *)k->mv_data + 8};
	return sg__store_key_id(&g);
}

/* Delete the chunks of scope_hash whose generation is not `keep` (0: all).
 * MDB codes. Each key is copied out of the map before it is deleted and the
 * cursor placed again from it: no deleting under a moving cursor. */
static int drop_chunks(sg_store_t *s, MDB_txn *txn, uint64_t scope_hash, uint64_t keep)
{
	uint8_t k[CHUNK_KEY], prefix[8];
	MDB_cursor *cur;
	MDB_val key = {CHUNK_KEY, k}, val;
	int rc;

	if ((rc = mdb_cursor_open(txn, s->ckchunks, &cur)))
		return rc;
	sg__store_key_be(prefix, scope_hash);
	chunk_key(k, scope_hash, 0, 0);
	for (;;) {
		key = (MDB_val){CHUNK_KEY, k};
		rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
		while (rc == 0 && key.mv_size == CHUNK_KEY && !memcmp(key.mv_data, prefix, 8) &&
		       keep && chunk_gen(&key) == keep)
			rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
		if (rc || key.mv_size != CHUNK_KEY || memcmp(key.mv_data, prefix, 8) != 0)
			break; /* (malformed keys are open's to drop) */
		memcpy(k, key.mv_data, CHUNK_KEY);
		key = (MDB_val){CHUNK_KEY, k};
		if ((rc = mdb_del(txn, s->ckchunks, &key, NULL)))
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

typedef struct orphan_ctx {
	uint8_t k[512]; /* the key to look from (LMDB's longest key) */
	size_t len;     /* bytes of k */
	int dropped;    /* out: a chunk was deleted */
} orphan_ctx_t;

/* At open: delete the first chunk from c->k on of no published generation
 * (or with a malformed key), if any; one per transaction, so that each
 * needs only a few free pages and frees a chunk's for the next. */
static int drop_orphan_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	orphan_ctx_t *c = arg;
	uint8_t *k = c->k;
	MDB_cursor *cur;
	MDB_val key = {c->len, k}, val;
	int rc;

	c->dropped = 0;
	if ((rc = mdb_cursor_open(txn, s->ckchunks, &cur)))
		return sg__store_mdb_fail(s, rc, "mdb_cursor_open(ckchunks)");
	while ((rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE)) == 0) {
		uint64_t scope_hash = key.mv_size == CHUNK_KEY ? sg__store_key_id(&key) : 0;
		manifest_t m;
		int mrc = key.mv_size == CHUNK_KEY ? get_manifest(s, txn, scope_hash, &m)
						   : MDB_NOTFOUND;
		if (mrc && mrc != MDB_NOTFOUND && mrc != MDB_CORRUPTED) {
			rc = mrc;
			break;
		}
		if (mrc == 0 && chunk_gen(&key) == m.gen) {
			/* the published generation: on past it */
			if (m.gen < UINT64_MAX)
				chunk_key(k, scope_hash, m.gen + 1, 0);
			else if (scope_hash < UINT64_MAX)
				chunk_key(k, scope_hash + 1, 0, 0);
			else
				break;
			key = (MDB_val){CHUNK_KEY, k};
			c->len = CHUNK_KEY;
			continue;
		}
		if (key.mv_size > sizeof(c->k))
			break; /* cannot happen: LMDB's keys are shorter */
		memcpy(k, key.mv_data, key.mv_size);
		key.mv_data = k;
		c->len = key.mv_size;
		if ((rc = mdb_del(txn, s->ckchunks, &key, NULL)) == 0)
			c->dropped = 1;
		break;
	}
	mdb_cursor_close(cur);
	if (rc == MDB_NOTFOUND)
		rc = 0;
	return rc ? sg__store_mdb_fail(s, rc, "dropping unpublished checkpoint chunks") : 0;
}

int sg__store_drop_orphans(sg_store_t *s)
{
	orphan_ctx_t ctx = {.len = 1};
	int err;

	do
		err = sg__store_write_txn(s, drop_orphan_fn, &ctx);
	while (err == 0 && ctx.dropped);
	return err;
}

/*
 * The blob of a chunked checkpoint, read in txn. With one chunk *blob points
 * into the map (valid while txn is); with several they are copied into
 * *owned (malloc'ed; the caller frees it). SG_ECORRUPT (message set) when a
 * chunk is missing or of the wrong size, or the checksum differs.
 */
static int manifest_blob(sg_store_t *s, MDB_txn *txn, uint64_t scope_hash,
			 const manifest_t *m, const void **blob, void **owned)
{
	uint8_t k[CHUNK_KEY];
	MDB_val key = {CHUNK_KEY, k}, val;
	uint64_t h = CKPT_SEED, off = 0;
	char *buf = NULL;
	int rc;

	*blob = NULL;
	*owned = NULL;
	if (m->len > s->map_size || m->nchunks > m->len) {
		sg__store_set_err(s, "manifest of %" PRIu64 " bytes in %" PRIu64 " chunks is not possible",
			m->len, m->nchunks);
		return SG_ECORRUPT;
	}
	if (m->nchunks > 1 && !(buf = malloc(m->len ? m->len : 1))) {
		sg__store_set_err(s, "out of memory reading a checkpoint of %" PRIu64 " bytes", m->len);
		return SG_ENOMEM;
	}
	for (uint64_t i = 0; i < m->nchunks; i++) {
		chunk_key(k, scope_hash, m->gen, (uint32_t)i);
		key = (MDB_val){CHUNK_KEY, k};
		if ((rc = mdb_get(txn, s->ckchunks, &key, &val))) {
			if (rc != MDB_NOTFOUND) {
				free(buf);
				return sg__store_mdb_fail(s, rc, "mdb_get(ckchunks)");
			}
			sg__store_set_err(s, "chunk %" PRIu64 " of %" PRIu64 " is missing", i, m->nchunks);
			goto bad;
		}
		if (val.mv_size > m->len - off || (i + 1 == m->nchunks && off + val.mv_size != m->len)) {
			sg__store_set_err(s, "chunk %" PRIu64 " of %" PRIu64 " has %zu bytes: the chunks do "
				"not add up to %" PRIu64, i, m->nchunks, val.mv_size, m->len);
			goto bad;
		}
		h = sg_hash64(val.mv_data, val.mv_size, h);
		if (buf)
			memcpy(buf + off, val.mv_data, val.mv_size);
		else
			*blob = val.mv_data;
		off += val.mv_size;
	}
	if (m->nchunks == 0 && m->len != 0) {
		sg__store_set_err(s, "no chunks for %" PRIu64 " bytes", m->len);
		goto bad;
	}
	if (manifest_sum(m, h) != m->checksum) {
		sg__store_set_err(s, "checksum mismatch over the manifest and its %" PRIu64 " chunks",
			m->nchunks);
		goto bad;
	}
	if (buf)
		*blob = *owned = buf;
	else if (m->nchunks == 0)
		*blob = "";
	return 0;
bad:
	free(buf);
	return SG_ECORRUPT;
}

typedef struct checkpoint_ctx {
	uint64_t scope_hash; /* key */
	uint64_t last_id;    /* highest entry id the blob includes */
	const void *blob;    /* borrowed */
	size_t len;          /* bytes in blob */
} checkpoint_ctx_t;

static int put_checkpoint_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	checkpoint_ctx_t *c = arg;
	MDB_val key = {sizeof(c->scope_hash), &c->scope_hash};
	MDB_val val = {sizeof(c->last_id) + c->len, NULL};
	int rc = mdb_put(txn, s->checkpoints, &key, &val, MDB_RESERVE);

	if (rc)
		return sg__store_mdb_fail(s, rc, "mdb_put(checkpoints)");
	memcpy(val.mv_data, &c->last_id, sizeof(c->last_id));
	if (c->len)
		memcpy((char *)val.mv_data + sizeof(c->last_id), c->blob, c->len);
	/* this one replaces a chunked checkpoint of the scope */
	rc = mdb_del(txn, s->manifests, &key, NULL);
	if (rc == 0)
		rc = drop_chunks(s, txn, c->scope_hash, 0);
	return rc && rc != MDB_NOTFOUND ? sg__store_mdb_fail(s, rc, "mdb_del(manifests)") : 0;
}

int sg_store_put_checkpoint(sg_store_t *s, uint64_t scope_hash, uint64_t last_id,
			    const void *blob, size_t len)
{
	checkpoint_ctx_t ctx = {scope_hash, last_id, blob, len};

	if (!blob && len) {
		sg__store_set_err(s, "put_checkpoint: NULL blob with a length");
		return SG_EINVAL;
	}
	if (len > (size_t)UINT32_MAX - sizeof(uint64_t)) {
		sg__store_set_err(s, "put_checkpoint: blob of %zu bytes is too large", len);
		return SG_ETOOBIG;
	}
	return sg__store_write_txn(s, put_checkpoint_fn, &ctx);
}

int sg_store_get_checkpoint(sg_store_t *s, uint64_t scope_hash, uint64_t *last_id,
			    void **blob, size_t *len)
{
	MDB_val key = {sizeof(scope_hash), &scope_hash}, val;
	const void *data = NULL;
	void *owned = NULL;
	manifest_t m;
	MDB_txn *txn;
	int rc, err;

	*blob = NULL;
	*len = 0;
	if ((err = sg__store_read_begin(s, &txn)))
		return err;
	rc = get_manifest(s, txn, scope_hash, &m);
	if (rc == 0) {
		if ((err = manifest_blob(s, txn, scope_hash, &m, &data, &owned)))
			goto out;
		*len = m.len;
		*last_id = m.last_id;
	} else if (rc == MDB_CORRUPTED) {
		sg__store_set_err(s, "checkpoint %016" PRIx64 ": manifest is malformed", scope_hash);
		err = SG_ECORRUPT;
		goto out;
	} else if (rc != MDB_NOTFOUND) {
		err = sg__store_mdb_fail(s, rc, "mdb_get(manifests)");
		goto out;
	} else if ((rc = mdb_get(txn, s->checkpoints, &key, &val))) {
		err = sg__store_mdb_fail(s, rc, "mdb_get(checkpoints)");
		goto out;
	} else if (val.mv_size < sizeof(uint64_t)) {
		sg__store_set_err(s, "checkpoint %016" PRIx64 ": %zu bytes is too short", scope_hash,
			val.mv_size);
		err = SG_ECORRUPT;
		goto out;
	} else {
		*len = val.mv_size - sizeof(uint64_t);
		memcpy(last_id, val.mv_data, sizeof(uint64_t));
		data = (const char *)val.mv_data + sizeof(uint64_t);
	}
	if (owned) {
		*blob = owned;
		owned = NULL;
	} else if (!(*blob = malloc(*len ? *len : 1))) {
		*len = 0;
		sg__store_set_err(s, "out of memory");
		err = SG_ENOMEM;
	} else if (*len) {
		memcpy(*blob, data, *len);
	}
out:
	free(owned);
	sg__store_read_end(s);
	return err;
}

static int delete_checkpoint_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	MDB_val key = {sizeof(uint64_t), arg};
	int rc = mdb_del(txn, s->checkpoints, &key, NULL), mrc, crc;

	if (rc && rc != MDB_NOTFOUND)
		return sg__store_mdb_fail(s, rc, "mdb_del(checkpoints)");
	mrc = mdb_del(txn, s->manifests, &key, NULL);
	if (mrc && mrc != MDB_NOTFOUND)
		return sg__store_mdb_fail(s, mrc, "mdb_del(manifests)");
	if ((crc = drop_chunks(s, txn, *(uint64_t *)arg, 0)))
		return sg__store_mdb_fail(s, crc, "mdb_del(ckchunks)");
	return rc && mrc ? sg__store_mdb_fail(s, MDB_NOTFOUND, "delete_checkpoint") : 0;
}

int sg_store_delete_checkpoint(sg_store_t *s, uint64_t scope_hash)
{
	return sg__store_write_txn(s, delete_checkpoint_fn, &scope_hash);
}

int sg_store_iter_checkpoints(sg_store_t *s, sg_store_checkpoint_cb cb, void *ud,
			      size_t *nskipped)
{
	MDB_cursor *cur = NULL;
	MDB_val key, val;
	size_t skipped = 0;
	MDB_txn *txn;
	int rc, err;

	if (nskipped)
		*nskipped = 0;
	if ((err = sg__store_read_begin(s, &txn)))
		return err;
	/* Pass 0: chunked checkpoints; pass 1: single-record ones of the scopes
	 * that have no chunked one. */
	for (int pass = 0; pass < 2 && !err; pass++) {
		if ((rc = mdb_cursor_open(txn, pass ? s->checkpoints : s->manifests, &cur))) {
			err = sg__store_mdb_fail(s, rc, "mdb_cursor_open(checkpoints)");
			break;
		}
		for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
		     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
			uint64_t scope_hash, last_id = 0;
			const void *blob = NULL;
			void *owned = NULL;
			size_t len = 0;
			manifest_t m;
			int r;

			if (key.mv_size != sizeof(uint64_t)) {
				skipped++;
				continue;
			}
			memcpy(&scope_hash, key.mv_data, sizeof(scope_hash));
			if (pass == 0) {
				r = get_manifest(s, txn, scope_hash, &m);
				if (r == MDB_CORRUPTED) {
					sg__store_set_err(s, "manifest of %zu bytes is malformed", val.mv_size);
				} else if (r) {
					err = sg__store_mdb_fail(s, r, "mdb_get(manifests)");
					break;
				} else if ((r = manifest_blob(s, txn, scope_hash, &m, &blob,
							      &owned)) == SG_ENOMEM) {
					err = r;
					break;
				}
				if (blob) {
					last_id = m.last_id;
					len = m.len;
				} else {
					skipped++; /* the callback hears of it: blob NULL */
				}
			} else {
				if (val.mv_size < sizeof(uint64_t)) {
					skipped++;
					continue;
				}
				r = mdb_get(txn, s->manifests, &key, &(MDB_val){0, NULL});
				if (r == 0)
					continue; /* superseded by the chunked one */
				if (r != MDB_NOTFOUND) {
					err = sg__store_mdb_fail(s, r, "mdb_get(manifests)");
					break;
				}
				memcpy(&last_id, val.mv_data, sizeof(last_id));
				blob = (const char *)val.mv_data + sizeof(uint64_t);
				len = val.mv_size - sizeof(uint64_t);
			}
			s->busy = 1;
			r = cb(ud, scope_hash, last_id, blob, len);
			s->busy = 0;
			free(owned);
			if (r != 0) {
				err = r < 0 ? r : 0;
				rc = 0;
				pass = 2;
				break;
			}
		}
		if (!err && rc && rc != MDB_NOTFOUND)
			err = sg__store_mdb_fail(s, rc, "mdb_cursor_get(checkpoints)");
		mdb_cursor_close(cur);
		cur = NULL;
	}
	sg__store_read_end(s);
	if (nskipped)
		*nskipped = skipped;
	return err;
}

/* ---- writing a chunked checkpoint (possibly on another thread) ------------ */

typedef int (*ckpt_fn)(sg_store_ckpt_t *w, MDB_txn *txn, void *ctx);

static int ckpt_fail(sg_store_ckpt_t *w, int rc, const char *what)
{
	snprintf(w->err, sizeof(w->err), "checkpoint of %016" PRIx64 ": %s: %s", w->scope_hash,
		 what, mdb_strerror(rc));
	return sg__store_mdb_code(rc);
}

/*
 * sg__store_write_txn() for a checkpoint writer, which may run on a thread other than
 * the owner's and so touches nothing of the store's but the environment:
 * its messages go to w, and it never grows the map (a resize wants the
 * owner's read transaction closed), MDB_MAP_FULL is SG_EFULL. wlock is held
 * for the one transaction.
 */
static int ckpt_txn(sg_store_ckpt_t *w, ckpt_fn fn, void *ctx)
{
	sg_store_t *s = w->s;
	MDB_txn *txn;
	int rc, err;

	pthread_mutex_lock(&s->wlock);
	if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn))) {
		err = ckpt_fail(w, rc, "mdb_txn_begin");
	} else if ((err = fn(w, txn, ctx))) {
		mdb_txn_abort(txn);
	} else if ((rc = mdb_txn_commit(txn))) {
		err = ckpt_fail(w, rc, "mdb_txn_commit");
	}
	pthread_mutex_unlock(&s->wlock);
	return err;
}

static int ckpt_begin_fn(sg_store_ckpt_t *w, MDB_txn *txn, void *ctx)
{
	manifest_t m;
	int rc = get_manifest(w->s, txn, w->scope_hash, &m);

	if (rc && rc != MDB_NOTFOUND && rc != MDB_CORRUPTED)
		return ckpt_fail(w, rc, "mdb_get(manifests)");
	w->old_gen = rc ? 0 : m.gen;
	w->gen = w->old_gen + 1;
	w->clears = w->s->clears;
	/* chunks of another generation are an interrupted save's */
	if ((rc = drop_chunks(w->s, txn, w->scope_hash, w->old_gen)))
		return ckpt_fail(w, rc, "dropping unpublished chunks");
	return 0;
}

int sg_store_ckpt_begin(sg_store_t *s, uint64_t scope_hash, sg_store_ckpt_t **out,
			char *errmsg, size_t errlen)
{
	sg_store_ckpt_t *w = calloc(1, sizeof(*w));
	int err;

	*out = NULL;
	if (!w) {
		snprintf(errmsg, errlen, "out of memory");
		return SG_ENOMEM;
	}
	w->s = s;
	w->scope_hash = scope_hash;
	w->checksum = CKPT_SEED;
	if ((err = ckpt_txn(w, ckpt_begin_fn, NULL))) {
		snprintf(errmsg, errlen, "%s", w->err);
		free(w);
		return err;
	}
	*out = w;
	return 0;
}

/* Everything was deleted since w began (its chunks with it): what it would
 * publish is gone, or the index of entries that are. */
static int ckpt_cleared(sg_store_ckpt_t *w)
{
	if (w->s->clears == w->clears)
		return 0;
	snprintf(w->err, sizeof(w->err), "checkpoint of %016" PRIx64 ": the cache was cleared "
		 "during the save", w->scope_hash);
	return SG_ECANCELED;
}

/*
 * What a checkpoint leaves free in a map at its maximum size: the room the
 * gateway's own writes go on with, and that deleting the save's chunks
 * again needs (a delete copies pages too: a totally full map cannot even
 * shrink).
 */
static size_t ckpt_headroom(size_t chunk)
{
	return ((size_t)64 << 10) + 2 * chunk;
}

static size_t free_pages(sg_store_t *s);

/* Bytes the map can still give a write: its tail past the last page used
 * and, with_free, the pages freed inside it as last committed (some may be
 * held by readers still, and a chunk wants a run of them: a guess). LMDB
 * refuses a cursor on the free list inside a write transaction: free_pages()
 * reads it in a read transaction of its own. */
static int map_room(sg_store_t *s, int with_free, size_t *room)
{
	MDB_envinfo info;
	MDB_stat st;
	int rc;

	if ((rc = mdb_env_info(s->env, &info)) || (rc = mdb_env_stat(s->env, &st)))
		return rc;
	size_t used = ((size_t)info.me_last_pgno + 1) * st.ms_psize;
	*room = s->map_size > used ? s->map_size - used : 0;
	if (with_free)
		*room += free_pages(s) * st.ms_psize;
	return 0;
}

static int ckpt_chunk_fn(sg_store_ckpt_t *w, MDB_txn *txn, void *ctx)
{
	const sg_iovec_t *data = ctx;
	uint8_t k[CHUNK_KEY];
	MDB_val key = {CHUNK_KEY, k}, val = {data->len, NULL};
	size_t room;
	int rc;

	if ((rc = ckpt_cleared(w)))
		return rc;
	if (w->s->map_size >= w->s->max_map_size && map_room(w->s, 1, &room) == 0 &&
	    room < data->len + ckpt_headroom(data->len)) {
		snprintf(w->err, sizeof(w->err), "checkpoint of %016" PRIx64 ": the store map, at "
		         "its maximum size (%zu bytes), has no room for it beside the gateway's "
		         "own writes", w->scope_hash, w->s->max_map_size);
		return SG_EFULL;
	}
	chunk_key(k, w->scope_hash, w->gen, (uint32_t)w->nchunks);
	if ((rc = mdb_put(txn, w->s->ckchunks, &key, &val, MDB_RESERVE)))
		return ckpt_fail(w, rc, "mdb_put(ckchunks)");
	memcpy(val.mv_data, data->base, data->len);
	return 0;
}

int sg_store_ckpt_chunk(sg_store_ckpt_t *w, const void *data, size_t len)
{
	sg_iovec_t iov = {data, len};
	int err;

	if (!data || len == 0 || len > SG_STORE_CKPT_MAX_CHUNK || w->nchunks >= UINT32_MAX) {
		snprintf(w->err, sizeof(w->err), "checkpoint chunk of %zu bytes refused", len);
		return SG_EINVAL;
	}
	if ((err = ckpt_txn(w, ckpt_chunk_fn, &iov)))
		return err;
	w->checksum = sg_hash64(data, len, w->checksum);
	w->len += len;
	w->nchunks++;
	return 0;
}

static int ckpt_publish_fn(sg_store_ckpt_t *w, MDB_txn *txn, void *ctx)
{
	manifest_t m = {MANIFEST_VERSION, 0, w->gen, *(const uint64_t *)ctx, w->len,
			w->nchunks, 0};
	MDB_val key = {sizeof(w->scope_hash), &w->scope_hash}, val = {sizeof(m), &m};
	int rc;

	if ((rc = ckpt_cleared(w)))
		return rc;
	m.checksum = manifest_sum(&m, w->checksum);
	if ((rc = mdb_put(txn, w->s->manifests, &key, &val, 0)))
		return ckpt_fail(w, rc, "mdb_put(manifests)");
	/* a single-record checkpoint of the scope (format 1) is superseded */
	rc = mdb_del(txn, w->s->checkpoints, &key, NULL);
	return rc && rc != MDB_NOTFOUND ? ckpt_fail(w, rc, "mdb_del(checkpoints)") : 0;
}

/* One chunk of the scope's checkpoints. */
typedef struct chunk_ref {
	uint64_t gen; /* generation */
	uint32_t i;   /* chunk number */
} chunk_ref_t;

static int ckpt_drop_fn(sg_store_ckpt_t *w, MDB_txn *txn, void *ctx)
{
	const chunk_ref_t *c = ctx;
	uint8_t k[CHUNK_KEY];
	MDB_val key = {CHUNK_KEY, k};
	int rc;

	chunk_key(k, w->scope_hash, c->gen, c->i);
	rc = mdb_del(txn, w->s->ckchunks, &key, NULL);
	return rc ? ckpt_fail(w, rc, "mdb_del(ckchunks)") : 0;
}

int sg_store_ckpt_publish(sg_store_ckpt_t *w, uint64_t last_id)
{
	int err = ckpt_txn(w, ckpt_publish_fn, &last_id);

	if (err)
		return err;
	w->published = 1;
	/* The previous generation, a chunk a transaction; what is left of it
	 * after a failure (or a crash) goes with the scope's next save or open. */
	for (chunk_ref_t c = {w->old_gen, 0}; w->old_gen && ckpt_txn(w, ckpt_drop_fn, &c) == 0;
	     c.i++)
		;
	w->err[0] = '\0';
	return 0;
}

const char *sg_store_ckpt_error(const sg_store_ckpt_t *w)
{
	return w->err;
}

void sg_store_ckpt_free(sg_store_ckpt_t *w)
{
	/* An unpublished generation's chunks are dead weight: left in place
	 * they would hold the room they took (all of it, after SG_EFULL) until
	 * the scope's next save. A chunk a transaction, as they were written;
	 * one already gone (a clear) is passed over, a failure leaves the rest
	 * to the scope's next save or the next open. */
	if (w && !w->published) {
		for (chunk_ref_t c = {w->gen, 0}; c.i < w->nchunks; c.i++) {
			int err = ckpt_txn(w, ckpt_drop_fn, &c);
			if (err && err != SG_ENOTFOUND)
				break;
		}
	}
	free(w);
}

/* Pages in LMDB's free list, reusable once no reader needs them (0 if it
 * cannot be read). Its own read transaction: the owner's may be in use. */
static size_t free_pages(sg_store_t *s)
{
	MDB_cursor *cur;
	MDB_txn *txn;
	MDB_val key, val;
	size_t n = 0;

	if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn))
		return 0;
	if (mdb_cursor_open(txn, 0, &cur) == 0) { /* dbi 0: the free list */
		while (mdb_cursor_get(cur, &key, &val, MDB_NEXT) == 0) {
			size_t count; /* a record: its count of page numbers, then them */
			if (val.mv_size >= sizeof(count)) {
				memcpy(&count, val.mv_data, sizeof(count));
				n += count;
			}
		}
		mdb_cursor_close(cur);
	}
	mdb_txn_abort(txn);
	return n;
}

int sg_store_reserve(sg_store_t *s, size_t bytes)
{
	size_t room;
	int rc, err = sg__store_enter(s);

	if (err)
		return err; /* growing would close the read transaction in use */
	pthread_mutex_lock(&s->wlock);
	for (;;) {
		if ((rc = map_room(s, 0, &room))) {
			err = sg__store_mdb_fail(s, rc, "mdb_env_info");
			break;
		}
		if (room >= bytes)
			break;
		if (s->map_size >= s->max_map_size) {
			/* At the maximum the pages freed inside the map count too. */
			if (map_room(s, 1, &room) == 0 && room < bytes) {
				sg__store_set_err(s, "store map is full at its maximum size (%zu bytes)",
					s->max_map_size);
				err = SG_EFULL;
			}
			break;
		}
		if ((err = sg__store_grow(s)))
			break;
	}
	pthread_mutex_unlock(&s->wlock);
	return err;
}

