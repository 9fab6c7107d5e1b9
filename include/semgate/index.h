/* semgate: the vector index (FAISS, inner product on L2-normalised vectors).
 *
 * An sg_index_t maps caller-chosen int64 ids (>= 0) to vectors of a fixed
 * dimension and answers "which k live entries are nearest to this query".
 * Vectors must be L2-normalised by the caller, so the inner product FAISS
 * computes is the cosine similarity, in [-1, 1], higher is closer.
 *
 * Two kinds:
 *   SG_INDEX_FLAT  exact search (IndexIDMap2 over IndexFlatIP). Cheap to
 *                  create (a few hundred bytes plus 4*dim bytes a vector),
 *                  O(n) per search; the right choice up to ~50k vectors.
 *   SG_INDEX_HNSW  approximate search (IndexIDMap2 over IndexHNSWFlat).
 *                  FAISS's HNSW cannot remove vectors, so removals become
 *                  tombstones that searches filter out; once tombstones exceed
 *                  a fraction of the stored vectors the graph is rebuilt from
 *                  the live vectors.
 *
 * Scopes (tenants, API keys, models...): the cache keeps ONE INDEX PER SCOPE
 * rather than one shared index with a scope filter. A flat index is cheap
 * enough that thousands of small ones cost little, an entry can then never be
 * returned for another scope by construction (no filter to forget, and no
 * top-k starved by other scopes' neighbours), and a scope is dropped by
 * freeing its index. A scope that grows large can be switched to HNSW on its
 * own. FAISS 1.7.3's C API has no search-time id filter, which rules the
 * other design out anyway.
 *
 * Threads: searches, count and serialize only read, and may run concurrently
 * with each other; add, remove and load modify, and the caller must serialise
 * them against everything else (e.g. a rwlock per index). FAISS's multi-threading
 * is not used for single queries.
 *
 * Errors: FAISS failures (C++ exceptions turned into error codes by its C API)
 * are translated once, here, into SG_EINDEX; the message is kept in the index
 * and copied out by sg_index_errmsg().
 */
#ifndef SEMGATE_INDEX_H
#define SEMGATE_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "semgate/buf.h"
#include "semgate/common.h"

typedef struct sg_index sg_index_t;

/** Kind of index: see the top of this file. */
typedef enum sg_index_type {
	SG_INDEX_FLAT = 0, /* exact */
	SG_INDEX_HNSW,     /* approximate, graph based */
	SG_INDEX__LAST     /* sentinel */
} sg_index_type_t;

/**
 * How single-query searches visit an HNSW graph (FAISS builds and owns it):
 * semgate's own walk (index/hnsw_search.cpp, the default), or FAISS 1.7.3's
 * search. Both return exact similarities; they differ in speed and, slightly,
 * in which near neighbours they find. The choice is there for comparisons.
 */
typedef enum sg_index_search {
	SG_INDEX_SEARCH_WALK = 0, /* default */
	SG_INDEX_SEARCH_FAISS,
	SG_INDEX_SEARCH__LAST     /* sentinel */
} sg_index_search_t;

/** Tuning knobs; zero-initialise and set what you need, 0 means default. */
typedef struct sg_index_opts {
	int hnsw_m;              /* HNSW links per node (default 32), fixed at creation */
	int hnsw_ef_search;      /* HNSW search breadth (default 64); higher = better recall */
	double tombstone_ratio;  /* HNSW: rebuild when dead/stored exceeds this (default 0.25) */
	int hnsw_search;         /* HNSW: how a single query searches the graph, one of
	                          * sg_index_search_t (default: semgate's walk) */
} sg_index_opts_t;

/** Largest dimension accepted. */
#define SG_INDEX_MAX_DIM 4096
/** Largest k accepted by sg_index_search. */
#define SG_INDEX_MAX_K 1024

/**
 * Create an empty index of `dim`-dimensional vectors.
 * opts may be NULL for defaults. On success *out is owned by the caller, who
 * frees it with sg_index_free().
 * Errors: SG_EINVAL (dim outside [1, SG_INDEX_MAX_DIM], bad type or opts),
 * SG_ENOMEM, SG_EINDEX (FAISS refused; the message is lost with the index).
 */
int sg_index_new(sg_index_t **out, int dim, sg_index_type_t type,
		 const sg_index_opts_t *opts);

/** Free the index and everything it holds. NULL is a no-op. */
void sg_index_free(sg_index_t *ix);

/**
 * Add one vector under `id` (>= 0). vec (dim floats) is copied.
 * Errors: SG_EINVAL (negative id), SG_EEXIST (id is already live),
 * SG_ENOMEM, SG_EINDEX.
 */
int sg_index_add(sg_index_t *ix, int64_t id, const float *vec);

/**
 * Add n vectors at once (faster than n single adds for HNSW): ids[i] goes with
 * vecs[i*dim .. i*dim+dim-1]. Both arrays are copied. All-or-nothing with
 * respect to the id checks: if any id is negative, live, or repeated within
 * the batch, nothing is added.
 * Errors: as sg_index_add.
 */
int sg_index_add_batch(sg_index_t *ix, size_t n, const int64_t *ids,
		       const float *vecs);

/**
 * Remove the vector stored under `id`.
 * Errors: SG_ENOTFOUND (no live entry with that id), SG_ENOMEM, SG_EINDEX.
 */
int sg_index_remove(sg_index_t *ix, int64_t id);

/**
 * Find the (up to) k live entries nearest to `query` (dim floats, normalised).
 * Writes *n_out <= k results, best first, into ids_out[] and scores_out[]
 * (cosine similarity); both arrays are caller-owned with room for k.
 * scores_out may be NULL. An empty index gives *n_out = 0 and returns 0.
 * Errors: SG_EINVAL (k outside [1, SG_INDEX_MAX_K]), SG_ENOMEM, SG_EINDEX.
 */
int sg_index_search(const sg_index_t *ix, const float *query, int k,
		    int64_t *ids_out, float *scores_out, int *n_out);

/**
 * Search n queries at once (queries: n*dim floats): for query i, results go
 * to ids_out[i*k ..] and scores_out[i*k ..] (caller-owned, n*k each; scores
 * may be NULL), best first, padded with id -1 when fewer than k live entries
 * exist. Uses one matrix multiplication for all queries on a flat index, so
 * it is much faster than n single searches for bulk work (benchmarks,
 * re-imports); the cache's request path uses sg_index_search.
 * Errors: as sg_index_search.
 */
int sg_index_search_batch(const sg_index_t *ix, size_t n, const float *queries,
			  int k, int64_t *ids_out, float *scores_out);

/** Number of live entries. */
size_t sg_index_count(const sg_index_t *ix);

/** Dimension the index was created with. */
int sg_index_dim(const sg_index_t *ix);

/** Kind the index was created with. */
sg_index_type_t sg_index_kind(const sg_index_t *ix);

/**
 * Append the index (vectors, ids, tombstones, settings) to `out` as a
 * self-describing, checksummed blob for sg_index_load(). The buffer is the
 * caller's; its cap applies (SG_ETOOBIG, buffer left as it was).
 * Errors: SG_ETOOBIG, SG_ENOMEM, SG_EIO, SG_EINDEX.
 */
int sg_index_serialize(const sg_index_t *ix, sg_buf_t *out);

/**
 * Replace the contents of `ix` with a blob made by sg_index_serialize().
 * The bytes are borrowed for the duration of the call. On any error ix is
 * left exactly as it was.
 * Errors: SG_ECORRUPT (truncated, damaged or not an index blob),
 * SG_EMISMATCH (valid blob of another dimension or kind), SG_ENOMEM.
 */
int sg_index_load(sg_index_t *ix, const void *data, size_t len);

/**
 * Copy the message of the last FAISS error on this index ("" if none) into
 * buf (size bytes, always NUL-terminated when size > 0). Safe to call while
 * other threads search.
 */
void sg_index_errmsg(const sg_index_t *ix, char *buf, size_t size);

/**
 * The kind of index a serialized blob holds (to create a matching index
 * before sg_index_load). SG_ECORRUPT if it is not a blob.
 */
int sg_index_blob_type(const void *data, size_t len, sg_index_type_t *type);

/**
 * Threads FAISS may use for the calling thread's work (OpenMP). Batch builds
 * at start-up gain from several; single-query searches on the event loop run
 * best on one, without waking (and spinning) OpenMP workers.
 */
void sg_index_set_threads(int n);

#endif
