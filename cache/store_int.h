/* Private to the store (cache/store.c, cache/store_ckpt.c): the environment,
 * the record layout, and the helpers both halves use. See store.c for the
 * transaction rules (write functions are re-runnable) and store_ckpt.c for
 * the checkpoints. */
#ifndef SEMGATE_STORE_INT_H
#define SEMGATE_STORE_INT_H

#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "semgate/cache_key.h"
#include "semgate/hash.h"
#include "semgate/log.h"
#include "semgate/store.h"

/* Bumped whenever the layout of any database or record changes. Format 1
 * lacked the chunked checkpoints (manifests, ckchunks), format 2 the secret
 * scope ids are derived with (meta "hash_key": ids were an unkeyed hash that a
 * client could collide): both are upgraded in place at open (a new secret,
 * every entry's ids derived again, checkpoints dropped: indexes are rebuilt
 * from the stored vectors once). */
#define STORE_FORMAT 3u
#define STORE_FORMAT_NO_KEY 2u
#define STORE_FORMAT_NO_CHUNKS 1u
#define REHASH_BATCH 1024u /* entries whose ids are derived again per write transaction */
/* Version field of each entry record. */
#define REC_VERSION 1u

/* MDB_INTEGERKEY / MDB_INTEGERDUP need keys the size of size_t. */
_Static_assert(sizeof(size_t) == sizeof(uint64_t), "the store needs a 64-bit host");

enum { PART_NS, PART_MODEL, PART_SCOPE, PART_PROMPT, PART_RESPONSE, PART_LAST };

/* The fixed head of an entry record, followed by the PART_LAST variable
 * parts in enum order. Host byte order; no padding (asserted below). Records
 * in LMDB pages are only 2-byte aligned, so it is always memcpy'd. */
typedef struct rec_hdr {
	uint32_t version;           /* REC_VERSION */
	uint32_t flags;             /* SG_ENTRY_F_* */
	int64_t created_s;          /* Unix time of creation */
	int64_t expires_s;          /* Unix time of expiry; 0 = never */
	uint64_t hits;              /* touch count */
	int64_t last_hit_s;         /* time of the last touch; 0 = never */
	uint64_t scope_hash;        /* hard scope key */
	uint64_t exact_hash;        /* exact-match key */
	uint32_t prompt_tokens;     /* upstream usage */
	uint32_t completion_tokens; /* upstream usage */
	uint32_t len[PART_LAST];    /* byte length of each variable part */
	uint32_t checksum;          /* rec_checksum(): catches damaged bytes that
				       LMDB, which has no checksums, would return */
} rec_hdr_t;
_Static_assert(sizeof(rec_hdr_t) == 88, "rec_hdr_t must have no padding");

struct sg_store {
	MDB_env *env;         /* the environment */
	MDB_dbi meta;         /* string key -> value */
	MDB_dbi entries;      /* big-endian id -> record */
	MDB_dbi vectors;      /* big-endian id -> float[dim] */
	MDB_dbi exact;        /* exact_hash -> ids (integer dups) */
	MDB_dbi checkpoints;  /* scope_hash -> last_id + blob (single-record, format 1) */
	MDB_dbi manifests;    /* scope_hash -> manifest_t of a chunked checkpoint */
	MDB_dbi ckchunks;     /* chunk_key() -> bytes of a chunked checkpoint */
	pthread_mutex_t wlock; /* write transactions and map resizes: the owner's and
				  a checkpoint writer's on another thread */
	MDB_txn *rtxn;        /* reusable read txn, reset when idle; NULL until first read */
	char *dir;            /* owned copy of the directory path */
	uint32_t dim;         /* floats per vector */
	size_t map_size;      /* current map size */
	size_t max_map_size;  /* growth limit */
	int map_full;         /* the last LMDB failure was MDB_MAP_FULL */
	int busy;             /* inside an iteration callback: re-entry refused */
	uint64_t clears;      /* deletions of everything (wlock): a checkpoint writer
				 begun before one must not publish */
	char *scratch;        /* owned buffer for rewriting records (touch) */
	size_t scratch_cap;   /* bytes allocated in scratch */
	float *vecbuf;        /* owned, dim floats: aligned copy of a stored vector */
	sg_hash_key_t hash_key; /* the secret scope and exact ids are derived under */
	int rehash;           /* entries still carry ids of an older format: derive again */
	char err[512];        /* last error message */
};

typedef int (*txn_fn)(sg_store_t *s, MDB_txn *txn, void *ctx);

/* store.c */
void sg__store_set_err(sg_store_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sg__store_mdb_code(int rc);
int sg__store_mdb_fail(sg_store_t *s, int rc, const char *what);
void sg__store_key_be(uint8_t k[8], uint64_t id);
uint64_t sg__store_key_id(const MDB_val *k);
int sg__store_enter(sg_store_t *s);
int sg__store_read_begin(sg_store_t *s, MDB_txn **txn);
void sg__store_read_end(sg_store_t *s);
int sg__store_grow(sg_store_t *s);
int sg__store_write_txn(sg_store_t *s, txn_fn fn, void *ctx);
/* store_ckpt.c: delete chunks no manifest refers to (a crash mid-checkpoint) */
int sg__store_drop_orphans(sg_store_t *s);

#endif
