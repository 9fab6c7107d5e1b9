/* The semantic cache's LMDB store: see include/semgate/store.h for the layout
 * and the durability model.
 *
 * Every write goes through write_txn(), which runs a function in one write
 * transaction and, when LMDB reports MDB_MAP_FULL, aborts, doubles the map
 * (up to max_map_size) and runs it again: write functions must therefore be
 * re-runnable, with no side effect outside the transaction. Reads reuse one
 * reset read transaction (renewing costs no allocation). Every MDB_* code is
 * translated in one place, mdb_fail(), which also keeps LMDB's message for
 * sg_store_last_error().
 */
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

static int drop_orphans(sg_store_t *s);

static const char *const meta_format = "format", *const meta_embedder = "embedder",
			 *const meta_dim = "dim", *const meta_next_id = "next_id",
			 *const meta_bytes = "bytes", *const meta_hash_key = "hash_key",
			 *const meta_rehash = "rehash";

static void set_err(sg_store_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_err(sg_store_t *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
}

/* The one translation of LMDB's codes (MDB_* and errno values) to SG_E*. */
static int mdb_code(int rc)
{
	int err;

	switch (rc) {
	case MDB_NOTFOUND:
		err = SG_ENOTFOUND;
		break;
	case MDB_MAP_FULL:
		err = SG_EFULL;
		break;
	case MDB_KEYEXIST:
		err = SG_EEXIST;
		break;
	case MDB_CORRUPTED:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
	case MDB_PAGE_NOTFOUND:
		err = SG_ECORRUPT;
		break;
	case MDB_INCOMPATIBLE:
		err = SG_EMISMATCH;
		break;
	case ENOMEM:
		err = SG_ENOMEM;
		break;
	default:
		err = rc > 0 ? SG_EIO : SG_ESTORE; /* errno values are positive */
		break;
	}
	return err;
}

static int mdb_fail(sg_store_t *s, int rc, const char *what)
{
	s->map_full = rc == MDB_MAP_FULL;
	set_err(s, "%s: %s", what, mdb_strerror(rc));
	return mdb_code(rc);
}

static void key_be(uint8_t k[8], uint64_t id)
{
	for (int i = 7; i >= 0; i--, id >>= 8)
		k[i] = (uint8_t)id;
}

static uint64_t key_id(const MDB_val *k)
{
	const uint8_t *p = k->mv_data;
	uint64_t id = 0;
	for (int i = 0; i < 8; i++)
		id = id << 8 | p[i];
	return id;
}

static size_t round_up(size_t n, size_t to)
{
	return n % to ? n + (to - n % to) : n;
}

/* ---- transactions ---------------------------------------------------- */

static int enter(sg_store_t *s)
{
	if (s->busy) {
		set_err(s, "store called from inside its own iteration callback");
		return SG_EINVAL;
	}
	return 0;
}

static int read_begin(sg_store_t *s, MDB_txn **txn)
{
	int err = enter(s), rc;

	if (err)
		return err;
	for (int tries = 0;; tries++) {
		rc = s->rtxn ? mdb_txn_renew(s->rtxn)
			     : mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
		if (rc == 0) {
			*txn = s->rtxn;
			return 0;
		}
		if (s->rtxn) {
			mdb_txn_abort(s->rtxn);
			s->rtxn = NULL;
		}
		/* Another process grew the map: adopt its size and retry once. */
		if (rc != MDB_MAP_RESIZED || tries > 0)
			return mdb_fail(s, rc, "mdb_txn_begin(read)");
		pthread_mutex_lock(&s->wlock);
		rc = mdb_env_set_mapsize(s->env, 0);
		pthread_mutex_unlock(&s->wlock);
		if (rc)
			return mdb_fail(s, rc, "mdb_env_set_mapsize");
	}
}

static void read_end(sg_store_t *s)
{
	if (s->rtxn)
		mdb_txn_reset(s->rtxn);
}

static void refresh_map_size(sg_store_t *s)
{
	MDB_envinfo info;
	if (mdb_env_info(s->env, &info) == 0)
		s->map_size = info.me_mapsize;
}

static int grow(sg_store_t *s)
{
	size_t next;
	int rc;

	if (s->map_size >= s->max_map_size) {
		set_err(s, "store map is full at its maximum size (%zu bytes)", s->max_map_size);
		return SG_EFULL;
	}
	next = s->map_size > s->max_map_size / 2 ? s->max_map_size : s->map_size * 2;
	/* mdb_env_set_mapsize wants no transaction in this process. */
	if (s->rtxn) {
		mdb_txn_abort(s->rtxn);
		s->rtxn = NULL;
	}
	if ((rc = mdb_env_set_mapsize(s->env, next)))
		return mdb_fail(s, rc, "mdb_env_set_mapsize");
	refresh_map_size(s);
	return 0;
}

/* Run fn in a write transaction and commit; grow the map and re-run it on
 * MDB_MAP_FULL. wlock keeps a checkpoint writer's transaction (another
 * thread) out of the way of a resize, which wants no transaction open. */
static int write_txn_locked(sg_store_t *s, txn_fn fn, void *ctx);

static int write_txn(sg_store_t *s, txn_fn fn, void *ctx)
{
	int err = enter(s);

	if (err)
		return err;
	pthread_mutex_lock(&s->wlock);
	err = write_txn_locked(s, fn, ctx);
	pthread_mutex_unlock(&s->wlock);
	return err;
}

static int write_txn_locked(sg_store_t *s, txn_fn fn, void *ctx)
{
	int err;

	for (int resized = 0;;) {
		MDB_txn *txn;
		int rc = mdb_txn_begin(s->env, NULL, 0, &txn);

		if (rc == MDB_MAP_RESIZED && !resized++) {
			if ((rc = mdb_env_set_mapsize(s->env, 0)))
				return mdb_fail(s, rc, "mdb_env_set_mapsize");
			refresh_map_size(s);
			continue;
		}
		if (rc)
			return mdb_fail(s, rc, "mdb_txn_begin");
		s->map_full = 0;
		err = fn(s, txn, ctx);
		if (err) {
			mdb_txn_abort(txn);
		} else if ((rc = mdb_txn_commit(txn))) {
			err = mdb_fail(s, rc, "mdb_txn_commit");
		}
		if (err != SG_EFULL || !s->map_full)
			return err;
		if ((err = grow(s)))
			return err;
	}
}

/* ---- meta ------------------------------------------------------------ */

static int meta_get(sg_store_t *s, MDB_txn *txn, const char *name, MDB_val *v)
{
	MDB_val k = {strlen(name), (void *)name};
	int rc = mdb_get(txn, s->meta, &k, v);
	if (rc == MDB_NOTFOUND) {
		set_err(s, "cache at %s: meta '%s' is missing", s->dir, name);
		return SG_ECORRUPT; /* meta keys always exist in a good store */
	}
	return rc ? mdb_fail(s, rc, "mdb_get(meta)") : 0;
}

static int meta_get_int(sg_store_t *s, MDB_txn *txn, const char *name, void *out, size_t n)
{
	MDB_val v;
	int err = meta_get(s, txn, name, &v);
	if (err)
		return err;
	if (v.mv_size != n) {
		set_err(s, "cache at %s: meta '%s' has %zu bytes, not %zu", s->dir, name,
			v.mv_size, n);
		return SG_ECORRUPT;
	}
	memcpy(out, v.mv_data, n);
	return 0;
}

static int meta_put(sg_store_t *s, MDB_txn *txn, const char *name, const void *p, size_t n)
{
	MDB_val k = {strlen(name), (void *)name}, v = {n, (void *)p};
	int rc = mdb_put(txn, s->meta, &k, &v, 0);
	return rc ? mdb_fail(s, rc, "mdb_put(meta)") : 0;
}

/* bytes += delta, never below 0. */
static int bytes_add(sg_store_t *s, MDB_txn *txn, int64_t delta)
{
	uint64_t bytes;
	int err = meta_get_int(s, txn, meta_bytes, &bytes, sizeof(bytes));
	if (err)
		return err;
	if (delta < 0 && (uint64_t)-delta > bytes)
		bytes = 0;
	else
		bytes += (uint64_t)delta;
	return meta_put(s, txn, meta_bytes, &bytes, sizeof(bytes));
}

/* ---- records ----------------------------------------------------------- */

/* Low 32 bits of XXH64 over the header (checksum field zeroed) and the
 * variable parts (len bytes at parts). ~0.1 us per KiB. */
static uint32_t rec_checksum(const rec_hdr_t *h, const void *parts, size_t len)
{
	rec_hdr_t z = *h;
	z.checksum = 0;
	return (uint32_t)sg_hash64(parts, len, sg_hash64(&z, sizeof(z), 0));
}

/* Parse and validate a record: m's slices borrow v's bytes. */
static int rec_decode(sg_store_t *s, const MDB_val *v, uint64_t id, sg_entry_meta_t *m)
{
	sg_iovec_t *parts[PART_LAST] = {&m->ns, &m->model, &m->scope_json, &m->prompt,
					&m->response};
	const char *p = v->mv_data;
	uint64_t total = 0;
	rec_hdr_t h;

	if (v->mv_size < sizeof(h))
		goto bad;
	memcpy(&h, p, sizeof(h));
	if (h.version != REC_VERSION)
		goto bad;
	for (int i = 0; i < PART_LAST; i++)
		total += h.len[i];
	if (total != v->mv_size - sizeof(h) || h.checksum != rec_checksum(&h, p + sizeof(h), total))
		goto bad;
	m->id = id;
	m->flags = h.flags;
	m->created_s = h.created_s;
	m->expires_s = h.expires_s;
	m->hits = h.hits;
	m->last_hit_s = h.last_hit_s;
	m->scope_hash = h.scope_hash;
	m->exact_hash = h.exact_hash;
	m->prompt_tokens = h.prompt_tokens;
	m->completion_tokens = h.completion_tokens;
	p += sizeof(h);
	for (int i = 0; i < PART_LAST; i++) {
		parts[i]->base = p;
		parts[i]->len = h.len[i];
		p += h.len[i];
	}
	return 0;
bad:
	set_err(s, "entry %" PRIu64 ": record of %zu bytes is corrupt or truncated", id,
		v->mv_size);
	return SG_ECORRUPT;
}

static int entry_copy(const sg_entry_meta_t *m, sg_entry_t *out)
{
	const sg_iovec_t *src[PART_LAST] = {&m->ns, &m->model, &m->scope_json, &m->prompt,
					    &m->response};
	sg_iovec_t *dst[PART_LAST] = {&out->m.ns, &out->m.model, &out->m.scope_json,
				      &out->m.prompt, &out->m.response};
	size_t size = PART_LAST; /* one NUL after each part */
	char *p;

	for (int i = 0; i < PART_LAST; i++)
		size += src[i]->len;
	if (!(out->mem = malloc(size)))
		return SG_ENOMEM;
	out->m = *m;
	p = out->mem;
	for (int i = 0; i < PART_LAST; i++) {
		if (src[i]->len)
			memcpy(p, src[i]->base, src[i]->len);
		p[src[i]->len] = '\0';
		dst[i]->base = p;
		dst[i]->len = src[i]->len;
		p += src[i]->len + 1;
	}
	return 0;
}

/* ---- open / close -------------------------------------------------------- */

static int prepare_dir(sg_store_t *s, int rebuild)
{
	static const char *const files[] = {"data.mdb", "lock.mdb"};
	char path[4096];
	struct stat sb;

	if (stat(s->dir, &sb) == 0) {
		if (!S_ISDIR(sb.st_mode)) {
			set_err(s, "cache path %s exists and is not a directory", s->dir);
			return SG_EIO;
		}
	} else if (errno == ENOENT) {
		if (mkdir(s->dir, 0700) != 0) {
			set_err(s, "cannot create cache directory %s: %s", s->dir,
				strerror(errno));
			return SG_EIO;
		}
	} else {
		set_err(s, "cannot access cache directory %s: %s", s->dir, strerror(errno));
		return SG_EIO;
	}
	for (size_t i = 0; i < SG_ARRAY_SIZE(files); i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", s->dir, files[i]) >=
		    sizeof(path)) {
			set_err(s, "cache path %s is too long", s->dir);
			return SG_EINVAL;
		}
		if (rebuild && unlink(path) != 0 && errno != ENOENT) {
			set_err(s, "cannot remove %s to rebuild the cache: %s", path,
				strerror(errno));
			return SG_EIO;
		}
		if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
			set_err(s, "%s is not a regular file", path);
			return SG_EIO;
		}
	}
	return 0;
}

static int env_open(sg_store_t *s)
{
	MDB_envinfo info;
	MDB_stat st;
	struct stat sb;
	int fd, rc, dead;

	if ((rc = mdb_env_create(&s->env)))
		return mdb_fail(s, rc, "mdb_env_create");
	if ((rc = mdb_env_set_maxdbs(s->env, 8)) ||
	    (rc = mdb_env_set_mapsize(s->env, s->map_size)))
		return mdb_fail(s, rc, "mdb_env_set_mapsize");
	rc = mdb_env_open(s->env, s->dir, MDB_NOSYNC | MDB_NOMETASYNC | MDB_NOTLS, 0600);
	if (rc) {
		int err = mdb_fail(s, rc, "mdb_env_open");
		if (err == SG_ECORRUPT)
			set_err(s, "cache at %s: data.mdb is not a usable LMDB file (%s): "
				"remove the directory or start with --rebuild-cache",
				s->dir, mdb_strerror(rc));
		else
			set_err(s, "cannot open the cache at %s: %s", s->dir, mdb_strerror(rc));
		return err;
	}
	/* LMDB maps the whole file and would take SIGBUS on a page past a
	 * truncated end: refuse a file shorter than its header says. */
	if ((rc = mdb_env_info(s->env, &info)) || (rc = mdb_env_stat(s->env, &st)) ||
	    (rc = mdb_env_get_fd(s->env, &fd)))
		return mdb_fail(s, rc, "mdb_env_info");
	if (fstat(fd, &sb) != 0) {
		set_err(s, "cannot stat %s/data.mdb: %s", s->dir, strerror(errno));
		return SG_EIO;
	}
	if ((uint64_t)sb.st_size < ((uint64_t)info.me_last_pgno + 1) * st.ms_psize) {
		set_err(s, "cache at %s: data.mdb is truncated (%lld bytes, it needs %" PRIu64
			"): remove the directory or start with --rebuild-cache",
			s->dir, (long long)sb.st_size,
			((uint64_t)info.me_last_pgno + 1) * st.ms_psize);
		return SG_ECORRUPT;
	}
	/* Free reader slots left by a killed process. */
	mdb_reader_check(s->env, &dead);
	refresh_map_size(s);
	return 0;
}

/* The child's side of verify_pages(): read every key and value of every
 * database, the free list (dbi 0) and the main one included. Exit status. */
static int verify_walk(const char *dir, size_t map_size)
{
	static const char *const names[] = {"meta",        "entries",   "vectors", "exact",
					    "checkpoints", "manifests", "ckchunks"};
	volatile uint64_t sink = 0; /* keeps the reads from being optimised away */
	MDB_env *env;
	MDB_txn *txn;

	if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 8) ||
	    mdb_env_set_mapsize(env, map_size) ||
	    mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0600) ||
	    mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))
		return 1;
	for (int i = -2; i < (int)SG_ARRAY_SIZE(names); i++) {
		MDB_cursor *cur;
		MDB_val k, v;
		MDB_dbi dbi = 0; /* i == -2: the free list */
		int rc = 0;

		if (i >= -1)
			rc = mdb_dbi_open(txn, i < 0 ? NULL : names[i], 0, &dbi);
		if (rc == MDB_NOTFOUND)
			continue;
		if (rc || mdb_cursor_open(txn, dbi, &cur))
			return 1;
		for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
		     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
			sink ^= sg_hash64(k.mv_data, k.mv_size, sg_hash64(v.mv_data, v.mv_size, 0));
		mdb_cursor_close(cur);
		if (rc != MDB_NOTFOUND)
			return 1;
	}
	(void)sink;
	return 0;
}

/* LMDB trusts its pages: a damaged B-tree can make it read wild memory.
 * Walk everything once in a child process, which dies instead of us. */
static int verify_pages(sg_store_t *s)
{
	pid_t pid = fork();
	int status;

	if (pid < 0) {
		set_err(s, "cannot fork to verify the cache at %s: %s", s->dir, strerror(errno));
		return SG_EIO;
	}
	if (pid == 0) {
		/* Die quietly on bad memory: not via the server's (or ASan's) handler. */
		signal(SIGSEGV, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		_exit(verify_walk(s->dir, s->map_size));
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			set_err(s, "waitpid: %s", strerror(errno));
			return SG_EIO;
		}
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFSIGNALED(status))
		set_err(s, "cache at %s: data.mdb is damaged (reading its pages crashed a "
			"check process: signal %d): remove the directory or start with "
			"--rebuild-cache", s->dir, WTERMSIG(status));
	else
		set_err(s, "cache at %s: data.mdb is damaged (reading its pages failed): "
			"remove the directory or start with --rebuild-cache", s->dir);
	return SG_ECORRUPT;
}

typedef struct open_ctx {
	const sg_store_opts_t *opts; /* borrowed */
} open_ctx_t;

static int open_dbi(sg_store_t *s, MDB_txn *txn, const char *name, unsigned flags,
		    MDB_dbi *dbi)
{
	int rc = mdb_dbi_open(txn, name, flags | MDB_CREATE, dbi);
	if (rc == MDB_INCOMPATIBLE) {
		set_err(s, "%s holds an LMDB database that is not a semgate cache ('%s' has "
			"another type): remove the directory or start with --rebuild-cache",
			s->dir, name);
		return SG_EMISMATCH;
	}
	return rc ? mdb_fail(s, rc, "mdb_dbi_open") : 0;
}

static int check_identity(sg_store_t *s, MDB_txn *txn, const sg_store_opts_t *opts,
			  uint32_t *format_out)
{
	uint32_t format, dim;
	MDB_val v;
	int err;

	if ((err = meta_get_int(s, txn, meta_format, &format, sizeof(format))))
		return err;
	if (format != STORE_FORMAT && format != STORE_FORMAT_NO_KEY &&
	    format != STORE_FORMAT_NO_CHUNKS) {
		set_err(s, "cache at %s has store format %" PRIu32 "; this semgate uses %u: "
			"remove the directory or start with --rebuild-cache",
			s->dir, format, STORE_FORMAT);
		return SG_EMISMATCH;
	}
	if ((err = meta_get(s, txn, meta_embedder, &v)) ||
	    (err = meta_get_int(s, txn, meta_dim, &dim, sizeof(dim))))
		return err;
	if (v.mv_size > SG_STORE_MAX_EMBEDDER_ID) {
		set_err(s, "cache at %s: meta 'embedder' is %zu bytes long", s->dir, v.mv_size);
		return SG_ECORRUPT;
	}
	if (dim != opts->dim || v.mv_size != strlen(opts->embedder_id) ||
	    memcmp(v.mv_data, opts->embedder_id, v.mv_size) != 0) {
		set_err(s, "cache at %s was built with embedder '%.*s' (dim %" PRIu32 "); "
			"this configuration uses '%s' (dim %" PRIu32 "): remove the "
			"directory or start with --rebuild-cache",
			s->dir, (int)v.mv_size, (const char *)v.mv_data, dim, opts->embedder_id,
			opts->dim);
		return SG_EMISMATCH;
	}
	*format_out = format;
	return 0;
}

/* A fresh random secret for the store's ids (getrandom: never blocks once the
 * kernel's pool is seeded, which it is long before semgate starts). */
static int new_hash_key(sg_store_t *s)
{
	uint8_t b[16];
	size_t got = 0;
	while (got < sizeof(b)) {
		ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			set_err(s, "cache at %s: no random bytes for the store's secret: %s", s->dir,
				strerror(errno));
			return SG_EIO;
		}
		got += (size_t)n;
	}
	memcpy(&s->hash_key.k0, b, 8);
	memcpy(&s->hash_key.k1, b + 8, 8);
	return 0;
}

/* write_txn() may run a function again (a commit that hit a full map is
 * rolled back, the map grown, the function re-run): inputs stay fixed, and
 * results are taken only once write_txn() has returned 0. */
typedef struct rehash_ctx {
	uint64_t after;   /* in: last id done */
	uint64_t last;    /* out: last id of this batch */
	int done;         /* out: no entries left */
	uint64_t changed; /* out: entries of this batch whose ids changed */
} rehash_ctx_t;

/* Derive the ids of up to REHASH_BATCH entries after ctx->after again, under
 * the store's secret: the record's header and the exact index. Idempotent: a
 * crash in the middle is finished at the next open. */
static int rehash_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	rehash_ctx_t *c = arg;
	MDB_cursor *cur;
	c->done = 0;
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	unsigned n = 0;
	uint64_t changed = 0, last = c->after;
	int rc, err = 0;

	if ((rc = mdb_cursor_open(txn, s->entries, &cur)))
		return mdb_fail(s, rc, "mdb_cursor_open");
	key_be(k, c->after + 1);
	rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
	for (; rc == 0 && n < REHASH_BATCH; n++, rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		sg_entry_meta_t m;
		uint64_t id = key_id(&key), sh, eh;
		last = id;
		if (rec_decode(s, &val, id, &m) != 0)
			continue; /* a damaged record: what reads it reports it */
		sg_cache_key_ids(&s->hash_key, m.scope_json.base, m.scope_json.len, m.prompt.base,
				 m.prompt.len, &sh, &eh);
		if (sh == m.scope_hash && eh == m.exact_hash)
			continue;
		if (val.mv_size > s->scratch_cap) {
			char *p = realloc(s->scratch, val.mv_size);
			if (!p) {
				err = SG_ENOMEM;
				break;
			}
			s->scratch = p;
			s->scratch_cap = val.mv_size;
		}
		memcpy(s->scratch, val.mv_data, val.mv_size);
		rec_hdr_t h;
		memcpy(&h, s->scratch, sizeof(h));
		h.scope_hash = sh;
		h.exact_hash = eh;
		h.checksum = rec_checksum(&h, s->scratch + sizeof(h), val.mv_size - sizeof(h));
		memcpy(s->scratch, &h, sizeof(h));
		MDB_val nv = {val.mv_size, s->scratch};
		MDB_val ek = {sizeof(m.exact_hash), &m.exact_hash}, ev = {sizeof(id), &id};
		rc = mdb_del(txn, s->exact, &ek, &ev);
		if (rc && rc != MDB_NOTFOUND) {
			err = mdb_fail(s, rc, "mdb_del(exact)");
			break;
		}
		ek.mv_data = &eh;
		if ((rc = mdb_put(txn, s->exact, &ek, &ev, 0)) ||
		    (rc = mdb_cursor_put(cur, &key, &nv, MDB_CURRENT))) {
			err = mdb_fail(s, rc, "mdb_put(rehash)");
			break;
		}
		changed++;
	}
	mdb_cursor_close(cur);
	if (err)
		return err;
	if (rc && rc != MDB_NOTFOUND)
		return mdb_fail(s, rc, "mdb_cursor_get(entries)");
	c->done = rc == MDB_NOTFOUND;
	if (c->done) {
		MDB_val mk = {strlen(meta_rehash), (void *)meta_rehash};
		rc = mdb_del(txn, s->meta, &mk, NULL);
		if (rc && rc != MDB_NOTFOUND)
			return mdb_fail(s, rc, "mdb_del(meta)");
	}
	c->last = last;
	c->changed = changed;
	return 0;
}

static int rehash_all(sg_store_t *s)
{
	rehash_ctx_t c = {0, 0, 0, 0};
	uint64_t changed = 0;
	int err;
	do {
		if ((err = write_txn(s, rehash_fn, &c)))
			return err; /* rolled back: the next open starts over */
		c.after = c.last;
		changed += c.changed;
	} while (!c.done);
	s->rehash = 0;
	sg_log_info("cache at %s: ids of %" PRIu64 " entries derived under the store's secret",
		    s->dir, changed);
	return 0;
}

static int open_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	const sg_store_opts_t *opts = ((open_ctx_t *)arg)->opts;
	MDB_dbi main_dbi;
	MDB_stat st;
	uint32_t format = 0;
	int rc, err, fresh = 0;

	if ((rc = mdb_dbi_open(txn, NULL, 0, &main_dbi)) || (rc = mdb_stat(txn, main_dbi, &st)))
		return mdb_fail(s, rc, "mdb_stat(main)");
	rc = mdb_dbi_open(txn, "meta", 0, &s->meta);
	if (rc == MDB_NOTFOUND && st.ms_entries == 0) {
		fresh = 1;
	} else if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE) {
		set_err(s, "%s holds an LMDB database that is not a semgate cache: remove "
			"the directory or start with --rebuild-cache", s->dir);
		return SG_EMISMATCH;
	} else if (rc) {
		return mdb_fail(s, rc, "mdb_dbi_open(meta)");
	}
	if (!fresh && (err = check_identity(s, txn, opts, &format)))
		return err;
	if ((err = open_dbi(s, txn, "meta", 0, &s->meta)) ||
	    (err = open_dbi(s, txn, "entries", 0, &s->entries)) ||
	    (err = open_dbi(s, txn, "vectors", 0, &s->vectors)) ||
	    (err = open_dbi(s, txn, "exact",
			    MDB_INTEGERKEY | MDB_DUPSORT | MDB_DUPFIXED | MDB_INTEGERDUP,
			    &s->exact)) ||
	    (err = open_dbi(s, txn, "checkpoints", MDB_INTEGERKEY, &s->checkpoints)) ||
	    (err = open_dbi(s, txn, "manifests", MDB_INTEGERKEY, &s->manifests)) ||
	    (err = open_dbi(s, txn, "ckchunks", 0, &s->ckchunks)))
		return err;
	/* An older format is upgraded here. (A file of the current format opens
	 * without writing anything: one whose map is full at its maximum size
	 * must still open.) */
	if (!fresh && format != STORE_FORMAT) {
		/* No secret yet: make one; every entry's ids are derived again after
		 * this transaction (sg_store_open), and checkpoints, keyed by the old
		 * scope ids, go (the indexes are rebuilt from the vectors, once). */
		format = STORE_FORMAT;
		uint8_t one = 1;
		if ((err = new_hash_key(s)) ||
		    (err = meta_put(s, txn, meta_hash_key, &s->hash_key, sizeof(s->hash_key))) ||
		    (err = meta_put(s, txn, meta_rehash, &one, 1)) ||
		    (err = meta_put(s, txn, meta_format, &format, sizeof(format))))
			return err;
		if ((rc = mdb_drop(txn, s->checkpoints, 0)) || (rc = mdb_drop(txn, s->manifests, 0)) ||
		    (rc = mdb_drop(txn, s->ckchunks, 0)))
			return mdb_fail(s, rc, "mdb_drop");
		sg_log_warn("cache at %s: upgrading to store format %u: entries get ids under a "
			    "secret of this store; indexes are rebuilt from the stored vectors once",
			    s->dir, STORE_FORMAT);
	}
	if (!fresh) {
		MDB_val k = {strlen(meta_rehash), (void *)meta_rehash}, v;
		if ((err = meta_get_int(s, txn, meta_hash_key, &s->hash_key, sizeof(s->hash_key))))
			return err;
		rc = mdb_get(txn, s->meta, &k, &v);
		if (rc && rc != MDB_NOTFOUND)
			return mdb_fail(s, rc, "mdb_get(meta)");
		s->rehash = rc == 0;
	}
	if (fresh) {
		uint64_t next_id = 1, bytes = 0;
		format = STORE_FORMAT;
		if ((err = new_hash_key(s)) ||
		    (err = meta_put(s, txn, meta_hash_key, &s->hash_key, sizeof(s->hash_key))) ||
		    (err = meta_put(s, txn, meta_format, &format, sizeof(format))) ||
		    (err = meta_put(s, txn, meta_embedder, opts->embedder_id,
				    strlen(opts->embedder_id))) ||
		    (err = meta_put(s, txn, meta_dim, &opts->dim, sizeof(opts->dim))) ||
		    (err = meta_put(s, txn, meta_next_id, &next_id, sizeof(next_id))) ||
		    (err = meta_put(s, txn, meta_bytes, &bytes, sizeof(bytes))))
			return err;
	} else {
		uint64_t v;
		if ((err = meta_get_int(s, txn, meta_next_id, &v, sizeof(v))) ||
		    (err = meta_get_int(s, txn, meta_bytes, &v, sizeof(v))))
			return err;
	}
	return 0;
}

int sg_store_open(sg_store_t **out, const char *dir, const sg_store_opts_t *opts,
		  char *errmsg, size_t errlen)
{
	long page = sysconf(_SC_PAGESIZE);
	open_ctx_t ctx = {opts};
	sg_store_t *s;
	int err;

	*out = NULL;
	if (errmsg && errlen)
		errmsg[0] = '\0';
	if (!dir || !*dir || !opts || !opts->embedder_id || !*opts->embedder_id ||
	    strlen(opts->embedder_id) > SG_STORE_MAX_EMBEDDER_ID || opts->dim == 0 ||
	    opts->dim > SG_STORE_MAX_DIM) {
		if (errmsg && errlen)
			snprintf(errmsg, errlen, "store: a directory, an embedder id (at most "
				 "%d bytes) and a dim in [1, %d] are required",
				 SG_STORE_MAX_EMBEDDER_ID, SG_STORE_MAX_DIM);
		return SG_EINVAL;
	}
	if (!(s = calloc(1, sizeof(*s))))
		return SG_ENOMEM;
	pthread_mutex_init(&s->wlock, NULL);
	if (page <= 0)
		page = 4096;
	s->dim = opts->dim;
	s->map_size = round_up(opts->map_size ? opts->map_size : SG_STORE_DEFAULT_MAP_SIZE,
			       (size_t)page);
	s->max_map_size = opts->max_map_size ? round_up(opts->max_map_size, (size_t)page)
					     : s->map_size * 4;
	/* The cap is the user's: a default start larger than it starts at the cap
	 * (it used to raise the cap to the default, so 16 MB grew to 1 GiB). */
	if (s->map_size > s->max_map_size)
		s->map_size = s->max_map_size;
	err = SG_ENOMEM;
	if (!(s->dir = strdup(dir)) || !(s->vecbuf = malloc(sizeof(float) * s->dim))) {
		set_err(s, "out of memory");
		goto fail;
	}
	if ((err = prepare_dir(s, opts->rebuild)) || (err = env_open(s)) ||
	    (opts->verify && (err = verify_pages(s))) || (err = write_txn(s, open_fn, &ctx)))
		goto fail;
	/* Entries not derived again yet are only unreachable (a miss), never
	 * wrong: a store too full for the rewrite still opens, and the next open
	 * goes on with it. */
	if (s->rehash && (err = rehash_all(s)) == SG_EFULL) {
		sg_log_warn("cache at %s: no room to derive every entry's ids under the store's "
			    "secret (%s): entries not done yet are not found until a later start "
			    "finishes it", s->dir, s->err);
		err = 0;
	}
	if (err)
		goto fail;
	/* A save interrupted by a crash left chunks nothing refers to. Dropping
	 * them needs room for the deletions: a full map keeps them (until the
	 * scope's next save or the next open) rather than refuse to open. */
	if ((err = drop_orphans(s)) == SG_EFULL) {
		sg_log_warn("cache at %s: unpublished checkpoint chunks are kept for now: %s",
			    s->dir, s->err);
		err = 0;
	}
	if (err)
		goto fail;
	*out = s;
	return 0;
fail:
	if (errmsg && errlen)
		snprintf(errmsg, errlen, "%s", s->err);
	sg_store_close(s);
	return err;
}

void sg_store_close(sg_store_t *s)
{
	if (!s)
		return;
	if (s->rtxn)
		mdb_txn_abort(s->rtxn);
	if (s->env)
		mdb_env_close(s->env);
	free(s->scratch);
	free(s->vecbuf);
	free(s->dir);
	pthread_mutex_destroy(&s->wlock);
	free(s);
}

const char *sg_store_last_error(const sg_store_t *s)
{
	return s->err;
}

/* ---- entries ---------------------------------------------------------- */

typedef struct put_ctx {
	const sg_entry_in_t *e; /* borrowed */
	const float *vec;       /* borrowed; NULL: no vector */
	size_t rec_len;         /* header + variable parts */
	uint64_t id;            /* out: assigned id */
} put_ctx_t;

static int put_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	put_ctx_t *c = arg;
	const sg_entry_in_t *e = c->e;
	const sg_iovec_t *parts[PART_LAST] = {&e->ns, &e->model, &e->scope_json, &e->prompt,
					      &e->response};
	size_t vec_len = c->vec ? sizeof(float) * s->dim : 0;
	uint64_t id, next;
	uint8_t k[8];
	MDB_val key = {8, k}, val = {c->rec_len, NULL};
	rec_hdr_t h;
	char *p;
	int rc, err;

	if ((err = meta_get_int(s, txn, meta_next_id, &id, sizeof(id))))
		return err;
	key_be(k, id);
	/* Reserve and fill in place: the record is written once, into the map. */
	if ((rc = mdb_put(txn, s->entries, &key, &val, MDB_NOOVERWRITE | MDB_RESERVE)))
		return mdb_fail(s, rc, "mdb_put(entries)");
	memset(&h, 0, sizeof(h));
	h.version = REC_VERSION;
	h.flags = c->vec ? SG_ENTRY_F_VECTOR : 0;
	h.created_s = e->created_s;
	h.expires_s = e->expires_s;
	h.scope_hash = e->scope_hash;
	h.exact_hash = e->exact_hash;
	h.prompt_tokens = e->prompt_tokens;
	h.completion_tokens = e->completion_tokens;
	for (int i = 0; i < PART_LAST; i++)
		h.len[i] = (uint32_t)parts[i]->len;
	p = (char *)val.mv_data + sizeof(h);
	for (int i = 0; i < PART_LAST; i++) {
		if (parts[i]->len)
			memcpy(p, parts[i]->base, parts[i]->len);
		p += parts[i]->len;
	}
	h.checksum = rec_checksum(&h, (char *)val.mv_data + sizeof(h), c->rec_len - sizeof(h));
	memcpy(val.mv_data, &h, sizeof(h));
	if (c->vec) {
		val.mv_size = vec_len;
		val.mv_data = (void *)c->vec;
		if ((rc = mdb_put(txn, s->vectors, &key, &val, 0)))
			return mdb_fail(s, rc, "mdb_put(vectors)");
	}
	key.mv_size = sizeof(e->exact_hash);
	key.mv_data = (void *)&e->exact_hash;
	val.mv_size = sizeof(id);
	val.mv_data = &id;
	if ((rc = mdb_put(txn, s->exact, &key, &val, 0)))
		return mdb_fail(s, rc, "mdb_put(exact)");
	next = id + 1;
	if ((err = meta_put(s, txn, meta_next_id, &next, sizeof(next))) ||
	    (err = bytes_add(s, txn, (int64_t)(c->rec_len + vec_len))))
		return err;
	c->id = id;
	return 0;
}

int sg_store_put(sg_store_t *s, const sg_entry_in_t *e, const float *vec, uint64_t *id_out)
{
	const sg_iovec_t *parts[PART_LAST] = {&e->ns, &e->model, &e->scope_json, &e->prompt,
					      &e->response};
	put_ctx_t ctx = {e, vec, sizeof(rec_hdr_t), 0};
	int err;

	for (int i = 0; i < PART_LAST; i++) {
		if (!parts[i]->base && parts[i]->len) {
			set_err(s, "put: NULL slice with a length");
			return SG_EINVAL;
		}
		if (parts[i]->len > SG_STORE_MAX_RECORD - ctx.rec_len) {
			set_err(s, "put: record larger than %zu bytes", SG_STORE_MAX_RECORD);
			return SG_ETOOBIG;
		}
		ctx.rec_len += parts[i]->len;
	}
	if ((err = write_txn(s, put_fn, &ctx)))
		return err;
	if (id_out)
		*id_out = ctx.id;
	return 0;
}

int sg_store_get(sg_store_t *s, uint64_t id, sg_entry_t *out)
{
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	sg_entry_meta_t m;
	MDB_txn *txn;
	int rc, err;

	memset(out, 0, sizeof(*out));
	if ((err = read_begin(s, &txn)))
		return err;
	key_be(k, id);
	if ((rc = mdb_get(txn, s->entries, &key, &val))) {
		err = mdb_fail(s, rc, "mdb_get(entries)");
		goto out;
	}
	if ((err = rec_decode(s, &val, id, &m)))
		goto out;
	if ((err = entry_copy(&m, out)))
		set_err(s, "out of memory");
out:
	read_end(s);
	return err;
}

void sg_entry_free(sg_entry_t *e)
{
	if (!e)
		return;
	free(e->mem);
	memset(e, 0, sizeof(*e));
}

int sg_store_get_vector(sg_store_t *s, uint64_t id, float *vec)
{
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	MDB_txn *txn;
	int rc, err;

	if ((err = read_begin(s, &txn)))
		return err;
	key_be(k, id);
	if ((rc = mdb_get(txn, s->vectors, &key, &val))) {
		err = mdb_fail(s, rc, "mdb_get(vectors)");
	} else if (val.mv_size != sizeof(float) * s->dim) {
		set_err(s, "entry %" PRIu64 ": vector of %zu bytes, expected %zu", id,
			val.mv_size, sizeof(float) * s->dim);
		err = SG_ECORRUPT;
	} else {
		memcpy(vec, val.mv_data, val.mv_size);
	}
	read_end(s);
	return err;
}

int sg_store_find_exact(sg_store_t *s, uint64_t exact_hash, uint64_t *ids, size_t max,
			size_t *n)
{
	MDB_val key = {sizeof(exact_hash), &exact_hash}, val;
	MDB_cursor *cur = NULL;
	MDB_txn *txn;
	int rc, err;

	*n = 0;
	if ((err = read_begin(s, &txn)))
		return err;
	if ((rc = mdb_cursor_open(txn, s->exact, &cur))) {
		err = mdb_fail(s, rc, "mdb_cursor_open(exact)");
		goto out;
	}
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_KEY); rc == 0 && *n < max;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT_DUP)) {
		if (val.mv_size != sizeof(uint64_t))
			continue;
		memcpy(&ids[(*n)++], val.mv_data, sizeof(uint64_t));
	}
	if (rc && rc != MDB_NOTFOUND)
		err = mdb_fail(s, rc, "mdb_cursor_get(exact)");
out:
	if (cur)
		mdb_cursor_close(cur);
	read_end(s);
	return err;
}

typedef struct touch_ctx {
	uint64_t id;     /* entry */
	int64_t now_s;   /* last hit time */
	uint64_t hits;   /* hits to add */
} touch_ctx_t;

static int touch_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	touch_ctx_t *c = arg;
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	sg_entry_meta_t m;
	rec_hdr_t h;
	int rc, err;

	key_be(k, c->id);
	if ((rc = mdb_get(txn, s->entries, &key, &val)))
		return mdb_fail(s, rc, "mdb_get(entries)");
	if ((err = rec_decode(s, &val, c->id, &m)))
		return err;
	/* val points into the map and may be overwritten by the put: copy. */
	if (s->scratch_cap < val.mv_size) {
		char *p = realloc(s->scratch, val.mv_size);
		if (!p) {
			set_err(s, "out of memory");
			return SG_ENOMEM;
		}
		s->scratch = p;
		s->scratch_cap = val.mv_size;
	}
	memcpy(s->scratch, val.mv_data, val.mv_size);
	memcpy(&h, s->scratch, sizeof(h));
	h.hits += c->hits;
	h.last_hit_s = c->now_s;
	h.checksum = rec_checksum(&h, s->scratch + sizeof(h), val.mv_size - sizeof(h));
	memcpy(s->scratch, &h, sizeof(h));
	val.mv_data = s->scratch;
	if ((rc = mdb_put(txn, s->entries, &key, &val, 0)))
		return mdb_fail(s, rc, "mdb_put(entries)");
	return 0;
}

int sg_store_touch(sg_store_t *s, uint64_t id, int64_t now_s)
{
	touch_ctx_t ctx = {id, now_s, 1};
	return write_txn(s, touch_fn, &ctx);
}

typedef struct touch_batch {
	const sg_store_touch_t *items; /* what to record */
	size_t n;                      /* how many */
} touch_batch_t;

static int touch_batch_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	touch_batch_t *b = arg;
	for (size_t i = 0; i < b->n; i++) {
		touch_ctx_t ctx = {b->items[i].id, b->items[i].now_s, b->items[i].hits};
		int err = touch_fn(s, txn, &ctx);
		if (err && err != SG_ENOTFOUND && err != SG_ECORRUPT)
			return err; /* entries gone or unreadable meanwhile are skipped */
	}
	return 0;
}

int sg_store_touch_batch(sg_store_t *s, const sg_store_touch_t *items, size_t n)
{
	touch_batch_t b = {items, n};
	return n ? write_txn(s, touch_batch_fn, &b) : 0;
}

/* Delete one entry, its vector and (if its record is readable) its exact
 * key; *freed gets the bytes it accounted for. */
static int delete_one(sg_store_t *s, MDB_txn *txn, uint64_t id, uint64_t *freed)
{
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	sg_entry_meta_t m;
	uint64_t exact_hash = 0;
	int rc, have_exact;

	key_be(k, id);
	if ((rc = mdb_get(txn, s->entries, &key, &val)))
		return mdb_fail(s, rc, "mdb_get(entries)");
	*freed = val.mv_size;
	have_exact = rec_decode(s, &val, id, &m) == 0;
	if (have_exact)
		exact_hash = m.exact_hash;
	if ((rc = mdb_del(txn, s->entries, &key, NULL)))
		return mdb_fail(s, rc, "mdb_del(entries)");
	rc = mdb_get(txn, s->vectors, &key, &val);
	if (rc == 0) {
		*freed += val.mv_size;
		rc = mdb_del(txn, s->vectors, &key, NULL);
	}
	if (rc && rc != MDB_NOTFOUND)
		return mdb_fail(s, rc, "mdb_del(vectors)");
	if (have_exact) {
		MDB_val ek = {sizeof(exact_hash), &exact_hash}, ev = {sizeof(id), &id};
		rc = mdb_del(txn, s->exact, &ek, &ev);
		if (rc && rc != MDB_NOTFOUND)
			return mdb_fail(s, rc, "mdb_del(exact)");
	}
	return 0;
}

static int delete_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	uint64_t freed;
	int err = delete_one(s, txn, *(uint64_t *)arg, &freed);
	return err ? err : bytes_add(s, txn, -(int64_t)freed);
}

int sg_store_delete(sg_store_t *s, uint64_t id)
{
	return write_txn(s, delete_fn, &id);
}

typedef struct deleted {
	uint64_t id;         /* deleted entry */
	uint64_t scope_hash; /* its scope */
} deleted_t;

typedef struct delete_where_ctx {
	const char *ns;  /* borrowed; NULL = all */
	size_t ns_len;   /* strlen(ns) */
	deleted_t *del;  /* owned: what the transaction deleted */
	size_t n;        /* entries used in del */
	size_t cap;      /* entries allocated in del */
} delete_where_ctx_t;

static int delete_where_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	delete_where_ctx_t *c = arg;
	MDB_cursor *cur = NULL;
	MDB_val key, val;
	sg_entry_meta_t m;
	int rc, err = 0;

	c->n = 0; /* this may be a re-run after the map grew */
	if ((rc = mdb_cursor_open(txn, s->entries, &cur)))
		return mdb_fail(s, rc, "mdb_cursor_open(entries)");
	/* Collect first, delete after: no deleting under a moving cursor. */
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size != 8 || rec_decode(s, &val, key_id(&key), &m) != 0)
			continue;
		if (c->ns && (m.ns.len != c->ns_len || memcmp(m.ns.base, c->ns, c->ns_len)))
			continue;
		if (c->n == c->cap) {
			size_t cap = c->cap ? c->cap * 2 : 64;
			deleted_t *d = realloc(c->del, cap * sizeof(*d));
			if (!d) {
				set_err(s, "out of memory");
				err = SG_ENOMEM;
				goto out;
			}
			c->del = d;
			c->cap = cap;
		}
		c->del[c->n].id = m.id;
		c->del[c->n++].scope_hash = m.scope_hash;
	}
	if (rc != MDB_NOTFOUND) {
		err = mdb_fail(s, rc, "mdb_cursor_get(entries)");
		goto out;
	}
	mdb_cursor_close(cur);
	cur = NULL;
	if (!c->ns) {
		uint64_t zero = 0;
		/* Under wlock, before any checkpoint writer's next transaction.
		 * Counted again if this is re-run, or if the commit fails: a writer
		 * then fails for nothing, which costs only its save. */
		s->clears++;
		if ((rc = mdb_drop(txn, s->entries, 0)) || (rc = mdb_drop(txn, s->vectors, 0)) ||
		    (rc = mdb_drop(txn, s->exact, 0)) || (rc = mdb_drop(txn, s->checkpoints, 0)) ||
		    (rc = mdb_drop(txn, s->manifests, 0)) || (rc = mdb_drop(txn, s->ckchunks, 0))) {
			err = mdb_fail(s, rc, "mdb_drop");
			goto out;
		}
		err = meta_put(s, txn, meta_bytes, &zero, sizeof(zero));
	} else {
		uint64_t freed, total = 0;
		for (size_t i = 0; i < c->n && !err; i++) {
			err = delete_one(s, txn, c->del[i].id, &freed);
			total += freed;
		}
		if (!err)
			err = bytes_add(s, txn, -(int64_t)total);
	}
out:
	if (cur)
		mdb_cursor_close(cur);
	return err;
}

int sg_store_delete_where(sg_store_t *s, const char *ns, sg_store_deleted_cb cb, void *ud,
			  size_t *ndeleted)
{
	delete_where_ctx_t ctx = {ns, ns ? strlen(ns) : 0, NULL, 0, 0};
	int err;

	if (ndeleted)
		*ndeleted = 0;
	if ((err = write_txn(s, delete_where_fn, &ctx)))
		goto out;
	/* Only now are the deletions real: tell the caller. */
	for (size_t i = 0; cb && i < ctx.n; i++)
		cb(ud, ctx.del[i].id, ctx.del[i].scope_hash);
	if (ndeleted)
		*ndeleted = ctx.n;
out:
	free(ctx.del);
	return err;
}

int sg_store_iter(sg_store_t *s, uint64_t after_id, size_t limit, sg_store_iter_cb cb,
		  void *ud, size_t *nskipped)
{
	const size_t vec_len = sizeof(float) * s->dim;
	MDB_cursor *cur = NULL;
	uint8_t k[8];
	MDB_val key = {8, k}, val, vval;
	size_t skipped = 0, seen = 0;
	sg_entry_meta_t m;
	MDB_txn *txn;
	int rc, err;

	if (nskipped)
		*nskipped = 0;
	if (after_id == UINT64_MAX)
		return 0;
	if ((err = read_begin(s, &txn)))
		return err;
	if ((rc = mdb_cursor_open(txn, s->entries, &cur))) {
		err = mdb_fail(s, rc, "mdb_cursor_open(entries)");
		goto out;
	}
	key_be(k, after_id + 1);
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		const float *vec = NULL;
		int r;

		if (key.mv_size != 8 || rec_decode(s, &val, key_id(&key), &m) != 0) {
			skipped++;
			continue;
		}
		if (m.flags & SG_ENTRY_F_VECTOR) {
			int vrc = mdb_get(txn, s->vectors, &key, &vval);
			if (vrc && vrc != MDB_NOTFOUND) {
				err = mdb_fail(s, vrc, "mdb_get(vectors)");
				goto out;
			}
			if (vrc || vval.mv_size != vec_len) {
				set_err(s, "entry %" PRIu64 ": vector missing or of the wrong size",
					m.id);
				skipped++;
				continue;
			}
			/* Values in LMDB pages are only 2-byte aligned. */
			memcpy(s->vecbuf, vval.mv_data, vec_len);
			vec = s->vecbuf;
		}
		s->busy = 1;
		r = cb(ud, &m, vec);
		s->busy = 0;
		if (r != 0) {
			err = r < 0 ? r : 0;
			rc = 0;
			break;
		}
		if (limit && ++seen == limit)
			break;
	}
	if (rc && rc != MDB_NOTFOUND)
		err = mdb_fail(s, rc, "mdb_cursor_get(entries)");
out:
	if (cur)
		mdb_cursor_close(cur);
	read_end(s);
	if (nskipped)
		*nskipped = skipped;
	return err;
}

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
	key_be(k, scope_hash);
	key_be(k + 8, gen);
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
	return key_id(&g);
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
	key_be(prefix, scope_hash);
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
		return mdb_fail(s, rc, "mdb_cursor_open(ckchunks)");
	while ((rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE)) == 0) {
		uint64_t scope_hash = key.mv_size == CHUNK_KEY ? key_id(&key) : 0;
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
	return rc ? mdb_fail(s, rc, "dropping unpublished checkpoint chunks") : 0;
}

static int drop_orphans(sg_store_t *s)
{
	orphan_ctx_t ctx = {.len = 1};
	int err;

	do
		err = write_txn(s, drop_orphan_fn, &ctx);
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
		set_err(s, "manifest of %" PRIu64 " bytes in %" PRIu64 " chunks is not possible",
			m->len, m->nchunks);
		return SG_ECORRUPT;
	}
	if (m->nchunks > 1 && !(buf = malloc(m->len ? m->len : 1))) {
		set_err(s, "out of memory reading a checkpoint of %" PRIu64 " bytes", m->len);
		return SG_ENOMEM;
	}
	for (uint64_t i = 0; i < m->nchunks; i++) {
		chunk_key(k, scope_hash, m->gen, (uint32_t)i);
		key = (MDB_val){CHUNK_KEY, k};
		if ((rc = mdb_get(txn, s->ckchunks, &key, &val))) {
			if (rc != MDB_NOTFOUND) {
				free(buf);
				return mdb_fail(s, rc, "mdb_get(ckchunks)");
			}
			set_err(s, "chunk %" PRIu64 " of %" PRIu64 " is missing", i, m->nchunks);
			goto bad;
		}
		if (val.mv_size > m->len - off || (i + 1 == m->nchunks && off + val.mv_size != m->len)) {
			set_err(s, "chunk %" PRIu64 " of %" PRIu64 " has %zu bytes: the chunks do "
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
		set_err(s, "no chunks for %" PRIu64 " bytes", m->len);
		goto bad;
	}
	if (manifest_sum(m, h) != m->checksum) {
		set_err(s, "checksum mismatch over the manifest and its %" PRIu64 " chunks",
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
		return mdb_fail(s, rc, "mdb_put(checkpoints)");
	memcpy(val.mv_data, &c->last_id, sizeof(c->last_id));
	if (c->len)
		memcpy((char *)val.mv_data + sizeof(c->last_id), c->blob, c->len);
	/* this one replaces a chunked checkpoint of the scope */
	rc = mdb_del(txn, s->manifests, &key, NULL);
	if (rc == 0)
		rc = drop_chunks(s, txn, c->scope_hash, 0);
	return rc && rc != MDB_NOTFOUND ? mdb_fail(s, rc, "mdb_del(manifests)") : 0;
}

int sg_store_put_checkpoint(sg_store_t *s, uint64_t scope_hash, uint64_t last_id,
			    const void *blob, size_t len)
{
	checkpoint_ctx_t ctx = {scope_hash, last_id, blob, len};

	if (!blob && len) {
		set_err(s, "put_checkpoint: NULL blob with a length");
		return SG_EINVAL;
	}
	if (len > (size_t)UINT32_MAX - sizeof(uint64_t)) {
		set_err(s, "put_checkpoint: blob of %zu bytes is too large", len);
		return SG_ETOOBIG;
	}
	return write_txn(s, put_checkpoint_fn, &ctx);
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
	if ((err = read_begin(s, &txn)))
		return err;
	rc = get_manifest(s, txn, scope_hash, &m);
	if (rc == 0) {
		if ((err = manifest_blob(s, txn, scope_hash, &m, &data, &owned)))
			goto out;
		*len = m.len;
		*last_id = m.last_id;
	} else if (rc == MDB_CORRUPTED) {
		set_err(s, "checkpoint %016" PRIx64 ": manifest is malformed", scope_hash);
		err = SG_ECORRUPT;
		goto out;
	} else if (rc != MDB_NOTFOUND) {
		err = mdb_fail(s, rc, "mdb_get(manifests)");
		goto out;
	} else if ((rc = mdb_get(txn, s->checkpoints, &key, &val))) {
		err = mdb_fail(s, rc, "mdb_get(checkpoints)");
		goto out;
	} else if (val.mv_size < sizeof(uint64_t)) {
		set_err(s, "checkpoint %016" PRIx64 ": %zu bytes is too short", scope_hash,
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
		set_err(s, "out of memory");
		err = SG_ENOMEM;
	} else if (*len) {
		memcpy(*blob, data, *len);
	}
out:
	free(owned);
	read_end(s);
	return err;
}

static int delete_checkpoint_fn(sg_store_t *s, MDB_txn *txn, void *arg)
{
	MDB_val key = {sizeof(uint64_t), arg};
	int rc = mdb_del(txn, s->checkpoints, &key, NULL), mrc, crc;

	if (rc && rc != MDB_NOTFOUND)
		return mdb_fail(s, rc, "mdb_del(checkpoints)");
	mrc = mdb_del(txn, s->manifests, &key, NULL);
	if (mrc && mrc != MDB_NOTFOUND)
		return mdb_fail(s, mrc, "mdb_del(manifests)");
	if ((crc = drop_chunks(s, txn, *(uint64_t *)arg, 0)))
		return mdb_fail(s, crc, "mdb_del(ckchunks)");
	return rc && mrc ? mdb_fail(s, MDB_NOTFOUND, "delete_checkpoint") : 0;
}

int sg_store_delete_checkpoint(sg_store_t *s, uint64_t scope_hash)
{
	return write_txn(s, delete_checkpoint_fn, &scope_hash);
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
	if ((err = read_begin(s, &txn)))
		return err;
	/* Pass 0: chunked checkpoints; pass 1: single-record ones of the scopes
	 * that have no chunked one. */
	for (int pass = 0; pass < 2 && !err; pass++) {
		if ((rc = mdb_cursor_open(txn, pass ? s->checkpoints : s->manifests, &cur))) {
			err = mdb_fail(s, rc, "mdb_cursor_open(checkpoints)");
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
					set_err(s, "manifest of %zu bytes is malformed", val.mv_size);
				} else if (r) {
					err = mdb_fail(s, r, "mdb_get(manifests)");
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
					err = mdb_fail(s, r, "mdb_get(manifests)");
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
			err = mdb_fail(s, rc, "mdb_cursor_get(checkpoints)");
		mdb_cursor_close(cur);
		cur = NULL;
	}
	read_end(s);
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
	return mdb_code(rc);
}

/*
 * write_txn() for a checkpoint writer, which may run on a thread other than
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
	int rc, err = enter(s);

	if (err)
		return err; /* growing would close the read transaction in use */
	pthread_mutex_lock(&s->wlock);
	for (;;) {
		if ((rc = map_room(s, 0, &room))) {
			err = mdb_fail(s, rc, "mdb_env_info");
			break;
		}
		if (room >= bytes)
			break;
		if (s->map_size >= s->max_map_size) {
			/* At the maximum the pages freed inside the map count too. */
			if (map_room(s, 1, &room) == 0 && room < bytes) {
				set_err(s, "store map is full at its maximum size (%zu bytes)",
					s->max_map_size);
				err = SG_EFULL;
			}
			break;
		}
		if ((err = grow(s)))
			break;
	}
	pthread_mutex_unlock(&s->wlock);
	return err;
}

/* ---- maintenance ---------------------------------------------------------- */

int sg_store_sync(sg_store_t *s)
{
	/* Touches only the environment's file: safe from another thread while the
	 * owner keeps using the store (fsync can take 100 ms; keep it off the loop). */
	return mdb_env_sync(s->env, 1) ? SG_EIO : 0;
}

int sg_store_stats(sg_store_t *s, sg_store_stats_t *out)
{
	MDB_stat est, cst, mst;
	struct stat sb;
	MDB_txn *txn;
	int rc, err, fd;

	memset(out, 0, sizeof(*out));
	if ((err = read_begin(s, &txn)))
		return err;
	if ((rc = mdb_stat(txn, s->entries, &est)) || (rc = mdb_stat(txn, s->checkpoints, &cst)) ||
	    (rc = mdb_stat(txn, s->manifests, &mst))) {
		err = mdb_fail(s, rc, "mdb_stat");
		goto out;
	}
	out->entries = est.ms_entries;
	out->checkpoints = cst.ms_entries + mst.ms_entries; /* a scope has one or the other */
	if ((err = meta_get_int(s, txn, meta_bytes, &out->bytes, sizeof(out->bytes))) ||
	    (err = meta_get_int(s, txn, meta_next_id, &out->next_id, sizeof(out->next_id))))
		goto out;
	if (mdb_env_get_fd(s->env, &fd) == 0 && fstat(fd, &sb) == 0)
		out->file_bytes = (uint64_t)sb.st_size;
	out->map_size = s->map_size;
	out->max_map_size = s->max_map_size;
out:
	read_end(s);
	return err;
}

void sg_store_hash_key(const sg_store_t *s, sg_hash_key_t *out)
{
	*out = s->hash_key;
}
