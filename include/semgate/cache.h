/* semgate: the semantic cache engine.
 *
 * Entries live in LMDB (cache/store.c); each hard scope has its own FAISS
 * index (index/) over the entries' vectors, so a semantic match can never
 * cross a scope however many scopes there are. An in-memory LRU list and
 * size counters enforce max_entries / max_bytes; expired entries leave the
 * store and the index together. Calls are serialised by a mutex, and
 * sg_cache_search() may run on other threads alongside them.
 *
 * Checkpoints of the indexes are written by a thread of the cache's own (see
 * sg_cache_maintain): while a scope's index is being saved, changes to it
 * are held back and applied after, so a new entry of that scope is found by
 * exact lookups at once and by semantic ones once the save is done.
 */
#ifndef SEMGATE_CACHE_H
#define SEMGATE_CACHE_H

#include <stdint.h>

#include "semgate/cache_key.h"
#include "semgate/index.h"
#include "semgate/store.h"

typedef struct sg_cache sg_cache_t;

/** Where a checkpoint save is when it calls sg_cache_opts_t.ckpt_hook. */
typedef enum sg_cache_ckpt_stage {
	SG_CACHE_CKPT_SERIALISED = 0, /* an index is serialised, nothing written yet */
	SG_CACHE_CKPT_CHUNK,          /* a chunk of it is written */
	SG_CACHE_CKPT_HELD_ADD,       /* adds held during the save are to be applied
	                                 (under the cache's lock: do not block) */
	SG_CACHE_CKPT__LAST           /* sentinel */
} sg_cache_ckpt_stage_t;

typedef struct sg_cache_opts {
	const char *path;           /* LMDB directory */
	const char *embedder_id;    /* identity stored with the data */
	int dim;                    /* vector dimension */
	sg_index_type_t index_type; /* per-scope index kind (unless auto_hnsw) */
	int auto_hnsw;              /* flat, then HNSW from hnsw_min_entries on */
	size_t hnsw_min_entries;    /* with auto_hnsw: entries that make a scope HNSW */
	sg_index_opts_t index_opts; /* HNSW parameters */
	uint64_t max_entries;       /* 0: unlimited */
	uint64_t max_bytes;         /* 0: unlimited */
	size_t map_size;            /* initial LMDB map size (0: default) */
	size_t max_map_size;        /* LMDB map size cap (0: default) */
	int rebuild;                /* drop incompatible or corrupt data */
	int verify;                 /* read every page once at open (damage check) */
	int verify_hits;            /* check semantic candidates' texts (cache/verify.c) */
	int verify_structure_only;  /* with verify_hits: weigh only structure (numbers,
	                             * negation, question kind, opposites, word order,
	                             * context), not unmatched words: for a sentence
	                             * model, which judges words itself (QUALITY.md) */
	size_t ckpt_chunk_bytes;    /* checkpoint chunk: one write transaction (0: 1 MiB) */
	/* For tests: called on the saving thread at each sg_cache_ckpt_stage_t
	 * (it may block there); non-zero abandons that save (its chunks are
	 * deleted), or at SG_CACHE_CKPT_HELD_ADD makes the adds fail as an
	 * index error would. NULL in the server. */
	int (*ckpt_hook)(void *ud, int stage);
	void *ckpt_hook_ud;         /* its argument */
} sg_cache_opts_t;

/** A hit: an owned copy of the entry. Free with sg_cache_hit_free(). */
typedef struct sg_cache_hit {
	float similarity;   /* 1 for exact hits */
	sg_entry_t entry;   /* entry.m.id, .response, .created_s, usage ... */
} sg_cache_hit_t;

typedef struct sg_cache_stats {
	uint64_t entries;        /* live entries */
	uint64_t bytes;          /* their stored bytes (records + vectors) */
	uint64_t scopes;         /* scopes with an index */
	uint64_t index_vectors;  /* vectors across all indexes */
	uint64_t evicted;        /* entries evicted for size since start */
	uint64_t expired;        /* entries removed on expiry since start */
	uint64_t file_bytes;     /* data.mdb size */
	const char *index_type;  /* "flat", "hnsw" or "auto" */
	uint64_t hnsw_scopes;    /* scopes whose index is HNSW */
	uint64_t unsaved_changes; /* index changes not in a checkpoint yet: what a
	                           * start would recover from the stored vectors */
	int checkpoint_in_progress; /* the saver thread has a checkpoint under way */
	uint64_t checkpoint_last_ms; /* how long the last one took (0: none yet) */
	uint64_t scope_collisions; /* candidates skipped: another scope under the same id */
	int store_full;          /* the last store failed on a full map (map_size_mb) */
	uint64_t store_failures; /* stores that failed since start */
} sg_cache_stats_t;

/** The secret under which this cache's scope and exact ids are derived:
 * pass it as sg_cache_key_opts_t.hash_key. Valid while the cache is open. */
const sg_hash_key_t *sg_cache_hash_key(const sg_cache_t *c);

/**
 * Open (or create) the cache: opens the store, loads index checkpoints and
 * indexes every entry written after them, drops expired entries. On failure
 * returns SG_EMISMATCH / SG_ECORRUPT / SG_EIO / ... with a message in err.
 */
int sg_cache_open(sg_cache_t **out, const sg_cache_opts_t *o, int64_t now_s, char *err,
                  size_t errlen);
/** Wait for a checkpoint under way, checkpoint every unsaved change (on
 * the calling thread), sync and free. NULL is fine. */
void sg_cache_close(sg_cache_t *c);

/** Exact match on k (scope and prompt byte for byte). SG_ENOTFOUND on a miss. */
int sg_cache_lookup_exact(sg_cache_t *c, const sg_cache_key_t *k, int64_t now_s,
                          sg_cache_hit_t *hit);
/**
 * Nearest entry of k's scope to vec with similarity >= threshold.
 * SG_ENOTFOUND on a miss; *best gets the best similarity seen (or -1).
 */
int sg_cache_lookup_semantic(sg_cache_t *c, const sg_cache_key_t *k, const float *vec,
                             float threshold, int64_t now_s, sg_cache_hit_t *hit, float *best);
void sg_cache_hit_free(sg_cache_hit_t *h);

/** Candidates per search: the nearest may be expired or gone. */
#define SG_CACHE_CANDIDATES 4

/** The nearest entries of a scope to a vector, best first. */
typedef struct sg_cache_candidates {
	int64_t ids[SG_CACHE_CANDIDATES];  /* entry ids */
	float scores[SG_CACHE_CANDIDATES]; /* cosine similarities */
	int n;                             /* how many */
} sg_cache_candidates_t;

/**
 * The vector-search half of a semantic lookup: safe on any thread, alongside
 * the loop thread's use of the cache (searches run on libuv's thread pool so
 * the event loop never waits on one). Errors: SG_EINDEX.
 */
int sg_cache_search(sg_cache_t *c, uint64_t scope_hash, const float *vec,
                    sg_cache_candidates_t *out);

/**
 * The other half, on the owning thread: the best live candidate at or above
 * threshold becomes the hit (as sg_cache_lookup_semantic()).
 */
int sg_cache_resolve(sg_cache_t *c, const sg_cache_key_t *k, const sg_cache_candidates_t *cand,
                     float threshold, int64_t now_s, sg_cache_hit_t *hit, float *best);

/** Store a fresh answer. ttl_s 0: never expires. Evicts LRU entries past the caps. */
int sg_cache_store(sg_cache_t *c, const sg_cache_key_t *k, const float *vec, const char *ns,
                   const char *model, sg_iovec_t response, uint32_t prompt_tokens,
                   uint32_t completion_tokens, int64_t now_s, int64_t ttl_s, uint64_t *id_out);

/** Delete one entry. SG_ENOTFOUND. */
int sg_cache_delete(sg_cache_t *c, uint64_t id);
/** Delete every entry of a namespace (ns NULL: all); *n gets the count. */
int sg_cache_clear(sg_cache_t *c, const char *ns, size_t *n);

/**
 * Periodic work on the owning thread: expiry sweep, hit counters to the
 * store, and (when `checkpoint`) checkpoints of changed indexes: small ones
 * whenever changed, those of 4,096 entries and more once 1/64 of them changed
 * (sg_cache_close saves every change). A checkpoint is handed to the cache's
 * saver thread and this returns at once; a later call finishes it (applies
 * the changes held back meanwhile, accounts it), and one that asks for a
 * checkpoint while one is under way gets it once that one is finished.
 * Errors from starting the checkpoint (SG_ENOMEM); a failed save is logged
 * and tried again at the next checkpoint.
 */
int sg_cache_maintain(sg_cache_t *c, int64_t now_s, int checkpoint);

/**
 * Write the hit counters gathered since the last flush to the store, in one
 * write transaction (sg_cache_maintain does it too). Each hit entry costs the
 * transaction a page; the server calls this ~20 ms after a hit, so that no
 * single write holds up its loop for long (once a second, it took ~20 ms at
 * 5,000 different hits a second).
 */
void sg_cache_flush_hits(sg_cache_t *c);
/** fsync the store. Safe from a worker thread while the cache is in use. */
int sg_cache_sync(sg_cache_t *c);

void sg_cache_stats(sg_cache_t *c, sg_cache_stats_t *out);

/** Page through entries (id order, after after_id), for the admin API. */
int sg_cache_list(sg_cache_t *c, uint64_t after_id, size_t limit, sg_store_iter_cb cb, void *ud);
/** Read one entry by id (owned copy). */
int sg_cache_get(sg_cache_t *c, uint64_t id, sg_entry_t *out);

#endif
