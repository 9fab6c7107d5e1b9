/* The vector index: a thin layer over FAISS's C API (see semgate/index.h).
 *
 * Both kinds wrap their FAISS index in an IndexIDMap2 so that FAISS stores
 * our int64 ids itself and can reconstruct vectors by id. Next to it we keep
 * a hash set of live ids (FAISS's C API cannot tell whether an id is present,
 * and we must refuse duplicates) and, for HNSW, a set of tombstoned ids.
 * FAISS's C API prints the message of every exception it catches to stderr;
 * we cannot stop that, only keep the message (sg_index_errmsg).
 *
 * Blob layout written by sg_index_serialize (host byte order):
 *   header   struct sg__index_blob_header (index_blob.h): magic, version,
 *            kind, dim, sizes, checksum
 *   dead     n_dead int64 tombstoned ids
 *   faiss    faiss_len bytes from faiss_write_index()
 * The checksum covers all of it, so damage anywhere is caught before FAISS
 * parses a byte; FAISS's own checks (C++ exceptions that its C API turns into
 * error codes) are the second line. FAISS 1.7.3 leaks the half-read index
 * when it throws; only a blob with a valid checksum but bad contents, i.e.
 * one crafted on purpose, gets that far.
 */
#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include "semgate/index.h"
#include "hnsw_walk.h"
#include "index_blob.h"

#define DEFAULT_HNSW_M 32
#define DEFAULT_EF_SEARCH 64
#define DEFAULT_TOMBSTONE_RATIO 0.25
#define ERRMSG_SIZE 256

/* ---- a set of non-negative int64 ids: open addressing, linear probing --- */

#define ID_EMPTY (-1)

typedef struct idset {
	int64_t *slots; /* ID_EMPTY or an id; NULL while cap == 0 */
	size_t cap;     /* number of slots, 0 or a power of two */
	size_t n;       /* ids stored */
} idset_t;

static size_t id_hash(int64_t id)
{
	/* splitmix64's finaliser: sequential ids spread over the table */
	uint64_t x = (uint64_t)id;
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return (size_t)x;
}

static void idset_free(idset_t *s)
{
	free(s->slots);
	memset(s, 0, sizeof(*s));
}

static size_t idset_find(const idset_t *s, int64_t id)
{
	size_t mask = s->cap - 1, i = id_hash(id) & mask;
	while (s->slots[i] != ID_EMPTY && s->slots[i] != id)
		i = (i + 1) & mask;
	return i;
}

static int idset_has(const idset_t *s, int64_t id)
{
	return s->cap && s->slots[idset_find(s, id)] == id;
}

static int idset_grow(idset_t *s, size_t cap)
{
	idset_t t = {0};
	t.slots = malloc(cap * sizeof(*t.slots));
	if (t.slots == NULL)
		return SG_ENOMEM;
	t.cap = cap;
	for (size_t i = 0; i < cap; i++)
		t.slots[i] = ID_EMPTY;
	for (size_t i = 0; i < s->cap; i++)
		if (s->slots[i] != ID_EMPTY) {
			t.slots[idset_find(&t, s->slots[i])] = s->slots[i];
			t.n++;
		}
	free(s->slots);
	*s = t;
	return 0;
}

/* Make room for `more` ids, keeping the load factor under 1/2. */
static int idset_reserve(idset_t *s, size_t more)
{
	size_t need = s->n + more, cap = s->cap ? s->cap : 16;
	while (cap / 2 < need) {
		if (cap > SIZE_MAX / 4 / sizeof(int64_t))
			return SG_ENOMEM;
		cap *= 2;
	}
	return cap == s->cap ? 0 : idset_grow(s, cap);
}

/* Insert an id known to be absent; room must have been reserved. */
static void idset_put(idset_t *s, int64_t id)
{
	size_t i = idset_find(s, id);
	assert(s->slots[i] == ID_EMPTY && s->n < s->cap / 2 + 1);
	s->slots[i] = id;
	s->n++;
}

static int idset_del(idset_t *s, int64_t id)
{
	if (!idset_has(s, id))
		return 0;
	size_t mask = s->cap - 1, hole = idset_find(s, id), i = hole;
	/* backward-shift deletion keeps every probe chain unbroken */
	for (;;) {
		i = (i + 1) & mask;
		if (s->slots[i] == ID_EMPTY)
			break;
		size_t home = id_hash(s->slots[i]) & mask;
		/* move slots[i] into the hole unless its home lies in (hole, i] */
		if ((i > hole && (home <= hole || home > i)) ||
		    (i < hole && (home <= hole && home > i))) {
			s->slots[hole] = s->slots[i];
			hole = i;
		}
	}
	s->slots[hole] = ID_EMPTY;
	s->n--;
	return 1;
}

/* ---- the index ---------------------------------------------------------- */

struct sg_index {
	FaissIndex *fx;               /* IndexIDMap2 owning its sub-index */
	sg_index_type_t type;         /* flat or hnsw */
	int dim;                      /* vector dimension */
	sg_index_opts_t opts;         /* with defaults filled in */
	idset_t live;                 /* ids a search may return */
	idset_t dead;                 /* HNSW: ids still in fx but removed */
	pthread_mutex_t err_lock;     /* guards err: searches run concurrently */
	char err[ERRMSG_SIZE];        /* last FAISS error message */
};

/* The one place FAISS errors become ours. */
static int faiss_fail(const sg_index_t *ix, const char *what)
{
	sg_index_t *mix = (sg_index_t *)ix; /* err is the one mutable field */
	const char *msg = faiss_get_last_error();
	pthread_mutex_lock(&mix->err_lock);
	snprintf(mix->err, sizeof(mix->err), "%s: %s", what,
		 msg ? msg : "unknown FAISS error");
	pthread_mutex_unlock(&mix->err_lock);
	return SG_EINDEX;
}

static int set_ef_search(sg_index_t *ix, FaissIndex *fx)
{
	FaissParameterSpace *ps = NULL;
	FaissIndex *sub = faiss_IndexIDMap2_sub_index(faiss_IndexIDMap2_cast(fx));
	int rc = 0;

	if (faiss_ParameterSpace_new(&ps) != 0)
		return faiss_fail(ix, "ParameterSpace");
	if (faiss_ParameterSpace_set_index_parameter(ps, sub, "efSearch",
						     ix->opts.hnsw_ef_search) != 0)
		rc = faiss_fail(ix, "set efSearch");
	faiss_ParameterSpace_free(ps);
	return rc;
}

/* A new empty FAISS index of ix's kind, wrapped in an owning IndexIDMap2. */
static int make_faiss(sg_index_t *ix, FaissIndex **out)
{
	FaissIndex *sub = NULL;
	FaissIndexIDMap2 *map = NULL;
	int rc;

	if (ix->type == SG_INDEX_FLAT) {
		if (faiss_IndexFlatIP_new_with((FaissIndexFlatIP **)&sub, ix->dim) != 0)
			return faiss_fail(ix, "IndexFlatIP");
	} else {
		char desc[32];
		snprintf(desc, sizeof(desc), "HNSW%d,Flat", ix->opts.hnsw_m);
		if (faiss_index_factory(&sub, ix->dim, desc, METRIC_INNER_PRODUCT) != 0)
			return faiss_fail(ix, "index_factory");
	}
	if (faiss_IndexIDMap2_new(&map, sub) != 0) {
		rc = faiss_fail(ix, "IndexIDMap2");
		goto fail_sub;
	}
	faiss_IndexIDMap2_set_own_fields(map, 1);
	if (ix->type == SG_INDEX_HNSW && (rc = set_ef_search(ix, (FaissIndex *)map)) != 0)
		goto fail_map;
	*out = (FaissIndex *)map;
	return 0;

fail_map:
	faiss_Index_free((FaissIndex *)map); /* owns sub now */
	return rc;
fail_sub:
	faiss_Index_free(sub);
	return rc;
}

int sg_index_new(sg_index_t **out, int dim, sg_index_type_t type,
		 const sg_index_opts_t *opts)
{
	sg_index_t *ix;
	int rc;

	if (out == NULL || dim < 1 || dim > SG_INDEX_MAX_DIM || type < 0 ||
	    type >= SG_INDEX__LAST)
		return SG_EINVAL;
	if (opts && (opts->hnsw_m < 0 || opts->hnsw_m > 256 ||
		     opts->hnsw_ef_search < 0 || opts->tombstone_ratio < 0 ||
		     opts->hnsw_search < 0 || opts->hnsw_search >= SG_INDEX_SEARCH__LAST ||
		     opts->tombstone_ratio > 1))
		return SG_EINVAL;
	if ((ix = calloc(1, sizeof(*ix))) == NULL)
		return SG_ENOMEM;
	ix->type = type;
	ix->dim = dim;
	if (opts)
		ix->opts = *opts;
	if (ix->opts.hnsw_m == 0)
		ix->opts.hnsw_m = DEFAULT_HNSW_M;
	if (ix->opts.hnsw_ef_search == 0)
		ix->opts.hnsw_ef_search = DEFAULT_EF_SEARCH;
	if (ix->opts.tombstone_ratio == 0)
		ix->opts.tombstone_ratio = DEFAULT_TOMBSTONE_RATIO;
	if (pthread_mutex_init(&ix->err_lock, NULL) != 0) {
		rc = SG_ENOMEM;
		goto fail_ix;
	}
	if ((rc = make_faiss(ix, &ix->fx)) != 0)
		goto fail_lock;
	*out = ix;
	return 0;

fail_lock:
	pthread_mutex_destroy(&ix->err_lock);
fail_ix:
	free(ix);
	return rc;
}

void sg_index_free(sg_index_t *ix)
{
	if (ix == NULL)
		return;
	faiss_Index_free(ix->fx);
	idset_free(&ix->live);
	idset_free(&ix->dead);
	pthread_mutex_destroy(&ix->err_lock);
	free(ix);
}

size_t sg_index_count(const sg_index_t *ix) { return ix->live.n; }
int sg_index_dim(const sg_index_t *ix) { return ix->dim; }
sg_index_type_t sg_index_kind(const sg_index_t *ix) { return ix->type; }

void sg_index_errmsg(const sg_index_t *ix, char *buf, size_t size)
{
	sg_index_t *mix = (sg_index_t *)ix;
	if (size == 0)
		return;
	pthread_mutex_lock(&mix->err_lock);
	snprintf(buf, size, "%s", ix->err);
	pthread_mutex_unlock(&mix->err_lock);
}

/*
 * HNSW: drop the tombstoned vectors by building a fresh graph from the live
 * ones. Costs a full rebuild, so it runs only when tombstones pass
 * opts.tombstone_ratio of the stored vectors (or an id must be reused).
 */
static int rebuild(sg_index_t *ix)
{
	FaissIndexIDMap2 *map = faiss_IndexIDMap2_cast(ix->fx);
	FaissIndex *sub = faiss_IndexIDMap2_sub_index(map), *fresh = NULL;
	idx_t *id_map = NULL, *ids = NULL;
	size_t n_stored = 0, n_live = 0;
	float *vecs = NULL;
	int rc = 0;

	faiss_IndexIDMap2_id_map(map, &id_map, &n_stored);
	if ((rc = make_faiss(ix, &fresh)) != 0)
		return rc;
	if (n_stored > 0) {
		vecs = malloc(n_stored * (size_t)ix->dim * sizeof(float));
		ids = malloc(n_stored * sizeof(*ids));
		if (vecs == NULL || ids == NULL) {
			rc = SG_ENOMEM;
			goto out;
		}
		if (faiss_Index_reconstruct_n(sub, 0, (idx_t)n_stored, vecs) != 0) {
			rc = faiss_fail(ix, "reconstruct_n");
			goto out;
		}
		/* compact in place: live vectors move towards the front */
		for (size_t i = 0; i < n_stored; i++) {
			if (idset_has(&ix->dead, id_map[i]))
				continue;
			if (n_live != i)
				memcpy(vecs + n_live * ix->dim, vecs + i * ix->dim,
				       (size_t)ix->dim * sizeof(float));
			ids[n_live++] = id_map[i];
		}
		if (n_live > 0 &&
		    faiss_Index_add_with_ids(fresh, (idx_t)n_live, vecs, ids) != 0) {
			rc = faiss_fail(ix, "add_with_ids");
			goto out;
		}
	}
	faiss_Index_free(ix->fx);
	ix->fx = fresh;
	fresh = NULL;
	idset_free(&ix->dead);
out:
	faiss_Index_free(fresh);
	free(ids);
	free(vecs);
	return rc;
}

int sg_index_add_batch(sg_index_t *ix, size_t n, const int64_t *ids,
		       const float *vecs)
{
	idset_t seen = {0};
	int rc, need_rebuild = 0;

	if (n == 0)
		return 0;
	if (n > (size_t)INT64_MAX / 2)
		return SG_EINVAL;
	/* check everything before touching anything: all or nothing */
	if ((rc = idset_reserve(&seen, n)) != 0)
		return rc;
	for (size_t i = 0; i < n; i++) {
		if (ids[i] < 0) {
			rc = SG_EINVAL;
			goto out;
		}
		if (idset_has(&ix->live, ids[i]) || idset_has(&seen, ids[i])) {
			rc = SG_EEXIST;
			goto out;
		}
		idset_put(&seen, ids[i]);
		need_rebuild |= idset_has(&ix->dead, ids[i]);
	}
	if ((rc = idset_reserve(&ix->live, n)) != 0)
		goto out;
	/* a reused tombstoned id would revive its stale vector: purge first */
	if (need_rebuild && (rc = rebuild(ix)) != 0)
		goto out;
	if (faiss_Index_add_with_ids(ix->fx, (idx_t)n, vecs, ids) != 0) {
		rc = faiss_fail(ix, "add_with_ids");
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		idset_put(&ix->live, ids[i]);
out:
	idset_free(&seen);
	return rc;
}

int sg_index_add(sg_index_t *ix, int64_t id, const float *vec)
{
	return sg_index_add_batch(ix, 1, &id, vec);
}

int sg_index_remove(sg_index_t *ix, int64_t id)
{
	FaissIDSelectorBatch *sel = NULL;
	size_t n_removed = 0;
	int rc;

	if (!idset_has(&ix->live, id))
		return SG_ENOTFOUND;
	if (ix->type == SG_INDEX_HNSW) {
		if ((rc = idset_reserve(&ix->dead, 1)) != 0)
			return rc;
		idset_put(&ix->dead, id);
		idset_del(&ix->live, id);
		/* the removal is done either way: a failed rebuild leaves valid
		 * tombstones (and its message in errmsg) and is retried next time */
		if ((double)ix->dead.n >
		    ix->opts.tombstone_ratio * (double)faiss_Index_ntotal(ix->fx))
			(void)rebuild(ix);
		return 0;
	}
	if (faiss_IDSelectorBatch_new(&sel, 1, &id) != 0)
		return faiss_fail(ix, "IDSelectorBatch");
	if (faiss_Index_remove_ids(ix->fx, (FaissIDSelector *)sel, &n_removed) != 0) {
		rc = faiss_fail(ix, "remove_ids");
		goto out;
	}
	idset_del(&ix->live, id);
	rc = 0;
out:
	faiss_IDSelector_free((FaissIDSelector *)sel);
	return rc;
}

/*
 * One query, k results (-1 labels past the end). HNSW graphs are walked by
 * sg__hnsw_search (hnsw_search.cpp: same graph and breadth, faster than
 * FAISS 1.7.3's own search); anything else, or SG_INDEX_SEARCH_FAISS, goes to
 * FAISS. Nonzero means a FAISS error.
 */
static int search_one(const sg_index_t *ix, const float *query, idx_t k, float *dist,
		      idx_t *labels)
{
	if (ix->type == SG_INDEX_HNSW && ix->opts.hnsw_search != SG_INDEX_SEARCH_FAISS) {
		int n = sg__hnsw_search(ix->fx, query, (int)k, ix->opts.hnsw_ef_search,
					labels, dist);
		if (n >= 0) {
			for (idx_t i = n; i < k; i++)
				labels[i] = -1;
			return 0;
		}
	}
	return faiss_Index_search(ix->fx, 1, query, k, dist, labels);
}

int sg_index_search(const sg_index_t *ix, const float *query, int k,
		    int64_t *ids_out, float *scores_out, int *n_out)
{
	idx_t stored = faiss_Index_ntotal(ix->fx), want;
	idx_t *labels = NULL;
	float *dist = NULL;
	int rc = 0, n = 0;

	*n_out = 0;
	if (k < 1 || k > SG_INDEX_MAX_K)
		return SG_EINVAL;
	if (stored == 0 || ix->live.n == 0)
		return 0;
	/*
	 * Tombstones occupy result slots: ask for a margin more and widen the
	 * search while dead entries crowd live ones out of the top k.
	 */
	want = k;
	if (ix->dead.n > 0)
		want += (idx_t)SG_MIN(ix->dead.n, (size_t)k + 16);
	for (;;) {
		if (want > stored)
			want = stored;
		labels = malloc((size_t)want * sizeof(*labels));
		dist = malloc((size_t)want * sizeof(*dist));
		if (labels == NULL || dist == NULL) {
			rc = SG_ENOMEM;
			goto out;
		}
		if (search_one(ix, query, want, dist, labels) != 0) {
			rc = faiss_fail(ix, "search");
			goto out;
		}
		n = 0;
		for (idx_t i = 0; i < want && n < k; i++) {
			if (labels[i] < 0 || idset_has(&ix->dead, labels[i]))
				continue;
			ids_out[n] = labels[i];
			if (scores_out)
				scores_out[n] = dist[i];
			n++;
		}
		if (n == k || want == stored || ix->dead.n == 0)
			break;
		want *= 2;
		free(labels);
		free(dist);
		labels = NULL;
		dist = NULL;
	}
	*n_out = n;
out:
	free(labels);
	free(dist);
	return rc;
}

int sg_index_search_batch(const sg_index_t *ix, size_t n, const float *queries,
			  int k, int64_t *ids_out, float *scores_out)
{
	int rc = 0;

	if (k < 1 || k > SG_INDEX_MAX_K)
		return SG_EINVAL;
	if (n == 0)
		return 0;
	if (ix->dead.n == 0 && n <= (size_t)INT64_MAX / (size_t)k) {
		/* no tombstones to filter: one call, one matrix product */
		float *dist = scores_out;
		if (dist == NULL &&
		    (dist = malloc(n * (size_t)k * sizeof(*dist))) == NULL)
			return SG_ENOMEM;
		if (faiss_Index_search(ix->fx, (idx_t)n, queries, k, dist,
				       ids_out) != 0)
			rc = faiss_fail(ix, "search");
		if (dist != scores_out)
			free(dist);
		return rc;
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		int got = 0;
		int64_t *ids = ids_out + i * (size_t)k;
		float *scores = scores_out ? scores_out + i * (size_t)k : NULL;
		rc = sg_index_search(ix, queries + i * (size_t)ix->dim, k, ids,
				     scores, &got);
		for (int j = got; j < k; j++) {
			ids[j] = -1;
			if (scores)
				scores[j] = -INFINITY;
		}
	}
	return rc;
}

/* ---- persistence --------------------------------------------------------- */

/* The checksum of a whole blob, computed as if its checksum field were 0. */
static uint64_t blob_checksum(const struct sg__index_blob_header *hdr,
			      const void *dead, size_t dead_len,
			      const void *faiss_data, size_t faiss_len)
{
	struct sg__index_blob_header h = *hdr;
	uint64_t sum;

	h.checksum = 0;
	sum = sg__index_checksum(SG__INDEX_CHECKSUM_SEED, &h, sizeof(h));
	sum = sg__index_checksum(sum, dead, dead_len);
	return sg__index_checksum(sum, faiss_data, faiss_len);
}

int sg_index_serialize(const sg_index_t *ix, sg_buf_t *out)
{
	struct sg__index_blob_header hdr = {0};
	char *faiss_data = NULL;
	size_t faiss_len = 0, dead_len = ix->dead.n * sizeof(int64_t), off;
	int64_t *dead = NULL;
	FILE *f;
	int rc = 0;

	if ((f = open_memstream(&faiss_data, &faiss_len)) == NULL)
		return SG_ENOMEM;
	if (faiss_write_index(ix->fx, f) != 0) {
		fclose(f);
		rc = faiss_fail(ix, "write_index");
		goto out;
	}
	if (fclose(f) != 0) {
		rc = SG_EIO;
		goto out;
	}
	if (dead_len && (dead = malloc(dead_len)) == NULL) {
		rc = SG_ENOMEM;
		goto out;
	}
	off = 0;
	for (size_t i = 0; i < ix->dead.cap; i++)
		if (ix->dead.slots[i] != ID_EMPTY)
			dead[off++] = ix->dead.slots[i];

	hdr.magic = SG__INDEX_BLOB_MAGIC;
	hdr.version = SG__INDEX_BLOB_VERSION;
	hdr.type = (uint32_t)ix->type;
	hdr.dim = (uint32_t)ix->dim;
	hdr.n_dead = ix->dead.n;
	hdr.faiss_len = faiss_len;
	hdr.checksum = blob_checksum(&hdr, dead, dead_len, faiss_data, faiss_len);
	/* reserve first so the appends cannot fail half-way */
	if ((rc = sg_buf_reserve(out, sizeof(hdr) + dead_len + faiss_len)) != 0)
		goto out;
	sg_buf_append(out, &hdr, sizeof(hdr));
	if (dead_len)
		sg_buf_append(out, dead, dead_len);
	sg_buf_append(out, faiss_data, faiss_len);
out:
	free(dead);
	free(faiss_data);
	return rc;
}

/* Is fx (just read from a blob) an IndexIDMap2 of ix's kind and dimension? */
static int check_loaded(const sg_index_t *ix, FaissIndex *fx)
{
	FaissIndexIDMap2 *map = faiss_IndexIDMap2_cast(fx);
	FaissIndex *sub;

	if (map == NULL || (sub = faiss_IndexIDMap2_sub_index(map)) == NULL)
		return SG_ECORRUPT;
	if (faiss_Index_d(fx) != ix->dim ||
	    faiss_Index_metric_type(fx) != METRIC_INNER_PRODUCT)
		return SG_ECORRUPT;
	/* a flat index downcasts to IndexFlatIP; HNSW's storage does not */
	if ((faiss_IndexFlatIP_cast(sub) != NULL) != (ix->type == SG_INDEX_FLAT))
		return SG_ECORRUPT;
	/* a graph is walked without bounds checks: check it once here */
	if (ix->type == SG_INDEX_HNSW && sg__hnsw_check(fx) != 0)
		return SG_ECORRUPT;
	return 0;
}

int sg_index_load(sg_index_t *ix, const void *data, size_t len)
{
	const unsigned char *p = data;
	struct sg__index_blob_header hdr;
	idset_t live = {0}, dead = {0};
	FaissIndex *fx = NULL;
	idx_t *id_map = NULL;
	size_t n_stored = 0, dead_len;
	FILE *f;
	int rc;

	if (len < sizeof(hdr))
		return SG_ECORRUPT;
	memcpy(&hdr, p, sizeof(hdr));
	if (hdr.magic != SG__INDEX_BLOB_MAGIC || hdr.version != SG__INDEX_BLOB_VERSION)
		return SG_ECORRUPT;
	if (hdr.n_dead > (len - sizeof(hdr)) / sizeof(int64_t))
		return SG_ECORRUPT;
	dead_len = (size_t)hdr.n_dead * sizeof(int64_t);
	if (hdr.faiss_len != len - sizeof(hdr) - dead_len || hdr.faiss_len == 0)
		return SG_ECORRUPT;
	if (blob_checksum(&hdr, p + sizeof(hdr), dead_len,
			  p + sizeof(hdr) + dead_len, hdr.faiss_len) != hdr.checksum)
		return SG_ECORRUPT;
	if (hdr.type != (uint32_t)ix->type || hdr.dim != (uint32_t)ix->dim)
		return SG_EMISMATCH;

	/* fmemopen only reads through the pointer in "rb" mode */
	f = fmemopen((void *)(p + sizeof(hdr) + dead_len), hdr.faiss_len, "rb");
	if (f == NULL)
		return SG_ENOMEM;
	if (faiss_read_index(f, 0, &fx) != 0) {
		faiss_fail(ix, "read_index");
		fclose(f);
		return SG_ECORRUPT;
	}
	fclose(f);
	if ((rc = check_loaded(ix, fx)) != 0)
		goto fail;

	if ((rc = idset_reserve(&dead, hdr.n_dead)) != 0)
		goto fail;
	for (uint64_t i = 0; i < hdr.n_dead; i++) {
		int64_t id;
		memcpy(&id, p + sizeof(hdr) + i * sizeof(id), sizeof(id));
		if (id < 0 || idset_has(&dead, id)) {
			rc = SG_ECORRUPT;
			goto fail;
		}
		idset_put(&dead, id);
	}
	if (ix->type == SG_INDEX_FLAT && dead.n > 0) {
		rc = SG_ECORRUPT;
		goto fail;
	}
	faiss_IndexIDMap2_id_map(faiss_IndexIDMap2_cast(fx), &id_map, &n_stored);
	if ((rc = idset_reserve(&live, n_stored)) != 0)
		goto fail;
	for (size_t i = 0; i < n_stored; i++) {
		if (id_map[i] < 0 || idset_has(&live, id_map[i])) {
			rc = SG_ECORRUPT; /* our writer never stores these */
			goto fail;
		}
		if (!idset_has(&dead, id_map[i]))
			idset_put(&live, id_map[i]);
	}
	if (ix->type == SG_INDEX_HNSW && (rc = set_ef_search(ix, fx)) != 0)
		goto fail;

	faiss_Index_free(ix->fx);
	ix->fx = fx;
	idset_free(&ix->live);
	idset_free(&ix->dead);
	ix->live = live;
	ix->dead = dead;
	return 0;

fail:
	idset_free(&live);
	idset_free(&dead);
	faiss_Index_free(fx);
	return rc;
}

uint64_t sg__index_checksum(uint64_t h, const void *data, size_t len)
{
	/* FNV-1a over 64-bit words, then the tail bytes: fast, order sensitive */
	const unsigned char *p = data;
	for (; len >= 8; p += 8, len -= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		h = (h ^ w) * 0x100000001b3ULL;
		h ^= h >> 29;
	}
	for (; len > 0; p++, len--)
		h = (h ^ *p) * 0x100000001b3ULL;
	return h;
}

int sg_index_blob_type(const void *data, size_t len, sg_index_type_t *type)
{
	struct sg__index_blob_header hdr;

	if (data == NULL || len < sizeof(hdr))
		return SG_ECORRUPT;
	memcpy(&hdr, data, sizeof(hdr));
	if (hdr.magic != SG__INDEX_BLOB_MAGIC || hdr.type >= SG_INDEX__LAST)
		return SG_ECORRUPT;
	*type = (sg_index_type_t)hdr.type;
	return 0;
}
