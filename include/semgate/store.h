/* semgate: the semantic cache's persistent store (LMDB).
 *
 * One LMDB environment in one directory (`cache.path`) holds every cache
 * entry, its embedding vector, an exact-match key index and checkpoints of
 * the vector index (opaque blobs the store does not interpret):
 *
 *   meta         "format", "embedder", "dim", "next_id", "bytes"
 *   entries      id (uint64 big-endian, so keys sort by id) -> record
 *   vectors      id (big-endian) -> float[dim] (host floats)
 *   exact        exact_hash -> ids (sorted duplicates; collisions possible)
 *   checkpoints  scope_hash -> last_id (uint64) + blob (single-record form)
 *   manifests    scope_hash -> generation, last_id, length, chunk count and a
 *                checksum over these and the chunks, of a chunked checkpoint
 *                (the form the cache writes)
 *   ckchunks     scope_hash, generation (big-endian), chunk number -> bytes
 *
 * A chunked checkpoint is written a chunk per write transaction and then
 * published by one small transaction that writes its manifest; the previous
 * generation's chunks are deleted after. A crash before the manifest keeps
 * the previous checkpoint; chunks no manifest names are deleted at open
 * (when the map has room for the deletions: a full one still opens).
 * Files of store format 1 (without the chunked form) open and are upgraded.
 *
 * Durability: the environment is opened with MDB_NOSYNC | MDB_NOMETASYNC, so
 * a commit costs microseconds and never waits for the disk. Killing the
 * process (even with SIGKILL) never loses a committed transaction: its pages
 * are already in the OS page cache. A power loss can undo the transactions
 * since the last sg_store_sync(), which the server calls from a timer; LMDB
 * never leaves a torn database either way.
 *
 * Threads: a store is used from one thread at a time (the event loop), with
 * two exceptions: sg_store_sync(), and one chunked checkpoint writer
 * (sg_store_ckpt_*) at a time, which run on other threads alongside it. The
 * callbacks of sg_store_iter() and sg_store_iter_checkpoints() run inside a
 * read transaction and must not call back into the store (SG_EINVAL).
 *
 * Damage: every record carries a checksum, and a record that fails it (or
 * whose lengths do not add up) reads as SG_ECORRUPT. LMDB itself has no
 * checksums and trusts its B-tree pages: a truncated file is refused at open,
 * but damage inside a page can crash LMDB unless the store is opened with
 * opts->verify, which reads everything once in a child process first.
 *
 * The files are in host byte order and float format: they move between
 * machines of the same architecture only.
 */
#ifndef SEMGATE_STORE_H
#define SEMGATE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "semgate/common.h"
#include "semgate/hash.h"

typedef struct sg_store sg_store_t;

/** Default initial map size: 1 GiB. */
#define SG_STORE_DEFAULT_MAP_SIZE ((size_t)1 << 30)
/** Largest record (header + all variable parts) sg_store_put() accepts. */
#define SG_STORE_MAX_RECORD ((size_t)256 << 20)
/** Longest embedder identity string. */
#define SG_STORE_MAX_EMBEDDER_ID 1024
/** Largest vector dimension. */
#define SG_STORE_MAX_DIM 65536

/** Open options. Zero-initialise, then set embedder_id and dim. */
typedef struct sg_store_opts {
	size_t map_size;         /* initial map size in bytes; 0: 1 GiB */
	size_t max_map_size;     /* the map grows (doubling) up to this on MDB_MAP_FULL,
				    then puts fail with SG_EFULL; 0: 4 x map_size */
	const char *embedder_id; /* identity of what made the vectors (e.g.
				    "local-v1:dim=384"); borrowed for the call; required */
	uint32_t dim;            /* floats per vector, 1..SG_STORE_MAX_DIM */
	int rebuild;             /* non-zero: delete the directory's data.mdb and
				    lock.mdb first and start empty (also recovers
				    from a corrupt or foreign file) */
	int verify;              /* non-zero: before use, read every page in a forked
				    child process, so that a damaged B-tree (on which
				    LMDB itself may crash) gives SG_ECORRUPT instead;
				    costs one read of the file at start-up */
} sg_store_opts_t;

/** Entry flag: a vector is stored under the entry's id. */
#define SG_ENTRY_F_VECTOR 0x1u

/** What sg_store_put() stores. All slices are borrowed for the call. */
typedef struct sg_entry_in {
	sg_iovec_t ns;              /* namespace (tenant / cache partition) */
	sg_iovec_t model;           /* model name the response came from */
	sg_iovec_t scope_json;      /* canonical JSON of the hard scope a semantic
				       match must never cross */
	sg_iovec_t prompt;          /* the text that was embedded */
	sg_iovec_t response;        /* the stored OpenAI response body */
	uint64_t scope_hash;        /* sg_hash64 of the scope (groups entries per index) */
	uint64_t exact_hash;        /* exact-match key; indexed in `exact` */
	int64_t created_s;          /* Unix time of creation */
	int64_t expires_s;          /* Unix time of expiry; 0 = never */
	uint32_t prompt_tokens;     /* usage reported by the upstream */
	uint32_t completion_tokens; /* usage reported by the upstream */
} sg_entry_in_t;

/**
 * An entry's metadata and content as slices. Who owns the bytes the slices
 * point at is said by whatever hands out the struct.
 */
typedef struct sg_entry_meta {
	uint64_t id;                /* assigned by sg_store_put, increasing, never reused */
	uint32_t flags;             /* SG_ENTRY_F_* */
	int64_t created_s;          /* Unix time of creation */
	int64_t expires_s;          /* Unix time of expiry; 0 = never */
	uint64_t hits;              /* number of sg_store_touch calls */
	int64_t last_hit_s;         /* time given to the last sg_store_touch; 0 = never */
	uint64_t scope_hash;        /* as stored */
	uint64_t exact_hash;        /* as stored */
	uint32_t prompt_tokens;     /* as stored */
	uint32_t completion_tokens; /* as stored */
	sg_iovec_t ns;              /* namespace */
	sg_iovec_t model;           /* model */
	sg_iovec_t scope_json;      /* canonical scope JSON */
	sg_iovec_t prompt;          /* embedded text */
	sg_iovec_t response;        /* response body */
} sg_entry_meta_t;

/**
 * An entry copied out of the store by sg_store_get(). Its slices point into
 * `mem`, and each is followed by a NUL byte (not counted in len), so they may
 * be used as C strings when they hold no NUL themselves. Free with
 * sg_entry_free().
 */
typedef struct sg_entry {
	sg_entry_meta_t m; /* slices point into mem */
	char *mem;         /* owned: one allocation for all variable parts */
} sg_entry_t;

/** Counters from sg_store_stats(). */
typedef struct sg_store_stats {
	uint64_t entries;     /* number of entries */
	uint64_t bytes;       /* sum of record + vector sizes of all entries */
	uint64_t checkpoints; /* number of checkpoints */
	uint64_t next_id;     /* id the next sg_store_put will assign */
	uint64_t file_bytes;  /* size of data.mdb on disk (LMDB files never shrink) */
	uint64_t map_size;    /* current map size */
	uint64_t max_map_size; /* the map will not grow past this */
} sg_store_stats_t;

/**
 * Open the store in directory `dir`, creating it (mode 0700, one level) and
 * the environment if missing. On success *out is owned by the caller: close
 * with sg_store_close().
 *
 * Errors, each with a one-line explanation in errmsg (if not NULL; always
 * NUL-terminated, truncated to errlen):
 *   SG_EMISMATCH  the store was built with another embedder identity or dim,
 *                 or by another store format version, or the directory holds
 *                 some other LMDB database (use opts->rebuild to start over);
 *   SG_ECORRUPT   data.mdb is not an LMDB file, is truncated, or (with
 *                 opts->verify) its pages are damaged;
 *   SG_EIO        dir is not a directory, permissions, disk errors;
 *   SG_EINVAL     bad opts; SG_ENOMEM; SG_ESTORE (other LMDB errors).
 */
int sg_store_open(sg_store_t **out, const char *dir, const sg_store_opts_t *opts,
		  char *errmsg, size_t errlen);

/** Close the store and free it. Does not fsync (call sg_store_sync() first
 * if durability against power loss matters). NULL is a no-op. */
void sg_store_close(sg_store_t *s);

/**
 * Text describing the last failure of an operation on s, including LMDB's own
 * message where there was one (e.g. "mdb_put(entries): MDB_MAP_FULL: ...").
 * Borrowed: valid until the next call on s. Never NULL ("" if none).
 */
const char *sg_store_last_error(const sg_store_t *s);

/**
 * Insert an entry, its vector (dim floats, or NULL for an entry that is only
 * matched exactly) and its exact key in one write transaction, assigning the
 * next id (written to *id_out if not NULL). The map grows if needed.
 * Errors: SG_EINVAL (NULL slice base with len > 0), SG_ETOOBIG (record over
 * SG_STORE_MAX_RECORD), SG_EFULL (the map is at max_map_size), SG_ESTORE,
 * SG_EIO. Nothing is stored on error.
 */
int sg_store_put(sg_store_t *s, const sg_entry_in_t *e, const float *vec, uint64_t *id_out);

/**
 * Copy entry `id` into *out (owned by the caller: sg_entry_free()). On error
 * *out is zeroed and needs no free.
 * Errors: SG_ENOTFOUND, SG_ECORRUPT (the record fails validation), SG_ENOMEM.
 */
int sg_store_get(sg_store_t *s, uint64_t id, sg_entry_t *out);

/** Free what sg_store_get() copied; e is left zeroed. NULL is a no-op. */
void sg_entry_free(sg_entry_t *e);

/**
 * Copy the vector of entry `id` into vec (caller's buffer of dim floats).
 * Errors: SG_ENOTFOUND (no such entry, or stored without a vector),
 * SG_ECORRUPT (wrong size).
 */
int sg_store_get_vector(sg_store_t *s, uint64_t id, float *vec);

/**
 * Write to ids[0..max) the ids stored under exact_hash, in increasing order;
 * *n is set to how many were written (0 when there are none: not an error).
 * Different texts can share a hash, and an id may point to an entry deleted
 * as corrupt: callers verify with sg_store_get().
 */
int sg_store_find_exact(sg_store_t *s, uint64_t exact_hash, uint64_t *ids, size_t max,
			size_t *n);

/**
 * Record a hit on entry `id`: hits + 1, last_hit_s = now_s (one small write
 * transaction). Errors: SG_ENOTFOUND, SG_ECORRUPT, SG_EFULL, SG_ESTORE.
 */
int sg_store_touch(sg_store_t *s, uint64_t id, int64_t now_s);

/** One entry's hits since the last write, for sg_store_touch_batch(). */
typedef struct sg_store_touch {
	uint64_t id;    /* entry */
	uint64_t hits;  /* hits to add */
	int64_t now_s;  /* time of the last of them */
} sg_store_touch_t;

/**
 * Record many entries' hits in one write transaction (entries deleted
 * meanwhile are skipped). Errors: SG_EFULL, SG_ESTORE.
 */
int sg_store_touch_batch(sg_store_t *s, const sg_store_touch_t *items, size_t n);

/**
 * Delete entry `id` with its vector and exact key. A corrupt record is
 * deleted too (its exact key, unreadable, stays until its hash is reused;
 * sg_store_find_exact callers already verify). Errors: SG_ENOTFOUND.
 */
int sg_store_delete(sg_store_t *s, uint64_t id);

/** Called by sg_store_delete_where() for each deleted entry, after commit. */
typedef void (*sg_store_deleted_cb)(void *ud, uint64_t id, uint64_t scope_hash);

/**
 * Delete, in one transaction, every entry (ns == NULL) or those whose
 * namespace equals ns, with their vectors and exact keys. Deleting all also
 * deletes every checkpoint and corrupt record, and makes a checkpoint being
 * written meanwhile fail (SG_ECANCELED). After the commit, cb (if not
 * NULL) is called once per deleted entry, so the caller can drop it from its
 * in-memory index; cb may call into the store. *ndeleted (if not NULL) gets
 * the count. With a namespace, corrupt records are left alone.
 */
int sg_store_delete_where(sg_store_t *s, const char *ns, sg_store_deleted_cb cb, void *ud,
			  size_t *ndeleted);

/**
 * Called by sg_store_iter() per entry. m and its slices, and vec (dim floats,
 * NULL if the entry has no vector), are borrowed until the callback returns.
 * Return 0 to go on, > 0 to stop (sg_store_iter returns 0), < 0 to stop and
 * make sg_store_iter return that value.
 */
typedef int (*sg_store_iter_cb)(void *ud, const sg_entry_meta_t *m, const float *vec);

/**
 * Visit entries with id > after_id in increasing id order, at most `limit` of
 * them (0: all), in one read transaction (a consistent snapshot). Used at
 * start-up to rebuild the in-memory index without re-embedding (after_id 0)
 * and for the admin API's paged listing (after_id = last id of the previous
 * page). Records failing validation (or whose vector is missing or of the
 * wrong size) are skipped and counted in *nskipped (if not NULL).
 */
int sg_store_iter(sg_store_t *s, uint64_t after_id, size_t limit, sg_store_iter_cb cb,
		  void *ud, size_t *nskipped);

/**
 * Store (replace) the checkpoint of scope_hash in the single-record form: an
 * opaque blob (len bytes, copied) and the highest entry id it includes, in
 * one write transaction (the whole blob holds LMDB's writer slot: the cache
 * writes the chunked form, sg_store_ckpt_*). Replaces a chunked one too.
 * Errors: SG_EFULL, SG_ETOOBIG (len over 4 GiB - 9), SG_ESTORE.
 */
int sg_store_put_checkpoint(sg_store_t *s, uint64_t scope_hash, uint64_t last_id,
			    const void *blob, size_t len);

/**
 * Copy the checkpoint of scope_hash (the chunked one if there is one): *blob
 * is malloc'ed and owned by the caller (free()); it is non-NULL on success
 * even when *len is 0.
 * Errors: SG_ENOTFOUND, SG_ECORRUPT (a chunk missing or damaged), SG_ENOMEM.
 */
int sg_store_get_checkpoint(sg_store_t *s, uint64_t scope_hash, uint64_t *last_id,
			    void **blob, size_t *len);

/** Delete the checkpoint of scope_hash, in either form. Errors: SG_ENOTFOUND. */
int sg_store_delete_checkpoint(sg_store_t *s, uint64_t scope_hash);

/**
 * Called by sg_store_iter_checkpoints() per checkpoint; blob is borrowed
 * until the callback returns. blob is NULL (len 0, last_id 0) for a chunked
 * checkpoint that cannot be used (a chunk missing or of the wrong size, a
 * checksum mismatch, a malformed manifest): sg_store_last_error() says why,
 * and the caller rebuilds what it held. Return value as for sg_store_iter_cb.
 */
typedef int (*sg_store_checkpoint_cb)(void *ud, uint64_t scope_hash, uint64_t last_id,
				      const void *blob, size_t len);

/**
 * Visit every checkpoint in one read transaction: the chunked ones in
 * scope_hash order (their chunks copied into one buffer when there are
 * several), then, in scope_hash order, the single-record ones of scopes
 * without a chunked one. Malformed ones are counted in *nskipped (if not
 * NULL): single-record ones are skipped, chunked ones reach cb with blob NULL.
 */
int sg_store_iter_checkpoints(sg_store_t *s, sg_store_checkpoint_cb cb, void *ud,
			      size_t *nskipped);

/** Largest chunk sg_store_ckpt_chunk() accepts. */
#define SG_STORE_CKPT_MAX_CHUNK ((size_t)256 << 20)

/** A chunked checkpoint being written. */
typedef struct sg_store_ckpt sg_store_ckpt_t;

/**
 * Start writing a new generation of scope_hash's checkpoint; chunks of
 * generations no manifest names (an interrupted save) are deleted first.
 *
 * The sg_store_ckpt_* calls may run on a thread other than the store's
 * owner, alongside the owner's calls (one writer at a time per store): each
 * is a short write transaction of its own, serialised with the owner's
 * writes, and holds LMDB's writer slot for one chunk at most. They never grow
 * the map: SG_EFULL means the owner should call sg_store_reserve() and save
 * again. On success *out is owned by the caller (sg_store_ckpt_free); on
 * failure err gets a message. Errors: SG_ENOMEM, SG_ESTORE, SG_EFULL.
 */
int sg_store_ckpt_begin(sg_store_t *s, uint64_t scope_hash, sg_store_ckpt_t **out,
			char *err, size_t errlen);

/**
 * Append one chunk (len in [1, SG_STORE_CKPT_MAX_CHUNK] bytes, copied) in a
 * write transaction of its own. Errors: SG_EINVAL, SG_EFULL, SG_ESTORE,
 * SG_ECANCELED (everything was deleted since sg_store_ckpt_begin(): see
 * sg_store_ckpt_publish()).
 */
int sg_store_ckpt_chunk(sg_store_ckpt_t *w, const void *data, size_t len);

/**
 * Publish what the chunks hold as scope_hash's checkpoint (the blob of the
 * chunks in order, up to entry id last_id): one small transaction writes the
 * manifest (and drops a single-record checkpoint of the scope). The previous
 * generation's chunks are then deleted, a transaction each; a failure there
 * is not reported (the next save or open deletes them).
 * Errors: SG_EFULL, SG_ESTORE; SG_ECANCELED when sg_store_delete_where()
 * deleted everything since sg_store_ckpt_begin() (the chunks written before
 * it went with it, and the blob indexes entries that are gone). The previous
 * checkpoint stays on failure.
 */
int sg_store_ckpt_publish(sg_store_ckpt_t *w, uint64_t last_id);

/** The message of w's last failure. Borrowed from w. */
const char *sg_store_ckpt_error(const sg_store_ckpt_t *w);

/**
 * Free w. A writer not published (it failed, or its save is abandoned) first
 * deletes the chunks it wrote, a write transaction each, so that they do not
 * hold room in the map; what a failure there leaves (and what a crash
 * leaves) goes with the scope's next sg_store_ckpt_begin() or the next open.
 */
void sg_store_ckpt_free(sg_store_ckpt_t *w);

/** The store's secret (random, made with the store) under which scope and
 * exact-match ids are derived: sg_cache_key_build() with it gives the ids
 * this store's entries carry. */
void sg_store_hash_key(const sg_store_t *s, sg_hash_key_t *out);

/**
 * Grow the map (owner only, up to max_map_size) until `bytes` more fit past
 * its last used page; at the maximum size, the pages freed inside the map
 * count too. Errors: SG_EFULL (they do not fit at the maximum), SG_ESTORE,
 * SG_EINVAL (called from an iteration callback).
 */
int sg_store_reserve(sg_store_t *s, size_t bytes);

/**
 * Flush committed transactions to disk (fsync: can take 100 ms and more).
 * The one call that may run on another thread while the owner goes on using
 * the store, so that the event loop never waits for the disk. SG_EIO.
 */
int sg_store_sync(sg_store_t *s);

/** Fill *out with counters (see sg_store_stats_t). */
int sg_store_stats(sg_store_t *s, sg_store_stats_t *out);

#endif
