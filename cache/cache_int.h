/* Private to the cache engine (cache/cache.c) and its saver thread
 * (cache/cache_saver.c): the scopes, the LRU, the saver's job, and the
 * functions each half calls in the other. */
#ifndef SEMGATE_CACHE_INT_H
#define SEMGATE_CACHE_INT_H

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

/* cache.c */
int sg__cache_drop_entry(sg_cache_t *c, node_t *n);
void sg__cache_maybe_upgrade(sg_cache_t *c, uint64_t hash, scope_t *s);
int sg__cache_push(void **arr, size_t *n, size_t *cap, size_t size, const void *item);
/* cache_saver.c */
size_t sg__cache_ckpt_estimate(const sg_cache_t *c, const scope_t *s);
int sg__cache_checkpoint_scopes(sg_cache_t *c);
void sg__cache_save_reap(sg_cache_t *c, int wait);
int sg__cache_save_start(sg_cache_t *c);

#endif
